//! The JSON shapes the API answers with, built from ledger types.
//!
//! Amounts (balances, stakes, voting power, rewards, bonds, payouts) and the counts a task
//! creator or trainer chooses freely (parameter counts, artifact sizes) are JSON strings: a u64
//! does not fit a JavaScript number. Heights, nonces, times in ms, ppm scores and small counts are
//! numbers. Ids and hashes are lowercase hex.

use anyhow::Context;
use consensus::block::Block;
use consensus::finalize::{
    Champion, EntryReport, FinalizationReport, ForfeitReason, Outcome, TrainerReport,
    ValidatorReport,
};
use consensus::state::{Phase, ScoreRecord, Submission, Task};
use consensus::task::{Dtype, Preprocessing, TaskKind, TaskSpec, Windows};
use consensus::tx::{SignedTx, TxKind};
use consensus::types::{AccountId, Amount, Hash, Height, ParseIdError, TaskId};
use consensus::verdict::{RejectReason, Subject, Verdict, VerdictEntry};
use consensus::vote::{CommitCertificate, VoteKind};
use serde::{Deserialize, Serialize};

pub use super::proof::ProofView;
pub use super::read::{
    BlobBytesView, ConnectionView, LastVote, PeerView, StatusView, ValidatorView,
};
pub use super::tasks::{
    AccountView, CreatorExplain, Disagreement, TaskExplain, TrainerExplain, ValidatorExplain,
    ValidatorVerdict,
};
pub use super::write::{BlobStored, TxAccepted, TxOutcome, TxsAnswer};

/// Serde helpers for the numbers the API writes as decimal strings, used both ways:
/// `#[serde(with = "decimal")]`, or `decimal::option` for an optional one.
pub mod decimal {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Writes `n` as a decimal string.
    pub fn serialize<T: Display, S: Serializer>(n: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    /// Reads a decimal string.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }

    /// The same for an optional number: `null` when absent.
    pub mod option {
        use super::*;

        /// Writes `n` as a decimal string, or `null`.
        pub fn serialize<T: Display, S: Serializer>(
            n: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match n {
                Some(n) => s.collect_str(n),
                None => s.serialize_none(),
            }
        }

        /// Reads a decimal string, or `null`.
        pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr<Err: Display>,
            D: Deserializer<'de>,
        {
            Option::<String>::deserialize(d)?
                .map(|s| s.parse().map_err(de::Error::custom))
                .transpose()
        }
    }
}

/// A verdict-vector subject: `"baseline"`, `"base_model"`, `"champion:<model hash hex>"` for an
/// earlier champion, or the trainer's account hex.
pub fn subject(s: &Subject) -> String {
    match s {
        Subject::Baseline => "baseline".into(),
        Subject::BaseModel => "base_model".into(),
        Subject::Champion(h) => format!("champion:{}", h.to_hex()),
        Subject::Submission(a) => a.to_hex(),
    }
}

/// Reads back a subject written by [`subject`].
pub fn parse_subject(s: &str) -> Result<Subject, ParseIdError> {
    Ok(match s {
        "baseline" => Subject::Baseline,
        "base_model" => Subject::BaseModel,
        other => match other.strip_prefix("champion:") {
            Some(hash) => Subject::Champion(hash.parse()?),
            None => Subject::Submission(other.parse()?),
        },
    })
}

/// One verdict, flattened: `verdict` is `scored`, `unavailable` or `rejected`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerdictView {
    /// `scored`, `unavailable` or `rejected`.
    pub verdict: String,
    /// The raw score in ppm, when scored.
    pub score_ppm: Option<u32>,
    /// Why it was rejected, when rejected.
    pub reason: Option<RejectReason>,
    /// The rejection reason in words.
    pub reason_text: Option<String>,
}

impl From<&Verdict> for VerdictView {
    fn from(v: &Verdict) -> Self {
        match v {
            Verdict::Scored { score_ppm } => VerdictView {
                verdict: "scored".into(),
                score_ppm: Some(score_ppm.0),
                reason: None,
                reason_text: None,
            },
            Verdict::Unavailable => VerdictView {
                verdict: "unavailable".into(),
                score_ppm: None,
                reason: None,
                reason_text: None,
            },
            Verdict::Rejected { reason } => VerdictView {
                verdict: "rejected".into(),
                score_ppm: None,
                reason: Some(*reason),
                reason_text: Some(reason.describe().into()),
            },
        }
    }
}

