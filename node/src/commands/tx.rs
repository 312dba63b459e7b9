//! `node tx`: sign transactions with a data dir's key and post them to a running node.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Amount, Nonce};

use crate::client::Client;
use crate::keystore;

/// Transaction subcommands.
#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Move balance to another account.
    Transfer {
        /// The receiving account (64 hex digits).
        #[arg(long)]
        to: AccountId,
        /// The amount, in base units.
        #[arg(long)]
        amount: u64,
        /// The data dir whose key signs.
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        node: String,
        /// The nonce to sign with (default: the account's next nonce on the node's ledger).
        #[arg(long)]
        nonce: Option<u64>,
    },
}

/// Runs a tx subcommand.
pub fn run(cmd: TxCommand) -> anyhow::Result<()> {
    match cmd {
        TxCommand::Transfer { to, amount, data_dir, node, nonce } => {
            let client = super::client(&node)?;
            let kind = TxKind::Transfer { to, amount: Amount(amount) };
            let hash = sign_and_post(&client, &data_dir, kind, nonce)?;
            println!("{hash}");
        }
    }
    Ok(())
}

/// Signs `kind` with the key in `data_dir` (chain id from `GET /status`, nonce from
/// `GET /accounts/{id}` unless given) and posts it to `POST /txs`; returns the tx hash.
pub fn sign_and_post(
    client: &Client,
    data_dir: &Path,
    kind: TxKind,
    nonce: Option<u64>,
) -> anyhow::Result<String> {
    let key = keystore::load(data_dir)?;
    let status = client.status().context("reading the node's status")?;
    let nonce = match nonce {
        Some(n) => n,
        None => client.nonce(&key.account()).context("reading the account's nonce")?,
    };
    let tx = Tx { chain_id: status.chain_id, nonce: Nonce(nonce), kind };
    Ok(client.post_tx(&SignedTx::sign(&key, tx))?.to_string())
}
