//! The role planners over a real ledger: when the scorer attests, scores, commits and reveals
//! (and that it cannot read the held-out rows before the key is on chain), and when the trainer
//! joins, commits, reveals and serves, including after a restart (records reloaded
//! from disk).

use std::collections::{BTreeMap, BTreeSet};

use consensus::commitment::{Salt, heldout_commitment, model_commitment};
use consensus::crypto::Keypair;
use consensus::state::{Phase, State};
use consensus::task::TaskSpec;
use consensus::testing::{TestChain, example_spec, heldout_key, key};
use consensus::tx::TxKind;
use consensus::types::{Amount, Hash, Height, TaskId};
use consensus::verdict::{Subject, Verdict, VerdictEntry, VerdictVector};
use node::roles::persist::RoleStore;
use node::roles::scorer::{ScoreSecret, ScoreTaskError, ScorerStep, open_sealed, scorer_plan};
use node::roles::trainer::{
    Offer, Stage, TaskRecord, TrainedModel, TrainerStep, recipe_fits, trainer_plan,
};
use trainer::recipe::Recipe;

fn spec() -> TaskSpec {
    let mut spec = TaskSpec {
        name: "roles".into(),
        // 2 slots × 3500 cover the 7000 trainer share of the 10000 reward.
        entry_fee: Amount(3_500),
        max_trainers: 2,
        ..example_spec(4)
    };
    spec.limits.max_params = 10_000;
    spec
}

fn salt(n: u8) -> Salt {
    Salt(Hash([n; 32]))
}

/// A trained model of trainer `key` for `task`, as the trainer loop records it.
fn trained(chain: &TestChain, task: TaskId, key: &Keypair, n: u8) -> TrainedModel {
    let model_hash = Hash([100 + n; 32]);
    let salt = salt(n);
    TrainedModel {
        model_hash,
        size_bytes: 4_000,
        params: 500,
        salt,
        commitment: model_commitment(&chain.chain_id(), task, &key.account(), &model_hash, &salt),
    }
}

/// The validators attest, trainers `who` join and commit `task`, the creator reveals the key
/// after the commit deadline, and the trainers reveal.
fn train_and_reveal(chain: &mut TestChain, task: TaskId, who: &[usize]) -> Vec<TrainedModel> {
    chain.attest(task, &[0, 1]);
    let keys: Vec<Keypair> = who.iter().map(|i| key(2, *i)).collect();
    let models: Vec<TrainedModel> =
        keys.iter().zip(1..).map(|(k, n)| trained(chain, task, k, n)).collect();
    for (key, model) in keys.iter().zip(&models) {
        chain.send(key, TxKind::JoinTask { task }).unwrap();
        chain.send(key, TxKind::CommitModel { task, commitment: model.commitment }).unwrap();
    }
    chain.open_reveals(task);
    for (key, model) in keys.iter().zip(&models) {
        chain.send(key, model.reveal(task)).unwrap();
    }
    models
}

/// The verdict vector of a task whose layout is the baseline and the given trainers.
fn vector(state: &State, task: TaskId) -> VerdictVector {
    let t = state.tasks.get(&task).unwrap();
    state
        .verdict_layout(t)
        .into_iter()
        .map(|subject| VerdictEntry {
            subject,
            verdict: match subject {
                Subject::Baseline => Verdict::scored(300_000),
                _ => Verdict::scored(900_000),
            },
        })
        .collect()
}

#[test]
fn scorer_attests_once_in_the_join_window() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(spec(), 10_000);
    let me = chain.validators[0].account();
    let none = BTreeMap::new();
    let t = chain.task(task);
    let attest = ScorerStep::Attest { task, sealed: t.spec.dataset.heldout_cipher_sha256 };
    let mut attested_at = Vec::new();
    while chain.height() < t.join_deadline() {
        if scorer_plan(chain.ledger.state(), &me, &none) == vec![attest.clone()] {
            attested_at.push(chain.height());
        }
        assert!(scorer_plan(chain.ledger.state(), &chain.trainers[0].account(), &none).is_empty());
        chain.commit(vec![]);
    }
    // Every height whose next block is in the join window.
    let expected: Vec<Height> = (t.created_at.0..t.join_deadline().0).map(Height).collect();
    assert_eq!(attested_at, expected);
    // Once its attestation is on chain, it does not attest again.
    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(spec(), 10_000);
    chain.send(&key(1, 0), TxKind::AttestHeldout { task }).unwrap();
    assert_eq!(scorer_plan(chain.ledger.state(), &me, &none), vec![]);
    let other = chain.validators[1].account();
    assert!(matches!(
        scorer_plan(chain.ledger.state(), &other, &none)[..],
        [ScorerStep::Attest { .. }]
    ));
}

