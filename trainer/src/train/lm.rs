//! Char LM runs: candle autograd through the transformer, the fused AdamW, a cosine learning-rate
//! schedule, early stopping and pruning.
//!
//! The text is the first `data.fraction` of the training file; the last
//! `data.validation_fraction` of that (at most [`VALIDATION_CHARS_MAX`] characters) is the local
//! validation split. Each step draws `lm.batch_size` windows of `context + 1` characters at
//! seeded random offsets of the rest. The learning rate warms up linearly over the first 5% of
//! the steps, then follows a cosine from `lm.lr` down to `lm.lr / 10`.

use candle_core::{Device, Tensor, Var};
use consensus::task::TaskSpec;
use rand::Rng;

use super::{Event, Report, TrainError, Trained, prune_masks};
use crate::artifact::{self, TensorMap, values_f32};
use crate::data::Vocabulary;
use crate::eval;
use crate::model::charlm::{CharLm, CharLmShape, Dropout};
use crate::optim::{AdamW, AdamWConfig};
use crate::recipe::Recipe;
use crate::rng;

/// Longest local validation split of a char LM run, in characters (evaluation cost bound).
pub const VALIDATION_CHARS_MAX: usize = 16_384;

/// Trains the task's char LM on its training text.
pub fn train_char_lm(
    spec: &TaskSpec,
    text: &str,
    recipe: &Recipe,
    on_event: &mut dyn FnMut(Event),
) -> Result<Trained, TrainError> {
    let shape = CharLmShape::from_kind(&spec.kind)?;
    let vocab = Vocabulary::from_preprocessing(&spec.preprocessing)?;
    if vocab.size() != shape.vocab {
        return Err(TrainError::Invalid(format!(
            "the vocabulary has {} entries; the task's model has {}",
            vocab.size(),
            shape.vocab
        )));
    }
    let all = vocab.encode(text);
    let used = &all[..((recipe.data.fraction * all.len() as f64).round() as usize).min(all.len())];
    let val_len = ((recipe.data.validation_fraction * used.len() as f64).round() as usize)
        .min(VALIDATION_CHARS_MAX);
    let (train, validation) = used.split_at(used.len() - val_len);
    let c = shape.context;
    if train.len() < c + 2 {
        return Err(TrainError::Invalid(format!(
            "{} training characters; need more than the context of {c}",
            train.len()
        )));
    }
    let validation = (validation.len() >= 2).then_some(validation);

    let seed = recipe.seed;
    let init = match &recipe.base {
        Some(base) => {
            let (_, tensors) = artifact::load(&base.path, spec.limits.max_artifact_bytes)?;
            on_event(Event::Note(format!("fine-tuning from {}", base.path.display())));
            artifact::to_f32(&tensors)?
        }
        None => CharLm::init_tensors(shape, &mut rng::stream(seed, "init"))?,
    };
    let mut trainer = LmTrainer::new(
        shape,
        &init,
        AdamWConfig {
            lr: recipe.lm.lr,
            weight_decay: recipe.lm.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let budget = recipe
        .prune
        .as_ref()
        .map_or(spec.limits.max_params, |p| p.params.min(spec.limits.max_params));
    let size = artifact::nonzero_params(&trainer.model().tensors())?;
    if recipe.prune.is_none() && size > budget {
        return Err(TrainError::Invalid(format!(
            "the model has {size} non-zero parameters; the task allows {budget}: add a [prune] section"
        )));
    }

    let lm = &recipe.lm;
    let mut batch_rng = rng::stream(seed, "batches");
    let mut drop_rng = rng::stream(seed, "dropout");
    let mut step = |trainer: &mut LmTrainer, lr: f64| -> Result<f64, TrainError> {
        trainer.optimizer.set_lr(lr);
        let mut input = Vec::with_capacity(lm.batch_size * c);
        let mut target = Vec::with_capacity(lm.batch_size * c);
        for _ in 0..lm.batch_size {
            let at = batch_rng.random_range(0..train.len() - c);
            input.extend_from_slice(&train[at..at + c]);
            target.extend_from_slice(&train[at + 1..at + c + 1]);
        }
        let x = Tensor::from_vec(input, (lm.batch_size, c), &Device::Cpu)?;
        let y = Tensor::from_vec(target, (lm.batch_size, c), &Device::Cpu)?;
        trainer.step(&x, &y, Some(Dropout { p: recipe.model.dropout, rng: &mut drop_rng }))
    };
    let measure = |model: &CharLm| -> Result<Option<f64>, TrainError> {
        match validation {
            Some(v) => Ok(Some(eval::bits_per_char(model, v)?)),
            None => Ok(None),
        }
    };

    let steps = lm.steps;
    let warmup = (steps / 20).max(1);
    let schedule = |s: usize| -> f64 {
        if s < warmup {
            lm.lr * (s + 1) as f64 / warmup as f64
        } else {
            let progress = (s - warmup) as f64 / (steps - warmup).max(1) as f64;
            lm.lr * (0.1 + 0.45 * (1.0 + (std::f64::consts::PI * progress).cos()))
        }
    };
    on_event(Event::Phase { name: "training".into(), total: steps as u64 });
    let mut best: Option<(f64, TensorMap)> = None;
    let mut since_best = 0;
    let mut window_loss = 0.0;
    let mut window = 0;
    let mut units = 0u64;
    for s in 0..steps {
        window_loss += step(&mut trainer, schedule(s))?;
        window += 1;
        units += 1;
        let last = s + 1 == steps;
        if (s + 1) % lm.eval_every == 0 || last {
            let bits = measure(trainer.model())?;
            if let (Some(b), Some(_)) = (bits, &recipe.early_stopping) {
                if best.as_ref().is_none_or(|(best_bits, _)| b < *best_bits) {
                    best = Some((b, snapshot(trainer.model())?));
                    since_best = 0;
                } else {
                    since_best += 1;
                }
            }
            on_event(Event::Progress {
                done: s as u64 + 1,
                loss: window_loss / window as f64,
                validation: bits,
            });
            window_loss = 0.0;
            window = 0;
            if let Some(stop) = &recipe.early_stopping
                && since_best >= stop.patience
            {
                on_event(Event::Note(format!("early stop after step {}", s + 1)));
                break;
            }
        } else {
            on_event(Event::Progress {
                done: s as u64 + 1,
                loss: window_loss / window as f64,
                validation: None,
            });
        }
    }
    if let Some((bits, tensors)) = &best {
        on_event(Event::Note(format!("kept the best weights (validation {bits:.4} bits/char)")));
        trainer.set_tensors(tensors)?;
    }

    if let Some(prune) = &recipe.prune {
        let count = artifact::nonzero_params(&trainer.model().tensors())?;
        if count > budget {
            trainer.prune(budget)?;
            on_event(Event::Note(format!("pruned {count} → {budget} non-zero parameters")));
            let extra = prune.epochs * lm.eval_every;
            if extra > 0 {
                on_event(Event::Phase {
                    name: "fine-tuning after pruning".into(),
                    total: extra as u64,
                });
                for s in 0..extra {
                    let loss = step(&mut trainer, lm.lr / 10.0)?;
                    units += 1;
                    on_event(Event::Progress { done: s as u64 + 1, loss, validation: None });
                }
            }
        }
    }
    let tensors = snapshot(trainer.model())?;
    let validation = measure(trainer.model())?;
    Ok(Trained {
        report: Report {
            metric: "bits/char",
            validation,
            units,
            rows: train.len(),
            dropped: 0,
            params: artifact::nonzero_params(&tensors)?,
        },
        tensors,
    })
}

/// The char LM with its optimizer state, trained one batch at a time (autograd through the
/// model, then the fused AdamW).
pub struct LmTrainer {
    names: Vec<String>,
    vars: Vec<Var>,
    model: CharLm,
    optimizer: AdamW,
}

impl LmTrainer {
    /// Starts training from `tensors` (copied; named as [`crate::model::charlm::expected_tensors`]
    /// lists them, any allowed dtype).
    pub fn new(
        shape: CharLmShape,
        tensors: &TensorMap,
        config: AdamWConfig,
    ) -> Result<LmTrainer, TrainError> {
        let names: Vec<String> = tensors.keys().cloned().collect();
        let vars: Vec<Var> = tensors
            .values()
            .map(|t| Var::from_tensor(&t.to_dtype(candle_core::DType::F32)?.contiguous()?.copy()?))
            .collect::<Result<_, _>>()?;
        let map: TensorMap =
            names.iter().cloned().zip(vars.iter().map(|v| v.as_tensor().clone())).collect();
        let model = CharLm::from_tensors(shape, &map)?;
        let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
        Ok(LmTrainer { names, vars, model, optimizer: AdamW::new(config, &sizes) })
    }

    /// The model, sharing the trained tensors.
    pub fn model(&self) -> &CharLm {
        &self.model
    }

    /// One step on windows `x` `[B, T]` with next characters `y` `[B, T]` (U32); returns the
    /// mean cross-entropy in nats before the update.
    pub fn step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        dropout: Option<Dropout<'_>>,
    ) -> Result<f64, TrainError> {
        let vocab = self.model.shape().vocab;
        let logits = self.model.forward(x, dropout)?;
        let rows = logits.elem_count() / vocab;
        let loss =
            candle_nn::loss::cross_entropy(&logits.reshape((rows, vocab))?, &y.flatten_all()?)?;
        let grads = loss.backward()?;
        let grad_list: Vec<Tensor> = self
            .vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => g.contiguous(),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<Result<_, _>>()?;
        let params: Vec<&Tensor> = self.vars.iter().map(|v| v.as_tensor()).collect();
        self.optimizer.step(&params, &grad_list.iter().collect::<Vec<_>>())?;
        Ok(f64::from(loss.to_vec0::<f32>()?))
    }

    /// Overwrites the weights with `tensors` (same names and shapes).
    fn set_tensors(&self, tensors: &TensorMap) -> Result<(), TrainError> {
        for (var, name) in self.vars.iter().zip(&self.names) {
            var.set(&tensors[name])?;
        }
        Ok(())
    }

    /// Zeroes all but the `budget` largest-magnitude values and holds them at zero from now on.
    fn prune(&mut self, budget: u64) -> Result<(), TrainError> {
        let values: Vec<Vec<f32>> =
            self.vars.iter().map(|v| values_f32(v.as_tensor())).collect::<Result<_, _>>()?;
        let masks = prune_masks(&values, budget);
        for (i, (var, mask)) in self.vars.iter().zip(&masks).enumerate() {
            let kept: Vec<f32> =
                values[i].iter().zip(mask).map(|(v, k)| if *k { *v } else { 0.0 }).collect();
            var.set(&Tensor::from_vec(kept, var.dims(), &Device::Cpu)?)?;
            self.optimizer.set_mask(i, mask.clone())?;
        }
        Ok(())
    }
}

/// A detached copy of the model's tensors.
fn snapshot(model: &CharLm) -> Result<TensorMap, TrainError> {
    model.tensors().into_iter().map(|(n, t)| Ok((n, t.detach().copy()?))).collect()
}
