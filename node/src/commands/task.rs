//! `node task`: make tasks. `node task new` splits a data file into a task directory and seals
//! its held-out part under a fresh key, kept in the creator's data dir; `node task create` posts
//! the task and serves the training and sealed files; `node task reveal-key` puts the key on
//! chain once the commit deadline has passed, so validators can open the sealed file and score.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use consensus::commitment::{HeldoutKey, Salt};
use trainer::task::{self, DataKind, LmArchitecture, TaskOptions};

/// Task subcommands.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Split a data file into a task: task.json, the public training part, the held-out part,
    /// its salt, and the held-out part sealed under a fresh key (kept in the creator's data dir).
    New(NewArgs),
    /// Post a task to a running node: upload its training and sealed files, then sign and send
    /// CreateTask.
    Create(CreateArgs),
    /// Reveal a task's held-out key (after its commit deadline, by its key deadline): validators
    /// then open the sealed file and score, and trainers reveal their models.
    RevealKey(RevealKeyArgs),
}

/// What kind of task a data file becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// CSV rows of numeric features with an integer label last (one header line).
    Classification,
    /// UTF-8 text for a character language model.
    CharLm,
}

/// Arguments of `node task new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The data file.
    #[arg(long)]
    pub data: PathBuf,
    /// The task's kind.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// Directory to write the task into (created; must not already hold a task.json).
    #[arg(long)]
    pub out: PathBuf,
    /// The creator's data dir: the held-out key is written beside its node key, in
    /// `heldout-keys/` (mode 0600). It never goes into the task directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Share of the data held out for scoring, in (0, 1).
    #[arg(long, default_value_t = task::HELDOUT_FRACTION_DEFAULT)]
    pub heldout_fraction: f64,
    /// Share of public training labels to flip to another class, in [0, 1); the held-out part
    /// stays clean.
    #[arg(long, default_value_t = 0.0)]
    pub label_noise: f64,
    /// The split seed. Without it the seed comes from the OS random source and is never written
    /// anywhere; give one only for demos and tests.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The task's name (default: the data file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Char LM: context length in characters.
    #[arg(long, default_value_t = LmArchitecture::default().context)]
    pub context: u32,
    /// Char LM: model width.
    #[arg(long, default_value_t = LmArchitecture::default().d_model)]
    pub d_model: u32,
    /// Char LM: transformer blocks.
    #[arg(long, default_value_t = LmArchitecture::default().layers)]
    pub layers: u32,
    /// Char LM: attention heads.
    #[arg(long, default_value_t = LmArchitecture::default().heads)]
    pub heads: u32,
}

/// Runs a task subcommand.
pub fn run(cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::New(args) => new(args),
        TaskCommand::Create(args) => create(args),
        TaskCommand::RevealKey(args) => reveal_key(args),
    }
}

/// Arguments of `node task reveal-key`.
#[derive(Debug, Args)]
pub struct RevealKeyArgs {
    /// The task's id on the chain.
    #[arg(long)]
    pub id: u64,
    /// The task's spec (`task.json`): its `dataset.key_commitment` names the key file.
    #[arg(long)]
    pub task: PathBuf,
    /// The creator's data dir (its key signs; its `heldout-keys/` holds the key).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub node: String,
}

/// Loads the task's held-out key from the creator's data dir and posts `RevealHeldoutKey`.
fn reveal_key(args: RevealKeyArgs) -> anyhow::Result<()> {
    let spec = task::read_spec(&args.task)?;
    let key = crate::keystore::load_heldout_key(&args.data_dir, &spec.dataset.key_commitment)?;
    let client = super::client(&args.node)?;
    let kind =
        consensus::tx::TxKind::RevealHeldoutKey { task: consensus::types::TaskId(args.id), key };
    let hash = super::tx::sign_and_post(&client, &args.data_dir, kind, None)?;
    println!("tx:        {hash}");
    Ok(())
}

/// Fails unless `bytes` (read from `path`) has the sha256 that `task_file` names for its `what`.
fn check_sha(
    bytes: &[u8],
    path: &std::path::Path,
    task_file: &std::path::Path,
    expected: consensus::types::Hash,
    what: &str,
) -> anyhow::Result<()> {
    let sha = consensus::hash::sha256(bytes);
    if sha != expected {
        bail!(
            "{} has sha256 {sha}, but {} names {expected}; pass the task's own {what}",
            path.display(),
            task_file.display(),
        );
    }
    Ok(())
}

