//! The attacks of issue 13, one test each, played on a real chain (or on the finalization
//! function where only the arithmetic matters). Each asserts that the attacker now ends with no
//! more than it would have by playing honestly; the comment above each says what the attack
//! earned under the first rules.

use consensus::crypto::Keypair;
use consensus::encoding::encode;
use consensus::finalize::{
    FinalizationReport, FinalizeInput, ForfeitReason, Outcome, RevealInput, TrainerInput,
    ValidatorInput, finalize,
};
use consensus::genesis::Params;
use consensus::state::TxError;
use consensus::storage::{MemStore, Tree};
use consensus::task::{BaseModel, Efficiency, SpecError, TaskSpec};
use consensus::testing::*;
use consensus::tx::{SignedTx, TxKind};
use consensus::types::{AccountId, Amount, Hash, Height, TaskId};
use consensus::verdict::{RejectReason, Subject, Verdict, VerdictEntry};

const REWARD: u64 = 100_000;
/// 70% of the reward.
const PRIZE: u64 = 70_000;

/// One trainer's entry: which trainer key, which model, how many parameters.
#[derive(Clone, Copy)]
struct Entrant {
    trainer: usize,
    model: Hash,
    params: u64,
}

fn entrant(trainer: usize, model_id: u8, params: u64) -> Entrant {
    Entrant { trainer, model: model(model_id), params }
}

/// A spec with windows long enough for every test (each over the 4 validators).
fn long_spec() -> TaskSpec {
    let mut s = spec(4);
    s.windows.join = 8;
    s.windows.commit = 8;
    s
}

fn key_of(c: &TestChain, trainer: usize) -> Keypair {
    Keypair::from_seed(c.trainers[trainer].secret_bytes())
}

/// Opens `spec`, lets every entrant join (one block) and commit (the next block, in entrant
/// order), reveals them all, then lets the validators in `revealers` score with `verdict` and
/// reveal, and runs the chain to finalization.
fn play(
    c: &mut TestChain,
    spec: TaskSpec,
    entrants: &[Entrant],
    revealers: &[usize],
    verdict: impl Fn(usize, &Subject) -> Verdict,
) -> (TaskId, FinalizationReport) {
    let task = c.create_task(spec, REWARD);
    let joins: Vec<SignedTx> =
        entrants.iter().map(|e| c.sign(&key_of(c, e.trainer), TxKind::JoinTask { task })).collect();
    assert_eq!(c.commit(joins).txs.len(), entrants.len(), "every entrant joins");
    let commits: Vec<SignedTx> = entrants
        .iter()
        .map(|e| {
            let k = key_of(c, e.trainer);
            c.sign(&k, model_commit(c, task, &k, &e.model, &salt(e.trainer as u8)))
        })
        .collect();
    assert_eq!(c.commit(commits).txs.len(), entrants.len(), "every entrant commits");
    c.open_reveals(task);
    let reveals: Vec<SignedTx> = entrants
        .iter()
        .map(|e| {
            let kind = model_reveal(task, e.model, salt(e.trainer as u8), e.params);
            c.sign(&key_of(c, e.trainer), kind)
        })
        .collect();
    assert_eq!(c.commit(reveals).txs.len(), entrants.len(), "every entrant reveals");
    score(c, task, revealers, verdict)
}

/// Scores `task` (in its score-commit window or before it) and runs it to finalization.
fn score(
    c: &mut TestChain,
    task: TaskId,
    revealers: &[usize],
    verdict: impl Fn(usize, &Subject) -> Verdict,
) -> (TaskId, FinalizationReport) {
    c.advance_to(c.task(task).reveal_deadline().next());
    let layout = c.ledger.state().verdict_layout(&c.task(task));
    let vectors: Vec<Vec<VerdictEntry>> = revealers
        .iter()
        .map(|v| {
            layout.iter().map(|s| VerdictEntry { subject: *s, verdict: verdict(*v, s) }).collect()
        })
        .collect();
    let commits: Vec<SignedTx> = revealers
        .iter()
        .zip(&vectors)
        .map(|(v, vec)| {
            let k = &c.validators[*v];
            c.sign(k, scores_commit(c, task, k, vec, &salt(200 + *v as u8)))
        })
        .collect();
    c.commit(commits);
    c.advance_to(c.task(task).score_commit_deadline().next());
    let reveals: Vec<SignedTx> = revealers
        .iter()
        .zip(vectors)
        .map(|(v, verdicts)| {
            let kind = TxKind::RevealScores { task, verdicts, salt: salt(200 + *v as u8) };
            c.sign(&c.validators[*v], kind)
        })
        .collect();
    assert_eq!(c.commit(reveals).txs.len(), revealers.len());
    c.advance_to(c.task(task).score_deadline().next());
    let report = c.task(task).report.expect("finalized at the score deadline");
    (task, report)
}

