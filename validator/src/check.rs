//! Artifact checks: everything a validator verifies before it evaluates a model.
//!
//! [`check_artifact`] runs the checks in this fixed order and stops at the first failure, so every
//! honest validator gives the same reason for the same bytes:
//!
//! 1. size within `limits.max_artifact_bytes` ([`RejectReason::TooLarge`]), before hashing, and
//!    equal to the revealed `size_bytes` ([`RejectReason::SizeMismatch`]);
//! 2. sha256 equal to the revealed model hash ([`RejectReason::HashMismatch`]);
//! 3. a well-formed safetensors header within the reader's limits ([`RejectReason::Malformed`]),
//!    with only the task's allowed dtypes ([`RejectReason::DisallowedDtype`]);
//! 4. tensor names and shapes forming the task's architecture
//!    ([`RejectReason::WrongArchitecture`]);
//! 5. non-zero parameter count within `limits.max_params` ([`RejectReason::TooManyParams`]) and
//!    equal to the revealed count ([`RejectReason::ParamsMismatch`]);
//! 6. every value finite ([`RejectReason::NonFinite`]).
//!
//! A parameter is counted when its stored value is not zero (`-0.0` is zero; NaN is not), the
//! same rule the trainer uses when it reveals its count.
//!
//! [`check_source`] reads the artifact by ranges (a file in the blob store is never read whole):
//! the size comes from the file system, the sha256 from a pass in chunks, then the header, then a
//! pass that counts parameters and finds non-finite values without keeping any; only an artifact
//! that passed all of that is decoded, so what a junk file can make a validator allocate is one
//! chunk and its header.

use std::collections::BTreeMap;
use std::io;

use consensus::task::{TaskKind, TaskSpec};
use consensus::types::ModelHash;
use consensus::verdict::RejectReason;

use trainer::model::mlp::{LAYERS_MAX, WIDTH_MAX, bias_name, weight_name};

use crate::artifact::{self, Header, HeaderError, READ_CHUNK_BYTES, Source, Weights};

/// What a trainer revealed about its artifact, which the bytes must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revealed {
    /// The revealed sha256 of the artifact.
    pub model_hash: ModelHash,
    /// The revealed non-zero parameter count.
    pub params: u64,
    /// The revealed artifact size in bytes; `None` for a model whose size the ledger does not
    /// record (a base model or an earlier champion).
    pub size_bytes: Option<u64>,
}

/// The shape of a model that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Architecture {
    /// An MLP classifier: `widths[0]` inputs, then each layer's output width, the last being the
    /// number of classes.
    Mlp {
        /// Input width followed by every layer's output width.
        widths: Vec<usize>,
    },
    /// The task's character LM (its shapes are fixed by the task spec).
    CharLm,
}

/// Why tensor names or shapes do not form the task's architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchitectureError {
    /// A tensor the architecture needs is absent.
    #[error("missing tensor {name:?}")]
    Missing {
        /// The missing tensor.
        name: String,
    },
    /// A tensor the architecture does not have is present.
    #[error("unexpected tensor {name:?}")]
    Unexpected {
        /// The extra tensor, cut to 80 characters.
        name: String,
    },
    /// A tensor has another shape than the architecture needs.
    #[error("tensor {name:?} has shape {found:?}, expected {expected}")]
    Shape {
        /// The tensor.
        name: String,
        /// What was needed, in words (e.g. `[_, 64]`).
        expected: String,
        /// What the file holds.
        found: Vec<usize>,
    },
}

/// Why an artifact failed its checks. [`CheckError::reason`] gives the verdict's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Larger than the task allows.
    #[error("artifact is {size_bytes} bytes, the task allows {max_bytes}")]
    TooLarge {
        /// The artifact's size.
        size_bytes: u64,
        /// The task's limit.
        max_bytes: u64,
    },
    /// The size is not the revealed one.
    #[error("artifact is {found} bytes, the reveal says {revealed}")]
    SizeMismatch {
        /// The revealed size.
        revealed: u64,
        /// The real size.
        found: u64,
    },
    /// The sha256 is not the revealed one.
    #[error("artifact sha256 is {found}, the reveal says {expected}")]
    HashMismatch {
        /// The revealed hash.
        expected: ModelHash,
        /// The bytes' hash.
        found: ModelHash,
    },
    /// Not well-formed safetensors, or a disallowed dtype.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// Names or shapes do not form the task's architecture.
    #[error(transparent)]
    Architecture(#[from] ArchitectureError),
    /// More non-zero parameters than the task allows.
    #[error("{params} non-zero parameters, the task allows {max}")]
    TooManyParams {
        /// The non-zero count.
        params: u64,
        /// The task's limit.
        max: u64,
    },
    /// The non-zero count is not the revealed one.
    #[error("{found} non-zero parameters, the reveal says {revealed}")]
    ParamsMismatch {
        /// The revealed count.
        revealed: u64,
        /// The real count.
        found: u64,
    },
    /// A value is NaN or infinite.
    #[error("tensor {tensor:?} holds a non-finite value at index {index}")]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// Row-major index of the first non-finite value.
        index: usize,
    },
}

