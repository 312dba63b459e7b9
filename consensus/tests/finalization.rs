//! Finalization rules, called directly on the pure function with exact expected amounts.

use consensus::finalize::{
    FinalizationReport, FinalizeInput, ForfeitReason, Outcome, ReferenceInput, RevealInput,
    TrainerInput, ValidatorInput, efficiency_penalty, finalize,
};
use consensus::task::Efficiency;
use consensus::types::{AccountId, Amount, Hash, Height};
use consensus::verdict::{RejectReason, Subject, Verdict, VerdictEntry};

const EFF: Efficiency = Efficiency { reference_params: 1_000, penalty_ppm_per_doubling: 50_000 };

fn acct(n: u8) -> AccountId {
    AccountId([n; 32])
}

fn trainer(n: u8, params: u64, model: u8) -> TrainerInput {
    TrainerInput {
        account: acct(n),
        bond: Amount(1_000),
        entry_fee: Amount(0),
        committed_at: Some((Height(10), u32::from(n))),
        reveal: Some(RevealInput { model_hash: Hash([model; 32]), params }),
    }
}

/// Builds a vector for trainers `ns` (ascending accounts) from their verdicts.
fn vector(baseline: Verdict, base: Option<Verdict>, subs: &[(u8, Verdict)]) -> Vec<VerdictEntry> {
    let mut out = vec![VerdictEntry { subject: Subject::Baseline, verdict: baseline }];
    if let Some(b) = base {
        out.push(VerdictEntry { subject: Subject::BaseModel, verdict: b });
    }
    out.extend(
        subs.iter()
            .map(|(n, v)| VerdictEntry { subject: Subject::Submission(acct(*n)), verdict: *v }),
    );
    out
}

/// The vectors of three validators that all reveal `v`.
fn unanimous(v: Vec<VerdictEntry>) -> [Option<Vec<VerdictEntry>>; 3] {
    [Some(v.clone()), Some(v.clone()), Some(v)]
}

fn run(
    trainers: &[TrainerInput],
    stakes: &[u64],
    vectors: &[Option<Vec<VerdictEntry>>],
    base: Option<&ReferenceInput>,
) -> FinalizationReport {
    run_with(trainers, stakes, vectors, base.map_or(&[], std::slice::from_ref), 0)
}

fn run_with(
    trainers: &[TrainerInput],
    stakes: &[u64],
    vectors: &[Option<Vec<VerdictEntry>>],
    references: &[ReferenceInput],
    min_improvement_ppm: u32,
) -> FinalizationReport {
    let validators: Vec<ValidatorInput<'_>> = stakes
        .iter()
        .zip(vectors)
        .enumerate()
        .map(|(i, (s, v))| ValidatorInput {
            account: acct(200 + i as u8),
            stake: *s,
            verdicts: v.as_deref(),
        })
        .collect();
    finalize(&FinalizeInput {
        escrow: Amount(100_000),
        efficiency: &EFF,
        references,
        trainers,
        validators: &validators,
        trainer_share_ppm: 700_000,
        agreement_tolerance_ppm: 1_000,
        min_improvement_ppm,
        attested_stake: stakes.iter().sum(),
        key_revealed_at: Some(Height(12)),
        cancellation_fee_ppm: 10_000,
    })
}

fn t(report: &FinalizationReport, n: u8) -> &consensus::finalize::TrainerReport {
    report.trainers.iter().find(|r| r.account == acct(n)).unwrap()
}

#[test]
fn quorum_failure_after_a_reveal_burns_the_escrow_and_returns_bonds() {
    let trainers = [trainer(1, 1_000, 1), trainer(2, 1_000, 2)];
    let v = vector(
        Verdict::scored(100_000),
        None,
        &[(1, Verdict::scored(500_000)), (2, Verdict::scored(600_000))],
    );
    // 60 of 100 revealed: not more than two thirds.
    let report = run(&trainers, &[30, 30, 40], &[Some(v.clone()), Some(v), None], None);
    assert_eq!(report.outcome, Outcome::QuorumFailed);
    assert_eq!(report.creator_refund, Amount(0), "the creator already has the models");
    assert_eq!(report.burned, Amount(100_000));
    for r in &report.trainers {
        assert_eq!((r.bond_refund, r.payout), (Amount(1_000), Amount(0)));
    }
    assert!(report.validators.iter().all(|v| v.payout == Amount(0)));
}

#[test]
fn quorum_failure_with_nothing_revealed_returns_the_escrow() {
    let mut silent = trainer(1, 1_000, 1);
    silent.reveal = None;
    let v = vector(Verdict::scored(100_000), None, &[]);
    let report = run(&[silent], &[30, 30, 40], &[Some(v), None, None], None);
    assert_eq!(report.outcome, Outcome::QuorumFailed);
    assert_eq!((report.creator_refund, report.burned), (Amount(100_000), Amount(0)));
}

