//! The TOML as written (`Raw*` structs, `deny_unknown_fields` everywhere) and the piecewise
//! parse that fills them while collecting every syntax and shape error with its path.
//!
//! A whole-document `toml::from_str::<RawConfig>` would stop at the first problem. Instead the
//! document is parsed once into a spanned tree, and every section (`[gateway]`, each
//! `[[agents.list]]` entry, each `[providers.X]`, ...) is deserialized on its own, so one broken
//! provider does not hide a typo in an agent. A section that fails is kept as `None` under its
//! name, so the checker knows the name exists and does not report "unknown provider" on top of
//! the real error.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::de::{DeserializeOwned, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::check::{ConfigError, Position, closest};

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub listen: Option<String>,
    pub keys: Option<Vec<String>>,
    pub log_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

/// `[router]`: every field optional, defaults applied by the checker.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouter {
    pub ttfb_timeout: Option<RawDuration>,
    pub request_timeout: Option<RawDuration>,
    pub breaker_threshold: Option<u32>,
    pub overload_cooldown: Option<RawDuration>,
    pub transient_cooldown: Option<RawDuration>,
    pub auth_cooldown: Option<RawDuration>,
    pub billing_cooldown: Option<RawDuration>,
    pub rate_limit_cooldown: Option<RawDuration>,
    pub max_retry_after: Option<RawDuration>,
    pub retry_transient: Option<bool>,
    pub retry_backoff: Option<RawDuration>,
}

