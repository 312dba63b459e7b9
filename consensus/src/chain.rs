//! The chain: blocks applied to the state and persisted, and the replay that audits a stored
//! chain.
//!
//! [`Ledger`] owns a [`Store`] and the [`State`] it holds. [`execute_block`] checks a
//! block against the state (header fields, size limits, every signature, every tx in
//! order, end-of-block finalization) on a copy, so an invalid block changes nothing; the consensus
//! engine calls it (through [`Ledger::check_block`]) to judge a proposal. [`Ledger::commit_block`] does the same, then writes the
//! block, its commit certificate, its tx index entries and every state change in one atomic batch.
//! [`replay`] re-executes a stored chain from genesis in memory and compares every state root.
//!
//! A copy of the state is O(1) (its tables and Merkle tree share structure), and a block's
//! root update touches only the records it changed, so a block costs what it changes, not what
//! the state holds. The ledger keeps the states of the last [`RECENT_STATES_MAX`] heights (each
//! sharing all but its changes) to prove records against recent headers ([`Ledger::prove`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::block::{Block, Header, tx_root};
use crate::crypto::Verifier;
use crate::encoding::{DecodeError, decode, encode, encoded_len};
use crate::genesis::Genesis;
use crate::merkle::StateProof;
use crate::state::{LoadError, State, StateKeyError, TxContext, TxError};
use crate::storage::{MemStore, Op, Store, StoreError, Tree};
use crate::tx::SignedTx;
use crate::types::{AccountId, Hash, Height};
use crate::vote::{CertificateError, CommitCertificate};

/// Why a block is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A header field has the wrong value.
    #[error("header field `{field}` is wrong: expected {expected}, found {found}")]
    Header {
        /// The field.
        field: &'static str,
        /// What the state says it must be.
        expected: String,
        /// What the block says.
        found: String,
    },
    /// The proposer is not in the height's validator set.
    #[error("proposer {0} is not a validator at this height")]
    UnknownProposer(AccountId),
    /// The block is too large.
    #[error("block has {what} {found}, over the limit of {limit}")]
    TooLarge {
        /// What is counted.
        what: &'static str,
        /// The block's count.
        found: u64,
        /// The limit.
        limit: u64,
    },
    /// The previous block's commit certificate is missing, unexpected or invalid.
    #[error("last commit is invalid: {0}")]
    LastCommit(String),
    /// A transaction is invalid.
    #[error("transaction {index} ({hash}) is invalid: {error}")]
    InvalidTx {
        /// Its position in the block.
        index: usize,
        /// Its hash.
        hash: Hash,
        /// Why.
        error: Box<TxError>,
    },
    /// The state does not know the validator set of this height (a block far in the future).
    #[error("no validator set known for height {0}")]
    UnknownHeight(Height),
}

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The block is invalid.
    #[error(transparent)]
    Block(Box<BlockError>),
    /// The block's commit certificate is invalid.
    #[error("commit certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A stored record does not decode.
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] DecodeError),
    /// The store holds another chain.
    #[error(
        "the store holds chain {found_chain} with genesis {found}, not genesis {expected}; use another data dir"
    )]
    WrongGenesis {
        /// The genesis given.
        expected: Hash,
        /// The store's genesis.
        found: Hash,
        /// The store's chain id.
        found_chain: String,
    },
    /// The state loaded from the store does not hash to the root recorded with its last block.
    #[error(
        "the stored state at height {height} hashes to {recomputed}, not to the root {recorded} \
         recorded with its last block: the chain store is corrupt; run `node ledger verify` to \
         replay it and find where, then restore the data dir or sync it afresh"
    )]
    HeadRootMismatch {
        /// The last committed height.
        height: Height,
        /// The root written with the last block.
        recorded: Hash,
        /// The root of the state as loaded.
        recomputed: Hash,
    },
}

/// Key in [`Tree::Meta`] of the state root after the last committed block, written in the same
/// batch as the block, so [`Ledger::open`] can check the loaded state against it.
const HEAD_ROOT_KEY: &[u8] = b"head_state_root";

impl From<BlockError> for LedgerError {
    fn from(e: BlockError) -> Self {
        LedgerError::Block(Box::new(e))
    }
}

/// Where a transaction landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    /// The block's height.
    pub height: Height,
    /// Position in the block.
    pub index: u32,
}

