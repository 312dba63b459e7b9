//! The engine: Algorithm 1 of "The latest gossip on BFT consensus" as a sans-IO state machine.
//!
//! [`Engine::start`] and [`Engine::handle`] take an [`Event`] and return the [`Action`]s the
//! driver must carry out, in order. Nothing in here reads a clock, a socket or a random source;
//! the only side effect is the write-ahead log, which the engine writes (and the log flushes)
//! before it returns the action that sends the logged message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::crypto::{Keypair, Verifier};
use crate::encoding::encoded_len;
use crate::types::{AccountId, Hash, Height, Round};
use crate::validators::{ValidatorSet, is_quorum};

use super::shown::HeightsShown;
use crate::vote::{CertificateError, CommitCertificate, SignedVote, Vote, VoteKind};

use super::config::EngineConfig;
use super::proposer::{proposer_with_stride, stride};
use super::types::{Message, Proposal, SignedProposal, Step, Timeout, TimeoutKind, Value};
use super::votes::{Added, HeightVotes, VOTES_PER_VALIDATOR_MAX};
use super::wal::{Wal, WalEntry, WalError};

/// Rounds ahead of the current one whose messages are kept; messages of later rounds only count
/// towards the round-skip rule (a validator's highest round), so a Byzantine validator cannot
/// make the engine store votes for a million rounds. Messages of the next height are kept for
/// its rounds `0..=ROUNDS_AHEAD_MAX`.
pub const ROUNDS_AHEAD_MAX: u32 = 8;

/// Rounds before the current one whose proposals (and the bodies only they name) are kept.
/// Older proposals matter only for deciding (Algorithm 1, line 49), which the engine does from
/// any body it holds under the decided id; a validator that no longer holds it catches up from
/// the commit certificate, as a lagging one does.
pub const PAST_ROUNDS_KEPT: u32 = 2;

/// Rebroadcasts at one height without a decision after which each further rebroadcast re-sends
/// every vote the validator holds of the last two rounds and its own of every round, and asks a
/// peer for the height's commit. Validators that decided alone (their quorum of precommits
/// reached no one else) move on, fewer than a third of the power ahead vouches for nothing, and
/// those left behind may lack the power to even time out of their round: so they probe, at the
/// rebroadcast pace, which no peer's message can speed up.
pub const STALLED_REBROADCASTS: u32 = 2;

/// Most proposals kept per round (a Byzantine proposer may send several different ones).
pub const PROPOSALS_PER_ROUND_MAX: usize = 4;

/// The size counted for one vote held in memory, in bytes: its encoding (under 160 bytes) plus
/// bookkeeping.
pub const VOTE_BYTES: usize = 256;

/// An input to the engine.
#[derive(Clone, Debug)]
pub enum Event<V> {
    /// A consensus message arrived from a peer. Its signature was checked by gossip validation
    /// ([`Message::verify`]); the engine checks everything else.
    MessageReceived(Message<V>),
    /// The application built the block asked for by [`Action::BuildBlock`].
    BlockBuilt {
        /// The height asked for.
        height: Height,
        /// The round asked for.
        round: Round,
        /// The block.
        block: V,
    },
    /// The application's verdict on a block asked for by [`Action::ValidateBlock`].
    BlockValidated {
        /// The height of the block.
        height: Height,
        /// The block's id.
        block: Hash,
        /// Whether the block may be committed on top of the previous height.
        valid: bool,
    },
    /// A timer scheduled by [`Action::ScheduleTimeout`] fired.
    TimeoutFired(Timeout),
    /// A peer answered [`Action::RequestCommit`]: a block with its commit certificate.
    CommitReceived {
        /// The block.
        block: V,
        /// The quorum of precommits for it.
        certificate: CommitCertificate,
    },
    /// The application applied the block of [`Action::Commit`] and durably stored it with its
    /// certificate; the next height is signed by `next_validators`.
    BlockApplied {
        /// The height applied.
        height: Height,
        /// The validator set of `height + 1`.
        next_validators: ValidatorSet,
    },
}

/// An output of the engine; the driver carries them out in order.
#[derive(Clone, Debug)]
pub enum Action<V> {
    /// Send a message to every validator (already in the write-ahead log).
    Broadcast(Message<V>),
    /// Fire [`Event::TimeoutFired`] with this timeout after `duration_ms`.
    ScheduleTimeout(Timeout),
    /// Build a block to propose and answer with [`Event::BlockBuilt`].
    BuildBlock {
        /// The height to build for.
        height: Height,
        /// The round it is for.
        round: Round,
    },
    /// Check a proposed block against the state of `height - 1` and answer with
    /// [`Event::BlockValidated`].
    ValidateBlock {
        /// The block's height.
        height: Height,
        /// The block.
        block: V,
    },
    /// The block is decided: apply it, store it with its certificate, then answer with
    /// [`Event::BlockApplied`].
    Commit {
        /// The decided block.
        block: V,
        /// The quorum of precommits that commits it (what syncing peers verify).
        certificate: CommitCertificate,
    },
    /// Fetch this height's block and certificate from a peer and answer with
    /// [`Event::CommitReceived`]: validators holding more than a third of the power are at a
    /// later height (`vouched`), or the height has gone without a decision for [`STALLED_REBROADCASTS`] rebroadcasts and a peer that decided alone may hold
    /// the commit (a probe, once per rebroadcast, that no message can trigger).
    RequestCommit {
        /// The height this validator is missing.
        height: Height,
        /// Whether more than a third of the power showed a later height (else a probe).
        vouched: bool,
    },
    /// A validator signed two different votes for one height, round and kind: the pair is the
    /// ledger's `Evidence` transaction.
    EvidenceFound {
        /// The vote counted first.
        a: SignedVote,
        /// The conflicting vote.
        b: SignedVote,
    },
}

