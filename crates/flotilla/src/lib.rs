//! The `flotilla` command: one binary whose subcommands run the gateway, check config, run the
//! simulators, the demo and the benchmarks. `main.rs` only parses arguments and calls [`run`].

mod bench;
pub mod cli;
mod cmd_config;
mod cmd_fleet;
mod cmd_gateway;
mod cmd_sim;
mod demo;
mod demo_fleet;

use std::process::ExitCode;

use cli::{Cli, Command, ConfigCommand};

/// Runs one command and turns its result into the process exit code: 0 success, 1 the
/// command's own failure (bad config, lost requests), 2 usage or environment errors.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Gateway(args) => cmd_gateway::run(args).await,
            Command::Config { command: ConfigCommand::Check(args) } => cmd_config::check(args),
            Command::Sim(args) => cmd_sim::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Fleet(args) => cmd_fleet::fleet(args).await,
            Command::Auth(args) => cmd_fleet::auth(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
