//! Behaviour of the public API: chains resolve as documented, every error kind reports its
//! path and suggestion, all errors come at once, and secrets never show up in output.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]
#![expect(
    clippy::unwrap_used,
    reason = "shared setup helpers outside #[test] fns; a failed setup should fail the test"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use flotilla_config::{
    Config, ConfigError, ConfigErrors, CredentialKind, Env, ModelRef, ProviderApi, StoreSecrets, StoredAuth, WireApi,
    load_config, parse_config, render_check_report,
};
use secrecy::{ExposeSecret, SecretString};

const ANTHROPIC_KEY: &str = "sk-ant-TEST-4f1c9e7a2b";
const OPENAI_KEY: &str = "sk-proj-TEST-8d3e5a0c6f";
const GATEWAY_KEY: &str = "flt-TEST-gateway-51b2";

/// Providers, auth profiles and a Slack app that the error tests build on.
const BASE: &str = r#"
[providers.anthropic]
api = "anthropic"
auth = ["anthropic-key"]

[providers.openai]
api = "openai"
auth = ["openai-key"]

[providers.local]
api = "openai-compatible"
base_url = "http://127.0.0.1:11434"

[auth.anthropic-key]
provider = "anthropic"
type = "api-key"
key = "env:ANTHROPIC_API_KEY"

[auth.openai-key]
provider = "openai"
type = "api-key"
key = "env:OPENAI_API_KEY"

[slack.family-app]
app_token = "secret:slack/family-app/app"
bot_token = "env:SLACK_BOT_TOKEN"
"#;

const FULL: &str = r#"
[gateway]
listen = "0.0.0.0:9000"
keys = ["env:FLOTILLA_GATEWAY_KEY"]
log_file = "logs/gateway.log"

[router]
ttfb_timeout = "20s"
request_timeout = "2m"
breaker_threshold = 5
overload_cooldown = "15s"
transient_cooldown = "5s"
auth_cooldown = "5m"
billing_cooldown = "3h"
rate_limit_cooldown = "30s"
max_retry_after = "1h30m"
retry_transient = false
retry_backoff = "250ms"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai/gpt-5.3-codex", "local/qwen3-8b"]

[[agents.list]]
id = "family"
model = { primary = "anthropic/claude-sonnet-4-5" }
slack = "family-app"
system_prompt = "You help the family."

[[agents.list]]
id = "plain"
model = "openai/gpt-5-mini"

[[agents.list]]
id = "solo"
model = { primary = "local/qwen3-8b", fallbacks = [] }

[[agents.list]]
id = "own"
model = { primary = "openai/gpt-5-mini", fallbacks = ["anthropic/claude-haiku-4-5"] }

[[agents.list]]
id = "default"

[[agents.list]]
id = "codex-first"
model = "openai/gpt-5.3-codex"

[chains.fast]
primary = "openai/gpt-5-mini"
fallbacks = ["local/qwen3-8b"]

[providers.anthropic]
api = "anthropic"
base_url = "https://api.anthropic.com/"
auth = ["anthropic-oauth-main", "anthropic-key-backup"]
headers = { "anthropic-beta" = "context-1m" }

[providers.anthropic.models.claude-opus-4-6]
context_window = 200000

[providers.openai]
api = "openai"
auth = ["openai-key"]

[providers.openai.models.gpt-5-mini]
wire = "responses"

[providers.local]
api = "openai-compatible"
base_url = "http://127.0.0.1:11434"

[auth.anthropic-key-backup]
provider = "anthropic"
type = "api-key"
key = "env:ANTHROPIC_API_KEY"

[auth.anthropic-oauth-main]
provider = "anthropic"
type = "oauth"
key = "file:oauth.json"

[auth.openai-key]
provider = "openai"
type = "api-key"
key = "env:OPENAI_API_KEY"

[slack.family-app]
app_token = "secret:slack/family-app/app"
bot_token = "file:/etc/flotilla/slack-bot"
"#;

fn env() -> Env {
    Env::from_pairs([
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("FLOTILLA_GATEWAY_KEY", GATEWAY_KEY),
        ("HOME", "/home/test"),
    ])
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_config(text, &env(), Path::new("/nonexistent-flotilla-test-dir"))
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected errors, the config was accepted"),
        Err(e) => e.errors,
    }
}

/// The one error at `path`, failing with the whole list if there is not exactly one.
fn error_at(text: &str, path: &str) -> ConfigError {
    let errors = errors_of(text);
    let at: Vec<&ConfigError> = errors.iter().filter(|e| e.path == path).collect();
    assert_eq!(
        at.len(),
        1,
        "expected one error at {path}, got: {:#?}",
        errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    at[0].clone()
}

fn with_base(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

fn r(provider: &str, model: &str) -> ModelRef {
    ModelRef { provider: provider.to_owned(), model: model.to_owned() }
}

/// A directory holding `oauth.json` with the given content, for `file:` references.
fn dir_with_oauth(content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oauth.json"), content).unwrap();
    dir
}

fn parse_full() -> Config {
    let dir = dir_with_oauth("oauth-access-token-TEST\n");
    parse_config(FULL, &env(), dir.path()).unwrap_or_else(|e| panic!("{e}"))
}

fn chain_of<'a>(config: &'a Config, id: &str) -> &'a [ModelRef] {
    &config.find_chain(id).unwrap().candidates
}

// ----- resolution -----

#[test]
fn an_agent_with_only_a_primary_inherits_the_default_fallbacks() {
    let config = parse_full();
    let family = &config.agents[0];
    assert_eq!(family.id, "family");
    assert_eq!(family.chain.name, "family");
    assert_eq!(
        family.chain.candidates,
        [r("anthropic", "claude-sonnet-4-5"), r("openai", "gpt-5.3-codex"), r("local", "qwen3-8b")]
    );
    assert_eq!(family.slack.as_deref(), Some("family-app"));
    assert_eq!(family.system_prompt.as_deref(), Some("You help the family."));
}

