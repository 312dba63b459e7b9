//! The driver: the one loop that owns the consensus engine and the mempool, and the only writer
//! of the ledger.
//!
//! [`start`] opens the ledger (sled at `DATA_DIR/chain`), starts the network, and builds the
//! [`NodeContext`] every other runtime task shares; [`Driver::run`] then `select!`s over:
//!
//! - **network events**: gossip to validate (transactions go through the mempool, consensus
//!   messages to the engine, committed blocks to the ledger), sync requests to serve from the
//!   ledger, peers coming and going;
//! - **timers** the engine scheduled ([`Action::ScheduleTimeout`]), kept in a map by deadline;
//! - **sync answers**: blocks with their commit certificates fetched from a peer on a task of
//!   their own, committed one by one (the ledger verifies each certificate against the validator
//!   set of its height);
//! - **local submissions** ([`NodeContext::submit`]) and raw transactions from the HTTP API;
//! - a periodic tick that catches up when behind.
//!
//! A validator runs a Tendermint [`Engine`] whose write-ahead log lives at `DATA_DIR/wal`; the
//! engine (re)starts at the height after the last stored block, so a validator killed at any
//! point replays its own votes and lock from the log instead of signing anew. When the ledger
//! moves ahead of the engine (blocks arriving by gossip or sync while the engine was not ready
//! to take a certificate), the engine is restarted from its log at the new height, exactly as
//! after a crash. A trainer runs the same loop without an engine: it follows the chain by the
//! `blocks` topic and by sync.
//!
//! Time enters only as the `now` of a block header this node proposes.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consensus::bft::{Action, Engine, EngineConfig, EngineError, Event, FileWal, Message, Timeout};
use consensus::bft::{Wal, WalError};
use consensus::block::Block;
use consensus::chain::{Ledger, LedgerError, build_block};
use consensus::crypto::{Keypair, Signature};
use consensus::genesis::{Genesis, GenesisError, Params};
use consensus::storage::{SledStore, StoreError};
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Height, Nonce};
use consensus::validators::ValidatorSet;
use consensus::vote::CommitCertificate;
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::catchup::CatchUp;
use super::config::NodeConfig;
use super::context::{ChainEvent, ExternalTxs, Metrics, NodeContext, Role, Submission};
use crate::datadir::DataDir;
use crate::keystore::{self, KeystoreError};
use crate::mempool::{Mempool, MempoolLimits};
use crate::network::codec::SyncRequest;
use crate::network::config::GOSSIP_ENVELOPE_BYTES;
use crate::network::{
    self, CommittedBlock, GossipId, GossipMessage, Misbehavior, NetworkConfig, NetworkError,
    NetworkEvent, SyncError, SyncLimits, Validation,
};

/// The consensus write-ahead log's file name inside the data dir.
pub const WAL_FILE: &str = "wal";

/// Capacity of the local submissions channel.
pub const SUBMISSIONS_CAPACITY: usize = 256;

/// Capacity of the channel of transaction batches from the HTTP API.
pub const EXTERNAL_TXS_CAPACITY: usize = 64;

/// Capacity of the chain events broadcast (a slower receiver skips events, never blocks us).
pub const EVENTS_CAPACITY: usize = 1_024;

/// Most consensus messages of one height remembered as seen (the set starts over beyond it).
const SEEN_CONSENSUS_MAX: usize = 8_192;

/// How often the driver checks whether it is behind.
const TICK: Duration = Duration::from_millis(500);

/// Largest genesis file read, in bytes.
const GENESIS_BYTES_MAX: u64 = consensus::genesis::GENESIS_BYTES_MAX as u64;

/// The validator's engine: blocks, logged to a file.
type BftEngine = Engine<Block, FileWal<Block>>;

