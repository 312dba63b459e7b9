//! The leaderboard and payout tables printed when a task finalizes, and the conservation check.

use std::collections::BTreeMap;
use std::fmt::Write;

use consensus::finalize::{FinalizationReport, ForfeitReason, Outcome, TrainerReport};
use consensus::types::{AccountId, Amount};
use consensus::verdict::Verdict;

/// What the testnet knows about an account: its node name and, for trainers, its recipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// The node's name, e.g. `trainer-1`.
    pub name: String,
    /// The trainer's recipe label, e.g. `small-filtered`.
    pub recipe: Option<String>,
}

/// Names of the accounts of a testnet.
pub type Labels = BTreeMap<AccountId, Label>;

fn name(labels: &Labels, account: &AccountId) -> String {
    labels.get(account).map_or_else(|| account.short(), |l| l.name.clone())
}

/// A ppm score as a percentage with two decimals, e.g. `94.44%`.
pub fn percent(ppm: u32) -> String {
    format!("{}.{:02}%", ppm / 10_000, (ppm % 10_000) / 100)
}

fn verdict(v: &Option<Verdict>) -> String {
    match v {
        None => "-".into(),
        Some(Verdict::Scored { score_ppm, .. }) => percent(score_ppm.0),
        Some(Verdict::Unavailable) => "unavailable".into(),
        Some(Verdict::Rejected { reason }) => format!("rejected: {}", reason.describe()),
    }
}

fn note(t: &TrainerReport) -> String {
    match (t.forfeit, t.rank) {
        (Some(ForfeitReason::NotRevealed), _) => "bond forfeited: never revealed".into(),
        (Some(ForfeitReason::Rejected), _) => "bond forfeited: rejected".into(),
        (Some(ForfeitReason::Unavailable), _) => "bond forfeited: unavailable".into(),
        (None, Some(1)) => "champion: takes the trainer share".into(),
        (None, Some(_)) => "beat the bar, not the champion".into(),
        (None, None) if t.consensus.is_some() => "did not beat the bar".into(),
        (None, None) => String::new(),
    }
}

/// The leaderboard and the validators' payouts of a finalized task.
pub fn leaderboard(
    task: &str,
    report: &FinalizationReport,
    reward: Amount,
    labels: &Labels,
) -> String {
    let mut out = String::new();
    let outcome = match report.outcome {
        Outcome::Finalized => "finalized",
        Outcome::QuorumFailed if report.creator_refund.0 > 0 => {
            "failed: too little stake revealed scores (nothing revealed: escrow refunded; bonds \
             refunded)"
        }
        Outcome::QuorumFailed => {
            "failed: too little stake revealed scores (escrow burned; bonds refunded)"
        }
        Outcome::Cancelled => {
            "cancelled: too little stake attested to holding the sealed held-out file (escrow \
             refunded less the cancellation fee; bonds and entry fees refunded)"
        }
        Outcome::KeyWithheld => {
            "failed: the creator withheld the held-out key (escrow burned; bonds and entry fees \
             refunded)"
        }
    };
    let _ = writeln!(
        out,
        "task {task}: {outcome}; escrow {reward}, baseline {}, bar {} (winner takes all)",
        percent(report.baseline_ppm),
        percent(report.baseline_ppm.saturating_add(report.min_improvement_ppm)),
    );
    let mut trainers: Vec<&TrainerReport> = report.trainers.iter().collect();
    trainers.sort_by_key(|t| (t.rank.is_none(), t.rank, std::cmp::Reverse(t.effective_ppm)));
    let recipe = |t: &TrainerReport| {
        labels.get(&t.account).and_then(|l| l.recipe.clone()).unwrap_or_else(|| "-".into())
    };
    // As wide as the longest recipe name (the scenarios' names say where the data came from).
    let width = trainers.iter().map(|t| recipe(t).chars().count()).max().unwrap_or(0).max(18);
    let _ = writeln!(
        out,
        "{:<5} {:<12} {:<width$} {:>8} {:>10} {:>10} {:>8}  note",
        "rank", "trainer", "recipe", "params", "consensus", "effective", "payout"
    );
    for t in trainers {
        let line = format!(
            "{:<5} {:<12} {:<width$} {:>8} {:>10} {:>10} {:>8}  {}",
            t.rank.map_or_else(|| "-".into(), |r| r.to_string()),
            name(labels, &t.account),
            recipe(t),
            t.params.map_or_else(|| "-".into(), |p| p.to_string()),
            verdict(&t.consensus),
            percent(t.effective_ppm),
            t.payout,
            note(t),
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let entries = report.entries.len();
    let _ = writeln!(
        out,
        "{:<12} {:>6} {:>9} {:>8} {:>8}",
        "validator", "stake", "revealed", "agreed", "payout"
    );
    let mut validators: Vec<_> = report.validators.iter().collect();
    validators.sort_by_key(|v| name(labels, &v.account));
    for v in validators {
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>9} {:>8} {:>8}",
            name(labels, &v.account),
            v.stake,
            if v.revealed { "yes" } else { "no" },
            format!("{}/{entries}", v.agreed_entries),
            v.payout,
        );
    }
    if let Some(c) = &report.champion {
        let _ = writeln!(
            out,
            "champion: {} ({} params, effective {}), model {}",
            name(labels, &c.trainer),
            c.params,
            percent(c.effective_ppm),
            c.model_hash.short()
        );
    }
    let key = report.key_revealed_at.map_or_else(|| "never".into(), |h| format!("at height {h}"));
    let _ = writeln!(
        out,
        "sealed held-out: attested stake {} of {}, key revealed {key}",
        report.attested_stake, report.total_stake
    );
    let _ = writeln!(out, "creator refund {}, burned {}", report.creator_refund, report.burned);
    out
}