/// Block keys are big-endian heights, so the store keeps blocks in height order.
pub fn height_key(height: Height) -> [u8; 8] {
    height.0.to_be_bytes()
}

/// Largest stored block read back, in bytes (a block is bounded by `max_block_bytes`, itself
/// bounded by [`crate::genesis::BLOCK_BYTES_LIMIT`]).
const STORED_BLOCK_BYTES_MAX: usize = crate::genesis::BLOCK_BYTES_LIMIT as usize;

/// Refuses a header whose `field` is `found` where the state says `expected`.
fn header_field<T: PartialEq + std::fmt::Display>(
    field: &'static str,
    expected: &T,
    found: &T,
) -> Result<(), BlockError> {
    if expected == found {
        return Ok(());
    }
    Err(BlockError::Header { field, expected: expected.to_string(), found: found.to_string() })
}

/// Checks `block` against `state` (the state after the previous block) and executes it, returning
/// the state after it. `state` itself is left untouched.
pub fn execute_block(state: &State, block: &Block) -> Result<State, BlockError> {
    let header = &block.header;
    let meta = state.meta();
    let params = state.params();
    let height = meta.height.next();
    header_field("chain_id", &meta.chain_id, &header.chain_id)?;
    header_field("height", &height, &header.height)?;
    header_field("prev_hash", &meta.last_block_hash, &header.prev_hash)?;
    let time_ok = if meta.height == Height(0) {
        header.time_ms >= meta.last_time_ms
    } else {
        header.time_ms > meta.last_time_ms
    };
    if !time_ok {
        return Err(BlockError::Header {
            field: "time_ms",
            expected: format!("after {}", meta.last_time_ms),
            found: header.time_ms.to_string(),
        });
    }
    header_field("state_root", &state.root(), &header.state_root)?;
    let set = state.validator_set(height).ok_or(BlockError::UnknownHeight(height))?;
    header_field("validators_hash", &set.hash(), &header.validators_hash)?;
    if !set.contains(&header.proposer) {
        return Err(BlockError::UnknownProposer(header.proposer));
    }
    match (&block.last_commit, meta.height) {
        (None, Height(0)) => {
            header_field("last_commit_hash", &Hash::default(), &header.last_commit_hash)?;
        }
        (Some(cert), prev) if prev > Height(0) => {
            header_field("last_commit_hash", &cert.hash(), &header.last_commit_hash)?;
            let prev_set = state.validator_set(prev).ok_or(BlockError::UnknownHeight(prev))?;
            cert.verify(state.verifier(), &meta.chain_id, prev, &meta.last_block_hash, prev_set)
                .map_err(|e| BlockError::LastCommit(e.to_string()))?;
        }
        (None, _) => return Err(BlockError::LastCommit("missing".into())),
        (Some(_), _) => {
            return Err(BlockError::LastCommit("the first block has no last commit".into()));
        }
    }
    if block.txs.len() > params.max_block_txs as usize {
        return Err(BlockError::TooLarge {
            what: "transactions",
            found: block.txs.len() as u64,
            limit: u64::from(params.max_block_txs),
        });
    }
    let mut bytes = 0u64;
    for tx in block.txs.iter() {
        let len = encoded_len(tx) as u64;
        if len > params.max_tx_bytes {
            return Err(BlockError::TooLarge {
                what: "transaction bytes",
                found: len,
                limit: params.max_tx_bytes,
            });
        }
        bytes += len;
    }
    if bytes > params.max_block_bytes {
        return Err(BlockError::TooLarge {
            what: "bytes",
            found: bytes,
            limit: params.max_block_bytes,
        });
    }
    header_field("tx_root", &tx_root(&block.txs), &header.tx_root)?;
    // Wrong-chain txs fail signature verification too; name the clearer error first.
    for (index, tx) in block.txs.iter().enumerate() {
        if tx.tx.chain_id != meta.chain_id {
            let error = TxError::WrongChain {
                expected: meta.chain_id.clone(),
                found: tx.tx.chain_id.clone(),
            };
            return Err(BlockError::InvalidTx { index, hash: tx.hash(), error: Box::new(error) });
        }
    }
    // Together: signatures already accepted (at gossip, by the mempool) cost a hash, and the
    // rest share one field inversion.
    crate::tx::verify_txs(state.verifier(), &meta.chain_id, &block.txs).map_err(|(index, e)| {
        BlockError::InvalidTx {
            index,
            hash: block.txs[index].hash(),
            error: Box::new(TxError::BadSignature(e)),
        }
    })?;

    let mut next = state.clone();
    for (index, tx) in block.txs.iter().enumerate() {
        let ctx = TxContext {
            height,
            index: u32::try_from(index).expect("bounded by max_block_txs"),
            proposer: header.proposer,
        };
        next.execute_tx(tx, ctx).map_err(|error| BlockError::InvalidTx {
            index,
            hash: tx.hash(),
            error: Box::new(error),
        })?;
    }
    next.end_block(height);
    next.set_tip(height, block.hash(), header.time_ms);
    Ok(next)
}

