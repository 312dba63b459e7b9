//! Shared by the runtime tests: a small chain of `node` processes on loopback, whose committed
//! blocks are read from their logs while they run and from their stores once stopped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use consensus::block::Block;
use consensus::chain::Ledger;
use consensus::crypto::Keypair;
use consensus::genesis::{Genesis, GenesisBalance, GenesisValidator, Params};
use consensus::storage::SledStore;
use consensus::types::{Amount, Height};
use node::keystore;

/// One network at a time: the machine running the tests may have two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the one-network-at-a-time lock until dropped (a test that failed holding it leaves it
/// usable).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Longest wait for anything the tests wait for.
pub const WAIT: Duration = Duration::from_secs(40);

/// A free loopback TCP port (bound, then released for the node to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Keys of the validators and of a funded client, and the genesis that names them.
pub struct Chain {
    /// Where every data dir lives.
    pub root: tempfile::TempDir,
    /// The genesis file.
    pub genesis_path: PathBuf,
    /// The genesis.
    pub genesis: Genesis,
    /// Validator keys' seeds.
    pub validators: Vec<[u8; 32]>,
    /// A funded account's seed.
    pub client: [u8; 32],
}

impl Chain {
    /// `n` validators with equal stake, short blocks, and a funded client account.
    pub fn new(chain_id: &str, n: usize) -> Chain {
        let root = tempfile::tempdir().unwrap();
        let validators: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
        let client = [200; 32];
        let genesis = Genesis {
            chain_id: chain_id.into(),
            genesis_time_ms: 0,
            validators: validators
                .iter()
                .enumerate()
                .map(|(i, seed)| GenesisValidator {
                    account: Keypair::from_seed(*seed).account(),
                    stake: Amount(1_000),
                    name: format!("v{i}"),
                })
                .collect(),
            balances: vec![GenesisBalance {
                account: Keypair::from_seed(client).account(),
                amount: Amount(1_000_000),
            }],
            params: Params {
                block_interval_ms: 150,
                timeout_propose_ms: 1_500,
                timeout_prevote_ms: 750,
                timeout_precommit_ms: 750,
                timeout_delta_ms: 500,
                ..Params::default()
            },
            tasks: Vec::new(),
        };
        let genesis_path = root.path().join("genesis.json");
        std::fs::write(&genesis_path, genesis.to_json()).unwrap();
        Chain { root, genesis_path, genesis, validators, client }
    }

    /// A data dir holding the key of `seed`.
    pub fn data_dir(&self, name: &str, seed: [u8; 32]) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if !dir.join(keystore::KEY_FILE).exists() {
            keystore::save(&dir, &Keypair::from_seed(seed)).unwrap();
        }
        dir
    }
}

/// A committed block as a node logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Its hash.
    pub hash: String,
    /// The state root after it.
    pub state_root: String,
    /// Its transaction count.
    pub txs: usize,
    /// Its proposer's account.
    pub proposer: String,
}

/// What a node process logged.
#[derive(Default)]
pub struct Log {
    /// Committed blocks by height.
    pub blocks: BTreeMap<u64, Logged>,
    /// Every line (for failure messages and checks such as equivocation).
    pub lines: Vec<String>,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()
}

/// A `node` process.
pub struct NodeProcess {
    /// Its name in messages.
    pub name: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its p2p address with its peer id.
    pub address: String,
    args: Vec<String>,
    child: Option<Child>,
    /// Its log.
    pub log: Arc<Mutex<Log>>,
}

impl NodeProcess {
    /// Starts `node --role ROLE` on a free port with the data dir of `seed`.
    pub fn start(
        chain: &Chain,
        name: &str,
        role: &str,
        seed: [u8; 32],
        bootstrap: &[String],
        extra: &[String],
    ) -> NodeProcess {
        let data_dir = chain.data_dir(name, seed);
        let port = free_port();
        let peer = keystore::peer_id(&Keypair::from_seed(seed)).unwrap();
        let address = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}");
        let mut args = vec![
            "--role".to_string(),
            role.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--genesis".into(),
            chain.genesis_path.display().to_string(),
            "--listen".into(),
            format!("/ip4/127.0.0.1/tcp/{port}"),
            "--no-mdns".into(),
        ];
        for b in bootstrap {
            args.push("--bootstrap".into());
            args.push(b.clone());
        }
        args.extend(extra.iter().cloned());
        NodeProcess::with_args(name, data_dir, address, args)
    }

    /// Starts `node ARGS` for the node of `data_dir`, reachable at `address`.
    pub fn with_args(
        name: &str,
        data_dir: PathBuf,
        address: String,
        args: Vec<String>,
    ) -> NodeProcess {
        let mut node = NodeProcess {
            name: name.into(),
            data_dir,
            address,
            args,
            child: None,
            log: Arc::new(Mutex::new(Log::default())),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                if line.contains("committed block")
                    && let (Some(h), Some(hash), Some(root), Some(txs), Some(proposer)) = (
                        field(&line, "height"),
                        field(&line, "hash"),
                        field(&line, "state_root"),
                        field(&line, "txs"),
                        field(&line, "proposer"),
                    )
                {
                    let logged = Logged {
                        hash: hash.into(),
                        state_root: root.into(),
                        txs: txs.parse().unwrap(),
                        proposer: proposer.into(),
                    };
                    log.blocks.insert(h.parse().unwrap(), logged);
                }
                log.lines.push(line);
            }
        });
        self.child = Some(child);
    }

    /// The highest height this process logged as committed.
    pub fn height(&self) -> u64 {
        self.log.lock().unwrap().blocks.keys().next_back().copied().unwrap_or(0)
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the process again with the same settings (a later log continues the same one).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.spawn();
    }

    /// Stops the process with SIGTERM and waits for it to exit cleanly.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let status =
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status}: {}", self.name, self.tail());
                return;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{} did not stop on SIGTERM: {}", self.name, self.tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its log.
    pub fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let from = log.lines.len().saturating_sub(30);
        log.lines[from..].join("\n")
    }

    /// Opens its (stopped) ledger.
    pub fn ledger(&self, genesis: &Genesis) -> Ledger {
        let store = SledStore::open(&self.data_dir.join("chain")).unwrap();
        Ledger::open(Box::new(store), genesis).unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `ok` holds, failing with `what` and the nodes' log tails after [`WAIT`].
pub fn wait_for(what: &str, nodes: &[&NodeProcess], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        if Instant::now() > deadline {
            let tails: Vec<String> =
                nodes.iter().map(|n| format!("--- {}:\n{}", n.name, n.tail())).collect();
            panic!("timed out waiting for {what}\n{}", tails.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every stored block of `ledger`, by height.
pub fn blocks(ledger: &Ledger) -> Vec<Block> {
    (1..=ledger.height().0).map(|h| ledger.block(Height(h)).unwrap().unwrap()).collect()
}

/// Checks that every pair of nodes logged the same block and state root at every height both
/// committed; returns how many heights all of them share.
pub fn assert_logs_agree(nodes: &[&NodeProcess]) -> u64 {
    let logs: Vec<BTreeMap<u64, Logged>> =
        nodes.iter().map(|n| n.log.lock().unwrap().blocks.clone()).collect();
    for (i, a) in logs.iter().enumerate() {
        for b in &logs[i + 1..] {
            for (height, block) in a {
                if let Some(other) = b.get(height) {
                    assert_eq!(block, other, "nodes disagree at height {height}");
                }
            }
        }
    }
    nodes.iter().map(|n| n.height()).min().unwrap_or(0)
}
