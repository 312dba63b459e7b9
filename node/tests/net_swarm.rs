//! The network layer end to end: in-process swarms over TCP on 127.0.0.1, each on a free port.
//!
//! Every node runs a small application task that plays the role loop's part: it answers gossip
//! with a mempool's verdict and sync requests from a ledger, and forwards every other event to the
//! test. Waits are bounded: a wait that times out fails the test and names what it waited for.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use consensus::bft::Message as ConsensusMessage;
use consensus::chain::{Ledger, build_block};
use consensus::crypto::Keypair;
use consensus::encoding::encode;
use consensus::genesis::{Genesis, GenesisBalance, GenesisValidator, Params};
use consensus::hash::sha256;
use consensus::state::State;
use consensus::storage::MemStore;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Amount, Hash, Height, Nonce, Round};
use consensus::vote::{CommitCertificate, SignedVote, Vote, VoteKind};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::{Multiaddr, PeerId};
use node::keystore;
use node::mempool::{Mempool, MempoolLimits};
use node::network::codec::{BlobCodec, BlobResponse, StatusCodec, SyncRequest, SyncResponse};
use node::network::handshake::{STATUS_PROTOCOL, Status, StatusResponse};
use node::network::reach::Reachability;
use node::network::{
    self, BlobFetchError, GossipMessage, HandshakeError, Misbehavior, NetworkClient, NetworkConfig,
    NetworkEvent, SyncLimits, Topic, Validation,
};
use tokio::sync::mpsc;

mod common;
use common::pseudo_random_bytes;

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

const CHAIN: &str = "crucible-net-test";

fn validator_key() -> Keypair {
    Keypair::from_seed([200; 32])
}

fn sender_key() -> Keypair {
    Keypair::from_seed([201; 32])
}

fn genesis(chain_id: &str, genesis_time_ms: u64) -> Genesis {
    let validator = validator_key();
    Genesis {
        chain_id: chain_id.into(),
        genesis_time_ms,
        validators: vec![GenesisValidator {
            account: validator.account(),
            stake: Amount(100),
            name: "v".into(),
        }],
        balances: vec![GenesisBalance { account: sender_key().account(), amount: Amount(1_000) }],
        params: Params::default(),
        tasks: Vec::new(),
    }
}

fn transfer(nonce: u64, amount: u64) -> SignedTx {
    let kind = TxKind::Transfer { to: AccountId([9; 32]), amount: Amount(amount) };
    SignedTx::sign(&sender_key(), Tx { chain_id: CHAIN.into(), nonce: Nonce(nonce), kind })
}

/// A node under test: its client, the events its application task forwards, its address.
struct TestNode {
    client: NetworkClient,
    events: mpsc::Receiver<NetworkEvent>,
    address: Multiaddr,
    peer: PeerId,
    _dir: tempfile::TempDir,
}

/// Plays the role loop: answers gossip with the mempool's verdict and sync from the ledger.
async fn application(
    client: NetworkClient,
    mut events: mpsc::Receiver<NetworkEvent>,
    forward: mpsc::Sender<NetworkEvent>,
    mut mempool: Mempool,
    ledger: Ledger,
    limits: SyncLimits,
) {
    while let Some(event) = events.recv().await {
        match event {
            NetworkEvent::GossipReceived { id, message } => {
                let validation = match &message {
                    GossipMessage::Txs(txs) => {
                        let admitted =
                            txs.iter().filter(|tx| mempool.insert((*tx).clone()).is_ok());
                        if admitted.count() > 0 { Validation::Accept } else { Validation::Ignore }
                    }
                    _ => Validation::Ignore,
                };
                client.validate(id.clone(), validation).await.unwrap();
                let _ = forward.send(NetworkEvent::GossipReceived { id, message }).await;
            }
            NetworkEvent::SyncRequested { request, responder, .. } => {
                let response = network::sync::serve(&ledger, &request, &limits);
                client.respond_sync(responder, response).await.unwrap();
            }
            other => {
                let _ = forward.send(other).await;
            }
        }
    }
}

async fn spawn_node_with(
    seed: u8,
    genesis: &Genesis,
    ledger: Option<Ledger>,
    mempool: Option<Mempool>,
    configure: impl FnOnce(&mut NetworkConfig),
) -> TestNode {
    // `RUST_LOG=node=debug` shows what the nodes did.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let key = Keypair::from_seed([seed; 32]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = NetworkConfig::for_chain(
        &genesis.chain_id,
        genesis.hash(),
        &genesis.params,
        dir.path().join("blobs"),
    );
    config.mdns = false;
    configure(&mut config);
    // As the node wires it: the network reads the application's mempool's full flag.
    let mempool = mempool.unwrap_or_else(|| {
        Mempool::new(&State::from_genesis(genesis), MempoolLimits::for_chain(&genesis.params))
    });
    config.mempool_full = mempool.full_flag();
    let limits = config.sync.clone();
    let (client, events, event_loop) =
        network::start(keystore::libp2p_keypair(&key).unwrap(), config).unwrap();
    tokio::spawn(event_loop.run());
    let ledger = match ledger {
        Some(ledger) => ledger,
        None => Ledger::open(Box::new(MemStore::new()), genesis).unwrap(),
    };
    let (forward, mut forwarded) = mpsc::channel(1_024);
    tokio::spawn(application(client.clone(), events, forward, mempool, ledger, limits));
    let peer = client.local_peer();
    let listening = wait_for(&mut forwarded, "the node to listen", |e| match e {
        NetworkEvent::Listening { address } => Some(address.clone()),
        _ => None,
    })
    .await;
    let address = listening.with(Protocol::P2p(peer));
    TestNode { client, events: forwarded, address, peer, _dir: dir }
}

