//! The driver: the one loop that owns the consensus engine and the mempool, and the only writer
//! of the ledger.
//!
//! [`start`](super::startup::start) builds it; [`Driver::run`] then `select!`s over:
//!
//! - **network events**: gossip to validate (transactions go through the mempool, consensus
//!   messages to the engine, committed blocks to the ledger), sync requests to serve from the
//!   ledger, peers coming and going;
//! - **timers** the engine scheduled ([`Action::ScheduleTimeout`]), kept in a map by deadline;
//! - **sync answers**: blocks with their commit certificates fetched from a peer on a task of
//!   their own, committed one by one (the ledger verifies each certificate against the validator
//!   set of its height); which peer is asked, and when, is the [`SyncBook`]'s to decide;
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
//!
//! Blocks from peers go in through `peer_blocks`; transactions, and the block this node
//! proposes, through `txs`.

mod peer_blocks;
mod txs;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use consensus::bft::{Action, Engine, Event, FileWal, Message, Timeout, Wal};
use consensus::block::Block;
use consensus::chain::{Ledger, LedgerError};
use consensus::crypto::{Keypair, Signature};
use consensus::tx::TxKind;
use consensus::types::Height;
use consensus::validators::ValidatorSet;
use consensus::vote::CommitCertificate;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::catchup::CatchUp;
use super::context::{ChainEvent, ExternalTxs, Metrics, NodeContext, Submission};
use super::error::DriverError;
use super::startup::engine_config;
use super::sync::{Ask, SyncBook};
use crate::mempool::Mempool;
use crate::network::{
    self, CommittedBlock, GossipId, GossipMessage, Misbehavior, NetworkEvent, SyncError,
    SyncLimits, Validation,
};
use peer_blocks::CatchUpError;

/// Most consensus messages of one height remembered as seen (the set starts over beyond it).
const SEEN_CONSENSUS_MAX: usize = 8_192;

/// How often the driver checks whether it is behind.
const TICK: Duration = Duration::from_millis(500);

/// The validator's engine: blocks, logged to a file.
type BftEngine = Engine<Block, FileWal<Block>>;

/// The answer of one sync request.
struct SyncOutcome {
    ask: Ask,
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
    /// Whom to ask for blocks, and when.
    sync: SyncBook,
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

impl Driver {
    /// A driver of the node `ctx` with no peers yet, serving and asking for at most
    /// `sync_limits.blocks_max` blocks per sync request; `engine` for a validator.
    pub(super) fn new(
        ctx: NodeContext,
        engine: Option<BftEngine>,
        mempool: Mempool,
        network_events: mpsc::Receiver<NetworkEvent>,
        submissions: mpsc::Receiver<Submission>,
        external_txs: mpsc::Receiver<ExternalTxs>,
        sync_limits: SyncLimits,
    ) -> Self {
        let (sync_tx, sync_rx) = mpsc::channel(1);
        Driver {
            ctx,
            engine,
            mempool,
            network_events,
            submissions,
            external_txs,
            timers: BTreeMap::new(),
            timer_seq: 0,
            sync: SyncBook::new(sync_limits.blocks_max),
            sync_limits,
            sync_tx,
            sync_rx,
            catch_up: CatchUp::default(),
            seen_consensus: HashSet::new(),
            seen_height: Height(0),
            catching_up: false,
        }
    }

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
        let config = engine_config(&genesis.params);
        let verifier = self.ctx.verifier.clone();
        let mut engine = Engine::new(config, genesis.chain_id.clone(), signer, wal, verifier);
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
                let ask = self.sync.ask(None, self.ledger_height());
                self.request_sync(ask);
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
                let peer = self.ctx.network.local_peer();
                // A relayed listen address already ends in this node's peer id.
                tracing::info!("listening on {}", address.with_p2p(peer).unwrap_or_else(|a| a));
            }
            NetworkEvent::PeerConnected { peer, .. } => {
                let ask = self.sync.connected(peer, self.ledger_height());
                Metrics::set(&self.ctx.metrics.peers, self.sync.peers() as u64);
                self.request_sync(ask);
            }
            NetworkEvent::PeerDisconnected { peer } => {
                self.sync.disconnected(peer);
                Metrics::set(&self.ctx.metrics.peers, self.sync.peers() as u64);
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
                self.sync_if_behind(source);
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
                    self.sync_if_behind(source);
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

    /// Syncs at once, from `source` first, if gossip from it showed the node far enough behind
    /// ([`SyncBook::shown_ahead`]).
    fn sync_if_behind(&mut self, source: PeerId) {
        let ask = self.sync.shown_ahead(source, self.ledger_height(), self.sync_target());
        self.request_sync(ask);
    }

    /// Sends the request the [`SyncBook`] decided on, if any, on a task of its own; the answer
    /// comes back through `sync_rx`.
    fn request_sync(&self, ask: Option<Ask>) {
        let Some(ask) = ask else { return };
        let network = self.ctx.network.clone();
        let answers = self.sync_tx.clone();
        tokio::spawn(async move {
            let result = network.request_sync(ask.peer, ask.request).await;
            let _ = answers.send(SyncOutcome { ask, result }).await;
        });
    }

    async fn on_sync(&mut self, outcome: SyncOutcome) -> Result<(), DriverError> {
        self.sync.answered();
        let peer = outcome.ask.peer;
        let blocks = match outcome.result {
            Ok(blocks) => blocks,
            Err(error) => {
                tracing::debug!(%peer, %error, "sync request failed");
                return Ok(());
            }
        };
        let received = blocks.len();
        let mut applied = 0usize;
        for committed in blocks {
            let height = committed.height();
            match self.catch_up(committed).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(CatchUpError::Refused(error)) => {
                    tracing::warn!(%peer, %height, %error, "a synced block was refused");
                    self.ctx.network.penalize(peer, Misbehavior::BadResponse).await.ok();
                    return Ok(());
                }
                Err(CatchUpError::Fatal(error)) => return Err(error),
            }
        }
        if applied > 0 {
            tracing::info!(%peer, applied, height = %self.ledger_height(), "caught up by sync");
        }
        let (ledger, target) = (self.ledger_height(), self.sync_target());
        let ask = self.sync.applied(outcome.ask, received, applied, ledger, target);
        self.request_sync(ask);
        Ok(())
    }

    async fn on_tick(&mut self) {
        let ask = self.sync.tick(self.ledger_height(), self.sync_target());
        self.request_sync(ask);
    }
}
