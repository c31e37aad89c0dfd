//! The JSON records the fleet keeps in the store: config versions, the desired version, node reports,
//! Slack app owners.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One stored config version (immutable).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigVersion {
    pub version: u64,
    /// The TOML text as applied.
    pub text: String,
    pub created_at_ms: u64,
    /// Who applied it and why (`apply`, `rollback to v3`).
    pub note: String,
}

/// What every node should run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Desired {
    pub version: u64,
    /// While a canary apply runs: only these nodes take `version`; the rest keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Vec<String>>,
}

impl Desired {
    pub fn targets(&self, node: &str) -> bool {
        self.canary.as_ref().is_none_or(|c| c.iter().any(|n| n == node))
    }
}

/// A node's view of itself, published on its lease (gone when the node is).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NodeReport {
    pub name: String,
    pub hostname: String,
    pub version: String,
    pub pid: u32,
    /// Where its gateway listens (`http://127.0.0.1:7420`).
    pub addresses: Vec<String>,
    pub started_at_ms: u64,
    /// The config version it runs (verified healthy, or being verified when `verifying`).
    pub config_version: Option<u64>,
    /// True while the running version's health is still being checked.
    pub verifying: bool,
    /// The last version this node refused or rolled back, and why.
    pub failed: Option<FailedApply>,
    /// Healthy = config applied, every provider chain resolvable, every channel it owns connected.
    pub healthy: bool,
    /// What is wrong when not healthy.
    pub problems: Vec<String>,
    /// Worth a look, but not a health failure.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Slack apps: this node's role for each app of the config.
    pub channels: BTreeMap<String, ChannelReport>,
    /// Circuit breakers that are not closed (`provider/model/credential` → state).
    pub breakers: BTreeMap<String, String>,
    pub updated_at_ms: u64,
}

/// A config version a node did not keep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedApply {
    pub version: u64,
    pub reason: String,
    /// The version it went back to, if any.
    pub rolled_back_to: Option<u64>,
}

/// One Slack app as seen by one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelReport {
    pub agent: String,
    /// `owner` (holds the app's lease and runs the agent) or `standby` (someone else holds it).
    pub role: String,
    /// For an owner: the channel state (`connected`, `connecting`, `disabled: ...`).
    pub state: String,
    /// For a standby: who holds the app.
    pub owner: Option<String>,
}

/// The value of a Slack app's ownership key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppOwner {
    pub node: String,
    pub agent: String,
    pub since_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
