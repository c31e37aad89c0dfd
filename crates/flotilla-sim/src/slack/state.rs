//! The simulated workspace behind one mutex: team, users, channels and DMs, apps, messages,
//! open Socket Mode connections, envelopes awaiting an ack, faults and counters.
//!
//! Every lock is short and never held across an `.await`; connection tasks are reached
//! through unbounded channels, so a slow client never blocks the workspace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::config::{SlackConfigError, SlackSimConfig};
use super::handle::{DropMode, SlackStats};
use super::ids::{Ts, TsClock, slack_id, uuid};
use crate::util::{alnum_id, hex_id, unix_secs};

/// Settings that do not change while the simulator runs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub ack_timeout: Duration,
    pub max_retries: u32,
    pub disconnect_grace: Duration,
    pub max_connections: usize,
    pub ticket_ttl: Duration,
    pub echo_bot_messages: bool,
    pub link_disabled_error: String,
}

/// What the handle, the HTTP handlers and the connection tasks share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub settings: Settings,
    /// Woken (all waiters) after anything a test might wait for: a message, a connection
    /// opened or closed, an envelope sent or acked.
    pub changed: Notify,
    /// Wakes the redelivery task when a new ack deadline may be earlier than the one it
    /// sleeps on.
    pub retry_wake: Notify,
}

impl Shared {
    pub(crate) fn new(config: &SlackSimConfig) -> Result<Shared, SlackConfigError> {
        config.validate()?;
        Ok(Shared {
            state: Mutex::new(State::new(config)),
            settings: Settings {
                ack_timeout: config.ack_timeout,
                max_retries: config.max_retries,
                disconnect_grace: config.disconnect_grace,
                max_connections: config.max_connections_per_app,
                ticket_ttl: config.ticket_ttl,
                echo_bot_messages: config.echo_bot_messages,
                link_disabled_error: config.link_disabled_error.clone(),
            },
            changed: Notify::new(),
            retry_wake: Notify::new(),
        })
    }

    /// The workspace. A panic while it was held cannot leave it half-updated in a way that
    /// matters to a simulator, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn touch(&self) {
        self.changed.notify_waiters();
    }
}

pub(crate) struct Team {
    pub id: String,
    pub name: String,
    pub domain: String,
}

pub(crate) struct User {
    pub id: String,
    pub name: String,
}

