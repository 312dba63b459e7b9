//! A blocking client of one node's HTTP JSON API (plain HTTP, loopback or LAN), reading the
//! answers as the [`views`] the node serves them with, and a task creator's side of a task on
//! it: posting the task's files ([`Client::post_task_files`]) and revealing its held-out key in
//! the key window ([`KeyReveal`]). The CLI's commands and the testnet both use it.

use std::time::{Duration, Instant};

use anyhow::Context;
use consensus::commitment::HeldoutKey;
use consensus::crypto::Keypair;
use consensus::state::Phase;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Hash, Nonce, TaskId};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::views::{
    self, AccountView, BlobStored, BlockDetail, BlockSummary, StatusView, TaskDetail, TaskSummary,
    TxOutcome, TxsAnswer,
};

/// Longest wait for one request, by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a task creator waits for its `RevealHeldoutKey` to land before sending it again (a
/// dropped transaction; a second copy with the same nonce is refused as a replay).
pub const KEY_RESEND: Duration = Duration::from_secs(3);
/// Largest answer read, in bytes.
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;

/// Why a request to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The node URL is not `http://HOST:PORT`.
    #[error("node address {0:?} is not of the form http://HOST:PORT")]
    BadUrl(String),
    /// The connection failed.
    #[error("cannot reach the node at {base}: {source} (is it running with --http {addr}?)")]
    Connect {
        /// The node's URL.
        base: String,
        /// Its `HOST:PORT`.
        addr: String,
        /// Why.
        source: ureq::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("{what} at {base}: {source}")]
    Transport {
        /// The request.
        what: String,
        /// The node's URL.
        base: String,
        /// Why.
        source: ureq::Error,
    },
    /// The node answered with an error status.
    #[error("{what} at {base}: HTTP {status}: {message}")]
    Status {
        /// The request.
        what: String,
        /// The node's URL.
        base: String,
        /// The status code.
        status: u16,
        /// The `error` field of the answer, or its body.
        message: String,
    },
    /// The answer is not the JSON the request expects.
    #[error("{what} at {base}: unexpected answer: {source}")]
    Malformed {
        /// The request.
        what: String,
        /// The node's URL.
        base: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// A client of one node's API.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the node at `url` (`http://HOST:PORT`, or just `HOST:PORT`), each request
    /// bounded by [`REQUEST_TIMEOUT`].
    pub fn new(url: &str) -> Result<Client, HttpError> {
        let addr = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') || !addr.contains(':') {
            return Err(HttpError::BadUrl(url.to_string()));
        }
        Ok(Client { base: format!("http://{addr}"), agent: agent(REQUEST_TIMEOUT) })
    }

    /// The same client with each request bounded by `timeout` instead.
    pub fn with_timeout(self, timeout: Duration) -> Client {
        Client { agent: agent(timeout), ..self }
    }

    /// The node's URL, `http://HOST:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, its JSON answer read as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        let what = format!("GET {path}");
        let response = self.agent.get(format!("{}{path}", self.base)).call();
        self.read(&what, response)
    }

    /// `POST path` with a body of `content_type`, its JSON answer read as `T`.
    pub fn post<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<T, HttpError> {
        let url = format!("{}{path}", self.base);
        let response = self.agent.post(url).content_type(content_type).send(body);
        self.read(what, response)
    }

    fn read<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, HttpError> {
        let base = || self.base.clone();
        let transport = |source| HttpError::Transport { what: what.into(), base: base(), source };
        let mut response = response.map_err(|source| match source {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Io(_) => {
                let addr = self.base.trim_start_matches("http://").to_string();
                HttpError::Connect { base: base(), addr, source }
            }
            source => transport(source),
        })?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_string()
            .map_err(transport)?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(body);
            let status = status.as_u16();
            return Err(HttpError::Status { what: what.into(), base: base(), status, message });
        }
        serde_json::from_str(&body).map_err(|source| HttpError::Malformed {
            what: what.into(),
            base: base(),
            source,
        })
    }

    /// `GET /status`.
    pub fn status(&self) -> Result<StatusView, HttpError> {
        self.get("/status")
    }

    /// `GET /blocks/{height}`.
    pub fn block(&self, height: u64) -> Result<BlockDetail, HttpError> {
        self.get(&format!("/blocks/{height}"))
    }

    /// `GET /blocks?from=&limit=`: up to `limit` (at most 100) block summaries from `from` on.
    pub fn blocks(&self, from: u64, limit: u32) -> Result<Vec<BlockSummary>, HttpError> {
        self.get(&format!("/blocks?from={from}&limit={limit}"))
    }

    /// `GET /tasks`.
    pub fn tasks(&self) -> Result<Vec<TaskSummary>, HttpError> {
        self.get("/tasks")
    }

    /// `GET /tasks/{id}`.
    pub fn task(&self, id: u64) -> Result<TaskDetail, HttpError> {
        self.get(&format!("/tasks/{id}"))
    }

    /// `GET /accounts/{id}`.
    pub fn account(&self, account: &AccountId) -> Result<AccountView, HttpError> {
        self.get(&format!("/accounts/{account}"))
    }

    /// The next nonce of `account`, from `GET /accounts/{id}`.
    pub fn nonce(&self, account: &AccountId) -> Result<u64, HttpError> {
        Ok(self.account(account)?.nonce)
    }

    /// `POST /blobs?sha256=…`: stores `bytes` on the node, which provides it to the network.
    pub fn post_blob(&self, bytes: &[u8]) -> Result<BlobStored, HttpError> {
        let sha = consensus::hash::sha256(bytes);
        let path = format!("/blobs?sha256={sha}");
        self.post("POST /blobs", &path, "application/octet-stream", bytes)
    }

    /// `POST /txs`: submits a signed transaction; returns its hash as the node reports it.
    pub fn post_tx(&self, tx: &SignedTx) -> Result<Hash, HttpError> {
        let body = serde_json::json!({ "tx": hex::encode(tx.encode()) }).to_string();
        let what = format!("POST /txs ({})", tx.tx.kind.name());
        let answer: views::TxAccepted =
            self.post(&what, "/txs", "application/json", body.as_bytes())?;
        Ok(answer.hash)
    }

    /// `POST /txs` with a batch: submits signed transactions in one request; returns, in order,
    /// each one's outcome.
    pub fn post_txs(&self, txs: &[SignedTx]) -> Result<Vec<TxOutcome>, HttpError> {
        let hexes: Vec<String> = txs.iter().map(|tx| hex::encode(tx.encode())).collect();
        let body = serde_json::json!({ "txs": hexes }).to_string();
        let what = format!("POST /txs ({} txs)", txs.len());
        match self.post(&what, "/txs", "application/json", body.as_bytes())? {
            TxsAnswer::Batch { results } => Ok(results),
            TxsAnswer::One(one) => Ok(vec![TxOutcome { hash: Some(one.hash), error: None }]),
        }
    }

    /// Signs `kind` as `key` on chain `chain_id` with the account's next nonce and posts it.
    pub fn sign_and_post(
        &self,
        key: &Keypair,
        chain_id: &str,
        kind: TxKind,
    ) -> Result<Hash, HttpError> {
        let tx = Tx { chain_id: chain_id.into(), nonce: Nonce(self.nonce(&key.account())?), kind };
        self.post_tx(&SignedTx::sign(key, tx))
    }

    /// Uploads a task's public training file and its sealed held-out file (`POST /blobs`): the
    /// node serves them to the network, and validators attest to holding the sealed one.
    pub fn post_task_files(&self, train: &[u8], sealed: &[u8]) -> anyhow::Result<()> {
        self.post_blob(train).context("uploading the training file")?;
        self.post_blob(sealed).context("uploading the sealed held-out file")?;
        Ok(())
    }
}

