//! Thread history in the cluster store, so a node that takes over an agent continues its conversations.

use std::sync::Arc;

use flotilla_journal::{HistoryEntry, Role};
use flotilla_store::Store;
use serde::{Deserialize, Serialize};

use crate::Keys;

/// [`flotilla_agent::Sessions`] over the store. Best effort: failures are logged, never fail a turn.
#[derive(Clone)]
pub struct StoreSessions {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl std::fmt::Debug for StoreSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSessions").field("store", &self.store.describe()).finish()
    }
}

impl StoreSessions {
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        StoreSessions { store, keys }
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    assistant: bool,
    text: String,
    ts: Option<String>,
    user: String,
}

#[async_trait::async_trait]
impl flotilla_agent::Sessions for StoreSessions {
    async fn load(&self, agent: &str, conversation: &str, thread: &str) -> Option<Vec<HistoryEntry>> {
        let key = self.keys.session(agent, conversation, thread);
        match self.store.get(&key).await {
            Ok(Some(kv)) => match serde_json::from_slice::<Vec<Entry>>(&kv.value) {
                Ok(entries) => Some(
                    entries
                        .into_iter()
                        .map(|e| HistoryEntry {
                            role: if e.assistant { Role::Assistant } else { Role::User },
                            text: e.text,
                            ts: e.ts,
                            user: e.user,
                        })
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!(event = "session_unreadable", key = %key, error = %e);
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(event = "session_load_failed", key = %key, error = %e);
                None
            }
        }
    }

    async fn save(&self, agent: &str, conversation: &str, thread: &str, history: &[HistoryEntry]) {
        let entries: Vec<Entry> = history
            .iter()
            .map(|h| Entry {
                assistant: h.role == Role::Assistant,
                text: h.text.clone(),
                ts: h.ts.clone(),
                user: h.user.clone(),
            })
            .collect();
        let key = self.keys.session(agent, conversation, thread);
        let value = match serde_json::to_vec(&entries) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(event = "session_save_failed", key = %key, error = %e);
                return;
            }
        };
        if let Err(e) = self.store.put(&key, value, None).await {
            tracing::warn!(event = "session_save_failed", key = %key, error = %e);
        }
    }
}
