//! The Anthropic Messages API: request validation, answers (JSON and SSE), errors and
//! headers, written from Anthropic's public API documentation.

use http::header::HeaderValue;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::api::{Credential, ErrorKind, ErrorReply, ReqCtx};
use crate::model::{self, Choice, Last, Prompt, Reply, ReplyBody, Stop, Tool};
use crate::sse::{Events, Pace};
use crate::util::{Fnv, alnum_id, rfc3339, unix_secs};

/// Anthropic's mid-stream error event (sent after a `200` head when the API overloads).
pub(crate) const MID_STREAM_ERROR: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// Limits reported in the `anthropic-ratelimit-*` headers.
const RPM_LIMIT: u64 = 4000;
const ITPM_LIMIT: u64 = 2_000_000;
const OTPM_LIMIT: u64 = 400_000;

pub(crate) fn request_id() -> String {
    alnum_id("req_011C", 20)
}

/// `x-api-key`, else `Authorization: Bearer` (OAuth tokens).
pub(crate) fn credential(headers: &HeaderMap) -> Option<Credential> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok())
        && !k.is_empty()
    {
        return Some(Credential { key: k.to_owned(), header: "x-api-key", bearer: false });
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let token = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then(|| Credential { key: token.to_owned(), header: "authorization", bearer: true })
}

/// Validates a Messages request the way the API does and extracts the prompt.
/// `need_max_tokens` is false for `/v1/messages/count_tokens`.
pub(crate) fn parse(req: &Value, need_max_tokens: bool) -> Result<Prompt, ErrorKind> {
    let obj = req.as_object().ok_or_else(|| ErrorKind::invalid("Input should be a valid dictionary"))?;
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(ErrorKind::invalid("model: Field required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ErrorKind::invalid("model: Input should be a valid string")),
    };
    let max_tokens = if need_max_tokens {
        match obj.get("max_tokens") {
            None | Some(Value::Null) => {
                return Err(ErrorKind::invalid("max_tokens: Field required"));
            }
            Some(v) => match (v.as_u64(), v.as_i64()) {
                (Some(n), _) if n >= 1 => Some(n),
                (_, Some(_)) => {
                    return Err(ErrorKind::invalid("max_tokens: Input should be greater than or equal to 1"));
                }
                _ => return Err(ErrorKind::invalid("max_tokens: Input should be a valid integer")),
            },
        }
    } else {
        None
    };
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => return Err(ErrorKind::invalid("messages: Field required")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ErrorKind::invalid("messages: Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(ErrorKind::invalid("messages: at least one message is required"));
    }
    let last_i = messages.len() - 1;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "assistant")) {
            return Err(ErrorKind::invalid(format!("messages.{i}.role: Input should be 'user' or 'assistant'")));
        }
        let empty = match m.get("content") {
            None | Some(Value::Null) => {
                return Err(ErrorKind::invalid(format!("messages.{i}.content: Field required")));
            }
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => {
                return Err(ErrorKind::invalid(format!("messages.{i}.content: Input should be a valid list")));
            }
        };
        if empty && !(i == last_i && role == Some("assistant")) {
            return Err(ErrorKind::invalid(format!(
                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            )));
        }
    }
    if messages[0].get("role").and_then(Value::as_str) != Some("user") {
        return Err(ErrorKind::invalid("messages: first message must use the \"user\" role"));
    }

    let mut tools = Vec::new();
    if let Some(t) = obj.get("tools").filter(|t| !t.is_null()) {
        let list = t.as_array().ok_or_else(|| ErrorKind::invalid("tools: Input should be a valid list"))?;
        for (i, tool) in list.iter().enumerate() {
            // Server tools (web search, code execution…) carry a versioned `type` and no
            // schema; the simulator never calls them.
            let ty = tool.get("type").and_then(Value::as_str);
            if ty.is_some_and(|t| t != "custom") {
                continue;
            }
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ErrorKind::invalid(format!("tools.{i}.name: Field required")))?;
            let schema = tool
                .get("input_schema")
                .ok_or_else(|| ErrorKind::invalid(format!("tools.{i}.input_schema: Field required")))?;
            tools.push(Tool { name: name.to_owned(), schema: schema.clone() });
        }
    }
    let choice = match obj.get("tool_choice").filter(|c| !c.is_null()) {
        None => Choice::Auto,
        Some(c) => {
            if obj.get("tools").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                return Err(ErrorKind::invalid("tool_choice may only be specified while providing tools."));
            }
            match c.get("type").and_then(Value::as_str) {
                Some("auto") => Choice::Auto,
                Some("any") => Choice::Any,
                Some("none") => Choice::None,
                Some("tool") => {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ErrorKind::invalid("tool_choice.tool.name: Field required"))?;
                    if !tools.iter().any(|t| t.name == name) {
                        return Err(ErrorKind::invalid(format!(
                            "tool_choice.name: tool '{name}' was not found in tools"
                        )));
                    }
                    Choice::Tool(name.to_owned())
                }
                _ => {
                    return Err(ErrorKind::invalid(
                        "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
                    ));
                }
            }
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ErrorKind::invalid("stream: Input should be a valid boolean")),
    };

    let last = &messages[last_i];
    let last = if last.get("role").and_then(Value::as_str) == Some("assistant") {
        Last::Assistant
    } else {
        match last.get("content").and_then(Value::as_array) {
            Some(blocks) => {
                let results: Vec<String> = blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                    .map(|b| model::content_text(b.get("content").unwrap_or(&Value::Null)))
                    .collect();
                if results.is_empty() { Last::User } else { Last::ToolResult(results.join(" ")) }
            }
            None => Last::User,
        }
    };

    let mut h = Fnv::new();
    h.write(model.as_bytes());
    let mut chars = 0;
    for key in ["system", "messages", "tools", "tool_choice"] {
        if let Some(v) = obj.get(key) {
            h.write(key.as_bytes());
            let n = model::digest(v, &mut h);
            if key != "tool_choice" {
                chars += n;
            }
        }
    }
    Ok(Prompt { model, stream, max_tokens, tools, choice, last, prompt_chars: chars, seed: h.finish() })
}