fn payout(report: &FinalizationReport, c: &TestChain, trainer: usize) -> u64 {
    let account = c.trainers[trainer].account();
    report.trainers.iter().find(|t| t.account == account).map_or(0, |t| t.payout.0)
}

fn balances(c: &TestChain, trainers: &[usize]) -> u64 {
    trainers.iter().map(|t| c.balance(&c.trainers[*t].account())).sum()
}

/// Each trainer's score, by trainer index.
fn by_model(c: &TestChain, scores: &[(usize, u32)]) -> Vec<(AccountId, u32)> {
    scores.iter().map(|(t, s)| (c.trainers[*t].account(), *s)).collect()
}

/// Honest verdicts: each submission gets its trainer's score from `table`; the trivial
/// baseline and every reference model score 100000.
fn submission_scores(table: Vec<(AccountId, u32)>) -> impl Fn(usize, &Subject) -> Verdict {
    move |_, subject| match subject {
        Subject::Submission(a) => {
            Verdict::scored(table.iter().find(|(b, _)| b == a).map_or(0, |(_, s)| *s))
        }
        _ => Verdict::scored(100_000),
    }
}

/// Attack 1: the creator has the models once they are revealed, then gets a third of the stake
/// to withhold scores. The first rules refunded the whole escrow on a failed quorum: one fee
/// bought every model. Now the escrow burns.
#[test]
fn attack_1_withholding_scores_after_the_reveal_refunds_the_creator_nothing() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let creator = c.creator.account();
    let before = c.balance(&creator);
    let entrants = [entrant(0, 1, 1_000), entrant(1, 2, 1_000)];
    let scores = by_model(&c, &[(0, 500_000), (1, 600_000)]);
    // Only two of four validators reveal: no quorum.
    let (_, report) = play(&mut c, long_spec(), &entrants, &[0, 1], submission_scores(scores));
    assert_eq!(report.outcome, Outcome::QuorumFailed);
    assert_eq!(report.creator_refund, Amount(0));
    assert_eq!(report.burned, Amount(REWARD + 2 * ENTRY_FEE), "the escrow and the entry fees");
    let fee = creator_fees(&c);
    assert_eq!(c.balance(&creator), before - REWARD - fee, "the creator paid for the models");
}

/// Attack 2 (and the second review's "any exclusion rule"): one party fills every slot in the
/// first block. Under the first rules the squatters netted 69,990 of a 70,000 pool. Now the
/// slots cost at least the prize, so even winning it the squatter ends with less than it had.
#[test]
fn attack_2_squatting_every_slot_costs_more_than_the_prize() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 4);
    let squatter = [0, 1, 2];
    let before = balances(&c, &squatter);
    let entrants = [entrant(0, 1, 1_000), entrant(1, 2, 1_000), entrant(2, 3, 1_000)];
    let scores = by_model(&c, &[(0, 900_000), (1, 800_000), (2, 700_000)]);
    let honest_key = key_of(&c, 3);
    let (task, report) =
        play(&mut c, long_spec(), &entrants, &[0, 1, 2, 3], submission_scores(scores));
    // The honest trainer came one block late (the block after the joins, still in the join
    // window): the task was full. Replayed on the chain as it was after the joins.
    let joined_at = c.task(task).created_at.plus(2);
    let mut replay = TestChain::with_genesis(c.genesis.clone(), Box::new(MemStore::new()));
    for (block, cert) in c.blocks.iter().take_while(|(b, _)| b.height() <= joined_at) {
        replay.ledger.commit_block(block, cert).unwrap();
    }
    let late = replay.sign(&honest_key, TxKind::JoinTask { task });
    let mut scratch = replay.ledger.state().clone();
    let ctx = consensus::state::TxContext {
        height: joined_at.next(),
        index: 0,
        proposer: c.validators[0].account(),
    };
    assert!(matches!(scratch.execute_tx(&late, ctx), Err(TxError::TaskFull { .. })));
    assert_eq!(payout(&report, &c, 0), PRIZE, "the squatter's best model wins the prize");
    let after = balances(&c, &squatter);
    assert!(after < before, "squatting every slot lost {} net", before - after);
    let t = c.task(task);
    assert!(u64::from(t.spec.max_trainers) * t.spec.entry_fee.0 >= PRIZE);
}

