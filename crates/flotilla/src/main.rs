//! The `flotilla` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = flotilla::cli::Cli::parse();
    flotilla::run(cli)
}
