//! Readers: iterate a partition in seq order from any seq, and follow new appends.

use std::sync::Arc;
use std::time::Duration;

use super::{LogError, embedded, kafka};
use crate::envelope::{Envelope, EnvelopeRef};

enum Inner {
    Embedded(embedded::reader::SegmentReader),
    Kafka(Box<kafka::reader::KafkaReader>),
}

/// Reads one partition in seq order. Sees only durable (acknowledged) events, and on Kafka
/// only the events of the partition's chain (redelivered copies and the losing side of a
/// fork are skipped: see [`kafka`]).
pub struct Reader(Inner);

impl Reader {
    pub(crate) fn embedded(shared: Arc<embedded::partition::Shared>, from_seq: u64) -> Reader {
        Reader(Inner::Embedded(embedded::reader::SegmentReader::new(
            shared, from_seq,
        )))
    }

    pub(crate) fn kafka(shared: Arc<kafka::partition::Shared>, from_seq: u64) -> Reader {
        Reader(Inner::Kafka(Box::new(kafka::reader::KafkaReader::new(
            shared, from_seq,
        ))))
    }

    /// The seq the next event read will have.
    pub fn position(&self) -> u64 {
        match &self.0 {
            Inner::Embedded(r) => r.position(),
            Inner::Kafka(r) => r.position(),
        }
    }

    /// The next event without copying it, or `None` when the reader has caught up.
    pub fn next_ref(&mut self) -> Result<Option<EnvelopeRef<'_>>, LogError> {
        match &mut self.0 {
            Inner::Embedded(r) => r.next_ref(),
            Inner::Kafka(r) => r.next_ref(),
        }
    }

    /// The next event, or `None` when the reader has caught up. (Not `Iterator::next`: a
    /// reader that has caught up is not finished, and reading can fail.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Envelope>, LogError> {
        Ok(self.next_ref()?.map(|e| e.to_owned()))
    }

    /// The next event, waiting up to `timeout` for one to be appended.
    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Option<Envelope>, LogError> {
        match &mut self.0 {
            Inner::Embedded(r) => r.next_blocking(timeout),
            Inner::Kafka(r) => r.next_blocking(timeout),
        }
    }

    /// The next event, waiting as long as it takes for one to be appended.
    pub async fn next_async(&mut self) -> Result<Envelope, LogError> {
        match &mut self.0 {
            Inner::Embedded(r) => r.next_async().await,
            Inner::Kafka(r) => r.next_async().await,
        }
    }
}
