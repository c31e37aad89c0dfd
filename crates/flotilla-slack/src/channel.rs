//! A Slack app's channel: keeps one Socket Mode connection alive (two, briefly, while Slack
//! moves us), records every message durably *before* acking it, detects stale sockets and a
//! sleeping host, and catches up from history after any gap.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::socket::{self, ConnEvent, ConnHandle, ConnId, Envelope, Liveness};
use crate::web::{SlackError, SlackMessage, SlackWeb};

/// How a message reached flotilla.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Socket,
    CatchUp,
}

/// A user message, as the channel hands it to the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackInbound {
    pub app: String,
    pub conversation: String,
    /// `im` for direct messages, `channel`/`group`/`mpim` otherwise, when Slack said.
    pub channel_type: Option<String>,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub text: String,
    pub event_id: Option<String>,
    pub source: Source,
}

/// Where the channel puts messages, and what it asks for catch-up. Implemented over the
/// journal by the agent runtime; this crate knows nothing about storage or models.
pub trait Inbox: Send + Sync + 'static {
    /// Records a message durably (or recognises a duplicate). `Ok` only once it is on disk:
    /// the channel acks the Slack envelope after this returns.
    fn record(&self, msg: SlackInbound) -> impl Future<Output = Result<(), String>> + Send;
    /// How far catch-up has read each conversation (moved only by [`Inbox::mark_synced`]).
    fn cursors(&self, app: &str) -> impl Future<Output = Result<Vec<(String, String)>, String>> + Send;
    /// Catch-up has read `conversation` up to `ts`; durable, never moves backwards.
    fn mark_synced(&self, app: &str, conversation: &str, ts: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Threads of `conversation` the agent takes part in (their parent `ts`), active since `since`.
    fn threads(
        &self,
        app: &str,
        conversation: &str,
        since: &str,
    ) -> impl Future<Output = Result<Vec<String>, String>> + Send;
}

/// Tunables of a channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The `[slack.NAME]` name.
    pub app: String,
    pub liveness: Liveness,
    /// How far back catch-up looks in a conversation never seen before.
    pub catch_up_window: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A wall-clock jump this much larger than the monotonic clock's (or a timer tick this
    /// late) means the host slept or froze.
    pub sleep_jump: Duration,
    /// A catch-up sweep also runs this often while connected: a safety net for anything a
    /// socket lost without the channel noticing, and it keeps the next catch-up short.
    pub sweep_every: Duration,
}

impl ChannelConfig {
    pub fn new(app: &str) -> Self {
        ChannelConfig {
            app: app.to_owned(),
            liveness: Liveness::default(),
            catch_up_window: Duration::from_secs(3600),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            sleep_jump: Duration::from_secs(3),
            sweep_every: Duration::from_secs(300),
        }
    }
}

/// Connection state, for `/readyz`, `/status` and `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Connecting,
    Connected,
    /// Slack disabled the link or the token is bad: stopped, a human must act.
    Disabled,
    Stopped,
}

/// A channel's observable state.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStatus {
    pub app: String,
    pub state: State,
    pub open_connections: usize,
    /// `num_connections` from the last `hello`; more than 1 means another gateway holds the token.
    pub num_connections: u32,
    pub duplicate_gateway: bool,
    pub reconnects: u64,
    pub last_reconnect_reason: Option<String>,
    pub stale_detected: u64,
    pub host_sleeps_detected: u64,
    pub envelopes: u64,
    pub messages_recorded: u64,
    pub caught_up_messages: u64,
    pub catch_ups: u64,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub last_frame_at: Option<Instant>,
    pub last_frame_age_ms: Option<u64>,
}

impl ChannelStatus {
    fn new(app: &str) -> Self {
        ChannelStatus {
            app: app.to_owned(),
            state: State::Connecting,
            open_connections: 0,
            num_connections: 0,
            duplicate_gateway: false,
            reconnects: 0,
            last_reconnect_reason: None,
            stale_detected: 0,
            host_sleeps_detected: 0,
            envelopes: 0,
            messages_recorded: 0,
            caught_up_messages: 0,
            catch_ups: 0,
            last_error: None,
            last_frame_at: None,
            last_frame_age_ms: None,
        }
    }

