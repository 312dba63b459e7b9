//! Ledger cost at scale: what a block costs with 10^3, 10^5 and 10^6 accounts (and 10^4
//! finalized tasks), to show that a block costs what it changes, not what the state holds.
//!
//! `cargo bench -p consensus --bench state_scale` runs each size in a child process of its own
//! (so each RSS figure is that size's alone) and prints, per size: the empty block's build +
//! commit time, the time per transfer (state only, and in a committed block with its signature
//! checks), the root update time, proof sizes and RSS. It ends with
//! `empty block: 10^3 accounts A ms, 10^6 accounts B ms, ratio R`.
//!
//! `STATE_SCALE_SIZES=1000,100000` picks other sizes (the first and last are compared).

use std::process::Command;
use std::time::Instant;

use consensus::block::Block;
use consensus::chain::{Ledger, build_block, execute_block};
use consensus::crypto::Keypair;
use consensus::encoding::encode;
use consensus::genesis::{Genesis, GenesisBalance, GenesisTask, GenesisValidator, Params};
use consensus::hash::sha256;
use consensus::state::TxContext;
use consensus::storage::MemStore;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Amount, Nonce};
use consensus::vote::{CommitCertificate, SignedVote, Vote, VoteKind};

const CHAIN: &str = "scale";
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const TASKS: usize = 10_000;
const SENDERS: usize = 100;
const TRANSFERS: usize = 1_000;
const EMPTY_BLOCKS: usize = 30;
const TRANSFER_BLOCKS: usize = 3;
const SIZE_VAR: &str = "STATE_SCALE_ACCOUNTS";

struct Bench {
    validator: Keypair,
    senders: Vec<Keypair>,
    ledger: Ledger,
    time_ms: u64,
    last_commit: Option<CommitCertificate>,
}

fn funded(i: usize) -> AccountId {
    AccountId(sha256(&(i as u64).to_le_bytes()).0)
}

fn sender(i: usize) -> Keypair {
    let mut seed = [5u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Keypair::from_seed(seed)
}

fn genesis(accounts: usize, validator: &Keypair, senders: &[Keypair]) -> Genesis {
    let creator = sender(usize::MAX);
    let mut balances: Vec<GenesisBalance> = senders
        .iter()
        .map(|k| GenesisBalance { account: k.account(), amount: Amount(1 << 40) })
        .collect();
    balances.push(GenesisBalance { account: creator.account(), amount: Amount(1 << 40) });
    balances.extend(
        (balances.len()..accounts)
            .map(|i| GenesisBalance { account: funded(i), amount: Amount(1_000) }),
    );
    // One validator: every window is two blocks long.
    let spec = consensus::testing::spec(1);
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        validators: vec![GenesisValidator {
            account: validator.account(),
            stake: Amount(100),
            name: "v".into(),
        }],
        balances,
        params: Params { max_block_txs: 100_000, max_block_bytes: 64 << 20, ..Params::default() },
        tasks: (0..TASKS)
            .map(|_| GenesisTask {
                creator: creator.account(),
                spec: spec.clone(),
                reward: Amount(10),
            })
            .collect(),
    }
}

impl Bench {
    fn certify(&self, block: &Block) -> CommitCertificate {
        let vote = Vote {
            height: block.height(),
            round: Default::default(),
            kind: VoteKind::Precommit,
            block: Some(block.hash()),
        };
        CommitCertificate::from_precommits(&[SignedVote::sign(&self.validator, CHAIN, vote)])
            .expect("one validator's precommit is a quorum")
    }

    /// Builds, certifies and commits a block of `txs`; returns its milliseconds.
    fn block(&mut self, txs: Vec<SignedTx>) -> f64 {
        let expected = txs.len();
        self.time_ms += 500;
        let start = Instant::now();
        let block = build_block(
            self.ledger.state(),
            txs,
            self.time_ms,
            self.validator.account(),
            self.last_commit.clone(),
        )
        .expect("the validator set is known");
        let cert = self.certify(&block);
        self.ledger.commit_block(&block, &cert).expect("the block commits");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(block.txs.len(), expected, "every transfer is valid");
        self.last_commit = Some(cert);
        ms
    }

