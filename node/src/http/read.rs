//! Chain reads: status, peers, validators, blocks and transactions.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use consensus::types::{AccountId, Hash, Height};
use consensus::vote::Vote;
use serde::{Deserialize, Serialize};

use super::views::{BlockDetail, BlockSummary, TxView, decimal};
use super::{Api, ApiError, ApiResult};
use crate::network::reach::Reachability;
use crate::network::{NetworkError, PeerInfo};
use crate::runtime::Role;

/// Most blocks one `GET /blocks` answers.
pub const BLOCKS_LIMIT_MAX: u64 = 100;
/// Blocks `GET /blocks` answers when no `limit` is given.
const BLOCKS_LIMIT_DEFAULT: u64 = 20;
/// How many recent commit certificates `GET /validators` reads for each validator's last votes.
pub const LAST_VOTES_HEIGHTS: u64 = 10;
/// How long a read waits for the network's answer (the peer list).
const NETWORK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// The chain's id.
    pub chain_id: String,
    /// The genesis hash.
    pub genesis_hash: Hash,
    /// The latest committed height.
    pub height: Height,
    /// The latest committed block's hash.
    pub block_hash: Hash,
    /// Its header time, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The state root after it.
    pub state_root: Hash,
    /// The role this node runs.
    pub role: Role,
    /// This node's account.
    pub account: AccountId,
    /// This node's libp2p peer id.
    pub peer_id: String,
    /// The addresses it listens on, each ending in `/p2p/{peer_id}` so another node can dial it
    /// as given (`--bootstrap`); empty when the network does not answer in time.
    pub listen_addrs: Vec<String>,
    /// Whether peers can dial this node, as AutoNAT last found: `unknown`, `public` or
    /// `private` (behind a NAT: it then also listens through relays, `…/p2p-circuit` addresses).
    pub reachability: String,
    /// Connected peers.
    pub peers: usize,
}

/// The connected peers, or `None` when the network does not answer in time.
pub(super) async fn connected_peers(api: &Api) -> Option<Vec<PeerInfo>> {
    tokio::time::timeout(NETWORK_TIMEOUT, api.ctx.network.peers()).await.ok()?.ok()
}

/// The number of connected peers: the network's answer, or the runtime's gauge.
pub(super) async fn peer_count(api: &Api) -> usize {
    match connected_peers(api).await {
        Some(peers) => peers.len(),
        None => {
            let gauge = api.ctx.metrics.peers.load(std::sync::atomic::Ordering::Relaxed);
            usize::try_from(gauge).unwrap_or(usize::MAX)
        }
    }
}

/// This node's listen addresses with its peer id appended, and its reachability (empty and
/// `unknown` when the network does not answer in time).
async fn reach(api: &Api) -> (Vec<String>, Reachability) {
    let network = &api.ctx.network;
    let ask = async {
        Ok::<_, NetworkError>((network.listen_addresses().await?, network.reachability().await?))
    };
    let Ok(Ok((addresses, reachability))) = tokio::time::timeout(NETWORK_TIMEOUT, ask).await else {
        return (Vec::new(), Reachability::Unknown);
    };
    let peer = network.local_peer();
    let addresses =
        addresses.into_iter().map(|a| a.with_p2p(peer).unwrap_or_else(|a| a).to_string()).collect();
    (addresses, reachability)
}

pub(super) async fn status(State(api): State<Api>) -> ApiResult<Json<StatusView>> {
    let peers = peer_count(&api).await;
    let (listen_addrs, reachability) = reach(&api).await;
    let (height, block_hash, time_ms, state_root) = api
        .read(|l| {
            let meta = l.state().meta();
            Ok((meta.height, meta.last_block_hash, meta.last_time_ms, l.state_root()))
        })
        .await?;
    Ok(Json(StatusView {
        chain_id: api.ctx.genesis.chain_id.clone(),
        genesis_hash: api.ctx.genesis.hash(),
        height,
        block_hash,
        time_ms,
        state_root,
        role: api.ctx.role,
        account: api.ctx.key.account(),
        peer_id: api.ctx.network.local_peer().to_string(),
        listen_addrs,
        reachability: reachability.name().into(),
        peers,
    }))
}

/// A line of `GET /peers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerView {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its account, once it passed the handshake.
    pub account: Option<AccountId>,
    /// Its gossipsub score, when finite.
    pub score: Option<f64>,
    /// The gossip topics whose mesh it is in.
    pub mesh_topics: Vec<String>,
    /// Its open connections.
    pub connections: Vec<ConnectionView>,
    /// The blob bytes it served this node since it connected, by the kind of connection.
    pub blob_bytes_received: BlobBytesView,
}

/// Blob bytes received from a peer, in [`PeerView`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct BlobBytesView {
    /// Over direct connections (dialed by either side, or a hole punched through NATs).
    pub direct: u64,
    /// Through a relay.
    pub relayed: u64,
}

/// One connection to a peer, in [`PeerView`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionView {
    /// The peer's address on it (through the relay for a relayed one).
    pub address: String,
    /// Whether this node dialed it.
    pub outbound: bool,
    /// Whether it runs through a relay (`/p2p-circuit`) rather than directly.
    pub relayed: bool,
}

