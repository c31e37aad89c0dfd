//! The checker: raw TOML in, a checked [`Config`] or every problem (with its path and, where it
//! can, what was probably meant) out. Secrets are resolved here, against an [`Env`] passed in.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::raw::{
    self, RawAgent, RawApi, RawAuth, RawAuthKind, RawConfig, RawDuration, RawGateway, RawModelSpec, RawProvider,
    RawRouter, RawSlack, RawWire, join_key, quoted_list,
};
use crate::{
    Agent, Chain, Config, Credential, CredentialKind, GatewayConfig, ModelInfo, ModelRef, Provider, ProviderApi,
    RouterConfig, SlackApp, WireApi,
};

/// Exit code for a bad configuration (`EX_CONFIG` from sysexits.h).
const EXIT_CONFIG: i32 = 78;

/// Where in the file a problem is: 1-based line, and column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One problem in a configuration. Displayed as
/// `agents.list[3].model.fallbacks[0]: unknown provider "opnai"; did you mean "openai"?`,
/// followed by ` (line L, column C)` when the position is known. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}{}", Head(path), Tail(self))]
pub struct ConfigError {
    /// The TOML path of the offending key (`providers.anthropic.base_url`); empty for syntax
    /// errors, where `position` says where.
    pub path: String,
    /// Lowercase, without trailing period.
    pub message: String,
    /// The name that was probably meant (a provider, field, profile, ...), shown as
    /// `did you mean "..."?`.
    pub suggestion: Option<String>,
    /// Known for TOML syntax errors and shape errors (unknown field, wrong type, ...); the
    /// semantic checks report a path only.
    pub position: Option<Position>,
}

/// `path: ` before a [`ConfigError`]'s message, or nothing for a syntax error without path.
struct Head<'a>(&'a str);

impl fmt::Display for Head<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { Ok(()) } else { write!(f, "{}: ", self.0) }
    }
}

/// The optional tail of a [`ConfigError`]'s message: suggestion, then position.
struct Tail<'a>(&'a ConfigError);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.0.suggestion {
            write!(f, "; did you mean \"{s}\"?")?;
        }
        if let Some(p) = self.0.position {
            write!(f, " (line {}, column {})", p.line, p.column)?;
        }
        Ok(())
    }
}

/// Every problem found in one configuration (never empty), in the order they were found.
/// Displayed one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always false for an error returned by this crate; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The process exit code for a command that failed on this configuration (78, `EX_CONFIG`).
    pub fn exit_code(&self) -> i32 {
        EXIT_CONFIG
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// The environment variables a config is checked against. Passed in rather than read, so tests
/// never touch the process environment. `Debug` prints names only: values are often secrets.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Set when the config is read on a fleet node: the cluster store's secrets and credentials.
    store: Option<StoreSecrets>,
}

/// What a fleet node has read (and decrypted) from the cluster store: `secret:PATH` values and
/// auth profiles added with `flotilla auth add`. Values never appear in `Debug`.
#[derive(Clone, Default)]
pub struct StoreSecrets {
    /// `secret:PATH` → value.
    pub secrets: BTreeMap<String, SecretString>,
    /// Auth profile name → credential (used when `[auth.NAME]` is not in the TOML).
    pub auth: BTreeMap<String, StoredAuth>,
}

/// An auth profile kept in the cluster store.
#[derive(Clone)]
pub struct StoredAuth {
    pub provider: String,
    pub kind: CredentialKind,
    pub secret: SecretString,
}

impl fmt::Debug for StoreSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSecrets")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("auth", &self.auth.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Env {
    /// The current process environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        let vars =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        Self { vars, store: None }
    }

    /// Exactly these variables, e.g. `Env::from_pairs([("ANTHROPIC_API_KEY", "sk-test")])`.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Self { vars, store: None }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The same variables plus the cluster store's secrets and auth profiles: `secret:PATH`
    /// references then resolve (anywhere a secret is written), and a provider may list an auth
    /// profile that lives only in the store.
    pub fn with_store(mut self, store: StoreSecrets) -> Self {
        self.store = Some(store);
        self
    }

    pub fn store(&self) -> Option<&StoreSecrets> {
        self.store.as_ref()
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Parses and checks a configuration. `env` resolves `env:VAR` references; relative
/// `file:PATH` references (and a relative `gateway.log_file`) are resolved against `base_dir`,
/// normally the directory of the config file. Returns every problem, not just the first.
pub fn parse_config(text: &str, env: &Env, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let raw = raw::parse(text, &mut errors);
    let mut checker = Checker { env, base_dir, errors };
    let config = raw.and_then(|raw| checker.check(&raw));
    // A reference is checked once per profile and again when a provider resolves it; the
    // user should read each problem once.
    let mut seen = std::collections::HashSet::new();
    checker.errors.retain(|e| seen.insert(e.to_string()));
    match config {
        Some(config) if checker.errors.is_empty() => Ok(config),
        _ => {
            if checker.errors.is_empty() {
                // Unreachable by construction (every `None` pushes an error first), but an
                // empty error list must never be mistaken for success.
                checker.err("", "configuration could not be checked");
            }
            Err(ConfigErrors { errors: checker.errors })
        }
    }
}

/// Reads `path` and checks it with [`parse_config`], resolving relative paths against the
/// file's directory.
pub fn load_config(path: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        errors: vec![ConfigError {
            path: path.display().to_string(),
            message: format!("cannot read config file: {e}"),
            suggestion: None,
            position: None,
        }],
    })?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parse_config(&text, env, base_dir)
}

