//! `node status`: print a running node's status.

use clap::Args;

use serde_json::Value;

/// Arguments of `node status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub node: String,
}

/// Prints `GET /status` as indented JSON.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let status = super::client(&args.node)?.get::<Value>("/status")?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}
