//! The network's settings: addresses, discovery, and a named limit on everything a peer can send.
//!
//! [`NetworkConfig::for_chain`] derives the size limits from the chain's parameters, so every node
//! of a chain gets the same gossip limit (a message within the sender's limit but over the
//! receiver's would be dropped silently by gossipsub).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use consensus::crypto::Verifier;
use consensus::genesis::{Genesis, Params};
use consensus::types::{AccountId, Hash};
use libp2p::{Multiaddr, PeerId};

use super::handshake::Status;
use crate::mempool::FullFlag;

/// Room for what a gossip message carries besides a block: the proposal or commit certificate
/// around it and the envelope, in bytes.
pub const GOSSIP_ENVELOPE_BYTES: usize = 64 << 10;

/// Largest chunk a blob request may ask for, in bytes (bounds a blob response frame).
pub const BLOB_CHUNK_BYTES_LIMIT: u32 = 16 << 20;

/// Most blocks one sync request may ask for.
pub const SYNC_BLOCKS_LIMIT: u32 = 1_024;

/// Connection limits: libp2p's `connection_limits` enforces the per-peer and handshake limits
/// before a connection is used, [`super::slots`] the per-IP, per-subnet and total ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most established connections to one peer.
    pub established_per_peer_max: u32,
    /// Most established connections in total, the reserved peers' not counted.
    pub established_total_max: u32,
    /// Most inbound connections from one IP, the reserved peers' not counted.
    pub per_ip_max: u32,
    /// Most inbound connections from one subnet (/24 for IPv4, /48 for IPv6), the reserved
    /// peers' not counted.
    pub per_subnet_max: u32,
    /// Most incoming connections still in their handshake.
    pub pending_incoming_max: u32,
    /// Most incoming connections from one IP still in their handshake.
    pub pending_per_ip_max: u32,
    /// Most outgoing dials in progress.
    pub pending_outgoing_max: u32,
    /// How long a peer may send nothing useful before its slot may go to a newcomer.
    pub idle_grace: Duration,
    /// Peers always admitted and never counted: the genesis validators (see
    /// [`reserved_peers`]).
    pub reserved: Vec<PeerId>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            // Two peers that dialed each other at once hold two connections, and each one's
            // AutoNAT probe has the other dial back on a fresh one: four, or the probe fails
            // and a public node is taken for one behind a NAT.
            established_per_peer_max: 4,
            established_total_max: 128,
            per_ip_max: 16,
            per_subnet_max: 32,
            pending_incoming_max: 32,
            pending_per_ip_max: 8,
            pending_outgoing_max: 32,
            idle_grace: Duration::from_secs(30),
            reserved: Vec::new(),
        }
    }
}

/// The PeerIds of a genesis's validators (a node key's PeerId derives from its account), for
/// [`ConnectionLimits::reserved`].
pub fn reserved_peers(genesis: &Genesis) -> Vec<PeerId> {
    genesis.validators.iter().filter_map(|v| peer_of(&v.account)).collect()
}

/// The PeerId of the node whose key is `account` (`None` for bytes that are no ed25519 key).
pub fn peer_of(account: &AccountId) -> Option<PeerId> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&account.0).ok()?;
    Some(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// Limits of the `blob` protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLimits {
    /// Bytes asked for per chunk request (at most [`BLOB_CHUNK_BYTES_LIMIT`]).
    pub chunk_bytes: u32,
    /// Chunk requests kept in flight per transfer.
    pub chunks_in_flight: usize,
    /// Inbound chunk requests served at once; more get a `Busy` answer.
    pub serving_max: usize,
    /// Largest blob fetched when the caller names no smaller limit, in bytes.
    pub blob_bytes_max: u64,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            // Measured on loopback (node/benches/blob_throughput.rs): many 1 MiB chunks in flight
            // keep Yamux's per-stream windows (256 KiB at a stream's start) full.
            chunk_bytes: 1 << 20,
            chunks_in_flight: 16,
            serving_max: 64,
            blob_bytes_max: crate::blobs::BLOB_BYTES_LIMIT,
        }
    }
}

