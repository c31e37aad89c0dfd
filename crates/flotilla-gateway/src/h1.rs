//! A small HTTP/1.1 server path for the three compatible endpoints; hyper serves the rest.
//!
//! Each new connection starts here. As long as its requests are plain HTTP/1.1 `POST`s to
//! `/v1/messages`, `/v1/chat/completions` or `/v1/responses` with a `Content-Length` body (what
//! the official SDKs and agents send), they are read, answered and written by this module:
//! the head is parsed by `httparse` into stack slots and handed to the endpoint handler as
//! bytes, no `http::Request` or header map is built, and the answer goes out in one write.
//! The first request that is anything else (another path or method, HTTP/1.0, a chunked body,
//! `Expect`, `Upgrade`, the HTTP/2 preface, a head `httparse` rejects, a body over the limit) is
//! not consumed: the connection, with the bytes already read put back in front, is served by
//! hyper for the rest of its life, so every case this module does not handle is answered
//! exactly as before. hyper's server and its header maps were about 7 % of the gateway's CPU
//! per request at 2,000 req/s; with this path the gateway's CPU per request fell from ~128 to
//! ~100 µs (see BENCHMARKS.md, session 4).

use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use flotilla_proto::ApiFormat;
use futures::FutureExt as _;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::{Service, api, auth, wake};

/// The largest body read here, as axum's default body limit (larger ones go to hyper, where
/// the `Bytes` extractor answers 413 as it always did).
const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Header slots for one request head; a head with more goes to hyper (which allows 100).
const MAX_HEADERS: usize = 48;
/// A head not complete within this many bytes goes to hyper (which answers 431 if it is
/// larger than its own limit).
const MAX_HEAD: usize = 64 * 1024;

/// What a connection needs from `serve`: the service for every request (its state for the
/// ones served here), and the hyper connection builder for when hyper takes over.
pub(crate) struct Handoff {
    pub builder: ConnBuilder<TokioExecutor>,
    pub service: Service,
}

/// Serves one client connection (see the module docs). `finish` asks it to end after the
/// request in progress (an idle connection closes at once); `close` drops it.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    handoff: Handoff,
    finish: CancellationToken,
    close: CancellationToken,
) {
    // One wait for `close` around the whole connection: a token's wait takes its lock at
    // every poll, so it is not set up again for every read and write of every request.
    let served = tokio::select! {
        biased;
        () = close.cancelled() => return,
        rest = requests(stream, &handoff.service, &finish) => rest,
    };
    if let Some((stream, read)) = served {
        hyper_serves(stream, read, handoff, finish, close).await;
    }
}

/// Serves requests until the connection ends (`None`) or a request must go to hyper: then
/// the socket and the bytes read from it so far.
async fn requests(
    mut stream: TcpStream,
    service: &Service,
    finish: &CancellationToken,
) -> Option<(TcpStream, BytesMut)> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let mut finished = std::pin::pin!(finish.cancelled());
    loop {
        let head = loop {
            match parse_head(&buf, &service.state.keys) {
                Parsed::Simple(h) => break h,
                Parsed::Other => return Some((stream, buf)),
                Parsed::Partial if buf.len() >= MAX_HEAD => return Some((stream, buf)),
                Parsed::Partial => {}
            }
            // Between requests, a shutdown closes the (idle) connection; inside a head it
            // waits for the request like hyper does, until `close`.
            let read = if buf.is_empty() {
                tokio::select! {
                    biased;
                    r = stream.read_buf(&mut buf) => r,
                    () = &mut finished => return None,
                }
            } else {
                stream.read_buf(&mut buf).await
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        buf.advance(head.len);
        while buf.len() < head.body_len {
            buf.reserve(head.body_len - buf.len());
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        let body = Bytes::copy_from_slice(&buf[..head.body_len]);
        buf.advance(head.body_len);
        let resp = match head.rejection {
            Some(resp) => resp,
            None => {
                // The client socket is watched while the request runs, as hyper does: a client
                // that closes its connection cancels the request (and its upstream attempt).
                // Bytes that arrive meanwhile are the next request's, kept for later. (After a
                // short read tokio knows the socket is drained, so this costs no syscall.)
                let answer = api::handle(service.state.clone(), head.format, body);
                tokio::pin!(answer);
                loop {
                    tokio::select! {
                        biased;
                        resp = &mut answer => break resp,
                        read = stream.read_buf(&mut buf), if buf.len() < MAX_HEAD => match read {
                            Ok(0) | Err(_) => return None,
                            Ok(_) => {}
                        },
                    }
                }
            }
        };
        let keep_alive = head.keep_alive && !finish.is_cancelled();
        if write_response(&mut stream, resp, keep_alive, &mut out).await.is_err() || !keep_alive {
            let _ = stream.shutdown().await;
            return None;
        }
    }
}

/// What [`parse_head`] found at the start of the buffer.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request this module serves.
    Simple(Head),
    /// Anything else: hyper serves the connection from here on.
    Other,
}

/// The parts of a request head the compatible endpoints need.
struct Head {
    /// Bytes of the head, up to and including the blank line.
    len: usize,
    body_len: usize,
    format: ApiFormat,
    keep_alive: bool,
    /// The answer when the client key check failed (the body is still read, to keep the
    /// connection in step).
    rejection: Option<Response>,
}

fn parse_head(buf: &[u8], keys: &[SecretString]) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.method != Some("POST") || req.version != Some(1) {
        return Parsed::Other;
    }
    let path = req.path.unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let Some(format) = api::endpoint_format(path) else {
        return Parsed::Other;
    };
    let mut body_len: Option<usize> = None;
    let mut keep_alive = true;
    let mut api_key: Option<&[u8]> = None;
    let mut bearer: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok().filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
            match (body_len, n.and_then(|v| v.parse::<usize>().ok())) {
                (None, Some(n)) => body_len = Some(n),
                _ => return Parsed::Other,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case("x-api-key") {
            api_key = Some(h.value);
        } else if name.eq_ignore_ascii_case("authorization") {
            bearer = Some(h.value);
        }
    }
    let Some(body_len) = body_len.filter(|n| *n <= BODY_LIMIT) else {
        return Parsed::Other;
    };
    let rejection = if keys.is_empty() {
        None
    } else {
        auth::check(keys, api_key, bearer).err().map(|err| api::error_response(format, &err, None))
    };
    Parsed::Simple(Head { len, body_len, format, keep_alive, rejection })
}

