//! [`Table`]: a persistent ordered map of records that remembers which keys a block changed.

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::OrdMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::encoding::{DecodeError, decode, encode};
use crate::merkle::{LeafChange, leaf_path, value_hash};
use crate::storage::{Op, Store, Tree};
use crate::types::Hash;

use super::{LoadError, STATE_KEY_BYTES_MAX, StateKeyError};

/// Largest value decoded from the store, in bytes (a task with its report is the largest).
pub(super) const STORED_VALUE_BYTES_MAX: usize = 64 << 20;

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
    pub(super) fn new(tree: Tree) -> Self {
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

    pub(super) fn insert(&mut self, key: K, value: V) {
        self.dirty.insert(key.clone());
        self.map.insert(key, Arc::new(value));
    }

    pub(super) fn remove(&mut self, key: &K) {
        self.dirty.insert(key.clone());
        self.map.remove(key);
    }

    pub(super) fn update(&mut self, key: K, f: impl FnOnce(&mut V))
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

    pub(super) fn modify(&mut self, key: &K, f: impl FnOnce(&mut V)) {
        if let Some(value) = self.map.get_mut(key) {
            f(Arc::make_mut(value));
            self.dirty.insert(key.clone());
        }
    }

    /// The Merkle leaf changes of every key changed since the last [`Table::take_changes`].
    pub(super) fn pending_leaves(&self, leaves: &mut Vec<LeafChange>) {
        for key in &self.dirty {
            let k = encode(key);
            let value = self.map.get(key).map(|v| value_hash(&encode(&**v)));
            leaves.push((leaf_path(self.tree, &k), value));
        }
    }

    /// The store writes and Merkle leaf changes of every changed key; forgets the changes.
    pub(super) fn take_changes(&mut self, ops: &mut Vec<Op>, leaves: &mut Vec<LeafChange>) {
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
    pub(super) fn encoded(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateKeyError> {
        // `decode` accepts only the canonical encoding.
        let decoded: K = decode("state key", key, STATE_KEY_BYTES_MAX).map_err(|e| match e {
            DecodeError::NonCanonical { .. } => StateKeyError::NotCanonical,
            e => StateKeyError::Malformed(e),
        })?;
        Ok(self.map.get(&decoded).map(|v| encode(&**v)))
    }

    /// Loads the table, adding a Merkle leaf per record to `leaves`.
    pub(super) fn load(
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
