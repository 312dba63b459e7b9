//! Task and account reads: task lists, a task's full record, and an account's balance with the
//! "explain my reward" breakdown of every task it took part in.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use consensus::finalize::{FinalizationReport, Outcome, agrees};
use consensus::state::{Phase, State as LedgerState, Task};
use consensus::types::{AccountId, Height, TaskId};
use consensus::verdict::Subject;
use serde::{Deserialize, Serialize};

use super::read::{Page, query};
use super::views::{
    self, AttestationView, ForfeitView, ReferenceView, ReportView, RevealView, ScoreRecordView,
    StakeView, SubmissionView, TaskDetail, TaskSummary, VerdictView, decimal,
};
use super::{Api, ApiError, ApiResult};

/// Most tasks one `GET /tasks` answers.
pub const TASKS_LIMIT_MAX: u64 = 200;
/// Tasks `GET /tasks` answers when no `limit` is given.
const TASKS_LIMIT_DEFAULT: u64 = 50;
/// Most tasks explained by one `GET /accounts/{id}`.
pub const ACCOUNT_TASKS_LIMIT_MAX: usize = 100;
/// Tasks `GET /accounts/{id}` explains when no `limit` is given.
const ACCOUNT_TASKS_LIMIT_DEFAULT: usize = 20;

fn task_range(id: TaskId) -> std::ops::RangeInclusive<(TaskId, AccountId)> {
    (id, AccountId([0; 32]))..=(id, AccountId([0xff; 32]))
}

pub(super) async fn tasks(
    State(api): State<Api>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Json<Vec<TaskSummary>>> {
    let page = query(page)?;
    let list = api
        .read(move |l| {
            let state = l.state();
            let last = state.meta().next_task_id.saturating_sub(1);
            let range = page.range(last, TASKS_LIMIT_DEFAULT, TASKS_LIMIT_MAX)?;
            let tip = state.height();
            Ok(state
                .tasks
                .range(TaskId(*range.start())..=TaskId(*range.end()))
                .map(|(_, t)| TaskSummary::new(t, tip))
                .collect())
        })
        .await?;
    Ok(Json(list))
}

fn parse_task(id: &str) -> ApiResult<TaskId> {
    id.parse()
        .map(TaskId)
        .map_err(|_| ApiError::bad_request(format!("task id must be a decimal number, got {id:?}")))
}

fn get_task(state: &LedgerState, id: TaskId) -> ApiResult<&Task> {
    state.tasks.get(&id).ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

pub(super) async fn task(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskDetail>> {
    let id = parse_task(&id)?;
    let detail = api
        .read(move |l| {
            let state = l.state();
            let t = get_task(state, id)?;
            let report = t.report.as_ref();
            Ok(TaskDetail {
                summary: TaskSummary::new(t, state.height()),
                windows: t.spec.windows,
                deadlines: t.into(),
                spec: (&t.spec).into(),
                stakes: t
                    .stakes
                    .iter()
                    .map(|(v, s)| StakeView { validator: *v, stake: *s })
                    .collect(),
                attestation: AttestationView::new(t),
                key_revealed_at: t.key.map(|(_, at)| at),
                references: ReferenceView::of(t),
                submissions: state
                    .submissions
                    .range(task_range(id))
                    .map(|((_, a), s)| SubmissionView::new(*a, s))
                    .collect(),
                verdicts: state
                    .verdicts
                    .range(task_range(id))
                    .map(|((_, a), r)| ScoreRecordView::new(*a, r))
                    .collect(),
                consensus: report
                    .map_or_else(Vec::new, |r| r.entries.iter().map(Into::into).collect()),
                payouts: report.map_or_else(Vec::new, |r| views::payouts(t, r)),
                report: report.map(ReportView::from),
            })
        })
        .await?;
    Ok(Json(detail))
}

/// `GET /tasks/{id}/spec`: the task's spec exactly as the ledger holds it, in the `task.json`
/// form `node task new` writes (what a trainer training elsewhere reads: architecture,
/// preprocessing, limits). After the task's retention period the ledger drops its preprocessing
/// vectors, and so does this answer.
pub(super) async fn task_spec(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<Json<consensus::task::TaskSpec>> {
    let id = parse_task(&id)?;
    let spec = api.read(move |l| Ok(get_task(l.state(), id)?.spec.clone())).await?;
    Ok(Json(spec))
}

/// `?limit=` of `GET /accounts/{id}`.
#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    /// How many of the account's most recent tasks to explain.
    pub limit: Option<usize>,
}

/// `GET /accounts/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountView {
    /// The account.
    pub account: AccountId,
    /// Its balance.
    #[serde(with = "decimal")]
    pub balance: u64,
    /// Its next nonce.
    pub nonce: u64,
    /// Its validator stake (0 when not a validator).
    #[serde(with = "decimal")]
    pub stake: u64,
    /// Whether it is a validator.
    pub validator: bool,
    /// How many tasks the account took part in (as creator, trainer or validator).
    pub tasks_total: usize,
    /// The most recent of them, newest first, explained.
    pub tasks: Vec<TaskExplain>,
}

/// What one task meant for one account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskExplain {
    /// The task.
    pub task: TaskId,
    /// Its name.
    pub name: String,
    /// Its phase for the next block.
    pub phase: Phase,
    /// The height the task finalizes at.
    pub score_deadline: Height,
    /// How it ended, once finalized.
    pub outcome: Option<Outcome>,
    /// The score to beat, once finalized.
    pub baseline_ppm: Option<u32>,
    /// What it meant for the account as its creator.
    pub as_creator: Option<CreatorExplain>,
    /// What it meant for the account as a trainer.
    pub as_trainer: Option<TrainerExplain>,
    /// What it meant for the account as a validator.
    pub as_validator: Option<ValidatorExplain>,
}

/// The account opened the task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatorExplain {
    /// The escrow.
    #[serde(with = "decimal")]
    pub reward: u64,
    /// Returned at finalization (unearned trainer share, or all on quorum failure).
    #[serde(with = "decimal::option")]
    pub refund: Option<u64>,
}

