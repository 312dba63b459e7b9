//! Classification runs: data fraction, label-noise filtering, local validation split,
//! augmentation, early stopping, fine-tuning and pruning around the MLP step.
//!
//! Order of a run: standardize the rows with the spec's statistics; shuffle them with the seed
//! and keep `data.fraction`; drop the rows the cross-validated filter flags; hold back
//! `data.validation_fraction` as the local validation split; train (from the base artifact when
//! one is given) for `train.epochs`, keeping the best epoch's weights when early stopping is on;
//! prune to the budget and fine-tune with the pruned values held at zero.

use candle_core::{Device, Tensor};
use consensus::task::{Preprocessing, TaskKind, TaskSpec};

use super::mlp::MlpTrainer;
use super::{Event, Report, TrainError, Trained, prune_masks};
use crate::artifact::{self, values_f32};
use crate::data::{self, CsvShape, Table};
use crate::eval;
use crate::model::mlp::Mlp;
use crate::optim::AdamWConfig;
use crate::recipe::{Augment, Filter, Recipe};
use crate::rng::{self, TrainRng};

/// Fewest local validation rows early stopping should pick its epoch on: below it one row is
/// worth more than a point of accuracy, and the epoch it keeps is mostly noise (a 26-row split
/// stopped the README's small recipe at 0.913 on a 342-row data set).
pub const VALIDATION_ROWS_MIN: usize = 100;

/// The local validation split's size for `fraction` of `rows`, and a warning to show. With early
/// stopping, a split below [`VALIDATION_ROWS_MIN`] is raised to that many rows, but never past a
/// quarter of the rows; a split still below it gets a warning.
pub fn validation_len(fraction: f64, rows: usize, early_stopping: bool) -> (usize, Option<String>) {
    let asked = (fraction * rows as f64).round() as usize;
    if !early_stopping || asked == 0 || asked >= VALIDATION_ROWS_MIN {
        return (asked, None);
    }
    let len = asked.max(VALIDATION_ROWS_MIN.min(rows / 4));
    let raised = if len > asked {
        format!(
            "the validation split was raised from {asked} rows (data.validation_fraction = \
             {fraction} of {rows}) to {len}, so early stopping picks its epoch on more than noise"
        )
    } else {
        String::new()
    };
    let small = (len < VALIDATION_ROWS_MIN).then(|| {
        format!(
            "warning: early stopping watches only {len} validation rows (one row is {:.1} points \
             of accuracy); with fewer than {VALIDATION_ROWS_MIN} the epoch it keeps is mostly \
             noise: use more data or drop [early_stopping]",
            100.0 / len as f64
        )
    });
    let note = match (raised.is_empty(), small) {
        (true, small) => small,
        (false, None) => Some(raised),
        (false, Some(small)) => Some(format!("{raised}; {small}")),
    };
    (len, note)
}

