//! Newtypes for every id and unit the ledger handles.
//!
//! A bare `u64` in a public signature says nothing about what it counts; these types do. All of
//! them serialize as their inner value (postcard for canonical bytes, JSON at the edges), and the
//! 32-byte ids print and parse as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a number newtype that serializes and prints as its inner value.
macro_rules! number {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

number! {
    /// A block height. Height 0 is the genesis state; the first block has height 1.
    Height(u64)
}

impl Height {
    /// The height after this one.
    pub fn next(self) -> Height {
        Height(self.0 + 1)
    }

    /// This height plus a number of blocks, saturating at `u64::MAX`.
    pub fn plus(self, blocks: u64) -> Height {
        Height(self.0.saturating_add(blocks))
    }
}

number! {
    /// A consensus round within one height (0 first).
    Round(u32)
}

number! {
    /// A task's id: tasks are numbered from 1 in the order the ledger opened them.
    TaskId(u64)
}

number! {
    /// An amount of the ledger's coin, in base units.
    Amount(u64)
}

impl Amount {
    /// Zero base units.
    pub const ZERO: Amount = Amount(0);

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, or `None` when `other` is larger.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

number! {
    /// A score in parts per million, higher is better; at most [`ScorePpm::MAX`].
    ScorePpm(u32)
}

impl ScorePpm {
    /// A perfect score: 1,000,000 ppm.
    pub const MAX: ScorePpm = ScorePpm(1_000_000);
}

number! {
    /// An account's sequence number: the nonce its next transaction must carry.
    Nonce(u64)
}

/// Error parsing a 32-byte id from hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 lowercase hex characters (32 bytes), got {found:?}")]
pub struct ParseIdError {
    /// The text that failed to parse, cut to 80 characters.
    pub found: String,
}

fn parse_hex32(s: &str) -> Result<[u8; 32], ParseIdError> {
    let err = || ParseIdError { found: s.chars().take(80).collect() };
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(err());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
    Ok(out)
}

/// Declares a 32-byte id that prints and parses as lowercase hex, and is hex in JSON but raw
/// bytes in postcard.
macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id as raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The id as lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, for logs.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map($name)
                }
            }
        }
    };
}

hex_id!(
    /// An account: the 32-byte ed25519 public key of its owner. The libp2p PeerId of a node
    /// derives from the same key, so a peer's network identity and its account are one.
    AccountId
);
hex_id!(
    /// A sha256 digest: of a block, a transaction, a file, a state, a commitment.
    Hash
);

/// The sha256 of a model artifact's bytes.
pub type ModelHash = Hash;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex_and_json() {
        let id = AccountId([0xab; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<AccountId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), id);
        let bytes = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn malformed_hex_ids_are_rejected() {
        assert!("ab".parse::<Hash>().is_err());
        assert!("AB".repeat(32).parse::<Hash>().is_err());
        assert!("zz".repeat(32).parse::<Hash>().is_err());
    }
}
