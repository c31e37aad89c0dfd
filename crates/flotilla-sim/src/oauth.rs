//! The Anthropic simulator's OAuth token endpoint, `POST /v1/oauth/token`, in the shape of
//! Anthropic's console endpoint (what Claude Code refreshes against), plus an opt-in check
//! that bearer tokens on the API were issued by it and have not expired.
//!
//! Protocol: a JSON body `{"grant_type": "refresh_token", "refresh_token", "client_id"}` gets
//! `{"token_type": "Bearer", "access_token", "expires_in", "refresh_token", "scope", …}` with a
//! new access token and a new refresh token every time. Refresh tokens are single-use: the one
//! sent is spent, and a spent or never-issued one gets `400 {"error": "invalid_grant",
//! "error_description": "Invalid refresh token"}`. Other bad requests get `400
//! invalid_request` / `unsupported_grant_type`. Old access tokens stay valid until they expire.
//!
//! Everything is driven through [`SimHandle`]: [`SimHandle::seed_refresh_token`],
//! [`SimHandle::set_oauth_expires_in`] (default 3600 s), [`SimHandle::oauth_stats`],
//! [`SimHandle::access_token_valid`], [`SimHandle::require_issued_bearer_tokens`] (the opt-in
//! check; off by default, when any bearer token is accepted as before) and
//! [`SimHandle::fail_next_oauth_requests`]. The same is reachable over HTTP for simulators in
//! another process: `GET /_sim/oauth` (stats and settings) and `POST /_sim/oauth` with any of
//! `{"seed_refresh_token", "expires_in", "require_issued_bearer_tokens"}`.
//!
//! Token endpoint requests are counted in [`crate::SimStats`] but never recorded in
//! [`SimHandle::requests`]: their bodies are credentials. Fault rules do not apply to them
//! (an unscoped rule means "every generation request"); use
//! [`SimHandle::fail_next_oauth_requests`] instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{Credential, ErrorKind};
use crate::handle::{Outcome, SimHandle};
use crate::server::App;
use crate::util::{alnum_id, mask_key};

/// The token endpoint's path.
pub const OAUTH_TOKEN_PATH: &str = "/v1/oauth/token";

/// Access token lifetime unless [`SimHandle::set_oauth_expires_in`] says otherwise.
pub const DEFAULT_OAUTH_EXPIRES_IN: u64 = 3600;

/// Expired access tokens are remembered (so they get "expired" rather than "invalid") until
/// this many are held; then the expired ones are forgotten.
const ACCESS_TOKENS_KEPT: usize = 10_000;

/// What the token endpoint did, since the handle was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthStats {
    /// Refresh grants answered with a new token set.
    pub refreshed: u64,
    /// Refresh grants refused (`invalid_grant`) because the refresh token was already used.
    pub reused: u64,
    /// Refresh grants refused (`invalid_grant`) because the refresh token was never issued.
    pub unknown: u64,
    /// Requests refused as malformed: not JSON, another grant type, a missing field.
    pub invalid_requests: u64,
    /// Requests answered with a failure from [`SimHandle::fail_next_oauth_requests`].
    pub injected_failures: u64,
    /// API requests refused because their bearer token was not issued here or had expired
    /// (only with [`SimHandle::require_issued_bearer_tokens`] on).
    pub bearer_rejected: u64,
}

/// The token endpoint's state, held by the [`SimHandle`].
pub(crate) struct OAuthState {
    inner: Mutex<Inner>,
    require_issued: AtomicBool,
}

struct Inner {
    expires_in: u64,
    live_refresh: HashSet<String>,
    spent_refresh: HashSet<String>,
    /// Access token → when it expires.
    access: HashMap<String, Instant>,
    fail_next: VecDeque<u16>,
    stats: OAuthStats,
}

/// An access token's standing.
enum Standing {
    Valid,
    Expired,
    Unknown,
}

impl Default for OAuthState {
    fn default() -> Self {
        OAuthState {
            inner: Mutex::new(Inner {
                expires_in: DEFAULT_OAUTH_EXPIRES_IN,
                live_refresh: HashSet::new(),
                spent_refresh: HashSet::new(),
                access: HashMap::new(),
                fail_next: VecDeque::new(),
                stats: OAuthStats::default(),
            }),
            require_issued: AtomicBool::new(false),
        }
    }
}

