//! `flotilla bench router`: measures, in one run on one machine, what the gateway adds to a
//! request compared with calling the simulator directly, and compares it with what a bare
//! nginx `proxy_pass` hop adds (when nginx is installed), plus the open-breaker failover path,
//! streaming time to first token, the gateway's own in-process time, memory and CPU.
//!
//! Everything under test runs as a separate process (simulators and gateway are children of
//! this executable), so the load generator in this process measures them over real loopback
//! HTTP/1.1 keep-alive connections, the way a client would.

mod client;
mod load;
mod procs;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{BenchArgs, BenchCommand, BenchRouterArgs};
use load::{LoadSpec, Measure};
use procs::Proc;
use report::{Added, GatewayUsage, NginxUsage, Overhead, Phase, Report, Settings, Target};

/// The key every simulator is called with (they accept any non-empty key).
const BENCH_KEY: &str = "sk-bench-not-a-secret";
const ANTHROPIC_MODEL: &str = "claude-opus-4-6";
const OPENAI_MODEL: &str = "gpt-4o-mini";
/// The gateway agent whose chain is anthropic → openai.
const AGENT: &str = "bench";
const PROMPT: &str = "Say hello to the benchmark.";
/// Stream pacing of the simulators. Unpaced, a simulator sends a whole reply in one write and
/// the gateway decodes every event of it before forwarding the first, so "time to first
/// token" would include the whole reply; paced like a (fast) real model, the first delta
/// travels alone. Non-streaming answers are not affected.
const SIM_TOKENS_PER_SEC: f64 = 1000.0;

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Router(a) => router(a).await,
    }
}

/// The run's settings after `--quick` and the defaults are applied.
#[derive(Debug, Clone)]
struct Plan {
    rate: f64,
    stream_rate: f64,
    warmup: Duration,
    duration: Duration,
    concurrency: usize,
    nginx: Option<PathBuf>,
    gateway_threads: Option<usize>,
    /// Rounds in which the direct, nginx and gateway phases take turns.
    rounds: usize,
}

impl Plan {
    fn from_args(a: &BenchRouterArgs) -> anyhow::Result<Self> {
        let (rate, stream_rate, warmup, duration, rounds) =
            if a.quick { (500.0, 100.0, 1.0, 3.0, 1) } else { (2000.0, 200.0, 2.0, 10.0, 5) };
        let rounds = a.rounds.unwrap_or(rounds);
        anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
        let rate = a.rate.unwrap_or(rate);
        let stream_rate = a.stream_rate.unwrap_or(stream_rate);
        let warmup = a.warmup.unwrap_or(warmup);
        let duration = a.duration.unwrap_or(duration);
        for (name, v) in [("--rate", rate), ("--stream-rate", stream_rate), ("--duration", duration)] {
            anyhow::ensure!(v.is_finite() && v > 0.0, "{name} must be a positive number, not {v}");
        }
        anyhow::ensure!(warmup.is_finite() && warmup >= 0.0, "--warmup must be zero or more seconds, not {warmup}");
        anyhow::ensure!(a.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(a.gateway_threads != Some(0), "--gateway-threads must be at least 1");
        let nginx = if a.no_nginx { None } else { procs::find_nginx(a.nginx.as_deref()) };
        Ok(Plan {
            rate,
            stream_rate,
            warmup: Duration::from_secs_f64(warmup),
            duration: Duration::from_secs_f64(duration),
            concurrency: a.concurrency,
            nginx,
            gateway_threads: a.gateway_threads,
            rounds,
        })
    }

    fn settings(&self) -> Settings {
        Settings {
            rate: self.rate,
            stream_rate: self.stream_rate,
            warmup_s: self.warmup.as_secs_f64(),
            duration_s: self.duration.as_secs_f64(),
            concurrency: self.concurrency,
            sim_tokens_per_sec: SIM_TOKENS_PER_SEC,
            gateway_threads: self.gateway_threads,
            rounds: self.rounds,
            late_after_ms: load::LATE_AFTER.as_secs_f64() * 1000.0,
        }
    }
}

async fn router(args: BenchRouterArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::from_args(&args)?;
    let mut term = signal(SignalKind::terminate())?;
    // Dropping the measuring future drops the process handles, which kill the children.
    let report = tokio::select! {
        r = measure(&plan) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the simulators, the gateway and nginx were stopped"),
        _ = term.recv() => anyhow::bail!("terminated; the simulators, the gateway and nginx were stopped"),
    };
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        s
    } else {
        report::render_table(&report)
    };
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The gateway's config: one agent whose chain is the Anthropic simulator, then the OpenAI one.
fn gateway_config(anthropic_url: &str, openai_url: &str) -> String {
    format!(
        r#"# Written by `flotilla bench router`.
[router]
# The breaker-open phase measures the open-breaker path; a cooldown longer than the run keeps
# the primary's breaker open throughout, so no half-open probe lands in the middle of it.
overload_cooldown = "1h"

[agents.defaults.model]
primary = "anthropic/{ANTHROPIC_MODEL}"
fallbacks = ["openai/{OPENAI_MODEL}"]

[[agents.list]]
id = "{AGENT}"

[providers.anthropic]
api = "anthropic"
base_url = "{anthropic_url}"
auth = ["bench-anthropic"]

[providers.openai]
api = "openai"
base_url = "{openai_url}"
auth = ["bench-openai"]

[auth.bench-anthropic]
provider = "anthropic"
type = "api-key"
key = "env:FLOTILLA_BENCH_ANTHROPIC_KEY"

[auth.bench-openai]
provider = "openai"
type = "api-key"
key = "env:FLOTILLA_BENCH_OPENAI_KEY"
"#
    )
}

fn anthropic_body(model: &str, stream: bool) -> Bytes {
    let body = serde_json::json!({
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": PROMPT}],
    });
    Bytes::from(body.to_string())
}

fn openai_body() -> Bytes {
    let body = serde_json::json!({
        "model": OPENAI_MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": PROMPT}],
    });
    Bytes::from(body.to_string())
}

fn anthropic_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(HeaderName::from_static("x-api-key"), HeaderValue::from_static(BENCH_KEY));
    h.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static("2023-06-01"));
    h
}

