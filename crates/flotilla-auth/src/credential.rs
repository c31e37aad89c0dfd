//! The credential record that is sealed into the cluster store, and how `flotilla auth add`
//! builds it from an environment variable, a key file or an OAuth token file.
//!
//! JSON form (inside the seal):
//! - `{"kind": "api-key", "provider": "anthropic", "key": "sk-ant-…"}`
//! - `{"kind": "oauth", "provider": "anthropic", "access_token": "…", "refresh_token": "…",
//!   "expires_at": "2026-01-01T00:00:00Z", "token_url": "https://…", "client_id": "…"}`
//!   (`expires_at` is written as RFC 3339; read as RFC 3339 or a Unix time in seconds or
//!   milliseconds, see [`parse_expiry`])
//! - `{"kind": "secret", "value": "xoxb-…"}` (Slack tokens and other plain secrets)
//!
//! Unknown fields are ignored when reading, so a record written by a newer flotilla still opens.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::oauth::TokenSet;
use crate::{AuthError, KeyFile, sealed};

/// Anthropic's OAuth token endpoint (the one Claude Code refreshes against).
pub const ANTHROPIC_TOKEN_URL: &str = "https://console.anthropic.com/v1/oauth/token";
/// The public OAuth client id of Claude Code, under which Claude subscription tokens are issued.
pub const ANTHROPIC_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";

/// Numbers below this are Unix seconds, above it milliseconds: 10^11 seconds is the year
/// 5138, 10^11 milliseconds is March 1973, so no real expiry is ambiguous.
const SECONDS_BELOW: u64 = 100_000_000_000;

/// One credential as stored (sealed) in the cluster store. Secret fields never appear in
/// `Debug` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StoredCredential {
    /// A provider API key (`x-api-key` for Anthropic, bearer for OpenAI).
    ApiKey {
        provider: String,
        #[serde(serialize_with = "expose")]
        key: SecretString,
    },
    /// An OAuth token set, refreshed by the fleet's elected refresher.
    #[serde(rename = "oauth")]
    OAuth(OAuthCredential),
    /// Any other secret, such as a Slack app or bot token.
    Secret {
        #[serde(serialize_with = "expose")]
        value: SecretString,
    },
}

/// An OAuth credential: the current access token, the (single-use) refresh token that gets
/// the next one, and where to refresh it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthCredential {
    pub provider: String,
    #[serde(serialize_with = "expose")]
    pub access_token: SecretString,
    #[serde(serialize_with = "expose")]
    pub refresh_token: SecretString,
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub expires_at: SystemTime,
    pub token_url: String,
    pub client_id: String,
}

/// Where an OAuth credential is refreshed, when the file does not say. An explicit field
/// here wins over the file, and the file over the provider's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthOptions {
    /// The provider's `api` (`anthropic`, `openai`, …), which picks the default token URL and
    /// client id; `None` means the provider's name is its api.
    pub api: Option<String>,
    /// `--token-url`.
    pub token_url: Option<String>,
    /// `--client-id`.
    pub client_id: Option<String>,
}

impl StoredCredential {
    /// An API key given directly.
    pub fn api_key(provider: impl Into<String>, key: SecretString) -> Self {
        StoredCredential::ApiKey { provider: provider.into(), key }
    }

    /// A plain secret given directly.
    pub fn secret(value: SecretString) -> Self {
        StoredCredential::Secret { value }
    }

