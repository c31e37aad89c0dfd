//! The config compiled for the request path: every resolvable name maps to a shared plan whose
//! candidates carry their upstream URI, header sets, breaker keys and metric handles, all built
//! once per config load instead of once per request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use flotilla_config::{Chain, Config, CredentialKind, ModelRef, WireApi};
use flotilla_telemetry::Metrics;
use flotilla_telemetry::metrics::{AttemptLabels, ModelLabels};
use http::{HeaderMap, Uri};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::error::RouteError;
use crate::health::Key;
use crate::router::{Answered, resolve};
use crate::upstream::{EndpointError, endpoint_uri, static_headers};

/// One config, compiled.
pub(crate) struct Routes {
    pub config: Arc<Config>,
    /// Agent ids, chain names, `default`/`agents.defaults` and every `provider/model` that a
    /// chain mentions, each resolved exactly as [`resolve`] would.
    plans: HashMap<String, Arc<Plan>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("names", &self.plans.len()).finish_non_exhaustive()
    }
}

/// A resolved chain: its name and candidates in order.
pub(crate) struct Plan {
    pub name: String,
    pub candidates: Vec<Arc<Candidate>>,
}

/// One `provider/model` of a chain.
pub(crate) struct Candidate {
    pub provider: String,
    pub model: String,
    /// `None` when the provider is not configured (the attempt is recorded as skipped).
    pub upstream: Option<Upstream>,
}

/// What sending to a configured candidate needs.
pub(crate) struct Upstream {
    pub wire: WireApi,
    pub context_window: Option<u32>,
    /// The endpoint, or why the provider's base URL cannot be used (reported per attempt as a
    /// transport failure, as an unusable URL always was).
    pub uri: Result<Uri, EndpointError>,
    pub model_key: Key,
    /// In the order they are tried; one entry named `none` for providers without auth.
    pub credentials: Vec<CredentialPlan>,
    success: OnceLock<SuccessMetrics>,
}

/// One credential of a candidate.
pub(crate) struct CredentialPlan {
    pub name: String,
    /// OAuth tokens past this time are skipped without a round trip.
    pub expires_at: Option<SystemTime>,
    pub cred_key: Key,
    pub exact_key: Key,
    pub headers: Result<HeaderMap, EndpointError>,
    /// What a success with this credential reports (made here, so an answer clones one `Arc`).
    pub answered: Arc<Answered>,
}

/// The series a successful attempt updates, looked up once instead of per request (what
/// `ProviderAttemptSucceeded::emit` does, without building six label strings every time).
pub(crate) struct SuccessMetrics {
    pub attempts: Counter,
    pub duration: Histogram,
}

impl Upstream {
    pub fn success_metrics(&self, provider: &str, model: &str, metrics: &Metrics) -> &SuccessMetrics {
        self.success.get_or_init(|| SuccessMetrics {
            attempts: metrics
                .attempts
                .get_or_create(&AttemptLabels {
                    provider: provider.to_owned(),
                    model: model.to_owned(),
                    outcome: "ok".to_owned(),
                    reason: "none".to_owned(),
                })
                .clone(),
            duration: metrics
                .attempt_duration
                .get_or_create(&ModelLabels { provider: provider.to_owned(), model: model.to_owned() })
                .clone(),
        })
    }
}

impl Routes {
    pub fn compile(config: Arc<Config>) -> Self {
        let mut candidates: HashMap<ModelRef, Arc<Candidate>> = HashMap::new();
        let mut plans: HashMap<String, Arc<Plan>> = HashMap::new();
        let mut plan_of = |chain: &Chain| {
            let candidates = chain
                .candidates
                .iter()
                .map(|c| candidates.entry(c.clone()).or_insert_with(|| Arc::new(candidate(&config, c))).clone())
                .collect();
            Arc::new(Plan { name: chain.name.clone(), candidates })
        };
        // Inserted from the lowest precedence to the highest, so that a later insert wins
        // exactly where `resolve` would have found the later kind first.
        let all_chains: Vec<&Chain> = config
            .agents
            .iter()
            .map(|a| &a.chain)
            .chain(config.chains.values())
            .chain(config.default_chain.iter())
            .collect();
        for c in all_chains.iter().flat_map(|ch| ch.candidates.iter()) {
            let name = c.to_string();
            if name.split_once('/') == Some((c.provider.as_str(), c.model.as_str()))
                && config.providers.contains_key(&c.provider)
            {
                let single = Chain { name: name.clone(), candidates: vec![c.clone()] };
                let plan = plan_of(&single);
                plans.insert(name, plan);
            }
        }
        if let Some(d) = &config.default_chain {
            let plan = plan_of(d);
            plans.insert("default".to_owned(), plan.clone());
            plans.insert("agents.defaults".to_owned(), plan);
        }
        for (name, chain) in &config.chains {
            let plan = plan_of(chain);
            plans.insert(name.clone(), plan);
        }
        // `resolve` takes the first agent with an id: insert in reverse so the first one wins.
        for agent in config.agents.iter().rev() {
            let plan = plan_of(&agent.chain);
            plans.insert(agent.id.clone(), plan);
        }
        Routes { config, plans }
    }

    /// The plan for a client's `model` name (see [`resolve`]).
    pub fn plan(&self, name: &str) -> Result<Arc<Plan>, RouteError> {
        if let Some(p) = self.plans.get(name) {
            return Ok(p.clone());
        }
        // A `provider/model` no chain mentions: compiled for this request only, so that names
        // chosen by clients cannot grow the table.
        let chain = resolve(&self.config, name)?;
        let candidates = chain.candidates.iter().map(|c| Arc::new(candidate(&self.config, c))).collect();
        Ok(Arc::new(Plan { name: chain.name, candidates }))
    }
}

