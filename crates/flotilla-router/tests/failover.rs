//! Router behaviour against the in-process simulators: every row of the failure table,
//! breakers, credential rotation, retry-after, deadlines, the aggregate error and streams.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::sync::Arc;
use std::time::Duration;

use flotilla_config::{Env, parse_config};
use flotilla_proto::{ChatRequest, ContentPart, Message, Role, StreamEvent, ToolDef};
use flotilla_router::{AttemptOutcome, RouteError, Router};
use flotilla_sim::{Fault, FaultRule, SimConfig, SimServer};
use flotilla_telemetry::Metrics;

struct Fixture {
    ant: SimServer,
    oai: SimServer,
    router: Router,
}

const KEY_A: &str = "sk-ant-test-aaaaaaaa";
const KEY_B: &str = "sk-ant-test-bbbbbbbb";
const KEY_O: &str = "sk-oai-test-oooooooo";

async fn fixture_with(router_section: &str, primary: &str, fallbacks: &str) -> Fixture {
    let ant = flotilla_sim::spawn(SimConfig::anthropic()).await.expect("anthropic sim");
    let oai = flotilla_sim::spawn(SimConfig::openai()).await.expect("openai sim");
    let toml = format!(
        r#"
[router]
{router_section}

[agents.defaults.model]
primary = "{primary}"
fallbacks = {fallbacks}

[[agents.list]]
id = "agent"

[chains.fast]
primary = "openai/gpt-4o-mini"

[providers.anthropic]
api = "anthropic"
base_url = "{a}"
auth = ["ant-a", "ant-b"]

[providers.anthropic.models.claude-opus-4-6]
context_window = 200000

[providers.anthropic.models.claude-haiku-4-5]
context_window = 100000

[providers.openai]
api = "openai"
base_url = "{o}"
auth = ["oai"]

[auth.ant-a]
provider = "anthropic"
type = "api-key"
key = "env:ANT_A"

[auth.ant-b]
provider = "anthropic"
type = "api-key"
key = "env:ANT_B"

[auth.oai]
provider = "openai"
type = "api-key"
key = "env:OAI"
"#,
        a = ant.url(),
        o = oai.url(),
    );
    let env = Env::from_pairs([("ANT_A", KEY_A), ("ANT_B", KEY_B), ("OAI", KEY_O)]);
    let config = parse_config(&toml, &env, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let router = Router::new(Arc::new(config), Arc::new(Metrics::new())).expect("router");
    Fixture { ant, oai, router }
}

const FAST: &str = r#"
ttfb_timeout = "1s"
request_timeout = "5s"
overload_cooldown = "400ms"
transient_cooldown = "400ms"
rate_limit_cooldown = "400ms"
retry_backoff = "10ms"
breaker_threshold = 2
"#;

async fn fixture() -> Fixture {
    fixture_with(FAST, "anthropic/claude-opus-4-6", r#"["openai/gpt-5"]"#).await
}

fn request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        system: Some("You are terse.".into()),
        messages: vec![Message::text(Role::User, "hello there")],
        max_tokens: Some(200),
        ..Default::default()
    }
}

fn outcomes(attempts: &[flotilla_router::AttemptRecord]) -> Vec<(String, String, AttemptOutcome)> {
    attempts.iter().map(|a| (format!("{}/{}", a.provider, a.model), a.credential.clone(), a.outcome.clone())).collect()
}

fn text_of(parts: &[ContentPart]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn healthy_primary_answers() {
    let f = fixture().await;
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "anthropic/claude-opus-4-6");
    assert_eq!(r.answered.credential, "ant-a");
    assert!(text_of(&r.response.content).starts_with("[claude-opus-4-6]"), "{:?}", r.response.content);
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(f.oai.handle().stats().requests_total, 0);
}

