//! The caller's window on a Slack simulator: simulated users posting, faults, envelopes,
//! counters, recorded messages and the exactly-once report.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{SlackConfigError, SlackSimConfig, valid_name};
use super::delivery::{Delivery, EnvelopeKind};
use super::ids::{Ts, upper_alnum, uuid};
use super::report::{AppReport, ExactlyOnceReport};
use super::state::{Author, ChannelKind, Shared, State};

/// Cheap-to-clone handle on a simulated workspace. Made from a config, then given to
/// [`crate::slack::serve`] (or made by [`crate::slack::spawn`]).
#[derive(Clone)]
pub struct SlackHandle {
    pub(crate) inner: Arc<Shared>,
}

/// How [`SlackFault::DropConnections`] ends a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropMode {
    /// A WebSocket close frame (1000), then the TCP close.
    #[default]
    Close,
    /// TCP FIN without a close frame (the client sees the stream end).
    Eof,
    /// TCP RST without a close frame (the client sees "connection reset").
    Reset,
}

/// The `reason` of a Socket Mode `disconnect` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The connection closes after a grace period; the client should open a new one first.
    Warning,
    /// Slack asks for a new connection (it closes this one after the grace period too).
    RefreshRequested,
    /// Socket Mode was turned off for the app: the connection closes at once and
    /// `apps.connections.open` fails until [`SlackFault::EnableLink`].
    LinkDisabled,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Warning => "warning",
            DisconnectReason::RefreshRequested => "refresh_requested",
            DisconnectReason::LinkDisabled => "link_disabled",
        }
    }
}

/// A fault, from the library ([`SlackHandle::inject`]) or as JSON (`POST /_sim/faults`,
/// tagged by `kind`). Connection faults act on the connections open at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SlackFault {
    /// End every open socket of the app.
    DropConnections {
        app: String,
        #[serde(default)]
        mode: DropMode,
    },
    /// Half-open: the app's open sockets stay connected but nothing goes out any more (pings
    /// get no pong, envelopes vanish) and what comes in (acks) is ignored. Permanent for
    /// those sockets; new connections are healthy.
    Silence { app: String },
    /// After each ping, the connection waits this long before it answers (and before it
    /// sends anything else); `0` clears it. Applies to new connections too.
    PongDelay { app: String, ms: u64 },
    /// Send `disconnect` with this reason to every open socket of the app. `grace_ms`
    /// overrides the config's `disconnect_grace` (`warning`, `refresh_requested`) or delays
    /// the close (`link_disabled`, default at once).
    Disconnect {
        app: String,
        reason: DisconnectReason,
        #[serde(default)]
        grace_ms: Option<u64>,
    },
    /// Undo `link_disabled`: `apps.connections.open` works again.
    EnableLink { app: String },
    /// `chat.postMessage` calls arriving in the next `duration_ms` hang until it ends. With
    /// `commit`, the message is stored (and delivered) at once and only the answer is held
    /// back, as when a response is lost; without, nothing happens until the end (if the
    /// client gave up by then, nothing is posted).
    HangPosts {
        duration_ms: u64,
        #[serde(default)]
        commit: bool,
    },
    /// The next `count` `chat.postMessage` calls fail with `{"ok": false, "error": error}`
    /// and HTTP `status`, and post nothing.
    FailPosts {
        count: u32,
        #[serde(default = "default_post_error")]
        error: String,
        #[serde(default = "default_status")]
        status: u16,
    },
    /// Every call of `method` (`*` = all) in the next `duration_ms` gets HTTP 429,
    /// `Retry-After: retry_after_secs` and `{"ok": false, "error": "ratelimited"}`.
    RateLimit {
        method: String,
        duration_ms: u64,
        #[serde(default = "default_retry_after")]
        retry_after_secs: u64,
    },
    /// Calls with this token fail with `error` (e.g. `invalid_auth`, `token_revoked`).
    InvalidToken {
        token: String,
        #[serde(default = "default_token_error")]
        error: String,
    },
    /// Undo `invalid_token`.
    RestoreToken { token: String },
}

fn default_post_error() -> String {
    "internal_error".to_owned()
}

