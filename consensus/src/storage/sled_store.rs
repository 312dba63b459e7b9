//! The node's store on disk: one sled tree, keys prefixed by their [`Tree`], written back from
//! a journaled overlay.
//!
//! # Why an overlay
//!
//! A block of transfers changes thousands of records under random keys (two accounts and one tx
//! index entry per transfer), and sled pays a tree descent and a page delta for each key: under
//! load that was a third of a validator's CPU. So [`Store::write`] lands a batch as **one**
//! journal record (one insert into a small journal database, on disk before `write` returns) and
//! in an in-memory overlay that every read consults first. Once the overlay holds
//! [`OverlayLimits::entries`] keys or [`OverlayLimits::bytes`] bytes it is frozen, and a
//! background thread writes it to the keyed tree, then removes the journal records it covers. A
//! record that many blocks changed (a busy account) is written to the tree once.
//!
//! The write-back stays out of the way of blocks: the journal is its own sled database, so a
//! block's flush never waits for the keyed tree's pages; the keys go in one by one rather than as
//! a sled batch, which sled applies under a lock every read and write waits for; and the thread
//! paces itself to a quarter of a core unless a write is waiting for it.
//!
//! # Crash safety
//!
//! A batch is durable when `write` returns: its journal record is. Opening the store replays the
//! journal records left, oldest first, into the overlay. A write-back removes its records,
//! oldest first, only once all its keys are on disk; a crash before that leaves a suffix of the
//! records, whose replay shadows whatever part of the write-back landed with the latest values.
//! So the store reads after a crash exactly as it did after the last `write` that returned.
//!
//! # Costs
//!
//! At most one frozen and one filling overlay are in memory (each bounded by the limits, plus the
//! batch that crossed them). A write that fills the overlay while the previous write-back is
//! still running waits for it, so the backlog never grows past two overlays.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Entries, Op, Store, StoreError, Tree};

/// The journal database's folder, inside the store's.
const JOURNAL_DIR: &str = "journal";

/// Keys a write-back inserts between two looks at its pace.
const WRITE_BACK_CHUNK: usize = 1_024;

/// A write-back not hurried sleeps this many times as long as each chunk took: a quarter of a
/// core at most.
const WRITE_BACK_PAUSE: u32 = 3;

/// One write of a batch, by prefixed key: a value to put, or `None` to remove the key.
type Write = (Vec<u8>, Option<Vec<u8>>);

/// When the overlay is written back to the keyed tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlayLimits {
    /// Keys held before a write-back.
    pub entries: usize,
    /// Bytes of keys and values written into the overlay (an overwrite counts again) before a
    /// write-back.
    pub bytes: usize,
}

impl Default for OverlayLimits {
    /// 2^18 keys or 64 MiB: about half a minute at 5,000 transfers a second among 10^5
    /// accounts. A restart replays at most two overlays' journal records (no transaction is
    /// executed again).
    fn default() -> Self {
        OverlayLimits { entries: 1 << 18, bytes: 64 << 20 }
    }
}

/// Writes not yet in the keyed tree, by prefixed key (`None`: removed).
#[derive(Debug, Default)]
struct Overlay {
    entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    /// The journal records whose writes this overlay holds.
    journal: Range<u64>,
}

impl Overlay {
    fn starting_at(seq: u64) -> Overlay {
        Overlay { journal: seq..seq, ..Overlay::default() }
    }

    fn apply(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        self.entries.insert(key, value);
    }

    fn is_over(&self, limits: OverlayLimits) -> bool {
        self.entries.len() >= limits.entries || self.bytes >= limits.bytes
    }

    fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.entries.get(key).cloned()
    }

    /// The writes under `prefix`, in key order.
    fn under(&self, prefix: u8) -> impl Iterator<Item = (&Vec<u8>, &Option<Vec<u8>>)> {
        self.entries.range(vec![prefix]..).take_while(move |(k, _)| k[0] == prefix)
    }
}

/// Lays `writes` over `entries`.
fn lay_over<'a>(
    entries: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    writes: impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
) {
    for (key, value) in writes {
        match value {
            Some(value) => entries.insert(key.clone(), value.clone()),
            None => entries.remove(key),
        };
    }
}

