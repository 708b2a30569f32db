//! annals-domain: the business of annals — what its events mean.
//!
//! Owns: the bounded contexts' event vocabulary and, for now, the deterministic golden dataset
//! that `annals demo` writes ([`golden`]). The aggregates that check commands (tenancy, ingest,
//! policy, billing, models) belong here too and arrive with the command path.
//!
//! Must not: do I/O. It turns inputs into events; the log stores them.

pub mod golden;
