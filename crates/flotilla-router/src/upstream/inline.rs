//! Keep-alive HTTP/1.1 connections to plain-http upstreams, driven by the task that sends the
//! request instead of a connection task of their own.
//!
//! hyper-util's pooled client gives every connection its own task: a request crosses from the
//! gateway's connection task to it and back (a channel, a oneshot, the body channel and a task
//! spawned per request to return the connection to the pool), and on a busy 2-core machine
//! those hand-offs are futex wake-ups between worker threads. Here the request's own task polls
//! hyper's HTTP/1 `Connection` alongside the response, and the response body keeps polling it
//! until the last byte; an idle connection is just a value in the pool that nobody polls. This
//! is for local and loopback model servers (and the simulators), where those microseconds are
//! a visible share of the latency; https upstreams keep the pooled client (TLS, HTTP/2).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Where plain-http requests of one endpoint connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    /// `host:port`, the pool key.
    pub key: Arc<str>,
    /// Without IPv6 brackets, as the resolver wants it.
    pub host: Arc<str>,
    pub port: u16,
}

/// Why an inline request failed before a response head arrived.
#[derive(Debug, Error)]
pub(crate) enum InlineError {
    #[error("tcp connect error")]
    Connect(#[source] std::io::Error),
    #[error("tcp connect timed out after {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    #[error("upstream connection error")]
    Http(#[source] hyper::Error),
    #[error("upstream connection closed before the response")]
    Closed,
}

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    conn: Connection<TokioIo<TcpStream>, Full<Bytes>>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Idle connections per `host:port`, most recently used last.
pub(crate) struct InlinePool {
    idle: Mutex<HashMap<Arc<str>, VecDeque<Idle>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    opened: AtomicU64,
}

impl std::fmt::Debug for InlinePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlinePool").field("opened", &self.opened.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl InlinePool {
    pub fn new(max_idle_per_host: usize, idle_timeout: Duration, connect_timeout: Duration) -> Self {
        InlinePool {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_host,
            idle_timeout,
            connect_timeout,
            opened: AtomicU64::new(0),
        }
    }

    /// Connections opened since start (the rest of the requests reused one).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Sends `req` (origin-form URI, `Host` header set) on an idle connection to `addr` or a new
    /// one, and returns the response head. The body drives the connection as it is read and
    /// puts it back into the pool after the last byte.
    pub async fn request(
        self: &Arc<Self>,
        addr: &Address,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<InlineBody>, InlineError> {
        loop {
            let (mut conn, reused) = match self.checkout(addr).await {
                Some(c) => (c, true),
                None => (self.connect(addr).await?, false),
            };
            let mut conn_done = false;
            let head = {
                let mut sending = std::pin::pin!(conn.sender.try_send_request(req));
                std::future::poll_fn(|cx| {
                    // The connection first: it writes the request and reads the answer.
                    if !conn_done && Pin::new(&mut conn.conn).poll(cx).is_ready() {
                        conn_done = true;
                    }
                    match sending.as_mut().poll(cx) {
                        Poll::Ready(r) => Poll::Ready(Some(r)),
                        // A finished connection has answered the request future (or never will).
                        Poll::Pending if conn_done => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await
            };
            match head {
                Some(Ok(resp)) => {
                    let conn = (!conn_done).then_some(conn);
                    return Ok(resp.map(|body| InlineBody { body, conn, pool: self.clone(), addr: addr.key.clone() }));
                }
                Some(Err(mut e)) => match e.take_message() {
                    // Not sent at all: a reused connection was closed under us; a new one may
                    // work (what hyper-util's pool does for "canceled" requests too).
                    Some(back) if reused => req = back,
                    _ => return Err(InlineError::Http(e.into_error())),
                },
                None => return Err(InlineError::Closed),
            }
        }
    }

    /// The most recently used idle connection that is still open and ready, if any.
    async fn checkout(&self, addr: &Address) -> Option<Box<Conn>> {
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let list = map.get_mut(&addr.key)?;
                self.expire(list);
                list.pop_back()?
            };
            let mut conn = idle.conn;
            // An upstream that closed the connection while it sat idle shows it now: the read
            // sees EOF and the connection future ends.
            let usable = std::future::poll_fn(|cx| {
                Poll::Ready(match Pin::new(&mut conn.conn).poll(cx) {
                    Poll::Ready(_) => false,
                    Poll::Pending => matches!(conn.sender.poll_ready(cx), Poll::Ready(Ok(()))),
                })
            })
            .await;
            if usable {
                return Some(conn);
            }
        }
    }

    async fn connect(&self, addr: &Address) -> Result<Box<Conn>, InlineError> {
        let connect = TcpStream::connect((&*addr.host, addr.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => return Err(InlineError::ConnectTimeout(self.connect_timeout)),
            Ok(r) => r.map_err(InlineError::Connect)?,
        };
        stream.set_nodelay(true).map_err(InlineError::Connect)?;
        let (sender, conn) = Builder::new().handshake(TokioIo::new(stream)).await.map_err(InlineError::Http)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        // Boxed: the connection state is large and moves between the pool and bodies.
        Ok(Box::new(Conn { sender, conn }))
    }

    fn put(&self, key: Arc<str>, conn: Box<Conn>) {
        let mut map = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = map.entry(key).or_default();
        self.expire(list);
        if list.len() < self.max_idle_per_host {
            list.push_back(Idle { conn, since: Instant::now() });
        }
    }

    /// Drops connections idle for longer than the idle timeout (the oldest are at the front).
    fn expire(&self, list: &mut VecDeque<Idle>) {
        while list.front().is_some_and(|i| i.since.elapsed() >= self.idle_timeout) {
            list.pop_front();
        }
    }
}

/// A response body that drives its connection while it is read and returns the connection to
/// the pool after its last frame. Dropped early, it closes the connection (an HTTP/1
/// connection with an unread body cannot carry another request).
pub(crate) struct InlineBody {
    body: Incoming,
    /// `None` once the connection ended (it is not reused then).
    conn: Option<Box<Conn>>,
    pool: Arc<InlinePool>,
    addr: Arc<str>,
}

impl std::fmt::Debug for InlineBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineBody").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        // A stream is dropped right after its terminal event, usually before the chunked
        // terminator was read. When the end of the message has already arrived, finish it here
        // (without waiting) so the connection can be reused instead of closed.
        if self.conn.is_none() {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            match Pin::new(&mut *self).poll_frame(&mut cx) {
                // Trailers or an empty chunk: keep going; the end may be right behind.
                Poll::Ready(Some(Ok(f))) if f.data_ref().is_none_or(Bytes::is_empty) => continue,
                // Done (the connection went back to the pool), failed, pending or unread data:
                // whatever connection is left is closed with this body.
                _ => return,
            }
        }
    }
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(c) = &mut this.conn
            && Pin::new(&mut c.conn).poll(cx).is_ready()
        {
            // Closed or failed: the body below reports an error or its end by itself.
            this.conn = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                if let Some(mut c) = this.conn.take() {
                    // One more turn lets the connection see the end of the message; whether it
                    // is ready for another request is checked when it is taken out again.
                    if Pin::new(&mut c.conn).poll(cx).is_pending() {
                        this.pool.put(this.addr.clone(), c);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http::header::HOST;
    use http_body_util::BodyExt;

    use super::*;

    async fn sim() -> (flotilla_sim::SimServer, Address) {
        let sim = flotilla_sim::spawn(flotilla_sim::SimConfig::openai()).await.expect("sim");
        let url: http::Uri = sim.url().parse().expect("sim url");
        let host = url.host().expect("host").to_owned();
        let port = url.port_u16().expect("port");
        (sim, Address { key: format!("{host}:{port}").into(), host: host.into(), port })
    }

    fn request(addr: &Address) -> Request<Full<Bytes>> {
        let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
        Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header(HOST, &*addr.key)
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-test")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request")
    }

    fn pool() -> Arc<InlinePool> {
        Arc::new(InlinePool::new(8, Duration::from_secs(60), Duration::from_secs(5)))
    }

    #[tokio::test]
    async fn a_fully_read_connection_is_reused() {
        let (sim, addr) = sim().await;
        let pool = pool();
        for _ in 0..5 {
            let resp = pool.request(&addr, request(&addr)).await.expect("response");
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert!(body.starts_with(b"{"), "{body:?}");
        }
        assert_eq!(sim.handle().stats().requests_total, 5);
        assert_eq!(pool.connections_opened(), 1, "one keep-alive connection for sequential requests");
    }

    #[tokio::test]
    async fn an_unread_body_closes_its_connection() {
        let (_sim, addr) = sim().await;
        let pool = pool();
        let first = pool.request(&addr, request(&addr)).await.expect("response");
        drop(first);
        let second = pool.request(&addr, request(&addr)).await.expect("response");
        second.into_body().collect().await.expect("body");
        assert_eq!(pool.connections_opened(), 2);
    }

    #[tokio::test]
    async fn a_stream_dropped_after_its_last_event_keeps_its_connection() {
        let (_sim, addr) = sim().await;
        let pool = pool();
        let mut req = request(&addr);
        *req.body_mut() =
            Full::new(Bytes::from_static(br#"{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#));
        let mut body = pool.request(&addr, req).await.expect("response").into_body();
        let mut text = Vec::new();
        while !text.ends_with(b"data: [DONE]\n\n") {
            let frame = body.frame().await.expect("more frames").expect("frame");
            text.extend_from_slice(frame.data_ref().expect("data"));
        }
        // Give the terminating chunk time to arrive, as it does while a gateway forwards the
        // last event, then drop the body without reading it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(body);
        let resp = pool.request(&addr, request(&addr)).await.expect("response");
        resp.into_body().collect().await.expect("body");
        assert_eq!(pool.connections_opened(), 1, "the stream's connection was reused");
    }

    #[tokio::test]
    async fn idle_connections_expire_and_closed_ones_are_replaced() {
        let (sim, addr) = sim().await;
        let pool = Arc::new(InlinePool::new(8, Duration::ZERO, Duration::from_secs(5)));
        for _ in 0..2 {
            let resp = pool.request(&addr, request(&addr)).await.expect("response");
            resp.into_body().collect().await.expect("body");
        }
        assert_eq!(pool.connections_opened(), 2, "a zero idle timeout never reuses");
        // The upstream goes away: the pooled connection is found closed, not used.
        let pool = self::pool();
        let resp = pool.request(&addr, request(&addr)).await.expect("response");
        resp.into_body().collect().await.expect("body");
        drop(sim);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = pool.request(&addr, request(&addr)).await.expect_err("nothing listens any more");
        assert!(matches!(err, InlineError::Connect(_)), "{err:?}");
    }

    #[tokio::test]
    async fn connect_errors_name_their_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let addr = Address { key: format!("127.0.0.1:{port}").into(), host: "127.0.0.1".into(), port };
        let err = pool().request(&addr, request(&addr)).await.expect_err("refused");
        let mut text = err.to_string();
        let mut src = std::error::Error::source(&err);
        while let Some(s) = src {
            text.push_str(&format!(": {s}"));
            src = s.source();
        }
        assert!(text.starts_with("tcp connect error: "), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
