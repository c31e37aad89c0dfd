//! The HTTP server: accept loop, per-connection reset control, routes and the `/_sim/` admin
//! endpoints.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{delete, get, post};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::api::{self, Api};
use crate::fault::FaultRule;
use crate::handle::SimHandle;
use crate::{SimConfig, SimKind, anthropic, openai};

/// Largest request body accepted (Anthropic's documented limit for Messages).
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a request handler needs.
pub(crate) struct App {
    pub cfg: SimConfig,
    pub handle: SimHandle,
    pub models_body: Bytes,
}

/// Lets a request reset the TCP connection it arrived on.
#[derive(Clone)]
pub(crate) struct ConnCtl(CancellationToken);

impl ConnCtl {
    /// The connection task closes the socket with SO_LINGER 0 (an RST) and drops the request.
    pub fn reset(&self) {
        self.0.cancel();
    }
}

/// Serves a simulator on `listener` until `shutdown` completes, then stops accepting, lets
/// open requests finish (up to a few seconds) and returns.
///
/// `handle` is the caller's window on the simulator (faults, stats, recorded requests); its
/// record limit is set from `config.record_limit`.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    handle: SimHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    handle.set_record_limit(config.record_limit);
    let models = match config.kind {
        SimKind::Anthropic => anthropic::models_body(&config.models),
        SimKind::OpenAi => openai::models_body(&config.models),
    };
    let app = Arc::new(App {
        models_body: Bytes::from(serde_json::to_vec(&models).unwrap_or_default()),
        cfg: config,
        handle,
    });
    let router = router(app);
    // `stop` asks connections to finish their requests; `kill` drops those still open after
    // the drain timeout (a stalled stream would otherwise outlive the server).
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let tracker = TaskTracker::new();
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
                    tracing::debug!(error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        }
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::debug!("simulator shutdown: dropping connections still open after the drain timeout");
        kill.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// A simulator started by [`spawn`]. Dropping it stops the server.
pub struct SimServer {
    addr: SocketAddr,
    handle: SimHandle,
    stop: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (no trailing slash), the base URL for a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handle(&self) -> &SimHandle {
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

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a simulator on `127.0.0.1:0` in a background task (for tests, the demo and
/// benchmarks).
pub async fn spawn(config: SimConfig) -> io::Result<SimServer> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let handle = SimHandle::new();
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let task = tokio::spawn(serve(listener, config, handle.clone(), async move {
        signal.cancelled().await;
    }));
    Ok(SimServer { addr, handle, stop, task: Some(task) })
}

/// Serves one connection (HTTP/1.1, or HTTP/2 with prior knowledge).
async fn connection(stream: TcpStream, router: Router, stop: CancellationToken, kill: CancellationToken) {
    // Latency matters more than packet count on loopback.
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, so a fault can set SO_LINGER 0 after hyper has taken the
    // stream: closing a zero-linger socket sends an RST, which is what "connection reset" is.
    let (stream, raw) = match second_handle(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "simulator could not duplicate a socket");
            return;
        }
    };
    let ctl = ConnCtl(CancellationToken::new());
    let req_ctl = ctl.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(req_ctl.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = ctl.0.cancelled() => {
                if let Err(e) = socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO)) {
                    tracing::debug!(error = %e, "simulator could not set SO_LINGER");
                }
                // Returning drops the connection and then `raw`: the last close sends the RST.
                return;
            }
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

fn router(app: Arc<App>) -> Router {
    let api_routes = match app.cfg.kind {
        SimKind::Anthropic => Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .merge(crate::oauth::routes()),
        SimKind::OpenAi => {
            Router::new().route("/v1/chat/completions", post(chat)).route("/v1/responses", post(responses))
        }
    };
    api_routes
        .route("/v1/models", get(models))
        .route("/_sim/faults", post(add_fault).get(list_faults).delete(clear_faults))
        .route("/_sim/faults/{id}", delete(remove_fault))
        .route("/_sim/stats", get(stats).delete(reset_stats))
        .route("/_sim/requests", get(requests).delete(clear_requests))
        .route("/_sim/health", get(health))
        .fallback(fallback)
        .with_state(app)
}

async fn run(app: Arc<App>, api: Api, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let ctl = parts.extensions.get::<ConnCtl>().cloned();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| ());
    api::generate(app, api, ctl, parts.headers, bytes).await
}

async fn messages(State(app): State<Arc<App>>, req: Request) -> Response {
    run(app, Api::Messages, req).await
}

async fn count_tokens(State(app): State<Arc<App>>, req: Request) -> Response {
    run(app, Api::CountTokens, req).await
}

async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    run(app, Api::Chat, req).await
}

async fn responses(State(app): State<Arc<App>>, req: Request) -> Response {
    run(app, Api::Responses, req).await
}

async fn models(State(app): State<Arc<App>>, headers: http::HeaderMap) -> Response {
    api::models(&app, &headers)
}

async fn fallback(State(app): State<Arc<App>>, method: Method, uri: Uri) -> Response {
    api::route_not_found(&app, method.as_str(), uri.path())
}

fn admin_json(status: StatusCode, v: &impl serde::Serialize) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn add_fault(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let rule: FaultRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return admin_json(StatusCode::BAD_REQUEST, &json!({ "error": format!("invalid fault rule: {e}") }));
        }
    };
    if let Err(e) = rule.validate() {
        return admin_json(StatusCode::BAD_REQUEST, &json!({ "error": format!("invalid fault rule: {e}") }));
    }
    let id = app.handle.add_fault(rule);
    admin_json(StatusCode::OK, &json!({ "id": id }))
}

async fn list_faults(State(app): State<Arc<App>>) -> Response {
    admin_json(StatusCode::OK, &app.handle.faults())
}

async fn clear_faults(State(app): State<Arc<App>>) -> Response {
    let removed = app.handle.clear_faults();
    admin_json(StatusCode::OK, &json!({ "removed": removed }))
}

async fn remove_fault(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let found = id.parse::<u64>().is_ok_and(|id| app.handle.remove_fault(id));
    if found {
        admin_json(StatusCode::OK, &json!({ "removed": 1 }))
    } else {
        admin_json(StatusCode::NOT_FOUND, &json!({ "error": format!("no fault rule with id {id}") }))
    }
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    admin_json(StatusCode::OK, &app.handle.stats())
}

async fn reset_stats(State(app): State<Arc<App>>) -> Response {
    app.handle.reset_stats();
    admin_json(StatusCode::OK, &json!({ "reset": true }))
}

async fn requests(State(app): State<Arc<App>>) -> Response {
    admin_json(StatusCode::OK, &app.handle.requests())
}

async fn clear_requests(State(app): State<Arc<App>>) -> Response {
    app.handle.clear_requests();
    admin_json(StatusCode::OK, &json!({ "cleared": true }))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let kind: Value = serde_json::to_value(app.cfg.kind).unwrap_or(Value::Null);
    admin_json(StatusCode::OK, &json!({ "ok": true, "kind": kind }))
}