fn default_status() -> u16 {
    200
}

fn default_retry_after() -> u64 {
    1
}

fn default_token_error() -> String {
    "invalid_auth".to_owned()
}

/// Counters since the handle was made (or [`SlackHandle::reset_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackStats {
    /// Web API calls by method (admin calls not counted).
    pub api_calls: BTreeMap<String, u64>,
    /// `{"ok": false}` answers by error code (`ratelimited` included).
    pub api_errors: BTreeMap<String, u64>,
    pub connections_opened: u64,
    pub connections_closed: u64,
    /// By reason.
    pub disconnects_sent: BTreeMap<String, u64>,
    /// Envelopes written to a connection, redeliveries included.
    pub envelopes_sent: u64,
    pub envelopes_retried: u64,
    pub envelopes_acked: u64,
    /// Acks for envelopes nobody waits for any more (late, duplicate or made up).
    pub acks_unknown: u64,
    /// Events given up on after the last retry (or with no connection left to retry on).
    pub events_dropped: u64,
    /// Events not sent because the app had no open connection when the message was posted.
    pub events_undelivered: u64,
    pub pings_answered: u64,
    /// Pings that reached a silenced connection.
    pub pings_ignored: u64,
    pub user_messages: u64,
    pub bot_messages: u64,
}

/// The workspace as a client needs to know it (tokens included: it is a simulator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    pub team_id: String,
    pub team_name: String,
    pub team_domain: String,
    pub users: Vec<UserInfo>,
    pub channels: Vec<ChannelInfo>,
    pub apps: Vec<AppInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub id: String,
    /// `None` for DMs.
    pub name: Option<String>,
    pub is_im: bool,
    /// DMs: the human user's id.
    pub user: Option<String>,
    /// DMs: the app whose bot is the other side.
    pub app: Option<String>,
    /// User ids, bots included.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    pub app_id: String,
    pub app_token: String,
    pub bot_token: String,
    pub bot_user_id: String,
    pub bot_id: String,
    pub link_disabled: bool,
    pub connections: usize,
}

/// An open Socket Mode connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub app: String,
    pub age_ms: u64,
    pub silent: bool,
    /// A `disconnect` was sent to it.
    pub draining: bool,
    /// Envelopes written to it.
    pub envelopes: u64,
}

/// A message in the workspace, from a simulated user or a bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedMessage {
    pub channel: String,
    pub ts: String,
    /// The parent's ts, for thread replies.
    pub thread_ts: Option<String>,
    /// User id (the bot user's id for bot messages).
    pub user: String,
    /// The app, for bot messages.
    pub app: Option<String>,
    pub text: String,
    pub metadata: Option<Value>,
}

/// What [`SlackHandle::post_user_message`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedMessage {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    /// The events sent for it, one per app and event type.
    pub deliveries: Vec<Delivery>,
}

/// A handle call that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SlackSimError {
    #[error("unknown app {0:?}")]
    UnknownApp(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    #[error("no message {ts:?} in channel {channel:?}")]
    UnknownThread { channel: String, ts: String },
    #[error("{who:?} is not a member of channel {channel:?}")]
    NotInChannel { who: String, channel: String },
    #[error("channel {0:?} already exists")]
    ChannelExists(String),
    #[error("invalid channel name {0:?}")]
    BadChannelName(String),
    #[error("message text must not be empty")]
    EmptyText,
    #[error("invalid fault: {0}")]
    InvalidFault(String),
    #[error(transparent)]
    Config(#[from] SlackConfigError),
    #[error("slack simulator i/o: {0}")]
    Io(#[from] io::Error),
}

impl SlackSimError {
    /// The admin API's HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            SlackSimError::UnknownApp(_)
            | SlackSimError::UnknownUser(_)
            | SlackSimError::UnknownChannel(_)
            | SlackSimError::UnknownThread { .. } => 404,
            SlackSimError::ChannelExists(_) => 409,
            SlackSimError::Io(_) => 500,
            _ => 400,
        }
    }
}