/// Attack 5 on the node: a validator holds only the sealed file while trainers train. It cannot
/// open it before the key is on chain, and its planner never scores without the key; once the
/// creator reveals the key, the file opens to exactly the committed rows.
#[test]
fn scorer_cannot_read_the_heldout_rows_before_the_key_is_on_chain() {
    let rows = b"f1,f2,f3,f4,label\n0.1,0.2,0.3,0.4,1\n".to_vec();
    let salt = salt(4);
    let sealed = trainer::sealed::seal(&heldout_key(), &salt, &rows);
    let mut sealed_spec = spec();
    sealed_spec.dataset.heldout_commitment = heldout_commitment(&salt, &rows);
    sealed_spec.dataset.heldout_cipher_sha256 = consensus::hash::sha256(&sealed);

    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(sealed_spec.clone(), 10_000);
    join_and_commit_without_key(&mut chain, task);
    let me = chain.validators[0].account();
    let none = BTreeMap::new();
    // Through the commit and key windows: the sealed file does not open, and nothing is
    // scored. The creator never reveals: the task ends at its key deadline, unscored.
    while chain.height() < chain.task(task).key_deadline() {
        assert!(matches!(
            open_sealed(&chain.task(task), &sealed),
            Err(ScoreTaskError::KeyNotOnChain(id)) if id == task
        ));
        assert!(
            !scorer_plan(chain.ledger.state(), &me, &none).contains(&ScorerStep::Score { task })
        );
        chain.commit(vec![]);
    }
    let report = chain.task(task).report.expect("ended at the key deadline");
    assert_eq!(report.outcome, consensus::finalize::Outcome::KeyWithheld);

    // With the key on chain the file opens, to the committed rows only.
    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(sealed_spec, 10_000);
    chain.attest(task, &[0, 1]);
    chain.open_reveals(task);
    let opened = open_sealed(&chain.task(task), &sealed).unwrap();
    assert_eq!((opened.salt, opened.bytes), (salt, rows));
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(matches!(open_sealed(&chain.task(task), &tampered), Err(ScoreTaskError::Sealed(_))));
}

/// The validators attest and trainer 0 joins and commits `task`; the key never comes.
fn join_and_commit_without_key(chain: &mut TestChain, task: TaskId) {
    chain.attest(task, &[0, 1]);
    let k = key(2, 0);
    let model = trained(chain, task, &k, 1);
    chain.send(&k, TxKind::JoinTask { task }).unwrap();
    chain.send(&k, TxKind::CommitModel { task, commitment: model.commitment }).unwrap();
}

#[test]
fn scorer_scores_only_in_the_score_commit_window() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(spec(), 10_000);
    train_and_reveal(&mut chain, task, &[0]);
    let me = chain.validators[0].account();
    let none = BTreeMap::new();
    let t = chain.task(task);
    let mut scored_at = Vec::new();
    while chain.height() <= t.score_deadline() {
        let plan = scorer_plan(chain.ledger.state(), &me, &none);
        if plan.contains(&ScorerStep::Score { task }) {
            scored_at.push(chain.height());
        }
        assert!(
            plan.iter().all(|s| matches!(s, ScorerStep::Score { .. })),
            "without a persisted secret the scorer never commits or reveals: {plan:?}"
        );
        // Not a validator: nothing to do, ever.
        assert!(scorer_plan(chain.ledger.state(), &chain.trainers[1].account(), &none).is_empty());
        chain.commit(vec![]);
    }
    // Committed heights reveal_deadline ..= score_commit_deadline - 1: the next block lies in
    // the score-commit window.
    let expected: Vec<Height> =
        (t.reveal_deadline().0..t.score_commit_deadline().0).map(Height).collect();
    assert_eq!(scored_at, expected);
    assert!(expected.iter().all(|h| t.phase(h.next()) == Phase::ScoreCommit));
}