    /// `--api-key-env VAR`: the key is the variable's value, trimmed. `env` looks a variable
    /// up (pass `|k| std::env::var(k).ok()`).
    pub fn from_api_key_env(
        provider: &str,
        var: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthError> {
        Ok(Self::api_key(provider, secret_from_env(var, env)?))
    }

    /// `--api-key-file PATH`: the key is the file's content, trimmed; an empty file, or one
    /// holding more than one word, is refused.
    pub fn from_api_key_file(provider: &str, path: &Path) -> Result<Self, AuthError> {
        Ok(Self::api_key(provider, secret_from_file(path, "api key file")?))
    }

    /// A plain secret from an environment variable (trimmed, one word).
    pub fn from_secret_env(var: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        Ok(Self::secret(secret_from_env(var, env)?))
    }

    /// A plain secret from a file (trimmed, one word).
    pub fn from_secret_file(path: &Path) -> Result<Self, AuthError> {
        Ok(Self::secret(secret_from_file(path, "secret file")?))
    }

    /// `--oauth-file PATH` with the provider's defaults; see [`StoredCredential::from_oauth_json`].
    pub fn from_oauth_file(provider: &str, path: &Path) -> Result<Self, AuthError> {
        Self::from_oauth_file_with(provider, path, &OAuthOptions::default())
    }

    /// `--oauth-file PATH` with `--token-url` / `--client-id` / the provider's api.
    pub fn from_oauth_file_with(provider: &str, path: &Path, opts: &OAuthOptions) -> Result<Self, AuthError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| AuthError::io("read OAuth file", path, e))?);
        Self::from_oauth_json(provider, &bytes, &format!("OAuth file {}", path.display()), opts)
    }

    /// An OAuth credential from the JSON people have (`what` names the input in errors):
    /// - Claude Code's `.credentials.json`: `{"claudeAiOauth": {"accessToken", "refreshToken",
    ///   "expiresAt" (ms)}}` (the inner object alone is accepted too);
    /// - an OpenClaw profile `{"access", "refresh", "expires" (ms)}`, or a whole
    ///   `auth-profiles.json` (`{"profiles": {…}}`) holding exactly one OAuth profile for the
    ///   provider;
    /// - plain `{"access_token", "refresh_token", "expires_at", "token_url"?, "client_id"?}`.
    ///
    /// The token URL and client id come from `opts`, else the file, else the provider's
    /// defaults (Anthropic: [`ANTHROPIC_TOKEN_URL`], [`ANTHROPIC_CLIENT_ID`]).
    pub fn from_oauth_json(provider: &str, json: &[u8], what: &str, opts: &OAuthOptions) -> Result<Self, AuthError> {
        let top: Value = serde_json::from_slice(json).map_err(|e| AuthError::json(what, &e))?;
        let file_problem = |problem: String| AuthError::OAuthFile { what: what.to_owned(), problem };
        let api = opts.api.as_deref().unwrap_or(provider);
        let obj = top.as_object().ok_or_else(|| file_problem("expected a JSON object".to_owned()))?;
        let found = find_tokens(obj, provider, api).map_err(file_problem)?;

        let default = default_endpoint(api);
        let token_url = opts.token_url.clone().or(found.token_url).or_else(|| default.map(|d| d.0.to_owned()));
        let client_id = opts.client_id.clone().or(found.client_id).or_else(|| default.map(|d| d.1.to_owned()));
        let missing = |field, flag| AuthError::NoOAuthDefault { provider: provider.to_owned(), field, flag };
        Ok(StoredCredential::OAuth(OAuthCredential {
            provider: provider.to_owned(),
            access_token: found.access,
            refresh_token: found.refresh,
            expires_at: found.expires_at,
            token_url: token_url.ok_or_else(|| missing("token URL", "token-url"))?,
            client_id: client_id.ok_or_else(|| missing("client id", "client-id"))?,
        }))
    }

    /// `api-key`, `oauth` or `secret`, as in the JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            StoredCredential::ApiKey { .. } => "api-key",
            StoredCredential::OAuth(_) => "oauth",
            StoredCredential::Secret { .. } => "secret",
        }
    }

    /// The provider the credential is for (`None` for a plain secret).
    pub fn provider(&self) -> Option<&str> {
        match self {
            StoredCredential::ApiKey { provider, .. } => Some(provider),
            StoredCredential::OAuth(o) => Some(&o.provider),
            StoredCredential::Secret { .. } => None,
        }
    }

    pub fn as_oauth(&self) -> Option<&OAuthCredential> {
        match self {
            StoredCredential::OAuth(o) => Some(o),
            _ => None,
        }
    }
}

impl OAuthCredential {
    /// Takes the tokens of a successful refresh (the old refresh token is spent).
    pub fn apply(&mut self, tokens: TokenSet) {
        self.access_token = tokens.access_token;
        self.refresh_token = tokens.refresh_token;
        self.expires_at = tokens.expires_at;
    }

