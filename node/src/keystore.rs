//! The node's key on disk, and its libp2p identity.
//!
//! The key lives in `DATA_DIR/node_key.json` (the format of [`consensus::crypto::Keypair`]),
//! written with mode 0600 through a temporary file and a rename, so a crash never leaves half a
//! key. The libp2p keypair is built from the same ed25519 secret, so the node's PeerId and its
//! ledger account are one key.
//!
//! A task creator's held-out keys sit beside the node key, one file per task in
//! `DATA_DIR/heldout-keys/<key_commitment>.key` (64 hex characters, mode 0600): `node task new`
//! writes one, and `node task reveal-key` reads it back after the task's commit deadline.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use consensus::crypto::{KeyError, Keypair};

/// The key file's name inside a data dir.
pub const KEY_FILE: &str = "node_key.json";

/// Largest key file read, in bytes.
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// Why a key could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// A key file already exists where a new one would be written.
    #[error("{path} already exists; refusing to overwrite a key (move it away first)")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// No key file where one was expected.
    #[error("no key at {path}; create one with `node keys generate --data-dir {dir}`")]
    Missing {
        /// The expected file.
        path: PathBuf,
        /// The data dir.
        dir: String,
    },
    /// The key file is larger than any key file.
    #[error("{path} is {bytes} bytes; a key file is under {KEY_FILE_BYTES_MAX}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// Others than its owner may read or write the key file (as ssh does, the key is refused).
    #[error(
        "{path} is accessible by others (mode {mode:03o}); a node key must be private: run \
         `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file's contents are wrong.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
    /// libp2p refused the key.
    #[error("libp2p refused the key: {0}")]
    Libp2p(String),
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> KeystoreError + 'a {
    move |source| KeystoreError::Io { action, path: path.to_path_buf(), source }
}

/// The folder inside a data dir that holds a creator's held-out keys.
pub const HELDOUT_KEYS_DIR: &str = "heldout-keys";

/// Where the held-out key with `commitment` (its sha256) is kept in `data_dir`.
pub fn heldout_key_path(data_dir: &Path, commitment: &consensus::types::Hash) -> PathBuf {
    data_dir.join(HELDOUT_KEYS_DIR).join(format!("{}.key", commitment.to_hex()))
}

/// Saves a task's held-out key in `data_dir` (0600), refusing to overwrite one; returns its path.
pub fn save_heldout_key(
    data_dir: &Path,
    key: &consensus::commitment::HeldoutKey,
) -> Result<PathBuf, KeystoreError> {
    let dir = data_dir.join(HELDOUT_KEYS_DIR);
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let path = heldout_key_path(data_dir, &key.commitment());
    if path.exists() {
        return Err(KeystoreError::Exists { path });
    }
    write_private(&path, format!("{}\n", key.0.to_hex()).as_bytes())?;
    Ok(path)
}

/// Loads the held-out key whose sha256 is `commitment` from `data_dir`, refusing a file that
/// others may read or write, or whose key does not hash to `commitment`.
pub fn load_heldout_key(
    data_dir: &Path,
    commitment: &consensus::types::Hash,
) -> Result<consensus::commitment::HeldoutKey, KeystoreError> {
    let path = heldout_key_path(data_dir, commitment);
    let text = read_private(&path, data_dir)?;
    let bad = |reason: &str| KeystoreError::Io {
        action: "parsing",
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_owned()),
    };
    let hash: consensus::types::Hash =
        text.trim().parse().map_err(|_| bad("not 64 hex characters"))?;
    let key = consensus::commitment::HeldoutKey(hash);
    if key.commitment() != *commitment {
        return Err(bad("the key does not hash to its file name"));
    }
    Ok(key)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io("creating", &tmp))?;
    file.write_all(bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io("renaming into", path))?;
    Ok(())
}

/// Creates a fresh key from the OS random source in `data_dir`, refusing to overwrite one.
pub fn create(data_dir: &Path) -> Result<Keypair, KeystoreError> {
    let key = Keypair::generate()
        .map_err(|source| KeystoreError::Key { path: data_dir.into(), source })?;
    save(data_dir, &key)?;
    Ok(key)
}

/// Saves `key` in `data_dir`, refusing to overwrite an existing key.
pub fn save(data_dir: &Path, key: &Keypair) -> Result<(), KeystoreError> {
    fs::create_dir_all(data_dir).map_err(io("creating", data_dir))?;
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        return Err(KeystoreError::Exists { path });
    }
    write_private(&path, key.to_key_file().as_bytes())
}