fn openai_headers() -> anyhow::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {BENCH_KEY}"))?);
    Ok(h)
}

/// What one phase sends, and which processes it charges CPU time to.
struct PhaseDef<'a> {
    name: &'static str,
    path: &'static str,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    measure: Measure,
    expect_model: Option<String>,
    rate: f64,
    sim: &'a Proc,
    proxy: Option<&'a Proc>,
}

async fn run_phase(plan: &Plan, def: PhaseDef<'_>) -> anyhow::Result<Phase> {
    let mut phases = run_in_turns(plan, vec![def], 1).await?;
    phases.pop().context("a phase without a result")
}

/// Runs the phases of `defs` in `rounds` rounds, each phase once per round for
/// duration/rounds seconds after its own warm-up, in an order that rotates by one each round,
/// and reports each phase over all its turns. Phases compared with one another are measured
/// this way so that the machine's other load (compiles, other VMs' steal time) lands on all of
/// them alike instead of on whichever phase happened to run at the time.
async fn run_in_turns(plan: &Plan, defs: Vec<PhaseDef<'_>>, rounds: usize) -> anyhow::Result<Vec<Phase>> {
    let rounds = rounds.max(1);
    let turns = u32::try_from(rounds).context("too many rounds")?;
    let duration = plan.duration / turns;
    // Connections and caches are warm after the first turn; a short warm-up per turn is enough.
    let warmup = if rounds == 1 { plan.warmup } else { (plan.warmup / turns).max(Duration::from_millis(500)) };
    let mut sums: Vec<Option<Turn>> = defs.iter().map(|_| None).collect();
    for round in 0..rounds {
        for k in 0..defs.len() {
            let i = (k + round) % defs.len();
            let (Some(def), Some(sum)) = (defs.get(i), sums.get_mut(i)) else { continue };
            let label = if rounds == 1 { def.name.to_owned() } else { format!("{} {}/{rounds}", def.name, round + 1) };
            let turn = run_turn(plan, def, warmup, duration, &label).await?;
            *sum = Some(match sum.take() {
                None => turn,
                Some(total) => total.add(turn)?,
            });
        }
    }
    let mut phases = Vec::new();
    for (def, sum) in defs.iter().zip(sums) {
        let Turn { result, sim_cpu, proxy_cpu } = sum.context("a phase that never ran")?;
        let mut phase = Phase::measured(def.name, def.path, def.measure.describe(), def.rate, &result);
        let per_request =
            |cpu: Option<Duration>| procs::cpu_per_request(Some(Duration::ZERO), cpu, result.completed_total);
        phase.sim_cpu_us_per_req = per_request(sim_cpu);
        if def.proxy.is_some() {
            phase.proxy_cpu_us_per_req = per_request(proxy_cpu);
        }
        eprintln!(
            "  {}: {} ok, {} errors, {} dropped, {} late; p50 {:.3} ms, p99 {:.3} ms",
            phase.name,
            phase.ok,
            phase.errors,
            phase.dropped,
            phase.late,
            phase.p50_us / 1000.0,
            phase.p99_us / 1000.0
        );
        for e in &phase.error_samples {
            eprintln!("    error: {e}");
        }
        phases.push(phase);
    }
    Ok(phases)
}

