//! Every rejection rule of the ledger, one test each, plus the task lifecycle.

use consensus::block::tx_root;
use consensus::chain::{BlockError, build_block};
use consensus::crypto::{BatchItem, Domain, Signature, SignatureError, Verifier};
use consensus::encoding::encode;
use consensus::state::{LayoutError, Phase, TxError};
use consensus::testing::*;
use consensus::tx::{SignedTx, Tx, TxKind, verify_txs};
use consensus::types::{AccountId, Amount, Height, Nonce, TaskId};
use consensus::verdict::{Subject, Verdict, VerdictEntry};
use curve25519_dalek::constants::EIGHT_TORSION;

fn transfer(to: AccountId, amount: u64) -> TxKind {
    TxKind::Transfer { to, amount: Amount(amount) }
}

#[test]
fn transfer_moves_balance_and_burns_the_fee() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let (a, b) = (c.trainers[0].account(), c.trainers[1].account());
    let t0 = c.trainers[0].clone_key();
    c.send(&t0, transfer(b, 500)).unwrap();
    let fee = c.genesis.params.tx_fee.0;
    assert_eq!(c.balance(&a), BALANCE - 500 - fee);
    assert_eq!(c.balance(&b), BALANCE + 500);
    assert_eq!(c.ledger.state().meta().burned, Amount(fee));
}

#[test]
fn bad_signature_is_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let mut tx = c.sign(&c.trainers[0].clone_key(), transfer(c.trainers[1].account(), 5));
    tx.signature.0[5] ^= 0x40;
    assert!(matches!(c.submit(tx.clone()), Err(TxError::BadSignature(_))));
    // Signed by another key than the signer it names.
    let mut forged = c.sign(&c.trainers[1].clone_key(), transfer(c.trainers[1].account(), 5));
    forged.signer = c.trainers[0].account();
    assert!(matches!(c.submit(forged), Err(TxError::BadSignature(SignatureError::Invalid { .. }))));
}

#[test]
fn weak_key_is_rejected_on_single_and_batch_paths() {
    // The identity point with signature R = identity, s = 0 verifies under the plain
    // cofactorless equation for every message: the classic small-order forgery.
    let identity = EIGHT_TORSION[0].compress().to_bytes();
    let weak = AccountId(identity);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&identity);
    let sig = Signature(sig);
    let v = Verifier::new();
    let single = v.verify(Domain::Tx, "crucible-test", &weak, b"anything", &sig);
    assert!(matches!(single, Err(SignatureError::WeakKey { .. })), "{single:?}");

    let c = TestChain::new(&[10, 10, 10, 10], 1);
    let good = c.sign(&c.trainers[0].clone_key(), transfer(weak, 1));
    let bad = SignedTx {
        tx: Tx { chain_id: c.chain_id(), nonce: Nonce(0), kind: transfer(weak, 1) },
        signer: weak,
        signature: sig,
    };
    assert!(matches!(
        verify_txs(&v, &c.chain_id(), &[good.clone(), bad.clone()]),
        Err((1, SignatureError::WeakKey { .. }))
    ));
    let msg = encode(&bad.tx);
    let items = [BatchItem { domain: Domain::Tx, signer: &weak, message: &msg, signature: &sig }];
    assert!(matches!(
        v.verify_batch(&c.chain_id(), &items),
        Err((0, SignatureError::WeakKey { .. }))
    ));
    // Every small-order point is refused as a key.
    for point in EIGHT_TORSION {
        let account = AccountId(point.compress().to_bytes());
        assert!(v.verify(Domain::Tx, "c", &account, b"m", &sig).is_err());
    }
}

#[test]
fn wrong_chain_id_is_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let k = c.trainers[0].clone_key();
    let tx = SignedTx::sign(
        &k,
        Tx { chain_id: "other".into(), nonce: Nonce(0), kind: transfer(k.account(), 1) },
    );
    assert!(matches!(c.submit(tx), Err(TxError::WrongChain { .. })));
}

#[test]
fn replayed_and_skipped_nonces_are_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let k = c.trainers[0].clone_key();
    let to = c.trainers[1].account();
    let first = c.sign_with_nonce(&k, 0, transfer(to, 1));
    c.submit(first.clone()).unwrap();
    assert!(matches!(
        c.submit(first),
        Err(TxError::NonceReplayed { expected: Nonce(1), found: Nonce(0) })
    ));
    let skip = c.sign_with_nonce(&k, 5, transfer(to, 1));
    assert!(matches!(
        c.submit(skip),
        Err(TxError::NonceGap { expected: Nonce(1), found: Nonce(5) })
    ));
}