/// Why a node could not start, or why its driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeystoreError),
    /// The genesis file cannot be read or is invalid.
    #[error("genesis {path}: {reason}")]
    Genesis {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data dir's genesis differs from the one given.
    #[error(
        "{given} (hash {given_hash}) is not the genesis this data dir was initialized with ({stored}, hash {stored_hash}); use another data dir"
    )]
    GenesisMismatch {
        /// The genesis given.
        given: PathBuf,
        /// Its hash.
        given_hash: String,
        /// The data dir's copy.
        stored: PathBuf,
        /// Its hash.
        stored_hash: String,
    },
    /// The node runs as a validator but its key is not in the genesis validator set.
    #[error(
        "account {account} is not a validator of chain {chain}; run with --role trainer or use a validator's data dir"
    )]
    NotAValidator {
        /// The node's account.
        account: String,
        /// The chain.
        chain: String,
    },
    /// The data dir could not be written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The chain store could not be opened.
    #[error("chain store: {0}")]
    Store(#[from] StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The consensus write-ahead log failed (a validator that cannot log must not sign).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The ledger holds no validator set for a height it should.
    #[error("the ledger knows no validator set for height {0}")]
    NoValidatorSet(Height),
}

/// Reads, checks and (on first start) copies the genesis: `given` if set, else the data dir's.
pub fn load_genesis(
    data_dir: &DataDir,
    given: Option<&std::path::Path>,
) -> Result<Genesis, DriverError> {
    let read = |path: &std::path::Path| -> Result<(String, Genesis), DriverError> {
        let fail = |reason: String| DriverError::Genesis { path: path.to_path_buf(), reason };
        let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
        if len > GENESIS_BYTES_MAX {
            return Err(fail(format!("{len} bytes, over the limit of {GENESIS_BYTES_MAX}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let genesis = Genesis::from_json(&text).map_err(|e: GenesisError| fail(e.to_string()))?;
        Ok((text, genesis))
    };
    let stored = data_dir.genesis();
    match given {
        Some(path) => {
            let (text, genesis) = read(path)?;
            if stored.is_file() {
                let (_, existing) = read(&stored)?;
                if existing.hash() != genesis.hash() {
                    return Err(DriverError::GenesisMismatch {
                        given: path.to_path_buf(),
                        given_hash: genesis.hash().to_hex(),
                        stored: stored.clone(),
                        stored_hash: existing.hash().to_hex(),
                    });
                }
            } else {
                std::fs::write(&stored, text).map_err(|source| DriverError::Io {
                    action: "write",
                    path: stored.clone(),
                    source,
                })?;
            }
            Ok(genesis)
        }
        None => read(&stored).map(|(_, genesis)| genesis),
    }
}

/// The engine's timing and value bound, from the chain's parameters (the same on every
/// validator): a value is at most one gossip message, the block limit and its envelope.
pub fn engine_config(params: &Params) -> EngineConfig {
    EngineConfig {
        timeout_propose_ms: params.timeout_propose_ms,
        timeout_prevote_ms: params.timeout_prevote_ms,
        timeout_precommit_ms: params.timeout_precommit_ms,
        timeout_delta_ms: params.timeout_delta_ms,
        block_interval_ms: params.block_interval_ms,
        value_bytes_max: params.max_block_bytes.saturating_add(GOSSIP_ENVELOPE_BYTES as u64),
    }
}

/// Opens the node's ledger and network and builds its context; run the returned [`Driver`] to
/// make it a peer. Call inside a tokio runtime: the network's event loop is spawned here.
pub async fn start(config: &NodeConfig) -> Result<(NodeContext, Driver), DriverError> {
    let data_dir = DataDir::new(&config.data_dir);
    let key = keystore::load(data_dir.root())?;
    let genesis = load_genesis(&data_dir, config.genesis.as_deref())?;
    if config.role == Role::Validator && !genesis.validator_set().contains(&key.account()) {
        return Err(DriverError::NotAValidator {
            account: key.account().to_hex(),
            chain: genesis.chain_id.clone(),
        });
    }
    let store = SledStore::open(&data_dir.chain())?;
    let ledger = Ledger::open(Box::new(store), &genesis)?;
    let mempool = Mempool::new(ledger.state(), MempoolLimits::for_chain(&genesis.params));
    let mut net = NetworkConfig::for_chain(
        &genesis.chain_id,
        genesis.hash(),
        &genesis.params,
        data_dir.blobs(),
    );
    net.listen = config.listen.clone();
    net.bootstrap = config.bootstrap.clone();
    net.mdns = config.mdns;
    net.connections.reserved = network::reserved_peers(&genesis);
    net.mempool_full = mempool.full_flag();
    let sync_limits = net.sync.clone();
    let (client, network_events, event_loop) =
        network::start(keystore::libp2p_keypair(&key)?, net)?;
    tokio::spawn(event_loop.run());

    let engine = match config.role {
        Role::Validator => {
            let wal = FileWal::open(data_dir.root().join(WAL_FILE))?;
            let signer = Keypair::from_seed(key.secret_bytes());
            Some(Engine::new(engine_config(&genesis.params), genesis.chain_id.clone(), signer, wal))
        }
        Role::Trainer => None,
    };
    let (submissions_tx, submissions) = mpsc::channel(SUBMISSIONS_CAPACITY);
    let (external_tx, external_txs) = mpsc::channel(EXTERNAL_TXS_CAPACITY);
    let (events, _) = broadcast::channel(EVENTS_CAPACITY);
    let ctx = NodeContext {
        genesis: Arc::new(genesis),
        key: Arc::new(key),
        role: config.role,
        data_dir,
        ledger: Arc::new(RwLock::new(ledger)),
        network: client,
        submissions: submissions_tx,
        external_txs: external_tx,
        events,
        metrics: Arc::new(Metrics::default()),
        live_votes: Arc::default(),
        mempool_full: mempool.full_flag(),
    };
    let (sync_tx, sync_rx) = mpsc::channel(1);
    let driver = Driver {
        ctx: ctx.clone(),
        engine,
        mempool,
        network_events,
        submissions,
        external_txs,
        timers: BTreeMap::new(),
        timer_seq: 0,
        sync_limits,
        peers: Vec::new(),
        next_peer: 0,
        sync_in_flight: false,
        sync_tx,
        sync_rx,
        catch_up: CatchUp::default(),
        seen_consensus: HashSet::new(),
        seen_height: Height(0),
        catching_up: false,
    };
    Ok((ctx, driver))
}

/// The answer of one sync request.
struct SyncOutcome {
    peer: PeerId,
    asked: u32,
    result: Result<Vec<CommittedBlock>, SyncError>,
}

/// The node's main loop; see the module docs.
pub struct Driver {
    ctx: NodeContext,
    engine: Option<BftEngine>,
    mempool: Mempool,
    network_events: mpsc::Receiver<NetworkEvent>,
    submissions: mpsc::Receiver<Submission>,
    external_txs: mpsc::Receiver<ExternalTxs>,
    /// Engine timers by (deadline, sequence number).
    timers: BTreeMap<(Instant, u64), Timeout>,
    timer_seq: u64,
    sync_limits: SyncLimits,
    /// Peers that passed the chain handshake, in connection order.
    peers: Vec<PeerId>,
    next_peer: usize,
    sync_in_flight: bool,
    sync_tx: mpsc::Sender<SyncOutcome>,
    sync_rx: mpsc::Receiver<SyncOutcome>,
    /// How far behind the ledger is, as far as evidence it can weigh shows.
    catch_up: CatchUp,
    /// Signatures of the consensus messages of height `seen_height` already given to the engine:
    /// one heard again (a peer's rebroadcast) is not relayed further.
    seen_consensus: HashSet<Signature>,
    seen_height: Height,
    /// Committing blocks from peers: don't gossip them again.
    catching_up: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Driver({:?})", self.ctx)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Driver {
    /// Runs the node until `shutdown` completes or a fatal error (the ledger or the write-ahead
    /// log failing). Every block and vote is durable when written, so stopping needs no flush.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DriverError> {
        tokio::pin!(shutdown);
        let actions = self.restart_engine()?;
        self.execute(actions).await?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let next_timer = self.timers.first_key_value().map(|((at, _), _)| *at);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = sleep_until(next_timer) => self.fire_timers().await?,
                Some(event) = self.network_events.recv() => self.on_network(event).await?,
                Some(outcome) = self.sync_rx.recv() => self.on_sync(outcome).await?,
                Some(submission) = self.submissions.recv() => {
                    let result = self.submit_local(submission.kind).await;
                    let _ = submission.admitted.send(result);
                }
                Some(batch) = self.external_txs.recv() => {
                    let results = self.admit(batch.txs).await;
                    let _ = batch.admitted.send(results);
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
        tracing::info!(height = %self.ledger_height(), "driver stopped");
        Ok(())
    }

    fn ledger_height(&self) -> Height {
        self.ctx.read(Ledger::height)
    }

    fn validators_at(&self, height: Height) -> Result<ValidatorSet, DriverError> {
        self.ctx
            .read(|l| l.state().validator_set(height).cloned())
            .ok_or(DriverError::NoValidatorSet(height))
    }

    /// (Re)starts the engine at the height after the last stored block, from its log.
    fn restart_engine(&mut self) -> Result<Vec<Action<Block>>, DriverError> {
        let Some(old) = self.engine.take() else { return Ok(Vec::new()) };
        let mut wal = old.into_wal();
        let height = self.ledger_height().next();
        let validators = self.validators_at(height)?;
        wal.start_height(height)?;
        let genesis = &self.ctx.genesis;
        let signer = Keypair::from_seed(self.ctx.key.secret_bytes());
        let mut engine =
            Engine::new(engine_config(&genesis.params), genesis.chain_id.clone(), signer, wal);
        let actions = engine.start(height, validators)?;
        self.engine = Some(engine);
        self.timers.clear();
        tracing::debug!(%height, "consensus engine started");
        Ok(actions)
    }

    /// Feeds an event to the engine and carries out what it asks, and what that leads to.
    async fn feed(&mut self, event: Event<Block>) -> Result<(), DriverError> {
        let Some(engine) = self.engine.as_mut() else { return Ok(()) };
        let actions = engine.handle(event)?;
        self.execute(actions).await
    }

    /// Carries out actions in order; the events they produce go back to the engine, whose
    /// actions join the queue.
    async fn execute(&mut self, actions: Vec<Action<Block>>) -> Result<(), DriverError> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            if let Some(event) = self.perform(action).await?
                && let Some(engine) = self.engine.as_mut()
            {
                queue.extend(engine.handle(event)?);
            }
        }
        Ok(())
    }

    async fn perform(
        &mut self,
        action: Action<Block>,
    ) -> Result<Option<Event<Block>>, DriverError> {
        match action {
            Action::Broadcast(message) => {
                if let Message::Vote(vote) = &message {
                    self.ctx.live_votes.record(vote.validator, vote.vote);
                }
                if let Err(error) = self.ctx.network.publish_consensus(&message).await {
                    tracing::debug!(%error, "consensus message not sent");
                }
                Ok(None)
            }
            Action::ScheduleTimeout(timeout) => {
                let at = Instant::now() + Duration::from_millis(timeout.duration_ms);
                self.timer_seq += 1;
                self.timers.insert((at, self.timer_seq), timeout);
                Ok(None)
            }
            Action::BuildBlock { height, round } => {
                Ok(self.build(height).map(|block| Event::BlockBuilt { height, round, block }))
            }
            Action::ValidateBlock { height, block } => {
                let valid = self.ctx.read(|l| {
                    l.height().next() == height
                        && l.check_block(&block)
                            .inspect_err(|error| {
                                tracing::warn!(%height, %error, "proposed block is invalid")
                            })
                            .is_ok()
                });
                Ok(Some(Event::BlockValidated { height, block: block.hash(), valid }))
            }
            Action::Commit { block, certificate } => {
                let height = block.height();
                match self.commit(block, certificate) {
                    Ok(true) => {
                        let next_validators = self.validators_at(height.next())?;
                        Ok(Some(Event::BlockApplied { height, next_validators }))
                    }
                    Ok(false) => Ok(None),
                    Err(DriverError::Ledger(error @ LedgerError::Block(_))) => {
                        self.halt(height, &error);
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            }
            Action::RequestCommit { height, vouched } => {
                if vouched {
                    // More than a third of the power is past `height`: it is committed.
                    self.catch_up.committed(height);
                }
                self.maybe_sync(None);
                Ok(None)
            }
            Action::EvidenceFound { a, b } => {
                tracing::warn!(validator = %a.validator, height = %a.vote.height, "equivocation seen; submitting evidence");
                if let Err(error) = self.submit_local(TxKind::Evidence { a, b }).await {
                    tracing::warn!(%error, "evidence not admitted");
                }
                Ok(None)
            }
        }
    }

    /// Consensus decided a block at `height` that this ledger refuses. Honest validators never
    /// do (a block's body is checked against its header wherever it enters, and each is validated
    /// before any vote for it), so this means more than a third of the stake is faulty or the
    /// ledger is not deterministic. The engine stops at this height: restarting would decide the
    /// same block again, so the node stays up, serving what it has, and says why once, loudly.
    fn halt(&mut self, height: Height, error: &LedgerError) {
        tracing::error!(
            %height,
            %error,
            "consensus decided a block this ledger refuses; this validator stops voting at this \
             height. Either more than a third of the stake is faulty or ledgers disagree: compare \
             `node ledger verify` across nodes before restarting"
        );
        self.engine = None;
        self.timers.clear();
    }

    /// Builds the block this node proposes at `height` from the mempool.
    fn build(&self, height: Height) -> Option<Block> {
        let params = &self.ctx.genesis.params;
        let txs = self.mempool.batch(
            params.max_block_txs as usize,
            usize::try_from(params.max_block_bytes).unwrap_or(usize::MAX),
        );
        let proposer = self.ctx.key.account();
        let built = self.ctx.read(|l| {
            if l.height().next() != height {
                return None;
            }
            let last_commit = match height.0 {
                1 => None,
                _ => match l.commit(l.height()) {
                    Ok(Some(cert)) => Some(cert),
                    Ok(None) | Err(_) => return None,
                },
            };
            Some(build_block(l.state(), txs, now_ms(), proposer, last_commit))
        });
        match built {
            Some(Ok(block)) => Some(block),
            Some(Err(error)) => {
                tracing::warn!(%height, %error, "cannot build a block");
                None
            }
            None => None,
        }
    }

    /// Commits the ledger's next block with its certificate (verified by the ledger), then
    /// updates the mempool, metrics and subscribers. Returns `false` for a block that is not the
    /// next one. A block the ledger refuses is an error only for the caller to judge.
    fn try_commit(&mut self, block: &Block, cert: &CommitCertificate) -> Result<bool, LedgerError> {
        let height = block.height();
        {
            let mut ledger =
                self.ctx.ledger.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if ledger.height().next() != height {
                return Ok(false);
            }
            ledger.commit_block(block, cert)?;
        }
        if let Ok(set) = self.validators_at(height.next()) {
            self.catch_up.advance(height, &set);
        }
        let root = self.ctx.read(|l| {
            self.mempool.block_committed(l.state(), &block.txs);
            l.state_root()
        });
        let metrics = &self.ctx.metrics;
        Metrics::add(&metrics.blocks_committed, 1);
        Metrics::set(&metrics.mempool_txs, self.mempool.len() as u64);
        let hash = block.hash();
        tracing::info!(
            height = height.0,
            hash = %hash.to_hex(),
            state_root = %root.to_hex(),
            txs = block.txs.len(),
            proposer = %block.header.proposer.to_hex(),
            "committed block"
        );
        let _ = self.ctx.events.send(ChainEvent::BlockCommitted {
            height,
            hash,
            time_ms: block.header.time_ms,
            txs: block.txs.len(),
        });
        Ok(true)
    }

    /// Commits a block the engine decided and gossips it on the `blocks` topic.
    fn commit(
        &mut self,
        block: Block,
        certificate: CommitCertificate,
    ) -> Result<bool, DriverError> {
        if !self.try_commit(&block, &certificate)? {
            return Ok(false);
        }
        if !self.catching_up {
            let network = self.ctx.network.clone();
            let committed = CommittedBlock { block, commit: certificate };
            tokio::spawn(async move {
                if let Err(error) = network.publish_block(&committed).await {
                    tracing::debug!(%error, "committed block not gossiped");
                }
            });
        }
        Ok(true)
    }

    /// Takes a committed block from a peer (gossip or sync): through the engine when it is at
    /// that height, else straight into the ledger, restarting the engine at the new height.
    /// Returns whether it was committed, or why the ledger refused it.
    async fn catch_up(&mut self, committed: CommittedBlock) -> Result<bool, CatchUpError> {
        let height = committed.height();
        if self.ledger_height().next() != height {
            return Ok(false);
        }
        self.catching_up = true;
        let result = self.catch_up_inner(committed).await;
        self.catching_up = false;
        result
    }

    async fn catch_up_inner(&mut self, committed: CommittedBlock) -> Result<bool, CatchUpError> {
        let height = committed.height();
        if let Some(engine) = self.engine.as_mut()
            && engine.height() == height
        {
            let actions = engine
                .handle(Event::CommitReceived {
                    block: committed.block.clone(),
                    certificate: committed.commit.clone(),
                })
                .map_err(DriverError::from)?;
            let decided = actions.iter().any(|a| matches!(a, Action::Commit { .. }));
            self.execute(actions).await?;
            if decided {
                return Ok(true);
            }
        }
        let applied =
            self.try_commit(&committed.block, &committed.commit).map_err(|e| match e {
                LedgerError::Block(_) | LedgerError::Certificate(_) => CatchUpError::Refused(e),
                other => CatchUpError::Fatal(other.into()),
            })?;
        if !applied {
            return Ok(false);
        }
        let actions = self.restart_engine()?;
        self.execute(actions).await?;
        Ok(true)
    }

    async fn fire_timers(&mut self) -> Result<(), DriverError> {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timeout = entry.remove();
            self.feed(Event::TimeoutFired(timeout)).await?;
        }
        Ok(())
    }

    async fn on_network(&mut self, event: NetworkEvent) -> Result<(), DriverError> {
        match event {
            NetworkEvent::Listening { address } => {
                tracing::info!("listening on {address}/p2p/{}", self.ctx.network.local_peer());
            }
            NetworkEvent::PeerConnected { peer, .. } => {
                if !self.peers.contains(&peer) {
                    self.peers.push(peer);
                }
                Metrics::set(&self.ctx.metrics.peers, self.peers.len() as u64);
                // A peer may be ahead: ask it (an empty answer costs one round trip).
                self.maybe_sync(Some(peer));
            }
            NetworkEvent::PeerDisconnected { peer } => {
                self.peers.retain(|p| *p != peer);
                Metrics::set(&self.ctx.metrics.peers, self.peers.len() as u64);
            }
            NetworkEvent::GossipReceived { id, message } => self.on_gossip(id, message).await?,
            NetworkEvent::SyncRequested { request, responder, .. } => {
                let response =
                    self.ctx.read(|l| network::sync::serve(l, &request, &self.sync_limits));
                if let Err(error) = self.ctx.network.respond_sync(responder, response).await {
                    tracing::debug!(%error, "sync answer not sent");
                }
            }
            NetworkEvent::PeerDiscovered { .. }
            | NetworkEvent::PeerRefused { .. }
            | NetworkEvent::PeerPenalized { .. }
            | NetworkEvent::GossipRejected { .. } => {}
        }
        Ok(())
    }

    async fn on_gossip(&mut self, id: GossipId, message: GossipMessage) -> Result<(), DriverError> {
        let source = id.source;
        let validation = match message {
            GossipMessage::Txs(txs) => {
                // Relayed if any of it is news here; answered Reject only for a tx bad in itself.
                let mut validation = Validation::Ignore;
                for tx in txs {
                    match self.mempool.insert(tx) {
                        Ok(_) => validation = Validation::Accept,
                        Err(error) if error.validation() == Validation::Reject => {
                            validation = Validation::Reject;
                            break;
                        }
                        Err(_) => {}
                    }
                }
                Metrics::set(&self.ctx.metrics.mempool_txs, self.mempool.len() as u64);
                validation
            }
            GossipMessage::Consensus(message) => {
                let next = self.ledger_height().next();
                let set = self.validators_at(next)?;
                let mut validation =
                    self.catch_up.admit(message.signer(), message.height(), next, &set);
                if validation == Validation::Accept && message.height() == next {
                    if self.seen_before(&message, next) {
                        validation = Validation::Ignore;
                    } else if let Message::Vote(vote) = message.as_ref() {
                        self.ctx.live_votes.record(vote.validator, vote.vote);
                    }
                }
                // Answer first: the message is forwarded while the engine works on it.
                self.validate(id, validation).await;
                self.sync_if_behind(Some(source));
                // Far-future messages of validators are not relayed, but the engine counts them
                // towards the height more than a third of the power has shown.
                let far = validation == Validation::Ignore && message.height() > next.next();
                if validation == Validation::Accept || far {
                    self.feed(Event::MessageReceived(*message)).await?;
                }
                return Ok(());
            }
            GossipMessage::Block(committed) => {
                let height = committed.height();
                if height <= self.ledger_height() {
                    Validation::Ignore
                } else if height > self.ledger_height().next() {
                    // Cannot check it in full yet; if more than a third of the power signed its
                    // certificate, sync fetches the blocks before it.
                    let set = self.validators_at(self.ledger_height().next())?;
                    self.catch_up.certificate(&committed.commit, &set);
                    self.sync_if_behind(Some(source));
                    Validation::Ignore
                } else {
                    match self.catch_up(*committed).await {
                        Ok(true) => Validation::Accept,
                        Ok(false) => Validation::Ignore,
                        Err(CatchUpError::Refused(error)) => {
                            tracing::warn!(%source, %height, %error, "rejecting a committed block");
                            Validation::Reject
                        }
                        Err(CatchUpError::Fatal(error)) => return Err(error),
                    }
                }
            }
        };
        self.validate(id, validation).await;
        Ok(())
    }

    async fn validate(&self, id: GossipId, validation: Validation) {
        if let Err(error) = self.ctx.network.validate(id, validation).await {
            tracing::debug!(%error, "gossip validation not delivered");
        }
    }

    /// Whether the engine was given this message of height `next` (the one in progress) before;
    /// remembers it if not. Messages of later heights are not remembered: the engine may not hold
    /// them yet.
    fn seen_before(&mut self, message: &Message<Block>, next: Height) -> bool {
        if self.seen_height != next || self.seen_consensus.len() >= SEEN_CONSENSUS_MAX {
            self.seen_consensus.clear();
            self.seen_height = next;
        }
        let signature = match message {
            Message::Proposal { proposal, .. } => proposal.signature,
            Message::Vote(vote) => vote.signature,
        };
        !self.seen_consensus.insert(signature)
    }

    /// The highest height known to be committed ([`CatchUp::target`]).
    fn sync_target(&self) -> Height {
        let ledger = self.ledger_height();
        match self.validators_at(ledger.next()) {
            Ok(set) => self.catch_up.target(ledger, &set),
            Err(_) => ledger,
        }
    }

    /// Catches up at once when two or more blocks behind (one block behind is the usual gossip
    /// lag, which the tick catches if it persists), preferring the peer that showed it.
    fn sync_if_behind(&mut self, prefer: Option<PeerId>) {
        if self.sync_target().0 >= self.ledger_height().0.saturating_add(2) {
            self.maybe_sync(prefer);
        }
    }

    /// Asks a peer for the blocks after the ledger's, unless a request is in flight.
    fn maybe_sync(&mut self, prefer: Option<PeerId>) {
        if self.sync_in_flight || self.peers.is_empty() {
            return;
        }
        let peer = match prefer.filter(|p| self.peers.contains(p)) {
            Some(peer) => peer,
            None => {
                self.next_peer = (self.next_peer + 1) % self.peers.len();
                self.peers[self.next_peer]
            }
        };
        let from = self.ledger_height().next();
        let asked = self.sync_limits.blocks_max;
        let network = self.ctx.network.clone();
        let answers = self.sync_tx.clone();
        self.sync_in_flight = true;
        tokio::spawn(async move {
            let result = network.request_sync(peer, SyncRequest { from, count: asked }).await;
            let _ = answers.send(SyncOutcome { peer, asked, result }).await;
        });
    }

    async fn on_sync(&mut self, outcome: SyncOutcome) -> Result<(), DriverError> {
        self.sync_in_flight = false;
        let blocks = match outcome.result {
            Ok(blocks) => blocks,
            Err(error) => {
                tracing::debug!(peer = %outcome.peer, %error, "sync request failed");
                return Ok(());
            }
        };
        let full = blocks.len() == outcome.asked as usize;
        let mut applied = 0usize;
        for committed in blocks {
            let height = committed.height();
            match self.catch_up(committed).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(CatchUpError::Refused(error)) => {
                    tracing::warn!(peer = %outcome.peer, %height, %error, "a synced block was refused");
                    self.ctx.network.penalize(outcome.peer, Misbehavior::BadResponse).await.ok();
                    return Ok(());
                }
                Err(CatchUpError::Fatal(error)) => return Err(error),
            }
        }
        if applied > 0 {
            tracing::info!(peer = %outcome.peer, applied, height = %self.ledger_height(), "caught up by sync");
        }
        if applied > 0 && (full || self.sync_target() > self.ledger_height()) {
            self.maybe_sync(Some(outcome.peer));
        }
        Ok(())
    }

    async fn on_tick(&mut self) {
        if self.sync_target() > self.ledger_height() {
            self.maybe_sync(None);
        }
    }

    /// Signs `kind` with the node key and its next nonce, admits it and gossips it.
    async fn submit_local(&mut self, kind: TxKind) -> Result<SignedTx, String> {
        let me = self.ctx.key.account();
        let committed: Nonce = self.ctx.read(|l| l.state().account(&me).nonce);
        let nonce = committed.max(self.mempool.next_nonce(&me));
        let tx = Tx { chain_id: self.ctx.genesis.chain_id.clone(), nonce, kind };
        let signed = SignedTx::sign(&self.ctx.key, tx);
        let mut results = self.admit(vec![signed.clone()]).await;
        results.pop().unwrap_or(Ok(())).map(|()| signed)
    }

    /// Admits signed transactions to the mempool in order and hands the admitted ones to the
    /// network to gossip as batches; answers each one's admission.
    async fn admit(&mut self, txs: Vec<SignedTx>) -> Vec<Result<(), String>> {
        let mut admitted = Vec::with_capacity(txs.len());
        let results = txs
            .into_iter()
            .map(|tx| {
                self.mempool.insert(tx.clone()).map_err(|e| e.to_string())?;
                admitted.push(tx);
                Ok(())
            })
            .collect();
        Metrics::set(&self.ctx.metrics.mempool_txs, self.mempool.len() as u64);
        if let Err(error) = self.ctx.network.publish_txs(&admitted).await {
            tracing::warn!(%error, "admitted transactions cannot be gossiped");
        }
        results
    }
}

/// Why a block from a peer was not committed.
#[derive(Debug)]
enum CatchUpError {
    /// The ledger refused it (bad certificate, invalid block): the peer's fault.
    Refused(LedgerError),
    /// The node failed.
    Fatal(DriverError),
}

impl From<DriverError> for CatchUpError {
    fn from(error: DriverError) -> Self {
        CatchUpError::Fatal(error)
    }
}
