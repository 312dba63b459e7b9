//! What a testnet is made of, derived from one seed: keys, genesis, the task, recipes, configs.
//!
//! Everything here is pure: the same [`Settings`] and data bytes give the same [`Plan`] (keys,
//! genesis hash, task files, recipes), and [`Plan::node_config`] renders the same config for the
//! same ports. Writing files and choosing free ports happen in [`crate::files`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use consensus::commitment::{HeldoutKey, Salt, heldout_commitment};
use consensus::crypto::Keypair;
use consensus::genesis::{Genesis, GenesisBalance, GenesisValidator, Params};
use consensus::hash::tagged_hash;
use consensus::task::{TaskKind, Windows};
use consensus::types::{AccountId, Amount};
use consensus::validators::VALIDATORS_MAX;
use node::roles::scorer::FETCH_TIMEOUT_MIN;
use node::runtime::config::{ConfigFile, OneOrMany};
use trainer::recipe::{
    Augment, Base, EarlyStopping, Filter, LmRecipe, ModelRecipe, Recipe, TrainRecipe,
};
use trainer::task::{DataKind, LmArchitecture, NewTask, TaskOptions};

/// Most trainers a testnet starts (also the task's and the chain's trainer limit).
pub const TRAINERS_MAX: usize = 64;
/// Target time between blocks, in milliseconds: fast, yet several times a loopback round trip
/// on a loaded 2-core machine.
pub const BLOCK_INTERVAL_MS: u64 = 250;

/// Most transactions in one block. A validator executes and stores a block between its prevote
/// and the next round's timeouts; with every node of a testnet sharing one host, a block much
/// larger than this misses them under load (measured before the store's write-back overlay:
/// 6,000-tx blocks took rounds of 1.5–2.8 s and committed fewer txs per second than 2,000-tx
/// ones), so the chain stays at its throughput ceiling by refusing the excess at admission rather
/// than by slowing every round. 4,000 rather than 3,000 lets the chain catch up after a slow
/// block: 5,000 tx/s offered for 60 s committed 4,952 a second with none refused, against 4,565
/// with 9,574 refused at 3,000.
pub const BLOCK_TXS_MAX: u32 = 4_000;
/// Time the commit window leaves trainers to fetch the data, train and commit, in milliseconds,
/// per kind of task (one digits model trains in about a second on one thread; a label-noise
/// filter trains five more).
pub const TRAIN_TIME_MS_CLASSIFICATION: u64 = 8_000;
/// As [`TRAIN_TIME_MS_CLASSIFICATION`], for the char LM (a small model, 300 steps take about
/// 10 s on one thread).
pub const TRAIN_TIME_MS_CHAR_LM: u64 = 30_000;
/// Time the score-commit window leaves validators to fetch and score every artifact, in ms
/// (scoring a digits task takes well under a second).
pub const SCORE_TIME_MS_CLASSIFICATION: u64 = 3_000;
/// As [`SCORE_TIME_MS_CLASSIFICATION`], for the char LM (every held-out character is predicted
/// once per model, on one thread: about 3 s for a tenth of Shakespeare on a busy 2-core machine).
pub const SCORE_TIME_MS_CHAR_LM: u64 = 12_000;
/// Most rounds: the demo task, then a follow-up that fine-tunes from its champion.
pub const ROUNDS_MAX: u32 = 2;
/// Share of the rows held out for the validators (classification).
pub const HELDOUT_FRACTION: f64 = 0.2;
/// Share of a text held out for the validators (its tail; char LM): a tenth of a book is plenty
/// and keeps scoring short.
pub const HELDOUT_FRACTION_TEXT: f64 = 0.1;
/// Label noise of the default task's public training part.
pub const LABEL_NOISE_DEFAULT: f64 = 0.3;
/// The task's escrow, in base units.
pub const REWARD: Amount = Amount(1_000_000);
/// Each validator's stake.
pub const VALIDATOR_STAKE: Amount = Amount(1_000);
/// Each node's genesis balance (pays entry fees, bonds and fees).
pub const NODE_BALANCE: Amount = Amount(1_000_000);
/// Smallest held-out set the testnet's chain accepts: small enough for the shipped data sets
/// (a fifth of iris's 150 rows, halved for two rounds), where a real chain asks for far more.
pub const HELDOUT_EXAMPLES_MIN: u64 = 15;
/// The task creator's genesis balance.
pub const CREATOR_BALANCE: Amount = Amount(10_000_000);
/// The chain's start time: fixed, so the genesis hash depends on the seed alone
/// (2026-01-01T00:00:00Z; blocks carry the wall-clock time, always later).
pub const GENESIS_TIME_MS: u64 = 1_767_225_600_000;
/// Lowest port of the seed-derived port range.
pub const PORT_BASE_MIN: u16 = 20_000;
/// Width of the seed-derived port range (the base falls in `[PORT_BASE_MIN, +PORT_SPAN)`).
pub const PORT_SPAN: u16 = 30_000;

