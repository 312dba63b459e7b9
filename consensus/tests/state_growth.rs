//! State growth is bounded by fees: the 640-task bloat attack (cheap tasks with large specs)
//! pays per byte it adds, an empty block's work stays flat however large the state grew, and
//! finalized tasks' bulky data leaves the live state after `task_retention` heights.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use consensus::chain::replay;
use consensus::encoding::encode;
use consensus::state::{Due, TxError};
use consensus::storage::{Entries, MemStore, Op, Store, StoreError, Tree};
use consensus::task::{Preprocessing, TaskKind, TaskSpec, Windows};
use consensus::testing::*;
use consensus::tx::TxKind;
use consensus::types::Amount;

/// A store that counts the ops of its last batch.
struct Counting {
    inner: Arc<MemStore>,
    last_ops: Arc<AtomicUsize>,
}

impl Store for Counting {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }
    fn scan(&self, tree: Tree) -> Result<Entries, StoreError> {
        self.inner.scan(tree)
    }
    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.last_ops.store(ops.len(), Ordering::SeqCst);
        self.inner.write(ops)
    }
}

const ATTACK_TXS: u64 = 640;
const FEATURES: u32 = 2_000;
const RETENTION: u64 = 20;

fn heavy_spec() -> TaskSpec {
    let mut s = spec(1);
    let n = FEATURES as usize;
    s.kind = TaskKind::Classification { features: FEATURES, classes: 3 };
    s.preprocessing = Preprocessing::Standardize { mean: vec![0.5; n], std: vec![1.5; n] };
    // The efficiency reference may not be below the architecture's smallest model.
    s.efficiency.reference_params = 10_000;
    // Long windows: no task reaches a deadline while the attack is measured.
    s.windows =
        Windows { join: 20, commit: 20, key: 20, reveal: 20, score_commit: 20, score_reveal: 20 };
    s
}

fn tasks_bytes(c: &TestChain) -> usize {
    c.ledger.state().tasks.iter().map(|(_, t)| encode(t).len()).sum()
}

#[test]
fn the_bloat_attack_pays_per_byte_and_leaves_the_empty_block_flat() {
    let mut g = genesis(&[1], 0);
    g.params.task_retention = RETENTION;
    let params = g.params.clone();
    let inner = Arc::new(MemStore::new());
    let last_ops = Arc::new(AtomicUsize::new(0));
    let store = Counting { inner: inner.clone(), last_ops: last_ops.clone() };
    let mut c = TestChain::with_genesis(g, Box::new(store));
    let attacker = key(3, 0);
    let spec = heavy_spec();

    // Below the minimum reward: refused.
    let cheap = TxKind::CreateTask { spec: Box::new(spec.clone()), reward: Amount(1) };
    assert_eq!(
        c.send(&attacker, cheap),
        Err(TxError::RewardTooLow { min: params.task_reward_min, found: Amount(1) })
    );

    // From the second block on, an empty block also drops a stale validator set.
    c.commit(vec![]);
    c.commit(vec![]);
    let empty_ops_before = last_ops.load(Ordering::SeqCst);
    let burned_before = c.ledger.state().meta().burned.0;

    // 640 spec-heavy tasks at the minimum reward, 64 per block; those the attacker cannot pay
    // for are left out.
    let spec_bytes = encode(&spec).len() as u64;
    let per_task = params.task_reward_min.0 + spec_bytes * params.spec_fee_per_byte.0;
    let nonce = c.ledger.state().account(&attacker.account()).nonce.0;
    let txs: Vec<_> = (0..ATTACK_TXS)
        .map(|i| {
            let kind =
                TxKind::CreateTask { spec: Box::new(spec.clone()), reward: params.task_reward_min };
            c.sign_with_nonce(&attacker, nonce + i, kind)
        })
        .collect();
    for chunk in txs.chunks(64) {
        c.commit(chunk.to_vec());
    }
    let opened = c.ledger.state().tasks.len() as u64;
    let affordable = BALANCE / (per_task + params.tx_fee.0);
    assert_eq!(opened, affordable, "exactly what the balance pays for");
    assert!(opened < ATTACK_TXS / 10, "{opened} of {ATTACK_TXS} tasks opened");
    // Each open task is one entry of the deadlines table, at its next deadline (the join
    // deadline, where too few attestations cancel it): a block's end reads its own height's
    // entries, not the tasks.
    let deadlines = &c.ledger.state().deadlines;
    assert_eq!(deadlines.len() as u64, opened);
    for ((height, id), due) in deadlines.iter() {
        assert_eq!((*height, *due), (c.task(*id).join_deadline(), Due::Finalize));
    }
    let burned = c.ledger.state().meta().burned.0 - burned_before;
    assert!(burned >= opened * spec_bytes, "burned {burned} for {opened} x {spec_bytes} bytes");
    assert_eq!(
        c.balance(&attacker.account()),
        BALANCE - opened * (per_task + params.tx_fee.0),
        "the attacker paid the reward, the per-byte fee and the tx fee for each task"
    );

    // An empty block writes the same records as before the state grew: its root update touches
    // those records' paths only.
    c.commit(vec![]);
    assert_eq!(last_ops.load(Ordering::SeqCst), empty_ops_before);

    // Past every task's score deadline plus the retention, the specs' vectors are gone.
    let before_prune = tasks_bytes(&c);
    let last_deadline =
        c.ledger.state().tasks.iter().map(|(_, t)| t.score_deadline()).max().unwrap();
    c.advance_to(last_deadline.plus(RETENTION + 1));
    for (_, t) in c.ledger.state().tasks.iter() {
        assert!(t.report.is_some(), "task {} finalized", t.id);
        assert_eq!(
            t.spec.preprocessing,
            Preprocessing::Standardize { mean: vec![], std: vec![] },
            "task {} pruned",
            t.id
        );
    }
    assert!(c.ledger.state().deadlines.is_empty(), "nothing left to fall due");
    let after_prune = tasks_bytes(&c);
    assert!(
        after_prune * 10 < before_prune,
        "tasks hold {after_prune} bytes after pruning, {before_prune} before"
    );

    // The chain still replays exactly from its blocks.
    let report = replay(inner.as_ref(), &c.genesis).unwrap();
    assert_eq!(report.state_root, c.ledger.state_root());
}

#[test]
fn pruning_drops_the_verdict_records_of_a_scored_task() {
    let mut g = genesis(&[1, 1, 1, 1], 2);
    g.params.task_retention = 3;
    let mut c = TestChain::with_genesis(g, Box::new(MemStore::new()));
    let task = c.create_task(spec(4), 10_000);
    c.open_reveals(task);
    c.advance_to(c.task(task).reveal_deadline().next());
    let v = key(1, 0);
    let kind = scores_commit(&c, task, &v, &vector(500_000, vec![]), &salt(1));
    c.send(&v, kind).unwrap();
    let scored = |c: &TestChain| c.ledger.state().verdicts.iter().any(|((t, _), _)| *t == task);
    assert!(scored(&c));
    let score_deadline = c.task(task).score_deadline();
    // The block at score_deadline + 3 prunes: until the one before it, the record stays.
    c.advance_to(score_deadline.plus(3));
    assert!(c.task(task).report.is_some());
    assert!(scored(&c), "kept for the retention");
    c.commit(vec![]);
    assert!(!scored(&c), "pruned");
    assert!(c.task(task).report.is_some(), "the report stays");
}