/// Why the engine stopped: only its write-ahead log can fail, and a validator that cannot log
/// must not sign.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The log could not be written or read.
    #[error("consensus write-ahead log failed: {0}")]
    Wal(#[from] WalError),
    /// The engine was used before [`Engine::start`].
    #[error("the engine was not started")]
    NotStarted,
}

/// A deliberately broken engine, for showing that the simulator catches each bug.
#[cfg(feature = "sim")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutant {
    /// Prevote for any valid proposal, ignoring the lock.
    NoLocking,
    /// Forget the lock (not the votes) when rebuilding from the write-ahead log.
    ForgetLockOnRestart,
    /// Count a quorum as `power >= total * 2 / 3`.
    QuorumFloor,
    /// Propose a fresh block even when holding a valid value.
    IgnoreValidRound,
    /// Take a block's body without checking it against its header, and let a later body replace
    /// the one validated under an id (the engine before the block-body rule).
    NoBodyCheck,
    /// Trust the height of any one validator's message as the chain's height (skip the block
    /// interval, ask peers for commits).
    TrustAnyHeight,
    /// Buffer next-height messages without deduplication or a byte bound (count bound only).
    UnboundedFuture,
    /// Accept a proposal from any validator, for any round.
    AnyProposer,
    /// Prevote for a re-proposal without seeing the quorum of prevotes of its valid round.
    TrustValidRound,
    /// Not the engine's: the simulator opens this validator's file log with
    /// [`super::FileWal::open_ignoring_corruption`], which drops a corrupted record and every
    /// record after it.
    IgnoreWalCorruption,
}

/// Where the engine is within its height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// [`Engine::start`] has not run.
    Stopped,
    /// Waiting for the block interval before round 0 of the height.
    NewHeight,
    /// Running rounds.
    Rounds,
    /// Decided; waiting for the application to apply the block.
    Decided,
}

/// The "for the first time" rules of Algorithm 1, remembered per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Once {
    /// Line 34: schedule the prevote timeout.
    PrevoteTimeout,
    /// Line 36: lock / update the valid value.
    LockOrValid,
    /// Line 47: schedule the precommit timeout.
    PrecommitTimeout,
}

/// The application's verdict on a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pending,
    Valid,
    Invalid,
}

/// The one body the engine holds under a block id, with its size and the application's verdict
/// on it.
#[derive(Clone, Debug)]
struct Body<V> {
    value: V,
    bytes: usize,
    verdict: Verdict,
}

/// A kind of consensus message, for deduplicating the next height's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Proposal,
    Prevote,
    Precommit,
}

impl<V> Message<V> {
    fn kind(&self) -> Kind {
        match self {
            Message::Proposal { .. } => Kind::Proposal,
            Message::Vote(v) if v.vote.kind == VoteKind::Prevote => Kind::Prevote,
            Message::Vote(_) => Kind::Precommit,
        }
    }
}

/// Where a next-height message is held: (round, kind, signer, arrival number).
type FutureKey = (Round, Kind, AccountId, u64);

/// The next height's messages, held until the current height is applied: at most one per
/// (round, kind, signer) for rounds `0..=ROUNDS_AHEAD_MAX`, within a byte budget that keeps
/// the lowest rounds (round 0's proposal matters most).
#[derive(Clone, Debug)]
struct FutureMessages<V> {
    /// By (round, kind, signer, arrival), with each message's size; the arrival number is 0
    /// except in the [`Mutant::UnboundedFuture`] engine, which keeps duplicates.
    held: BTreeMap<FutureKey, (Message<V>, usize)>,
    bytes: usize,
    #[cfg(feature = "sim")]
    arrivals: u64,
}

impl<V> Default for FutureMessages<V> {
    fn default() -> Self {
        FutureMessages {
            held: BTreeMap::new(),
            bytes: 0,
            #[cfg(feature = "sim")]
            arrivals: 0,
        }
    }
}

/// Most next-height messages the [`Mutant::UnboundedFuture`] engine keeps (the old count bound).
#[cfg(feature = "sim")]
const FUTURE_MESSAGES_MUTANT_MAX: usize = 4_096;

/// What an engine holds of its peers' messages, in bytes as counted against
/// [`Engine::peer_bytes_bound`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerMemory {
    /// Block bodies held (proposals of kept rounds, the lock and the valid value).
    pub bodies: usize,
    /// Their encoded bytes.
    pub body_bytes: usize,
    /// Votes held, of every kept round.
    pub votes: usize,
    /// Next-height messages held.
    pub future: usize,
    /// Their encoded bytes.
    pub future_bytes: usize,
}

impl PeerMemory {
    /// The total counted: bodies, votes at [`VOTE_BYTES`] each, and next-height messages.
    pub fn bytes(&self) -> usize {
        self.body_bytes
            .saturating_add(self.votes.saturating_mul(VOTE_BYTES))
            .saturating_add(self.future_bytes)
    }
}

/// The Tendermint engine of one validator (or of a non-voting follower, when its key is not in
/// the set).
pub struct Engine<V: Value, W: Wal<V>> {
    config: EngineConfig,
    chain_id: String,
    key: Keypair,
    account: AccountId,
    wal: W,
    /// Checks the commit certificates handed to the engine.
    verifier: Arc<Verifier>,
    phase: Phase,
    height: Height,
    validators: ValidatorSet,
    stride: u64,
    round: Round,
    step: Step,
    /// The lock's round and block id (its body is held in `blocks`).
    locked: Option<(Round, Hash)>,
    /// The valid value's round and block id (its body is held in `blocks`).
    valid: Option<(Round, Hash)>,
    /// The kept proposals of each round; their bodies are in `blocks`.
    proposals: BTreeMap<Round, Vec<SignedProposal>>,
    /// One body per block id: the first that matched its header, the one validated.
    blocks: BTreeMap<Hash, Body<V>>,
    votes: HeightVotes,
    highest_round: BTreeMap<AccountId, Round>,
    own_votes: BTreeMap<(Round, VoteKind), SignedVote>,
    own_proposals: BTreeMap<Round, (SignedProposal, V)>,
    build_requested: Option<Round>,
    fired: BTreeSet<(Round, Once)>,
    reported: BTreeSet<(AccountId, Round, VoteKind)>,
    future: FutureMessages<V>,
    /// The highest height each validator of the set has signed a message for.
    heights_shown: HeightsShown,
    /// The height shown by more than a third of the power when commits were last requested.
    requested_for: Height,
    /// Rebroadcast timers fired at this height.
    rebroadcasts: u32,
    decided_from_certificate: bool,
    #[cfg(feature = "sim")]
    mutants: BTreeSet<Mutant>,
}

