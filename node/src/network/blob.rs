//! The `blob` protocol: content-addressed files fetched in chunks and stored only when whole and
//! matching.
//!
//! A fetch asks at once for the first [`super::BlobLimits::chunks_in_flight`] chunks that a blob
//! of the caller's largest size would have, each on its own Yamux stream so the connection's
//! window fills from the start. The first answer carries the blob's size; a size over the caller's
//! limit ends the fetch before anything is written. Ranges asked for past the real end must be
//! refused (`BadRange`) and are skipped; data for them, or a refusal inside the blob, is a protocol
//! breach. Further chunks are requested as the write position advances, so the chunks asked for
//! but not yet handed to the writer never span more than `chunks_in_flight` chunks. Chunks are
//! written in order, on a blocking thread that hashes as it writes (the store syncs a large blob
//! in the background as it grows), so neither the swarm nor the caller's task stalls on sha256 or
//! the disk. At the end the whole-blob sha256 is compared with the hash asked for: on a match the
//! temporary file is renamed into the store, on a mismatch it is deleted, the provider is
//! penalized ([`super::Misbehavior::BadBlob`]) and the fetch fails with
//! [`BlobFetchError::HashMismatch`]. Memory stays bounded: at most `chunks_in_flight` chunks in
//! flight or waiting for their turn, plus as many queued for the writer; written chunks' buffers
//! go back to the blob store's small pool of chunk buffers for the next answers.
use std::collections::BTreeMap;
use std::path::PathBuf;

use consensus::types::Hash;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::client::{NetworkClient, RequestError};
use super::codec::{BlobRequest, BlobResponse};
use super::{BUSY_RETRY_DELAY, Misbehavior, NetworkError};
use crate::blobs::{BlobStore, BlobStoreError, recycle_chunk};

/// Times a fetch retries a provider that answered `Busy` before giving up on it.
const BUSY_RETRIES_MAX: u32 = 10;

/// Why a blob fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobFetchError {
    /// The peer does not hold the blob.
    #[error("peer {peer} does not hold blob {hash}")]
    NotFound {
        /// The peer.
        peer: PeerId,
        /// The blob.
        hash: Hash,
    },
    /// The peer stayed busy.
    #[error("peer {peer} stayed busy serving other requests")]
    Busy {
        /// The peer.
        peer: PeerId,
    },
    /// The blob is larger than the caller allows.
    #[error("blob {hash} is {size_bytes} bytes, over the limit of {limit}")]
    TooLarge {
        /// The blob.
        hash: Hash,
        /// Its size, as the peer announced it.
        size_bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The peer's bytes do not hash to the blob asked for (the peer was penalized).
    #[error("peer {peer} served bytes hashing to {}, not to blob {}", hashes.found, hashes.expected)]
    HashMismatch {
        /// The peer.
        peer: PeerId,
        /// What was asked for and what came.
        hashes: Box<Mismatch>,
    },
    /// The peer broke the protocol (the peer was penalized).
    #[error("peer {peer} broke the blob protocol: {reason}")]
    BadResponse {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: String,
    },
    /// No provider served the blob before the fetch's deadline.
    #[error("no provider served blob {hash} in time ({asked} asked; last error: {last})")]
    TimedOut {
        /// The blob.
        hash: Hash,
        /// Providers asked.
        asked: usize,
        /// The last provider's error, or why none was asked.
        last: String,
    },
    /// A request failed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Storing the blob failed.
    #[error(transparent)]
    Store(BlobStoreError),
    /// The network failed.
    #[error(transparent)]
    Network(NetworkError),
}

/// A blob's expected and actual hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The blob asked for.
    pub expected: Hash,
    /// The sha256 of the bytes that came.
    pub found: Hash,
}

