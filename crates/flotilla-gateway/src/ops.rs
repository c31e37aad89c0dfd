//! Operational endpoints: liveness, readiness, Prometheus metrics and the JSON status page.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::GatewayState;

/// Named readiness conditions. The gateway is ready when every registered component says so
/// and it is not draining. Components (the router, later each Slack channel) update their own.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<RwLock<ReadinessInner>>,
}

#[derive(Debug, Default)]
struct ReadinessInner {
    components: BTreeMap<String, Result<(), String>>,
    draining: bool,
}

impl Readiness {
    /// Sets one component's state: `Ok(())` = ready, `Err(why)` = not ready.
    pub fn set(&self, component: &str, state: Result<(), String>) {
        if let Ok(mut g) = self.inner.write() {
            g.components.insert(component.to_owned(), state);
        }
    }

    pub fn set_draining(&self) {
        if let Ok(mut g) = self.inner.write() {
            g.draining = true;
        }
    }

    /// Every reason the gateway is not ready; empty = ready.
    pub fn problems(&self) -> Vec<String> {
        let Ok(g) = self.inner.read() else { return vec!["readiness state poisoned".to_owned()] };
        let mut out: Vec<String> =
            g.components.iter().filter_map(|(k, v)| v.as_ref().err().map(|why| format!("{k}: {why}"))).collect();
        if g.draining {
            out.push("shutting down".to_owned());
        }
        out
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(s): State<GatewayState>) -> Response {
    let problems = s.readiness.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; "))).into_response()
    }
}

pub async fn metrics(State(s): State<GatewayState>) -> Response {
    let mut resp = s.metrics.encode().into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

#[derive(Serialize)]
struct ChainStatus {
    name: String,
    candidates: Vec<String>,
}

pub async fn status(State(s): State<GatewayState>) -> Response {
    let config = s.router.config();
    let mut chains: Vec<ChainStatus> = config
        .agents
        .iter()
        .map(|a| &a.chain)
        .chain(config.chains.values())
        .chain(config.default_chain.iter())
        .map(|c| ChainStatus { name: c.name.clone(), candidates: c.candidates.iter().map(|m| m.to_string()).collect() })
        .collect();
    chains.dedup_by(|a, b| a.name == b.name);
    let problems = s.readiness.problems();
    let mut body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started.elapsed().as_secs(),
        "ready": problems.is_empty(),
        "not_ready_because": problems,
        "chains": chains,
        "breakers": s.router.health().snapshot(),
        "router_overhead": s.metrics.overhead_summary(),
    });
    if let (Ok(extra), Some(obj)) = (s.extra_status.lock(), body.as_object_mut()) {
        for (k, v) in extra.iter() {
            obj.insert(k.clone(), v.clone());
        }
    }
    axum::Json(body).into_response()
}
