//! The network's handle: a cloneable client that sends commands to the event loop over a
//! bounded channel and awaits their answers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use consensus::bft::Message as ConsensusMessage;
use consensus::block::Block;
use consensus::encoding::{encode, encoded_len};
use consensus::tx::SignedTx;
use consensus::types::Hash;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use super::blob::{self, BlobFetchError};
use super::codec::{BlobRequest, BlobResponse, SyncRequest, SyncResponse};
use super::config::{BlobLimits, NetworkConfig, SyncLimits};
use super::fetch::{self, FetchPlan};
use super::gossip::{CommittedBlock, ConsensusEnvelope, TXS_PER_MESSAGE_MAX, Topic, Validation};
use super::reach::Reachability;
use super::sync::{self, SyncError, SyncResponder};
use super::{GossipId, Misbehavior, NetworkError, PeerInfo, Traffic};
use crate::blobs::BlobStore;

/// Why a request to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request could not be sent or was not answered (dial failure, timeout, connection
    /// closed, protocol not supported, or an I/O error such as an over-limit frame).
    #[error("request to {peer} failed: {reason}")]
    Failed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}

/// A command to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    ListenAddresses {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Reachability {
        reply: oneshot::Sender<Reachability>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    Gossip {
        topic: Topic,
        data: Vec<u8>,
    },
    Validate {
        id: GossipId,
        validation: Validation,
    },
    RequestSync {
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<Result<SyncResponse, RequestError>>,
    },
    RespondSync {
        responder: SyncResponder,
        response: SyncResponse,
    },
    RequestBlob {
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, RequestError>>,
    },
    Provide {
        hash: Hash,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    FindProviders {
        hash: Hash,
        known: HashSet<PeerId>,
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    Penalize {
        peer: PeerId,
        reason: Misbehavior,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
}

#[derive(Debug)]
struct Shared {
    local_peer: PeerId,
    store: BlobStore,
    blob: BlobLimits,
    sync: SyncLimits,
    gossip_bytes_max: usize,
    traffic: Arc<Traffic>,
    /// The next consensus send number. It starts at the clock's microseconds, so a restarted
    /// node does not send the bytes of its previous life again (peers would drop them as seen).
    consensus_sends: AtomicU64,
}

/// A handle to the network; clone it freely. When every clone is dropped, the event loop ends.
#[derive(Clone, Debug)]
pub struct NetworkClient {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl NetworkClient {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        local_peer: PeerId,
        store: BlobStore,
        traffic: Arc<Traffic>,
        config: &NetworkConfig,
    ) -> NetworkClient {
        let shared = Shared {
            local_peer,
            store,
            blob: config.blob.clone(),
            sync: config.sync.clone(),
            gossip_bytes_max: config.gossip_bytes_max,
            traffic,
            consensus_sends: AtomicU64::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            ),
        };
        NetworkClient { commands, shared: Arc::new(shared) }
    }

    /// This node's PeerId.
    pub fn local_peer(&self) -> PeerId {
        self.shared.local_peer
    }

    /// The node's blob store.
    pub fn blob_store(&self) -> &BlobStore {
        &self.shared.store
    }

    /// Bytes sent and received on every connection so far.
    pub fn traffic(&self) -> &Traffic {
        &self.shared.traffic
    }

    /// The blob limits in force.
    pub fn blob_limits(&self) -> &BlobLimits {
        &self.shared.blob
    }

    pub(crate) async fn send(&self, command: Command) -> Result<(), NetworkError> {
        self.commands.send(command).await.map_err(|_| NetworkError::Stopped)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply)).await?;
        answer.await.map_err(|_| NetworkError::Stopped)
    }

    /// Dials an address (with or without a `/p2p/<id>` suffix).
    pub async fn dial(&self, address: Multiaddr) -> Result<(), NetworkError> {
        self.ask(|reply| Command::Dial { address, reply }).await?
    }

    /// The addresses the node listens on now.
    pub async fn listen_addresses(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(|reply| Command::ListenAddresses { reply }).await
    }

    /// Whether peers can dial this node, as AutoNAT last found.
    pub async fn reachability(&self) -> Result<Reachability, NetworkError> {
        self.ask(|reply| Command::Reachability { reply }).await
    }

    /// Refuses gossip bytes over the chain's gossip limit.
    fn within_limit(&self, topic: Topic, data: &[u8]) -> Result<(), NetworkError> {
        let limit = self.shared.gossip_bytes_max;
        if data.len() > limit {
            return Err(NetworkError::TooLarge { topic, found: data.len(), limit });
        }
        Ok(())
    }

    /// Publishes encoded bytes on a topic; refuses more than the chain's gossip limit.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetworkError> {
        self.within_limit(topic, &data)?;
        self.ask(|reply| Command::Publish { topic, data, reply }).await?
    }

    /// Hands signed transactions to the swarm to gossip on the `txs` topic, in batches of at most
    /// [`TXS_PER_MESSAGE_MAX`] within the gossip limit, without waiting for them: the caller (the
    /// driver, admitting thousands of txs a second) never waits on the swarm. A batch no peer can
    /// take yet (none subscribed) is kept, within a bound, and published when a peer subscribes.
    pub async fn publish_txs(&self, txs: &[SignedTx]) -> Result<(), NetworkError> {
        // A Vec's length prefix takes at most 10 bytes.
        let budget = self.shared.gossip_bytes_max.saturating_sub(10);
        let mut start = 0;
        while start < txs.len() {
            let (mut end, mut bytes) = (start, 0usize);
            while end < txs.len() && end - start < TXS_PER_MESSAGE_MAX {
                let size = encoded_len(&txs[end]);
                if bytes + size > budget && end > start {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let data = encode(&txs[start..end]);
            self.within_limit(Topic::Txs, &data)?;
            self.send(Command::Gossip { topic: Topic::Txs, data }).await?;
            start = end;
        }
        Ok(())
    }

    /// Publishes a proposal or vote on the `consensus` topic, in a [`ConsensusEnvelope`] with a
    /// new send number, so a message the engine sends again goes out again.
    pub async fn publish_consensus(
        &self,
        message: &ConsensusMessage<Block>,
    ) -> Result<(), NetworkError> {
        let send = self.shared.consensus_sends.fetch_add(1, Ordering::Relaxed);
        let envelope = ConsensusEnvelope { send, message: message.clone() };
        self.publish(Topic::Consensus, encode(&envelope)).await
    }

    /// Publishes a committed block on the `blocks` topic. A block over the gossip limit is
    /// refused ([`NetworkError::TooLarge`]); peers then catch up by `sync`.
    pub async fn publish_block(&self, committed: &CommittedBlock) -> Result<(), NetworkError> {
        self.publish(Topic::Blocks, encode(committed)).await
    }

    /// Answers a [`super::NetworkEvent::GossipReceived`] with the result of the state check.
    pub async fn validate(&self, id: GossipId, validation: Validation) -> Result<(), NetworkError> {
        self.send(Command::Validate { id, validation }).await
    }

    /// Asks `peer` for committed blocks and checks the answer's shape (consecutive heights from
    /// the one asked, at most the count asked, each certificate naming its block). Whether each
    /// certificate is a quorum is for the caller's ledger to check when it commits the blocks.
    pub async fn request_sync(
        &self,
        peer: PeerId,
        request: SyncRequest,
    ) -> Result<Vec<CommittedBlock>, SyncError> {
        let request =
            SyncRequest { count: request.count.min(self.shared.sync.blocks_max), ..request };
        let answer = self
            .ask(|reply| Command::RequestSync { peer, request, reply })
            .await
            .map_err(|_| SyncError::Request(RequestError::Stopped))?
            .map_err(SyncError::Request)?;
        match sync::check_response(&request, answer) {
            Ok(blocks) => Ok(blocks),
            Err(error) => {
                if matches!(error, SyncError::BadResponse { .. }) {
                    self.penalize(peer, Misbehavior::BadResponse).await.ok();
                }
                Err(error)
            }
        }
    }

    /// Answers a [`super::NetworkEvent::SyncRequested`].
    pub async fn respond_sync(
        &self,
        responder: SyncResponder,
        response: SyncResponse,
    ) -> Result<(), NetworkError> {
        self.send(Command::RespondSync { responder, response }).await
    }

    /// Asks `peer` for one range of a blob.
    pub async fn request_blob_chunk(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RequestBlob { peer, request, reply })
            .await
            .map_err(|_| RequestError::Stopped)?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// Announces through Kademlia that this node holds blob `hash` (which must be in its store),
    /// and waits until the provider record is published.
    pub async fn provide_blob(&self, hash: Hash) -> Result<(), NetworkError> {
        if !self.shared.store.contains(&hash) {
            return Err(NetworkError::Kad(format!("blob {hash} is not in the store")));
        }
        self.ask(|reply| Command::Provide { hash, reply }).await?
    }

    /// Peers that Kademlia says hold blob `hash` (never this node): the lookup ends as soon as it
    /// has found one.
    pub async fn find_providers(&self, hash: Hash) -> Result<HashSet<PeerId>, NetworkError> {
        self.find_providers_beyond(hash, HashSet::new()).await
    }

    /// Like [`NetworkClient::find_providers`], but the lookup goes on until it has found a
    /// provider not in `known` (or has asked every peer it can): records stored here do not
    /// hide the ones stored elsewhere.
    pub async fn find_providers_beyond(
        &self,
        hash: Hash,
        mut known: HashSet<PeerId>,
    ) -> Result<HashSet<PeerId>, NetworkError> {
        known.insert(self.shared.local_peer);
        let mut providers = self.ask(|reply| Command::FindProviders { hash, known, reply }).await?;
        providers.remove(&self.shared.local_peer);
        Ok(providers)
    }

    /// Fetches blob `hash` of at most `size_bytes_max` bytes from its providers as `plan` says
    /// (preferred providers first, another one asked as well whenever the blob is late; see
    /// [`fetch`]) and returns its path in the store. A blob already in the store is returned at
    /// once.
    pub async fn fetch_blob(
        &self,
        hash: Hash,
        size_bytes_max: u64,
        plan: &FetchPlan,
    ) -> Result<PathBuf, BlobFetchError> {
        if self.shared.store.contains(&hash) {
            return Ok(self.shared.store.path(&hash));
        }
        fetch::fetch(self, hash, size_bytes_max, plan).await
    }

    /// Fetches blob `hash` of at most `size_bytes_max` bytes from `peer`; see [`blob::fetch`].
    pub async fn fetch_blob_from(
        &self,
        peer: PeerId,
        hash: Hash,
        size_bytes_max: u64,
    ) -> Result<PathBuf, BlobFetchError> {
        blob::fetch(self, peer, hash, size_bytes_max.min(self.shared.blob.blob_bytes_max)).await
    }

    /// Lowers a peer's score for misbehavior outside gossip; a peer under the graylist
    /// threshold is disconnected and banned.
    pub async fn penalize(&self, peer: PeerId, reason: Misbehavior) -> Result<(), NetworkError> {
        self.send(Command::Penalize { peer, reason }).await
    }

    /// The connected peers that passed the handshake, with their scores.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetworkError> {
        self.ask(|reply| Command::Peers { reply }).await
    }
}
