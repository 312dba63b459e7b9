//! The log on disk (feature `disk`): framed records in one file, each flushed before the message
//! it guards leaves the node.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::encoding::{decode, encode};
use crate::hash::{sha256, tagged_hash};
use crate::types::Height;

use super::super::types::Value;
use super::{MemoryWal, WAL_RECORD_BYTES_MAX, Wal, WalEntry, WalError};

/// Bytes before each record: its length (u32 little-endian), the first 4 bytes of the length's
/// tagged sha256, and the first 4 bytes of the record's sha256.
const RECORD_HEADER_BYTES: usize = 12;

/// Domain tag of the length check.
const LENGTH_TAG: &[u8] = b"crucible/wal-length/v1";

fn length_check(len: u32) -> [u8; 4] {
    let digest = tagged_hash(LENGTH_TAG, &[&len.to_le_bytes()]);
    digest.0[..4].try_into().expect("4 bytes")
}

/// The framed bytes of one record.
fn frame(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("records are bounded far below 4 GiB");
    let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&length_check(len));
    record.extend_from_slice(&sha256(body).0[..4]);
    record.extend_from_slice(body);
    record
}

/// The body of the record framed at `offset`, or why there is none.
fn unframe(bytes: &[u8], offset: usize) -> Result<&[u8], &'static str> {
    let header = bytes.get(offset..offset + RECORD_HEADER_BYTES).ok_or("header cut short")?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    if header[4..8] != length_check(len) {
        return Err("length check fails");
    }
    let len = len as usize;
    if len > WAL_RECORD_BYTES_MAX {
        return Err("length over the record limit");
    }
    let start = offset + RECORD_HEADER_BYTES;
    let body = bytes.get(start..start + len).ok_or("body cut short")?;
    if sha256(body).0[..4] != header[8..12] {
        return Err("checksum fails");
    }
    Ok(body)
}

/// A log in one file: each record is `len (u32 LE) || check(len) || sha256(bytes)[..4] ||
/// bytes`, appended and flushed with `fsync` before [`Wal::append`] returns.
///
/// A crash can tear only the last record; it never reached the network (the send waits for the
/// flush), so opening the file drops it and truncates the file back to the last whole record. A
/// damaged record with whole records after it is corruption, not a tear: opening refuses with
/// the file and offset ([`WalError::Corrupt`]) rather than forget what the later records hold.
#[derive(Debug)]
pub struct FileWal<V> {
    path: PathBuf,
    file: File,
    /// The file's records, read from it at open and kept in step with it.
    memory: MemoryWal<V>,
}

impl<V: Value> FileWal<V> {
    /// Opens (or creates) the log at `path` and reads its whole records.
    pub fn open(path: impl AsRef<Path>) -> Result<FileWal<V>, WalError> {
        Self::open_with(path.as_ref(), false)
    }

    /// The simulator's mutant: opens treating any damaged record as a torn tail, dropping every
    /// record after it (the log before the corruption rule).
    #[cfg(feature = "sim")]
    pub fn open_ignoring_corruption(path: impl AsRef<Path>) -> Result<FileWal<V>, WalError> {
        Self::open_with(path.as_ref(), true)
    }

    fn open_with(path: &Path, lenient: bool) -> Result<FileWal<V>, WalError> {
        let path = path.to_path_buf();
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
        while offset < bytes.len() {
            let body = match unframe(&bytes, offset) {
                Ok(body) => body,
                Err(reason) => {
                    if !lenient && Self::whole_record_after(&bytes, offset) {
                        return Err(WalError::Corrupt {
                            path,
                            offset: offset as u64,
                            reason: reason.into(),
                        });
                    }
                    break;
                }
            };
            let entry = decode("WAL record", body, WAL_RECORD_BYTES_MAX).map_err(|e| {
                WalError::Corrupt {
                    path: path.clone(),
                    offset: offset as u64,
                    reason: e.to_string(),
                }
            })?;
            entries.push(entry);
            offset += RECORD_HEADER_BYTES + body.len();
        }
        if offset < bytes.len() {
            file.set_len(offset as u64).map_err(io("truncate a torn record"))?;
            file.sync_all().map_err(io("fsync"))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        Ok(FileWal { path, file, memory: MemoryWal { entries } })
    }

    /// Whether a whole, intact record starts anywhere after the damaged one at `damaged`: then
    /// the damage is not a torn tail. (A tear is the end of the last append; the length check
    /// makes a false match in its leftover bytes a one-in-four-billion event per position.)
    fn whole_record_after(bytes: &[u8], damaged: usize) -> bool {
        (damaged + 1..bytes.len()).any(|offset| unframe(bytes, offset).is_ok())
    }

    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> WalError + use<V> {
        let path = self.path.clone();
        move |source| WalError::Io { path, action, source }
    }
}

impl<V: Value> Wal<V> for FileWal<V> {
    fn append(&mut self, entry: &WalEntry<V>) -> Result<(), WalError> {
        let body = encode(entry);
        if body.len() > WAL_RECORD_BYTES_MAX {
            return Err(WalError::TooLarge { path: self.path.clone(), bytes: body.len() });
        }
        self.file.write_all(&frame(&body)).map_err(self.io("append"))?;
        self.file.sync_data().map_err(self.io("fsync"))?;
        self.memory.append(entry)
    }

    fn entries(&self) -> Result<Vec<WalEntry<V>>, WalError> {
        self.memory.entries()
    }

    fn start_height(&mut self, height: Height) -> Result<(), WalError> {
        // Rewrite the kept records to a temporary file and rename it over the log, so a crash
        // leaves either the old log or the new one.
        self.memory.start_height(height)?;
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(self.io("create temporary"))?;
        for entry in &self.memory.entries {
            file.write_all(&frame(&encode(entry))).map_err(self.io("write temporary"))?;
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