impl TryFrom<&VerdictView> for Verdict {
    type Error = anyhow::Error;

    fn try_from(v: &VerdictView) -> anyhow::Result<Verdict> {
        Ok(match v.verdict.as_str() {
            "scored" => Verdict::scored(v.score_ppm.context("a scored verdict has a score")?),
            "unavailable" => Verdict::Unavailable,
            "rejected" => {
                Verdict::Rejected { reason: v.reason.context("a rejected verdict has a reason")? }
            }
            other => anyhow::bail!("unknown verdict {other:?}"),
        })
    }
}

/// One entry of a verdict vector, or of the consensus.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntryView {
    /// What it is about (see [`subject`]).
    pub subject: String,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: VerdictView,
}

impl From<&VerdictEntry> for EntryView {
    fn from(e: &VerdictEntry) -> Self {
        EntryView { subject: subject(&e.subject), verdict: (&e.verdict).into() }
    }
}

impl From<&EntryReport> for EntryView {
    fn from(e: &EntryReport) -> Self {
        EntryView { subject: subject(&e.subject), verdict: (&e.consensus).into() }
    }
}

/// Why a trainer lost its bond.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForfeitView {
    /// `not_revealed`, `rejected` or `unavailable`.
    pub reason: ForfeitReason,
    /// The reason in words.
    pub text: String,
}

impl From<&ForfeitReason> for ForfeitView {
    fn from(f: &ForfeitReason) -> Self {
        let text = match f {
            ForfeitReason::NotRevealed => "joined but never revealed a model",
            ForfeitReason::Rejected => "the consensus verdict on its model is rejected",
            ForfeitReason::Unavailable => {
                "the consensus verdict on its model is unavailable: validators could not fetch it"
            }
        };
        ForfeitView { reason: *f, text: text.into() }
    }
}

/// A trainer's line of a finalization report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerReportView {
    /// The trainer.
    pub account: AccountId,
    /// Its consensus verdict, if it revealed and the task reached quorum.
    pub consensus: Option<VerdictView>,
    /// Its revealed parameter count.
    #[serde(with = "decimal::option")]
    pub params: Option<u64>,
    /// Score lost to the efficiency rule, in ppm.
    pub penalty_ppm: u32,
    /// Consensus score minus penalty, in ppm.
    pub effective_ppm: u32,
    /// Why it lost its bond.
    pub forfeit: Option<ForfeitView>,
    /// Bond returned.
    #[serde(with = "decimal")]
    pub bond_refund: u64,
    /// Bond burned.
    #[serde(with = "decimal")]
    pub bond_forfeit: u64,
    /// Entry fee returned (on a cancellation or a withheld key; otherwise it burned).
    #[serde(with = "decimal")]
    pub entry_fee_refund: u64,
    /// Reward paid: the whole trainer share for the champion, nothing for anyone else.
    #[serde(with = "decimal")]
    pub payout: u64,
    /// Rank among the submissions that beat the bar (1 is the champion).
    pub rank: Option<u32>,
}

impl From<&TrainerReport> for TrainerReportView {
    fn from(t: &TrainerReport) -> Self {
        TrainerReportView {
            account: t.account,
            consensus: t.consensus.as_ref().map(Into::into),
            params: t.params,
            penalty_ppm: t.penalty_ppm,
            effective_ppm: t.effective_ppm,
            forfeit: t.forfeit.as_ref().map(Into::into),
            bond_refund: t.bond_refund.0,
            bond_forfeit: t.bond_forfeit.0,
            entry_fee_refund: t.entry_fee_refund.0,
            payout: t.payout.0,
            rank: t.rank,
        }
    }
}

/// A validator's line of a finalization report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorReportView {
    /// The validator.
    pub account: AccountId,
    /// Its stake in the task's snapshot (taken when the task opened).
    #[serde(with = "decimal")]
    pub stake: u64,
    /// Whether it revealed a verdict vector.
    pub revealed: bool,
    /// On how many entries it agreed with the consensus.
    pub agreed_entries: u32,
    /// Reward paid.
    #[serde(with = "decimal")]
    pub payout: u64,
}

