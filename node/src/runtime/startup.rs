//! Starting a node: [`start`] opens the ledger (sled at `DATA_DIR/chain`) and the mempool,
//! starts the network, and builds the [`NodeContext`] every other runtime task shares and the
//! [`Driver`] that runs the node. A validator's engine logs to `DATA_DIR/wal`
//! ([`WAL_FILE`]).

use std::sync::{Arc, RwLock};

use consensus::bft::{Engine, EngineConfig, FileWal};
use consensus::chain::Ledger;
use consensus::crypto::{Keypair, Verifier};
use consensus::genesis::{Genesis, GenesisError, Params};
use consensus::storage::SledStore;
use tokio::sync::{broadcast, mpsc};

use super::config::NodeConfig;
use super::context::{Metrics, NodeContext, Role};
use super::driver::Driver;
use super::error::DriverError;
use crate::datadir::DataDir;
use crate::keystore;
use crate::mempool::{Mempool, MempoolLimits};
use crate::network::config::GOSSIP_ENVELOPE_BYTES;
use crate::network::{self, NetworkConfig};

/// The consensus write-ahead log's file name inside the data dir.
pub const WAL_FILE: &str = "wal";

/// Capacity of the local submissions channel.
pub const SUBMISSIONS_CAPACITY: usize = 256;

/// Capacity of the channel of transaction batches from the HTTP API.
pub const EXTERNAL_TXS_CAPACITY: usize = 64;

/// Capacity of the chain events broadcast (a slower receiver skips events, never blocks us).
pub const EVENTS_CAPACITY: usize = 1_024;

/// Largest genesis file read, in bytes.
const GENESIS_BYTES_MAX: u64 = consensus::genesis::GENESIS_BYTES_MAX as u64;

/// Reads, checks and (on first start) copies the genesis: `given` if set, else the data dir's.
/// Its keys are checked through `verifier`, which remembers them.
pub fn load_genesis(
    data_dir: &DataDir,
    given: Option<&std::path::Path>,
    verifier: &Verifier,
) -> Result<Genesis, DriverError> {
    let read = |path: &std::path::Path| -> Result<(String, Genesis), DriverError> {
        let fail = |reason: String| DriverError::Genesis { path: path.to_path_buf(), reason };
        let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
        if len > GENESIS_BYTES_MAX {
            return Err(fail(format!("{len} bytes, over the limit of {GENESIS_BYTES_MAX}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let genesis = Genesis::from_json_with(&text, verifier)
            .map_err(|e: GenesisError| fail(e.to_string()))?;
        Ok((text, genesis))
    };
    let stored = data_dir.genesis();
    match given {
        Some(path) => {
            let (text, genesis) = read(path)?;
            if stored.is_file() {
                let (_, existing) = read(&stored)?;
                if existing.hash() != genesis.hash() {
                    return Err(DriverError::GenesisMismatch {
                        given: path.to_path_buf(),
                        given_hash: genesis.hash().to_hex(),
                        stored: stored.clone(),
                        stored_hash: existing.hash().to_hex(),
                    });
                }
            } else {
                std::fs::write(&stored, text).map_err(|source| DriverError::Io {
                    action: "write",
                    path: stored.clone(),
                    source,
                })?;
            }
            Ok(genesis)
        }
        None => read(&stored).map(|(_, genesis)| genesis),
    }
}

/// The engine's timing and value bound, from the chain's parameters (the same on every
/// validator): a value is at most one gossip message, the block limit and its envelope.
pub fn engine_config(params: &Params) -> EngineConfig {
    EngineConfig {
        timeout_propose_ms: params.timeout_propose_ms,
        timeout_prevote_ms: params.timeout_prevote_ms,
        timeout_precommit_ms: params.timeout_precommit_ms,
        timeout_delta_ms: params.timeout_delta_ms,
        block_interval_ms: params.block_interval_ms,
        value_bytes_max: params.max_block_bytes.saturating_add(GOSSIP_ENVELOPE_BYTES as u64),
    }
}

/// Opens the node's ledger and network and builds its context; run the returned [`Driver`] to
/// make it a peer. Call inside a tokio runtime: the network's event loop is spawned here.
pub async fn start(config: &NodeConfig) -> Result<(NodeContext, Driver), DriverError> {
    let data_dir = DataDir::new(&config.data_dir);
    let key = keystore::load(data_dir.root())?;
    // One verifier for the node: the genesis keys checked here are not checked again when their
    // accounts first sign.
    let verifier = Arc::new(Verifier::new());
    let genesis = load_genesis(&data_dir, config.genesis.as_deref(), &verifier)?;
    if config.role == Role::Validator && !genesis.validator_set().contains(&key.account()) {
        return Err(DriverError::NotAValidator {
            account: key.account().to_hex(),
            chain: genesis.chain_id.clone(),
        });
    }
    let store = SledStore::open(&data_dir.chain())?;
    let ledger = Ledger::open_with(Box::new(store), &genesis, verifier.clone())?;
    let mempool = Mempool::new(ledger.state(), MempoolLimits::for_chain(&genesis.params));
    let mut net = NetworkConfig::for_chain(
        &genesis.chain_id,
        genesis.hash(),
        &genesis.params,
        data_dir.blobs(),
    );
    net.listen = config.listen.clone();
    net.bootstrap = config.bootstrap.clone();
    net.mdns = config.mdns;
    net.relay_server = config.relay_server();
    net.behind_nat = config.behind_nat;
    net.connections.reserved = network::reserved_peers(&genesis);
    net.mempool_full = mempool.full_flag();
    net.verifier = verifier.clone();
    let sync_limits = net.sync.clone();
    let (client, network_events, event_loop) =
        network::start(keystore::libp2p_keypair(&key)?, net)?;
    tokio::spawn(event_loop.run());

    let engine = match config.role {
        Role::Validator => {
            let wal = FileWal::open(data_dir.root().join(WAL_FILE))?;
            let signer = Keypair::from_seed(key.secret_bytes());
            let config = engine_config(&genesis.params);
            Some(Engine::new(config, genesis.chain_id.clone(), signer, wal, verifier.clone()))
        }
        Role::Trainer => None,
    };
    let (submissions_tx, submissions) = mpsc::channel(SUBMISSIONS_CAPACITY);
    let (external_tx, external_txs) = mpsc::channel(EXTERNAL_TXS_CAPACITY);
    let (events, _) = broadcast::channel(EVENTS_CAPACITY);
    let ctx = NodeContext {
        genesis: Arc::new(genesis),
        key: Arc::new(key),
        role: config.role,
        data_dir,
        ledger: Arc::new(RwLock::new(ledger)),
        network: client,
        submissions: submissions_tx,
        external_txs: external_tx,
        events,
        metrics: Arc::new(Metrics::default()),
        live_votes: Arc::default(),
        mempool_full: mempool.full_flag(),
        verifier,
    };
    let driver = Driver::new(
        ctx.clone(),
        engine,
        mempool,
        network_events,
        submissions,
        external_txs,
        sync_limits,
    );
    Ok((ctx, driver))
}
