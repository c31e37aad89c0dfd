//! One Socket Mode WebSocket connection: frames in, acks out, and transport-level liveness
//! (a WebSocket ping every `ping_interval`, a pong required within `pong_timeout`), so a
//! silent or half-open socket is found in seconds whatever the app traffic.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

/// Identifies one connection among the overlapping ones of a channel.
pub type ConnId = u64;

/// A Socket Mode envelope (`events_api`, `slash_commands`, `interactive`).
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub envelope_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub retry_attempt: u32,
    #[serde(default)]
    pub retry_reason: String,
}

/// What a connection reports to its channel.
#[derive(Debug)]
pub enum ConnEvent {
    Hello {
        conn: ConnId,
        num_connections: u32,
    },
    Envelope {
        conn: ConnId,
        envelope: Envelope,
    },
    /// Slack asked us to move: `warning` (about to close), `refresh_requested`, `link_disabled`.
    Disconnect {
        conn: ConnId,
        reason: String,
    },
    /// Frames arrived (any kind): the socket is alive.
    Alive {
        conn: ConnId,
    },
    /// The connection is gone; `stale` = no pong within the deadline.
    Closed {
        conn: ConnId,
        reason: String,
        stale: bool,
    },
}

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        // Detection within ping_interval + pong_timeout (≤ 7 s) of the socket going silent.
        Liveness { ping_interval: Duration::from_secs(2), pong_timeout: Duration::from_secs(5) }
    }
}

/// A handle to a running connection: send acks, close it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    acks: mpsc::UnboundedSender<String>,
    cancel: CancellationToken,
}

impl ConnHandle {
    /// Acknowledges an envelope. Returns false if the connection is already gone (Slack will
    /// then redeliver the envelope on another connection).
    pub fn ack(&self, envelope_id: &str) -> bool {
        let frame = serde_json::json!({ "envelope_id": envelope_id }).to_string();
        self.acks.send(frame).is_ok()
    }

    /// Closes the connection (a normal WebSocket close).
    pub fn close(&self) {
        self.cancel.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled() || self.acks.is_closed()
    }
}

/// Connects to a Socket Mode URL and runs the connection in a task until it closes; events go
/// to `events`. The task ends on close, on a missed pong, or when `parent` is cancelled.
pub async fn connect(
    url: &str,
    id: ConnId,
    liveness: Liveness,
    events: mpsc::Sender<ConnEvent>,
    parent: &CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<ConnHandle, String> {
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| "websocket connect timed out".to_owned())?
        .map_err(|e| format!("websocket connect failed: {e}"))?;
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let cancel = parent.child_token();
    let handle = ConnHandle { id, acks: acks_tx, cancel: cancel.clone() };
    tracker.spawn(run(ws, id, liveness, events, acks_rx, cancel));
    Ok(handle)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    ws: Ws,
    id: ConnId,
    liveness: Liveness,
    events: mpsc::Sender<ConnEvent>,
    mut acks: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) {
    let (mut sink, mut stream) = ws.split();
    let mut ping_timer = tokio::time::interval(liveness.ping_interval);
    ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The ping we are waiting a pong for: (payload, sent at).
    let mut outstanding: Option<(u64, Instant)> = None;
    let mut ping_seq: u64 = 0;
    let (reason, stale) = loop {
        let pong_deadline = outstanding.map(|(_, at)| at + liveness.pong_timeout);
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000.into(), reason: "bye".into() }))).await;
                break ("closed by flotilla".to_owned(), false);
            }
            _ = async { match pong_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                break (format!("no pong within {} ms", liveness.pong_timeout.as_millis()), true);
            }
            _ = ping_timer.tick() => {
                if outstanding.is_none() {
                    ping_seq += 1;
                    outstanding = Some((ping_seq, Instant::now()));
                    if let Err(e) = sink.send(Message::Ping(ping_seq.to_be_bytes().to_vec().into())).await {
                        break (format!("ping failed: {e}"), false);
                    }
                }
            }
            ack = acks.recv() => {
                let Some(frame) = ack else { break ("ack channel closed".to_owned(), false) };
                if let Err(e) = sink.send(Message::Text(frame.into())).await {
                    break (format!("ack send failed: {e}"), false);
                }
            }
            frame = stream.next() => {
                let msg = match frame {
                    None => break ("socket closed by peer".to_owned(), false),
                    Some(Err(e)) => break (format!("socket error: {e}"), false),
                    Some(Ok(m)) => m,
                };
                let _ = events.send(ConnEvent::Alive { conn: id }).await;
                match msg {
                    Message::Pong(p) => {
                        if let Some((seq, _)) = outstanding
                            && p.as_ref() == seq.to_be_bytes() {
                                outstanding = None;
                            }
                    }
                    Message::Text(t) => {
                        if let Some(ev) = parse_frame(id, t.as_str())
                            && events.send(ev).await.is_err() {
                                break ("channel gone".to_owned(), false);
                            }
                    }
                    Message::Close(f) => {
                        break (format!("closed by slack: {}", f.map(|f| f.reason.to_string()).unwrap_or_default()), false);
                    }
                    // Pings from Slack are answered by tungstenite on the next write/flush.
                    Message::Ping(_) => { let _ = sink.flush().await; }
                    Message::Binary(_) | Message::Frame(_) => {}
                }
            }
        }
    };
    cancel.cancel();
    let _ = events.send(ConnEvent::Closed { conn: id, reason, stale }).await;
}

