//! The node's libp2p network, as an actor.
//!
//! [`start`] builds the swarm (QUIC, and TCP + Noise + Yamux; Identify, Ping, Kademlia, optional
//! mDNS, connection limits per peer, IP, subnet and in total with reserved slots for the
//! genesis validators ([`slots`]), gossipsub, the `status`, `sync` and `blob` request-response
//! protocols, and AutoNAT, circuit relay v2 and DCUtR for nodes behind NATs ([`reach`])) and
//! returns three things:
//!
//! - a [`NetworkClient`]: cloneable, it sends [`client`] commands over a bounded channel and
//!   awaits their answers (publish, answer a gossip validation, request blocks, fetch or provide a
//!   blob, report a peer, list peers);
//! - a receiver of [`NetworkEvent`]s, bounded: gossip that passed the stateless checks and waits
//!   for the application's [`Validation`], sync requests to answer, peers connected and refused;
//! - the [`EventLoop`], which owns the swarm: spawn [`EventLoop::run`] on the tokio runtime. It
//!   `select!`s over swarm events and commands, and ends when every client is dropped.
//!
//! The application (a role loop) never blocks the swarm: slow work, such as reading a blob chunk
//! from disk or hashing a fetched blob, runs on blocking threads, and an event the application's
//! queue has no room for is dropped with a warning (a gossip message is then ignored, not
//! forwarded).
//!
//! ## Answering gossip
//!
//! Every gossip message is checked in a fixed order: size, decode, signature, chain id here
//! ([`gossip::check_stateless`]); a failure is rejected at once, lowering the sender's gossipsub
//! score. A message that passes arrives as [`NetworkEvent::GossipReceived`]; the application runs
//! the state check and answers with [`NetworkClient::validate`]: `Accept` (forwarded and
//! delivered), `Ignore` (stale height, used nonce, duplicate: dropped without penalty) or
//! `Reject`. Answer promptly: gossipsub holds an unanswered message only for its cache's history
//! (5 heartbeats, about 3.5 s), after which the answer is moot and the message is not forwarded.
//! For transactions, [`crate::mempool::Mempool::insert`] is the state check and
//! [`crate::mempool::MempoolError::validation`] the answer.
//!
//! ## Serving sync
//!
//! A peer's [`codec::SyncRequest`] arrives as [`NetworkEvent::SyncRequested`]; the application
//! answers with [`NetworkClient::respond_sync`], usually with [`sync::serve`] over its
//! [`consensus::chain::Ledger`], which bounds the answer by count and bytes. A peer that asks
//! faster than [`NetworkConfig::sync_serving`] allows (bytes per second, requests in flight) is
//! answered `Busy` here, without the application seeing the request ([`throttle`]).
//!
//! ## Blobs
//!
//! [`NetworkClient::fetch_blob`] finds providers through Kademlia and asks the trusted ones first,
//! another one as well whenever the blob is late, so no provider can hold a fetch past its
//! deadline by stalling ([`fetch`]); each transfer fetches the blob in chunks with several
//! requests in flight, hashes and writes it on a blocking thread, and stores it atomically in the
//! [`crate::blobs::BlobStore`] only if its sha256 matches ([`blob`]). A provider whose bytes do
//! not match is penalized. The node serves every blob in its store;
//! [`NetworkClient::provide_blob`] announces one.

mod behaviour;
pub mod blob;
pub mod client;
pub mod codec;
pub mod config;
mod event_loop;
pub mod fetch;
pub mod gossip;
pub mod handshake;
pub mod reach;
pub mod slots;
pub mod sync;
pub mod throttle;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use consensus::types::AccountId;
use libp2p::core::Transport;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, tcp, yamux};
use tokio::sync::mpsc;

pub use behaviour::{
    BLOB_PROTOCOL, BehaviourError, GRAYLIST_THRESHOLD, kad_protocol, sync_protocol,
};
pub use blob::{BlobFetchError, Mismatch};
pub use client::{NetworkClient, RequestError};
pub use config::{
    BlobLimits, ConfigError, ConnectionLimits, NetworkConfig, SyncLimits, SyncThrottleLimits,
    peer_of, reserved_peers,
};
pub use event_loop::EventLoop;
pub use fetch::FetchPlan;
pub use gossip::{CommittedBlock, GossipError, GossipMessage, Topic, Validation};
pub use handshake::HandshakeError;
pub use sync::SyncError;
pub use traffic::Traffic;

use crate::blobs::{BlobStore, BlobStoreError};

/// Names one received gossip message for its validation answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GossipId {
    /// Gossipsub's id of the message (the tagged content hash).
    pub message_id: libp2p::gossipsub::MessageId,
    /// The peer that forwarded it to us.
    pub source: PeerId,
}

/// A connected peer that passed the chain handshake.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    /// Its network identity.
    pub peer: PeerId,
    /// Its ledger account (the same ed25519 key), when the key is ed25519.
    pub account: Option<AccountId>,
    /// Its gossipsub score, when scored.
    pub score: Option<f64>,
    /// The topics in whose gossip mesh it is (messages we publish or forward go to it).
    pub mesh_topics: Vec<Topic>,
    /// Its open connections: direct or through a relay.
    pub connections: Vec<reach::Link>,
    /// The blob bytes it served this node since it connected, by the kind of connection.
    pub blob_bytes: reach::BlobBytes,
}

