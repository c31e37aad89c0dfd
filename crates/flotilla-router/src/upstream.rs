//! Upstream HTTP clients: one pooled rustls client that speaks Anthropic Messages, OpenAI
//! Chat Completions and OpenAI Responses (JSON and SSE) to any configured provider.
//!
//! Requests go over the HTTP/1.1 connections of `pool.rs` (private), read and written by the task
//! that sends them. An attempt clones a `Uri` and a header map built when the config was loaded
//! ([`endpoint_uri`], [`static_headers`]), so nothing about the upstream is parsed or
//! formatted per request.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use flotilla_config::{Credential, CredentialKind, Provider, ProviderApi, WireApi};
use flotilla_proto::error::{DecodeError, UpstreamError};
use flotilla_proto::sse::{SseEvent, SseParser};
use flotilla_proto::{ChatRequest, ChatResponse, StreamEvent, anthropic, openai_chat, openai_responses};
use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use thiserror::Error;
use tokio::time::Instant;

use crate::classify::{FailureClass, classify_status, parse_retry_after};
use crate::pool::{self, Pools};

/// The Anthropic API version flotilla speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The `anthropic-beta` value that Anthropic requires with OAuth access tokens.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";
/// Error bodies larger than this are cut before parsing.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Larger answers are refused (a model's answer is a few hundred KiB at most).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why one attempt failed, with what the upstream said.
#[derive(Debug, Clone)]
pub enum AttemptFailure {
    /// The upstream answered with a non-2xx status.
    Http { status: u16, retry_after: Option<Duration>, error: Option<UpstreamError>, request_id: Option<String> },
    /// No usable answer: connect error, reset, timeout, cut stream.
    Transport { detail: String },
    /// No first byte (or first content) within the time-to-first-byte deadline.
    Timeout { after: Duration },
    /// The upstream sent something that is not valid for its protocol.
    Malformed { detail: String },
    /// The upstream reported an error inside a stream (e.g. Anthropic's `overloaded_error` event).
    StreamError { error: UpstreamError },
}

impl AttemptFailure {
    /// What this failure means for failover.
    pub fn class(&self) -> FailureClass {
        match self {
            AttemptFailure::Http { status, retry_after, error, .. } => {
                classify_status(*status, *retry_after, error.as_ref())
            }
            AttemptFailure::Transport { .. } | AttemptFailure::Timeout { .. } | AttemptFailure::Malformed { .. } => {
                FailureClass::Transient
            }
            AttemptFailure::StreamError { error } => match classify_status(500, None, Some(error)) {
                // An error event inside a stream is never the caller's fault by status alone.
                FailureClass::InvalidRequest => FailureClass::Transient,
                c => c,
            },
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptFailure::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A one-line description, without secrets (upstream messages never echo keys).
    pub fn detail(&self) -> String {
        match self {
            AttemptFailure::Http { status, error: Some(e), .. } => format!("{status} {}: {}", e.error_type, e.message),
            AttemptFailure::Http { status, error: None, .. } => format!("{status}"),
            AttemptFailure::Transport { detail } => detail.clone(),
            AttemptFailure::Timeout { after } => format!("no first byte within {} ms", after.as_millis()),
            AttemptFailure::Malformed { detail } => format!("malformed answer: {detail}"),
            AttemptFailure::StreamError { error } => format!("stream error {}: {}", error.error_type, error.message),
        }
    }
}

impl From<DecodeError> for AttemptFailure {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Upstream(error) => AttemptFailure::StreamError { error },
            DecodeError::Proto(p) => AttemptFailure::Malformed { detail: p.to_string() },
        }
    }
}

fn transport(detail: impl std::fmt::Display) -> AttemptFailure {
    AttemptFailure::Transport { detail: detail.to_string() }
}

/// When the request left and how long parsing the answer took (router's own time).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub sent_at: Instant,
    pub post: Duration,
}

/// Where one attempt goes: everything per provider and credential was built when the config
/// was loaded ([`endpoint_uri`], [`static_headers`]), so an attempt only clones it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub model: &'a str,
    pub wire: WireApi,
    pub uri: &'a Uri,
    /// Content type, user agent, API version, auth and the provider's own headers.
    pub headers: &'a HeaderMap,
}

