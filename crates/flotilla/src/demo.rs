//! `flotilla demo`: a provider outage on one machine, with nothing to set up. Starts the
//! Anthropic and OpenAI simulators and a gateway in this process, sends steady traffic in all
//! three API formats, overloads Anthropic for a while, and reports what the clients saw.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use flotilla_agent::RuntimeConfig;
use flotilla_config::{Env, parse_config};
use flotilla_gateway::GatewayState;
use flotilla_journal::{Journal, JournalOptions};
use flotilla_router::Router;
use flotilla_sim::slack::{AppSpec, DisconnectReason, DropMode, SlackSim, SlackSimConfig};
use flotilla_sim::{Fault, FaultRule, SimConfig, SimServer};
use flotilla_slack::socket::Liveness;
use flotilla_telemetry::Metrics;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::DemoArgs;

/// The outage's phases, by when a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Before,
    Outage,
    After,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Before => "before outage",
            Phase::Outage => "during outage",
            Phase::After => "after outage",
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
struct PhaseStats {
    sent: u64,
    ok: u64,
    failed: u64,
    failed_over: u64,
    by_model: BTreeMap<String, u64>,
    #[serde(skip)]
    latencies_us: Vec<u64>,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Default)]
struct Tally {
    phases: BTreeMap<Phase, PhaseStats>,
    errors: Vec<String>,
    /// Seconds since start of the first answer by the primary after the outage ended.
    primary_back_at: Option<f64>,
}

/// The demo's final result (printed as a table, or JSON with `--json`).
#[derive(Debug, Serialize)]
struct Report {
    sent: u64,
    answered: u64,
    failed: u64,
    lost: u64,
    failovers: u64,
    primary_back_after_outage_s: Option<f64>,
    phases: BTreeMap<Phase, PhaseStats>,
    router_overhead_p50_us: f64,
    router_overhead_p99_us: f64,
    first_errors: Vec<String>,
    slack: SlackReport,
    passed: bool,
}

/// What the simulated Slack users saw.
#[derive(Debug, Default, Serialize)]
struct SlackReport {
    messages_sent: usize,
    answered: usize,
    lost: usize,
    doubled: usize,
    socket_faults: u32,
    reconnects: u64,
    stale_sockets_detected: u64,
    caught_up_messages: u64,
}

