//! Leases kept alive in the background, and elections on top of any `Store`: one key per office, held by
//! whoever created it, attached to the holder's lease so that it vanishes when the holder dies.
//!
//! The key's `create_revision` is the fencing token: it only grows from one holder to the next, so a resource
//! that remembers the largest token it has seen can refuse a stale holder that still thinks it is in office.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{CasOutcome, Expect, KeyValue, LeaseId, Store, StoreError, WatchEvent};

/// The shortest pause between two keep-alive attempts after a failure, so a broken store is not hammered.
const MIN_RETRY: Duration = Duration::from_millis(50);

/// A lease granted on start and kept alive every `ttl / 3` by a background task until revoked, dropped or
/// cancelled.
///
/// `lost()` is the fence: it fires as soon as this process can no longer be sure the lease is alive: the
/// store said it is gone, or no keep-alive succeeded within `ttl` of sending it (measured on the local
/// monotonic clock from when the request was sent, so it fires no later than the store itself expires the
/// lease). It also fires when renewal stops (revoke, drop, or `cancel`), because from then on nobody keeps the
/// lease alive. Whoever holds an office under this lease must stop acting for it when `lost()` fires.
pub struct LeaseKeeper {
    store: Arc<dyn Store>,
    id: LeaseId,
    ttl: Duration,
    lost: CancellationToken,
    /// Stops the keep-alive task; a child of the caller's token.
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and starts keeping it alive. The task stops when `cancel` is cancelled.
    pub async fn start(
        store: Arc<dyn Store>,
        ttl: Duration,
        cancel: CancellationToken,
    ) -> Result<LeaseKeeper, StoreError> {
        // The store starts the lease's clock after this instant, so the local deadline can only be earlier.
        let sent = Instant::now();
        let id = store.grant_lease(ttl).await?;
        let lost = CancellationToken::new();
        let stop = cancel.child_token();
        let tracker = TaskTracker::new();
        tracker.spawn(keep_alive_loop(Arc::clone(&store), id, ttl, sent, stop.clone(), lost.clone()));
        tracker.close();
        Ok(LeaseKeeper { store, id, ttl, lost, stop, tracker })
    }

    /// The lease to attach keys to.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The TTL the lease was asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Cancelled when the lease is (or may be) lost; see the type's documentation.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Graceful shutdown: stops renewing and revokes the lease, deleting its keys at once instead of after the
    /// TTL. A lease that is already gone is not an error.
    pub async fn revoke(self) -> Result<(), StoreError> {
        self.stop.cancel();
        self.tracker.wait().await;
        self.lost.cancel();
        match self.store.revoke_lease(self.id).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Nobody renews the lease any more, so whoever watches `lost` must stop relying on it.
        self.stop.cancel();
        self.lost.cancel();
    }
}

async fn keep_alive_loop(
    store: Arc<dyn Store>,
    id: LeaseId,
    ttl: Duration,
    mut renewed_at: Instant,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let mut local_ttl = ttl;
    let mut next = renewed_at + local_ttl / 3;
    loop {
        let deadline = renewed_at + local_ttl;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let result = tokio::select! {
            () = stop.cancelled() => break,
            result = tokio::time::timeout_at(deadline, store.keep_alive(id)) => result,
        };
        match result {
            Ok(Ok(granted)) => {
                renewed_at = sent;
                // etcd may grant more than asked (whole seconds); the fence keeps to the shorter of the two.
                local_ttl = ttl.min(granted);
                next = renewed_at + local_ttl / 3;
            }
            Ok(Err(StoreError::LeaseNotFound(_))) => {
                tracing::warn!(lease = id.0, "lease lost: the store no longer knows it");
                break;
            }
            Ok(Err(error)) => {
                tracing::debug!(lease = id.0, %error, "lease keep-alive failed; retrying");
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(lease = id.0, %error, "lease lost: no keep-alive succeeded within its ttl");
                    break;
                }
                next = (now + (local_ttl / 10).max(MIN_RETRY)).min(deadline);
            }
            Err(_elapsed) => {
                tracing::warn!(lease = id.0, "lease lost: no keep-alive succeeded within its ttl");
                break;
            }
        }
    }
    lost.cancel();
}

