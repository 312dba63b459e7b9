//! Model artifacts: safetensors files holding exactly a model's named tensors.
//!
//! An artifact is the standard safetensors format (an 8-byte little-endian header length, a JSON
//! header with each tensor's dtype, shape and byte range, then the data), with no metadata. Its
//! identity is the sha256 of its bytes; its parameter count is the number of non-zero values over
//! all tensors, so pruned weights cost nothing. Dtypes F32, F16 and BF16 are read; models convert
//! to F32 when they are built. Writing is deterministic: the same tensors give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use consensus::task::Dtype;
use consensus::types::Hash;
use safetensors::SafeTensors;

/// A model's tensors by name, in name order.
pub type TensorMap = BTreeMap<String, Tensor>;

/// Largest artifact read, in bytes; checked before the file is read. A task's own
/// `max_artifact_bytes` is usually far smaller.
pub const ARTIFACT_BYTES_MAX: u64 = 1 << 30;
/// Most tensors in one artifact.
pub const TENSORS_MAX: usize = 4_096;
/// Longest tensor name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Most dimensions of one tensor.
pub const RANK_MAX: usize = 4;

/// Why an artifact could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Larger than the limit.
    #[error("artifact is {bytes} bytes; at most {max}")]
    TooLarge {
        /// The artifact's size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Not a valid safetensors file.
    #[error("not a valid safetensors file: {reason}")]
    Format {
        /// What the parser said.
        reason: String,
    },
    /// Too many tensors, or a name or rank out of bounds.
    #[error("tensor `{name}`: {reason}")]
    Bounds {
        /// The tensor's name (possibly cut short).
        name: String,
        /// Which bound it breaks.
        reason: String,
    },
    /// A dtype other than F32, F16 and BF16.
    #[error("tensor `{name}` has dtype {dtype}; only F32, F16 and BF16 are allowed")]
    Dtype {
        /// The tensor.
        name: String,
        /// Its dtype as the file names it.
        dtype: String,
    },
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

fn format_error(e: impl std::fmt::Display) -> ArtifactError {
    ArtifactError::Format { reason: e.to_string() }
}

/// Serializes tensors as safetensors bytes, each in its own dtype (they must be F32, F16 or BF16
/// and on the CPU).
pub fn encode(tensors: &TensorMap) -> Result<Vec<u8>, ArtifactError> {
    for (name, t) in tensors {
        dtype_of(name, t.dtype())?;
    }
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.contiguous()?)))
        .collect::<Result<_, candle_core::Error>>()?;
    safetensors::serialize(contiguous.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(format_error)
}

