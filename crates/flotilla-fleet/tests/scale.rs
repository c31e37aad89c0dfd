//! Fleet scale: many in-process nodes (each with its own router, journal and lease) against one real etcd, and
//! on the embedded SQLite store; `apply` must bring every node to the new version and report it. Also: a config
//! that does not parse on the nodes is rejected by every node, `apply` reports them and the fleet goes back.
//!
//! 9 nodes by default (CI); `FLOTILLA_LONG_TESTS=1` runs 100 nodes (`FLOTILLA_SCALE_NODES` overrides).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_config::{Env, parse_config};
use flotilla_fleet::ops::{self, ApplyOptions};
use flotilla_fleet::{Keys, NodeHost, NodeOptions};
use flotilla_journal::{Journal, JournalOptions};
use flotilla_router::Router;
use flotilla_store::Store;
use flotilla_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn config(fallback: bool, broken_env: bool) -> String {
    let fallbacks = if fallback { r#"["openai/gpt-5.3-codex"]"# } else { "[]" };
    let key = if broken_env { "env:FLOTILLA_SCALE_TEST_UNSET_VAR" } else { "env:HOME" };
    format!(
        r#"
[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = {fallbacks}

[[agents.list]]
id = "helper"

[providers.anthropic]
api = "anthropic"
base_url = "http://127.0.0.1:9"

[providers.openai]
api = "openai"
base_url = "http://127.0.0.1:9"
auth = ["oai"]

[auth.oai]
provider = "openai"
type = "api-key"
key = "{key}"
"#
    )
}

async fn start_nodes(
    store: &Arc<dyn Store>,
    keys: &Keys,
    n: usize,
    dir: &std::path::Path,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    let env = Env::from_pairs([("HOME", "/home/test")]);
    for i in 0..n {
        let empty = Arc::new(parse_config("", &env, dir).expect("empty config"));
        let router = Arc::new(Router::new(empty, Arc::new(Metrics::new())).expect("router"));
        let journal = Journal::open(JournalOptions::new(dir.join(format!("n{i}.sqlite")))).await.expect("journal");
        let runtime = flotilla_agent::Runtime::new(
            router.clone(),
            journal,
            flotilla_agent::RuntimeConfig::default(),
            tracker.clone(),
        )
        .expect("runtime");
        let mut opts = NodeOptions::new(&format!("node-{i:03}"));
        opts.keys = keys.clone();
        opts.ttl = Duration::from_secs(5);
        opts.env = env.clone();
        let host = NodeHost {
            store: store.clone(),
            router,
            runtime,
            on_report: Arc::new(|_| {}),
            http: reqwest::Client::new(),
        };
        tracker.spawn(flotilla_fleet::node::run(opts, host, cancel.clone()));
    }
}

async fn wait_registered(store: &dyn Store, keys: &Keys, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = ops::status(store, keys).await.expect("status");
        if s.nodes.len() == n {
            return;
        }
        assert!(Instant::now() < deadline, "only {} of {n} nodes registered", s.nodes.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scale_run(store: Arc<dyn Store>, backend: &str) {
    let long = std::env::var("FLOTILLA_LONG_TESTS").is_ok_and(|v| v == "1");
    let n: usize =
        std::env::var("FLOTILLA_SCALE_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(if long { 100 } else { 9 });
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::new("/scale-test");
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    start_nodes(&store, &keys, n, dir.path(), &cancel, &tracker).await;
    wait_registered(store.as_ref(), &keys, n).await;
    let opts = ApplyOptions {
        canary: None,
        timeout: Duration::from_secs(60),
        env: Env::from_pairs([("HOME", "/home/test")]),
        base_dir: dir.path().to_path_buf(),
        key_file: None,
        note: "scale test".to_owned(),
    };

    // v1, then the incident's fix as v2: every node converges on each.
    let r1 = ops::apply(store.as_ref(), &keys, &config(false, false), &opts, |_| {}).await.expect("apply v1");
    assert!(r1.ok(), "v1: {r1:?}");
    let mut seen = Vec::new();
    let r2 = ops::apply(store.as_ref(), &keys, &config(true, false), &opts, |p| seen.push(p.converged))
        .await
        .expect("apply v2");
    assert!(r2.ok(), "v2: {r2:?}");
    assert_eq!((r2.version, r2.converged.len(), r2.nodes), (2, n, n));
    assert_eq!(seen.last(), Some(&n), "progress ends at {n}/{n}");
    eprintln!("fleet scale ({backend}): apply to {n} nodes converged and verified in {} ms", r2.elapsed_ms);

    // v3 does not resolve on the nodes (an unset variable): every node rejects it and keeps v2; apply fails
    // and puts the fleet back on v2. (Validation here passes because the operator's env differs.)
    let lenient =
        ApplyOptions { env: Env::from_pairs([("HOME", "/h"), ("FLOTILLA_SCALE_TEST_UNSET_VAR", "x")]), ..opts.clone() };
    let r3 = ops::apply(store.as_ref(), &keys, &config(true, true), &lenient, |_| {}).await.expect("apply v3");
    assert!(!r3.ok(), "a config no node can run must not converge: {r3:?}");
    assert!(!r3.failed.is_empty());
    assert!(
        r3.failed
            .values()
            .all(|why| why.contains("FLOTILLA_SCALE_TEST_UNSET_VAR") && why.contains("rolled back to v2")),
        "{r3:?}"
    );
    assert_eq!(r3.rolled_back_to, Some(2));
    let s = ops::status(store.as_ref(), &keys).await.expect("status");
    assert_eq!(s.desired.as_ref().map(|d| d.version), Some(2));
    assert!(s.nodes.iter().all(|n| n.config_version == Some(2)), "a node left v2");

    // A canary apply of a config the canary cannot run: only the canary tries it; the rest never see it.
    let canary = ApplyOptions { canary: Some(1), ..lenient.clone() };
    let r4 = ops::apply(store.as_ref(), &keys, &config(true, true), &canary, |_| {}).await.expect("apply v4");
    assert!(!r4.ok());
    assert_eq!((r4.nodes, r4.failed.len(), r4.rolled_back_to), (1, 1, Some(2)), "{r4:?}");
    let s = ops::status(store.as_ref(), &keys).await.expect("status");
    let tried: Vec<&str> = s
        .nodes
        .iter()
        .filter(|n| n.failed.as_ref().is_some_and(|f| f.version == r4.version))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(tried.len(), 1, "only the canary may try the new version: {tried:?}");

    // An explicit rollback to v1 converges too.
    let r = ops::rollback(store.as_ref(), &keys, Some(1), Duration::from_secs(60), |_| {}).await.expect("rollback");
    assert!(r.ok() && r.converged.len() == n, "{r:?}");

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    // Graceful leave revokes the leases: the node keys are gone at once.
    assert!(ops::status(store.as_ref(), &keys).await.expect("status").nodes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_every_node_on_etcd() {
    let etcd = flotilla_store::testing::EtcdServer::start().await.expect("etcd (install Debian's etcd-server)");
    let store = flotilla_store::open(&etcd.url()).await.expect("etcd store");
    scale_run(store, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_every_node_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        flotilla_store::open(&format!("sqlite:{}", dir.path().join("store.sqlite").display())).await.expect("sqlite");
    scale_run(store, "sqlite").await;
}
