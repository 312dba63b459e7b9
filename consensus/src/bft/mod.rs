//! The BFT engine: Tendermint, stake-weighted, as a pure state machine.
//!
//! See [`engine`] for the driving interface and the crate README's "Consensus" section for the
//! protocol step by step.

pub mod config;
pub mod engine;
pub mod proposer;
pub mod shown;
#[cfg(feature = "sim")]
pub mod sim;
pub mod types;
pub mod votes;
pub mod wal;

pub use config::EngineConfig;
#[cfg(feature = "sim")]
pub use engine::Mutant;
pub use engine::{Action, Engine, EngineError, Event, PeerMemory};
pub use shown::HeightsShown;
pub use types::{
    BodyMismatch, Message, MessageError, Proposal, SignedProposal, Step, Timeout, TimeoutKind,
    Value,
};
#[cfg(feature = "disk")]
pub use wal::FileWal;
pub use wal::{MemoryWal, Wal, WalEntry, WalError};
