//! One testnet run: write the plan, start the nodes, post the task, follow it to finalization,
//! report, check that every node agrees, stop.
//!
//! Every wait is bounded and checks that no node died; a failure after the nodes start prints the
//! last lines of every node's log before the error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use consensus::commitment::HeldoutKey;
use consensus::finalize::Outcome;
use consensus::state::Phase;
use consensus::task::{BaseModel, TaskSpec};
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Hash, Nonce, TaskId};
use node::http::views::{self, DeadlinesView, SubmissionView, TaskDetail};
use trainer::task::NewTask;

use crate::client::{self, Client, Stage};
use crate::files::{self, Layout};
use crate::interrupt;
use crate::launch::{self, Spawn, Supervisor};
use crate::plan::{self, BLOCK_INTERVAL_MS, Plan};
use crate::report::{self, Label, Labels};

/// The `argv[0]` under which this multi-call binary runs as a node (see `main.rs`).
pub const NODE_ARG0: &str = "node";
/// Longest wait for every node's API to answer after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the first blocks, for the posted task to appear, and for every node to reach
/// the height after finalization.
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time the chain may stand still before the run fails.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between polls of the nodes' APIs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the creator waits for its `RevealHeldoutKey` to land before sending it again (a
/// dropped transaction; a second copy with the same nonce is refused as a replay).
pub const KEY_RESEND: Duration = Duration::from_secs(3);
/// The nodes' log filter unless `RUST_LOG` is set: gossipsub warns on every re-broadcast of a
/// message it has already published, which would bury the warnings that matter.
pub const LOG_FILTER: &str = "info,libp2p_gossipsub=error";
/// Log lines shown per node on a failure.
pub const FAILURE_LOG_LINES: usize = 12;

/// What one run does beyond its plan.
#[derive(Clone, Debug)]
pub struct Options {
    /// The directory to write into; a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// Keep the nodes running after the report, until Ctrl-C.
    pub keep_running: bool,
}

/// Runs a whole testnet from `plan`.
pub fn run(plan: &Plan, options: &Options) -> anyhow::Result<()> {
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("crucible-testnet-")
            .tempdir()
            .context("creating a temporary directory")?
            .keep(),
    };
    let ports = files::free_ports(plan.port_base, plan.nodes.len())?;
    let layout = files::write(plan, &dir, &ports)?;
    println!("testnet in {}", dir.display());
    println!(
        "  chain {} (genesis {}), {} validators, {} trainers, seed {}",
        plan.genesis.chain_id,
        plan.genesis.hash().short(),
        plan.settings.validators,
        plan.settings.trainers,
        plan.settings.seed
    );
    let task = &plan.tasks[0];
    let (unit, noise) = match task.extension {
        "csv" => ("rows", format!(" ({} labels flipped)", task.flipped)),
        _ => ("characters", String::new()),
    };
    println!(
        "  task {}: {} public {unit}{noise}, {} held out for the validators only",
        task.spec.name, task.sizes.0, task.sizes.1
    );
    for node in &plan.nodes {
        if let Some(recipe) = &node.recipe {
            let late = if node.first_round > 1 { " (joins in round 2)" } else { "" };
            println!("  {} trains with recipe {}{late}", node.name, recipe.label);
        }
    }
    let mut supervisor = Supervisor::new();
    let result = drive(plan, &layout, &mut supervisor, options.keep_running);
    if let Err(err) = &result
        && err.downcast_ref::<interrupt::Interrupted>().is_none()
    {
        if let Some(exited) = err.downcast_ref::<NodeExited>() {
            eprintln!("\nlast lines of {} ({}):", exited.name, exited.log.display());
            eprintln!("{}", launch::tail(&exited.log, FAILURE_LOG_LINES * 2));
        }
        eprintln!("\nlast warnings and errors of each node:");
        for (node, log) in plan.nodes.iter().zip(&layout.logs).filter(|(_, log)| log.exists()) {
            let problems = launch::problems(log, FAILURE_LOG_LINES);
            eprintln!("--- {} ({})", node.name, log.display());
            if problems.is_empty() {
                eprintln!("(no warnings or errors)");
            }
            for line in problems {
                eprintln!("{line}");
            }
        }
    }
    if let Err(err) = &result
        && err.downcast_ref::<interrupt::Interrupted>().is_some()
    {
        // Said before the nodes stop, so it comes before the line that says they stopped.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        eprintln!("{err}");
    }
    let stopped = supervisor.stop_all();
    println!("stopped {stopped} nodes; files and logs in {}", dir.display());
    result
}