impl<V: Value, W: Wal<V>> Engine<V, W> {
    /// An engine signing with `key` on `chain_id`, logging to `wal`, checking certificates with
    /// `verifier` (the one that checked the votes, so their signatures are not checked again). It
    /// does nothing until [`Engine::start`].
    pub fn new(
        config: EngineConfig,
        chain_id: impl Into<String>,
        key: Keypair,
        wal: W,
        verifier: Arc<Verifier>,
    ) -> Self {
        let account = key.account();
        Engine {
            config,
            chain_id: chain_id.into(),
            key,
            account,
            wal,
            verifier,
            phase: Phase::Stopped,
            height: Height(0),
            validators: ValidatorSet::default(),
            stride: 0,
            round: Round(0),
            step: Step::Propose,
            locked: None,
            valid: None,
            proposals: BTreeMap::new(),
            blocks: BTreeMap::new(),
            votes: HeightVotes::default(),
            highest_round: BTreeMap::new(),
            own_votes: BTreeMap::new(),
            own_proposals: BTreeMap::new(),
            build_requested: None,
            fired: BTreeSet::new(),
            reported: BTreeSet::new(),
            future: FutureMessages::default(),
            heights_shown: HeightsShown::default(),
            requested_for: Height(0),
            rebroadcasts: 0,
            decided_from_certificate: false,
            #[cfg(feature = "sim")]
            mutants: BTreeSet::new(),
        }
    }

    /// Breaks the engine on purpose (simulator only: the mutants under test, and Byzantine
    /// validators that forget their lock and valid value).
    #[cfg(feature = "sim")]
    pub fn add_mutant(&mut self, mutant: Mutant) {
        self.mutants.insert(mutant);
    }

    #[cfg(feature = "sim")]
    fn mutant(&self, m: Mutant) -> bool {
        self.mutants.contains(&m)
    }

    /// The height being decided.
    pub fn height(&self) -> Height {
        self.height
    }

    /// The current round.
    pub fn round(&self) -> Round {
        self.round
    }

    /// The current step.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The lock: the round and block this validator precommitted last, if any.
    pub fn locked(&self) -> Option<(Round, &V)> {
        self.locked.and_then(|(r, id)| self.blocks.get(&id).map(|b| (r, &b.value)))
    }

    /// The valid value: the latest block seen with a quorum of prevotes, and its round.
    pub fn valid_value(&self) -> Option<(Round, &V)> {
        self.valid.and_then(|(r, id)| self.blocks.get(&id).map(|b| (r, &b.value)))
    }

