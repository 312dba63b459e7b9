//! Regression tests for the consensus adversaries of issue 12, one per finding, each driving the
//! engine (or the write-ahead log) with the real [`Block`], whose id is its header's hash only.
//!
//! The engine holds the key of validator B; the test plays the other validators.

use std::collections::VecDeque;

use consensus::bft::proposer::proposer;
use consensus::bft::{
    Action, Engine, EngineConfig, Event, FileWal, MemoryWal, Message, Proposal, SignedProposal,
    TimeoutKind, Wal, WalEntry,
};
use consensus::block::{Block, Header, tx_root};
use consensus::crypto::Keypair;
use consensus::testing::validator_set;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{AccountId, Amount, Hash, Height, Nonce, Round};
use consensus::validators::ValidatorSet;
use consensus::vote::{CommitCertificate, SignedVote, Vote, VoteKind};

const CHAIN: &str = "adversary-chain";

type TestEngine = Engine<Block, MemoryWal<Block>>;

/// Four validators of equal power: A (index 0) is the adversary, B (index 1) runs the engine.
struct Net {
    keys: Vec<Keypair>,
    set: ValidatorSet,
}

impl Net {
    fn new() -> Net {
        let keys: Vec<Keypair> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let set = validator_set(keys.iter().map(|k| (k.account(), 10)));
        Net { keys, set }
    }

    fn key_of(&self, account: AccountId) -> &Keypair {
        self.keys.iter().find(|k| k.account() == account).expect("a validator")
    }

    fn proposer(&self, height: u64, round: u32) -> &Keypair {
        self.key_of(proposer(&self.set, Height(height), Round(round)).unwrap().account)
    }

    /// Any validator other than `not`, for the engine to run.
    fn honest(&self, not: &[AccountId]) -> &Keypair {
        self.keys.iter().find(|k| !not.contains(&k.account())).unwrap()
    }

    /// The engine of `key`, started at height 1, and its first actions.
    fn start(&self, key: &Keypair) -> (TestEngine, Vec<Action<Block>>) {
        let key = Keypair::from_seed(key.secret_bytes());
        let mut e = Engine::new(
            EngineConfig::default(),
            CHAIN,
            key,
            MemoryWal::default(),
            Default::default(),
        );
        let out = e.start(Height(1), self.set.clone()).unwrap();
        (e, out)
    }

    /// A block of `height` with an empty body, as an honest proposer builds it.
    fn block(&self, height: u64, proposer: &Keypair) -> Block {
        Block {
            header: Header {
                chain_id: CHAIN.into(),
                height: Height(height),
                time_ms: 1_000 + height,
                prev_hash: Hash([7; 32]),
                tx_root: tx_root(&[]),
                state_root: Hash([8; 32]),
                validators_hash: self.set.hash(),
                last_commit_hash: Hash::default(),
                proposer: proposer.account(),
            },
            txs: Vec::new().into(),
            last_commit: None,
        }
    }

    fn proposal(&self, key: &Keypair, round: u32, block: &Block) -> Event<Block> {
        let p = Proposal {
            height: block.header.height,
            round: Round(round),
            block: block.hash(),
            valid_round: None,
        };
        Event::MessageReceived(Message::Proposal {
            proposal: SignedProposal::sign(key, CHAIN, p),
            block: block.clone(),
        })
    }

    fn vote(
        &self,
        key: &Keypair,
        height: u64,
        round: u32,
        kind: VoteKind,
        block: Hash,
    ) -> Event<Block> {
        let v = Vote { height: Height(height), round: Round(round), kind, block: Some(block) };
        Event::MessageReceived(Message::Vote(SignedVote::sign(key, CHAIN, v)))
    }
}

/// A transfer signed by the key of `seed`.
fn transfer(seed: u8) -> SignedTx {
    let key = Keypair::from_seed([seed; 32]);
    SignedTx::sign(
        &key,
        Tx {
            chain_id: CHAIN.into(),
            nonce: Nonce(0),
            kind: TxKind::Transfer { to: AccountId([1; 32]), amount: Amount(1) },
        },
    )
}

/// A body that does not match `block`'s header: one transfer where the header commits to none.
fn junk_body(block: &Block) -> Block {
    Block { txs: vec![transfer(99)].into(), ..block.clone() }
}

/// Whether a block's body is the one its header commits to.
fn body_matches(block: &Block) -> bool {
    block.header.tx_root == tx_root(&block.txs)
}

/// Handles an event, answering every validation request with `valid(block)`, and returns the
/// other actions.
fn go(
    e: &mut TestEngine,
    event: Event<Block>,
    valid: &dyn Fn(&Block) -> bool,
) -> Vec<Action<Block>> {
    let mut todo: VecDeque<Action<Block>> = e.handle(event).unwrap().into();
    let mut rest = Vec::new();
    while let Some(a) = todo.pop_front() {
        match a {
            Action::ValidateBlock { height, block } => todo.extend(
                e.handle(Event::BlockValidated {
                    height,
                    block: block.hash(),
                    valid: valid(&block),
                })
                .unwrap(),
            ),
            other => rest.push(other),
        }
    }
    rest
}

