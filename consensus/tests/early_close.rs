//! Windows that close when nobody is left to act in them (see `consensus::state::Progress`): each
//! closes in the block where its acting set is exhausted, never while one party of that set has
//! yet to act, and the task's one entry in the deadlines table follows its deadlines.

use consensus::crypto::Keypair;
use consensus::finalize::Outcome;
use consensus::state::{Due, Phase, Task, TxError};
use consensus::testing::*;
use consensus::types::{Height, TaskId};
use consensus::verdict::Verdict;

/// Keys are not `Clone` on purpose; a test rebuilds one from its seed.
fn copy(key: &Keypair) -> Keypair {
    Keypair::from_seed(key.secret_bytes())
}

/// Heights at which `task` has an entry in the deadlines table.
fn scheduled(c: &TestChain, task: TaskId) -> Vec<(Height, Due)> {
    let state = c.ledger.state();
    state.deadlines.iter().filter(|((_, id), _)| *id == task).map(|((h, _), d)| (*h, *d)).collect()
}

/// The sum of every window: where the task would finalize without early closes.
fn natural_end(task: &Task) -> Height {
    let w = task.spec.windows;
    task.created_at.plus(w.join + w.commit + w.key + w.reveal + w.score_commit + w.score_reveal)
}

/// Two trainers join in one block and commit in the next, both inside the join window.
fn two_committed(c: &mut TestChain) -> TaskId {
    let task = c.create_task(spec(c.validators.len()), 10_000);
    let joins: Vec<_> =
        (0..2).map(|i| c.sign(&c.trainers[i], consensus::tx::TxKind::JoinTask { task })).collect();
    assert_eq!(c.commit(joins).txs.len(), 2);
    let commits: Vec<_> = (0..2u8)
        .map(|i| {
            let t = &c.trainers[usize::from(i)];
            c.sign(t, model_commit(c, task, t, &model(i), &salt(i)))
        })
        .collect();
    assert_eq!(c.commit(commits).txs.len(), 2);
    task
}

#[test]
fn every_window_closes_in_the_block_where_its_last_party_acts() {
    let mut c = TestChain::new(&[100, 100, 100], 2);
    let task = two_committed(&mut c);
    let join_deadline = c.task(task).join_deadline();
    let natural = natural_end(&c.task(task));
    assert!(c.height() < join_deadline, "both committed inside the join window");
    assert_eq!(c.task(task).progress.commit_closed, None, "the join window never closes early");

    // The commit window closes at the join deadline: everyone who joined has committed.
    c.advance_to(join_deadline.next());
    assert_eq!(c.task(task).commit_deadline(), join_deadline);
    assert_eq!(c.task(task).phase(c.height().next()), Phase::Key);

    // The key window closes where the key lands.
    let creator = key(3, 0);
    c.send(&creator, consensus::tx::TxKind::RevealHeldoutKey { task, key: heldout_key() }).unwrap();
    let key_at = c.height();
    assert_eq!(
        (c.task(task).key_deadline(), c.task(task).phase(key_at.next())),
        (key_at, Phase::Reveal)
    );

    // The reveal window stays open while one committed trainer has not revealed...
    c.send(&copy(&c.trainers[0]), model_reveal(task, model(0), salt(0), 500)).unwrap();
    assert_eq!(c.task(task).progress.reveal_closed, None);
    assert_eq!(c.task(task).phase(c.height().next()), Phase::Reveal);
    // ...and closes where the last one does.
    c.send(&copy(&c.trainers[1]), model_reveal(task, model(1), salt(1), 500)).unwrap();
    let revealed_at = c.height();
    assert_eq!(c.task(task).reveal_deadline(), revealed_at);

    // Scores: committed by every validator in one block, revealed in the next; the task
    // finalizes in the block of the last reveal.
    let v = vector(
        100_000,
        vec![
            (c.trainers[0].account(), Verdict::scored(900_000)),
            (c.trainers[1].account(), Verdict::scored(800_000)),
        ],
    );
    let commits: Vec<_> = c
        .validators
        .iter()
        .enumerate()
        .map(|(i, k)| c.sign(k, scores_commit(&c, task, k, &v, &salt(50 + i as u8))))
        .collect();
    assert_eq!(c.commit(commits).txs.len(), 3);
    assert_eq!(c.task(task).score_commit_deadline(), c.height());
    let reveals: Vec<_> = c
        .validators
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let kind = consensus::tx::TxKind::RevealScores {
                task,
                verdicts: v.clone(),
                salt: salt(50 + i as u8),
            };
            c.sign(k, kind)
        })
        .collect();
    assert_eq!(c.commit(reveals).txs.len(), 3);
    let finalized = c.task(task);
    let report = finalized.report.as_ref().expect("finalized in the block of the last reveal");
    assert_eq!(report.champion.as_ref().map(|w| w.trainer), Some(c.trainers[0].account()));
    assert_eq!(finalized.score_deadline(), c.height());
    assert!(c.height().0 + 10 < natural.0, "ended at {} instead of {natural}", c.height());
    // Only the prune entry is left for the task.
    assert!(scheduled(&c, task).iter().all(|(_, d)| *d == Due::Prune), "{:?}", scheduled(&c, task));
}

