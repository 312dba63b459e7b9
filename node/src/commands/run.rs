//! `node --role validator|trainer …`: run a node until Ctrl-C or SIGTERM.
//!
//! Resolves the settings (flags over the `--config` file), starts the driver (consensus for a
//! validator, chain following for a trainer), and spawns the role loop (the scorer for a
//! validator, which fetches sealed held-out files itself; the trainer with its recipe or its
//! submit folder) and the HTTP API (with `--http`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::blobs;
use crate::roles::trainer::ModelSource;
use crate::runtime::config::{ConfigFile, Flags, NodeConfig};
use crate::runtime::{self, ChainEvent, NodeContext, Role};

/// Settings of a running node; each may also be set in the `--config` file under the same name
/// (`data_dir`, `genesis`, `listen`, `bootstrap`, `http`, `recipe`, `submit_dir`, `mdns`,
/// `scorer`, `role`).
/// Flags win over the file.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// The role to run.
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// A TOML config file with any of these settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data dir (key, genesis copy, chain, WAL, blobs); create it with `node init`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The genesis file (copied into the data dir on first start; must match it later).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// A multiaddr to listen on, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable).
    #[arg(long)]
    pub listen: Vec<String>,
    /// A peer to dial at start, e.g. /ip4/10.0.0.1/tcp/4001/p2p/12D3Koo… (repeatable).
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Serve the HTTP API on this address, e.g. 127.0.0.1:8081.
    #[arg(long)]
    pub http: Option<String>,
    /// A trainer's recipe (TOML); the default recipe without it.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// A trainer that takes models trained elsewhere from this folder instead of training with
    /// a recipe: `task-<ID>.safetensors` files, put there by `node submit` (or by hand). It joins
    /// a task only once its file is there and passes the validators' checks.
    #[arg(long, conflicts_with = "recipe")]
    pub submit_dir: Option<PathBuf>,
    /// Turn mDNS discovery off.
    #[arg(long)]
    pub no_mdns: bool,
    /// This node cannot be dialed (behind a NAT or firewall): listen through validators' relays
    /// from the start instead of waiting for AutoNAT to find out; a validator then serves no
    /// relay itself.
    #[arg(long)]
    pub behind_nat: bool,
    /// Run a validator without its scoring loop: it votes on blocks but neither attests to
    /// holding tasks' sealed held-out files nor scores them.
    #[arg(long)]
    pub no_scorer: bool,
    /// Stop when standard input reaches its end: a supervisor that holds the other end of a pipe
    /// can then die, even by SIGKILL, without leaving this node running.
    #[arg(long)]
    pub exit_with_stdin: bool,
}

/// Runs a node.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let exit_with_stdin = args.exit_with_stdin;
    if args.role.is_none() && args.config.is_none() {
        anyhow::bail!(
            "nothing to do: run a node with `node --role validator|trainer --data-dir DIR` (or --config FILE), or use a subcommand (see `node --help`)"
        );
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Another subscriber may be installed already (tests); the first one keeps logging.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let flags = Flags {
        role: args.role,
        data_dir: args.data_dir,
        genesis: args.genesis,
        listen: args.listen,
        bootstrap: args.bootstrap,
        http: args.http,
        recipe: args.recipe,
        submit_dir: args.submit_dir,
        no_mdns: args.no_mdns,
        behind_nat: args.behind_nat,
        no_scorer: args.no_scorer,
    };
    let config = NodeConfig::resolve(flags, file)?;
    let source = match (&config.role, &config.recipe, &config.submit_dir) {
        (Role::Trainer, _, Some(dir)) => Some(ModelSource::Folder(dir.clone())),
        (Role::Trainer, Some(path), None) => Some(ModelSource::Recipe(Box::new(
            trainer::recipe::Recipe::load(path)
                .with_context(|| format!("loading the recipe {}", path.display()))?,
        ))),
        (Role::Trainer, None, None) => Some(ModelSource::Recipe(Box::default())),
        (Role::Validator, ..) => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_node(config, source, exit_with_stdin))
}

