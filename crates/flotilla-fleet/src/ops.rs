//! What `flotilla fleet ...` and `flotilla auth ...` do, through the store only: apply a config version and
//! wait for every live node to run it healthy (canary first if asked, rolled back on failure), roll back,
//! read the fleet's status, and store sealed credentials.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flotilla_auth::{KeyFile, StoredCredential, open_credential, seal_credential};
use flotilla_config::{Env, parse_config};
use flotilla_store::{CasOutcome, Expect, Store, WatchEvent};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::records::{AppOwner, ConfigVersion, Desired, NodeReport, now_ms};
use crate::{FleetError, Keys};

/// How an apply runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Apply to this many nodes first and wait for them before the rest.
    pub canary: Option<usize>,
    /// Give up waiting for convergence after this long.
    pub timeout: Duration,
    /// Environment and base directory for validating `env:`/`file:` references.
    pub env: Env,
    pub base_dir: std::path::PathBuf,
    /// Opens stored secrets for validation; without it only their names are checked.
    pub key_file: Option<std::sync::Arc<KeyFile>>,
    pub note: String,
}

/// Where a rollout stands, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub version: u64,
    /// Nodes that take part in this step (canary set, or every live node).
    pub targets: usize,
    /// Of those, the ones running `version` and healthy.
    pub converged: usize,
    pub phase: &'static str,
}

/// How a rollout ended.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub version: u64,
    pub nodes: usize,
    pub converged: Vec<String>,
    /// Nodes that rejected or rolled back the version, with their reason.
    pub failed: BTreeMap<String, String>,
    /// Nodes still not converged when the wait ended.
    pub pending: BTreeMap<String, String>,
    /// Set when the fleet's desired version was put back because of failures.
    pub rolled_back_to: Option<u64>,
    pub elapsed_ms: u64,
}

impl Rollout {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.pending.is_empty() && self.nodes > 0
    }
}

