//! A running network of node processes: a [`Plan`]'s files written, its nodes started (each
//! under its own supervisor, so one can be killed and restarted), waits on its chain, the task
//! posted and its held-out key revealed, and every node stopped when it is dropped.
//!
//! The nodes are the current executable re-run with `argv[0]` = [`NODE_ARG0`], so an executable
//! that starts a [`Network`] must dispatch on `argv[0]` (see [`is_node_mode`]) as the `testnet`
//! binary, its bench and the `crucible-tests` suites do. Every wait polls the nodes' APIs with a
//! bound, fails at once if a node exits or the user interrupts (see [`crate::interrupt`]), and
//! names what it waited for.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use consensus::crypto::Keypair;
use consensus::finalize::FinalizationReport;
use consensus::task::TaskSpec;
use consensus::tx::TxKind;
use consensus::types::{Hash, TaskId};
use node::client::KeyReveal;
use node::http::views::BlockDetail;

use crate::client::Client;
use crate::files::{self, Layout};
use crate::hosts::{self, LinkModel, Segment};
use crate::interrupt;
use crate::launch::{self, Spawn, Supervisor};
use crate::plan::{self, NodeAddrs, Plan, Role};

/// The `argv[0]` under which a multi-call executable runs as a node.
pub const NODE_ARG0: &str = "node";
/// The nodes' log filter by default: gossipsub warns on every re-broadcast of a message it has
/// already published, which would bury the warnings that matter.
pub const LOG_FILTER: &str = "info,libp2p_gossipsub=error";

/// Whether `path` names the node mode of a multi-call executable (`argv[0]` is `node`).
pub fn is_node_mode(arg0: &Path) -> bool {
    arg0.file_name().is_some_and(|n| n == NODE_ARG0)
}

/// The `main` of a program that starts a [`Network`] (a bench): the node when it is re-run as
/// one ([`is_node_mode`]), `program` otherwise, its error printed.
pub fn node_or(program: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if is_node_mode(Path::new(&argv0)) {
        return node::cli::main();
    }
    match program() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How long a network's waits last and how often they poll.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Longest wait for a node's API to answer after it starts.
    pub ready: Duration,
    /// Longest wait for a chain event that takes a few blocks (the first block, a posted task, a
    /// node reaching a height).
    pub chain: Duration,
    /// Time between polls of the nodes' APIs.
    pub poll: Duration,
}

/// A node started after the plan's (see [`Network::start_extra`]).
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

/// A node process ended while the network still needed it.
#[derive(Debug, thiserror::Error)]
#[error("{name} exited ({status}); see {}", log.display())]
pub struct NodeExited {
    /// The node.
    pub name: String,
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// Its log.
    pub log: PathBuf,
}

/// A task on the chain, as [`Network::post`] left it.
#[derive(Clone, Copy, Debug)]
pub struct Posted {
    /// Its id.
    pub id: u64,
    /// The hash of its `CreateTask`.
    pub tx: Hash,
}

/// A running network: the plan's nodes plus any extra nodes started later.
pub struct Network {
    /// What the network is made of: nodes (validators first), genesis, tasks.
    pub plan: Plan,
    /// Where its files are: configs, logs, task directories.
    pub layout: Layout,
    /// A client of each plan node's API, in node order.
    pub clients: Vec<Client>,
    /// Nodes started after the plan's.
    pub extra: Vec<Extra>,
    /// Each plan node's addresses, in node order.
    addrs: Vec<NodeAddrs>,
    /// The hosts and their emulated links, with `--hosts` (dropped after the nodes stop).
    segment: Option<Segment>,
    /// The executable the nodes run.
    exe: PathBuf,
    /// One supervisor per plan node (`None` while it is stopped).
    running: Vec<Option<Supervisor>>,
    /// Each running plan node's process id.
    pids: Vec<Option<u32>>,
    /// The creator's key revealers of the posted tasks: a stop flag and the thread.
    revealers: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
    pace: Pace,
    /// The nodes' `RUST_LOG`.
    log_filter: String,
}

impl Network {
    /// Writes the files of `plan` into `dir` (empty or absent) for nodes on free loopback ports;
    /// starts nothing. The nodes will log at `log_filter`.
    pub fn write(plan: Plan, dir: &Path, pace: Pace, log_filter: &str) -> anyhow::Result<Network> {
        let ports = files::free_ports(plan.port_base, plan.nodes.len())?;
        let addrs = ports.into_iter().map(NodeAddrs::loopback).collect();
        Network::assemble(plan, dir, pace, log_filter, addrs, None)
    }

