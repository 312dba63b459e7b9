//! Scoring a task: from artifacts and held-out data to the validator's verdict vector.
//!
//! [`judge`] checks one artifact and, when it passes, evaluates it. [`score_task`] does that for
//! the base model, the earlier champions the task recorded and every submission, adds the trivial
//! baseline, and lays the verdicts out as the ledger expects ([`crate::verdicts`]). There is no
//! duplicate detection: winner-takes-all makes a copy worthless, and the earlier champions in
//! the baseline make a copy of what already exists worthless too.

use consensus::task::TaskSpec;
use consensus::types::{AccountId, ModelHash};
use consensus::verdict::{RejectReason, Verdict, VerdictVector};

use crate::artifact::Source;
use crate::check::{CheckError, CheckedArtifact, Revealed, check_source};
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
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        match self {
            Judgement::Rejected(err) => Verdict::Rejected { reason: err.reason() },
            Judgement::Unbuildable { .. } => {
                Verdict::Rejected { reason: RejectReason::WrongArchitecture }
            }
            Judgement::Scored { evaluation, .. } => {
                Verdict::Scored { score_ppm: evaluation.score_ppm }
            }
        }
    }
}

/// Checks the artifact in `source` (a slice, or a file read by ranges) for `spec` (against
/// `revealed` when given) and evaluates it on `heldout`.
///
/// A bad artifact is a [`Judgement`], never an error: an error means the source could not be
/// read, the held-out data do not fit the task or a tensor operation failed on a checked model.
pub fn judge<S: Source + ?Sized>(
    source: &S,
    spec: &TaskSpec,
    revealed: Option<&Revealed>,
    heldout: &EvalData,
) -> Result<Judgement, EvalError> {
    let artifact = match check_source(source, spec, revealed).map_err(EvalError::Read)? {
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
    /// The artifact, or `None` when it could not be fetched in time.
    pub artifact: Option<&'a dyn Source>,
}

/// An earlier champion the task recorded as part of its baseline.
#[derive(Debug, Clone, Copy)]
pub struct Reference<'a> {
    /// sha256 of its artifact.
    pub model_hash: ModelHash,
    /// Its recorded non-zero parameter count.
    pub params: u64,
    /// The artifact, or `None` when it could not be fetched in time.
    pub artifact: Option<&'a dyn Source>,
}

/// Everything a validator scores a task with.
#[derive(Debug, Clone, Copy)]
pub struct TaskInputs<'a> {
    /// The task.
    pub spec: &'a TaskSpec,
    /// The public training part, prepared with [`eval::prepare`] (for the baseline).
    pub train: &'a EvalData,
    /// The held-out part, prepared with [`eval::prepare_heldout`].
    pub heldout: &'a EvalData,
    /// The base model when the task has one (`None`: it could not be fetched).
    pub base_model: Option<&'a dyn Source>,
    /// The earlier champions the task recorded, in the ledger's order.
    pub champions: &'a [Reference<'a>],
    /// The revealed submissions, in any order.
    pub submissions: &'a [Submission<'a>],
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

/// Judges an existing model (base or earlier champion) by its recorded hash and parameters.
fn judge_reference(
    inputs: &TaskInputs<'_>,
    model_hash: ModelHash,
    params: u64,
    artifact: Option<&dyn Source>,
) -> Result<Verdict, EvalError> {
    Ok(match artifact {
        None => Verdict::Unavailable,
        Some(source) => {
            let revealed = Revealed { model_hash, params, size_bytes: None };
            judge(source, inputs.spec, Some(&revealed), inputs.heldout)?.verdict()
        }
    })
}

/// The validator's verdict vector for a task.
pub fn score_task(inputs: &TaskInputs<'_>) -> Result<VerdictVector, ScoreError> {
    let spec = inputs.spec;
    let baseline = eval::baseline(inputs.train, inputs.heldout)?;
    let baseline = Verdict::Scored { score_ppm: baseline.score_ppm };
    let base_model = spec
        .base_model
        .as_ref()
        .map(|base| judge_reference(inputs, base.model_hash, base.params, inputs.base_model))
        .transpose()?;
    let champions = inputs
        .champions
        .iter()
        .map(|c| Ok((c.model_hash, judge_reference(inputs, c.model_hash, c.params, c.artifact)?)))
        .collect::<Result<Vec<_>, EvalError>>()?;
    let submissions = inputs
        .submissions
        .iter()
        .map(|s| {
            let verdict = match s.artifact {
                None => Verdict::Unavailable,
                Some(source) => judge(source, spec, Some(&s.revealed), inputs.heldout)?.verdict(),
            };
            Ok((s.trainer, verdict))
        })
        .collect::<Result<Vec<_>, EvalError>>()?;
    Ok(verdict_vector(baseline, base_model, champions, submissions)?)
}