const PRIMARY: &str = "anthropic/claude-opus-4-6";

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.nodes > 0 {
        return crate::demo_fleet::run(args).await;
    }
    let (before, outage, after) =
        if args.quick { (2, 4, 5) } else { (args.before_secs, args.outage_secs, args.after_secs) };
    let cooldown = if args.quick { 1 } else { args.cooldown_secs };
    let total = before + outage + after;

    let mut ant_cfg = SimConfig::anthropic();
    ant_cfg.latency = Duration::from_millis(15);
    ant_cfg.ttft = Duration::from_millis(10);
    ant_cfg.tokens_per_sec = 400.0;
    ant_cfg.reply_tokens = 12;
    let mut oai_cfg = SimConfig::openai();
    oai_cfg.latency = Duration::from_millis(20);
    oai_cfg.ttft = Duration::from_millis(10);
    oai_cfg.tokens_per_sec = 400.0;
    oai_cfg.reply_tokens = 12;
    let ant = flotilla_sim::spawn(ant_cfg).await.context("cannot start the Anthropic simulator")?;
    let oai = flotilla_sim::spawn(oai_cfg).await.context("cannot start the OpenAI simulator")?;

    let slack = flotilla_sim::slack::spawn(
        SlackSimConfig::default()
            .app(AppSpec::new("assistant-app").tokens(SLACK_TOKENS[0].0, SLACK_TOKENS[0].1))
            .app(AppSpec::new("family-app").tokens(SLACK_TOKENS[1].0, SLACK_TOKENS[1].1)),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the Slack simulator: {e}"))?;
    let config_text = demo_config(&ant, &oai, cooldown, &slack.api_url());
    let env = Env::from_pairs([
        ("DEMO_ANTHROPIC_KEY", "sk-ant-demo-0001"),
        ("DEMO_OPENAI_KEY", "sk-demo-0002"),
        ("DEMO_ASSISTANT_APP", SLACK_TOKENS[0].0),
        ("DEMO_ASSISTANT_BOT", SLACK_TOKENS[0].1),
        ("DEMO_FAMILY_APP", SLACK_TOKENS[1].0),
        ("DEMO_FAMILY_BOT", SLACK_TOKENS[1].1),
    ]);
    let config = parse_config(&config_text, &env, std::path::Path::new("."))
        .map_err(|e| anyhow::anyhow!("the demo's built-in config is invalid (a bug): {e}"))?;
    let metrics = Arc::new(Metrics::new());
    let router = Arc::new(Router::new(Arc::new(config.clone()), metrics.clone())?);
    // The agents on Slack: journal in a temporary directory, channels with a short ping so the
    // demo's stale sockets are found quickly.
    let data = tempfile::tempdir()?;
    let journal = Journal::open(JournalOptions::new(data.path().join("journal.sqlite"))).await?;
    let agents_cancel = CancellationToken::new();
    let agents_tracker = TaskTracker::new();
    let mut rc = RuntimeConfig::default();
    rc.channel.liveness = Liveness { ping_interval: Duration::from_secs(1), pong_timeout: Duration::from_secs(2) };
    let agents =
        flotilla_agent::start(&config, router.clone(), journal.clone(), rc, agents_cancel.clone(), &agents_tracker)
            .await
            .context("cannot start the demo's agents")?;
    let state = GatewayState::new(router, Vec::new());
    state.readiness.set("router", Ok(()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let stop_signal = stop.clone();
    let server = tokio::spawn(flotilla_gateway::serve(
        listener,
        state,
        async move { stop_signal.cancelled().await },
        Duration::from_secs(5),
    ));

    eprintln!(
        "flotilla demo: Anthropic simulator {}, OpenAI simulator {}, gateway {gateway_url}",
        ant.url(),
        oai.url()
    );
    eprintln!(
        "chain of agent \"assistant\": {PRIMARY} → openai/gpt-5.3-codex; agent \"family\": anthropic/claude-sonnet-4-5 → (inherited) openai/gpt-5.3-codex"
    );
    eprintln!(
        "timeline: {before}s normal, {outage}s Anthropic overload (529), {after}s after; {} req/s in Anthropic, OpenAI chat and Responses formats, streaming and not\n",
        args.rate
    );

    // The outage is a scheduled fault rule in the simulator, exactly as a test would script it.
    ant.handle().add_fault(FaultRule::new(Fault::Overloaded).window(before * 1000, Some(outage * 1000)));

    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let tracker = TaskTracker::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_report = Duration::from_secs(1);
    let mut next_fault = Duration::from_secs(2);
    let mut socket_faults: u32 = 0;
    let mut n: u64 = 0;
    while started.elapsed() < Duration::from_secs(total) {
        tick.tick().await;
        let t = started.elapsed();
        let phase = if t < Duration::from_secs(before) {
            Phase::Before
        } else if t < Duration::from_secs(before + outage) {
            Phase::Outage
        } else {
            Phase::After
        };
        let outage_end = (before + outage) as f64;
        tracker.spawn(one_request(client.clone(), gateway_url.clone(), n, phase, tally.clone(), started, outage_end));
        if n.is_multiple_of(5) {
            slack_message(&slack, n);
        }
        if t >= next_fault {
            next_fault += Duration::from_secs(4);
            slack_fault(&slack, socket_faults);
            socket_faults += 1;
        }
        n += 1;
        if t >= next_report {
            next_report += Duration::from_secs(1);
            live_line(&tally, t, phase, &slack);
        }
    }
    tracker.close();
    let drained = tokio::time::timeout(Duration::from_secs(30), tracker.wait()).await.is_ok();
    if !drained {
        eprintln!("some requests were still running 30 s after the traffic stopped");
    }
    // Every Slack message must be answered exactly once; give the last gap time to heal.
    let slack_settled =
        slack.handle().wait_until(Duration::from_secs(60), |h| h.exactly_once_report().unanswered.is_empty()).await;
    if !slack_settled {
        eprintln!("some Slack messages were still unanswered 60 s after the traffic stopped");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let so = slack.handle().exactly_once_report();
    let statuses = agents.channel_statuses();
    let slack_report = SlackReport {
        messages_sent: so.sent,
        answered: so.answered_once,
        lost: so.unanswered.len(),
        doubled: so.doubled.len(),
        socket_faults,
        reconnects: statuses.iter().map(|s| s.reconnects).sum(),
        stale_sockets_detected: statuses.iter().map(|s| s.stale_detected).sum(),
        caught_up_messages: statuses.iter().map(|s| s.caught_up_messages).sum(),
    };
    agents_cancel.cancel();
    agents_tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), agents_tracker.wait()).await;
    let _ = journal.close().await;
    let overhead = metrics.overhead_summary();
    stop.cancel();
    let _ = server.await;

    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    for s in t.phases.values_mut() {
        s.latencies_us.sort_unstable();
        s.p50_ms = percentile(&s.latencies_us, 0.50);
        s.p99_ms = percentile(&s.latencies_us, 0.99);
    }
    let sent: u64 = t.phases.values().map(|s| s.sent).sum();
    let answered: u64 = t.phases.values().map(|s| s.ok).sum();
    let failed: u64 = t.phases.values().map(|s| s.failed).sum();
    let failovers: u64 = t.phases.values().map(|s| s.failed_over).sum();
    let lost = sent - answered - failed;
    let passed = failed == 0
        && lost == 0
        && t.primary_back_at.is_some()
        && slack_report.lost == 0
        && slack_report.doubled == 0
        && slack_report.messages_sent > 0;
    let report = Report {
        sent,
        answered,
        failed,
        lost,
        failovers,
        primary_back_after_outage_s: t.primary_back_at.map(|s| s - (before + outage) as f64),
        phases: t.phases,
        router_overhead_p50_us: overhead.p50_us,
        router_overhead_p99_us: overhead.p99_us,
        first_errors: t.errors.into_iter().take(5).collect(),
        slack: slack_report,
        passed,
    };
    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", render(&report, outage));
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn demo_config(ant: &SimServer, oai: &SimServer, cooldown: u64, slack_api: &str) -> String {
    format!(
        r#"
[router]
ttfb_timeout = "5s"
request_timeout = "30s"
overload_cooldown = "{cooldown}s"

[agents.defaults.model]
primary = "{PRIMARY}"
fallbacks = ["openai/gpt-5.3-codex"]

[[agents.list]]
id = "assistant"
slack = "assistant-app"
system_prompt = "You are a helpful assistant."

[[agents.list]]
id = "family"
slack = "family-app"
model = {{ primary = "anthropic/claude-sonnet-4-5" }}
system_prompt = "You help the family."

[slack.assistant-app]
app_token = "env:DEMO_ASSISTANT_APP"
bot_token = "env:DEMO_ASSISTANT_BOT"
api_base = "{slack_api}"

[slack.family-app]
app_token = "env:DEMO_FAMILY_APP"
bot_token = "env:DEMO_FAMILY_BOT"
api_base = "{slack_api}"

[providers.anthropic]
api = "anthropic"
base_url = "{}"
auth = ["anthropic-demo"]

[providers.openai]
api = "openai"
base_url = "{}"
auth = ["openai-demo"]

[auth.anthropic-demo]
provider = "anthropic"
type = "api-key"
key = "env:DEMO_ANTHROPIC_KEY"

[auth.openai-demo]
provider = "openai"
type = "api-key"
key = "env:DEMO_OPENAI_KEY"
"#,
        ant.url(),
        oai.url()
    )
}

async fn one_request(
    client: reqwest::Client,
    gateway: String,
    n: u64,
    phase: Phase,
    tally: Arc<Mutex<Tally>>,
    started: Instant,
    outage_end_s: f64,
) {
    let agent = if n % 3 == 2 { "family" } else { "assistant" };
    let prompt = format!("message {n}: what should we plan for dinner?");
    let stream = n % 2 == 1;
    let (path, body) = match n % 4 {
        0 | 1 => (
            "/v1/messages",
            json!({"model": agent, "max_tokens": 256, "stream": stream, "messages": [{"role": "user", "content": prompt}]}),
        ),
        2 => (
            "/v1/chat/completions",
            json!({"model": agent, "stream": stream, "messages": [{"role": "user", "content": prompt}]}),
        ),
        _ => ("/v1/responses", json!({"model": agent, "stream": stream, "input": prompt})),
    };
    let sent = Instant::now();
    {
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        t.phases.entry(phase).or_default().sent += 1;
    }
    let result = async {
        let resp = client.post(format!("{gateway}{path}")).json(&body).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let model = resp.headers().get("x-flotilla-model").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
        let attempts: u32 =
            resp.headers().get("x-flotilla-attempts").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path} {status}: {}", text.chars().take(300).collect::<String>()));
        }
        // A stream that ended in an error event is a failure the client saw.
        if stream && (text.contains("event: error") || text.contains("\"error\":{")) {
            return Err(format!("{path} stream ended with an error: {}", text.chars().take(300).collect::<String>()));
        }
        Ok((model, attempts))
    }
    .await;
    let elapsed = sent.elapsed();
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    let at = started.elapsed().as_secs_f64();
    match result {
        Ok((model, attempts)) => {
            if phase == Phase::After
                && model == PRIMARY
                && at >= outage_end_s
                && t.primary_back_at.is_none_or(|b| at < b)
            {
                t.primary_back_at = Some(at);
            }
            let s = t.phases.entry(phase).or_default();
            s.ok += 1;
            if attempts > 1 {
                s.failed_over += 1;
            }
            *s.by_model.entry(model).or_default() += 1;
            s.latencies_us.push(elapsed.as_micros() as u64);
        }
        Err(e) => {
            t.phases.entry(phase).or_default().failed += 1;
            t.errors.push(e);
        }
    }
}