/// The ledger's judgement in these tests: a block is valid when its body matches its header.
fn ledger(block: &Block) -> bool {
    body_matches(block)
}

fn commits(actions: &[Action<Block>]) -> Vec<Block> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { block, .. } => Some(block.clone()),
            _ => None,
        })
        .collect()
}

/// Finding 1: a Byzantine proposer of rounds 0 and r sends its round-r proposal with a valid block
/// X, then its round-0 proposal with X's header and a junk body. The engine must neither prevote,
/// lock on nor decide the junk body.
#[test]
fn a_swapped_body_under_a_validated_header_is_never_locked_or_decided() {
    let net = Net::new();
    let adversary = net.proposer(1, 0);
    let later = (1..8).find(|r| net.proposer(1, *r).account() == adversary.account()).unwrap();
    let me = net.honest(&[adversary.account()]);
    let (mut e, mut out) = net.start(me);
    let x = net.block(1, adversary);
    out.extend(go(&mut e, net.proposal(adversary, later, &x), &ledger));
    out.extend(go(&mut e, net.proposal(adversary, 0, &junk_body(&x)), &ledger));
    // Every other validator prevotes and precommits X in round 0 (the adversary and, say, two
    // honest ones that saw the genuine body elsewhere): a quorum.
    for key in net.keys.iter().filter(|k| k.account() != me.account()) {
        out.extend(go(&mut e, net.vote(key, 1, 0, VoteKind::Prevote, x.hash()), &ledger));
    }
    for key in net.keys.iter().filter(|k| k.account() != me.account()) {
        out.extend(go(&mut e, net.vote(key, 1, 0, VoteKind::Precommit, x.hash()), &ledger));
    }
    if let Some((_, locked)) = e.locked() {
        assert!(body_matches(locked), "locked on a body that does not match its header");
    }
    for block in commits(&out) {
        assert!(body_matches(&block), "decided a block body that does not match its header");
    }
    for entry in e.wal().entries().unwrap() {
        if let WalEntry::Locked { block, .. } | WalEntry::ValidValue { block, .. } = entry {
            assert!(body_matches(&block), "logged a lock on a junk body");
        }
    }
}

/// Finding 2: a certificate that is valid for a header arrives with another body. A lagging
/// validator must not decide it.
#[test]
fn a_commit_certificate_with_a_swapped_body_is_not_decided() {
    let net = Net::new();
    let me = &net.keys[1];
    let (mut e, _) = net.start(me);
    let x = net.block(1, net.proposer(1, 0));
    let precommits: Vec<SignedVote> = net
        .keys
        .iter()
        .filter(|k| k.account() != me.account())
        .map(|k| {
            let v = Vote {
                height: Height(1),
                round: Round(0),
                kind: VoteKind::Precommit,
                block: Some(x.hash()),
            };
            SignedVote::sign(k, CHAIN, v)
        })
        .collect();
    let certificate = CommitCertificate::from_precommits(precommits.iter()).unwrap();
    let out = go(
        &mut e,
        Event::CommitReceived { block: junk_body(&x), certificate: certificate.clone() },
        &ledger,
    );
    assert!(commits(&out).is_empty(), "decided a swapped body from a certificate");
    // The genuine body with the same certificate is decided.
    let out = go(&mut e, Event::CommitReceived { block: x.clone(), certificate }, &ledger);
    assert_eq!(commits(&out), vec![x]);
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Finding 3: one 128 KiB proposal for the next height, fed 5,000 times, must not be buffered
/// 5,000 times (that is 640 MiB); nor may proposals from validators that do not propose.
#[test]
fn next_height_messages_are_deduplicated_and_bounded_in_bytes() {
    let net = Net::new();
    let me = &net.keys[1];
    let (mut e, _) = net.start(me);
    let mut big = net.block(2, net.proposer(2, 0));
    let payload = transfer(42);
    let per_tx = payload.encode().len();
    big.txs = (0..(128 << 10) / per_tx).map(|_| payload.clone()).collect();
    big.header.tx_root = tx_root(&big.txs);
    let before = rss_kib();
    for _ in 0..5_000 {
        e.handle(net.proposal(net.proposer(2, 0), 0, &big)).unwrap();
    }
    // And the same from every other validator, which is not the proposer of round 0.
    for key in &net.keys {
        for _ in 0..1_000 {
            e.handle(net.proposal(key, 0, &big)).unwrap();
        }
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "buffering one next-height proposal grew memory by {grown_mib} MiB");
}

/// Finding 4: one vote for a far height from one validator (under a third of the power) must not
/// remove the wait between blocks, nor make the engine ask for commits.
#[test]
fn one_far_future_vote_changes_no_timer_and_triggers_no_sync() {
    let net = Net::new();
    let adversary = &net.keys[0];
    let me = &net.keys[1];
    let (mut e, mut out) = net.start(me);
    out.extend(go(
        &mut e,
        net.vote(adversary, 1 << 62, 0, VoteKind::Prevote, Hash([3; 32])),
        &ledger,
    ));
    let x = net.block(1, net.proposer(1, 0));
    out.extend(go(&mut e, net.proposal(net.proposer(1, 0), 0, &x), &ledger));
    for key in net.keys.iter().filter(|k| k.account() != me.account()) {
        out.extend(go(&mut e, net.vote(key, 1, 0, VoteKind::Prevote, x.hash()), &ledger));
    }
    for key in net.keys.iter().filter(|k| k.account() != me.account()) {
        out.extend(go(&mut e, net.vote(key, 1, 0, VoteKind::Precommit, x.hash()), &ledger));
    }
    assert_eq!(commits(&out), vec![x.clone()]);
    let out = go(
        &mut e,
        Event::BlockApplied { height: Height(1), next_validators: net.set.clone() },
        &ledger,
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::ScheduleTimeout(t) if t.kind == TimeoutKind::Commit)),
        "the block interval was skipped after one far-future vote: {out:?}"
    );
    // The rebroadcast timer of height 2 must not ask for commits nobody has shown.
    let out = go(
        &mut e,
        Event::TimeoutFired(consensus::bft::Timeout {
            height: Height(2),
            round: Round(0),
            kind: TimeoutKind::Commit,
            duration_ms: 0,
        }),
        &ledger,
    );
    let mut all = out;
    all.extend(go(
        &mut e,
        Event::TimeoutFired(consensus::bft::Timeout {
            height: Height(2),
            round: Round(0),
            kind: TimeoutKind::Rebroadcast,
            duration_ms: 0,
        }),
        &ledger,
    ));
    assert!(
        !all.iter().any(|a| matches!(a, Action::RequestCommit { .. })),
        "asked peers for commits after one far-future vote"
    );
}