/// A duration as written: normally text such as `"30s"`; a bare integer is accepted by the
/// parser only so the checker can answer "did you mean "30s"?" instead of a type error.
#[derive(Debug, Clone)]
pub(crate) enum RawDuration {
    Text(String),
    Bare(i64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"30s\", \"5m\" or \"3h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Bare(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Bare(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `[agents.defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgentDefaults {
    pub model: Option<RawModelSpec>,
}

/// `model = "provider/model"` or `model = { primary = ..., fallbacks = [...] }`.
#[derive(Debug, Clone)]
pub(crate) enum RawModelSpec {
    Plain(String),
    Table(RawModelTable),
}

impl<'de> Deserialize<'de> for RawModelSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A hand-written visitor rather than `#[serde(untagged)]`: untagged enums swallow the
        // inner error ("did not match any variant"), and we want "unknown field `fallback`".
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawModelSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"provider/model\" or a table with `primary` and `fallbacks`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawModelSpec, E> {
                Ok(RawModelSpec::Plain(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawModelSpec, A::Error> {
                RawModelTable::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawModelSpec::Table)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The table form of a model spec (`[agents.defaults.model]`, `[chains.X]`, inline in agents).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModelTable {
    pub primary: String,
    /// `None` = not written (an agent then inherits the default fallbacks); `Some([])` = none.
    pub fallbacks: Option<Vec<String>>,
}

/// One `[[agents.list]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub id: String,
    pub model: Option<RawModelSpec>,
    pub slack: Option<String>,
    pub system_prompt: Option<String>,
    pub node: Option<String>,
}

/// `[providers.X]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub api: RawApi,
    pub base_url: Option<String>,
    pub auth: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub models: Option<BTreeMap<String, RawModelInfo>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) enum RawApi {
    #[serde(rename = "anthropic")]
    Anthropic,
    #[serde(rename = "openai")]
    OpenAi,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

/// `[providers.X.models.M]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModelInfo {
    pub context_window: Option<u32>,
    pub wire: Option<RawWire>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) enum RawWire {
    #[serde(rename = "responses")]
    Responses,
    #[serde(rename = "chat-completions")]
    ChatCompletions,
}

/// `[auth.X]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub provider: String,
    #[serde(rename = "type")]
    pub kind: RawAuthKind,
    pub key: String,
    pub expires_at: Option<RawTimestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum RawAuthKind {
    #[serde(rename = "api-key")]
    ApiKey,
    #[serde(rename = "oauth")]
    OAuth,
}

/// A timestamp written either as a string or as a bare TOML datetime; kept as RFC 3339 text
/// and parsed by the checker so both forms get the same error messages.
#[derive(Debug, Clone)]
pub(crate) struct RawTimestamp(pub String);

impl<'de> Deserialize<'de> for RawTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTimestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp such as \"2026-12-01T00:00:00Z\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawTimestamp, E> {
                Ok(RawTimestamp(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTimestamp, A::Error> {
                let dt = toml::value::Datetime::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawTimestamp(dt.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `[slack.X]`: token references, checked for their prefix only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlack {
    pub app_token: String,
    pub bot_token: String,
    pub api_base: Option<String>,
}

/// The whole document after the piecewise parse. In the maps and in `agents`, `None` marks an
/// entry that exists but failed to parse (its error is already reported).
#[derive(Debug)]
pub(crate) struct RawConfig {
    /// `None` = the section failed to parse; absent sections are `Some(default)`.
    pub gateway: Option<RawGateway>,
    pub router: Option<RawRouter>,
    /// `Ok(None)` = no `[agents.defaults]`; `Err(())` = it failed to parse.
    pub defaults: Result<Option<RawAgentDefaults>, ()>,
    pub agents: Vec<Option<RawAgent>>,
    pub chains: BTreeMap<String, Option<RawModelSpec>>,
    pub providers: BTreeMap<String, Option<RawProvider>>,
    pub auth: BTreeMap<String, Option<RawAuth>>,
    pub slack: BTreeMap<String, Option<RawSlack>>,
}

const TOP_LEVEL_KEYS: &[&str] = &["gateway", "router", "agents", "chains", "providers", "auth", "slack"];
const AGENTS_KEYS: &[&str] = &["defaults", "list"];

/// A bound on the "drop the unknown key and try again" loop, so a pathological table cannot
/// make the parse quadratic for long.
const MAX_ERRORS_PER_SECTION: usize = 32;

/// Parses `text` into a [`RawConfig`], pushing every problem onto `errors`. Returns `None` only
/// for TOML syntax errors, where nothing after the first bad line can be trusted.
pub(crate) fn parse(text: &str, errors: &mut Vec<ConfigError>) -> Option<RawConfig> {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The parser's recovery reports follow-on errors for the rest of a bad line; the
        // first one of each line is the one that explains it.
        let mut lines = std::collections::BTreeSet::new();
        for e in syntax {
            let pos = e.span().map(|s| position(text, s.start));
            if !lines.insert(pos.map(|p| p.line)) {
                continue;
            }
            errors.push(ConfigError {
                path: String::new(),
                message: format!("invalid TOML: {}", one_line(e.message())),
                suggestion: None,
                position: pos,
            });
        }
        return None;
    }
    let mut p = Pieces { text, errors };
    let mut raw = RawConfig {
        gateway: Some(RawGateway::default()),
        router: Some(RawRouter::default()),
        defaults: Ok(None),
        agents: Vec::new(),
        chains: BTreeMap::new(),
        providers: BTreeMap::new(),
        auth: BTreeMap::new(),
        slack: BTreeMap::new(),
    };
    for (key, value) in doc.get_ref().iter() {
        let name = key.get_ref().as_ref();
        match name {
            "gateway" => raw.gateway = p.piece(value, "gateway"),
            "router" => raw.router = p.piece(value, "router"),
            "agents" => p.agents(key, value, &mut raw),
            "chains" => raw.chains = p.named(value, "chains"),
            "providers" => raw.providers = p.named(value, "providers"),
            "auth" => raw.auth = p.named(value, "auth"),
            "slack" => raw.slack = p.named(value, "slack"),
            other => p.unknown_key(key, other, "", TOP_LEVEL_KEYS),
        }
    }
    Some(raw)
}

struct Pieces<'t, 'e> {
    text: &'t str,
    errors: &'e mut Vec<ConfigError>,
}

impl Pieces<'_, '_> {
    fn agents(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, value: &Spanned<DeValue<'_>>, raw: &mut RawConfig) {
        let Some(table) = value.get_ref().as_table() else {
            self.not_a(key, value, "agents", "table");
            return;
        };
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "defaults" => {
                    raw.defaults = self.piece(v, "agents.defaults").map(Some).ok_or(());
                }
                "list" => {
                    let Some(items) = v.get_ref().as_array() else {
                        self.not_a(k, v, "agents.list", "array of tables ([[agents.list]])");
                        continue;
                    };
                    raw.agents = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| self.piece(item, &format!("agents.list[{i}]")))
                        .collect();
                }
                other => self.unknown_key(k, other, "agents", AGENTS_KEYS),
            }
        }
    }

    /// A table of named entries (`[providers.X]`, ...), each parsed on its own.
    fn named<T: DeserializeOwned>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        section: &str,
    ) -> BTreeMap<String, Option<T>> {
        let mut out = BTreeMap::new();
        let Some(table) = value.get_ref().as_table() else {
            self.push_at(value.span(), section, "expected a table".to_owned(), None);
            return out;
        };
        for (k, v) in table.iter() {
            let name = k.get_ref().to_string();
            let path = join_key(section, &name);
            out.insert(name, self.piece(v, &path));
        }
        out
    }

