//! Fixtures shared by the tests and benches of every crate (feature `testing`, never enabled
//! by the node): an example task and the held-out key it commits to, test keys and genesis, and
//! [`TestChain`], a ledger that blocks are built, certified and committed to one call at a time.
//! A test changes the fields it is about and keeps the rest, so what it depends on stands in the
//! test. Fixtures panic on misuse: they serve tests.

use crate::block::Block;
use crate::chain::{Ledger, build_block};
use crate::commitment::{HeldoutKey, Salt, model_commitment, scores_commitment};
use crate::crypto::Keypair;
use crate::genesis::{Genesis, GenesisBalance, GenesisValidator, Params};
use crate::state::{TxContext, TxError};
use crate::storage::{MemStore, Store};
use crate::task::{Dataset, Dtype, Efficiency, Limits, Preprocessing, TaskKind, TaskSpec, Windows};
use crate::tx::{SignedTx, Tx, TxKind};
use crate::types::{AccountId, Amount, Hash, Height, Nonce, Round, TaskId};
use crate::validators::{ValidatorInfo, ValidatorSet};
use crate::verdict::{Subject, Verdict, VerdictEntry, VerdictVector};
use crate::vote::{CommitCertificate, SignedVote, Vote, VoteKind};

/// The held-out key [`example_spec`]'s dataset commits to.
pub fn heldout_key() -> HeldoutKey {
    HeldoutKey(Hash([4; 32]))
}

/// Every window of a task `blocks` long.
pub fn windows(blocks: u64) -> Windows {
    Windows {
        join: blocks,
        commit: blocks,
        key: blocks,
        reveal: blocks,
        score_commit: blocks,
        score_reveal: blocks,
    }
}

/// A small valid classification task: 4 standardized features, 3 classes, up to 100,000 f32
/// parameters, 3 trainers with a bond of 1,000 and an entry fee of [`ENTRY_FEE`], every window `window`
/// blocks (valid for fewer validators than that), and a dataset of made-up hashes whose key is
/// [`heldout_key`].
pub fn example_spec(window: u64) -> TaskSpec {
    TaskSpec {
        name: "example".into(),
        kind: TaskKind::Classification { features: 4, classes: 3 },
        preprocessing: Preprocessing::Standardize { mean: vec![0.0; 4], std: vec![1.0; 4] },
        dataset: Dataset {
            name: "toy".into(),
            train_sha256: Hash([1; 32]),
            heldout_commitment: Hash([2; 32]),
            heldout_cipher_sha256: Hash([3; 32]),
            key_commitment: heldout_key().commitment(),
            heldout_examples: 500,
        },
        limits: Limits {
            max_params: 100_000,
            max_artifact_bytes: 1 << 20,
            dtypes: vec![Dtype::F32],
        },
        efficiency: Efficiency { reference_params: 1_000, penalty_ppm_per_doubling: 50_000 },
        bond: Amount(1_000),
        entry_fee: Amount(ENTRY_FEE),
        max_trainers: 3,
        min_improvement_ppm: 0,
        windows: windows(window),
        base_model: None,
    }
}

/// Initial balance of every trainer and of the creator.
pub const BALANCE: u64 = 1_000_000;

/// The test spec's entry fee: 3 slots × 25000 cover the 70% trainer share of rewards up to
/// 107142.
pub const ENTRY_FEE: u64 = 25_000;

/// The test key `i` of group `tag` (1: validators, 2: trainers, 3: the creator).
pub fn key(tag: u8, i: usize) -> Keypair {
    let mut seed = [tag; 32];
    seed[31] = u8::try_from(i).unwrap();
    Keypair::from_seed(seed)
}

/// A genesis with validators of these stakes, `trainers` funded trainers and a funded creator
/// (keys by [`key`]), default parameters.
pub fn genesis(stakes: &[u64], trainers: usize) -> Genesis {
    let validators: Vec<GenesisValidator> = stakes
        .iter()
        .enumerate()
        .map(|(i, s)| GenesisValidator {
            account: key(1, i).account(),
            stake: Amount(*s),
            name: format!("v{i}"),
        })
        .collect();
    let mut balances: Vec<GenesisBalance> = (0..trainers)
        .map(|i| GenesisBalance { account: key(2, i).account(), amount: Amount(BALANCE) })
        .collect();
    balances.push(GenesisBalance { account: key(3, 0).account(), amount: Amount(BALANCE) });
    for i in 0..stakes.len() {
        balances.push(GenesisBalance { account: key(1, i).account(), amount: Amount(1_000) });
    }
    Genesis {
        chain_id: "crucible-test".into(),
        genesis_time_ms: 1_000,
        validators,
        balances,
        params: Params::default(),
        tasks: vec![],
    }
}

/// The example task with every window one block longer than `validators`, the shortest a
/// chain of that many validators accepts, and the entry fee [`ENTRY_FEE`].
pub fn spec(validators: usize) -> TaskSpec {
    TaskSpec {
        name: "digits-test".into(),
        entry_fee: Amount(ENTRY_FEE),
        ..example_spec(validators as u64 + 1)
    }
}

