//! The durable journal of a gateway node (DESIGN.md, "Slack delivery semantics"): inbound
//! messages are recorded and deduplicated before they are acked, each becomes a turn with a
//! crash-safe state machine, replies go through an outbox, thread history and catch-up cursors
//! survive restarts, and retention keeps the file bounded.
//!
//! Storage is one SQLite file in WAL mode with `synchronous = FULL` (every commit is fsynced),
//! written by a single connection on a dedicated thread (`writer.rs` says why). Every operation
//! is one transaction. Invariant: only this crate writes the file; the connection holds an
//! exclusive lock on it, so a second process opening the same file gets `JournalError::Busy`.
//!
//! Dropping an operation's future does not cancel it once handed to the writer: treat a dropped
//! write like a `may_have_written` error and re-read.

mod clock;
mod error;
mod schema;
mod store;
mod ts;
mod types;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{JournalError, Result};
pub use types::{
    CompactReport, DeliveredReply, HistoryEntry, InboundMessage, JournalStats, OutboundReply, OutboxEntry, Recorded,
    Retention, Role, Source, Turn, TurnState,
};

use store::StoreConfig;
use writer::Writer;

/// How to open a journal.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The SQLite file; its directory is created if missing. `-wal` sits beside it.
    pub path: PathBuf,
    /// Default retention, read back with `Journal::retention` by whoever schedules `compact`.
    pub retention: Retention,
    /// Hard cap on the database size; writes beyond it fail with `JournalError::Full` instead of
    /// filling the disk. `None`: limited only by the disk.
    pub max_bytes: Option<u64>,
    /// How long to wait for another process's lock on the file before failing with `Busy`.
    pub lock_timeout: Duration,
    /// Time source for stored timestamps and retention cut-offs.
    pub clock: Arc<dyn Clock>,
}

