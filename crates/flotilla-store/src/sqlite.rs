//! The embedded backend: etcd's model (one store-wide revision, create and mod revisions, leases, a watch
//! history) on one SQLite file that several processes may open at the same time.
//!
//! Everything that matters for correctness lives in the file, never in process memory: the revision counter,
//! the leases with their wall-clock deadlines, and an append-only event log that watches poll. Every write is
//! one `BEGIN IMMEDIATE` transaction, so writers of all processes are serialized by SQLite's own lock. Lease
//! expiry needs no process of its own: every operation (reads and watch polls included) first deletes the
//! keys of leases whose deadline has passed, so a dead process's keys vanish within its TTL plus one poll.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::{CasOutcome, Expect, KeyValue, LeaseId, Listing, Store, StoreError, WatchEvent, WatchStream};

/// How many revisions of history the event log keeps for watches; older starts get `Compacted`.
const HISTORY_REVISIONS: i64 = 10_000;
/// How often a watch looks for writes of other processes (writes of this process wake it at once).
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long an operation waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many revisions one watch poll reads at most, so replaying a long history does not load it all at once.
const WATCH_BATCH_REVISIONS: i64 = 256;
/// Events buffered between a watch's poller and its consumer.
const WATCH_BUFFER: usize = 256;
/// Bumped when the schema changes incompatibly; a file from a newer flotilla is refused.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    -- The store-wide revision; etcd starts an empty store at 1, so the first write gets 2.
    revision INTEGER NOT NULL,
    -- Events before this revision have been dropped from the log (etcd's compact revision).
    compact_revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision, compact_revision) VALUES (0, 1, 0);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    lease INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    ttl_ms INTEGER NOT NULL,
    -- Wall clock (ms since the Unix epoch), because every process on the machine must agree on it.
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at_ms);
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL,
    key TEXT NOT NULL,
    -- 0 = put, 1 = delete.
    kind INTEGER NOT NULL,
    value BLOB,
    create_revision INTEGER,
    lease INTEGER,
    PRIMARY KEY (revision, key)
) WITHOUT ROWID;
";

const KIND_PUT: i64 = 0;
const KIND_DELETE: i64 = 1;

/// The embedded store: etcd semantics on one SQLite file (WAL, `synchronous = FULL`), safe to open from several
/// processes at once.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Used for write transactions (and the lease sweeps that reads trigger).
    writer: Mutex<Connection>,
    /// Used for reads and watch polls, so they never queue behind a write's fsync.
    reader: Mutex<Connection>,
    /// Wakes this process's watches right after this process commits a write; other processes' writes are
    /// found by polling.
    changed: Notify,
}

