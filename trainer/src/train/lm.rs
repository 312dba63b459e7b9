//! Char LM runs: the hand-written training pass ([`super::lm_pass`]), the fused AdamW, a cosine
//! learning-rate schedule, early stopping and pruning.
//!
//! The text is the first `data.fraction` of the training file; the last
//! `data.validation_fraction` of that (at most [`VALIDATION_CHARS_MAX`] characters) is the local
//! validation split. Each step draws `lm.batch_size` windows of `context + 1` characters at
//! seeded random offsets of the rest. The learning rate warms up linearly over the first 5% of
//! the steps, then follows a cosine from `lm.lr` down to `lm.lr / 10`.

use candle_core::{Device, Tensor, Var};
use consensus::task::TaskSpec;
use rand::Rng;

use super::lm_pass::{self, Slots, Windows};
use super::{Event, Report, TrainError, Trained, prune_masks};
use crate::artifact::{self, TensorMap, values_f32};
use crate::data::Vocabulary;
use crate::eval;
use crate::model::charlm::{CharLm, CharLmShape};
use crate::optim::{AdamW, AdamWConfig};
use crate::recipe::Recipe;
use crate::rng::{self, TrainRng};

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
        trainer.step(
            &input,
            &target,
            c,
            Some(Dropout { p: recipe.model.dropout, rng: &mut drop_rng }),
        )
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

/// Dropout during training: a probability and the random stream of its masks.
pub struct Dropout<'a> {
    /// Probability of zeroing a value, in `[0, 1)`.
    pub p: f32,
    /// Where the masks come from.
    pub rng: &'a mut TrainRng,
}

/// The char LM with its optimizer state, trained one batch at a time (the hand-written
/// forward/backward pass, then the fused AdamW).
pub struct LmTrainer {
    names: Vec<String>,
    vars: Vec<Var>,
    slots: Slots,
    model: CharLm,
    optimizer: AdamW,
}

