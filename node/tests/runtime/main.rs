//! Real `node` processes on loopback: validators reach consensus together, a transaction sent to
//! one node commits everywhere, a SIGKILLed validator resumes from its store and keeps voting, a
//! trainer started late follows the whole chain ([`chain`]); a validator and a trainer take a
//! task from join to finalization ([`roles_e2e`]); a node stops when its supervisor goes
//! ([`exit_with_stdin`]).
//!
//! One test binary, so the suites share [`support`] and its lock: the tests run one network at a
//! time (each starts up to five processes); every wait is bounded, and nothing asserts on timing.

mod chain;
mod exit_with_stdin;
mod roles_e2e;
mod support;
