//! A deterministic simulator for the engine: many validators in one process, a seeded scheduler
//! on virtual time, and the safety and liveness invariants checked after every step.
//!
//! One run is fully determined by its [`SimConfig`] (seed, fault mix, mutant, WAL switch): the
//! network, the faults, the validators' stakes and the engine timeouts all come from one
//! `ChaCha8` stream, and every collection iterates in a fixed order, so a failing seed replays
//! exactly with the command [`SimConfig::replay_command`] prints.
//!
//! What is simulated:
//! - 4 to 10 validators with unequal stakes (1 to 100);
//! - message delays (which reorder), duplicates and, until the network heals, drops of up to a
//!   third of the messages, partitions and isolated (lagging) validators;
//! - crashes at random times and right after a precommit (before or after it is sent), with a
//!   restart from the write-ahead log (or, to show why it exists, from an empty one);
//! - Byzantine validators holding less than a third of the stake that equivocate, vote for
//!   invalid or unknown blocks, withhold their votes, or never propose;
//! - catch-up: a validator that sees a later height asks a peer for the block and its commit
//!   certificate, which its engine verifies against the height's validator set.
//!
//! Checked after every step: no two honest validators commit different blocks at one height;
//! every block an honest validator commits is valid; no honest validator signs two conflicting
//! votes (the evidence check the ledger slashes with); and once the network has healed, every
//! honest validator commits again within [`LIVENESS_BOUND_MS`] of simulated time.

mod network;
mod run;

pub use run::{FaultMix, MIXES, SimConfig, SimOutcome, Violation, ViolationKind, run};

use serde::{Deserialize, Serialize};

use crate::encoding::encode;
use crate::hash::tagged_hash;
use crate::types::{Hash, Height, Round};

use super::types::Value;

/// How long after the network heals (or after its previous commit) an honest validator may go
/// without committing, in simulated milliseconds.
pub const LIVENESS_BOUND_MS: u64 = 60_000;

/// The simulator's block: just enough to tell blocks apart and to be invalid on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimBlock {
    /// The height it was built for.
    pub height: Height,
    /// The round it was built in.
    pub round: Round,
    /// The index of the validator that built it.
    pub proposer: u16,
    /// A per-builder counter, so two blocks of one proposer differ.
    pub nonce: u64,
    /// Whether the application accepts it (a Byzantine builder makes invalid ones).
    pub valid: bool,
}

impl Value for SimBlock {
    fn id(&self) -> Hash {
        tagged_hash(b"crucible/sim-block/v1", &[&encode(self)])
    }
}
