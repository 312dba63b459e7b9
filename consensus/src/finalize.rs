//! Finalization: how a task's escrow and bonds are paid out, in one pure function.
//!
//! See [`finalize`] for the formulas. Everything is integer arithmetic (ppm scores, base-unit
//! amounts, u128 intermediates, Q16 logarithms); the function reads no state, clock or randomness,
//! so every node computes the same report from the same inputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fixed::{Q16_ONE, log2_q16, mul_div};
use crate::task::Efficiency;
use crate::types::{AccountId, Amount, Height, ModelHash, ScorePpm};
use crate::validators::is_quorum;
use crate::verdict::{Subject, Verdict, VerdictEntry};

/// A joined trainer, as finalization sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainerInput {
    /// The trainer.
    pub account: AccountId,
    /// The bond it locked.
    pub bond: Amount,
    /// The entry fee it paid, held with the task until finalization: burned, except when the
    /// task is cancelled or its key is withheld.
    pub entry_fee: Amount,
    /// Where its commitment landed: block height, then position in the block.
    pub committed_at: Option<(Height, u32)>,
    /// What it revealed, if it did.
    pub reveal: Option<RevealInput>,
}

/// A trainer's reveal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevealInput {
    /// sha256 of the artifact.
    pub model_hash: ModelHash,
    /// Its declared non-zero parameter count (validators reject a model whose real count differs).
    pub params: u64,
}

/// A validator, as finalization sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatorInput<'a> {
    /// The validator.
    pub account: AccountId,
    /// Its stake as snapshotted when the task opened (a later slash does not change it).
    pub stake: u64,
    /// Its revealed verdict vector, already checked against the layout; `None` if it did not
    /// reveal.
    pub verdicts: Option<&'a [VerdictEntry]>,
}

/// A model that already exists and that submissions must beat: the base model or an earlier
/// champion on the same public training file, recorded when the task opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceInput {
    /// Its entry in the verdict vector ([`Subject::BaseModel`] or [`Subject::Champion`]).
    pub subject: Subject,
    /// Its non-zero parameter count, as recorded when it became champion.
    pub params: u64,
    /// Its effective score when it became champion, in ppm: the floor when validators cannot
    /// score it now.
    pub recorded_ppm: u32,
}

/// Everything finalization reads.
#[derive(Clone, Copy, Debug)]
pub struct FinalizeInput<'a> {
    /// The task's escrow.
    pub escrow: Amount,
    /// The task's efficiency rule.
    pub efficiency: &'a Efficiency,
    /// The models that already exist, in verdict-vector order (base model first).
    pub references: &'a [ReferenceInput],
    /// Every joined trainer.
    pub trainers: &'a [TrainerInput],
    /// Every validator of the task's stake snapshot.
    pub validators: &'a [ValidatorInput<'a>],
    /// Share of the escrow for trainers, in ppm.
    pub trainer_share_ppm: u32,
    /// Agreement tolerance for scores, in ppm.
    pub agreement_tolerance_ppm: u32,
    /// How far the champion must beat the baseline, in ppm (strictly more than this).
    pub min_improvement_ppm: u32,
    /// Snapshot stake of the validators that attested to holding the sealed held-out file by
    /// the join deadline.
    pub attested_stake: u64,
    /// Height of the block that put the held-out key on chain, if it is there.
    pub key_revealed_at: Option<Height>,
    /// Share of the escrow burned on a cancellation, in ppm (genesis `cancellation_fee_ppm`).
    pub cancellation_fee_ppm: u32,
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Validators with more than 2/3 of the stake revealed; rewards were paid.
    Finalized,
    /// Too little stake revealed: bonds back to the trainers; the escrow burns once any model
    /// was revealed (the creator already has the models), and returns to the creator otherwise.
    QuorumFailed,
    /// Cancelled at the join deadline: validators holding more than 2/3 of the stake did not
    /// attest to holding the sealed held-out file. The escrow returns to the creator less the
    /// cancellation fee (burned); bonds and entry fees return.
    Cancelled,
    /// The creator did not reveal the held-out key by the key deadline: the escrow burns (the
    /// creator has seen the commitments and may not gain by walking away); bonds and entry fees
    /// return; no model was ever revealed.
    KeyWithheld,
}

