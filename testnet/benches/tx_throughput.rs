//! Committed transactions per second and block time of a local network of validator processes
//! under a steady load of signed transfers.
//!
//! The network is the testnet's (same genesis parameters: blocks every 250 ms, 4 validators on
//! loopback), plus `--accounts` funded accounts that send transfers to each other. Every transfer
//! is signed before the clock starts; then a few client threads per validator post that
//! validator's share to its `POST /txs` at the offered rate for `--seconds`, each post a batch of
//! the txs already due (each account always through the same thread, so its nonces arrive in
//! order). The nodes gossip the transactions, and the validators
//! propose, vote on and commit blocks as usual. Afterwards the bench reads every block from the
//! first node's API and prints, per offered rate:
//! - committed txs/s: the load's transactions committed, over the time from the first submission
//!   to the block that committed the last one;
//! - the block time (header times) while the load ran: median, 90th percentile and maximum;
//! - transactions per block, how many blocks took more than one round to decide, and how many
//!   submissions the nodes refused;
//! - the CPU the nodes and the clients used while the load ran, as a share of the machine's
//!   cores, and so which process was the limit.
//!
//! This executable is also the node: started with `argv[0]` = `node` it runs `node::cli::main`,
//! as the `testnet` launcher does. Run with `cargo bench -p testnet --bench tx_throughput`;
//! `-- --rates 1000,3000 --seconds 20` changes the load; `-- --keep` keeps the network's directory
//! (configs, data dirs and node logs, at the level `RUST_LOG` sets, `warn` by default).

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use consensus::crypto::Keypair;
use consensus::genesis::GenesisBalance;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Amount, Nonce};
use node::http::views::BlockSummary;
use testnet::client::Client;
use testnet::network::{Network, Pace, node_or};
use testnet::plan::{Plan, Role, Settings, TaskSource, derive};

/// Validators, as in the default testnet.
const VALIDATORS: usize = 4;
/// Balance of each load account.
const LOAD_BALANCE: Amount = Amount(1_000_000_000);
/// Longest wait for the nodes to start and commit block 1, plus [`START_PER_1000_ACCOUNTS`].
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// More start-up time per 1000 load accounts: every node checks each genesis key (a subgroup
/// check, tens of microseconds) and writes its account before block 1.
const START_PER_1000_ACCOUNTS: Duration = Duration::from_secs(1);
/// Longest wait, after the load stops, for its last transactions to commit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Client threads posting to each node (each waits for its node's answer before its next post).
const SENDERS_PER_NODE: usize = 2;
/// Most transactions in one `POST /txs`: a sender posts every tx already due, up to this many.
const POST_BATCH_MAX: usize = 1_024;
/// Shortest time between one sender's posts, so each post carries a batch.
const POST_INTERVAL: Duration = Duration::from_millis(100);
/// Blocks read per `GET /blocks` page.
const PAGE: u32 = 100;

/// The load: offered rates, how long each runs, how many accounts send.
struct Load {
    rates: Vec<u32>,
    seconds: u32,
    accounts: usize,
    /// Keep the network's directory afterwards.
    keep: bool,
}

fn parse_args() -> anyhow::Result<Load> {
    let mut load =
        Load { rates: vec![2_500, 5_000, 6_000], seconds: 15, accounts: 100_000, keep: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rates" => {
                load.rates = value()?
                    .split(',')
                    .map(|r| r.trim().parse().context("--rates takes numbers, e.g. 1000,3000"))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--seconds" => load.seconds = value()?.parse().context("--seconds takes a number")?,
            "--accounts" => {
                load.accounts = value()?.parse().context("--accounts takes a number")?
            }
            "--keep" => load.keep = true,
            // `cargo bench` passes `--bench`; libtest-style flags mean nothing here.
            _ => {}
        }
    }
    ensure!(!load.rates.is_empty() && load.rates.iter().all(|&r| r > 0), "rates must be positive");
    ensure!(load.seconds > 0 && load.accounts >= VALIDATORS, "seconds and accounts too small");
    Ok(load)
}

