//! The agent runtime: each agent's Slack channel feeds the journal; every new message that is
//! for the agent (a DM, a mention, or a reply in a thread the agent is in) becomes a turn —
//! thread history plus the message, through the router, reply into the durable outbox — and
//! the outbox posts replies to Slack exactly once.
//!
//! Turns of one thread run in order; threads run concurrently up to a per-agent limit. A turn
//! interrupted by a crash is resumed at start-up from the journal.

mod inbox;
mod outbox;
mod sessions;
mod turn;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use flotilla_config::{Config, SlackApp};
use flotilla_journal::Journal;
use flotilla_router::Router;
use flotilla_slack::{ChannelConfig, ChannelStatus, SlackWeb, StatusHandle};
use thiserror::Error;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use inbox::JournalInbox;
pub use sessions::Sessions;

/// Tunables of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Turns of one agent that may think at once (different threads).
    pub concurrency_per_agent: usize,
    /// After this long without an answer, tell the user once that the agent is retrying.
    pub notice_after: Duration,
    /// Give up on a turn (with an apology) after this long.
    pub max_turn_time: Duration,
    /// History entries sent with each turn.
    pub history_limit: usize,
    /// Channel tunables (liveness, catch-up window, backoff); `app` is set per agent.
    pub channel: ChannelConfig,
    /// Where thread history is shared with other nodes (the cluster store), so that a node taking
    /// over an agent continues its conversations. None on a single node.
    pub sessions: Option<Arc<dyn Sessions>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            concurrency_per_agent: 8,
            notice_after: Duration::from_secs(20),
            max_turn_time: Duration::from_secs(600),
            history_limit: 40,
            channel: ChannelConfig::new("*"),
            sessions: None,
        }
    }
}

/// The runtime could not start.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("agent {agent}: slack app \"{app}\" is not configured")]
    UnknownApp { agent: String, app: String },
    #[error("slack app {app}: {reason}")]
    Token { app: String, reason: String },
    #[error("slack app {app}: auth.test failed: {error}")]
    Auth { app: String, error: String },
    #[error("slack app {app} is used by two agents ({first}, {second}); one app per agent")]
    SharedApp { app: String, first: String, second: String },
}

/// What the gateway needs to see of running agents.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    /// Channel status per Slack app name.
    pub channels: BTreeMap<String, StatusHandle>,
    pub journal: Journal,
}

impl RuntimeHandle {
    pub fn channel_statuses(&self) -> Vec<ChannelStatus> {
        self.channels.values().map(StatusHandle::snapshot).collect()
    }
}

/// One running agent, shared by its tasks.
#[derive(Debug)]
pub(crate) struct AgentCtx {
    pub id: String,
    pub app: String,
    pub bot_user_id: String,
    pub system_prompt: Option<String>,
    pub web: SlackWeb,
    pub journal: Journal,
    pub router: Arc<Router>,
    pub rc: RuntimeConfig,
    pub outbox_wake: Notify,
    pub turns: mpsc::UnboundedSender<Dispatch>,
    pub permits: Semaphore,
    /// Threads known not to involve the bot (see `turn::thread_involves_bot`).
    pub foreign_threads: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When this agent started on this process. A turn received earlier (resumed after a restart)
    /// or fetched by catch-up may have been answered by another process already (a node that
    /// owned the app before a takeover): such turns look for their reply in Slack first.
    pub started_at: std::time::SystemTime,
}

/// Messages to an agent's dispatcher.
#[derive(Debug)]
pub(crate) enum Dispatch {
    /// A turn to run (new, or unfinished from before a restart).
    Turn { turn_id: i64, thread: String },
    /// A turn of this thread finished: start the next one queued.
    Done { thread: String },
}

/// The shared parts that agents run with; agents are started and stopped one by one (a fleet
/// node starts an agent when it wins its Slack app's lease and stops it when the lease is lost).
#[derive(Debug, Clone)]
pub struct Runtime {
    http: reqwest::Client,
    journal: Journal,
    router: Arc<Router>,
    rc: RuntimeConfig,
    tracker: TaskTracker,
}