impl From<&ValidatorReport> for ValidatorReportView {
    fn from(v: &ValidatorReport) -> Self {
        ValidatorReportView {
            account: v.account,
            stake: v.stake,
            revealed: v.revealed,
            agreed_entries: v.agreed_entries,
            payout: v.payout.0,
        }
    }
}

/// A task's champion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChampionView {
    /// Its trainer.
    pub trainer: AccountId,
    /// sha256 of its artifact.
    pub model_hash: Hash,
    /// Its non-zero parameter count.
    #[serde(with = "decimal")]
    pub params: u64,
    /// Its effective score, in ppm.
    pub effective_ppm: u32,
}

impl From<&Champion> for ChampionView {
    fn from(c: &Champion) -> Self {
        ChampionView {
            trainer: c.trainer,
            model_hash: c.model_hash,
            params: c.params,
            effective_ppm: c.effective_ppm,
        }
    }
}

/// A stored finalization report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportView {
    /// `finalized`, `quorum_failed`, `cancelled` (too little stake attested to holding the
    /// sealed held-out file by the join deadline) or `key_withheld` (the creator did not reveal
    /// the held-out key by the key deadline).
    pub outcome: Outcome,
    /// Stake of the validators that attested to holding the sealed held-out file.
    #[serde(with = "decimal")]
    pub attested_stake: u64,
    /// The height at which the held-out key came on chain, if it did.
    pub key_revealed_at: Option<Height>,
    /// Burned out of the escrow by a cancellation.
    #[serde(with = "decimal")]
    pub cancellation_fee: u64,
    /// Stake of the validators that revealed.
    #[serde(with = "decimal")]
    pub revealed_stake: u64,
    /// Stake of every validator.
    #[serde(with = "decimal")]
    pub total_stake: u64,
    /// The score to beat, in ppm.
    pub baseline_ppm: u32,
    /// The champion must score more than the baseline plus this, in ppm.
    pub min_improvement_ppm: u32,
    /// The consensus verdict of each entry, in layout order.
    pub entries: Vec<EntryView>,
    /// Every joined trainer.
    pub trainers: Vec<TrainerReportView>,
    /// Every validator.
    pub validators: Vec<ValidatorReportView>,
    /// Returned to the creator.
    #[serde(with = "decimal")]
    pub creator_refund: u64,
    /// Burned.
    #[serde(with = "decimal")]
    pub burned: u64,
    /// The champion, if any submission beat the baseline.
    pub champion: Option<ChampionView>,
}

