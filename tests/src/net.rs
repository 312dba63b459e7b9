//! A running local network of node processes for the tests: plan it, start it, wait on its
//! chain, post the demo task, check what finalized, and show every node's log tail on failure.
//!
//! The nodes are this test executable re-run with `argv[0]` = `node` (see [`crate::suite`]), so
//! every test target that uses [`Net`] must dispatch on `argv[0]` as [`crate::suite::main`] does.
//! Every wait polls the nodes' APIs with a generous bound and fails naming what it waited for.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use consensus::crypto::Keypair;
use consensus::finalize::{FinalizationReport, Outcome};
use consensus::state::Phase;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Nonce, TaskId};
use node::http::views::BlockDetail;
use testnet::client::Client;
use testnet::files::{self, Layout};
use testnet::launch::{self, Spawn, Supervisor};
use testnet::plan::{LABEL_NOISE_DEFAULT, NodePorts, Plan, Role, Settings, TaskSource};
use testnet::report;
use testnet::run::{LOG_FILTER, NODE_ARG0};
use trainer::task::DataKind;

/// The demo data set the testnet runs by default.
pub const DIGITS: &[u8] = include_bytes!("../../data/digits.csv");

/// Longest wait for a node's API to answer after it starts.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a chain event that takes a few blocks (the first block, a posted task, a
/// node reaching a height, a restarted node catching up).
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a posted task to finalize (about 70 blocks of 250 ms, training and scoring
/// on a loaded two-core machine).
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between polls of the nodes' APIs.
const POLL: Duration = Duration::from_millis(300);
/// Log lines of each node shown when a scenario fails.
const LOG_LINES: usize = 15;

/// A running network: the plan's nodes (each under its own supervisor, so one can be killed and
/// restarted) plus any extra nodes started later.
pub struct Net {
    /// What the network is made of: nodes (validators first), genesis, tasks.
    pub plan: Plan,
    /// Where its files are: configs, logs, task directories.
    pub layout: Layout,
    /// Each plan node's ports, in node order.
    ports: Vec<NodePorts>,
    /// The executable the nodes run (this test executable).
    exe: PathBuf,
    /// A client of each plan node's API, in node order.
    pub clients: Vec<Client>,
    /// One supervisor per plan node (`None` while it is stopped).
    running: Vec<Option<Supervisor>>,
    /// Each running plan node's process id.
    pids: Vec<Option<u32>>,
    /// Nodes started after the plan's.
    pub extra: Vec<Extra>,
    /// The creator's key revealers of the posted tasks: a stop flag and the thread.
    revealers: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// A node started after the plan's (see [`Net::start_extra`]).
pub struct Extra {
    /// Its name in messages.
    name: String,
    /// Its data dir.
    data_dir: PathBuf,
    /// Its log file.
    log: PathBuf,
    /// A client of its API.
    pub client: Client,
    /// Its supervisor (`None` once it is stopped).
    supervisor: Option<Supervisor>,
}

impl Net {
    /// Plans the default testnet (the digits task with label noise) for `validators` and
    /// `trainers` and writes its files into `dir`; starts nothing.
    pub fn plan(dir: &Path, validators: usize, trainers: usize, seed: u64) -> anyhow::Result<Net> {
        let task = TaskSource {
            name: "digits.csv".into(),
            bytes: DIGITS.to_vec(),
            kind: DataKind::Classification,
            label_noise: LABEL_NOISE_DEFAULT,
        };
        Net::plan_with(dir, validators, trainers, seed, task)
    }

    /// As [`Net::plan`], with the task made from `task` instead of the digits demo.
    pub fn plan_with(
        dir: &Path,
        validators: usize,
        trainers: usize,
        seed: u64,
        task: TaskSource,
    ) -> anyhow::Result<Net> {
        let plan = Plan::new(Settings { validators, trainers, seed, rounds: 1, task })?;
        let ports = files::free_ports(plan.port_base, plan.nodes.len())?;
        let layout = files::write(&plan, dir, &ports)?;
        let clients = layout.urls.iter().map(|u| Client::new(u)).collect::<Result<_, _>>()?;
        let running = plan.nodes.iter().map(|_| None).collect();
        let pids = plan.nodes.iter().map(|_| None).collect();
        let exe = std::env::current_exe().context("finding the test executable")?;
        Ok(Net {
            plan,
            layout,
            ports,
            exe,
            clients,
            running,
            pids,
            extra: Vec::new(),
            revealers: Vec::new(),
        })
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
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_with(i, &[])
    }

    /// Starts plan node `i` with `extra` flags after its config (flags win over the config file,
    /// e.g. `--submit-dir DIR` for a trainer whose config names a recipe).
    pub fn start_with(&mut self, i: usize, extra: &[String]) -> anyhow::Result<()> {
        ensure!(self.running[i].is_none(), "{} is already running", self.plan.nodes[i].name);
        let node = &self.plan.nodes[i];
        let mut args = vec![
            "--role".into(),
            node.role.as_str().into(),
            "--config".into(),
            self.layout.configs[i].display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let spec = self.spawn_spec(&node.name, args, &self.layout.logs[i]);
        let mut supervisor = Supervisor::new();
        self.pids[i] = Some(supervisor.spawn(spec)?);
        self.running[i] = Some(supervisor);
        Ok(())
    }

    /// Whether plan node `i` has exited since it was started, and how (it then counts as
    /// stopped: [`Net::start`] may start it again).
    pub fn exited(&mut self, i: usize) -> anyhow::Result<Option<launch::Exited>> {
        let Some(supervisor) = self.running[i].as_mut() else { return Ok(None) };
        let exited = supervisor.exited()?;
        if exited.is_some() {
            self.running[i] = None;
            self.pids[i] = None;
        }
        Ok(exited)
    }

    /// The process id of plan node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.pids[i]
    }

    /// Plan node `i`'s libp2p address, with its `/p2p/` suffix.
    pub fn p2p_addr(&self, i: usize) -> anyhow::Result<String> {
        let peer = node::keystore::peer_id(&self.plan.nodes[i].key())?;
        Ok(format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", self.ports[i].p2p))
    }

    /// Plan node `i`'s HTTP API address.
    pub fn http_addr(&self, i: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.ports[i].http))
    }

    /// The executable the nodes run (this test executable, started with `argv[0]` = `node`).
    pub fn node_command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        command.arg0(NODE_ARG0);
        command
    }

    /// Kills plan node `i` (SIGKILL, no clean shutdown) and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.pids[i] = None;
        if let Some(mut supervisor) = self.running[i].take() {
            supervisor.stop_all();
        }
    }

    /// Starts every plan node and waits until each answers with the planned genesis and the
    /// validators have committed block 1.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        self.start_all_but(&[])
    }

    /// As [`Net::start_all`], but leaves the plan nodes in `skip` stopped.
    pub fn start_all_but(&mut self, skip: &[usize]) -> anyhow::Result<()> {
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
    pub fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let client = self.clients[i].clone();
        let name = self.plan.nodes[i].name.clone();
        let status = self.wait(READY_TIMEOUT, &format!("{name} to answer GET /status"), || {
            client.status().ok()
        })?;
        let genesis = self.plan.genesis.hash();
        ensure!(
            status.genesis_hash == genesis,
            "{name} runs genesis {} but the plan's is {genesis}",
            status.genesis_hash
        );
        Ok(())
    }

    /// Waits until plan node `i` has committed `height`.
    pub fn wait_height(&mut self, i: usize, height: u64) -> anyhow::Result<u64> {
        let client = self.clients[i].clone();
        let name = self.plan.nodes[i].name.clone();
        self.wait(CHAIN_TIMEOUT, &format!("{name} to reach height {height}"), || {
            client.status().ok().map(|s| s.height.0).filter(|&h| h >= height)
        })
    }

    /// Polls `probe` until it gives a value, for at most `timeout`; fails at once if a running
    /// node has exited. A failure names what it waited for.
    pub fn wait<T>(
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

    /// Uploads the task's public training file and sealed held-out file to every validator,
    /// posts `CreateTask` signed by the creator, starts the creator's key revealer (it reveals
    /// the held-out key in the task's key window, as the testnet does), and returns the task's
    /// id once it is on the chain.
    pub fn post_task(&mut self) -> anyhow::Result<u64> {
        let task = &self.plan.tasks[0];
        for (node, client) in self.plan.validators().zip(&self.clients) {
            client
                .post_blob(&task.train)
                .with_context(|| format!("uploading the training file to {}", node.name))?;
            client
                .post_blob(&task.sealed)
                .with_context(|| format!("uploading the sealed held-out file to {}", node.name))?;
        }
        let creator = self.plan.creator();
        let lead = self.clients[0].clone();
        let known: Vec<TaskId> = lead.tasks()?.into_iter().map(|t| t.id).collect();
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
        let id = self.wait(CHAIN_TIMEOUT, "the posted task to appear in GET /tasks", || {
            lead.tasks().ok().and_then(|tasks| {
                tasks
                    .into_iter()
                    .find(|t| t.creator == creator && !known.contains(&t.id))
                    .map(|t| t.id.0)
            })
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let revealer = KeyRevealer {
            lead,
            creator_seed: self.plan.creator_seed,
            chain_id: self.plan.genesis.chain_id.clone(),
            task: id,
            key: testnet::plan::heldout_key(self.plan.settings.seed, 1),
            stop: stop.clone(),
        };
        self.revealers.push((stop, std::thread::spawn(move || revealer.run())));
        Ok(id)
    }

    /// Signs `kind` with `key` at its next nonce and posts it to the lead validator; returns the
    /// node's answer (an error if it refused the transaction).
    pub fn send(&self, key: &Keypair, kind: TxKind) -> anyhow::Result<String> {
        let lead = &self.clients[0];
        let nonce = Nonce(lead.nonce(&key.account())?);
        let tx =
            SignedTx::sign(key, Tx { chain_id: self.plan.genesis.chain_id.clone(), nonce, kind });
        Ok(lead.post_tx(&tx)?.to_string())
    }

    /// Waits until the task has a finalization report on the lead validator; returns it with the
    /// task's last deadline (the height that finalized it).
    pub fn finalized(&mut self, task_id: u64) -> anyhow::Result<(FinalizationReport, u64)> {
        let lead = self.clients[0].clone();
        self.wait(FINALIZE_TIMEOUT, &format!("task {task_id} to finalize"), || {
            let view = lead.task(task_id).ok()?;
            let report = testnet::client::report(&view).ok()??;
            Some((report, view.deadlines.score.0))
        })
    }

    /// Waits until every running plan node has the block at `height` and checks that all have
    /// the same block hash and state root there; returns that block.
    pub fn agreement(&mut self, height: u64) -> anyhow::Result<BlockDetail> {
        let mut blocks: Vec<(String, BlockDetail)> = Vec::new();
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
                block.summary.hash == first.summary.hash && block.state_root == first.state_root,
                "{name} disagrees with {first_name} at height {height}: block {} state root {} \
                 vs block {} state root {}",
                block.summary.hash,
                block.state_root,
                first.summary.hash,
                first.state_root
            );
        }
        Ok(first.clone())
    }

    /// Waits until `client`'s node has the block at `height` and returns it.
    pub fn block_at(
        &mut self,
        name: &str,
        client: &Client,
        height: u64,
    ) -> anyhow::Result<BlockDetail> {
        self.wait(CHAIN_TIMEOUT, &format!("{name} to have the block at height {height}"), || {
            client
                .status()
                .ok()
                .filter(|s| s.height.0 >= height)
                .and_then(|_| client.block(height).ok())
        })
    }

    /// Starts a node that is not in the genesis (a fresh key and data dir; a trainer with no
    /// open task, so it only follows the chain), bootstrapping from every validator; returns
    /// its index in `extra`.
    pub fn start_extra(&mut self, name: &str, seed: u64) -> anyhow::Result<usize> {
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
            client: Client::new(&format!("http://127.0.0.1:{}", ports.http))?,
            supervisor: Some(supervisor),
        });
        Ok(self.extra.len() - 1)
    }

    /// Stops every node (SIGKILL, as a crash would).
    pub fn stop_all(&mut self) {
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
    pub fn verify_ledgers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut verified = Vec::new();
        for (name, data_dir) in self.data_dirs() {
            let report = self.verify_ledger(&name, &data_dir)?;
            verified.push((name, report));
        }
        Ok(verified)
    }

    /// Runs `node ledger verify --data-dir DATA_DIR` for the stopped node `name`; returns its
    /// report line.
    pub fn verify_ledger(&self, name: &str, data_dir: &Path) -> anyhow::Result<String> {
        let output = self
            .node_command()
            .args(["ledger", "verify", "--data-dir"])
            .arg(data_dir)
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
        Ok(stdout.trim().to_owned())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (stop, _) in &self.revealers {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, thread) in self.revealers.drain(..) {
            let _ = thread.join();
        }
        self.stop_all();
    }
}

