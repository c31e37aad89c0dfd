//! What can go wrong with the journal, classified so the caller knows whether a write certainly
//! failed (safe to retry, or to leave a Slack envelope unacked) or may have happened (re-read first).

use std::path::PathBuf;

use rusqlite::ErrorCode;
use thiserror::Error;

/// Every failure of a journal operation.
#[derive(Debug, Error)]
pub enum JournalError {
    /// The disk, or the journal's configured size limit (`JournalOptions::max_bytes`), is full.
    /// The transaction was rolled back: nothing was written and the database is consistent.
    #[error("journal storage is full; nothing was written")]
    Full(#[source] rusqlite::Error),
    /// The operating system reported an i/o error. When it happened while committing, the
    /// transaction may or may not be durable.
    #[error("journal i/o error{}", if *.may_have_written { " while committing; the write may have happened" } else { "; nothing was written" })]
    Io {
        may_have_written: bool,
        #[source]
        source: rusqlite::Error,
    },
    /// Another connection (usually another gateway process) holds the journal file.
    #[error("journal file is locked by another process")]
    Busy(#[source] rusqlite::Error),
    /// The file is not a SQLite database or is damaged.
    #[error("journal database is corrupt or not a database")]
    Corrupt(#[source] rusqlite::Error),
    /// The file was written by a newer flotilla that changed the schema.
    #[error("journal schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    /// The filesystem does not support WAL mode (e.g. some network filesystems).
    #[error("journal cannot use write-ahead logging on this filesystem (journal_mode is {mode})")]
    NoWal { mode: String },
    /// The journal's directory could not be created.
    #[error("cannot create journal directory {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the journal writer thread")]
    Spawn(#[source] std::io::Error),
    /// The journal was closed (or its writer stopped) before the operation was handed over:
    /// nothing was written.
    #[error("journal is closed")]
    Closed,
    /// The writer stopped after the operation was handed over and before it answered: the write
    /// may have happened.
    #[error("journal writer stopped before answering; the write may have happened")]
    WriterLost,
    /// No turn has this id (it never existed or was compacted away).
    #[error("turn {0} does not exist")]
    TurnNotFound(i64),
    /// No outbox entry has this id (it never existed or was compacted away).
    #[error("outbox entry {0} does not exist")]
    OutboxNotFound(i64),
    /// The turn's current state does not allow the requested step.
    #[error("turn {turn_id} is {from}; it cannot become {to}")]
    IllegalTransition { turn_id: i64, from: &'static str, to: &'static str },
    /// The outbox entry was already delivered or abandoned.
    #[error("outbox entry {id} is {state}; it cannot be {action}")]
    OutboxClosed { id: i64, state: &'static str, action: &'static str },
    /// Another reply already uses this idempotency key.
    #[error("idempotency key {0:?} is already used by another reply")]
    DuplicateIdempotencyKey(String),
    /// A message timestamp is not in Slack's `seconds.micros` form.
    #[error("invalid message ts {0:?}: expected digits with an optional fraction of up to 6 digits")]
    InvalidTs(String),
    /// Any other SQLite failure (a bug in the journal rather than the environment).
    #[error("journal sqlite error{}", if *.may_have_written { " while committing; the write may have happened" } else { "" })]
    Sqlite {
        may_have_written: bool,
        #[source]
        source: rusqlite::Error,
    },
}

/// Where in a write transaction an SQLite error happened: before `COMMIT` nothing can have been
/// written (the transaction is rolled back), during `COMMIT` an i/o error leaves it unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Body,
    Commit,
}

impl JournalError {
    /// True when the operation may have been applied although it returned an error: re-read the
    /// journal before retrying. False means it certainly was not applied.
    #[must_use]
    pub fn may_have_written(&self) -> bool {
        match self {
            Self::Io { may_have_written, .. } | Self::Sqlite { may_have_written, .. } => *may_have_written,
            Self::WriterLost => true,
            _ => false,
        }
    }

    /// True when the same call may succeed later without anyone changing the request: the
    /// environment (space, a lock, the disk) was at fault, not the caller.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Full(_) | Self::Io { .. } | Self::Busy(_))
    }

    /// True when the error is about storage itself (full, i/o, lock, corruption, closed): the
    /// gateway should report the journal as not ready.
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Self::Full(_)
                | Self::Io { .. }
                | Self::Busy(_)
                | Self::Corrupt(_)
                | Self::Closed
                | Self::WriterLost
                | Self::CreateDir { .. }
                | Self::Spawn(_)
                | Self::SchemaTooNew { .. }
                | Self::NoWal { .. }
        )
    }

    /// The HTTP status an admin endpoint should answer with when it surfaces this error.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Self::TurnNotFound(_) | Self::OutboxNotFound(_) => 404,
            Self::IllegalTransition { .. } | Self::OutboxClosed { .. } | Self::DuplicateIdempotencyKey(_) => 409,
            Self::InvalidTs(_) => 400,
            Self::Full(_) | Self::Busy(_) | Self::Closed | Self::WriterLost | Self::Io { .. } => 503,
            _ => 500,
        }
    }

    /// Classifies an SQLite error by its code and by where in the transaction it happened.
    pub(crate) fn from_sqlite(source: rusqlite::Error, phase: Phase) -> Self {
        let may_have_written = phase == Phase::Commit;
        match source.sqlite_error_code() {
            // SQLite maps ENOSPC and short writes to SQLITE_FULL and rolls the transaction back;
            // a partly written WAL commit frame fails its checksum, so nothing became durable.
            Some(ErrorCode::DiskFull) => Self::Full(source),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Busy(source),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Corrupt(source),
            Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen | ErrorCode::ReadOnly) => {
                Self::Io { may_have_written, source }
            }
            _ => Self::Sqlite { may_have_written, source },
        }
    }
}

impl From<rusqlite::Error> for JournalError {
    /// Errors from statements inside a transaction (or from reads): nothing was committed.
    fn from(e: rusqlite::Error) -> Self {
        Self::from_sqlite(e, Phase::Body)
    }
}

/// Result alias for journal operations.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_err(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn errors_and_handles_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<JournalError>();
        send_sync::<crate::Journal>();
    }

    #[test]
    fn full_is_certainly_not_written_even_at_commit() {
        let e = JournalError::from_sqlite(sqlite_err(rusqlite::ffi::SQLITE_FULL), Phase::Commit);
        assert!(matches!(e, JournalError::Full(_)));
        assert!(!e.may_have_written());
        assert!(e.is_retryable());
        assert_eq!(e.http_status(), 503);
    }

    #[test]
    fn io_error_at_commit_may_have_written() {
        let body = JournalError::from_sqlite(sqlite_err(rusqlite::ffi::SQLITE_IOERR_FSYNC), Phase::Body);
        let commit = JournalError::from_sqlite(sqlite_err(rusqlite::ffi::SQLITE_IOERR_FSYNC), Phase::Commit);
        assert!(!body.may_have_written());
        assert!(commit.may_have_written());
        assert!(commit.to_string().contains("may have happened"), "{commit}");
    }

    #[test]
    fn busy_and_corrupt_are_classified() {
        let busy = JournalError::from(sqlite_err(rusqlite::ffi::SQLITE_BUSY));
        assert!(matches!(busy, JournalError::Busy(_)));
        let corrupt = JournalError::from(sqlite_err(rusqlite::ffi::SQLITE_NOTADB));
        assert!(matches!(corrupt, JournalError::Corrupt(_)));
        assert!(corrupt.is_storage());
        assert!(!corrupt.is_retryable());
    }
}