/// Attack 3: one model entered from k accounts. The first rules split the pool by gain, so one
/// model from 1/2/3 accounts earned 35,000/46,666/52,500 of 70,000 against one honest rival. Now
/// one account of the party takes the prize at most, and each extra account costs its fee.
/// Function-preserving variants (rescaled layers, permuted units) score the same as the original,
/// so they are the same case.
#[test]
fn attack_3_splitting_one_model_across_accounts_earns_less_than_entering_it_once() {
    let (mut payouts, mut nets) = (Vec::new(), Vec::new());
    for k in 1..=3usize {
        let mut c = TestChain::new(&[10, 10, 10, 10], 4);
        let party: Vec<usize> = (0..k).collect();
        let before = balances(&c, &party);
        // The party's copies score the same; the honest rival (trainer 3) scores the same too and
        // commits in the same block after them.
        let mut entrants: Vec<Entrant> =
            party.iter().map(|t| entrant(*t, 10 + *t as u8, 1_000)).collect();
        entrants.push(entrant(3, 20, 1_000));
        let scores = by_model(&c, &[(0, 600_000), (1, 600_000), (2, 600_000), (3, 600_000)]);
        let four = TaskSpec { max_trainers: 4, ..long_spec() };
        let (_, report) = play(&mut c, four, &entrants, &[0, 1, 2, 3], submission_scores(scores));
        payouts.push(party.iter().map(|t| payout(&report, &c, *t)).sum::<u64>());
        nets.push(i128::from(balances(&c, &party)) - i128::from(before));
    }
    // Before entry fees: the prize is the same however many accounts enter the model.
    assert_eq!(payouts, [PRIZE; 3], "more accounts never earn more");
    // After them, every extra account is a loss.
    assert!(nets[0] > nets[1] && nets[1] > nets[2], "{nets:?}");
}

/// Attack 4: two of four equal validators inflate every score and turn an honest
/// `Rejected{params_mismatch}` into a score. The first rules' "lower" median took the upper of
/// the two middle verdicts on an exact stake tie, so the inflators decided every entry.
#[test]
fn attack_4_half_the_stake_cannot_push_a_verdict_up() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let cheat = c.trainers[0].account();
    let fair = c.trainers[1].account();
    let entrants = [entrant(0, 1, 1_000), entrant(1, 2, 1_000)];
    let (_, report) = play(&mut c, long_spec(), &entrants, &[0, 1, 2, 3], |v, subject| {
        let inflating = v >= 2;
        match subject {
            Subject::Submission(a) if *a == cheat && !inflating => {
                Verdict::Rejected { reason: RejectReason::ParamsMismatch }
            }
            Subject::Submission(a) if *a == cheat => Verdict::scored(900_000),
            Subject::Submission(a) if *a == fair => {
                Verdict::scored(if inflating { 800_000 } else { 500_000 })
            }
            _ => Verdict::scored(100_000),
        }
    });
    let cheat_report = report.trainers.iter().find(|t| t.account == cheat).unwrap();
    assert_eq!(cheat_report.forfeit, Some(ForfeitReason::Rejected));
    assert_eq!(cheat_report.payout, Amount(0));
    let entry = report.entries.iter().find(|e| e.subject == Subject::Submission(fair)).unwrap();
    assert_eq!(entry.consensus, Verdict::scored(500_000), "the honest score stands");
    let paid = |v: usize| {
        let a = c.validators[v].account();
        report.validators.iter().find(|r| r.account == a).unwrap().payout.0
    };
    assert!(paid(2) < paid(0) && paid(3) < paid(1), "inflators earn less than honest validators");
}

/// A new task's reference champions are the latest ones on its training file (at most
/// `CHAMPION_REFERENCES_MAX`, its own base model excluded), read from the champion index: never
/// another file's.
#[test]
fn a_task_references_the_latest_champions_on_its_own_file() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 4);
    let mut other_file = long_spec();
    other_file.dataset.train_sha256 = Hash([77; 32]);
    let crown = |c: &mut TestChain, spec: TaskSpec, model_id: u8, ppm: u32| {
        let (_, report) =
            play(c, spec, &[entrant(0, model_id, 1_000)], &[0, 1, 2, 3], |_, s| match s {
                Subject::Submission(_) => Verdict::scored(ppm),
                _ => Verdict::scored(100_000),
            });
        assert_eq!(report.champion.map(|w| w.model_hash), Some(model(model_id)));
    };
    for i in 1..=6u8 {
        crown(&mut c, long_spec(), i, 500_000 + 50_000 * u32::from(i));
    }
    crown(&mut c, other_file, 20, 990_000);
    let recorded = |c: &TestChain, task: TaskId| -> Vec<Hash> {
        c.task(task).champions.iter().map(|r| r.model_hash).collect()
    };
    let plain = c.create_task(long_spec(), REWARD);
    assert_eq!(recorded(&c, plain), vec![model(3), model(4), model(5), model(6)]);
    let mut based = long_spec();
    based.base_model = Some(BaseModel { model_hash: model(6), params: 1_000 });
    let based = c.create_task(based, REWARD);
    assert_eq!(recorded(&c, based), vec![model(2), model(3), model(4), model(5)]);
    assert_eq!(c.ledger.state().champion_index.len(), 7);
}

