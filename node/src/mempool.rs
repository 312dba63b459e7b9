//! The mempool: signed transactions waiting for a block, bounded per account and in total.
//!
//! Pending txs are kept by (account, nonce). Each new tx is checked by executing it on a scratch
//! copy of the state: the committed state with every pending tx already applied. So a tx is
//! admitted only if it would execute after the ones before it (its nonce is the account's next
//! one after its pending txs, its signer can pay, its task window is open), and a tx that fails
//! changes nothing ([`State::check_and_execute_tx`] guarantees that). When a block commits,
//! [`Mempool::block_committed`] drops the block's txs and re-checks the rest against the new
//! state, evicting those the block made stale (a nonce used, a balance spent); their signatures
//! were checked on the way in and are not checked again.
//!
//! **Backpressure.** The mempool holds at most [`MEMPOOL_BLOCKS`] blocks' worth of txs (within
//! [`MEMPOOL_TXS_MIN`]..=[`MEMPOOL_TXS_MAX`]): a backlog longer than that only makes every
//! re-check after a block dearer while the chain falls further behind. While it is full, its
//! [`FullFlag`] tells the doors txs come in by (gossip, the HTTP API) to turn them away before
//! paying for a signature check, so an overloaded node spends its CPU on the blocks that drain
//! the backlog rather than on txs it would refuse anyway.
//!
//! [`Mempool::batch`] gives the proposer txs within the block's count and byte limits, taking
//! accounts in turn (each account's first pending tx, then each one's second, …) so one busy
//! account cannot fill a block, while every account's txs stay in nonce order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use consensus::encoding::encoded_len;
use consensus::genesis::Params;
use consensus::state::{State, TxContext, TxError};
use consensus::tx::SignedTx;
use consensus::types::{AccountId, Hash, Nonce};

use crate::network::Validation;

/// Most pending txs in a mempool, whatever the chain's block size.
pub const MEMPOOL_TXS_MAX: usize = 50_000;

/// Fewest pending txs a mempool holds room for, however small the chain's blocks.
pub const MEMPOOL_TXS_MIN: usize = 1_000;

/// Blocks' worth of txs (at the chain's `max_block_txs`) a mempool holds.
pub const MEMPOOL_BLOCKS: usize = 4;

/// Most encoded bytes pending in a mempool by default.
pub const MEMPOOL_BYTES_MAX: usize = 256 << 20;

/// A mempool's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Most pending txs of one account (the chain's `mempool_txs_per_account`).
    pub txs_per_account_max: usize,
    /// Most pending txs in total.
    pub txs_max: usize,
    /// Most pending bytes in total.
    pub bytes_max: usize,
    /// Largest encoded tx (the chain's `max_tx_bytes`).
    pub max_tx_bytes: usize,
}