/// Parses a Socket Mode text frame into an event; unknown frames are ignored (logged).
pub fn parse_frame(conn: ConnId, text: &str) -> Option<ConnEvent> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(event = "slack_bad_frame", error = %e, "ignoring a socket frame that is not JSON");
            return None;
        }
    };
    match v.get("type").and_then(Value::as_str) {
        Some("hello") => {
            let n = v.get("num_connections").and_then(Value::as_u64).unwrap_or(1) as u32;
            Some(ConnEvent::Hello { conn, num_connections: n })
        }
        Some("disconnect") => {
            let reason = v.get("reason").and_then(Value::as_str).unwrap_or("unknown").to_owned();
            Some(ConnEvent::Disconnect { conn, reason })
        }
        Some("events_api" | "slash_commands" | "interactive") => match serde_json::from_value::<Envelope>(v) {
            Ok(envelope) => Some(ConnEvent::Envelope { conn, envelope }),
            Err(e) => {
                tracing::warn!(event = "slack_bad_envelope", error = %e, "ignoring a malformed envelope");
                None
            }
        },
        other => {
            tracing::debug!(event = "slack_unknown_frame", kind = ?other, "ignoring an unknown frame type");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slack_frames() {
        let hello = r#"{"type":"hello","num_connections":2,"debug_info":{"host":"applink-1"},"connection_info":{"app_id":"A1"}}"#;
        assert!(matches!(parse_frame(1, hello), Some(ConnEvent::Hello { num_connections: 2, .. })));
        let env = r#"{"envelope_id":"e-1","payload":{"type":"event_callback","event_id":"Ev1","event":{"type":"message","text":"hi","ts":"1.1","channel":"C1","user":"U1"}},"type":"events_api","accepts_response_payload":false,"retry_attempt":1,"retry_reason":"timeout"}"#;
        match parse_frame(1, env) {
            Some(ConnEvent::Envelope { envelope, .. }) => {
                assert_eq!(envelope.envelope_id, "e-1");
                assert_eq!(envelope.retry_attempt, 1);
                assert_eq!(envelope.payload["event_id"], "Ev1");
            }
            other => panic!("{other:?}"),
        }
        let dis = r#"{"type":"disconnect","reason":"warning","debug_info":{"host":"applink-1"}}"#;
        assert!(matches!(parse_frame(1, dis), Some(ConnEvent::Disconnect { reason, .. }) if reason == "warning"));
        assert!(parse_frame(1, "not json").is_none());
        assert!(parse_frame(1, r#"{"type":"something_new"}"#).is_none());
    }
}