#[test]
fn rejected_unavailable_and_unrevealed_forfeit_the_bond() {
    let mut silent = trainer(4, 1_000, 4);
    silent.reveal = None;
    let trainers = [trainer(1, 1_000, 1), trainer(2, 1_000, 2), trainer(3, 1_000, 3), silent];
    let v = vector(
        Verdict::scored(100_000),
        None,
        &[
            (1, Verdict::Rejected { reason: RejectReason::NonFinite }),
            (2, Verdict::Unavailable),
            (3, Verdict::scored(600_000)),
        ],
    );
    let report = run(&trainers, &[10, 10, 10], &unanimous(v), None);
    assert_eq!(t(&report, 1).forfeit, Some(ForfeitReason::Rejected));
    assert_eq!(t(&report, 2).forfeit, Some(ForfeitReason::Unavailable));
    assert_eq!(t(&report, 4).forfeit, Some(ForfeitReason::NotRevealed));
    for n in [1, 2, 4] {
        assert_eq!(t(&report, n).bond_forfeit, Amount(1_000));
        assert_eq!(t(&report, n).bond_refund, Amount(0));
        assert_eq!(t(&report, n).payout, Amount(0));
    }
    assert_eq!(t(&report, 3).bond_refund, Amount(1_000));
    assert_eq!(t(&report, 3).payout, Amount(70_000), "the only gain takes the whole trainer share");
    // Burned: 3 forfeited bonds; validators all agreed so they take all 30000 (divisible by 30).
    assert_eq!(report.burned, Amount(3_000));
}

#[test]
fn the_champion_takes_the_whole_trainer_share() {
    let trainers = [trainer(1, 1_000, 1), trainer(2, 1_000, 2), trainer(3, 1_000, 3)];
    let v = vector(
        Verdict::scored(100_000),
        None,
        &[
            (1, Verdict::scored(600_000)),
            (2, Verdict::scored(650_000)),
            (3, Verdict::scored(300_000)),
        ],
    );
    let report = run(&trainers, &[10, 10, 10], &unanimous(v), None);
    assert_eq!(t(&report, 2).payout, Amount(70_000));
    assert_eq!((t(&report, 1).payout, t(&report, 3).payout), (Amount(0), Amount(0)));
    assert_eq!(
        [1, 2, 3].map(|n| t(&report, n).rank),
        [Some(2), Some(1), Some(3)],
        "ranks order the submissions that beat the baseline"
    );
    assert_eq!(report.champion.unwrap().trainer, acct(2));
    assert!(report.trainers.iter().all(|r| r.bond_refund == Amount(1_000)));
}

#[test]
fn exact_ties_go_to_fewer_parameters_then_the_earliest_commit() {
    // Same effective score: 1000 params (no penalty) vs 800 params.
    let mut late = trainer(1, 800, 1);
    late.committed_at = Some((Height(20), 0));
    let trainers = [late, trainer(2, 1_000, 2)];
    let v = vector(
        Verdict::scored(100_000),
        None,
        &[(1, Verdict::scored(600_000)), (2, Verdict::scored(600_000))],
    );
    let vs = [Some(v.clone()), Some(v.clone()), Some(v.clone())];
    let report = run(&trainers, &[10, 10, 10], &vs, None);
    assert_eq!(report.champion.unwrap().trainer, acct(1), "fewer parameters win the tie");
    // Same parameters: the earlier commit wins, whatever the account order.
    let mut trainers = vec![trainer(1, 1_000, 1), trainer(2, 1_000, 2)];
    trainers[0].committed_at = Some((Height(20), 0));
    let report = run(&trainers, &[10, 10, 10], &vs, None);
    assert_eq!(report.champion.unwrap().trainer, acct(2), "the earlier commit wins the tie");
}

#[test]
fn the_champion_must_beat_the_baseline_by_more_than_the_minimum_improvement() {
    let trainers = [trainer(1, 1_000, 1)];
    let v = vector(Verdict::scored(500_000), None, &[(1, Verdict::scored(520_000))]);
    let vs = unanimous(v);
    let report = run_with(&trainers, &[10, 10, 10], &vs, &[], 20_000);
    assert_eq!(report.champion, None, "exactly the minimum improvement is not enough");
    assert_eq!(report.burned, Amount(70_000));
    let report = run_with(&trainers, &[10, 10, 10], &vs, &[], 19_999);
    assert_eq!(t(&report, 1).payout, Amount(70_000));
}

