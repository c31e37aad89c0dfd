//! OAuth refresh at a provider's token endpoint (the JSON shape of Anthropic's console
//! endpoint), failures that say whether to retry or to ask a human, and when to refresh.
//!
//! Refresh tokens are single-use: the answer to a successful refresh carries the next one,
//! and the one sent is spent. The caller must publish the new [`TokenSet`] before anything
//! else refreshes, which is why a fleet has one elected refresher per credential.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// How long before expiry a token is refreshed when its lifetime is not known.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A refresh that has not answered in this long has failed (transiently). The client's own
/// timeouts, if shorter, apply first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest error description kept from a token endpoint's answer.
const MAX_DESCRIPTION: usize = 200;

/// The tokens a successful refresh returns. `Debug` shows no token.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    /// The refresh token for next time. The one sent is spent (when the endpoint rotates
    /// tokens, as Anthropic's does); if an endpoint returns none, the one sent stays valid and
    /// is repeated here.
    pub refresh_token: SecretString,
    /// When the access token expires: the time the request was sent plus `expires_in`, so
    /// the answer's transit time makes it early, never late.
    pub expires_at: SystemTime,
    /// `expires_in` as the endpoint gave it.
    pub lifetime: Duration,
}

impl TokenSet {
    /// When to refresh this token set: [`refresh_margin`] before it expires.
    pub fn refresh_at(&self) -> SystemTime {
        self.expires_at.checked_sub(refresh_margin(self.lifetime)).unwrap_or(self.expires_at)
    }
}

/// Why a refresh failed, and so what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `invalid_grant`: the refresh token was already used (perhaps by another node or a
    /// laptop sharing it) or was revoked. Retrying cannot help; a human must log in again and
    /// add the credential anew.
    #[error(
        "refresh token rejected (invalid_grant{}): it was already used or was revoked; log in again and run `flotilla auth add` with the new tokens",
        .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    InvalidGrant { description: Option<String> },
    /// The endpoint could not be reached, timed out, or answered 408, 429 or 5xx. The refresh
    /// token was not spent (unless the answer was lost after the endpoint committed, which
    /// the next attempt will report as [`RefreshError::InvalidGrant`]): retry later, after
    /// `retry_after` if given.
    #[error("token endpoint failed, worth retrying: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Another 4xx (`invalid_client`, `invalid_request`, 401, 403, 404…): the token URL or
    /// client id is wrong. Not worth retrying until the configuration changes.
    #[error("token endpoint refused the request: HTTP {status}, {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rejected { status: u16, error: String, description: Option<String> },
    /// The token URL is not a URL, or a success answer is not a token set (not JSON, no
    /// `access_token`, no `expires_in`). Not worth retrying.
    #[error("malformed token exchange: {reason}")]
    Malformed { reason: String },
}

impl RefreshError {
    /// True for [`RefreshError::Transient`]: try again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RefreshError::Transient { .. })
    }

    /// True for [`RefreshError::InvalidGrant`]: the credential is dead until a human logs in.
    pub fn needs_login(&self) -> bool {
        matches!(self, RefreshError::InvalidGrant { .. })
    }

    /// The endpoint's `retry-after`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RefreshError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Refreshes: POSTs `{"grant_type": "refresh_token", "refresh_token", "client_id"}` as JSON to
/// `token_url` and reads `{"access_token", "refresh_token", "expires_in", "token_type"}`.
/// A `400`/`401` with `"error": "invalid_grant"` is [`RefreshError::InvalidGrant`]; network
/// errors, timeouts, `408`, `429` and `5xx` are [`RefreshError::Transient`]. Errors never
/// contain a token.
pub async fn refresh(
    client: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    refresh_token: &SecretString,
) -> Result<TokenSet, RefreshError> {
    let url = reqwest::Url::parse(token_url)
        .map_err(|e| RefreshError::Malformed { reason: format!("token URL {token_url:?} is not a URL ({e})") })?;
    let body = json!({
        "grant_type": "refresh_token",
        "refresh_token": refresh_token.expose_secret(),
        "client_id": client_id,
    });
    let sent_at = SystemTime::now();
    let resp = client
        .post(url)
        .header(ACCEPT, "application/json")
        .json(&body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| RefreshError::Transient { reason: describe(&e), retry_after: None })?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = resp.bytes().await.map_err(|e| RefreshError::Transient {
        reason: format!("reading the answer failed: {}", describe(&e)),
        retry_after: None,
    })?;
    interpret(status, retry_after, &bytes, sent_at, refresh_token)
}

