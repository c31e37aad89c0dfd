//! The failover loop: candidates in order, credentials in order inside a candidate, breakers
//! consulted before every attempt, one aggregate error at the end.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use flotilla_config::{Chain, Config, ModelRef, RouterConfig};
use flotilla_proto::{ChatRequest, ChatResponse, StreamEvent};
use flotilla_telemetry::Metrics;
use flotilla_telemetry::events::{ProviderAttemptFailed, ProviderAttemptSkipped};
use tokio::time::Instant;

use crate::classify::{Action, FailureClass};
use crate::error::{AttemptOutcome, AttemptRecord, RouteError};
use crate::health::{Admit, Health, Key, Trip};
use crate::routes::{Candidate, CredentialPlan, Plan, Routes, Upstream};
use crate::stream::CommittedStream;
use crate::upstream::{AttemptFailure, ClientError, Target, UpstreamClient, UpstreamStream};

/// Which candidate answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub provider: String,
    pub model: String,
    pub credential: String,
    /// `provider/model`, formatted once per config load (it goes into a header and a metric;
    /// the router hands out one shared `Answered` per candidate and credential).
    model_ref: String,
    /// The same as a header value, also made once per config load (`None` if a name cannot
    /// be a header value).
    model_header: Option<http::HeaderValue>,
}

impl Answered {
    pub(crate) fn new(provider: &str, model: &str, credential: &str) -> Self {
        let model_ref = format!("{provider}/{model}");
        let model_header = http::HeaderValue::from_str(&model_ref).ok();
        Answered {
            provider: provider.to_owned(),
            model: model.to_owned(),
            credential: credential.to_owned(),
            model_ref,
            model_header,
        }
    }

    /// `provider/model`, as sent in the `x-flotilla-model` header.
    pub fn model_ref(&self) -> &str {
        &self.model_ref
    }

    /// [`Answered::model_ref`] as a header value.
    pub fn model_header(&self) -> Option<&http::HeaderValue> {
        self.model_header.as_ref()
    }
}

/// A complete answer and how it was obtained.
#[derive(Debug)]
pub struct RouteResult {
    pub response: ChatResponse,
    pub answered: Arc<Answered>,
    pub attempts: Vec<AttemptRecord>,
    /// Time spent inside the router itself (route entry to the first request sent, plus parsing
    /// the answer); network waits excluded.
    pub own_time: Duration,
}

/// The router. Cheap to share (`Arc<Router>`); the config can be swapped while it runs.
#[derive(Debug)]
pub struct Router {
    /// The config in force, compiled for the request path.
    routes: ArcSwap<Routes>,
    health: Health,
    upstream: UpstreamClient,
    metrics: Arc<Metrics>,
}

/// What one attempt produced.
enum Answer {
    Full(ChatResponse, Duration),
    Stream(Vec<StreamEvent>, Box<UpstreamStream>),
}

impl Router {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Self, ClientError> {
        let health = Health::new(
            config.router.breaker_threshold,
            config.router.ttfb_timeout.max(Duration::from_secs(1)),
            metrics.clone(),
        );
        let routes = ArcSwap::from_pointee(Routes::compile(config));
        Ok(Router { routes, health, upstream: UpstreamClient::new()?, metrics })
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.routes.load().config.clone()
    }

