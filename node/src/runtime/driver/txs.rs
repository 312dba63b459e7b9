//! Transactions through the driver: local submissions and batches from the HTTP API, admitted
//! to the mempool and gossiped, and the block this node proposes from the mempool.

use std::time::{SystemTime, UNIX_EPOCH};

use consensus::block::Block;
use consensus::chain::build_block;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Height, Nonce};

use super::Driver;
use crate::runtime::context::Metrics;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Driver {
    /// Signs `kind` with the node key and its next nonce, admits it and gossips it.
    pub(super) async fn submit_local(&mut self, kind: TxKind) -> Result<SignedTx, String> {
        let me = self.ctx.key.account();
        let committed: Nonce = self.ctx.read(|l| l.state().account(&me).nonce);
        let nonce = committed.max(self.mempool.next_nonce(&me));
        let tx = Tx { chain_id: self.ctx.genesis.chain_id.clone(), nonce, kind };
        let signed = SignedTx::sign(&self.ctx.key, tx);
        let mut results = self.admit(vec![signed.clone()]).await;
        results.pop().unwrap_or(Ok(())).map(|()| signed)
    }

    /// Admits signed transactions to the mempool in order and hands the admitted ones to the
    /// network to gossip as batches; answers each one's admission.
    pub(super) async fn admit(&mut self, txs: Vec<SignedTx>) -> Vec<Result<(), String>> {
        let mut admitted = Vec::with_capacity(txs.len());
        let results = txs
            .into_iter()
            .map(|tx| {
                self.mempool.insert(tx.clone()).map_err(|e| e.to_string())?;
                admitted.push(tx);
                Ok(())
            })
            .collect();
        Metrics::set(&self.ctx.metrics.mempool_txs, self.mempool.len() as u64);
        if let Err(error) = self.ctx.network.publish_txs(&admitted).await {
            tracing::warn!(%error, "admitted transactions cannot be gossiped");
        }
        results
    }

    /// Builds the block this node proposes at `height` from the mempool.
    pub(super) fn build(&self, height: Height) -> Option<Block> {
        let params = &self.ctx.genesis.params;
        let txs = self.mempool.batch(
            params.max_block_txs as usize,
            usize::try_from(params.max_block_bytes).unwrap_or(usize::MAX),
        );
        let proposer = self.ctx.key.account();
        let built = self.ctx.read(|l| {
            if l.height().next() != height {
                return None;
            }
            let last_commit = match height.0 {
                1 => None,
                _ => match l.commit(l.height()) {
                    Ok(Some(cert)) => Some(cert),
                    Ok(None) | Err(_) => return None,
                },
            };
            Some(build_block(l.state(), txs, now_ms(), proposer, last_commit))
        });
        match built {
            Some(Ok(block)) => Some(block),
            Some(Err(error)) => {
                tracing::warn!(%height, %error, "cannot build a block");
                None
            }
            None => None,
        }
    }
}