impl OAuthState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Poisoning only means a request task panicked; the token tables are still consistent
        // because every update is a single insert or remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn standing(&self, token: &str, now: Instant) -> Standing {
        match self.access.get(token) {
            Some(exp) if now < *exp => Standing::Valid,
            Some(_) => Standing::Expired,
            None => Standing::Unknown,
        }
    }

    fn add_access(&mut self, token: String, expires: Instant) {
        if self.access.len() >= ACCESS_TOKENS_KEPT {
            let now = Instant::now();
            self.access.retain(|_, exp| *exp > now);
        }
        self.access.insert(token, expires);
    }
}

impl SimHandle {
    /// Makes `token` a live refresh token, as if the endpoint had issued it (the credential a
    /// test imports). Seeding a token that was already used makes it live again.
    pub fn seed_refresh_token(&self, token: &str) {
        let mut s = self.oauth().lock();
        s.spent_refresh.remove(token);
        s.live_refresh.insert(token.to_owned());
    }

    /// Makes `token` a valid access token for `valid_for` (the access token imported with a
    /// seeded refresh token).
    pub fn seed_access_token(&self, token: &str, valid_for: Duration) {
        let expires = Instant::now() + valid_for;
        self.oauth().lock().add_access(token.to_owned(), expires);
    }

    /// The `expires_in` (seconds) of access tokens issued from now on; 0 issues tokens that are
    /// already expired.
    pub fn set_oauth_expires_in(&self, secs: u64) {
        self.oauth().lock().expires_in = secs;
    }

    pub fn oauth_stats(&self) -> OAuthStats {
        self.oauth().lock().stats.clone()
    }

    /// True if `token` was issued by the token endpoint (or seeded) and has not expired.
    pub fn access_token_valid(&self, token: &str) -> bool {
        matches!(self.oauth().lock().standing(token, Instant::now()), Standing::Valid)
    }

    /// Opt-in: when on, the Anthropic API accepts an `Authorization: Bearer` token only if the
    /// token endpoint issued it (or it was seeded) and it has not expired; otherwise `401
    /// authentication_error` ("Invalid bearer token", or "OAuth token has expired…"). Such a
    /// token is then not checked against `SimConfig::accepted_keys`. `x-api-key` requests are
    /// unaffected. Off by default: any bearer token is accepted as before.
    pub fn require_issued_bearer_tokens(&self, on: bool) {
        self.oauth().require_issued.store(on, Ordering::Relaxed);
    }

    /// The next `count` token endpoint requests fail with `status` (429 with `retry-after: 1`,
    /// 5xx with Anthropic's error body) before anything is checked, so no refresh token is
    /// spent. Calls add up, in order.
    pub fn fail_next_oauth_requests(&self, count: u32, status: u16) {
        let mut s = self.oauth().lock();
        s.fail_next.extend(std::iter::repeat_n(status, count as usize));
    }
}

/// The token endpoint and its admin route, mounted on the Anthropic simulator.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route(OAUTH_TOKEN_PATH, post(token)).route("/_sim/oauth", post(admin_set).get(admin_get))
}

/// The opt-in bearer check for an Anthropic API request: `None` when it does not apply (off,
/// or not a bearer credential), else whether the token passes.
pub(crate) fn bearer_verdict(handle: &SimHandle, cred: &Credential) -> Option<Result<(), ErrorKind>> {
    let state = handle.oauth();
    if !cred.bearer || !state.require_issued.load(Ordering::Relaxed) {
        return None;
    }
    let mut s = state.lock();
    let verdict = match s.standing(&cred.key, Instant::now()) {
        Standing::Valid => return Some(Ok(())),
        Standing::Expired => ErrorKind::Unauthorized { bearer: true, masked: mask_key(&cred.key) },
        Standing::Unknown => ErrorKind::InvalidKey { bearer: true, masked: mask_key(&cred.key) },
    };
    s.stats.bearer_rejected += 1;
    Some(Err(verdict))
}

/// The token endpoint's answers, before they become responses.
enum Reply {
    Tokens(Value),
    OAuthError(&'static str, &'static str),
    Injected(u16),
}