/// Attack 6: validators mark the base model Unavailable, the baseline drops to trivial, and a
/// copy of the champion earns the whole pool. Now an unscored base keeps its recorded score, and
/// earlier champions on the same training file are scored entries of the baseline too.
#[test]
fn attack_6_a_copy_of_an_existing_champion_earns_nothing() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 4);
    // Task 1 crowns model 1 (600000).
    let scores = by_model(&c, &[(0, 600_000)]);
    let (_, first) = play(
        &mut c,
        long_spec(),
        &[entrant(0, 1, 1_000)],
        &[0, 1, 2, 3],
        submission_scores(scores),
    );
    assert_eq!(first.champion.as_ref().unwrap().model_hash, model(1));

    // Task 2 fine-tunes from it; the base model is "unavailable" and trainer 1 enters a copy.
    let mut based = long_spec();
    based.base_model = Some(BaseModel { model_hash: model(1), params: 1_000 });
    let copier = [1];
    let before = balances(&c, &copier);
    let scores = by_model(&c, &[(1, 600_000)]);
    let table = submission_scores(scores);
    let (_, report) = play(&mut c, based, &[entrant(1, 1, 1_000)], &[0, 1, 2, 3], |v, s| match s {
        Subject::BaseModel => Verdict::Unavailable,
        other => table(v, other),
    });
    assert_eq!(report.baseline_ppm, 600_000, "the recorded score is the floor");
    assert_eq!(report.champion, None);
    assert_eq!(payout(&report, &c, 1), 0);
    assert!(balances(&c, &copier) < before, "the copy lost its entry fee");

    // Task 3 on the same training file without a base model: the earlier champion is scored as
    // part of the baseline, and a copy of it again earns nothing.
    let t3 = long_spec();
    let scores = by_model(&c, &[(2, 600_000)]);
    let table = submission_scores(scores);
    let (task, report) = play(&mut c, t3, &[entrant(2, 1, 1_000)], &[0, 1, 2, 3], |v, s| match s {
        Subject::Champion(h) if *h == model(1) => Verdict::scored(600_000),
        other => table(v, other),
    });
    assert_eq!(c.task(task).champions.len(), 1);
    assert_eq!(report.baseline_ppm, 600_000);
    assert_eq!(report.champion, None);
}

/// Attack 7: stake was read at finalization, so an old double-sign posted inside the
/// score-reveal window cut one validator's weight and flipped a near-tie. Now stakes are
/// snapshotted when the task opens, and evidence older than `evidence_max_age` is refused.
#[test]
fn attack_7_a_slash_during_scoring_changes_no_verdict_and_old_evidence_is_refused() {
    // Validators 0 and 1 (stakes 40 and 10) say 500000; 2 and 3 (25 each) say 520000: an exact
    // half, so the lower median is 500000. Halving validator 0's stake during scoring would make
    // it 30 of 80 and flip the verdict to 520000.
    let params = Params { evidence_max_age: 30, slash_fraction_ppm: 500_000, ..Params::default() };
    let run = |slash: bool| {
        let mut c = TestChain::with_params(&[40, 10, 25, 25], 2, params.clone());
        let entrants = [entrant(0, 1, 1_000)];
        let task = c.create_task(long_spec(), REWARD);
        let k = key_of(&c, 0);
        c.send(&k, TxKind::JoinTask { task }).unwrap();
        let kind = model_commit(&c, task, &k, &entrants[0].model, &salt(0));
        c.send(&k, kind).unwrap();
        c.open_reveals(task);
        c.send(&k, model_reveal(task, entrants[0].model, salt(0), 1_000)).unwrap();
        if slash {
            // Validator 0 double-signed at height 2; the evidence lands during the task.
            let reporter = key_of(&c, 1);
            c.send(&reporter, c.equivocation(0, 2)).unwrap();
        }
        let (_, report) = score(&mut c, task, &[0, 1, 2, 3], |v, s| match s {
            Subject::Submission(_) => Verdict::scored(if v < 2 { 500_000 } else { 520_000 }),
            _ => Verdict::scored(100_000),
        });
        (c, report)
    };
    let (_, calm) = run(false);
    let (c, slashed) = run(true);
    assert_eq!(c.ledger.state().validators.get(&c.validators[0].account()).unwrap().stake.0, 20);
    assert_eq!(slashed.entries, calm.entries, "the slash changes no verdict");
    assert_eq!(slashed.entries[1].consensus, Verdict::scored(500_000));
    // Evidence older than 30 heights is refused.
    let mut c = c;
    c.advance_to(Height(40));
    let h = c.height().0;
    let old = c.equivocation(1, h - 31);
    let reporter = key_of(&c, 1);
    assert!(matches!(c.send(&reporter, old), Err(TxError::EvidenceTooOld { max_age: 30, .. })));
}