/// Something a peer did wrong outside gossip, reported to lower its score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehavior {
    /// It served bytes that do not hash to the blob it was asked for.
    BadBlob,
    /// It answered a request with something the protocol does not allow (a chunk of the wrong
    /// size, blocks out of order, a certificate for another block).
    BadResponse,
}

impl Misbehavior {
    /// How much the peer's application score drops; gossipsub weighs it by 10, so one bad blob
    /// puts a peer under the graylist threshold.
    pub fn penalty(self) -> f64 {
        match self {
            Misbehavior::BadBlob => 10.0,
            Misbehavior::BadResponse => 4.0,
        }
    }
}

/// What the network tells the application.
#[derive(Debug)]
pub enum NetworkEvent {
    /// The node listens on a new address.
    Listening {
        /// The address (with the real port when `/tcp/0` was asked for).
        address: Multiaddr,
    },
    /// A peer passed the chain handshake.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its ledger account.
        account: Option<AccountId>,
    },
    /// The last connection to a handshaken peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// Kademlia added a peer to the routing table.
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
    },
    /// A peer failed the chain handshake and was disconnected and banned.
    PeerRefused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: HandshakeError,
    },
    /// A peer's score dropped for misbehavior.
    PeerPenalized {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: Misbehavior,
        /// Its gossipsub score after the penalty, when scored.
        score: Option<f64>,
    },
    /// A gossip message passed the stateless checks and waits for [`NetworkClient::validate`].
    GossipReceived {
        /// Names the message in the answer.
        id: GossipId,
        /// The decoded message.
        message: GossipMessage,
    },
    /// A gossip message failed the stateless checks and was rejected.
    GossipRejected {
        /// The peer that forwarded it.
        source: PeerId,
        /// Its topic, when it was one of ours.
        topic: Option<Topic>,
        /// Why.
        error: GossipError,
    },
    /// A peer asks for blocks; answer with [`NetworkClient::respond_sync`].
    SyncRequested {
        /// The peer.
        peer: PeerId,
        /// What it asks for.
        request: codec::SyncRequest,
        /// Where the answer goes.
        responder: sync::SyncResponder,
    },
}

/// Why the network could not start or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A setting cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The behaviour could not be built.
    #[error(transparent)]
    Behaviour(#[from] BehaviourError),
    /// The transport could not be built.
    #[error("transport: {0}")]
    Transport(String),
    /// Listening on an address failed.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Dialing failed at once.
    #[error("cannot dial {address}: {reason}")]
    Dial {
        /// The address.
        address: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A message is larger than the chain's gossip limit.
    #[error("a {topic} message of {found} bytes is over the gossip limit of {limit}")]
    TooLarge {
        /// Its topic.
        topic: Topic,
        /// Its size.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// Gossipsub refused to publish (for instance, no peer subscribed yet).
    #[error("publishing on {topic}: {reason}")]
    Publish {
        /// The topic.
        topic: Topic,
        /// Why.
        reason: String,
    },
    /// A Kademlia operation failed.
    #[error("kademlia: {0}")]
    Kad(String),
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] BlobStoreError),
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}

/// Builds the swarm and its actor; spawn [`EventLoop::run`] to start it. Call it inside a tokio
/// runtime (the listeners register with its reactor). The PeerId derives from `key` (the node
/// key, see [`crate::keystore::libp2p_keypair`]), so a peer's id and its ledger account are one.
pub fn start(
    key: Keypair,
    config: NetworkConfig,
) -> Result<(NetworkClient, mpsc::Receiver<NetworkEvent>, EventLoop), NetworkError> {
    config.validate()?;
    let store = BlobStore::open(&config.blob_dir)?;
    let idle = config.idle_connection_timeout;
    let traffic = Arc::new(Traffic::default());
    let counted = traffic.clone();
    // QUIC; TCP + Noise + Yamux as `SwarmBuilder::with_tcp` builds it, with every connection's
    // bytes counted below Noise (QUIC's are not counted); circuits through relays.
    let mut behaviour_error = None;
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .map(move |stream, _| traffic::Counted::new(stream, counted))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_behaviour(|key, relay_client| {
            behaviour::Behaviour::new(key, &config, relay_client).map_err(|e| {
                let message = e.to_string();
                behaviour_error = Some(e);
                message.into()
            })
        })
        .map_err(|e| {
            behaviour_error
                .take()
                .map_or_else(|| NetworkError::Transport(e.to_string()), NetworkError::from)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    for address in &config.listen {
        swarm.listen_on(address.clone()).map_err(|e| NetworkError::Listen {
            address: address.clone(),
            reason: e.to_string(),
        })?;
    }
    let (commands_tx, commands_rx) = mpsc::channel(config.channel_capacity);
    let (events_tx, events_rx) = mpsc::channel(config.channel_capacity);
    let local_peer = *swarm.local_peer_id();
    let client = NetworkClient::new(commands_tx, local_peer, store.clone(), traffic, &config);
    let event_loop = EventLoop::new(swarm, commands_rx, events_tx, store, config);
    Ok((client, events_rx, event_loop))
}

/// How long a blob fetch waits before retrying a provider that answered `Busy`.
pub(crate) const BUSY_RETRY_DELAY: Duration = Duration::from_millis(200);
