//! The channel's inbox over the journal: a message is on disk before its envelope is acked,
//! and each new one is handed to the agent's dispatcher.

use std::sync::Arc;

use flotilla_journal::{InboundMessage, Recorded, Source};
use flotilla_slack::{Inbox, SlackInbound};

use crate::{AgentCtx, Dispatch};

/// [`Inbox`] for one agent.
#[derive(Debug)]
pub struct JournalInbox {
    ctx: Arc<AgentCtx>,
}

impl JournalInbox {
    pub(crate) fn new(ctx: Arc<AgentCtx>) -> Self {
        JournalInbox { ctx }
    }
}

impl Inbox for JournalInbox {
    async fn record(&self, msg: SlackInbound) -> Result<(), String> {
        let thread_key = msg.thread_ts.clone().unwrap_or_else(|| msg.ts.clone());
        let conversation = msg.conversation.clone();
        let inbound = InboundMessage {
            app: msg.app,
            agent: self.ctx.id.clone(),
            conversation: msg.conversation,
            ts: msg.ts,
            thread_ts: msg.thread_ts,
            user: msg.user,
            // DMs are addressed to the bot by nature; remember that in the text-free way:
            // the dispatcher looks at the conversation id.
            text: msg.text,
            event_id: msg.event_id,
            source: match msg.source {
                flotilla_slack::Source::Socket => Source::Socket,
                flotilla_slack::Source::CatchUp => Source::CatchUp,
            },
            raw: None,
        };
        let addressed = conversation.starts_with('D') || inbound.text.contains(&format!("<@{}>", self.ctx.bot_user_id));
        let app = inbound.app.clone();
        match self.ctx.journal.record_inbound(inbound).await.map_err(|e| e.to_string())? {
            Recorded::New { turn_id } => {
                // A thread the bot is asked into is the bot's thread from now on, even before
                // it replies: a follow-up there during a gap must be caught up.
                if addressed {
                    self.ctx.journal.note_thread(&app, &conversation, &thread_key).await.map_err(|e| e.to_string())?;
                }
                let _ = self.ctx.turns.send(Dispatch::Turn { turn_id, thread: format!("{conversation}/{thread_key}") });
            }
            Recorded::Duplicate { .. } => {}
        }
        Ok(())
    }

    async fn cursors(&self, app: &str) -> Result<Vec<(String, String)>, String> {
        self.ctx.journal.sync_marks(app).await.map_err(|e| e.to_string())
    }

    async fn mark_synced(&self, app: &str, conversation: &str, ts: &str) -> Result<(), String> {
        self.ctx.journal.set_sync_mark(app, conversation, ts).await.map_err(|e| e.to_string())
    }

    async fn threads(&self, app: &str, conversation: &str, since: &str) -> Result<Vec<String>, String> {
        self.ctx.journal.active_threads(app, conversation, since).await.map_err(|e| e.to_string())
    }
}
