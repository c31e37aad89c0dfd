//! Store URLs: how a node names its store on the command line and in config (`sqlite:PATH`, `etcd://HOSTS`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{EtcdStore, SqliteStore, Store, StoreError};

/// The URL forms `open` accepts, for help texts and error messages.
pub const ACCEPTED_URLS: &str =
    "sqlite:PATH (relative or absolute), etcd://HOST:PORT[,HOST:PORT...] or etcd+http://HOST:PORT[,HOST:PORT...]";

/// Opens the store a URL names: `sqlite:PATH` (parent directories are created) or
/// `etcd://host:port[,host:port...]` (also spelled `etcd+http://`).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match parse(url)? {
        StoreUrl::Sqlite(path) => {
            let store = tokio::task::spawn_blocking(move || open_sqlite(&path))
                .await
                .map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))??;
            Ok(Arc::new(store))
        }
        StoreUrl::Etcd(endpoints) => Ok(Arc::new(EtcdStore::connect(&endpoints).await?)),
    }
}

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreUrl {
    Sqlite(PathBuf),
    /// Endpoints as `http://host:port`.
    Etcd(Vec<String>),
}

fn parse(url: &str) -> Result<StoreUrl, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl { url: url.to_owned(), reason };
    if let Some(rest) = url.strip_prefix("sqlite:") {
        // `sqlite:///var/lib/x.db` is the usual spelling of an absolute path in other tools; accept it too.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(invalid("the sqlite url names no file".to_owned()));
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    let hosts = url.strip_prefix("etcd://").or_else(|| url.strip_prefix("etcd+http://"));
    if let Some(hosts) = hosts {
        let hosts = hosts.trim_end_matches('/');
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            let port_ok =
                host.rsplit_once(':').is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok || host.contains('/') {
                return Err(invalid(format!("{host:?} is not HOST:PORT")));
            }
            endpoints.push(format!("http://{host}"));
        }
        return Ok(StoreUrl::Etcd(endpoints));
    }
    Err(invalid(format!("unknown store; accepted forms: {ACCEPTED_URLS}")))
}

fn open_sqlite(path: &Path) -> Result<SqliteStore, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Backend(format!("cannot create directory {}: {e}", parent.display())))?;
    }
    SqliteStore::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_urls() {
        assert_eq!(parse("sqlite:store.db").unwrap(), StoreUrl::Sqlite(PathBuf::from("store.db")));
        assert_eq!(parse("sqlite:/var/lib/f/s.db").unwrap(), StoreUrl::Sqlite(PathBuf::from("/var/lib/f/s.db")));
        assert_eq!(parse("sqlite:///var/lib/f/s.db").unwrap(), StoreUrl::Sqlite(PathBuf::from("/var/lib/f/s.db")));
        assert!(matches!(parse("sqlite:"), Err(StoreError::InvalidUrl { .. })));
    }

    #[test]
    fn parses_etcd_urls() {
        assert_eq!(parse("etcd://10.0.0.1:2379").unwrap(), StoreUrl::Etcd(vec!["http://10.0.0.1:2379".to_owned()]));
        assert_eq!(
            parse("etcd+http://a:1,b:2/").unwrap(),
            StoreUrl::Etcd(vec!["http://a:1".to_owned(), "http://b:2".to_owned()])
        );
        assert!(matches!(parse("etcd://a"), Err(StoreError::InvalidUrl { .. })));
        assert!(matches!(parse("etcd://a:1,"), Err(StoreError::InvalidUrl { .. })));
    }

    #[test]
    fn unknown_schemes_list_the_accepted_forms() {
        let error = parse("redis://localhost:6379").unwrap_err();
        assert!(matches!(&error, StoreError::InvalidUrl { url, .. } if url == "redis://localhost:6379"));
        assert!(error.to_string().contains("etcd://HOST:PORT"), "{error}");
        assert!(error.to_string().contains("sqlite:PATH"), "{error}");
    }

    #[tokio::test]
    async fn open_creates_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/store.db");
        let store = open(&format!("sqlite:{}", path.display())).await.unwrap();
        store.put("k", b"v".to_vec(), None).await.unwrap();
        assert!(path.exists());
        assert_eq!(store.describe(), format!("sqlite:{}", path.display()));
    }
}
