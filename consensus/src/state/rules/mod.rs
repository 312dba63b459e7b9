//! The transaction rules: each transaction is checked completely against the state (its plan)
//! before anything changes (its application), so a rejected transaction leaves the state as it
//! was. Each kind's rule lives with its kin: [`transfer`], [`tasks`] (opening, joining,
//! attesting, the held-out key), [`models`] (trainers' commitments and reveals), [`scores`]
//! (validators' verdict vectors) and [`evidence`] (slashing equivocation).

mod evidence;
mod models;
mod scores;
mod tasks;
mod transfer;

use crate::commitment::HeldoutKey;
use crate::task::TaskSpec;
use crate::tx::{SignedTx, TxKind};
use crate::types::{AccountId, Amount, Hash, Height, TaskId};
use crate::verdict::VerdictVector;

use super::{EvidenceKey, Reveal, State, Task, TxError};

/// Where a transaction executes: its block's height, its position in the block and the
/// block's proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxContext {
    /// The block's height.
    pub height: Height,
    /// The tx's position in the block.
    pub index: u32,
    /// The block's proposer (earns a share of a slash its block includes).
    pub proposer: AccountId,
}

/// A transaction's checked effect, computed before anything changes.
enum Plan {
    Transfer { to: AccountId, amount: Amount },
    CreateTask { spec: Box<TaskSpec>, reward: Amount, spec_fee: Amount },
    Join { task: TaskId, bond: Amount, entry_fee: Amount },
    Attest { task: TaskId, stake: u64 },
    RevealKey { task: TaskId, key: HeldoutKey },
    CommitModel { task: TaskId, commitment: Hash },
    RevealModel { task: TaskId, reveal: Reveal },
    CommitScores { task: TaskId, commitment: Hash },
    RevealScores { task: TaskId, verdicts: VerdictVector },
    Slash { key: EvidenceKey, amount: Amount },
}

impl Plan {
    /// What the signer pays besides the fee.
    fn cost(&self) -> Amount {
        match self {
            Plan::Transfer { amount, .. } => *amount,
            // Saturating: a cost over any balance is refused as insufficient.
            Plan::CreateTask { reward, spec_fee, .. } => {
                Amount(reward.0.saturating_add(spec_fee.0))
            }
            Plan::Join { bond, entry_fee, .. } => Amount(bond.0.saturating_add(entry_fee.0)),
            _ => Amount::ZERO,
        }
    }
}

impl State {
    /// Executes a transaction whose signature the caller already verified (block execution
    /// verifies every signature before it executes any tx). On error nothing changes.
    pub fn execute_tx(&mut self, stx: &SignedTx, ctx: TxContext) -> Result<(), TxError> {
        let tx = &stx.tx;
        if tx.chain_id != self.meta.chain_id {
            return Err(TxError::WrongChain {
                expected: self.meta.chain_id.clone(),
                found: tx.chain_id.clone(),
            });
        }
        let account = self.account(&stx.signer);
        if tx.nonce < account.nonce {
            return Err(TxError::NonceReplayed { expected: account.nonce, found: tx.nonce });
        }
        if tx.nonce > account.nonce {
            return Err(TxError::NonceGap { expected: account.nonce, found: tx.nonce });
        }
        let plan = self.plan(&stx.signer, &tx.kind, ctx)?;
        let fee = self.meta.params.tx_fee;
        let needed = u128::from(fee.0) + u128::from(plan.cost().0);
        if needed > u128::from(account.balance.0) {
            return Err(TxError::InsufficientBalance { needed, available: account.balance });
        }
        if let Plan::Transfer { to, amount } = &plan {
            let to_balance = if *to == stx.signer { 0 } else { self.account(to).balance.0 };
            to_balance.checked_add(amount.0).ok_or(TxError::Overflow)?;
        }
        // Checked: from here on nothing fails.
        self.accounts.update(stx.signer, |a| {
            a.balance.0 -= fee.0 + plan.cost().0;
            a.nonce.0 += 1;
        });
        self.burn(fee);
        self.apply(stx.signer, plan, ctx);
        Ok(())
    }

