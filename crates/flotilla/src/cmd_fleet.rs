//! `flotilla fleet ...`, `flotilla auth ...` and the fleet side of `flotilla gateway --store`.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use flotilla_auth::{KeyFile, OAuthOptions, StoredCredential, default_key_path};
use flotilla_config::Env;
use flotilla_fleet::ops::{self, ApplyOptions, Progress, Rollout};
use flotilla_fleet::{Keys, NodeHost, NodeOptions, NodeReport, StoreSessions};
use flotilla_gateway::GatewayState;
use flotilla_journal::Journal;
use flotilla_router::Router;
use flotilla_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{AuthArgs, AuthCommand, FleetArgs, FleetCommand, GatewayArgs, StoreArgs};

/// The default store: the embedded SQLite file in the state directory.
pub fn default_store_url() -> String {
    let path = flotilla_telemetry::logging::default_log_path(
        "store",
        std::env::var("XDG_STATE_HOME").ok().as_deref(),
        std::env::var("HOME").ok().as_deref(),
    )
    .with_extension("sqlite");
    format!("sqlite:{}", path.display())
}

async fn open_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    let url = args.store.clone().unwrap_or_else(default_store_url);
    flotilla_store::open(&url).await.with_context(|| format!("cannot open the cluster store {url}"))
}

fn key_path(explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| default_key_path(|k| std::env::var(k).ok()))
}

/// The key file if it exists; a missing one is not an error where only names are needed.
fn optional_key(explicit: Option<&PathBuf>) -> anyhow::Result<Option<Arc<KeyFile>>> {
    let path = key_path(explicit);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Arc::new(KeyFile::load(&path)?)))
}

/// Joins the fleet: opens the journal, starts the node loop (registration, config, Slack apps, OAuth) and
/// publishes its report in `/status` and `/readyz`. Returns the journal for shutdown.
pub async fn start_node(
    args: &GatewayArgs,
    url: &str,
    state: &GatewayState,
    router: &Arc<Router>,
    local: SocketAddr,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Journal> {
    let node = args.node.clone().context("--store needs --node NAME")?;
    let store = flotilla_store::open(url).await.with_context(|| format!("cannot open the cluster store {url}"))?;
    let keys = Keys::new(&args.prefix);
    let key_file = optional_key(args.key_file.as_ref())?;
    if key_file.is_none() {
        tracing::warn!(event = "no_key_file", path = %key_path(args.key_file.as_ref()).display(), "no fleet key file: credentials stored with `flotilla auth` cannot be opened on this node; copy the key file here");
    }
    let config = router.config();
    let journal = crate::cmd_gateway::open_journal(args, &config).await?;
    let rc = flotilla_agent::RuntimeConfig {
        sessions: Some(Arc::new(StoreSessions::new(store.clone(), keys.clone()))),
        ..Default::default()
    };
    let runtime = flotilla_agent::Runtime::new(router.clone(), journal.clone(), rc, tracker.clone())?;
    runtime.start_compaction(cancel.clone());
    let mut opts = NodeOptions::new(&node);
    opts.keys = keys;
    opts.ttl = Duration::from_secs(args.lease_ttl.max(1));
    opts.health_timeout = Duration::from_secs(args.health_timeout.max(1));
    opts.addresses = vec![format!("http://{local}")];
    opts.key_file = key_file;
    opts.env = Env::from_process();
    let report_state = state.clone();
    let on_report = Arc::new(move |r: &NodeReport| {
        report_state.set_status("node", serde_json::to_value(r).unwrap_or_default());
        let ready = if r.healthy || r.verifying { Ok(()) } else { Err(r.problems.join("; ")) };
        report_state.readiness.set("fleet", ready);
    });
    state.readiness.set("fleet", Err("registering with the cluster store".to_owned()));
    let host = NodeHost {
        store,
        router: router.clone(),
        runtime,
        on_report,
        http: reqwest::Client::builder().build().context("cannot build the http client")?,
    };
    tracing::info!(event = "node_starting", node = %node, store = %url, "joining the fleet as node {node}");
    let cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = flotilla_fleet::node::run(opts, host, cancel).await {
            tracing::error!(event = "node_failed", error = %e, "the fleet node stopped");
        }
    });
    Ok(journal)
}

fn progress_bar(json: bool) -> Option<ProgressBar> {
    if json {
        return None;
    }
    let bar = ProgressBar::new(1);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} nodes ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

fn on_progress(bar: Option<&ProgressBar>, p: &Progress) {
    if let Some(bar) = bar {
        bar.set_length(p.targets as u64);
        bar.set_position(p.converged as u64);
        bar.set_message(format!("{}: config v{}", p.phase, p.version));
    } else {
        tracing::debug!(phase = p.phase, version = p.version, converged = p.converged, targets = p.targets);
    }
}

