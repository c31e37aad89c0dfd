//! One turn: is the message for this agent, and if so thread history + message → router →
//! reply into the outbox (atomically with the turn's state and the history).

use std::time::Duration;

use flotilla_journal::{OutboundReply, Role as JRole, TurnState};
use flotilla_proto::{ChatRequest, ContentPart, Message, Role};
use flotilla_router::RouteError;
use serde_json::json;
use tokio::time::Instant;

use crate::AgentCtx;

/// The reply's idempotency key: the user message's identity. The outbox puts it in the posted
/// message's metadata and recognises an earlier post by it.
pub(crate) fn reply_key(conversation: &str, ts: &str) -> String {
    format!("{conversation}/{ts}")
}

/// Runs one turn to its end (reply queued, skipped or failed). Errors are logged: the turn stays
/// unfinished in the journal and is resumed at the next start.
pub(crate) async fn run(ctx: &AgentCtx, turn_id: i64) {
    if let Err(e) = run_inner(ctx, turn_id).await {
        tracing::error!(event = "turn_failed", agent = %ctx.id, turn_id, error = %e, "turn could not be recorded; it will be resumed at the next start");
    }
}

async fn run_inner(ctx: &AgentCtx, turn_id: i64) -> Result<(), flotilla_journal::JournalError> {
    let Some(turn) = ctx.journal.turn(turn_id).await? else { return Ok(()) };
    if !matches!(turn.state, TurnState::Received | TurnState::Thinking) {
        return Ok(());
    }
    let msg = &turn.message;
    let thread_key = msg.thread_key().to_owned();
    let mut history = ctx.journal.thread_history(&ctx.id, &msg.conversation, &thread_key, ctx.rc.history_limit).await?;
    if let Some(sessions) = &ctx.rc.sessions
        && let Some(shared) = sessions.load(&ctx.id, &msg.conversation, &thread_key).await
        && shared.len() > history.len()
    {
        // Another node answered in this thread (before a takeover): its history is the longer one.
        history = shared;
        // Keep the newest entries, oldest first (as the journal gives them).
        let excess = history.len().saturating_sub(ctx.rc.history_limit.max(1));
        history.drain(..excess);
    }
    let mention = format!("<@{}>", ctx.bot_user_id);
    let is_dm = msg.conversation.starts_with('D');
    let in_thread = msg.thread_ts.is_some() && history.iter().any(|h| h.role == JRole::Assistant);
    let mut addressed = is_dm || msg.text.contains(&mention) || in_thread;
    if !addressed && let Some(parent) = msg.thread_ts.as_deref() {
        // A reply in a thread the journal knows nothing about for this agent: the bot may have
        // been asked into it in a message not recorded yet (missed during a gap, arriving by
        // catch-up later). Ask Slack rather than guess, so the answer does not depend on
        // which of the two arrived first.
        addressed = thread_involves_bot(ctx, &msg.conversation, parent, &msg.ts, &mention).await;
    }
    if !addressed {
        ctx.journal.skip_turn(turn_id).await?;
        return Ok(());
    }
    let _permit = ctx.permits.acquire().await;
    // A message that did not arrive live on this process (caught up after a gap, or resumed from
    // before a restart) may have been answered already by a node that owned this app earlier.
    if (msg.source == flotilla_journal::Source::CatchUp || turn.received_at < ctx.started_at)
        && answered_elsewhere(ctx, &msg.conversation, &thread_key, &msg.ts).await
    {
        tracing::info!(event = "turn_already_answered", agent = %ctx.id, turn_id, "the reply is already in the thread (posted before a restart or takeover); not answering twice");
        ctx.journal.skip_turn(turn_id).await?;
        return Ok(());
    }
    ctx.journal.begin_turn(turn_id).await?;

    let mut messages: Vec<Message> = Vec::with_capacity(history.len() + 1);
    for h in &history {
        match h.role {
            JRole::User => push_merged(&mut messages, Role::User, h.text.replace(&mention, "").trim()),
            JRole::Assistant => push_merged(&mut messages, Role::Assistant, &h.text),
        }
    }
    let text = msg.text.replace(&mention, "").trim().to_owned();
    push_merged(&mut messages, Role::User, if text.is_empty() { "(empty message)" } else { &text });
    let req = ChatRequest {
        model: ctx.id.clone(),
        system: ctx.system_prompt.clone(),
        messages,
        max_tokens: Some(4096),
        ..Default::default()
    };

    let started = Instant::now();
    let mut noticed = false;
    let mut pause = Duration::from_millis(500);
    let reply = loop {
        match ctx.router.complete(&req).await {
            Ok(r) => {
                let text: String = r
                    .response
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                tracing::debug!(event = "turn_answered", agent = %ctx.id, turn_id, model = %r.answered.model_ref());
                break if text.trim().is_empty() { "(the model returned no text)".to_owned() } else { text };
            }
            Err(e @ RouteError::AllFailed { .. }) => {
                if started.elapsed() >= ctx.rc.max_turn_time {
                    tracing::error!(event = "turn_gave_up", agent = %ctx.id, turn_id, error = %e, "no model answered in time; apologising to the user");
                    break format!(
                        "Sorry, I could not reach any model for {} minutes. Please ask again in a while.",
                        ctx.rc.max_turn_time.as_secs() / 60
                    );
                }
                if !noticed && started.elapsed() >= ctx.rc.notice_after {
                    noticed = true;
                    notify_retrying(ctx, &msg.conversation, &thread_key, &msg.ts).await;
                }
                tracing::warn!(event = "turn_retrying", agent = %ctx.id, turn_id, retry_in_ms = pause.as_millis() as u64, error = %e);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(15));
            }
            Err(e) => {
                // The request itself is wrong for every model (too long, unsupported): say so once.
                tracing::warn!(event = "turn_rejected", agent = %ctx.id, turn_id, error = %e);
                break format!("Sorry, I could not answer that: {}", e.to_api_error().message);
            }
        }
    };
    let reply_text = if ctx.rc.sessions.is_some() { reply.clone() } else { String::new() };
    let out = OutboundReply {
        app: ctx.app.clone(),
        conversation: msg.conversation.clone(),
        thread_ts: Some(thread_key.clone()),
        text: reply,
        idempotency_key: reply_key(&msg.conversation, &msg.ts),
    };
    ctx.journal.complete_turn(turn_id, out).await?;
    ctx.journal.note_thread(&ctx.app, &msg.conversation, &thread_key).await?;
    ctx.outbox_wake.notify_one();
    if let Some(sessions) = &ctx.rc.sessions {
        let mut entries = history;
        entries.push(flotilla_journal::HistoryEntry {
            role: JRole::User,
            text: msg.text.clone(),
            ts: Some(msg.ts.clone()),
            user: msg.user.clone(),
        });
        entries.push(flotilla_journal::HistoryEntry {
            role: JRole::Assistant,
            text: reply_text,
            ts: None,
            user: ctx.id.clone(),
        });
        let skip = entries.len().saturating_sub(ctx.rc.history_limit.max(1));
        sessions.save(&ctx.id, &msg.conversation, &thread_key, &entries[skip..]).await;
    }
    Ok(())
}

