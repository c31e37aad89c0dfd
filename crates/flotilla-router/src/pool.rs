//! Upstream connections: a small HTTP/1.1 client (request out, response in, bodies by length,
//! chunked or to end of stream) over keep-alive pools, run inside the task that sends.
//!
//! Why not hyper's client: measured at 2,000 req/s on 2 cores it cost the gateway more than
//! forwarding itself. hyper-util's pool runs every connection as a task of its own (and spawns
//! one more per request to return it to the pool), so each request crossed tasks twice; its
//! response parser builds a `HeaderMap` of every header the provider sends (Anthropic sends
//! fifteen, most with names that are allocated), and bodies pass through a channel. Here the
//! caller's task writes the request and reads the answer itself, response headers are parsed
//! by `httparse` on the stack and only the few the router reads are kept ([`KEPT_HEADERS`]),
//! and bodies are read straight from the connection's buffer.
//!
//! A connection goes back to its pool once its response body was read to the end with
//! nothing after it and the server did not ask to close it; one dropped earlier (a timeout, a
//! cancelled request, a stream the caller stopped reading) is closed. Nobody polls an idle
//! connection: one the server closed while idle is noticed at checkout (its EOF has arrived
//! by then) and dropped. A request that fails on a reused connection before any byte of an
//! answer arrived is sent once more on a new connection: that is a server closing an idle
//! connection as the request went out, and for a model call the worst case of the retry is
//! one more billed request, not a lost one.
//!
//! TLS is rustls with ALPN `http/1.1`, as the providers' own SDKs speak by default.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{StatusCode, Uri};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a new connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections older than this are not reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per upstream (scheme, host and port).
pub const MAX_IDLE: usize = 512;
/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most response headers accepted.
const MAX_HEADERS: usize = 100;
/// How much is read from the socket at a time.
const READ_SIZE: usize = 16 * 1024;

/// The response headers kept (everything else is parsed and dropped): what the router reads to
/// classify a failure.
pub const KEPT_HEADERS: [&str; 4] = ["retry-after", "retry-after-ms", "request-id", "x-request-id"];

/// A connection's socket, plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a request could not be sent or its answer not read.
#[derive(Debug, Clone)]
pub struct SendError {
    pub detail: String,
    /// On a reused connection before any byte of an answer: worth one try on a new one.
    stale: bool,
}

impl SendError {
    fn new(detail: impl Into<String>) -> Self {
        SendError { detail: detail.into(), stale: false }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// An error and its sources on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !detail.ends_with(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        src = s.source();
    }
    detail
}

/// Which pool: the tokio runtime (a socket belongs to the runtime whose reactor registered
/// it), https or not, and the upstream's authority.
type PoolKey = (Option<tokio::runtime::Id>, bool, Authority);

/// The pools of all upstreams, one per runtime, scheme, host and port.
///
/// Per runtime because a connection is driven by its runtime's reactor: the gateway serves on
/// one single-threaded runtime per thread, and a connection made on one and used on another
/// would be woken across threads, and die with the first runtime at shutdown.
pub struct Pools {
    /// Tells this set of pools apart in the threads' caches (see [`Pools::pool`]).
    id: u64,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    tls: TlsConnector,
}

/// Pools each thread looked up lately: (which [`Pools`], runtime, https, authority, pool).
/// Weak, so a dropped [`Pools`] takes its pools (and their idle connections) with it.
type Recent = Vec<(u64, Option<tokio::runtime::Id>, bool, Authority, std::sync::Weak<Pool>)>;

/// How many pools a thread remembers (a gateway thread uses one per upstream).
const RECENT: usize = 8;

thread_local! {
    static RECENT_POOLS: std::cell::RefCell<Recent> = const { std::cell::RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").finish_non_exhaustive()
    }
}

