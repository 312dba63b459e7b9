//! The HTTP JSON API end to end: a real ledger with a finalized task, a real network on
//! loopback, the server on a free port, and a minimal HTTP/1.1 client over a TCP stream. Also
//! the explorer page: `GET /` serves the HTML, which loads `app.js` and `style.css` (served with
//! their content types), and every API path the script fetches is a route of the server (the
//! page in a browser on a live network is `tests/tests/explorer.rs`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use consensus::crypto::Keypair;
use consensus::genesis::Genesis;
use consensus::hash::sha256;
use consensus::task::{TaskSpec, Windows};
use consensus::testing::{
    TestChain, example_spec, heldout_key, key, model, model_commit, model_reveal, salt,
    scores_commit, vector,
};
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Amount, Hash, Height, Nonce, Round, TaskId};
use consensus::verdict::{RejectReason, Verdict};
use consensus::vote::{Vote, VoteKind};
use libp2p::Multiaddr;
use node::datadir::DataDir;
use node::http::{HttpConfig, serve_with_config};
use node::keystore;
use node::mempool::{Mempool, MempoolLimits};
use node::network::{self, NetworkClient, NetworkConfig};
use node::runtime::{ChainEvent, ExternalTxs, Metrics, NodeContext, Role};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};

/// Longest any request may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
const REWARD: u64 = 10_000;
const BOND: u64 = 1_000;
/// 3 slots × 2334 cover the 7000 trainer share of the reward.
const ENTRY_FEE: u64 = 2_334;
const TRANSFER: u64 = 5;
/// The blob limit the test server runs with.
const BLOB_LIMIT: u64 = 1 << 20;
/// What the router's fallback says for a path that is no route.
const NO_ROUTE: &str = "no such route";

/// Two validators (stakes 100 and 60), two trainers, a task creator.
struct Keys {
    validators: Vec<Keypair>,
    trainers: Vec<Keypair>,
    creator: Keypair,
}

fn spec() -> TaskSpec {
    TaskSpec {
        name: "digits-http".into(),
        bond: Amount(BOND),
        entry_fee: Amount(ENTRY_FEE),
        windows: Windows {
            join: 3,
            commit: 3,
            key: 5,
            reveal: 3,
            score_commit: 6,
            score_reveal: 3,
        },
        ..example_spec(3)
    }
}

/// The chain: task 1 created at height 1, both validators attest, both trainers join and
/// commit (so the commit window closes at the join deadline, 4), the creator reveals the
/// held-out key at height 8 and both trainers reveal at 9 (which closes the reveal window);
/// trainer 0's model is scored 600000 ppm by validator 0 and 650000 by validator 1 (who disagrees
/// with the consensus), trainer 1's is rejected as malformed; both validators commit at 14 and
/// reveal at 17, where the task finalizes; the tip is 20. Returns the chain and the hash of a
/// transfer in block 2.
fn build_chain() -> (TestChain, Hash) {
    let mut c = TestChain::new(&[100, 60], 2);
    // Commits a block and checks that every tx in it executed.
    let commit = |c: &mut TestChain, txs: Vec<SignedTx>| {
        let expected = txs.len();
        let block = c.commit(txs);
        assert_eq!(block.txs.len(), expected, "every tx of block {} executes", block.height());
    };
    let task = c.create_task_unattested(spec(), REWARD);
    assert_eq!(task, TaskId(1));
    let transfer = c.sign(
        &c.creator,
        TxKind::Transfer { to: c.trainers[0].account(), amount: Amount(TRANSFER) },
    );
    let transfer_hash = transfer.hash();
    let joins = c.trainers.iter().map(|t| c.sign(t, TxKind::JoinTask { task }));
    let attests = c.validators.iter().map(|v| c.sign(v, TxKind::AttestHeldout { task }));
    let block_2 = [transfer].into_iter().chain(joins).chain(attests).collect();
    commit(&mut c, block_2);

    let commits = (0..2u8)
        .map(|i| {
            let t = &c.trainers[usize::from(i)];
            c.sign(t, model_commit(&c, task, t, &model(i), &salt(i)))
        })
        .collect();
    commit(&mut c, commits);

    c.advance_to(Height(8));
    let reveal_key = c.sign(&c.creator, TxKind::RevealHeldoutKey { task, key: heldout_key() });
    commit(&mut c, vec![reveal_key]);
    let reveals = (0..2u8)
        .map(|i| c.sign(&c.trainers[usize::from(i)], model_reveal(task, model(i), salt(i), 1_000)))
        .collect();
    commit(&mut c, reveals);

    let verdicts = |score: u32| {
        vector(
            100_000,
            vec![
                (c.trainers[0].account(), Verdict::scored(score)),
                (c.trainers[1].account(), Verdict::Rejected { reason: RejectReason::Malformed }),
            ],
        )
    };
    let vectors = [verdicts(600_000), verdicts(650_000)];
    c.advance_to(Height(14));
    let score_commits = (0..2u8)
        .map(|i| {
            let v = &c.validators[usize::from(i)];
            c.sign(v, scores_commit(&c, task, v, &vectors[usize::from(i)], &salt(50 + i)))
        })
        .collect();
    commit(&mut c, score_commits);
    c.advance_to(Height(17));
    let score_reveals = (0..2u8)
        .map(|i| {
            let (verdicts, salt) = (vectors[usize::from(i)].clone(), salt(50 + i));
            c.sign(&c.validators[usize::from(i)], TxKind::RevealScores { task, verdicts, salt })
        })
        .collect();
    commit(&mut c, score_reveals);
    c.advance_to(Height(21));
    assert_eq!(c.height(), Height(20));
    assert!(c.task(task).report.is_some(), "task 1 finalized");
    (c, transfer_hash)
}