/// The overlay being written back, and the thread writing it (`None` once it failed).
struct WriteBack {
    overlay: Arc<Overlay>,
    thread: Option<JoinHandle<Result<(), sled::Error>>>,
    /// Set when something waits for the thread: it stops pacing itself.
    hurry: Arc<AtomicBool>,
}

struct Overlays {
    /// Where writes land.
    active: Overlay,
    /// The frozen overlay on its way to the keyed tree.
    writing: Option<WriteBack>,
    /// Why the last write-back failed: every later write reports it.
    failed: Option<String>,
}

/// A sled-backed store: one sled tree, keys prefixed by their [`Tree`], written back from a
/// journaled overlay (see the module docs).
pub struct SledStore {
    /// The keyed tree.
    db: sled::Db,
    /// The journal: one record per write not yet written back, keyed by its sequence number.
    journal: sled::Db,
    limits: OverlayLimits,
    overlays: Mutex<Overlays>,
    /// Held by a write from its journal record to its overlay update, so records and overlay
    /// changes keep one order.
    writer: Mutex<()>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SledStore")
    }
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn prefixed(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(tree.prefix());
    out.extend_from_slice(key);
    out
}

fn journal_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data whole (single inserts and swaps).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One journal record: the batch's writes, each `tag (1 put, 0 remove) || key length (u32 LE)
/// || key`, then for a put `value length (u32 LE) || value`.
fn journal_record(writes: &[Write]) -> Vec<u8> {
    let size = writes.iter().map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len)).sum();
    let mut out = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).expect("records are far below 4 GiB").to_le_bytes();
    for (key, value) in writes {
        out.push(u8::from(value.is_some()));
        out.extend_from_slice(&len(key.len()));
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(&len(value.len()));
            out.extend_from_slice(value);
        }
    }
    out
}

/// The writes of a journal record; every length is checked against the bytes left.
fn read_journal_record(mut bytes: &[u8]) -> Result<Vec<Write>, &'static str> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        let (head, rest) = bytes.split_at_checked(n).ok_or("cut short")?;
        *bytes = rest;
        Ok(head)
    }
    fn sized<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
        let n = u32::from_le_bytes(take(bytes, 4)?.try_into().expect("4 bytes"));
        take(bytes, n as usize)
    }
    let mut writes = Vec::new();
    while !bytes.is_empty() {
        let tag = take(&mut bytes, 1)?[0];
        let key = sized(&mut bytes)?.to_vec();
        if key.is_empty() {
            // Every key written carries its tree's prefix byte.
            return Err("empty key");
        }
        let value = match tag {
            0 => None,
            1 => Some(sized(&mut bytes)?.to_vec()),
            _ => return Err("unknown write tag"),
        };
        writes.push((key, value));
    }
    Ok(writes)
}

/// Writes `overlay` to the keyed tree key by key (paced unless `hurry` is set), then removes
/// the journal records it covers, oldest first, once the keys are on disk.
fn write_back(
    db: &sled::Db,
    journal: &sled::Db,
    overlay: &Overlay,
    hurry: &AtomicBool,
) -> Result<(), sled::Error> {
    let mut entries = overlay.entries.iter().peekable();
    while entries.peek().is_some() {
        let started = Instant::now();
        for (key, value) in entries.by_ref().take(WRITE_BACK_CHUNK) {
            match value {
                Some(value) => db.insert(key.as_slice(), value.as_slice())?,
                None => db.remove(key.as_slice())?,
            };
        }
        if !hurry.load(Ordering::Relaxed) {
            std::thread::sleep(started.elapsed() * WRITE_BACK_PAUSE);
        }
    }
    db.flush()?;
    for seq in overlay.journal.clone() {
        journal.remove(journal_key(seq))?;
    }
    journal.flush()?;
    Ok(())
}

