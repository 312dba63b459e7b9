//! The MLP training step, written out by hand on candle tensors.
//!
//! candle's autograd records every operation of the forward pass and walks the graph back,
//! allocating a gradient for every intermediate; for an MLP the backward pass is short enough to
//! write down, which skips the graph and several copies. With `z_i = h_i·W_iᵀ + b_i`,
//! `h_{i+1} = relu(z_i)·d_i` (`d_i` the inverted-dropout mask) and the mean softmax
//! cross-entropy `L` over a batch of `B` rows:
//!
//! ```text
//! ∂L/∂z_last = (softmax(z_last) − onehot(y)) / B
//! ∂L/∂W_i = (∂L/∂z_i)ᵀ · h_i          ∂L/∂b_i = Σ_rows ∂L/∂z_i
//! ∂L/∂z_{i−1} = (∂L/∂z_i · W_i) ⊙ 1[z_{i−1} > 0] ⊙ d_{i−1}
//! ```
//!
//! The parameters are updated in place by the fused [`AdamW`].

use std::cell::RefCell;

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::model::ModelError;
use crate::model::mlp::{Linear, Mlp};
use crate::model::ops::{InPlace, InPlaceF32};
use crate::optim::{AdamW, AdamWConfig, OptimError};
use crate::rng::TrainRng;

/// An MLP with its optimizer state, trained one batch at a time.
pub struct MlpTrainer {
    layers: Vec<Linear>,
    optimizer: AdamW,
    dropout: f32,
}

/// Why a training step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A model or tensor error.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The optimizer refused the step.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

impl MlpTrainer {
    /// Starts training `mlp` (its tensors are copied, so the caller's stay unchanged) with AdamW
    /// and inverted dropout of probability `dropout` after each hidden ReLU.
    pub fn new(mlp: &Mlp, config: AdamWConfig, dropout: f32) -> Result<MlpTrainer, StepError> {
        let layers: Vec<Linear> = mlp
            .layers()
            .iter()
            .map(|l| Ok(Linear { weight: l.weight.copy()?, bias: l.bias.copy()? }))
            .collect::<Result<_, candle_core::Error>>()?;
        let sizes: Vec<usize> =
            layers.iter().flat_map(|l| [l.weight.elem_count(), l.bias.elem_count()]).collect();
        super::keep_heap_between_steps();
        Ok(MlpTrainer { layers, optimizer: AdamW::new(config, &sizes), dropout })
    }

    /// The optimizer (for masks and the learning rate).
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.optimizer
    }

    /// A copy of the current model.
    pub fn model(&self) -> Result<Mlp, StepError> {
        let mut map = crate::artifact::TensorMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            map.insert(crate::model::mlp::weight_name(i), l.weight.copy()?);
            map.insert(crate::model::mlp::bias_name(i), l.bias.copy()?);
        }
        Ok(Mlp::from_tensors(&map)?)
    }

    /// One step on a batch: `x` `[B, features]` (F32, contiguous), `labels` of length `B`.
    /// Returns the batch's mean cross-entropy before the update.
    pub fn step(
        &mut self,
        x: &Tensor,
        labels: &[u32],
        rng: &mut TrainRng,
    ) -> Result<f32, StepError> {
        let (loss, grads) = self.gradients(x, labels, rng)?;
        let params: Vec<&Tensor> = self.layers.iter().flat_map(|l| [&l.weight, &l.bias]).collect();
        let grads: Vec<&Tensor> = grads.iter().collect();
        self.optimizer.step(&params, &grads)?;
        Ok(loss)
    }

    /// The batch's mean cross-entropy and its gradients with respect to every parameter, in the
    /// order weight, bias of each layer.
    fn gradients(
        &self,
        x: &Tensor,
        labels: &[u32],
        rng: &mut TrainRng,
    ) -> Result<(f32, Vec<Tensor>), StepError> {
        let n = self.layers.len();
        let mut inputs = Vec::with_capacity(n);
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let z = h.matmul(&layer.weight.t()?)?;
            inputs.push(h);
            let hidden = i + 1 < n;
            let dropout = if hidden { self.dropout } else { 0.0 };
            let op = BiasActivation { relu: hidden, dropout, rng: RefCell::new(&mut *rng) };
            z.inplace_op2(&layer.bias, &InPlace(op))?;
            h = z;
        }
        let (loss, mut dz) = softmax_cross_entropy(&h, labels)?;
        let mut grads: Vec<Tensor> = Vec::with_capacity(2 * n);
        let keep_scale = 1.0 / (1.0 - self.dropout);
        for i in (0..n).rev() {
            let dw = dz.t()?.matmul(&inputs[i])?;
            let db = dz.sum(0)?;
            grads.push(db);
            grads.push(dw);
            if i > 0 {
                let next = dz.matmul(&self.layers[i].weight)?;
                // inputs[i] is relu(z)·d of the layer below: positive exactly where the
                // gradient passes, and then the dropout scale is the only factor left.
                next.inplace_op2(&inputs[i], &InPlace(ActivationGrad { scale: keep_scale }))?;
                dz = next;
            }
        }
        grads.reverse();
        Ok((loss, grads))
    }
}