    /// Deserializes one section. On an unknown field the key is dropped and the section tried
    /// again, so every unknown field is reported; any other error ends the section.
    fn piece<T: DeserializeOwned>(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<T> {
        let mut value = value.clone();
        let mut failed = false;
        // Fields suggested for unknown ones: after `idd` is dropped, "missing field `id`" says
        // the same thing again and is not reported.
        let mut suggested = Vec::new();
        for _ in 0..MAX_ERRORS_PER_SECTION {
            let err = match T::deserialize(value.clone().into_deserializer()) {
                Ok(t) if !failed => return Some(t),
                Ok(_) => return None,
                Err(err) => err,
            };
            failed = true;
            let span = err.span();
            let (message, suggestion, unknown) = translate(err.message());
            if let Some(missing) = message.strip_prefix("missing field ")
                && suggested.iter().any(|s| format!("\"{s}\"") == missing)
            {
                return None;
            }
            if unknown && let Some(s) = &suggestion {
                suggested.push(s.clone());
            }
            let err_path = match &span {
                Some(s) => path_at(&value, path, s.start),
                None => path.to_owned(),
            };
            self.errors.push(ConfigError {
                path: err_path,
                message,
                suggestion,
                position: span.as_ref().map(|s| position(self.text, s.start)),
            });
            match (unknown, span) {
                (true, Some(span)) if remove_key(&mut value, &span) => continue,
                _ => return None,
            }
        }
        None
    }

    fn unknown_key(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, name: &str, parent: &str, known: &[&str]) {
        let suggestion = closest(name, known.iter().copied());
        let message = match suggestion {
            Some(_) => format!("unknown key \"{name}\""),
            None => format!("unknown key \"{name}\" (expected {})", quoted_list(known)),
        };
        self.push_at(key.span(), &join_key(parent, name), message, suggestion);
    }

    fn not_a(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        what: &str,
    ) {
        let message = format!("expected {what}, found {}", value.get_ref().type_str());
        self.push_at(key.span(), path, message, None);
    }

    fn push_at(&mut self, span: Range<usize>, path: &str, message: String, suggestion: Option<String>) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            message,
            suggestion,
            position: Some(position(self.text, span.start)),
        });
    }
}

/// Rewrites a serde/toml message into ours: backticks become quotes, values of string-typed
/// mismatches are dropped (they may be secrets), and "unknown field/variant" errors get the
/// closest expected name as a suggestion. The flag says whether it was an unknown field.
fn translate(message: &str) -> (String, Option<String>, bool) {
    let message = one_line(message);
    for (prefix, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((name, tail)) = rest.split_once('`') else {
            continue;
        };
        let expected = backticked(tail);
        let suggestion = closest(name, expected.iter().map(String::as_str));
        let text = match (&suggestion, expected.is_empty()) {
            (Some(_), _) => format!("unknown {what} \"{name}\""),
            (None, true) => format!("unknown {what} \"{name}\" (no {what}s are allowed here)"),
            (None, false) => format!("unknown {what} \"{name}\" (expected {})", quoted_list(&expected)),
        };
        return (text, suggestion, what == "field");
    }
    (redact_values(&message).replace('`', "\""), None, false)
}

