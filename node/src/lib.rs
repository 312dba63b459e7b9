//! Crucible's network node: command line, keystore, the libp2p swarm, the role loops and the HTTP
//! API.

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