/// Opens the sled database in `dir`. sled's background flusher can hold the directory's file
/// lock for a moment after the last handle is dropped, so a refusal is retried for up to two
/// seconds.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    const LOCK_RETRIES: u32 = 100;
    const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(20);
    let mut tries = 0;
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            // sled reports the refusal only as an `Other` I/O error with this message.
            Err(sled::Error::Io(io))
                if tries < LOCK_RETRIES && io.to_string().starts_with("could not acquire lock") =>
            {
                tries += 1;
                std::thread::sleep(LOCK_RETRY_PAUSE);
            }
            Err(e) => return Err(engine(e)),
        }
    }
}

impl SledStore {
    /// Opens (or creates) a store in `dir` (the journal in its `journal` folder), replaying the
    /// journal records a crash left.
    ///
    /// sled's background flusher can hold a directory's file lock for a moment after the last
    /// handle of a store is dropped, so a store closed and reopened in one process (a node
    /// restarted in place, a test) may find it still locked: a lock refusal is retried for up to
    /// two seconds before it is reported. Another live process holding the store still gets the
    /// error.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(dir, OverlayLimits::default())
    }

    /// [`SledStore::open`] with other overlay limits.
    pub fn open_with(dir: &Path, limits: OverlayLimits) -> Result<SledStore, StoreError> {
        let db = open_db(dir)?;
        let journal = open_db(&dir.join(JOURNAL_DIR))?;
        let active = SledStore::replay_journal(&journal)?;
        let store = SledStore {
            db,
            journal,
            limits,
            overlays: Mutex::new(Overlays { active, writing: None, failed: None }),
            writer: Mutex::new(()),
        };
        if lock(&store.overlays).active.is_over(limits) {
            let _writer = lock(&store.writer);
            store.start_write_back()?;
        }
        Ok(store)
    }

    /// The overlay the journal records in `db` rebuild, oldest first.
    fn replay_journal(journal: &sled::Db) -> Result<Overlay, StoreError> {
        let mut overlay: Option<Overlay> = None;
        for kv in journal.iter() {
            let (key, record) = kv.map_err(engine)?;
            let seq = (*key).try_into().ok().map(u64::from_be_bytes);
            let seq = seq.ok_or_else(|| {
                StoreError::Engine(format!("the journal holds a malformed key {:x?}", &*key))
            })?;
            let corrupt =
                |why: &str| StoreError::Engine(format!("journal record {seq} is corrupt: {why}"));
            let overlay = overlay.get_or_insert_with(|| Overlay::starting_at(seq));
            if seq != overlay.journal.end {
                return Err(corrupt("the journal skips a record"));
            }
            for (key, value) in read_journal_record(&record).map_err(corrupt)? {
                overlay.apply(key, value);
            }
            overlay.journal.end = seq + 1;
        }
        Ok(overlay.unwrap_or_default())
    }

    /// Freezes the active overlay and starts writing it back, after the previous write-back
    /// ends. The caller holds `writer`.
    fn start_write_back(&self) -> Result<(), StoreError> {
        self.finish_write_back(true)?;
        let mut overlays = lock(&self.overlays);
        let next = Overlay::starting_at(overlays.active.journal.end);
        let frozen = Arc::new(std::mem::replace(&mut overlays.active, next));
        let hurry = Arc::new(AtomicBool::new(false));
        let (db, journal) = (self.db.clone(), self.journal.clone());
        let (overlay, hurried) = (Arc::clone(&frozen), Arc::clone(&hurry));
        let thread = std::thread::Builder::new()
            .name("store-write-back".into())
            .spawn(move || write_back(&db, &journal, &overlay, &hurried))
            .map_err(|e| StoreError::Engine(format!("starting the write-back thread: {e}")))?;
        overlays.writing = Some(WriteBack { overlay: frozen, thread: Some(thread), hurry });
        Ok(())
    }

    /// Ends the running write-back: waits for it if `wait`, else only if it is done. A failure
    /// is kept (every later write reports it) and the frozen overlay stays readable.
    fn finish_write_back(&self, wait: bool) -> Result<(), StoreError> {
        let thread = {
            let mut overlays = lock(&self.overlays);
            if let Some(failed) = &overlays.failed {
                return Err(StoreError::Engine(format!("writing back the overlay: {failed}")));
            }
            let Some(writing) = overlays.writing.as_mut() else { return Ok(()) };
            if wait {
                writing.hurry.store(true, Ordering::Relaxed);
            }
            match &writing.thread {
                Some(thread) if wait || thread.is_finished() => writing.thread.take(),
                _ => None,
            }
        };
        let Some(thread) = thread else { return Ok(()) };
        let outcome = match thread.join() {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the write-back thread panicked".to_string()),
        };
        let mut overlays = lock(&self.overlays);
        match outcome {
            Ok(()) => {
                overlays.writing = None;
                Ok(())
            }
            Err(why) => {
                overlays.failed = Some(why.clone());
                Err(StoreError::Engine(format!("writing back the overlay: {why}")))
            }
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // The journal holds whatever is not written back; waiting only lets the thread's handle
        // on the database go before this store's does.
        let thread = lock(&self.overlays).writing.as_mut().and_then(|w| {
            w.hurry.store(true, Ordering::Relaxed);
            w.thread.take()
        });
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = prefixed(tree, key);
        {
            let overlays = lock(&self.overlays);
            let frozen = overlays.writing.as_ref().map(|w| &w.overlay);
            if let Some(found) = overlays.active.get(&key).or_else(|| frozen?.get(&key)) {
                return Ok(found);
            }
        }
        Ok(self.db.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree) -> Result<Entries, StoreError> {
        let prefix = tree.prefix();
        let (active, frozen): (Vec<_>, _) = {
            let overlays = lock(&self.overlays);
            let active = overlays.active.under(prefix).map(|(k, v)| (k.clone(), v.clone()));
            (active.collect(), overlays.writing.as_ref().map(|w| Arc::clone(&w.overlay)))
        };
        let mut entries = BTreeMap::new();
        for kv in self.db.scan_prefix([prefix]) {
            let (k, v) = kv.map_err(engine)?;
            entries.insert(k.to_vec(), v.to_vec());
        }
        if let Some(frozen) = frozen {
            lay_over(&mut entries, frozen.under(prefix));
        }
        lay_over(&mut entries, active.iter().map(|(k, v)| (k, v)));
        Ok(entries.into_iter().map(|(k, v)| (k[1..].to_vec(), v)).collect())
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let _writer = lock(&self.writer);
        self.finish_write_back(false)?;
        let writes: Vec<Write> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put(tree, k, v) => (prefixed(tree, &k), Some(v)),
                Op::Delete(tree, k) => (prefixed(tree, &k), None),
            })
            .collect();
        let seq = lock(&self.overlays).active.journal.end;
        self.journal.insert(journal_key(seq), journal_record(&writes)).map_err(engine)?;
        self.journal.flush().map_err(engine)?;
        let over = {
            let mut overlays = lock(&self.overlays);
            let active = &mut overlays.active;
            for (key, value) in writes {
                active.apply(key, value);
            }
            active.journal.end = seq + 1;
            active.is_over(self.limits)
        };
        if over {
            self.start_write_back()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStore;

    fn small() -> OverlayLimits {
        OverlayLimits { entries: 4, bytes: 1 << 20 }
    }

    #[test]
    fn journal_records_round_trip_and_refuse_what_is_cut_short() {
        let writes = vec![(b"\x01ab".to_vec(), Some(b"v".to_vec())), (b"\x01c".to_vec(), None)];
        let record = journal_record(&writes);
        assert_eq!(read_journal_record(&record).unwrap(), writes);
        // A cut between the two writes leaves a whole record of the first; any other is refused.
        let first = journal_record(&writes[..1]).len();
        for cut in (1..record.len()).filter(|&cut| cut != first) {
            assert!(read_journal_record(&record[..cut]).is_err(), "cut at {cut} was read");
        }
        let mut bad_tag = record.clone();
        bad_tag[0] = 7;
        assert!(read_journal_record(&bad_tag).is_err());
        assert!(read_journal_record(&journal_record(&[(Vec::new(), None)])).is_err());
    }

    /// A batch of one to three puts and removes over a few keys of two trees.
    fn random_batch(rng: &mut impl rand::Rng, step: u8) -> Vec<Op> {
        (0..rng.random_range(1..4))
            .map(|_| {
                let tree = if rng.random_bool(0.7) { Tree::Accounts } else { Tree::TxIndex };
                let key = vec![rng.random_range(0..12u8)];
                if rng.random_bool(0.25) {
                    Op::Delete(tree, key)
                } else {
                    Op::Put(tree, key, vec![step; rng.random_range(0..3)])
                }
            })
            .collect()
    }

    #[test]
    fn reads_match_a_plain_map_across_write_backs_and_reopens() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let open = || SledStore::open_with(dir.path(), small()).unwrap();
        let model = MemStore::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut store = open();
        let (mut reopens, mut writes) = (0, 0);
        for step in 0..300u16 {
            let batch = random_batch(&mut rng, step as u8);
            model.write(batch.clone()).unwrap();
            store.write(batch).unwrap();
            writes += 1;
            if rng.random_bool(0.1) {
                // Whatever is not written back yet comes back from the journal.
                drop(store);
                store = open();
                reopens += 1;
            }
            for tree in [Tree::Accounts, Tree::TxIndex] {
                assert_eq!(store.scan(tree).unwrap(), model.scan(tree).unwrap(), "step {step}");
                for key in 0..12u8 {
                    assert_eq!(store.get(tree, &[key]).unwrap(), model.get(tree, &[key]).unwrap());
                }
            }
        }
        assert!(reopens > 10);
        // The writes went to the keyed tree, and the journal kept only the active overlay's.
        store.finish_write_back(true).unwrap();
        let journal = store.journal.len();
        let active = lock(&store.overlays).active.journal.clone();
        assert_eq!(journal as u64, active.end - active.start);
        assert!(journal < small().entries, "{journal} of {writes} records left");
        assert!(store.db.scan_prefix([Tree::Accounts.prefix()]).count() > 0);
    }

    #[test]
    fn a_write_back_cut_short_by_a_crash_reads_the_same_after_reopening() {
        use rand::SeedableRng;
        // Where the crash falls: after every other key of the overlay reached the keyed tree
        // (the journal whole), or after all of them and the removal of the older half of the
        // journal records.
        for all_keys in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let model = MemStore::new();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            let store = SledStore::open(dir.path()).unwrap();
            for step in 0..40u8 {
                let batch = random_batch(&mut rng, step);
                model.write(batch.clone()).unwrap();
                store.write(batch).unwrap();
            }
            let (overlay, records) = {
                let overlays = lock(&store.overlays);
                (overlays.active.entries.clone(), overlays.active.journal.clone())
            };
            for (key, value) in overlay.iter().step_by(if all_keys { 1 } else { 2 }) {
                match value {
                    Some(value) => store.db.insert(key.as_slice(), value.as_slice()).unwrap(),
                    None => store.db.remove(key.as_slice()).unwrap(),
                };
            }
            if all_keys {
                for seq in records.start..records.start + (records.end - records.start) / 2 {
                    store.journal.remove(journal_key(seq)).unwrap();
                }
            }
            drop(store);
            let store = SledStore::open(dir.path()).unwrap();
            for tree in [Tree::Accounts, Tree::TxIndex] {
                assert_eq!(store.scan(tree).unwrap(), model.scan(tree).unwrap());
                for key in 0..12u8 {
                    assert_eq!(store.get(tree, &[key]).unwrap(), model.get(tree, &[key]).unwrap());
                }
            }
        }
    }

    #[test]
    fn a_journal_with_a_gap_or_a_damaged_record_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open_with(dir.path(), OverlayLimits::default()).unwrap();
        for i in 0..3u8 {
            store.write(vec![Op::Put(Tree::Accounts, vec![i], vec![i])]).unwrap();
        }
        store.journal.remove(journal_key(1)).unwrap();
        drop(store);
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("skips a record"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.write(vec![Op::Put(Tree::Accounts, vec![1], vec![1])]).unwrap();
        store.journal.insert(journal_key(1), vec![1, 200, 0, 0, 0]).unwrap();
        drop(store);
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }
}
