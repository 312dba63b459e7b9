//! The engine alone: 4 validators in one process, no faults, messages delivered at once.
//!
//! Prints committed blocks per second of real time and the CPU time per block (the thread's
//! on-CPU time from `/proc/thread-self/schedstat` where Linux provides it, wall time otherwise).
//! Every vote is really signed (ed25519); signatures are not verified, as the node verifies
//! them once in gossip validation, outside the engine.
//!
//! `cargo bench -p consensus --bench engine [-- HEIGHTS]` (default 2000 heights).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use consensus::bft::sim::{App, CHAIN_ID, Link};
use consensus::bft::{Action, Engine, EngineConfig, Event, MemoryWal, Timeout};
use consensus::block::Block;
use consensus::crypto::Keypair;
use consensus::testing::validator_set;
use consensus::types::{AccountId, Height};
use consensus::validators::ValidatorSet;

type BenchEngine = Engine<Block, MemoryWal<Block>>;

fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

struct Cluster {
    engines: Vec<BenchEngine>,
    accounts: Vec<AccountId>,
    app: App,
    chains: Vec<Vec<Link>>,
    validators: ValidatorSet,
    inbox: VecDeque<(usize, Event<Block>)>,
    timers: BTreeMap<(u64, u64), (usize, Timeout)>,
    now_ms: u64,
    seq: u64,
    committed: Vec<u64>,
    nonce: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let keys: Vec<Keypair> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let validators = validator_set(keys.iter().map(Keypair::account).zip([10, 20, 30, 40]));
        let accounts = keys.iter().map(Keypair::account).collect();
        let engines = keys
            .into_iter()
            .map(|k| {
                Engine::new(
                    EngineConfig::default(),
                    CHAIN_ID,
                    k,
                    MemoryWal::default(),
                    Default::default(),
                )
            })
            .collect();
        Cluster {
            engines,
            accounts,
            app: App::new(validators.clone()),
            chains: vec![Vec::new(); 4],
            validators,
            inbox: VecDeque::new(),
            timers: BTreeMap::new(),
            now_ms: 0,
            seq: 0,
            committed: vec![0; 4],
            nonce: 0,
        }
    }

    fn perform(&mut self, i: usize, actions: Vec<Action<Block>>) {
        for action in actions {
            match action {
                Action::Broadcast(m) => {
                    for j in (0..self.engines.len()).filter(|j| *j != i) {
                        self.inbox.push_back((j, Event::MessageReceived(m.clone())));
                    }
                }
                Action::ScheduleTimeout(t) => {
                    self.seq += 1;
                    self.timers.insert((self.now_ms + t.duration_ms, self.seq), (i, t));
                }
                Action::BuildBlock { height, round } => {
                    self.nonce += 1;
                    let block =
                        self.app.build(&self.chains[i], self.accounts[i], self.nonce, false);
                    self.inbox.push_front((i, Event::BlockBuilt { height, round, block }));
                }
                Action::ValidateBlock { height, block } => {
                    let valid = block.header.height == height;
                    self.inbox.push_front((
                        i,
                        Event::BlockValidated { height, block: block.hash(), valid },
                    ));
                }
                Action::Commit { block, certificate } => {
                    let height = block.header.height;
                    self.committed[i] = height.0;
                    let before = self.chains[i].last().map_or(App::genesis_root(), |l| l.root);
                    let root = App::root_after(before, &block);
                    self.chains[i].push(Link { block, certificate, root });
                    let next_validators = self.validators.clone();
                    self.inbox.push_front((i, Event::BlockApplied { height, next_validators }));
                }
                Action::RequestCommit { .. } | Action::EvidenceFound { .. } => {}
            }
        }
    }

    fn run(&mut self, heights: u64) {
        for i in 0..self.engines.len() {
            let actions =
                self.engines[i].start(Height(1), self.validators.clone()).expect("memory WAL");
            self.perform(i, actions);
        }
        while self.committed.iter().any(|h| *h < heights) {
            let (i, event) = match self.inbox.pop_front() {
                Some(next) => next,
                None => {
                    let ((at, _), (i, t)) =
                        self.timers.pop_first().expect("a timer is always armed");
                    self.now_ms = at;
                    (i, Event::TimeoutFired(t))
                }
            };
            let actions = self.engines[i].handle(event).expect("memory WAL");
            self.perform(i, actions);
        }
    }
}

fn main() {
    let heights: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    let mut cluster = Cluster::new();
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    cluster.run(heights);
    let wall = wall.elapsed();
    let (cpu, cpu_source) = match (cpu, thread_cpu_time()) {
        (Some(a), Some(b)) => (b - a, "thread CPU time"),
        _ => (wall, "wall time"),
    };
    let per_block = cpu / heights as u32;
    println!(
        "engine: 4 validators, {heights} heights committed by all in {:.3} s wall, {:.3} s CPU",
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    println!(
        "committed blocks per second: {:.0}; CPU time per block ({cpu_source}, all 4 engines): {:.1} µs",
        heights as f64 / wall.as_secs_f64(),
        per_block.as_secs_f64() * 1e6
    );
    println!("simulated time per block: {} ms (the block interval)", cluster.now_ms / heights);
}
