//! flotilla-telemetry.
