//! The command line, as clap types. Every command and flag explains itself in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// flotilla keeps a fleet of always-on AI agents answering: model failover across providers,
/// Slack delivery that never loses a message, and one-command fleet management.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the per-node gateway: OpenAI- and Anthropic-compatible endpoints with failover.
    Gateway(GatewayArgs),
    /// Inspect configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a protocol-faithful simulator of a provider API, with fault injection.
    Sim(SimArgs),
    /// A provider outage on one machine, nothing to set up: simulators, a gateway, steady
    /// traffic and a 20-second Anthropic overload; ends with a report. Exits 0 only if no
    /// request failed or was lost and the primary model came back.
    Demo(DemoArgs),
    /// Benchmarks: fixed-rate load through the gateway and directly, in the same run.
    Bench(BenchArgs),
    /// Manage the fleet through the cluster store: apply a config to every node and verify it,
    /// roll back, show status.
    Fleet(FleetArgs),
    /// Credentials kept encrypted in the cluster store, for every node: API keys, OAuth tokens
    /// (refreshed by one elected node) and secrets such as Slack tokens.
    Auth(AuthArgs),
}

/// Where the cluster store is. `sqlite:PATH` is the embedded store (one machine; default
/// $XDG_STATE_HOME/flotilla/store.sqlite); `etcd://host:port[,host:port...]` is etcd.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The cluster store URL.
    #[arg(long, env = "FLOTILLA_STORE", value_name = "URL", global = true)]
    pub store: Option<String>,
    /// Key prefix of this fleet in the store (several fleets may share one store).
    #[arg(long, env = "FLOTILLA_FLEET_PREFIX", default_value = "/flotilla", hide_short_help = true, global = true)]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The fleet key file that opens stored credentials [default: $FLOTILLA_KEY_FILE, else
    /// $XDG_CONFIG_HOME/flotilla/fleet.key].
    #[arg(long, value_name = "PATH", global = true)]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Validate FILE (the same checks as `config check`, with the store's credentials), store it
    /// as the next config version and wait until every live node runs it healthy. A node that
    /// fails health rolls back by itself; apply then reports which node and why, sets the fleet
    /// back to the previous version, and exits 1.
    Apply {
        /// The TOML config.
        file: PathBuf,
        /// Apply to N nodes first; the rest follow only when those are healthy.
        #[arg(long, value_name = "N")]
        canary: Option<usize>,
        /// Seconds to wait for the fleet to converge.
        #[arg(long, default_value = "60", value_name = "SECONDS")]
        timeout: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point the fleet at an earlier config version (default: the one before the desired one)
    /// and wait for every node to run it.
    Rollback {
        /// The version to go back to (`fleet status` lists them).
        version: Option<u64>,
        #[arg(long, default_value = "60", value_name = "SECONDS")]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Nodes, their config version and health, Slack app owners and standbys, open breakers.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The fleet key file [default: $FLOTILLA_KEY_FILE, else $XDG_CONFIG_HOME/flotilla/fleet.key].
    /// Copy it to every node once (mode 0600); it never goes into the store.
    #[arg(long, value_name = "PATH", global = true)]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Create the fleet key file (if it does not exist) and print where it is.
    Keygen,
    /// Store an auth profile for a provider; list it in `[providers.P].auth` to use it.
    Add {
        /// The profile name (as written in `auth = [...]`).
        name: String,
        /// The provider the profile is for.
        #[arg(long)]
        provider: String,
        /// Read an API key from this environment variable.
        #[arg(long, value_name = "VAR", group = "source")]
        api_key_env: Option<String>,
        /// Read an API key from this file.
        #[arg(long, value_name = "PATH", group = "source")]
        api_key_file: Option<PathBuf>,
        /// Read an OAuth token set (access + refresh token, expiry) from this JSON file
        /// (Claude Code, OpenClaw or plain {access_token, refresh_token, expires_at}).
        #[arg(long, value_name = "PATH", group = "source")]
        oauth_file: Option<PathBuf>,
        /// The OAuth token endpoint (default: the provider's).
        #[arg(long, value_name = "URL")]
        token_url: Option<String>,
        /// The OAuth client id (default: the provider's public client).
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Store a secret for `secret:PATH` references (e.g. Slack tokens).
    Secret {
        /// The path written after `secret:`.
        path: String,
        /// Read the value from this environment variable.
        #[arg(long, value_name = "VAR", group = "source")]
        from_env: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "PATH", group = "source")]
        from_file: Option<PathBuf>,
    },
    /// List stored profiles and secrets (names, kinds, expiry; never values).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Requests per second sent to the gateway.
    #[arg(long, default_value = "20")]
    pub rate: u32,
    /// Seconds of normal traffic before the outage.
    #[arg(long, default_value = "5")]
    pub before_secs: u64,
    /// Seconds the Anthropic simulator answers 529 overloaded.
    #[arg(long, default_value = "20")]
    pub outage_secs: u64,
    /// Seconds of traffic after the outage ends.
    #[arg(long, default_value = "10")]
    pub after_secs: u64,
    /// The router's overload cooldown (seconds before the primary is probed again).
    #[arg(long, default_value = "5")]
    pub cooldown_secs: u64,
    /// A short run (2 s, 4 s outage, 5 s after, 1 s cooldown), as used by the tests.
    #[arg(long)]
    pub quick: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run the fleet demo instead: N gateway processes on one store, the incident (no fallback,
    /// Anthropic overloaded), the fix applied to every node, then a node killed and its agents
    /// moving. 0 = the single-gateway demo.
    #[arg(long, default_value = "0", value_name = "N")]
    pub nodes: usize,
    /// The fleet demo's store [default: an embedded SQLite store in a temporary directory];
    /// e.g. etcd://127.0.0.1:2379.
    #[arg(long, value_name = "URL", requires = "nodes")]
    pub store: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file: print each agent's resolved failover chain and every error.
    /// Exits 1 when the file has errors.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The TOML config file.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The TOML config file (see examples/flotilla.toml). Not used with --store: a fleet node
    /// runs the config applied with `flotilla fleet apply`.
    #[arg(long, short = 'c', env = "FLOTILLA_CONFIG", required_unless_present = "store")]
    pub config: Option<PathBuf>,
    /// Join a fleet: the cluster store URL (`sqlite:PATH` or `etcd://host:port,...`).
    #[arg(long, env = "FLOTILLA_STORE", value_name = "URL", requires = "node")]
    pub store: Option<String>,
    /// This node's name in the fleet (unique per node).
    #[arg(long, env = "FLOTILLA_NODE", value_name = "NAME")]
    pub node: Option<String>,
    /// Key prefix of the fleet in the store.
    #[arg(long, env = "FLOTILLA_FLEET_PREFIX", default_value = "/flotilla", hide_short_help = true)]
    pub prefix: String,
    /// The fleet key file that opens stored credentials [default: $FLOTILLA_KEY_FILE, else
    /// $XDG_CONFIG_HOME/flotilla/fleet.key].
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Seconds of the node's lease: its Slack apps move to other nodes this long after it dies.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    pub lease_ttl: u64,
    /// Seconds a newly applied config may take to become healthy before the node rolls back.
    #[arg(long, default_value = "15", value_name = "SECONDS")]
    pub health_timeout: u64,
    /// Listen address; overrides gateway.listen in the config.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// JSON log file; overrides gateway.log_file in the config (default: $XDG_STATE_HOME/flotilla/gateway.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Log filter for stderr and the log file (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Directory of the journal (agents on Slack); overrides gateway.data_dir in the config
    /// (default: $XDG_STATE_HOME/flotilla).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub drain_timeout: u64,
    /// Threads serving HTTP, each with its own single-threaded runtime [default: one per CPU].
    #[arg(long, env = "FLOTILLA_HTTP_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub http_threads: Option<u16>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SimApi {
    /// Anthropic Messages API (POST /v1/messages).
    Anthropic,
    /// OpenAI API (POST /v1/chat/completions and /v1/responses).
    Openai,
    /// Slack: Web API under /api/METHOD and Socket Mode, with simulated users (/_sim/messages).
    Slack,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Which API to simulate.
    pub api: SimApi,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Accepted API keys (repeatable); none = any non-empty key.
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Delay before the answer (non-streaming) in milliseconds.
    #[arg(long, default_value = "0")]
    pub latency_ms: u64,
    /// Time to first token for streams, in milliseconds.
    #[arg(long, default_value = "0")]
    pub ttft_ms: u64,
    /// Stream pacing in tokens per second (0 = as fast as possible).
    #[arg(long, default_value = "0")]
    pub tokens_per_sec: f64,
    /// Approximate length of generated replies, in words.
    #[arg(long, default_value = "24")]
    pub reply_tokens: u32,
    /// Slack only: an app to install, `NAME` (generated tokens) or `NAME=XAPP_TOKEN,XOXB_TOKEN`
    /// (repeatable). Tokens and ids are printed at start and served at /_sim/workspace.
    #[arg(long = "app")]
    pub apps: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// What the gateway adds to a request: direct to the simulator, through nginx proxy_pass
    /// (when installed), through the gateway, with the primary's breaker open, and streaming
    /// time to first token; plus the router's own time, RSS and CPU per request.
    Router(BenchRouterArgs),
}

#[derive(Debug, Args)]
pub struct BenchRouterArgs {
    /// Requests per second, non-streaming phases (open loop) [default: 2000; --quick 500].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests per second, streaming phases [default: 200; --quick 100].
    #[arg(long)]
    pub stream_rate: Option<f64>,
    /// Recorded seconds per phase [default: 10; --quick 3].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Unrecorded warm-up seconds before each phase [default: 2; --quick 1].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Rounds in which the direct, nginx and gateway phases take turns, so that whatever else
    /// the machine does affects the three alike; each round runs each of them for
    /// duration/rounds seconds after a short warm-up [default: 5; --quick 1].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Most requests in flight; one due while this many are out is dropped and counted.
    #[arg(long, default_value = "256")]
    pub concurrency: usize,
    /// A short, light run (as used by the tests); explicit flags still win.
    #[arg(long)]
    pub quick: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The nginx binary [default: /usr/sbin/nginx, else nginx on PATH].
    #[arg(long, value_name = "PATH")]
    pub nginx: Option<PathBuf>,
    /// Skip the nginx phase.
    #[arg(long)]
    pub no_nginx: bool,
    /// HTTP serving threads of the gateway (its --http-threads) [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub gateway_threads: Option<usize>,
}