#[tokio::test]
async fn overload_529_fails_over_and_opens_breaker() {
    let f = fixture().await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    let r = f.router.complete(&request("agent")).await.expect("answer from fallback");
    assert_eq!(r.answered.model_ref(), "openai/gpt-5");
    assert_eq!(
        outcomes(&r.attempts),
        vec![
            ("anthropic/claude-opus-4-6".into(), "ant-a".into(), AttemptOutcome::Failed("overloaded")),
            ("openai/gpt-5".into(), "oai".into(), AttemptOutcome::Ok),
        ],
        "an overload moves to the next candidate at once, without trying the second credential"
    );
    // With the breaker open the next request goes straight to the fallback: no round trip.
    let before = f.ant.handle().stats().requests_total;
    let r2 = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r2.answered.model_ref(), "openai/gpt-5");
    assert_eq!(r2.attempts[0].outcome, AttemptOutcome::Skipped("breaker_open_overloaded"));
    assert_eq!(f.ant.handle().stats().requests_total, before, "open breaker must not cost a request");
    // After the cooldown the primary is probed and, being healthy again, used.
    f.ant.handle().clear_faults();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r3 = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r3.answered.model_ref(), "anthropic/claude-opus-4-6");
    let snap = f.router.health().snapshot();
    assert!(snap.iter().all(|b| b.state == "closed"), "{snap:?}");
}

#[tokio::test]
async fn unavailable_503_is_an_overload() {
    let f = fixture().await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Unavailable));
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "openai/gpt-5");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("overloaded"));
    assert_eq!(r.attempts[0].status, Some(503));
}

#[tokio::test]
async fn rate_limit_rotates_credential_and_honours_retry_after() {
    let f = fixture().await;
    let mut rule = FaultRule::new(Fault::RateLimited { retry_after_secs: 1 });
    rule.key = Some(KEY_A.into());
    f.ant.handle().add_fault(rule);
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "anthropic/claude-opus-4-6", "same model, other credential");
    assert_eq!(r.answered.credential, "ant-b");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("rate_limited"));
    // retry-after (1 s) became key A's cooldown: the next request does not touch key A.
    f.ant.handle().clear_requests();
    let r2 = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r2.answered.credential, "ant-b");
    assert_eq!(r2.attempts[0].outcome, AttemptOutcome::Skipped("cooldown_rate_limited"));
    let keys: Vec<Option<usize>> = f.ant.handle().requests().iter().map(|r| r.key_index).collect();
    assert!(keys.iter().all(|k| *k != Some(0)), "key A used during its cooldown: {keys:?}");
    let snap = f.router.health().snapshot();
    let b = snap.iter().find(|b| b.credential == "ant-a").expect("breaker for ant-a");
    let left = b.cooldown_remaining_ms.expect("cooldown");
    assert!(left > 400 && left <= 1000, "cooldown should come from retry-after (1 s), not the 400 ms default: {left}");
}

#[tokio::test]
async fn unauthorized_marks_credential_unusable_and_rotates() {
    let f = fixture().await;
    let mut rule = FaultRule::new(Fault::Unauthorized);
    rule.key = Some(KEY_A.into());
    f.ant.handle().add_fault(rule);
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!((r.answered.provider.as_str(), r.answered.credential.as_str()), ("anthropic", "ant-b"));
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("auth_failed"));
    let r2 = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r2.attempts[0].outcome, AttemptOutcome::Skipped("credential_unusable_auth"));
}

#[tokio::test]
async fn billing_failures_cool_the_credential_for_long() {
    for fault in [Fault::PaymentRequired, Fault::BillingError] {
        let f = fixture().await;
        let mut rule = FaultRule::new(fault.clone());
        rule.key = Some(KEY_A.into());
        f.ant.handle().add_fault(rule);
        let r = f.router.complete(&request("agent")).await.expect("answer");
        assert_eq!(r.answered.credential, "ant-b", "{fault:?}");
        assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("billing"), "{fault:?}");
        let snap = f.router.health().snapshot();
        let b = snap.iter().find(|b| b.credential == "ant-a").expect("breaker");
        assert!(b.cooldown_remaining_ms.unwrap_or(0) > 3_600_000, "billing cooldown is hours: {b:?}");
    }
}

#[tokio::test]
async fn insufficient_quota_on_openai_is_billing() {
    let f = fixture_with(FAST, "openai/gpt-5", r#"["anthropic/claude-opus-4-6"]"#).await;
    f.oai.handle().add_fault(FaultRule::new(Fault::PaymentRequired));
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("billing"));
    assert_eq!(r.attempts[0].status, Some(429));
    assert_eq!(r.answered.provider, "anthropic");
}

#[tokio::test]
async fn transient_500_is_retried_once_on_the_same_candidate() {
    let f = fixture().await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Internal).count(1));
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "anthropic/claude-opus-4-6");
    assert_eq!(r.answered.credential, "ant-a");
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("transient"));
    assert_eq!(f.oai.handle().stats().requests_total, 0);
}