/// Proof of holding an office: the key, the revision that created it (the fencing token) and the lease it
/// hangs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub key: String,
    /// Grows with every new holder; hand it to fenced resources.
    pub create_revision: i64,
    pub lease: LeaseId,
}

/// Takes the office `key` if it is vacant, writing `holder` (who we are, for `current_owner`) under `lease`.
/// `None` if someone else holds it. If the key already hangs on `lease` (a retry after an `Unavailable` error
/// whose write did happen), the office is ours and the existing ownership is returned.
pub async fn try_acquire(
    store: &dyn Store,
    key: &str,
    holder: &[u8],
    lease: LeaseId,
) -> Result<Option<Ownership>, StoreError> {
    match store.compare_and_swap(key, Expect::Absent, holder.to_vec(), Some(lease)).await? {
        CasOutcome::Written { revision } => {
            Ok(Some(Ownership { key: key.to_owned(), create_revision: revision, lease }))
        }
        CasOutcome::Conflict { current: Some(kv) } if kv.lease == Some(lease) => {
            Ok(Some(Ownership { key: key.to_owned(), create_revision: kv.create_revision, lease }))
        }
        CasOutcome::Conflict { .. } => Ok(None),
    }
}

/// Who holds the office `key` now, if anyone.
pub async fn current_owner(store: &dyn Store, key: &str) -> Result<Option<KeyValue>, StoreError> {
    store.get(key).await
}

/// True if `ownership` is still in office: the key exists, was created by the same write and hangs on the
/// same lease.
pub async fn still_owner(store: &dyn Store, ownership: &Ownership) -> Result<bool, StoreError> {
    Ok(store
        .get(&ownership.key)
        .await?
        .is_some_and(|kv| kv.create_revision == ownership.create_revision && kv.lease == Some(ownership.lease)))
}

/// Leaves the office; true if this call deleted the key. Never deletes a key that a later holder created.
pub async fn release(store: &dyn Store, ownership: &Ownership) -> Result<bool, StoreError> {
    loop {
        let Some(kv) = store.get(&ownership.key).await? else { return Ok(false) };
        if kv.create_revision != ownership.create_revision || kv.lease != Some(ownership.lease) {
            return Ok(false);
        }
        if store.delete_if(&ownership.key, kv.mod_revision).await? {
            return Ok(true);
        }
        // The key changed between the read and the delete (the holder updated its value, or it expired):
        // look again.
    }
}

/// Waits until the office `key` is vacant (its key absent). Returns at once if it already is, and also
/// returns `Ok(())` when `cancel` fires, so callers check `cancel` before trying to acquire.
pub async fn wait_for_vacancy(store: &dyn Store, key: &str, cancel: &CancellationToken) -> Result<(), StoreError> {
    loop {
        // A listing (not a get) gives the store's current revision, so the watch below starts near the head
        // of history, never at a revision compaction may already have dropped.
        let listing = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            listing = store.list(key) => listing?,
        };
        if !listing.kvs.iter().any(|kv| kv.key == key) {
            return Ok(());
        }
        let mut events = match store.watch(key, listing.revision + 1).await {
            Ok(events) => events,
            Err(StoreError::Compacted(_)) => continue,
            Err(e) => return Err(e),
        };
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                event = events.next() => event,
            };
            match event {
                Some(Ok(WatchEvent::Delete { key: deleted, .. })) if deleted == key => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(StoreError::Compacted(_))) => break,
                Some(Err(e)) => return Err(e),
                None => return Err(StoreError::Unavailable("the watch ended without an error".to_owned())),
            }
        }
    }
}
