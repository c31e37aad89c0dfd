//! The benchmark's HTTP/1.1 client: hyper's pooled keep-alive client, shared by the load
//! generator and the control requests (readiness polls, fault injection, `/status`).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Control requests are local and small; anything slower than this is a hung process.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client that keeps up to `max_idle` idle connections per host, so that a
/// burst of concurrent requests does not end in a storm of reconnects.
pub fn new_client(max_idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    // Small requests and answers: Nagle's algorithm would only add delay.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// A complete answer to a control request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole answer, within [`CONTROL_TIMEOUT`].
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> anyhow::Result<Answer> {
    let uri: Uri = url.parse().with_context(|| format!("bad url {url}"))?;
    let mut req = Request::builder().method(method.clone()).uri(uri).body(Full::new(body))?;
    req.headers_mut().extend(headers.clone());
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Answer { status: parts.status, headers: parts.headers, body })
    };
    tokio::time::timeout(CONTROL_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", CONTROL_TIMEOUT.as_secs()))?
        .with_context(|| format!("{method} {url}"))
}

pub async fn get(client: &HttpClient, url: &str) -> anyhow::Result<Answer> {
    send(client, Method::GET, url, &HeaderMap::new(), Bytes::new()).await
}

pub async fn post_json(client: &HttpClient, url: &str, headers: &HeaderMap, body: &str) -> anyhow::Result<Answer> {
    let mut headers = headers.clone();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    send(client, Method::POST, url, &headers, Bytes::copy_from_slice(body.as_bytes())).await
}

/// An error with its causes: hyper's own Display is only "client error (Connect)".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
