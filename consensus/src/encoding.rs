//! Canonical bytes: one deterministic binary encoding (postcard) for everything hashed or signed.
//!
//! Decoding is bounded: the input length is checked against a named limit before any parsing, and
//! trailing bytes are an error, so one value has one accepted framing. Hashes and signatures are
//! always computed over a value *re-encoded* by [`encode`], never over bytes as received, so a
//! peer cannot make one value look like two.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the limit for its type.
    #[error("{what} is {found} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its length in bytes.
        found: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes do not encode a value of the type.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A value was decoded but bytes remain after it.
    #[error("{what} has {extra} trailing bytes")]
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
}

/// The first allocation of [`encode`]'s output.
const ENCODE_CAPACITY: usize = 256;

/// The canonical bytes of a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Every ledger type is plain data (no maps with non-string keys, no unsupported serde
    // features), so postcard cannot fail on it; a failure is a programming error.
    // Most encoded values (txs, votes, records) are a few hundred bytes: start there rather than
    // growing from empty.
    postcard::to_extend(value, Vec::with_capacity(ENCODE_CAPACITY))
        .expect("ledger types always encode with postcard")
}

/// The length of [`encode`]'s output, counted without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value)
        .expect("ledger types always encode with postcard")
}

/// Decodes a value of type `T` from at most `limit` bytes, rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { what, found: bytes.len(), limit });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| DecodeError::Malformed { what, reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { what, extra: rest.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_checks_limit_and_trailing_bytes() {
        let bytes = encode(&(7u64, String::from("x")));
        assert_eq!(decode::<(u64, String)>("pair", &bytes, 64).unwrap(), (7, "x".into()));
        assert!(matches!(
            decode::<(u64, String)>("pair", &bytes, 1),
            Err(DecodeError::TooLarge { limit: 1, .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<(u64, String)>("pair", &longer, 64),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(
            decode::<(u64, String)>("pair", &bytes[..1], 64),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
