//! Blob transfer throughput over loopback, next to a plain TCP copy of the same bytes.
//!
//! For 10 MB and 100 MB it measures, in one run on one machine:
//! - `tcp+sha256`: a plain TCP copy over 127.0.0.1, the receiver hashing every byte;
//! - `tcp+sha256+file`: the same, the receiver also writing a file and syncing it (what a blob
//!   fetch does besides the network);
//! - `blob`: [`node::network::NetworkClient::fetch_blob_from`] between two in-process nodes over
//!   TCP + Noise + Yamux: chunk requests in flight, hashing and writing on a blocking thread
//!   (synced in the background as it grows), final sync and rename into the store.
//!
//! Each figure is the median of a few runs, the three kinds taking turns; the ratios blob /
//! baseline are the result.
//! Run with `cargo bench -p node --bench blob_throughput`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use consensus::crypto::Keypair;
use consensus::genesis::Params;
use consensus::types::Hash;
use libp2p::multiaddr::Protocol;
use node::keystore;
use node::network::config::BLOB_CHUNK_BYTES_LIMIT;
use node::network::{self, BlobLimits, NetworkClient, NetworkConfig, NetworkEvent};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[path = "../tests/common/mod.rs"]
mod common;
use common::pseudo_random_bytes;

/// Runs per figure; the median is reported.
const RUNS: usize = 5;

/// Read and write size of the plain TCP copy, in bytes.
const TCP_BUFFER_BYTES: usize = 1 << 20;

/// Copies `bytes` over a loopback TCP connection; the receiver hashes them, and writes them to a
/// synced file under `dir` when one is given. Returns the elapsed time.
async fn tcp_copy(bytes: &'static [u8], dir: Option<&Path>) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        for chunk in bytes.chunks(TCP_BUFFER_BYTES) {
            stream.write_all(chunk).await.unwrap();
        }
        stream.shutdown().await.unwrap();
    });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut file = dir.map(|d| std::fs::File::create(d.join("tcp-copy")).unwrap());
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; TCP_BUFFER_BYTES];
    let mut received = 0usize;
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if let Some(file) = file.as_mut() {
            file.write_all(&buffer[..n]).unwrap();
        }
        received += n;
    }
    if let Some(file) = file {
        file.sync_data().unwrap();
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let elapsed = start.elapsed();
    sender.await.unwrap();
    assert_eq!(received, bytes.len());
    assert_eq!(Hash(digest), consensus::hash::sha256(bytes));
    elapsed
}

struct BenchNode {
    client: NetworkClient,
    events: mpsc::Receiver<NetworkEvent>,
    _dir: tempfile::TempDir,
}

async fn node(
    seed: u8,
    blob: BlobLimits,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> (BenchNode, libp2p::Multiaddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NetworkConfig::for_chain(
        "bench",
        Hash::default(),
        &Params::default(),
        dir.path().join("blobs"),
    );
    config.mdns = false;
    config.bootstrap = bootstrap;
    config.blob = blob;
    let key = keystore::libp2p_keypair(&Keypair::from_seed([seed; 32])).unwrap();
    let (client, mut events, event_loop) = network::start(key, config).unwrap();
    tokio::spawn(event_loop.run());
    let address = loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(NetworkEvent::Listening { address })) => break address,
            Ok(Some(_)) => {}
            other => panic!("no listen address: {other:?}"),
        }
    };
    let address = address.with(Protocol::P2p(client.local_peer()));
    (BenchNode { client, events, _dir: dir }, address)
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// Starts a client node with `blob` limits, connected to `server`.
async fn client(
    seed: u8,
    blob: BlobLimits,
    server: &libp2p::Multiaddr,
    server_peer: libp2p::PeerId,
) -> BenchNode {
    let (mut client, _) = node(seed, blob, vec![server.clone()]).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), client.events.recv()).await {
            Ok(Some(NetworkEvent::PeerConnected { peer, .. })) if peer == server_peer => break,
            Ok(Some(_)) => {}
            other => panic!("the nodes did not connect: {other:?}"),
        }
    }
    client
}