impl MempoolLimits {
    /// The chain's per-account and tx-size limits, [`MEMPOOL_BLOCKS`] blocks of txs in total
    /// (within [`MEMPOOL_TXS_MIN`]..=[`MEMPOOL_TXS_MAX`]) and the default bytes.
    pub fn for_chain(params: &Params) -> MempoolLimits {
        MempoolLimits {
            txs_per_account_max: params.mempool_txs_per_account as usize,
            txs_max: (params.max_block_txs as usize)
                .saturating_mul(MEMPOOL_BLOCKS)
                .clamp(MEMPOOL_TXS_MIN, MEMPOOL_TXS_MAX),
            bytes_max: MEMPOOL_BYTES_MAX,
            max_tx_bytes: usize::try_from(params.max_tx_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// Why a tx was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// The tx is already pending.
    #[error("transaction {0} is already pending")]
    Duplicate(Hash),
    /// Its account has as many pending txs as allowed.
    #[error("account {account} already has {limit} pending transactions")]
    AccountFull {
        /// The account.
        account: AccountId,
        /// The limit.
        limit: usize,
    },
    /// The mempool is full.
    #[error("the mempool is full ({what} at the limit of {limit})")]
    Full {
        /// `transactions` or `bytes`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The tx is larger than any tx may be.
    #[error("transaction is {found} bytes, over the limit of {limit}")]
    TooLarge {
        /// Its size.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// The tx does not execute on the pending state.
    #[error("transaction does not execute: {0}")]
    Invalid(TxError),
}

impl MempoolError {
    /// The gossip answer for a tx refused with this error: `Reject` for what is wrong with the tx
    /// itself (oversized, badly signed, another chain), `Ignore` for what depends on the state
    /// (used nonce, duplicate, full, insufficient balance).
    pub fn validation(&self) -> Validation {
        match self {
            MempoolError::TooLarge { .. }
            | MempoolError::Invalid(TxError::WrongChain { .. } | TxError::BadSignature(_)) => {
                Validation::Reject
            }
            _ => Validation::Ignore,
        }
    }
}

/// Whether a mempool is full, shared with the doors txs come in by; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct FullFlag(Arc<AtomicBool>);

impl FullFlag {
    /// Whether the mempool was full after its latest change.
    pub fn is_full(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, full: bool) {
        self.0.store(full, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
struct Pending {
    tx: SignedTx,
    hash: Hash,
    bytes: usize,
}

/// Pending transactions; see the module docs.
#[derive(Debug)]
pub struct Mempool {
    limits: MempoolLimits,
    /// The committed state plus every pending tx.
    scratch: State,
    by_account: BTreeMap<AccountId, BTreeMap<Nonce, Pending>>,
    by_hash: HashMap<Hash, (AccountId, Nonce)>,
    bytes: usize,
    full: FullFlag,
}

impl Mempool {
    /// An empty mempool over the committed `state`.
    pub fn new(state: &State, limits: MempoolLimits) -> Mempool {
        Mempool {
            limits,
            scratch: state.clone(),
            by_account: BTreeMap::new(),
            by_hash: HashMap::new(),
            bytes: 0,
            full: FullFlag::default(),
        }
    }

    /// The flag that says whether this mempool is full, to share with the doors txs come in by.
    pub fn full_flag(&self) -> FullFlag {
        self.full.clone()
    }

    /// Whether another tx would be refused for want of room.
    pub fn is_full(&self) -> bool {
        self.by_hash.len() >= self.limits.txs_max || self.bytes >= self.limits.bytes_max
    }

    fn update_full_flag(&self) {
        self.full.set(self.is_full());
    }

    /// Pending txs.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Pending bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next nonce of `account` after its pending txs.
    pub fn next_nonce(&self, account: &AccountId) -> Nonce {
        self.scratch.account(account).nonce
    }

    /// The context the next tx is admitted in: the next block, after the pending txs.
    fn context(&self) -> TxContext {
        admission_context(&self.scratch, self.by_hash.len())
    }

    /// Admits a tx that executes on the pending state; returns its hash.
    pub fn insert(&mut self, tx: SignedTx) -> Result<Hash, MempoolError> {
        let bytes = encoded_len(&tx);
        if bytes > self.limits.max_tx_bytes {
            return Err(MempoolError::TooLarge { found: bytes, limit: self.limits.max_tx_bytes });
        }
        let hash = tx.hash();
        if self.by_hash.contains_key(&hash) {
            return Err(MempoolError::Duplicate(hash));
        }
        let account = tx.signer;
        let pending = self.by_account.get(&account).map_or(0, BTreeMap::len);
        if pending >= self.limits.txs_per_account_max {
            return Err(MempoolError::AccountFull {
                account,
                limit: self.limits.txs_per_account_max,
            });
        }
        if self.by_hash.len() >= self.limits.txs_max {
            return Err(MempoolError::Full { what: "transactions", limit: self.limits.txs_max });
        }
        if self.bytes + bytes > self.limits.bytes_max {
            return Err(MempoolError::Full { what: "bytes", limit: self.limits.bytes_max });
        }
        let ctx = self.context();
        self.scratch.check_and_execute_tx(&tx, ctx).map_err(MempoolError::Invalid)?;
        let nonce = tx.tx.nonce;
        self.by_hash.insert(hash, (account, nonce));
        self.by_account.entry(account).or_default().insert(nonce, Pending { tx, hash, bytes });
        self.bytes += bytes;
        self.update_full_flag();
        Ok(hash)
    }

    /// Txs for the next block: at most `max_txs` and `max_bytes` encoded, accounts in turn, each
    /// account's txs in nonce order (an account whose next tx does not fit contributes no more).
    pub fn batch(&self, max_txs: usize, max_bytes: usize) -> Vec<SignedTx> {
        let mut queues: Vec<_> =
            self.by_account.values().map(|txs| txs.values().peekable()).collect();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_txs && !queues.is_empty() {
            queues.retain_mut(|queue| {
                let Some(next) = queue.peek() else { return false };
                if out.len() >= max_txs || bytes + next.bytes > max_bytes {
                    return false;
                }
                bytes += next.bytes;
                out.push(next.tx.clone());
                queue.next();
                true
            });
        }
        out
    }

    /// Drops the txs of a block committed on top of the previous state and re-checks the rest
    /// against `state` (the state after the block), evicting those that no longer execute.
    /// Returns how many were evicted besides the block's own.
    pub fn block_committed(&mut self, state: &State, block_txs: &[SignedTx]) -> usize {
        for tx in block_txs {
            self.remove(&tx.hash());
        }
        self.scratch = state.clone();
        let before = self.by_hash.len();
        // Re-checked in place, account by account in nonce order; each tx in the context it
        // would be admitted in after the txs kept before it.
        let mut kept = 0usize;
        let (scratch, by_hash, bytes) = (&mut self.scratch, &mut self.by_hash, &mut self.bytes);
        self.by_account.retain(|_, txs| {
            txs.retain(|_, entry| {
                let ctx = admission_context(scratch, kept);
                // The signature was verified on admission, for this chain: state cannot change
                // that, so only the execution is checked again.
                match scratch.execute_tx(&entry.tx, ctx) {
                    Ok(()) => {
                        kept += 1;
                        true
                    }
                    Err(error) => {
                        tracing::debug!(hash = %entry.hash, %error, "evicting a stale transaction");
                        by_hash.remove(&entry.hash);
                        *bytes -= entry.bytes;
                        false
                    }
                }
            });
            !txs.is_empty()
        });
        self.update_full_flag();
        before - self.by_hash.len()
    }

    fn remove(&mut self, hash: &Hash) {
        if let Some((account, nonce)) = self.by_hash.remove(hash)
            && let Some(txs) = self.by_account.get_mut(&account)
        {
            if let Some(entry) = txs.remove(&nonce) {
                self.bytes -= entry.bytes;
            }
            if txs.is_empty() {
                self.by_account.remove(&account);
            }
        }
    }
}

/// The context a tx is admitted or re-checked in on top of `scratch`, after `index` pending txs.
fn admission_context(scratch: &State, index: usize) -> TxContext {
    TxContext {
        height: scratch.height().next(),
        index: u32::try_from(index).unwrap_or(u32::MAX),
        // Admission does not depend on who proposes: any account will do for the scratch.
        proposer: AccountId::default(),
    }
}

#[cfg(test)]
mod tests {
    use consensus::crypto::Keypair;
    use consensus::genesis::{Genesis, GenesisBalance, GenesisValidator};
    use consensus::tx::{Tx, TxKind};
    use consensus::types::Amount;

    use super::*;

    fn genesis(keys: &[&Keypair]) -> Genesis {
        let validator = Keypair::from_seed([100; 32]);
        Genesis {
            chain_id: "mp".into(),
            genesis_time_ms: 0,
            validators: vec![GenesisValidator {
                account: validator.account(),
                stake: Amount(100),
                name: "v".into(),
            }],
            balances: keys
                .iter()
                .map(|k| GenesisBalance { account: k.account(), amount: Amount(1_000) })
                .collect(),
            params: Params { mempool_txs_per_account: 3, ..Params::default() },
            tasks: Vec::new(),
        }
    }

    fn transfer(key: &Keypair, nonce: u64, amount: u64) -> SignedTx {
        let kind = TxKind::Transfer { to: AccountId([9; 32]), amount: Amount(amount) };
        SignedTx::sign(key, Tx { chain_id: "mp".into(), nonce: Nonce(nonce), kind })
    }

    #[test]
    fn admits_in_nonce_order_within_caps_and_maps_errors_to_validations() {
        let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let g = genesis(&[&a, &b]);
        let state = State::from_genesis(&g);
        let mut pool = Mempool::new(&state, MempoolLimits::for_chain(&g.params));
        for n in 0..3 {
            pool.insert(transfer(&a, n, 1)).unwrap();
        }
        assert_eq!(pool.next_nonce(&a.account()), Nonce(3));
        let err = pool.insert(transfer(&a, 3, 1)).unwrap_err();
        assert!(matches!(err, MempoolError::AccountFull { limit: 3, .. }));
        assert_eq!(err.validation(), Validation::Ignore);
        let err = pool.insert(transfer(&a, 0, 1)).unwrap_err();
        assert!(matches!(err, MempoolError::Duplicate(_)));
        let err = pool.insert(transfer(&b, 1, 1)).unwrap_err();
        assert!(matches!(err, MempoolError::Invalid(TxError::NonceGap { .. })));
        assert_eq!(err.validation(), Validation::Ignore);
        let mut forged = transfer(&b, 0, 1);
        forged.tx.kind = TxKind::Transfer { to: AccountId([9; 32]), amount: Amount(2) };
        let err = pool.insert(forged).unwrap_err();
        assert_eq!(err.validation(), Validation::Reject);
        let err = pool.insert(transfer(&b, 0, 5_000)).unwrap_err();
        assert!(matches!(err, MempoolError::Invalid(TxError::InsufficientBalance { .. })));
        pool.insert(transfer(&b, 0, 1)).unwrap();
        assert_eq!(pool.len(), 4);

        // Accounts in turn, each in nonce order; limits respected.
        let batch = pool.batch(3, usize::MAX);
        let order: Vec<(AccountId, u64)> = batch.iter().map(|t| (t.signer, t.tx.nonce.0)).collect();
        let (first, second) = if a.account() < b.account() {
            (a.account(), b.account())
        } else {
            (b.account(), a.account())
        };
        let expected_first_round = [(first, 0), (second, 0)];
        assert_eq!(order[..2], expected_first_round[..]);
        assert_eq!(order[2], (a.account(), 1));
        let one_tx = encoded_len(&batch[0]);
        assert_eq!(pool.batch(10, one_tx).len(), 1);
    }

    #[test]
    fn a_committed_block_evicts_what_it_made_stale() {
        let a = Keypair::from_seed([1; 32]);
        let g = genesis(&[&a]);
        let state = State::from_genesis(&g);
        let mut pool = Mempool::new(&state, MempoolLimits::for_chain(&g.params));
        pool.insert(transfer(&a, 0, 1)).unwrap();
        pool.insert(transfer(&a, 1, 1)).unwrap();
        // Another node's block used nonce 0 with a different tx: both pending txs are stale or
        // still valid by nonce: the pending nonce 0 is stale, nonce 1 still executes.
        let mut next = state.clone();
        let other = transfer(&a, 0, 2);
        next.check_and_execute_tx(
            &other,
            TxContext {
                height: consensus::types::Height(1),
                index: 0,
                proposer: AccountId::default(),
            },
        )
        .unwrap();
        let evicted = pool.block_committed(&next, std::slice::from_ref(&other));
        assert_eq!(evicted, 1);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.batch(10, usize::MAX)[0].tx.nonce, Nonce(1));
        assert!(pool.bytes() > 0);
    }

    #[test]
    fn the_total_is_a_few_blocks_and_the_full_flag_follows_it() {
        let limits = |max_block_txs| {
            MempoolLimits::for_chain(&Params { max_block_txs, ..Params::default() }).txs_max
        };
        assert_eq!(limits(3_000), 3_000 * MEMPOOL_BLOCKS);
        assert_eq!(limits(1), MEMPOOL_TXS_MIN);
        assert_eq!(limits(1_000_000), MEMPOOL_TXS_MAX);

        let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let g = genesis(&[&a, &b]);
        let state = State::from_genesis(&g);
        let mut pool = Mempool::new(
            &state,
            MempoolLimits { txs_max: 2, ..MempoolLimits::for_chain(&g.params) },
        );
        let flag = pool.full_flag();
        pool.insert(transfer(&a, 0, 1)).unwrap();
        assert!(!flag.is_full());
        pool.insert(transfer(&b, 0, 1)).unwrap();
        assert!(flag.is_full() && pool.is_full());
        let err = pool.insert(transfer(&a, 1, 1)).unwrap_err();
        assert!(matches!(err, MempoolError::Full { what: "transactions", limit: 2 }));

        // A block that takes one of them makes room again.
        let mut next = state.clone();
        let included = transfer(&a, 0, 1);
        let ctx = TxContext {
            height: consensus::types::Height(1),
            index: 0,
            proposer: AccountId::default(),
        };
        next.check_and_execute_tx(&included, ctx).unwrap();
        pool.block_committed(&next, std::slice::from_ref(&included));
        assert_eq!(pool.len(), 1);
        assert!(!flag.is_full());
    }
}
