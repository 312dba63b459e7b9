//! State proofs against committed headers: what a light client checks.

use consensus::chain::{BundleError, ProveError, RECENT_STATES_MAX};
use consensus::encoding::{decode, encode};
use consensus::merkle::ProofError;
use consensus::state::{Account, StateKeyError, Task};
use consensus::storage::Tree;
use consensus::testing::*;
use consensus::tx::TxKind;
use consensus::types::{AccountId, Amount, Height, TaskId};
use consensus::vote::CertificateError;

fn chain_with_history() -> TestChain {
    let mut c = TestChain::new(&[1, 1, 1, 1], 2);
    let to = c.trainers[1].account();
    let from = key(2, 0);
    c.send(&from, TxKind::Transfer { to, amount: Amount(250) }).unwrap();
    c.create_task(spec(4), 1_000);
    c.commit(vec![]);
    c
}

#[test]
fn membership_and_absence_proofs_verify_against_a_committed_header() {
    let c = chain_with_history();
    let tip = c.height();
    let set = c.genesis.validator_set();
    let trainer = c.trainers[1].account();

    let bundle = c.ledger.prove("accounts", &encode(&trainer), tip).unwrap();
    assert_eq!(bundle.header.height, tip);
    let value = bundle.value.clone().expect("the account exists");
    let account: Account = decode("account", &value, 64).unwrap();
    assert_eq!(account.balance, Amount(BALANCE + 250));
    assert_eq!(bundle.verify(&c.chain_id(), &set).unwrap(), Tree::Accounts);

    // The header at the tip commits to the state before its block: the proof is of that state.
    let before = c.ledger.state_at(Height(tip.0 - 1)).unwrap();
    assert_eq!(bundle.header.state_root, before.root());

    let absent = c.ledger.prove("accounts", &encode(&AccountId([0xee; 32])), tip).unwrap();
    assert_eq!(absent.value, None);
    absent.verify(&c.chain_id(), &set).unwrap();

    let task = c.ledger.prove("tasks", &encode(&TaskId(1)), tip).unwrap();
    let task: Task = decode("task", task.value.as_deref().unwrap(), 1 << 20).unwrap();
    assert_eq!(task.creator, c.creator.account());
    let meta = c.ledger.prove("meta", b"chain", tip).unwrap();
    meta.verify(&c.chain_id(), &set).unwrap();

    // JSON round trip: what the HTTP route serves and the CLI checks.
    let json = serde_json::to_string(&bundle).unwrap();
    let back: consensus::chain::StateProofBundle = serde_json::from_str(&json).unwrap();
    assert_eq!(back, bundle);
}

#[test]
fn tampered_values_other_roots_and_certificates_without_quorum_are_refused() {
    let c = chain_with_history();
    let tip = c.height();
    let set = c.genesis.validator_set();
    let trainer = c.trainers[1].account();
    let bundle = c.ledger.prove("accounts", &encode(&trainer), tip).unwrap();

    let mut tampered = bundle.clone();
    let mut account: Account = decode("account", tampered.value.as_deref().unwrap(), 64).unwrap();
    account.balance.0 += 1_000_000;
    tampered.value = Some(encode(&account));
    assert!(matches!(
        tampered.verify(&c.chain_id(), &set),
        Err(BundleError::Proof(ProofError::WrongValue { .. }))
    ));

    let mut denied = bundle.clone();
    denied.value = None;
    assert!(matches!(
        denied.verify(&c.chain_id(), &set),
        Err(BundleError::Proof(ProofError::NotAbsent))
    ));

    // A proof from another height, against this header's root (the balance changed between).
    let older = c.ledger.prove("accounts", &encode(&trainer), Height(1)).unwrap();
    assert_ne!(older.value, bundle.value);
    let mut other_root = bundle.clone();
    other_root.proof = older.proof.clone();
    other_root.value = older.value.clone();
    assert!(matches!(
        other_root.verify(&c.chain_id(), &set),
        Err(BundleError::Proof(ProofError::WrongRoot { .. }))
    ));

    // A header swapped for another height's: its certificate no longer matches.
    let mut swapped = bundle.clone();
    swapped.header = older.header.clone();
    assert!(matches!(
        swapped.verify(&c.chain_id(), &set),
        Err(BundleError::Certificate(CertificateError::WrongBlock { .. }))
    ));

    // One signature of four validators' is no quorum.
    let mut weak = bundle.clone();
    weak.commit.signatures.truncate(1);
    assert!(matches!(
        weak.verify(&c.chain_id(), &set),
        Err(BundleError::Certificate(CertificateError::NoQuorum { power: 1, total: 4 }))
    ));

    // A validator set the client does not trust.
    let strangers = genesis(&[5], 0).validator_set();
    assert!(matches!(
        bundle.verify(&c.chain_id(), &strangers),
        Err(BundleError::WrongValidators { .. })
    ));
    assert!(matches!(bundle.verify("other-chain", &set), Err(BundleError::WrongChain { .. })));
}

#[test]
fn proofs_need_a_committed_recent_height_and_a_canonical_key() {
    let mut c = chain_with_history();
    let key = encode(&c.trainers[0].account());
    assert!(matches!(
        c.ledger.prove("accounts", &key, Height(0)),
        Err(ProveError::NotCommitted { .. })
    ));
    assert!(matches!(
        c.ledger.prove("accounts", &key, c.height().next()),
        Err(ProveError::NotCommitted { .. })
    ));
    assert!(matches!(c.ledger.prove("blocks", &key, c.height()), Err(ProveError::UnknownTable(_))));
    assert!(matches!(
        c.ledger.prove("accounts", &key[..31], c.height()),
        Err(ProveError::Key(StateKeyError::Malformed(_)))
    ));
    // A task id with a trailing byte, and one in a non-minimal varint: not canonical.
    assert!(c.ledger.prove("tasks", &[1, 0], c.height()).is_err());
    assert!(matches!(
        c.ledger.prove("tasks", &[0x81, 0x00], c.height()),
        Err(ProveError::Key(StateKeyError::NotCanonical))
    ));
    for _ in 0..RECENT_STATES_MAX + 1 {
        c.commit(vec![]);
    }
    assert!(matches!(
        c.ledger.prove("accounts", &key, Height(2)),
        Err(ProveError::TooOld { height: Height(2) })
    ));
    let bundle = c.ledger.prove("accounts", &key, c.height()).unwrap();
    bundle.verify(&c.chain_id(), &c.genesis.validator_set()).unwrap();
}

#[test]
fn a_copy_of_the_state_shares_nothing_it_changes() {
    let c = chain_with_history();
    let state = c.ledger.state();
    let root = state.root();
    let mut copy = state.clone();
    let tx =
        c.sign(&c.trainers[0], TxKind::Transfer { to: c.creator.account(), amount: Amount(1) });
    copy.check_and_execute_tx(
        &tx,
        consensus::state::TxContext {
            height: c.height().next(),
            index: 0,
            proposer: c.validators[0].account(),
        },
    )
    .unwrap();
    // The copy's pending root differs; the original is untouched.
    assert_ne!(copy.root(), root);
    assert_eq!(state.root(), root);
    assert_eq!(c.ledger.state_root(), root);
    let pending = copy.root();
    let ops = copy.take_changes();
    assert_eq!(ops.len(), 3, "meta, the sender and the receiver");
    assert_eq!(copy.root(), pending, "taking the changes gives the root computed before");
}
