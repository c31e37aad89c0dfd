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
    let presented = h.get("x-api-key").and_then(|v| v.to_str().ok()).or_else(|| {
        h.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    });
    match check(&state.keys, presented) {
        Ok(()) => next.run(req).await,
        Err(err) => error_response(format_for_path(req.uri().path()), &err, None),
    }
}

/// Whether `presented` (the `x-api-key` value, or the `Authorization: Bearer` token) is one
/// of `keys`; the error says which of the two ways it failed.
pub(crate) fn check(keys: &[SecretString], presented: Option<&str>) -> Result<(), ApiError> {
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