impl Pools {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Pools { id, pools: Mutex::default(), tls: TlsConnector::from(tls) }
    }

    /// The current runtime's pool for `uri`'s scheme and authority (made on first use).
    ///
    /// Looked up in the thread's own short list first: the shared map's lock, hash and key
    /// clone cost little, but the lock's cache line moved between the gateway's serving
    /// threads on every request.
    pub fn pool(&self, uri: &Uri) -> Result<Arc<Pool>, SendError> {
        let https = uri.scheme_str() == Some("https");
        let authority = uri.authority().ok_or_else(|| SendError::new(format!("no host in {uri}")))?;
        let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let recent = RECENT_POOLS.with_borrow(|recent| {
            recent
                .iter()
                .find(|(id, rt, h, a, _)| *id == self.id && *rt == runtime && *h == https && a == authority)
                .and_then(|(.., pool)| pool.upgrade())
        });
        if let Some(pool) = recent {
            return Ok(pool);
        }
        let pool = {
            let key = (runtime, https, authority.clone());
            let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            match pools.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let pool = Arc::new(Pool::new(https, authority, self.tls.clone())?);
                    pools.insert(key, pool.clone());
                    pool
                }
            }
        };
        RECENT_POOLS.with_borrow_mut(|recent| {
            recent.retain(|(.., p)| p.strong_count() > 0);
            if recent.len() >= RECENT {
                recent.remove(0);
            }
            recent.push((self.id, runtime, https, authority.clone(), Arc::downgrade(&pool)));
        });
        Ok(pool)
    }
}

/// Keep-alive connections to one upstream.
pub struct Pool {
    /// The host to connect to (an IPv6 literal without its brackets) and port.
    host: String,
    port: u16,
    /// `Some` for https.
    server_name: Option<ServerName<'static>>,
    /// The request's `Host` header line.
    host_line: Vec<u8>,
    tls: TlsConnector,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A response head: status, the [`KEPT_HEADERS`] and the body to read.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Pool {
    fn new(https: bool, authority: &Authority, tls: TlsConnector) -> Result<Self, SendError> {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let server_name = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| SendError::new(format!("{host} is not a valid TLS server name: {e}")))?;
            Some(name)
        } else {
            None
        };
        let host_line = format!("host: {}\r\n", authority.as_str()).into_bytes();
        Ok(Pool { host, port, server_name, host_line, tls, idle: Mutex::default() })
    }

    /// Sends a POST of `body` to `path` with `headers` (plus `Host` and `Content-Length`) and
    /// reads the response head. The [`Body`] holds the connection until it was read to the end.
    pub async fn post(
        self: &Arc<Self>,
        path: &str,
        headers: &HeaderMap,
        accept: &str,
        body: &[u8],
    ) -> Result<Response, SendError> {
        let request = self.encode_post(path, headers, accept, body);
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                // Boxed: the TCP and TLS handshake state is large (~1 KiB, most of it rustls) and
                // needed only for a new connection; unboxed it would make every request's future
                // (allocated per request by the server) that much larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            match conn.exchange(&request, reused).await {
                Ok((status, headers, kind, keep_alive)) => {
                    let body = Body { conn: Some(conn), kind, keep_alive, pool: self.clone() };
                    return Ok(Response { status, headers, body });
                }
                Err(e) if e.stale => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The request bytes. A `Host` among `headers` (a provider's own headers) replaces the
    /// upstream's; `Accept` and the framing headers are this client's to set.
    fn encode_post(&self, path: &str, headers: &HeaderMap, accept: &str, body: &[u8]) -> Vec<u8> {
        use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !headers.contains_key(HOST) {
            out.extend_from_slice(&self.host_line);
        }
        for (name, value) in headers {
            if [&ACCEPT, &CONTENT_LENGTH, &TRANSFER_ENCODING, &CONNECTION].contains(&name) {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"accept: ");
        out.extend_from_slice(accept.as_bytes());
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        out
    }

    /// The most recently used idle connection that is still open, if any.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if idle.since.elapsed() <= IDLE_TIMEOUT && idle.conn.is_open() {
                return Some(idle.conn);
            }
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let what = || format!("connect to {}:{}", self.host, self.port);
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(match &self.server_name {
                Some(name) => Io::Tls(Box::new(self.tls.connect(name.clone(), tcp).await?)),
                None => Io::Plain(tcp),
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Err(_) => Err(SendError::new(format!("{}: timed out after {} s", what(), CONNECT_TIMEOUT.as_secs()))),
            Ok(Err(e)) => Err(SendError::new(format!("{}: {}", what(), chain(&e)))),
            Ok(Ok(io)) => Ok(Conn { io, buf: BytesMut::new() }),
        }
    }

    fn put_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest are at the front; drop the expired ones while here.
        let expired = idle.iter().take_while(|i| i.since.elapsed() > IDLE_TIMEOUT).count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: Instant::now() });
        }
    }

    /// Idle connections right now.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// One connection: its socket and what was read from it but not yet used.
struct Conn {
    io: Io,
    buf: BytesMut,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, in the given state.
    Chunked(Chunk),
    /// Until the server closes the connection.
    Eof,
    /// Read to the end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line comes next.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// The CRLF after chunk data comes next.
    DataEnd,
    /// Trailer lines (after the last chunk) until an empty line.
    Trailers,
}

