//! Property tests: conservation, storage determinism, and what dishonest validators earn.

use consensus::chain::Ledger;
use consensus::finalize::{
    FinalizeInput, Outcome, RevealInput, TrainerInput, ValidatorInput, finalize,
};
use consensus::genesis::Params;
use consensus::storage::{MemStore, SledStore};
use consensus::task::Efficiency;
use consensus::testing::*;
use consensus::tx::TxKind;
use consensus::types::{AccountId, Amount, Hash, Height};
use consensus::verdict::{RejectReason, Subject, Verdict, VerdictEntry};
use proptest::prelude::*;

fn verdict_strategy() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        1 => Just(Verdict::Rejected { reason: RejectReason::Malformed }),
        1 => Just(Verdict::Unavailable),
        6 => (0u32..=1_000_000).prop_map(Verdict::scored),
    ]
}

/// Builds the verdict vectors of `validators` vectors for these trainers from a flat list.
fn vectors_for(inputs: &[TrainerInput], verdicts: &[Vec<Verdict>]) -> Vec<Vec<VerdictEntry>> {
    let subjects: Vec<Subject> = std::iter::once(Subject::Baseline)
        .chain(inputs.iter().filter(|t| t.reveal.is_some()).map(|t| Subject::Submission(t.account)))
        .collect();
    verdicts
        .iter()
        .map(|vs| {
            subjects
                .iter()
                .zip(vs)
                .map(|(s, v)| VerdictEntry { subject: *s, verdict: *v })
                .collect()
        })
        .collect()
}

/// Stakes and balances stay below `u64::MAX / 4` together (genesis refuses more), so escrow,
/// bonds and every stake are drawn from that whole range.
const SUPPLY_MAX: u64 = u64::MAX / 4;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (c) Payouts + refunds + burns = escrow + bonds + entry fees, exactly, over the full
    /// genesis ranges, with no overflow, on every path (cancelled for too few attestations, key
    /// withheld, quorum failed, finalized); and (b) the creator's refund is 0 whenever any model
    /// was revealed. A cancellation returns every bond and entry fee and the escrow less the
    /// fee; a withheld key returns every bond and entry fee and nothing to the creator.
    #[test]
    fn finalization_conserves_exactly_and_never_refunds_the_creator_after_a_reveal(
        escrow in 1u64..=SUPPLY_MAX,
        bond_frac in 0u64..=1_000_000,
        fee_frac in 0u64..=1_000_000,
        share in 0u32..=1_000_000,
        tolerance in 0u32..=1_000_000,
        min_improvement in 0u32..=1_000_000,
        cancellation_fee in 0u32..=1_000_000,
        stake_fracs in prop::collection::vec(1u64..=1_000_000, 1..8),
        trainers in prop::collection::vec((any::<bool>(), 1u64..=u64::MAX, 0u8..4, 0u32..4), 0..12),
        verdicts in prop::collection::vec(prop::collection::vec(verdict_strategy(), 13), 8),
        revealed in prop::collection::vec(any::<bool>(), 8),
        attested in prop::collection::vec(prop::bool::weighted(0.8), 8),
        key_on_chain in prop::bool::weighted(0.8),
        reference in 1u64..=u64::MAX,
        penalty in 0u32..=1_000_000,
    ) {
        // Bonds, entry fees and stakes as fractions of what the supply bound leaves.
        let n = trainers.len().max(1) as u64;
        let locked = (SUPPLY_MAX - escrow) / n / 2 / 1_000_000;
        let bond = locked * bond_frac;
        let entry_fee = locked * fee_frac;
        let stake_sum: u64 = stake_fracs.iter().sum();
        let stakes: Vec<u64> = stake_fracs.iter().map(|f| (SUPPLY_MAX / stake_sum * f).max(1)).collect();
        let inputs: Vec<TrainerInput> = trainers.iter().enumerate().map(|(i, (reveals, params, model, at))| TrainerInput {
            account: AccountId([i as u8 + 1; 32]),
            bond: Amount(bond),
            entry_fee: Amount(entry_fee),
            committed_at: Some((Height(5), *at)),
            reveal: reveals.then_some(RevealInput { model_hash: Hash([*model; 32]), params: *params }),
        }).collect();
        let vectors = vectors_for(&inputs, &verdicts);
        let validators: Vec<ValidatorInput<'_>> = stakes.iter().enumerate().map(|(i, s)| ValidatorInput {
            account: AccountId([200 + i as u8; 32]),
            stake: *s,
            verdicts: revealed[i].then_some(vectors[i].as_slice()),
        }).collect();
        let attested_stake: u64 = stakes.iter().zip(&attested).filter(|(_, a)| **a).map(|(s, _)| *s).sum();
        let efficiency = Efficiency { reference_params: reference, penalty_ppm_per_doubling: penalty };
        let report = finalize(&FinalizeInput {
            escrow: Amount(escrow),
            efficiency: &efficiency,
            references: &[],
            trainers: &inputs,
            validators: &validators,
            trainer_share_ppm: share,
            agreement_tolerance_ppm: tolerance,
            min_improvement_ppm: min_improvement,
            attested_stake,
            key_revealed_at: key_on_chain.then_some(Height(20)),
            cancellation_fee_ppm: cancellation_fee,
        });
        let paid: u128 = report.trainers.iter().map(|t| u128::from(t.payout.0) + u128::from(t.bond_refund.0) + u128::from(t.entry_fee_refund.0)).sum::<u128>()
            + report.validators.iter().map(|v| u128::from(v.payout.0)).sum::<u128>()
            + u128::from(report.creator_refund.0)
            + u128::from(report.burned.0);
        let inflow = u128::from(escrow) + (u128::from(bond) + u128::from(entry_fee)) * inputs.len() as u128;
        prop_assert_eq!(paid, inflow);
        let any_revealed = inputs.iter().any(|t| t.reveal.is_some());
        if any_revealed {
            prop_assert_eq!(report.creator_refund, Amount(0));
        }
        let total: u64 = stakes.iter().sum();
        let everything_back = report.trainers.iter().all(|t| {
            t.bond_refund == Amount(bond) && t.entry_fee_refund == Amount(entry_fee) && t.payout == Amount(0)
        });
        if 3 * u128::from(attested_stake) <= 2 * u128::from(total) {
            prop_assert_eq!(report.outcome, Outcome::Cancelled);
            prop_assert!(everything_back);
            let fee = u128::from(escrow) * u128::from(cancellation_fee) / 1_000_000;
            prop_assert_eq!(u128::from(report.cancellation_fee.0), fee);
            if !any_revealed {
                prop_assert_eq!(u128::from(report.creator_refund.0), u128::from(escrow) - fee);
                prop_assert_eq!(u128::from(report.burned.0), fee);
            }
        } else if !key_on_chain {
            prop_assert_eq!(report.outcome, Outcome::KeyWithheld);
            prop_assert!(everything_back);
            prop_assert_eq!(report.creator_refund, Amount(0));
            prop_assert_eq!(report.burned, Amount(escrow));
        } else {
            prop_assert!(report.trainers.iter().all(|t| t.entry_fee_refund == Amount(0)), "entry fees burn");
        }
    }
}

