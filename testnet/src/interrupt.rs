//! Ctrl-C and SIGTERM: the handler only raises a flag; the launcher's waits check it, return
//! [`Interrupted`], and the [`crate::launch::Supervisor`]'s drop stops every node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Returned when the user interrupted the run.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; stopping every node")]
pub struct Interrupted;

/// Installs the handler (once per process).
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")
}

/// Fails with [`Interrupted`] once the user pressed Ctrl-C.
pub fn check() -> Result<(), Interrupted> {
    if INTERRUPTED.load(Ordering::SeqCst) { Err(Interrupted) } else { Ok(()) }
}

/// Sleeps for `duration`, waking early (with an error) on an interrupt.
pub fn sleep(duration: Duration) -> Result<(), Interrupted> {
    let end = Instant::now() + duration;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