/// One step of reading a body from what is buffered.
enum Step {
    Data(Bytes),
    End,
    NeedMore,
}

impl Conn {
    /// Whether an idle connection is still usable: nothing has arrived on it, not even an EOF.
    fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut rb), Poll::Pending)
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        self.io.read_buf(&mut self.buf).await
    }

    /// Writes `request` and reads the response head: status, kept headers, how the body ends,
    /// and whether the connection may be reused after it.
    async fn exchange(
        &mut self,
        request: &[u8],
        reused: bool,
    ) -> Result<(StatusCode, HeaderMap, Kind, bool), SendError> {
        let stale = |e: std::io::Error, what: &str, got_bytes: bool| SendError {
            detail: format!("{what}: {}", chain(&e)),
            stale: reused && !got_bytes,
        };
        if let Err(e) = async {
            self.io.write_all(request).await?;
            self.io.flush().await
        }
        .await
        {
            return Err(stale(e, "sending the request", false));
        }
        loop {
            if let Some(head) = self.parse_head()? {
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(SendError::new(format!("response head larger than {MAX_HEAD} bytes")));
            }
            let got_bytes = !self.buf.is_empty();
            match self.read_more().await {
                Ok(0) => {
                    return Err(SendError {
                        detail: "connection closed before a complete response head".to_owned(),
                        stale: reused && !got_bytes,
                    });
                }
                Ok(_) => {}
                Err(e) => return Err(stale(e, "reading the response", got_bytes)),
            }
        }
    }

    /// A complete response head from the buffer (consumed), skipping interim 1xx responses;
    /// `None` when more bytes are needed.
    fn parse_head(&mut self) -> Result<Option<(StatusCode, HeaderMap, Kind, bool)>, SendError> {
        loop {
            // Uninitialised slots: the parser writes only as many as the response has, instead of
            // this function clearing all of them (3 KiB) for every response.
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                &self.buf,
                &mut headers,
            );
            let n = match parsed {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(SendError::new(format!("invalid response head: {e}"))),
            };
            let code = resp.code.unwrap_or(0);
            let status =
                StatusCode::from_u16(code).map_err(|_| SendError::new(format!("invalid response status {code}")))?;
            let mut kept = HeaderMap::new();
            let mut length: Option<u64> = None;
            let mut chunked = false;
            let mut other_coding = false;
            let mut close = resp.version != Some(1);
            for h in resp.headers.iter() {
                let name = h.name;
                if name.eq_ignore_ascii_case("content-length") {
                    let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
                    match (v, length) {
                        (None, _) => return Err(SendError::new("invalid content-length in the response")),
                        (Some(v), Some(prev)) if v != prev => {
                            return Err(SendError::new("conflicting content-length headers in the response"));
                        }
                        (Some(v), _) => length = Some(v),
                    }
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    // Only the last coding matters for framing; `chunked` must be last if present.
                    let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                    if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else {
                        other_coding = true;
                    }
                } else if name.eq_ignore_ascii_case("connection") {
                    if h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")) {
                        close = true;
                    }
                } else if let Some(keep) = KEPT_HEADERS.iter().find(|k| name.eq_ignore_ascii_case(k))
                    && let Ok(v) = HeaderValue::from_bytes(h.value)
                {
                    kept.append(HeaderName::from_static(keep), v);
                }
            }
            let _ = self.buf.split_to(n);
            if status.is_informational() {
                // 100 Continue, 103 Early Hints: the real answer follows.
                continue;
            }
            let kind = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                Kind::Length(0)
            } else if other_coding {
                // A coding other than chunked last: the body runs to the end of the connection.
                close = true;
                Kind::Eof
            } else if chunked {
                // With both, Transfer-Encoding wins and the connection must not be reused.
                close |= length.is_some();
                Kind::Chunked(Chunk::Size)
            } else if let Some(len) = length {
                Kind::Length(len)
            } else {
                close = true;
                Kind::Eof
            };
            return Ok(Some((status, kept, kind, !close)));
        }
    }
}

