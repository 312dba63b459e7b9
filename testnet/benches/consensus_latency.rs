//! Block time of validators on separate hosts, by network size and link latency.
//!
//! Each case runs a network of validators only (no trainers, no task, no load) over the
//! `testnet --hosts` machinery: every validator in its own network namespace, the hosts joined by
//! the launcher's userspace switch with the case's one-way latency (± `--jitter-ms`, losing
//! `--loss-percent` of frames; see `testnet::hosts`), and the genesis timeouts fitted to the delay
//! as `testnet --hosts` fits them. After `--warmup` blocks it reads the next `--blocks` blocks from
//! the first validator's API and prints, per case, the block time from the header times (median,
//! 90th percentile and maximum), and how many of those blocks took more than one round. On a
//! zero-latency network a block takes the block interval (250 ms) plus the time to execute and
//! store it; each one-way hop of the proposal, the prevotes and the precommits adds to it.
//!
//! Needs root (network namespaces, veth pairs, raw sockets). This executable is also the node:
//! started with `argv[0]` = `node` it runs `node::cli::main`. Run with
//! `cargo bench -p testnet --bench consensus_latency`; `-- --validators 4,10 --latency-ms 50,150
//! --blocks 40` changes the cases; `-- --keep` keeps each network's directory (node logs at the
//! level `RUST_LOG` sets, `warn` by default).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, ensure};
use node::http::views::BlockSummary;
use testnet::client::Client;
use testnet::hosts::{DEFAULT_MODEL, LinkModel};
use testnet::network::{Network, Pace, node_or};
use testnet::plan::{Plan, Role, Settings, TaskSource};

/// Blocks read per `GET /blocks` page.
const PAGE: u32 = 100;

/// The cases and how long each runs.
struct Cases {
    validators: Vec<usize>,
    latencies_ms: Vec<u64>,
    jitter_ms: u64,
    loss_percent: f64,
    warmup: u64,
    blocks: u64,
    keep: bool,
}

fn list<T: std::str::FromStr>(value: &str, flag: &str) -> anyhow::Result<Vec<T>> {
    value
        .split(',')
        .map(|v| v.trim().parse().ok().with_context(|| format!("{flag} takes numbers, e.g. 4,10")))
        .collect()
}

fn parse_args() -> anyhow::Result<Cases> {
    let mut cases = Cases {
        validators: vec![4, 10],
        latencies_ms: vec![50, 150],
        jitter_ms: DEFAULT_MODEL.jitter.as_millis() as u64,
        loss_percent: DEFAULT_MODEL.loss * 100.0,
        warmup: 5,
        blocks: 40,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--validators" => cases.validators = list(&value()?, "--validators")?,
            "--latency-ms" => cases.latencies_ms = list(&value()?, "--latency-ms")?,
            "--jitter-ms" => cases.jitter_ms = value()?.parse().context("--jitter-ms")?,
            "--loss-percent" => cases.loss_percent = value()?.parse().context("--loss-percent")?,
            "--warmup" => cases.warmup = value()?.parse().context("--warmup")?,
            "--blocks" => cases.blocks = value()?.parse().context("--blocks")?,
            "--keep" => cases.keep = true,
            // `cargo bench` passes `--bench`; libtest-style flags mean nothing here.
            _ => {}
        }
    }
    ensure!(cases.blocks >= 2, "--blocks must be at least 2");
    ensure!(!cases.validators.is_empty() && !cases.latencies_ms.is_empty(), "no cases");
    Ok(cases)
}

fn main() -> ExitCode {
    node_or(|| parse_args().and_then(|cases| run(&cases)))
}

/// One case's figures.
struct Figures {
    /// Header-time gaps between consecutive blocks, in ms, sorted.
    block_times: Vec<u64>,
    /// Blocks decided after round 0.
    late_rounds: usize,
    /// The round timeouts of the case's genesis (propose, prevote/precommit), in ms.
    timeouts: (u64, u64),
}

