//! `node submit`: hand a model trained elsewhere (PyTorch, JAX, numpy, private data…) to a
//! running trainer node, which joins the task, commits, reveals and serves it.
//!
//! The node does the part that needs its key and the chain (see [`crate::roles::outside`]); this
//! command makes sure the hand-over can succeed **before** anything is spent:
//!
//! 1. the trainer node of `--data-dir` takes models from a submit folder (it recorded one at
//!    start) and answers at `--node` as that data dir's account;
//! 2. the task exists and this account can still enter it: its join window is open and it has
//!    room (or this account already joined and the commit window is open), the account is not
//!    its creator, has not committed to it yet, and holds the bond and entry fee;
//! 3. the model passes every check a validator makes, against the task's spec as the ledger holds
//!    it (`GET /tasks/{id}/spec`): size, safetensors format, dtypes, architecture, parameter
//!    limit, finite values ([`validator::check`]).
//!
//! Then it copies the model into the submit folder as `task-<ID>.safetensors` (a temporary file
//! renamed into place, so the node never sees half a file). With `--wait` it follows the chain
//! until the node's commitment for the task is on it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use consensus::task::TaskSpec;
use consensus::types::{AccountId, TaskId};

use crate::client::{Client, HttpError};
use crate::http::views::StatusView;
use crate::roles::outside;
use crate::runtime::Role;

/// Arguments of `node submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The task's id.
    #[arg(long)]
    pub task: u64,
    /// The model: a safetensors file in the task's documented layout (README, "Models and
    /// artifacts").
    #[arg(long)]
    pub model: PathBuf,
    /// The data dir of the running trainer node (started with `--submit-dir DIR`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// That node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub node: String,
    /// Wait until the node's commitment for the task is on the chain (at most until the commit
    /// deadline has passed).
    #[arg(long)]
    pub wait: bool,
}

/// Where an account stands in a task, as far as handing in a model goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The height the next transaction lands in at the earliest.
    pub next: u64,
    /// The task's last join height.
    pub join_deadline: u64,
    /// The task's last commit height.
    pub commit_deadline: u64,
    /// Whether the task has ended (finalized or cancelled).
    pub ended: bool,
    /// Trainers joined.
    pub joined: u32,
    /// Most trainers.
    pub max_trainers: u32,
    /// Whether the account opened the task.
    pub creator: bool,
    /// The account's submission: `None` if it has not joined, `Some(committed)` if it has.
    pub ours: Option<bool>,
    /// The account's balance.
    pub balance: u128,
    /// What joining locks and burns: the bond and the entry fee (the node also checks the fees
    /// of its three transactions before it joins).
    pub cost: u128,
}

/// Whether the account can hand in a model for the task now; the reason in words if not.
pub fn check_standing(s: &Standing) -> Result<(), String> {
    if s.ended {
        return Err("the task has ended".into());
    }
    if s.creator {
        return Err("this account created the task, and a creator cannot train for it".into());
    }
    match s.ours {
        Some(true) => Err("this account already committed a model to the task; a trainer \
                           submits once per task"
            .into()),
        Some(false) if s.next > s.commit_deadline => Err(format!(
            "the commit window closed at height {} (the next block is {})",
            s.commit_deadline, s.next
        )),
        Some(false) => Ok(()),
        None if s.next > s.join_deadline => Err(format!(
            "the join window closed at height {} (the next block is {}); this account did not \
             join",
            s.join_deadline, s.next
        )),
        None if s.joined >= s.max_trainers => {
            Err(format!("the task is full ({} of {} trainers)", s.joined, s.max_trainers))
        }
        None if s.balance < s.cost => Err(format!(
            "the account holds {} but joining needs {} (bond and entry fee)",
            s.balance, s.cost
        )),
        None => Ok(()),
    }
}

