//! One module per subcommand.

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

use std::time::Duration;

use crate::client::{Client, HttpError};

/// How long one of the CLI's requests may take (a file upload to a node on the LAN included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of the node at `url` for a CLI command.
pub fn client(url: &str) -> Result<Client, HttpError> {
    Ok(Client::new(url)?.with_timeout(REQUEST_TIMEOUT))
}