/// Trains an MLP on a raw (not yet standardized) training table.
pub fn train_classifier(
    spec: &TaskSpec,
    raw: Table,
    recipe: &Recipe,
    on_event: &mut dyn FnMut(Event),
) -> Result<Trained, TrainError> {
    let TaskKind::Classification { features, classes } = spec.kind else {
        return Err(TrainError::Invalid("not a classification task".into()));
    };
    let Preprocessing::Standardize { mean, std } = &spec.preprocessing else {
        return Err(TrainError::Invalid("classification needs standardization".into()));
    };
    let shape = CsvShape { features: features as usize, classes };
    if raw.features != shape.features {
        return Err(TrainError::Invalid(format!(
            "the data has {} features; the task has {features}",
            raw.features
        )));
    }
    if let Some(bad) = raw.labels.iter().find(|&&l| l >= classes) {
        return Err(TrainError::Invalid(format!("label {bad} is out of range 0..{classes}")));
    }
    let mut table = raw.clone();
    data::standardize(&mut table, mean, std)?;

    let seed = recipe.seed;
    let mut order = rng::permutation(&mut rng::stream(seed, "data"), table.rows());
    order.truncate(((recipe.data.fraction * table.rows() as f64).round() as usize).max(1));
    let mut dropped = 0;
    if let Some(filter) = &recipe.filter {
        on_event(Event::Phase { name: "filtering label noise".into(), total: filter.folds as u64 });
        let kept = filter_noisy_rows(&table, &order, classes, filter, recipe, on_event)?;
        dropped = order.len() - kept.len();
        on_event(Event::Note(format!("filter dropped {dropped} of {} rows", order.len())));
        order = kept;
    }
    let (val_len, note) = validation_len(
        recipe.data.validation_fraction,
        order.len(),
        recipe.early_stopping.is_some(),
    );
    if let Some(note) = note {
        on_event(Event::Note(note));
    }
    let (val_rows, train_rows) = order.split_at(val_len);
    if train_rows.is_empty() {
        return Err(TrainError::Invalid("no training rows left".into()));
    }
    let validation = (!val_rows.is_empty()).then(|| table.select(val_rows));

    let mlp = match &recipe.base {
        Some(base) => {
            let (_, tensors) = artifact::load(&base.path, spec.limits.max_artifact_bytes)?;
            let mlp = Mlp::from_tensors(&tensors)?;
            if mlp.features() != features as usize || mlp.classes() != classes as usize {
                return Err(TrainError::Invalid(format!(
                    "base model has sizes {:?}; the task needs {features} features and {classes} classes",
                    mlp.sizes()
                )));
            }
            on_event(Event::Note(format!("fine-tuning from {}", base.path.display())));
            mlp
        }
        None => {
            let mut sizes = vec![features as usize];
            sizes.extend(&recipe.model.hidden);
            sizes.push(classes as usize);
            Mlp::init(&sizes, &mut rng::stream(seed, "init"))?
        }
    };
    let budget = recipe
        .prune
        .as_ref()
        .map_or(spec.limits.max_params, |p| p.params.min(spec.limits.max_params));
    if recipe.prune.is_none() && mlp.size() as u64 > budget {
        return Err(TrainError::Invalid(format!(
            "the model has {} parameters; the task allows {budget}: use smaller hidden sizes or a [prune] section",
            mlp.size()
        )));
    }

    let config = AdamWConfig {
        lr: recipe.train.lr,
        weight_decay: recipe.train.weight_decay,
        ..AdamWConfig::default()
    };
    let mut trainer = MlpTrainer::new(&mlp, config, recipe.model.dropout)?;
    let mut loop_rng = rng::stream(seed, "train");
    let sampler = Sampler {
        table: &table,
        raw: &raw,
        std,
        mean,
        augment: recipe.augment.as_ref(),
        range: feature_range(&table),
    };
    let epochs = recipe.train.epochs;
    on_event(Event::Phase { name: "training".into(), total: epochs as u64 });
    let mut best: Option<(f64, f64, Mlp)> = None;
    let mut since_best = 0;
    let mut units = 0u64;
    for epoch in 1..=epochs {
        let loss =
            run_epoch(&mut trainer, &sampler, train_rows, recipe.train.batch_size, &mut loop_rng)?;
        units += 1;
        let metric = match &validation {
            Some(v) => {
                let model = trainer.model()?;
                let acc = eval::accuracy(&model, v)?;
                if recipe.early_stopping.is_some() {
                    let ce = eval::cross_entropy(&model, v)?;
                    let better =
                        best.as_ref().is_none_or(|(a, c, _)| acc > *a || (acc == *a && ce < *c));
                    if better {
                        best = Some((acc, ce, model));
                        since_best = 0;
                    } else {
                        since_best += 1;
                    }
                }
                Some(acc)
            }
            None => None,
        };
        on_event(Event::Progress { done: epoch as u64, loss, validation: metric });
        if let Some(stop) = &recipe.early_stopping
            && since_best >= stop.patience
        {
            on_event(Event::Note(format!("early stop after epoch {epoch}")));
            break;
        }
    }
    let mut model = match best {
        Some((acc, _, model)) => {
            on_event(Event::Note(format!(
                "kept the best epoch's weights (validation accuracy {acc:.4})"
            )));
            model
        }
        None => trainer.model()?,
    };

    let count = artifact::nonzero_params(&model.tensors())?;
    if let Some(prune) = &recipe.prune
        && count > budget
    {
        let tensors = model.tensors();
        let values: Vec<Vec<f32>> = tensors.values().map(values_f32).collect::<Result<_, _>>()?;
        let masks = prune_masks(&values, budget);
        // Parameters in the trainer's order: weight then bias of each layer; the map is sorted
        // by name, so look each up by name.
        let pruned = apply_masks(&model, &tensors, &masks)?;
        on_event(Event::Note(format!("pruned {count} → {budget} non-zero parameters")));
        model = pruned;
        if prune.epochs > 0 {
            let mut trainer = MlpTrainer::new(&model, config, recipe.model.dropout)?;
            let names: Vec<&String> = tensors.keys().collect();
            for (i, layer_masks) in trainer_masks(&model, &names, &masks).into_iter().enumerate() {
                trainer.optimizer_mut().set_mask(i, layer_masks)?;
            }
            on_event(Event::Phase {
                name: "fine-tuning after pruning".into(),
                total: prune.epochs as u64,
            });
            for epoch in 1..=prune.epochs {
                let loss = run_epoch(
                    &mut trainer,
                    &sampler,
                    train_rows,
                    recipe.train.batch_size,
                    &mut loop_rng,
                )?;
                units += 1;
                on_event(Event::Progress { done: epoch as u64, loss, validation: None });
            }
            model = trainer.model()?;
        }
    }
    let tensors = model.tensors();
    let validation = match &validation {
        Some(v) => Some(eval::accuracy(&model, v)?),
        None => None,
    };
    Ok(Trained {
        report: Report {
            metric: "accuracy",
            validation,
            units,
            rows: train_rows.len(),
            dropped,
            params: artifact::nonzero_params(&tensors)?,
        },
        tensors,
    })
}

