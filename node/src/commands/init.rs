//! `node init`: create a data dir with a node key, a copy of the genesis and a config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use consensus::crypto::Verifier;

use crate::datadir::DataDir;
use crate::keystore;
use crate::runtime::load_genesis;

/// The config file `node init` writes into a data dir.
pub const CONFIG_FILE: &str = "node.toml";

/// Arguments of `node init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The data dir to create (an existing key in it is kept).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The chain's genesis file, copied into the data dir (must match an existing copy).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
}

/// Creates the data dir, its key (unless one exists), the genesis copy and a default config.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir);
    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("creating {}", dir.root().display()))?;
    let key_path = dir.root().join(keystore::KEY_FILE);
    let key = if key_path.exists() {
        println!("key: kept the existing {}", key_path.display());
        keystore::load(dir.root())?
    } else {
        let key = keystore::create(dir.root())?;
        println!("key: created {}", key_path.display());
        key
    };
    if let Some(path) = &args.genesis {
        let genesis = load_genesis(&dir, Some(path), &Verifier::new())?;
        println!("genesis: chain {} ({})", genesis.chain_id, genesis.hash());
    }
    let config = dir.root().join(CONFIG_FILE);
    if !config.exists() {
        let text = format!(
            "# Settings of `node --config {path}`; flags given on the command line win.\n\
             data_dir = {data_dir:?}\n\
             listen = \"/ip4/0.0.0.0/tcp/4001\"\n\
             bootstrap = []\n\
             # role = \"validator\"            # or \"trainer\"\n\
             # http = \"127.0.0.1:8081\"\n\
             # recipe = \"/path/recipe.toml\"  # trainer\n\
             mdns = true\n",
            path = config.display(),
            data_dir = dir.root().display().to_string(),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        println!("config: wrote {}", config.display());
    }
    println!("account: {}", key.account());
    println!("peer id: {}", keystore::peer_id(&key)?);
    Ok(())
}
