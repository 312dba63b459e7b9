//! A bounded safetensors reader for untrusted artifacts.
//!
//! A safetensors file is `header_len: u64 LE`, then `header_len` bytes of JSON mapping each tensor
//! name to `{dtype, shape, data_offsets: [begin, end]}` (plus an optional `__metadata__` object of
//! strings), then the data buffer the offsets point into. Every number in the header is checked
//! against the real file size and the named limits below *before* anything is allocated from it:
//! the header length against [`HEADER_BYTES_MAX`] and the file, the tensor count against
//! [`TENSORS_MAX`], a shape's element count (overflow-checked) against its byte range, and the
//! byte ranges against the buffer, which they must tile exactly (no gaps, no overlaps, nothing
//! after the last tensor). Only then are values decoded, to `f32` in row-major order.
//!
//! Dtypes are decided while the header is read: a tensor whose dtype is not one of the task's
//! allowed dtypes (F32, F16, BF16 at most) is refused as disallowed, whatever else is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use consensus::task::Dtype;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// Largest JSON header accepted, in bytes.
pub const HEADER_BYTES_MAX: u64 = 1 << 20;
/// Most tensors in one artifact.
pub const TENSORS_MAX: usize = 1_024;
/// Most dimensions of one tensor.
pub const RANK_MAX: usize = 8;
/// Longest tensor name, in bytes.
pub const TENSOR_NAME_BYTES_MAX: usize = 256;

/// The key safetensors reserves for free-form string metadata.
const METADATA_KEY: &str = "__metadata__";
/// Length of the little-endian header-length prefix.
const PREFIX_BYTES: usize = 8;

/// Why a file is not a well-formed safetensors artifact within the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Shorter than the 8-byte header-length prefix.
    #[error("file of {file_bytes} bytes is shorter than the 8-byte header length")]
    Truncated {
        /// The file's size.
        file_bytes: usize,
    },
    /// The header length exceeds [`HEADER_BYTES_MAX`].
    #[error("header of {header_bytes} bytes exceeds the limit of {max} bytes")]
    HeaderTooLong {
        /// The claimed header length.
        header_bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The header length runs past the end of the file.
    #[error("header of {header_bytes} bytes runs past the end of a {file_bytes}-byte file")]
    HeaderPastEnd {
        /// The claimed header length.
        header_bytes: u64,
        /// The file's size.
        file_bytes: usize,
    },
    /// The header is not the expected JSON.
    #[error("header is not valid safetensors JSON: {message}")]
    HeaderJson {
        /// The parser's message.
        message: String,
    },
    /// More tensors than [`TENSORS_MAX`].
    #[error("more than {max} tensors")]
    TooManyTensors {
        /// The limit.
        max: usize,
    },
    /// A tensor name appears twice, is empty or is longer than [`TENSOR_NAME_BYTES_MAX`].
    #[error("tensor name {name:?} is empty, too long or repeated")]
    BadName {
        /// The name, cut to 80 characters.
        name: String,
    },
    /// A shape has more than [`RANK_MAX`] dimensions or an element count that overflows.
    #[error("tensor {name:?} has an invalid shape {shape:?}")]
    BadShape {
        /// The tensor.
        name: String,
        /// The claimed shape (at most [`RANK_MAX`] + 1 dimensions are kept).
        shape: Vec<u64>,
    },
    /// A tensor's byte range is reversed, outside the buffer, or not its shape's size.
    #[error(
        "tensor {name:?} claims bytes {begin}..{end} but needs {needed} bytes in a \
         {buffer_bytes}-byte buffer"
    )]
    BadOffsets {
        /// The tensor.
        name: String,
        /// First byte, relative to the buffer.
        begin: u64,
        /// One past the last byte.
        end: u64,
        /// Bytes its dtype and shape need, if that fits in a `u64`.
        needed: u64,
        /// The data buffer's size.
        buffer_bytes: usize,
    },
    /// The byte ranges leave a gap, overlap, or do not end at the end of the buffer.
    #[error("tensor byte ranges do not tile the {buffer_bytes}-byte data buffer")]
    NotTiled {
        /// The data buffer's size.
        buffer_bytes: usize,
    },
}

/// Why an artifact's header is refused: badly formed, or a dtype the task does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not well-formed safetensors within the limits.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A tensor uses a dtype outside the allowed set.
    #[error("tensor {name:?} has dtype {dtype:?}, which the task does not allow")]
    DisallowedDtype {
        /// The tensor.
        name: String,
        /// The dtype as written in the header, cut to 16 characters.
        dtype: String,
    },
}