/// A task creator's reveal of its held-out key: once the task is in its key window, signs and
/// posts `RevealHeldoutKey`, and again every [`KEY_RESEND`] while the task stays there.
#[derive(Clone, Debug)]
pub struct KeyReveal {
    task: u64,
    key: HeldoutKey,
    sent_at: Option<Instant>,
}

impl KeyReveal {
    /// The reveal of `key` for task `task`, not sent yet.
    pub fn new(task: u64, key: HeldoutKey) -> KeyReveal {
        KeyReveal { task, key, sent_at: None }
    }

    /// Given the task as `client`'s node serves it now, posts the key signed by `creator` if it
    /// is due; returns the transaction's hash when it posted one.
    pub fn poll(
        &mut self,
        client: &Client,
        creator: &Keypair,
        chain_id: &str,
        view: &TaskDetail,
    ) -> Result<Option<Hash>, HttpError> {
        let due = self.sent_at.is_none_or(|at| at.elapsed() >= KEY_RESEND);
        if view.summary.phase != Phase::Key || !due {
            return Ok(None);
        }
        let kind = TxKind::RevealHeldoutKey { task: TaskId(self.task), key: self.key };
        let hash = client.sign_and_post(creator, chain_id, kind)?;
        self.sent_at = Some(Instant::now());
        Ok(Some(hash))
    }
}

/// An agent whose requests are bounded by `timeout`, that reads error statuses as answers and
/// never goes through a proxy from the environment (the node is on loopback or the LAN).
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_are_checked() {
        assert_eq!(Client::new("http://127.0.0.1:8081/").unwrap().base(), "http://127.0.0.1:8081");
        assert_eq!(Client::new("127.0.0.1:8081").unwrap().base(), "http://127.0.0.1:8081");
        assert!(matches!(Client::new("ftp://x"), Err(HttpError::BadUrl(_))));
        assert!(matches!(Client::new("http://x:1/a"), Err(HttpError::BadUrl(_))));
    }

    #[test]
    fn a_refused_connection_names_the_node() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = Client::new(&format!("127.0.0.1:{port}")).unwrap().status().unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e}");
    }
}