#[test]
fn scorer_commits_its_persisted_secret_and_reveals_exactly_it_after_a_restart() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(spec(), 10_000);
    train_and_reveal(&mut chain, task, &[0, 1]);
    let validator = key(1, 0);
    let me = validator.account();
    chain.advance_to(chain.task(task).reveal_deadline().next());

    // Scoring produces a vector; the loop persists the secret before it commits.
    let dir = tempfile::tempdir().unwrap();
    let store = RoleStore::open_at(dir.path().join("scorer")).unwrap();
    let verdicts = vector(chain.ledger.state(), task);
    assert_eq!(verdicts.len(), 3, "baseline and two revealed submissions");
    let secret = ScoreSecret::new(&chain.chain_id(), task, &me, verdicts, salt(7));
    store.save(task, &secret).unwrap();

    // A restart: the secret is reloaded and its commitment submitted, not a new score.
    let secrets: BTreeMap<TaskId, ScoreSecret> = store.load_all().unwrap();
    let plan = scorer_plan(chain.ledger.state(), &me, &secrets);
    assert_eq!(plan, vec![ScorerStep::Commit { task, commitment: secret.commitment }]);
    chain.send(&validator, TxKind::CommitScores { task, commitment: secret.commitment }).unwrap();

    // Committed: nothing to do for the rest of the score-commit window.
    while chain.height().next() <= chain.task(task).score_commit_deadline() {
        assert_eq!(scorer_plan(chain.ledger.state(), &me, &secrets), vec![]);
        chain.commit(vec![]);
    }

    // Score-reveal window, after another restart: the reveal is exactly what was committed,
    // and the ledger accepts it.
    let secrets: BTreeMap<TaskId, ScoreSecret> = store.load_all().unwrap();
    let plan = scorer_plan(chain.ledger.state(), &me, &secrets);
    let [ScorerStep::Reveal { task: t, verdicts, salt: s }] = plan.as_slice() else {
        panic!("expected one reveal, got {plan:?}");
    };
    assert_eq!((*t, verdicts, *s), (task, &secret.verdicts, secret.salt));
    chain
        .send(&validator, TxKind::RevealScores { task, verdicts: verdicts.clone(), salt: *s })
        .unwrap();
    assert_eq!(
        chain.ledger.state().verdicts.get(&(task, me)).unwrap().verdicts.as_ref(),
        Some(&secret.verdicts)
    );
    assert_eq!(scorer_plan(chain.ledger.state(), &me, &secrets), vec![], "revealed once");
}

#[test]
fn scorer_does_not_reveal_a_secret_that_does_not_open_its_commitment() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(spec(), 10_000);
    train_and_reveal(&mut chain, task, &[0]);
    let validator = key(1, 0);
    let me = validator.account();
    chain.advance_to(chain.task(task).reveal_deadline().next());
    let verdicts = vector(chain.ledger.state(), task);
    let committed = ScoreSecret::new(&chain.chain_id(), task, &me, verdicts.clone(), salt(7));
    chain
        .send(&validator, TxKind::CommitScores { task, commitment: committed.commitment })
        .unwrap();
    chain.advance_to(chain.task(task).score_commit_deadline().next());
    let other = ScoreSecret::new(&chain.chain_id(), task, &me, verdicts, salt(8));
    let secrets = BTreeMap::from([(task, other)]);
    assert_eq!(scorer_plan(chain.ledger.state(), &me, &secrets), vec![]);
}

fn no_records() -> BTreeMap<TaskId, TaskRecord> {
    BTreeMap::new()
}

#[test]
fn trainer_joins_only_in_the_join_window_of_a_task_it_can_train() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let recipe = Recipe::default();
    let me = chain.trainers[0].account();
    let served = BTreeSet::new();
    let task = chain.create_task_unattested(spec(), 10_000);
    let t = chain.task(task);
    let mut joins_at = Vec::new();
    while chain.height() <= t.score_deadline() {
        let plan =
            trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &no_records(), &served);
        if plan == vec![TrainerStep::Join { task }] {
            joins_at.push(chain.height());
        } else {
            assert_eq!(plan, vec![], "at height {}", chain.height());
        }
        // Neither a validator nor the task's creator ever joins.
        for other in [chain.validators[0].account(), chain.creator.account()] {
            assert_eq!(
                trainer_plan(
                    chain.ledger.state(),
                    &other,
                    Offer::Recipe(&recipe),
                    &no_records(),
                    &served
                ),
                vec![]
            );
        }
        chain.commit(vec![]);
    }
    // From the block that opened the task until the join deadline's previous height.
    let expected: Vec<Height> = (t.created_at.0..t.join_deadline().0).map(Height).collect();
    assert_eq!(joins_at, expected);
}

