//! Failure classification: what an upstream signal means and what the router does about it
//! (the table in DESIGN.md, "Failure semantics").

use std::time::Duration;

use flotilla_proto::error::UpstreamError;

/// What went wrong with one attempt, as far as failover is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureClass {
    /// 529, 503, `overloaded_error`: the model is overloaded for everyone.
    Overloaded,
    /// 429 on this credential; `retry_after` if the upstream said.
    RateLimited { retry_after: Option<Duration> },
    /// 401/403: the credential is bad or expired.
    AuthFailed,
    /// 402, `insufficient_quota`, billing text: the credential is out of money.
    Billing,
    /// 500/502/504, connect error, reset, time-to-first-byte timeout, garbage from upstream.
    Transient,
    /// The prompt does not fit this model's context window.
    ContextTooLong,
    /// 404 / unknown model at this provider: this candidate cannot serve, others may.
    ModelUnavailable,
    /// 400/422 and other caller mistakes: returned to the caller, no failover.
    InvalidRequest,
}

/// What the router does next after a failure of the given class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Try the same candidate and credential once more after a jittered pause.
    RetryOnce,
    /// Try the next credential of the same candidate, then the next candidate.
    RotateCredential,
    /// Go straight to the next candidate.
    NextCandidate,
    /// Stop and hand the upstream's error to the caller.
    ReturnToCaller,
}

impl FailureClass {
    /// A short stable name for logs, metrics and the aggregate error.
    pub fn reason(&self) -> &'static str {
        match self {
            FailureClass::Overloaded => "overloaded",
            FailureClass::RateLimited { .. } => "rate_limited",
            FailureClass::AuthFailed => "auth_failed",
            FailureClass::Billing => "billing",
            FailureClass::Transient => "transient",
            FailureClass::ContextTooLong => "context_too_long",
            FailureClass::ModelUnavailable => "model_unavailable",
            FailureClass::InvalidRequest => "invalid_request",
        }
    }

    /// The router's next step for this class.
    pub fn action(&self) -> Action {
        match self {
            FailureClass::Overloaded | FailureClass::ContextTooLong | FailureClass::ModelUnavailable => {
                Action::NextCandidate
            }
            FailureClass::RateLimited { .. } | FailureClass::AuthFailed | FailureClass::Billing => {
                Action::RotateCredential
            }
            FailureClass::Transient => Action::RetryOnce,
            FailureClass::InvalidRequest => Action::ReturnToCaller,
        }
    }

    /// Whether this failure says something about the credential (as opposed to the model).
    pub fn is_credential_problem(&self) -> bool {
        matches!(self, FailureClass::RateLimited { .. } | FailureClass::AuthFailed | FailureClass::Billing)
    }
}

/// Classifies an HTTP error answer from its status and decoded error body.
pub fn classify_status(status: u16, retry_after: Option<Duration>, err: Option<&UpstreamError>) -> FailureClass {
    let ty = err.map(|e| e.error_type.as_str()).unwrap_or("");
    let msg = err.map(|e| e.message.to_ascii_lowercase()).unwrap_or_default();
    if ty == "overloaded_error" {
        return FailureClass::Overloaded;
    }
    if ty == "insufficient_quota" || ty == "billing_error" || mentions_billing(&msg) {
        return FailureClass::Billing;
    }
    if is_context_too_long(ty, &msg) {
        return FailureClass::ContextTooLong;
    }
    match status {
        529 | 503 => FailureClass::Overloaded,
        429 => FailureClass::RateLimited { retry_after },
        401 | 403 => FailureClass::AuthFailed,
        402 => FailureClass::Billing,
        404 => FailureClass::ModelUnavailable,
        408 | 409 | 425 => FailureClass::Transient,
        400..=499 => FailureClass::InvalidRequest,
        _ => FailureClass::Transient,
    }
}

fn mentions_billing(msg: &str) -> bool {
    msg.contains("credit balance") || msg.contains("billing") || msg.contains("exceeded your current quota")
}

fn is_context_too_long(ty: &str, msg: &str) -> bool {
    ty == "context_length_exceeded"
        || msg.contains("prompt is too long")
        || msg.contains("context length")
        || msg.contains("context window")
        || msg.contains("maximum context")
        || msg.contains("too many tokens")
}

/// Parses a `retry-after` header: delta-seconds (possibly fractional) or an HTTP date.
/// `retry-after-ms` (OpenAI) is preferred by the caller when present.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate_parse(v)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date form servers send today.
fn httpdate_parse(s: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == parts[2])? as u64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = (y - era * 400) as u64;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe as i64 - 719_468;
    let secs = days.checked_mul(86_400)? + (hms[0] * 3600 + hms[1] * 60 + hms[2]) as i64;
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(ty: &str, msg: &str) -> UpstreamError {
        UpstreamError { error_type: ty.into(), message: msg.into() }
    }

    #[test]
    fn design_table_rows() {
        // 529, overloaded_error, 503 → overloaded → next candidate now.
        assert_eq!(classify_status(529, None, Some(&err("overloaded_error", "Overloaded"))), FailureClass::Overloaded);
        assert_eq!(classify_status(503, None, None), FailureClass::Overloaded);
        assert_eq!(classify_status(500, None, Some(&err("overloaded_error", "x"))), FailureClass::Overloaded);
        assert_eq!(FailureClass::Overloaded.action(), Action::NextCandidate);
        // 429 + retry-after → rate limited, rotate credential.
        let ra = Some(Duration::from_secs(7));
        assert_eq!(classify_status(429, ra, None), FailureClass::RateLimited { retry_after: ra });
        assert_eq!(classify_status(429, ra, None).action(), Action::RotateCredential);
        // 401/403 → auth.
        assert_eq!(classify_status(401, None, None), FailureClass::AuthFailed);
        assert_eq!(classify_status(403, None, None), FailureClass::AuthFailed);
        assert_eq!(FailureClass::AuthFailed.action(), Action::RotateCredential);
        // 402, insufficient_quota (OpenAI sends it as 429), billing text.
        assert_eq!(classify_status(402, None, None), FailureClass::Billing);
        assert_eq!(
            classify_status(429, None, Some(&err("insufficient_quota", "You exceeded your current quota"))),
            FailureClass::Billing
        );
        assert_eq!(
            classify_status(
                400,
                None,
                Some(&err("invalid_request_error", "Your credit balance is too low to access the Anthropic API."))
            ),
            FailureClass::Billing
        );
        // 500/502/504 → transient, retry once.
        for s in [500, 502, 504] {
            assert_eq!(classify_status(s, None, None), FailureClass::Transient);
        }
        assert_eq!(FailureClass::Transient.action(), Action::RetryOnce);
        // 400/422 → caller's fault.
        assert_eq!(
            classify_status(400, None, Some(&err("invalid_request_error", "messages: field required"))),
            FailureClass::InvalidRequest
        );
        assert_eq!(classify_status(422, None, None), FailureClass::InvalidRequest);
        assert_eq!(FailureClass::InvalidRequest.action(), Action::ReturnToCaller);
        // Context too long, in both vendors' words.
        assert_eq!(
            classify_status(
                400,
                None,
                Some(&err("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"))
            ),
            FailureClass::ContextTooLong
        );
        assert_eq!(
            classify_status(400, None, Some(&err("context_length_exceeded", "x"))),
            FailureClass::ContextTooLong
        );
        assert_eq!(FailureClass::ContextTooLong.action(), Action::NextCandidate);
    }

    #[test]
    fn retry_after_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:40:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
