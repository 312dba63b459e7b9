//! Verdict vectors in the ledger's layout.
//!
//! [`verdict_vector`] lays verdicts out as DESIGN.md's "Ledger" says: the trivial baseline, then
//! the base model when the task has one, then the earlier champions the task recorded, then one
//! entry per revealed submission sorted by trainer account id.

use std::collections::BTreeMap;

use consensus::types::{AccountId, ModelHash};
use consensus::verdict::{Subject, Verdict, VerdictEntry, VerdictVector, expected_layout};

/// Why verdicts cannot form a vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// One trainer has two verdicts.
    #[error("trainer {trainer} has more than one verdict")]
    RepeatedTrainer {
        /// The trainer.
        trainer: AccountId,
    },
}

/// The verdict vector of a task: `baseline`, then `base_model` if the task has one, then the
/// earlier champions in the task's order, then each submission's verdict sorted by trainer
/// account id.
pub fn verdict_vector(
    baseline: Verdict,
    base_model: Option<Verdict>,
    champions: Vec<(ModelHash, Verdict)>,
    submissions: impl IntoIterator<Item = (AccountId, Verdict)>,
) -> Result<VerdictVector, LayoutError> {
    let mut by_trainer = BTreeMap::new();
    for (trainer, verdict) in submissions {
        if by_trainer.insert(trainer, verdict).is_some() {
            return Err(LayoutError::RepeatedTrainer { trainer });
        }
    }
    let mut out = vec![VerdictEntry { subject: Subject::Baseline, verdict: baseline }];
    if let Some(verdict) = base_model {
        out.push(VerdictEntry { subject: Subject::BaseModel, verdict });
    }
    let champion_hashes: Vec<ModelHash> = champions.iter().map(|(h, _)| *h).collect();
    out.extend(
        champions
            .into_iter()
            .map(|(h, verdict)| VerdictEntry { subject: Subject::Champion(h), verdict }),
    );
    out.extend(
        by_trainer
            .into_iter()
            .map(|(t, verdict)| VerdictEntry { subject: Subject::Submission(t), verdict }),
    );
    let subjects: Vec<Subject> = out.iter().map(|e| e.subject).collect();
    let trainers = subjects.iter().filter_map(|s| match s {
        Subject::Submission(t) => Some(*t),
        _ => None,
    });
    assert_eq!(
        subjects,
        expected_layout(base_model.is_some(), &champion_hashes, trainers.collect::<Vec<_>>()),
        "verdict_vector builds the ledger's layout"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use consensus::types::{Hash, ScorePpm};
    use consensus::verdict::RejectReason;

    use super::*;

    #[test]
    fn layout_sorts_trainers_after_baseline_and_base() {
        let (a, b) = (AccountId([1; 32]), AccountId([2; 32]));
        let rejected = Verdict::Rejected { reason: RejectReason::NonFinite };
        let c = Hash([3; 32]);
        let v = verdict_vector(
            Verdict::scored(100),
            Some(Verdict::scored(200)),
            vec![(c, Verdict::scored(150))],
            [(b, Verdict::Unavailable), (a, rejected)],
        )
        .unwrap();
        let subjects: Vec<Subject> = v.iter().map(|e| e.subject).collect();
        assert_eq!(subjects, expected_layout(true, &[c], [a, b]));
        assert_eq!(v[3].verdict, rejected);
        assert_eq!(v[0].verdict.score(), Some(ScorePpm(100)));
        assert_eq!(
            verdict_vector(Verdict::scored(1), None, vec![], [(a, rejected), (a, rejected)]),
            Err(LayoutError::RepeatedTrainer { trainer: a })
        );
    }
}
