//! A running node: the consensus driver, the role loops and the HTTP API, sharing one
//! [`context::NodeContext`].

pub mod context;

pub use context::{ChainEvent, Metrics, NodeContext, Role, SharedLedger, Submission, SubmitError};
