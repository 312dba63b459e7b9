//! End-to-end tests: whole local networks of node processes on loopback, driven over their HTTP
//! APIs through the `testnet` library's [`Network`], planned as this package's [`net`] does.
//!
//! This test executable is also the nodes' (see [`crucible_tests::suite`]: no libtest harness,
//! `harness = false` in `Cargo.toml`); its scenarios run one after another, so two networks never
//! share the two cores. `cargo test -p crucible-tests --test e2e [FILTER]` runs the scenarios
//! whose names contain a filter; `--list` lists them.
//!
//! The scenarios (issue 7's list): (a)+(e)+(f) a full round with 4 validators and 3 trainers
//! finalizes, conserves escrow and bonds, and every node agrees after it; a node started
//! afterwards syncs the whole chain; `node ledger verify` passes on every data dir. (b) a
//! validator killed mid-round and restarted catches up and the round finalizes. (d) a trainer
//! whose reveal does not match its commitment forfeits its bond; one that submits a copy of
//! another's model with one bit changed earns nothing. (c) with 5 validators, an inflating and a
//! constant scorer earn less per stake than the honest ones and change no consensus verdict.
//!
//! Every wait polls the nodes' APIs with a generous bound and fails with the last lines of every
//! node's log; a failed scenario keeps its directory (keys, configs, logs, data dirs) and prints
//! where it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail, ensure};
use consensus::commitment::{Salt, model_commitment, scores_commitment};
use consensus::finalize::{FinalizationReport, TrainerReport};
use consensus::tx::TxKind;
use consensus::types::{AccountId, Hash, TaskId};
use consensus::verdict::{Verdict, VerdictEntry, VerdictVector, expected_layout};
use crucible_tests::net::{
    self, CHAIN_TIMEOUT, FINALIZE_TIMEOUT, READY_TIMEOUT, check_report, with_logs,
};
use crucible_tests::suite::{self, Scenario};
use node::http::views;
use testnet::client::{Stage, stage};
use testnet::network::Network;
use testnet::plan::Role;

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "full_round_finalizes_agrees_then_a_late_node_syncs_and_every_ledger_verifies",
        run: full_round,
        ignore: None,
    },
    Scenario {
        name: "validator_killed_mid_round_restarts_catches_up_and_the_round_finalizes",
        run: validator_restart,
        ignore: None,
    },
    Scenario {
        name: "trainer_revealing_another_model_than_it_committed_forfeits_its_bond",
        run: mismatched_reveal,
        ignore: None,
    },
    Scenario {
        name: "trainer_submitting_a_copy_of_another_model_earns_nothing",
        run: copied_model,
        ignore: None,
    },
    Scenario {
        name: "inflating_and_constant_validators_earn_less_and_change_no_verdict",
        run: dishonest_validators,
        ignore: None,
    },
];

fn main() -> ExitCode {
    suite::main(SCENARIOS, "crucible-e2e-")
}

/// (a), (e), (f): a full round with 4 validators and 3 trainers finalizes, conserves the escrow
/// and bonds exactly, and every node has the same block and state root at the height after
/// finalization; a node started afterwards syncs the whole chain to the same state root; and
/// `node ledger verify` passes on every node's data dir once the nodes have stopped.
fn full_round(dir: &Path) -> anyhow::Result<()> {
    let mut net = net::plan(dir, 4, 3, 7)?;
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let (report, last) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        let after = net.agreement(last + 1)?;
        println!(
            "  task {task_id} finalized at height {last}; all {} nodes have block {} and state \
             root {} at height {}",
            net.plan.nodes.len(),
            after.summary.hash,
            after.state_root,
            last + 1
        );
        // (e): a node that was not there for the round syncs the whole chain.
        let tip = net.wait_height(0, last + 2)?;
        let late = net.start_extra("late-node", 7)?;
        let client = net.extra[late].client.clone();
        let genesis = net.plan.genesis.hash();
        net.wait(READY_TIMEOUT, "late-node to answer GET /status", || {
            client.status().ok().filter(|s| s.genesis_hash == genesis)
        })?;
        for height in [1, last + 1, tip] {
            let theirs = net.block_at("late-node", &client, height)?;
            let ours = net.clients[0].block(height)?;
            ensure!(
                (theirs.summary.hash, theirs.state_root) == (ours.summary.hash, ours.state_root),
                "late-node has block {} state root {} at height {height}, validator-0 block {} \
                 state root {}",
                theirs.summary.hash,
                theirs.state_root,
                ours.summary.hash,
                ours.state_root
            );
        }
        println!("  late-node synced to height {tip} with the same blocks and state roots");
        // (f): every ledger replays from genesis once the nodes have stopped.
        stop_and_verify_ledgers(net)
    })
}