/// Parses safetensors bytes into CPU tensors in their stored dtypes, checking the bounds
/// ([`ARTIFACT_BYTES_MAX`], [`TENSORS_MAX`], [`NAME_BYTES_MAX`], [`RANK_MAX`]) and the dtypes.
pub fn decode(bytes: &[u8]) -> Result<TensorMap, ArtifactError> {
    if bytes.len() as u64 > ARTIFACT_BYTES_MAX {
        return Err(ArtifactError::TooLarge { bytes: bytes.len() as u64, max: ARTIFACT_BYTES_MAX });
    }
    let st = SafeTensors::deserialize(bytes).map_err(format_error)?;
    if st.len() > TENSORS_MAX {
        return Err(ArtifactError::Bounds {
            name: String::new(),
            reason: format!("{} tensors; at most {TENSORS_MAX}", st.len()),
        });
    }
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        if name.len() > NAME_BYTES_MAX {
            let short: String = name.chars().take(32).collect();
            return Err(ArtifactError::Bounds {
                name: short,
                reason: format!("name longer than {NAME_BYTES_MAX} bytes"),
            });
        }
        if view.shape().len() > RANK_MAX {
            return Err(ArtifactError::Bounds {
                name,
                reason: format!("{} dimensions; at most {RANK_MAX}", view.shape().len()),
            });
        }
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => return Err(ArtifactError::Dtype { name, dtype: format!("{other:?}") }),
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// Writes tensors to a safetensors file and returns the sha256 of its bytes.
pub fn save(path: &Path, tensors: &TensorMap) -> Result<Hash, ArtifactError> {
    let bytes = encode(tensors)?;
    std::fs::write(path, &bytes)
        .map_err(|source| ArtifactError::Io { path: path.display().to_string(), source })?;
    Ok(sha256(&bytes))
}

/// Reads a safetensors file of at most `max_bytes` (checked before reading) and returns its bytes
/// and tensors.
pub fn load(path: &Path, max_bytes: u64) -> Result<(Vec<u8>, TensorMap), ArtifactError> {
    let io = |source| ArtifactError::Io { path: path.display().to_string(), source };
    let max = max_bytes.min(ARTIFACT_BYTES_MAX);
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes > max {
        return Err(ArtifactError::TooLarge { bytes, max });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let tensors = decode(&bytes)?;
    Ok((bytes, tensors))
}

/// The artifact's identity: sha256 of its bytes.
pub fn sha256(bytes: &[u8]) -> Hash {
    consensus::hash::sha256(bytes)
}

/// The ledger's dtype for a candle dtype, or an error for any other than F32, F16 and BF16.
pub fn dtype_of(name: &str, dtype: DType) -> Result<Dtype, ArtifactError> {
    match dtype {
        DType::F32 => Ok(Dtype::F32),
        DType::F16 => Ok(Dtype::F16),
        DType::BF16 => Ok(Dtype::BF16),
        other => Err(ArtifactError::Dtype { name: name.to_owned(), dtype: format!("{other:?}") }),
    }
}

/// The set of dtypes the tensors use.
pub fn dtypes(tensors: &TensorMap) -> Result<BTreeSet<Dtype>, ArtifactError> {
    tensors.iter().map(|(n, t)| dtype_of(n, t.dtype())).collect()
}

/// Each tensor's values as f32, in name order, then in row-major order within a tensor.
pub fn values_f32(tensor: &Tensor) -> Result<Vec<f32>, ArtifactError> {
    Ok(tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The parameter count: non-zero values over all tensors (a negative zero counts as zero).
pub fn nonzero_params(tensors: &TensorMap) -> Result<u64, ArtifactError> {
    let mut count = 0u64;
    for t in tensors.values() {
        count += values_f32(t)?.iter().filter(|v| **v != 0.0).count() as u64;
    }
    Ok(count)
}

/// The first tensor holding a NaN or infinite value, if any.
pub fn first_non_finite(tensors: &TensorMap) -> Result<Option<String>, ArtifactError> {
    for (name, t) in tensors {
        if values_f32(t)?.iter().any(|v| !v.is_finite()) {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

/// Every tensor converted to F32 (a copy only where the dtype differs).
pub fn to_f32(tensors: &TensorMap) -> Result<TensorMap, ArtifactError> {
    tensors.iter().map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::F32)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_dtype_and_values_and_bytes_are_deterministic() {
        let mut map = TensorMap::new();
        let a = Tensor::from_vec(vec![1f32, 0.0, -2.5, 0.0], (2, 2), &Device::Cpu).unwrap();
        map.insert("a".into(), a.clone());
        map.insert("b".into(), a.to_dtype(DType::BF16).unwrap());
        let bytes = encode(&map).unwrap();
        assert_eq!(bytes, encode(&map).unwrap());
        let back = decode(&bytes).unwrap();
        assert_eq!(back["b"].dtype(), DType::BF16);
        assert_eq!(values_f32(&back["a"]).unwrap(), vec![1.0, 0.0, -2.5, 0.0]);
        assert_eq!(nonzero_params(&back).unwrap(), 4);
        assert_eq!(dtypes(&back).unwrap(), BTreeSet::from([Dtype::F32, Dtype::BF16]));
        assert_eq!(first_non_finite(&back).unwrap(), None);
    }

    #[test]
    fn garbage_and_other_dtypes_are_refused() {
        assert!(matches!(decode(b"not safetensors"), Err(ArtifactError::Format { .. })));
        let mut map = TensorMap::new();
        map.insert("i".into(), Tensor::new(&[1i64, 2], &Device::Cpu).unwrap());
        assert!(matches!(encode(&map), Err(ArtifactError::Dtype { .. })));
    }
}
