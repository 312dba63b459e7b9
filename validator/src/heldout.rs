//! Finding a task's held-out data: the file whose salted hash is the task's commitment.
//!
//! A held-out file sits beside its salt: `heldout.csv` (or `.txt`) beside `heldout.salt`, as
//! `node task new` writes them, or any file `X` beside `X.salt`. The salt file holds the 32 salt
//! bytes either raw or as 64 hex characters (surrounding whitespace ignored). A file matches a task when `sha256(salt || bytes)` equals the
//! spec's `dataset.heldout_commitment`. [`find_heldout`] looks in a directory and its immediate
//! subdirectories, in name order, so one `--heldout DIR` can hold the files of many tasks.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use consensus::commitment::{Salt, heldout_commitment};
use consensus::types::Hash;

/// Largest held-out file read, in bytes.
pub const HELDOUT_BYTES_MAX: u64 = 256 << 20;
/// Most directory entries looked at per directory.
pub const DIR_ENTRIES_MAX: usize = 4_096;
/// Largest salt file read, in bytes (64 hex characters plus whitespace).
const SALT_FILE_BYTES_MAX: u64 = 256;

/// Why held-out data could not be read or found.
#[derive(Debug, thiserror::Error)]
pub enum HeldoutError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is larger than the limit for its kind.
    #[error("{path} is {size_bytes} bytes, more than the limit of {max_bytes}")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// A salt file holds neither 32 raw bytes nor 64 hex characters.
    #[error("{path} holds neither 32 raw bytes nor 64 hex characters")]
    BadSalt {
        /// The salt file.
        path: PathBuf,
    },
    /// A directory has more entries than [`DIR_ENTRIES_MAX`].
    #[error("{path} has more than {DIR_ENTRIES_MAX} entries")]
    TooManyEntries {
        /// The directory.
        path: PathBuf,
    },
    /// The file does not match the commitment.
    #[error("{path} with its salt hashes to {found}, the task commits to {expected}")]
    Mismatch {
        /// The held-out file.
        path: PathBuf,
        /// The task's commitment.
        expected: Hash,
        /// What the file and salt hash to.
        found: Hash,
    },
    /// No file in the directory matches the commitment.
    #[error("no held-out file under {dir} matches the task's commitment {commitment}")]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// The task's commitment.
        commitment: Hash,
    },
}

/// A held-out file whose salted hash matched a commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldoutFile {
    /// Where it was found.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its salt.
    pub salt: Salt,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HeldoutError + '_ {
    move |source| HeldoutError::Io { path: path.to_path_buf(), source }
}

/// Reads at most `max_bytes` of a file, refusing a larger one before reading it.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, HeldoutError> {
    let file = fs::File::open(path).map_err(io_error(path))?;
    let size_bytes = file.metadata().map_err(io_error(path))?.len();
    if size_bytes > max_bytes {
        return Err(HeldoutError::TooLarge { path: path.to_path_buf(), size_bytes, max_bytes });
    }
    let mut bytes = Vec::with_capacity(size_bytes as usize);
    // `take` guards against a file that grows after the size check.
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(io_error(path))?;
    if bytes.len() as u64 > max_bytes {
        let size_bytes = bytes.len() as u64;
        return Err(HeldoutError::TooLarge { path: path.to_path_buf(), size_bytes, max_bytes });
    }
    Ok(bytes)
}

/// The salt files that may sit beside a held-out file, in the order they are tried: the file's
/// name with its extension replaced by `salt` (`heldout.csv` → `heldout.salt`), then with `.salt`
/// appended (`heldout.csv` → `heldout.csv.salt`).
pub fn salt_paths(heldout: &Path) -> [PathBuf; 2] {
    let mut appended = heldout.as_os_str().to_os_string();
    appended.push(".salt");
    [heldout.with_extension("salt"), PathBuf::from(appended)]
}

/// Parses a salt file's contents: 32 raw bytes, or 64 hex characters with optional whitespace.
pub fn parse_salt(bytes: &[u8]) -> Option<Salt> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Some(Salt(Hash(raw)));
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(Salt(Hash(out)))
}