/// Loads the key in `data_dir`, refusing a key file that others may read or write.
pub fn load(data_dir: &Path) -> Result<Keypair, KeystoreError> {
    let path = data_dir.join(KEY_FILE);
    let text = read_private(&path, data_dir)?;
    Keypair::from_key_file(&text).map_err(|source| KeystoreError::Key { path, source })
}

/// Reads a small private file of `data_dir` (at most [`KEY_FILE_BYTES_MAX`] bytes), refusing one
/// that others may read or write.
fn read_private(path: &Path, data_dir: &Path) -> Result<String, KeystoreError> {
    let path = path.to_path_buf();
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeystoreError::Missing { path, dir: data_dir.display().to_string() });
        }
        Err(e) => return Err(io("reading", &path)(e)),
    };
    if meta.len() > KEY_FILE_BYTES_MAX {
        return Err(KeystoreError::TooLarge { path, bytes: meta.len() });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeystoreError::Exposed { path, mode });
        }
    }
    fs::read_to_string(&path).map_err(io("reading", &path))
}

/// The libp2p keypair of a node key: the same ed25519 secret.
pub fn libp2p_keypair(key: &Keypair) -> Result<libp2p::identity::Keypair, KeystoreError> {
    libp2p::identity::Keypair::ed25519_from_bytes(key.secret_bytes())
        .map_err(|e| KeystoreError::Libp2p(e.to_string()))
}

/// The libp2p PeerId of a node key.
pub fn peer_id(key: &Keypair) -> Result<libp2p::identity::PeerId, KeystoreError> {
    Ok(libp2p_keypair(key)?.public().to_peer_id())
}

/// The ledger account of a peer, when its PeerId inlines an ed25519 key (as every node's does:
/// an identity multihash of the protobuf-encoded public key).
pub fn account_of(peer: &libp2p::identity::PeerId) -> Option<consensus::types::AccountId> {
    /// Multihash code of the identity "hash", which holds its input.
    const IDENTITY: u64 = 0;
    let hash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if hash.code() != IDENTITY {
        return None;
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(consensus::types::AccountId(ed.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heldout_keys_are_private_bound_to_their_commitment_and_never_overwritten() {
        use consensus::commitment::HeldoutKey;
        use consensus::types::Hash;
        let dir = tempfile::tempdir().unwrap();
        let key = HeldoutKey(Hash([6; 32]));
        let path = save_heldout_key(dir.path(), &key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(load_heldout_key(dir.path(), &key.commitment()).unwrap(), key);
        assert!(matches!(save_heldout_key(dir.path(), &key), Err(KeystoreError::Exists { .. })));
        let other = HeldoutKey(Hash([7; 32])).commitment();
        assert!(matches!(load_heldout_key(dir.path(), &other), Err(KeystoreError::Missing { .. })));
        // A file whose key does not hash to its name is refused.
        fs::copy(&path, heldout_key_path(dir.path(), &other)).unwrap();
        assert!(load_heldout_key(dir.path(), &other).is_err());
    }

    #[test]
    fn peer_id_and_account_are_one_key() {
        let key = Keypair::from_seed([5; 32]);
        let lp = libp2p_keypair(&key).unwrap();
        assert_eq!(peer_id(&key).unwrap(), lp.public().to_peer_id());
        assert_eq!(account_of(&peer_id(&key).unwrap()), Some(key.account()));
        // A PeerId that is a real hash (sha2-256, of a key too long to inline) names no account.
        let hashed = libp2p::multihash::Multihash::wrap(0x12, &[7; 32]).unwrap();
        let hashed = libp2p::identity::PeerId::from_multihash(hashed).unwrap();
        assert_eq!(account_of(&hashed), None);
    }

    #[test]
    fn create_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let key = create(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap().account(), key.account());
        assert!(matches!(create(dir.path()), Err(KeystoreError::Exists { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(load(empty.path()), Err(KeystoreError::Missing { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_may_read_or_write_is_refused_naming_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        for mode in [0o644, 0o666, 0o640, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load(dir.path()).unwrap_err();
            assert!(matches!(err, KeystoreError::Exposed { mode: m, .. } if m == mode), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        load(dir.path()).unwrap();
    }
}
