//! One module per subcommand.

pub mod keys;
