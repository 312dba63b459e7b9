//! The actor that owns the swarm: it `select!`s over swarm events and commands, keeps the maps of
//! pending requests and queries, and turns what peers send into [`NetworkEvent`]s.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use consensus::types::{AccountId, Hash};
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, identify, kad, mdns, relay};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent, GRAYLIST_THRESHOLD};
use super::client::{Command, RequestError};
use super::codec::{BlobRequest, BlobResponse, SyncResponse};
use super::config::NetworkConfig;
use super::gossip::{Topic, Validation, check_stateless};
use super::handshake::{self, HandshakeError, Status, StatusResponse};
use super::reach::{Reach, Reachability};
use super::sync::SyncResponder;
use super::throttle::SyncThrottle;
use super::{GossipId, Misbehavior, NetworkError, NetworkEvent, PeerInfo};
use crate::blobs::{BlobStore, BlobStoreError};
use crate::keystore::account_of;

/// Most banned peers remembered; the oldest ban is forgotten first beyond it.
const BANNED_MAX: usize = 4_096;

/// Most gossip messages kept while no peer is subscribed to their topic; the oldest is dropped
/// first beyond it.
const UNSENT_MAX: usize = 4_096;

/// How long a peer refused in answer to its status request keeps its connection, so it can read
/// the refusal: closing at once may drop the answer's last frames.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Most Identify listen addresses kept for a peer until it passes the handshake.
const UNVERIFIED_ADDRS_MAX: usize = 32;

/// Most provider queries and provide operations pending at once.
const KAD_PENDING_MAX: usize = 256;

type Reply<T> = oneshot::Sender<T>;

/// A blob chunk read on a blocking thread, ready to be sent.
struct Served {
    channel: ResponseChannel<BlobResponse>,
    response: BlobResponse,
}