/// The demo data set: handwritten digits, 8×8 pixels (see data/digits.PROVENANCE.md).
pub const DIGITS: &[u8] = include_bytes!("../../data/digits.csv");

/// The task a testnet runs.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSource {
    /// The data file's name (the task's name is its stem).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Classification or char LM.
    pub kind: DataKind,
    /// Share of public training labels flipped (classification only).
    pub label_noise: f64,
}

impl TaskSource {
    /// The default task: the digits with [`LABEL_NOISE_DEFAULT`] of the public labels flipped.
    pub fn digits() -> TaskSource {
        TaskSource {
            name: "digits.csv".into(),
            bytes: DIGITS.to_vec(),
            kind: DataKind::Classification,
            label_noise: LABEL_NOISE_DEFAULT,
        }
    }
}

/// What the testnet is asked to build, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Validators, 1 to [`VALIDATORS_MAX`].
    pub validators: usize,
    /// Trainers, 1 to [`TRAINERS_MAX`].
    pub trainers: usize,
    /// The seed every key, port, split and recipe derives from.
    pub seed: u64,
    /// Tasks run one after another, 1 to [`ROUNDS_MAX`]; the second fine-tunes from the first's
    /// champion.
    pub rounds: u32,
    /// The task's data.
    pub task: TaskSource,
}

impl Settings {
    /// Checks the counts and the task options.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=VALIDATORS_MAX).contains(&self.validators),
            "--validators must be 1 to {VALIDATORS_MAX}, got {}",
            self.validators
        );
        ensure!(
            (1..=TRAINERS_MAX).contains(&self.trainers),
            "--trainers must be 1 to {TRAINERS_MAX}, got {}",
            self.trainers
        );
        ensure!(
            (1..=ROUNDS_MAX).contains(&self.rounds),
            "--rounds must be 1 to {ROUNDS_MAX}, got {}",
            self.rounds
        );
        ensure!(
            (0.0..1.0).contains(&self.task.label_noise),
            "--label-noise must be in [0, 1), got {}",
            self.task.label_noise
        );
        if self.task.kind == DataKind::CharLm && self.task.label_noise > 0.0 {
            bail!("label noise applies to classification tasks only");
        }
        Ok(())
    }
}

/// A node's role in the testnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Votes on blocks and scores submissions.
    Validator,
    /// Trains a model with a recipe.
    Trainer,
}

impl Role {
    /// The name the node's `--role` flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Validator => "validator",
            Role::Trainer => "trainer",
        }
    }
}

/// A trainer's recipe with a short name for the leaderboard.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedRecipe {
    /// What the recipe does, e.g. `small-filtered`.
    pub label: String,
    /// The recipe.
    pub recipe: Recipe,
}

/// One node of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePlan {
    /// Its name: `validator-0`, `trainer-2`; also its folder, config and log names.
    pub name: String,
    /// Validator or trainer.
    pub role: Role,
    /// The seed of its key.
    pub key_seed: [u8; 32],
    /// Its recipe (trainers only).
    pub recipe: Option<NamedRecipe>,
    /// The round from which it runs (1: from the start; 2: the champion's fine-tuner, started
    /// once the first task has a champion).
    pub first_round: u32,
}

impl NodePlan {
    /// Its key.
    pub fn key(&self) -> Keypair {
        Keypair::from_seed(self.key_seed)
    }

    /// Its account.
    pub fn account(&self) -> AccountId {
        self.key().account()
    }
}

/// The two loopback ports of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePorts {
    /// libp2p TCP port.
    pub p2p: u16,
    /// HTTP API port.
    pub http: u16,
}

/// Where a node listens, as the node sees it, and where the launcher reaches its API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    /// Its libp2p TCP address (what its peers dial).
    pub p2p: SocketAddr,
    /// Its HTTP API address, in its own network namespace.
    pub http: SocketAddr,
    /// Where the launcher reaches that API: `http` itself on loopback, a forwarder in the root
    /// namespace with `--hosts`.
    pub api: SocketAddr,
    /// Whether it runs behind a NAT: no peer can dial `p2p` (its private address).
    pub behind_nat: bool,
}

impl NodeAddrs {
    /// A node on loopback at `ports`.
    pub fn loopback(ports: NodePorts) -> NodeAddrs {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        NodeAddrs {
            p2p: at(ports.p2p),
            http: at(ports.http),
            api: at(ports.http),
            behind_nat: false,
        }
    }

    /// Its libp2p listen multiaddr, `/ip4/…/tcp/…`.
    pub fn listen(&self) -> String {
        format!("/ip4/{}/tcp/{}", self.p2p.ip(), self.p2p.port())
    }

    /// Its libp2p multiaddr with its PeerId, `/ip4/…/tcp/…/p2p/12D3…`, as peers dial it.
    pub fn multiaddr(&self, node: &NodePlan) -> anyhow::Result<String> {
        let peer = node::keystore::peer_id(&node.key())
            .with_context(|| format!("peer id of {}", node.name))?;
        Ok(format!("{}/p2p/{peer}", self.listen()))
    }
}

