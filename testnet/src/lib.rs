//! `testnet`: a whole local Crucible network with one command, and the library that owns "a
//! running network" ([`network::Network`]: write a plan's files, start its nodes, post a task,
//! wait on the chain, stop) for the launcher, its bench and the `crucible-tests` suites.
//!
//! From one seed it derives every key, the genesis, the demo task (a split of a data file with
//! label noise in its public part), the trainers' recipes and the nodes' configs ([`plan`]), writes
//! them into one directory ([`files`]), starts every node as a process of this same executable
//! ([`launch`], [`network`]; cargo builds no other package's binary for `cargo run -p testnet`),
//! posts the task and follows it over the nodes' HTTP API ([`client`], [`run`]) until it finalizes, prints the
//! leaderboard and payouts ([`report`]), checks that every node has the same block hash and state
//! root at the height after finalization, and stops every node. `--scenario private-data`
//! ([`private`]) gives the trainers private clean data of their own instead of different recipes.
//! `--hosts` ([`hosts`]) puts every node on a host of its own (a network namespace) behind an
//! emulated switch whose links add latency, jitter and loss.

pub mod client;
pub mod files;
pub mod hosts;
pub mod interrupt;
pub mod launch;
pub mod network;
pub mod plan;
pub mod private;
pub mod report;
pub mod run;
