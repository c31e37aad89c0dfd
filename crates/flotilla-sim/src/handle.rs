//! The simulator's shared state: fault rules, counters and the recorded requests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fault::{FaultRule, FaultSet, FaultStatus, Probe};

/// How many requests a new handle remembers (see [`SimHandle::set_record_limit`]).
pub const DEFAULT_RECORD_LIMIT: usize = 1000;

/// Cheap-to-clone handle on a simulator's state: add and remove faults at run time, read
/// counters, and see what clients sent. One handle may serve several simulators, which then
/// share faults and counters.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Shared>,
}

struct Shared {
    faults: FaultSet,
    stats: Mutex<SimStats>,
    requests: Mutex<VecDeque<RecordedRequest>>,
    record_limit: AtomicUsize,
    seq: AtomicU64,
    started: Instant,
    oauth: crate::oauth::OAuthState,
}

/// Counters since the handle was made (or [`SimHandle::reset_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// API requests answered (admin requests are not counted).
    pub requests_total: u64,
    pub by_path: BTreeMap<String, u64>,
    /// By the request's `model` field, when it had one.
    pub by_model: BTreeMap<String, u64>,
    /// By the status code of the response head (a cut stream counts as its 200).
    pub by_status: BTreeMap<u16, u64>,
    /// By fault name ([`crate::Fault::name`]).
    pub by_fault: BTreeMap<String, u64>,
    /// By fault rule id.
    pub faults_fired: BTreeMap<u64, u64>,
    pub streams_started: u64,
    /// Streams whose last byte was handed to the connection.
    pub streams_completed: u64,
    /// Streams ended early on purpose (cut, reset mid-body, or a mid-stream error event).
    pub streams_cut: u64,
    /// Connections reset by a fault (before the head or mid-stream).
    pub connections_reset: u64,
    /// Sum of `input_tokens` / `output_tokens` reported in successful answers.
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One generation request (`/v1/messages`, `/v1/chat/completions`, `/v1/responses`) as the
/// simulator saw it, for tests that assert what a client sent.
/// Credentials are never stored: only the header's name and a fingerprint of the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 1, 2, 3… in arrival order.
    pub seq: u64,
    /// Milliseconds since the handle was made.
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub stream: bool,
    /// `x-api-key` or `authorization`, whichever carried the credential.
    pub auth_header: Option<String>,
    /// [`crate::key_fingerprint`] of the key used.
    pub key_fingerprint: Option<String>,
    /// Position of the key in `SimConfig::accepted_keys`, if it is there.
    pub key_index: Option<usize>,
    /// Every request header except the credential-bearing ones (`authorization`,
    /// `x-api-key`, `cookie`, `proxy-authorization`), names lowercase.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (`null` if it was not JSON).
    pub body: serde_json::Value,
    /// Status code of the response head (`0` when the connection was reset before one).
    pub status: u16,
    /// The fault that hit this request, if any.
    pub fault: Option<String>,
    pub fault_rule: Option<u64>,
}

/// What the pipeline hands to the handle once a request has its answer.
pub(crate) struct Outcome<'a> {
    pub path: &'a str,
    pub model: Option<&'a str>,
    pub status: u16,
    pub fault: Option<(u64, &'static str)>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stream_started: bool,
    pub reset: bool,
}

impl<'a> Outcome<'a> {
    /// A request to `path` that generated nothing (no model, no tokens, no fault, no stream):
    /// the model list, the OAuth token endpoint.
    pub fn plain(path: &'a str, status: u16) -> Self {
        Outcome {
            path,
            model: None,
            status,
            fault: None,
            input_tokens: 0,
            output_tokens: 0,
            stream_started: false,
            reset: false,
        }
    }
}

/// How a stream ended, reported by the body when it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    Completed,
    Cut,
    Reset,
}

impl Default for SimHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl SimHandle {
    pub fn new() -> Self {
        SimHandle {
            inner: Arc::new(Shared {
                faults: FaultSet::default(),
                stats: Mutex::new(SimStats::default()),
                requests: Mutex::new(VecDeque::new()),
                record_limit: AtomicUsize::new(DEFAULT_RECORD_LIMIT),
                seq: AtomicU64::new(0),
                started: Instant::now(),
                oauth: crate::oauth::OAuthState::default(),
            }),
        }
    }

    /// Installs a fault rule and returns its id. Probability is clamped into 0..=1; use
    /// [`FaultRule::validate`] first to refuse bad rules instead.
    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        self.inner.faults.add(rule)
    }

    /// Removes one rule; false if there was no rule with that id.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.inner.faults.remove(id)
    }

    /// Removes every rule (ends an injected outage); returns how many there were.
    pub fn clear_faults(&self) -> usize {
        self.inner.faults.clear()
    }

    /// The installed rules with their fire counts, in matching order.
    pub fn faults(&self) -> Vec<FaultStatus> {
        self.inner.faults.list()
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.inner.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.inner.stats) = SimStats::default();
    }

    /// The most recent requests, oldest first (at most the record limit).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// How many requests to remember; 0 turns recording off (benchmarks).
    pub fn set_record_limit(&self, limit: usize) {
        self.inner.record_limit.store(limit, Ordering::Relaxed);
        let mut q = lock(&self.inner.requests);
        while q.len() > limit {
            q.pop_front();
        }
    }

    pub(crate) fn pick_fault(&self, probe: &Probe<'_>) -> Option<(u64, crate::Fault)> {
        self.inner.faults.pick(probe)
    }

    pub(crate) fn oauth(&self) -> &crate::oauth::OAuthState {
        &self.inner.oauth
    }

    pub(crate) fn recording(&self) -> bool {
        self.inner.record_limit.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn record(&self, o: &Outcome<'_>) {
        let mut s = lock(&self.inner.stats);
        s.requests_total += 1;
        bump(&mut s.by_path, o.path);
        if let Some(m) = o.model {
            bump(&mut s.by_model, m);
        }
        *s.by_status.entry(o.status).or_insert(0) += 1;
        if let Some((id, name)) = o.fault {
            bump(&mut s.by_fault, name);
            *s.faults_fired.entry(id).or_insert(0) += 1;
        }
        if o.stream_started {
            s.streams_started += 1;
        }
        if o.reset {
            s.connections_reset += 1;
        }
        s.input_tokens += o.input_tokens;
        s.output_tokens += o.output_tokens;
    }

    pub(crate) fn stream_ended(&self, end: StreamEnd) {
        let mut s = lock(&self.inner.stats);
        match end {
            StreamEnd::Completed => s.streams_completed += 1,
            StreamEnd::Cut => s.streams_cut += 1,
            StreamEnd::Reset => {
                s.streams_cut += 1;
                s.connections_reset += 1;
            }
        }
    }

    /// Stores a request; `fill` only runs when recording is on, so the benchmark path pays
    /// nothing for it.
    pub(crate) fn push_request(&self, fill: impl FnOnce(u64, u64) -> RecordedRequest) {
        let limit = self.inner.record_limit.load(Ordering::Relaxed);
        if limit == 0 {
            return;
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let at_ms = u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let rec = fill(seq, at_ms);
        let mut q = lock(&self.inner.requests);
        while q.len() >= limit {
            q.pop_front();
        }
        q.push_back(rec);
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    // Look up first so the common case (key already there) allocates nothing.
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else {
        map.insert(key.to_owned(), 1);
    }
}

/// Locks, ignoring poisoning: the data are counters and logs that stay usable even if a
/// request task panicked while holding the lock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
