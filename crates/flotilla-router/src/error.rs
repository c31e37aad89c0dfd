//! What the router returns when it cannot answer: the caller's own mistake, an unknown model,
//! or one aggregate error listing every attempt.

use std::fmt::Write as _;
use std::time::Duration;

use flotilla_proto::error::UpstreamError;
use flotilla_proto::{ApiError, ErrorKind, ProtoError};
use serde::Serialize;
use thiserror::Error;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum AttemptOutcome {
    Ok,
    Failed(&'static str),
    /// Not tried: a breaker or cooldown said no (no round trip spent).
    Skipped(&'static str),
}

/// One attempt of a request, as listed in the aggregate error, logs and `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub provider: String,
    pub model: String,
    /// The credential's profile name (never its value); `none` for providers without auth.
    pub credential: String,
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
    pub status: Option<u16>,
    #[serde(serialize_with = "ser_ms")]
    pub elapsed: Duration,
    pub detail: String,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl std::fmt::Display for AttemptRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, reason) = match &self.outcome {
            AttemptOutcome::Ok => ("ok", ""),
            AttemptOutcome::Failed(r) => ("failed", *r),
            AttemptOutcome::Skipped(r) => ("skipped", *r),
        };
        write!(f, "{}/{} [{}] {what}", self.provider, self.model, self.credential)?;
        if !reason.is_empty() {
            write!(f, " ({reason}")?;
            if let Some(s) = self.status {
                write!(f, ", {s}")?;
            }
            write!(f, ")")?;
        }
        write!(f, " after {:.1} ms", self.elapsed.as_secs_f64() * 1000.0)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Why a request got no answer.
#[derive(Debug, Error)]
pub enum RouteError {
    /// The `model` names no agent, chain or `provider/model`.
    #[error("unknown model \"{name}\"{}", suggestion_text(.suggestion))]
    UnknownModel { name: String, suggestion: Option<String> },
    /// The request cannot be translated for the chosen upstream.
    #[error("cannot translate request: {0}")]
    Translate(#[from] ProtoError),
    /// The upstream said the request itself is wrong (400/422): no failover, passed through.
    #[error("upstream rejected the request ({status}): {}", .error.as_ref().map(|e| e.message.as_str()).unwrap_or("no details"))]
    Caller { status: u16, error: Option<UpstreamError>, attempts: Vec<AttemptRecord> },
    /// Every candidate failed or was unavailable.
    #[error("{}", aggregate_text(.chain, .attempts, *.deadline_hit))]
    AllFailed { chain: String, attempts: Vec<AttemptRecord>, deadline_hit: bool },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("; did you mean \"{s}\"?"),
        None => "; use an agent id, a chain name or provider/model (see GET /v1/models)".to_owned(),
    }
}

fn aggregate_text(chain: &str, attempts: &[AttemptRecord], deadline_hit: bool) -> String {
    let mut s = format!("all candidates of \"{chain}\" failed");
    if deadline_hit {
        s.push_str(" (request deadline reached)");
    }
    for (i, a) in attempts.iter().enumerate() {
        let _ = write!(s, "; {}. {a}", i + 1);
    }
    s
}

impl RouteError {
    /// The attempts made before the error, if any.
    pub fn attempts(&self) -> &[AttemptRecord] {
        match self {
            RouteError::Caller { attempts, .. } | RouteError::AllFailed { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// The error as a client should see it, in any API format.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            RouteError::UnknownModel { .. } => ApiError::new(ErrorKind::NotFound, self.to_string()),
            RouteError::Translate(_) => ApiError::new(ErrorKind::InvalidRequest, self.to_string()),
            RouteError::Caller { status, error, .. } => {
                let kind = match status {
                    404 => ErrorKind::NotFound,
                    413 => ErrorKind::RequestTooLarge,
                    _ => ErrorKind::InvalidRequest,
                };
                let message = error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| self.to_string());
                ApiError { kind, status: *status, message }
            }
            RouteError::AllFailed { attempts, deadline_hit, .. } => {
                let reasons: Vec<&str> = attempts
                    .iter()
                    .filter_map(|a| match a.outcome {
                        AttemptOutcome::Failed(r) | AttemptOutcome::Skipped(r) => Some(r),
                        AttemptOutcome::Ok => None,
                    })
                    .collect();
                let all = |r: &str| !reasons.is_empty() && reasons.iter().all(|x| *x == r);
                let kind = if *deadline_hit {
                    ErrorKind::Timeout
                } else if all("rate_limited") {
                    ErrorKind::RateLimit
                } else if reasons.contains(&"overloaded") {
                    ErrorKind::Overloaded
                } else {
                    ErrorKind::Api
                };
                let mut e = ApiError::new(kind, self.to_string());
                if kind == ErrorKind::Api {
                    // Every upstream failed: that is a bad gateway, not flotilla's own bug.
                    e.status = 502;
                }
                e
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: &str, outcome: AttemptOutcome, status: Option<u16>) -> AttemptRecord {
        AttemptRecord {
            provider: p.into(),
            model: "m".into(),
            credential: "key-a".into(),
            outcome,
            status,
            elapsed: Duration::from_millis(12),
            detail: String::new(),
        }
    }

    #[test]
    fn aggregate_lists_every_attempt() {
        let e = RouteError::AllFailed {
            chain: "family".into(),
            attempts: vec![
                rec("anthropic", AttemptOutcome::Failed("overloaded"), Some(529)),
                rec("openai", AttemptOutcome::Skipped("breaker_open"), None),
            ],
            deadline_hit: false,
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "all candidates of \"family\" failed; 1. anthropic/m [key-a] failed (overloaded, 529) after 12.0 ms"
            ),
            "{text}"
        );
        assert!(text.contains("2. openai/m [key-a] skipped (breaker_open)"), "{text}");
        let api = e.to_api_error();
        assert_eq!(api.kind, ErrorKind::Overloaded);
        assert_eq!(api.status, 529);
    }

    #[test]
    fn status_of_aggregate_depends_on_reasons() {
        let all_rl = RouteError::AllFailed {
            chain: "c".into(),
            attempts: vec![rec("a", AttemptOutcome::Failed("rate_limited"), Some(429))],
            deadline_hit: false,
        };
        assert_eq!(all_rl.to_api_error().status, 429);
        let mixed = RouteError::AllFailed {
            chain: "c".into(),
            attempts: vec![
                rec("a", AttemptOutcome::Failed("transient"), Some(500)),
                rec("b", AttemptOutcome::Failed("auth_failed"), Some(401)),
            ],
            deadline_hit: false,
        };
        assert_eq!(mixed.to_api_error().status, 502);
        let late = RouteError::AllFailed { chain: "c".into(), attempts: vec![], deadline_hit: true };
        assert_eq!(late.to_api_error().status, 504);
    }

    #[test]
    fn caller_error_keeps_upstream_status_and_message() {
        let e = RouteError::Caller {
            status: 422,
            error: Some(UpstreamError {
                error_type: "invalid_request_error".into(),
                message: "bad tool schema".into(),
            }),
            attempts: vec![],
        };
        let api = e.to_api_error();
        assert_eq!((api.status, api.kind, api.message.as_str()), (422, ErrorKind::InvalidRequest, "bad tool schema"));
    }
}