    /// As [`Network::write`], but every node on a host of its own whose links follow `model`
    /// (see [`crate::hosts`]), the plan nodes in `behind_nat` each behind a NAT: makes the hosts
    /// and starts their switch now; needs root. The plan's round timeouts are fitted to the
    /// links' delay ([`Plan::with_link_delay`]).
    pub fn write_hosts(
        plan: Plan,
        dir: &Path,
        pace: Pace,
        log_filter: &str,
        model: LinkModel,
        behind_nat: &[usize],
    ) -> anyhow::Result<Network> {
        let plan = plan.with_link_delay(model.max_delay())?;
        let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
        let seed = plan::derive_u64(plan.settings.seed, "hosts/switch");
        let segment = Segment::create(&names, behind_nat, model, seed)?;
        let local = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let addrs = (0..names.len())
            .map(|i| NodeAddrs {
                p2p: (segment.addr(i), hosts::P2P_PORT).into(),
                http: local(hosts::HTTP_PORT),
                api: segment.api(i),
                behind_nat: segment.behind_nat(i),
            })
            .collect();
        Network::assemble(plan, dir, pace, log_filter, addrs, Some(segment))
    }

    fn assemble(
        plan: Plan,
        dir: &Path,
        pace: Pace,
        log_filter: &str,
        addrs: Vec<NodeAddrs>,
        segment: Option<Segment>,
    ) -> anyhow::Result<Network> {
        let layout = files::write(&plan, dir, &addrs)?;
        let clients = layout.urls.iter().map(|u| Client::new(u)).collect::<Result<_, _>>()?;
        let exe = std::env::current_exe().context("finding the executable the nodes run")?;
        Ok(Network {
            running: plan.nodes.iter().map(|_| None).collect(),
            pids: plan.nodes.iter().map(|_| None).collect(),
            plan,
            layout,
            clients,
            extra: Vec::new(),
            addrs,
            segment,
            exe,
            revealers: Vec::new(),
            pace,
            log_filter: log_filter.into(),
        })
    }

    /// The hosts and their links, with `--hosts`.
    pub fn segment(&self) -> Option<&Segment> {
        self.segment.as_ref()
    }

    /// A node's start command (in the namespace of plan node `host`, with `--hosts`).
    fn spawn_spec(
        &self,
        name: &str,
        mut args: Vec<String>,
        log: &Path,
        host: Option<usize>,
    ) -> anyhow::Result<Spawn> {
        let netns = match (&self.segment, host) {
            (Some(segment), Some(i)) => Some(Arc::new(
                segment.netns(i).with_context(|| format!("opening {}", segment.namespace(i)))?,
            )),
            _ => None,
        };
        // A node stops if this process dies without a chance to stop it.
        args.push("--exit-with-stdin".into());
        Ok(Spawn {
            name: name.into(),
            program: self.exe.clone(),
            arg0: Some(NODE_ARG0.into()),
            args,
            // One compute thread per node: all of them share the machine's cores.
            env: vec![
                ("RUST_LOG".into(), self.log_filter.clone()),
                ("RAYON_NUM_THREADS".into(), "1".into()),
            ],
            log: log.to_path_buf(),
            netns,
        })
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
        let spec = self.spawn_spec(&node.name, args, &self.layout.logs[i], Some(i))?;
        let mut supervisor = Supervisor::new();
        self.pids[i] = Some(supervisor.spawn(spec)?);
        self.running[i] = Some(supervisor);
        Ok(())
    }

    /// Starts the plan nodes `nodes` and waits until each answers with the planned genesis.
    pub fn start_ready(&mut self, nodes: &[usize]) -> anyhow::Result<()> {
        for &i in nodes {
            self.start(i)?;
        }
        for &i in nodes {
            self.wait_ready(i)?;
        }
        Ok(())
    }