fn drive(
    plan: &Plan,
    layout: &Layout,
    supervisor: &mut Supervisor,
    keep_running: bool,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the testnet executable")?;
    let clients = layout.urls.iter().map(|u| Client::new(u)).collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    start_nodes(plan, layout, supervisor, &exe, &clients, 1)?;
    println!(
        "all nodes answer ({:.1} s); waiting for the first block",
        started.elapsed().as_secs_f64()
    );
    println!("explorer: {}/", layout.urls[0]);
    let lead = &clients[0];
    wait(supervisor, CHAIN_TIMEOUT, "the validators to commit block 1", || {
        Ok(lead.status().ok().filter(|s| s.height.0 >= 1))
    })?;
    let names: BTreeMap<AccountId, &str> =
        plan.nodes.iter().map(|n| (n.account(), n.name.as_str())).collect();
    let labels: Labels = plan
        .nodes
        .iter()
        .map(|n| {
            (
                n.account(),
                Label { name: n.name.clone(), recipe: n.recipe.as_ref().map(|r| r.label.clone()) },
            )
        })
        .collect();
    let mut champion: Option<BaseModel> = None;
    for (round, task) in (1u32..).zip(&plan.tasks) {
        let mut spec = task.spec.clone();
        if round > 1 {
            let Some(base) = champion.take() else {
                println!("\nround {}: no champion to fine-tune from; stopping here", round);
                break;
            };
            println!(
                "\nround {round}: fresh held-out rows (split up front) under a new salt; the base \
                 model is champion {}",
                base.model_hash.short()
            );
            spec.base_model = Some(base);
            files::write_spec(&layout.task_dirs[round as usize - 1], &spec)?;
            start_nodes(plan, layout, supervisor, &exe, &clients, round)?;
        }
        let task_id = post_task(plan, &clients, supervisor, task, &spec)?;
        let w = spec.windows;
        let blocks = w.join + w.commit + w.key + w.reveal + w.score_commit + w.score_reveal;
        println!(
            "following task {task_id} (posted at {:.1} s): its windows last at most {blocks} \
             blocks, about {} s at {BLOCK_INTERVAL_MS} ms per block, and each closes once \
             everyone who may act in it has",
            started.elapsed().as_secs_f64(),
            blocks * BLOCK_INTERVAL_MS / 1_000
        );
        let key = plan::heldout_key(plan.settings.seed, round);
        let view = follow(plan, supervisor, lead, task_id, key, &names)?;
        let report = client::report(&view)?.expect("follow returns a finalized task");
        let report = &report;
        println!();
        print!(
            "{}",
            report::leaderboard(
                &format!("{task_id} ({})", view.summary.name),
                report,
                plan.reward,
                &labels
            )
        );
        let joined = view.submissions.len() as u64;
        println!(
            "entry fees: {joined} trainers joined at {} each, {} held until finalization and \
             burned unless the task is cancelled (filling all {} slots would cost {}, at least \
             the prize)",
            spec.entry_fee,
            joined * spec.entry_fee.0,
            spec.max_trainers,
            u64::from(spec.max_trainers) * spec.entry_fee.0
        );
        let total = report::check_conservation(report, plan.reward, spec.entry_fee)
            .map_err(anyhow::Error::msg)?;
        println!("conservation: payouts + refunds + burns = escrow + bonds + entry fees = {total}");
        if matches!(report.outcome, Outcome::Cancelled | Outcome::KeyWithheld) {
            bail!(
                "task {task_id} ended {:?}: validators holding {} of {} stake attested to the \
                 sealed held-out file; key revealed at {:?}",
                report.outcome,
                report.attested_stake,
                report.total_stake,
                report.key_revealed_at
            );
        }
        if report.outcome == Outcome::QuorumFailed {
            bail!(
                "task {task_id} failed: validators holding {} of {} stake revealed scores, not \
                 more than 2/3 (did scoring outlast the score-commit window?)",
                report.revealed_stake,
                report.total_stake
            );
        }
        let running: Vec<(&str, &Client)> = plan
            .nodes
            .iter()
            .zip(&clients)
            .filter(|(n, _)| n.first_round <= round)
            .map(|(n, c)| (n.name.as_str(), c))
            .collect();
        check_agreement(supervisor, &running, view.deadlines.score.0 + 1)?;
        champion = report
            .champion
            .as_ref()
            .map(|c| BaseModel { model_hash: c.model_hash, params: c.params });
    }
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    if keep_running {
        println!("nodes keep running; APIs:");
        for (node, url) in plan.nodes.iter().zip(&layout.urls) {
            println!("  {:<12} {url}/status", node.name);
        }
        println!("press Ctrl-C to stop them");
        until_interrupted(|| interrupt::sleep(POLL_INTERVAL), || alive(supervisor))?;
        println!("Ctrl-C: stopping the nodes");
    }
    Ok(())
}