/// Attack 8: `amount × stake × agreed` overflowed u128 at genesis-valid amounts (debug builds
/// panicked and halted the chain; release builds underpaid). Now the payout is exact.
#[test]
fn attack_8_validator_payouts_are_exact_at_the_largest_genesis_amounts() {
    // Stakes and escrow together at the genesis bound (u64::MAX / 4), 201 entries: the product
    // pool × stake × agreed is about 5e38, over u128::MAX (3.4e38).
    let stake = u64::MAX / 16;
    let escrow = u64::MAX / 8;
    let trainers: Vec<TrainerInput> = (1..=200u8)
        .map(|i| TrainerInput {
            account: AccountId([i; 32]),
            bond: Amount(1),
            entry_fee: Amount(0),
            committed_at: Some((Height(1), u32::from(i))),
            reveal: Some(RevealInput { model_hash: Hash([i; 32]), params: 1 }),
        })
        .collect();
    let vector: Vec<VerdictEntry> = std::iter::once(Subject::Baseline)
        .chain(trainers.iter().map(|t| Subject::Submission(t.account)))
        .map(|subject| VerdictEntry { subject, verdict: Verdict::scored(1) })
        .collect();
    let validators: Vec<ValidatorInput<'_>> = (0..2u8)
        .map(|i| ValidatorInput {
            account: AccountId([100 + i; 32]),
            stake,
            verdicts: Some(&vector),
        })
        .collect();
    let report = finalize(&FinalizeInput {
        escrow: Amount(escrow),
        efficiency: &Efficiency { reference_params: 1, penalty_ppm_per_doubling: 0 },
        references: &[],
        trainers: &trainers,
        validators: &validators,
        trainer_share_ppm: 0,
        agreement_tolerance_ppm: 0,
        min_improvement_ppm: 0,
        attested_stake: 2 * stake,
        key_revealed_at: Some(Height(2)),
        cancellation_fee_ppm: 0,
    });
    // Both agree on all 201 entries: each earns exactly half the pool.
    for v in &report.validators {
        assert_eq!(v.payout.0, escrow / 2);
    }
}

/// Attack 9: the smaller holes. Efficiency settings that zero every payout, zero bonds, entry
/// fees and tx fees were accepted; Evidence paid nobody, so reporting earned nothing, and a
/// reward to the reporter would let a validator recoup its own slash through a second account.
#[test]
fn attack_9_free_entry_useless_settings_and_self_reporting_are_refused_or_unprofitable() {
    let mut c = TestChain::new(&[1_600, 1_600, 1_600, 1_600], 2);
    let creator = Keypair::from_seed(c.creator.secret_bytes());
    for (mutate, field) in [
        (Box::new(|s: &mut TaskSpec| s.bond = Amount(0)) as Box<dyn Fn(&mut TaskSpec)>, "bond"),
        (Box::new(|s: &mut TaskSpec| s.entry_fee = Amount(0)), "entry_fee"),
        (
            Box::new(|s: &mut TaskSpec| {
                s.efficiency.reference_params = 1;
                s.efficiency.penalty_ppm_per_doubling = 1_000_000;
            }),
            "efficiency.reference_params",
        ),
    ] {
        let mut bad = long_spec();
        mutate(&mut bad);
        let kind = TxKind::CreateTask { spec: Box::new(bad), reward: Amount(REWARD) };
        let err = c.send(&creator, kind).unwrap_err();
        assert!(
            matches!(&err, TxError::InvalidSpec(SpecError::Invalid { field: f, .. }) if *f == field),
            "{field}: {err}"
        );
    }
    let mut free = c.genesis.clone();
    free.params.tx_fee = Amount(0);
    assert!(consensus::genesis::Genesis::from_json(&free.to_json()).is_err());

    // Validator 3's second account (trainer 0) reports validator 3's own equivocation: it pays
    // the fee and gains nothing; the proposer (validator 0) gets 1/16 of the slash.
    let second = key_of(&c, 0);
    let before = c.balance(&second.account());
    c.send(&second, c.equivocation(3, 1)).unwrap();
    assert_eq!(c.balance(&second.account()), before - c.genesis.params.tx_fee.0);
}

/// The second review's sniper: an auction for slots is won in the last block. There is no
/// auction: a slot costs the same fixed fee for everyone, first come, and a join in the last
/// block of the window cannot displace an earlier one.
#[test]
fn hole_a_late_joiner_cannot_snipe_a_slot() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 4);
    let task = c.create_task(long_spec(), REWARD);
    let early = key_of(&c, 0);
    c.send(&early, TxKind::JoinTask { task }).unwrap();
    // The last block of the join window: two more join, and the sniper, last in the block,
    // finds the task full; its transaction is left out.
    c.advance_to(c.task(task).join_deadline());
    let txs: Vec<SignedTx> =
        [1, 2, 3].iter().map(|t| c.sign(&key_of(&c, *t), TxKind::JoinTask { task })).collect();
    let block = c.commit(txs);
    assert_eq!(block.height(), c.task(task).join_deadline());
    assert_eq!(block.txs.len(), 2);
    let sniper = c.trainers[3].account();
    assert!(!c.ledger.state().submissions.contains(&(task, sniper)));
    assert!(c.ledger.state().submissions.contains(&(task, early.account())));
    assert_eq!(c.task(task).joined, 3);
}

