//! Crucible's validator: artifact checks, deterministic held-out evaluation and verdict vectors.
//!
//! Validators decide who gets paid, so a verdict must be correct, reproducible by every honest
//! validator, and impossible to crash or game with a crafted file. The pieces, in the order a
//! validator uses them for a task in its scoring window:
//!
//! 1. `trainer::sealed::open` opens the sealed held-out file a validator fetched in the join window with
//!    the key the creator put on chain, and checks that `sha256(salt || bytes)` is the task's
//!    commitment ([`heldout`] reads a plain held-out file beside its salt, as `node score` does); [`eval::prepare_heldout`] reads it with the task's preprocessing and
//!    checks it holds the spec's `heldout_examples` ([`eval::prepare`] reads the public training
//!    part).
//! 2. [`check::check_artifact`] runs every check on an artifact's bytes, in a fixed order, with a
//!    typed reason for each failure; the safetensors header is read by [`artifact`], which bounds
//!    every size before allocating.
//! 3. [`eval`] evaluates a checked model with the trainer's model code in a fixed order (same
//!    bits for any thread count) and computes the trivial baseline.
//! 4. [`score::score_task`] puts it all together into the verdict vector, and [`verdicts`]
//!    builds the `CommitScores` / `RevealScores` transactions.

pub mod artifact;
pub mod check;
pub mod eval;
pub mod heldout;
pub mod score;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verdicts;