impl LmTrainer {
    /// Starts training from `tensors` (copied; exactly the tensors
    /// [`crate::model::charlm::expected_tensors`] lists, any allowed dtype).
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
        // Refuses any missing, unexpected or misshapen tensor, so every slot exists.
        let model = CharLm::from_tensors(shape, &map)?;
        let slots = Slots::new(&shape, &names);
        let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
        super::keep_heap_between_steps();
        Ok(LmTrainer { names, vars, slots, model, optimizer: AdamW::new(config, &sizes) })
    }

    /// The model, sharing the trained tensors.
    pub fn model(&self) -> &CharLm {
        &self.model
    }

    /// One step on `input.len() / window` windows of `window` characters each (`input` and
    /// `target` are the windows one after the other; target position `t` is the character after
    /// input position `t`); returns the mean cross-entropy in nats before the update.
    pub fn step(
        &mut self,
        input: &[u32],
        target: &[u32],
        window: usize,
        dropout: Option<Dropout<'_>>,
    ) -> Result<f64, TrainError> {
        let (loss, grads) = self.gradients(input, target, window, dropout)?;
        let params: Vec<&Tensor> = self.vars.iter().map(|v| v.as_tensor()).collect();
        self.optimizer.step(&params, &grads.iter().collect::<Vec<_>>())?;
        Ok(loss)
    }

    /// The mean cross-entropy of a batch and the gradient of every parameter (in `names` order).
    fn gradients(
        &self,
        input: &[u32],
        target: &[u32],
        window: usize,
        dropout: Option<Dropout<'_>>,
    ) -> Result<(f64, Vec<Tensor>), TrainError> {
        let shape = self.model.shape();
        if window == 0
            || window > shape.context
            || input.is_empty()
            || !input.len().is_multiple_of(window)
            || target.len() != input.len()
        {
            return Err(TrainError::Invalid(format!(
                "{} inputs and {} targets do not make windows of {window} (context {})",
                input.len(),
                target.len(),
                shape.context
            )));
        }
        if let Some(&bad) = input.iter().chain(target).find(|&&i| i as usize >= shape.vocab) {
            return Err(TrainError::Invalid(format!(
                "index {bad} is outside the vocabulary of {}",
                shape.vocab
            )));
        }
        let params: Vec<Tensor> = self.vars.iter().map(|v| v.as_tensor().clone()).collect();
        let batch = Windows { input, target, t: window };
        Ok(lm_pass::gradients(&shape, &self.slots, &params, &batch, dropout)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::charlm::{self, LN_EPS};
    use crate::model::ops;

    const SHAPE: CharLmShape =
        CharLmShape { vocab: 7, context: 5, d_model: 8, layers: 2, heads: 2 };

    /// Random values in every tensor (LayerNorm weights around 1), so no gradient is trivially
    /// zero or one.
    fn random_tensors(seed: u64) -> TensorMap {
        let mut r = rng::stream(seed, "test");
        charlm::expected_tensors(&SHAPE)
            .into_iter()
            .map(|(name, dims)| {
                let n = dims.iter().product();
                let mut values = rng::uniform_vec(&mut r, n, 0.5);
                if name.contains("ln") && name.ends_with("weight") {
                    values.iter_mut().for_each(|v| *v += 1.0);
                }
                (name, Tensor::from_vec(values, dims, &Device::Cpu).unwrap())
            })
            .collect()
    }

    /// The same training forward pass built from candle operations, for autograd: dropout masks
    /// drawn in the same order (embedding, then each block's attention and MLP branches).
    fn reference_loss(
        tensors: &TensorMap,
        input: &[u32],
        target: &[u32],
        t: usize,
        mut dropout: Option<Dropout<'_>>,
    ) -> Tensor {
        let (d, h, dh) = (SHAPE.d_model, SHAPE.heads, SHAPE.head_dim());
        let b = input.len() / t;
        let mut drop = |x: Tensor| match dropout.as_mut() {
            Some(Dropout { p, rng }) => {
                let mask = crate::train::dropout_mask(rng, x.elem_count(), *p);
                (x * Tensor::from_vec(mask, (b * t, d), &Device::Cpu).unwrap()).unwrap()
            }
            None => x,
        };
        let get = |name: &str| tensors[name].clone();
        let dense = |x: &Tensor, p: &str| {
            x.matmul(&get(&format!("{p}.weight")).t().unwrap())
                .unwrap()
                .broadcast_add(&get(&format!("{p}.bias")))
                .unwrap()
        };
        let norm = |x: &Tensor, p: &str| {
            let (w, bias) = (get(&format!("{p}.weight")), get(&format!("{p}.bias")));
            ops::layer_norm(x, &w, &bias, LN_EPS as f32).unwrap()
        };
        let ids = Tensor::new(input, &Device::Cpu).unwrap();
        let tok = get("tok_emb.weight").index_select(&ids, 0).unwrap().reshape((b, t, d)).unwrap();
        let pos = get("pos_emb.weight").narrow(0, 0, t).unwrap();
        let mut hidden = drop(tok.broadcast_add(&pos).unwrap().reshape((b * t, d)).unwrap());
        for i in 0..SHAPE.layers {
            let p = format!("blocks.{i}");
            let qkv = dense(&norm(&hidden, &format!("{p}.ln1")), &format!("{p}.attn.qkv"));
            let qkv = qkv.reshape((b, t, 3 * d)).unwrap();
            let part = |j: usize| {
                let x = qkv.narrow(2, j * d, d).unwrap().reshape((b, t, h, dh)).unwrap();
                x.transpose(1, 2).unwrap().contiguous().unwrap()
            };
            let s = part(0).matmul(&part(1).t().unwrap()).unwrap();
            let attn = ops::causal_softmax(&s, 1.0 / (dh as f32).sqrt()).unwrap();
            let y = attn.matmul(&part(2)).unwrap().transpose(1, 2).unwrap();
            let y = y.contiguous().unwrap().reshape((b * t, d)).unwrap();
            hidden = (hidden + drop(dense(&y, &format!("{p}.attn.proj")))).unwrap();
            let a = norm(&hidden, &format!("{p}.ln2"));
            let m = dense(
                &dense(&a, &format!("{p}.mlp.fc")).gelu_erf().unwrap(),
                &format!("{p}.mlp.proj"),
            );
            hidden = (hidden + drop(m)).unwrap();
        }
        let logits = dense(&norm(&hidden, "ln_f"), "head");
        let target = Tensor::new(target, &Device::Cpu).unwrap();
        candle_nn::loss::cross_entropy(&logits, &target).unwrap()
    }

    fn close(got: &Tensor, want: &Tensor, what: &str) {
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), want.len(), "{what}: sizes");
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 2e-5 + 1e-3 * b.abs(), "{what}: {got:?}\nvs\n{want:?}");
        }
    }

    /// The hand-written pass gives candle autograd's loss and gradients, with and without
    /// dropout, for full and shorter windows.
    #[test]
    fn gradients_match_autograd() {
        let tensors = random_tensors(5);
        let mut r = rng::stream(6, "test");
        for (t, windows, p) in [(5, 3, 0.0), (3, 2, 0.0), (5, 2, 0.3)] {
            let n = t * windows;
            let input: Vec<u32> = (0..n).map(|_| r.random_range(0..SHAPE.vocab as u32)).collect();
            let target: Vec<u32> = (0..n).map(|_| r.random_range(0..SHAPE.vocab as u32)).collect();
            let trainer = LmTrainer::new(SHAPE, &tensors, AdamWConfig::default()).unwrap();
            let (mut ours_rng, mut ref_rng) = (rng::stream(7, "drop"), rng::stream(7, "drop"));
            let (loss, grads) = trainer
                .gradients(&input, &target, t, Some(Dropout { p, rng: &mut ours_rng }))
                .unwrap();
            let vars: Vec<Var> =
                trainer.names.iter().map(|n| Var::from_tensor(&tensors[n]).unwrap()).collect();
            let map: TensorMap = trainer
                .names
                .iter()
                .cloned()
                .zip(vars.iter().map(|v| v.as_tensor().clone()))
                .collect();
            let dropout = (p > 0.0).then_some(Dropout { p, rng: &mut ref_rng });
            let want = reference_loss(&map, &input, &target, t, dropout);
            let want_loss = f64::from(want.to_vec0::<f32>().unwrap());
            assert!((loss - want_loss).abs() < 1e-5, "loss {loss} vs {want_loss}");
            if p == 0.0 {
                // The reference is the model's own forward pass.
                let x = Tensor::from_vec(input.clone(), (windows, t), &Device::Cpu).unwrap();
                let logits = trainer.model().logits(&x).unwrap().reshape((n, SHAPE.vocab)).unwrap();
                let y = Tensor::new(target.as_slice(), &Device::Cpu).unwrap();
                let model_loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
                assert!(
                    (model_loss.to_vec0::<f32>().unwrap() - want.to_vec0::<f32>().unwrap()).abs()
                        < 1e-6
                );
            }
            let store = want.backward().unwrap();
            for ((name, var), g) in trainer.names.iter().zip(&vars).zip(&grads) {
                let reference = store
                    .get(var.as_tensor())
                    .cloned()
                    .unwrap_or_else(|| var.as_tensor().zeros_like().unwrap());
                close(g, &reference, &format!("{name} (T {t}, p {p})"));
            }
        }
    }

    /// A step with dropout is a function of the seed: the same stream gives the same loss and
    /// weights, another stream another loss.
    #[test]
    fn steps_are_deterministic_for_a_seed() {
        let tensors = random_tensors(8);
        let input: Vec<u32> = (0..10).map(|i| i % 7).collect();
        let target: Vec<u32> = (0..10).map(|i| (i * 3 + 1) % 7).collect();
        let run = |seed: u64| {
            let mut trainer = LmTrainer::new(SHAPE, &tensors, AdamWConfig::default()).unwrap();
            let mut r = rng::stream(seed, "drop");
            let losses: Vec<f64> = (0..3)
                .map(|_| {
                    let dropout = Some(Dropout { p: 0.2, rng: &mut r });
                    trainer.step(&input, &target, 5, dropout).unwrap()
                })
                .collect();
            let weights = trainer.model().tensors()["blocks.1.mlp.fc.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (losses, weights)
        };
        let (a, b, c) = (run(1), run(1), run(2));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        let trainer = LmTrainer::new(SHAPE, &tensors, AdamWConfig::default()).unwrap();
        assert!(trainer.gradients(&input, &target, 6, None).is_err(), "window above the context");
        assert!(trainer.gradients(&input, &target, 3, None).is_err(), "windows do not tile");
        let bad: Vec<u32> = vec![7; 10];
        assert!(trainer.gradients(&bad, &target, 5, None).is_err(), "index outside the vocabulary");
    }
}