/// Starts a network node of `genesis`'s chain (no mDNS) with `key`, its events drained.
fn start_network(genesis: &Genesis, key: &Keypair, blobs: PathBuf) -> NetworkClient {
    let mut config =
        NetworkConfig::for_chain(&genesis.chain_id, genesis.hash(), &genesis.params, blobs);
    config.mdns = false;
    let (client, mut events, event_loop) =
        network::start(keystore::libp2p_keypair(key).unwrap(), config).unwrap();
    tokio::spawn(event_loop.run());
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    client
}

/// A running API and the far ends of its channels.
struct Harness {
    addr: SocketAddr,
    keys: Keys,
    genesis: Genesis,
    ctx: NodeContext,
    external: mpsc::Receiver<ExternalTxs>,
    transfer: Hash,
    /// A one-tx mempool over the chain: its full flag is the API's.
    pool: Mempool,
    _submissions: mpsc::Receiver<node::runtime::Submission>,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let (chain, transfer) = build_chain();
    let (ledger, genesis) = (chain.ledger, chain.genesis);
    let keys =
        Keys { validators: chain.validators, trainers: chain.trainers, creator: chain.creator };
    let limits = MempoolLimits { txs_max: 1, ..MempoolLimits::for_chain(&genesis.params) };
    let pool = Mempool::new(ledger.state(), limits);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = DataDir::new(dir.path());
    let node_key = key(1, 0);
    let client = start_network(&genesis, &node_key, data_dir.blobs());
    let (submissions, submissions_rx) = mpsc::channel(8);
    let (external_txs, external) = mpsc::channel(8);
    let verifier = ledger.state().verifier().clone();
    let ctx = NodeContext {
        genesis: Arc::new(genesis.clone()),
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
        mempool_full: pool.full_flag(),
        verifier,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = HttpConfig {
        blob_bytes_max: BLOB_LIMIT,
        provide_timeout: Duration::from_secs(1),
        admit_timeout: Duration::from_secs(5),
        ..HttpConfig::default()
    };
    tokio::spawn(serve_with_config(ctx.clone(), listener, http));
    Harness {
        addr,
        keys,
        genesis,
        ctx,
        external,
        transfer,
        pool,
        _submissions: submissions_rx,
        _dir: dir,
    }
}

/// An answer: status, headers (names lowercase), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: body is not JSON: {}", String::from_utf8_lossy(&self.body))
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().expect("an error body").to_string()
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }
}

/// One HTTP/1.1 request on its own connection.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        // With `Expect: 100-continue` the body waits for the server's go-ahead, which a server
        // that refuses the upload never gives; the test sends no body then.
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("expect")) {
            stream.write_all(body).await.unwrap();
        }
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

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[], b"").await
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a JSON number"))
}