/// Reads the first salt file of [`salt_paths`] that exists beside `heldout`.
pub fn read_salt(heldout: &Path) -> Result<Salt, HeldoutError> {
    let paths = salt_paths(heldout);
    let path = paths.iter().find(|p| p.is_file()).unwrap_or(&paths[0]);
    let bytes = read_bounded(path, SALT_FILE_BYTES_MAX)?;
    parse_salt(&bytes).ok_or_else(|| HeldoutError::BadSalt { path: path.clone() })
}

/// Reads `path` and its salt and checks them against `commitment`.
pub fn open_heldout(path: &Path, commitment: &Hash) -> Result<HeldoutFile, HeldoutError> {
    let salt = read_salt(path)?;
    let bytes = read_bounded(path, HELDOUT_BYTES_MAX)?;
    let found = heldout_commitment(&salt, &bytes);
    if found != *commitment {
        return Err(HeldoutError::Mismatch {
            path: path.to_path_buf(),
            expected: *commitment,
            found,
        });
    }
    Ok(HeldoutFile { path: path.to_path_buf(), bytes, salt })
}

/// The entries of a directory, sorted by name, at most [`DIR_ENTRIES_MAX`].
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, HeldoutError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if out.len() == DIR_ENTRIES_MAX {
            return Err(HeldoutError::TooManyEntries { path: dir.to_path_buf() });
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Finds the held-out file for `commitment` in `dir` or one of its immediate subdirectories:
/// every regular file beside one of its [`salt_paths`], in name order, the first that matches.
/// A candidate that cannot be read or does not match is skipped.
pub fn find_heldout(dir: &Path, commitment: &Hash) -> Result<HeldoutFile, HeldoutError> {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()));
    for d in dirs {
        for path in sorted_entries(&d)? {
            let is_candidate = path.is_file()
                && path.extension().is_none_or(|e| e != "salt")
                && salt_paths(&path).iter().any(|p| p.is_file());
            if !is_candidate {
                continue;
            }
            if let Ok(found) = open_heldout(&path, commitment) {
                return Ok(found);
            }
        }
    }
    Err(HeldoutError::NotFound { dir: dir.to_path_buf(), commitment: *commitment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_matching_file_among_others() {
        let dir = tempfile::tempdir().unwrap();
        let salt = Salt(Hash([7; 32]));
        let other = dir.path().join("a");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("heldout.csv"), b"x,label\n1,0\n").unwrap();
        fs::write(other.join("heldout.salt"), [1u8; 32]).unwrap();
        let task = dir.path().join("b");
        fs::create_dir(&task).unwrap();
        let bytes = b"x,label\n2,1\n";
        fs::write(task.join("heldout.csv"), bytes).unwrap();
        fs::write(task.join("heldout.csv.salt"), format!("{}\n", hex::encode([7u8; 32]))).unwrap();
        let commitment = heldout_commitment(&salt, bytes);

        let found = find_heldout(dir.path(), &commitment).unwrap();
        assert_eq!(found.path, task.join("heldout.csv"));
        assert_eq!(found.bytes, bytes);
        assert_eq!(found.salt, salt);
        assert!(matches!(
            find_heldout(dir.path(), &Hash([0; 32])),
            Err(HeldoutError::NotFound { .. })
        ));
        assert!(matches!(
            open_heldout(&other.join("heldout.csv"), &commitment),
            Err(HeldoutError::Mismatch { .. })
        ));
    }

    #[test]
    fn salts_parse_raw_or_hex_only() {
        assert_eq!(parse_salt(&[5; 32]), Some(Salt(Hash([5; 32]))));
        let hex = format!("  {}\n", hex::encode([6u8; 32]));
        assert_eq!(parse_salt(hex.as_bytes()), Some(Salt(Hash([6; 32]))));
        assert_eq!(parse_salt(b"abcd"), None);
        assert_eq!(parse_salt(&[5; 33]), None);
    }
}
