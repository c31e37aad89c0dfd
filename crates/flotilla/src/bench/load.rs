//! The open-loop load generator: requests leave on a fixed schedule whatever the answers do,
//! so a slow server shows up as latency and dropped requests, never as a quietly lower rate.
//!
//! Two threads of its own, so it takes as little CPU as it can from the processes being
//! measured on a small machine: a pacer that sleeps until each request is due (the kernel's
//! high-resolution timers; tokio's timer wheel only ticks every millisecond, which would
//! send 2,000 req/s as bursts of two) and a current-thread tokio runtime that sends them.
//! Latency is measured from the moment a request was *due*, so a generator that falls behind
//! cannot hide the wait (no coordinated omission); the time from the actual send is kept too.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::header::HeaderMap;
use hyper::{Request, Uri};

use super::client::{HttpClient, error_chain, new_client};

/// A request sent more than this after it was due counts as late (the pacer itself is
/// accurate to some tens of microseconds).
pub const LATE_AFTER: Duration = Duration::from_millis(1);
/// A request without a complete answer after this is an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct error messages kept per phase, to say what went wrong.
const ERROR_SAMPLES: usize = 5;

/// What to time in each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Until the last byte of a non-streaming answer.
    WholeAnswer,
    /// Until the first content delta of an Anthropic SSE stream (`content_block_delta`); the
    /// rest of the stream is still read so the connection can be reused.
    FirstContent,
}

impl Measure {
    pub fn describe(self) -> &'static str {
        match self {
            Measure::WholeAnswer => "whole answer",
            Measure::FirstContent => "first content delta",
        }
    }
}

/// One phase's traffic.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub measure: Measure,
    /// When set, an answer whose `x-flotilla-model` header differs is an error.
    pub expect_model: Option<String>,
    /// Requests per second.
    pub rate: f64,
    /// Sent like the rest but not recorded: connections open, caches fill, the CPU clocks up.
    pub warmup: Duration,
    /// The recorded part.
    pub duration: Duration,
    /// Most requests in flight; a request due while this many are outstanding is dropped.
    pub concurrency: usize,
}

/// What one phase measured. Counts and histograms cover the recorded part only.
#[derive(Debug)]
pub struct LoadResult {
    /// Nanoseconds from when each successful request was due to its measured point.
    pub latency: Histogram<u64>,
    /// Nanoseconds from when each successful request was actually sent.
    pub service: Histogram<u64>,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Not sent: `concurrency` requests were already in flight when it was due.
    pub dropped: u64,
    /// Sent more than [`LATE_AFTER`] after it was due.
    pub late: u64,
    /// Answers completed in the whole phase, warm-up included (for CPU time per request).
    pub completed_total: u64,
    pub error_samples: Vec<String>,
    /// Length of the recorded part.
    pub window: Duration,
}

impl LoadResult {
    fn new(window: Duration) -> anyhow::Result<Self> {
        // 1 ns .. 60 s at 3 significant digits: microsecond differences stay visible.
        let hist = || Histogram::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds");
        Ok(LoadResult {
            latency: hist()?,
            service: hist()?,
            sent: 0,
            ok: 0,
            errors: 0,
            dropped: 0,
            late: 0,
            completed_total: 0,
            error_samples: Vec::new(),
            window,
        })
    }

    /// Adds the counts and latencies of another run of the same phase (one measured in turns).
    pub fn merge(&mut self, other: LoadResult) -> anyhow::Result<()> {
        self.latency.add(&other.latency).context("merging latency histograms")?;
        self.service.add(&other.service).context("merging latency histograms")?;
        self.sent += other.sent;
        self.ok += other.ok;
        self.dropped += other.dropped;
        self.late += other.late;
        self.completed_total += other.completed_total;
        self.window += other.window;
        self.errors += other.errors;
        for msg in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&msg) {
                self.error_samples.push(msg);
            }
        }
        Ok(())
    }

    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&msg) {
            self.error_samples.push(msg);
        }
    }
}

/// Runs one phase on the generator's own threads; `progress` is called a few times a second
/// with the time elapsed since the start (warm-up included).
pub async fn run(spec: LoadSpec, mut progress: impl FnMut(Duration)) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(spec.rate > 0.0 && spec.rate.is_finite(), "the rate must be a positive number");
    anyhow::ensure!(spec.concurrency > 0, "the concurrency must be at least 1");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            let _ = tx.send(run_on_own_runtime(spec));
        })
        .context("cannot start the load generator thread")?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tokio::pin!(rx);
    loop {
        tokio::select! {
            r = &mut rx => return r.map_err(|_| anyhow::anyhow!("the load generator thread died"))?,
            _ = tick.tick() => progress(started.elapsed()),
        }
    }
}

fn run_on_own_runtime(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive(spec))
}

