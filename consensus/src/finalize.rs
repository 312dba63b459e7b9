//! Finalization: how a task's escrow and bonds are paid out, in one pure function.
//!
//! See [`finalize`] for the formulas. Everything is integer arithmetic (ppm scores, base-unit
//! amounts, u128 intermediates, Q16 logarithms); the function reads no state, clock or randomness,
//! so every node computes the same report from the same inputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fixed::{Q16_ONE, log2_q16};
use crate::task::{BaseModel, Efficiency};
use crate::types::{AccountId, Amount, Height, ModelHash, ScorePpm};
use crate::validators::{is_majority, is_quorum};
use crate::verdict::{Subject, Verdict, VerdictEntry, expected_layout};

/// A joined trainer, as finalization sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainerInput {
    /// The trainer.
    pub account: AccountId,
    /// The bond it locked.
    pub bond: Amount,
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
    /// Its stake now (after any slashing).
    pub stake: u64,
    /// Its revealed verdict vector, already checked against the layout; `None` if it did not
    /// reveal.
    pub verdicts: Option<&'a [VerdictEntry]>,
}

/// Everything finalization reads.
#[derive(Clone, Copy, Debug)]
pub struct FinalizeInput<'a> {
    /// The task's escrow.
    pub escrow: Amount,
    /// The task's efficiency rule.
    pub efficiency: &'a Efficiency,
    /// The task's base model, if any.
    pub base_model: Option<&'a BaseModel>,
    /// Every joined trainer.
    pub trainers: &'a [TrainerInput],
    /// Every validator of the current set.
    pub validators: &'a [ValidatorInput<'a>],
    /// Share of the escrow for trainers, in ppm.
    pub trainer_share_ppm: u32,
    /// Agreement tolerance for scores, in ppm.
    pub agreement_tolerance_ppm: u32,
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Validators with more than 2/3 of the stake revealed; rewards were paid.
    Finalized,
    /// Too little stake revealed: escrow back to the creator, bonds back to the trainers.
    QuorumFailed,
}

/// Why a trainer's submission earns nothing although it was scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateReason {
    /// Same model hash as this earlier-committed trainer's.
    SameHashAs(AccountId),
    /// Validators with more than half the revealed stake flagged it `duplicate_of` an earlier one.
    FlaggedByMajority,
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
    /// The lower stake-weighted median verdict (duplicate flags cleared; see the trainer report).
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
    /// Why it earns nothing though scored, if it is a duplicate.
    pub duplicate: Option<DuplicateReason>,
    /// Why it lost its bond, if it did.
    pub forfeit: Option<ForfeitReason>,
    /// Bond returned.
    pub bond_refund: Amount,
    /// Bond burned.
    pub bond_forfeit: Amount,
    /// Reward paid.
    pub payout: Amount,
    /// 1-based rank by effective score among eligible submissions that beat the baseline.
    pub rank: Option<u32>,
}

/// One validator's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorReport {
    /// The validator.
    pub account: AccountId,
    /// Its stake at finalization.
    pub stake: u64,
    /// Whether it revealed a verdict vector.
    pub revealed: bool,
    /// On how many entries its verdict matched the consensus.
    pub agreed_entries: u32,
    /// Reward paid.
    pub payout: Amount,
}

