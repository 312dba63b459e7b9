//! The node's HTTP JSON API: chain status, peers, validators, blocks, transactions, tasks with
//! their finalization reports, accounts with an "explain my reward" breakdown, Merkle proofs
//! of state records for light clients, Prometheus metrics, and two writes: `POST /txs` (a signed transaction, admitted through
//! [`NodeContext::external_txs`]) and `POST /blobs` (a content-addressed file, stored and
//! provided).
//!
//! `docs/api.md` documents every route with an example response. In short:
//!
//! - Every response is JSON except `/metrics` (Prometheus text). Errors are
//!   `{"error": "..."}` with a 4xx or 5xx status.
//! - Amounts and other u64 values that may exceed 2^53 are JSON strings (see [`views`]).
//! - Everything is bounded: lists take a `limit` with a maximum, request bodies are limited
//!   before they are read, connections are capped ([`HttpConfig::connections_max`]).
//! - Ledger reads run on blocking threads and hold the ledger's read lock only while copying out
//!   what the answer needs.
//! - Cross-origin: a GET answers `Access-Control-Allow-Origin: *` (the API is public chain data,
//!   readable by an explorer page on another port); a POST whose `Origin` header is present and
//!   is not the server's own origin (`http://` + the request's `Host`) is refused with 403, and no
//!   CORS header is ever sent on a write, so a browser page on another origin cannot write.

mod error;
mod explorer;
mod metrics;
mod proof;
mod read;
mod tasks;
pub mod views;
mod write;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use consensus::chain::Ledger;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use error::{ApiError, ApiResult};

use crate::blobs::BLOB_BYTES_LIMIT;
use crate::runtime::NodeContext;

/// Settings of the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Whether `POST /blobs` is accepted from clients that are not on a loopback address. Off by
    /// default: uploading a file makes this node store and serve it.
    pub allow_remote_blobs: bool,
    /// Largest blob accepted by `POST /blobs`, in bytes; the network's blob limit caps it.
    pub blob_bytes_max: u64,
    /// How long `POST /blobs` waits for the next piece of the body before giving up.
    pub body_idle_timeout: Duration,
    /// How long `POST /blobs` waits for the Kademlia provider record to be published before it
    /// answers `"provided": false` (the announcement goes on in the background).
    pub provide_timeout: Duration,
    /// How long `POST /txs` waits for the node to admit the transaction.
    pub admit_timeout: Duration,
    /// Most connections served at once; more wait to be accepted.
    pub connections_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow_remote_blobs: false,
            blob_bytes_max: BLOB_BYTES_LIMIT,
            body_idle_timeout: Duration::from_secs(30),
            provide_timeout: Duration::from_secs(10),
            admit_timeout: Duration::from_secs(10),
            connections_max: 256,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
struct Api {
    ctx: NodeContext,
    config: Arc<HttpConfig>,
    rate: Arc<metrics::BlockRate>,
}

impl Api {
    /// Runs `f` over the ledger on a blocking thread (the read lock and store reads never block
    /// the async runtime).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ledger) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || ctx.read(f))
            .await
            .map_err(|e| ApiError::internal(format!("reading the ledger failed: {e}")))?
    }
}

/// Serves the API on `listener` with the default [`HttpConfig`] until the server fails.
pub async fn serve(ctx: NodeContext, listener: TcpListener) -> anyhow::Result<()> {
    serve_with_config(ctx, listener, HttpConfig::default()).await
}

/// Serves the API on `listener` with `config` until the server fails.
pub async fn serve_with_config(
    ctx: NodeContext,
    listener: TcpListener,
    config: HttpConfig,
) -> anyhow::Result<()> {
    anyhow::ensure!(config.connections_max > 0, "HTTP connections_max must be positive");
    let rate = Arc::new(metrics::BlockRate::default());
    tokio::spawn(metrics::track_blocks(ctx.events.subscribe(), rate.clone()));
    let connections_max = config.connections_max;
    let api = Api { ctx, config: Arc::new(config), rate };
    let listener =
        LimitedListener { inner: listener, permits: Arc::new(Semaphore::new(connections_max)) };
    axum::serve(listener, router(api).into_make_service_with_connect_info::<ClientAddr>())
        .await
        .map_err(|e| anyhow::anyhow!("HTTP server failed: {e}"))
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/status", get(read::status))
        .route("/peers", get(read::peers))
        .route("/validators", get(read::validators))
        .route("/blocks", get(read::blocks))
        .route("/blocks/{height}", get(read::block))
        .route("/txs", post(write::post_tx))
        .route("/txs/{hash}", get(read::tx))
        .route("/tasks", get(tasks::tasks))
        .route("/tasks/{id}", get(tasks::task))
        .route("/accounts/{id}", get(tasks::account))
        .route("/proof/{table}/{key}", get(proof::proof))
        .route("/blobs", post(write::post_blob))
        .route("/metrics", get(metrics::metrics))
        .merge(explorer::routes())
        .fallback(|| async { ApiError::not_found("no such route; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route; see docs/api.md",
            )
        })
        .layer(axum::middleware::from_fn(write::cross_origin))
        .with_state(api)
}

/// The client's address, for the loopback rule of `POST /blobs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, LimitedListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// A TCP listener that accepts a connection only while fewer than its limit are open.
#[derive(Debug)]
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

/// How long to wait after a failed accept (out of file descriptors, usually).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        let permit =
            self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => return (LimitedStream { stream, _permit: permit }, addr),
                Err(error) => {
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; it frees its place under the limit when dropped.
#[derive(Debug)]
pub struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
