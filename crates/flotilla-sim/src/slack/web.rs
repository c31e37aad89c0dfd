//! The Web API at `/api/{method}`: form or JSON bodies, bearer or `token` credentials,
//! Slack's `{"ok": false, "error": …}` answers with HTTP 200, and HTTP 429 + `Retry-After`
//! for rate limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State as AxState};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::Server;
use super::ids::Ts;
use super::shapes;
use super::state::{Author, ChannelKind, Settings, State};

/// Largest request body read.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Longest `text` Slack accepts in `chat.postMessage`.
const MAX_TEXT: usize = 40_000;

const METHODS: &[&str] = &[
    "apps.connections.open",
    "auth.test",
    "chat.postMessage",
    "conversations.history",
    "conversations.info",
    "conversations.open",
    "conversations.replies",
    "users.conversations",
];

/// Request arguments from the query string and the body, by name.
struct Params {
    map: HashMap<String, Value>,
    json: bool,
}

impl Params {
    /// A scalar argument as text; empty strings count as absent, as in Slack.
    fn str(&self, k: &str) -> Option<String> {
        match self.map.get(k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn bool(&self, k: &str) -> bool {
        matches!(self.str(k).as_deref(), Some("true" | "1"))
    }

    fn present(&self, k: &str) -> bool {
        match self.map.get(k) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        }
    }

    /// A JSON argument: an object in a JSON body, a JSON string in a form.
    fn json(&self, k: &str) -> Option<Result<Value, ()>> {
        match self.map.get(k)? {
            Value::String(s) => Some(serde_json::from_str(s).map_err(|_| ())),
            v => Some(Ok(v.clone())),
        }
    }
}

fn parse_params(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Result<Params, &'static str> {
    let mut map = HashMap::new();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let mut json = false;
    if !body.is_empty() {
        let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        if ct.is_empty() {
            return Err("missing_post_type");
        } else if ct.starts_with("application/json") {
            json = true;
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => map.extend(o),
                _ => return Err("invalid_json"),
            }
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            for (k, v) in form_urlencoded::parse(body) {
                map.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        } else {
            return Err("invalid_post_type");
        }
    }
    Ok(Params { map, json })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenFrom {
    Header,
    Param,
}

/// `Authorization: Bearer …`, else a `token` argument (not from a JSON body: Slack reads
/// tokens there only from the header).
fn credential(headers: &HeaderMap, p: &Params) -> Option<(String, TokenFrom)> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some((rest.trim().to_owned(), TokenFrom::Header));
        }
    }
    if p.json {
        return None;
    }
    p.str("token").map(|t| (t, TokenFrom::Param))
}

#[derive(Debug, Clone, Copy)]
enum Caller {
    App(usize, TokenFrom),
    Bot(usize),
}

struct ApiError {
    code: String,
    extra: Vec<(&'static str, Value)>,
}

impl From<&str> for ApiError {
    fn from(code: &str) -> Self {
        ApiError { code: code.to_owned(), extra: Vec::new() }
    }
}

type ApiResult = Result<Value, ApiError>;

/// An answer ready to send.
struct Reply {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(serde_json::to_vec(&self.body).unwrap_or_default()));
        *r.status_mut() = self.status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

/// Counts and shapes a method's result.
fn finish(st: &mut State, r: ApiResult) -> Reply {
    finish_with(st, r, StatusCode::OK)
}

fn finish_with(st: &mut State, r: ApiResult, error_status: StatusCode) -> Reply {
    match r {
        Ok(body) => Reply { status: StatusCode::OK, body, retry_after: None },
        Err(e) => {
            *st.stats.api_errors.entry(e.code.clone()).or_default() += 1;
            let mut o = Map::new();
            o.insert("ok".into(), json!(false));
            o.insert("error".into(), json!(e.code));
            for (k, v) in e.extra {
                o.insert(k.into(), v);
            }
            Reply { status: error_status, body: Value::Object(o), retry_after: None }
        }
    }
}

enum Step {
    Done(Reply),
    Post(usize),
}

/// `/api/{method}`, any HTTP method.
pub(crate) async fn api(AxState(srv): AxState<Arc<Server>>, Path(method): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let shared = srv.handle.inner.clone();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await;
    let params = match bytes {
        Ok(b) => parse_params(&parts.headers, parts.uri.query(), &b),
        Err(_) => Err("request_timeout"),
    };
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| srv.local_addr.to_string());
    let next = {
        let mut st = shared.lock();
        *st.stats.api_calls.entry(method.clone()).or_default() += 1;
        match params {
            Err(code) => Next::Done(finish(&mut st, Err(code.into()))),
            Ok(p) => {
                let token = credential(&parts.headers, &p);
                match call(&mut st, &shared.settings, &method, token, &p, &host) {
                    Step::Post(app) => Next::Post(app, p),
                    Step::Done(reply) => Next::Done(reply),
                }
            }
        }
    };
    match next {
        Next::Done(reply) => {
            shared.touch();
            reply.into_response()
        }
        Next::Post(app, p) => post_message(&srv, app, p).await,
    }
}

