//! Errors of parsing and encoding, and the client-facing API error every format can express.

use thiserror::Error;

/// A request or response body could not be understood.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProtoError {
    /// The body is not valid JSON or does not have the expected shape.
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// The body is well-formed but uses something flotilla cannot translate.
    #[error("unsupported {what}: {detail}")]
    Unsupported { what: &'static str, detail: String },
}

impl ProtoError {
    pub fn invalid(what: &'static str, detail: impl ToString) -> Self {
        ProtoError::Invalid { what, detail: detail.to_string() }
    }
    pub fn unsupported(what: &'static str, detail: impl ToString) -> Self {
        ProtoError::Unsupported { what, detail: detail.to_string() }
    }
}

/// The classes of error a client can be sent; each format maps them to its own type strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Api,
    Overloaded,
    Timeout,
}

impl ErrorKind {
    /// The HTTP status this kind is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimit => 429,
            ErrorKind::Api => 500,
            ErrorKind::Overloaded => 529,
            ErrorKind::Timeout => 504,
        }
    }
}

/// An error to send to a client, in whatever format the client speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// The HTTP status; usually `kind.status()`, but an upstream 4xx passed through keeps its own.
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, status: kind.status(), message: message.into() }
    }
}

/// An error reported by an upstream in its own format (HTTP error body or in-stream error event).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamError {
    /// The error's type or code string (`overloaded_error`, `insufficient_quota`,
    /// `context_length_exceeded`, ...), whichever is most specific.
    pub error_type: String,
    pub message: String,
}

impl UpstreamError {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        UpstreamError { error_type: error_type.into(), message: message.into() }
    }

    /// True when the upstream said the prompt does not fit the model's context window
    /// (OpenAI `context_length_exceeded`; Anthropic only says it in the message text).
    pub fn is_context_too_long(&self) -> bool {
        if self.error_type == "context_length_exceeded" {
            return true;
        }
        let m = self.message.to_ascii_lowercase();
        m.contains("prompt is too long")
            || m.contains("maximum context length")
            || m.contains("context length exceeded")
            || m.contains("exceed context limit")
            || m.contains("context window")
    }

    /// True when the credential is out of money or quota (OpenAI `insufficient_quota`,
    /// Anthropic `billing_error` or a 400 saying the credit balance is too low).
    pub fn is_quota_exhausted(&self) -> bool {
        if matches!(self.error_type.as_str(), "insufficient_quota" | "billing_error" | "billing_hard_limit_reached") {
            return true;
        }
        let m = self.message.to_ascii_lowercase();
        m.contains("credit balance is too low") || m.contains("exceeded your current quota")
    }

    /// True when the upstream reported itself overloaded (Anthropic `overloaded_error`).
    pub fn is_overloaded(&self) -> bool {
        matches!(self.error_type.as_str(), "overloaded_error" | "server_overloaded" | "overloaded")
    }
}

/// A stream could not be decoded.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DecodeError {
    /// The upstream sent an error event inside the stream.
    #[error("upstream error event: {}: {}", .0.error_type, .0.message)]
    Upstream(UpstreamError),
    /// The upstream sent something that is not valid for its format.
    #[error(transparent)]
    Proto(#[from] ProtoError),
}
