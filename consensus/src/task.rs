//! The task spec: what a task's creator asks trainers to build, and how it is judged.
//!
//! `task.json` is the JSON form of [`TaskSpec`], so what a trainer reads from the chain is what
//! `node task new` wrote. The spec is plain data: the ledger never computes with its float fields
//! (the preprocessing statistics); their canonical bytes are their IEEE-754 bits.

use serde::{Deserialize, Serialize};

use crate::types::{Amount, Hash, ModelHash, ScorePpm};

/// Upper bounds on a spec's sizes, checked by [`TaskSpec::validate`].
pub mod limits {
    /// Longest task name, in bytes.
    pub const NAME_BYTES_MAX: usize = 128;
    /// Most input features of a classification task.
    pub const FEATURES_MAX: u32 = 65_536;
    /// Most classes of a classification task.
    pub const CLASSES_MAX: u32 = 10_000;
    /// Largest character vocabulary, including index 0 for unknown characters.
    pub const VOCAB_MAX: u32 = 4_096;
    /// Longest context of a character LM.
    pub const CONTEXT_MAX: u32 = 4_096;
    /// Widest model dimension of a character LM.
    pub const D_MODEL_MAX: u32 = 4_096;
    /// Most transformer layers of a character LM.
    pub const LAYERS_MAX: u32 = 64;
}

/// What kind of model a task asks for, with the architecture the ledger fixes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Classify a row of numeric features into one of `classes` labels. The MLP's hidden sizes are
    /// the trainer's choice and are read from the artifact's tensor shapes.
    Classification {
        /// Number of input features.
        features: u32,
        /// Number of classes; labels are `0..classes`.
        classes: u32,
    },
    /// Predict the next character. The architecture is fixed by these numbers (tensor names and
    /// shapes are documented with the model code in the `trainer` crate).
    CharLm {
        /// Vocabulary size, including index 0 for unknown characters.
        vocab: u32,
        /// Context length in characters.
        context: u32,
        /// Model width.
        d_model: u32,
        /// Number of transformer blocks.
        layers: u32,
        /// Attention heads per block; divides `d_model`.
        heads: u32,
    },
}

/// The preprocessing every trainer and validator applies to the raw data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preprocessing {
    /// Per-feature standardization: `x' = (x − mean) / std`, computed on the public training part.
    /// A std below `1e-8` is stored as 1, so a constant feature maps to 0, never NaN.
    Standardize {
        /// Mean of each feature.
        mean: Vec<f32>,
        /// Standard deviation of each feature.
        std: Vec<f32>,
    },
    /// Map characters to indices: index 0 is any character not in `chars`; `chars[i]` is index
    /// `i + 1`.
    Vocabulary {
        /// The known characters, in index order, without duplicates.
        chars: String,
    },
}

/// A tensor dtype an artifact may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Dtype {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
}

/// The task's data: the public training file and the commitment to the held-out part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// A human-readable name (e.g. `digits`).
    pub name: String,
    /// sha256 of the public training file's bytes.
    pub train_sha256: Hash,
    /// `sha256(salt || heldout_bytes)`: binds the held-out file without revealing it.
    pub heldout_commitment: Hash,
    /// sha256 of the sealed held-out file (the ciphertext that validators fetch and attest to
    /// holding in the join window); its size is bounded by the genesis `max_artifact_bytes`.
    pub heldout_cipher_sha256: Hash,
    /// `sha256(key)` of the 32-byte key that opens the sealed held-out file; the creator reveals
    /// the key in the key window (`RevealHeldoutKey`).
    pub key_commitment: Hash,
    /// How many examples the held-out part holds: rows for classification, characters for a
    /// character LM. The ledger refuses a set below the genesis minimum; validators refuse to
    /// score a held-out file whose count differs.
    pub heldout_examples: u64,
}

/// Limits on what a submission may be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most non-zero parameters.
    pub max_params: u64,
    /// Largest artifact file, in bytes.
    pub max_artifact_bytes: u64,
    /// Dtypes an artifact may use.
    pub dtypes: Vec<Dtype>,
}

