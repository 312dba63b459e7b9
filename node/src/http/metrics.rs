//! `GET /metrics`: Prometheus text exposition (version 0.0.4).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::broadcast;

use super::read::peer_count;
use super::{Api, ApiResult};
use crate::runtime::ChainEvent;

/// The window `crucible_blocks_per_second` averages over.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Most commit times remembered (a bound even for a node syncing thousands of blocks a second).
const RATE_SAMPLES_MAX: usize = 4_096;

/// When recent blocks were committed here, for the block rate.
#[derive(Debug)]
pub struct BlockRate {
    started: Instant,
    commits: Mutex<VecDeque<Instant>>,
}

impl Default for BlockRate {
    fn default() -> Self {
        BlockRate { started: Instant::now(), commits: Mutex::new(VecDeque::new()) }
    }
}

impl BlockRate {
    fn record(&self, at: Instant) {
        let mut commits = self.commits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if commits.len() >= RATE_SAMPLES_MAX {
            commits.pop_front();
        }
        commits.push_back(at);
    }

    /// Blocks per second committed over the last [`RATE_WINDOW`] (or since start, if shorter).
    fn per_second(&self, now: Instant) -> f64 {
        let mut commits = self.commits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while commits.front().is_some_and(|t| now.duration_since(*t) > RATE_WINDOW) {
            commits.pop_front();
        }
        let span = now.duration_since(self.started).min(RATE_WINDOW).as_secs_f64();
        if span <= 0.0 { 0.0 } else { commits.len() as f64 / span }
    }
}

/// Records every committed block until the event channel closes.
pub(super) async fn track_blocks(
    mut events: broadcast::Receiver<ChainEvent>,
    rate: std::sync::Arc<BlockRate>,
) {
    loop {
        match events.recv().await {
            Ok(ChainEvent::BlockCommitted { .. }) => rate.record(Instant::now()),
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

pub(super) async fn metrics(State(api): State<Api>) -> ApiResult<impl IntoResponse> {
    let peers = peer_count(&api).await;
    let (height, tasks, validators) = api
        .read(|l| {
            let s = l.state();
            Ok((s.height().0, s.tasks.len(), s.validators.len()))
        })
        .await?;
    let m = &api.ctx.metrics;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP crucible_info The node's chain, role and account.\n# TYPE crucible_info gauge\n\
         crucible_info{{chain_id=\"{}\",role=\"{}\",account=\"{}\"}} 1",
        label(&api.ctx.genesis.chain_id),
        match api.ctx.role {
            crate::runtime::Role::Validator => "validator",
            crate::runtime::Role::Trainer => "trainer",
        },
        api.ctx.key.account()
    );
    metric(&mut out, "crucible_height", "gauge", "Height of the last committed block.", height);
    metric(
        &mut out,
        "crucible_peers",
        "gauge",
        "Connected peers that passed the handshake.",
        peers,
    );
    metric(
        &mut out,
        "crucible_mempool_txs",
        "gauge",
        "Transactions in the mempool.",
        load(&m.mempool_txs),
    );
    metric(
        &mut out,
        "crucible_blocks_committed_total",
        "counter",
        "Blocks committed since the node started.",
        load(&m.blocks_committed),
    );
    metric(
        &mut out,
        "crucible_blocks_per_second",
        "gauge",
        "Blocks committed per second over the last minute.",
        format!("{:.3}", api.rate.per_second(Instant::now())),
    );
    metric(
        &mut out,
        "crucible_network_bytes_in_total",
        "counter",
        "Bytes received on every peer connection (TCP payload: Noise and Yamux framing included).",
        api.ctx.network.traffic().inbound(),
    );
    metric(
        &mut out,
        "crucible_network_bytes_out_total",
        "counter",
        "Bytes sent on every peer connection (TCP payload: Noise and Yamux framing included).",
        api.ctx.network.traffic().outbound(),
    );
    metric(
        &mut out,
        "crucible_training_seconds_total",
        "counter",
        "Time spent training models.",
        format!("{:.3}", load(&m.training_ms) as f64 / 1_000.0),
    );
    metric(
        &mut out,
        "crucible_scoring_seconds_total",
        "counter",
        "Time spent scoring submissions.",
        format!("{:.3}", load(&m.scoring_ms) as f64 / 1_000.0),
    );
    metric(&mut out, "crucible_tasks", "gauge", "Tasks on the ledger.", tasks);
    metric(&mut out, "crucible_validators", "gauge", "Validators on the ledger.", validators);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_the_window() {
        let rate = BlockRate::default();
        let now = rate.started + Duration::from_secs(10);
        for i in 0..20 {
            rate.record(rate.started + Duration::from_millis(500 * i));
        }
        assert!((rate.per_second(now) - 2.0).abs() < 1e-9);
        // A minute later they have all left the window.
        assert_eq!(rate.per_second(now + Duration::from_secs(120)), 0.0);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
