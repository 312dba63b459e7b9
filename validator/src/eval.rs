//! Held-out evaluation with the trainer's model code, in a fixed order.
//!
//! The data are read and preprocessed with [`trainer::data`] exactly as the task spec says, and
//! the forward passes are [`trainer::model::mlp`]'s and [`trainer::model::charlm`]'s: this crate
//! defines only the order of evaluation and the arithmetic of the score.
//!
//! - **Classification**: [`trainer::eval::correct`] runs the rows in file order in fixed batches;
//!   a row is correct when the first of its largest logits is its label.
//!   `score_ppm = ⌊correct × 10⁶ / rows⌋`, `value` the accuracy.
//! - **Char LM**: [`trainer::eval::bits_per_char`] predicts every held-out character but the
//!   first exactly once, from non-overlapping context windows in fixed batches, with the loss in
//!   `f64` summed in text order. `score_ppm = ⌊10⁶ × (1 − bits_per_char / log2(vocab))⌋` clamped
//!   to `[0, 10⁶]`, `value` the bits per character.
//!
//! Batch sizes are constants, not functions of the thread count, and every reduction runs in a
//! fixed order, so a score has the same bits with any `RAYON_NUM_THREADS`.

use candle_core::{Device, Tensor};
use consensus::task::{TaskKind, TaskSpec};
use consensus::types::ScorePpm;
use trainer::artifact::TensorMap;
use trainer::data::{self, CsvShape, DataError, Table, Vocabulary};
use trainer::model::ModelError;
use trainer::model::charlm::{self, CharLm, CharLmShape};
use trainer::model::mlp::Mlp;

use crate::artifact::Weights;

/// What a score measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Fraction of held-out rows classified correctly, in `[0, 1]`.
    Accuracy,
    /// Cross-entropy of the held-out text in bits per character (lower is better).
    BitsPerChar,
}

impl Metric {
    /// The metric of a task kind.
    pub fn of(kind: &TaskKind) -> Metric {
        match kind {
            TaskKind::Classification { .. } => Metric::Accuracy,
            TaskKind::CharLm { .. } => Metric::BitsPerChar,
        }
    }

    /// The metric's name, as `node score` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::BitsPerChar => "bits_per_char",
        }
    }
}

/// The result of evaluating a model (or the baseline) on held-out data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// What `value` measures.
    pub metric: Metric,
    /// The raw metric: accuracy in `[0, 1]`, or bits per character.
    pub value: f64,
    /// The metric as the ledger's score.
    pub score_ppm: ScorePpm,
    /// Number of predictions scored (rows, or predicted characters).
    pub samples: u64,
}

/// Why data could not be prepared or a model could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data file is malformed or does not fit the task.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The held-out file holds another number of examples than the task's spec says.
    #[error("{file}: {found} examples, the task's spec says {expected}")]
    HeldoutSize {
        /// The file.
        file: String,
        /// `dataset.heldout_examples` of the spec.
        expected: u64,
        /// What the file holds.
        found: u64,
    },
    /// The data holds nothing to score (no rows, or fewer than two characters).
    #[error("{file}: nothing to score")]
    Empty {
        /// The file.
        file: String,
    },
    /// The tensors do not build the task's model.
    #[error("building the model: {0}")]
    Model(#[from] ModelError),
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
    /// An artifact's file could not be read (the file system's fault, not the artifact's).
    #[error("reading the artifact: {0}")]
    Read(std::io::Error),
}

/// Data ready to score with: a standardized table, or vocabulary indices.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalData {
    /// Classification rows, preprocessed with the task's standardization.
    Table(Table),
    /// Text as vocabulary indices (0 for unknown characters).
    Text {
        /// The indices in text order.
        tokens: Vec<u32>,
        /// The vocabulary size, including index 0.
        vocab: usize,
    },
}

