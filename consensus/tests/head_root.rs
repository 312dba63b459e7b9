//! The startup integrity check: a ledger whose stored state no longer hashes to the root recorded
//! with its last block is refused when it is opened, naming `node ledger verify`.

use consensus::chain::{Ledger, LedgerError};
use consensus::storage::{Op, SledStore, Store, Tree};
use consensus::testing::*;

#[test]
fn a_flipped_byte_in_the_stored_state_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain =
        TestChain::with_store(&[10, 10, 10, 10], 1, Box::new(SledStore::open(dir.path()).unwrap()));
    chain.commit(vec![]);
    chain.commit(vec![]);
    let (genesis, root) = (chain.genesis.clone(), chain.ledger.state_root());
    drop(chain);
    // Reopening an intact store passes and finds the same root.
    let ledger = Ledger::open(Box::new(SledStore::open(dir.path()).unwrap()), &genesis).unwrap();
    assert_eq!(ledger.state_root(), root);
    drop(ledger);

    // One bit of one account's balance (the first byte of the record) flips on disk.
    let store = SledStore::open(dir.path()).unwrap();
    let (key, mut value) = store.scan(Tree::Accounts).unwrap().into_iter().next().unwrap();
    value[0] ^= 1;
    store.write(vec![Op::Put(Tree::Accounts, key, value)]).unwrap();
    drop(store);

    let err = Ledger::open(Box::new(SledStore::open(dir.path()).unwrap()), &genesis).unwrap_err();
    assert!(
        matches!(&err, LedgerError::HeadRootMismatch { height, recorded, .. }
            if *recorded == root && height.0 == 2),
        "{err}"
    );
    assert!(err.to_string().contains("node ledger verify"), "{err}");
}
