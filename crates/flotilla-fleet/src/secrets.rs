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
        let Some(key) = key else {
            out.auth.insert(
                name.to_owned(),
                StoredAuth {
                    provider: String::new(),
                    kind: CredentialKind::ApiKey,
                    secret: SecretString::from("unverified"),
                },
            );
            continue;
        };
        let cred = open_credential(key, &kv.value)
            .map_err(|e| FleetError::Secret { name: name.to_owned(), error: e.to_string() })?;
        let stored = match cred {
            StoredCredential::ApiKey { provider, key } => {
                StoredAuth { provider, kind: CredentialKind::ApiKey, secret: key }
            }
            StoredCredential::OAuth(o) => StoredAuth {
                provider: o.provider,
                kind: CredentialKind::OAuth { expires_at: Some(o.expires_at) },
                secret: o.access_token,
            },
            StoredCredential::Secret { value } => {
                out.secrets.insert(name.to_owned(), value);
                continue;
            }
        };
        out.auth.insert(name.to_owned(), stored);
    }
    let secrets = store.list(&keys.secrets()).await?;
    for kv in secrets.kvs {
        let Some(path) = keys.name_after(&keys.secrets(), &kv.key) else { continue };
        let value = match key {
            None => SecretString::from("unverified"),
            Some(key) => match open_credential(key, &kv.value)
                .map_err(|e| FleetError::Secret { name: path.to_owned(), error: e.to_string() })?
            {
                StoredCredential::Secret { value } | StoredCredential::ApiKey { key: value, .. } => value,
                StoredCredential::OAuth(o) => o.access_token,
            },
        };
        out.secrets.insert(path.to_owned(), value);
    }
    Ok(out)
}

/// A stored credential's kind and expiry, for `auth list` (never the value).
pub fn describe(cred: &StoredCredential) -> (String, Option<SystemTime>) {
    match cred {
        StoredCredential::ApiKey { provider, .. } => (format!("api-key for {provider}"), None),
        StoredCredential::OAuth(o) => (format!("oauth for {}", o.provider), Some(o.expires_at)),
        StoredCredential::Secret { .. } => ("secret".to_owned(), None),
    }
}