/// Checks that payouts, refunds and burns add up to the escrow, bonds and entry fees (each
/// trainer paid `entry_fee`) exactly.
pub fn check_conservation(
    report: &FinalizationReport,
    reward: Amount,
    entry_fee: Amount,
) -> Result<u128, String> {
    let bonds: u128 = report
        .trainers
        .iter()
        .map(|t| u128::from(t.bond_refund.0) + u128::from(t.bond_forfeit.0))
        .sum();
    let paid: u128 = report
        .trainers
        .iter()
        .map(|t| {
            u128::from(t.payout.0) + u128::from(t.bond_refund.0) + u128::from(t.entry_fee_refund.0)
        })
        .sum::<u128>()
        + report.validators.iter().map(|v| u128::from(v.payout.0)).sum::<u128>()
        + u128::from(report.creator_refund.0)
        + u128::from(report.burned.0);
    let fees = u128::from(entry_fee.0) * report.trainers.len() as u128;
    let owed = u128::from(reward.0) + bonds + fees;
    if paid == owed {
        Ok(owed)
    } else {
        Err(format!(
            "payouts, refunds and burns add up to {paid}, but escrow, bonds and entry fees are \
             {owed}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::finalize::{Champion, EntryReport, ValidatorReport};
    use consensus::types::{Hash, Height, ScorePpm};
    use consensus::verdict::Subject;

    fn account(b: u8) -> AccountId {
        AccountId([b; 32])
    }

    fn trainer(b: u8, score: u32, effective: u32, payout: u64, rank: Option<u32>) -> TrainerReport {
        TrainerReport {
            account: account(b),
            consensus: Some(Verdict::Scored { score_ppm: ScorePpm(score) }),
            params: Some(2_410),
            penalty_ppm: score - effective,
            effective_ppm: effective,
            forfeit: None,
            bond_refund: Amount(100),
            bond_forfeit: Amount(0),
            entry_fee_refund: Amount(0),
            payout: Amount(payout),
            rank,
        }
    }

    fn report() -> FinalizationReport {
        let validator = |b: u8, payout| ValidatorReport {
            account: account(b),
            stake: 1_000,
            revealed: true,
            agreed_entries: 4,
            payout: Amount(payout),
        };
        FinalizationReport {
            outcome: Outcome::Finalized,
            attested_stake: 2_000,
            key_revealed_at: Some(Height(40)),
            cancellation_fee: Amount(0),
            revealed_stake: 2_000,
            total_stake: 2_000,
            baseline_ppm: 101_000,
            min_improvement_ppm: 1_000,
            entries: vec![
                EntryReport {
                    subject: Subject::Baseline,
                    consensus: Verdict::scored(101_000)
                };
                4
            ],
            trainers: vec![
                trainer(1, 777_000, 738_000, 0, Some(2)),
                trainer(2, 944_444, 944_444, 7_000, Some(1)),
                TrainerReport {
                    forfeit: Some(ForfeitReason::NotRevealed),
                    consensus: None,
                    params: None,
                    bond_refund: Amount(0),
                    bond_forfeit: Amount(100),
                    ..trainer(3, 0, 0, 0, None)
                },
            ],
            validators: vec![validator(10, 1_500), validator(11, 1_500)],
            creator_refund: Amount(0),
            burned: Amount(100),
            champion: Some(Champion {
                trainer: account(2),
                model_hash: Hash([9; 32]),
                params: 2_410,
                effective_ppm: 944_444,
            }),
        }
    }

    fn labels() -> Labels {
        let label = |name: &str, recipe: Option<&str>| Label {
            name: name.into(),
            recipe: recipe.map(Into::into),
        };
        Labels::from([
            (account(1), label("trainer-0", Some("large-plain"))),
            (account(2), label("trainer-1", Some("small-filtered"))),
            (account(3), label("trainer-2", Some("small-augmented"))),
            (account(10), label("validator-0", None)),
            (account(11), label("validator-1", None)),
        ])
    }

    #[test]
    fn the_leaderboard_ranks_trainers_and_lists_validators() {
        let text = leaderboard("1 (digits)", &report(), Amount(10_000), &labels());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "task 1 (digits): finalized; escrow 10000, baseline 10.10%, bar 10.20% (winner takes \
             all)"
        );
        assert!(lines[1].starts_with("rank  trainer"), "{}", lines[1]);
        assert_eq!(
            lines[2],
            "1     trainer-1    small-filtered         2410     94.44%     94.44%     7000  \
             champion: takes the trainer share"
        );
        assert!(lines[3].starts_with("2     trainer-0    large-plain"), "{}", lines[3]);
        assert!(lines[3].ends_with("beat the bar, not the champion"), "{}", lines[3]);
        assert!(lines[4].ends_with("bond forfeited: never revealed"), "{}", lines[4]);
        assert_eq!(lines[6], "validator-0    1000       yes      4/4     1500");
        assert_eq!(lines[8], "champion: trainer-1 (2410 params, effective 94.44%), model 09090909");
        assert_eq!(
            lines[9],
            "sealed held-out: attested stake 2000 of 2000, key revealed at height 40"
        );
        assert_eq!(lines[10], "creator refund 0, burned 100");
    }

    #[test]
    fn the_recipe_column_widens_for_a_long_recipe_name() {
        let mut labels = labels();
        let long = "public+A+B (360 private rows)";
        labels.insert(account(2), Label { name: "trainer-1".into(), recipe: Some(long.into()) });
        let text = leaderboard("1 (digits)", &report(), Amount(10_000), &labels);
        let lines: Vec<&str> = text.lines().collect();
        let params_end = lines[1].find("params").unwrap() + "params".len();
        assert!(lines[2].contains(long), "{}", lines[2]);
        // Every trainer's params figure ends where the header's "params" does.
        for row in &lines[2..4] {
            let (left, right) = row.split_at(params_end);
            assert!(left.ends_with(|c: char| c.is_ascii_digit()), "{row}");
            assert!(right.starts_with(' '), "{row}");
        }
    }

    #[test]
    fn conservation_holds_exactly_or_is_reported() {
        // 7000 + 1500 + 1500 paid, 200 bonds back, 100 burned = 10000 escrow + 300 bonds.
        assert_eq!(check_conservation(&report(), Amount(10_000), Amount(0)), Ok(10_300));
        assert!(check_conservation(&report(), Amount(10_001), Amount(0)).is_err());
        // Three entry fees of 5 that burned: owed and burned both grow by 15.
        let mut with_fees = report();
        with_fees.burned.0 += 15;
        assert_eq!(check_conservation(&with_fees, Amount(10_000), Amount(5)), Ok(10_315));
        assert!(check_conservation(&with_fees, Amount(10_000), Amount(0)).is_err());
    }

    #[test]
    fn percentages_keep_two_decimals() {
        assert_eq!(percent(0), "0.00%");
        assert_eq!(percent(1_000_000), "100.00%");
        assert_eq!(percent(944_444), "94.44%");
    }
}
