//! The explorer page. `GET /` serves the HTML, which loads `app.js` and `style.css` (served with
//! their content types), and every API path the script fetches is a route of the server. (The
//! browser test, headless Chromium on a live network, is `tests/tests/explorer.rs`.)
//!
//! The server setup is copied from `node/tests/http_api.rs`: a real ledger with a finalized task,
//! a real network on loopback, the server on a free port, and a minimal HTTP/1.1 client over a
//! TCP stream.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use consensus::block::Block;
use consensus::chain::{Ledger, build_block};
use consensus::commitment::{Salt, model_commitment, scores_commitment};
use consensus::crypto::Keypair;
use consensus::genesis::{Genesis, GenesisBalance, GenesisValidator, Params};
use consensus::storage::MemStore;
use consensus::task::{
    Dataset, Dtype, Efficiency, Limits, Preprocessing, TaskKind, TaskSpec, Windows,
};
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Amount, Hash, Height, Round, TaskId};
use consensus::verdict::{RejectReason, Subject, Verdict, VerdictEntry, VerdictVector};
use consensus::vote::{CommitCertificate, SignedVote, Vote, VoteKind};
use node::datadir::DataDir;
use node::http::{HttpConfig, serve_with_config};
use node::keystore;
use node::network::{self, NetworkConfig};
use node::runtime::{Metrics, NodeContext, Role};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Longest any request may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// What the router's fallback says for a path that is no route.
const NO_ROUTE: &str = "no such route";
const REWARD: u64 = 10_000;
const BOND: u64 = 1_000;
const TRANSFER: u64 = 5;

fn key(tag: u8, i: u8) -> Keypair {
    let mut seed = [tag; 32];
    seed[31] = i;
    Keypair::from_seed(seed)
}

/// Two validators (stakes 100 and 60), two trainers, a task creator.
struct Keys {
    validators: [Keypair; 2],
    trainers: [Keypair; 2],
    creator: Keypair,
}

fn keys() -> Keys {
    Keys {
        validators: [key(1, 0), key(1, 1)],
        trainers: [key(2, 0), key(2, 1)],
        creator: key(3, 0),
    }
}

fn genesis(k: &Keys) -> Genesis {
    let validators = k
        .validators
        .iter()
        .zip([100, 60])
        .enumerate()
        .map(|(i, (v, stake))| GenesisValidator {
            account: v.account(),
            stake: Amount(stake),
            name: format!("v{i}"),
        })
        .collect();
    let balances = k
        .trainers
        .iter()
        .chain([&k.creator])
        .map(|a| GenesisBalance { account: a.account(), amount: Amount(1_000_000) })
        .chain(
            k.validators
                .iter()
                .map(|v| GenesisBalance { account: v.account(), amount: Amount(1_000) }),
        )
        .collect();
    Genesis {
        chain_id: "crucible-http-test".into(),
        genesis_time_ms: 1_000,
        validators,
        balances,
        params: Params::default(),
        tasks: vec![],
    }
}

fn spec() -> TaskSpec {
    TaskSpec {
        name: "digits-http".into(),
        kind: TaskKind::Classification { features: 4, classes: 3 },
        preprocessing: Preprocessing::Standardize { mean: vec![0.0; 4], std: vec![1.0; 4] },
        dataset: Dataset {
            name: "toy".into(),
            train_sha256: Hash([1; 32]),
            heldout_commitment: Hash([2; 32]),
        },
        limits: Limits {
            max_params: 100_000,
            max_artifact_bytes: 1 << 20,
            dtypes: vec![Dtype::F32],
        },
        efficiency: Efficiency { reference_params: 1_000, penalty_ppm_per_doubling: 50_000 },
        bond: Amount(BOND),
        max_trainers: 3,
        windows: Windows { join: 3, commit: 3, reveal: 3, score_commit: 3, score_reveal: 3 },
        base_model: None,
    }
}

/// A ledger that blocks are built, certified by both validators, and committed to.
struct Chain {
    ledger: Ledger,
    chain_id: String,
    validators: Vec<Keypair>,
    last_commit: Option<CommitCertificate>,
    time_ms: u64,
}

impl Chain {
    fn sign(&self, key: &Keypair, kind: TxKind) -> SignedTx {
        let nonce = self.ledger.state().account(&key.account()).nonce;
        SignedTx::sign(key, Tx { chain_id: self.chain_id.clone(), nonce, kind })
    }

