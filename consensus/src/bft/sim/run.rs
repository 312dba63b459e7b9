//! One simulation run: set-up from the seed, the event loop and the invariant checks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::block::Block;
use crate::crypto::Keypair;
use crate::types::{AccountId, Hash, Height, Round};
use crate::validators::{ValidatorInfo, ValidatorSet, is_quorum};
use crate::vote::{CommitCertificate, SignedVote, Vote, VoteKind};

use super::super::config::EngineConfig;
use super::super::engine::{Action, Engine, Event, Mutant, ROUNDS_AHEAD_MAX};
use super::super::proposer::proposer;
use super::super::types::{Message, Proposal, SignedProposal};
use super::super::wal::{FileWal, MemoryWal, Wal, WalError};
use super::LIVENESS_BOUND_MS;
use super::app::{App, CHAIN_ID, Link};
use super::network::{Item, Partition, Queue, Topology};
use super::wal::{SimWal, WalDir};

/// Most events one run may process before it counts as stuck.
const STEPS_MAX: u64 = 20_000_000;

/// The largest block a simulated engine takes: small, so the byte bounds bite.
const VALUE_BYTES_MAX: u64 = super::super::config::VALUE_BYTES_MIN;

/// Copies of each next-height proposal a flooding validator sends per flood.
const FLOOD_COPIES: usize = 16;

/// Transactions in a flooder's bulky next-height block (about 2 KiB).
const FLOOD_BLOCK_TXS: usize = 16;

/// How a validator behaves. Every kind but `Honest` is Byzantine; the Byzantine ones together
/// hold less than a third of the stake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Follows the protocol.
    Honest,
    /// Votes for whatever is proposed, proposes fresh blocks over its lock, and tells different
    /// validators different votes and proposals.
    Equivocate,
    /// Builds blocks the ledger refuses, calls every block valid, and votes for other blocks.
    InvalidVotes,
    /// Sends nothing.
    Withhold,
    /// Never proposes.
    SilentProposer,
    /// Sends its proposal's header with a junk body (its later-round proposal of the same block,
    /// with the genuine body, first), and relays others' proposals with junk bodies.
    BodySwap,
    /// Answers sync with junk bodies under valid certificates and with tampered certificates,
    /// and gossips its committed blocks with junk bodies.
    LyingSyncer,
    /// Floods far-future heights and rounds, and copies of next-height messages.
    Flood,
    /// Proposes for rounds that are not its own, and re-proposes with forged proofs of prevotes.
    Forger,
}

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
    /// Byzantine validators under a third of the stake, with behaviours drawn from `adversaries`.
    pub byzantine: bool,
    /// One validator cut off for long, which then catches up from commit certificates.
    pub lagging: bool,
    /// Crash often right after a precommit and restart quickly (with `crashes`).
    pub frequent_crashes: bool,
    /// The Byzantine validators are equivocators holding as much stake as allowed, all telling
    /// the same validators the same lies (with `byzantine`).
    pub coalition: bool,
    /// The behaviours Byzantine validators draw from (the first one always equivocates, unless
    /// the list has no `Equivocate`).
    pub adversaries: &'static [Behavior],
    /// Logs are real files: crashes also tear a log write, and restarts sometimes find the file
    /// corrupted in its middle.
    pub file_wal: bool,
    /// A Byzantine validator is slashed: its power halves two heights after the slash.
    pub slashes: bool,
}

const CLASSIC: &[Behavior] =
    &[Behavior::Equivocate, Behavior::InvalidVotes, Behavior::Withhold, Behavior::SilentProposer];
const SWAPPERS: &[Behavior] = &[Behavior::BodySwap, Behavior::LyingSyncer];
const FLOODERS: &[Behavior] = &[Behavior::Flood, Behavior::Forger];
const EVERY: &[Behavior] = &[
    Behavior::Equivocate,
    Behavior::InvalidVotes,
    Behavior::Withhold,
    Behavior::SilentProposer,
    Behavior::BodySwap,
    Behavior::LyingSyncer,
    Behavior::Flood,
    Behavior::Forger,
];

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
            adversaries: CLASSIC,
            file_wal: false,
            slashes: false,
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

/// Every network and node fault, with the classic adversaries, logs in memory and no slashes.
const CHAOS: FaultMix = FaultMix {
    drops: true,
    duplicates: true,
    long_delays: true,
    partitions: true,
    crashes: true,
    byzantine: true,
    lagging: true,
    ..FaultMix::none("chaos")
};

