//! Slack's JSON objects as the Web API and the Events API write them: messages, events,
//! conversations, envelopes.

use serde_json::{Map, Value, json};

use super::ids::Ts;
use super::state::{Author, Channel, ChannelKind, Msg, State};

/// A message as `conversations.history` / `conversations.replies` / `chat.postMessage` return
/// it. Thread parents carry `thread_ts`, `reply_count` and friends; replies carry `thread_ts`
/// and `parent_user_id`. `metadata` only when asked for (Slack returns it only with
/// `include_all_metadata=true`).
pub(crate) fn message(st: &State, ch: &Channel, m: &Msg, with_metadata: bool) -> Value {
    let mut o = Map::new();
    match &m.author {
        Author::User(id) => {
            if let Some(c) = &m.client_msg_id {
                o.insert("client_msg_id".into(), json!(c));
            }
            o.insert("type".into(), json!("message"));
            o.insert("text".into(), json!(m.text));
            o.insert("user".into(), json!(id));
            o.insert("ts".into(), json!(m.ts.to_string()));
            o.insert("blocks".into(), rich_text(&m.text, m.ts));
            o.insert("team".into(), json!(st.team.id));
        }
        Author::Bot(app) => {
            let a = &st.apps[*app];
            o.insert("bot_id".into(), json!(a.bot_id));
            o.insert("type".into(), json!("message"));
            o.insert("text".into(), json!(m.text));
            o.insert("user".into(), json!(a.bot_user_id));
            o.insert("ts".into(), json!(m.ts.to_string()));
            o.insert("app_id".into(), json!(a.app_id));
            o.insert("blocks".into(), json!([]));
            o.insert("team".into(), json!(st.team.id));
            o.insert(
                "bot_profile".into(),
                json!({
                    "id": a.bot_id,
                    "deleted": false,
                    "name": a.name,
                    "updated": a.created,
                    "app_id": a.app_id,
                    "team_id": st.team.id,
                }),
            );
        }
    }
    if let Some(parent) = m.thread_ts {
        o.insert("thread_ts".into(), json!(parent.to_string()));
        if let Some(p) = ch.msg(parent) {
            o.insert("parent_user_id".into(), json!(st.author_user_id(&p.author)));
        }
    } else if let Some(replies) = ch.replies.get(&m.ts).filter(|r| !r.is_empty()) {
        let mut users: Vec<String> = Vec::new();
        for i in replies {
            let u = st.author_user_id(&ch.msgs[*i].author);
            if !users.contains(&u) {
                users.push(u);
            }
        }
        let latest = replies.last().map(|i| ch.msgs[*i].ts.to_string()).unwrap_or_default();
        o.insert("thread_ts".into(), json!(m.ts.to_string()));
        o.insert("reply_count".into(), json!(replies.len()));
        o.insert("reply_users_count".into(), json!(users.len()));
        o.insert("latest_reply".into(), json!(latest));
        o.insert("reply_users".into(), json!(users));
        o.insert("is_locked".into(), json!(false));
        o.insert("subscribed".into(), json!(false));
    }
    if with_metadata && let Some(md) = &m.metadata {
        o.insert("metadata".into(), md.clone());
    }
    Value::Object(o)
}

/// The `message` event for a new message (the message plus `channel`, `event_ts`,
/// `channel_type`).
pub(crate) fn message_event(st: &State, ch: &Channel, m: &Msg) -> Value {
    let mut v = message(st, ch, m, true);
    if let Value::Object(o) = &mut v {
        // A new message has no replies yet: drop what `message` adds for thread parents.
        if m.thread_ts.is_none() {
            for k in [
                "thread_ts",
                "reply_count",
                "reply_users_count",
                "latest_reply",
                "reply_users",
                "is_locked",
                "subscribed",
            ] {
                o.remove(k);
            }
        }
        o.insert("channel".into(), json!(ch.id));
        o.insert("event_ts".into(), json!(m.ts.to_string()));
        o.insert("channel_type".into(), json!(if ch.is_im() { "im" } else { "channel" }));
    }
    v
}

/// The `app_mention` event for a user message that mentions a bot.
pub(crate) fn app_mention_event(st: &State, ch: &Channel, m: &Msg) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), json!("app_mention"));
    if let Author::User(id) = &m.author {
        o.insert("user".into(), json!(id));
    }
    o.insert("text".into(), json!(m.text));
    o.insert("ts".into(), json!(m.ts.to_string()));
    if let Some(c) = &m.client_msg_id {
        o.insert("client_msg_id".into(), json!(c));
    }
    o.insert("blocks".into(), rich_text(&m.text, m.ts));
    o.insert("team".into(), json!(st.team.id));
    if let Some(parent) = m.thread_ts {
        o.insert("thread_ts".into(), json!(parent.to_string()));
        if let Some(p) = ch.msg(parent) {
            o.insert("parent_user_id".into(), json!(st.author_user_id(&p.author)));
        }
    }
    o.insert("channel".into(), json!(ch.id));
    o.insert("event_ts".into(), json!(m.ts.to_string()));
    Value::Object(o)
}

