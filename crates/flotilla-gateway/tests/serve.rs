//! `serve`'s connection handling: keep-alive, graceful shutdown that lets in-flight streams
//! finish, and the drain timeout that closes what is still open.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::sync::Arc;
use std::time::Duration;

use flotilla_config::{Env, parse_config};
use flotilla_gateway::GatewayState;
use flotilla_router::Router;
use flotilla_sim::{Fault, FaultRule, SimConfig, SimServer};
use flotilla_telemetry::Metrics;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Gateway {
    ant: SimServer,
    url: String,
    stop: CancellationToken,
    served: JoinHandle<std::io::Result<()>>,
    state: GatewayState,
}

async fn gateway(drain: Duration) -> Gateway {
    gateway_on(drain, None).await
}

/// With `threads`, served by `serve_threads` on that many threads of their own.
async fn gateway_on(drain: Duration, threads: Option<usize>) -> Gateway {
    let ant = flotilla_sim::spawn(SimConfig::anthropic()).await.expect("sim");
    let toml = format!(
        r#"
[router]
ttfb_timeout = "10s"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"

[[agents.list]]
id = "family"

[providers.anthropic]
api = "anthropic"
base_url = "{}"
auth = ["ant"]

[auth.ant]
provider = "anthropic"
type = "api-key"
key = "env:ANT"
"#,
        ant.url()
    );
    let config =
        parse_config(&toml, &Env::from_pairs([("ANT", "sk-ant-1")]), std::path::Path::new(".")).expect("config");
    let router = Arc::new(Router::new(Arc::new(config), Arc::new(Metrics::new())).expect("router"));
    let state = GatewayState::new(router, Vec::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let shutdown = async move { signal.cancelled().await };
    let served = match threads {
        None => tokio::spawn(flotilla_gateway::serve(listener, state.clone(), shutdown, drain)),
        Some(n) => tokio::spawn(flotilla_gateway::serve_threads(listener, state.clone(), shutdown, drain, n)),
    };
    Gateway { ant, url, stop, served, state }
}

fn stream_request() -> serde_json::Value {
    json!({"model": "family", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn requests_share_a_keep_alive_connection_until_shutdown_closes_it() {
    use http_body_util::{BodyExt, Full};
    let g = gateway(Duration::from_secs(5)).await;
    let tcp = tokio::net::TcpStream::connect(g.url.trim_start_matches("http://")).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.expect("handshake");
    let conn = tokio::spawn(conn);
    let body = json!({"model": "family", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let req = http::Request::post("/v1/messages")
            .header("host", "gateway")
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .expect("request");
        let resp = send.send_request(req).await.expect("answer on the same connection");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("body");
    }
    assert_eq!(g.ant.handle().stats().requests_total, 3);
    // An idle keep-alive connection does not hold up shutdown: it is closed.
    g.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), g.served).await.expect("serve returns").expect("join").expect("ok");
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await.expect("connection closed");
    assert!(closed.expect("join").is_ok(), "a clean close");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish_and_refuses_new_connections() {
    shutdown_lets_a_stream_finish(gateway(Duration::from_secs(10)).await).await;
}

/// Starts a stream that pauses after its first events, shuts the gateway down while it is in
/// flight, and checks that it runs to its end, that serving returns, and that no new
/// connection is taken.
async fn shutdown_lets_a_stream_finish(g: Gateway) {
    let resp = stream_stalled_then_shut_down(&g, 500).await;
    let body = tokio::time::timeout(Duration::from_secs(10), resp.text()).await.expect("no hang").expect("body");
    assert!(body.contains("event: message_stop"), "the stream ran to its end during the drain: {body}");
    tokio::time::timeout(Duration::from_secs(10), g.served).await.expect("serve returns").expect("join").expect("ok");
    assert!(g.state.readiness.problems().contains(&"shutting down".to_owned()), "draining is not ready");
    let again = reqwest::Client::new().get(format!("{}/healthz", g.url)).send().await;
    assert!(again.is_err(), "no new connections after shutdown: {again:?}");
}

/// Starts a stream that stalls for `stall_ms` after its first events and, once its head
/// arrived, starts the gateway's shutdown.
async fn stream_stalled_then_shut_down(g: &Gateway, stall_ms: u64) -> reqwest::Response {
    g.ant.handle().add_fault(FaultRule::new(Fault::StallMidStream { after_events: 3, ms: stall_ms }));
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", g.url))
        .json(&stream_request())
        .send()
        .await
        .expect("stream head");
    assert_eq!(resp.status(), 200);
    g.stop.cancel();
    resp
}

#[tokio::test]
async fn serving_threads_answer_and_drain_like_serve() {
    let g = gateway_on(Duration::from_secs(10), Some(2)).await;
    // Separate connections, so that both threads' accept loops take some.
    let body = json!({"model": "family", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let answers = futures::future::join_all((0..16).map(|_| {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let (url, body) = (format!("{}/v1/messages", g.url), body.clone());
        async move { client.post(url).json(&body).send().await.map(|r| r.status().as_u16()) }
    }))
    .await;
    assert!(answers.iter().all(|a| matches!(a, Ok(200))), "{answers:?}");
    assert_eq!(g.ant.handle().stats().requests_total, 16);
    // A stream on one of the threads finishes during the drain (and, found by this test, is
    // not cut when the other thread's runtime stops first).
    shutdown_lets_a_stream_finish(g).await;
}

#[tokio::test]
async fn the_drain_timeout_closes_a_stream_that_does_not_finish() {
    let g = gateway(Duration::from_millis(200)).await;
    let resp = stream_stalled_then_shut_down(&g, 60_000).await;
    tokio::time::timeout(Duration::from_secs(10), g.served).await.expect("serve returns").expect("join").expect("ok");
    // The connection was closed under the stream: the body ends without its last event.
    let body = tokio::time::timeout(Duration::from_secs(10), resp.text()).await.expect("no hang");
    assert!(body.is_err() || !body.as_deref().unwrap_or("").contains("message_stop"), "{body:?}");
}

#[tokio::test]
async fn the_direct_endpoints_answer_like_the_router_does() {
    let g = gateway(Duration::from_secs(5)).await;
    let client = reqwest::Client::new();
    // Over axum's default 2 MB body limit: the same 413 as the router's extractor gives.
    let big = "x".repeat(3 * 1024 * 1024);
    let r = client.post(format!("{}/v1/messages", g.url)).body(big).send().await.expect("send");
    assert_eq!(r.status(), 413);
    assert!(r.text().await.expect("text").contains("length limit exceeded"));
    // Other methods and paths still go through the router.
    let r = client.get(format!("{}/v1/messages", g.url)).send().await.expect("send");
    assert_eq!(r.status(), 405);
    let r = client.post(format!("{}/v1/messages/", g.url)).body("{}").send().await.expect("send");
    assert_eq!(r.status(), 404);
    // A query string does not change the endpoint (the Anthropic SDK sends `?beta=true`).
    let r = client
        .post(format!("{}/v1/messages?beta=true", g.url))
        .json(&json!({"model": "family", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-flotilla-model"], "anthropic/claude-opus-4-6");
    assert_eq!(g.ant.handle().stats().requests_total, 1);
}
