//! What a Slack simulator is made of (team, users, channels, apps) and its timing knobs.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

/// Scopes a simulated bot token has unless its [`AppSpec`] says otherwise: enough for every
/// method the simulator serves.
pub const DEFAULT_BOT_SCOPES: &[&str] = &[
    "app_mentions:read",
    "channels:history",
    "channels:read",
    "chat:write",
    "groups:history",
    "groups:read",
    "im:history",
    "im:read",
    "im:write",
    "mpim:history",
    "mpim:read",
    "users:read",
];

/// One Slack app installed in the simulated workspace: an app-level token (`xapp-…`) for
/// Socket Mode and a bot token (`xoxb-…`) for the Web API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// Unique; also the bot's user name. Handle and admin calls name the app by this (or by
    /// its app id).
    pub name: String,
    /// `None` = generated (printed by [`crate::slack::SlackHandle::workspace`]).
    pub app_token: Option<String>,
    /// `None` = generated.
    pub bot_token: Option<String>,
    /// Channels (by name) the bot is added to; `None` = every channel of the config. The bot
    /// always has a DM with every user.
    pub channels: Option<Vec<String>>,
    /// Scopes of the bot token ([`DEFAULT_BOT_SCOPES`] by default).
    pub scopes: Vec<String>,
}

impl AppSpec {
    /// An app with generated tokens, in every channel, with [`DEFAULT_BOT_SCOPES`].
    pub fn new(name: impl Into<String>) -> Self {
        AppSpec {
            name: name.into(),
            app_token: None,
            bot_token: None,
            channels: None,
            scopes: DEFAULT_BOT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Fixed tokens instead of generated ones (so a config file can name them in advance).
    pub fn tokens(mut self, app_token: impl Into<String>, bot_token: impl Into<String>) -> Self {
        self.app_token = Some(app_token.into());
        self.bot_token = Some(bot_token.into());
        self
    }

    /// The bot joins only these channels (by name).
    pub fn channels<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.channels = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Replaces the bot token's scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

/// Parses a command-line app: `NAME` (generated tokens) or `NAME=APP_TOKEN,BOT_TOKEN`.
impl FromStr for AppSpec {
    type Err = SlackConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SlackConfigError::BadAppSpec(s.to_owned());
        match s.split_once('=') {
            None if !s.trim().is_empty() => Ok(AppSpec::new(s.trim())),
            None => Err(bad()),
            Some((name, tokens)) => {
                let (app, bot) = tokens.split_once(',').ok_or_else(bad)?;
                if name.trim().is_empty() || app.trim().is_empty() || bot.trim().is_empty() {
                    return Err(bad());
                }
                Ok(AppSpec::new(name.trim()).tokens(app.trim(), bot.trim()))
            }
        }
    }
}

/// A simulated workspace and how its Socket Mode behaves. `Default` is one team with users
/// `alice`, `bob`, `carol`, channels `general` and `random`, no apps, and Slack's timings.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackSimConfig {
    pub team_name: String,
    /// `auth.test` answers `https://<team_domain>.slack.com/`.
    pub team_domain: String,
    /// Human users (names); each is a member of every public channel and has a DM with every
    /// bot.
    pub users: Vec<String>,
    /// Public channels (names without `#`).
    pub channels: Vec<String>,
    pub apps: Vec<AppSpec>,
    /// How long an `events_api` envelope may wait for its ack before it is sent again (Slack:
    /// 3 s).
    pub ack_timeout: Duration,
    /// Redeliveries of an unacked `events_api` envelope before it is dropped (Slack: 3).
    pub max_retries: u32,
    /// Between a `disconnect` (`warning`, `refresh_requested`) and the close of that
    /// connection, unless the fault names its own (Slack warns about 10 s ahead).
    pub disconnect_grace: Duration,
    /// Open connections per app; one more gets `disconnect` `too_many_websockets` (Slack: 10).
    pub max_connections_per_app: usize,
    /// How long a URL from `apps.connections.open` can be used (once).
    pub ticket_ttl: Duration,
    /// Deliver the bots' own `chat.postMessage` messages as `message` events to the apps in
    /// the channel, as Slack does (a client must ignore its own messages).
    pub echo_bot_messages: bool,
    /// The error `apps.connections.open` answers for an app whose Socket Mode link was
    /// disabled. Slack does not document this case; `access_denied` is an assumption.
    pub link_disabled_error: String,
}

impl Default for SlackSimConfig {
    fn default() -> Self {
        SlackSimConfig {
            team_name: "Flotilla Sim".to_owned(),
            team_domain: "flotilla-sim".to_owned(),
            users: ["alice", "bob", "carol"].map(String::from).to_vec(),
            channels: ["general", "random"].map(String::from).to_vec(),
            apps: Vec::new(),
            ack_timeout: Duration::from_secs(3),
            max_retries: 3,
            disconnect_grace: Duration::from_secs(10),
            max_connections_per_app: 10,
            ticket_ttl: Duration::from_secs(60),
            echo_bot_messages: true,
            link_disabled_error: "access_denied".to_owned(),
        }
    }
}

impl SlackSimConfig {
    /// The default workspace with one app per name (generated tokens, in every channel): what
    /// `flotilla sim slack --app NAME...` builds.
    pub fn with_apps<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SlackSimConfig { apps: names.into_iter().map(|n| AppSpec::new(n)).collect(), ..Self::default() }
    }

