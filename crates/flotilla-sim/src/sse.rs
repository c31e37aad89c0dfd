//! Server-sent-event bodies: framing, pacing (time to first token, tokens per second) and the
//! mid-stream faults (stall, cut, reset, garbage, error event).

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::fault::Fault;
use crate::handle::{SimHandle, StreamEnd};
use crate::server::ConnCtl;

/// When an event may be sent relative to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Right away (lifecycle events, terminal events).
    Now,
    /// After the time to first token: the first content delta.
    FirstToken,
    /// One token's time after the previous delta.
    Token,
}

/// The events of one stream, in order, before faults and pacing are applied.
#[derive(Default)]
pub(crate) struct Events {
    list: Vec<(Bytes, Pace)>,
}

impl Events {
    /// `event: <name>\ndata: <json>\n\n` (Anthropic, Responses).
    pub fn named(&mut self, name: &str, data: &Value, pace: Pace) {
        self.list.push((frame(Some(name), data), pace));
    }

    /// `data: <json>\n\n` (Chat Completions).
    pub fn data(&mut self, data: &Value, pace: Pace) {
        self.list.push((frame(None, data), pace));
    }

    pub fn raw(&mut self, bytes: &'static [u8], pace: Pace) {
        self.list.push((Bytes::from_static(bytes), pace));
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// One SSE event as bytes.
pub(crate) fn frame(name: Option<&str>, data: &Value) -> Bytes {
    let json = serde_json::to_vec(data).unwrap_or_default();
    let mut b = BytesMut::with_capacity(json.len() + 32);
    if let Some(name) = name {
        b.extend_from_slice(b"event: ");
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"\n");
    }
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(&json);
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

/// An event whose data is not valid JSON (the [`Fault::MalformedSse`] payload).
const GARBAGE: &[u8] = b"data: {\"type\": \"content_block_delta\", \"delta\": {\"text\": \"tru\n\n";

/// Timing of a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub ttft: Duration,
    pub per_token: Duration,
}

impl Timing {
    pub fn new(ttft: Duration, tokens_per_sec: f64) -> Self {
        let per_token = if tokens_per_sec.is_finite() && tokens_per_sec > 0.0 {
            Duration::from_secs_f64(1.0 / tokens_per_sec)
        } else {
            Duration::ZERO
        };
        Timing { ttft, per_token }
    }
}

/// Where a mid-stream fault acts: after `after_events` events, but never past the last event,
/// so the fault always lands inside the stream.
pub(crate) fn fault_index(after_events: u32, len: usize) -> usize {
    usize::try_from(after_events).unwrap_or(usize::MAX).min(len.saturating_sub(1))
}

/// A run of bytes sent together after `delay`.
struct Segment {
    delay: Duration,
    data: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    Complete,
    Cut,
    Reset,
}

/// Turns events into timed segments, merging events that go out back to back (so a stream
/// without pacing is one write).
fn segments(events: Events, timing: Timing, fault: Option<&Fault>, mid_error: Option<Bytes>) -> (Vec<Segment>, Tail) {
    let len = events.len();
    let at = |n: &u32| Some(fault_index(*n, len));
    let (mut stall, mut cut, mut reset, mut bad, mut err) = (None, None, None, None, None);
    match fault {
        Some(Fault::StallMidStream { after_events, ms }) => {
            stall = at(after_events).map(|i| (i, Duration::from_millis(*ms)));
        }
        Some(Fault::CutMidStream { after_events }) => cut = at(after_events),
        Some(Fault::ResetMidStream { after_events }) => reset = at(after_events),
        Some(Fault::MalformedSse { after_events }) => bad = at(after_events),
        Some(Fault::ErrorMidStream { after_events }) => err = at(after_events),
        _ => {}
    }

    let mut segs = Vec::new();
    let mut cur = BytesMut::new();
    let mut cur_delay = Duration::ZERO;
    let mut tail = Tail::Complete;
    for (i, (bytes, pace)) in events.list.into_iter().enumerate() {
        if cut == Some(i) {
            tail = Tail::Cut;
            break;
        }
        if reset == Some(i) {
            tail = Tail::Reset;
            break;
        }
        if err == Some(i) {
            if let Some(e) = &mid_error {
                cur.extend_from_slice(e);
            }
            tail = Tail::Cut;
            break;
        }
        let mut delay = match pace {
            Pace::Now => Duration::ZERO,
            Pace::FirstToken => timing.ttft,
            Pace::Token => timing.per_token,
        };
        if let Some((_, ms)) = stall.filter(|(si, _)| *si == i) {
            delay += ms;
        }
        if !delay.is_zero() && !cur.is_empty() {
            segs.push(Segment { delay: cur_delay, data: cur.split().freeze() });
        }
        if !delay.is_zero() {
            cur_delay = delay;
        }
        if bad == Some(i) {
            cur.extend_from_slice(GARBAGE);
        }
        cur.extend_from_slice(&bytes);
    }
    if !cur.is_empty() {
        segs.push(Segment { delay: cur_delay, data: cur.freeze() });
    }
    (segs, tail)
}

/// The response body of a stream. `mid_error` is the API's error event for
/// [`Fault::ErrorMidStream`].
pub(crate) fn body(
    events: Events,
    timing: Timing,
    fault: Option<&Fault>,
    mid_error: Option<Bytes>,
    handle: SimHandle,
    ctl: Option<ConnCtl>,
) -> Body {
    let (segs, tail) = segments(events, timing, fault, mid_error);
    let state = State { segs: segs.into_iter(), tail: Some(tail), handle, ctl };
    Body::from_stream(futures::stream::unfold(state, next_chunk))
}

struct State {
    segs: std::vec::IntoIter<Segment>,
    tail: Option<Tail>,
    handle: SimHandle,
    ctl: Option<ConnCtl>,
}

async fn next_chunk(mut st: State) -> Option<(Result<Bytes, std::io::Error>, State)> {
    if let Some(seg) = st.segs.next() {
        if !seg.delay.is_zero() {
            tokio::time::sleep(seg.delay).await;
        }
        return Some((Ok(seg.data), st));
    }
    match st.tail.take()? {
        Tail::Complete => {
            st.handle.stream_ended(StreamEnd::Completed);
            None
        }
        Tail::Cut => {
            st.handle.stream_ended(StreamEnd::Cut);
            None
        }
        Tail::Reset => {
            st.handle.stream_ended(StreamEnd::Reset);
            // Give the connection a moment to write out the events already yielded: a reset
            // with SO_LINGER 0 throws away whatever is still in the send buffer.
            tokio::time::sleep(Duration::from_millis(20)).await;
            match &st.ctl {
                Some(ctl) => {
                    ctl.reset();
                    // The connection task drops this body together with the connection.
                    std::future::pending::<()>().await;
                    None
                }
                None => Some((
                    Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated connection reset")),
                    st,
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn five() -> Events {
        let mut e = Events::default();
        e.named("a", &json!({"n": 0}), Pace::Now);
        e.named("b", &json!({"n": 1}), Pace::FirstToken);
        e.named("c", &json!({"n": 2}), Pace::Token);
        e.named("d", &json!({"n": 3}), Pace::Token);
        e.named("e", &json!({"n": 4}), Pace::Now);
        e
    }

    fn text(segs: &[Segment]) -> String {
        segs.iter().map(|s| String::from_utf8_lossy(&s.data).into_owned()).collect()
    }

    #[test]
    fn unpaced_stream_is_one_segment() {
        let (segs, tail) = segments(five(), Timing::new(Duration::ZERO, 0.0), None, None);
        assert_eq!(segs.len(), 1);
        assert_eq!(tail, Tail::Complete);
        assert!(text(&segs).starts_with("event: a\ndata: {\"n\":0}\n\n"));
    }

    #[test]
    fn pacing_splits_segments_with_delays() {
        let t = Timing::new(Duration::from_millis(100), 100.0);
        let (segs, _) = segments(five(), t, None, None);
        let delays: Vec<u128> = segs.iter().map(|s| s.delay.as_millis()).collect();
        assert_eq!(delays, vec![0, 100, 10, 10]);
    }

    #[test]
    fn cut_drops_the_rest_and_at_least_the_last_event() {
        let (segs, tail) =
            segments(five(), Timing::new(Duration::ZERO, 0.0), Some(&Fault::CutMidStream { after_events: 2 }), None);
        assert_eq!(tail, Tail::Cut);
        assert_eq!(text(&segs).matches("event:").count(), 2);
        let (segs, _) =
            segments(five(), Timing::new(Duration::ZERO, 0.0), Some(&Fault::CutMidStream { after_events: 99 }), None);
        assert!(!text(&segs).contains("event: e"));
    }

    #[test]
    fn malformed_inserts_garbage_and_continues() {
        let (segs, tail) =
            segments(five(), Timing::new(Duration::ZERO, 0.0), Some(&Fault::MalformedSse { after_events: 1 }), None);
        let t = text(&segs);
        assert_eq!(tail, Tail::Complete);
        let g = t.find("tru\n").unwrap();
        assert!(t.find("event: a").unwrap() < g && g < t.find("event: b").unwrap());
        assert!(t.contains("event: e"));
    }

    #[test]
    fn error_event_replaces_the_rest() {
        let (segs, tail) = segments(
            five(),
            Timing::new(Duration::ZERO, 0.0),
            Some(&Fault::ErrorMidStream { after_events: 3 }),
            Some(Bytes::from_static(b"event: error\ndata: {}\n\n")),
        );
        let t = text(&segs);
        assert_eq!(tail, Tail::Cut);
        assert!(t.ends_with("event: error\ndata: {}\n\n"));
        assert!(!t.contains("event: d"));
    }

    #[test]
    fn stall_adds_to_the_delay_of_its_event() {
        let (segs, _) = segments(
            five(),
            Timing::new(Duration::ZERO, 0.0),
            Some(&Fault::StallMidStream { after_events: 2, ms: 500 }),
            None,
        );
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].delay, Duration::from_millis(500));
        assert!(String::from_utf8_lossy(&segs[1].data).starts_with("event: c"));
    }
}