/// One tensor as described by a validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The element type.
    pub dtype: Dtype,
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// First byte in the file (not the buffer).
    pub start: usize,
    /// One past the last byte in the file.
    pub end: usize,
}

/// A validated header: every tensor's dtype, shape and byte range, checked against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
}

/// One tensor's values, decoded to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorValues {
    /// The dtype it was stored in.
    pub dtype: Dtype,
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The values in row-major order.
    pub values: Vec<f32>,
}

/// An artifact's tensors by name, decoded to `f32`; iteration is in name order.
pub type Weights = BTreeMap<String, TensorValues>;

fn dtype_from_header(text: &str) -> Option<Dtype> {
    match text {
        "F32" => Some(Dtype::F32),
        "F16" => Some(Dtype::F16),
        "BF16" => Some(Dtype::BF16),
        _ => None,
    }
}

/// Bytes per element of a dtype.
fn dtype_bytes(dtype: Dtype) -> usize {
    match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
    }
}

fn cut(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// A tensor entry as written in the header.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header's top-level entries in file order, keeping repeated keys so they can be refused.
struct RawEntries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for RawEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = RawEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntries, A::Error> {
                let mut out = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    // One metadata entry on top of the tensors.
                    if out.len() > TENSORS_MAX {
                        return Err(serde::de::Error::custom(format!(
                            "more than {TENSORS_MAX} tensors"
                        )));
                    }
                    out.push((key, value));
                }
                Ok(RawEntries(out))
            }
        }
        d.deserialize_map(EntriesVisitor)
    }
}

/// Reads and validates the header of `bytes` against the file size, the limits and the allowed
/// dtypes, without allocating anything the header claims.
pub fn parse_header(bytes: &[u8], allowed: &[Dtype]) -> Result<Header, HeaderError> {
    let file_bytes = bytes.len();
    let Some(prefix) = bytes.first_chunk::<PREFIX_BYTES>() else {
        return Err(FormatError::Truncated { file_bytes }.into());
    };
    let header_bytes = u64::from_le_bytes(*prefix);
    if header_bytes > HEADER_BYTES_MAX {
        return Err(FormatError::HeaderTooLong { header_bytes, max: HEADER_BYTES_MAX }.into());
    }
    // Bounded by HEADER_BYTES_MAX, so it fits a usize.
    let header_len = header_bytes as usize;
    let data_start = PREFIX_BYTES + header_len;
    if data_start > file_bytes {
        return Err(FormatError::HeaderPastEnd { header_bytes, file_bytes }.into());
    }
    let json = &bytes[PREFIX_BYTES..data_start];
    let buffer_bytes = file_bytes - data_start;

    let entries: RawEntries = serde_json::from_slice(json)
        .map_err(|e| FormatError::HeaderJson { message: cut(&e.to_string(), 200) })?;
    let mut names = BTreeSet::new();
    let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(entries.0.len());
    let mut tensors = BTreeMap::new();
    for (name, value) in entries.0 {
        if name.is_empty() || name.len() > TENSOR_NAME_BYTES_MAX || !names.insert(name.clone()) {
            return Err(FormatError::BadName { name: cut(&name, 80) }.into());
        }
        if name == METADATA_KEY {
            serde_json::from_value::<BTreeMap<String, String>>(value).map_err(|e| {
                FormatError::HeaderJson {
                    message: format!("__metadata__: {}", cut(&e.to_string(), 200)),
                }
            })?;
            continue;
        }
        if tensors.len() == TENSORS_MAX {
            return Err(FormatError::TooManyTensors { max: TENSORS_MAX }.into());
        }
        let raw: RawTensor =
            serde_json::from_value(value).map_err(|e| FormatError::HeaderJson {
                message: format!("tensor {:?}: {}", cut(&name, 80), cut(&e.to_string(), 200)),
            })?;
        let dtype = match dtype_from_header(&raw.dtype) {
            Some(d) if allowed.contains(&d) => d,
            _ => {
                return Err(HeaderError::DisallowedDtype {
                    name: cut(&name, 80),
                    dtype: cut(&raw.dtype, 16),
                });
            }
        };
        let bad_shape = || FormatError::BadShape {
            name: cut(&name, 80),
            shape: raw.shape.iter().copied().take(RANK_MAX + 1).collect(),
        };
        if raw.shape.len() > RANK_MAX {
            return Err(bad_shape().into());
        }
        let elements =
            raw.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(bad_shape)?;
        let needed = elements.checked_mul(dtype_bytes(dtype) as u64).ok_or_else(bad_shape)?;
        let [begin, end] = raw.data_offsets;
        if begin > end || end > buffer_bytes as u64 || end - begin != needed {
            return Err(FormatError::BadOffsets {
                name: cut(&name, 80),
                begin,
                end,
                needed,
                buffer_bytes,
            }
            .into());
        }
        // Every dimension is at most the buffer's byte count now, so it fits a usize.
        let shape = raw.shape.iter().map(|&d| d as usize).collect();
        ranges.push((begin, end));
        let info = TensorInfo {
            dtype,
            shape,
            start: data_start + begin as usize,
            end: data_start + end as usize,
        };
        tensors.insert(name, info);
    }
    ranges.sort_unstable();
    let mut cursor = 0u64;
    for (begin, end) in ranges {
        if begin != cursor {
            return Err(FormatError::NotTiled { buffer_bytes }.into());
        }
        cursor = end;
    }
    if cursor != buffer_bytes as u64 {
        return Err(FormatError::NotTiled { buffer_bytes }.into());
    }
    Ok(Header { tensors })
}