    /// Refreshes at this credential's token endpoint; see [`crate::oauth::refresh`]. On
    /// success, [`OAuthCredential::apply`] the result and publish it at once: the refresh
    /// token just used no longer works.
    pub async fn refresh(&self, client: &reqwest::Client) -> Result<TokenSet, crate::RefreshError> {
        crate::oauth::refresh(client, &self.token_url, &self.client_id, &self.refresh_token).await
    }
}

/// Seals a credential record to `key` (see [`crate::sealed`]).
pub fn seal_credential(key: &KeyFile, cred: &StoredCredential) -> Result<Vec<u8>, AuthError> {
    // Serialising these types cannot fail (string keys only); the error is kept generic anyway.
    let json = Zeroizing::new(
        serde_json::to_vec(cred)
            .map_err(|_| AuthError::Encrypt { reason: "cannot encode the credential".to_owned() })?,
    );
    sealed::seal(key, &json)
}

/// Opens a record sealed by [`seal_credential`].
pub fn open_credential(key: &KeyFile, sealed_bytes: &[u8]) -> Result<StoredCredential, AuthError> {
    let plain = sealed::open(key, sealed_bytes)?;
    serde_json::from_slice(plain.expose_secret()).map_err(|e| AuthError::Record { line: e.line(), column: e.column() })
}

/// Reads an expiry: an RFC 3339 string, or a Unix time as a number (or numeric string) in
/// seconds or milliseconds, told apart by size: below 10^11 it is seconds (10^11 seconds is
/// the year 5138, 10^11 milliseconds March 1973). `None` if it is none of these or before 1970.
pub fn parse_expiry(v: &Value) -> Option<SystemTime> {
    let from_number = |n: f64| {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        let secs = if n < SECONDS_BELOW as f64 { n } else { n / 1000.0 };
        Duration::try_from_secs_f64(secs).ok().and_then(|d| UNIX_EPOCH.checked_add(d))
    };
    // Whole numbers are read exactly; f64 would lose the last millisecond of a ms timestamp.
    let from_integer = |n: u64| {
        let d = if n < SECONDS_BELOW { Duration::from_secs(n) } else { Duration::from_millis(n) };
        UNIX_EPOCH.checked_add(d)
    };
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) => from_integer(n),
            None => from_number(n.as_f64()?),
        },
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<u64>() {
                return from_integer(n);
            }
            if let Ok(n) = s.parse::<f64>() {
                return from_number(n);
            }
            let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
            let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
            Some(UNIX_EPOCH + Duration::from_nanos(nanos))
        }
        _ => None,
    }
}

/// RFC 3339 in UTC, with as many fractional digits as needed to be exact.
pub fn format_expiry(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

fn default_endpoint(api: &str) -> Option<(&'static str, &'static str)> {
    match api {
        "anthropic" => Some((ANTHROPIC_TOKEN_URL, ANTHROPIC_CLIENT_ID)),
        _ => None,
    }
}

fn secret_from_env(var: &str, env: impl Fn(&str) -> Option<String>) -> Result<SecretString, AuthError> {
    let value = Zeroizing::new(env(var).ok_or_else(|| AuthError::EnvVarMissing { var: var.to_owned() })?);
    one_word(&value, &format!("environment variable {var}"))
}

fn secret_from_file(path: &Path, label: &str) -> Result<SecretString, AuthError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| AuthError::io("read secret from", path, e))?);
    one_word(&text, &format!("{label} {}", path.display()))
}

/// The trimmed value, refused when empty or when it holds whitespace inside (a `.env` line,
/// two keys, a comment): an HTTP header could not carry it anyway.
fn one_word(raw: &str, what: &str) -> Result<SecretString, AuthError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(AuthError::EmptySecret { what: what.to_owned() });
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AuthError::NotOneWord { what: what.to_owned() });
    }
    Ok(SecretString::from(t))
}

/// The tokens found in an OAuth file.
struct Found {
    access: SecretString,
    refresh: SecretString,
    expires_at: SystemTime,
    token_url: Option<String>,
    client_id: Option<String>,
}

/// Field names of one OAuth file shape, `prefix` naming where they sit for messages.
struct Shape<'a> {
    prefix: &'a str,
    access: &'a str,
    refresh: &'a str,
    expires: &'a [&'a str],
}