/// Parses a task's data file (CSV for classification, UTF-8 text for a char LM) and applies the
/// task's preprocessing. `file` names the source in errors.
pub fn prepare(spec: &TaskSpec, bytes: &[u8], file: &str) -> Result<EvalData, EvalError> {
    let empty = || EvalError::Empty { file: file.to_owned() };
    match spec.kind {
        TaskKind::Classification { features, classes } => {
            let shape = CsvShape { features: features as usize, classes };
            let mut table = data::parse_csv(bytes, file, Some(shape))?;
            data::preprocess_table(&mut table, &spec.preprocessing)?;
            if table.rows() == 0 {
                return Err(empty());
            }
            Ok(EvalData::Table(table))
        }
        TaskKind::CharLm { .. } => {
            let text = std::str::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
                file: file.to_owned(),
                offset: e.valid_up_to(),
            })?;
            let vocabulary = Vocabulary::from_preprocessing(&spec.preprocessing)?;
            let tokens = vocabulary.encode(text);
            if tokens.len() < 2 {
                return Err(empty());
            }
            Ok(EvalData::Text { tokens, vocab: vocabulary.size() })
        }
    }
}

/// [`prepare`] for the held-out file, which must hold exactly the spec's
/// `dataset.heldout_examples` (rows, or characters for text): a creator cannot claim a larger
/// test set than it gave validators.
pub fn prepare_heldout(spec: &TaskSpec, bytes: &[u8], file: &str) -> Result<EvalData, EvalError> {
    let data = prepare(spec, bytes, file)?;
    let found = data.examples();
    if found != spec.dataset.heldout_examples {
        return Err(EvalError::HeldoutSize {
            file: file.to_owned(),
            expected: spec.dataset.heldout_examples,
            found,
        });
    }
    Ok(data)
}

impl EvalData {
    /// How many examples the data holds: rows, or characters of text.
    pub fn examples(&self) -> u64 {
        match self {
            EvalData::Table(table) => table.rows() as u64,
            EvalData::Text { tokens, .. } => tokens.len() as u64,
        }
    }
}

/// The tensors of the char-LM architecture a task fixes, by name; empty for other kinds or
/// inconsistent hyperparameters (which the ledger refuses in the spec).
pub fn charlm_shapes(kind: &TaskKind) -> std::collections::BTreeMap<String, Vec<usize>> {
    CharLmShape::from_kind(kind)
        .map(|shape| charlm::expected_tensors(&shape).into_iter().collect())
        .unwrap_or_default()
}

/// Candle tensors of decoded weights, for the trainer's model constructors.
pub fn to_tensor_map(weights: &Weights) -> Result<TensorMap, candle_core::Error> {
    weights
        .iter()
        .map(|(name, t)| {
            Ok((name.clone(), Tensor::from_slice(&t.values, t.shape.as_slice(), &Device::Cpu)?))
        })
        .collect()
}

/// A model built from checked weights, ready to evaluate.
pub enum Model {
    /// An MLP classifier.
    Mlp(Mlp),
    /// A character LM.
    CharLm(CharLm),
}

impl Model {
    /// Builds the task's model from weights with the trainer's constructors.
    pub fn build(kind: &TaskKind, weights: &Weights) -> Result<Model, EvalError> {
        let tensors = to_tensor_map(weights)?;
        Ok(match kind {
            TaskKind::Classification { .. } => Model::Mlp(Mlp::from_tensors(&tensors)?),
            TaskKind::CharLm { .. } => {
                Model::CharLm(CharLm::from_tensors(CharLmShape::from_kind(kind)?, &tensors)?)
            }
        })
    }

    /// Scores the model on prepared held-out data of the same task.
    pub fn evaluate(&self, data: &EvalData) -> Result<Evaluation, EvalError> {
        match (self, data) {
            (Model::Mlp(mlp), EvalData::Table(table)) => {
                let correct = trainer::eval::correct(mlp, table)? as u64;
                Ok(accuracy(correct, table.rows() as u64))
            }
            (Model::CharLm(lm), EvalData::Text { tokens, vocab }) => {
                let bpc = trainer::eval::bits_per_char(lm, tokens)?;
                Ok(char_lm_score(bpc, tokens.len() as u64 - 1, *vocab))
            }
            _ => Err(ModelError::Invalid {
                reason: "the held-out data are of another task kind than the model".into(),
            }
            .into()),
        }
    }
}

/// The evaluation of `correct` right answers out of `total`.
pub fn accuracy(correct: u64, total: u64) -> Evaluation {
    assert!(total > 0 && correct <= total, "accuracy of {correct} out of {total}");
    let ppm = u128::from(correct) * 1_000_000 / u128::from(total);
    Evaluation {
        metric: Metric::Accuracy,
        value: correct as f64 / total as f64,
        score_ppm: ScorePpm(ppm as u32),
        samples: total,
    }
}