async fn token(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let reply = exchange(&app.handle, &body);
    if !app.cfg.latency.is_zero() {
        tokio::time::sleep(app.cfg.latency).await;
    }
    let response = match reply {
        Reply::Tokens(v) => json_response(StatusCode::OK, &v),
        Reply::OAuthError(error, description) => {
            json_response(StatusCode::BAD_REQUEST, &json!({ "error": error, "error_description": description }))
        }
        Reply::Injected(status) => injected(status),
    };
    app.handle.record(&Outcome::plain(OAUTH_TOKEN_PATH, response.status().as_u16()));
    response
}

/// Decides the answer; the refresh token is checked and spent under one lock, so of two
/// concurrent refreshes with the same token exactly one succeeds.
fn exchange(handle: &SimHandle, body: &[u8]) -> Reply {
    let mut s = handle.oauth().lock();
    if let Some(status) = s.fail_next.pop_front() {
        s.stats.injected_failures += 1;
        return Reply::Injected(status);
    }
    let req: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| req.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).filter(|v| !v.is_empty());
    let problem = match (req.as_ref().map(Value::is_object), field("grant_type")) {
        (None | Some(false), _) => Some(("invalid_request", "Request body must be a JSON object")),
        (_, None) => Some(("invalid_request", "Missing grant_type")),
        (_, Some("refresh_token")) if field("refresh_token").is_none() => {
            Some(("invalid_request", "Missing refresh_token"))
        }
        (_, Some("refresh_token")) if field("client_id").is_none() => Some(("invalid_request", "Missing client_id")),
        (_, Some("refresh_token")) => None,
        (_, Some(_)) => Some(("unsupported_grant_type", "Unsupported grant type")),
    };
    if let Some((error, description)) = problem {
        s.stats.invalid_requests += 1;
        return Reply::OAuthError(error, description);
    }
    let presented = field("refresh_token").unwrap_or_default();
    if !s.live_refresh.remove(presented) {
        if s.spent_refresh.contains(presented) {
            s.stats.reused += 1;
        } else {
            s.stats.unknown += 1;
        }
        return Reply::OAuthError("invalid_grant", "Invalid refresh token");
    }
    s.spent_refresh.insert(presented.to_owned());
    let access = alnum_id("sk-ant-oat01-", 95);
    let refresh = alnum_id("sk-ant-ort01-", 95);
    let expires_in = s.expires_in;
    s.add_access(access.clone(), Instant::now() + Duration::from_secs(expires_in));
    s.live_refresh.insert(refresh.clone());
    s.stats.refreshed += 1;
    Reply::Tokens(json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": expires_in,
        "refresh_token": refresh,
        "scope": "user:inference user:profile",
        "organization": { "uuid": "00000000-0000-4000-8000-f1071a51a000", "name": "flotilla simulator" },
        "account": { "uuid": "00000000-0000-4000-8000-f1071a51a001", "email_address": "sim@flotilla.invalid" },
    }))
}

/// An injected failure, in Anthropic's API error shape.
fn injected(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (ty, message) = match code.as_u16() {
        429 => ("rate_limit_error", "Rate limited. Please try again later."),
        529 => ("overloaded_error", "Overloaded"),
        503 => ("api_error", "Service unavailable"),
        _ => ("api_error", "Internal server error"),
    };
    let mut r = json_response(code, &json!({ "type": "error", "error": { "type": ty, "message": message } }));
    if code == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // RFC 6749 §5.1: token responses must not be cached.
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    r
}

/// `POST /_sim/oauth` body: every field optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSet {
    seed_refresh_token: Option<String>,
    expires_in: Option<u64>,
    require_issued_bearer_tokens: Option<bool>,
}

async fn admin_set(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let set: AdminSet = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, &json!({ "error": format!("invalid oauth settings: {e}") }));
        }
    };
    if let Some(t) = set.seed_refresh_token.as_deref().filter(|t| !t.is_empty()) {
        app.handle.seed_refresh_token(t);
    }
    if let Some(secs) = set.expires_in {
        app.handle.set_oauth_expires_in(secs);
    }
    if let Some(on) = set.require_issued_bearer_tokens {
        app.handle.require_issued_bearer_tokens(on);
    }
    admin_get(State(app)).await
}

