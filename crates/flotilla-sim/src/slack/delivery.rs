//! Socket Mode delivery: which apps get an event, one connection per envelope, acks, and
//! redelivery of unacked `events_api` envelopes with `retry_attempt` / `retry_reason`.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::ids::{upper_alnum, uuid};
use super::shapes;
use super::state::{Author, EnvelopeRef, Out, Pending, Settings, Shared, State, mentioned_apps};

/// One event a new message produced for one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub app: String,
    /// `message` or `app_mention`.
    pub event_type: String,
    pub event_id: String,
    /// `None` when the app had no open connection: the event is lost (only history has the
    /// message), as with Slack after its retries.
    pub envelope_id: Option<String>,
}

impl State {
    /// Sends the events for message `idx` of channel `ch`: a `message` event to every app
    /// whose bot is in the conversation and, for a user message mentioning a bot in a
    /// channel, an `app_mention` event to that bot's app.
    pub(crate) fn dispatch(&mut self, settings: &Settings, ch: usize, idx: usize) -> Vec<Delivery> {
        let c = &self.channels[ch];
        let m = &c.msgs[idx];
        let is_bot = matches!(m.author, Author::Bot(_));
        if is_bot && !settings.echo_bot_messages {
            return Vec::new();
        }
        let members: Vec<usize> =
            (0..self.apps.len()).filter(|a| c.members.contains(&self.apps[*a].bot_user_id)).collect();
        let mentioned = if is_bot || c.is_im() { Vec::new() } else { mentioned_apps(&self.apps, &m.text) };
        let message = shapes::message_event(self, c, m);
        let mention = (!mentioned.is_empty()).then(|| shapes::app_mention_event(self, c, m));
        let event_time = m.ts.secs();
        let mut out = Vec::new();
        for app in members {
            out.push(self.deliver_event(settings, app, "message", message.clone(), event_time));
            if let Some(ev) = &mention
                && mentioned.contains(&app)
            {
                out.push(self.deliver_event(settings, app, "app_mention", ev.clone(), event_time));
            }
        }
        out
    }

    fn deliver_event(
        &mut self,
        settings: &Settings,
        app: usize,
        event_type: &str,
        event: Value,
        time: u64,
    ) -> Delivery {
        let event_id = format!("Ev{}", upper_alnum(10));
        let payload = shapes::event_callback(self, app, event, &event_id, time);
        let envelope_id = self.send_event(settings, app, payload);
        Delivery { app: self.apps[app].name.clone(), event_type: event_type.to_owned(), event_id, envelope_id }
    }

    /// Sends an `events_api` envelope to one connection of `app` and starts its ack clock.
    fn send_event(&mut self, settings: &Settings, app: usize, payload: Value) -> Option<String> {
        let Some(conn) = self.pick_conn(app) else {
            self.stats.events_undelivered += 1;
            return None;
        };
        let envelope_id = uuid();
        let text = shapes::envelope("events_api", &envelope_id, &payload, Some((0, "")));
        self.push(conn, text);
        let id = self.fresh_delivery();
        let deadline = Instant::now() + settings.ack_timeout;
        self.envelopes.insert(envelope_id.clone(), EnvelopeRef::Event(id));
        self.deadlines.insert((deadline, id));
        self.pending
            .insert(id, Pending { app, payload, attempt: 0, envelope_ids: vec![envelope_id.clone()], deadline });
        Some(envelope_id)
    }

    /// Sends a `slash_commands` or `interactive` envelope (never retried, like Slack).
    pub(crate) fn send_once(&mut self, app: usize, kind: &str, payload: &Value) -> Option<String> {
        let conn = self.pick_conn(app)?;
        let envelope_id = uuid();
        let text = shapes::envelope(kind, &envelope_id, payload, None);
        self.push(conn, text);
        self.envelopes.insert(envelope_id.clone(), EnvelopeRef::Once);
        Some(envelope_id)
    }

    fn push(&mut self, conn: u64, text: String) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.envelopes += 1;
            let _ = c.tx.send(Out::Text(text));
        }
        self.stats.envelopes_sent += 1;
    }

    fn fresh_delivery(&mut self) -> u64 {
        self.next_seq()
    }

    /// An `{"envelope_id": …}` from a client. Acks of any attempt of an event stop its
    /// redelivery; acks nobody waits for are counted as unknown.
    pub(crate) fn ack(&mut self, envelope_id: &str, payload: Option<Value>) {
        match self.envelopes.get(envelope_id).copied() {
            Some(EnvelopeRef::Event(id)) => {
                self.finish(id);
                self.stats.envelopes_acked += 1;
            }
            Some(EnvelopeRef::Once) => {
                if self.once_acks.insert(envelope_id.to_owned(), payload).is_none() {
                    self.stats.envelopes_acked += 1;
                }
            }
            None => self.stats.acks_unknown += 1,
        }
    }

    fn finish(&mut self, id: u64) {
        if let Some(p) = self.pending.remove(&id) {
            self.deadlines.remove(&(p.deadline, id));
            for e in p.envelope_ids {
                self.envelopes.remove(&e);
            }
        }
    }

    /// Redelivers (or gives up on) every envelope whose ack is overdue; returns the next
    /// deadline.
    pub(crate) fn redeliver_due(&mut self, settings: &Settings, now: Instant) -> Option<Instant> {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                return Some(deadline);
            }
            self.deadlines.remove(&(deadline, id));
            let Some((app, attempt)) = self.pending.get(&id).map(|p| (p.app, p.attempt)) else {
                continue;
            };
            let conn = if attempt < settings.max_retries { self.pick_conn(app) } else { None };
            let Some(conn) = conn else {
                self.finish(id);
                self.stats.events_dropped += 1;
                continue;
            };
            let envelope_id = uuid();
            let deadline = now + settings.ack_timeout;
            let text = match self.pending.get_mut(&id) {
                Some(p) => {
                    p.attempt += 1;
                    p.deadline = deadline;
                    p.envelope_ids.push(envelope_id.clone());
                    shapes::envelope("events_api", &envelope_id, &p.payload, Some((p.attempt, "timeout")))
                }
                None => continue,
            };
            self.push(conn, text);
            self.stats.envelopes_retried += 1;
            self.envelopes.insert(envelope_id, EnvelopeRef::Event(id));
            self.deadlines.insert((deadline, id));
        }
        None
    }
}

/// Redelivers unacked envelopes until `stop`.
pub(crate) async fn retry_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let next = {
            let mut st = shared.lock();
            st.redeliver_due(&shared.settings, Instant::now())
        };
        shared.touch();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep => {}
            () = shared.retry_wake.notified() => {}
        }
    }
}

/// Envelope types that can be sent from the handle or the admin API besides the events of
/// messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    EventsApi,
    SlashCommands,
    Interactive,
}

impl EnvelopeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EnvelopeKind::EventsApi => "events_api",
            EnvelopeKind::SlashCommands => "slash_commands",
            EnvelopeKind::Interactive => "interactive",
        }
    }
}

impl State {
    /// An envelope of any kind with a caller-made payload; `events_api` ones are retried.
    pub(crate) fn send_custom(
        &mut self,
        settings: &Settings,
        app: usize,
        kind: EnvelopeKind,
        payload: Value,
    ) -> Option<String> {
        match kind {
            EnvelopeKind::EventsApi => self.send_event(settings, app, payload),
            other => self.send_once(app, other.as_str(), &payload),
        }
    }
}
