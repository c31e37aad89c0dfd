//! Fault injection: every fault's status, body and headers on both APIs, the stream faults,
//! and rule scoping (count, probability, window, key, model, path, stream).

use std::time::Duration;

use flotilla_sim::{Fault, FaultRule, SimConfig, SimServer};
use serde_json::{Value, json};

use super::support::*;

async fn anthropic_once(sim: &SimServer, fault: Fault) -> (u16, reqwest::header::HeaderMap, String) {
    sim.handle().clear_faults();
    sim.handle().add_fault(FaultRule::new(fault).count(1));
    let resp = anthropic_post(sim, &user_body("claude-opus-4-6", "hi")).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

async fn openai_once(sim: &SimServer, fault: Fault) -> (u16, reqwest::header::HeaderMap, String) {
    sim.handle().clear_faults();
    sim.handle().add_fault(FaultRule::new(fault).count(1));
    let body = json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]});
    let resp = openai_post(sim, "/v1/chat/completions", &body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn anthropic_error(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["type"], "error");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
    (v["error"]["type"].as_str().unwrap().to_owned(), v["error"]["message"].as_str().unwrap().to_owned())
}

fn openai_error(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap();
    for field in ["message", "type", "param", "code"] {
        assert!(v["error"].get(field).is_some(), "error.{field} present in {body}");
    }
    v["error"].clone()
}

#[tokio::test]
async fn anthropic_error_faults() {
    let sim = start(SimConfig::anthropic()).await;

    let (s, h, b) = anthropic_once(&sim, Fault::Overloaded).await;
    assert_eq!(s, 529);
    assert_eq!(h["x-should-retry"], "true");
    assert!(h["request-id"].to_str().unwrap().starts_with("req_"));
    assert_eq!(anthropic_error(&b), ("overloaded_error".into(), "Overloaded".into()));

    let (s, h, b) = anthropic_once(&sim, Fault::RateLimited { retry_after_secs: 7 }).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
    assert_eq!(anthropic_error(&b).0, "rate_limit_error");

    let (s, _, b) = anthropic_once(&sim, Fault::Unauthorized).await;
    assert_eq!(s, 401);
    assert_eq!(anthropic_error(&b), ("authentication_error".into(), "invalid x-api-key".into()));

    let (s, _, b) = anthropic_once(&sim, Fault::Forbidden).await;
    assert_eq!((s, anthropic_error(&b).0), (403, "permission_error".into()));

    let (s, _, b) = anthropic_once(&sim, Fault::PaymentRequired).await;
    assert_eq!(s, 400);
    let (ty, msg) = anthropic_error(&b);
    assert_eq!(ty, "invalid_request_error");
    assert!(msg.starts_with("Your credit balance is too low to access the Anthropic API."));

    let (s, _, b) = anthropic_once(&sim, Fault::BillingError).await;
    assert_eq!((s, anthropic_error(&b).0), (402, "billing_error".into()));

    let (s, h, b) = anthropic_once(&sim, Fault::Internal).await;
    assert_eq!((s, anthropic_error(&b).0), (500, "api_error".into()));
    assert_eq!(h["x-should-retry"], "true");

    let (s, h, b) = anthropic_once(&sim, Fault::Unavailable).await;
    assert_eq!(s, 503);
    assert_eq!(h["content-type"], "text/plain");
    assert!(b.starts_with("upstream connect error"));

    let (s, h, b) = anthropic_once(&sim, Fault::BadGateway).await;
    assert_eq!(s, 502);
    assert_eq!(h["content-type"], "text/html");
    assert!(b.contains("502 Bad Gateway"));

    let (s, _, b) = anthropic_once(&sim, Fault::GatewayTimeout).await;
    assert_eq!((s, anthropic_error(&b).0), (504, "timeout_error".into()));

    let (s, _, b) = anthropic_once(&sim, Fault::InvalidRequest).await;
    assert_eq!((s, anthropic_error(&b).0), (400, "invalid_request_error".into()));

    let (s, _, b) = anthropic_once(&sim, Fault::ContextTooLong).await;
    assert_eq!(s, 400);
    let msg = anthropic_error(&b).1;
    assert!(msg.starts_with("prompt is too long: ") && msg.ends_with(" tokens > 200000 maximum"), "{msg}");

    // Each rule had count 1, so the simulator is healthy again.
    let ok = anthropic_post(&sim, &user_body("claude-opus-4-6", "hi")).await;
    assert_eq!(ok.status(), 200);
    let stats = sim.handle().stats();
    assert_eq!(stats.by_fault["overloaded"], 1);
    assert_eq!(stats.by_status[&529], 1);
    assert_eq!(stats.by_status[&200], 1);
}

