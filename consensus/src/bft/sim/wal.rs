//! The simulated validators' write-ahead logs: in memory, or the real [`FileWal`] in a
//! temporary directory, torn by a crash in the middle of a chosen write.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::block::Block;
use crate::types::Height;

use super::super::wal::{FileWal, MemoryWal, Wal, WalEntry, WalError};

/// A validator's log in the simulator.
#[derive(Debug)]
pub enum SimWal {
    /// Kept in memory across crashes.
    Memory(MemoryWal<Block>),
    /// The node's own file log.
    File {
        /// The open log.
        wal: FileWal<Block>,
        /// Its path.
        path: PathBuf,
        /// Appends left before one is torn by a crash (`None`: never).
        tear_after: Option<u32>,
        /// How many bytes of the torn record's end are lost.
        tear_bytes: u64,
    },
}

impl SimWal {
    /// The log file, when this is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SimWal::Memory(_) => None,
            SimWal::File { path, .. } => Some(path),
        }
    }
}

impl Wal<Block> for SimWal {
    fn append(&mut self, entry: &WalEntry<Block>) -> Result<(), WalError> {
        match self {
            SimWal::Memory(wal) => wal.append(entry),
            SimWal::File { wal, path, tear_after, tear_bytes } => {
                let before = std::fs::metadata(&*path).map_or(0, |m| m.len());
                wal.append(entry)?;
                match tear_after {
                    Some(0) => {
                        // The crash hit while the record was being written: only a prefix of it
                        // reached the disk, and the process died before sending anything.
                        let after = std::fs::metadata(&*path).map_or(0, |m| m.len());
                        let keep = after.saturating_sub(*tear_bytes).max(before);
                        let io = |source| WalError::Io {
                            path: path.clone(),
                            action: "simulate a torn write",
                            source,
                        };
                        OpenOptions::new()
                            .write(true)
                            .open(&*path)
                            .and_then(|f| f.set_len(keep))
                            .map_err(io)?;
                        Err(io(std::io::Error::other("simulated crash in the middle of a write")))
                    }
                    Some(n) => {
                        *n -= 1;
                        Ok(())
                    }
                    None => Ok(()),
                }
            }
        }
    }

    fn entries(&self) -> Result<Vec<WalEntry<Block>>, WalError> {
        match self {
            SimWal::Memory(wal) => wal.entries(),
            SimWal::File { wal, .. } => wal.entries(),
        }
    }

    fn start_height(&mut self, height: Height) -> Result<(), WalError> {
        match self {
            SimWal::Memory(wal) => wal.start_height(height),
            SimWal::File { wal, .. } => wal.start_height(height),
        }
    }
}

/// A directory for one run's log files, removed when dropped. It lives in `/dev/shm` where that
/// exists (a memory file system: the logs' fsyncs cost nothing there).
#[derive(Debug)]
pub struct WalDir {
    path: PathBuf,
}

impl WalDir {
    /// A fresh directory named after the run.
    pub fn new(tag: &str) -> std::io::Result<WalDir> {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let path = base.join(format!("crucible-sim-{}-{tag}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(WalDir { path })
    }

    /// The log file of validator `i`.
    pub fn file(&self, i: usize) -> PathBuf {
        self.path.join(format!("wal-{i}"))
    }
}

impl Drop for WalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