/// Everything a testnet writes, derived from its settings.
#[derive(Debug)]
pub struct Plan {
    /// The settings it came from.
    pub settings: Settings,
    /// Every node: validators first, then trainers.
    pub nodes: Vec<NodePlan>,
    /// The seed of the task creator's key.
    pub creator_seed: [u8; 32],
    /// The genesis document.
    pub genesis: Genesis,
    /// One task per round: spec, public training part, held-out part and salt. Every round
    /// keeps the first task's public rows and gets its own, fresh part of the held-out rows
    /// (split up front), under its own salt; a later round's base model is set when the previous
    /// round's champion is known.
    pub tasks: Vec<NewTask>,
    /// The task's escrow.
    pub reward: Amount,
    /// The first port tried for the nodes' ports.
    pub port_base: u16,
    /// Trainers' private data files (`--scenario private-data`), written into the testnet
    /// directory; empty otherwise.
    pub private: Vec<crate::private::PrivateFile>,
}

/// 32 bytes derived from the seed and a label.
pub fn derive(seed: u64, label: &str) -> [u8; 32] {
    tagged_hash(b"crucible/testnet/v1", &[&seed.to_le_bytes(), label.as_bytes()]).0
}

/// A u64 derived from the seed and a label.
pub fn derive_u64(seed: u64, label: &str) -> u64 {
    let bytes = derive(seed, label);
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

impl Plan {
    /// Validates the settings and derives the whole plan from them.
    pub fn new(settings: Settings) -> anyhow::Result<Plan> {
        settings.validate()?;
        let seed = settings.seed;
        let task = make_task(&settings)?;
        let tasks: Vec<NewTask> = (1..=settings.rounds)
            .map(|round| round_task(&task, seed, round, settings.rounds))
            .collect();
        let mut nodes = Vec::with_capacity(settings.validators + settings.trainers);
        for i in 0..settings.validators {
            let name = format!("validator-{i}");
            nodes.push(NodePlan {
                key_seed: derive(seed, &format!("key/{name}")),
                name,
                role: Role::Validator,
                recipe: None,
                first_round: 1,
            });
        }
        let features = match task.spec.kind {
            TaskKind::Classification { features, .. } => features as usize,
            TaskKind::CharLm { .. } => 0,
        };
        for i in 0..settings.trainers {
            let name = format!("trainer-{i}");
            let recipe_seed = derive_u64(seed, &format!("recipe/{name}"));
            nodes.push(NodePlan {
                key_seed: derive(seed, &format!("key/{name}")),
                recipe: Some(demo_recipe(settings.task.kind, features, i, recipe_seed)),
                name,
                role: Role::Trainer,
                first_round: 1,
            });
        }
        if settings.rounds > 1 {
            let name = format!("trainer-{}", settings.trainers);
            let recipe_seed = derive_u64(seed, &format!("recipe/{name}"));
            nodes.push(NodePlan {
                key_seed: derive(seed, &format!("key/{name}")),
                recipe: Some(finetune_recipe(settings.task.kind, recipe_seed)),
                name,
                role: Role::Trainer,
                first_round: 2,
            });
        }
        let creator_seed = derive(seed, "key/creator");
        let genesis = make_genesis(&settings, &nodes, &creator_seed);
        genesis.validate().context("the planned genesis is invalid")?;
        for task in &tasks {
            task.spec.validate(settings.validators).context("the planned task spec is invalid")?;
            genesis
                .params
                .check_task(&task.spec, REWARD)
                .context("the planned task does not fit the chain's parameters")?;
        }
        let span = u64::from(PORT_SPAN);
        let port_base = PORT_BASE_MIN + (derive_u64(seed, "ports") % span) as u16;
        Ok(Plan {
            settings,
            nodes,
            creator_seed,
            genesis,
            tasks,
            reward: REWARD,
            port_base,
            private: Vec::new(),
        })
    }

    /// Fits the plan to links whose one-way delay reaches `one_way`: the chain's round timeouts
    /// ([`timeouts_for`]) and each task's score-commit window ([`score_commit_blocks_for`]),
    /// each changed only where it would be too short. The block interval stays (blocks simply
    /// take longer), and so do the other windows.
    pub fn with_link_delay(mut self, one_way: Duration) -> anyhow::Result<Plan> {
        let params = &mut self.genesis.params;
        let t = timeouts_for(one_way);
        params.timeout_propose_ms = params.timeout_propose_ms.max(t.propose_ms);
        params.timeout_prevote_ms = params.timeout_prevote_ms.max(t.vote_ms);
        params.timeout_precommit_ms = params.timeout_precommit_ms.max(t.vote_ms);
        params.timeout_delta_ms = params.timeout_delta_ms.max(t.delta_ms);
        self.genesis.validate().context("the genesis fitted to the link delay is invalid")?;
        let score_commit = score_commit_blocks_for(one_way);
        for task in &mut self.tasks {
            let windows = &mut task.spec.windows;
            windows.score_commit = windows.score_commit.max(score_commit);
            task.spec
                .validate(self.settings.validators)
                .context("the task fitted to the link delay is invalid")?;
            self.genesis.params.check_task(&task.spec, REWARD)?;
        }
        Ok(self)
    }

    /// The task creator's key.
    pub fn creator(&self) -> Keypair {
        Keypair::from_seed(self.creator_seed)
    }

    /// The validators' plans.
    pub fn validators(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().filter(|n| n.role == Role::Validator)
    }

    /// Node `index`'s config file (TOML, the node's config format) for a testnet in `dir` whose
    /// nodes listen at `addrs` (one entry per node, in node order). Every node bootstraps from
    /// every validator but itself that can be dialed; mDNS is off, so the bootstrap list and
    /// Kademlia are how nodes find each other. A validator behind a NAT runs with `behind_nat`
    /// (it serves no relay: nobody could dial its circuits); a trainer behind one learns it from
    /// AutoNAT.
    pub fn node_config(
        &self,
        index: usize,
        dir: &Path,
        addrs: &[NodeAddrs],
    ) -> anyhow::Result<String> {
        assert_eq!(addrs.len(), self.nodes.len(), "one address set per node");
        let node = &self.nodes[index];
        let mut bootstrap = Vec::new();
        for (i, other) in self.nodes.iter().enumerate() {
            if i != index && other.role == Role::Validator && !addrs[i].behind_nat {
                bootstrap.push(addrs[i].multiaddr(other)?);
            }
        }
        let config = ConfigFile {
            data_dir: Some(dir.join(&node.name)),
            genesis: Some(dir.join("genesis.json")),
            listen: Some(OneOrMany::One(addrs[index].listen())),
            bootstrap: Some(OneOrMany::Many(bootstrap)),
            http: Some(addrs[index].http.to_string()),
            recipe: node.recipe.as_ref().map(|_| dir.join(format!("{}.recipe.toml", node.name))),
            mdns: Some(false),
            behind_nat: (node.role == Role::Validator && addrs[index].behind_nat).then_some(true),
            ..ConfigFile::default()
        };
        toml::to_string(&config).context("rendering a node config")
    }
}

/// The least round timeouts for links of one-way delay `one_way`, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for a proposal.
    pub propose_ms: u64,
    /// After a quorum of prevotes, or of precommits, for different values.
    pub vote_ms: u64,
    /// Added per round.
    pub delta_ms: u64,
}

