//! `flotilla gateway`: load config, start logging, serve until SIGTERM/SIGINT, reload on SIGHUP.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use flotilla_config::{Env, load_config, parse_config};
use flotilla_gateway::GatewayState;
use flotilla_router::Router;
use flotilla_telemetry::{Metrics, logging};
use tokio::signal::unix::{SignalKind, signal};

use flotilla_journal::{Journal, JournalOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::GatewayArgs;

/// Starts the Slack agents when the config has any; publishes their state to `/readyz` and
/// `/status` every second. Returns the journal so that shutdown can close it.
async fn start_agents(
    args: &GatewayArgs,
    state: &GatewayState,
    router: &Arc<Router>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Option<Journal>> {
    let config = router.config();
    if !config.agents.iter().any(|a| a.slack.is_some()) {
        return Ok(None);
    }
    let journal = open_journal(args, &config).await?;
    let handle = flotilla_agent::start(
        &config,
        router.clone(),
        journal.clone(),
        flotilla_agent::RuntimeConfig::default(),
        cancel.clone(),
        tracker,
    )
    .await
    .context("cannot start the agents")?;
    let state = state.clone();
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let stale_after = Duration::from_secs(10);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let statuses = handle.channel_statuses();
            let m = &state.metrics;
            for s in &statuses {
                let not_ready = s.not_ready(stale_after);
                let labels = flotilla_telemetry::metrics::ChannelLabels { app: s.app.clone() };
                m.channel_up.get_or_create(&labels).set(i64::from(not_ready.is_none()));
                m.channel_last_frame_age_ms.get_or_create(&labels).set(s.last_frame_age_ms.map_or(-1, |v| v as i64));
                m.channel_reconnects.get_or_create(&labels).set(s.reconnects as i64);
                m.channel_stale_detected.get_or_create(&labels).set(s.stale_detected as i64);
                m.channel_caught_up.get_or_create(&labels).set(s.caught_up_messages as i64);
                state.readiness.set(&format!("slack:{}", s.app), not_ready.map_or(Ok(()), Err));
            }
            state.set_status("channels", serde_json::json!(statuses));
            if let Ok(stats) = handle.journal.stats().await {
                state.metrics.journal_unfinished_turns.set(stats.unfinished_turns as i64);
                state.metrics.outbox_depth.set(stats.outbox_depth as i64);
                state.set_status(
                    "journal",
                    serde_json::json!({
                        "inbound_total": stats.inbound_total,
                        "unfinished_turns": stats.unfinished_turns,
                        "outbox_depth": stats.outbox_depth,
                        "file_bytes": stats.file_bytes,
                    }),
                );
            }
        }
    });
    Ok(Some(journal))
}

/// The journal's directory: --data-dir, else gateway.data_dir, else the state directory (a fleet
/// node gets its own subdirectory, so several nodes can run on one machine).
fn data_dir(args: &GatewayArgs, config: &flotilla_config::Config) -> std::path::PathBuf {
    args.data_dir.clone().or_else(|| config.gateway.data_dir.clone()).unwrap_or_else(|| {
        let state = logging::default_log_path(
            "journal",
            std::env::var("XDG_STATE_HOME").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
        match &args.node {
            Some(node) if args.store.is_some() => state.join(format!("node-{node}")),
            _ => state,
        }
    })
}

pub(crate) async fn open_journal(args: &GatewayArgs, config: &flotilla_config::Config) -> anyhow::Result<Journal> {
    let path = data_dir(args, config).join("journal.sqlite");
    let journal = Journal::open(JournalOptions::new(&path))
        .await
        .with_context(|| format!("cannot open the journal at {} (is another gateway using it?)", path.display()))?;
    tracing::info!(event = "journal_opened", path = %path.display());
    Ok(journal)
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    let config = match (&args.store, &args.config) {
        // A fleet node starts with nothing and runs what the store says.
        (Some(_), _) => parse_config("", &env, std::path::Path::new(".")).map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, Some(path)) => match load_config(path, &env) {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("fix the config and try again; `flotilla config check {}` shows the details", path.display());
                return Ok(ExitCode::from(1));
            }
        },
        (None, None) => anyhow::bail!("give --config FILE, or --store URL --node NAME to join a fleet"),
    };
    if let (Some(_), Some(path)) = (&args.store, &args.config) {
        eprintln!(
            "note: --config {} is not used by a fleet node: it runs the config applied with `flotilla fleet apply`",
            path.display()
        );
    }
    let log_name = match (&args.store, &args.node) {
        (Some(_), Some(node)) => format!("gateway-{node}"),
        _ => "gateway".to_owned(),
    };
    let log_path = args.log_file.clone().or_else(|| config.gateway.log_file.clone()).unwrap_or_else(|| {
        logging::default_log_path(
            &log_name,
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

    // Agents on Slack: journal, channels, turns, outbox.
    let agents_cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another gateway running?)"))?;
    let local = listener.local_addr()?;
    let journal = match &args.store {
        Some(url) => {
            Some(crate::cmd_fleet::start_node(&args, url, &state, &router, local, &agents_cancel, &tracker).await?)
        }
        None => start_agents(&args, &state, &router, &agents_cancel, &tracker).await?,
    };
    tracing::info!(event = "gateway_listening", addr = %local, log_file = %log_path.display(), "gateway listening on http://{local}");

    // SIGHUP reloads the config file; a broken file keeps the old config and says why. A fleet
    // node follows the store instead.
    let mut hup = signal(SignalKind::hangup())?;
    let reload_path = args.config.clone().filter(|_| args.store.is_none());
    let reload_router = router.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(reload_path) = &reload_path else {
                tracing::info!(
                    event = "sighup_ignored",
                    "SIGHUP ignored: a fleet node takes its config from the store (`flotilla fleet apply`)"
                );
                continue;
            };
            match load_config(reload_path, &Env::from_process()) {
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
    let threads = args
        .http_threads
        .map_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get), usize::from);
    flotilla_gateway::serve_threads(listener, state, shutdown, Duration::from_secs(args.drain_timeout), threads)
        .await?;
    // Intake stopped and HTTP drained: stop the channels and turns (a fleet node revokes its
    // lease, so its Slack apps move to other nodes at once), then flush the journal.
    agents_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
        tracing::warn!(
            event = "agents_drain_timeout",
            "agent tasks still running after 10 s; unfinished turns resume at the next start"
        );
    }
    if let Some(j) = journal
        && let Err(e) = j.close().await
    {
        tracing::error!(event = "journal_close_failed", error = %e);
    }
    tracing::info!(event = "gateway_stopped", "gateway stopped");
    Ok(ExitCode::SUCCESS)
}
