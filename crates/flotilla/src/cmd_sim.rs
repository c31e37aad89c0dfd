//! `flotilla sim anthropic|openai`: run a simulator in the foreground until Ctrl-C/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use flotilla_sim::{SimConfig, SimHandle, SimKind};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{SimApi, SimArgs};

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let kind = match args.api {
        SimApi::Anthropic => SimKind::Anthropic,
        SimApi::Openai => SimKind::OpenAi,
    };
    let mut config = SimConfig::new(kind);
    config.accepted_keys = args.keys;
    config.latency = Duration::from_millis(args.latency_ms);
    config.ttft = Duration::from_millis(args.ttft_ms);
    config.tokens_per_sec = args.tokens_per_sec;
    config.reply_tokens = args.reply_tokens;
    // A long-running simulator must not grow without bound; tests that need the request log
    // use the library form.
    config.record_limit = 200;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first line on stdout is the address, so scripts and the benchmark can read it.
    #[expect(clippy::print_stdout, reason = "the listening address is the command's output")]
    {
        println!("http://{addr}");
    }
    eprintln!(
        "{kind} simulator on http://{addr} (models: {}); faults: POST http://{addr}/_sim/faults, stats: GET http://{addr}/_sim/stats",
        config.models.join(", ")
    );
    let mut term = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    flotilla_sim::serve(listener, config, SimHandle::new(), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