/// The closest of `options` to `name`, compared case-insensitively: a Jaro-Winkler similarity
/// of at least 0.8, or (for names of three or more characters) a single edit or transposition,
/// which Jaro-Winkler scores poorly on short names (`evn` / `env`).
pub(crate) fn closest<'a>(name: &str, options: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_lowercase();
    options
        .into_iter()
        .filter(|o| *o != name)
        .filter_map(|o| {
            let other = o.to_lowercase();
            let score = strsim::jaro_winkler(&lower, &other);
            let one_edit = lower.chars().count() >= 3 && strsim::damerau_levenshtein(&lower, &other) <= 1;
            (score >= 0.8 || one_edit).then_some((one_edit, score, o))
        })
        // One edit away beats a shared prefix; then the higher similarity wins.
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, o)| o.to_owned())
}

/// A parsed secret reference.
enum SecretRef<'a> {
    Env(&'a str),
    File(&'a str),
    /// `secret:PATH` in the cluster store; resolved on fleet nodes (see [`Env::with_store`]).
    Store(&'a str),
}

/// Where a resolved secret came from, for error messages (never the value).
struct Resolved {
    value: String,
    source: String,
}

struct Checker<'a> {
    env: &'a Env,
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

/// What the reference checks need to know about the providers, including ones that failed to
/// parse (they exist, so references to them are not "unknown").
struct Known<'r> {
    /// Provider name → the model names of its `[providers.X.models.*]` tables.
    providers: BTreeMap<&'r str, Vec<&'r str>>,
}

/// A model spec with its references checked.
struct Spec {
    /// `None` if the primary was invalid (already reported).
    primary: Option<ModelRef>,
    /// `None` = not written; entries are `None` where invalid (already reported).
    fallbacks: Option<Vec<(Option<ModelRef>, String)>>,
}

impl Spec {
    /// The chain when every reference is valid.
    fn chain(&self, name: &str, inherited: &[ModelRef]) -> Option<Chain> {
        let primary = self.primary.clone()?;
        let fallbacks: Vec<ModelRef> = match &self.fallbacks {
            Some(list) => list.iter().map(|(r, _)| r.clone()).collect::<Option<_>>()?,
            // Inherited fallbacks equal to this chain's own primary are dropped: the agent
            // asked for "my primary, then the usual failover", and trying one model twice in
            // a row is never what was meant.
            None => inherited.iter().filter(|r| **r != primary).cloned().collect(),
        };
        let mut candidates = vec![primary];
        candidates.extend(fallbacks);
        Some(Chain { name: name.to_owned(), candidates })
    }
}

impl Checker<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.suggest(path, message, None);
    }

    fn suggest(&mut self, path: &str, message: impl Into<String>, suggestion: Option<String>) {
        self.errors.push(ConfigError { path: path.to_owned(), message: message.into(), suggestion, position: None });
    }

    fn check(&mut self, raw: &RawConfig) -> Option<Config> {
        let gateway = raw.gateway.as_ref().and_then(|g| self.gateway(g));
        let router = raw.router.as_ref().map(|r| self.router(r));

        let known = Known {
            providers: raw
                .providers
                .iter()
                .map(|(name, p)| {
                    let models =
                        p.iter().flat_map(|p| p.models.iter().flat_map(|m| m.keys())).map(String::as_str).collect();
                    (name.as_str(), models)
                })
                .collect(),
        };

        for (name, auth) in &raw.auth {
            if let Some(auth) = auth {
                self.auth_profile(name, auth, &known);
            }
        }
        let mut providers = BTreeMap::new();
        for (name, provider) in &raw.providers {
            if let Some(p) = provider.as_ref().and_then(|p| self.provider(name, p, &raw.auth)) {
                providers.insert(name.clone(), p);
            }
        }
        let mut slack = BTreeMap::new();
        for (name, app) in &raw.slack {
            if let Some(app) = app.as_ref().and_then(|a| self.slack_app(name, a)) {
                slack.insert(name.clone(), app);
            }
        }

        let (default_chain, inherited) = self.defaults(raw, &known);
        let agents = self.agents(raw, &known, default_chain.as_ref(), &inherited);
        let chains = self.chains(raw, &known);

        if !self.errors.is_empty() {
            return None;
        }
        Some(Config { gateway: gateway?, router: router?, providers, default_chain, agents, chains, slack })
    }

    // ----- [gateway] -----

    fn gateway(&mut self, g: &RawGateway) -> Option<GatewayConfig> {
        let listen_text = g.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                // "localhost" is the usual slip; an IP is required so the loopback check below
                // does not depend on name resolution.
                let suggestion = listen_text.strip_prefix("localhost:").map(|port| format!("127.0.0.1:{port}"));
                self.suggest(
                    "gateway.listen",
                    format!("invalid listen address \"{listen_text}\": expected IP:PORT such as \"127.0.0.1:8080\""),
                    suggestion,
                );
                None
            }
        };
        let written_keys = g.keys.as_deref().unwrap_or_default();
        let mut keys = Vec::new();
        for (i, key) in written_keys.iter().enumerate() {
            let path = format!("gateway.keys[{i}]");
            if let Some(r) = self.resolve_secret(key, &path)
                && self.check_token(&r, &path)
            {
                keys.push(SecretString::from(r.value));
            }
        }
        if let Some(addr) = listen
            && !addr.ip().is_loopback()
            && written_keys.is_empty()
        {
            self.err("gateway.listen", format!("refusing to listen on {addr} without [gateway].keys"));
        }
        let log_file = match &g.log_file {
            Some(p) if p.as_os_str().is_empty() => {
                self.err("gateway.log_file", "log_file is empty");
                None
            }
            Some(p) => Some(self.base_dir.join(p)),
            None => None,
        };
        let data_dir = match &g.data_dir {
            Some(p) if p.as_os_str().is_empty() => {
                self.err("gateway.data_dir", "data_dir is empty");
                None
            }
            Some(p) => Some(self.base_dir.join(p)),
            None => None,
        };
        Some(GatewayConfig { listen: listen?, keys, log_file, data_dir })
    }

    // ----- [router] -----

    fn router(&mut self, r: &RawRouter) -> RouterConfig {
        let d = |s| Duration::from_secs(s);
        let ttfb_timeout = self.duration(&r.ttfb_timeout, "router.ttfb_timeout", d(30));
        let request_timeout = self.duration(&r.request_timeout, "router.request_timeout", d(300));
        for (value, path) in [(ttfb_timeout, "router.ttfb_timeout"), (request_timeout, "router.request_timeout")] {
            if value.is_zero() {
                self.err(path, "must be greater than zero");
            }
        }
        let breaker_threshold = r.breaker_threshold.unwrap_or(3);
        if breaker_threshold == 0 {
            self.err("router.breaker_threshold", "must be at least 1");
        }
        RouterConfig {
            ttfb_timeout,
            request_timeout,
            breaker_threshold,
            overload_cooldown: self.duration(&r.overload_cooldown, "router.overload_cooldown", d(15)),
            transient_cooldown: self.duration(&r.transient_cooldown, "router.transient_cooldown", d(5)),
            auth_cooldown: self.duration(&r.auth_cooldown, "router.auth_cooldown", d(300)),
            billing_cooldown: self.duration(&r.billing_cooldown, "router.billing_cooldown", d(3 * 3600)),
            max_retry_after: self.duration(&r.max_retry_after, "router.max_retry_after", d(300)),
            rate_limit_cooldown: self.duration(&r.rate_limit_cooldown, "router.rate_limit_cooldown", d(30)),
            retry_transient: r.retry_transient.unwrap_or(true),
            retry_backoff: self.duration(&r.retry_backoff, "router.retry_backoff", Duration::from_millis(100)),
        }
    }

    fn duration(&mut self, value: &Option<RawDuration>, path: &str, default: Duration) -> Duration {
        match value {
            None => default,
            Some(RawDuration::Text(text)) => match parse_duration(text) {
                Some(d) => d,
                None => {
                    self.err(
                        path,
                        format!(
                            "invalid duration \"{text}\": expected a number with a unit (ms, s, m, h, d) such as \"250ms\", \"30s\", \"5m\" or \"3h\""
                        ),
                    );
                    default
                }
            },
            Some(RawDuration::Bare(n)) => {
                let suggestion = (*n >= 0).then(|| format!("{n}s"));
                self.suggest(path, "a duration is a string with a unit (ms, s, m, h, d)", suggestion);
                default
            }
        }
    }

    // ----- [auth.*] -----

    /// Checks what can be checked for every profile, listed or not. Secrets are resolved only
    /// for profiles a provider lists (in [`Checker::provider`]), so a spare profile whose
    /// variable is unset on this machine does not stop the gateway.
    fn auth_profile(&mut self, name: &str, auth: &RawAuth, known: &Known<'_>) {
        let path = join_key("auth", name);
        if !known.providers.contains_key(auth.provider.as_str()) {
            self.unknown(
                &join_key(&path, "provider"),
                "provider",
                &auth.provider,
                known.providers.keys().copied(),
                "[providers.*]",
            );
        }
        if let Some(ts) = &auth.expires_at {
            let ts_path = join_key(&path, "expires_at");
            if auth.kind != RawAuthKind::OAuth {
                self.err(&ts_path, "expires_at is only for type = \"oauth\"");
            } else if parse_rfc3339(&ts.0).is_none() {
                self.err(
                    &ts_path,
                    format!(
                        "invalid timestamp \"{}\": expected RFC 3339 with a time zone, such as \"2026-12-01T00:00:00Z\"",
                        ts.0
                    ),
                );
            }
        }
        self.secret_ref(&auth.key, &join_key(&path, "key"), self.env.store.is_some());
    }

    fn credential(&mut self, name: &str, auth: &RawAuth) -> Option<Credential> {
        let path = join_key(&join_key("auth", name), "key");
        let resolved = self.resolve_secret(&auth.key, &path)?;
        let (kind, secret) = match auth.kind {
            RawAuthKind::ApiKey => {
                if !self.check_token(&resolved, &path) {
                    return None;
                }
                (CredentialKind::ApiKey, resolved.value)
            }
            RawAuthKind::OAuth => {
                let (token, expires_at) = match parse_oauth(&resolved.value) {
                    Ok(parsed) => parsed,
                    Err(why) => {
                        self.err(&path, format!("{} {why}", resolved.source));
                        return None;
                    }
                };
                let checked = Resolved { value: token, source: resolved.source };
                if !self.check_token(&checked, &path) {
                    return None;
                }
                // The TOML override wins over what the token file says.
                let expires_at = match &auth.expires_at {
                    Some(ts) => parse_rfc3339(&ts.0),
                    None => expires_at,
                };
                (CredentialKind::OAuth { expires_at }, checked.value)
            }
        };
        Some(Credential { name: name.to_owned(), kind, secret: SecretString::from(secret) })
    }

    // ----- [providers.*] -----

    fn provider(
        &mut self,
        name: &str,
        p: &RawProvider,
        profiles: &BTreeMap<String, Option<RawAuth>>,
    ) -> Option<Provider> {
        let path = join_key("providers", name);
        let api = match p.api {
            RawApi::Anthropic => ProviderApi::Anthropic,
            RawApi::OpenAi => ProviderApi::OpenAi,
            RawApi::OpenAiCompatible => ProviderApi::OpenAiCompatible,
        };
        let base_url = match (&p.base_url, api) {
            (Some(url), _) => {
                let url_path = join_key(&path, "base_url");
                match check_base_url(url) {
                    Ok(url) => Some(url),
                    Err((message, suggestion)) => {
                        self.suggest(&url_path, message, suggestion);
                        None
                    }
                }
            }
            (None, ProviderApi::Anthropic) => Some("https://api.anthropic.com".to_owned()),
            (None, ProviderApi::OpenAi) => Some("https://api.openai.com".to_owned()),
            (None, ProviderApi::OpenAiCompatible) => {
                self.err(&path, "missing base_url (required for api = \"openai-compatible\")");
                None
            }
        };

        let mut headers = BTreeMap::new();
        for (header, value) in p.headers.iter().flatten() {
            let h_path = join_key(&join_key(&path, "headers"), header);
            let lower = header.to_ascii_lowercase();
            if header.is_empty() || !header.bytes().all(is_header_name_byte) {
                self.err(&h_path, format!("invalid header name \"{header}\""));
            } else if ["authorization", "proxy-authorization", "x-api-key", "api-key"].contains(&lower.as_str()) {
                // Header values are plain strings in the checked config (printed by Debug,
                // sent everywhere): credentials must go through auth profiles.
                self.err(
                    &h_path,
                    format!("\"{header}\" carries a credential: put it in an [auth.*] profile listed in auth = [...]"),
                );
            } else if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
                self.err(&h_path, "header value contains a line break or NUL");
            } else {
                headers.insert(header.clone(), value.clone());
            }
        }

        let mut models = BTreeMap::new();
        for (model, info) in p.models.iter().flatten() {
            let m_path = join_key(&join_key(&path, "models"), model);
            if info.context_window == Some(0) {
                self.err(&join_key(&m_path, "context_window"), "must be greater than zero");
            }
            let wire = info.wire.map(|w| match w {
                RawWire::Responses => WireApi::Responses,
                RawWire::ChatCompletions => WireApi::ChatCompletions,
            });
            if wire.is_some() && api != ProviderApi::OpenAi {
                let always = match api {
                    ProviderApi::Anthropic => "messages",
                    _ => "chat-completions",
                };
                self.err(
                    &join_key(&m_path, "wire"),
                    format!("wire is only for api = \"openai\"; this provider's api always uses {always}"),
                );
            }
            models.insert(model.clone(), ModelInfo { context_window: info.context_window, wire });
        }

        let mut credentials = Vec::new();
        let mut seen = BTreeMap::new();
        for (i, profile) in p.auth.iter().flatten().enumerate() {
            let a_path = format!("{}[{i}]", join_key(&path, "auth"));
            if let Some(first) = seen.insert(profile.as_str(), i) {
                self.err(&a_path, format!("auth profile \"{profile}\" is listed twice (also at auth[{first}])"));
                continue;
            }
            let stored = self.env.store.as_ref().and_then(|st| st.auth.get(profile.as_str()));
            match profiles.get(profile) {
                None if stored.is_some() => {
                    if let Some(sa) = stored {
                        // An empty provider: the profile's name is known but it could not be opened here
                        // (no key file on this machine); nodes check it for real.
                        if !sa.provider.is_empty() && sa.provider != name {
                            self.err(
                                &a_path,
                                format!(
                                    "auth profile \"{profile}\" in the cluster store is for provider \"{}\", not \"{name}\"",
                                    sa.provider
                                ),
                            );
                        } else {
                            credentials.push(Credential {
                                name: profile.clone(),
                                kind: sa.kind.clone(),
                                secret: sa.secret.clone(),
                            });
                        }
                    }
                }
                None => {
                    let stored_names =
                        self.env.store.as_ref().map(|st| st.auth.keys().map(String::as_str).collect::<Vec<_>>());
                    let mut names: Vec<&str> = profiles.keys().map(String::as_str).collect();
                    names.extend(stored_names.unwrap_or_default());
                    let place = if self.env.store.is_some() { "[auth.*] or the cluster store" } else { "[auth.*]" };
                    self.unknown(&a_path, "auth profile", profile, names.into_iter(), place)
                }
                // Failed to parse: already reported.
                Some(None) => {}
                Some(Some(auth)) if auth.provider != name => self.err(
                    &a_path,
                    format!(
                        "auth profile \"{profile}\" is for provider \"{}\" (auth.{profile}.provider), not \"{name}\"",
                        auth.provider
                    ),
                ),
                Some(Some(auth)) => {
                    if let Some(c) = self.credential(profile, auth) {
                        credentials.push(c);
                    }
                }
            }
        }

        Some(Provider { name: name.to_owned(), api, base_url: base_url?, credentials, models, headers })
    }

    // ----- [slack.*] -----

    fn slack_app(&mut self, name: &str, app: &RawSlack) -> Option<SlackApp> {
        let path = join_key("slack", name);
        let app_path = join_key(&path, "app_token");
        let bot_path = join_key(&path, "bot_token");
        let app_ref = self.secret_ref(&app.app_token, &app_path, true);
        let bot_ref = self.secret_ref(&app.bot_token, &bot_path, true);
        let (app_ok, bot_ok) = (app_ref.is_some(), bot_ref.is_some());
        let no_store = self.env.store.is_none();
        let app_is_store = no_store && matches!(app_ref, Some(SecretRef::Store(_)));
        let bot_is_store = no_store && matches!(bot_ref, Some(SecretRef::Store(_)));
        // Tokens are resolved here when they can be, but a token that cannot be resolved is not
        // a config error: only nodes that run the agent need it, and they say so at start.
        let app_secret = self.quiet_resolve(&app.app_token, &app_path, app_is_store).and_then(|t| {
            if t.expose_secret().starts_with("xapp-") {
                Ok(t)
            } else {
                Err(format!("{app_path}: a Socket Mode app-level token starts with \"xapp-\" (Basic Information → App-Level Tokens)"))
            }
        });
        let bot_secret = self.quiet_resolve(&app.bot_token, &bot_path, bot_is_store);
        let api_base = app.api_base.clone().unwrap_or_else(|| "https://slack.com/api".to_owned());
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            self.err(&join_key(&path, "api_base"), format!("api_base must be an http(s) URL, got \"{api_base}\""));
        }
        (app_ok && bot_ok).then(|| SlackApp {
            name: name.to_owned(),
            app_token: app.app_token.clone(),
            bot_token: app.bot_token.clone(),
            api_base: api_base.trim_end_matches('/').to_owned(),
            app_secret,
            bot_secret,
        })
    }

    // ----- agents and chains -----

    /// The default chain and the fallbacks agents inherit from it.
    fn defaults(&mut self, raw: &RawConfig, known: &Known<'_>) -> (Option<Chain>, Vec<ModelRef>) {
        let Ok(Some(defaults)) = &raw.defaults else {
            return (None, Vec::new());
        };
        let Some(spec) = &defaults.model else {
            return (None, Vec::new());
        };
        let spec = self.spec(spec, "agents.defaults.model", known);
        let chain = spec.chain("agents.defaults", &[]);
        let inherited = chain.as_ref().map(|c| c.candidates[1..].to_vec()).unwrap_or_default();
        (chain, inherited)
    }

    fn agents(
        &mut self,
        raw: &RawConfig,
        known: &Known<'_>,
        default_chain: Option<&Chain>,
        inherited: &[ModelRef],
    ) -> Vec<Agent> {
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        let mut agents = Vec::new();
        for (i, agent) in raw.agents.iter().enumerate() {
            let Some(agent) = agent else { continue };
            let path = format!("agents.list[{i}]");
            let id = agent.id.as_str();
            let id_ok = self.check_name(id, &join_key(&path, "id"), "agent id");
            if id_ok && let Some(first) = ids.insert(id, i) {
                self.err(&join_key(&path, "id"), format!("duplicate agent id \"{id}\" (also agents.list[{first}].id)"));
            }
            if let Some(app) = &agent.slack
                && !raw.slack.contains_key(app)
            {
                self.unknown(
                    &join_key(&path, "slack"),
                    "slack app",
                    app,
                    raw.slack.keys().map(String::as_str),
                    "[slack.*]",
                );
            }
            if let Some(chain) = self.agent_chain(agent, &path, raw, known, default_chain, inherited) {
                agents.push(Agent {
                    id: id.to_owned(),
                    chain,
                    system_prompt: agent.system_prompt.clone(),
                    slack: agent.slack.clone(),
                    node: agent.node.clone(),
                });
            }
        }
        agents
    }

    fn agent_chain(
        &mut self,
        agent: &RawAgent,
        path: &str,
        raw: &RawConfig,
        known: &Known<'_>,
        default_chain: Option<&Chain>,
        inherited: &[ModelRef],
    ) -> Option<Chain> {
        match &agent.model {
            Some(spec) => {
                let spec = self.spec(spec, &join_key(path, "model"), known);
                spec.chain(&agent.id, inherited)
            }
            None => match (default_chain, &raw.defaults) {
                (Some(chain), _) => Some(Chain { name: agent.id.clone(), candidates: chain.candidates.clone() }),
                // The defaults failed to parse or check: already reported.
                (None, Err(())) => None,
                (None, Ok(Some(d))) if d.model.is_some() => None,
                (None, Ok(_)) => {
                    self.err(
                        path,
                        format!(
                            "agent \"{}\" has no model and there is no [agents.defaults.model]: write model = \"provider/model\"",
                            agent.id
                        ),
                    );
                    None
                }
            },
        }
    }

    fn chains(&mut self, raw: &RawConfig, known: &Known<'_>) -> BTreeMap<String, Chain> {
        let agent_ids: BTreeMap<&str, usize> =
            raw.agents.iter().enumerate().filter_map(|(i, a)| Some((a.as_ref()?.id.as_str(), i))).collect();
        let mut chains = BTreeMap::new();
        for (name, spec) in &raw.chains {
            let path = join_key("chains", name);
            if self.check_name(name, &path, "chain name") {
                if let Some(i) = agent_ids.get(name.as_str()) {
                    self.err(
                        &path,
                        format!(
                            "chain name \"{name}\" is also an agent id (agents.list[{i}].id); clients could not tell them apart"
                        ),
                    );
                } else if name == "agents.defaults" {
                    self.err(&path, "\"agents.defaults\" is the name of the default chain");
                }
            }
            let Some(spec) = spec else { continue };
            let spec = self.spec(spec, &path, known);
            // A named chain has no inheritance: what is written is the whole chain.
            if let Some(chain) = spec.chain(name, &[]) {
                chains.insert(name.clone(), chain);
            }
        }
        chains
    }

    /// Ids and chain names are what clients write as `model`: non-empty, no `/` (that would
    /// read as `provider/model`), no whitespace.
    fn check_name(&mut self, name: &str, path: &str, what: &str) -> bool {
        if name.is_empty() {
            self.err(path, format!("{what} is empty"));
            false
        } else if name.contains('/') || name.chars().any(char::is_whitespace) {
            self.err(path, format!("{what} \"{name}\" must not contain '/' or whitespace"));
            false
        } else {
            true
        }
    }

    /// Checks every reference of a model spec and the duplicates among them.
    fn spec(&mut self, spec: &RawModelSpec, path: &str, known: &Known<'_>) -> Spec {
        let (primary_text, primary_path, fallbacks) = match spec {
            RawModelSpec::Plain(text) => (text, path.to_owned(), None),
            RawModelSpec::Table(t) => (&t.primary, join_key(path, "primary"), t.fallbacks.as_ref()),
        };
        let primary = self.model_ref(primary_text, &primary_path, known);
        let fallbacks = fallbacks.map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, text)| {
                    let f_path = format!("{}[{i}]", join_key(path, "fallbacks"));
                    (self.model_ref(text, &f_path, known), f_path)
                })
                .collect::<Vec<_>>()
        });
        let mut seen: Vec<(&ModelRef, &str)> = Vec::new();
        if let Some(p) = &primary {
            seen.push((p, primary_path.as_str()));
        }
        for (r, f_path) in fallbacks.iter().flatten() {
            let Some(r) = r else { continue };
            match seen.iter().position(|(s, _)| *s == r) {
                Some(0) if primary.is_some() => {
                    self.err(f_path, format!("fallback \"{r}\" is the same as the primary"));
                }
                Some(j) => {
                    let first = seen[j].1.to_owned();
                    self.err(f_path, format!("\"{r}\" appears twice in the chain (also at {first})"));
                }
                None => seen.push((r, f_path)),
            }
        }
        Spec { primary, fallbacks }
    }

    fn model_ref(&mut self, text: &str, path: &str, known: &Known<'_>) -> Option<ModelRef> {
        let parts = text.split_once('/').filter(|(p, m)| !p.is_empty() && !m.is_empty());
        let Some((provider, model)) = parts else {
            // A bare model name: if exactly one provider describes it, that is the likely fix.
            let owners: Vec<&str> =
                known.providers.iter().filter(|(_, models)| models.contains(&text)).map(|(p, _)| *p).collect();
            let suggestion = match owners.as_slice() {
                [only] => Some(format!("{only}/{text}")),
                _ => None,
            };
            self.suggest(path, format!("invalid model reference \"{text}\": expected \"provider/model\""), suggestion);
            return None;
        };
        if text.chars().any(char::is_whitespace) {
            self.err(path, format!("invalid model reference \"{text}\": must not contain whitespace"));
            return None;
        }
        if !known.providers.contains_key(provider) {
            self.unknown(path, "provider", provider, known.providers.keys().copied(), "[providers.*]");
            return None;
        }
        Some(ModelRef { provider: provider.to_owned(), model: model.to_owned() })
    }

    /// `unknown provider "opnai"` with the closest existing name as suggestion.
    fn unknown<'n>(
        &mut self,
        path: &str,
        what: &str,
        name: &str,
        existing: impl Iterator<Item = &'n str> + Clone,
        section: &str,
    ) {
        let suggestion = closest(name, existing.clone());
        let message = if existing.clone().next().is_none() {
            format!("unknown {what} \"{name}\" (no {section} sections are defined)")
        } else if suggestion.is_none() {
            let names: Vec<&str> = existing.collect();
            format!("unknown {what} \"{name}\" (defined: {})", quoted_list(&names))
        } else {
            format!("unknown {what} \"{name}\"")
        };
        self.suggest(path, message, suggestion);
    }

    // ----- secrets -----

    /// Checks the syntax of a secret reference. `secret:` is allowed only where the Slack
    /// channel resolves it. Messages never include the text of a literal: it is a secret.
    fn secret_ref<'t>(&mut self, text: &'t str, path: &str, allow_store: bool) -> Option<SecretRef<'t>> {
        let forms =
            if allow_store { "\"env:VAR\", \"file:PATH\" or \"secret:PATH\"" } else { "\"env:VAR\" or \"file:PATH\"" };
        if let Some(var) = text.strip_prefix("env:") {
            let valid = var.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.err(path, format!("invalid environment variable name \"{var}\""));
                return None;
            }
            return Some(SecretRef::Env(var));
        }
        if let Some(file) = text.strip_prefix("file:") {
            if file.trim().is_empty() {
                self.err(path, "file: reference has no path");
                return None;
            }
            return Some(SecretRef::File(file));
        }
        if let Some(key) = text.strip_prefix("secret:") {
            if !allow_store {
                self.err(path, format!("secret: references are resolved only on fleet nodes (gateway --store) and for slack tokens; write {forms}"));
                return None;
            }
            if key.trim().is_empty() {
                self.err(path, "secret: reference has no path");
                return None;
            }
            return Some(SecretRef::Store(key));
        }
        // Something like "evn:VAR": a scheme is short and alphabetic, unlike a pasted key, so
        // it is safe to echo.
        if let Some((scheme, _)) = text.split_once(':')
            && (1..=10).contains(&scheme.len())
            && scheme.chars().all(|c| c.is_ascii_alphabetic())
        {
            let schemes: &[&str] = if allow_store { &["env", "file", "secret"] } else { &["env", "file"] };
            let suggestion = closest(scheme, schemes.iter().copied()).map(|s| format!("{s}:"));
            self.suggest(path, format!("unknown secret reference \"{scheme}:\" (write {forms})"), suggestion);
            return None;
        }
        self.err(path, format!("a literal secret is not allowed in the config file; write {forms}"));
        None
    }

    /// Resolves a secret without recording errors: the error text comes back instead.
    fn quiet_resolve(&mut self, text: &str, path: &str, is_store: bool) -> Result<SecretString, String> {
        if is_store {
            return Err(format!(
                "{path}: \"{text}\" is kept in the cluster store: run the gateway with --store (a fleet node) to resolve it"
            ));
        }
        let before = self.errors.len();
        let resolved = self.resolve_secret(text, path);
        let errors: Vec<String> = self.errors.drain(before..).map(|e| e.to_string()).collect();
        match resolved {
            Some(r) => Ok(SecretString::from(r.value)),
            None => Err(errors.join("; ")),
        }
    }

    fn resolve_secret(&mut self, text: &str, path: &str) -> Option<Resolved> {
        let resolved = match self.secret_ref(text, path, self.env.store.is_some())? {
            SecretRef::Env(var) => {
                let source = format!("environment variable {var}");
                match self.env.get(var) {
                    None => {
                        self.err(path, format!("{source} is not set"));
                        return None;
                    }
                    Some(value) => Resolved { value: value.trim().to_owned(), source },
                }
            }
            SecretRef::File(file) => {
                let full = self.file_path(file, path)?;
                let source = format!("file {}", full.display());
                match std::fs::read_to_string(&full) {
                    Ok(content) => Resolved { value: content.trim().to_owned(), source },
                    Err(e) => {
                        self.err(path, format!("cannot read {source}: {e}"));
                        return None;
                    }
                }
            }
            SecretRef::Store(key) => {
                let source = format!("cluster store secret {key}");
                match self.env.store.as_ref().and_then(|st| st.secrets.get(key)) {
                    Some(value) => Resolved { value: value.expose_secret().trim().to_owned(), source },
                    None => {
                        self.err(
                            path,
                            format!("{source} does not exist; add it with `flotilla auth secret {key} --from-env VAR`"),
                        );
                        return None;
                    }
                }
            }
        };
        if resolved.value.is_empty() {
            self.err(path, format!("{} is empty", resolved.source));
            return None;
        }
        Some(resolved)
    }

    /// A secret ends up in an HTTP header: whitespace or control characters inside it mean
    /// the wrong thing was read (two keys in one file, a JSON document, ...).
    fn check_token(&mut self, r: &Resolved, path: &str) -> bool {
        if r.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(
                path,
                format!("{} holds whitespace or control characters inside the secret (more than one line?)", r.source),
            );
            false
        } else {
            true
        }
    }

    /// `~/x` against `HOME` from the passed-in environment; relative paths against `base_dir`.
    fn file_path(&mut self, file: &str, path: &str) -> Option<PathBuf> {
        if let Some(rest) = file.strip_prefix("~/") {
            let Some(home) = self.env.get("HOME") else {
                self.err(path, format!("cannot expand \"{file}\": HOME is not set"));
                return None;
            };
            return Some(Path::new(home).join(rest));
        }
        Some(self.base_dir.join(file))
    }
}