/// Validates `text` like `config check` (with the store's secrets), stores it as the next version and rolls
/// it out; see [`Rollout`].
pub async fn apply(
    store: &dyn Store,
    keys: &Keys,
    text: &str,
    opts: &ApplyOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<Rollout, FleetError> {
    let secrets = crate::secrets::load(store, keys, opts.key_file.as_deref()).await?;
    let env = opts.env.clone().with_store(secrets);
    let config = parse_config(text, &env, &opts.base_dir).map_err(|e| FleetError::InvalidConfig(e.to_string()))?;
    flotilla_agent::check_apps(&config).map_err(|e| FleetError::InvalidConfig(e.to_string()))?;
    let (previous, desired_rev) = match store.get(&keys.desired()).await? {
        Some(kv) => (serde_json::from_slice::<Desired>(&kv.value).ok().map(|d| d.version), Some(kv.mod_revision)),
        None => (None, None),
    };
    let version = store_version(store, keys, text, &opts.note).await?;
    let started = Instant::now();
    let live = live_nodes(store, keys).await?;
    if live.is_empty() {
        return Err(FleetError::NoNodes);
    }
    let mut expect = desired_rev.map_or(Expect::Absent, Expect::ModRevision);
    if let Some(n) = opts.canary.filter(|n| *n < live.len()) {
        let canary: Vec<String> = live.keys().take(n.max(1)).cloned().collect();
        expect = set_desired(store, keys, &Desired { version, canary: Some(canary.clone()) }, expect).await?;
        let step = wait(store, keys, version, Some(&canary), opts.timeout, "canary", &mut progress).await?;
        if !step.failed.is_empty() || !step.pending.is_empty() {
            return finish_failed(store, keys, step, previous, expect, started).await;
        }
    }
    let expect = set_desired(store, keys, &Desired { version, canary: None }, expect).await?;
    let step = wait(store, keys, version, None, opts.timeout, "rollout", &mut progress).await?;
    if !step.failed.is_empty() {
        return finish_failed(store, keys, step, previous, expect, started).await;
    }
    Ok(Rollout { elapsed_ms: started.elapsed().as_millis() as u64, ..step })
}

async fn finish_failed(
    store: &dyn Store,
    keys: &Keys,
    mut step: Rollout,
    previous: Option<u64>,
    expect: Expect,
    started: Instant,
) -> Result<Rollout, FleetError> {
    if !step.failed.is_empty()
        && let Some(prev) = previous
    {
        // Nodes that failed already went back by themselves; the desired version goes back too, so that
        // nodes that took it (and nodes that join later) follow.
        set_desired(store, keys, &Desired { version: prev, canary: None }, expect).await?;
        step.rolled_back_to = Some(prev);
    }
    step.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(step)
}

/// Points the fleet at an earlier version (default: the one before the desired one) and waits for it.
pub async fn rollback(
    store: &dyn Store,
    keys: &Keys,
    to: Option<u64>,
    timeout: Duration,
    mut progress: impl FnMut(&Progress),
) -> Result<Rollout, FleetError> {
    let current = store.get(&keys.desired()).await?;
    let (current_version, expect) = match &current {
        Some(kv) => {
            (serde_json::from_slice::<Desired>(&kv.value).ok().map(|d| d.version), Expect::ModRevision(kv.mod_revision))
        }
        None => (None, Expect::Absent),
    };
    let versions = list_versions(store, keys).await?;
    let target = match to {
        Some(v) => v,
        None => {
            let cur = current_version.ok_or(FleetError::NothingToRollBack)?;
            *versions.iter().rev().find(|v| **v < cur).ok_or(FleetError::NothingToRollBack)?
        }
    };
    if !versions.contains(&target) {
        return Err(FleetError::UnknownVersion(target));
    }
    let started = Instant::now();
    set_desired(store, keys, &Desired { version: target, canary: None }, expect).await?;
    let step = wait(store, keys, target, None, timeout, "rollback", &mut progress).await?;
    Ok(Rollout { elapsed_ms: started.elapsed().as_millis() as u64, ..step })
}

/// Writes the next version number (one more than the highest stored).
async fn store_version(store: &dyn Store, keys: &Keys, text: &str, note: &str) -> Result<u64, FleetError> {
    loop {
        let next = list_versions(store, keys).await?.last().map_or(1, |v| v + 1);
        let record =
            ConfigVersion { version: next, text: text.to_owned(), created_at_ms: now_ms(), note: note.to_owned() };
        let value = serde_json::to_vec(&record)?;
        match store.compare_and_swap(&keys.config_version(next), Expect::Absent, value, None).await? {
            CasOutcome::Written { .. } => return Ok(next),
            // Another apply took this number at the same moment: take the next.
            CasOutcome::Conflict { .. } => continue,
        }
    }
}

async fn set_desired(store: &dyn Store, keys: &Keys, desired: &Desired, expect: Expect) -> Result<Expect, FleetError> {
    let value = serde_json::to_vec(desired)?;
    match store.compare_and_swap(&keys.desired(), expect, value, None).await? {
        CasOutcome::Written { revision } => Ok(Expect::ModRevision(revision)),
        CasOutcome::Conflict { .. } => Err(FleetError::ConcurrentApply),
    }
}

pub async fn list_versions(store: &dyn Store, keys: &Keys) -> Result<Vec<u64>, FleetError> {
    let listing = store.list(&keys.config_versions()).await?;
    let mut v: Vec<u64> =
        listing.kvs.iter().filter_map(|kv| keys.name_after(&keys.config_versions(), &kv.key)?.parse().ok()).collect();
    v.sort_unstable();
    Ok(v)
}

async fn live_nodes(store: &dyn Store, keys: &Keys) -> Result<BTreeMap<String, NodeReport>, FleetError> {
    let listing = store.list(&keys.nodes()).await?;
    Ok(listing
        .kvs
        .iter()
        .filter_map(|kv| {
            let name = keys.name_after(&keys.nodes(), &kv.key)?.to_owned();
            let report: NodeReport = serde_json::from_slice(&kv.value).ok()?;
            Some((name, report))
        })
        .collect())
}

/// Waits until every target node runs `version` healthy, one of them fails it, or the timeout. Nodes that
/// leave meanwhile stop counting; nodes that join are waited for too.
async fn wait(
    store: &dyn Store,
    keys: &Keys,
    version: u64,
    only: Option<&[String]>,
    timeout: Duration,
    phase: &'static str,
    progress: &mut impl FnMut(&Progress),
) -> Result<Rollout, FleetError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last_progress = None;
    loop {
        let listing = store.list(&keys.nodes()).await?;
        let mut nodes = 0;
        let mut converged = Vec::new();
        let mut failed = BTreeMap::new();
        let mut pending = BTreeMap::new();
        for kv in &listing.kvs {
            let Some(name) = keys.name_after(&keys.nodes(), &kv.key) else { continue };
            if only.is_some_and(|o| !o.iter().any(|n| n == name)) {
                continue;
            }
            let Ok(r) = serde_json::from_slice::<NodeReport>(&kv.value) else { continue };
            nodes += 1;
            match &r.failed {
                Some(f) if f.version == version => {
                    let back = f
                        .rolled_back_to
                        .map_or_else(|| "kept its previous state".to_owned(), |v| format!("rolled back to v{v}"));
                    failed.insert(name.to_owned(), format!("{} ({back})", f.reason));
                    continue;
                }
                _ => {}
            }
            if r.config_version == Some(version) && r.healthy {
                converged.push(name.to_owned());
            } else {
                let why = if r.config_version != Some(version) {
                    format!("on v{}", r.config_version.map_or_else(|| "-".to_owned(), |v| v.to_string()))
                } else if r.verifying {
                    format!("verifying: {}", r.problems.join("; "))
                } else {
                    r.problems.join("; ")
                };
                pending.insert(name.to_owned(), why);
            }
        }
        let p = Progress { version, targets: nodes, converged: converged.len(), phase };
        if last_progress.as_ref() != Some(&p) {
            progress(&p);
            last_progress = Some(p);
        }
        let done = nodes > 0 && pending.is_empty();
        if done || !failed.is_empty() || Instant::now() >= deadline {
            return Ok(Rollout {
                version,
                nodes,
                converged,
                failed,
                pending,
                rolled_back_to: None,
                elapsed_ms: started.elapsed().as_millis() as u64,
            });
        }
        // Wake on the next change of any node report (or re-check every second).
        let mut watch = store.watch(&keys.nodes(), listing.revision + 1).await?;
        let wait_for = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait_for, async {
            while let Some(ev) = watch.next().await {
                if matches!(ev, Ok(WatchEvent::Put(_) | WatchEvent::Delete { .. }) | Err(_)) {
                    return;
                }
            }
        })
        .await;
    }
}

