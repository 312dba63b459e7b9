//! The engine driven by hand: locking, restart from the log, evidence, catch-up, and the file
//! log's crash behaviour.

use std::collections::VecDeque;

use consensus::bft::{
    Action, Engine, EngineConfig, Event, FileWal, MemoryWal, Message, Proposal, SignedProposal,
    Step, TimeoutKind, Value, Wal, WalEntry,
};
use consensus::block::{Block, Header, tx_root};
use consensus::crypto::{Keypair, Verifier};
use consensus::testing::validator_set;
use consensus::types::{AccountId, Hash, Height, Round};
use consensus::validators::ValidatorSet;
use consensus::vote::{CommitCertificate, SignedVote, Vote, VoteKind};

const CHAIN: &str = "test-chain";

fn keys(n: u8) -> Vec<Keypair> {
    (1..=n).map(|i| Keypair::from_seed([i; 32])).collect()
}

fn set(keys: &[Keypair], powers: &[u64]) -> ValidatorSet {
    validator_set(keys.iter().map(Keypair::account).zip(powers.iter().copied()))
}

/// A block of `height` with an empty body (and, above height 1, an unsigned last commit, which
/// the body check does not verify); `round` and `nonce` make its header (and id) differ.
fn block(height: u64, round: u32, nonce: u64) -> Block {
    let prev_hash = Hash([1; 32]);
    let last_commit = (height > 1).then(|| CommitCertificate {
        height: Height(height - 1),
        round: Round(0),
        block: prev_hash,
        signatures: Vec::new(),
    });
    Block {
        header: Header {
            chain_id: CHAIN.into(),
            height: Height(height),
            time_ms: u64::from(round) * 1_000 + nonce,
            prev_hash,
            tx_root: tx_root(&[]),
            state_root: Hash([2; 32]),
            validators_hash: Hash([3; 32]),
            last_commit_hash: last_commit.as_ref().map(CommitCertificate::hash).unwrap_or_default(),
            proposer: AccountId([4; 32]),
        },
        txs: Vec::new().into(),
        last_commit,
    }
}

fn engine(key: &Keypair) -> Engine<Block, MemoryWal<Block>> {
    engine_on(key, MemoryWal::default())
}

/// An engine of `key` logging to `wal`: a fresh log, or the one a crashed engine left behind.
fn engine_on<W: Wal<Block>>(key: &Keypair, wal: W) -> Engine<Block, W> {
    let key = Keypair::from_seed(key.secret_bytes());
    Engine::new(EngineConfig::default(), CHAIN, key, wal, Default::default())
}

fn proposal(key: &Keypair, height: u64, round: u32, b: &Block, vr: Option<u32>) -> Event<Block> {
    let p = Proposal {
        height: Height(height),
        round: Round(round),
        block: b.id(),
        valid_round: vr.map(Round),
    };
    Event::MessageReceived(Message::Proposal {
        proposal: SignedProposal::sign(key, CHAIN, p),
        block: b.clone(),
    })
}

fn vote(key: &Keypair, height: u64, round: u32, kind: VoteKind, b: Option<&Block>) -> SignedVote {
    let v = Vote { height: Height(height), round: Round(round), kind, block: b.map(Value::id) };
    SignedVote::sign(key, CHAIN, v)
}

fn received(v: SignedVote) -> Event<Block> {
    Event::MessageReceived(Message::Vote(v))
}

/// Answers the engine's requests to validate blocks (all valid) and returns the other actions.
fn settle(
    e: &mut Engine<Block, MemoryWal<Block>>,
    actions: Vec<Action<Block>>,
) -> Vec<Action<Block>> {
    let mut todo: VecDeque<Action<Block>> = actions.into();
    let mut rest = Vec::new();
    while let Some(a) = todo.pop_front() {
        match a {
            Action::ValidateBlock { height, block } => todo.extend(
                e.handle(Event::BlockValidated { height, block: block.id(), valid: true }).unwrap(),
            ),
            other => rest.push(other),
        }
    }
    rest
}

/// Handles an event and settles its validations.
fn go(e: &mut Engine<Block, MemoryWal<Block>>, event: Event<Block>) -> Vec<Action<Block>> {
    let actions = e.handle(event).unwrap();
    settle(e, actions)
}

/// Starts at a height and settles its validations.
fn boot(
    e: &mut Engine<Block, MemoryWal<Block>>,
    height: Height,
    validators: ValidatorSet,
) -> Vec<Action<Block>> {
    let actions = e.start(height, validators).unwrap();
    settle(e, actions)
}

fn own_votes(actions: &[Action<Block>], kind: VoteKind) -> Vec<SignedVote> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Vote(v)) if v.vote.kind == kind => Some(*v),
            _ => None,
        })
        .collect()
}

