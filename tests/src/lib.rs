//! Integration tests across crates and processes. The test targets live in `tests/tests/`; this
//! library holds what they share: [`net`], a running local network of node processes, and
//! [`suite`], the multi-call `main` of a target that starts such networks.

pub mod net;
pub mod suite;
