//! The write-ahead log: every own proposal and vote, and every change of the lock and the valid
//! value, is made durable *before* the message leaves the node.
//!
//! After a crash the engine replays the log of its current height and rebuilds its round, step,
//! own messages, lock and valid value, so it never signs a message that conflicts with one it
//! sent before the crash, and never forgets a lock ("amnesia", the classic way a restarted
//! validator helps commit a second block).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::encoding::{decode, encode};
use crate::hash::sha256;
use crate::types::{Height, Round};
use crate::vote::SignedVote;

use super::types::{SignedProposal, Value};

/// Largest WAL record accepted when reading the log back, in bytes (a proposal carries a block).
pub const WAL_RECORD_BYTES_MAX: usize = 64 << 20;

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
    /// A complete record (checksum intact) does not decode: the file is not ours.
    #[error("WAL {path}: record at byte {offset} does not decode: {reason}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The decoder's message.
        reason: String,
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

/// Bytes before each record: its length (u32 little-endian) and the first 4 bytes of its sha256.
const RECORD_HEADER_BYTES: usize = 8;

/// A log in one file: each record is `len (u32 LE) || sha256(bytes)[..4] || bytes`, appended and
/// flushed with `fsync` before [`Wal::append`] returns.
///
/// A crash can leave a torn last record; it never reached the network (the send waits for the
/// flush), so opening the file drops it and truncates the file back to the last whole record.
#[derive(Debug)]
pub struct FileWal<V> {
    path: PathBuf,
    file: File,
    entries: Vec<WalEntry<V>>,
    _value: PhantomData<V>,
}

impl<V: Value> FileWal<V> {
    /// Opens (or creates) the log at `path` and reads its whole records.
    pub fn open(path: impl AsRef<Path>) -> Result<FileWal<V>, WalError> {
        let path = path.as_ref().to_path_buf();
        let io = |action| {
            let path = path.clone();
            move |source| WalError::Io { path, action, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        let mut entries = Vec::new();
        let mut offset = 0usize;
        while let Some(header) = bytes.get(offset..offset + RECORD_HEADER_BYTES) {
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            let Some(body) =
                bytes.get(offset + RECORD_HEADER_BYTES..offset + RECORD_HEADER_BYTES + len)
            else {
                break;
            };
            if sha256(body).0[..4] != header[4..] {
                break;
            }
            let entry = decode("WAL record", body, WAL_RECORD_BYTES_MAX).map_err(|e| {
                WalError::Corrupt {
                    path: path.clone(),
                    offset: offset as u64,
                    reason: e.to_string(),
                }
            })?;
            entries.push(entry);
            offset += RECORD_HEADER_BYTES + len;
        }
        if offset < bytes.len() {
            file.set_len(offset as u64).map_err(io("truncate a torn record"))?;
            file.sync_all().map_err(io("fsync"))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        Ok(FileWal { path, file, entries, _value: PhantomData })
    }

    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> WalError + use<V> {
        let path = self.path.clone();
        move |source| WalError::Io { path, action, source }
    }
}

impl<V: Value> Wal<V> for FileWal<V> {
    fn append(&mut self, entry: &WalEntry<V>) -> Result<(), WalError> {
        let body = encode(entry);
        let len = u32::try_from(body.len()).expect("a WAL record is far below 4 GiB");
        let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&sha256(&body).0[..4]);
        record.extend_from_slice(&body);
        self.file.write_all(&record).map_err(self.io("append"))?;
        self.file.sync_data().map_err(self.io("fsync"))?;
        self.entries.push(entry.clone());
        Ok(())
    }

    fn entries(&self) -> Result<Vec<WalEntry<V>>, WalError> {
        Ok(self.entries.clone())
    }

    fn start_height(&mut self, height: Height) -> Result<(), WalError> {
        // Rewrite the kept records to a temporary file and rename it over the log, so a crash
        // leaves either the old log or the new one.
        self.entries.retain(|e| e.height() >= height);
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(self.io("create temporary"))?;
        for entry in &self.entries {
            let body = encode(entry);
            let len = u32::try_from(body.len()).expect("a WAL record is far below 4 GiB");
            file.write_all(&len.to_le_bytes()).map_err(self.io("write temporary"))?;
            file.write_all(&sha256(&body).0[..4]).map_err(self.io("write temporary"))?;
            file.write_all(&body).map_err(self.io("write temporary"))?;
        }
        file.sync_all().map_err(self.io("fsync temporary"))?;
        std::fs::rename(&tmp, &self.path).map_err(self.io("rename temporary"))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(self.io("fsync directory"))?;
        }
        let mut file =
            OpenOptions::new().append(true).open(&self.path).map_err(self.io("reopen"))?;
        file.seek(SeekFrom::End(0)).map_err(self.io("seek"))?;
        self.file = file;
        Ok(())
    }
}