#[test]
fn insufficient_balance_counts_the_fee() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let k = c.trainers[0].clone_key();
    let to = c.trainers[1].account();
    // The whole balance leaves nothing for the fee.
    assert!(matches!(c.send(&k, transfer(to, BALANCE)), Err(TxError::InsufficientBalance { .. })));
    let fee = c.genesis.params.tx_fee.0;
    c.send(&k, transfer(to, BALANCE - fee)).unwrap();
    assert_eq!(c.balance(&k.account()), 0);
    // An account with nothing cannot even pay the fee.
    assert!(matches!(c.send(&k, transfer(to, 0)), Err(TxError::InsufficientBalance { .. })));
}

#[test]
fn a_block_holding_an_invalid_tx_is_invalid() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let k = c.trainers[0].clone_key();
    let good = c.sign(&k, transfer(c.trainers[1].account(), 1));
    let replay = good.clone();
    let mut block =
        build_block(c.ledger.state(), vec![good], 9_000, c.validators[0].account(), None).unwrap();
    assert_eq!(block.txs.len(), 1);
    block.txs = [block.txs[0].clone(), replay].into();
    block.header.tx_root = tx_root(&block.txs);
    let err = c.ledger.check_block(&block).unwrap_err();
    assert!(
        matches!(&err, BlockError::InvalidTx { index: 1, error, .. } if matches!(**error, TxError::NonceReplayed { .. })),
        "{err}"
    );
    // An empty block is fine.
    c.commit(vec![]);
    assert_eq!(c.height(), Height(1));
}

#[test]
fn validators_and_creators_cannot_join() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task(spec(4), 10_000);
    let v = c.validators[0].clone_key();
    assert!(matches!(c.send(&v, TxKind::JoinTask { task }), Err(TxError::ValidatorCannotTrain(_))));
    let creator = c.creator.clone_key();
    assert!(matches!(
        c.send(&creator, TxKind::JoinTask { task }),
        Err(TxError::CreatorCannotTrain(_))
    ));
}

#[test]
fn join_over_max_trainers_is_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 4);
    let task = c.create_task(spec(4), 10_000);
    for i in 0..3 {
        let k = c.trainers[i].clone_key();
        c.send(&k, TxKind::JoinTask { task }).unwrap();
    }
    let k = c.trainers[0].clone_key();
    assert!(matches!(c.send(&k, TxKind::JoinTask { task }), Err(TxError::AlreadyJoined(_))));
    let k = c.trainers[3].clone_key();
    assert!(matches!(c.send(&k, TxKind::JoinTask { task }), Err(TxError::TaskFull { max: 3, .. })));
    assert_eq!(c.task(task).joined, 3);
    assert_eq!(
        c.balance(&c.trainers[0].account()),
        BALANCE - 1_000 - ENTRY_FEE - c.genesis.params.tx_fee.0,
        "joining locks the bond and burns the entry fee"
    );
}

#[test]
fn commit_after_its_deadline_is_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task(spec(4), 10_000);
    let k = c.trainers[0].clone_key();
    c.send(&k, TxKind::JoinTask { task }).unwrap();
    c.open_reveals(task);
    let kind = model_commit(&c, task, &k, &model(1), &salt(1));
    assert!(matches!(c.send(&k, kind), Err(TxError::OutsideWindow { action: "commit_model", .. })));
}

#[test]
fn a_commitment_already_on_the_ledger_is_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task(spec(4), 10_000);
    let (a, b) = (c.trainers[0].clone_key(), c.trainers[1].clone_key());
    c.send(&a, TxKind::JoinTask { task }).unwrap();
    c.send(&b, TxKind::JoinTask { task }).unwrap();
    let kind = model_commit(&c, task, &a, &model(1), &salt(1));
    c.send(&a, kind.clone()).unwrap();
    // b copies a's commitment verbatim.
    assert!(matches!(c.send(&b, kind), Err(TxError::DuplicateCommitment(_))));
    // And a cannot commit twice.
    let again = model_commit(&c, task, &a, &model(2), &salt(2));
    assert!(matches!(c.send(&a, again), Err(TxError::AlreadyCommitted(_))));
}

