//! The `/_sim/` admin endpoints of the Slack simulator (no credentials): simulated users,
//! faults, envelopes, workspace, counters and reports, as JSON.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Server;
use super::delivery::EnvelopeKind;
use super::handle::{SlackFault, SlackSimError};

fn reply(status: StatusCode, v: &impl serde::Serialize) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn ok(v: &impl serde::Serialize) -> Response {
    reply(StatusCode::OK, v)
}

fn failed(e: &SlackSimError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    reply(status, &json!({"error": e.to_string()}))
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid request body: {e}"))
}

fn bad_body(e: &str) -> Response {
    reply(StatusCode::BAD_REQUEST, &json!({"error": e}))
}

pub(crate) async fn health() -> Response {
    ok(&json!({"ok": true, "kind": "slack"}))
}

pub(crate) async fn workspace(AxState(srv): AxState<Arc<Server>>) -> Response {
    ok(&srv.handle.workspace())
}

#[derive(Deserialize)]
struct PostBody {
    channel: String,
    user: String,
    text: String,
    #[serde(default)]
    thread_ts: Option<String>,
}

pub(crate) async fn post_message(AxState(srv): AxState<Arc<Server>>, bytes: Bytes) -> Response {
    let b: PostBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    match srv.handle.post_user_message(&b.channel, &b.user, &b.text, b.thread_ts.as_deref()) {
        Ok(posted) => ok(&posted),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn messages(AxState(srv): AxState<Arc<Server>>) -> Response {
    ok(&srv.handle.messages())
}

pub(crate) async fn add_fault(AxState(srv): AxState<Arc<Server>>, bytes: Bytes) -> Response {
    let fault: SlackFault = match body(&bytes) {
        Ok(f) => f,
        Err(e) => return bad_body(&e),
    };
    match srv.handle.inject(fault) {
        Ok(n) => ok(&json!({"affected": n})),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn clear_faults(AxState(srv): AxState<Arc<Server>>) -> Response {
    srv.handle.clear_faults();
    ok(&json!({"cleared": true}))
}

pub(crate) async fn connections(AxState(srv): AxState<Arc<Server>>, Path(app): Path<String>) -> Response {
    if srv.handle.app(&app).is_none() {
        return failed(&SlackSimError::UnknownApp(app));
    }
    ok(&srv.handle.connections(&app))
}

#[derive(Deserialize)]
struct EnvelopeBody {
    app: String,
    #[serde(rename = "type")]
    kind: EnvelopeKind,
    payload: Value,
}

pub(crate) async fn envelope(AxState(srv): AxState<Arc<Server>>, bytes: Bytes) -> Response {
    let b: EnvelopeBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    match srv.handle.send_envelope(&b.app, b.kind, b.payload) {
        Ok(id) => ok(&json!({"envelope_id": id})),
        Err(e) => failed(&e),
    }
}

#[derive(Deserialize)]
struct SlashBody {
    app: String,
    channel: String,
    user: String,
    command: String,
    #[serde(default)]
    text: String,
}

pub(crate) async fn slash_command(AxState(srv): AxState<Arc<Server>>, bytes: Bytes) -> Response {
    let b: SlashBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    match srv.handle.send_slash_command(&b.app, &b.channel, &b.user, &b.command, &b.text) {
        Ok(id) => ok(&json!({"envelope_id": id})),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn envelope_ack(AxState(srv): AxState<Arc<Server>>, Path(id): Path<String>) -> Response {
    match srv.handle.envelope_ack(&id) {
        Some(payload) => ok(&json!({"acked": true, "payload": payload})),
        None => ok(&json!({"acked": false, "payload": null})),
    }
}

#[derive(Deserialize)]
struct ChannelBody {
    name: String,
    #[serde(default)]
    apps: Vec<String>,
}

pub(crate) async fn create_channel(AxState(srv): AxState<Arc<Server>>, bytes: Bytes) -> Response {
    let b: ChannelBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    let apps: Vec<&str> = b.apps.iter().map(String::as_str).collect();
    match srv.handle.create_channel(&b.name, &apps) {
        Ok(id) => ok(&json!({"id": id})),
        Err(e) => failed(&e),
    }
}

#[derive(Deserialize)]
struct JoinBody {
    app: String,
}

pub(crate) async fn add_bot(AxState(srv): AxState<Arc<Server>>, Path(channel): Path<String>, bytes: Bytes) -> Response {
    let b: JoinBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    match srv.handle.add_bot_to_channel(&b.app, &channel) {
        Ok(()) => ok(&json!({"ok": true})),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn report_all(AxState(srv): AxState<Arc<Server>>) -> Response {
    ok(&srv.handle.exactly_once_report())
}

pub(crate) async fn report_app(AxState(srv): AxState<Arc<Server>>, Path(app): Path<String>) -> Response {
    match srv.handle.report(&app) {
        Ok(r) => ok(&r),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn stats(AxState(srv): AxState<Arc<Server>>) -> Response {
    ok(&srv.handle.stats())
}

pub(crate) async fn reset_stats(AxState(srv): AxState<Arc<Server>>) -> Response {
    srv.handle.reset_stats();
    ok(&json!({"reset": true}))
}