/// Round timeouts that let a round complete over links of one-way delay `one_way`. A proposal
/// reaches a validator one hop after the proposer's round starts, and the validators start a
/// round up to a hop apart (each commits when the last precommit reaches it), so the proposal
/// wait needs two hops; a TCP segment the link lost comes again after a retransmission timeout
/// of at least 200 ms plus a round trip (two hops). Waiting 8 hops + 400 ms for the proposal
/// covers one loss in each of the two hops, and each vote step (one hop of votes after the
/// quorum's first) gets 4 hops + 200 ms; each further round adds 2 hops + 100 ms. At 50 ms
/// (60 with jitter) the testnet's genesis timeouts (1,000, 500, 500, 250 ms) already cover this;
/// at 150 ms they grow.
pub fn timeouts_for(one_way: Duration) -> Timeouts {
    let hop = u64::try_from(one_way.as_millis()).unwrap_or(u64::MAX / 16);
    Timeouts { propose_ms: 8 * hop + 400, vote_ms: 4 * hop + 200, delta_ms: 2 * hop + 100 }
}

/// Round trips a validator's fetch of an artifact takes beyond its processing: a Kademlia
/// provider look-up (a few), dialing the provider (TCP, Noise and multiplexer handshakes) and the
/// transfer under TCP slow start (a few more).
pub const FETCH_ROUND_TRIPS: u64 = 15;

/// The least score-commit window, in blocks, for links of one-way delay `one_way`. A validator
/// gives each artifact fetch a third of the window's nominal length (block interval × blocks,
/// at least [`FETCH_TIMEOUT_MIN`]: [`node::roles::scorer::fetch_timeout`]) and scores an artifact it could not fetch
/// as unavailable, which forfeits the trainer's bond; so the window must leave a fetch its one
/// second plus [`FETCH_ROUND_TRIPS`] round trips. At 60 ms one way that is 34 blocks instead of
/// 12. The window still closes as soon as every validator has committed, so a longer one costs
/// time only when a fetch is slow.
pub fn score_commit_blocks_for(one_way: Duration) -> u64 {
    let hop = u64::try_from(one_way.as_millis()).unwrap_or(u64::MAX / 64);
    let least = u64::try_from(FETCH_TIMEOUT_MIN.as_millis()).expect("a second");
    let fetch_ms = least + 2 * FETCH_ROUND_TRIPS * hop;
    (3 * fetch_ms).div_ceil(BLOCK_INTERVAL_MS)
}

