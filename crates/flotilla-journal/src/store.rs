//! The synchronous journal over one SQLite connection. Only the writer thread (`writer.rs`) owns
//! a `Store`; every public operation is one transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::clock::{Clock, duration_millis, from_millis, to_millis};
use crate::error::{JournalError, Phase, Result};
use crate::schema;
use crate::ts::ts_key;
use crate::types::{
    CompactReport, DeliveredReply, HistoryEntry, InboundMessage, JournalStats, OutboundReply, OutboxEntry, Recorded,
    Retention, Role, Source, Turn, TurnState,
};

/// How the connection is opened (the parts of `JournalOptions` the store needs).
pub(crate) struct StoreConfig {
    pub path: PathBuf,
    pub max_bytes: Option<u64>,
    pub lock_timeout: Duration,
    pub clock: Arc<dyn Clock>,
}

pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
    clock: Arc<dyn Clock>,
}

const TURN_COLUMNS: &str = "id, app, agent, conversation, ts, thread_ts, user, text, event_id, source, raw, \
                            state, reason, attempts, received_at";

const UNFINISHED: &str = "('received', 'thinking', 'replied')";

impl Store {
    pub(crate) fn open(config: StoreConfig) -> Result<Self> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| JournalError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&config.path, flags)?;
        conn.busy_timeout(config.lock_timeout)?;
        // EXCLUSIVE locking, set before the first access, keeps the WAL index in process memory
        // and holds the file lock for the connection's life: a second gateway pointed at the same
        // file fails to open instead of interleaving writes ("only the journal writes the file").
        let mode: String = conn.pragma_update_and_check(None, "locking_mode", "EXCLUSIVE", |r| r.get(0))?;
        debug_assert_eq!(mode.to_ascii_lowercase(), "exclusive");
        // Only effective on a new, empty file; lets compaction hand pages back to the filesystem.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::NoWal { mode });
        }
        // FULL: every commit fsyncs the WAL, so "record_inbound returned" means "on disk".
        conn.pragma_update(None, "synchronous", "FULL")?;
        // macOS fsync does not flush the drive cache; F_FULLFSYNC does. Ignored elsewhere.
        conn.pragma_update(None, "fullfsync", true)?;
        conn.pragma_update(None, "checkpoint_fullfsync", true)?;
        schema::migrate(&mut conn)?;
        let mut store = Self { conn, path: config.path, clock: config.clock };
        store.set_max_bytes(config.max_bytes)?;
        Ok(store)
    }

    fn now(&self) -> i64 {
        to_millis(self.clock.now())
    }

    /// Runs `f` in one IMMEDIATE transaction and commits it (fsync). Errors from `f` roll back.
    fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| JournalError::from_sqlite(e, Phase::Commit))?;
        Ok(out)
    }

    /// Caps the database at `max_bytes` (rounded down to whole pages, never below the current
    /// size); `None` removes the cap. Returns the effective cap in bytes.
    pub(crate) fn set_max_bytes(&mut self, max_bytes: Option<u64>) -> Result<u64> {
        let page_size: i64 = self.conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = match max_bytes {
            // SQLite's own ceiling (also its default).
            None => 4_294_967_294_i64,
            Some(bytes) => i64::try_from(bytes).unwrap_or(i64::MAX) / page_size.max(1),
        };
        let effective: i64 = self.conn.pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))?;
        Ok(u64::try_from(effective.saturating_mul(page_size)).unwrap_or(0))
    }

    pub(crate) fn record_inbound(&mut self, msg: &InboundMessage) -> Result<Recorded> {
        let key = ts_key(&msg.ts)?;
        let thread_key_num = match &msg.thread_ts {
            Some(t) => ts_key(t)?,
            None => key,
        };
        let now = self.now();
        self.write(|tx| {
            if let Some(event_id) = &msg.event_id {
                let seen: Option<i64> = tx
                    .query_row(
                        "SELECT turn_id FROM seen_event WHERE app = ?1 AND event_id = ?2",
                        params![msg.app, event_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(turn_id) = seen {
                    return Ok(Recorded::Duplicate { turn_id });
                }
            }
            let seen: Option<i64> = tx
                .query_row(
                    "SELECT turn_id FROM seen_message WHERE app = ?1 AND conversation = ?2 AND ts_key = ?3",
                    params![msg.app, msg.conversation, key],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(turn_id) = seen {
                // Another event for a known message (`app_mention` + `message`): remember its id
                // too, so its own retries are recognised without looking at the message.
                if let Some(event_id) = &msg.event_id {
                    tx.execute(
                        "INSERT OR IGNORE INTO seen_event (app, event_id, turn_id, seen_at) VALUES (?1, ?2, ?3, ?4)",
                        params![msg.app, event_id, turn_id, now],
                    )?;
                }
                return Ok(Recorded::Duplicate { turn_id });
            }
            tx.execute(
                "INSERT INTO turn (app, agent, conversation, ts, ts_key, thread_ts, thread_key, user, text, event_id,
                                   source, raw, state, attempts, received_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'received', 0, ?13, ?13)",
                params![
                    msg.app,
                    msg.agent,
                    msg.conversation,
                    msg.ts,
                    key,
                    msg.thread_ts,
                    msg.thread_key(),
                    msg.user,
                    msg.text,
                    msg.event_id,
                    msg.source.as_str(),
                    msg.raw,
                    now
                ],
            )?;
            let turn_id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO seen_message (app, conversation, ts_key, turn_id, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![msg.app, msg.conversation, key, turn_id, now],
            )?;
            if let Some(event_id) = &msg.event_id {
                tx.execute(
                    "INSERT INTO seen_event (app, event_id, turn_id, seen_at) VALUES (?1, ?2, ?3, ?4)",
                    params![msg.app, event_id, turn_id, now],
                )?;
            }
            tx.execute(
                "INSERT INTO cursor (app, conversation, last_ts, last_ts_key) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, conversation) DO UPDATE
                 SET last_ts = excluded.last_ts, last_ts_key = excluded.last_ts_key
                 WHERE excluded.last_ts_key > cursor.last_ts_key",
                params![msg.app, msg.conversation, msg.ts, key],
            )?;
            // Activity in a thread the agent is in keeps it "active" for catch-up.
            tx.execute(
                "UPDATE thread SET last_ts_key = ?4, updated_at = ?5
                 WHERE app = ?1 AND conversation = ?2 AND thread_ts_key = ?3 AND last_ts_key < ?4",
                params![msg.app, msg.conversation, thread_key_num, key, now],
            )?;
            Ok(Recorded::New { turn_id })
        })
    }

    pub(crate) fn event_seen(&mut self, app: &str, event_id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT turn_id FROM seen_event WHERE app = ?1 AND event_id = ?2", params![app, event_id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub(crate) fn turn(&mut self, turn_id: i64) -> Result<Option<Turn>> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {TURN_COLUMNS} FROM turn WHERE id = ?1"), [turn_id], turn_from_row)
            .optional()?)
    }

    pub(crate) fn begin_turn(&mut self, turn_id: i64) -> Result<u32> {
        let now = self.now();
        self.write(|tx| {
            let state = turn_state(tx, turn_id)?;
            // Thinking → Thinking is the resume after a crash mid-turn: it counts as a new attempt.
            if !matches!(state, TurnState::Received | TurnState::Thinking) {
                return Err(illegal(turn_id, &state, "thinking"));
            }
            let attempts: i64 = tx.query_row(
                "UPDATE turn SET state = 'thinking', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1
                 RETURNING attempts",
                params![turn_id, now],
                |r| r.get(0),
            )?;
            Ok(u32::try_from(attempts).unwrap_or(u32::MAX))
        })
    }

    pub(crate) fn complete_turn(&mut self, turn_id: i64, reply: &OutboundReply) -> Result<i64> {
        let now = self.now();
        if let Some(t) = &reply.thread_ts {
            ts_key(t)?;
        }
        self.write(|tx| {
            let turn = tx
                .query_row(&format!("SELECT {TURN_COLUMNS} FROM turn WHERE id = ?1"), [turn_id], turn_from_row)
                .optional()?
                .ok_or(JournalError::TurnNotFound(turn_id))?;
            if turn.state != TurnState::Thinking {
                return Err(illegal(turn_id, &turn.state, "replied"));
            }
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE idempotency_key = ?1)",
                [&reply.idempotency_key],
                |r| r.get(0),
            )?;
            if taken {
                return Err(JournalError::DuplicateIdempotencyKey(reply.idempotency_key.clone()));
            }
            tx.execute("UPDATE turn SET state = 'replied', updated_at = ?2 WHERE id = ?1", params![turn_id, now])?;
            tx.execute(
                "INSERT INTO outbox (turn_id, app, conversation, thread_ts, thread_key, text, idempotency_key, state,
                                     attempts, not_before, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, ?8)",
                params![
                    turn_id,
                    reply.app,
                    reply.conversation,
                    reply.thread_ts,
                    reply.thread_ts.as_deref().unwrap_or(""),
                    reply.text,
                    reply.idempotency_key,
                    now
                ],
            )?;
            let outbox_id = tx.last_insert_rowid();
            let msg = &turn.message;
            let thread_key = msg.thread_key();
            tx.execute(
                "INSERT INTO history (agent, conversation, thread_key, role, text, ts, user, turn_id, outbox_id, created_at)
                 VALUES (?1, ?2, ?3, 'user', ?4, ?5, ?6, ?7, NULL, ?8),
                        (?1, ?2, ?3, 'assistant', ?9, NULL, ?1, ?7, ?10, ?8)",
                params![
                    msg.agent,
                    msg.conversation,
                    thread_key,
                    msg.text,
                    msg.ts,
                    msg.user,
                    turn_id,
                    now,
                    reply.text,
                    outbox_id
                ],
            )?;
            // The agent now takes part in this thread: catch-up must look at its replies.
            note_thread_tx(tx, &msg.app, &msg.conversation, thread_key, ts_key(thread_key)?, ts_key(&msg.ts)?, now)?;
            Ok(outbox_id)
        })
    }

    pub(crate) fn fail_turn(&mut self, turn_id: i64, reason: &str) -> Result<()> {
        let now = self.now();
        self.write(|tx| {
            let state = turn_state(tx, turn_id)?;
            if !matches!(state, TurnState::Received | TurnState::Thinking) {
                return Err(illegal(turn_id, &state, "failed"));
            }
            tx.execute(
                "UPDATE turn SET state = 'failed', reason = ?2, updated_at = ?3 WHERE id = ?1",
                params![turn_id, reason, now],
            )?;
            Ok(())
        })
    }

    pub(crate) fn skip_turn(&mut self, turn_id: i64) -> Result<()> {
        let now = self.now();
        self.write(|tx| {
            let state = turn_state(tx, turn_id)?;
            if !matches!(state, TurnState::Received | TurnState::Thinking) {
                return Err(illegal(turn_id, &state, "skipped"));
            }
            tx.execute("UPDATE turn SET state = 'skipped', updated_at = ?2 WHERE id = ?1", params![turn_id, now])?;
            Ok(())
        })
    }

    pub(crate) fn unfinished_turns(&mut self, agent: &str) -> Result<Vec<Turn>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TURN_COLUMNS} FROM turn WHERE state IN ('received', 'thinking') AND agent = ?1
             ORDER BY ts_key, id"
        ))?;
        let turns = stmt.query_map([agent], turn_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(turns)
    }

    pub(crate) fn thread_history(
        &mut self,
        agent: &str,
        conversation: &str,
        thread_key: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT role, text, ts, user FROM history
             WHERE agent = ?1 AND conversation = ?2 AND thread_key = ?3
             ORDER BY id DESC LIMIT ?4",
        )?;
        let mut entries = stmt
            .query_map(params![agent, conversation, thread_key, limit_param(limit)], |r| {
                let role: String = r.get(0)?;
                Ok(HistoryEntry {
                    role: if role == "assistant" { Role::Assistant } else { Role::User },
                    text: r.get(1)?,
                    ts: r.get(2)?,
                    user: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        entries.reverse();
        Ok(entries)
    }

    pub(crate) fn due_replies(&mut self, app: &str, now: SystemTime, limit: usize) -> Result<Vec<OutboxEntry>> {
        // Per-thread FIFO: an entry waits while an older reply in the same thread is pending, so
        // a rescheduled reply is never overtaken by the next one.
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id, o.turn_id, o.app, o.conversation, o.thread_ts, o.text, o.idempotency_key, o.attempts,
                    o.not_before, o.last_error
             FROM outbox o
             WHERE o.app = ?1 AND o.state = 'pending' AND o.not_before <= ?2
               AND NOT EXISTS (SELECT 1 FROM outbox p
                               WHERE p.app = o.app AND p.conversation = o.conversation
                                 AND p.thread_key = o.thread_key AND p.state = 'pending' AND p.id < o.id)
             ORDER BY o.not_before, o.id
             LIMIT ?3",
        )?;
        let entries = stmt
            .query_map(params![app, to_millis(now), limit_param(limit)], |r| {
                Ok(OutboxEntry {
                    id: r.get(0)?,
                    turn_id: r.get(1)?,
                    reply: OutboundReply {
                        app: r.get(2)?,
                        conversation: r.get(3)?,
                        thread_ts: r.get(4)?,
                        text: r.get(5)?,
                        idempotency_key: r.get(6)?,
                    },
                    attempts: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(u32::MAX),
                    not_before: from_millis(r.get(8)?),
                    last_error: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(entries)
    }

    pub(crate) fn mark_delivered(&mut self, id: i64, posted_ts: &str) -> Result<()> {
        let posted_key = ts_key(posted_ts)?;
        let now = self.now();
        self.write(|tx| {
            let (turn_id, state, app, conversation, thread_ts) = outbox_row(tx, id)?;
            match state.as_str() {
                // Idempotent: a retry after an ambiguous error must not fail.
                "delivered" => return Ok(()),
                "abandoned" => return Err(JournalError::OutboxClosed { id, state: "abandoned", action: "delivered" }),
                _ => {}
            }
            tx.execute(
                "UPDATE outbox SET state = 'delivered', posted_ts = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, posted_ts, now],
            )?;
            tx.execute(
                "UPDATE turn SET state = 'delivered', updated_at = ?2 WHERE id = ?1 AND state = 'replied'",
                params![turn_id, now],
            )?;
            tx.execute("UPDATE history SET ts = ?2 WHERE outbox_id = ?1", params![id, posted_ts])?;
            // A top-level reply can grow a thread; replies there are addressed to the agent.
            if thread_ts.is_none() {
                note_thread_tx(tx, &app, &conversation, posted_ts, posted_key, posted_key, now)?;
            }
            Ok(())
        })
    }

    pub(crate) fn reschedule(&mut self, id: i64, not_before: SystemTime, error: &str) -> Result<()> {
        let now = self.now();
        self.write(|tx| {
            let (_, state, ..) = outbox_row(tx, id)?;
            if state != "pending" {
                return Err(JournalError::OutboxClosed { id, state: outbox_state_name(&state), action: "rescheduled" });
            }
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, not_before = ?2, last_error = ?3, updated_at = ?4
                 WHERE id = ?1",
                params![id, to_millis(not_before), error, now],
            )?;
            Ok(())
        })
    }

    pub(crate) fn abandon_reply(&mut self, id: i64, reason: &str) -> Result<()> {
        let now = self.now();
        self.write(|tx| {
            let (turn_id, state, ..) = outbox_row(tx, id)?;
            if state != "pending" {
                return Err(JournalError::OutboxClosed { id, state: outbox_state_name(&state), action: "abandoned" });
            }
            tx.execute(
                "UPDATE outbox SET state = 'abandoned', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, reason, now],
            )?;
            tx.execute(
                "UPDATE turn SET state = 'failed', reason = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'replied'",
                params![turn_id, reason, now],
            )?;
            Ok(())
        })
    }

    pub(crate) fn outbox_depth(&mut self, app: &str) -> Result<u64> {
        let n: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM outbox WHERE app = ?1 AND state = 'pending'", [app], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) fn find_delivered_by_key(&mut self, key: &str) -> Result<Option<DeliveredReply>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, turn_id, posted_ts, updated_at FROM outbox
                 WHERE idempotency_key = ?1 AND state = 'delivered'",
                [key],
                |r| {
                    Ok(DeliveredReply {
                        outbox_id: r.get(0)?,
                        turn_id: r.get(1)?,
                        posted_ts: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        delivered_at: from_millis(r.get(3)?),
                    })
                },
            )
            .optional()?)
    }

    pub(crate) fn last_seen(&mut self, app: &str, conversation: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_ts FROM cursor WHERE app = ?1 AND conversation = ?2",
                params![app, conversation],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(crate) fn conversations(&mut self, app: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT conversation, last_ts FROM cursor WHERE app = ?1 ORDER BY conversation")?;
        let rows = stmt.query_map([app], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(crate) fn sync_marks(&mut self, app: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT conversation, synced_ts FROM sync_mark WHERE app = ?1 ORDER BY conversation")?;
        let rows = stmt.query_map([app], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(crate) fn set_sync_mark(&mut self, app: &str, conversation: &str, ts: &str) -> Result<()> {
        let key = ts_key(ts)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO sync_mark (app, conversation, synced_ts, synced_key) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, conversation) DO UPDATE SET synced_ts = excluded.synced_ts,
                 synced_key = excluded.synced_key WHERE excluded.synced_key > sync_mark.synced_key",
                params![app, conversation, ts, key],
            )?;
            Ok(())
        })
    }

    pub(crate) fn note_thread(&mut self, app: &str, conversation: &str, thread_ts: &str) -> Result<()> {
        let key = ts_key(thread_ts)?;
        let now = self.now();
        self.write(|tx| note_thread_tx(tx, app, conversation, thread_ts, key, key, now))
    }

    pub(crate) fn active_threads(&mut self, app: &str, conversation: &str, since_ts: &str) -> Result<Vec<String>> {
        let since = ts_key(since_ts)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT thread_ts FROM thread WHERE app = ?1 AND conversation = ?2 AND last_ts_key >= ?3
             ORDER BY thread_ts_key",
        )?;
        let rows =
            stmt.query_map(params![app, conversation, since], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(crate) fn compact(&mut self, retention: &Retention) -> Result<CompactReport> {
        let now = self.now();
        let delivered_cutoff = now.saturating_sub(duration_millis(retention.keep_delivered_for));
        let dedupe_cutoff = now.saturating_sub(duration_millis(retention.keep_dedupe_for));
        let idle_cutoff = now.saturating_sub(duration_millis(retention.keep_idle_threads_for));
        let keep_history = i64::try_from(retention.keep_history_per_thread).unwrap_or(i64::MAX);
        let report = self.write(|tx| {
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            let turns = tx.execute(
                "DELETE FROM turn WHERE state IN ('delivered', 'failed', 'skipped') AND updated_at < ?1",
                [delivered_cutoff],
            )?;
            let outbox =
                tx.execute("DELETE FROM outbox WHERE state <> 'pending' AND updated_at < ?1", [delivered_cutoff])?;
            // A dedupe key outlives its turn, but never goes while its turn is unfinished.
            let mut dedupe = 0;
            for table in ["seen_message", "seen_event"] {
                dedupe += tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE seen_at < ?1 AND NOT EXISTS
                         (SELECT 1 FROM turn t WHERE t.id = {table}.turn_id AND t.state IN {UNFINISHED})"
                    ),
                    [dedupe_cutoff],
                )?;
            }
            let idle_history = tx.execute(
                &format!(
                    "DELETE FROM history WHERE (agent, conversation, thread_key) IN (
                         SELECT agent, conversation, thread_key FROM history h
                         GROUP BY agent, conversation, thread_key HAVING MAX(created_at) < ?1)
                     AND NOT EXISTS (SELECT 1 FROM turn t WHERE t.agent = history.agent
                         AND t.conversation = history.conversation AND t.thread_key = history.thread_key
                         AND t.state IN {UNFINISHED})"
                ),
                [idle_cutoff],
            )?;
            let trimmed = tx.execute(
                "DELETE FROM history WHERE id IN (
                     SELECT id FROM (SELECT id, ROW_NUMBER() OVER (
                         PARTITION BY agent, conversation, thread_key ORDER BY id DESC) AS newest
                     FROM history) WHERE newest > ?1)",
                [keep_history],
            )?;
            let threads = tx.execute(
                &format!(
                    "DELETE FROM thread WHERE updated_at < ?1 AND NOT EXISTS (SELECT 1 FROM turn t
                         WHERE t.app = thread.app AND t.conversation = thread.conversation
                         AND t.thread_key = thread.thread_ts AND t.state IN {UNFINISHED})"
                ),
                [idle_cutoff],
            )?;
            Ok(CompactReport {
                turns: count(turns),
                outbox: count(outbox),
                dedupe_keys: count(dedupe),
                history: count(idle_history + trimmed),
                threads: count(threads),
            })
        })?;
        tracing::debug!(?report, "journal compacted");
        // Give freed pages back to the filesystem and fold the WAL into the database so the
        // files actually shrink. Both are best-effort housekeeping: the deletions are committed.
        if let Err(e) = self.incremental_vacuum() {
            tracing::warn!(error = %e, "journal incremental vacuum failed");
        }
        if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "journal checkpoint failed");
        }
        Ok(report)
    }

    /// Frees every page on the freelist. SQLite frees one page per step of the statement, so it
    /// must be stepped to the end (a single `execute` would free just one).
    fn incremental_vacuum(&self) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        Ok(())
    }

    pub(crate) fn stats(&mut self) -> Result<JournalStats> {
        // AUTOINCREMENT's high-water mark counts every turn ever created, compacted or not.
        let inbound_total: i64 = self
            .conn
            .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'turn'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let unfinished: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM turn WHERE state IN ('received', 'thinking')", [], |r| r.get(0))?;
        let depth: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM outbox WHERE state = 'pending'", [], |r| r.get(0))?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let file_bytes = [self.path.as_path(), Path::new(&wal)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(JournalStats {
            inbound_total: u64::try_from(inbound_total).unwrap_or(0),
            unfinished_turns: u64::try_from(unfinished).unwrap_or(0),
            outbox_depth: u64::try_from(depth).unwrap_or(0),
            file_bytes,
        })
    }

    /// Runs `PRAGMA integrity_check`; returns the problems found (empty when healthy).
    pub(crate) fn integrity_check(&mut self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn illegal(turn_id: i64, from: &TurnState, to: &'static str) -> JournalError {
    JournalError::IllegalTransition { turn_id, from: from.name(), to }
}

fn outbox_state_name(state: &str) -> &'static str {
    match state {
        "delivered" => "delivered",
        "abandoned" => "abandoned",
        _ => "pending",
    }
}