/// Every fault mix, in the order `--seeds` cycles through them.
pub const MIXES: &[FaultMix] = &[
    FaultMix::none("calm"),
    FaultMix { drops: true, duplicates: true, long_delays: true, ..FaultMix::none("lossy") },
    FaultMix { partitions: true, duplicates: true, ..FaultMix::none("partition") },
    FaultMix { crashes: true, ..FaultMix::none("crash") },
    FaultMix { byzantine: true, duplicates: true, ..FaultMix::none("byzantine") },
    FaultMix { lagging: true, drops: true, ..FaultMix::none("lagging") },
    CHAOS,
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
    FaultMix {
        byzantine: true,
        duplicates: true,
        lagging: true,
        drops: true,
        adversaries: SWAPPERS,
        ..FaultMix::none("swap")
    },
    FaultMix {
        byzantine: true,
        duplicates: true,
        long_delays: true,
        drops: true,
        adversaries: FLOODERS,
        ..FaultMix::none("flood")
    },
    FaultMix {
        crashes: true,
        byzantine: true,
        file_wal: true,
        slashes: true,
        drops: true,
        ..FaultMix::none("disk")
    },
    // Chaos with every adversary, logs on disk and slashes.
    FaultMix { name: "mayhem", adversaries: EVERY, file_wal: true, slashes: true, ..CHAOS },
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
    /// The fewest and most validators a run draws from.
    pub validators: (usize, usize),
}

/// The default validator range.
const VALIDATORS_DEFAULT: (usize, usize) = (4, 10);

impl SimConfig {
    /// A run of `mix` with `seed`, correct engine, WAL on, 20 heights, 4 to 10 validators.
    pub fn new(seed: u64, mix: &'static FaultMix) -> SimConfig {
        SimConfig {
            seed,
            mix,
            mutant: None,
            wal_enabled: true,
            heights_target: 20,
            validators: VALIDATORS_DEFAULT,
        }
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
        if self.validators != VALIDATORS_DEFAULT {
            cmd.push_str(&format!(" --validators {}..{}", self.validators.0, self.validators.1));
        }
        cmd
    }
}

/// Every mutant with its command-line name.
const MUTANTS: &[(Mutant, &str)] = &[
    (Mutant::NoLocking, "no-locking"),
    (Mutant::ForgetLockOnRestart, "forget-lock"),
    (Mutant::QuorumFloor, "quorum-floor"),
    (Mutant::IgnoreValidRound, "ignore-valid-round"),
    (Mutant::NoBodyCheck, "no-body-check"),
    (Mutant::TrustAnyHeight, "trust-any-height"),
    (Mutant::UnboundedFuture, "unbounded-future"),
    (Mutant::AnyProposer, "any-proposer"),
    (Mutant::TrustValidRound, "trust-valid-round"),
    (Mutant::IgnoreWalCorruption, "ignore-wal-corruption"),
];

/// The command-line name of a mutant.
pub fn mutant_name(m: Mutant) -> &'static str {
    MUTANTS.iter().find(|(k, _)| *k == m).map_or("?", |(_, name)| name)
}

/// The mutant with a command-line name.
pub fn mutant_named(name: &str) -> Option<Mutant> {
    MUTANTS.iter().find(|(_, n)| *n == name).map(|(m, _)| *m)
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// Two honest validators committed different blocks at one height.
    ConflictingCommits,
    /// An honest validator committed a block its ledger refuses.
    InvalidCommit,
    /// An honest validator signed two conflicting votes.
    DoubleSign,
    /// An honest validator went too long without committing after the network healed.
    NoProgress,
    /// An honest validator prevoted for a block the round's proposer did not propose.
    ForeignPrevote,
    /// An honest validator prevoted against its lock without a quorum of prevotes for the block
    /// in a round at or after the lock.
    LockViolated,
    /// An honest validator asked for the commit of a height no honest validator committed, as
    /// vouched for by more than a third of the power.
    UntrustedSync,
    /// An honest validator held more of its peers' messages than its stated bound.
    MemoryBound,
    /// A write-ahead log corrupted in its middle was opened instead of refused.
    CorruptWalOpened,
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
    /// Swapped bodies, tampered certificates and far-future or foreign messages sent by
    /// Byzantine validators.
    pub attacks: u64,
    /// Corrupted logs the honest validators refused to open.
    pub refused_wals: u64,
    /// The most bytes of peer messages any honest engine held.
    pub peak_peer_bytes: usize,
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
}

type SimEngine = Engine<Block, SimWal>;