/// Why a trainer lost its bond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForfeitReason {
    /// It joined but never revealed a model.
    NotRevealed,
    /// The consensus verdict on its model is Rejected.
    Rejected,
    /// The consensus verdict on its model is Unavailable.
    Unavailable,
}

/// The consensus on one verdict-vector entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryReport {
    /// What the entry is about.
    pub subject: Subject,
    /// The lower stake-weighted median verdict.
    pub consensus: Verdict,
}

/// One trainer's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerReport {
    /// The trainer.
    pub account: AccountId,
    /// Its consensus verdict, if it revealed and the task reached quorum.
    pub consensus: Option<Verdict>,
    /// Its revealed parameter count.
    pub params: Option<u64>,
    /// Score lost to the efficiency rule, in ppm.
    pub penalty_ppm: u32,
    /// `max(0, consensus score − penalty)`, in ppm.
    pub effective_ppm: u32,
    /// Why it lost its bond, if it did.
    pub forfeit: Option<ForfeitReason>,
    /// Bond returned.
    pub bond_refund: Amount,
    /// Bond burned.
    pub bond_forfeit: Amount,
    /// Entry fee returned (on a cancellation or a withheld key; otherwise it burns).
    pub entry_fee_refund: Amount,
    /// Reward paid: the whole trainer share for the champion, nothing for anyone else.
    pub payout: Amount,
    /// 1-based rank among the submissions that beat the baseline by more than the task's
    /// `min_improvement_ppm` (rank 1 is the champion).
    pub rank: Option<u32>,
}

/// One validator's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorReport {
    /// The validator.
    pub account: AccountId,
    /// Its stake in the task's snapshot.
    pub stake: u64,
    /// Whether it revealed a verdict vector.
    pub revealed: bool,
    /// On how many entries its verdict matched the consensus.
    pub agreed_entries: u32,
    /// Reward paid.
    pub payout: Amount,
}

/// The task's champion: the best effective score above the bar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Champion {
    /// Its trainer.
    pub trainer: AccountId,
    /// sha256 of its artifact.
    pub model_hash: ModelHash,
    /// Its non-zero parameter count.
    pub params: u64,
    /// Its effective score, in ppm.
    pub effective_ppm: u32,
}

/// What finalization decided, stored with the task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizationReport {
    /// How the task ended.
    pub outcome: Outcome,
    /// Snapshot stake that attested to holding the sealed held-out file by the join deadline;
    /// the task needs `3 × attested_stake > 2 × total_stake`.
    pub attested_stake: u64,
    /// Height at which the held-out key came on chain, if it did.
    pub key_revealed_at: Option<Height>,
    /// Burned out of the escrow by a cancellation (0 otherwise; also counted in `burned`).
    pub cancellation_fee: Amount,
    /// Snapshot stake of the validators that revealed.
    pub revealed_stake: u64,
    /// Stake of every validator of the snapshot.
    pub total_stake: u64,
    /// The score to beat, in ppm: the best of the trivial baseline and the existing models.
    pub baseline_ppm: u32,
    /// The champion must score more than `baseline_ppm` plus this, in ppm.
    pub min_improvement_ppm: u32,
    /// The consensus on each entry, in layout order (empty on quorum failure).
    pub entries: Vec<EntryReport>,
    /// Every joined trainer, by account.
    pub trainers: Vec<TrainerReport>,
    /// Every validator, by account.
    pub validators: Vec<ValidatorReport>,
    /// Returned to the task's creator: never anything once a model was revealed.
    pub creator_refund: Amount,
    /// Burned: forfeited bonds, entry fees, unearned shares, integer remainders and any
    /// cancellation fee.
    pub burned: Amount,
    /// The champion, if a submission beat the bar.
    pub champion: Option<Champion>,
}

/// Score lost by a model of `params` non-zero parameters:
/// `penalty_ppm_per_doubling × max(0, log2_q16(params) − log2_q16(reference_params)) / 2^16`.
pub fn efficiency_penalty(efficiency: &Efficiency, params: u64) -> u32 {
    let excess = log2_q16(params).saturating_sub(log2_q16(efficiency.reference_params));
    let penalty =
        u128::from(efficiency.penalty_ppm_per_doubling) * u128::from(excess) / u128::from(Q16_ONE);
    u32::try_from(penalty).unwrap_or(u32::MAX)
}

