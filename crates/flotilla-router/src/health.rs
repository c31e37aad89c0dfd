//! Circuit breakers and cooldowns: per (provider, model, credential), per (provider, model)
//! for overloads, and per (provider, credential) for auth and billing failures.
//!
//! All state lives behind one mutex with short critical sections; the router consults it
//! before every attempt so that an open breaker costs no round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_telemetry::Metrics;
use flotilla_telemetry::events::BreakerStateChanged;
use serde::Serialize;
use tokio::time::Instant;

/// What a breaker guards. `model == None` means every model of the provider (credential
/// problems); `credential == None` means every credential of the model (overload).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub provider: String,
    pub model: Option<String>,
    pub credential: Option<String>,
}

impl Key {
    pub fn model(provider: &str, model: &str) -> Self {
        Key { provider: provider.to_owned(), model: Some(model.to_owned()), credential: None }
    }
    pub fn credential(provider: &str, credential: &str) -> Self {
        Key { provider: provider.to_owned(), model: None, credential: Some(credential.to_owned()) }
    }
    pub fn exact(provider: &str, model: &str, credential: &str) -> Self {
        Key { provider: provider.to_owned(), model: Some(model.to_owned()), credential: Some(credential.to_owned()) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe request is in flight; others keep away until `probe_deadline`, after which a
    /// lost probe (client went away) no longer blocks a new one.
    HalfOpen {
        probe_deadline: Instant,
    },
}

#[derive(Debug, Clone)]
struct Breaker {
    failures: u32,
    state: State,
    reason: &'static str,
}

/// The answer to "may I send to this key now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, and this request is the half-open probe.
    Probe,
    /// No: open (or probing) until the given time, for the given reason.
    No {
        remaining: Duration,
        reason: &'static str,
    },
}

/// How a failure changes a breaker.
#[derive(Debug, Clone, Copy)]
pub struct Trip {
    pub reason: &'static str,
    pub cooldown: Duration,
    /// Open now, whatever the failure count (overload, rate limit, auth, billing).
    pub open_now: bool,
}

/// All breakers of a router.
#[derive(Debug)]
pub struct Health {
    breakers: Mutex<HashMap<Key, Breaker>>,
    threshold: u32,
    /// How long a half-open probe may take before another request may probe.
    probe_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// One breaker's state, for `/status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerSnapshot {
    pub provider: String,
    pub model: String,
    pub credential: String,
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub last_reason: &'static str,
    pub cooldown_remaining_ms: Option<u64>,
}

fn label(x: &Option<String>) -> &str {
    x.as_deref().unwrap_or("*")
}

impl Health {
    pub fn new(threshold: u32, probe_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Health { breakers: Mutex::new(HashMap::new()), threshold: threshold.max(1), probe_timeout, metrics }
    }

    /// Asks whether a request may go to `key`; a breaker whose cooldown ended becomes half-open
    /// and this caller becomes its probe.
    pub fn admit(&self, key: &Key) -> Admit {
        let mut map = match self.breakers.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // Nothing has failed (the usual case): no key to hash, no clock to read.
        if map.is_empty() {
            return Admit::Yes;
        }
        let now = Instant::now();
        let Some(b) = map.get_mut(key) else { return Admit::Yes };
        match b.state {
            State::Closed => Admit::Yes,
            State::Open { until } | State::HalfOpen { probe_deadline: until } if now < until => {
                Admit::No { remaining: until - now, reason: b.reason }
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                b.state = State::HalfOpen { probe_deadline: now + self.probe_timeout };
                let reason = b.reason;
                drop(map);
                self.emit(key, "half-open", None, reason);
                Admit::Probe
            }
        }
    }

    /// Records a success: the breaker closes and its failure count resets.
    pub fn success(&self, key: &Key) {
        let mut map = match self.breakers.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.is_empty() {
            return;
        }
        let Some(b) = map.get_mut(key) else { return };
        let was_closed = b.state == State::Closed;
        b.failures = 0;
        b.state = State::Closed;
        drop(map);
        if !was_closed {
            self.emit(key, "closed", None, "success");
        }
    }