#[tokio::test]
async fn anthropic_oauth_token_expiry() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::Unauthorized));
    let resp = client()
        .post(format!("{}/v1/messages", sim.url()))
        .bearer_auth("sk-ant-oat01-token")
        .header("anthropic-version", "2023-06-01")
        .json(&user_body("claude-opus-4-6", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (ty, msg) = anthropic_error(&resp.text().await.unwrap());
    assert_eq!(ty, "authentication_error");
    assert!(msg.starts_with("OAuth token has expired."));
}

#[tokio::test]
async fn openai_error_faults() {
    let sim = start(SimConfig::openai()).await;

    let (s, _, b) = openai_once(&sim, Fault::Overloaded).await;
    assert_eq!(s, 503);
    let e = openai_error(&b);
    assert_eq!(e["code"], "server_is_overloaded");
    assert_eq!(e["type"], "service_unavailable_error");

    let (s, h, b) = openai_once(&sim, Fault::RateLimited { retry_after_secs: 3 }).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "3");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    let e = openai_error(&b);
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert!(e["message"].as_str().unwrap().starts_with("Rate limit reached for gpt-5 "));

    let (s, _, b) = openai_once(&sim, Fault::Unauthorized).await;
    assert_eq!(s, 401);
    let e = openai_error(&b);
    assert_eq!(e["code"], "invalid_api_key");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.starts_with("Incorrect API key provided: ") && msg.contains("0001"));
    assert!(!msg.contains("sk-openai-test-key"), "the key is masked: {msg}");

    let (s, _, b) = openai_once(&sim, Fault::PaymentRequired).await;
    assert_eq!(s, 429);
    assert_eq!(openai_error(&b)["code"], "insufficient_quota");

    let (s, _, b) = openai_once(&sim, Fault::Forbidden).await;
    assert_eq!((s, openai_error(&b)["code"].clone()), (403, json!("unsupported_country_region_territory")));

    let (s, _, b) = openai_once(&sim, Fault::Internal).await;
    assert_eq!((s, openai_error(&b)["type"].clone()), (500, json!("server_error")));

    let (s, _, b) = openai_once(&sim, Fault::Unavailable).await;
    assert_eq!(s, 503);
    assert_eq!(openai_error(&b)["message"], "The engine is currently overloaded, please try again later");

    let (s, h, b) = openai_once(&sim, Fault::GatewayTimeout).await;
    assert_eq!(s, 504);
    assert_eq!(h["content-type"], "text/html");
    assert!(b.contains("504 Gateway Time-out"));

    let (s, _, _) = openai_once(&sim, Fault::BadGateway).await;
    assert_eq!(s, 502);

    let (s, _, b) = openai_once(&sim, Fault::ContextTooLong).await;
    assert_eq!((s, openai_error(&b)["code"].clone()), (400, json!("context_length_exceeded")));

    let (s, _, b) = openai_once(&sim, Fault::InvalidRequest).await;
    assert_eq!((s, openai_error(&b)["type"].clone()), (400, json!("invalid_request_error")));
}

#[tokio::test]
async fn connection_reset_drops_the_connection() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::ConnectionReset).count(1));
    let err = client()
        .post(format!("{}/v1/messages", sim.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&user_body("claude-opus-4-6", "hi"))
        .send()
        .await
        .expect_err("no response on a reset connection");
    assert!(is_reset(&err), "{err:?}");
    let ok = anthropic_post(&sim, &user_body("claude-opus-4-6", "hi")).await;
    assert_eq!(ok.status(), 200);
    let stats = sim.handle().stats();
    assert_eq!(stats.connections_reset, 1);
    assert_eq!(stats.by_fault["connection_reset"], 1);
    assert_eq!(sim.handle().requests()[0].status, 0);
}

