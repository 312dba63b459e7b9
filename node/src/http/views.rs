//! The JSON shapes the API answers with, built from ledger types.
//!
//! Amounts (balances, stakes, voting power, rewards, bonds, payouts) and the counts a task
//! creator or trainer chooses freely (parameter counts, artifact sizes) are JSON strings: a u64
//! does not fit a JavaScript number. Heights, nonces, times in ms, ppm scores and small counts are
//! numbers. Ids and hashes are lowercase hex.

use consensus::block::Block;
use consensus::finalize::{
    Champion, EntryReport, FinalizationReport, ForfeitReason, Outcome, TrainerReport,
    ValidatorReport,
};
use consensus::state::{Phase, ScoreRecord, Submission, Task};
use consensus::task::{Dtype, Preprocessing, TaskKind, TaskSpec, Windows};
use consensus::tx::{SignedTx, TxKind};
use consensus::types::{AccountId, Amount, Hash, Height, TaskId};
use consensus::verdict::{RejectReason, Subject, Verdict, VerdictEntry};
use consensus::vote::{CommitCertificate, VoteKind};
use serde::Serialize;

/// An amount (or any u64 that may exceed 2^53) as a decimal string.
pub fn amount(a: Amount) -> String {
    a.0.to_string()
}

/// A u64 as a decimal string.
pub fn big(n: u64) -> String {
    n.to_string()
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

/// One verdict, flattened: `verdict` is `scored`, `unavailable` or `rejected`.
#[derive(Clone, Debug, Serialize)]
pub struct VerdictView {
    /// `scored`, `unavailable` or `rejected`.
    pub verdict: &'static str,
    /// The raw score in ppm, when scored.
    pub score_ppm: Option<u32>,
    /// Why it was rejected, when rejected.
    pub reason: Option<RejectReason>,
    /// The rejection reason in words.
    pub reason_text: Option<&'static str>,
}

impl From<&Verdict> for VerdictView {
    fn from(v: &Verdict) -> Self {
        match v {
            Verdict::Scored { score_ppm } => VerdictView {
                verdict: "scored",
                score_ppm: Some(score_ppm.0),
                reason: None,
                reason_text: None,
            },
            Verdict::Unavailable => VerdictView {
                verdict: "unavailable",
                score_ppm: None,
                reason: None,
                reason_text: None,
            },
            Verdict::Rejected { reason } => VerdictView {
                verdict: "rejected",
                score_ppm: None,
                reason: Some(*reason),
                reason_text: Some(reason.describe()),
            },
        }
    }
}

/// One entry of a verdict vector, or of the consensus.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct ForfeitView {
    /// `not_revealed`, `rejected` or `unavailable`.
    pub reason: ForfeitReason,
    /// The reason in words.
    pub text: &'static str,
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
        ForfeitView { reason: *f, text }
    }
}

/// A trainer's line of a finalization report.
#[derive(Clone, Debug, Serialize)]
pub struct TrainerReportView {
    /// The trainer.
    pub account: AccountId,
    /// Its consensus verdict, if it revealed and the task reached quorum.
    pub consensus: Option<VerdictView>,
    /// Its revealed parameter count.
    pub params: Option<String>,
    /// Score lost to the efficiency rule, in ppm.
    pub penalty_ppm: u32,
    /// Consensus score minus penalty, in ppm.
    pub effective_ppm: u32,
    /// Why it lost its bond.
    pub forfeit: Option<ForfeitView>,
    /// Bond returned.
    pub bond_refund: String,
    /// Bond burned.
    pub bond_forfeit: String,
    /// Entry fee returned (on a cancellation or a withheld key; otherwise it burned).
    pub entry_fee_refund: String,
    /// Reward paid: the whole trainer share for the champion, nothing for anyone else.
    pub payout: String,
    /// Rank among the submissions that beat the bar (1 is the champion).
    pub rank: Option<u32>,
}

