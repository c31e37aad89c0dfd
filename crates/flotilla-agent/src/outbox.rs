//! Posts queued replies to Slack exactly once: a reply is marked "in flight" (durably) before
//! it is posted, and one found in flight after a crash is looked for in the thread by its
//! idempotency key before it is posted again. Rate limits reschedule by `retry-after`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_journal::OutboxEntry;
use flotilla_slack::SlackError;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::AgentCtx;

/// How long a reply stays "in flight" before a new attempt checks the thread and retries.
const IN_FLIGHT_LEASE: Duration = Duration::from_secs(20);

pub(crate) async fn run(ctx: Arc<AgentCtx>, cancel: CancellationToken) {
    loop {
        let due = match ctx.journal.due_replies(&ctx.app, SystemTime::now(), 32).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(event = "outbox_read_failed", app = %ctx.app, error = %e);
                Vec::new()
            }
        };
        let busy = !due.is_empty();
        for entry in due {
            if cancel.is_cancelled() {
                return;
            }
            deliver(&ctx, entry).await;
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ctx.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn deliver(ctx: &AgentCtx, entry: OutboxEntry) {
    let reply = &entry.reply;
    let in_reply_to = reply.idempotency_key.rsplit_once('/').map(|(_, ts)| ts.to_owned()).unwrap_or_default();
    // An earlier attempt may have posted before the process died: look before posting again.
    // A reply queued before this agent started (by this process before a restart, or by a node
    // that owned the app before a takeover and came back) is looked for too.
    if entry.attempts > 0 || queued_before_start(ctx, &entry).await {
        match find_reply(ctx, &reply.conversation, reply.thread_ts.as_deref(), &in_reply_to, &reply.idempotency_key)
            .await
        {
            Ok(Some(ts)) => {
                tracing::info!(event = "outbox_found_posted", app = %ctx.app, id = entry.id, "reply was already posted before a restart; not posting twice");
                mark(ctx, &entry, &ts).await;
                return;
            }
            Ok(None) => {}
            Err(e) => {
                reschedule(ctx, &entry, &e).await;
                return;
            }
        }
    }
    if let Err(e) = ctx.journal.reschedule(entry.id, SystemTime::now() + IN_FLIGHT_LEASE, "in flight").await {
        tracing::error!(event = "outbox_mark_failed", app = %ctx.app, id = entry.id, error = %e);
        return;
    }
    let meta = json!({"event_type": "flotilla_reply", "event_payload": {"in_reply_to": in_reply_to, "key": reply.idempotency_key}});
    match ctx.web.post_message(&reply.conversation, reply.thread_ts.as_deref(), &reply.text, Some(meta)).await {
        Ok(ts) => mark(ctx, &entry, &ts).await,
        Err(e) => reschedule(ctx, &entry, &e).await,
    }
}

async fn mark(ctx: &AgentCtx, entry: &OutboxEntry, ts: &str) {
    if let Err(e) = ctx.journal.mark_delivered(entry.id, ts).await {
        tracing::error!(event = "outbox_mark_failed", app = %ctx.app, id = entry.id, error = %e);
    }
}

async fn reschedule(ctx: &AgentCtx, entry: &OutboxEntry, e: &SlackError) {
    let wait = match e {
        SlackError::RateLimited { retry_after, .. } => *retry_after,
        _ if e.is_retryable() => Duration::from_millis(250 * 2u64.pow(entry.attempts.min(7))),
        _ => {
            tracing::error!(event = "outbox_abandoned", app = %ctx.app, id = entry.id, error = %e, "slack refused the reply; a human must look");
            let _ = ctx.journal.abandon_reply(entry.id, &e.to_string()).await;
            return;
        }
    };
    tracing::warn!(event = "outbox_retry", app = %ctx.app, id = entry.id, retry_in_ms = wait.as_millis() as u64, error = %e);
    if let Err(je) = ctx.journal.reschedule(entry.id, SystemTime::now() + wait, &e.to_string()).await {
        tracing::error!(event = "outbox_mark_failed", app = %ctx.app, id = entry.id, error = %je);
    }
}

async fn queued_before_start(ctx: &AgentCtx, entry: &OutboxEntry) -> bool {
    match ctx.journal.turn(entry.turn_id).await {
        Ok(Some(turn)) => turn.received_at < ctx.started_at,
        // Unknown turn (compacted): be careful.
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(event = "outbox_turn_read_failed", app = %ctx.app, id = entry.id, error = %e);
            true
        }
    }
}

/// Looks in a thread, from `oldest` on, for a message carrying the reply key `key`; its `ts` if found.
pub(crate) async fn find_reply(
    ctx: &AgentCtx,
    conversation: &str,
    thread: Option<&str>,
    oldest: &str,
    key: &str,
) -> Result<Option<String>, SlackError> {
    let Some(thread) = thread else { return Ok(None) };
    let mut cursor: Option<String> = None;
    loop {
        let page = ctx.web.replies(conversation, thread, Some(oldest), cursor.as_deref()).await?;
        for m in &page.messages {
            let found = m.metadata.as_ref().and_then(|md| md.pointer("/event_payload/key")).and_then(Value::as_str);
            if found == Some(key) {
                return Ok(Some(m.ts.clone()));
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(None);
        }
    }
}