async fn spawn_node(seed: u8, bootstrap: Vec<Multiaddr>) -> TestNode {
    spawn_node_with(seed, &genesis(CHAIN, 0), None, None, |c| c.bootstrap = bootstrap).await
}

/// Waits for the first event `pick` accepts, skipping others; fails after [`WAIT`].
async fn wait_for<T>(
    events: &mut mpsc::Receiver<NetworkEvent>,
    what: &str,
    mut pick: impl FnMut(&NetworkEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(&event) {
                return Some(found);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn wait_connected(node: &mut TestNode, peer: PeerId, what: &str) {
    wait_for(&mut node.events, what, |e| {
        matches!(e, NetworkEvent::PeerConnected { peer: p, .. } if *p == peer).then_some(())
    })
    .await
}

/// Waits until `node` has `peer` in its gossip mesh for `topic`. Gossipsub grafts on its
/// heartbeat and emits no event for it, so this polls the peer list.
async fn wait_mesh(node: &TestNode, peer: PeerId, topic: Topic) {
    bounded("a gossip mesh to form", async {
        loop {
            let peers = node.client.peers().await.unwrap();
            if peers.iter().any(|p| p.peer == peer && p.mesh_topics.contains(&topic)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_finds_a_peer_through_its_bootstrap_peer() {
    let c = spawn_node(3, vec![]).await;
    let mut b = spawn_node(2, vec![c.address.clone()]).await;
    wait_connected(&mut b, c.peer, "B to connect to C").await;
    // A knows only B; B knows C; Kademlia's bootstrap query takes A to C.
    let mut a = spawn_node(1, vec![b.address.clone()]).await;
    wait_connected(&mut a, b.peer, "A to connect to B").await;
    wait_connected(&mut a, c.peer, "A to find and connect to C").await;
    let peers = a.client.peers().await.unwrap();
    let c_info = peers.iter().find(|p| p.peer == c.peer).expect("C among A's peers");
    assert_eq!(c_info.account, Some(Keypair::from_seed([3; 32]).account()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_transaction_gossiped_from_one_node_reaches_the_others() {
    // A line: A - B - C, so the tx reaches C only if B validates and forwards it.
    let mut b = spawn_node(11, vec![]).await;
    let mut a = spawn_node(12, vec![b.address.clone()]).await;
    let mut c = spawn_node(13, vec![b.address.clone()]).await;
    wait_connected(&mut a, b.peer, "A to connect to B").await;
    wait_connected(&mut c, b.peer, "C to connect to B").await;
    wait_mesh(&a, b.peer, Topic::Txs).await;
    wait_mesh(&b, c.peer, Topic::Txs).await;

    let txs = vec![transfer(0, 5), transfer(1, 6)];
    a.client.publish_txs(&txs).await.unwrap();
    for (node, name) in [(&mut b, "B"), (&mut c, "C")] {
        let got = wait_for(&mut node.events, &format!("{name} to receive the txs"), |e| match e {
            NetworkEvent::GossipReceived { message: GossipMessage::Txs(t), .. } => Some(t.clone()),
            _ => None,
        })
        .await;
        assert_eq!(got, txs, "one batch, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_speak_only_quic_pass_the_status_exchange_and_gossip() {
    let quic =
        |c: &mut NetworkConfig| c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    let mut b = spawn_node_with(14, &genesis(CHAIN, 0), None, None, quic).await;
    assert!(b.address.iter().any(|p| p == Protocol::QuicV1), "{}", b.address);
    let bootstrap = vec![b.address.clone()];
    let mut a = spawn_node_with(15, &genesis(CHAIN, 0), None, None, |c| {
        quic(c);
        c.bootstrap = bootstrap;
    })
    .await;
    wait_connected(&mut a, b.peer, "A to connect to B over QUIC").await;
    let peers = a.client.peers().await.unwrap();
    let link = &peers.iter().find(|p| p.peer == b.peer).unwrap().connections[0];
    assert!(link.outbound && !link.relayed, "{link:?}");
    assert!(link.address.iter().any(|p| p == Protocol::QuicV1), "{}", link.address);

    wait_mesh(&a, b.peer, Topic::Txs).await;
    let txs = vec![transfer(0, 7)];
    a.client.publish_txs(&txs).await.unwrap();
    let got = wait_for(&mut b.events, "B to receive the tx over QUIC", |e| match e {
        NetworkEvent::GossipReceived { message: GossipMessage::Txs(t), .. } => Some(t.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, txs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_nat_is_dialed_through_a_relay_then_directly_after_dcutr() {
    let g = genesis(CHAIN, 0);
    let relay = spawn_node_with(71, &g, None, None, |c| c.relay_server = true).await;
    let bootstrap = vec![relay.address.clone()];
    let mut private = spawn_node_with(72, &g, None, None, |c| {
        c.behind_nat = true;
        c.bootstrap = bootstrap;
    })
    .await;
    wait_connected(&mut private, relay.peer, "the private node to join the relay").await;
    assert_eq!(private.client.reachability().await.unwrap(), Reachability::Private);
    let circuit = bounded("the private node to listen through the relay", async {
        loop {
            let addresses = private.client.listen_addresses().await.unwrap();
            if let Some(a) =
                addresses.into_iter().find(|a| a.iter().any(|p| p == Protocol::P2pCircuit))
            {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(circuit.to_string().contains(&format!("/p2p/{}/p2p-circuit", relay.peer)), "{circuit}");

    // A node that knows only that address dials it: through the relay, and the status exchange
    // passes over the circuit.
    let mut dialer = spawn_node_with(73, &g, None, None, |_| {}).await;
    dialer.client.dial(circuit.with_p2p(private.peer).unwrap()).await.unwrap();
    wait_connected(
        &mut dialer,
        private.peer,
        "the dialer to admit the private node over the relay",
    )
    .await;
    let links = |peers: Vec<node::network::PeerInfo>| {
        peers
            .into_iter()
            .find(|p| p.peer == private.peer)
            .map(|p| p.connections)
            .unwrap_or_default()
    };
    let first = links(dialer.client.peers().await.unwrap());
    assert!(first.iter().any(|l| l.relayed && l.outbound), "{first:?}");
    // A blob fetched from it counts every byte against the connection it came over (the relayed
    // one, or the punched hole if DCUtR was quicker: requests take turns over open connections).
    let bytes = pseudo_random_bytes(3 << 20, 72);
    let hash = private.client.blob_store().put(&bytes).unwrap();
    let fetch = dialer.client.fetch_blob_from(private.peer, hash, 4 << 20);
    bounded("the blob fetch from the private node", fetch).await.unwrap();
    let peers = dialer.client.peers().await.unwrap();
    let counted = peers.iter().find(|p| p.peer == private.peer).unwrap().blob_bytes;
    assert_eq!(counted.direct + counted.relayed, bytes.len() as u64, "{counted:?}");
    // DCUtR: the private node answers the relayed connection by punching a hole; on loopback it
    // succeeds, and a direct connection joins the relayed one.
    bounded("DCUtR to open a direct connection", async {
        loop {
            if links(dialer.client.peers().await.unwrap()).iter().any(|l| !l.relayed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_mempool_is_full_drops_tx_gossip_before_checking_it() {
    let g = genesis(CHAIN, 0);
    let limits = MempoolLimits { txs_max: 1, ..MempoolLimits::for_chain(&g.params) };
    let mut full = Mempool::new(&State::from_genesis(&g), limits);
    full.insert(transfer(0, 5)).unwrap();
    let mut b = spawn_node_with(18, &g, None, Some(full), |_| {}).await;
    let mut a = spawn_node(19, vec![b.address.clone()]).await;
    wait_connected(&mut a, b.peer, "A to connect to B").await;
    wait_mesh(&a, b.peer, Topic::Txs).await;
    wait_mesh(&a, b.peer, Topic::Consensus).await;
    // A tx batch, then a vote over the same connection: B takes its messages in order, so by
    // the time the vote reaches its application the batch was handled, and it never arrived.
    a.client.publish_txs(&[transfer(1, 6)]).await.unwrap();
    let vote = Vote { height: Height(1), round: Round(0), kind: VoteKind::Prevote, block: None };
    let message = ConsensusMessage::Vote(SignedVote::sign(&validator_key(), CHAIN, vote));
    a.client.publish_consensus(&message).await.unwrap();
    let first = wait_for(&mut b.events, "B to receive the vote", |e| match e {
        NetworkEvent::GossipReceived { message: GossipMessage::Txs(_), .. } => Some("txs"),
        NetworkEvent::GossipReceived { message: GossipMessage::Consensus(_), .. } => Some("vote"),
        _ => None,
    })
    .await;
    assert_eq!(first, "vote", "a full mempool's node took a tx batch in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consensus_message_sent_again_goes_out_again() {
    // The engine's rebroadcast sends its own vote again for peers that lost it: the second send
    // must reach the peer too, not be dropped as already published.
    let mut b = spawn_node(16, vec![]).await;
    let mut a = spawn_node(17, vec![b.address.clone()]).await;
    wait_connected(&mut a, b.peer, "A to connect to B").await;
    wait_mesh(&a, b.peer, Topic::Consensus).await;
    let vote = Vote { height: Height(1), round: Round(0), kind: VoteKind::Prevote, block: None };
    let message = ConsensusMessage::Vote(SignedVote::sign(&validator_key(), CHAIN, vote));
    let mut ids = Vec::new();
    for send in ["first", "second"] {
        a.client.publish_consensus(&message).await.unwrap();
        let (id, got) =
            wait_for(&mut b.events, &format!("B to receive the {send} send"), |e| match e {
                NetworkEvent::GossipReceived { id, message: GossipMessage::Consensus(m) } => {
                    Some((id.message_id.clone(), m.as_ref().clone()))
                }
                _ => None,
            })
            .await;
        assert_eq!(got, message);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "each send is a message of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_blob_is_found_transferred_and_verified() {
    let a = spawn_node(21, vec![]).await;
    let mut b = spawn_node(22, vec![a.address.clone()]).await;
    wait_connected(&mut b, a.peer, "B to connect to A").await;

    let bytes = pseudo_random_bytes(20_000_000, 21);
    let hash = a.client.blob_store().put(&bytes).unwrap();
    bounded("A to provide the blob", a.client.provide_blob(hash)).await.unwrap();

    let providers = bounded("providers", b.client.find_providers(hash)).await.unwrap();
    assert!(providers.contains(&a.peer), "A is a provider: {providers:?}");
    let plan = network::FetchPlan {
        preferred: vec![],
        hedge_after: WAIT,
        deadline: tokio::time::Instant::now() + WAIT,
    };
    let path = b.client.fetch_blob(hash, 32 << 20, &plan).await.unwrap();
    let fetched = std::fs::read(&path).unwrap();
    assert_eq!(fetched.len(), bytes.len());
    assert_eq!(sha256(&fetched), hash);
    assert!(b.client.blob_store().contains(&hash));
    // Too small a limit is refused before anything is written.
    let other = a.client.blob_store().put(&bytes[..1_000]).unwrap();
    let refused = bounded("a refused fetch", b.client.fetch_blob_from(a.peer, other, 999)).await;
    assert!(matches!(refused, Err(BlobFetchError::TooLarge { size_bytes: 1_000, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_over_the_limit_is_refused_after_at_most_the_limit_and_one_chunk() {
    const LIMIT: u64 = 8 << 20;
    let a = spawn_node(25, vec![]).await;
    let mut b = spawn_node(26, vec![a.address.clone()]).await;
    wait_connected(&mut b, a.peer, "B to connect to A").await;
    let hash = a.client.blob_store().put(&pseudo_random_bytes(40 << 20, 25)).unwrap();
    let chunk = u64::from(b.client.blob_limits().chunk_bytes);

    let before = b.client.traffic().inbound();
    let refused = bounded("a refused fetch", b.client.fetch_blob_from(a.peer, hash, LIMIT)).await;
    assert!(
        matches!(refused, Err(BlobFetchError::TooLarge { size_bytes, .. }) if size_bytes == 40 << 20),
        "expected TooLarge, got {refused:?}"
    );
    // Answers to chunks asked for before the size was known may still be on their way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = b.client.traffic().inbound() - before;
    println!("a 40 MiB blob fetched with an 8 MiB limit: refused after {received} bytes");
    assert!(
        received <= LIMIT + chunk,
        "{received} bytes arrived for a blob refused at {LIMIT} (chunk {chunk})"
    );
    assert!(!b.client.blob_store().contains(&hash));
    let temp_files = std::fs::read_dir(b.client.blob_store().dir().join("tmp")).unwrap().count();
    assert_eq!(temp_files, 0, "no temporary file is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_bytes_do_not_match_is_rejected_and_its_sender_penalized() {
    let liar = spawn_node(31, vec![]).await;
    let mut b = spawn_node(32, vec![liar.address.clone()]).await;
    wait_connected(&mut b, liar.peer, "B to connect to the liar").await;

    let bytes = pseudo_random_bytes(3_000_000, 31);
    let hash = liar.client.blob_store().put(&bytes).unwrap();
    // The liar serves other bytes under the same hash.
    let mut forged = bytes.clone();
    forged[1_234_567] ^= 0xff;
    std::fs::write(liar.client.blob_store().path(&hash), &forged).unwrap();

    let result = bounded("the fetch", b.client.fetch_blob_from(liar.peer, hash, 8 << 20)).await;
    match result {
        Err(BlobFetchError::HashMismatch { peer, hashes }) => {
            assert_eq!(peer, liar.peer);
            assert_eq!(hashes.expected, hash);
            assert_eq!(hashes.found, sha256(&forged));
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert!(!b.client.blob_store().contains(&hash));
    let temp_files = std::fs::read_dir(b.client.blob_store().dir().join("tmp")).unwrap().count();
    assert_eq!(temp_files, 0, "no temporary file is left behind");

    let score = wait_for(&mut b.events, "the liar to be penalized", |e| match e {
        NetworkEvent::PeerPenalized { peer, reason: Misbehavior::BadBlob, score }
            if *peer == liar.peer =>
        {
            Some(*score)
        }
        _ => None,
    })
    .await;
    let score = score.expect("the liar is scored");
    assert!(score < network::GRAYLIST_THRESHOLD, "score {score} is under the graylist");
    wait_for(&mut b.events, "the liar to be disconnected", |e| {
        matches!(e, NetworkEvent::PeerDisconnected { peer } if *peer == liar.peer).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_bad_gossip_is_penalized_while_honest_messages_flow() {
    let mut victim = spawn_node(41, vec![]).await;
    let mut bad = spawn_node(42, vec![victim.address.clone()]).await;
    let mut honest = spawn_node(43, vec![victim.address.clone()]).await;
    wait_connected(&mut bad, victim.peer, "the bad peer to connect").await;
    wait_connected(&mut honest, victim.peer, "the honest peer to connect").await;
    wait_mesh(&bad, victim.peer, Topic::Txs).await;
    wait_mesh(&honest, victim.peer, Topic::Txs).await;

    // Malformed bytes, and a well-formed tx whose signature does not cover its content.
    let mut forged = transfer(0, 1);
    forged.tx.kind = TxKind::Transfer { to: AccountId([9; 32]), amount: Amount(999) };
    let bad_messages = [
        b"not a transaction".to_vec(),
        encode(&[transfer(0, 1), forged]),
        vec![0xff; 100],
        vec![1, 2, 3],
    ];
    for data in bad_messages {
        bad.client.publish(Topic::Txs, data).await.unwrap();
    }
    let mut rejected = 0;
    wait_for(&mut victim.events, "the bad peer to be disconnected", |e| match e {
        NetworkEvent::GossipRejected { source, .. } if *source == bad.peer => {
            rejected += 1;
            None
        }
        NetworkEvent::PeerDisconnected { peer } if *peer == bad.peer => Some(()),
        _ => None,
    })
    .await;
    assert!(rejected >= 3, "{rejected} messages rejected before the disconnect");

    let tx = transfer(0, 7);
    honest.client.publish_txs(std::slice::from_ref(&tx)).await.unwrap();
    let got = wait_for(&mut victim.events, "the honest tx", |e| match e {
        NetworkEvent::GossipReceived { id, message: GossipMessage::Txs(t) } => {
            Some((id.source, t.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(got, (honest.peer, vec![tx]));
    let peers = victim.client.peers().await.unwrap();
    assert!(peers.iter().all(|p| p.peer != bad.peer), "the bad peer stays out");
    let honest_score = peers.iter().find(|p| p.peer == honest.peer).and_then(|p| p.score);
    assert!(honest_score.is_some_and(|s| s >= 0.0), "honest score {honest_score:?}");
}

/// Waits until `a` refuses `b` or `b` refuses `a`: whichever reads the other's handshake first
/// hangs up, so the other side may never read it.
async fn wait_refusal(a: &mut TestNode, b: &mut TestNode, what: &str) -> HandshakeError {
    let refused = |e: Option<NetworkEvent>, peer: PeerId| match e {
        Some(NetworkEvent::PeerRefused { peer: p, reason }) if p == peer => Some(reason),
        _ => None,
    };
    bounded(what, async {
        loop {
            let found = tokio::select! {
                e = a.events.recv() => refused(e, b.peer),
                e = b.events.recv() => refused(e, a.peer),
            };
            if let Some(reason) = found {
                return reason;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_chain_or_genesis_are_refused() {
    let mut a = spawn_node(51, vec![]).await;
    let mut other_chain = spawn_node_with(52, &genesis("another-chain", 0), None, None, |c| {
        c.bootstrap = vec![a.address.clone()]
    })
    .await;
    let reason = wait_refusal(&mut a, &mut other_chain, "the other chain's node refused").await;
    assert!(matches!(reason, HandshakeError::WrongChain { .. }), "{reason}");

    let mut forked = spawn_node_with(53, &genesis(CHAIN, 1), None, None, |c| {
        c.bootstrap = vec![a.address.clone()]
    })
    .await;
    let reason = wait_refusal(&mut a, &mut forked, "the other genesis's node refused").await;
    assert!(matches!(reason, HandshakeError::WrongGenesis { .. }), "{reason}");

    // Neither side ever takes the other for a peer of its chain.
    for node in [&a, &other_chain, &forked] {
        let peers = node.client.peers().await.unwrap();
        assert!(peers.is_empty(), "no refused node is a peer: {peers:?}");
    }
}

/// A ledger of `blocks` committed empty blocks, signed by the single validator.
fn ledger_with_blocks(genesis: &Genesis, blocks: u64) -> Ledger {
    let mut ledger = Ledger::open(Box::new(MemStore::new()), genesis).unwrap();
    let validator = validator_key();
    let mut last_commit = None;
    for h in 1..=blocks {
        let block =
            build_block(ledger.state(), [], h * 1_000, validator.account(), last_commit).unwrap();
        let vote = Vote {
            height: Height(h),
            round: Round(0),
            kind: VoteKind::Precommit,
            block: Some(block.hash()),
        };
        let precommit = SignedVote::sign(&validator, &genesis.chain_id, vote);
        let cert = CommitCertificate::from_precommits([&precommit]).unwrap();
        ledger.commit_block(&block, &cert).unwrap();
        last_commit = Some(cert);
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_syncs_blocks_with_certificates_and_commits_them() {
    let g = genesis(CHAIN, 0);
    let a = spawn_node_with(61, &g, Some(ledger_with_blocks(&g, 5)), None, |_| {}).await;
    let mut b = spawn_node(62, vec![a.address.clone()]).await;
    wait_connected(&mut b, a.peer, "B to connect to A").await;

    let mut behind = Ledger::open(Box::new(MemStore::new()), &g).unwrap();
    let mut from = Height(1);
    while behind.height() < Height(5) {
        let blocks =
            bounded("a sync answer", b.client.request_sync(a.peer, SyncRequest { from, count: 2 }))
                .await
                .unwrap();
        assert!(!blocks.is_empty() && blocks.len() <= 2);
        for committed in blocks {
            behind.commit_block(&committed.block, &committed.commit).unwrap();
        }
        from = behind.height().next();
    }
    let past_tip = b.client.request_sync(a.peer, SyncRequest { from: Height(6), count: 10 });
    assert!(bounded("an empty answer", past_tip).await.unwrap().is_empty());

    // The server bounds its answer by bytes: a limit of one block yields one block.
    let source = ledger_with_blocks(&g, 3);
    let one_block = SyncLimits { blocks_max: 64, response_bytes_max: 1 };
    match network::sync::serve(&source, &SyncRequest { from: Height(1), count: 3 }, &one_block) {
        SyncResponse::Blocks(blocks) => assert_eq!(blocks.len(), 1),
        other => panic!("expected blocks, got {other:?}"),
    }
}

/// How a [`StatusClient`] treats the node's question.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answering {
    /// It asks at once and holds the node's question unanswered.
    Hold,
    /// It asks at once and answers the node's question with a welcome of its own status.
    Welcome,
    /// It answers the node's question with a welcome of its own status first, and only then
    /// asks (a client whose handler answers before its own question goes out).
    WelcomeThenAsk,
}

/// A swarm of a fresh identity over TCP + Noise + Yamux, with no code of ours in it, as another
/// implementation would be; connections stay open while idle.
fn bare_swarm<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

/// The status protocol, asking and answering.
fn status_behaviour() -> request_response::Behaviour<StatusCodec> {
    request_response::Behaviour::with_codec(
        StatusCodec::default(),
        [(STATUS_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default(),
    )
}

/// A bare libp2p client that speaks only the status protocol, as another implementation would.
struct StatusClient {
    swarm: libp2p::Swarm<request_response::Behaviour<StatusCodec>>,
    /// The node's questions, held unanswered.
    unanswered: Vec<request_response::ResponseChannel<StatusResponse>>,
}

impl StatusClient {
    fn new() -> StatusClient {
        StatusClient { swarm: bare_swarm(|_| status_behaviour()), unanswered: Vec::new() }
    }

    /// Dials `node`, sends `ours`, and returns the node's answer and the status the node asked
    /// with, if its question arrived first (a node that refuses hangs up once its answer is sent,
    /// which may cut its own question short); `answering` says when it asks and what it does
    /// with the node's question.
    async fn exchange(
        &mut self,
        node: &TestNode,
        ours: Status,
        answering: Answering,
    ) -> (StatusResponse, Option<Status>) {
        use libp2p::swarm::SwarmEvent;
        self.swarm.dial(node.address.clone()).unwrap();
        let (mut answered, mut asked) = (None, None);
        bounded("the status exchange", async {
            while answered.is_none() {
                match self.swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. }
                        if peer_id == node.peer && answering != Answering::WelcomeThenAsk =>
                    {
                        self.swarm.behaviour_mut().send_request(&node.peer, ours.clone());
                    }
                    SwarmEvent::Behaviour(request_response::Event::Message { message, .. }) => {
                        match message {
                            request_response::Message::Response { response, .. } => {
                                answered = Some(response)
                            }
                            request_response::Message::Request { request, channel, .. } => {
                                asked = Some(request);
                                if answering == Answering::Hold {
                                    self.unanswered.push(channel);
                                } else {
                                    let welcome = StatusResponse::Welcome(ours.clone());
                                    let client = self.swarm.behaviour_mut();
                                    client.send_response(channel, welcome).unwrap();
                                    if answering == Answering::WelcomeThenAsk {
                                        client.send_request(&node.peer, ours.clone());
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        })
        .await;
        (answered.unwrap(), asked)
    }

    /// Drives the swarm until the node hangs up.
    async fn wait_disconnected(&mut self, node: PeerId) {
        use libp2p::swarm::SwarmEvent;
        bounded("the node to hang up", async {
            loop {
                if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } =
                    self.swarm.select_next_some().await
                    && peer_id == node
                {
                    return;
                }
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_chain_reads_why_it_is_refused_before_the_node_hangs_up() {
    let mut node = spawn_node(54, vec![]).await;
    let node_status = Status { chain_id: CHAIN.into(), genesis_hash: genesis(CHAIN, 0).hash() };
    let foreign = Status { chain_id: "another-chain".into(), genesis_hash: Hash([9; 32]) };

    let mut client = StatusClient::new();
    let client_peer = *client.swarm.local_peer_id();
    let (answer, asked) = client.exchange(&node, foreign, Answering::Hold).await;
    // The node says who it is in its refusal, with the reason, and in its own question when
    // that arrived before the hang-up.
    assert!(asked.is_none_or(|asked| asked == node_status));
    match answer {
        StatusResponse::Refused { status, reason } => {
            assert_eq!(status, node_status);
            assert!(reason.contains("another-chain") && reason.contains(CHAIN), "{reason}");
        }
        other => panic!("a foreign client was welcomed: {other:?}"),
    }
    client.wait_disconnected(node.peer).await;
    let reason = wait_for(&mut node.events, "the node to refuse the client", |e| match e {
        NetworkEvent::PeerRefused { peer, reason } if *peer == client_peer => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(matches!(reason, HandshakeError::WrongChain { .. }), "{reason}");
    assert!(node.client.peers().await.unwrap().is_empty());

    // A client of this chain that answers too is a member: no stake, no other protocol needed.
    let mut member = StatusClient::new();
    let member_peer = *member.swarm.local_peer_id();
    let (answer, _) = member.exchange(&node, node_status.clone(), Answering::Welcome).await;
    assert_eq!(answer, StatusResponse::Welcome(node_status));
    let account = wait_for(&mut node.events, "the member to be admitted", |e| match e {
        NetworkEvent::PeerConnected { peer, account } if *peer == member_peer => Some(*account),
        _ => None,
    })
    .await;
    assert!(account.is_some(), "an ed25519 PeerId names its account");
    let peers = node.client.peers().await.unwrap();
    assert_eq!(peers.iter().map(|p| p.peer).collect::<Vec<_>>(), vec![member_peer]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_genesis_that_answers_before_asking_still_reads_why_it_is_refused() {
    // The node learns the mismatch from the client's answer before the client's question
    // arrives; it must still answer that question (docs/protocol.md: a refused peer that asked
    // reads the `Refused` answer) before it hangs up.
    let node = spawn_node(55, vec![]).await;
    let node_status = Status { chain_id: CHAIN.into(), genesis_hash: genesis(CHAIN, 0).hash() };
    let forked = Status { chain_id: CHAIN.into(), genesis_hash: Hash([7; 32]) };
    let mut client = StatusClient::new();
    let (answer, asked) = client.exchange(&node, forked, Answering::WelcomeThenAsk).await;
    assert_eq!(asked, Some(node_status.clone()), "the client answered the node's question first");
    match answer {
        StatusResponse::Refused { status, reason } => {
            assert_eq!(status, node_status);
            assert!(reason.contains(&Hash([7; 32]).to_hex()), "{reason}");
        }
        other => panic!("a client of another genesis was welcomed: {other:?}"),
    }
    client.wait_disconnected(node.peer).await;
}

/// What a [`FakeProvider`] does with the blob requests it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serving {
    /// Holds every request and never answers.
    Stall,
    /// Announces a blob far over any limit.
    Oversize,
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct FakeProviderBehaviour {
    status: request_response::Behaviour<StatusCodec>,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
    blob: request_response::Behaviour<BlobCodec>,
}

/// A bare libp2p peer that passes `node`'s status exchange, publishes a Kademlia provider record
/// for `hash` on it, and serves blob requests as `serving` says. Counts the requests it took.
struct FakeProvider {
    peer: PeerId,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    async fn start(node: &TestNode, hash: Hash, serving: Serving) -> FakeProvider {
        use libp2p::swarm::SwarmEvent;
        let status = Status { chain_id: CHAIN.into(), genesis_hash: genesis(CHAIN, 0).hash() };
        let mut swarm = bare_swarm(|key| {
            let peer = key.public().to_peer_id();
            let kad_config = libp2p::kad::Config::new(network::kad_protocol(CHAIN));
            let store = libp2p::kad::store::MemoryStore::new(peer);
            let mut kad = libp2p::kad::Behaviour::with_config(peer, store, kad_config);
            kad.set_mode(Some(libp2p::kad::Mode::Server));
            FakeProviderBehaviour {
                status: status_behaviour(),
                kad,
                blob: request_response::Behaviour::with_codec(
                    BlobCodec { chunk_bytes_max: 1 << 20 },
                    [(network::BLOB_PROTOCOL, request_response::ProtocolSupport::Full)],
                    request_response::Config::default(),
                ),
            }
        });
        let peer = *swarm.local_peer_id();
        swarm.behaviour_mut().kad.add_address(&node.peer, node.address.clone());
        swarm.dial(node.address.clone()).unwrap();
        let target = node.peer;
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        let (provided, is_provided) = tokio::sync::oneshot::channel();
        let mut provided = Some(provided);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                        let me = swarm.behaviour_mut();
                        me.status.send_request(&target, status.clone());
                        me.kad
                            .start_providing(libp2p::kad::RecordKey::new(hash.as_bytes()))
                            .unwrap();
                    }
                    SwarmEvent::Behaviour(FakeProviderBehaviourEvent::Status(
                        request_response::Event::Message {
                            message: request_response::Message::Request { channel, .. },
                            ..
                        },
                    )) => {
                        let welcome = StatusResponse::Welcome(status.clone());
                        let _ = swarm.behaviour_mut().status.send_response(channel, welcome);
                    }
                    SwarmEvent::Behaviour(FakeProviderBehaviourEvent::Kad(
                        libp2p::kad::Event::OutboundQueryProgressed {
                            result: libp2p::kad::QueryResult::StartProviding(result),
                            ..
                        },
                    )) => {
                        if let Some(provided) = provided.take() {
                            let _ = provided.send(result.is_ok());
                        }
                    }
                    SwarmEvent::Behaviour(FakeProviderBehaviourEvent::Blob(
                        request_response::Event::Message {
                            message: request_response::Message::Request { channel, .. },
                            ..
                        },
                    )) => {
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match serving {
                            Serving::Stall => held.push(channel),
                            Serving::Oversize => {
                                let lie = BlobResponse::Chunk {
                                    size_bytes: 1 << 40,
                                    data: vec![0; 1 << 20],
                                };
                                let _ = swarm.behaviour_mut().blob.send_response(channel, lie);
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        assert!(bounded("the fake provider's record", is_provided).await.unwrap());
        FakeProvider { peer, requests, task }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `node` holds provider records of `hash` for all of `peers` (a record reaches the
/// node a moment after the provider's query has ended).
async fn wait_records(node: &TestNode, hash: Hash, peers: impl IntoIterator<Item = PeerId>) {
    let peers: HashSet<PeerId> = peers.into_iter().collect();
    bounded("the provider records", async {
        while !node.client.find_providers(hash).await.unwrap().is_superset(&peers) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A plan that asks `first` before anyone else, as a validator asks a blob's author.
fn plan(first: PeerId, hedge_after: Duration, timeout: Duration) -> network::FetchPlan {
    network::FetchPlan {
        preferred: vec![first],
        hedge_after,
        deadline: tokio::time::Instant::now() + timeout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stalls_or_lies_about_the_size_costs_a_fetch_one_hedge_not_the_blob() {
    let mut a = spawn_node(61, vec![]).await;
    let b = spawn_node(62, vec![a.address.clone()]).await;
    wait_connected(&mut a, b.peer, "A to connect to B").await;
    let bytes = pseudo_random_bytes(3_000_000, 61);
    let hash = b.client.blob_store().put(&bytes).unwrap();
    let staller = FakeProvider::start(&a, hash, Serving::Stall).await;
    bounded("B to provide the blob", b.client.provide_blob(hash)).await.unwrap();
    wait_records(&a, hash, [b.peer, staller.peer]).await;

    // Asked first and never hedged, the staller holds the fetch to its deadline: the attack.
    let timeout = Duration::from_secs(2);
    let held = a.client.fetch_blob(hash, 8 << 20, &plan(staller.peer, timeout, timeout)).await;
    assert!(matches!(held, Err(BlobFetchError::TimedOut { asked: 1, .. })), "{held:?}");
    assert!(staller.requests() > 0, "the staller took the fetch's requests");

    // Hedged, the fetch asks B too once the staller is late, and gets the blob.
    let hedged = plan(staller.peer, Duration::from_millis(300), Duration::from_secs(10));
    let started = std::time::Instant::now();
    let path = a.client.fetch_blob(hash, 8 << 20, &hedged).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "the staller was asked first");
    assert_eq!(sha256(&std::fs::read(path).unwrap()), hash);

    // A provider announcing a blob over the limit is refused and the fetch goes on to B.
    let other = b.client.blob_store().put(&bytes[..1_000_000]).unwrap();
    let liar = FakeProvider::start(&a, other, Serving::Oversize).await;
    bounded("B to provide the second blob", b.client.provide_blob(other)).await.unwrap();
    wait_records(&a, other, [b.peer, liar.peer]).await;
    let unhedged = plan(liar.peer, Duration::from_secs(10), Duration::from_secs(10));
    let path = a.client.fetch_blob(other, 8 << 20, &unhedged).await.unwrap();
    assert_eq!(sha256(&std::fs::read(path).unwrap()), other);
    assert!(liar.requests() > 0, "the liar was asked first");
}