fn turn_state(tx: &Transaction<'_>, turn_id: i64) -> Result<TurnState> {
    tx.query_row("SELECT state, reason FROM turn WHERE id = ?1", [turn_id], |r| {
        Ok(TurnState::from_db(&r.get::<_, String>(0)?, r.get(1)?))
    })
    .optional()?
    .ok_or(JournalError::TurnNotFound(turn_id))
}

type OutboxRow = (i64, String, String, String, Option<String>);

fn outbox_row(tx: &Transaction<'_>, id: i64) -> Result<OutboxRow> {
    tx.query_row("SELECT turn_id, state, app, conversation, thread_ts FROM outbox WHERE id = ?1", [id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .optional()?
    .ok_or(JournalError::OutboxNotFound(id))
}

fn note_thread_tx(
    tx: &Transaction<'_>,
    app: &str,
    conversation: &str,
    thread_ts: &str,
    thread_key: i64,
    activity_key: i64,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO thread (app, conversation, thread_ts, thread_ts_key, last_ts_key, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (app, conversation, thread_ts_key) DO UPDATE
         SET last_ts_key = MAX(thread.last_ts_key, excluded.last_ts_key), updated_at = excluded.updated_at",
        params![app, conversation, thread_ts, thread_key, activity_key, now],
    )?;
    Ok(())
}

fn turn_from_row(r: &Row<'_>) -> rusqlite::Result<Turn> {
    let state: String = r.get(11)?;
    Ok(Turn {
        id: r.get(0)?,
        message: InboundMessage {
            app: r.get(1)?,
            agent: r.get(2)?,
            conversation: r.get(3)?,
            ts: r.get(4)?,
            thread_ts: r.get(5)?,
            user: r.get(6)?,
            text: r.get(7)?,
            event_id: r.get(8)?,
            source: Source::parse(&r.get::<_, String>(9)?),
            raw: r.get(10)?,
        },
        state: TurnState::from_db(&state, r.get(12)?),
        attempts: u32::try_from(r.get::<_, i64>(13)?).unwrap_or(u32::MAX),
        received_at: from_millis(r.get(14)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn open(dir: &Path) -> Store {
        Store::open(StoreConfig {
            path: dir.join("j.db"),
            max_bytes: None,
            lock_timeout: Duration::ZERO,
            clock: Arc::new(ManualClock::new(from_millis(1_712_000_000_000))),
        })
        .unwrap()
    }

    #[test]
    fn durability_settings_are_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let pragma = |name: &str| store.conn.pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0));
        assert_eq!(pragma("journal_mode").unwrap(), rusqlite::types::Value::Text("wal".into()));
        // 2 = FULL: the WAL is fsynced on every commit.
        assert_eq!(pragma("synchronous").unwrap(), rusqlite::types::Value::Integer(2));
        // 2 = INCREMENTAL, so compaction can shrink the file.
        assert_eq!(pragma("auto_vacuum").unwrap(), rusqlite::types::Value::Integer(2));
        assert_eq!(pragma("locking_mode").unwrap(), rusqlite::types::Value::Text("exclusive".into()));
        assert_eq!(pragma("user_version").unwrap(), rusqlite::types::Value::Integer(schema::SCHEMA_VERSION));
    }

    #[test]
    fn an_error_inside_a_write_rolls_back_everything_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let err = store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO cursor (app, conversation, last_ts, last_ts_key) VALUES ('a', 'c', '1.0', 1)",
                    [],
                )?;
                Err::<(), _>(JournalError::TurnNotFound(7))
            })
            .unwrap_err();
        assert!(matches!(err, JournalError::TurnNotFound(7)));
        assert_eq!(store.last_seen("a", "c").unwrap(), None);
        // The connection is usable afterwards (no transaction left open).
        store.write(|tx| Ok(tx.execute("INSERT INTO cursor VALUES ('a', 'c', '2.0', 2)", [])?)).unwrap();
        assert_eq!(store.last_seen("a", "c").unwrap().as_deref(), Some("2.0"));
    }
}