async fn drive(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    let client = new_client(spec.concurrency);
    let spec = Rc::new(spec);
    let result = Rc::new(RefCell::new(LoadResult::new(spec.duration)?));
    let in_flight = Rc::new(Cell::new(0usize));

    let (tick_tx, mut ticks) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    // A short lead so the first requests are not late merely because the threads were starting.
    let start = Instant::now() + Duration::from_millis(20);
    let record_from = start + spec.warmup;
    let total = ((spec.warmup + spec.duration).as_secs_f64() * spec.rate).round() as u64;
    let rate = spec.rate;
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            for i in 0..total {
                // Computed from the start each time, so rounding never accumulates into drift.
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                // An unbounded queue: if the sender falls behind, requests come out late and
                // are counted as such instead of the schedule stretching.
                if tick_tx.send(due).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the pacer thread")?;

    while let Some(due) = ticks.recv().await {
        let recorded = due >= record_from;
        if in_flight.get() >= spec.concurrency {
            if recorded {
                result.borrow_mut().dropped += 1;
            }
            continue;
        }
        let sent = Instant::now();
        if recorded {
            let mut r = result.borrow_mut();
            r.sent += 1;
            if sent.saturating_duration_since(due) > LATE_AFTER {
                r.late += 1;
            }
        }
        in_flight.set(in_flight.get() + 1);
        let (client, spec, result, in_flight) = (client.clone(), spec.clone(), result.clone(), in_flight.clone());
        tokio::task::spawn_local(async move {
            let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, one_request(&client, &spec)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
            };
            let mut r = result.borrow_mut();
            r.completed_total += 1;
            if recorded {
                match outcome {
                    Ok(at) => {
                        r.ok += 1;
                        r.latency.saturating_record(nanos(at.saturating_duration_since(due)));
                        r.service.saturating_record(nanos(at.saturating_duration_since(sent)));
                    }
                    Err(msg) => r.error(msg),
                }
            }
            in_flight.set(in_flight.get() - 1);
        });
    }
    // The schedule is over; give the requests still out their full timeout to finish.
    let drain_until = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
    while in_flight.get() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if pacer.join().is_err() {
        anyhow::bail!("the pacer thread panicked");
    }
    let stuck = in_flight.get();
    let mut r = result.borrow_mut();
    for _ in 0..stuck {
        r.error("request still unanswered after the phase".to_owned());
    }
    let empty = LoadResult::new(spec.duration)?;
    Ok(std::mem::replace(&mut *r, empty))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Sends one request; returns when the measured point was reached.
async fn one_request(client: &HttpClient, spec: &LoadSpec) -> Result<Instant, String> {
    let mut req = Request::post(spec.uri.clone()).body(Full::new(spec.body.clone())).map_err(|e| e.to_string())?;
    *req.headers_mut() = spec.headers.clone();
    let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
    let (parts, mut body) = resp.into_parts();
    let mut reached = None;
    // Only the start of an answer is kept: enough to find the first delta or quote an error.
    let mut head: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer: {}", error_chain(&e)))?;
        let Some(data) = frame.data_ref() else { continue };
        if reached.is_none() && head.len() < 64 * 1024 {
            head.extend_from_slice(data);
            if spec.measure == Measure::FirstContent && contains(&head, b"content_block_delta") {
                reached = Some(Instant::now());
            }
        }
    }
    let done = Instant::now();
    if !parts.status.is_success() {
        let snippet: String = String::from_utf8_lossy(&head).chars().take(160).collect();
        return Err(format!("status {}: {snippet}", parts.status.as_u16()));
    }
    if let Some(want) = &spec.expect_model {
        let got = parts.headers.get("x-flotilla-model").and_then(|v| v.to_str().ok()).unwrap_or("(none)");
        if got != want {
            return Err(format!("answered by {got}, expected {want}"));
        }
    }
    match spec.measure {
        Measure::WholeAnswer => Ok(done),
        Measure::FirstContent => reached.ok_or_else(|| "stream ended without a content delta".to_owned()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_turns_count_and_rank_every_request() -> anyhow::Result<()> {
        let mut a = LoadResult::new(Duration::from_secs(2))?;
        let mut b = LoadResult::new(Duration::from_secs(2))?;
        for ns in [100_000u64, 200_000, 300_000] {
            a.latency.record(ns)?;
            a.ok += 1;
        }
        for ns in [900_000u64, 1_000_000] {
            b.latency.record(ns)?;
            b.ok += 1;
        }
        a.error("reset".into());
        b.error("reset".into());
        b.error("timeout".into());
        b.dropped = 4;
        a.merge(b)?;
        assert_eq!((a.ok, a.errors, a.dropped, a.window), (5, 3, 4, Duration::from_secs(4)));
        assert_eq!(a.latency.len(), 5);
        assert_eq!(a.latency.value_at_quantile(0.5) / 1000, 300, "the median of all five");
        assert_eq!(a.error_samples, ["reset", "timeout"]);
        Ok(())
    }
}
