//! Who was answered how often: per app, each user message addressed to its bot and the number
//! of bot replies that answer it, and the exactly-once summary over all apps.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::Ts;
use super::state::{Author, ChannelKind, State, mentioned_apps};

/// A user message addressed to a bot, and how many of that bot's replies answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnsweredMessage {
    pub app: String,
    pub channel: String,
    pub ts: String,
    /// The thread it was posted in, if it is a reply.
    pub thread_ts: Option<String>,
    pub user: String,
    pub text: String,
    pub replies: u32,
}

/// [`crate::slack::SlackHandle::report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    pub app: String,
    pub bot_user_id: String,
    /// In ts order.
    pub messages: Vec<AnsweredMessage>,
    /// Bot messages that answer no user message (nothing earlier in their thread, or an
    /// `in_reply_to` naming no user message of that conversation).
    pub unattributed_replies: u32,
}

/// [`crate::slack::SlackHandle::exactly_once_report`]: over every (message, addressed app)
/// pair.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExactlyOnceReport {
    pub sent: usize,
    pub answered_once: usize,
    pub unanswered: Vec<AnsweredMessage>,
    /// Answered more than once (`replies` says how often).
    pub doubled: Vec<AnsweredMessage>,
}

impl ExactlyOnceReport {
    pub(crate) fn from_reports(reports: &[AppReport]) -> Self {
        let mut r = ExactlyOnceReport::default();
        for m in reports.iter().flat_map(|a| &a.messages) {
            r.sent += 1;
            match m.replies {
                0 => r.unanswered.push(m.clone()),
                1 => r.answered_once += 1,
                _ => r.doubled.push(m.clone()),
            }
        }
        r
    }

    /// Every message answered exactly once.
    pub fn is_exactly_once(&self) -> bool {
        self.unanswered.is_empty() && self.doubled.is_empty()
    }
}

impl fmt::Display for ExactlyOnceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {}, answered once {}, unanswered {}, doubled {}",
            self.sent,
            self.answered_once,
            self.unanswered.len(),
            self.doubled.len()
        )
    }
}

/// Where a message sits: a channel's top level, or a thread (by its parent's ts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Stream {
    Top,
    Thread(Ts),
}

impl State {
    /// One report per app, in app order. One pass over each conversation.
    pub(crate) fn reports(&self) -> Vec<AppReport> {
        let mut reports: Vec<AppReport> = self
            .apps
            .iter()
            .map(|a| AppReport {
                app: a.name.clone(),
                bot_user_id: a.bot_user_id.clone(),
                messages: Vec::new(),
                unattributed_replies: 0,
            })
            .collect();
        let mut all: Vec<(Ts, usize, AnsweredMessage)> = Vec::new();
        for ch in &self.channels {
            // Bots taking part in each thread (by parent ts): they posted in it, or were
            // mentioned in it, or it is a DM thread.
            let mut in_thread: HashMap<Ts, BTreeSet<usize>> = HashMap::new();
            let mut last_user: HashMap<Stream, Ts> = HashMap::new();
            let mut counts: HashMap<(Ts, usize), u32> = HashMap::new();
            let mut addressed: Vec<(usize, usize)> = Vec::new();
            for (i, m) in ch.msgs.iter().enumerate() {
                let root = m.thread_ts.unwrap_or(m.ts);
                match &m.author {
                    Author::User(_) => {
                        let mut targets: BTreeSet<usize> = BTreeSet::new();
                        match ch.kind {
                            ChannelKind::Im { app, .. } => {
                                targets.insert(app);
                            }
                            ChannelKind::Public { .. } => {
                                let mentioned: Vec<usize> = mentioned_apps(&self.apps, &m.text)
                                    .into_iter()
                                    .filter(|a| ch.members.contains(&self.apps[*a].bot_user_id))
                                    .collect();
                                targets.extend(mentioned.iter().copied());
                                if m.thread_ts.is_some()
                                    && let Some(bots) = in_thread.get(&root)
                                {
                                    targets.extend(bots.iter().copied());
                                }
                                in_thread.entry(root).or_default().extend(mentioned);
                            }
                        }
                        addressed.extend(targets.into_iter().map(|a| (i, a)));
                        if m.thread_ts.is_some() {
                            last_user.insert(Stream::Thread(root), m.ts);
                        } else {
                            last_user.insert(Stream::Top, m.ts);
                            last_user.insert(Stream::Thread(m.ts), m.ts);
                        }
                    }
                    Author::Bot(app) => {
                        in_thread.entry(root).or_default().insert(*app);
                        let stream = if m.thread_ts.is_some() { Stream::Thread(root) } else { Stream::Top };
                        // An explicit `in_reply_to` is exact; without one, a reply answers the
                        // latest user message before it in the same thread (or top level).
                        let answered = match in_reply_to(m.metadata.as_ref()) {
                            Some(t) => ch.msg(t).filter(|u| matches!(u.author, Author::User(_))).map(|u| u.ts),
                            None => last_user.get(&stream).copied(),
                        };
                        match answered {
                            Some(t) => *counts.entry((t, *app)).or_default() += 1,
                            None => reports[*app].unattributed_replies += 1,
                        }
                    }
                }
            }
            for (i, app) in addressed {
                let m = &ch.msgs[i];
                all.push((
                    m.ts,
                    app,
                    AnsweredMessage {
                        app: self.apps[app].name.clone(),
                        channel: ch.id.clone(),
                        ts: m.ts.to_string(),
                        thread_ts: m.thread_ts.map(|t| t.to_string()),
                        user: self.author_user_id(&m.author),
                        text: m.text.clone(),
                        replies: counts.get(&(m.ts, app)).copied().unwrap_or(0),
                    },
                ));
            }
        }
        all.sort_by_key(|(ts, app, _)| (*ts, *app));
        for (_, app, m) in all {
            reports[app].messages.push(m);
        }
        reports
    }
}

/// `metadata.event_payload.in_reply_to`, when it is a ts.
fn in_reply_to(metadata: Option<&serde_json::Value>) -> Option<Ts> {
    metadata?.pointer("/event_payload/in_reply_to")?.as_str().and_then(Ts::parse)
}
