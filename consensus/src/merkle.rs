//! The authenticated state: a sparse Merkle tree over every state record, with membership and
//! absence proofs.
//!
//! **Layout.** Each record of a state table sits at a 256-bit *path*,
//! `sha256(tag "crucible/state-key/v1", [table byte], canonical key bytes)`, and its leaf commits
//! to `value_hash = sha256(tag "crucible/state-value/v1", canonical value bytes)`. The tree is the
//! binary trie of those paths (bit 0 is the most significant bit of the path's first byte; 0 goes
//! left), compressed the way Diem's and Aptos' sparse Merkle trees are: a subtree that holds no
//! record is *empty* (hash all zeros), a subtree that holds exactly one record is that record's
//! *leaf*, wherever it sits, and only a subtree with two or more records is an *internal* node.
//! The shape is therefore a function of the set of records, not of the order they arrived in:
//!
//! - empty: `0x00…00`
//! - leaf: `sha256(tag "crucible/merkle-leaf/v1", path, value_hash)`
//! - internal: `sha256(tag "crucible/merkle-node/v1", left, right)`
//!
//! The state root is the root node's hash. With n records the expected depth is about log2(n),
//! so applying a block's changes rehashes O(changes × log n) nodes ([`MerkleTree::apply`]), and
//! nodes are shared between versions (`Arc`s): a clone is O(1) and an update copies only the
//! paths it changes.
//!
//! **Proofs.** [`StateProof`] lists the sibling hashes from the root down to where the path ends,
//! and the leaf found there, if any. It proves membership when that leaf is the key's own with
//! the value's hash, and absence when the path ends in an empty subtree or in another key's leaf
//! (whose path shares every bit walked so far).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hash::{tagged_hash, tags};
use crate::storage::Tree;
use crate::types::Hash;

/// Bits in a path: the deepest a proof can go.
pub const PATH_BITS: usize = 256;

/// The path of a state record: a tagged hash of its table and canonical key bytes.
pub fn leaf_path(table: Tree, key: &[u8]) -> Hash {
    tagged_hash(tags::STATE_KEY, &[&[table.prefix()], key])
}

/// The hash a leaf commits to: a tagged hash of the record's canonical value bytes.
pub fn value_hash(value: &[u8]) -> Hash {
    tagged_hash(tags::STATE_VALUE, &[value])
}

fn leaf_hash(path: &Hash, value_hash: &Hash) -> Hash {
    tagged_hash(tags::MERKLE_LEAF, &[path.as_bytes(), value_hash.as_bytes()])
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    tagged_hash(tags::MERKLE_NODE, &[left.as_bytes(), right.as_bytes()])
}