/// OAuth token file contents: a bare access token, or JSON in one of two shapes
/// (`{"access", "expires": ms}` as OpenClaw writes, `{"access_token", "expires_at": RFC 3339}`).
/// The error text completes "file X ..." and never includes the content.
fn parse_oauth(content: &str) -> Result<(String, Option<SystemTime>), String> {
    if !content.starts_with('{') {
        return Ok((content.to_owned(), None));
    }
    #[derive(Deserialize)]
    struct OAuthJson {
        access: Option<String>,
        access_token: Option<String>,
        /// Milliseconds since the epoch.
        expires: Option<serde_json::Number>,
        expires_at: Option<String>,
    }
    let json: OAuthJson = serde_json::from_str(content).map_err(|e| {
        // serde_json's message can quote values, so only the position is kept.
        format!(
            "is not a valid OAuth token file (JSON error at line {}, column {}): expected {{\"access\": ..., \"expires\": ms}} or {{\"access_token\": ..., \"expires_at\": RFC 3339}}",
            e.line(),
            e.column()
        )
    })?;
    let token =
        json.access.or(json.access_token).ok_or_else(|| "has no \"access\" or \"access_token\" field".to_owned())?;
    let expires_at = match (json.expires, json.expires_at) {
        (Some(ms), _) => {
            // Integers are exact; a fractional value (some writers use floats) is accepted too.
            let since_epoch = match ms.as_u64() {
                Some(ms) => Some(Duration::from_millis(ms)),
                None => ms.as_f64().and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok()),
            };
            let since_epoch = since_epoch
                .ok_or_else(|| "has an invalid \"expires\" (expected milliseconds since 1970)".to_owned())?;
            Some(UNIX_EPOCH + since_epoch)
        }
        (None, Some(ts)) => Some(parse_rfc3339(&ts).ok_or_else(|| {
            "has an invalid \"expires_at\" (expected RFC 3339 such as \"2026-12-01T00:00:00Z\")".to_owned()
        })?),
        (None, None) => None,
    };
    Ok((token, expires_at))
}