/// Builds the block that `proposer` would propose on `state`: every tx that executes in order is
/// included (a tx that fails is left out), up to the block's limits.
pub fn build_block(
    state: &State,
    txs: impl IntoIterator<Item = SignedTx>,
    time_ms: u64,
    proposer: AccountId,
    last_commit: Option<CommitCertificate>,
) -> Result<Block, BlockError> {
    let meta = state.meta();
    let params = state.params();
    let height = meta.height.next();
    let set = state.validator_set(height).ok_or(BlockError::UnknownHeight(height))?;
    let mut scratch = state.clone();
    let mut included = Vec::new();
    let mut bytes = 0u64;
    for tx in txs {
        if included.len() >= params.max_block_txs as usize {
            break;
        }
        let len = encoded_len(&tx) as u64;
        if len > params.max_tx_bytes || bytes + len > params.max_block_bytes {
            continue;
        }
        let ctx = TxContext {
            height,
            index: u32::try_from(included.len()).expect("bounded by max_block_txs"),
            proposer,
        };
        if scratch.check_and_execute_tx(&tx, ctx).is_ok() {
            bytes += len;
            included.push(tx);
        }
    }
    let header = Header {
        chain_id: meta.chain_id.clone(),
        height,
        time_ms: time_ms.max(meta.last_time_ms + 1),
        prev_hash: meta.last_block_hash,
        tx_root: tx_root(&included),
        state_root: state.root(),
        validators_hash: set.hash(),
        last_commit_hash: last_commit.as_ref().map_or(Hash::default(), CommitCertificate::hash),
        proposer,
    };
    Ok(Block { header, txs: included.into(), last_commit })
}

/// How many past states a [`Ledger`] keeps for proofs: a record can be proven against the
/// header of any of the last this-many heights (a header carries the root of the state before
/// its block).
pub const RECENT_STATES_MAX: usize = 16;

/// A record of the state, or its absence, proven against a committed header: what a light client
/// checks with the validator set it trusts (see [`StateProofBundle::verify`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateProofBundle {
    /// The state table.
    pub table: String,
    /// The record's canonical key bytes.
    #[serde(with = "hex_bytes")]
    pub key: Vec<u8>,
    /// The record's canonical value bytes, or `None` if the table has no such key.
    #[serde(with = "hex_bytes_opt")]
    pub value: Option<Vec<u8>>,
    /// The Merkle proof against `header.state_root`.
    pub proof: StateProof,
    /// The committed header whose state root the proof is against.
    pub header: Header,
    /// The certificate that committed `header`.
    pub commit: CommitCertificate,
}

/// Why a proof bundle is refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The table name is not a state table.
    #[error("`{0}` is not a state table")]
    UnknownTable(String),
    /// The header is for another chain.
    #[error("the header is for chain {found:?}, not {expected:?}")]
    WrongChain {
        /// The trusted chain.
        expected: String,
        /// The header's chain.
        found: String,
    },
    /// The header's validator set is not the trusted one.
    #[error("the header's validators hash {found} is not the trusted set's {expected}")]
    WrongValidators {
        /// The trusted set's hash.
        expected: Hash,
        /// The header's.
        found: Hash,
    },
    /// The certificate does not commit the header with a quorum of the trusted set.
    #[error("commit certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The Merkle proof fails.
    #[error("merkle proof: {0}")]
    Proof(#[from] crate::merkle::ProofError),
}