#[tokio::test]
async fn stall_before_first_byte_holds_the_head() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::StallBeforeFirstByte { ms: 60_000 }).count(1));
    let err = client()
        .post(format!("{}/v1/messages", sim.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .timeout(Duration::from_millis(300))
        .json(&user_body("claude-opus-4-6", "hi"))
        .send()
        .await
        .expect_err("the head never comes within the client's timeout");
    assert!(err.is_timeout(), "{err:?}");
}

fn stream_body() -> Value {
    let mut b = user_body("claude-opus-4-6", "stream");
    b["stream"] = json!(true);
    b
}

#[tokio::test]
async fn cut_mid_stream_ends_without_terminal_events() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::CutMidStream { after_events: 4 }));
    // Non-stream requests are untouched by stream faults.
    assert_eq!(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status(), 200);
    let resp = anthropic_post(&sim, &stream_body()).await;
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(names(&events), ["message_start", "content_block_start", "ping", "content_block_delta"]);
    let stats = sim.handle().stats();
    assert_eq!(stats.streams_cut, 1);
    assert_eq!(stats.streams_completed, 0);
}

#[tokio::test]
async fn reset_mid_stream_breaks_the_body() {
    let sim = start(SimConfig::openai()).await;
    sim.handle().add_fault(FaultRule::new(Fault::ResetMidStream { after_events: 2 }));
    let body = json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let resp = openai_post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let (text, err) = read_until_error(resp).await;
    let err = err.expect("the body read fails");
    assert!(is_reset(&err), "{err:?}");
    assert!(text.contains("chat.completion.chunk"), "events before the reset arrive: {text:?}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(sim.handle().stats().connections_reset, 1);
}

#[tokio::test]
async fn stall_mid_stream_goes_silent_after_some_events() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::StallMidStream { after_events: 3, ms: 60_000 }));
    let mut resp = anthropic_post(&sim, &stream_body()).await;
    let mut text = String::new();
    // The first three events arrive; the fourth does not come within the wait.
    let silent = loop {
        match tokio::time::timeout(Duration::from_millis(300), resp.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(other) => panic!("stream ended or failed during the stall: {other:?}"),
            Err(_) => break true,
        }
    };
    assert!(silent);
    assert_eq!(names(&parse_sse(&text)), ["message_start", "content_block_start", "ping"]);
}

#[tokio::test]
async fn malformed_sse_inserts_unparseable_data_then_continues() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::MalformedSse { after_events: 2 }).count(1));
    let events = parse_sse(&anthropic_post(&sim, &stream_body()).await.text().await.unwrap());
    let bad: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| serde_json::from_str::<Value>(&e.data).is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bad, [2]);
    assert_eq!(events.last().unwrap().event.as_deref(), Some("message_stop"));
}

#[tokio::test]
async fn error_mid_stream_uses_each_apis_error_event() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::ErrorMidStream { after_events: 4 }));
    let events = parse_sse(&anthropic_post(&sim, &stream_body()).await.text().await.unwrap());
    assert_eq!(events.len(), 5);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["type"], "overloaded_error");

    let sim = start(SimConfig::openai()).await;
    sim.handle().add_fault(FaultRule::new(Fault::ErrorMidStream { after_events: 3 }));
    let chat = json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let events = parse_sse(&openai_post(&sim, "/v1/chat/completions", &chat).await.text().await.unwrap());
    assert_eq!(events.len(), 4);
    assert_eq!(events[3].json()["error"]["type"], "server_error");

    let responses = json!({"model": "gpt-5", "input": "hi", "stream": true});
    let events = parse_sse(&openai_post(&sim, "/v1/responses", &responses).await.text().await.unwrap());
    assert_eq!(
        names(&events),
        ["response.created", "response.in_progress", "response.output_item.added", "error", "response.failed"]
    );
    assert_eq!(events[3].json()["sequence_number"], 3);
    assert_eq!(events[4].json()["sequence_number"], 4);
    assert_eq!(events[4].json()["response"]["status"], "failed");
    assert_eq!(events[4].json()["response"]["id"], events[0].json()["response"]["id"]);
}

