//! `node tx`: sign transactions with a data dir's key and post them to a running node.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use consensus::encoding::encode;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Amount, Nonce};
use serde_json::{Value, json};

use super::http_client::{ApiClient, to_hex};
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
            let client = ApiClient::new(&node)?;
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
    client: &ApiClient,
    data_dir: &Path,
    kind: TxKind,
    nonce: Option<u64>,
) -> anyhow::Result<String> {
    let key = keystore::load(data_dir)?;
    let status = client.get("/status").context("reading the node's status")?;
    let Some(chain_id) = status.get("chain_id").and_then(Value::as_str) else {
        bail!("the node's /status has no chain_id");
    };
    let nonce = match nonce {
        Some(n) => n,
        None => {
            let account = client
                .get(&format!("/accounts/{}", key.account().to_hex()))
                .context("reading the account's nonce")?;
            json_u64(account.get("nonce")).context("the node's /accounts answer has no nonce")?
        }
    };
    let tx = Tx { chain_id: chain_id.to_string(), nonce: Nonce(nonce), kind };
    let signed = SignedTx::sign(&key, tx);
    let body = json!({ "tx": to_hex(&encode(&signed)) }).to_string();
    let answer = client.post("/txs", "application/json", body.as_bytes())?;
    Ok(answer
        .get("hash")
        .and_then(Value::as_str)
        .map_or_else(|| signed.hash().to_hex(), str::to_string))
}

/// A u64 sent as a JSON number or string.
pub fn json_u64(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
