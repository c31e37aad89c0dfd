//! flotilla-gateway.
