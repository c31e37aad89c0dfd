//! A fleet node: registers itself on a lease, runs the desired config version (verifying it and rolling back
//! by itself when it is unhealthy), owns the Slack apps it is placed on through per-app keys on its lease,
//! stands by for the others, takes over a dead node's apps when its lease expires, and refreshes the OAuth
//! credentials it is elected for.
//!
//! Fencing: every agent this node runs is cancelled the moment its lease is (or may be) lost, before the store
//! can hand the app to another node, so two nodes never use one Slack token at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_agent::Runtime;
use flotilla_auth::{KeyFile, StoredCredential, open_credential, seal_credential};
use flotilla_config::{Config, Env, StoreSecrets, parse_config};
use flotilla_router::Router;
use flotilla_slack::StatusHandle;
use flotilla_store::election::{LeaseKeeper, Ownership, release, try_acquire};
use flotilla_store::{CasOutcome, Expect, KeyValue, LeaseId, Store, StoreError, WatchEvent};
use futures::StreamExt;
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::records::{AppOwner, ChannelReport, ConfigVersion, Desired, FailedApply, NodeReport, now_ms};
use crate::{FleetError, Keys, placement};

/// How a node runs.
#[derive(Clone)]
pub struct NodeOptions {
    pub name: String,
    pub keys: Keys,
    /// Lease TTL: a dead node's apps move after this (default 10 s).
    pub ttl: Duration,
    /// How long a new config version may take to become healthy before the node rolls back.
    pub health_timeout: Duration,
    /// Where this node's gateway listens, for `fleet status`.
    pub addresses: Vec<String>,
    /// Opens the sealed credentials and secrets; without it, configs that use them fail on this node.
    pub key_file: Option<Arc<KeyFile>>,
    /// Environment for `env:` references.
    pub env: Env,
    /// Base directory for relative `file:` references.
    pub base_dir: PathBuf,
    /// How long before expiry an OAuth token is refreshed.
    pub oauth_margin: Duration,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("ttl", &self.ttl)
            .field("key_file", &self.key_file.as_ref().map(|k| k.fingerprint()))
            .finish_non_exhaustive()
    }
}

impl NodeOptions {
    pub fn new(name: &str) -> Self {
        NodeOptions {
            name: name.to_owned(),
            keys: Keys::default(),
            ttl: Duration::from_secs(10),
            health_timeout: Duration::from_secs(15),
            addresses: Vec::new(),
            key_file: None,
            env: Env::default(),
            base_dir: PathBuf::from("."),
            oauth_margin: flotilla_auth::oauth::DEFAULT_REFRESH_MARGIN,
        }
    }
}

/// What the node drives: the store, the router it reloads, the agent runtime it starts agents in.
#[derive(Clone)]
pub struct NodeHost {
    pub store: Arc<dyn Store>,
    pub router: Arc<Router>,
    pub runtime: Runtime,
    /// Sees every report this node publishes (the gateway shows it in `/status` and `/readyz`).
    pub on_report: Arc<dyn Fn(&NodeReport) + Send + Sync>,
    /// For OAuth refreshes.
    pub http: reqwest::Client,
}

