//! A protocol-faithful Slack simulator: the Web API methods flotilla uses, Socket Mode over a
//! WebSocket, simulated users, fault injection and an exactly-once reply report.
//!
//! A client written against real Slack works unchanged once its API base is
//! `{SlackSim::url()}/api` (instead of `https://slack.com/api`) and its tokens are the ones in
//! [`SlackHandle::workspace`].
//!
//! # Web API (`/api/{method}`, GET or POST)
//! Arguments from the query string and a form (`application/x-www-form-urlencoded`) or JSON
//! body; the token from `Authorization: Bearer` or, for forms and queries, a `token` argument.
//! Every answer is HTTP 200 with `{"ok": true, …}` or `{"ok": false, "error": …}` (Slack's
//! codes: `not_authed`, `invalid_auth`, `not_allowed_token_type`, `missing_scope` with
//! `needed`/`provided`, `channel_not_found`, `not_in_channel`, `thread_not_found`, `no_text`,
//! `msg_too_long`, `invalid_metadata_format`, `invalid_cursor`, `unknown_method`, …), except
//! rate limits: HTTP 429, `Retry-After`, `{"ok": false, "error": "ratelimited"}`.
//! - `apps.connections.open` (app-level token, in the header only) →
//!   `{"ok": true, "url": "ws://HOST/link/?ticket=…&app_id=…"}`; each URL works once.
//! - `auth.test` (bot token) → `url`, `team`, `user`, `team_id`, `user_id`, `bot_id`.
//! - `chat.postMessage` (`channel` id, name or user id for the DM; `text`; `thread_ts`;
//!   `metadata` `{event_type, event_payload}`) → `{"ok", "channel", "ts", "message"}`. Message
//!   timestamps are unique and increasing (`"1732560000.000100"`).
//! - `conversations.history` (`channel`, `oldest`, `latest`, `inclusive`, `limit` ≤ 999,
//!   `cursor`, `include_all_metadata`): top-level messages, newest first; thread parents carry
//!   `thread_ts`, `reply_count`, `latest_reply`; `has_more` and
//!   `response_metadata.next_cursor` while more remain.
//! - `conversations.replies` (`channel`, `ts`, `oldest`, `latest`, `inclusive`, `limit`,
//!   `cursor`, `include_all_metadata`): the parent first (on every page), then the replies in
//!   order.
//! - `conversations.info`, `conversations.open` (one user), `users.conversations` (`types`,
//!   default `public_channel` as in Slack; `im` for DMs).
//!
//! As in Slack, `metadata` is returned by `history`/`replies` only with
//! `include_all_metadata=true` (`chat.postMessage`'s answer and events always carry it).
//!
//! # Socket Mode (`/link/?ticket=…`)
//! `hello` first (`num_connections` = the app's open connections, this one included: more
//! than one means two clients share the token; `debug_info`, `connection_info.app_id`). Each
//! new message goes to one connection of every app whose bot is in the conversation (round
//! robin, connections that were sent a `disconnect` last) as an `events_api` envelope
//! (`envelope_id`, `payload` = `event_callback` with `event_id`, `event_time`, `event`;
//! `accepts_response_payload`, `retry_attempt`, `retry_reason`); a user message mentioning a
//! bot (`<@U…>`) in a channel also produces a separate `app_mention` event; DM events have
//! `channel_type: "im"`. Bots' own messages are delivered too, as Slack does
//! ([`SlackSimConfig::echo_bot_messages`]). An envelope not acked (`{"envelope_id": …}`)
//! within `ack_timeout` (3 s) is sent again with a new envelope id, `retry_attempt` + 1 and
//! `retry_reason: "timeout"`, to any open connection of the app, up to `max_retries` (3)
//! times; then it is dropped. A message posted while the app has no open connection is never
//! delivered over the socket: the client has to catch up from history. Pings are answered
//! with pongs. `slash_commands` and `interactive` envelopes come from
//! [`SlackHandle::send_envelope`] and are not retried.
//!
//! # Faults ([`SlackFault`], library or `POST /_sim/faults`)
//! Drop an app's sockets (close frame, FIN, or RST); silence them (half-open: nothing is
//! written any more, pings go unanswered, acks are ignored, the TCP connection stays up);
//! delay pongs; `disconnect` `warning` / `refresh_requested` (closed after a grace period,
//! 10 s by default) or `link_disabled` (closed at once, and `apps.connections.open` answers
//! [`SlackSimConfig::link_disabled_error`] until re-enabled); hang or fail
//! `chat.postMessage`; 429 storms per method; a token made invalid.
//!
//! # Admin (`/_sim/`, no credentials, JSON)
//! `GET /_sim/health`, `GET /_sim/workspace`, `POST /_sim/messages` (`{channel, user, text,
//! thread_ts?}`), `GET /_sim/messages`, `POST|DELETE /_sim/faults`,
//! `GET /_sim/apps/{app}/connections`, `POST /_sim/envelopes` (`{app, type, payload}`),
//! `POST /_sim/slash_commands` (`{app, channel, user, command, text}`),
//! `GET /_sim/envelopes/{id}/ack`, `POST /_sim/channels` (`{name, apps}`),
//! `POST /_sim/channels/{channel}/bots` (`{app}`), `GET /_sim/report`,
//! `GET /_sim/report/{app}`, `GET|DELETE /_sim/stats`.
//!
//! # Report: who answered what
//! A user message is addressed to an app's bot if it is in the bot's DM, mentions the bot
//! (`<@BOT_USER_ID>`) in a channel the bot is in, or is a thread reply in a channel thread the
//! bot took part in before it (posted in it, or was mentioned in it). A bot message answers:
//! the user message whose ts is its `metadata.event_payload.in_reply_to` when it has one (in
//! the same conversation); otherwise the latest earlier user message in the same thread (a
//! thread's parent counts as in the thread), or, for a top-level bot message, the latest
//! earlier top-level user message. [`SlackHandle::exactly_once_report`] counts every
//! (message, addressed app) pair: sent, answered exactly once, unanswered, doubled.
//!
//! # Where Slack's behaviour is assumed
//! Slack does not document these; the simulator picks: the error of `apps.connections.open`
//! after `link_disabled` (`access_denied`, configurable); `thread_not_found` for a
//! `chat.postMessage` `thread_ts` that names no message; a redelivery gets a new envelope id
//! (the `event_id` stays); an ack of any attempt stops redelivery; the HTTP status of a used
//! ticket (401).

