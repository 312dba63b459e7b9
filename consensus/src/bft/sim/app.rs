//! The simulator's application: real [`Block`]s, built and judged as the ledger does, with the
//! account state left out.
//!
//! A block's id is its header's hash, so the simulator meets the same two-bodies-under-one-id
//! problem the node does. [`App::check`] is the ledger's judgement minus execution: the body
//! matches the header, the header's chain, height, previous hash, time, state root, validator
//! hash and proposer are right, the last commit certifies the previous block with the height's
//! validator set, and no transaction is refused (a transfer of [`POISON`] is: that is how a
//! Byzantine builder makes a block the ledger refuses).

use std::collections::BTreeSet;

use crate::block::{Block, Header, tx_root};
use crate::crypto::{Keypair, Verifier};
use crate::hash::tagged_hash;
use crate::tx::{SignedTx, Tx, TxKind};
use crate::types::{AccountId, Amount, Hash, Height, Nonce};
use crate::validators::ValidatorSet;
use crate::vote::CommitCertificate;

/// The chain id every simulated validator signs for.
pub const CHAIN_ID: &str = "crucible-sim";

/// The amount of a transfer the simulated ledger refuses.
pub const POISON: Amount = Amount(u64::MAX);

/// Signed transfers honest builders draw from.
const POOL: usize = 8;

/// One committed block of a validator's chain, with what its successor's header must carry.
#[derive(Clone, Debug)]
pub struct Link {
    /// The block.
    pub block: Block,
    /// Its commit certificate.
    pub certificate: CommitCertificate,
    /// The (simulated) state root after it.
    pub root: Hash,
}

/// Validator sets by height, transactions to build with, and the memo of checked certificates.
pub struct App {
    base: ValidatorSet,
    /// A slash: from this height on, the set is the second one.
    changed: Option<(Height, ValidatorSet)>,
    pool: Vec<SignedTx>,
    poison: SignedTx,
    certified: BTreeSet<Hash>,
    verifier: Verifier,
}

impl App {
    /// An application whose validators are `base` at every height (see [`App::slash`]).
    pub fn new(base: ValidatorSet) -> App {
        let key = Keypair::from_seed([0xA5; 32]);
        let transfer = |nonce: u64, amount: Amount| {
            SignedTx::sign(
                &key,
                Tx {
                    chain_id: CHAIN_ID.into(),
                    nonce: Nonce(nonce),
                    kind: TxKind::Transfer { to: AccountId([0x5A; 32]), amount },
                },
            )
        };
        App {
            base,
            changed: None,
            pool: (0..POOL as u64).map(|n| transfer(n, Amount(n + 1))).collect(),
            poison: transfer(0, POISON),
            certified: BTreeSet::new(),
            verifier: Verifier::new(),
        }
    }

    /// Changes the set from `from` on (a slash at `from - 2`, applied two heights later as the
    /// ledger does).
    pub fn slash(&mut self, from: Height, set: ValidatorSet) {
        self.changed = Some((from, set));
    }

    /// The validator set that signs `height`.
    pub fn validators(&self, height: Height) -> &ValidatorSet {
        match &self.changed {
            Some((from, set)) if height >= *from => set,
            _ => &self.base,
        }
    }

    /// The genesis "block hash" the first block points back to.
    pub fn genesis_hash() -> Hash {
        tagged_hash(b"crucible/sim-genesis/v1", &[CHAIN_ID.as_bytes()])
    }

    /// The state root after `block`, given the root before it.
    pub fn root_after(before: Hash, block: &Block) -> Hash {
        tagged_hash(b"crucible/sim-state/v1", &[&before.0, &block.hash().0])
    }

    /// The genesis state root.
    pub fn genesis_root() -> Hash {
        tagged_hash(b"crucible/sim-state/v1", &[b"genesis"])
    }

    /// The block `proposer` builds on `chain` (its committed blocks); `variant` picks the
    /// transactions and the time, so one builder's blocks differ; `poisoned` adds a refused tx.
    pub fn build(
        &self,
        chain: &[Link],
        proposer: AccountId,
        variant: u64,
        poisoned: bool,
    ) -> Block {
        let height = Height(chain.len() as u64 + 1);
        let mut txs: Vec<SignedTx> = (0..variant % 3)
            .map(|k| self.pool[((variant + k) % POOL as u64) as usize].clone())
            .collect();
        if poisoned {
            txs.push(self.poison.clone());
        }
        let (prev_hash, prev_time, state_root, last_commit) = match chain.last() {
            None => (Self::genesis_hash(), 0, Self::genesis_root(), None),
            Some(link) => (
                link.block.hash(),
                link.block.header.time_ms,
                link.root,
                Some(link.certificate.clone()),
            ),
        };
        Block {
            header: Header {
                chain_id: CHAIN_ID.into(),
                height,
                time_ms: prev_time + 1 + variant % 1_000,
                prev_hash,
                tx_root: tx_root(&txs),
                state_root,
                validators_hash: self.validators(height).hash(),
                last_commit_hash: last_commit
                    .as_ref()
                    .map(CommitCertificate::hash)
                    .unwrap_or_default(),
                proposer,
            },
            txs: txs.into(),
            last_commit,
        }
    }

    /// The same header with a body it does not commit to (a refused transfer).
    pub fn junk_body(&self, block: &Block) -> Block {
        Block { txs: vec![self.poison.clone()].into(), ..block.clone() }
    }

    /// The ledger's judgement of `block` on top of `chain`: `Err` with the reason it refuses.
    pub fn check(&mut self, chain: &[Link], block: &Block) -> Result<(), String> {
        block.check_body().map_err(|e| e.to_string())?;
        let height = Height(chain.len() as u64 + 1);
        let header = &block.header;
        let (prev_hash, prev_time, root) = match chain.last() {
            None => (Self::genesis_hash(), 0, Self::genesis_root()),
            Some(link) => (link.block.hash(), link.block.header.time_ms, link.root),
        };
        let set = self.validators(height);
        let checks = [
            (header.chain_id == CHAIN_ID, "chain id"),
            (header.height == height, "height"),
            (header.prev_hash == prev_hash, "previous hash"),
            (header.time_ms > prev_time, "time"),
            (header.state_root == root, "state root"),
            (header.validators_hash == set.hash(), "validators hash"),
            (set.contains(&header.proposer), "proposer"),
        ];
        if let Some((_, field)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(format!("wrong {field}"));
        }
        if let (Some(cert), Some(prev)) = (&block.last_commit, chain.last()) {
            let key = cert.hash();
            if !self.certified.contains(&key) {
                let prev_height = Height(height.0 - 1);
                cert.verify(
                    &self.verifier,
                    CHAIN_ID,
                    prev_height,
                    &prev.block.hash(),
                    self.validators(prev_height),
                )
                .map_err(|e| format!("last commit: {e}"))?;
                self.certified.insert(key);
            }
        }
        if block
            .txs
            .iter()
            .any(|tx| matches!(tx.tx.kind, TxKind::Transfer { amount, .. } if amount == POISON))
        {
            return Err("a transfer the ledger refuses".into());
        }
        Ok(())
    }
}
