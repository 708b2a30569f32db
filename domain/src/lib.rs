//! annals-domain: the business of annals — which commands are accepted and what they become.
//!
//! Owns: one module per bounded context, each with its `cqrs-es` aggregate (business rules in
//! `handle`, state changes only in `apply`), its commands and events and the mapping of its
//! events to their published Avro schemas ([`payload`]); the typed refusals ([`error`]); and
//! the deterministic golden dataset of `annals demo` ([`golden`]).
//!
//! Must not: do I/O, read clocks or draw random numbers. Whatever an aggregate needs from
//! outside (another aggregate's state, a limit) is passed in as its `Services`.

pub mod billing;
pub mod error;
pub mod golden;
pub mod ingest;
pub mod models;
pub mod payload;
pub mod policy;
pub mod tenancy;

pub use error::{DomainError, Kind};
pub use payload::Payload;