    fn commit(&mut self, txs: Vec<SignedTx>) -> Block {
        self.time_ms += 500;
        let expected = txs.len();
        let proposer = self.validators[0].account();
        let block =
            build_block(self.ledger.state(), txs, self.time_ms, proposer, self.last_commit.clone())
                .unwrap();
        assert_eq!(block.txs.len(), expected, "every tx of block {} executes", block.height());
        let vote = Vote {
            height: block.height(),
            round: Round(0),
            kind: VoteKind::Precommit,
            block: Some(block.hash()),
        };
        let votes: Vec<SignedVote> =
            self.validators.iter().map(|k| SignedVote::sign(k, &self.chain_id, vote)).collect();
        let cert = CommitCertificate::from_precommits(&votes).unwrap();
        self.ledger.commit_block(&block, &cert).unwrap();
        self.last_commit = Some(cert);
        block
    }

    /// Commits empty blocks until the next block is `height`.
    fn advance_to(&mut self, height: u64) {
        while self.ledger.height().next() < Height(height) {
            self.commit(vec![]);
        }
    }
}

/// The chain: task 1 created at height 1, both trainers join and commit; trainer 0's model is
/// scored 600000 ppm by validator 0 and 650000 by validator 1 (who disagrees with the
/// consensus), trainer 1's is rejected as malformed; the task finalizes at height 16; the tip is
/// 17; block 2 also holds a transfer.
fn build_chain(k: &Keys, genesis: &Genesis) -> Ledger {
    let ledger = Ledger::open(Box::new(MemStore::new()), genesis).unwrap();
    let mut c = Chain {
        ledger,
        chain_id: genesis.chain_id.clone(),
        validators: vec![key(1, 0), key(1, 1)],
        last_commit: None,
        time_ms: genesis.genesis_time_ms,
    };
    let task = TaskId(1);
    let create =
        c.sign(&k.creator, TxKind::CreateTask { spec: Box::new(spec()), reward: Amount(REWARD) });
    c.commit(vec![create]);
    let transfer = c.sign(
        &k.creator,
        TxKind::Transfer { to: k.trainers[0].account(), amount: Amount(TRANSFER) },
    );
    let joins: Vec<SignedTx> =
        k.trainers.iter().map(|t| c.sign(t, TxKind::JoinTask { task })).collect();
    c.commit([transfer].into_iter().chain(joins).collect());

    let models = [Hash([10; 32]), Hash([11; 32])];
    let salt = |n: u8| Salt(Hash([n; 32]));
    let commits: Vec<SignedTx> = k
        .trainers
        .iter()
        .zip(&models)
        .enumerate()
        .map(|(i, (t, m))| {
            let commitment = model_commitment(&c.chain_id, task, &t.account(), m, &salt(i as u8));
            c.sign(t, TxKind::CommitModel { task, commitment })
        })
        .collect();
    c.commit(commits);

    c.advance_to(8);
    let reveals: Vec<SignedTx> = k
        .trainers
        .iter()
        .zip(&models)
        .enumerate()
        .map(|(i, (t, m))| {
            let kind = TxKind::RevealModel {
                task,
                model_hash: *m,
                salt: salt(i as u8),
                size_bytes: 10_000,
                params: 1_000,
            };
            c.sign(t, kind)
        })
        .collect();
    c.commit(reveals);

    let vector = |score: u32| -> VerdictVector {
        let mut subs = vec![
            (k.trainers[0].account(), Verdict::scored(score)),
            (k.trainers[1].account(), Verdict::Rejected { reason: RejectReason::Malformed }),
        ];
        subs.sort_by_key(|(a, _)| *a);
        let mut v =
            vec![VerdictEntry { subject: Subject::Baseline, verdict: Verdict::scored(100_000) }];
        v.extend(
            subs.into_iter()
                .map(|(a, verdict)| VerdictEntry { subject: Subject::Submission(a), verdict }),
        );
        v
    };
    let vectors = [vector(600_000), vector(650_000)];
    c.advance_to(11);
    let score_commits: Vec<SignedTx> = k
        .validators
        .iter()
        .zip(&vectors)
        .enumerate()
        .map(|(i, (v, vec))| {
            let commitment =
                scores_commitment(&c.chain_id, task, &v.account(), vec, &salt(50 + i as u8));
            c.sign(v, TxKind::CommitScores { task, commitment })
        })
        .collect();
    c.commit(score_commits);
    c.advance_to(14);
    let score_reveals: Vec<SignedTx> = k
        .validators
        .iter()
        .zip(&vectors)
        .enumerate()
        .map(|(i, (v, vec))| {
            let kind =
                TxKind::RevealScores { task, verdicts: vec.clone(), salt: salt(50 + i as u8) };
            c.sign(v, kind)
        })
        .collect();
    c.commit(score_reveals);
    c.advance_to(18);
    assert_eq!(c.ledger.height(), Height(17));
    assert!(c.ledger.state().tasks.get(&task).unwrap().report.is_some(), "task 1 finalized");
    c.ledger
}

