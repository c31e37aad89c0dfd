//! OAuth refresh against the Anthropic simulator's token endpoint over loopback, end to end
//! with credential records: import, refresh, reuse, failures, sealing the result.

#![allow(clippy::expect_used, reason = "test setup failures should panic with context")]

use std::time::{Duration, SystemTime};

use flotilla_auth::oauth::refresh_margin;
use flotilla_auth::{KeyFile, OAuthOptions, RefreshError, StoredCredential, open_credential, seal_credential};
use flotilla_sim::{OAUTH_TOKEN_PATH, SimConfig, SimServer};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

const SEED_ACCESS: &str = "sk-ant-oat01-seeded-TOPSECRET";
const SEED_REFRESH: &str = "sk-ant-ort01-seeded-TOPSECRET";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

/// A simulator holding the seeded tokens, and the credential `flotilla auth add` would make
/// from a Claude Code file, pointed at the simulator.
async fn setup() -> (SimServer, StoredCredential) {
    let sim = flotilla_sim::spawn(SimConfig::anthropic()).await.expect("simulator");
    sim.handle().seed_refresh_token(SEED_REFRESH);
    sim.handle().seed_access_token(SEED_ACCESS, Duration::from_secs(60));
    let file = json!({"claudeAiOauth": {"accessToken": SEED_ACCESS, "refreshToken": SEED_REFRESH, "expiresAt": 1_767_225_600_000_u64}});
    let opts = OAuthOptions { token_url: Some(format!("{}{OAUTH_TOKEN_PATH}", sim.url())), ..OAuthOptions::default() };
    let cred = StoredCredential::from_oauth_json("anthropic", file.to_string().as_bytes(), "test file", &opts)
        .expect("credential");
    (sim, cred)
}

async fn message_status(sim: &SimServer, bearer: &str) -> u16 {
    client()
        .post(format!("{}/v1/messages", sim.url()))
        .bearer_auth(bearer)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-opus-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test]
async fn refresh_against_the_simulator_rotates_and_expiry_follows_expires_in() {
    let (sim, mut stored) = setup().await;
    sim.handle().set_oauth_expires_in(2);
    sim.handle().require_issued_bearer_tokens(true);
    let cred = stored.as_oauth().expect("oauth").clone();
    assert_eq!(cred.client_id, flotilla_auth::credential::ANTHROPIC_CLIENT_ID);

    let before = SystemTime::now();
    let tokens = cred.refresh(&client()).await.expect("refresh");
    let after = SystemTime::now();
    assert_eq!(tokens.lifetime, Duration::from_secs(2));
    assert!(tokens.expires_at >= before + Duration::from_secs(2), "{tokens:?}");
    assert!(tokens.expires_at <= after + Duration::from_secs(2), "{tokens:?}");
    assert_eq!(tokens.refresh_at(), tokens.expires_at - refresh_margin(Duration::from_secs(2)));
    assert_ne!(tokens.refresh_token.expose_secret(), SEED_REFRESH);
    assert_ne!(tokens.access_token.expose_secret(), SEED_ACCESS);

    // What the refresher publishes: the updated record, sealed.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyFile::load_or_create(&dir.path().join("fleet.key")).expect("key");
    if let StoredCredential::OAuth(o) = &mut stored {
        o.apply(tokens.clone());
    }
    let reopened = open_credential(&key, &seal_credential(&key, &stored).expect("seal")).expect("open");
    let o = reopened.as_oauth().expect("oauth");
    assert_eq!(o.refresh_token.expose_secret(), tokens.refresh_token.expose_secret());
    assert_eq!(o.expires_at, tokens.expires_at);

    // The next refresh uses the new refresh token. Its token lives an hour, so checking it
    // against the API below does not race its expiry.
    sim.handle().set_oauth_expires_in(3600);
    let next = o.refresh(&client()).await.expect("second refresh");
    assert_eq!(next.lifetime, Duration::from_secs(3600));
    assert_ne!(next.access_token.expose_secret(), tokens.access_token.expose_secret());
    assert_eq!(sim.handle().oauth_stats().refreshed, 2);
    assert!(sim.handle().access_token_valid(next.access_token.expose_secret()));
    assert_eq!(message_status(&sim, next.access_token.expose_secret()).await, 200);
    assert_eq!(message_status(&sim, "sk-ant-oat01-not-issued").await, 401);
}

#[tokio::test]
async fn reused_refresh_token_is_invalid_grant() {
    let (sim, stored) = setup().await;
    let cred = stored.as_oauth().expect("oauth");
    cred.refresh(&client()).await.expect("first use");
    // A second node that copied the same refresh token.
    let err = cred.refresh(&client()).await.expect_err("reuse must fail");
    assert!(matches!(err, RefreshError::InvalidGrant { .. }), "{err:?}");
    assert!(err.needs_login() && !err.is_retryable());
    assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    assert_eq!(sim.handle().oauth_stats().reused, 1);

    let unknown = flotilla_auth::refresh(
        &client(),
        &cred.token_url,
        &cred.client_id,
        &SecretString::from("sk-ant-ort01-never-issued"),
    )
    .await
    .expect_err("unknown token");
    assert!(unknown.needs_login(), "{unknown:?}");
}

#[tokio::test]
async fn endpoint_failures_are_transient_and_spend_nothing() {
    let (sim, stored) = setup().await;
    let cred = stored.as_oauth().expect("oauth");
    for status in [500, 503, 529, 429] {
        sim.handle().fail_next_oauth_requests(1, status);
        let err = cred.refresh(&client()).await.expect_err("injected failure");
        assert!(err.is_retryable(), "{status}: {err:?}");
        if status == 429 {
            assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
        }
    }
    // The refresh token survived the failures.
    cred.refresh(&client()).await.expect("refresh after failures");
    assert_eq!(sim.handle().oauth_stats().injected_failures, 4);

    // The OpenAI simulator has no token endpoint: a 404 is a configuration problem.
    let openai = flotilla_sim::spawn(SimConfig::openai()).await.expect("simulator");
    let url = format!("{}{OAUTH_TOKEN_PATH}", openai.url());
    let err = flotilla_auth::refresh(&client(), &url, "c", &SecretString::from("x")).await.expect_err("404");
    assert!(matches!(err, RefreshError::Rejected { status: 404, .. }), "{err:?}");
}
