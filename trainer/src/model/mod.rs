//! The two architectures a task can ask for, with fixed tensor names, shapes and forward passes.
//!
//! Both are built from a [`TensorMap`](crate::artifact::TensorMap) (an artifact's tensors in F32,
//! F16 or BF16; they are converted to F32), and checked against the expected names and shapes with
//! a typed [`ModelError`], so an artifact from another framework either fits exactly or is refused
//! with a reason. Their eval forward passes use no dropout and run in a fixed order.

pub mod charlm;
pub mod mlp;
pub(crate) mod ops;

/// Why a set of tensors is not a valid model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An expected tensor is absent.
    #[error("missing tensor `{name}`")]
    Missing {
        /// The tensor's name.
        name: String,
    },
    /// A tensor that is not part of the architecture.
    #[error("unexpected tensor `{name}`")]
    Unexpected {
        /// The tensor's name.
        name: String,
    },
    /// A tensor with the wrong shape.
    #[error("tensor `{name}` has shape {found:?}; expected {expected:?}")]
    Shape {
        /// The tensor's name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// The tensors do not form a valid model (layers that do not chain, too many layers,
    /// inconsistent hyperparameters, an input of the wrong shape).
    #[error("{reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Checks a tensor's shape, naming it in the error.
pub(crate) fn check_shape(
    name: &str,
    tensor: &candle_core::Tensor,
    expected: &[usize],
) -> Result<(), ModelError> {
    if tensor.dims() != expected {
        return Err(ModelError::Shape {
            name: name.to_owned(),
            expected: expected.to_vec(),
            found: tensor.dims().to_vec(),
        });
    }
    Ok(())
}

/// A tensor as contiguous F32 (the dtype every model computes in).
pub(crate) fn as_f32(tensor: &candle_core::Tensor) -> Result<candle_core::Tensor, ModelError> {
    Ok(tensor.to_dtype(candle_core::DType::F32)?.contiguous()?)
}