/// (f): stops every node and replays each one's ledger from genesis (`node ledger verify`).
fn stop_and_verify_ledgers(net: &mut Network) -> anyhow::Result<()> {
    net.stop_all();
    for (name, line) in net.verify_ledgers()? {
        println!("  {name}: {line}");
    }
    Ok(())
}

/// Waits until the task finalizes and checks its report; returns it, the height that finalized
/// it, and the entry of trainer `account` (`who`).
fn finalized_entry(
    net: &mut Network,
    task_id: u64,
    account: AccountId,
    who: &str,
) -> anyhow::Result<(FinalizationReport, u64, TrainerReport)> {
    let (report, last) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
    check_report(net, &report)?;
    let entry = report.trainers.iter().find(|t| t.account == account).cloned();
    let entry = entry.with_context(|| format!("{who} is not in the finalization report"))?;
    Ok((report, last, entry))
}

/// (b): a validator killed (SIGKILL) during the training window and restarted a few blocks later
/// catches up, the chain goes on without it meanwhile, and the round still finalizes with every
/// node, the restarted one included, agreeing after finalization; its ledger verifies.
fn validator_restart(dir: &Path) -> anyhow::Result<()> {
    let mut net = net::plan(dir, 4, 3, 11)?;
    let victim = 3;
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let deadlines = net.clients[0].task(task_id)?.deadlines;
        // Mid-round: the trainers are training.
        net.wait_height(0, deadlines.join.0 + 2)?;
        let killed_at = net.clients[victim].status().map(|s| s.height.0).unwrap_or(0);
        net.kill(victim);
        // The other three validators hold 3/4 of the stake and keep committing blocks.
        let lead_then = net.wait_height(0, 0)?;
        let resumed = net.wait_height(0, lead_then + 6)?;
        net.start(victim)?;
        net.wait_ready(victim)?;
        let tip = net.wait_height(0, resumed)?;
        let caught_up = net.wait_height(victim, tip)?;
        println!(
            "  validator-{victim} killed at height {killed_at}, restarted at {resumed}, caught \
             up to {caught_up}"
        );
        let (report, last) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        let after = net.agreement(last + 1)?;
        let account = net.plan.nodes[victim].account();
        let revealed = report.validators.iter().any(|v| v.account == account && v.revealed);
        println!(
            "  task {task_id} finalized at height {last} (validator-{victim} revealed scores: \
             {revealed}); all {} nodes have block {} and state root {} at height {}",
            net.plan.nodes.len(),
            after.summary.hash,
            after.state_root,
            last + 1
        );
        stop_and_verify_ledgers(net)
    })
}

/// (d), first half: a trainer whose reveal does not match its commitment forfeits its bond and
/// earns nothing, while the honest trainers' round finalizes and conserves the escrow. The test
/// itself is that trainer (the plan's last trainer, whose node it never starts): it joins,
/// commits to one model hash and reveals another.
fn mismatched_reveal(dir: &Path) -> anyhow::Result<()> {
    let mut net = net::plan(dir, 4, 4, 13)?;
    let cheat = net.plan.nodes.len() - 1;
    with_logs(&mut net, |net| {
        net.start_all_but(&[cheat])?;
        let key = net.plan.nodes[cheat].key();
        let account = key.account();
        let task_id = net.post_task()?;
        let task = TaskId(task_id);
        net.send(&key, TxKind::JoinTask { task }).context("joining the task")?;
        let lead = net.clients[0].clone();
        let on_chain = |want: Stage| {
            let lead = lead.clone();
            move || {
                let view = lead.task(task_id).ok()?;
                view.submissions
                    .iter()
                    .find(|s| s.trainer == account && stage(s) == want)
                    .map(|_| ())
            }
        };
        net.wait(CHAIN_TIMEOUT, "the cheat's join to land", on_chain(Stage::Joined))?;
        let committed = Hash([0xC0; 32]);
        let salt = Salt(Hash([0x5A; 32]));
        let commitment =
            model_commitment(&net.plan.genesis.chain_id, task, &account, &committed, &salt);
        net.send(&key, TxKind::CommitModel { task, commitment }).context("committing")?;
        net.wait(CHAIN_TIMEOUT, "the cheat's commitment to land", on_chain(Stage::Committed))?;
        // In the reveal window, open the commitment with another model.
        wait_phase(net, task_id, "reveal")?;
        let reveal = TxKind::RevealModel {
            task,
            model_hash: Hash([0xD1; 32]),
            salt,
            size_bytes: 1_000,
            params: 100,
        };
        // The node may refuse the reveal outright or put it on the chain to fail there; either
        // way the commitment stays unopened.
        match net.send(&key, reveal) {
            Ok(tx) => println!("  the mismatched reveal was accepted as tx {tx}"),
            Err(err) => println!("  the mismatched reveal was refused: {err:#}"),
        }
        let (report, last, entry) = finalized_entry(net, task_id, account, "the cheat")?;
        ensure!(
            entry.forfeit.is_some()
                && entry.bond_refund.0 == 0
                && entry.bond_forfeit.0 > 0
                && entry.payout.0 == 0,
            "the cheat kept its bond or earned: {entry:?}"
        );
        let honest_paid: u64 =
            report.trainers.iter().filter(|t| t.account != account).map(|t| t.payout.0).sum();
        println!(
            "  task {task_id} finalized at height {last}: the cheat forfeited {} ({:?}); honest \
             trainers earned {honest_paid}",
            entry.bond_forfeit.0, entry.forfeit
        );
        net.agreement(last + 1)?;
        Ok(())
    })
}

