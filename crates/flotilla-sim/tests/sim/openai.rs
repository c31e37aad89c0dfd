//! The OpenAI simulator: Chat Completions and Responses, JSON and streams, tools, errors.

use flotilla_sim::SimConfig;
use serde_json::{Value, json};

use super::support::*;

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]})
}

fn chat_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": weather_tool_anthropic()["input_schema"].clone()
    }}])
}

fn responses_tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": weather_tool_anthropic()["input_schema"].clone(), "strict": false}])
}

#[tokio::test]
async fn chat_completion_shape_and_headers() {
    let sim = start(SimConfig::openai()).await;
    let resp = openai_post(&sim, "/v1/chat/completions", &chat_body("gpt-4.1", "Hi")).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(h["x-request-id"].to_str().unwrap().starts_with("req_"));
    assert!(h["openai-processing-ms"].to_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(h["openai-version"], "2020-10-01");
    assert_eq!(h["x-ratelimit-remaining-requests"], "9999");
    assert!(h.contains_key("x-ratelimit-reset-tokens"));
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4.1");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].as_str().unwrap().starts_with("[gpt-4.1] "));
    // "system" + "Be brief." + "user" + "Hi" = 21 characters ≈ 6 tokens.
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(v["usage"]["completion_tokens"], 24);
    assert_eq!(v["usage"]["total_tokens"], 30);
}

#[tokio::test]
async fn chat_stream_chunks_usage_and_done() {
    let sim = start(SimConfig { reply_tokens: 4, ..SimConfig::openai() }).await;
    let mut body = chat_body("gpt-5", "Count");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = openai_post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream; charset=utf-8");
    let events = parse_sse(&resp.text().await.unwrap());
    assert!(events.iter().all(|e| e.event.is_none()), "chat streams have no event names");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Sse::json).collect();
    // role chunk, 4 content chunks, finish chunk, usage chunk.
    assert_eq!(chunks.len(), 7);
    let id = chunks[0]["id"].clone();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
    let text: String =
        chunks[1..5].iter().map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap().to_owned()).collect();
    assert!(text.starts_with("[gpt-5] "));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"][0]["delta"], json!({}));
    for c in &chunks[..6] {
        assert_eq!(c["usage"], Value::Null);
    }
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 4);

    // Without include_usage there is no usage chunk and no usage field.
    body.as_object_mut().unwrap().remove("stream_options");
    let events = parse_sse(&openai_post(&sim, "/v1/chat/completions", &body).await.text().await.unwrap());
    assert_eq!(events.len(), 7);
    assert!(events[0].json().get("usage").is_none());
}

#[tokio::test]
async fn chat_tool_calls_json_and_stream() {
    let sim = start(SimConfig::openai()).await;
    let mut body = chat_body("gpt-4.1", "Weather?");
    body["tools"] = chat_tools();
    let v: Value = openai_post(&sim, "/v1/chat/completions", &body).await.json().await.unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, weather_input());

    body["stream"] = json!(true);
    let events = parse_sse(&openai_post(&sim, "/v1/chat/completions", &body).await.text().await.unwrap());
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Sse::json).collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["index"], 0);
    assert!(first["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(first["function"]["name"], "get_weather");
    assert_eq!(first["function"]["arguments"], "");
    let args: String = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), weather_input());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

    // The tool's answer is quoted back.
    let body = json!({"model": "gpt-4.1", "tools": chat_tools(), "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain all week"}
    ]});
    let v: Value = openai_post(&sim, "/v1/chat/completions", &body).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], "[gpt-4.1] Tool result: rain all week");

    // `required` forces a call even after a tool result.
    let mut forced = body.clone();
    forced["tool_choice"] = json!("required");
    let v: Value = openai_post(&sim, "/v1/chat/completions", &forced).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn responses_object_shape() {
    let sim = start(SimConfig::openai()).await;
    let body = json!({"model": "gpt-5.3-codex", "instructions": "Be brief.", "input": "Hello"});
    let resp = openai_post(&sim, "/v1/responses", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["instructions"], "Be brief.");
    assert_eq!(v["error"], Value::Null);
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], "completed");
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(item["content"][0]["type"], "output_text");
    assert!(item["content"][0]["text"].as_str().unwrap().starts_with("[gpt-5.3-codex] "));
    assert_eq!(v["usage"]["input_tokens"], 4);
    assert_eq!(v["usage"]["output_tokens"], 24);
    assert_eq!(v["usage"]["total_tokens"], 28);

    let mut capped = body.clone();
    capped["max_output_tokens"] = json!(16);
    let sim2 = start(SimConfig { reply_tokens: 40, ..SimConfig::openai() }).await;
    let v: Value = openai_post(&sim2, "/v1/responses", &capped).await.json().await.unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
}

