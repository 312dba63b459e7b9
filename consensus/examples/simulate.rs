//! Runs the deterministic consensus simulator over many seeds and fault mixes.
//!
//! ```text
//! cargo run --release -p consensus --example simulate -- --seeds 2000
//! cargo run --release -p consensus --example simulate -- --mix chaos --seed 17   # replay one
//! ```
//!
//! Run with `--help` for the options. The last line is
//! `seeds: N, violations: V, heights committed: H`; the exit code is 1 when V > 0.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use consensus::bft::Mutant;
use consensus::bft::sim::{FaultMix, MIXES, SimConfig, SimOutcome, mutant_named, run};

const USAGE: &str = "\
Runs the deterministic consensus simulator over many seeds and fault mixes.

Usage: simulate [OPTIONS]

Options:
  --seeds N              seeds 0..N, cycling through every fault mix (default 2000)
  --from S               start the seeds at S instead of 0 (with --seeds N: S..S+N)
  --seed S               one seed
  --mix NAME             only this mix (calm, lossy, partition, crash, byzantine, lagging, chaos,
                         split, amnesia, swap, flood, disk, mayhem)
  --validators MIN..MAX  validators per run, drawn from this range (default 4..10)
  --mutant NAME          break the honest engines on purpose: no-locking, forget-lock,
                         quorum-floor, ignore-valid-round, no-body-check, trust-any-height,
                         unbounded-future, any-proposer, trust-valid-round, ignore-wal-corruption
  --no-wal               restart crashed validators with an empty log
  --heights H            heights every honest validator commits per run (default 20)
  --threads T            worker threads (default: every core)
  -h, --help             print this help";

struct Args {
    seeds: Vec<u64>,
    mix: Option<&'static FaultMix>,
    mutant: Option<Mutant>,
    wal_enabled: bool,
    heights: u64,
    validators: Option<(usize, usize)>,
    threads: usize,
}

/// What the command line asks for: a run, or the help text.
enum Command {
    Run(Args),
    Help,
}

fn range(flag: &str, v: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{flag} {v}: expected MIN..MAX with 1 <= MIN <= MAX, e.g. 4..50");
    let (min, max) = v.split_once("..").ok_or_else(bad)?;
    let (min, max): (usize, usize) =
        (min.parse().map_err(|_| bad())?, max.parse().map_err(|_| bad())?);
    if min == 0 || min > max {
        return Err(bad());
    }
    Ok((min, max))
}

fn parse() -> Result<Command, String> {
    let mut args = Args {
        seeds: Vec::new(),
        mix: None,
        mutant: None,
        wal_enabled: true,
        heights: 20,
        validators: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let (mut from, mut count) = (0u64, 2000u64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seeds" => count = number(value()?)?,
            "--from" => from = number(value()?)?,
            "--seed" => (from, count) = (number(value()?)?, 1),
            "--mix" => {
                let name = value()?;
                args.mix = Some(FaultMix::named(&name).ok_or(format!("unknown mix {name}"))?);
            }
            "--mutant" => {
                let name = value()?;
                args.mutant = Some(mutant_named(&name).ok_or(format!("unknown mutant {name}"))?);
            }
            "--validators" => args.validators = Some(range(&flag, &value()?)?),
            "--no-wal" => args.wal_enabled = false,
            "--heights" => args.heights = number(value()?)?,
            "--threads" => args.threads = number(value()?)?.max(1) as usize,
            "-h" | "--help" => return Ok(Command::Help),
            _ => return Err(format!("unknown option {flag} (see --help)")),
        }
    }
    args.seeds = (from..from.saturating_add(count)).collect();
    Ok(Command::Run(args))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Command::Run(a)) => a,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let configs: Vec<SimConfig> = args
        .seeds
        .iter()
        .map(|&seed| {
            let mix = args.mix.unwrap_or(&MIXES[(seed % MIXES.len() as u64) as usize]);
            let defaults = SimConfig::new(seed, mix);
            SimConfig {
                mutant: args.mutant,
                wal_enabled: args.wal_enabled,
                heights_target: args.heights,
                validators: args.validators.unwrap_or(defaults.validators),
                ..defaults
            }
        })
        .collect();
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<SimOutcome>> = Mutex::new(Vec::with_capacity(configs.len()));
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(config) = configs.get(i) else { break };
                    let outcome = run(config);
                    if let Some(v) = &outcome.violation {
                        eprintln!(
                            "VIOLATION mix {} seed {}: {v}\n  replay: {}",
                            config.mix.name,
                            config.seed,
                            config.replay_command()
                        );
                    }
                    outcomes.lock().expect("no worker panics").push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("no worker panics");
    outcomes.sort_by_key(|o| o.config.seed);
    for mix in MIXES {
        let of_mix: Vec<&SimOutcome> = outcomes.iter().filter(|o| o.config.mix == mix).collect();
        if of_mix.is_empty() {
            continue;
        }
        let failed = of_mix.iter().filter(|o| o.violation.is_some()).count();
        let heights: u64 = of_mix.iter().map(|o| o.heights).sum();
        let min = of_mix.iter().map(|o| o.heights).min().unwrap_or(0);
        let synced: u64 = of_mix.iter().map(|o| o.synced).sum();
        let evidence: u64 = of_mix.iter().map(|o| o.evidence).sum();
        let attacks: u64 = of_mix.iter().map(|o| o.attacks).sum();
        let refused: u64 = of_mix.iter().map(|o| o.refused_wals).sum();
        let peak_kib = of_mix.iter().map(|o| o.peak_peer_bytes).max().unwrap_or(0) / 1024;
        let sim_s: u64 = of_mix.iter().map(|o| o.time_ms).sum::<u64>() / 1000;
        println!(
            "mix {:<9} seeds {:>5}  violations {:>3}  heights {:>7} (min {:>3})  synced {:>5}  \
             evidence {:>5}  attacks {:>8}  refused WALs {:>4}  peak peer memory {:>5} KiB  \
             simulated {:>6} s",
            mix.name,
            of_mix.len(),
            failed,
            heights,
            min,
            synced,
            evidence,
            attacks,
            refused,
            peak_kib,
            sim_s
        );
    }
    if outcomes.len() == 1 {
        let o = &outcomes[0];
        println!("validators {}, steps {}, simulated {} ms", o.validators, o.steps, o.time_ms);
    }
    let validators = outcomes.iter().map(|o| o.validators);
    println!(
        "validators per run: {}..{}; wall time {:.1} s on {} threads",
        validators.clone().min().unwrap_or(0),
        validators.max().unwrap_or(0),
        started.elapsed().as_secs_f64(),
        args.threads
    );
    let violations = outcomes.iter().filter(|o| o.violation.is_some()).count();
    let heights: u64 = outcomes.iter().map(|o| o.heights).sum();
    println!("seeds: {}, violations: {violations}, heights committed: {heights}", outcomes.len());
    if violations > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