/// `max(0, score − penalty(params))`.
pub fn effective_score(efficiency: &Efficiency, score: ScorePpm, params: u64) -> u32 {
    score.0.saturating_sub(efficiency_penalty(efficiency, params))
}

/// The lower stake-weighted median of `(verdict, stake)` pairs: the smallest verdict `v` (by
/// [`Verdict::rank`], then reject reason) such that the stake reporting at most `v` is at least
/// half of the total stake given (`2 × stake(≤ v) ≥ R`), so an exact half can never push a
/// verdict up. `None` when no stake is given.
pub fn lower_weighted_median(mut votes: Vec<(Verdict, u64)>) -> Option<Verdict> {
    let key = |v: &Verdict| match v {
        Verdict::Rejected { reason } => (v.rank(), Some(*reason)),
        _ => (v.rank(), None),
    };
    votes.sort_by_key(|(v, _)| key(v));
    let total: u128 = votes.iter().map(|(_, s)| u128::from(*s)).sum();
    if total == 0 {
        return None;
    }
    let mut below = 0u128;
    for (verdict, stake) in votes {
        below += u128::from(stake);
        if 2 * below >= total {
            return Some(verdict);
        }
    }
    None
}

/// Whether a validator's verdict agrees with the consensus: same kind and, for scores, within
/// `tolerance_ppm`.
pub fn agrees(verdict: &Verdict, consensus: &Verdict, tolerance_ppm: u32) -> bool {
    match (verdict, consensus) {
        (Verdict::Rejected { .. }, Verdict::Rejected { .. }) => true,
        (Verdict::Unavailable, Verdict::Unavailable) => true,
        (Verdict::Scored { score_ppm: a, .. }, Verdict::Scored { score_ppm: b, .. }) => {
            a.0.abs_diff(b.0) <= tolerance_ppm
        }
        _ => false,
    }
}

fn to_amount(x: u128) -> Amount {
    Amount(u64::try_from(x).expect("payouts never exceed the escrow and bonds, which fit in u64"))
}

/// A report for a task that ended before any scoring counted (cancelled, key withheld, quorum
/// failed): no entries, no champion, no validator earns; the caller sets the refunds and burns.
fn unscored_report(
    input: &FinalizeInput<'_>,
    outcome: Outcome,
    revealed_stake: u64,
    total_stake: u64,
    trainers: Vec<TrainerReport>,
) -> FinalizationReport {
    FinalizationReport {
        outcome,
        attested_stake: input.attested_stake,
        key_revealed_at: input.key_revealed_at,
        cancellation_fee: Amount::ZERO,
        revealed_stake,
        total_stake,
        baseline_ppm: 0,
        min_improvement_ppm: input.min_improvement_ppm,
        entries: vec![],
        trainers,
        validators: validator_reports(input, &[], 0),
        creator_refund: Amount::ZERO,
        burned: Amount::ZERO,
        champion: None,
    }
}

