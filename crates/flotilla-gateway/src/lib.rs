//! The gateway's HTTP surface: the OpenAI- and Anthropic-compatible endpoints that send every
//! request through the router, and `/healthz`, `/readyz`, `/metrics`, `/status`.
//!
//! [`app`] builds the axum router over a [`GatewayState`]; [`serve`] runs it on a bound
//! listener until a shutdown future resolves, then drains in-flight requests under a timeout.

mod api;
mod auth;
mod ops;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router as AxumRouter;
use axum::routing::{get, post};
use flotilla_router::Router;
use flotilla_telemetry::Metrics;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::time::Instant;

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
/// `drain` to finish (streams included) before returning.
pub async fn serve(
    listener: TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let readiness = state.readiness.clone();
    // Nagle off on client connections: SSE chunks must not wait for the previous one's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
        let _ = s.set_nodelay(true);
    });
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        readiness.set_draining();
        let _ = tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = async { let _ = rx.await; tokio::time::sleep(drain).await } => {
            tracing::warn!(drain_ms = drain.as_millis() as u64, "drain timeout reached, closing remaining connections");
            Ok(())
        }
    }
}