/// The evaluation of a char LM's `bits_per_char` over `predicted` characters with a vocabulary of
/// `vocab`: `1e6 × (1 − bits_per_char / log2(vocab))`, floored and clamped to `[0, 1e6]`.
pub fn char_lm_score(bits_per_char: f64, predicted: u64, vocab: usize) -> Evaluation {
    assert!(vocab >= 2, "a vocabulary of {vocab} cannot be scored");
    let ppm = (1e6 * (1.0 - bits_per_char / (vocab as f64).log2())).floor();
    // A NaN loss (impossible for finite weights) scores 0 rather than anything else.
    let ppm = if ppm.is_nan() { 0.0 } else { ppm.clamp(0.0, 1e6) };
    Evaluation {
        metric: Metric::BitsPerChar,
        value: bits_per_char,
        score_ppm: ScorePpm(ppm as u32),
        samples: predicted,
    }
}

/// The trivial baseline's evaluation on `heldout`, computed from the public training part
/// `train` (prepared the same way):
///
/// - classification: predict the training part's majority class (the smallest label on a tie);
/// - char LM: the training text's unigram model with add-one smoothing
///   ([`trainer::eval::unigram_bits`]), scored on the same characters as a model: every
///   held-out character after the first.
pub fn baseline(train: &EvalData, heldout: &EvalData) -> Result<Evaluation, EvalError> {
    match (train, heldout) {
        (EvalData::Table(train), EvalData::Table(heldout)) => {
            let mut counts = std::collections::BTreeMap::<u32, u64>::new();
            for &label in &train.labels {
                *counts.entry(label).or_default() += 1;
            }
            // `max_by_key` keeps the last maximum, so reverse to prefer the smallest label.
            let majority = counts.iter().rev().max_by_key(|(_, n)| **n).map_or(0, |(l, _)| *l);
            let correct = heldout.labels.iter().filter(|&&l| l == majority).count() as u64;
            Ok(accuracy(correct, heldout.rows() as u64))
        }
        (EvalData::Text { tokens: train, vocab }, EvalData::Text { tokens: heldout, .. }) => {
            let bpc = trainer::eval::unigram_bits(train, &heldout[1..], *vocab);
            Ok(char_lm_score(bpc, heldout.len() as u64 - 1, *vocab))
        }
        _ => Err(ModelError::Invalid {
            reason: "the training and held-out data are of different task kinds".into(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_arithmetic() {
        assert_eq!(accuracy(2, 3).score_ppm, ScorePpm(666_666));
        assert_eq!(accuracy(3, 3).score_ppm, ScorePpm::MAX);
        // A uniform guess over 4 symbols costs 2 bits per character: score 0.
        assert_eq!(char_lm_score(2.0, 10, 4).score_ppm, ScorePpm(0));
        assert_eq!(char_lm_score(0.0, 10, 4).score_ppm, ScorePpm::MAX);
        assert_eq!(char_lm_score(7.0, 10, 4).score_ppm, ScorePpm(0));
        assert_eq!(char_lm_score(1.0, 10, 4).score_ppm, ScorePpm(500_000));
        assert_eq!(char_lm_score(f64::NAN, 10, 4).score_ppm, ScorePpm(0));
    }

    #[test]
    fn baselines_use_the_training_part() {
        let table = |labels: &[u32]| {
            EvalData::Table(Table {
                header: vec!["x".into(), "label".into()],
                features: 1,
                values: vec![0.0; labels.len()],
                labels: labels.to_vec(),
            })
        };
        let b = baseline(&table(&[2, 1, 1, 2]), &table(&[1, 2, 2, 0])).unwrap();
        assert_eq!(b.score_ppm, ScorePpm(250_000), "a tie goes to the smallest label, 1");
        let train = EvalData::Text { tokens: vec![1, 1, 1, 2], vocab: 4 };
        let held = EvalData::Text { tokens: vec![0, 1, 1], vocab: 4 };
        // p(1) = (3 + 1) / (4 + 4) = 1/2: one bit per character.
        let b = baseline(&train, &held).unwrap();
        assert!((b.value - 1.0).abs() < 1e-12);
        assert_eq!(b.score_ppm, ScorePpm(500_000));
    }
}