/// The time of one fetch of `hash` by `client` into its store (the blob is removed after).
async fn fetch_once(
    client: &BenchNode,
    server: libp2p::PeerId,
    hash: Hash,
    size: usize,
) -> Duration {
    let start = Instant::now();
    let path =
        client.client.fetch_blob_from(server, hash, size as u64).await.expect("the blob transfers");
    let elapsed = start.elapsed();
    std::fs::remove_file(path).unwrap();
    elapsed
}

/// The median time of [`RUNS`] fetches of `hash` by `client`.
async fn fetch(client: &BenchNode, server: libp2p::PeerId, hash: Hash, size: usize) -> Duration {
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        runs.push(fetch_once(client, server, hash, size).await);
    }
    median(runs)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // The server answers chunks up to the protocol's limit, so each client's own settings
        // decide the transfer's shape.
        let serving = BlobLimits { chunk_bytes: BLOB_CHUNK_BYTES_LIMIT, ..BlobLimits::default() };
        let (server, server_address) = node(1, serving, vec![]).await;
        let server_peer = server.client.local_peer();
        let default = client(2, BlobLimits::default(), &server_address, server_peer).await;
        let scratch = tempfile::tempdir().unwrap();
        let defaults = BlobLimits::default();
        println!(
            "blob: {} MiB chunks, {} in flight (the defaults); median of {RUNS} runs",
            defaults.chunk_bytes >> 20,
            defaults.chunks_in_flight
        );
        println!(
            "{:>8}  {:>16}  {:>20}  {:>10}  {:>15}  {:>20}",
            "size",
            "tcp+sha256 MB/s",
            "tcp+sha256+file MB/s",
            "blob MB/s",
            "blob/tcp+sha256",
            "blob/tcp+sha256+file"
        );
        let mut largest = None;
        for size in [10_000_000usize, 100_000_000] {
            let bytes: &'static [u8] =
                Box::leak(pseudo_random_bytes(size, size as u64).into_boxed_slice());
            let hash = server.client.blob_store().put(bytes).unwrap();
            // The three kinds take turns, so a busy spell on a shared machine hits them alike.
            let (mut tcp, mut tcp_file, mut blob) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..RUNS {
                tcp.push(tcp_copy(bytes, None).await);
                tcp_file.push(tcp_copy(bytes, Some(scratch.path())).await);
                blob.push(fetch_once(&default, server_peer, hash, size).await);
            }
            let (tcp, tcp_file, blob) = (
                mb_per_s(size, median(tcp)),
                mb_per_s(size, median(tcp_file)),
                mb_per_s(size, median(blob)),
            );
            println!(
                "{:>5} MB  {tcp:>16.0}  {tcp_file:>20.0}  {blob:>10.0}  {:>15.2}  {:>20.2}",
                size / 1_000_000,
                blob / tcp,
                blob / tcp_file
            );
            largest = Some((size, hash));
        }

        let (size, hash) = largest.expect("sizes were measured");
        println!("\nblob transfer of {} MB by chunk size and chunks in flight:", size / 1_000_000);
        println!("{:>10}  {:>9}  {:>10}", "chunk KiB", "in flight", "blob MB/s");
        let sweep = [(512u32, 8usize), (512, 32), (1_024, 8), (1_024, 32), (2_048, 16), (4_096, 8)];
        for (seed, (chunk_kib, in_flight)) in (3u8..).zip(sweep) {
            let limits = BlobLimits {
                chunk_bytes: chunk_kib << 10,
                chunks_in_flight: in_flight,
                ..defaults.clone()
            };
            let node = client(seed, limits, &server_address, server_peer).await;
            let blob = mb_per_s(size, fetch(&node, server_peer, hash, size).await);
            println!("{chunk_kib:>10}  {in_flight:>9}  {blob:>10.0}");
        }
        drop(server);
    });
}