impl From<&FinalizationReport> for ReportView {
    fn from(r: &FinalizationReport) -> Self {
        ReportView {
            outcome: r.outcome,
            attested_stake: r.attested_stake,
            key_revealed_at: r.key_revealed_at,
            cancellation_fee: r.cancellation_fee.0,
            revealed_stake: r.revealed_stake,
            total_stake: r.total_stake,
            baseline_ppm: r.baseline_ppm,
            min_improvement_ppm: r.min_improvement_ppm,
            entries: r.entries.iter().map(Into::into).collect(),
            trainers: r.trainers.iter().map(Into::into).collect(),
            validators: r.validators.iter().map(Into::into).collect(),
            creator_refund: r.creator_refund.0,
            burned: r.burned.0,
            champion: r.champion.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<&ReportView> for FinalizationReport {
    type Error = anyhow::Error;

    /// The ledger's report back from its view.
    fn try_from(r: &ReportView) -> anyhow::Result<FinalizationReport> {
        let verdict = |v: &Option<VerdictView>| v.as_ref().map(Verdict::try_from).transpose();
        Ok(FinalizationReport {
            outcome: r.outcome,
            attested_stake: r.attested_stake,
            key_revealed_at: r.key_revealed_at,
            cancellation_fee: Amount(r.cancellation_fee),
            revealed_stake: r.revealed_stake,
            total_stake: r.total_stake,
            baseline_ppm: r.baseline_ppm,
            min_improvement_ppm: r.min_improvement_ppm,
            entries: r
                .entries
                .iter()
                .map(|e| {
                    Ok(EntryReport {
                        subject: parse_subject(&e.subject)?,
                        consensus: (&e.verdict).try_into()?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            trainers: r
                .trainers
                .iter()
                .map(|t| {
                    Ok(TrainerReport {
                        account: t.account,
                        consensus: verdict(&t.consensus)?,
                        params: t.params,
                        penalty_ppm: t.penalty_ppm,
                        effective_ppm: t.effective_ppm,
                        forfeit: t.forfeit.as_ref().map(|f| f.reason),
                        bond_refund: Amount(t.bond_refund),
                        bond_forfeit: Amount(t.bond_forfeit),
                        entry_fee_refund: Amount(t.entry_fee_refund),
                        payout: Amount(t.payout),
                        rank: t.rank,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            validators: r
                .validators
                .iter()
                .map(|v| ValidatorReport {
                    account: v.account,
                    stake: v.stake,
                    revealed: v.revealed,
                    agreed_entries: v.agreed_entries,
                    payout: Amount(v.payout),
                })
                .collect(),
            creator_refund: Amount(r.creator_refund),
            burned: Amount(r.burned),
            champion: r.champion.as_ref().map(|c| Champion {
                trainer: c.trainer,
                model_hash: c.model_hash,
                params: c.params,
                effective_ppm: c.effective_ppm,
            }),
        })
    }
}

/// A task's deadlines: the last height of each window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadlinesView {
    /// Last height trainers may join.
    pub join: Height,
    /// Last height trainers may commit.
    pub commit: Height,
    /// Last height the creator may reveal the held-out key.
    pub key: Height,
    /// Last height trainers may reveal.
    pub reveal: Height,
    /// Last height validators may commit scores.
    pub score_commit: Height,
    /// Last height validators may reveal scores; the task finalizes in this block.
    pub score: Height,
}

impl From<&Task> for DeadlinesView {
    fn from(t: &Task) -> Self {
        DeadlinesView {
            join: t.join_deadline(),
            commit: t.commit_deadline(),
            key: t.key_deadline(),
            reveal: t.reveal_deadline(),
            score_commit: t.score_commit_deadline(),
            score: t.score_deadline(),
        }
    }
}

/// A task spec, with its large numbers as strings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpecView {
    /// The model kind and architecture.
    pub kind: TaskKind,
    /// The preprocessing.
    pub preprocessing: Preprocessing,
    /// The data set's name.
    pub dataset: String,
    /// sha256 of the public training file.
    pub train_sha256: Hash,
    /// Commitment to the held-out file.
    pub heldout_commitment: Hash,
    /// sha256 of the sealed held-out file validators hold.
    pub heldout_cipher_sha256: Hash,
    /// sha256 of the held-out key.
    pub key_commitment: Hash,
    /// Examples in the held-out file (rows, or characters for text).
    #[serde(with = "decimal")]
    pub heldout_examples: u64,
    /// Most non-zero parameters.
    #[serde(with = "decimal")]
    pub max_params: u64,
    /// Largest artifact, in bytes.
    #[serde(with = "decimal")]
    pub max_artifact_bytes: u64,
    /// Allowed dtypes.
    pub dtypes: Vec<Dtype>,
    /// Parameters not penalized by the efficiency rule.
    #[serde(with = "decimal")]
    pub reference_params: u64,
    /// Score lost per doubling above the reference, in ppm.
    pub penalty_ppm_per_doubling: u32,
    /// A trainer's bond.
    #[serde(with = "decimal")]
    pub bond: u64,
    /// What each trainer burns to join.
    #[serde(with = "decimal")]
    pub entry_fee: u64,
    /// Most trainers.
    pub max_trainers: u32,
    /// How far the champion must beat the baseline, in ppm.
    pub min_improvement_ppm: u32,
    /// The base model to fine-tune from.
    pub base_model: Option<BaseModelView>,
}

/// A task's base model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaseModelView {
    /// sha256 of the champion's artifact.
    pub model_hash: Hash,
    /// Its non-zero parameter count.
    #[serde(with = "decimal")]
    pub params: u64,
}

impl From<&TaskSpec> for SpecView {
    fn from(s: &TaskSpec) -> Self {
        SpecView {
            kind: s.kind.clone(),
            preprocessing: s.preprocessing.clone(),
            dataset: s.dataset.name.clone(),
            train_sha256: s.dataset.train_sha256,
            heldout_commitment: s.dataset.heldout_commitment,
            heldout_cipher_sha256: s.dataset.heldout_cipher_sha256,
            key_commitment: s.dataset.key_commitment,
            heldout_examples: s.dataset.heldout_examples,
            max_params: s.limits.max_params,
            max_artifact_bytes: s.limits.max_artifact_bytes,
            dtypes: s.limits.dtypes.clone(),
            reference_params: s.efficiency.reference_params,
            penalty_ppm_per_doubling: s.efficiency.penalty_ppm_per_doubling,
            bond: s.bond.0,
            entry_fee: s.entry_fee.0,
            max_trainers: s.max_trainers,
            min_improvement_ppm: s.min_improvement_ppm,
            base_model: s
                .base_model
                .as_ref()
                .map(|b| BaseModelView { model_hash: b.model_hash, params: b.params }),
        }
    }
}

/// A line of `GET /tasks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task id.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// `classification` or `char_lm`.
    pub kind: String,
    /// Its phase for the next block.
    pub phase: Phase,
    /// Who opened it.
    pub creator: AccountId,
    /// The escrow.
    #[serde(with = "decimal")]
    pub reward: u64,
    /// The height that opened it.
    pub created_at: Height,
    /// Trainers joined.
    pub joined: u32,
    /// Most trainers.
    pub max_trainers: u32,
    /// The height it finalizes at.
    pub score_deadline: Height,
    /// How it ended, once finalized.
    pub outcome: Option<Outcome>,
    /// The winning trainer, once finalized with a champion.
    pub champion: Option<AccountId>,
}

/// The task's kind as a word.
pub fn kind_name(k: &TaskKind) -> &'static str {
    match k {
        TaskKind::Classification { .. } => "classification",
        TaskKind::CharLm { .. } => "char_lm",
    }
}

/// A phase's name, as the API writes it.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Join => "join",
        Phase::Commit => "commit",
        Phase::Key => "key",
        Phase::Reveal => "reveal",
        Phase::ScoreCommit => "score_commit",
        Phase::ScoreReveal => "score_reveal",
        Phase::Finalized => "finalized",
    }
}

/// The phase a task is in for the next block (the block a transaction sent now lands in).
pub fn phase_now(task: &Task, tip: Height) -> Phase {
    task.phase(tip.next())
}

impl TaskSummary {
    /// The summary of `task` with the chain at `tip`.
    pub fn new(task: &Task, tip: Height) -> TaskSummary {
        TaskSummary {
            id: task.id,
            name: task.spec.name.clone(),
            kind: kind_name(&task.spec.kind).into(),
            phase: phase_now(task, tip),
            creator: task.creator,
            reward: task.reward.0,
            created_at: task.created_at,
            joined: task.joined,
            max_trainers: task.spec.max_trainers,
            score_deadline: task.score_deadline(),
            outcome: task.report.as_ref().map(|r| r.outcome),
            champion: task.report.as_ref().and_then(|r| r.champion.as_ref()).map(|c| c.trainer),
        }
    }
}

/// Where a commitment landed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PositionView {
    /// The block.
    pub height: Height,
    /// Position in the block.
    pub index: u32,
}

/// A trainer's revealed model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevealView {
    /// sha256 of the artifact.
    pub model_hash: Hash,
    /// Artifact size in bytes.
    #[serde(with = "decimal")]
    pub size_bytes: u64,
    /// Declared non-zero parameter count.
    #[serde(with = "decimal")]
    pub params: u64,
    /// Height of the reveal.
    pub revealed_at: Height,
}

/// A trainer's submission to a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmissionView {
    /// The trainer.
    pub trainer: AccountId,
    /// Its bond.
    #[serde(with = "decimal")]
    pub bond: u64,
    /// When it joined.
    pub joined_at: Height,
    /// Its model commitment.
    pub commitment: Option<Hash>,
    /// Where the commitment landed.
    pub committed_at: Option<PositionView>,
    /// Its reveal.
    pub reveal: Option<RevealView>,
}

impl SubmissionView {
    /// The view of `trainer`'s submission.
    pub fn new(trainer: AccountId, s: &Submission) -> SubmissionView {
        SubmissionView {
            trainer,
            bond: s.bond.0,
            joined_at: s.joined_at,
            commitment: s.commitment,
            committed_at: s.committed_at.map(|(height, index)| PositionView { height, index }),
            reveal: s.reveal.map(|r| RevealView {
                model_hash: r.model_hash,
                size_bytes: r.size_bytes,
                params: r.params,
                revealed_at: r.revealed_at,
            }),
        }
    }
}

/// A validator's scoring of a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScoreRecordView {
    /// The validator.
    pub validator: AccountId,
    /// Its verdict-vector commitment.
    pub commitment: Hash,
    /// Height of the commitment.
    pub committed_at: Height,
    /// Its verdicts, once revealed.
    pub verdicts: Option<Vec<EntryView>>,
}

