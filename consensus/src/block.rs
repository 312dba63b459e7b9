//! Blocks: a header and the transactions it orders.
//!
//! A block comes every `block_interval_ms` whether or not there are transactions (task deadlines
//! count in heights). Its header carries the state root *after the previous block* (the state a
//! block is applied to), so a node can check the root it reached without executing the block.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bft::BodyMismatch;
use crate::encoding::encode;
use crate::hash::{TaggedHasher, tagged_hash, tags};
use crate::tx::SignedTx;
use crate::types::{AccountId, Hash, Height};
use crate::vote::CommitCertificate;

/// A block header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The chain.
    pub chain_id: String,
    /// This block's height (1 for the first block).
    pub height: Height,
    /// The proposer's time, in milliseconds since the Unix epoch; strictly increasing.
    pub time_ms: u64,
    /// The previous block's hash (the genesis hash for height 1).
    pub prev_hash: Hash,
    /// [`tx_root`] of the block's transactions.
    pub tx_root: Hash,
    /// The state root after the previous block.
    pub state_root: Hash,
    /// The hash of the validator set that signs this height.
    pub validators_hash: Hash,
    /// The hash of the previous block's commit certificate (all zeros at height 1).
    pub last_commit_hash: Hash,
    /// The validator that proposed this block.
    pub proposer: AccountId,
}

/// A block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// The transactions, executed in order; shared, so a copy of a block (the consensus engine
    /// keeps and logs several) never copies its transactions.
    pub txs: Arc<[SignedTx]>,
    /// The certificate that committed the previous block (`None` at height 1).
    pub last_commit: Option<CommitCertificate>,
}

impl Header {
    /// The block hash: a tagged hash of the header's canonical bytes.
    pub fn hash(&self) -> Hash {
        tagged_hash(tags::BLOCK, &[&encode(self)])
    }
}

impl Block {
    /// The block's hash (its header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The block's height.
    pub fn height(&self) -> Height {
        self.header.height
    }
}

impl Block {
    /// Checks that the body is the one the header commits to: the transactions hash to
    /// `tx_root`, and the last commit hashes to `last_commit_hash` and commits the previous block
    /// (none, and an all-zero hash, at height 1).
    ///
    /// A block's id is its header's hash, so two bodies can travel under one id; this check is
    /// what makes an id name exactly one block. It needs no state, so every door a block comes in
    /// by (gossiped proposal, gossiped committed block, sync reply, write-ahead log) runs it
    /// before the consensus engine or the ledger sees the block.
    pub fn check_body(&self) -> Result<(), BodyMismatch> {
        let header = &self.header;
        let mismatch = |what: String| Err(BodyMismatch(what));
        let root = tx_root(&self.txs);
        if root != header.tx_root {
            return mismatch(format!(
                "its {} transactions hash to {root}, the header says {}",
                self.txs.len(),
                header.tx_root
            ));
        }
        match (&self.last_commit, header.height) {
            (_, Height(0)) => mismatch("height 0 holds no block".into()),
            (None, Height(1)) if header.last_commit_hash == Hash::default() => Ok(()),
            (None, Height(1)) => mismatch("the first block's last commit hash is not zero".into()),
            (Some(_), Height(1)) => mismatch("the first block carries a last commit".into()),
            (None, _) => mismatch("the last commit is missing".into()),
            (Some(cert), height) => {
                if cert.hash() != header.last_commit_hash {
                    return mismatch(format!(
                        "its last commit hashes to {}, the header says {}",
                        cert.hash(),
                        header.last_commit_hash
                    ));
                }
                if cert.height.next() != height || cert.block != header.prev_hash {
                    return mismatch(format!(
                        "its last commit commits block {} at height {}, not the previous block {} \
                         at height {}",
                        cert.block,
                        cert.height,
                        header.prev_hash,
                        height.0 - 1
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A block is what the BFT engine agrees on; its id is its header's hash, and its body must
/// match the header ([`Block::check_body`]).
impl crate::bft::Value for Block {
    fn id(&self) -> Hash {
        self.hash()
    }

    fn check_body(&self) -> Result<(), BodyMismatch> {
        Block::check_body(self)
    }
}

/// The root of a list of transactions: a tagged hash over their hashes in order.
pub fn tx_root(txs: &[SignedTx]) -> Hash {
    let mut h = TaggedHasher::new(tags::TX_ROOT);
    for tx in txs {
        h.part(tx.hash().as_bytes());
    }
    h.finish()
}