#[tokio::test]
async fn repeated_transient_failures_move_on_after_one_retry() {
    for fault in [Fault::BadGateway, Fault::GatewayTimeout, Fault::ConnectionReset] {
        let f = fixture().await;
        f.ant.handle().add_fault(FaultRule::new(fault.clone()));
        let r = f.router.complete(&request("agent")).await.expect("answer");
        assert_eq!(r.answered.model_ref(), "openai/gpt-5", "{fault:?}");
        let failed: Vec<_> = r.attempts.iter().filter(|a| matches!(a.outcome, AttemptOutcome::Failed(_))).collect();
        assert_eq!(failed.len(), 2, "one try + one retry, then the next candidate ({fault:?}): {:?}", r.attempts);
        assert!(failed.iter().all(|a| a.outcome == AttemptOutcome::Failed("transient")));
    }
}

#[tokio::test]
async fn invalid_request_is_returned_without_failover() {
    let f = fixture().await;
    f.ant.handle().add_fault(FaultRule::new(Fault::InvalidRequest));
    let err = f.router.complete(&request("agent")).await.expect_err("caller error");
    match &err {
        RouteError::Caller { status, error, attempts } => {
            assert_eq!(*status, 400);
            assert_eq!(error.as_ref().map(|e| e.error_type.as_str()), Some("invalid_request_error"));
            assert_eq!(attempts.len(), 1);
        }
        other => panic!("expected a caller error, got {other:?}"),
    }
    assert_eq!(err.to_api_error().status, 400);
    assert_eq!(f.oai.handle().stats().requests_total, 0, "no failover for the caller's mistake");
}

#[tokio::test]
async fn context_too_long_moves_to_a_larger_window() {
    // Chain: haiku (100k) → opus (200k) → openai. Haiku says the prompt is too long.
    let f = fixture_with(FAST, "anthropic/claude-haiku-4-5", r#"["anthropic/claude-opus-4-6", "openai/gpt-5"]"#).await;
    let mut rule = FaultRule::new(Fault::ContextTooLong);
    rule.model = Some("claude-haiku-4-5".into());
    f.ant.handle().add_fault(rule);
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "anthropic/claude-opus-4-6");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("context_too_long"));
}

#[tokio::test]
async fn context_too_long_skips_smaller_windows() {
    // Chain: opus (200k) → haiku (100k) → openai (window unknown): haiku cannot help.
    let f = fixture_with(FAST, "anthropic/claude-opus-4-6", r#"["anthropic/claude-haiku-4-5", "openai/gpt-5"]"#).await;
    let mut rule = FaultRule::new(Fault::ContextTooLong);
    rule.model = Some("claude-opus-4-6".into());
    f.ant.handle().add_fault(rule);
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "openai/gpt-5");
    assert_eq!(r.attempts[1].outcome, AttemptOutcome::Skipped("context_window_too_small"));
}

#[tokio::test]
async fn ttfb_deadline_fails_over_from_a_stalled_upstream() {
    let f = fixture_with(
        "ttfb_timeout = \"300ms\"\nrequest_timeout = \"5s\"\nretry_transient = false",
        "anthropic/claude-opus-4-6",
        r#"["openai/gpt-5"]"#,
    )
    .await;
    f.ant.handle().add_fault(FaultRule::new(Fault::StallBeforeFirstByte { ms: 3000 }));
    let started = std::time::Instant::now();
    let r = f.router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "openai/gpt-5");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Failed("transient"));
    assert!(r.attempts[0].detail.contains("no first byte within 300 ms"), "{}", r.attempts[0].detail);
    assert!(started.elapsed() < Duration::from_millis(2500), "must not wait for the stalled upstream");
}

#[tokio::test]
async fn total_deadline_ends_the_request_with_every_attempt_listed() {
    let f = fixture_with(
        "ttfb_timeout = \"300ms\"\nrequest_timeout = \"700ms\"\nretry_transient = false",
        "anthropic/claude-opus-4-6",
        r#"["openai/gpt-5", "openai/gpt-4.1"]"#,
    )
    .await;
    f.ant.handle().add_fault(FaultRule::new(Fault::StallBeforeFirstByte { ms: 3000 }));
    f.oai.handle().add_fault(FaultRule::new(Fault::StallBeforeFirstByte { ms: 3000 }));
    let err = f.router.complete(&request("agent")).await.expect_err("all stalled");
    let RouteError::AllFailed { attempts, deadline_hit, .. } = &err else { panic!("{err:?}") };
    assert!(*deadline_hit || attempts.len() >= 3, "{err}");
    assert_eq!(err.to_api_error().status, if *deadline_hit { 504 } else { 502 });
    let text = err.to_string();
    assert!(text.contains("anthropic/claude-opus-4-6 [ant-a] failed (transient)"), "{text}");
    assert!(text.contains("openai/gpt-5 [oai] failed (transient)"), "{text}");
}

