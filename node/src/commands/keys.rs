//! `node keys`: create and show this node's key.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::keystore;

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key in the data dir (refuses to overwrite one).
    Generate {
        /// The node's data directory.
        #[arg(long, default_value = ".crucible")]
        data_dir: PathBuf,
    },
    /// Print the account id and libp2p PeerId of the key in the data dir.
    Show {
        /// The node's data directory.
        #[arg(long, default_value = ".crucible")]
        data_dir: PathBuf,
    },
}

/// Runs a key subcommand.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { data_dir } => {
            let key = keystore::create(&data_dir)
                .with_context(|| format!("creating a key in {}", data_dir.display()))?;
            println!("account: {}", key.account());
            println!("peer id: {}", keystore::peer_id(&key)?);
        }
        KeysCommand::Show { data_dir } => {
            let key = keystore::load(&data_dir)?;
            println!("account: {}", key.account());
            println!("peer id: {}", keystore::peer_id(&key)?);
        }
    }
    Ok(())
}
