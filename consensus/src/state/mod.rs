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
//!
//! The records live in `records`, [`Table`] in `table`, the errors in `error` and the key forms
//! in `keys`; the transaction rules in `rules` (a plan and an apply function per kind), a task's
//! windows and deadlines in `windows`, and the end of a block in `end_block`.

mod end_block;
mod error;
mod keys;
mod records;
mod rules;
mod table;
mod windows;

pub use error::{LayoutError, LoadError, StateKeyError, TxError};
pub use keys::{META_KEY, STATE_KEY_BYTES_MAX, parse_state_key};
pub use records::{
    Account, ChainMeta, ChampionRecord, CommitmentOwner, Due, EvidenceKey, Phase, Progress,
    ReferenceModel, Reveal, ScoreRecord, Submission, Task, ValidatorRecord,
};
pub use rules::TxContext;
pub use table::Table;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::crypto::Verifier;
use crate::encoding::{decode, encode};
use crate::genesis::{Genesis, Params};
use crate::merkle::{LeafChange, MerkleTree, StateProof, leaf_path, value_hash};
use crate::storage::{Op, Store, Tree};
use crate::task::TaskSpec;
use crate::types::{AccountId, Amount, Hash, Height, ModelHash, Nonce, TaskId};
use crate::validators::ValidatorSet;

use table::STORED_VALUE_BYTES_MAX;

/// Most earlier champions on the same public training file that a task records as reference
/// models (the latest ones): each is a verdict-vector entry every validator scores.
pub const CHAMPION_REFERENCES_MAX: usize = 4;

/// The proposer that includes Evidence earns `slash / EVIDENCE_PROPOSER_DIVISOR` (the rest
/// burns). A share for whoever reports would let a validator recoup its own slash through a
/// second account; the proposer is a validator the slashed one cannot choose.
pub const EVIDENCE_PROPOSER_DIVISOR: u64 = 16;

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
    /// Checks the signatures of the txs this state executes; its copies share it (and its memo).
    verifier: Arc<Verifier>,
}

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
            verifier: Arc::default(),
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
            verifier: Arc::default(),
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

    /// Makes this state and its later copies check signatures through `verifier`.
    pub(crate) fn use_verifier(&mut self, verifier: Arc<Verifier>) {
        self.verifier = verifier;
    }

    /// The signature verifier this state and its copies share: hand it to whatever else checks
    /// the same signatures (gossip, the consensus engine), so each is checked once.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
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