/// A chain that blocks are built, certified by every validator and committed to, one call each.
pub struct TestChain {
    /// The validators' keys.
    pub validators: Vec<Keypair>,
    /// The trainers' keys.
    pub trainers: Vec<Keypair>,
    /// The task creator's key.
    pub creator: Keypair,
    /// The genesis.
    pub genesis: Genesis,
    /// The ledger.
    pub ledger: Ledger,
    time_ms: u64,
    last_commit: Option<CommitCertificate>,
    /// Every block committed, with its certificate.
    pub blocks: Vec<(Block, CommitCertificate)>,
}

impl TestChain {
    /// A chain from [`genesis`] in memory.
    pub fn new(stakes: &[u64], trainers: usize) -> TestChain {
        TestChain::with_store(stakes, trainers, Box::new(MemStore::new()))
    }

    /// A chain from [`genesis`] in `store`.
    pub fn with_store(stakes: &[u64], trainers: usize, store: Box<dyn Store>) -> TestChain {
        TestChain::with_genesis(genesis(stakes, trainers), store)
    }

    /// A chain whose genesis has these parameters.
    pub fn with_params(stakes: &[u64], trainers: usize, params: Params) -> TestChain {
        let mut genesis = genesis(stakes, trainers);
        genesis.params = params;
        TestChain::with_genesis(genesis, Box::new(MemStore::new()))
    }

    /// A chain from `genesis` as [`genesis`] writes it (keys by tag), with other parameters.
    pub fn with_genesis(genesis: Genesis, store: Box<dyn Store>) -> TestChain {
        let stakes = genesis.validators.len();
        let trainers = genesis.balances.len() - 1 - stakes;
        let ledger = Ledger::open(store, &genesis).unwrap();
        TestChain {
            validators: (0..stakes).map(|i| key(1, i)).collect(),
            trainers: (0..trainers).map(|i| key(2, i)).collect(),
            creator: key(3, 0),
            genesis,
            ledger,
            time_ms: 1_000,
            last_commit: None,
            blocks: vec![],
        }
    }

    /// The chain id.
    pub fn chain_id(&self) -> String {
        self.genesis.chain_id.clone()
    }

    /// The last committed height.
    pub fn height(&self) -> Height {
        self.ledger.height()
    }

    /// A tx signed with the signer's next nonce (not yet consumed).
    pub fn sign(&self, key: &Keypair, kind: TxKind) -> SignedTx {
        let nonce = self.ledger.state().account(&key.account()).nonce;
        SignedTx::sign(key, Tx { chain_id: self.chain_id(), nonce, kind })
    }

    /// A tx signed with a given nonce.
    pub fn sign_with_nonce(&self, key: &Keypair, nonce: u64, kind: TxKind) -> SignedTx {
        SignedTx::sign(key, Tx { chain_id: self.chain_id(), nonce: Nonce(nonce), kind })
    }

    /// Checks `tx` as the next block's first tx; on success commits a block holding it.
    pub fn submit(&mut self, tx: SignedTx) -> Result<(), TxError> {
        let mut scratch = self.ledger.state().clone();
        let ctx = TxContext {
            height: self.height().next(),
            index: 0,
            proposer: self.validators[0].account(),
        };
        scratch.check_and_execute_tx(&tx, ctx)?;
        let block = self.commit(vec![tx]);
        assert_eq!(block.txs.len(), 1);
        Ok(())
    }

    /// Signs and submits.
    pub fn send(&mut self, key: &Keypair, kind: TxKind) -> Result<(), TxError> {
        let tx = self.sign(key, kind);
        self.submit(tx)
    }

    /// Builds, certifies and commits the next block with `txs` (invalid ones are left out).
    pub fn commit(&mut self, txs: Vec<SignedTx>) -> Block {
        self.time_ms += 500;
        let proposer = self.validators[0].account();
        let block =
            build_block(self.ledger.state(), txs, self.time_ms, proposer, self.last_commit.clone())
                .unwrap();
        let cert = self.certify(&block);
        self.ledger.commit_block(&block, &cert).unwrap();
        self.last_commit = Some(cert.clone());
        self.blocks.push((block.clone(), cert));
        block
    }

    /// A commit certificate for `block` signed by every validator.
    pub fn certify(&self, block: &Block) -> CommitCertificate {
        let vote = Vote {
            height: block.height(),
            round: Default::default(),
            kind: VoteKind::Precommit,
            block: Some(block.hash()),
        };
        let votes: Vec<SignedVote> = self
            .validators
            .iter()
            .map(|k| SignedVote::sign(k, &self.genesis.chain_id, vote))
            .collect();
        CommitCertificate::from_precommits(&votes).unwrap()
    }

    /// Commits empty blocks until the chain's height is `height - 1`, so the next tx lands at
    /// `height`.
    pub fn advance_to(&mut self, height: Height) {
        while self.height().next() < height {
            self.commit(vec![]);
        }
    }