pub(super) async fn peers(State(api): State<Api>) -> ApiResult<Json<Vec<PeerView>>> {
    let peers = connected_peers(&api)
        .await
        .ok_or_else(|| ApiError::unavailable("the network did not answer"))?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| PeerView {
                peer_id: p.peer.to_string(),
                account: p.account,
                score: p.score.filter(|s| s.is_finite()),
                mesh_topics: p.mesh_topics.iter().map(|t| t.name().into()).collect(),
                connections: p
                    .connections
                    .into_iter()
                    .map(|c| ConnectionView {
                        address: c.address.to_string(),
                        outbound: c.outbound,
                        relayed: c.relayed,
                    })
                    .collect(),
                blob_bytes_received: BlobBytesView {
                    direct: p.blob_bytes.direct,
                    relayed: p.blob_bytes.relayed,
                },
            })
            .collect(),
    ))
}

/// Whether a validator's precommit is in the commit certificate of a recent height.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastVote {
    /// The height.
    pub height: Height,
    /// The round its block was committed in.
    pub round: u32,
    /// Whether the certificate holds the validator's precommit.
    pub signed: bool,
}

/// A line of `GET /validators`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorView {
    /// The validator's account.
    pub account: AccountId,
    /// Its name.
    pub name: String,
    /// Its stake.
    #[serde(with = "decimal")]
    pub stake: u64,
    /// Its voting power in the set for the next block (0 when not in it).
    #[serde(with = "decimal")]
    pub power: u64,
    /// Whether it is in the set for the next block.
    pub in_set: bool,
    /// Its precommits in the most recent commit certificates, newest first.
    pub last_votes: Vec<LastVote>,
    /// The latest prevote or precommit this node heard from the validator, if any.
    pub live_vote: Option<Vote>,
}

pub(super) async fn validators(State(api): State<Api>) -> ApiResult<Json<Vec<ValidatorView>>> {
    let live = api.ctx.live_votes.clone();
    let list = api
        .read(move |l| {
            let state = l.state();
            let tip = state.height();
            let set = state.validator_set(tip.next());
            let first = tip.0.saturating_sub(LAST_VOTES_HEIGHTS - 1).max(1);
            let mut certs = Vec::new();
            for h in (first..=tip.0).rev() {
                if let Some(cert) = l.commit(Height(h)).map_err(store_error)? {
                    certs.push(cert);
                }
            }
            Ok(state
                .validators
                .iter()
                .map(|(account, record)| ValidatorView {
                    account: *account,
                    name: record.name.clone(),
                    stake: record.stake.0,
                    power: set.and_then(|s| s.power_of(account)).unwrap_or(0),
                    in_set: set.is_some_and(|s| s.contains(account)),
                    last_votes: certs
                        .iter()
                        .map(|c| LastVote {
                            height: c.height,
                            round: c.round.0,
                            signed: c.signatures.iter().any(|s| s.validator == *account),
                        })
                        .collect(),
                    live_vote: live.latest(account),
                })
                .collect())
        })
        .await?;
    Ok(Json(list))
}

/// The store failed: a 500 naming why.
pub(super) fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("the ledger store failed: {e}"))
}

/// `?from=&limit=` of a paged list.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// First item (height or id); by default the page ends at the newest item.
    pub from: Option<u64>,
    /// How many items.
    pub limit: Option<u64>,
}

impl Page {
    /// The inclusive range of items `1..=last` this page covers, with `limit` bounded by `max`
    /// and `default` when absent.
    pub fn range(
        &self,
        last: u64,
        default: u64,
        max: u64,
    ) -> ApiResult<std::ops::RangeInclusive<u64>> {
        let limit = self.limit.unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(ApiError::bad_request(format!("limit must be 1 to {max}, got {limit}")));
        }
        let from = match self.from {
            Some(from) => from.max(1),
            None => last.saturating_sub(limit - 1).max(1),
        };
        Ok(from..=from.saturating_add(limit - 1).min(last))
    }
}

/// Parses the query, naming what is wrong.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

pub(super) async fn blocks(
    State(api): State<Api>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Json<Vec<BlockSummary>>> {
    let page = query(page)?;
    let list = api
        .read(move |l| {
            let range = page.range(l.height().0, BLOCKS_LIMIT_DEFAULT, BLOCKS_LIMIT_MAX)?;
            let mut out = Vec::new();
            for h in range {
                if let Some(block) = l.block(Height(h)).map_err(store_error)? {
                    out.push(BlockSummary::from(&block));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Json(list))
}

pub(super) async fn block(
    State(api): State<Api>,
    Path(height): Path<String>,
) -> ApiResult<Json<BlockDetail>> {
    let height: u64 = height.parse().map_err(|_| {
        ApiError::bad_request(format!("block height must be a decimal number, got {height:?}"))
    })?;
    let detail = api
        .read(move |l| {
            let block = l
                .block(Height(height))
                .map_err(store_error)?
                .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))?;
            let cert = l.commit(Height(height)).map_err(store_error)?;
            Ok(BlockDetail::new(&block, cert.as_ref()))
        })
        .await?;
    Ok(Json(detail))
}

pub(super) async fn tx(
    State(api): State<Api>,
    Path(hash): Path<String>,
) -> ApiResult<Json<TxView>> {
    let hash: Hash = hash.parse().map_err(|e| ApiError::bad_request(format!("tx hash: {e}")))?;
    let view = api
        .read(move |l| {
            let not_found = || {
                ApiError::not_found(format!(
                    "no transaction {hash} on the chain (pending transactions are not listed)"
                ))
            };
            let at = l.tx_location(&hash).map_err(store_error)?.ok_or_else(not_found)?;
            let block = l.block(at.height).map_err(store_error)?.ok_or_else(not_found)?;
            let tx = block.txs.get(at.index as usize).ok_or_else(not_found)?;
            Ok(TxView::new(tx, &block, at.index))
        })
        .await?;
    Ok(Json(view))
}
