//! Protocol-faithful simulators of the Anthropic Messages API and the OpenAI API (Chat
//! Completions and Responses), with fault injection, for tests, the demo and benchmarks.
//!
//! The simulators are written from the providers' public documentation and do not share
//! code or types with the rest of flotilla, so a translation bug in flotilla cannot be
//! mirrored here.
//!
//! # Endpoints
//! - Anthropic: `POST /v1/messages` (JSON and SSE), `POST /v1/messages/count_tokens`,
//!   `GET /v1/models`. Credentials by `x-api-key` or `Authorization: Bearer`; the
//!   `anthropic-version` header is required (any value). Also the OAuth token endpoint
//!   `POST /v1/oauth/token` with single-use refresh tokens (see [`OAuthStats`] and the
//!   `SimHandle` OAuth methods).
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/responses` (JSON and SSE),
//!   `GET /v1/models`. Credentials by `Authorization: Bearer`.
//! - Admin, on the same server, no credentials: `POST /_sim/faults` (a [`FaultRule`] as JSON →
//!   `{"id": n}`), `GET /_sim/faults`, `DELETE /_sim/faults`, `DELETE /_sim/faults/{id}`,
//!   `GET|DELETE /_sim/stats`, `GET|DELETE /_sim/requests`, `GET /_sim/health`.
//!
//! # Order of checks for a generation request
//! credential (missing → 401; not in `accepted_keys` → 401) → `anthropic-version` (Anthropic)
//! → body is JSON → fault rules → validation (400) → model known (404) → prompt fits the
//! context window (400) → answer. `latency` (plus any stall) is waited before the head of
//! every answer, errors included.
//!
//! # Faults
//! | [`Fault`] | Anthropic | OpenAI |
//! |---|---|---|
//! | `Overloaded` | 529 `overloaded_error`, `x-should-retry: true` | 503 `server_is_overloaded` |
//! | `Unavailable` | 503 text/plain proxy message | 503 `server_error` "engine is currently overloaded" |
//! | `RateLimited` | 429 `rate_limit_error` + `retry-after` | 429 `rate_limit_exceeded` + `retry-after` |
//! | `Unauthorized` | 401 `authentication_error` (OAuth: "token has expired") | 401 `invalid_api_key` |
//! | `Forbidden` | 403 `permission_error` | 403 `unsupported_country_region_territory` |
//! | `PaymentRequired` | 400 "Your credit balance is too low…" | 429 `insufficient_quota` |
//! | `BillingError` | 402 `billing_error` | 429 `insufficient_quota` |
//! | `Internal` | 500 `api_error` | 500 `server_error` |
//! | `BadGateway` | 502 HTML | 502 HTML |
//! | `GatewayTimeout` | 504 `timeout_error` | 504 HTML |
//! | `InvalidRequest` | 400 `invalid_request_error` | 400 `invalid_request_error` |
//! | `ContextTooLong` | 400 "prompt is too long: N tokens > M maximum" | 400 `context_length_exceeded` |
//! | `ConnectionReset` | TCP RST, no response | same |
//! | `StallBeforeFirstByte`, `StallMidStream`, `CutMidStream`, `ResetMidStream`, `MalformedSse`, `ErrorMidStream` | timing and stream damage | same |
//!
//! # Generated answers
//! Deterministic: the text comes from a hash of the model and conversation, so the same
//! request always gets the same answer (streamed or not), `reply_tokens` words starting with
//! `[<model>]`. With tools, and a conversation ending in a user turn (or a forced tool
//! choice), the answer is one call to the first (or forced) tool with arguments built from
//! its JSON schema. After a tool result, the answer quotes the result. Usage: input tokens
//! ≈ characters of every string in the prompt (text, roles, tool definitions) / 4, output
//! tokens = generated words.

mod anthropic;
mod api;
mod fault;
mod handle;
mod model;
mod oauth;
mod openai;
mod server;
pub mod slack;
mod sse;
mod util;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use fault::{Fault, FaultRule, FaultRuleError, FaultStatus};
pub use handle::{DEFAULT_RECORD_LIMIT, RecordedRequest, SimHandle, SimStats};
pub use oauth::{DEFAULT_OAUTH_EXPIRES_IN, OAUTH_TOKEN_PATH, OAuthStats};
pub use server::{SimServer, serve, spawn};
pub use util::key_fingerprint;

/// Which API a simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimKind {
    Anthropic,
    #[serde(rename = "openai")]
    OpenAi,
}

impl fmt::Display for SimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SimKind::Anthropic => "anthropic",
            SimKind::OpenAi => "openai",
        })
    }
}

/// The name was neither `anthropic` nor `openai`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown simulator kind {0:?}; expected \"anthropic\" or \"openai\"")]
pub struct UnknownKind(pub String);

impl FromStr for SimKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "anthropic" => Ok(SimKind::Anthropic),
            "openai" => Ok(SimKind::OpenAi),
            other => Err(UnknownKind(other.to_owned())),
        }
    }
}

/// How a simulator behaves when no fault is in force.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub kind: SimKind,
    /// Keys accepted; empty = any non-empty key (a missing key is still a 401).
    pub accepted_keys: Vec<String>,
    /// Wait before the response head of every answer (errors included).
    pub latency: Duration,
    /// Streams: wait between the opening events and the first content delta.
    pub ttft: Duration,
    /// Streams: pacing of the content deltas (one delta ≈ one token); 0 or infinite = as
    /// fast as possible.
    pub tokens_per_sec: f64,
    /// Length of generated text answers, in words (≈ tokens).
    pub reply_tokens: u32,
    /// Listed by `GET /v1/models`; requests for other models get the API's 404. Empty =
    /// accept any model.
    pub models: Vec<String>,
    /// Prompts longer than this many tokens (≈ characters / 4) get the API's "context too
    /// long" 400.
    pub context_window: u32,
    /// How many requests [`SimHandle::requests`] keeps (oldest dropped first); 0 = none.
    pub record_limit: usize,
}

impl SimConfig {
    /// Defaults for `kind`.
    pub fn new(kind: SimKind) -> Self {
        match kind {
            SimKind::Anthropic => Self::anthropic(),
            SimKind::OpenAi => Self::openai(),
        }
    }

    /// An Anthropic simulator serving `claude-opus-4-6`, `claude-sonnet-4-5` and
    /// `claude-haiku-4-5` with a 200k window, no latency, any key.
    pub fn anthropic() -> Self {
        SimConfig {
            kind: SimKind::Anthropic,
            accepted_keys: Vec::new(),
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            tokens_per_sec: 0.0,
            reply_tokens: 24,
            models: ["claude-opus-4-6", "claude-sonnet-4-5", "claude-haiku-4-5"].map(String::from).to_vec(),
            context_window: 200_000,
            record_limit: DEFAULT_RECORD_LIMIT,
        }
    }

    /// An OpenAI simulator serving `gpt-5.3-codex`, `gpt-5`, `gpt-4.1` and `gpt-4o-mini` with
    /// a 128k window, no latency, any key.
    pub fn openai() -> Self {
        SimConfig {
            kind: SimKind::OpenAi,
            models: ["gpt-5.3-codex", "gpt-5", "gpt-4.1", "gpt-4o-mini"].map(String::from).to_vec(),
            context_window: 128_000,
            ..Self::anthropic()
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::anthropic()
    }
}
