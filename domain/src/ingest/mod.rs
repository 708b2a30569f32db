//! Ingest: signals from a tenant's sources. The dedupe key is (tenant, source, signal_id, ts):
//! a repeat is acknowledged as a duplicate and writes nothing, so a client that retries never
//! creates doubles.

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    IngestCommand, IngestEvent, IngestServices, SignalIngested, SignalInput, Source,
    validate_signal,
};

/// The aggregate type: streams are `ingest.Source/<tenant>/<source>`.
pub const STREAM_TYPE: &str = "ingest.Source";

pub fn stream(tenant: &str, source: &str) -> String {
    format!("{STREAM_TYPE}/{tenant}/{source}")
}

/// Most signals one command may carry.
pub const MAX_BATCH: usize = 10_000;
