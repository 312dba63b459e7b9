//! Writing a plan to disk, and choosing the nodes' loopback ports.
//!
//! ```text
//! DIR/
//!   genesis.json
//!   task-1/                 the creator's copy: task.json, train.csv|txt, heldout.*, heldout.salt,
//!                           heldout.sealed (what validators fetch and attest to holding)
//!   task-2/                 with --rounds 2: the follow-up task (task.json final once posted)
//!   creator/node_key.json   the task creator's key
//!   creator/heldout-keys/   the held-out key of each round (0600), revealed after its commit
//!                           deadline
//!   validator-0/            data dir: node_key.json, genesis.json (no held-out file: it
//!                           fetches the sealed one)
//!   validator-0.toml        node config
//!   validator-0.log         stdout and stderr of the node
//!   trainer-0/              data dir
//!   trainer-0.toml
//!   trainer-0.recipe.toml
//!   trainer-0.log
//! ```

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::plan::{NodeAddrs, NodePorts, Plan};

/// Most ports probed past the seed-derived base before giving up.
pub const PORT_PROBES_MAX: u16 = 2_000;

/// Where the written files are.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The testnet's directory.
    pub dir: PathBuf,
    /// Each node's config file, in node order.
    pub configs: Vec<PathBuf>,
    /// Each node's log file, in node order.
    pub logs: Vec<PathBuf>,
    /// Each node's HTTP API base URL, in node order.
    pub urls: Vec<String>,
    /// Each round's task directory (task.json, public training file, held-out file, salt).
    pub task_dirs: Vec<PathBuf>,
}

/// Finds `count` pairs of free loopback ports, trying ports upward from `base` and skipping any
/// that cannot be bound now. The ports are released before returning, so another process could
/// take one before a node binds it; the node then fails to start and says so in its log.
pub fn free_ports(base: u16, count: usize) -> anyhow::Result<Vec<NodePorts>> {
    let mut held = Vec::with_capacity(2 * count);
    let mut port = base;
    let end = base.saturating_add(PORT_PROBES_MAX);
    while held.len() < 2 * count {
        if port >= end {
            bail!("found only {} free loopback ports in {base}..{end}", held.len());
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
        port += 1;
    }
    Ok(held.chunks(2).map(|pair| NodePorts { p2p: pair[0].0, http: pair[1].0 }).collect())
}

/// Writes every file of `plan` into `dir` (which must be empty or absent) for nodes at `addrs`.
pub fn write(plan: &Plan, dir: &Path, addrs: &[NodeAddrs]) -> anyhow::Result<Layout> {
    if dir.exists()
        && fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some()
    {
        bail!(
            "{} is not empty; give a new --dir (the testnet never overwrites keys)",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let genesis_path = dir.join("genesis.json");
    let genesis_json = plan.genesis.to_json() + "\n";
    fs::write(&genesis_path, &genesis_json)
        .with_context(|| format!("writing {}", genesis_path.display()))?;
    let mut task_dirs = Vec::new();
    node::keystore::save(&dir.join("creator"), &plan.creator())?;
    for (round, task) in (1..).zip(&plan.tasks) {
        let task_dir = dir.join(format!("task-{round}"));
        trainer::task::write(&task_dir, task)?;
        task_dirs.push(task_dir);
        let key = crate::plan::heldout_key(plan.settings.seed, round);
        node::keystore::save_heldout_key(&dir.join("creator"), &key)?;
    }
    for file in &plan.private {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, &file.bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut layout = Layout {
        dir: dir.to_path_buf(),
        configs: Vec::new(),
        logs: Vec::new(),
        urls: Vec::new(),
        task_dirs,
    };
    for (i, node) in plan.nodes.iter().enumerate() {
        let data_dir = dir.join(&node.name);
        node::keystore::save(&data_dir, &node.key())?;
        let datadir = node::datadir::DataDir::new(&data_dir);
        fs::write(datadir.genesis(), &genesis_json)
            .with_context(|| format!("writing {}", datadir.genesis().display()))?;
        if let Some(recipe) = &node.recipe {
            let path = dir.join(format!("{}.recipe.toml", node.name));
            let text = format!(
                "# {}: written by testnet\n{}",
                recipe.label,
                toml::to_string(&recipe.recipe).context("rendering a recipe")?
            );
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        let config = dir.join(format!("{}.toml", node.name));
        fs::write(&config, plan.node_config(i, dir, addrs)?)
            .with_context(|| format!("writing {}", config.display()))?;
        layout.configs.push(config);
        layout.logs.push(dir.join(format!("{}.log", node.name)));
        layout.urls.push(format!("http://{}", addrs[i].api));
    }
    Ok(layout)
}

/// Rewrites a task's `task.json` with the spec as posted (a follow-up task's base model is known
/// only once the previous round has a champion).
pub fn write_spec(task_dir: &Path, spec: &consensus::task::TaskSpec) -> anyhow::Result<()> {
    let path = task_dir.join("task.json");
    let json = serde_json::to_string_pretty(spec).context("rendering a task spec")?;
    fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LABEL_NOISE_DEFAULT, Settings, TaskSource};
    use trainer::task::DataKind;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(40_000, 3).unwrap();
        let mut all: Vec<u16> = ports.iter().flat_map(|p| [p.p2p, p.http]).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|&p| p >= 40_000));
    }

    #[test]
    fn writes_keys_genesis_configs_recipes_and_sealed_files_but_no_heldout_to_nodes() {
        let bytes = fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/iris.csv")).unwrap();
        let plan = Plan::new(Settings {
            validators: 2,
            trainers: 2,
            seed: 5,
            rounds: 2,
            task: TaskSource {
                name: "iris.csv".into(),
                bytes,
                kind: DataKind::Classification,
                label_noise: LABEL_NOISE_DEFAULT,
            },
        })
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net");
        let ports: Vec<NodeAddrs> = (0..5)
            .map(|i| NodeAddrs::loopback(NodePorts { p2p: 31_000 + i, http: 31_100 + i }))
            .collect();
        let layout = write(&plan, &dir, &ports).unwrap();
        let genesis = consensus::genesis::Genesis::from_json(
            &fs::read_to_string(dir.join("genesis.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(genesis.hash(), plan.genesis.hash());
        let key = node::keystore::load(&dir.join("validator-1")).unwrap();
        assert_eq!(key.account(), plan.nodes[1].account());
        assert!(dir.join("task-1/heldout.sealed").exists());
        assert!(dir.join("task-2/heldout.sealed").exists());
        for round in [1, 2] {
            let key = crate::plan::heldout_key(5, round);
            let kept = node::keystore::load_heldout_key(&dir.join("creator"), &key.commitment());
            assert_eq!(kept.unwrap(), key, "the creator keeps round {round}'s key");
        }
        assert_eq!(layout.task_dirs.len(), 2);
        for node in ["validator-0", "validator-1", "trainer-0"] {
            assert!(!dir.join(node).join("heldout").exists(), "{node} gets no held-out file");
        }
        let recipe = trainer::recipe::Recipe::load(&dir.join("trainer-1.recipe.toml")).unwrap();
        assert_eq!(Some(&recipe), plan.nodes[3].recipe.as_ref().map(|r| &r.recipe));
        assert_eq!(layout.urls[2], "http://127.0.0.1:31102");
        assert!(write(&plan, &dir, &ports).is_err(), "never overwrites a testnet");
    }
}