async fn run_node(
    config: NodeConfig,
    source: Option<ModelSource>,
    exit_with_stdin: bool,
) -> anyhow::Result<()> {
    let http = match config.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve the HTTP API on {addr}"))?,
        ),
        None => None,
    };
    let (ctx, driver) = runtime::start(&config).await.context("starting the node")?;
    tracing::info!(
        role = ?ctx.role,
        account = %ctx.key.account(),
        chain = %ctx.genesis.chain_id,
        height = %ctx.read(|l| l.height()),
        "node started"
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(named("blob pruning", prune_blobs(ctx.clone())));
    if let Some(listener) = http {
        tracing::info!("http api on http://{}", listener.local_addr()?);
        let ctx = ctx.clone();
        let mut http = crate::http::HttpConfig::default();
        http.write_hosts.extend(config.http_write_hosts.iter().cloned());
        tasks.spawn(named("http api", crate::http::serve_with_config(ctx, listener, http)));
    }
    match (ctx.role, source) {
        (Role::Trainer, Some(source)) => {
            tasks.spawn(named("trainer", crate::roles::trainer::run(ctx.clone(), source)));
        }
        (Role::Validator, _) if config.scorer => {
            tasks.spawn(named("scorer", crate::roles::scorer::run(ctx.clone())));
        }
        _ => tracing::info!("no role loop: this validator votes on blocks but does not score"),
    }
    let result = driver.run(shutdown_signal(exit_with_stdin)).await;
    tasks.shutdown().await;
    drop(ctx);
    result.context("the node stopped")
}

/// Blocks between two passes of [`prune_blobs`].
const PRUNE_EVERY_BLOCKS: u64 = 64;
/// Blocks a finished task's artifacts stay after its score deadline, for peers still fetching
/// them to re-provide or re-score.
const ARTIFACT_RETENTION_BLOCKS: u64 = 256;

/// Prints the blob store's disk usage at start, then every [`PRUNE_EVERY_BLOCKS`] blocks deletes
/// the artifacts of finished tasks ([`crate::blobs::finished_artifacts`]) and prints it again.
async fn prune_blobs(ctx: NodeContext) -> anyhow::Result<()> {
    let store = ctx.network.blob_store().clone();
    let dir = store.dir().display().to_string();
    let usage = tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.usage()
    })
    .await??;
    tracing::info!(%dir, "blob store: {usage}");
    let mut events = ctx.events.subscribe();
    let mut last = ctx.read(|l| l.height());
    loop {
        let height = match events.recv().await {
            Ok(ChainEvent::BlockCommitted { height, .. }) => height,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        };
        if height.0 < last.0 + PRUNE_EVERY_BLOCKS {
            continue;
        }
        last = height;
        let finished =
            ctx.read(|l| blobs::finished_artifacts(l.state(), height, ARTIFACT_RETENTION_BLOCKS));
        let store = store.clone();
        let (freed, usage) = tokio::task::spawn_blocking(move || {
            let mut freed = 0u64;
            for hash in finished {
                freed += store.remove(&hash)?.unwrap_or(0);
            }
            store.usage().map(|usage| (freed, usage))
        })
        .await??;
        if freed > 0 {
            tracing::info!(%dir, freed_bytes = freed, "blob store: {usage} (finished tasks' artifacts deleted)");
        }
    }
}

/// Runs a task and logs how it ended.
async fn named(name: &'static str, task: impl Future<Output = anyhow::Result<()>>) {
    match task.await {
        Ok(()) => tracing::info!(task = name, "task ended"),
        Err(error) => tracing::error!(task = name, "task failed: {error:#}"),
    }
}

/// Completes when standard input reaches its end (or fails). A plain thread reads it, not a
/// blocking task: the async runtime would wait for a blocking task at shutdown, and stdin may
/// never end.
async fn stdin_closed() {
    let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    match spawned {
        Ok(_) => {
            let _ = on_close.await;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch standard input");
            std::future::pending::<()>().await;
        }
    }
}

/// Completes on Ctrl-C or SIGTERM, or when standard input ends if `exit_with_stdin`.
async fn shutdown_signal(exit_with_stdin: bool) {
    let stdin = async {
        if exit_with_stdin {
            stdin_closed().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: stopping"),
        () = term => tracing::info!("SIGTERM: stopping"),
        () = stdin => tracing::info!("standard input closed: stopping"),
    }
}
