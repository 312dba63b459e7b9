//! The training loop: runs a [`Recipe`] on a task's public training data and returns the
//! artifact's tensors and a report.
//!
//! A run is seeded by `recipe.seed` and deterministic for a given seed and thread count: every
//! random choice comes from a [`crate::rng`] stream, and every tensor operation runs in a fixed
//! order. Progress is reported through a callback so the caller decides how to show it.

mod classify;
mod kernels;
mod lm;
mod lm_pass;
pub mod mlp;

use consensus::task::{TaskKind, TaskSpec};
use rand::Rng;

use crate::artifact::{ArtifactError, TensorMap};
use crate::data::{DataError, Table};
use crate::model::ModelError;
use crate::optim::OptimError;
use crate::recipe::Recipe;
use crate::rng::TrainRng;

pub use classify::{filter_noisy_rows, train_classifier};
pub use lm::{Dropout, LmTrainer, train_char_lm};

/// What a run reports while it trains.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new phase begins, of `total` units (epochs or steps).
    Phase {
        /// What the phase does.
        name: String,
        /// How many units it has.
        total: u64,
    },
    /// A unit of the current phase finished.
    Progress {
        /// Units done so far in this phase.
        done: u64,
        /// Mean training loss of the unit (nats).
        loss: f64,
        /// The validation metric, when it was measured.
        validation: Option<f64>,
    },
    /// A one-line note (rows dropped by the filter, early stop, pruning).
    Note(String),
}

/// The public training data of a task.
#[derive(Clone, Debug)]
pub enum TrainData {
    /// Raw (not yet standardized) rows.
    Table(Table),
    /// The training text.
    Text(String),
}

impl TrainData {
    /// Parses a task's training file (`file` names it in errors): a CSV table for a
    /// classification task, UTF-8 text for a char LM.
    pub fn parse(spec: &TaskSpec, bytes: &[u8], file: &str) -> Result<TrainData, DataError> {
        match spec.kind {
            TaskKind::Classification { features, classes } => {
                let shape = crate::data::CsvShape { features: features as usize, classes };
                Ok(TrainData::Table(crate::data::parse_csv(bytes, file, Some(shape))?))
            }
            TaskKind::CharLm { .. } => match std::str::from_utf8(bytes) {
                Ok(text) => Ok(TrainData::Text(text.to_owned())),
                Err(e) => {
                    Err(DataError::NotUtf8 { file: file.to_owned(), offset: e.valid_up_to() })
                }
            },
        }
    }
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The artifact's tensors (F32).
    pub tensors: TensorMap,
    /// What happened.
    pub report: Report,
}

/// Figures of a finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The validation metric's name: `accuracy` or `bits/char`.
    pub metric: &'static str,
    /// The metric on the local validation split (none without one).
    pub validation: Option<f64>,
    /// Epochs (classification) or steps (char LM) trained, fine-tuning after pruning included.
    pub units: u64,
    /// Training rows (or characters) used.
    pub rows: usize,
    /// Rows dropped by label-noise filtering.
    pub dropped: usize,
    /// Non-zero parameters of the result.
    pub params: u64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data does not fit the task.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A model could not be built.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The base artifact could not be read.
    #[error("base model: {0}")]
    Artifact(#[from] ArtifactError),
    /// The optimizer failed.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// A training step failed.
    #[error(transparent)]
    Step(#[from] mlp::StepError),
    /// The recipe does not fit the task or the data.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Runs `recipe` on a task's training data.
pub fn train(
    spec: &TaskSpec,
    data: TrainData,
    recipe: &Recipe,
    on_event: &mut dyn FnMut(Event),
) -> Result<Trained, TrainError> {
    recipe.validate().map_err(|e| TrainError::Invalid(e.to_string()))?;
    match (&spec.kind, data) {
        (TaskKind::Classification { .. }, TrainData::Table(mut table)) => {
            add_private_rows(spec, &mut table, &recipe.data.extra, on_event)?;
            train_classifier(spec, table, recipe, on_event)
        }
        (TaskKind::CharLm { .. }, TrainData::Text(_)) if !recipe.data.extra.is_empty() => {
            Err(TrainError::Invalid("data.extra applies to classification tasks only".into()))
        }
        (TaskKind::CharLm { .. }, TrainData::Text(text)) => {
            train_char_lm(spec, &text, recipe, on_event)
        }
        _ => Err(TrainError::Invalid("the data does not match the task kind".into())),
    }
}

/// Raises glibc malloc's trim and mmap thresholds to about 30 MiB, once per process.
///
/// A training step allocates and frees tens of MiB of activations (candle's matmul allocates its
/// every output). With glibc's defaults the heap top above a few MiB goes back to the system on
/// every step and is page-faulted in again on the next, which measured a quarter of a char LM
/// step. glibc raises both thresholds to the size of any mapped block that is freed, so freeing
/// one large block keeps the heap for later steps. With other allocators this costs one
/// allocation and changes nothing.
pub(crate) fn keep_heap_between_steps() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::hint::black_box(vec![0u8; 30 << 20])));
}

