//! A fused AdamW: one pass over each parameter's buffer per step, in place.
//!
//! candle-nn's AdamW builds the update from about a dozen tensor operations per parameter, each a
//! full pass that allocates a new tensor. This one walks parameter, gradient and both moment
//! buffers together once, writing the parameter in place through a candle in-place op. The
//! arithmetic is PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments):
//!
//! ```text
//! p ← p·(1 − lr·wd)
//! m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
//! p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//!
//! A parameter may carry a mask (from magnitude pruning): masked values stay exactly zero.

use std::cell::RefCell;

use candle_core::Tensor;

use crate::model::ops::{InPlace, InPlaceF32};

/// AdamW hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

struct Slot {
    m: Vec<f32>,
    v: Vec<f32>,
    mask: Option<Vec<bool>>,
}

/// AdamW state for a fixed list of parameters.
pub struct AdamW {
    config: AdamWConfig,
    step: i32,
    slots: Vec<Slot>,
}

/// Why an optimizer step failed.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// Parameters and gradients do not line up with the optimizer's state.
    #[error("parameter {index}: {reason}")]
    Mismatch {
        /// Position in the parameter list.
        index: usize,
        /// What does not match.
        reason: String,
    },
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

impl AdamW {
    /// State for parameters of the given element counts, all moments zero.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> AdamW {
        let slots =
            sizes.iter().map(|&n| Slot { m: vec![0.0; n], v: vec![0.0; n], mask: None }).collect();
        AdamW { config, step: 0, slots }
    }

    /// The hyperparameters.
    pub fn config(&self) -> AdamWConfig {
        self.config
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Keeps parameter `index` at zero wherever `keep` is false.
    pub fn set_mask(&mut self, index: usize, keep: Vec<bool>) -> Result<(), OptimError> {
        let slot = self
            .slots
            .get_mut(index)
            .ok_or_else(|| OptimError::Mismatch { index, reason: "no such parameter".into() })?;
        if keep.len() != slot.m.len() {
            return Err(OptimError::Mismatch {
                index,
                reason: format!("mask of {} values for {} parameters", keep.len(), slot.m.len()),
            });
        }
        slot.mask = Some(keep);
        Ok(())
    }

    /// One update of every parameter (contiguous F32 CPU tensors) from its gradient (same shape).
    pub fn step(&mut self, params: &[&Tensor], grads: &[&Tensor]) -> Result<(), OptimError> {
        if params.len() != self.slots.len() || grads.len() != self.slots.len() {
            return Err(OptimError::Mismatch {
                index: params.len().min(grads.len()),
                reason: format!(
                    "{} parameters and {} gradients for {} slots",
                    params.len(),
                    grads.len(),
                    self.slots.len()
                ),
            });
        }
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step);
        let bc2 = 1.0 - c.beta2.powi(self.step);
        for (index, ((p, g), slot)) in params.iter().zip(grads).zip(&mut self.slots).enumerate() {
            if p.elem_count() != slot.m.len() || g.dims() != p.dims() {
                return Err(OptimError::Mismatch {
                    index,
                    reason: format!("parameter {:?}, gradient {:?}", p.dims(), g.dims()),
                });
            }
            let op = FusedStep {
                slot: RefCell::new(slot),
                decay: (1.0 - c.lr * c.weight_decay) as f32,
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                step_size: (c.lr / bc1) as f32,
                inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                eps: c.eps as f32,
            };
            p.inplace_op2(g, &InPlace(op))?;
        }
        Ok(())
    }
}

struct FusedStep<'a> {
    slot: RefCell<&'a mut Slot>,
    decay: f32,
    beta1: f32,
    beta2: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
}

impl InPlaceF32 for FusedStep<'_> {
    const NAME: &'static str = "fused-adamw";

    fn apply(&self, p: &mut [f32], g: &[f32]) -> candle_core::Result<()> {
        let mut slot = self.slot.borrow_mut();
        let Slot { m, v, mask } = &mut **slot;
        if p.len() != m.len() || g.len() != m.len() {
            candle_core::bail!("fused AdamW: buffer sizes differ");
        }
        let (b1, b2) = (self.beta1, self.beta2);
        for i in 0..p.len() {
            let gi = g[i];
            let mi = b1 * m[i] + (1.0 - b1) * gi;
            let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            let denom = vi.sqrt() * self.inv_sqrt_bc2 + self.eps;
            p[i] = p[i] * self.decay - self.step_size * mi / denom;
        }
        if let Some(keep) = mask {
            for (x, k) in p.iter_mut().zip(keep.iter()) {
                if !k {
                    *x = 0.0;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused step matches candle-nn's AdamW (PyTorch's formula) to float precision.
    #[test]
    fn matches_candle_nn_adamw() {
        use candle_nn::Optimizer;
        let init = vec![0.5f32, -1.0, 2.0, 0.0];
        let grads = [vec![0.1f32, -0.2, 0.3, 1.0], vec![-0.5f32, 0.25, 0.0, 2.0]];
        let p = Tensor::from_vec(init.clone(), 4, &Device::Cpu).unwrap();
        let var = Var::from_tensor(&p.copy().unwrap()).unwrap();
        let params = candle_nn::ParamsAdamW { lr: 0.01, ..Default::default() };
        let mut reference = candle_nn::AdamW::new(vec![var.clone()], params).unwrap();
        let mut ours = AdamW::new(AdamWConfig { lr: 0.01, ..Default::default() }, &[4]);
        for g in grads {
            let gt = Tensor::from_vec(g, 4, &Device::Cpu).unwrap();
            ours.step(&[&p], &[&gt]).unwrap();
            let loss = (var.as_tensor() * &gt).unwrap().sum_all().unwrap();
            reference.backward_step(&loss).unwrap();
        }
        let a = p.to_vec1::<f32>().unwrap();
        let b = var.as_tensor().to_vec1::<f32>().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn masked_values_stay_zero() {
        let p = Tensor::from_vec(vec![1f32, 2.0], 2, &Device::Cpu).unwrap();
        let g = Tensor::from_vec(vec![1f32, 1.0], 2, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), &[2]);
        opt.set_mask(0, vec![true, false]).unwrap();
        opt.step(&[&p], &[&g]).unwrap();
        assert_eq!(p.to_vec1::<f32>().unwrap()[1], 0.0);
    }
}