fn string(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a JSON string"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_status_blocks_txs_and_validators() {
    let h = start().await;
    let (tip_hash, root) = h.ctx.read(|l| (l.state().meta().last_block_hash, l.state_root()));

    let status = get(h.addr, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("access-control-allow-origin"), Some("*"), "reads are public");
    let s = status.json();
    assert_eq!(string(&s["chain_id"]), h.genesis.chain_id);
    assert_eq!(string(&s["genesis_hash"]), h.genesis.hash().to_hex());
    assert_eq!(num(&s["height"]), 20);
    assert_eq!(string(&s["block_hash"]), tip_hash.to_hex());
    assert_eq!(string(&s["state_root"]), root.to_hex());
    assert_eq!(string(&s["role"]), "validator");
    assert_eq!(string(&s["account"]), h.keys.validators[0].account().to_hex());
    assert_eq!(num(&s["peers"]), 0);
    assert_eq!(string(&s["peer_id"]), h.ctx.network.local_peer().to_string());
    assert_eq!(string(&s["reachability"]), "unknown", "no peer has probed it");

    let blocks = get(h.addr, "/blocks").await.json();
    let heights: Vec<u64> = blocks.as_array().unwrap().iter().map(|b| num(&b["height"])).collect();
    assert_eq!(heights, (1..=20).collect::<Vec<_>>(), "by default the newest page");
    let page = get(h.addr, "/blocks?from=2&limit=3").await.json();
    let heights: Vec<u64> = page.as_array().unwrap().iter().map(|b| num(&b["height"])).collect();
    assert_eq!(heights, vec![2, 3, 4]);
    assert_eq!(num(&page[0]["tx_count"]), 5, "a transfer, two joins and two attestations");
    assert_eq!(get(h.addr, "/blocks?from=100").await.json(), Value::Array(vec![]));
    for bad in ["/blocks?limit=0", "/blocks?limit=101", "/blocks?from=x"] {
        let a = get(h.addr, bad).await;
        assert_eq!(a.status, 400, "{bad}");
        assert!(!a.error().is_empty());
    }

    let block = get(h.addr, "/blocks/2").await;
    assert_eq!(block.status, 200);
    let b = block.json();
    assert_eq!(num(&b["height"]), 2);
    assert_eq!(string(&b["txs"][0]), h.transfer.to_hex());
    assert_eq!(b["commit"]["signers"].as_array().unwrap().len(), 2);
    let stored = h.ctx.read(|l| l.block(Height(2)).unwrap().unwrap());
    assert_eq!(string(&b["hash"]), stored.hash().to_hex());
    assert_eq!(string(&b["state_root"]), stored.header.state_root.to_hex());
    assert_eq!(get(h.addr, "/blocks/999").await.status, 404);
    assert_eq!(get(h.addr, "/blocks/abc").await.status, 400);

    let tx = get(h.addr, &format!("/txs/{}", h.transfer)).await;
    assert_eq!(tx.status, 200);
    let t = tx.json();
    assert_eq!(string(&t["kind"]), "transfer");
    assert_eq!((num(&t["height"]), num(&t["index"])), (2, 0));
    assert_eq!(string(&t["signer"]), h.keys.creator.account().to_hex());
    assert_eq!(string(&t["body"]["amount"]), TRANSFER.to_string(), "amounts are strings");
    let missing = get(h.addr, &format!("/txs/{}", Hash([9; 32]))).await;
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("no transaction"));
    assert_eq!(get(h.addr, "/txs/nothex").await.status, 400);

    // The latest vote heard from v0 in the height in progress; an older one does not replace it.
    let vote = |round, kind| Vote { height: Height(21), round: Round(round), kind, block: None };
    let v0_account = h.keys.validators[0].account();
    h.ctx.live_votes.record(v0_account, vote(1, VoteKind::Prevote));
    h.ctx.live_votes.record(v0_account, vote(0, VoteKind::Precommit));
    let validators = get(h.addr, "/validators").await.json();
    let list = validators.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let v0 = list
        .iter()
        .find(|v| v["account"] == h.keys.validators[0].account().to_hex().as_str())
        .unwrap();
    assert_eq!(string(&v0["stake"]), "100");
    assert_eq!(string(&v0["power"]), "100");
    let votes = v0["last_votes"].as_array().unwrap();
    assert_eq!(votes.len(), 10, "the last ten commit certificates");
    assert_eq!(num(&votes[0]["height"]), 20);
    assert!(votes.iter().all(|v| v["signed"] == true));
    let live = &v0["live_vote"];
    assert_eq!((num(&live["height"]), num(&live["round"])), (21, 1), "{live}");
    assert_eq!(live["kind"], "prevote");
    assert_eq!(live["block"], Value::Null);
    assert!(list.iter().any(|v| v["live_vote"].is_null()), "v1 was not heard");

    assert_eq!(get(h.addr, "/peers").await.json(), Value::Array(vec![]));
    // A second node on the chain dials in: it shows in /status and /peers.
    let dir = tempfile::tempdir().unwrap();
    let other = key(1, 1);
    let client = start_network(&h.genesis, &other, dir.path().join("blobs"));
    // It dials the address /status advertises, peer id included.
    let deadline = tokio::time::Instant::now() + WAIT;
    let address: Multiaddr = loop {
        if let Some(a) = get(h.addr, "/status").await.json()["listen_addrs"].get(0) {
            break string(a).parse().expect("a multiaddr");
        }
        assert!(tokio::time::Instant::now() < deadline, "the node never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let listening = h.ctx.network.listen_addresses().await.unwrap();
    let peer = h.ctx.network.local_peer();
    assert!(
        listening.iter().any(|a| a.clone().with_p2p(peer).as_ref() == Ok(&address)),
        "{address}"
    );
    client.dial(address).await.unwrap();
    while num(&get(h.addr, "/status").await.json()["peers"]) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the peer never passed the handshake");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peers = get(h.addr, "/peers").await.json();
    assert_eq!(string(&peers[0]["account"]), other.account().to_hex());
    assert_eq!(string(&peers[0]["peer_id"]), client.local_peer().to_string());
    let connections = peers[0]["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert_eq!(connections[0]["outbound"], false, "the peer dialed the node");
    assert_eq!(connections[0]["relayed"], false);
    assert!(string(&connections[0]["address"]).starts_with("/ip4/127.0.0.1/"));
    // The handshake moved bytes both ways, and the node counted them, as the peer did.
    let metrics = get(h.addr, "/metrics").await;
    for name in ["crucible_network_bytes_in_total", "crucible_network_bytes_out_total"] {
        assert!(sample(&metrics, name) > 0.0, "{name} counts the connection's bytes");
    }
    assert!(client.traffic().inbound() > 0 && client.traffic().outbound() > 0);
    let unknown = get(h.addr, "/nothing").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains(NO_ROUTE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_accounts_explain_the_finalized_rewards() {
    let h = start().await;
    let [winner, rejected] = [h.keys.trainers[0].account(), h.keys.trainers[1].account()];

    let tasks = get(h.addr, "/tasks").await.json();
    assert_eq!(tasks.as_array().unwrap().len(), 1);
    assert_eq!(string(&tasks[0]["reward"]), REWARD.to_string());
    assert_eq!(string(&tasks[0]["phase"]), "finalized");
    assert_eq!(string(&tasks[0]["champion"]), winner.to_hex());

    let task = get(h.addr, "/tasks/1").await.json();
    assert_eq!(num(&task["deadlines"]["score"]), 17, "closed early by the last reveal");
    assert_eq!(num(&task["deadlines"]["key"]), 8, "where the key landed");
    assert_eq!(num(&task["deadlines"]["commit"]), 4, "closed early at the join deadline");
    assert_eq!(num(&task["key_revealed_at"]), 8);
    assert_eq!(string(&task["attestation"]["attested_stake"]), "160");
    assert_eq!(task["attestation"]["quorum"], true);
    assert_eq!(string(&task["report"]["attested_stake"]), "160");
    assert_eq!(num(&task["windows"]["join"]), 3);
    assert_eq!(task["stakes"].as_array().unwrap().len(), 2, "the snapshot of both validators");
    assert_eq!(task["references"].as_array().unwrap().len(), 0, "no earlier champion");
    assert_eq!(string(&task["spec"]["entry_fee"]), ENTRY_FEE.to_string());
    assert_eq!(task["submissions"].as_array().unwrap().len(), 2);
    assert_eq!(task["verdicts"].as_array().unwrap().len(), 2);
    assert_eq!(task["consensus"].as_array().unwrap().len(), 3);
    assert_eq!(string(&task["consensus"][0]["subject"]), "baseline");
    let report = &task["report"];
    assert_eq!(string(&report["outcome"]), "finalized");
    assert_eq!(num(&report["baseline_ppm"]), 100_000);
    assert_eq!(string(&report["champion"]["trainer"]), winner.to_hex());
    let trainer_pool = REWARD * 7 / 10;
    let paid = task["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["account"] == winner.to_hex().as_str() && p["role"] == "trainer")
        .unwrap();
    assert_eq!(string(&paid["amount"]), trainer_pool.to_string());
    assert_eq!(get(h.addr, "/tasks/99").await.status, 404);
    assert_eq!(get(h.addr, "/tasks/x").await.status, 400);

    let account = get(h.addr, &format!("/accounts/{winner}")).await.json();
    // 3 txs' fees; the entry fee burned, the bond back.
    let expected_balance = 1_000_000 - 1 - BOND - ENTRY_FEE + TRANSFER + trainer_pool + BOND - 2;
    assert_eq!(string(&account["balance"]), expected_balance.to_string());
    assert_eq!(num(&account["nonce"]), 3);
    assert_eq!(string(&account["stake"]), "0");
    assert_eq!(num(&account["tasks_total"]), 1);
    let mine = &account["tasks"][0]["as_trainer"];
    assert_eq!(string(&mine["payout"]), trainer_pool.to_string());
    assert_eq!(num(&mine["rank"]), 1);
    assert_eq!(num(&mine["effective_ppm"]), 600_000);
    assert_eq!(string(&mine["consensus"]["verdict"]), "scored");
    let verdicts = mine["validator_verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2);
    let scores: Vec<u64> = verdicts.iter().map(|v| num(&v["verdict"]["score_ppm"])).collect();
    assert!(scores.contains(&600_000) && scores.contains(&650_000), "{scores:?}");
    assert_eq!(verdicts.iter().filter(|v| v["agrees"] == false).count(), 1);
    assert!(string(&mine["explanation"]).contains("beats the baseline"));

    let loser = get(h.addr, &format!("/accounts/{rejected}")).await.json();
    let theirs = &loser["tasks"][0]["as_trainer"];
    assert_eq!(string(&theirs["forfeit"]["reason"]), "rejected");
    assert_eq!(string(&theirs["bond_forfeit"]), BOND.to_string());
    assert_eq!(string(&theirs["payout"]), "0");
    assert_eq!(string(&theirs["consensus"]["reason"]), "malformed");
    assert!(string(&theirs["explanation"]).contains("forfeited"));

    let v1 = h.keys.validators[1].account();
    let validator = get(h.addr, &format!("/accounts/{v1}")).await.json();
    assert_eq!(string(&validator["stake"]), "60");
    assert_eq!(validator["validator"], true);
    let scored = &validator["tasks"][0]["as_validator"];
    assert_eq!(num(&scored["agreed_entries"]), 2);
    assert_eq!(scored["disagreements"].as_array().unwrap().len(), 1);
    assert_eq!(string(&scored["disagreements"][0]["subject"]), winner.to_hex());

    let creator = get(h.addr, &format!("/accounts/{}", h.keys.creator.account())).await.json();
    assert_eq!(string(&creator["tasks"][0]["as_creator"]["reward"]), REWARD.to_string());

    assert_eq!(get(h.addr, &format!("/accounts/{}", AccountId([7; 32]))).await.status, 404);
    assert_eq!(get(h.addr, "/accounts/short").await.status, 400);
    assert_eq!(get(h.addr, &format!("/accounts/{winner}?limit=0")).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_txs_forwards_admits_and_refuses() {
    let mut h = start().await;
    let sender = &h.keys.trainers[0];
    let tx = SignedTx::sign(
        sender,
        Tx {
            chain_id: h.genesis.chain_id.clone(),
            nonce: Nonce(3),
            kind: TxKind::Transfer { to: AccountId([7; 32]), amount: Amount(1) },
        },
    );
    let body = format!("{{\"tx\": \"{}\"}}", hex_of(&tx.encode()));
    let addr = h.addr;
    let post = tokio::spawn({
        let body = body.clone();
        async move { request(addr, "POST", "/txs", &[], body.as_bytes()).await }
    });
    let forwarded = h.external.recv().await.expect("the tx reaches external_txs");
    assert_eq!(forwarded.txs, vec![tx.clone()]);
    forwarded.admitted.send(vec![Ok(())]).unwrap();
    let answer = post.await.unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(string(&answer.json()["hash"]), tx.hash().to_hex());
    assert_eq!(answer.header("access-control-allow-origin"), None, "no CORS on writes");

    // The node's own page may write.
    let own = format!("http://{addr}");
    let post = tokio::spawn({
        let body = body.clone();
        async move { request(addr, "POST", "/txs", &[("Origin", &own)], body.as_bytes()).await }
    });
    let forwarded = h.external.recv().await.unwrap();
    forwarded.admitted.send(vec![Err("nonce 3 already used".into())]).unwrap();
    let refused = post.await.unwrap();
    assert_eq!(refused.status, 400);
    assert!(refused.error().contains("nonce 3 already used"), "{}", refused.error());

    // Another origin may not.
    let cross =
        request(addr, "POST", "/txs", &[("Origin", "http://evil.example")], body.as_bytes()).await;
    assert_eq!(cross.status, 403);
    assert!(cross.error().contains("cross-origin"));

    let wrong_chain = SignedTx::sign(
        sender,
        Tx {
            chain_id: "other".into(),
            nonce: Nonce(3),
            kind: TxKind::JoinTask { task: TaskId(1) },
        },
    );
    let mut forged = tx.clone();
    forged.tx.nonce = Nonce(4);
    for (bad, why) in [
        ("not json".to_string(), "body must be"),
        ("{\"tx\": \"zz\"}".to_string(), "non-hex"),
        ("{\"tx\": \"abc\"}".to_string(), "odd"),
        ("{\"tx\": \"00\"}".to_string(), "does not decode"),
        (format!("{{\"tx\": \"{}\"}}", hex_of(&wrong_chain.encode())), "is for chain"),
        (format!("{{\"tx\": \"{}\"}}", hex_of(&forged.encode())), "signature"),
    ] {
        let a = request(addr, "POST", "/txs", &[], bad.as_bytes()).await;
        assert_eq!(a.status, 400, "{bad}");
        assert!(a.error().contains(why), "{bad}: {}", a.error());
    }
    assert!(h.external.try_recv().is_err(), "nothing refused was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_txs_takes_a_batch_and_answers_each_tx() {
    let mut h = start().await;
    let sender = &h.keys.trainers[0];
    let transfer = |nonce: u64| {
        SignedTx::sign(
            sender,
            Tx {
                chain_id: h.genesis.chain_id.clone(),
                nonce: Nonce(nonce),
                kind: TxKind::Transfer { to: AccountId([7; 32]), amount: Amount(1) },
            },
        )
    };
    let good: Vec<SignedTx> = (3..9).map(transfer).collect();
    let mut forged = transfer(9);
    forged.tx.nonce = Nonce(10);
    // Good txs around a forged one and an undecodable one: each answered in its place, and only
    // the good ones, in order, reach the node.
    let mut hexes: Vec<String> = good.iter().map(|tx| hex_of(&tx.encode())).collect();
    hexes.insert(2, hex_of(&forged.encode()));
    hexes.insert(5, "00".into());
    let body = serde_json::json!({ "txs": hexes }).to_string();
    let addr = h.addr;
    let post =
        tokio::spawn(async move { request(addr, "POST", "/txs", &[], body.as_bytes()).await });
    let forwarded = h.external.recv().await.expect("the batch reaches external_txs");
    assert_eq!(forwarded.txs, good);
    let mut outcomes = vec![Ok(()); good.len()];
    outcomes[1] = Err("account full".into());
    forwarded.admitted.send(outcomes).unwrap();
    let answer = post.await.unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let results = answer.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 8);
    let error = |i: usize| results[i]["error"].as_str().unwrap_or("").to_owned();
    assert_eq!(string(&results[0]["hash"]), good[0].hash().to_hex());
    assert!(results[0].get("error").is_none());
    assert!(error(1).contains("account full"), "{}", error(1));
    assert!(error(2).contains("signature"), "{}", error(2));
    assert!(error(5).contains("does not decode"), "{}", error(5));
    assert!(results[5].get("hash").is_none());
    assert_eq!(string(&results[7]["hash"]), good[5].hash().to_hex());
    assert!((3..8).filter(|&i| i != 5).all(|i| results[i].get("error").is_none()));

    // An empty batch, an oversized batch, and both shapes at once are refused whole.
    let too_many = vec!["00"; node::http::TXS_PER_POST_MAX + 1];
    for (bad, why) in [
        (serde_json::json!({ "txs": [] }), "1 to"),
        (serde_json::json!({ "txs": too_many }), "1 to"),
        (serde_json::json!({ "tx": "00", "txs": ["00"] }), "body must be"),
    ] {
        let a = request(addr, "POST", "/txs", &[], bad.to_string().as_bytes()).await;
        assert_eq!(a.status, 400, "{bad}");
        assert!(a.error().contains(why), "{}", a.error());
    }
    assert!(h.external.try_recv().is_err(), "nothing refused was forwarded");
}

#[tokio::test]
async fn post_txs_is_refused_unchecked_while_the_mempool_is_full() {
    let mut h = start().await;
    let sender = &h.keys.trainers[1];
    let transfer = |nonce: Nonce| {
        let kind = TxKind::Transfer { to: AccountId([7; 32]), amount: Amount(1) };
        SignedTx::sign(sender, Tx { chain_id: h.genesis.chain_id.clone(), nonce, kind })
    };
    let first = transfer(h.pool.next_nonce(&sender.account()));
    h.pool.insert(first).unwrap();
    assert!(h.pool.is_full());
    let next = transfer(h.pool.next_nonce(&sender.account()));
    let body = serde_json::json!({ "txs": [hex_of(&next.encode())] }).to_string();
    let answer = request(h.addr, "POST", "/txs", &[], body.as_bytes()).await;
    assert_eq!(answer.status, 503, "{}", String::from_utf8_lossy(&answer.body));
    assert!(answer.error().contains("mempool is full"), "{}", answer.error());
    assert!(h.external.try_recv().is_err(), "nothing reached the node while it was full");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_blobs_checks_the_hash_and_stores_atomically() {
    let h = start().await;
    let store = h.ctx.network.blob_store().clone();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let hash = sha256(&bytes);

    let wrong = Hash([5; 32]);
    let mismatch = request(h.addr, "POST", &format!("/blobs?sha256={wrong}"), &[], &bytes).await;
    assert_eq!(mismatch.status, 400);
    assert!(mismatch.error().contains("hash to"), "{}", mismatch.error());
    assert!(!store.contains(&wrong));
    assert_eq!(std::fs::read_dir(store.dir().join("tmp")).unwrap().count(), 0, "no leftovers");

    let stored = request(h.addr, "POST", &format!("/blobs?sha256={hash}"), &[], &bytes).await;
    assert_eq!(stored.status, 200, "{}", String::from_utf8_lossy(&stored.body));
    let s = stored.json();
    assert_eq!(string(&s["sha256"]), hash.to_hex());
    assert_eq!(string(&s["bytes"]), bytes.len().to_string());
    assert_eq!(s["already_stored"], false);
    assert_eq!(std::fs::read(store.path(&hash)).unwrap(), bytes);
    let again = request(h.addr, "POST", &format!("/blobs?sha256={hash}"), &[], &bytes).await;
    assert_eq!(again.json()["already_stored"], true);

    let big = vec![0u8; BLOB_LIMIT as usize + 1];
    let path = format!("/blobs?sha256={}", sha256(&big));
    let too_big = request(h.addr, "POST", &path, &[("Expect", "100-continue")], &big).await;
    assert_eq!(too_big.status, 413, "refused before the body is read");
    assert_eq!(request(h.addr, "POST", "/blobs", &[], &bytes).await.status, 400);
    assert_eq!(request(h.addr, "POST", "/blobs?sha256=xyz", &[], &bytes).await.status, 400);
    let cross = request(
        h.addr,
        "POST",
        &format!("/blobs?sha256={hash}"),
        &[("Origin", "http://127.0.0.1:1")],
        &bytes,
    )
    .await;
    assert_eq!(cross.status, 403);
}

/// The value of a sample without labels in Prometheus text.
fn sample(answer: &Answer, name: &str) -> f64 {
    let text = std::str::from_utf8(&answer.body).unwrap();
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).expect(name);
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_the_height() {
    let h = start().await;
    node::runtime::Metrics::add(&h.ctx.metrics.training_ms, 1_500);
    let committed = ChainEvent::BlockCommitted {
        height: Height(20),
        hash: Hash([1; 32]),
        time_ms: 9_500,
        txs: 0,
    };
    // The server's block-rate tracker subscribes when the server task first runs: send until
    // it counted an event (bounded).
    let mut rate = 0.0;
    for _ in 0..100 {
        let _ = h.ctx.events.send(committed.clone());
        rate = sample(&get(h.addr, "/metrics").await, "crucible_blocks_per_second");
        if rate > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rate > 0.0, "committed blocks raise the block rate");
    let answer = get(h.addr, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(answer.body).unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            assert!(matches!(words.next(), Some("HELP" | "TYPE")), "{line}");
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {metric}"
        );
        samples.insert(metric.to_string(), value);
    }
    assert_eq!(samples["crucible_height"], 20.0);
    assert_eq!(samples["crucible_peers"], 0.0);
    assert_eq!(samples["crucible_training_seconds_total"], 1.5);
    for name in [
        "crucible_info",
        "crucible_mempool_txs",
        "crucible_blocks_committed_total",
        "crucible_blocks_per_second",
        "crucible_network_bytes_in_total",
        "crucible_network_bytes_out_total",
        "crucible_scoring_seconds_total",
    ] {
        assert!(samples.contains_key(name), "{name} in {text}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_of_records_and_absences_verify_against_the_trusted_validators() {
    let h = start().await;
    let set = h.genesis.validator_set();
    let trainer = h.keys.trainers[0].account();
    let (tip, balance) = h.ctx.read(|l| {
        let tip = l.height();
        (tip, l.state_at(Height(tip.0 - 1)).unwrap().account(&trainer).balance)
    });

    let answer = get(h.addr, &format!("/proof/accounts/{trainer}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = answer.json();
    assert_eq!(num(&json["header"]["height"]), tip.0, "by default the tip's header");
    assert_eq!(num(&json["record"]["balance"]), balance.0, "the record as of that header");
    let bundle: consensus::chain::StateProofBundle = serde_json::from_value(json).unwrap();
    bundle.verify(&h.genesis.chain_id, &set).unwrap();

    let absent = get(h.addr, &format!("/proof/accounts/{}?height=6", "ee".repeat(32))).await;
    assert_eq!(absent.status, 200, "{}", absent.text());
    let json = absent.json();
    assert_eq!(json["record"], Value::Null);
    assert_eq!(num(&json["header"]["height"]), 6);
    let bundle: consensus::chain::StateProofBundle = serde_json::from_value(json).unwrap();
    assert_eq!(bundle.value, None);
    bundle.verify(&h.genesis.chain_id, &set).unwrap();

    let task = get(h.addr, "/proof/tasks/1").await.json();
    assert_eq!(string(&task["record"]["creator"]), h.keys.creator.account().to_hex());

    for (path, status) in [
        ("/proof/blocks/1".to_string(), 400),
        ("/proof/accounts/zz".to_string(), 400),
        ("/proof/submissions/1".to_string(), 400),
        (format!("/proof/accounts/{trainer}?height=0"), 404),
        (format!("/proof/accounts/{trainer}?height=999"), 404),
        (format!("/proof/accounts/{trainer}?height=x"), 400),
    ] {
        let a = get(h.addr, &path).await;
        assert_eq!(a.status, status, "{path}: {}", a.text());
        assert!(!a.error().is_empty(), "{path}");
    }
}
