//! `flotilla gateway`: load config, start logging, serve until SIGTERM/SIGINT, reload on SIGHUP.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use flotilla_config::{Env, load_config};
use flotilla_gateway::GatewayState;
use flotilla_router::Router;
use flotilla_telemetry::{Metrics, logging};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::GatewayArgs;

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    let config = match load_config(&args.config, &env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "fix the config and try again; `flotilla config check {}` shows the details",
                args.config.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let log_path = args.log_file.clone().or_else(|| config.gateway.log_file.clone()).unwrap_or_else(|| {
        logging::default_log_path(
            "gateway",
            std::env::var("XDG_STATE_HOME").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )
    });
    let _log_guard = logging::init(&args.log_level, Some(&log_path))
        .with_context(|| format!("cannot open log file {}", log_path.display()))?;
    let listen = args.listen.unwrap_or(config.gateway.listen);
    if !listen.ip().is_loopback() && config.gateway.keys.is_empty() {
        anyhow::bail!("refusing to listen on {listen} without [gateway].keys: add a key or listen on 127.0.0.1");
    }
    let keys = config.gateway.keys.clone();
    let metrics = Arc::new(Metrics::new());
    let router = Arc::new(Router::new(Arc::new(config), metrics).context("cannot build the upstream HTTP client")?);
    let state = GatewayState::new(router.clone(), keys);
    state.readiness.set("router", Ok(()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another gateway running?)"))?;
    let local = listener.local_addr()?;
    tracing::info!(event = "gateway_listening", addr = %local, log_file = %log_path.display(), "gateway listening on http://{local}");

    // SIGHUP reloads the config file; a broken file keeps the old config and says why.
    let mut hup = signal(SignalKind::hangup())?;
    let reload_path = args.config.clone();
    let reload_router = router.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match load_config(&reload_path, &Env::from_process()) {
                Ok(c) => {
                    reload_router.reload(Arc::new(c));
                    tracing::info!(event = "config_reloaded", path = %reload_path.display(), "config reloaded");
                }
                Err(e) => {
                    tracing::error!(event = "config_reload_failed", path = %reload_path.display(), errors = %e, "config reload failed, keeping the old config")
                }
            }
        }
    });

    let mut term = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(event = "gateway_shutdown", "shutting down: no new requests, draining in-flight ones");
    };
    flotilla_gateway::serve(listener, state, shutdown, Duration::from_secs(args.drain_timeout)).await?;
    tracing::info!(event = "gateway_stopped", "gateway stopped");
    Ok(ExitCode::SUCCESS)
}
