//! End-to-end tests: whole local networks of node processes on loopback, driven over their HTTP
//! APIs with the `testnet` library (plan, files, supervisor, client).
//!
//! A test in one package cannot find another package's binary, so this test executable is its
//! own node: started with `argv[0]` = `node` it runs `node::cli::main`, exactly as the `testnet`
//! launcher does with its own executable. That needs our own `main`, so this target has no libtest
//! harness (`harness = false` in `Cargo.toml`); `main` runs the scenarios one after another, so
//! two networks never share the two cores. `cargo test -p crucible-tests --test e2e [FILTER]`
//! runs the scenarios whose names contain a filter; `--list` lists them.
//!
//! The scenarios (issue 7's list): (a)+(e)+(f) a full round with 4 validators and 3 trainers
//! finalizes, conserves escrow and bonds, and every node agrees after it; a node started
//! afterwards syncs the whole chain; `node ledger verify` passes on every data dir. (b) a
//! validator killed mid-round and restarted catches up and the round finalizes. (d) a trainer
//! whose reveal does not match its commitment forfeits its bond; one that submits a copy of
//! another's model with one bit changed earns nothing. (c) with 5 validators, an inflating and a
//! constant scorer earn less per stake than the honest ones and change no consensus verdict.
//!
//! Every wait polls the nodes' APIs with a generous bound and fails with the last lines of every
//! node's log; a failed scenario keeps its directory (keys, configs, logs, data dirs) and prints
//! where it is.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use consensus::commitment::{Salt, model_commitment, scores_commitment};
use consensus::crypto::Keypair;
use consensus::finalize::{FinalizationReport, Outcome};
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Hash, Nonce, TaskId};
use consensus::verdict::{Verdict, VerdictEntry, VerdictVector, expected_layout};
use testnet::client::{BlockInfo, Client, Stage};
use testnet::files::{self, Layout};
use testnet::launch::{self, Spawn, Supervisor};
use testnet::plan::{LABEL_NOISE_DEFAULT, NodePorts, Plan, Role, Settings, TaskSource};
use testnet::report;
use testnet::run::{LOG_FILTER, NODE_ARG0, is_node_mode};
use trainer::task::DataKind;

/// The demo data set the testnet runs by default.
const DIGITS: &[u8] = include_bytes!("../../data/digits.csv");

/// Longest wait for a node's API to answer after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a chain event that takes a few blocks (the first block, a posted task, a
/// node reaching a height, a restarted node catching up).
const CHAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a posted task to finalize (about 70 blocks of 250 ms, training and scoring
/// on a loaded two-core machine).
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between polls of the nodes' APIs.
const POLL: Duration = Duration::from_millis(300);
/// Log lines of each node shown when a scenario fails.
const LOG_LINES: usize = 15;

/// One end-to-end scenario.
struct Scenario {
    name: &'static str,
    run: fn(&Path) -> anyhow::Result<()>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "full_round_finalizes_agrees_then_a_late_node_syncs_and_every_ledger_verifies",
        run: full_round,
    },
    Scenario {
        name: "validator_killed_mid_round_restarts_catches_up_and_the_round_finalizes",
        run: validator_restart,
    },
    Scenario {
        name: "trainer_revealing_another_model_than_it_committed_forfeits_its_bond",
        run: mismatched_reveal,
    },
    Scenario {
        name: "trainer_submitting_a_copy_of_another_model_earns_nothing",
        run: copied_model,
    },
    Scenario {
        name: "inflating_and_constant_validators_earn_less_and_change_no_verdict",
        run: dishonest_validators,
    },
];

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if is_node_mode(Path::new(&argv0)) {
        return node::cli::main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let selected = select(&args);
    if args.iter().any(|a| a == "--list") {
        for scenario in &selected {
            println!("{}: test", scenario.name);
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for scenario in &selected {
        println!("test {} ...", scenario.name);
        let started = Instant::now();
        let result = tempfile::Builder::new()
            .prefix("crucible-e2e-")
            .tempdir()
            .context("creating a temporary directory")
            .and_then(|tmp| {
                let result = (scenario.run)(&tmp.path().join("net"));
                if result.is_err() {
                    let kept = tmp.keep();
                    eprintln!("files and logs kept in {}", kept.display());
                }
                result
            });
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("test {} ... ok ({secs:.1} s)", scenario.name),
            Err(err) => {
                eprintln!("error: {err:#}");
                println!("test {} ... FAILED ({secs:.1} s)", scenario.name);
                failed.push(scenario.name);
            }
        }
    }
    let passed = selected.len() - failed.len();
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; 0 failed\n");
        ExitCode::SUCCESS
    } else {
        println!("\nfailures:\n    {}", failed.join("\n    "));
        println!("\ntest result: FAILED. {passed} passed; {} failed\n", failed.len());
        ExitCode::FAILURE
    }
}

