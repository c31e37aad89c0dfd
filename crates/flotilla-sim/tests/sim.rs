//! End-to-end tests of the simulators over loopback HTTP, one test crate for all of them.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test setup failures should panic with context")]

// `cfg(test)` marks the helpers as test code for clippy's allow-unwrap-in-tests.
#[cfg(test)]
mod sim {
    pub mod admin;
    pub mod anthropic;
    pub mod faults;
    pub mod openai;
    pub mod support;
}