/// The swarm's actor; see the module docs of [`super`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    served_tx: mpsc::Sender<Served>,
    served_rx: mpsc::Receiver<Served>,
    serving: usize,
    store: BlobStore,
    config: NetworkConfig,
    /// What this node says it is in the handshake.
    status: Status,
    /// Peers that passed the handshake, with their accounts.
    verified: HashMap<PeerId, Option<AccountId>>,
    /// Our status requests in flight, by the peer asked.
    status_asked: HashMap<OutboundRequestId, PeerId>,
    /// Peers refused in answer to their status request: banned once the refusal is sent.
    refusing: HashMap<InboundRequestId, (PeerId, HandshakeError)>,
    /// Refused peers whose connections close once their refusal had time to arrive, oldest first.
    hangups: VecDeque<(tokio::time::Instant, PeerId)>,
    /// Listen addresses of connected peers that have not passed the handshake yet.
    unverified_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers refused or misbehaving, until the instant their ban ends.
    banned: HashMap<PeerId, Instant>,
    /// Application scores lowered by [`Misbehavior`].
    app_scores: HashMap<PeerId, f64>,
    pending_sync: HashMap<OutboundRequestId, Reply<Result<SyncResponse, RequestError>>>,
    pending_blob: HashMap<OutboundRequestId, Reply<Result<BlobResponse, RequestError>>>,
    pending_providers: HashMap<kad::QueryId, ProviderQuery>,
    pending_provide: HashMap<kad::QueryId, Reply<Result<(), NetworkError>>>,
    /// Sync requests being answered, by the peer that asked.
    sync_serving: HashMap<InboundRequestId, PeerId>,
    sync_throttle: SyncThrottle,
    /// Messages handed over with [`Command::Gossip`] that no peer could take yet.
    unsent: VecDeque<(Topic, Vec<u8>)>,
    /// Connections, reachability and relays.
    reach: Reach,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetworkEvent>,
        store: BlobStore,
        config: NetworkConfig,
    ) -> EventLoop {
        let (served_tx, served_rx) = mpsc::channel(config.blob.serving_max);
        let sync_throttle = SyncThrottle::new(config.sync_serving.clone());
        EventLoop {
            status: config.status(),
            swarm,
            commands,
            events,
            served_tx,
            served_rx,
            serving: 0,
            store,
            config,
            verified: HashMap::new(),
            status_asked: HashMap::new(),
            refusing: HashMap::new(),
            hangups: VecDeque::new(),
            unverified_addrs: HashMap::new(),
            banned: HashMap::new(),
            app_scores: HashMap::new(),
            pending_sync: HashMap::new(),
            pending_blob: HashMap::new(),
            pending_providers: HashMap::new(),
            pending_provide: HashMap::new(),
            sync_serving: HashMap::new(),
            sync_throttle,
            unsent: VecDeque::new(),
            reach: Reach::default(),
        }
    }

    /// Runs the node's network until every [`super::NetworkClient`] is dropped.
    pub async fn run(mut self) {
        if self.config.behind_nat {
            self.on_reachability(Reachability::Private);
        }
        self.dial_bootstrap();
        loop {
            let hangup = self.hangups.front().map(|(at, _)| *at);
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = tokio::time::sleep_until(hangup.unwrap_or_else(tokio::time::Instant::now)),
                    if hangup.is_some() => self.hang_up_due(),
                Some(served) = self.served_rx.recv() => {
                    self.serving -= 1;
                    if self.swarm.behaviour_mut().blob.send_response(served.channel, served.response).is_err() {
                        tracing::debug!("a blob chunk's requester went away before the answer");
                    }
                }
            }
        }
        tracing::info!("network event loop stopped: every client is gone");
    }

    fn dial_bootstrap(&mut self) {
        for address in self.config.bootstrap.clone() {
            if let Some((peer, bare)) = split_peer(&address) {
                self.swarm.behaviour_mut().kad.add_address(&peer, bare);
            }
            if let Err(error) = self.swarm.dial(address.clone()) {
                tracing::warn!(%address, %error, "cannot dial a bootstrap peer");
            }
        }
    }

    /// Hands an event to the application without ever blocking the swarm; says whether it was
    /// delivered (not when the application's queue is full or gone).
    fn emit(&self, event: NetworkEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(e) => {
                let event = e.into_inner();
                tracing::warn!(?event, "the application's event queue is full or closed; dropped");
                false
            }
        }
    }

    fn ban(&mut self, peer: PeerId) {
        self.mark_banned(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Bans `peer` (new connections closed, gossip ignored, out of Kademlia) but leaves its
    /// connections open.
    fn mark_banned(&mut self, peer: PeerId) {
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
        if self.banned.len() >= BANNED_MAX
            && let Some(oldest) =
                self.banned.iter().min_by_key(|(_, until)| **until).map(|(p, _)| *p)
        {
            self.banned.remove(&oldest);
        }
        self.banned.insert(peer, now + self.config.ban_duration);
        let behaviour = self.swarm.behaviour_mut();
        behaviour.gossipsub.blacklist_peer(&peer);
        behaviour.kad.remove_peer(&peer);
    }

    /// Closes the connections of refused peers whose grace has run out.
    fn hang_up_due(&mut self) {
        let now = tokio::time::Instant::now();
        while let Some((at, peer)) = self.hangups.front().copied() {
            if at > now {
                break;
            }
            self.hangups.pop_front();
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn is_banned(&mut self, peer: &PeerId) -> bool {
        match self.banned.get(peer) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                self.banned.remove(peer);
                self.swarm.behaviour_mut().gossipsub.remove_blacklisted_peer(peer);
                false
            }
            None => false,
        }
    }

    /// Disconnects and bans a peer whose gossipsub score fell under the graylist threshold.
    fn enforce_score(&mut self, peer: PeerId) -> Option<f64> {
        let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
        if let Some(s) = score
            && s < GRAYLIST_THRESHOLD
        {
            tracing::warn!(%peer, score = s, "peer's score is under the graylist threshold: disconnecting and banning it");
            self.ban(peer);
        }
        score
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.emit(NetworkEvent::Listening { address });
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.reach.opened(peer_id, connection_id, &endpoint);
                if self.is_banned(&peer_id) {
                    tracing::debug!(peer = %peer_id, "closing a connection from a banned peer");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                } else {
                    tracing::debug!(peer = %peer_id, address = %endpoint.get_remote_address(), "connection established");
                    self.ask_status(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id, connection_id, num_established, cause, ..
            } => {
                self.reach.closed(peer_id, connection_id);
                if num_established > 0 {
                    return;
                }
                tracing::debug!(peer = %peer_id, ?cause, "last connection closed");
                self.sync_throttle.forget(&peer_id);
                self.unverified_addrs.remove(&peer_id);
                if self.verified.remove(&peer_id).is_some() {
                    self.emit(NetworkEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            // A peer that reached this node through a relay observes it at a circuit address,
            // which AutoNAT may then confirm; a relay would hand that address out in its
            // reservations as its own. Only direct addresses are this node's.
            SwarmEvent::ExternalAddrConfirmed { address }
                if address.iter().any(|p| p == Protocol::P2pCircuit) =>
            {
                tracing::debug!(%address, "not advertising a relayed address as this node's own");
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                tracing::info!(?addresses, ?reason, "a listener closed");
                self.reach.listener_closed(listener_id);
                self.reserve_relays();
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info)
            }
            BehaviourEvent::Gossipsub(event) => self.on_gossip(event),
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, address) in found {
                    if !self.swarm.is_connected(&peer) && !self.is_banned(&peer) {
                        tracing::debug!(%peer, %address, "mDNS found a peer; dialing it");
                        let _ = self.swarm.dial(address);
                    }
                }
            }
            BehaviourEvent::Status(event) => self.on_status(event),
            BehaviourEvent::Sync(event) => self.on_sync(event),
            BehaviourEvent::Blob(event) => self.on_blob(event),
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                self.on_reachability(Reachability::from(&new))
            }
            BehaviourEvent::RelayClient(event) => log_relay_client(&event),
            BehaviourEvent::RelayServer(event) => log_relay_server(&event),
            BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result }) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punched: a direct connection replaces the relayed one")
                }
                Err(error) => {
                    tracing::info!(peer = %remote_peer_id, %error, "hole punching failed; the connection stays relayed")
                }
            },
            _ => {}
        }
    }

    /// AutoNAT's verdict changed: a private node listens through relays.
    fn on_reachability(&mut self, reachability: Reachability) {
        if self.config.behind_nat && reachability != Reachability::Private {
            tracing::debug!(
                reachability = reachability.name(),
                "AutoNAT's verdict is overridden: the node is set behind a NAT"
            );
            return;
        }
        if !self.reach.set_reachability(reachability) {
            return;
        }
        tracing::info!(
            reachability = reachability.name(),
            "AutoNAT: this node's reachability changed"
        );
        self.reserve_relays();
    }

    /// Listens through the relays [`Reach`] picks (none unless this node is private).
    fn reserve_relays(&mut self) {
        for (relay, circuit) in self.reach.relays_to_reserve(|p| self.verified.contains_key(p)) {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::info!(%relay, %circuit, "behind a NAT: asking a relay for a reservation");
                    self.reach.reserving(relay, listener);
                }
                Err(error) => tracing::warn!(%circuit, %error, "cannot listen through a relay"),
            }
        }
    }

    /// Keeps a peer's listen addresses for Kademlia: at once for a member, after its handshake
    /// otherwise.
    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        self.reach.identified(peer, &info.protocols, &info.listen_addrs);
        self.reserve_relays();
        let mut addresses = info.listen_addrs;
        if self.verified.contains_key(&peer) {
            for address in addresses {
                self.swarm.behaviour_mut().kad.add_address(&peer, address);
            }
        } else if self.swarm.is_connected(&peer) {
            addresses.truncate(UNVERIFIED_ADDRS_MAX);
            self.unverified_addrs.insert(peer, addresses);
        }
    }

    /// Sends our status to a newly connected peer, unless it is a member or already asked.
    fn ask_status(&mut self, peer: PeerId) {
        if self.verified.contains_key(&peer) || self.status_asked.values().any(|p| *p == peer) {
            return;
        }
        let id = self.swarm.behaviour_mut().status.send_request(&peer, self.status.clone());
        self.status_asked.insert(id, peer);
    }

    fn on_status(&mut self, event: request_response::Event<Status, StatusResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request_id, request, channel } => {
                    let (response, member) = handshake::answer(&self.status, &request);
                    match member {
                        Ok(()) => self.admit(peer),
                        Err(reason) => {
                            tracing::info!(%peer, %reason, "telling a peer of another chain why it is refused");
                            self.refusing.insert(request_id, (peer, reason));
                        }
                    }
                    if self.swarm.behaviour_mut().status.send_response(channel, response).is_err()
                        && let Some((peer, reason)) = self.refusing.remove(&request_id)
                    {
                        self.refuse(peer, reason, false);
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    self.status_asked.remove(&request_id);
                    match handshake::read_answer(&self.status, &response) {
                        Ok(()) => self.admit(peer),
                        // A peer we are refusing in answer to its own request is banned once
                        // that refusal is sent, so it can read why.
                        Err(_) if self.refusing.values().any(|(p, _)| *p == peer) => {}
                        // A peer that answered with another status speaks the protocol, and
                        // its own question may still be on its way (a client that answers
                        // before it asks): it gets the same grace to read its `Refused`.
                        Err(reason) => self.refuse(peer, reason, true),
                    }
                }
            },
            request_response::Event::ResponseSent { request_id, .. } => {
                if let Some((peer, reason)) = self.refusing.remove(&request_id) {
                    self.refuse(peer, reason, true);
                }
            }
            request_response::Event::InboundFailure { request_id, peer, error, .. } => {
                tracing::debug!(%peer, %error, "a status request could not be answered");
                if let Some((peer, reason)) = self.refusing.remove(&request_id) {
                    self.refuse(peer, reason, false);
                }
            }
            request_response::Event::OutboundFailure { request_id, peer, error, .. } => {
                self.status_asked.remove(&request_id);
                // A peer that showed a matching status by asking is a member, whatever became
                // of our question; one that left owes no answer. One that does not speak the
                // protocol stays a bare libp2p peer: served gossip, sync and blobs on this
                // chain's names, never listed or routed to. One that took the question and gave
                // no answer is refused.
                let owes_an_answer =
                    !self.verified.contains_key(&peer) && self.swarm.is_connected(&peer);
                if !owes_an_answer {
                    return;
                }
                if matches!(error, request_response::OutboundFailure::UnsupportedProtocols) {
                    tracing::debug!(%peer, "peer does not speak the status protocol; not a member");
                } else {
                    self.refuse(peer, HandshakeError::NoStatus(error.to_string()), false);
                }
            }
        }
    }

    /// A peer showed a matching status: it is a member from now on.
    fn admit(&mut self, peer: PeerId) {
        if let Entry::Vacant(entry) = self.verified.entry(peer) {
            let account = account_of(&peer);
            tracing::info!(%peer, account = ?account, "peer passed the chain handshake");
            entry.insert(account);
            for address in self.unverified_addrs.remove(&peer).unwrap_or_default() {
                self.swarm.behaviour_mut().kad.add_address(&peer, address);
            }
            self.emit(NetworkEvent::PeerConnected { peer, account });
            self.reserve_relays();
        }
    }

    /// Refuses and bans a peer. One given `grace` (it was just answered its refusal, or it
    /// answered ours with another status and may be asking) keeps its connection for
    /// [`REFUSAL_GRACE`] so it can read its `Refused` (it is hung up on at once when
    /// [`BANNED_MAX`] refused peers already wait); any other is hung up on now.
    fn refuse(&mut self, peer: PeerId, reason: HandshakeError, grace: bool) {
        // Both exchanges of one connection may fail; the first refusal is the one reported.
        if self.is_banned(&peer) {
            return;
        }
        tracing::warn!(%peer, %reason, "refusing a peer");
        self.verified.remove(&peer);
        if grace {
            self.mark_banned(peer);
            if self.hangups.len() >= BANNED_MAX
                && let Some((_, oldest)) = self.hangups.pop_front()
            {
                let _ = self.swarm.disconnect_peer_id(oldest);
            }
            self.hangups.push_back((tokio::time::Instant::now() + REFUSAL_GRACE, peer));
        } else {
            self.ban(peer);
        }
        self.emit(NetworkEvent::PeerRefused { peer, reason });
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let topic = Topic::from_hash(&self.config.chain_id, &message.topic);
                // Transactions are best effort: they may fill only half the event queue, so a
                // flood of them never crowds out proposals, votes and blocks, and none is taken
                // while the mempool is full. Either way they are turned away before their
                // signatures are checked, so an overloaded node spends its CPU on blocks.
                if topic == Some(Topic::Txs) {
                    let txs_may_wait = self.events.capacity() > self.config.channel_capacity / 2;
                    let mempool_full = self.config.mempool_full.is_full();
                    if !txs_may_wait || mempool_full {
                        tracing::debug!(
                            busy = !txs_may_wait,
                            mempool_full,
                            "a transaction batch is dropped unchecked"
                        );
                        self.report(&message_id, &propagation_source, MessageAcceptance::Ignore);
                        return;
                    }
                }
                let checked = match topic {
                    Some(topic) => check_stateless(
                        &self.config.verifier,
                        &self.config.chain_id,
                        topic,
                        &message.data,
                        self.config.gossip_bytes_max,
                        self.config.max_tx_bytes,
                    ),
                    None => Err(super::GossipError::UnknownTopic(message.topic.to_string())),
                };
                match checked {
                    Ok(message) => {
                        self.swarm.behaviour_mut().slots.mark_useful(propagation_source);
                        let id =
                            GossipId { message_id: message_id.clone(), source: propagation_source };
                        if !self.emit(NetworkEvent::GossipReceived { id, message }) {
                            self.report(
                                &message_id,
                                &propagation_source,
                                MessageAcceptance::Ignore,
                            );
                        }
                    }
                    Err(error) => {
                        tracing::warn!(source = %propagation_source, ?topic, %error, "rejecting gossip");
                        self.report(&message_id, &propagation_source, MessageAcceptance::Reject);
                        self.emit(NetworkEvent::GossipRejected {
                            source: propagation_source,
                            topic,
                            error,
                        });
                        self.enforce_score(propagation_source);
                    }
                }
            }
            gossipsub::Event::Subscribed { topic, .. } => {
                if let Some(topic) = Topic::from_hash(&self.config.chain_id, &topic) {
                    self.send_unsent(topic);
                }
            }
            gossipsub::Event::SlowPeer { peer_id, failed_messages } => {
                tracing::warn!(peer = %peer_id, ?failed_messages, "a peer is too slow to take our gossip");
            }
            _ => {}
        }
    }

    /// Publishes without an answer to wait for; keeps what no peer can take yet.
    fn gossip(&mut self, topic: Topic, data: Vec<u8>) {
        let ident = topic.ident(&self.config.chain_id);
        match self.swarm.behaviour_mut().gossipsub.publish(ident, data.clone()) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                if self.unsent.len() >= UNSENT_MAX {
                    tracing::debug!(%topic, "dropping the oldest message no peer has taken");
                    self.unsent.pop_front();
                }
                self.unsent.push_back((topic, data));
            }
            Err(error) => tracing::debug!(%topic, %error, "gossip message not sent"),
        }
    }

    /// A peer subscribed to `topic`: publishes the messages kept for it.
    fn send_unsent(&mut self, topic: Topic) {
        let (kept, others): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.unsent).into_iter().partition(|(t, _)| *t == topic);
        self.unsent = others;
        if !kept.is_empty() {
            tracing::debug!(%topic, count = kept.len(), "publishing messages kept for a subscriber");
        }
        for (topic, data) in kept {
            self.gossip(topic, data);
        }
    }

    fn report(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        let found = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
        if !found {
            tracing::debug!(message = %id, "validated a message gossipsub no longer holds");
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, is_new_peer: true, .. } => {
                tracing::debug!(%peer, "Kademlia added a peer");
                self.emit(NetworkEvent::PeerDiscovered { peer });
            }
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => match result {
                kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) => {
                    if let Some(pending) = self.pending_providers.get_mut(&id) {
                        pending.found.extend(providers);
                        // One provider the caller did not know is enough to go on with.
                        if pending.found.iter().any(|p| !pending.known.contains(p))
                            && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id)
                        {
                            query.finish();
                        }
                    }
                }
                kad::QueryResult::GetProviders(result) => {
                    if let Err(error) = &result {
                        tracing::debug!(%error, "provider query ended");
                    }
                    if step.last
                        && let Some(pending) = self.pending_providers.remove(&id)
                    {
                        let _ = pending.reply.send(pending.found);
                    }
                }
                kad::QueryResult::StartProviding(result) => {
                    if let Some(reply) = self.pending_provide.remove(&id) {
                        let _ = reply
                            .send(result.map(|_| ()).map_err(|e| NetworkError::Kad(e.to_string())));
                    }
                }
                kad::QueryResult::Bootstrap(Err(error)) => {
                    tracing::debug!(%error, "Kademlia bootstrap failed");
                }
                _ => {}
            },
            _ => {}
        }
        // A query that ended after its first provider was found reports no last step with the
        // answer in it: answer when the query is gone.
        let ended: Vec<kad::QueryId> = self
            .pending_providers
            .keys()
            .filter(|id| self.swarm.behaviour_mut().kad.query(id).is_none())
            .copied()
            .collect();
        for id in ended {
            if let Some(pending) = self.pending_providers.remove(&id) {
                let _ = pending.reply.send(pending.found);
            }
        }
    }

    fn on_sync(&mut self, event: request_response::Event<super::codec::SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request_id, request, channel } => {
                    if let Err(throttled) = self.sync_throttle.admit(peer, Instant::now()) {
                        tracing::debug!(%peer, %throttled, "busy: refusing a sync request");
                        let sync = &mut self.swarm.behaviour_mut().sync;
                        let _ = sync.send_response(channel, SyncResponse::Busy);
                        return;
                    }
                    self.sync_serving.insert(request_id, peer);
                    let responder = SyncResponder { channel, peer };
                    self.emit(NetworkEvent::SyncRequested { peer, request, responder });
                }
                request_response::Message::Response { request_id, response } => {
                    self.swarm.behaviour_mut().slots.mark_useful(peer);
                    answer(&mut self.pending_sync, request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                let failed = RequestError::Failed { peer, reason: error.to_string() };
                answer(&mut self.pending_sync, request_id, Err(failed));
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                tracing::debug!(%peer, %error, "a sync request from a peer failed");
                self.sync_served(request_id);
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.sync_served(request_id)
            }
        }
    }

    /// A sync request is over (answered, failed, or dropped unanswered): one less in flight.
    fn sync_served(&mut self, request_id: InboundRequestId) {
        if let Some(peer) = self.sync_serving.remove(&request_id) {
            self.sync_throttle.ended(peer);
        }
    }

    fn on_blob(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        match event {
            request_response::Event::Message { peer, connection_id, message } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    self.serve_blob(peer, request, channel)
                }
                request_response::Message::Response { request_id, response } => {
                    self.swarm.behaviour_mut().slots.mark_useful(peer);
                    if let BlobResponse::Chunk { data, .. } = &response {
                        self.reach.blob_received(peer, connection_id, data.len() as u64);
                    }
                    answer(&mut self.pending_blob, request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                let failed = RequestError::Failed { peer, reason: error.to_string() };
                answer(&mut self.pending_blob, request_id, Err(failed));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "a blob request from a peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Reads the chunk on a blocking thread; the answer comes back through `served`.
    fn serve_blob(
        &mut self,
        peer: PeerId,
        request: BlobRequest,
        channel: ResponseChannel<BlobResponse>,
    ) {
        if self.serving >= self.config.blob.serving_max {
            tracing::debug!(%peer, "busy: refusing a blob chunk request");
            let _ = self.swarm.behaviour_mut().blob.send_response(channel, BlobResponse::Busy);
            return;
        }
        self.serving += 1;
        let store = self.store.clone();
        let served = self.served_tx.clone();
        let length = u64::from(request.length.min(self.config.blob.chunk_bytes));
        tokio::task::spawn_blocking(move || {
            let response = match store.read_range(&request.hash, request.offset, length) {
                Ok(Some((size_bytes, data))) => BlobResponse::Chunk { size_bytes, data },
                Ok(None) => BlobResponse::NotFound,
                Err(BlobStoreError::BadRange { .. }) => BlobResponse::BadRange,
                Err(error) => {
                    tracing::warn!(%peer, hash = %request.hash, %error, "cannot read a blob chunk to serve");
                    BlobResponse::NotFound
                }
            };
            // Capacity equals `serving_max`, so this never waits long.
            let _ = served.blocking_send(Served { channel, response });
        });
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { address, reply } => {
                if let Some((peer, bare)) = split_peer(&address) {
                    self.swarm.behaviour_mut().kad.add_address(&peer, bare);
                }
                let result = self
                    .swarm
                    .dial(address.clone())
                    .map_err(|e| NetworkError::Dial { address, reason: e.to_string() });
                let _ = reply.send(result);
            }
            Command::ListenAddresses { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Reachability { reply } => {
                let _ = reply.send(self.reach.reachability());
            }
            Command::Publish { topic, data, reply } => {
                let ident = topic.ident(&self.config.chain_id);
                let result = self.swarm.behaviour_mut().gossipsub.publish(ident, data).map(|_| ());
                let result = match result {
                    // The same bytes were published before: content ids make that one message.
                    Ok(()) | Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    Err(e) => Err(NetworkError::Publish { topic, reason: e.to_string() }),
                };
                let _ = reply.send(result);
            }
            Command::Gossip { topic, data } => self.gossip(topic, data),
            Command::Validate { id, validation } => {
                self.report(&id.message_id, &id.source, validation.into());
                // A state-check rejection (a vote by a non-validator, a block the ledger refuses)
                // costs the sender as much as a stateless one.
                if validation == Validation::Reject {
                    self.enforce_score(id.source);
                }
            }
            Command::RequestSync { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.pending_sync.insert(id, reply);
            }
            Command::RespondSync { responder, response } => {
                let bytes = consensus::encoding::encode(&response).len();
                self.sync_throttle.charge(responder.peer, bytes, Instant::now());
                let sync = &mut self.swarm.behaviour_mut().sync;
                if sync.send_response(responder.channel, response).is_err() {
                    tracing::debug!("a sync requester went away before the answer");
                }
            }
            Command::RequestBlob { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().blob.send_request(&peer, request);
                self.pending_blob.insert(id, reply);
            }
            Command::Provide { hash, reply } => self.provide(hash, reply),
            Command::FindProviders { hash, known, reply } => {
                if self.pending_providers.len() >= KAD_PENDING_MAX {
                    tracing::warn!(%hash, "too many provider queries pending; answering none");
                    let _ = reply.send(HashSet::new());
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_providers(blob_key(&hash));
                let found = HashSet::new();
                self.pending_providers.insert(id, ProviderQuery { found, known, reply });
            }
            Command::Penalize { peer, reason } => self.penalize(peer, reason),
            Command::Peers { reply } => {
                let gossipsub = &self.swarm.behaviour().gossipsub;
                let chain_id = &self.config.chain_id;
                let peers = self
                    .verified
                    .iter()
                    .map(|(peer, account)| PeerInfo {
                        peer: *peer,
                        account: *account,
                        score: gossipsub.peer_score(peer),
                        connections: self.reach.links(peer),
                        blob_bytes: self.reach.blob_bytes(peer),
                        mesh_topics: Topic::ALL
                            .into_iter()
                            .filter(|t| {
                                gossipsub.mesh_peers(&t.ident(chain_id).hash()).any(|p| p == peer)
                            })
                            .collect(),
                    })
                    .collect();
                let _ = reply.send(peers);
            }
        }
    }

    fn provide(&mut self, hash: Hash, reply: Reply<Result<(), NetworkError>>) {
        if self.pending_provide.len() >= KAD_PENDING_MAX {
            let _ =
                reply.send(Err(NetworkError::Kad("too many provide operations pending".into())));
            return;
        }
        match self.swarm.behaviour_mut().kad.start_providing(blob_key(&hash)) {
            Ok(id) => {
                self.pending_provide.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NetworkError::Kad(e.to_string())));
            }
        }
    }

    fn penalize(&mut self, peer: PeerId, reason: Misbehavior) {
        if self.app_scores.len() >= BANNED_MAX {
            let swarm = &self.swarm;
            self.app_scores.retain(|p, _| swarm.is_connected(p));
        }
        let score = self.app_scores.entry(peer).or_insert(0.0);
        *score -= reason.penalty();
        let app_score = *score;
        self.swarm.behaviour_mut().gossipsub.set_application_score(&peer, app_score);
        let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
        tracing::warn!(%peer, ?reason, app_score, ?score, "penalized a peer");
        self.emit(NetworkEvent::PeerPenalized { peer, reason, score });
        self.enforce_score(peer);
    }
}

/// Hands an outbound request's outcome to its caller, if still waiting (a request is answered
/// once: a response or a failure).
fn answer<T>(
    pending: &mut HashMap<OutboundRequestId, Reply<Result<T, RequestError>>>,
    request_id: OutboundRequestId,
    outcome: Result<T, RequestError>,
) {
    if let Some(reply) = pending.remove(&request_id) {
        let _ = reply.send(outcome);
    }
}

/// A provider lookup in flight.
struct ProviderQuery {
    /// The providers found so far.
    found: HashSet<PeerId>,
    /// The providers the caller knew: the lookup ends early only once it finds another.
    known: HashSet<PeerId>,
    /// Where the answer goes.
    reply: Reply<HashSet<PeerId>>,
}

/// The Kademlia key under which a blob's providers are recorded: its sha256.
fn blob_key(hash: &Hash) -> kad::RecordKey {
    kad::RecordKey::new(hash.as_bytes())
}

/// Logs what the relay client did: a first reservation at info, the rest at debug.
fn log_relay_client(event: &relay::client::Event) {
    match event {
        relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal: false, .. } => {
            tracing::info!(relay = %relay_peer_id, "a relay accepted our reservation: reachable through it")
        }
        event => tracing::debug!(?event, "relay client"),
    }
}

/// Logs what the relay server did: new reservations and circuits at info, the rest at debug.
fn log_relay_server(event: &relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted { src_peer_id, renewed: false } => {
            tracing::info!(peer = %src_peer_id, "relaying for a peer behind a NAT")
        }
        relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "relaying a circuit")
        }
        event => tracing::debug!(?event, "relay server"),
    }
}

/// Splits `/…/p2p/<id>` into the peer and the address without the suffix.
fn split_peer(address: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut bare = address.clone();
    match bare.pop()? {
        Protocol::P2p(peer) => Some((peer, bare)),
        _ => None,
    }
}