/// The running server; the fields keep its parts alive.
struct Harness {
    addr: SocketAddr,
    _submissions: mpsc::Receiver<node::runtime::Submission>,
    _external: mpsc::Receiver<(SignedTx, oneshot::Sender<Result<(), String>>)>,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let keys = keys();
    let genesis = genesis(&keys);
    let ledger = build_chain(&keys, &genesis);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = DataDir::new(dir.path());
    let mut config = NetworkConfig::for_chain(
        &genesis.chain_id,
        genesis.hash(),
        &genesis.params,
        data_dir.blobs(),
    );
    config.mdns = false;
    let node_key = key(1, 0);
    let (client, mut events, event_loop) =
        network::start(keystore::libp2p_keypair(&node_key).unwrap(), config).unwrap();
    tokio::spawn(event_loop.run());
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let (submissions, submissions_rx) = mpsc::channel(8);
    let (external_txs, external) = mpsc::channel(8);
    let ctx = NodeContext {
        genesis: Arc::new(genesis),
        key: Arc::new(node_key),
        role: Role::Validator,
        data_dir,
        ledger: Arc::new(RwLock::new(ledger)),
        network: client,
        submissions,
        external_txs,
        events: broadcast::channel(16).0,
        metrics: Arc::new(Metrics::default()),
        live_votes: Arc::default(),
        heldout_dir: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with_config(ctx, listener, HttpConfig::default()));
    Harness { addr, _submissions: submissions_rx, _external: external, _dir: dir }
}

/// An answer: status, headers (names lowercase), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body is not JSON: {}", self.text()))
    }
}

/// One `GET` on its own connection.
async fn get(addr: SocketAddr, path: &str) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange).await.expect("the server answers in time");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Answer { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 4 + size..];
    }
}

/// The path of every `api("…"` call in the script, from its string literal without the query
/// (the script appends the query's values): a whole path or, when the script appends an id, a
/// prefix ending in `/`.
fn api_paths(script: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut rest = script;
    while let Some(at) = rest.find("api(\"") {
        rest = &rest[at + "api(\"".len()..];
        let end = rest.find('"').expect("a closed string literal");
        let path = rest[..end].split('?').next().unwrap_or_default();
        if path.starts_with('/') {
            paths.insert(path.to_string());
        }
    }
    paths
}

/// An id that does not exist, for a path prefix the script completes with an id.
fn missing_id(prefix: &str) -> String {
    match prefix {
        "/tasks/" | "/blocks/" => "999999".into(),
        "/accounts/" | "/txs/" => "ab".repeat(32),
        other => panic!("app.js fetches {other}<id>: add a missing id for it to this test"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served() {
    let h = start().await;
    let page = get(h.addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("<script src=\"app.js\"></script>"), "{html}");
    assert!(html.contains("<link rel=\"stylesheet\" href=\"style.css\">"), "{html}");

    let script = get(h.addr, "/app.js").await;
    assert_eq!(script.status, 200);
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(script.text().contains("function refresh()"));

    let style = get(h.addr, "/style.css").await;
    assert_eq!(style.status, 200);
    assert_eq!(style.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(style.text().contains("body {"));

    // The API's fallback is untouched: an unknown path is still a JSON 404.
    let missing = get(h.addr, "/no-such-page.html").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains(NO_ROUTE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_path_the_script_fetches_is_a_route() {
    let h = start().await;
    let script = get(h.addr, "/app.js").await.text();
    let paths = api_paths(&script);
    for expected in ["/status", "/validators", "/peers", "/tasks/", "/accounts/"] {
        assert!(paths.contains(expected), "app.js should fetch {expected}; it fetches {paths:?}");
    }
    for path in &paths {
        if path.ends_with('/') {
            // A prefix completed with an id: an id that does not exist is a JSON 404 from the
            // route's handler, not the fallback's "no such route".
            let url = format!("{path}{}", missing_id(path));
            let answer = get(h.addr, &url).await;
            assert_eq!(answer.status, 404, "GET {url}: {}", answer.text());
            let error = answer.json()["error"].as_str().expect("an error message").to_string();
            assert!(!error.contains(NO_ROUTE), "GET {url} is not a route: {error}");
        } else {
            let answer = get(h.addr, path).await;
            assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
            answer.json();
        }
    }
}
