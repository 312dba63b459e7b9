//! One module per subcommand.

pub mod http_client;
pub mod init;
pub mod keys;
pub mod ledger;
pub mod run;
pub mod score;
pub mod status;
pub mod submit;
pub mod task;
pub mod train;
pub mod tx;
