//! A task's windows: its deadlines and phase, the windows that close early once everyone that
//! may act in them has acted, and the deadlines-table entry that tracks its next deadline.

use crate::commitment::HeldoutKey;
use crate::types::{Height, TaskId};

use super::{Due, Phase, State, Task};

impl Task {
    /// Last height at which trainers may join.
    pub fn join_deadline(&self) -> Height {
        self.created_at.plus(self.spec.windows.join)
    }
    /// Last height at which trainers may commit: where the window closed early (see
    /// [`Progress`](super::Progress)), or `windows.commit` blocks after the join deadline.
    pub fn commit_deadline(&self) -> Height {
        self.progress.commit_closed.unwrap_or(self.join_deadline().plus(self.spec.windows.commit))
    }
    /// Last height at which the creator may reveal the held-out key: the height it landed at,
    /// or `windows.key` blocks after the commit deadline.
    pub fn key_deadline(&self) -> Height {
        match self.key {
            Some((_, at)) => at,
            None => self.commit_deadline().plus(self.spec.windows.key),
        }
    }
    /// Last height at which trainers may reveal: where the window closed early, or
    /// `windows.reveal` blocks after the key deadline.
    pub fn reveal_deadline(&self) -> Height {
        self.progress.reveal_closed.unwrap_or(self.key_deadline().plus(self.spec.windows.reveal))
    }
    /// Whether validators holding more than 2/3 of the snapshot stake attested so far.
    pub fn attestation_quorum(&self) -> bool {
        let total: u64 = self.stakes.values().sum();
        crate::validators::is_quorum(self.attested_stake, total)
    }
    /// The held-out key, if it is on chain.
    pub fn heldout_key(&self) -> Option<HeldoutKey> {
        self.key.map(|(k, _)| k)
    }
    /// The height at which this task finalizes, as far as the state at `height` knows: the join
    /// deadline if the attestations fell short, the key deadline if the key is missing then,
    /// the score deadline otherwise.
    pub(super) fn due_at(&self, height: Height) -> Option<Height> {
        if self.report.is_some() {
            None
        } else if height >= self.join_deadline() && !self.attestation_quorum() {
            Some(self.join_deadline())
        } else if height >= self.key_deadline() && self.key.is_none() {
            Some(self.key_deadline())
        } else {
            Some(self.score_deadline())
        }
    }
    /// The first deadline at or after `height` at which the task may finalize (see
    /// [`Task::due_at`]): the join deadline, the key deadline while the key is missing, or the
    /// score deadline.
    pub(super) fn next_deadline(&self, height: Height) -> Option<Height> {
        let key = self.key.is_none().then(|| self.key_deadline());
        [Some(self.join_deadline()), key, Some(self.score_deadline())]
            .into_iter()
            .flatten()
            .filter(|d| *d >= height)
            .min()
    }
    /// Last height at which validators may commit scores: where the window closed early, or
    /// `windows.score_commit` blocks after the reveal deadline.
    pub fn score_commit_deadline(&self) -> Height {
        self.progress
            .score_commit_closed
            .unwrap_or(self.reveal_deadline().plus(self.spec.windows.score_commit))
    }
    /// Last height at which validators may reveal scores, and the block in which the task
    /// finalizes: where the window closed early, or `windows.score_reveal` blocks after the score
    /// commit deadline.
    pub fn score_deadline(&self) -> Height {
        self.progress
            .score_reveal_closed
            .unwrap_or(self.score_commit_deadline().plus(self.spec.windows.score_reveal))
    }

    /// Closes, at `height`, every window whose acting set is exhausted, in order (one close can
    /// leave the next window with nobody to wait for). Changes nothing before the join deadline
    /// or once a window's deadline has passed.
    pub(super) fn close_exhausted_windows(&mut self, height: Height) {
        if height < self.join_deadline() || self.report.is_some() {
            return;
        }
        let p = &self.progress;
        if p.commit_closed.is_none()
            && p.committed == self.joined
            && height < self.commit_deadline()
        {
            self.progress.commit_closed = Some(height);
        }
        // The key window closes by itself: its deadline is the height where the key landed.
        let p = &self.progress;
        if self.key.is_some()
            && p.reveal_closed.is_none()
            && p.revealed == p.committed
            && height > self.commit_deadline()
            && height < self.reveal_deadline()
        {
            self.progress.reveal_closed = Some(height);
        }
        let p = &self.progress;
        let validators = u32::try_from(self.stakes.len()).unwrap_or(u32::MAX);
        if p.score_commit_closed.is_none()
            && p.scores_committed == validators
            && height > self.reveal_deadline()
            && height < self.score_commit_deadline()
        {
            self.progress.score_commit_closed = Some(height);
        }
        let p = &self.progress;
        if p.score_reveal_closed.is_none()
            && p.scores_revealed == p.scores_committed
            && p.scores_committed > 0
            && height > self.score_commit_deadline()
            && height < self.score_deadline()
        {
            self.progress.score_reveal_closed = Some(height);
        }
    }

    /// The phase at `height` (the height of the block being executed).
    pub fn phase(&self, height: Height) -> Phase {
        if self.report.is_some() {
            Phase::Finalized
        } else if height <= self.join_deadline() {
            Phase::Join
        } else if height <= self.commit_deadline() {
            Phase::Commit
        } else if height <= self.key_deadline() && self.key.is_none() {
            Phase::Key
        } else if height <= self.reveal_deadline() {
            Phase::Reveal
        } else if height <= self.score_commit_deadline() {
            Phase::ScoreCommit
        } else {
            Phase::ScoreReveal
        }
    }
}

impl State {
    /// Makes a tx's `change` to a task at `height`, closes the task's windows whose acting set
    /// that exhausted (see [`Progress`](super::Progress)), and moves its deadlines-table entry to
    /// its new next deadline: early closes cost the txs that cause them, never a scan of open
    /// tasks.
    pub(super) fn change_task(
        &mut self,
        id: TaskId,
        height: Height,
        change: impl FnOnce(&mut Task),
    ) {
        self.tasks.modify(&id, |t| {
            change(t);
            t.close_exhausted_windows(height);
        });
        self.schedule_due_check(id, height);
    }

    /// Keeps one `Finalize` entry per open task, at its first deadline at or after `height`
    /// (deadlines only ever move earlier, so the entry does too).
    pub(super) fn schedule_due_check(&mut self, id: TaskId, height: Height) {
        let Some(task) = self.tasks.get(&id) else { return };
        let old = task.due_check;
        let next = match task.report {
            Some(_) => None,
            None => task.next_deadline(height),
        };
        if next == Some(old) {
            return;
        }
        self.deadlines.remove(&(old, id));
        if let Some(next) = next {
            self.deadlines.insert((next, id), Due::Finalize);
            self.tasks.modify(&id, |t| t.due_check = next);
        }
    }
}
