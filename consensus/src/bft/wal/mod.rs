//! The write-ahead log: every own proposal and vote, and every change of the lock and the valid
//! value, is made durable *before* the message leaves the node.
//!
//! After a crash the engine replays the log of its current height and rebuilds its round, step,
//! own messages, lock and valid value, so it never signs a message that conflicts with one it
//! sent before the crash, and never forgets a lock ("amnesia", the classic way a restarted
//! validator helps commit a second block).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::{Height, Round};
use crate::vote::SignedVote;

use super::types::{SignedProposal, Value};

#[cfg(feature = "disk")]
mod file;
#[cfg(feature = "disk")]
pub use file::FileWal;

/// Largest WAL record, in bytes, written or read back: a proposal carries a block (at most
/// [`crate::genesis::BLOCK_BYTES_LIMIT`] of transactions), and a valid value a quorum of
/// prevotes besides, which the extra mebibyte holds.
pub const WAL_RECORD_BYTES_MAX: usize = crate::genesis::BLOCK_BYTES_LIMIT as usize + (1 << 20);

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WalEntry<V> {
    /// This validator proposed `block`.
    Proposed {
        /// The signed proposal.
        proposal: SignedProposal,
        /// The block.
        block: V,
    },
    /// This validator cast a vote.
    Voted(SignedVote),
    /// This validator locked on `block` in `round` (written before its precommit).
    Locked {
        /// The height.
        height: Height,
        /// The lock's round.
        round: Round,
        /// The locked block.
        block: V,
    },
    /// This validator's valid value became `block`, seen with a quorum of prevotes in `round`.
    ValidValue {
        /// The height.
        height: Height,
        /// The valid round.
        round: Round,
        /// The valid block.
        block: V,
        /// The quorum of prevotes for it in `round`: after a restart they are sent along when the
        /// block is proposed again, since peers need them to accept it (Algorithm 1, line 28).
        proof: Vec<SignedVote>,
    },
}

impl<V> WalEntry<V> {
    /// The height the record belongs to.
    pub fn height(&self) -> Height {
        match self {
            WalEntry::Proposed { proposal, .. } => proposal.proposal.height,
            WalEntry::Voted(v) => v.vote.height,
            WalEntry::Locked { height, .. } | WalEntry::ValidValue { height, .. } => *height,
        }
    }
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O operation on the log file failed.
    #[error("WAL {path}: {action}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A record is damaged and complete records follow it, or a complete record does not decode:
    /// the file was corrupted after it was written (only the last record can be torn by a
    /// crash). The validator must not sign until an operator restores the file: dropping the
    /// later records could forget a lock.
    #[error(
        "WAL {path}: record at byte {offset} is corrupt ({reason}); refusing to start, since \
         dropping it or the records after it could forget a lock: restore the file, or move it \
         away only if this validator has not signed at its height"
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record over [`WAL_RECORD_BYTES_MAX`] was appended: it could not be read back.
    #[error("WAL {path}: a record of {bytes} bytes is over the limit of {WAL_RECORD_BYTES_MAX}")]
    TooLarge {
        /// The log file.
        path: PathBuf,
        /// The record's size.
        bytes: usize,
    },
}

/// Durable storage for the engine's own messages and lock.
pub trait Wal<V: Value> {
    /// Appends a record; when this returns `Ok`, the record survives a crash.
    fn append(&mut self, entry: &WalEntry<V>) -> Result<(), WalError>;

    /// Every record, oldest first.
    fn entries(&self) -> Result<Vec<WalEntry<V>>, WalError>;

    /// Called once a height's block is applied: records of earlier heights may be discarded.
    fn start_height(&mut self, height: Height) -> Result<(), WalError>;
}

/// A log in memory: for the simulator (which keeps it across simulated crashes) and tests.
#[derive(Clone, Debug)]
pub struct MemoryWal<V> {
    entries: Vec<WalEntry<V>>,
}

impl<V> Default for MemoryWal<V> {
    fn default() -> Self {
        MemoryWal { entries: Vec::new() }
    }
}

impl<V: Value> Wal<V> for MemoryWal<V> {
    fn append(&mut self, entry: &WalEntry<V>) -> Result<(), WalError> {
        self.entries.push(entry.clone());
        Ok(())
    }

    fn entries(&self) -> Result<Vec<WalEntry<V>>, WalError> {
        Ok(self.entries.clone())
    }

    fn start_height(&mut self, height: Height) -> Result<(), WalError> {
        self.entries.retain(|e| e.height() >= height);
        Ok(())
    }
}
