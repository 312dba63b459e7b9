//! The ledger state and the rules that change it: transactions, task windows, end-of-block
//! finalization and validator-set changes.
//!
//! The state is a set of typed tables (persistent ordered maps, so a clone is O(1) and shares
//! every node until one side writes) that mirror the store's trees. Every table records which
//! keys a block touched, so [`State::take_changes`] yields exactly the writes that persist a
//! block and updates the state's sparse Merkle tree ([`crate::merkle`]) at exactly those leaves:
//! the root ([`State::root`]) costs O(changes × log n), never a pass over the whole state.
//!
//! Each transaction is checked completely before anything changes ([`State::execute_tx`] plans,
//! then applies), so a rejected transaction leaves the state as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::OrdMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::commitment::{HeldoutKey, model_commitment, scores_commitment};
use crate::crypto::SignatureError;
use crate::encoding::{DecodeError, decode, encode};
use crate::finalize::{
    FinalizationReport, FinalizeInput, ReferenceInput, RevealInput, TrainerInput, ValidatorInput,
    finalize,
};
use crate::genesis::{Genesis, Params};
use crate::merkle::{LeafChange, MerkleTree, StateProof, leaf_path, value_hash};
use crate::storage::{Op, Store, StoreError, Tree};
use crate::task::{SpecError, TaskSpec};
use crate::tx::{SignedTx, TxKind};
use crate::types::{AccountId, Amount, Hash, Height, ModelHash, Nonce, Round, ScorePpm, TaskId};
use crate::validators::{ValidatorInfo, ValidatorSet};
use crate::verdict::{Subject, Verdict, VerdictEntry, VerdictVector, expected_layout};
use crate::vote::VoteKind;

/// Largest value decoded from the store, in bytes (a task with its report is the largest).
const STORED_VALUE_BYTES_MAX: usize = 64 << 20;

/// Most earlier champions on the same public training file that a task records as reference
/// models (the latest ones): each is a verdict-vector entry every validator scores.
pub const CHAMPION_REFERENCES_MAX: usize = 4;

/// The proposer that includes Evidence earns `slash / EVIDENCE_PROPOSER_DIVISOR` (the rest
/// burns). A share for whoever reports would let a validator recoup its own slash through a
/// second account; the proposer is a validator the slashed one cannot choose.
pub const EVIDENCE_PROPOSER_DIVISOR: u64 = 16;

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
    /// [`CHAMPION_REFERENCES_MAX`], the base model excluded), oldest first.
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
    /// The height of this task's `Finalize` entry in [`State::deadlines`] while it is open.
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

impl Task {
    /// Last height at which trainers may join.
    pub fn join_deadline(&self) -> Height {
        self.created_at.plus(self.spec.windows.join)
    }
    /// Last height at which trainers may commit: where the window closed early (see
    /// [`Progress`]), or `windows.commit` blocks after the join deadline.
    pub fn commit_deadline(&self) -> Height {
        self.progress.commit_closed.unwrap_or(self.join_deadline().plus(self.spec.windows.commit))
    }
    /// Last height at which the creator may reveal the held-out key: the height it landed at,
    /// or `windows.key` blocks after the commit deadline.
    pub fn key_deadline(&self) -> Height {
        match self.key {
            Some((_, at)) => at,
            None => self.commit_deadline().plus(self.spec.windows.key),
        }
    }
    /// Last height at which trainers may reveal: where the window closed early, or
    /// `windows.reveal` blocks after the key deadline.
    pub fn reveal_deadline(&self) -> Height {
        self.progress.reveal_closed.unwrap_or(self.key_deadline().plus(self.spec.windows.reveal))
    }
    /// Whether validators holding more than 2/3 of the snapshot stake attested so far.
    pub fn attestation_quorum(&self) -> bool {
        let total: u64 = self.stakes.values().sum();
        crate::validators::is_quorum(self.attested_stake, total)
    }
    /// The held-out key, if it is on chain.
    pub fn heldout_key(&self) -> Option<HeldoutKey> {
        self.key.map(|(k, _)| k)
    }
    /// The height at which this task finalizes, as far as the state at `height` knows: the join
    /// deadline if the attestations fell short, the key deadline if the key is missing then,
    /// the score deadline otherwise.
    fn due_at(&self, height: Height) -> Option<Height> {
        if self.report.is_some() {
            None
        } else if height >= self.join_deadline() && !self.attestation_quorum() {
            Some(self.join_deadline())
        } else if height >= self.key_deadline() && self.key.is_none() {
            Some(self.key_deadline())
        } else {
            Some(self.score_deadline())
        }
    }
    /// The first deadline at or after `height` at which the task may finalize (see
    /// [`Task::due_at`]): the join deadline, the key deadline while the key is missing, or the
    /// score deadline.
    fn next_deadline(&self, height: Height) -> Option<Height> {
        let key = self.key.is_none().then(|| self.key_deadline());
        [Some(self.join_deadline()), key, Some(self.score_deadline())]
            .into_iter()
            .flatten()
            .filter(|d| *d >= height)
            .min()
    }
    /// Last height at which validators may commit scores: where the window closed early, or
    /// `windows.score_commit` blocks after the reveal deadline.
    pub fn score_commit_deadline(&self) -> Height {
        self.progress
            .score_commit_closed
            .unwrap_or(self.reveal_deadline().plus(self.spec.windows.score_commit))
    }
    /// Last height at which validators may reveal scores, and the block in which the task
    /// finalizes: where the window closed early, or `windows.score_reveal` blocks after the score
    /// commit deadline.
    pub fn score_deadline(&self) -> Height {
        self.progress
            .score_reveal_closed
            .unwrap_or(self.score_commit_deadline().plus(self.spec.windows.score_reveal))
    }

