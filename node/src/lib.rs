//! Crucible's network node: command line, keystore, and (in later issues) the libp2p swarm, role
//! loops and HTTP API.

pub mod blobs;
pub mod cli;
pub mod client;
pub mod commands;
pub mod datadir;
pub mod http;
pub mod keystore;
pub mod mempool;
pub mod network;
pub mod roles;
pub mod runtime;