/// Zeroes the values the masks drop (masks in the name order of `tensors`).
fn apply_masks(
    model: &Mlp,
    tensors: &artifact::TensorMap,
    masks: &[Vec<bool>],
) -> Result<Mlp, TrainError> {
    let mut out = artifact::TensorMap::new();
    for ((name, t), mask) in tensors.iter().zip(masks) {
        let values: Vec<f32> =
            values_f32(t)?.iter().zip(mask).map(|(v, k)| if *k { *v } else { 0.0 }).collect();
        out.insert(name.clone(), Tensor::from_vec(values, t.dims(), &Device::Cpu)?);
    }
    debug_assert_eq!(out.len(), model.layers().len() * 2);
    Ok(Mlp::from_tensors(&out)?)
}

/// The masks in the trainer's parameter order (weight, bias per layer).
fn trainer_masks(model: &Mlp, names: &[&String], masks: &[Vec<bool>]) -> Vec<Vec<bool>> {
    let mut out = Vec::with_capacity(model.layers().len() * 2);
    for i in 0..model.layers().len() {
        for name in [crate::model::mlp::weight_name(i), crate::model::mlp::bias_name(i)] {
            let k = names.iter().position(|n| **n == name).expect("every layer tensor has a mask");
            out.push(masks[k].clone());
        }
    }
    out
}

/// Builds training batches, augmented when the recipe says so.
struct Sampler<'a> {
    table: &'a Table,
    raw: &'a Table,
    mean: &'a [f32],
    std: &'a [f32],
    augment: Option<&'a Augment>,
    /// Per feature, the smallest and largest standardized value of the training table: a shift
    /// can move ink onto a pixel that is almost always blank, whose tiny std would turn it into
    /// an extreme input, so augmented values are clamped to what real rows contain.
    range: Vec<(f32, f32)>,
}

/// Per-feature (min, max) over a table's rows.
fn feature_range(table: &Table) -> Vec<(f32, f32)> {
    let mut range = vec![(f32::INFINITY, f32::NEG_INFINITY); table.features];
    for i in 0..table.rows() {
        for ((lo, hi), &v) in range.iter_mut().zip(table.row(i)) {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
    }
    range
}

impl Sampler<'_> {
    fn batch(&self, rows: &[usize], rng: &mut TrainRng) -> Result<(Tensor, Vec<u32>), TrainError> {
        let f = self.table.features;
        let mut x = Vec::with_capacity(rows.len() * f);
        match self.augment {
            None => rows.iter().for_each(|&i| x.extend_from_slice(self.table.row(i))),
            Some(a) => {
                let (w, s) = (a.width as i64, a.shift as i64);
                if !f.is_multiple_of(a.width) {
                    return Err(TrainError::Invalid(format!(
                        "augment.width {} does not divide the {f} features",
                        a.width
                    )));
                }
                let h = (f / a.width) as i64;
                for &i in rows {
                    let src = self.raw.row(i);
                    let dx = rand::Rng::random_range(rng, -s..=s);
                    let dy = rand::Rng::random_range(rng, -s..=s);
                    for k in 0..f as i64 {
                        let (r, c) = (k / w - dy, k % w - dx);
                        let raw = if (0..h).contains(&r) && (0..w).contains(&c) {
                            src[(r * w + c) as usize]
                        } else {
                            0.0
                        };
                        let k = k as usize;
                        let (lo, hi) = self.range[k];
                        let value = ((raw - self.mean[k]) / self.std[k]).clamp(lo, hi);
                        x.push(value + a.noise * rng::normal(rng));
                    }
                }
            }
        }
        let labels = rows.iter().map(|&i| self.table.labels[i]).collect();
        Ok((Tensor::from_vec(x, (rows.len(), f), &Device::Cpu)?, labels))
    }
}

