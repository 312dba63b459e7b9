//! Hostile peers and clients for the hostile suite: a raw libp2p attacker built on the `libp2p`
//! crate (its own swarms, not our node's network code), and an HTTP attacker on plain TCP.
//!
//! Each attack runs for a bounded time and returns what it saw, so a scenario can assert on it
//! (how many connections the node let one IP hold, how many sync bytes one identity got, whether
//! a malformed frame was answered). Consensus attacks get real committed blocks with
//! [`committed_blocks`], build a swarm with [`gossip_swarm`] and publish encoded blocks and
//! consensus envelopes (tampered, far-future, signed by strangers) with [`publish_for`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, noise, ping, tcp, yamux};
use node::network::codec::{SyncCodec, SyncRequest, SyncResponse};

/// Largest answer the raw codec reads, in bytes.
const RAW_RESPONSE_BYTES_MAX: u64 = 16 << 20;

/// A swarm of a fresh identity over TCP + Noise + Yamux that keeps its connections open.
fn swarm<B: NetworkBehaviour>(behaviour: B) -> anyhow::Result<Swarm<B>> {
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_| behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build())
}

/// A fresh identity's swarm that dials `target` to send it requests on `protocol` with `codec`,
/// each failing after `request_timeout`.
fn client<C>(
    target: &Multiaddr,
    codec: C,
    protocol: C::Protocol,
    request_timeout: Duration,
) -> anyhow::Result<Swarm<request_response::Behaviour<C>>>
where
    C: request_response::Codec + Clone + Send + 'static,
{
    let behaviour = request_response::Behaviour::with_codec(
        codec,
        [(protocol, ProtocolSupport::Outbound)],
        request_response::Config::default().with_request_timeout(request_timeout),
    );
    let mut swarm = swarm(behaviour)?;
    swarm.dial(target.clone())?;
    Ok(swarm)
}

/// A [`client`] of `chain_id`'s `sync` protocol, reading answers of up to 64 MiB.
fn sync_client(
    target: &Multiaddr,
    chain_id: &str,
    request_timeout: Duration,
) -> anyhow::Result<Swarm<request_response::Behaviour<SyncCodec>>> {
    let protocol = node::network::sync_protocol(chain_id);
    client(target, SyncCodec::new(64 << 20), protocol, request_timeout)
}

/// What a connection flood achieved.
#[derive(Debug)]
pub struct FloodReport {
    /// Identities that dialed.
    pub identities: usize,
    /// Connections the node let them hold at the end.
    pub held: usize,
    /// Connections that were established and then closed by the node (refused or evicted).
    pub closed: usize,
}