/// The task's champion: the best effective score above the baseline.
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
    /// Stake of the validators that revealed.
    pub revealed_stake: u64,
    /// Stake of every validator.
    pub total_stake: u64,
    /// The score to beat, in ppm.
    pub baseline_ppm: u32,
    /// The consensus on each entry, in layout order (empty on quorum failure).
    pub entries: Vec<EntryReport>,
    /// Every joined trainer, by account.
    pub trainers: Vec<TrainerReport>,
    /// Every validator, by account.
    pub validators: Vec<ValidatorReport>,
    /// Returned to the task's creator.
    pub creator_refund: Amount,
    /// Burned: forfeited bonds, unearned shares and integer remainders.
    pub burned: Amount,
    /// The champion, if any submission beat the baseline.
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
/// [`Verdict::rank`], then reject reason) such that the stake reporting at most `v` exceeds half of
/// the total stake given. Duplicate flags are cleared. `None` when no stake is given.
pub fn lower_weighted_median(mut votes: Vec<(Verdict, u64)>) -> Option<Verdict> {
    let key = |v: &Verdict| match v {
        Verdict::Rejected { reason } => (v.rank(), Some(*reason)),
        _ => (v.rank(), None),
    };
    votes.sort_by_key(|(v, _)| key(v));
    let total: u64 = votes.iter().map(|(_, s)| *s).sum();
    let mut below = 0u64;
    for (verdict, stake) in votes {
        below += stake;
        if is_majority(below, total) {
            return Some(match verdict {
                Verdict::Scored { score_ppm, .. } => {
                    Verdict::Scored { score_ppm, duplicate_of: None }
                }
                other => other,
            });
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

fn share(amount: u128, numerator: u128, denominator: u128) -> u128 {
    (amount * numerator).checked_div(denominator).unwrap_or(0)
}

fn to_amount(x: u128) -> Amount {
    Amount(u64::try_from(x).expect("payouts never exceed the escrow and bonds, which fit in u64"))
}

/// Finalizes a task at its score deadline.
///
/// With `S` the total stake of the validator set and `R` the stake of the validators that revealed
/// a verdict vector:
///
/// 1. **Quorum**: unless `3R > 2S`, the task fails: the escrow returns to the creator and every
///    bond to its trainer.
/// 2. **Consensus verdict** of each entry: the lower stake-weighted median of the revealed
///    verdicts ([`lower_weighted_median`]: the smallest `v` with `2 × stake(verdict ≤ v) > R`,
///    ordering `Rejected < Unavailable < Scored(0) < … < Scored(1e6)`). A submission whose
///    consensus verdict is Rejected or Unavailable, and a joined trainer that never revealed,
///    forfeits its bond (burned); other bonds return. The **baseline** is the consensus score of
///    the trivial-baseline entry or, when the task has a base model, the larger of that and the
///    base model's effective score (0 if the base model is not scored).
/// 3. **Efficiency**: `penalty = penalty_ppm_per_doubling × max(0, log2(params) −
///    log2(reference_params))` with `log2` in Q16 fixed point ([`log2_q16`]), and `effective =
///    max(0, consensus_score − penalty)`.
/// 4. **Duplicates**: a submission whose model hash equals that of an earlier commit (block
///    height, then position in the block), or that validators holding more than `R/2` flag
///    `duplicate_of` an earlier submission, earns nothing (its bond still returns).
/// 5. **Trainers** share `T = escrow × trainer_share_ppm / 1e6` in proportion to `gain =
///    max(0, effective − baseline)` of the non-duplicate submissions: `T × gain_i / Σ gain`. If
///    `Σ gain = 0`, `T` returns to the creator.
/// 6. **Validators** share `V = escrow − T`: validator `i` earns `V × stake_i × agreed_i / (S ×
///    entries)`, where `agreed_i` counts the entries on which its verdict agrees with the consensus
///    ([`agrees`]: same kind and, for scores, within `agreement_tolerance_ppm`). A validator that
///    did not reveal earns nothing. Dividing by `S`, not `R`, means censoring another validator's
///    reveal earns nothing.
/// 7. **Conservation**: payouts + refunds + burns = escrow + bonds exactly; what is not paid
///    (unearned validator shares, integer remainders, forfeited bonds) burns. The highest
///    effective score above the baseline among non-duplicates (earliest commit on a tie) is the
///    **champion**.
pub fn finalize(input: &FinalizeInput<'_>) -> FinalizationReport {
    let escrow = u128::from(input.escrow.0);
    let bonds: u128 = input.trainers.iter().map(|t| u128::from(t.bond.0)).sum();
    let total_stake: u64 = input.validators.iter().map(|v| v.stake).sum();
    let revealed_stake: u64 =
        input.validators.iter().filter(|v| v.verdicts.is_some()).map(|v| v.stake).sum();
    let mut trainers: Vec<&TrainerInput> = input.trainers.iter().collect();
    trainers.sort_by_key(|t| t.account);

    if !is_quorum(revealed_stake, total_stake) {
        let report = FinalizationReport {
            outcome: Outcome::QuorumFailed,
            revealed_stake,
            total_stake,
            baseline_ppm: 0,
            entries: vec![],
            trainers: trainers
                .iter()
                .map(|t| TrainerReport {
                    account: t.account,
                    consensus: None,
                    params: t.reveal.map(|r| r.params),
                    penalty_ppm: 0,
                    effective_ppm: 0,
                    duplicate: None,
                    forfeit: None,
                    bond_refund: t.bond,
                    bond_forfeit: Amount::ZERO,
                    payout: Amount::ZERO,
                    rank: None,
                })
                .collect(),
            validators: validator_reports(input, &[], 0),
            creator_refund: input.escrow,
            burned: Amount::ZERO,
            champion: None,
        };
        check_conservation(&report, escrow + bonds);
        return report;
    }

    // 2. Consensus verdict per entry of the layout.
    let revealed: Vec<&TrainerInput> =
        trainers.iter().copied().filter(|t| t.reveal.is_some()).collect();
    let layout = expected_layout(input.base_model.is_some(), revealed.iter().map(|t| t.account));
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
    let entry_of = |subject: Subject| -> Option<(usize, &EntryReport)> {
        entries.iter().enumerate().find(|(_, e)| e.subject == subject)
    };

    let trivial = entries[0].consensus.score().map_or(0, |s| s.0);
    let base_effective = input.base_model.map_or(0, |base| {
        entry_of(Subject::BaseModel)
            .and_then(|(_, e)| e.consensus.score())
            .map_or(0, |s| effective_score(input.efficiency, s, base.params))
    });
    let baseline = trivial.max(base_effective);

    // 3–4. Effective scores and duplicates.
    let mut reports: Vec<TrainerReport> = Vec::with_capacity(trainers.len());
    for t in &trainers {
        let mut report = TrainerReport {
            account: t.account,
            consensus: None,
            params: t.reveal.map(|r| r.params),
            penalty_ppm: 0,
            effective_ppm: 0,
            duplicate: None,
            forfeit: None,
            bond_refund: Amount::ZERO,
            bond_forfeit: Amount::ZERO,
            payout: Amount::ZERO,
            rank: None,
        };
        match (t.reveal, entry_of(Subject::Submission(t.account))) {
            (Some(reveal), Some((j, entry))) => {
                report.consensus = Some(entry.consensus);
                match entry.consensus {
                    Verdict::Scored { score_ppm, .. } => {
                        report.penalty_ppm = efficiency_penalty(input.efficiency, reveal.params);
                        report.effective_ppm = score_ppm.0.saturating_sub(report.penalty_ppm);
                        report.duplicate = duplicate_reason(input, &revealed, t, j);
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

    // 5. Trainer payouts.
    let trainer_pool = escrow * u128::from(input.trainer_share_ppm) / 1_000_000;
    let gain = |r: &TrainerReport| -> u128 {
        if r.forfeit.is_some() || r.duplicate.is_some() {
            0
        } else {
            u128::from(r.effective_ppm.saturating_sub(baseline))
        }
    };
    let total_gain: u128 = reports.iter().map(gain).sum();
    let mut creator_refund = 0u128;
    let mut paid_trainers = 0u128;
    if total_gain == 0 {
        creator_refund = trainer_pool;
    } else {
        for r in &mut reports {
            let pay = share(trainer_pool, gain(r), total_gain);
            r.payout = to_amount(pay);
            paid_trainers += pay;
        }
    }
    let mut ranked: Vec<(u32, (Height, u32), usize)> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| gain(r) > 0)
        .map(|(i, r)| (r.effective_ppm, trainers[i].committed_at.unwrap_or_default(), i))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (rank, (_, _, i)) in ranked.iter().enumerate() {
        reports[*i].rank = Some(u32::try_from(rank + 1).unwrap_or(u32::MAX));
    }
    let champion = ranked.first().map(|(effective, _, i)| {
        let reveal = trainers[*i].reveal.expect("ranked trainers revealed");
        Champion {
            trainer: trainers[*i].account,
            model_hash: reveal.model_hash,
            params: reveal.params,
            effective_ppm: *effective,
        }
    });

    // 6. Validator payouts.
    let validator_pool = escrow - trainer_pool;
    let validators = validator_reports(input, &entries, validator_pool);
    let paid_validators: u128 = validators.iter().map(|v| u128::from(v.payout.0)).sum();

    let refunds: u128 = reports.iter().map(|r| u128::from(r.bond_refund.0)).sum();
    let burned = escrow + bonds - paid_trainers - paid_validators - creator_refund - refunds;
    let report = FinalizationReport {
        outcome: Outcome::Finalized,
        revealed_stake,
        total_stake,
        baseline_ppm: baseline,
        entries,
        trainers: reports,
        validators,
        creator_refund: to_amount(creator_refund),
        burned: to_amount(burned),
        champion,
    };
    check_conservation(&report, escrow + bonds);
    report
}

/// Step 4 for trainer `t`, whose entry is at index `j`.
fn duplicate_reason(
    input: &FinalizeInput<'_>,
    revealed: &[&TrainerInput],
    t: &TrainerInput,
    j: usize,
) -> Option<DuplicateReason> {
    let reveal = t.reveal?;
    let mine = t.committed_at.unwrap_or_default();
    let earlier_same_hash = revealed
        .iter()
        .filter(|o| o.account != t.account)
        .filter(|o| o.reveal.map(|r| r.model_hash) == Some(reveal.model_hash))
        .filter(|o| o.committed_at.unwrap_or_default() < mine)
        .min_by_key(|o| o.committed_at);
    if let Some(original) = earlier_same_hash {
        return Some(DuplicateReason::SameHashAs(original.account));
    }
    let revealed_stake: u64 =
        input.validators.iter().filter(|v| v.verdicts.is_some()).map(|v| v.stake).sum();
    let flagged: u64 = input
        .validators
        .iter()
        .filter_map(|v| v.verdicts.map(|vec| (vec[j].verdict, v.stake)))
        .filter(|(verdict, _)| matches!(verdict, Verdict::Scored { duplicate_of: Some(_), .. }))
        .map(|(_, stake)| stake)
        .sum();
    is_majority(flagged, revealed_stake).then_some(DuplicateReason::FlaggedByMajority)
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
        let payout = share(pool, u128::from(v.stake) * u128::from(agreed), total_stake * n);
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
    let to_trainers: u128 =
        report.trainers.iter().map(|t| u128::from(t.payout.0) + u128::from(t.bond_refund.0)).sum();
    let to_validators: u128 = report.validators.iter().map(|v| u128::from(v.payout.0)).sum();
    let out = to_trainers
        + to_validators
        + u128::from(report.creator_refund.0)
        + u128::from(report.burned.0);
    assert_eq!(out, inflow, "finalization must conserve escrow + bonds exactly");
}