#[test]
fn baseline_is_the_best_of_the_trivial_score_and_the_existing_models() {
    let trainers = [trainer(1, 1_000, 1)];
    let v = vector(Verdict::scored(300_000), None, &[(1, Verdict::scored(500_000))]);
    let report = run(&trainers, &[10, 10, 10], &unanimous(v), None);
    assert_eq!(report.baseline_ppm, 300_000);

    // A base model of 4× the reference scores 600000 − 2 × 50000 = 500000 effective.
    let base = ReferenceInput { subject: Subject::BaseModel, params: 4_000, recorded_ppm: 450_000 };
    // Every validator gives the trivial baseline, the base model and the trainer these verdicts.
    let with_base = |trivial: u32, base_verdict: Verdict, trainer: u32| {
        let v =
            vector(Verdict::scored(trivial), Some(base_verdict), &[(1, Verdict::scored(trainer))]);
        run(&trainers, &[10, 10, 10], &unanimous(v), Some(&base))
    };
    let report = with_base(300_000, Verdict::scored(600_000), 550_000);
    assert_eq!(report.baseline_ppm, 500_000);
    assert_eq!(t(&report, 1).payout, Amount(70_000), "550000 beats the base model's 500000");

    // When the trivial baseline is larger, it stays the baseline.
    let report = with_base(520_000, Verdict::scored(600_000), 550_000);
    assert_eq!(report.baseline_ppm, 520_000);

    // An unscored base model keeps its recorded score as the floor.
    let report = with_base(300_000, Verdict::Unavailable, 440_000);
    assert_eq!(report.baseline_ppm, 450_000);
    assert_eq!(report.champion, None);

    // An earlier champion on the same training file counts too.
    let earlier = ReferenceInput {
        subject: Subject::Champion(Hash([7; 32])),
        params: 1_000,
        recorded_ppm: 0,
    };
    let mut v = vector(Verdict::scored(300_000), None, &[(1, Verdict::scored(550_000))]);
    v.insert(1, VerdictEntry { subject: earlier.subject, verdict: Verdict::scored(560_000) });
    let vs = unanimous(v);
    let report = run_with(&trainers, &[10, 10, 10], &vs, &[earlier], 0);
    assert_eq!(report.baseline_ppm, 560_000);
    assert_eq!(report.champion, None, "a model below an earlier champion earns nothing");
}

#[test]
fn twice_the_reference_size_loses_exactly_one_penalty() {
    assert_eq!(efficiency_penalty(&EFF, 1_000), 0);
    assert_eq!(
        efficiency_penalty(&EFF, 500),
        0,
        "smaller models are not rewarded beyond 0 penalty"
    );
    assert_eq!(efficiency_penalty(&EFF, 2_000), 50_000);
    assert_eq!(efficiency_penalty(&EFF, 8_000), 150_000);
    let trainers = [trainer(1, 2_000, 1), trainer(2, 1_000, 2)];
    let v = vector(
        Verdict::scored(100_000),
        None,
        &[(1, Verdict::scored(600_000)), (2, Verdict::scored(600_000))],
    );
    let report = run(&trainers, &[10, 10, 10], &unanimous(v), None);
    assert_eq!(t(&report, 1).penalty_ppm, 50_000);
    assert_eq!(t(&report, 1).effective_ppm, 550_000);
    assert_eq!(t(&report, 2).effective_ppm, 600_000);
    assert_eq!(report.champion.unwrap().trainer, acct(2));
}

#[test]
fn when_nobody_beats_the_baseline_the_trainer_share_burns() {
    let trainers = [trainer(1, 1_000, 1), trainer(2, 1_000, 2)];
    let v = vector(
        Verdict::scored(700_000),
        None,
        &[(1, Verdict::scored(600_000)), (2, Verdict::scored(700_000))],
    );
    let report = run(&trainers, &[10, 10, 10], &unanimous(v), None);
    assert_eq!(report.creator_refund, Amount(0), "models were revealed: nothing returns");
    assert_eq!(report.burned, Amount(70_000));
    assert!(
        report.trainers.iter().all(|r| r.payout == Amount(0) && r.bond_refund == Amount(1_000))
    );
    assert_eq!(report.champion, None);
}

#[test]
fn with_no_model_revealed_the_trainer_share_returns_to_the_creator() {
    let mut silent = trainer(1, 1_000, 1);
    silent.reveal = None;
    let v = vector(Verdict::scored(100_000), None, &[]);
    let report = run(&[silent], &[10, 10, 10], &unanimous(v), None);
    assert_eq!(report.creator_refund, Amount(70_000));
    assert_eq!(report.burned, Amount(1_000), "the silent trainer's bond");
}

#[test]
fn consensus_is_the_lower_stake_weighted_median() {
    let trainers = [trainer(1, 1_000, 1)];
    let vs: Vec<Option<Vec<VerdictEntry>>> = [400_000, 500_000, 900_000]
        .iter()
        .map(|s| Some(vector(Verdict::scored(100_000), None, &[(1, Verdict::scored(*s))])))
        .collect();
    // Stakes 30/30/40: 400000 has 30 (under half of 100), 500000 has 60.
    let report = run(&trainers, &[30, 30, 40], &vs, None);
    assert_eq!(report.entries[1].consensus, Verdict::scored(500_000));
    // Stakes 60/20/20: the first alone is a majority.
    let report = run(&trainers, &[60, 20, 20], &vs, None);
    assert_eq!(report.entries[1].consensus, Verdict::scored(400_000));
    // The outliers earn for the baseline entry only (1 of 2 entries).
    let v = &report.validators;
    assert_eq!(v.iter().map(|r| r.agreed_entries).collect::<Vec<_>>(), vec![2, 1, 1]);
    // Stakes 50/0/50 split exactly in half: the lower verdict wins.
    let report = run(&trainers, &[50, 50], &[vs[0].clone(), vs[2].clone()], None);
    assert_eq!(report.entries[1].consensus, Verdict::scored(400_000));
}
