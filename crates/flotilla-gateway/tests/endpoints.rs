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

// ---- Raw HTTP/1.1 on one connection: the gateway's own request path (`h1`) and the
// ---- requests it leaves to hyper, mixed on the same connection.

/// One response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A client connection that reads responses one at a time (interim 1xx ones skipped, but
/// counted), by `content-length`, chunked framing or to EOF.
struct Conn {
    rd: tokio::net::tcp::OwnedReadHalf,
    /// `None` once a test took it to write from another task.
    wr: Option<tokio::net::tcp::OwnedWriteHalf>,
    buf: Vec<u8>,
    interim: usize,
}

impl Conn {
    async fn open(url: &str) -> Conn {
        let addr = url.trim_start_matches("http://");
        let (rd, wr) = tokio::net::TcpStream::connect(addr).await.expect("connect").into_split();
        Conn { rd, wr: Some(wr), buf: Vec::new(), interim: 0 }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.wr.as_mut().expect("writer").write_all(bytes).await.expect("write");
    }

    /// Reads more; false at EOF.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), self.rd.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn response(&mut self) -> Raw {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf).expect("a valid response head") {
                let status = resp.code.expect("status");
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                self.buf.drain(..len);
                if status < 200 {
                    self.interim += 1;
                    continue;
                }
                let mut raw = Raw { status, headers, body: Vec::new() };
                if let Some(n) = raw.header("content-length").map(|v| v.parse::<usize>().expect("length")) {
                    while self.buf.len() < n {
                        assert!(self.fill().await, "EOF inside a body");
                    }
                    raw.body = self.buf.drain(..n).collect();
                } else if raw.header("transfer-encoding") == Some("chunked") {
                    raw.body = self.chunked().await;
                } else {
                    while self.fill().await {}
                    raw.body = std::mem::take(&mut self.buf);
                }
                return raw;
            }
            assert!(self.fill().await, "EOF before a response head");
        }
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill().await, "EOF inside a chunk size");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).expect("size"), 16)
                .expect("hex chunk size");
            while self.buf.len() < line_end + 2 + size + 2 {
                assert!(self.fill().await, "EOF inside a chunk");
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            assert_eq!(&self.buf[line_end + 2 + size..line_end + 4 + size], b"\r\n", "chunk ends with CRLF");
            self.buf.drain(..line_end + 4 + size);
            if size == 0 {
                return body;
            }
        }
    }

    /// True if the server closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

fn raw_post(path: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const HI: &str = r#"{"model":"family","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
const HI_CHAT: &str = r#"{"model":"family","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_connection_close_is_honoured() {
    let f = fixture(&[]).await;
    let mut c = Conn::open(&f.url).await;
    // Three requests in one write: two formats, then one asking to close.
    let mut bytes = raw_post("/v1/messages?beta=true", "", HI);
    bytes.extend(raw_post("/v1/chat/completions", "", HI_CHAT));
    bytes.extend(raw_post("/v1/messages", "connection: close\r\n", HI));
    c.send(&bytes).await;
    let first = c.response().await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["type"], "message");
    assert_eq!(first.header("x-flotilla-model"), Some("anthropic/claude-opus-4-6"));
    assert_eq!(first.header("x-flotilla-attempts"), Some("1"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert!(first.header("date").is_some_and(|d| d.ends_with(" GMT")), "{first:?}");
    assert_eq!(first.header("connection"), None);
    let second = c.response().await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.json()["object"], "chat.completion");
    let third = c.response().await;
    assert_eq!(third.status, 200);
    assert_eq!(third.header("connection"), Some("close"));
    assert!(c.closed().await, "the server closes after `connection: close`");
}

#[tokio::test]
async fn a_request_split_into_pieces_is_read_whole() {
    let f = fixture(&[]).await;
    let mut c = Conn::open(&f.url).await;
    let bytes = raw_post("/v1/messages", "", HI);
    // Inside the request line, inside a header, at the blank line, inside the body.
    for piece in [
        &bytes[..7],
        &bytes[7..40],
        &bytes[40..bytes.len() - HI.len() - 2],
        &bytes[bytes.len() - HI.len() - 2..bytes.len() - 10],
        &bytes[bytes.len() - 10..],
    ] {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["type"], "message");
}

#[tokio::test]
async fn requests_left_to_hyper_keep_working_on_the_same_connection() {
    let f = fixture(&[]).await;
    let mut c = Conn::open(&f.url).await;
    // A compatible request first (served by the gateway's own path), then one it leaves to
    // hyper: the connection continues there with the bytes already read.
    c.send(&raw_post("/v1/messages", "", HI)).await;
    assert_eq!(c.response().await.status, 200);
    c.send(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n").await;
    let health = c.response().await;
    assert_eq!(health.status, 200, "{health:?}");
    // A chunked request body, then `Expect: 100-continue`, then a plain one again.
    let chunked = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        10,
        &HI[..10],
        HI.len() - 10,
        &HI[10..]
    );
    c.send(chunked.as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["type"], "message");
    c.send(&raw_post("/v1/messages", "expect: 100-continue\r\n", HI)).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(c.interim, 1, "100 Continue came first");
    c.send(&raw_post("/v1/chat/completions", "", HI_CHAT)).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["object"], "chat.completion");
}

