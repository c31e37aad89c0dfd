//! The journal's schema and its migrations, versioned with SQLite's `user_version`.
//!
//! Each migration runs in its own transaction together with the `user_version` bump, so a crash
//! mid-migration leaves the previous version intact. Never edit a shipped migration; append one.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{JournalError, Phase, Result};

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // Times are milliseconds since the epoch (`*_at`, `not_before`); `*_key` columns are Slack
    // `ts` values as integer microseconds so they compare numerically (see `ts.rs`).
    //
    // Dedupe keys live in their own tables (not a UNIQUE index on `turn`) so finished turns can
    // be compacted sooner than the keys that keep a late retry from becoming a second turn.
    // There are no foreign keys on purpose: compaction removes turns while their dedupe keys
    // still point at them.
    r"
    CREATE TABLE turn (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        app          TEXT NOT NULL,
        agent        TEXT NOT NULL,
        conversation TEXT NOT NULL,
        ts           TEXT NOT NULL,
        ts_key       INTEGER NOT NULL,
        thread_ts    TEXT,
        thread_key   TEXT NOT NULL,
        user         TEXT NOT NULL,
        text         TEXT NOT NULL,
        event_id     TEXT,
        source       TEXT NOT NULL CHECK (source IN ('socket', 'catch_up')),
        raw          TEXT,
        state        TEXT NOT NULL
                     CHECK (state IN ('received', 'thinking', 'replied', 'delivered', 'failed', 'skipped')),
        reason       TEXT,
        attempts     INTEGER NOT NULL DEFAULT 0,
        received_at  INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL
    );
    CREATE INDEX turn_by_state ON turn (state, agent, ts_key);
    CREATE INDEX turn_by_thread ON turn (agent, conversation, thread_key);

    CREATE TABLE seen_message (
        app          TEXT NOT NULL,
        conversation TEXT NOT NULL,
        ts_key       INTEGER NOT NULL,
        turn_id      INTEGER NOT NULL,
        seen_at      INTEGER NOT NULL,
        PRIMARY KEY (app, conversation, ts_key)
    ) WITHOUT ROWID;
    CREATE INDEX seen_message_by_age ON seen_message (seen_at);

    CREATE TABLE seen_event (
        app      TEXT NOT NULL,
        event_id TEXT NOT NULL,
        turn_id  INTEGER NOT NULL,
        seen_at  INTEGER NOT NULL,
        PRIMARY KEY (app, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX seen_event_by_age ON seen_event (seen_at);

    CREATE TABLE cursor (
        app          TEXT NOT NULL,
        conversation TEXT NOT NULL,
        last_ts      TEXT NOT NULL,
        last_ts_key  INTEGER NOT NULL,
        PRIMARY KEY (app, conversation)
    ) WITHOUT ROWID;

    CREATE TABLE thread (
        app           TEXT NOT NULL,
        conversation  TEXT NOT NULL,
        thread_ts     TEXT NOT NULL,
        thread_ts_key INTEGER NOT NULL,
        last_ts_key   INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (app, conversation, thread_ts_key)
    ) WITHOUT ROWID;

    CREATE TABLE history (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        agent        TEXT NOT NULL,
        conversation TEXT NOT NULL,
        thread_key   TEXT NOT NULL,
        role         TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text         TEXT NOT NULL,
        ts           TEXT,
        user         TEXT NOT NULL,
        turn_id      INTEGER NOT NULL,
        outbox_id    INTEGER,
        created_at   INTEGER NOT NULL
    );
    CREATE INDEX history_by_thread ON history (agent, conversation, thread_key, id);
    CREATE INDEX history_by_outbox ON history (outbox_id) WHERE outbox_id IS NOT NULL;

    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        turn_id         INTEGER NOT NULL,
        app             TEXT NOT NULL,
        conversation    TEXT NOT NULL,
        thread_ts       TEXT,
        thread_key      TEXT NOT NULL,
        text            TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'abandoned')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        not_before      INTEGER NOT NULL,
        last_error      TEXT,
        posted_ts       TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (app, not_before, id) WHERE state = 'pending';
    CREATE INDEX outbox_thread ON outbox (app, conversation, thread_key, id) WHERE state = 'pending';
    CREATE INDEX outbox_finished ON outbox (updated_at) WHERE state <> 'pending';
    ",
    // 2: how far catch-up has read each conversation's history. Unlike `cursor` (the newest
    // message recorded by any path), this only moves when a catch-up completed, so live
    // messages recorded after a reconnect never hide older ones missed during the gap.
    "
    CREATE TABLE sync_mark (
        app          TEXT NOT NULL,
        conversation TEXT NOT NULL,
        synced_ts    TEXT NOT NULL,
        synced_key   INTEGER NOT NULL,
        PRIMARY KEY (app, conversation)
    ) WITHOUT ROWID;
    ",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to `SCHEMA_VERSION`, refusing files from a newer build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    for (from, sql) in (0_i64..).zip(MIGRATIONS.iter()).skip(usize::try_from(found).unwrap_or(0)) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from + 1)?;
        tx.commit().map_err(|e| JournalError::from_sqlite(e, Phase::Commit))?;
        tracing::info!(from, to = from + 1, "journal schema migrated");
    }
    Ok(())
}