/// (d), second half: a trainer that submits another trainer's model with a few bytes changed
/// (the same predictions) earns nothing. The test is that trainer (the plan's last trainer,
/// whose node it never starts): once trainer-0 has committed, it copies trainer-0's artifact from
/// trainer-0's data dir, flips the lowest bit of one non-zero weight, uploads the copy to every
/// validator, and commits and reveals it as its own.
fn copied_model(dir: &Path) -> anyhow::Result<()> {
    let mut net = net::plan(dir, 4, 4, 17)?;
    let copier = net.plan.nodes.len() - 1;
    let original = net.plan.nodes.iter().position(|n| n.role == Role::Trainer).expect("trainers");
    with_logs(&mut net, |net| {
        net.start_all_but(&[copier])?;
        let key = net.plan.nodes[copier].key();
        let account = key.account();
        let original_account = net.plan.nodes[original].account();
        let task_id = net.post_task()?;
        let task = TaskId(task_id);
        net.send(&key, TxKind::JoinTask { task }).context("joining the task")?;
        let lead = net.clients[0].clone();
        let stage_of = |who, want: Stage| {
            let lead = lead.clone();
            move || {
                let view = lead.task(task_id).ok()?;
                view.submissions.iter().find(|s| s.trainer == who && stage(s) == want).map(|_| ())
            }
        };
        net.wait(CHAIN_TIMEOUT, "the copier's join to land", stage_of(account, Stage::Joined))?;
        let name = net.plan.nodes[original].name.clone();
        net.wait(
            CHAIN_TIMEOUT,
            &format!("{name} to commit its model"),
            stage_of(original_account, Stage::Committed),
        )?;
        let data_dir = net.layout.dir.join(&name);
        let trained = trained_model(&data_dir, task_id)?;
        let model_hash: Hash = trained["model_hash"]
            .as_str()
            .context("no model_hash in the trainer's record")?
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}'s model hash: {e:?}"))?;
        let size_bytes = trained["size_bytes"].as_u64().context("no size_bytes")?;
        let params = trained["params"].as_u64().context("no params")?;
        // Before its reveal the artifact is in the trainer's withheld store, which no peer can
        // fetch from; the copier reads it from the trainer's disk.
        let blob = data_dir
            .join(node::roles::persist::ROLES_DIR)
            .join(node::roles::trainer::TRAINER_DIR)
            .join(node::roles::trainer::WITHHELD_DIR)
            .join(model_hash.to_hex());
        let mut artifact =
            std::fs::read(&blob).with_context(|| format!("reading {}", blob.display()))?;
        ensure!(artifact.len() as u64 == size_bytes, "{} has the wrong size", blob.display());
        // The lowest mantissa bit of a non-zero weight near the end (f32 or f16, little-endian):
        // the copy hashes differently but predicts the same and has as many non-zero weights.
        let at = (8..artifact.len() / 2)
            .step_by(4)
            .map(|back| artifact.len() - back)
            .find(|&p| artifact[p + 1] != 0)
            .context("no non-zero weight found")?;
        artifact[at] ^= 1;
        let mut copy_hash = None;
        for (node, client) in net.plan.validators().zip(&net.clients) {
            let hash = client
                .post_blob(&artifact)
                .with_context(|| format!("uploading the copy to {}", node.name))?
                .sha256;
            copy_hash = Some(hash);
        }
        let copy_hash = copy_hash.context("no validators")?;
        ensure!(copy_hash != model_hash, "the copy hashes like the original");
        let salt = Salt(Hash([0x7E; 32]));
        let commitment =
            model_commitment(&net.plan.genesis.chain_id, task, &account, &copy_hash, &salt);
        net.send(&key, TxKind::CommitModel { task, commitment }).context("committing")?;
        net.wait(
            CHAIN_TIMEOUT,
            "the copier's commitment to land",
            stage_of(account, Stage::Committed),
        )?;
        wait_phase(net, task_id, "reveal")?;
        let reveal = TxKind::RevealModel { task, model_hash: copy_hash, salt, size_bytes, params };
        net.send(&key, reveal).context("revealing the copy")?;
        net.wait(CHAIN_TIMEOUT, "the copier's reveal to land", stage_of(account, Stage::Revealed))?;
        let (_, last, entry) = finalized_entry(net, task_id, account, "the copier")?;
        // Winner takes all: the copy scores what the original scores, and on a tie the earlier
        // commit (the original's) wins, so the copy can never be the champion.
        ensure!(entry.rank != Some(1) && entry.payout.0 == 0, "the copier was paid: {entry:?}");
        println!(
            "  task {task_id} finalized at height {last}: the copy of {name}'s model (rank \
             {:?}) earns {}",
            entry.rank, entry.payout.0
        );
        net.agreement(last + 1)?;
        Ok(())
    })
}