/// `http(s)://host[:port][/prefix]` without query or fragment, trailing slashes removed. An
/// error comes with a corrected URL when there is an obvious one.
fn check_base_url(url: &str) -> Result<String, (String, Option<String>)> {
    // `https://user:key@host` puts a credential in a plain string (printed by Debug, echoed
    // by every other message here), so it is refused before anything echoes the URL.
    let authority = url.split("://").nth(1).unwrap_or(url).split('/').next();
    if authority.is_some_and(|a| a.contains('@')) {
        return Err((
            "base_url must not contain credentials (user:password@); use an [auth.*] profile".to_owned(),
            None,
        ));
    }
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err((format!("base_url \"{url}\" has scheme \"{scheme}\"; only http and https are supported"), None));
    } else {
        return Err((
            format!("base_url \"{url}\" must start with http:// or https://"),
            Some(format!("https://{}", url.trim_end_matches('/'))),
        ));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((format!("base_url {url:?} contains whitespace"), None));
    }
    if url.contains('?') || url.contains('#') {
        return Err((format!("base_url \"{url}\" must not have a query or fragment"), None));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err((format!("base_url \"{url}\" has no host"), None));
    }
    let trimmed = url.trim_end_matches('/');
    // The client appends "/v1/messages", "/v1/chat/completions", ...: a base URL that already
    // ends in /v1 (as many OpenAI-compatible servers document it) would double it.
    if let Some(without) = trimmed.strip_suffix("/v1") {
        return Err((
            format!("base_url \"{url}\" must not end in /v1: the client appends \"/v1/...\" itself"),
            Some(without.to_owned()),
        ));
    }
    Ok(trimmed.to_owned())
}

