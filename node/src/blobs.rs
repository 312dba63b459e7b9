//! The node's blob store: content-addressed files (model artifacts, public training data) named by
//! the plain sha256 of their bytes.
//!
//! A blob lives at `DIR/<sha256 hex>`. It only ever appears there whole and verified: a writer
//! streams bytes into `DIR/tmp/<hex>.<n>.part` while hashing them, and on [`BlobWriter::finish`]
//! compares the digest with the expected hash, syncs the file and renames it into place (a rename
//! within one directory tree is atomic). A large blob is also synced in the background every few
//! MiB while it is written, so the disk works while the bytes arrive and the last sync is short. A
//! mismatch deletes the temporary file and names the hash that arrived, so a half-written or
//! forged blob is never served.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use consensus::state::State;
use consensus::types::{AccountId, Hash, Height, TaskId};
use sha2::{Digest, Sha256};

/// The blob store's folder inside a node's data dir.
pub const BLOBS_DIR: &str = "blobs";

/// Largest blob the store accepts, in bytes (a model artifact or a training file); callers pass a
/// smaller limit when they know the expected size.
pub const BLOB_BYTES_LIMIT: u64 = 4 << 30;

/// Bytes a writer writes between two background syncs: the disk takes a large blob while it
/// arrives, so the sync in [`BlobWriter::finish`] has at most about this much left to write.
const SYNC_STEP_BYTES: u64 = 8 << 20;

/// Most bytes of chunk buffers kept for reuse (see [`chunk_buffer`]).
const SPARE_CHUNK_BYTES_MAX: usize = 32 << 20;

/// Chunk buffers given back with [`recycle_chunk`], and their total capacity in bytes.
static SPARE_CHUNKS: Mutex<(Vec<Vec<u8>>, usize)> = Mutex::new((Vec::new(), 0));

/// A buffer of `len` bytes for a blob chunk, the last one given back to [`recycle_chunk`] when it
/// is large enough: a transfer cycles through a few warm buffers instead of faulting in and zeroing
/// fresh memory for every chunk. Its bytes are stale (only bytes past its old length are zeroed):
/// the caller overwrites all of them.
pub(crate) fn chunk_buffer(len: usize) -> Vec<u8> {
    let spare = {
        let mut spare = SPARE_CHUNKS.lock().unwrap_or_else(|e| e.into_inner());
        let found = spare.0.pop_if(|buffer| buffer.capacity() >= len);
        if let Some(buffer) = &found {
            spare.1 -= buffer.capacity();
        }
        found
    };
    match spare {
        Some(mut buffer) => {
            buffer.resize(len, 0);
            buffer
        }
        None => vec![0; len],
    }
}

/// Keeps a chunk buffer for [`chunk_buffer`], while the kept buffers stay under
/// [`SPARE_CHUNK_BYTES_MAX`] bytes.
pub(crate) fn recycle_chunk(buffer: Vec<u8>) {
    let mut spare = SPARE_CHUNKS.lock().unwrap_or_else(|e| e.into_inner());
    if spare.1 + buffer.capacity() <= SPARE_CHUNK_BYTES_MAX {
        spare.1 += buffer.capacity();
        spare.0.push(buffer);
    }
}

/// Distinguishes temporary files of concurrent writers in one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobStoreError {
    /// The bytes do not hash to the name they were stored under.
    #[error("blob bytes hash to {found}, not to the expected {expected}")]
    HashMismatch {
        /// The hash the blob was requested or announced under.
        expected: Hash,
        /// The sha256 of the bytes that arrived.
        found: Hash,
    },
    /// More or fewer bytes than announced.
    #[error("blob {hash} is {found} bytes, expected {expected}")]
    SizeMismatch {
        /// The blob.
        hash: Hash,
        /// The announced size.
        expected: u64,
        /// The bytes written.
        found: u64,
    },
    /// The blob is larger than the limit.
    #[error("blob {hash} is {size_bytes} bytes, over the limit of {limit}")]
    TooLarge {
        /// The blob.
        hash: Hash,
        /// Its size.
        size_bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A range outside the blob.
    #[error("range {offset}+{length} is outside blob {hash} of {size_bytes} bytes")]
    BadRange {
        /// The blob.
        hash: Hash,
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        length: u64,
        /// The blob's size.
        size_bytes: u64,
    },
    /// The file system failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BlobStoreError + 'a {
    move |source| BlobStoreError::Io { action, path: path.to_path_buf(), source }
}

