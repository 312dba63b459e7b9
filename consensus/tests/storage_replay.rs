//! Persistence: atomic block writes, reopening, refusing another genesis, and replay audits.

use std::sync::Arc;

use consensus::chain::{Ledger, LedgerError, ReplayError, replay};
use consensus::crypto::Verifier;
use consensus::encoding::encode;
use consensus::state::Account;
use consensus::storage::{Op, SledStore, Tree};
use consensus::testing::*;
use consensus::tx::TxKind;
use consensus::types::{Amount, Nonce};
use consensus::vote::CertificateError;

fn workload(c: &mut TestChain) {
    let a = key(2, 0);
    let b = key(2, 1).account();
    for amount in [10, 20, 30] {
        c.send(&a, TxKind::Transfer { to: b, amount: Amount(amount) }).unwrap();
    }
    let task = c.create_task(spec(4), 5_000);
    c.send(&key(2, 1), TxKind::JoinTask { task }).unwrap();
    c.commit(vec![]);
}

#[test]
fn a_sled_chain_reopens_and_replays_to_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let (root, height, genesis) = {
        let mut c = TestChain::with_store(
            &[10, 20, 30, 40],
            2,
            Box::new(SledStore::open(dir.path()).unwrap()),
        );
        workload(&mut c);
        (c.ledger.state_root(), c.height(), c.genesis.clone())
    };
    let ledger = Ledger::open(Box::new(SledStore::open(dir.path()).unwrap()), &genesis).unwrap();
    assert_eq!((ledger.state_root(), ledger.height()), (root, height));
    assert!(ledger.block(height).unwrap().is_some());
    assert!(ledger.commit(height).unwrap().is_some());
    let tx = ledger.block(consensus::types::Height(1)).unwrap().unwrap().txs[0].clone();
    assert_eq!(
        ledger.tx_location(&tx.hash()).unwrap().unwrap().height,
        consensus::types::Height(1)
    );
    let report = replay(ledger.store(), &genesis).unwrap();
    assert_eq!((report.blocks, report.state_root), (height.0, root));
}

#[test]
fn a_ledger_checks_signatures_through_the_verifier_it_is_opened_with() {
    // The node checks its genesis keys through one verifier and hands it to the ledger, so the
    // ledger must use that one, whether it starts from the genesis or reopens its store.
    let dir = tempfile::tempdir().unwrap();
    let genesis = genesis(&[10, 20, 30, 40], 2);
    for start in ["first start", "reopen"] {
        let verifier = Arc::new(Verifier::new());
        genesis.validate_with(&verifier).unwrap();
        let store = Box::new(SledStore::open(dir.path()).unwrap());
        let ledger = Ledger::open_with(store, &genesis, verifier.clone()).unwrap();
        assert!(Arc::ptr_eq(ledger.state().verifier(), &verifier), "{start}");
    }
}

#[test]
fn replay_detects_a_tampered_state() {
    let mut c = TestChain::new(&[10, 20, 30, 40], 2);
    workload(&mut c);
    // Someone edits a balance in the store behind the ledger's back.
    let victim = key(2, 1).account();
    let forged = Account { balance: Amount(u64::MAX / 8), nonce: Nonce(0) };
    c.ledger
        .store()
        .write(vec![Op::Put(Tree::Accounts, encode(&victim), encode(&forged))])
        .unwrap();
    let err = replay(c.ledger.store(), &c.genesis).unwrap_err();
    assert!(matches!(err, ReplayError::StateMismatch { .. }), "{err}");
}

#[test]
fn replay_detects_a_missing_block() {
    let mut c = TestChain::new(&[10, 20, 30, 40], 2);
    workload(&mut c);
    c.ledger.store().write(vec![Op::Delete(Tree::Blocks, 2u64.to_be_bytes().to_vec())]).unwrap();
    assert!(
        matches!(replay(c.ledger.store(), &c.genesis), Err(ReplayError::MissingBlock(h)) if h.0 == 2)
    );
}