/// Serde's type errors quote the offending string (`invalid type: string "sk-...", expected a
/// sequence`); a misplaced secret must not end up in the error, so the value is removed.
fn redact_values(message: &str) -> String {
    let mut out = message.to_owned();
    for marker in ["string \"", "char \""] {
        let mut from = 0;
        while let Some(i) = out[from..].find(marker).map(|i| i + from) {
            let start = i + marker.len() - 1;
            // Serde writes the string with `{:?}`-style escaping, so the first unescaped quote
            // closes it.
            let bytes = out.as_bytes();
            let mut j = start + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(out.len());
            out.replace_range(start - 1..end, "");
            from = start - 1;
        }
    }
    out
}

/// The names between backticks in `expected `a`, `b` or `c``.
fn backticked(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

pub(crate) fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    items.iter().map(|s| format!("\"{}\"", s.as_ref())).collect::<Vec<_>>().join(", ")
}

fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// The path of the deepest key or array element of `value` whose span contains `offset`.
fn path_at(value: &Spanned<DeValue<'_>>, path: &str, offset: usize) -> String {
    match value.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                if k.span().contains(&offset) {
                    return join_key(path, k.get_ref());
                }
                if v.span().contains(&offset) {
                    return path_at(v, &join_key(path, k.get_ref()), offset);
                }
            }
            path.to_owned()
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.span().contains(&offset) {
                    return path_at(item, &format!("{path}[{i}]"), offset);
                }
            }
            path.to_owned()
        }
        _ => path.to_owned(),
    }
}

/// Removes the table entry whose key has exactly `span`, anywhere under `value`.
fn remove_key(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match value.get_mut() {
        DeValue::Table(table) => {
            let hit = table.keys().find(|k| k.span() == *span).map(|k| k.get_ref().to_string());
            match hit {
                Some(name) => table.remove(name.as_str()).is_some(),
                None => table.iter_mut().any(|(_, v)| remove_key(v, span)),
            }
        }
        DeValue::Array(items) => items.iter_mut().any(|item| remove_key(item, span)),
        _ => false,
    }
}

/// `parent.key`, quoting the key when it is not a bare TOML key (`models."gpt-5.3-codex"`).
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if parent.is_empty() { key } else { format!("{parent}.{key}") }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn position(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Position { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_values_are_removed_from_serde_messages() {
        assert_eq!(
            redact_values("invalid type: string \"sk-ant-123\", expected a sequence"),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            redact_values("invalid value: string \"a \\\"quoted\\\" b\", expected x"),
            "invalid value: string, expected x"
        );
        assert_eq!(
            redact_values("invalid type: integer `5`, expected a string"),
            "invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn unknown_field_messages_become_suggestions() {
        let (message, suggestion, unknown) = translate("unknown field `fallback`, expected `primary` or `fallbacks`");
        assert_eq!(message, "unknown field \"fallback\"");
        assert_eq!(suggestion.as_deref(), Some("fallbacks"));
        assert!(unknown);

        let (message, suggestion, unknown) =
            translate("unknown variant `claude`, expected one of `anthropic`, `openai`, `openai-compatible`");
        assert_eq!(message, "unknown value \"claude\" (expected \"anthropic\", \"openai\", \"openai-compatible\")");
        assert_eq!(suggestion, None);
        assert!(!unknown);
    }

    #[test]
    fn keys_that_are_not_bare_are_quoted_in_paths() {
        assert_eq!(join_key("", "providers"), "providers");
        assert_eq!(join_key("providers.openai.models", "gpt-5.3-codex"), "providers.openai.models.\"gpt-5.3-codex\"");
        assert_eq!(join_key("headers", "bad header"), "headers.\"bad header\"");
        assert_eq!(join_key("chains", ""), "chains.\"\"");
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(position(text, 0), Position { line: 1, column: 1 });
        assert_eq!(position(text, 6), Position { line: 2, column: 1 });
        // "bé " is four bytes but three characters, so the `=` at byte 10 is in column 4.
        assert_eq!(position(text, 10), Position { line: 2, column: 4 });
    }
}
