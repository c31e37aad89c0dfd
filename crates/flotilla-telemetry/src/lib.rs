//! flotilla's telemetry: every metric name in one place ([`metrics`]), typed events that log
//! and count in one call ([`events`]), and log setup (human text to stderr, JSON to a file).

pub mod events;
pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