/// Keeps a passed run's network up: polls `alive` after each `pause` until the user interrupts.
/// An interrupt here is how the user ends a run that passed, so it is `Ok` (exit 0, not 130);
/// a node that exits meanwhile is still an error.
fn until_interrupted(
    mut pause: impl FnMut() -> Result<(), interrupt::Interrupted>,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    loop {
        if pause().is_err() {
            return Ok(());
        }
        match alive() {
            Err(err) if err.downcast_ref::<interrupt::Interrupted>().is_some() => return Ok(()),
            other => other?,
        }
    }
}

/// Starts the nodes that join in `round` and waits until each answers with the right genesis
/// (and, for a node started late, has caught up with the chain).
fn start_nodes(
    plan: &Plan,
    layout: &Layout,
    supervisor: &mut Supervisor,
    exe: &Path,
    clients: &[Client],
    round: u32,
) -> anyhow::Result<()> {
    let starting: Vec<usize> =
        (0..plan.nodes.len()).filter(|&i| plan.nodes[i].first_round == round).collect();
    for &i in &starting {
        let node = &plan.nodes[i];
        let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| LOG_FILTER.into());
        supervisor.spawn(Spawn {
            name: node.name.clone(),
            program: exe.to_path_buf(),
            arg0: Some(NODE_ARG0.into()),
            args: vec![
                "--role".into(),
                node.role.as_str().into(),
                "--config".into(),
                layout.configs[i].display().to_string(),
                // Stop if the launcher dies without a chance to stop its children.
                "--exit-with-stdin".into(),
            ],
            // One compute thread per node: all of them share two cores.
            env: vec![("RUST_LOG".into(), log_filter), ("RAYON_NUM_THREADS".into(), "1".into())],
            log: layout.logs[i].clone(),
        })?;
    }
    let names: Vec<&str> = starting.iter().map(|&i| plan.nodes[i].name.as_str()).collect();
    println!("started {} (logs: {}/<node>.log)", names.join(", "), layout.dir.display());
    let genesis_hash = plan.genesis.hash().to_hex();
    let tip = if round > 1 { clients[0].status()?.height.0 } else { 0 };
    for &i in &starting {
        let (node, client) = (&plan.nodes[i], &clients[i]);
        let status = wait(
            supervisor,
            READY_TIMEOUT,
            &format!("{} to answer GET /status at {}", node.name, client.base()),
            || Ok(client.status().ok()),
        )?;
        ensure!(
            status.genesis_hash == plan.genesis.hash(),
            "{} runs genesis {} but the testnet wrote {genesis_hash}",
            node.name,
            status.genesis_hash
        );
        wait(supervisor, CHAIN_TIMEOUT, &format!("{} to sync to height {tip}", node.name), || {
            Ok(client.status().ok().filter(|s| s.height.0 >= tip))
        })?;
    }
    Ok(())
}

/// A node process ended while the testnet still needed it.
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

/// Fails if a node has exited or the user interrupted.
fn alive(supervisor: &mut Supervisor) -> anyhow::Result<()> {
    interrupt::check()?;
    if let Some(exited) = supervisor.exited()? {
        return Err(NodeExited { name: exited.name, status: exited.status, log: exited.log }.into());
    }
    Ok(())
}