/// The validator of `keys` that does not propose `(height, round)`, and the one that does.
fn roles(keys: &[Keypair], vs: &ValidatorSet, height: u64, round: u32) -> (usize, usize) {
    let p = consensus::bft::proposer::proposer(vs, Height(height), Round(round)).unwrap().account;
    let proposer = keys.iter().position(|k| k.account() == p).unwrap();
    ((proposer + 1) % keys.len(), proposer)
}

#[test]
fn a_locked_validator_keeps_its_lock_across_a_restart() {
    let ks = keys(4);
    let vs = set(&ks, &[10, 20, 30, 40]);
    let (me, proposer) = roles(&ks, &vs, 1, 0);
    let mut e = engine(&ks[me]);
    boot(&mut e, Height(1), vs.clone());
    let v = block(1, 0, 1);
    let acts = go(&mut e, proposal(&ks[proposer], 1, 0, &v, None));
    assert_eq!(own_votes(&acts, VoteKind::Prevote)[0].vote.block, Some(v.id()));
    // Everyone prevotes v: a quorum, so it locks and precommits v.
    let mut acts = Vec::new();
    for (_, k) in ks.iter().enumerate().filter(|(i, _)| *i != me) {
        acts.extend(go(&mut e, received(vote(k, 1, 0, VoteKind::Prevote, Some(&v)))));
    }
    let precommit = own_votes(&acts, VoteKind::Precommit)[0];
    assert_eq!(precommit.vote.block, Some(v.id()));
    assert_eq!(e.locked().map(|(r, b)| (r, b.id())), Some((Round(0), v.id())));

    // Crash and restart from the log.
    let mut e = engine_on(&ks[me], e.into_wal());
    let acts = boot(&mut e, Height(1), vs.clone());
    assert_eq!(e.locked().map(|(r, b)| (r, b.id())), Some((Round(0), v.id())));
    assert_eq!(e.valid_value().map(|(r, b)| (r, b.id())), Some((Round(0), v.id())));
    assert_eq!((e.round(), e.step()), (Round(0), Step::Precommit));
    assert_eq!(own_votes(&acts, VoteKind::Precommit), vec![precommit], "re-sends, never re-signs");

    // Round 1 brings a fresh block from its proposer: the locked validator prevotes nil.
    let timeout = acts
        .iter()
        .find_map(|a| match a {
            Action::ScheduleTimeout(t) if t.kind == TimeoutKind::Precommit => Some(*t),
            _ => None,
        })
        .expect("the precommit timer is armed again");
    go(&mut e, Event::TimeoutFired(timeout));
    assert_eq!(e.round(), Round(1));
    let (_, proposer1) = roles(&ks, &vs, 1, 1);
    let u = block(1, 1, 2);
    if proposer1 != me {
        let acts = go(&mut e, proposal(&ks[proposer1], 1, 1, &u, None));
        assert_eq!(own_votes(&acts, VoteKind::Prevote)[0].vote.block, None);
    }
}

#[test]
fn conflicting_votes_are_reported_as_evidence() {
    let ks = keys(4);
    let vs = set(&ks, &[1, 1, 1, 2]);
    let mut e = engine(&ks[0]);
    boot(&mut e, Height(1), vs);
    let a = vote(&ks[1], 1, 0, VoteKind::Prevote, Some(&block(1, 0, 1)));
    let b = vote(&ks[1], 1, 0, VoteKind::Prevote, None);
    assert!(go(&mut e, received(a)).is_empty());
    let acts = go(&mut e, received(b));
    let evidence: Vec<(SignedVote, SignedVote)> = acts
        .iter()
        .filter_map(|x| match x {
            Action::EvidenceFound { a, b } => Some((*a, *b)),
            _ => None,
        })
        .collect();
    assert_eq!(evidence, vec![(a, b)]);
    assert!(evidence[0].0.conflicts_with(&evidence[0].1));
    // Reported once.
    let c = vote(&ks[1], 1, 0, VoteKind::Prevote, Some(&block(1, 0, 1)));
    let again = go(&mut e, received(c));
    assert!(!again.iter().any(|x| matches!(x, Action::EvidenceFound { .. })));
}

