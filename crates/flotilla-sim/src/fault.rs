//! Fault rules: what can go wrong, which requests it hits, and the registry that picks the
//! rule for a request.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One way a request can fail. Each API renders it with its own real status code, body and
/// headers (see the crate docs for the table).
///
/// In JSON the variant is the `kind` field, in snake case: `{"kind": "overloaded"}`,
/// `{"kind": "rate_limited", "retry_after_secs": 30}`, `{"kind": "cut_mid_stream", "after_events": 3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Anthropic `529 overloaded_error`; OpenAI `503` `server_is_overloaded`.
    Overloaded,
    /// A plain `503` from the edge: Anthropic's proxy text body, OpenAI's "engine is
    /// currently overloaded" JSON.
    Unavailable,
    /// `429` with `retry-after`: Anthropic `rate_limit_error`, OpenAI `rate_limit_exceeded`.
    RateLimited {
        #[serde(default = "default_retry_after")]
        retry_after_secs: u64,
    },
    /// `401`: the credential is bad or expired (Anthropic `authentication_error`, OpenAI
    /// `invalid_api_key`).
    Unauthorized,
    /// `403`: Anthropic `permission_error`, OpenAI `unsupported_country_region_territory`.
    Forbidden,
    /// Out of money as the APIs really report it: Anthropic `400` "Your credit balance is too
    /// low…", OpenAI `429 insufficient_quota`.
    PaymentRequired,
    /// Anthropic's documented `402 billing_error` (OpenAI: same as [`Fault::PaymentRequired`]).
    BillingError,
    /// `500`: Anthropic `api_error`, OpenAI `server_error`.
    Internal,
    /// `502` with an HTML body, as the CDN in front of both APIs sends it.
    BadGateway,
    /// `504`: Anthropic `timeout_error`; OpenAI the CDN's HTML page.
    GatewayTimeout,
    /// The TCP connection is reset (RST) before any response byte.
    ConnectionReset,
    /// Wait `ms` before the response head (on top of the configured latency), then answer
    /// normally.
    StallBeforeFirstByte { ms: u64 },
    /// Streams only: send `after_events` SSE events, go silent for `ms`, then finish normally.
    StallMidStream { after_events: u32, ms: u64 },
    /// Streams only: send `after_events` events, then end the body cleanly without the
    /// terminal events (no `message_stop` / `[DONE]` / `response.completed`). At least the
    /// last event is always cut.
    CutMidStream { after_events: u32 },
    /// Streams only: send `after_events` events, then reset the TCP connection mid-body.
    ResetMidStream { after_events: u32 },
    /// Streams only: after `after_events` events, insert an SSE event whose data is not
    /// valid JSON, then continue the stream normally.
    MalformedSse { after_events: u32 },
    /// Streams only: after `after_events` events, send the API's own mid-stream error event
    /// (Anthropic `event: error` overloaded, OpenAI `{"error":…}` chunk / Responses `error`
    /// + `response.failed`) and end the stream.
    ErrorMidStream { after_events: u32 },
    /// `400` invalid request (caller's fault).
    InvalidRequest,
    /// The API's real "context too long" `400`, whatever the prompt's length.
    ContextTooLong,
}

fn default_retry_after() -> u64 {
    30
}

impl Fault {
    /// The snake-case name used in JSON and in [`crate::SimStats::by_fault`].
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Overloaded => "overloaded",
            Fault::Unavailable => "unavailable",
            Fault::RateLimited { .. } => "rate_limited",
            Fault::Unauthorized => "unauthorized",
            Fault::Forbidden => "forbidden",
            Fault::PaymentRequired => "payment_required",
            Fault::BillingError => "billing_error",
            Fault::Internal => "internal",
            Fault::BadGateway => "bad_gateway",
            Fault::GatewayTimeout => "gateway_timeout",
            Fault::ConnectionReset => "connection_reset",
            Fault::StallBeforeFirstByte { .. } => "stall_before_first_byte",
            Fault::StallMidStream { .. } => "stall_mid_stream",
            Fault::CutMidStream { .. } => "cut_mid_stream",
            Fault::ResetMidStream { .. } => "reset_mid_stream",
            Fault::MalformedSse { .. } => "malformed_sse",
            Fault::ErrorMidStream { .. } => "error_mid_stream",
            Fault::InvalidRequest => "invalid_request",
            Fault::ContextTooLong => "context_too_long",
        }
    }

    /// Faults that only make sense inside an SSE stream; they never match non-stream requests.
    pub fn is_stream_only(&self) -> bool {
        matches!(
            self,
            Fault::StallMidStream { .. }
                | Fault::CutMidStream { .. }
                | Fault::ResetMidStream { .. }
                | Fault::MalformedSse { .. }
                | Fault::ErrorMidStream { .. }
        )
    }
}

