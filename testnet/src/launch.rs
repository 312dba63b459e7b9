//! The process supervisor: starts node processes with their logs, notices when one dies, and
//! kills every one of them when it is dropped.
//!
//! Each child runs in its own process group, so a Ctrl-C in the terminal reaches only the
//! launcher, which then stops the children itself (see [`crate::interrupt`]); dropping the
//! [`Supervisor`], on success, error or interrupt alike, kills and reaps every child.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;

use anyhow::Context;

/// Bytes read from the end of a log to show its last lines.
const LOG_TAIL_BYTES_MAX: u64 = 64 << 10;

/// How to start one process.
#[derive(Clone, Debug)]
pub struct Spawn {
    /// Its name in messages.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// `argv[0]` as the process sees it (a multi-call binary dispatches on it).
    pub arg0: Option<String>,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Where its stdout and stderr go (created, or appended to).
    pub log: PathBuf,
    /// The network namespace it runs in (`testnet --hosts`, see [`crate::hosts`]); this
    /// process's own when `None`.
    pub netns: Option<Arc<OwnedFd>>,
}

struct Managed {
    name: String,
    log: PathBuf,
    child: Child,
    /// The write end of the child's stdin, held open while the supervisor lives: when this
    /// process dies, even by SIGKILL, the OS closes it, and a node started with
    /// `--exit-with-stdin` stops.
    _stdin: Option<ChildStdin>,
}

/// Owns the child processes; kills them all when dropped.
#[derive(Default)]
pub struct Supervisor {
    children: Vec<Managed>,
}

/// A child that is no longer running.
#[derive(Debug)]
pub struct Exited {
    /// Its name.
    pub name: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Its log file.
    pub log: PathBuf,
}

impl Supervisor {
    /// An empty supervisor.
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Starts a process in its own process group, its output appended to its log.
    pub fn spawn(&mut self, spec: Spawn) -> anyhow::Result<u32> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let err = log.try_clone().with_context(|| format!("opening {}", spec.log.display()))?;
        let mut command = Command::new(&spec.program);
        if let Some(arg0) = &spec.arg0 {
            command.arg0(arg0);
        }
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        if let Some(ns) = spec.netns.clone() {
            crate::hosts::netns::spawn_in(&mut command, ns);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        self.children.push(Managed { name: spec.name, log: spec.log, child, _stdin: stdin });
        Ok(pid)
    }

    /// The first child that has exited, if any.
    pub fn exited(&mut self) -> anyhow::Result<Option<Exited>> {
        for managed in &mut self.children {
            if let Some(status) =
                managed.child.try_wait().with_context(|| format!("checking on {}", managed.name))?
            {
                return Ok(Some(Exited {
                    name: managed.name.clone(),
                    status,
                    log: managed.log.clone(),
                }));
            }
        }
        Ok(None)
    }

    /// Kills and reaps every child; returns how many there were.
    pub fn stop_all(&mut self) -> usize {
        let count = self.children.len();
        for mut managed in self.children.drain(..) {
            // An already-exited child makes `kill` fail harmlessly; `wait` reaps it either way.
            let _ = managed.child.kill();
            let _ = managed.child.wait();
        }
        count
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The last `lines` lines of a log file (or a note that it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES_MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The last `lines` lines of a log that report a problem: tracing's `WARN` and `ERROR` levels,
/// panics and printed errors.
pub fn problems(path: &Path, lines: usize) -> Vec<String> {
    let text = tail(path, usize::MAX);
    let found: Vec<String> = text
        .lines()
        .filter(|l| {
            l.contains(" WARN ")
                || l.contains(" ERROR ")
                || l.contains("panicked")
                || l.starts_with("error")
        })
        .map(str::to_owned)
        .collect();
    found[found.len().saturating_sub(lines)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &Path, name: &str) -> Spawn {
        Spawn {
            name: name.into(),
            program: "sleep".into(),
            arg0: None,
            args: vec!["1000".into()],
            env: vec![],
            log: dir.join(format!("{name}.log")),
            netns: None,
        }
    }

    #[test]
    fn dropping_the_supervisor_kills_every_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut supervisor = Supervisor::new();
        let pids: Vec<u32> = (0..3)
            .map(|i| supervisor.spawn(sleeper(dir.path(), &format!("s{i}"))).unwrap())
            .collect();
        for pid in &pids {
            assert!(Path::new(&format!("/proc/{pid}")).exists(), "child {pid} runs");
        }
        assert!(supervisor.exited().unwrap().is_none());
        drop(supervisor);
        for pid in &pids {
            // Killed and reaped: the process no longer exists.
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "child {pid} outlived the drop");
        }
    }

    #[test]
    fn an_exited_child_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut supervisor = Supervisor::new();
        let log = dir.path().join("sh.log");
        supervisor
            .spawn(Spawn {
                name: "sh".into(),
                program: "sh".into(),
                arg0: None,
                args: vec!["-c".into(), "echo one; echo two; echo three >&2; exit 3".into()],
                env: vec![],
                log: log.clone(),
                netns: None,
            })
            .unwrap();
        // `sh` exits at once; the bound only turns a broken supervisor into a failure.
        let exited = (0..6_000)
            .find_map(|_| {
                let exited = supervisor.exited().unwrap();
                if exited.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                exited
            })
            .expect("sh exits within a minute");
        assert_eq!(exited.name, "sh");
        assert_eq!(exited.status.code(), Some(3));
        assert_eq!(tail(&exited.log, 2), "two\nthree");
        assert!(problems(&exited.log, 5).is_empty());
        std::fs::write(&log, "a\nx  WARN y: slow\nb\nerror: it broke\nc\n").unwrap();
        assert_eq!(problems(&log, 5), ["x  WARN y: slow", "error: it broke"]);
        assert_eq!(problems(&log, 1), ["error: it broke"]);
    }
}