/// The scenarios that libtest-style arguments select: names containing a positional filter (or
/// equal to it with `--exact`), none with `--ignored` (no scenario is ignored), all without
/// filters. Other flags are accepted and ignored.
fn select(args: &[String]) -> Vec<&'static Scenario> {
    const WITH_VALUE: &[&str] =
        &["--test-threads", "--format", "--color", "--logfile", "--skip", "-Z", "--shuffle-seed"];
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--skip" {
            skips.extend(iter.next().cloned());
        } else if WITH_VALUE.contains(&arg.as_str()) {
            iter.next();
        } else if !arg.starts_with('-') {
            filters.push(arg.clone());
        }
    }
    if args.iter().any(|a| a == "--ignored") {
        return Vec::new();
    }
    let exact = args.iter().any(|a| a == "--exact");
    let matches = |name: &str, pattern: &String| {
        if exact { name == pattern } else { name.contains(pattern.as_str()) }
    };
    SCENARIOS
        .iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| matches(s.name, f)))
        .filter(|s| !skips.iter().any(|f| matches(s.name, f)))
        .collect()
}

/// A running network: the plan's nodes (each under its own supervisor, so one can be killed and
/// restarted) plus any extra nodes started later.
struct Net {
    plan: Plan,
    layout: Layout,
    ports: Vec<NodePorts>,
    exe: PathBuf,
    clients: Vec<Client>,
    /// One supervisor per plan node (`None` while it is stopped).
    running: Vec<Option<Supervisor>>,
    /// Nodes started after the plan's: name, data dir, log, client and supervisor.
    extra: Vec<Extra>,
}

struct Extra {
    name: String,
    data_dir: PathBuf,
    log: PathBuf,
    client: Client,
    supervisor: Option<Supervisor>,
}

impl Net {
    /// Plans the default testnet (the digits task with label noise) for `validators` and
    /// `trainers` and writes its files into `dir`; starts nothing.
    fn plan(dir: &Path, validators: usize, trainers: usize, seed: u64) -> anyhow::Result<Net> {
        let plan = Plan::new(Settings {
            validators,
            trainers,
            seed,
            rounds: 1,
            task: TaskSource {
                name: "digits.csv".into(),
                bytes: DIGITS.to_vec(),
                kind: DataKind::Classification,
                label_noise: LABEL_NOISE_DEFAULT,
            },
        })?;
        let ports = files::free_ports(plan.port_base, plan.nodes.len())?;
        let layout = files::write(&plan, dir, &ports)?;
        let clients = layout.urls.iter().map(|u| Client::new(u)).collect();
        let running = plan.nodes.iter().map(|_| None).collect();
        let exe = std::env::current_exe().context("finding the test executable")?;
        Ok(Net { plan, layout, ports, exe, clients, running, extra: Vec::new() })
    }

    /// The node's start command, as the testnet launcher builds it.
    fn spawn_spec(&self, name: &str, mut args: Vec<String>, log: &Path) -> Spawn {
        // As the launcher does: a node stops if this test process dies without stopping it.
        args.push("--exit-with-stdin".into());
        Spawn {
            name: name.into(),
            program: self.exe.clone(),
            arg0: Some(NODE_ARG0.into()),
            args,
            env: vec![
                ("RUST_LOG".into(), LOG_FILTER.into()),
                ("RAYON_NUM_THREADS".into(), "1".into()),
            ],
            log: log.to_path_buf(),
        }
    }

