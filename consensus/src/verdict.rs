//! Verdicts: what a validator says of each entry of a task, and the fixed layout of a vector.
//!
//! A verdict vector lists, in this order: the task's trivial baseline ([`Subject::Baseline`]),
//! then the base model if the task has one ([`Subject::BaseModel`]), then the earlier champions
//! on the same public training file that the task recorded when it opened
//! ([`Subject::Champion`]), then one entry per revealed submission sorted by trainer account id
//! ([`Subject::Submission`]). Each entry names its subject,
//! so a missing, extra or unsorted entry is caught by comparing subjects with the expected layout.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::types::{AccountId, ModelHash, ScorePpm};

/// Why a validator rejected an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The artifact's sha256 differs from the revealed model hash.
    HashMismatch,
    /// The artifact's size differs from the revealed `size_bytes`.
    SizeMismatch,
    /// The artifact is larger than the task's byte limit.
    TooLarge,
    /// The file is not well-formed safetensors (truncated, bad header length, bad JSON, bad
    /// offsets, a tensor larger than the file or the limits).
    Malformed,
    /// A tensor uses a dtype the task does not allow.
    DisallowedDtype,
    /// Tensor names or shapes do not form the task's architecture.
    WrongArchitecture,
    /// More non-zero parameters than the task allows.
    TooManyParams,
    /// The non-zero parameter count differs from the revealed one.
    ParamsMismatch,
    /// A value is NaN or infinite.
    NonFinite,
}

impl RejectReason {
    /// A short human-readable description.
    pub fn describe(self) -> &'static str {
        match self {
            RejectReason::HashMismatch => "artifact sha256 differs from the revealed hash",
            RejectReason::SizeMismatch => "artifact size differs from the revealed size_bytes",
            RejectReason::TooLarge => "artifact is larger than the task allows",
            RejectReason::Malformed => "artifact is not well-formed safetensors",
            RejectReason::DisallowedDtype => "a tensor uses a dtype the task does not allow",
            RejectReason::WrongArchitecture => {
                "tensor names or shapes do not match the architecture"
            }
            RejectReason::TooManyParams => "more non-zero parameters than the task allows",
            RejectReason::ParamsMismatch => {
                "non-zero parameter count differs from the revealed count"
            }
            RejectReason::NonFinite => "a value is NaN or infinite",
        }
    }
}

/// One validator's verdict on one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The artifact failed a check.
    Rejected {
        /// Which check.
        reason: RejectReason,
    },
    /// The artifact could not be fetched in time.
    Unavailable,
    /// The artifact was evaluated.
    Scored {
        /// The raw metric in ppm (accuracy, or the char-LM score), at most 1,000,000.
        score_ppm: ScorePpm,
    },
}

impl Verdict {
    /// A score of `score_ppm`.
    pub fn scored(score_ppm: u32) -> Verdict {
        Verdict::Scored { score_ppm: ScorePpm(score_ppm) }
    }

    /// The key verdicts are ordered by for the median: `Rejected < Unavailable < Scored(0) < … <
    /// Scored(1e6)`. Reject reasons do not order.
    pub fn rank(&self) -> (u8, u32) {
        match self {
            Verdict::Rejected { .. } => (0, 0),
            Verdict::Unavailable => (1, 0),
            Verdict::Scored { score_ppm, .. } => (2, score_ppm.0),
        }
    }

    /// Compares two verdicts by [`Verdict::rank`].
    pub fn cmp_rank(&self, other: &Verdict) -> Ordering {
        self.rank().cmp(&other.rank())
    }

    /// The score, if scored.
    pub fn score(&self) -> Option<ScorePpm> {
        match self {
            Verdict::Scored { score_ppm, .. } => Some(*score_ppm),
            _ => None,
        }
    }
}

/// What a verdict-vector entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// The task's trivial baseline (majority class, or unigram model for text).
    Baseline,
    /// The task's base model (a previous champion).
    BaseModel,
    /// An earlier champion on the task's public training file, recorded when the task opened:
    /// part of the baseline, so a copy of what already exists earns nothing.
    Champion(ModelHash),
    /// The submission of this trainer.
    Submission(AccountId),
}

/// One entry of a verdict vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictEntry {
    /// What the verdict is about.
    pub subject: Subject,
    /// The verdict.
    pub verdict: Verdict,
}

/// A validator's verdicts on every entry of a task, in the fixed layout.
pub type VerdictVector = Vec<VerdictEntry>;

/// The subjects a task's verdict vector must list, in order.
pub fn expected_layout(
    has_base_model: bool,
    champions: &[ModelHash],
    revealed_trainers: impl IntoIterator<Item = AccountId>,
) -> Vec<Subject> {
    let mut trainers: Vec<AccountId> = revealed_trainers.into_iter().collect();
    trainers.sort();
    let mut out = vec![Subject::Baseline];
    if has_base_model {
        out.push(Subject::BaseModel);
    }
    out.extend(champions.iter().copied().map(Subject::Champion));
    out.extend(trainers.into_iter().map(Subject::Submission));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_order_rejected_unavailable_scored() {
        let r = Verdict::Rejected { reason: RejectReason::NonFinite };
        let u = Verdict::Unavailable;
        let s0 = Verdict::scored(0);
        let s9 = Verdict::scored(9);
        assert!(r.cmp_rank(&u).is_lt());
        assert!(u.cmp_rank(&s0).is_lt());
        assert!(s0.cmp_rank(&s9).is_lt());
    }

    #[test]
    fn layout_is_baseline_base_then_sorted_trainers() {
        let a = AccountId([1; 32]);
        let b = AccountId([2; 32]);
        let c = ModelHash::default();
        assert_eq!(
            expected_layout(true, &[c], [b, a]),
            vec![
                Subject::Baseline,
                Subject::BaseModel,
                Subject::Champion(c),
                Subject::Submission(a),
                Subject::Submission(b)
            ]
        );
    }
}
