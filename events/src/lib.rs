//! annals-events: the event envelope, the hash chain and the embedded segmented log.
//!
//! Owns: the envelope v1 and its canonical (Avro binary) encoding ([`envelope`]), the
//! per-partition hash chain ([`chain`]), the embedded log with its segment format, recovery,
//! group commit, readers and consumer positions ([`log`]), the offline verifier ([`verify`]),
//! and the tenant → partition function shared with the Kafka deployment ([`partitioner`]).
//!
//! Must not: know about payload schemas (that is `annals-schemas`), business rules
//! (`annals-domain`) or read models. It moves opaque payload bytes and guarantees their order,
//! durability and integrity.

pub mod avro;
pub mod chain;
pub mod envelope;
pub mod log;
pub mod partitioner;
pub mod time;
pub mod verify;

pub use chain::Hash;
pub use envelope::{Envelope, EnvelopeRef, InvalidEvent, NewEvent};
pub use log::{Appended, KafkaConfig, Log, LogConfig, LogError, Partition, Reader, Topic};