/// What one turn of a phase (or several, added up) measured.
struct Turn {
    result: load::LoadResult,
    /// CPU time of the phase's simulator and proxy during the turn(s).
    sim_cpu: Option<Duration>,
    proxy_cpu: Option<Duration>,
}

impl Turn {
    fn add(mut self, other: Turn) -> anyhow::Result<Turn> {
        let add = |a: Option<Duration>, b: Option<Duration>| Some(a? + b?);
        self.result.merge(other.result)?;
        Ok(Turn {
            result: self.result,
            sim_cpu: add(self.sim_cpu, other.sim_cpu),
            proxy_cpu: add(self.proxy_cpu, other.proxy_cpu),
        })
    }
}

/// One turn of a phase: its load for `warmup` + `duration`, and the CPU time its simulator
/// and proxy used meanwhile.
async fn run_turn(
    plan: &Plan,
    def: &PhaseDef<'_>,
    warmup: Duration,
    duration: Duration,
    label: &str,
) -> anyhow::Result<Turn> {
    let spec = LoadSpec {
        uri: def.url.parse().with_context(|| format!("bad url {}", def.url))?,
        headers: def.headers.clone(),
        body: def.body.clone(),
        measure: def.measure,
        expect_model: def.expect_model.clone(),
        rate: def.rate,
        warmup,
        duration,
        concurrency: plan.concurrency,
    };
    eprintln!("phase {label}: {} at {} req/s, measuring the {}", def.path, def.rate, def.measure.describe());
    let total = warmup + duration;
    let bar = ProgressBar::new(total.as_millis() as u64);
    bar.set_style(ProgressStyle::with_template("{prefix:>22} [{bar:30}] {msg}")?.progress_chars("=> "));
    bar.set_prefix(label.to_owned());
    let (sim_cpu0, proxy_cpu0) = (def.sim.cpu_time(), def.proxy.and_then(Proc::cpu_time));
    let result = load::run(spec, |elapsed| {
        bar.set_position(elapsed.as_millis() as u64);
        let left = total.saturating_sub(elapsed).as_secs_f64().ceil();
        bar.set_message(if elapsed < warmup {
            format!("warm-up, {left:.0} s left")
        } else {
            format!("{left:.0} s left")
        });
    })
    .await;
    bar.finish_and_clear();
    let result = result?;
    let delta = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    let sim_cpu = delta(sim_cpu0, def.sim.cpu_time());
    let proxy_cpu = delta(proxy_cpu0, def.proxy.and_then(Proc::cpu_time));
    Ok(Turn { result, sim_cpu, proxy_cpu })
}

async fn sim_requests_total(control: &client::HttpClient, sim_url: &str) -> anyhow::Result<u64> {
    let a = client::get(control, &format!("{sim_url}/_sim/stats")).await?;
    let v: serde_json::Value = serde_json::from_slice(&a.body).context("simulator stats are not JSON")?;
    v.get("requests_total").and_then(serde_json::Value::as_u64).context("simulator stats without requests_total")
}

