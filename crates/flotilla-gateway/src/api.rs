//! The compatible endpoints: parse in the caller's format, route, answer in the caller's format.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flotilla_proto::{
    ApiError, ApiFormat, ChatRequest, ChatResponse, ErrorKind, ProtoError, StreamEvent, anthropic, openai_chat,
    openai_responses,
};
use flotilla_router::{Answered, CommittedStream, RouteError};
use flotilla_telemetry::events::RequestFinished;
use tokio::time::Instant;

use crate::GatewayState;

/// Header naming the `provider/model` that answered.
pub const MODEL_HEADER: &str = "x-flotilla-model";
/// Header counting the upstream attempts (skips included) the request took.
pub const ATTEMPTS_HEADER: &str = "x-flotilla-attempts";

pub async fn messages(State(s): State<GatewayState>, body: Bytes) -> Response {
    handle(s, ApiFormat::Anthropic, body).await
}

pub async fn chat_completions(State(s): State<GatewayState>, body: Bytes) -> Response {
    handle(s, ApiFormat::OpenAiChat, body).await
}

pub async fn responses(State(s): State<GatewayState>, body: Bytes) -> Response {
    handle(s, ApiFormat::OpenAiResponses, body).await
}

/// A compatible endpoint called without the axum router (see `serve`): the body is read by
/// axum's own `Bytes` extractor, so size limits and rejections are those of [`crate::app`].
pub async fn direct(s: GatewayState, format: ApiFormat, req: axum::extract::Request) -> Response {
    match Bytes::from_request(req, &()).await {
        Ok(body) => handle(s, format, body).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// The API format of a compatible endpoint's path (query string excluded), `None` for any
/// other path.
pub fn endpoint_format(path: &str) -> Option<ApiFormat> {
    match path {
        "/v1/messages" => Some(ApiFormat::Anthropic),
        "/v1/chat/completions" => Some(ApiFormat::OpenAiChat),
        "/v1/responses" => Some(ApiFormat::OpenAiResponses),
        _ => None,
    }
}

/// The API format of an endpoint path, for errors raised before a handler runs.
pub fn format_for_path(path: &str) -> ApiFormat {
    endpoint_format(path).unwrap_or(ApiFormat::Anthropic)
}

fn parse(format: ApiFormat, body: &[u8]) -> Result<ChatRequest, ProtoError> {
    match format {
        ApiFormat::Anthropic => anthropic::parse_request(body),
        ApiFormat::OpenAiChat => openai_chat::parse_request(body),
        ApiFormat::OpenAiResponses => openai_responses::parse_request(body),
    }
}

fn encode(format: ApiFormat, resp: &ChatResponse) -> Vec<u8> {
    match format {
        ApiFormat::Anthropic => anthropic::encode_response(resp),
        ApiFormat::OpenAiChat => openai_chat::encode_response(resp),
        ApiFormat::OpenAiResponses => openai_responses::encode_response(resp),
    }
}

/// An error body in the caller's format, with routing headers when attempts were made.
pub fn error_response(format: ApiFormat, err: &ApiError, attempts: Option<usize>) -> Response {
    let body = match format {
        ApiFormat::Anthropic => anthropic::encode_error(err),
        ApiFormat::OpenAiChat => openai_chat::encode_error(err),
        ApiFormat::OpenAiResponses => openai_responses::encode_error(err),
    };
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp =
        (status, [(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    if let Some(n) = attempts {
        resp.headers_mut().insert(ATTEMPTS_HEADER, HeaderValue::from(n));
    }
    resp
}

fn routing_headers(headers: &mut HeaderMap, answered: &Answered, attempts: usize) {
    const MODEL: HeaderName = HeaderName::from_static(MODEL_HEADER);
    const ATTEMPTS: HeaderName = HeaderName::from_static(ATTEMPTS_HEADER);
    const FEW: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    if let Some(v) = answered.model_header() {
        headers.insert(MODEL, v.clone());
    }
    let n = FEW.get(attempts).map_or_else(|| HeaderValue::from(attempts), |s| HeaderValue::from_static(s));
    headers.insert(ATTEMPTS, n);
}

pub(crate) async fn handle(s: GatewayState, format: ApiFormat, body: Bytes) -> Response {
    let received = Instant::now();
    let req = match parse(format, &body) {
        Ok(r) => r,
        Err(e) => {
            let err = ApiError::new(ErrorKind::InvalidRequest, e.to_string());
            finish(&s, format, false, "invalid_request", None, 0, received);
            return error_response(format, &err, None);
        }
    };
    let parsed_in = received.elapsed();
    if req.stream {
        // Boxed: a stream's state would otherwise make every request's future larger (the
        // server allocates one per request).
        return Box::pin(handle_stream(s, format, req, received, parsed_in)).await;
    }
    match s.router.complete(&req).await {
        Ok(result) => {
            let encode_start = Instant::now();
            let body = encode(format, &result.response);
            let mut resp = Response::new(Body::from(body));
            let headers = resp.headers_mut();
            headers.reserve(3);
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            routing_headers(headers, &result.answered, result.attempts.len());
            let who = result.answered.model_ref();
            s.metrics.observe_overhead(parsed_in + result.own_time + encode_start.elapsed());
            finish(&s, format, false, "ok", Some(who), result.attempts.len(), received);
            resp
        }
        Err(e) => route_error(&s, format, false, &e, received),
    }
}

fn route_error(s: &GatewayState, format: ApiFormat, stream: bool, e: &RouteError, received: Instant) -> Response {
    let api = e.to_api_error();
    if let RouteError::AllFailed { .. } = e {
        tracing::warn!(event = "request_failed", error = %e, "request failed on every candidate");
    }
    let outcome = kind_name(api.kind);
    finish(s, format, stream, outcome, None, e.attempts().len(), received);
    error_response(format, &api, Some(e.attempts().len()))
}

fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::Authentication => "authentication",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::NotFound => "not_found",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit",
        ErrorKind::Api => "upstream_failed",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Timeout => "timeout",
    }
}

fn finish(
    s: &GatewayState,
    format: ApiFormat,
    stream: bool,
    outcome: &'static str,
    answered_by: Option<&str>,
    attempts: usize,
    received: Instant,
) {
    RequestFinished {
        api: format.as_str(),
        stream,
        outcome,
        answered_by,
        attempts: attempts as u32,
        duration: received.elapsed(),
    }
    .emit(&s.metrics);
}

/// The stream encoder of the caller's format.
enum Encoder {
    Anthropic(anthropic::StreamEncoder),
    Chat(openai_chat::StreamEncoder),
    Responses(openai_responses::StreamEncoder),
}

impl Encoder {
    fn new(format: ApiFormat) -> Self {
        match format {
            ApiFormat::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new()),
            ApiFormat::OpenAiChat => Encoder::Chat(openai_chat::StreamEncoder::new()),
            ApiFormat::OpenAiResponses => Encoder::Responses(openai_responses::StreamEncoder::new()),
        }
    }
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match self {
            Encoder::Anthropic(e) => e.encode(ev, out),
            Encoder::Chat(e) => e.encode(ev, out),
            Encoder::Responses(e) => e.encode(ev, out),
        }
    }
    fn encode_error(&mut self, err: &ApiError, out: &mut Vec<u8>) {
        match self {
            Encoder::Anthropic(e) => e.encode_error(err, out),
            Encoder::Chat(e) => e.encode_error(err, out),
            Encoder::Responses(e) => e.encode_error(err, out),
        }
    }
}

struct StreamState {
    committed: CommittedStream,
    encoder: Encoder,
    gateway: GatewayState,
    format: ApiFormat,
    received: Instant,
    finished: bool,
}

async fn handle_stream(
    s: GatewayState,
    format: ApiFormat,
    req: ChatRequest,
    received: Instant,
    parsed_in: Duration,
) -> Response {
    let committed = match s.router.stream(&req).await {
        Ok(c) => c,
        Err(e) => return route_error(&s, format, true, &e, received),
    };
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp_headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    routing_headers(&mut resp_headers, &committed.answered, committed.attempts.len());
    s.metrics.observe_overhead(parsed_in + committed.own_time);
    let state = StreamState { committed, encoder: Encoder::new(format), gateway: s, format, received, finished: false };
    let body = futures::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        let mut out = Vec::with_capacity(256);
        // One upstream event becomes one body chunk (hyper coalesces writes that are ready
        // together); a batching step here is a possible optimisation, see BENCHMARKS.md.
        match st.committed.next().await {
            Some(Ok(ev)) => st.encoder.encode(&ev, &mut out),
            Some(Err(failure)) => {
                let err = ApiError::new(
                    ErrorKind::Api,
                    format!("upstream {} failed mid-stream: {}", st.committed.answered.model_ref(), failure.detail()),
                );
                tracing::warn!(event = "stream_failed_after_commit", model = %st.committed.answered.model_ref(), detail = %failure.detail());
                st.encoder.encode_error(&err, &mut out);
                st.finished = true;
                let who = st.committed.answered.model_ref();
                finish(
                    &st.gateway,
                    st.format,
                    true,
                    "cut_mid_stream",
                    Some(who),
                    st.committed.attempts.len(),
                    st.received,
                );
            }
            None => {
                st.finished = true;
                let who = st.committed.answered.model_ref();
                finish(&st.gateway, st.format, true, "ok", Some(who), st.committed.attempts.len(), st.received);
                return None;
            }
        }
        Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), st))
    });
    let mut resp = Response::new(Body::from_stream(body));
    *resp.headers_mut() = resp_headers;
    resp
}

/// `GET /v1/models`: agents, named chains and configured `provider/model`s, in the OpenAI list
/// shape, or Anthropic's when the caller sent `anthropic-version`.
pub async fn models(State(s): State<GatewayState>, headers: HeaderMap) -> Response {
    let config = s.router.config();
    let mut ids: Vec<String> = config.agents.iter().map(|a| a.id.clone()).collect();
    ids.extend(config.chains.keys().cloned());
    if config.default_chain.is_some() {
        ids.push("default".to_owned());
    }
    let mut refs: Vec<String> = config
        .agents
        .iter()
        .flat_map(|a| a.chain.candidates.iter())
        .chain(config.chains.values().flat_map(|c| c.candidates.iter()))
        .chain(config.default_chain.iter().flat_map(|c| c.candidates.iter()))
        .map(|c| c.to_string())
        .collect();
    refs.sort();
    refs.dedup();
    ids.extend(refs);
    let body = if headers.contains_key("anthropic-version") {
        let data: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                serde_json::json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"})
            })
            .collect();
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": ids.first(),
            "last_id": ids.last(),
        })
    } else {
        let data: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "flotilla"}))
            .collect();
        serde_json::json!({"object": "list", "data": data})
    };
    axum::Json(body).into_response()
}
