//! The benchmark's results: what each phase measured, the added latencies, the targets of
//! DESIGN.md "Numbers to beat", and their rendering as a table (JSON comes from serde).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::load::LoadResult;

/// The whole run, as printed by `--json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// Seconds since 1970 when the run ended.
    pub date_unix_s: u64,
    pub settings: Settings,
    /// `std::thread::available_parallelism`: the load generator, the gateway, nginx and the
    /// simulators all share these.
    pub cpus: usize,
    pub phases: Vec<Phase>,
    /// Each proxied phase minus its direct baseline, percentile by percentile.
    pub added: Vec<Added>,
    /// gateway added p50 / nginx added p50 (absent without nginx or when nginx added nothing).
    pub gateway_vs_nginx_p50: Option<f64>,
    /// The gateway's own histogram of its in-process time, read right after the gateway phase.
    pub router_overhead: Option<Overhead>,
    pub gateway: GatewayUsage,
    pub nginx: Option<NginxUsage>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub rate: f64,
    pub stream_rate: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub concurrency: usize,
    /// Stream pacing of the simulators (non-streaming answers are not paced).
    pub sim_tokens_per_sec: f64,
    /// The gateway's HTTP serving threads when set (default: one per CPU).
    pub gateway_threads: Option<usize>,
    /// Rounds in which the direct, nginx and gateway phases took turns.
    pub rounds: usize,
    pub late_after_ms: f64,
}

/// One measured phase. Latencies are in microseconds from when each request was due.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// The way a request travels, e.g. "client → gateway → anthropic sim".
    pub path: String,
    /// "whole answer" or "first content delta".
    pub measures: String,
    pub rate: f64,
    /// Why the phase did not run (nginx not installed); every count is then zero.
    pub skipped: Option<String>,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    pub late: u64,
    /// Successful answers per second of the recorded window.
    pub achieved_rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// The same from when each request was actually sent (excludes the generator's own delay).
    pub service_p50_us: f64,
    pub service_p99_us: f64,
    pub error_samples: Vec<String>,
    /// CPU time of the proxy (gateway or nginx) per request, warm-up included.
    pub proxy_cpu_us_per_req: Option<f64>,
    /// CPU time of the simulator that answered, per request.
    pub sim_cpu_us_per_req: Option<f64>,
}

impl Phase {
    pub fn measured(name: &str, path: &str, measures: &str, rate: f64, r: &LoadResult) -> Self {
        let us = |q: f64| r.latency.value_at_quantile(q) as f64 / 1000.0;
        let service = |q: f64| r.service.value_at_quantile(q) as f64 / 1000.0;
        let window = r.window.as_secs_f64();
        Phase {
            name: name.to_owned(),
            path: path.to_owned(),
            measures: measures.to_owned(),
            rate,
            skipped: None,
            sent: r.sent,
            ok: r.ok,
            errors: r.errors,
            dropped: r.dropped,
            late: r.late,
            achieved_rps: if window > 0.0 { r.ok as f64 / window } else { 0.0 },
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: r.latency.max() as f64 / 1000.0,
            mean_us: r.latency.mean() / 1000.0,
            service_p50_us: service(0.5),
            service_p99_us: service(0.99),
            error_samples: r.error_samples.clone(),
            proxy_cpu_us_per_req: None,
            sim_cpu_us_per_req: None,
        }
    }

    pub fn skipped(name: &str, path: &str, measures: &str, rate: f64, why: String) -> Self {
        Phase {
            name: name.to_owned(),
            path: path.to_owned(),
            measures: measures.to_owned(),
            rate,
            skipped: Some(why),
            sent: 0,
            ok: 0,
            errors: 0,
            dropped: 0,
            late: 0,
            achieved_rps: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            p999_us: 0.0,
            max_us: 0.0,
            mean_us: 0.0,
            service_p50_us: 0.0,
            service_p99_us: 0.0,
            error_samples: Vec::new(),
            proxy_cpu_us_per_req: None,
            sim_cpu_us_per_req: None,
        }
    }

    pub fn ran(&self) -> bool {
        self.skipped.is_none()
    }
}

/// A phase's latency minus its baseline's, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Added {
    pub phase: String,
    pub baseline: String,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

impl Added {
    pub fn between(phase: &Phase, baseline: &Phase) -> Option<Self> {
        (phase.ran() && baseline.ran() && phase.ok > 0 && baseline.ok > 0).then(|| Added {
            phase: phase.name.clone(),
            baseline: baseline.name.clone(),
            p50_us: phase.p50_us - baseline.p50_us,
            p99_us: phase.p99_us - baseline.p99_us,
            p999_us: phase.p999_us - baseline.p999_us,
        })
    }
}

/// `router_overhead` from the gateway's `/status`, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overhead {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewayUsage {
    /// From spawning the process to the first successful `/readyz` (polled every 5 ms).
    pub start_to_ready_ms: f64,
    pub rss_idle_kib: Option<u64>,
    /// Right after the non-streaming gateway phase.
    pub rss_after_load_kib: Option<u64>,
    /// At the end of the run (after the streaming and breaker-open phases).
    pub rss_end_kib: Option<u64>,
    /// CPU time (user + system) per request in the non-streaming gateway phase.
    pub cpu_us_per_req: Option<f64>,
    pub cpu_us_per_req_breaker_open: Option<f64>,
    pub cpu_us_per_req_stream: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NginxUsage {
    pub binary: String,
    pub rss_after_load_kib: Option<u64>,
    pub cpu_us_per_req: Option<f64>,
}

