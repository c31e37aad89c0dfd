//! flotilla's configuration: TOML in the shape of DESIGN.md, parsed into raw structs and then
//! checked into a [`Config`] by one function that reports every problem with its path.

mod check;
mod raw;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

pub use check::{ConfigError, ConfigErrors, Env, Position, StoreSecrets, StoredAuth, load_config, parse_config};
pub use report::render_check_report;

/// A checked configuration. Only [`parse_config`] builds one.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub router: RouterConfig,
    /// Providers by name (the `X` of `[providers.X]`).
    pub providers: BTreeMap<String, Provider>,
    /// The default chain (`agents.defaults.model`), if configured.
    pub default_chain: Option<Chain>,
    /// Agents in file order (`[[agents.list]]`).
    pub agents: Vec<Agent>,
    /// Named chains (`[chains.NAME]`), addressable as a `model` by clients.
    pub chains: BTreeMap<String, Chain>,
    /// Slack apps by name (`[slack.NAME]`); used by the Slack channel.
    pub slack: BTreeMap<String, SlackApp>,
}

impl Config {
    /// The chain a client names as `model`: an agent id, a `[chains.NAME]`, or
    /// `"agents.defaults"` for the default chain. These names never collide (the checker
    /// rejects a chain named like an agent), so the lookup order does not matter.
    pub fn find_chain(&self, name: &str) -> Option<&Chain> {
        if let Some(agent) = self.agents.iter().find(|a| a.id == name) {
            return Some(&agent.chain);
        }
        if let Some(chain) = self.chains.get(name) {
            return Some(chain);
        }
        self.default_chain.as_ref().filter(|c| c.name == name)
    }
}

/// `[gateway]`: how the compatible endpoints are served.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Default `127.0.0.1:8080`. A non-loopback address requires at least one key.
    pub listen: SocketAddr,
    /// Client keys accepted as `Authorization: Bearer` or `x-api-key`. Empty = no auth
    /// (then the gateway must listen on loopback only).
    pub keys: Vec<SecretString>,
    /// Where the JSON log goes; default `$XDG_STATE_HOME/flotilla/gateway.log` resolved by
    /// the binary when `None`. A relative path in the file is joined to the `base_dir` given
    /// to [`parse_config`] (the config file's directory for [`load_config`]).
    pub log_file: Option<PathBuf>,
    /// Where the journal lives; default `$XDG_STATE_HOME/flotilla` resolved by the binary.
    pub data_dir: Option<PathBuf>,
}

/// `[router]`: failover timing. Every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Deadline for the first byte of an upstream answer (per attempt). Default 30 s.
    pub ttfb_timeout: Duration,
    /// Deadline for a whole request, all attempts included. Default 300 s.
    pub request_timeout: Duration,
    /// Consecutive failures that open a breaker. Default 3.
    pub breaker_threshold: u32,
    /// Cooldown after an overload (529/503/overloaded_error). Default 15 s.
    pub overload_cooldown: Duration,
    /// Cooldown after transient failures (5xx, connect errors). Default 5 s.
    pub transient_cooldown: Duration,
    /// Cooldown for a credential rejected with 401/403 that could not be refreshed. Default 300 s.
    pub auth_cooldown: Duration,
    /// Cooldown for a credential out of money (402, insufficient_quota). Default 3 h.
    pub billing_cooldown: Duration,
    /// Cap on a `retry-after` taken as cooldown. Default 300 s.
    pub max_retry_after: Duration,
    /// Cooldown for a 429 without `retry-after`. Default 30 s.
    pub rate_limit_cooldown: Duration,
    /// Whether transient failures are retried once (with jitter) on the same candidate. Default true.
    pub retry_transient: bool,
    /// Base of the jittered retry delay. Default 100 ms.
    pub retry_backoff: Duration,
}

/// `api = ...` of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderApi {
    Anthropic,
    OpenAi,
    /// Ollama, vLLM, llama.cpp and similar: Chat Completions only.
    OpenAiCompatible,
}

impl ProviderApi {
    /// The name as written in the config (`anthropic`, `openai`, `openai-compatible`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderApi::Anthropic => "anthropic",
            ProviderApi::OpenAi => "openai",
            ProviderApi::OpenAiCompatible => "openai-compatible",
        }
    }
}

