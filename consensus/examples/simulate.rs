//! Runs the deterministic consensus simulator over many seeds and fault mixes.
//!
//! ```text
//! cargo run --release -p consensus --example simulate -- --seeds 2000
//! cargo run --release -p consensus --example simulate -- --mix chaos --seed 17   # replay one
//! ```
//!
//! Options: `--seeds N` (seeds 0..N, cycling through every fault mix), `--seed S` (one seed),
//! `--mix NAME` (only this mix), `--mutant NAME` (no-locking, forget-lock, quorum-floor,
//! ignore-valid-round), `--no-wal` (restart crashed validators with an empty log), `--heights H`
//! (heights per run, default 20), `--threads T`. The last line is
//! `seeds: N, violations: V, heights committed: H`; the exit code is 1 when V > 0.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use consensus::bft::Mutant;
use consensus::bft::sim::{FaultMix, MIXES, SimConfig, SimOutcome, run};

struct Args {
    seeds: Vec<u64>,
    mix: Option<&'static FaultMix>,
    mutant: Option<Mutant>,
    wal_enabled: bool,
    heights: u64,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: (0..2000).collect(),
        mix: None,
        mutant: None,
        wal_enabled: true,
        heights: 20,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seeds" => args.seeds = (0..number(value()?)?).collect(),
            "--seed" => args.seeds = vec![number(value()?)?],
            "--mix" => {
                let name = value()?;
                args.mix = Some(FaultMix::named(&name).ok_or(format!("unknown mix {name}"))?);
            }
            "--mutant" => {
                let name = value()?;
                args.mutant = Some(match name.as_str() {
                    "no-locking" => Mutant::NoLocking,
                    "forget-lock" => Mutant::ForgetLockOnRestart,
                    "quorum-floor" => Mutant::QuorumFloor,
                    "ignore-valid-round" => Mutant::IgnoreValidRound,
                    _ => return Err(format!("unknown mutant {name}")),
                });
            }
            "--no-wal" => args.wal_enabled = false,
            "--heights" => args.heights = number(value()?)?,
            "--threads" => args.threads = number(value()?)?.max(1) as usize,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let configs: Vec<SimConfig> = args
        .seeds
        .iter()
        .map(|&seed| {
            let mix = args.mix.unwrap_or(&MIXES[(seed % MIXES.len() as u64) as usize]);
            SimConfig {
                mutant: args.mutant,
                wal_enabled: args.wal_enabled,
                heights_target: args.heights,
                ..SimConfig::new(seed, mix)
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
        let sim_s: u64 = of_mix.iter().map(|o| o.time_ms).sum::<u64>() / 1000;
        println!(
            "mix {:<10} seeds {:>5}  violations {:>3}  heights {:>7} (min {:>3} per seed)  \
             synced {:>5}  evidence {:>5}  simulated {:>6} s",
            mix.name,
            of_mix.len(),
            failed,
            heights,
            min,
            synced,
            evidence,
            sim_s
        );
    }
    if outcomes.len() == 1 {
        let o = &outcomes[0];
        println!("validators {}, steps {}, simulated {} ms", o.validators, o.steps, o.time_ms);
    }
    let violations = outcomes.iter().filter(|o| o.violation.is_some()).count();
    let heights: u64 = outcomes.iter().map(|o| o.heights).sum();
    println!("seeds: {}, violations: {violations}, heights committed: {heights}", outcomes.len());
    if violations > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
