//! The conformance suite of the `Store` trait: every test in `suite` runs once against the SQLite backend and
//! once against a real etcd (one throwaway server per test, on loopback ports), so that code above the trait
//! cannot tell the backends apart. SQLite-only tests (several handles and processes on one file) come last.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "the suite's test bodies live in plain async fns (shared by both backends); failures should panic"
)]

use std::any::Any;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_store::election::{self, LeaseKeeper, Ownership};
use flotilla_store::testing::EtcdServer;
use flotilla_store::{
    CasOutcome, EtcdStore, Expect, KeyValue, LeaseId, Listing, SqliteStore, Store, StoreError, WatchEvent, WatchStream,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Waiting longer than this for something that must happen fails the test. It guards against hangs; no test
/// asserts how fast anything happens.
const PATIENCE: Duration = Duration::from_secs(20);
/// Short leases for expiry tests (etcd's shortest with the test server's fast ticks is 1 s).
const SHORT_TTL: Duration = Duration::from_secs(1);
/// Leases that must survive a test unless kept alive, long enough that scheduling hiccups cannot expire them.
const KEPT_TTL: Duration = Duration::from_secs(2);
const LONG_TTL: Duration = Duration::from_secs(60);

/// One backend under test, with whatever keeps it alive (a temporary directory or an etcd process).
struct Backend {
    store: Arc<dyn Store>,
    compactor: Compactor,
    _guard: Box<dyn Any + Send>,
}

/// Compaction is not part of the trait (each backend compacts on its own), but the tests need to force it.
enum Compactor {
    Sqlite(Arc<SqliteStore>),
    Etcd(Arc<EtcdStore>),
}

impl Backend {
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        Backend { store: store.clone(), compactor: Compactor::Sqlite(store), _guard: Box::new(dir) }
    }

    async fn etcd() -> Backend {
        let server = EtcdServer::start().await.unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(server.store().await.unwrap());
        Backend { store: store.clone(), compactor: Compactor::Etcd(store), _guard: Box::new(server) }
    }

    fn store(&self) -> &dyn Store {
        &*self.store
    }

    async fn compact(&self, revision: i64) {
        match &self.compactor {
            Compactor::Sqlite(store) => store.compact(revision).await.unwrap(),
            Compactor::Etcd(store) => store.compact(revision).await.unwrap(),
        }
    }
}

/// Instantiates every test of `suite` once per backend: `sqlite::NAME` and `etcd::NAME`.
macro_rules! conformance_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let backend = super::Backend::sqlite().await;
                    super::suite::$test(&backend).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test]
                async fn $test() {
                    let backend = super::Backend::etcd().await;
                    super::suite::$test(&backend).await;
                }
            )*
        }
    };
}

conformance_suite!(
    revisions_increase_with_every_write,
    create_revision_survives_updates_not_deletion,
    empty_key_is_refused,
    cas_absent_writes_once,
    cas_mod_revision_detects_concurrent_writes,
    delete_and_delete_if,
    list_is_by_exact_prefix,
    watch_from_listing_sees_later_changes_in_order,
    watch_from_old_revision_replays_history,
    watch_from_compacted_revision_fails,
    watch_from_zero_starts_at_the_next_write,
    revoke_deletes_lease_keys,
    expiry_deletes_lease_keys,
    keep_alive_keeps_keys_past_the_ttl,
    put_without_lease_detaches_the_key,
    election_takeover_is_fenced,
    release_never_deletes_a_later_holder,
    wait_for_vacancy_honours_cancel,
    lease_keeper_keeps_alive_until_revoked,
    lease_keeper_lost_when_lease_revoked_elsewhere,
    lease_keeper_lost_when_keep_alives_hang,
    lease_keeper_lost_when_cancelled,
);

/// Fails the test if `future` does not finish within `PATIENCE`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: still waiting after {PATIENCE:?}"))
}

/// Polls `check` until it holds (or the test runs out of patience).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

async fn next_event(events: &mut WatchStream) -> WatchEvent {
    within("watch event", events.next()).await.expect("the watch stream ended").expect("the watch stream failed")
}

/// A put event's key, value, create revision and mod revision.
fn put_parts(event: WatchEvent) -> (String, Vec<u8>, i64, i64) {
    match event {
        WatchEvent::Put(kv) => (kv.key, kv.value, kv.create_revision, kv.mod_revision),
        other => panic!("expected a put, got {other:?}"),
    }
}