#[test]
fn the_string_model_form_also_inherits_the_default_fallbacks() {
    let config = parse_full();
    assert_eq!(
        chain_of(&config, "plain"),
        [r("openai", "gpt-5-mini"), r("openai", "gpt-5.3-codex"), r("local", "qwen3-8b")]
    );
}

#[test]
fn empty_fallbacks_override_the_defaults_and_own_fallbacks_replace_them() {
    let config = parse_full();
    assert_eq!(chain_of(&config, "solo"), [r("local", "qwen3-8b")]);
    assert_eq!(chain_of(&config, "own"), [r("openai", "gpt-5-mini"), r("anthropic", "claude-haiku-4-5")]);
}

#[test]
fn an_agent_without_model_gets_the_whole_default_chain_under_its_own_name() {
    let config = parse_full();
    let default = config.default_chain.as_ref().unwrap();
    assert_eq!(default.name, "agents.defaults");
    assert_eq!(
        default.candidates,
        [r("anthropic", "claude-opus-4-6"), r("openai", "gpt-5.3-codex"), r("local", "qwen3-8b")]
    );
    let agent = config.agents.iter().find(|a| a.id == "default").unwrap();
    assert_eq!(agent.chain.name, "default");
    assert_eq!(agent.chain.candidates, default.candidates);
    assert_eq!(config.find_chain("agents.defaults").unwrap().candidates, default.candidates);
}

#[test]
fn an_inherited_fallback_equal_to_the_agents_primary_is_dropped() {
    let config = parse_full();
    assert_eq!(chain_of(&config, "codex-first"), [r("openai", "gpt-5.3-codex"), r("local", "qwen3-8b")]);
}

#[test]
fn named_chains_resolve_and_are_found_by_name() {
    let config = parse_full();
    let fast = &config.chains["fast"];
    assert_eq!(fast.name, "fast");
    assert_eq!(fast.candidates, [r("openai", "gpt-5-mini"), r("local", "qwen3-8b")]);
    assert_eq!(config.find_chain("fast"), Some(fast));
    assert_eq!(config.find_chain("nope"), None);
}

#[test]
fn gateway_router_and_providers_are_checked_into_typed_values() {
    let config = parse_full();
    assert_eq!(config.gateway.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(config.gateway.keys.len(), 1);
    assert_eq!(config.gateway.keys[0].expose_secret(), GATEWAY_KEY);

    let router = &config.router;
    assert_eq!(router.ttfb_timeout, Duration::from_secs(20));
    assert_eq!(router.request_timeout, Duration::from_secs(120));
    assert_eq!(router.breaker_threshold, 5);
    assert_eq!(router.max_retry_after, Duration::from_secs(5400));
    assert!(!router.retry_transient);
    assert_eq!(router.retry_backoff, Duration::from_millis(250));

    let anthropic = &config.providers["anthropic"];
    assert_eq!(anthropic.api, ProviderApi::Anthropic);
    assert_eq!(anthropic.base_url, "https://api.anthropic.com");
    let names: Vec<&str> = anthropic.credentials.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["anthropic-oauth-main", "anthropic-key-backup"]);
    assert_eq!(anthropic.credentials[0].secret.expose_secret(), "oauth-access-token-TEST");
    assert_eq!(anthropic.credentials[0].kind, CredentialKind::OAuth { expires_at: None });
    assert_eq!(anthropic.credentials[1].kind, CredentialKind::ApiKey);
    assert_eq!(anthropic.credentials[1].secret.expose_secret(), ANTHROPIC_KEY);
    assert_eq!(anthropic.headers["anthropic-beta"], "context-1m");
    assert_eq!(anthropic.models["claude-opus-4-6"].context_window, Some(200_000));

    let openai = &config.providers["openai"];
    assert_eq!(openai.base_url, "https://api.openai.com");
    assert_eq!(openai.wire_api("gpt-5-mini"), WireApi::Responses);
    assert_eq!(openai.wire_api("gpt-5.3-codex"), WireApi::Responses);
    assert_eq!(openai.wire_api("gpt-4.1"), WireApi::ChatCompletions);
    let local = &config.providers["local"];
    assert!(local.credentials.is_empty());
    assert_eq!(local.wire_api("qwen3-8b"), WireApi::ChatCompletions);

    let slack = &config.slack["family-app"];
    assert_eq!(slack.app_token, "secret:slack/family-app/app");
    assert_eq!(slack.bot_token, "file:/etc/flotilla/slack-bot");
}

#[test]
fn a_relative_log_file_is_resolved_against_the_base_dir() {
    let dir = dir_with_oauth("tok");
    let config = parse_config(FULL, &env(), dir.path()).unwrap();
    assert_eq!(config.gateway.log_file, Some(dir.path().join("logs/gateway.log")));
}

