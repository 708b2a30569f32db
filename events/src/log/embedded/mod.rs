//! The embedded backend: partitions kept as segment files under the data dir (see
//! [`segment`] for the format), recovered on open, written by one thread per partition with
//! group commit and fsync, and read by readers the writer wakes.

pub(crate) mod partition;
pub(crate) mod reader;
pub mod segment;