fn main() -> ExitCode {
    node_or(|| parse_args().and_then(|load| run(&load)))
}

/// The load accounts' keys.
fn load_keys(count: usize) -> Vec<Keypair> {
    (0..count).map(|i| Keypair::from_seed(derive(0, &format!("bench/load/{i}")))).collect()
}

fn run(load: &Load) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("crucible-tx-bench-").tempdir()?;
    let dir = tmp.path().join("net");
    // The plan needs a task, which this bench never posts.
    let mut plan = Plan::new(Settings {
        validators: VALIDATORS,
        trainers: 1,
        seed: 1,
        rounds: 1,
        task: TaskSource::digits(),
    })?;
    let keys = load_keys(load.accounts);
    plan.genesis
        .balances
        .extend(keys.iter().map(|k| GenesisBalance { account: k.account(), amount: LOAD_BALANCE }));
    plan.genesis.validate().context("the bench's genesis is invalid")?;
    let thousands = u32::try_from(load.accounts / 1000).unwrap_or(u32::MAX);
    let start_timeout =
        START_TIMEOUT.saturating_add(START_PER_1000_ACCOUNTS.saturating_mul(thousands));
    let pace =
        Pace { ready: start_timeout, chain: start_timeout, poll: Duration::from_millis(200) };
    let node_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let mut net = Network::write(plan, &dir, pace, &node_log)?;

    // The validators only: the plan's trainer has no task to train for.
    let validators: Vec<usize> =
        (0..net.plan.nodes.len()).filter(|&i| net.plan.nodes[i].role == Role::Validator).collect();
    for &i in &validators {
        net.start(i)?;
    }
    let clients: Vec<Client> = validators.iter().map(|&i| net.clients[i].clone()).collect();
    let pids: Vec<u32> = validators.iter().filter_map(|&i| net.pid(i)).collect();
    net.wait(start_timeout, "every validator to reach height 1", || {
        clients.iter().all(|c| c.status().is_ok_and(|s| s.height.0 >= 1)).then_some(())
    })?;
    println!(
        "{VALIDATORS} validators on loopback, blocks every {} ms, {} load accounts, {} s per rate",
        net.plan.genesis.params.block_interval_ms, load.accounts, load.seconds
    );
    println!(
        "{:>8} {:>10} {:>9} {:>9} {:>14} {:>11} {:>9} {:>6} {:>9} {:>9} {:>9}  {:<38}",
        "offered",
        "submitted",
        "sent/s",
        "refused",
        "committed tx/s",
        "tx/block",
        "blocks",
        "late",
        "median",
        "p90",
        "max",
        "CPU while loaded (share of all cores)"
    );
    let mut nonces = vec![0u64; keys.len()];
    for &rate in &load.rates {
        let txs = sign_load(&net.plan.genesis.chain_id, &keys, rate, load.seconds, &mut nonces);
        let figures = measure(&clients, &pids, txs, keys.len(), rate, &mut net)?;
        println!(
            "{:>8} {:>10} {:>9.0} {:>9} {:>14.0} {:>11.0} {:>9} {:>6} {:>6} ms {:>6} ms {:>6} ms  {}",
            rate,
            figures.submitted,
            figures.sent_per_s,
            figures.refused,
            figures.committed_per_s,
            figures.txs_per_block,
            figures.block_times.len(),
            figures.late_rounds,
            percentile(&figures.block_times, 50),
            percentile(&figures.block_times, 90),
            percentile(&figures.block_times, 100),
            figures.cpu,
        );
        if let Some(error) = figures.first_refusal {
            println!("         first refusal: {error}");
        }
    }
    net.stop_all();
    if load.keep {
        println!("the network's directory is kept at {}", tmp.keep().display());
    }
    Ok(())
}

