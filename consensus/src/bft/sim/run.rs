//! One simulation run: set-up from the seed, the event loop and the invariant checks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crypto::Keypair;
use crate::types::{AccountId, Hash, Height, Round};
use crate::validators::{ValidatorInfo, ValidatorSet};
use crate::vote::{CommitCertificate, SignedVote, Vote, VoteKind};

use super::super::config::EngineConfig;
use super::super::engine::{Action, Engine, Event, Mutant};
use super::super::types::{Message, Proposal, SignedProposal, Value};
use super::super::wal::MemoryWal;
use super::network::{Item, Partition, Queue, Topology};
use super::{LIVENESS_BOUND_MS, SimBlock};

/// The chain id every simulated validator signs for.
const CHAIN_ID: &str = "crucible-sim";

/// Most events one run may process before it counts as stuck.
const STEPS_MAX: u64 = 5_000_000;

/// Which faults a run injects. Every run also delays (and so reorders) messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultMix {
    /// The mix's name, as given to `--mix`.
    pub name: &'static str,
    /// Drop up to a third of the messages until the network heals.
    pub drops: bool,
    /// Deliver some messages twice.
    pub duplicates: bool,
    /// Delays longer than the timeouts until the network heals.
    pub long_delays: bool,
    /// Partitions that heal.
    pub partitions: bool,
    /// Crashes (at random and right after a precommit) with restarts from the log.
    pub crashes: bool,
    /// Byzantine validators under a third of the stake.
    pub byzantine: bool,
    /// One validator cut off for long, which then catches up from commit certificates.
    pub lagging: bool,
    /// Crash often right after a precommit and restart quickly (with `crashes`).
    pub frequent_crashes: bool,
    /// The Byzantine validators are equivocators holding as much stake as allowed, all telling
    /// the same validators the same lies (with `byzantine`).
    pub coalition: bool,
}

impl FaultMix {
    const fn none(name: &'static str) -> FaultMix {
        FaultMix {
            name,
            drops: false,
            duplicates: false,
            long_delays: false,
            partitions: false,
            crashes: false,
            byzantine: false,
            lagging: false,
            frequent_crashes: false,
            coalition: false,
        }
    }

    /// The mix with this name.
    pub fn named(name: &str) -> Option<&'static FaultMix> {
        MIXES.iter().find(|m| m.name == name)
    }

    fn any_fault(&self) -> bool {
        self.drops || self.long_delays || self.partitions || self.crashes || self.lagging
    }
}

/// Every fault mix, in the order `--seeds` cycles through them.
pub const MIXES: &[FaultMix] = &[
    FaultMix::none("calm"),
    FaultMix { drops: true, duplicates: true, long_delays: true, ..FaultMix::none("lossy") },
    FaultMix { partitions: true, duplicates: true, ..FaultMix::none("partition") },
    FaultMix { crashes: true, ..FaultMix::none("crash") },
    FaultMix { byzantine: true, duplicates: true, ..FaultMix::none("byzantine") },
    FaultMix { lagging: true, drops: true, ..FaultMix::none("lagging") },
    FaultMix {
        name: "chaos",
        drops: true,
        duplicates: true,
        long_delays: true,
        partitions: true,
        crashes: true,
        byzantine: true,
        lagging: true,
        frequent_crashes: false,
        coalition: false,
    },
    FaultMix {
        byzantine: true,
        coalition: true,
        drops: true,
        long_delays: true,
        ..FaultMix::none("split")
    },
    FaultMix {
        crashes: true,
        frequent_crashes: true,
        byzantine: true,
        coalition: true,
        drops: true,
        long_delays: true,
        ..FaultMix::none("amnesia")
    },
];

/// Everything that determines a run.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// The faults injected.
    pub mix: &'static FaultMix,
    /// A deliberately broken engine for the honest validators, to show the checks catch it.
    pub mutant: Option<Mutant>,
    /// Whether a restarted validator gets its write-ahead log back (off only to show why it is
    /// needed).
    pub wal_enabled: bool,
    /// Heights every honest validator must commit before the run ends.
    pub heights_target: u64,
}