/// Appends the rows of the trainer's private files (`data.extra`) to the public `table`: each is
/// read locally (at most [`crate::data::DATA_BYTES_MAX`] bytes) and parsed against the task's
/// shape (a header, the task's feature count, labels in `0..classes`), so a file that does not
/// fit the task is refused with its line and column. Nothing is sent anywhere.
pub fn add_private_rows(
    spec: &TaskSpec,
    table: &mut Table,
    extra: &[std::path::PathBuf],
    on_event: &mut dyn FnMut(Event),
) -> Result<(), TrainError> {
    let TaskKind::Classification { features, classes } = spec.kind else {
        return Err(TrainError::Invalid("data.extra applies to classification tasks only".into()));
    };
    let shape = crate::data::CsvShape { features: features as usize, classes };
    for path in extra {
        let file = path.display().to_string();
        let bytes = crate::data::read_bounded(path)?;
        let private = crate::data::parse_csv(&bytes, &file, Some(shape))?;
        if table.rows() + private.rows() > crate::data::ROWS_MAX {
            return Err(TrainError::Invalid(format!(
                "with {file} the training data would exceed {} rows",
                crate::data::ROWS_MAX
            )));
        }
        on_event(Event::Note(format!(
            "added {} private rows from {file} to the {} public ones",
            private.rows(),
            table.rows()
        )));
        table.values.extend_from_slice(&private.values);
        table.labels.extend_from_slice(&private.labels);
    }
    Ok(())
}

/// An inverted-dropout mask of `n` values: 0 with probability `p`, else `1 / (1 − p)`.
pub fn dropout_mask(rng: &mut TrainRng, n: usize, p: f32) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    (0..n).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect()
}

/// Masks for magnitude pruning: keeps the `budget` values of largest magnitude over all tensors
/// (ties broken by tensor order, then position) and returns, per tensor in `tensors` order, which
/// values stay.
pub fn prune_masks(tensors: &[Vec<f32>], budget: u64) -> Vec<Vec<bool>> {
    let mut order: Vec<(f32, usize, usize)> = tensors
        .iter()
        .enumerate()
        .flat_map(|(t, values)| values.iter().enumerate().map(move |(i, v)| (v.abs(), t, i)))
        .filter(|(a, _, _)| *a != 0.0)
        .collect();
    let mut masks: Vec<Vec<bool>> = tensors.iter().map(|v| vec![false; v.len()]).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for &(_, t, i) in order.iter().take(usize::try_from(budget).unwrap_or(usize::MAX)) {
        masks[t][i] = true;
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_largest_magnitudes() {
        let masks = prune_masks(&[vec![0.1, -3.0, 0.0], vec![2.0, -0.5]], 2);
        assert_eq!(masks, vec![vec![false, true, false], vec![true, false]]);
        let all = prune_masks(&[vec![1.0, 0.0]], 10);
        assert_eq!(all, vec![vec![true, false]], "zeros stay zero");
    }
}
