//! What a role must not forget across a restart: one JSON file per task under
//! `DATA_DIR/roles/<role>/task-<id>.json`, replaced atomically.
//!
//! A write goes to `task-<id>.json.tmp`, is flushed to disk (`fsync`), renamed over the old file,
//! and the folder is flushed too, so after a crash the file holds either the old record or the new
//! one, never a mix. A temporary file a crash left behind is deleted when the store is opened.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use consensus::types::TaskId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::datadir::DataDir;

/// The folder under the data directory that holds every role's records.
pub const ROLES_DIR: &str = "roles";

/// Largest record file read, in bytes (a verdict vector of a full task is a few KiB).
pub const RECORD_BYTES_MAX: u64 = 16 << 20;

/// Why a record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file or folder could not be written or read.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record file is not valid JSON for its type.
    #[error("{path} is not a valid record: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A record file is larger than [`RECORD_BYTES_MAX`].
    #[error("{path} is {size_bytes} bytes, more than {RECORD_BYTES_MAX}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size_bytes: u64,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PersistError {
    let path = path.to_path_buf();
    move |source| PersistError::Io { action, path, source }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed, renamed over `path`,
/// then the folder flushed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    file.write_all(bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("flushing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("flushing folder", dir))?;
    }
    Ok(())
}

/// One role's records, one file per task.
#[derive(Clone, Debug)]
pub struct RoleStore {
    dir: PathBuf,
}

impl RoleStore {
    /// Opens (creating if needed) `DATA_DIR/roles/<role>/` and deletes temporary files a crash
    /// left there.
    pub fn open(data_dir: &DataDir, role: &str) -> Result<RoleStore, PersistError> {
        RoleStore::open_at(data_dir.root().join(ROLES_DIR).join(role))
    }

    /// Opens (creating if needed) a store in `dir`.
    pub fn open_at(dir: PathBuf) -> Result<RoleStore, PersistError> {
        fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let path = entry.map_err(io("listing", &dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(io("removing stale", &path))?;
            }
        }
        Ok(RoleStore { dir })
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `task`'s record.
    pub fn path(&self, task: TaskId) -> PathBuf {
        self.dir.join(format!("task-{}.json", task.0))
    }

    /// Writes `task`'s record atomically, replacing any earlier one.
    pub fn save<T: Serialize>(&self, task: TaskId, record: &T) -> Result<(), PersistError> {
        let path = self.path(task);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|source| PersistError::Json { path: path.clone(), source })?;
        write_atomic(&path, &bytes)
    }

    /// Reads every record, by task. Files that are not `task-<id>.json` are ignored.
    pub fn load_all<T: DeserializeOwned>(&self) -> Result<BTreeMap<TaskId, T>, PersistError> {
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let path = entry.map_err(io("listing", &self.dir))?.path();
            let Some(task) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("task-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let size_bytes = fs::metadata(&path).map_err(io("reading", &path))?.len();
            if size_bytes > RECORD_BYTES_MAX {
                return Err(PersistError::TooLarge { path, size_bytes });
            }
            let bytes = fs::read(&path).map_err(io("reading", &path))?;
            let record = serde_json::from_slice(&bytes)
                .map_err(|source| PersistError::Json { path: path.clone(), source })?;
            records.insert(TaskId(task), record);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Record {
        n: u32,
    }

    #[test]
    fn records_survive_a_reopen_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(dir.path());
        let store = RoleStore::open(&data_dir, "test").unwrap();
        assert_eq!(store.dir(), dir.path().join("roles/test"));
        store.save(TaskId(3), &Record { n: 1 }).unwrap();
        store.save(TaskId(3), &Record { n: 2 }).unwrap();
        store.save(TaskId(12), &Record { n: 7 }).unwrap();
        // What a crash between write and rename leaves: a temporary file, and an unrelated file.
        fs::write(store.dir().join("task-5.json.tmp"), b"{\"n\": 9").unwrap();
        fs::write(store.dir().join("notes.txt"), b"hello").unwrap();

        let reopened = RoleStore::open(&data_dir, "test").unwrap();
        let records: BTreeMap<TaskId, Record> = reopened.load_all().unwrap();
        assert_eq!(
            records.into_iter().collect::<Vec<_>>(),
            vec![(TaskId(3), Record { n: 2 }), (TaskId(12), Record { n: 7 })]
        );
        assert!(!store.dir().join("task-5.json.tmp").exists(), "stale temp files are removed");
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = RoleStore::open_at(dir.path().join("r")).unwrap();
        fs::write(store.path(TaskId(1)), b"not json").unwrap();
        let err = store.load_all::<Record>().unwrap_err();
        assert!(err.to_string().contains("task-1.json"), "{err}");
    }
}