#[tokio::test]
async fn aggregate_error_when_every_candidate_fails() {
    let f = fixture().await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    f.oai.handle().add_fault(FaultRule::new(Fault::RateLimited { retry_after_secs: 2 }));
    let err = f.router.complete(&request("agent")).await.expect_err("all fail");
    let RouteError::AllFailed { chain, attempts, .. } = &err else { panic!("{err:?}") };
    assert_eq!(chain, "agent");
    assert_eq!(
        outcomes(attempts),
        vec![
            ("anthropic/claude-opus-4-6".into(), "ant-a".into(), AttemptOutcome::Failed("overloaded")),
            ("openai/gpt-5".into(), "oai".into(), AttemptOutcome::Failed("rate_limited")),
        ]
    );
    assert!(attempts.iter().all(|a| a.status.is_some()));
    let api = err.to_api_error();
    assert_eq!(api.status, 529, "an overload among the causes is reported as overloaded");
    assert!(!api.message.contains(KEY_A) && !api.message.contains(KEY_O), "no secrets in errors");
}

#[tokio::test]
async fn last_resort_tries_open_breakers_when_nothing_else_is_left() {
    let f = fixture_with(FAST, "anthropic/claude-opus-4-6", "[]").await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded).count(1));
    let err = f.router.complete(&request("agent")).await.expect_err("single candidate overloaded");
    assert_eq!(err.to_api_error().status, 529);
    // The breaker is open now, but it is the only candidate: try it rather than refuse.
    let r = f.router.complete(&request("agent")).await.expect("last resort answer");
    assert_eq!(r.answered.model_ref(), "anthropic/claude-opus-4-6");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Skipped("breaker_open_overloaded"));
}

#[tokio::test]
async fn resolves_agents_chains_and_provider_models() {
    let f = fixture().await;
    assert_eq!(f.router.resolve("fast").expect("chain").candidates.len(), 1);
    assert_eq!(f.router.resolve("openai/gpt-4.1").expect("provider/model").candidates[0].model, "gpt-4.1");
    assert_eq!(f.router.resolve("default").expect("default chain").candidates.len(), 2);
    match f.router.resolve("agnet") {
        Err(RouteError::UnknownModel { suggestion, .. }) => assert_eq!(suggestion.as_deref(), Some("agent")),
        other => panic!("{other:?}"),
    }
    let r = f.router.complete(&request("fast")).await.expect("answer");
    assert_eq!(r.answered.model_ref(), "openai/gpt-4o-mini");
}