/// Polls `probe` until it returns a value, for at most `timeout`.
fn wait<T>(
    supervisor: &mut Supervisor,
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let end = Instant::now() + timeout;
    loop {
        alive(supervisor)?;
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= end {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        interrupt::sleep(POLL_INTERVAL)?;
    }
}

/// Uploads the public training file and the sealed held-out file to every validator (the
/// creator serves them; validators attest to holding the sealed one), signs and posts
/// `CreateTask`, and returns the task's id once it is on the chain.
fn post_task(
    plan: &Plan,
    clients: &[Client],
    supervisor: &mut Supervisor,
    task: &NewTask,
    spec: &TaskSpec,
) -> anyhow::Result<u64> {
    for (node, client) in plan.validators().zip(clients) {
        client
            .post_blob(&task.train)
            .with_context(|| format!("uploading the training file to {}", node.name))?;
        client
            .post_blob(&task.sealed)
            .with_context(|| format!("uploading the sealed held-out file to {}", node.name))?;
    }
    let creator = plan.creator().account();
    let lead = &clients[0];
    let known: Vec<TaskId> = lead.tasks()?.into_iter().map(|t| t.id).collect();
    let kind = TxKind::CreateTask { spec: Box::new(spec.clone()), reward: plan.reward };
    let hash = post_as_creator(plan, lead, kind)?;
    println!("posted task {:?} with reward {} (tx {})", spec.name, plan.reward, hash.short());
    wait(supervisor, CHAIN_TIMEOUT, "the task to appear in GET /tasks", || {
        Ok(lead.tasks().ok().and_then(|tasks| {
            tasks
                .into_iter()
                .find(|t| t.creator == creator && !known.contains(&t.id))
                .map(|t| t.id.0)
        }))
    })
}

/// Signs `kind` as the plan's task creator with its next nonce and posts it to `lead`.
fn post_as_creator(plan: &Plan, lead: &Client, kind: TxKind) -> anyhow::Result<Hash> {
    let creator = plan.creator();
    let nonce = lead.nonce(&creator.account())?;
    let tx = Tx { chain_id: plan.genesis.chain_id.clone(), nonce: Nonce(nonce), kind };
    Ok(lead.post_tx(&SignedTx::sign(&creator, tx))?)
}

/// Follows a task until it has a finalization report, printing a line whenever its phase or a
/// trainer's progress changes, and, as its creator, reveals the held-out `key` once the task is
/// in its key window (again every few polls while it stays there); fails if the chain stalls.
fn follow(
    plan: &Plan,
    supervisor: &mut Supervisor,
    lead: &Client,
    task_id: u64,
    key: HeldoutKey,
    names: &BTreeMap<AccountId, &str>,
) -> anyhow::Result<TaskDetail> {
    let mut key_sent_at: Option<Instant> = None;
    let mut phases = PhaseClock::default();
    let mut last_line = String::new();
    let mut last_height = 0;
    let mut moved = Instant::now();
    loop {
        alive(supervisor)?;
        let status = lead.status()?;
        if status.height.0 > last_height {
            last_height = status.height.0;
            moved = Instant::now();
        } else if moved.elapsed() >= STALL_TIMEOUT {
            bail!("the chain stalled at height {last_height} for {} s", STALL_TIMEOUT.as_secs());
        }
        let view = lead.task(task_id)?;
        let phase = views::phase_name(view.summary.phase);
        phases.saw(phase);
        if view.report.is_some() {
            println!(
                "height {:>4}  task {task_id}: finalized at height {}",
                status.height, view.deadlines.score
            );
            println!("phase timings (as polled): {phases}");
            return Ok(view);
        }
        let resend = key_sent_at.is_none_or(|at| at.elapsed() >= KEY_RESEND);
        if view.summary.phase == Phase::Key && resend {
            let kind = TxKind::RevealHeldoutKey { task: TaskId(task_id), key };
            let hash = post_as_creator(plan, lead, kind)?;
            println!(
                "height {:>4}  task {task_id}: commit window closed; the creator reveals the \
                 held-out key (tx {})",
                status.height,
                hash.short()
            );
            key_sent_at = Some(Instant::now());
        }
        let line = progress(task_id, view.summary.phase, &view.deadlines, &view.submissions, names);
        if line != last_line {
            println!("height {:>4}  {line}", status.height);
            last_line = line;
        }
        interrupt::sleep(POLL_INTERVAL)?;
    }
}

/// When each phase of a task was first seen, to print how long each lasted.
#[derive(Debug, Default)]
struct PhaseClock {
    seen: Vec<(String, Instant)>,
}

impl PhaseClock {
    fn saw(&mut self, phase: &str) {
        if self.seen.last().is_none_or(|(last, _)| last != phase) {
            self.seen.push((phase.to_owned(), Instant::now()));
        }
    }
}

impl std::fmt::Display for PhaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .seen
            .windows(2)
            .map(|w| format!("{} {:.1} s", w[0].0, (w[1].1 - w[0].1).as_secs_f64()))
            .collect();
        if let (Some((_, first)), Some((_, last))) = (self.seen.first(), self.seen.last()) {
            parts.push(format!("task {:.1} s", (*last - *first).as_secs_f64()));
        }
        f.write_str(&parts.join(", "))
    }
}

