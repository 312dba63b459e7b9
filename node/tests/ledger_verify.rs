//! `node ledger verify` on a real sled chain: passes on an intact chain, fails on a tampered one.

use std::process::Command;

use consensus::chain::{Ledger, build_block};
use consensus::crypto::Keypair;
use consensus::encoding::encode;
use consensus::genesis::{Genesis, GenesisBalance, GenesisValidator, Params};
use consensus::state::Account;
use consensus::storage::{Op, SledStore, Store, Tree};
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Amount, Nonce, Round};
use consensus::vote::{CommitCertificate, SignedVote, Vote, VoteKind};

fn chain_in(dir: &std::path::Path) -> Genesis {
    chain_and_ledger_in(dir).0
}

fn chain_and_ledger_in(dir: &std::path::Path) -> (Genesis, Ledger) {
    let validator = Keypair::from_seed([1; 32]);
    let user = Keypair::from_seed([2; 32]);
    let genesis = Genesis {
        chain_id: "verify-test".into(),
        genesis_time_ms: 0,
        validators: vec![GenesisValidator {
            account: validator.account(),
            stake: Amount(10),
            name: "v".into(),
        }],
        balances: vec![GenesisBalance { account: user.account(), amount: Amount(1_000) }],
        params: Params::default(),
        tasks: vec![],
    };
    std::fs::write(dir.join("genesis.json"), genesis.to_json()).unwrap();
    let mut ledger =
        Ledger::open(Box::new(SledStore::open(&dir.join("chain")).unwrap()), &genesis).unwrap();
    let mut last: Option<CommitCertificate> = None;
    for i in 0..5u64 {
        let tx = SignedTx::sign(
            &user,
            Tx {
                chain_id: genesis.chain_id.clone(),
                nonce: Nonce(i),
                kind: TxKind::Transfer { to: validator.account(), amount: Amount(3) },
            },
        );
        let block = build_block(
            ledger.state(),
            vec![tx],
            1_000 * (i + 1),
            validator.account(),
            last.clone(),
        )
        .unwrap();
        let vote = Vote {
            height: block.height(),
            round: Round(0),
            kind: VoteKind::Precommit,
            block: Some(block.hash()),
        };
        let cert = CommitCertificate::from_precommits(&[SignedVote::sign(
            &validator,
            &genesis.chain_id,
            vote,
        )])
        .unwrap();
        ledger.commit_block(&block, &cert).unwrap();
        last = Some(cert);
    }
    (genesis, ledger)
}

fn verify(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["ledger", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn verify_passes_on_an_intact_chain_and_fails_on_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    chain_in(dir.path());
    let out = verify(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 blocks replayed"), "{stdout}");

    {
        let store = SledStore::open(&dir.path().join("chain")).unwrap();
        let forged = Account { balance: Amount(1_000_000), nonce: Nonce(5) };
        let user = Keypair::from_seed([2; 32]).account();
        store.write(vec![Op::Put(Tree::Accounts, encode(&user), encode(&forged))]).unwrap();
    }
    let out = verify(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("differs from the recomputed"), "{stderr}");
}

#[test]
fn verify_explains_a_missing_chain() {
    let dir = tempfile::tempdir().unwrap();
    let out = verify(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("genesis"), "{stderr}");
}

fn check_proof(proof: &std::path::Path, genesis: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["ledger", "check-proof", "--proof"])
        .arg(proof)
        .arg("--genesis")
        .arg(genesis)
        .output()
        .unwrap()
}

#[test]
fn check_proof_accepts_a_committed_record_offline_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let (genesis, ledger) = chain_and_ledger_in(dir.path());
    let user = Keypair::from_seed([2; 32]).account();
    let bundle = ledger.prove("accounts", &encode(&user), ledger.height()).unwrap();
    drop(ledger);
    let genesis_path = dir.path().join("genesis.json");
    let proof_path = dir.path().join("proof.json");
    std::fs::write(&proof_path, serde_json::to_string(&bundle).unwrap()).unwrap();

    let out = check_proof(&proof_path, &genesis_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // Four transfers of 3 plus their fees of 1 before the tip's header.
    let balance = 1_000 - 4 * (3 + genesis.params.tx_fee.0);
    assert!(stdout.contains(&format!("\"balance\":{balance}")), "{stdout}");
    assert!(stdout.contains(&bundle.header.state_root.to_hex()), "{stdout}");

    let mut tampered = bundle.clone();
    let mut account: Account =
        consensus::encoding::decode("account", tampered.value.as_deref().unwrap(), 64).unwrap();
    account.balance = Amount(1_000_000);
    tampered.value = Some(encode(&account));
    std::fs::write(&proof_path, serde_json::to_string(&tampered).unwrap()).unwrap();
    let out = check_proof(&proof_path, &genesis_path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match the proof"), "{stderr}");

    let mut weak = bundle;
    weak.commit.signatures.clear();
    std::fs::write(&proof_path, serde_json::to_string(&weak).unwrap()).unwrap();
    let out = check_proof(&proof_path, &genesis_path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not more than two thirds"), "{stderr}");
}