    /// The validator set of the current height.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// The height that validators holding more than a third of the power have signed messages
    /// for (at least one of them honest, so every earlier height is committed), or the current
    /// height if no later one has that backing. Only this height skips the block interval or
    /// asks peers for commits: one validator's far-future message changes nothing.
    pub fn height_shown(&self) -> Height {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::TrustAnyHeight) {
            return self.heights_shown.highest().map_or(self.height, |h| h.max(self.height));
        }
        self.heights_shown.vouched(&self.validators, self.height)
    }

    /// What the engine holds of its peers' messages.
    pub fn peer_memory(&self) -> PeerMemory {
        PeerMemory {
            bodies: self.blocks.len(),
            body_bytes: self.blocks.values().map(|b| b.bytes).sum(),
            votes: self.votes.len(),
            future: self.future.held.len(),
            future_bytes: self.future.bytes,
        }
    }

    /// The bound on [`Engine::peer_memory`]'s bytes at the current round, given the validator
    /// count `n` and the largest value `B` (`value_bytes_max`):
    ///
    /// - bodies: `(PAST_ROUNDS_KEPT + 1 + ROUNDS_AHEAD_MAX) × PROPOSALS_PER_ROUND_MAX + 2`
    ///   (kept rounds' proposals, the lock, the valid value), one per block id, each at most `B`;
    /// - votes: `(round + 1 + ROUNDS_AHEAD_MAX) × 2 × n × VOTES_PER_VALIDATOR_MAX` at
    ///   [`VOTE_BYTES`] each (votes of earlier rounds stay: they prove valid rounds);
    /// - next-height messages: [`Engine::future_bytes_max`].
    pub fn peer_bytes_bound(&self) -> usize {
        let rounds_kept = (PAST_ROUNDS_KEPT + 1 + ROUNDS_AHEAD_MAX) as usize;
        let bodies = rounds_kept * PROPOSALS_PER_ROUND_MAX + 2;
        let vote_rounds = self.round.0 as usize + 1 + ROUNDS_AHEAD_MAX as usize;
        let votes = vote_rounds * 2 * self.validators.len() * VOTES_PER_VALIDATOR_MAX;
        bodies
            .saturating_mul(self.config.value_bytes())
            .saturating_add(votes.saturating_mul(VOTE_BYTES))
            .saturating_add(self.future_bytes_max())
    }

    /// The byte budget of the next height's messages: two largest values (round 0's proposal and
    /// one more) and every validator's two votes in each kept round.
    pub fn future_bytes_max(&self) -> usize {
        let votes = (ROUNDS_AHEAD_MAX as usize + 1) * 2 * self.validators.len() * VOTE_BYTES;
        self.config.value_bytes().saturating_mul(2).saturating_add(votes)
    }

    /// The write-ahead log.
    pub fn wal(&self) -> &W {
        &self.wal
    }

    /// Consumes the engine and returns its log (the simulator keeps it across a crash).
    pub fn into_wal(self) -> W {
        self.wal
    }

    /// Starts (or, after a crash, restarts) at `height`, the height after the last block the
    /// application stored, signed by `validators`. Records of `height` in the write-ahead log
    /// rebuild the round, step, own messages, lock and valid value, and the own messages of
    /// that round are sent again.
    pub fn start(
        &mut self,
        height: Height,
        validators: ValidatorSet,
    ) -> Result<Vec<Action<V>>, EngineError> {
        let mut out = Vec::new();
        self.enter_height(height, validators);
        let entries: Vec<WalEntry<V>> =
            self.wal.entries()?.into_iter().filter(|e| e.height() == height).collect();
        if entries.is_empty() {
            self.start_round(Round(0), &mut out)?;
        } else {
            self.replay(entries, &mut out)?;
        }
        self.progress(&mut out)?;
        Ok(out)
    }

    /// Handles one event and returns what to do.
    pub fn handle(&mut self, event: Event<V>) -> Result<Vec<Action<V>>, EngineError> {
        if self.phase == Phase::Stopped {
            return Err(EngineError::NotStarted);
        }
        let mut out = Vec::new();
        match event {
            Event::MessageReceived(message) => self.on_message(message, &mut out),
            Event::BlockBuilt { height, round, block } => {
                self.on_block_built(height, round, block, &mut out)?
            }
            Event::BlockValidated { height, block, valid } => {
                if height == self.height
                    && let Some(body) = self.blocks.get_mut(&block)
                    && body.verdict == Verdict::Pending
                {
                    body.verdict = if valid { Verdict::Valid } else { Verdict::Invalid };
                }
            }
            Event::TimeoutFired(timeout) => self.on_timeout(timeout, &mut out)?,
            Event::CommitReceived { block, certificate } => {
                self.on_commit_received(block, certificate, &mut out);
            }
            Event::BlockApplied { height, next_validators } => {
                if self.phase == Phase::Decided && height == self.height {
                    self.wal.start_height(height.next())?;
                    // Behind when a certificate decided, or when more than a third of the power
                    // is past the next height too (an honest validator there means it is
                    // committed).
                    let skip_wait =
                        self.decided_from_certificate || self.height_shown() > height.next();
                    self.enter_height(height.next(), next_validators);
                    if skip_wait {
                        // Catching up: the chain is ahead, waiting the interval only lags more.
                        self.start_round(Round(0), &mut out)?;
                    } else {
                        self.phase = Phase::NewHeight;
                        self.schedule(TimeoutKind::Commit, &mut out);
                    }
                    let future = std::mem::take(&mut self.future);
                    for (message, _) in future.held.into_values() {
                        self.on_message(message, &mut out);
                    }
                }
            }
        }
        self.progress(&mut out)?;
        Ok(out)
    }

    // ----- height and round transitions -----

    fn enter_height(&mut self, height: Height, validators: ValidatorSet) {
        self.phase = Phase::Rounds;
        self.height = height;
        self.stride = stride(validators.total_power());
        self.validators = validators;
        self.round = Round(0);
        self.step = Step::Propose;
        self.locked = None;
        self.valid = None;
        self.proposals.clear();
        self.blocks.clear();
        self.votes = HeightVotes::default();
        self.highest_round.clear();
        self.own_votes.clear();
        self.own_proposals.clear();
        self.build_requested = None;
        self.fired.clear();
        self.reported.clear();
        self.rebroadcasts = 0;
        self.decided_from_certificate = false;
        self.heights_shown.forget(&self.validators, height);
    }

    fn proposer(&self, round: Round) -> Option<AccountId> {
        proposer_with_stride(&self.validators, self.stride, self.height, round).map(|v| v.account)
    }

    fn is_voter(&self) -> bool {
        self.validators.contains(&self.account)
    }

    fn quorum(&self, power: u64) -> bool {
        let total = self.validators.total_power();
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::QuorumFloor) {
            return power >= total * 2 / 3;
        }
        is_quorum(power, total)
    }

    fn schedule(&self, kind: TimeoutKind, out: &mut Vec<Action<V>>) {
        out.push(Action::ScheduleTimeout(Timeout {
            height: self.height,
            round: self.round,
            kind,
            duration_ms: self.config.timeout_ms(kind, self.round),
        }));
    }

    /// Algorithm 1's `StartRound(round)`.
    fn start_round(&mut self, round: Round, out: &mut Vec<Action<V>>) -> Result<(), EngineError> {
        self.phase = Phase::Rounds;
        self.round = round;
        self.step = Step::Propose;
        self.forget_old_proposals();
        if self.proposer(round) == Some(self.account) {
            if self.own_proposals.contains_key(&round) {
                self.send_own_proposal(out);
            } else if let Some((valid_round, block)) = self
                .valid
                .filter(|_| !self.ignores_valid_round())
                .and_then(|(r, id)| self.blocks.get(&id).map(|b| (r, b.value.clone())))
            {
                self.propose(block, Some(valid_round), out)?;
            } else {
                self.build_requested = Some(round);
                out.push(Action::BuildBlock { height: self.height, round });
            }
        }
        self.schedule(TimeoutKind::Propose, out);
        self.schedule(TimeoutKind::Rebroadcast, out);
        Ok(())
    }

    /// Drops the proposals of rounds more than [`PAST_ROUNDS_KEPT`] behind, and the bodies
    /// neither a kept proposal, the lock nor the valid value names. (The lock's body stays held:
    /// a quorum of precommits for it from an old round, arriving late, still decides it.)
    fn forget_old_proposals(&mut self) {
        let Some(oldest) = self.round.0.checked_sub(PAST_ROUNDS_KEPT) else { return };
        self.proposals = self.proposals.split_off(&Round(oldest));
        let mut named: BTreeSet<Hash> =
            self.proposals.values().flatten().map(|p| p.proposal.block).collect();
        named.extend(self.locked.iter().chain(&self.valid).map(|(_, id)| *id));
        self.blocks.retain(|id, _| named.contains(id));
    }

    /// Holds `block` under its id unless a body is held there already, which stays: it is the
    /// one validated. Returns whether the body is new (and so needs validating).
    fn hold(&mut self, id: Hash, block: V, verdict: Verdict) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::NoBodyCheck)
            && let Some(body) = self.blocks.get_mut(&id)
        {
            // The old engine: a proposal's own body is what it locks on and decides, while the
            // verdict stays the one given for the first body under the id.
            body.bytes = encoded_len(&block);
            body.value = block;
            return false;
        }
        match self.blocks.entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(Body { bytes: encoded_len(&block), value: block, verdict });
                true
            }
        }
    }

    /// Whether a peer's block may be held: its body matches its id, and it is within size.
    fn acceptable(&self, block: &V) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::NoBodyCheck) {
            return true;
        }
        block.check_body().is_ok() && encoded_len(block) <= self.config.value_bytes()
    }

    fn ignores_valid_round(&self) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::IgnoreValidRound) {
            return true;
        }
        false
    }

    fn trusts_valid_round(&self) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::TrustValidRound) {
            return true;
        }
        false
    }

    fn ignores_lock(&self) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::NoLocking) {
            return true;
        }
        false
    }

    fn propose(
        &mut self,
        block: V,
        valid_round: Option<Round>,
        out: &mut Vec<Action<V>>,
    ) -> Result<(), EngineError> {
        let round = self.round;
        assert!(
            !self.own_proposals.contains_key(&round),
            "proposing twice at height {} round {round}",
            self.height
        );
        let proposal = Proposal { height: self.height, round, block: block.id(), valid_round };
        let signed = SignedProposal::sign(&self.key, &self.chain_id, proposal);
        self.wal.append(&WalEntry::Proposed { proposal: signed, block: block.clone() })?;
        self.own_proposals.insert(round, (signed, block.clone()));
        self.proposals.entry(round).or_default().push(signed);
        self.hold(signed.proposal.block, block, Verdict::Valid);
        self.send_own_proposal(out);
        Ok(())
    }

    /// Sends this round's own proposal, and with a re-proposed valid value the quorum of
    /// prevotes that makes it acceptable (peers that missed those prevotes, or restarted, would
    /// otherwise never prevote for it: Algorithm 1, line 28).
    fn send_own_proposal(&self, out: &mut Vec<Action<V>>) {
        let Some((proposal, block)) = self.own_proposals.get(&self.round) else {
            return;
        };
        out.push(Action::Broadcast(Message::Proposal {
            proposal: *proposal,
            block: block.clone(),
        }));
        if let Some(vr) = proposal.proposal.valid_round
            && let Some(votes) = self.votes.round(vr)
        {
            for vote in votes.prevotes.votes_for(Some(proposal.proposal.block)) {
                out.push(Action::Broadcast(Message::Vote(*vote)));
            }
        }
    }

    /// Signs, logs, counts and sends a vote of the current round, unless one of this kind was
    /// already cast in it: the one guard against double-signing, whatever the rules say.
    fn vote(
        &mut self,
        kind: VoteKind,
        block: Option<Hash>,
        out: &mut Vec<Action<V>>,
    ) -> Result<(), EngineError> {
        if !self.is_voter() || self.own_votes.contains_key(&(self.round, kind)) {
            return Ok(());
        }
        let vote = Vote { height: self.height, round: self.round, kind, block };
        let signed = SignedVote::sign(&self.key, &self.chain_id, vote);
        self.wal.append(&WalEntry::Voted(signed))?;
        self.record_own_vote(signed);
        out.push(Action::Broadcast(Message::Vote(signed)));
        Ok(())
    }

    fn record_own_vote(&mut self, signed: SignedVote) {
        self.own_votes.insert((signed.vote.round, signed.vote.kind), signed);
        let power = self.validators.power_of(&self.account).unwrap_or(0);
        self.votes.add(signed, power);
    }

    fn prevote(
        &mut self,
        block: Option<Hash>,
        out: &mut Vec<Action<V>>,
    ) -> Result<(), EngineError> {
        self.vote(VoteKind::Prevote, block, out)?;
        self.step = Step::Prevote;
        self.schedule(TimeoutKind::Prevote, out);
        Ok(())
    }

    fn precommit(
        &mut self,
        block: Option<Hash>,
        out: &mut Vec<Action<V>>,
    ) -> Result<(), EngineError> {
        self.vote(VoteKind::Precommit, block, out)?;
        self.step = Step::Precommit;
        Ok(())
    }

    /// Rebuilds the height's state from its log records.
    fn replay(
        &mut self,
        entries: Vec<WalEntry<V>>,
        out: &mut Vec<Action<V>>,
    ) -> Result<(), EngineError> {
        let mut round = Round(0);
        for entry in entries {
            match entry {
                WalEntry::Proposed { proposal, block } => {
                    let r = proposal.proposal.round;
                    round = round.max(r);
                    self.proposals.entry(r).or_default().push(proposal);
                    self.hold(block.id(), block.clone(), Verdict::Valid);
                    self.own_proposals.insert(r, (proposal, block));
                }
                WalEntry::Voted(vote) => {
                    round = round.max(vote.vote.round);
                    self.record_own_vote(vote);
                }
                WalEntry::Locked { round: r, block, .. } => {
                    round = round.max(r);
                    if !self.forgets_lock() && self.locked.is_none_or(|(l, _)| l <= r) {
                        let id = block.id();
                        self.hold(id, block, Verdict::Valid);
                        self.locked = Some((r, id));
                    }
                }
                WalEntry::ValidValue { round: r, block, proof, .. } => {
                    round = round.max(r);
                    for vote in proof {
                        if let Some(power) = self.validators.power_of(&vote.validator)
                            && vote.validator != self.account
                        {
                            self.votes.add(vote, power);
                        }
                    }
                    if self.valid.is_none_or(|(l, _)| l <= r) {
                        let id = block.id();
                        self.hold(id, block, Verdict::Valid);
                        self.valid = Some((r, id));
                    }
                }
            }
        }
        let prevoted = self.own_votes.contains_key(&(round, VoteKind::Prevote));
        let precommitted = self.own_votes.contains_key(&(round, VoteKind::Precommit));
        if !prevoted && !precommitted {
            // Only a proposal (or a lock) of this round was logged: enter it afresh; an own
            // proposal is re-sent rather than replaced.
            return self.start_round(round, out);
        }
        self.round = round;
        self.step = if precommitted { Step::Precommit } else { Step::Prevote };
        // The proposal first: peers judge the votes for it once they hold it.
        self.send_own_proposal(out);
        for vote in self.own_votes.range((round, VoteKind::Prevote)..=(round, VoteKind::Precommit))
        {
            out.push(Action::Broadcast(Message::Vote(*vote.1)));
        }
        // The timers that were running died with the process: arm the step's own timer, so a
        // restarted validator moves on even if its peers' messages never come.
        let timer = if precommitted { TimeoutKind::Precommit } else { TimeoutKind::Prevote };
        self.schedule(timer, out);
        self.schedule(TimeoutKind::Rebroadcast, out);
        Ok(())
    }

    fn forgets_lock(&self) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::ForgetLockOnRestart) {
            return true;
        }
        false
    }

    // ----- inputs -----

    fn on_message(&mut self, message: Message<V>, out: &mut Vec<Action<V>>) {
        let height = message.height();
        if height < self.height {
            return;
        }
        let signer = message.signer();
        if height > self.height {
            // Later heights are heard only from this height's validators (the set of the next
            // height is this one's but for slashes, which take effect two heights later).
            if !self.validators.contains(&signer) {
                return;
            }
            self.note_height_shown(signer, height, out);
            if height == self.height.next() {
                self.hold_future(message);
            }
            return;
        }
        let Some(power) = self.validators.power_of(&signer) else {
            return;
        };
        let round = message.round();
        let highest = self.highest_round.entry(signer).or_insert(round);
        *highest = (*highest).max(round);
        if round.0 > self.round.0.saturating_add(ROUNDS_AHEAD_MAX) {
            return;
        }
        match message {
            Message::Proposal { proposal, block } => {
                let p = proposal.proposal;
                if !self.may_propose(signer, self.height, p.round)
                    || block.id() != p.block
                    || p.valid_round.is_some_and(|vr| vr >= p.round)
                    || p.round.0.saturating_add(PAST_ROUNDS_KEPT) < self.round.0
                    || !self.acceptable(&block)
                {
                    return;
                }
                let kept = self.proposals.entry(p.round).or_default();
                if kept.len() >= PROPOSALS_PER_ROUND_MAX || kept.iter().any(|s| s.proposal == p) {
                    return;
                }
                kept.push(proposal);
                if self.hold(p.block, block.clone(), Verdict::Pending) {
                    out.push(Action::ValidateBlock { height: self.height, block });
                }
            }
            Message::Vote(vote) => {
                if vote.validator == self.account {
                    // Our own vote echoed back (or a forgery the signature check let through
                    // only if it is ours): our own votes are counted when cast.
                    return;
                }
                let v = vote.vote;
                let first = self.votes.first(v.round, v.kind, &vote.validator).copied();
                let added = match (first, v.block) {
                    // An equivocator's further votes count only for values that can matter: nil
                    // and proposed blocks. Votes for unknown hashes would only fill its slots.
                    (Some(first), Some(block))
                        if first.vote != v && !self.blocks.contains_key(&block) =>
                    {
                        Added::Conflict(Box::new(first))
                    }
                    _ => self.votes.add(vote, power),
                };
                if let Added::Conflict(first) = added {
                    let key = (vote.validator, v.round, v.kind);
                    if self.reported.insert(key) {
                        out.push(Action::EvidenceFound { a: *first, b: vote });
                    }
                }
            }
        }
    }

    /// Whether `signer` proposes at `(height, round)` (with this height's set; the next height's
    /// differs only after a slash, and a proposal dropped for that is sent again).
    fn may_propose(&self, signer: AccountId, height: Height, round: Round) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::AnyProposer) {
            return true;
        }
        proposer_with_stride(&self.validators, self.stride, height, round).map(|v| v.account)
            == Some(signer)
    }

    /// A validator signed a message for a later height: once more than a third of the power is
    /// past this height, ask peers for the commit.
    fn note_height_shown(&mut self, signer: AccountId, height: Height, out: &mut Vec<Action<V>>) {
        self.heights_shown.note(signer, height);
        let chain = self.height_shown();
        if chain > self.height && chain > self.requested_for && self.phase == Phase::Rounds {
            self.requested_for = chain;
            out.push(Action::RequestCommit { height: self.height, vouched: true });
        }
    }

    /// Keeps a message of the next height for when this one is applied: one per round, kind
    /// and signer, proposals only from the round's proposer and with a matching body, within
    /// [`Engine::future_bytes_max`] (the lowest rounds first).
    fn hold_future(&mut self, message: Message<V>) {
        let round = message.round();
        let bytes = encoded_len(&message);
        #[cfg(feature = "sim")]
        if self.mutant(Mutant::UnboundedFuture) {
            // The old buffer: any message of a validator, up to a count, whatever its size.
            if self.future.held.len() < FUTURE_MESSAGES_MUTANT_MAX {
                self.future.arrivals += 1;
                let key = (round, message.kind(), message.signer(), self.future.arrivals);
                self.future.bytes += bytes;
                self.future.held.insert(key, (message, bytes));
            }
            return;
        }
        if round.0 > ROUNDS_AHEAD_MAX {
            return;
        }
        if let Message::Proposal { proposal, block } = &message {
            let p = proposal.proposal;
            if !self.may_propose(message.signer(), p.height, p.round)
                || block.id() != p.block
                || !self.acceptable(block)
            {
                return;
            }
        }
        let key = (round, message.kind(), message.signer(), 0);
        if self.future.held.contains_key(&key) {
            return;
        }
        let budget = self.future_bytes_max();
        while self.future.bytes + bytes > budget {
            match self.future.held.last_entry() {
                Some(last) if *last.key() > key => {
                    self.future.bytes -= last.remove().1;
                }
                _ => return,
            }
        }
        self.future.bytes += bytes;
        self.future.held.insert(key, (message, bytes));
    }

    fn on_block_built(
        &mut self,
        height: Height,
        round: Round,
        block: V,
        out: &mut Vec<Action<V>>,
    ) -> Result<(), EngineError> {
        if height == self.height
            && round == self.round
            && self.phase == Phase::Rounds
            && self.step == Step::Propose
            && self.build_requested == Some(round)
            && !self.own_proposals.contains_key(&round)
        {
            self.build_requested = None;
            self.propose(block, None, out)?;
        }
        Ok(())
    }

    fn on_timeout(&mut self, t: Timeout, out: &mut Vec<Action<V>>) -> Result<(), EngineError> {
        if t.height != self.height {
            return Ok(());
        }
        match t.kind {
            TimeoutKind::Commit => {
                if self.phase == Phase::NewHeight {
                    self.start_round(Round(0), out)?;
                }
            }
            _ if self.phase != Phase::Rounds || t.round != self.round => {}
            TimeoutKind::Propose => {
                if self.step == Step::Propose {
                    self.prevote(None, out)?;
                }
            }
            TimeoutKind::Prevote => {
                if self.step == Step::Prevote {
                    self.precommit(None, out)?;
                }
            }
            TimeoutKind::Precommit => {
                self.rebroadcast(out);
                self.start_round(Round(self.round.0.saturating_add(1)), out)?;
            }
            TimeoutKind::Rebroadcast => {
                self.rebroadcasts = self.rebroadcasts.saturating_add(1);
                let stalled = self.rebroadcasts > STALLED_REBROADCASTS;
                if stalled {
                    self.rebroadcast_stalled(out);
                } else {
                    self.rebroadcast(out);
                }
                let vouched = self.height_shown() > self.height;
                if vouched || stalled {
                    out.push(Action::RequestCommit { height: self.height, vouched });
                }
                self.schedule(TimeoutKind::Rebroadcast, out);
            }
        }
        Ok(())
    }

    /// Sends this round's own messages again, and the previous round's votes: validators still
    /// in that round may need them to reach the quorum that lets them leave it (a validator
    /// leaves a round on a quorum of its precommits, which others may have lost).
    fn rebroadcast(&self, out: &mut Vec<Action<V>>) {
        self.send_own_proposal(out);
        let from = Round(self.round.0.saturating_sub(1));
        for (_, vote) in
            self.own_votes.range((from, VoteKind::Prevote)..=(self.round, VoteKind::Precommit))
        {
            out.push(Action::Broadcast(Message::Vote(*vote)));
        }
    }

    /// A stalled height's rebroadcast: the own proposal, the own votes of *every* round (a
    /// validator left in an earlier round needs them to reach the quorum that lets it leave), and
    /// now and then every vote held of this round and the previous one, others' included (the
    /// vote that completes someone's quorum may have come only from a validator that has since
    /// decided and moved on). Signatures travel unchanged, so relaying forges nothing.
    fn rebroadcast_stalled(&self, out: &mut Vec<Action<V>>) {
        self.send_own_proposal(out);
        for vote in self.own_votes.values() {
            out.push(Action::Broadcast(Message::Vote(*vote)));
        }
        // Relaying is `n` messages from each of `n` validators: only on the 4th, 8th, 16th, …
        // rebroadcast of the stall, so a long stall costs `n² log t` messages, not `n² t`.
        if self.rebroadcasts < 4 || !self.rebroadcasts.is_power_of_two() {
            return;
        }
        let from = Round(self.round.0.saturating_sub(1));
        for round in from.0..=self.round.0 {
            let Some(votes) = self.votes.round(Round(round)) else { continue };
            let others = [&votes.prevotes, &votes.precommits]
                .into_iter()
                .flat_map(|set| set.all())
                .filter(|v| v.validator != self.account);
            for vote in others {
                out.push(Action::Broadcast(Message::Vote(*vote)));
            }
        }
    }

    fn on_commit_received(
        &mut self,
        block: V,
        certificate: CommitCertificate,
        out: &mut Vec<Action<V>>,
    ) {
        if self.phase != Phase::Rounds
            || certificate.height != self.height
            || !self.acceptable(&block)
        {
            return;
        }
        let checked: Result<(), CertificateError> = certificate.verify(
            &self.verifier,
            &self.chain_id,
            self.height,
            &block.id(),
            &self.validators,
        );
        if checked.is_ok() {
            self.decided_from_certificate = true;
            self.decide(block, certificate, out);
        }
    }

    fn decide(&mut self, block: V, certificate: CommitCertificate, out: &mut Vec<Action<V>>) {
        self.phase = Phase::Decided;
        out.push(Action::Commit { block, certificate });
    }

    // ----- the upon-rules of Algorithm 1 -----

    /// Applies the rules until none fires.
    fn progress(&mut self, out: &mut Vec<Action<V>>) -> Result<(), EngineError> {
        while self.phase == Phase::Rounds && self.apply_one_rule(out)? {}
        Ok(())
    }

    fn verdict(&self, block: &Hash) -> Verdict {
        self.blocks.get(block).map_or(Verdict::Pending, |b| b.verdict)
    }

    /// Fires the first rule whose condition holds; `true` if one changed the state.
    fn apply_one_rule(&mut self, out: &mut Vec<Action<V>>) -> Result<bool, EngineError> {
        let h = self.height;
        let r = self.round;

        // Line 49: a quorum of precommits in any round for a valid block we hold: decide. (The
        // algorithm asks for the round's proposal only to hold the block; a held body matched
        // its id, so it is that block whichever proposal brought it.)
        let decision = self.votes.rounds().find_map(|round| {
            let (id, body) = self.blocks.iter().find(|(id, body)| {
                body.verdict == Verdict::Valid
                    && self.quorum(self.votes.power_for(round, VoteKind::Precommit, Some(**id)))
            })?;
            debug_assert_eq!(body.value.id(), *id);
            Some((round, body.value.clone()))
        });
        if let Some((round, block)) = decision {
            let id = block.id();
            let votes = self.votes.round(round).expect("a quorum was counted in this round");
            let certificate =
                CommitCertificate::from_precommits(votes.precommits.votes_for(Some(id)))
                    .expect("a quorum of precommits is not empty");
            self.decide(block, certificate, out);
            return Ok(true);
        }

        // Line 55: more than a third of the power is in a later round: join it.
        let skip = self.skip_round();
        if skip > r {
            self.start_round(skip, out)?;
            return Ok(true);
        }

        // Lines 22 and 28: the round's proposal, while in the propose step.
        if self.step == Step::Propose
            && let Some(proposal) = self.proposals.get(&r).and_then(|k| k.first())
        {
            let p = proposal.proposal;
            let id = p.block;
            let locked_ok = |bar: Option<Round>| {
                self.ignores_lock()
                    || match self.locked {
                        None => true,
                        Some((lr, locked)) => locked == id || bar.is_some_and(|vr| lr <= vr),
                    }
            };
            let verdict = self.verdict(&id);
            match p.valid_round {
                None if verdict != Verdict::Pending => {
                    let yes = verdict == Verdict::Valid && locked_ok(None);
                    self.prevote(yes.then_some(id), out)?;
                    return Ok(true);
                }
                Some(vr)
                    if verdict != Verdict::Pending
                        && (self.trusts_valid_round()
                            || self.quorum(self.votes.power_for(
                                vr,
                                VoteKind::Prevote,
                                Some(id),
                            ))) =>
                {
                    let yes = verdict == Verdict::Valid && locked_ok(Some(vr));
                    self.prevote(yes.then_some(id), out)?;
                    return Ok(true);
                }
                _ => {}
            }
        }

        // Line 34: a quorum of any prevotes: arm the prevote timeout.
        if self.step == Step::Prevote
            && self.quorum(self.votes.power_any(r, VoteKind::Prevote))
            && self.fired.insert((r, Once::PrevoteTimeout))
        {
            self.schedule(TimeoutKind::Prevote, out);
        }

        // Line 36: the round's proposal with a quorum of prevotes: lock (if still prevoting) and
        // remember it as the valid value.
        if self.step >= Step::Prevote && !self.fired.contains(&(r, Once::LockOrValid)) {
            let found = self.proposals.get(&r).and_then(|kept| {
                kept.iter().find_map(|p| {
                    let id = p.proposal.block;
                    let body = self.blocks.get(&id)?;
                    (body.verdict == Verdict::Valid
                        && self.quorum(self.votes.power_for(r, VoteKind::Prevote, Some(id))))
                    .then(|| body.value.clone())
                })
            });
            if let Some(block) = found {
                self.fired.insert((r, Once::LockOrValid));
                // The valid value (with its proof) is logged before the lock: a crash between
                // the two records must never leave a lock without a valid value of its round,
                // or the restarted validator would hold a lock it can never propose again.
                let proof: Vec<SignedVote> = self
                    .votes
                    .round(r)
                    .map(|v| v.prevotes.votes_for(Some(block.id())).copied().collect())
                    .unwrap_or_default();
                self.wal.append(&WalEntry::ValidValue {
                    height: h,
                    round: r,
                    block: block.clone(),
                    proof,
                })?;
                self.valid = Some((r, block.id()));
                if self.step == Step::Prevote {
                    self.wal.append(&WalEntry::Locked {
                        height: h,
                        round: r,
                        block: block.clone(),
                    })?;
                    self.locked = Some((r, block.id()));
                    self.precommit(Some(block.id()), out)?;
                }
                return Ok(true);
            }
        }

        // Line 44: a quorum of nil prevotes: precommit nil.
        if self.step == Step::Prevote
            && self.quorum(self.votes.power_for(r, VoteKind::Prevote, None))
        {
            self.precommit(None, out)?;
            return Ok(true);
        }

        // Line 47: a quorum of any precommits: arm the precommit timeout.
        if self.quorum(self.votes.power_any(r, VoteKind::Precommit))
            && self.fired.insert((r, Once::PrecommitTimeout))
        {
            self.schedule(TimeoutKind::Precommit, out);
        }
        Ok(false)
    }

    /// The highest round `r` such that validators whose latest message is from round `r` or
    /// later hold more than a third of the power (at least one of them is honest).
    fn skip_round(&self) -> Round {
        let later = self.highest_round.iter().filter(|(_, r)| **r > self.round);
        self.validators.vouched_max(later.map(|(a, r)| (a, *r))).unwrap_or(self.round)
    }
}
