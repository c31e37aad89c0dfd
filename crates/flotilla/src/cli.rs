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
    /// The TOML config file (see examples/flotilla.toml).
    #[arg(long, short = 'c', env = "FLOTILLA_CONFIG")]
    pub config: PathBuf,
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
    /// Tokio worker threads of the gateway (TOKIO_WORKER_THREADS) [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub gateway_threads: Option<usize>,
}