/// Finalizes a task: at its join deadline if it is cancelled, at its key deadline if the key
/// was withheld, otherwise at its score deadline.
///
/// **Windows close when nobody is left to act** (`state::Progress`). The join window never
/// closes early (closing it when the task fills would let whoever fills it shut everyone else
/// out). Every later window closes in the block where the last party that may act in it has
/// acted: the commit window, once the join window is over, where every joined trainer has
/// committed; the key window where the creator's key lands; the reveal window where every
/// committed trainer has revealed; the score commit window where every validator of the stake
/// snapshot has committed; the score reveal window, and with it the task, where every validator
/// that committed has revealed. Each later window then lasts at most its length from there, so
/// the deadlines are upper bounds, and the key and score deadlines above are these effective
/// ones. A window with one party yet to act runs to its deadline, so no one is ever cut off.
/// Closes are made by the transactions that complete a set (and at the join deadline), never by
/// scanning open tasks.
///
/// With `S` the total snapshot stake (stakes are snapshotted when the task opens, so a later
/// slash changes nothing here), `A` the snapshot stake of the validators that attested to
/// holding the sealed held-out file by the join deadline, `R` the snapshot stake of the
/// validators that revealed a verdict vector, and `F` the entry fees the trainers paid (held
/// with the task until now):
///
/// 0. **Attestation and key**: unless `3A > 2S`, the task is **Cancelled**: the creator gets
///    back `escrow − escrow × cancellation_fee_ppm / 1e6` (the fee burns), every bond and entry
///    fee returns. Otherwise, without the key on chain by the key deadline the task ends
///    **KeyWithheld**: the escrow burns, every bond and entry fee returns. No model can be
///    revealed on either path (a reveal needs the key); should one be, the creator gets nothing
///    and the escrow burns, as everywhere once models are public. On every other path `F`
///    burns.
/// 1. **Quorum**: unless `3R > 2S`, the task fails: every bond returns to its trainer, and the
///    escrow **burns** if any model was revealed (the creator already has the models, so nobody
///    may gain from withholding scores); with no model revealed it returns to the creator. This
///    holds while Byzantine stake is below 1/3, as for consensus; a coalition at or above 1/3 can
///    hold a task hostage by threatening to withhold (it gains nothing by doing so).
/// 2. **Consensus verdict** of each entry: the lower stake-weighted median of the revealed
///    verdicts ([`lower_weighted_median`]: the smallest `v` with `2 × stake(verdict ≤ v) ≥ R`,
///    ordering `Rejected < Unavailable < Scored(0) < … < Scored(1e6)`). A submission whose
///    consensus verdict is Rejected or Unavailable, and a joined trainer that never revealed,
///    forfeits its bond (burned); other bonds return. The **baseline** is the largest of the
///    trivial entry's consensus score and the effective score of every reference model (the
///    base model and earlier champions on the same training file), where a reference whose
///    consensus is not Scored counts with its recorded score.
/// 3. **Efficiency**: `penalty = penalty_ppm_per_doubling × max(0, log2(params) −
///    log2(reference_params))` with `log2` in Q16 fixed point ([`log2_q16`]), and `effective =
///    max(0, consensus_score − penalty)`.
/// 4. **Champion, winner takes all**: among the Scored submissions, the highest effective score;
///    on an exact tie fewer parameters, then the earliest commit (height, then position). It must
///    score more than `baseline + min_improvement_ppm`. The champion is paid the whole trainer
///    share `T = escrow × trainer_share_ppm / 1e6`. Without a champion, `T` **burns** if any
///    model was revealed, and returns to the creator otherwise. No margin between submissions
///    and no duplicate detection: a copy or a second account's variant cannot beat the original
///    and the best model alone takes everything, so splitting earns nothing.
/// 5. **Validators** share `V = escrow − T`: validator `i` earns `V × stake_i × agreed_i / (S ×
///    entries)` (exact, 256-bit intermediate: [`mul_div`]), where `agreed_i` counts the entries
///    on which its verdict agrees with the consensus ([`agrees`]). A validator that did not
///    reveal earns nothing. Dividing by `S`, not `R`, means censoring another validator's reveal
///    earns nothing.
/// 6. **Conservation**: payouts + refunds + burns = escrow + bonds + `F` exactly; what is not
///    paid (unearned validator shares, integer remainders, forfeited bonds, entry fees) burns.
pub fn finalize(input: &FinalizeInput<'_>) -> FinalizationReport {
    let escrow = u128::from(input.escrow.0);
    let bonds: u128 = input.trainers.iter().map(|t| u128::from(t.bond.0)).sum();
    let fees: u128 = input.trainers.iter().map(|t| u128::from(t.entry_fee.0)).sum();
    let inflow = escrow + bonds + fees;
    let total_stake = stake_sum(input.validators.iter());
    let revealed_stake = stake_sum(input.validators.iter().filter(|v| v.verdicts.is_some()));
    let mut trainers: Vec<&TrainerInput> = input.trainers.iter().collect();
    trainers.sort_by_key(|t| t.account);
    let any_revealed = trainers.iter().any(|t| t.reveal.is_some());

    // 0. Attestation and key.
    let attested = is_quorum(input.attested_stake, total_stake);
    if !attested || input.key_revealed_at.is_none() {
        let (outcome, fee) = if attested {
            (Outcome::KeyWithheld, escrow)
        } else {
            let ppm = u128::from(input.cancellation_fee_ppm.min(1_000_000));
            (Outcome::Cancelled, escrow * ppm / 1_000_000)
        };
        let creator_refund = if any_revealed { 0 } else { escrow - fee };
        let refunds = trainers
            .iter()
            .map(|t| TrainerReport {
                entry_fee_refund: t.entry_fee,
                bond_refund: t.bond,
                ..unscored(t)
            })
            .collect();
        let report = FinalizationReport {
            cancellation_fee: to_amount(if attested { 0 } else { fee }),
            creator_refund: to_amount(creator_refund),
            burned: to_amount(escrow - creator_refund),
            ..unscored_report(input, outcome, revealed_stake, total_stake, refunds)
        };
        check_conservation(&report, inflow);
        return report;
    }

    if !is_quorum(revealed_stake, total_stake) {
        let (creator_refund, burned) =
            if any_revealed { (Amount::ZERO, input.escrow) } else { (input.escrow, Amount::ZERO) };
        let refunds =
            trainers.iter().map(|t| TrainerReport { bond_refund: t.bond, ..unscored(t) }).collect();
        let report = FinalizationReport {
            creator_refund,
            burned: to_amount(u128::from(burned.0) + fees),
            ..unscored_report(input, Outcome::QuorumFailed, revealed_stake, total_stake, refunds)
        };
        check_conservation(&report, inflow);
        return report;
    }

    // 2. Consensus verdict per entry of the layout: baseline, references, revealed trainers.
    let layout: Vec<Subject> = std::iter::once(Subject::Baseline)
        .chain(input.references.iter().map(|r| r.subject))
        .chain(
            trainers.iter().filter(|t| t.reveal.is_some()).map(|t| Subject::Submission(t.account)),
        )
        .collect();
    let entries: Vec<EntryReport> = layout
        .iter()
        .enumerate()
        .map(|(j, subject)| {
            let votes = input
                .validators
                .iter()
                .filter_map(|v| v.verdicts.map(|vec| (vec[j].verdict, v.stake)))
                .collect();
            let consensus = lower_weighted_median(votes).expect("quorum means some stake revealed");
            EntryReport { subject: *subject, consensus }
        })
        .collect();
    let consensus_of = |subject: Subject| -> Option<Verdict> {
        entries.iter().find(|e| e.subject == subject).map(|e| e.consensus)
    };

    let trivial = entries[0].consensus.score().map_or(0, |s| s.0);
    let baseline = input
        .references
        .iter()
        .map(|r| match consensus_of(r.subject).and_then(|v| v.score()) {
            Some(score) => effective_score(input.efficiency, score, r.params),
            None => r.recorded_ppm,
        })
        .fold(trivial, u32::max);

    // 3. Effective scores and forfeits.
    let mut reports: Vec<TrainerReport> = Vec::with_capacity(trainers.len());
    for t in &trainers {
        let mut report = unscored(t);
        match (t.reveal, consensus_of(Subject::Submission(t.account))) {
            (Some(reveal), Some(consensus)) => {
                report.consensus = Some(consensus);
                match consensus {
                    Verdict::Scored { score_ppm } => {
                        report.penalty_ppm = efficiency_penalty(input.efficiency, reveal.params);
                        report.effective_ppm = score_ppm.0.saturating_sub(report.penalty_ppm);
                    }
                    Verdict::Rejected { .. } => report.forfeit = Some(ForfeitReason::Rejected),
                    Verdict::Unavailable => report.forfeit = Some(ForfeitReason::Unavailable),
                }
            }
            _ => report.forfeit = Some(ForfeitReason::NotRevealed),
        }
        if report.forfeit.is_some() {
            report.bond_forfeit = t.bond;
        } else {
            report.bond_refund = t.bond;
        }
        reports.push(report);
    }

    // 4. The champion takes the whole trainer share.
    let trainer_pool = escrow * u128::from(input.trainer_share_ppm.min(1_000_000)) / 1_000_000;
    let bar = u64::from(baseline) + u64::from(input.min_improvement_ppm);
    let mut ranked: Vec<(u32, u64, (Height, u32), usize)> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.forfeit.is_none() && u64::from(r.effective_ppm) > bar)
        .map(|(i, r)| {
            let params = r.params.unwrap_or(u64::MAX);
            (r.effective_ppm, params, trainers[i].committed_at.unwrap_or_default(), i)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for (rank, (_, _, _, i)) in ranked.iter().enumerate() {
        reports[*i].rank = Some(u32::try_from(rank + 1).unwrap_or(u32::MAX));
    }
    let champion = ranked.first().map(|(effective, _, _, i)| {
        let reveal = trainers[*i].reveal.expect("ranked trainers revealed");
        reports[*i].payout = to_amount(trainer_pool);
        Champion {
            trainer: trainers[*i].account,
            model_hash: reveal.model_hash,
            params: reveal.params,
            effective_ppm: *effective,
        }
    });
    let (paid_trainers, creator_refund) = match (&champion, any_revealed) {
        (Some(_), _) => (trainer_pool, 0),
        (None, true) => (0, 0),
        (None, false) => (0, trainer_pool),
    };

    // 5. Validator payouts.
    let validator_pool = escrow - trainer_pool;
    let validators = validator_reports(input, &entries, validator_pool);
    let paid_validators: u128 = validators.iter().map(|v| u128::from(v.payout.0)).sum();

    let refunds: u128 = reports.iter().map(|r| u128::from(r.bond_refund.0)).sum();
    let burned = inflow - paid_trainers - paid_validators - creator_refund - refunds;
    let report = FinalizationReport {
        outcome: Outcome::Finalized,
        attested_stake: input.attested_stake,
        key_revealed_at: input.key_revealed_at,
        cancellation_fee: Amount::ZERO,
        revealed_stake,
        total_stake,
        baseline_ppm: baseline,
        min_improvement_ppm: input.min_improvement_ppm,
        entries,
        trainers: reports,
        validators,
        creator_refund: to_amount(creator_refund),
        burned: to_amount(burned),
        champion,
    };
    check_conservation(&report, inflow);
    report
}

/// A trainer's report before any verdict, refund or payout.
fn unscored(t: &TrainerInput) -> TrainerReport {
    TrainerReport {
        account: t.account,
        consensus: None,
        params: t.reveal.map(|r| r.params),
        penalty_ppm: 0,
        effective_ppm: 0,
        forfeit: None,
        bond_refund: Amount::ZERO,
        bond_forfeit: Amount::ZERO,
        entry_fee_refund: Amount::ZERO,
        payout: Amount::ZERO,
        rank: None,
    }
}

fn stake_sum<'a>(validators: impl Iterator<Item = &'a ValidatorInput<'a>>) -> u64 {
    let sum: u128 = validators.map(|v| u128::from(v.stake)).sum();
    u64::try_from(sum).expect("genesis bounds the total stake far below u64::MAX")
}

