//! A running node: the consensus driver, the role loops and the HTTP API, sharing one
//! [`context::NodeContext`].

pub mod catchup;
pub mod config;
pub mod context;
pub mod driver;
pub mod error;
pub mod startup;
pub mod sync;

pub use config::{ConfigFile, Flags, NodeConfig};
pub use context::{
    ChainEvent, ExternalTxs, LiveVotes, Metrics, NodeContext, Role, SharedLedger, Submission,
    SubmitError,
};
pub use driver::Driver;
pub use error::DriverError;
pub use startup::{load_genesis, start};