/// What a blob store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Blobs.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} blobs, {:.1} MiB", self.blobs, self.bytes as f64 / (1 << 20) as f64)
    }
}

/// Model artifacts no one needs any more: those revealed in tasks whose score deadline is at
/// least `retention_blocks` before `now` and that were finalized, except the champions (a later
/// task may fine-tune from one). Training files and blobs no task names are kept.
pub fn finished_artifacts(state: &State, now: Height, retention_blocks: u64) -> Vec<Hash> {
    let done: Vec<TaskId> = state
        .tasks
        .iter()
        .filter(|(_, t)| t.report.is_some() && t.score_deadline().plus(retention_blocks) <= now)
        .map(|(id, _)| *id)
        .collect();
    let mut hashes: Vec<Hash> = done
        .iter()
        .flat_map(|task| {
            let from = (*task, AccountId([0; 32]));
            let to = (*task, AccountId([0xff; 32]));
            state.submissions.range(from..=to).filter_map(|(_, s)| s.reveal.map(|r| r.model_hash))
        })
        .filter(|hash| !state.champions.contains(hash))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// A folder of blobs named by their sha256.
#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store at `dir`, and deletes temporary files a crash left.
    pub fn open(dir: &Path) -> Result<BlobStore, BlobStoreError> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io("listing", &tmp))? {
            let path = entry.map_err(io("listing", &tmp))?.path();
            if path.extension().is_some_and(|e| e == "part") {
                fs::remove_file(&path).map_err(io("removing stale", &path))?;
            }
        }
        Ok(BlobStore { dir: dir.to_path_buf() })
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `hash` lives (whether or not it is there).
    pub fn path(&self, hash: &Hash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// The blob's size in bytes, or `None` when the store does not hold it.
    pub fn size(&self, hash: &Hash) -> Result<Option<u64>, BlobStoreError> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// How many blobs the store holds and their bytes in total (temporary files not counted).
    pub fn usage(&self) -> Result<Usage, BlobStoreError> {
        let mut usage = Usage::default();
        for entry in fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let entry = entry.map_err(io("listing", &self.dir))?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.parse::<Hash>().is_ok()) {
                let meta = entry.metadata().map_err(io("reading", &entry.path()))?;
                usage.blobs += 1;
                usage.bytes += meta.len();
            }
        }
        Ok(usage)
    }

    /// Deletes the blob `hash`; returns its size, or `None` when the store did not hold it.
    pub fn remove(&self, hash: &Hash) -> Result<Option<u64>, BlobStoreError> {
        let Some(size) = self.size(hash)? else { return Ok(None) };
        let path = self.path(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(size)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("removing", &path)(e)),
        }
    }

    /// Whether the store holds the blob.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.path(hash).is_file()
    }

    /// Stores `bytes` under their sha256 and returns it.
    pub fn put(&self, bytes: &[u8]) -> Result<Hash, BlobStoreError> {
        let hash = Hash(Sha256::digest(bytes).into());
        let mut writer = self.writer(hash, bytes.len() as u64, BLOB_BYTES_LIMIT)?;
        writer.write(bytes)?;
        writer.finish()?;
        Ok(hash)
    }

    /// Reads a whole blob of at most `limit` bytes, or `None` when the store does not hold it.
    pub fn get(&self, hash: &Hash, limit: u64) -> Result<Option<Vec<u8>>, BlobStoreError> {
        let Some(size_bytes) = self.size(hash)? else { return Ok(None) };
        if size_bytes > limit {
            return Err(BlobStoreError::TooLarge { hash: *hash, size_bytes, limit });
        }
        self.read_range(hash, 0, size_bytes).map(|found| found.map(|(_, bytes)| bytes))
    }

    /// Reads `length` bytes from `offset` (cut at the blob's end), with the blob's size; `None`
    /// when the store does not hold it. The caller bounds `length`.
    pub fn read_range(
        &self,
        hash: &Hash,
        offset: u64,
        length: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, BlobStoreError> {
        let path = self.path(hash);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("opening", &path)(e)),
        };
        let size_bytes = file.metadata().map_err(io("reading", &path))?.len();
        if offset > size_bytes || (offset == size_bytes && size_bytes > 0) {
            return Err(BlobStoreError::BadRange { hash: *hash, offset, length, size_bytes });
        }
        let take = length.min(size_bytes - offset);
        let take_usize = usize::try_from(take).map_err(|_| BlobStoreError::BadRange {
            hash: *hash,
            offset,
            length,
            size_bytes,
        })?;
        file.seek(SeekFrom::Start(offset)).map_err(io("seeking in", &path))?;
        let mut bytes = chunk_buffer(take_usize);
        file.read_exact(&mut bytes).map_err(io("reading", &path))?;
        Ok(Some((size_bytes, bytes)))
    }

    /// Starts writing the blob `expected` of `size_bytes` bytes into a temporary file; refuses a
    /// size over `limit` before anything is written.
    pub fn writer(
        &self,
        expected: Hash,
        size_bytes: u64,
        limit: u64,
    ) -> Result<BlobWriter, BlobStoreError> {
        let limit = limit.min(BLOB_BYTES_LIMIT);
        if size_bytes > limit {
            return Err(BlobStoreError::TooLarge { hash: expected, size_bytes, limit });
        }
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join("tmp").join(format!(
            "{}.{}.{n}.part",
            expected.to_hex(),
            std::process::id()
        ));
        let file = File::create(&temp).map_err(io("creating", &temp))?;
        Ok(BlobWriter {
            file: Some(file),
            temp,
            dest: self.path(&expected),
            expected,
            size_bytes,
            written: 0,
            synced_at: 0,
            syncer: None,
            hasher: Sha256::new(),
        })
    }
}