/// A fault plus the requests it applies to. Every scope field is optional; an empty scope
/// hits every generation request (`/v1/messages`, `/v1/chat/completions`, `/v1/responses`;
/// never `/v1/models` nor the admin endpoints).
///
/// JSON form (all fields but `fault` optional):
/// `{"fault": {"kind": "overloaded"}, "count": 3, "probability": 0.5, "start_after_ms": 0,
///   "duration_ms": 10000, "model": "claude-opus-4-6", "key": "sk-a", "path": "/v1/messages",
///   "stream_only": false, "non_stream_only": false, "seed": 7}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub fault: Fault,
    /// Fire this many times, then expire. `None` = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Chance that a matching request is hit, 0.0..=1.0, drawn from a seeded RNG.
    #[serde(default = "default_probability")]
    pub probability: f64,
    /// The rule starts this long after it was added.
    #[serde(default)]
    pub start_after_ms: u64,
    /// The rule stops this long after it started. `None` = until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Only requests for this model (exact match on the request's `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Only requests authenticated with this API key (lets one credential fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Only requests to this path, e.g. `/v1/responses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only streamed requests.
    #[serde(default)]
    pub stream_only: bool,
    /// Only non-streamed requests.
    #[serde(default)]
    pub non_stream_only: bool,
    /// RNG seed for `probability`; `None` = derived from the rule id (still deterministic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_probability() -> f64 {
    1.0
}

impl FaultRule {
    /// A rule that hits every generation request until removed.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            count: None,
            probability: 1.0,
            start_after_ms: 0,
            duration_ms: None,
            model: None,
            key: None,
            path: None,
            stream_only: false,
            non_stream_only: false,
            seed: None,
        }
    }

    pub fn count(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Active from `start_after_ms` after being added, for `duration_ms` (`None` = forever).
    pub fn window(mut self, start_after_ms: u64, duration_ms: Option<u64>) -> Self {
        self.start_after_ms = start_after_ms;
        self.duration_ms = duration_ms;
        self
    }

    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn stream_only(mut self) -> Self {
        self.stream_only = true;
        self
    }

    pub fn non_stream_only(mut self) -> Self {
        self.non_stream_only = true;
        self
    }

    /// Checks the fields that serde can't: probability range, contradictory stream scopes.
    pub fn validate(&self) -> Result<(), FaultRuleError> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(FaultRuleError::Probability(self.probability));
        }
        if self.stream_only && self.non_stream_only {
            return Err(FaultRuleError::StreamScope);
        }
        if self.non_stream_only && self.fault.is_stream_only() {
            return Err(FaultRuleError::StreamFaultOnNonStream(self.fault.name()));
        }
        Ok(())
    }
}

/// Why a [`FaultRule`] was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultRuleError {
    #[error("probability must be between 0 and 1, got {0}")]
    Probability(f64),
    #[error("stream_only and non_stream_only are both set, so the rule could never fire")]
    StreamScope,
    #[error("fault {0} only happens inside streams but the rule is non_stream_only")]
    StreamFaultOnNonStream(&'static str),
}

/// A rule as the registry reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultStatus {
    pub id: u64,
    pub rule: FaultRule,
    /// How many requests it hit so far.
    pub fired: u64,
    /// Fires left, if the rule has a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// False once the count or the window is used up.
    pub active: bool,
}

/// What a request looks like to the fault matcher.
pub(crate) struct Probe<'a> {
    pub path: &'a str,
    pub model: Option<&'a str>,
    pub key: Option<&'a str>,
    pub stream: bool,
}