/// Bit `depth` of a path, most significant bit of byte 0 first.
fn bit(path: &Hash, depth: usize) -> bool {
    path.0[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// One change to apply: a path and its new value hash, `None` to remove the record.
pub type LeafChange = (Hash, Option<Hash>);

#[derive(Debug)]
struct Leaf {
    path: Hash,
    value_hash: Hash,
    hash: Hash,
}

#[derive(Debug)]
struct Internal {
    hash: Hash,
    left: Node,
    right: Node,
}

#[derive(Clone, Debug, Default)]
enum Node {
    #[default]
    Empty,
    Leaf(Arc<Leaf>),
    Internal(Arc<Internal>),
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Empty => Hash::default(),
            Node::Leaf(l) => l.hash,
            Node::Internal(i) => i.hash,
        }
    }

    fn leaf(path: Hash, value_hash: Hash, hashed: &mut u64) -> Node {
        *hashed += 1;
        Node::Leaf(Arc::new(Leaf { path, value_hash, hash: leaf_hash(&path, &value_hash) }))
    }

    /// The node over two subtrees, in canonical form: a lone leaf moves up, two empties vanish.
    fn join(left: Node, right: Node, hashed: &mut u64) -> Node {
        match (&left, &right) {
            (Node::Empty, Node::Empty) => Node::Empty,
            (Node::Empty, Node::Leaf(_)) => right,
            (Node::Leaf(_), Node::Empty) => left,
            _ => {
                *hashed += 1;
                let hash = node_hash(&left.hash(), &right.hash());
                Node::Internal(Arc::new(Internal { hash, left, right }))
            }
        }
    }

    /// The subtree at `depth` over `leaves` (leaf nodes sorted by path, all sharing the first
    /// `depth` bits).
    fn build(depth: usize, leaves: &[Node], hashed: &mut u64) -> Node {
        match leaves {
            [] => Node::Empty,
            [one] => one.clone(),
            _ => {
                assert!(depth < PATH_BITS, "two leaves share a whole path");
                let split = leaves.partition_point(|n| !bit(&n.path(), depth));
                let left = Node::build(depth + 1, &leaves[..split], hashed);
                let right = Node::build(depth + 1, &leaves[split..], hashed);
                Node::join(left, right, hashed)
            }
        }
    }

    fn path(&self) -> Hash {
        match self {
            Node::Leaf(l) => l.path,
            _ => unreachable!("only leaves are built from paths"),
        }
    }

    /// This subtree (at `depth`) with `changes` applied (sorted by path, unique, all sharing the
    /// first `depth` bits).
    fn update(&self, depth: usize, changes: &[LeafChange], hashed: &mut u64) -> Node {
        if changes.is_empty() {
            return self.clone();
        }
        match self {
            Node::Internal(node) => {
                let split = changes.partition_point(|(p, _)| !bit(p, depth));
                let left = node.left.update(depth + 1, &changes[..split], hashed);
                let right = node.right.update(depth + 1, &changes[split..], hashed);
                Node::join(left, right, hashed)
            }
            Node::Empty | Node::Leaf(_) => {
                // At most one record lives here: rebuild from it and the changes.
                let mut leaves: Vec<Node> = changes
                    .iter()
                    .filter_map(|(p, v)| v.map(|v| Node::leaf(*p, v, hashed)))
                    .collect();
                if let Node::Leaf(l) = self
                    && changes.binary_search_by(|(p, _)| p.cmp(&l.path)).is_err()
                {
                    let at = leaves.partition_point(|n| n.path() < l.path);
                    leaves.insert(at, self.clone());
                }
                Node::build(depth, &leaves, hashed)
            }
        }
    }
}

/// A sparse Merkle tree over state records; see the module docs. Cloning is O(1).
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    root: Node,
}

impl MerkleTree {
    /// The tree over `leaves` (path, value hash), built bottom-up in O(n) hashes.
    pub fn from_leaves(mut leaves: Vec<(Hash, Hash)>) -> MerkleTree {
        leaves.sort_unstable_by_key(|a| a.0);
        let mut hashed = 0;
        let nodes: Vec<Node> =
            leaves.into_iter().map(|(p, v)| Node::leaf(p, v, &mut hashed)).collect();
        MerkleTree { root: Node::build(0, &nodes, &mut hashed) }
    }

    /// The root hash (all zeros for an empty tree).
    pub fn root(&self) -> Hash {
        self.root.hash()
    }

    /// Applies `changes` (each path at most once) and returns how many nodes were hashed: the
    /// work is O(changes × log n), shared subtrees are kept as they are.
    pub fn apply(&mut self, mut changes: Vec<LeafChange>) -> u64 {
        changes.sort_unstable_by_key(|a| a.0);
        assert!(changes.windows(2).all(|w| w[0].0 != w[1].0), "a path changes at most once");
        let mut hashed = 0;
        self.root = self.root.update(0, &changes, &mut hashed);
        hashed
    }

    /// The proof for `path`: of the record there, or of its absence.
    pub fn prove(&self, path: &Hash) -> StateProof {
        let mut siblings = Vec::new();
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return StateProof { siblings, leaf: None },
                Node::Leaf(l) => {
                    let leaf = ProofLeaf { path: l.path, value_hash: l.value_hash };
                    return StateProof { siblings, leaf: Some(leaf) };
                }
                Node::Internal(i) => {
                    let (next, sibling) =
                        if bit(path, depth) { (&i.right, &i.left) } else { (&i.left, &i.right) };
                    siblings.push(sibling.hash());
                    node = next;
                    depth += 1;
                }
            }
        }
    }
}

