//! Helpers: a Web API caller and a Socket Mode client built on tokio-tungstenite.

use std::time::Duration;

use flotilla_sim::slack::{SlackSim, SlackSimConfig};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Long enough to never fire on a healthy run; only bounds a broken one.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

pub async fn start(config: SlackSimConfig) -> SlackSim {
    flotilla_sim::slack::spawn(config).await.expect("spawn slack simulator")
}

/// The default workspace with apps `family` and `ops`.
pub async fn start_default() -> SlackSim {
    start(SlackSimConfig::with_apps(["family", "ops"])).await
}

pub fn bot_token(sim: &SlackSim, app: &str) -> String {
    sim.handle().app(app).expect("app").bot_token
}

pub fn app_token(sim: &SlackSim, app: &str) -> String {
    sim.handle().app(app).expect("app").app_token
}

pub fn bot_user(sim: &SlackSim, app: &str) -> String {
    sim.handle().app(app).expect("app").bot_user_id
}

pub fn channel(sim: &SlackSim, name: &str) -> String {
    sim.handle().channel_id(name).expect("channel")
}

pub fn dm(sim: &SlackSim, user: &str, app: &str) -> String {
    sim.handle().dm_channel(user, app).expect("dm")
}

/// A JSON-body call with a bearer token: (status, headers, body).
pub async fn call_full(
    sim: &SlackSim,
    token: Option<&str>,
    method: &str,
    body: Value,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = client().post(format!("{}/{method}", sim.api_url())).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status();
    let headers = resp.headers().clone();
    let v: Value = resp.json().await.expect("json body");
    (status, headers, v)
}

/// A JSON-body call that must answer HTTP 200; returns the body.
pub async fn call(sim: &SlackSim, token: &str, method: &str, body: Value) -> Value {
    let (status, _, v) = call_full(sim, Some(token), method, body).await;
    assert_eq!(status, 200, "{method}: {v}");
    v
}

pub fn ok(v: &Value) -> &Value {
    assert_eq!(v["ok"], true, "expected ok: {v}");
    v
}

pub fn err(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "expected an error: {v}");
    v["error"].as_str().expect("error code")
}

/// `chat.postMessage` as the bot of `app`; returns the ts.
pub async fn bot_post(
    sim: &SlackSim,
    app: &str,
    channel: &str,
    text: &str,
    thread_ts: Option<&str>,
    metadata: Option<Value>,
) -> String {
    let mut body = json!({"channel": channel, "text": text});
    if let Some(t) = thread_ts {
        body["thread_ts"] = json!(t);
    }
    if let Some(m) = metadata {
        body["metadata"] = m;
    }
    let v = call(sim, &bot_token(sim, app), "chat.postMessage", body).await;
    ok(&v)["ts"].as_str().expect("ts").to_owned()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Socket Mode URL for `app`.
pub async fn open_url(sim: &SlackSim, app: &str) -> String {
    let v = call(sim, &app_token(sim, app), "apps.connections.open", json!({})).await;
    ok(&v)["url"].as_str().expect("url").to_owned()
}

/// Connects to a URL from `apps.connections.open`.
pub async fn connect_url(url: &str) -> Ws {
    let (ws, _) =
        tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("websocket connect to {url}: {e:?}"));
    ws
}

/// Opens a Socket Mode connection for `app` and reads its `hello`.
pub async fn connect(sim: &SlackSim, app: &str) -> (Ws, Value) {
    let mut ws = connect_url(&open_url(sim, app).await).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello", "first message: {hello}");
    (ws, hello)
}

/// The next frame, whatever it is (`None` when the stream ended or failed).
pub async fn next_frame(ws: &mut Ws) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::time::timeout(PATIENCE, ws.next()).await.expect("a frame within the patience timeout")
}

/// The next JSON text message (pongs skipped).
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match next_frame(ws).await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).expect("json text"),
            Some(Ok(Message::Pong(_) | Message::Ping(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Acks an envelope.
pub async fn ack(ws: &mut Ws, envelope: &Value) {
    let id = envelope["envelope_id"].as_str().expect("envelope_id");
    ws.send(Message::text(json!({"envelope_id": id}).to_string())).await.expect("send ack");
}

/// Reads envelopes until one of type `events_api` arrives; returns it.
pub async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == "events_api" {
            return v;
        }
    }
}

/// Waits for the stream to end; returns the close frame seen on the way, if any.
pub async fn until_closed(ws: &mut Ws) -> (bool, Option<tokio_tungstenite::tungstenite::Error>) {
    let mut saw_close = false;
    loop {
        match next_frame(ws).await {
            Some(Ok(Message::Close(_))) => saw_close = true,
            Some(Ok(_)) => {}
            Some(Err(e)) => return (saw_close, Some(e)),
            None => return (saw_close, None),
        }
    }
}
