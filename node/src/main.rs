//! The `node` binary: parses the command line and runs it; all logic lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    node::cli::main()
}
