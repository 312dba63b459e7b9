//! Issue 15's conformance test: a second implementation of `docs/protocol.md`, a js-libp2p peer
//! (`conformance/js/peer.js`, written from the doc and `docs/api.md` alone), on a live network.
//!
//! The one scenario starts 2 validators and 2 trainers (this test executable is their node, see
//! [`crucible_tests::suite`]) with the demo task, and a genesis that also funds a payer key only
//! this test holds. It starts the JS peer against validator-0 (its multiaddr with its PeerId, its
//! HTTP API, the payer's seed in a file, a fresh payee and an amount), waits until the peer has
//! joined the gossip topics, then posts the task. The peer rebuilds the doc's test vectors, shows
//! a wrong genesis is refused with its reason, passes the status exchange both ways, decodes and
//! checks the gossip of all three topics, syncs blocks, publishes a transfer signed by the payer
//! and fetches an artifact a trainer revealed by the blob protocol; it prints one JSON line per
//! check. This test requires every check's line, then checks the chain itself: the payee holds
//! the amount and the payer's nonce moved on, validator-0 logged the refusal, and the task still
//! finalizes with payouts that add up.
//!
//! Node.js and the npm packages (`npm ci` in `conformance/js`) are outside the Rust toolchain, so
//! the scenario is ignored like an `#[ignore]` test: `cargo test -p crucible-tests --test
//! conformance -- --ignored` runs it (`.ci/run` does), and it fails at once, saying what to
//! install, when `node` or the packages are missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use consensus::crypto::Keypair;
use consensus::genesis::GenesisBalance;
use consensus::types::Amount;
use crucible_tests::net::{self, FINALIZE_TIMEOUT, check_report, with_logs};
use crucible_tests::suite::{self, Scenario};
use serde_json::Value;
use testnet::network::Network;
use testnet::plan::{self, Plan, Settings, TaskSource};

const SCENARIOS: &[Scenario] = &[Scenario {
    name: "a_js_libp2p_peer_written_from_the_protocol_doc_joins_a_live_network",
    run: js_peer_conforms,
    ignore: Some(
        "needs Node.js and the npm packages of conformance/js: .ci/run installs them (npm ci) \
         and runs this test with --ignored",
    ),
}];

/// The seed of the network's keys, split, noise and recipes.
const SEED: u64 = 15;
/// The payer's balance in the genesis, and what the JS peer sends the payee.
const PAYER_BALANCE: u64 = 1_000_000;
const TRANSFER: u64 = 12_345;
/// Longest wait for the JS peer to join (vectors, the refused peer, the exchange, subscriptions).
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest run of the JS peer; it gives up by itself a little earlier (`--timeout`).
const PEER_TIMEOUT: Duration = Duration::from_secs(300);
/// Every check the JS peer must report (the lines it prints besides are details).
const REQUIRED: &[&str] = &[
    "vectors",
    "http.status",
    "status.wrong_genesis_refused",
    "status.refused_peer_asked_by_node",
    "status.refused_peer_disconnected_ms",
    "status.banned_peer_connection_closed_ms",
    "status.welcome",
    "status.answered_node",
    "http.peers_lists_us",
    "gossip.joined",
    "gossip.blocks",
    "gossip.consensus",
    "sync.blocks",
    "sync.past_tip",
    "transfer.published",
    "transfer.committed",
    "gossip.txs",
    "blob.revealed",
    "blob.fetched",
    "blob.errors",
    "gossip.our_score",
];

fn main() -> ExitCode {
    suite::main(SCENARIOS, "crucible-conformance-")
}

/// The scenario (see the module's doc).
fn js_peer_conforms(dir: &Path) -> anyhow::Result<()> {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/js");
    let node_js = preflight(&package)?;
    let mut plan = Plan::new(Settings {
        validators: 2,
        trainers: 2,
        seed: SEED,
        rounds: 1,
        task: TaskSource::digits(),
    })?;
    let payer_seed = plan::derive(SEED, "key/conformance-payer");
    let payer = Keypair::from_seed(payer_seed).account();
    let payee = Keypair::from_seed(plan::derive(SEED, "key/conformance-payee")).account();
    plan.genesis.balances.push(GenesisBalance { account: payer, amount: Amount(PAYER_BALANCE) });
    plan.genesis.validate().context("the genesis with the payer is invalid")?;
    let max_block_bytes = plan.genesis.params.max_block_bytes;
    let mut net = net::write(plan, dir)?;
    let seed_file = net.layout.dir.join("conformance-payer.seed");
    std::fs::write(&seed_file, hex(&payer_seed))
        .with_context(|| format!("writing {}", seed_file.display()))?;
    with_logs(&mut net, |net| {
        net.start_all()?;
        let started = Instant::now();
        let mut command = Command::new(&node_js);
        command
            .arg(package.join("peer.js"))
            .args(["--addr", &net.p2p_addr(0)?])
            .args(["--http", net.clients[0].base()])
            .arg("--key")
            .arg(&seed_file)
            .args(["--to", &payee.to_string(), "--amount", &TRANSFER.to_string()])
            .args(["--max-block-bytes", &max_block_bytes.to_string()])
            .args(["--timeout", &(PEER_TIMEOUT.as_secs() - 20).to_string()]);
        let mut peer = Peer::start(command, &net.layout.dir.join("conformance-peer.stderr"))?;
        peer.wait_for("gossip.joined", JOIN_TIMEOUT)?;
        let task_id = net.post_task()?;
        let checks = peer.finish(PEER_TIMEOUT)?;
        let peer_secs = started.elapsed().as_secs_f64();
        for &name in REQUIRED {
            ensure!(
                checks.iter().any(|(check, _)| check == name),
                "the JS peer passed without reporting {name}; it reported {:?}",
                checks.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>()
            );
        }
        check_the_chain(net, &checks, &payer, &payee)?;
        let (report, height) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        println!(
            "  the JS peer made {} checks in {peer_secs:.1} s; task {task_id} finalized at height \
             {height}",
            checks.len()
        );
        Ok(())
    })
}