/// One validator's verdict on the account's submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorVerdict {
    /// The validator.
    pub validator: AccountId,
    /// Its stake (at finalization once finalized).
    #[serde(with = "decimal")]
    pub stake: u64,
    /// Whether it revealed its verdict vector.
    pub revealed: bool,
    /// Its verdict on the submission, once revealed.
    pub verdict: Option<VerdictView>,
    /// Whether it agrees with the consensus verdict, once finalized.
    pub agrees: Option<bool>,
}

/// The account trained for the task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerExplain {
    /// Its bond.
    #[serde(with = "decimal")]
    pub bond: u64,
    /// When it joined.
    pub joined_at: Height,
    /// Whether it committed to a model.
    pub committed: bool,
    /// Its reveal.
    pub reveal: Option<RevealView>,
    /// Every validator's verdict on its model.
    pub validator_verdicts: Vec<ValidatorVerdict>,
    /// The consensus verdict, once finalized.
    pub consensus: Option<VerdictView>,
    /// Score lost to the efficiency rule, in ppm, once finalized.
    pub penalty_ppm: Option<u32>,
    /// Consensus score minus penalty, in ppm, once finalized.
    pub effective_ppm: Option<u32>,
    /// Rank among the submissions that beat the bar.
    pub rank: Option<u32>,
    /// Why it lost its bond.
    pub forfeit: Option<ForfeitView>,
    /// Bond returned, once finalized.
    #[serde(with = "decimal::option")]
    pub bond_refund: Option<u64>,
    /// Bond burned, once finalized.
    #[serde(with = "decimal::option")]
    pub bond_forfeit: Option<u64>,
    /// Reward paid, once finalized.
    #[serde(with = "decimal::option")]
    pub payout: Option<u64>,
    /// The whole story in one sentence.
    pub explanation: String,
}

/// The account scored the task as a validator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorExplain {
    /// Whether it committed a verdict vector.
    pub committed: bool,
    /// Whether it revealed it.
    pub revealed: bool,
    /// Its stake in the report, once finalized.
    #[serde(with = "decimal::option")]
    pub stake: Option<u64>,
    /// Entries of the consensus.
    pub entries: Option<usize>,
    /// On how many entries it agreed with the consensus.
    pub agreed_entries: Option<u32>,
    /// The entries where its verdict differs from the consensus.
    pub disagreements: Vec<Disagreement>,
    /// Reward paid, once finalized.
    #[serde(with = "decimal::option")]
    pub payout: Option<u64>,
    /// The whole story in one sentence.
    pub explanation: String,
}

/// A validator's verdict that differs from the consensus.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Disagreement {
    /// The entry's subject (see [`views::subject`]).
    pub subject: String,
    /// The validator's verdict.
    pub verdict: VerdictView,
    /// The consensus verdict.
    pub consensus: VerdictView,
}