impl ScoreRecordView {
    /// The view of `validator`'s record.
    pub fn new(validator: AccountId, r: &ScoreRecord) -> ScoreRecordView {
        ScoreRecordView {
            validator,
            commitment: r.commitment,
            committed_at: r.committed_at,
            verdicts: r.verdicts.as_ref().map(|v| v.iter().map(Into::into).collect()),
        }
    }
}

/// One payout of a finalized task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PayoutView {
    /// Who was paid.
    pub account: AccountId,
    /// `trainer`, `validator` or `creator` (the creator's refund).
    pub role: String,
    /// Reward paid (for trainers: without the returned bond).
    #[serde(with = "decimal")]
    pub amount: u64,
}

/// Every payout of a report, trainers first, then validators, then the creator's refund.
pub fn payouts(task: &Task, r: &FinalizationReport) -> Vec<PayoutView> {
    let trainers = r.trainers.iter().map(|t| PayoutView {
        account: t.account,
        role: "trainer".into(),
        amount: t.payout.0,
    });
    let validators = r.validators.iter().map(|v| PayoutView {
        account: v.account,
        role: "validator".into(),
        amount: v.payout.0,
    });
    let creator =
        PayoutView { account: task.creator, role: "creator".into(), amount: r.creator_refund.0 };
    trainers.chain(validators).chain(std::iter::once(creator)).collect()
}

