//! The model rules: a trainer commits to its model, then reveals it once the held-out key is on
//! chain.

use crate::commitment::{Salt, model_commitment};
use crate::state::{CommitmentOwner, Reveal, State, TxError};
use crate::types::{AccountId, Hash, Height, TaskId};

use super::{Plan, TxContext};

impl State {
    /// Checks a `CommitModel`: once per trainer, in the commit window, by a trainer that
    /// joined, with a commitment new to the ledger.
    pub(super) fn plan_commit_model(
        &self,
        signer: &AccountId,
        task: TaskId,
        commitment: Hash,
        h: Height,
    ) -> Result<Plan, TxError> {
        let t = self.task(task)?;
        let sub = self.submissions.get(&(task, *signer));
        // Done already, said as such even once the window has closed behind it.
        if sub.is_some_and(|s| s.commitment.is_some()) {
            return Err(TxError::AlreadyCommitted(task));
        }
        Self::window("commit_model", h, t.created_at.next(), t.commit_deadline())?;
        sub.ok_or(TxError::NotJoined(task))?;
        self.fresh_commitment(&commitment)?;
        Ok(Plan::CommitModel { task, commitment })
    }

    /// Records the commitment and where in the chain it landed.
    pub(super) fn apply_commit_model(
        &mut self,
        signer: AccountId,
        task: TaskId,
        commitment: Hash,
        ctx: TxContext,
    ) {
        self.submissions.modify(&(task, signer), |s| {
            s.commitment = Some(commitment);
            s.committed_at = Some((ctx.height, ctx.index));
        });
        self.commitments.insert(commitment, CommitmentOwner { task, account: signer });
        self.change_task(task, ctx.height, |t| t.progress.committed += 1);
    }

    /// Checks a `RevealModel` (`reveal` is what the tx reveals, at this block's height): once
    /// per trainer, in the reveal window, after the held-out key, opening the trainer's
    /// commitment, within the task's limits.
    pub(super) fn plan_reveal_model(
        &self,
        signer: &AccountId,
        task: TaskId,
        salt: &Salt,
        reveal: Reveal,
    ) -> Result<Plan, TxError> {
        let h = reveal.revealed_at;
        let t = self.task(task)?;
        let sub = self.submissions.get(&(task, *signer));
        if sub.is_some_and(|s| s.reveal.is_some()) {
            return Err(TxError::AlreadyRevealed(task));
        }
        Self::window("reveal_model", h, t.commit_deadline().next(), t.reveal_deadline())?;
        if t.key.is_none() {
            return Err(TxError::KeyNotRevealed(task));
        }
        let sub = sub.ok_or(TxError::NotJoined(task))?;
        let committed = sub.commitment.ok_or(TxError::NotCommitted(task))?;
        if model_commitment(&self.meta.chain_id, task, signer, &reveal.model_hash, salt)
            != committed
        {
            return Err(TxError::RevealMismatch(task));
        }
        if reveal.size_bytes > t.spec.limits.max_artifact_bytes {
            return Err(TxError::OverLimit {
                what: "size_bytes",
                found: reveal.size_bytes,
                limit: t.spec.limits.max_artifact_bytes,
            });
        }
        if reveal.params > t.spec.limits.max_params {
            return Err(TxError::OverLimit {
                what: "params",
                found: reveal.params,
                limit: t.spec.limits.max_params,
            });
        }
        if reveal.params == 0 {
            return Err(TxError::ZeroParams);
        }
        Ok(Plan::RevealModel { task, reveal })
    }

    /// Records the reveal.
    pub(super) fn apply_reveal_model(
        &mut self,
        signer: AccountId,
        task: TaskId,
        reveal: Reveal,
        ctx: TxContext,
    ) {
        self.submissions.modify(&(task, signer), |s| s.reveal = Some(reveal));
        self.change_task(task, ctx.height, |t| t.progress.revealed += 1);
    }
}
