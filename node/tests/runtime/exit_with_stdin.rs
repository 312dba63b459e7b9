//! `--exit-with-stdin`: a node whose supervisor dies (its end of the stdin pipe closes) stops
//! cleanly instead of running on as an orphan.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Chain, free_port, serial};

/// Waits up to `limit` for `done`, polling.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn a_node_stops_when_its_stdin_closes() {
    let _serial = serial();
    let chain = Chain::new("stdin-test", 1);
    let data_dir = chain.data_dir("v0", chain.validators[0]);
    let log_path = chain.root.path().join("v0.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["--role", "validator", "--data-dir"])
        .arg(&data_dir)
        .arg("--genesis")
        .arg(&chain.genesis_path)
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", free_port()), "--no-mdns"])
        .arg("--exit-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = within(Duration::from_secs(60), || read_log().contains("node started"));
    assert!(started, "the node did not start:\n{}", read_log());
    assert!(child.try_wait().unwrap().is_none(), "the node stopped on its own:\n{}", read_log());

    // The supervisor goes away: its end of the pipe closes.
    drop(child.stdin.take());
    let mut status = None;
    let stopped = within(Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !stopped {
        let _ = child.kill();
    }
    assert!(stopped, "the node kept running after its stdin closed:\n{}", read_log());
    assert!(status.unwrap().success(), "the node did not stop cleanly:\n{}", read_log());
    assert!(read_log().contains("standard input closed: stopping"), "{}", read_log());
}
