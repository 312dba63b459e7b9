//! The role loops: what a validator does besides consensus (scoring tasks) and what a trainer
//! does (joining, training or taking a model trained elsewhere, committing and revealing it).
//!
//! Both loops follow committed blocks through [`crate::runtime::ChainEvent`]s, read the ledger,
//! and decide what to do with a **pure planner** over the ledger's state and what the role has
//! persisted ([`scorer::scorer_plan`], [`trainer::trainer_plan`]); the loop only carries the plan
//! out. Every decision is therefore a function of the chain and the role's files, which makes it
//! testable and makes a restart resume where the node stopped.
//!
//! Heights: after block `h` is committed, a transaction submitted now lands at height `h + 1` or
//! later, and the ledger checks its window against the height of the block it lands in. So a
//! planner looks at `next = h + 1`: a step is planned only when `next` lies in its window.
//!
//! Secrets (commitment salts, with what they commit to) are written to `DATA_DIR/roles/` with an
//! atomic replace ([`persist`]) **before** the commitment is submitted, so a node that crashes
//! after committing still reveals exactly what it committed.
//!
//! Heavy work (training, evaluation) runs on tokio's blocking threads, inside a one-thread rayon
//! pool, so neither the async runtime nor the other cores (consensus, the swarm) are starved.

pub mod outside;
pub mod persist;
pub mod scorer;
pub mod trainer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use consensus::hash::sha256;
use consensus::types::{AccountId, Hash, Height, TaskId};
use libp2p::PeerId;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::blobs::BlobStoreError;
use crate::network::{BlobFetchError, FetchPlan, peer_of};
use crate::runtime::{ChainEvent, NodeContext, SubmitError};

/// Blocks a role waits for a submitted step to show on the ledger before it tries it again (a
/// transaction may be dropped from the mempool, e.g. when its window closes on a slow proposer).
pub const RETRY_BLOCKS: u64 = 3;

/// A role waits (does nothing) while the last committed block is older than this many block
/// intervals, or [`STALE_MIN_MS`] if longer: the node is still catching up by `sync`, and acting
/// on an old state would only send transactions whose windows have closed.
pub const STALE_BLOCKS: u64 = 30;
/// See [`STALE_BLOCKS`].
pub const STALE_MIN_MS: u64 = 30_000;

/// How old (ms) the last block of `state` is at wall-clock `now_ms`, when that is too old to act
/// on (see [`STALE_BLOCKS`]); `None` when the node is caught up.
pub fn lagging(state: &consensus::state::State, now_ms: u64) -> Option<u64> {
    let limit = state.params().block_interval_ms.saturating_mul(STALE_BLOCKS).max(STALE_MIN_MS);
    let age = now_ms.saturating_sub(state.meta().last_time_ms);
    (age > limit).then_some(age)
}

/// The height of the last committed block and the steps `plan` makes of the ledger's state:
/// none while the node is catching up ([`lagging`] at `now_ms`), which is logged as waiting to
/// catch up before `doing`.
fn plan_unless_lagging<S>(
    ctx: &NodeContext,
    now_ms: u64,
    doing: &str,
    plan: impl FnOnce(&consensus::state::State) -> Vec<S>,
) -> (Height, Vec<S>) {
    let (height, lag, steps) = ctx.read(|l| {
        let lag = lagging(l.state(), now_ms);
        let steps = if lag.is_some() { Vec::new() } else { plan(l.state()) };
        (l.height(), lag, steps)
    });
    if let Some(age_ms) = lag {
        tracing::debug!(%height, age_ms, "the last block is old: waiting to catch up before {doing}");
    }
    (height, steps)
}

/// The wall clock in ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a role loop does; [`drive`] runs it.
trait RoleLoop {
    /// What the role's background job (training, scoring) returns.
    type Output: Send + 'static;

    /// The slot of the one background job the role runs at a time.
    fn job(&mut self) -> &mut Option<Background<Self::Output>>;

    /// Plans from the ledger and carries the plan out.
    fn tick(&mut self) -> impl Future<Output = Result<(), Stopped>> + Send;

    /// The background job of `task` ended after `elapsed`.
    fn job_ended(
        &mut self,
        task: TaskId,
        elapsed: Duration,
        result: Result<Self::Output, tokio::task::JoinError>,
    ) -> impl Future<Output = Result<(), Stopped>> + Send;
}

/// Acts on the ledger now and after every committed block, and on each finished background job,
/// until the chain events end (the node is shutting down).
async fn drive<R: RoleLoop>(
    role: &mut R,
    events: &mut broadcast::Receiver<ChainEvent>,
) -> Result<(), Stopped> {
    role.tick().await?;
    loop {
        tokio::select! {
            (task, elapsed, result) = finished(role.job()) => {
                role.job_ended(task, elapsed, result).await?;
            }
            more = next_block(events) => {
                if !more {
                    return Err(Stopped);
                }
                role.tick().await?;
            }
        }
    }
}