impl CheckError {
    /// The verdict's reject reason for this failure.
    pub fn reason(&self) -> RejectReason {
        match self {
            CheckError::TooLarge { .. } => RejectReason::TooLarge,
            CheckError::SizeMismatch { .. } => RejectReason::SizeMismatch,
            CheckError::HashMismatch { .. } => RejectReason::HashMismatch,
            CheckError::Header(HeaderError::Format(_)) => RejectReason::Malformed,
            CheckError::Header(HeaderError::DisallowedDtype { .. }) => {
                RejectReason::DisallowedDtype
            }
            CheckError::Architecture(_) => RejectReason::WrongArchitecture,
            CheckError::TooManyParams { .. } => RejectReason::TooManyParams,
            CheckError::ParamsMismatch { .. } => RejectReason::ParamsMismatch,
            CheckError::NonFinite { .. } => RejectReason::NonFinite,
        }
    }

    /// The non-zero parameter count, when the checks got far enough to count it.
    pub fn params(&self) -> Option<u64> {
        match self {
            CheckError::TooManyParams { params, .. } => Some(*params),
            CheckError::ParamsMismatch { found, .. } => Some(*found),
            _ => None,
        }
    }
}

/// An artifact that passed every check, with its weights decoded to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedArtifact {
    /// sha256 of the bytes.
    pub sha256: ModelHash,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// Non-zero parameter count.
    pub params: u64,
    /// The model's shape.
    pub architecture: Architecture,
    /// Every tensor by name.
    pub weights: Weights,
}

/// Runs every check of the module docs on `bytes` for `spec`, comparing with `revealed` when
/// given (the offline `node score` has no reveal and skips the hash and count comparisons).
pub fn check_artifact(
    bytes: &[u8],
    spec: &TaskSpec,
    revealed: Option<&Revealed>,
) -> Result<CheckedArtifact, CheckError> {
    check_source(bytes, spec, revealed).expect("a slice is read only within its length")
}

/// As [`check_artifact`], reading `source` by ranges (see the module docs). The outer error is
/// the source's I/O failure, which says nothing about the artifact.
pub fn check_source<S: Source + ?Sized>(
    source: &S,
    spec: &TaskSpec,
    revealed: Option<&Revealed>,
) -> io::Result<Result<CheckedArtifact, CheckError>> {
    let size_bytes = source.size()?;
    if size_bytes > spec.limits.max_artifact_bytes {
        let max_bytes = spec.limits.max_artifact_bytes;
        return Ok(Err(CheckError::TooLarge { size_bytes, max_bytes }));
    }
    if let Some(revealed) = revealed.and_then(|r| r.size_bytes)
        && revealed != size_bytes
    {
        return Ok(Err(CheckError::SizeMismatch { revealed, found: size_bytes }));
    }
    let sha256 = sha256_of(source, size_bytes)?;
    if let Some(r) = revealed
        && r.model_hash != sha256
    {
        return Ok(Err(CheckError::HashMismatch { expected: r.model_hash, found: sha256 }));
    }
    let header = match artifact::read_header(source, &spec.limits.dtypes)? {
        Ok(header) => header,
        Err(e) => return Ok(Err(e.into())),
    };
    let architecture = match check_architecture(&header, &spec.kind) {
        Ok(architecture) => architecture,
        Err(e) => return Ok(Err(e)),
    };
    // Counted and checked from the file, so a failing artifact is never decoded whole.
    let mut params = 0u64;
    let mut non_finite = None;
    for (name, info) in &header.tensors {
        let mut index = 0usize;
        artifact::for_each_value(source, info, |v| {
            params += u64::from(v != 0.0);
            if non_finite.is_none() && !v.is_finite() {
                non_finite = Some((name, index));
            }
            index += 1;
        })?;
    }
    if params > spec.limits.max_params {
        return Ok(Err(CheckError::TooManyParams { params, max: spec.limits.max_params }));
    }
    if let Some(r) = revealed
        && r.params != params
    {
        return Ok(Err(CheckError::ParamsMismatch { revealed: r.params, found: params }));
    }
    if let Some((tensor, index)) = non_finite {
        return Ok(Err(CheckError::NonFinite { tensor: tensor.clone(), index }));
    }
    let weights = artifact::read_weights(source, &header)?;
    Ok(Ok(CheckedArtifact { sha256, size_bytes, params, architecture, weights }))
}