/// Runs the node until `cancel`; then revokes its lease so its apps move at once.
pub async fn run(opts: NodeOptions, host: NodeHost, cancel: CancellationToken) -> Result<(), FleetError> {
    let mut node = Node::new(opts, host);
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let keeper = match LeaseKeeper::start(node.host.store.clone(), node.opts.ttl, cancel.clone()).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(event = "node_lease_failed", node = %node.opts.name, error = %e, "cannot get a lease from the store; retrying");
                node.publish_local(&format!("store unreachable: {e}"));
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let lost = keeper.lost();
        match node.register(keeper.id(), &lost, &cancel).await {
            Ok(()) => {
                tracing::info!(event = "node_registered", node = %node.opts.name, lease = keeper.id().0, store = %node.host.store.describe(), "node registered");
                // A store error (etcd restarting, a busy SQLite file) is not a lost lease: keep the apps
                // running and start watching again; only `lost` (or shutdown) ends this lease's term.
                while let Err(e) = node.serve(keeper.id(), &lost, &cancel).await {
                    tracing::warn!(event = "node_store_error", node = %node.opts.name, error = %e, "store error; watching again in 500 ms");
                    tokio::select! {
                        _ = lost.cancelled() => break,
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
            Err(e) => tracing::warn!(event = "node_register_failed", node = %node.opts.name, error = %e),
        }
        // Fencing first: whatever happened, nothing runs on a lease we may no longer hold.
        node.stop_all("lease ended");
        if cancel.is_cancelled() {
            if let Err(e) = keeper.revoke().await {
                tracing::warn!(event = "node_revoke_failed", node = %node.opts.name, error = %e);
            }
            tracing::info!(event = "node_left", node = %node.opts.name, "left the fleet; its apps move to other nodes now");
            return Ok(());
        }
        tracing::warn!(event = "node_lease_lost", node = %node.opts.name, "lease lost (store unreachable, or this host slept): stopped every slack app; registering again");
        drop(keeper);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The config this node runs.
#[derive(Clone)]
struct Running {
    version: u64,
    text: String,
    config: Arc<Config>,
}

struct Verifying {
    deadline: Instant,
    /// What to go back to.
    previous: Option<Running>,
}

struct RunningAgent {
    agent: String,
    fingerprint: u64,
    ownership: Ownership,
    cancel: CancellationToken,
    status: StatusHandle,
}

struct Node {
    opts: NodeOptions,
    host: NodeHost,
    started_at_ms: u64,
    hostname: String,
    // From the store.
    desired: Option<Desired>,
    live: BTreeSet<String>,
    owners: HashMap<String, (AppOwner, KeyValue)>,
    secrets: StoreSecrets,
    /// Sealed credentials by profile name, with their revision (for OAuth refresh CAS).
    sealed: BTreeMap<String, KeyValue>,
    secrets_problem: Option<String>,
    // Local state.
    running: Option<Running>,
    verifying: Option<Verifying>,
    failed: Option<FailedApply>,
    agents: HashMap<String, RunningAgent>,
    last_report: Option<NodeReport>,
    refresh_backoff: HashMap<String, Instant>,
}

impl Node {
    fn new(opts: NodeOptions, host: NodeHost) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Node {
            opts,
            host,
            started_at_ms: now_ms(),
            hostname,
            desired: None,
            live: BTreeSet::new(),
            owners: HashMap::new(),
            secrets: StoreSecrets::default(),
            sealed: BTreeMap::new(),
            secrets_problem: None,
            running: None,
            verifying: None,
            failed: None,
            agents: HashMap::new(),
            last_report: None,
            refresh_backoff: HashMap::new(),
        }
    }

    /// Puts the node's key on `lease`. A key left by an earlier run of this node (killed, so its lease has
    /// not expired yet) is waited out: two processes must never both act as one node.
    async fn register(
        &mut self,
        lease: LeaseId,
        lost: &CancellationToken,
        cancel: &CancellationToken,
    ) -> Result<(), FleetError> {
        let key = self.opts.keys.node(&self.opts.name);
        let mut warned = false;
        loop {
            let report = self.report(Vec::new());
            let value = serde_json::to_vec(&report)?;
            match self.host.store.compare_and_swap(&key, Expect::Absent, value, Some(lease)).await? {
                CasOutcome::Written { .. } => {
                    self.last_report = Some(report);
                    return Ok(());
                }
                CasOutcome::Conflict { current: Some(kv) } if kv.lease == Some(lease) => return Ok(()),
                CasOutcome::Conflict { current } => {
                    if !warned {
                        let other: Option<NodeReport> = current.and_then(|kv| serde_json::from_slice(&kv.value).ok());
                        let who = other.map_or_else(
                            || "another process".to_owned(),
                            |r| format!("pid {} on {}", r.pid, r.hostname),
                        );
                        tracing::warn!(event = "node_name_taken", node = %self.opts.name, holder = %who, "node name is registered by {who}; waiting for that registration to expire (at most the lease TTL)");
                        self.publish_local(&format!("waiting: node name {} is registered by {who}", self.opts.name));
                        warned = true;
                    }
                    let vacancy = flotilla_store::election::wait_for_vacancy(self.host.store.as_ref(), &key, lost);
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        r = vacancy => r?,
                    }
                    if lost.is_cancelled() {
                        return Err(FleetError::Store(StoreError::LeaseNotFound(lease.0)));
                    }
                }
            }
        }
    }

    /// Watches the fleet's keys and reconciles until the lease is lost or the node is cancelled.
    async fn serve(
        &mut self,
        lease: LeaseId,
        lost: &CancellationToken,
        cancel: &CancellationToken,
    ) -> Result<(), FleetError> {
        let store = self.host.store.clone();
        let root = self.opts.keys.root();
        let mut from = self.refresh_from_store(true).await?;
        let mut watch = store.watch(&root, from + 1).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.reconcile(lease, lost).await;
            let mut store_changed = false;
            let mut secrets_changed = false;
            tokio::select! {
                biased;
                _ = lost.cancelled() => return Ok(()),
                _ = cancel.cancelled() => return Ok(()),
                ev = watch.next() => {
                    let mut next = ev;
                    // Take every event already waiting, then reconcile once.
                    loop {
                        match next {
                            Some(Ok(ev)) => {
                                let (key, rev) = match &ev {
                                    WatchEvent::Put(kv) => (kv.key.as_str(), kv.mod_revision),
                                    WatchEvent::Delete { key, revision } => (key.as_str(), *revision),
                                };
                                from = from.max(rev);
                                if self.opts.keys.is_control_key(key) {
                                    store_changed = true;
                                    secrets_changed |= key.starts_with(&self.opts.keys.auth_profiles()) || key.starts_with(&self.opts.keys.secrets());
                                }
                            }
                            Some(Err(e)) => {
                                tracing::debug!(event = "watch_restart", node = %self.opts.name, error = %e);
                                from = self.refresh_from_store(true).await?;
                                watch = store.watch(&root, from + 1).await?;
                                break;
                            }
                            None => {
                                from = self.refresh_from_store(true).await?;
                                watch = store.watch(&root, from + 1).await?;
                                break;
                            }
                        }
                        match futures::FutureExt::now_or_never(watch.next()) {
                            Some(n) => next = n,
                            None => break,
                        }
                    }
                }
                _ = tick.tick() => {}
            }
            if store_changed {
                from = from.max(self.refresh_from_store(secrets_changed).await?);
            }
        }
    }

    /// Reads the desired version, live nodes, app owners (and, when asked, the sealed secrets). Returns the
    /// store revision read at.
    async fn refresh_from_store(&mut self, with_secrets: bool) -> Result<i64, FleetError> {
        let store = self.host.store.as_ref();
        let keys = &self.opts.keys;
        let desired = store.get(&keys.desired()).await?;
        self.desired = desired.and_then(|kv| serde_json::from_slice(&kv.value).ok());
        let nodes = store.list(&keys.nodes()).await?;
        self.live =
            nodes.kvs.iter().filter_map(|kv| keys.name_after(&keys.nodes(), &kv.key).map(str::to_owned)).collect();
        let owners = store.list(&keys.slack_owners()).await?;
        self.owners = owners
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let app = keys.name_after(&keys.slack_owners(), &kv.key)?.to_owned();
                let owner: AppOwner = serde_json::from_slice(&kv.value).ok()?;
                Some((app, (owner, kv)))
            })
            .collect();
        if with_secrets {
            let before = secrets_fingerprint(&self.secrets);
            match crate::secrets::load(store, keys, self.opts.key_file.as_deref()).await {
                Ok(s) => {
                    self.secrets = s;
                    self.secrets_problem = None;
                }
                Err(e) => {
                    tracing::error!(event = "secrets_unreadable", node = %self.opts.name, error = %e, "cannot open the fleet's credentials");
                    self.secrets_problem = Some(e.to_string());
                }
            }
            self.sealed = store
                .list(&keys.auth_profiles())
                .await?
                .kvs
                .into_iter()
                .filter_map(|kv| Some((keys.name_after(&keys.auth_profiles(), &kv.key)?.to_owned(), kv)))
                .collect();
            if before != secrets_fingerprint(&self.secrets)
                && let Some(running) = self.running.clone()
            {
                // New credentials (an `auth add`, an OAuth refresh): same version, fresh secrets.
                match self.parse(&running.text) {
                    Ok(config) => {
                        let config = Arc::new(config);
                        self.host.router.reload(config.clone());
                        self.running = Some(Running { config, ..running });
                        tracing::info!(event = "credentials_reloaded", node = %self.opts.name, "credentials changed in the store; reloaded");
                    }
                    Err(e) => tracing::warn!(event = "credentials_reload_failed", node = %self.opts.name, error = %e),
                }
            }
        }
        Ok(nodes.revision)
    }

    fn parse(&self, text: &str) -> Result<Config, String> {
        let env = self.opts.env.clone().with_store(self.secrets.clone());
        let config = parse_config(text, &env, &self.opts.base_dir).map_err(|e| summarize(&e.to_string()))?;
        flotilla_agent::check_apps(&config).map_err(|e| e.to_string())?;
        Ok(config)
    }

    async fn reconcile(&mut self, lease: LeaseId, lost: &CancellationToken) {
        if lost.is_cancelled() {
            return;
        }
        self.follow_desired().await;
        self.place_agents(lease, lost).await;
        self.verify();
        self.refresh_oauth(lease).await;
        self.publish(lease).await;
    }

    /// Applies the desired version when it targets this node and differs from what runs.
    async fn follow_desired(&mut self) {
        let Some(desired) = self.desired.clone() else { return };
        if !desired.targets(&self.opts.name) {
            return;
        }
        if self.running.as_ref().is_some_and(|r| r.version == desired.version) {
            return;
        }
        if self.failed.as_ref().is_some_and(|f| f.version == desired.version) {
            return;
        }
        let stored = match self.host.store.get(&self.opts.keys.config_version(desired.version)).await {
            Ok(Some(kv)) => serde_json::from_slice::<ConfigVersion>(&kv.value).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(event = "config_read_failed", node = %self.opts.name, error = %e);
                return;
            }
        };
        let Some(stored) = stored else {
            self.fail(desired.version, "the desired version is not in the store".to_owned(), None);
            return;
        };
        tracing::info!(event = "config_applying", node = %self.opts.name, version = desired.version, "applying config v{}", desired.version);
        match self.parse(&stored.text) {
            Err(reason) => {
                let back = self.running.as_ref().map(|r| r.version);
                self.fail(desired.version, reason, back);
            }
            Ok(config) => {
                let config = Arc::new(config);
                self.host.router.reload(config.clone());
                let previous = match self.verifying.take() {
                    // Replacing a version that was still being verified: go back to what was good before it.
                    Some(v) => v.previous,
                    None => self.running.clone(),
                };
                self.running = Some(Running { version: desired.version, text: stored.text, config });
                self.verifying = Some(Verifying { deadline: Instant::now() + self.opts.health_timeout, previous });
            }
        }
    }

    fn fail(&mut self, version: u64, reason: String, rolled_back_to: Option<u64>) {
        tracing::error!(event = "config_rejected", node = %self.opts.name, version, reason = %reason, rolled_back_to = ?rolled_back_to, "config v{version} rejected on this node");
        self.failed = Some(FailedApply { version, reason, rolled_back_to });
    }

    /// Starts the agents this node owns, takes vacant apps placed on it, stops what it must not run.
    async fn place_agents(&mut self, lease: LeaseId, lost: &CancellationToken) {
        let Some(running) = self.running.clone() else { return };
        let config = &running.config;
        let store = self.host.store.clone();
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for agent in &config.agents {
            let Some(app) = agent.slack.as_ref().and_then(|a| config.slack.get(a)) else { continue };
            wanted.insert(app.name.clone());
            let fp = fingerprint(agent, app);
            let owner = self.owners.get(&app.name).map(|(o, kv)| (o.node.clone(), kv.lease));
            match owner {
                Some((node, Some(l))) if node == self.opts.name && l == lease => {
                    // Ours. A preferred node that is live gets it back.
                    if let Some(pref) = agent.node.as_deref()
                        && pref != self.opts.name
                        && self.live.contains(pref)
                    {
                        self.stop_and_release(&app.name, "its preferred node is live").await;
                        continue;
                    }
                    let restart = self.agents.get(&app.name).is_none_or(|r| r.fingerprint != fp);
                    if restart {
                        let ownership = match self.agents.remove(&app.name) {
                            Some(r) => {
                                r.cancel.cancel();
                                r.ownership
                            }
                            None => match self.owners.get(&app.name) {
                                Some((_, kv)) => {
                                    Ownership { key: kv.key.clone(), create_revision: kv.create_revision, lease }
                                }
                                None => continue,
                            },
                        };
                        self.start_agent(agent, app, fp, ownership, lost);
                    }
                }
                Some(_) => {
                    // Someone else holds it (or a key from an earlier lease of ours that has not expired).
                    if let Some(r) = self.agents.remove(&app.name) {
                        tracing::warn!(event = "app_fenced", node = %self.opts.name, app = %app.name, "another node holds this app now; stopped it here");
                        r.cancel.cancel();
                    }
                }
                None => {
                    if let Some(r) = self.agents.remove(&app.name) {
                        // Our key vanished while we ran it: fenced.
                        r.cancel.cancel();
                    }
                    if placement::place(&agent.id, agent.node.as_deref(), &self.live) != Some(self.opts.name.as_str()) {
                        continue;
                    }
                    let holder = AppOwner { node: self.opts.name.clone(), agent: agent.id.clone(), since_ms: now_ms() };
                    let Ok(value) = serde_json::to_vec(&holder) else { continue };
                    let key = self.opts.keys.slack_owner(&app.name);
                    match try_acquire(store.as_ref(), &key, &value, lease).await {
                        Ok(Some(ownership)) => {
                            tracing::info!(event = "app_acquired", node = %self.opts.name, app = %app.name, agent = %agent.id, fencing = ownership.create_revision, "took slack app {}", app.name);
                            if let Ok(Some(kv)) = store.get(&key).await {
                                self.owners.insert(app.name.clone(), (holder, kv));
                            }
                            self.start_agent(agent, app, fp, ownership, lost);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(event = "app_acquire_failed", node = %self.opts.name, app = %app.name, error = %e)
                        }
                    }
                }
            }
        }
        let gone: Vec<String> = self.agents.keys().filter(|a| !wanted.contains(*a)).cloned().collect();
        for app in gone {
            self.stop_and_release(&app, "no longer in the config").await;
        }
    }

    fn start_agent(
        &mut self,
        agent: &flotilla_config::Agent,
        app: &flotilla_config::SlackApp,
        fingerprint: u64,
        ownership: Ownership,
        lost: &CancellationToken,
    ) {
        // A child of the lease's token: losing the lease stops the agent without waiting for this loop.
        let cancel = lost.child_token();
        let status = self.host.runtime.start_agent(agent, app, cancel.clone());
        self.agents
            .insert(app.name.clone(), RunningAgent { agent: agent.id.clone(), fingerprint, ownership, cancel, status });
    }

    async fn stop_and_release(&mut self, app: &str, why: &str) {
        if let Some(r) = self.agents.remove(app) {
            r.cancel.cancel();
            tracing::info!(event = "app_released", node = %self.opts.name, app = %app, reason = %why);
            if let Err(e) = release(self.host.store.as_ref(), &r.ownership).await {
                tracing::warn!(event = "app_release_failed", node = %self.opts.name, app = %app, error = %e);
            }
            self.owners.remove(app);
        }
    }

    fn stop_all(&mut self, why: &str) {
        for (app, r) in self.agents.drain() {
            tracing::info!(event = "app_stopped", node = %self.opts.name, app = %app, reason = %why);
            r.cancel.cancel();
        }
        self.owners.clear();
    }

    /// Problems of the apps this node owns (empty when all are connected).
    fn channel_problems(&self) -> (Vec<String>, bool) {
        let (problems, _, hard) = self.channel_health();
        (problems, hard)
    }

    /// Problems, warnings, and whether a problem is final (a disabled channel). `num_connections > 1` in the
    /// last `hello` is a warning, not a problem: inside the fleet the app's lease already rules out a second
    /// owner, and the count is only refreshed at the next connect, so a sleeping node's ghost socket (closed
    /// since) would otherwise keep the new owner unhealthy.
    fn channel_health(&self) -> (Vec<String>, Vec<String>, bool) {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut hard = false;
        for (app, r) in &self.agents {
            let mut s = r.status.snapshot();
            if s.duplicate_gateway {
                warnings.push(format!(
                    "slack app {app}: Slack reported {} connections for this token when this node connected (a gateway outside the fleet, or a sleeping node's old socket)",
                    s.num_connections
                ));
                s.duplicate_gateway = false;
            }
            if let Some(p) = s.not_ready(Duration::from_secs(10)) {
                hard |= matches!(s.state, flotilla_slack::channel::State::Disabled);
                problems.push(format!("slack app {app}: {p}"));
            }
        }
        problems.sort();
        warnings.sort();
        (problems, warnings, hard)
    }

    /// Finishes verifying a new version: healthy → it is the new good one; a disabled channel or the deadline
    /// → roll back to the previous version.
    fn verify(&mut self) {
        let Some(v) = &self.verifying else { return };
        let (problems, hard) = self.channel_problems();
        if problems.is_empty() {
            if let Some(r) = &self.running {
                tracing::info!(event = "config_verified", node = %self.opts.name, version = r.version, "config v{} is healthy here", r.version);
            }
            self.verifying = None;
            return;
        }
        if !hard && Instant::now() < v.deadline {
            return;
        }
        let Some(bad) = self.running.clone() else { return };
        let previous = self.verifying.take().and_then(|v| v.previous);
        let reason = problems.join("; ");
        match previous {
            Some(prev) => {
                self.fail(bad.version, reason, Some(prev.version));
                self.host.router.reload(prev.config.clone());
                self.running = Some(prev);
            }
            None => self.fail(bad.version, reason, None),
        }
    }

    /// Refreshes the OAuth credentials this node is elected for, shortly before they expire.
    async fn refresh_oauth(&mut self, lease: LeaseId) {
        let Some(key_file) = self.opts.key_file.clone() else { return };
        let store = self.host.store.clone();
        let now = SystemTime::now();
        for (name, kv) in self.sealed.clone() {
            if self.refresh_backoff.get(&name).is_some_and(|until| Instant::now() < *until) {
                continue;
            }
            let Ok(StoredCredential::OAuth(cached)) = open_credential(&key_file, &kv.value) else { continue };
            if !flotilla_auth::needs_refresh(cached.expires_at, now, self.opts.oauth_margin) {
                continue;
            }
            let office = self.opts.keys.oauth_refresher(&name);
            match try_acquire(store.as_ref(), &office, self.opts.name.as_bytes(), lease).await {
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(event = "oauth_election_failed", node = %self.opts.name, profile = %name, error = %e);
                    continue;
                }
            }
            // The cached copy may be older than the store's (this node's own last refresh, whose watch
            // event has not arrived yet): refresh tokens are single-use, so decide on the stored one.
            let kv = match store.get(&kv.key).await {
                Ok(Some(fresh)) => fresh,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(event = "oauth_read_failed", node = %self.opts.name, profile = %name, error = %e);
                    continue;
                }
            };
            self.sealed.insert(name.clone(), kv.clone());
            let Ok(StoredCredential::OAuth(mut cred)) = open_credential(&key_file, &kv.value) else { continue };
            if !flotilla_auth::needs_refresh(cred.expires_at, now, self.opts.oauth_margin) {
                continue;
            }
            match cred.refresh(&self.host.http).await {
                Ok(tokens) => {
                    cred.apply(tokens);
                    let expires = cred.expires_at;
                    let Ok(sealed) = seal_credential(&key_file, &StoredCredential::OAuth(cred)) else { continue };
                    match store
                        .compare_and_swap(&kv.key, Expect::ModRevision(kv.mod_revision), sealed.clone(), None)
                        .await
                    {
                        Ok(CasOutcome::Written { revision }) => {
                            let published = KeyValue { value: sealed, mod_revision: revision, ..kv.clone() };
                            self.sealed.insert(name.clone(), published);
                            tracing::info!(event = "oauth_refreshed", node = %self.opts.name, profile = %name, expires_at = %flotilla_auth::credential::format_expiry(expires), "refreshed OAuth profile {name} and published the new token");
                        }
                        Ok(CasOutcome::Conflict { .. }) => {
                            tracing::error!(event = "oauth_refresh_conflict", node = %self.opts.name, profile = %name, "the profile changed while refreshing (re-added by a human?); the refreshed token was not published");
                        }
                        Err(e) => {
                            tracing::error!(event = "oauth_publish_failed", node = %self.opts.name, profile = %name, error = %e, "refreshed but could not publish: the new refresh token may be lost; re-add the profile if requests fail")
                        }
                    }
                }
                Err(e) => {
                    let wait = if e.needs_login() {
                        Duration::from_secs(600)
                    } else {
                        e.retry_after().unwrap_or(Duration::from_secs(5))
                    };
                    tracing::error!(event = "oauth_refresh_failed", node = %self.opts.name, profile = %name, error = %e, retry_in_s = wait.as_secs(), "cannot refresh OAuth profile {name}");
                    self.refresh_backoff.insert(name.clone(), Instant::now() + wait);
                }
            }
        }
    }

    fn report(&self, extra_problems: Vec<String>) -> NodeReport {
        let (mut problems, warnings, _) = self.channel_health();
        problems.extend(extra_problems);
        if let Some(p) = &self.secrets_problem {
            problems.push(p.clone());
        }
        if self.running.is_none() {
            problems.push("no config applied yet".to_owned());
        }
        let mut channels = BTreeMap::new();
        if let Some(r) = &self.running {
            for agent in &r.config.agents {
                let Some(app) = &agent.slack else { continue };
                let report = match self.agents.get(app) {
                    Some(ra) => {
                        let mut s = ra.status.snapshot();
                        s.duplicate_gateway = false;
                        ChannelReport {
                            agent: ra.agent.clone(),
                            role: "owner".to_owned(),
                            state: s.not_ready(Duration::from_secs(10)).unwrap_or_else(|| "connected".to_owned()),
                            owner: Some(self.opts.name.clone()),
                        }
                    }
                    None => ChannelReport {
                        agent: agent.id.clone(),
                        role: "standby".to_owned(),
                        state: "standby".to_owned(),
                        owner: self.owners.get(app).map(|(o, _)| o.node.clone()),
                    },
                };
                channels.insert(app.clone(), report);
            }
        }
        let breakers = self
            .host
            .router
            .health()
            .snapshot()
            .into_iter()
            .filter(|b| b.state != "closed")
            .map(|b| (format!("{}/{}/{}", b.provider, b.model, b.credential), b.state.to_owned()))
            .collect();
        NodeReport {
            name: self.opts.name.clone(),
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            addresses: self.opts.addresses.clone(),
            started_at_ms: self.started_at_ms,
            config_version: self.running.as_ref().map(|r| r.version),
            verifying: self.verifying.is_some(),
            failed: self.failed.clone(),
            healthy: problems.is_empty() && self.verifying.is_none(),
            problems,
            warnings,
            channels,
            breakers,
            updated_at_ms: 0,
        }
    }

    /// Publishes the report when it changed.
    async fn publish(&mut self, lease: LeaseId) {
        let report = self.report(Vec::new());
        (self.host.on_report)(&report);
        if self.last_report.as_ref() == Some(&report) {
            return;
        }
        let stamped = NodeReport { updated_at_ms: now_ms(), ..report.clone() };
        let Ok(value) = serde_json::to_vec(&stamped) else { return };
        match self.host.store.put(&self.opts.keys.node(&self.opts.name), value, Some(lease)).await {
            Ok(_) => self.last_report = Some(report),
            Err(e) => tracing::warn!(event = "node_report_failed", node = %self.opts.name, error = %e),
        }
    }

    /// Shows a problem locally while the node cannot publish to the store.
    fn publish_local(&self, problem: &str) {
        (self.host.on_report)(&self.report(vec![problem.to_owned()]));
    }
}

/// What makes a running agent stale: its identity, prompt and Slack app (tokens included, hashed).
fn fingerprint(agent: &flotilla_config::Agent, app: &flotilla_config::SlackApp) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    agent.id.hash(&mut h);
    agent.system_prompt.hash(&mut h);
    app.name.hash(&mut h);
    app.api_base.hash(&mut h);
    for t in [&app.app_secret, &app.bot_secret] {
        match t {
            Ok(s) => s.expose_secret().hash(&mut h),
            Err(e) => e.hash(&mut h),
        }
    }
    h.finish()
}

fn secrets_fingerprint(s: &StoreSecrets) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in &s.secrets {
        k.hash(&mut h);
        v.expose_secret().hash(&mut h);
    }
    for (k, v) in &s.auth {
        k.hash(&mut h);
        v.provider.hash(&mut h);
        v.secret.expose_secret().hash(&mut h);
    }
    h.finish()
}

/// The first lines of a multi-error message, for a report that fits a status line.
fn summarize(errors: &str) -> String {
    let lines: Vec<&str> = errors.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 3 {
        return lines.join("; ");
    }
    format!("{}; and {} more", lines[..3].join("; "), lines.len() - 3)
}
