//! Helpers: clients, request builders and an SSE parser written for the tests.

use flotilla_sim::{SimConfig, SimServer};
use serde_json::{Value, json};

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

pub async fn start(config: SimConfig) -> SimServer {
    flotilla_sim::spawn(config).await.expect("spawn simulator")
}

pub fn user_body(model: &str, text: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
    })
}

/// POST to the Anthropic simulator with `x-api-key` and `anthropic-version`.
pub async fn anthropic_post(sim: &SimServer, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", sim.url()))
        .header("x-api-key", "sk-ant-test-key-0001")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("send")
}

/// POST to an OpenAI simulator path with a bearer key.
pub async fn openai_post(sim: &SimServer, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", sim.url()))
        .bearer_auth("sk-openai-test-key-0001")
        .json(body)
        .send()
        .await
        .expect("send")
}

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// Parses an SSE body strictly: events separated by a blank line, each line `field: value`.
pub fn parse_sse(body: &str) -> Vec<Sse> {
    assert!(body.is_empty() || body.ends_with("\n\n"), "stream does not end on an event boundary: {body:?}");
    body.split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            Sse { event, data: data.join("\n") }
        })
        .collect()
}

pub fn names(events: &[Sse]) -> Vec<String> {
    events.iter().map(|e| e.event.clone().unwrap_or_default()).collect()
}

/// Reads a body chunk by chunk until it ends or fails; returns the text and the failure.
pub async fn read_until_error(mut resp: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut text = String::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(None) => return (text, None),
            Err(e) => return (text, Some(e)),
        }
    }
}

/// True if the error was caused by the peer resetting the connection (ECONNRESET).
pub fn is_reset(err: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionReset
        {
            return true;
        }
        cur = e.source();
    }
    false
}

pub fn weather_tool_anthropic() -> Value {
    json!({
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "note": {"type": "string"}
            },
            "required": ["city", "days", "metric"]
        }
    })
}

pub fn weather_input() -> Value {
    json!({"city": "x", "days": 1, "metric": true})
}