/// A response body being read; holds the connection until the end, then returns it to the
/// pool (or closes it). Dropping it before the end closes the connection.
pub struct Body {
    conn: Option<Conn>,
    kind: Kind,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SendError> {
        loop {
            match self.step()? {
                Step::Data(b) => return Ok(Some(b)),
                Step::End => {
                    self.finish();
                    return Ok(None);
                }
                Step::NeedMore => {}
            }
            let Some(conn) = self.conn.as_mut() else { return Ok(None) };
            match conn.read_more().await {
                Ok(0) if self.kind == Kind::Eof => {
                    self.kind = Kind::Done;
                    self.keep_alive = false;
                }
                Ok(0) => return Err(SendError::new("connection closed before the end of the response body")),
                Ok(_) => {}
                Err(e) => return Err(SendError::new(format!("reading the response body: {}", chain(&e)))),
            }
        }
    }

    /// The whole body (at most `limit` bytes).
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, SendError> {
        // The common case: a length-delimited body that is all buffered already.
        if let (Kind::Length(len), Some(conn)) = (self.kind, self.conn.as_mut())
            && conn.buf.len() as u64 >= len
            && len as usize <= limit
        {
            let body = conn.buf.split_to(len as usize).freeze();
            self.kind = Kind::Done;
            self.finish();
            return Ok(body);
        }
        let mut out = BytesMut::new();
        while let Some(b) = self.chunk().await? {
            if out.len() + b.len() > limit {
                return Err(SendError::new(format!("response body larger than {limit} bytes")));
            }
            out.extend_from_slice(&b);
        }
        Ok(out.freeze())
    }

    /// Ends the body if its end is already buffered (no waiting), so that the connection can
    /// be reused; otherwise the connection is closed. For a stream whose final event arrived.
    pub fn settle(&mut self) {
        loop {
            match self.step() {
                Ok(Step::Data(_)) => {}
                Ok(Step::End) => {
                    self.finish();
                    return;
                }
                Ok(Step::NeedMore) | Err(_) => {
                    self.conn = None;
                    return;
                }
            }
        }
    }