fn keys(listing: &Listing) -> Vec<&str> {
    listing.kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// Starts a watch from `from` and asserts it fails with `Compacted`, either at once or as its first item
/// (etcd reports compaction on the stream, after the watch was created).
async fn assert_watch_compacted(store: &dyn Store, prefix: &str, from: i64) {
    match store.watch(prefix, from).await {
        Err(StoreError::Compacted(_)) => {}
        Err(other) => panic!("expected Compacted, got {other:?}"),
        Ok(mut events) => match within("compacted watch", events.next()).await {
            Some(Err(StoreError::Compacted(_))) => {}
            other => panic!("expected Compacted on the stream, got {other:?}"),
        },
    }
}

/// A store whose keep-alives can be made to hang, as they do when the network to the store is cut.
struct Stalling {
    inner: Arc<dyn Store>,
    stalled: AtomicBool,
}

#[async_trait::async_trait]
impl Store for Stalling {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64, StoreError> {
        self.inner.put(key, value, lease).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        self.inner.compare_and_swap(key, expect, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, StoreError> {
        self.inner.delete_if(key, mod_revision).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from_revision).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
    fn describe(&self) -> String {
        format!("stalling {}", self.inner.describe())
    }
}

mod suite {
    use super::*;

    pub async fn revisions_increase_with_every_write(b: &Backend) {
        let s = b.store();
        assert_eq!(s.get("k").await.unwrap(), None);
        let r1 = s.put("k", b"one".to_vec(), None).await.unwrap();
        let r2 = s.put("other", b"x".to_vec(), None).await.unwrap();
        let r3 = s.put("k", b"two".to_vec(), None).await.unwrap();
        assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
        let kv = s.get("k").await.unwrap().unwrap();
        assert_eq!(
            kv,
            KeyValue { key: "k".into(), value: b"two".to_vec(), create_revision: r1, mod_revision: r3, lease: None }
        );
        assert_eq!(s.list("").await.unwrap().revision, r3, "a listing is read at the latest revision");
        // Deleting a missing key writes nothing, so the revision stays.
        assert!(!s.delete("missing").await.unwrap());
        assert_eq!(s.list("").await.unwrap().revision, r3);
    }

    pub async fn create_revision_survives_updates_not_deletion(b: &Backend) {
        let s = b.store();
        let created = s.put("c", b"1".to_vec(), None).await.unwrap();
        let updated = s.put("c", b"2".to_vec(), None).await.unwrap();
        let kv = s.get("c").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (created, updated));
        assert!(s.delete("c").await.unwrap());
        let recreated = s.put("c", b"3".to_vec(), None).await.unwrap();
        assert_eq!(recreated, updated + 2, "the delete took a revision of its own");
        let kv = s.get("c").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (recreated, recreated));
        assert_eq!(kv.value, b"3");
    }

    pub async fn empty_key_is_refused(b: &Backend) {
        let s = b.store();
        assert!(matches!(s.put("", b"x".to_vec(), None).await, Err(StoreError::Backend(_))));
        assert!(matches!(
            s.compare_and_swap("", Expect::Absent, b"x".to_vec(), None).await,
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(s.get("").await, Err(StoreError::Backend(_))));
        assert!(matches!(s.delete("").await, Err(StoreError::Backend(_))));
        assert!(matches!(s.delete_if("", 1).await, Err(StoreError::Backend(_))));
        assert!(s.list("").await.unwrap().kvs.is_empty());
    }

    pub async fn cas_absent_writes_once(b: &Backend) {
        let s = b.store();
        let CasOutcome::Written { revision } =
            s.compare_and_swap("cas", Expect::Absent, b"first".to_vec(), None).await.unwrap()
        else {
            panic!("the first create must win");
        };
        let kv = s.get("cas").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.value.as_slice()), (revision, revision, &b"first"[..]));
        let outcome = s.compare_and_swap("cas", Expect::Absent, b"second".to_vec(), None).await.unwrap();
        assert_eq!(outcome, CasOutcome::Conflict { current: Some(kv.clone()) });
        assert_eq!(s.get("cas").await.unwrap(), Some(kv));
    }

    pub async fn cas_mod_revision_detects_concurrent_writes(b: &Backend) {
        let s = b.store();
        let r1 = s.put("cas", b"v1".to_vec(), None).await.unwrap();
        let CasOutcome::Written { revision: r2 } =
            s.compare_and_swap("cas", Expect::ModRevision(r1), b"v2".to_vec(), None).await.unwrap()
        else {
            panic!("the expected revision was current");
        };
        assert!(r2 > r1);
        let current = s.get("cas").await.unwrap().unwrap();
        assert_eq!((current.create_revision, current.mod_revision, current.value.as_slice()), (r1, r2, &b"v2"[..]));
        // A writer that read r1 lost the race; it gets what is there now.
        let outcome = s.compare_and_swap("cas", Expect::ModRevision(r1), b"v3".to_vec(), None).await.unwrap();
        assert_eq!(outcome, CasOutcome::Conflict { current: Some(current.clone()) });
        assert_eq!(s.get("cas").await.unwrap(), Some(current));
        // A missing key matches no revision, not even 0 (etcd's zero value for missing keys must not leak).
        for expected in [r1, 0] {
            let outcome =
                s.compare_and_swap("missing", Expect::ModRevision(expected), b"x".to_vec(), None).await.unwrap();
            assert_eq!(outcome, CasOutcome::Conflict { current: None });
        }
        assert_eq!(s.get("missing").await.unwrap(), None);
    }

    pub async fn delete_and_delete_if(b: &Backend) {
        let s = b.store();
        assert!(!s.delete("d").await.unwrap());
        let r = s.put("d", b"x".to_vec(), None).await.unwrap();
        assert!(!s.delete_if("d", r + 100).await.unwrap());
        assert!(!s.delete_if("d", 0).await.unwrap());
        assert!(s.get("d").await.unwrap().is_some(), "a failed delete_if leaves the key");
        assert!(s.delete_if("d", r).await.unwrap());
        assert_eq!(s.get("d").await.unwrap(), None);
        assert!(!s.delete_if("d", r).await.unwrap());
        assert!(!s.delete_if("never", 0).await.unwrap());
        s.put("e", b"x".to_vec(), None).await.unwrap();
        assert!(s.delete("e").await.unwrap());
        assert_eq!(s.get("e").await.unwrap(), None);
        assert!(!s.delete("e").await.unwrap());
    }

    pub async fn list_is_by_exact_prefix(b: &Backend) {
        let s = b.store();
        for key in ["a/2", "ab", "a/1", "a", "b/1", "a/1/x"] {
            s.put(key, key.as_bytes().to_vec(), None).await.unwrap();
        }
        let last = s.put("c", b"c".to_vec(), None).await.unwrap();
        let listing = s.list("a/").await.unwrap();
        assert_eq!(keys(&listing), ["a/1", "a/1/x", "a/2"], "\"a/\" must not list \"ab\" or \"a\"");
        assert_eq!(listing.revision, last);
        for kv in &listing.kvs {
            assert_eq!(Some(kv), s.get(&kv.key).await.unwrap().as_ref());
        }
        assert_eq!(keys(&s.list("a").await.unwrap()), ["a", "a/1", "a/1/x", "a/2", "ab"]);
        assert_eq!(keys(&s.list("").await.unwrap()), ["a", "a/1", "a/1/x", "a/2", "ab", "b/1", "c"]);
        let empty = s.list("zzz").await.unwrap();
        assert!(empty.kvs.is_empty());
        assert_eq!(empty.revision, last);
    }

    pub async fn watch_from_listing_sees_later_changes_in_order(b: &Backend) {
        let s = b.store();
        s.put("w/old", b"before".to_vec(), None).await.unwrap();
        let listing = s.list("w/").await.unwrap();
        assert_eq!(keys(&listing), ["w/old"]);
        let mut events = s.watch("w/", listing.revision + 1).await.unwrap();
        let r1 = s.put("w/a", b"1".to_vec(), None).await.unwrap();
        s.put("elsewhere", b"x".to_vec(), None).await.unwrap();
        s.put("w", b"not under w/".to_vec(), None).await.unwrap();
        let r3 = s.put("w/b", b"b".to_vec(), None).await.unwrap();
        let r4 = s.put("w/a", b"2".to_vec(), None).await.unwrap();
        assert!(s.delete("w/b").await.unwrap());
        let r5 = s.list("").await.unwrap().revision;
        assert_eq!(put_parts(next_event(&mut events).await), ("w/a".into(), b"1".to_vec(), r1, r1));
        assert_eq!(put_parts(next_event(&mut events).await), ("w/b".into(), b"b".to_vec(), r3, r3));
        assert_eq!(put_parts(next_event(&mut events).await), ("w/a".into(), b"2".to_vec(), r1, r4));
        assert_eq!(next_event(&mut events).await, WatchEvent::Delete { key: "w/b".into(), revision: r5 });
        // Nothing else is pending: the next event is a write made after this point.
        let r6 = s.put("w/c", b"c".to_vec(), None).await.unwrap();
        assert_eq!(put_parts(next_event(&mut events).await), ("w/c".into(), b"c".to_vec(), r6, r6));
    }

    pub async fn watch_from_old_revision_replays_history(b: &Backend) {
        let s = b.store();
        let r1 = s.put("h/a", b"1".to_vec(), None).await.unwrap();
        let r2 = s.put("h/b", b"2".to_vec(), None).await.unwrap();
        assert!(s.delete("h/a").await.unwrap());
        let r3 = s.list("").await.unwrap().revision;
        let r4 = s.put("h/a", b"3".to_vec(), None).await.unwrap();
        let mut events = s.watch("h/", r1).await.unwrap();
        assert_eq!(put_parts(next_event(&mut events).await), ("h/a".into(), b"1".to_vec(), r1, r1));
        assert_eq!(put_parts(next_event(&mut events).await), ("h/b".into(), b"2".to_vec(), r2, r2));
        assert_eq!(next_event(&mut events).await, WatchEvent::Delete { key: "h/a".into(), revision: r3 });
        assert_eq!(put_parts(next_event(&mut events).await), ("h/a".into(), b"3".to_vec(), r4, r4));
        // A watch from the middle of history starts there.
        let mut events = s.watch("h/", r3).await.unwrap();
        assert_eq!(next_event(&mut events).await, WatchEvent::Delete { key: "h/a".into(), revision: r3 });
    }

    pub async fn watch_from_compacted_revision_fails(b: &Backend) {
        let s = b.store();
        let r1 = s.put("x/1", b"1".to_vec(), None).await.unwrap();
        s.put("x/2", b"2".to_vec(), None).await.unwrap();
        let r3 = s.put("x/3", b"3".to_vec(), None).await.unwrap();
        b.compact(r3).await;
        assert_watch_compacted(s, "x/", r1).await;
        // History from the compaction revision on is still there.
        let mut events = s.watch("x/", r3).await.unwrap();
        assert_eq!(put_parts(next_event(&mut events).await), ("x/3".into(), b"3".to_vec(), r3, r3));
        // Waiting for a vacancy copes with compaction (it lists, then watches from the listing).
        let lease = s.grant_lease(LONG_TTL).await.unwrap();
        s.put("x/office", b"holder".to_vec(), Some(lease)).await.unwrap();
        let store = b.store.clone();
        let waiter =
            tokio::spawn(
                async move { election::wait_for_vacancy(&*store, "x/office", &CancellationToken::new()).await },
            );
        s.revoke_lease(lease).await.unwrap();
        within("vacancy", waiter).await.unwrap().unwrap();
    }

    pub async fn watch_from_zero_starts_at_the_next_write(b: &Backend) {
        let s = b.store();
        s.put("n/before", vec![], None).await.unwrap();
        let mut events = s.watch("n/", 0).await.unwrap();
        let r = s.put("n/after", vec![], None).await.unwrap();
        assert_eq!(put_parts(next_event(&mut events).await), ("n/after".into(), vec![], r, r));
        // Dropping a watch releases it; the store keeps serving new ones.
        drop(events);
        let mut events = s.watch("n/", r).await.unwrap();
        assert_eq!(put_parts(next_event(&mut events).await).0, "n/after");
    }

    pub async fn revoke_deletes_lease_keys(b: &Backend) {
        let s = b.store();
        let lease = s.grant_lease(LONG_TTL).await.unwrap();
        s.put("l/a", b"a".to_vec(), Some(lease)).await.unwrap();
        s.put("l/b", b"b".to_vec(), Some(lease)).await.unwrap();
        s.put("l/c", b"c".to_vec(), None).await.unwrap();
        assert_eq!(s.get("l/a").await.unwrap().unwrap().lease, Some(lease));
        let listing = s.list("l/").await.unwrap();
        let mut events = s.watch("l/", listing.revision + 1).await.unwrap();
        s.revoke_lease(lease).await.unwrap();
        assert_eq!(s.get("l/a").await.unwrap(), None);
        assert_eq!(s.get("l/b").await.unwrap(), None);
        assert!(s.get("l/c").await.unwrap().is_some(), "a key without the lease stays");
        let mut deleted = Vec::new();
        for _ in 0..2 {
            match next_event(&mut events).await {
                WatchEvent::Delete { key, revision } => deleted.push((key, revision)),
                other => panic!("expected a delete, got {other:?}"),
            }
        }
        deleted.sort();
        assert_eq!(deleted[0].0, "l/a");
        assert_eq!(deleted[1].0, "l/b");
        assert_eq!(deleted[0].1, deleted[1].1, "a revoke deletes all its keys at one revision");
        assert!(deleted[0].1 > listing.revision);
        // The lease is gone for every lease operation.
        let renewed = s.keep_alive(lease).await;
        assert!(matches!(renewed, Err(StoreError::LeaseNotFound(id)) if id == lease.0), "{renewed:?}");
        assert!(matches!(s.put("l/d", vec![], Some(lease)).await, Err(StoreError::LeaseNotFound(id)) if id == lease.0));
        assert!(matches!(
            s.compare_and_swap("l/d", Expect::Absent, vec![], Some(lease)).await,
            Err(StoreError::LeaseNotFound(_))
        ));
        assert!(matches!(s.revoke_lease(lease).await, Err(StoreError::LeaseNotFound(_))));
        assert_eq!(s.get("l/d").await.unwrap(), None);
    }

    pub async fn expiry_deletes_lease_keys(b: &Backend) {
        let s = b.store();
        let lease = s.grant_lease(SHORT_TTL).await.unwrap();
        s.put("e/a", b"a".to_vec(), Some(lease)).await.unwrap();
        s.put("e/b", b"b".to_vec(), None).await.unwrap();
        let listing = s.list("e/").await.unwrap();
        assert_eq!(keys(&listing), ["e/a", "e/b"]);
        let mut events = s.watch("e/", listing.revision + 1).await.unwrap();
        // Nobody writes: the expiry must happen on its own and reach the watch.
        assert!(matches!(next_event(&mut events).await, WatchEvent::Delete { key, .. } if key == "e/a"));
        assert_eq!(s.get("e/a").await.unwrap(), None);
        assert!(s.get("e/b").await.unwrap().is_some());
        let renewed = s.keep_alive(lease).await;
        assert!(matches!(renewed, Err(StoreError::LeaseNotFound(_))), "{renewed:?}");
    }

    pub async fn keep_alive_keeps_keys_past_the_ttl(b: &Backend) {
        let s = b.store();
        let kept = s.grant_lease(KEPT_TTL).await.unwrap();
        let control = s.grant_lease(KEPT_TTL).await.unwrap();
        s.put("k/kept", b"k".to_vec(), Some(kept)).await.unwrap();
        s.put("k/control", b"c".to_vec(), Some(control)).await.unwrap();
        let stop = CancellationToken::new();
        let store = b.store.clone();
        let keeper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut renewals = 0;
                while !stop.is_cancelled() {
                    let granted = store.keep_alive(kept).await?;
                    assert!(granted >= KEPT_TTL, "granted {granted:?}");
                    renewals += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok::<_, StoreError>(renewals)
            })
        };
        // The control lease, granted at the same moment, expires: a full TTL has passed.
        eventually("control lease expiry", || async { s.get("k/control").await.unwrap().is_none() }).await;
        assert!(s.get("k/kept").await.unwrap().is_some(), "the kept lease's key must survive");
        stop.cancel();
        let renewals = keeper.await.unwrap().unwrap();
        assert!(renewals > 1);
    }

    pub async fn put_without_lease_detaches_the_key(b: &Backend) {
        let s = b.store();
        let lease = s.grant_lease(LONG_TTL).await.unwrap();
        s.put("p", b"1".to_vec(), Some(lease)).await.unwrap();
        s.put("p", b"2".to_vec(), None).await.unwrap();
        assert_eq!(s.get("p").await.unwrap().unwrap().lease, None);
        s.revoke_lease(lease).await.unwrap();
        assert_eq!(s.get("p").await.unwrap().unwrap().value, b"2");
    }

    pub async fn election_takeover_is_fenced(b: &Backend) {
        let s = b.store();
        let key = "office/refresher";
        // The first holder's lease is never kept alive: it plays a node that died in office.
        let lease_a = s.grant_lease(SHORT_TTL).await.unwrap();
        let lease_b = s.grant_lease(LONG_TTL).await.unwrap();
        let own_a = election::try_acquire(s, key, b"node-a", lease_a).await.unwrap().expect("vacant office");
        assert_eq!(own_a.key, key);
        assert_eq!(own_a.lease, lease_a);
        assert_eq!(election::try_acquire(s, key, b"node-b", lease_b).await.unwrap(), None);
        let owner = election::current_owner(s, key).await.unwrap().unwrap();
        assert_eq!((owner.value.as_slice(), owner.create_revision), (&b"node-a"[..], own_a.create_revision));
        assert!(election::still_owner(s, &own_a).await.unwrap());

        let store = b.store.clone();
        let waiter =
            tokio::spawn(async move { election::wait_for_vacancy(&*store, key, &CancellationToken::new()).await });
        within("vacancy after the holder's lease expired", waiter).await.unwrap().unwrap();
        let own_b = election::try_acquire(s, key, b"node-b", lease_b).await.unwrap().expect("vacant after expiry");
        assert!(own_b.create_revision > own_a.create_revision, "the fencing token must grow");
        assert!(!election::still_owner(s, &own_a).await.unwrap());
        assert!(election::still_owner(s, &own_b).await.unwrap());
        assert_eq!(election::current_owner(s, key).await.unwrap().unwrap().value, b"node-b");
    }

    pub async fn release_never_deletes_a_later_holder(b: &Backend) {
        let s = b.store();
        let key = "office/gateway";
        let lease_a = s.grant_lease(LONG_TTL).await.unwrap();
        let lease_b = s.grant_lease(LONG_TTL).await.unwrap();
        let own_a = election::try_acquire(s, key, b"a", lease_a).await.unwrap().unwrap();
        // Acquiring again under the same lease (a retry after an unclear error) finds the office already ours.
        assert_eq!(election::try_acquire(s, key, b"a", lease_a).await.unwrap(), Some(own_a.clone()));
        // The holder may update its value; release still finds the key its own.
        s.put(key, b"a, busy".to_vec(), Some(lease_a)).await.unwrap();
        assert!(election::release(s, &own_a).await.unwrap());
        assert_eq!(election::current_owner(s, key).await.unwrap(), None);
        assert!(!election::release(s, &own_a).await.unwrap());

        let own_a = election::try_acquire(s, key, b"a", lease_a).await.unwrap().unwrap();
        s.revoke_lease(lease_a).await.unwrap();
        let own_b = election::try_acquire(s, key, b"b", lease_b).await.unwrap().unwrap();
        assert!(!election::release(s, &own_a).await.unwrap(), "a stale holder must not delete the new holder's key");
        assert_eq!(election::current_owner(s, key).await.unwrap().unwrap().value, b"b");
        // A forged ownership with the right revision but another lease is refused too.
        let forged = Ownership { lease: lease_a, ..own_b.clone() };
        assert!(!election::release(s, &forged).await.unwrap());
        assert!(!election::still_owner(s, &forged).await.unwrap());
        assert!(election::release(s, &own_b).await.unwrap());
        within("vacant office", election::wait_for_vacancy(s, key, &CancellationToken::new())).await.unwrap();
    }

    pub async fn wait_for_vacancy_honours_cancel(b: &Backend) {
        let s = b.store();
        let lease = s.grant_lease(LONG_TTL).await.unwrap();
        election::try_acquire(s, "office/busy", b"a", lease).await.unwrap().unwrap();
        let cancel = CancellationToken::new();
        let store = b.store.clone();
        let waiter = {
            let cancel = cancel.clone();
            tokio::spawn(async move { election::wait_for_vacancy(&*store, "office/busy", &cancel).await })
        };
        // Other keys under the same prefix and updates of the office itself do not end the wait.
        s.put("office/busy/detail", b"x".to_vec(), None).await.unwrap();
        s.delete("office/busy/detail").await.unwrap();
        s.put("office/busy", b"a, updated".to_vec(), Some(lease)).await.unwrap();
        cancel.cancel();
        within("cancelled wait", waiter).await.unwrap().unwrap();
        assert!(election::current_owner(s, "office/busy").await.unwrap().is_some());
    }

    pub async fn lease_keeper_keeps_alive_until_revoked(b: &Backend) {
        let s = b.store();
        let keeper = LeaseKeeper::start(b.store.clone(), KEPT_TTL, CancellationToken::new()).await.unwrap();
        let lost = keeper.lost();
        assert_eq!(keeper.ttl(), KEPT_TTL);
        s.put("lk/kept", b"k".to_vec(), Some(keeper.id())).await.unwrap();
        let control = s.grant_lease(KEPT_TTL).await.unwrap();
        s.put("lk/control", b"c".to_vec(), Some(control)).await.unwrap();
        eventually("control lease expiry", || async { s.get("lk/control").await.unwrap().is_none() }).await;
        assert!(s.get("lk/kept").await.unwrap().is_some(), "the keeper must keep its lease alive");
        assert!(!lost.is_cancelled());
        keeper.revoke().await.unwrap();
        assert!(lost.is_cancelled());
        assert_eq!(s.get("lk/kept").await.unwrap(), None, "revoke deletes the keys at once");
    }

    pub async fn lease_keeper_lost_when_lease_revoked_elsewhere(b: &Backend) {
        let s = b.store();
        let keeper = LeaseKeeper::start(b.store.clone(), KEPT_TTL, CancellationToken::new()).await.unwrap();
        s.revoke_lease(keeper.id()).await.unwrap();
        within("lost after revoke", keeper.lost().cancelled()).await;
        // Revoking an already-lost lease on shutdown is fine.
        keeper.revoke().await.unwrap();
    }

    pub async fn lease_keeper_lost_when_keep_alives_hang(b: &Backend) {
        let s = b.store();
        let stalling = Arc::new(Stalling { inner: b.store.clone(), stalled: AtomicBool::new(false) });
        let keeper = LeaseKeeper::start(stalling.clone(), SHORT_TTL, CancellationToken::new()).await.unwrap();
        s.put("hang/key", b"k".to_vec(), Some(keeper.id())).await.unwrap();
        stalling.stalled.store(true, Ordering::SeqCst);
        // No answer at all (not even an error): the local deadline alone must fence the holder.
        within("lost without keep-alive answers", keeper.lost().cancelled()).await;
        eventually("the store expires the lease", || async { s.get("hang/key").await.unwrap().is_none() }).await;
    }

    pub async fn lease_keeper_lost_when_cancelled(b: &Backend) {
        let s = b.store();
        let cancel = CancellationToken::new();
        let keeper = LeaseKeeper::start(b.store.clone(), LONG_TTL, cancel.clone()).await.unwrap();
        s.put("cancel/key", b"k".to_vec(), Some(keeper.id())).await.unwrap();
        let lost = keeper.lost();
        cancel.cancel();
        within("lost after cancel", lost.cancelled()).await;
        // Cancelling stops renewal but leaves the lease to expire; revoking still works afterwards.
        assert!(s.get("cancel/key").await.unwrap().is_some());
        keeper.revoke().await.unwrap();
        assert_eq!(s.get("cancel/key").await.unwrap(), None);
    }
}

