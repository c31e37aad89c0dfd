//! The Anthropic Messages simulator: shapes, headers, validation, streams, tools.

use flotilla_sim::SimConfig;
use serde_json::{Value, json};

use super::support::*;

#[tokio::test]
async fn message_has_the_real_shape_and_headers() {
    let sim = start(SimConfig::anthropic()).await;
    let resp = anthropic_post(&sim, &user_body("claude-sonnet-4-5", "Hello there")).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(h["request-id"].to_str().unwrap().starts_with("req_"));
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "3999");
    assert!(h["anthropic-ratelimit-requests-reset"].to_str().unwrap().ends_with('Z'));
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["content"][0]["type"], "text");
    let text = v["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("[claude-sonnet-4-5] "), "{text}");
    assert_eq!(text.split(' ').count(), 24);
    // Every string of the prompt counts: "user" + "Hello there" = 15 characters ≈ 4 tokens.
    assert_eq!(v["usage"]["input_tokens"], 4);
    assert_eq!(v["usage"]["output_tokens"], 24);
}

#[tokio::test]
async fn replies_are_deterministic_and_stream_matches_json() {
    let sim = start(SimConfig::anthropic()).await;
    let text_of = |v: Value| v["content"][0]["text"].as_str().unwrap().to_owned();
    let a = text_of(anthropic_post(&sim, &user_body("claude-opus-4-6", "one")).await.json().await.unwrap());
    let b = text_of(anthropic_post(&sim, &user_body("claude-opus-4-6", "one")).await.json().await.unwrap());
    let c = text_of(anthropic_post(&sim, &user_body("claude-opus-4-6", "two")).await.json().await.unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);

    let mut body = user_body("claude-opus-4-6", "one");
    body["stream"] = json!(true);
    let streamed: String = parse_sse(&anthropic_post(&sim, &body).await.text().await.unwrap())
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, a);
}