/// Decodes one tensor's bytes (little-endian, as safetensors stores them) to `f32`.
///
/// `info` must come from [`parse_header`] over the same `bytes`.
pub fn decode_values(bytes: &[u8], info: &TensorInfo) -> Vec<f32> {
    let data = &bytes[info.start..info.end];
    match info.dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("chunk of 4")))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().expect("chunk of 2")).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes(c.try_into().expect("chunk of 2")).to_f32())
            .collect(),
    }
}

/// Decodes every tensor of a validated header to `f32`.
pub fn decode_weights(bytes: &[u8], header: &Header) -> Weights {
    header
        .tensors
        .iter()
        .map(|(name, info)| {
            let values = decode_values(bytes, info);
            (name.clone(), TensorValues { dtype: info.dtype, shape: info.shape.clone(), values })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn round_trips_f32_and_reads_half_types() {
        let a = candle_core::Tensor::new(&[[1f32, -2.0], [0.5, 0.0]], &candle_core::Device::Cpu);
        let t = [("a".to_string(), a.unwrap())].into_iter().collect();
        let bytes = trainer::artifact::encode(&t).unwrap();
        let header = parse_header(&bytes, &ALL).unwrap();
        let w = decode_weights(&bytes, &header);
        assert_eq!(w["a"].values, vec![1.0, -2.0, 0.5, 0.0]);
        assert_eq!(w["a"].shape, vec![2, 2]);

        let mut data = half::f16::from_f32(1.5).to_le_bytes().to_vec();
        data.extend_from_slice(&half::bf16::from_f32(-3.0).to_le_bytes());
        let bytes = file(
            r#"{"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[2,4]},"__metadata__":{"k":"v"}}"#,
            &data,
        );
        let w = decode_weights(&bytes, &parse_header(&bytes, &ALL).unwrap());
        assert_eq!(w["h"].values, vec![1.5]);
        assert_eq!(w["b"].values, vec![-3.0]);
    }

    #[test]
    fn refuses_structural_faults() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "repeated name",
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    &[0; 8],
                ),
            ),
            ("gap", file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &[0; 8])),
            (
                "trailing bytes",
                file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 5]),
            ),
            (
                "overlap",
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    &[0; 8],
                ),
            ),
            (
                "reversed",
                file(r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#, &[0; 4]),
            ),
            (
                "rank",
                file(
                    r#"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
            ),
            (
                "overflow",
                file(
                    r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
            ),
            (
                "unknown field",
                file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#, &[0; 4]),
            ),
            ("bad metadata", file(r#"{"__metadata__":{"k":1}}"#, &[])),
            ("not an object", file("[1,2]", &[])),
        ];
        for (what, bytes) in cases {
            match parse_header(&bytes, &ALL) {
                Err(HeaderError::Format(_)) => {}
                other => panic!("{what}: expected a format error, got {other:?}"),
            }
        }
    }

    #[test]
    fn disallowed_and_unknown_dtypes() {
        let bytes = file(r#"{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#, &[0; 2]);
        assert!(matches!(
            parse_header(&bytes, &[Dtype::F32]),
            Err(HeaderError::DisallowedDtype { .. })
        ));
        let bytes = file(r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, &[0; 8]);
        assert!(matches!(parse_header(&bytes, &ALL), Err(HeaderError::DisallowedDtype { .. })));
    }
}
