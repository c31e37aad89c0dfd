//! The model router: resolves a `model` name to a failover chain and serves each request from
//! the first healthy candidate, classifying every failure (DESIGN.md, "Failure semantics"),
//! keeping circuit breakers per (provider, model, credential) and rotating credentials inside a
//! provider before moving on. Streams fail over invisibly until their first content.

pub mod classify;
pub mod error;
pub mod health;
mod pool;
mod router;
mod routes;
pub mod stream;
pub mod upstream;

pub use error::{AttemptOutcome, AttemptRecord, RouteError};
pub use router::{Answered, RouteResult, Router};
pub use stream::CommittedStream;