/// The leaf where a proof's path ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofLeaf {
    /// The record's path.
    pub path: Hash,
    /// Its value hash.
    pub value_hash: Hash,
}

/// A Merkle proof of one record, or of its absence, against a state root; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    /// Sibling hashes from the root down (at most [`PATH_BITS`]).
    pub siblings: Vec<Hash>,
    /// The leaf where the path ends, or `None` for an empty subtree.
    pub leaf: Option<ProofLeaf>,
}

/// Why a proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// More siblings than a path has bits.
    #[error("proof has {found} siblings, more than the {PATH_BITS} bits of a path")]
    TooDeep {
        /// Siblings in the proof.
        found: usize,
    },
    /// The proof ends in a leaf that is not where the path leads.
    #[error("the proof's leaf does not lie on the key's path")]
    OffPath,
    /// Membership claimed, but the proof shows another record or none.
    #[error("the proof does not hold the key's record")]
    NotMember,
    /// The value differs from the one the proof commits to.
    #[error("the value does not match the proof (value hash {found}, proof has {expected})")]
    WrongValue {
        /// The value hash in the proof.
        expected: Hash,
        /// The hash of the value given.
        found: Hash,
    },
    /// Absence claimed, but the proof holds the key's own record.
    #[error("the key is present, not absent")]
    NotAbsent,
    /// The proof leads to another root.
    #[error("the proof leads to root {computed}, not {expected}")]
    WrongRoot {
        /// The trusted root.
        expected: Hash,
        /// The root the proof computes.
        computed: Hash,
    },
}