struct Entry {
    id: u64,
    rule: FaultRule,
    added: Instant,
    remaining: Option<AtomicU32>,
    fired: AtomicU64,
    rng: Mutex<fastrand::Rng>,
}

impl Entry {
    fn in_window(&self, now: Instant) -> WindowState {
        let age = now.saturating_duration_since(self.added).as_millis();
        let start = u128::from(self.rule.start_after_ms);
        if age < start {
            return WindowState::NotYet;
        }
        match self.rule.duration_ms {
            Some(d) if age >= start + u128::from(d) => WindowState::Over,
            _ => WindowState::Open,
        }
    }

    fn scope_matches(&self, p: &Probe<'_>) -> bool {
        let r = &self.rule;
        if (r.stream_only || r.fault.is_stream_only()) && !p.stream {
            return false;
        }
        if r.non_stream_only && p.stream {
            return false;
        }
        if r.path.as_deref().is_some_and(|want| want != p.path) {
            return false;
        }
        if r.model.as_deref().is_some_and(|want| Some(want) != p.model) {
            return false;
        }
        if r.key.as_deref().is_some_and(|want| Some(want) != p.key) {
            return false;
        }
        true
    }

    /// Takes one fire from the count; false if the count is used up.
    fn take(&self) -> bool {
        match &self.remaining {
            None => true,
            Some(left) => left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok(),
        }
    }

    fn roll(&self) -> bool {
        let p = self.rule.probability;
        if p >= 1.0 {
            return true;
        }
        if p <= 0.0 || p.is_nan() {
            return false;
        }
        // A poisoned lock only means another request panicked mid-roll; the RNG is still usable.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.f64() < p
    }

    fn status(&self, now: Instant) -> FaultStatus {
        let remaining = self.remaining.as_ref().map(|r| r.load(Ordering::Acquire));
        FaultStatus {
            id: self.id,
            rule: self.rule.clone(),
            fired: self.fired.load(Ordering::Relaxed),
            remaining,
            active: remaining != Some(0) && self.in_window(now) != WindowState::Over,
        }
    }
}

#[derive(PartialEq)]
enum WindowState {
    NotYet,
    Open,
    Over,
}

/// The rules in force, in the order they were added (the first matching rule wins).
#[derive(Default)]
pub(crate) struct FaultSet {
    rules: RwLock<Vec<Arc<Entry>>>,
    // Lets the hot path skip the lock entirely when no rule is installed (the benchmark case).
    len: AtomicUsize,
    next_id: AtomicU64,
}

impl FaultSet {
    pub(crate) fn add(&self, mut rule: FaultRule) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        if rule.probability.is_nan() {
            rule.probability = 0.0;
        }
        rule.probability = rule.probability.clamp(0.0, 1.0);
        let seed = rule.seed.unwrap_or(0x5eed_f107_111a_0000 ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let entry = Arc::new(Entry {
            id,
            remaining: rule.count.map(AtomicU32::new),
            rule,
            added: Instant::now(),
            fired: AtomicU64::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        });
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        rules.push(entry);
        self.len.store(rules.len(), Ordering::Release);
        id
    }

