//! Chaos: simulated users talk to two agents on Slack while sockets are dropped, silenced and
//! told to move, the gateway is killed with SIGKILL and restarted, and the primary model
//! provider is overloaded. At the end every user message has exactly one reply.
//!
//! Short by default (CI); `FLOTILLA_LONG_TESTS=1` runs the long version (5 minutes, a socket
//! drop every 300 ms, a kill every 6 s). `FLOTILLA_CHAOS_SECS` overrides the duration.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_sim::slack::{AppSpec, DisconnectReason, DropMode, SlackSimConfig};
use flotilla_sim::{Fault, FaultRule, SimConfig};

struct Gateway {
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
}

impl Gateway {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gateway");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[test]
fn every_message_is_answered_exactly_once_through_chaos() {
    let long = std::env::var("FLOTILLA_LONG_TESTS").is_ok_and(|v| v == "1");
    let secs: u64 =
        std::env::var("FLOTILLA_CHAOS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(if long { 300 } else { 20 });
    let (drop_every, kill_every) = if long {
        (Duration::from_millis(300), Duration::from_secs(6))
    } else {
        (Duration::from_millis(1500), Duration::from_secs(6))
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let apps =
        [("family-app", "xapp-1-AFAM-1-chaos", "xoxb-fam-chaos"), ("ops-app", "xapp-1-AOPS-1-chaos", "xoxb-ops-chaos")];
    let mut scfg = SlackSimConfig::default();
    for (name, a, b) in apps {
        scfg = scfg.app(AppSpec::new(name).tokens(a, b));
    }
    scfg.disconnect_grace = Duration::from_secs(3);
    let slack = rt.block_on(flotilla_sim::slack::spawn(scfg)).expect("slack sim");
    let mut a = SimConfig::anthropic();
    a.reply_tokens = 6;
    let mut o = SimConfig::openai();
    o.reply_tokens = 6;
    let ant = rt.block_on(flotilla_sim::spawn(a)).expect("sim");
    let oai = rt.block_on(flotilla_sim::spawn(o)).expect("sim");

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("flotilla.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[gateway]
data_dir = "data"

[router]
overload_cooldown = "2s"
ttfb_timeout = "3s"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai/gpt-5.3-codex"]

[[agents.list]]
id = "family"
slack = "family-app"

[[agents.list]]
id = "ops"
slack = "ops-app"

[providers.anthropic]
api = "anthropic"
base_url = "{ant}"
auth = ["ant"]

[providers.openai]
api = "openai"
base_url = "{oai}"
auth = ["oai"]

[auth.ant]
provider = "anthropic"
type = "api-key"
key = "env:ANT"

[auth.oai]
provider = "openai"
type = "api-key"
key = "env:OAI"

[slack.family-app]
app_token = "env:FAM_APP"
bot_token = "env:FAM_BOT"
api_base = "{api}"

[slack.ops-app]
app_token = "env:OPS_APP"
bot_token = "env:OPS_BOT"
api_base = "{api}"
"#,
            ant = ant.url(),
            oai = oai.url(),
            api = slack.api_url()
        ),
    )
    .expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut gw = Gateway {
        child: None,
        args: vec![
            "gateway".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--log-file".into(),
            dir.path().join("gateway.json.log").display().to_string(),
        ],
        env: vec![
            ("ANT".into(), "sk-ant-chaos".into()),
            ("OAI".into(), "sk-oai-chaos".into()),
            ("FAM_APP".into(), apps[0].1.into()),
            ("FAM_BOT".into(), apps[0].2.into()),
            ("OPS_APP".into(), apps[1].1.into()),
            ("OPS_BOT".into(), apps[1].2.into()),
        ],
        log: dir.path().join("gateway.stderr"),
    };
    gw.start();
    let h = slack.handle().clone();
    assert!(rt.block_on(h.wait_for_connections("family-app", 1, Duration::from_secs(20))), "gateway never connected");
    assert!(rt.block_on(h.wait_for_connections("ops-app", 1, Duration::from_secs(20))), "gateway never connected");

    let users = ["alice", "bob", "carol"];
    let dms: Vec<(String, &str)> = users
        .iter()
        .flat_map(|u| apps.iter().map(move |(app, ..)| (*u, *app)))
        .map(|(u, app)| (h.dm_channel(u, app).expect("dm"), u))
        .collect();
    let bots: Vec<String> = apps.iter().map(|(app, ..)| h.app(app).expect("app").bot_user_id).collect();

    let started = Instant::now();
    let (mut sent, mut drops, mut kills, mut silences, mut warnings) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut next_drop = started + drop_every;
    let mut next_kill = started + kill_every;
    let mut threads: Vec<(String, String)> = Vec::new();
    let outage_from = Duration::from_secs(secs * 3 / 10);
    let outage_len = Duration::from_secs((secs / 4).max(3));
    ant.handle().add_fault(
        FaultRule::new(Fault::Overloaded).window(outage_from.as_millis() as u64, Some(outage_len.as_millis() as u64)),
    );
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        i += 1;
        // Users: DMs, mentions in #general, and follow-ups in threads the bots are in.
        match i % 4 {
            0 | 1 => {
                let (dm, user) = &dms[(i as usize) % dms.len()];
                h.post_user_message(dm, user, &format!("dm {i}"), None).expect("post");
            }
            2 => {
                let bot = &bots[(i as usize / 4) % bots.len()];
                let p = h
                    .post_user_message("general", users[(i as usize) % 3], &format!("<@{bot}> question {i}"), None)
                    .expect("post");
                threads.push((p.channel, p.ts));
            }
            _ => {
                if let Some((ch, ts)) = threads.get((i as usize * 7) % threads.len().max(1)).cloned() {
                    h.post_user_message(&ch, users[(i as usize) % 3], &format!("follow-up {i}"), Some(&ts))
                        .expect("post");
                } else {
                    continue;
                }
            }
        }
        sent += 1;
        let now = Instant::now();
        if now >= next_drop {
            next_drop = now + drop_every;
            let app = apps[(drops as usize) % 2].0;
            match drops % 5 {
                0 => {
                    h.drop_connections(app, DropMode::Reset).ok();
                }
                1 => {
                    h.drop_connections(app, DropMode::Close).ok();
                }
                2 => {
                    h.silence(app).ok();
                    silences += 1;
                }
                3 => {
                    h.disconnect(app, DisconnectReason::Warning, None).ok();
                    warnings += 1;
                }
                _ => {
                    h.drop_connections(app, DropMode::Eof).ok();
                }
            }
            drops += 1;
        }
        if now >= next_kill {
            next_kill = now + kill_every;
            gw.kill9();
            kills += 1;
            gw.start();
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Let the last gap heal, then wait for every message to be answered.
    let settled = rt.block_on(h.wait_until(Duration::from_secs(120), |h| {
        let r = h.exactly_once_report();
        r.unanswered.is_empty()
    }));
    std::thread::sleep(Duration::from_secs(2));
    let r = h.exactly_once_report();
    let stats = oai.handle().stats().requests_total;
    eprintln!(
        "chaos {secs}s: user messages {sent}, addressed {}, answered once {}, unanswered {}, doubled {}; socket drops {drops} (silenced {silences}, disconnect warnings {warnings}), gateway SIGKILLs {kills}, fallback requests {stats}",
        r.sent,
        r.answered_once,
        r.unanswered.len(),
        r.doubled.len()
    );
    if !settled || !r.unanswered.is_empty() || !r.doubled.is_empty() {
        // Keep the evidence: the journal, the config and both logs stay on disk for a post-mortem
        // (`sqlite3 data/journal.sqlite` once the gateway is gone).
        gw.kill9();
        let kept = dir.keep();
        eprintln!("chaos evidence kept in {}", kept.display());
        let log = std::fs::read_to_string(kept.join("gateway.stderr")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!(
            "exactly-once violated: unanswered {:?}\ndoubled {:?}\ngateway log tail:\n{}",
            r.unanswered.iter().take(10).collect::<Vec<_>>(),
            r.doubled.iter().take(10).collect::<Vec<_>>(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert_eq!(r.answered_once, r.sent);
    // The gateway reports its channels and journal in /readyz, /metrics and /status.
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reqwest::blocking::get(format!("{base}/readyz")).is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "gateway not ready after the chaos");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The last reply can be visible in Slack a moment before its outbox entry is marked
    // delivered: the outbox must drain, not be empty at this very instant.
    let metrics = loop {
        let metrics = reqwest::blocking::get(format!("{base}/metrics")).expect("metrics").text().expect("text");
        if metrics.contains("flotilla_outbox_depth 0") || Instant::now() >= deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(metrics.contains("flotilla_channel_up{app=\"family-app\"} 1"), "{metrics}");
    assert!(metrics.contains("flotilla_outbox_depth 0"), "{metrics}");
    let status: serde_json::Value =
        reqwest::blocking::get(format!("{base}/status")).expect("status").json().expect("json");
    let channels = status["channels"].as_array().expect("channels in /status");
    assert_eq!(channels.len(), 2);
    assert!(channels.iter().all(|c| c["state"] == "connected"), "{channels:?}");
    assert_eq!(status["journal"]["unfinished_turns"], 0);
    assert!(r.sent as u64 >= sent * 9 / 10, "most user messages are addressed to a bot");
    assert!(kills >= 2 && drops >= 5, "the chaos actually happened");
}
