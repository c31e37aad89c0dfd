//! The etcd backend: the `Store` trait mapped one-to-one onto etcd's v3 API (keys, transactions, watches,
//! leases) through the `etcd-client` crate. Keys are used exactly as given, with no namespace of our own.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tonic::Code;

use crate::{CasOutcome, Expect, KeyValue, LeaseId, Listing, Store, StoreError, WatchEvent, WatchStream};

/// How long one request may take before the store counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on idle connections, so a watch on a dead connection fails instead of waiting forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The store on an etcd cluster (v3 API over gRPC, plain HTTP).
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl EtcdStore {
    /// Connects to an etcd cluster. Endpoints are `host:port` or `http://host:port`. Fails with `Unavailable`
    /// if no endpoint answers, so a wrong address shows up at startup rather than at the first write.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".to_owned()));
        }
        let endpoints: Vec<String> =
            endpoints.iter().map(|e| if e.contains("://") { e.clone() } else { format!("http://{e}") }).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            // Without a leader etcd cannot commit; answering "unavailable" at once beats waiting for a timeout.
            .with_require_leader(true);
        let client = bounded(Client::connect(&endpoints, Some(options)), None).await?;
        let mut probe = client.clone();
        bounded(probe.status(), None).await?;
        Ok(EtcdStore { client, endpoints })
    }

    /// Compacts etcd's history before `revision`: a watch from an earlier revision then fails with `Compacted`.
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        match bounded(client.compact(revision, None), None).await {
            Err(StoreError::Backend(message)) if message.contains("compacted") => Err(StoreError::Compacted(revision)),
            other => other.map(|_| ()),
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut client = self.client.clone();
        let response = bounded(client.get(key, None), None).await?;
        Ok(response.kvs().first().map(convert_kv))
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64, StoreError> {
        let mut client = self.client.clone();
        let response = bounded(client.put(key, value, put_options(lease)), lease).await?;
        header_revision(response.header())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        let compares = match expect {
            Expect::Absent => vec![Compare::create_revision(key, CompareOp::Equal, 0)],
            // etcd compares a missing key as if all its revisions were 0, so existence is checked explicitly.
            Expect::ModRevision(revision) => vec![
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, revision),
            ],
        };
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::put(key, value, put_options(lease))])
            .or_else(vec![TxnOp::get(key, None)]);
        let mut client = self.client.clone();
        let response = bounded(client.txn(txn), lease).await?;
        if response.succeeded() {
            return Ok(CasOutcome::Written { revision: header_revision(response.header())? });
        }
        let current = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(convert_kv)),
            _ => None,
        });
        Ok(CasOutcome::Conflict { current: current.flatten() })
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut client = self.client.clone();
        let response = bounded(client.delete(key, None), None).await?;
        Ok(response.deleted() > 0)
    }

    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when(vec![
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, mod_revision),
            ])
            .and_then(vec![TxnOp::delete(key, None)]);
        let mut client = self.client.clone();
        Ok(bounded(client.txn(txn), None).await?.succeeded())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let mut client = self.client.clone();
        let options =
            if prefix.is_empty() { GetOptions::new().with_all_keys() } else { GetOptions::new().with_prefix() };
        let response = bounded(client.get(prefix, Some(options)), None).await?;
        Ok(Listing {
            kvs: response.kvs().iter().map(convert_kv).collect(),
            revision: header_revision(response.header())?,
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream, StoreError> {
        let mut options =
            if prefix.is_empty() { WatchOptions::new().with_all_keys() } else { WatchOptions::new().with_prefix() };
        // etcd reads a start revision of 0 as "from the next write on"; the SQLite backend does the same.
        if from_revision > 0 {
            options = options.with_start_revision(from_revision);
        }
        let mut client = self.client.clone();
        let mut inner = bounded(client.watch(prefix, Some(options)), None).await?;
        // Wait until etcd has registered the watch: a "from now" watch then sees every write made after this
        // call returns.
        let first = bounded(inner.message(), None).await?;
        let mut state = WatchState { inner, pending: VecDeque::new(), next: from_revision, done: false };
        match first {
            Some(response) => state.absorb(&response),
            None => return Err(StoreError::Unavailable("etcd closed the watch stream".to_owned())),
        }
        if state.done
            && let Some(Err(e)) = state.pending.pop_back()
        {
            return Err(e);
        }
        let stream = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(item) = state.pending.pop_front() {
                    return Some((item, state));
                }
                if state.done {
                    return None;
                }
                match state.inner.message().await {
                    Ok(Some(response)) => state.absorb(&response),
                    Ok(None) => state.fail(StoreError::Unavailable("etcd closed the watch stream".to_owned())),
                    Err(e) => state.fail(map_err(e, None)),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts TTLs in whole seconds; rounding up never makes a lease shorter than asked.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        if seconds == 0 {
            return Err(StoreError::Backend("lease ttl must be at least one millisecond".to_owned()));
        }
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let mut client = self.client.clone();
        let response = bounded(client.lease_grant(seconds, None), None).await?;
        Ok(LeaseId(response.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut client = self.client.clone();
        // Opening the keep-alive stream already renews the lease once (etcd-client waits for that answer and
        // maps a TTL of 0, etcd's "no such lease", to an error), but it does not hand out the granted TTL; a
        // second renewal on the same stream does.
        let (mut keeper, mut stream) = bounded(client.lease_keep_alive(lease.0), Some(lease)).await?;
        bounded(keeper.keep_alive(), Some(lease)).await?;
        match bounded(stream.message(), Some(lease)).await? {
            Some(response) if response.ttl() > 0 => Ok(Duration::from_secs(response.ttl().unsigned_abs())),
            Some(_) => Err(StoreError::LeaseNotFound(lease.0)),
            None => Err(StoreError::Unavailable("etcd closed the lease keep-alive stream".to_owned())),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        bounded(client.lease_revoke(lease.0), Some(lease)).await.map(|_| ())
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.endpoints.join(","))
    }
}

/// The state behind one watch stream.
struct WatchState {
    inner: etcd_client::WatchStream,
    pending: VecDeque<Result<WatchEvent, StoreError>>,
    /// The first revision not yet delivered, for the `Compacted` error.
    next: i64,
    done: bool,
}

impl WatchState {
    fn absorb(&mut self, response: &etcd_client::WatchResponse) {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            self.next = revision + 1;
            self.pending.push_back(Ok(match event.event_type() {
                EventType::Put => WatchEvent::Put(convert_kv(kv)),
                // A delete event carries the key with its mod revision set to the deletion's revision.
                EventType::Delete => {
                    WatchEvent::Delete { key: String::from_utf8_lossy(kv.key()).into_owned(), revision }
                }
            }));
        }
        if response.canceled() {
            let error = if response.compact_revision() > 0 {
                StoreError::Compacted(if self.next > 0 { self.next } else { response.compact_revision() })
            } else {
                StoreError::Unavailable(format!("etcd cancelled the watch: {}", response.cancel_reason()))
            };
            self.fail(error);
        }
    }

    fn fail(&mut self, error: StoreError) {
        self.pending.push_back(Err(error));
        self.done = true;
    }
}

fn put_options(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|lease| PutOptions::new().with_lease(lease.0))
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        // flotilla writes only UTF-8 keys; anything else was written by someone else and is shown lossily.
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64, StoreError> {
    header.map(|h| h.revision()).ok_or_else(|| StoreError::Backend("etcd response without a header".to_owned()))
}

/// Runs one request under `REQUEST_TIMEOUT`; `lease` names the lease a "lease not found" answer is about.
async fn bounded<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
    lease: Option<LeaseId>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| map_err(e, lease)),
        Err(_) => Err(StoreError::Unavailable(format!("etcd did not answer within {}s", REQUEST_TIMEOUT.as_secs()))),
    }
}

fn map_err(error: etcd_client::Error, lease: Option<LeaseId>) -> StoreError {
    match error {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::NotFound if status.message().contains("lease not found") => {
                StoreError::LeaseNotFound(lease.map_or(0, |l| l.0))
            }
            // Transport failures, timeouts, leader changes and overload: the request may or may not have been
            // applied, so the caller must re-read.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::ResourceExhausted => {
                StoreError::Unavailable(format!("etcd: {}", status.message()))
            }
            _ => StoreError::Backend(format!("etcd: {}", status.message())),
        },
        etcd_client::Error::LeaseKeepAliveError(message) if message.contains("not found") => {
            StoreError::LeaseNotFound(lease.map_or(0, |l| l.0))
        }
        etcd_client::Error::TransportError(e) => StoreError::Unavailable(format!("etcd transport: {e}")),
        etcd_client::Error::IoError(e) => StoreError::Unavailable(format!("etcd i/o: {e}")),
        etcd_client::Error::InvalidUri(e) => StoreError::Backend(format!("etcd endpoint: {e}")),
        other => StoreError::Backend(format!("etcd: {other}")),
    }
}