impl JournalOptions {
    /// Defaults: default retention, no size cap, 2 s lock timeout, the system clock.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            retention: Retention::default(),
            max_bytes: None,
            lock_timeout: Duration::from_secs(2),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Handle to an open journal. Clones share the same writer; all methods are async and run on
/// the writer thread in call order.
#[derive(Clone)]
pub struct Journal {
    writer: Writer,
    path: Arc<Path>,
    retention: Arc<Retention>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating if needed) and migrates the journal.
    pub async fn open(options: JournalOptions) -> Result<Self> {
        let path: Arc<Path> = Arc::from(options.path.as_path());
        let writer = Writer::start(StoreConfig {
            path: options.path,
            max_bytes: options.max_bytes,
            lock_timeout: options.lock_timeout,
            clock: options.clock,
        })
        .await?;
        tracing::debug!(path = %path.display(), "journal open");
        Ok(Self { writer, path, retention: Arc::new(options.retention) })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The retention given in `JournalOptions`.
    #[must_use]
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Runs queued operations, closes the file (releasing its lock) and stops the writer. Later
    /// calls on any clone return `JournalError::Closed`; closing again is a no-op.
    pub async fn close(&self) -> Result<()> {
        self.writer.close().await
    }

    // Inbound and dedupe.

    /// Records an inbound message durably (committed and fsynced before this returns), or
    /// recognises it as a duplicate by `event_id` or by `(app, conversation, ts)`. Ack the Slack
    /// envelope only after this returns `Ok`.
    pub async fn record_inbound(&self, msg: InboundMessage) -> Result<Recorded> {
        self.writer.call(move |s| s.record_inbound(&msg)).await
    }

    /// The turn an `event_id` was recorded for, if it was seen.
    pub async fn event_seen(&self, app: &str, event_id: &str) -> Result<Option<i64>> {
        let (app, event_id) = (app.to_owned(), event_id.to_owned());
        self.writer.call(move |s| s.event_seen(&app, &event_id)).await
    }

    // Turns.

    /// One turn, if it exists (compaction removes finished ones).
    pub async fn turn(&self, turn_id: i64) -> Result<Option<Turn>> {
        self.writer.call(move |s| s.turn(turn_id)).await
    }

    /// `Received → Thinking`, or `Thinking → Thinking` when resuming after a crash. Returns the
    /// attempt number (1 for the first run).
    pub async fn begin_turn(&self, turn_id: i64) -> Result<u32> {
        self.writer.call(move |s| s.begin_turn(turn_id)).await
    }

    /// `Thinking → Replied` in one transaction with queueing `reply` in the outbox and appending
    /// the user message and the reply to the thread's history. Returns the outbox entry id.
    pub async fn complete_turn(&self, turn_id: i64, reply: OutboundReply) -> Result<i64> {
        self.writer.call(move |s| s.complete_turn(turn_id, &reply)).await
    }

    /// `Received | Thinking → Failed`.
    pub async fn fail_turn(&self, turn_id: i64, reason: &str) -> Result<()> {
        let reason = reason.to_owned();
        self.writer.call(move |s| s.fail_turn(turn_id, &reason)).await
    }

    /// `Received | Thinking → Skipped` (the message is not for this agent).
    pub async fn skip_turn(&self, turn_id: i64) -> Result<()> {
        self.writer.call(move |s| s.skip_turn(turn_id)).await
    }

    /// The agent's turns in `Received` or `Thinking`, oldest message first (so in order within
    /// each thread): the work to resume at start-up.
    pub async fn unfinished_turns(&self, agent: &str) -> Result<Vec<Turn>> {
        let agent = agent.to_owned();
        self.writer.call(move |s| s.unfinished_turns(&agent)).await
    }

    // Sessions.

    /// The newest `limit` entries of a thread's history, oldest first. `thread_key` is the
    /// thread's `ts` (see `InboundMessage::thread_key`).
    pub async fn thread_history(
        &self,
        agent: &str,
        conversation: &str,
        thread_key: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>> {
        let (agent, conversation, thread_key) = (agent.to_owned(), conversation.to_owned(), thread_key.to_owned());
        self.writer.call(move |s| s.thread_history(&agent, &conversation, &thread_key, limit)).await
    }

    // Outbox.

    /// Pending replies of `app` whose `not_before` has passed, earliest first, at most `limit`.
    /// Within a thread, replies come out strictly in order: one waits while an older one is
    /// pending.
    pub async fn due_replies(&self, app: &str, now: SystemTime, limit: usize) -> Result<Vec<OutboxEntry>> {
        let app = app.to_owned();
        self.writer.call(move |s| s.due_replies(&app, now, limit)).await
    }

    /// The reply was posted as `posted_ts`: the entry leaves the outbox, the turn becomes
    /// `Delivered`, the history entry gets its `ts`. Calling it again is a no-op.
    pub async fn mark_delivered(&self, id: i64, posted_ts: &str) -> Result<()> {
        let posted_ts = posted_ts.to_owned();
        self.writer.call(move |s| s.mark_delivered(id, &posted_ts)).await
    }

    /// A delivery attempt failed: count it, remember why, retry not before `not_before`.
    pub async fn reschedule(&self, id: i64, not_before: SystemTime, error: &str) -> Result<()> {
        let error = error.to_owned();
        self.writer.call(move |s| s.reschedule(id, not_before, &error)).await
    }

    /// Gives up on a reply that can never be posted (e.g. `channel_not_found`): the entry leaves
    /// the outbox and the turn becomes `Failed { reason }`.
    pub async fn abandon_reply(&self, id: i64, reason: &str) -> Result<()> {
        let reason = reason.to_owned();
        self.writer.call(move |s| s.abandon_reply(id, &reason)).await
    }

    /// Number of pending replies of `app`.
    pub async fn outbox_depth(&self, app: &str) -> Result<u64> {
        let app = app.to_owned();
        self.writer.call(move |s| s.outbox_depth(&app)).await
    }

    /// The delivered reply with this idempotency key, if any.
    pub async fn find_delivered_by_key(&self, idempotency_key: &str) -> Result<Option<DeliveredReply>> {
        let key = idempotency_key.to_owned();
        self.writer.call(move |s| s.find_delivered_by_key(&key)).await
    }

    // Catch-up.

    /// The highest message `ts` recorded in a conversation (top-level or thread reply).
    pub async fn last_seen(&self, app: &str, conversation: &str) -> Result<Option<String>> {
        let (app, conversation) = (app.to_owned(), conversation.to_owned());
        self.writer.call(move |s| s.last_seen(&app, &conversation)).await
    }

    /// Every conversation of `app` with its `last_seen` ts, by conversation id.
    pub async fn conversations(&self, app: &str) -> Result<Vec<(String, String)>> {
        let app = app.to_owned();
        self.writer.call(move |s| s.conversations(&app)).await
    }

    /// How far catch-up has read each conversation of `app` (`ts` of the newest message it saw).
    /// Only [`Journal::set_sync_mark`] moves it: live messages do not, so a message missed
    /// during a gap is never hidden behind newer ones recorded after it.
    pub async fn sync_marks(&self, app: &str) -> Result<Vec<(String, String)>> {
        let app = app.to_owned();
        self.writer.call(move |s| s.sync_marks(&app)).await
    }

    /// Records that catch-up has read `conversation` up to `ts` (never moves backwards).
    pub async fn set_sync_mark(&self, app: &str, conversation: &str, ts: &str) -> Result<()> {
        let (app, conversation, ts) = (app.to_owned(), conversation.to_owned(), ts.to_owned());
        self.writer.call(move |s| s.set_sync_mark(&app, &conversation, &ts)).await
    }

    /// Remembers that the agent of `app` takes part in a thread. `complete_turn` and
    /// `mark_delivered` note threads themselves; this is for other reasons to follow one.
    pub async fn note_thread(&self, app: &str, conversation: &str, thread_ts: &str) -> Result<()> {
        let (app, conversation, thread_ts) = (app.to_owned(), conversation.to_owned(), thread_ts.to_owned());
        self.writer.call(move |s| s.note_thread(&app, &conversation, &thread_ts)).await
    }

    /// Noted threads of a conversation whose last known activity is at or after `since_ts`,
    /// oldest thread first: the ones catch-up should read with `conversations.replies`.
    pub async fn active_threads(&self, app: &str, conversation: &str, since_ts: &str) -> Result<Vec<String>> {
        let (app, conversation, since_ts) = (app.to_owned(), conversation.to_owned(), since_ts.to_owned());
        self.writer.call(move |s| s.active_threads(&app, &conversation, &since_ts)).await
    }

    // Housekeeping.

    /// Deletes finished work older than the retention allows, trims history, then returns freed
    /// space to the filesystem. Never deletes unfinished turns, pending replies, or a dedupe key
    /// younger than `keep_dedupe_for` or belonging to an unfinished turn.
    pub async fn compact(&self, retention: Retention) -> Result<CompactReport> {
        self.writer.call(move |s| s.compact(&retention)).await
    }

    /// Counts and file size.
    pub async fn stats(&self) -> Result<JournalStats> {
        self.writer.call(|s| s.stats()).await
    }

    /// Changes the size cap (see `JournalOptions::max_bytes`); returns the effective cap in bytes,
    /// which is never below the current size.
    pub async fn set_max_bytes(&self, max_bytes: Option<u64>) -> Result<u64> {
        self.writer.call(move |s| s.set_max_bytes(max_bytes)).await
    }

    /// Runs SQLite's integrity check; returns the problems found, empty when healthy.
    pub async fn integrity_check(&self) -> Result<Vec<String>> {
        self.writer.call(|s| s.integrity_check()).await
    }
}
