//! sha256 with domain tags.
//!
//! Every hash the ledger computes starts with a tag naming what is hashed, and every part is
//! length-prefixed, so two different kinds of object, or two splits of the same bytes into
//! parts, never hash alike.

use sha2::{Digest, Sha256};

use crate::types::Hash;

/// Tags for every kind of hash and commitment on the ledger.
pub mod tags {
    /// A block header.
    pub const BLOCK: &[u8] = b"crucible/block/v1";
    /// A signed transaction.
    pub const TX: &[u8] = b"crucible/tx/v1";
    /// The list of a block's transaction hashes.
    pub const TX_ROOT: &[u8] = b"crucible/tx-root/v1";
    /// A state record's path in the Merkle tree: its table and canonical key.
    pub const STATE_KEY: &[u8] = b"crucible/state-key/v1";
    /// A state record's canonical value, committed to by its leaf.
    pub const STATE_VALUE: &[u8] = b"crucible/state-value/v1";
    /// A Merkle leaf: a record's path and value hash.
    pub const MERKLE_LEAF: &[u8] = b"crucible/merkle-leaf/v1";
    /// An internal Merkle node: its two children's hashes.
    pub const MERKLE_NODE: &[u8] = b"crucible/merkle-node/v1";
    /// A validator set.
    pub const VALIDATORS: &[u8] = b"crucible/validators/v1";
    /// A commit certificate.
    pub const COMMIT: &[u8] = b"crucible/commit/v1";
    /// The genesis document.
    pub const GENESIS: &[u8] = b"crucible/genesis/v1";
    /// A trainer's model commitment.
    pub const MODEL_COMMITMENT: &[u8] = b"crucible/model-commitment/v1";
    /// A validator's verdict-vector commitment.
    pub const SCORES_COMMITMENT: &[u8] = b"crucible/scores-commitment/v1";
}

/// sha256 of raw bytes, untagged: for files (artifacts, data sets), whose hash anyone must be
/// able to recompute with `sha256sum`.
pub fn sha256(bytes: &[u8]) -> Hash {
    Hash(Sha256::digest(bytes).into())
}

/// sha256 over a tag and length-prefixed parts.
pub fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    h.update((tag.len() as u64).to_le_bytes());
    h.update(tag);
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Hash(h.finalize().into())
}

/// An incremental tagged hasher, for hashing many parts without collecting them first.
pub struct TaggedHasher(Sha256);

impl TaggedHasher {
    /// Starts a hash with its tag.
    pub fn new(tag: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update((tag.len() as u64).to_le_bytes());
        h.update(tag);
        TaggedHasher(h)
    }

    /// Adds one length-prefixed part.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// The digest.
    pub fn finish(self) -> Hash {
        Hash(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed_and_tags_separate() {
        assert_ne!(tagged_hash(b"t", &[b"ab", b"c"]), tagged_hash(b"t", &[b"a", b"bc"]));
        assert_ne!(tagged_hash(b"t1", &[b"x"]), tagged_hash(b"t2", &[b"x"]));
        let mut h = TaggedHasher::new(b"t");
        h.part(b"ab").part(b"c");
        assert_eq!(h.finish(), tagged_hash(b"t", &[b"ab", b"c"]));
    }

    #[test]
    fn file_hash_is_plain_sha256() {
        assert_eq!(
            sha256(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
