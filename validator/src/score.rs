//! Scoring a task: from artifacts and held-out data to the validator's verdict vector.
//!
//! [`judge`] checks one artifact and, when it passes, evaluates it: a verdict without a duplicate
//! flag. [`score_task`] does that for the base model and every submission, flags near-duplicates
//! among the scored submissions in commit order ([`crate::duplicate`]), adds the trivial
//! baseline, and lays the verdicts out as the ledger expects ([`crate::verdicts`]).

use consensus::task::TaskSpec;
use consensus::types::AccountId;
use consensus::verdict::{RejectReason, Verdict, VerdictVector};

use crate::check::{CheckError, CheckedArtifact, Revealed, check_artifact};
use crate::duplicate::flag_duplicates;
use crate::eval::{self, EvalData, EvalError, Evaluation, Model};
use crate::verdicts::{LayoutError, verdict_vector};

/// What became of one artifact.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// It failed a check.
    Rejected(CheckError),
    /// The checks passed but the trainer's model code refused the tensors. The checks mirror the
    /// model's constructors, so this means they disagree; the verdict is `WrongArchitecture`.
    Unbuildable {
        /// The model code's message.
        message: String,
    },
    /// It passed the checks and was evaluated.
    Scored {
        /// The checked artifact.
        artifact: Box<CheckedArtifact>,
        /// Its evaluation.
        evaluation: Evaluation,
    },
}

impl Judgement {
    /// The verdict, without a duplicate flag.
    pub fn verdict(&self) -> Verdict {
        match self {
            Judgement::Rejected(err) => Verdict::Rejected { reason: err.reason() },
            Judgement::Unbuildable { .. } => {
                Verdict::Rejected { reason: RejectReason::WrongArchitecture }
            }
            Judgement::Scored { evaluation, .. } => {
                Verdict::Scored { score_ppm: evaluation.score_ppm, duplicate_of: None }
            }
        }
    }
}

/// Checks `bytes` for `spec` (against `revealed` when given) and evaluates them on `heldout`.
///
/// A bad artifact is a [`Judgement`], never an error: an error means the held-out data do not
/// fit the task or a tensor operation failed on a checked model.
pub fn judge(
    bytes: &[u8],
    spec: &TaskSpec,
    revealed: Option<&Revealed>,
    heldout: &EvalData,
) -> Result<Judgement, EvalError> {
    let artifact = match check_artifact(bytes, spec, revealed) {
        Ok(artifact) => artifact,
        Err(err) => return Ok(Judgement::Rejected(err)),
    };
    let model = match Model::build(&spec.kind, &artifact.weights) {
        Ok(model) => model,
        Err(EvalError::Model(err)) => {
            return Ok(Judgement::Unbuildable { message: err.to_string() });
        }
        Err(err) => return Err(err),
    };
    let evaluation = model.evaluate(heldout)?;
    Ok(Judgement::Scored { artifact: Box::new(artifact), evaluation })
}

/// One revealed submission of a task.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// The trainer that revealed it.
    pub trainer: AccountId,
    /// What it revealed.
    pub revealed: Revealed,
    /// The artifact's bytes, or `None` when it could not be fetched in time.
    pub artifact: Option<&'a [u8]>,
}

/// Everything a validator scores a task with.
#[derive(Debug, Clone, Copy)]
pub struct TaskInputs<'a> {
    /// The task.
    pub spec: &'a TaskSpec,
    /// The public training part, prepared with [`eval::prepare`] (for the baseline).
    pub train: &'a EvalData,
    /// The held-out part, prepared with [`eval::prepare`].
    pub heldout: &'a EvalData,
    /// The base model's bytes when the task has one (`None`: it could not be fetched).
    pub base_model: Option<&'a [u8]>,
    /// The revealed submissions in commit order (block height, then position in the block).
    pub submissions_in_commit_order: &'a [Submission<'a>],
    /// The ledger's near-duplicate threshold, in ppm of relative L2 distance.
    pub duplicate_distance_ppm: u32,
}

/// Why a task could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Evaluation failed (bad data, or a tensor operation on a checked model).
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// The submissions do not form a verdict vector.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// The validator's verdict vector for a task.
pub fn score_task(inputs: &TaskInputs<'_>) -> Result<VerdictVector, ScoreError> {
    let spec = inputs.spec;
    let baseline = eval::baseline(inputs.train, inputs.heldout)?;
    let baseline = Verdict::Scored { score_ppm: baseline.score_ppm, duplicate_of: None };
    let base_model = match &spec.base_model {
        None => None,
        Some(base) => Some(match inputs.base_model {
            None => Verdict::Unavailable,
            Some(bytes) => {
                let revealed = Revealed { model_hash: base.model_hash, params: base.params };
                judge(bytes, spec, Some(&revealed), inputs.heldout)?.verdict()
            }
        }),
    };
    let judgements: Vec<Option<Judgement>> = inputs
        .submissions_in_commit_order
        .iter()
        .map(|s| s.artifact.map(|b| judge(b, spec, Some(&s.revealed), inputs.heldout)).transpose())
        .collect::<Result<_, _>>()?;
    let weights: Vec<_> = inputs
        .submissions_in_commit_order
        .iter()
        .zip(&judgements)
        .map(|(s, j)| match j {
            Some(Judgement::Scored { artifact, .. }) => (s.trainer, Some(&artifact.weights)),
            _ => (s.trainer, None),
        })
        .collect();
    let duplicates = flag_duplicates(&weights, inputs.duplicate_distance_ppm);
    let submissions =
        inputs.submissions_in_commit_order.iter().zip(judgements).zip(duplicates).map(
            |((s, judgement), duplicate_of)| {
                let verdict = match judgement.map(|j| j.verdict()) {
                    None => Verdict::Unavailable,
                    Some(Verdict::Scored { score_ppm, .. }) => {
                        Verdict::Scored { score_ppm, duplicate_of }
                    }
                    Some(other) => other,
                };
                (s.trainer, verdict)
            },
        );
    Ok(verdict_vector(baseline, base_model, submissions)?)
}
