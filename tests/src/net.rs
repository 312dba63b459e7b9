//! The suites' networks: [`Network`]s of node processes planned as the default testnet (or with
//! another task), at the tests' generous waits, with every node's log tail shown on failure.
//!
//! The nodes are the test executable re-run with `argv[0]` = `node` (see [`crate::suite`]), so
//! every test target that starts a [`Network`] must dispatch on `argv[0]` as
//! [`crate::suite::main`] does.

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use consensus::finalize::{FinalizationReport, Outcome};
use testnet::launch;
use testnet::network::{LOG_FILTER, Network, Pace};
use testnet::plan::{Plan, Role, Settings, TaskSource};
use testnet::report;

/// Longest wait for a node's API to answer after it starts.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a chain event that takes a few blocks (the first block, a posted task, a
/// node reaching a height, a restarted node catching up).
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a posted task to finalize (about 70 blocks of 250 ms, training and scoring
/// on a loaded two-core machine).
pub const FINALIZE_TIMEOUT: Duration = Duration::from_secs(300);
/// The suites' waits.
const PACE: Pace =
    Pace { ready: READY_TIMEOUT, chain: CHAIN_TIMEOUT, poll: Duration::from_millis(300) };
/// Log lines of each node shown when a scenario fails.
const LOG_LINES: usize = 15;

/// Plans the default testnet (the digits task with label noise) for `validators` and `trainers`
/// and writes its files into `dir`; starts nothing.
pub fn plan(dir: &Path, validators: usize, trainers: usize, seed: u64) -> anyhow::Result<Network> {
    plan_with(dir, validators, trainers, seed, TaskSource::digits())
}

/// As [`plan`], with the task made from `task` instead of the digits demo.
pub fn plan_with(
    dir: &Path,
    validators: usize,
    trainers: usize,
    seed: u64,
    task: TaskSource,
) -> anyhow::Result<Network> {
    let plan = Plan::new(Settings { validators, trainers, seed, rounds: 1, task })?;
    write(plan, dir)
}

/// Writes the files of `plan` (for instance one whose genesis a scenario extended) into `dir`, at
/// the suites' waits; starts nothing.
pub fn write(plan: Plan, dir: &Path) -> anyhow::Result<Network> {
    Network::write(plan, dir, PACE, LOG_FILTER)
}

/// The last lines of every node's log, and its warnings and errors.
fn logs(net: &Network) -> String {
    let mut out = String::new();
    for (name, log) in net.logs() {
        out.push_str(&format!("\n--- {name} ({}): warnings and errors\n", log.display()));
        for line in launch::problems(log, LOG_LINES) {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!("--- {name}: last lines\n{}\n", launch::tail(log, LOG_LINES)));
    }
    out
}

/// Runs `body` on a planned network; on failure, prints the error and then every node's log
/// tail (the nodes still run, so the logs show where each one stood).
pub fn with_logs<T>(
    net: &mut Network,
    body: impl FnOnce(&mut Network) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    body(net).inspect_err(|err| {
        eprintln!("error: {err:#}\nnode logs:{}", logs(net));
    })
}

/// Checks a finalization report: the task finalized (not a quorum failure), every trainer
/// joined, and payouts, refunds and burns add up to the escrow plus the trainers' bonds exactly.
pub fn check_report(net: &Network, report: &FinalizationReport) -> anyhow::Result<()> {
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