struct Node {
    key: Keypair,
    account: AccountId,
    behavior: Behavior,
    engine: Option<SimEngine>,
    /// The log while the validator is down (the memory kind; a file stays on disk).
    wal: Option<MemoryWal<Block>>,
    epoch: u32,
    chain: Vec<Link>,
    last_commit_ms: u64,
    nonce: u64,
    /// Committing a block from a peer: not gossiped again (as the node's driver does).
    catching_up: bool,
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
    corrupt_rate: f64,
    engine_config: EngineConfig,
    app: App,
    wal_dir: Option<WalDir>,
    nodes: Vec<Node>,
    committed: BTreeMap<Height, Hash>,
    proposed: BTreeMap<Height, Vec<Hash>>,
    coalition_blocks: BTreeSet<Hash>,
    signed: BTreeMap<(AccountId, Height, Round, VoteKind), SignedVote>,
    /// Every proposal anyone signed: (height, round, signer, block).
    proposals_signed: BTreeSet<(Height, Round, AccountId, Hash)>,
    /// Every prevote anyone signed for a block: (height, round, block) → signers.
    prevotes_signed: BTreeMap<(Height, Round, Hash), BTreeSet<AccountId>>,
    violation: Option<Violation>,
    steps: u64,
    evidence: u64,
    synced: u64,
    attacks: u64,
    refused_wals: u64,
    peak_peer_bytes: usize,
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
        attacks: sim.attacks,
        refused_wals: sim.refused_wals,
        peak_peer_bytes: sim.peak_peer_bytes,
        violation: sim.violation,
    }
}