/// The `event_callback` payload wrapping `event` for `app`.
pub(crate) fn event_callback(st: &State, app: usize, event: Value, event_id: &str, event_time: u64) -> Value {
    let a = &st.apps[app];
    json!({
        "token": a.verification_token,
        "team_id": st.team.id,
        "context_team_id": st.team.id,
        "context_enterprise_id": null,
        "api_app_id": a.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": event_time,
        "authorizations": [{
            "enterprise_id": null,
            "team_id": st.team.id,
            "user_id": a.bot_user_id,
            "is_bot": true,
            "is_enterprise_install": false,
        }],
        "is_ext_shared_channel": false,
        "event_context": format!("4-{}", event_id.to_lowercase()),
    })
}

/// A Socket Mode envelope. `retry` = `(retry_attempt, retry_reason)`, only for `events_api`.
pub(crate) fn envelope(kind: &str, envelope_id: &str, payload: &Value, retry: Option<(u32, &str)>) -> String {
    let mut o = Map::new();
    o.insert("envelope_id".into(), json!(envelope_id));
    o.insert("payload".into(), payload.clone());
    o.insert("type".into(), json!(kind));
    o.insert("accepts_response_payload".into(), json!(kind == "slash_commands"));
    if let Some((attempt, reason)) = retry {
        o.insert("retry_attempt".into(), json!(attempt));
        o.insert("retry_reason".into(), json!(reason));
    }
    Value::Object(o).to_string()
}

/// A conversation object as `users.conversations` lists it and `conversations.info` returns
/// it (`member` adds `is_member`, `last_read` and friends for `conversations.info`).
pub(crate) fn conversation(st: &State, ch: &Channel, member: Option<bool>, num_members: bool) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(ch.id));
    match &ch.kind {
        ChannelKind::Public { name } => {
            o.insert("name".into(), json!(name));
            o.insert("is_channel".into(), json!(true));
            o.insert("is_group".into(), json!(false));
            o.insert("is_im".into(), json!(false));
            o.insert("is_mpim".into(), json!(false));
            o.insert("is_private".into(), json!(false));
            o.insert("created".into(), json!(ch.created));
            o.insert("is_archived".into(), json!(false));
            o.insert("is_general".into(), json!(name == "general"));
            o.insert("unlinked".into(), json!(0));
            o.insert("name_normalized".into(), json!(name));
            o.insert("is_shared".into(), json!(false));
            o.insert("is_org_shared".into(), json!(false));
            o.insert("is_pending_ext_shared".into(), json!(false));
            o.insert("pending_shared".into(), json!([]));
            o.insert("context_team_id".into(), json!(st.team.id));
            o.insert("updated".into(), json!(ch.created * 1000));
            o.insert("parent_conversation".into(), Value::Null);
            o.insert("creator".into(), json!(ch.creator));
            o.insert("is_ext_shared".into(), json!(false));
            o.insert("shared_team_ids".into(), json!([st.team.id]));
            o.insert("pending_connected_team_ids".into(), json!([]));
            o.insert("topic".into(), json!({"value": "", "creator": "", "last_set": 0}));
            o.insert("purpose".into(), json!({"value": "", "creator": "", "last_set": 0}));
            o.insert("previous_names".into(), json!([]));
            if let Some(m) = member {
                o.insert("is_member".into(), json!(m));
                o.insert("last_read".into(), json!(last_ts(ch)));
            }
        }
        ChannelKind::Im { user, .. } => {
            o.insert("created".into(), json!(ch.created));
            o.insert("is_archived".into(), json!(false));
            o.insert("is_im".into(), json!(true));
            o.insert("is_org_shared".into(), json!(false));
            o.insert("context_team_id".into(), json!(st.team.id));
            o.insert("updated".into(), json!(ch.created * 1000));
            o.insert("user".into(), json!(user));
            o.insert("is_user_deleted".into(), json!(false));
            o.insert("priority".into(), json!(0));
            if member.is_some() {
                o.insert("is_open".into(), json!(true));
                o.insert("last_read".into(), json!(last_ts(ch)));
            }
        }
    }
    if num_members {
        o.insert("num_members".into(), json!(ch.members.len()));
    }
    Value::Object(o)
}

fn last_ts(ch: &Channel) -> String {
    ch.msgs.last().map_or_else(|| "0000000000.000000".to_owned(), |m| m.ts.to_string())
}

/// The `rich_text` block Slack's clients attach to a typed message.
fn rich_text(text: &str, ts: Ts) -> Value {
    json!([{
        "type": "rich_text",
        "block_id": format!("{:05x}", ts.0 % 0xfffff),
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }])
}