    /// Starts plan node `i` (again, after a kill: its log is appended to).
    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        ensure!(self.running[i].is_none(), "{} is already running", self.plan.nodes[i].name);
        let node = &self.plan.nodes[i];
        let args = vec![
            "--role".into(),
            node.role.as_str().into(),
            "--config".into(),
            self.layout.configs[i].display().to_string(),
        ];
        let spec = self.spawn_spec(&node.name, args, &self.layout.logs[i]);
        let mut supervisor = Supervisor::new();
        supervisor.spawn(spec)?;
        self.running[i] = Some(supervisor);
        Ok(())
    }

    /// Kills plan node `i` (SIGKILL, no clean shutdown) and reaps it.
    fn kill(&mut self, i: usize) {
        if let Some(mut supervisor) = self.running[i].take() {
            supervisor.stop_all();
        }
    }

    /// Starts every plan node and waits until each answers with the planned genesis and the
    /// validators have committed block 1.
    fn start_all(&mut self) -> anyhow::Result<()> {
        self.start_all_but(&[])
    }

    /// As [`Net::start_all`], but leaves the plan nodes in `skip` stopped.
    fn start_all_but(&mut self, skip: &[usize]) -> anyhow::Result<()> {
        let starting: Vec<usize> =
            (0..self.plan.nodes.len()).filter(|i| !skip.contains(i)).collect();
        for &i in &starting {
            self.start(i)?;
        }
        for &i in &starting {
            self.wait_ready(i)?;
        }
        self.wait_height(0, 1)?;
        Ok(())
    }

    /// Waits until plan node `i` answers `GET /status` with the planned genesis.
    fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let client = self.clients[i].clone();
        let name = self.plan.nodes[i].name.clone();
        let status = self.wait(READY_TIMEOUT, &format!("{name} to answer GET /status"), || {
            client.status().ok()
        })?;
        let genesis = self.plan.genesis.hash().to_hex();
        ensure!(
            status.genesis_hash == genesis,
            "{name} runs genesis {} but the plan's is {genesis}",
            status.genesis_hash
        );
        Ok(())
    }

    /// Waits until plan node `i` has committed `height`.
    fn wait_height(&mut self, i: usize, height: u64) -> anyhow::Result<u64> {
        let client = self.clients[i].clone();
        let name = self.plan.nodes[i].name.clone();
        self.wait(CHAIN_TIMEOUT, &format!("{name} to reach height {height}"), || {
            client.status().ok().map(|s| s.height).filter(|&h| h >= height)
        })
    }

    /// Polls `probe` until it gives a value, for at most `timeout`; fails at once if a running
    /// node has exited. A failure names what it waited for.
    fn wait<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut() -> Option<T>,
    ) -> anyhow::Result<T> {
        let end = Instant::now() + timeout;
        loop {
            self.alive()?;
            if let Some(value) = probe() {
                return Ok(value);
            }
            if Instant::now() >= end {
                bail!("timed out after {} s waiting for {what}", timeout.as_secs());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fails if a node that should be running has exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        let supervisors = self
            .running
            .iter_mut()
            .flatten()
            .chain(self.extra.iter_mut().filter_map(|e| e.supervisor.as_mut()));
        for supervisor in supervisors {
            if let Some(exited) = supervisor.exited()? {
                bail!("{} exited ({}); see {}", exited.name, exited.status, exited.log.display());
            }
        }
        Ok(())
    }

    /// The last lines of every node's log, and its warnings and errors.
    fn logs(&self) -> String {
        let mut out = String::new();
        let plan_logs = self.plan.nodes.iter().map(|n| n.name.as_str()).zip(&self.layout.logs);
        let extra_logs = self.extra.iter().map(|e| (e.name.as_str(), &e.log));
        for (name, log) in plan_logs.chain(extra_logs).filter(|(_, log)| log.exists()) {
            out.push_str(&format!("\n--- {name} ({}): warnings and errors\n", log.display()));
            for line in launch::problems(log, LOG_LINES) {
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str(&format!("--- {name}: last lines\n{}\n", launch::tail(log, LOG_LINES)));
        }
        out
    }

    /// Uploads the task's public training file to every validator, posts `CreateTask` signed by
    /// the creator, and returns the task's id once it is on the chain.
    fn post_task(&mut self) -> anyhow::Result<u64> {
        let task = &self.plan.tasks[0];
        for (node, client) in self.plan.validators().zip(&self.clients) {
            client
                .post_blob(&task.train)
                .with_context(|| format!("uploading the training file to {}", node.name))?;
        }
        let creator = self.plan.creator();
        let lead = self.clients[0].clone();
        let known: Vec<u64> = lead.tasks()?.into_iter().map(|t| t.id).collect();
        let tx = SignedTx::sign(
            &creator,
            Tx {
                chain_id: self.plan.genesis.chain_id.clone(),
                nonce: Nonce(lead.nonce(&creator.account())?),
                kind: TxKind::CreateTask {
                    spec: Box::new(task.spec.clone()),
                    reward: self.plan.reward,
                },
            },
        );
        lead.post_tx(&tx)?;
        let creator = creator.account();
        self.wait(CHAIN_TIMEOUT, "the posted task to appear in GET /tasks", || {
            lead.tasks().ok().and_then(|tasks| {
                tasks
                    .into_iter()
                    .find(|t| t.creator == creator && !known.contains(&t.id))
                    .map(|t| t.id)
            })
        })
    }

    /// Waits until the task has a finalization report on the lead validator; returns it with the
    /// task's last deadline (the height that finalized it).
    /// Signs `kind` with `key` at its next nonce and posts it to the lead validator; returns the
    /// node's answer (an error if it refused the transaction).
    fn send(&self, key: &Keypair, kind: TxKind) -> anyhow::Result<String> {
        let lead = &self.clients[0];
        let nonce = Nonce(lead.nonce(&key.account())?);
        let tx =
            SignedTx::sign(key, Tx { chain_id: self.plan.genesis.chain_id.clone(), nonce, kind });
        lead.post_tx(&tx)
    }

    fn finalized(&mut self, task_id: u64) -> anyhow::Result<(FinalizationReport, u64)> {
        let lead = self.clients[0].clone();
        self.wait(FINALIZE_TIMEOUT, &format!("task {task_id} to finalize"), || {
            lead.task(task_id).ok().and_then(|v| v.report.map(|r| (r, v.deadlines.score)))
        })
    }

    /// Waits until every running plan node has the block at `height` and checks that all have
    /// the same block hash and state root there; returns that block.
    fn agreement(&mut self, height: u64) -> anyhow::Result<BlockInfo> {
        let mut blocks: Vec<(String, BlockInfo)> = Vec::new();
        let running: Vec<usize> =
            (0..self.plan.nodes.len()).filter(|&i| self.running[i].is_some()).collect();
        for i in running {
            let name = self.plan.nodes[i].name.clone();
            let block = self.block_at(&name, &self.clients[i].clone(), height)?;
            blocks.push((name, block));
        }
        let (first_name, first) = &blocks[0];
        for (name, block) in &blocks[1..] {
            ensure!(
                block.hash == first.hash && block.state_root == first.state_root,
                "{name} disagrees with {first_name} at height {height}: block {} state root {} \
                 vs block {} state root {}",
                block.hash,
                block.state_root,
                first.hash,
                first.state_root
            );
        }
        Ok(first.clone())
    }

    /// Waits until `client`'s node has the block at `height` and returns it.
    fn block_at(&mut self, name: &str, client: &Client, height: u64) -> anyhow::Result<BlockInfo> {
        self.wait(CHAIN_TIMEOUT, &format!("{name} to have the block at height {height}"), || {
            client
                .status()
                .ok()
                .filter(|s| s.height >= height)
                .and_then(|_| client.block(height).ok())
        })
    }

    /// Starts a node that is not in the genesis (a fresh key and data dir; a trainer with no
    /// open task, so it only follows the chain), bootstrapping from every validator; returns
    /// its index in `extra`.
    fn start_extra(&mut self, name: &str, seed: u64) -> anyhow::Result<usize> {
        let dir = &self.layout.dir;
        let data_dir = dir.join(name);
        let key = Keypair::from_seed(testnet::plan::derive(seed, &format!("key/{name}")));
        node::keystore::save(&data_dir, &key)?;
        let ports = files::free_ports(self.plan.port_base, 1)?[0];
        let mut args: Vec<String> = vec![
            "--role".into(),
            Role::Trainer.as_str().into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--genesis".into(),
            dir.join("genesis.json").display().to_string(),
            "--listen".into(),
            format!("/ip4/127.0.0.1/tcp/{}", ports.p2p),
            "--http".into(),
            format!("127.0.0.1:{}", ports.http),
            "--no-mdns".into(),
        ];
        for (node, port) in self.plan.nodes.iter().zip(&self.ports) {
            if node.role == Role::Validator {
                let peer = node::keystore::peer_id(&node.key())?;
                args.push("--bootstrap".into());
                args.push(format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", port.p2p));
            }
        }
        let log = dir.join(format!("{name}.log"));
        let mut supervisor = Supervisor::new();
        supervisor.spawn(self.spawn_spec(name, args, &log))?;
        self.extra.push(Extra {
            name: name.into(),
            data_dir,
            log,
            client: Client::new(&format!("http://127.0.0.1:{}", ports.http)),
            supervisor: Some(supervisor),
        });
        Ok(self.extra.len() - 1)
    }

    /// Stops every node (SIGKILL, as a crash would).
    fn stop_all(&mut self) {
        for i in 0..self.running.len() {
            self.kill(i);
        }
        for extra in &mut self.extra {
            if let Some(mut supervisor) = extra.supervisor.take() {
                supervisor.stop_all();
            }
        }
    }

    /// Every node's data dir, plan nodes first.
    fn data_dirs(&self) -> Vec<(String, PathBuf)> {
        let plan = self.plan.nodes.iter().map(|n| (n.name.clone(), self.layout.dir.join(&n.name)));
        plan.chain(self.extra.iter().map(|e| (e.name.clone(), e.data_dir.clone()))).collect()
    }

    /// Runs `node ledger verify --data-dir DIR` (this executable as the node's command line) on
    /// every node's data dir; the nodes must be stopped. Returns each node's replayed block count.
    fn verify_ledgers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut verified = Vec::new();
        for (name, data_dir) in self.data_dirs() {
            let output = Command::new(&self.exe)
                .arg0(NODE_ARG0)
                .args(["ledger", "verify", "--data-dir"])
                .arg(&data_dir)
                .output()
                .with_context(|| format!("running node ledger verify for {name}"))?;
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            ensure!(
                output.status.success() && stdout.starts_with("ok: "),
                "node ledger verify --data-dir {} failed for {name} ({}):\n{stdout}{}",
                data_dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            verified.push((name, stdout.trim().to_owned()));
        }
        Ok(verified)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Runs `body` on a planned network; on failure, prints the error and then every node's log
/// tail (the nodes still run, so the logs show where each one stood).
fn with_logs<T>(
    net: &mut Net,
    body: impl FnOnce(&mut Net) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    body(net).inspect_err(|err| {
        eprintln!("error: {err:#}\nnode logs:{}", net.logs());
    })
}

/// Checks a finalization report: the task finalized (not a quorum failure), every trainer
/// joined, and payouts, refunds and burns add up to the escrow plus the trainers' bonds exactly.
fn check_report(net: &Net, report: &FinalizationReport) -> anyhow::Result<()> {
    ensure!(
        report.outcome == Outcome::Finalized,
        "the task ended {:?}: validators holding {} of {} stake revealed scores",
        report.outcome,
        report.revealed_stake,
        report.total_stake
    );
    let trainers = net.plan.nodes.iter().filter(|n| n.role == Role::Trainer).count();
    ensure!(
        report.trainers.len() == trainers,
        "{} of {trainers} trainers joined the task",
        report.trainers.len()
    );
    let bonds: u128 = report
        .trainers
        .iter()
        .map(|t| u128::from(t.bond_refund.0) + u128::from(t.bond_forfeit.0))
        .sum();
    let total = report::check_conservation(report, net.plan.reward).map_err(anyhow::Error::msg)?;
    ensure!(total == u128::from(net.plan.reward.0) + bonds, "conserved total {total}");
    Ok(())
}

/// (a), (e), (f): a full round with 4 validators and 3 trainers finalizes, conserves the escrow
/// and bonds exactly, and every node has the same block and state root at the height after
/// finalization; a node started afterwards syncs the whole chain to the same state root; and
/// `node ledger verify` passes on every node's data dir once the nodes have stopped.
fn full_round(dir: &Path) -> anyhow::Result<()> {
    let mut net = Net::plan(dir, 4, 3, 7)?;
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let (report, last) = net.finalized(task_id)?;
        check_report(net, &report)?;
        let after = net.agreement(last + 1)?;
        println!(
            "  task {task_id} finalized at height {last}; all {} nodes have block {} and state \
             root {} at height {}",
            net.plan.nodes.len(),
            after.hash,
            after.state_root,
            last + 1
        );
        // (e): a node that was not there for the round syncs the whole chain.
        let tip = net.wait_height(0, last + 2)?;
        let late = net.start_extra("late-node", 7)?;
        let client = net.extra[late].client.clone();
        let genesis = net.plan.genesis.hash().to_hex();
        net.wait(READY_TIMEOUT, "late-node to answer GET /status", || {
            client.status().ok().filter(|s| s.genesis_hash == genesis)
        })?;
        for height in [1, last + 1, tip] {
            let theirs = net.block_at("late-node", &client, height)?;
            let ours = net.clients[0].block(height)?;
            ensure!(
                theirs == ours,
                "late-node has block {} state root {} at height {height}, validator-0 block {} \
                 state root {}",
                theirs.hash,
                theirs.state_root,
                ours.hash,
                ours.state_root
            );
        }
        println!("  late-node synced to height {tip} with the same blocks and state roots");
        // (f): every ledger replays from genesis once the nodes have stopped.
        net.stop_all();
        for (name, line) in net.verify_ledgers()? {
            println!("  {name}: {line}");
        }
        Ok(())
    })
}

/// (b): a validator killed (SIGKILL) during the training window and restarted a few blocks later
/// catches up, the chain goes on without it meanwhile, and the round still finalizes with every
/// node, the restarted one included, agreeing after finalization; its ledger verifies.
fn validator_restart(dir: &Path) -> anyhow::Result<()> {
    let mut net = Net::plan(dir, 4, 3, 11)?;
    let victim = 3;
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let deadlines = net.clients[0].task(task_id)?.deadlines;
        // Mid-round: the trainers are training.
        net.wait_height(0, deadlines.join + 2)?;
        let killed_at = net.clients[victim].status().map(|s| s.height).unwrap_or(0);
        net.kill(victim);
        // The other three validators hold 3/4 of the stake and keep committing blocks.
        let lead_then = net.wait_height(0, 0)?;
        let resumed = net.wait_height(0, lead_then + 6)?;
        net.start(victim)?;
        net.wait_ready(victim)?;
        let tip = net.wait_height(0, resumed)?;
        let caught_up = net.wait_height(victim, tip)?;
        println!(
            "  validator-{victim} killed at height {killed_at}, restarted at {resumed}, caught \
             up to {caught_up}"
        );
        let (report, last) = net.finalized(task_id)?;
        check_report(net, &report)?;
        let after = net.agreement(last + 1)?;
        let account = net.plan.nodes[victim].account();
        let revealed = report.validators.iter().any(|v| v.account == account && v.revealed);
        println!(
            "  task {task_id} finalized at height {last} (validator-{victim} revealed scores: \
             {revealed}); all {} nodes have block {} and state root {} at height {}",
            net.plan.nodes.len(),
            after.hash,
            after.state_root,
            last + 1
        );
        net.stop_all();
        for (name, line) in net.verify_ledgers()? {
            println!("  {name}: {line}");
        }
        Ok(())
    })
}

/// (d), first half: a trainer whose reveal does not match its commitment forfeits its bond and
/// earns nothing, while the honest trainers' round finalizes and conserves the escrow. The test
/// itself is that trainer (the plan's last trainer, whose node it never starts): it joins,
/// commits to one model hash and reveals another.
fn mismatched_reveal(dir: &Path) -> anyhow::Result<()> {
    let mut net = Net::plan(dir, 4, 4, 13)?;
    let cheat = net.plan.nodes.len() - 1;
    with_logs(&mut net, |net| {
        net.start_all_but(&[cheat])?;
        let key = net.plan.nodes[cheat].key();
        let account = key.account();
        let task_id = net.post_task()?;
        let task = TaskId(task_id);
        let deadlines = net.clients[0].task(task_id)?.deadlines;
        net.send(&key, TxKind::JoinTask { task }).context("joining the task")?;
        let lead = net.clients[0].clone();
        let on_chain = |stage: Stage| {
            let lead = lead.clone();
            move || {
                let view = lead.task(task_id).ok()?;
                view.submissions
                    .iter()
                    .find(|s| s.trainer == account && s.stage == stage)
                    .map(|_| ())
            }
        };
        net.wait(CHAIN_TIMEOUT, "the cheat's join to land", on_chain(Stage::Joined))?;
        let committed = Hash([0xC0; 32]);
        let salt = Salt(Hash([0x5A; 32]));
        let commitment =
            model_commitment(&net.plan.genesis.chain_id, task, &account, &committed, &salt);
        net.send(&key, TxKind::CommitModel { task, commitment }).context("committing")?;
        net.wait(CHAIN_TIMEOUT, "the cheat's commitment to land", on_chain(Stage::Committed))?;
        // In the reveal window, open the commitment with another model.
        net.wait_height(0, deadlines.commit + 1)?;
        let reveal = TxKind::RevealModel {
            task,
            model_hash: Hash([0xD1; 32]),
            salt,
            size_bytes: 1_000,
            params: 100,
        };
        // The node may refuse the reveal outright or put it on the chain to fail there; either
        // way the commitment stays unopened.
        match net.send(&key, reveal) {
            Ok(tx) => println!("  the mismatched reveal was accepted as tx {tx}"),
            Err(err) => println!("  the mismatched reveal was refused: {err:#}"),
        }
        let (report, last) = net.finalized(task_id)?;
        check_report(net, &report)?;
        let entry = report
            .trainers
            .iter()
            .find(|t| t.account == account)
            .context("the cheat is not in the finalization report")?;
        ensure!(
            entry.forfeit.is_some()
                && entry.bond_refund.0 == 0
                && entry.bond_forfeit.0 > 0
                && entry.payout.0 == 0,
            "the cheat kept its bond or earned: {entry:?}"
        );
        let honest_paid: u64 =
            report.trainers.iter().filter(|t| t.account != account).map(|t| t.payout.0).sum();
        println!(
            "  task {task_id} finalized at height {last}: the cheat forfeited {} ({:?}); honest \
             trainers earned {honest_paid}",
            entry.bond_forfeit.0, entry.forfeit
        );
        net.agreement(last + 1)?;
        Ok(())
    })
}

/// (d), second half: a trainer that submits another trainer's model with a few bytes changed
/// (the same predictions) earns nothing. The test is that trainer (the plan's last trainer,
/// whose node it never starts): once trainer-0 has committed, it copies trainer-0's artifact from
/// trainer-0's data dir, flips the lowest bit of one non-zero weight, uploads the copy to every
/// validator, and commits and reveals it as its own.
fn copied_model(dir: &Path) -> anyhow::Result<()> {
    let mut net = Net::plan(dir, 4, 4, 17)?;
    let copier = net.plan.nodes.len() - 1;
    let original = net.plan.nodes.iter().position(|n| n.role == Role::Trainer).expect("trainers");
    with_logs(&mut net, |net| {
        net.start_all_but(&[copier])?;
        let key = net.plan.nodes[copier].key();
        let account = key.account();
        let original_account = net.plan.nodes[original].account();
        let task_id = net.post_task()?;
        let task = TaskId(task_id);
        let deadlines = net.clients[0].task(task_id)?.deadlines;
        net.send(&key, TxKind::JoinTask { task }).context("joining the task")?;
        let lead = net.clients[0].clone();
        let stage_of = |who, stage: Stage| {
            let lead = lead.clone();
            move || {
                let view = lead.task(task_id).ok()?;
                view.submissions.iter().find(|s| s.trainer == who && s.stage == stage).map(|_| ())
            }
        };
        net.wait(CHAIN_TIMEOUT, "the copier's join to land", stage_of(account, Stage::Joined))?;
        let name = net.plan.nodes[original].name.clone();
        net.wait(
            CHAIN_TIMEOUT,
            &format!("{name} to commit its model"),
            stage_of(original_account, Stage::Committed),
        )?;
        let data_dir = net.layout.dir.join(&name);
        let trained = trained_model(&data_dir, task_id)?;
        let model_hash: Hash = trained["model_hash"]
            .as_str()
            .context("no model_hash in the trainer's record")?
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}'s model hash: {e:?}"))?;
        let size_bytes = trained["size_bytes"].as_u64().context("no size_bytes")?;
        let params = trained["params"].as_u64().context("no params")?;
        let blob = data_dir.join("blobs").join(model_hash.to_hex());
        let mut artifact =
            std::fs::read(&blob).with_context(|| format!("reading {}", blob.display()))?;
        ensure!(artifact.len() as u64 == size_bytes, "{} has the wrong size", blob.display());
        // The lowest mantissa bit of a non-zero weight near the end (f32 or f16, little-endian):
        // the copy hashes differently but predicts the same and has as many non-zero weights.
        let at = (8..artifact.len() / 2)
            .step_by(4)
            .map(|back| artifact.len() - back)
            .find(|&p| artifact[p + 1] != 0)
            .context("no non-zero weight found")?;
        artifact[at] ^= 1;
        let mut copy_hash = None;
        for (node, client) in net.plan.validators().zip(&net.clients) {
            let hash = client
                .post_blob(&artifact)
                .with_context(|| format!("uploading the copy to {}", node.name))?;
            copy_hash = Some(hash);
        }
        let copy_hash = copy_hash.context("no validators")?;
        ensure!(copy_hash != model_hash, "the copy hashes like the original");
        let salt = Salt(Hash([0x7E; 32]));
        let commitment =
            model_commitment(&net.plan.genesis.chain_id, task, &account, &copy_hash, &salt);
        net.send(&key, TxKind::CommitModel { task, commitment }).context("committing")?;
        net.wait(
            CHAIN_TIMEOUT,
            "the copier's commitment to land",
            stage_of(account, Stage::Committed),
        )?;
        net.wait_height(0, deadlines.commit + 1)?;
        let reveal = TxKind::RevealModel { task, model_hash: copy_hash, salt, size_bytes, params };
        net.send(&key, reveal).context("revealing the copy")?;
        net.wait(CHAIN_TIMEOUT, "the copier's reveal to land", stage_of(account, Stage::Revealed))?;
        let (report, last) = net.finalized(task_id)?;
        check_report(net, &report)?;
        let entry = report
            .trainers
            .iter()
            .find(|t| t.account == account)
            .context("the copier is not in the finalization report")?;
        ensure!(
            entry.duplicate.is_some() && entry.payout.0 == 0,
            "the copier was not found out: {entry:?}"
        );
        println!(
            "  task {task_id} finalized at height {last}: the copy of {name}'s model is a \
             duplicate ({:?}) and earns {}",
            entry.duplicate, entry.payout.0
        );
        net.agreement(last + 1)?;
        Ok(())
    })
}