/// A blob being written: bytes in order, hashed as they come; see [`BlobStore::writer`]. Dropped
/// without [`BlobWriter::finish`], it deletes its temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
    expected: Hash,
    size_bytes: u64,
    written: u64,
    /// `written` when a background sync was last asked for.
    synced_at: u64,
    /// Syncs the file in the background once the blob passes [`SYNC_STEP_BYTES`].
    syncer: Option<Syncer>,
    hasher: Sha256,
}

/// Syncs a writer's file on its own thread, while the writer goes on writing.
#[derive(Debug)]
struct Syncer {
    /// Asks for one more sync; a full queue means one is already due.
    due: std::sync::mpsc::SyncSender<()>,
    /// Ends when `due` is dropped, with the first sync error if any.
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Syncer {
    /// Starts syncing a second handle of `file`; `None` when the thread cannot start (the
    /// writer then syncs everything in [`BlobWriter::finish`]).
    fn start(file: &File) -> Option<Syncer> {
        let file = file.try_clone().ok()?;
        let (due, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("blob-sync".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })
            .ok()?;
        Some(Syncer { due, thread })
    }

    /// Stops the thread after its current sync and returns that sync's error, if any: the
    /// handles share one open file, so an error it saw may not be reported again to the writer.
    fn stop(self) -> std::io::Result<()> {
        drop(self.due);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the blob syncer panicked")))
    }
}

impl BlobWriter {
    /// Appends the next bytes; refuses bytes past the announced size.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobStoreError> {
        let found = self.written + bytes.len() as u64;
        if found > self.size_bytes {
            return Err(BlobStoreError::SizeMismatch {
                hash: self.expected,
                expected: self.size_bytes,
                found,
            });
        }
        let file = self.file.as_mut().expect("a writer's file is open until finish");
        file.write_all(bytes).map_err(io("writing", &self.temp))?;
        self.hasher.update(bytes);
        self.written = found;
        if self.written - self.synced_at >= SYNC_STEP_BYTES {
            self.synced_at = self.written;
            if self.syncer.is_none() {
                self.syncer = Syncer::start(file);
            }
            if let Some(syncer) = &self.syncer {
                // Full: a sync is already due and will take these bytes too. Disconnected: the
                // thread stopped on an error, which `finish` reports.
                let _ = syncer.due.try_send(());
            }
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and sha256, syncs, and renames the blob into place. On a mismatch the
    /// temporary file is deleted and nothing is stored.
    pub fn finish(mut self) -> Result<PathBuf, BlobStoreError> {
        if self.written != self.size_bytes {
            return Err(BlobStoreError::SizeMismatch {
                hash: self.expected,
                expected: self.size_bytes,
                found: self.written,
            });
        }
        let found = Hash(std::mem::take(&mut self.hasher).finalize().into());
        if found != self.expected {
            return Err(BlobStoreError::HashMismatch { expected: self.expected, found });
        }
        if let Some(syncer) = self.syncer.take() {
            syncer.stop().map_err(io("syncing", &self.temp))?;
        }
        let file = self.file.take().expect("a writer's file is open until finish");
        file.sync_data().map_err(io("syncing", &self.temp))?;
        drop(file);
        fs::rename(&self.temp, &self.dest).map_err(io("renaming into", &self.dest))?;
        Ok(self.dest.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() || self.temp.exists() {
            // Best effort: a leftover is removed at the next open.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blobs_only_and_remove_frees_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(store.usage().unwrap(), Usage::default());
        let a = store.put(&[1; 1000]).unwrap();
        store.put(&[2; 24]).unwrap();
        fs::write(dir.path().join("tmp").join("x.part"), [0; 50]).unwrap();
        fs::write(dir.path().join("notes.txt"), [0; 50]).unwrap();
        assert_eq!(store.usage().unwrap(), Usage { blobs: 2, bytes: 1024 });
        assert_eq!(store.remove(&a).unwrap(), Some(1000));
        assert_eq!(store.remove(&a).unwrap(), None);
        assert!(!store.contains(&a));
        assert_eq!(store.usage().unwrap().to_string(), "1 blobs, 0.0 MiB");
    }

    #[test]
    fn put_read_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let hash = store.put(&bytes).unwrap();
        assert_eq!(hash, consensus::hash::sha256(&bytes));
        assert!(store.contains(&hash));
        assert_eq!(store.size(&hash).unwrap(), Some(10_000));
        assert_eq!(store.get(&hash, 1 << 20).unwrap().unwrap(), bytes);
        let (size, part) = store.read_range(&hash, 9_000, 5_000).unwrap().unwrap();
        assert_eq!((size, part.as_slice()), (10_000, &bytes[9_000..]));
        assert!(matches!(store.read_range(&hash, 10_000, 1), Err(BlobStoreError::BadRange { .. })));
        assert!(matches!(store.get(&hash, 10), Err(BlobStoreError::TooLarge { .. })));
        assert!(store.get(&Hash([1; 32]), 10).unwrap().is_none());
    }

    #[test]
    fn a_large_blob_is_synced_in_the_background_and_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..(3 * SYNC_STEP_BYTES as u32 + 12_345)).map(|i| i as u8).collect();
        let hash = Hash(Sha256::digest(&bytes).into());
        let mut writer = store.writer(hash, bytes.len() as u64, BLOB_BYTES_LIMIT).unwrap();
        for piece in bytes.chunks(1 << 20) {
            writer.write(piece).unwrap();
        }
        assert!(writer.syncer.is_some(), "a blob past the sync step syncs in the background");
        let path = writer.finish().unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);