mod admin;
mod config;
mod delivery;
mod handle;
mod ids;
mod report;
mod shapes;
mod socket;
mod state;
mod web;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

pub use config::{AppSpec, DEFAULT_BOT_SCOPES, SlackConfigError, SlackSimConfig};
pub use delivery::{Delivery, EnvelopeKind};
pub use handle::{
    AppInfo, ChannelInfo, ConnectionInfo, DisconnectReason, DropMode, PostedMessage, RecordedMessage, SlackFault,
    SlackHandle, SlackSimError, SlackStats, UserInfo, WorkspaceInfo,
};
pub use report::{AnsweredMessage, AppReport, ExactlyOnceReport};

/// How long shutdown waits for open HTTP requests and sockets to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the HTTP handlers share.
pub(crate) struct Server {
    pub handle: SlackHandle,
    pub local_addr: SocketAddr,
    /// Cancelled at shutdown: sockets close, held requests return.
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

/// A second handle on an accepted TCP socket, so a fault can set SO_LINGER 0 (an RST on
/// close) after hyper has taken the stream.
#[derive(Clone)]
pub(crate) struct RawSocket(pub Arc<std::net::TcpStream>);

/// Serves the simulator of `handle`'s workspace on `listener` until `shutdown` completes,
/// then closes every socket, lets open requests finish (up to a few seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    handle: SlackHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(delivery::retry_loop(handle.inner.clone(), stop.clone()));
    let srv = Arc::new(Server { handle, local_addr, stop: stop.clone(), tracker: tracker.clone() });
    let router = router(srv);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tracker.spawn(connection(stream, router.clone(), stop.clone(), kill.clone()));
                }
                Err(e) => {
                    // Typically EMFILE under load: back off briefly instead of spinning.
                    tracing::debug!(error = %e, "slack simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        }
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::debug!("slack simulator shutdown: dropping connections still open after the drain timeout");
        kill.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// A Slack simulator started by [`spawn`]. Dropping it stops the server.
pub struct SlackSim {
    addr: SocketAddr,
    handle: SlackHandle,
    stop: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SlackSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (no trailing slash). The Web API is at `{url}/api/{method}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `{url}/api`: what replaces `https://slack.com/api` in a client's config.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url())
    }

    pub fn handle(&self) -> &SlackHandle {
        &self.handle
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SlackSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Builds the workspace and serves it on `127.0.0.1:0` in a background task.
pub async fn spawn(config: SlackSimConfig) -> Result<SlackSim, SlackSimError> {
    let handle = SlackHandle::new(config)?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let task = tokio::spawn(serve(listener, handle.clone(), async move {
        signal.cancelled().await;
    }));
    Ok(SlackSim { addr, handle, stop, task: Some(task) })
}

fn router(srv: Arc<Server>) -> Router {
    Router::new()
        .route("/api/{method}", any(web::api))
        .route("/link", get(socket::link))
        .route("/link/", get(socket::link))
        .route("/_sim/health", get(admin::health))
        .route("/_sim/workspace", get(admin::workspace))
        .route("/_sim/messages", post(admin::post_message).get(admin::messages))
        .route("/_sim/faults", post(admin::add_fault).delete(admin::clear_faults))
        .route("/_sim/apps/{app}/connections", get(admin::connections))
        .route("/_sim/envelopes", post(admin::envelope))
        .route("/_sim/envelopes/{id}/ack", get(admin::envelope_ack))
        .route("/_sim/slash_commands", post(admin::slash_command))
        .route("/_sim/channels", post(admin::create_channel))
        .route("/_sim/channels/{channel}/bots", post(admin::add_bot))
        .route("/_sim/report", get(admin::report_all))
        .route("/_sim/report/{app}", get(admin::report_app))
        .route("/_sim/stats", get(admin::stats).delete(admin::reset_stats))
        .with_state(srv)
}

/// Serves one HTTP connection (HTTP/1.1 with WebSocket upgrades, or HTTP/2).
async fn connection(stream: TcpStream, router: Router, stop: CancellationToken, kill: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let (stream, raw) = match second_handle(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "slack simulator could not duplicate a socket");
            return;
        }
    };
    let raw = RawSocket(Arc::new(raw));
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(raw.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stop.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = kill.cancelled() => return,
        }
    }
}

fn second_handle(stream: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let raw = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, raw))
}
