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
    /// Listen address; overrides [gateway].listen.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// JSON log file; overrides [gateway].log_file (default: $XDG_STATE_HOME/flotilla/gateway.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Log filter for stderr and the log file (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log_level: String,
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
}