impl Runtime {
    pub fn new(
        router: Arc<Router>,
        journal: Journal,
        rc: RuntimeConfig,
        tracker: TaskTracker,
    ) -> Result<Self, RuntimeError> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(8).build().map_err(|e| RuntimeError::Auth {
            app: "*".to_owned(),
            error: format!("cannot build the http client: {e}"),
        })?;
        Ok(Runtime { http, journal, router, rc, tracker })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Starts one agent on its Slack app until `cancel`. Bad tokens do not fail the call: the
    /// returned status says `disabled` with the reason.
    pub fn start_agent(
        &self,
        agent: &flotilla_config::Agent,
        app: &SlackApp,
        cancel: CancellationToken,
    ) -> StatusHandle {
        let status = StatusHandle::new(&app.name);
        let web = match web_for(app, self.http.clone()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(event = "agent_not_started", agent = %agent.id, error = %e, "agent not started: fix its slack tokens");
                status.set_disabled(&e.to_string());
                return status;
            }
        };
        let spec =
            AgentSpec { id: agent.id.clone(), app: app.name.clone(), system_prompt: agent.system_prompt.clone() };
        self.tracker.spawn(run_agent(
            spec,
            web,
            self.journal.clone(),
            self.router.clone(),
            self.rc.clone(),
            status.clone(),
            cancel,
            self.tracker.clone(),
        ));
        status
    }

    /// Compacts the journal at start and then hourly until `cancel`.
    pub fn start_compaction(&self, cancel: CancellationToken) {
        self.tracker.spawn(compaction(self.journal.clone(), cancel));
    }
}

/// Checks that no Slack app serves two agents and that every app an agent names exists.
pub fn check_apps(config: &Config) -> Result<(), RuntimeError> {
    let mut app_owner: HashMap<String, String> = HashMap::new();
    for agent in &config.agents {
        let Some(app_name) = &agent.slack else { continue };
        if let Some(first) = app_owner.insert(app_name.clone(), agent.id.clone()) {
            return Err(RuntimeError::SharedApp { app: app_name.clone(), first, second: agent.id.clone() });
        }
        if !config.slack.contains_key(app_name) {
            return Err(RuntimeError::UnknownApp { agent: agent.id.clone(), app: app_name.clone() });
        }
    }
    Ok(())
}

/// Starts every agent that has a Slack app: its channel, dispatcher and outbox. An agent whose
/// tokens are missing or refused does not stop the others: its channel reports `disabled` with
/// the reason (in `/readyz` and `/status`). Identity (`auth.test`) is retried in the background
/// while Slack is unreachable.
pub async fn start(
    config: &Config,
    router: Arc<Router>,
    journal: Journal,
    rc: RuntimeConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<RuntimeHandle, RuntimeError> {
    check_apps(config)?;
    let runtime = Runtime::new(router, journal.clone(), rc, tracker.clone())?;
    let mut channels = BTreeMap::new();
    for agent in &config.agents {
        let Some(app) = agent.slack.as_ref().and_then(|name| config.slack.get(name)) else { continue };
        channels.insert(app.name.clone(), runtime.start_agent(agent, app, cancel.clone()));
    }
    runtime.start_compaction(cancel);
    Ok(RuntimeHandle { channels, journal })
}

/// Keeps the journal bounded: compacts at start and then every hour, with the journal's
/// retention (finished turns, old dedupe keys, idle threads, history beyond the per-thread cap).
async fn compaction(journal: Journal, cancel: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        match journal.compact(journal.retention().clone()).await {
            Ok(report) => tracing::debug!(event = "journal_compacted", report = ?report),
            Err(e) => tracing::warn!(event = "journal_compaction_failed", error = %e),
        }
    }
}

#[derive(Debug)]
struct AgentSpec {
    id: String,
    app: String,
    system_prompt: Option<String>,
}