/// One line of DESIGN.md "Numbers to beat".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    pub limit: f64,
    pub unit: String,
    /// `None`: could not be measured in this run (see `note`).
    pub met: Option<bool>,
    pub note: String,
}

impl Target {
    pub fn at_most(name: &str, value: Option<f64>, limit: f64, unit: &str, note: &str) -> Self {
        Target {
            name: name.to_owned(),
            value,
            limit,
            unit: unit.to_owned(),
            met: value.map(|v| v <= limit),
            note: note.to_owned(),
        }
    }

    pub fn below(name: &str, value: Option<f64>, limit: f64, unit: &str, note: &str) -> Self {
        Target { met: value.map(|v| v < limit), ..Target::at_most(name, value, limit, unit, note) }
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn signed_ms(us: f64) -> String {
    format!("{:+.3}", us / 1000.0)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn opt_us(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0} µs"))
}

/// The human-readable form.
pub fn render_table(r: &Report) -> String {
    let s = &r.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flotilla bench router: {} req/s ({} req/s streaming, simulators streaming {} tokens/s) for {} s after {} s warm-up per phase, at most {} in flight, {} CPUs shared by everything",
        s.rate, s.stream_rate, s.sim_tokens_per_sec, s.duration_s, s.warmup_s, s.concurrency, r.cpus
    );
    if s.rounds > 1 {
        let _ = writeln!(
            out,
            "direct-anthropic, nginx and gateway took turns: {} rounds of {:.1} s each (after a warm-up per turn)",
            s.rounds,
            s.duration_s / s.rounds as f64
        );
    }
    if let Some(n) = s.gateway_threads {
        let _ = writeln!(out, "gateway HTTP threads: {n}");
    }
    let _ =
        writeln!(out, "latency in ms from when each request was due; late = sent > {} ms after due\n", s.late_after_ms);
    let _ = writeln!(
        out,
        "{:<16} {:<50} {:>7} {:>7} {:>5} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "phase", "path", "sent", "ok", "err", "drop", "late", "req/s", "p50", "p99", "p99.9"
    );
    for p in &r.phases {
        if let Some(why) = &p.skipped {
            let _ = writeln!(out, "{:<16} {:<50} skipped: {why}", p.name, p.path);
            continue;
        }
        let _ = writeln!(
            out,
            "{:<16} {:<50} {:>7} {:>7} {:>5} {:>6} {:>6} {:>8.1} {:>8} {:>8} {:>8}",
            p.name,
            p.path,
            p.sent,
            p.ok,
            p.errors,
            p.dropped,
            p.late,
            p.achieved_rps,
            ms(p.p50_us),
            ms(p.p99_us),
            ms(p.p999_us)
        );
    }
    for p in r.phases.iter().filter(|p| !p.error_samples.is_empty()) {
        let _ = writeln!(out, "  errors in {}: {}", p.name, p.error_samples.join(" | "));
    }
    let _ = writeln!(out, "\nadded latency (phase − baseline), ms");
    let _ = writeln!(out, "{:<18} {:<18} {:>8} {:>8} {:>8}", "phase", "baseline", "p50", "p99", "p99.9");
    for a in &r.added {
        let _ = writeln!(
            out,
            "{:<18} {:<18} {:>8} {:>8} {:>8}",
            a.phase,
            a.baseline,
            signed_ms(a.p50_us),
            signed_ms(a.p99_us),
            signed_ms(a.p999_us)
        );
    }
    let _ = writeln!(out);
    match r.gateway_vs_nginx_p50 {
        Some(ratio) => {
            let _ = writeln!(out, "gateway added p50 / nginx added p50 = {ratio:.2} (target ≤ 1.25)");
        }
        None => {
            let _ = writeln!(
                out,
                "gateway added p50 / nginx added p50: not measured (no nginx phase, or nginx added nothing)"
            );
        }
    }
    match &r.router_overhead {
        Some(o) => {
            let _ = writeln!(
                out,
                "router own time (gateway /status, {} requests incl. warm-up): p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
                o.count, o.p50_us, o.p99_us, o.p999_us
            );
        }
        None => {
            let _ = writeln!(out, "router own time: not available from /status");
        }
    }
    let g = &r.gateway;
    let _ = writeln!(
        out,
        "gateway: start to ready {:.0} ms; RSS idle {}, after load {}, at the end {}",
        g.start_to_ready_ms,
        mib(g.rss_idle_kib),
        mib(g.rss_after_load_kib),
        mib(g.rss_end_kib)
    );
    let _ = writeln!(
        out,
        "gateway CPU per request: {} (gateway), {} (breaker open), {} (streaming)",
        opt_us(g.cpu_us_per_req),
        opt_us(g.cpu_us_per_req_breaker_open),
        opt_us(g.cpu_us_per_req_stream)
    );
    if let Some(n) = &r.nginx {
        let _ = writeln!(
            out,
            "nginx ({}): CPU per request {}, RSS after load {}",
            n.binary,
            opt_us(n.cpu_us_per_req),
            mib(n.rss_after_load_kib)
        );
    }
    let _ = writeln!(out, "\ntargets (DESIGN.md \"Numbers to beat\")");
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let value = t.value.map_or_else(|| "?".to_owned(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "  {:<52} {:>9} {:<3} (limit {} {}) {verdict}{}",
            t.name,
            value,
            t.unit,
            t.limit,
            t.unit,
            if t.note.is_empty() { String::new() } else { format!(": {}", t.note) }
        );
    }
    out
}
