//! Blocks: a header and the transactions it orders.
//!
//! A block comes every `block_interval_ms` whether or not there are transactions (task deadlines
//! count in heights). Its header carries the state root *after the previous block* (the state a
//! block is applied to), so a node can check the root it reached without executing the block.

use serde::{Deserialize, Serialize};

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
    /// The transactions, executed in order.
    pub txs: Vec<SignedTx>,
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

/// A block is what the BFT engine agrees on; its id is its hash.
impl crate::bft::Value for Block {
    fn id(&self) -> Hash {
        self.hash()
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