    /// Records a failure; opens the breaker when the trip says so or the threshold is reached.
    pub fn failure(&self, key: &Key, trip: Trip) {
        let now = Instant::now();
        let mut map = match self.breakers.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let b = map.entry(key.clone()).or_insert(Breaker { failures: 0, state: State::Closed, reason: trip.reason });
        b.failures = b.failures.saturating_add(1);
        b.reason = trip.reason;
        let probe_failed = matches!(b.state, State::HalfOpen { .. });
        if trip.open_now || probe_failed || b.failures >= self.threshold {
            b.state = State::Open { until: now + trip.cooldown };
            drop(map);
            self.emit(key, "open", Some(trip.cooldown), trip.reason);
        }
    }

    /// Every breaker ever touched, for `/status`.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let now = Instant::now();
        let map = match self.breakers.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<BreakerSnapshot> = map
            .iter()
            .map(|(k, b)| {
                let (state, until) = match b.state {
                    State::Closed => ("closed", None),
                    State::Open { until } => ("open", Some(until)),
                    State::HalfOpen { probe_deadline } => ("half-open", Some(probe_deadline)),
                };
                BreakerSnapshot {
                    provider: k.provider.clone(),
                    model: label(&k.model).to_owned(),
                    credential: label(&k.credential).to_owned(),
                    state,
                    consecutive_failures: b.failures,
                    last_reason: b.reason,
                    cooldown_remaining_ms: until.map(|u| u.saturating_duration_since(now).as_millis() as u64),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.provider, &a.model, &a.credential).cmp(&(&b.provider, &b.model, &b.credential)));
        out
    }

    fn emit(&self, key: &Key, state: &str, cooldown: Option<Duration>, reason: &str) {
        BreakerStateChanged {
            provider: &key.provider,
            model: label(&key.model),
            credential: label(&key.credential),
            state,
            cooldown,
            reason,
        }
        .emit(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(threshold: u32) -> Health {
        Health::new(threshold, Duration::from_secs(30), Arc::new(Metrics::new()))
    }

    fn trip(open_now: bool) -> Trip {
        Trip { reason: "transient", cooldown: Duration::from_secs(5), open_now }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_probes_after_cooldown() {
        let h = health(3);
        let k = Key::exact("p", "m", "c");
        assert_eq!(h.admit(&k), Admit::Yes);
        h.failure(&k, trip(false));
        h.failure(&k, trip(false));
        assert_eq!(h.admit(&k), Admit::Yes, "two failures stay under the threshold of three");
        h.failure(&k, trip(false));
        assert!(matches!(h.admit(&k), Admit::No { reason: "transient", .. }));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(h.admit(&k), Admit::Probe, "the first request after the cooldown probes");
        assert!(matches!(h.admit(&k), Admit::No { .. }), "others wait while the probe is out");
        h.success(&k);
        assert_eq!(h.admit(&k), Admit::Yes);
        assert_eq!(h.snapshot()[0].state, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_lost_probe_expires() {
        let h = health(3);
        let k = Key::model("p", "m");
        h.failure(&k, trip(true));
        assert!(matches!(h.admit(&k), Admit::No { .. }), "open_now opens on the first failure");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(h.admit(&k), Admit::Probe);
        h.failure(&k, trip(false));
        assert!(matches!(h.admit(&k), Admit::No { .. }), "a failed probe reopens at once");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(h.admit(&k), Admit::Probe);
        // The probe never reports back; after the probe timeout another request may probe.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(h.admit(&k), Admit::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_consecutive_count() {
        let h = health(2);
        let k = Key::credential("p", "c");
        h.failure(&k, trip(false));
        h.success(&k);
        h.failure(&k, trip(false));
        assert_eq!(h.admit(&k), Admit::Yes, "failures are consecutive, a success resets them");
        let snap = h.snapshot();
        assert_eq!(snap[0].model, "*");
        assert_eq!(snap[0].consecutive_failures, 1);
    }
}
