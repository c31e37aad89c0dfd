//! The gateway's HTTP surface: the OpenAI- and Anthropic-compatible endpoints that send every
//! request through the router, and `/healthz`, `/readyz`, `/metrics`, `/status`.
//!
//! [`app`] builds the axum router over a [`GatewayState`]; [`serve`] runs it on a bound
//! listener until a shutdown future resolves, then drains in-flight requests under a timeout.

mod api;
mod auth;
mod h1;
mod ops;
mod wake;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router as AxumRouter;
use axum::body::Body;
use axum::response::Response;
use axum::routing::{get, post};
use flotilla_router::Router;
use flotilla_telemetry::Metrics;
use http::{Method, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use ops::Readiness;

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct GatewayState {
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// Accepted client keys; empty = no auth (loopback only, enforced by config checks).
    pub keys: Arc<Vec<SecretString>>,
    pub readiness: Readiness,
    /// Sections other components add to `/status` (e.g. `channels`, `journal`), refreshed by them.
    pub extra_status: Arc<std::sync::Mutex<std::collections::BTreeMap<String, serde_json::Value>>>,
    pub started: Instant,
}

impl GatewayState {
    pub fn new(router: Arc<Router>, keys: Vec<SecretString>) -> Self {
        let metrics = router.metrics().clone();
        GatewayState {
            router,
            metrics,
            keys: Arc::new(keys),
            readiness: Readiness::default(),
            extra_status: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Sets one `/status` section.
    pub fn set_status(&self, section: &str, value: serde_json::Value) {
        if let Ok(mut m) = self.extra_status.lock() {
            m.insert(section.to_owned(), value);
        }
    }
}

/// The gateway's routes.
pub fn app(state: GatewayState) -> AxumRouter {
    let mut api = AxumRouter::new()
        .route("/v1/messages", post(api::messages))
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/responses", post(api::responses))
        .route("/v1/models", get(api::models));
    // Without keys (loopback only) the key check is not even in the stack: it costs per request.
    if !state.keys.is_empty() {
        api = api.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key));
    }
    AxumRouter::new()
        .merge(api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/status", get(ops::status))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests
/// `drain` to finish (streams included) before returning; connections still open then are
/// closed.
///
/// Each connection is one task (tracked, so none outlives this function) with `TCP_NODELAY`
/// and keep-alive. It starts on the gateway's own HTTP/1.1 path for the compatible endpoints
/// (`h1.rs`) and moves, at the first request that path does not serve, to hyper-util's
/// HTTP/1.1-or-h2c connection with `Service` (the axum router, with a shortcut for the
/// compatible endpoints), polled through `wake::Coalesce`.
pub async fn serve(
    listener: TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let readiness = state.readiness.clone();
    let service = Service { direct: state.keys.is_empty(), app: app(state.clone()), state };
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    // As axum::serve: the CONNECT protocol for HTTP/2 upgrades.
    builder.http2().enable_connect_protocol();
    let tracker = TaskTracker::new();
    // `finish` asks connections to end after their current requests; `close` drops them.
    let finish = CancellationToken::new();
    let close = CancellationToken::new();
    tracker.spawn(timer_anchor(finish.clone()));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // Nagle off: SSE chunks must not wait for the previous one's ACK.
        let _ = stream.set_nodelay(true);
        let handoff = h1::Handoff { builder: builder.clone(), service: service.clone() };
        tracker.spawn(h1::serve_connection(stream, handoff, finish.clone(), close.clone()));
    }
    readiness.set_draining();
    drop(listener);
    finish.cancel();
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(drain_ms = drain.as_millis() as u64, "drain timeout reached, closing remaining connections");
        close.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// [`serve`] on `threads` threads of their own, each a single-threaded runtime accepting from
/// the same listening socket (like nginx's worker processes), until `shutdown` resolves; then
/// each drains its connections as [`serve`] does and this returns when all have.
///
/// A request then stays on one thread from accept to answer, and the runtime it runs on does
/// only that: the multi-threaded runtime's work stealing and bookkeeping cost about 10 µs of
/// CPU per request at 2,000 req/s on 2 cores. Agents, Slack sockets, the journal and the fleet
/// loop stay on the caller's runtime; the router and its state are shared.
pub async fn serve_threads(
    listener: TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
    threads: usize,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let stop = CancellationToken::new();
    let mut done = Vec::new();
    let mut spawn_error = None;
    for i in 0..threads.max(1) {
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let thread = listener.try_clone().and_then(|listener| {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new().name(format!("flotilla-http-{i}")).spawn(move || {
                // I/O and timers only: the signal and process drivers would be polled at every
                // turn of the loop for nothing (measured: 3–4 µs of CPU per request).
                let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build();
                let result = rt.and_then(|rt| {
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        serve(listener, state, stop.cancelled_owned(), drain).await
                    })
                });
                let _ = tx.send(result);
            })
        });
        match thread {
            Ok(_) => done.push(rx),
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    drop(listener);
    let panicked = |_| Err(std::io::Error::other("an HTTP serving thread panicked"));
    let mut first: Option<std::io::Result<()>> = spawn_error.map(Err);
    if first.is_none() && !done.is_empty() {
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            (r, i, _) = futures::future::select_all(done.iter_mut()) => {
                // A thread ended before shutdown (its runtime or listener could not start).
                let r: std::io::Result<()> = r.unwrap_or_else(panicked);
                first = Some(r.and(Err(std::io::Error::other("an HTTP serving thread stopped early"))));
                done.remove(i);
            }
        }
    }
    stop.cancel();
    for rx in done {
        let r = rx.await.unwrap_or_else(panicked);
        if first.is_none() && r.is_err() {
            first = Some(r);
        }
    }
    first.unwrap_or(Ok(()))
}

/// What a connection hyper serves gets (h2c, or after a request `h1.rs` leaves to hyper):
/// [`app`], except that without client keys the three compatible endpoints are called
/// directly, past the router's matching, handler services and boxed futures. The body is still
/// read by axum's `Bytes` extractor, so limits and rejections are the same; with keys, the key
/// check lives in the router, so everything goes through it.
#[derive(Clone)]
pub(crate) struct Service {
    state: GatewayState,
    app: AxumRouter,
    direct: bool,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let direct = self.direct && req.method() == Method::POST;
        let format = if direct { api::endpoint_format(req.uri().path()) } else { None };
        match format {
            Some(format) => {
                let state = self.state.clone();
                Box::pin(async move { Ok(api::direct(state, format, req.map(Body::new)).await) })
            }
            None => Box::pin(tower::ServiceExt::oneshot(self.app.clone(), req)),
        }
    }
}

/// How often [`timer_anchor`] fires. Request deadlines shorter than this still work; arming
/// one may cost the wake-up described there.
const TIMER_ANCHOR_PERIOD: Duration = Duration::from_millis(100);

/// Keeps one timer pending at all times, due sooner than any request deadline.
///
/// Every request arms deadlines (time to first byte, total, stream idle). tokio's timer driver
/// wakes the worker thread parked in `epoll_wait` whenever a new timer is due before the
/// driver's next planned wake-up, and with no timer pending there is none planned: at
/// 2,000 req/s, when requests rarely overlap, that was one eventfd write plus one wake-up and
/// context switch of the other worker per request (measured with `perf`, all from
/// `TimerEntry::init`). With this timer pending, the driver always plans to wake within the
/// period, request deadlines come later, and arming them wakes nobody. The cost is one timer
/// firing every [`TIMER_ANCHOR_PERIOD`].
async fn timer_anchor(stop: CancellationToken) {
    let mut tick = tokio::time::interval(TIMER_ANCHOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}

/// What to do when `accept` fails: connection-level errors concern one client only; anything
/// else (e.g. out of file descriptors) is logged and retried after a pause, as axum does.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
