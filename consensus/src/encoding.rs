//! Canonical bytes: one deterministic binary encoding (postcard) for everything hashed or signed.
//!
//! Decoding is bounded: the input length is checked against a named limit before any parsing, and
//! trailing bytes and over-long varints are errors, so a value has exactly one accepted encoding
//! and bytes received are the bytes [`encode`] writes. Hashes and signatures are still computed
//! over a value *re-encoded* by [`encode`], never over bytes as received.

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
    /// The bytes decode, but not as [`encode`] writes the value: some varint is longer than it
    /// needs to be (postcard's decoder accepts `80 00` for 0). Refused so that one value has one
    /// encoding, and a gossip message id (a hash of the bytes) names one value.
    #[error("{what} is not canonical: {found} bytes where the value encodes in {canonical}")]
    NonCanonical {
        /// What was being decoded.
        what: &'static str,
        /// Its length in bytes.
        found: usize,
        /// The length of the value's canonical encoding.
        canonical: usize,
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

/// Decodes a value of type `T` from at most `limit` bytes, rejecting trailing bytes and any
/// encoding other than [`encode`]'s.
pub fn decode<T: DeserializeOwned + Serialize>(
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
    // A varint can only be longer than minimal, never shorter, and the minimal form is unique:
    // so equal lengths mean equal bytes.
    let canonical = encoded_len(&value);
    if canonical != bytes.len() {
        return Err(DecodeError::NonCanonical { what, found: bytes.len(), canonical });
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

    #[test]
    fn decode_refuses_over_long_varints() {
        // 7 as `87 00` (two bytes, the second group empty): postcard itself accepts it.
        assert_eq!(postcard::from_bytes::<u64>(&[0x87, 0x00]).unwrap(), 7);
        assert_eq!(
            decode::<u64>("n", &[0x87, 0x00], 64),
            Err(DecodeError::NonCanonical { what: "n", found: 2, canonical: 1 })
        );
        // An over-long length prefix inside a larger value: a string of one byte.
        assert_eq!(decode::<(u64, String)>("pair", &[0x07, 0x01, b'x'], 64).unwrap().1, "x");
        assert!(matches!(
            decode::<(u64, String)>("pair", &[0x07, 0x81, 0x00, b'x'], 64),
            Err(DecodeError::NonCanonical { found: 4, canonical: 3, .. })
        ));
        // The largest u64 is ten bytes, and that is canonical.
        let max = encode(&u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(decode::<u64>("n", &max, 64).unwrap(), u64::MAX);
    }
}