impl StateProofBundle {
    /// Checks the bundle against a trusted validator set of `chain_id`: the header is
    /// committed by a quorum of `validators`, and the proof shows `value` (or absence) under
    /// its state root. Returns the proven table.
    pub fn verify(
        &self,
        chain_id: &str,
        validators: &crate::validators::ValidatorSet,
    ) -> Result<Tree, BundleError> {
        let table = Tree::state_tree(&self.table)
            .ok_or_else(|| BundleError::UnknownTable(self.table.clone()))?;
        if self.header.chain_id != chain_id {
            return Err(BundleError::WrongChain {
                expected: chain_id.into(),
                found: self.header.chain_id.clone(),
            });
        }
        if self.header.validators_hash != validators.hash() {
            return Err(BundleError::WrongValidators {
                expected: validators.hash(),
                found: self.header.validators_hash,
            });
        }
        // A one-off check: nothing to remember.
        let verifier = &Verifier::new();
        self.commit.verify(
            verifier,
            chain_id,
            self.header.height,
            &self.header.hash(),
            validators,
        )?;
        self.proof.verify(&self.header.state_root, table, &self.key, self.value.as_deref())?;
        Ok(table)
    }
}

/// A state record's canonical value bytes as JSON, decoded as the record type of `table`.
pub fn record_json(table: Tree, bytes: &[u8]) -> Result<serde_json::Value, DecodeError> {
    use crate::state as s;
    fn json<T: serde::de::DeserializeOwned + Serialize>(
        bytes: &[u8],
    ) -> Result<serde_json::Value, DecodeError> {
        let value: T = decode("state record", bytes, STATE_RECORD_BYTES_MAX)?;
        Ok(serde_json::to_value(value).expect("ledger records serialize to JSON"))
    }
    match table {
        Tree::Meta => json::<s::ChainMeta>(bytes),
        Tree::Accounts => json::<s::Account>(bytes),
        Tree::Validators => json::<s::ValidatorRecord>(bytes),
        Tree::ValidatorSets => json::<crate::validators::ValidatorSet>(bytes),
        Tree::Tasks => json::<s::Task>(bytes),
        Tree::Submissions => json::<s::Submission>(bytes),
        Tree::Verdicts => json::<s::ScoreRecord>(bytes),
        Tree::Commitments => json::<s::CommitmentOwner>(bytes),
        Tree::Evidence => json::<Height>(bytes),
        Tree::Champions => json::<s::ChampionRecord>(bytes),
        Tree::Deadlines => json::<s::Due>(bytes),
        Tree::ChampionIndex => json::<crate::types::ModelHash>(bytes),
        Tree::Blocks | Tree::Commits | Tree::TxIndex | Tree::Wal => {
            Err(DecodeError::Malformed { what: "state record", reason: "not a state table".into() })
        }
    }
}

/// Largest state record decoded for display, in bytes (a task with its report is the largest).
const STATE_RECORD_BYTES_MAX: usize = 64 << 20;

/// Why a proof could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    /// The key is not a key of the table.
    #[error(transparent)]
    Key(#[from] StateKeyError),
    /// The table name is not a state table.
    #[error("`{0}` is not a state table")]
    UnknownTable(String),
    /// No committed header at that height.
    #[error("no committed block at height {height} (the tip is {tip})")]
    NotCommitted {
        /// The height asked for.
        height: Height,
        /// The last committed height.
        tip: Height,
    },
    /// The state under that header is no longer kept.
    #[error("proofs are kept for the last {RECENT_STATES_MAX} heights; {height} is older")]
    TooOld {
        /// The height asked for.
        height: Height,
    },
    /// The store failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| hex::decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A chain: state plus the store that persists it.
pub struct Ledger {
    store: Box<dyn Store>,
    state: State,
    root: Hash,
    /// The states after the last heights before the tip, oldest first.
    recent: std::collections::VecDeque<State>,
    /// The last block [`Ledger::check_block`] accepted and the state after it: a validator checks
    /// a proposal and then commits the same block, which need not execute twice.
    checked: std::sync::Mutex<Option<(Hash, State)>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger(height {}, root {})", self.state.height(), self.root.short())
    }
}

impl Ledger {
    /// Opens the chain in `store`, initializing it from `genesis` if the store is empty. A store
    /// that holds another genesis is refused.
    pub fn open(store: Box<dyn Store>, genesis: &Genesis) -> Result<Ledger, LedgerError> {
        Ledger::open_with(store, genesis, Arc::default())
    }

