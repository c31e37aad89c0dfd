//! The request pipeline shared by the three APIs: credentials, faults, validation, the
//! generated answer, latency, counters and recording. The per-API modules only parse and
//! render.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::fault::{Fault, Probe};
use crate::handle::{Outcome, RecordedRequest};
use crate::model::{self, Prompt, Reply};
use crate::server::{App, ConnCtl};
use crate::sse::{self, Timing};
use crate::util::key_fingerprint;
use crate::{anthropic, openai};

/// The endpoints that generate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Messages,
    CountTokens,
    Chat,
    Responses,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Messages => "/v1/messages",
            Api::CountTokens => "/v1/messages/count_tokens",
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
        }
    }

    fn is_anthropic(self) -> bool {
        matches!(self, Api::Messages | Api::CountTokens)
    }
}

/// A credential found in the request headers.
pub(crate) struct Credential {
    pub key: String,
    /// The header that carried it (recorded instead of the key).
    pub header: &'static str,
    /// Sent as `Authorization: Bearer` (Anthropic: an OAuth token).
    pub bearer: bool,
}

/// Everything that can go wrong, independent of how each API spells it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ErrorKind {
    MissingKey,
    InvalidKey {
        bearer: bool,
        masked: String,
    },
    /// The [`Fault::Unauthorized`] fault: the key is accepted but "expired".
    Unauthorized {
        bearer: bool,
        masked: String,
    },
    Forbidden,
    Overloaded,
    Unavailable,
    RateLimited {
        retry_after_secs: u64,
    },
    PaymentRequired,
    BillingError,
    Internal,
    BadGateway,
    GatewayTimeout,
    /// The [`Fault::InvalidRequest`] fault.
    InvalidRequestFault,
    ContextTooLong {
        tokens: u64,
        window: u64,
    },
    /// Anthropic: no `anthropic-version` header.
    MissingVersion,
    BadJson,
    BodyTooLarge,
    /// A validation failure: message, parameter path, error code.
    Invalid {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    ModelNotFound(String),
    RouteNotFound {
        method: String,
        path: String,
    },
}

impl ErrorKind {
    pub fn invalid(message: impl Into<String>) -> Self {
        ErrorKind::Invalid { message: message.into(), param: None, code: None }
    }

    pub fn invalid_param(message: impl Into<String>, param: impl Into<String>, code: Option<&'static str>) -> Self {
        ErrorKind::Invalid { message: message.into(), param: Some(param.into()), code }
    }
}

/// An error as an API renders it.
pub(crate) struct ErrorReply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: HeaderMap,
}

impl ErrorReply {
    pub fn json(status: StatusCode, body: &Value) -> Self {
        ErrorReply {
            status,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
            headers: HeaderMap::new(),
        }
    }

    pub fn text(status: StatusCode, content_type: &'static str, body: &'static str) -> Self {
        ErrorReply { status, content_type, body: Bytes::from_static(body.as_bytes()), headers: HeaderMap::new() }
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.insert(name, v);
        }
        self
    }
}

/// Facts about the request that error messages and headers quote.
pub(crate) struct ReqCtx<'a> {
    pub api: Api,
    pub model: Option<&'a str>,
    pub request_id: &'a str,
}

/// What the pipeline decided to answer.
enum Answer {
    Error(ErrorKind),
    Reset,
    Reply(Box<(Prompt, Reply)>),
    Count(u64),
}