fn wal_with_lock(dir: &std::path::Path) -> (std::path::PathBuf, Vec<WalEntry<Block>>) {
    let net = Net::new();
    let path = dir.join("wal");
    let x = net.block(1, &net.keys[0]);
    let me = &net.keys[1];
    let vote = |kind, round| {
        SignedVote::sign(
            me,
            CHAIN,
            Vote { height: Height(1), round: Round(round), kind, block: Some(x.hash()) },
        )
    };
    let entries = vec![
        WalEntry::Voted(vote(VoteKind::Prevote, 0)),
        WalEntry::Locked { height: Height(1), round: Round(0), block: x.clone() },
        WalEntry::Voted(vote(VoteKind::Precommit, 0)),
        WalEntry::Voted(vote(VoteKind::Prevote, 1)),
    ];
    let mut wal = FileWal::<Block>::open(&path).unwrap();
    for entry in &entries {
        wal.append(entry).unwrap();
    }
    (path, entries)
}

/// Finding 6: a flipped byte in a record that is not the last one is corruption, not a torn
/// tail: opening must refuse with the file and offset, never drop the later records (the lock).
#[test]
fn wal_corruption_before_the_last_record_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = wal_with_lock(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    // A byte inside the first record's body.
    bytes[20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    match FileWal::<Block>::open(&path) {
        Ok(wal) => panic!(
            "a WAL corrupted in its first record opened with {} of {} records",
            wal.entries().unwrap().len(),
            entries.len()
        ),
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("byte 0"), "{message}");
        }
    }
    assert_eq!(std::fs::read(&path).unwrap().len(), len, "the corrupt WAL was truncated");
    // A torn last record is still dropped.
    let (path, entries) = wal_with_lock(&dir.path().join("b").tap_mkdir());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let wal = FileWal::<Block>::open(&path).unwrap();
    assert_eq!(wal.entries().unwrap(), entries[..entries.len() - 1].to_vec());
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Finding 7: the log refuses to write a record it would refuse to read back.
#[test]
fn wal_refuses_to_append_a_record_it_could_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let net = Net::new();
    let mut x = net.block(1, &net.keys[0]);
    let tx = transfer(42);
    let per_tx = tx.encode().len();
    x.txs = vec![tx; consensus::bft::wal::WAL_RECORD_BYTES_MAX / per_tx + 1].into();
    let mut wal = FileWal::<Block>::open(&path).unwrap();
    let appended = wal.append(&WalEntry::Locked { height: Height(1), round: Round(0), block: x });
    assert!(appended.is_err(), "an oversized record was written");
    drop(wal);
    let wal = FileWal::<Block>::open(&path).expect("the log still opens");
    assert!(wal.entries().unwrap().is_empty());
}
