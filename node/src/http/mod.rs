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
//!   readable by an explorer page on another port); a POST is refused with 403 unless its `Host`
//!   names one of [`HttpConfig::write_hosts`] (loopback names and the listening address by
//!   default, so a DNS rebinding name cannot write) and any `Origin` header is the server's own
//!   origin (`http://` + the request's `Host`); no CORS header is ever sent on a write, so a
//!   browser page on another origin cannot write.
//! - Slow clients: hyper closes a connection that has not sent a request's headers within
//!   [`HttpConfig::header_read_timeout`] (which also bounds how long a kept-alive connection may
//!   sit idle), and every request body that sends nothing for [`HttpConfig::body_idle_timeout`]
//!   fails, so idle connections cannot hold the connection cap for long.

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
use axum::extract::ConnectInfo;
use axum::routing::{MethodRouter, get, post};
use consensus::chain::Ledger;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

pub use error::{ApiError, ApiResult};
pub use write::TXS_PER_POST_MAX;

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
    /// How long any request body may send nothing before the request fails.
    pub body_idle_timeout: Duration,
    /// How long a connection may take to send a request's headers, counted from when the server
    /// starts waiting for them (so also the longest a kept-alive connection stays idle).
    pub header_read_timeout: Duration,
    /// Host names (without port; IPv6 without brackets) under which writes are accepted; see
    /// [`loopback_hosts`]. The address the server listens on is added when it is not a wildcard.
    pub write_hosts: Vec<String>,
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
            header_read_timeout: Duration::from_secs(10),
            write_hosts: loopback_hosts(),
            provide_timeout: Duration::from_secs(10),
            admit_timeout: Duration::from_secs(10),
            connections_max: 256,
        }
    }
}

/// The loopback names writes are accepted under by default.
pub fn loopback_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
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

/// Serves the API on `listener` with `config` until the server fails.
pub async fn serve_with_config(
    ctx: NodeContext,
    listener: TcpListener,
    mut config: HttpConfig,
) -> anyhow::Result<()> {
    anyhow::ensure!(config.connections_max > 0, "HTTP connections_max must be positive");
    anyhow::ensure!(
        !config.header_read_timeout.is_zero() && !config.body_idle_timeout.is_zero(),
        "HTTP timeouts must be positive"
    );
    let local = listener.local_addr()?.ip();
    if !local.is_unspecified() && !config.write_hosts.contains(&local.to_string()) {
        config.write_hosts.push(local.to_string());
    }
    let rate = Arc::new(metrics::BlockRate::default());
    tokio::spawn(metrics::track_blocks(ctx.events.subscribe(), rate.clone()));
    let connections_max = config.connections_max;
    let body_idle_timeout = config.body_idle_timeout;
    let mut http1 = http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    let api = Api { ctx, config: Arc::new(config), rate };
    let router = router(api);
    let mut listener =
        LimitedListener { inner: listener, permits: Arc::new(Semaphore::new(connections_max)) };
    loop {
        let (stream, client) = listener.accept().await;
        let router = router.clone();
        // Every request learns its client's address, and its body fails once it stalls.
        let service = service_fn(move |request: axum::http::Request<Incoming>| {
            let mut request = request
                .map(|body| axum::body::Body::new(TimeoutBody::new(body_idle_timeout, body)));
            request.extensions_mut().insert(ConnectInfo(ClientAddr(client)));
            router.clone().oneshot(request)
        });
        let connection = http1.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%client, %error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Every route of the JSON API (and `/metrics`), as `(method, path)`: what the router serves
/// besides the explorer's files, and what `docs/api.md` documents.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    handlers().into_iter().map(|(method, path, _)| (method, path)).collect()
}

/// The API's routes with their handlers.
fn handlers() -> Vec<(&'static str, &'static str, MethodRouter<Api>)> {
    vec![
        ("GET", "/status", get(read::status)),
        ("GET", "/peers", get(read::peers)),
        ("GET", "/validators", get(read::validators)),
        ("GET", "/blocks", get(read::blocks)),
        ("GET", "/blocks/{height}", get(read::block)),
        ("POST", "/txs", post(write::post_txs)),
        ("GET", "/txs/{hash}", get(read::tx)),
        ("GET", "/tasks", get(tasks::tasks)),
        ("GET", "/tasks/{id}", get(tasks::task)),
        ("GET", "/tasks/{id}/spec", get(tasks::task_spec)),
        ("GET", "/accounts/{id}", get(tasks::account)),
        ("GET", "/proof/{table}/{key}", get(proof::proof)),
        ("POST", "/blobs", post(write::post_blob)),
        ("GET", "/metrics", get(metrics::metrics)),
    ]
}

fn router(api: Api) -> Router {
    handlers()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
        .merge(explorer::routes())
        .fallback(|| async { ApiError::not_found("no such route; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route; see docs/api.md",
            )
        })
        .layer(axum::middleware::from_fn_with_state(api.clone(), write::cross_origin))
        .with_state(api)
}

/// The client's address, for the loopback rule of `POST /blobs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// A TCP listener that accepts a connection only while fewer than its limit are open.
#[derive(Debug)]
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

/// How long to wait after a failed accept (out of file descriptors, usually).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl LimitedListener {
    /// Waits for a place under the limit, then for a connection.
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
}

/// An accepted connection; it frees its place under the limit when dropped.
#[derive(Debug)]
struct LimitedStream {
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