/// The second review's creator refund: when no model beats the bar, refunding the trainer share
/// paid the creator again after the models were public (its own weak entry guaranteed that).
/// Now the share burns once anything was revealed.
#[test]
fn hole_no_champion_after_a_reveal_returns_nothing_to_the_creator() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let creator = c.creator.account();
    let before = c.balance(&creator);
    let scores = by_model(&c, &[(0, 90_000), (1, 95_000)]);
    let entrants = [entrant(0, 1, 1_000), entrant(1, 2, 1_000)];
    let (_, report) =
        play(&mut c, long_spec(), &entrants, &[0, 1, 2, 3], submission_scores(scores));
    assert_eq!(report.champion, None);
    assert_eq!(report.creator_refund, Amount(0));
    assert_eq!(c.balance(&creator), before - REWARD - creator_fees(&c));
}

/// What the creator pays in fees for one task of [`long_spec`]: opening it (tx fee and spec
/// bytes) and revealing its held-out key (tx fee).
fn creator_fees(c: &TestChain) -> u64 {
    2 * c.genesis.params.tx_fee.0 + spec_fee(c, &long_spec())
}

/// What opening a task with `spec` burns for its bytes.
fn spec_fee(c: &TestChain, spec: &TaskSpec) -> u64 {
    consensus::encoding::encode(spec).len() as u64 * c.genesis.params.spec_fee_per_byte.0
}

/// The second review's duplicate detection: no output-distance threshold separates an honest
/// fine-tune from a copy. There is none: a copy of the base model scores what the base scores
/// and earns nothing, while an honest fine-tune that beats it takes the prize.
#[test]
fn hole_an_honest_fine_tune_wins_and_a_copy_of_the_base_earns_nothing() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 3);
    let scores = by_model(&c, &[(0, 600_000)]);
    play(&mut c, long_spec(), &[entrant(0, 1, 1_000)], &[0, 1, 2, 3], submission_scores(scores));
    let mut based = long_spec();
    based.base_model = Some(BaseModel { model_hash: model(1), params: 1_000 });
    let scores = by_model(&c, &[(1, 600_000), (2, 640_000)]);
    let table = submission_scores(scores);
    let entrants = [entrant(1, 1, 1_000), entrant(2, 3, 1_000)];
    let (_, report) = play(&mut c, based, &entrants, &[0, 1, 2, 3], |v, s| match s {
        Subject::BaseModel => Verdict::scored(600_000),
        other => table(v, other),
    });
    assert_eq!(payout(&report, &c, 1), 0, "the copy");
    assert_eq!(payout(&report, &c, 2), PRIZE, "the fine-tune");
}

/// Joins trainers `who` to `task` in one block and has them commit to models `1..` in the next.
fn join_and_commit(c: &mut TestChain, task: TaskId, who: &[usize]) {
    let joins: Vec<SignedTx> =
        who.iter().map(|t| c.sign(&key_of(c, *t), TxKind::JoinTask { task })).collect();
    assert_eq!(c.commit(joins).txs.len(), who.len(), "every trainer joins");
    let commits: Vec<SignedTx> = who
        .iter()
        .map(|t| {
            let k = key_of(c, *t);
            c.sign(&k, model_commit(c, task, &k, &model(*t as u8 + 1), &salt(*t as u8)))
        })
        .collect();
    assert_eq!(c.commit(commits).txs.len(), who.len(), "every trainer commits");
}

/// Attack 5: validators held the held-out file in the clear while trainers trained, so a
/// validator's second account could train on it and win. Now validators hold only the sealed
/// file (it does not open without the key: `trainer::sealed` tests), the node's scorer does
/// not score before the key is on chain (`node/tests/roles_plan.rs`), and the ledger keeps
/// every model sealed until then: a reveal before the key is refused, and the key can only come
/// after the commit deadline, when nobody can commit a model trained on the rows any more.
#[test]
fn attack_5_nobody_trains_on_the_heldout_rows_before_commitments_close() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task(long_spec(), REWARD);
    // Trainer 1 is validator 0's second account.
    join_and_commit(&mut c, task, &[0]);
    let second = key_of(&c, 1);
    c.send(&second, TxKind::JoinTask { task }).unwrap();
    // In the reveal window's heights, but before the key: refused.
    c.advance_to(c.task(task).commit_deadline().next());
    let early = model_reveal(task, model(1), salt(0), 1_000);
    assert!(matches!(c.send(&key_of(&c, 0), early), Err(TxError::KeyNotRevealed(t)) if t == task));
    // The creator reveals the key: the rows are readable from here on, and a model trained on
    // them can no longer be committed.
    let creator = Keypair::from_seed(c.creator.secret_bytes());
    c.send(&creator, TxKind::RevealHeldoutKey { task, key: heldout_key() }).unwrap();
    assert_eq!(c.task(task).heldout_key(), Some(heldout_key()), "validators read it from chain");
    let late = model_commit(&c, task, &second, &model(9), &salt(9));
    assert!(matches!(c.send(&second, late), Err(TxError::OutsideWindow { .. })));
    // The honest trainer reveals now.
    c.send(&key_of(&c, 0), model_reveal(task, model(1), salt(0), 1_000)).unwrap();
}

