//! `node score`: check and evaluate one artifact offline, as a validator would, and print the
//! result as one JSON object.
//!
//! ```text
//! {"verdict": "scored"|"rejected", "score_ppm": u32, "metric": "accuracy"|"bits_per_char",
//!  "value": f64|null, "params": u64|null, "sha256": "<hex>", "reason": null|"<reject reason>"}
//! ```
//!
//! A rejected model has `score_ppm` 0, `value` null, and `params` null unless the checks got as
//! far as counting; `reason` is the ledger's reject reason in snake_case (`malformed`,
//! `non_finite`, …), with the details on stderr. The command exits 0 whether the model was scored
//! or rejected, and non-zero only for a bad command line or unreadable or invalid task and
//! held-out files. Without a reveal there is no hash or count to compare, so those two checks
//! are skipped.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use consensus::types::ModelHash;
use consensus::verdict::RejectReason;
use validator::artifact::Source;
use validator::check::sha256_of;
use validator::eval::{self, Evaluation, Metric};
use validator::heldout::{HELDOUT_BYTES_MAX, read_bounded, read_salt};
use validator::score::{Judgement, judge};

/// Arguments of `node score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The task spec (`task.json`, as `node task new` writes it).
    #[arg(long)]
    pub task: PathBuf,
    /// The held-out file (CSV or text) to score on.
    #[arg(long)]
    pub heldout: PathBuf,
    /// The model artifact (safetensors).
    #[arg(long)]
    pub model: PathBuf,
}

/// The printed result.
struct Report {
    sha256: ModelHash,
    metric: Metric,
    outcome: Result<(Evaluation, u64), (RejectReason, Option<u64>)>,
}

impl Report {
    /// The JSON object, with its keys in the documented order.
    fn to_json(&self) -> String {
        use serde_json::Value;
        let (verdict, score_ppm, value, params, reason) = match &self.outcome {
            Ok((evaluation, params)) => (
                "scored",
                evaluation.score_ppm.0,
                Value::from(evaluation.value),
                Value::from(*params),
                Value::Null,
            ),
            Err((reason, params)) => (
                "rejected",
                0,
                Value::Null,
                Value::from(*params),
                serde_json::to_value(reason).expect("a reject reason serializes"),
            ),
        };
        format!(
            r#"{{"verdict":{},"score_ppm":{score_ppm},"metric":{},"value":{value},"params":{params},"sha256":{},"reason":{reason}}}"#,
            Value::from(verdict),
            Value::from(self.metric.name()),
            Value::from(self.sha256.to_hex()),
        )
    }
}

/// Runs `node score`.
pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let spec = trainer::task::read_spec(&args.task)?;

    let heldout_bytes = read_bounded(&args.heldout, HELDOUT_BYTES_MAX)?;
    if let Ok(salt) = read_salt(&args.heldout) {
        let found = consensus::commitment::heldout_commitment(&salt, &heldout_bytes);
        if found != spec.dataset.heldout_commitment {
            eprintln!(
                "warning: {} with its salt does not match the task's held-out commitment; \
                 scoring on it anyway",
                args.heldout.display()
            );
        }
    }
    let heldout = eval::prepare(&spec, &heldout_bytes, &args.heldout.display().to_string())?;

    let metric = Metric::of(&spec.kind);
    // Read by ranges, as a validator does: a file of any size is never held whole.
    let file = std::fs::File::open(&args.model)
        .with_context(|| format!("opening {}", args.model.display()))?;
    let sha256 = file
        .size()
        .and_then(|size_bytes| sha256_of(&file, size_bytes))
        .with_context(|| format!("reading {}", args.model.display()))?;
    let outcome = match judge(&file, &spec, None, &heldout)? {
        Judgement::Scored { artifact, evaluation } => Ok((evaluation, artifact.params)),
        Judgement::Rejected(err) => {
            eprintln!("rejected: {err}");
            Err((err.reason(), err.params()))
        }
        Judgement::Unbuildable { message } => {
            eprintln!("rejected: {message}");
            Err((RejectReason::WrongArchitecture, None))
        }
    };
    let report = Report { sha256, metric, outcome };
    println!("{}", report.to_json());
    Ok(())
}