async fn router_overhead(control: &client::HttpClient, gateway_url: &str) -> anyhow::Result<Overhead> {
    let a = client::get(control, &format!("{gateway_url}/status")).await?;
    let v: serde_json::Value = serde_json::from_slice(&a.body).context("gateway /status is not JSON")?;
    let o = v.get("router_overhead").cloned().context("gateway /status without router_overhead")?;
    serde_json::from_value(o).context("gateway /status router_overhead has an unexpected shape")
}

/// Makes the Anthropic simulator answer every generation request with 529 overloaded, then
/// sends requests through the gateway until one is served by the fallback without touching
/// the primary: from then on the primary's breaker is open.
async fn open_primary_breaker(
    control: &client::HttpClient,
    anthropic_url: &str,
    gateway_url: &str,
) -> anyhow::Result<()> {
    let fault = client::post_json(
        control,
        &format!("{anthropic_url}/_sim/faults"),
        &HeaderMap::new(),
        r#"{"fault": {"kind": "overloaded"}}"#,
    )
    .await?;
    anyhow::ensure!(fault.status.is_success(), "cannot inject the overload fault: {} {}", fault.status, fault.text());
    let body = anthropic_body(AGENT, false);
    let body = std::str::from_utf8(&body)?;
    let want = format!("openai/{OPENAI_MODEL}");
    for _ in 0..10 {
        let before = sim_requests_total(control, anthropic_url).await?;
        let a = client::post_json(control, &format!("{gateway_url}/v1/messages"), &anthropic_headers(), body).await?;
        let after = sim_requests_total(control, anthropic_url).await?;
        let model = a.headers.get("x-flotilla-model").and_then(|v| v.to_str().ok()).unwrap_or("");
        anyhow::ensure!(
            a.status.is_success() && model == want,
            "failover to {want} did not happen: {} from {model:?}: {}",
            a.status,
            a.text()
        );
        if after == before {
            return Ok(());
        }
    }
    anyhow::bail!("the gateway kept calling the overloaded primary: its breaker never opened")
}