/// The creator sees the commitments, then withholds the key (hoping to keep its escrow, or to
/// spite trainers whose models it fears). The escrow burns, the trainers get their bonds and
/// entry fees back, and no model is ever revealed: withholding gains the creator nothing.
#[test]
fn creator_withholding_the_key_burns_the_escrow_and_returns_bonds_and_entry_fees() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let creator = c.creator.account();
    let creator_before = c.balance(&creator);
    let trainers_before = balances(&c, &[0, 1]);
    let burned_before = c.ledger.state().meta().burned.0;
    let task = c.create_task(long_spec(), REWARD);
    join_and_commit(&mut c, task, &[0, 1]);
    // Everyone who joined has committed: the commit window closes at the join deadline, and the
    // key deadline is counted from there.
    c.advance_to(c.task(task).join_deadline().next());
    let key_deadline = c.task(task).key_deadline();
    assert_eq!(key_deadline, c.task(task).join_deadline().plus(long_spec().windows.key));
    c.advance_to(key_deadline);
    assert_eq!(c.task(task).report, None, "open until the key deadline");
    c.commit(vec![]);
    let report = c.task(task).report.expect("finalized at the key deadline");
    assert_eq!(report.outcome, Outcome::KeyWithheld);
    assert_eq!(report.key_revealed_at, None);
    assert_eq!(report.attested_stake, 40);
    assert_eq!(report.creator_refund, Amount(0), "withholding refunds nothing");
    assert_eq!(report.burned, Amount(REWARD));
    for t in &report.trainers {
        assert_eq!((t.bond_refund, t.entry_fee_refund), (Amount(1_000), Amount(ENTRY_FEE)));
    }
    let fee = c.genesis.params.tx_fee.0;
    assert_eq!(balances(&c, &[0, 1]), trainers_before - 4 * fee, "trainers lose only tx fees");
    assert_eq!(
        c.balance(&creator),
        creator_before - REWARD - fee - spec_fee(&c, &long_spec()),
        "the creator lost the escrow"
    );
    let state = c.ledger.state();
    let tx_fees = u64::try_from(c.blocks.iter().map(|(b, _)| b.txs.len()).sum::<usize>()).unwrap();
    assert_eq!(
        state.meta().burned.0 - burned_before,
        REWARD + tx_fees * fee + spec_fee(&c, &long_spec()),
        "the ledger burned the escrow, and only it beside fees"
    );
    // The key arrives too late, and no model can be revealed.
    let k = Keypair::from_seed(c.creator.secret_bytes());
    let key = TxKind::RevealHeldoutKey { task, key: heldout_key() };
    assert!(matches!(c.send(&k, key), Err(TxError::TaskClosed(t)) if t == task));
    let reveal = model_reveal(task, model(1), salt(0), 1_000);
    assert!(matches!(c.send(&key_of(&c, 0), reveal), Err(TxError::TaskClosed(_))));
}

/// Too few validators hold the sealed held-out file: the task cannot be scored fairly, so it
/// is cancelled at the join deadline, before anyone trains in earnest. The creator gets the
/// escrow back less the genesis cancellation fee (burned); trainers get bonds and entry fees.
#[test]
fn too_few_attestations_cancel_the_task_at_the_join_deadline() {
    // Three of four equal validators attest: 3 × 30 > 2 × 40, the task goes on.
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task_unattested(long_spec(), REWARD);
    c.attest(task, &[0, 1, 2]);
    c.advance_to(c.task(task).join_deadline().next());
    assert!(c.task(task).report.is_none() && c.task(task).attestation_quorum());

    // Two of four (exactly half, and below 2/3): cancelled at the join deadline.
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let creator = c.creator.account();
    let creator_before = c.balance(&creator);
    let trainers_before = balances(&c, &[0, 1]);
    let task = c.create_task_unattested(long_spec(), REWARD);
    c.attest(task, &[0, 1]);
    join_and_commit(&mut c, task, &[0, 1]);
    let join_deadline = c.task(task).join_deadline();
    c.advance_to(join_deadline);
    assert_eq!(c.task(task).report, None);
    c.commit(vec![]);
    assert_eq!(c.height(), join_deadline);
    let report = c.task(task).report.expect("cancelled at the join deadline");
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!((report.attested_stake, report.total_stake), (20, 40));
    let fee = REWARD * u64::from(c.genesis.params.cancellation_fee_ppm) / 1_000_000;
    assert!(fee > 0);
    assert_eq!(report.cancellation_fee, Amount(fee));
    assert_eq!(report.creator_refund, Amount(REWARD - fee));
    assert_eq!(report.burned, Amount(fee), "only the cancellation fee burns");
    let tx_fee = c.genesis.params.tx_fee.0;
    assert_eq!(balances(&c, &[0, 1]), trainers_before - 4 * tx_fee, "bonds and entry fees back");
    assert_eq!(
        c.balance(&creator),
        creator_before - fee - tx_fee - spec_fee(&c, &long_spec()),
        "the creator pays the fee and nothing more"
    );
    // Nothing touches a cancelled task, though its commit window's heights are still open.
    let commit = model_commit(&c, task, &key_of(&c, 0), &model(7), &salt(7));
    assert!(matches!(c.send(&key_of(&c, 0), commit), Err(TxError::TaskClosed(t)) if t == task));
}