/// Limits of the `sync` protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncLimits {
    /// Most blocks in one request or response (at most [`SYNC_BLOCKS_LIMIT`]).
    pub blocks_max: u32,
    /// Largest encoded response, in bytes; at least one block of the chain's largest size fits.
    pub response_bytes_max: usize,
}

pub use super::throttle::SyncThrottleLimits;

/// Everything the network layer needs; see [`NetworkConfig::for_chain`].
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The chain's id: it names gossip topics and protocols, and peers must share it.
    pub chain_id: String,
    /// The genesis hash peers must share.
    pub genesis_hash: Hash,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0` picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Peers dialed at start; with a `/p2p/<id>` suffix they also seed Kademlia directly.
    pub bootstrap: Vec<Multiaddr>,
    /// Whether mDNS discovery runs (it never finds peers on loopback).
    pub mdns: bool,
    /// Whether this node relays for peers behind NATs (circuit relay v2; validators do, unless
    /// run with `--behind-nat`).
    pub relay_server: bool,
    /// Take this node as unreachable from the start, whatever AutoNAT finds: it listens through
    /// relays at once (`--behind-nat`, for an operator who knows; as go-libp2p's
    /// `ForceReachabilityPrivate`).
    pub behind_nat: bool,
    /// Where blobs are stored (`DATA_DIR/blobs`).
    pub blob_dir: PathBuf,
    /// Gossipsub's `max_transmit_size`: the largest encoded gossip message, in bytes. One value
    /// for the whole chain.
    pub gossip_bytes_max: usize,
    /// Largest encoded transaction, in bytes (the chain's `max_tx_bytes`).
    pub max_tx_bytes: usize,
    /// Connection limits.
    pub connections: ConnectionLimits,
    /// Blob protocol limits.
    pub blob: BlobLimits,
    /// Sync protocol limits.
    pub sync: SyncLimits,
    /// How fast each peer may be served sync answers.
    pub sync_serving: SyncThrottleLimits,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// How long a connection with nothing to do stays open.
    pub idle_connection_timeout: Duration,
    /// Gossipsub's heartbeat.
    pub gossip_heartbeat: Duration,
    /// How long a refused or misbehaving peer stays banned.
    pub ban_duration: Duration,
    /// Capacity of the command channel and of the event channel.
    pub channel_capacity: usize,
    /// Set while the node's mempool is full: transaction gossip is then ignored before its
    /// signatures are checked.
    pub mempool_full: FullFlag,
    /// Checks gossip's signatures: the ledger's (see [`consensus::state::State::verifier`]), so
    /// what gossip accepted is not checked again when the mempool admits it or a block holds it.
    pub verifier: Arc<Verifier>,
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network setting `{field}` is invalid: {reason}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl NetworkConfig {
    /// Settings for a chain: limits derived from its parameters, listening on a free loopback
    /// port, no bootstrap peers, mDNS on, no relay served.
    pub fn for_chain(
        chain_id: &str,
        genesis_hash: Hash,
        params: &Params,
        blob_dir: PathBuf,
    ) -> NetworkConfig {
        let block_bytes = usize::try_from(params.max_block_bytes).unwrap_or(usize::MAX);
        NetworkConfig {
            chain_id: chain_id.to_string(),
            genesis_hash,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
            bootstrap: Vec::new(),
            mdns: true,
            relay_server: false,
            behind_nat: false,
            blob_dir,
            gossip_bytes_max: block_bytes.saturating_add(GOSSIP_ENVELOPE_BYTES),
            max_tx_bytes: usize::try_from(params.max_tx_bytes).unwrap_or(usize::MAX),
            connections: ConnectionLimits::default(),
            blob: BlobLimits::default(),
            sync: SyncLimits {
                blocks_max: 64,
                response_bytes_max: block_bytes.saturating_add(GOSSIP_ENVELOPE_BYTES).max(8 << 20),
            },
            sync_serving: SyncThrottleLimits::default(),
            request_timeout: Duration::from_secs(30),
            idle_connection_timeout: Duration::from_secs(60),
            gossip_heartbeat: Duration::from_millis(700),
            ban_duration: Duration::from_secs(600),
            channel_capacity: 1_024,
            mempool_full: FullFlag::default(),
            verifier: Arc::default(),
        }
    }

    /// What this node says it is in the chain handshake.
    pub fn status(&self) -> Status {
        Status { chain_id: self.chain_id.clone(), genesis_hash: self.genesis_hash }
    }

    /// Checks every relationship between the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: String| Err(ConfigError { field, reason });
        if self.chain_id.is_empty()
            || self.chain_id.len() > consensus::genesis::CHAIN_ID_BYTES_MAX
            || self.chain_id.contains('/')
        {
            return fail(
                "chain_id",
                format!("{:?} must be 1..=64 bytes without '/'", self.chain_id),
            );
        }
        if self.listen.is_empty() {
            return fail("listen", "no address to listen on".into());
        }
        if self.gossip_bytes_max < self.max_tx_bytes {
            return fail(
                "gossip_bytes_max",
                format!(
                    "{} is smaller than one transaction ({} bytes)",
                    self.gossip_bytes_max, self.max_tx_bytes
                ),
            );
        }
        if self.blob.chunk_bytes == 0 || self.blob.chunk_bytes > BLOB_CHUNK_BYTES_LIMIT {
            return fail(
                "blob.chunk_bytes",
                format!("{} must be in 1..={BLOB_CHUNK_BYTES_LIMIT}", self.blob.chunk_bytes),
            );
        }
        if self.blob.chunks_in_flight == 0 || self.blob.chunks_in_flight > 64 {
            return fail("blob.chunks_in_flight", "must be in 1..=64".into());
        }
        if self.blob.serving_max == 0 {
            return fail("blob.serving_max", "must be positive".into());
        }
        if self.sync.blocks_max == 0 || self.sync.blocks_max > SYNC_BLOCKS_LIMIT {
            return fail("sync.blocks_max", format!("must be in 1..={SYNC_BLOCKS_LIMIT}"));
        }
        if self.sync.response_bytes_max < self.gossip_bytes_max {
            return fail(
                "sync.response_bytes_max",
                "must hold at least one block with its certificate".into(),
            );
        }
        let serving = &self.sync_serving;
        if serving.bytes_per_sec == 0 || serving.in_flight_max == 0 {
            return fail("sync_serving", "bytes_per_sec and in_flight_max must be positive".into());
        }
        if serving.burst_bytes < self.sync.response_bytes_max as u64 {
            return fail("sync_serving.burst_bytes", "must hold at least one full answer".into());
        }
        if self.channel_capacity == 0 {
            return fail("channel_capacity", "must be positive".into());
        }
        let c = &self.connections;
        if [c.established_per_peer_max, c.established_total_max, c.per_ip_max, c.per_subnet_max]
            .contains(&0)
        {
            return fail("connections", "established limits must be positive".into());
        }
        if c.per_ip_max > c.per_subnet_max || c.per_subnet_max > c.established_total_max {
            return fail(
                "connections",
                "per_ip_max <= per_subnet_max <= established_total_max must hold".into(),
            );
        }
        if c.pending_per_ip_max == 0 || c.pending_per_ip_max > c.pending_incoming_max {
            return fail(
                "connections.pending_per_ip_max",
                "must be 1..=pending_incoming_max".into(),
            );
        }
        if self.request_timeout.is_zero() || self.gossip_heartbeat.is_zero() {
            return fail("timeouts", "request timeout and heartbeat must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_defaults_validate_and_bad_values_are_named() {
        let params = Params::default();
        let config = NetworkConfig::for_chain("c", Hash::default(), &params, "b".into());
        config.validate().unwrap();
        assert!(config.gossip_bytes_max > params.max_block_bytes as usize);
        let mut bad = config.clone();
        bad.chain_id = "a/b".into();
        assert_eq!(bad.validate().unwrap_err().field, "chain_id");
        let mut bad = config;
        bad.blob.chunk_bytes = BLOB_CHUNK_BYTES_LIMIT + 1;
        assert_eq!(bad.validate().unwrap_err().field, "blob.chunk_bytes");
    }
}