const CLAUDE_CODE: Shape<'static> =
    Shape { prefix: "", access: "accessToken", refresh: "refreshToken", expires: &["expiresAt"] };
const OPENCLAW: Shape<'static> =
    Shape { prefix: "", access: "access", refresh: "refresh", expires: &["expires", "expiresAt"] };
const PLAIN: Shape<'static> =
    Shape { prefix: "", access: "access_token", refresh: "refresh_token", expires: &["expires_at"] };

/// Recognises the file's shape and takes the tokens out. Messages name fields and profile
/// ids, never values.
fn find_tokens(obj: &Map<String, Value>, provider: &str, api: &str) -> Result<Found, String> {
    if let Some(inner) = obj.get("claudeAiOauth") {
        let inner = inner.as_object().ok_or("claudeAiOauth is not an object")?;
        return take(inner, &Shape { prefix: "claudeAiOauth.", ..CLAUDE_CODE });
    }
    if let Some(profiles) = obj.get("profiles") {
        let profiles = profiles.as_object().ok_or("profiles is not an object")?;
        let (id, profile) = pick_profile(profiles, provider, api)?;
        return take(profile, &Shape { prefix: &format!("profiles.{id}."), ..OPENCLAW });
    }
    for shape in [PLAIN, CLAUDE_CODE, OPENCLAW] {
        if obj.contains_key(shape.access) || obj.contains_key(shape.refresh) {
            return take(obj, &shape);
        }
    }
    Err("not a known OAuth token file: expected Claude Code's {\"claudeAiOauth\": {\"accessToken\", \"refreshToken\", \"expiresAt\"}}, an OpenClaw profile {\"access\", \"refresh\", \"expires\"} or auth-profiles.json, or {\"access_token\", \"refresh_token\", \"expires_at\"}".to_owned())
}

/// The one OAuth profile for this provider in an OpenClaw `auth-profiles.json`.
fn pick_profile<'v>(
    profiles: &'v Map<String, Value>,
    provider: &str,
    api: &str,
) -> Result<(&'v str, &'v Map<String, Value>), String> {
    let oauth: Vec<(&str, &Map<String, Value>)> = profiles
        .iter()
        .filter_map(|(id, p)| Some((id.as_str(), p.as_object()?)))
        .filter(|(_, p)| p.get("type").and_then(Value::as_str) == Some("oauth") || p.contains_key("refresh"))
        .collect();
    let for_us: Vec<_> = oauth
        .iter()
        .filter(|(_, p)| p.get("provider").and_then(Value::as_str).is_none_or(|p| p == provider || p == api))
        .collect();
    match for_us.as_slice() {
        [(id, p)] => Ok((id, p)),
        [] => Err(format!(
            "no OAuth profile for provider {provider:?} in profiles (OAuth profiles: {})",
            list_ids(oauth.iter().map(|(id, _)| *id))
        )),
        many => Err(format!(
            "several OAuth profiles for provider {provider:?} ({}): copy the one you mean into a file of its own",
            list_ids(many.iter().map(|(id, _)| *id))
        )),
    }
}

fn list_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let ids: Vec<String> = ids.map(|id| format!("{id:?}")).collect();
    if ids.is_empty() { "none".to_owned() } else { ids.join(", ") }
}

fn take(obj: &Map<String, Value>, shape: &Shape<'_>) -> Result<Found, String> {
    let token = |name: &str| -> Result<SecretString, String> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(SecretString::from(s.trim())),
            Some(Value::String(_)) => Err(format!("{}{name} is empty", shape.prefix)),
            Some(_) => Err(format!("{}{name} is not a string", shape.prefix)),
            None => Err(format!("{}{name} is missing", shape.prefix)),
        }
    };
    let access = token(shape.access)?;
    let refresh = token(shape.refresh)?;
    let (expires_name, expires) = shape
        .expires
        .iter()
        .find_map(|n| obj.get(*n).map(|v| (*n, v)))
        .ok_or_else(|| format!("{}{} is missing", shape.prefix, shape.expires[0]))?;
    let expires_at = parse_expiry(expires).ok_or_else(|| {
        format!("{}{expires_name} is not an RFC 3339 time or a Unix time in seconds or milliseconds", shape.prefix)
    })?;
    let text = |name: &str| obj.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    Ok(Found {
        access,
        refresh,
        expires_at,
        token_url: text("token_url").or_else(|| text("tokenUrl")).map(str::to_owned),
        client_id: text("client_id").or_else(|| text("clientId")).map(str::to_owned),
    })
}

fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_expiry(*t))
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let v = Value::deserialize(d)?;
    parse_expiry(&v).ok_or_else(|| {
        serde::de::Error::custom("expires_at is not an RFC 3339 time or a Unix time in seconds or milliseconds")
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    const SECRET: &str = "sk-ant-oat01-TOPSECRET-access-123";
    const REFRESH: &str = "sk-ant-ort01-TOPSECRET-refresh-456";

    fn oauth(c: &StoredCredential) -> &OAuthCredential {
        c.as_oauth().expect("an oauth credential")
    }

    fn ms(t: SystemTime) -> u128 {
        t.duration_since(UNIX_EPOCH).unwrap().as_millis()
    }

    fn parse(v: Value) -> Result<StoredCredential, AuthError> {
        StoredCredential::from_oauth_json(
            "anthropic",
            v.to_string().as_bytes(),
            "OAuth file t.json",
            &OAuthOptions::default(),
        )
    }

    #[test]
    fn claude_code_file_gets_anthropic_defaults() {
        let c = parse(json!({"claudeAiOauth": {
            "accessToken": SECRET, "refreshToken": REFRESH, "expiresAt": 1_767_225_600_000_u64,
            "scopes": ["user:inference"], "subscriptionType": "max"
        }}))
        .unwrap();
        let o = oauth(&c);
        assert_eq!(o.access_token.expose_secret(), SECRET);
        assert_eq!(o.refresh_token.expose_secret(), REFRESH);
        assert_eq!(ms(o.expires_at), 1_767_225_600_000);
        assert_eq!(o.token_url, ANTHROPIC_TOKEN_URL);
        assert_eq!(o.client_id, ANTHROPIC_CLIENT_ID);
        assert_eq!(o.provider, "anthropic");
    }

    #[test]
    fn openclaw_and_plain_shapes() {
        let c = parse(json!({"type": "oauth", "provider": "anthropic", "access": SECRET, "refresh": REFRESH, "expires": 1_767_225_600_123_u64})).unwrap();
        assert_eq!(ms(oauth(&c).expires_at), 1_767_225_600_123);

        let profiles = json!({"version": 1, "profiles": {
            "anthropic:key": {"type": "api_key", "provider": "anthropic", "key": "sk-ant-api"},
            "openai-codex:me": {"type": "oauth", "provider": "openai-codex", "access": "a", "refresh": "r", "expires": 1},
            "anthropic:me": {"type": "oauth", "provider": "anthropic", "access": SECRET, "refresh": REFRESH, "expires": 1_767_225_600_000_u64}
        }});
        let c = parse(profiles).unwrap();
        assert_eq!(oauth(&c).refresh_token.expose_secret(), REFRESH);

        // Plain, with seconds, RFC 3339, and its own endpoint.
        let c =
            parse(json!({"access_token": SECRET, "refresh_token": REFRESH, "expires_at": 1_767_225_600_u64})).unwrap();
        assert_eq!(ms(oauth(&c).expires_at), 1_767_225_600_000);
        let c = parse(json!({
            "access_token": SECRET, "refresh_token": REFRESH, "expires_at": "2026-01-01T01:00:00+01:00",
            "token_url": "http://127.0.0.1:9/t", "client_id": "my-client"
        }))
        .unwrap();
        assert_eq!(ms(oauth(&c).expires_at), 1_767_225_600_000);
        assert_eq!(oauth(&c).token_url, "http://127.0.0.1:9/t");
        assert_eq!(oauth(&c).client_id, "my-client");
    }

    #[test]
    fn options_override_file_and_defaults() {
        let body = json!({"access_token": SECRET, "refresh_token": REFRESH, "expires_at": 1_767_225_600_u64, "client_id": "from-file"});
        let opts =
            OAuthOptions { api: None, token_url: Some("http://127.0.0.1:1/t".into()), client_id: Some("flag".into()) };
        let c = StoredCredential::from_oauth_json("anthropic", body.to_string().as_bytes(), "f", &opts).unwrap();
        assert_eq!(oauth(&c).token_url, "http://127.0.0.1:1/t");
        assert_eq!(oauth(&c).client_id, "flag");

        // A provider named otherwise uses anthropic's defaults through its api.
        let opts = OAuthOptions { api: Some("anthropic".into()), ..OAuthOptions::default() };
        let c = StoredCredential::from_oauth_json("claude-max", body.to_string().as_bytes(), "f", &opts).unwrap();
        assert_eq!(oauth(&c).token_url, ANTHROPIC_TOKEN_URL);
        assert_eq!(oauth(&c).client_id, "from-file");

        // No default for an unknown api: the error says which flag to give.
        let err = StoredCredential::from_oauth_json("acme", body.to_string().as_bytes(), "f", &OAuthOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("--token-url"), "{err}");
    }

    #[test]
    fn bad_oauth_files_never_quote_secrets() {
        let cases = [
            (
                json!({"claudeAiOauth": {"accessToken": SECRET, "expiresAt": 1}}),
                "claudeAiOauth.refreshToken is missing",
            ),
            (
                json!({"access_token": SECRET, "refresh_token": REFRESH, "expires_at": SECRET}),
                "expires_at is not an RFC 3339",
            ),
            (json!({"access_token": SECRET, "refresh_token": 7, "expires_at": 1}), "refresh_token is not a string"),
            (json!({"token": SECRET}), "not a known OAuth token file"),
            (
                json!({"profiles": {"anthropic:a": {"type": "oauth", "access": SECRET, "refresh": REFRESH, "expires": 1}, "anthropic:b": {"type": "oauth", "access": SECRET, "refresh": REFRESH, "expires": 1}}}),
                "several OAuth profiles",
            ),
            (json!([SECRET]), "expected a JSON object"),
        ];
        for (v, want) in cases {
            let msg = parse(v).unwrap_err().to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(!msg.contains("TOPSECRET"), "{msg}");
        }
        // serde_json would quote the offending input; only the position is kept.
        let broken = format!("{{\"access_token\": \"{SECRET}\", \"refresh_token\": {REFRESH}}}");
        let err = StoredCredential::from_oauth_json(
            "anthropic",
            broken.as_bytes(),
            "OAuth file t.json",
            &OAuthOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::Json { line: 1, .. }), "{err:?}");
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
        assert!(!format!("{err:?}").contains("TOPSECRET"), "{err:?}");
    }

    #[test]
    fn api_key_from_env_and_file() {
        let env: HashMap<&str, &str> = [("KEY", "  sk-ant-api03-TOPSECRET\n"), ("EMPTY", "  "), ("TWO", "a b")].into();
        let lookup = |k: &str| env.get(k).map(|v| (*v).to_owned());
        match StoredCredential::from_api_key_env("anthropic", "KEY", lookup).unwrap() {
            StoredCredential::ApiKey { provider, key } => {
                assert_eq!(provider, "anthropic");
                assert_eq!(key.expose_secret(), "sk-ant-api03-TOPSECRET");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            StoredCredential::from_api_key_env("p", "NOPE", lookup),
            Err(AuthError::EnvVarMissing { .. })
        ));
        assert!(matches!(StoredCredential::from_api_key_env("p", "EMPTY", lookup), Err(AuthError::EmptySecret { .. })));
        assert!(matches!(StoredCredential::from_api_key_env("p", "TWO", lookup), Err(AuthError::NotOneWord { .. })));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "\n sk-openai-TOPSECRET \n\n").unwrap();
        let c = StoredCredential::from_api_key_file("openai", &path).unwrap();
        assert!(matches!(&c, StoredCredential::ApiKey { key, .. } if key.expose_secret() == "sk-openai-TOPSECRET"));
        std::fs::write(&path, " \n\t\n").unwrap();
        let err = StoredCredential::from_api_key_file("openai", &path).unwrap_err();
        assert!(matches!(err, AuthError::EmptySecret { .. }), "{err:?}");
        std::fs::write(&path, "OPENAI_API_KEY=sk-openai-TOPSECRET # mine\n").unwrap();
        let err = StoredCredential::from_api_key_file("openai", &path).unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
        let secret = StoredCredential::from_secret_file(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(secret, AuthError::Io { .. }));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let creds = [
            StoredCredential::api_key("anthropic", SecretString::from(SECRET)),
            StoredCredential::secret(SecretString::from(SECRET)),
            parse(json!({"access_token": SECRET, "refresh_token": REFRESH, "expires_at": 1_767_225_600_u64})).unwrap(),
        ];
        for c in &creds {
            let dbg = format!("{c:?} {c:#?}");
            assert!(!dbg.contains("TOPSECRET"), "{dbg}");
        }
        assert!(format!("{:?}", creds[2]).contains("anthropic"));
    }

    #[test]
    fn json_form_and_sealed_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyFile::create_new(&dir.path().join("fleet.key")).unwrap();
        let expires_at = UNIX_EPOCH + Duration::new(1_767_225_600, 123_456_789);
        let cred = StoredCredential::OAuth(OAuthCredential {
            provider: "anthropic".into(),
            access_token: SecretString::from(SECRET),
            refresh_token: SecretString::from(REFRESH),
            expires_at,
            token_url: ANTHROPIC_TOKEN_URL.into(),
            client_id: ANTHROPIC_CLIENT_ID.into(),
        });
        let v = serde_json::to_value(&cred).unwrap();
        assert_eq!(v["kind"], "oauth");
        assert_eq!(v["access_token"], SECRET);
        assert_eq!(v["expires_at"], "2026-01-01T00:00:00.123456789Z");

        let sealed = seal_credential(&key, &cred).unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"TOPSECRET"));
        let back = open_credential(&key, &sealed).unwrap();
        let o = oauth(&back);
        assert_eq!(o.access_token.expose_secret(), SECRET);
        assert_eq!(o.refresh_token.expose_secret(), REFRESH);
        assert_eq!(o.expires_at, expires_at);
        assert_eq!(o.client_id, ANTHROPIC_CLIENT_ID);

        let k = StoredCredential::api_key("openai", SecretString::from("sk-1"));
        assert_eq!(serde_json::to_value(&k).unwrap(), json!({"kind": "api-key", "provider": "openai", "key": "sk-1"}));
        let s =
            open_credential(&key, &seal_credential(&key, &StoredCredential::secret("xoxb-1".into())).unwrap()).unwrap();
        assert!(matches!(&s, StoredCredential::Secret { value } if value.expose_secret() == "xoxb-1"));
        assert_eq!(s.kind(), "secret");
        assert_eq!(s.provider(), None);

        // Records from elsewhere: ms expiry, unknown fields ignored.
        let r: StoredCredential = serde_json::from_value(json!({
            "kind": "oauth", "provider": "anthropic", "access_token": "a", "refresh_token": "r",
            "expires_at": 1_767_225_600_000_u64, "token_url": "u", "client_id": "c", "added_by": "node-3"
        }))
        .unwrap();
        assert_eq!(ms(oauth(&r).expires_at), 1_767_225_600_000);

        // A sealed blob that is not a record reports a position, not content.
        let junk = sealed::seal(&key, format!("{{\"kind\":\"api-key\",\"key\":{SECRET}}}").as_bytes()).unwrap();
        let err = open_credential(&key, &junk).unwrap_err();
        assert!(matches!(err, AuthError::Record { .. }), "{err:?}");
        assert!(!err.to_string().contains("TOPSECRET"));
    }

    #[test]
    fn expiry_forms() {
        let at = |v: Value| parse_expiry(&v).map(ms);
        assert_eq!(at(json!(1_767_225_600)), Some(1_767_225_600_000));
        assert_eq!(at(json!(1_767_225_600_000_u64)), Some(1_767_225_600_000));
        assert_eq!(at(json!("1767225600000")), Some(1_767_225_600_000));
        assert_eq!(at(json!("2026-01-01T00:00:00Z")), Some(1_767_225_600_000));
        assert_eq!(at(json!("2026-01-01T00:00:00.5Z")), Some(1_767_225_600_500));
        assert_eq!(at(json!("tomorrow")), None);
        assert_eq!(at(json!(-5)), None);
        assert_eq!(at(json!(null)), None);
        let t = UNIX_EPOCH + Duration::from_millis(1_767_225_600_250);
        assert_eq!(parse_expiry(&json!(format_expiry(t))), Some(t));
    }
}
