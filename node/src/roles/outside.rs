//! Models trained outside the project: a trainer node that takes its artifacts from a folder
//! (`node --role trainer --submit-dir DIR`) instead of training them with a recipe.
//!
//! Anyone who trains with PyTorch, JAX, numpy or on data of their own writes a safetensors file in
//! the documented layout (README, "Models and artifacts") and hands it to such a node, with
//! `node submit` or by dropping it into the folder as `task-<ID>.safetensors`. The trainer role
//! then does what it does after training a model of its own: it joins the task, withholds the
//! artifact, commits, reveals once the held-out key is on chain, and serves it
//! ([`super::trainer`]). A file is checked with the validators' own checks
//! ([`validator::check::check_artifact`]: size, safetensors format, dtypes, architecture,
//! parameter count, finite values) **before** the node joins, so a bad file costs neither an
//! entry fee nor a bond.
//!
//! The running node records the folder it watches in `DATA_DIR/roles/trainer/source.json`
//! ([`SOURCE_FILE`]), so `node submit --data-dir DATA_DIR` finds it without being told.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use consensus::task::TaskSpec;
use consensus::types::TaskId;
use serde::{Deserialize, Serialize};
use validator::check::{CheckError, CheckedArtifact, check_artifact};

use super::persist::{PersistError, ROLES_DIR, write_atomic};

/// The record, under the trainer's folder, of the submit folder a running trainer watches.
pub const SOURCE_FILE: &str = "source.json";

/// Most entries of the submit folder looked at in one pass (the rest wait for a later pass).
pub const SUBMIT_DIR_ENTRIES_MAX: usize = 4096;

/// Largest [`SOURCE_FILE`] read, in bytes.
const SOURCE_BYTES_MAX: u64 = 64 << 10;

/// The name a task's model has in the submit folder.
pub fn model_file_name(task: TaskId) -> String {
    format!("task-{}.safetensors", task.0)
}

/// The task a submit-folder file name is for (`task-<ID>.safetensors`), if it is one.
pub fn task_of_file_name(name: &str) -> Option<TaskId> {
    let id = name.strip_prefix("task-")?.strip_suffix(".safetensors")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().map(TaskId)
}

/// The tasks that have a model waiting in `dir` (at most [`SUBMIT_DIR_ENTRIES_MAX`] entries are
/// looked at). A missing folder holds none.
pub fn waiting_models(dir: &Path) -> std::io::Result<BTreeSet<TaskId>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut tasks = BTreeSet::new();
    for entry in entries.take(SUBMIT_DIR_ENTRIES_MAX) {
        let entry = entry?;
        if let Some(task) = entry.file_name().to_str().and_then(task_of_file_name)
            && entry.file_type()?.is_file()
        {
            tasks.insert(task);
        }
    }
    Ok(tasks)
}

/// Why an outside model cannot be submitted.
#[derive(Debug, thiserror::Error)]
pub enum OutsideError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file fails a check a validator would make: the verdict would be `Rejected`.
    #[error("{path} would be rejected by the validators ({reason}): {error}")]
    Rejected {
        /// The file.
        path: PathBuf,
        /// The verdict's reason, as the ledger names it.
        reason: String,
        /// The check's details.
        error: CheckError,
    },
}

/// Reads the model at `path` (never more than the task's `max_artifact_bytes`) and runs every
/// check a validator makes without a reveal; returns its bytes and what the checks found.
pub fn read_checked(
    path: &Path,
    spec: &TaskSpec,
) -> Result<(Vec<u8>, CheckedArtifact), OutsideError> {
    let io = |source| OutsideError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let max_bytes = spec.limits.max_artifact_bytes;
    let size_bytes = file.metadata().map_err(io)?.len();
    let rejected = |error: CheckError| OutsideError::Rejected {
        path: path.to_path_buf(),
        reason: reason_name(&error),
        error,
    };
    if size_bytes > max_bytes {
        return Err(rejected(CheckError::TooLarge { size_bytes, max_bytes }));
    }
    // Read at most one byte more than allowed: a file that grew since is refused, not read whole.
    let mut bytes = Vec::with_capacity(usize::try_from(size_bytes).unwrap_or(0));
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(io)?;
    let artifact = check_artifact(&bytes, spec, None).map_err(rejected)?;
    Ok((bytes, artifact))
}

/// The snake_case name of a check failure's reject reason (`wrong_architecture`, …).
fn reason_name(error: &CheckError) -> String {
    serde_json::to_value(error.reason())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", error.reason()))
}

/// What a running trainer records about where its models come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The folder it takes models from (absolute).
    pub submit_dir: PathBuf,
}

/// The path of [`SOURCE_FILE`] in a data dir.
pub fn source_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ROLES_DIR).join(super::trainer::TRAINER_DIR).join(SOURCE_FILE)
}

/// Records (or, with `None`, forgets) the submit folder of the trainer in `data_dir`.
pub fn record_source(data_dir: &Path, submit_dir: Option<&Path>) -> Result<(), PersistError> {
    let path = source_path(data_dir);
    match submit_dir {
        Some(dir) => {
            let record = SourceRecord { submit_dir: dir.to_path_buf() };
            let bytes = serde_json::to_vec_pretty(&record).expect("a path serializes");
            write_atomic(&path, &bytes)
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(PersistError::Io { action: "removing", path, source: e })
            }
            _ => Ok(()),
        },
    }
}

/// The submit folder the trainer in `data_dir` recorded, or `None` when it trains with a recipe
/// (or never ran).
pub fn recorded_source(data_dir: &Path) -> Result<Option<SourceRecord>, PersistError> {
    let path = source_path(data_dir);
    let io = |action, source| PersistError::Io { action, path: path.clone(), source };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", e)),
    };
    if meta.len() > SOURCE_BYTES_MAX {
        return Err(PersistError::TooLarge { path, size_bytes: meta.len() });
    }
    let bytes = std::fs::read(&path).map_err(|e| io("reading", e))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|source| PersistError::Json { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_map_to_tasks_and_nothing_else_does() {
        assert_eq!(task_of_file_name(&model_file_name(TaskId(42))), Some(TaskId(42)));
        for name in [
            "task-.safetensors",
            "task-4x.safetensors",
            "task--1.safetensors",
            "task-1.safetensors.tmp",
            ".task-1.safetensors.tmp",
            "model.safetensors",
            "task-99999999999999999999999.safetensors",
        ] {
            assert_eq!(task_of_file_name(name), None, "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(waiting_models(&dir.path().join("absent")).unwrap().is_empty());
        std::fs::write(dir.path().join("task-3.safetensors"), b"x").unwrap();
        std::fs::write(dir.path().join("task-5.safetensors.tmp"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("task-7.safetensors")).unwrap();
        assert_eq!(waiting_models(dir.path()).unwrap(), BTreeSet::from([TaskId(3)]));
    }

    #[test]
    fn the_source_record_round_trips_and_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_source(dir.path()).unwrap(), None);
        std::fs::create_dir_all(source_path(dir.path()).parent().unwrap()).unwrap();
        record_source(dir.path(), Some(Path::new("/srv/models"))).unwrap();
        assert_eq!(
            recorded_source(dir.path()).unwrap(),
            Some(SourceRecord { submit_dir: "/srv/models".into() })
        );
        record_source(dir.path(), None).unwrap();
        assert_eq!(recorded_source(dir.path()).unwrap(), None);
        record_source(dir.path(), None).unwrap();
    }
}