impl From<&TrainerReport> for TrainerReportView {
    fn from(t: &TrainerReport) -> Self {
        TrainerReportView {
            account: t.account,
            consensus: t.consensus.as_ref().map(Into::into),
            params: t.params.map(big),
            penalty_ppm: t.penalty_ppm,
            effective_ppm: t.effective_ppm,
            forfeit: t.forfeit.as_ref().map(Into::into),
            bond_refund: amount(t.bond_refund),
            bond_forfeit: amount(t.bond_forfeit),
            entry_fee_refund: amount(t.entry_fee_refund),
            payout: amount(t.payout),
            rank: t.rank,
        }
    }
}

/// A validator's line of a finalization report.
#[derive(Clone, Debug, Serialize)]
pub struct ValidatorReportView {
    /// The validator.
    pub account: AccountId,
    /// Its stake in the task's snapshot (taken when the task opened).
    pub stake: String,
    /// Whether it revealed a verdict vector.
    pub revealed: bool,
    /// On how many entries it agreed with the consensus.
    pub agreed_entries: u32,
    /// Reward paid.
    pub payout: String,
}

impl From<&ValidatorReport> for ValidatorReportView {
    fn from(v: &ValidatorReport) -> Self {
        ValidatorReportView {
            account: v.account,
            stake: big(v.stake),
            revealed: v.revealed,
            agreed_entries: v.agreed_entries,
            payout: amount(v.payout),
        }
    }
}

/// A task's champion.
#[derive(Clone, Debug, Serialize)]
pub struct ChampionView {
    /// Its trainer.
    pub trainer: AccountId,
    /// sha256 of its artifact.
    pub model_hash: Hash,
    /// Its non-zero parameter count.
    pub params: String,
    /// Its effective score, in ppm.
    pub effective_ppm: u32,
}

impl From<&Champion> for ChampionView {
    fn from(c: &Champion) -> Self {
        ChampionView {
            trainer: c.trainer,
            model_hash: c.model_hash,
            params: big(c.params),
            effective_ppm: c.effective_ppm,
        }
    }
}

/// A stored finalization report.
#[derive(Clone, Debug, Serialize)]
pub struct ReportView {
    /// `finalized`, `quorum_failed`, `cancelled` (too little stake attested to holding the
    /// sealed held-out file by the join deadline) or `key_withheld` (the creator did not reveal
    /// the held-out key by the key deadline).
    pub outcome: Outcome,
    /// Stake of the validators that attested to holding the sealed held-out file.
    pub attested_stake: String,
    /// The height at which the held-out key came on chain, if it did.
    pub key_revealed_at: Option<Height>,
    /// Burned out of the escrow by a cancellation.
    pub cancellation_fee: String,
    /// Stake of the validators that revealed.
    pub revealed_stake: String,
    /// Stake of every validator.
    pub total_stake: String,
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
    pub creator_refund: String,
    /// Burned.
    pub burned: String,
    /// The champion, if any submission beat the baseline.
    pub champion: Option<ChampionView>,
}

impl From<&FinalizationReport> for ReportView {
    fn from(r: &FinalizationReport) -> Self {
        ReportView {
            outcome: r.outcome,
            attested_stake: big(r.attested_stake),
            key_revealed_at: r.key_revealed_at,
            cancellation_fee: amount(r.cancellation_fee),
            revealed_stake: big(r.revealed_stake),
            total_stake: big(r.total_stake),
            baseline_ppm: r.baseline_ppm,
            min_improvement_ppm: r.min_improvement_ppm,
            entries: r.entries.iter().map(Into::into).collect(),
            trainers: r.trainers.iter().map(Into::into).collect(),
            validators: r.validators.iter().map(Into::into).collect(),
            creator_refund: amount(r.creator_refund),
            burned: amount(r.burned),
            champion: r.champion.as_ref().map(Into::into),
        }
    }
}