    /// Executes a transaction after verifying its signature (for mempools and single txs).
    pub fn check_and_execute_tx(&mut self, stx: &SignedTx, ctx: TxContext) -> Result<(), TxError> {
        if stx.tx.chain_id != self.meta.chain_id {
            return Err(TxError::WrongChain {
                expected: self.meta.chain_id.clone(),
                found: stx.tx.chain_id.clone(),
            });
        }
        stx.verify(&self.verifier, &self.meta.chain_id)?;
        self.execute_tx(stx, ctx)
    }

    /// A task that has not finalized: once cancelled (at its join deadline) or otherwise
    /// finalized, no transaction touches it, though its windows' heights may still be open.
    fn task(&self, id: TaskId) -> Result<&Task, TxError> {
        let task = self.tasks.get(&id).ok_or(TxError::UnknownTask(id))?;
        if task.report.is_some() {
            return Err(TxError::TaskClosed(id));
        }
        Ok(task)
    }

    /// Refuses `action` at `height` outside the window `opens..=closes`.
    fn window(
        action: &'static str,
        height: Height,
        opens: Height,
        closes: Height,
    ) -> Result<(), TxError> {
        if height < opens || height > closes {
            return Err(TxError::OutsideWindow { action, height, opens, closes });
        }
        Ok(())
    }

    /// Refuses a commitment already on the ledger.
    fn fresh_commitment(&self, commitment: &Hash) -> Result<(), TxError> {
        if self.commitments.contains(commitment) {
            return Err(TxError::DuplicateCommitment(*commitment));
        }
        Ok(())
    }

    /// Checks a transaction's effect against the state, changing nothing: each kind's rule.
    fn plan(&self, signer: &AccountId, kind: &TxKind, ctx: TxContext) -> Result<Plan, TxError> {
        let h = ctx.height;
        match kind {
            TxKind::Transfer { to, amount } => Ok(Self::plan_transfer(*to, *amount)),
            TxKind::CreateTask { spec, reward } => self.plan_create_task(spec, *reward),
            TxKind::JoinTask { task } => self.plan_join_task(signer, *task, h),
            TxKind::AttestHeldout { task } => self.plan_attest_heldout(signer, *task, h),
            TxKind::RevealHeldoutKey { task, key } => {
                self.plan_reveal_heldout_key(signer, *task, *key, h)
            }
            TxKind::CommitModel { task, commitment } => {
                self.plan_commit_model(signer, *task, *commitment, h)
            }
            TxKind::RevealModel { task, model_hash, salt, size_bytes, params } => {
                let reveal = Reveal {
                    model_hash: *model_hash,
                    size_bytes: *size_bytes,
                    params: *params,
                    revealed_at: h,
                };
                self.plan_reveal_model(signer, *task, salt, reveal)
            }
            TxKind::CommitScores { task, commitment } => {
                self.plan_commit_scores(signer, *task, *commitment, h)
            }
            TxKind::RevealScores { task, verdicts, salt } => {
                self.plan_reveal_scores(signer, *task, verdicts, salt, h)
            }
            TxKind::Evidence { a, b } => self.plan_evidence(a, b, h),
        }
    }

    /// Makes a checked transaction's effect.
    fn apply(&mut self, signer: AccountId, plan: Plan, ctx: TxContext) {
        match plan {
            Plan::Transfer { to, amount } => self.apply_transfer(to, amount),
            Plan::CreateTask { spec, reward, spec_fee } => {
                self.apply_create_task(signer, *spec, reward, spec_fee, ctx)
            }
            Plan::Join { task, bond, entry_fee } => {
                self.apply_join(signer, task, bond, entry_fee, ctx)
            }
            Plan::Attest { task, stake } => self.apply_attest(signer, task, stake),
            Plan::RevealKey { task, key } => self.apply_reveal_key(task, key, ctx),
            Plan::CommitModel { task, commitment } => {
                self.apply_commit_model(signer, task, commitment, ctx)
            }
            Plan::RevealModel { task, reveal } => {
                self.apply_reveal_model(signer, task, reveal, ctx)
            }
            Plan::CommitScores { task, commitment } => {
                self.apply_commit_scores(signer, task, commitment, ctx)
            }
            Plan::RevealScores { task, verdicts } => {
                self.apply_reveal_scores(signer, task, verdicts, ctx)
            }
            Plan::Slash { key, amount } => self.apply_slash(key, amount, ctx),
        }
    }
}