/// `GET /tasks/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: TaskSummary,
    /// The task's windows, in blocks.
    pub windows: Windows,
    /// The last height of each window.
    pub deadlines: DeadlinesView,
    /// The spec.
    pub spec: SpecView,
    /// The validators' stakes when the task opened: who scores it and with what weight.
    pub stakes: Vec<StakeView>,
    /// Who attested to holding the sealed held-out file, and whether that is enough.
    pub attestation: AttestationView,
    /// The height at which the held-out key came on chain, if it did.
    pub key_revealed_at: Option<Height>,
    /// The models the submissions must beat besides the trivial baseline: the base model and
    /// the earlier champions on the same training file, each with its recorded score.
    pub references: Vec<ReferenceView>,
    /// Every joined trainer's submission, by account.
    pub submissions: Vec<SubmissionView>,
    /// Every validator's scoring record, by account.
    pub verdicts: Vec<ScoreRecordView>,
    /// The consensus verdict of each entry, once finalized.
    pub consensus: Vec<EntryView>,
    /// Every payout, once finalized.
    pub payouts: Vec<PayoutView>,
    /// The stored finalization report, once finalized.
    pub report: Option<ReportView>,
}

/// A task's attestations: the snapshot stake that attested to holding the sealed held-out file,
/// against what the task needs by its join deadline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestationView {
    /// The validators that attested, by account.
    pub validators: Vec<AccountId>,
    /// Their snapshot stake.
    #[serde(with = "decimal")]
    pub attested_stake: u64,
    /// The least stake that is more than 2/3 of the snapshot: `floor(2 × total / 3) + 1`.
    #[serde(with = "decimal")]
    pub needed_stake: u128,
    /// Whether the attested stake reaches it.
    pub quorum: bool,
}

