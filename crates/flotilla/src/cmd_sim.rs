//! `flotilla sim`: run a simulator in the foreground.

use std::process::ExitCode;

use crate::cli::SimArgs;

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("simulator {:?} is not wired in yet", args.api)
}