/// Handles one generation request end to end.
pub(crate) async fn generate(
    app: Arc<App>,
    api: Api,
    ctl: Option<ConnCtl>,
    headers: HeaderMap,
    body: Result<Bytes, ()>,
) -> Response {
    let started = Instant::now();
    let cfg = &app.cfg;
    let request_id = if api.is_anthropic() { anthropic::request_id() } else { openai::request_id() };
    let too_large = body.is_err();
    let value: Option<Value> = body.ok().and_then(|b| serde_json::from_slice(&b).ok());
    let model: Option<String> = value.as_ref().and_then(|v| v.get("model")).and_then(Value::as_str).map(str::to_owned);
    let stream = value.as_ref().and_then(|v| v.get("stream")).and_then(Value::as_bool).unwrap_or(false)
        && api != Api::CountTokens;
    let cred = if api.is_anthropic() { anthropic::credential(&headers) } else { openai::credential(&headers) };

    let mut fault: Option<(u64, Fault)> = None;
    let mut extra_delay = Duration::ZERO;
    let answer = 'answer: {
        let Some(cred) = &cred else {
            break 'answer Answer::Error(ErrorKind::MissingKey);
        };
        // Opt-in: bearer tokens must come from the OAuth token endpoint (then they skip `accepted_keys`).
        let oauth = if api.is_anthropic() { crate::oauth::bearer_verdict(&app.handle, cred) } else { None };
        if let Some(Err(e)) = oauth {
            break 'answer Answer::Error(e);
        }
        if oauth.is_none() && !cfg.accepted_keys.is_empty() && !cfg.accepted_keys.contains(&cred.key) {
            break 'answer Answer::Error(ErrorKind::InvalidKey {
                bearer: cred.bearer,
                masked: crate::util::mask_key(&cred.key),
            });
        }
        if api.is_anthropic() && !headers.contains_key("anthropic-version") {
            break 'answer Answer::Error(ErrorKind::MissingVersion);
        }
        if too_large {
            break 'answer Answer::Error(ErrorKind::BodyTooLarge);
        }
        let Some(value) = &value else {
            break 'answer Answer::Error(ErrorKind::BadJson);
        };
        if api != Api::CountTokens {
            fault = app.handle.pick_fault(&Probe {
                path: api.path(),
                model: model.as_deref(),
                key: Some(&cred.key),
                stream,
            });
        }
        if let Some((_, f)) = &fault {
            match f {
                Fault::StallBeforeFirstByte { ms } => extra_delay = Duration::from_millis(*ms),
                Fault::ConnectionReset => break 'answer Answer::Reset,
                Fault::ContextTooLong => {
                    let tokens = tokens_guess(value).max(u64::from(cfg.context_window) + 1);
                    break 'answer Answer::Error(ErrorKind::ContextTooLong {
                        tokens,
                        window: u64::from(cfg.context_window),
                    });
                }
                f if f.is_stream_only() => {}
                f => break 'answer Answer::Error(fault_error(f, cred)),
            }
        }
        let parsed = match api {
            Api::Messages => anthropic::parse(value, true),
            Api::CountTokens => anthropic::parse(value, false),
            Api::Chat => openai::chat::parse(value),
            Api::Responses => openai::responses::parse(value),
        };
        let prompt = match parsed {
            Ok(p) => p,
            Err(e) => break 'answer Answer::Error(e),
        };
        if !cfg.models.is_empty() && !cfg.models.contains(&prompt.model) {
            break 'answer Answer::Error(ErrorKind::ModelNotFound(prompt.model));
        }
        let tokens = prompt.input_tokens();
        if api == Api::CountTokens {
            break 'answer Answer::Count(tokens);
        }
        if tokens > u64::from(cfg.context_window) {
            break 'answer Answer::Error(ErrorKind::ContextTooLong { tokens, window: u64::from(cfg.context_window) });
        }
        let reply = model::plan(&prompt, cfg.reply_tokens);
        Answer::Reply(Box::new((prompt, reply)))
    };

    let delay = cfg.latency + extra_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let ctx = ReqCtx { api, model: model.as_deref(), request_id: &request_id };
    let fault_tag = fault.as_ref().map(|(id, f)| (*id, f.name()));
    let mut tokens = (0, 0);
    let mut stream_started = false;
    let mut response = match answer {
        Answer::Error(kind) => error_response(&ctx, &kind),
        Answer::Count(n) => json_response(&serde_json::json!({ "input_tokens": n })),
        Answer::Reset => {
            app.handle.record(&Outcome {
                path: api.path(),
                model: model.as_deref(),
                status: 0,
                fault: fault_tag,
                input_tokens: 0,
                output_tokens: 0,
                stream_started: false,
                reset: true,
            });
            record_request(&app, api, &headers, cred.as_ref(), model, stream, value, 0, fault.as_ref());
            return reset(ctl).await;
        }
        Answer::Reply(pr) => {
            let (prompt, reply) = *pr;
            tokens = (reply.input_tokens, reply.output_tokens);
            let req = value.as_ref().unwrap_or(&Value::Null);
            if prompt.stream {
                stream_started = true;
                let stream_fault = fault.as_ref().map(|(_, f)| f).filter(|f| f.is_stream_only());
                stream_response(&app, api, req, &prompt, &reply, stream_fault, ctl)
            } else {
                let v = match api {
                    Api::Messages | Api::CountTokens => anthropic::message_json(&prompt, &reply),
                    Api::Chat => openai::chat::completion_json(&prompt, &reply),
                    Api::Responses => openai::responses::response_json(req, &prompt, &reply),
                };
                json_response(&v)
            }
        }
    };
    let success = response.status().is_success();
    if api.is_anthropic() {
        anthropic::decorate(response.headers_mut(), &request_id, success);
    } else {
        openai::decorate(response.headers_mut(), &request_id, success, started.elapsed());
    }
    let status = response.status().as_u16();
    app.handle.record(&Outcome {
        path: api.path(),
        model: model.as_deref(),
        status,
        fault: fault_tag,
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        stream_started,
        reset: false,
    });
    record_request(&app, api, &headers, cred.as_ref(), model, stream, value, status, fault.as_ref());
    response
}