/// Whether the thread already holds this agent's reply to the message at `ts` (found by the
/// reply key in the message metadata). Slack being unreachable is retried: answering without
/// knowing could answer twice.
async fn answered_elsewhere(ctx: &AgentCtx, conversation: &str, thread: &str, ts: &str) -> bool {
    let key = reply_key(conversation, ts);
    let mut pause = Duration::from_millis(250);
    loop {
        match crate::outbox::find_reply(ctx, conversation, Some(thread), ts, &key).await {
            Ok(found) => return found.is_some(),
            // Slack refuses to show the thread (not in the channel, bad token): the reply could not be
            // posted there either, so there is nothing to double; go on and let the outbox report it.
            Err(e) if !e.is_retryable() => {
                tracing::warn!(event = "reply_check_refused", agent = %ctx.id, error = %e);
                return false;
            }
            Err(e) => {
                tracing::warn!(event = "reply_check_failed", agent = %ctx.id, error = %e, retry_in_ms = pause.as_millis() as u64);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Whether the bot posted in, or was mentioned in, the thread before `before_ts`. Threads found
/// not to involve the bot are remembered, so a busy foreign thread costs one lookup.
async fn thread_involves_bot(ctx: &AgentCtx, conversation: &str, parent: &str, before_ts: &str, mention: &str) -> bool {
    let key = format!("{conversation}/{parent}");
    if ctx.foreign_threads.lock().is_ok_and(|f| f.contains(&key)) {
        return false;
    }
    let before = flotilla_slack::channel::ts_key(before_ts);
    let mut cursor: Option<String> = None;
    loop {
        let page = match ctx.web.replies(conversation, parent, None, cursor.as_deref()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(event = "thread_check_failed", agent = %ctx.id, error = %e, "cannot read the thread; treating the reply as not addressed");
                return false;
            }
        };
        for m in &page.messages {
            if flotilla_slack::channel::ts_key(&m.ts) >= before {
                continue;
            }
            if m.user.as_deref() == Some(ctx.bot_user_id.as_str()) || m.text.contains(mention) {
                return true;
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if let Ok(mut f) = ctx.foreign_threads.lock() {
        if f.len() > 10_000 {
            f.clear();
        }
        f.insert(key);
    }
    false
}

/// Appends text as a message, merging with the previous one of the same role (providers want
/// alternating roles; two user messages in a row happen when an earlier turn failed).
fn push_merged(messages: &mut Vec<Message>, role: Role, text: &str) {
    if let Some(last) = messages.last_mut()
        && last.role == role
    {
        last.content.push(ContentPart::Text { text: text.to_owned() });
        return;
    }
    messages.push(Message::text(role, text));
}

/// Tells the user, once per turn, that the agent is still trying. Best effort: not journaled,
/// marked in its metadata so that it is never mistaken for the reply.
async fn notify_retrying(ctx: &AgentCtx, conversation: &str, thread: &str, ts: &str) {
    let meta = json!({"event_type": "flotilla_notice", "event_payload": {"about": ts}});
    let text = "My model provider is not answering right now; I am retrying and will reply here as soon as I can.";
    if let Err(e) = ctx.web.post_message(conversation, Some(thread), text, Some(meta)).await {
        tracing::warn!(event = "notice_failed", agent = %ctx.id, error = %e, "could not post the retrying notice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_same_role_messages_merge() {
        let mut m = Vec::new();
        push_merged(&mut m, Role::User, "a");
        push_merged(&mut m, Role::User, "b");
        push_merged(&mut m, Role::Assistant, "c");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].content.len(), 2);
        assert_eq!(reply_key("C1", "1.000100"), "C1/1.000100");
    }
}