    /// Starts every plan node and waits until each answers with the planned genesis and the
    /// validators have committed block 1.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        self.start_all_but(&[])
    }

    /// As [`Network::start_all`], but leaves the plan nodes in `skip` stopped.
    pub fn start_all_but(&mut self, skip: &[usize]) -> anyhow::Result<()> {
        let starting: Vec<usize> =
            (0..self.plan.nodes.len()).filter(|i| !skip.contains(i)).collect();
        self.start_ready(&starting)?;
        self.wait_height(0, 1)?;
        Ok(())
    }

    /// Whether plan node `i` has exited since it was started, and how (it then counts as
    /// stopped: [`Network::start`] may start it again).
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

    /// Whether plan node `i` runs (started, and neither killed nor seen to exit).
    pub fn is_running(&self, i: usize) -> bool {
        self.running[i].is_some()
    }

    /// Plan node `i`'s libp2p address, with its `/p2p/` suffix (`/ip4/…/tcp/…/p2p/12D3…`).
    pub fn p2p_addr(&self, i: usize) -> anyhow::Result<String> {
        self.addrs[i].multiaddr(&self.plan.nodes[i])
    }

    /// Where this process reaches plan node `i`'s HTTP API.
    pub fn http_addr(&self, i: usize) -> std::net::SocketAddr {
        self.addrs[i].api
    }

    /// The node's command line: the executable the nodes run, with `argv[0]` = `node`.
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

    /// Waits until plan node `i` answers `GET /status` with the planned genesis.
    pub fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let client = self.clients[i].clone();
        let name = self.plan.nodes[i].name.clone();
        let what = format!("{name} to answer GET /status at {}", client.base());
        let status = self.wait(self.pace.ready, &what, || client.status().ok())?;
        let genesis = self.plan.genesis.hash();
        ensure!(
            status.genesis_hash == genesis,
            "{name} runs genesis {} but the plan's is {genesis}",
            status.genesis_hash
        );
        Ok(())
    }

    /// Waits until plan node `i` has committed `height`; returns its height then.
    pub fn wait_height(&mut self, i: usize, height: u64) -> anyhow::Result<u64> {
        let client = self.clients[i].clone();
        let name = self.plan.nodes[i].name.clone();
        self.wait(self.pace.chain, &format!("{name} to reach height {height}"), || {
            client.status().ok().map(|s| s.height.0).filter(|&h| h >= height)
        })
    }

    /// Polls `probe` until it gives a value, for at most `timeout`; fails at once if a running
    /// node has exited or the user interrupted. A failure names what it waited for.
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
            interrupt::sleep(self.pace.poll)?;
        }
    }

    /// Fails with [`NodeExited`] if a node that should be running has exited, or with
    /// [`interrupt::Interrupted`] once the user interrupted.
    pub fn alive(&mut self) -> anyhow::Result<()> {
        interrupt::check()?;
        if let Some(segment) = &mut self.segment {
            segment.check()?;
        }
        let supervisors = self
            .running
            .iter_mut()
            .flatten()
            .chain(self.extra.iter_mut().filter_map(|e| e.supervisor.as_mut()));
        for supervisor in supervisors {
            if let Some(exited) = supervisor.exited()? {
                let launch::Exited { name, status, log } = exited;
                return Err(NodeExited { name, status, log }.into());
            }
        }
        Ok(())
    }

    /// Every node's name and log file, plan nodes first, for the logs that exist.
    pub fn logs(&self) -> Vec<(&str, &Path)> {
        let plan_logs = self.plan.nodes.iter().map(|n| n.name.as_str()).zip(&self.layout.logs);
        let extra_logs = self.extra.iter().map(|e| (e.name.as_str(), &e.log));
        plan_logs
            .chain(extra_logs)
            .filter(|(_, log)| log.exists())
            .map(|(n, l)| (n, &**l))
            .collect()
    }

    /// Uploads the task of round `round` (its public training file and sealed held-out file) to
    /// every validator, posts `CreateTask` for `spec` signed by the plan's creator to the lead
    /// validator, and returns the task once it is on the chain.
    pub fn post(&mut self, round: u32, spec: &TaskSpec) -> anyhow::Result<Posted> {
        let task = &self.plan.tasks[round as usize - 1];
        for (node, client) in self.plan.validators().zip(&self.clients) {
            client
                .post_task_files(&task.train, &task.sealed)
                .with_context(|| format!("posting the task's files to {}", node.name))?;
        }
        let creator = self.plan.creator().account();
        let lead = self.clients[0].clone();
        let known: Vec<TaskId> = lead.tasks()?.into_iter().map(|t| t.id).collect();
        let kind = TxKind::CreateTask { spec: Box::new(spec.clone()), reward: self.plan.reward };
        let tx = self.send(&self.plan.creator(), kind)?;
        let id = self.wait(self.pace.chain, "the posted task to appear in GET /tasks", || {
            lead.tasks().ok().and_then(|tasks| {
                tasks
                    .into_iter()
                    .find(|t| t.creator == creator && !known.contains(&t.id))
                    .map(|t| t.id.0)
            })
        })?;
        Ok(Posted { id, tx })
    }

    /// Posts the planned task (see [`Network::post`]) and starts the creator's key revealer: a
    /// thread that reveals the held-out key in the task's key window ([`KeyReveal`]) until the
    /// task finalizes or the network stops. Returns the task's id.
    pub fn post_task(&mut self) -> anyhow::Result<u64> {
        let spec = self.plan.tasks[0].spec.clone();
        let id = self.post(1, &spec)?.id;
        let stop = Arc::new(AtomicBool::new(false));
        let (lead, creator) = (self.clients[0].clone(), self.plan.creator());
        let chain_id = self.plan.genesis.chain_id.clone();
        let mut reveal = KeyReveal::new(id, plan::heldout_key(self.plan.settings.seed, 1));
        let (stopped, poll) = (stop.clone(), self.pace.poll);
        let revealer = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(view) = lead.task(id) {
                    if view.report.is_some() {
                        return;
                    }
                    let _ = reveal.poll(&lead, &creator, &chain_id, &view);
                }
                std::thread::sleep(poll);
            }
        });
        self.revealers.push((stop, revealer));
        Ok(id)
    }

    /// Signs `kind` with `key` at its next nonce and posts it to the lead validator; returns the
    /// transaction's hash (an error if the node refused it).
    pub fn send(&self, key: &Keypair, kind: TxKind) -> anyhow::Result<Hash> {
        Ok(self.clients[0].sign_and_post(key, &self.plan.genesis.chain_id, kind)?)
    }

    /// Waits, for at most `timeout`, until the task has a finalization report on the lead
    /// validator; returns it with the task's last deadline (the height that finalized it).
    pub fn finalized(
        &mut self,
        task_id: u64,
        timeout: Duration,
    ) -> anyhow::Result<(FinalizationReport, u64)> {
        let lead = self.clients[0].clone();
        self.wait(timeout, &format!("task {task_id} to finalize"), || {
            let view = lead.task(task_id).ok()?;
            let report = crate::client::report(&view).ok()??;
            Some((report, view.deadlines.score.0))
        })
    }

    /// Waits until every running plan node has the block at `height` and checks that all have
    /// the same block hash and state root there; returns that block.
    pub fn agreement(&mut self, height: u64) -> anyhow::Result<BlockDetail> {
        let mut blocks: Vec<(String, BlockDetail)> = Vec::new();
        let running: Vec<usize> =
            (0..self.plan.nodes.len()).filter(|&i| self.is_running(i)).collect();
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
        let what = format!("{name} to have the block at height {height}");
        self.wait(self.pace.chain, &what, || {
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
        ensure!(self.segment.is_none(), "extra nodes run on loopback only, not with --hosts");
        let dir = &self.layout.dir;
        let data_dir = dir.join(name);
        let key = Keypair::from_seed(plan::derive(seed, &format!("key/{name}")));
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
        for (i, node) in self.plan.nodes.iter().enumerate() {
            if node.role == Role::Validator {
                args.push("--bootstrap".into());
                args.push(self.p2p_addr(i)?);
            }
        }
        let log = dir.join(format!("{name}.log"));
        let mut supervisor = Supervisor::new();
        supervisor.spawn(self.spawn_spec(name, args, &log, None)?)?;
        self.extra.push(Extra {
            name: name.into(),
            data_dir,
            log,
            client: Client::new(&format!("http://127.0.0.1:{}", ports.http))?,
            supervisor: Some(supervisor),
        });
        Ok(self.extra.len() - 1)
    }

    /// Stops every node (SIGKILL, as a crash would); returns how many were running.
    pub fn stop_all(&mut self) -> usize {
        let mut stopped = 0;
        for i in 0..self.running.len() {
            stopped += usize::from(self.is_running(i));
            self.kill(i);
        }
        for extra in &mut self.extra {
            if let Some(mut supervisor) = extra.supervisor.take() {
                stopped += supervisor.stop_all();
            }
        }
        stopped
    }

    /// Every node's data dir, plan nodes first.
    fn data_dirs(&self) -> Vec<(String, PathBuf)> {
        let plan = self.plan.nodes.iter().map(|n| (n.name.clone(), self.layout.dir.join(&n.name)));
        plan.chain(self.extra.iter().map(|e| (e.name.clone(), e.data_dir.clone()))).collect()
    }

    /// Runs `node ledger verify --data-dir DIR` on every node's data dir; the nodes must be
    /// stopped. Returns each node's report line.
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

impl Drop for Network {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_mode_is_chosen_by_argv0() {
        assert!(is_node_mode(Path::new("node")));
        assert!(is_node_mode(Path::new("/x/y/node")));
        assert!(!is_node_mode(Path::new("/x/testnet")));
    }
}