    /// [`Ledger::open`], with the state checking signatures through `verifier` (say, the one
    /// the genesis keys were checked with: see [`Genesis::from_json_with`]).
    pub fn open_with(
        store: Box<dyn Store>,
        genesis: &Genesis,
        verifier: Arc<Verifier>,
    ) -> Result<Ledger, LedgerError> {
        let mut state = match State::load(store.as_ref())? {
            Some(state) => {
                if state.meta().genesis_hash != genesis.hash() {
                    return Err(LedgerError::WrongGenesis {
                        expected: genesis.hash(),
                        found: state.meta().genesis_hash,
                        found_chain: state.meta().chain_id.clone(),
                    });
                }
                state
            }
            None => {
                let mut state = State::from_genesis(genesis);
                let mut ops = state.take_changes();
                ops.push(Op::Put(Tree::Meta, HEAD_ROOT_KEY.to_vec(), state.root().0.to_vec()));
                store.write(ops)?;
                state
            }
        };
        state.use_verifier(verifier);
        let root = state.root();
        // A store written before the head root was recorded has none to check against.
        if let Some(recorded) = store.get(Tree::Meta, HEAD_ROOT_KEY)?
            && recorded != root.0
        {
            let recorded = Hash(recorded.try_into().unwrap_or([0; 32]));
            return Err(LedgerError::HeadRootMismatch {
                height: state.height(),
                recorded,
                recomputed: root,
            });
        }
        Ok(Ledger { store, state, root, recent: Default::default(), checked: Default::default() })
    }

    /// The state after the last committed block.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state root after the last committed block.
    pub fn state_root(&self) -> Hash {
        self.root
    }

    /// Height of the last committed block.
    pub fn height(&self) -> Height {
        self.state.height()
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Checks a proposed block without committing it.
    pub fn check_block(&self, block: &Block) -> Result<(), BlockError> {
        let next = execute_block(&self.state, block)?;
        *self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((block.hash(), next));
        Ok(())
    }

    /// The state after `block` on the tip: the one [`Ledger::check_block`] computed if it checked
    /// this very block on this very tip (every commit takes the remembered state, so it cannot
    /// outlive its tip; the parent is compared all the same), else executed now.
    fn execute_next(&self, block: &Block) -> Result<State, BlockError> {
        let checked = self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match checked {
            Some((hash, next))
                if hash == block.hash()
                    && block.header.prev_hash == self.state.meta().last_block_hash =>
            {
                Ok(next)
            }
            _ => execute_block(&self.state, block),
        }
    }

    /// Verifies `cert` commits `block`, executes the block, and persists block, certificate, tx
    /// index and state changes in one atomic write.
    pub fn commit_block(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
    ) -> Result<(), LedgerError> {
        let height = self.state.height().next();
        let set = self.state.validator_set(height).ok_or(BlockError::UnknownHeight(height))?;
        cert.verify(self.state.verifier(), self.state.chain_id(), height, &block.hash(), set)?;
        let mut next = self.execute_next(block)?;
        let mut ops = next.take_changes();
        let key = height_key(height).to_vec();
        ops.push(Op::Put(Tree::Blocks, key.clone(), encode(block)));
        ops.push(Op::Put(Tree::Commits, key, encode(cert)));
        for (index, tx) in block.txs.iter().enumerate() {
            let location = TxLocation {
                height,
                index: u32::try_from(index).expect("bounded by max_block_txs"),
            };
            ops.push(Op::Put(Tree::TxIndex, tx.hash().0.to_vec(), encode(&location)));
        }
        let root = next.root();
        ops.push(Op::Put(Tree::Meta, HEAD_ROOT_KEY.to_vec(), root.0.to_vec()));
        self.store.write(ops)?;
        self.root = root;
        let before = std::mem::replace(&mut self.state, next);
        if self.recent.len() == RECENT_STATES_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(before);
        Ok(())
    }

    /// The state after `height`, if it is the tip or one of the recent heights kept.
    pub fn state_at(&self, height: Height) -> Option<&State> {
        std::iter::once(&self.state).chain(self.recent.iter().rev()).find(|s| s.height() == height)
    }

    /// The record `(table, key)` (canonical key bytes) with its proof against the committed
    /// header at `height` (whose state root is that of the state after `height - 1`).
    pub fn prove(
        &self,
        table: &str,
        key: &[u8],
        height: Height,
    ) -> Result<StateProofBundle, ProveError> {
        let tree = Tree::state_tree(table).ok_or_else(|| ProveError::UnknownTable(table.into()))?;
        let tip = self.height();
        let not_committed = ProveError::NotCommitted { height, tip };
        if height == Height(0) || height > tip {
            return Err(not_committed);
        }
        let state = self.state_at(Height(height.0 - 1)).ok_or(ProveError::TooOld { height })?;
        let (value, proof) = state.prove(tree, key)?;
        let block = self.block(height)?.ok_or(not_committed)?;
        let commit = self.commit(height)?.ok_or(ProveError::NotCommitted { height, tip })?;
        Ok(StateProofBundle {
            table: table.into(),
            key: key.to_vec(),
            value,
            proof,
            header: block.header,
            commit,
        })
    }

    /// The stored block at `height`.
    pub fn block(&self, height: Height) -> Result<Option<Block>, LedgerError> {
        stored_block(self.store.as_ref(), height)
    }

    /// The stored commit certificate of `height`.
    pub fn commit(&self, height: Height) -> Result<Option<CommitCertificate>, LedgerError> {
        stored_commit(self.store.as_ref(), height)
    }

    /// Where a transaction landed, if it is on the chain.
    pub fn tx_location(&self, hash: &Hash) -> Result<Option<TxLocation>, LedgerError> {
        match self.store.get(Tree::TxIndex, hash.as_bytes())? {
            Some(bytes) => Ok(Some(decode("tx location", &bytes, 64)?)),
            None => Ok(None),
        }
    }
}

fn stored_block(store: &dyn Store, height: Height) -> Result<Option<Block>, LedgerError> {
    match store.get(Tree::Blocks, &height_key(height))? {
        Some(bytes) => Ok(Some(decode("stored block", &bytes, STORED_BLOCK_BYTES_MAX)?)),
        None => Ok(None),
    }
}

fn stored_commit(
    store: &dyn Store,
    height: Height,
) -> Result<Option<CommitCertificate>, LedgerError> {
    match store.get(Tree::Commits, &height_key(height))? {
        Some(bytes) => Ok(Some(decode("stored commit", &bytes, STORED_BLOCK_BYTES_MAX)?)),
        None => Ok(None),
    }
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    /// Blocks re-executed.
    pub blocks: u64,
    /// The state root after the last block, recomputed.
    pub state_root: Hash,
}

/// Why a replay failed: the stored chain does not re-execute to the stored state.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The store or a record failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A stored block is missing.
    #[error("block {0} is missing from the store")]
    MissingBlock(Height),
    /// A stored block does not re-execute (its header's state root is the usual culprit).
    #[error("block {height} does not re-execute: {error}")]
    Block {
        /// The height.
        height: Height,
        /// Why.
        error: Box<LedgerError>,
    },
    /// The stored state differs from the recomputed one.
    #[error(
        "stored state root {stored} differs from the recomputed {recomputed} at height {height}"
    )]
    StateMismatch {
        /// The height.
        height: Height,
        /// Root of the stored state.
        stored: Hash,
        /// Root after re-execution.
        recomputed: Hash,
    },
}

