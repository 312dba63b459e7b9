//! Writes: `POST /txs` and `POST /blobs`, and the cross-origin rule every request passes.

use std::net::SocketAddr;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use consensus::crypto::Verifier;
use consensus::tx::{SignedTx, verify_txs};
use consensus::types::Hash;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::read::query;
use super::{Api, ApiError, ApiResult, ClientAddr, HttpConfig};
use crate::blobs::BlobStoreError;
use crate::runtime::ExternalTxs;

/// Room for the JSON around a transaction's hex in a `POST /txs` body, in bytes.
const TX_BODY_ENVELOPE_BYTES: usize = 1_024;
/// Body pieces queued between the connection and the blob writer's thread.
const BLOB_PIECES_QUEUED: usize = 16;

/// Refuses a write addressed to a host name not on the allow-list, or whose `Origin` is another
/// site's, and lets any origin read.
///
/// A request with a method other than GET or HEAD is refused with 403 unless its `Host` names one
/// of [`HttpConfig::write_hosts`] (loopback names by default): a page served under a DNS
/// rebinding name that resolves to this node carries that name in `Host` and cannot write. If it
/// carries an `Origin` header, the origin must also be `http://` + the request's `Host` (the page
/// was served by this node). A GET or HEAD answer carries `Access-Control-Allow-Origin: *`;
/// nothing else carries a CORS header, so a browser never lets another origin's script send a
/// write with a preflight.
pub(super) async fn cross_origin(
    State(api): State<Api>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let read = request.method() == Method::GET || request.method() == Method::HEAD;
    if !read {
        check_origin(request.headers(), &api.config.write_hosts)?;
    }
    let mut response = next.run(request).await;
    if read {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    Ok(response)
}

/// Whether a write's headers pass the host allow-list and the same-origin rule.
fn check_origin(headers: &HeaderMap, write_hosts: &[String]) -> ApiResult<()> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let Some(host) = host.filter(|h| host_allowed(h, write_hosts)) else {
        return Err(ApiError::forbidden(format!(
            "writes are accepted only under the host names {write_hosts:?} (a DNS rebinding name \
             is refused), not {:?}; add a name with `http_write_hosts` in the node's config",
            host.unwrap_or("(no Host header)")
        )));
    };
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    match origin.to_str() {
        Ok(origin) if origin.eq_ignore_ascii_case(&format!("http://{host}")) => Ok(()),
        origin => Err(ApiError::forbidden(format!(
            "cross-origin writes are refused: origin {:?} is not this node's",
            origin.unwrap_or("(not text)")
        ))),
    }
}

/// Whether a `Host` header value (`name`, `name:port`, `[v6]` or `[v6]:port`) names one of
/// `allowed` (compared without the port, ignoring ASCII case).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    !name.is_empty() && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Most transactions in one `POST /txs` body.
pub const TXS_PER_POST_MAX: usize = 1_024;

/// `POST /txs` body: one transaction, or a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TxBody {
    tx: Option<String>,
    txs: Option<Vec<String>>,
}

/// `POST /txs` answer to one transaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxAccepted {
    /// The transaction's hash.
    pub hash: Hash,
}

/// One transaction's outcome in the answer to a batch: its hash when it decoded, and `error`
/// when it was refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxOutcome {
    /// The transaction's hash, when it decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<Hash>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /txs` answer: what a single tx gets, or each tx's outcome in the order sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TxsAnswer {
    /// `{"tx": …}` was admitted.
    One(TxAccepted),
    /// `{"txs": […]}`: one outcome per tx.
    Batch {
        /// In the order of the body.
        results: Vec<TxOutcome>,
    },
}

/// A tx of the body once it decoded and its chain was checked, or why not.
type Decoded = Result<SignedTx, String>;

