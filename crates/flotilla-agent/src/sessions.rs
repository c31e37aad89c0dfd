//! Thread history shared beyond this node: the fleet keeps each thread's history in the cluster
//! store, so that a node taking over an agent's Slack app continues its conversations.

use flotilla_journal::HistoryEntry;

/// Where thread history is shared. Both calls are best effort: a store outage must not stop a
/// turn, so errors are the implementation's to log.
#[async_trait::async_trait]
pub trait Sessions: Send + Sync + std::fmt::Debug + 'static {
    /// The thread's history as last saved by any node, oldest first; None if unknown.
    async fn load(&self, agent: &str, conversation: &str, thread: &str) -> Option<Vec<HistoryEntry>>;
    /// Saves the thread's history after a turn completed (newest entries, oldest first).
    async fn save(&self, agent: &str, conversation: &str, thread: &str, history: &[HistoryEntry]);
}