#[tokio::test]
async fn a_connection_that_starts_with_another_request_is_served() {
    let f = fixture(&[]).await;
    // An unknown path first: axum's 404, then the compatible endpoint on the same connection.
    let mut c = Conn::open(&f.url).await;
    c.send(b"GET /nope HTTP/1.1\r\nhost: gw\r\n\r\n").await;
    assert_eq!(c.response().await.status, 404);
    c.send(&raw_post("/v1/messages", "", HI)).await;
    assert_eq!(c.response().await.status, 200);
    // HTTP/1.0: answered, then closed.
    let mut c = Conn::open(&f.url).await;
    let req = format!("POST /v1/messages HTTP/1.0\r\ncontent-length: {}\r\n\r\n{HI}", HI.len());
    c.send(req.as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["type"], "message");
    assert!(c.closed().await);
}

#[tokio::test]
async fn bad_heads_and_oversized_bodies_get_http_errors() {
    let f = fixture(&[]).await;
    let mut c = Conn::open(&f.url).await;
    c.send(b"POST /v1/messages HTTP/1.1\r\nbad header line\r\n\r\n").await;
    assert_eq!(c.response().await.status, 400);
    let mut c = Conn::open(&f.url).await;
    c.send(b"POST /v1/messages HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab").await;
    assert_eq!(c.response().await.status, 400, "conflicting lengths are refused");
    let mut c = Conn::open(&f.url).await;
    let big = 3 * 1024 * 1024;
    c.send(format!("POST /v1/messages HTTP/1.1\r\nhost: gw\r\ncontent-length: {big}\r\n\r\n").as_bytes()).await;
    // The server stops reading at its limit: the body is written from another task.
    let mut wr = c.wr.take().expect("writer");
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = wr.write_all(&vec![b'x'; big]).await;
        wr
    });
    let r = c.response().await;
    writer.abort();
    assert_eq!(r.status, 413, "{r:?}");
    // A body that is not a request in the endpoint's format: an error in that format.
    let mut c = Conn::open(&f.url).await;
    c.send(&raw_post("/v1/chat/completions", "", "{not json")).await;
    let r = c.response().await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_stream_is_sent_chunked_and_the_connection_is_reused_after_it() {
    let f = fixture(&[]).await;
    let mut c = Conn::open(&f.url).await;
    let body = r#"{"model":"family","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    c.send(&raw_post("/v1/messages", "", body)).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let events: Vec<String> = sse(&String::from_utf8_lossy(&r.body)).into_iter().filter_map(|(e, _)| e).collect();
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert_eq!(events.last().map(String::as_str), Some("message_stop"));
    c.send(&raw_post("/v1/messages", "", HI)).await;
    assert_eq!(c.response().await.status, 200);
}

#[tokio::test]
async fn client_keys_are_checked_on_raw_connections() {
    let f = fixture(&["gw-key-1"]).await;
    let mut c = Conn::open(&f.url).await;
    c.send(&raw_post("/v1/messages", "", HI)).await;
    let r = c.response().await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.starts_with("missing api key")));
    // The refused request's body was read: the connection stays in step.
    c.send(&raw_post("/v1/chat/completions", "authorization: Bearer wrong\r\n", HI_CHAT)).await;
    let r = c.response().await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["message"], "invalid api key");
    c.send(&raw_post("/v1/messages", "x-api-key: gw-key-1\r\n", HI)).await;
    assert_eq!(c.response().await.status, 200);
    c.send(&raw_post("/v1/chat/completions", "authorization: Bearer gw-key-1\r\n", HI_CHAT)).await;
    assert_eq!(c.response().await.status, 200);
}

#[tokio::test]
async fn h2c_clients_are_served_by_hyper() {
    let f = fixture(&[]).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    for body in [
        json!({"model": "family", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "family", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let r = client.post(format!("{}/v1/messages", f.url)).json(&body).send().await.expect("send");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-flotilla-model"], "anthropic/claude-opus-4-6");
        let text = r.text().await.expect("body");
        assert!(text.contains("[claude-opus-4-6]"), "{text}");
    }
}

#[tokio::test]
async fn a_client_that_closes_its_connection_cancels_its_request() {
    let f = fixture(&[]).await;
    let finished = |metrics: &str| {
        metrics.contains("flotilla_requests_total{api=\"anthropic\",outcome=\"ok\",stream=\"false\"} 1")
    };
    // The primary takes 600 ms to answer (within the 1 s time to first byte).
    f.ant.handle().add_fault(FaultRule::new(Fault::StallBeforeFirstByte { ms: 600 }).count(2));
    let mut gone = Conn::open(&f.url).await;
    gone.send(&raw_post("/v1/messages", "", HI)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gone);
    // A request that stays connected on the same stall is answered and counted...
    let mut stays = Conn::open(&f.url).await;
    stays.send(&raw_post("/v1/messages", "", HI)).await;
    assert_eq!(stays.response().await.status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let metrics = f.state.metrics.encode();
    // ...once: the one whose client left was dropped, not answered into a closed socket.
    assert!(finished(&metrics), "{metrics}");
}