/// The task creator's side after posting: reveals the held-out key once the task is in its key
/// window (again every [`KEY_RESEND`] while it stays there), until the task finalizes or the
/// net stops.
struct KeyRevealer {
    lead: Client,
    creator_seed: [u8; 32],
    chain_id: String,
    task: u64,
    key: consensus::commitment::HeldoutKey,
    stop: Arc<AtomicBool>,
}

/// How long the key revealer waits for its transaction to land before sending it again.
const KEY_RESEND: Duration = Duration::from_secs(3);

impl KeyRevealer {
    fn run(self) {
        let creator = Keypair::from_seed(self.creator_seed);
        let mut sent: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if let Ok(view) = self.lead.task(self.task) {
                if view.report.is_some() {
                    return;
                }
                let due = sent.is_none_or(|at| at.elapsed() >= KEY_RESEND);
                if view.summary.phase == Phase::Key
                    && due
                    && let Ok(nonce) = self.lead.nonce(&creator.account())
                {
                    let kind = TxKind::RevealHeldoutKey { task: TaskId(self.task), key: self.key };
                    let tx = Tx { chain_id: self.chain_id.clone(), nonce: Nonce(nonce), kind };
                    let _ = self.lead.post_tx(&SignedTx::sign(&creator, tx));
                    sent = Some(Instant::now());
                }
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Runs `body` on a planned network; on failure, prints the error and then every node's log
/// tail (the nodes still run, so the logs show where each one stood).
pub fn with_logs<T>(
    net: &mut Net,
    body: impl FnOnce(&mut Net) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    body(net).inspect_err(|err| {
        eprintln!("error: {err:#}\nnode logs:{}", net.logs());
    })
}

/// Checks a finalization report: the task finalized (not a quorum failure), every trainer
/// joined, and payouts, refunds and burns add up to the escrow plus the trainers' bonds exactly.
pub fn check_report(net: &Net, report: &FinalizationReport) -> anyhow::Result<()> {
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
    let entry_fee = net.plan.tasks[0].spec.entry_fee;
    let total = report::check_conservation(report, net.plan.reward, entry_fee)
        .map_err(anyhow::Error::msg)?;
    let fees = u128::from(entry_fee.0) * report.trainers.len() as u128;
    ensure!(total == u128::from(net.plan.reward.0) + bonds + fees, "conserved total {total}");
    Ok(())
}