/// `POST /txs`: `{"tx": "<hex>"}` answers the tx's hash or an error status; `{"txs": [...]}`
/// (1 to [`TXS_PER_POST_MAX`] txs) answers each tx's outcome. Signatures are checked in one pass
/// ([`verify_txs`]) off the async threads, then the node admits the valid txs in order. While the
/// mempool is full the whole request is answered 503 before anything in it is checked.
pub(super) async fn post_txs(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<TxsAnswer>> {
    if api.ctx.mempool_full.is_full() {
        return Err(ApiError::unavailable(
            "the mempool is full; post again once the next blocks have taken some of it",
        ));
    }
    let params = &api.ctx.genesis.params;
    let max_tx = usize::try_from(params.max_tx_bytes).unwrap_or(usize::MAX);
    let max_block = usize::try_from(params.max_block_bytes).unwrap_or(usize::MAX);
    let limit =
        max_block.saturating_mul(2).saturating_add(TX_BODY_ENVELOPE_BYTES + 4 * TXS_PER_POST_MAX);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body over {limit} bytes (a transaction is at most {max_tx} bytes, a batch at \
                 most a block's {max_block})"
            ),
        )
    };
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if declared.and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            too_large()
        } else {
            ApiError::bad_request(format!("reading the body failed: {e}"))
        }
    })?;
    let shape = r#"body must be {"tx": "<hex>"} or {"txs": ["<hex>", ...]}"#;
    let body: TxBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("{shape}: {e}")))?;
    let (texts, single) = match (body.tx, body.txs) {
        (Some(tx), None) => (vec![tx], true),
        (None, Some(txs)) if (1..=TXS_PER_POST_MAX).contains(&txs.len()) => (txs, false),
        (None, Some(txs)) => {
            return Err(ApiError::bad_request(format!(
                "a batch holds 1 to {TXS_PER_POST_MAX} transactions, not {}",
                txs.len()
            )));
        }
        _ => return Err(ApiError::bad_request(shape)),
    };
    let chain = api.ctx.genesis.chain_id.clone();
    let decoded: Vec<Decoded> = texts.iter().map(|t| decode_tx(t, max_tx, &chain)).collect();
    let verifier = api.ctx.verifier.clone();
    let checked = tokio::task::spawn_blocking(move || check_signatures(&verifier, &chain, decoded))
        .await
        .map_err(|e| ApiError::unavailable(format!("checking signatures failed: {e}")))?;
    let results = admit(&api, checked).await?;
    if single {
        let (hash, outcome) = results.into_iter().next().expect("one tx, one outcome");
        return match (hash, outcome) {
            (Some(hash), Ok(())) => Ok(Json(TxsAnswer::One(TxAccepted { hash }))),
            (_, Err(why)) => Err(ApiError::bad_request(why)),
            (None, Ok(())) => unreachable!("an admitted tx has a hash"),
        };
    }
    let results = results
        .into_iter()
        .map(|(hash, outcome)| TxOutcome { hash, error: outcome.err() })
        .collect();
    Ok(Json(TxsAnswer::Batch { results }))
}

/// One tx of the body: hex, canonical bytes within the chain's limit, this chain's id.
fn decode_tx(text: &str, max_tx: usize, chain: &str) -> Decoded {
    let raw = decode_hex(text).map_err(|e| e.message)?;
    let tx = SignedTx::decode(&raw, max_tx).map_err(|e| format!("tx does not decode: {e}"))?;
    if tx.tx.chain_id != chain {
        return Err(format!("tx is for chain {:?}, this node runs {chain:?}", tx.tx.chain_id));
    }
    Ok(tx)
}

/// Checks the signatures of the decoded txs in batches, marking the bad ones. A failed batch
/// names its first bad tx; checking goes on after it, so each signature is checked at most twice.
fn check_signatures(verifier: &Verifier, chain: &str, mut decoded: Vec<Decoded>) -> Vec<Decoded> {
    let (indices, txs): (Vec<usize>, Vec<SignedTx>) = decoded
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.as_ref().ok().map(|tx| (i, tx.clone())))
        .unzip();
    let mut start = 0;
    while let Err((bad, error)) = verify_txs(verifier, chain, &txs[start..]) {
        decoded[indices[start + bad]] = Err(format!("tx signature: {error}"));
        start += bad + 1;
    }
    decoded
}