/// The fleet at a glance, for `fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub store: String,
    pub desired: Option<Desired>,
    pub versions: Vec<u64>,
    pub nodes: Vec<NodeReport>,
    /// Slack app → its owner.
    pub owners: BTreeMap<String, AppOwner>,
}

pub async fn status(store: &dyn Store, keys: &Keys) -> Result<FleetStatus, FleetError> {
    let desired = store.get(&keys.desired()).await?.and_then(|kv| serde_json::from_slice(&kv.value).ok());
    let nodes = live_nodes(store, keys).await?.into_values().collect();
    let owners = store
        .list(&keys.slack_owners())
        .await?
        .kvs
        .iter()
        .filter_map(|kv| {
            Some((keys.name_after(&keys.slack_owners(), &kv.key)?.to_owned(), serde_json::from_slice(&kv.value).ok()?))
        })
        .collect();
    Ok(FleetStatus { store: store.describe(), desired, versions: list_versions(store, keys).await?, nodes, owners })
}

/// Renders the status as a few readable lines.
pub fn render_status(s: &FleetStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let desired = s
        .desired
        .as_ref()
        .map_or_else(|| "none (run `flotilla fleet apply FILE`)".to_owned(), |d| format!("v{}", d.version));
    let on_desired = s
        .nodes
        .iter()
        .filter(|n| s.desired.as_ref().is_some_and(|d| n.config_version == Some(d.version) && n.healthy))
        .count();
    let _ = writeln!(out, "store: {}", s.store);
    let _ = writeln!(out, "desired config: {desired}; {on_desired}/{} nodes on it and healthy", s.nodes.len());
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<16} {:<8} {:<8} {:<40}", "NODE", "CONFIG", "HEALTH", "SLACK APPS OWNED");
    for n in &s.nodes {
        let owned: Vec<&str> = n.channels.iter().filter(|(_, c)| c.role == "owner").map(|(a, _)| a.as_str()).collect();
        let health = if n.healthy {
            "ok"
        } else if n.verifying {
            "checking"
        } else {
            "DEGRADED"
        };
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<8} {}",
            n.name,
            n.config_version.map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
            health,
            if owned.is_empty() { "-".to_owned() } else { owned.join(", ") }
        );
        for p in &n.problems {
            let _ = writeln!(out, "    problem: {p}");
        }
        for w in &n.warnings {
            let _ = writeln!(out, "    warning: {w}");
        }
        if let Some(f) = &n.failed {
            let back = f.rolled_back_to.map_or_else(String::new, |v| format!(", rolled back to v{v}"));
            let _ = writeln!(out, "    rejected v{}: {}{back}", f.version, f.reason);
        }
        for (b, state) in &n.breakers {
            let _ = writeln!(out, "    breaker {b}: {state}");
        }
    }
    if !s.owners.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<24} {:<16} AGENT", "SLACK APP", "OWNER");
        for (app, o) in &s.owners {
            let _ = writeln!(out, "{app:<24} {:<16} {}", o.node, o.agent);
        }
        let standby: Vec<String> = s
            .nodes
            .iter()
            .flat_map(|n| {
                n.channels.iter().filter(|(_, c)| c.role == "standby").map(move |(a, _)| format!("{a} on {}", n.name))
            })
            .collect();
        if !standby.is_empty() {
            let _ = writeln!(out, "standby: {}", standby.join(", "));
        }
    }
    out
}

