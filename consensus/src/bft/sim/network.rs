//! The simulated network: a queue of timed deliveries on virtual time, and the partitions that
//! decide who can reach whom.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::block::Block;
use crate::types::Height;
use crate::vote::CommitCertificate;

use super::super::types::{Message, Timeout};

/// Something that happens at a simulated time.
#[derive(Clone, Debug)]
pub enum Item {
    /// A message reaches a validator.
    Deliver {
        /// The receiver.
        to: usize,
        /// The message.
        message: Message<Block>,
    },
    /// A validator's timer fires (unless the validator restarted since: `epoch` differs).
    Timer {
        /// The validator.
        node: usize,
        /// Its incarnation when the timer was set.
        epoch: u32,
        /// The timer.
        timeout: Timeout,
    },
    /// A sync answer reaches a validator.
    CommitReply {
        /// The receiver.
        to: usize,
        /// The block.
        block: Block,
        /// Its certificate.
        certificate: CommitCertificate,
    },
    /// A sync request reaches a peer.
    CommitRequest {
        /// The asking validator.
        from: usize,
        /// The asked peer.
        to: usize,
        /// The height asked for.
        height: Height,
    },
    /// A validator crashes.
    Crash {
        /// The validator.
        node: usize,
    },
    /// A crashed validator restarts from its log.
    Restart {
        /// The validator.
        node: usize,
    },
}

struct Scheduled {
    at_ms: u64,
    seq: u64,
    item: Item,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap pops the earliest time, then the earliest scheduled.
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// Timed items in firing order; ties fire in the order they were scheduled.
#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
}

impl Queue {
    /// Schedules an item at `at_ms`.
    pub fn push(&mut self, at_ms: u64, item: Item) {
        self.seq += 1;
        self.heap.push(Scheduled { at_ms, seq: self.seq, item });
    }

    /// The next item and its time.
    pub fn pop(&mut self) -> Option<(u64, Item)> {
        self.heap.pop().map(|s| (s.at_ms, s.item))
    }
}

/// A period during which validators in different groups cannot reach each other.
#[derive(Clone, Debug)]
pub struct Partition {
    /// Start, in simulated milliseconds.
    pub from_ms: u64,
    /// End (exclusive).
    pub until_ms: u64,
    /// The group of each validator.
    pub group: Vec<u8>,
}

/// Who can reach whom, and when.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// The partitions, all of which end by the time the network heals.
    pub partitions: Vec<Partition>,
}

impl Topology {
    /// Whether a message from `a` to `b` sent at `at_ms` can arrive.
    pub fn reachable(&self, a: usize, b: usize, at_ms: u64) -> bool {
        self.partitions
            .iter()
            .all(|p| at_ms < p.from_ms || at_ms >= p.until_ms || p.group[a] == p.group[b])
    }
}
