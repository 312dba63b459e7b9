//! `testnet`: runs a whole local Crucible network with one command.
//!
//! A multi-call binary: started as `node` (its `argv[0]`), it is the node (`node::cli::main`), so
//! the launcher can start nodes from its own executable; `testnet node ARGS...` runs the node
//! command line too. Otherwise it parses its options, plans and runs a testnet, and owns the exit
//! code: 0 on success (also when a `--keep-running` network that passed is stopped with Ctrl-C),
//! 130 when interrupted before the run passed, 1 on any failure (the whole error chain printed).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use testnet::hosts::{LinkModel, netns};
use testnet::network::{NODE_ARG0, is_node_mode};
use testnet::plan::{LABEL_NOISE_DEFAULT, Plan, Settings, TaskSource};
use testnet::run::Options;
use testnet::{interrupt, run};
use trainer::task::DataKind;

/// Runs a local Crucible network: validators and trainers on loopback (or, with --hosts, each on
/// an emulated host of its own), one task posted, followed to finalization; prints the
/// leaderboard and payouts and checks that every node agrees.
#[derive(Debug, Parser)]
#[command(name = "testnet", version, about)]
struct Args {
    /// Validators to start.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Trainers to start (their recipes cycle through large-plain, small-filtered,
    /// small-augmented).
    #[arg(long, default_value_t = 3)]
    trainers: usize,
    /// Tasks to run one after another (1 or 2): the second keeps the first's held-out rows under
    /// a new salt and adds a trainer that fine-tunes the first task's champion.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Directory for keys, genesis, configs, recipes, task files and logs (must be empty or
    /// absent; default: a fresh temporary directory, kept and printed).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of every key, port, data split, label noise and recipe: one seed, one run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run the task on this data file instead of the digits (CSV of numeric features with an
    /// integer label last, or UTF-8 text with --kind char-lm).
    #[arg(long, requires = "kind")]
    data: Option<PathBuf>,
    /// What --data holds.
    #[arg(long, value_enum, requires = "data")]
    kind: Option<KindArg>,
    /// Share of public training labels flipped, in [0, 1) (default: 0.3 for the digits, 0 for
    /// --data).
    #[arg(long)]
    label_noise: Option<f64>,
    /// Keep the nodes running after the report, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// What the trainers differ in: `demo`, their recipes; `private-data`, four trainers with one
    /// recipe and different private clean slices of the data next to the noisy public file
    /// (A, B, C, and A+B pooled; `--trainers` is ignored).
    #[arg(long, value_enum, default_value_t = ScenarioArg::Demo)]
    scenario: ScenarioArg,
    /// Run every node on a host of its own (needs root): its own network namespace and IPv4
    /// address on one emulated Ethernet segment, no mDNS (peers come from the bootstrap list and
    /// Kademlia), and links with --latency-ms, --jitter-ms and --loss-percent emulated by a
    /// switch in this process (the kernel's netem is not needed).
    #[arg(long)]
    hosts: bool,
    /// With --hosts: one-way delay of every link between two hosts, in ms.
    #[arg(long, requires = "hosts", default_value_t = 50)]
    latency_ms: u64,
    /// With --hosts: each frame's delay is drawn uniformly from latency ± jitter, in ms (a link
    /// stays first in, first out).
    #[arg(long, requires = "hosts", default_value_t = 10)]
    jitter_ms: u64,
    /// With --hosts: share of frames each link drops, in percent.
    #[arg(long, requires = "hosts", default_value_t = 1.0)]
    loss_percent: f64,
    /// With --hosts: put the last N trainers each behind a NAT of its own (a home router that
    /// masquerades it, through iptables): they can dial out and cannot be dialed; AutoNAT, the
    /// validators' relays and DCUtR must do the rest. The run fails unless each learns it is
    /// private, and says how its artifact reached the validators.
    #[arg(long, requires = "hosts", default_value_t = 0)]
    nat_trainers: usize,
    /// With --hosts: put the last N validators each behind a NAT of its own, run with
    /// `behind_nat` (at least one stays public); peers reach them only over connections they
    /// open, through a relay or through a punched hole. The run fails unless each gets a NATed
    /// trainer's artifact from the trainer through a relay or a punched hole.
    #[arg(long, requires = "hosts", default_value_t = 0)]
    nat_validators: usize,
}

/// The trainers a run compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    /// Different recipes on the same noisy public data.
    Demo,
    /// One recipe, different private clean data of each trainer's own.
    PrivateData,
}

/// What a --data file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KindArg {
    /// CSV rows of numeric features with an integer label last (one header line).
    Classification,
    /// UTF-8 text for a character language model.
    CharLm,
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let task = match (&args.data, args.kind) {
        (Some(path), Some(kind)) => TaskSource {
            name: path
                .file_name()
                .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned()),
            bytes: trainer::data::read_bounded(path)
                .with_context(|| format!("reading --data {}", path.display()))?,
            kind: match kind {
                KindArg::Classification => DataKind::Classification,
                KindArg::CharLm => DataKind::CharLm,
            },
            label_noise: args.label_noise.unwrap_or(0.0),
        },
        _ => TaskSource {
            label_noise: args.label_noise.unwrap_or(LABEL_NOISE_DEFAULT),
            ..TaskSource::digits()
        },
    };
    Ok(Settings {
        validators: args.validators,
        trainers: args.trainers,
        seed: args.seed,
        rounds: args.rounds,
        task,
    })
}

/// The links of `--hosts`, if given.
fn link_model(args: &Args) -> anyhow::Result<Option<LinkModel>> {
    if !args.hosts {
        return Ok(None);
    }
    let model = LinkModel {
        latency: Duration::from_millis(args.latency_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        loss: args.loss_percent / 100.0,
    };
    model.validate().context("--latency-ms, --jitter-ms and --loss-percent")?;
    netns::require_root()?;
    Ok(Some(model))
}

fn launcher() -> anyhow::Result<()> {
    let args = Args::parse();
    let hosts = link_model(&args)?;
    let plan = match args.scenario {
        ScenarioArg::Demo => Plan::new(settings(&args)?)?,
        ScenarioArg::PrivateData => testnet::private::plan(settings(&args)?)?,
    };
    interrupt::install()?;
    let options = Options {
        dir: args.dir,
        keep_running: args.keep_running,
        hosts,
        nat_trainers: args.nat_trainers,
        nat_validators: args.nat_validators,
    };
    run::run(plan, &options)
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if is_node_mode(Path::new(&argv0)) {
        return node::cli::main();
    }
    let mut rest = std::env::args_os().skip(1);
    if rest.next().is_some_and(|a| a == NODE_ARG0) {
        // `testnet node ARGS...`: become the node, with `node` as argv[0].
        let err = match std::env::current_exe() {
            Ok(exe) => std::process::Command::new(exe).arg0(NODE_ARG0).args(rest).exec(),
            Err(e) => e,
        };
        eprintln!("error: running the node: {err}");
        return ExitCode::FAILURE;
    }
    match launcher() {
        Ok(()) => ExitCode::SUCCESS,
        // `run` already said so, before it stopped the nodes.
        Err(err) if err.downcast_ref::<interrupt::Interrupted>().is_some() => ExitCode::from(130),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
