//! Storage: a narrow key-value trait with one tree per kind of record, and two adapters.
//!
//! The ledger logic only ever calls [`Store`]: `get`, `scan` of one tree, and an atomic `write`
//! of a batch across trees, so a block and all its state changes land together or not at all.
//! [`MemStore`] serves simulations and tests; `SledStore` (feature `disk`, which the node turns
//! on) keeps a node's data on disk in one sled tree with a one-byte prefix per [`Tree`]. It lands
//! each batch as one record in a journal (a second sled database) and in an in-memory overlay,
//! and writes the overlay back to the keyed tree in the background once it is large (a key many
//! blocks changed is written once). Another engine (redb, RocksDB) would be one more adapter.
//! Without `disk` this crate does no I/O.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[cfg(feature = "disk")]
mod sled_store;
#[cfg(feature = "disk")]
pub use sled_store::SledStore;

/// The trees of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Chain metadata: genesis hash, height, last block, counters.
    Meta,
    /// Account balances and nonces.
    Accounts,
    /// Validator stakes.
    Validators,
    /// Validator sets by height.
    ValidatorSets,
    /// Tasks.
    Tasks,
    /// Trainers' submissions by (task, trainer).
    Submissions,
    /// Validators' score commitments and verdicts by (task, validator).
    Verdicts,
    /// Every commitment on the ledger.
    Commitments,
    /// Equivocations already slashed.
    Evidence,
    /// Champions by model hash (the models a task may fine-tune from).
    Champions,
    /// Champions by (public training file, task won): a new task finds the latest champions on
    /// its file without reading the others.
    ChampionIndex,
    /// What falls due at each height: tasks to finalize and finalized tasks to prune.
    Deadlines,
    /// Blocks by height.
    Blocks,
    /// Commit certificates by height.
    Commits,
    /// Transaction hash to (height, index).
    TxIndex,
    /// The consensus engine's write-ahead log.
    Wal,
}

impl Tree {
    /// The trees that hold ledger state (hashed into the state root), in root order.
    pub const STATE: [Tree; 12] = [
        Tree::Meta,
        Tree::Accounts,
        Tree::Validators,
        Tree::ValidatorSets,
        Tree::Tasks,
        Tree::Submissions,
        Tree::Verdicts,
        Tree::Commitments,
        Tree::Evidence,
        Tree::Champions,
        Tree::Deadlines,
        Tree::ChampionIndex,
    ];

    /// The tree's byte: its key prefix in sled, and its first byte in a state record's Merkle
    /// path, so it never changes.
    pub fn prefix(self) -> u8 {
        match self {
            Tree::Meta => 0,
            Tree::Accounts => 1,
            Tree::Validators => 2,
            Tree::ValidatorSets => 3,
            Tree::Tasks => 4,
            Tree::Submissions => 5,
            Tree::Verdicts => 6,
            Tree::Commitments => 7,
            Tree::Evidence => 8,
            Tree::Champions => 9,
            Tree::Blocks => 10,
            Tree::Commits => 11,
            Tree::TxIndex => 12,
            Tree::Wal => 13,
            Tree::Deadlines => 14,
            Tree::ChampionIndex => 15,
        }
    }
}

impl Tree {
    /// The name of a state tree, as the proof route and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Accounts => "accounts",
            Tree::Validators => "validators",
            Tree::ValidatorSets => "validator_sets",
            Tree::Tasks => "tasks",
            Tree::Submissions => "submissions",
            Tree::Verdicts => "verdicts",
            Tree::Commitments => "commitments",
            Tree::Evidence => "evidence",
            Tree::Champions => "champions",
            Tree::Deadlines => "deadlines",
            Tree::ChampionIndex => "champion_index",
            Tree::Blocks => "blocks",
            Tree::Commits => "commits",
            Tree::TxIndex => "tx_index",
            Tree::Wal => "wal",
        }
    }

    /// The state tree named `name` (see [`Tree::name`]); `None` for any other name.
    pub fn state_tree(name: &str) -> Option<Tree> {
        Tree::STATE.into_iter().find(|t| t.name() == name)
    }
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` in a tree.
    Put(Tree, Vec<u8>, Vec<u8>),
    /// Removes `key` from a tree.
    Delete(Tree, Vec<u8>),
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

type Trees = BTreeMap<(Tree, Vec<u8>), Vec<u8>>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing engine failed.
    #[error("storage engine error: {0}")]
    Engine(String),
}

/// Key-value storage with per-tree scans and atomic cross-tree batches.
pub trait Store: Send + Sync {
    /// The value at `key` in `tree`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every `(key, value)` of `tree` in key order.
    fn scan(&self, tree: Tree) -> Result<Entries, StoreError>;
    /// Applies every op, all or none, durably.
    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError>;
}

/// An in-memory store.
#[derive(Debug, Default)]
pub struct MemStore {
    trees: Mutex<Trees>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Trees> {
        // A panic while holding the lock leaves the map consistent (writes are single inserts
        // applied after validation), so a poisoned lock is still safe to use.
        self.trees.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&(tree, key.to_vec())).cloned())
    }

    fn scan(&self, tree: Tree) -> Result<Entries, StoreError> {
        Ok(self
            .lock()
            .range((tree, Vec::new())..)
            .take_while(|((t, _), _)| *t == tree)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut trees = self.lock();
        for op in ops {
            match op {
                Op::Put(tree, k, v) => {
                    trees.insert((tree, k), v);
                }
                Op::Delete(tree, k) => {
                    trees.remove(&(tree, k));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn Store) {
        store
            .write(vec![
                Op::Put(Tree::Accounts, b"b".to_vec(), b"2".to_vec()),
                Op::Put(Tree::Accounts, b"a".to_vec(), b"1".to_vec()),
                Op::Put(Tree::Tasks, b"a".to_vec(), b"t".to_vec()),
            ])
            .unwrap();
        assert_eq!(store.get(Tree::Accounts, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            store.scan(Tree::Accounts).unwrap(),
            vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]
        );
        store.write(vec![Op::Delete(Tree::Accounts, b"a".to_vec())]).unwrap();
        assert_eq!(store.get(Tree::Accounts, b"a").unwrap(), None);
        assert_eq!(store.scan(Tree::Tasks).unwrap().len(), 1);
    }

    #[test]
    fn mem_store_behaves() {
        exercise(&MemStore::new());
    }

    #[cfg(feature = "disk")]
    #[test]
    fn sled_store_behaves_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            exercise(&store);
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.get(Tree::Accounts, b"b").unwrap(), Some(b"2".to_vec()));
    }
}