/// The efficiency rule: models larger than `reference_params` lose score per doubling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Efficiency {
    /// Size that is not penalized.
    pub reference_params: u64,
    /// Score lost per doubling of parameters above the reference, in ppm.
    pub penalty_ppm_per_doubling: u32,
}

/// The task's windows, in blocks, counted one after another from the block that opened it.
///
/// With the task opened at height `c`: trainers join (and validators attest to holding the sealed
/// held-out file) at heights `c+1 ..= c+join`; trainers commit at heights up to `commit_deadline =
/// c+join+commit`; the creator reveals the held-out key at heights up to `key_deadline =
/// commit_deadline+key`; trainers reveal, once the key is on chain, up to `reveal_deadline =
/// key_deadline+reveal`; validators commit scores up to `score_commit_deadline =
/// reveal_deadline+score_commit` and reveal them up to `score_deadline =
/// score_commit_deadline+score_reveal`, the block in which the task finalizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    /// Blocks during which trainers may join.
    pub join: u64,
    /// Blocks after the join window during which joined trainers may still commit.
    pub commit: u64,
    /// Blocks after the commit window during which the creator reveals the held-out key.
    pub key: u64,
    /// Blocks during which trainers reveal.
    pub reveal: u64,
    /// Blocks during which validators commit verdict vectors.
    pub score_commit: u64,
    /// Blocks during which validators reveal verdict vectors.
    pub score_reveal: u64,
}

/// A previous champion that trainers may fine-tune from; scored as an entry of every verdict
/// vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// sha256 of the champion's artifact.
    pub model_hash: ModelHash,
    /// Its non-zero parameter count, as recorded when it became champion.
    pub params: u64,
}

/// A task: the plain data that `CreateTask` puts on the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// A human-readable name.
    pub name: String,
    /// Model kind and architecture.
    pub kind: TaskKind,
    /// How raw inputs are preprocessed.
    pub preprocessing: Preprocessing,
    /// The data and the held-out commitment.
    pub dataset: Dataset,
    /// Submission limits.
    pub limits: Limits,
    /// The efficiency rule.
    pub efficiency: Efficiency,
    /// What each trainer locks when it joins, returned unless it forfeits; positive.
    pub bond: Amount,
    /// What each trainer pays, burned, when it joins; positive. The ledger requires
    /// `max_trainers × entry_fee ≥` the trainer share of the reward, so filling every slot costs
    /// at least the prize.
    pub entry_fee: Amount,
    /// Most trainers that may join, first come, first served.
    pub max_trainers: u32,
    /// How far the champion must beat the baseline, in ppm (strictly more than this); at most
    /// the genesis `min_improvement_ppm_max`.
    pub min_improvement_ppm: u32,
    /// The task's windows.
    pub windows: Windows,
    /// A previous champion to fine-tune from, if any.
    pub base_model: Option<BaseModel>,
}

/// Why a task spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A field is outside what the ledger accepts.
    #[error("task spec field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field's path, e.g. `windows.join`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field, reason: reason.into() }
}