impl SimConfig {
    /// A run of `mix` with `seed`, correct engine, WAL on, 20 heights.
    pub fn new(seed: u64, mix: &'static FaultMix) -> SimConfig {
        SimConfig { seed, mix, mutant: None, wal_enabled: true, heights_target: 20 }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p consensus --example simulate -- --mix {} --seed {}",
            self.mix.name, self.seed
        );
        if let Some(m) = self.mutant {
            cmd.push_str(&format!(" --mutant {}", mutant_name(m)));
        }
        if !self.wal_enabled {
            cmd.push_str(" --no-wal");
        }
        if self.heights_target != 20 {
            cmd.push_str(&format!(" --heights {}", self.heights_target));
        }
        cmd
    }
}

/// The command-line name of a mutant.
pub fn mutant_name(m: Mutant) -> &'static str {
    match m {
        Mutant::NoLocking => "no-locking",
        Mutant::ForgetLockOnRestart => "forget-lock",
        Mutant::QuorumFloor => "quorum-floor",
        Mutant::IgnoreValidRound => "ignore-valid-round",
    }
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// Two honest validators committed different blocks at one height.
    ConflictingCommits,
    /// An honest validator committed an invalid block.
    InvalidCommit,
    /// An honest validator signed two conflicting votes.
    DoubleSign,
    /// An honest validator went too long without committing after the network healed.
    NoProgress,
}