/// Arguments of `node task create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The task's spec (`task.json`, as `node task new` wrote it).
    #[arg(long)]
    pub task: PathBuf,
    /// The public training file whose sha256 the spec names.
    #[arg(long)]
    pub train: PathBuf,
    /// The sealed held-out file (`heldout.sealed`) whose sha256 the spec names; the node serves
    /// it to validators, who attest to holding it in the join window.
    #[arg(long)]
    pub sealed: PathBuf,
    /// The reward escrowed for the task, in base units.
    #[arg(long)]
    pub reward: u64,
    /// The entry fee each trainer burns when it joins, in base units (replaces the spec's).
    /// The chain requires `max_trainers × entry_fee` to cover the trainer share of the reward;
    /// a lower fee is refused with the least one that would do.
    #[arg(long)]
    pub entry_fee: Option<u64>,
    /// The data dir whose key signs (and pays).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The node's HTTP API (it stores and provides the training file).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub node: String,
}

/// Uploads the training and sealed files (`POST /blobs`), then signs CreateTask and posts it
/// (`POST /txs`).
fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut spec = task::read_spec(&args.task)?;
    if let Some(fee) = args.entry_fee {
        spec.entry_fee = consensus::types::Amount(fee);
    }
    let client = super::client(&args.node)?;
    let train = trainer::data::read_bounded(&args.train)?;
    let sealed = trainer::data::read_bounded(&args.sealed)?;
    let dataset = &spec.dataset;
    check_sha(&train, &args.train, &args.task, dataset.train_sha256, "training file")?;
    let expected = dataset.heldout_cipher_sha256;
    check_sha(&sealed, &args.sealed, &args.task, expected, "sealed held-out file")?;
    client.post_task_files(&train, &sealed)?;
    for (path, bytes) in [(&args.train, &train), (&args.sealed, &sealed)] {
        let sha = consensus::hash::sha256(bytes);
        println!("uploaded:  {} ({} bytes, sha256 {sha})", path.display(), bytes.len());
    }
    let kind = consensus::tx::TxKind::CreateTask {
        spec: Box::new(spec),
        reward: consensus::types::Amount(args.reward),
    };
    let hash = super::tx::sign_and_post(&client, &args.data_dir, kind, None)?;
    println!("tx:        {hash}");
    Ok(())
}

fn new(args: NewArgs) -> anyhow::Result<()> {
    let [spec_path, ..] = task::paths(&args.out, "");
    if spec_path.exists() {
        bail!("{} already exists; choose another --out", spec_path.display());
    }
    let bytes = trainer::data::read_bounded(&args.data)?;
    let name = match args.name {
        Some(name) => name,
        None => args
            .data
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("the data path has no file name; pass --name")?,
    };
    let seed = match args.seed {
        Some(seed) => seed,
        None => {
            let mut buf = [0u8; 8];
            getrandom::fill(&mut buf).context("reading the OS random source")?;
            u64::from_le_bytes(buf)
        }
    };
    let opts = TaskOptions {
        name,
        kind: match args.kind {
            KindArg::Classification => DataKind::Classification,
            KindArg::CharLm => DataKind::CharLm,
        },
        heldout_fraction: args.heldout_fraction,
        label_noise: args.label_noise,
        seed,
        lm: LmArchitecture {
            context: args.context,
            d_model: args.d_model,
            layers: args.layers,
            heads: args.heads,
        },
    };
    let salt = Salt::random().context("reading the OS random source")?;
    let key = HeldoutKey::random().context("reading the OS random source")?;
    let made = task::new_task(&bytes, &args.data.display().to_string(), &opts, salt, &key)?;
    // The key is on disk before anything names its commitment.
    let key_path = crate::keystore::save_heldout_key(&args.data_dir, &key)?;
    let files = task::write(&args.out, &made)?;
    let unit = if made.extension == "csv" { "rows" } else { "characters" };
    println!("task:      {}", files[0].display());
    println!("train:     {} ({} {unit})", files[1].display(), made.sizes.0);
    println!(
        "held-out:  {} ({} {unit}; give it only to validators)",
        files[2].display(),
        made.sizes.1
    );
    println!("salt:      {}", files[3].display());
    println!(
        "sealed:    {} (serve it: validators attest to holding it in the join window)",
        files[4].display()
    );
    println!(
        "key:       {} (keep it; reveal it with `node task reveal-key` after the commit deadline)",
        key_path.display()
    );
    if made.flipped > 0 {
        println!("label noise: flipped {} public training labels", made.flipped);
    }
    println!("train sha256:        {}", made.spec.dataset.train_sha256);
    println!("held-out commitment: {}", made.spec.dataset.heldout_commitment);
    println!("sealed sha256:       {}", made.spec.dataset.heldout_cipher_sha256);
    println!("key commitment:      {}", made.spec.dataset.key_commitment);
    Ok(())
}
