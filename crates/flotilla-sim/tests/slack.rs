//! End-to-end tests of the Slack simulator over loopback: Web API, Socket Mode, faults,
//! admin endpoints and the exactly-once report.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

// `cfg(test)` marks the helpers as test code for clippy's allow-unwrap-in-tests.
#[cfg(test)]
mod slack {
    pub mod admin;
    pub mod churn;
    pub mod report;
    pub mod socket;
    pub mod support;
    pub mod web;
}