/// One agent's life: learn the bot's identity, resume unfinished turns, then run the
/// dispatcher, the outbox and the channel until cancelled.
#[expect(clippy::too_many_arguments, reason = "the agent's parts, passed once at start")]
async fn run_agent(
    spec: AgentSpec,
    web: SlackWeb,
    journal: Journal,
    router: Arc<Router>,
    rc: RuntimeConfig,
    status: StatusHandle,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut pause = Duration::from_millis(200);
    let identity = loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            r = web.auth_test() => r,
        };
        match attempt {
            Ok(id) => break id,
            Err(e) if e.is_auth() => {
                tracing::error!(event = "agent_not_started", agent = %spec.id, app = %spec.app, error = %e, "slack refused the bot token: fix it and restart");
                status.set_disabled(&format!("auth.test: {e}"));
                return;
            }
            Err(e) => {
                tracing::warn!(event = "slack_unreachable", agent = %spec.id, app = %spec.app, error = %e, retry_in_ms = pause.as_millis() as u64);
                status.set_error(&format!("auth.test: {e}"));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(AgentCtx {
        id: spec.id,
        app: spec.app.clone(),
        bot_user_id: identity.user_id,
        system_prompt: spec.system_prompt,
        web: web.clone(),
        journal: journal.clone(),
        router,
        rc: rc.clone(),
        outbox_wake: Notify::new(),
        turns: tx,
        permits: Semaphore::new(rc.concurrency_per_agent.max(1)),
        foreign_threads: std::sync::Mutex::default(),
        started_at: std::time::SystemTime::now(),
    });
    tracing::info!(event = "agent_started", agent = %ctx.id, app = %ctx.app, bot_user = %ctx.bot_user_id, "agent started");
    // Turns left unfinished by a crash or restart run first, in order.
    match journal.unfinished_turns(&ctx.id).await {
        Ok(turns) => {
            if !turns.is_empty() {
                tracing::info!(event = "turns_resumed", agent = %ctx.id, count = turns.len(), "resuming turns interrupted by a restart");
            }
            for t in turns {
                let thread = format!("{}/{}", t.message.conversation, t.message.thread_key());
                let _ = ctx.turns.send(Dispatch::Turn { turn_id: t.id, thread });
            }
        }
        Err(e) => tracing::error!(event = "resume_failed", agent = %ctx.id, error = %e, "cannot read unfinished turns"),
    }
    tracker.spawn(dispatcher(ctx.clone(), rx, cancel.clone(), tracker.clone()));
    tracker.spawn(outbox::run(ctx.clone(), cancel.clone()));
    let inbox = Arc::new(JournalInbox::new(ctx.clone()));
    let channel = ChannelConfig { app: spec.app, ..rc.channel.clone() };
    flotilla_slack::channel::run(channel, web, inbox, status, cancel).await;
}

fn web_for(app: &SlackApp, http: reqwest::Client) -> Result<SlackWeb, RuntimeError> {
    let app_token = app.app_secret.clone().map_err(|reason| RuntimeError::Token { app: app.name.clone(), reason })?;
    let bot_token = app.bot_secret.clone().map_err(|reason| RuntimeError::Token { app: app.name.clone(), reason })?;
    Ok(SlackWeb::new(http, &app.api_base, app_token, bot_token))
}

/// Runs turns: one at a time per thread, in arrival order; threads concurrently.
async fn dispatcher(
    ctx: Arc<AgentCtx>,
    mut rx: mpsc::UnboundedReceiver<Dispatch>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut queues: HashMap<String, VecDeque<i64>> = HashMap::new();
    let mut running: HashMap<String, i64> = HashMap::new();
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let thread = match msg {
            Dispatch::Turn { turn_id, thread } => {
                if running.get(&thread) == Some(&turn_id) || queues.get(&thread).is_some_and(|q| q.contains(&turn_id)) {
                    continue;
                }
                queues.entry(thread.clone()).or_default().push_back(turn_id);
                thread
            }
            Dispatch::Done { thread } => {
                running.remove(&thread);
                thread
            }
        };
        if running.contains_key(&thread) {
            continue;
        }
        let next = queues.get_mut(&thread).and_then(VecDeque::pop_front);
        if queues.get(&thread).is_some_and(VecDeque::is_empty) {
            queues.remove(&thread);
        }
        if let Some(turn_id) = next {
            running.insert(thread.clone(), turn_id);
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = turn::run(&ctx, turn_id) => {}
                }
                let _ = ctx.turns.send(Dispatch::Done { thread });
            });
        }
    }
}
