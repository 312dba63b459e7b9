//! The MLP classifier.
//!
//! Tensors, in PyTorch `nn.Linear` layout, for `i = 0..n` (n ≥ 1 layers):
//! `layers.{i}.weight` `[out_i, in_i]` and `layers.{i}.bias` `[out_i]`, with `in_0 = features`,
//! `in_i = out_{i-1}` and `out_{n-1} = classes`. The hidden sizes are read from the shapes.
//!
//! Forward pass (eval): `h_0 = x` (standardized features, `[batch, features]`);
//! `z_i = h_i · W_iᵀ + b_i`; `h_{i+1} = relu(z_i)` for every layer but the last, whose `z` is the
//! class logits. Training adds inverted dropout after each ReLU; evaluation has none.

use candle_core::{Device, Tensor};

use super::{ModelError, as_f32, check_shape};
use crate::artifact::TensorMap;
use crate::rng::{self, TrainRng};

/// Most layers of an MLP.
pub const LAYERS_MAX: usize = 64;
/// Widest layer of an MLP.
pub const WIDTH_MAX: usize = 1 << 16;

/// The name of layer `i`'s weight.
pub fn weight_name(i: usize) -> String {
    format!("layers.{i}.weight")
}

/// The name of layer `i`'s bias.
pub fn bias_name(i: usize) -> String {
    format!("layers.{i}.bias")
}

/// One `nn.Linear` layer: `weight [out, in]`, `bias [out]`, both F32 and contiguous.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

/// An MLP classifier (see the module docs for names and the forward pass).
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Builds an MLP from tensors named as documented, inferring the sizes from their shapes.
    /// Any tensor dtype the artifact allows is converted to F32.
    pub fn from_tensors(tensors: &TensorMap) -> Result<Mlp, ModelError> {
        let mut count = 0;
        for name in tensors.keys() {
            let index = name
                .strip_prefix("layers.")
                .and_then(|rest| rest.split_once('.'))
                .filter(|(i, part)| {
                    (*part == "weight" || *part == "bias")
                        && !i.is_empty()
                        && i.bytes().all(|b| b.is_ascii_digit())
                        && (i.len() == 1 || !i.starts_with('0'))
                })
                .and_then(|(i, _)| i.parse::<usize>().ok())
                .filter(|i| *i < LAYERS_MAX)
                .ok_or_else(|| ModelError::Unexpected { name: name.clone() })?;
            count = count.max(index + 1);
        }
        if count == 0 {
            return Err(ModelError::Missing { name: weight_name(0) });
        }
        let mut layers = Vec::with_capacity(count);
        let mut previous_out: Option<usize> = None;
        for i in 0..count {
            let (wn, bn) = (weight_name(i), bias_name(i));
            let w = tensors.get(&wn).ok_or(ModelError::Missing { name: wn.clone() })?;
            let b = tensors.get(&bn).ok_or(ModelError::Missing { name: bn.clone() })?;
            let &[out, inp] = w.dims() else {
                return Err(ModelError::Invalid {
                    reason: format!("tensor `{wn}` must have 2 dimensions, has {:?}", w.dims()),
                });
            };
            if out == 0 || inp == 0 || out > WIDTH_MAX || inp > WIDTH_MAX {
                return Err(ModelError::Invalid {
                    reason: format!(
                        "tensor `{wn}` has shape {:?}; sizes must be 1 to {WIDTH_MAX}",
                        w.dims()
                    ),
                });
            }
            if let Some(prev) = previous_out
                && prev != inp
            {
                return Err(ModelError::Shape {
                    name: wn,
                    expected: vec![out, prev],
                    found: w.dims().to_vec(),
                });
            }
            check_shape(&bn, b, &[out])?;
            previous_out = Some(out);
            layers.push(Linear { weight: as_f32(w)?, bias: as_f32(b)? });
        }
        Ok(Mlp { layers })
    }

    /// A freshly initialized MLP with layer sizes `[features, hidden…, classes]`, drawn like
    /// PyTorch's `nn.Linear` default: weights and biases from `U(-1/√in, 1/√in)`.
    pub fn init(sizes: &[usize], rng: &mut TrainRng) -> Result<Mlp, ModelError> {
        if sizes.len() < 2 || sizes.len() > LAYERS_MAX + 1 {
            return Err(ModelError::Invalid {
                reason: format!("an MLP needs 1 to {LAYERS_MAX} layers"),
            });
        }
        if sizes.iter().any(|&s| s == 0 || s > WIDTH_MAX) {
            return Err(ModelError::Invalid {
                reason: format!("layer sizes {sizes:?} must be 1 to {WIDTH_MAX}"),
            });
        }
        let layers = sizes
            .windows(2)
            .map(|pair| {
                let (inp, out) = (pair[0], pair[1]);
                let bound = 1.0 / (inp as f32).sqrt();
                let w = rng::uniform_vec(rng, out * inp, bound);
                let b = rng::uniform_vec(rng, out, bound);
                Ok(Linear {
                    weight: Tensor::from_vec(w, (out, inp), &Device::Cpu)?,
                    bias: Tensor::from_vec(b, out, &Device::Cpu)?,
                })
            })
            .collect::<Result<_, candle_core::Error>>()?;
        Ok(Mlp { layers })
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// Layer sizes `[features, hidden…, classes]`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.features()];
        sizes.extend(self.layers.iter().map(|l| l.weight.dims()[0]));
        sizes
    }

    /// Number of input features.
    pub fn features(&self) -> usize {
        self.layers[0].weight.dims()[1]
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].weight.dims()[0]
    }

    /// Hidden sizes (empty for a linear model).
    pub fn hidden(&self) -> Vec<usize> {
        let sizes = self.sizes();
        sizes[1..sizes.len() - 1].to_vec()
    }

    /// Number of parameters, zero or not.
    pub fn size(&self) -> usize {
        self.layers.iter().map(|l| l.weight.elem_count() + l.bias.elem_count()).sum()
    }

    /// Eval-mode forward: class logits `[batch, classes]` for standardized features
    /// `[batch, features]` (F32).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        match x.dims() {
            [_, f] if *f == self.features() => {}
            dims => {
                return Err(ModelError::Invalid {
                    reason: format!("input shape {dims:?}; expected [batch, {}]", self.features()),
                });
            }
        }
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = h.matmul(&layer.weight.t()?)?.broadcast_add(&layer.bias)?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// The predicted class of each row (the first of equal maxima).
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>, ModelError> {
        let logits = self.logits(x)?.to_vec2::<f32>()?;
        Ok(logits.iter().map(|row| argmax(row) as u32).collect())
    }

    /// The tensors, named as documented.
    pub fn tensors(&self) -> TensorMap {
        let mut map = TensorMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            map.insert(weight_name(i), l.weight.clone());
            map.insert(bias_name(i), l.bias.clone());
        }
        map
    }
}