#[tokio::test]
async fn stream_has_the_exact_event_sequence() {
    let sim = start(SimConfig { reply_tokens: 5, ..SimConfig::anthropic() }).await;
    let mut body = user_body("claude-haiku-4-5", "Stream please");
    body["stream"] = json!(true);
    let resp = anthropic_post(&sim, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert!(resp.headers()["request-id"].to_str().unwrap().starts_with("req_"));
    let events = parse_sse(&resp.text().await.unwrap());
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    for e in &events {
        assert_eq!(e.json()["type"], e.event.clone().unwrap(), "type field matches event name");
    }
    let start = events[0].json();
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["stop_reason"], Value::Null);
    assert_eq!(start["message"]["usage"]["input_tokens"], 5);
    assert_eq!(events[1].json()["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(events[3].json()["delta"]["type"], "text_delta");
    let delta = events[9].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(sim.handle().stats().streams_completed, 1);
}

#[tokio::test]
async fn validation_errors_look_like_the_api() {
    let sim = start(SimConfig::anthropic()).await;
    let err = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
        (status, v["error"]["type"].as_str().unwrap().to_owned(), v["error"]["message"].as_str().unwrap().to_owned())
    };
    let no_max = json!({"model": "claude-opus-4-6", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        err(anthropic_post(&sim, &no_max).await).await,
        (400, "invalid_request_error".into(), "max_tokens: Field required".into())
    );
    let empty = json!({"model": "claude-opus-4-6", "max_tokens": 5, "messages": []});
    assert_eq!(err(anthropic_post(&sim, &empty).await).await.2, "messages: at least one message is required");
    let unknown = user_body("claude-nonexistent", "x");
    assert_eq!(
        err(anthropic_post(&sim, &unknown).await).await,
        (404, "not_found_error".into(), "model: claude-nonexistent".into())
    );

    let c = client();
    let url = format!("{}/v1/messages", sim.url());
    let body = user_body("claude-opus-4-6", "x");
    let missing_key = c.post(&url).header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap();
    assert_eq!(err(missing_key).await, (401, "authentication_error".into(), "x-api-key header is required".into()));
    let missing_version = c.post(&url).header("x-api-key", "k").json(&body).send().await.unwrap();
    assert_eq!(err(missing_version).await.2, "anthropic-version: header is required");
    let bad_json = c
        .post(&url)
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(err(bad_json).await.0, 400);
}

#[tokio::test]
async fn accepted_keys_and_bearer_tokens() {
    let sim = start(SimConfig {
        accepted_keys: vec!["sk-ant-good-key-000001".into(), "oauth-token-0000000002".into()],
        ..SimConfig::anthropic()
    })
    .await;
    let url = format!("{}/v1/messages", sim.url());
    let body = user_body("claude-opus-4-6", "x");
    let send = |auth: (&'static str, String)| {
        client().post(&url).header(auth.0, auth.1).header("anthropic-version", "2023-06-01").json(&body).send()
    };
    assert_eq!(send(("x-api-key", "sk-ant-good-key-000001".into())).await.unwrap().status(), 200);
    assert_eq!(send(("authorization", "Bearer oauth-token-0000000002".into())).await.unwrap().status(), 200);
    let bad = send(("x-api-key", "sk-ant-wrong-key-00001".into())).await.unwrap();
    assert_eq!(bad.status(), 401);
    let v: Value = bad.json().await.unwrap();
    assert_eq!(v["error"]["message"], "invalid x-api-key");
    let bad = send(("authorization", "Bearer wrong".into())).await.unwrap();
    let v: Value = bad.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid bearer token");

    let recs = sim.handle().requests();
    assert_eq!(recs[0].key_index, Some(0));
    assert_eq!(recs[1].key_index, Some(1));
    assert_eq!(recs[1].auth_header.as_deref(), Some("authorization"));
    assert_eq!(recs[2].key_index, None);
}

#[tokio::test]
async fn context_window_is_enforced() {
    let sim = start(SimConfig { context_window: 100, ..SimConfig::anthropic() }).await;
    // "user" + 397 characters = 401 characters ≈ 101 tokens.
    let resp = anthropic_post(&sim, &user_body("claude-opus-4-6", &"a".repeat(397))).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "prompt is too long: 101 tokens > 100 maximum");
    let ok = anthropic_post(&sim, &user_body("claude-opus-4-6", &"a".repeat(396))).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn max_tokens_cuts_the_reply() {
    let sim = start(SimConfig::anthropic()).await;
    let mut body = user_body("claude-opus-4-6", "long answer please");
    body["max_tokens"] = json!(4);
    let v: Value = anthropic_post(&sim, &body).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn tool_use_reply_json_and_stream() {
    let sim = start(SimConfig::anthropic()).await;
    let mut body = user_body("claude-opus-4-6", "Weather in Paris?");
    body["tools"] = json!([weather_tool_anthropic(), {"name": "other", "input_schema": {"type": "object"}}]);
    let v: Value = anthropic_post(&sim, &body).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], weather_input());

    body["stream"] = json!(true);
    let events = parse_sse(&anthropic_post(&sim, &body).await.text().await.unwrap());
    let start = events.iter().find(|e| e.event.as_deref() == Some("content_block_start")).unwrap().json();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "get_weather");
    assert_eq!(start["content_block"]["input"], json!({}));
    let fragments: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let d = e.json();
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(fragments.len() > 1, "arguments arrive in several fragments");
    let input: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(input, weather_input());
    let delta = events.iter().find(|e| e.event.as_deref() == Some("message_delta")).unwrap().json();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    // A forced choice picks the named tool; `none` answers with text.
    body["stream"] = json!(false);
    body["tool_choice"] = json!({"type": "tool", "name": "other"});
    let v: Value = anthropic_post(&sim, &body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["name"], "other");
    assert_eq!(v["content"][0]["input"], json!({}));
    body["tool_choice"] = json!({"type": "none"});
    let v: Value = anthropic_post(&sim, &body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["type"], "text");
}

#[tokio::test]
async fn tool_result_is_quoted_back() {
    let sim = start(SimConfig::anthropic()).await;
    let body = json!({
        "model": "claude-opus-4-6",
        "max_tokens": 100,
        "tools": [weather_tool_anthropic()],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny, 21C"}]}]}
        ]
    });
    let v: Value = anthropic_post(&sim, &body).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["text"], "[claude-opus-4-6] Tool result: sunny, 21C");
}

#[tokio::test]
async fn models_and_count_tokens() {
    let sim = start(SimConfig::anthropic()).await;
    let resp = client()
        .get(format!("{}/v1/models", sim.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["claude-opus-4-6", "claude-sonnet-4-5", "claude-haiku-4-5"]);
    assert_eq!(v["data"][1]["type"], "model");
    assert_eq!(v["data"][1]["display_name"], "Claude Sonnet 4.5");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], "claude-opus-4-6");

    let resp = client()
        .post(format!("{}/v1/messages/count_tokens", sim.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-opus-4-6", "messages": [{"role": "user", "content": "12345678"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"input_tokens": 3}));

    let resp = client().get(format!("{}/v1/nothing", sim.url())).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "not_found_error");
}
