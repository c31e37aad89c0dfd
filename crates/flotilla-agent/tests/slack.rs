//! Agents on Slack against the Slack, Anthropic and OpenAI simulators: every message answered
//! exactly once through disconnects, half-open sockets, disconnect warnings, rate limits,
//! provider outages and restarts.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_agent::{RuntimeConfig, RuntimeHandle};
use flotilla_config::{Env, parse_config};
use flotilla_journal::{Journal, JournalOptions};
use flotilla_router::Router;
use flotilla_sim::slack::{AppSpec, DisconnectReason, DropMode, SlackFault, SlackSim, SlackSimConfig};
use flotilla_sim::{Fault, FaultRule, SimConfig, SimServer};
use flotilla_slack::ChannelConfig;
use flotilla_slack::channel::State;
use flotilla_slack::socket::Liveness;
use flotilla_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const APP_TOKEN: &str = "xapp-1-A0FAMILY-1-secretsecret";
const BOT_TOKEN: &str = "xoxb-1-family-secretsecret";

struct Providers {
    ant: SimServer,
    oai: SimServer,
}

struct Node {
    handle: RuntimeHandle,
    cancel: CancellationToken,
    tracker: TaskTracker,
    journal: Journal,
}

impl Node {
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.journal.close().await.expect("close journal");
    }

    fn status(&self) -> flotilla_slack::ChannelStatus {
        self.handle.channel_statuses().remove(0)
    }
}

async fn slack() -> SlackSim {
    let mut cfg = SlackSimConfig::default().app(AppSpec::new("family-app").tokens(APP_TOKEN, BOT_TOKEN));
    cfg.ack_timeout = Duration::from_millis(500);
    cfg.disconnect_grace = Duration::from_secs(2);
    flotilla_sim::slack::spawn(cfg).await.expect("slack sim")
}

async fn providers() -> Providers {
    let mut a = SimConfig::anthropic();
    a.reply_tokens = 8;
    let mut o = SimConfig::openai();
    o.reply_tokens = 8;
    Providers { ant: flotilla_sim::spawn(a).await.expect("sim"), oai: flotilla_sim::spawn(o).await.expect("sim") }
}

fn rc() -> RuntimeConfig {
    let mut channel = ChannelConfig::new("*");
    channel.liveness = Liveness { ping_interval: Duration::from_millis(200), pong_timeout: Duration::from_millis(600) };
    channel.backoff_min = Duration::from_millis(50);
    channel.backoff_max = Duration::from_millis(500);
    RuntimeConfig { notice_after: Duration::from_millis(700), channel, ..RuntimeConfig::default() }
}