/// The `trained` record of a trainer's task, from `DATA_DIR/roles/*/task-<id>.json`.
fn trained_model(data_dir: &Path, task_id: u64) -> anyhow::Result<serde_json::Value> {
    let (path, record) = role_record(data_dir, task_id)?;
    record["stage"]
        .get("trained")
        .cloned()
        .with_context(|| format!("{} has no trained model: {record}", path.display()))
}

/// A role's record of a task: `DATA_DIR/roles/*/task-<id>.json`, with its path.
fn role_record(data_dir: &Path, task_id: u64) -> anyhow::Result<(PathBuf, serde_json::Value)> {
    let roles = data_dir.join("roles");
    for entry in
        std::fs::read_dir(&roles).with_context(|| format!("reading {}", roles.display()))?
    {
        let path = entry?.path().join(format!("task-{task_id}.json"));
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let record = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            return Ok((path, record));
        }
    }
    bail!("no record of task {task_id} under {}", roles.display())
}

/// The verdict vector an honest validator committed to for a task (its scorer's record).
fn committed_verdicts(data_dir: &Path, task_id: u64) -> anyhow::Result<VerdictVector> {
    let (path, record) = role_record(data_dir, task_id)?;
    let verdicts = record
        .get("verdicts")
        .or_else(|| record.get("secret").and_then(|s| s.get("verdicts")))
        .with_context(|| format!("{} has no verdicts: {record}", path.display()))?;
    serde_json::from_value(verdicts.clone())
        .with_context(|| format!("the verdicts in {}", path.display()))
}