fn stop_reason(s: Stop) -> &'static str {
    match s {
        Stop::EndTurn => "end_turn",
        Stop::MaxTokens => "max_tokens",
        Stop::ToolUse => "tool_use",
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output,
        "service_tier": "standard",
    })
}

fn message_id() -> String {
    alnum_id("msg_01", 22)
}

fn tool_use_id() -> String {
    alnum_id("toolu_01", 22)
}

/// The non-streamed answer.
pub(crate) fn message_json(p: &Prompt, r: &Reply) -> Value {
    let content = match &r.body {
        ReplyBody::Text { chunks } => json!([{ "type": "text", "text": chunks.concat() }]),
        ReplyBody::ToolCall { name, input, .. } => json!([{
            "type": "tool_use",
            "id": tool_use_id(),
            "name": name,
            "input": input,
        }]),
    };
    json!({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": p.model,
        "content": content,
        "stop_reason": stop_reason(r.stop),
        "stop_sequence": null,
        "usage": usage(r.input_tokens, r.output_tokens),
    })
}

/// The streamed answer: `message_start`, `content_block_start`, `ping`,
/// `content_block_delta`…, `content_block_stop`, `message_delta`, `message_stop`.
pub(crate) fn stream_events(p: &Prompt, r: &Reply) -> Events {
    let mut e = Events::default();
    e.named(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": message_id(),
                "type": "message",
                "role": "assistant",
                "model": p.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(r.input_tokens, 1),
            }
        }),
        Pace::Now,
    );
    let (block, deltas): (Value, Vec<Value>) = match &r.body {
        ReplyBody::Text { chunks } => (
            json!({ "type": "text", "text": "" }),
            chunks.iter().map(|c| json!({ "type": "text_delta", "text": c })).collect(),
        ),
        ReplyBody::ToolCall { name, fragments, .. } => (
            json!({ "type": "tool_use", "id": tool_use_id(), "name": name, "input": {} }),
            fragments.iter().map(|f| json!({ "type": "input_json_delta", "partial_json": f })).collect(),
        ),
    };
    e.named(
        "content_block_start",
        &json!({ "type": "content_block_start", "index": 0, "content_block": block }),
        Pace::Now,
    );
    e.named("ping", &json!({ "type": "ping" }), Pace::Now);
    for (i, d) in deltas.into_iter().enumerate() {
        let pace = if i == 0 { Pace::FirstToken } else { Pace::Token };
        e.named("content_block_delta", &json!({ "type": "content_block_delta", "index": 0, "delta": d }), pace);
    }
    e.named("content_block_stop", &json!({ "type": "content_block_stop", "index": 0 }), Pace::Now);
    e.named(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason(r.stop), "stop_sequence": null },
            "usage": { "output_tokens": r.output_tokens },
        }),
        Pace::Now,
    );
    e.named("message_stop", &json!({ "type": "message_stop" }), Pace::Now);
    e
}

