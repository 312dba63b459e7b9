//! The command line: clap definitions and dispatch to one module per subcommand.
//!
//! `node --role validator|trainer …` (no subcommand) runs a node; every other use is a
//! subcommand. `main` owns the exit code and prints the whole error chain; every subcommand is a
//! thin function over library code in `commands/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// Crucible node: train, validate and keep the ledger of an open training network.
///
/// Run a node with `node --role validator|trainer --data-dir DIR …`, or use a subcommand.
#[derive(Debug, Parser)]
#[command(name = "node", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a subcommand, run a node.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of a running node.
    #[command(flatten)]
    pub run: commands::run::RunArgs,
}

/// The node's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data dir: a new node key and a copy of the genesis.
    Init(commands::init::InitArgs),
    /// Manage this node's key.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Audit the chain stored in a data dir.
    #[command(subcommand)]
    Ledger(commands::ledger::LedgerCommand),
    /// Check and evaluate a model artifact on held-out data, as a validator would; prints JSON.
    Score(commands::score::ScoreArgs),
    /// Print a running node's status (its HTTP API's `GET /status`).
    Status(commands::status::StatusArgs),
    /// Hand a model trained elsewhere to a running trainer node (`--submit-dir`), which joins
    /// the task, commits, reveals and serves it; checked as a validator would first.
    Submit(commands::submit::SubmitArgs),
    /// Make tasks from data files, and post them to a running node.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// Train a model for a task with a recipe and write its safetensors artifact.
    Train(commands::train::TrainArgs),
    /// Sign transactions with a data dir's key and send them to a running node.
    #[command(subcommand)]
    Tx(commands::tx::TxCommand),
}

/// Exit code for a failed command (bad input, missing file, failed check).
pub const EXIT_FAILURE: u8 = 1;

/// Parses the command line, runs the command and maps its result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => commands::run::run(cli.run),
        Some(Command::Init(args)) => commands::init::run(args),
        Some(Command::Keys(cmd)) => commands::keys::run(cmd),
        Some(Command::Ledger(cmd)) => commands::ledger::run(cmd),
        Some(Command::Score(args)) => commands::score::run(args),
        Some(Command::Status(args)) => commands::status::run(args),
        Some(Command::Submit(args)) => commands::submit::run(args),
        Some(Command::Task(cmd)) => commands::task::run(cmd),
        Some(Command::Train(args)) => commands::train::run(args),
        Some(Command::Tx(cmd)) => commands::tx::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
