//! `flotilla demo --nodes N`: the incident and its fix, as a fleet on one machine. N gateway processes join
//! the embedded store (or etcd with `--store`); three agents run on Slack with no fallback configured; Anthropic
//! overloads and the agents go quiet; `fleet apply` adds the fallback to every node (`N/N converged`) and the
//! waiting messages are answered; then a node is killed with SIGKILL and its agents move to the others.
//! Exits 0 only if every user message was answered exactly once and the killed node's agents moved.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use flotilla_auth::{KeyFile, StoredCredential};
use flotilla_config::Env;
use flotilla_fleet::Keys;
use flotilla_fleet::ops::{self, ApplyOptions};
use flotilla_sim::slack::{AppSpec, SlackSimConfig};
use flotilla_sim::{Fault, FaultRule, SimConfig};
use flotilla_store::Store;
use secrecy::SecretString;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::cli::DemoArgs;

const APPS: [(&str, &str, &str); 3] = [
    ("family-app", "xapp-1-AFAM-1-demo", "xoxb-family-demo"),
    ("ops-app", "xapp-1-AOPS-1-demo", "xoxb-ops-demo"),
    ("research-app", "xapp-1-ARES-1-demo", "xoxb-research-demo"),
];

#[derive(Debug, Default, Serialize)]
struct FleetReport {
    nodes: usize,
    store: String,
    messages_sent: u64,
    answered: u64,
    lost: u64,
    doubled: u64,
    /// Messages still waiting for an answer when the fix was applied (the outage without fallback).
    waiting_before_fix: u64,
    fix_version: u64,
    fix_converged_ms: u64,
    killed_node: String,
    moved: Vec<String>,
    takeover_ms: u64,
    passed: bool,
}