impl AttestationView {
    /// The attestations of `task`.
    pub fn new(task: &Task) -> AttestationView {
        let total: u128 = task.stakes.values().map(|s| u128::from(*s)).sum();
        let needed = 2 * total / 3 + 1;
        AttestationView {
            validators: task.attested.iter().copied().collect(),
            attested_stake: task.attested_stake,
            needed_stake: needed,
            quorum: task.attestation_quorum(),
        }
    }
}

/// One validator's stake in a task's snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StakeView {
    /// The validator.
    pub validator: AccountId,
    /// Its stake when the task opened.
    #[serde(with = "decimal")]
    pub stake: u64,
}

/// A model that existed before the task opened and is part of its baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReferenceView {
    /// Its verdict-vector subject: `base_model` or `champion:<model hash>`.
    pub subject: String,
    /// sha256 of its artifact.
    pub model_hash: Hash,
    /// Its non-zero parameter count.
    #[serde(with = "decimal")]
    pub params: u64,
    /// Its effective score when it became champion, in ppm (the floor if it cannot be scored).
    pub recorded_ppm: u32,
}

impl ReferenceView {
    /// The task's base model and earlier champions, in verdict-vector order.
    pub fn of(task: &Task) -> Vec<ReferenceView> {
        let view = |s: Subject, r: &consensus::state::ReferenceModel| ReferenceView {
            subject: subject(&s),
            model_hash: r.model_hash,
            params: r.params,
            recorded_ppm: r.recorded_ppm,
        };
        task.base
            .iter()
            .map(|b| view(Subject::BaseModel, b))
            .chain(task.champions.iter().map(|c| view(Subject::Champion(c.model_hash), c)))
            .collect()
    }
}

/// A transaction's body, by kind, with amounts as strings. Untagged: [`TxView::kind`] names the
/// kind, and the variants are listed so that each reads back as itself (one with more fields
/// before one whose fields it includes).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TxBodyView {
    /// `create_task`.
    CreateTask {
        /// The task's name.
        name: String,
        /// The escrow.
        #[serde(with = "decimal")]
        reward: u64,
        /// The spec.
        spec: Box<SpecView>,
    },
    /// `reveal_model`.
    RevealModel {
        /// The task.
        task: TaskId,
        /// sha256 of the artifact.
        model_hash: Hash,
        /// Artifact size in bytes.
        #[serde(with = "decimal")]
        size_bytes: u64,
        /// Non-zero parameter count.
        #[serde(with = "decimal")]
        params: u64,
    },
    /// `evidence`.
    Evidence {
        /// The equivocating validator.
        validator: AccountId,
        /// The height of the conflicting votes.
        height: Height,
        /// Their round.
        round: u32,
        /// `prevote` or `precommit`.
        vote: String,
    },
    /// `transfer`.
    Transfer {
        /// The recipient.
        to: AccountId,
        /// How much.
        #[serde(with = "decimal")]
        amount: u64,
    },
    /// `reveal_heldout_key`: public once on chain, so anyone can open the sealed file.
    RevealHeldoutKey {
        /// The task.
        task: TaskId,
        /// The key.
        key: Hash,
    },
    /// `commit_model` and `commit_scores`.
    Commit {
        /// The task.
        task: TaskId,
        /// The commitment.
        commitment: Hash,
    },
    /// `reveal_scores`.
    RevealScores {
        /// The task.
        task: TaskId,
        /// The verdicts.
        verdicts: Vec<EntryView>,
    },
    /// `join_task` and `attest_heldout`.
    Task {
        /// The task.
        task: TaskId,
    },
}

