//! `flotilla config check FILE`.

use std::process::ExitCode;

use flotilla_config::{Env, load_config, render_check_report};

use crate::cli::ConfigCheckArgs;

pub fn check(args: ConfigCheckArgs) -> anyhow::Result<ExitCode> {
    let result = load_config(&args.file, &Env::from_process());
    let report = render_check_report(&result);
    let code = if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) };
    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    {
        print!("{report}");
    }
    Ok(code)
}