/// A task's deadlines: the last height of each window.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
    pub heldout_examples: String,
    /// Most non-zero parameters.
    pub max_params: String,
    /// Largest artifact, in bytes.
    pub max_artifact_bytes: String,
    /// Allowed dtypes.
    pub dtypes: Vec<Dtype>,
    /// Parameters not penalized by the efficiency rule.
    pub reference_params: String,
    /// Score lost per doubling above the reference, in ppm.
    pub penalty_ppm_per_doubling: u32,
    /// A trainer's bond.
    pub bond: String,
    /// What each trainer burns to join.
    pub entry_fee: String,
    /// Most trainers.
    pub max_trainers: u32,
    /// How far the champion must beat the baseline, in ppm.
    pub min_improvement_ppm: u32,
    /// The base model to fine-tune from.
    pub base_model: Option<BaseModelView>,
}

/// A task's base model.
#[derive(Clone, Debug, Serialize)]
pub struct BaseModelView {
    /// sha256 of the champion's artifact.
    pub model_hash: Hash,
    /// Its non-zero parameter count.
    pub params: String,
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
            heldout_examples: big(s.dataset.heldout_examples),
            max_params: big(s.limits.max_params),
            max_artifact_bytes: big(s.limits.max_artifact_bytes),
            dtypes: s.limits.dtypes.clone(),
            reference_params: big(s.efficiency.reference_params),
            penalty_ppm_per_doubling: s.efficiency.penalty_ppm_per_doubling,
            bond: amount(s.bond),
            entry_fee: amount(s.entry_fee),
            max_trainers: s.max_trainers,
            min_improvement_ppm: s.min_improvement_ppm,
            base_model: s
                .base_model
                .as_ref()
                .map(|b| BaseModelView { model_hash: b.model_hash, params: big(b.params) }),
        }
    }
}

/// A line of `GET /tasks`.
#[derive(Clone, Debug, Serialize)]
pub struct TaskSummary {
    /// The task id.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// `classification` or `char_lm`.
    pub kind: &'static str,
    /// Its phase for the next block.
    pub phase: Phase,
    /// Who opened it.
    pub creator: AccountId,
    /// The escrow.
    pub reward: String,
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
            kind: kind_name(&task.spec.kind),
            phase: phase_now(task, tip),
            creator: task.creator,
            reward: amount(task.reward),
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
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PositionView {
    /// The block.
    pub height: Height,
    /// Position in the block.
    pub index: u32,
}

/// A trainer's revealed model.
#[derive(Clone, Debug, Serialize)]
pub struct RevealView {
    /// sha256 of the artifact.
    pub model_hash: Hash,
    /// Artifact size in bytes.
    pub size_bytes: String,
    /// Declared non-zero parameter count.
    pub params: String,
    /// Height of the reveal.
    pub revealed_at: Height,
}

/// A trainer's submission to a task.
#[derive(Clone, Debug, Serialize)]
pub struct SubmissionView {
    /// The trainer.
    pub trainer: AccountId,
    /// Its bond.
    pub bond: String,
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
            bond: amount(s.bond),
            joined_at: s.joined_at,
            commitment: s.commitment,
            committed_at: s.committed_at.map(|(height, index)| PositionView { height, index }),
            reveal: s.reveal.map(|r| RevealView {
                model_hash: r.model_hash,
                size_bytes: big(r.size_bytes),
                params: big(r.params),
                revealed_at: r.revealed_at,
            }),
        }
    }
}

/// A validator's scoring of a task.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct PayoutView {
    /// Who was paid.
    pub account: AccountId,
    /// `trainer`, `validator` or `creator` (the creator's refund).
    pub role: &'static str,
    /// Reward paid (for trainers: without the returned bond).
    pub amount: String,
}

/// Every payout of a report, trainers first, then validators, then the creator's refund.
pub fn payouts(task: &Task, r: &FinalizationReport) -> Vec<PayoutView> {
    let trainers = r.trainers.iter().map(|t| PayoutView {
        account: t.account,
        role: "trainer",
        amount: amount(t.payout),
    });
    let validators = r.validators.iter().map(|v| PayoutView {
        account: v.account,
        role: "validator",
        amount: amount(v.payout),
    });
    let creator =
        PayoutView { account: task.creator, role: "creator", amount: amount(r.creator_refund) };
    trainers.chain(validators).chain(std::iter::once(creator)).collect()
}