/// The URI of `wire`'s endpoint on a provider whose base URL is `base_url` (with or without a
/// trailing `/v1`).
pub fn endpoint_uri(base_url: &str, wire: WireApi) -> Result<Uri, EndpointError> {
    let path = match wire {
        WireApi::Messages => "/v1/messages",
        WireApi::ChatCompletions => "/v1/chat/completions",
        WireApi::Responses => "/v1/responses",
    };
    let base = base_url.trim_end_matches('/');
    let url = match base.strip_suffix("/v1") {
        Some(stripped) => format!("{stripped}{path}"),
        None => format!("{base}{path}"),
    };
    let bad = |reason: &str| EndpointError::Url { url: without_userinfo(&url), reason: reason.to_owned() };
    let uri = Uri::try_from(url.as_str()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http or https"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    // Credentials in the URL would end up in the Host header; keys belong in `auth`.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("credentials in the url are not supported; use auth"));
    }
    Ok(uri)
}

/// `url` with any `user:password@` replaced by `…@`, for error messages and logs.
fn without_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}…{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// Why the upstream client could not be built.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot set up TLS for upstream connections: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a provider's endpoint or headers could not be built from its config.
#[derive(Debug, Clone, Error)]
pub enum EndpointError {
    #[error("invalid upstream url \"{url}\": {reason}")]
    Url { url: String, reason: String },
    #[error("invalid value for upstream header {name}")]
    Header { name: String },
}

/// The shared upstream client (keep-alive connection pools per tokio runtime, scheme and authority).
#[derive(Clone)]
pub struct UpstreamClient {
    pools: Arc<Pools>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

/// The headers every request to `provider` with `credential` carries. The auth header is
/// marked sensitive (never printed by `Debug`, never indexed by HPACK).
pub fn static_headers(provider: &Provider, credential: Option<&Credential>) -> Result<HeaderMap, EndpointError> {
    let mut h = HeaderMap::with_capacity(8);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::USER_AGENT, HeaderValue::from_static(concat!("flotilla/", env!("CARGO_PKG_VERSION"))));
    if provider.api == ProviderApi::Anthropic {
        h.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(ANTHROPIC_VERSION));
    }
    if let Some(c) = credential {
        let secret = c.secret.expose_secret();
        let sensitive = |v: String, name: &str| {
            let mut v = HeaderValue::try_from(v).map_err(|_| EndpointError::Header { name: name.to_owned() })?;
            v.set_sensitive(true);
            Ok::<_, EndpointError>(v)
        };
        match (&c.kind, provider.api) {
            (CredentialKind::ApiKey, ProviderApi::Anthropic) => {
                h.insert(HeaderName::from_static("x-api-key"), sensitive(secret.to_owned(), "x-api-key")?);
            }
            (CredentialKind::OAuth { .. }, ProviderApi::Anthropic) => {
                h.insert(header::AUTHORIZATION, sensitive(format!("Bearer {secret}"), "authorization")?);
                h.insert(HeaderName::from_static("anthropic-beta"), HeaderValue::from_static(OAUTH_BETA));
            }
            _ => {
                h.insert(header::AUTHORIZATION, sensitive(format!("Bearer {secret}"), "authorization")?);
            }
        }
    }
    // The provider's own headers override the defaults above (e.g. another `anthropic-version`).
    for (k, v) in &provider.headers {
        let bad = || EndpointError::Header { name: k.clone() };
        let name = HeaderName::try_from(k.as_str()).map_err(|_| bad())?;
        let value = HeaderValue::try_from(v.as_str()).map_err(|_| bad())?;
        h.insert(name, value);
    }
    Ok(h)
}

