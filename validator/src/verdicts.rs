//! Verdict vectors and the transactions that commit to and reveal them.
//!
//! [`verdict_vector`] lays verdicts out as DESIGN.md's "Ledger" says: the trivial baseline, then
//! the base model when the task has one, then the earlier champions the task recorded, then one
//! entry per revealed submission sorted by trainer account id. A validator commits with [`commit_scores_tx`] in the scoring window and opens the
//! commitment with [`reveal_scores_tx`] in the score-reveal window, with the same salt; the caller
//! persists the salt and the vector before it sends the commitment.

use std::collections::BTreeMap;

use consensus::commitment::{Salt, scores_commitment};
use consensus::crypto::Keypair;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Hash, ModelHash, Nonce, TaskId};
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

/// Who signs score transactions, for which chain and task, with which nonce.
#[derive(Clone, Copy)]
pub struct ScoresTxContext<'a> {
    /// The chain id.
    pub chain_id: &'a str,
    /// The task scored.
    pub task: TaskId,
    /// The validator's key.
    pub key: &'a Keypair,
    /// The validator's next sequence number.
    pub nonce: Nonce,
}

/// The commitment a validator posts for `verdicts` with `salt`.
pub fn commitment(ctx: &ScoresTxContext<'_>, verdicts: &VerdictVector, salt: &Salt) -> Hash {
    scores_commitment(ctx.chain_id, ctx.task, &ctx.key.account(), verdicts, salt)
}

/// The signed `CommitScores` transaction for `verdicts` with `salt`.
pub fn commit_scores_tx(
    ctx: &ScoresTxContext<'_>,
    verdicts: &VerdictVector,
    salt: &Salt,
) -> SignedTx {
    let kind = TxKind::CommitScores { task: ctx.task, commitment: commitment(ctx, verdicts, salt) };
    SignedTx::sign(ctx.key, Tx { chain_id: ctx.chain_id.to_string(), nonce: ctx.nonce, kind })
}

/// The signed `RevealScores` transaction that opens [`commit_scores_tx`]'s commitment.
pub fn reveal_scores_tx(
    ctx: &ScoresTxContext<'_>,
    verdicts: VerdictVector,
    salt: Salt,
) -> SignedTx {
    let kind = TxKind::RevealScores { task: ctx.task, verdicts, salt };
    SignedTx::sign(ctx.key, Tx { chain_id: ctx.chain_id.to_string(), nonce: ctx.nonce, kind })
}

#[cfg(test)]
mod tests {
    use consensus::types::ScorePpm;
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

    #[test]
    fn reveal_opens_the_commitment_and_both_verify() {
        let key = Keypair::from_seed([9; 32]);
        let salt = Salt(Hash([4; 32]));
        let verdicts = verdict_vector(Verdict::scored(5), None, vec![], []).unwrap();
        let ctx = ScoresTxContext { chain_id: "c", task: TaskId(3), key: &key, nonce: Nonce(7) };
        let commit = commit_scores_tx(&ctx, &verdicts, &salt);
        let reveal = reveal_scores_tx(&ScoresTxContext { nonce: Nonce(8), ..ctx }, verdicts, salt);
        commit.verify("c").unwrap();
        reveal.verify("c").unwrap();
        let TxKind::CommitScores { commitment: c, .. } = commit.tx.kind else { panic!() };
        let TxKind::RevealScores { verdicts, salt, task } = reveal.tx.kind else { panic!() };
        assert_eq!(scores_commitment("c", task, &key.account(), &verdicts, &salt), c);
    }
}
