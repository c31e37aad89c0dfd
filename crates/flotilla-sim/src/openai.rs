//! The OpenAI API: credentials, errors and headers shared by Chat Completions and Responses,
//! written from OpenAI's public API documentation.

pub(crate) mod chat;
pub(crate) mod responses;

use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, Credential, ErrorKind, ErrorReply, ReqCtx};
use crate::model::Stop;
use crate::util::hex_id;

const RPM_LIMIT: u64 = 10_000;
const TPM_LIMIT: u64 = 30_000_000;

/// The fingerprint OpenAI reports for the backend configuration.
pub(crate) const SYSTEM_FINGERPRINT: &str = "fp_f1071a51a0";

pub(crate) fn request_id() -> String {
    hex_id("req_", 32)
}

/// `Authorization: Bearer <key>`; anything else counts as no key, as the API treats it.
pub(crate) fn credential(headers: &HeaderMap) -> Option<Credential> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let token = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then(|| Credential { key: token.to_owned(), header: "authorization", bearer: true })
}

pub(crate) fn finish_reason(s: Stop) -> &'static str {
    match s {
        Stop::EndTurn => "stop",
        Stop::MaxTokens => "length",
        Stop::ToolUse => "tool_calls",
    }
}

/// The CDN's pages for gateway errors (HTML, not JSON).
const BAD_GATEWAY_HTML: &str = crate::anthropic::BAD_GATEWAY_HTML;
const GATEWAY_TIMEOUT_HTML: &str = "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

/// OpenAI's error body: `{"error":{"message","type","param","code"}}`.
pub(crate) fn error(ctx: &ReqCtx<'_>, kind: &ErrorKind) -> ErrorReply {
    let body = |status: StatusCode, message: &str, ty: &str, param: Option<&str>, code: Option<&str>| {
        ErrorReply::json(status, &json!({ "error": { "message": message, "type": ty, "param": param, "code": code } }))
    };
    let bad = StatusCode::BAD_REQUEST;
    let invalid = "invalid_request_error";
    match kind {
        ErrorKind::MissingKey => body(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
            invalid,
            None,
            None,
        ),
        ErrorKind::InvalidKey { masked, .. } | ErrorKind::Unauthorized { masked, .. } => body(
            StatusCode::UNAUTHORIZED,
            &format!(
                "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
            ),
            invalid,
            None,
            Some("invalid_api_key"),
        ),
        ErrorKind::Forbidden => body(
            StatusCode::FORBIDDEN,
            "Country, region, or territory not supported",
            "request_forbidden",
            None,
            Some("unsupported_country_region_territory"),
        ),
        ErrorKind::Overloaded => body(
            StatusCode::SERVICE_UNAVAILABLE,
            "Our servers are currently overloaded. Please try again later.",
            "service_unavailable_error",
            None,
            Some("server_is_overloaded"),
        ),
        ErrorKind::Unavailable => body(
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later",
            "server_error",
            None,
            None,
        ),
        ErrorKind::RateLimited { retry_after_secs } => body(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Rate limit reached for {} in organization org-flotillasim on requests per min (RPM): Limit {RPM_LIMIT}, Used {RPM_LIMIT}, Requested 1. Please try again in {retry_after_secs}s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                ctx.model.unwrap_or("unknown")
            ),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        )
        .header("retry-after", retry_after_secs)
        .header("x-ratelimit-limit-requests", RPM_LIMIT)
        .header("x-ratelimit-remaining-requests", 0)
        .header("x-ratelimit-reset-requests", format!("{retry_after_secs}s")),
        ErrorKind::PaymentRequired | ErrorKind::BillingError => body(
            StatusCode::TOO_MANY_REQUESTS,
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            None,
            Some("insufficient_quota"),
        ),
        ErrorKind::Internal => body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
        ErrorKind::BadGateway => {
            ErrorReply::text(StatusCode::BAD_GATEWAY, "text/html", BAD_GATEWAY_HTML)
        }
        ErrorKind::GatewayTimeout => {
            ErrorReply::text(StatusCode::GATEWAY_TIMEOUT, "text/html", GATEWAY_TIMEOUT_HTML)
        }
        ErrorKind::InvalidRequestFault => body(
            bad,
            "Invalid value for 'temperature': expected a number between 0 and 2.",
            invalid,
            Some("temperature"),
            Some("invalid_value"),
        ),
        ErrorKind::ContextTooLong { tokens, window } => {
            if ctx.api == Api::Responses {
                body(
                    bad,
                    "Your input exceeds the context window of this model. Please adjust your input and try again.",
                    invalid,
                    Some("input"),
                    Some("context_length_exceeded"),
                )
            } else {
                body(
                    bad,
                    &format!(
                        "This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."
                    ),
                    invalid,
                    Some("messages"),
                    Some("context_length_exceeded"),
                )
            }
        }
        // Not an OpenAI concept; never produced on these routes.
        ErrorKind::MissingVersion => body(bad, "Missing API version.", invalid, None, None),
        ErrorKind::BadJson => body(
            bad,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
            invalid,
            None,
            None,
        ),
        ErrorKind::BodyTooLarge => body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large.",
            invalid,
            None,
            None,
        ),
        ErrorKind::Invalid {
            message,
            param,
            code,
        } => body(bad, message, invalid, param.as_deref(), *code),
        ErrorKind::ModelNotFound(m) => body(
            StatusCode::NOT_FOUND,
            &format!("The model `{m}` does not exist or you do not have access to it."),
            invalid,
            None,
            Some("model_not_found"),
        ),
        ErrorKind::RouteNotFound { method, path } => body(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            invalid,
            None,
            None,
        ),
    }
}

/// Headers on every response: `x-request-id`, `openai-processing-ms`, `openai-version`,
/// `openai-organization`, and on success the `x-ratelimit-*` family.
pub(crate) fn decorate(h: &mut HeaderMap, request_id: &str, success: bool, elapsed: Duration) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    h.insert("openai-processing-ms", HeaderValue::from(ms));
    h.insert("openai-version", HeaderValue::from_static("2020-10-01"));
    h.insert("openai-organization", HeaderValue::from_static("flotilla-sim"));
    if !success {
        return;
    }
    h.insert("x-ratelimit-limit-requests", HeaderValue::from(RPM_LIMIT));
    h.insert("x-ratelimit-limit-tokens", HeaderValue::from(TPM_LIMIT));
    h.insert("x-ratelimit-remaining-requests", HeaderValue::from(RPM_LIMIT - 1));
    h.insert("x-ratelimit-remaining-tokens", HeaderValue::from(TPM_LIMIT - 1000));
    h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("6ms"));
    h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("2ms"));
}

/// The `GET /v1/models` body.
pub(crate) fn models_body(models: &[String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_730_000_000, "owned_by": "system" }))
        .collect();
    json!({ "object": "list", "data": data })
}

/// Usage in Chat Completions shape.
pub(crate) fn chat_usage(input: u64, output: u64) -> Value {
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": input + output,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// Name of a JSON value's type as OpenAI's "invalid type" messages spell it.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// "Missing required parameter" in OpenAI's words.
pub(crate) fn missing(param: &str) -> ErrorKind {
    ErrorKind::invalid_param(
        format!("Missing required parameter: '{param}'."),
        param,
        Some("missing_required_parameter"),
    )
}