#[test]
fn a_party_yet_to_act_keeps_its_window_open_to_the_deadline() {
    let mut c = TestChain::new(&[100, 100, 100], 3);
    let task = two_committed(&mut c);
    // A third trainer joins in the last block of the join window: nobody may close the commit
    // window on it.
    let join_deadline = c.task(task).join_deadline();
    c.advance_to(join_deadline);
    c.send(&copy(&c.trainers[2]), consensus::tx::TxKind::JoinTask { task }).unwrap();
    let natural_commit = join_deadline.plus(c.task(task).spec.windows.commit);
    assert_eq!(
        c.task(task).commit_deadline(),
        natural_commit,
        "one joined trainer has not committed"
    );
    // The creator cannot reveal the key while a joined trainer may still commit.
    let creator = key(3, 0);
    let reveal_key = consensus::tx::TxKind::RevealHeldoutKey { task, key: heldout_key() };
    assert!(matches!(
        c.send(&creator, reveal_key.clone()),
        Err(TxError::OutsideWindow { action: "reveal_heldout_key", .. })
    ));
    // The late trainer commits two blocks later: the window closes there, the key lands next.
    c.commit(vec![]);
    let t = copy(&c.trainers[2]);
    c.send(&t, model_commit(&c, task, &t, &model(2), &salt(2))).unwrap();
    assert_eq!(c.task(task).commit_deadline(), c.height());
    c.send(&creator, reveal_key).unwrap();

    // Two of three reveal: the reveal window runs to its deadline, and scores wait for it.
    for i in 0..2u8 {
        let t = copy(&c.trainers[usize::from(i)]);
        c.send(&t, model_reveal(task, model(i), salt(i), 500)).unwrap();
    }
    let reveal_deadline = c.task(task).reveal_deadline();
    assert_eq!(reveal_deadline, c.task(task).key_deadline().plus(c.task(task).spec.windows.reveal));
    let v = vector(
        100_000,
        vec![
            (c.trainers[0].account(), Verdict::scored(900_000)),
            (c.trainers[1].account(), Verdict::scored(800_000)),
        ],
    );
    let early = scores_commit(&c, task, &c.validators[0], &v, &salt(60));
    assert!(matches!(
        c.send(&copy(&c.validators[0]), early),
        Err(TxError::OutsideWindow { action: "commit_scores", .. })
    ));
    // The third trainer never reveals; two of three validators commit scores: that window runs
    // to its deadline too, and the task finalizes at its score deadline.
    c.advance_to(reveal_deadline.next());
    for i in 0..2 {
        let k = copy(&c.validators[i]);
        c.send(&k, scores_commit(&c, task, &k, &v, &salt(60 + i as u8))).unwrap();
    }
    let score_commit_deadline = c.task(task).score_commit_deadline();
    assert_eq!(score_commit_deadline, reveal_deadline.plus(c.task(task).spec.windows.score_commit));
    c.advance_to(score_commit_deadline.next());
    for i in 0..2 {
        let k = copy(&c.validators[i]);
        let kind = consensus::tx::TxKind::RevealScores {
            task,
            verdicts: v.clone(),
            salt: salt(60 + i as u8),
        };
        c.send(&k, kind).unwrap();
    }
    // Every validator that committed has revealed: the score reveal window closes with them.
    let task_now = c.task(task);
    assert!(task_now.report.is_some(), "finalized once both committed validators revealed");
    assert_eq!(task_now.score_deadline(), c.height());
    assert_eq!(task_now.progress.scores_committed, 2);
}

#[test]
fn a_withheld_key_ends_the_task_at_a_key_deadline_counted_from_the_early_commit_close() {
    let mut c = TestChain::new(&[100, 100, 100], 2);
    let task = two_committed(&mut c);
    let join_deadline = c.task(task).join_deadline();
    c.advance_to(join_deadline.next());
    let key_deadline = c.task(task).key_deadline();
    assert_eq!(key_deadline, join_deadline.plus(c.task(task).spec.windows.key));
    assert_eq!(
        scheduled(&c, task),
        vec![(key_deadline, Due::Finalize)],
        "one entry, moved earlier"
    );
    c.advance_to(key_deadline);
    assert!(c.task(task).report.is_none());
    c.commit(vec![]);
    assert_eq!(c.height(), key_deadline);
    let report = c.task(task).report.expect("ended at the key deadline");
    assert_eq!(report.outcome, Outcome::KeyWithheld);
}