async fn admin_get(State(app): State<Arc<App>>) -> Response {
    let state = app.handle.oauth();
    let (stats, expires_in) = {
        let s = state.lock();
        (s.stats.clone(), s.expires_in)
    };
    json_response(
        StatusCode::OK,
        &json!({
            "stats": stats,
            "expires_in": expires_in,
            "require_issued_bearer_tokens": state.require_issued.load(Ordering::Relaxed),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimConfig, SimServer};

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn post_token(sim: &SimServer, body: &Value) -> (u16, Value) {
        let resp = client().post(format!("{}{OAUTH_TOKEN_PATH}", sim.url())).json(body).send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(resp.headers()["cache-control"], "no-store");
        (status, resp.json().await.unwrap())
    }

    fn grant(refresh: &str) -> Value {
        json!({ "grant_type": "refresh_token", "refresh_token": refresh, "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e" })
    }

    async fn message(sim: &SimServer, bearer: &str) -> (u16, Value) {
        let resp = client()
            .post(format!("{}/v1/messages", sim.url()))
            .bearer_auth(bearer)
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-opus-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    #[tokio::test]
    async fn refresh_rotates_tokens_and_refresh_tokens_are_single_use() {
        let sim = crate::spawn(SimConfig::anthropic()).await.unwrap();
        sim.handle().seed_refresh_token("sk-ant-ort01-seed");
        let (status, first) = post_token(&sim, &grant("sk-ant-ort01-seed")).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["token_type"], "Bearer");
        assert_eq!(first["expires_in"], 3600);
        let access = first["access_token"].as_str().unwrap();
        let next = first["refresh_token"].as_str().unwrap();
        assert!(access.starts_with("sk-ant-oat01-") && next.starts_with("sk-ant-ort01-"));
        assert!(sim.handle().access_token_valid(access));
        assert!(!sim.handle().access_token_valid("sk-ant-oat01-never-issued"));

        // The seed is spent; the new one works once.
        let (status, err) = post_token(&sim, &grant("sk-ant-ort01-seed")).await;
        assert_eq!(status, 400);
        assert_eq!(err, json!({"error": "invalid_grant", "error_description": "Invalid refresh token"}));
        let (status, second) = post_token(&sim, &grant(next)).await;
        assert_eq!(status, 200);
        assert_ne!(second["access_token"], first["access_token"]);
        assert_ne!(second["refresh_token"], first["refresh_token"]);
        assert_eq!(post_token(&sim, &grant(next)).await.0, 400);
        assert_eq!(post_token(&sim, &grant("sk-ant-ort01-made-up")).await.0, 400);
        // The first access token is still valid until it expires.
        assert!(sim.handle().access_token_valid(access));

        let stats = sim.handle().oauth_stats();
        assert_eq!((stats.refreshed, stats.reused, stats.unknown), (2, 2, 1));
        assert_eq!(sim.handle().stats().by_path.get(OAUTH_TOKEN_PATH), Some(&5));
        assert!(sim.handle().requests().is_empty(), "token requests carry credentials and must not be recorded");
    }

    #[tokio::test]
    async fn concurrent_refreshes_with_one_token_succeed_once() {
        let sim = crate::spawn(SimConfig::anthropic()).await.unwrap();
        sim.handle().seed_refresh_token("rt");
        let body = grant("rt");
        let tries = (0..8).map(|_| post_token(&sim, &body));
        let statuses: Vec<u16> = futures::future::join_all(tries).await.into_iter().map(|(s, _)| s).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 7, "{statuses:?}");
        assert_eq!(sim.handle().oauth_stats().reused, 7);
    }

    #[tokio::test]
    async fn bad_requests_and_injected_failures() {
        let sim = crate::spawn(SimConfig::anthropic()).await.unwrap();
        sim.handle().seed_refresh_token("rt");
        let cases = [
            (json!({"grant_type": "refresh_token", "client_id": "c"}), "invalid_request"),
            (json!({"grant_type": "refresh_token", "refresh_token": "rt"}), "invalid_request"),
            (json!({"refresh_token": "rt", "client_id": "c"}), "invalid_request"),
            (json!({"grant_type": "authorization_code", "code": "x", "client_id": "c"}), "unsupported_grant_type"),
            (json!(["rt"]), "invalid_request"),
        ];
        for (body, want) in cases {
            let (status, v) = post_token(&sim, &body).await;
            assert_eq!((status, v["error"].as_str()), (400, Some(want)), "{body}");
        }
        assert_eq!(sim.handle().oauth_stats().invalid_requests, 5);

        sim.handle().fail_next_oauth_requests(1, 503);
        sim.handle().fail_next_oauth_requests(1, 429);
        assert_eq!(post_token(&sim, &grant("rt")).await.0, 503);
        let resp = client().post(format!("{}{OAUTH_TOKEN_PATH}", sim.url())).json(&grant("rt")).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
        // The failures spent nothing: the refresh token still works.
        assert_eq!(post_token(&sim, &grant("rt")).await.0, 200);
        assert_eq!(sim.handle().oauth_stats().injected_failures, 2);
    }

    #[tokio::test]
    async fn issued_bearer_mode_is_opt_in() {
        let sim = crate::spawn(SimConfig::anthropic()).await.unwrap();
        // Default: any bearer token is accepted.
        assert_eq!(message(&sim, "sk-ant-oat01-anything").await.0, 200);

        sim.handle().require_issued_bearer_tokens(true);
        let (status, v) = message(&sim, "sk-ant-oat01-anything").await;
        assert_eq!(status, 401);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "Invalid bearer token");
        let models = client()
            .get(format!("{}/v1/models", sim.url()))
            .bearer_auth("sk-ant-oat01-anything")
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
        assert_eq!(models.status(), 401);

        sim.handle().seed_refresh_token("rt");
        let (_, tokens) = post_token(&sim, &grant("rt")).await;
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(message(&sim, access).await.0, 200);

        // Expired tokens get Anthropic's expiry message.
        sim.handle().set_oauth_expires_in(0);
        let (_, tokens) = post_token(&sim, &grant(tokens["refresh_token"].as_str().unwrap())).await;
        assert_eq!(tokens["expires_in"], 0);
        let expired = tokens["access_token"].as_str().unwrap();
        assert!(!sim.handle().access_token_valid(expired));
        let (status, v) = message(&sim, expired).await;
        assert_eq!(status, 401);
        assert!(v["error"]["message"].as_str().unwrap().starts_with("OAuth token has expired"), "{v}");
        assert_eq!(sim.handle().oauth_stats().bearer_rejected, 3);

        // API keys are unaffected; turning the mode off restores the default.
        let resp = client()
            .post(format!("{}/v1/messages", sim.url()))
            .header("x-api-key", "sk-ant-api03-any")
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-opus-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        sim.handle().require_issued_bearer_tokens(false);
        assert_eq!(message(&sim, expired).await.0, 200);
    }

    #[tokio::test]
    async fn issued_tokens_bypass_accepted_keys_in_issued_bearer_mode() {
        let config = SimConfig { accepted_keys: vec!["sk-ant-api03-only".into()], ..SimConfig::anthropic() };
        let sim = crate::spawn(config).await.unwrap();
        sim.handle().require_issued_bearer_tokens(true);
        sim.handle().seed_access_token("sk-ant-oat01-seeded", Duration::from_secs(600));
        assert_eq!(message(&sim, "sk-ant-oat01-seeded").await.0, 200);
        assert_eq!(message(&sim, "sk-ant-api03-only").await.0, 401, "a bearer token must be an issued one");
    }

    #[tokio::test]
    async fn admin_route_configures_the_endpoint() {
        let sim = crate::spawn(SimConfig::anthropic()).await.unwrap();
        let url = format!("{}/_sim/oauth", sim.url());
        let body = json!({"seed_refresh_token": "rt", "expires_in": 2, "require_issued_bearer_tokens": true});
        let v: Value = client().post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["expires_in"], 2);
        assert_eq!(v["require_issued_bearer_tokens"], true);
        let (status, tokens) = post_token(&sim, &grant("rt")).await;
        assert_eq!((status, tokens["expires_in"].as_u64()), (200, Some(2)));
        let v: Value = client().get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["stats"]["refreshed"], 1);
        let bad = client().post(&url).json(&json!({"expire_in": 2})).send().await.unwrap();
        assert_eq!(bad.status(), 400);
    }

    #[tokio::test]
    async fn openai_simulator_has_no_token_endpoint() {
        let sim = crate::spawn(SimConfig::openai()).await.unwrap();
        let resp = client().post(format!("{}{OAUTH_TOKEN_PATH}", sim.url())).json(&grant("rt")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }
}