    fn transfers(&self, count: usize, round: usize) -> Vec<SignedTx> {
        (0..count)
            .map(|i| {
                let from = &self.senders[i % SENDERS];
                let nonce =
                    self.ledger.state().account(&from.account()).nonce.0 + (i / SENDERS) as u64;
                let to = funded((i * 7919 + round * 104_729) % self.ledger.state().accounts.len());
                let kind = TxKind::Transfer { to, amount: Amount(1) };
                SignedTx::sign(from, Tx { chain_id: CHAIN.into(), nonce: Nonce(nonce), kind })
            })
            .collect()
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// One size, in this process; prints its report and a machine-readable `empty_ms=` line.
fn run(accounts: usize) {
    let validator = Keypair::from_seed([1; 32]);
    let senders: Vec<Keypair> = (0..SENDERS).map(sender).collect();
    let genesis = genesis(accounts, &validator, &senders);
    let start = Instant::now();
    let ledger = Ledger::open(Box::new(MemStore::new()), &genesis).expect("genesis opens");
    let open_s = start.elapsed().as_secs_f64();
    drop(genesis);
    let mut b = Bench { validator, senders, ledger, time_ms: 0, last_commit: None };
    // Run every genesis task to its score deadline: they all finalize in one block.
    let finalize_ms = (0..10).map(|_| b.block(vec![])).fold(0.0, f64::max);
    let finalized = b.ledger.state().tasks.iter().filter(|(_, t)| t.report.is_some()).count();
    assert_eq!(finalized, TASKS, "every task finalized");

    let empty = median((0..EMPTY_BLOCKS).map(|_| b.block(vec![])).collect());

    // Root update alone: execute an empty block, then time the Merkle update of its changes.
    let mut roots = Vec::new();
    for _ in 0..EMPTY_BLOCKS {
        let probe = build_block(
            b.ledger.state(),
            vec![],
            b.time_ms + 500,
            b.validator.account(),
            b.last_commit.clone(),
        )
        .expect("the validator set is known");
        let mut next = execute_block(b.ledger.state(), &probe).expect("the block executes");
        let start = Instant::now();
        let _ = next.take_changes();
        let _ = next.root();
        roots.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let root_empty_us = median(roots);

    // Transfers: state only (execute on a copy, then its root update), and in committed blocks.
    let txs = b.transfers(TRANSFERS, 0);
    let mut scratch = b.ledger.state().clone();
    let height = b.ledger.height().next();
    let start = Instant::now();
    for (i, tx) in txs.iter().enumerate() {
        let ctx = TxContext { height, index: i as u32, proposer: b.validator.account() };
        scratch.execute_tx(tx, ctx).expect("valid transfer");
    }
    let apply_us = start.elapsed().as_secs_f64() * 1e6 / TRANSFERS as f64;
    let start = Instant::now();
    let _ = scratch.take_changes();
    let _ = scratch.root();
    let root_us = start.elapsed().as_secs_f64() * 1e6 / TRANSFERS as f64;
    let mut in_block = Vec::new();
    for round in 0..TRANSFER_BLOCKS {
        let txs = b.transfers(TRANSFERS, round + 1);
        in_block.push(b.block(txs) * 1e3 / TRANSFERS as f64);
    }
    let block_us = median(in_block);

    // Proofs against the tip's header: of a funded account, and of an account never seen.
    let tip = b.ledger.height();
    let present =
        b.ledger.prove("accounts", &encode(&funded(accounts - 1)), tip).expect("provable");
    assert!(present.value.is_some());
    let absent =
        b.ledger.prove("accounts", &encode(&AccountId([0xee; 32])), tip).expect("provable");
    assert!(absent.value.is_none());
    let validators = b.ledger.state().validator_set(tip).expect("known").clone();
    present.verify(CHAIN, &validators).expect("the membership proof verifies");
    absent.verify(CHAIN, &validators).expect("the absence proof verifies");

    println!(
        "{accounts} accounts, {TASKS} finalized tasks (state opened in {open_s:.1} s; the finalizing block took {finalize_ms:.0} ms):"
    );
    println!("  empty block, build + commit:      {empty:>10.3} ms (median of {EMPTY_BLOCKS})");
    println!("  empty block, root update:         {root_empty_us:>10.1} us");
    println!("  transfer, applied to the state:   {apply_us:>10.2} us");
    println!("  transfer, root update share:      {root_us:>10.2} us");
    println!("  transfer, in a committed block:   {block_us:>10.2} us (signature checks included)");
    println!(
        "  proof: membership {} siblings, {} bytes; absence {} siblings, {} bytes",
        present.proof.siblings.len(),
        present.proof.encoded_len(),
        absent.proof.siblings.len(),
        absent.proof.encoded_len()
    );
    println!(
        "  RSS:                              {:>10.0} MiB (state, Merkle tree and the in-memory store)",
        rss_mib()
    );
    println!("empty_ms={empty}");
}

fn main() {
    if let Ok(n) = std::env::var(SIZE_VAR) {
        run(n.parse().expect("a number of accounts"));
        return;
    }
    let sizes: Vec<usize> = match std::env::var("STATE_SCALE_SIZES") {
        Ok(list) => {
            list.split(',').map(|s| s.trim().parse().expect("a number of accounts")).collect()
        }
        Err(_) => SIZES.to_vec(),
    };
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut empties = Vec::new();
    for &n in &sizes {
        let out = Command::new(&exe).env(SIZE_VAR, n.to_string()).output().expect("the bench runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "size {n} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        for line in text.lines() {
            match line.strip_prefix("empty_ms=") {
                Some(ms) => empties.push(ms.parse::<f64>().expect("a duration")),
                None => println!("{line}"),
            }
        }
    }
    let (first, last) = (empties[0], empties[empties.len() - 1]);
    let exp = |n: usize| (n as f64).log10().round();
    println!(
        "empty block: 10^{} accounts {first:.3} ms, 10^{} accounts {last:.3} ms, ratio {:.2}",
        exp(sizes[0]),
        exp(sizes[sizes.len() - 1]),
        last / first
    );
}