    /// Why the channel is not ready, if it is not: disconnected, duplicate, or silent.
    pub fn not_ready(&self, stale_after: Duration) -> Option<String> {
        match self.state {
            State::Connected => {}
            State::Connecting => return Some("connecting".to_owned()),
            State::Disabled => return Some(format!("disabled: {}", self.last_error.clone().unwrap_or_default())),
            State::Stopped => return Some("stopped".to_owned()),
        }
        if self.duplicate_gateway {
            return Some(format!(
                "{} connections share this app token: another gateway is running",
                self.num_connections
            ));
        }
        match self.last_frame_at {
            Some(at) if at.elapsed() > stale_after => Some(format!("no frame for {} ms", at.elapsed().as_millis())),
            _ => None,
        }
    }
}

/// A shared view of a channel's status.
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<Mutex<ChannelStatus>>);

impl StatusHandle {
    pub fn new(app: &str) -> Self {
        StatusHandle(Arc::new(Mutex::new(ChannelStatus::new(app))))
    }

    /// A snapshot with the frame age filled in.
    pub fn snapshot(&self) -> ChannelStatus {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.last_frame_age_ms = s.last_frame_at.map(|t| t.elapsed().as_millis() as u64);
        s
    }

    /// Marks the channel as unable to run (bad or missing token), with the reason.
    pub fn set_disabled(&self, reason: &str) {
        self.update(|s| {
            s.state = State::Disabled;
            s.last_error = Some(reason.to_owned());
        });
    }

    /// Records an error without changing the state (e.g. a start-up retry).
    pub fn set_error(&self, reason: &str) {
        self.update(|s| s.last_error = Some(reason.to_owned()));
    }