impl SqliteStore {
    /// Opens (creating if needed) the store file. Blocking: call it off the async runtime's worker threads
    /// (`crate::open` does).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let writer = open_connection(path)?;
        init_schema(&writer)?;
        let reader = open_connection(path)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                changed: Notify::new(),
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Drops the watch history before `revision`, as etcd's compaction does: a watch from an earlier revision
    /// then fails with `Compacted`. History is also trimmed automatically to the last 10,000 revisions.
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|w| {
                let (current, compacted) = meta(w.tx)?;
                if revision > current {
                    return Err(StoreError::Backend(format!(
                        "cannot compact to revision {revision}: the store is at revision {current}"
                    )));
                }
                if revision <= compacted {
                    return Err(StoreError::Compacted(revision));
                }
                set_compact_revision(w.tx, revision)
            })
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = checked_key(key)?;
        self.blocking(move |inner| inner.read(|conn| get_kv(conn, &key))).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64, StoreError> {
        let key = checked_key(key)?;
        self.blocking(move |inner| {
            inner.write(|w| {
                if let Some(lease) = lease {
                    ensure_lease(w.tx, lease)?;
                }
                let revision = w.bump_revision()?;
                put_kv(w.tx, &key, &value, lease, revision)?;
                Ok(revision)
            })
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        let key = checked_key(key)?;
        self.blocking(move |inner| {
            inner.write(|w| {
                let current = get_kv(w.tx, &key)?;
                let holds = match expect {
                    Expect::Absent => current.is_none(),
                    Expect::ModRevision(revision) => current.as_ref().is_some_and(|kv| kv.mod_revision == revision),
                };
                if !holds {
                    return Ok(CasOutcome::Conflict { current });
                }
                if let Some(lease) = lease {
                    ensure_lease(w.tx, lease)?;
                }
                let revision = w.bump_revision()?;
                put_kv(w.tx, &key, &value, lease, revision)?;
                Ok(CasOutcome::Written { revision })
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = checked_key(key)?;
        self.blocking(move |inner| {
            inner.write(|w| {
                if get_kv(w.tx, &key)?.is_none() {
                    return Ok(false);
                }
                let revision = w.bump_revision()?;
                delete_kv(w.tx, &key, revision)?;
                Ok(true)
            })
        })
        .await
    }

    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, StoreError> {
        let key = checked_key(key)?;
        self.blocking(move |inner| {
            inner.write(|w| {
                let matches = get_kv(w.tx, &key)?.is_some_and(|kv| kv.mod_revision == mod_revision);
                if !matches {
                    return Ok(false);
                }
                let revision = w.bump_revision()?;
                delete_kv(w.tx, &key, revision)?;
                Ok(true)
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| {
            inner.read(|conn| {
                let (revision, _) = meta(conn)?;
                // Keys compare bytewise (SQLite's BINARY collation on UTF-8), so the keys with a prefix are
                // the contiguous run that starts at the prefix itself.
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT key, value, create_revision, mod_revision, lease FROM kv WHERE key >= ?1 ORDER BY key",
                    )
                    .map_err(db_err)?;
                let mut rows = stmt.query(params![prefix]).map_err(db_err)?;
                let mut kvs = Vec::new();
                while let Some(row) = rows.next().map_err(db_err)? {
                    let kv = kv_from_row(row).map_err(db_err)?;
                    if !kv.key.starts_with(&prefix) {
                        break;
                    }
                    kvs.push(kv);
                }
                Ok(Listing { kvs, revision })
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream, StoreError> {
        let start = self
            .blocking(move |inner| {
                inner.read(|conn| {
                    let (current, compacted) = meta(conn)?;
                    // Like etcd: a start revision of 0 (or less) means "from the next write on".
                    if from_revision <= 0 {
                        Ok(current + 1)
                    } else if from_revision < compacted {
                        Err(StoreError::Compacted(from_revision))
                    } else {
                        Ok(from_revision)
                    }
                })
            })
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let task = tokio::spawn(watch_loop(Arc::clone(&self.inner), prefix.to_owned(), start, tx));
        Ok(Box::pin(SqliteWatch { rx, task }))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if ttl_ms <= 0 {
            return Err(StoreError::Backend("lease ttl must be at least one millisecond".to_owned()));
        }
        self.blocking(move |inner| {
            inner.write(|w| {
                // Random ids across the whole positive range: processes cannot coordinate a counter cheaply,
                // and a collision with a live lease is simply drawn again.
                loop {
                    let id = fastrand::i64(1..=i64::MAX);
                    let inserted = w
                        .tx
                        .prepare_cached("INSERT OR IGNORE INTO leases (id, ttl_ms, expires_at_ms) VALUES (?1, ?2, ?3)")
                        .and_then(|mut stmt| stmt.execute(params![id, ttl_ms, w.now_ms.saturating_add(ttl_ms)]))
                        .map_err(db_err)?;
                    if inserted == 1 {
                        return Ok(LeaseId(id));
                    }
                }
            })
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.blocking(move |inner| {
            inner.write(|w| {
                // The sweep at the start of the transaction already removed the lease if its deadline passed.
                let ttl_ms: Option<i64> =
                    w.tx.prepare_cached("UPDATE leases SET expires_at_ms = ?2 + ttl_ms WHERE id = ?1 RETURNING ttl_ms")
                        .and_then(|mut stmt| stmt.query_row(params![lease.0, w.now_ms], |row| row.get(0)).optional())
                        .map_err(db_err)?;
                match ttl_ms {
                    Some(ms) => Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
                    None => Err(StoreError::LeaseNotFound(lease.0)),
                }
            })
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|w| if w.revoke(lease.0)? { Ok(()) } else { Err(StoreError::LeaseNotFound(lease.0)) })
        })
        .await
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }
}

/// One write transaction in progress.
struct WriteTx<'a> {
    tx: &'a Connection,
    now_ms: i64,
    /// True once the transaction created a revision, i.e. watches have something new to see.
    changed: bool,
}

impl WriteTx<'_> {
    /// Starts the next store revision; all changes of one logical write share it.
    fn bump_revision(&mut self) -> Result<i64, StoreError> {
        let revision: i64 = self
            .tx
            .query_row("UPDATE meta SET revision = revision + 1 WHERE id = 0 RETURNING revision", [], |row| row.get(0))
            .map_err(db_err)?;
        self.changed = true;
        // Keep the watch history bounded; the index on revision makes this cheap when there is nothing to drop.
        let (_, compacted) = meta(self.tx)?;
        let keep_from = revision - HISTORY_REVISIONS + 1;
        if keep_from > compacted {
            set_compact_revision(self.tx, keep_from)?;
        }
        Ok(revision)
    }

    /// Deletes a lease and its keys (all at one new revision, as etcd does); false if the lease did not exist.
    fn revoke(&mut self, lease: i64) -> Result<bool, StoreError> {
        let existed = self
            .tx
            .prepare_cached("DELETE FROM leases WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![lease]))
            .map_err(db_err)?
            == 1;
        let keys: Vec<String> = self
            .tx
            .prepare_cached("SELECT key FROM kv WHERE lease = ?1 ORDER BY key")
            .and_then(|mut stmt| stmt.query_map(params![lease], |row| row.get(0))?.collect())
            .map_err(db_err)?;
        if !keys.is_empty() {
            let revision = self.bump_revision()?;
            for key in &keys {
                delete_kv(self.tx, key, revision)?;
            }
        }
        Ok(existed)
    }

    /// Expires every lease whose deadline has passed, deleting its keys.
    fn sweep_expired(&mut self) -> Result<(), StoreError> {
        let expired: Vec<i64> = self
            .tx
            .prepare_cached("SELECT id FROM leases WHERE expires_at_ms <= ?1 ORDER BY expires_at_ms, id")
            .and_then(|mut stmt| stmt.query_map(params![self.now_ms], |row| row.get(0))?.collect())
            .map_err(db_err)?;
        for lease in expired {
            tracing::debug!(lease, "sqlite store: lease expired");
            self.revoke(lease)?;
        }
        Ok(())
    }
}

impl Inner {
    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, after expiring overdue leases.
    fn write<T>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        // The clock is read once the write lock is held, so lease deadlines are ordered like the writes.
        let mut w = WriteTx { tx: &tx, now_ms: now_ms(), changed: false };
        w.sweep_expired()?;
        let out = f(&mut w)?;
        let changed = w.changed;
        tx.commit().map_err(db_err)?;
        drop(conn);
        if changed {
            self.changed.notify_waiters();
        }
        Ok(out)
    }

    /// Runs `f` on one consistent snapshot, after expiring overdue leases (which takes the write lock only
    /// when some lease is actually overdue).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = lock(&self.reader);
        let overdue: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM leases WHERE expires_at_ms <= ?1)")
            .and_then(|mut stmt| stmt.query_row(params![now_ms()], |row| row.get(0)))
            .map_err(db_err)?;
        if overdue {
            self.write(|_| Ok(()))?;
        }
        let tx = conn.transaction().map_err(db_err)?;
        let out = f(&tx)?;
        tx.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Reads the events of up to `WATCH_BATCH_REVISIONS` revisions from `next` on, for keys under `prefix`.
    fn read_events(&self, prefix: &str, next: i64) -> Result<EventBatch, StoreError> {
        self.read(|conn| {
            let (current, compacted) = meta(conn)?;
            if next < compacted {
                return Err(StoreError::Compacted(next));
            }
            if next > current {
                return Ok(EventBatch { events: Vec::new(), next, more: false });
            }
            let last = current.min(next + WATCH_BATCH_REVISIONS - 1);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT revision, key, kind, value, create_revision, lease FROM events
                     WHERE revision BETWEEN ?1 AND ?2 AND substr(key, 1, length(?3)) = ?3
                     ORDER BY revision, key",
                )
                .map_err(db_err)?;
            let events = stmt
                .query_map(params![next, last, prefix], |row| {
                    let revision: i64 = row.get(0)?;
                    let key: String = row.get(1)?;
                    let kind: i64 = row.get(2)?;
                    Ok(if kind == KIND_DELETE {
                        WatchEvent::Delete { key, revision }
                    } else {
                        WatchEvent::Put(KeyValue {
                            key,
                            value: row.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
                            create_revision: row.get::<_, Option<i64>>(4)?.unwrap_or(revision),
                            mod_revision: revision,
                            lease: row.get::<_, Option<i64>>(5)?.map(LeaseId),
                        })
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db_err)?;
            Ok(EventBatch { events, next: last + 1, more: last < current })
        })
    }
}

struct EventBatch {
    events: Vec<WatchEvent>,
    /// The revision the next poll starts at.
    next: i64,
    /// True if the store already has revisions past this batch.
    more: bool,
}

/// Polls the event log and feeds one watch stream until the stream is dropped.
async fn watch_loop(
    inner: Arc<Inner>,
    prefix: String,
    mut next: i64,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
) {
    loop {
        // Registered before the poll, so a write committed during the poll still wakes the next wait.
        let notified = inner.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let poll_inner = Arc::clone(&inner);
        let poll_prefix = prefix.clone();
        let batch = tokio::task::spawn_blocking(move || poll_inner.read_events(&poll_prefix, next))
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))
            .and_then(|batch| batch);
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                // The stream ends with the error; nothing to do if nobody listens any more.
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        for event in batch.events {
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
        next = batch.next;
        if batch.more {
            continue;
        }
        tokio::select! {
            () = tx.closed() => return,
            () = &mut notified => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// A watch stream that stops its poller when dropped.
struct SqliteWatch {
    rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
    task: JoinHandle<()>,
}

impl Stream for SqliteWatch {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for SqliteWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("cannot open sqlite store {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "sqlite store {} cannot use write-ahead logging (journal mode {mode})",
            path.display()
        )));
    }
    // FULL: a committed write (a lease, an election) survives a power cut, which the fleet relies on.
    conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
    Ok(conn)
}

fn init_schema(conn: &Connection) -> Result<(), StoreError> {
    // Several processes may create the file at the same moment; the immediate transaction serializes them.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let result = (|| {
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(db_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "sqlite store schema version {version} is newer than this flotilla understands ({SCHEMA_VERSION})"
            )));
        }
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db_err)
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db_err),
        Err(e) => {
            // The original error matters more than a failed rollback.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no half-done state behind: SQLite rolls the transaction back.
    conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn checked_key(key: &str) -> Result<String, StoreError> {
    // etcd refuses empty keys; refusing them here too keeps the backends interchangeable.
    if key.is_empty() {
        return Err(StoreError::Backend("key must not be empty".to_owned()));
    }
    Ok(key.to_owned())
}

/// The current revision and the compact revision.
fn meta(conn: &Connection) -> Result<(i64, i64), StoreError> {
    conn.prepare_cached("SELECT revision, compact_revision FROM meta WHERE id = 0")
        .and_then(|mut stmt| stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(db_err)
}

fn set_compact_revision(conn: &Connection, revision: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE meta SET compact_revision = ?1 WHERE id = 0")
        .and_then(|mut stmt| stmt.execute(params![revision]))
        .and_then(|_| conn.prepare_cached("DELETE FROM events WHERE revision < ?1"))
        .and_then(|mut stmt| stmt.execute(params![revision]))
        .map(|_| ())
        .map_err(db_err)
}

fn ensure_lease(conn: &Connection, lease: LeaseId) -> Result<(), StoreError> {
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM leases WHERE id = ?1)")
        .and_then(|mut stmt| stmt.query_row(params![lease.0], |row| row.get(0)))
        .map_err(db_err)?;
    if exists { Ok(()) } else { Err(StoreError::LeaseNotFound(lease.0)) }
}

fn kv_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
        lease: row.get::<_, Option<i64>>(4)?.map(LeaseId),
    })
}

fn get_kv(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    conn.prepare_cached("SELECT key, value, create_revision, mod_revision, lease FROM kv WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row(params![key], kv_from_row).optional())
        .map_err(db_err)
}

fn put_kv(conn: &Connection, key: &str, value: &[u8], lease: Option<LeaseId>, revision: i64) -> Result<(), StoreError> {
    // An existing key keeps its create revision; a put without a lease detaches the key from its old lease.
    let create_revision: i64 = conn
        .prepare_cached(
            "INSERT INTO kv (key, value, create_revision, mod_revision, lease) VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision,
                 lease = excluded.lease
             RETURNING create_revision",
        )
        .and_then(|mut stmt| stmt.query_row(params![key, value, revision, lease.map(|l| l.0)], |row| row.get(0)))
        .map_err(db_err)?;
    conn.prepare_cached(
        "INSERT INTO events (revision, key, kind, value, create_revision, lease) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| stmt.execute(params![revision, key, KIND_PUT, value, create_revision, lease.map(|l| l.0)]))
    .map(|_| ())
    .map_err(db_err)
}

fn delete_kv(conn: &Connection, key: &str, revision: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM kv WHERE key = ?1")
        .and_then(|mut stmt| stmt.execute(params![key]))
        .and_then(|_| conn.prepare_cached("INSERT INTO events (revision, key, kind) VALUES (?1, ?2, ?3)"))
        .and_then(|mut stmt| stmt.execute(params![revision, key, KIND_DELETE]))
        .map(|_| ())
        .map_err(db_err)
}

/// Lock timeouts and I/O failures may be transient and a commit that failed with them may be on disk; the
/// rest are definite failures.
fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure | ErrorCode::DiskFull,
        ) => StoreError::Unavailable(format!("sqlite: {e}")),
        _ => StoreError::Backend(format!("sqlite: {e}")),
    }
}