fn live_line(tally: &Arc<Mutex<Tally>>, t: Duration, phase: Phase, slack: &SlackSim) {
    let g = tally.lock().unwrap_or_else(|p| p.into_inner());
    let (mut sent, mut ok, mut failed, mut fo) = (0, 0, 0, 0);
    let mut by_model: BTreeMap<&str, u64> = BTreeMap::new();
    for s in g.phases.values() {
        sent += s.sent;
        ok += s.ok;
        failed += s.failed;
        fo += s.failed_over;
        for (m, c) in &s.by_model {
            *by_model.entry(m.split('/').next().unwrap_or(m)).or_default() += c;
        }
    }
    let models: Vec<String> = by_model.iter().map(|(m, c)| format!("{m} {c}")).collect();
    drop(g);
    let so = slack.handle().exactly_once_report();
    eprintln!(
        "t={:>3}s  [{:<13}]  api: sent {sent:>5} ok {ok:>5} failed {failed} failovers {fo:>4} ({})  slack: sent {} answered {} doubled {}",
        t.as_secs(),
        phase.label(),
        models.join(", "),
        so.sent,
        so.answered_once,
        so.doubled.len()
    );
}

fn percentile(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0
}

fn render(r: &Report, outage_secs: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\n== flotilla demo: {outage_secs}-second Anthropic overload ==");
    let _ = writeln!(
        s,
        "{:<15} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}  answered by",
        "phase", "sent", "ok", "failed", "failovers", "p50 ms", "p99 ms"
    );
    for (phase, p) in &r.phases {
        let who: Vec<String> = p.by_model.iter().map(|(m, c)| format!("{m} {c}")).collect();
        let _ = writeln!(
            s,
            "{:<15} {:>6} {:>6} {:>6} {:>9} {:>9.1} {:>9.1}  {}",
            phase.label(),
            p.sent,
            p.ok,
            p.failed,
            p.failed_over,
            p.p50_ms,
            p.p99_ms,
            who.join(", ")
        );
    }
    let _ = writeln!(s, "\nrequests sent {}, answered {}, failed {}, lost {}", r.sent, r.answered, r.failed, r.lost);
    let _ = writeln!(
        s,
        "failovers: {} requests answered by a fallback after the primary failed or was skipped",
        r.failovers
    );
    match r.primary_back_after_outage_s {
        Some(d) => {
            let _ = writeln!(
                s,
                "primary {PRIMARY} answering again {d:.1} s after the outage ended (breaker cooldown, then a probe)"
            );
        }
        None => {
            let _ = writeln!(s, "primary {PRIMARY} did NOT answer again after the outage");
        }
    }
    let _ = writeln!(
        s,
        "router's own time per request: p50 {:.0} µs, p99 {:.0} µs (a busy machine or a debug build inflates it; see BENCHMARKS.md)",
        r.router_overhead_p50_us, r.router_overhead_p99_us
    );
    let sl = &r.slack;
    let _ = writeln!(
        s,
        "slack: messages sent {}, answered {}, lost {}, doubled {} (through {} socket faults: {} reconnects, {} stale sockets detected, {} history messages re-checked by catch-up)",
        sl.messages_sent,
        sl.answered,
        sl.lost,
        sl.doubled,
        sl.socket_faults,
        sl.reconnects,
        sl.stale_sockets_detected,
        sl.caught_up_messages
    );
    for e in &r.first_errors {
        let _ = writeln!(s, "error: {e}");
    }
    let _ = writeln!(
        s,
        "\nresult: {}",
        if r.passed {
            "PASS: no request failed or was lost, no Slack message lost or doubled, and the primary came back"
        } else {
            "FAIL"
        }
    );
    s
}