    /// Closes, at `height`, every window whose acting set is exhausted, in order (one close can
    /// leave the next window with nobody to wait for). Changes nothing before the join deadline
    /// or once a window's deadline has passed.
    fn close_exhausted_windows(&mut self, height: Height) {
        if height < self.join_deadline() || self.report.is_some() {
            return;
        }
        let p = &self.progress;
        if p.commit_closed.is_none()
            && p.committed == self.joined
            && height < self.commit_deadline()
        {
            self.progress.commit_closed = Some(height);
        }
        // The key window closes by itself: its deadline is the height where the key landed.
        let p = &self.progress;
        if self.key.is_some()
            && p.reveal_closed.is_none()
            && p.revealed == p.committed
            && height > self.commit_deadline()
            && height < self.reveal_deadline()
        {
            self.progress.reveal_closed = Some(height);
        }
        let p = &self.progress;
        let validators = u32::try_from(self.stakes.len()).unwrap_or(u32::MAX);
        if p.score_commit_closed.is_none()
            && p.scores_committed == validators
            && height > self.reveal_deadline()
            && height < self.score_commit_deadline()
        {
            self.progress.score_commit_closed = Some(height);
        }
        let p = &self.progress;
        if p.score_reveal_closed.is_none()
            && p.scores_revealed == p.scores_committed
            && p.scores_committed > 0
            && height > self.score_commit_deadline()
            && height < self.score_deadline()
        {
            self.progress.score_reveal_closed = Some(height);
        }
    }

    /// The phase at `height` (the height of the block being executed).
    pub fn phase(&self, height: Height) -> Phase {
        if self.report.is_some() {
            Phase::Finalized
        } else if height <= self.join_deadline() {
            Phase::Join
        } else if height <= self.commit_deadline() {
            Phase::Commit
        } else if height <= self.key_deadline() && self.key.is_none() {
            Phase::Key
        } else if height <= self.reveal_deadline() {
            Phase::Reveal
        } else if height <= self.score_commit_deadline() {
            Phase::ScoreCommit
        } else {
            Phase::ScoreReveal
        }
    }
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

/// What falls due for a task at a height (the [`State::deadlines`] table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Due {
    /// One of the task's deadlines (join, key, score): it finalizes here if it is due
    /// ([`Task::due_at`]: cancelled, key withheld, or scored); otherwise its next deadline is
    /// scheduled.
    Finalize,
    /// `task_retention` heights after finalization: the task's bulky data leaves the state.
    Prune,
}

/// A table: a persistent ordered map that remembers which keys changed. Values sit behind an
/// `Arc`, so copying a shared map node on write never copies a large record (a task's spec).
#[derive(Clone, Debug)]
pub struct Table<K: Ord, V> {
    tree: Tree,
    map: OrdMap<K, Arc<V>>,
    dirty: BTreeSet<K>,
}