#[test]
fn reveals_must_match_and_fall_in_their_window() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = c.create_task(spec(4), 10_000);
    let a = c.trainers[0].clone_key();
    c.send(&a, TxKind::JoinTask { task }).unwrap();
    let kind = model_commit(&c, task, &a, &model(1), &salt(1));
    c.send(&a, kind).unwrap();
    // Too early: still in the commit window.
    let err = c.send(&a, model_reveal(task, model(1), salt(1), 500)).unwrap_err();
    assert!(matches!(err, TxError::OutsideWindow { action: "reveal_model", .. }), "{err}");
    c.open_reveals(task);
    // Wrong model or wrong salt.
    assert!(matches!(
        c.send(&a, model_reveal(task, model(2), salt(1), 500)),
        Err(TxError::RevealMismatch(_))
    ));
    assert!(matches!(
        c.send(&a, model_reveal(task, model(1), salt(2), 500)),
        Err(TxError::RevealMismatch(_))
    ));
    // Over the task's parameter limit.
    assert!(matches!(
        c.send(&a, model_reveal(task, model(1), salt(1), 1 << 40)),
        Err(TxError::OverLimit { .. })
    ));
    c.send(&a, model_reveal(task, model(1), salt(1), 500)).unwrap();
    assert!(matches!(
        c.send(&a, model_reveal(task, model(1), salt(1), 500)),
        Err(TxError::AlreadyRevealed(_))
    ));
    // Too late.
    let b = c.trainers[1].clone_key();
    c.advance_to(c.task(task).reveal_deadline().next());
    assert!(matches!(
        c.send(&b, model_reveal(task, model(3), salt(3), 500)),
        Err(TxError::OutsideWindow { .. })
    ));
}

/// A task with trainers 0 and 1 revealed, advanced to its scoring window.
fn scored_task(c: &mut TestChain) -> TaskId {
    let task = c.create_task(spec(c.validators.len()), 100_000);
    for i in 0..2 {
        let k = c.trainers[i].clone_key();
        c.send(&k, TxKind::JoinTask { task }).unwrap();
        let kind = model_commit(c, task, &k, &model(i as u8), &salt(i as u8));
        c.send(&k, kind).unwrap();
    }
    c.open_reveals(task);
    for i in 0..2 {
        let k = c.trainers[i].clone_key();
        c.send(&k, model_reveal(task, model(i as u8), salt(i as u8), 1_000)).unwrap();
    }
    c.advance_to(c.task(task).reveal_deadline().next());
    assert_eq!(c.task(task).phase(c.height().next()), Phase::ScoreCommit);
    task
}

fn two_scores(c: &TestChain, a: u32, b: u32) -> Vec<VerdictEntry> {
    vector(
        100_000,
        vec![
            (c.trainers[0].account(), Verdict::scored(a)),
            (c.trainers[1].account(), Verdict::scored(b)),
        ],
    )
}

#[test]
fn scores_from_a_non_validator_are_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 3);
    let task = scored_task(&mut c);
    let outsider = c.trainers[2].clone_key();
    let v = two_scores(&c, 500_000, 600_000);
    let kind = scores_commit(&c, task, &outsider, &v, &salt(9));
    assert!(matches!(c.send(&outsider, kind), Err(TxError::NotValidator(_))));
}

#[test]
fn a_second_verdict_vector_from_one_validator_is_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 2);
    let task = scored_task(&mut c);
    let v0 = c.validators[0].clone_key();
    let v = two_scores(&c, 500_000, 600_000);
    let kind = scores_commit(&c, task, &v0, &v, &salt(9));
    c.send(&v0, kind).unwrap();
    let other = two_scores(&c, 1, 2);
    let kind = scores_commit(&c, task, &v0, &other, &salt(8));
    assert!(matches!(c.send(&v0, kind), Err(TxError::AlreadyCommitted(_))));
    // A second validator commits too, so the task stays open after v0 reveals.
    let v1 = c.validators[1].clone_key();
    let kind = scores_commit(&c, task, &v1, &v, &salt(7));
    c.send(&v1, kind).unwrap();
    c.advance_to(c.task(task).score_commit_deadline().next());
    c.send(&v0, TxKind::RevealScores { task, verdicts: v.clone(), salt: salt(9) }).unwrap();
    let again = TxKind::RevealScores { task, verdicts: v, salt: salt(9) };
    assert!(matches!(c.send(&v0, again), Err(TxError::AlreadyRevealed(_))));
}

