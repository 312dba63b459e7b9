//! Crucible's network node: command line, keystore, and (in later issues) the libp2p swarm, role
//! loops and HTTP API.

pub mod cli;
pub mod commands;
pub mod keystore;
