//! One module per subcommand.

pub mod keys;
pub mod ledger;
pub mod score;
pub mod task;
pub mod train;
