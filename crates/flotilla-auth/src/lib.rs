//! Fleet credentials: the node key file, age-sealed credential records and OAuth refresh.
//!
//! Credentials live in the cluster store only in sealed form ([`sealed`]): encrypted with age
//! to the fleet's X25519 key, whose identity is kept in a key file outside the store
//! ([`keyfile`]) and copied to each node once at setup. A sealed blob names the key it was
//! sealed to by a short public fingerprint, so a node holding the wrong key file says so
//! instead of failing obscurely.
//!
//! [`credential`] defines the record that is sealed (API key, OAuth token set, or a generic
//! secret such as a Slack token) and builds it from what `flotilla auth add` is given.
//! [`oauth`] refreshes an OAuth credential against the provider's token endpoint and says
//! whether a failure is worth retrying or needs a human to log in again.
//!
//! Invariant: no secret value reaches a `Debug` string, an error message or a log line. Secret
//! fields are [`secrecy::SecretString`]; JSON parse errors keep only line and column, because
//! serde_json's messages can quote the input.

pub mod credential;
mod error;
pub mod keyfile;
pub mod oauth;
pub mod sealed;

pub use credential::{OAuthCredential, OAuthOptions, StoredCredential, open_credential, seal_credential};
pub use error::AuthError;
pub use keyfile::{KeyFile, default_key_path};
pub use oauth::{RefreshError, TokenSet, needs_refresh, refresh};
pub use sealed::{open, seal};