/// The `trained` record of a trainer's task, from `DATA_DIR/roles/*/task-<id>.json`.
fn trained_model(data_dir: &Path, task_id: u64) -> anyhow::Result<serde_json::Value> {
    let (path, record) = role_record(data_dir, task_id)?;
    record["stage"]
        .get("trained")
        .cloned()
        .with_context(|| format!("{} has no trained model: {record}", path.display()))
}

/// A role's record of a task: `DATA_DIR/roles/*/task-<id>.json`, with its path.
fn role_record(data_dir: &Path, task_id: u64) -> anyhow::Result<(PathBuf, serde_json::Value)> {
    let roles = data_dir.join("roles");
    for entry in
        std::fs::read_dir(&roles).with_context(|| format!("reading {}", roles.display()))?
    {
        let path = entry?.path().join(format!("task-{task_id}.json"));
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let record = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            return Ok((path, record));
        }
    }
    bail!("no record of task {task_id} under {}", roles.display())
}

/// The verdict vector an honest validator committed to for a task (its scorer's record).
fn committed_verdicts(data_dir: &Path, task_id: u64) -> anyhow::Result<VerdictVector> {
    let (path, record) = role_record(data_dir, task_id)?;
    let verdicts = record
        .get("verdicts")
        .or_else(|| record.get("secret").and_then(|s| s.get("verdicts")))
        .with_context(|| format!("{} has no verdicts: {record}", path.display()))?;
    serde_json::from_value(verdicts.clone())
        .with_context(|| format!("the verdicts in {}", path.display()))
}