#[tokio::test]
async fn anthropic_request_served_by_responses_and_chat_models_with_tools() {
    // gpt-5.3-codex speaks the Responses API; gpt-5 speaks Chat Completions.
    for (model, path) in [("openai/gpt-5.3-codex", "/v1/responses"), ("openai/gpt-5", "/v1/chat/completions")] {
        let f = fixture().await;
        let mut req = request(model);
        req.tools = vec![ToolDef {
            name: "get_weather".into(),
            description: Some("Weather for a city".into()),
            input_schema: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }];
        let r = f.router.complete(&req).await.expect("tool call");
        let call = r
            .response
            .content
            .iter()
            .find_map(|p| match p {
                ContentPart::ToolUse { id, name, input } => Some((id.clone(), name.clone(), input.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no tool call from {model}: {:?}", r.response));
        assert_eq!(call.1, "get_weather");
        assert!(call.2.get("city").is_some(), "{:?}", call.2);
        assert_eq!(r.response.stop_reason, flotilla_proto::StopReason::ToolUse);
        let recorded = f.oai.handle().requests();
        assert_eq!(recorded.last().map(|r| r.path.as_str()), Some(path));
        // Send the tool result back; the simulator quotes it in its answer.
        req.messages.push(Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolUse { id: call.0.clone(), name: call.1, input: call.2 }],
        });
        req.messages.push(Message {
            role: Role::User,
            content: vec![ContentPart::ToolResult {
                tool_use_id: call.0,
                content: vec![ContentPart::Text { text: "sunny, 21C".into() }],
                is_error: false,
            }],
        });
        let r2 = f.router.complete(&req).await.expect("answer after tool result");
        assert!(text_of(&r2.response.content).contains("sunny, 21C"), "{model}: {:?}", r2.response.content);
        assert!(r2.response.usage.input_tokens > 0 && r2.response.usage.output_tokens > 0);
    }
}

async fn collect(mut s: flotilla_router::CommittedStream) -> (Vec<StreamEvent>, Option<String>) {
    let mut events = Vec::new();
    while let Some(ev) = s.next().await {
        match ev {
            Ok(ev) => events.push(ev),
            Err(e) => return (events, Some(e.detail())),
        }
    }
    (events, None)
}

fn streamed_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn stream_fails_over_invisibly_before_first_content() {
    let f = fixture().await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    let mut req = request("agent");
    req.stream = true;
    let s = f.router.stream(&req).await.expect("stream");
    assert_eq!(s.answered.model_ref(), "openai/gpt-5");
    let (events, err) = collect(s).await;
    assert_eq!(err, None);
    assert!(
        matches!(events.first(), Some(StreamEvent::Start { model, .. }) if model.starts_with("gpt-5")),
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| matches!(e, StreamEvent::Start { .. })).count(), 1, "one lifecycle start only");
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    assert!(streamed_text(&events).starts_with("[gpt-5]"));
}

#[tokio::test]
async fn stream_error_event_before_content_also_fails_over() {
    let f = fixture().await;
    // Anthropic sends message_start, then an overloaded error event: still before content.
    f.ant.handle().add_fault(FaultRule::new(Fault::ErrorMidStream { after_events: 1 }));
    let mut req = request("agent");
    req.stream = true;
    let s = f.router.stream(&req).await.expect("stream");
    assert_eq!(s.answered.model_ref(), "openai/gpt-5");
    assert_eq!(s.attempts[0].outcome, AttemptOutcome::Failed("overloaded"));
}

#[tokio::test]
async fn stream_cut_after_content_ends_with_an_error_not_a_hang() {
    for fault in [
        Fault::CutMidStream { after_events: 6 },
        Fault::ErrorMidStream { after_events: 6 },
        Fault::ResetMidStream { after_events: 6 },
    ] {
        let f = fixture().await;
        f.ant.handle().add_fault(FaultRule::new(fault.clone()));
        let mut req = request("agent");
        req.stream = true;
        let s = f.router.stream(&req).await.expect("stream committed");
        assert_eq!(s.answered.model_ref(), "anthropic/claude-opus-4-6", "{fault:?}");
        let (events, err) = tokio::time::timeout(Duration::from_secs(5), collect(s)).await.expect("no hang");
        assert!(err.is_some(), "{fault:?} must end in an error: {events:?}");
        assert!(!streamed_text(&events).is_empty(), "content reached the client before the cut");
        assert_eq!(f.oai.handle().stats().requests_total, 0, "no provider switch after content ({fault:?})");
    }
}

#[tokio::test]
async fn stream_stall_after_content_times_out() {
    let f = fixture_with("ttfb_timeout = \"300ms\"", "anthropic/claude-opus-4-6", r#"["openai/gpt-5"]"#).await;
    f.ant.handle().add_fault(FaultRule::new(Fault::StallMidStream { after_events: 6, ms: 5000 }));
    let mut req = request("agent");
    req.stream = true;
    let s = f.router.stream(&req).await.expect("stream");
    let (_, err) =
        tokio::time::timeout(Duration::from_secs(3), collect(s)).await.expect("idle timeout ends the stream");
    assert!(err.is_some_and(|e| e.contains("no first byte within 300 ms")));
}

#[tokio::test]
async fn stream_stall_before_content_fails_over() {
    let f = fixture_with(
        "ttfb_timeout = \"300ms\"\nretry_transient = false",
        "anthropic/claude-opus-4-6",
        r#"["openai/gpt-5"]"#,
    )
    .await;
    f.ant.handle().add_fault(FaultRule::new(Fault::StallMidStream { after_events: 1, ms: 5000 }));
    let mut req = request("agent");
    req.stream = true;
    let s = f.router.stream(&req).await.expect("stream");
    assert_eq!(s.answered.model_ref(), "openai/gpt-5");
}

#[tokio::test]
async fn streams_translate_from_every_upstream_format() {
    for model in ["anthropic/claude-opus-4-6", "openai/gpt-5", "openai/gpt-5.3-codex"] {
        let f = fixture().await;
        let mut req = request(model);
        req.stream = true;
        let s = f.router.stream(&req).await.expect("stream");
        let (events, err) = collect(s).await;
        assert_eq!(err, None, "{model}");
        let upstream_model = model.split_once('/').map(|x| x.1).unwrap_or_default();
        assert!(streamed_text(&events).starts_with(&format!("[{upstream_model}]")), "{model}: {events:?}");
        match events.last() {
            Some(StreamEvent::Finish { stop_reason, usage }) => {
                assert_eq!(*stop_reason, flotilla_proto::StopReason::EndTurn, "{model}");
                assert!(usage.output_tokens > 0, "{model}: usage must be carried through");
            }
            other => panic!("{model}: stream must end with Finish, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_the_sim_log_or_debug_output() {
    let f = fixture().await;
    let debug = format!("{:?}", f.router.config());
    assert!(!debug.contains(KEY_A) && !debug.contains(KEY_B) && !debug.contains(KEY_O), "{debug}");
    // The key is actually sent upstream (the simulator accepted it), but recorded only by index.
    f.router.complete(&request("agent")).await.expect("answer");
    let rec = f.ant.handle().requests();
    assert_eq!(rec[0].auth_header.as_deref(), Some("x-api-key"));
}

#[tokio::test]
async fn retry_after_is_capped_by_max_retry_after() {
    let f =
        fixture_with(&format!("{FAST}\nmax_retry_after = \"1s\""), "anthropic/claude-opus-4-6", r#"["openai/gpt-5"]"#)
            .await;
    let mut rule = FaultRule::new(Fault::RateLimited { retry_after_secs: 600 });
    rule.key = Some(KEY_A.into());
    f.ant.handle().add_fault(rule);
    f.router.complete(&request("agent")).await.expect("answer");
    let snap = f.router.health().snapshot();
    let b = snap.iter().find(|b| b.credential == "ant-a").expect("breaker");
    assert!(b.cooldown_remaining_ms.is_some_and(|ms| ms <= 1000), "retry-after 600 s capped at 1 s: {b:?}");
}

#[tokio::test]
async fn expired_oauth_token_is_skipped_without_a_round_trip() {
    let ant = flotilla_sim::spawn(SimConfig::anthropic()).await.expect("sim");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("oauth.json"), r#"{"access": "sk-ant-oat-expired", "expires": 1000}"#)
        .expect("write");
    let toml = format!(
        r#"
[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
[[agents.list]]
id = "agent"
[providers.anthropic]
api = "anthropic"
base_url = "{}"
auth = ["oauth-main", "key-backup"]
[auth.oauth-main]
provider = "anthropic"
type = "oauth"
key = "file:oauth.json"
[auth.key-backup]
provider = "anthropic"
type = "api-key"
key = "env:ANT_B"
"#,
        ant.url()
    );
    let config = parse_config(&toml, &Env::from_pairs([("ANT_B", KEY_B)]), dir.path()).expect("config");
    let router = Router::new(Arc::new(config), Arc::new(Metrics::new())).expect("router");
    let r = router.complete(&request("agent")).await.expect("answer");
    assert_eq!(r.answered.credential, "key-backup");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Skipped("credential_expired"));
    assert_eq!(ant.handle().stats().requests_total, 1, "the expired token was never sent");
}

#[tokio::test]
async fn oauth_tokens_go_as_bearer_with_the_oauth_beta_header() {
    let ant = flotilla_sim::spawn(SimConfig::anthropic()).await.expect("sim");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("oauth.json"), r#"{"access": "sk-ant-oat-valid", "expires": 4102444800000}"#)
        .expect("write");
    let toml = format!(
        r#"
[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
[[agents.list]]
id = "agent"
[providers.anthropic]
api = "anthropic"
base_url = "{}"
auth = ["oauth-main"]
[auth.oauth-main]
provider = "anthropic"
type = "oauth"
key = "file:oauth.json"
"#,
        ant.url()
    );
    let config = parse_config(&toml, &Env::from_pairs::<_, &str, &str>([]), dir.path()).expect("config");
    let router = Router::new(Arc::new(config), Arc::new(Metrics::new())).expect("router");
    router.complete(&request("agent")).await.expect("answer");
    let rec = &ant.handle().requests()[0];
    assert_eq!(rec.auth_header.as_deref(), Some("authorization"));
    assert_eq!(rec.headers.get("anthropic-beta").map(String::as_str), Some("oauth-2025-04-20"));
}