impl std::fmt::Display for ProviderApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which wire API to use for a model of an `openai` provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireApi {
    Messages,
    ChatCompletions,
    Responses,
}

impl WireApi {
    /// `messages`, `chat-completions` or `responses` (the config's `wire` spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            WireApi::Messages => "messages",
            WireApi::ChatCompletions => "chat-completions",
            WireApi::Responses => "responses",
        }
    }
}

impl std::fmt::Display for WireApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[providers.NAME]`.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub api: ProviderApi,
    /// Without trailing slash, e.g. `https://api.anthropic.com`. Paths such as `/v1/messages`
    /// are appended by the client.
    pub base_url: String,
    /// Credentials in the order they are tried (from `auth = [...]`). Empty = send no key
    /// (local servers).
    pub credentials: Vec<Credential>,
    /// Optional per-model facts (`[providers.NAME.models.MODEL]`).
    pub models: BTreeMap<String, ModelInfo>,
    /// Extra headers sent on every upstream request (e.g. `anthropic-version` overrides).
    pub headers: BTreeMap<String, String>,
}

impl Provider {
    /// The wire API used for `model` on this provider: Messages for `anthropic`; for `openai`
    /// the model's `wire` if set, else Responses for codex-class models and Chat Completions
    /// otherwise; Chat Completions for `openai-compatible`.
    pub fn wire_api(&self, model: &str) -> WireApi {
        match self.api {
            ProviderApi::Anthropic => WireApi::Messages,
            ProviderApi::OpenAiCompatible => WireApi::ChatCompletions,
            ProviderApi::OpenAi => match self.models.get(model).and_then(|m| m.wire) {
                Some(w) => w,
                None if model.contains("codex") => WireApi::Responses,
                None => WireApi::ChatCompletions,
            },
        }
    }
}

/// `[providers.NAME.models.MODEL]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    /// Context window in tokens, used to pick a larger model after "context too long".
    pub context_window: Option<u32>,
    /// Override of the wire API (`wire = "responses" | "chat-completions"`).
    pub wire: Option<WireApi>,
}

/// A credential (auth profile) resolved to its secret.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The profile name (`[auth.NAME]`); the only thing ever logged about a credential.
    pub name: String,
    pub kind: CredentialKind,
    pub secret: SecretString,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CredentialKind {
    /// Sent as `x-api-key` (Anthropic) or `Authorization: Bearer` (OpenAI).
    ApiKey,
    /// An OAuth access token, sent as `Authorization: Bearer`; `expires_at` if known.
    OAuth { expires_at: Option<SystemTime> },
}

/// `provider/model`, both parts non-empty; the model part may itself contain `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// An ordered failover chain: primary first, then fallbacks. Never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// `agents.defaults`, an agent id, or a chain name: what a client can write as `model`.
    pub name: String,
    pub candidates: Vec<ModelRef>,
}

/// `[[agents.list]]` with its chain resolved (default fallbacks inherited unless the agent
/// wrote `fallbacks = []` or its own list).
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub chain: Chain,
    pub system_prompt: Option<String>,
    /// The Slack app name (`[slack.NAME]`) this agent talks through.
    pub slack: Option<String>,
    /// The fleet node this agent prefers to run on (`node = "NAME"`); otherwise agents are
    /// spread over the live nodes.
    pub node: Option<String>,
}

/// `[slack.NAME]`; tokens are references resolved by the Slack channel (`env:VAR`,
/// `file:PATH`, or `secret:PATH` in the cluster store).
#[derive(Debug, Clone)]
pub struct SlackApp {
    pub name: String,
    /// The references as written (`env:…`, `file:…`, `secret:…`).
    pub app_token: String,
    pub bot_token: String,
    /// The Web API base, `https://slack.com/api` unless pointed at a simulator.
    pub api_base: String,
    /// The tokens, resolved when written as `env:`/`file:`; otherwise why not (an unset
    /// variable, a `secret:` reference for the cluster store). Only nodes running the agent
    /// need them, so an unresolved token is not a config error.
    pub app_secret: Result<SecretString, String>,
    pub bot_secret: Result<SecretString, String>,
}