#[test]
fn router_and_gateway_defaults_apply_when_the_sections_are_absent() {
    let config = parse(&with_base("[[agents.list]]\nid = \"a\"\nmodel = \"local/m\"")).unwrap();
    assert_eq!(config.gateway.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(config.gateway.keys.is_empty());
    assert_eq!(config.gateway.log_file, None);
    let r = &config.router;
    assert_eq!(r.ttfb_timeout, Duration::from_secs(30));
    assert_eq!(r.request_timeout, Duration::from_secs(300));
    assert_eq!(r.breaker_threshold, 3);
    assert_eq!(r.overload_cooldown, Duration::from_secs(15));
    assert_eq!(r.transient_cooldown, Duration::from_secs(5));
    assert_eq!(r.auth_cooldown, Duration::from_secs(300));
    assert_eq!(r.billing_cooldown, Duration::from_secs(3 * 3600));
    assert_eq!(r.rate_limit_cooldown, Duration::from_secs(30));
    assert_eq!(r.max_retry_after, Duration::from_secs(300));
    assert!(r.retry_transient);
    assert_eq!(r.retry_backoff, Duration::from_millis(100));
    assert_eq!(config.default_chain, None);
}

#[test]
fn the_incident_fix_resolves_codex_over_the_responses_api() {
    // The OpenClaw incident: Opus primary, Codex fallback on a provider of its own whose
    // requests must go to the Responses API.
    let text = r#"
[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai-codex/gpt-5.3-codex"]

[[agents.list]]
id = "family"

[providers.anthropic]
api = "anthropic"
auth = ["anthropic-key"]

[providers.openai-codex]
api = "openai"
auth = ["codex-key"]

[auth.anthropic-key]
provider = "anthropic"
type = "api-key"
key = "env:ANTHROPIC_API_KEY"

[auth.codex-key]
provider = "openai-codex"
type = "api-key"
key = "env:OPENAI_API_KEY"
"#;
    let result = parse(text);
    let config = result.as_ref().unwrap();
    let chain = chain_of(config, "family");
    assert_eq!(chain, [r("anthropic", "claude-opus-4-6"), r("openai-codex", "gpt-5.3-codex")]);
    let codex = &config.providers["openai-codex"];
    assert_eq!(codex.api, ProviderApi::OpenAi);
    assert_eq!(codex.wire_api(&chain[1].model), WireApi::Responses);
    assert_eq!(config.providers["anthropic"].wire_api(&chain[0].model), WireApi::Messages);
    let report = render_check_report(&result);
    let line = report.lines().find(|l| l.contains("openai-codex/gpt-5.3-codex")).unwrap();
    assert!(line.contains("openai responses"), "{line}");
    assert!(line.contains("auth: codex-key"), "{line}");
}

// ----- OAuth token files -----

fn oauth_config(extra_auth: &str) -> String {
    format!(
        r#"
[providers.anthropic]
api = "anthropic"
auth = ["oauth"]

[auth.oauth]
provider = "anthropic"
type = "oauth"
key = "file:oauth.json"
{extra_auth}
"#
    )
}

fn oauth_credential(file: &str, extra_auth: &str) -> (String, CredentialKind) {
    let dir = dir_with_oauth(file);
    let config = parse_config(&oauth_config(extra_auth), &env(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let c = &config.providers["anthropic"].credentials[0];
    (c.secret.expose_secret().to_owned(), c.kind.clone())
}

#[test]
fn oauth_json_in_openclaw_shape_gives_token_and_expiry_in_milliseconds() {
    let (token, kind) = oauth_credential(
        r#"{"type": "oauth", "provider": "anthropic", "access": "sk-ant-oat-TEST", "refresh": "r", "expires": 1798761600123}"#,
        "",
    );
    assert_eq!(token, "sk-ant-oat-TEST");
    assert_eq!(kind, CredentialKind::OAuth { expires_at: Some(UNIX_EPOCH + Duration::from_millis(1_798_761_600_123)) });
}

#[test]
fn oauth_json_with_access_token_and_rfc3339_expiry() {
    let (token, kind) =
        oauth_credential(r#"{"access_token": "tok-TEST", "expires_at": "2026-12-01T01:30:00+01:00"}"#, "");
    assert_eq!(token, "tok-TEST");
    // 2026-12-01T00:30:00Z
    assert_eq!(kind, CredentialKind::OAuth { expires_at: Some(UNIX_EPOCH + Duration::from_secs(1_796_085_000)) });
}

#[test]
fn the_toml_expires_at_overrides_the_file_in_string_or_datetime_form() {
    let file = r#"{"access": "tok", "expires": 1000}"#;
    let expected = CredentialKind::OAuth { expires_at: Some(UNIX_EPOCH + Duration::from_secs(1_796_083_200)) };
    let (_, kind) = oauth_credential(file, r#"expires_at = "2026-12-01T00:00:00Z""#);
    assert_eq!(kind, expected);
    let (_, kind) = oauth_credential(file, "expires_at = 2026-12-01T00:00:00Z");
    assert_eq!(kind, expected);
}

#[test]
fn a_fractional_expiry_is_accepted_and_a_negative_one_rejected() {
    let (_, kind) = oauth_credential(r#"{"access": "tok", "expires": 1500.0}"#, "");
    assert_eq!(kind, CredentialKind::OAuth { expires_at: Some(UNIX_EPOCH + Duration::from_millis(1500)) });
    let dir = dir_with_oauth(r#"{"access": "tok", "expires": -5}"#);
    let err = parse_config(&oauth_config(""), &env(), dir.path()).unwrap_err();
    assert!(err.to_string().contains("has an invalid \"expires\""), "{err}");
}

#[test]
fn a_bare_oauth_token_has_no_known_expiry() {
    let (token, kind) = oauth_credential("  bare-token-TEST\n", "");
    assert_eq!(token, "bare-token-TEST");
    assert_eq!(kind, CredentialKind::OAuth { expires_at: None });
}

#[test]
fn bad_oauth_files_are_reported_without_their_content() {
    let dir = dir_with_oauth(r#"{"refresh": "SECRET-REFRESH-TOKEN"}"#);
    let err = parse_config(&oauth_config(""), &env(), dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("auth.oauth.key: file "), "{text}");
    assert!(text.contains("has no \"access\" or \"access_token\" field"), "{text}");
    assert!(!text.contains("SECRET-REFRESH-TOKEN"), "{text}");

    let dir = dir_with_oauth(r#"{"access": 42, "note": "SECRET-IN-BROKEN-JSON"}"#);
    let err = parse_config(&oauth_config(""), &env(), dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("is not a valid OAuth token file"), "{text}");
    assert!(!text.contains("SECRET-IN-BROKEN-JSON"), "{text}");

    let dir = dir_with_oauth(r#"{"access": "tok", "expires_at": "next tuesday"}"#);
    let err = parse_config(&oauth_config(""), &env(), dir.path()).unwrap_err();
    assert!(err.to_string().contains("invalid \"expires_at\""), "{err}");
}

#[test]
fn expires_at_must_be_rfc3339_and_only_on_oauth_profiles() {
    let dir = dir_with_oauth("tok");
    let err = parse_config(&oauth_config(r#"expires_at = "2026-12-01""#), &env(), dir.path()).unwrap_err();
    assert_eq!(err.errors[0].path, "auth.oauth.expires_at");
    assert!(err.errors[0].message.contains("RFC 3339"), "{err}");

    let e = error_at(
        &with_base(
            r#"
[auth.spare]
provider = "anthropic"
type = "api-key"
key = "env:ANTHROPIC_API_KEY"
expires_at = "2026-12-01T00:00:00Z"
"#,
        ),
        "auth.spare.expires_at",
    );
    assert_eq!(e.message, "expires_at is only for type = \"oauth\"");
}

// ----- error kinds -----

#[test]
fn a_typo_in_a_fallback_provider_suggests_the_closest_provider() {
    let text = with_base(
        r#"
[[agents.list]]
id = "family"
model = { primary = "anthropic/claude-sonnet-4-5", fallbacks = ["opnai/gpt-5.3-codex"] }
"#,
    );
    let e = error_at(&text, "agents.list[0].model.fallbacks[0]");
    assert_eq!(
        e.to_string(),
        "agents.list[0].model.fallbacks[0]: unknown provider \"opnai\"; did you mean \"openai\"?"
    );
    assert_eq!(e.suggestion.as_deref(), Some("openai"));
}

#[test]
fn an_unknown_field_suggests_the_known_one_with_a_position() {
    let text = "[[agents.list]]\nid = \"a\"\nmodel = { primary = \"local/m\", fallback = [] }\n";
    let e = error_at(&with_base(text), "agents.list[0].model.fallback");
    assert_eq!(e.message, "unknown field \"fallback\"");
    assert_eq!(e.suggestion.as_deref(), Some("fallbacks"));
    let pos = e.position.unwrap();
    let base_lines = with_base("").lines().count();
    assert_eq!(pos.line, base_lines + 3);
    assert_eq!(pos.column, 32);
    assert!(e.to_string().ends_with(&format!("; did you mean \"fallbacks\"? (line {}, column 32)", pos.line)));
}

#[test]
fn an_unknown_field_far_from_any_known_one_lists_the_expected_fields() {
    let e = error_at(&with_base("[gateway]\nbananas = 1\n"), "gateway.bananas");
    assert_eq!(e.suggestion, None);
    assert_eq!(e.message, "unknown field \"bananas\" (expected \"listen\", \"keys\", \"log_file\", \"data_dir\")");
}

#[test]
fn every_unknown_field_of_one_table_is_reported() {
    let errors = errors_of(&with_base("[router]\nttfb = \"1s\"\nbreaker = 2\nretry_backof = \"1s\"\n"));
    let got: Vec<(&str, Option<&str>)> = errors.iter().map(|e| (e.path.as_str(), e.suggestion.as_deref())).collect();
    assert_eq!(
        got,
        [
            ("router.breaker", Some("breaker_threshold")),
            ("router.retry_backof", Some("retry_backoff")),
            ("router.ttfb", Some("ttfb_timeout")),
        ]
    );
}

#[test]
fn a_misspelt_required_field_is_not_also_reported_missing() {
    let errors = errors_of(&with_base("[[agents.list]]\nidd = \"x\"\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "agents.list[0].idd");
    assert_eq!(errors[0].suggestion.as_deref(), Some("id"));
}

#[test]
fn a_missing_required_field_names_it() {
    let e = error_at(&with_base("[auth.x]\nprovider = \"openai\"\nkey = \"env:OPENAI_API_KEY\"\n"), "auth.x");
    assert_eq!(e.message, "missing field \"type\"");
}

#[test]
fn unknown_top_level_and_agents_keys_are_reported_with_suggestions() {
    let errors = errors_of(&with_base("[agents]\ndefault = {}\n[provider.x]\napi = \"openai\"\n"));
    let got: Vec<String> = errors.iter().map(|e| format!("{} {:?}", e.path, e.suggestion)).collect();
    assert!(got.contains(&"provider Some(\"providers\")".to_owned()), "{got:?}");
    assert!(got.contains(&"agents.default Some(\"defaults\")".to_owned()), "{got:?}");
}

#[test]
fn an_unknown_api_value_suggests_the_closest() {
    let e = error_at(&with_base("[providers.x]\napi = \"opnai\"\n"), "providers.x.api");
    assert_eq!(e.message, "unknown value \"opnai\"");
    assert_eq!(e.suggestion.as_deref(), Some("openai"));
}

#[test]
fn a_broken_provider_does_not_cause_unknown_provider_errors_elsewhere() {
    let errors = errors_of(&with_base(
        "[providers.codex]\napi = \"openai\"\nbase_url = 5\n[[agents.list]]\nid = \"a\"\nmodel = \"codex/gpt-5.3-codex\"\n",
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "providers.codex.base_url");
}

#[test]
fn toml_syntax_errors_have_a_line_and_column() {
    let errors = errors_of("[gateway]\nlisten = 127.0.0.1:8080\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "");
    assert!(errors[0].message.starts_with("invalid TOML: "), "{}", errors[0]);
    assert_eq!(errors[0].position.unwrap().line, 2);
}

#[test]
fn agent_ids_must_be_unique_non_empty_and_usable_as_a_model_name() {
    let errors = errors_of(&with_base(
        r#"
[[agents.list]]
id = "family"
model = "local/m"
[[agents.list]]
id = ""
model = "local/m"
[[agents.list]]
id = "family"
model = "local/m"
[[agents.list]]
id = "a/b"
model = "local/m"
"#,
    ));
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "agents.list[1].id: agent id is empty",
            "agents.list[2].id: duplicate agent id \"family\" (also agents.list[0].id)",
            "agents.list[3].id: agent id \"a/b\" must not contain '/' or whitespace",
        ]
    );
}

#[test]
fn an_agents_slack_app_must_exist() {
    let e = error_at(
        &with_base("[[agents.list]]\nid = \"a\"\nmodel = \"local/m\"\nslack = \"family\"\n"),
        "agents.list[0].slack",
    );
    assert_eq!(e.message, "unknown slack app \"family\"");
    assert_eq!(e.suggestion.as_deref(), Some("family-app"));
}

#[test]
fn auth_profiles_must_exist_and_belong_to_the_provider_listing_them() {
    let text = r#"
[providers.anthropic]
api = "anthropic"
auth = ["anthropic-kye", "openai-key", "anthropic-key", "anthropic-key"]
[providers.openai]
api = "openai"
[auth.anthropic-key]
provider = "anthropic"
type = "api-key"
key = "env:ANTHROPIC_API_KEY"
[auth.openai-key]
provider = "openai"
type = "api-key"
key = "env:OPENAI_API_KEY"
[auth.orphan]
provider = "antropic"
type = "api-key"
key = "env:UNSET_BUT_UNUSED"
"#;
    let got: Vec<String> = errors_of(text).iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "auth.orphan.provider: unknown provider \"antropic\"; did you mean \"anthropic\"?",
            "providers.anthropic.auth[0]: unknown auth profile \"anthropic-kye\"; did you mean \"anthropic-key\"?",
            "providers.anthropic.auth[1]: auth profile \"openai-key\" is for provider \"openai\" (auth.openai-key.provider), not \"anthropic\"",
            "providers.anthropic.auth[3]: auth profile \"anthropic-key\" is listed twice (also at auth[2])",
        ]
    );
}

#[test]
fn an_unset_environment_variable_is_named() {
    let text = with_base("");
    let err = parse_config(&text, &Env::from_pairs([("OPENAI_API_KEY", OPENAI_KEY)]), Path::new("/")).unwrap_err();
    assert_eq!(err.to_string(), "auth.anthropic-key.key: environment variable ANTHROPIC_API_KEY is not set");
}

#[test]
fn an_empty_environment_variable_is_an_error() {
    let err = parse_config(
        &with_base(""),
        &Env::from_pairs([("ANTHROPIC_API_KEY", " \n"), ("OPENAI_API_KEY", "x")]),
        Path::new("/"),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "auth.anthropic-key.key: environment variable ANTHROPIC_API_KEY is empty");
}

#[test]
fn an_unreadable_secret_file_is_named_and_relative_paths_use_the_base_dir() {
    let text = "[gateway]\nkeys = [\"file:keys/gateway\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let err = parse_config(text, &env(), dir.path()).unwrap_err();
    let expected = dir.path().join("keys/gateway");
    assert_eq!(err.errors[0].path, "gateway.keys[0]");
    assert!(err.errors[0].message.starts_with(&format!("cannot read file {}: ", expected.display())), "{err}");

    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(&expected, "  from-file-TEST\n").unwrap();
    let config = parse_config(text, &env(), dir.path()).unwrap();
    assert_eq!(config.gateway.keys[0].expose_secret(), "from-file-TEST");
}

#[test]
fn a_home_relative_secret_file_uses_home_from_the_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), "home-key").unwrap();
    let env = Env::from_pairs([("HOME", dir.path().to_str().unwrap())]);
    let config = parse_config("[gateway]\nkeys = [\"file:~/k\"]\n", &env, Path::new("/")).unwrap();
    assert_eq!(config.gateway.keys[0].expose_secret(), "home-key");
}

#[test]
fn a_secret_file_with_two_lines_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), "key-one\nkey-two\n").unwrap();
    let err = parse_config("[gateway]\nkeys = [\"file:k\"]\n", &env(), dir.path()).unwrap_err();
    assert!(err.to_string().contains("whitespace or control characters"), "{err}");
    assert!(!err.to_string().contains("key-one"), "{err}");
}

#[test]
fn literal_secrets_are_rejected_with_a_hint_and_without_echo() {
    let text = r#"
[gateway]
keys = ["sk-literal-TEST-secret"]
[slack.app]
app_token = "xapp-1-LITERAL-TEST"
bot_token = "evn:SLACK_BOT"
"#;
    let errors = errors_of(text);
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "gateway.keys[0]: a literal secret is not allowed in the config file; write \"env:VAR\" or \"file:PATH\"",
            "slack.app.app_token: a literal secret is not allowed in the config file; write \"env:VAR\", \"file:PATH\" or \"secret:PATH\"",
            "slack.app.bot_token: unknown secret reference \"evn:\" (write \"env:VAR\", \"file:PATH\" or \"secret:PATH\"); did you mean \"env:\"?",
        ]
    );
}

#[test]
fn secret_store_references_are_only_for_slack_tokens() {
    let e = error_at("[gateway]\nkeys = [\"secret:gw\"]\n", "gateway.keys[0]");
    assert!(e.message.starts_with("secret: references are resolved only on fleet nodes"), "{e}");
}

const STORE_CONFIG: &str = r#"
[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
[[agents.list]]
id = "family"
slack = "fam"
node = "mini-1"
[providers.anthropic]
api = "anthropic"
auth = ["ant-oauth", "ant-key"]
[auth.ant-key]
provider = "anthropic"
type = "api-key"
key = "secret:keys/anthropic"
[slack.fam]
app_token = "secret:slack/fam/app"
bot_token = "secret:slack/fam/bot"
"#;

fn store_env(secrets: &[(&str, &str)], auth: &[(&str, &str, &str)]) -> Env {
    let mut st = StoreSecrets::default();
    for (k, v) in secrets {
        st.secrets.insert((*k).to_owned(), SecretString::from(*v));
    }
    for (name, provider, token) in auth {
        st.auth.insert(
            (*name).to_owned(),
            StoredAuth {
                provider: (*provider).to_owned(),
                kind: CredentialKind::OAuth { expires_at: None },
                secret: SecretString::from(*token),
            },
        );
    }
    env().with_store(st)
}

#[test]
fn on_a_fleet_node_store_secrets_and_stored_auth_profiles_resolve() {
    let env = store_env(
        &[("keys/anthropic", "sk-ant-STORE"), ("slack/fam/app", "xapp-1-STORE"), ("slack/fam/bot", "xoxb-STORE")],
        &[("ant-oauth", "anthropic", "oauth-access-STORE")],
    );
    let c = parse_config(STORE_CONFIG, &env, Path::new("/")).expect("valid with the store");
    let p = &c.providers["anthropic"];
    let names: Vec<&str> = p.credentials.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ant-oauth", "ant-key"]);
    assert_eq!(p.credentials[0].secret.expose_secret(), "oauth-access-STORE");
    assert!(matches!(p.credentials[0].kind, CredentialKind::OAuth { .. }));
    assert_eq!(p.credentials[1].secret.expose_secret(), "sk-ant-STORE");
    let app = &c.slack["fam"];
    assert_eq!(app.app_secret.as_ref().map(|s| s.expose_secret().to_owned()), Ok("xapp-1-STORE".to_owned()));
    assert_eq!(app.bot_secret.as_ref().map(|s| s.expose_secret().to_owned()), Ok("xoxb-STORE".to_owned()));
    assert_eq!(c.agents[0].node.as_deref(), Some("mini-1"));
    // Debug of the environment names what it holds, never the values.
    let dbg = format!("{env:?}");
    assert!(dbg.contains("ant-oauth") && !dbg.contains("oauth-access-STORE") && !dbg.contains("sk-ant-STORE"), "{dbg}");
}

#[test]
fn store_problems_name_the_path_and_the_fix() {
    // The key is missing from the store and the stored profile is for another provider.
    let env = store_env(&[], &[("ant-oauth", "openai", "tok")]);
    let errors = parse_config(STORE_CONFIG, &env, Path::new("/")).expect_err("must fail");
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        got.iter().any(|e| e.starts_with(
            "providers.anthropic.auth[0]: auth profile \"ant-oauth\" in the cluster store is for provider \"openai\""
        )),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|e| e.starts_with(
            "auth.ant-key.key: cluster store secret keys/anthropic does not exist; add it with `flotilla auth secret"
        )),
        "{got:#?}"
    );
    // An unknown profile suggests names from the store too.
    let env = store_env(&[("keys/anthropic", "k")], &[("ant-oauth2", "anthropic", "tok")]);
    let errors = parse_config(STORE_CONFIG, &env, Path::new("/")).expect_err("must fail");
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(got.iter().any(|e| e.contains("did you mean \"ant-oauth2\"")), "{got:#?}");
    // Without the store (config check on a laptop), the slack tokens are simply unresolved.
    let errors = parse(STORE_CONFIG).expect_err("auth.ant-key.key is secret: without a store");
    assert!(errors.iter().any(|e| e.path == "auth.ant-key.key"), "{errors}");
}

#[test]
fn base_urls_must_be_http_and_lose_their_trailing_slash() {
    let errors = errors_of(
        r#"
[providers.a]
api = "openai-compatible"
base_url = "localhost:8000"
[providers.b]
api = "openai-compatible"
base_url = "ftp://example.com"
[providers.c]
api = "openai-compatible"
base_url = "http://127.0.0.1:11434/v1/"
[providers.d]
api = "openai-compatible"
[providers.e]
api = "openai-compatible"
base_url = "https://example.com/api?x=1"
"#,
    );
    let got: Vec<(String, Option<String>)> = errors.into_iter().map(|e| (e.path, e.suggestion)).collect();
    assert_eq!(
        got,
        [
            ("providers.a.base_url".into(), Some("https://localhost:8000".into())),
            ("providers.b.base_url".into(), None),
            ("providers.c.base_url".into(), Some("http://127.0.0.1:11434".into())),
            ("providers.d".into(), None),
            ("providers.e.base_url".into(), None),
        ]
    );
    let config = parse("[providers.x]\napi = \"openai-compatible\"\nbase_url = \"http://h:1/prefix//\"\n").unwrap();
    assert_eq!(config.providers["x"].base_url, "http://h:1/prefix");

    let e = error_at(
        "[providers.x]\napi = \"openai\"\nbase_url = \"https://me:sk-URL-TEST@api.example.com\"\n",
        "providers.x.base_url",
    );
    assert!(e.message.starts_with("base_url must not contain credentials"), "{e}");
    assert!(!e.to_string().contains("sk-URL-TEST"), "{e}");
}

#[test]
fn credentials_are_not_allowed_in_headers_and_wire_only_for_openai() {
    let errors = errors_of(
        r#"
[providers.a]
api = "anthropic"
headers = { "x-api-key" = "sk-in-header-TEST", "bad header" = "v" }
[providers.a.models.claude]
wire = "responses"
"#,
    );
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "providers.a.headers.\"bad header\": invalid header name \"bad header\"",
            "providers.a.headers.x-api-key: \"x-api-key\" carries a credential: put it in an [auth.*] profile listed in auth = [...]",
            "providers.a.models.claude.wire: wire is only for api = \"openai\"; this provider's api always uses messages",
        ]
    );
    assert!(!got.concat().contains("sk-in-header-TEST"));
}

#[test]
fn listen_must_parse_and_non_loopback_needs_keys() {
    let e = error_at("[gateway]\nlisten = \"localhost:8080\"\n", "gateway.listen");
    assert_eq!(e.suggestion.as_deref(), Some("127.0.0.1:8080"));

    let e = error_at("[gateway]\nlisten = \"0.0.0.0:8080\"\n", "gateway.listen");
    assert_eq!(e.to_string(), "gateway.listen: refusing to listen on 0.0.0.0:8080 without [gateway].keys");
    let e = error_at("[gateway]\nlisten = \"[::]:8080\"\nkeys = []\n", "gateway.listen");
    assert_eq!(e.message, "refusing to listen on [::]:8080 without [gateway].keys");

    assert!(parse("[gateway]\nlisten = \"[::1]:8080\"\n").is_ok());
    assert!(parse("[gateway]\nlisten = \"0.0.0.0:8080\"\nkeys = [\"env:FLOTILLA_GATEWAY_KEY\"]\n").is_ok());
}

#[test]
fn durations_must_parse_and_bare_numbers_get_a_unit_suggested() {
    let errors = errors_of(
        "[router]\nttfb_timeout = 30\nrequest_timeout = \"5 minutes\"\nbilling_cooldown = \"0s\"\nbreaker_threshold = 0\nretry_backoff = \"1h 2m 3s 4ms\"\n",
    );
    let got: Vec<(String, Option<String>)> = errors.into_iter().map(|e| (e.path, e.suggestion)).collect();
    assert_eq!(
        got,
        [
            ("router.ttfb_timeout".into(), Some("30s".into())),
            ("router.request_timeout".into(), None),
            ("router.breaker_threshold".into(), None),
        ]
    );
    let config = parse("[router]\nretry_backoff = \"1h 2m 3s 4ms\"\nttfb_timeout = \"2d\"\n").unwrap();
    assert_eq!(config.router.retry_backoff, Duration::from_millis(3_723_004));
    assert_eq!(config.router.ttfb_timeout, Duration::from_secs(2 * 86_400));
    let e = error_at("[router]\nttfb_timeout = \"0ms\"\n", "router.ttfb_timeout");
    assert_eq!(e.message, "must be greater than zero");
}

#[test]
fn an_agent_with_no_model_and_no_defaults_is_an_error() {
    let e = error_at(&with_base("[[agents.list]]\nid = \"lonely\"\n"), "agents.list[0]");
    assert!(e.message.starts_with("agent \"lonely\" has no model and there is no [agents.defaults.model]"), "{e}");
}

#[test]
fn a_fallback_equal_to_the_primary_or_repeated_is_an_error() {
    let errors = errors_of(&with_base(
        r#"
[agents.defaults.model]
primary = "openai/gpt-5"
fallbacks = ["local/m", "openai/gpt-5", "local/m"]
[chains.x]
primary = "local/a"
fallbacks = ["local/b", "local/b"]
"#,
    ));
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "agents.defaults.model.fallbacks[1]: fallback \"openai/gpt-5\" is the same as the primary",
            "agents.defaults.model.fallbacks[2]: \"local/m\" appears twice in the chain (also at agents.defaults.model.fallbacks[0])",
            "chains.x.fallbacks[1]: \"local/b\" appears twice in the chain (also at chains.x.fallbacks[0])",
        ]
    );
}