/// Refuses a key file that cannot open what the store already holds: sealing new credentials with another
/// key would leave the nodes able to open only some of them.
pub async fn check_key_matches(store: &dyn Store, keys: &Keys, key: &KeyFile) -> Result<(), FleetError> {
    for prefix in [keys.auth_profiles(), keys.secrets()] {
        if let Some(kv) = store.list(&prefix).await?.kvs.first() {
            if let Err(e) = open_credential(key, &kv.value) {
                return Err(FleetError::Secret {
                    name: kv.key.clone(),
                    error: format!(
                        "{e}; this key file ({}) is not the fleet's: copy the fleet key file from a node (or point --key-file at it)",
                        key.fingerprint()
                    ),
                });
            }
            return Ok(());
        }
    }
    Ok(())
}

/// Stores (or replaces) a sealed auth profile; returns whether it replaced one.
pub async fn auth_add(
    store: &dyn Store,
    keys: &Keys,
    key: &KeyFile,
    name: &str,
    cred: &StoredCredential,
) -> Result<bool, FleetError> {
    check_name(name)?;
    put_sealed(store, keys, key, name, &keys.auth_profile(name), cred).await
}

/// Stores (or replaces) a sealed secret for `secret:PATH` references.
pub async fn secret_put(
    store: &dyn Store,
    keys: &Keys,
    key: &KeyFile,
    path: &str,
    cred: &StoredCredential,
) -> Result<bool, FleetError> {
    check_name(path)?;
    put_sealed(store, keys, key, path, &keys.secret(path), cred).await
}

/// Seals `cred` with the fleet's key (refusing a key that cannot open what the store holds) and writes it at
/// `store_key`; returns whether it replaced an entry.
async fn put_sealed(
    store: &dyn Store,
    keys: &Keys,
    key: &KeyFile,
    name: &str,
    store_key: &str,
    cred: &StoredCredential,
) -> Result<bool, FleetError> {
    check_key_matches(store, keys, key).await?;
    let sealed =
        seal_credential(key, cred).map_err(|e| FleetError::Secret { name: name.to_owned(), error: e.to_string() })?;
    let existed = store.get(store_key).await?.is_some();
    store.put(store_key, sealed, None).await?;
    Ok(existed)
}