impl UpstreamClient {
    pub fn new() -> Result<Self, ClientError> {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamClient { pools: Arc::new(Pools::new(Arc::new(tls))) })
    }

    /// Sends the request and waits for the response head, within `ttfb`.
    async fn send(
        &self,
        t: Target<'_>,
        req: &ChatRequest,
        stream: bool,
        ttfb: Duration,
    ) -> Result<(pool::Response, Instant), AttemptFailure> {
        let body = match t.wire {
            WireApi::Messages => anthropic::encode_request(req, t.model, stream),
            WireApi::ChatCompletions => openai_chat::encode_request(req, t.model, stream),
            WireApi::Responses => openai_responses::encode_request(req, t.model, stream),
        };
        let accept = if stream { "text/event-stream" } else { "application/json" };
        let path = t.uri.path_and_query().map_or("/", |p| p.as_str());
        let pool = self.pools.pool(t.uri).map_err(transport)?;
        let sent_at = Instant::now();
        let resp = match tokio::time::timeout(ttfb, pool.post(path, t.headers, accept, &body)).await {
            Err(_) => return Err(AttemptFailure::Timeout { after: ttfb }),
            Ok(Err(e)) => return Err(transport(e)),
            Ok(Ok(r)) => r,
        };
        if resp.status.is_success() {
            return Ok((resp, sent_at));
        }
        // Boxed for the same reason as a new connection: only failures need its state.
        Err(Box::pin(error_from_response(resp, t.wire, ttfb)).await)
    }

    /// One non-streaming attempt: the whole answer, parsed. `deadline` bounds the body read.
    pub async fn complete(
        &self,
        t: Target<'_>,
        req: &ChatRequest,
        ttfb: Duration,
        deadline: Duration,
    ) -> Result<(ChatResponse, Timings), AttemptFailure> {
        let (mut resp, sent_at) = self.send(t, req, false, ttfb).await?;
        let collected = {
            let mut read = pin!(resp.body.read_all(MAX_BODY));
            // A small answer usually arrived with its head: take it without arming a timer (each
            // timer is a lock and a wheel insert and removal); the deadline is only needed to wait.
            match poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
                Poll::Ready(r) => r,
                Poll::Pending => match tokio::time::timeout(deadline, read).await {
                    Err(_) => return Err(AttemptFailure::Timeout { after: deadline }),
                    Ok(r) => r,
                },
            }
        };
        let body = collected.map_err(transport)?;
        let received_at = Instant::now();
        let parsed = match t.wire {
            WireApi::Messages => anthropic::parse_response(&body),
            WireApi::ChatCompletions => openai_chat::parse_response(&body),
            WireApi::Responses => openai_responses::parse_response(&body),
        };
        let resp = parsed.map_err(|e| AttemptFailure::Malformed { detail: e.to_string() })?;
        Ok((resp, Timings { sent_at, post: received_at.elapsed() }))
    }

    /// One streaming attempt: the response head arrived with a 2xx status.
    pub async fn open_stream(
        &self,
        t: Target<'_>,
        req: &ChatRequest,
        ttfb: Duration,
    ) -> Result<UpstreamStream, AttemptFailure> {
        let (resp, sent_at) = self.send(t, req, true, ttfb).await?;
        let decoder = match t.wire {
            WireApi::Messages => Decoder::Anthropic(anthropic::StreamDecoder::new()),
            WireApi::ChatCompletions => Decoder::Chat(openai_chat::StreamDecoder::new()),
            WireApi::Responses => Decoder::Responses(openai_responses::StreamDecoder::new()),
        };
        Ok(UpstreamStream {
            body: resp.body,
            parser: SseParser::new(),
            decoder,
            sse: Vec::new(),
            ready: std::collections::VecDeque::new(),
            finished: false,
            failed: None,
            sent_at,
        })
    }
}