/// Store URLs reach both backends; an unreachable etcd is reported as unavailable, not as a broken store.
mod urls {
    use super::*;

    #[tokio::test]
    async fn open_by_url_reaches_both_backends() {
        let server = EtcdServer::start().await.unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite:{}", dir.path().join("sub/store.db").display());
        for url in [server.url(), sqlite_url] {
            let store = flotilla_store::open(&url).await.unwrap();
            let revision = store.put("url/k", url.as_bytes().to_vec(), None).await.unwrap();
            let kv = store.get("url/k").await.unwrap().unwrap();
            assert_eq!((kv.value, kv.mod_revision), (url.as_bytes().to_vec(), revision), "{}", store.describe());
        }
    }

    #[tokio::test]
    async fn unreachable_etcd_is_unavailable() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let result = within("connect", flotilla_store::open(&format!("etcd://127.0.0.1:{port}"))).await;
        let error = result.err().expect("nothing listens on the port");
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(error.write_may_have_happened());
    }

    #[tokio::test]
    async fn unknown_scheme_is_refused() {
        let error = flotilla_store::open("zookeeper://127.0.0.1:2181").await.err().expect("unknown scheme");
        assert!(matches!(error, StoreError::InvalidUrl { .. }), "{error:?}");
        assert!(error.to_string().contains(flotilla_store::ACCEPTED_URLS), "{error}");
    }
}