fn run(cases: &Cases) -> anyhow::Result<()> {
    testnet::hosts::netns::require_root()?;
    println!(
        "validators on separate hosts (one network namespace each), links ± {} ms jitter and {} % \
         loss, blocks every {} ms; {} blocks after {} of warm-up",
        cases.jitter_ms,
        cases.loss_percent,
        testnet::plan::BLOCK_INTERVAL_MS,
        cases.blocks,
        cases.warmup
    );
    println!(
        "{:>10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>11}",
        "validators", "one-way", "timeouts", "median", "p90", "max", "late rounds"
    );
    for &validators in &cases.validators {
        for &latency in &cases.latencies_ms {
            let model = LinkModel {
                latency: Duration::from_millis(latency),
                jitter: Duration::from_millis(cases.jitter_ms.min(latency)),
                loss: cases.loss_percent / 100.0,
            };
            let f = measure(cases, validators, model)
                .with_context(|| format!("{validators} validators at {latency} ms"))?;
            println!(
                "{validators:>10} {:>7} ms {:>6}/{:<5} {:>7} ms {:>7} ms {:>7} ms {:>11}",
                latency,
                f.timeouts.0,
                f.timeouts.1,
                percentile(&f.block_times, 50),
                percentile(&f.block_times, 90),
                percentile(&f.block_times, 100),
                f.late_rounds
            );
        }
    }
    Ok(())
}

/// Runs one network and reads its block times.
fn measure(cases: &Cases, validators: usize, model: LinkModel) -> anyhow::Result<Figures> {
    let tmp = tempfile::Builder::new().prefix("crucible-latency-bench-").tempdir()?;
    let dir = tmp.path().join("net");
    // The plan needs a task and a trainer, which this bench never starts.
    let plan = Plan::new(Settings {
        validators,
        trainers: 1,
        seed: 1,
        rounds: 1,
        task: TaskSource::digits(),
    })?;
    let pace = Pace {
        ready: Duration::from_secs(120),
        chain: Duration::from_secs(120),
        poll: Duration::from_millis(200),
    };
    let node_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let mut net = Network::write_hosts(plan, &dir, pace, &node_log, model, &[])?;
    let params = &net.plan.genesis.params;
    let timeouts = (params.timeout_propose_ms, params.timeout_prevote_ms);
    let ids: Vec<usize> =
        (0..net.plan.nodes.len()).filter(|&i| net.plan.nodes[i].role == Role::Validator).collect();
    net.start_ready(&ids)?;
    let lead: Client = net.clients[0].clone();
    let first = net.wait_height(0, 1 + cases.warmup)?;
    let last = first + cases.blocks;
    // A block takes well under 5 s even at 150 ms: the bound only ends a stalled chain.
    let limit = Duration::from_secs(30 + 5 * cases.blocks);
    net.wait(limit, &format!("height {last}"), || {
        lead.status().ok().filter(|s| s.height.0 >= last).map(|_| ())
    })?;
    let blocks = read_blocks(&lead, first, last)?;
    let mut block_times: Vec<u64> =
        blocks.windows(2).map(|w| w[1].time_ms.saturating_sub(w[0].time_ms)).collect();
    block_times.sort_unstable();
    let mut late_rounds = 0;
    for block in &blocks[1..] {
        if lead.block(block.height.0)?.commit.is_some_and(|c| c.round > 0) {
            late_rounds += 1;
        }
    }
    net.stop_all();
    drop(net);
    if cases.keep {
        println!("  (kept {})", tmp.keep().display());
    }
    Ok(Figures { block_times, late_rounds, timeouts })
}

/// The blocks from `from` to `to`, both included.
fn read_blocks(client: &Client, from: u64, to: u64) -> anyhow::Result<Vec<BlockSummary>> {
    let mut blocks: Vec<BlockSummary> = Vec::new();
    while blocks.last().is_none_or(|b| b.height.0 < to) {
        let next = blocks.last().map_or(from, |b| b.height.0 + 1);
        let page = client.blocks(next, PAGE)?;
        ensure!(!page.is_empty(), "no block at height {next}");
        blocks.extend(page.into_iter().filter(|b| b.height.0 <= to));
    }
    Ok(blocks)
}

/// The `p`-th percentile of sorted `values` (0 when empty).
fn percentile(values: &[u64], p: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values[((values.len() - 1) * p).div_ceil(100)]
}
