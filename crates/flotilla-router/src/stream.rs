//! A stream committed to one candidate: its first content has arrived, so from here on a
//! failure is reported to the client as a protocol-level error event, never as a hang.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::StreamEvent;

use crate::error::AttemptRecord;
use crate::router::Answered;
use crate::upstream::{AttemptFailure, UpstreamStream};

/// The rest of a committed stream.
#[derive(Debug)]
pub struct CommittedStream {
    head: VecDeque<StreamEvent>,
    upstream: Box<UpstreamStream>,
    /// Who answered and what was tried before.
    pub answered: Arc<Answered>,
    pub attempts: Vec<AttemptRecord>,
    /// Longest silence tolerated between two upstream events.
    idle_timeout: Duration,
    /// Router's own time until the request was sent upstream.
    pub own_time: Duration,
    done: bool,
}

impl CommittedStream {
    pub(crate) fn new(
        head: Vec<StreamEvent>,
        upstream: Box<UpstreamStream>,
        answered: Arc<Answered>,
        attempts: Vec<AttemptRecord>,
        idle_timeout: Duration,
        own_time: Duration,
    ) -> Self {
        CommittedStream { head: head.into(), upstream, answered, attempts, idle_timeout, own_time, done: false }
    }

    /// The next event; `None` after the upstream's final event. An error ends the stream: the
    /// caller sends it to the client in the client's protocol and closes.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, AttemptFailure>> {
        if let Some(ev) = self.head.pop_front() {
            return Some(Ok(ev));
        }
        if self.done {
            return None;
        }
        let result = match tokio::time::timeout(self.idle_timeout, self.upstream.next_event()).await {
            Err(_) => Err(AttemptFailure::Timeout { after: self.idle_timeout }),
            Ok(r) => r,
        };
        match result {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