/// The sha256 of the first `size_bytes` of `source`, read [`READ_CHUNK_BYTES`] at a time.
pub fn sha256_of<S: Source + ?Sized>(source: &S, size_bytes: u64) -> io::Result<ModelHash> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf =
        vec![0u8; READ_CHUNK_BYTES.min(usize::try_from(size_bytes).unwrap_or(usize::MAX))];
    let mut offset = 0u64;
    while offset < size_bytes {
        let piece = &mut buf[..(size_bytes - offset).min(READ_CHUNK_BYTES as u64) as usize];
        source.read_at(offset, piece)?;
        hasher.update(&*piece);
        offset += piece.len() as u64;
    }
    Ok(consensus::types::Hash(hasher.finalize().into()))
}

/// Counts the values that are not zero (`-0.0` is zero, NaN is not).
pub fn nonzero_params(weights: &Weights) -> u64 {
    weights.values().map(|t| t.values.iter().filter(|&&v| v != 0.0).count() as u64).sum()
}

/// Checks that the header's tensors form the task's architecture.
pub fn check_architecture(header: &Header, kind: &TaskKind) -> Result<Architecture, CheckError> {
    match kind {
        TaskKind::Classification { features, classes } => {
            let widths = check_mlp(header, *features as usize, *classes as usize)?;
            Ok(Architecture::Mlp { widths })
        }
        TaskKind::CharLm { .. } => {
            let expected = crate::eval::charlm_shapes(kind);
            check_exact(header, &expected)?;
            Ok(Architecture::CharLm)
        }
    }
}

fn shape_error(name: &str, expected: String, found: &[usize]) -> ArchitectureError {
    ArchitectureError::Shape { name: name.to_string(), expected, found: found.to_vec() }
}

/// The MLP layout (PyTorch `nn.Linear`): `layers.{i}.weight` `[out, in]` and `layers.{i}.bias`
/// `[out]` for `i = 0..n`, `1 ≤ n ≤ LAYERS_MAX`, the first `in` being `features`, each `in` the
/// previous `out`, the last `out` being `classes`, every width from 1 to `WIDTH_MAX` (the trainer's
/// bounds), and no other tensor.
fn check_mlp(
    header: &Header,
    features: usize,
    classes: usize,
) -> Result<Vec<usize>, ArchitectureError> {
    let tensors = &header.tensors;
    let layers = (0..=LAYERS_MAX).take_while(|&i| tensors.contains_key(&weight_name(i))).count();
    if layers == 0 {
        return Err(ArchitectureError::Missing { name: weight_name(0) });
    }
    if layers > LAYERS_MAX {
        return Err(ArchitectureError::Unexpected { name: weight_name(LAYERS_MAX) });
    }
    for name in tensors.keys() {
        let known = (0..layers).any(|i| *name == weight_name(i) || *name == bias_name(i));
        if !known {
            return Err(ArchitectureError::Unexpected { name: name.chars().take(80).collect() });
        }
    }
    let mut widths = vec![features];
    for i in 0..layers {
        let inputs = widths[i];
        let name = weight_name(i);
        let shape = &tensors[&name].shape;
        let last = i + 1 == layers;
        let ok = shape.len() == 2
            && shape[1] == inputs
            && (1..=WIDTH_MAX).contains(&shape[0])
            && (!last || shape[0] == classes);
        if !ok {
            let out = if last { classes.to_string() } else { "_".to_string() };
            return Err(shape_error(&name, format!("[{out}, {inputs}]"), shape));
        }
        let outputs = shape[0];
        let bias = bias_name(i);
        let Some(b) = tensors.get(&bias) else {
            return Err(ArchitectureError::Missing { name: bias });
        };
        if b.shape != [outputs] {
            return Err(shape_error(&bias, format!("[{outputs}]"), &b.shape));
        }
        widths.push(outputs);
    }
    Ok(widths)
}

/// Checks that the header holds exactly the `expected` tensors with exactly their shapes.
fn check_exact(
    header: &Header,
    expected: &BTreeMap<String, Vec<usize>>,
) -> Result<(), ArchitectureError> {
    for (name, shape) in expected {
        let Some(found) = header.tensors.get(name) else {
            return Err(ArchitectureError::Missing { name: name.clone() });
        };
        if found.shape != *shape {
            return Err(shape_error(name, format!("{shape:?}"), &found.shape));
        }
    }
    if let Some(extra) = header.tensors.keys().find(|n| !expected.contains_key(*n)) {
        return Err(ArchitectureError::Unexpected { name: extra.chars().take(80).collect() });
    }
    Ok(())
}