/// Runs `node submit`.
pub fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let task = TaskId(args.task);
    let Some(source) = outside::recorded_source(&args.data_dir)? else {
        bail!(
            "the trainer of {} takes no models from a submit folder: start it with `node --role \
             trainer --data-dir {} --submit-dir DIR …`",
            args.data_dir.display(),
            args.data_dir.display()
        );
    };
    let me = crate::keystore::load(&args.data_dir)
        .with_context(|| format!("reading the key of {}", args.data_dir.display()))?
        .account();
    let client = super::client(&args.node)?;
    let status = client.status().map_err(|e| match e {
        HttpError::Connect { .. } => {
            anyhow::anyhow!("the trainer node is not running: {e}")
        }
        e => e.into(),
    })?;
    if status.account != me || status.role != Role::Trainer {
        let role = clap::ValueEnum::to_possible_value(&status.role);
        bail!(
            "the node at {} is {} account {}, not the trainer of {} (account {me})",
            args.node,
            role.as_ref().map_or("an unknown role", |r| r.get_name()),
            status.account,
            args.data_dir.display()
        );
    }
    let spec: TaskSpec = match client.get(&format!("/tasks/{}/spec", task.0)) {
        Ok(spec) => spec,
        Err(HttpError::Status { status: 404, .. }) => bail!("there is no task {task} on the chain"),
        Err(e) => return Err(e.into()),
    };
    let standing = standing(&client, task, &me, &spec, &status)?;
    check_standing(&standing).map_err(|why| anyhow::anyhow!("cannot enter task {task}: {why}"))?;
    let (bytes, checked) = outside::read_checked(&args.model, &spec)?;
    let dir = &source.submit_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = outside::model_file_name(task);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(&name))
        .with_context(|| format!("moving the model into {}", dir.display()))?;
    let what = if standing.ours.is_some() { "commits" } else { "joins the task, commits" };
    println!(
        "model {} ({} bytes, {} non-zero parameters) passed the validators' checks and is in \
         {}; the trainer {what} by height {}, and reveals and serves it once the held-out key \
         is on chain",
        checked.sha256,
        checked.size_bytes,
        checked.params,
        dir.join(&name).display(),
        standing.commit_deadline
    );
    if args.wait {
        wait_committed(&client, task, &me, &standing, &dir.join(&name))?;
    }
    Ok(())
}

/// Reads where `me` stands in `task` from the node's API.
fn standing(
    client: &Client,
    task: TaskId,
    me: &AccountId,
    spec: &TaskSpec,
    status: &StatusView,
) -> anyhow::Result<Standing> {
    let view = client.task(task.0)?;
    let account = client.account(me)?;
    let ours = view.submissions.iter().find(|s| s.trainer == *me).map(|s| s.commitment.is_some());
    Ok(Standing {
        next: status.height.0 + 1,
        join_deadline: view.deadlines.join.0,
        commit_deadline: view.deadlines.commit.0,
        ended: view.summary.outcome.is_some(),
        joined: view.summary.joined,
        max_trainers: spec.max_trainers,
        creator: view.summary.creator == *me,
        ours,
        balance: u128::from(account.balance),
        cost: u128::from(spec.bond.0) + u128::from(spec.entry_fee.0),
    })
}

/// Pause between two polls of the node while waiting.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait for the commitment, whatever the chain's block rate.
const WAIT_MAX: Duration = Duration::from_secs(600);

/// Follows the node until its commitment for `task` is on the chain; fails if the node rejected
/// the file or the commit deadline passed without it.
fn wait_committed(
    client: &Client,
    task: TaskId,
    me: &AccountId,
    standing: &Standing,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let mut rejected = file.as_os_str().to_os_string();
    rejected.push(".rejected");
    let rejected = PathBuf::from(rejected);
    let end = Instant::now() + WAIT_MAX;
    loop {
        let view = client.task(task.0)?;
        let ours = view.submissions.iter().find(|s| s.trainer == *me);
        if let Some(at) = ours.and_then(|s| s.committed_at) {
            println!("committed to task {task} at height {}", at.height);
            return Ok(());
        }
        if rejected.exists() {
            bail!(
                "the trainer node rejected the model (see its log); it is now {}",
                rejected.display()
            );
        }
        let tip = client.status()?.height.0;
        if tip > standing.commit_deadline {
            bail!(
                "the commit deadline (height {}) passed without the node's commitment; see its log",
                standing.commit_deadline
            );
        }
        if Instant::now() >= end {
            bail!("no commitment after {} s; see the node's log", WAIT_MAX.as_secs());
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Standing {
        Standing {
            next: 5,
            join_deadline: 10,
            commit_deadline: 20,
            ended: false,
            joined: 1,
            max_trainers: 4,
            creator: false,
            ours: None,
            balance: 1_000,
            cost: 100,
        }
    }

    #[test]
    fn a_model_is_handed_in_only_while_the_account_can_still_commit() {
        assert_eq!(check_standing(&open()), Ok(()));
        let late = Standing { next: 11, ..open() };
        assert!(check_standing(&late).unwrap_err().contains("join window closed at height 10"));
        let joined = Standing { next: 20, ours: Some(false), ..open() };
        assert_eq!(check_standing(&joined), Ok(()), "joined: the commit window counts");
        let too_late = Standing { next: 21, ours: Some(false), ..open() };
        assert!(check_standing(&too_late).unwrap_err().contains("commit window closed"));
        let committed = Standing { ours: Some(true), ..open() };
        assert!(check_standing(&committed).unwrap_err().contains("already committed"));
        let full = Standing { joined: 4, ..open() };
        assert!(check_standing(&full).unwrap_err().contains("full (4 of 4"));
        let poor = Standing { balance: 99, ..open() };
        assert!(check_standing(&poor).unwrap_err().contains("needs 100"));
        let creator = Standing { creator: true, ..open() };
        assert!(check_standing(&creator).unwrap_err().contains("created the task"));
        let ended = Standing { ended: true, ..open() };
        assert!(check_standing(&ended).unwrap_err().contains("ended"));
    }
}
