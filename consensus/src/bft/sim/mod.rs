//! A deterministic simulator for the engine: many validators in one process, a seeded scheduler
//! on virtual time, and the safety, liveness and memory invariants checked after every step.
//!
//! One run is fully determined by its [`SimConfig`] (seed, fault mix, mutant, WAL switch,
//! validator range): the network, the faults, the validators' stakes and the engine timeouts all
//! come from one `ChaCha8` stream, and every collection iterates in a fixed order, so a failing
//! seed replays exactly with the command [`SimConfig::replay_command`] prints.
//!
//! The simulator runs the real thing where it matters: the ledger's [`crate::block::Block`],
//! whose id is its header's hash only, judged by [`App::check`] as the ledger judges it (body
//! against header, header against the chain, last commit against the height's validator set);
//! the engine with its real buffers and bounds; and, in the `disk` mixes, the real
//! [`super::FileWal`] on a file.
//!
//! What is simulated:
//! - 4 to 10 validators by default (`--validators MIN..MAX`, up to 50 and more) with unequal
//!   stakes (1 to 100);
//! - message delays (which reorder), duplicates and, until the network heals, drops of up to a
//!   third of the messages, partitions and isolated (lagging) validators;
//! - crashes at random times, right after a precommit (before or after it is sent), and in the
//!   middle of a log write (the record torn), with a restart from the write-ahead log (or, to show
//!   why it exists, from an empty one); corruption in the middle of a log file, which the
//!   validator must refuse to start on (the simulator then restores the file, as an operator
//!   would);
//! - validator-set changes: a Byzantine validator slashed at height `h` has less power from
//!   `h + 2` on;
//! - Byzantine validators holding less than a third of the stake that equivocate, vote for
//!   invalid or unknown blocks, withhold their votes, never propose, swap a block's body under its
//!   valid header (as proposer, with the later-round proposal sent first, and as a relay of
//!   others' proposals), answer sync with swapped bodies and tampered certificates, flood
//!   far-future heights and rounds and next-height messages, and propose for rounds that are not
//!   theirs or re-propose with a forged proof of prevotes;
//! - catch-up: a validator that sees a later height (shown by more than a third of the power)
//!   asks a peer for the block and its commit certificate, which its engine verifies against the
//!   height's validator set.
//!
//! Checked after every step: no two honest validators commit different blocks at one height;
//! no honest validator commits a block its ledger refuses; no honest validator signs two
//! conflicting votes; an honest validator prevotes only for a block the round's proposer
//! proposed, and never against its lock without a quorum of prevotes from a round at or after the
//! lock; it asks for a commit only of a height an honest validator committed; its memory for peer
//! messages stays under [`super::Engine::peer_bytes_bound`]; a log corrupted in its middle is
//! refused; and once the network has healed, every honest validator commits again within
//! [`LIVENESS_BOUND_MS`] of simulated time.

mod app;
mod network;
mod run;
mod wal;

pub use app::{App, CHAIN_ID, Link, POISON};
pub use run::{
    Behavior, FaultMix, MIXES, SimConfig, SimOutcome, Violation, ViolationKind, mutant_name,
    mutant_named, run,
};
pub use wal::{SimWal, WalDir};

/// How long after the network heals (or after its previous commit) an honest validator may go
/// without committing, in simulated milliseconds.
pub const LIVENESS_BOUND_MS: u64 = 60_000;
