//! The Prometheus registry and every metric flotilla exports. Metric names live only here.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The API the client spoke (`anthropic`, `openai-chat`, `openai-responses`).
    pub api: &'static str,
    /// `ok` or the error kind.
    pub outcome: &'static str,
    pub stream: &'static str,
}

/// Labels of one upstream attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub provider: String,
    pub model: String,
    /// `ok`, `failed`, `skipped`.
    pub outcome: String,
    /// Why it failed or was skipped (`overloaded`, `rate_limited`, `breaker_open`, ...); `none` if ok.
    pub reason: String,
}

/// Labels of a breaker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub provider: String,
    pub model: String,
    pub credential: String,
}

/// Labels naming a model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub provider: String,
    pub model: String,
}

/// Labels naming a Slack channel (by its `[slack.NAME]`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub app: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~105 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 22))
}

fn overhead_histogram() -> Histogram {
    // 1 µs .. ~16 ms, doubling: the router's own time is measured in microseconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000001, 2.0, 15))
}

/// Every metric flotilla exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<RequestLabels>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub attempt_duration: HistogramFamily<ModelLabels>,
    pub failovers: Family<ModelLabels, Counter>,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<BreakerLabels, Gauge>,
    pub router_overhead: Histogram,
    /// 1 when the Slack channel is connected and fresh, 0 otherwise.
    pub channel_up: Family<ChannelLabels, Gauge>,
    /// Milliseconds since the channel's last frame (any frame, pongs included).
    pub channel_last_frame_age_ms: Family<ChannelLabels, Gauge>,
    /// Reconnects, stale sockets detected and messages caught up since start (mirrors of the
    /// channel's own counters).
    pub channel_reconnects: Family<ChannelLabels, Gauge>,
    pub channel_stale_detected: Family<ChannelLabels, Gauge>,
    pub channel_caught_up: Family<ChannelLabels, Gauge>,
    /// Turns received or thinking, and replies not yet posted.
    pub journal_unfinished_turns: Gauge,
    pub outbox_depth: Gauge,
    /// The same samples as `router_overhead`, kept exactly (in nanoseconds) for percentiles.
    overhead_hdr: Mutex<Hdr<u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flotilla");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Client requests by API and outcome", requests.clone());
        let request_duration: HistogramFamily<RequestLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Client request duration (to the last byte)",
            request_duration.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register("attempts", "Upstream attempts by provider, model, outcome and reason", attempts.clone());
        let attempt_duration: HistogramFamily<ModelLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "attempt_duration_seconds",
            "Upstream attempt duration to the first byte or failure",
            attempt_duration.clone(),
        );
        let failovers = Family::<ModelLabels, Counter>::default();
        registry.register("failovers", "Requests moved away from this model to the next candidate", failovers.clone());
        let breaker_state = Family::<BreakerLabels, Gauge>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker state per provider/model/credential (0 closed, 1 open, 2 half-open)",
            breaker_state.clone(),
        );
        let router_overhead = overhead_histogram();
        registry.register(
            "router_overhead_seconds",
            "Time spent inside flotilla per request (parse to upstream send, plus upstream bytes to client bytes)",
            router_overhead.clone(),
        );
        let channel_up = Family::<ChannelLabels, Gauge>::default();
        registry.register("channel_up", "1 when the Slack channel is connected and fresh", channel_up.clone());
        let channel_last_frame_age_ms = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "channel_last_frame_age_ms",
            "Milliseconds since the Slack channel's last frame",
            channel_last_frame_age_ms.clone(),
        );
        let channel_reconnects = Family::<ChannelLabels, Gauge>::default();
        registry.register("channel_reconnects", "Slack reconnects since start", channel_reconnects.clone());
        let channel_stale_detected = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "channel_stale_detected",
            "Silent Slack sockets detected and replaced since start",
            channel_stale_detected.clone(),
        );
        let channel_caught_up = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "channel_caught_up_messages",
            "Messages recovered by catch-up since start",
            channel_caught_up.clone(),
        );
        let journal_unfinished_turns = Gauge::default();
        registry.register("journal_unfinished_turns", "Turns received or thinking", journal_unfinished_turns.clone());
        let outbox_depth = Gauge::default();
        registry.register("outbox_depth", "Replies waiting to be posted", outbox_depth.clone());
        #[expect(clippy::expect_used, reason = "constant, valid bounds")]
        let hdr = Hdr::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
        Metrics {
            registry,
            requests,
            request_duration,
            attempts,
            attempt_duration,
            failovers,
            breaker_state,
            router_overhead,
            channel_up,
            channel_last_frame_age_ms,
            channel_reconnects,
            channel_stale_detected,
            channel_caught_up,
            journal_unfinished_turns,
            outbox_depth,
            overhead_hdr: Mutex::new(hdr),
        }
    }

    /// Records the router's own time for one request.
    pub fn observe_overhead(&self, d: Duration) {
        self.router_overhead.observe(d.as_secs_f64());
        if let Ok(mut h) = self.overhead_hdr.lock() {
            h.saturating_record(d.as_nanos().clamp(1, u64::MAX as u128) as u64);
        }
    }

    /// Percentiles of the router's own time, in microseconds.
    pub fn overhead_summary(&self) -> OverheadSummary {
        let Ok(h) = self.overhead_hdr.lock() else {
            return OverheadSummary::default();
        };
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        OverheadSummary { count: h.len(), p50_us: us(0.5), p99_us: us(0.99), p999_us: us(0.999) }
    }

    /// Clears the exact overhead samples (the benchmark resets between phases).
    pub fn reset_overhead(&self) {
        if let Ok(mut h) = self.overhead_hdr.lock() {
            h.reset();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Percentiles of the router's own time per request.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct OverheadSummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics_with_prefix() {
        let m = Metrics::new();
        m.attempts
            .get_or_create(&AttemptLabels {
                provider: "anthropic".into(),
                model: "claude".into(),
                outcome: "failed".into(),
                reason: "overloaded".into(),
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("flotilla_attempts_total{provider=\"anthropic\",model=\"claude\",outcome=\"failed\",reason=\"overloaded\"} 1"), "{text}");
        assert!(text.contains("flotilla_router_overhead_seconds_bucket"));
    }

    #[test]
    fn overhead_percentiles_follow_samples() {
        let m = Metrics::new();
        for us in 1..=100u64 {
            m.observe_overhead(Duration::from_micros(us));
        }
        let s = m.overhead_summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_us - 50.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 99.0).abs() < 1.0, "{s:?}");
        m.reset_overhead();
        assert_eq!(m.overhead_summary().count, 0);
    }
}
