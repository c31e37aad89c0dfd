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
        SimApi::Slack => return run_slack(args).await,
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

async fn run_slack(args: SimArgs) -> anyhow::Result<ExitCode> {
    use flotilla_sim::slack::{AppSpec, SlackHandle, SlackSimConfig};
    let mut config = SlackSimConfig::default();
    for a in &args.apps {
        let spec: AppSpec = a.parse().map_err(|e| anyhow::anyhow!("--app {a}: {e}"))?;
        config = config.app(spec);
    }
    if config.apps.is_empty() {
        config = config.app(AppSpec::new("flotilla-app"));
    }
    let handle = SlackHandle::new(config).map_err(|e| anyhow::anyhow!("invalid simulator setup: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    #[expect(clippy::print_stdout, reason = "the listening address is the command's output")]
    {
        println!("http://{addr}");
    }
    let ws = handle.workspace();
    eprintln!("slack simulator on http://{addr}: set api_base = \"http://{addr}/api\" in [slack.NAME]");
    for app in &ws.apps {
        eprintln!(
            "  app {}: app_token {} bot_token {} (bot user {})",
            app.name, app.app_token, app.bot_token, app.bot_user_id
        );
    }
    let users: Vec<&str> = ws.users.iter().map(|u| u.name.as_str()).collect();
    eprintln!(
        "  users: {}; post as a user: curl -X POST http://{addr}/_sim/messages -d '{{\"channel\":\"general\",\"user\":\"alice\",\"text\":\"hi\"}}'",
        users.join(", ")
    );
    let mut term = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    flotilla_sim::slack::serve(listener, handle, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
