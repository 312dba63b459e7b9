//! One testnet run: write the plan, start the nodes, post the task, follow it to finalization,
//! report, check that every node agrees, stop.
//!
//! Every wait is bounded and checks that no node died; a failure after the nodes start prints the
//! last lines of every node's log before the error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use consensus::finalize::{FinalizationReport, Outcome};
use consensus::state::Phase;
use consensus::task::BaseModel;
use consensus::types::AccountId;
use node::client::KeyReveal;
use node::http::views::{self, DeadlinesView, SubmissionView, TaskDetail};

use crate::client::{self, Stage};
use crate::files;
use crate::hosts::{self, LinkModel};
use crate::interrupt;
use crate::launch;
use crate::network::{LOG_FILTER, Network, NodeExited, Pace};
use crate::plan::{self, BLOCK_INTERVAL_MS, Plan};
use crate::report::{self, Label, Labels};

/// The launcher's waits: for every node's API to answer after start (`ready`); for the first
/// blocks, for the posted task to appear, and for every node to reach the height after
/// finalization (`chain`).
pub const PACE: Pace = Pace {
    ready: Duration::from_secs(60),
    chain: Duration::from_secs(60),
    poll: Duration::from_millis(100),
};
/// Longest time the chain may stand still before the run fails.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines shown per node on a failure.
pub const FAILURE_LOG_LINES: usize = 12;

/// What one run does beyond its plan.
#[derive(Clone, Debug)]
pub struct Options {
    /// The directory to write into; a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// Keep the nodes running after the report, until Ctrl-C.
    pub keep_running: bool,
    /// Run every node on a host of its own, with links following this model (`--hosts`, see
    /// [`crate::hosts`]); on loopback when `None`.
    pub hosts: Option<LinkModel>,
    /// With `hosts`: how many trainers (the last ones) run behind a NAT of their own.
    pub nat_trainers: usize,
    /// With `hosts`: how many validators (the last ones) run behind a NAT of their own; at least
    /// one stays public.
    pub nat_validators: usize,
}