/// The CDN's page for a 502, as both APIs' edges send it (HTML, not JSON).
pub(crate) const BAD_GATEWAY_HTML: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

/// Anthropic's error body: `{"type":"error","error":{"type","message"},"request_id"}`.
pub(crate) fn error(ctx: &ReqCtx<'_>, kind: &ErrorKind) -> ErrorReply {
    let body = |status: StatusCode, ty: &str, message: &str| {
        ErrorReply::json(
            status,
            &json!({
                "type": "error",
                "error": { "type": ty, "message": message },
                "request_id": ctx.request_id,
            }),
        )
    };
    let bad = StatusCode::BAD_REQUEST;
    let unauthorized = StatusCode::UNAUTHORIZED;
    match kind {
        ErrorKind::MissingKey => body(unauthorized, "authentication_error", "x-api-key header is required"),
        ErrorKind::InvalidKey { bearer: false, .. }
        | ErrorKind::Unauthorized { bearer: false, .. } => {
            body(unauthorized, "authentication_error", "invalid x-api-key")
        }
        ErrorKind::InvalidKey { bearer: true, .. } => {
            body(unauthorized, "authentication_error", "Invalid bearer token")
        }
        ErrorKind::Unauthorized { bearer: true, .. } => body(
            unauthorized,
            "authentication_error",
            "OAuth token has expired. Please obtain a new token or refresh your existing token.",
        ),
        ErrorKind::Forbidden => body(
            StatusCode::FORBIDDEN,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        ErrorKind::Overloaded => body(overloaded_status(), "overloaded_error", "Overloaded")
            .header("x-should-retry", "true"),
        // Anthropic's edge proxy answers a plain-text 503 when no backend takes the request.
        ErrorKind::Unavailable => ErrorReply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        ),
        ErrorKind::RateLimited { retry_after_secs } => body(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            &format!(
                "This request would exceed your organization's rate limit of {RPM_LIMIT} requests per minute (org: 00000000-0000-4000-8000-flotillasim0, model: {}). For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://claude.com/contact-sales to discuss your options for a rate limit increase.",
                ctx.model.unwrap_or("unknown")
            ),
        )
        .header("retry-after", retry_after_secs)
        .header("x-should-retry", "true")
        .header("anthropic-ratelimit-requests-limit", RPM_LIMIT)
        .header("anthropic-ratelimit-requests-remaining", 0)
        .header(
            "anthropic-ratelimit-requests-reset",
            rfc3339(unix_secs() + retry_after_secs),
        ),
        // What the API really sends when the prepaid balance runs out: a 400, not a 402.
        ErrorKind::PaymentRequired => body(
            bad,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        ErrorKind::BillingError => body(
            StatusCode::PAYMENT_REQUIRED,
            "billing_error",
            "There is an issue with your billing or payment information. Please check your payment details in the Claude Console.",
        ),
        ErrorKind::Internal => body(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Internal server error")
            .header("x-should-retry", "true"),
        ErrorKind::BadGateway => {
            ErrorReply::text(StatusCode::BAD_GATEWAY, "text/html", BAD_GATEWAY_HTML)
        }
        ErrorKind::GatewayTimeout => body(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "Request timeout")
            .header("x-should-retry", "true"),
        ErrorKind::InvalidRequestFault => body(
            bad,
            "invalid_request_error",
            "messages.0.content.0.text: text content blocks must be non-empty",
        ),
        ErrorKind::ContextTooLong { tokens, window } => body(
            bad,
            "invalid_request_error",
            &format!("prompt is too long: {tokens} tokens > {window} maximum"),
        ),
        ErrorKind::MissingVersion => body(bad, "invalid_request_error", "anthropic-version: header is required"),
        ErrorKind::BadJson => body(
            bad,
            "invalid_request_error",
            "There was an issue with the format or content of your request: the body is not valid JSON.",
        ),
        ErrorKind::BodyTooLarge => body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        ErrorKind::Invalid { message, .. } => body(bad, "invalid_request_error", message),
        ErrorKind::ModelNotFound(m) => body(StatusCode::NOT_FOUND, "not_found_error", &format!("model: {m}")),
        ErrorKind::RouteNotFound { .. } => body(StatusCode::NOT_FOUND, "not_found_error", "Not Found"),
    }
}

fn overloaded_status() -> StatusCode {
    // 529 is not a registered status, but `from_u16` accepts any three-digit code.
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Headers on every response: `request-id`, the organisation, and on success the
/// `anthropic-ratelimit-*` family.
pub(crate) fn decorate(h: &mut HeaderMap, request_id: &str, success: bool) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("request-id", v);
    }
    h.insert("anthropic-organization-id", HeaderValue::from_static("00000000-0000-4000-8000-f1071a51a000"));
    if !success {
        return;
    }
    let reset = HeaderValue::from_str(&rfc3339(unix_secs() + 1)).ok();
    let mut put = |name: &'static str, v: u64| {
        h.insert(name, HeaderValue::from(v));
    };
    put("anthropic-ratelimit-requests-limit", RPM_LIMIT);
    put("anthropic-ratelimit-requests-remaining", RPM_LIMIT - 1);
    put("anthropic-ratelimit-input-tokens-limit", ITPM_LIMIT);
    put("anthropic-ratelimit-input-tokens-remaining", ITPM_LIMIT);
    put("anthropic-ratelimit-output-tokens-limit", OTPM_LIMIT);
    put("anthropic-ratelimit-output-tokens-remaining", OTPM_LIMIT);
    put("anthropic-ratelimit-tokens-limit", ITPM_LIMIT + OTPM_LIMIT);
    put("anthropic-ratelimit-tokens-remaining", ITPM_LIMIT + OTPM_LIMIT);
    if let Some(reset) = reset {
        for name in [
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-input-tokens-reset",
            "anthropic-ratelimit-output-tokens-reset",
            "anthropic-ratelimit-tokens-reset",
        ] {
            h.insert(name, reset.clone());
        }
    }
}

