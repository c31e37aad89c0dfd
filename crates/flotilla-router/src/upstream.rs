//! Upstream HTTP clients: one pooled rustls client that speaks Anthropic Messages, OpenAI
//! Chat Completions and OpenAI Responses (JSON and SSE) to any configured provider.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flotilla_config::{Credential, CredentialKind, Provider, ProviderApi, WireApi};
use flotilla_proto::error::{DecodeError, UpstreamError};
use flotilla_proto::sse::{SseEvent, SseParser};
use flotilla_proto::{ChatRequest, ChatResponse, StreamEvent, anthropic, openai_chat, openai_responses};
use futures::StreamExt;
use secrecy::ExposeSecret;
use tokio::time::Instant;

use crate::classify::{FailureClass, classify_status, parse_retry_after};

/// The Anthropic API version flotilla speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Error bodies larger than this are cut before parsing.
const MAX_ERROR_BODY: usize = 64 * 1024;

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

fn transport(e: &reqwest::Error) -> AttemptFailure {
    // reqwest's Display omits the cause chain; walk it for "connection reset" and friends.
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    AttemptFailure::Transport { detail }
}

/// When the request left and how long parsing the answer took (router's own time).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub sent_at: Instant,
    pub post: Duration,
}

/// Where one attempt goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub provider: &'a Provider,
    pub model: &'a str,
    pub credential: Option<&'a Credential>,
}

impl Target<'_> {
    pub fn wire(&self) -> WireApi {
        self.provider.wire_api(self.model)
    }
}

/// The shared upstream client (connection pools per host).
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
}

impl UpstreamClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(UpstreamClient { http })
    }

    /// Sends the request and waits for the response head, within `ttfb`.
    async fn send(
        &self,
        t: Target<'_>,
        req: &ChatRequest,
        stream: bool,
        ttfb: Duration,
    ) -> Result<(reqwest::Response, Instant), AttemptFailure> {
        let wire = t.wire();
        let (path, body) = match wire {
            WireApi::Messages => ("/v1/messages", anthropic::encode_request(req, t.model, stream)),
            WireApi::ChatCompletions => ("/v1/chat/completions", openai_chat::encode_request(req, t.model, stream)),
            WireApi::Responses => ("/v1/responses", openai_responses::encode_request(req, t.model, stream)),
        };
        let base = t.provider.base_url.trim_end_matches('/');
        let url = match base.strip_suffix("/v1") {
            Some(stripped) => format!("{stripped}{path}"),
            None => format!("{base}{path}"),
        };
        let mut rb = self.http.post(url).header(http::header::CONTENT_TYPE, "application/json");
        if stream {
            rb = rb.header(http::header::ACCEPT, "text/event-stream");
        }
        if t.provider.api == ProviderApi::Anthropic {
            rb = rb.header("anthropic-version", ANTHROPIC_VERSION);
        }
        if let Some(c) = t.credential {
            let secret = c.secret.expose_secret();
            rb = match (&c.kind, t.provider.api) {
                (CredentialKind::ApiKey, ProviderApi::Anthropic) => rb.header("x-api-key", secret),
                (CredentialKind::OAuth { .. }, ProviderApi::Anthropic) => {
                    rb.bearer_auth(secret).header("anthropic-beta", "oauth-2025-04-20")
                }
                _ => rb.bearer_auth(secret),
            };
        }
        for (k, v) in &t.provider.headers {
            rb = rb.header(k, v);
        }
        let sent_at = Instant::now();
        let resp = match tokio::time::timeout(ttfb, rb.body(body).send()).await {
            Err(_) => return Err(AttemptFailure::Timeout { after: ttfb }),
            Ok(Err(e)) => return Err(transport(&e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok((resp, sent_at));
        }
        Err(error_from_response(resp, wire, ttfb).await)
    }

    /// One non-streaming attempt: the whole answer, parsed. `deadline` bounds the body read.
    pub async fn complete(
        &self,
        t: Target<'_>,
        req: &ChatRequest,
        ttfb: Duration,
        deadline: Duration,
    ) -> Result<(ChatResponse, Timings), AttemptFailure> {
        let (resp, sent_at) = self.send(t, req, false, ttfb).await?;
        let body = match tokio::time::timeout(deadline, resp.bytes()).await {
            Err(_) => return Err(AttemptFailure::Timeout { after: deadline }),
            Ok(Err(e)) => return Err(transport(&e)),
            Ok(Ok(b)) => b,
        };
        let received_at = Instant::now();
        let parsed = match t.wire() {
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
        let decoder = match t.wire() {
            WireApi::Messages => Decoder::Anthropic(anthropic::StreamDecoder::new()),
            WireApi::ChatCompletions => Decoder::Chat(openai_chat::StreamDecoder::new()),
            WireApi::Responses => Decoder::Responses(openai_responses::StreamDecoder::new()),
        };
        Ok(UpstreamStream {
            body: Box::pin(resp.bytes_stream()),
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

async fn error_from_response(resp: reqwest::Response, wire: WireApi, wait: Duration) -> AttemptFailure {
    let status = resp.status().as_u16();
    let headers = resp.headers();
    let retry_after = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| {
            headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        });
    let request_id = ["request-id", "x-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::to_owned));
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    let read = async {
        while let Some(Ok(c)) = chunks.next().await {
            body.extend_from_slice(&c);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    // A slow error body must not hold up failover; what arrived in time is enough.
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

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// An upstream SSE stream decoded into canonical events.
pub struct UpstreamStream {
    body: ByteStream,
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
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
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
                Some(Err(e)) => return Err(transport(&e)),
                None => {
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
