//! The task rules: opening a task, joining it as a trainer, attesting to its held-out file, and
//! revealing its held-out key.

use crate::commitment::HeldoutKey;
use crate::encoding::encode;
use crate::state::{State, Submission, TxError};
use crate::task::TaskSpec;
use crate::types::{AccountId, Amount, Height, TaskId};

use super::{Plan, TxContext};

impl State {
    /// Checks a `CreateTask`: a valid spec within the chain's limits, a known base model, a
    /// reward at least the minimum, and a spec fee that fits.
    pub(super) fn plan_create_task(
        &self,
        spec: &TaskSpec,
        reward: Amount,
    ) -> Result<Plan, TxError> {
        spec.validate(self.validators.iter().filter(|(_, v)| v.stake.0 > 0).count())?;
        self.meta.params.check_task(spec, reward)?;
        if let Some(base) = &spec.base_model {
            let known =
                self.champions.get(&base.model_hash).is_some_and(|c| c.params == base.params);
            if !known {
                return Err(TxError::UnknownBaseModel(base.model_hash));
            }
        }
        let min = self.meta.params.task_reward_min;
        if reward < min {
            return Err(TxError::RewardTooLow { min, found: reward });
        }
        // The spec's bytes stay in the state: they pay for themselves.
        let spec_fee = u64::try_from(encode(spec).len())
            .ok()
            .and_then(|n| n.checked_mul(self.meta.params.spec_fee_per_byte.0))
            .map(Amount)
            .ok_or(TxError::Overflow)?;
        reward.checked_add(spec_fee).ok_or(TxError::Overflow)?;
        Ok(Plan::CreateTask { spec: Box::new(spec.clone()), reward, spec_fee })
    }

    /// Burns the spec fee and opens the task (the signer paid the reward into its escrow).
    pub(super) fn apply_create_task(
        &mut self,
        signer: AccountId,
        spec: TaskSpec,
        reward: Amount,
        spec_fee: Amount,
        ctx: TxContext,
    ) {
        self.burn(spec_fee);
        self.open_task(signer, spec, reward, ctx.height);
    }

    /// Checks a `JoinTask`: in the join window, by neither a validator nor the creator, once,
    /// while the task has room.
    pub(super) fn plan_join_task(
        &self,
        signer: &AccountId,
        task: TaskId,
        h: Height,
    ) -> Result<Plan, TxError> {
        let t = self.task(task)?;
        Self::window("join_task", h, t.created_at.next(), t.join_deadline())?;
        if self.validators.contains(signer) {
            return Err(TxError::ValidatorCannotTrain(*signer));
        }
        if t.creator == *signer {
            return Err(TxError::CreatorCannotTrain(task));
        }
        if self.submissions.contains(&(task, *signer)) {
            return Err(TxError::AlreadyJoined(task));
        }
        if t.joined >= t.spec.max_trainers {
            return Err(TxError::TaskFull { task, max: t.spec.max_trainers });
        }
        Ok(Plan::Join { task, bond: t.spec.bond, entry_fee: t.spec.entry_fee })
    }

    /// Records the trainer's submission, with its bond and entry fee locked.
    pub(super) fn apply_join(
        &mut self,
        signer: AccountId,
        task: TaskId,
        bond: Amount,
        entry_fee: Amount,
        ctx: TxContext,
    ) {
        self.tasks.modify(&task, |t| t.joined += 1);
        self.submissions.insert(
            (task, signer),
            Submission {
                bond,
                entry_fee,
                joined_at: ctx.height,
                commitment: None,
                committed_at: None,
                reveal: None,
            },
        );
    }

    /// Checks an `AttestHeldout`: by a validator of the task's stake snapshot, in the join
    /// window, once.
    pub(super) fn plan_attest_heldout(
        &self,
        signer: &AccountId,
        task: TaskId,
        h: Height,
    ) -> Result<Plan, TxError> {
        let t = self.task(task)?;
        let stake = *t.stakes.get(signer).ok_or(TxError::NotValidator(*signer))?;
        Self::window("attest_heldout", h, t.created_at.next(), t.join_deadline())?;
        if t.attested.contains(signer) {
            return Err(TxError::AlreadyAttested(task));
        }
        Ok(Plan::Attest { task, stake })
    }

    /// Counts the validator's snapshot stake towards the attestation quorum.
    pub(super) fn apply_attest(&mut self, signer: AccountId, task: TaskId, stake: u64) {
        self.tasks.modify(&task, |t| {
            t.attested.insert(signer);
            t.attested_stake += stake;
        });
    }

    /// Checks a `RevealHeldoutKey`: by the creator, once, in the key window, opening the spec's
    /// key commitment.
    pub(super) fn plan_reveal_heldout_key(
        &self,
        signer: &AccountId,
        task: TaskId,
        key: HeldoutKey,
        h: Height,
    ) -> Result<Plan, TxError> {
        let t = self.task(task)?;
        if t.creator != *signer {
            return Err(TxError::NotCreator(task));
        }
        if t.key.is_some() {
            return Err(TxError::KeyAlreadyRevealed(task));
        }
        Self::window("reveal_heldout_key", h, t.commit_deadline().next(), t.key_deadline())?;
        if key.commitment() != t.spec.dataset.key_commitment {
            return Err(TxError::WrongKey(task));
        }
        Ok(Plan::RevealKey { task, key })
    }

    /// Puts the key on chain, which ends the key window.
    pub(super) fn apply_reveal_key(&mut self, task: TaskId, key: HeldoutKey, ctx: TxContext) {
        self.change_task(task, ctx.height, |t| t.key = Some((key, ctx.height)));
    }
}
