//! flotilla-config.