/// The `node` executable once `node --version` runs and `package`'s dependencies are installed.
fn preflight(package: &Path) -> anyhow::Result<PathBuf> {
    let node_js = std::env::var_os("NODE").map_or("node".into(), PathBuf::from);
    let version = Command::new(&node_js)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    let major =
        version.as_deref().and_then(|v| v.strip_prefix('v')?.split('.').next()?.parse().ok());
    ensure!(
        major.is_some_and(|m: u32| m >= 20),
        "the conformance test needs Node.js 20 or later as `node` (or $NODE; found {}): \
         apt-get install nodejs npm, then npm ci in {} (.ci/run does both)",
        version.as_deref().unwrap_or("none"),
        package.display()
    );
    for module in ["libp2p", "@chainsafe/libp2p-gossipsub"] {
        let installed = package.join("node_modules").join(module).join("package.json");
        ensure!(
            installed.is_file(),
            "the conformance test needs the npm packages of {0}: run `npm ci` in {0} ({1} is \
             missing)",
            package.display(),
            installed.display()
        );
    }
    Ok(node_js)
}

/// What the chain says after the JS peer finished: the transfer it reported committed is on
/// validator-0's ledger with the planned amount, and validator-0 logged the wrong-genesis peer.
fn check_the_chain(
    net: &mut Network,
    checks: &[(String, Value)],
    payer: &consensus::types::AccountId,
    payee: &consensus::types::AccountId,
) -> anyhow::Result<()> {
    let lead = net.clients[0].clone();
    let payee_view = lead.account(payee).context("the payee's account on validator-0")?;
    ensure!(
        payee_view.balance == TRANSFER,
        "the payee holds {} after the JS peer's transfer of {TRANSFER}",
        payee_view.balance
    );
    let payer_view = lead.account(payer).context("the payer's account on validator-0")?;
    ensure!(payer_view.nonce == 1, "the payer's next nonce is {}, not 1", payer_view.nonce);
    ensure!(
        payer_view.balance < PAYER_BALANCE - TRANSFER,
        "the payer holds {} after sending {TRANSFER} and a fee",
        payer_view.balance
    );
    let committed = value_of(checks, "transfer.committed")?;
    let hash = committed["hash"].as_str().context("transfer.committed without a hash")?;
    let published = value_of(checks, "transfer.published")?;
    ensure!(published["hash"] == hash, "the peer published {published} but saw {committed}");
    let log = net.logs()[0].1.to_path_buf();
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    ensure!(
        text.lines().any(|l| l.contains("refusing a peer") && l.contains("genesis")),
        "validator-0's log ({}) has no `refusing a peer` line for the wrong genesis",
        log.display()
    );
    Ok(())
}

/// The value the JS peer reported for check `name`.
fn value_of<'a>(checks: &'a [(String, Value)], name: &str) -> anyhow::Result<&'a Value> {
    checks
        .iter()
        .find(|(check, _)| check == name)
        .map(|(_, value)| value)
        .with_context(|| format!("the JS peer did not report {name}"))
}

/// The JS peer's process: its stdout read line by line on a thread, its stderr in a file; killed
/// when dropped unless it exited.
struct Peer {
    child: Child,
    lines: Receiver<String>,
    checks: Vec<(String, Value)>,
    stderr: PathBuf,
}

impl Peer {
    fn start(mut command: Command, stderr: &Path) -> anyhow::Result<Peer> {
        let err_file = std::fs::File::create(stderr)
            .with_context(|| format!("creating {}", stderr.display()))?;
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .context("starting the JS peer")?;
        let stdout = child.stdout.take().context("the JS peer's stdout")?;
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Peer { child, lines, checks: Vec::new(), stderr: stderr.to_path_buf() })
    }

    /// Reads lines until check `name` is reported; fails if the peer ends first or after
    /// `timeout`.
    fn wait_for(&mut self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        while !self.checks.iter().any(|(check, _)| check == name) {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.record(&line)?,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("the JS peer did not report {name} within {} s", timeout.as_secs())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!("the JS peer ended ({status}) before reporting {name}: {}", self.errors())
                }
            }
        }
        Ok(())
    }

    /// Reads every line until the peer exits; fails unless it exits 0 within `timeout`.
    fn finish(mut self, timeout: Duration) -> anyhow::Result<Vec<(String, Value)>> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.record(&line)?,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("the JS peer did not finish within {} s", timeout.as_secs())
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = self.child.wait().context("waiting for the JS peer")?;
        ensure!(status.success(), "the JS peer failed ({status}): {}", self.errors());
        Ok(std::mem::take(&mut self.checks))
    }

    /// Keeps one stdout line: a check, printed as the peer reports it.
    fn record(&mut self, line: &str) -> anyhow::Result<()> {
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("the JS peer printed a line that is not JSON: {line}"))?;
        let check = value["check"].as_str().with_context(|| format!("no check in {line}"))?;
        println!("  js: {line}");
        self.checks.push((check.to_string(), value["value"].clone()));
        Ok(())
    }

    /// The peer's stderr.
    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_else(|err| format!("(reading {}: {err})", self.stderr.display()))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
