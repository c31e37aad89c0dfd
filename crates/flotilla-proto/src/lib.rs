//! Canonical chat types and the three wire formats flotilla speaks (Anthropic Messages,
//! OpenAI Chat Completions, OpenAI Responses), with translation both ways, JSON and SSE.
//!
//! Every request that enters flotilla is parsed into [`ChatRequest`], whatever format the
//! client used; every upstream answer is decoded into [`ChatResponse`] or a sequence of
//! [`StreamEvent`]s. Encoders turn those back into the caller's format. This crate does no I/O.

pub mod anthropic;
pub mod canonical;
pub mod error;
pub mod openai_chat;
pub mod openai_responses;
pub mod sse;
#[cfg(test)]
mod test_util;
mod wire;

pub use canonical::*;
pub use error::{ApiError, ErrorKind, ProtoError};

/// The wire formats flotilla can speak, on either side of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiFormat {
    /// Anthropic Messages API (`POST /v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    OpenAiChat,
    /// OpenAI Responses (`POST /v1/responses`).
    OpenAiResponses,
}

impl ApiFormat {
    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiFormat::Anthropic => "anthropic",
            ApiFormat::OpenAiChat => "openai-chat",
            ApiFormat::OpenAiResponses => "openai-responses",
        }
    }
}