fn phase_text(t: &Task, tip: Height) -> String {
    let phase = views::phase_name(views::phase_now(t, tip));
    format!(
        "task is in its {phase} phase; it finalizes at height {} (now {tip})",
        t.score_deadline()
    )
}

fn explain_trainer(
    state: &LedgerState,
    t: &Task,
    account: AccountId,
    tolerance_ppm: u32,
) -> Option<TrainerExplain> {
    let sub = state.submissions.get(&(t.id, account))?;
    let report = t.report.as_ref();
    let line = report.and_then(|r| r.trainers.iter().find(|x| x.account == account));
    let consensus = line.and_then(|l| l.consensus);
    let validator_verdicts = state
        .validators
        .iter()
        .map(|(v, record)| {
            let scored = state.verdicts.get(&(t.id, *v));
            let verdicts = scored.and_then(|r| r.verdicts.as_ref());
            let verdict = verdicts.and_then(|vs| {
                vs.iter().find(|e| e.subject == Subject::Submission(account)).map(|e| e.verdict)
            });
            let stake = report
                .and_then(|r| r.validators.iter().find(|x| x.account == *v))
                .map_or(record.stake.0, |x| x.stake);
            ValidatorVerdict {
                validator: *v,
                stake,
                revealed: verdicts.is_some(),
                verdict: verdict.as_ref().map(Into::into),
                agrees: verdict.zip(consensus).map(|(v, c)| agrees(&v, &c, tolerance_ppm)),
            }
        })
        .collect();
    let explanation = match (report, line) {
        (None, _) => phase_text(t, state.height()),
        (Some(r), _) if r.outcome == Outcome::Cancelled => format!(
            "cancelled at the join deadline: validators with only {} of {} stake attested to \
             holding the sealed held-out file, short of two thirds; bond and entry fee returned",
            r.attested_stake, r.total_stake
        ),
        (Some(r), _) if r.outcome == Outcome::KeyWithheld => "the creator did not reveal the \
             held-out key by the key deadline: no model was revealed, bond and entry fee \
             returned, the escrow burned"
            .into(),
        (Some(r), _) if r.outcome == Outcome::QuorumFailed => format!(
            "validators with only {} of {} stake revealed, short of a two-thirds quorum: no \
             rewards were paid, every bond was returned, and the escrow {}",
            r.revealed_stake,
            r.total_stake,
            if r.creator_refund.0 > 0 {
                "returned to the creator (no model was revealed)"
            } else {
                "burned (the models were public)"
            }
        ),
        (Some(_), None) => "the finalization report has no line for this trainer".into(),
        (Some(r), Some(l)) => {
            if let Some(f) = &l.forfeit {
                format!("bond of {} forfeited: {}", l.bond_forfeit, ForfeitView::from(f).text)
            } else {
                let score = l.consensus.and_then(|c| c.score()).map_or(0, |s| s.0);
                let bar = format!(
                    "the baseline of {} ppm by more than {} ppm",
                    r.baseline_ppm, r.min_improvement_ppm
                );
                let versus = match l.rank {
                    Some(1) => {
                        format!("beats {bar} and is the champion: it takes the trainer share")
                    }
                    Some(n) => format!("beats {bar}, rank {n}: only the champion is paid"),
                    None => format!("does not beat {bar}"),
                };
                format!(
                    "consensus score {score} ppm minus efficiency penalty {} ppm is {} ppm, which \
                     {versus}; paid {}, bond of {} returned",
                    l.penalty_ppm, l.effective_ppm, l.payout, l.bond_refund
                )
            }
        }
    };
    Some(TrainerExplain {
        bond: sub.bond.0,
        joined_at: sub.joined_at,
        committed: sub.commitment.is_some(),
        reveal: SubmissionView::new(account, sub).reveal,
        validator_verdicts,
        consensus: consensus.as_ref().map(Into::into),
        penalty_ppm: line.map(|l| l.penalty_ppm),
        effective_ppm: line.map(|l| l.effective_ppm),
        rank: line.and_then(|l| l.rank),
        forfeit: line.and_then(|l| l.forfeit.as_ref()).map(Into::into),
        bond_refund: line.map(|l| l.bond_refund.0),
        bond_forfeit: line.map(|l| l.bond_forfeit.0),
        payout: line.map(|l| l.payout.0),
        explanation,
    })
}