    /// Swaps in a new config; requests in flight finish on the old one. Breaker state is kept
    /// (it is keyed by names, which usually survive a reload).
    pub fn reload(&self, config: Arc<Config>) {
        self.routes.store(Arc::new(Routes::compile(config)));
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Resolves a client's `model` to a chain: an agent id, a named chain, `default`, or a
    /// configured `provider/model` (a chain of one).
    pub fn resolve(&self, name: &str) -> Result<Chain, RouteError> {
        resolve(&self.routes.load().config, name)
    }

    /// Serves a non-streaming request.
    pub async fn complete(&self, req: &ChatRequest) -> Result<RouteResult, RouteError> {
        let entered = Instant::now();
        let routes = self.routes.load_full();
        let plan = routes.plan(&req.model)?;
        match self.run(&routes.config, &plan, req, false, entered).await? {
            (Answer::Full(response, post), answered, attempts, pre) => {
                Ok(RouteResult { response, answered, attempts, own_time: pre + post })
            }
            (Answer::Stream(..), ..) => unreachable_stream(),
        }
    }

    /// Serves a streaming request: returns once the first content event arrived (the stream is
    /// then committed to that candidate), or with the aggregate error if none could start.
    pub async fn stream(&self, req: &ChatRequest) -> Result<CommittedStream, RouteError> {
        let entered = Instant::now();
        let routes = self.routes.load_full();
        let plan = routes.plan(&req.model)?;
        match self.run(&routes.config, &plan, req, true, entered).await? {
            (Answer::Stream(head, upstream), answered, attempts, pre) => {
                let idle = routes.config.router.ttfb_timeout;
                Ok(CommittedStream::new(head, upstream, answered, attempts, idle, pre))
            }
            (Answer::Full(..), ..) => unreachable_stream(),
        }
    }

    async fn run(
        &self,
        config: &Config,
        chain: &Plan,
        req: &ChatRequest,
        stream: bool,
        entered: Instant,
    ) -> Result<(Answer, Arc<Answered>, Vec<AttemptRecord>, Duration), RouteError> {
        let rc = &config.router;
        let deadline = entered + rc.request_timeout;
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut first_send: Option<Duration> = None;
        // After "context too long", only models with a larger known window are worth trying.
        let mut need_window: Option<Option<u32>> = None;
        let mut deadline_hit = false;

        // Pass 0 honours breakers; pass 1 (only if pass 0 tried nothing at all) is the last
        // resort: the chain's candidates are tried despite open breakers, because refusing
        // without a single round trip would turn a cooldown into a guaranteed outage.
        'passes: for pass in 0..2 {
            if pass == 1 && attempts.iter().any(|a| matches!(a.outcome, AttemptOutcome::Failed(_))) {
                break;
            }
            'candidates: for cand in &chain.candidates {
                let Some(up) = &cand.upstream else {
                    attempts.push(skipped(cand, "none", "unknown_provider"));
                    continue;
                };
                let window = up.context_window;
                if let Some(needed) = need_window {
                    let bigger = match (needed, window) {
                        (Some(n), Some(w)) => w > n,
                        _ => true,
                    };
                    if !bigger {
                        attempts.push(skipped(cand, "none", "context_window_too_small"));
                        continue;
                    }
                }
                let model_key = &up.model_key;
                if pass == 0
                    && let Admit::No { reason, .. } = self.health.admit(model_key)
                {
                    self.skip(chain, cand, reason);
                    attempts.push(skipped(cand, "*", reason_breaker(reason)));
                    continue;
                }
                for cred in &up.credentials {
                    let cred_name = cred.name.as_str();
                    // An OAuth access token past its expiry would only earn a 401: skip it.
                    // (Refreshing is the credential owner's job, through the cluster store.)
                    if let Some(exp) = cred.expires_at
                        && exp <= SystemTime::now()
                    {
                        attempts.push(skipped(cand, cred_name, "credential_expired"));
                        continue;
                    }
                    // Credential-level blocks (auth, billing) hold even in the last resort.
                    if let Admit::No { reason, .. } = self.health.admit(&cred.cred_key) {
                        attempts.push(skipped(cand, cred_name, reason_breaker(reason)));
                        continue;
                    }
                    if pass == 0
                        && let Admit::No { reason, .. } = self.health.admit(&cred.exact_key)
                    {
                        attempts.push(skipped(cand, cred_name, reason_breaker(reason)));
                        continue;
                    }
                    let mut retried = false;
                    loop {
                        let now = Instant::now();
                        if now >= deadline {
                            deadline_hit = true;
                            break 'passes;
                        }
                        let remaining = deadline - now;
                        let ttfb = rc.ttfb_timeout.min(remaining);
                        let started = Instant::now();
                        let result =
                            self.attempt(cand, up, cred, req, stream, ttfb, remaining, &mut first_send, entered).await;
                        let elapsed = started.elapsed();
                        match result {
                            Ok(answer) => {
                                self.health.success(&cred.exact_key);
                                self.health.success(model_key);
                                // ProviderAttemptSucceeded only counts (it logs nothing): the
                                // same series, through handles cached on the candidate.
                                let m = up.success_metrics(&cand.provider, &cand.model, &self.metrics);
                                m.attempts.inc();
                                m.duration.observe(elapsed.as_secs_f64());
                                attempts.push(AttemptRecord {
                                    provider: cand.provider.clone(),
                                    model: cand.model.clone(),
                                    credential: cred_name.to_owned(),
                                    outcome: AttemptOutcome::Ok,
                                    status: Some(200),
                                    elapsed,
                                    detail: String::new(),
                                });
                                let answered = cred.answered.clone();
                                return Ok((answer, answered, attempts, first_send.unwrap_or_default()));
                            }
                            Err(failure) => {
                                let class = failure.class();
                                self.trip(rc, &class, model_key, &cred.cred_key, &cred.exact_key);
                                let mut action = class.action();
                                // One jittered pause, both checked against the deadline and slept.
                                let pause = jitter(rc.retry_backoff);
                                if action == Action::RetryOnce {
                                    let can_retry = rc.retry_transient
                                        && !retried
                                        && Instant::now() + pause + Duration::from_millis(50) < deadline;
                                    if !can_retry {
                                        action = Action::NextCandidate;
                                    }
                                }
                                let next = match action {
                                    Action::RetryOnce => "retry",
                                    Action::RotateCredential => "rotate credential",
                                    Action::NextCandidate => "next candidate",
                                    Action::ReturnToCaller => "return to caller",
                                };
                                ProviderAttemptFailed {
                                    chain: &chain.name,
                                    provider: &cand.provider,
                                    model: &cand.model,
                                    credential: cred_name,
                                    reason: class.reason(),
                                    status: failure.status(),
                                    elapsed,
                                    next,
                                }
                                .emit(&self.metrics);
                                attempts.push(AttemptRecord {
                                    provider: cand.provider.clone(),
                                    model: cand.model.clone(),
                                    credential: cred_name.to_owned(),
                                    outcome: AttemptOutcome::Failed(class.reason()),
                                    status: failure.status(),
                                    elapsed,
                                    detail: failure.detail(),
                                });
                                match action {
                                    Action::ReturnToCaller => {
                                        let error = match failure {
                                            AttemptFailure::Http { error, .. } => error,
                                            _ => None,
                                        };
                                        return Err(RouteError::Caller {
                                            status: attempts.last().and_then(|a| a.status).unwrap_or(400),
                                            error,
                                            attempts,
                                        });
                                    }
                                    Action::RetryOnce => {
                                        retried = true;
                                        tokio::time::sleep(pause).await;
                                    }
                                    Action::RotateCredential => break,
                                    Action::NextCandidate => {
                                        if class == FailureClass::ContextTooLong {
                                            need_window = Some(window);
                                        }
                                        continue 'candidates;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Err(RouteError::AllFailed { chain: chain.name.clone(), attempts, deadline_hit })
    }

    #[expect(clippy::too_many_arguments, reason = "internal helper of run(); a struct would only rename them")]
    async fn attempt(
        &self,
        cand: &Candidate,
        up: &Upstream,
        cred: &CredentialPlan,
        req: &ChatRequest,
        stream: bool,
        ttfb: Duration,
        remaining: Duration,
        first_send: &mut Option<Duration>,
        entered: Instant,
    ) -> Result<Answer, AttemptFailure> {
        // A base URL or header value that cannot be sent fails like a request that could not
        // be sent (transient), as it did when it was parsed per request.
        let uri = up.uri.as_ref().map_err(|e| AttemptFailure::Transport { detail: e.to_string() })?;
        let headers = cred.headers.as_ref().map_err(|e| AttemptFailure::Transport { detail: e.to_string() })?;
        let target = Target { model: &cand.model, wire: up.wire, uri, headers };
        if !stream {
            let (resp, timings) = self.upstream.complete(target, req, ttfb, remaining).await?;
            first_send.get_or_insert(timings.sent_at.saturating_duration_since(entered));
            return Ok(Answer::Full(resp, timings.post));
        }
        // Streams: the time-to-first-byte deadline runs until the first *content* event, and
        // lifecycle events are held back so that a failover before then is invisible.
        let started = Instant::now();
        let mut upstream = self.upstream.open_stream(target, req, ttfb).await?;
        first_send.get_or_insert(upstream.sent_at.saturating_duration_since(entered));
        let mut head = Vec::new();
        loop {
            let left = ttfb.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, upstream.next_event()).await {
                Err(_) => return Err(AttemptFailure::Timeout { after: ttfb }),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => {
                    return Err(AttemptFailure::Malformed { detail: "stream finished without any content".to_owned() });
                }
                Ok(Ok(Some(ev))) => {
                    let content = ev.is_content();
                    head.push(ev);
                    if content {
                        return Ok(Answer::Stream(head, Box::new(upstream)));
                    }
                }
            }
        }
    }

    fn trip(&self, rc: &RouterConfig, class: &FailureClass, model_key: &Key, cred_key: &Key, exact_key: &Key) {
        let reason = class.reason();
        match class {
            FailureClass::Overloaded => {
                self.health.failure(model_key, Trip { reason, cooldown: rc.overload_cooldown, open_now: true });
            }
            FailureClass::RateLimited { retry_after } => {
                let cooldown = retry_after.unwrap_or(rc.rate_limit_cooldown).min(rc.max_retry_after);
                self.health.failure(exact_key, Trip { reason, cooldown, open_now: true });
            }
            FailureClass::AuthFailed => {
                self.health.failure(cred_key, Trip { reason, cooldown: rc.auth_cooldown, open_now: true });
            }
            FailureClass::Billing => {
                self.health.failure(cred_key, Trip { reason, cooldown: rc.billing_cooldown, open_now: true });
            }
            FailureClass::Transient => {
                self.health.failure(exact_key, Trip { reason, cooldown: rc.transient_cooldown, open_now: false });
            }
            FailureClass::ModelUnavailable => {
                self.health.failure(model_key, Trip { reason, cooldown: rc.auth_cooldown, open_now: true });
            }
            FailureClass::ContextTooLong | FailureClass::InvalidRequest => {}
        }
    }

    fn skip(&self, chain: &Plan, cand: &Candidate, reason: &str) {
        ProviderAttemptSkipped { chain: &chain.name, provider: &cand.provider, model: &cand.model, reason }
            .emit(&self.metrics);
    }
}

fn unreachable_stream() -> ! {
    // run() returns the Answer variant matching its `stream` argument.
    panic!("router answer kind does not match the request kind")
}

fn reason_breaker(reason: &'static str) -> &'static str {
    match reason {
        "overloaded" => "breaker_open_overloaded",
        "rate_limited" => "cooldown_rate_limited",
        "auth_failed" => "credential_unusable_auth",
        "billing" => "credential_unusable_billing",
        "transient" => "breaker_open_transient",
        "model_unavailable" => "breaker_open_model_unavailable",
        _ => "breaker_open",
    }
}

fn skipped(cand: &Candidate, cred: &str, reason: &'static str) -> AttemptRecord {
    AttemptRecord {
        provider: cand.provider.clone(),
        model: cand.model.clone(),
        credential: cred.to_owned(),
        outcome: AttemptOutcome::Skipped(reason),
        status: None,
        elapsed: Duration::ZERO,
        detail: String::new(),
    }
}

/// A pause of `base` × [0.5, 1.5).
fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + fastrand::f64())
}

/// Resolves a `model` name against a config (see [`Router::resolve`]).
pub fn resolve(config: &Config, name: &str) -> Result<Chain, RouteError> {
    if let Some(a) = config.agents.iter().find(|a| a.id == name) {
        return Ok(a.chain.clone());
    }
    if let Some(c) = config.chains.get(name) {
        return Ok(c.clone());
    }
    if matches!(name, "default" | "agents.defaults")
        && let Some(c) = &config.default_chain
    {
        return Ok(c.clone());
    }
    if let Some((p, m)) = name.split_once('/')
        && config.providers.contains_key(p)
        && !m.is_empty()
    {
        return Ok(Chain {
            name: name.to_owned(),
            candidates: vec![ModelRef { provider: p.to_owned(), model: m.to_owned() }],
        });
    }
    let known = config
        .agents
        .iter()
        .map(|a| a.id.clone())
        .chain(config.chains.keys().cloned())
        .chain(config.agents.iter().flat_map(|a| a.chain.candidates.iter().map(|c| c.to_string())));
    let suggestion = known
        .map(|k| (strsim::jaro_winkler(&k, name), k))
        .filter(|(s, _)| *s > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k);
    Err(RouteError::UnknownModel { name: name.to_owned(), suggestion })
}