/// Round `round`'s task of `rounds`: the same public rows as `first`, and part `round` of its
/// held-out rows (so no round is scored on rows an earlier champion was selected on), under the
/// round's salt, sealed under the round's key ([`heldout_key`]); later rounds are named for
/// their round.
fn round_task(first: &NewTask, seed: u64, round: u32, rounds: u32) -> NewTask {
    let mut task = first.clone();
    if round > 1 {
        let salt = derive(seed, &format!("task/heldout-salt/{round}"));
        task.salt = Salt(consensus::types::Hash(salt));
        task.spec.name = format!("{}-round-{round}", first.spec.name);
    }
    let (part, examples) = heldout_part(&first.heldout, first.extension, round, rounds);
    task.heldout = part;
    task.sizes.1 = examples;
    task.spec.dataset.heldout_examples = examples as u64;
    task.spec.dataset.heldout_commitment = heldout_commitment(&task.salt, &task.heldout);
    let key = heldout_key(seed, round);
    task.sealed = trainer::sealed::seal(&key, &task.salt, &task.heldout);
    task.spec.dataset.heldout_cipher_sha256 = consensus::hash::sha256(&task.sealed);
    task.spec.dataset.key_commitment = key.commitment();
    task
}

/// The held-out key of round `round`, derived from the seed like every testnet secret (a real
/// creator draws it from the OS RNG: `node task new`). The testnet, acting as the creator,
/// reveals it once the round's commit deadline has passed.
pub fn heldout_key(seed: u64, round: u32) -> HeldoutKey {
    HeldoutKey(consensus::types::Hash(derive(seed, &format!("task/heldout-key/{round}"))))
}

/// Part `round` (1-based) of `rounds` of a held-out file, with its number of examples: for a CSV
/// the header and every `rounds`-th row from row `round - 1` (the held-out rows were drawn per
/// class, so interleaving keeps each part's class mix close to the whole); for text a contiguous
/// slice of the characters.
fn heldout_part(heldout: &[u8], extension: &str, round: u32, rounds: u32) -> (Vec<u8>, usize) {
    let text = std::str::from_utf8(heldout).expect("the planned held-out part is UTF-8");
    let (k, n) = (round as usize - 1, rounds as usize);
    if extension == "csv" {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let rows: Vec<&str> = lines.skip(k).step_by(n).collect();
        let mut out = String::from(header);
        out.push('\n');
        for row in &rows {
            out.push_str(row);
            out.push('\n');
        }
        (out.into_bytes(), rows.len())
    } else {
        let chars: Vec<char> = text.chars().collect();
        let len = chars.len() / n;
        let part: String = chars[k * len..(k + 1) * len].iter().collect();
        (part.into_bytes(), len)
    }
}

fn make_task(settings: &Settings) -> anyhow::Result<NewTask> {
    let source = &settings.task;
    let name = Path::new(&source.name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "task".into());
    let opts = TaskOptions {
        name,
        kind: source.kind,
        heldout_fraction: match source.kind {
            DataKind::Classification => HELDOUT_FRACTION,
            DataKind::CharLm => HELDOUT_FRACTION_TEXT,
        },
        label_noise: source.label_noise,
        seed: derive_u64(settings.seed, "task/split"),
        // Small enough that a few hundred steps train in the commit window on one thread.
        lm: LmArchitecture { context: 32, d_model: 32, layers: 1, heads: 2 },
    };
    let salt = Salt(consensus::types::Hash(derive(settings.seed, "task/heldout-salt/1")));
    let mut task = trainer::task::new_task(
        &source.bytes,
        &source.name,
        &opts,
        salt,
        &heldout_key(settings.seed, 1),
    )
    .with_context(|| format!("making a task from {}", source.name))?;
    task.spec.windows = windows(settings.validators, source.kind);
    // Every slot the chain allows, so the entry fee (filling every slot must cost the prize) is
    // a small part of the prize.
    task.spec.max_trainers = TRAINERS_MAX as u32;
    task.spec.entry_fee = task.spec.entry_fee_min(REWARD, Params::default().trainer_share_ppm);
    Ok(task)
}

/// Blocks needed to cover `ms` at the block interval, and always more than the validator count
/// (so several proposers get a turn in each window).
fn blocks_for(ms: u64, validators: usize) -> u64 {
    ms.div_ceil(BLOCK_INTERVAL_MS).max(validators as u64 + 2)
}

/// The task's windows: short where a transaction or two suffices, long where trainers train and
/// validators score.
fn windows(validators: usize, kind: DataKind) -> Windows {
    let (train_ms, score_ms) = match kind {
        DataKind::Classification => (TRAIN_TIME_MS_CLASSIFICATION, SCORE_TIME_MS_CLASSIFICATION),
        DataKind::CharLm => (TRAIN_TIME_MS_CHAR_LM, SCORE_TIME_MS_CHAR_LM),
    };
    Windows {
        join: blocks_for(0, validators),
        commit: blocks_for(train_ms, validators),
        // The creator (this testnet) reveals the key in the first block it can.
        key: blocks_for(0, validators) + 2,
        reveal: blocks_for(0, validators) + 2,
        score_commit: blocks_for(score_ms, validators),
        score_reveal: blocks_for(0, validators) + 2,
    }
}