pub(crate) struct App {
    pub name: String,
    pub app_id: String,
    pub app_token: String,
    pub bot_token: String,
    pub bot_user_id: String,
    pub bot_id: String,
    /// The legacy `token` field of event payloads.
    pub verification_token: String,
    pub scopes: BTreeSet<String>,
    pub created: u64,
    /// `disconnect` `link_disabled` was sent: `apps.connections.open` fails until re-enabled.
    pub link_disabled: bool,
    /// Applied to connections opened from now on (and to the open ones when it was set).
    pub pong_delay: Duration,
    /// Round-robin position for spreading envelopes over connections.
    pub rr: usize,
    /// Open connections, oldest first.
    pub conns: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    Public {
        name: String,
    },
    /// A DM between a human user (id) and an app's bot.
    Im {
        user: String,
        app: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Author {
    User(String),
    Bot(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub ts: Ts,
    /// The parent's ts, for thread replies only.
    pub thread_ts: Option<Ts>,
    pub author: Author,
    pub text: String,
    pub client_msg_id: Option<String>,
    /// `{"event_type": …, "event_payload": {…}}` as posted.
    pub metadata: Option<Value>,
}

pub(crate) struct Channel {
    pub id: String,
    pub kind: ChannelKind,
    pub created: u64,
    pub creator: String,
    /// User ids, bot user ids included.
    pub members: BTreeSet<String>,
    /// Every message, replies included, in ts order.
    pub msgs: Vec<Msg>,
    pub by_ts: HashMap<Ts, usize>,
    /// Parent ts → indices of its replies, in ts order.
    pub replies: HashMap<Ts, Vec<usize>>,
}

impl Channel {
    pub(crate) fn is_im(&self) -> bool {
        matches!(self.kind, ChannelKind::Im { .. })
    }

    pub(crate) fn im_app(&self) -> Option<usize> {
        match self.kind {
            ChannelKind::Im { app, .. } => Some(app),
            ChannelKind::Public { .. } => None,
        }
    }

    pub(crate) fn name(&self) -> Option<&str> {
        match &self.kind {
            ChannelKind::Public { name } => Some(name),
            ChannelKind::Im { .. } => None,
        }
    }

    pub(crate) fn msg(&self, ts: Ts) -> Option<&Msg> {
        self.by_ts.get(&ts).and_then(|i| self.msgs.get(*i))
    }
}

/// A connection's switches, read by its task and by the socket wrapper on every write.
#[derive(Debug, Default)]
pub(crate) struct ConnCtl {
    silent: AtomicBool,
    pong_delay_ms: AtomicU64,
}

impl ConnCtl {
    pub(crate) fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    pub(crate) fn silence(&self) {
        self.silent.store(true, Ordering::Relaxed);
    }

    pub(crate) fn pong_delay(&self) -> Duration {
        Duration::from_millis(self.pong_delay_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_pong_delay(&self, d: Duration) {
        self.pong_delay_ms.store(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What a connection task is asked to do.
#[derive(Debug)]
pub(crate) enum Out {
    Text(String),
    /// Send this `disconnect` message, then close after the delay (at once for `None`).
    Disconnect {
        text: String,
        close_after: Option<Duration>,
    },
    Close(DropMode),
}

pub(crate) struct Conn {
    pub app: usize,
    pub tx: mpsc::UnboundedSender<Out>,
    pub ctl: Arc<ConnCtl>,
    /// A `disconnect` was sent: new envelopes go elsewhere when another connection is open.
    pub draining: bool,
    pub opened: Instant,
    pub envelopes: u64,
}

pub(crate) struct Ticket {
    pub app: usize,
    pub expires: Instant,
}

/// An `events_api` envelope waiting for its ack.
pub(crate) struct Pending {
    pub app: usize,
    pub payload: Value,
    pub attempt: u32,
    pub envelope_ids: Vec<String>,
    pub deadline: Instant,
}

/// What an envelope id refers to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EnvelopeRef {
    /// An `events_api` delivery (retried until acked).
    Event(u64),
    /// A `slash_commands` or `interactive` envelope (sent once).
    Once,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Method (or `*`) → until, retry-after seconds.
    pub rate_limits: Vec<(String, Instant, u64)>,
    /// Token → error answered for it.
    pub bad_tokens: HashMap<String, String>,
    /// `chat.postMessage` hangs until this instant; `true` = the message is stored first.
    pub post_hang: Option<(Instant, bool)>,
    /// The next `n` `chat.postMessage` calls fail with this error and HTTP status.
    pub post_fail: Option<(u32, String, u16)>,
}

pub(crate) struct State {
    pub team: Team,
    pub users: Vec<User>,
    pub apps: Vec<App>,
    pub channels: Vec<Channel>,
    pub channel_ix: HashMap<String, usize>,
    pub clock: TsClock,
    seq: u64,
    pub conns: BTreeMap<u64, Conn>,
    pub tickets: HashMap<String, Ticket>,
    pub pending: HashMap<u64, Pending>,
    /// (deadline, delivery) of every pending envelope, earliest first.
    pub deadlines: BTreeSet<(Instant, u64)>,
    pub envelopes: HashMap<String, EnvelopeRef>,
    /// Acks of `Once` envelopes: envelope id → the ack's `payload`, if any.
    pub once_acks: HashMap<String, Option<Value>>,
    pub faults: Faults,
    pub stats: SlackStats,
}

impl State {
    fn new(config: &SlackSimConfig) -> State {
        let now = unix_secs();
        let mut st = State {
            team: Team { id: String::new(), name: config.team_name.clone(), domain: config.team_domain.clone() },
            users: Vec::new(),
            apps: Vec::new(),
            channels: Vec::new(),
            channel_ix: HashMap::new(),
            clock: TsClock::default(),
            seq: 0,
            conns: BTreeMap::new(),
            tickets: HashMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            envelopes: HashMap::new(),
            once_acks: HashMap::new(),
            faults: Faults::default(),
            stats: SlackStats::default(),
        };
        st.team.id = st.fresh_id("T");
        for name in &config.users {
            let id = st.fresh_id("U");
            st.users.push(User { id, name: name.clone() });
        }
        let founder = st.users.first().map(|u| u.id.clone()).unwrap_or_default();
        for name in &config.channels {
            let members = st.users.iter().map(|u| u.id.clone()).collect();
            st.add_channel(ChannelKind::Public { name: name.clone() }, founder.clone(), members);
        }
        for spec in &config.apps {
            let app_id = st.fresh_id("A");
            let n = st.next_seq();
            let app = App {
                name: spec.name.clone(),
                app_token: spec
                    .app_token
                    .clone()
                    .unwrap_or_else(|| format!("xapp-1-{app_id}-{n:013}-{}", hex_id("", 64))),
                bot_token: spec.bot_token.clone().unwrap_or_else(|| format!("xoxb-{n:013}-{}", alnum_id("", 24))),
                bot_user_id: st.fresh_id("U"),
                bot_id: st.fresh_id("B"),
                verification_token: alnum_id("", 24),
                scopes: spec.scopes.iter().cloned().collect(),
                created: now,
                link_disabled: false,
                pong_delay: Duration::ZERO,
                rr: 0,
                conns: Vec::new(),
                app_id,
            };
            let bot_user = app.bot_user_id.clone();
            st.apps.push(app);
            let ix = st.apps.len() - 1;
            for ch in &mut st.channels {
                let joins = match (&ch.kind, &spec.channels) {
                    (ChannelKind::Public { name }, Some(list)) => list.iter().any(|c| c == name),
                    (ChannelKind::Public { .. }, None) => true,
                    (ChannelKind::Im { .. }, _) => false,
                };
                if joins {
                    ch.members.insert(bot_user.clone());
                }
            }
            for u in 0..st.users.len() {
                st.ensure_dm(u, ix);
            }
        }
        st
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn fresh_id(&mut self, prefix: &str) -> String {
        let n = self.next_seq();
        slack_id(prefix, n)
    }

    pub(crate) fn add_channel(&mut self, kind: ChannelKind, creator: String, members: BTreeSet<String>) -> usize {
        let id = self.fresh_id(if matches!(kind, ChannelKind::Im { .. }) { "D" } else { "C" });
        self.channels.push(Channel {
            id: id.clone(),
            kind,
            created: unix_secs(),
            creator,
            members,
            msgs: Vec::new(),
            by_ts: HashMap::new(),
            replies: HashMap::new(),
        });
        let ix = self.channels.len() - 1;
        self.channel_ix.insert(id, ix);
        ix
    }

    /// The DM between user `u` and app `app`'s bot, created if needed.
    pub(crate) fn ensure_dm(&mut self, u: usize, app: usize) -> usize {
        let user = self.users[u].id.clone();
        if let Some(ix) = self.dm(&user, app) {
            return ix;
        }
        let members = [user.clone(), self.apps[app].bot_user_id.clone()].into_iter().collect();
        self.add_channel(ChannelKind::Im { user: user.clone(), app }, user, members)
    }

    pub(crate) fn dm(&self, user_id: &str, app: usize) -> Option<usize> {
        self.channels
            .iter()
            .position(|c| matches!(&c.kind, ChannelKind::Im { user, app: a } if user == user_id && *a == app))
    }

    /// An app by name or app id.
    pub(crate) fn app_ix(&self, key: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.name == key || a.app_id == key)
    }

    /// A human user by name or id.
    pub(crate) fn user_ix(&self, key: &str) -> Option<usize> {
        let key = key.strip_prefix('@').unwrap_or(key);
        self.users.iter().position(|u| u.name == key || u.id == key)
    }

    /// A channel by id, or a public channel by name (with or without `#`).
    pub(crate) fn find_channel(&self, key: &str) -> Option<usize> {
        if let Some(ix) = self.channel_ix.get(key) {
            return Some(*ix);
        }
        let name = key.strip_prefix('#').unwrap_or(key);
        self.channels.iter().position(|c| c.name() == Some(name))
    }

    /// The user id a message is from (the bot user's id for bot messages).
    pub(crate) fn author_user_id(&self, author: &Author) -> String {
        match author {
            Author::User(id) => id.clone(),
            Author::Bot(app) => self.apps[*app].bot_user_id.clone(),
        }
    }

    /// Stores a message (a reply when `thread` is the parent's ts) and returns its index.
    pub(crate) fn store(
        &mut self,
        ch: usize,
        author: Author,
        text: String,
        thread: Option<Ts>,
        client_msg_id: Option<String>,
        metadata: Option<Value>,
    ) -> usize {
        let ts = self.clock.next();
        match author {
            Author::User(_) => self.stats.user_messages += 1,
            Author::Bot(_) => self.stats.bot_messages += 1,
        }
        let c = &mut self.channels[ch];
        c.msgs.push(Msg { ts, thread_ts: thread, author, text, client_msg_id, metadata });
        let ix = c.msgs.len() - 1;
        c.by_ts.insert(ts, ix);
        if let Some(parent) = thread {
            c.replies.entry(parent).or_default().push(ix);
        }
        ix
    }

    /// The thread a new reply to `ts` belongs to: a reply's ts means its parent's thread.
    pub(crate) fn thread_root(&self, ch: usize, ts: Ts) -> Option<Ts> {
        self.channels[ch].msg(ts).map(|m| m.thread_ts.unwrap_or(m.ts))
    }

    // ---- Socket Mode connections ----

    /// Registers a connection of `app`. The `hello` (or, over the limit, a `disconnect`
    /// `too_many_websockets`) is queued before anything else can be.
    pub(crate) fn open_conn(
        &mut self,
        settings: &Settings,
        app: usize,
        tx: mpsc::UnboundedSender<Out>,
        ctl: Arc<ConnCtl>,
    ) -> Option<u64> {
        let id = self.next_seq();
        let host = format!("applink-sim-{id}");
        if self.apps[app].conns.len() >= settings.max_connections {
            let text = disconnect_json("too_many_websockets", &host);
            let _ = tx.send(Out::Disconnect { text, close_after: None });
            *self.stats.disconnects_sent.entry("too_many_websockets".to_owned()).or_default() += 1;
            return None;
        }
        ctl.set_pong_delay(self.apps[app].pong_delay);
        self.apps[app].conns.push(id);
        let num = self.apps[app].conns.len();
        let hello = serde_json::json!({
            "type": "hello",
            "num_connections": num,
            "debug_info": {"host": host, "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.apps[app].app_id},
        });
        let _ = tx.send(Out::Text(hello.to_string()));
        self.conns.insert(id, Conn { app, tx, ctl, draining: false, opened: Instant::now(), envelopes: 0 });
        self.stats.connections_opened += 1;
        Some(id)
    }

    pub(crate) fn close_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            self.apps[c.app].conns.retain(|x| *x != id);
            self.stats.connections_closed += 1;
        }
    }

    /// The connection of `app` the next envelope goes to: round robin over the open ones,
    /// skipping those that were sent a `disconnect` while another is available.
    pub(crate) fn pick_conn(&mut self, app: usize) -> Option<u64> {
        let a = &mut self.apps[app];
        let fresh: Vec<u64> =
            a.conns.iter().copied().filter(|id| self.conns.get(id).is_some_and(|c| !c.draining)).collect();
        let pool = if fresh.is_empty() { a.conns.clone() } else { fresh };
        if pool.is_empty() {
            return None;
        }
        a.rr = a.rr.wrapping_add(1);
        pool.get(a.rr % pool.len()).copied()
    }

    /// Sends `disconnect` with `reason` to every connection of `app`; returns how many.
    pub(crate) fn disconnect_app(&mut self, app: usize, reason: &str, close_after: Option<Duration>) -> usize {
        let ids = self.apps[app].conns.clone();
        for id in &ids {
            if let Some(c) = self.conns.get_mut(id) {
                c.draining = true;
                let text = disconnect_json(reason, &format!("applink-sim-{id}"));
                let _ = c.tx.send(Out::Disconnect { text, close_after });
            }
        }
        *self.stats.disconnects_sent.entry(reason.to_owned()).or_default() += ids.len() as u64;
        ids.len()
    }

    pub(crate) fn drop_app(&mut self, app: usize, mode: DropMode) -> usize {
        let ids = self.apps[app].conns.clone();
        for id in &ids {
            if let Some(c) = self.conns.get(id) {
                let _ = c.tx.send(Out::Close(mode));
            }
        }
        ids.len()
    }

    pub(crate) fn silence_app(&mut self, app: usize) -> usize {
        let ids = self.apps[app].conns.clone();
        for id in &ids {
            if let Some(c) = self.conns.get(id) {
                c.ctl.silence();
            }
        }
        ids.len()
    }

    pub(crate) fn set_pong_delay(&mut self, app: usize, d: Duration) -> usize {
        self.apps[app].pong_delay = d;
        let ids = self.apps[app].conns.clone();
        for id in &ids {
            if let Some(c) = self.conns.get(id) {
                c.ctl.set_pong_delay(d);
            }
        }
        ids.len()
    }

    /// A one-time Socket Mode ticket for `app`; expired tickets are forgotten on the way.
    pub(crate) fn issue_ticket(&mut self, settings: &Settings, app: usize) -> String {
        let now = Instant::now();
        self.tickets.retain(|_, t| t.expires > now);
        let ticket = uuid();
        self.tickets.insert(ticket.clone(), Ticket { app, expires: now + settings.ticket_ttl });
        ticket
    }

    /// Uses up a ticket: the app it was issued to, if it is still valid and the app's link is
    /// enabled.
    pub(crate) fn redeem_ticket(&mut self, ticket: &str) -> Option<usize> {
        let t = self.tickets.remove(ticket)?;
        (t.expires > Instant::now() && !self.apps[t.app].link_disabled).then_some(t.app)
    }
}

pub(crate) fn disconnect_json(reason: &str, host: &str) -> String {
    serde_json::json!({"type": "disconnect", "reason": reason, "debug_info": {"host": host}}).to_string()
}

/// The bots mentioned in `text` (`<@U123>` or `<@U123|name>`).
pub(crate) fn mentioned_apps(apps: &[App], text: &str) -> Vec<usize> {
    apps.iter()
        .enumerate()
        .filter(|(_, a)| {
            let tag = format!("<@{}", a.bot_user_id);
            text.match_indices(&tag).any(|(i, _)| matches!(text.as_bytes().get(i + tag.len()), Some(b'>' | b'|')))
        })
        .map(|(i, _)| i)
        .collect()
}