/// Asks for one chunk, retrying while the peer is busy.
async fn chunk(
    client: &NetworkClient,
    peer: PeerId,
    request: BlobRequest,
) -> Result<(u64, BlobResponse), BlobFetchError> {
    for attempt in 1..=BUSY_RETRIES_MAX {
        match client.request_blob_chunk(peer, request).await? {
            BlobResponse::Busy => tokio::time::sleep(BUSY_RETRY_DELAY * attempt).await,
            response => return Ok((request.offset, response)),
        }
    }
    Err(BlobFetchError::Busy { peer })
}

/// The data of a chunk answer that must hold exactly `expected_len` bytes of a blob of
/// `size_bytes`.
fn chunk_data(
    peer: PeerId,
    hash: Hash,
    response: BlobResponse,
    size_bytes: u64,
    expected_len: u64,
) -> Result<Vec<u8>, BlobFetchError> {
    let bad = |reason: String| BlobFetchError::BadResponse { peer, reason };
    match response {
        BlobResponse::Chunk { size_bytes: announced, data } => {
            if announced != size_bytes {
                return Err(bad(format!(
                    "announced {announced} bytes after announcing {size_bytes}"
                )));
            }
            if data.len() as u64 != expected_len {
                return Err(bad(format!(
                    "sent {} bytes where {expected_len} were due",
                    data.len()
                )));
            }
            Ok(data)
        }
        BlobResponse::NotFound => Err(BlobFetchError::NotFound { peer, hash }),
        BlobResponse::BadRange => Err(bad("refused a range inside the blob".into())),
        BlobResponse::Busy => Err(BlobFetchError::Busy { peer }),
    }
}

/// Fetches blob `hash` of at most `size_bytes_max` bytes from `peer` into `client`'s store.
pub async fn fetch(
    client: &NetworkClient,
    peer: PeerId,
    hash: Hash,
    size_bytes_max: u64,
) -> Result<PathBuf, BlobFetchError> {
    let result = fetch_inner(client, peer, hash, size_bytes_max).await;
    let penalty = match &result {
        Err(BlobFetchError::HashMismatch { .. }) => Some(Misbehavior::BadBlob),
        Err(BlobFetchError::BadResponse { .. }) => Some(Misbehavior::BadResponse),
        _ => None,
    };
    if let Some(reason) = penalty {
        tracing::warn!(%peer, %hash, ?reason, "penalizing a peer that served a bad blob");
        client.penalize(peer, reason).await.map_err(BlobFetchError::Network)?;
    }
    result
}