impl TaskSpec {
    /// Checks every field and relationship of the spec, independent of chain state.
    ///
    /// `validators` is the size of the validator set: each window must be longer, so several
    /// proposers get a turn in it.
    pub fn validate(&self, validators: usize) -> Result<(), SpecError> {
        if self.name.is_empty() || self.name.len() > limits::NAME_BYTES_MAX {
            return Err(invalid("name", format!("must be 1 to {} bytes", limits::NAME_BYTES_MAX)));
        }
        match (&self.kind, &self.preprocessing) {
            (
                TaskKind::Classification { features, classes },
                Preprocessing::Standardize { mean, std },
            ) => {
                if *features == 0 || *features > limits::FEATURES_MAX {
                    return Err(invalid(
                        "kind.features",
                        format!("must be 1 to {}", limits::FEATURES_MAX),
                    ));
                }
                if *classes < 2 || *classes > limits::CLASSES_MAX {
                    return Err(invalid(
                        "kind.classes",
                        format!("must be 2 to {}", limits::CLASSES_MAX),
                    ));
                }
                let n = *features as usize;
                if mean.len() != n || std.len() != n {
                    return Err(invalid(
                        "preprocessing",
                        format!("needs {n} means and stds, found {} and {}", mean.len(), std.len()),
                    ));
                }
                if mean.iter().any(|m| !m.is_finite()) {
                    return Err(invalid("preprocessing.mean", "every mean must be finite"));
                }
                if std.iter().any(|s| !s.is_finite() || *s < 1e-8) {
                    return Err(invalid(
                        "preprocessing.std",
                        "every std must be finite and at least 1e-8",
                    ));
                }
            }
            (
                TaskKind::CharLm { vocab, context, d_model, layers, heads },
                Preprocessing::Vocabulary { chars },
            ) => {
                if *vocab < 2 || *vocab > limits::VOCAB_MAX {
                    return Err(invalid(
                        "kind.vocab",
                        format!("must be 2 to {}", limits::VOCAB_MAX),
                    ));
                }
                let count = chars.chars().count();
                if count + 1 != *vocab as usize {
                    return Err(invalid(
                        "preprocessing.chars",
                        format!(
                            "vocab {vocab} needs {} characters (index 0 is unknown), found {count}",
                            vocab - 1
                        ),
                    ));
                }
                let mut seen = std::collections::BTreeSet::new();
                if !chars.chars().all(|c| seen.insert(c)) {
                    return Err(invalid("preprocessing.chars", "characters must be distinct"));
                }
                if *context == 0 || *context > limits::CONTEXT_MAX {
                    return Err(invalid(
                        "kind.context",
                        format!("must be 1 to {}", limits::CONTEXT_MAX),
                    ));
                }
                if *layers == 0 || *layers > limits::LAYERS_MAX {
                    return Err(invalid(
                        "kind.layers",
                        format!("must be 1 to {}", limits::LAYERS_MAX),
                    ));
                }
                if *d_model == 0
                    || *d_model > limits::D_MODEL_MAX
                    || *heads == 0
                    || d_model % heads != 0
                {
                    return Err(invalid(
                        "kind.d_model",
                        format!("must be 1 to {} and divisible by heads", limits::D_MODEL_MAX),
                    ));
                }
            }
            _ => return Err(invalid("preprocessing", "does not match the task kind")),
        }
        if self.dataset.name.is_empty() || self.dataset.name.len() > limits::NAME_BYTES_MAX {
            return Err(invalid(
                "dataset.name",
                format!("must be 1 to {} bytes", limits::NAME_BYTES_MAX),
            ));
        }
        if self.limits.max_params == 0 {
            return Err(invalid("limits.max_params", "must be positive"));
        }
        if self.limits.max_artifact_bytes == 0 {
            return Err(invalid("limits.max_artifact_bytes", "must be positive"));
        }
        if self.limits.dtypes.is_empty() {
            return Err(invalid("limits.dtypes", "must allow at least one dtype"));
        }
        let smallest = self.kind.smallest_model_params();
        if self.efficiency.reference_params < smallest
            || self.efficiency.reference_params > self.limits.max_params
        {
            // Below the smallest model of the architecture every model pays the penalty, and a
            // large enough penalty then zeroes every payout.
            return Err(invalid(
                "efficiency.reference_params",
                format!(
                    "must be at least {smallest} (the smallest model of this architecture) and at \
                     most limits.max_params = {}",
                    self.limits.max_params
                ),
            ));
        }
        if self.efficiency.penalty_ppm_per_doubling > ScorePpm::MAX.0 {
            return Err(invalid("efficiency.penalty_ppm_per_doubling", "must be at most 1000000"));
        }
        if self.max_trainers == 0 {
            return Err(invalid("max_trainers", "must be positive"));
        }
        if self.bond.0 == 0 {
            return Err(invalid("bond", "must be positive"));
        }
        if self.entry_fee.0 == 0 {
            return Err(invalid("entry_fee", "must be positive"));
        }
        if self.min_improvement_ppm >= ScorePpm::MAX.0 {
            return Err(invalid("min_improvement_ppm", "must be below 1000000"));
        }
        if self.dataset.heldout_examples == 0 {
            return Err(invalid("dataset.heldout_examples", "must be positive"));
        }
        let w = &self.windows;
        for (field, blocks) in [
            ("windows.join", w.join),
            ("windows.commit", w.commit),
            ("windows.key", w.key),
            ("windows.reveal", w.reveal),
            ("windows.score_commit", w.score_commit),
            ("windows.score_reveal", w.score_reveal),
        ] {
            if blocks <= validators as u64 {
                return Err(invalid(
                    field,
                    format!("{blocks} blocks; must be longer than the {validators} validators"),
                ));
            }
            if blocks > WINDOW_BLOCKS_MAX {
                return Err(invalid(
                    field,
                    format!("{blocks} blocks; at most {WINDOW_BLOCKS_MAX}"),
                ));
            }
        }
        if let Some(base) = &self.base_model
            && base.params == 0
        {
            return Err(invalid("base_model.params", "must be positive"));
        }
        Ok(())
    }