const SLACK_TOKENS: [(&str, &str); 2] =
    [("xapp-1-ADEMO1-1-demo", "xoxb-demo-assistant"), ("xapp-1-ADEMO2-1-demo", "xoxb-demo-family")];

/// A simulated user writes to one of the two agents: a DM, or a mention in #general.
fn slack_message(slack: &SlackSim, n: u64) {
    let h = slack.handle();
    let users = ["alice", "bob", "carol"];
    let user = users[(n as usize / 5) % users.len()];
    let app = if (n / 5).is_multiple_of(2) { "assistant-app" } else { "family-app" };
    let result = if (n / 10).is_multiple_of(2) {
        match h.dm_channel(user, app) {
            Some(dm) => {
                h.post_user_message(&dm, user, &format!("slack message {n}: are we still on for Friday?"), None)
            }
            None => return,
        }
    } else {
        let Some(bot) = h.app(app).map(|a| a.bot_user_id) else { return };
        h.post_user_message("general", user, &format!("<@{bot}> slack message {n}: summarise the week"), None)
    };
    if let Err(e) = result {
        eprintln!("slack simulator refused a message: {e}");
    }
}

/// One socket fault, in turn: reset, silence (half-open), disconnect warning, clean close.
fn slack_fault(slack: &SlackSim, i: u32) {
    let h = slack.handle();
    let app = if i.is_multiple_of(2) { "assistant-app" } else { "family-app" };
    let _ = match i % 4 {
        0 => h.drop_connections(app, DropMode::Reset),
        1 => h.silence(app),
        2 => h.disconnect(app, DisconnectReason::Warning, Some(Duration::from_secs(3))),
        _ => h.drop_connections(app, DropMode::Close),
    };
}
