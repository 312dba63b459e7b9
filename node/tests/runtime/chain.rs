//! A chain of validators (and a late trainer) as processes: consensus, gossip, a SIGKILL and
//! recovery, sync from genesis.

use std::process::Command;

use crate::support::{Chain, NodeProcess, assert_logs_agree, blocks, free_port, serial, wait_for};
use consensus::crypto::Keypair;
use consensus::tx::TxKind;
use consensus::types::{AccountId, Amount};

fn node_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_node")).args(args).output().unwrap()
}

fn start_validators(chain: &Chain, extra_first: &[String]) -> Vec<NodeProcess> {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for (i, seed) in chain.validators.iter().enumerate() {
        let bootstrap: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
        let extra = if i == 0 { extra_first } else { &[] };
        nodes.push(NodeProcess::start(
            chain,
            &format!("v{i}"),
            "validator",
            *seed,
            &bootstrap,
            extra,
        ));
    }
    nodes
}

#[test]
fn validators_agree_and_a_transfer_commits_everywhere() {
    let _serial = serial();
    let chain = Chain::new("rt-agree", 4);
    let http = format!("127.0.0.1:{}", free_port());
    let mut nodes = start_validators(&chain, &["--http".into(), http.clone()]);
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    wait_for("four validators to commit 3 blocks", &all, || all.iter().all(|n| n.height() >= 3));

    // A transfer signed with the client's key, sent to v0's HTTP API by `node tx transfer`.
    let client_dir = chain.data_dir("client", chain.client);
    let to = AccountId([77; 32]);
    let out = Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["tx", "transfer", "--to", &to.to_hex(), "--amount", "5", "--data-dir"])
        .arg(&client_dir)
        .args(["--node", &format!("http://{http}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "tx transfer failed: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("the transfer to commit on every validator", &all, || {
        all.iter().all(|n| n.log.lock().unwrap().blocks.values().any(|b| b.txs > 0))
    });
    let top = assert_logs_agree(&all);
    assert!(top >= 3);
    drop(all);

    for node in &mut nodes {
        node.stop();
    }
    let ledgers: Vec<_> = nodes.iter().map(|n| n.ledger(&chain.genesis)).collect();
    let shortest = ledgers.iter().map(|l| l.height()).min().unwrap();
    for ledger in &ledgers {
        assert_eq!(ledger.state().account(&to).balance, Amount(5));
        let client = Keypair::from_seed(chain.client).account();
        assert_eq!(ledger.state().account(&client).nonce.0, 1);
        let ours = blocks(ledger);
        let first = blocks(&ledgers[0]);
        let common = shortest.0 as usize;
        assert_eq!(ours[..common], first[..common], "stored chains differ");
    }
    let elapsed_ms = ledgers[0].block(shortest).unwrap().unwrap().header.time_ms
        - ledgers[0].block(consensus::types::Height(1)).unwrap().unwrap().header.time_ms;
    eprintln!(
        "agree: {} blocks on every validator, {} ms per block after the first",
        shortest.0,
        elapsed_ms / (shortest.0 - 1).max(1)
    );
    let at_top: Vec<_> =
        ledgers.iter().filter(|l| l.height() == shortest).map(|l| l.state_root()).collect();
    assert!(at_top.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_killed_validator_and_a_late_trainer_catch_up() {
    let _serial = serial();
    let chain = Chain::new("rt-restart", 4);
    let mut nodes = start_validators(&chain, &[]);
    {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        wait_for("four validators to commit 3 blocks", &all, || {
            all.iter().all(|n| n.height() >= 3)
        });
    }

    // SIGKILL v3; the other three hold more than two thirds of the stake and go on.
    nodes[3].kill();
    let killed_at = nodes.iter().map(NodeProcess::height).max().unwrap();
    {
        let live: Vec<&NodeProcess> = nodes[..3].iter().collect();
        wait_for("three validators to go on", &live, || {
            live.iter().all(|n| n.height() >= killed_at + 10)
        });
    }

    // A trainer that starts late, and v3 restarted from its store.
    let bootstrap = vec![nodes[0].address.clone(), nodes[1].address.clone()];
    let mut trainer = NodeProcess::start(&chain, "trainer", "trainer", [100; 32], &bootstrap, &[]);
    nodes[3].restart();
    let restarted_at = nodes[..3].iter().map(NodeProcess::height).max().unwrap();
    let v3 = Keypair::from_seed(chain.validators[3]).account().to_hex();
    {
        let mut all: Vec<&NodeProcess> = nodes.iter().collect();
        all.push(&trainer);
        wait_for("v3 and the trainer to catch up", &all, || {
            let target = nodes[..3].iter().map(NodeProcess::height).min().unwrap();
            nodes[3].height() >= restarted_at + 2
                && trainer.height() >= restarted_at + 2
                && nodes[3].height() + 2 >= target
                && trainer.height() + 2 >= target
        });
        // v3 keeps voting: a block it proposed after its restart is committed (a proposal is
        // committed only once v3 holds the chain's tip and a quorum prevotes and precommits).
        wait_for("a block proposed by the restarted v3", &all, || {
            nodes[0]
                .log
                .lock()
                .unwrap()
                .blocks
                .range(restarted_at + 1..)
                .any(|(_, b)| b.proposer == v3)
        });
        let top = assert_logs_agree(&all);
        assert!(top > restarted_at);
        let synced =
            trainer.log.lock().unwrap().lines.iter().any(|l| l.contains("caught up by sync"));
        assert!(synced, "the trainer did not sync the blocks before it joined");
        for node in &all {
            let log = node.log.lock().unwrap();
            assert!(
                !log.lines.iter().any(|l| l.contains("equivocation")),
                "{} saw an equivocation",
                node.name
            );
        }
    }

    for node in nodes.iter_mut().chain(std::iter::once(&mut trainer)) {
        node.stop();
    }
    let mut ledgers: Vec<_> = nodes.iter().map(|n| n.ledger(&chain.genesis)).collect();
    ledgers.push(trainer.ledger(&chain.genesis));
    let shortest = ledgers.iter().map(|l| l.height()).min().unwrap();
    assert!(shortest.0 > restarted_at);
    let first = blocks(&ledgers[0]);
    for ledger in &ledgers {
        let ours = blocks(ledger);
        let common = shortest.0 as usize;
        assert_eq!(ours[..common], first[..common], "stored chains differ");
        assert!(
            ours.iter()
                .flat_map(|b| b.txs.iter())
                .all(|tx| !matches!(tx.tx.kind, TxKind::Evidence { .. })),
            "an equivocation reached the chain"
        );
    }
    eprintln!(
        "restart: v3 killed at {killed_at}, restarted at {restarted_at}; all at {} or more",
        shortest.0
    );
    // The trainer's state matches a validator's at the same height.
    let trainer_ledger = ledgers.last().unwrap();
    if let Some(twin) = ledgers[..4].iter().find(|l| l.height() == trainer_ledger.height()) {
        assert_eq!(twin.state_root(), trainer_ledger.state_root());
    }
}

#[test]
fn init_config_file_and_status() {
    let _serial = serial();
    let chain = Chain::new("rt-cli", 1);
    // The validator's key is in place; `node init` keeps it and copies the genesis.
    let dir = chain.data_dir("v0", chain.validators[0]);
    let dir_text = dir.display().to_string();
    let genesis = chain.genesis_path.display().to_string();
    let out = node_command(&["init", "--data-dir", &dir_text, "--genesis", &genesis]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("genesis.json").is_file() && dir.join("node.toml").is_file());

    // Errors name what is wrong.
    let out = node_command(&["--role", "validator"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
    let out =
        node_command(&["--role", "validator", "--data-dir", &dir_text, "--recipe", &dir_text]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a recipe is for a trainer"));

    // Every setting from the config file; the flags only name it.
    let http = format!("127.0.0.1:{}", free_port());
    let config = chain.root.path().join("v0.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "role = \"validator\"\ndata_dir = {dir_text:?}\nlisten = \"/ip4/127.0.0.1/tcp/{port}\"\nhttp = \"{http}\"\nmdns = false\n"
        ),
    )
    .unwrap();
    let args = vec!["--config".to_string(), config.display().to_string()];
    let mut node = NodeProcess::with_args("v0", dir.clone(), String::new(), args);
    wait_for("a lone validator to commit 2 blocks", &[&node], || node.height() >= 2);
    assert!(node.tail().contains("http api on http://"));
    let out = node_command(&["status", "--node", &format!("http://{http}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["chain_id"], "rt-cli");
    assert!(status["height"].as_u64().unwrap() >= 2);
    node.stop();
}