    /// The least `entry_fee` for `reward` under `trainer_share_ppm`: `ceil(trainer share /
    /// max_trainers)`, so that filling every slot costs at least the prize.
    pub fn entry_fee_min(&self, reward: Amount, trainer_share_ppm: u32) -> Amount {
        let share = trainer_share(reward, trainer_share_ppm);
        let slots = u64::from(self.max_trainers.max(1));
        Amount(share.0.div_ceil(slots))
    }
}

/// The trainer share of `reward`: `reward × trainer_share_ppm / 1e6`, rounded down.
pub fn trainer_share(reward: Amount, trainer_share_ppm: u32) -> Amount {
    let share = u128::from(reward.0) * u128::from(trainer_share_ppm.min(1_000_000)) / 1_000_000;
    Amount(u64::try_from(share).expect("a fraction of a u64 fits in u64"))
}

impl TaskKind {
    /// Non-zero parameters of the smallest model of this kind that uses every input and output:
    /// a linear classifier (`classes × (features + 1)`), or a char LM's token embedding and
    /// output head (`2 × vocab × d_model + vocab`). An efficiency reference below this would
    /// penalize every possible model.
    pub fn smallest_model_params(&self) -> u64 {
        match *self {
            TaskKind::Classification { features, classes } => {
                u64::from(classes) * (u64::from(features) + 1)
            }
            TaskKind::CharLm { vocab, d_model, .. } => {
                2 * u64::from(vocab) * u64::from(d_model) + u64::from(vocab)
            }
        }
    }
}

/// Longest single window, in blocks: keeps deadlines far from overflow and tasks finite.
pub const WINDOW_BLOCKS_MAX: u64 = 1_000_000;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shared example task, windows of 5 blocks.
    pub(crate) fn spec() -> TaskSpec {
        crate::testing::example_spec(5)
    }

    #[test]
    fn valid_spec_passes_and_json_round_trips() {
        let s = spec();
        s.validate(4).unwrap();
        let json = serde_json::to_string_pretty(&s).unwrap();
        assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), s);
    }

    #[test]
    fn windows_must_exceed_validator_count() {
        let s = spec();
        let err = s.validate(5).unwrap_err();
        assert!(err.to_string().contains("windows.join"), "{err}");
    }

    #[test]
    fn mismatched_preprocessing_is_refused() {
        let mut s = spec();
        s.preprocessing = Preprocessing::Vocabulary { chars: "ab".into() };
        assert!(s.validate(1).is_err());
        let mut s = spec();
        s.preprocessing = Preprocessing::Standardize { mean: vec![0.0], std: vec![1.0] };
        assert!(s.validate(1).is_err());
        let mut s = spec();
        s.preprocessing =
            Preprocessing::Standardize { mean: vec![0.0, f32::NAN, 0.0, 0.0], std: vec![1.0; 4] };
        assert!(s.validate(1).is_err());
    }
}