/// Dials `target` from `identities` fresh identities on this one IP, holds what the node
/// accepts for `hold`, then counts the connections still open. Runs until `hold` is over.
pub async fn connection_flood(
    target: &Multiaddr,
    identities: usize,
    hold: Duration,
) -> anyhow::Result<FloodReport> {
    let held = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let end = tokio::time::Instant::now() + hold;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..identities {
        let mut swarm = swarm(ping::Behaviour::default())?;
        swarm.dial(target.clone())?;
        let (held, closed) = (held.clone(), closed.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::ConnectionClosed { .. } = event {
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ = tokio::time::sleep_until(end) => break,
                }
            }
            if swarm.connected_peers().next().is_some() {
                held.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(FloodReport {
        identities,
        held: held.load(Ordering::Relaxed),
        closed: closed.load(Ordering::Relaxed),
    })
}

/// What a sync flood got.
#[derive(Debug, Default)]
pub struct SyncFloodReport {
    /// Encoded bytes of block answers received, per identity.
    pub bytes: Vec<usize>,
    /// `Busy` answers, over all identities.
    pub busy: usize,
    /// Block answers, over all identities.
    pub answers: usize,
}

/// Asks `target` for the first `count` blocks over and over from `identities` identities, with
/// `in_flight` requests each, for `duration`; counts the bytes each one got.
pub async fn sync_flood(
    target: &Multiaddr,
    peer: PeerId,
    chain_id: &str,
    identities: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<SyncFloodReport> {
    let end = tokio::time::Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..identities {
        let mut swarm = sync_client(target, chain_id, Duration::from_secs(30))?;
        tasks.spawn(async move {
            let request = SyncRequest { from: consensus::types::Height(1), count: 1_024 };
            let (mut bytes, mut busy, mut answers) = (0usize, 0usize, 0usize);
            let mut asked = false;
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { .. } if !asked => {
                            asked = true;
                            for _ in 0..in_flight {
                                swarm.behaviour_mut().send_request(&peer, request);
                            }
                        }
                        SwarmEvent::Behaviour(request_response::Event::Message {
                            message: request_response::Message::Response { response, .. },
                            ..
                        }) => {
                            match &response {
                                SyncResponse::Blocks(_) => {
                                    answers += 1;
                                    bytes += consensus::encoding::encode(&response).len();
                                }
                                SyncResponse::Busy => busy += 1,
                                SyncResponse::Unavailable => {}
                            }
                            swarm.behaviour_mut().send_request(&peer, request);
                        }
                        SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                            swarm.behaviour_mut().send_request(&peer, request);
                        }
                        _ => {}
                    },
                    _ = tokio::time::sleep_until(end) => break,
                }
            }
            (bytes, busy, answers)
        });
    }
    let mut report = SyncFloodReport::default();
    while let Some(done) = tasks.join_next().await {
        let (bytes, busy, answers) = done?;
        report.bytes.push(bytes);
        report.busy += busy;
        report.answers += answers;
    }
    Ok(report)
}

/// Asks `target` once for up to `count` committed blocks from height `from` over `sync`, as any
/// peer may: the material for tampered copies.
pub async fn committed_blocks(
    target: &Multiaddr,
    peer: PeerId,
    chain_id: &str,
    from: u64,
    count: u32,
) -> anyhow::Result<Vec<node::network::CommittedBlock>> {
    let mut swarm = sync_client(target, chain_id, Duration::from_secs(20))?;
    let request = SyncRequest { from: consensus::types::Height(from), count };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .context("no sync answer within 30 s")?;
        match event {
            SwarmEvent::ConnectionEstablished { .. } => {
                swarm.behaviour_mut().send_request(&peer, request);
            }
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => match response {
                SyncResponse::Blocks(blocks) => return Ok(blocks),
                other => anyhow::bail!("asked for blocks, got {other:?}"),
            },
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                anyhow::bail!("sync request failed: {error}")
            }
            _ => {}
        }
    }
}

/// A request-response codec that writes a request's bytes exactly as given (no framing), so a
/// frame can lie about its length or carry junk, and reads whatever comes back.
#[derive(Clone, Debug, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(std::io::Error::other("the attacker serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut answer = Vec::new();
        io.take(RAW_RESPONSE_BYTES_MAX).read_to_end(&mut answer).await?;
        Ok(answer)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

/// Sends each of `frames` raw on `protocol` to `target` (one stream each, in order) and returns
/// each answer: the bytes read back, or `None` when the node reset the stream or sent nothing.
pub async fn raw_frames(
    target: &Multiaddr,
    peer: PeerId,
    protocol: StreamProtocol,
    frames: Vec<Vec<u8>>,
) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    let mut swarm = client(target, RawCodec, protocol, Duration::from_secs(20))?;
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut pending = None;
    let mut frames = frames.into_iter();
    loop {
        if pending.is_none() {
            match frames.next() {
                Some(frame) => pending = Some(swarm.behaviour_mut().send_request(&peer, frame)),
                None => return Ok(answers),
            }
        }
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .context("the raw frames got no answer within 60 s")?;
        match event {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            }) if Some(request_id) == pending => {
                answers.push(Some(response).filter(|r| !r.is_empty()));
                pending = None;
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                request_id, ..
            }) if Some(request_id) == pending => {
                answers.push(None);
                pending = None;
            }
            _ => {}
        }
    }
}