#[test]
fn trainer_skips_full_tasks_and_tasks_its_recipe_cannot_train() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let me = chain.trainers[2].account();
    let served = BTreeSet::new();

    // Too small a parameter budget for the recipe's model, which does not prune.
    let mut small = spec();
    small.limits.max_params = 100;
    small.efficiency.reference_params = 100;
    let recipe = Recipe::default();
    assert!(recipe_fits(&recipe, &small).unwrap_err().contains("parameters"));
    let small = chain.create_task_unattested(small, 10_000);
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &no_records(), &served),
        vec![]
    );

    // A task that two others filled.
    let full = chain.create_task_unattested(spec(), 10_000);
    for i in 0..2 {
        let key = key(2, i);
        chain.send(&key, TxKind::JoinTask { task: full }).unwrap();
    }
    assert!(chain.height().next() <= chain.task(full).join_deadline());
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &no_records(), &served),
        vec![]
    );

    // With pruning the small task fits.
    let pruning: Recipe = Recipe::from_toml("[prune]\nparams = 90\n", "test").unwrap();
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&pruning), &no_records(), &served),
        vec![TrainerStep::Join { task: small }]
    );
}

#[test]
fn trainer_reveals_only_once_the_key_is_on_chain_then_serves() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let recipe = Recipe::default();
    let key = key(2, 0);
    let me = key.account();
    let task = chain.create_task_unattested(spec(), 10_000);
    chain.attest(task, &[0, 1]);
    let mut served = BTreeSet::new();
    chain.send(&key, TxKind::JoinTask { task }).unwrap();
    let model = trained(&chain, task, &key, 1);
    let records =
        BTreeMap::from([(task, TaskRecord { task, stage: Stage::Trained(model.clone()) })]);
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served),
        vec![TrainerStep::Commit { task, commitment: model.commitment }]
    );
    chain.send(&key, TxKind::CommitModel { task, commitment: model.commitment }).unwrap();
    while chain.height() < chain.task(task).commit_deadline().plus(2) {
        assert_eq!(
            trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served),
            vec![],
            "never reveal before the key is on chain, even after the commit deadline"
        );
        chain.commit(vec![]);
    }
    let creator = consensus::testing::key(3, 0);
    chain.send(&creator, TxKind::RevealHeldoutKey { task, key: heldout_key() }).unwrap();
    let plan = trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served);
    assert_eq!(plan, vec![TrainerStep::Reveal { task, model: model.clone() }]);
    // The ledger accepts it in the next block.
    chain.send(&key, model.reveal(task)).unwrap();
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served),
        vec![TrainerStep::Serve { task, model_hash: model.model_hash }]
    );
    served.insert(task);
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served),
        vec![]
    );
}

#[test]
fn trainer_resumes_from_its_persisted_plan_without_joining_again() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let recipe = Recipe::default();
    let key = key(2, 0);
    let me = key.account();
    let served = BTreeSet::new();
    let first = chain.create_task_unattested(spec(), 10_000);
    let second = chain.create_task_unattested(spec(), 10_000);
    chain.attest(first, &[0, 1]);
    let dir = tempfile::tempdir().unwrap();
    let store = RoleStore::open_at(dir.path().join("trainer")).unwrap();

    // It decides to join the first task: the plan is persisted, then JoinTask lands.
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &no_records(), &served),
        vec![TrainerStep::Join { task: first }]
    );
    store
        .save(first, &TaskRecord { task: first, stage: Stage::Joining { at: chain.height() } })
        .unwrap();
    chain.send(&key, TxKind::JoinTask { task: first }).unwrap();

    // Restart: it trains the joined task; it neither joins it again nor joins another while
    // this one is untrained.
    let records: BTreeMap<TaskId, TaskRecord> = store.load_all().unwrap();
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served),
        vec![TrainerStep::Train { task: first }]
    );

    // Trained and persisted, then a crash before the commit: after a restart the same
    // commitment (same salt) is submitted, and now it may join the second task.
    let model = trained(&chain, first, &key, 1);
    store.save(first, &TaskRecord { task: first, stage: Stage::Trained(model.clone()) }).unwrap();
    let records: BTreeMap<TaskId, TaskRecord> = store.load_all().unwrap();
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served),
        vec![
            TrainerStep::Commit { task: first, commitment: model.commitment },
            TrainerStep::Join { task: second },
        ]
    );
    chain.send(&key, TxKind::CommitModel { task: first, commitment: model.commitment }).unwrap();

    // Once the key is on chain, a restarted trainer reveals with the persisted salt.
    chain.open_reveals(first);
    let records: BTreeMap<TaskId, TaskRecord> = store.load_all().unwrap();
    let plan = trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served);
    assert!(plan.contains(&TrainerStep::Reveal { task: first, model }), "{plan:?}");
    assert!(!plan.iter().any(|s| matches!(s, TrainerStep::Join { task } if *task == first)));
}