/// Step 6: agreement and payouts of every validator.
fn validator_reports(
    input: &FinalizeInput<'_>,
    entries: &[EntryReport],
    pool: u128,
) -> Vec<ValidatorReport> {
    let total_stake: u128 = input.validators.iter().map(|v| u128::from(v.stake)).sum();
    let n = entries.len() as u128;
    let mut by_account: BTreeMap<AccountId, ValidatorReport> = BTreeMap::new();
    for v in input.validators {
        let agreed = v.verdicts.map_or(0, |vec| {
            vec.iter()
                .zip(entries)
                .filter(|(mine, e)| {
                    agrees(&mine.verdict, &e.consensus, input.agreement_tolerance_ppm)
                })
                .count()
        });
        let agreed = u32::try_from(agreed).unwrap_or(u32::MAX);
        let weight = u128::from(v.stake) * u128::from(agreed);
        let payout =
            if n == 0 || total_stake == 0 { 0 } else { mul_div(pool, weight, total_stake * n) };
        by_account.insert(
            v.account,
            ValidatorReport {
                account: v.account,
                stake: v.stake,
                revealed: v.verdicts.is_some(),
                agreed_entries: agreed,
                payout: to_amount(payout),
            },
        );
    }
    by_account.into_values().collect()
}

fn check_conservation(report: &FinalizationReport, inflow: u128) {
    let to_trainers: u128 = report
        .trainers
        .iter()
        .map(|t| {
            u128::from(t.payout.0) + u128::from(t.bond_refund.0) + u128::from(t.entry_fee_refund.0)
        })
        .sum();
    let to_validators: u128 = report.validators.iter().map(|v| u128::from(v.payout.0)).sum();
    let out = to_trainers
        + to_validators
        + u128::from(report.creator_refund.0)
        + u128::from(report.burned.0);
    assert_eq!(out, inflow, "finalization must conserve escrow + bonds + entry fees exactly");
}
