//! The node's API client and views, with what the testnet reads from them: how far each
//! trainer of a task got, and a task's finalization report as the ledger holds it.

use anyhow::Context;
use consensus::finalize::FinalizationReport;
pub use node::client::{Client, HttpError};
use node::http::views::{SubmissionView, TaskDetail};

/// How far a joined trainer got in a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Joined; training until it commits.
    Joined,
    /// Committed to a model.
    Committed,
    /// Revealed its model.
    Revealed,
}

/// How far the trainer of `submission` got.
pub fn stage(submission: &SubmissionView) -> Stage {
    if submission.reveal.is_some() {
        Stage::Revealed
    } else if submission.commitment.is_some() {
        Stage::Committed
    } else {
        Stage::Joined
    }
}

/// The task's finalization report as the ledger holds it, once the task has finalized.
pub fn report(view: &TaskDetail) -> anyhow::Result<Option<FinalizationReport>> {
    view.report
        .as_ref()
        .map(FinalizationReport::try_from)
        .transpose()
        .with_context(|| format!("reading the finalization report of task {}", view.summary.id))
}
