//! Why a node could not start, or why its driver stopped.

use std::path::PathBuf;

use consensus::bft::{EngineError, WalError};
use consensus::chain::LedgerError;
use consensus::storage::StoreError;
use consensus::types::Height;

use crate::keystore::KeystoreError;
use crate::network::NetworkError;

/// Why a node could not start, or why its driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeystoreError),
    /// The genesis file cannot be read or is invalid.
    #[error("genesis {path}: {reason}")]
    Genesis {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data dir's genesis differs from the one given.
    #[error(
        "{given} (hash {given_hash}) is not the genesis this data dir was initialized with ({stored}, hash {stored_hash}); use another data dir"
    )]
    GenesisMismatch {
        /// The genesis given.
        given: PathBuf,
        /// Its hash.
        given_hash: String,
        /// The data dir's copy.
        stored: PathBuf,
        /// Its hash.
        stored_hash: String,
    },
    /// The node runs as a validator but its key is not in the genesis validator set.
    #[error(
        "account {account} is not a validator of chain {chain}; run with --role trainer or use a validator's data dir"
    )]
    NotAValidator {
        /// The node's account.
        account: String,
        /// The chain.
        chain: String,
    },
    /// The data dir could not be written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The chain store could not be opened.
    #[error("chain store: {0}")]
    Store(#[from] StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The consensus write-ahead log failed (a validator that cannot log must not sign).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The ledger holds no validator set for a height it should.
    #[error("the ledger knows no validator set for height {0}")]
    NoValidatorSet(Height),
}
