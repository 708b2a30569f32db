//! annals-processors: the command path.
//!
//! Owns: turning a [`Command`] into durable events. Each partition of the `events` topic has one
//! worker thread that holds the partition's aggregates in memory (rebuilt from the log on
//! open), decides commands with them, checks optimistic concurrency per stream
//! (`stream_version`), encodes the events with their published schemas and appends them
//! through the partition's single log writer — many commands per group commit — answering each
//! caller only once its events are durable. A refused command writes nothing.
//!
//! Distributed ([`bus`]): commands travel on a Kafka commands topic to processor instances
//! that own partitions through a consumer group, and outcomes come back on an outcomes topic.
//!
//! Must not: hold business rules (they are the aggregates' in `annals-domain`) or know about
//! HTTP. Read models are projections, elsewhere.

pub mod bus;
pub mod command;
pub mod engine;
pub mod path;
pub mod snapshot;
mod state;

pub use state::PartitionState;

pub use command::{Command, CommandError, CommandMeta, Outcome, Written};
pub use engine::{Engine, EngineStats};
pub use path::CommandPath;