/// `GET /v1/models`: the pre-built list, behind the same credential checks.
pub(crate) fn models(app: &App, headers: &HeaderMap) -> Response {
    let anthropic = app.cfg.kind == crate::SimKind::Anthropic;
    let (api, request_id, cred) = if anthropic {
        (Api::Messages, anthropic::request_id(), anthropic::credential(headers))
    } else {
        (Api::Chat, openai::request_id(), openai::credential(headers))
    };
    let ctx = ReqCtx { api, model: None, request_id: &request_id };
    let oauth = cred.as_ref().filter(|_| anthropic).and_then(|c| crate::oauth::bearer_verdict(&app.handle, c));
    let error = match &cred {
        None => Some(ErrorKind::MissingKey),
        Some(_) if matches!(oauth, Some(Err(_))) => oauth.and_then(Result::err),
        Some(c) if oauth.is_none() && !app.cfg.accepted_keys.is_empty() && !app.cfg.accepted_keys.contains(&c.key) => {
            Some(ErrorKind::InvalidKey { bearer: c.bearer, masked: crate::util::mask_key(&c.key) })
        }
        Some(_) if anthropic && !headers.contains_key("anthropic-version") => Some(ErrorKind::MissingVersion),
        Some(_) => None,
    };
    let mut response = match &error {
        Some(kind) => error_response(&ctx, kind),
        None => {
            let mut r = Response::new(Body::from(app.models_body.clone()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    };
    let success = error.is_none();
    if anthropic {
        anthropic::decorate(response.headers_mut(), &request_id, success);
    } else {
        openai::decorate(response.headers_mut(), &request_id, success, Duration::ZERO);
    }
    app.handle.record(&Outcome::plain("/v1/models", response.status().as_u16()));
    response
}

/// The error for an unknown route, in the API's own shape.
pub(crate) fn route_not_found(app: &App, method: &str, path: &str) -> Response {
    let anthropic = app.cfg.kind == crate::SimKind::Anthropic;
    let request_id = if anthropic { anthropic::request_id() } else { openai::request_id() };
    let ctx = ReqCtx { api: if anthropic { Api::Messages } else { Api::Chat }, model: None, request_id: &request_id };
    error_response(&ctx, &ErrorKind::RouteNotFound { method: method.to_owned(), path: path.to_owned() })
}

fn error_response(ctx: &ReqCtx<'_>, kind: &ErrorKind) -> Response {
    let e = if ctx.api.is_anthropic() { anthropic::error(ctx, kind) } else { openai::error(ctx, kind) };
    let mut r = Response::new(Body::from(e.body));
    *r.status_mut() = e.status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(e.content_type));
    h.extend(e.headers);
    r
}

fn json_response(v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn stream_response(
    app: &App,
    api: Api,
    req: &Value,
    prompt: &Prompt,
    reply: &Reply,
    fault: Option<&Fault>,
    ctl: Option<ConnCtl>,
) -> Response {
    let (events, mid_error) = match api {
        Api::Messages | Api::CountTokens => {
            (anthropic::stream_events(prompt, reply), Bytes::from_static(anthropic::MID_STREAM_ERROR))
        }
        Api::Chat => {
            (openai::chat::stream_events(req, prompt, reply), Bytes::from_static(openai::chat::MID_STREAM_ERROR))
        }
        Api::Responses => {
            let error_after = match fault {
                Some(Fault::ErrorMidStream { after_events }) => Some(*after_events),
                _ => None,
            };
            openai::responses::stream_events(req, prompt, reply, error_after)
        }
    };
    let timing = Timing::new(app.cfg.ttft, app.cfg.tokens_per_sec);
    let body = sse::body(events, timing, fault, Some(mid_error), app.handle.clone(), ctl);
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

/// The fault's error, for the faults that answer with an error response.
fn fault_error(f: &Fault, cred: &Credential) -> ErrorKind {
    match f {
        Fault::Overloaded => ErrorKind::Overloaded,
        Fault::Unavailable => ErrorKind::Unavailable,
        Fault::RateLimited { retry_after_secs } => ErrorKind::RateLimited { retry_after_secs: *retry_after_secs },
        Fault::Unauthorized => {
            ErrorKind::Unauthorized { bearer: cred.bearer, masked: crate::util::mask_key(&cred.key) }
        }
        Fault::Forbidden => ErrorKind::Forbidden,
        Fault::PaymentRequired => ErrorKind::PaymentRequired,
        Fault::BillingError => ErrorKind::BillingError,
        Fault::Internal => ErrorKind::Internal,
        Fault::BadGateway => ErrorKind::BadGateway,
        Fault::GatewayTimeout => ErrorKind::GatewayTimeout,
        Fault::InvalidRequest => ErrorKind::InvalidRequestFault,
        // The remaining faults never produce an error response; they are handled before this
        // is called. Internal is the least surprising answer if that ever changes.
        Fault::ContextTooLong
        | Fault::ConnectionReset
        | Fault::StallBeforeFirstByte { .. }
        | Fault::StallMidStream { .. }
        | Fault::CutMidStream { .. }
        | Fault::ResetMidStream { .. }
        | Fault::MalformedSse { .. }
        | Fault::ErrorMidStream { .. } => ErrorKind::Internal,
    }
}

/// Prompt tokens of a request that may not have been validated (for the context fault).
fn tokens_guess(v: &Value) -> u64 {
    let mut h = crate::util::Fnv::new();
    crate::util::div_ceil_u64(model::digest(v, &mut h), 4)
}

/// Resets the connection (RST, no response). Without a connection handle (the router was
/// driven without [`crate::serve`]) the body fails instead, which the client also sees as a
/// broken connection.
async fn reset(ctl: Option<ConnCtl>) -> Response {
    match ctl {
        Some(ctl) => {
            ctl.reset();
            // The connection task drops this future together with the connection.
            std::future::pending::<Response>().await
        }
        None => {
            let failing = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated connection reset"))
            });
            Response::new(Body::from_stream(failing))
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "a flat list of what was seen, called from two places")]
fn record_request(
    app: &App,
    api: Api,
    headers: &HeaderMap,
    cred: Option<&Credential>,
    model: Option<String>,
    stream: bool,
    body: Option<Value>,
    status: u16,
    fault: Option<&(u64, Fault)>,
) {
    if !app.handle.recording() {
        return;
    }
    app.handle.push_request(|seq, at_ms| {
        let mut kept = BTreeMap::new();
        for (name, value) in headers {
            let n = name.as_str();
            if matches!(n, "authorization" | "x-api-key" | "cookie" | "proxy-authorization") {
                continue;
            }
            kept.insert(n.to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        RecordedRequest {
            seq,
            at_ms,
            method: "POST".to_owned(),
            path: api.path().to_owned(),
            model,
            stream,
            auth_header: cred.map(|c| c.header.to_owned()),
            key_fingerprint: cred.map(|c| key_fingerprint(&c.key)),
            key_index: cred.and_then(|c| app.cfg.accepted_keys.iter().position(|k| *k == c.key)),
            headers: kept,
            body: body.unwrap_or(Value::Null),
            status,
            fault: fault.map(|(_, f)| f.name().to_owned()),
            fault_rule: fault.map(|(id, _)| *id),
        }
    });
}