#[test]
fn verdict_vectors_with_missing_extra_or_unsorted_entries_are_rejected() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 3);
    let task = scored_task(&mut c);
    let good = two_scores(&c, 500_000, 600_000);
    let mut missing = good.clone();
    missing.pop();
    let mut extra = good.clone();
    extra.push(VerdictEntry {
        subject: Subject::Submission(c.trainers[2].account()),
        verdict: Verdict::scored(1),
    });
    let mut unsorted = good.clone();
    unsorted.swap(1, 2);
    let mut no_baseline = good.clone();
    no_baseline[0].verdict = Verdict::Unavailable;
    let cases = [missing, extra, unsorted, no_baseline];
    for (i, v) in cases.iter().enumerate() {
        let k = c.validators[i].clone_key();
        let kind = scores_commit(&c, task, &k, v, &salt(i as u8 + 10));
        c.send(&k, kind).unwrap();
    }
    c.advance_to(c.task(task).score_commit_deadline().next());
    let reveal = |i: usize| TxKind::RevealScores {
        task,
        verdicts: cases[i].clone(),
        salt: salt(i as u8 + 10),
    };
    let v0 = c.validators[0].clone_key();
    assert!(matches!(c.send(&v0, reveal(0)), Err(TxError::Layout(LayoutError::Missing(_)))));
    let v1 = c.validators[1].clone_key();
    assert!(matches!(c.send(&v1, reveal(1)), Err(TxError::Layout(LayoutError::Extra(_)))));
    let v2 = c.validators[2].clone_key();
    assert!(matches!(
        c.send(&v2, reveal(2)),
        Err(TxError::Layout(LayoutError::Unsorted { index: 1, .. }))
    ));
    let v3 = c.validators[3].clone_key();
    assert!(matches!(c.send(&v3, reveal(3)), Err(TxError::Layout(LayoutError::BadVerdict { .. }))));
    // A wrong salt does not open the commitment.
    let wrong_salt = TxKind::RevealScores { task, verdicts: cases[0].clone(), salt: salt(99) };
    assert!(matches!(c.send(&v0, wrong_salt), Err(TxError::RevealMismatch(_))));
}

#[test]
fn evidence_slashes_once_and_changes_power_two_heights_later() {
    let mut c = TestChain::new(&[1_600, 1_600, 1_600, 1_600], 1);
    let reporter = c.trainers[0].clone_key();
    let slashed = c.validators[3].account();
    let proposer = c.validators[0].account();
    let (reporter_before, proposer_before) = (c.balance(&reporter.account()), c.balance(&proposer));
    let burned_before = c.ledger.state().meta().burned.0;
    c.send(&reporter, c.equivocation(3, 7)).unwrap();
    let h = c.height();
    let stake = c.ledger.state().validators.get(&slashed).unwrap().stake;
    assert_eq!(stake, Amount(1_440), "10% slash");
    // The proposer that included it earns 1/16 of the slash; the reporter only pays its fee;
    // the rest burns.
    assert_eq!(c.balance(&proposer), proposer_before + 10);
    assert_eq!(c.balance(&reporter.account()), reporter_before - c.genesis.params.tx_fee.0);
    assert_eq!(c.ledger.state().meta().burned.0, burned_before + 150 + c.genesis.params.tx_fee.0);
    // The sets of h+1 still carry the old power; h+2 has the new one.
    assert_eq!(c.ledger.state().validator_set(h.next()).unwrap().power_of(&slashed), Some(1_600));
    assert_eq!(c.ledger.state().validator_set(h.plus(2)).unwrap().power_of(&slashed), Some(1_440));
    // The same equivocation cannot slash twice.
    assert!(matches!(c.send(&reporter, c.equivocation(3, 7)), Err(TxError::EvidenceUsed { .. })));
    // Two identical votes are no evidence.
    let TxKind::Evidence { a, .. } = c.equivocation(2, 9) else { unreachable!() };
    assert!(matches!(
        c.send(&reporter, TxKind::Evidence { a, b: a }),
        Err(TxError::InvalidEvidence(_))
    ));
    // Blocks keep committing under the new power.
    c.advance_to(h.plus(4));
}

#[test]
fn create_task_rejects_bad_specs_and_unknown_base_models() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 1);
    let creator = c.creator.clone_key();
    let mut short = spec(4);
    short.windows.join = 4; // not longer than the 4 validators
    let kind = TxKind::CreateTask { spec: Box::new(short), reward: Amount(10) };
    assert!(matches!(c.send(&creator, kind), Err(TxError::InvalidSpec(_))));
    let mut based = spec(4);
    based.base_model = Some(consensus::task::BaseModel { model_hash: model(7), params: 10 });
    let kind = TxKind::CreateTask { spec: Box::new(based), reward: Amount(10) };
    assert!(matches!(c.send(&creator, kind), Err(TxError::UnknownBaseModel(_))));
    let mut costly = spec(4);
    costly.entry_fee = costly.entry_fee_min(Amount(BALANCE), c.genesis.params.trainer_share_ppm);
    let kind = TxKind::CreateTask { spec: Box::new(costly), reward: Amount(BALANCE) };
    assert!(matches!(c.send(&creator, kind), Err(TxError::InsufficientBalance { .. })));
}

