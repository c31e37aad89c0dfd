//! The cluster store: one async trait that the fleet uses for versioned config, encrypted credentials, node
//! membership, Slack app ownership and elections, with an embedded SQLite backend and an etcd backend.
//!
//! The model is etcd's: every write bumps one store-wide revision; a key remembers the revision that created it
//! and the one that last modified it; keys may be attached to a lease, and when the lease expires (no keep-alive
//! within its TTL) or is revoked, its keys are deleted. Both backends pass the same conformance suite
//! (`tests/conformance.rs`), so code above this trait cannot tell them apart.
//!
//! - [`open`] picks the backend from a URL: `sqlite:PATH` ([`SqliteStore`], one file shared by the processes of
//!   one machine) or `etcd://HOST:PORT,...` ([`EtcdStore`]).
//! - [`election`] builds on the trait: [`election::LeaseKeeper`] keeps a lease alive and fences its holder;
//!   `try_acquire` / `still_owner` / `release` / `wait_for_vacancy` run one office per key.
//! - `testing` (feature `testing`) starts a throwaway etcd for tests.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

pub mod election;
mod etcd;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod url;

pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;
pub use url::{ACCEPTED_URLS, open};

/// A lease handle. Keys put with a lease vanish when the lease expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion). Used as a fencing token.
    pub create_revision: i64,
    /// Revision of the last write to this key.
    pub mod_revision: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// What a compare-and-swap expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(i64),
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The write happened at this revision.
    Written { revision: i64 },
    /// The expectation did not hold; `current` is what the key holds now (None if absent).
    Conflict { current: Option<KeyValue> },
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    /// The key was deleted (explicitly or by lease expiry) at `revision`.
    Delete {
        key: String,
        revision: i64,
    },
}

/// A stream of watch events in revision order. Ends with an error if the watch cannot continue
/// (store unreachable, or the requested start revision was compacted away).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A prefix listing at one consistent revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    /// The store revision the listing was read at; watch from `revision + 1` to see every later change.
    pub revision: i64,
}

/// Errors classify themselves: did the write certainly not happen, or may it have happened?
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer; a write may or may not have happened (re-read first).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(i64),
    /// A watch asked for history that was compacted away; re-list and watch from the listing's revision.
    #[error("revision {0} has been compacted")]
    Compacted(i64),
    /// The store URL is malformed or names an unknown backend.
    #[error("invalid store url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Anything else the backend reported; the operation certainly failed.
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// True when a write that returned this error may nevertheless have been applied.
    pub fn write_may_have_happened(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The cluster store. Object-safe: the fleet holds an `Arc<dyn Store>` chosen by URL.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Writes one key unconditionally, optionally attached to a lease; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64, StoreError>;
    /// Writes one key only if `expect` holds.
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError>;
    /// Deletes one key; true if it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Deletes one key only if its `mod_revision` is `mod_revision`; true if it was deleted.
    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, StoreError>;
    /// Lists every key starting with `prefix`, in key order, at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;
    /// Watches every key starting with `prefix`, from `from_revision` (inclusive) on.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream, StoreError>;
    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Renews a lease once; `LeaseNotFound` if it already expired. Returns the TTL granted.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;
    /// Revokes a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// A short name of the backend and where it points, without credentials (for status and logs).
    fn describe(&self) -> String;
}
