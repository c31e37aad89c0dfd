//! The fleet end to end: a real etcd, three real gateway processes and the simulators. Credentials go into
//! the store with `flotilla auth`; `flotilla fleet apply` brings 3/3 nodes to a version (and a second
//! version hot, without reconnecting unchanged channels); simulated users talk to three agents while the
//! node owning one of them is killed with SIGKILL; its app moves within the lease TTL and no message is
//! lost or doubled; the node comes back as a standby; a config that breaks a channel is rolled back.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flotilla_sim::SimConfig;
use flotilla_sim::slack::{AppSpec, SlackSimConfig};
use serde_json::Value;

const APPS: [(&str, &str, &str); 3] = [
    ("a1", "xapp-1-A1-1-fleet", "xoxb-a1-fleet"),
    ("a2", "xapp-1-A2-1-fleet", "xoxb-a2-fleet"),
    ("a3", "xapp-1-A3-1-fleet", "xoxb-a3-fleet"),
];

struct Node {
    name: String,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_flotilla"))
                .args(&self.args)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn node"),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn flotilla(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run flotilla")
}

fn config(ant: &str, oai: &str, slack_api: &str, fallback: bool, bad_bot_secret: bool) -> String {
    let fallbacks = if fallback { r#"fallbacks = ["openai/gpt-5.3-codex"]"# } else { "fallbacks = []" };
    let mut out = format!(
        r#"
[router]
overload_cooldown = "2s"
ttfb_timeout = "3s"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
{fallbacks}

[providers.anthropic]
api = "anthropic"
base_url = "{ant}"
auth = ["ant-oauth", "ant-key"]

[providers.openai]
api = "openai"
base_url = "{oai}"
auth = ["oai-key"]
"#
    );
    for (i, (app, ..)) in APPS.iter().enumerate() {
        // a3 prefers n2; the others are spread by the fleet.
        let node = if *app == "a3" { r#"node = "n2""# } else { "" };
        let bot = if bad_bot_secret && i == 0 { "slack/bad/bot".to_owned() } else { format!("slack/{app}/bot") };
        out.push_str(&format!(
            r#"
[[agents.list]]
id = "agent-{app}"
slack = "{app}"
{node}

[slack.{app}]
app_token = "secret:slack/{app}/app"
bot_token = "secret:{bot}"
api_base = "{slack_api}"
"#
        ));
    }
    out
}

fn status(store: &str, key: &Path) -> Value {
    let out = flotilla(&["fleet", "status", "--json", "--store", store, "--key-file", &key.display().to_string()], &[]);
    assert!(out.status.success(), "fleet status failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn owner_of(status: &Value, app: &str) -> Option<String> {
    status["owners"][app]["node"].as_str().map(str::to_owned)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_apply_take_over_and_roll_back() {
    // Short leases keep CI quick; FLOTILLA_FLEET_TTL_SECS=10 measures the default.
    let ttl_secs: u64 = std::env::var("FLOTILLA_FLEET_TTL_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = rt.block_on(flotilla_store::testing::EtcdServer::start()).expect("etcd (install Debian's etcd-server)");
    let store = etcd.url();
    let mut scfg = SlackSimConfig::default();
    for (name, a, b) in APPS {
        scfg = scfg.app(AppSpec::new(name).tokens(a, b));
    }
    let slack = rt.block_on(flotilla_sim::slack::spawn(scfg)).expect("slack sim");
    let ant = rt.block_on(flotilla_sim::spawn(SimConfig::anthropic())).expect("sim");
    let oai = rt.block_on(flotilla_sim::spawn(SimConfig::openai())).expect("sim");
    let h = slack.handle().clone();

    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("fleet.key");
    let key_s = key.display().to_string();
    let common = ["--store", store.as_str(), "--key-file", key_s.as_str()];

    // Credentials into the store, sealed with the fleet key.
    let out = flotilla(&[&["auth", "keygen"], &common[..]].concat(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, provider, var) in [("ant-key", "anthropic", "ANT"), ("oai-key", "openai", "OAI")] {
        let args = [&["auth", "add", name, "--provider", provider, "--api-key-env", var], &common[..]].concat();
        let out = flotilla(&args, &[("ANT", "sk-ant-FLEET-SECRET"), ("OAI", "sk-oai-FLEET-SECRET")]);
        assert!(out.status.success(), "auth add: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (app, a, b) in APPS {
        secrets.push((format!("slack/{app}/app"), a.to_owned()));
        secrets.push((format!("slack/{app}/bot"), b.to_owned()));
    }
    secrets.push(("slack/bad/bot".to_owned(), "xoxb-revoked-token".to_owned()));
    for (path, value) in &secrets {
        let out = flotilla(&[&["auth", "secret", path, "--from-env", "V"], &common[..]].concat(), &[("V", value)]);
        assert!(out.status.success(), "auth secret: {}", String::from_utf8_lossy(&out.stderr));
    }
    // An OAuth profile close to expiry: exactly one node (the elected refresher) must refresh it; the
    // simulator's refresh tokens are single-use, so a second refresher would show up as a reused token.
    ant.handle().seed_refresh_token("rt-fleet-1");
    let oauth_file = dir.path().join("oauth.json");
    let expires_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 60_000;
    std::fs::write(
        &oauth_file,
        format!(r#"{{"access":"at-fleet-OAUTH-SECRET","refresh":"rt-fleet-1","expires":{expires_ms}}}"#),
    )
    .unwrap();
    let token_url = format!("{}/v1/oauth/token", ant.url());
    let args = [
        &["auth", "add", "ant-oauth", "--provider", "anthropic", "--oauth-file"],
        &[oauth_file.to_str().unwrap(), "--token-url", token_url.as_str()][..],
        &common[..],
    ]
    .concat();
    let out = flotilla(&args, &[]);
    assert!(out.status.success(), "auth add oauth: {}", String::from_utf8_lossy(&out.stderr));
    // A second key file cannot add to a store sealed with the fleet's key.
    let other_key = dir.path().join("other.key").display().to_string();
    let out = flotilla(
        &["auth", "secret", "x/y", "--from-env", "V", "--store", &store, "--key-file", &other_key],
        &[("V", "v")],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not the fleet's"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flotilla(&[&["auth", "list"], &common[..]].concat(), &[]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("ant-key") && listed.contains("api-key for anthropic"), "{listed}");
    assert!(!listed.contains("FLEET-SECRET") && !listed.contains("xoxb-a1"), "auth list shows a value: {listed}");

    // Three nodes.
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let name = format!("n{i}");
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let data = dir.path().join(&name);
            let args = [
                "gateway",
                "--store",
                &store,
                "--node",
                &name,
                "--key-file",
                &key_s,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                &data.display().to_string(),
                "--log-file",
                &dir.path().join(format!("{name}.json.log")).display().to_string(),
                "--lease-ttl",
                &ttl_secs.to_string(),
                "--health-timeout",
                "10",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            Node { name: name.clone(), child: None, args, log: dir.path().join(format!("{name}.stderr")) }
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    wait_for("3 registered nodes", Duration::from_secs(20), || {
        status(&store, &key)["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });

    // v1: no fallback. Every node converges; each app has exactly one owner.
    let cfg1 = dir.path().join("v1.toml");
    std::fs::write(&cfg1, config(&ant.url(), &oai.url(), &slack.api_url(), false, false)).unwrap();
    let out =
        flotilla(&[&["fleet", "apply", &cfg1.display().to_string(), "--timeout", "30"], &common[..]].concat(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "apply v1 failed: {err}");
    assert!(err.contains("3/3 nodes on config v1"), "{err}");
    for (app, ..) in APPS {
        assert!(rt.block_on(h.wait_for_connections(app, 1, Duration::from_secs(10))), "{app} not connected");
        assert_eq!(h.connection_count(app), 1, "two gateways on one token for {app}");
    }
    wait_for("the OAuth profile to be refreshed", Duration::from_secs(20), || {
        ant.handle().oauth_stats().refreshed >= 1
    });
    let s = status(&store, &key);
    let owners: Vec<String> = APPS.iter().map(|(app, ..)| owner_of(&s, app).expect("owner")).collect();
    assert_eq!(owners[2], "n2", "a3 runs on its preferred node");
    let conns_before: Vec<u64> = APPS.iter().map(|(app, ..)| h.connections(app)[0].id).collect();

    // v2: the incident's fix (an openai fallback for every agent), with a canary: hot, no reconnect.
    let cfg2 = dir.path().join("v2.toml");
    std::fs::write(&cfg2, config(&ant.url(), &oai.url(), &slack.api_url(), true, false)).unwrap();
    let started = Instant::now();
    let out = flotilla(
        &[&["fleet", "apply", &cfg2.display().to_string(), "--canary", "1", "--json"], &common[..]].concat(),
        &[],
    );
    let apply_ms = started.elapsed().as_millis();
    assert!(out.status.success(), "apply v2 failed: {}", String::from_utf8_lossy(&out.stderr));
    let rollout: Value = serde_json::from_slice(&out.stdout).expect("apply json");
    assert_eq!(rollout["version"], 2);
    assert_eq!(rollout["converged"].as_array().map(Vec::len), Some(3), "{rollout}");
    let conns_after: Vec<u64> = APPS.iter().map(|(app, ..)| h.connections(app)[0].id).collect();
    assert_eq!(conns_before, conns_after, "an unchanged channel reconnected on apply");
    eprintln!(
        "fleet: apply v2 (canary 1, then all 3 nodes) converged in {apply_ms} ms (wall time of the `fleet apply` process)"
    );

    // Users talk to all three agents while the owner of a1 is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let dms: Vec<String> = APPS.iter().map(|(app, ..)| h.dm_channel("alice", app).expect("dm")).collect();
    let talker = {
        let (h, stop, sent) = (h.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let dm = &dms[(i as usize) % dms.len()];
                h.post_user_message(dm, "alice", &format!("hello {i}"), None).expect("post");
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(60));
            }
        })
    };
    // A conversation with a1 before the kill: its thread must continue on the new owner.
    let a1_dm = h.dm_channel("bob", "a1").expect("dm");
    let first = h.post_user_message(&a1_dm, "bob", "remember the number 4242", None).expect("post");
    wait_for("a1's first answer", Duration::from_secs(15), || {
        h.messages().iter().any(|m| m.thread_ts.as_deref() == Some(first.ts.as_str()) && m.ts != first.ts)
    });
    std::thread::sleep(Duration::from_secs(2));
    let victim = owners[0].clone();
    let vi = nodes.iter().position(|n| n.name == victim).expect("victim node");
    let killed_at = Instant::now();
    nodes[vi].kill9();
    wait_for("a1's socket to close", Duration::from_secs(5), || h.connection_count("a1") == 0);
    wait_for("a1 to be taken over", Duration::from_secs(ttl_secs + 15), || h.connection_count("a1") == 1);
    let takeover = killed_at.elapsed();
    let new_owner = owner_of(&status(&store, &key), "a1").expect("a1 owner");
    assert_ne!(new_owner, victim);
    eprintln!(
        "fleet: takeover of a1 from {victim} by {new_owner} in {} ms (lease TTL {ttl_secs} s)",
        takeover.as_millis()
    );
    h.post_user_message(&a1_dm, "bob", "which number was it?", Some(&first.ts)).expect("post");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    talker.join().expect("talker");
    let settled = rt.block_on(h.wait_until(Duration::from_secs(40), |h| h.exactly_once_report().unanswered.is_empty()));
    std::thread::sleep(Duration::from_millis(500));
    let r = h.exactly_once_report();
    eprintln!(
        "fleet: {} user messages, {} answered once, {} unanswered, {} doubled",
        sent.load(Ordering::Relaxed),
        r.answered_once,
        r.unanswered.len(),
        r.doubled.len()
    );
    if !settled || !r.doubled.is_empty() {
        let kept = dir.keep();
        panic!(
            "exactly-once violated (evidence in {}): unanswered {:?} doubled {:?}",
            kept.display(),
            r.unanswered,
            r.doubled
        );
    }
    assert_eq!(r.answered_once, r.sent);
    assert!(r.sent as u64 >= sent.load(Ordering::Relaxed));
    // The new owner answered the follow-up with the thread's history, read from the store.
    let reqs = ant.handle().requests();
    let follow_up = reqs
        .iter()
        .find(|r| r.body.to_string().contains("which number was it?"))
        .expect("the follow-up reached the model");
    let body = follow_up.body.to_string();
    assert!(body.contains("remember the number 4242"), "the new owner lost the thread's history: {body}");

    // The killed node comes back and stays standby for a1.
    nodes[vi].start();
    wait_for("the node to return", Duration::from_secs(ttl_secs + 15), || {
        status(&store, &key)["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x["name"] == victim.as_str() && x["config_version"] == 2))
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = status(&store, &key);
    assert_eq!(owner_of(&s, "a1").as_deref(), Some(new_owner.as_str()), "ownership moved back: {s}");
    let s = status(&store, &key);
    assert_eq!(h.connection_count("a1"), 1);
    let back = s["nodes"].as_array().unwrap().iter().find(|x| x["name"] == victim.as_str()).cloned().unwrap();
    assert_eq!(back["channels"]["a1"]["role"], "standby", "{back}");

    // A node that sleeps (SIGSTOP) past its lease: its app moves; when it wakes, its lease is gone, so it closes
    // its socket (still open in the kernel all along) and stands by instead of using the token.
    let sleeper = owner_of(&s, "a2").expect("a2 owner");
    let si = nodes.iter().position(|n| n.name == sleeper).expect("sleeper");
    let pid = nodes[si].child.as_ref().expect("running").id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill -STOP").success());
    wait_for("a2 to move off the sleeping node", Duration::from_secs(ttl_secs + 15), || {
        owner_of(&status(&store, &key), "a2").is_some_and(|o| o != sleeper)
    });
    let a2_owner = owner_of(&status(&store, &key), "a2").unwrap();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill -CONT").success());
    wait_for("the woken node to let go of a2's socket", Duration::from_secs(10), || h.connection_count("a2") == 1);
    wait_for("the woken node to report standby", Duration::from_secs(ttl_secs + 15), || {
        status(&store, &key)["nodes"].as_array().is_some_and(|n| {
            n.iter().any(|x| x["name"] == sleeper.as_str() && x["channels"]["a2"]["role"] == "standby")
        })
    });
    assert_eq!(owner_of(&status(&store, &key), "a2").as_deref(), Some(a2_owner.as_str()));

    // A preferred node that comes back gets its agent back (a3 prefers n2).
    wait_for("a3 on its preferred node", Duration::from_secs(ttl_secs + 15), || {
        owner_of(&status(&store, &key), "a3").as_deref() == Some("n2") && h.connection_count("a3") == 1
    });

    // v3 breaks a1's bot token: its owner rolls back, apply names it and exits 1, the fleet goes back to v2.
    let cfg3 = dir.path().join("v3.toml");
    std::fs::write(&cfg3, config(&ant.url(), &oai.url(), &slack.api_url(), true, true)).unwrap();
    let out =
        flotilla(&[&["fleet", "apply", &cfg3.display().to_string(), "--timeout", "30"], &common[..]].concat(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a broken config must fail the apply: {err}");
    assert!(err.contains(&format!("FAILED on {new_owner}")) && err.contains("a1"), "{err}");
    assert!(err.contains("set back to v2"), "{err}");
    let back_on_v2 = |s: &Value| {
        s["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3 && n.iter().all(|x| x["config_version"] == 2 && x["healthy"] == true))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !back_on_v2(&status(&store, &key)) {
        assert!(Instant::now() < deadline, "not every node back on v2: {:#}", status(&store, &key));
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("every node back on v2", Duration::from_secs(20), || {
        let s = status(&store, &key);
        s["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3 && n.iter().all(|x| x["config_version"] == 2 && x["healthy"] == true))
    });
    assert!(rt.block_on(h.wait_for_connections("a1", 1, Duration::from_secs(15))), "a1 not reconnected after rollback");

    // One refresh in the whole fleet (its new token lasts an hour), never a reused refresh token.
    let oauth = ant.handle().oauth_stats();
    assert_eq!((oauth.refreshed, oauth.reused, oauth.unknown), (1, 0, 0), "{oauth:?}");

    // No secret in any node's log.
    for n in &nodes {
        for log in [dir.path().join(format!("{}.json.log", n.name)), n.log.clone()] {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for secret in
                ["sk-ant-FLEET-SECRET", "sk-oai-FLEET-SECRET", "xoxb-a1-fleet", "xapp-1-A2-1-fleet", "at-fleet-OAUTH"]
            {
                assert!(!text.contains(secret), "{} leaks a secret", log.display());
            }
        }
    }
    drop(etcd);
}