#[test]
fn create_task_refuses_free_slots_zero_amounts_and_settings_where_nobody_can_earn() {
    let mut c = TestChain::new(&[10, 10, 10, 10], 1);
    let creator = c.creator.clone_key();
    type Mutation = Box<dyn Fn(&mut consensus::task::TaskSpec)>;
    let cases: Vec<(Mutation, &str)> = vec![
        // 3 slots × 23333 < 70000: filling every slot would cost less than the prize.
        (Box::new(|s| s.entry_fee = Amount(23_333)), "entry_fee"),
        (Box::new(|s| s.entry_fee = Amount(0)), "entry_fee"),
        (Box::new(|s| s.bond = Amount(0)), "bond"),
        // A reference below the smallest linear model (3 × (4 + 1) = 15) penalizes every model.
        (Box::new(|s| s.efficiency.reference_params = 14), "efficiency.reference_params"),
        (Box::new(|s| s.efficiency.reference_params = 100_001), "efficiency.reference_params"),
        (Box::new(|s| s.dataset.heldout_examples = 99), "dataset.heldout_examples"),
        (Box::new(|s| s.min_improvement_ppm = 100_001), "min_improvement_ppm"),
    ];
    for (mutate, field) in cases {
        let mut bad = spec(4);
        mutate(&mut bad);
        let kind = TxKind::CreateTask { spec: Box::new(bad), reward: Amount(100_000) };
        match c.send(&creator, kind) {
            Err(TxError::InvalidSpec(consensus::task::SpecError::Invalid { field: f, .. })) => {
                assert_eq!(f, field)
            }
            other => panic!("expected an error on {field}, got {other:?}"),
        }
    }
    let kind = TxKind::CreateTask { spec: Box::new(spec(4)), reward: Amount(100_000) };
    c.send(&creator, kind).unwrap();
    let kind = TxKind::CreateTask { spec: Box::new(spec(4)), reward: Amount(0) };
    assert!(matches!(c.send(&creator, kind), Err(TxError::InvalidSpec(_))));
}

#[test]
fn full_lifecycle_pays_the_better_model_and_conserves_coin() {
    let mut c = TestChain::new(&[10, 20, 30, 40], 2);
    let supply = c.ledger.state().total_supply() + u128::from(c.ledger.state().meta().burned.0);
    let task = scored_task(&mut c);
    let v = two_scores(&c, 500_000, 700_000);
    for i in 0..4 {
        let k = c.validators[i].clone_key();
        let kind = scores_commit(&c, task, &k, &v, &salt(50 + i as u8));
        c.send(&k, kind).unwrap();
    }
    c.advance_to(c.task(task).score_commit_deadline().next());
    for i in 0..4 {
        let k = c.validators[i].clone_key();
        c.send(&k, TxKind::RevealScores { task, verdicts: v.clone(), salt: salt(50 + i as u8) })
            .unwrap();
    }
    c.advance_to(c.task(task).score_deadline().next());
    let t = c.task(task);
    let report = t.report.expect("finalized at the score deadline");
    assert_eq!(report.outcome, consensus::finalize::Outcome::Finalized);
    let champion = report.champion.unwrap();
    assert_eq!(champion.trainer, c.trainers[1].account());
    let pay = |i: usize| {
        report.trainers.iter().find(|r| r.account == c.trainers[i].account()).unwrap().payout.0
    };
    // Winner takes all: the better model earns the whole 70% of 100000.
    assert_eq!(pay(0), 0);
    assert_eq!(pay(1), 70_000);
    // Every validator agreed on every entry: each earns its stake share of 30000.
    for r in &report.validators {
        assert_eq!(r.payout.0, 30_000 * r.stake / 100);
    }
    let after = c.ledger.state().total_supply() + u128::from(c.ledger.state().meta().burned.0);
    assert_eq!(after, supply, "coin is conserved across the whole lifecycle");
    assert!(c.ledger.state().champions.get(&model(1)).is_some());
}

/// Keys are not `Clone` on purpose; tests rebuild them from the seed.
trait CloneKey {
    fn clone_key(&self) -> consensus::crypto::Keypair;
}

impl CloneKey for consensus::crypto::Keypair {
    fn clone_key(&self) -> consensus::crypto::Keypair {
        consensus::crypto::Keypair::from_seed(self.secret_bytes())
    }
}
