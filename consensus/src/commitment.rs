//! Commit-reveal: salted commitments that bind a model hash or a verdict vector to its author.
//!
//! `commitment = sha256(tag, chain_id, task, signer, payload, salt)` (each part length-prefixed),
//! where the payload is the model hash for a trainer and the canonical bytes of the verdict vector
//! for a validator, and the salt is 32 bytes from the OS random source, written to disk before the
//! commitment is sent. Because the signer is inside the hash, nobody can copy another's commitment
//! and reveal after them; the ledger also refuses a commitment equal to one it already holds.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::encoding::encode;
use crate::hash::{tagged_hash, tags};
use crate::types::{AccountId, Hash, ModelHash, TaskId};
use crate::verdict::VerdictVector;

/// Declares a 32-byte secret: hex in JSON, never printed, drawn from the OS random source.
macro_rules! secret {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name(pub Hash);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(…)"))
            }
        }

        impl $name {
            #[doc = concat!("A fresh ", $what, " from the OS random source (feature `os-rng`).")]
            #[cfg(feature = "os-rng")]
            pub fn random() -> Result<$name, getrandom::Error> {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)?;
                Ok($name(Hash(bytes)))
            }

            #[doc = concat!("The ", $what, "'s bytes.")]
            pub fn as_bytes(&self) -> &[u8; 32] {
                self.0.as_bytes()
            }
        }
    };
}

secret! {
    /// A 32-byte commitment salt. Hex in JSON.
    Salt, "salt"
}

secret! {
    /// The 32-byte key that seals a task's held-out file, revealed on chain by the task's creator
    /// after the commit deadline. Hex in JSON. The ledger only checks it against the spec's
    /// `key_commitment`; the cipher itself lives outside the ledger crate (`trainer::sealed`).
    HeldoutKey, "key"
}

impl HeldoutKey {
    /// `sha256(key)`, untagged: the spec's `key_commitment`.
    pub fn commitment(&self) -> Hash {
        crate::hash::sha256(self.as_bytes())
    }
}

fn commitment(
    tag: &[u8],
    chain_id: &str,
    task: TaskId,
    signer: &AccountId,
    payload: &[u8],
    salt: &Salt,
) -> Hash {
    tagged_hash(
        tag,
        &[chain_id.as_bytes(), &task.0.to_le_bytes(), signer.as_bytes(), payload, salt.as_bytes()],
    )
}

/// A trainer's commitment to the model it will reveal.
pub fn model_commitment(
    chain_id: &str,
    task: TaskId,
    signer: &AccountId,
    model_hash: &ModelHash,
    salt: &Salt,
) -> Hash {
    commitment(tags::MODEL_COMMITMENT, chain_id, task, signer, model_hash.as_bytes(), salt)
}

/// A validator's commitment to the verdict vector it will reveal.
pub fn scores_commitment(
    chain_id: &str,
    task: TaskId,
    signer: &AccountId,
    verdicts: &VerdictVector,
    salt: &Salt,
) -> Hash {
    commitment(tags::SCORES_COMMITMENT, chain_id, task, signer, &encode(verdicts), salt)
}

/// The held-out commitment of a task: `sha256(salt || heldout_bytes)`, untagged so anyone can
/// recompute it with standard tools once the salt and file are published.
pub fn heldout_commitment(salt: &Salt, heldout_bytes: &[u8]) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(heldout_bytes);
    Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitments_bind_every_part() {
        let salt = Salt(Hash([3; 32]));
        let a = AccountId([1; 32]);
        let m = Hash([9; 32]);
        let base = model_commitment("c", TaskId(1), &a, &m, &salt);
        assert_ne!(base, model_commitment("d", TaskId(1), &a, &m, &salt));
        assert_ne!(base, model_commitment("c", TaskId(2), &a, &m, &salt));
        assert_ne!(base, model_commitment("c", TaskId(1), &AccountId([2; 32]), &m, &salt));
        assert_ne!(base, model_commitment("c", TaskId(1), &a, &Hash([8; 32]), &salt));
        assert_ne!(base, model_commitment("c", TaskId(1), &a, &m, &Salt(Hash([4; 32]))));
        assert_ne!(base, scores_commitment("c", TaskId(1), &a, &vec![], &salt));
        let key = HeldoutKey(Hash([5; 32]));
        assert_eq!(key.commitment(), crate::hash::sha256(&[5; 32]));
        assert_ne!(key.commitment(), HeldoutKey(Hash([6; 32])).commitment());
        assert_eq!(format!("{key:?}"), "HeldoutKey(…)", "a key never reaches a log");
    }
}
