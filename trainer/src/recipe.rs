//! Recipes: the data-centric choices of a training run, read from a TOML file.
//!
//! Every field has a default, so an empty file is the default recipe. Unknown fields are an
//! error (a typo must not silently fall back to a default). An example, with the defaults:
//!
//! ```toml
//! seed = 1
//!
//! [model]
//! hidden = [64]          # MLP hidden widths (classification)
//! dropout = 0.0          # after each hidden ReLU / on each residual branch of the char LM
//!
//! [data]
//! fraction = 1.0         # share of the public training rows used (a seeded sample)
//! validation_fraction = 0.1  # local validation split (for the printed metric and early stopping)
//! extra = []             # private CSV files of your own, trained on besides the public file
//!
//! [train]                # classification
//! epochs = 60
//! batch_size = 32
//! lr = 0.001
//! weight_decay = 0.01
//!
//! [lm]                   # character language model
//! steps = 1500
//! batch_size = 32
//! lr = 0.003
//! weight_decay = 0.01
//! eval_every = 100       # steps between validation checks
//!
//! # Optional sections; absent means off.
//! [early_stopping]
//! patience = 8           # evaluations without improvement before stopping; best weights kept
//!
//! [filter]               # label-noise filtering by cross-validation
//! folds = 5
//! hidden = [32]
//! epochs = 20
//! confidence = 0.5       # drop a row whose out-of-fold prediction disagrees with this confidence
//!
//! [augment]              # image-like features (row-major, `width` pixels per row)
//! width = 8
//! shift = 1              # random shift of up to this many pixels in x and y
//! noise = 0.1            # Gaussian noise (std, in standardized units)
//!
//! [prune]                # magnitude pruning to a budget of non-zero parameters
//! params = 2000
//! epochs = 5             # masked fine-tuning after pruning
//!
//! [base]                 # fine-tune from an artifact (a previous champion)
//! path = "champion.safetensors"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest recipe file, in bytes.
pub const RECIPE_BYTES_MAX: u64 = 64 << 10;
/// Most epochs or filter epochs.
pub const EPOCHS_MAX: usize = 100_000;
/// Most char LM steps.
pub const STEPS_MAX: usize = 10_000_000;
/// Most cross-validation folds.
pub const FOLDS_MAX: usize = 20;

/// A training recipe (see the module docs for the TOML form and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Recipe {
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// Model size and dropout.
    pub model: ModelRecipe,
    /// Which data is used.
    pub data: DataRecipe,
    /// Classification training.
    pub train: TrainRecipe,
    /// Char LM training.
    pub lm: LmRecipe,
    /// Early stopping on the local validation split.
    pub early_stopping: Option<EarlyStopping>,
    /// Label-noise filtering.
    pub filter: Option<Filter>,
    /// Augmentation of image-like features.
    pub augment: Option<Augment>,
    /// Magnitude pruning.
    pub prune: Option<Prune>,
    /// Fine-tuning from an artifact.
    pub base: Option<Base>,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            seed: 1,
            model: ModelRecipe::default(),
            data: DataRecipe::default(),
            train: TrainRecipe::default(),
            lm: LmRecipe::default(),
            early_stopping: None,
            filter: None,
            augment: None,
            prune: None,
            base: None,
        }
    }
}

/// Model size and dropout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelRecipe {
    /// MLP hidden widths (ignored for the char LM, whose shape the task fixes).
    pub hidden: Vec<usize>,
    /// Dropout probability in `[0, 1)`.
    pub dropout: f32,
}

impl Default for ModelRecipe {
    fn default() -> Self {
        ModelRecipe { hidden: vec![64], dropout: 0.0 }
    }
}

/// Which part of the public training data is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataRecipe {
    /// Share of the training rows (or text) used, in `(0, 1]`.
    pub fraction: f64,
    /// Share held back as the local validation split, in `[0, 0.5]` (0: none).
    pub validation_fraction: f64,
    /// The trainer's own training files (classification CSVs), at most [`EXTRA_FILES_MAX`]: each
    /// must have the task's columns (a header, the task's feature count, labels in
    /// `0..classes`), is standardized with the task's statistics like the public file, and joins
    /// the public rows before sampling, filtering and the validation split. They are read
    /// locally and never uploaded: only the trained model leaves the machine. Relative paths are
    /// taken from the recipe file's folder.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<PathBuf>,
}

impl Default for DataRecipe {
    fn default() -> Self {
        DataRecipe { fraction: 1.0, validation_fraction: 0.1, extra: Vec::new() }
    }
}

