//! Signed-transaction throughput: verify + apply, single versus batch signature verification,
//! and the single path again on signatures it has already accepted (the memo of
//! [`consensus::crypto::Verifier`]: what a block costs a node whose mempool admitted its txs).
//! Then signature verification alone from accounts whose keys the node has never checked versus
//! ones it has (the key memo: a network with 10^5 active accounts must hit it for every one).
//!
//! `cargo bench -p consensus --bench tx_throughput` prints the median txs/s of each path over
//! several runs, measured side by side in one process, and their ratios. Every run of the cold
//! paths signs new transactions, so no run is answered from the memo.

use std::time::Instant;

use consensus::crypto::{Keypair, Verifier};
use consensus::genesis::{Genesis, GenesisBalance, GenesisValidator, Params};
use consensus::state::{State, TxContext};
use consensus::tx::{SignedTx, Tx, TxKind, verify_txs};
use consensus::types::{AccountId, Amount, Height, Nonce};

const ACCOUNTS: usize = 100;
const TXS: usize = 4_000;
const RUNS: usize = 7;

fn keys() -> Vec<Keypair> {
    (0..ACCOUNTS)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::from_seed(seed)
        })
        .collect()
}

fn state(keys: &[Keypair]) -> State {
    let genesis = Genesis {
        chain_id: "bench".into(),
        genesis_time_ms: 0,
        validators: vec![GenesisValidator {
            account: Keypair::from_seed([1; 32]).account(),
            stake: Amount(1),
            name: "v".into(),
        }],
        balances: keys
            .iter()
            .map(|k| GenesisBalance { account: k.account(), amount: Amount(1_000_000_000) })
            .collect(),
        params: Params { max_block_txs: TXS as u32, ..Params::default() },
        tasks: vec![],
    };
    State::from_genesis(&genesis)
}

/// `TXS` transfers, each `amount`: a new `amount` gives signatures never verified before.
fn transfers(keys: &[Keypair], amount: u64) -> Vec<SignedTx> {
    (0..TXS)
        .map(|i| {
            let from = &keys[i % ACCOUNTS];
            let to = keys[(i + 1) % ACCOUNTS].account();
            let tx = Tx {
                chain_id: "bench".into(),
                nonce: Nonce((i / ACCOUNTS) as u64),
                kind: TxKind::Transfer { to, amount: Amount(amount) },
            };
            SignedTx::sign(from, tx)
        })
        .collect()
}

fn ctx(i: usize) -> TxContext {
    TxContext { height: Height(1), index: i as u32, proposer: AccountId::default() }
}

fn single(state: &State, txs: &[SignedTx]) -> f64 {
    let mut s = state.clone();
    let start = Instant::now();
    for (i, tx) in txs.iter().enumerate() {
        s.check_and_execute_tx(tx, ctx(i)).expect("valid tx");
    }
    txs.len() as f64 / start.elapsed().as_secs_f64()
}

fn batch(state: &State, txs: &[SignedTx]) -> f64 {
    let mut s = state.clone();
    let start = Instant::now();
    verify_txs(s.verifier(), "bench", txs).expect("valid batch");
    for (i, tx) in txs.iter().enumerate() {
        s.execute_tx(tx, ctx(i)).expect("valid tx");
    }
    txs.len() as f64 / start.elapsed().as_secs_f64()
}

/// Verifies one transfer from each of `keys` (signed with `amount`, so never seen before).
fn verify_only(verifier: &Verifier, keys: &[Keypair], amount: u64) -> f64 {
    let txs: Vec<SignedTx> = keys
        .iter()
        .map(|k| {
            let kind = TxKind::Transfer { to: AccountId::default(), amount: Amount(amount) };
            SignedTx::sign(k, Tx { chain_id: "bench".into(), nonce: Nonce(0), kind })
        })
        .collect();
    let start = Instant::now();
    for tx in &txs {
        tx.verify(verifier, "bench").expect("valid signature");
    }
    txs.len() as f64 / start.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let keys = keys();
    let state = state(&keys);
    let mut singles = Vec::new();
    let mut batches = Vec::new();
    let mut remembered = Vec::new();
    for run in 0..RUNS as u64 {
        let txs = transfers(&keys, 1 + 2 * run);
        singles.push(single(&state, &txs));
        remembered.push(single(&state, &txs));
        batches.push(batch(&state, &transfers(&keys, 2 + 2 * run)));
    }
    let (s, b, r) = (median(singles), median(batches), median(remembered));
    println!("signed transfer verify+apply, {TXS} txs, median of {RUNS} runs:");
    println!("  single verification:        {s:>10.0} txs/s");
    println!("  batch verification:         {b:>10.0} txs/s");
    println!("  single, already verified:   {r:>10.0} txs/s");
    println!("  batch / single:             {:>10.2}x", b / s);
    println!("  already verified / single:  {:>10.2}x", r / s);

    // Fresh accounts per run for the cold keys; the same accounts, signing anew, for the warm.
    let verifier = Verifier::new();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for run in 0..RUNS {
        let fresh: Vec<Keypair> = (0..TXS)
            .map(|i| {
                let mut seed = [9u8; 32];
                seed[..8].copy_from_slice(&((run * TXS + i) as u64).to_le_bytes());
                Keypair::from_seed(seed)
            })
            .collect();
        cold.push(verify_only(&verifier, &fresh, 1));
        warm.push(verify_only(&verifier, &fresh, 2));
    }
    let (c, w) = (median(cold), median(warm));
    println!("signature verification alone, {TXS} txs from {TXS} accounts, median of {RUNS} runs:");
    println!("  keys never checked:         {c:>10.0} txs/s");
    println!("  keys checked before:        {w:>10.0} txs/s");
    println!("  checked before / never:     {:>10.2}x", w / c);
}