impl Sim {
    fn new(config: SimConfig) -> Sim {
        let mix_tag = MIXES.iter().position(|m| m == config.mix).unwrap_or(0) as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (mix_tag << 56));
        let (min, max) = config.validators;
        let n = rng.random_range(min.max(1)..=max.max(min).max(1));
        // Small stakes half of the time: quorum arithmetic then decides on single units.
        let stake_max = if rng.random_bool(0.5) { 3 } else { 100 };
        let mut stakes: Vec<u64> = (0..n).map(|_| rng.random_range(1..=stake_max)).collect();
        if n > 1 && stakes.iter().all(|s| *s == stakes[0]) {
            stakes[0] += 1;
        }
        let mut nodes: Vec<Node> = stakes
            .iter()
            .map(|_| {
                let key = Keypair::from_seed(rng.random());
                Node {
                    account: key.account(),
                    key,
                    behavior: Behavior::Honest,
                    engine: None,
                    wal: None,
                    epoch: 0,
                    chain: Vec::new(),
                    last_commit_ms: 0,
                    nonce: 0,
                    catching_up: false,
                }
            })
            .collect();
        let accounts: Vec<AccountId> = nodes.iter().map(|n| n.account).collect();
        let set_with = |stakes: &[u64]| {
            ValidatorSet::new(
                accounts
                    .iter()
                    .zip(stakes)
                    .enumerate()
                    .map(|(i, (account, power))| ValidatorInfo {
                        account: *account,
                        power: *power,
                        name: format!("v{i}"),
                    })
                    .collect(),
            )
        };
        let mut app = App::new(set_with(&stakes));
        let total: u64 = stakes.iter().sum();
        let mix = config.mix;
        let mut byzantine = Vec::new();
        if mix.byzantine {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            // A coalition of equivocators as close to a third of the stake as allowed, or a
            // few validators with assorted faults.
            let want = if mix.coalition { n } else { rng.random_range(1..=(n / 3).max(1)) };
            let mut power = 0;
            for i in order.into_iter().take(want) {
                if 3 * (power + stakes[i]) < total {
                    let kinds = mix.adversaries;
                    // The first one always equivocates (when the mix has equivocators): the
                    // adversary the locks stop.
                    let first = power == 0 && kinds.contains(&Behavior::Equivocate);
                    nodes[i].behavior = if first || mix.coalition {
                        Behavior::Equivocate
                    } else {
                        kinds[rng.random_range(0..kinds.len())]
                    };
                    power += stakes[i];
                    byzantine.push(i);
                }
            }
        }
        if mix.slashes && !byzantine.is_empty() {
            let who = byzantine[rng.random_range(0..byzantine.len())];
            let mut slashed = stakes.clone();
            slashed[who] = (slashed[who] / 2).max(1);
            let at = rng.random_range(1..=8u64);
            app.slash(Height(at + 2), set_with(&slashed));
        }
        let engine_config = EngineConfig {
            timeout_propose_ms: rng.random_range(150..=400),
            timeout_prevote_ms: rng.random_range(80..=200),
            timeout_precommit_ms: rng.random_range(80..=200),
            timeout_delta_ms: rng.random_range(40..=120),
            block_interval_ms: rng.random_range(50..=300),
            value_bytes_max: VALUE_BYTES_MAX,
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
        let corrupt_rate = if mix.file_wal { rng.random_range(0.2..0.6) } else { 0.0 };
        let wal_dir = mix.file_wal.then(|| {
            WalDir::new(&format!("{}-{}-{:?}", mix.name, config.seed, config.mutant))
                .expect("a temporary directory for the simulated logs")
        });
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
            corrupt_rate,
            engine_config,
            app,
            wal_dir,
            nodes,
            committed: BTreeMap::new(),
            proposed: BTreeMap::new(),
            coalition_blocks: BTreeSet::new(),
            signed: BTreeMap::new(),
            proposals_signed: BTreeSet::new(),
            prevotes_signed: BTreeMap::new(),
            violation: None,
            steps: 0,
            evidence: 0,
            synced: 0,
            attacks: 0,
            refused_wals: 0,
            peak_peer_bytes: 0,
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

    fn is_honest(&self, i: usize) -> bool {
        self.nodes[i].behavior == Behavior::Honest
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
        for i in self.honest().collect::<Vec<_>>() {
            let node = &self.nodes[i];
            let since = node.last_commit_ms.max(self.heal_ms);
            if self.now_ms - since > LIVENESS_BOUND_MS {
                for (k, n) in self.nodes.iter().enumerate() {
                    eprintln!(
                        "DEBUG node {k} {:?} chain {} engine {:?}",
                        n.behavior,
                        n.chain.len(),
                        n.engine.as_ref().map(|e| (
                            e.height(),
                            e.round(),
                            e.step(),
                            e.height_shown(),
                            e.locked().map(|(r, b)| (r, b.hash())),
                            e.valid_value().map(|(r, _)| r)
                        ))
                    );
                }
                let state = match &node.engine {
                    None => "down".to_string(),
                    Some(e) => format!(
                        "at height {} round {} step {:?}, height shown {}",
                        e.height(),
                        e.round(),
                        e.step(),
                        e.height_shown()
                    ),
                };
                let longest = self.nodes.iter().map(|n| n.chain.len()).max().unwrap_or(0);
                let detail = format!(
                    "validator {i} committed nothing for {} ms after the network healed at {} ms \
                     (its chain has {} blocks, the longest {longest}; its engine is {state})",
                    self.now_ms - since,
                    self.heal_ms,
                    node.chain.len()
                );
                self.fail(ViolationKind::NoProgress, detail);
                return;
            }
        }
    }

    fn new_engine(&self, i: usize, wal: SimWal) -> SimEngine {
        let key = Keypair::from_seed(self.nodes[i].key.secret_bytes());
        let mut engine = Engine::new(self.engine_config, CHAIN_ID, key, wal, Default::default());
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

    /// The log validator `i` restarts with: its memory log, or its file, which a fault may have
    /// corrupted in the middle (then the validator must refuse it, and the operator restores the
    /// file from a copy).
    fn open_wal(&mut self, i: usize) -> SimWal {
        let Some(path) = self.wal_dir.as_ref().map(|d| d.file(i)) else {
            let wal = self.nodes[i].wal.take().unwrap_or_default();
            return SimWal::Memory(if self.config.wal_enabled {
                wal
            } else {
                MemoryWal::default()
            });
        };
        if !self.config.wal_enabled {
            let _ = std::fs::remove_file(&path);
        }
        let lenient = self.is_honest(i) && self.config.mutant == Some(Mutant::IgnoreWalCorruption);
        let open = |path: &std::path::Path| {
            if lenient { FileWal::open_ignoring_corruption(path) } else { FileWal::open(path) }
        };
        let bytes = std::fs::read(&path).unwrap_or_default();
        // A byte inside the first record's body, when a whole record follows it.
        let records = open(&path).map(|w| w.entries().map_or(0, |e| e.len())).unwrap_or(0);
        let faulty = self.now_ms < self.heal_ms;
        if faulty && records >= 2 && self.is_honest(i) && self.rng.random_bool(self.corrupt_rate) {
            let mut corrupt = std::fs::read(&path).expect("the log file");
            let at = 12 + self.rng.random_range(0..8);
            corrupt[at] ^= 1 << self.rng.random_range(0..8);
            std::fs::write(&path, &corrupt).expect("write the corrupted log");
            match open(&path) {
                Err(WalError::Corrupt { .. }) => self.refused_wals += 1,
                other => {
                    let detail = format!(
                        "validator {i} opened a log corrupted at byte {at}: {}",
                        match other {
                            Ok(wal) => format!("{} records", wal.entries().map_or(0, |e| e.len())),
                            Err(e) => e.to_string(),
                        }
                    );
                    self.fail(ViolationKind::CorruptWalOpened, detail);
                }
            }
            std::fs::write(&path, &bytes).expect("restore the log");
        }
        let wal = open(&path).expect("a simulated log opens");
        let tear_after = (self.config.mix.crashes && faulty && self.rng.random_bool(0.5))
            .then(|| self.rng.random_range(0..12));
        SimWal::File { wal, path, tear_after, tear_bytes: self.rng.random_range(1..=64) }
    }

    fn boot(&mut self, i: usize) {
        let wal = self.open_wal(i);
        let mut engine = self.new_engine(i, wal);
        let height = Height(self.nodes[i].chain.len() as u64 + 1);
        let validators = self.app.validators(height).clone();
        match engine.start(height, validators) {
            Ok(actions) => {
                self.nodes[i].engine = Some(engine);
                self.perform(i, actions);
            }
            Err(_) => {
                // The log failed (a torn write): the process died again; try later.
                self.nodes[i].engine = Some(engine);
                self.crash(i);
            }
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(engine) = self.nodes[i].engine.take() else {
            return;
        };
        if let SimWal::Memory(wal) = engine.into_wal() {
            self.nodes[i].wal = Some(wal);
        }
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
            Item::Deliver { to, message } => {
                if self.nodes[to].behavior == Behavior::BodySwap {
                    self.relay_swapped(to, &message);
                }
                self.feed(to, Event::MessageReceived(message));
            }
            Item::Timer { node, epoch, timeout } => {
                if self.nodes[node].epoch == epoch {
                    self.feed(node, Event::TimeoutFired(timeout));
                }
            }
            Item::CommitRequest { from, to, height } => {
                let Some(link) = self.nodes[to].chain.get(height.0 as usize - 1).cloned() else {
                    return;
                };
                if self.nodes[to].engine.is_some() {
                    let (block, certificate) = self.sync_answer(to, link);
                    self.transmit(to, from, Item::CommitReply { to: from, block, certificate });
                }
            }
            Item::CommitReply { to, block, certificate } => {
                let before = self.nodes[to].chain.len();
                self.nodes[to].catching_up = true;
                self.feed(to, Event::CommitReceived { block, certificate });
                self.nodes[to].catching_up = false;
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

    /// What validator `i` answers a sync request with: the truth, or a lie.
    fn sync_answer(&mut self, i: usize, link: Link) -> (Block, CommitCertificate) {
        if self.nodes[i].behavior != Behavior::LyingSyncer {
            return (link.block, link.certificate);
        }
        self.attacks += 1;
        let mut certificate = link.certificate;
        match self.rng.random_range(0..3) {
            // The right certificate over a junk body.
            0 => (self.app.junk_body(&link.block), certificate),
            // A certificate short of a quorum.
            1 => {
                certificate.signatures.truncate(certificate.signatures.len() / 2);
                (link.block, certificate)
            }
            // A certificate naming another block, over that block's header with a junk body.
            _ => {
                let mut block = self.app.junk_body(&link.block);
                block.header.time_ms += 1;
                certificate.block = block.hash();
                (block, certificate)
            }
        }
    }

    /// Sends an item over the simulated link `from → to`: partitions and (until the network
    /// heals) drops apply; it arrives after a random delay, sometimes twice.
    fn transmit(&mut self, from: usize, to: usize, item: Item) {
        if let Item::Deliver { message, .. } = &item {
            self.record(message);
        }
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

    /// Remembers every signed proposal and prevote sent, for the prevote invariants.
    fn record(&mut self, message: &Message<Block>) {
        match message {
            Message::Proposal { proposal, .. } => {
                let p = proposal.proposal;
                self.proposals_signed.insert((p.height, p.round, proposal.proposer, p.block));
            }
            Message::Vote(v) if v.vote.kind == VoteKind::Prevote => {
                if let Some(block) = v.vote.block {
                    self.prevotes_signed
                        .entry((v.vote.height, v.vote.round, block))
                        .or_default()
                        .insert(v.validator);
                }
            }
            Message::Vote(_) => {}
        }
    }

    /// Checks an honest validator's prevote: for a block the round's proposer proposed, and
    /// against its lock only with a quorum of prevotes for the block at or after the lock.
    fn check_prevote(&mut self, i: usize, vote: &SignedVote) {
        let v = vote.vote;
        let Some(block) = v.block else { return };
        let set = self.app.validators(v.height);
        let proposer = proposer(set, v.height, v.round).map(|p| p.account);
        let proposed = proposer
            .is_some_and(|p| self.proposals_signed.contains(&(v.height, v.round, p, block)));
        if !proposed {
            let detail = format!(
                "validator {i} prevoted {block} at height {} round {}, which the round's \
                 proposer did not propose",
                v.height, v.round
            );
            self.fail(ViolationKind::ForeignPrevote, detail);
            return;
        }
        // The lock, as the validator's own signed precommits show it (a precommit for a block
        // is a lock on it): engine-independent, so a validator that forgot its lock is caught.
        let me = self.nodes[i].account;
        let from = (me, v.height, Round(0), VoteKind::Prevote);
        let until = (me, v.height, v.round, VoteKind::Prevote);
        let lock = self.signed.range(from..until).rev().find_map(|(k, vote)| {
            (k.3 == VoteKind::Precommit).then_some(()).and(vote.vote.block).map(|b| (k.2, b))
        });
        let Some((locked_round, locked)) = lock else { return };
        if locked == block {
            return;
        }
        let total = set.total_power();
        let justified = (locked_round.0..v.round.0).any(|vr| {
            self.prevotes_signed.get(&(v.height, Round(vr), block)).is_some_and(|signers| {
                let power = signers
                    .iter()
                    .map(|a| set.power_of(a).unwrap_or(0))
                    .fold(0, u64::saturating_add);
                is_quorum(power, total)
            })
        });
        if !justified {
            let detail = format!(
                "validator {i} locked on {locked} in round {locked_round} prevoted {block} at \
                 height {} round {} with no quorum of prevotes for it since",
                v.height, v.round
            );
            self.fail(ViolationKind::LockViolated, detail);
        }
    }

    /// Sends a validator's message to every other validator, as its behavior dictates; `false`
    /// when the validator crashed right after a precommit.
    fn broadcast(&mut self, i: usize, message: Message<Block>) -> bool {
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
            if v.kind == VoteKind::Prevote && first_send {
                self.check_prevote(i, vote);
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
        match behavior {
            Behavior::BodySwap => self.swap_bodies(i, &message),
            Behavior::Flood => self.flood(i, &message),
            Behavior::Forger => self.forge(i, &message),
            _ => {}
        }
        let n = self.nodes.len();
        let alternative = self.alternative(i, &message);
        for j in (0..n).filter(|j| *j != i) {
            let chosen = match (behavior, &message) {
                (Behavior::Withhold, Message::Vote(_)) => continue,
                (
                    Behavior::SilentProposer | Behavior::Withhold | Behavior::Forger,
                    Message::Proposal { .. },
                ) => {
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

    /// A body swapper's own proposal: first the same block, genuine, as its proposal of a later
    /// round it also proposes in (so peers validate and cache the id), then the header with a
    /// junk body to half of the validators.
    fn swap_bodies(&mut self, i: usize, message: &Message<Block>) {
        let Message::Proposal { proposal, block } = message else { return };
        let p = proposal.proposal;
        let set = self.app.validators(p.height).clone();
        let me = self.nodes[i].account;
        let later = (p.round.0 + 1..=p.round.0 + ROUNDS_AHEAD_MAX)
            .find(|r| proposer(&set, p.height, Round(*r)).is_some_and(|v| v.account == me));
        let n = self.nodes.len();
        if let Some(r) = later {
            let early = Proposal { round: Round(r), valid_round: None, ..p };
            let signed = SignedProposal::sign(&self.nodes[i].key, CHAIN_ID, early);
            for j in (0..n).filter(|j| *j != i) {
                let message = Message::Proposal { proposal: signed, block: block.clone() };
                self.queue.push(self.now_ms, Item::Deliver { to: j, message: message.clone() });
                self.record(&message);
            }
        }
        let junk = self.app.junk_body(block);
        let victims: Vec<usize> = (0..n).filter(|j| *j != i).collect();
        for j in victims {
            if !self.rng.random_bool(0.5) {
                continue;
            }
            self.attacks += 1;
            let message = Message::Proposal { proposal: *proposal, block: junk.clone() };
            self.transmit(i, j, Item::Deliver { to: j, message });
        }
    }

    /// A body swapper relays others' genuine proposals with their signature and a junk body
    /// (not junk it was sent itself: two swappers would relay each other's junk forever).
    fn relay_swapped(&mut self, i: usize, message: &Message<Block>) {
        let Message::Proposal { proposal, block } = message else { return };
        if proposal.proposer == self.nodes[i].account
            || block.check_body().is_err()
            || !self.rng.random_bool(0.5)
        {
            return;
        }
        let junk = self.app.junk_body(block);
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            self.attacks += 1;
            let message = Message::Proposal { proposal: *proposal, block: junk.clone() };
            self.transmit(i, j, Item::Deliver { to: j, message });
        }
    }

    /// A flooder sends, with each message: a vote for a far-future height, one for a far round
    /// of this height, and copies of next-height proposals and votes.
    fn flood(&mut self, i: usize, message: &Message<Block>) {
        let worth = matches!(message, Message::Proposal { .. })
            || matches!(message, Message::Vote(v) if v.vote.kind == VoteKind::Precommit);
        if !worth || !self.rng.random_bool(0.5) {
            return;
        }
        let key = Keypair::from_seed(self.nodes[i].key.secret_bytes());
        let (height, round) = (message.height(), message.round());
        let vote = |height: Height, round: Round, kind| {
            let block = Some(Hash([0xF0; 32]));
            Message::Vote(SignedVote::sign(&key, CHAIN_ID, Vote { height, round, kind, block }))
        };
        let mut flood = vec![
            vote(Height(1 << 62), Round(0), VoteKind::Prevote),
            vote(height, Round(1 << 30), VoteKind::Precommit),
            vote(height.next(), Round(0), VoteKind::Prevote),
        ];
        // A bulky next-height block (its body does not match its header).
        let chain = &self.nodes[i].chain;
        let mut next = self.app.build(chain, self.nodes[i].account, self.nodes[i].nonce, false);
        next.header.height = height.next();
        let junk = self.app.junk_body(&next).txs;
        next.txs = junk.iter().cycle().take(FLOOD_BLOCK_TXS).cloned().collect();
        for r in [0, round.0.min(ROUNDS_AHEAD_MAX)] {
            let p = Proposal {
                height: height.next(),
                round: Round(r),
                block: next.hash(),
                valid_round: None,
            };
            let proposal = SignedProposal::sign(&key, CHAIN_ID, p);
            flood.push(Message::Proposal { proposal, block: next.clone() });
        }
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            for message in &flood {
                let copies =
                    if matches!(message, Message::Proposal { .. }) { FLOOD_COPIES } else { 2 };
                for _ in 0..copies {
                    self.attacks += 1;
                    self.transmit(i, j, Item::Deliver { to: j, message: message.clone() });
                }
            }
        }
    }

    /// A forger proposes, with each vote, a fresh block for the vote's round (whoever proposes
    /// it); as the round's proposer it re-proposes a fresh block with a forged valid round.
    fn forge(&mut self, i: usize, message: &Message<Block>) {
        let (height, round) = (message.height(), message.round());
        self.nodes[i].nonce += 1;
        let chain = &self.nodes[i].chain;
        if chain.len() as u64 + 1 != height.0 {
            return;
        }
        let block = self.app.build(chain, self.nodes[i].account, self.nodes[i].nonce, false);
        let valid_round = match message {
            Message::Proposal { .. } if round.0 > 0 => Some(Round(round.0 - 1)),
            _ => None,
        };
        let p = Proposal { height, round, block: block.hash(), valid_round };
        let proposal = SignedProposal::sign(&self.nodes[i].key, CHAIN_ID, p);
        let forged = Message::Proposal { proposal, block };
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            self.attacks += 1;
            self.transmit(i, j, Item::Deliver { to: j, message: forged.clone() });
        }
    }

    /// Whether an equivocator sends its real message (rather than the other one) to `j`: a
    /// precommit for a block goes to one victim only, so that it alone may commit while the
    /// others move on; any other message to a fixed half. The choice is stable within a round,
    /// so every retransmission tells each validator the same story.
    fn split_target(&self, message: &Message<Block>, j: usize) -> bool {
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
    fn alternative(&mut self, i: usize, message: &Message<Block>) -> Option<Message<Block>> {
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
        let key = Keypair::from_seed(self.nodes[i].key.secret_bytes());
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
                let mut other = block.clone();
                other.header.time_ms += node.nonce;
                let p = Proposal { block: other.hash(), ..proposal.proposal };
                let kept = self.proposed.entry(p.height).or_default();
                if kept.len() < 64 {
                    kept.push(p.block);
                }
                Some(Message::Proposal {
                    proposal: SignedProposal::sign(&key, CHAIN_ID, p),
                    block: other,
                })
            }
            Message::Proposal { .. } => None,
        }
    }

    fn feed(&mut self, i: usize, event: Event<Block>) {
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        match engine.handle(event) {
            Ok(actions) => self.perform(i, actions),
            Err(_) => self.crash(i),
        }
        self.check_memory(i);
    }

    fn check_memory(&mut self, i: usize) {
        if !self.is_honest(i) {
            return;
        }
        let Some(engine) = self.nodes[i].engine.as_ref() else { return };
        let held = engine.peer_memory().bytes();
        let bound = engine.peer_bytes_bound();
        self.peak_peer_bytes = self.peak_peer_bytes.max(held);
        if held > bound {
            let detail = format!(
                "validator {i} holds {held} bytes of peer messages, over its bound of {bound} \
                 ({:?})",
                engine.peer_memory()
            );
            self.fail(ViolationKind::MemoryBound, detail);
        }
    }

    fn perform(&mut self, i: usize, actions: Vec<Action<Block>>) {
        let mut todo: VecDeque<Action<Block>> = actions.into();
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
                    let poisoned = node.behavior == Behavior::InvalidVotes;
                    let block = self.app.build(&node.chain, node.account, node.nonce, poisoned);
                    Some(Event::BlockBuilt { height, round, block })
                }
                Action::ValidateBlock { height, block } => {
                    let valid = self.nodes[i].behavior == Behavior::InvalidVotes
                        || (self.nodes[i].chain.len() as u64 + 1 == height.0
                            && self.app.check(&self.nodes[i].chain, &block).is_ok());
                    Some(Event::BlockValidated { height, block: block.hash(), valid })
                }
                Action::Commit { block, certificate } => Some(self.commit(i, block, certificate)),
                Action::RequestCommit { height, vouched } => {
                    self.request_commit(i, height, vouched);
                    None
                }
                Action::EvidenceFound { a, b } => {
                    self.evidence(i, a, b);
                    None
                }
            };
            if let Some(event) = reply {
                let engine = self.nodes[i].engine.as_mut().expect("a running validator");
                match engine.handle(event) {
                    Ok(actions) => todo.extend(actions),
                    Err(_) => {
                        self.crash(i);
                        return;
                    }
                }
            }
        }
    }

    fn commit(&mut self, i: usize, block: Block, certificate: CommitCertificate) -> Event<Block> {
        let height = Height(self.nodes[i].chain.len() as u64 + 1);
        assert_eq!(certificate.height, height, "validator {i} committed out of order");
        let id = block.hash();
        if self.is_honest(i) {
            if let Err(reason) = self.app.check(&self.nodes[i].chain, &block) {
                self.fail(
                    ViolationKind::InvalidCommit,
                    format!("validator {i} decided block {id} at height {height}, which its ledger refuses: {reason}"),
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
        let before = self.nodes[i].chain.last().map_or(App::genesis_root(), |l| l.root);
        let root = App::root_after(before, &block);
        if !self.nodes[i].catching_up {
            // The blocks topic: a validator that decided gossips the block with its certificate
            // (a lying one, with a junk body under the genuine certificate).
            let gossiped = match self.nodes[i].behavior {
                Behavior::LyingSyncer => {
                    self.attacks += self.nodes.len() as u64 - 1;
                    self.app.junk_body(&block)
                }
                _ => block.clone(),
            };
            for j in (0..self.nodes.len()).filter(|j| *j != i) {
                let item = Item::CommitReply {
                    to: j,
                    block: gossiped.clone(),
                    certificate: certificate.clone(),
                };
                self.transmit(i, j, item);
            }
        }
        self.nodes[i].chain.push(Link { block, certificate, root });
        Event::BlockApplied { height, next_validators: self.app.validators(height.next()).clone() }
    }

    fn request_commit(&mut self, i: usize, height: Height, vouched: bool) {
        if vouched && self.is_honest(i) && !self.committed.contains_key(&height) {
            let detail = format!(
                "validator {i} asked for the commit of height {height}, which no honest validator committed"
            );
            self.fail(ViolationKind::UntrustedSync, detail);
            return;
        }
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
        if !self.is_honest(i) {
            return;
        }
        self.evidence += 1;
        if let Some(j) = self.nodes.iter().position(|n| n.account == a.validator)
            && self.is_honest(j)
        {
            self.fail(
                ViolationKind::DoubleSign,
                format!("validator {i} found evidence that honest validator {j} double-signed: {a:?} / {b:?}"),
            );
        }
    }
}