/// The behaviour of a gossiping attacker.
pub type GossipBehaviour = gossipsub::Behaviour;

/// A gossipsub swarm subscribed to every topic of `chain_id`, with a transmit limit of
/// `transmit_bytes_max` (set it above the node's to send oversized messages). Messages are
/// anonymous, as our nodes expect.
pub fn gossip_swarm(
    chain_id: &str,
    transmit_bytes_max: usize,
) -> anyhow::Result<Swarm<GossipBehaviour>> {
    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(transmit_bytes_max)
        .validation_mode(ValidationMode::Anonymous)
        // Anonymous messages have no author or sequence number: ids from the content, so two
        // different messages are never taken for one.
        .message_id_fn(|m: &gossipsub::Message| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            m.data.hash(&mut hasher);
            gossipsub::MessageId::from(hasher.finish().to_be_bytes().to_vec())
        })
        .build()?;
    let mut behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)
        .map_err(anyhow::Error::msg)?;
    for topic in node::network::Topic::ALL {
        behaviour.subscribe(&topic.ident(chain_id))?;
    }
    swarm(behaviour)
}

/// What [`publish_for`] saw.
#[derive(Debug, Default)]
pub struct Published {
    /// Messages that went out.
    pub sent: usize,
    /// Whether the node closed the connection after one went out (it disconnects and bans a
    /// peer whose score drops under the graylist threshold).
    pub disconnected: bool,
    /// The last reason gossipsub gave for not sending, if any.
    pub last_error: Option<String>,
}

/// Most messages [`publish_for`] publishes every 100 ms.
const PUBLISH_BURST: usize = 64;

/// Connects `swarm` to `target`, then publishes each of `messages` on `topic`, up to
/// [`PUBLISH_BURST`] every 100 ms (retrying while gossipsub has no subscribed peer yet), for at
/// most `duration`, or until the node disconnects.
pub async fn publish_for(
    swarm: &mut Swarm<GossipBehaviour>,
    target: &Multiaddr,
    topic: IdentTopic,
    messages: Vec<Vec<u8>>,
    duration: Duration,
) -> anyhow::Result<Published> {
    swarm.dial(target.clone())?;
    let end = tokio::time::Instant::now() + duration;
    let mut queue = messages.into_iter().peekable();
    let mut published = Published::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionClosed { num_established: 0, .. } if published.sent > 0 => {
                    published.disconnected = true;
                    return Ok(published);
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    published.last_error = Some(format!("dial: {error}"));
                }
                _ => {}
            },
            _ = tick.tick() => {
                for _ in 0..PUBLISH_BURST {
                    let Some(message) = queue.peek() else { break };
                    match swarm.behaviour_mut().publish(topic.clone(), message.clone()) {
                        Ok(_) => {
                            queue.next();
                            published.sent += 1;
                        }
                        Err(e) => {
                            published.last_error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(end) => return Ok(published),
        }
    }
}

/// Opens `count` TCP connections to `addr` that never send a byte; they stay open until the
/// returned streams are dropped or the server closes them.
pub fn idle_http_connections(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    (0..count)
        .map(|i| TcpStream::connect(addr).with_context(|| format!("idle connection {i}")))
        .collect()
}

/// How many of `streams` the server has closed (a read returns end of file or an error).
pub fn closed_by_server(streams: &[TcpStream]) -> usize {
    streams
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).is_ok() && {
                let mut byte = [0u8; 1];
                !matches!((&**s).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        })
        .count()
}

/// Sends `request` (a whole HTTP/1.1 request, headers and any body) on a fresh connection and
/// returns the status code of the answer, reading for at most `timeout`.
pub fn raw_http(addr: SocketAddr, request: &[u8], timeout: Duration) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // The server may answer (413, 403) and close before a large body is all written.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") && started.elapsed() < timeout {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e).context("reading the HTTP answer"),
        }
    }
    let head = String::from_utf8_lossy(&answer);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    Ok(status)
}

/// The resident memory of process `pid`, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}
