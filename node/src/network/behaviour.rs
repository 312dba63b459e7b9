//! The swarm's behaviour: every protocol the node speaks, configured from [`NetworkConfig`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::gossipsub::{self, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, connection_limits, dcutr, identify, kad, mdns, ping, relay};

use super::codec::{BlobCodec, StatusCodec, SyncCodec};
use super::config::NetworkConfig;
use super::gossip::{Topic, message_id};
use super::handshake::{self, STATUS_PROTOCOL};
use super::reach;
use super::slots::SlotGuard;

/// Gossipsub score below which a peer's messages are dropped (gossipsub's graylist); the node
/// also disconnects and bans a peer whose score falls under it.
pub const GRAYLIST_THRESHOLD: f64 = -80.0;

/// Weight of the invalid-message counter (P4) per topic; the penalty grows with its square, so
/// three rejected messages put a peer under the graylist threshold.
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;

/// Kademlia protocol name of a chain, so DHTs of different chains never mix.
pub fn kad_protocol(chain_id: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/crucible/{chain_id}/kad/1.0.0"))
        .expect("chain ids are checked to make valid protocol names")
}

/// The `sync` protocol name of a chain.
pub fn sync_protocol(chain_id: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/crucible/{chain_id}/sync/1"))
        .expect("chain ids are checked to make valid protocol names")
}

/// The `blob` protocol name (blobs are content-addressed, so one name serves every chain).
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/crucible/blob/1");

/// All protocols of a node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) slots: SlotGuard,
    pub(crate) identify: identify::Behaviour,
    pub(crate) status: request_response::Behaviour<StatusCodec>,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    pub(crate) blob: request_response::Behaviour<BlobCodec>,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
}

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    /// Gossipsub refused its settings.
    #[error("gossipsub settings: {0}")]
    Gossipsub(String),
    /// mDNS could not start.
    #[error("mDNS: {0}")]
    Mdns(#[from] std::io::Error),
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        config: &NetworkConfig,
        relay_client: relay::client::Behaviour,
    ) -> Result<Behaviour, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        let c = &config.connections;
        // The total is counted by `slots`, which leaves the genesis validators out of it and can
        // evict an idle peer to make room.
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established_per_peer(Some(c.established_per_peer_max))
            .with_max_pending_incoming(Some(c.pending_incoming_max))
            .with_max_pending_outgoing(Some(c.pending_outgoing_max));

        let identify = identify::Behaviour::new(
            identify::Config::new(handshake::protocol_version(&config.status()), key.public())
                .with_agent_version(format!("crucible-node/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );

        let mut kad_config = kad::Config::new(kad_protocol(&config.chain_id));
        kad_config.set_query_timeout(config.request_timeout);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // On loopback Kademlia would stay a client (no confirmed external address) and never
        // answer queries; every node of ours is a server.
        kad.set_mode(Some(kad::Mode::Server));

        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?)
        } else {
            None
        };

        let gossipsub = gossipsub_behaviour(config)?;

        let rr_config = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(
                config.blob.serving_max + config.blob.chunks_in_flight * 4,
            );
        let sync = request_response::Behaviour::with_codec(
            SyncCodec::new(config.sync.response_bytes_max),
            [(sync_protocol(&config.chain_id), ProtocolSupport::Full)],
            rr_config.clone(),
        );
        let status = request_response::Behaviour::with_codec(
            StatusCodec::default(),
            [(STATUS_PROTOCOL, ProtocolSupport::Full)],
            rr_config.clone(),
        );
        let blob = request_response::Behaviour::with_codec(
            BlobCodec { chunk_bytes_max: config.blob.chunk_bytes as usize },
            [(BLOB_PROTOCOL, ProtocolSupport::Full)],
            rr_config,
        );

        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            slots: SlotGuard::new(c.clone()),
            identify,
            status,
            ping: ping::Behaviour::default(),
            kad,
            mdns: Toggle::from(mdns),
            gossipsub,
            sync,
            blob,
            autonat: autonat::Behaviour::new(peer_id, reach::autonat_config()),
            relay_server: Toggle::from(
                config
                    .relay_server
                    .then(|| relay::Behaviour::new(peer_id, reach::relay_server_config())),
            ),
            relay_client,
            dcutr: dcutr::Behaviour::new(peer_id),
        })
    }
}

fn gossipsub_behaviour(config: &NetworkConfig) -> Result<gossipsub::Behaviour, BehaviourError> {
    let err = |e: &dyn std::fmt::Display| BehaviourError::Gossipsub(e.to_string());
    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(config.gossip_bytes_max)
        .heartbeat_interval(config.gossip_heartbeat)
        // The application answers every message: Accept, Reject or Ignore.
        .validate_messages()
        // No author, sequence number or libp2p signature: our payloads carry their own
        // signatures, and the id is the content hash, so one payload is one message.
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(message_id(&m.topic, &m.data).0.to_vec())
        })
        .build()
        .map_err(|e| err(&e))?;
    let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_config)
        .map_err(|e| err(&e))?;

    let mut params = gossipsub::PeerScoreParams::default();
    // Every test network and testnet runs on one host; colocation says nothing there.
    params
        .ip_colocation_factor_whitelist
        .extend([IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    for topic in Topic::ALL {
        params.topics.insert(topic.ident(&config.chain_id).hash(), topic_score_params());
    }
    let thresholds = gossipsub::PeerScoreThresholds {
        graylist_threshold: GRAYLIST_THRESHOLD,
        ..Default::default()
    };
    gossipsub.with_peer_score(params, thresholds).map_err(|e| err(&e))?;
    for topic in Topic::ALL {
        gossipsub.subscribe(&topic.ident(&config.chain_id)).map_err(|e| err(&e))?;
    }
    Ok(gossipsub)
}

/// Scores per topic: time in mesh and first deliveries count for a peer, invalid messages
/// heavily against it. Mesh delivery rates are not scored: a quiet chain has few transactions,
/// and an honest peer must not lose score for that.
fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: std::time::Duration::from_secs(1),
        time_in_mesh_cap: 3_600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    }
}
