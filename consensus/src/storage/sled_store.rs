//! The node's store on disk: one sled tree, keys prefixed by their [`Tree`].

use std::path::Path;

use super::{Entries, Op, Store, StoreError, Tree};

/// A sled-backed store: one sled tree, keys prefixed by their [`Tree`].
pub struct SledStore {
    db: sled::Db,
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

impl SledStore {
    /// Opens (or creates) a store in `dir`.
    ///
    /// sled's background flusher can hold the directory's file lock for a moment after the last
    /// handle of a store is dropped, so a store closed and reopened in one process (a node
    /// restarted in place, a test) may find it still locked: a lock refusal is retried for up to
    /// two seconds before it is reported. Another live process holding the store still gets the
    /// error.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        const LOCK_RETRIES: u32 = 100;
        const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
        let mut tries = 0;
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => return Ok(SledStore { db }),
                // sled reports the refusal only as an `Other` I/O error with this message.
                Err(sled::Error::Io(io))
                    if tries < LOCK_RETRIES
                        && io.to_string().starts_with("could not acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(e) => return Err(engine(e)),
            }
        }
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(prefixed(tree, key)).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree) -> Result<Entries, StoreError> {
        self.db
            .scan_prefix([tree.prefix()])
            .map(|kv| kv.map(|(k, v)| (k[1..].to_vec(), v.to_vec())).map_err(engine))
            .collect()
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(tree, k, v) => batch.insert(prefixed(tree, &k), v),
                Op::Delete(tree, k) => batch.remove(prefixed(tree, &k)),
            }
        }
        self.db.apply_batch(batch).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(())
    }
}