/// Most private training files a recipe may name.
pub const EXTRA_FILES_MAX: usize = 16;

/// Classification training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainRecipe {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for TrainRecipe {
    fn default() -> Self {
        TrainRecipe { epochs: 60, batch_size: 32, lr: 1e-3, weight_decay: 0.01 }
    }
}

/// Char LM training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmRecipe {
    /// Optimizer steps.
    pub steps: usize,
    /// Windows of `context` characters per step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Steps between evaluations on the local validation split.
    pub eval_every: usize,
}

impl Default for LmRecipe {
    fn default() -> Self {
        LmRecipe { steps: 1500, batch_size: 32, lr: 3e-3, weight_decay: 0.01, eval_every: 100 }
    }
}

/// Early stopping: keep the weights of the best validation evaluation; stop after `patience`
/// evaluations (epochs, or `eval_every` steps) without improvement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStopping {
    /// Evaluations without improvement before stopping.
    pub patience: usize,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping { patience: 8 }
    }
}

/// Label-noise filtering: each row is predicted by a model trained on the other folds; a row
/// whose prediction disagrees with its label with at least `confidence` probability is dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Cross-validation folds (at least 2).
    pub folds: usize,
    /// Hidden widths of the fold models.
    pub hidden: Vec<usize>,
    /// Epochs of each fold model.
    pub epochs: usize,
    /// Probability of the disagreeing prediction needed to drop a row, in `(0, 1]`.
    pub confidence: f64,
}

impl Default for Filter {
    fn default() -> Self {
        Filter { folds: 5, hidden: vec![32], epochs: 20, confidence: 0.5 }
    }
}

/// Augmentation for image-like features: each training row is shifted by up to `shift` pixels
/// in x and y (zero fill, in raw units) and gets Gaussian noise, freshly for every epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Image width in pixels; the feature count must be a multiple of it.
    pub width: usize,
    /// Largest shift in pixels.
    pub shift: usize,
    /// Noise std in standardized units.
    pub noise: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment { width: 8, shift: 1, noise: 0.1 }
    }
}

/// Magnitude pruning: zero the smallest-magnitude values until at most `params` are non-zero,
/// then fine-tune `epochs` (or `epochs × eval_every` char LM steps) with those values held at 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prune {
    /// Budget of non-zero parameters.
    pub params: u64,
    /// Masked fine-tuning after pruning.
    pub epochs: usize,
}

impl Default for Prune {
    fn default() -> Self {
        Prune { params: 10_000, epochs: 5 }
    }
}

/// Fine-tuning from an artifact: training starts from its weights (for an MLP, its hidden sizes
/// replace `model.hidden`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// The artifact, relative to the recipe file's folder when not absolute.
    pub path: PathBuf,
}

/// Why a recipe is refused.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The file could not be read.
    #[error("reading recipe {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Larger than [`RECIPE_BYTES_MAX`].
    #[error("recipe {path} is larger than {RECIPE_BYTES_MAX} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Not valid TOML for a recipe.
    #[error("recipe {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's error, with line and column.
        source: toml::de::Error,
    },
    /// A value out of range.
    #[error("recipe field `{field}`: {reason}")]
    Invalid {
        /// The field's path.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RecipeError {
    RecipeError::Invalid { field, reason: reason.into() }
}

