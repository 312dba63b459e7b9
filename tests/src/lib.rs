//! Integration tests across crates and processes. The test targets live in `tests/tests/`; this
//! library holds what they share: [`net`], the suites' networks of node processes (the
//! `testnet` library's, planned for the tests);
//! [`attacker`], hostile libp2p peers and HTTP clients for the hostile suite; and
//! [`suite`], the multi-call `main` of a target that starts such networks; and [`webdriver`], a
//! small WebDriver client that drives headless Chromium for the explorer test.

pub mod attacker;
pub mod net;
pub mod suite;
pub mod webdriver;