#[test]
fn chain_names_must_not_collide_with_agent_ids() {
    let e = error_at(
        &with_base("[[agents.list]]\nid = \"family\"\nmodel = \"local/m\"\n[chains.family]\nprimary = \"local/m\"\n"),
        "chains.family",
    );
    assert!(e.message.starts_with("chain name \"family\" is also an agent id (agents.list[0].id)"), "{e}");
}

#[test]
fn a_model_reference_needs_provider_and_model() {
    let text = with_base(
        r#"
[providers.anthropic.models.claude-opus-4-6]
context_window = 200000
[chains.c]
primary = "claude-opus-4-6"
fallbacks = ["openai/", "/x"]
"#,
    );
    let errors = errors_of(&text);
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "chains.c.primary: invalid model reference \"claude-opus-4-6\": expected \"provider/model\"; did you mean \"anthropic/claude-opus-4-6\"?",
            "chains.c.fallbacks[0]: invalid model reference \"openai/\": expected \"provider/model\"",
            "chains.c.fallbacks[1]: invalid model reference \"/x\": expected \"provider/model\"",
        ]
    );
}

#[test]
fn every_error_is_collected_at_once() {
    let text = r#"
[gateway]
listen = "0.0.0.0:8080"

[router]
ttfb_timeout = "soon"

[agents.defaults.model]
primary = "anthropc/claude-opus-4-6"

[[agents.list]]
id = "family"
model = { primary = "openai/gpt-5", fallback = [] }

[[agents.list]]
id = "coder"
model = "opnai/gpt-5.3-codex"
slack = "familyapp"

[providers.anthropic]
api = "anthropic"
auth = ["anthropic-key"]

[providers.openai]
api = "openai"
base_url = "https://api.openai.com/v1"

[auth.anthropic-key]
provider = "anthropic"
type = "api-key"
key = "env:NOT_SET_ANYWHERE"

[slack.family-app]
app_token = "env:SLACK_APP"
bot_tokn = "env:SLACK_BOT"
"#;
    let err = parse(text).unwrap_err();
    let mut paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "agents.defaults.model.primary",
            "agents.list[0].model.fallback",
            "agents.list[1].model",
            "agents.list[1].slack",
            "auth.anthropic-key.key",
            "gateway.listen",
            "providers.openai.base_url",
            "router.ttfb_timeout",
            "slack.family-app.bot_tokn",
        ]
    );
    let report = render_check_report(&Err(err));
    assert_eq!(report.lines().count(), 10);
    assert!(report.ends_with("\n9 errors\n"), "{report}");
}

