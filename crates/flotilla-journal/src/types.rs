//! The values that go into and come out of the journal: inbound messages, turns, history
//! entries, outbox replies, retention settings and statistics.

use std::time::{Duration, SystemTime};

/// How an inbound message reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Pushed over the Socket Mode WebSocket (an `events_api` envelope).
    Socket,
    /// Fetched from `conversations.history` / `conversations.replies` after a gap.
    CatchUp,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::CatchUp => "catch_up",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        if s == "catch_up" { Self::CatchUp } else { Self::Socket }
    }
}

/// One user message as the gateway saw it. Its identity is `(app, conversation, ts)`: Slack's
/// `ts` is unique within a conversation, whichever way the message arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The Slack app (by its configured name) that received the message.
    pub app: String,
    /// The agent the app belongs to.
    pub agent: String,
    /// Channel or DM id.
    pub conversation: String,
    /// Slack message `ts` (`"1712345678.123456"`).
    pub ts: String,
    /// Parent `ts` when the message is a thread reply.
    pub thread_ts: Option<String>,
    /// Author's user id.
    pub user: String,
    pub text: String,
    /// Events API `event_id`, absent for messages found by catch-up.
    pub event_id: Option<String>,
    pub source: Source,
    /// The raw event JSON, kept for debugging.
    pub raw: Option<String>,
}

impl InboundMessage {
    /// The thread this message belongs to: its parent's `ts`, or its own for a top-level message
    /// (a reply to it starts a thread with that `ts`).
    #[must_use]
    pub fn thread_key(&self) -> &str {
        self.thread_ts.as_deref().unwrap_or(&self.ts)
    }
}

/// What `record_inbound` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time this message was seen: a turn was created in state `Received`.
    New { turn_id: i64 },
    /// Seen before (same message identity or same `event_id`); `turn_id` is the original turn,
    /// which may since have been compacted away.
    Duplicate { turn_id: i64 },
}

impl Recorded {
    #[must_use]
    pub fn turn_id(self) -> i64 {
        match self {
            Self::New { turn_id } | Self::Duplicate { turn_id } => turn_id,
        }
    }

    #[must_use]
    pub fn is_new(self) -> bool {
        matches!(self, Self::New { .. })
    }
}

/// Where a turn is. `Received → Thinking → Replied → Delivered`; `Failed` and `Skipped` end a
/// turn early. `Received`, `Thinking` and `Replied` are unfinished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnState {
    Received,
    Thinking,
    /// The reply is in the outbox, not yet confirmed posted.
    Replied,
    Delivered,
    Failed {
        reason: String,
    },
    /// The message was not for this agent.
    Skipped,
}

impl TurnState {
    /// The state's name as stored and shown in errors.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Thinking => "thinking",
            Self::Replied => "replied",
            Self::Delivered => "delivered",
            Self::Failed { .. } => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub(crate) fn from_db(name: &str, reason: Option<String>) -> Self {
        match name {
            "received" => Self::Received,
            "thinking" => Self::Thinking,
            "replied" => Self::Replied,
            "delivered" => Self::Delivered,
            "skipped" => Self::Skipped,
            _ => Self::Failed { reason: reason.unwrap_or_default() },
        }
    }
}

/// One inbound message and where its handling stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub id: i64,
    pub message: InboundMessage,
    pub state: TurnState,
    /// How many times `begin_turn` started it (more than 1 after a crash mid-turn).
    pub attempts: u32,
    pub received_at: SystemTime,
}

/// Who said a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Assistant,
}

/// One message of a thread's conversation with an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub role: Role,
    pub text: String,
    /// Slack `ts`; for an assistant reply, known once it was delivered.
    pub ts: Option<String>,
    /// Author's user id; the agent's name for assistant entries.
    pub user: String,
}

/// A reply to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundReply {
    pub app: String,
    pub conversation: String,
    /// Thread to reply in; `None` posts at the top level.
    pub thread_ts: Option<String>,
    pub text: String,
    /// Unique per reply; carried in the posted message's metadata so that after a crash between
    /// posting and `mark_delivered` the Slack layer can find the post instead of posting again.
    pub idempotency_key: String,
}

/// A reply waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub turn_id: i64,
    pub reply: OutboundReply,
    /// Failed attempts so far (incremented by `reschedule`).
    pub attempts: u32,
    pub not_before: SystemTime,
    pub last_error: Option<String>,
}

/// A reply that was posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredReply {
    pub outbox_id: i64,
    pub turn_id: i64,
    /// The posted message's Slack `ts`.
    pub posted_ts: String,
    pub delivered_at: SystemTime,
}

/// How long finished work is kept. Unfinished turns, pending replies and their dedupe keys are
/// never deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Delivered, failed and skipped turns and delivered/abandoned outbox rows older than this go.
    pub keep_delivered_for: Duration,
    /// Newest history entries kept per thread.
    pub keep_history_per_thread: usize,
    /// Dedupe keys (message identities and event ids) younger than this are kept, so a late Slack
    /// retry or a catch-up overlap is still recognised.
    pub keep_dedupe_for: Duration,
    /// Threads (history and the "agent is in this thread" note) without activity for this long
    /// are forgotten.
    pub keep_idle_threads_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            keep_delivered_for: Duration::from_secs(DAY),
            keep_history_per_thread: 200,
            keep_dedupe_for: Duration::from_secs(7 * DAY),
            keep_idle_threads_for: Duration::from_secs(30 * DAY),
        }
    }
}

/// What a `compact` call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub turns: u64,
    pub outbox: u64,
    pub dedupe_keys: u64,
    pub history: u64,
    pub threads: u64,
}

/// Numbers for `/status`, `/metrics` and `doctor`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Inbound messages ever recorded as new (not reduced by compaction).
    pub inbound_total: u64,
    /// Turns in `Received` or `Thinking`.
    pub unfinished_turns: u64,
    /// Replies not yet delivered (all apps).
    pub outbox_depth: u64,
    /// Database file plus its WAL, in bytes.
    pub file_bytes: u64,
}
