//! The role loops in real `node` processes: a validator and a trainer with a recipe take a
//! genesis task from join to finalization. The validator attests to holding the sealed held-out
//! file; the trainer joins, trains, commits; the creator reveals the held-out key after the
//! commit deadline with `node task reveal-key`; the trainer reveals and serves its artifact; the
//! validator opens the sealed file, fetches the artifact over the network, scores it, commits
//! and reveals its verdicts. A third peer that knows the
//! artifact's hash (read from the trainer's records) asks the trainer for it over the `blob`
//! protocol: before the commit deadline the trainer does not serve it, after the reveal it does.

use crate::support::{Chain, NodeProcess, serial, wait_for};
use consensus::crypto::Keypair;
use consensus::genesis::{GenesisBalance, GenesisTask};
use consensus::task::Windows;
use consensus::types::{Amount, Hash, ModelHash};
use consensus::verdict::{Subject, Verdict};
use node::keystore;
use node::network::{self, BlobFetchError, NetworkClient, NetworkConfig, NetworkEvent};
use node::roles::trainer::{Stage, TaskRecord};
use trainer::task::{DataKind, TaskOptions, new_task};

#[test]
fn a_genesis_task_is_trained_scored_and_finalized() {
    let _serial = serial();
    let mut chain = Chain::new("roles-e2e", 1);
    let trainer_seed = [100; 32];
    let trainer_account = Keypair::from_seed(trainer_seed).account();
    let creator = Keypair::from_seed(chain.client).account();

    let iris = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/iris.csv")).unwrap();
    let opts = TaskOptions::new("iris", DataKind::Classification, 3);
    let salt = consensus::commitment::Salt(Hash([9; 32]));
    let heldout_key = consensus::commitment::HeldoutKey(Hash([8; 32]));
    let mut task = new_task(&iris, "iris.csv", &opts, salt, &heldout_key).unwrap();
    // 150 ms blocks: room for the trainer to start and sync (join), train (commit), and for
    // the validator to fetch and score (score commit).
    task.spec.windows =
        Windows { join: 100, commit: 40, key: 20, reveal: 20, score_commit: 20, score_reveal: 20 };
    // Iris holds out 30 rows; the chain's minimum is set to fit, and the entry fee to the least
    // that makes every slot together cost the prize.
    chain.genesis.params.heldout_examples_min = 30;
    task.spec.entry_fee =
        task.spec.entry_fee_min(Amount(10_000), chain.genesis.params.trainer_share_ppm);
    chain
        .genesis
        .balances
        .push(GenesisBalance { account: trainer_account, amount: Amount(100_000) });
    // Validators pay the flat fee for their CommitScores and RevealScores.
    let validator_account = Keypair::from_seed(chain.validators[0]).account();
    chain.genesis.balances.push(GenesisBalance { account: validator_account, amount: Amount(100) });
    chain.genesis.tasks.push(GenesisTask {
        creator,
        spec: task.spec.clone(),
        reward: Amount(10_000),
    });
    std::fs::write(&chain.genesis_path, chain.genesis.to_json()).unwrap();

    // The task's creator would upload the training and sealed files; here the nodes hold them
    // already (the trainer never gets the sealed one).
    let train_hash = task.spec.dataset.train_sha256;
    for (name, seed) in [("v0", chain.validators[0]), ("trainer", trainer_seed)] {
        let blobs = chain.data_dir(name, seed).join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(train_hash.to_hex()), &task.train).unwrap();
    }
    let sealed_hash = task.spec.dataset.heldout_cipher_sha256;
    let v0_blobs = chain.data_dir("v0", chain.validators[0]).join("blobs");
    std::fs::write(v0_blobs.join(sealed_hash.to_hex()), &task.sealed).unwrap();
    // The creator's data dir: its key and the held-out key, as `node task new` leaves them.
    let creator_dir = chain.root.path().join("creator");
    keystore::save(&creator_dir, &Keypair::from_seed(chain.client)).unwrap();
    keystore::save_heldout_key(&creator_dir, &heldout_key).unwrap();
    let task_dir = chain.root.path().join("task");
    trainer::task::write(&task_dir, &task).unwrap();
    let recipe = chain.root.path().join("recipe.toml");
    std::fs::write(&recipe, "[model]\nhidden = [8]\n[train]\nepochs = 20\n").unwrap();

    let http = format!("127.0.0.1:{}", crate::support::free_port());
    let http_arg = vec!["--http".to_string(), http.clone()];
    let mut validator =
        NodeProcess::start(&chain, "v0", "validator", chain.validators[0], &[], &http_arg);
    let recipe_arg = vec!["--recipe".to_string(), recipe.display().to_string()];
    let mut trainer = NodeProcess::start(
        &chain,
        "trainer",
        "trainer",
        trainer_seed,
        std::slice::from_ref(&validator.address),
        &recipe_arg,
    );

    // A peer of the chain that asks the trainer for its artifact by hash.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let runtime = runtime.unwrap();
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = runtime.block_on(probe(&chain, probe_dir.path(), &trainer.address));
    let trainer_peer = keystore::peer_id(&Keypair::from_seed(trainer_seed)).unwrap();
    let commit_deadline: u64 = 100 + 40;
    let record = trainer.data_dir.join("roles/trainer/task-1.json");
    let mut model_hash = None;
    wait_for("the trainer to train and record its model", &[&validator, &trainer], || {
        model_hash = trained_model(&record);
        model_hash.is_some()
    });
    let model_hash = model_hash.unwrap();
    let before = trainer.height();
    let early = runtime.block_on(probe.fetch_blob_from(trainer_peer, model_hash, 1 << 20));
    let after = trainer.height();
    assert!(
        after < commit_deadline,
        "asked between heights {before} and {after}: not before the commit deadline \
         {commit_deadline}; the machine is too slow for this test's windows"
    );
    assert!(
        matches!(early, Err(BlobFetchError::NotFound { .. })),
        "before its commit deadline the trainer must not serve its artifact: {early:?}"
    );

    // After the commit window the creator reveals the key, through the validator's API. The
    // window closes at the join deadline (100) once the trainer has committed, and at 140 at
    // the latest: the key is sent from the join deadline on, again until it lands.
    wait_for("the join deadline", &[&validator, &trainer], || validator.height() > 100);
    let reveal_key = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_node"))
            .args(["task", "reveal-key", "--id", "1", "--task"])
            .arg(task_dir.join("task.json"))
            .arg("--data-dir")
            .arg(&creator_dir)
            .args(["--node", &format!("http://{http}")])
            .output()
            .unwrap()
    };
    let mut revealed = reveal_key();
    while !revealed.status.success() && validator.height() <= commit_deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        revealed = reveal_key();
    }
    assert!(revealed.status.success(), "{}", String::from_utf8_lossy(&revealed.stderr));

    // Every wait is bounded; the chain is followed in steps so a slow machine only slows it.
    let score_deadline: u64 = 100 + 40 + 20 + 20 + 20 + 20;
    for height in (40..=score_deadline + 1).step_by(40).chain([score_deadline + 1]) {
        let nodes = [&validator, &trainer];
        wait_for(&format!("height {height}"), &nodes, || {
            validator.height() >= height && trainer.height() >= height
        });
    }
    let late = runtime.block_on(probe.fetch_blob_from(trainer_peer, model_hash, 1 << 20));
    let path = late.expect("after its reveal the trainer serves its artifact");
    assert_eq!(consensus::hash::sha256(&std::fs::read(path).unwrap()), model_hash);
    drop(probe);
    validator.stop();
    trainer.stop();
    let logs = format!("--- v0:\n{}\n--- trainer:\n{}", validator.tail(), trainer.tail());

    let ledger = validator.ledger(&chain.genesis);
    let state = ledger.state();
    let (_, t) = state.tasks.iter().next().expect("the genesis task");
    let submission = state.submissions.get(&(t.id, trainer_account)).expect("the trainer joined");
    let reveal = submission.reveal.expect("the trainer revealed");
    let (_, key_at) = t.key.expect("the creator revealed the key");
    assert!(key_at > t.commit_deadline(), "the key came only after the commit deadline");
    assert!(reveal.revealed_at >= key_at, "revealed only once the key was on chain");
    assert!(t.attested.contains(&validator_account), "the validator attested");
    let verdicts = state.verdicts.get(&(t.id, validator_account)).and_then(|r| r.verdicts.clone());
    let verdicts = verdicts.unwrap_or_else(|| panic!("the validator revealed no verdicts\n{logs}"));
    let entry = verdicts.iter().find(|e| e.subject == Subject::Submission(trainer_account));
    assert!(
        matches!(entry.map(|e| e.verdict), Some(Verdict::Scored { .. })),
        "the validator fetched and scored the artifact: {verdicts:?}\n{logs}"
    );
    assert!(t.report.is_some(), "the task finalized");
    assert!(validator.data_dir.join("roles/scorer").join(format!("task-{}.json", t.id.0)).exists());
    assert!(trainer.data_dir.join("roles/trainer").join(format!("task-{}.json", t.id.0)).exists());
}

/// The model hash in the trainer's record of a task, once it trained.
fn trained_model(record: &std::path::Path) -> Option<ModelHash> {
    let bytes = std::fs::read(record).ok()?;
    match serde_json::from_slice::<TaskRecord>(&bytes).ok()?.stage {
        Stage::Trained(model) => Some(model.model_hash),
        _ => None,
    }
}

/// Starts an in-process peer of `chain` (blob store in `dir`) connected to `address`.
async fn probe(chain: &Chain, dir: &std::path::Path, address: &str) -> NetworkClient {
    let genesis = &chain.genesis;
    let mut config =
        NetworkConfig::for_chain(&genesis.chain_id, genesis.hash(), &genesis.params, dir.into());
    config.mdns = false;
    config.bootstrap = vec![address.parse().unwrap()];
    let key = keystore::libp2p_keypair(&Keypair::from_seed([77; 32])).unwrap();
    let (client, mut events, event_loop) = network::start(key, config).unwrap();
    tokio::spawn(event_loop.run());
    let connected = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(event) = events.recv().await {
            if matches!(event, NetworkEvent::PeerConnected { .. }) {
                return;
            }
        }
    });
    connected.await.expect("the probe connects to the trainer");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    client
}