impl StateProof {
    /// Checks that under `root` the record `(table, key)` holds `value` (canonical bytes), or is
    /// absent when `value` is `None`.
    pub fn verify(
        &self,
        root: &Hash,
        table: Tree,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ProofError> {
        let depth = self.siblings.len();
        if depth > PATH_BITS {
            return Err(ProofError::TooDeep { found: depth });
        }
        let path = leaf_path(table, key);
        if let Some(leaf) = &self.leaf
            && (0..depth).any(|d| bit(&leaf.path, d) != bit(&path, d))
        {
            return Err(ProofError::OffPath);
        }
        match (value, &self.leaf) {
            (Some(value), Some(leaf)) if leaf.path == path => {
                let found = value_hash(value);
                if found != leaf.value_hash {
                    return Err(ProofError::WrongValue { expected: leaf.value_hash, found });
                }
            }
            (Some(_), _) => return Err(ProofError::NotMember),
            (None, Some(leaf)) if leaf.path == path => return Err(ProofError::NotAbsent),
            (None, _) => {}
        }
        let mut hash = self.leaf.map_or(Hash::default(), |l| leaf_hash(&l.path, &l.value_hash));
        for (d, sibling) in self.siblings.iter().enumerate().rev() {
            hash =
                if bit(&path, d) { node_hash(sibling, &hash) } else { node_hash(&hash, sibling) };
        }
        if hash != *root {
            return Err(ProofError::WrongRoot { expected: *root, computed: hash });
        }
        Ok(())
    }

    /// The proof's size in canonical bytes.
    pub fn encoded_len(&self) -> usize {
        crate::encoding::encode(self).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Vec<u8> {
        i.to_le_bytes().to_vec()
    }

    fn value(i: u32, version: u32) -> Vec<u8> {
        [i.to_le_bytes(), version.to_le_bytes()].concat()
    }

    fn change(i: u32, version: Option<u32>) -> LeafChange {
        (leaf_path(Tree::Accounts, &key(i)), version.map(|v| value_hash(&value(i, v))))
    }

    #[test]
    fn the_root_depends_on_the_records_not_their_order_or_batching() {
        let all: Vec<(Hash, Hash)> = (0..200)
            .map(|i| (leaf_path(Tree::Accounts, &key(i)), value_hash(&value(i, 0))))
            .collect();
        let bulk = MerkleTree::from_leaves(all.clone());
        let mut one_by_one = MerkleTree::default();
        for (p, v) in all.iter().rev() {
            one_by_one.apply(vec![(*p, Some(*v))]);
        }
        assert_eq!(bulk.root(), one_by_one.root());
        // Insert then delete extra records: back to the same root.
        let mut t = bulk.clone();
        t.apply((200..260).map(|i| change(i, Some(0))).collect());
        assert_ne!(t.root(), bulk.root());
        t.apply((200..260).map(|i| change(i, None)).collect());
        assert_eq!(t.root(), bulk.root());
        // Deleting everything leaves the empty root.
        t.apply((0..200).map(|i| change(i, None)).collect());
        assert_eq!(t.root(), Hash::default());
        // The clone taken before was not touched.
        assert_eq!(bulk.root(), one_by_one.root());
    }

    #[test]
    fn an_update_rehashes_a_path_not_the_tree() {
        let n = 1 << 14;
        let mut t = MerkleTree::from_leaves(
            (0..n)
                .map(|i| (leaf_path(Tree::Accounts, &key(i)), value_hash(&value(i, 0))))
                .collect(),
        );
        let hashed = t.apply(vec![change(7, Some(1))]);
        // Expected depth is about log2(n) = 14; a few levels more for the unlucky.
        assert!((10..=40).contains(&hashed), "hashed {hashed} nodes for one change");
    }

    #[test]
    fn membership_and_absence_proofs_verify_and_tampering_is_refused() {
        let mut t = MerkleTree::default();
        t.apply((0..100).map(|i| change(i, Some(3))).collect());
        let root = t.root();
        for i in [0, 17, 99] {
            let proof = t.prove(&leaf_path(Tree::Accounts, &key(i)));
            proof.verify(&root, Tree::Accounts, &key(i), Some(&value(i, 3))).unwrap();
            assert_eq!(
                proof.verify(&root, Tree::Accounts, &key(i), Some(&value(i, 4))),
                Err(ProofError::WrongValue {
                    expected: value_hash(&value(i, 3)),
                    found: value_hash(&value(i, 4))
                })
            );
            assert_eq!(
                proof.verify(&root, Tree::Accounts, &key(i), None),
                Err(ProofError::NotAbsent)
            );
            assert!(matches!(
                proof.verify(&Hash([9; 32]), Tree::Accounts, &key(i), Some(&value(i, 3))),
                Err(ProofError::WrongRoot { .. })
            ));
            // The same key in another table is another path.
            assert!(proof.verify(&root, Tree::Tasks, &key(i), Some(&value(i, 3))).is_err());
        }
        let mut absent_kinds = (false, false);
        for i in 100..400 {
            let proof = t.prove(&leaf_path(Tree::Accounts, &key(i)));
            proof.verify(&root, Tree::Accounts, &key(i), None).unwrap();
            assert_eq!(
                proof.verify(&root, Tree::Accounts, &key(i), Some(&value(i, 3))),
                Err(ProofError::NotMember)
            );
            match proof.leaf {
                None => absent_kinds.0 = true,
                Some(_) => absent_kinds.1 = true,
            }
        }
        assert_eq!(absent_kinds, (true, true), "both kinds of absence proof were exercised");
        // A tampered sibling leads elsewhere.
        let mut proof = t.prove(&leaf_path(Tree::Accounts, &key(5)));
        proof.siblings[0].0[0] ^= 1;
        assert!(matches!(
            proof.verify(&root, Tree::Accounts, &key(5), Some(&value(5, 3))),
            Err(ProofError::WrongRoot { .. })
        ));
    }

    #[test]
    fn a_proof_of_the_empty_tree_and_oversized_proofs() {
        let t = MerkleTree::default();
        let proof = t.prove(&leaf_path(Tree::Accounts, &key(1)));
        proof.verify(&Hash::default(), Tree::Accounts, &key(1), None).unwrap();
        let long = StateProof { siblings: vec![Hash::default(); PATH_BITS + 1], leaf: None };
        assert_eq!(
            long.verify(&Hash::default(), Tree::Accounts, &key(1), None),
            Err(ProofError::TooDeep { found: PATH_BITS + 1 })
        );
    }
}
