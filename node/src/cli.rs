//! The command line: clap definitions and dispatch to one module per subcommand.
//!
//! `main` owns the exit code and prints the whole error chain; every subcommand is a thin
//! function over library code in `commands/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// Crucible node: train, validate and keep the ledger of an open training network.
#[derive(Debug, Parser)]
#[command(name = "node", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The node's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage this node's key.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Audit the chain stored in a data dir.
    #[command(subcommand)]
    Ledger(commands::ledger::LedgerCommand),
    /// Check and evaluate a model artifact on held-out data, as a validator would; prints JSON.
    Score(commands::score::ScoreArgs),
    /// Make tasks from data files.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// Train a model for a task with a recipe and write its safetensors artifact.
    Train(commands::train::TrainArgs),
}

/// Exit code for a failed command (bad input, missing file, failed check).
pub const EXIT_FAILURE: u8 = 1;

/// Parses the command line, runs the command and maps its result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(cmd) => commands::keys::run(cmd),
        Command::Ledger(cmd) => commands::ledger::run(cmd),
        Command::Score(args) => commands::score::run(args),
        Command::Task(cmd) => commands::task::run(cmd),
        Command::Train(args) => commands::train::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