enum Next {
    Done(Reply),
    Post(usize, Params),
}

fn call(
    st: &mut State,
    settings: &Settings,
    method: &str,
    token: Option<(String, TokenFrom)>,
    p: &Params,
    host: &str,
) -> Step {
    if !METHODS.contains(&method) {
        let e = ApiError { code: "unknown_method".into(), extra: vec![("req_method", json!(method))] };
        return Step::Done(finish(st, Err(e)));
    }
    let caller = match authenticate(st, token) {
        Ok(c) => c,
        Err(e) => return Step::Done(finish(st, Err(e))),
    };
    let caller = match (method, caller) {
        // Slack wants the app-level token in the header here; as a form field it is refused.
        ("apps.connections.open", Caller::App(_, TokenFrom::Param)) => Err("invalid_auth"),
        ("apps.connections.open", Caller::App(a, _)) => Ok(a),
        ("apps.connections.open", Caller::Bot(_)) | (_, Caller::App(..)) => Err("not_allowed_token_type"),
        (_, Caller::Bot(a)) => Ok(a),
    };
    let app = match caller {
        Ok(a) => a,
        Err(e) => return Step::Done(finish(st, Err(e.into()))),
    };
    let now = Instant::now();
    st.faults.rate_limits.retain(|(_, until, _)| *until > now);
    let limited = st.faults.rate_limits.iter().filter(|(m, _, _)| m == method || m == "*").map(|(_, _, ra)| *ra).max();
    if let Some(retry_after) = limited {
        let mut reply = finish_with(st, Err("ratelimited".into()), StatusCode::TOO_MANY_REQUESTS);
        reply.retry_after = Some(retry_after);
        return Step::Done(reply);
    }
    let r = match method {
        "apps.connections.open" => connections_open(st, settings, app, host),
        "auth.test" => Ok(auth_test(st, app)),
        "chat.postMessage" => return Step::Post(app),
        "conversations.history" => history(st, app, p),
        "conversations.replies" => replies(st, app, p),
        "conversations.info" => info(st, app, p),
        "conversations.open" => open(st, app, p),
        "users.conversations" => user_conversations(st, app, p),
        _ => Err("unknown_method".into()),
    };
    Step::Done(finish(st, r))
}

fn authenticate(st: &State, token: Option<(String, TokenFrom)>) -> Result<Caller, ApiError> {
    let Some((token, from)) = token else { return Err("not_authed".into()) };
    if let Some(error) = st.faults.bad_tokens.get(&token) {
        return Err(error.as_str().into());
    }
    if let Some(a) = st.apps.iter().position(|a| a.app_token == token) {
        return Ok(Caller::App(a, from));
    }
    if let Some(a) = st.apps.iter().position(|a| a.bot_token == token) {
        return Ok(Caller::Bot(a));
    }
    Err("invalid_auth".into())
}

fn need_scope(st: &State, app: usize, scope: &str) -> Result<(), ApiError> {
    let scopes = &st.apps[app].scopes;
    if scopes.contains(scope) {
        return Ok(());
    }
    let provided = scopes.iter().cloned().collect::<Vec<_>>().join(",");
    Err(ApiError { code: "missing_scope".into(), extra: vec![("needed", json!(scope)), ("provided", json!(provided))] })
}

fn connections_open(st: &mut State, settings: &Settings, app: usize, host: &str) -> ApiResult {
    if st.apps[app].link_disabled {
        return Err(settings.link_disabled_error.as_str().into());
    }
    let ticket = st.issue_ticket(settings, app);
    let url = format!("ws://{host}/link/?ticket={ticket}&app_id={}", st.apps[app].app_id);
    Ok(json!({"ok": true, "url": url}))
}