/// Hands the valid txs to the node to admit, in order; each tx's hash (when it decoded) and
/// outcome.
async fn admit(
    api: &Api,
    checked: Vec<Decoded>,
) -> ApiResult<Vec<(Option<Hash>, Result<(), String>)>> {
    let txs: Vec<SignedTx> = checked.iter().filter_map(|d| d.as_ref().ok().cloned()).collect();
    let mut admitted = if txs.is_empty() {
        Vec::new()
    } else {
        let (reply, answer) = oneshot::channel();
        let waited = tokio::time::timeout(api.config.admit_timeout, async {
            api.ctx.external_txs.send(ExternalTxs { txs, admitted: reply }).await.ok()?;
            answer.await.ok()
        })
        .await;
        match waited {
            Ok(Some(results)) => results,
            Ok(None) => {
                return Err(ApiError::unavailable("the node is not admitting transactions"));
            }
            Err(_) => {
                return Err(ApiError::unavailable(
                    "the node did not admit the transactions in time",
                ));
            }
        }
    }
    .into_iter();
    Ok(checked
        .into_iter()
        .map(|d| match d {
            Ok(tx) => {
                let hash = tx.hash();
                let outcome = admitted.next().unwrap_or(Ok(()));
                (Some(hash), outcome.map_err(|why| format!("tx {hash} refused: {why}")))
            }
            Err(why) => (None, Err(why)),
        })
        .collect())
}

fn decode_hex(text: &str) -> ApiResult<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err(ApiError::bad_request("tx hex has an odd number of characters"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()).ok_or_else(|| {
                ApiError::bad_request(format!("tx hex has a non-hex character near offset {i}"))
            })
        })
        .collect()
}

/// `POST /blobs` query.
#[derive(Debug, Deserialize)]
pub struct BlobQuery {
    /// The sha256 the body must hash to, lowercase hex.
    sha256: String,
}

/// `POST /blobs` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobStored {
    /// The blob's sha256.
    pub sha256: Hash,
    /// Its size.
    #[serde(with = "super::views::decimal")]
    pub bytes: u64,
    /// Whether the store already held it.
    pub already_stored: bool,
    /// Whether the provider record was published before the answer.
    pub provided: bool,
}

/// Whether `client` may upload blobs under `config`.
pub fn blob_client_allowed(client: SocketAddr, config: &HttpConfig) -> bool {
    config.allow_remote_blobs || client.ip().is_loopback()
}

pub(super) async fn post_blob(
    State(api): State<Api>,
    ConnectInfo(ClientAddr(client)): ConnectInfo<ClientAddr>,
    q: Result<Query<BlobQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<BlobStored>> {
    if !blob_client_allowed(client, &api.config) {
        return Err(ApiError::forbidden(format!(
            "blob uploads are accepted only from loopback clients, not {}",
            client.ip()
        )));
    }
    let q = query(q)?;
    let hash: Hash = q.sha256.parse().map_err(|e| ApiError::bad_request(format!("sha256: {e}")))?;
    let length: u64 = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::new(StatusCode::LENGTH_REQUIRED, "a blob upload needs a Content-Length")
        })?;
    let network = &api.ctx.network;
    let limit = api.config.blob_bytes_max.min(network.blob_limits().blob_bytes_max);
    if length > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("blob of {length} bytes is over the limit of {limit}"),
        ));
    }
    let store = network.blob_store().clone();
    let already_stored = store.contains(&hash);
    if already_stored {
        // Read (and drop) the bounded body anyway: a client still sending it would otherwise
        // see its connection reset before it reads the answer.
        let mut stream = body.into_data_stream();
        while next_piece(&mut stream).await?.is_some() {}
    } else {
        receive_blob(&api, body, hash, length).await?;
    }
    let provided = matches!(
        tokio::time::timeout(api.config.provide_timeout, network.provide_blob(hash)).await,
        Ok(Ok(()))
    );
    let bytes = store
        .size(&hash)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::internal(format!("blob {hash} vanished from the store")))?;
    Ok(Json(BlobStored { sha256: hash, bytes, already_stored, provided }))
}