    /// Opens a task and, in the next block, has every validator attest to holding its sealed
    /// held-out file; returns its id.
    pub fn create_task(&mut self, spec: TaskSpec, reward: u64) -> TaskId {
        let task = self.create_task_unattested(spec, reward);
        let all: Vec<usize> = (0..self.validators.len()).collect();
        self.attest(task, &all);
        task
    }

    /// Opens a task that no validator has attested to yet; returns its id.
    pub fn create_task_unattested(&mut self, spec: TaskSpec, reward: u64) -> TaskId {
        let creator = key(3, 0);
        self.send(&creator, TxKind::CreateTask { spec: Box::new(spec), reward: Amount(reward) })
            .unwrap();
        self.ledger.state().tasks.iter().last().map(|(id, _)| *id).unwrap()
    }

    /// Commits a block in which the validators at `indices` attest to `task`'s held-out file.
    pub fn attest(&mut self, task: TaskId, indices: &[usize]) {
        let txs: Vec<SignedTx> = indices
            .iter()
            .map(|i| self.sign(&self.validators[*i], TxKind::AttestHeldout { task }))
            .collect();
        assert_eq!(self.commit(txs).txs.len(), indices.len(), "every attestation lands");
    }

    /// Runs to the block after the commit window and has the creator reveal the held-out key
    /// there, so trainers may reveal from the next block on.
    pub fn open_reveals(&mut self, task: TaskId) {
        // Block by block: the commit window closes at the join deadline when every joined
        // trainer has committed, which moves the deadline earlier.
        while self.height().next() <= self.task(task).commit_deadline() {
            self.commit(vec![]);
        }
        let creator = key(3, 0);
        self.send(&creator, TxKind::RevealHeldoutKey { task, key: heldout_key() }).unwrap();
    }

    /// A task's record (it must exist).
    pub fn task(&self, id: TaskId) -> crate::state::Task {
        self.ledger.state().tasks.get(&id).unwrap().clone()
    }

    /// An account's balance.
    pub fn balance(&self, account: &AccountId) -> u64 {
        self.ledger.state().account(account).balance.0
    }

    /// The `Evidence` tx of validator `validator` prevoting two blocks at round 0 of `height`.
    pub fn equivocation(&self, validator: usize, height: u64) -> TxKind {
        let k = &self.validators[validator];
        let vote = |b: u8| Vote {
            height: Height(height),
            round: Round(0),
            kind: VoteKind::Prevote,
            block: Some(Hash([b; 32])),
        };
        TxKind::Evidence {
            a: SignedVote::sign(k, &self.chain_id(), vote(1)),
            b: SignedVote::sign(k, &self.chain_id(), vote(2)),
        }
    }
}

/// A validator set of these accounts and powers, without names.
pub fn validator_set(members: impl IntoIterator<Item = (AccountId, u64)>) -> ValidatorSet {
    ValidatorSet::new(
        members
            .into_iter()
            .map(|(account, power)| ValidatorInfo { account, power, name: String::new() })
            .collect(),
    )
}

/// Salt derived from a small number (tests only; real salts come from the OS RNG).
pub fn salt(n: u8) -> Salt {
    Salt(Hash([n; 32]))
}

/// A model hash derived from a small number.
pub fn model(n: u8) -> Hash {
    Hash([100 + n; 32])
}

/// The `CommitModel` tx of `trainer` for `model_hash` under salt `s`.
pub fn model_commit(
    chain: &TestChain,
    task: TaskId,
    trainer: &Keypair,
    model_hash: &Hash,
    s: &Salt,
) -> TxKind {
    TxKind::CommitModel {
        task,
        commitment: model_commitment(&chain.chain_id(), task, &trainer.account(), model_hash, s),
    }
}

/// The `RevealModel` tx matching [`model_commit`], for a model of `params` parameters.
pub fn model_reveal(task: TaskId, model_hash: Hash, s: Salt, params: u64) -> TxKind {
    TxKind::RevealModel { task, model_hash, salt: s, size_bytes: 10_000, params }
}

/// The `CommitScores` tx of `validator` for verdict vector `v` under salt `s`.
pub fn scores_commit(
    chain: &TestChain,
    task: TaskId,
    validator: &Keypair,
    v: &VerdictVector,
    s: &Salt,
) -> TxKind {
    TxKind::CommitScores {
        task,
        commitment: scores_commitment(&chain.chain_id(), task, &validator.account(), v, s),
    }
}

/// A verdict vector: baseline score, then one verdict per trainer sorted by account.
pub fn vector(baseline: u32, mut trainers: Vec<(AccountId, Verdict)>) -> VerdictVector {
    trainers.sort_by_key(|(a, _)| *a);
    let mut out =
        vec![VerdictEntry { subject: Subject::Baseline, verdict: Verdict::scored(baseline) }];
    out.extend(
        trainers
            .into_iter()
            .map(|(a, verdict)| VerdictEntry { subject: Subject::Submission(a), verdict }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_valid_for_fewer_validators_than_its_window() {
        example_spec(5).validate(4).unwrap();
        assert!(example_spec(5).validate(5).is_err());
    }
}