fn print_rollout(r: &Rollout, json: bool, what: &str) -> ExitCode {
    if json {
        #[expect(clippy::print_stdout, reason = "the command's output")]
        {
            println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        }
    } else {
        eprintln!("{}/{} nodes on config v{} ({what}, {} ms)", r.converged.len(), r.nodes, r.version, r.elapsed_ms);
        for (node, why) in &r.failed {
            eprintln!("  FAILED on {node}: {why}");
        }
        for (node, why) in &r.pending {
            eprintln!("  not converged: {node}: {why}");
        }
        if let Some(v) = r.rolled_back_to {
            eprintln!("the fleet's desired config was set back to v{v}");
        }
    }
    if r.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

pub async fn fleet(args: FleetArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store).await?;
    let keys = Keys::new(&args.store.prefix);
    let result = match args.command {
        FleetCommand::Apply { file, canary, timeout, json } => {
            let (text, base_dir) = ops::read_config_file(&file)?;
            let opts = ApplyOptions {
                canary,
                timeout: Duration::from_secs(timeout),
                env: Env::from_process(),
                base_dir,
                key_file: optional_key(args.key_file.as_ref())?,
                note: format!("apply {}", file.display()),
            };
            let bar = progress_bar(json);
            let r = ops::apply(store.as_ref(), &keys, &text, &opts, |p| on_progress(bar.as_ref(), p)).await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            r.map(|r| print_rollout(&r, json, "apply"))
        }
        FleetCommand::Rollback { version, timeout, json } => {
            let bar = progress_bar(json);
            let r = ops::rollback(store.as_ref(), &keys, version, Duration::from_secs(timeout), |p| {
                on_progress(bar.as_ref(), p)
            })
            .await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            r.map(|r| print_rollout(&r, json, "rollback"))
        }
        FleetCommand::Status { json } => ops::status(store.as_ref(), &keys).await.map(|s| {
            #[expect(clippy::print_stdout, reason = "the command's output")]
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print!("{}", ops::render_status(&s));
            }
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

pub async fn auth(args: AuthArgs) -> anyhow::Result<ExitCode> {
    let path = key_path(args.key_file.as_ref());
    if let AuthCommand::Keygen = args.command {
        let existed = path.exists();
        let key = KeyFile::load_or_create(&path)?;
        let verb = if existed { "exists" } else { "created" };
        eprintln!(
            "fleet key file {verb}: {} (fingerprint {})\ncopy it to every node (mode 0600) or point FLOTILLA_KEY_FILE at it; it never goes into the store",
            path.display(),
            key.fingerprint()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(&args.store).await?;
    let keys = Keys::new(&args.store.prefix);
    let env = |k: &str| std::env::var(k).ok();
    let result = match args.command {
        AuthCommand::Keygen => return Ok(ExitCode::SUCCESS),
        AuthCommand::Add { name, provider, api_key_env, api_key_file, oauth_file, token_url, client_id } => {
            let key = KeyFile::load_or_create(&path)?;
            let cred = match (api_key_env, api_key_file, oauth_file) {
                (Some(var), _, _) => StoredCredential::from_api_key_env(&provider, &var, env)?,
                (_, Some(file), _) => StoredCredential::from_api_key_file(&provider, &file)?,
                (_, _, Some(file)) => {
                    let opts = OAuthOptions { api: None, token_url, client_id };
                    StoredCredential::from_oauth_file_with(&provider, &file, &opts)?
                }
                _ => anyhow::bail!(
                    "give the credential with --api-key-env VAR, --api-key-file PATH or --oauth-file PATH"
                ),
            };
            ops::auth_add(store.as_ref(), &keys, &key, &name, &cred).await.map(|replaced| {
                let verb = if replaced { "replaced" } else { "stored" };
                eprintln!(
                    "{verb} auth profile {name} ({}) in {}, sealed with key {}; nodes pick it up now",
                    cred.kind(),
                    store.describe(),
                    key.fingerprint()
                );
                ExitCode::SUCCESS
            })
        }
        AuthCommand::Secret { path: secret_path, from_env, from_file } => {
            let key = KeyFile::load_or_create(&path)?;
            let cred = match (from_env, from_file) {
                (Some(var), _) => StoredCredential::from_secret_env(&var, env)?,
                (_, Some(file)) => StoredCredential::from_secret_file(&file)?,
                _ => anyhow::bail!("give the value with --from-env VAR or --from-file PATH"),
            };
            ops::secret_put(store.as_ref(), &keys, &key, &secret_path, &cred).await.map(|replaced| {
                let verb = if replaced { "replaced" } else { "stored" };
                eprintln!("{verb} secret {secret_path}; write it as \"secret:{secret_path}\" in the config");
                ExitCode::SUCCESS
            })
        }
        AuthCommand::List { json } => {
            let key = optional_key(args.key_file.as_ref())?;
            ops::auth_list(store.as_ref(), &keys, key.as_deref()).await.map(|entries| {
                #[expect(clippy::print_stdout, reason = "the command's output")]
                if json {
                    println!("{}", serde_json::to_string_pretty(&entries).unwrap_or_default());
                } else {
                    for e in &entries {
                        let exp = e.expires_at.as_deref().map(|x| format!(", expires {x}")).unwrap_or_default();
                        let problem = e.problem.as_deref().map(|p| format!("  ({p})")).unwrap_or_default();
                        println!("{:<6} {:<32} {}{exp}{problem}", e.place, e.name, e.kind);
                    }
                }
                ExitCode::SUCCESS
            })
        }
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
