//! Reads the sealed auth profiles and secrets from the store and opens them with the fleet key, for the
//! config checker (`Env::with_store`).

use std::time::SystemTime;

use flotilla_auth::{KeyFile, StoredCredential, open_credential};
use flotilla_config::{CredentialKind, StoreSecrets, StoredAuth};
use flotilla_store::Store;
use secrecy::SecretString;

use crate::{FleetError, Keys};

/// Every auth profile and secret in the store, opened with `key`. Without a key, the names are known but
/// values are placeholders (good enough to validate a config's shape; a node always has the key).
pub async fn load(store: &dyn Store, keys: &Keys, key: Option<&KeyFile>) -> Result<StoreSecrets, FleetError> {
    let mut out = StoreSecrets::default();
    let auth = store.list(&keys.auth_profiles()).await?;
    for kv in auth.kvs {
        let Some(name) = keys.name_after(&keys.auth_profiles(), &kv.key) else { continue };
        let stored = match open_entry(key, name, &kv.value)? {
            None => StoredAuth { provider: String::new(), kind: CredentialKind::ApiKey, secret: unverified() },
            Some(StoredCredential::ApiKey { provider, key }) => {
                StoredAuth { provider, kind: CredentialKind::ApiKey, secret: key }
            }
            Some(StoredCredential::OAuth(o)) => StoredAuth {
                provider: o.provider,
                kind: CredentialKind::OAuth { expires_at: Some(o.expires_at) },
                secret: o.access_token,
            },
            Some(StoredCredential::Secret { value }) => {
                out.secrets.insert(name.to_owned(), value);
                continue;
            }
        };
        out.auth.insert(name.to_owned(), stored);
    }
    let secrets = store.list(&keys.secrets()).await?;
    for kv in secrets.kvs {
        let Some(path) = keys.name_after(&keys.secrets(), &kv.key) else { continue };
        let value = match open_entry(key, path, &kv.value)? {
            None => unverified(),
            Some(StoredCredential::Secret { value } | StoredCredential::ApiKey { key: value, .. }) => value,
            Some(StoredCredential::OAuth(o)) => o.access_token,
        };
        out.secrets.insert(path.to_owned(), value);
    }
    Ok(out)
}

/// One sealed entry opened with `key`; `None` without a key (its name is known, its value not).
fn open_entry(key: Option<&KeyFile>, name: &str, sealed: &[u8]) -> Result<Option<StoredCredential>, FleetError> {
    let Some(key) = key else { return Ok(None) };
    open_credential(key, sealed)
        .map(Some)
        .map_err(|e| FleetError::Secret { name: name.to_owned(), error: e.to_string() })
}

/// The value that stands for one the key-less reader cannot open.
fn unverified() -> SecretString {
    SecretString::from("unverified")
}

/// A stored credential's kind and expiry, for `auth list` (never the value).
pub fn describe(cred: &StoredCredential) -> (String, Option<SystemTime>) {
    match cred {
        StoredCredential::ApiKey { provider, .. } => (format!("api-key for {provider}"), None),
        StoredCredential::OAuth(o) => (format!("oauth for {}", o.provider), Some(o.expires_at)),
        StoredCredential::Secret { .. } => ("secret".to_owned(), None),
    }
}
