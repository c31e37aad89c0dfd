//! Client key check for the compatible endpoints (`Authorization: Bearer` or `x-api-key`).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use flotilla_proto::{ApiError, ErrorKind};
use secrecy::{ExposeSecret, SecretString};

use crate::GatewayState;
use crate::api::{error_response, format_for_path};

/// Rejects requests without a configured key, in the caller's API format.
pub async fn require_key(State(state): State<GatewayState>, req: Request, next: Next) -> Response {
    if state.keys.is_empty() {
        return next.run(req).await;
    }
    let h = req.headers();
    let value = |name| h.get(name).map(http::HeaderValue::as_bytes);
    match check(&state.keys, value("x-api-key"), value(http::header::AUTHORIZATION.as_str())) {
        Ok(()) => next.run(req).await,
        Err(err) => error_response(format_for_path(req.uri().path()), &err, None),
    }
}

/// Whether the key a request presents is one of `keys`, from its `x-api-key` value, else the
/// token of its `Authorization: Bearer` value (a value that is not visible ASCII counts as
/// absent, as `HeaderValue::to_str` has it); the error says which of the two ways it failed.
pub(crate) fn check(
    keys: &[SecretString],
    x_api_key: Option<&[u8]>,
    authorization: Option<&[u8]>,
) -> Result<(), ApiError> {
    let presented = text(x_api_key).or_else(|| text(authorization).and_then(|v| v.strip_prefix("Bearer ")));
    let ok = presented
        .is_some_and(|p| keys.iter().any(|k| constant_time_eq(k.expose_secret().as_bytes(), p.trim().as_bytes())));
    if ok {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::Authentication,
        if presented.is_some() {
            "invalid api key"
        } else {
            "missing api key: send Authorization: Bearer <key> or x-api-key"
        },
    ))
}

/// A header value as text, if it is visible ASCII (as `HeaderValue::to_str` has it).
fn text(v: Option<&[u8]>) -> Option<&str> {
    v.filter(|v| v.iter().all(|&b| b == b'\t' || (32..127).contains(&b))).and_then(|v| std::str::from_utf8(v).ok())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