/// `GET /tasks/{id}`.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct AttestationView {
    /// The validators that attested, by account.
    pub validators: Vec<AccountId>,
    /// Their snapshot stake.
    pub attested_stake: String,
    /// The least stake that is more than 2/3 of the snapshot: `floor(2 × total / 3) + 1`.
    pub needed_stake: String,
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
            attested_stake: big(task.attested_stake),
            needed_stake: needed.to_string(),
            quorum: task.attestation_quorum(),
        }
    }
}

/// One validator's stake in a task's snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct StakeView {
    /// The validator.
    pub validator: AccountId,
    /// Its stake when the task opened.
    pub stake: String,
}

/// A model that existed before the task opened and is part of its baseline.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceView {
    /// Its verdict-vector subject: `base_model` or `champion:<model hash>`.
    pub subject: String,
    /// sha256 of its artifact.
    pub model_hash: Hash,
    /// Its non-zero parameter count.
    pub params: String,
    /// Its effective score when it became champion, in ppm (the floor if it cannot be scored).
    pub recorded_ppm: u32,
}

impl ReferenceView {
    /// The task's base model and earlier champions, in verdict-vector order.
    pub fn of(task: &Task) -> Vec<ReferenceView> {
        let view = |s: Subject, r: &consensus::state::ReferenceModel| ReferenceView {
            subject: subject(&s),
            model_hash: r.model_hash,
            params: big(r.params),
            recorded_ppm: r.recorded_ppm,
        };
        task.base
            .iter()
            .map(|b| view(Subject::BaseModel, b))
            .chain(task.champions.iter().map(|c| view(Subject::Champion(c.model_hash), c)))
            .collect()
    }
}

/// A transaction's body, by kind, with amounts as strings.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum TxBodyView {
    /// `transfer`.
    Transfer {
        /// The recipient.
        to: AccountId,
        /// How much.
        amount: String,
    },
    /// `create_task`.
    CreateTask {
        /// The task's name.
        name: String,
        /// The escrow.
        reward: String,
        /// The spec.
        spec: Box<SpecView>,
    },
    /// `join_task`.
    JoinTask {
        /// The task.
        task: TaskId,
    },
    /// `attest_heldout`.
    AttestHeldout {
        /// The task.
        task: TaskId,
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
    /// `reveal_model`.
    RevealModel {
        /// The task.
        task: TaskId,
        /// sha256 of the artifact.
        model_hash: Hash,
        /// Artifact size in bytes.
        size_bytes: String,
        /// Non-zero parameter count.
        params: String,
    },
    /// `reveal_scores`.
    RevealScores {
        /// The task.
        task: TaskId,
        /// The verdicts.
        verdicts: Vec<EntryView>,
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
        vote: &'static str,
    },
}

impl From<&TxKind> for TxBodyView {
    fn from(k: &TxKind) -> Self {
        match k {
            TxKind::Transfer { to, amount: a } => {
                TxBodyView::Transfer { to: *to, amount: amount(*a) }
            }
            TxKind::CreateTask { spec, reward } => TxBodyView::CreateTask {
                name: spec.name.clone(),
                reward: amount(*reward),
                spec: Box::new(spec.as_ref().into()),
            },
            TxKind::JoinTask { task } => TxBodyView::JoinTask { task: *task },
            TxKind::AttestHeldout { task } => TxBodyView::AttestHeldout { task: *task },
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
                    size_bytes: big(*size_bytes),
                    params: big(*params),
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
                    VoteKind::Prevote => "prevote",
                    VoteKind::Precommit => "precommit",
                },
            },
        }
    }
}

/// `GET /txs/{hash}`.
#[derive(Clone, Debug, Serialize)]
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
    pub kind: &'static str,
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
            kind: tx.tx.kind.name(),
            body: (&tx.tx.kind).into(),
        }
    }
}

/// A line of `GET /blocks`.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