/// Tests only the embedded backend needs: several handles and several processes on one file.
mod sqlite_only {
    use super::*;

    /// Set by `several_processes_share_one_file` for its child processes.
    const CHILD_DB_ENV: &str = "FLOTILLA_STORE_TEST_CHILD_DB";
    const INCREMENTS: u64 = 20;

    /// Adds `times` to the counter at `key` with compare-and-swap, retrying on conflicts.
    async fn increment(store: &dyn Store, key: &str, times: u64) {
        for _ in 0..times {
            loop {
                let current = store.get(key).await.unwrap();
                let (expect, value) = match &current {
                    None => (Expect::Absent, 0),
                    Some(kv) => (
                        Expect::ModRevision(kv.mod_revision),
                        String::from_utf8_lossy(&kv.value).parse::<u64>().unwrap(),
                    ),
                };
                let next = (value + 1).to_string().into_bytes();
                if let CasOutcome::Written { .. } = store.compare_and_swap(key, expect, next, None).await.unwrap() {
                    break;
                }
            }
        }
    }

    async fn counter(store: &dyn Store, key: &str) -> u64 {
        let kv = store.get(key).await.unwrap().unwrap();
        String::from_utf8_lossy(&kv.value).parse().unwrap()
    }

    #[tokio::test]
    async fn two_handles_share_writes_and_watches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let one = SqliteStore::open(&path).unwrap();
        let two = SqliteStore::open(&path).unwrap();
        let r1 = one.put("x", b"1".to_vec(), None).await.unwrap();
        assert_eq!(two.get("x").await.unwrap().unwrap().mod_revision, r1);
        let listing = two.list("").await.unwrap();
        assert_eq!(listing.revision, r1);
        // Writes of another handle reach this handle's watch by polling (no in-process wakeup crosses handles).
        let mut events = two.watch("", listing.revision + 1).await.unwrap();
        let r2 = one.put("y", b"2".to_vec(), None).await.unwrap();
        assert!(one.delete("x").await.unwrap());
        assert_eq!(put_parts(next_event(&mut events).await), ("y".into(), b"2".to_vec(), r2, r2));
        assert_eq!(next_event(&mut events).await, WatchEvent::Delete { key: "x".into(), revision: r2 + 1 });
        // Both handles share one revision sequence and one compare-and-swap truth.
        let r4 = two.put("z", vec![], None).await.unwrap();
        assert_eq!(r4, r2 + 2);
        let outcome = two.compare_and_swap("y", Expect::Absent, vec![], None).await.unwrap();
        assert!(matches!(outcome, CasOutcome::Conflict { current: Some(kv) } if kv.mod_revision == r2));
    }

    #[tokio::test]
    async fn a_lease_not_kept_alive_expires_for_other_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let two = SqliteStore::open(&path).unwrap();
        let lease = {
            let one = SqliteStore::open(&path).unwrap();
            let lease = one.grant_lease(SHORT_TTL).await.unwrap();
            one.put("owned", b"by one".to_vec(), Some(lease)).await.unwrap();
            // Leases live in the file: another handle can renew them.
            assert_eq!(two.keep_alive(lease).await.unwrap(), SHORT_TTL);
            lease
            // `one` is dropped here, as if its process died.
        };
        let listing = two.list("").await.unwrap();
        assert_eq!(keys(&listing), ["owned"]);
        let mut events = two.watch("", listing.revision + 1).await.unwrap();
        // Only the watch's own polling runs now; it must expire the lease and report the deletion.
        assert!(matches!(next_event(&mut events).await, WatchEvent::Delete { key, .. } if key == "owned"));
        assert_eq!(two.get("owned").await.unwrap(), None);
        assert!(matches!(two.keep_alive(lease).await, Err(StoreError::LeaseNotFound(_))));
    }

    #[tokio::test]
    async fn data_and_revisions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.db");
        let (revision, lease) = {
            let store = SqliteStore::open(&path).unwrap();
            let lease = store.grant_lease(LONG_TTL).await.unwrap();
            (store.put("k", b"v".to_vec(), Some(lease)).await.unwrap(), lease)
        };
        let store = SqliteStore::open(&path).unwrap();
        let kv = store.get("k").await.unwrap().unwrap();
        assert_eq!((kv.value.as_slice(), kv.mod_revision, kv.lease), (&b"v"[..], revision, Some(lease)));
        assert!(store.put("k2", vec![], None).await.unwrap() > revision);
        store.keep_alive(lease).await.unwrap();
        assert_eq!(store.describe(), format!("sqlite:{}", path.display()));
    }

    /// Two child processes and this one increment one counter on one file at the same time; no increment may
    /// be lost. Each child also leaves a key on a short lease and exits without revoking it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_processes_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let store = SqliteStore::open(&path).unwrap();
        let mut alive = store.watch("alive/", 0).await.unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                tokio::process::Command::new(&exe)
                    .args(["--exact", "sqlite_only::child_process_increments", "--ignored", "--test-threads=1"])
                    .env(CHILD_DB_ENV, &path)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap()
            })
            .collect();
        increment(&store, "counter", INCREMENTS).await;
        for child in children {
            let output = within("child process", child.wait_with_output()).await.unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "child failed: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert_eq!(counter(&store, "counter").await, 3 * INCREMENTS, "an increment was lost");
        // Each child's key appears and then vanishes once its lease runs out, without anyone revoking it.
        let mut live = std::collections::BTreeSet::new();
        let mut gone = std::collections::BTreeSet::new();
        while gone.len() < 2 {
            match next_event(&mut alive).await {
                WatchEvent::Put(kv) => assert!(live.insert(kv.key)),
                WatchEvent::Delete { key, .. } => assert!(gone.insert(key)),
            }
        }
        assert_eq!(live, gone);
        assert!(store.list("alive/").await.unwrap().kvs.is_empty());
    }

    /// The body of each child process of `several_processes_share_one_file`; run on its own, it uses a file of
    /// its own and checks its own count.
    #[tokio::test]
    #[ignore = "child process of several_processes_share_one_file"]
    async fn child_process_increments() {
        let own_dir;
        let path = match std::env::var_os(CHILD_DB_ENV) {
            Some(path) => PathBuf::from(path),
            None => {
                own_dir = tempfile::tempdir().unwrap();
                own_dir.path().join("alone.db")
            }
        };
        let store = SqliteStore::open(&path).unwrap();
        increment(&store, "counter", INCREMENTS).await;
        assert!(counter(&store, "counter").await >= INCREMENTS);
        let lease = store.grant_lease(SHORT_TTL).await.unwrap();
        store.put(&format!("alive/{}", std::process::id()), vec![], Some(lease)).await.unwrap();
    }
}