#[tokio::test]
async fn responses_stream_sequence() {
    let sim = start(SimConfig { reply_tokens: 3, ..SimConfig::openai() }).await;
    let body = json!({"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}], "stream": true});
    let resp = openai_post(&sim, "/v1/responses", &body).await;
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, e) in events.iter().enumerate() {
        let v = e.json();
        assert_eq!(v["type"], e.event.clone().unwrap());
        assert_eq!(v["sequence_number"], i);
    }
    let created = events[0].json();
    assert_eq!(created["response"]["status"], "in_progress");
    let item_id = events[2].json()["item"]["id"].clone();
    let deltas: String = events[4..7]
        .iter()
        .map(|e| {
            let v = e.json();
            assert_eq!(v["item_id"], item_id);
            assert_eq!(v["output_index"], 0);
            assert_eq!(v["content_index"], 0);
            v["delta"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(events[7].json()["text"], deltas);
    let done = events[10].json();
    assert_eq!(done["response"]["id"], created["response"]["id"]);
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], deltas);
    assert_eq!(done["response"]["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn responses_function_calls() {
    let sim = start(SimConfig::openai()).await;
    let body = json!({"model": "gpt-5", "input": "Weather?", "tools": responses_tools()});
    let v: Value = openai_post(&sim, "/v1/responses", &body).await.json().await.unwrap();
    let item = &v["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "get_weather");
    assert!(item["call_id"].as_str().unwrap().starts_with("call_"));
    assert!(item["id"].as_str().unwrap().starts_with("fc_"));
    let args: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, weather_input());

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = parse_sse(&openai_post(&sim, "/v1/responses", &streamed).await.text().await.unwrap());
    let n = names(&events);
    assert_eq!(n[2], "response.output_item.added");
    assert_eq!(events[2].json()["item"]["type"], "function_call");
    assert_eq!(events[2].json()["item"]["arguments"], "");
    let deltas: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&deltas).unwrap(), weather_input());
    let done =
        events.iter().find(|e| e.event.as_deref() == Some("response.function_call_arguments.done")).unwrap().json();
    assert_eq!(done["arguments"], deltas);
    assert_eq!(n[n.len() - 2], "response.output_item.done");
    assert_eq!(n[n.len() - 1], "response.completed");

    let after = json!({"model": "gpt-5", "tools": responses_tools(), "input": [
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "foggy"}
    ]});
    let v: Value = openai_post(&sim, "/v1/responses", &after).await.json().await.unwrap();
    assert_eq!(v["output"][0]["content"][0]["text"], "[gpt-5] Tool result: foggy");
}

#[tokio::test]
async fn errors_look_like_the_api() {
    let sim = start(SimConfig { context_window: 10, ..SimConfig::openai() }).await;
    let err = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        (status, v["error"].clone())
    };
    let missing_key = client()
        .post(format!("{}/v1/chat/completions", sim.url()))
        .json(&chat_body("gpt-5", "x"))
        .send()
        .await
        .unwrap();
    let (status, e) = err(missing_key).await;
    assert_eq!(status, 401);
    assert!(e["message"].as_str().unwrap().starts_with("You didn't provide an API key."));
    assert_eq!(e["type"], "invalid_request_error");

    let (status, e) = err(openai_post(&sim, "/v1/chat/completions", &chat_body("gpt-9", "x")).await).await;
    assert_eq!(status, 404);
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["message"], "The model `gpt-9` does not exist or you do not have access to it.");

    let (status, e) = err(openai_post(&sim, "/v1/chat/completions", &chat_body("gpt-5", &"y".repeat(100))).await).await;
    assert_eq!(status, 400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "messages");
    assert!(e["message"].as_str().unwrap().starts_with(
        "This model's maximum context length is 10 tokens. However, your messages resulted in 30 tokens."
    ));

    let (status, e) =
        err(openai_post(&sim, "/v1/responses", &json!({"model": "gpt-5", "input": "z".repeat(100)})).await).await;
    assert_eq!(status, 400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "input");

    let (status, e) = err(openai_post(&sim, "/v1/chat/completions", &json!({"model": "gpt-5"})).await).await;
    assert_eq!(status, 400);
    assert_eq!(e["message"], "Missing required parameter: 'messages'.");
    assert_eq!(e["code"], "missing_required_parameter");

    let resp = client().get(format!("{}/v1/engines", sim.url())).send().await.unwrap();
    let (status, e) = err(resp).await;
    assert_eq!(status, 404);
    assert_eq!(e["message"], "Invalid URL (GET /v1/engines)");
}

#[tokio::test]
async fn models_list() {
    let sim = start(SimConfig::openai()).await;
    let v: Value =
        client().get(format!("{}/v1/models", sim.url())).bearer_auth("k").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(
        v["data"][0],
        json!({"id": "gpt-5.3-codex", "object": "model", "created": 1_730_000_000, "owned_by": "system"})
    );
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
}