/// True when a token expiring at `expires_at` should be refreshed at `now`: it expires within
/// `margin` (or already has).
///
/// For `margin`, use [`refresh_margin`] of the token's lifetime when it is known (after a
/// refresh, [`TokenSet::lifetime`]) and [`DEFAULT_REFRESH_MARGIN`] otherwise (a freshly
/// imported credential). Nodes compare a published `expires_at` with their own clock, so
/// the margin also absorbs clock skew between nodes.
pub fn needs_refresh(expires_at: SystemTime, now: SystemTime, margin: Duration) -> bool {
    match expires_at.duration_since(now) {
        Ok(left) => left <= margin,
        Err(_) => true,
    }
}

/// How long before expiry to refresh a token that lives `lifetime`: 5 minutes
/// ([`DEFAULT_REFRESH_MARGIN`]), or a tenth of the lifetime if that is shorter.
///
/// Why: for real tokens (Anthropic's live hours) 5 minutes leaves room for many retries of a
/// refresh that takes well under a second, and for a new refresher to be elected if the
/// current one dies. A fixed 5 minutes would make a short-lived token (a 2-second test token,
/// a provider issuing 60-second tokens) due for refresh the moment it is issued, so every node
/// would refresh in a loop; a tenth of the lifetime keeps 90% of it usable. The fraction is
/// of the whole lifetime, not of what is left: "within 10% of what is left" never comes true
/// before expiry.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    DEFAULT_REFRESH_MARGIN.min(lifetime / 10)
}

/// Turns the token endpoint's answer into a token set or a classified error.
fn interpret(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    sent_at: SystemTime,
    sent_refresh: &SecretString,
) -> Result<TokenSet, RefreshError> {
    if status.is_success() {
        return token_set(body, sent_at, sent_refresh);
    }
    let (code, description) = error_fields(body, sent_refresh);
    let code_is = |c: &str| code.as_deref() == Some(c);
    let s = status.as_u16();
    if matches!(s, 400 | 401) && code_is("invalid_grant") {
        return Err(RefreshError::InvalidGrant { description });
    }
    if s == 408 || s == 429 || status.is_server_error() {
        let what = code.map(|c| format!(", {c}")).unwrap_or_default();
        return Err(RefreshError::Transient { reason: format!("HTTP {s}{what}"), retry_after });
    }
    Err(RefreshError::Rejected { status: s, error: code.unwrap_or_else(|| "no error code".to_owned()), description })
}

fn token_set(body: &[u8], sent_at: SystemTime, sent_refresh: &SecretString) -> Result<TokenSet, RefreshError> {
    let malformed = |reason: String| RefreshError::Malformed { reason };
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the success answer is not JSON (line {}, column {})", e.line(), e.column())))?;
    let access = match v.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::from(s.as_str()),
        Some(_) => return Err(malformed("access_token is empty or not a string".to_owned())),
        None => return Err(malformed("the answer has no access_token".to_owned())),
    };
    let refresh = match v.get("refresh_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::from(s.as_str()),
        None | Some(Value::Null) => sent_refresh.clone(),
        Some(_) => return Err(malformed("refresh_token is empty or not a string".to_owned())),
    };
    let expires_in = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        // Some servers send the number as a string.
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite() && *n >= 0.0)
    .and_then(|n| Duration::try_from_secs_f64(n).ok())
    .ok_or_else(|| malformed("the answer has no usable expires_in (seconds)".to_owned()))?;
    let expires_at = sent_at.checked_add(expires_in).ok_or_else(|| malformed("expires_in is too large".to_owned()))?;
    Ok(TokenSet { access_token: access, refresh_token: refresh, expires_at, lifetime: expires_in })
}

/// The error code and description of an error answer, in the OAuth shape (`{"error",
/// "error_description"}`) or Anthropic's API shape (`{"error": {"type", "message"}}`). Only
/// what looks like a code is kept as the code; a description that repeats the refresh token
/// is dropped.
fn error_fields(body: &[u8], sent_refresh: &SecretString) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let (code, description) = match v.get("error") {
        Some(Value::String(c)) => (Some(c.as_str()), v.get("error_description").and_then(Value::as_str)),
        Some(Value::Object(e)) => (e.get("type").and_then(Value::as_str), e.get("message").and_then(Value::as_str)),
        _ => (None, None),
    };
    let code = code
        .filter(|c| {
            !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        })
        .map(str::to_owned);
    let secret = sent_refresh.expose_secret();
    let description = description
        .filter(|d| secret.is_empty() || !d.contains(secret))
        .map(|d| d.chars().filter(|c| !c.is_control()).take(MAX_DESCRIPTION).collect::<String>())
        .filter(|d| !d.is_empty());
    (code, description)
}