    fn update(&self, f: impl FnOnce(&mut ChannelStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Runs a channel until `cancel`. Returns when stopped or disabled.
pub async fn run<I: Inbox>(
    cfg: ChannelConfig,
    web: SlackWeb,
    inbox: Arc<I>,
    status: StatusHandle,
    cancel: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let (tx, mut rx) = mpsc::channel::<ConnEvent>(1024);
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    // Connections Slack told us to leave; closed as soon as a replacement says hello.
    let mut draining: Vec<ConnId> = Vec::new();
    let mut next_id: ConnId = 1;
    let mut backoff = cfg.backoff_min;
    let mut connect_at: Option<Instant> = Some(Instant::now());
    let mut need_catch_up = true;
    // Catch-up starts from the durable sync marks, which move only when a catch-up completes, so
    // messages recorded live after reconnecting cannot move its start past the ones missed in the gap.
    let catch_up_running = Arc::new(CatchUpGate::default());
    let mut clock = SleepDetector::new(cfg.sleep_jump);
    // After we abandon a socket (stale, host slept), Slack may count it for a while: a second
    // connection reported then is our own ghost, not another gateway.
    let mut ghost_until: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval_at(Instant::now() + cfg.sweep_every, cfg.sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let connect_due = async {
            match connect_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sweep.tick() => {
                if !conns.is_empty() && !need_catch_up {
                    spawn_catch_up(&tracker, &catch_up_running, None, &cfg, &web, &inbox, &status, &cancel);
                }
            }
            _ = tick.tick() => {
                if let Some(why) = clock.check(Instant::now(), SystemTime::now()) {
                    tracing::warn!(event = "host_slept", app = %cfg.app, detail = %why, "host slept or froze: reconnecting and catching up");
                    status.update(|s| { s.host_sleeps_detected += 1; s.last_reconnect_reason = Some(why.clone()); });
                    for c in conns.values() { c.close(); }
                    ghost_until = Some(Instant::now() + Duration::from_secs(60));
                    need_catch_up = true;
                    connect_at = Some(Instant::now());
                }
            }
            _ = connect_due => {
                connect_at = None;
                match open(&web, &cfg, next_id, tx.clone(), &cancel, &tracker).await {
                    Ok(handle) => {
                        conns.insert(handle.id, handle);
                        next_id += 1;
                        status.update(|s| s.open_connections = conns.len());
                    }
                    Err(e) if e.is_auth() || matches!(&e, SlackError::Api { error, .. } if error.contains("link_disabled") || error == "invalid_app_token") => {
                        tracing::error!(event = "slack_channel_disabled", app = %cfg.app, error = %e, "slack refused the app token: fix the token or re-enable the app, then restart");
                        status.update(|s| { s.state = State::Disabled; s.last_error = Some(e.to_string()); });
                        break;
                    }
                    Err(e) => {
                        let wait = match &e { SlackError::RateLimited { retry_after, .. } => *retry_after, _ => jitter(backoff) };
                        tracing::warn!(event = "slack_connect_failed", app = %cfg.app, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot open socket mode connection");
                        status.update(|s| s.last_error = Some(e.to_string()));
                        backoff = (backoff * 2).min(cfg.backoff_max);
                        connect_at = Some(Instant::now() + wait);
                    }
                }
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    ConnEvent::Alive { .. } => status.update(|s| s.last_frame_at = Some(Instant::now())),
                    ConnEvent::Hello { conn, num_connections } => {
                        backoff = cfg.backoff_min;
                        let ghosts_possible = ghost_until.is_some_and(|t| Instant::now() < t);
                        let dup = num_connections as usize > conns.len() && draining.is_empty() && !ghosts_possible;
                        if dup {
                            tracing::error!(event = "slack_duplicate_gateway", app = %cfg.app, num_connections, "another gateway is connected with this app token: stop the old service (see `flotilla doctor`)");
                        }
                        for old in draining.drain(..) {
                            if let Some(c) = conns.get(&old) { c.close(); }
                        }
                        status.update(|s| {
                            s.state = State::Connected;
                            s.num_connections = num_connections;
                            s.duplicate_gateway = dup;
                            s.last_frame_at = Some(Instant::now());
                            s.last_error = None;
                        });
                        tracing::info!(event = "slack_connected", app = %cfg.app, conn, num_connections, "socket mode connected");
                        if need_catch_up {
                            need_catch_up = false;
                            spawn_catch_up(&tracker, &catch_up_running, None, &cfg, &web, &inbox, &status, &cancel);
                        }
                    }
                    ConnEvent::Envelope { conn, envelope } => {
                        status.update(|s| s.envelopes += 1);
                        match handle_envelope(&cfg.app, &envelope, inbox.as_ref()).await {
                            Ok(recorded) => {
                                // Durable first, ack second: a crash in between means a redelivery,
                                // which the journal recognises as a duplicate.
                                if let Some(c) = conns.get(&conn) { c.ack(&envelope.envelope_id); }
                                if recorded { status.update(|s| s.messages_recorded += 1); }
                            }
                            Err(e) => {
                                tracing::error!(event = "slack_record_failed", app = %cfg.app, error = %e, "could not record a message; not acking so Slack redelivers it");
                                status.update(|s| s.last_error = Some(e));
                            }
                        }
                    }
                    ConnEvent::Disconnect { conn, reason } => {
                        tracing::info!(event = "slack_disconnect_requested", app = %cfg.app, conn, reason = %reason);
                        if reason == "link_disabled" {
                            tracing::error!(event = "slack_channel_disabled", app = %cfg.app, "slack disabled the socket mode link: re-enable socket mode for the app, then restart");
                            status.update(|s| { s.state = State::Disabled; s.last_error = Some("link_disabled".to_owned()); });
                            for c in conns.values() { c.close(); }
                            break;
                        }
                        // Open the replacement *before* the old socket closes: no gap.
                        if !draining.contains(&conn) { draining.push(conn); }
                        let live = conns.keys().filter(|k| !draining.contains(k)).count();
                        if live == 0 && connect_at.is_none() {
                            status.update(|s| { s.reconnects += 1; s.last_reconnect_reason = Some(format!("disconnect: {reason}")); });
                            connect_at = Some(Instant::now());
                        }
                    }
                    ConnEvent::Closed { conn, reason, stale } => {
                        conns.remove(&conn);
                        draining.retain(|c| *c != conn);
                        if stale {
                            ghost_until = Some(Instant::now() + Duration::from_secs(60));
                            tracing::warn!(event = "slack_socket_stale", app = %cfg.app, conn, detail = %reason, "socket went silent: replacing it");
                            status.update(|s| s.stale_detected += 1);
                        } else {
                            tracing::info!(event = "slack_socket_closed", app = %cfg.app, conn, detail = %reason);
                        }
                        status.update(|s| s.open_connections = conns.len());
                        if conns.is_empty() && !cancel.is_cancelled() {
                            need_catch_up = true;
                            status.update(|s| { s.state = State::Connecting; s.reconnects += 1; s.last_reconnect_reason = Some(reason.clone()); });
                            if connect_at.is_none() {
                                // A stale socket is replaced at once; a closed one after a short jittered pause.
                                connect_at = Some(Instant::now() + if stale { Duration::ZERO } else { jitter(backoff) });
                            }
                        }
                    }
                }
            }
        }
    }
    for c in conns.values() {
        c.close();
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    status.update(|s| {
        if s.state != State::Disabled {
            s.state = State::Stopped;
        }
        s.open_connections = 0;
    });
}

async fn open(
    web: &SlackWeb,
    cfg: &ChannelConfig,
    id: ConnId,
    tx: mpsc::Sender<ConnEvent>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<ConnHandle, SlackError> {
    let url = web.connections_open().await?;
    socket::connect(&url, id, cfg.liveness, tx, cancel, tracker)
        .await
        .map_err(|detail| SlackError::Transport { method: "websocket", detail })
}

/// Records the message an envelope carries; `Ok(false)` for envelopes that carry none (they
/// are acked all the same, so Slack does not retry them).
async fn handle_envelope<I: Inbox>(app: &str, env: &Envelope, inbox: &I) -> Result<bool, String> {
    if env.kind != "events_api" {
        tracing::debug!(event = "slack_envelope_ignored", kind = %env.kind, "envelope type not handled");
        return Ok(false);
    }
    let event_id = env.payload.get("event_id").and_then(Value::as_str).map(str::to_owned);
    let Some(ev) = env.payload.get("event") else { return Ok(false) };
    let Some(msg) = inbound_from_event(app, ev, event_id, Source::Socket) else { return Ok(false) };
    inbox.record(msg).await?;
    Ok(true)
}

/// Turns a `message` or `app_mention` event into a user message, or `None` for bot messages,
/// edits, joins and other subtypes.
pub fn inbound_from_event(app: &str, ev: &Value, event_id: Option<String>, source: Source) -> Option<SlackInbound> {
    let kind = ev.get("type").and_then(Value::as_str)?;
    if kind != "message" && kind != "app_mention" {
        return None;
    }
    if ev.get("bot_id").is_some() {
        return None;
    }
    match ev.get("subtype").and_then(Value::as_str) {
        None | Some("thread_broadcast" | "file_share") => {}
        Some(_) => return None,
    }
    Some(SlackInbound {
        app: app.to_owned(),
        conversation: ev.get("channel").and_then(Value::as_str)?.to_owned(),
        channel_type: ev.get("channel_type").and_then(Value::as_str).map(str::to_owned),
        ts: ev.get("ts").and_then(Value::as_str)?.to_owned(),
        thread_ts: ev.get("thread_ts").and_then(Value::as_str).map(str::to_owned),
        user: ev.get("user").and_then(Value::as_str)?.to_owned(),
        text: ev.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
        event_id,
        source,
    })
}

/// One catch-up at a time per channel; a gap that happens while one runs asks for another
/// run after it (the running one may already have read past the new gap's start).
#[derive(Debug, Default)]
struct CatchUpGate {
    running: std::sync::atomic::AtomicBool,
    again: std::sync::atomic::AtomicBool,
}

#[expect(clippy::too_many_arguments, reason = "the channel loop's state, passed once")]
fn spawn_catch_up<I: Inbox>(
    tracker: &TaskTracker,
    gate: &Arc<CatchUpGate>,
    cursors: Option<Vec<(String, String)>>,
    cfg: &ChannelConfig,
    web: &SlackWeb,
    inbox: &Arc<I>,
    status: &StatusHandle,
    cancel: &CancellationToken,
) {
    use std::sync::atomic::Ordering;
    if gate.running.swap(true, Ordering::SeqCst) {
        gate.again.store(true, Ordering::SeqCst);
        return;
    }
    let (gate, cfg, web, inbox, status, cancel) =
        (gate.clone(), cfg.clone(), web.clone(), inbox.clone(), status.clone(), cancel.clone());
    tracker.spawn(async move {
        let mut cursors = cursors;
        loop {
            let result = tokio::select! {
                r = catch_up(&cfg, &web, inbox.as_ref(), cursors.take()) => r,
                _ = cancel.cancelled() => Ok(0),
            };
            match result {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(event = "slack_caught_up", app = %cfg.app, messages = n, "re-read history after a gap");
                    }
                    status.update(|s| {
                        s.catch_ups += 1;
                        s.caught_up_messages += n;
                    });
                }
                Err(e) => {
                    tracing::warn!(event = "slack_catch_up_failed", app = %cfg.app, error = %e, "catch-up failed; retrying in 1 s");
                    status.update(|s| s.last_error = Some(format!("catch-up: {e}")));
                    gate.again.store(true, Ordering::SeqCst);
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            if cancel.is_cancelled() {
                break;
            }
            if gate.again.swap(false, Ordering::SeqCst) {
                continue;
            }
            gate.running.store(false, Ordering::SeqCst);
            // A request that came between the check above and the store: take it.
            if gate.again.load(Ordering::SeqCst) && !gate.running.swap(true, Ordering::SeqCst) {
                gate.again.store(false, Ordering::SeqCst);
                continue;
            }
            return;
        }
        gate.running.store(false, Ordering::SeqCst);
    });
}

/// Reads every conversation's history (and the threads the agent is in) since the last seen
/// `ts` and records what is there; the journal drops what it already has.
pub async fn catch_up<I: Inbox>(
    cfg: &ChannelConfig,
    web: &SlackWeb,
    inbox: &I,
    cursors: Option<Vec<(String, String)>>,
) -> Result<u64, String> {
    let mut recorded = 0u64;
    let cursors: HashMap<String, String> = match cursors {
        Some(c) => c.into_iter().collect(),
        None => inbox.cursors(&cfg.app).await?.into_iter().collect(),
    };
    let mut conversations: Vec<String> =
        with_rate_limit(|| web.member_conversations()).await.map_err(|e| e.to_string())?;
    for c in cursors.keys() {
        if !conversations.contains(c) {
            conversations.push(c.clone());
        }
    }
    let window_start = SystemTime::now().checked_sub(cfg.catch_up_window).unwrap_or(UNIX_EPOCH);
    let default_oldest = format!("{}.000000", window_start.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    for conv in conversations {
        let oldest = cursors.get(&conv).cloned().unwrap_or_else(|| default_oldest.clone());
        let mut found: Vec<SlackMessage> = Vec::new();
        let mut threads_to_read: Vec<(String, String)> =
            // Threads the agent was in during the catch-up window, read from the cursor on.
            inbox.threads(&cfg.app, &conv, &default_oldest).await?.into_iter().map(|t| (t, oldest.clone())).collect();
        // The sync mark may only move as far as the history read covers: the newest top-level
        // message. Thread replies are read later and can be newer than a top-level message
        // posted (and missed) after the history was read; they must not move the mark past it.
        let mut newest_top: Option<String> = None;
        let mut cursor: Option<String> = None;
        loop {
            let page = with_rate_limit(|| web.history(&conv, Some(&oldest), cursor.as_deref()))
                .await
                .map_err(|e| e.to_string())?;
            for m in &page.messages {
                if newest_top.as_deref().is_none_or(|n| ts_key(&m.ts) > ts_key(n)) {
                    newest_top = Some(m.ts.clone());
                }
                if m.reply_count.unwrap_or(0) > 0 && !threads_to_read.iter().any(|(t, _)| *t == m.ts) {
                    threads_to_read.push((m.ts.clone(), oldest.clone()));
                }
            }
            found.extend(page.messages);
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        for (thread, since) in threads_to_read {
            let mut cursor: Option<String> = None;
            loop {
                let page = match with_rate_limit(|| web.replies(&conv, &thread, Some(&since), cursor.as_deref())).await
                {
                    Ok(p) => p,
                    // A thread deleted since: nothing to catch up there.
                    Err(SlackError::Api { error, .. }) if error == "thread_not_found" => break,
                    Err(e) => return Err(e.to_string()),
                };
                found.extend(page.messages.into_iter().filter(|m| ts_after(&m.ts, &since)));
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
        }
        // Oldest first, so turns of a thread are recorded (and answered) in order.
        found.sort_by_key(|a| ts_key(&a.ts));
        found.dedup_by(|a, b| a.ts == b.ts);
        let newest = newest_top;
        for m in found {
            if m.bot_id.is_some() || m.subtype.as_deref().is_some_and(|s| s != "thread_broadcast" && s != "file_share")
            {
                continue;
            }
            let Some(user) = m.user else { continue };
            let msg = SlackInbound {
                app: cfg.app.clone(),
                channel_type: conv.starts_with('D').then(|| "im".to_owned()),
                conversation: conv.clone(),
                ts: m.ts,
                thread_ts: m.thread_ts,
                user,
                text: m.text,
                event_id: None,
                source: Source::CatchUp,
            };
            inbox.record(msg).await?;
            recorded += 1;
        }
        // Everything up to the newest message read is now in the journal.
        if let Some(ts) = newest {
            inbox.mark_synced(&cfg.app, &conv, &ts).await?;
        }
    }
    Ok(recorded)
}

async fn with_rate_limit<T, F, Fut>(mut call: F) -> Result<T, SlackError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SlackError>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(SlackError::RateLimited { retry_after, .. }) if tries < 10 => {
                tries += 1;
                tokio::time::sleep(retry_after).await;
            }
            Err(SlackError::Transport { .. }) if tries < 3 => {
                tries += 1;
                tokio::time::sleep(jitter(Duration::from_millis(500))).await;
            }
            r => return r,
        }
    }
}

/// A Slack `ts` ("1732560000.000100") as a sortable pair.
pub fn ts_key(ts: &str) -> (u64, u64) {
    let (s, f) = ts.split_once('.').unwrap_or((ts, "0"));
    (s.parse().unwrap_or(0), f.parse().unwrap_or(0))
}

fn ts_after(ts: &str, since: &str) -> bool {
    ts_key(ts) > ts_key(since)
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64())
}

/// Notices that the host slept or froze: the wall clock moved much more than the monotonic
/// clock (Linux's monotonic clock stops during suspend), or a 1-second timer fired very late.
#[derive(Debug)]
pub struct SleepDetector {
    last: Option<(Instant, SystemTime)>,
    threshold: Duration,
}

impl SleepDetector {
    pub fn new(threshold: Duration) -> Self {
        SleepDetector { last: None, threshold }
    }

    /// Feeds a reading; returns why, if the host seems to have slept since the last one.
    pub fn check(&mut self, mono: Instant, wall: SystemTime) -> Option<String> {
        let prev = self.last.replace((mono, wall));
        let (pm, pw) = prev?;
        let mono_d = mono.saturating_duration_since(pm);
        let wall_d = wall.duration_since(pw).unwrap_or_default();
        if wall_d > mono_d + self.threshold {
            return Some(format!(
                "wall clock advanced {} ms more than the monotonic clock",
                (wall_d - mono_d).as_millis()
            ));
        }
        // The timer ticks every second; far later means the process was frozen.
        if mono_d > Duration::from_secs(1) + self.threshold {
            return Some(format!("timer fired {} ms late", (mono_d - Duration::from_secs(1)).as_millis()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_detector_sees_wall_jumps_and_late_ticks() {
        let mut d = SleepDetector::new(Duration::from_secs(3));
        let m0 = Instant::now();
        let w0 = SystemTime::now();
        assert_eq!(d.check(m0, w0), None);
        assert_eq!(d.check(m0 + Duration::from_secs(1), w0 + Duration::from_secs(1)), None);
        // Suspended for a minute: wall moved 61 s, monotonic 1 s.
        let why = d.check(m0 + Duration::from_secs(2), w0 + Duration::from_secs(62)).expect("sleep");
        assert!(why.contains("wall clock advanced 60000 ms"), "{why}");
        // Frozen (SIGSTOP): both clocks moved 10 s between 1-second ticks.
        let why = d.check(m0 + Duration::from_secs(12), w0 + Duration::from_secs(72)).expect("freeze");
        assert!(why.contains("late"), "{why}");
        assert_eq!(d.check(m0 + Duration::from_secs(13), w0 + Duration::from_secs(73)), None);
    }

    #[test]
    fn events_become_inbound_messages() {
        let ev = serde_json::json!({"type": "message", "channel": "D1", "channel_type": "im", "user": "U1", "text": "hi", "ts": "1.000200", "client_msg_id": "x"});
        let m = inbound_from_event("app", &ev, Some("Ev1".into()), Source::Socket).expect("message");
        assert_eq!((m.conversation.as_str(), m.ts.as_str(), m.channel_type.as_deref()), ("D1", "1.000200", Some("im")));
        let bot = serde_json::json!({"type": "message", "channel": "C1", "bot_id": "B1", "text": "reply", "ts": "2.0"});
        assert!(inbound_from_event("app", &bot, None, Source::Socket).is_none());
        let edit = serde_json::json!({"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "3.0"});
        assert!(inbound_from_event("app", &edit, None, Source::Socket).is_none());
        let mention = serde_json::json!({"type": "app_mention", "channel": "C1", "user": "U2", "text": "<@UB> hi", "ts": "4.0", "thread_ts": "3.5"});
        assert_eq!(
            inbound_from_event("app", &mention, None, Source::Socket).expect("mention").thread_ts.as_deref(),
            Some("3.5")
        );
    }

    #[test]
    fn ts_ordering_is_numeric() {
        assert!(ts_key("1732560000.000100") < ts_key("1732560000.000200"));
        assert!(ts_key("999.9") < ts_key("1000.0"));
        assert!(ts_after("2.000001", "2.000000"));
    }
}