/// (c): in a network of 5 validators, one that reports every score as 1,000,000 ppm (beyond the
/// tolerance above every honest score, checked) and one that reports a constant 500,000 ppm
/// without evaluating each earn less per unit of stake than every honest validator, and the
/// consensus verdict on every entry is the honest validators' verdict. The test is both
/// dishonest validators' scorer: their nodes run without held-out files (so they vote on blocks
/// but do not score), and it commits and reveals their verdict vectors.
fn dishonest_validators(dir: &Path) -> anyhow::Result<()> {
    let mut net = net::plan(dir, 5, 3, 19)?;
    let (inflater, constant) = (3, 4);
    for i in [inflater, constant] {
        let config = &net.layout.configs[i];
        let text = std::fs::read_to_string(config)?;
        // No scoring loop: the test scores for them (they still attest, below).
        std::fs::write(config, text + "scorer = false\n")?;
    }
    with_logs(&mut net, |net| {
        net.start_all()?;
        let task_id = net.post_task()?;
        let task = TaskId(task_id);
        for i in [inflater, constant] {
            net.send(&net.plan.nodes[i].key(), TxKind::AttestHeldout { task })
                .with_context(|| format!("attesting for {}", net.plan.nodes[i].name))?;
        }
        // In the score-commit window: the revealed trainers fix the verdict vector's layout.
        wait_phase(net, task_id, "score_commit")?;
        let view = net.clients[0].task(task_id)?;
        let revealed =
            view.submissions.iter().filter(|s| stage(s) == Stage::Revealed).map(|s| s.trainer);
        let layout = expected_layout(false, &[], revealed);
        let chain_id = net.plan.genesis.chain_id.clone();
        let mut secrets = Vec::new();
        for (i, score) in [(inflater, 1_000_000), (constant, 500_000)] {
            let key = net.plan.nodes[i].key();
            let verdicts: VerdictVector = layout
                .iter()
                .map(|&subject| VerdictEntry { subject, verdict: Verdict::scored(score) })
                .collect();
            let salt = Salt(Hash(testnet::plan::derive(19, &format!("salt/{i}"))));
            let commitment = scores_commitment(&chain_id, task, &key.account(), &verdicts, &salt);
            net.send(&key, TxKind::CommitScores { task, commitment })
                .with_context(|| format!("committing {}'s scores", net.plan.nodes[i].name))?;
            secrets.push((i, key, verdicts, salt));
        }
        wait_phase(net, task_id, "score_reveal")?;
        for (i, key, verdicts, salt) in secrets {
            net.send(&key, TxKind::RevealScores { task, verdicts, salt })
                .with_context(|| format!("revealing {}'s scores", net.plan.nodes[i].name))?;
        }
        let (report, last) = net.finalized(task_id, FINALIZE_TIMEOUT)?;
        check_report(net, &report)?;
        net.agreement(last + 1)?;
        let tolerance = net.plan.genesis.params.agreement_tolerance_ppm;
        for honest in 0..3 {
            let name = &net.plan.nodes[honest].name;
            let verdicts = committed_verdicts(&net.layout.dir.join(name), task_id)?;
            ensure!(
                verdicts.len() == report.entries.len(),
                "{name} scored {} entries, the report has {}",
                verdicts.len(),
                report.entries.len()
            );
            for (mine, entry) in verdicts.iter().zip(&report.entries) {
                ensure!(
                    mine.verdict == entry.consensus,
                    "the consensus on {:?} is {:?}, but honest {name} found {:?}",
                    entry.subject,
                    entry.consensus,
                    mine.verdict
                );
                if let Some(score) = mine.verdict.score() {
                    ensure!(
                        score.0 + tolerance < 1_000_000,
                        "{name}'s score {} on {:?} is within the tolerance of the inflated one",
                        score.0,
                        entry.subject
                    );
                }
            }
        }
        let per_stake = |i: usize| -> anyhow::Result<u128> {
            let account = net.plan.nodes[i].account();
            let v = report
                .validators
                .iter()
                .find(|v| v.account == account)
                .with_context(|| format!("{} is not in the report", net.plan.nodes[i].name))?;
            ensure!(v.revealed, "{} did not reveal", net.plan.nodes[i].name);
            Ok(u128::from(v.payout.0) * 1_000_000 / u128::from(v.stake.max(1)))
        };
        let honest_least = (0..3).map(per_stake).collect::<anyhow::Result<Vec<_>>>()?;
        let honest_least = honest_least.into_iter().min().expect("three honest validators");
        for i in [inflater, constant] {
            let theirs = per_stake(i)?;
            ensure!(
                theirs < honest_least,
                "{} earned {theirs} per million stake, an honest validator as little as \
                 {honest_least}",
                net.plan.nodes[i].name
            );
        }
        println!(
            "  task {task_id} finalized at height {last}: every consensus verdict is the honest \
             one; per million stake, honest validators earn at least {honest_least}, the \
             inflater {} and the constant scorer {}",
            per_stake(inflater)?,
            per_stake(constant)?
        );
        Ok(())
    })
}

/// Waits until task `task_id` is in its `phase` window or a later one. Windows close once
/// everyone who may act in them has, so a deadline read when the task opened is only an upper
/// bound.
fn wait_phase(net: &mut Network, task_id: u64, phase: &str) -> anyhow::Result<()> {
    const ORDER: [&str; 7] =
        ["join", "commit", "key", "reveal", "score_commit", "score_reveal", "finalized"];
    let rank = |p: &str| ORDER.iter().position(|o| *o == p);
    let want = rank(phase).context("unknown phase")?;
    let lead = net.clients[0].clone();
    net.wait(CHAIN_TIMEOUT, &format!("task {task_id} to reach its {phase} window"), move || {
        let view = lead.task(task_id).ok()?;
        (rank(views::phase_name(view.summary.phase))? >= want).then_some(())
    })
}
