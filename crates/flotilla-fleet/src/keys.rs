//! Where the fleet keeps things in the cluster store: one place for the key layout.

/// The key layout under one prefix (default `/flotilla`), so several fleets (or tests) can share a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("/flotilla")
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.trim_end_matches('/').to_owned() }
    }

    /// Everything of this fleet (what a node watches).
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `config/versions/000000000012`: the TOML text of one version, immutable once written.
    pub fn config_versions(&self) -> String {
        format!("{}/config/versions/", self.prefix)
    }

    pub fn config_version(&self, version: u64) -> String {
        format!("{}/config/versions/{version:012}", self.prefix)
    }

    /// The version nodes should run (and the canary set, while a canary apply runs).
    pub fn desired(&self) -> String {
        format!("{}/config/desired", self.prefix)
    }

    /// Node reports, each on its node's lease.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }

    /// Slack app ownership: one key per app on its owner's lease.
    pub fn slack_owners(&self) -> String {
        format!("{}/slack/", self.prefix)
    }

    pub fn slack_owner(&self, app: &str) -> String {
        format!("{}/slack/{app}", self.prefix)
    }

    /// Sealed auth profiles (`flotilla auth add`).
    pub fn auth_profiles(&self) -> String {
        format!("{}/auth/", self.prefix)
    }

    pub fn auth_profile(&self, name: &str) -> String {
        format!("{}/auth/{name}", self.prefix)
    }

    /// Sealed secrets for `secret:PATH` references.
    pub fn secrets(&self) -> String {
        format!("{}/secrets/", self.prefix)
    }

    pub fn secret(&self, path: &str) -> String {
        format!("{}/secrets/{path}", self.prefix)
    }

    /// The elected refresher of one OAuth profile.
    pub fn oauth_refresher(&self, profile: &str) -> String {
        format!("{}/oauth-refresher/{profile}", self.prefix)
    }

    /// Shared thread history.
    pub fn session(&self, agent: &str, conversation: &str, thread: &str) -> String {
        format!("{}/sessions/{agent}/{conversation}/{thread}", self.prefix)
    }

    /// The name after a listing prefix (`nodes/mini-1` → `mini-1`).
    pub fn name_after<'k>(&self, prefix: &str, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(prefix)
    }

    /// Whether a changed key matters to a node's reconcile loop (sessions and refresher keys do not).
    pub fn is_control_key(&self, key: &str) -> bool {
        [self.desired(), self.nodes(), self.slack_owners(), self.auth_profiles(), self.secrets()]
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically_as_keys() {
        let k = Keys::new("/f/");
        assert!(k.config_version(9) < k.config_version(10));
        assert_eq!(k.node("a"), "/f/nodes/a");
        assert_eq!(k.name_after(&k.nodes(), "/f/nodes/mini-1"), Some("mini-1"));
        assert!(k.is_control_key("/f/slack/app"));
        assert!(!k.is_control_key("/f/sessions/a/C/1.0"));
    }
}