impl SlackHandle {
    /// Builds the workspace: ids and tokens are fixed from here on.
    pub fn new(config: SlackSimConfig) -> Result<SlackHandle, SlackConfigError> {
        Ok(SlackHandle { inner: Arc::new(Shared::new(&config)?) })
    }

    /// Team, users, channels, DMs and apps with their tokens.
    pub fn workspace(&self) -> WorkspaceInfo {
        let st = self.inner.lock();
        WorkspaceInfo {
            team_id: st.team.id.clone(),
            team_name: st.team.name.clone(),
            team_domain: st.team.domain.clone(),
            users: st.users.iter().map(|u| UserInfo { id: u.id.clone(), name: u.name.clone() }).collect(),
            channels: st
                .channels
                .iter()
                .map(|c| ChannelInfo {
                    id: c.id.clone(),
                    name: c.name().map(str::to_owned),
                    is_im: c.is_im(),
                    user: match &c.kind {
                        ChannelKind::Im { user, .. } => Some(user.clone()),
                        ChannelKind::Public { .. } => None,
                    },
                    app: c.im_app().map(|a| st.apps[a].name.clone()),
                    members: c.members.iter().cloned().collect(),
                })
                .collect(),
            apps: (0..st.apps.len()).map(|a| app_info(&st, a)).collect(),
        }
    }

    /// An app by name or app id.
    pub fn app(&self, app: &str) -> Option<AppInfo> {
        let st = self.inner.lock();
        st.app_ix(app).map(|a| app_info(&st, a))
    }

    /// A user's id by name (or id).
    pub fn user_id(&self, user: &str) -> Option<String> {
        let st = self.inner.lock();
        st.user_ix(user).map(|u| st.users[u].id.clone())
    }

    /// A public channel's id by name (or id).
    pub fn channel_id(&self, channel: &str) -> Option<String> {
        let st = self.inner.lock();
        st.find_channel(channel).map(|c| st.channels[c].id.clone())
    }

    /// The id of the DM between `user` and `app`'s bot.
    pub fn dm_channel(&self, user: &str, app: &str) -> Option<String> {
        let st = self.inner.lock();
        let uid = &st.users[st.user_ix(user)?].id;
        st.dm(uid, st.app_ix(app)?).map(|c| st.channels[c].id.clone())
    }

    /// A new public channel with every user and the bots of `apps`; returns its id.
    pub fn create_channel(&self, name: &str, apps: &[&str]) -> Result<String, SlackSimError> {
        let mut st = self.inner.lock();
        if !valid_name(name) {
            return Err(SlackSimError::BadChannelName(name.to_owned()));
        }
        if st.channels.iter().any(|c| c.name() == Some(name)) {
            return Err(SlackSimError::ChannelExists(name.to_owned()));
        }
        let mut members: BTreeSet<String> = st.users.iter().map(|u| u.id.clone()).collect();
        for a in apps {
            let ix = st.app_ix(a).ok_or_else(|| SlackSimError::UnknownApp((*a).to_owned()))?;
            members.insert(st.apps[ix].bot_user_id.clone());
        }
        let creator = st.users.first().map(|u| u.id.clone()).unwrap_or_default();
        let ix = st.add_channel(ChannelKind::Public { name: name.to_owned() }, creator, members);
        Ok(st.channels[ix].id.clone())
    }

    /// Adds `app`'s bot to a public channel (no-op if it is already there).
    pub fn add_bot_to_channel(&self, app: &str, channel: &str) -> Result<(), SlackSimError> {
        let mut st = self.inner.lock();
        let a = st.app_ix(app).ok_or_else(|| SlackSimError::UnknownApp(app.to_owned()))?;
        let c = st.find_channel(channel).ok_or_else(|| SlackSimError::UnknownChannel(channel.to_owned()))?;
        if st.channels[c].is_im() {
            return Err(SlackSimError::UnknownChannel(channel.to_owned()));
        }
        let bot = st.apps[a].bot_user_id.clone();
        st.channels[c].members.insert(bot);
        Ok(())
    }