async fn measure(plan: &Plan) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("cannot find this executable to start the simulators and gateway")?;
    let dir = tempfile::Builder::new().prefix("flotilla-bench-").tempdir().context("cannot create a temp dir")?;
    let dir_path = dir.path();
    let control = client::new_client(4);

    eprintln!("starting the simulators and the gateway ({})", exe.display());
    let (ant, ant_url) = procs::spawn_sim(&exe, "anthropic", SIM_TOKENS_PER_SEC, dir_path).await?;
    let (oai, oai_url) = procs::spawn_sim(&exe, "openai", SIM_TOKENS_PER_SEC, dir_path).await?;
    let config = dir_path.join("gateway.toml");
    std::fs::write(&config, gateway_config(&ant_url, &oai_url)).context("cannot write the gateway config")?;
    let threads = plan.gateway_threads.map(|n| n.to_string());
    let mut env = vec![("FLOTILLA_BENCH_ANTHROPIC_KEY", BENCH_KEY), ("FLOTILLA_BENCH_OPENAI_KEY", BENCH_KEY)];
    if let Some(n) = &threads {
        env.push(("FLOTILLA_HTTP_THREADS", n));
    }
    let (gw, gw_url, ready_in) = procs::spawn_gateway(&exe, &config, &env, dir_path, &control).await?;
    let mut usage = GatewayUsage {
        start_to_ready_ms: ready_in.as_secs_f64() * 1000.0,
        rss_idle_kib: gw.rss_kib(),
        ..GatewayUsage::default()
    };
    let gateway_model = format!("anthropic/{ANTHROPIC_MODEL}");
    let fallback_model = format!("openai/{OPENAI_MODEL}");
    let mut phases = Vec::new();

    // (a) The baseline, straight to the Anthropic simulator; (b) the floor any HTTP hop costs
    // here, nginx proxy_pass with a keep-alive upstream; (c) through the gateway, Anthropic
    // format in, the Anthropic simulator answering. Measured in turns (see `run_in_turns`).
    const NGINX_PATH: &str = "client → nginx proxy_pass → anthropic sim";
    let direct = PhaseDef {
        name: "direct-anthropic",
        path: "client → anthropic sim",
        url: format!("{ant_url}/v1/messages"),
        headers: anthropic_headers(),
        body: anthropic_body(ANTHROPIC_MODEL, false),
        measure: Measure::WholeAnswer,
        expect_model: None,
        rate: plan.rate,
        sim: &ant,
        proxy: None,
    };
    let gateway = PhaseDef {
        name: "gateway",
        path: "client → gateway → anthropic sim",
        url: format!("{gw_url}/v1/messages"),
        headers: anthropic_headers(),
        body: anthropic_body(AGENT, false),
        measure: Measure::WholeAnswer,
        expect_model: Some(gateway_model.clone()),
        rate: plan.rate,
        sim: &ant,
        proxy: Some(&gw),
    };
    let nginx = match &plan.nginx {
        None => Err("nginx is not installed (apt-get install nginx) or --no-nginx".to_owned()),
        Some(bin) => {
            let upstream = ant_url.trim_start_matches("http://").to_owned();
            procs::spawn_nginx(bin, &upstream, dir_path, &control).await.map(|n| (bin, n)).map_err(|e| {
                eprintln!("nginx did not start, skipping its phase: {e:#}");
                format!("{e:#}")
            })
        }
    };
    let mut nginx_usage = None;
    match &nginx {
        Err(why) => {
            let mut measured = run_in_turns(plan, vec![direct, gateway], plan.rounds).await?.into_iter();
            phases.extend(measured.next());
            phases.push(Phase::skipped("nginx", NGINX_PATH, "whole answer", plan.rate, why.clone()));
            phases.extend(measured);
        }
        Ok((bin, (nginx, nginx_url))) => {
            let via_nginx = PhaseDef {
                name: "nginx",
                path: NGINX_PATH,
                url: format!("{nginx_url}/v1/messages"),
                headers: anthropic_headers(),
                body: anthropic_body(ANTHROPIC_MODEL, false),
                measure: Measure::WholeAnswer,
                expect_model: None,
                rate: plan.rate,
                sim: &ant,
                proxy: Some(nginx),
            };
            let measured = run_in_turns(plan, vec![direct, via_nginx, gateway], plan.rounds).await?;
            nginx_usage = Some(NginxUsage {
                binary: bin.display().to_string(),
                rss_after_load_kib: nginx.rss_kib(),
                cpu_us_per_req: measured.iter().find(|p| p.name == "nginx").and_then(|p| p.proxy_cpu_us_per_req),
            });
            phases.extend(measured);
        }
    }
    if let Ok((_, (nginx, _))) = nginx {
        nginx.stop().await;
    }
    // The gateway's histogram accumulates from its start: read it before other phases add to it.
    let overhead = match router_overhead(&control, &gw_url).await {
        Ok(o) => Some(o),
        Err(e) => {
            eprintln!("cannot read the router's own time: {e:#}");
            None
        }
    };
    usage.rss_after_load_kib = gw.rss_kib();
    usage.cpu_us_per_req = phases.iter().find(|p| p.name == "gateway").and_then(|p| p.proxy_cpu_us_per_req);

    // (e) Streaming, before the primary is broken on purpose: time to the first content delta.
    let stream_direct = run_phase(
        plan,
        PhaseDef {
            name: "stream-direct",
            path: "client → anthropic sim (SSE)",
            url: format!("{ant_url}/v1/messages"),
            headers: anthropic_headers(),
            body: anthropic_body(ANTHROPIC_MODEL, true),
            measure: Measure::FirstContent,
            expect_model: None,
            rate: plan.stream_rate,
            sim: &ant,
            proxy: None,
        },
    )
    .await?;
    phases.push(stream_direct);
    let stream_gateway = run_phase(
        plan,
        PhaseDef {
            name: "stream-gateway",
            path: "client → gateway → anthropic sim (SSE)",
            url: format!("{gw_url}/v1/messages"),
            headers: anthropic_headers(),
            body: anthropic_body(AGENT, true),
            measure: Measure::FirstContent,
            expect_model: Some(gateway_model.clone()),
            rate: plan.stream_rate,
            sim: &ant,
            proxy: Some(&gw),
        },
    )
    .await?;
    usage.cpu_us_per_req_stream = stream_gateway.proxy_cpu_us_per_req;
    phases.push(stream_gateway);

    // (d) The failover path's baseline: straight to the OpenAI simulator (Chat Completions).
    let direct_openai = run_phase(
        plan,
        PhaseDef {
            name: "direct-openai",
            path: "client → openai sim (chat completions)",
            url: format!("{oai_url}/v1/chat/completions"),
            headers: openai_headers()?,
            body: openai_body(),
            measure: Measure::WholeAnswer,
            expect_model: None,
            rate: plan.rate,
            sim: &oai,
            proxy: None,
        },
    )
    .await?;
    phases.push(direct_openai);

    // (d) The primary overloaded and its breaker open: every request is skipped past it and
    // translated Anthropic → Chat Completions → Anthropic.
    eprintln!("opening the primary's breaker (permanent overload fault on the anthropic simulator)");
    open_primary_breaker(&control, &ant_url, &gw_url).await?;
    let primary_before = sim_requests_total(&control, &ant_url).await?;
    let mut breaker_open = run_phase(
        plan,
        PhaseDef {
            name: "breaker-open",
            path: "client → gateway, primary breaker open → openai sim",
            url: format!("{gw_url}/v1/messages"),
            headers: anthropic_headers(),
            body: anthropic_body(AGENT, false),
            measure: Measure::WholeAnswer,
            expect_model: Some(fallback_model),
            rate: plan.rate,
            sim: &oai,
            proxy: Some(&gw),
        },
    )
    .await?;
    let primary_calls = sim_requests_total(&control, &ant_url).await?.saturating_sub(primary_before);
    if primary_calls > 0 {
        breaker_open.error_samples.push(format!(
            "the overloaded primary was still called {primary_calls} times: not a pure open-breaker measurement"
        ));
    }
    usage.cpu_us_per_req_breaker_open = breaker_open.proxy_cpu_us_per_req;
    phases.push(breaker_open);
    usage.rss_end_kib = gw.rss_kib();

    gw.stop().await;
    ant.stop().await;
    oai.stop().await;
    drop(dir);

    Ok(summarize(plan, phases, overhead, usage, nginx_usage))
}