#[test]
fn a_lagging_validator_catches_up_from_a_certificate() {
    let ks = keys(4);
    let vs = set(&ks, &[5, 6, 7, 8]);
    let mut e = engine(&ks[0]);
    boot(&mut e, Height(1), vs.clone());
    // Votes from height 3 tell it the chain moved on, once they come from more than a third of
    // the power: 7 of 26 is not enough, 15 of 26 is.
    let acts = go(&mut e, received(vote(&ks[2], 3, 0, VoteKind::Prevote, None)));
    assert!(!acts.iter().any(|a| matches!(a, Action::RequestCommit { .. })));
    assert_eq!(e.height_shown(), Height(1));
    let acts = go(&mut e, received(vote(&ks[3], 3, 0, VoteKind::Prevote, None)));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::RequestCommit { height: Height(1), vouched: true }))
    );
    assert_eq!(e.height_shown(), Height(3));
    let b = block(1, 0, 9);
    let precommits: Vec<SignedVote> =
        ks[1..].iter().map(|k| vote(k, 1, 0, VoteKind::Precommit, Some(&b))).collect();
    // Two of them hold 13 of 26: no quorum, refused.
    let weak = CommitCertificate::from_precommits(&precommits[..2]).unwrap();
    let acts = e.handle(Event::CommitReceived { block: b.clone(), certificate: weak }).unwrap();
    assert!(!acts.iter().any(|a| matches!(a, Action::Commit { .. })));
    // A certificate for another block is refused too.
    let full = CommitCertificate::from_precommits(&precommits).unwrap();
    let other = block(1, 0, 10);
    let acts = e.handle(Event::CommitReceived { block: other, certificate: full.clone() }).unwrap();
    assert!(!acts.iter().any(|a| matches!(a, Action::Commit { .. })));
    let acts = e.handle(Event::CommitReceived { block: b.clone(), certificate: full }).unwrap();
    assert!(acts.iter().any(|a| matches!(a, Action::Commit { block, .. } if *block == b)));
    // Once applied, the next height starts at once (no block interval while catching up).
    let acts = e.handle(Event::BlockApplied { height: Height(1), next_validators: vs }).unwrap();
    assert_eq!(e.height(), Height(2));
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::ScheduleTimeout(t) if t.kind == TimeoutKind::Commit))
    );
}

#[test]
fn messages_are_checked_before_the_engine_sees_them() {
    let ks = keys(2);
    let b = block(1, 0, 1);
    let p = Proposal { height: Height(1), round: Round(0), block: b.id(), valid_round: None };
    let good: Message<Block> =
        Message::Proposal { proposal: SignedProposal::sign(&ks[0], CHAIN, p), block: b.clone() };
    let verifier = &Verifier::new();
    good.verify(verifier, CHAIN).unwrap();
    assert!(good.verify(verifier, "other-chain").is_err());
    let swapped: Message<Block> = Message::Proposal {
        proposal: SignedProposal::sign(&ks[0], CHAIN, p),
        block: block(1, 0, 2),
    };
    assert!(swapped.verify(verifier, CHAIN).is_err());
    let v: Message<Block> = Message::Vote(vote(&ks[1], 1, 0, VoteKind::Precommit, Some(&b)));
    v.verify(verifier, CHAIN).unwrap();
}

#[test]
fn the_file_wal_survives_reopening_and_drops_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consensus.wal");
    let ks = keys(1);
    let entries: Vec<WalEntry<Block>> = vec![
        WalEntry::Voted(vote(&ks[0], 1, 0, VoteKind::Prevote, None)),
        WalEntry::Locked { height: Height(2), round: Round(3), block: block(2, 3, 1) },
        WalEntry::Voted(vote(&ks[0], 2, 3, VoteKind::Precommit, Some(&block(2, 3, 1)))),
    ];
    {
        let mut wal = FileWal::<Block>::open(&path).unwrap();
        for entry in &entries {
            wal.append(entry).unwrap();
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    // A crash in the middle of an append leaves part of a record.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    }
    let mut wal = FileWal::<Block>::open(&path).unwrap();
    assert_eq!(wal.entries().unwrap(), entries);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "the torn record is cut off");
    wal.start_height(Height(2)).unwrap();
    assert_eq!(wal.entries().unwrap(), entries[1..].to_vec());
    let extra = WalEntry::Voted(vote(&ks[0], 2, 4, VoteKind::Prevote, None));
    wal.append(&extra).unwrap();
    drop(wal);
    let wal = FileWal::<Block>::open(&path).unwrap();
    assert_eq!(wal.entries().unwrap(), [&entries[1..], &[extra]].concat());
}

#[test]
fn an_engine_started_twice_on_one_log_keeps_its_votes() {
    // Logged votes of the height are restored and never signed anew.
    let ks = keys(4);
    let vs = set(&ks, &[1, 1, 1, 1]);
    let (me, _) = roles(&ks, &vs, 1, 0);
    let mut e = engine(&ks[me]);
    let acts = boot(&mut e, Height(1), vs.clone());
    let t = acts
        .iter()
        .find_map(|a| match a {
            Action::ScheduleTimeout(t) if t.kind == TimeoutKind::Propose => Some(*t),
            _ => None,
        })
        .unwrap();
    let acts = go(&mut e, Event::TimeoutFired(t));
    let nil = own_votes(&acts, VoteKind::Prevote);
    assert_eq!(nil.len(), 1);
    let mut e = engine_on(&ks[me], e.into_wal());
    let acts = boot(&mut e, Height(1), vs);
    assert_eq!(own_votes(&acts, VoteKind::Prevote), nil);
    assert_eq!(e.step(), Step::Prevote);
    // A proposal arriving late cannot make it prevote again.
    let (_, proposer) = roles(&ks, e.validators(), 1, 0);
    let acts = go(&mut e, proposal(&ks[proposer], 1, 0, &block(1, 0, 5), None));
    assert!(own_votes(&acts, VoteKind::Prevote).is_empty());
}