/// A broken invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// When, in simulated milliseconds.
    pub at_ms: u64,
    /// What exactly.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {} ms: {}", self.kind, self.at_ms, self.detail)
    }
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct SimOutcome {
    /// The run.
    pub config: SimConfig,
    /// Validators in the run.
    pub validators: usize,
    /// Heights committed by every honest validator.
    pub heights: u64,
    /// Events processed.
    pub steps: u64,
    /// Simulated time at the end, in milliseconds.
    pub time_ms: u64,
    /// Evidence of Byzantine equivocation found by honest engines.
    pub evidence: u64,
    /// Blocks committed through a certificate fetched from a peer.
    pub synced: u64,
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behavior {
    Honest,
    Equivocate,
    InvalidVotes,
    Withhold,
    SilentProposer,
}

type SimEngine = Engine<SimBlock, MemoryWal<SimBlock>>;

struct Node {
    key_seed: [u8; 32],
    account: AccountId,
    behavior: Behavior,
    engine: Option<SimEngine>,
    wal: MemoryWal<SimBlock>,
    epoch: u32,
    chain: Vec<(SimBlock, CommitCertificate)>,
    last_commit_ms: u64,
    nonce: u64,
}

struct Sim {
    config: SimConfig,
    rng: ChaCha8Rng,
    now_ms: u64,
    queue: Queue,
    topology: Topology,
    heal_ms: u64,
    delay_faulty_ms: u64,
    delay_healed_ms: u64,
    drop_rate: f64,
    duplicate_rate: f64,
    crash_after_precommit: f64,
    engine_config: EngineConfig,
    validators: ValidatorSet,
    nodes: Vec<Node>,
    committed: BTreeMap<Height, Hash>,
    proposed: BTreeMap<Height, Vec<Hash>>,
    coalition_blocks: BTreeSet<Hash>,
    signed: BTreeMap<(AccountId, Height, Round, VoteKind), SignedVote>,
    violation: Option<Violation>,
    steps: u64,
    evidence: u64,
    synced: u64,
}

/// Runs one simulation.
pub fn run(config: &SimConfig) -> SimOutcome {
    let mut sim = Sim::new(*config);
    sim.run();
    let heights = sim.honest().map(|i| sim.nodes[i].chain.len() as u64).min().unwrap_or(0);
    SimOutcome {
        config: *config,
        validators: sim.nodes.len(),
        heights,
        steps: sim.steps,
        time_ms: sim.now_ms,
        evidence: sim.evidence,
        synced: sim.synced,
        violation: sim.violation,
    }
}

impl Sim {
    fn new(config: SimConfig) -> Sim {
        let mix_tag = MIXES.iter().position(|m| m == config.mix).unwrap_or(0) as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (mix_tag << 56));
        let n = rng.random_range(4..=10usize);
        // Small stakes half of the time: quorum arithmetic then decides on single units.
        let stake_max = if rng.random_bool(0.5) { 3 } else { 100 };
        let mut stakes: Vec<u64> = (0..n).map(|_| rng.random_range(1..=stake_max)).collect();
        if stakes.iter().all(|s| *s == stakes[0]) {
            stakes[0] += 1;
        }
        let mut nodes: Vec<Node> = stakes
            .iter()
            .map(|_| {
                let key_seed: [u8; 32] = rng.random();
                Node {
                    key_seed,
                    account: Keypair::from_seed(key_seed).account(),
                    behavior: Behavior::Honest,
                    engine: None,
                    wal: MemoryWal::default(),
                    epoch: 0,
                    chain: Vec::new(),
                    last_commit_ms: 0,
                    nonce: 0,
                }
            })
            .collect();
        let validators = ValidatorSet::new(
            nodes
                .iter()
                .zip(&stakes)
                .enumerate()
                .map(|(i, (node, power))| ValidatorInfo {
                    account: node.account,
                    power: *power,
                    name: format!("v{i}"),
                })
                .collect(),
        );
        let total: u64 = stakes.iter().sum();
        let mix = config.mix;
        if mix.byzantine {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            // A coalition of equivocators as close to a third of the stake as allowed, or a
            // few validators with assorted faults.
            let want = if mix.coalition { n } else { rng.random_range(1..=n / 3) };
            let mut power = 0;
            for i in order.into_iter().take(want) {
                if 3 * (power + stakes[i]) < total {
                    // The first one always equivocates: the adversary the locks stop.
                    let kind = if power == 0 || mix.coalition { 0 } else { rng.random_range(0..4) };
                    power += stakes[i];
                    nodes[i].behavior = match kind {
                        0 => Behavior::Equivocate,
                        1 => Behavior::InvalidVotes,
                        2 => Behavior::Withhold,
                        _ => Behavior::SilentProposer,
                    };
                }
            }
        }
        let engine_config = EngineConfig {
            timeout_propose_ms: rng.random_range(150..=400),
            timeout_prevote_ms: rng.random_range(80..=200),
            timeout_precommit_ms: rng.random_range(80..=200),
            timeout_delta_ms: rng.random_range(40..=120),
            block_interval_ms: rng.random_range(50..=300),
        };
        let heal_ms = match (mix.any_fault(), mix.frequent_crashes) {
            (false, _) => 0,
            (true, false) => rng.random_range(3_000..=12_000),
            // Locks are only forgotten while crashes happen: keep them up for longer.
            (true, true) => rng.random_range(20_000..=30_000),
        };
        let delay_healed_ms = rng.random_range(5..=60);
        let delay_faulty_ms =
            if mix.long_delays { rng.random_range(100..=800) } else { delay_healed_ms };
        let drop_rate = if mix.drops { rng.random_range(0.05..=1.0 / 3.0) } else { 0.0 };
        let duplicate_rate = if mix.duplicates { rng.random_range(0.05..0.3) } else { 0.0 };
        let crash_after_precommit = match (mix.crashes, mix.frequent_crashes) {
            (false, _) => 0.0,
            (true, false) => rng.random_range(0.02..0.15),
            (true, true) => 1.0,
        };
        let mut sim = Sim {
            config,
            rng,
            now_ms: 0,
            queue: Queue::default(),
            topology: Topology::default(),
            heal_ms,
            delay_faulty_ms,
            delay_healed_ms,
            drop_rate,
            duplicate_rate,
            crash_after_precommit,
            engine_config,
            validators,
            nodes,
            committed: BTreeMap::new(),
            proposed: BTreeMap::new(),
            coalition_blocks: BTreeSet::new(),
            signed: BTreeMap::new(),
            violation: None,
            steps: 0,
            evidence: 0,
            synced: 0,
        };
        sim.plan_faults();
        sim
    }

    fn plan_faults(&mut self) {
        let n = self.nodes.len();
        let heal = self.heal_ms;
        if self.config.mix.partitions {
            for _ in 0..self.rng.random_range(1..=3) {
                let from_ms = self.rng.random_range(0..heal);
                let until_ms = (from_ms + self.rng.random_range(300..=4_000)).min(heal);
                let groups = self.rng.random_range(2..=3u8);
                let group = (0..n).map(|_| self.rng.random_range(0..groups)).collect();
                self.topology.partitions.push(Partition { from_ms, until_ms, group });
            }
        }
        if self.config.mix.lagging {
            let honest: Vec<usize> = self.honest().collect();
            let node = honest[self.rng.random_range(0..honest.len())];
            let from_ms = self.rng.random_range(0..heal / 3);
            let group = (0..n).map(|i| u8::from(i == node)).collect();
            self.topology.partitions.push(Partition { from_ms, until_ms: heal, group });
        }
        if self.config.mix.crashes {
            let honest: Vec<usize> = self.honest().collect();
            for _ in 0..self.rng.random_range(1..=4) {
                let node = honest[self.rng.random_range(0..honest.len())];
                let at = self.rng.random_range(0..heal);
                self.queue.push(at, Item::Crash { node });
            }
        }
    }

    fn honest(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].behavior == Behavior::Honest)
    }

    fn run(&mut self) {
        for i in 0..self.nodes.len() {
            self.boot(i);
        }
        while self.violation.is_none() {
            if self.done() {
                return;
            }
            let Some((at_ms, item)) = self.queue.pop() else {
                self.fail(ViolationKind::NoProgress, "nothing left to happen".into());
                return;
            };
            self.now_ms = at_ms;
            self.steps += 1;
            if self.steps > STEPS_MAX {
                self.fail(ViolationKind::NoProgress, format!("over {STEPS_MAX} steps"));
                return;
            }
            self.step(item);
            self.check_liveness();
        }
    }

    fn done(&self) -> bool {
        self.now_ms >= self.heal_ms
            && self.honest().all(|i| self.nodes[i].chain.len() as u64 >= self.config.heights_target)
    }

    fn fail(&mut self, kind: ViolationKind, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { kind, at_ms: self.now_ms, detail });
        }
    }

    fn check_liveness(&mut self) {
        if self.now_ms <= self.heal_ms {
            return;
        }
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.behavior != Behavior::Honest {
                continue;
            }
            let since = node.last_commit_ms.max(self.heal_ms);
            if self.now_ms - since > LIVENESS_BOUND_MS {
                let detail = format!(
                    "validator {i} committed nothing for {} ms after the network healed at {} ms \
                     (its chain has {} blocks)",
                    self.now_ms - since,
                    self.heal_ms,
                    node.chain.len()
                );
                self.fail(ViolationKind::NoProgress, detail);
                return;
            }
        }
    }

    fn new_engine(&self, i: usize, wal: MemoryWal<SimBlock>) -> SimEngine {
        let key = Keypair::from_seed(self.nodes[i].key_seed);
        let mut engine = Engine::new(self.engine_config, CHAIN_ID, key, wal);
        match (self.nodes[i].behavior, self.config.mutant) {
            (Behavior::Honest, Some(mutant)) => engine.add_mutant(mutant),
            (Behavior::Equivocate, _) => {
                // Votes for whatever is proposed and proposes fresh blocks: the adversary that
                // tries to get a second block committed over honest validators' locks.
                engine.add_mutant(Mutant::NoLocking);
                engine.add_mutant(Mutant::IgnoreValidRound);
            }
            _ => {}
        }
        engine
    }

    fn boot(&mut self, i: usize) {
        let wal = std::mem::take(&mut self.nodes[i].wal);
        let mut engine = self.new_engine(i, wal);
        let height = Height(self.nodes[i].chain.len() as u64 + 1);
        let actions = engine.start(height, self.validators.clone()).expect("memory WAL");
        self.nodes[i].engine = Some(engine);
        self.perform(i, actions);
    }

    fn crash(&mut self, i: usize) {
        let Some(engine) = self.nodes[i].engine.take() else {
            return;
        };
        let wal = engine.into_wal();
        self.nodes[i].wal = if self.config.wal_enabled { wal } else { MemoryWal::default() };
        self.nodes[i].epoch += 1;
        let downtime = if self.config.mix.frequent_crashes {
            self.rng.random_range(1..=60)
        } else {
            self.rng.random_range(50..=3_000)
        };
        let restart = (self.now_ms + downtime).min(self.heal_ms).max(self.now_ms + 1);
        self.queue.push(restart, Item::Restart { node: i });
    }

    fn step(&mut self, item: Item) {
        match item {
            Item::Deliver { to, message } => self.feed(to, Event::MessageReceived(message)),
            Item::Timer { node, epoch, timeout } => {
                if self.nodes[node].epoch == epoch {
                    self.feed(node, Event::TimeoutFired(timeout));
                }
            }
            Item::CommitRequest { from, to, height } => {
                let Some((block, certificate)) =
                    self.nodes[to].chain.get(height.0 as usize - 1).cloned()
                else {
                    return;
                };
                if self.nodes[to].engine.is_some() {
                    self.transmit(to, from, Item::CommitReply { to: from, block, certificate });
                }
            }
            Item::CommitReply { to, block, certificate } => {
                let before = self.nodes[to].chain.len();
                self.feed(to, Event::CommitReceived { block, certificate });
                if self.nodes[to].chain.len() > before {
                    self.synced += 1;
                }
            }
            Item::Crash { node } => self.crash(node),
            Item::Restart { node } => {
                if self.nodes[node].engine.is_none() {
                    self.boot(node);
                }
            }
        }
    }

    /// Sends an item over the simulated link `from → to`: partitions and (until the network
    /// heals) drops apply; it arrives after a random delay, sometimes twice.
    fn transmit(&mut self, from: usize, to: usize, item: Item) {
        if !self.topology.reachable(from, to, self.now_ms) {
            return;
        }
        let faulty = self.now_ms < self.heal_ms;
        if faulty && self.rng.random_bool(self.drop_rate) {
            return;
        }
        let delay_max = if faulty { self.delay_faulty_ms } else { self.delay_healed_ms };
        let at = self.now_ms + self.rng.random_range(1..=delay_max);
        if self.rng.random_bool(self.duplicate_rate) {
            let again = self.now_ms + self.rng.random_range(1..=delay_max);
            self.queue.push(again, item.clone());
        }
        self.queue.push(at, item);
    }

    /// Sends a validator's message to every other validator, as its behavior dictates; `false`
    /// when the validator crashed right after a precommit.
    fn broadcast(&mut self, i: usize, message: Message<SimBlock>) -> bool {
        let behavior = self.nodes[i].behavior;
        if let Message::Proposal { proposal, .. } = &message {
            let kept = self.proposed.entry(proposal.proposal.height).or_default();
            if kept.len() < 64 && !kept.contains(&proposal.proposal.block) {
                kept.push(proposal.proposal.block);
            }
        }
        let mut crash_after = false;
        if behavior == Behavior::Honest
            && let Message::Vote(vote) = &message
            && vote.validator == self.nodes[i].account
        {
            let v = vote.vote;
            let key = (vote.validator, v.height, v.round, v.kind);
            let first_send = !self.signed.contains_key(&key);
            match self.signed.get(&key) {
                Some(first) if first.conflicts_with(vote) => {
                    let detail = format!(
                        "honest validator {i} signed {:?} and {:?} at height {} round {} (evidence)",
                        first.vote.block, v.block, v.height, v.round
                    );
                    self.fail(ViolationKind::DoubleSign, detail);
                }
                Some(_) => {}
                None => {
                    self.signed.insert(key, *vote);
                }
            }
            if v.kind == VoteKind::Precommit
                && first_send
                && self.now_ms < self.heal_ms
                && (!self.config.mix.frequent_crashes
                    || (v.block.is_some() && !self.split_target(&message, i)))
                && self.rng.random_bool(self.crash_after_precommit)
            {
                // Frequent crashes hit every validator that just locked, after the precommit
                // left, except the one the equivocators lead to commit: the case where
                // forgetting the lock would let a second block through.
                if !self.config.mix.frequent_crashes && self.rng.random_bool(0.5) {
                    // Logged but never sent.
                    self.crash(i);
                    return false;
                }
                crash_after = true;
            }
        }
        let n = self.nodes.len();
        let alternative = self.alternative(i, &message);
        for j in (0..n).filter(|j| *j != i) {
            let chosen = match (behavior, &message) {
                (Behavior::Withhold, Message::Vote(_)) => continue,
                (Behavior::SilentProposer | Behavior::Withhold, Message::Proposal { .. }) => {
                    continue;
                }
                (Behavior::Equivocate, _) => match &alternative {
                    Some(alt) => {
                        if self.rng.random_bool(0.1) {
                            self.transmit(i, j, Item::Deliver { to: j, message: alt.clone() });
                        }
                        if self.split_target(&message, j) { message.clone() } else { alt.clone() }
                    }
                    None => message.clone(),
                },
                (Behavior::InvalidVotes, _) => {
                    alternative.clone().unwrap_or_else(|| message.clone())
                }
                _ => message.clone(),
            };
            self.transmit(i, j, Item::Deliver { to: j, message: chosen });
        }
        if crash_after {
            self.crash(i);
            return false;
        }
        true
    }

    /// Whether an equivocator sends its real message (rather than the other one) to `j`: a
    /// precommit for a block goes to one victim only, so that it alone may commit while the
    /// others move on; any other message to a fixed half. The choice is stable within a round,
    /// so every retransmission tells each validator the same story.
    fn split_target(&self, message: &Message<SimBlock>, j: usize) -> bool {
        let (height, round) = (message.height().0, u64::from(message.round().0));
        let mix = |x: u64| {
            // splitmix64's finalizer: a fixed, well-spread hash of the round and receiver.
            let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let key = mix(self.config.seed ^ mix(height ^ mix(round)));
        match message {
            Message::Vote(v) if v.vote.kind == VoteKind::Precommit && v.vote.block.is_some() => {
                let honest: Vec<usize> = self.honest().collect();
                honest.get((key % honest.len().max(1) as u64) as usize) == Some(&j)
            }
            _ => mix(key ^ j as u64) & 1 == 0,
        }
    }

    /// A Byzantine validator's other message: a conflicting vote or proposal (equivocation), or
    /// a vote for some other block of the height (invalid or unknown ones included).
    fn alternative(&mut self, i: usize, message: &Message<SimBlock>) -> Option<Message<SimBlock>> {
        let behavior = self.nodes[i].behavior;
        if !matches!(behavior, Behavior::Equivocate | Behavior::InvalidVotes) {
            return None;
        }
        if self.config.mix.coalition {
            // A coalition backs its own blocks with every vote and equivocates only on the
            // others': its fresh block may then win a later round over the honest locks.
            match message {
                Message::Proposal { proposal, .. } => {
                    self.coalition_blocks.insert(proposal.proposal.block);
                    return None;
                }
                Message::Vote(v)
                    if v.vote.block.is_some_and(|b| self.coalition_blocks.contains(&b)) =>
                {
                    return None;
                }
                Message::Vote(_) => {}
            }
        }
        let key = Keypair::from_seed(self.nodes[i].key_seed);
        match message {
            Message::Vote(vote) => {
                if behavior == Behavior::InvalidVotes && self.rng.random_bool(0.5) {
                    return None;
                }
                let others: Vec<Hash> = self
                    .proposed
                    .get(&vote.vote.height)
                    .map(|k| k.iter().copied().filter(|b| Some(*b) != vote.vote.block).collect())
                    .unwrap_or_default();
                let block = match self.rng.random_range(0..4) {
                    _ if behavior == Behavior::Equivocate && vote.vote.block.is_some() => None,
                    0 if vote.vote.block.is_some() => None,
                    1 => Some(Hash(self.rng.random())),
                    _ if !others.is_empty() => Some(others[self.rng.random_range(0..others.len())]),
                    _ => Some(Hash(self.rng.random())),
                };
                let vote = Vote { block, ..vote.vote };
                Some(Message::Vote(SignedVote::sign(&key, CHAIN_ID, vote)))
            }
            Message::Proposal { proposal, block } if behavior == Behavior::Equivocate => {
                let node = &mut self.nodes[i];
                node.nonce += 1;
                let block = SimBlock { nonce: node.nonce, ..block.clone() };
                let p = Proposal { block: block.id(), ..proposal.proposal };
                let kept = self.proposed.entry(p.height).or_default();
                if kept.len() < 64 {
                    kept.push(p.block);
                }
                Some(Message::Proposal { proposal: SignedProposal::sign(&key, CHAIN_ID, p), block })
            }
            Message::Proposal { .. } => None,
        }
    }

    fn feed(&mut self, i: usize, event: Event<SimBlock>) {
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let actions = engine.handle(event).expect("memory WAL");
        self.perform(i, actions);
    }

    fn perform(&mut self, i: usize, actions: Vec<Action<SimBlock>>) {
        let mut todo: VecDeque<Action<SimBlock>> = actions.into();
        while let Some(action) = todo.pop_front() {
            let epoch = self.nodes[i].epoch;
            let reply = match action {
                Action::Broadcast(message) => {
                    if !self.broadcast(i, message) {
                        return; // crashed
                    }
                    None
                }
                Action::ScheduleTimeout(timeout) => {
                    self.queue.push(
                        self.now_ms + timeout.duration_ms,
                        Item::Timer { node: i, epoch, timeout },
                    );
                    None
                }
                Action::BuildBlock { height, round } => {
                    let node = &mut self.nodes[i];
                    node.nonce += 1;
                    let block = SimBlock {
                        height,
                        round,
                        proposer: i as u16,
                        nonce: node.nonce,
                        valid: node.behavior != Behavior::InvalidVotes,
                    };
                    Some(Event::BlockBuilt { height, round, block })
                }
                Action::ValidateBlock { height, block } => {
                    let valid = self.nodes[i].behavior == Behavior::InvalidVotes
                        || (block.valid && block.height == height);
                    Some(Event::BlockValidated { height, block: block.id(), valid })
                }
                Action::Commit { block, certificate } => Some(self.commit(i, block, certificate)),
                Action::RequestCommit { height } => {
                    self.request_commit(i, height);
                    None
                }
                Action::EvidenceFound { a, b } => {
                    self.evidence(i, a, b);
                    None
                }
            };
            if let Some(event) = reply {
                let engine = self.nodes[i].engine.as_mut().expect("a running validator");
                todo.extend(engine.handle(event).expect("memory WAL"));
            }
        }
    }

    fn commit(
        &mut self,
        i: usize,
        block: SimBlock,
        certificate: CommitCertificate,
    ) -> Event<SimBlock> {
        let height = Height(self.nodes[i].chain.len() as u64 + 1);
        assert_eq!(certificate.height, height, "validator {i} committed out of order");
        if self.nodes[i].behavior == Behavior::Honest {
            let id = block.id();
            if !block.valid || block.height != height {
                self.fail(
                    ViolationKind::InvalidCommit,
                    format!("validator {i} committed invalid block {id:?} at height {height}"),
                );
            }
            match self.committed.get(&height) {
                Some(other) if *other != id => self.fail(
                    ViolationKind::ConflictingCommits,
                    format!(
                        "validator {i} committed {id:?} at height {height}, another honest \
                         validator committed {other:?}"
                    ),
                ),
                _ => {
                    self.committed.insert(height, id);
                }
            }
            self.nodes[i].last_commit_ms = self.now_ms;
        }
        self.nodes[i].chain.push((block, certificate));
        Event::BlockApplied { height, next_validators: self.validators.clone() }
    }

    fn request_commit(&mut self, i: usize, height: Height) {
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|j| *j != i && self.nodes[*j].chain.len() as u64 >= height.0)
            .collect();
        if holders.is_empty() {
            return;
        }
        let to = holders[self.rng.random_range(0..holders.len())];
        self.transmit(i, to, Item::CommitRequest { from: i, to, height });
    }

    fn evidence(&mut self, i: usize, a: SignedVote, b: SignedVote) {
        assert!(a.conflicts_with(&b), "engine reported votes that do not conflict");
        if self.nodes[i].behavior != Behavior::Honest {
            return;
        }
        self.evidence += 1;
        if let Some(j) = self.nodes.iter().position(|n| n.account == a.validator)
            && self.nodes[j].behavior == Behavior::Honest
        {
            self.fail(
                ViolationKind::DoubleSign,
                format!("validator {i} found evidence that honest validator {j} double-signed: {a:?} / {b:?}"),
            );
        }
    }
}
