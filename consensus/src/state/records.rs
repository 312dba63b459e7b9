//! The records the state's tables hold: accounts, validators, tasks and their submissions,
//! score records, commitments, champions, deadlines entries and the chain meta.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::commitment::HeldoutKey;
use crate::finalize::FinalizationReport;
use crate::genesis::Params;
use crate::task::TaskSpec;
use crate::types::{AccountId, Amount, Hash, Height, ModelHash, Nonce, Round, TaskId};
use crate::verdict::VerdictVector;
use crate::vote::VoteKind;

/// An account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: Amount,
    /// The nonce its next transaction must carry.
    pub nonce: Nonce,
}

/// A validator's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorRecord {
    /// Its stake (voting power and reward weight), after any slashing.
    pub stake: Amount,
    /// A human-readable name.
    pub name: String,
}

/// A task on the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Who opened it.
    pub creator: AccountId,
    /// The spec.
    pub spec: TaskSpec,
    /// The escrow.
    pub reward: Amount,
    /// The height of the block that opened it.
    pub created_at: Height,
    /// How many trainers joined.
    pub joined: u32,
    /// The validators' stakes when the task opened: who scores it, and with what weight, for
    /// its whole life (a later slash does not change a task's verdicts or payouts).
    pub stakes: BTreeMap<AccountId, u64>,
    /// The base model, if the spec names one, with its recorded score.
    pub base: Option<ReferenceModel>,
    /// The latest earlier champions on the same public training file (at most
    /// [`CHAMPION_REFERENCES_MAX`](super::CHAMPION_REFERENCES_MAX), the base model excluded),
    /// oldest first.
    pub champions: Vec<ReferenceModel>,
    /// The validators of the snapshot that attested to holding the sealed held-out file.
    pub attested: BTreeSet<AccountId>,
    /// Their snapshot stake: the task is cancelled at the join deadline unless
    /// `3 × attested_stake > 2 × total snapshot stake`.
    pub attested_stake: u64,
    /// The held-out key, once the creator revealed it, with the height of that block.
    pub key: Option<(HeldoutKey, Height)>,
    /// Who has acted in the windows that close early, and where they closed.
    pub progress: Progress,
    /// The height of this task's `Finalize` entry in
    /// [`State::deadlines`](super::State::deadlines) while it is open.
    pub due_check: Height,
    /// The finalization report, once the score deadline has passed.
    pub report: Option<FinalizationReport>,
}

/// How far a task's windows have got: a window after the join window closes before its
/// deadline, in the block where the last party that may act in it has acted (see
/// [`Task::commit_deadline`] and the deadlines after it).
///
/// The join window never closes early: closing it when the task fills would let whoever fills
/// it shut everyone else out. The commit window closes, once the join window is over, in the
/// block where every joined trainer has committed; the key window in the block where the
/// creator's key lands; the reveal window where every committed trainer has revealed; the score
/// commit window where every validator of the task's stake snapshot has committed; the score
/// reveal window, in which the task finalizes, where every validator that committed has
/// revealed. Each later window then lasts at most its length from there, so every deadline
/// stays an upper bound. A window closes early only when the set that may act in it is
/// exhausted, so no party is ever cut off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Trainers that committed a model.
    pub committed: u32,
    /// Trainers that revealed their model.
    pub revealed: u32,
    /// Validators that committed a verdict vector.
    pub scores_committed: u32,
    /// Validators that revealed their verdict vector.
    pub scores_revealed: u32,
    /// The last height of the commit window, when it closed early.
    pub commit_closed: Option<Height>,
    /// The last height of the reveal window, when it closed early.
    pub reveal_closed: Option<Height>,
    /// The last height of the score commit window, when it closed early.
    pub score_commit_closed: Option<Height>,
    /// The last height of the score reveal window, when it closed early.
    pub score_reveal_closed: Option<Height>,
}

/// A model that exists before a task opens and that its submissions must beat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceModel {
    /// sha256 of its artifact.
    pub model_hash: ModelHash,
    /// Its non-zero parameter count.
    pub params: u64,
    /// Its effective score when it became champion, in ppm: the floor while validators cannot
    /// score it.
    pub recorded_ppm: u32,
}

/// Where a task stands at a height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Trainers may join (and commit).
    Join,
    /// Joined trainers may commit.
    Commit,
    /// The creator reveals the held-out key (trainers may reveal once it is on chain).
    Key,
    /// Trainers reveal.
    Reveal,
    /// Validators commit verdict vectors.
    ScoreCommit,
    /// Validators reveal verdict vectors.
    ScoreReveal,
    /// Finalized: see the report.
    Finalized,
}

/// A trainer's revealed model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    /// sha256 of the artifact.
    pub model_hash: ModelHash,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Declared non-zero parameter count.
    pub params: u64,
    /// Height of the reveal.
    pub revealed_at: Height,
}

/// A trainer's participation in a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The bond it locked.
    pub bond: Amount,
    /// The entry fee it paid, held with the task until finalization (burned then, unless the
    /// task is cancelled or its key withheld).
    pub entry_fee: Amount,
    /// When it joined.
    pub joined_at: Height,
    /// Its model commitment, once committed.
    pub commitment: Option<Hash>,
    /// Where the commitment landed: block height and position in the block.
    pub committed_at: Option<(Height, u32)>,
    /// Its reveal, once revealed.
    pub reveal: Option<Reveal>,
}

/// A validator's scoring of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRecord {
    /// Its verdict-vector commitment.
    pub commitment: Hash,
    /// Height of the commitment.
    pub committed_at: Height,
    /// Its verdicts, once revealed.
    pub verdicts: Option<VerdictVector>,
}

/// Who owns a commitment on the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitmentOwner {
    /// The task.
    pub task: TaskId,
    /// The committer.
    pub account: AccountId,
}

/// A task's champion, indexed by model hash so later tasks can fine-tune from it and count it
/// in their baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChampionRecord {
    /// The task it won.
    pub task: TaskId,
    /// sha256 of that task's public training file.
    pub train_sha256: Hash,
    /// Its trainer.
    pub trainer: AccountId,
    /// Its non-zero parameter count.
    pub params: u64,
    /// Its effective score, in ppm.
    pub effective_ppm: u32,
}

/// The chain's scalar state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainMeta {
    /// The chain id.
    pub chain_id: String,
    /// The genesis hash.
    pub genesis_hash: Hash,
    /// Parameters from genesis.
    pub params: Params,
    /// Height of the last applied block (0 before the first).
    pub height: Height,
    /// Hash of the last applied block (the genesis hash before the first).
    pub last_block_hash: Hash,
    /// Time of the last applied block (genesis time before the first), in ms.
    pub last_time_ms: u64,
    /// The id the next task gets.
    pub next_task_id: u64,
    /// Everything burned so far: fees, forfeits, slashes, remainders.
    pub burned: Amount,
}

/// An equivocation key: slashed at most once.
pub type EvidenceKey = (AccountId, Height, Round, VoteKind);

/// What falls due for a task at a height (the [`State::deadlines`](super::State::deadlines)
/// table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Due {
    /// One of the task's deadlines (join, key, score): it finalizes here if it is due
    /// ([`Task::due_at`]: cancelled, key withheld, or scored); otherwise its next deadline is
    /// scheduled.
    Finalize,
    /// `task_retention` heights after finalization: the task's bulky data leaves the state.
    Prune,
}