    pub(crate) fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let before = rules.len();
        rules.retain(|e| e.id != id);
        self.len.store(rules.len(), Ordering::Release);
        rules.len() != before
    }

    pub(crate) fn clear(&self) -> usize {
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let n = rules.len();
        rules.clear();
        self.len.store(0, Ordering::Release);
        n
    }

    pub(crate) fn list(&self) -> Vec<FaultStatus> {
        let now = Instant::now();
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        rules.iter().map(|e| e.status(now)).collect()
    }

    /// The first rule that matches and fires for this request: its id and fault.
    pub(crate) fn pick(&self, probe: &Probe<'_>) -> Option<(u64, Fault)> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = Instant::now();
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        for e in rules.iter() {
            if e.in_window(now) != WindowState::Open || !e.scope_matches(probe) {
                continue;
            }
            // Probability first, so a request the dice spare doesn't use up a counted fire.
            if !e.roll() || !e.take() {
                continue;
            }
            e.fired.fetch_add(1, Ordering::Relaxed);
            return Some((e.id, e.rule.fault.clone()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe<'a>(model: &'a str, key: &'a str, stream: bool) -> Probe<'a> {
        Probe { path: "/v1/messages", model: Some(model), key: Some(key), stream }
    }

    #[test]
    fn json_form_round_trips_and_rejects_unknown_fields() {
        let rule: FaultRule =
            serde_json::from_str(r#"{"fault":{"kind":"rate_limited","retry_after_secs":7},"count":2,"model":"m"}"#)
                .unwrap();
        assert_eq!(rule.fault, Fault::RateLimited { retry_after_secs: 7 });
        assert_eq!(rule.count, Some(2));
        assert_eq!(rule.probability, 1.0);
        let back: FaultRule = serde_json::from_value(serde_json::to_value(&rule).unwrap()).unwrap();
        assert_eq!(back, rule);
        assert!(serde_json::from_str::<FaultRule>(r#"{"fault":{"kind":"overloaded"},"cuont":1}"#).is_err());
        assert!(serde_json::from_str::<FaultRule>(r#"{"fault":{"kind":"no_such_fault"}}"#).is_err());
        let default_retry: Fault = serde_json::from_str(r#"{"kind":"rate_limited"}"#).unwrap();
        assert_eq!(default_retry, Fault::RateLimited { retry_after_secs: 30 });
    }

    #[test]
    fn count_expires_the_rule() {
        let set = FaultSet::default();
        let id = set.add(FaultRule::new(Fault::Overloaded).count(2));
        let p = probe("m", "k", false);
        assert_eq!(set.pick(&p).map(|f| f.0), Some(id));
        assert!(set.pick(&p).is_some());
        assert!(set.pick(&p).is_none());
        let st = &set.list()[0];
        assert_eq!((st.fired, st.remaining, st.active), (2, Some(0), false));
    }

    #[test]
    fn scope_by_model_key_and_stream() {
        let set = FaultSet::default();
        set.add(FaultRule::new(Fault::Internal).model("a").key("k1"));
        set.add(FaultRule::new(Fault::CutMidStream { after_events: 1 }));
        assert!(set.pick(&probe("b", "k1", false)).is_none());
        assert!(set.pick(&probe("a", "k2", false)).is_none());
        assert_eq!(set.pick(&probe("a", "k1", false)).unwrap().1, Fault::Internal);
        // The stream fault is skipped for non-stream requests and hits streams.
        assert!(set.pick(&probe("b", "k2", false)).is_none());
        assert_eq!(set.pick(&probe("b", "k2", true)).unwrap().1.name(), "cut_mid_stream");
    }

    #[test]
    fn probability_is_seeded_and_deterministic() {
        let run = || {
            let set = FaultSet::default();
            set.add(FaultRule::new(Fault::Internal).probability(0.5).seed(42));
            (0..200).map(|_| set.pick(&probe("m", "k", false)).is_some()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((60..140).contains(&hits), "{hits} hits of 200 at p=0.5");
    }

    #[test]
    fn window_not_yet_open_does_not_fire() {
        let set = FaultSet::default();
        set.add(FaultRule::new(Fault::Internal).window(3_600_000, None));
        set.add(FaultRule::new(Fault::Overloaded).window(0, Some(0)));
        assert!(set.pick(&probe("m", "k", false)).is_none());
        let st = set.list();
        assert!(st[0].active);
        assert!(!st[1].active);
    }

    #[test]
    fn validate_rejects_impossible_rules() {
        assert!(FaultRule::new(Fault::Internal).probability(1.5).validate().is_err());
        assert!(FaultRule::new(Fault::Internal).stream_only().non_stream_only().validate().is_err());
        assert!(FaultRule::new(Fault::MalformedSse { after_events: 1 }).non_stream_only().validate().is_err());
        assert!(FaultRule::new(Fault::Internal).validate().is_ok());
    }

    #[test]
    fn remove_and_clear() {
        let set = FaultSet::default();
        let a = set.add(FaultRule::new(Fault::Internal));
        set.add(FaultRule::new(Fault::Overloaded));
        assert!(set.remove(a));
        assert!(!set.remove(a));
        assert_eq!(set.pick(&probe("m", "k", false)).unwrap().1, Fault::Overloaded);
        assert_eq!(set.clear(), 1);
        assert!(set.pick(&probe("m", "k", false)).is_none());
    }
}