/// RFC 7230 `tchar`.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `"250ms"`, `"30s"`, `"5m"`, `"3h"`, `"2d"`, and sums such as `"1h30m"` or `"1m 30s"`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = rest[unit_len..].trim_start();
    }
    Some(total)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `None` for anything else, including timestamps
/// without a time zone and times before 1970.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        if s.bytes().all(|c| c.is_ascii_digit()) { s.parse().ok() } else { None }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60 is a leap second; it is folded into the next second's neighbour.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let end = text[start..].find(|c: char| !c.is_ascii_digit()).map_or(text.len(), |n| start + n);
        if end == start {
            return None;
        }
        let frac = &text[start..end.min(start + 9)];
        nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - u32::try_from(frac.len()).ok()?);
        i = end;
    }
    let offset_secs = match text.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn rfc3339_timestamps_parse_against_known_epoch_values() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0));
        assert_eq!(parse_rfc3339("2000-02-29T12:00:00Z"), at(951_825_600));
        assert_eq!(parse_rfc3339("2024-03-01T00:00:00z"), at(1_709_251_200));
        assert_eq!(parse_rfc3339("1999-12-31 23:59:59Z"), at(946_684_799));
        assert_eq!(parse_rfc3339("2026-12-01T02:00:00+02:00"), at(1_796_083_200));
        assert_eq!(parse_rfc3339("2026-11-30T19:00:00-05:00"), at(1_796_083_200));
        assert_eq!(
            parse_rfc3339("2026-12-01T00:00:00.25Z"),
            Some(UNIX_EPOCH + Duration::new(1_796_083_200, 250_000_000))
        );
    }

    #[test]
    fn malformed_or_zoneless_timestamps_are_rejected() {
        for bad in [
            "2026-12-01",
            "2026-12-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:00:00.Z",
            "2026-12-01T00:00:00+0200",
            "1969-12-31T23:59:59Z",
            "2026-12-01T00:00:00Zjunk",
            "２０２６-12-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_accept_units_and_sums() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("3h"), Some(Duration::from_secs(10_800)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration(" 1m 30s "), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "30", "s", "1.5s", "-1s", "10 sec", "5x", "1h30", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn closest_finds_typos_and_transpositions_but_not_unrelated_names() {
        let names = ["anthropic", "openai", "openai-codex", "local"];
        assert_eq!(closest("opnai", names).as_deref(), Some("openai"));
        assert_eq!(closest("OpenAI", names).as_deref(), Some("openai"));
        assert_eq!(closest("antrhopic", names).as_deref(), Some("anthropic"));
        assert_eq!(closest("evn", ["env", "file"]).as_deref(), Some("env"));
        assert_eq!(closest("google", names), None);
        assert_eq!(closest("x", ["y"]), None);
    }

    #[test]
    fn env_debug_shows_names_but_not_values() {
        let env = Env::from_pairs([("API_KEY", "value-that-must-not-print")]);
        let debug = format!("{env:?}");
        assert!(debug.contains("API_KEY"));
        assert!(!debug.contains("value-that-must-not-print"));
        assert_eq!(env.get("API_KEY"), Some("value-that-must-not-print"));
        assert_eq!(env.get("OTHER"), None);
    }
}
