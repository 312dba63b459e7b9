//! Crucible's ledger: types, signing, application state, rewards, the BFT engine and storage.
//!
//! No networking and no machine learning live here: this crate is the pure core that every node
//! runs identically. See `shared/DESIGN.md` ("Identity and signing", "Ledger", "Consensus").

pub mod bft;
pub mod block;
pub mod chain;
pub mod commitment;
pub mod crypto;
pub mod encoding;
pub mod finalize;
pub mod fixed;
pub mod genesis;
pub mod hash;
pub mod merkle;
pub mod state;
pub mod storage;
pub mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tx;
pub mod types;
pub mod validators;
pub mod verdict;
pub mod vote;
