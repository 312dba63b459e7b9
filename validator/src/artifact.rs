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
//!
//! The bytes come from a [`Source`]: a slice, or a file read by ranges ([`read_header`],
//! [`for_each_value`], [`read_weights`]), so a validator checks an artifact of any size holding at
//! most its header and one [`READ_CHUNK_BYTES`] buffer, and then only the decoded values of an
//! artifact whose header passed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;

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

/// Bytes read from a [`Source`] at a time while values are counted, checked or decoded (a
/// multiple of every dtype's width).
pub const READ_CHUNK_BYTES: usize = 1 << 20;

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
        file_bytes: u64,
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
        file_bytes: u64,
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
        buffer_bytes: u64,
    },
    /// The byte ranges leave a gap, overlap, or do not end at the end of the buffer.
    #[error("tensor byte ranges do not tile the {buffer_bytes}-byte data buffer")]
    NotTiled {
        /// The data buffer's size.
        buffer_bytes: u64,
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
    pub start: u64,
    /// One past the last byte in the file.
    pub end: u64,
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

/// Where an artifact's bytes are read from, by ranges: memory, or a file that is never read whole.
pub trait Source: fmt::Debug {
    /// The size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` with the bytes from `offset`; a range past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl Source for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .and_then(|range| self.get(range))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(range);
        Ok(())
    }
}

impl Source for Vec<u8> {
    fn size(&self) -> io::Result<u64> {
        self.as_slice().size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

impl Source for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

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

/// Reads and validates the header of `bytes` against their size, the limits and the allowed
/// dtypes, without allocating anything the header claims.
pub fn parse_header(bytes: &[u8], allowed: &[Dtype]) -> Result<Header, HeaderError> {
    read_header(bytes, allowed).expect("a slice is read only within its length")
}

/// As [`parse_header`], reading from `source` only the 8-byte prefix and the header (at most
/// [`HEADER_BYTES_MAX`] bytes, checked against the source's size before it is read). The outer
/// error is the source's I/O failure; the inner one, the header's fault.
pub fn read_header<S: Source + ?Sized>(
    source: &S,
    allowed: &[Dtype],
) -> io::Result<Result<Header, HeaderError>> {
    let file_bytes = source.size()?;
    if file_bytes < PREFIX_BYTES as u64 {
        return Ok(Err(FormatError::Truncated { file_bytes }.into()));
    }
    let mut prefix = [0u8; PREFIX_BYTES];
    source.read_at(0, &mut prefix)?;
    let header_bytes = u64::from_le_bytes(prefix);
    if header_bytes > HEADER_BYTES_MAX {
        return Ok(Err(FormatError::HeaderTooLong { header_bytes, max: HEADER_BYTES_MAX }.into()));
    }
    let data_start = PREFIX_BYTES as u64 + header_bytes;
    if data_start > file_bytes {
        return Ok(Err(FormatError::HeaderPastEnd { header_bytes, file_bytes }.into()));
    }
    // Bounded by HEADER_BYTES_MAX, so it fits a usize.
    let mut json = vec![0u8; header_bytes as usize];
    source.read_at(PREFIX_BYTES as u64, &mut json)?;
    Ok(parse_json(&json, data_start, file_bytes - data_start, allowed))
}

/// Validates a header's JSON for a data buffer of `buffer_bytes` starting at file offset
/// `data_start`.
fn parse_json(
    json: &[u8],
    data_start: u64,
    buffer_bytes: u64,
    allowed: &[Dtype],
) -> Result<Header, HeaderError> {
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
        if begin > end || end > buffer_bytes || end - begin != needed {
            return Err(FormatError::BadOffsets {
                name: cut(&name, 80),
                begin,
                end,
                needed,
                buffer_bytes,
            }
            .into());
        }
        // Every dimension is at most the buffer's byte count now, or the tensor is empty; either
        // way one that does not fit a usize is refused.
        let shape = raw
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad_shape()))
            .collect::<Result<_, _>>()?;
        ranges.push((begin, end));
        let info = TensorInfo { dtype, shape, start: data_start + begin, end: data_start + end };
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
    if cursor != buffer_bytes {
        return Err(FormatError::NotTiled { buffer_bytes }.into());
    }
    Ok(Header { tensors })
}

/// Calls `f` with each value of one tensor, decoded to `f32` in row-major order from
/// little-endian bytes (as safetensors stores them), reading [`READ_CHUNK_BYTES`] at a time.
///
/// `info` must come from [`read_header`] over the same source.
pub fn for_each_value<S: Source + ?Sized>(
    source: &S,
    info: &TensorInfo,
    mut f: impl FnMut(f32),
) -> io::Result<()> {
    let bytes = info.end - info.start;
    let mut buf =
        vec![0u8; usize::try_from(bytes).map_or(READ_CHUNK_BYTES, |b| b.min(READ_CHUNK_BYTES))];
    let mut offset = info.start;
    while offset < info.end {
        let piece = &mut buf[..(info.end - offset).min(READ_CHUNK_BYTES as u64) as usize];
        source.read_at(offset, piece)?;
        match info.dtype {
            Dtype::F32 => piece
                .chunks_exact(4)
                .for_each(|c| f(f32::from_le_bytes(c.try_into().expect("chunk of 4")))),
            Dtype::F16 => piece.chunks_exact(2).for_each(|c| {
                f(half::f16::from_le_bytes(c.try_into().expect("chunk of 2")).to_f32())
            }),
            Dtype::BF16 => piece.chunks_exact(2).for_each(|c| {
                f(half::bf16::from_le_bytes(c.try_into().expect("chunk of 2")).to_f32())
            }),
        }
        offset += piece.len() as u64;
    }
    Ok(())
}

/// Decodes every tensor of a validated header to `f32`, reading `source` by chunks.
pub fn read_weights<S: Source + ?Sized>(source: &S, header: &Header) -> io::Result<Weights> {
    header
        .tensors
        .iter()
        .map(|(name, info)| {
            // The header tiles the source's bytes, so this is bounded by its size.
            let elements = (info.end - info.start) as usize / dtype_bytes(info.dtype);
            let mut values = Vec::with_capacity(elements);
            for_each_value(source, info, |v| values.push(v))?;
            Ok((
                name.clone(),
                TensorValues { dtype: info.dtype, shape: info.shape.clone(), values },
            ))
        })
        .collect()
}

/// Decodes every tensor of a header that [`parse_header`] validated over the same `bytes`.
pub fn decode_weights(bytes: &[u8], header: &Header) -> Weights {
    read_weights(bytes, header).expect("a slice is read only within its length")
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