async fn error_from_response(mut resp: pool::Response, wire: WireApi, wait: Duration) -> AttemptFailure {
    let status = resp.status.as_u16();
    let headers = &resp.headers;
    let retry_after = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| {
            headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        });
    let request_id = ["request-id", "x-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::to_owned));
    let mut body = Vec::new();
    let incoming = &mut resp.body;
    let read = async {
        while let Ok(Some(chunk)) = incoming.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    // A slow error body must not hold up failover; what arrived in time is enough. (The
    // connection goes back to the pool only if the whole body was read.)
    let _ = tokio::time::timeout(wait.min(Duration::from_secs(5)), read).await;
    let error = match wire {
        WireApi::Messages => anthropic::parse_error(&body),
        WireApi::ChatCompletions => openai_chat::parse_error(&body),
        WireApi::Responses => openai_responses::parse_error(&body),
    }
    .or_else(|| {
        // Some proxies answer in the other vendor's shape; try both before giving up.
        anthropic::parse_error(&body).or_else(|| openai_chat::parse_error(&body))
    });
    AttemptFailure::Http { status, retry_after, error, request_id }
}

#[derive(Debug)]
enum Decoder {
    Anthropic(anthropic::StreamDecoder),
    Chat(openai_chat::StreamDecoder),
    Responses(openai_responses::StreamDecoder),
}

impl Decoder {
    fn feed(&mut self, ev: &SseEvent) -> Result<Vec<StreamEvent>, DecodeError> {
        match self {
            Decoder::Anthropic(d) => d.feed(ev),
            Decoder::Chat(d) => d.feed(ev),
            Decoder::Responses(d) => d.feed(ev),
        }
    }
    fn is_done(&self) -> bool {
        match self {
            Decoder::Anthropic(d) => d.is_done(),
            Decoder::Chat(d) => d.is_done(),
            Decoder::Responses(d) => d.is_done(),
        }
    }
}

/// An upstream SSE stream decoded into canonical events.
pub struct UpstreamStream {
    body: pool::Body,
    parser: SseParser,
    decoder: Decoder,
    sse: Vec<SseEvent>,
    ready: std::collections::VecDeque<StreamEvent>,
    finished: bool,
    /// A failure seen after events that are still to be delivered.
    failed: Option<AttemptFailure>,
    /// When the request left (for the router's own-time measurement).
    pub sent_at: Instant,
}

impl std::fmt::Debug for UpstreamStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamStream").field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl UpstreamStream {
    /// The next canonical event; `Ok(None)` after the upstream's terminal event. A stream that
    /// ends without its terminal event is a transport failure (a cut), never a silent end.
    pub async fn next_event(&mut self) -> Result<Option<StreamEvent>, AttemptFailure> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            if let Some(e) = self.failed.take() {
                self.finished = true;
                return Err(e);
            }
            if self.finished || self.decoder.is_done() {
                self.finished = true;
                // Back to the pool if the body's end came with the final event.
                self.body.settle();
                return Ok(None);
            }
            match self.body.chunk().await {
                Ok(Some(chunk)) => {
                    // Events decoded before a bad or error event in the same chunk are still
                    // delivered first; the failure follows them.
                    let pushed = self.parser.push(&chunk, &mut self.sse);
                    for ev in self.sse.drain(..) {
                        match self.decoder.feed(&ev) {
                            Ok(evs) => self.ready.extend(evs),
                            Err(e) => {
                                self.failed = Some(e.into());
                                break;
                            }
                        }
                    }
                    if let (Err(e), None) = (pushed, &self.failed) {
                        self.failed = Some(AttemptFailure::Malformed { detail: e.to_string() });
                    }
                }
                Err(e) => return Err(transport(e)),
                Ok(None) => {
                    if self.decoder.is_done() {
                        self.finished = true;
                        continue;
                    }
                    return Err(AttemptFailure::Transport {
                        detail: "upstream stream ended before its final event".to_owned(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::SecretString;

    use super::*;

    fn provider(api: ProviderApi, headers: &[(&str, &str)]) -> Provider {
        Provider {
            name: "p".into(),
            api,
            base_url: "http://127.0.0.1:9".into(),
            credentials: Vec::new(),
            models: BTreeMap::new(),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn credential(kind: CredentialKind, secret: &str) -> Credential {
        Credential { name: "c".into(), kind, secret: SecretString::from(secret.to_owned()) }
    }

    #[test]
    fn endpoint_uri_appends_the_wire_path_once() {
        let uri = |base, wire| endpoint_uri(base, wire).map(|u| u.to_string());
        assert_eq!(
            uri("http://127.0.0.1:4000", WireApi::Messages).ok().as_deref(),
            Some("http://127.0.0.1:4000/v1/messages")
        );
        assert_eq!(
            uri("https://api.openai.com/v1/", WireApi::ChatCompletions).ok().as_deref(),
            Some("https://api.openai.com/v1/chat/completions")
        );
        assert_eq!(uri("https://h/proxy/v1", WireApi::Responses).ok().as_deref(), Some("https://h/proxy/v1/responses"));
        assert!(matches!(endpoint_uri("ftp://h", WireApi::Messages), Err(EndpointError::Url { .. })));
        assert!(matches!(endpoint_uri("not a url", WireApi::Messages), Err(EndpointError::Url { .. })));
        let err = endpoint_uri("http://user:s3cret@h", WireApi::Messages).expect_err("userinfo");
        assert_eq!(
            err.to_string(),
            "invalid upstream url \"http://…@h/v1/messages\": credentials in the url are not supported; use auth"
        );
        let err = endpoint_uri("http://user:s3 cret@h", WireApi::Messages).expect_err("unparsable");
        assert!(!err.to_string().contains("s3"), "{err}");
    }

    #[tokio::test]
    async fn https_goes_through_tls_and_plain_http_through_the_pool() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server that answers in plain HTTP whatever it is sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let body = r#"{"error":{"type":"overloaded_error","message":"busy"}}"#;
                        let head = format!("HTTP/1.1 529 Overloaded\r\ncontent-length: {}\r\n\r\n", body.len());
                        if s.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let client = UpstreamClient::new().expect("client");
        let headers = static_headers(&provider(ProviderApi::Anthropic, &[]), None).expect("headers");
        let req = ChatRequest { model: "m".into(), max_tokens: Some(10), ..Default::default() };
        let ttfb = Duration::from_secs(5);
        let plain = endpoint_uri(&format!("http://127.0.0.1:{port}"), WireApi::Messages).expect("uri");
        let t = Target { model: "m", wire: WireApi::Messages, uri: &plain, headers: &headers };
        match client.complete(t, &req, ttfb, ttfb).await {
            Err(AttemptFailure::Http { status: 529, error: Some(e), .. }) => {
                assert_eq!(e.error_type, "overloaded_error")
            }
            other => panic!("{other:?}"),
        }
        // The same server spoken to over https: the TLS handshake fails, as a transport error.
        let tls = endpoint_uri(&format!("https://127.0.0.1:{port}"), WireApi::Messages).expect("uri");
        let t = Target { model: "m", wire: WireApi::Messages, uri: &tls, headers: &headers };
        match client.complete(t, &req, ttfb, ttfb).await {
            Err(f @ AttemptFailure::Transport { .. }) => assert_eq!(f.class(), FailureClass::Transient),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anthropic_api_key_goes_in_a_sensitive_x_api_key() {
        let c = credential(CredentialKind::ApiKey, "sk-ant-secret");
        let h = static_headers(&provider(ProviderApi::Anthropic, &[]), Some(&c)).expect("headers");
        let key = h.get("x-api-key").expect("x-api-key");
        assert_eq!(key, "sk-ant-secret");
        assert!(key.is_sensitive());
        assert_eq!(h.get("anthropic-version").map(|v| v.as_bytes()), Some(ANTHROPIC_VERSION.as_bytes()));
        assert_eq!(h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert!(!format!("{h:?}").contains("sk-ant-secret"), "Debug must not show the key");
    }

    #[test]
    fn oauth_and_openai_keys_go_as_bearer() {
        let oauth = credential(CredentialKind::OAuth { expires_at: None }, "sk-ant-oat");
        let h = static_headers(&provider(ProviderApi::Anthropic, &[]), Some(&oauth)).expect("headers");
        assert_eq!(h.get(header::AUTHORIZATION).expect("authorization"), "Bearer sk-ant-oat");
        assert_eq!(h.get("anthropic-beta").expect("beta"), OAUTH_BETA);
        assert!(h.get("x-api-key").is_none());
        let key = credential(CredentialKind::ApiKey, "sk-oai");
        let h = static_headers(&provider(ProviderApi::OpenAi, &[]), Some(&key)).expect("headers");
        let auth = h.get(header::AUTHORIZATION).expect("authorization");
        assert_eq!(auth, "Bearer sk-oai");
        assert!(auth.is_sensitive());
        assert!(h.get("anthropic-version").is_none() && h.get("anthropic-beta").is_none());
        let h = static_headers(&provider(ProviderApi::OpenAiCompatible, &[]), None).expect("headers");
        assert!(h.get(header::AUTHORIZATION).is_none(), "no credential, no auth header");
    }

    #[test]
    fn provider_headers_override_defaults_and_bad_values_are_errors() {
        let p = provider(ProviderApi::Anthropic, &[("anthropic-version", "2099-01-01"), ("x-extra", "1")]);
        let h = static_headers(&p, None).expect("headers");
        let versions: Vec<_> = h.get_all("anthropic-version").iter().collect();
        assert_eq!(versions, ["2099-01-01"]);
        assert_eq!(h.get("x-extra").expect("extra"), "1");
        let bad = credential(CredentialKind::ApiKey, "line\nbreak");
        let err = static_headers(&provider(ProviderApi::Anthropic, &[]), Some(&bad)).expect_err("newline in key");
        assert!(!err.to_string().contains("line"), "the error names the header, not the value: {err}");
        let p = provider(ProviderApi::OpenAi, &[("bad header", "x")]);
        assert!(matches!(static_headers(&p, None), Err(EndpointError::Header { .. })));
    }
}