fn explain_validator(
    state: &LedgerState,
    t: &Task,
    account: AccountId,
    tolerance_ppm: u32,
) -> Option<ValidatorExplain> {
    let record = state.verdicts.get(&(t.id, account));
    let report = t.report.as_ref();
    let line = report.and_then(|r| r.validators.iter().find(|v| v.account == account));
    if record.is_none() && line.is_none() {
        return None;
    }
    let verdicts = record.and_then(|r| r.verdicts.as_ref());
    let disagreements: Vec<Disagreement> = match (report, verdicts) {
        (Some(r), Some(vs)) => r
            .entries
            .iter()
            .filter_map(|e| {
                let mine = vs.iter().find(|m| m.subject == e.subject)?;
                (!agrees(&mine.verdict, &e.consensus, tolerance_ppm)).then(|| Disagreement {
                    subject: views::subject(&e.subject),
                    verdict: (&mine.verdict).into(),
                    consensus: (&e.consensus).into(),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let explanation = match (report, line) {
        (None, _) => phase_text(t, state.height()),
        (Some(r), _) if r.outcome == Outcome::QuorumFailed => {
            "no two-thirds quorum revealed: validators were paid nothing".into()
        }
        (Some(_), Some(l)) if !l.revealed => {
            "did not reveal a verdict vector: paid nothing".to_string()
        }
        (Some(r), Some(l)) => format!(
            "agreed with the consensus on {} of {} entries: paid {} (validators share the \
             validator pool by stake times agreed entries)",
            l.agreed_entries,
            r.entries.len(),
            l.payout
        ),
        (Some(_), None) => "not in the validator set at finalization: paid nothing".into(),
    };
    Some(ValidatorExplain {
        committed: record.is_some(),
        revealed: verdicts.is_some(),
        stake: line.map(|l| l.stake),
        entries: report.map(|r| r.entries.len()),
        agreed_entries: line.map(|l| l.agreed_entries),
        disagreements,
        payout: line.map(|l| l.payout.0),
        explanation,
    })
}

fn explain(state: &LedgerState, t: &Task, account: AccountId) -> TaskExplain {
    let tolerance = state.params().agreement_tolerance_ppm;
    let report: Option<&FinalizationReport> = t.report.as_ref();
    TaskExplain {
        task: t.id,
        name: t.spec.name.clone(),
        phase: views::phase_now(t, state.height()),
        score_deadline: t.score_deadline(),
        outcome: report.map(|r| r.outcome),
        baseline_ppm: report.map(|r| r.baseline_ppm),
        as_creator: (t.creator == account).then(|| CreatorExplain {
            reward: t.reward.0,
            refund: report.map(|r| r.creator_refund.0),
        }),
        as_trainer: explain_trainer(state, t, account, tolerance),
        as_validator: explain_validator(state, t, account, tolerance),
    }
}

fn involved(state: &LedgerState, t: &Task, account: AccountId) -> bool {
    t.creator == account
        || state.submissions.contains(&(t.id, account))
        || state.verdicts.contains(&(t.id, account))
        || t.report.as_ref().is_some_and(|r| r.validators.iter().any(|v| v.account == account))
}

pub(super) async fn account(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<AccountQuery>, QueryRejection>,
) -> ApiResult<Json<AccountView>> {
    let account: AccountId =
        id.parse().map_err(|e| ApiError::bad_request(format!("account id: {e}")))?;
    let limit = query(q)?.limit.unwrap_or(ACCOUNT_TASKS_LIMIT_DEFAULT);
    if limit == 0 || limit > ACCOUNT_TASKS_LIMIT_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {ACCOUNT_TASKS_LIMIT_MAX}, got {limit}"
        )));
    }
    let view = api
        .read(move |l| {
            let state = l.state();
            let record = state.validators.get(&account);
            let Some(acct) =
                state.accounts.get(&account).copied().or(record.map(|_| Default::default()))
            else {
                return Err(ApiError::not_found(format!(
                    "account {account} has no balance, nonce or stake on the ledger"
                )));
            };
            let ids: Vec<TaskId> = state
                .tasks
                .iter()
                .filter(|(_, t)| involved(state, t, account))
                .map(|(id, _)| *id)
                .collect();
            let tasks = ids
                .iter()
                .rev()
                .take(limit)
                .filter_map(|id| state.tasks.get(id))
                .map(|t| explain(state, t, account))
                .collect();
            Ok(AccountView {
                account,
                balance: acct.balance.0,
                nonce: acct.nonce.0,
                stake: record.map_or(0, |r| r.stake.0),
                validator: state.is_validator(&account),
                tasks_total: ids.len(),
                tasks,
            })
        })
        .await?;
    Ok(Json(view))
}