/// Only a validator of the task's snapshot attests, once, in the join window.
#[test]
fn attestations_come_from_snapshot_validators_once_in_the_join_window() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task_unattested(long_spec(), REWARD);
    let trainer = key_of(&c, 0);
    let attest = TxKind::AttestHeldout { task };
    assert!(matches!(
        c.send(&trainer, attest.clone()),
        Err(TxError::NotValidator(a)) if a == trainer.account()
    ));
    let v0 = Keypair::from_seed(c.validators[0].secret_bytes());
    c.send(&v0, attest.clone()).unwrap();
    assert!(matches!(c.send(&v0, attest.clone()), Err(TxError::AlreadyAttested(t)) if t == task));
    assert_eq!(c.task(task).attested_stake, 10, "a second attestation adds no stake");
    let v1 = Keypair::from_seed(c.validators[1].secret_bytes());
    c.advance_to(c.task(task).join_deadline().next());
    // Past the join window the task is cancelled (one of four attested): closed either way.
    assert!(matches!(c.send(&v1, attest), Err(TxError::TaskClosed(_))));
    // On a task that went on, a late attestation is outside the window.
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task_unattested(long_spec(), REWARD);
    c.attest(task, &[0, 1, 2]);
    c.advance_to(c.task(task).join_deadline().next());
    let v3 = Keypair::from_seed(c.validators[3].secret_bytes());
    let late = c.send(&v3, TxKind::AttestHeldout { task });
    assert!(
        matches!(late, Err(TxError::OutsideWindow { action: "attest_heldout", .. })),
        "{late:?}"
    );
}

/// Only the creator reveals the key, only the committed key, only after the commit deadline
/// and by the key deadline, and once.
#[test]
fn the_key_comes_from_the_creator_matches_its_commitment_and_keeps_its_window() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task(long_spec(), REWARD);
    let creator = Keypair::from_seed(c.creator.secret_bytes());
    let reveal = |key| TxKind::RevealHeldoutKey { task, key };
    // A trainer joins and has not committed, so the commit window runs to its deadline.
    c.send(&key_of(&c, 0), TxKind::JoinTask { task }).unwrap();
    // Before the commit deadline: models trained on the rows could still be committed.
    c.advance_to(c.task(task).commit_deadline());
    let early = c.send(&creator, reveal(heldout_key()));
    assert!(matches!(early, Err(TxError::OutsideWindow { action: "reveal_heldout_key", .. })));
    c.advance_to(c.task(task).commit_deadline().next());
    let stranger = key_of(&c, 0);
    assert!(matches!(c.send(&stranger, reveal(heldout_key())), Err(TxError::NotCreator(_))));
    let wrong = consensus::commitment::HeldoutKey(Hash([8; 32]));
    assert!(matches!(c.send(&creator, reveal(wrong)), Err(TxError::WrongKey(t)) if t == task));
    c.send(&creator, reveal(heldout_key())).unwrap();
    let at = c.height();
    assert_eq!(c.task(task).key, Some((heldout_key(), at)));
    assert!(matches!(c.send(&creator, reveal(heldout_key())), Err(TxError::KeyAlreadyRevealed(_))));
    // The key is part of the task record, so of the state root and its proofs.
    let (value, proof) = c.ledger.state().prove(Tree::Tasks, &encode(&task)).unwrap();
    let value = value.expect("the task record");
    let record: consensus::state::Task =
        consensus::encoding::decode("task", &value, 1 << 20).unwrap();
    assert_eq!(record.key, Some((heldout_key(), at)));
    let root = c.ledger.state().root();
    proof.verify(&root, Tree::Tasks, &encode(&task), Some(&value)).unwrap();

    // After the key deadline: on a fresh task that never saw its key, the task has ended.
    let task = c.create_task(long_spec(), REWARD);
    c.advance_to(c.task(task).key_deadline().next());
    let late = c.send(&creator, TxKind::RevealHeldoutKey { task, key: heldout_key() });
    assert!(matches!(late, Err(TxError::TaskClosed(_))), "{late:?}");
    assert_eq!(c.task(task).report.unwrap().outcome, Outcome::KeyWithheld);
}
