//! Typed telemetry events: each countable happening is one struct whose `emit` writes a
//! structured log line and updates its metric, so logs and metrics never disagree.

use std::time::Duration;

use crate::metrics::{AttemptLabels, BreakerLabels, Metrics, ModelLabels, RequestLabels};

/// An upstream attempt failed; `next` says what the router does about it.
#[derive(Debug)]
pub struct ProviderAttemptFailed<'a> {
    pub chain: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub credential: &'a str,
    pub reason: &'a str,
    pub status: Option<u16>,
    pub elapsed: Duration,
    /// `retry`, `rotate credential`, `next candidate`, `return to caller`, `give up`.
    pub next: &'a str,
}

impl ProviderAttemptFailed<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::warn!(
            event = "provider_attempt_failed",
            chain = self.chain,
            provider = self.provider,
            model = self.model,
            credential = self.credential,
            reason = self.reason,
            status = self.status,
            elapsed_ms = self.elapsed.as_secs_f64() * 1000.0,
            next = self.next,
            "{}/{} failed ({}), {}",
            self.provider,
            self.model,
            self.reason,
            self.next
        );
        m.attempts
            .get_or_create(&AttemptLabels {
                provider: self.provider.to_owned(),
                model: self.model.to_owned(),
                outcome: "failed".to_owned(),
                reason: self.reason.to_owned(),
            })
            .inc();
        m.attempt_duration
            .get_or_create(&ModelLabels { provider: self.provider.to_owned(), model: self.model.to_owned() })
            .observe(self.elapsed.as_secs_f64());
        if self.next == "next candidate" {
            m.failovers
                .get_or_create(&ModelLabels { provider: self.provider.to_owned(), model: self.model.to_owned() })
                .inc();
        }
    }
}

/// A candidate was not tried because its breaker or cooldown said no.
#[derive(Debug)]
pub struct ProviderAttemptSkipped<'a> {
    pub chain: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub reason: &'a str,
}

impl ProviderAttemptSkipped<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::debug!(
            event = "provider_attempt_skipped",
            chain = self.chain,
            provider = self.provider,
            model = self.model,
            reason = self.reason,
            "skipped {}/{} ({})",
            self.provider,
            self.model,
            self.reason
        );
        m.attempts
            .get_or_create(&AttemptLabels {
                provider: self.provider.to_owned(),
                model: self.model.to_owned(),
                outcome: "skipped".to_owned(),
                reason: self.reason.to_owned(),
            })
            .inc();
        m.failovers
            .get_or_create(&ModelLabels { provider: self.provider.to_owned(), model: self.model.to_owned() })
            .inc();
    }
}

/// An upstream attempt produced an answer (first content byte for streams).
#[derive(Debug)]
pub struct ProviderAttemptSucceeded<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub elapsed: Duration,
}

impl ProviderAttemptSucceeded<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.attempts
            .get_or_create(&AttemptLabels {
                provider: self.provider.to_owned(),
                model: self.model.to_owned(),
                outcome: "ok".to_owned(),
                reason: "none".to_owned(),
            })
            .inc();
        m.attempt_duration
            .get_or_create(&ModelLabels { provider: self.provider.to_owned(), model: self.model.to_owned() })
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A breaker changed state.
#[derive(Debug)]
pub struct BreakerStateChanged<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub credential: &'a str,
    /// `closed`, `open`, `half-open`.
    pub state: &'a str,
    pub cooldown: Option<Duration>,
    pub reason: &'a str,
}

impl BreakerStateChanged<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            event = "breaker_state_changed",
            provider = self.provider,
            model = self.model,
            credential = self.credential,
            state = self.state,
            cooldown_ms = self.cooldown.map(|d| d.as_millis() as u64),
            reason = self.reason,
            "breaker {}/{} [{}] {}",
            self.provider,
            self.model,
            self.credential,
            self.state
        );
        let v = match self.state {
            "open" => 1,
            "half-open" => 2,
            _ => 0,
        };
        m.breaker_state
            .get_or_create(&BreakerLabels {
                provider: self.provider.to_owned(),
                model: self.model.to_owned(),
                credential: self.credential.to_owned(),
            })
            .set(v);
    }
}

/// A client request finished (last byte sent, or error returned).
#[derive(Debug)]
pub struct RequestFinished<'a> {
    pub api: &'static str,
    pub stream: bool,
    /// `ok` or an error kind.
    pub outcome: &'static str,
    pub answered_by: Option<&'a str>,
    pub attempts: u32,
    pub duration: Duration,
}

impl RequestFinished<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::debug!(
            event = "request_finished",
            api = self.api,
            stream = self.stream,
            outcome = self.outcome,
            answered_by = self.answered_by,
            attempts = self.attempts,
            duration_ms = self.duration.as_secs_f64() * 1000.0,
        );
        let labels =
            RequestLabels { api: self.api, outcome: self.outcome, stream: if self.stream { "true" } else { "false" } };
        m.requests.get_or_create(&labels).inc();
        m.request_duration.get_or_create(&labels).observe(self.duration.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_counts_attempt_and_failover() {
        let m = Metrics::new();
        ProviderAttemptFailed {
            chain: "family",
            provider: "anthropic",
            model: "opus",
            credential: "main",
            reason: "overloaded",
            status: Some(529),
            elapsed: Duration::from_millis(3),
            next: "next candidate",
        }
        .emit(&m);
        let text = m.encode();
        assert!(text.contains("flotilla_failovers_total{provider=\"anthropic\",model=\"opus\"} 1"), "{text}");
        assert!(text.contains("reason=\"overloaded\"} 1"), "{text}");
    }

    #[test]
    fn breaker_gauge_tracks_state() {
        let m = Metrics::new();
        let ev = |state| BreakerStateChanged {
            provider: "p",
            model: "m",
            credential: "c",
            state,
            cooldown: None,
            reason: "test",
        };
        ev("open").emit(&m);
        assert!(m.encode().contains("flotilla_breaker_state{provider=\"p\",model=\"m\",credential=\"c\"} 1"));
        ev("closed").emit(&m);
        assert!(m.encode().contains("flotilla_breaker_state{provider=\"p\",model=\"m\",credential=\"c\"} 0"));
    }
}
