//! Sealed held-out files: the held-out part, encrypted under a key that reaches the chain only
//! after trainers can no longer commit.
//!
//! A task's creator seals `salt || heldout_bytes` (exactly the preimage of the spec's
//! `heldout_commitment`) with ChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under a fresh
//! 32-byte key from the OS RNG, and serves the result as a content-addressed blob whose sha256 is
//! the spec's `heldout_cipher_sha256`. Validators fetch and hold it through the join window
//! (`AttestHeldout`), and open it once `RevealHeldoutKey` puts the key on chain.
//!
//! Format, version 1: the 9-byte header `CRSEALED` `0x01`, then the AEAD ciphertext with its
//! 16-byte tag. The header is the associated data, so a changed header fails the tag. The nonce
//! is fixed at 12 zero bytes: a key seals exactly one file and is never reused (a new task gets a
//! new key), which is the condition under which a fixed nonce is safe for this AEAD.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use consensus::commitment::{HeldoutKey, Salt, heldout_commitment};
use consensus::types::Hash;

/// The header of a version-1 sealed file: magic and version.
pub const HEADER: &[u8; 9] = b"CRSEALED\x01";
/// The AEAD tag's length, in bytes.
pub const TAG_BYTES: usize = 16;
/// Bytes a sealed file adds to `salt || heldout_bytes`: header and tag.
pub const OVERHEAD_BYTES: usize = HEADER.len() + TAG_BYTES;

/// The only nonce ever used: each key seals one file.
const NONCE: [u8; 12] = [0; 12];

/// Why a sealed file does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedError {
    /// The file does not start with a version-1 header.
    #[error("not a sealed held-out file (no `CRSEALED` version 1 header)")]
    BadHeader,
    /// The tag does not verify: wrong key, or the file was changed.
    #[error("the sealed held-out file does not open with this key (wrong key or tampered file)")]
    Unauthentic,
    /// The plaintext is too short to hold a salt.
    #[error("the opened held-out file has no room for its 32-byte salt")]
    NoSalt,
    /// The plaintext does not hash to the spec's commitment.
    #[error("the opened held-out file hashes to {found}, the task commits to {expected}")]
    Mismatch {
        /// The spec's `heldout_commitment`.
        expected: Hash,
        /// `sha256(salt || bytes)` of what opened.
        found: Hash,
    },
}

/// An opened held-out file.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    /// The held-out salt.
    pub salt: Salt,
    /// The held-out bytes (CSV rows or text).
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Opened {
    /// The rows stay out of logs: only their size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opened {{ salt: …, bytes: {} bytes }}", self.bytes.len())
    }
}

fn cipher(key: &HeldoutKey) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(key.as_bytes()))
}

/// Seals `salt || heldout_bytes` under `key`. Call it once per key.
pub fn seal(key: &HeldoutKey, salt: &Salt, heldout_bytes: &[u8]) -> Vec<u8> {
    let mut plaintext = Vec::with_capacity(32 + heldout_bytes.len());
    plaintext.extend_from_slice(salt.as_bytes());
    plaintext.extend_from_slice(heldout_bytes);
    let sealed = cipher(key)
        .encrypt(Nonce::from_slice(&NONCE), Payload { msg: &plaintext, aad: HEADER })
        .expect("ChaCha20-Poly1305 seals any message below 256 GiB");
    let mut out = Vec::with_capacity(HEADER.len() + sealed.len());
    out.extend_from_slice(HEADER);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a sealed file with `key` and checks that `sha256(salt || bytes)` is `commitment` (the
/// spec's `heldout_commitment`). The caller bounds `sealed`'s size before reading it.
pub fn open(key: &HeldoutKey, sealed: &[u8], commitment: &Hash) -> Result<Opened, SealedError> {
    let body = sealed.strip_prefix(HEADER.as_slice()).ok_or(SealedError::BadHeader)?;
    let plaintext = cipher(key)
        .decrypt(Nonce::from_slice(&NONCE), Payload { msg: body, aad: HEADER })
        .map_err(|_| SealedError::Unauthentic)?;
    if plaintext.len() < 32 {
        return Err(SealedError::NoSalt);
    }
    let (salt, bytes) = plaintext.split_at(32);
    let salt = Salt(Hash(salt.try_into().expect("split at 32")));
    let found = heldout_commitment(&salt, bytes);
    if found != *commitment {
        return Err(SealedError::Mismatch { expected: *commitment, found });
    }
    Ok(Opened { salt, bytes: bytes.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (HeldoutKey, Salt, Vec<u8>, Hash) {
        let key = HeldoutKey(Hash([7; 32]));
        let salt = Salt(Hash([3; 32]));
        let rows = b"0.1,0.2,1\n0.3,0.4,0\n".to_vec();
        let commitment = heldout_commitment(&salt, &rows);
        (key, salt, rows, commitment)
    }

    #[test]
    fn sealed_file_opens_with_its_key_and_checks_the_commitment() {
        let (key, salt, rows, commitment) = fixture();
        let sealed = seal(&key, &salt, &rows);
        assert_eq!(sealed.len(), rows.len() + 32 + OVERHEAD_BYTES);
        assert!(sealed.starts_with(HEADER));
        let opened = open(&key, &sealed, &commitment).unwrap();
        assert_eq!((opened.salt, opened.bytes), (salt, rows));
    }

    #[test]
    fn the_ciphertext_alone_reveals_no_rows() {
        let (key, salt, rows, commitment) = fixture();
        let sealed = seal(&key, &salt, &rows);
        // Neither the rows nor the salt appear in what validators hold before the key.
        assert!(!sealed.windows(rows.len()).any(|w| w == rows.as_slice()));
        assert!(!sealed.windows(32).any(|w| w == salt.as_bytes()));
        // Any other key (a guess, the key's commitment, zeros) is refused.
        for guess in [Hash([0; 32]), Hash([8; 32]), key.commitment()] {
            let err = open(&HeldoutKey(guess), &sealed, &commitment).unwrap_err();
            assert_eq!(err, SealedError::Unauthentic);
        }
    }

    #[test]
    fn tampered_or_foreign_files_are_refused() {
        let (key, salt, rows, commitment) = fixture();
        let sealed = seal(&key, &salt, &rows);
        for i in [HEADER.len(), HEADER.len() + 5, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(open(&key, &bad, &commitment).unwrap_err(), SealedError::Unauthentic);
        }
        let mut other_version = sealed.clone();
        other_version[HEADER.len() - 1] = 2;
        assert_eq!(open(&key, &other_version, &commitment).unwrap_err(), SealedError::BadHeader);
        assert_eq!(open(&key, &sealed[..4], &commitment).unwrap_err(), SealedError::BadHeader);
        let truncated = &sealed[..sealed.len() - 1];
        assert_eq!(open(&key, truncated, &commitment).unwrap_err(), SealedError::Unauthentic);
    }

    #[test]
    fn a_file_sealed_with_other_rows_fails_the_commitment() {
        let (key, salt, _, commitment) = fixture();
        let sealed = seal(&key, &salt, b"9,9,2\n");
        assert!(matches!(
            open(&key, &sealed, &commitment),
            Err(SealedError::Mismatch { expected, .. }) if expected == commitment
        ));
        let empty = seal(&key, &salt, b"");
        assert!(matches!(open(&key, &empty, &commitment), Err(SealedError::Mismatch { .. })));
    }
}