/// One pass over `rows` in a fresh seeded order; returns the mean batch loss.
fn run_epoch(
    trainer: &mut MlpTrainer,
    sampler: &Sampler<'_>,
    rows: &[usize],
    batch_size: usize,
    rng: &mut TrainRng,
) -> Result<f64, TrainError> {
    let order = rng::permutation(rng, rows.len());
    let shuffled: Vec<usize> = order.iter().map(|&k| rows[k]).collect();
    let mut total = 0f64;
    let mut batches = 0;
    for chunk in shuffled.chunks(batch_size) {
        let (x, labels) = sampler.batch(chunk, rng)?;
        total += f64::from(trainer.step(&x, &labels, rng)?);
        batches += 1;
    }
    Ok(total / f64::from(batches.max(1)))
}

/// Label-noise filtering by cross-validation: `rows` (of a standardized table) are cut into
/// `filter.folds` folds; a model trained on the other folds predicts each fold, and a row is
/// dropped when the predicted class differs from its label with probability at least
/// `filter.confidence`. Returns the kept rows in their given order.
pub fn filter_noisy_rows(
    table: &Table,
    rows: &[usize],
    classes: u32,
    filter: &Filter,
    recipe: &Recipe,
    on_event: &mut dyn FnMut(Event),
) -> Result<Vec<usize>, TrainError> {
    let folds = filter.folds.min(rows.len());
    let mut sizes = vec![table.features];
    sizes.extend(&filter.hidden);
    sizes.push(classes as usize);
    let config = AdamWConfig {
        lr: recipe.train.lr,
        weight_decay: recipe.train.weight_decay,
        ..AdamWConfig::default()
    };
    let mut rng = rng::stream(recipe.seed, "filter");
    let sampler =
        Sampler { table, raw: table, mean: &[], std: &[], augment: None, range: Vec::new() };
    let mut drop = vec![false; rows.len()];
    for fold in 0..folds {
        let in_fold = |k: usize| k % folds == fold;
        let train: Vec<usize> = (0..rows.len()).filter(|&k| !in_fold(k)).map(|k| rows[k]).collect();
        let held: Vec<usize> = (0..rows.len()).filter(|&k| in_fold(k)).collect();
        let mlp = Mlp::init(&sizes, &mut rng)?;
        let mut trainer = MlpTrainer::new(&mlp, config, 0.0)?;
        let mut loss = 0.0;
        for _ in 0..filter.epochs {
            loss = run_epoch(&mut trainer, &sampler, &train, recipe.train.batch_size, &mut rng)?;
        }
        let model = trainer.model()?;
        let fold_table = table.select(&held.iter().map(|&k| rows[k]).collect::<Vec<_>>());
        let probs = eval::probabilities(&model, &fold_table)?;
        for ((&k, p), &label) in held.iter().zip(&probs).zip(&fold_table.labels) {
            let predicted =
                p.iter().enumerate().fold(0, |best, (i, &v)| if v > p[best] { i } else { best });
            if predicted != label as usize && p[predicted] >= filter.confidence {
                drop[k] = true;
            }
        }
        on_event(Event::Progress { done: fold as u64 + 1, loss, validation: None });
    }
    Ok(rows.iter().zip(&drop).filter(|(_, d)| !**d).map(|(&r, _)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_gets_a_validation_split_large_enough_or_a_warning() {
        assert_eq!(validation_len(0.1, 2_000, true), (200, None), "large enough: as asked");
        assert_eq!(validation_len(0.1, 262, false), (26, None), "no early stopping: as asked");
        assert_eq!(validation_len(0.0, 262, true), (0, None));
        let (len, note) = validation_len(0.1, 262, true);
        assert_eq!(len, 65, "a quarter of the rows at most");
        let note = note.unwrap();
        assert!(note.contains("raised from 26 rows") && note.contains("only 65"), "{note}");
        let (len, note) = validation_len(0.1, 600, true);
        assert_eq!(len, 100);
        assert!(!note.unwrap().contains("warning"), "raised to the minimum: no warning");
    }
}