// ----- secrets stay secret -----

#[test]
fn secrets_never_appear_in_debug_or_the_report() {
    let dir = dir_with_oauth(r#"{"access": "sk-ant-oat-TEST-SECRET", "expires": 1798761600000}"#);
    let result = parse_config(FULL, &env(), dir.path());
    let config = result.as_ref().unwrap();
    let outputs = [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.providers["anthropic"].credentials),
        format!("{:?}", config.gateway),
        format!("{:?}", env()),
        render_check_report(&result),
    ];
    for out in &outputs {
        for secret in [ANTHROPIC_KEY, OPENAI_KEY, GATEWAY_KEY, "sk-ant-oat-TEST-SECRET"] {
            assert!(!out.contains(secret), "{secret} leaked into:\n{out}");
        }
    }
    // The Debug output is still useful: it names the credentials.
    assert!(outputs[0].contains("anthropic-oauth-main"));
    assert!(outputs[4].contains("ANTHROPIC_API_KEY"));
}

#[test]
fn secrets_in_the_wrong_place_are_not_echoed_by_errors() {
    // A key pasted where a list or a reference belongs, in every field that takes one.
    let text = r#"
[gateway]
keys = "sk-ant-PASTED-TEST-1"
[auth.a]
provider = "anthropic"
type = "api-key"
key = "sk-ant-PASTED-TEST-2"
[providers.anthropic]
api = "anthropic"
auth = ["a"]
[slack.s]
app_token = "xapp-PASTED-TEST-3"
bot_token = ["xoxb-PASTED-TEST-4"]
"#;
    let err = parse(text).unwrap_err();
    assert_eq!(err.len(), 3, "{err}");
    let outputs = [err.to_string(), format!("{err:?}"), render_check_report(&Err(err))];
    for out in &outputs {
        assert!(!out.contains("PASTED"), "leaked:\n{out}");
    }
    assert!(outputs[0].contains("gateway.keys: invalid type: string, expected a sequence"), "{}", outputs[0]);
}