fn config(ant: &str, oai: &str, slack_api: &str, with_fallback: bool) -> String {
    let fallbacks = if with_fallback { r#"["openai/gpt-5.3-codex"]"# } else { "[]" };
    let mut out = format!(
        r#"# the fleet demo's config (v1: the incident's state; v2: the fix)
[router]
overload_cooldown = "2s"
ttfb_timeout = "3s"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = {fallbacks}

[providers.anthropic]
api = "anthropic"
base_url = "{ant}"
auth = ["anthropic-main"]

[providers.openai]
api = "openai"
base_url = "{oai}"
auth = ["openai-main"]
"#
    );
    for (app, ..) in APPS {
        let agent = app.trim_end_matches("-app");
        out.push_str(&format!(
            r#"
[[agents.list]]
id = "{agent}"
slack = "{app}"
system_prompt = "You are the {agent} agent."

[slack.{app}]
app_token = "secret:slack/{app}/app"
bot_token = "secret:slack/{app}/bot"
api_base = "{slack_api}"
"#
        ));
    }
    out
}

fn say(json: bool, line: &str) {
    if !json {
        eprintln!("{line}");
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let n = args.nodes.max(2);
    let ttl: u64 = if args.quick { 3 } else { 5 };
    let json = args.json;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let store_url =
        args.store.clone().unwrap_or_else(|| format!("sqlite:{}", dir.path().join("store.sqlite").display()));
    let store = flotilla_store::open(&store_url).await.with_context(|| format!("cannot open the store {store_url}"))?;
    // A demo on a shared etcd keeps to its own prefix.
    let keys = Keys::new(&format!("/flotilla-demo-{}", std::process::id()));

    let mut a = SimConfig::anthropic();
    a.latency = Duration::from_millis(15);
    a.reply_tokens = 10;
    let mut o = SimConfig::openai();
    o.latency = Duration::from_millis(20);
    o.reply_tokens = 10;
    let ant = flotilla_sim::spawn(a).await.context("cannot start the Anthropic simulator")?;
    let oai = flotilla_sim::spawn(o).await.context("cannot start the OpenAI simulator")?;
    let mut scfg = SlackSimConfig::default();
    for (app, at, bt) in APPS {
        scfg = scfg.app(AppSpec::new(app).tokens(at, bt));
    }
    let slack =
        flotilla_sim::slack::spawn(scfg).await.map_err(|e| anyhow::anyhow!("cannot start the Slack simulator: {e}"))?;
    let h = slack.handle().clone();

    // Credentials go into the store once, sealed; no node gets a copied file.
    let key_path = dir.path().join("fleet.key");
    let key = KeyFile::load_or_create(&key_path)?;
    let secret = |v: &str| StoredCredential::secret(SecretString::from(v.to_owned()));
    ops::auth_add(
        store.as_ref(),
        &keys,
        &key,
        "anthropic-main",
        &StoredCredential::api_key("anthropic", SecretString::from("sk-ant-demo-0001")),
    )
    .await?;
    ops::auth_add(
        store.as_ref(),
        &keys,
        &key,
        "openai-main",
        &StoredCredential::api_key("openai", SecretString::from("sk-demo-0002")),
    )
    .await?;
    for (app, at, bt) in APPS {
        ops::secret_put(store.as_ref(), &keys, &key, &format!("slack/{app}/app"), &secret(at)).await?;
        ops::secret_put(store.as_ref(), &keys, &key, &format!("slack/{app}/bot"), &secret(bt)).await?;
    }

    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut nodes: Vec<(String, Option<Child>)> = Vec::new();
    for i in 1..=n {
        let name = format!("node-{i}");
        let child = spawn_node(&exe, &name, &store_url, &keys, &key_path, dir.path(), ttl)?;
        nodes.push((name, Some(child)));
    }
    say(json, &format!("started {n} gateway nodes on {} (lease TTL {ttl} s)", store.describe()));
    wait_nodes(store.as_ref(), &keys, n).await?;

    let opts = ApplyOptions {
        canary: None,
        timeout: Duration::from_secs(30),
        env: Env::default(),
        base_dir: dir.path().to_path_buf(),
        key_file: Some(Arc::new(KeyFile::load(&key_path)?)),
        note: "demo".to_owned(),
    };
    let v1 = ops::apply(store.as_ref(), &keys, &config(&ant.url(), &oai.url(), &slack.api_url(), false), &opts, |_| {})
        .await?;
    say(
        json,
        &format!(
            "v{}: {}/{} nodes converged: three agents on Slack, anthropic only (no fallback: the incident's config)",
            v1.version,
            v1.converged.len(),
            v1.nodes
        ),
    );
    if !v1.ok() {
        anyhow::bail!("the first config did not converge: {v1:?}");
    }

    // Users talk to every agent from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let dms: Vec<String> = APPS.iter().filter_map(|(app, ..)| h.dm_channel("alice", app)).collect();
    let talker = {
        let (h, stop, sent) = (h.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if h.post_user_message(&dms[i % dms.len()], "alice", &format!("question {i}"), None).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The incident: Anthropic overloads, and with no fallback every agent goes quiet.
    let outage = ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    say(json, "anthropic answers 529 overloaded: with no fallback, every agent on every node goes quiet ...");
    tokio::time::sleep(Duration::from_secs(if args.quick { 3 } else { 5 })).await;
    let waiting = h.exactly_once_report().unanswered.len() as u64;
    say(json, &format!("  {waiting} user messages waiting for an answer"));

    // The fix, applied once to the whole fleet.
    let started = Instant::now();
    let fix = ops::apply(store.as_ref(), &keys, &config(&ant.url(), &oai.url(), &slack.api_url(), true), &opts, |p| {
        if !json {
            eprintln!("  applying v{}: {}/{} nodes", p.version, p.converged, p.targets);
        }
    })
    .await?;
    let fix_ms = started.elapsed().as_millis() as u64;
    say(
        json,
        &format!(
            "v{}: {}/{} nodes converged in {fix_ms} ms: fallback openai/gpt-5.3-codex on every agent",
            fix.version,
            fix.converged.len(),
            fix.nodes
        ),
    );
    let drained = h.wait_until(Duration::from_secs(30), |h| h.exactly_once_report().unanswered.len() <= 3).await;
    say(json, &format!("  waiting messages answered by the fallback: {}", if drained { "yes" } else { "NOT ALL" }));
    ant.handle().remove_fault(outage);

    // A node dies: its agents move.
    let status = ops::status(store.as_ref(), &keys).await?;
    let victim = status.owners.values().next().map(|o| o.node.clone()).context("no Slack app has an owner")?;
    let moved: Vec<String> =
        status.owners.iter().filter(|(_, o)| o.node == victim).map(|(app, _)| app.clone()).collect();
    let killed_at = Instant::now();
    if let Some((_, Some(child))) = nodes.iter_mut().find(|(name, _)| *name == victim) {
        child.start_kill().context("cannot kill the node")?;
        let _ = child.wait().await;
    }
    say(json, &format!("killed {victim} (SIGKILL); it owned {}", moved.join(", ")));
    let mut takeover_ms = 0;
    let mut new_owners = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(ttl + 20);
    while Instant::now() < deadline {
        let s = ops::status(store.as_ref(), &keys).await?;
        let owners: Vec<(String, String)> = moved
            .iter()
            .filter_map(|app| s.owners.get(app).filter(|o| o.node != victim).map(|o| (app.clone(), o.node.clone())))
            .collect();
        if owners.len() == moved.len() && moved.iter().all(|app| h.connection_count(app) == 1) {
            takeover_ms = killed_at.elapsed().as_millis() as u64;
            new_owners = owners;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (app, node) in &new_owners {
        say(json, &format!("  {app}: {victim} → {node} in {takeover_ms} ms"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || talker.join()).await;
    h.wait_until(Duration::from_secs(30), |h| h.exactly_once_report().unanswered.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = h.exactly_once_report();
    for (_, child) in &mut nodes {
        if let Some(c) = child {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
    let report = FleetReport {
        nodes: n,
        store: store.describe(),
        messages_sent: r.sent as u64,
        answered: r.answered_once as u64,
        lost: r.unanswered.len() as u64,
        doubled: r.doubled.len() as u64,
        waiting_before_fix: waiting,
        fix_version: fix.version,
        fix_converged_ms: fix_ms,
        killed_node: victim,
        moved: new_owners.iter().map(|(app, node)| format!("{app}→{node}")).collect(),
        takeover_ms,
        passed: fix.ok() && r.unanswered.is_empty() && r.doubled.is_empty() && !new_owners.is_empty() && r.sent > 0,
    };
    if json {
        #[expect(clippy::print_stdout, reason = "the command's output")]
        {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    } else {
        eprintln!(
            "\n{} user messages, {} answered exactly once, {} lost, {} doubled; fix converged on {n} nodes in {} ms; takeover in {} ms\n{}",
            report.messages_sent,
            report.answered,
            report.lost,
            report.doubled,
            report.fix_converged_ms,
            report.takeover_ms,
            if report.passed { "PASSED" } else { "FAILED" }
        );
    }
    if !report.passed {
        let kept = dir.keep();
        eprintln!("node logs kept in {}", kept.display());
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn spawn_node(
    exe: &Path,
    name: &str,
    store: &str,
    keys: &Keys,
    key: &Path,
    dir: &Path,
    ttl: u64,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.stderr")))?;
    let prefix = keys.root();
    Command::new(exe)
        .args(["gateway", "--store", store, "--node", name, "--listen", "127.0.0.1:0"])
        .arg("--prefix")
        .arg(prefix.trim_end_matches('/'))
        .arg("--key-file")
        .arg(key)
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--log-file")
        .arg(dir.join(format!("{name}.json.log")))
        .args(["--lease-ttl", &ttl.to_string(), "--health-timeout", "10"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

async fn wait_nodes(store: &dyn Store, keys: &Keys, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ops::status(store, keys).await?.nodes.len() == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the nodes did not register within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