fn make_genesis(settings: &Settings, nodes: &[NodePlan], creator_seed: &[u8; 32]) -> Genesis {
    let validators = nodes
        .iter()
        .filter(|n| n.role == Role::Validator)
        .map(|n| GenesisValidator {
            account: n.account(),
            stake: VALIDATOR_STAKE,
            name: n.name.clone(),
        })
        .collect();
    let mut balances: Vec<GenesisBalance> = nodes
        .iter()
        .map(|n| GenesisBalance { account: n.account(), amount: NODE_BALANCE })
        .collect();
    balances.push(GenesisBalance {
        account: Keypair::from_seed(*creator_seed).account(),
        amount: CREATOR_BALANCE,
    });
    let params = Params {
        block_interval_ms: BLOCK_INTERVAL_MS,
        max_block_txs: BLOCK_TXS_MAX,
        timeout_propose_ms: 1_000,
        timeout_prevote_ms: 500,
        timeout_precommit_ms: 500,
        timeout_delta_ms: 250,
        max_trainers_per_task: TRAINERS_MAX as u32,
        heldout_examples_min: HELDOUT_EXAMPLES_MIN,
        ..Params::default()
    };
    Genesis {
        chain_id: format!("testnet-{}", settings.seed),
        genesis_time_ms: GENESIS_TIME_MS,
        validators,
        balances,
        params,
        tasks: vec![],
    }
}

/// The demo recipe of trainer `index`: the three recipes in turn (more trainers repeat them with
/// other seeds), each making one data-centric choice visible on the same noisy data.
fn demo_recipe(kind: DataKind, features: usize, index: usize, seed: u64) -> NamedRecipe {
    let base = Recipe { seed, ..Recipe::default() };
    let (label, recipe) = match (kind, index % 3) {
        // A large model on every (noisy) row: memorizes the flipped labels.
        (DataKind::Classification, 0) => (
            "large-plain",
            Recipe { model: ModelRecipe { hidden: vec![512], dropout: 0.0 }, ..base },
        ),
        // A small model that drops rows its cross-validated peers disagree with, and stops
        // when its validation accuracy stops improving.
        (DataKind::Classification, 1) => (
            "small-filtered",
            Recipe {
                model: ModelRecipe { hidden: vec![32], dropout: 0.0 },
                filter: Some(Filter::default()),
                early_stopping: Some(EarlyStopping::default()),
                ..base
            },
        ),
        // A small model with noise augmentation (no pixel shifts: on 8×8 digits a one-pixel
        // shift moves a stroke too far and costs accuracy) and early stopping.
        (DataKind::Classification, _) => (
            "small-augmented",
            Recipe {
                model: ModelRecipe { hidden: vec![32], dropout: 0.0 },
                augment: Some(Augment { width: features.max(1), shift: 0, noise: 0.3 }),
                early_stopping: Some(EarlyStopping::default()),
                ..base
            },
        ),
        (DataKind::CharLm, 0) => (
            "lm-short",
            Recipe { lm: LmRecipe { steps: 150, eval_every: 50, ..LmRecipe::default() }, ..base },
        ),
        (DataKind::CharLm, 1) => (
            "lm-early-stopped",
            Recipe {
                lm: LmRecipe { steps: 300, eval_every: 50, ..LmRecipe::default() },
                early_stopping: Some(EarlyStopping { patience: 2 }),
                ..base
            },
        ),
        (DataKind::CharLm, _) => (
            "lm-dropout",
            Recipe {
                model: ModelRecipe { dropout: 0.1, ..ModelRecipe::default() },
                lm: LmRecipe { steps: 300, eval_every: 50, ..LmRecipe::default() },
                ..base
            },
        ),
    };
    let label = if index < 3 { label.to_owned() } else { format!("{label}-{}", index / 3 + 1) };
    NamedRecipe { label, recipe }
}

