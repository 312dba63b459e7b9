//! Why a state operation fails: a key lookup, a load, a verdict vector's layout, a transaction.

use crate::crypto::SignatureError;
use crate::encoding::DecodeError;
use crate::storage::StoreError;
use crate::task::SpecError;
use crate::types::{AccountId, Amount, Hash, Height, ModelHash, Nonce, Round, TaskId};
use crate::verdict::Subject;

/// Why a state record cannot be looked up by its key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateKeyError {
    /// The tree holds no ledger state (blocks, commits, the tx index, the WAL).
    #[error("`{0}` is not a state table")]
    NotState(&'static str),
    /// The bytes are not a key of the table.
    #[error("not a key of this table: {0}")]
    Malformed(#[from] DecodeError),
    /// The bytes decode, but are not the key's canonical encoding.
    #[error("the key bytes are not in canonical form")]
    NotCanonical,
    /// The key text is not of the table's form.
    #[error("a `{table}` key is {expected}; got {found:?}")]
    BadText {
        /// The table.
        table: &'static str,
        /// The forms it takes.
        expected: &'static str,
        /// The text given, cut to 80 characters.
        found: String,
    },
}

/// Why the state could not be loaded from a store.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record does not decode: the store is corrupt or from another version.
    #[error("stored state is corrupt: {0}")]
    Corrupt(#[from] DecodeError),
}

/// Why a verdict vector's layout is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// An expected entry is absent.
    #[error("missing an entry for {0:?}")]
    Missing(Subject),
    /// An entry names a subject that is not in the layout.
    #[error("extra entry for {0:?}")]
    Extra(Subject),
    /// A subject appears twice.
    #[error("entry for {0:?} appears twice")]
    Duplicate(Subject),
    /// Every subject is there, in the wrong order.
    #[error(
        "entry {index} is {found:?}, expected {expected:?} (entries must be baseline, base model, then trainers by account id)"
    )]
    Unsorted {
        /// First position that differs.
        index: usize,
        /// What the layout has there.
        expected: Subject,
        /// What the vector has there.
        found: Subject,
    },
    /// An entry's verdict is not allowed for its subject.
    #[error("entry for {subject:?} is invalid: {reason}")]
    BadVerdict {
        /// The entry.
        subject: Subject,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a transaction is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The tx names another chain.
    #[error("transaction is for chain {found:?}, this is {expected:?}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The tx's chain.
        found: String,
    },
    /// The signature fails the acceptance rule.
    #[error("bad signature: {0}")]
    BadSignature(#[from] SignatureError),
    /// The nonce was already used.
    #[error("nonce {found} already used; the account's next nonce is {expected}")]
    NonceReplayed {
        /// The account's next nonce.
        expected: Nonce,
        /// The tx's nonce.
        found: Nonce,
    },
    /// The nonce skips ahead.
    #[error("nonce {found} skips ahead; the account's next nonce is {expected}")]
    NonceGap {
        /// The account's next nonce.
        expected: Nonce,
        /// The tx's nonce.
        found: Nonce,
    },
    /// The signer cannot pay the fee plus what the tx moves or locks.
    #[error("insufficient balance: needs {needed} (fee included), has {available}")]
    InsufficientBalance {
        /// Fee plus amount.
        needed: u128,
        /// Balance.
        available: Amount,
    },
    /// The task does not exist.
    #[error("no task {0}")]
    UnknownTask(TaskId),
    /// The tx is outside the window it belongs to.
    #[error("{action} is allowed at heights {opens}..={closes}; this block is {height}")]
    OutsideWindow {
        /// What was attempted.
        action: &'static str,
        /// The block's height.
        height: Height,
        /// First allowed height.
        opens: Height,
        /// Last allowed height.
        closes: Height,
    },
    /// Validators may not train.
    #[error("validator {0} may not join a task as a trainer")]
    ValidatorCannotTrain(AccountId),
    /// A task's creator may not train for it.
    #[error("the creator of task {0} may not join it")]
    CreatorCannotTrain(TaskId),
    /// The task has its `max_trainers`.
    #[error("task {task} is full ({max} trainers)")]
    TaskFull {
        /// The task.
        task: TaskId,
        /// Its limit.
        max: u32,
    },
    /// The trainer already joined.
    #[error("already joined task {0}")]
    AlreadyJoined(TaskId),
    /// The trainer did not join.
    #[error("not a trainer of task {0}")]
    NotJoined(TaskId),
    /// A second commitment for the same task.
    #[error("already committed for task {0}")]
    AlreadyCommitted(TaskId),
    /// The commitment is already on the ledger.
    #[error("commitment {0} is already on the ledger")]
    DuplicateCommitment(Hash),
    /// A reveal without a commitment.
    #[error("nothing committed for task {0}")]
    NotCommitted(TaskId),
    /// A second reveal.
    #[error("already revealed for task {0}")]
    AlreadyRevealed(TaskId),
    /// The reveal does not open the commitment.
    #[error("reveal does not match the commitment for task {0}")]
    RevealMismatch(TaskId),
    /// The revealed artifact breaks the task's limits.
    #[error("revealed {what} {found} is over the task's limit of {limit}")]
    OverLimit {
        /// `size_bytes` or `params`.
        what: &'static str,
        /// The revealed value.
        found: u64,
        /// The limit.
        limit: u64,
    },
    /// Zero parameters revealed.
    #[error("revealed parameter count must be positive")]
    ZeroParams,
    /// Only validators score.
    #[error("{0} is not a validator")]
    NotValidator(AccountId),
    /// The verdict vector is malformed.
    #[error("verdict vector: {0}")]
    Layout(#[from] LayoutError),
    /// The task spec is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// A task's base model is not a champion on the ledger.
    #[error("base model {0} is not a champion on the ledger (or its params differ)")]
    UnknownBaseModel(ModelHash),
    /// The evidence is older than the chain accepts.
    #[error("evidence for height {height} is older than {max_age} heights")]
    EvidenceTooOld {
        /// The height of the votes.
        height: Height,
        /// The chain's `evidence_max_age`.
        max_age: u64,
    },
    /// The evidence is not two conflicting votes with valid signatures.
    #[error("evidence is invalid: {0}")]
    InvalidEvidence(&'static str),
    /// This equivocation was already slashed.
    #[error("equivocation of {validator} at height {height} round {round} was already slashed")]
    EvidenceUsed {
        /// The validator.
        validator: AccountId,
        /// The height.
        height: Height,
        /// The round.
        round: Round,
    },
    /// A balance would overflow.
    #[error("amount overflows")]
    Overflow,
    /// The task has finalized (it may have been cancelled at its join deadline).
    #[error("task {0} has finalized")]
    TaskClosed(TaskId),
    /// A validator attested twice.
    #[error("already attested to the held-out file of task {0}")]
    AlreadyAttested(TaskId),
    /// Only the task's creator reveals its held-out key.
    #[error("only the creator of task {0} may reveal its held-out key")]
    NotCreator(TaskId),
    /// The key does not open the spec's `key_commitment`.
    #[error("the key does not match the key commitment of task {0}")]
    WrongKey(TaskId),
    /// The key is already on chain.
    #[error("the held-out key of task {0} is already on chain")]
    KeyAlreadyRevealed(TaskId),
    /// A trainer reveal before the held-out key is on chain.
    #[error("task {0}'s held-out key is not on chain yet: models stay sealed until it is")]
    KeyNotRevealed(TaskId),
    /// A task's reward is below the chain's minimum.
    #[error("a task's reward must be at least {min}, found {found}")]
    RewardTooLow {
        /// The chain's `task_reward_min`.
        min: Amount,
        /// The reward offered.
        found: Amount,
    },
}