fn candidate(config: &Config, c: &ModelRef) -> Candidate {
    let upstream = config.providers.get(&c.provider).map(|provider| {
        let wire = provider.wire_api(&c.model);
        let creds: Vec<CredentialPlan> = if provider.credentials.is_empty() {
            vec![credential_plan(c, "none", None, static_headers(provider, None))]
        } else {
            provider
                .credentials
                .iter()
                .map(|cred| {
                    let expires_at = match cred.kind {
                        CredentialKind::OAuth { expires_at } => expires_at,
                        CredentialKind::ApiKey => None,
                    };
                    credential_plan(c, &cred.name, expires_at, static_headers(provider, Some(cred)))
                })
                .collect()
        };
        Upstream {
            wire,
            context_window: provider.models.get(&c.model).and_then(|m| m.context_window),
            uri: endpoint_uri(&provider.base_url, wire),
            model_key: Key::model(&c.provider, &c.model),
            credentials: creds,
            success: OnceLock::new(),
        }
    });
    Candidate { provider: c.provider.clone(), model: c.model.clone(), upstream }
}

fn credential_plan(
    c: &ModelRef,
    name: &str,
    expires_at: Option<SystemTime>,
    headers: Result<HeaderMap, EndpointError>,
) -> CredentialPlan {
    CredentialPlan {
        name: name.to_owned(),
        expires_at,
        cred_key: Key::credential(&c.provider, name),
        exact_key: Key::exact(&c.provider, &c.model, name),
        headers,
        answered: Arc::new(Answered::new(&c.provider, &c.model, name)),
    }
}

#[cfg(test)]
mod tests {
    use flotilla_config::{Env, parse_config};

    use super::*;

    const CONFIG: &str = r#"
[agents.defaults.model]
primary = "anthropic/claude-opus-4-6"
fallbacks = ["openai/gpt-5"]

[[agents.list]]
id = "agent"

[[agents.list]]
id = "solo"
model = { primary = "openai/gpt-4o-mini", fallbacks = [] }

[chains.fast]
primary = "openai/gpt-4o-mini"

[providers.anthropic]
api = "anthropic"
base_url = "http://127.0.0.1:9"
auth = ["ant-a", "ant-b"]

[providers.openai]
api = "openai"
base_url = "http://127.0.0.1:9"

[auth.ant-a]
provider = "anthropic"
type = "api-key"
key = "env:A"

[auth.ant-b]
provider = "anthropic"
type = "api-key"
key = "env:B"
"#;

    fn routes() -> Routes {
        let env = Env::from_pairs([("A", "ka"), ("B", "kb")]);
        let config = parse_config(CONFIG, &env, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        Routes::compile(Arc::new(config))
    }

    fn refs(p: &Plan) -> Vec<String> {
        p.candidates.iter().map(|c| format!("{}/{}", c.provider, c.model)).collect()
    }

    #[test]
    fn every_name_resolves_as_resolve_does() {
        let r = routes();
        for name in
            ["agent", "solo", "fast", "default", "agents.defaults", "openai/gpt-5", "openai/gpt-4o-mini", "openai/o9"]
        {
            let plan = r.plan(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let chain = resolve(&r.config, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let want: Vec<String> = chain.candidates.iter().map(ToString::to_string).collect();
            assert_eq!((plan.name.as_str(), refs(&plan)), (chain.name.as_str(), want), "{name}");
        }
        assert_eq!(refs(&r.plan("agent").expect("agent")), ["anthropic/claude-opus-4-6", "openai/gpt-5"]);
        assert!(matches!(r.plan("agnet"), Err(RouteError::UnknownModel { .. })));
        assert!(matches!(r.plan("nope/model"), Err(RouteError::UnknownModel { .. })));
    }

    #[test]
    fn candidates_carry_endpoint_credentials_and_keys() {
        let r = routes();
        let plan = r.plan("agent").expect("agent");
        let ant = plan.candidates[0].upstream.as_ref().expect("configured");
        assert_eq!(ant.uri.as_ref().map(ToString::to_string).ok().as_deref(), Some("http://127.0.0.1:9/v1/messages"));
        let names: Vec<&str> = ant.credentials.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ant-a", "ant-b"]);
        let b = &ant.credentials[1];
        assert_eq!(b.exact_key, Key::exact("anthropic", "claude-opus-4-6", "ant-b"));
        assert_eq!(b.cred_key, Key::credential("anthropic", "ant-b"));
        assert_eq!(b.headers.as_ref().ok().and_then(|h| h.get("x-api-key")).map(|v| v.as_bytes()), Some(&b"kb"[..]));
        let oai = plan.candidates[1].upstream.as_ref().expect("configured");
        assert_eq!(
            oai.uri.as_ref().map(ToString::to_string).ok().as_deref(),
            Some("http://127.0.0.1:9/v1/chat/completions")
        );
        assert_eq!(oai.credentials.len(), 1);
        assert_eq!(oai.credentials[0].name, "none");
        // The same provider/model is one shared candidate wherever it appears.
        let fast = r.plan("fast").expect("fast");
        let solo = r.plan("solo").expect("solo");
        assert!(Arc::ptr_eq(&fast.candidates[0], &solo.candidates[0]));
    }
}