/// A reqwest error with its causes ("error sending request …: connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        let s = inner.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = inner.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const OLD: &str = "sk-ant-ort01-OLD-TOPSECRET";

    fn old() -> SecretString {
        SecretString::from(OLD)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn run(status: u16, body: &str) -> Result<TokenSet, RefreshError> {
        interpret(StatusCode::from_u16(status).unwrap(), None, body.as_bytes(), at(1000), &old())
    }

    #[test]
    fn success_computes_expiry_from_send_time() {
        let t = run(200, r#"{"access_token":"sk-ant-oat01-NEW","refresh_token":"sk-ant-ort01-NEW","expires_in":3600,"token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.access_token.expose_secret(), "sk-ant-oat01-NEW");
        assert_eq!(t.refresh_token.expose_secret(), "sk-ant-ort01-NEW");
        assert_eq!(t.expires_at, at(4600));
        assert_eq!(t.lifetime, Duration::from_secs(3600));
        assert_eq!(t.refresh_at(), at(4600 - 300));
        assert!(!format!("{t:?}").contains("NEW"));

        // No refresh_token in the answer: the one sent is still the one to use.
        let t = run(200, r#"{"access_token":"a","expires_in":"2"}"#).unwrap();
        assert_eq!(t.refresh_token.expose_secret(), OLD);
        assert_eq!(t.expires_at, at(1002));
    }

    #[test]
    fn malformed_success_answers() {
        for body in [
            "<html>",
            r#"{"refresh_token":"r","expires_in":1}"#,
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","expires_in":-1}"#,
            r#"{"access_token":"","expires_in":1}"#,
        ] {
            let err = run(200, body).unwrap_err();
            assert!(matches!(err, RefreshError::Malformed { .. }), "{body}: {err:?}");
            assert!(!err.is_retryable() && !err.needs_login());
        }
    }

    #[test]
    fn errors_classify_themselves() {
        let err = run(400, r#"{"error":"invalid_grant","error_description":"Invalid refresh token"}"#).unwrap_err();
        assert!(err.needs_login() && !err.is_retryable(), "{err:?}");
        assert!(err.to_string().contains("Invalid refresh token"), "{err}");
        assert!(run(401, r#"{"error":"invalid_grant"}"#).unwrap_err().needs_login());

        for (status, body) in [
            (500, "{}"),
            (502, "<html>bad gateway</html>"),
            (503, ""),
            (529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            (408, ""),
        ] {
            let err = run(status, body).unwrap_err();
            assert!(err.is_retryable(), "{status}: {err:?}");
        }
        let limited =
            interpret(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)), b"{}", at(0), &old()).unwrap_err();
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));

        let err = run(400, r#"{"error":"invalid_client","error_description":"Unknown client"}"#).unwrap_err();
        assert!(
            matches!(&err, RefreshError::Rejected { status: 400, error, .. } if error == "invalid_client"),
            "{err:?}"
        );
        assert!(!err.is_retryable() && !err.needs_login());
        assert!(matches!(run(404, "not found").unwrap_err(), RefreshError::Rejected { status: 404, .. }));
    }

    #[test]
    fn error_text_never_echoes_the_refresh_token() {
        let body = format!(r#"{{"error":"invalid_grant","error_description":"token {OLD} was used"}}"#);
        let err = run(400, &body).unwrap_err();
        assert!(err.needs_login());
        assert!(!err.to_string().contains("TOPSECRET") && !format!("{err:?}").contains("TOPSECRET"), "{err}");
        let body = format!(r#"{{"error":"{OLD} x"}}"#);
        let err = run(400, &body).unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    }

    #[test]
    fn refresh_timing() {
        let m = Duration::from_secs(300);
        assert!(!needs_refresh(at(1000), at(600), m));
        assert!(needs_refresh(at(1000), at(700), m));
        assert!(needs_refresh(at(1000), at(2000), m));
        assert_eq!(refresh_margin(Duration::from_secs(8 * 3600)), DEFAULT_REFRESH_MARGIN);
        assert_eq!(refresh_margin(Duration::from_secs(3600)), DEFAULT_REFRESH_MARGIN);
        assert_eq!(refresh_margin(Duration::from_secs(2)), Duration::from_millis(200));
        // A 2-second token is not due the moment it is issued.
        assert!(!needs_refresh(at(1002), at(1000), refresh_margin(Duration::from_secs(2))));
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_transient_and_bad_url_is_malformed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/oauth/token", listener.local_addr().unwrap());
        drop(listener);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let err = refresh(&client, &url, "c", &old()).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(!err.to_string().contains("TOPSECRET"));
        let err = refresh(&client, "not a url", "c", &old()).await.unwrap_err();
        assert!(matches!(err, RefreshError::Malformed { .. }), "{err:?}");
    }
}