/// One submission for the split and squat properties: score, params, commit position.
type Entry = (u32, u64, u32);

/// Finalizes a task whose validators all report `scores` (baseline first) for `entries`, entered
/// by accounts `1..`; returns the payout of each entry's account.
fn honest_payouts(entries: &[Entry], baseline: u32, escrow: u64, bond: u64) -> Vec<u64> {
    let inputs: Vec<TrainerInput> = entries
        .iter()
        .enumerate()
        .map(|(i, (_, params, at))| TrainerInput {
            account: AccountId([i as u8 + 1; 32]),
            bond: Amount(bond),
            entry_fee: Amount(bond / 2),
            committed_at: Some((Height(5), *at)),
            reveal: Some(RevealInput { model_hash: Hash([i as u8 + 1; 32]), params: *params }),
        })
        .collect();
    let verdicts: Vec<Verdict> =
        std::iter::once(baseline).chain(entries.iter().map(|e| e.0)).map(Verdict::scored).collect();
    let vectors = vectors_for(&inputs, &[verdicts.clone(), verdicts.clone(), verdicts]);
    let validators: Vec<ValidatorInput<'_>> = (0..3)
        .map(|i| ValidatorInput {
            account: AccountId([200 + i as u8; 32]),
            stake: 10,
            verdicts: Some(vectors[i].as_slice()),
        })
        .collect();
    let report = finalize(&FinalizeInput {
        escrow: Amount(escrow),
        efficiency: &Efficiency { reference_params: 1_000, penalty_ppm_per_doubling: 50_000 },
        references: &[],
        trainers: &inputs,
        validators: &validators,
        trainer_share_ppm: 700_000,
        agreement_tolerance_ppm: 1_000,
        min_improvement_ppm: 0,
        attested_stake: 30,
        key_revealed_at: Some(Height(6)),
        cancellation_fee_ppm: 10_000,
    });
    inputs
        .iter()
        .map(|t| report.trainers.iter().find(|r| r.account == t.account).unwrap())
        .map(|r| r.payout.0 + r.bond_refund.0)
        .collect()
}