// ----- report -----

#[test]
fn the_report_lists_each_chain_with_wire_api_and_credential_names() {
    let text = r#"
[gateway]
listen = "127.0.0.1:8080"
keys = ["env:FLOTILLA_GATEWAY_KEY"]

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai/gpt-5.3-codex"]

[[agents.list]]
id = "family"
model = { primary = "anthropic/claude-sonnet-4-5" }
slack = "family-app"

[[agents.list]]
id = "local"
model = { primary = "local/qwen3-8b", fallbacks = [] }

[chains.fast]
primary = "openai/gpt-5-mini"

[providers.anthropic]
api = "anthropic"
auth = ["anthropic-oauth-main", "anthropic-key-backup"]

[providers.openai]
api = "openai"
auth = ["openai-key"]

[providers.local]
api = "openai-compatible"
base_url = "http://127.0.0.1:11434"

[auth.anthropic-oauth-main]
provider = "anthropic"
type = "oauth"
key = "file:oauth.json"

[auth.anthropic-key-backup]
provider = "anthropic"
type = "api-key"
key = "env:ANTHROPIC_API_KEY"

[auth.openai-key]
provider = "openai"
type = "api-key"
key = "env:OPENAI_API_KEY"

[slack.family-app]
app_token = "secret:slack/family-app/app"
bot_token = "secret:slack/family-app/bot"
"#;
    let dir = dir_with_oauth("tok");
    let report = render_check_report(&parse_config(text, &env(), dir.path()));
    let expected = "\
gateway: listen 127.0.0.1:8080, 1 client key

agent family (slack: family-app)
  1. anthropic/claude-sonnet-4-5   anthropic messages                   auth: anthropic-oauth-main, anthropic-key-backup
  2. openai/gpt-5.3-codex          openai responses                     auth: openai-key

agent local
  1. local/qwen3-8b                openai-compatible chat-completions   auth: none

chain fast
  1. openai/gpt-5-mini             openai chat-completions              auth: openai-key

default chain (agents.defaults)
  1. anthropic/claude-opus-4-6     anthropic messages                   auth: anthropic-oauth-main, anthropic-key-backup
  2. openai/gpt-5.3-codex          openai responses                     auth: openai-key

ok: 2 agents, 1 named chain, 3 providers, 1 slack app
";
    assert_eq!(report, expected, "\n{report}");
}