#[tokio::test]
async fn count_scope_expires_after_n_fires() {
    let sim = start(SimConfig::anthropic()).await;
    sim.handle().add_fault(FaultRule::new(Fault::Overloaded).count(2));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status().as_u16());
    }
    assert_eq!(statuses, [529, 529, 200, 200]);
}

#[tokio::test]
async fn probability_is_seeded() {
    let run = || async {
        let sim = start(SimConfig::anthropic()).await;
        sim.handle().add_fault(FaultRule::new(Fault::Internal).probability(0.5).seed(11));
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await.status().as_u16());
        }
        out
    };
    let a = run().await;
    let b = run().await;
    assert_eq!(a, b, "same seed, same sequence");
    let hits = a.iter().filter(|s| **s == 500).count();
    assert!((5..=35).contains(&hits), "{hits} of 40 hit at p=0.5");
    assert!(a.iter().all(|s| *s == 500 || *s == 200));
}

#[tokio::test]
async fn window_scope() {
    let sim = start(SimConfig::anthropic()).await;
    // Starts in an hour: not yet.
    sim.handle().add_fault(FaultRule::new(Fault::Internal).window(3_600_000, None));
    // Lasted zero milliseconds: already over.
    sim.handle().add_fault(FaultRule::new(Fault::Forbidden).window(0, Some(0)));
    // Open now for an hour.
    sim.handle().add_fault(FaultRule::new(Fault::Overloaded).window(0, Some(3_600_000)));
    let resp = anthropic_post(&sim, &user_body("claude-opus-4-6", "x")).await;
    assert_eq!(resp.status(), 529);
}

#[tokio::test]
async fn key_model_path_and_stream_scopes() {
    let sim = start(SimConfig {
        accepted_keys: vec!["key-one-000000000001".into(), "key-two-000000000002".into()],
        ..SimConfig::openai()
    })
    .await;
    let h = sim.handle();
    h.add_fault(FaultRule::new(Fault::RateLimited { retry_after_secs: 1 }).key("key-one-000000000001"));
    h.add_fault(FaultRule::new(Fault::Overloaded).model("gpt-4.1"));
    h.add_fault(FaultRule::new(Fault::Internal).path("/v1/responses").non_stream_only());
    let send = |key: &'static str, path: &'static str, body: Value| {
        let url = format!("{}{path}", sim.url());
        async move { client().post(url).bearer_auth(key).json(&body).send().await.unwrap().status().as_u16() }
    };
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(send("key-one-000000000001", "/v1/chat/completions", chat("gpt-5")).await, 429);
    assert_eq!(send("key-two-000000000002", "/v1/chat/completions", chat("gpt-5")).await, 200);
    assert_eq!(send("key-two-000000000002", "/v1/chat/completions", chat("gpt-4.1")).await, 503);
    assert_eq!(send("key-two-000000000002", "/v1/responses", json!({"model": "gpt-5", "input": "x"})).await, 500);
    assert_eq!(
        send("key-two-000000000002", "/v1/responses", json!({"model": "gpt-5", "input": "x", "stream": true})).await,
        200
    );
    let recs = h.requests();
    assert_eq!(recs[0].fault.as_deref(), Some("rate_limited"));
    assert_eq!(recs[0].key_index, Some(0));
    assert_eq!(recs[1].fault, None);
    assert_eq!(recs[1].key_index, Some(1));
}

#[tokio::test]
async fn latency_and_pacing_still_deliver_the_whole_stream() {
    let sim = start(SimConfig {
        latency: Duration::from_millis(5),
        ttft: Duration::from_millis(5),
        tokens_per_sec: 2000.0,
        reply_tokens: 10,
        ..SimConfig::anthropic()
    })
    .await;
    let events = parse_sse(&anthropic_post(&sim, &stream_body()).await.text().await.unwrap());
    assert_eq!(events.len(), 16);
    assert_eq!(events.last().unwrap().event.as_deref(), Some("message_stop"));
}