fn entry_strategy() -> impl Strategy<Value = Entry> {
    (0u32..=1_000_000, 1u64..10_000, 0u32..64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// (a) Split-proof: a party entering its models from k accounts never earns more than its
    /// best model entered alone against the same others, and pays k entry fees instead of one.
    #[test]
    fn k_accounts_never_earn_more_than_the_best_model_alone(
        party in prop::collection::vec(entry_strategy(), 1..5),
        others in prop::collection::vec(entry_strategy(), 0..5),
        baseline in 0u32..=1_000_000,
        escrow in 1u64..=SUPPLY_MAX / 2,
        bond in 1u64..1_000_000,
    ) {
        let entry_fee = escrow / 10 + 1;
        let k = party.len() as u64;
        let mut all = party.clone();
        all.extend(&others);
        let together: u64 = honest_payouts(&all, baseline, escrow, bond)[..party.len()].iter().sum();
        let net_together = i128::from(together) - i128::from(k * bond);
        let best_alone: u64 = party.iter().map(|m| {
            let mut one = vec![*m];
            one.extend(&others);
            honest_payouts(&one, baseline, escrow, bond)[0]
        }).max().unwrap();
        let net_alone = i128::from(best_alone) - i128::from(bond);
        prop_assert!(net_together <= net_alone, "{} accounts earned {} net, best alone {}", k, net_together, net_alone);
        // Entry fees only widen the gap: k fees against one.
        prop_assert!(net_together - i128::from(k * entry_fee) <= net_alone - i128::from(entry_fee));
    }

    /// (a) Squat-proof: a party that takes every slot, at the least entry fee the ledger allows,
    /// with any models, never ends with more than it put in (entry fees and bonds).
    #[test]
    fn holding_every_slot_never_pays(
        models in prop::collection::vec(entry_strategy(), 1..9),
        baseline in 0u32..=1_000_000,
        escrow in 1u64..=SUPPLY_MAX / 4,
        bond in 1u64..1_000_000,
    ) {
        let mut spec = spec(4);
        spec.max_trainers = models.len() as u32;
        let entry_fee = spec.entry_fee_min(Amount(escrow), 700_000);
        spec.entry_fee = entry_fee;
        Params::default().check_task(&spec, Amount(escrow)).unwrap();
        let back: u128 = honest_payouts(&models, baseline, escrow, bond).iter().map(|p| u128::from(*p)).sum();
        let put_in = u128::from(entry_fee.0 + bond) * models.len() as u128;
        prop_assert!(back <= put_in, "squatter got {} back for {} put in", back, put_in);
    }
}

/// A random workload: transfers between trainers and a whole task lifecycle.
fn run_workload(chain: &mut TestChain, transfers: &[(usize, usize, u64)]) {
    for (i, (from, to, amount)) in transfers.iter().enumerate() {
        let k = key(2, *from);
        let to = key(2, *to).account();
        let tx = chain.sign(&k, TxKind::Transfer { to, amount: Amount(*amount) });
        let _ = chain.submit(tx);
        if i % 3 == 0 {
            chain.commit(vec![]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// The same blocks give the same state root in memory, in a fresh sled store, and in that
    /// sled store after it is closed and reopened; and the stored chain replays.
    #[test]
    fn same_blocks_same_root_in_every_store(
        transfers in prop::collection::vec((0usize..3, 0usize..3, 0u64..2_000_000), 1..12),
    ) {
        let mut mem = TestChain::new(&[10, 20, 30, 40], 3);
        run_workload(&mut mem, &transfers);
        let root = mem.ledger.state_root();

        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let mut sled = Ledger::open(Box::new(store), &mem.genesis).unwrap();
            for (block, cert) in &mem.blocks {
                sled.commit_block(block, cert).unwrap();
            }
            prop_assert_eq!(sled.state_root(), root);
        }
        let reopened = Ledger::open(Box::new(SledStore::open(dir.path()).unwrap()), &mem.genesis).unwrap();
        prop_assert_eq!(reopened.state_root(), root);
        prop_assert_eq!(reopened.height(), mem.ledger.height());
        let report = consensus::chain::replay(reopened.store(), &mem.genesis).unwrap();
        prop_assert_eq!(report.state_root, root);

        let fresh = Ledger::open(Box::new(MemStore::new()), &mem.genesis).unwrap();
        prop_assert_ne!(fresh.state_root(), root, "the workload changed the state");
    }
}

/// How a validator behaves.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Honest,
    /// Reports every score raised by more than the tolerance.
    Inflated(u32),
    /// Reports one score for everything without evaluating.
    Constant(u32),
    /// Reports random scores.
    Random,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// (d) While honest validators hold over half the stake (consensus assumes over two thirds),
    /// the inflating, constant and random validators each earn less per unit of stake than every
    /// honest validator, and the consensus verdicts are those of an all-honest network. Stakes
    /// come from three values, so equal stakes (exact ties between an honest validator and a
    /// liar) are common.
    #[test]
    fn dishonest_validators_earn_less_and_change_nothing(
        honest_stakes in prop::collection::vec((1u64..=3).prop_map(|s| s * 1_000), 2..6),
        liar_stakes in prop::collection::vec((1u64..=3).prop_map(|s| s * 1_000), 3),
        truth in prop::collection::vec(0u32..300, 2..6),
        inflate in 1_001u32..100_000,
        constant in 0u32..1_000_000,
        random in prop::collection::vec(0u32..1_000_000, 6),
    ) {
        let honest: u64 = honest_stakes.iter().sum();
        let liars: u64 = liar_stakes.iter().sum();
        prop_assume!(honest > liars);
        // Distinct true scores, more than twice the tolerance apart (entry 0 is the baseline).
        let truth: Vec<u32> = truth.iter().map(|t| t * 3_000).collect();
        let mut distinct = truth.clone();
        distinct.sort();
        distinct.dedup();
        prop_assume!(distinct.len() == truth.len());
        // The random liar must miss at least one entry, or it was honest by luck.
        prop_assume!(truth.iter().zip(&random).any(|(t, r)| t.abs_diff(*r) > 1_000));

        let trainers: Vec<TrainerInput> = (1..truth.len()).map(|i| TrainerInput {
            account: AccountId([i as u8; 32]),
            bond: Amount(100),
            entry_fee: Amount(10),
            committed_at: Some((Height(3), i as u32)),
            reveal: Some(RevealInput { model_hash: Hash([i as u8; 32]), params: 1 }),
        }).collect();
        let subjects: Vec<Subject> = std::iter::once(Subject::Baseline)
            .chain(trainers.iter().map(|t| Subject::Submission(t.account)))
            .collect();
        let report_of = |behaviour: &[Behaviour], stakes: &[u64]| {
            let vectors: Vec<Vec<VerdictEntry>> = behaviour.iter().map(|b| {
                subjects.iter().zip(&truth).enumerate().map(|(j, (s, t))| {
                    let score = match b {
                        Behaviour::Honest => *t,
                        Behaviour::Inflated(by) => (t + by).min(1_000_000),
                        Behaviour::Constant(c) => *c,
                        Behaviour::Random => random[j],
                    };
                    VerdictEntry { subject: *s, verdict: Verdict::scored(score) }
                }).collect()
            }).collect();
            let validators: Vec<ValidatorInput<'_>> = stakes.iter().enumerate().map(|(i, s)| ValidatorInput {
                account: AccountId([100 + i as u8; 32]),
                stake: *s,
                verdicts: Some(vectors[i].as_slice()),
            }).collect();
            finalize(&FinalizeInput {
                escrow: Amount(SUPPLY_MAX),
                efficiency: &Efficiency { reference_params: 1, penalty_ppm_per_doubling: 0 },
                references: &[],
                trainers: &trainers,
                validators: &validators,
                trainer_share_ppm: 500_000,
                agreement_tolerance_ppm: 1_000,
                min_improvement_ppm: 0,
                attested_stake: stakes.iter().sum(),
                key_revealed_at: Some(Height(4)),
                cancellation_fee_ppm: 10_000,
            })
        };
        let mut stakes = honest_stakes.clone();
        stakes.extend(&liar_stakes);
        let mut behaviour = vec![Behaviour::Honest; honest_stakes.len()];
        behaviour.extend([Behaviour::Inflated(inflate), Behaviour::Constant(constant), Behaviour::Random]);
        let mixed = report_of(&behaviour, &stakes);
        let all_honest = report_of(&vec![Behaviour::Honest; stakes.len()], &stakes);
        prop_assert_eq!(&mixed.entries, &all_honest.entries);

        // Per unit of stake, compared exactly: payout_a × stake_b vs payout_b × stake_a.
        let by_account = |i: usize| mixed.validators.iter().find(|v| v.account == AccountId([100 + i as u8; 32])).unwrap();
        let n_honest = honest_stakes.len();
        for (liar, lied) in behaviour.iter().enumerate().skip(n_honest) {
            let l = by_account(liar);
            for h in 0..n_honest {
                let hv = by_account(h);
                prop_assert!(
                    u128::from(l.payout.0) * u128::from(hv.stake) < u128::from(hv.payout.0) * u128::from(l.stake),
                    "liar {:?} earned {} for stake {}, honest earned {} for stake {}",
                    lied, l.payout, l.stake, hv.payout, hv.stake
                );
            }
        }
    }
}