impl Recipe {
    /// Parses and validates a recipe from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Recipe, RecipeError> {
        let recipe: Recipe = toml::from_str(text)
            .map_err(|source| RecipeError::Parse { path: origin.to_owned(), source })?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Reads a recipe file; a relative `base.path` or `data.extra` path is resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let name = path.display().to_string();
        let io = |source| RecipeError::Io { path: name.clone(), source };
        if std::fs::metadata(path).map_err(io)?.len() > RECIPE_BYTES_MAX {
            return Err(RecipeError::TooLarge { path: name });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut recipe = Recipe::from_toml(&text, &name)?;
        if let Some(dir) = path.parent() {
            let base = recipe.base.as_mut().map(|b| &mut b.path);
            for p in base.into_iter().chain(recipe.data.extra.iter_mut()) {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(recipe)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), RecipeError> {
        let widths = |field, hidden: &[usize]| {
            if hidden.len() > crate::model::mlp::LAYERS_MAX - 1
                || hidden.iter().any(|&w| w == 0 || w > crate::model::mlp::WIDTH_MAX)
            {
                return Err(invalid(field, "at most 63 widths, each 1 to 65536"));
            }
            Ok(())
        };
        widths("model.hidden", &self.model.hidden)?;
        if !(0.0..1.0).contains(&self.model.dropout) {
            return Err(invalid("model.dropout", "must be in [0, 1)"));
        }
        if !(self.data.fraction > 0.0 && self.data.fraction <= 1.0) {
            return Err(invalid("data.fraction", "must be in (0, 1]"));
        }
        if !(0.0..=0.5).contains(&self.data.validation_fraction) {
            return Err(invalid("data.validation_fraction", "must be in [0, 0.5]"));
        }
        if self.data.extra.len() > EXTRA_FILES_MAX {
            return Err(invalid("data.extra", format!("at most {EXTRA_FILES_MAX} files")));
        }
        let t = &self.train;
        if t.epochs == 0 || t.epochs > EPOCHS_MAX {
            return Err(invalid("train.epochs", format!("must be 1 to {EPOCHS_MAX}")));
        }
        for (field, batch) in
            [("train.batch_size", t.batch_size), ("lm.batch_size", self.lm.batch_size)]
        {
            if batch == 0 || batch > 1 << 16 {
                return Err(invalid(field, "must be 1 to 65536"));
            }
        }
        for (field, lr) in [("train.lr", t.lr), ("lm.lr", self.lm.lr)] {
            if !(lr > 0.0 && lr <= 10.0) {
                return Err(invalid(field, "must be in (0, 10]"));
            }
        }
        for (field, wd) in
            [("train.weight_decay", t.weight_decay), ("lm.weight_decay", self.lm.weight_decay)]
        {
            if !(0.0..=1.0).contains(&wd) {
                return Err(invalid(field, "must be in [0, 1]"));
            }
        }
        if self.lm.steps == 0 || self.lm.steps > STEPS_MAX {
            return Err(invalid("lm.steps", format!("must be 1 to {STEPS_MAX}")));
        }
        if self.lm.eval_every == 0 {
            return Err(invalid("lm.eval_every", "must be positive"));
        }
        if let Some(e) = &self.early_stopping {
            if e.patience == 0 {
                return Err(invalid("early_stopping.patience", "must be positive"));
            }
            if self.data.validation_fraction == 0.0 {
                return Err(invalid("early_stopping", "needs data.validation_fraction > 0"));
            }
        }
        if let Some(f) = &self.filter {
            if f.folds < 2 || f.folds > FOLDS_MAX {
                return Err(invalid("filter.folds", format!("must be 2 to {FOLDS_MAX}")));
            }
            widths("filter.hidden", &f.hidden)?;
            if f.epochs == 0 || f.epochs > EPOCHS_MAX {
                return Err(invalid("filter.epochs", format!("must be 1 to {EPOCHS_MAX}")));
            }
            if !(f.confidence > 0.0 && f.confidence <= 1.0) {
                return Err(invalid("filter.confidence", "must be in (0, 1]"));
            }
        }
        if let Some(a) = &self.augment {
            if a.width == 0 || a.width > crate::model::mlp::WIDTH_MAX {
                return Err(invalid("augment.width", "must be 1 to 65536"));
            }
            if a.shift >= a.width {
                return Err(invalid("augment.shift", "must be below the width"));
            }
            if !(0.0..=10.0).contains(&a.noise) {
                return Err(invalid("augment.noise", "must be in [0, 10]"));
            }
        }
        if let Some(p) = &self.prune {
            if p.params == 0 {
                return Err(invalid("prune.params", "must be positive"));
            }
            if p.epochs > EPOCHS_MAX {
                return Err(invalid("prune.epochs", format!("at most {EPOCHS_MAX}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_and_sections_parse() {
        assert_eq!(Recipe::from_toml("", "r.toml").unwrap(), Recipe::default());
        let r = Recipe::from_toml(
            "seed = 7\n[model]\nhidden = [16, 8]\n[filter]\nfolds = 3\n[early_stopping]\n",
            "r.toml",
        )
        .unwrap();
        assert_eq!(r.seed, 7);
        assert_eq!(r.model.hidden, vec![16, 8]);
        assert_eq!(r.filter.unwrap().folds, 3);
        assert_eq!(r.early_stopping.unwrap().patience, 8);
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let err = Recipe::from_toml("[model]\nhiden = [3]\n", "r.toml").unwrap_err();
        assert!(err.to_string().contains("hiden"), "{err}");
        let err = Recipe::from_toml("[model]\ndropout = 1.0\n", "r.toml").unwrap_err();
        assert!(err.to_string().contains("model.dropout"), "{err}");
    }
}