/// Runs a whole testnet from `plan`.
pub fn run(plan: Plan, options: &Options) -> anyhow::Result<()> {
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("crucible-testnet-")
            .tempdir()
            .context("creating a temporary directory")?
            .keep(),
    };
    let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| LOG_FILTER.into());
    let mut net = match options.hosts {
        None => Network::write(plan, &dir, PACE, &log_filter)?,
        Some(model) => {
            let mut behind_nat = Vec::new();
            for (role, count, public) in [
                (plan::Role::Trainer, options.nat_trainers, 0),
                // Validators behind NATs need a public one to dial and to relay for them.
                (plan::Role::Validator, options.nat_validators, 1),
            ] {
                let of_role: Vec<usize> =
                    (0..plan.nodes.len()).filter(|&i| plan.nodes[i].role == role).collect();
                ensure!(
                    count + public <= of_role.len(),
                    "--nat-{}s {count} but the network has {} {}s{}",
                    role.as_str(),
                    of_role.len(),
                    role.as_str(),
                    if public > 0 { " and one must stay public" } else { "" }
                );
                behind_nat.extend(&of_role[of_role.len() - count..]);
            }
            Network::write_hosts(plan, &dir, PACE, &log_filter, model, &behind_nat)?
        }
    };
    let plan = &net.plan;
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
    say_hosts(&net)?;
    let result = drive(&mut net, options.keep_running);
    if let Err(err) = &result
        && err.downcast_ref::<interrupt::Interrupted>().is_none()
    {
        if let Some(exited) = err.downcast_ref::<NodeExited>() {
            eprintln!("\nlast lines of {} ({}):", exited.name, exited.log.display());
            eprintln!("{}", launch::tail(&exited.log, FAILURE_LOG_LINES * 2));
        }
        eprintln!("\nlast warnings and errors of each node:");
        for (name, log) in net.logs() {
            let problems = launch::problems(log, FAILURE_LOG_LINES);
            eprintln!("--- {name} ({})", log.display());
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
    let stopped = net.stop_all();
    if let Some(segment) = net.segment() {
        let s = segment.stats();
        println!(
            "switch: {} frames received, {} delivered, {} lost to the emulated loss ({:.2} %), \
             {} dropped by full links, {} malformed, {} failed to send",
            s.received,
            s.delivered,
            s.lost,
            100.0 * s.lost as f64 / (s.delivered + s.lost).max(1) as f64,
            s.overflow,
            s.malformed,
            s.send_failed
        );
    }
    println!("stopped {stopped} nodes; files and logs in {}", dir.display());
    result
}

/// Says where each node listens (its multiaddr with its PeerId, what its peers dial) and, with
/// `--hosts`, which namespace it runs in and how the links behave.
fn say_hosts(net: &Network) -> anyhow::Result<()> {
    if let Some(segment) = net.segment() {
        let m = segment.model();
        println!(
            "  hosts: one network namespace per node on an emulated segment ({}/{}); links \
             {} ms ± {} ms one way, {} % loss; round timeouts {} / {} / {} ms (+{} per round)",
            hosts::SUBNET,
            hosts::PREFIX_LEN,
            m.latency.as_millis(),
            m.jitter.as_millis(),
            m.loss * 100.0,
            net.plan.genesis.params.timeout_propose_ms,
            net.plan.genesis.params.timeout_prevote_ms,
            net.plan.genesis.params.timeout_precommit_ms,
            net.plan.genesis.params.timeout_delta_ms
        );
    }
    for (i, node) in net.plan.nodes.iter().enumerate() {
        let host =
            net.segment().map(|s| format!(" (netns {})", s.namespace(i))).unwrap_or_default();
        println!("  {:<12} {}{host}", node.name, net.p2p_addr(i)?);
    }
    Ok(())
}

/// With nodes behind NATs: what AutoNAT told each, the relays it listens through, and how each
/// validator and each other NATed node is connected to it; then, for each NATed trainer that
/// revealed, which connections its artifact reached each validator over. A NATed trainer opens
/// its connections to public validators itself, from behind its NAT; a validator behind a NAT of
/// its own can reach it only through a relay or a hole punched through both NATs. Fails unless
/// each NATed node found itself private (the NAT would then not be one, or AutoNAT not work),
/// and unless each NATed validator got at least one such artifact from its trainer by one of
/// those two ways. (Not every one: a validator may fetch an artifact from a validator that
/// re-provides it, and that race is no fault.)
fn say_nat(net: &Network, report: &FinalizationReport) -> anyhow::Result<()> {
    let Some(segment) = net.segment() else { return Ok(()) };
    let behind_nat = |j: usize| segment.behind_nat(j);
    let nodes = &net.plan.nodes;
    let is_validator = |j: usize| nodes[j].role == plan::Role::Validator;
    // NATed validators that had a NATed trainer's artifact to fetch, and whether one came from
    // its trainer.
    let mut fetched_from_nat: BTreeMap<usize, bool> = BTreeMap::new();
    for i in (0..nodes.len()).filter(|&i| behind_nat(i)) {
        let name = &nodes[i].name;
        let status = net.clients[i].status()?;
        let circuits: Vec<&String> =
            status.listen_addrs.iter().filter(|a| a.contains("/p2p-circuit")).collect();
        println!(
            "{name} is behind a NAT ({} behind {}): {} {}; it listens through {} relays",
            hosts::LAN_HOST,
            hosts::host_addr(i),
            if is_validator(i) { "it runs with behind_nat, so it is" } else { "AutoNAT says" },
            status.reachability,
            circuits.len()
        );
        for circuit in &circuits {
            println!("    {circuit}");
        }
        ensure!(
            status.reachability == "private",
            "{name} runs behind a NAT but AutoNAT says it is {}",
            status.reachability
        );
        let revealed =
            report.trainers.iter().any(|t| t.params.is_some() && t.account == status.account);
        for v in (0..nodes.len()).filter(|&v| v != i && (is_validator(v) || behind_nat(v))) {
            let peers: Vec<views::PeerView> = net.clients[v].get("/peers")?;
            let peer = peers.iter().find(|p| p.peer_id == status.peer_id);
            let links = peer.map_or_else(
                || "not connected".to_string(),
                |p| {
                    let links = p.connections.iter().map(|c| match (c.relayed, behind_nat(v)) {
                        (true, _) => format!("relayed ({})", c.address),
                        (false, true) => {
                            format!("direct, a hole punched through both NATs ({})", c.address)
                        }
                        (false, false) if c.outbound => format!(
                            "direct, dialed by {} through a punched hole ({})",
                            nodes[v].name, c.address
                        ),
                        (false, false) => {
                            format!("direct, opened by {name} through its NAT (from {})", c.address)
                        }
                    });
                    links.collect::<Vec<_>>().join("; ")
                },
            );
            println!("  {:<12} to {name}: {links}", nodes[v].name);
            if !(revealed && is_validator(v)) {
                continue;
            }
            let bytes = peer.map(|p| p.blob_bytes_received);
            let (direct, relayed) = bytes.map_or((0, 0), |b| (b.direct, b.relayed));
            let how = match (behind_nat(v), direct, relayed) {
                (_, 0, 0) => "none from it (fetched from another provider)",
                (true, _, 0) => "through the hole punched through both NATs",
                (true, 0, _) => "through a relay",
                (true, _, _) => "through a relay, then the hole punched through both NATs",
                (false, _, _) => "over a connection the trainer opened through its NAT",
            };
            println!(
                "  {:<12} got {name}'s artifact {how}: {direct} bytes direct, {relayed} relayed",
                nodes[v].name
            );
            if behind_nat(v) {
                *fetched_from_nat.entry(v).or_default() |= direct + relayed > 0;
            }
        }
    }
    for (v, reached) in fetched_from_nat {
        ensure!(
            reached,
            "{} is behind a NAT and got no NATed trainer's artifact from the trainer itself \
             (neither through a relay nor through a punched hole)",
            nodes[v].name
        );
    }
    Ok(())
}

/// The plan nodes that join in `round`.
fn joining(net: &Network, round: u32) -> Vec<usize> {
    (0..net.plan.nodes.len()).filter(|&i| net.plan.nodes[i].first_round == round).collect()
}

/// Says which nodes started, where their logs are.
fn say_started(net: &Network, nodes: &[usize]) {
    let names: Vec<&str> = nodes.iter().map(|&i| net.plan.nodes[i].name.as_str()).collect();
    println!("started {} (logs: {}/<node>.log)", names.join(", "), net.layout.dir.display());
}

fn drive(net: &mut Network, keep_running: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let first = joining(net, 1);
    net.start_ready(&first)?;
    say_started(net, &first);
    println!(
        "all nodes answer ({:.1} s); waiting for the first block",
        started.elapsed().as_secs_f64()
    );
    println!("explorer: {}/", net.layout.urls[0]);
    net.wait_height(0, 1)?;
    let names: BTreeMap<AccountId, String> =
        net.plan.nodes.iter().map(|n| (n.account(), n.name.clone())).collect();
    let labels: Labels = net
        .plan
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
    for round in 1..=net.plan.tasks.len() as u32 {
        let mut spec = net.plan.tasks[round as usize - 1].spec.clone();
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
            files::write_spec(&net.layout.task_dirs[round as usize - 1], &spec)?;
            let late = joining(net, round);
            net.start_ready(&late)?;
            say_started(net, &late);
            // A node started late has caught up with the chain.
            let tip = net.wait_height(0, 0)?;
            for &i in &late {
                net.wait_height(i, tip)?;
            }
        }
        let posted = net.post(round, &spec)?;
        println!(
            "posted task {:?} with reward {} (tx {})",
            spec.name,
            net.plan.reward,
            posted.tx.short()
        );
        let task_id = posted.id;
        let w = spec.windows;
        let blocks = w.join + w.commit + w.key + w.reveal + w.score_commit + w.score_reveal;
        println!(
            "following task {task_id} (posted at {:.1} s): its windows last at most {blocks} \
             blocks, about {} s at {BLOCK_INTERVAL_MS} ms per block, and each closes once \
             everyone who may act in it has",
            started.elapsed().as_secs_f64(),
            blocks * BLOCK_INTERVAL_MS / 1_000
        );
        let key = KeyReveal::new(task_id, plan::heldout_key(net.plan.settings.seed, round));
        let view = follow(net, task_id, key, &names)?;
        let report = client::report(&view)?.expect("follow returns a finalized task");
        let report = &report;
        let reward = net.plan.reward;
        println!();
        print!(
            "{}",
            report::leaderboard(
                &format!("{task_id} ({})", view.summary.name),
                report,
                reward,
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
        let total = report::check_conservation(report, reward, spec.entry_fee)
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
        let height = view.deadlines.score.0 + 1;
        let block = net.agreement(height)?;
        let running = (0..net.plan.nodes.len()).filter(|&i| net.is_running(i)).count();
        println!(
            "agreement: all {running} nodes have block {} and state root {} at height {height}",
            block.summary.hash.short(),
            block.state_root.short()
        );
        let first = net.clients[0].block(1)?.summary;
        let blocks = block.summary.height.0 - first.height.0;
        let span_ms = block.summary.time_ms.saturating_sub(first.time_ms);
        println!(
            "block time: {blocks} blocks in {:.1} s since block 1, {} ms per block (header times)",
            span_ms as f64 / 1_000.0,
            span_ms / blocks.max(1)
        );
        say_nat(net, report)?;
        champion = report
            .champion
            .as_ref()
            .map(|c| BaseModel { model_hash: c.model_hash, params: c.params });
    }
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    if keep_running {
        println!("nodes keep running; APIs:");
        for (node, url) in net.plan.nodes.iter().zip(&net.layout.urls) {
            println!("  {:<12} {url}/status", node.name);
        }
        println!("press Ctrl-C to stop them");
        until_interrupted(|| interrupt::sleep(PACE.poll), || net.alive())?;
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

/// Follows a task until it has a finalization report, printing a line whenever its phase or a
/// trainer's progress changes, and, as its creator, reveals the held-out key (`key`) once the
/// task is in its key window; fails if the chain stalls.
fn follow(
    net: &mut Network,
    task_id: u64,
    mut key: KeyReveal,
    names: &BTreeMap<AccountId, String>,
) -> anyhow::Result<TaskDetail> {
    let lead = net.clients[0].clone();
    let creator = net.plan.creator();
    let mut phases = PhaseClock::default();
    let mut last_line = String::new();
    let mut last_height = 0;
    let mut moved = Instant::now();
    loop {
        net.alive()?;
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
        if let Some(hash) = key.poll(&lead, &creator, &net.plan.genesis.chain_id, &view)? {
            println!(
                "height {:>4}  task {task_id}: commit window closed; the creator reveals the \
                 held-out key (tx {})",
                status.height,
                hash.short()
            );
        }
        let line = progress(task_id, view.summary.phase, &view.deadlines, &view.submissions, names);
        if line != last_line {
            println!("height {:>4}  {line}", status.height);
            last_line = line;
        }
        interrupt::sleep(PACE.poll)?;
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
    names: &BTreeMap<AccountId, String>,
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
            let name = names.get(&s.trainer).map_or_else(|| s.trainer.short(), Clone::clone);
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

#[cfg(test)]
mod tests {
    use consensus::types::{Hash, Height};

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
        let names = BTreeMap::from([(a, "trainer-0".into()), (b, "trainer-1".into())]);
        assert_eq!(
            progress(1, Phase::Commit, &deadlines, &submissions, &names),
            "task 1: commit (until 88) | trainer-0 training, trainer-1 committed"
        );
    }
}
