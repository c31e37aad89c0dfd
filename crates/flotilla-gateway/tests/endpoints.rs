//! The compatible endpoints over real HTTP: each caller format in and out, streaming, errors
//! in the caller's format, client keys, and the operational endpoints.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::sync::Arc;
use std::time::Duration;

use flotilla_config::{Env, parse_config};
use flotilla_gateway::GatewayState;
use flotilla_router::Router;
use flotilla_sim::{Fault, FaultRule, SimConfig, SimServer};
use flotilla_telemetry::Metrics;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Fixture {
    ant: SimServer,
    oai: SimServer,
    url: String,
    stop: CancellationToken,
    state: GatewayState,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn fixture(gateway_keys: &[&str]) -> Fixture {
    let ant = flotilla_sim::spawn(SimConfig::anthropic()).await.expect("sim");
    let oai = flotilla_sim::spawn(SimConfig::openai()).await.expect("sim");
    let toml = format!(
        r#"
[router]
ttfb_timeout = "1s"
overload_cooldown = "300ms"
retry_backoff = "10ms"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai/gpt-5.3-codex"]

[[agents.list]]
id = "family"
system_prompt = "You help the family."

[providers.anthropic]
api = "anthropic"
base_url = "{}"
auth = ["ant"]

[providers.openai]
api = "openai"
base_url = "{}"
auth = ["oai"]

[auth.ant]
provider = "anthropic"
type = "api-key"
key = "env:ANT"

[auth.oai]
provider = "openai"
type = "api-key"
key = "env:OAI"
"#,
        ant.url(),
        oai.url()
    );
    let config =
        parse_config(&toml, &Env::from_pairs([("ANT", "sk-ant-1"), ("OAI", "sk-oai-1")]), std::path::Path::new("."))
            .expect("config");
    let router = Arc::new(Router::new(Arc::new(config), Arc::new(Metrics::new())).expect("router"));
    let state = GatewayState::new(router, gateway_keys.iter().map(|k| (*k).to_owned().into()).collect());
    state.readiness.set("router", Ok(()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(flotilla_gateway::serve(
        listener,
        state.clone(),
        async move { signal.cancelled().await },
        Duration::from_secs(2),
    ));
    Fixture { ant, oai, url, stop, state }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(url: &str, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().post(url).json(&body).send().await.expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// Parses an SSE body into (event name, data JSON or raw string) pairs.
fn sse(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            (event, data.join("\n"))
        })
        .collect()
}

#[tokio::test]
async fn anthropic_format_in_and_out() {
    let f = fixture(&[]).await;
    let (status, headers, body) = post(
        &format!("{}/v1/messages", f.url),
        json!({"model": "family", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-flotilla-model"], "anthropic/claude-opus-4-6");
    assert_eq!(headers["x-flotilla-attempts"], "1");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["content"][0]["text"].as_str().is_some_and(|t| t.starts_with("[claude-opus-4-6]")), "{v}");
    assert!(v["usage"]["output_tokens"].as_u64().is_some_and(|n| n > 0));
}

#[tokio::test]
async fn openai_chat_format_served_by_anthropic() {
    let f = fixture(&[]).await;
    let (status, headers, body) = post(
        &format!("{}/v1/chat/completions", f.url),
        json!({"model": "family", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-flotilla-model"], "anthropic/claude-opus-4-6");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_u64().is_some_and(|n| n > 0));
    // The system prompt went upstream as Anthropic's top-level `system`.
    let sent = f.ant.handle().requests();
    assert_eq!(sent[0].body["system"], "Be brief.");
}

#[tokio::test]
async fn responses_format_with_failover_to_codex() {
    let f = fixture(&[]).await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    let (status, headers, body) = post(
        &format!("{}/v1/responses", f.url),
        json!({"model": "family", "input": "hello", "instructions": "Be brief."}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-flotilla-model"], "openai/gpt-5.3-codex");
    assert_eq!(headers["x-flotilla-attempts"], "2");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "message");
}

#[tokio::test]
async fn anthropic_stream_has_the_exact_event_sequence_after_failover() {
    let f = fixture(&[]).await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    let (status, headers, body) = post(
        &format!("{}/v1/messages", f.url),
        json!({"model": "family", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-flotilla-model"], "openai/gpt-5.3-codex");
    let names: Vec<String> = sse(&body).into_iter().filter_map(|(e, _)| e).filter(|e| e != "ping").collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "message_start").count(), 1);
    assert_eq!(names[1], "content_block_start");
    assert!(names.contains(&"content_block_delta".to_owned()));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
}

#[tokio::test]
async fn openai_chat_stream_ends_with_done() {
    let f = fixture(&[]).await;
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", f.url),
        json!({"model": "family", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let frames = sse(&body);
    assert_eq!(frames.last().map(|f| f.1.as_str()), Some("[DONE]"));
    let first: Value = serde_json::from_str(&frames[0].1).expect("chunk");
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let text: String = frames
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert!(text.starts_with("[claude-opus-4-6]"), "{text}");
}

#[tokio::test]
async fn responses_stream_completes() {
    let f = fixture(&[]).await;
    let (status, _, body) =
        post(&format!("{}/v1/responses", f.url), json!({"model": "family", "stream": true, "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<String> = sse(&body).into_iter().filter_map(|(e, _)| e).collect();
    assert_eq!(names.first().map(String::as_str), Some("response.created"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("response.completed"), "{names:?}");
    assert!(names.contains(&"response.output_text.delta".to_owned()));
}

#[tokio::test]
async fn mid_stream_cut_gives_a_protocol_error_event() {
    let f = fixture(&[]).await;
    f.ant.handle().add_fault(FaultRule::new(Fault::CutMidStream { after_events: 6 }));
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        post(
            &format!("{}/v1/messages", f.url),
            json!({"model": "family", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    )
    .await
    .expect("the stream must end, not hang");
    let frames = sse(&resp.2);
    let (event, data) = frames.last().expect("frames");
    assert_eq!(event.as_deref(), Some("error"), "{frames:?}");
    let v: Value = serde_json::from_str(data).expect("error json");
    assert_eq!(v["type"], "error");
    assert_eq!(f.oai.handle().stats().requests_total, 0, "no switch after content was sent");
}

#[tokio::test]
async fn errors_come_back_in_the_callers_format() {
    let f = fixture(&[]).await;
    let (status, _, body) = post(
        &format!("{}/v1/messages", f.url),
        json!({"model": "famly", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("did you mean \"family\"")), "{v}");

    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", f.url),
        json!({"model": "famly", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert!(v["error"]["message"].is_string(), "{v}");

    // Garbage in: 400 in the caller's format, nothing sent upstream.
    let r = client().post(format!("{}/v1/chat/completions", f.url)).body("{not json").send().await.expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(f.ant.handle().stats().requests_total, 0);
}

#[tokio::test]
async fn all_candidates_failing_gives_one_aggregate_error() {
    let f = fixture(&[]).await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    f.oai.handle().add_fault(FaultRule::new(Fault::Internal));
    let (status, headers, body) = post(
        &format!("{}/v1/messages", f.url),
        json!({"model": "family", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 529, "{body}");
    assert_eq!(headers["x-flotilla-attempts"], "3", "overload, transient, retry");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["type"], "overloaded_error");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("anthropic/claude-opus-4-6 [ant] failed (overloaded, 529)"), "{msg}");
    assert!(msg.contains("openai/gpt-5.3-codex [oai] failed (transient, 500)"), "{msg}");
}

#[tokio::test]
async fn client_keys_are_enforced() {
    let f = fixture(&["gw-key-1"]).await;
    let body = json!({"model": "family", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/v1/messages", f.url);
    let r = client().post(&url).json(&body).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = client().post(&url).header("x-api-key", "wrong").json(&body).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = client().post(&url).header("x-api-key", "gw-key-1").json(&body).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let r = client()
        .post(format!("{}/v1/chat/completions", f.url))
        .bearer_auth("gw-key-1")
        .json(&json!({"model": "family", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    // Operational endpoints stay open for probes.
    assert_eq!(client().get(format!("{}/healthz", f.url)).send().await.expect("send").status().as_u16(), 200);
}

#[tokio::test]
async fn models_lists_agents_and_chains_in_both_shapes() {
    let f = fixture(&[]).await;
    let v: Value = client().get(format!("{}/v1/models", f.url)).send().await.expect("send").json().await.expect("json");
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"family") && ids.contains(&"anthropic/claude-opus-4-6"), "{ids:?}");
    let v: Value = client()
        .get(format!("{}/v1/models", f.url))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["data"][0]["type"], "model");
}

#[tokio::test]
async fn ops_endpoints_report_state() {
    let f = fixture(&[]).await;
    f.ant.handle().add_fault(FaultRule::new(Fault::Overloaded));
    post(
        &format!("{}/v1/messages", f.url),
        json!({"model": "family", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let r = client().get(format!("{}/readyz", f.url)).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let metrics = client().get(format!("{}/metrics", f.url)).send().await.expect("send").text().await.expect("text");
    assert!(
        metrics.contains("flotilla_requests_total{api=\"anthropic\",outcome=\"ok\",stream=\"false\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_failovers_total{provider=\"anthropic\",model=\"claude-opus-4-6\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_breaker_state{provider=\"anthropic\",model=\"claude-opus-4-6\",credential=\"*\"} 1"),
        "{metrics}"
    );
    let status: Value =
        client().get(format!("{}/status", f.url)).send().await.expect("send").json().await.expect("json");
    assert_eq!(status["ready"], true);
    assert_eq!(status["breakers"][0]["state"], "open");
    assert_eq!(status["breakers"][0]["last_reason"], "overloaded");
    assert_eq!(status["router_overhead"]["count"], 1);
    // Not ready while a component says so, and while draining.
    f.state.readiness.set("slack:family-app", Err("socket stale for 12 s".into()));
    let r = client().get(format!("{}/readyz", f.url)).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.expect("text").contains("slack:family-app: socket stale"));
}