        // Dropped halfway, with its syncer running, a writer leaves nothing behind.
        let mut writer = store.writer(Hash([9; 32]), bytes.len() as u64, BLOB_BYTES_LIMIT).unwrap();
        writer.write(&bytes[..2 * SYNC_STEP_BYTES as usize]).unwrap();
        drop(writer);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn chunk_buffers_have_the_asked_length_whatever_was_given_back() {
        recycle_chunk(vec![1; 100]);
        assert_eq!(chunk_buffer(10).len(), 10);
        recycle_chunk(vec![2; 10]);
        assert_eq!(chunk_buffer(1_000).len(), 1_000, "too small a spare is not used");
        let spare = SPARE_CHUNKS.lock().unwrap();
        assert!(spare.1 <= SPARE_CHUNK_BYTES_MAX);
        assert_eq!(spare.1, spare.0.iter().map(Vec::capacity).sum::<usize>());
    }

    #[test]
    fn a_mismatch_stores_nothing_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let expected = Hash([7; 32]);
        let mut writer = store.writer(expected, 3, 100).unwrap();
        writer.write(b"abc").unwrap();
        assert!(matches!(writer.finish(), Err(BlobStoreError::HashMismatch { .. })));
        assert!(!store.contains(&expected));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let mut writer = store.writer(expected, 2, 100).unwrap();
        assert!(matches!(writer.write(b"abc"), Err(BlobStoreError::SizeMismatch { .. })));
        assert!(matches!(store.writer(expected, 101, 100), Err(BlobStoreError::TooLarge { .. })));
    }
}
