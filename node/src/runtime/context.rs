//! What every runtime task of a running node shares: the ledger, the network, the way to submit
//! transactions, chain events, and figures for the metrics.
//!
//! The consensus driver is the only writer of the ledger; the role loops (scoring, training) and
//! the HTTP API read it through [`SharedLedger`] and act through [`NodeContext::submit`] (sign
//! with the node key, next nonce, into the mempool and out on gossip) and the
//! [`NetworkClient`] (blobs). Every channel here is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use consensus::chain::Ledger;
use consensus::crypto::{Keypair, Verifier};
use consensus::genesis::Genesis;
use consensus::tx::{SignedTx, TxKind};
use consensus::types::{AccountId, Hash, Height};
use consensus::vote::Vote;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::datadir::DataDir;
use crate::mempool::FullFlag;
use crate::network::NetworkClient;

/// The ledger, shared: the consensus driver writes, everyone else reads. Hold the lock briefly:
/// never across an `.await` or a long computation (clone what you need).
pub type SharedLedger = Arc<RwLock<Ledger>>;

/// The role a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Votes in consensus, produces blocks and scores submissions.
    Validator,
    /// Follows the chain, trains models for open tasks and submits them.
    Trainer,
}

/// Something the chain did, broadcast to every runtime task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEvent {
    /// A block was committed and applied; the ledger is at `height`.
    BlockCommitted {
        /// Its height.
        height: Height,
        /// Its hash.
        hash: Hash,
        /// Its header time, in ms since the Unix epoch.
        time_ms: u64,
        /// How many transactions it held.
        txs: usize,
    },
}

/// A transaction submitted by a local task, with where to report the outcome of its admission.
#[derive(Debug)]
pub struct Submission {
    /// What to do; the driver signs it with the node key and the next nonce.
    pub kind: TxKind,
    /// The signed tx's hash once admitted to the mempool, or why it was refused.
    pub admitted: oneshot::Sender<Result<SignedTx, String>>,
}

/// Signed transactions from the HTTP API (signatures already checked), with where to report each
/// one's admission, in order.
#[derive(Debug)]
pub struct ExternalTxs {
    /// The transactions, in the order they are admitted.
    pub txs: Vec<SignedTx>,
    /// For each, `Ok` once admitted to the mempool, or why it was refused.
    pub admitted: oneshot::Sender<Vec<Result<(), String>>>,
}

/// Counters and gauges the runtime keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Peers connected.
    pub peers: AtomicU64,
    /// Transactions in the mempool.
    pub mempool_txs: AtomicU64,
    /// Blocks committed since start.
    pub blocks_committed: AtomicU64,
    /// Total milliseconds spent training models.
    pub training_ms: AtomicU64,
    /// Total milliseconds spent scoring submissions.
    pub scoring_ms: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }
}

/// The latest prevote or precommit this node has heard from each validator (its own included),
/// for `/validators`: the votes in flight, beside the ones commit certificates record.
#[derive(Debug, Default)]
pub struct LiveVotes(Mutex<HashMap<AccountId, Vote>>);

impl LiveVotes {
    /// Keeps `vote` as `validator`'s latest, unless a later one (height, round, then precommit
    /// after prevote) is already kept.
    pub fn record(&self, validator: AccountId, vote: Vote) {
        let key = |v: &Vote| (v.height, v.round, v.kind);
        let mut votes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let latest = votes.entry(validator).or_insert(vote);
        if key(&vote) > key(latest) {
            *latest = vote;
        }
    }

    /// `validator`'s latest vote heard, if any.
    pub fn latest(&self, validator: &AccountId) -> Option<Vote> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(validator).copied()
    }
}

/// Everything a runtime task of a node needs. Cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    /// The chain's genesis.
    pub genesis: Arc<Genesis>,
    /// The node's key (its ledger account and PeerId).
    pub key: Arc<Keypair>,
    /// The role this node runs.
    pub role: Role,
    /// The node's data directory.
    pub data_dir: DataDir,
    /// The ledger.
    pub ledger: SharedLedger,
    /// The network.
    pub network: NetworkClient,
    /// Local transactions to sign, admit and gossip.
    pub submissions: mpsc::Sender<Submission>,
    /// Batches of signed transactions (from the HTTP API) to admit and gossip.
    pub external_txs: mpsc::Sender<ExternalTxs>,
    /// Chain events; `subscribe()` for a receiver.
    pub events: broadcast::Sender<ChainEvent>,
    /// Figures for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The validators' latest votes heard.
    pub live_votes: Arc<LiveVotes>,
    /// Set while the mempool is full: the HTTP API then refuses txs before checking them.
    pub mempool_full: FullFlag,
    /// The ledger's signature verifier, shared with the network, the engine and the HTTP API.
    pub verifier: Arc<Verifier>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeContext({:?}, {})", self.role, self.key.account().short())
    }
}

/// Why a local transaction was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The driver has stopped.
    #[error("the node is shutting down")]
    Stopped,
    /// The mempool refused the transaction.
    #[error("transaction refused: {0}")]
    Refused(String),
}

impl NodeContext {
    /// Signs `kind` with the node key and the next nonce, admits it to the local mempool and
    /// gossips it. Returns the signed tx once admitted.
    pub async fn submit(&self, kind: TxKind) -> Result<SignedTx, SubmitError> {
        let (admitted, answer) = oneshot::channel();
        self.submissions
            .send(Submission { kind, admitted })
            .await
            .map_err(|_| SubmitError::Stopped)?;
        answer.await.map_err(|_| SubmitError::Stopped)?.map_err(SubmitError::Refused)
    }

    /// Reads the ledger under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&Ledger) -> T) -> T {
        // A panic while holding the write lock would leave a ledger that already committed or
        // rejected its block atomically; reading it is still sound.
        let ledger = self.ledger.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&ledger)
    }
}