impl<K, V> Table<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    fn new(tree: Tree) -> Self {
        Table { tree, map: OrdMap::new(), dirty: BTreeSet::new() }
    }

    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|v| &**v)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, v)| (k, &**v))
    }

    /// Entries with keys in a range, in key order (or reversed).
    pub fn range<R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.map.range(range).map(|(k, v)| (k, &**v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn insert(&mut self, key: K, value: V) {
        self.dirty.insert(key.clone());
        self.map.insert(key, Arc::new(value));
    }

    fn remove(&mut self, key: &K) {
        self.dirty.insert(key.clone());
        self.map.remove(key);
    }

    fn update(&mut self, key: K, f: impl FnOnce(&mut V))
    where
        V: Default,
    {
        // One walk down the tree, not a removal and an insertion.
        match self.map.get_mut(&key) {
            Some(value) => f(Arc::make_mut(value)),
            None => {
                let mut value = V::default();
                f(&mut value);
                self.map.insert(key.clone(), Arc::new(value));
            }
        }
        self.dirty.insert(key);
    }

    fn modify(&mut self, key: &K, f: impl FnOnce(&mut V)) {
        if let Some(value) = self.map.get_mut(key) {
            f(Arc::make_mut(value));
            self.dirty.insert(key.clone());
        }
    }

    /// The Merkle leaf changes of every key changed since the last [`Table::take_changes`].
    fn pending_leaves(&self, leaves: &mut Vec<LeafChange>) {
        for key in &self.dirty {
            let k = encode(key);
            let value = self.map.get(key).map(|v| value_hash(&encode(&**v)));
            leaves.push((leaf_path(self.tree, &k), value));
        }
    }

    /// The store writes and Merkle leaf changes of every changed key; forgets the changes.
    fn take_changes(&mut self, ops: &mut Vec<Op>, leaves: &mut Vec<LeafChange>) {
        for key in std::mem::take(&mut self.dirty) {
            let k = encode(&key);
            let path = leaf_path(self.tree, &k);
            match self.map.get(&key) {
                Some(v) => {
                    let v = encode(&**v);
                    leaves.push((path, Some(value_hash(&v))));
                    ops.push(Op::Put(self.tree, k, v));
                }
                None => {
                    leaves.push((path, None));
                    ops.push(Op::Delete(self.tree, k));
                }
            }
        }
    }

    /// The canonical value bytes at the canonical key bytes `key`.
    fn encoded(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateKeyError> {
        let decoded: K = decode("state key", key, STATE_KEY_BYTES_MAX)?;
        if encode(&decoded) != key {
            return Err(StateKeyError::NotCanonical);
        }
        Ok(self.map.get(&decoded).map(|v| encode(&**v)))
    }

    /// Loads the table, adding a Merkle leaf per record to `leaves`.
    fn load(
        tree: Tree,
        store: &dyn Store,
        leaves: &mut Vec<(Hash, Hash)>,
    ) -> Result<Self, LoadError> {
        let mut table = Table::new(tree);
        for (k, v) in store.scan(tree)? {
            let key: K = decode("stored key", &k, STORED_VALUE_BYTES_MAX)?;
            let value: V = decode("stored value", &v, STORED_VALUE_BYTES_MAX)?;
            // Hash the re-encoded record, as the live path does, so a stored record in a
            // non-canonical encoding cannot change the root.
            leaves.push((leaf_path(tree, &encode(&key)), value_hash(&encode(&value))));
            table.map.insert(key, Arc::new(value));
        }
        Ok(table)
    }
}

/// Longest canonical key of a state record, in bytes (the largest is an evidence key).
pub const STATE_KEY_BYTES_MAX: usize = 128;

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

/// The canonical key bytes of a record of `table` written as text: an account id (hex) for
/// accounts and validators, a decimal id for tasks, a decimal height for validator sets,
/// `TASK:ACCOUNT` for submissions and verdicts, a hash (hex) for commitments and champions,
/// `chain` for meta; for any table, `0x` followed by the canonical key bytes in hex.
pub fn parse_state_key(table: Tree, text: &str) -> Result<Vec<u8>, StateKeyError> {
    let expected = match table {
        Tree::Accounts | Tree::Validators => "an account id (64 hex characters) or 0x+hex",
        Tree::Tasks => "a decimal task id or 0x+hex",
        Tree::ValidatorSets => "a decimal height or 0x+hex",
        Tree::Submissions | Tree::Verdicts => "TASK:ACCOUNT (decimal id, hex account) or 0x+hex",
        Tree::Commitments | Tree::Champions => "a hash (64 hex characters) or 0x+hex",
        Tree::Meta => "`chain` or 0x+hex",
        Tree::Deadlines => "HEIGHT:TASK (decimal height and id) or 0x+hex",
        Tree::ChampionIndex => "FILE:TASK (hex sha256 of the training file, decimal id) or 0x+hex",
        Tree::Evidence => "0x and the canonical key bytes in hex",
        Tree::Blocks | Tree::Commits | Tree::TxIndex | Tree::Wal => {
            return Err(StateKeyError::NotState(table.name()));
        }
    };
    let bad = || StateKeyError::BadText {
        table: table.name(),
        expected,
        found: text.chars().take(80).collect(),
    };
    if let Some(raw) = text.strip_prefix("0x") {
        if raw.len() > 2 * STATE_KEY_BYTES_MAX {
            return Err(bad());
        }
        return hex::decode(raw).map_err(|_| bad());
    }
    let key = match table {
        Tree::Accounts | Tree::Validators => encode(&text.parse::<AccountId>().map_err(|_| bad())?),
        Tree::Tasks => encode(&TaskId(text.parse().map_err(|_| bad())?)),
        Tree::ValidatorSets => encode(&Height(text.parse().map_err(|_| bad())?)),
        Tree::Submissions | Tree::Verdicts => {
            let (task, account) = text.split_once(':').ok_or_else(bad)?;
            let task = TaskId(task.parse().map_err(|_| bad())?);
            encode(&(task, account.parse::<AccountId>().map_err(|_| bad())?))
        }
        Tree::Commitments | Tree::Champions => encode(&text.parse::<Hash>().map_err(|_| bad())?),
        Tree::Meta if text == "chain" => META_KEY.to_vec(),
        Tree::Deadlines => {
            let (height, task) = text.split_once(':').ok_or_else(bad)?;
            let height = Height(height.parse().map_err(|_| bad())?);
            encode(&(height, TaskId(task.parse().map_err(|_| bad())?)))
        }
        Tree::ChampionIndex => {
            let (file, task) = text.split_once(':').ok_or_else(bad)?;
            let file = file.parse::<Hash>().map_err(|_| bad())?;
            encode(&(file, TaskId(task.parse().map_err(|_| bad())?)))
        }
        _ => return Err(bad()),
    };
    Ok(key)
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

/// The ledger state.
#[derive(Clone, Debug)]
pub struct State {
    meta: ChainMeta,
    meta_dirty: bool,
    /// The Merkle tree as of the last [`State::take_changes`] (or load).
    merkle: MerkleTree,
    /// Accounts.
    pub accounts: Table<AccountId, Account>,
    /// Validators.
    pub validators: Table<AccountId, ValidatorRecord>,
    /// Validator sets by the height they sign.
    pub validator_sets: Table<Height, ValidatorSet>,
    /// Tasks.
    pub tasks: Table<TaskId, Task>,
    /// Submissions by (task, trainer).
    pub submissions: Table<(TaskId, AccountId), Submission>,
    /// Score records by (task, validator).
    pub verdicts: Table<(TaskId, AccountId), ScoreRecord>,
    /// Every commitment on the ledger.
    pub commitments: Table<Hash, CommitmentOwner>,
    /// Slashed equivocations, with the height they were slashed at.
    pub evidence: Table<EvidenceKey, Height>,
    /// Champions by model hash.
    pub champions: Table<ModelHash, ChampionRecord>,
    /// The model hash of each champion by (sha256 of its task's public training file, task).
    pub champion_index: Table<(Hash, TaskId), ModelHash>,
    /// What falls due at each height, by (height, task): a block's end reads only its own
    /// height's entries, never every task.
    pub deadlines: Table<(Height, TaskId), Due>,
}

/// The key of the chain meta record in the [`Tree::Meta`] table.
pub const META_KEY: &[u8] = b"chain";

impl State {
    /// The state at height 0.
    pub fn from_genesis(genesis: &Genesis) -> State {
        let mut state = State {
            meta: ChainMeta {
                chain_id: genesis.chain_id.clone(),
                genesis_hash: genesis.hash(),
                params: genesis.params.clone(),
                height: Height(0),
                last_block_hash: genesis.hash(),
                last_time_ms: genesis.genesis_time_ms,
                next_task_id: 1,
                burned: Amount::ZERO,
            },
            meta_dirty: true,
            merkle: MerkleTree::default(),
            accounts: Table::new(Tree::Accounts),
            validators: Table::new(Tree::Validators),
            validator_sets: Table::new(Tree::ValidatorSets),
            tasks: Table::new(Tree::Tasks),
            submissions: Table::new(Tree::Submissions),
            verdicts: Table::new(Tree::Verdicts),
            commitments: Table::new(Tree::Commitments),
            evidence: Table::new(Tree::Evidence),
            champions: Table::new(Tree::Champions),
            champion_index: Table::new(Tree::ChampionIndex),
            deadlines: Table::new(Tree::Deadlines),
        };
        for b in &genesis.balances {
            state.accounts.insert(b.account, Account { balance: b.amount, nonce: Nonce(0) });
        }
        for v in &genesis.validators {
            state
                .validators
                .insert(v.account, ValidatorRecord { stake: v.stake, name: v.name.clone() });
        }
        let set = genesis.validator_set();
        state.validator_sets.insert(Height(1), set.clone());
        state.validator_sets.insert(Height(2), set);
        for t in &genesis.tasks {
            // Genesis validation guarantees the creator's balance covers its rewards.
            state.accounts.update(t.creator, |a| a.balance.0 -= t.reward.0);
            state.open_task(t.creator, t.spec.clone(), t.reward, Height(0));
        }
        state
    }

    /// Loads the state from a store, or `None` if the store holds no chain.
    pub fn load(store: &dyn Store) -> Result<Option<State>, LoadError> {
        let Some(meta) = store.get(Tree::Meta, META_KEY)? else {
            return Ok(None);
        };
        let meta: ChainMeta = decode("chain meta", &meta, STORED_VALUE_BYTES_MAX)?;
        let mut leaves = vec![(leaf_path(Tree::Meta, META_KEY), value_hash(&encode(&meta)))];
        let l = &mut leaves;
        let mut state = State {
            meta,
            meta_dirty: false,
            merkle: MerkleTree::default(),
            accounts: Table::load(Tree::Accounts, store, l)?,
            validators: Table::load(Tree::Validators, store, l)?,
            validator_sets: Table::load(Tree::ValidatorSets, store, l)?,
            tasks: Table::load(Tree::Tasks, store, l)?,
            submissions: Table::load(Tree::Submissions, store, l)?,
            verdicts: Table::load(Tree::Verdicts, store, l)?,
            commitments: Table::load(Tree::Commitments, store, l)?,
            evidence: Table::load(Tree::Evidence, store, l)?,
            champions: Table::load(Tree::Champions, store, l)?,
            champion_index: Table::load(Tree::ChampionIndex, store, l)?,
            deadlines: Table::load(Tree::Deadlines, store, l)?,
        };
        state.merkle = MerkleTree::from_leaves(leaves);
        Ok(Some(state))
    }

    /// The writes that persist every change since the last call; the Merkle tree takes the same
    /// changes, so [`State::root`] is then O(1).
    pub fn take_changes(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut leaves = Vec::new();
        if std::mem::take(&mut self.meta_dirty) {
            let meta = encode(&self.meta);
            leaves.push((leaf_path(Tree::Meta, META_KEY), Some(value_hash(&meta))));
            ops.push(Op::Put(Tree::Meta, META_KEY.to_vec(), meta));
        }
        let l = &mut leaves;
        self.accounts.take_changes(&mut ops, l);
        self.validators.take_changes(&mut ops, l);
        self.validator_sets.take_changes(&mut ops, l);
        self.tasks.take_changes(&mut ops, l);
        self.submissions.take_changes(&mut ops, l);
        self.verdicts.take_changes(&mut ops, l);
        self.commitments.take_changes(&mut ops, l);
        self.evidence.take_changes(&mut ops, l);
        self.champions.take_changes(&mut ops, l);
        self.champion_index.take_changes(&mut ops, l);
        self.deadlines.take_changes(&mut ops, l);
        self.merkle.apply(leaves);
        ops
    }

    fn pending_leaves(&self) -> Vec<LeafChange> {
        let mut leaves = Vec::new();
        if self.meta_dirty {
            leaves.push((leaf_path(Tree::Meta, META_KEY), Some(value_hash(&encode(&self.meta)))));
        }
        let l = &mut leaves;
        self.accounts.pending_leaves(l);
        self.validators.pending_leaves(l);
        self.validator_sets.pending_leaves(l);
        self.tasks.pending_leaves(l);
        self.submissions.pending_leaves(l);
        self.verdicts.pending_leaves(l);
        self.commitments.pending_leaves(l);
        self.evidence.pending_leaves(l);
        self.champions.pending_leaves(l);
        self.champion_index.pending_leaves(l);
        self.deadlines.pending_leaves(l);
        leaves
    }

    /// The state root: the root of the sparse Merkle tree over the chain meta and every table's
    /// records ([`crate::merkle`] states the layout). O(1) after [`State::take_changes`];
    /// otherwise the pending changes are applied to a copy, O(changes × log n).
    pub fn root(&self) -> Hash {
        let pending = self.pending_leaves();
        if pending.is_empty() {
            return self.merkle.root();
        }
        let mut tree = self.merkle.clone();
        tree.apply(pending);
        tree.root()
    }

    /// The canonical value bytes of the record `(table, key)` (canonical key bytes), if any,
    /// with its Merkle proof against [`State::root`].
    pub fn prove(
        &self,
        table: Tree,
        key: &[u8],
    ) -> Result<(Option<Vec<u8>>, StateProof), StateKeyError> {
        let value = match table {
            Tree::Meta => (key == META_KEY).then(|| encode(&self.meta)),
            Tree::Accounts => self.accounts.encoded(key)?,
            Tree::Validators => self.validators.encoded(key)?,
            Tree::ValidatorSets => self.validator_sets.encoded(key)?,
            Tree::Tasks => self.tasks.encoded(key)?,
            Tree::Submissions => self.submissions.encoded(key)?,
            Tree::Verdicts => self.verdicts.encoded(key)?,
            Tree::Commitments => self.commitments.encoded(key)?,
            Tree::Evidence => self.evidence.encoded(key)?,
            Tree::Champions => self.champions.encoded(key)?,
            Tree::ChampionIndex => self.champion_index.encoded(key)?,
            Tree::Deadlines => self.deadlines.encoded(key)?,
            Tree::Blocks | Tree::Commits | Tree::TxIndex | Tree::Wal => {
                return Err(StateKeyError::NotState(table.name()));
            }
        };
        let path = leaf_path(table, key);
        let pending = self.pending_leaves();
        let proof = if pending.is_empty() {
            self.merkle.prove(&path)
        } else {
            let mut tree = self.merkle.clone();
            tree.apply(pending);
            tree.prove(&path)
        };
        Ok((value, proof))
    }

    /// The chain's scalar state.
    pub fn meta(&self) -> &ChainMeta {
        &self.meta
    }

    /// The chain id.
    pub fn chain_id(&self) -> &str {
        &self.meta.chain_id
    }

    /// The chain parameters.
    pub fn params(&self) -> &Params {
        &self.meta.params
    }

    /// Height of the last applied block.
    pub fn height(&self) -> Height {
        self.meta.height
    }

    /// An account (a default, empty one if it never received anything).
    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).copied().unwrap_or_default()
    }

    /// The validator set that signs `height`, if the state knows it (the last applied height,
    /// and the two after it).
    pub fn validator_set(&self, height: Height) -> Option<&ValidatorSet> {
        self.validator_sets.get(&height)
    }

    /// Whether `account` is a validator with stake.
    pub fn is_validator(&self, account: &AccountId) -> bool {
        self.validators.get(account).is_some_and(|v| v.stake.0 > 0)
    }

    /// Records a block's position: called by block execution after its transactions.
    pub(crate) fn set_tip(&mut self, height: Height, block_hash: Hash, time_ms: u64) {
        self.meta.height = height;
        self.meta.last_block_hash = block_hash;
        self.meta.last_time_ms = time_ms;
        self.meta_dirty = true;
    }

    fn burn(&mut self, amount: Amount) {
        self.meta.burned.0 = self.meta.burned.0.saturating_add(amount.0);
        self.meta_dirty = true;
    }

    fn credit(&mut self, account: AccountId, amount: Amount) {
        if amount.0 > 0 {
            self.accounts.update(account, |a| a.balance.0 = a.balance.0.saturating_add(amount.0));
        }
    }

    fn open_task(
        &mut self,
        creator: AccountId,
        spec: TaskSpec,
        reward: Amount,
        height: Height,
    ) -> TaskId {
        let id = TaskId(self.meta.next_task_id);
        self.meta.next_task_id += 1;
        self.meta_dirty = true;
        let join_deadline = height.plus(spec.windows.join);
        let stakes = self
            .validators
            .iter()
            .filter(|(_, v)| v.stake.0 > 0)
            .map(|(a, v)| (*a, v.stake.0))
            .collect();
        let reference = |hash: &ModelHash, c: &ChampionRecord| ReferenceModel {
            model_hash: *hash,
            params: c.params,
            recorded_ppm: c.effective_ppm,
        };
        let base = spec
            .base_model
            .as_ref()
            .and_then(|b| self.champions.get(&b.model_hash).map(|c| reference(&b.model_hash, c)));
        // The latest champions on the same training file, newest first, then oldest first: an
        // index range read, whatever the number of champions on other files.
        let file = spec.dataset.train_sha256;
        let mut champions: Vec<ReferenceModel> = self
            .champion_index
            .range((file, TaskId(0))..=(file, TaskId(u64::MAX)))
            .rev()
            .filter(|(_, hash)| spec.base_model.as_ref().is_none_or(|b| b.model_hash != **hash))
            .filter_map(|(_, hash)| self.champions.get(hash).map(|c| reference(hash, c)))
            .take(CHAMPION_REFERENCES_MAX)
            .collect();
        champions.reverse();
        let task = Task {
            id,
            creator,
            spec,
            reward,
            created_at: height,
            joined: 0,
            stakes,
            base,
            champions,
            attested: BTreeSet::new(),
            attested_stake: 0,
            key: None,
            progress: Progress::default(),
            due_check: join_deadline,
            report: None,
        };
        self.deadlines.insert((join_deadline, id), Due::Finalize);
        self.tasks.insert(id, task);
        id
    }

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
        stx.verify(&self.meta.chain_id)?;
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

    fn fresh_commitment(&self, commitment: &Hash) -> Result<(), TxError> {
        if self.commitments.contains(commitment) {
            return Err(TxError::DuplicateCommitment(*commitment));
        }
        Ok(())
    }

    /// Checks a transaction's effect against the state, changing nothing.
    fn plan(&self, signer: &AccountId, kind: &TxKind, ctx: TxContext) -> Result<Plan, TxError> {
        let h = ctx.height;
        match kind {
            TxKind::Transfer { to, amount } => Ok(Plan::Transfer { to: *to, amount: *amount }),
            TxKind::CreateTask { spec, reward } => {
                spec.validate(self.validators.iter().filter(|(_, v)| v.stake.0 > 0).count())?;
                self.meta.params.check_task(spec, *reward)?;
                if let Some(base) = &spec.base_model {
                    let known = self
                        .champions
                        .get(&base.model_hash)
                        .is_some_and(|c| c.params == base.params);
                    if !known {
                        return Err(TxError::UnknownBaseModel(base.model_hash));
                    }
                }
                let min = self.meta.params.task_reward_min;
                if *reward < min {
                    return Err(TxError::RewardTooLow { min, found: *reward });
                }
                // The spec's bytes stay in the state: they pay for themselves.
                let spec_fee = u64::try_from(encode(spec).len())
                    .ok()
                    .and_then(|n| n.checked_mul(self.meta.params.spec_fee_per_byte.0))
                    .map(Amount)
                    .ok_or(TxError::Overflow)?;
                reward.checked_add(spec_fee).ok_or(TxError::Overflow)?;
                Ok(Plan::CreateTask { spec: spec.clone(), reward: *reward, spec_fee })
            }
            TxKind::JoinTask { task } => {
                let t = self.task(*task)?;
                Self::window("join_task", h, t.created_at.next(), t.join_deadline())?;
                if self.validators.contains(signer) {
                    return Err(TxError::ValidatorCannotTrain(*signer));
                }
                if t.creator == *signer {
                    return Err(TxError::CreatorCannotTrain(*task));
                }
                if self.submissions.contains(&(*task, *signer)) {
                    return Err(TxError::AlreadyJoined(*task));
                }
                if t.joined >= t.spec.max_trainers {
                    return Err(TxError::TaskFull { task: *task, max: t.spec.max_trainers });
                }
                Ok(Plan::Join { task: *task, bond: t.spec.bond, entry_fee: t.spec.entry_fee })
            }
            TxKind::AttestHeldout { task } => {
                let t = self.task(*task)?;
                let stake = *t.stakes.get(signer).ok_or(TxError::NotValidator(*signer))?;
                Self::window("attest_heldout", h, t.created_at.next(), t.join_deadline())?;
                if t.attested.contains(signer) {
                    return Err(TxError::AlreadyAttested(*task));
                }
                Ok(Plan::Attest { task: *task, stake })
            }
            TxKind::RevealHeldoutKey { task, key } => {
                let t = self.task(*task)?;
                if t.creator != *signer {
                    return Err(TxError::NotCreator(*task));
                }
                if t.key.is_some() {
                    return Err(TxError::KeyAlreadyRevealed(*task));
                }
                Self::window(
                    "reveal_heldout_key",
                    h,
                    t.commit_deadline().next(),
                    t.key_deadline(),
                )?;
                if key.commitment() != t.spec.dataset.key_commitment {
                    return Err(TxError::WrongKey(*task));
                }
                Ok(Plan::RevealKey { task: *task, key: *key })
            }
            TxKind::CommitModel { task, commitment } => {
                let t = self.task(*task)?;
                let sub = self.submissions.get(&(*task, *signer));
                // Done already, said as such even once the window has closed behind it.
                if sub.is_some_and(|s| s.commitment.is_some()) {
                    return Err(TxError::AlreadyCommitted(*task));
                }
                Self::window("commit_model", h, t.created_at.next(), t.commit_deadline())?;
                sub.ok_or(TxError::NotJoined(*task))?;
                self.fresh_commitment(commitment)?;
                Ok(Plan::CommitModel { task: *task, commitment: *commitment })
            }
            TxKind::RevealModel { task, model_hash, salt, size_bytes, params } => {
                let t = self.task(*task)?;
                let sub = self.submissions.get(&(*task, *signer));
                if sub.is_some_and(|s| s.reveal.is_some()) {
                    return Err(TxError::AlreadyRevealed(*task));
                }
                Self::window("reveal_model", h, t.commit_deadline().next(), t.reveal_deadline())?;
                if t.key.is_none() {
                    return Err(TxError::KeyNotRevealed(*task));
                }
                let sub = sub.ok_or(TxError::NotJoined(*task))?;
                let committed = sub.commitment.ok_or(TxError::NotCommitted(*task))?;
                if model_commitment(&self.meta.chain_id, *task, signer, model_hash, salt)
                    != committed
                {
                    return Err(TxError::RevealMismatch(*task));
                }
                if *size_bytes > t.spec.limits.max_artifact_bytes {
                    return Err(TxError::OverLimit {
                        what: "size_bytes",
                        found: *size_bytes,
                        limit: t.spec.limits.max_artifact_bytes,
                    });
                }
                if *params > t.spec.limits.max_params {
                    return Err(TxError::OverLimit {
                        what: "params",
                        found: *params,
                        limit: t.spec.limits.max_params,
                    });
                }
                if *params == 0 {
                    return Err(TxError::ZeroParams);
                }
                let reveal = Reveal {
                    model_hash: *model_hash,
                    size_bytes: *size_bytes,
                    params: *params,
                    revealed_at: h,
                };
                Ok(Plan::RevealModel { task: *task, reveal })
            }
            TxKind::CommitScores { task, commitment } => {
                let t = self.task(*task)?;
                if !t.stakes.contains_key(signer) {
                    return Err(TxError::NotValidator(*signer));
                }
                if self.verdicts.contains(&(*task, *signer)) {
                    return Err(TxError::AlreadyCommitted(*task));
                }
                Self::window(
                    "commit_scores",
                    h,
                    t.reveal_deadline().next(),
                    t.score_commit_deadline(),
                )?;
                self.fresh_commitment(commitment)?;
                Ok(Plan::CommitScores { task: *task, commitment: *commitment })
            }
            TxKind::RevealScores { task, verdicts, salt } => {
                let t = self.task(*task)?;
                if !t.stakes.contains_key(signer) {
                    return Err(TxError::NotValidator(*signer));
                }
                let record = self.verdicts.get(&(*task, *signer));
                if record.is_some_and(|r| r.verdicts.is_some()) {
                    return Err(TxError::AlreadyRevealed(*task));
                }
                Self::window(
                    "reveal_scores",
                    h,
                    t.score_commit_deadline().next(),
                    t.score_deadline(),
                )?;
                let record = record.ok_or(TxError::NotCommitted(*task))?;
                if scores_commitment(&self.meta.chain_id, *task, signer, verdicts, salt)
                    != record.commitment
                {
                    return Err(TxError::RevealMismatch(*task));
                }
                self.check_verdicts(t, verdicts)?;
                Ok(Plan::RevealScores { task: *task, verdicts: verdicts.clone() })
            }
            TxKind::Evidence { a, b } => {
                if !a.conflicts_with(b) {
                    return Err(TxError::InvalidEvidence("the votes do not conflict"));
                }
                a.verify(&self.meta.chain_id)
                    .map_err(|_| TxError::InvalidEvidence("first vote's signature is invalid"))?;
                b.verify(&self.meta.chain_id)
                    .map_err(|_| TxError::InvalidEvidence("second vote's signature is invalid"))?;
                let record = self
                    .validators
                    .get(&a.validator)
                    .ok_or(TxError::InvalidEvidence("the signer is not a validator"))?;
                let max_age = self.meta.params.evidence_max_age;
                if a.vote.height.plus(max_age) < h {
                    return Err(TxError::EvidenceTooOld { height: a.vote.height, max_age });
                }
                let key = (a.validator, a.vote.height, a.vote.round, a.vote.kind);
                if self.evidence.contains(&key) {
                    return Err(TxError::EvidenceUsed {
                        validator: a.validator,
                        height: a.vote.height,
                        round: a.vote.round,
                    });
                }
                let slash = u128::from(record.stake.0)
                    * u128::from(self.meta.params.slash_fraction_ppm)
                    / 1_000_000;
                let amount =
                    Amount(u64::try_from(slash).expect("a fraction of a u64 stake fits in u64"));
                Ok(Plan::Slash { key, amount })
            }
        }
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

    fn apply(&mut self, signer: AccountId, plan: Plan, ctx: TxContext) {
        match plan {
            Plan::Transfer { to, amount } => self.credit(to, amount),
            Plan::CreateTask { spec, reward, spec_fee } => {
                self.burn(spec_fee);
                self.open_task(signer, *spec, reward, ctx.height);
            }
            Plan::Join { task, bond, entry_fee } => {
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
            Plan::Attest { task, stake } => {
                self.tasks.modify(&task, |t| {
                    t.attested.insert(signer);
                    t.attested_stake += stake;
                });
            }
            Plan::RevealKey { task, key } => {
                self.tasks.modify(&task, |t| t.key = Some((key, ctx.height)));
                self.close_windows(task, ctx.height);
            }
            Plan::CommitModel { task, commitment } => {
                self.submissions.modify(&(task, signer), |s| {
                    s.commitment = Some(commitment);
                    s.committed_at = Some((ctx.height, ctx.index));
                });
                self.commitments.insert(commitment, CommitmentOwner { task, account: signer });
                self.tasks.modify(&task, |t| t.progress.committed += 1);
                self.close_windows(task, ctx.height);
            }
            Plan::RevealModel { task, reveal } => {
                self.submissions.modify(&(task, signer), |s| s.reveal = Some(reveal));
                self.tasks.modify(&task, |t| t.progress.revealed += 1);
                self.close_windows(task, ctx.height);
            }
            Plan::CommitScores { task, commitment } => {
                self.verdicts.insert(
                    (task, signer),
                    ScoreRecord { commitment, committed_at: ctx.height, verdicts: None },
                );
                self.commitments.insert(commitment, CommitmentOwner { task, account: signer });
                self.tasks.modify(&task, |t| t.progress.scores_committed += 1);
                self.close_windows(task, ctx.height);
            }
            Plan::RevealScores { task, verdicts } => {
                self.verdicts.modify(&(task, signer), |r| r.verdicts = Some(verdicts));
                self.tasks.modify(&task, |t| t.progress.scores_revealed += 1);
                self.close_windows(task, ctx.height);
            }
            Plan::Slash { key, amount } => {
                self.validators.modify(&key.0, |v| v.stake.0 -= amount.0);
                self.evidence.insert(key, ctx.height);
                let proposer_cut = Amount(amount.0 / EVIDENCE_PROPOSER_DIVISOR);
                self.credit(ctx.proposer, proposer_cut);
                self.burn(Amount(amount.0 - proposer_cut.0));
            }
        }
    }

    /// Closes the task's windows whose acting set the tx just executed at `height` exhausted (see
    /// [`Progress`]), and moves its deadlines-table entry to its new next deadline: early closes
    /// cost the txs that cause them, never a scan of open tasks.
    fn close_windows(&mut self, id: TaskId, height: Height) {
        self.tasks.modify(&id, |t| t.close_exhausted_windows(height));
        self.schedule_due_check(id, height);
    }

    /// Keeps one `Finalize` entry per open task, at its first deadline at or after `height`
    /// (deadlines only ever move earlier, so the entry does too).
    fn schedule_due_check(&mut self, id: TaskId, height: Height) {
        let Some(task) = self.tasks.get(&id) else { return };
        let old = task.due_check;
        let next = match task.report {
            Some(_) => None,
            None => task.next_deadline(height),
        };
        if next == Some(old) {
            return;
        }
        self.deadlines.remove(&(old, id));
        if let Some(next) = next {
            self.deadlines.insert((next, id), Due::Finalize);
            self.tasks.modify(&id, |t| t.due_check = next);
        }
    }

    /// End of block `height`: finalizes every task that is due (cancelled at its join deadline
    /// without enough attestations, ended at its key deadline without the key, or at its score
    /// deadline), and records the
    /// validator set that will sign `height + 2` (so a slash changes voting power from there on).
    pub fn end_block(&mut self, height: Height) {
        // Only this height's entries (and, defensively, any earlier one left behind): the cost
        // is what falls due, never the number of tasks.
        let due: Vec<((Height, TaskId), Due)> = self
            .deadlines
            .range(..=(height, TaskId(u64::MAX)))
            .map(|(key, due)| (*key, *due))
            .collect();
        for (key, due) in due {
            self.deadlines.remove(&key);
            let id = key.1;
            match due {
                Due::Finalize => {
                    // A task already finalized has nothing left to fall due.
                    if self.tasks.get(&id).is_none_or(|t| t.report.is_some()) {
                        continue;
                    }
                    // At the join deadline the commit window may already have nobody left.
                    self.tasks.modify(&id, |t| t.close_exhausted_windows(height));
                    let Some(task) = self.tasks.get(&id) else { continue };
                    let Some(due_at) = task.due_at(height) else { continue };
                    if due_at > height {
                        self.schedule_due_check(id, height.next());
                        continue;
                    }
                    self.finalize_task(id);
                    match self.meta.params.task_retention {
                        0 => self.prune_task(id),
                        retention => {
                            self.deadlines.insert((height.plus(retention), id), Due::Prune);
                        }
                    }
                }
                Due::Prune => self.prune_task(id),
            }
        }
        let set = ValidatorSet::new(
            self.validators
                .iter()
                .filter(|(_, v)| v.stake.0 > 0)
                .map(|(a, v)| ValidatorInfo { account: *a, power: v.stake.0, name: v.name.clone() })
                .collect(),
        );
        self.validator_sets.insert(height.plus(2), set);
        // Keep the set of `height` (to check the next block's last commit) and the two after it.
        let stale: Vec<Height> = self.validator_sets.range(..height).map(|(h, _)| *h).collect();
        for h in stale {
            self.validator_sets.remove(&h);
        }
    }

    fn finalize_task(&mut self, id: TaskId) {
        let task = self.tasks.get(&id).expect("due tasks exist").clone();
        let range = (id, AccountId([0; 32]))..=(id, AccountId([0xff; 32]));
        let trainers: Vec<TrainerInput> = self
            .submissions
            .range(range.clone())
            .map(|((_, account), s)| TrainerInput {
                account: *account,
                bond: s.bond,
                entry_fee: s.entry_fee,
                committed_at: s.committed_at,
                reveal: s
                    .reveal
                    .map(|r| RevealInput { model_hash: r.model_hash, params: r.params }),
            })
            .collect();
        let validators: Vec<ValidatorInput<'_>> = task
            .stakes
            .iter()
            .map(|(account, stake)| ValidatorInput {
                account: *account,
                stake: *stake,
                verdicts: self.verdicts.get(&(id, *account)).and_then(|r| r.verdicts.as_deref()),
            })
            .collect();
        let references: Vec<ReferenceInput> = task
            .base
            .iter()
            .map(|b| (Subject::BaseModel, b))
            .chain(task.champions.iter().map(|c| (Subject::Champion(c.model_hash), c)))
            .map(|(subject, r)| ReferenceInput {
                subject,
                params: r.params,
                recorded_ppm: r.recorded_ppm,
            })
            .collect();
        let report = finalize(&FinalizeInput {
            escrow: task.reward,
            efficiency: &task.spec.efficiency,
            references: &references,
            trainers: &trainers,
            validators: &validators,
            trainer_share_ppm: self.meta.params.trainer_share_ppm,
            agreement_tolerance_ppm: self.meta.params.agreement_tolerance_ppm,
            min_improvement_ppm: task.spec.min_improvement_ppm,
            attested_stake: task.attested_stake,
            key_revealed_at: task.key.map(|(_, at)| at),
            cancellation_fee_ppm: self.meta.params.cancellation_fee_ppm,
        });
        for t in &report.trainers {
            self.credit(t.account, Amount(t.payout.0 + t.bond_refund.0 + t.entry_fee_refund.0));
        }
        for v in &report.validators {
            self.credit(v.account, v.payout);
        }
        self.credit(task.creator, report.creator_refund);
        self.burn(report.burned);
        if let Some(c) = &report.champion {
            // A model that was champion before (a byte-identical copy winning again) is indexed
            // under its latest task only, as the champions table records it.
            if let Some(old) = self.champions.get(&c.model_hash) {
                let old_key = (old.train_sha256, old.task);
                self.champion_index.remove(&old_key);
            }
            self.champion_index.insert((task.spec.dataset.train_sha256, id), c.model_hash);
            self.champions.insert(
                c.model_hash,
                ChampionRecord {
                    task: id,
                    train_sha256: task.spec.dataset.train_sha256,
                    trainer: c.trainer,
                    params: c.params,
                    effective_ppm: c.effective_ppm,
                },
            );
        }
        self.tasks.modify(&id, |t| t.report = Some(report));
    }

    /// Drops the bulky data of a task whose retention ended (`task_retention` heights after its
    /// finalization): the spec's preprocessing vectors and the validators' verdict records. The report, submissions, commitments and champion stay; the blocks keep
    /// everything for replay.
    fn prune_task(&mut self, id: TaskId) {
        self.tasks.modify(&id, |t| match &mut t.spec.preprocessing {
            crate::task::Preprocessing::Standardize { mean, std } => {
                *mean = Vec::new();
                *std = Vec::new();
            }
            crate::task::Preprocessing::Vocabulary { chars } => *chars = String::new(),
        });
        let scored: Vec<(TaskId, AccountId)> = self
            .verdicts
            .range((id, AccountId([0; 32]))..=(id, AccountId([0xff; 32])))
            .map(|(k, _)| *k)
            .collect();
        for key in scored {
            self.verdicts.remove(&key);
        }
    }

    /// Total coin in existence: balances, stakes, escrows, and the locked bonds and entry fees
    /// of open tasks.
    /// Conservation means this plus `burned` never changes.
    pub fn total_supply(&self) -> u128 {
        let balances: u128 = self.accounts.iter().map(|(_, a)| u128::from(a.balance.0)).sum();
        let stakes: u128 = self.validators.iter().map(|(_, v)| u128::from(v.stake.0)).sum();
        let open: Vec<TaskId> =
            self.tasks.iter().filter(|(_, t)| t.report.is_none()).map(|(id, _)| *id).collect();
        let escrows: u128 =
            open.iter().filter_map(|id| self.tasks.get(id)).map(|t| u128::from(t.reward.0)).sum();
        let bonds: u128 = self
            .submissions
            .iter()
            .filter(|((task, _), _)| open.contains(task))
            .map(|(_, s)| u128::from(s.bond.0) + u128::from(s.entry_fee.0))
            .sum();
        balances + stakes + escrows + bonds
    }
}
