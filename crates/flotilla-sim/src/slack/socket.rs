//! The Socket Mode WebSocket at `/link/?ticket=…`: the upgrade, one task per connection
//! (hello, envelopes, acks, pings, `disconnect`), and the socket wrapper that makes a
//! connection half-open on demand.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderValue, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::handle::DropMode;
use super::state::{ConnCtl, Out, Shared};
use super::{RawSocket, Server};

/// How long a close handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /link/?ticket=…&app_id=…`: a WebSocket upgrade with a ticket from
/// `apps.connections.open`.
pub(crate) async fn link(AxState(srv): AxState<Arc<Server>>, mut req: Request) -> Response {
    let headers = req.headers();
    let upgrade =
        headers.get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = headers
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    let version = headers.get(SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) == Some("13");
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes())) else {
        return plain(StatusCode::BAD_REQUEST, "websocket upgrade expected");
    };
    if !(upgrade && connection && version) {
        return plain(StatusCode::BAD_REQUEST, "websocket upgrade expected");
    }
    let ticket = req
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "ticket").map(|(_, v)| v.into_owned()));
    let shared = srv.handle.inner.clone();
    let app = ticket.and_then(|t| shared.lock().redeem_ticket(&t));
    let Some(app) = app else {
        return plain(StatusCode::UNAUTHORIZED, "invalid or expired ticket");
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return plain(StatusCode::BAD_REQUEST, "connection cannot be upgraded");
    };
    let raw = req.extensions().get::<RawSocket>().cloned();
    let stop = srv.stop.clone();
    srv.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(shared, app, upgraded, raw, stop).await,
            Err(e) => tracing::debug!(error = %e, "slack simulator: websocket upgrade failed"),
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

type Ws = WebSocketStream<FaultyIo<TokioIo<Upgraded>>>;

/// One Socket Mode connection, from `hello` to close.
async fn run(
    shared: Arc<Shared>,
    app: usize,
    upgraded: Upgraded,
    raw: Option<RawSocket>,
    stop: tokio_util::sync::CancellationToken,
) {
    let ctl = Arc::new(ConnCtl::default());
    let io = FaultyIo { inner: TokioIo::new(upgraded), ctl: ctl.clone() };
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = shared.lock().open_conn(&shared.settings, app, tx, ctl.clone());
    shared.touch();
    let mut close_at: Option<tokio::time::Instant> = None;
    loop {
        let close_timer = async move {
            match close_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => {
                close(&mut ws, CloseCode::Away, "server shutting down").await;
                break;
            }
            () = close_timer => {
                close(&mut ws, CloseCode::Normal, "").await;
                break;
            }
            out = rx.recv() => match out {
                None => break,
                Some(Out::Text(text)) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Out::Disconnect { text, close_after }) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                    match close_after {
                        Some(d) if !d.is_zero() => {
                            let at = tokio::time::Instant::now() + d;
                            close_at = Some(close_at.map_or(at, |c| c.min(at)));
                        }
                        _ => {
                            close(&mut ws, CloseCode::Normal, "").await;
                            break;
                        }
                    }
                }
                Some(Out::Close(mode)) => {
                    match mode {
                        DropMode::Close => close(&mut ws, CloseCode::Normal, "").await,
                        DropMode::Eof => {}
                        DropMode::Reset => {
                            if let Some(raw) = &raw
                                && let Err(e) = socket2::SockRef::from(raw.0.as_ref()).set_linger(Some(Duration::ZERO))
                            {
                                tracing::debug!(error = %e, "slack simulator could not set SO_LINGER");
                            }
                        }
                    }
                    break;
                }
            },
            msg = ws.next() => match msg {
                None | Some(Err(_)) => break,
                Some(Ok(msg)) => {
                    if !incoming(&shared, &ctl, &stop, msg).await {
                        break;
                    }
                }
            },
        }
    }
    if let Some(id) = id {
        shared.lock().close_conn(id);
        shared.touch();
    }
    // Dropping `ws` closes the socket; with SO_LINGER 0 set above, the last close of the
    // socket (here or when `raw` goes) sends an RST.
    drop(ws);
    drop(raw);
}

/// Handles one message from the client; `false` ends the connection.
async fn incoming(shared: &Shared, ctl: &ConnCtl, stop: &tokio_util::sync::CancellationToken, msg: Message) -> bool {
    if ctl.is_silent() {
        // Half-open: nothing the client sends arrives anywhere. Reading goes on only so the
        // simulator notices when the client closes its side.
        if matches!(msg, Message::Ping(_)) {
            shared.lock().stats.pings_ignored += 1;
            shared.touch();
        }
        return true;
    }
    match msg {
        Message::Text(t) => {
            if let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                && let Some(id) = v.get("envelope_id").and_then(Value::as_str)
            {
                let payload = v.get("payload").cloned();
                shared.lock().ack(id, payload);
                shared.touch();
            }
            true
        }
        Message::Ping(_) => {
            // tungstenite has queued the pong; it goes out with the next read or write, so
            // waiting here delays it (and everything else on this socket, as on a slow link).
            let delay = ctl.pong_delay();
            if !delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return false,
                }
            }
            shared.lock().stats.pings_answered += 1;
            shared.touch();
            true
        }
        Message::Close(_) => true,
        _ => true,
    }
}

async fn close(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
}

/// The upgraded socket, with a switch that makes it half-open: once silenced, everything
/// written is discarded (the client hears nothing, not even pongs) while reads go on.
pub(crate) struct FaultyIo<T> {
    inner: T,
    ctl: Arc<ConnCtl>,
}

impl<T: AsyncRead + Unpin> AsyncRead for FaultyIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FaultyIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ctl.is_silent() {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ctl.is_silent() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ctl.is_silent() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