/// A blob fetch asks one more provider each time this fraction of its deadline passes without
/// the blob ...
const HEDGES: u32 = 4;
/// ... or this long, if shorter.
const HEDGE_AFTER_MAX: Duration = Duration::from_secs(5);

/// Waits for the next committed block. Returns `false` once the chain events have ended (the node
/// is shutting down). A receiver that lagged behind just goes on: planners read the ledger, not
/// the events, so nothing is lost.
async fn next_block(events: &mut broadcast::Receiver<ChainEvent>) -> bool {
    match events.recv().await {
        Ok(ChainEvent::BlockCommitted { .. }) => true,
        Err(RecvError::Lagged(skipped)) => {
            tracing::debug!(
                skipped,
                "role loop lagged behind the chain events; re-reading the ledger"
            );
            true
        }
        Err(RecvError::Closed) => false,
    }
}

/// Which steps were tried at which height, so a step is retried only every [`RETRY_BLOCKS`].
#[derive(Debug, Default)]
struct Attempts(BTreeMap<(TaskId, &'static str), Height>);

impl Attempts {
    /// Whether step `what` of `task` may be tried at `height` (never tried, or last tried at least
    /// [`RETRY_BLOCKS`] blocks ago); if so, records the try.
    fn due(&mut self, task: TaskId, what: &'static str, height: Height) -> bool {
        match self.0.get(&(task, what)) {
            Some(last) if height.0 < last.0.saturating_add(RETRY_BLOCKS) => false,
            _ => {
                self.tried(task, what, height);
                true
            }
        }
    }

    /// Records that step `what` of `task` was tried at `height`.
    fn tried(&mut self, task: TaskId, what: &'static str, height: Height) {
        self.0.insert((task, what), height);
    }
}

/// Slow work of a role loop (scoring or training a task), running on its own tokio task so the
/// loop keeps following blocks (and revealing other tasks) meanwhile.
struct Background<T> {
    task: TaskId,
    started: std::time::Instant,
    handle: tokio::task::JoinHandle<T>,
}

impl<T: Send + 'static> Background<T> {
    /// Starts `work` for `task`.
    fn spawn(task: TaskId, work: impl Future<Output = T> + Send + 'static) -> Background<T> {
        Background { task, started: std::time::Instant::now(), handle: tokio::spawn(work) }
    }
}

/// Waits until the job in `slot` ends and empties the slot; pends forever when there is none.
/// Cancel-safe: dropped before the end, the job keeps running and stays in the slot.
async fn finished<T>(
    slot: &mut Option<Background<T>>,
) -> (TaskId, Duration, Result<T, tokio::task::JoinError>) {
    let Some(job) = slot.as_mut() else { return std::future::pending().await };
    let result = (&mut job.handle).await;
    let (task, elapsed) = (job.task, job.started.elapsed());
    *slot = None;
    (task, elapsed, result)
}

/// The node is shutting down: a role loop ends quietly.
#[derive(Debug)]
struct Stopped;

/// Submits `kind`, logging the outcome. A refusal is logged and not an error (the planner tries
/// again after [`RETRY_BLOCKS`] if the ledger still needs the step); only a stopped node is.
async fn submit(
    ctx: &NodeContext,
    task: TaskId,
    kind: consensus::tx::TxKind,
) -> Result<bool, Stopped> {
    let name = kind.name();
    match ctx.submit(kind).await {
        Ok(tx) => {
            tracing::info!(task = %task, tx = %tx.hash(), nonce = %tx.tx.nonce, "submitted {name}");
            Ok(true)
        }
        Err(SubmitError::Refused(reason)) => {
            tracing::warn!(task = %task, %reason, "{name} refused by the mempool");
            Ok(false)
        }
        Err(SubmitError::Stopped) => Err(Stopped),
    }
}

/// Why a blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No provider served it before the deadline.
    #[error(transparent)]
    Fetch(#[from] BlobFetchError),
    /// The blob store could not read it back.
    #[error(transparent)]
    Store(#[from] BlobStoreError),
    /// The store no longer holds it.
    #[error("blob {0} vanished from the store")]
    Vanished(Hash),
    /// The blocking read panicked or was cancelled.
    #[error("reading blob {hash}: {message}")]
    Join {
        /// The blob.
        hash: Hash,
        /// What went wrong.
        message: String,
    },
}

/// Fetches blob `hash` (at most `max_bytes`) from the network within `timeout` (see
/// [`fetch_file`]) and reads its bytes from the store on a blocking thread.
async fn fetch_bytes(
    ctx: &NodeContext,
    hash: Hash,
    max_bytes: u64,
    author: Option<AccountId>,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    fetch_file(ctx, hash, max_bytes, author, timeout).await?;
    let store = ctx.network.blob_store().clone();
    tokio::task::spawn_blocking(move || store.get(&hash, max_bytes))
        .await
        .map_err(|e| FetchError::Join { hash, message: e.to_string() })??
        .ok_or(FetchError::Vanished(hash))
}

/// Fetches blob `hash` (at most `max_bytes`) into the blob store within `timeout`, and returns
/// its path (at once, for a blob the store holds). `author`, the node that published the blob,
/// is asked first, then the chain's validators, then anyone else who claims it; another provider
/// is asked as well every [`HEDGES`]th of the timeout (at most [`HEDGE_AFTER_MAX`]) while the
/// blob is late ([`crate::network::fetch`]). A blob this node did not hold yet it then provides
/// itself, at once and in the background, so an author cannot serve only some validators: the
/// ones it stalls find the others' records in time. The bytes go to a file chunk by chunk as
/// they arrive, hashed on the way ([`crate::network::blob`]); a provider announcing more than
/// `max_bytes` is refused before a byte is written.
async fn fetch_file(
    ctx: &NodeContext,
    hash: Hash,
    max_bytes: u64,
    author: Option<AccountId>,
    timeout: Duration,
) -> Result<PathBuf, FetchError> {
    let store = ctx.network.blob_store();
    if store.contains(&hash) {
        return Ok(store.path(&hash));
    }
    let me = ctx.network.local_peer();
    let mut validators: Vec<PeerId> = ctx.read(|l| {
        let state = l.state();
        let set = state.validator_set(state.height().next());
        set.map_or_else(Vec::new, |s| {
            s.validators().iter().filter_map(|v| peer_of(&v.account)).collect()
        })
    });
    // Each node walks the validators in its own order, so their first asks spread out.
    validators.sort_by_cached_key(|peer| sha256(&[me.to_bytes(), peer.to_bytes()].concat()));
    let preferred = author.as_ref().and_then(peer_of).into_iter().chain(validators).collect();
    let plan = FetchPlan {
        preferred,
        hedge_after: (timeout / HEDGES).min(HEDGE_AFTER_MAX),
        deadline: Instant::now() + timeout,
    };
    let path = ctx.network.fetch_blob(hash, max_bytes, &plan).await?;
    let network = ctx.network.clone();
    // Kademlia's query timeout bounds the wait.
    tokio::spawn(async move {
        match network.provide_blob(hash).await {
            Ok(()) => tracing::debug!(%hash, "providing a fetched blob"),
            Err(error) => tracing::warn!(%hash, %error, "could not provide a fetched blob"),
        }
    });
    Ok(path)
}

/// Runs `work` on the calling (blocking) thread inside a one-thread rayon pool, so candle's
/// parallel kernels use one core. Falls back to the global pool if no pool can be built.
fn on_one_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "crucible-compute".into())
        .build()
    {
        Ok(pool) => pool.install(work),
        Err(error) => {
            tracing::warn!(%error, "no one-thread compute pool; using the global pool");
            work()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_retry_only_after_the_retry_interval() {
        let mut a = Attempts::default();
        assert!(a.due(TaskId(1), "commit", Height(10)));
        assert!(!a.due(TaskId(1), "commit", Height(10)));
        assert!(!a.due(TaskId(1), "commit", Height(10 + RETRY_BLOCKS - 1)));
        assert!(a.due(TaskId(2), "commit", Height(11)), "another task is independent");
        assert!(a.due(TaskId(1), "reveal", Height(11)), "another step is independent");
        assert!(a.due(TaskId(1), "commit", Height(10 + RETRY_BLOCKS)));
    }

    #[test]
    fn roles_wait_while_the_last_block_is_old() {
        use consensus::genesis::{Genesis, Params};
        let genesis = Genesis {
            chain_id: "lag".into(),
            genesis_time_ms: 1_000_000,
            validators: vec![],
            balances: vec![],
            params: Params::default(),
            tasks: vec![],
        };
        let state = consensus::state::State::from_genesis(&genesis);
        let limit = (Params::default().block_interval_ms * STALE_BLOCKS).max(STALE_MIN_MS);
        assert_eq!(lagging(&state, 1_000_000), None);
        assert_eq!(lagging(&state, 1_000_000 + limit), None);
        assert_eq!(lagging(&state, 1_000_001 + limit), Some(limit + 1));
        assert_eq!(lagging(&state, 0), None, "a clock behind the chain is not lagging");
    }

    #[test]
    fn one_thread_pool_runs_the_work_on_one_thread() {
        assert_eq!(on_one_thread(rayon::current_num_threads), 1);
    }
}