/// Streams the body into the blob store on a blocking thread; the blob appears only whole and
/// with the expected hash.
async fn receive_blob(api: &Api, body: Body, hash: Hash, length: u64) -> ApiResult<()> {
    let store = api.ctx.network.blob_store().clone();
    let mut writer =
        store.writer(hash, length, length).map_err(|e| ApiError::internal(e.to_string()))?;
    let (pieces, mut incoming) = mpsc::channel::<Bytes>(BLOB_PIECES_QUEUED);
    let write = tokio::task::spawn_blocking(move || {
        while let Some(piece) = incoming.blocking_recv() {
            writer.write(&piece)?;
        }
        writer.finish()
    });
    let mut stream = body.into_data_stream();
    let read = loop {
        match next_piece(&mut stream).await {
            Ok(Some(piece)) => {
                if pieces.send(piece).await.is_err() {
                    break Ok(()); // The writer failed; its error says why.
                }
            }
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    drop(pieces);
    let written = write.await.map_err(|e| ApiError::internal(format!("blob writer: {e}")))?;
    read?;
    match written {
        Ok(_) => Ok(()),
        Err(e @ (BlobStoreError::HashMismatch { .. } | BlobStoreError::SizeMismatch { .. })) => {
            Err(ApiError::bad_request(e.to_string()))
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// The body's next piece, or `None` at its end; a broken body, or one that stalled past
/// [`HttpConfig::body_idle_timeout`] (every body is wrapped in that timeout), is a 400.
async fn next_piece(stream: &mut axum::body::BodyDataStream) -> ApiResult<Option<Bytes>> {
    match stream.next().await {
        Some(Ok(piece)) => Ok(Some(piece)),
        None => Ok(None),
        Some(Err(e)) => Err(ApiError::bad_request(format!("reading the body failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_only_from_loopback_unless_allowed() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let config = HttpConfig::default();
        assert!(blob_client_allowed(local, &config));
        assert!(blob_client_allowed(local6, &config));
        assert!(!blob_client_allowed(remote, &config));
        let open = HttpConfig { allow_remote_blobs: true, ..HttpConfig::default() };
        assert!(blob_client_allowed(remote, &open));
    }

    #[test]
    fn origin_rule() {
        let hosts = super::super::loopback_hosts();
        let mut h = HeaderMap::new();
        assert!(check_origin(&h, &hosts).is_err(), "no Host: nothing to check the name of");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
        assert!(check_origin(&h, &hosts).is_ok(), "no Origin: a non-browser client");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8081"));
        assert!(check_origin(&h, &hosts).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9999"));
        assert_eq!(check_origin(&h, &hosts).unwrap_err().status, StatusCode::FORBIDDEN);
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h, &hosts).is_err());
        // DNS rebinding: the page's own origin, under a name that resolves to this node.
        h.insert(header::HOST, HeaderValue::from_static("rebind.attacker.example:8081"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://rebind.attacker.example:8081"));
        let err = check_origin(&h, &hosts).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("http_write_hosts"), "{}", err.message);
        let mut more = hosts.clone();
        more.push("node.example".into());
        h.insert(header::HOST, HeaderValue::from_static("NODE.example:8081"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://node.example:8081"));
        assert!(check_origin(&h, &more).is_ok());
    }

    #[test]
    fn host_names_are_compared_without_ports() {
        let hosts = super::super::loopback_hosts();
        for ok in ["localhost", "localhost:80", "127.0.0.1:1", "[::1]:8080", "[::1]"] {
            assert!(host_allowed(ok, &hosts), "{ok}");
        }
        for bad in ["", ":80", "localhost.evil:80", "127.0.0.2:80", "[::2]:1", "evil"] {
            assert!(!host_allowed(bad, &hosts), "{bad}");
        }
    }

    #[test]
    fn hex_decoding_names_the_problem() {
        assert_eq!(decode_hex("00ff").unwrap(), vec![0, 255]);
        assert!(decode_hex("abc").unwrap_err().message.contains("odd"));
        assert!(decode_hex("zz").unwrap_err().message.contains("non-hex"));
    }
}