/// One stored profile or secret, without its value.
#[derive(Debug, Clone, Serialize)]
pub struct AuthEntry {
    pub name: String,
    /// `auth` profile or `secret`.
    pub place: &'static str,
    pub kind: String,
    pub expires_at: Option<String>,
    /// Set when the entry cannot be opened with this key file.
    pub problem: Option<String>,
}

pub async fn auth_list(store: &dyn Store, keys: &Keys, key: Option<&KeyFile>) -> Result<Vec<AuthEntry>, FleetError> {
    let mut out = Vec::new();
    for (prefix, place) in [(keys.auth_profiles(), "auth"), (keys.secrets(), "secret")] {
        for kv in store.list(&prefix).await?.kvs {
            let Some(name) = keys.name_after(&prefix, &kv.key) else { continue };
            let (kind, expires_at, problem) = match key.map(|k| open_credential(k, &kv.value)) {
                Some(Ok(cred)) => {
                    let (kind, exp) = crate::secrets::describe(&cred);
                    (kind, exp.map(flotilla_auth::credential::format_expiry), None)
                }
                Some(Err(e)) => ("sealed".to_owned(), None, Some(e.to_string())),
                None => ("sealed".to_owned(), None, Some("no key file: cannot open".to_owned())),
            };
            out.push(AuthEntry { name: name.to_owned(), place, kind, expires_at, problem });
        }
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), FleetError> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok { Ok(()) } else { Err(FleetError::InvalidName(name.to_owned())) }
}

/// Reads a config file for `apply`, resolving relative `file:` references against its directory.
pub fn read_config_file(path: &Path) -> Result<(String, std::path::PathBuf), FleetError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| FleetError::Io(format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((text, base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ChannelReport, FailedApply};

    fn node(name: &str, version: u64, healthy: bool) -> NodeReport {
        NodeReport { name: name.to_owned(), config_version: Some(version), healthy, ..Default::default() }
    }

    #[test]
    fn status_names_versions_owners_standbys_and_failures() {
        let mut a = node("mini-1", 12, true);
        a.channels.insert(
            "family-app".to_owned(),
            ChannelReport {
                agent: "family".to_owned(),
                role: "owner".to_owned(),
                state: "connected".to_owned(),
                owner: None,
            },
        );
        let mut b = node("mini-2", 11, false);
        b.problems.push("slack app ops-app: connecting".to_owned());
        b.failed = Some(FailedApply { version: 12, reason: "bad token".to_owned(), rolled_back_to: Some(11) });
        b.channels.insert(
            "family-app".to_owned(),
            ChannelReport {
                agent: "family".to_owned(),
                role: "standby".to_owned(),
                state: "standby".to_owned(),
                owner: Some("mini-1".to_owned()),
            },
        );
        b.breakers.insert("anthropic/claude-opus-4-6/main".to_owned(), "open".to_owned());
        let s = FleetStatus {
            store: "etcd 127.0.0.1:2379".to_owned(),
            desired: Some(Desired { version: 12, canary: None }),
            versions: vec![11, 12],
            nodes: vec![a, b],
            owners: [(
                "family-app".to_owned(),
                AppOwner { node: "mini-1".to_owned(), agent: "family".to_owned(), since_ms: 0 },
            )]
            .into_iter()
            .collect(),
        };
        let text = render_status(&s);
        assert!(text.contains("desired config: v12; 1/2 nodes on it and healthy"), "{text}");
        assert!(text.contains("mini-2           v11      DEGRADED"), "{text}");
        assert!(text.contains("rejected v12: bad token, rolled back to v11"), "{text}");
        assert!(text.contains("breaker anthropic/claude-opus-4-6/main: open"), "{text}");
        assert!(text.contains("family-app               mini-1           family"), "{text}");
        assert!(text.contains("standby: family-app on mini-2"), "{text}");
    }

    #[test]
    fn names_must_be_plain_paths() {
        for ok in ["slack/family-app/bot", "anthropic-main", "a.b_c"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "x/", "a//b", "a b", "a\nb", "ä"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