/// Transfers at `rate` for `seconds`, in submission order: transaction `i` is sent by account
/// `i % accounts` with that account's next nonce in `nonces` (which it advances).
fn sign_load(
    chain_id: &str,
    keys: &[Keypair],
    rate: u32,
    seconds: u32,
    nonces: &mut [u64],
) -> Vec<SignedTx> {
    let count = rate as usize * seconds as usize;
    (0..count)
        .map(|i| {
            let sender = i % keys.len();
            let to = keys[(i + 1) % keys.len()].account();
            let tx = Tx {
                chain_id: chain_id.into(),
                nonce: Nonce(nonces[sender]),
                kind: TxKind::Transfer { to, amount: Amount(1) },
            };
            nonces[sender] += 1;
            SignedTx::sign(&keys[sender], tx)
        })
        .collect()
}

/// What one offered rate achieved.
struct Figures {
    submitted: usize,
    /// Submissions per second actually achieved by the senders.
    sent_per_s: f64,
    refused: usize,
    first_refusal: Option<String>,
    committed_per_s: f64,
    txs_per_block: f64,
    /// Blocks committed while the load ran that were decided after round 0 (a proposal that did
    /// not gather a quorum in time).
    late_rounds: usize,
    /// Header-time gaps between consecutive blocks committed while the load ran, in ms, sorted.
    block_times: Vec<u64>,
    /// Where the CPU went while the load ran.
    cpu: CpuShares,
}

/// CPU used while the load ran, as shares of the machine's cores (1.0 = all of them busy).
struct CpuShares {
    nodes: Vec<f64>,
    clients: f64,
}

impl std::fmt::Display for CpuShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: f64 = self.nodes.iter().sum();
        let each: Vec<String> = self.nodes.iter().map(|n| format!("{:.0}%", n * 100.0)).collect();
        let limit = if nodes + self.clients < 0.85 {
            "neither: cores idle, latency-bound"
        } else if nodes >= 2.0 * self.clients {
            "nodes"
        } else {
            "clients"
        };
        write!(
            f,
            "nodes {:.0}% ({}), clients {:.0}%: limit {limit}",
            nodes * 100.0,
            each.join(" "),
            self.clients * 100.0
        )
    }
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // utime and stime are the 12th and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 =
        rest.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// Processes' CPU seconds over a span of wall time, as shares of every core.