/// One progress line: the task's phase, the deadline that ends it, and each trainer's step
/// (a joined trainer that has not committed yet is training).
pub fn progress(
    id: u64,
    phase: Phase,
    d: &DeadlinesView,
    submissions: &[SubmissionView],
    names: &BTreeMap<AccountId, &str>,
) -> String {
    let until = match phase {
        Phase::Join => Some(d.join),
        Phase::Commit => Some(d.commit),
        Phase::Key => Some(d.key),
        Phase::Reveal => Some(d.reveal),
        Phase::ScoreCommit => Some(d.score_commit),
        Phase::ScoreReveal => Some(d.score),
        Phase::Finalized => None,
    };
    let mut line = format!("task {id}: {}", views::phase_name(phase));
    if let Some(h) = until {
        line.push_str(&format!(" (until {h})"));
    }
    let mut trainers: Vec<String> = submissions
        .iter()
        .map(|s| {
            let name = names.get(&s.trainer).map_or_else(|| s.trainer.short(), |n| (*n).to_owned());
            let step = match client::stage(s) {
                Stage::Joined => "training",
                Stage::Committed => "committed",
                Stage::Revealed => "revealed",
            };
            format!("{name} {step}")
        })
        .collect();
    trainers.sort();
    if !trainers.is_empty() {
        line.push_str(" | ");
        line.push_str(&trainers.join(", "));
    }
    line
}

/// Waits until every running node has the block at `height`, then checks that all have the
/// same block hash and state root there.
fn check_agreement(
    supervisor: &mut Supervisor,
    nodes: &[(&str, &Client)],
    height: u64,
) -> anyhow::Result<()> {
    let mut blocks = Vec::with_capacity(nodes.len());
    for (name, client) in nodes {
        let block =
            wait(supervisor, CHAIN_TIMEOUT, &format!("{name} to reach height {height}"), || {
                Ok(client
                    .status()
                    .ok()
                    .filter(|s| s.height.0 >= height)
                    .and_then(|_| client.block(height).ok()))
            })?;
        blocks.push((*name, block));
    }
    let (first_name, first) = &blocks[0];
    for (name, block) in &blocks[1..] {
        ensure!(
            block.summary.hash == first.summary.hash && block.state_root == first.state_root,
            "{name} disagrees with {first_name} at height {height}: block {} state root {} vs \
             block {} state root {}",
            block.summary.hash,
            block.state_root,
            first.summary.hash,
            first.state_root
        );
    }
    println!(
        "agreement: all {} nodes have block {} and state root {} at height {height}",
        blocks.len(),
        first.summary.hash.short(),
        first.state_root.short()
    );
    Ok(())
}

/// Whether `path` names the node mode of this multi-call binary (`argv[0]` is `node`).
pub fn is_node_mode(arg0: &Path) -> bool {
    arg0.file_name().is_some_and(|n| n == NODE_ARG0)
}

#[cfg(test)]
mod tests {
    use consensus::types::Height;

    use super::*;

    #[test]
    fn ctrl_c_ends_a_kept_network_with_success_but_a_dead_node_fails_it() {
        let mut pauses = 0;
        let ended = until_interrupted(
            || {
                pauses += 1;
                if pauses == 3 { Err(interrupt::Interrupted) } else { Ok(()) }
            },
            || Ok(()),
        );
        assert!(ended.is_ok(), "{ended:?}");
        assert_eq!(pauses, 3);
        let interrupted_in_check =
            until_interrupted(|| Ok(()), || Err(interrupt::Interrupted.into()));
        assert!(interrupted_in_check.is_ok());
        let died = until_interrupted(|| Ok(()), || Err(anyhow::anyhow!("validator-1 exited")));
        assert_eq!(died.unwrap_err().to_string(), "validator-1 exited");
    }
    #[test]
    fn progress_names_trainers_and_the_phase_deadline() {
        let a = AccountId([1; 32]);
        let b = AccountId([2; 32]);
        let deadlines = DeadlinesView {
            join: Height(8),
            commit: Height(88),
            key: Height(90),
            reveal: Height(96),
            score_commit: Height(120),
            score: Height(128),
        };
        let joined = |trainer, commitment| SubmissionView {
            trainer,
            bond: 100,
            joined_at: Height(5),
            commitment,
            committed_at: None,
            reveal: None,
        };
        let submissions = [joined(b, Some(Hash([3; 32]))), joined(a, None)];
        let names = BTreeMap::from([(a, "trainer-0"), (b, "trainer-1")]);
        assert_eq!(
            progress(1, Phase::Commit, &deadlines, &submissions, &names),
            "task 1: commit (until 88) | trainer-0 training, trainer-1 committed"
        );
    }

    #[test]
    fn node_mode_is_chosen_by_argv0() {
        assert!(is_node_mode(Path::new("node")));
        assert!(is_node_mode(Path::new("/x/y/node")));
        assert!(!is_node_mode(Path::new("/x/testnet")));
    }
}