fn find<'a>(phases: &'a [Phase], name: &str) -> Option<&'a Phase> {
    phases.iter().find(|p| p.name == name)
}

fn summarize(
    plan: &Plan,
    phases: Vec<Phase>,
    overhead: Option<Overhead>,
    gateway: GatewayUsage,
    nginx: Option<NginxUsage>,
) -> Report {
    let pairs = [
        ("nginx", "direct-anthropic"),
        ("gateway", "direct-anthropic"),
        ("breaker-open", "direct-openai"),
        ("stream-gateway", "stream-direct"),
    ];
    let added: Vec<Added> =
        pairs.iter().filter_map(|(p, b)| Added::between(find(&phases, p)?, find(&phases, b)?)).collect();
    let added_p50 = |name: &str| added.iter().find(|a| a.phase == name).map(|a| a.p50_us);
    let ratio = match (added_p50("gateway"), added_p50("nginx")) {
        (Some(g), Some(n)) if n > 0.0 => Some(g / n),
        _ => None,
    };
    let gateway_errors = find(&phases, "gateway").map(|p| p.errors as f64);
    let mut targets = vec![
        Target::at_most(
            "gateway added p50 / nginx added p50",
            ratio,
            1.25,
            "×",
            &format!("at {} req/s, non-streaming", plan.rate),
        ),
        Target::at_most("gateway errors", gateway_errors, 0.0, "", &format!("at {} req/s", plan.rate)),
        Target::below(
            "router own time p50",
            overhead.as_ref().map(|o| o.p50_us),
            50.0,
            "µs",
            "gateway /status router_overhead",
        ),
        Target::below("router own time p99", overhead.as_ref().map(|o| o.p99_us), 250.0, "µs", ""),
        Target::below(
            "breaker-open failover added p50",
            added_p50("breaker-open").map(|us| us / 1000.0),
            1.0,
            "ms",
            "vs direct to the fallback's simulator",
        ),
    ];
    // DESIGN.md states these for a gateway with 20 agents; this one has one agent and no Slack,
    // so they are indications only.
    targets.push(Target::below(
        "gateway RSS idle (1 agent)",
        gateway.rss_idle_kib.map(|k| k as f64 / 1024.0),
        40.0,
        "MiB",
        "design target is for 20 agents",
    ));
    targets.push(Target::below(
        "gateway start to ready",
        Some(gateway.start_to_ready_ms),
        200.0,
        "ms",
        "includes process spawn; readiness polled every 5 ms",
    ));
    let date_unix_s = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Report {
        date_unix_s,
        settings: plan.settings(),
        cpus: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        phases,
        added,
        gateway_vs_nginx_p50: ratio,
        router_overhead: overhead,
        gateway,
        nginx,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(["flotilla", "bench", "router"].iter().chain(args))?;
        let Command::Bench(BenchArgs { command: BenchCommand::Router(a) }) = cli.command else {
            panic!("not the bench router command")
        };
        Plan::from_args(&a)
    }

    #[test]
    fn defaults_quick_and_explicit_flags() {
        let p = plan(&["--no-nginx"]).unwrap();
        assert_eq!((p.rate, p.stream_rate, p.duration.as_secs(), p.warmup.as_secs()), (2000.0, 200.0, 10, 2));
        assert_eq!((p.concurrency, p.rounds), (256, 5));
        assert!(p.nginx.is_none());
        let q = plan(&["--quick"]).unwrap();
        assert_eq!((q.rate, q.stream_rate, q.duration.as_secs(), q.warmup.as_secs()), (500.0, 100.0, 3, 1));
        assert_eq!(q.rounds, 1, "a quick run measures each phase in one go");
        assert_eq!(plan(&["--rounds", "3"]).unwrap().rounds, 3);
        let r = plan(&["--quick", "--rate", "50", "--duration", "1.5"]).unwrap();
        assert_eq!((r.rate, r.duration), (50.0, Duration::from_millis(1500)), "explicit flags win over --quick");
    }

    #[test]
    fn nonsense_settings_are_refused() {
        for bad in [
            &["--rate", "0"][..],
            &["--duration", "-1"],
            &["--concurrency", "0"],
            &["--gateway-threads", "0"],
            &["--rounds", "0"],
        ] {
            assert!(plan(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn gateway_config_is_valid_and_chains_anthropic_to_openai() {
        let text = gateway_config("http://127.0.0.1:1", "http://127.0.0.1:2");
        let env = flotilla_config::Env::from_pairs([
            ("FLOTILLA_BENCH_ANTHROPIC_KEY", BENCH_KEY),
            ("FLOTILLA_BENCH_OPENAI_KEY", BENCH_KEY),
        ]);
        let config = flotilla_config::parse_config(&text, &env, std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let agent = config.agents.iter().find(|a| a.id == AGENT).expect("the bench agent");
        let names: Vec<String> = agent.chain.candidates.iter().map(|c| c.to_string()).collect();
        assert_eq!(names, [format!("anthropic/{ANTHROPIC_MODEL}"), format!("openai/{OPENAI_MODEL}")]);
        assert!(config.router.overload_cooldown >= Duration::from_secs(600), "the breaker must stay open");
    }

    #[test]
    fn added_latency_and_targets() {
        let mut direct = Phase::skipped("direct-anthropic", "", "", 1.0, String::new());
        direct.skipped = None;
        direct.ok = 10;
        direct.p50_us = 100.0;
        let mut gw = direct.clone();
        gw.name = "gateway".into();
        gw.p50_us = 250.0;
        let mut nginx = direct.clone();
        nginx.name = "nginx".into();
        nginx.p50_us = 200.0;
        let skipped = Phase::skipped("nginx", "", "", 1.0, "no nginx".into());
        let plan = plan(&["--no-nginx"]).unwrap();
        let report = summarize(&plan, vec![direct.clone(), nginx, gw.clone()], None, GatewayUsage::default(), None);
        assert_eq!(report.gateway_vs_nginx_p50, Some(1.5));
        assert_eq!(report.targets[0].met, Some(false), "1.5 > 1.25");
        assert_eq!(report.targets[2].met, None, "no router overhead read: not measured");
        let report = summarize(&plan, vec![direct, skipped, gw], None, GatewayUsage::default(), None);
        assert_eq!(report.gateway_vs_nginx_p50, None, "no ratio without an nginx phase");
        assert_eq!(report.added.len(), 1);
        let table = report::render_table(&report);
        assert!(table.contains("skipped: no nginx"), "{table}");
    }
}