fn auth_test(st: &State, app: usize) -> Value {
    let a = &st.apps[app];
    json!({
        "ok": true,
        "url": format!("https://{}.slack.com/", st.team.domain),
        "team": st.team.name,
        "user": a.name,
        "team_id": st.team.id,
        "user_id": a.bot_user_id,
        "bot_id": a.bot_id,
        "is_enterprise_install": false,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    History,
    Read,
}

/// The conversation named by `channel` (an id), if `app`'s bot may read it.
fn readable(st: &State, app: usize, p: &Params, access: Access) -> Result<usize, ApiError> {
    let id = p.str("channel").ok_or("channel_not_found")?;
    let ch = *st.channel_ix.get(&id).ok_or("channel_not_found")?;
    let c = &st.channels[ch];
    let scope = match (c.is_im(), access) {
        (false, Access::History) => "channels:history",
        (true, Access::History) => "im:history",
        (false, Access::Read) => "channels:read",
        (true, Access::Read) => "im:read",
    };
    need_scope(st, app, scope)?;
    match c.kind {
        ChannelKind::Im { app: other, .. } if other != app => Err("channel_not_found".into()),
        ChannelKind::Public { .. } if access == Access::History && !c.members.contains(&st.apps[app].bot_user_id) => {
            Err("not_in_channel".into())
        }
        _ => Ok(ch),
    }
}

/// `oldest`, `latest` and `inclusive` as bounds on ts.
struct Bounds {
    oldest: Ts,
    latest: Option<Ts>,
    inclusive: bool,
}

impl Bounds {
    fn from(p: &Params) -> Bounds {
        Bounds {
            oldest: p.str("oldest").and_then(|s| Ts::parse(&s)).unwrap_or(Ts(0)),
            latest: p.str("latest").and_then(|s| Ts::parse(&s)),
            inclusive: p.bool("inclusive"),
        }
    }

    fn contains(&self, ts: Ts) -> bool {
        let above = if self.inclusive { ts >= self.oldest } else { ts > self.oldest };
        let below = match self.latest {
            None => true,
            Some(l) if self.inclusive => ts <= l,
            Some(l) => ts < l,
        };
        above && below
    }
}

fn limit(p: &Params, default: usize, max: usize) -> usize {
    match p.str("limit").and_then(|s| s.parse::<usize>().ok()) {
        Some(0) | None => default,
        Some(n) => n.min(max),
    }
}

fn encode_cursor(kind: &str, value: &str) -> String {
    B64.encode(format!("{kind}:{value}"))
}

/// The value of a cursor made by [`encode_cursor`] with `kind`; `invalid_cursor` otherwise.
fn decode_cursor(p: &Params, kind: &str) -> Result<Option<String>, ApiError> {
    let Some(c) = p.str("cursor") else { return Ok(None) };
    let text = B64.decode(c.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok()).ok_or("invalid_cursor")?;
    let value = text.strip_prefix(kind).and_then(|r| r.strip_prefix(':')).ok_or("invalid_cursor")?;
    Ok(Some(value.to_owned()))
}

fn cursor_ts(p: &Params) -> Result<Option<Ts>, ApiError> {
    match decode_cursor(p, "next_ts")? {
        None => Ok(None),
        Some(v) => Ts::parse(&v).map(Some).ok_or_else(|| "invalid_cursor".into()),
    }
}

fn page(messages: Vec<Value>, has_more: bool, next: Option<String>) -> Value {
    let mut o = Map::new();
    o.insert("ok".into(), json!(true));
    o.insert("messages".into(), Value::Array(messages));
    o.insert("has_more".into(), json!(has_more));
    if let Some(n) = next {
        o.insert("response_metadata".into(), json!({"next_cursor": n}));
    }
    Value::Object(o)
}

/// Top-level messages, newest first.
fn history(st: &State, app: usize, p: &Params) -> ApiResult {
    let ch = readable(st, app, p, Access::History)?;
    let c = &st.channels[ch];
    let bounds = Bounds::from(p);
    let limit = limit(p, 100, 999);
    let before = cursor_ts(p)?;
    let with_metadata = p.bool("include_all_metadata");
    let mut out = Vec::new();
    let mut has_more = false;
    for m in c.msgs.iter().rev() {
        if m.thread_ts.is_some() || before.is_some_and(|b| m.ts >= b) || !bounds.contains(m.ts) {
            if m.ts < bounds.oldest {
                break;
            }
            continue;
        }
        if out.len() == limit {
            has_more = true;
            break;
        }
        out.push(m);
    }
    let next = has_more.then(|| out.last().map(|m| encode_cursor("next_ts", &m.ts.to_string()))).flatten();
    let messages = out.iter().map(|m| shapes::message(st, c, m, with_metadata)).collect();
    let mut v = page(messages, has_more, next);
    if let Value::Object(o) = &mut v {
        o.insert("pin_count".into(), json!(0));
        o.insert("channel_actions_ts".into(), Value::Null);
        o.insert("channel_actions_count".into(), json!(0));
    }
    Ok(v)
}

/// A thread: the parent first (on every page), then the replies in order.
fn replies(st: &State, app: usize, p: &Params) -> ApiResult {
    let ch = readable(st, app, p, Access::History)?;
    let c = &st.channels[ch];
    let ts = p.str("ts").and_then(|s| Ts::parse(&s)).ok_or("thread_not_found")?;
    let m = c.msg(ts).ok_or("thread_not_found")?;
    let root = m.thread_ts.unwrap_or(m.ts);
    let parent = c.msg(root).ok_or("thread_not_found")?;
    let bounds = Bounds::from(p);
    let limit = limit(p, 1000, 1000);
    let after = cursor_ts(p)?;
    let with_metadata = p.bool("include_all_metadata");
    let mut out = vec![parent];
    let mut has_more = false;
    for i in c.replies.get(&root).into_iter().flatten() {
        let r = &c.msgs[*i];
        if after.is_some_and(|a| r.ts <= a) || !bounds.contains(r.ts) {
            continue;
        }
        if out.len() - 1 == limit {
            has_more = true;
            break;
        }
        out.push(r);
    }
    let next = has_more.then(|| out.last().map(|m| encode_cursor("next_ts", &m.ts.to_string()))).flatten();
    let messages = out.iter().map(|m| shapes::message(st, c, m, with_metadata)).collect();
    Ok(page(messages, has_more, next))
}

fn info(st: &State, app: usize, p: &Params) -> ApiResult {
    let ch = readable(st, app, p, Access::Read)?;
    let c = &st.channels[ch];
    let member = c.members.contains(&st.apps[app].bot_user_id);
    Ok(json!({"ok": true, "channel": shapes::conversation(st, c, Some(member), p.bool("include_num_members"))}))
}

fn open(st: &mut State, app: usize, p: &Params) -> ApiResult {
    need_scope(st, app, "im:write")?;
    let users = p.str("users").ok_or("users_list_not_supplied")?;
    let ids: Vec<&str> = users.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let [id] = ids.as_slice() else {
        // Group DMs are not simulated.
        return Err("not_supported".into());
    };
    let u = st.users.iter().position(|u| u.id == *id).ok_or("user_not_found")?;
    let existed = st.dm(id, app).is_some();
    let ch = st.ensure_dm(u, app);
    Ok(json!({"ok": true, "no_op": existed, "already_open": existed, "channel": {"id": st.channels[ch].id}}))
}

fn user_conversations(st: &State, app: usize, p: &Params) -> ApiResult {
    let types = p.str("types").unwrap_or_else(|| "public_channel".to_owned());
    let mut want_public = false;
    let mut want_im = false;
    for t in types.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let scope = match t {
            "public_channel" => {
                want_public = true;
                "channels:read"
            }
            "private_channel" => "groups:read",
            "mpim" => "mpim:read",
            "im" => {
                want_im = true;
                "im:read"
            }
            _ => return Err("invalid_types".into()),
        };
        need_scope(st, app, scope)?;
    }
    let member = p.str("user").unwrap_or_else(|| st.apps[app].bot_user_id.clone());
    let limit = limit(p, 100, 1000);
    let start = match decode_cursor(p, "next_id")? {
        None => 0,
        Some(id) => *st.channel_ix.get(&id).ok_or("invalid_cursor")?,
    };
    let mut out = Vec::new();
    let mut next = String::new();
    for c in st.channels.iter().skip(start) {
        let wanted = if c.is_im() { want_im } else { want_public };
        if !wanted || !c.members.contains(&member) {
            continue;
        }
        if out.len() == limit {
            next = encode_cursor("next_id", &c.id);
            break;
        }
        out.push(shapes::conversation(st, c, None, false));
    }
    Ok(json!({"ok": true, "channels": out, "response_metadata": {"next_cursor": next}}))
}

/// A `chat.postMessage` that passed authentication: checks, post faults, then the post.
async fn post_message(srv: &Server, app: usize, p: Params) -> Response {
    let shared = &srv.handle.inner;
    let now = Instant::now();
    let prepared = {
        let mut st = shared.lock();
        match prepare_post(&mut st, app, &p) {
            Ok(prep) => Ok((prep, st.faults.post_hang.filter(|(until, _)| *until > now))),
            Err(e) => Err(finish(&mut st, Err(e))),
        }
    };
    let (prep, hang) = match prepared {
        Ok(x) => x,
        Err(reply) => {
            shared.touch();
            return reply.into_response();
        }
    };
    if let Some((until, false)) = hang {
        hold(until, &srv.stop).await;
    }
    let reply = {
        let mut st = shared.lock();
        match st.faults.post_fail.take() {
            Some((n, error, status)) => {
                if n > 1 {
                    st.faults.post_fail = Some((n - 1, error.clone(), status));
                }
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                finish_with(&mut st, Err(error.as_str().into()), status)
            }
            None => {
                let idx = st.store(prep.ch, Author::Bot(app), prep.text, prep.thread, None, prep.metadata);
                st.dispatch(&shared.settings, prep.ch, idx);
                let c = &st.channels[prep.ch];
                let m = &c.msgs[idx];
                let body = json!({
                    "ok": true,
                    "channel": c.id,
                    "ts": m.ts.to_string(),
                    "message": shapes::message(&st, c, m, true),
                });
                Reply { status: StatusCode::OK, body, retry_after: None }
            }
        }
    };
    shared.sent();
    if let Some((until, true)) = hang {
        hold(until, &srv.stop).await;
    }
    reply.into_response()
}

async fn hold(until: Instant, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep_until(until.into()) => {}
        () = stop.cancelled() => {}
    }
}