/// Re-executes the chain stored in `store` from `genesis` in memory: every block's header state
/// root, certificate, transactions and finalizations are recomputed, and the result must equal the
/// stored state.
pub fn replay(store: &dyn Store, genesis: &Genesis) -> Result<ReplayReport, ReplayError> {
    let stored = State::load(store).map_err(LedgerError::from)?;
    let Some(stored) = stored else {
        return Err(ReplayError::MissingBlock(Height(0)));
    };
    if stored.meta().genesis_hash != genesis.hash() {
        return Err(LedgerError::WrongGenesis {
            expected: genesis.hash(),
            found: stored.meta().genesis_hash,
            found_chain: stored.meta().chain_id.clone(),
        }
        .into());
    }
    let mut fresh = Ledger::open(Box::new(MemStore::new()), genesis)?;
    let tip = stored.height();
    for h in 1..=tip.0 {
        let height = Height(h);
        let block = stored_block(store, height)?.ok_or(ReplayError::MissingBlock(height))?;
        let cert = stored_commit(store, height)?.ok_or(ReplayError::MissingBlock(height))?;
        fresh
            .commit_block(&block, &cert)
            .map_err(|error| ReplayError::Block { height, error: Box::new(error) })?;
    }
    let recomputed = fresh.state_root();
    let stored_root = stored.root();
    if recomputed != stored_root {
        return Err(ReplayError::StateMismatch { height: tip, stored: stored_root, recomputed });
    }
    Ok(ReplayReport { blocks: tip.0, state_root: recomputed })
}