/// Writes `resp` as HTTP/1.1: with `content-length` and in one write when the body's size is
/// known (every non-streaming answer), else chunked, one chunk per body frame as it comes.
/// `out` is the connection's write buffer, kept from one answer to the next.
async fn write_response(stream: &mut TcpStream, resp: Response, keep_alive: bool, out: &mut Vec<u8>) -> io::Result<()> {
    let (parts, mut body) = resp.into_parts();
    // A large answer's buffer is not kept for the rest of the connection.
    if out.capacity() > 64 * 1024 {
        *out = Vec::with_capacity(1024);
    }
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    push_date(out);
    out.extend_from_slice(b"\r\n");
    let exact = http_body::Body::size_hint(&body).exact();
    if let Some(len) = exact {
        write!(out, "content-length: {len}\r\n\r\n")?;
        let head_len = out.len();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        if (out.len() - head_len) as u64 != len {
            // A body that broke its own size hint: the connection cannot be kept in step.
            return Err(io::Error::other("response body length does not match its size hint"));
        }
        return stream.write_all(out).await;
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    // The head goes out with the first frame; frames that are ready together (a stream's held
    // back lifecycle events and its first content, or a burst of tokens) go out in one write,
    // as hyper does.
    let mut frame = body.frame().await;
    loop {
        let ended = loop {
            match frame {
                None => break true,
                Some(f) => {
                    if let Ok(data) = f.map_err(io::Error::other)?.into_data()
                        && !data.is_empty()
                    {
                        write!(out, "{:x}\r\n", data.len())?;
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            match body.frame().now_or_never() {
                Some(next) => frame = next,
                None => break false,
            }
        };
        if ended {
            out.extend_from_slice(b"0\r\n\r\n");
            return stream.write_all(out).await;
        }
        stream.write_all(out).await?;
        out.clear();
        frame = body.frame().await;
    }
}

/// The `date` header value, formatted at most once a second per thread (as hyper does).
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Hands the connection to hyper, with the bytes already read in front of the socket's.
async fn hyper_serves(
    stream: TcpStream,
    read: BytesMut,
    handoff: Handoff,
    finish: CancellationToken,
    close: CancellationToken,
) {
    let io = Rewind { read: read.freeze(), inner: stream };
    let Handoff { builder, service } = handoff;
    wake::Coalesce::new(async move {
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            () = close.cancelled() => return,
            () = finish.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        tokio::select! {
            biased;
            _ = conn => {}
            () = close.cancelled() => {}
        }
    })
    .await;
}

/// A socket with bytes already read from it put back in front.
struct Rewind {
    read: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