fn cpu_shares(before: &[f64], after: &[f64], wall: Duration) -> Vec<f64> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    before.iter().zip(after).map(|(b, a)| (a - b) / wall.as_secs_f64() / cores).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Posts `txs` (transaction `i` from load account `i % accounts`) at `rate`, each account's to
/// one node in nonce order, waits for them to commit, and reads the blocks.
fn measure(
    clients: &[Client],
    pids: &[u32],
    txs: Vec<SignedTx>,
    accounts: usize,
    rate: u32,
    net: &mut Network,
) -> anyhow::Result<Figures> {
    let total = txs.len();
    let first_height = clients[0].status()?.height.0 + 1;
    // Transaction i goes to a sender of its account's node (each account always to the same
    // sender, so its nonces arrive in order); its send time is i / rate after the start.
    let senders = clients.len() * SENDERS_PER_NODE;
    let mut shares: Vec<Vec<(usize, SignedTx)>> = vec![Vec::new(); senders];
    for (i, tx) in txs.into_iter().enumerate() {
        shares[(i % accounts) % senders].push((i, tx));
    }
    let processes: Vec<String> =
        pids.iter().map(u32::to_string).chain(["self".to_owned()]).collect();
    let cpu_before: Vec<f64> = processes.iter().map(|p| cpu_seconds(p)).collect();
    let start = Instant::now();
    let start_ms = now_ms();
    let due = |i: usize| start + Duration::from_secs_f64(i as f64 / f64::from(rate));
    let results: Vec<(usize, usize, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(sender, share)| (share, &clients[sender % clients.len()]))
            .map(|(share, client)| {
                scope.spawn(move || {
                    let (mut sent, mut refused, mut first) = (0, 0, None);
                    let mut share = share.into_iter().peekable();
                    let mut last_post = start;
                    while let Some(&(next, _)) = share.peek() {
                        let at = due(next).max(last_post + POST_INTERVAL);
                        if let Some(wait) = at.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        last_post = Instant::now();
                        // Every tx already due, up to a batch.
                        let now = Instant::now();
                        let mut batch = Vec::new();
                        while batch.len() < POST_BATCH_MAX
                            && let Some((_, tx)) = share.next_if(|(i, _)| due(*i) <= now)
                        {
                            batch.push(tx);
                        }
                        sent += batch.len();
                        match client.post_txs(&batch) {
                            Ok(outcomes) => {
                                for error in outcomes.into_iter().filter_map(|o| o.error) {
                                    refused += 1;
                                    first.get_or_insert(error);
                                }
                            }
                            Err(error) => {
                                refused += batch.len();
                                first.get_or_insert_with(|| format!("{error:#}"));
                            }
                        }
                    }
                    (sent, refused, first)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a client thread panicked")).collect()
    });
    let load_end_ms = now_ms();
    let loaded = start.elapsed();
    let cpu_after: Vec<f64> = processes.iter().map(|p| cpu_seconds(p)).collect();
    let mut used = cpu_shares(&cpu_before, &cpu_after, loaded);
    let clients_share = used.pop().unwrap_or(0.0);
    let cpu = CpuShares { nodes: used, clients: clients_share };
    let sent_per_s = total as f64 / loaded.as_secs_f64();
    let submitted: usize = results.iter().map(|r| r.0).sum();
    let refused: usize = results.iter().map(|r| r.1).sum();
    let first_refusal = results.into_iter().find_map(|r| r.2);
    ensure!(submitted == total, "submitted {submitted} of {total}");
    let accepted = (submitted - refused) as u64;

    // Wait until the accepted transactions have all committed (or stop waiting for the rest).
    let drain_end = Instant::now() + DRAIN_TIMEOUT;
    let blocks = loop {
        net.alive()?;
        let blocks = read_blocks(&clients[0], first_height)?;
        let committed = blocks.iter().map(|b| b.tx_count as u64).sum::<u64>();
        if committed >= accepted || Instant::now() >= drain_end {
            break blocks;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let committed = blocks.iter().map(|b| b.tx_count as u64).sum::<u64>();
    let last = blocks.iter().rev().find(|b| b.tx_count > 0);
    let span_ms = last.map_or(1, |b| b.time_ms.saturating_sub(start_ms).max(1));
    let during: Vec<&BlockSummary> =
        blocks.iter().filter(|b| b.time_ms >= start_ms && b.time_ms <= load_end_ms).collect();
    let mut block_times: Vec<u64> =
        during.windows(2).map(|w| w[1].time_ms.saturating_sub(w[0].time_ms)).collect();
    block_times.sort_unstable();
    let mut late_rounds = 0;
    for block in &during {
        let commit = clients[0].block(block.height.0)?.commit;
        if commit.is_some_and(|c| c.round > 0) {
            late_rounds += 1;
        }
    }
    let with_txs = blocks.iter().filter(|b| b.tx_count > 0).count().max(1);
    Ok(Figures {
        submitted,
        sent_per_s,
        refused,
        first_refusal,
        committed_per_s: committed as f64 * 1000.0 / span_ms as f64,
        txs_per_block: committed as f64 / with_txs as f64,
        late_rounds,
        block_times,
        cpu,
    })
}

/// Every block from `from` to the node's tip.
fn read_blocks(client: &Client, from: u64) -> anyhow::Result<Vec<BlockSummary>> {
    let mut blocks = Vec::new();
    loop {
        let next = blocks.last().map_or(from, |b: &BlockSummary| b.height.0 + 1);
        let page = client.blocks(next, PAGE)?;
        let full = page.len() == PAGE as usize;
        blocks.extend(page);
        if !full {
            return Ok(blocks);
        }
    }
}

/// The `p`th percentile of sorted `values` (0 when empty).
fn percentile(values: &[u64], p: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values[((values.len() - 1) * p).div_ceil(100)]
}