/// In place on `z` `[B, width]`: `z + b`, then (hidden layers) `relu(·)·d` with `d` the
/// inverted-dropout mask drawn row by row from `rng`.
struct BiasActivation<'a> {
    relu: bool,
    dropout: f32,
    rng: RefCell<&'a mut TrainRng>,
}

impl InPlaceF32 for BiasActivation<'_> {
    const NAME: &'static str = "bias-activation";

    fn apply(&self, z: &mut [f32], bias: &[f32]) -> candle_core::Result<()> {
        if bias.is_empty() || !z.len().is_multiple_of(bias.len()) {
            candle_core::bail!("bias-activation: {} values for width {}", z.len(), bias.len());
        }
        let keep = 1.0 / (1.0 - self.dropout);
        let mut rng = self.rng.borrow_mut();
        for row in z.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
                if self.relu {
                    let kept = self.dropout == 0.0 || rng.random::<f32>() >= self.dropout;
                    *v = if *v > 0.0 && kept { *v * keep } else { 0.0 };
                }
            }
        }
        Ok(())
    }
}

/// In place on the gradient `g`: `g · scale` where the layer's output `h` is positive, else 0.
struct ActivationGrad {
    scale: f32,
}

impl InPlaceF32 for ActivationGrad {
    const NAME: &'static str = "activation-grad";

    fn apply(&self, g: &mut [f32], h: &[f32]) -> candle_core::Result<()> {
        if g.len() != h.len() {
            candle_core::bail!("activation-grad: shapes differ");
        }
        for (g, &h) in g.iter_mut().zip(h) {
            *g = if h > 0.0 { *g * self.scale } else { 0.0 };
        }
        Ok(())
    }
}

/// Mean softmax cross-entropy of logits `[B, C]` and its gradient with respect to the logits.
fn softmax_cross_entropy(
    logits: &Tensor,
    labels: &[u32],
) -> Result<(f32, Tensor), candle_core::Error> {
    let (batch, classes) = logits.dims2()?;
    let mut values = logits.flatten_all()?.to_vec1::<f32>()?;
    let mut loss = 0f64;
    let scale = 1.0 / batch as f32;
    for (row, &label) in values.chunks_exact_mut(classes).zip(labels) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
        let mut sum = 0f32;
        for z in row.iter_mut() {
            *z = (*z - max).exp();
            sum += *z;
        }
        let label = label as usize;
        loss -= f64::from((row[label] / sum).max(f32::MIN_POSITIVE).ln());
        for z in row.iter_mut() {
            *z *= scale / sum;
        }
        row[label] -= scale;
    }
    let grad = Tensor::from_vec(values, (batch, classes), &Device::Cpu)?;
    Ok(((loss / batch as f64) as f32, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The hand-written gradients equal candle's autograd on the same forward pass.
    #[test]
    fn gradients_match_autograd() {
        let mut rng = crate::rng::stream(3, "test");
        let mlp = Mlp::init(&[5, 7, 6, 3], &mut rng).unwrap();
        let x =
            Tensor::from_vec(crate::rng::uniform_vec(&mut rng, 4 * 5, 2.0), (4, 5), &Device::Cpu)
                .unwrap();
        let labels = [0u32, 2, 1, 2];
        let vars: Vec<Var> = mlp
            .layers()
            .iter()
            .flat_map(|l| {
                [Var::from_tensor(&l.weight).unwrap(), Var::from_tensor(&l.bias).unwrap()]
            })
            .collect();
        let mut h = x.clone();
        for i in 0..3 {
            let (w, b) = (vars[2 * i].as_tensor(), vars[2 * i + 1].as_tensor());
            h = h.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap();
            if i < 2 {
                h = h.relu().unwrap();
            }
        }
        let targets = Tensor::new(&labels, &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&h, &targets).unwrap();
        let store = loss.backward().unwrap();
        let trainer = MlpTrainer::new(&mlp, AdamWConfig::default(), 0.0).unwrap();
        let (ours, grads) = trainer.gradients(&x, &labels, &mut rng).unwrap();
        assert!((ours - loss.to_vec0::<f32>().unwrap()).abs() < 1e-5);
        for (var, g) in vars.iter().zip(&grads) {
            let want = store.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let want = want.to_vec1::<f32>().unwrap();
            let got = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(want.len(), got.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        }
    }
}