/// The second round's extra trainer: fine-tunes the first task's champion (the trainer replaces
/// `base.path` with the champion's artifact, fetched by hash; for an MLP the champion's hidden
/// sizes replace `model.hidden`), still filtering label noise.
fn finetune_recipe(kind: DataKind, seed: u64) -> NamedRecipe {
    let base = Some(Base { path: "champion.safetensors".into() });
    let recipe = match kind {
        DataKind::Classification => Recipe {
            seed,
            train: TrainRecipe { epochs: 30, lr: 5e-4, ..TrainRecipe::default() },
            filter: Some(Filter::default()),
            early_stopping: Some(EarlyStopping::default()),
            base,
            ..Recipe::default()
        },
        DataKind::CharLm => Recipe {
            seed,
            lm: LmRecipe { steps: 150, eval_every: 50, lr: 1e-3, ..LmRecipe::default() },
            base,
            ..Recipe::default()
        },
    };
    NamedRecipe { label: "champion-finetuned".into(), recipe }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> Settings {
        Settings { validators: 4, trainers: 3, seed, rounds: 1, task: TaskSource::digits() }
    }

    fn ports(n: usize) -> Vec<NodeAddrs> {
        (0..n as u16)
            .map(|i| NodeAddrs::loopback(NodePorts { p2p: 30_000 + 2 * i, http: 30_001 + 2 * i }))
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_plan_and_another_seed_another() {
        let a = Plan::new(settings(7)).unwrap();
        let b = Plan::new(settings(7)).unwrap();
        let c = Plan::new(settings(8)).unwrap();
        assert_eq!(a.genesis.hash(), b.genesis.hash());
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.creator().account(), b.creator().account());
        assert_eq!(a.tasks[0].spec, b.tasks[0].spec);
        assert_eq!(a.tasks[0].train, b.tasks[0].train);
        assert_eq!(a.port_base, b.port_base);
        let dir = Path::new("/tmp/testnet");
        for i in 0..a.nodes.len() {
            assert_eq!(
                a.node_config(i, dir, &ports(7)).unwrap(),
                b.node_config(i, dir, &ports(7)).unwrap()
            );
        }
        assert_ne!(a.genesis.hash(), c.genesis.hash());
        assert_ne!(a.nodes[0].account(), c.nodes[0].account());
        assert_ne!(
            a.tasks[0].spec.dataset.heldout_commitment,
            c.tasks[0].spec.dataset.heldout_commitment
        );
    }

    #[test]
    fn the_plan_is_valid_and_funds_every_node() {
        let plan = Plan::new(settings(1)).unwrap();
        plan.genesis.validate().unwrap();
        plan.tasks[0].spec.validate(plan.settings.validators).unwrap();
        assert_eq!(plan.genesis.validators.len(), 4);
        assert_eq!(plan.nodes.len(), 7);
        for node in &plan.nodes {
            assert!(
                plan.genesis.balances.iter().any(|b| b.account == node.account()),
                "{}",
                node.name
            );
            if let Some(r) = &node.recipe {
                r.recipe.validate().unwrap();
                let text = toml::to_string(&r.recipe).unwrap();
                assert_eq!(Recipe::from_toml(&text, "r.toml").unwrap(), r.recipe);
            }
        }
        let labels: Vec<_> =
            plan.nodes.iter().filter_map(|n| n.recipe.as_ref().map(|r| r.label.as_str())).collect();
        assert_eq!(labels, ["large-plain", "small-filtered", "small-augmented"]);
        assert!(plan.tasks[0].flipped > 0, "the default task publishes noisy labels");
        assert!(plan.reward.0 <= CREATOR_BALANCE.0);
        assert!((PORT_BASE_MIN..PORT_BASE_MIN + PORT_SPAN).contains(&plan.port_base));
    }

    #[test]
    fn configs_bootstrap_from_the_other_validators() {
        let plan = Plan::new(settings(3)).unwrap();
        let dir = Path::new("/tmp/tn");
        let config: toml::Table =
            toml::from_str(&plan.node_config(0, dir, &ports(7)).unwrap()).unwrap();
        assert_eq!(config["bootstrap"].as_array().unwrap().len(), 3);
        assert_eq!(config["http"].as_str(), Some("127.0.0.1:30001"));
        assert!(!config.contains_key("heldout") && !config.contains_key("recipe"));
        let trainer: toml::Table =
            toml::from_str(&plan.node_config(4, dir, &ports(7)).unwrap()).unwrap();
        assert_eq!(trainer["bootstrap"].as_array().unwrap().len(), 4);
        assert_eq!(trainer["recipe"].as_str(), Some("/tmp/tn/trainer-0.recipe.toml"));
        assert_eq!(trainer["mdns"].as_bool(), Some(false));
    }

    #[test]
    fn configs_use_each_nodes_own_address_and_never_bootstrap_from_a_nated_one() {
        let plan = Plan::new(settings(3)).unwrap();
        // Validator 3 (index 3) and trainer 2 (index 6) are behind NATs.
        let addrs: Vec<NodeAddrs> = (0..7u8)
            .map(|i| NodeAddrs {
                p2p: SocketAddr::from(([10, 77, 0, i + 1], 4001)),
                http: SocketAddr::from(([127, 0, 0, 1], 8080)),
                api: SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(i))),
                behind_nat: i == 3 || i == 6,
            })
            .collect();
        let config = |i| -> toml::Table {
            toml::from_str(&plan.node_config(i, Path::new("/tmp/tn"), &addrs).unwrap()).unwrap()
        };
        let trainer = config(4);
        assert_eq!(trainer["listen"].as_str(), Some("/ip4/10.77.0.5/tcp/4001"));
        assert_eq!(trainer["http"].as_str(), Some("127.0.0.1:8080"));
        let bootstrap: Vec<&str> =
            trainer["bootstrap"].as_array().unwrap().iter().map(|b| b.as_str().unwrap()).collect();
        let peer = node::keystore::peer_id(&plan.nodes[1].key()).unwrap();
        assert_eq!(bootstrap.len(), 3, "not the NATed validator");
        assert_eq!(bootstrap[1], format!("/ip4/10.77.0.2/tcp/4001/p2p/{peer}"));
        assert!(bootstrap[0].starts_with("/ip4/10.77.0.1/tcp/4001/p2p/12D3"));
        assert!(!trainer.contains_key("behind_nat"));

        // The NATed validator says so (no relay server); a NATed trainer leaves it to AutoNAT.
        assert_eq!(config(3)["behind_nat"].as_bool(), Some(true));
        assert_eq!(config(3)["bootstrap"].as_array().unwrap().len(), 3);
        assert!(!config(6).contains_key("behind_nat"));
    }

    #[test]
    fn timeouts_grow_with_the_link_delay_and_never_shrink() {
        let base = Plan::new(settings(2)).unwrap();
        let near = Plan::new(settings(2)).unwrap().with_link_delay(Duration::from_millis(60));
        assert_eq!(near.unwrap().genesis, base.genesis, "60 ms one way fits the default timeouts");
        let far = Plan::new(settings(2)).unwrap().with_link_delay(Duration::from_millis(160));
        let p = far.unwrap().genesis.params;
        assert_eq!(
            (p.timeout_propose_ms, p.timeout_prevote_ms, p.timeout_precommit_ms),
            (1_680, 840, 840)
        );
        assert_eq!(p.timeout_delta_ms, 420);
        assert_eq!(p.block_interval_ms, base.genesis.params.block_interval_ms);
    }

    #[test]
    fn the_score_window_leaves_a_fetch_its_round_trips() {
        let base = Plan::new(settings(2)).unwrap();
        let blocks = |plan: &Plan| plan.tasks[0].spec.windows.score_commit;
        assert_eq!(score_commit_blocks_for(Duration::ZERO), 12);
        let near = Plan::new(settings(2)).unwrap().with_link_delay(Duration::from_millis(60));
        let near = near.unwrap();
        assert_eq!(blocks(&near), 34, "3 × (1 s + 30 hops of 60 ms) at 250 ms a block");
        assert_eq!(blocks(&base), 12);
        let far = Plan::new(settings(2)).unwrap().with_link_delay(Duration::from_millis(160));
        assert_eq!(blocks(&far.unwrap()), 70);
        let w = (near.tasks[0].spec.windows, base.tasks[0].spec.windows);
        assert_eq!((w.0.join, w.0.commit, w.0.reveal), (w.1.join, w.1.commit, w.1.reveal));
    }

    #[test]
    fn a_second_round_gets_fresh_heldout_rows_under_a_new_salt() {
        let one = Plan::new(settings(4)).unwrap();
        let mut s = settings(4);
        s.rounds = 2;
        let plan = Plan::new(s).unwrap();
        let [first, second] = &plan.tasks[..] else { panic!("two tasks") };
        let rows = |t: &NewTask| -> Vec<String> {
            std::str::from_utf8(&t.heldout).unwrap().lines().skip(1).map(String::from).collect()
        };
        let (a, b) = (rows(first), rows(second));
        assert!(a.iter().all(|r| !b.contains(r)), "no held-out row is scored twice");
        assert_eq!(a.len() + b.len(), rows(&one.tasks[0]).len(), "the parts cover the held-out");
        assert_eq!(first.spec.dataset.heldout_examples, a.len() as u64);
        assert_eq!(second.spec.dataset.heldout_examples, b.len() as u64);
        assert_eq!(first.train, second.train);
        assert_ne!(first.salt, second.salt);
        assert_ne!(first.spec.dataset.heldout_commitment, second.spec.dataset.heldout_commitment);
        // Each round is sealed under its own key, and opens to its own rows.
        for (round, t) in [(1, first), (2, second)] {
            let d = &t.spec.dataset;
            let key = heldout_key(plan.settings.seed, round);
            assert_eq!(d.key_commitment, key.commitment());
            assert_eq!(d.heldout_cipher_sha256, consensus::hash::sha256(&t.sealed));
            let opened = trainer::sealed::open(&key, &t.sealed, &d.heldout_commitment).unwrap();
            assert_eq!(opened.bytes, t.heldout);
        }
        assert_ne!(first.spec.dataset.key_commitment, second.spec.dataset.key_commitment);
        let late: Vec<_> = plan.nodes.iter().filter(|n| n.first_round == 2).collect();
        assert_eq!(late.len(), 1);
        let recipe = late[0].recipe.as_ref().unwrap();
        assert_eq!(recipe.label, "champion-finetuned");
        assert!(recipe.recipe.base.is_some());
        plan.genesis.validate().unwrap();
        assert!(plan.genesis.balances.iter().any(|b| b.account == late[0].account()));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut s = settings(1);
        s.validators = 0;
        assert!(Plan::new(s).is_err());
        let mut s = settings(1);
        s.trainers = TRAINERS_MAX + 1;
        assert!(Plan::new(s).is_err());
        let mut s = settings(1);
        s.rounds = 3;
        assert!(Plan::new(s).is_err());
        let mut s = settings(1);
        s.task.kind = DataKind::CharLm;
        assert!(Plan::new(s).is_err(), "label noise on a char LM task");
    }
}