/// A verdict without its duplicate flag (the consensus entries clear it).
fn unflagged(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Scored { score_ppm, .. } => Verdict::Scored { score_ppm, duplicate_of: None },
        other => other,
    }
}

/// (c): in a network of 5 validators, one that reports every score as 1,000,000 ppm (beyond the
/// tolerance above every honest score, checked) and one that reports a constant 500,000 ppm
/// without evaluating each earn less per unit of stake than every honest validator, and the
/// consensus verdict on every entry is the honest validators' verdict. The test is both
/// dishonest validators' scorer: their nodes run without held-out files (so they vote on blocks
/// but do not score), and it commits and reveals their verdict vectors.
fn dishonest_validators(dir: &Path) -> anyhow::Result<()> {
    let mut net = Net::plan(dir, 5, 3, 19)?;
    let (inflater, constant) = (3, 4);
    for i in [inflater, constant] {
        let config = &net.layout.configs[i];
        let text = std::fs::read_to_string(config)?;
        let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("heldout")).collect();
        std::fs::write(config, kept.join("\n") + "\n")?;
    }
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let task = TaskId(task_id);
        let deadlines = net.clients[0].task(task_id)?.deadlines;
        // In the score-commit window: the revealed trainers fix the verdict vector's layout.
        net.wait_height(0, deadlines.reveal + 1)?;
        let view = net.clients[0].task(task_id)?;
        let revealed =
            view.submissions.iter().filter(|s| s.stage == Stage::Revealed).map(|s| s.trainer);
        let layout = expected_layout(false, revealed);
        let chain_id = net.plan.genesis.chain_id.clone();
        let mut secrets = Vec::new();
        for (i, score) in [(inflater, 1_000_000), (constant, 500_000)] {
            let key = net.plan.nodes[i].key();
            let verdicts: VerdictVector = layout
                .iter()
                .map(|&subject| VerdictEntry { subject, verdict: Verdict::scored(score) })
                .collect();
            let salt = Salt(Hash(testnet::plan::derive(19, &format!("salt/{i}"))));
            let commitment = scores_commitment(&chain_id, task, &key.account(), &verdicts, &salt);
            net.send(&key, TxKind::CommitScores { task, commitment })
                .with_context(|| format!("committing {}'s scores", net.plan.nodes[i].name))?;
            secrets.push((i, key, verdicts, salt));
        }
        net.wait_height(0, deadlines.score_commit + 1)?;
        for (i, key, verdicts, salt) in secrets {
            net.send(&key, TxKind::RevealScores { task, verdicts, salt })
                .with_context(|| format!("revealing {}'s scores", net.plan.nodes[i].name))?;
        }
        let (report, last) = net.finalized(task_id)?;
        check_report(net, &report)?;
        net.agreement(last + 1)?;
        let tolerance = net.plan.genesis.params.agreement_tolerance_ppm;
        for honest in 0..3 {
            let name = &net.plan.nodes[honest].name;
            let verdicts = committed_verdicts(&net.layout.dir.join(name), task_id)?;
            ensure!(
                verdicts.len() == report.entries.len(),
                "{name} scored {} entries, the report has {}",
                verdicts.len(),
                report.entries.len()
            );
            for (mine, entry) in verdicts.iter().zip(&report.entries) {
                ensure!(
                    unflagged(mine.verdict) == entry.consensus,
                    "the consensus on {:?} is {:?}, but honest {name} found {:?}",
                    entry.subject,
                    entry.consensus,
                    mine.verdict
                );
                if let Some(score) = mine.verdict.score() {
                    ensure!(
                        score.0 + tolerance < 1_000_000,
                        "{name}'s score {} on {:?} is within the tolerance of the inflated one",
                        score.0,
                        entry.subject
                    );
                }
            }
        }
        let per_stake = |i: usize| -> anyhow::Result<u128> {
            let account = net.plan.nodes[i].account();
            let v = report
                .validators
                .iter()
                .find(|v| v.account == account)
                .with_context(|| format!("{} is not in the report", net.plan.nodes[i].name))?;
            ensure!(v.revealed, "{} did not reveal", net.plan.nodes[i].name);
            Ok(u128::from(v.payout.0) * 1_000_000 / u128::from(v.stake.max(1)))
        };
        let honest_least = (0..3).map(per_stake).collect::<anyhow::Result<Vec<_>>>()?;
        let honest_least = honest_least.into_iter().min().expect("three honest validators");
        for i in [inflater, constant] {
            let theirs = per_stake(i)?;
            ensure!(
                theirs < honest_least,
                "{} earned {theirs} per million stake, an honest validator as little as \
                 {honest_least}",
                net.plan.nodes[i].name
            );
        }
        println!(
            "  task {task_id} finalized at height {last}: every consensus verdict is the honest \
             one; per million stake, honest validators earn at least {honest_least}, the \
             inflater {} and the constant scorer {}",
            per_stake(inflater)?,
            per_stake(constant)?
        );
        Ok(())
    })
}