async fn node(slack: &SlackSim, p: &Providers, dir: &std::path::Path, rc: RuntimeConfig) -> Node {
    let toml = format!(
        r#"
[router]
ttfb_timeout = "2s"
request_timeout = "3s"
overload_cooldown = "300ms"
retry_backoff = "10ms"

[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai/gpt-5"]

[[agents.list]]
id = "family"
slack = "family-app"
system_prompt = "You help the family."

[providers.anthropic]
api = "anthropic"
base_url = "{ant}"
auth = ["ant"]

[auth.ant]
provider = "anthropic"
type = "api-key"
key = "env:ANT"

[providers.openai]
api = "openai"
base_url = "{oai}"
auth = ["oai"]

[auth.oai]
provider = "openai"
type = "api-key"
key = "env:OAI"

[slack.family-app]
app_token = "env:FAMILY_APP"
bot_token = "env:FAMILY_BOT"
api_base = "{api}"
"#,
        ant = p.ant.url(),
        oai = p.oai.url(),
        api = slack.api_url()
    );
    let env = Env::from_pairs([
        ("ANT", "sk-ant-x"),
        ("OAI", "sk-oai-x"),
        ("FAMILY_APP", APP_TOKEN),
        ("FAMILY_BOT", BOT_TOKEN),
    ]);
    let config = parse_config(&toml, &env, dir).unwrap_or_else(|e| panic!("{e}"));
    let router = Arc::new(Router::new(Arc::new(config.clone()), Arc::new(Metrics::new())).expect("router"));
    let journal = Journal::open(JournalOptions::new(dir.join("journal.sqlite"))).await.expect("journal");
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle =
        flotilla_agent::start(&config, router, journal.clone(), rc, cancel.clone(), &tracker).await.expect("start");
    Node { handle, cancel, tracker, journal }
}

async fn wait_connected(slack: &SlackSim, n: &Node) {
    let ok = slack.handle().wait_for_connections("family-app", 1, Duration::from_secs(10)).await;
    assert!(ok, "never connected");
    let deadline = Instant::now() + Duration::from_secs(10);
    while n.status().state != State::Connected {
        assert!(Instant::now() < deadline, "channel never reported connected: {:?}", n.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every addressed message is answered (or the timeout), then returns the report.
async fn settle(slack: &SlackSim, timeout: Duration) -> flotilla_sim::slack::ExactlyOnceReport {
    let h = slack.handle();
    h.wait_until(timeout, |h| {
        let r = h.exactly_once_report();
        r.unanswered.is_empty() && r.sent > 0
    })
    .await;
    // A little longer, so that a double answer would have time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.exactly_once_report()
}

fn assert_exactly_once(r: &flotilla_sim::slack::ExactlyOnceReport, expected: usize) {
    assert_eq!(r.sent, expected, "addressed messages: {r:?}");
    assert!(r.unanswered.is_empty(), "unanswered: {:?}", r.unanswered);
    assert!(r.doubled.is_empty(), "doubled: {:?}", r.doubled);
    assert_eq!(r.answered_once, expected);
}

#[tokio::test]
async fn dm_mention_and_thread_reply_each_get_one_answer_with_history() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    let h = s.handle();
    let bot = h.app("family-app").unwrap().bot_user_id;
    let dm = h.dm_channel("alice", "family-app").unwrap();
    h.post_user_message(&dm, "alice", "what is for dinner?", None).unwrap();
    let top = h.post_user_message("general", "bob", &format!("<@{bot}> plan the weekend"), None).unwrap();
    // Not addressed to the bot: no answer expected, none given.
    h.post_user_message("general", "carol", "just chatting", None).unwrap();
    let r = settle(&s, Duration::from_secs(10)).await;
    assert_exactly_once(&r, 2);
    // A follow-up in the bot's thread, without a mention, is for the bot too.
    h.post_user_message("general", "bob", "and on Sunday?", Some(&top.ts)).unwrap();
    let r = settle(&s, Duration::from_secs(10)).await;
    assert_exactly_once(&r, 3);
    // The follow-up went to the model with the thread's history (system prompt, first turn, reply).
    let last = p
        .ant
        .handle()
        .requests()
        .into_iter()
        .find(|r| r.body["messages"].to_string().contains("and on Sunday?"))
        .unwrap_or_else(|| {
            panic!(
                "the follow-up's request: {:#?}",
                p.ant.handle().requests().iter().map(|r| r.body["messages"].to_string()).collect::<Vec<_>>()
            )
        });
    let msgs = last.body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(last.body["system"], "You help the family.");
    assert!(msgs[0]["content"].to_string().contains("plan the weekend"));
    assert!(!msgs[0]["content"].to_string().contains(&bot), "the mention is stripped");
    n.stop().await;
}

#[tokio::test]
async fn half_open_socket_is_replaced_and_missed_messages_are_caught_up() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    let h = s.handle();
    let dm = h.dm_channel("alice", "family-app").unwrap();
    h.post_user_message(&dm, "alice", "before", None).unwrap();
    assert_exactly_once(&settle(&s, Duration::from_secs(10)).await, 1);
    // The socket goes silent: envelopes vanish, pings get no pong.
    let silenced_at = Instant::now();
    h.inject(SlackFault::Silence { app: "family-app".into() }).unwrap();
    h.post_user_message(&dm, "alice", "during the silence 1", None).unwrap();
    h.post_user_message(&dm, "alice", "during the silence 2", None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while n.status().stale_detected == 0 {
        assert!(Instant::now() < deadline, "stale socket never detected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "stale socket detected after {} ms (ping 200 ms, pong deadline 600 ms)",
        silenced_at.elapsed().as_millis()
    );
    let r = settle(&s, Duration::from_secs(10)).await;
    assert_exactly_once(&r, 3);
    assert!(n.status().caught_up_messages >= 2, "{:?}", n.status());
    n.stop().await;
}

#[tokio::test]
async fn dropped_sockets_and_disconnect_warnings_lose_nothing() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    let h = s.handle();
    let dm = h.dm_channel("bob", "family-app").unwrap();
    let mut sent = 0;
    for round in 0..6 {
        match round % 3 {
            0 => {
                h.drop_connections("family-app", DropMode::Reset).unwrap();
            }
            1 => {
                h.disconnect("family-app", DisconnectReason::Warning, Some(Duration::from_millis(800))).unwrap();
            }
            _ => {
                h.drop_connections("family-app", DropMode::Close).unwrap();
            }
        }
        for i in 0..5 {
            h.post_user_message(&dm, "bob", &format!("round {round} message {i}"), None).unwrap();
            sent += 1;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    let r = settle(&s, Duration::from_secs(20)).await;
    assert_exactly_once(&r, sent);
    assert!(n.status().reconnects >= 4, "{:?}", n.status());
    n.stop().await;
}

#[tokio::test]
async fn disconnect_warning_opens_the_new_socket_before_the_old_one_closes() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    let h = s.handle();
    h.disconnect("family-app", DisconnectReason::Warning, Some(Duration::from_secs(2))).unwrap();
    // Within the grace period there are two sockets: the draining one and its replacement.
    assert!(h.wait_for_connections("family-app", 2, Duration::from_secs(2)).await, "no overlapping connection");
    // The old one is closed by flotilla as soon as the new one said hello, well before the grace.
    let ok = h.wait_until(Duration::from_millis(1500), |h| h.connection_count("family-app") == 1).await;
    assert!(ok, "old connection not closed after the replacement's hello");
    assert!(!n.status().duplicate_gateway, "a planned overlap is not a duplicate gateway");
    n.stop().await;
}

#[tokio::test]
async fn a_second_gateway_on_the_same_token_is_reported() {
    let (s, p) = (slack().await, providers().await);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n1 = node(&s, &p, d1.path(), rc()).await;
    wait_connected(&s, &n1).await;
    let n2 = node(&s, &p, d2.path(), rc()).await;
    assert!(s.handle().wait_for_connections("family-app", 2, Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !n2.status().duplicate_gateway {
        assert!(Instant::now() < deadline, "duplicate not reported: {:?}", n2.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(n2.status().not_ready(Duration::from_secs(10)).is_some_and(|why| why.contains("another gateway")));
    n2.stop().await;
    n1.stop().await;
}

#[tokio::test]
async fn rate_limited_posts_are_retried_after_retry_after_and_posted_once() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    let h = s.handle();
    h.inject(SlackFault::RateLimit { method: "chat.postMessage".into(), duration_ms: 1500, retry_after_secs: 1 })
        .unwrap();
    let dm = h.dm_channel("carol", "family-app").unwrap();
    for i in 0..4 {
        h.post_user_message(&dm, "carol", &format!("question {i}"), None).unwrap();
    }
    let r = settle(&s, Duration::from_secs(15)).await;
    assert_exactly_once(&r, 4);
    n.stop().await;
}

#[tokio::test]
async fn a_lost_post_response_does_not_post_twice() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    let h = s.handle();
    // chat.postMessage stores the message but its answer never comes back in time (15 s
    // client timeout would be too long for a test, so the hang ends after 16 s... instead the
    // outbox's in-flight lease expires and the retry finds the post by its key).
    h.inject(SlackFault::HangPosts { duration_ms: 25_000, commit: true }).unwrap();
    let dm = h.dm_channel("alice", "family-app").unwrap();
    h.post_user_message(&dm, "alice", "hello?", None).unwrap();
    let r = settle(&s, Duration::from_secs(45)).await;
    assert_exactly_once(&r, 1);
    n.stop().await;
}

#[tokio::test]
async fn long_provider_outage_gets_one_notice_then_the_answer() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    // Both providers down for 2 s: the agent says once that it is retrying, then answers.
    p.ant.handle().add_fault(FaultRule::new(Fault::Overloaded).window(0, Some(2000)));
    p.oai.handle().add_fault(FaultRule::new(Fault::Overloaded).window(0, Some(2000)));
    let h = s.handle();
    let dm = h.dm_channel("alice", "family-app").unwrap();
    h.post_user_message(&dm, "alice", "are you there?", None).unwrap();
    let r = settle(&s, Duration::from_secs(20)).await;
    assert_exactly_once(&r, 1);
    let notices = h
        .messages()
        .into_iter()
        .filter(|m| m.metadata.as_ref().is_some_and(|md| md["event_type"] == "flotilla_notice"))
        .count();
    assert_eq!(notices, 1, "one retrying notice");
    n.stop().await;
}

#[tokio::test]
async fn a_restart_mid_turn_resumes_the_turn_and_answers_once() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    // The providers stall: the turn is thinking when the node stops.
    p.ant.handle().add_fault(FaultRule::new(Fault::StallBeforeFirstByte { ms: 60_000 }));
    p.oai.handle().add_fault(FaultRule::new(Fault::StallBeforeFirstByte { ms: 60_000 }));
    let h = s.handle();
    let dm = h.dm_channel("bob", "family-app").unwrap();
    h.post_user_message(&dm, "bob", "long question", None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while n.journal.stats().await.unwrap().unfinished_turns == 0 {
        assert!(Instant::now() < deadline, "turn never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the turn reach the (stalled) provider.
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.stop().await;
    p.ant.handle().clear_faults();
    p.oai.handle().clear_faults();
    let n = node(&s, &p, dir.path(), rc()).await;
    let r = settle(&s, Duration::from_secs(15)).await;
    assert_exactly_once(&r, 1);
    n.stop().await;
}

#[tokio::test]
async fn link_disabled_stops_the_channel_and_says_why() {
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let n = node(&s, &p, dir.path(), rc()).await;
    wait_connected(&s, &n).await;
    s.handle().disconnect("family-app", DisconnectReason::LinkDisabled, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while n.status().state != State::Disabled {
        assert!(Instant::now() < deadline, "not disabled: {:?}", n.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(n.status().not_ready(Duration::from_secs(10)).is_some_and(|w| w.contains("disabled")));
    // It does not loop on apps.connections.open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.handle().connection_count("family-app"), 0);
    n.stop().await;
}

#[tokio::test]
async fn stale_socket_detection_time_with_default_liveness() {
    // Default liveness (ping every 2 s, pong deadline 5 s): the time from the socket going
    // silent to flotilla replacing it is printed for BENCHMARKS.md; the test checks that it
    // happens and that the message sent meanwhile is answered once.
    let (s, p, dir) = (slack().await, providers().await, tempfile::tempdir().unwrap());
    let mut rc = rc();
    rc.channel.liveness = Liveness::default();
    let n = node(&s, &p, dir.path(), rc).await;
    wait_connected(&s, &n).await;
    let h = s.handle();
    let silenced_at = Instant::now();
    h.silence("family-app").unwrap();
    let dm = h.dm_channel("carol", "family-app").unwrap();
    h.post_user_message(&dm, "carol", "anyone?", None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while n.status().stale_detected == 0 {
        assert!(Instant::now() < deadline, "stale socket never detected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let detected = silenced_at.elapsed();
    let r = settle(&s, Duration::from_secs(20)).await;
    assert_exactly_once(&r, 1);
    eprintln!(
        "stale socket detected {} ms after it went silent; message answered {} ms after it was sent (default liveness)",
        detected.as_millis(),
        silenced_at.elapsed().as_millis()
    );
    n.stop().await;
}
