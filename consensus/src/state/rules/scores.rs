//! The score rules: a validator of a task's stake snapshot commits to its verdict vector, then
//! reveals it, laid out as the task's layout says.

use std::collections::BTreeSet;

use crate::commitment::{Salt, scores_commitment};
use crate::state::{CommitmentOwner, LayoutError, ScoreRecord, State, Task, TxError};
use crate::types::{AccountId, Hash, Height, ModelHash, ScorePpm, TaskId};
use crate::verdict::{Subject, Verdict, VerdictEntry, VerdictVector, expected_layout};

use super::{Plan, TxContext};

impl State {
    /// Checks a `CommitScores`: by a validator of the task's snapshot, once, in the score
    /// commit window, with a commitment new to the ledger.
    pub(super) fn plan_commit_scores(
        &self,
        signer: &AccountId,
        task: TaskId,
        commitment: Hash,
        h: Height,
    ) -> Result<Plan, TxError> {
        let t = self.task(task)?;
        if !t.stakes.contains_key(signer) {
            return Err(TxError::NotValidator(*signer));
        }
        if self.verdicts.contains(&(task, *signer)) {
            return Err(TxError::AlreadyCommitted(task));
        }
        Self::window("commit_scores", h, t.reveal_deadline().next(), t.score_commit_deadline())?;
        self.fresh_commitment(&commitment)?;
        Ok(Plan::CommitScores { task, commitment })
    }

    /// Records the validator's score record.
    pub(super) fn apply_commit_scores(
        &mut self,
        signer: AccountId,
        task: TaskId,
        commitment: Hash,
        ctx: TxContext,
    ) {
        self.verdicts.insert(
            (task, signer),
            ScoreRecord { commitment, committed_at: ctx.height, verdicts: None },
        );
        self.commitments.insert(commitment, CommitmentOwner { task, account: signer });
        self.change_task(task, ctx.height, |t| t.progress.scores_committed += 1);
    }

    /// Checks a `RevealScores`: by a validator of the task's snapshot, once, in the score
    /// reveal window, opening its commitment, with a well-formed verdict vector.
    pub(super) fn plan_reveal_scores(
        &self,
        signer: &AccountId,
        task: TaskId,
        verdicts: &VerdictVector,
        salt: &Salt,
        h: Height,
    ) -> Result<Plan, TxError> {
        let t = self.task(task)?;
        if !t.stakes.contains_key(signer) {
            return Err(TxError::NotValidator(*signer));
        }
        let record = self.verdicts.get(&(task, *signer));
        if record.is_some_and(|r| r.verdicts.is_some()) {
            return Err(TxError::AlreadyRevealed(task));
        }
        Self::window("reveal_scores", h, t.score_commit_deadline().next(), t.score_deadline())?;
        let record = record.ok_or(TxError::NotCommitted(task))?;
        if scores_commitment(&self.meta.chain_id, task, signer, verdicts, salt) != record.commitment
        {
            return Err(TxError::RevealMismatch(task));
        }
        self.check_verdicts(t, verdicts)?;
        Ok(Plan::RevealScores { task, verdicts: verdicts.clone() })
    }

    /// Records the revealed verdict vector.
    pub(super) fn apply_reveal_scores(
        &mut self,
        signer: AccountId,
        task: TaskId,
        verdicts: VerdictVector,
        ctx: TxContext,
    ) {
        self.verdicts.modify(&(task, signer), |r| r.verdicts = Some(verdicts));
        self.change_task(task, ctx.height, |t| t.progress.scores_revealed += 1);
    }

    /// The layout of a task's verdict vectors now: baseline, base model, earlier champions,
    /// revealed trainers.
    pub fn verdict_layout(&self, task: &Task) -> Vec<Subject> {
        let revealed = self
            .submissions
            .range((task.id, AccountId([0; 32]))..=(task.id, AccountId([0xff; 32])))
            .filter(|(_, s)| s.reveal.is_some())
            .map(|((_, a), _)| *a);
        let champions: Vec<ModelHash> = task.champions.iter().map(|c| c.model_hash).collect();
        expected_layout(task.base.is_some(), &champions, revealed)
    }

    /// Checks a verdict vector against the task's layout now: every subject once, in order,
    /// each with a verdict its subject allows.
    fn check_verdicts(&self, task: &Task, verdicts: &[VerdictEntry]) -> Result<(), LayoutError> {
        let expected = self.verdict_layout(task);
        let expected_set: BTreeSet<Subject> = expected.iter().copied().collect();
        let mut seen = BTreeSet::new();
        for e in verdicts {
            if !expected_set.contains(&e.subject) {
                return Err(LayoutError::Extra(e.subject));
            }
            if !seen.insert(e.subject) {
                return Err(LayoutError::Duplicate(e.subject));
            }
        }
        if let Some(missing) = expected.iter().find(|s| !seen.contains(s)) {
            return Err(LayoutError::Missing(*missing));
        }
        if let Some((index, (e, s))) =
            verdicts.iter().zip(&expected).enumerate().find(|(_, (e, s))| e.subject != **s)
        {
            return Err(LayoutError::Unsorted { index, expected: *s, found: e.subject });
        }
        for e in verdicts {
            let bad = |reason| LayoutError::BadVerdict { subject: e.subject, reason };
            if let Verdict::Scored { score_ppm } = e.verdict {
                if score_ppm > ScorePpm::MAX {
                    return Err(bad("score above 1000000 ppm"));
                }
            } else if e.subject == Subject::Baseline {
                return Err(bad("the trivial baseline is always scored"));
            }
        }
        Ok(())
    }
}