struct PreparedPost {
    ch: usize,
    text: String,
    thread: Option<Ts>,
    metadata: Option<Value>,
}

fn prepare_post(st: &mut State, app: usize, p: &Params) -> Result<PreparedPost, ApiError> {
    need_scope(st, app, "chat:write")?;
    let channel = p.str("channel").ok_or("channel_not_found")?;
    let ch = match st.find_channel(&channel) {
        Some(ch) => ch,
        // A user id: the DM between that user and the bot.
        None => {
            let u = st.users.iter().position(|u| u.id == channel).ok_or("channel_not_found")?;
            st.ensure_dm(u, app)
        }
    };
    let c = &st.channels[ch];
    match c.kind {
        ChannelKind::Im { app: other, .. } if other != app => return Err("channel_not_found".into()),
        ChannelKind::Public { .. } if !c.members.contains(&st.apps[app].bot_user_id) => {
            return Err("not_in_channel".into());
        }
        _ => {}
    }
    let text = p.str("text").unwrap_or_default();
    if text.is_empty() && !p.present("blocks") && !p.present("attachments") {
        return Err("no_text".into());
    }
    if text.chars().count() > MAX_TEXT {
        return Err("msg_too_long".into());
    }
    let thread = match p.str("thread_ts") {
        None => None,
        // Slack documents no error here; the simulator refuses a thread that does not exist
        // rather than invent an orphan reply.
        Some(t) => Some(Ts::parse(&t).and_then(|ts| st.thread_root(ch, ts)).ok_or("thread_not_found")?),
    };
    let metadata = if p.present("metadata") {
        let v = p.json("metadata").and_then(Result::ok).ok_or("invalid_metadata_format")?;
        let event_type = v.get("event_type").and_then(Value::as_str).filter(|s| !s.is_empty());
        let payload = v.get("event_payload").filter(|p| p.is_object());
        match (event_type, payload) {
            (Some(t), Some(pl)) => Some(json!({"event_type": t, "event_payload": pl})),
            _ => return Err("invalid_metadata_format".into()),
        }
    } else {
        None
    };
    Ok(PreparedPost { ch, text, thread, metadata })
}