/// Index of the largest value (the first of equal maxima; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(shapes: &[(&str, &[usize])]) -> TensorMap {
        shapes
            .iter()
            .map(|(n, s)| {
                ((*n).to_owned(), Tensor::zeros(*s, candle_core::DType::F16, &Device::Cpu).unwrap())
            })
            .collect()
    }

    #[test]
    fn sizes_are_inferred_from_shapes() {
        let m = Mlp::from_tensors(&tensors(&[
            ("layers.0.weight", &[5, 3]),
            ("layers.0.bias", &[5]),
            ("layers.1.weight", &[2, 5]),
            ("layers.1.bias", &[2]),
        ]))
        .unwrap();
        assert_eq!(m.sizes(), vec![3, 5, 2]);
        assert_eq!(m.hidden(), vec![5]);
        assert_eq!(m.size(), 5 * 3 + 5 + 2 * 5 + 2);
        let x = Tensor::ones((4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.logits(&x).unwrap().dims(), &[4, 2]);
    }

    #[test]
    fn layers_that_do_not_chain_are_refused() {
        let err = Mlp::from_tensors(&tensors(&[
            ("layers.0.weight", &[5, 3]),
            ("layers.0.bias", &[5]),
            ("layers.1.weight", &[2, 4]),
            ("layers.1.bias", &[2]),
        ]))
        .unwrap_err();
        assert!(
            matches!(err, ModelError::Shape { ref name, .. } if name == "layers.1.weight"),
            "{err}"
        );
        let err = Mlp::from_tensors(&tensors(&[
            ("layers.0.weight", &[5, 3]),
            ("layers.2.weight", &[5, 3]),
        ]))
        .unwrap_err();
        assert!(
            matches!(err, ModelError::Missing { ref name } if name == "layers.0.bias"),
            "{err}"
        );
        let err = Mlp::from_tensors(&tensors(&[("layers.01.weight", &[5, 3])])).unwrap_err();
        assert!(matches!(err, ModelError::Unexpected { .. }), "{err}");
        let err =
            Mlp::from_tensors(&tensors(&[("layers.0.weight", &[5]), ("layers.0.bias", &[5])]))
                .unwrap_err();
        assert!(matches!(err, ModelError::Invalid { .. }), "{err}");
        let err =
            Mlp::from_tensors(&tensors(&[("layers.0.weight", &[2, 3]), ("layers.0.bias", &[3])]))
                .unwrap_err();
        assert!(matches!(err, ModelError::Shape { .. }), "{err}");
    }
}