impl From<&TxKind> for TxBodyView {
    fn from(k: &TxKind) -> Self {
        match k {
            TxKind::Transfer { to, amount: a } => TxBodyView::Transfer { to: *to, amount: a.0 },
            TxKind::CreateTask { spec, reward } => TxBodyView::CreateTask {
                name: spec.name.clone(),
                reward: reward.0,
                spec: Box::new(spec.as_ref().into()),
            },
            TxKind::JoinTask { task } | TxKind::AttestHeldout { task } => {
                TxBodyView::Task { task: *task }
            }
            TxKind::RevealHeldoutKey { task, key } => {
                TxBodyView::RevealHeldoutKey { task: *task, key: key.0 }
            }
            TxKind::CommitModel { task, commitment }
            | TxKind::CommitScores { task, commitment } => {
                TxBodyView::Commit { task: *task, commitment: *commitment }
            }
            TxKind::RevealModel { task, model_hash, size_bytes, params, .. } => {
                TxBodyView::RevealModel {
                    task: *task,
                    model_hash: *model_hash,
                    size_bytes: *size_bytes,
                    params: *params,
                }
            }
            TxKind::RevealScores { task, verdicts, .. } => TxBodyView::RevealScores {
                task: *task,
                verdicts: verdicts.iter().map(Into::into).collect(),
            },
            TxKind::Evidence { a, .. } => TxBodyView::Evidence {
                validator: a.validator,
                height: a.vote.height,
                round: a.vote.round.0,
                vote: match a.vote.kind {
                    VoteKind::Prevote => "prevote".into(),
                    VoteKind::Precommit => "precommit".into(),
                },
            },
        }
    }
}

/// `GET /txs/{hash}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxView {
    /// The tx hash.
    pub hash: Hash,
    /// The block it landed in.
    pub height: Height,
    /// Its position in the block.
    pub index: u32,
    /// The block's hash.
    pub block_hash: Hash,
    /// The signer.
    pub signer: AccountId,
    /// The signer's nonce.
    pub nonce: u64,
    /// What it does: `transfer`, `create_task`, `join_task`, `commit_model`, `reveal_model`,
    /// `commit_scores`, `reveal_scores` or `evidence`.
    pub kind: String,
    /// The kind's fields.
    pub body: TxBodyView,
}

impl TxView {
    /// The view of `tx`, found at `index` of `block`.
    pub fn new(tx: &SignedTx, block: &Block, index: u32) -> TxView {
        TxView {
            hash: tx.hash(),
            height: block.height(),
            index,
            block_hash: block.hash(),
            signer: tx.signer,
            nonce: tx.tx.nonce.0,
            kind: tx.tx.kind.name().into(),
            body: (&tx.tx.kind).into(),
        }
    }
}

/// A line of `GET /blocks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockSummary {
    /// Its height.
    pub height: Height,
    /// Its hash.
    pub hash: Hash,
    /// Its header time, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Its proposer.
    pub proposer: AccountId,
    /// How many transactions it holds.
    pub tx_count: usize,
}

impl From<&Block> for BlockSummary {
    fn from(b: &Block) -> Self {
        BlockSummary {
            height: b.height(),
            hash: b.hash(),
            time_ms: b.header.time_ms,
            proposer: b.header.proposer,
            tx_count: b.txs.len(),
        }
    }
}

/// The certificate that committed a block.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitView {
    /// The round it was committed in.
    pub round: u32,
    /// The validators whose precommits it holds.
    pub signers: Vec<AccountId>,
}

impl From<&CommitCertificate> for CommitView {
    fn from(c: &CommitCertificate) -> Self {
        CommitView { round: c.round.0, signers: c.signatures.iter().map(|s| s.validator).collect() }
    }
}

/// `GET /blocks/{height}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: BlockSummary,
    /// The previous block's hash (the genesis hash at height 1).
    pub prev_hash: Hash,
    /// The state root after the previous block (the header's).
    pub state_root: Hash,
    /// The root of its transactions.
    pub tx_root: Hash,
    /// The hash of the validator set that signed it.
    pub validators_hash: Hash,
    /// The hash of the previous block's commit certificate.
    pub last_commit_hash: Hash,
    /// Its transactions' hashes, in order.
    pub txs: Vec<Hash>,
    /// The certificate that committed it, when stored.
    pub commit: Option<CommitView>,
}

impl BlockDetail {
    /// The view of `block` and its certificate.
    pub fn new(block: &Block, cert: Option<&CommitCertificate>) -> BlockDetail {
        let h = &block.header;
        BlockDetail {
            summary: block.into(),
            prev_hash: h.prev_hash,
            state_root: h.state_root,
            tx_root: h.tx_root,
            validators_hash: h.validators_hash,
            last_commit_hash: h.last_commit_hash,
            txs: block.txs.iter().map(SignedTx::hash).collect(),
            commit: cert.map(Into::into),
        }
    }
}