#[test]
fn trainer_abandons_a_join_that_missed_the_window() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let recipe = Recipe::default();
    let me = chain.trainers[0].account();
    let task = chain.create_task_unattested(spec(), 10_000);
    let records =
        BTreeMap::from([(task, TaskRecord { task, stage: Stage::Joining { at: chain.height() } })]);
    let served = BTreeSet::new();
    // While the window is open, the join is tried again (the loop throttles retries).
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served),
        vec![TrainerStep::Join { task }]
    );
    chain.advance_to(chain.task(task).join_deadline().next());
    let plan = trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &records, &served);
    assert!(
        matches!(plan.as_slice(), [TrainerStep::Abandon { task: t, .. }] if *t == task),
        "{plan:?}"
    );
    let abandoned = BTreeMap::from([(
        task,
        TaskRecord { task, stage: Stage::Abandoned { reason: "missed".into() } },
    )]);
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Recipe(&recipe), &abandoned, &served),
        vec![]
    );
}

#[test]
fn a_trainer_with_a_submit_folder_joins_and_takes_only_tasks_whose_model_is_waiting() {
    let mut chain = TestChain::new(&[100, 100], 3);
    let key = key(2, 0);
    let me = key.account();
    let served = BTreeSet::new();
    let first = chain.create_task_unattested(spec(), 10_000);
    let second = chain.create_task_unattested(spec(), 10_000);
    let none = BTreeSet::new();
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Files(&none), &no_records(), &served),
        vec![],
        "no file waiting: joining would only cost the entry fee"
    );
    let second_only = BTreeSet::from([second]);
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Files(&second_only), &no_records(), &served),
        vec![TrainerStep::Join { task: second }],
        "the oldest task with a waiting file, not the oldest task"
    );
    chain.send(&key, TxKind::JoinTask { task: second }).unwrap();
    let records = BTreeMap::from([(
        second,
        TaskRecord { task: second, stage: Stage::Joining { at: chain.height() } },
    )]);
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Files(&second_only), &records, &served),
        vec![TrainerStep::Train { task: second }],
        "joined: take the file"
    );
    assert_eq!(
        trainer_plan(chain.ledger.state(), &me, Offer::Files(&none), &records, &served),
        vec![],
        "joined, but the file went away: wait for it while the commit window is open"
    );
    chain.advance_to(chain.task(second).commit_deadline().next());
    let plan = trainer_plan(chain.ledger.state(), &me, Offer::Files(&none), &records, &served);
    assert!(
        matches!(plan.as_slice(), [TrainerStep::Abandon { task, .. }] if *task == second),
        "{plan:?}"
    );
    assert!(chain.task(first).join_deadline() < chain.height().next());
}

#[test]
fn a_finished_tasks_artifacts_are_pruned_only_after_the_retention_period() {
    use node::blobs::finished_artifacts;
    let mut chain = TestChain::new(&[100, 100], 3);
    let task = chain.create_task_unattested(spec(), 10_000);
    let models = train_and_reveal(&mut chain, task, &[0, 1]);
    let deadline = chain.task(task).score_deadline();
    assert!(
        finished_artifacts(chain.ledger.state(), deadline.plus(100), 10).is_empty(),
        "nothing is pruned before the task finalizes"
    );
    chain.advance_to(deadline.next());
    assert!(chain.task(task).report.is_some(), "the task finalized at its score deadline");
    let mut revealed: Vec<Hash> = models.iter().map(|m| m.model_hash).collect();
    revealed.sort_unstable();
    assert!(finished_artifacts(chain.ledger.state(), deadline.plus(9), 10).is_empty());
    assert_eq!(finished_artifacts(chain.ledger.state(), deadline.plus(10), 10), revealed);
}
