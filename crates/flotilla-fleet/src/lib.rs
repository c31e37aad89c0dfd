//! The fleet: gateway nodes that share one cluster store. A node registers on a lease, runs the config
//! version the fleet desires (verified healthy, rolled back by itself if not), owns the Slack apps placed on
//! it through per-app keys on its lease (so two gateways never hold one token, and a dead node's apps move
//! within the lease TTL), shares thread history through the store, and the elected node refreshes each OAuth
//! credential. The fleet CLI reaches nodes only through the store.

mod keys;
pub mod node;
pub mod ops;
pub mod placement;
pub mod records;
pub mod secrets;
mod sessions;

pub use keys::Keys;
pub use node::{NodeHost, NodeOptions};
pub use records::{ChannelReport, ConfigVersion, Desired, FailedApply, NodeReport};
pub use sessions::StoreSessions;

use flotilla_store::StoreError;

/// Errors of fleet operations; each knows its exit code.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the config is not valid:\n{0}")]
    InvalidConfig(String),
    #[error("no node is registered in the store: start `flotilla gateway --store URL --node NAME` on each node first")]
    NoNodes,
    #[error(
        "another apply or rollback changed the desired config at the same time; look at `flotilla fleet status` and try again"
    )]
    ConcurrentApply,
    #[error("there is no earlier config version to roll back to")]
    NothingToRollBack,
    #[error("config version v{0} is not in the store (`flotilla fleet status` lists them)")]
    UnknownVersion(u64),
    #[error("{name}: {error}")]
    Secret { name: String, error: String },
    #[error("invalid name {0:?}: use letters, digits and - _ . / (no leading, trailing or double /)")]
    InvalidName(String),
    #[error("{0}")]
    Io(String),
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

impl FleetError {
    /// 2 for input the user must fix, 3 for store trouble, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FleetError::InvalidConfig(_)
            | FleetError::InvalidName(_)
            | FleetError::UnknownVersion(_)
            | FleetError::Io(_) => 2,
            FleetError::Store(_) => 3,
            _ => 1,
        }
    }
}