    /// Adds an app.
    pub fn app(mut self, spec: AppSpec) -> Self {
        self.apps.push(spec);
        self
    }

    /// Every problem with the config, first one wins.
    pub fn validate(&self) -> Result<(), SlackConfigError> {
        let mut users = BTreeSet::new();
        for u in &self.users {
            if !valid_name(u) {
                return Err(SlackConfigError::BadName(u.clone()));
            }
            if !users.insert(u.as_str()) {
                return Err(SlackConfigError::DuplicateUser(u.clone()));
            }
        }
        let mut channels = BTreeSet::new();
        for c in &self.channels {
            if !valid_name(c) {
                return Err(SlackConfigError::BadName(c.clone()));
            }
            if !channels.insert(c.as_str()) {
                return Err(SlackConfigError::DuplicateChannel(c.clone()));
            }
        }
        let mut apps = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        for a in &self.apps {
            if !valid_name(&a.name) {
                return Err(SlackConfigError::BadName(a.name.clone()));
            }
            if !apps.insert(a.name.as_str()) {
                return Err(SlackConfigError::DuplicateApp(a.name.clone()));
            }
            if let Some(t) = &a.app_token {
                if !t.starts_with("xapp-") {
                    return Err(SlackConfigError::BadAppToken { app: a.name.clone() });
                }
                if !tokens.insert(t.as_str()) {
                    return Err(SlackConfigError::DuplicateToken { app: a.name.clone() });
                }
            }
            if let Some(t) = &a.bot_token {
                if !t.starts_with("xoxb-") {
                    return Err(SlackConfigError::BadBotToken { app: a.name.clone() });
                }
                if !tokens.insert(t.as_str()) {
                    return Err(SlackConfigError::DuplicateToken { app: a.name.clone() });
                }
            }
            for c in a.channels.iter().flatten() {
                if !channels.contains(c.as_str()) {
                    return Err(SlackConfigError::UnknownChannel { app: a.name.clone(), channel: c.clone() });
                }
            }
        }
        if self.max_connections_per_app == 0 {
            return Err(SlackConfigError::NoConnections);
        }
        Ok(())
    }
}

/// Slack-like names: lowercase letters, digits, `-`, `_`, `.`, 1 to 80 characters.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// A [`SlackSimConfig`] that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackConfigError {
    #[error("invalid name {0:?}: use 1-80 lowercase letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("user {0:?} is listed twice")]
    DuplicateUser(String),
    #[error("channel {0:?} is listed twice")]
    DuplicateChannel(String),
    #[error("app {0:?} is listed twice")]
    DuplicateApp(String),
    #[error("app {app:?}: the app-level token must start with \"xapp-\"")]
    BadAppToken { app: String },
    #[error("app {app:?}: the bot token must start with \"xoxb-\"")]
    BadBotToken { app: String },
    #[error("app {app:?}: a token is already used by another app")]
    DuplicateToken { app: String },
    #[error("app {app:?} joins unknown channel {channel:?}")]
    UnknownChannel { app: String, channel: String },
    #[error("max_connections_per_app must be at least 1")]
    NoConnections,
    #[error("invalid app {0:?}; expected NAME or NAME=APP_TOKEN,BOT_TOKEN")]
    BadAppSpec(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_specs_parse_from_flags() {
        assert_eq!("family-app".parse::<AppSpec>(), Ok(AppSpec::new("family-app")));
        let s: AppSpec = "ops=xapp-1-A-1-x,xoxb-1-2-y".parse().expect("spec");
        assert_eq!((s.app_token.as_deref(), s.bot_token.as_deref()), (Some("xapp-1-A-1-x"), Some("xoxb-1-2-y")));
        assert!("ops=xapp-only".parse::<AppSpec>().is_err());
        assert!("".parse::<AppSpec>().is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = SlackSimConfig::with_apps(["a", "b"]);
        assert_eq!(ok.validate(), Ok(()));
        let dup = SlackSimConfig::with_apps(["a", "a"]);
        assert_eq!(dup.validate(), Err(SlackConfigError::DuplicateApp("a".into())));
        let bad = SlackSimConfig::default().app(AppSpec::new("a").tokens("xoxb-1", "xoxb-2"));
        assert_eq!(bad.validate(), Err(SlackConfigError::BadAppToken { app: "a".into() }));
        let chan = SlackSimConfig::default().app(AppSpec::new("a").channels(["nope"]));
        assert!(matches!(chan.validate(), Err(SlackConfigError::UnknownChannel { .. })));
        assert!(matches!(SlackSimConfig::with_apps(["Bad Name"]).validate(), Err(SlackConfigError::BadName(_))));
    }
}
