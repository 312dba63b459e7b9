//! `node ledger`: audit the chain stored in a data dir; fetch a state proof from a node and
//! check one offline, as a light client.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use consensus::chain::{StateProofBundle, record_json, replay};
use consensus::genesis::{GENESIS_BYTES_MAX, Genesis};
use consensus::storage::SledStore;

use crate::datadir::DataDir;

/// Largest proof file read, in bytes (a proven task record is the largest part).
const PROOF_BYTES_MAX: u64 = 64 << 20;

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
    /// Fetch a state record, or its absence, with its Merkle proof against a committed header
    /// and that header's commit certificate (`GET /proof/TABLE/KEY?height=H`), and write it out.
    Prove {
        /// The node's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        node: String,
        /// The state table: accounts, validators, validator_sets, tasks, submissions,
        /// verdicts, commitments, evidence, champions, deadlines or meta.
        #[arg(long)]
        table: String,
        /// The key: an account id, a task id, TASK:ACCOUNT, a hash, a height, `chain`, or 0x and
        /// the canonical key bytes in hex (see README "Light client").
        #[arg(long)]
        key: String,
        /// The committed height whose header to prove against (default: the node's tip).
        #[arg(long)]
        height: Option<u64>,
        /// Where to write the proof (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a proof offline: its header is committed by more than two thirds of the genesis
    /// validator set's power, and its Merkle proof shows the record (or its absence) under
    /// that header's state root. Needs no node and no chain.
    CheckProof {
        /// The proof, as written by `node ledger prove`.
        #[arg(long)]
        proof: PathBuf,
        /// The genesis document whose chain id and validator set are trusted.
        #[arg(long)]
        genesis: PathBuf,
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
        LedgerCommand::Prove { node, table, key, height, out } => {
            let client = super::client(&node)?;
            let mut path = format!("/proof/{table}/{key}");
            if let Some(h) = height {
                path.push_str(&format!("?height={h}"));
            }
            let answer: serde_json::Value = client.get(&path)?;
            let text = serde_json::to_string_pretty(&answer)?;
            match out {
                Some(file) => {
                    std::fs::write(&file, text + "\n")
                        .with_context(|| format!("writing {}", file.display()))?;
                    eprintln!("proof written to {}", file.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        LedgerCommand::CheckProof { proof, genesis } => {
            let genesis = read_genesis(&genesis)?;
            let len = std::fs::metadata(&proof)
                .with_context(|| format!("reading proof {}", proof.display()))?
                .len();
            if len > PROOF_BYTES_MAX {
                anyhow::bail!(
                    "proof {} is {len} bytes, over the limit of {PROOF_BYTES_MAX}",
                    proof.display()
                );
            }
            let text = std::fs::read_to_string(&proof)
                .with_context(|| format!("reading proof {}", proof.display()))?;
            let bundle: StateProofBundle = serde_json::from_str(&text)
                .with_context(|| format!("proof {} is malformed", proof.display()))?;
            let table = bundle
                .verify(&genesis.chain_id, &genesis.validator_set())
                .with_context(|| format!("proof {} is refused", proof.display()))?;
            let header = &bundle.header;
            let key = hex::encode(&bundle.key);
            match &bundle.value {
                Some(value) => {
                    let record = record_json(table, value)
                        .context("the proven record does not decode as its table's type")?;
                    println!("ok: {}/0x{key} = {record}", bundle.table);
                }
                None => println!("ok: {}/0x{key} is absent", bundle.table),
            }
            println!(
                "   under state root {} of block {} at height {}, committed by a quorum of the \
                 genesis validators",
                header.state_root,
                header.hash(),
                header.height
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