async fn fetch_inner(
    client: &NetworkClient,
    peer: PeerId,
    hash: Hash,
    size_bytes_max: u64,
) -> Result<PathBuf, BlobFetchError> {
    let limits = client.blob_limits();
    let chunk_bytes = u64::from(limits.chunk_bytes);
    // Requested chunks not yet handed to the writer stay within this many bytes past the write
    // position, whatever order the answers come in.
    let window = chunk_bytes * limits.chunks_in_flight as u64;
    let request =
        |offset| chunk(client, peer, BlobRequest { hash, offset, length: limits.chunk_bytes });
    let mut in_flight = FuturesUnordered::new();
    let mut next_request = 0;

    // Until the first answer tells the blob's size, the chunks a blob of the caller's largest size
    // would have are asked for, so the pipeline fills at once; ranges past the real end are then
    // refused by the provider and skipped.
    let mut early = Vec::new();
    let size_bytes = loop {
        while (next_request == 0 || next_request < size_bytes_max) && next_request < window {
            in_flight.push(request(next_request));
            next_request += chunk_bytes;
        }
        let (offset, response) =
            in_flight.next().await.expect("a chunk is in flight until the size is known")?;
        match response {
            BlobResponse::Chunk { size_bytes, .. } => {
                if size_bytes > size_bytes_max {
                    return Err(BlobFetchError::TooLarge {
                        hash,
                        size_bytes,
                        limit: size_bytes_max,
                    });
                }
                early.push((offset, response));
                break size_bytes;
            }
            // Judged once the size is known: refusing a range past the end is right.
            BlobResponse::BadRange if offset > 0 => early.push((offset, response)),
            BlobResponse::BadRange => {
                let reason = "refused the start of the blob".into();
                return Err(BlobFetchError::BadResponse { peer, reason });
            }
            BlobResponse::NotFound => return Err(BlobFetchError::NotFound { peer, hash }),
            BlobResponse::Busy => return Err(BlobFetchError::Busy { peer }),
        }
    };
    tracing::debug!(%peer, %hash, size_bytes, "fetching a blob");

    let store = client.blob_store().clone();
    let (chunks_tx, chunks_rx) = mpsc::channel::<Vec<u8>>(limits.chunks_in_flight);
    let writer =
        tokio::task::spawn_blocking(move || write_blob(&store, hash, size_bytes, chunks_rx));
    let transfer = async {
        let writer_gone = || {
            BlobFetchError::Store(BlobStoreError::Io {
                action: "writing",
                path: PathBuf::from(hash.to_hex()),
                source: std::io::Error::other("the blob writer stopped"),
            })
        };
        // Checks an answer against the size; `None` for a refused range past the end.
        let accept = |offset: u64, response| {
            if offset >= size_bytes && offset > 0 {
                return match response {
                    BlobResponse::BadRange => Ok(None),
                    _ => Err(BlobFetchError::BadResponse {
                        peer,
                        reason: format!("answered offset {offset} of a blob of {size_bytes} bytes"),
                    }),
                };
            }
            let expected_len = (size_bytes - offset).min(chunk_bytes);
            chunk_data(peer, hash, response, size_bytes, expected_len).map(Some)
        };
        let mut waiting: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (offset, response) in early {
            if let Some(data) = accept(offset, response)? {
                waiting.insert(offset, data);
            }
        }
        let mut written = 0;
        loop {
            while let Some(data) = waiting.remove(&written) {
                written += data.len() as u64;
                chunks_tx.send(data).await.map_err(|_| writer_gone())?;
            }
            if written >= size_bytes {
                // Requests still in flight ask past the end; dropping them drops their answers.
                return Ok::<(), BlobFetchError>(());
            }
            while next_request < size_bytes && next_request < written + window {
                in_flight.push(request(next_request));
                next_request += chunk_bytes;
            }
            let (offset, response) =
                in_flight.next().await.expect("a chunk is in flight while bytes are missing")?;
            if let Some(data) = accept(offset, response)? {
                waiting.insert(offset, data);
            }
        }
    };
    let transferred = transfer.await;
    drop(in_flight);
    drop(chunks_tx);
    let stored = writer.await.map_err(|e| {
        BlobFetchError::Store(BlobStoreError::Io {
            action: "joining the writer of",
            path: PathBuf::from(hash.to_hex()),
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    match (transferred, stored) {
        (Ok(()), Ok(path)) => Ok(path),
        (_, Err(BlobStoreError::HashMismatch { expected, found })) => {
            Err(BlobFetchError::HashMismatch {
                peer,
                hashes: Box::new(Mismatch { expected, found }),
            })
        }
        // A transfer cut short leaves the writer short of bytes; the transfer's error is the cause.
        (Err(e), Ok(_) | Err(BlobStoreError::SizeMismatch { .. })) => Err(e),
        // The writer failed first (the transfer then saw it gone): its error is the cause.
        (_, Err(e)) => Err(BlobFetchError::Store(e)),
    }
}

/// Writes chunks in order into a new blob, hashing them; runs on a blocking thread.
fn write_blob(
    store: &BlobStore,
    hash: Hash,
    size_bytes: u64,
    mut chunks: mpsc::Receiver<Vec<u8>>,
) -> Result<PathBuf, BlobStoreError> {
    let mut writer = store.writer(hash, size_bytes, size_bytes)?;
    while let Some(chunk) = chunks.blocking_recv() {
        writer.write(&chunk)?;
        recycle_chunk(chunk);
    }
    // A transfer cut short leaves the writer short of bytes: finish names the size mismatch and
    // deletes the temporary file.
    writer.finish()
}