/// The `GET /v1/models` body.
pub(crate) fn models_body(models: &[String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|id| {
            json!({
                "type": "model",
                "id": id,
                "display_name": display_name(id),
                "created_at": "2025-09-29T00:00:00Z",
            })
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models.first(),
        "last_id": models.last(),
    })
}

/// `claude-sonnet-4-5` → `Claude Sonnet 4.5`.
fn display_name(id: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut version: Vec<&str> = Vec::new();
    for part in id.split('-') {
        if part.chars().all(|c| c.is_ascii_digit()) && part.len() <= 2 {
            version.push(part);
        } else if part.chars().all(|c| c.is_ascii_digit()) {
            // A date suffix such as 20250929 is not part of the display name.
        } else {
            let mut c = part.chars();
            if let Some(f) = c.next() {
                words.push(f.to_uppercase().chain(c).collect());
            }
        }
    }
    if !version.is_empty() {
        words.push(version.join("."));
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(display_name("claude-sonnet-4-5"), "Claude Sonnet 4.5");
        assert_eq!(display_name("claude-opus-4-6-20260101"), "Claude Opus 4.6");
    }

    #[test]
    fn validation_messages() {
        let err = |v: Value| match parse(&v, true) {
            Err(ErrorKind::Invalid { message, .. }) => message,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(
            err(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})),
            "max_tokens: Field required"
        );
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": []})),
            "messages: at least one message is required"
        );
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": "hi"}]})),
            "messages: first message must use the \"user\" role"
        );
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]})),
            "messages.0.role: Input should be 'user' or 'assistant'"
        );
        // Consecutive same-role messages are accepted (the API merges them).
        assert!(
            parse(
                &json!({"model": "m", "max_tokens": 5, "messages": [
                    {"role": "user", "content": "a"}, {"role": "user", "content": "b"}
                ]}),
                true
            )
            .is_ok()
        );
        // count_tokens does not need max_tokens.
        assert!(parse(&json!({"model": "m", "messages": [{"role": "user", "content": "a"}]}), false).is_ok());
    }
}