#[test]
fn a_store_of_another_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c =
        TestChain::with_store(&[10, 20, 30, 40], 2, Box::new(SledStore::open(dir.path()).unwrap()));
    let mut other = c.genesis.clone();
    other.chain_id = "another-chain".into();
    drop(c);
    let err = Ledger::open(Box::new(SledStore::open(dir.path()).unwrap()), &other).unwrap_err();
    assert!(matches!(err, LedgerError::WrongGenesis { .. }), "{err}");
}

#[test]
fn a_block_without_a_quorum_certificate_writes_nothing() {
    let mut c = TestChain::new(&[10, 20, 30, 40], 2);
    workload(&mut c);
    let before: usize = [Tree::Blocks, Tree::Accounts, Tree::Meta]
        .iter()
        .map(|t| c.ledger.store().scan(*t).unwrap().len())
        .sum();
    let root = c.ledger.state_root();
    let block = consensus::chain::build_block(
        c.ledger.state(),
        vec![],
        99_999,
        c.validators[0].account(),
        c.blocks.last().map(|(_, cert)| cert.clone()),
    )
    .unwrap();
    let mut cert = c.certify(&block);
    // Only the two smallest validators (30 of 100) sign.
    cert.signatures.retain(|s| {
        c.ledger.state().validator_set(block.height()).unwrap().power_of(&s.validator).unwrap()
            <= 20
    });
    let err = c.ledger.commit_block(&block, &cert).unwrap_err();
    assert!(matches!(err, LedgerError::Certificate(CertificateError::NoQuorum { .. })), "{err}");
    let after: usize = [Tree::Blocks, Tree::Accounts, Tree::Meta]
        .iter()
        .map(|t| c.ledger.store().scan(*t).unwrap().len())
        .sum();
    assert_eq!(before, after);
    assert_eq!(c.ledger.state_root(), root);
}

/// A validator that checked one proposal and then commits another block of the same height (a
/// later round's) must not reuse the state it remembered from the check: the committed state is
/// the other block's own, equal to executing it afresh.
#[test]
fn a_checked_proposal_state_is_reused_only_for_that_block() {
    let mut c = TestChain::new(&[10, 20, 30, 40], 2);
    c.commit(vec![]);
    let (from, to) = (key(2, 0), key(2, 1).account());
    let before = c.balance(&to);
    let last_commit = Some(c.blocks.last().unwrap().1.clone());
    let proposer = c.validators[0].account();
    let block_with = |amount: u64, time_ms: u64| {
        let tx = c.sign(&from, TxKind::Transfer { to, amount: Amount(amount) });
        consensus::chain::build_block(
            c.ledger.state(),
            vec![tx],
            time_ms,
            proposer,
            last_commit.clone(),
        )
        .unwrap()
    };
    let (checked, committed) = (block_with(5, 10_000), block_with(7, 10_001));
    assert_ne!(checked.hash(), committed.hash());
    let fresh = consensus::chain::execute_block(c.ledger.state(), &committed).unwrap();

    c.ledger.check_block(&checked).unwrap();
    let cert = c.certify(&committed);
    c.ledger.commit_block(&committed, &cert).unwrap();
    assert_eq!(c.balance(&to), before + 7, "the committed block's transfer, not the checked one's");
    assert_eq!(c.ledger.state_root(), fresh.root());

    // Checking a block and then committing that very block gives what executing it gives.
    let next = {
        let tx = c.sign(&from, TxKind::Transfer { to, amount: Amount(3) });
        let last = Some(cert);
        consensus::chain::build_block(c.ledger.state(), vec![tx], 20_000, proposer, last).unwrap()
    };
    let fresh = consensus::chain::execute_block(c.ledger.state(), &next).unwrap();
    c.ledger.check_block(&next).unwrap();
    c.ledger.commit_block(&next, &c.certify(&next)).unwrap();
    assert_eq!(c.balance(&to), before + 10);
    assert_eq!(c.ledger.state_root(), fresh.root());
}