    /// Returns the connection to the pool if it can take another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.kind == Kind::Done
            && conn.buf.is_empty()
        {
            self.pool.put_back(conn);
        }
    }

    /// One step over what is buffered.
    fn step(&mut self) -> Result<Step, SendError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(if self.kind == Kind::Done { Step::End } else { Step::NeedMore });
        };
        let buf = &mut conn.buf;
        loop {
            match self.kind {
                Kind::Done => return Ok(Step::End),
                Kind::Length(0) => self.kind = Kind::Done,
                Kind::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.kind = Kind::Length(left - n as u64);
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Kind::Eof => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Kind::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        let _ = buf.split_to(n);
                        self.kind = Kind::Chunked(Chunk::Trailers);
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        let _ = buf.split_to(n);
                        self.kind = Kind::Chunked(Chunk::Data(size));
                    }
                    Ok(httparse::Status::Partial) if buf.len() < 1024 => return Ok(Step::NeedMore),
                    Ok(httparse::Status::Partial) | Err(_) => {
                        return Err(SendError::new("invalid chunk size line in the response body"));
                    }
                },
                Kind::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.kind = Kind::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Kind::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(SendError::new("chunk data not followed by CRLF in the response body"));
                    }
                    let _ = buf.split_to(2);
                    self.kind = Kind::Chunked(Chunk::Size);
                }
                Kind::Chunked(Chunk::Trailers) => match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        let _ = buf.split_to(2);
                        self.kind = Kind::Done;
                    }
                    Some(line) => {
                        let _ = buf.split_to(line + 2);
                    }
                    None if buf.len() < MAX_HEAD => return Ok(Step::NeedMore),
                    None => return Err(SendError::new("response trailers too large")),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server does for one request on a connection.
    enum Then {
        /// Writes these bytes (the whole response, possibly in several writes).
        Answer(Vec<&'static [u8]>),
        /// Closes the connection without answering.
        Close,
    }

    /// A server whose `n`-th connection answers its requests with `script[n]` in order and
    /// closes once its list is done. Returns the port and the number of connections accepted.
    async fn server(script: Vec<Vec<Then>>) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut script = script.into_iter();
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let steps = script.next().unwrap_or_default();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for step in steps {
                        if read_request(&mut s, &mut buf).await.is_none() {
                            return;
                        }
                        match step {
                            Then::Close => return,
                            Then::Answer(parts) => {
                                for p in parts {
                                    if s.write_all(p).await.is_err() {
                                        return;
                                    }
                                    s.flush().await.ok();
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    /// Reads one request (head and content-length body) into `buf`, consuming it.
    async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    buf.drain(..end + 4 + len);
                    return Some(());
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn pools() -> Pools {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("tls")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Pools::new(Arc::new(tls))
    }

    fn pool(port: u16) -> Arc<Pool> {
        pools().pool(&format!("http://127.0.0.1:{port}/v1/messages").parse().expect("uri")).expect("pool")
    }

    #[test]
    fn a_pool_belongs_to_one_set_of_pools_one_runtime_and_one_upstream() {
        let uri: Uri = "http://127.0.0.1:9/v1/messages".parse().expect("uri");
        let (a, b) = (pools(), pools());
        let on_new_runtime = |f: &dyn Fn() -> Arc<Pool>| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async { f() })
        };
        let [a1, a2] = [0, 1].map(|_| on_new_runtime(&|| a.pool(&uri).expect("pool")));
        assert!(!Arc::ptr_eq(&a1, &a2), "another runtime on the same thread gets its own pool");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let first = a.pool(&uri).expect("pool");
            assert!(Arc::ptr_eq(&first, &a.pool(&uri).expect("pool")), "the same pool again");
            assert!(!Arc::ptr_eq(&first, &b.pool(&uri).expect("pool")), "another set of pools has its own");
            let https: Uri = "https://127.0.0.1:9/v1/messages".parse().expect("uri");
            let port: Uri = "http://127.0.0.1:10/v1/messages".parse().expect("uri");
            assert!(!Arc::ptr_eq(&first, &a.pool(&https).expect("pool")));
            assert!(!Arc::ptr_eq(&first, &a.pool(&port).expect("pool")));
            // A dropped set of pools takes its pools with it (the thread keeps no strong ref).
            let weak = Arc::downgrade(&b.pool(&uri).expect("pool"));
            drop(b);
            assert!(weak.upgrade().is_none());
        });
    }

    async fn post(pool: &Arc<Pool>) -> Result<(u16, Bytes), SendError> {
        let mut resp = pool.post("/v1/messages", &HeaderMap::new(), "application/json", b"{}").await?;
        let body = resp.body.read_all(1 << 20).await?;
        Ok((resp.status.as_u16(), body))
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[tokio::test]
    async fn a_request_has_one_host_accept_and_length_whatever_the_provider_headers_say() {
        let p = pool(9);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k"));
        let head = |bytes: Vec<u8>| String::from_utf8(bytes).expect("ascii").to_ascii_lowercase();
        let plain = head(p.encode_post("/v1/messages", &h, "application/json", b"{}"));
        assert_eq!(
            plain,
            "post /v1/messages http/1.1\r\nhost: 127.0.0.1:9\r\nx-api-key: k\r\naccept: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
        for (name, value) in
            [("host", "api.example"), ("accept", "text/plain"), ("content-length", "99"), ("connection", "close")]
        {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let text = head(p.encode_post("/v1/messages", &h, "text/event-stream", b"{}"));
        for (name, want) in [("host", "api.example"), ("accept", "text/event-stream"), ("content-length", "2")] {
            let values: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(&format!("{name}: "))).collect();
            assert_eq!(values, [want], "{name} in {text}");
        }
        assert!(!text.contains("connection:"), "{text}");
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused() {
        let (port, accepted) = server(vec![vec![
            Then::Answer(vec![OK]),
            Then::Answer(vec![OK]),
            Then::Answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe", b"llo"]),
        ]])
        .await;
        let p = pool(port);
        for want in ["ok", "ok", "hello"] {
            let (status, body) = post(&p).await.expect("post");
            assert_eq!((status, &body[..]), (200, want.as_bytes()));
            assert_eq!(p.idle_count(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn chunked_bodies_split_anywhere_are_decoded_and_the_connection_kept() {
        let (port, accepted) = server(vec![vec![
            Then::Answer(vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r",
                b"\n6\r\n world\r\n0\r\nx-trailer: 1\r\n",
                b"\r\n",
            ]),
            Then::Answer(vec![OK]),
        ]])
        .await;
        let p = pool(port);
        assert_eq!(post(&p).await.expect("chunked").1, &b"hello world"[..]);
        assert_eq!(post(&p).await.expect("after").1, &b"ok"[..]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn close_and_eof_delimited_answers_are_not_reused() {
        let (port, accepted) = server(vec![
            vec![Then::Answer(vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"])],
            vec![Then::Answer(vec![b"HTTP/1.1 200 OK\r\n\r\nto the end"])],
            vec![Then::Answer(vec![b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"])],
            vec![Then::Answer(vec![OK])],
        ])
        .await;
        let p = pool(port);
        assert_eq!(post(&p).await.expect("close").1, &b"ok"[..]);
        assert_eq!(p.idle_count(), 0);
        // No length: the body ends when the server closes (it does after its one answer).
        assert_eq!(post(&p).await.expect("eof").1, &b"to the end"[..]);
        assert_eq!(p.idle_count(), 0);
        assert_eq!(post(&p).await.expect("http/1.0").1, &b"ok"[..]);
        assert_eq!(p.idle_count(), 0);
        assert_eq!(post(&p).await.expect("fresh").1, &b"ok"[..]);
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // The first connection answers once and closes; the pool still holds it.
        let (port, accepted) = server(vec![vec![Then::Answer(vec![OK])], vec![Then::Answer(vec![OK])]]).await;
        let p = pool(port);
        assert_eq!(post(&p).await.expect("first").1, &b"ok"[..]);
        assert_eq!(p.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(post(&p).await.expect("second, on a new connection").1, &b"ok"[..]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_lost_on_a_reused_connection_is_sent_again_once() {
        // The server reads the second request and closes without a word: as when it closes an
        // idle connection just as the request arrives. A fresh connection doing that fails.
        let (port, accepted) =
            server(vec![vec![Then::Answer(vec![OK]), Then::Close], vec![Then::Answer(vec![OK])], vec![Then::Close]])
                .await;
        let p = pool(port);
        assert_eq!(post(&p).await.expect("first").1, &b"ok"[..]);
        assert_eq!(post(&p).await.expect("retried on a new connection").1, &b"ok"[..]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // The second connection is idle now and answers no more: its close is seen at checkout
        // or as a lost request on a reused connection; either way a third connection is made,
        // and that one closing without an answer is an error, not retried.
        let err = post(&p).await.expect_err("closed without an answer");
        assert!(err.to_string().contains("closed before a complete response head"), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_bad_heads_are_errors() {
        let (port, _) = server(vec![
            vec![Then::Answer(vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nx",
            ])],
            vec![Then::Answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxx"])],
            vec![Then::Answer(vec![b"NOT HTTP AT ALL\r\n\r\n"])],
            vec![Then::Answer(vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"])],
            vec![Then::Answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"])],
        ])
        .await;
        let p = pool(port);
        assert_eq!(post(&p).await.expect("after 100").0, 201);
        let err = |e: Result<(u16, Bytes), SendError>| e.expect_err("must fail").to_string();
        assert!(err(post(&p).await).contains("conflicting content-length"));
        assert!(err(post(&p).await).contains("invalid response head"));
        assert!(err(post(&p).await).contains("invalid chunk size"));
        assert!(err(post(&p).await).contains("closed before the end of the response body"));
        assert_eq!(p.idle_count(), 0);
    }

    #[tokio::test]
    async fn kept_headers_are_the_ones_the_router_reads() {
        let (port, _) = server(vec![vec![Then::Answer(vec![
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nrequest-id: req_1\r\nx-other: 1\r\ncontent-length: 0\r\n\r\n",
        ])]])
        .await;
        let p = pool(port);
        let resp = p.post("/", &HeaderMap::new(), "application/json", b"").await.expect("post");
        assert_eq!(resp.status.as_u16(), 429);
        assert_eq!(resp.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"7"[..]));
        assert_eq!(resp.headers.get("request-id").map(|v| v.as_bytes()), Some(&b"req_1"[..]));
        assert_eq!(resp.headers.len(), 2);
    }

    #[tokio::test]
    async fn a_body_left_unread_closes_its_connection_and_a_settled_one_is_kept() {
        let (port, accepted) = server(vec![
            vec![Then::Answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab", b"cd"]), Then::Answer(vec![OK])],
            vec![
                Then::Answer(vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nlast\r\n0\r\n\r\n"]),
                Then::Answer(vec![OK]),
            ],
        ])
        .await;
        let p = pool(port);
        let mut resp = p.post("/", &HeaderMap::new(), "application/json", b"").await.expect("post");
        let first = resp.body.chunk().await.expect("chunk").expect("data");
        assert_eq!(&first[..], b"ab");
        drop(resp);
        assert_eq!(p.idle_count(), 0, "a half-read body's connection is not reused");
        let mut resp = p.post("/", &HeaderMap::new(), "text/event-stream", b"").await.expect("post");
        assert_eq!(&resp.body.chunk().await.expect("chunk").expect("data")[..], b"last");
        // The caller saw its final event; the end of the body is already buffered.
        resp.body.settle();
        assert_eq!(p.idle_count(), 1);
        assert_eq!(post(&p).await.expect("reused").1, &b"ok"[..]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