    /// A simulated user posts `text` in `channel` (id, or public channel name), in the thread
    /// of `thread_ts` if given (a reply's ts means its parent's thread). The message is
    /// stored and sent live to the connected apps whose bots are in the conversation; apps
    /// with no open connection never get it over the socket.
    pub fn post_user_message(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> Result<PostedMessage, SlackSimError> {
        let posted = {
            let mut st = self.inner.lock();
            let u = st.user_ix(user).ok_or_else(|| SlackSimError::UnknownUser(user.to_owned()))?;
            let ch = st.find_channel(channel).ok_or_else(|| SlackSimError::UnknownChannel(channel.to_owned()))?;
            let uid = st.users[u].id.clone();
            if !st.channels[ch].members.contains(&uid) {
                return Err(SlackSimError::NotInChannel { who: user.to_owned(), channel: channel.to_owned() });
            }
            if text.is_empty() {
                return Err(SlackSimError::EmptyText);
            }
            let thread = match thread_ts {
                None => None,
                Some(t) => {
                    let unknown = || SlackSimError::UnknownThread { channel: channel.to_owned(), ts: t.to_owned() };
                    let ts = Ts::parse(t).ok_or_else(unknown)?;
                    Some(st.thread_root(ch, ts).ok_or_else(unknown)?)
                }
            };
            let idx = st.store(ch, Author::User(uid), text.to_owned(), thread, Some(uuid()), None);
            let deliveries = st.dispatch(&self.inner.settings, ch, idx);
            let c = &st.channels[ch];
            PostedMessage {
                channel: c.id.clone(),
                ts: c.msgs[idx].ts.to_string(),
                thread_ts: thread.map(|t| t.to_string()),
                deliveries,
            }
        };
        self.inner.sent();
        Ok(posted)
    }

    /// Applies a fault; returns how many connections it touched (0 for API faults).
    pub fn inject(&self, fault: SlackFault) -> Result<usize, SlackSimError> {
        let now = Instant::now();
        let settings = &self.inner.settings;
        let affected = {
            let mut st = self.inner.lock();
            let app =
                |st: &State, name: &str| st.app_ix(name).ok_or_else(|| SlackSimError::UnknownApp(name.to_owned()));
            match fault {
                SlackFault::DropConnections { app: name, mode } => {
                    let a = app(&st, &name)?;
                    st.drop_app(a, mode)
                }
                SlackFault::Silence { app: name } => {
                    let a = app(&st, &name)?;
                    st.silence_app(a)
                }
                SlackFault::PongDelay { app: name, ms } => {
                    let a = app(&st, &name)?;
                    st.set_pong_delay(a, Duration::from_millis(ms))
                }
                SlackFault::Disconnect { app: name, reason, grace_ms } => {
                    let a = app(&st, &name)?;
                    let grace = grace_ms.map(Duration::from_millis);
                    match reason {
                        DisconnectReason::LinkDisabled => {
                            st.apps[a].link_disabled = true;
                            st.disconnect_app(a, reason.as_str(), grace)
                        }
                        _ => st.disconnect_app(a, reason.as_str(), Some(grace.unwrap_or(settings.disconnect_grace))),
                    }
                }
                SlackFault::EnableLink { app: name } => {
                    let a = app(&st, &name)?;
                    st.apps[a].link_disabled = false;
                    0
                }
                SlackFault::HangPosts { duration_ms, commit } => {
                    st.faults.post_hang = Some((now + Duration::from_millis(duration_ms), commit));
                    0
                }
                SlackFault::FailPosts { count, error, status } => {
                    if !(200..=599).contains(&status) {
                        return Err(SlackSimError::InvalidFault(format!(
                            "status {status} is not an HTTP error status"
                        )));
                    }
                    st.faults.post_fail = (count > 0).then_some((count, error, status));
                    0
                }
                SlackFault::RateLimit { method, duration_ms, retry_after_secs } => {
                    if method.is_empty() {
                        return Err(SlackSimError::InvalidFault("method must not be empty".to_owned()));
                    }
                    st.faults.rate_limits.retain(|(_, until, _)| *until > now);
                    st.faults.rate_limits.push((method, now + Duration::from_millis(duration_ms), retry_after_secs));
                    0
                }
                SlackFault::InvalidToken { token, error } => {
                    st.faults.bad_tokens.insert(token, error);
                    0
                }
                SlackFault::RestoreToken { token } => {
                    st.faults.bad_tokens.remove(&token);
                    0
                }
            }
        };
        self.inner.touch();
        Ok(affected)
    }

    /// Ends every socket of `app`.
    pub fn drop_connections(&self, app: &str, mode: DropMode) -> Result<usize, SlackSimError> {
        self.inject(SlackFault::DropConnections { app: app.to_owned(), mode })
    }

    /// Makes every open socket of `app` half-open (see [`SlackFault::Silence`]).
    pub fn silence(&self, app: &str) -> Result<usize, SlackSimError> {
        self.inject(SlackFault::Silence { app: app.to_owned() })
    }

    /// Delays pongs on `app`'s sockets (see [`SlackFault::PongDelay`]).
    pub fn set_pong_delay(&self, app: &str, delay: Duration) -> Result<usize, SlackSimError> {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inject(SlackFault::PongDelay { app: app.to_owned(), ms })
    }

    /// Sends `disconnect` to every socket of `app` (see [`SlackFault::Disconnect`]).
    pub fn disconnect(
        &self,
        app: &str,
        reason: DisconnectReason,
        grace: Option<Duration>,
    ) -> Result<usize, SlackSimError> {
        let grace_ms = grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
        self.inject(SlackFault::Disconnect { app: app.to_owned(), reason, grace_ms })
    }

    /// Ends every fault: rate limits, post faults, bad tokens, pong delays and disabled
    /// links. Silenced sockets stay silent (a half-open socket does not heal).
    pub fn clear_faults(&self) {
        let mut st = self.inner.lock();
        st.faults = Default::default();
        for a in 0..st.apps.len() {
            st.apps[a].link_disabled = false;
            st.set_pong_delay(a, Duration::ZERO);
        }
        drop(st);
        self.inner.touch();
    }

    /// Sends an envelope with a caller-made payload to one connection of `app`; returns its
    /// envelope id, or `None` if the app has no open connection. Only `events_api` envelopes
    /// are redelivered when unacked.
    pub fn send_envelope(
        &self,
        app: &str,
        kind: EnvelopeKind,
        payload: Value,
    ) -> Result<Option<String>, SlackSimError> {
        let id = {
            let mut st = self.inner.lock();
            let a = st.app_ix(app).ok_or_else(|| SlackSimError::UnknownApp(app.to_owned()))?;
            st.send_custom(&self.inner.settings, a, kind, payload)
        };
        self.inner.sent();
        Ok(id)
    }

    /// A `slash_commands` envelope as Slack sends it when `user` runs `command text` in
    /// `channel`.
    pub fn send_slash_command(
        &self,
        app: &str,
        channel: &str,
        user: &str,
        command: &str,
        text: &str,
    ) -> Result<Option<String>, SlackSimError> {
        let payload = {
            let st = self.inner.lock();
            let a = st.app_ix(app).ok_or_else(|| SlackSimError::UnknownApp(app.to_owned()))?;
            let u = st.user_ix(user).ok_or_else(|| SlackSimError::UnknownUser(user.to_owned()))?;
            let c = st.find_channel(channel).ok_or_else(|| SlackSimError::UnknownChannel(channel.to_owned()))?;
            let (app, user, ch) = (&st.apps[a], &st.users[u], &st.channels[c]);
            json!({
                "token": app.verification_token,
                "team_id": st.team.id,
                "team_domain": st.team.domain,
                "channel_id": ch.id,
                "channel_name": ch.name().unwrap_or("directmessage"),
                "user_id": user.id,
                "user_name": user.name,
                "command": command,
                "text": text,
                "api_app_id": app.app_id,
                "is_enterprise_install": "false",
                "response_url": format!("https://hooks.slack.com/commands/{}/{}/{}", st.team.id, fastrand::u64(..), upper_alnum(24)),
                "trigger_id": format!("{}.{}.{}", fastrand::u64(..), fastrand::u64(..), upper_alnum(32).to_lowercase()),
            })
        };
        self.send_envelope(app, EnvelopeKind::SlashCommands, payload)
    }

    /// The ack of a `slash_commands` / `interactive` envelope: `None` if not acked yet,
    /// `Some(payload)` once acked (`payload` is what the ack carried, if anything).
    pub fn envelope_ack(&self, envelope_id: &str) -> Option<Option<Value>> {
        self.inner.lock().once_acks.get(envelope_id).cloned()
    }

    /// Open connections of `app`, oldest first (unknown app: none).
    pub fn connections(&self, app: &str) -> Vec<ConnectionInfo> {
        let st = self.inner.lock();
        let Some(a) = st.app_ix(app) else { return Vec::new() };
        st.apps[a]
            .conns
            .iter()
            .filter_map(|id| {
                st.conns.get(id).map(|c| ConnectionInfo {
                    id: *id,
                    app: st.apps[a].name.clone(),
                    age_ms: u64::try_from(c.opened.elapsed().as_millis()).unwrap_or(u64::MAX),
                    silent: c.ctl.is_silent(),
                    draining: c.draining,
                    envelopes: c.envelopes,
                })
            })
            .collect()
    }

    pub fn connection_count(&self, app: &str) -> usize {
        let st = self.inner.lock();
        st.app_ix(app).map_or(0, |a| st.apps[a].conns.len())
    }

    /// Every message (users' and bots'), in ts order.
    pub fn messages(&self) -> Vec<RecordedMessage> {
        let st = self.inner.lock();
        let mut out: Vec<(Ts, RecordedMessage)> = Vec::new();
        for c in &st.channels {
            for m in &c.msgs {
                out.push((
                    m.ts,
                    RecordedMessage {
                        channel: c.id.clone(),
                        ts: m.ts.to_string(),
                        thread_ts: m.thread_ts.map(|t| t.to_string()),
                        user: st.author_user_id(&m.author),
                        app: match m.author {
                            Author::Bot(a) => Some(st.apps[a].name.clone()),
                            Author::User(_) => None,
                        },
                        text: m.text.clone(),
                        metadata: m.metadata.clone(),
                    },
                ));
            }
        }
        out.sort_by_key(|(ts, _)| *ts);
        out.into_iter().map(|(_, m)| m).collect()
    }

    pub fn stats(&self) -> SlackStats {
        self.inner.lock().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.inner.lock().stats = SlackStats::default();
    }

    /// For each user message addressed to `app`'s bot, how many bot replies answer it (see
    /// [`crate::slack`] for the rules).
    pub fn report(&self, app: &str) -> Result<AppReport, SlackSimError> {
        let st = self.inner.lock();
        let a = st.app_ix(app).ok_or_else(|| SlackSimError::UnknownApp(app.to_owned()))?;
        Ok(st.reports().swap_remove(a))
    }

    /// Every (user message, addressed app) pair: sent, answered exactly once, unanswered,
    /// answered more than once.
    pub fn exactly_once_report(&self) -> ExactlyOnceReport {
        ExactlyOnceReport::from_reports(&self.inner.lock().reports())
    }

    /// Waits until `f` holds (checked after every change to the workspace) or `timeout`
    /// passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut f: impl FnMut(&SlackHandle) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if f(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return f(self);
            }
        }
    }

    /// Waits until `app` has exactly `n` open connections.
    pub async fn wait_for_connections(&self, app: &str, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |h| h.connection_count(app) == n).await
    }
}

fn app_info(st: &State, a: usize) -> AppInfo {
    let app = &st.apps[a];
    AppInfo {
        name: app.name.clone(),
        app_id: app.app_id.clone(),
        app_token: app.app_token.clone(),
        bot_token: app.bot_token.clone(),
        bot_user_id: app.bot_user_id.clone(),
        bot_id: app.bot_id.clone(),
        link_disabled: app.link_disabled,
        connections: app.conns.len(),
    }
}

impl Shared {
    /// After envelopes were sent: the redelivery task may have a new deadline to watch, and
    /// waiters may have something to see.
    pub(crate) fn sent(&self) {
        self.retry_wake.notify_one();
        self.touch();
    }
}