#[test]
fn the_error_report_counts_errors() {
    let report = render_check_report(&parse("[gateway]\nlisten = \"nope\"\n"));
    assert_eq!(
        report,
        "gateway.listen: invalid listen address \"nope\": expected IP:PORT such as \"127.0.0.1:8080\"\n1 error\n"
    );
}

// ----- files -----

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flotilla.toml")
}

fn example_env() -> Env {
    Env::from_pairs([
        ("FLOTILLA_GATEWAY_KEY", GATEWAY_KEY),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("OPENAI_API_KEY", OPENAI_KEY),
    ])
}

#[test]
fn the_documented_example_config_parses() {
    // Copied next to the token file it references, and loaded the way the binary loads it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flotilla.toml");
    std::fs::copy(example_path(), &path).unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/anthropic-oauth.json"),
        r#"{"access": "sk-ant-oat-EXAMPLE", "refresh": "r", "expires": 1798761600000}"#,
    )
    .unwrap();
    let result = load_config(&path, &example_env());
    let config = result.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = config.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["family", "coder", "offline", "assistant"]);
    assert_eq!(
        chain_of(config, "family"),
        [r("anthropic", "claude-sonnet-4-5"), r("openai-codex", "gpt-5.3-codex"), r("local", "qwen3-8b")]
    );
    assert_eq!(chain_of(config, "coder"), [r("openai-codex", "gpt-5.3-codex"), r("local", "qwen3-8b")]);
    assert_eq!(chain_of(config, "offline"), [r("local", "qwen3-8b")]);
    assert_eq!(chain_of(config, "assistant").len(), 3);
    assert_eq!(config.providers["openai-codex"].wire_api("gpt-5.3-codex"), WireApi::Responses);
    assert_eq!(
        config.providers["anthropic"].credentials[0].kind,
        CredentialKind::OAuth { expires_at: Some(UNIX_EPOCH + Duration::from_millis(1_798_761_600_000)) }
    );
    let report = render_check_report(&result);
    assert!(report.contains("agent family (slack: family-app)"), "{report}");
}

#[test]
fn the_example_without_its_environment_names_every_missing_variable() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let err = parse_config(&text, &Env::default(), Path::new("/nonexistent-flotilla-test-dir")).unwrap_err();
    let text = err.to_string();
    for var in ["FLOTILLA_GATEWAY_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"] {
        assert!(text.contains(&format!("environment variable {var} is not set")), "{text}");
    }
    assert!(text.contains("secrets/anthropic-oauth.json"), "{text}");
}

#[test]
fn load_config_names_an_unreadable_file() {
    let err = load_config(Path::new("/nonexistent-flotilla-test-dir/f.toml"), &env()).unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err.errors[0].path, "/nonexistent-flotilla-test-dir/f.toml");
    assert!(err.errors[0].message.starts_with("cannot read config file: "), "{err}");
    assert_eq!(err.exit_code(), 78);
}
