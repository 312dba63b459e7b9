//! `node ledger`: audit the chain stored in a data dir.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use consensus::chain::replay;
use consensus::genesis::{GENESIS_BYTES_MAX, Genesis};
use consensus::storage::SledStore;

use crate::datadir::DataDir;

/// Ledger subcommands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Replay the stored chain from genesis, recomputing every state root, transaction and
    /// reward, and say whether all of them match what the node stored.
    Verify {
        /// The node's data directory.
        #[arg(long, default_value = ".crucible")]
        data_dir: PathBuf,
        /// The genesis document (default: DATA_DIR/genesis.json).
        #[arg(long)]
        genesis: Option<PathBuf>,
    },
}

/// Runs a ledger subcommand.
pub fn run(cmd: LedgerCommand) -> anyhow::Result<()> {
    match cmd {
        LedgerCommand::Verify { data_dir, genesis } => {
            let dir = DataDir::new(data_dir);
            let genesis_path = genesis.unwrap_or_else(|| dir.genesis());
            let genesis = read_genesis(&genesis_path)?;
            let chain = dir.chain();
            if !chain.exists() {
                anyhow::bail!(
                    "no chain store at {}; is {} a node's data dir?",
                    chain.display(),
                    dir.root().display()
                );
            }
            let store = SledStore::open(&chain)
                .with_context(|| format!("opening the chain store at {}", chain.display()))?;
            let report = replay(&store, &genesis).with_context(|| {
                format!("the chain in {} does not replay from its genesis", dir.root().display())
            })?;
            println!(
                "ok: {} blocks replayed from genesis {}; every state root matches; state root {}",
                report.blocks,
                genesis.hash(),
                report.state_root
            );
            Ok(())
        }
    }
}

/// Reads and validates a genesis file, bounding its size before reading it.
pub fn read_genesis(path: &std::path::Path) -> anyhow::Result<Genesis> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading genesis {}", path.display()))?
        .len();
    if len > GENESIS_BYTES_MAX as u64 {
        anyhow::bail!(
            "genesis {} is {len} bytes, over the limit of {GENESIS_BYTES_MAX}",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading genesis {}", path.display()))?;
    Genesis::from_json(&text).with_context(|| format!("genesis {} is invalid", path.display()))
}
