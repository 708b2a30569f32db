//! A partition of a topic, whichever backend holds it: its durable head, its one writer (when
//! opened for writing) and its readers.

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use super::append::{PendingAppend, Request, WriterHandle};
use super::reader::Reader;
use super::{LogError, embedded, kafka};
use crate::chain::Hash;
use crate::envelope::NewEvent;

/// What the writer acknowledges for each appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub event_id: Uuid,
    pub partition: u32,
    pub seq: u64,
    pub hash: Hash,
    pub recorded_at: i64,
}

/// The durable head of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The seq the next event will get (= number of events).
    pub next_seq: u64,
    /// Hash of the last event, or the genesis value.
    pub last_hash: Hash,
    /// `recorded_at` of the last event (0 if none).
    pub last_recorded_at: i64,
    /// Bytes in segment files (embedded log; 0 on Kafka, whose own tools report sizes).
    pub bytes: u64,
}

/// A segment as `annals log stat` shows it (embedded log only).
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub base_seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub index_entries: usize,
}

/// Where a partition's events are kept and read from.
pub(crate) enum Source {
    Embedded(Arc<embedded::partition::Shared>),
    Kafka(Arc<kafka::partition::Shared>),
}

/// A partition of a topic. Opened for writing, it owns the partition's one writer thread.
pub struct Partition {
    topic: String,
    id: u32,
    source: Source,
    writer: Option<WriterHandle>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued, then exit.
        if let Some(WriterHandle { tx, thread }) = self.writer.take() {
            drop(tx);
            if thread.join().is_err() {
                tracing::error!(topic = %self.topic, partition = self.id, "partition writer panicked");
            }
        }
    }
}

impl Partition {
    pub(crate) fn new(
        topic: &str,
        id: u32,
        source: Source,
        writer: Option<WriterHandle>,
    ) -> Partition {
        Partition {
            topic: topic.to_owned(),
            id,
            source,
            writer,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn source(&self) -> &Source {
        &self.source
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The durable head (what readers can see).
    pub fn head(&self) -> Head {
        match &self.source {
            Source::Embedded(s) => s.head(),
            Source::Kafka(s) => s.head(),
        }
    }

    /// The segment files (empty on Kafka).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        match &self.source {
            Source::Embedded(s) => s.segments(),
            Source::Kafka(_) => Vec::new(),
        }
    }

    fn queue(&self) -> Result<&tokio::sync::mpsc::Sender<Request>, LogError> {
        self.writer
            .as_ref()
            .map(|w| &w.tx)
            .ok_or(LogError::ReadOnly)
    }

    /// Appends a batch and waits until it is durable. All events are checked before any is
    /// written: a batch is written whole or not at all. Do not call from an async task (use [`Self::append`]).
    pub fn append_blocking(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        self.submit_blocking(events)?.wait()
    }

    /// Queues a batch for the writer and returns at once (waiting only if the queue is full):
    /// a caller can prepare its next batch while this one is written, and the writer commits
    /// everything queued in one group. The batch is durable once [`PendingAppend::wait`] returns.
    pub fn submit_blocking(&self, events: Vec<NewEvent>) -> Result<PendingAppend, LogError> {
        if events.is_empty() {
            return Ok(PendingAppend(None));
        }
        let tx = self.queue()?;
        let (req, rx) = Request::new(events)?;
        tx.blocking_send(req).map_err(|_| LogError::Closed)?;
        Ok(PendingAppend(Some(rx)))
    }

    /// Appends a batch and resolves when it is durable (see [`Self::append_blocking`]).
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.queue()?;
        let (req, rx) = Request::new(events)?;
        tx.send(req).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// A reader positioned at `from_seq`.
    pub fn reader(&self, from_seq: u64) -> Reader {
        match &self.source {
            Source::Embedded(s) => Reader::embedded(s.clone(), from_seq),
            Source::Kafka(s) => Reader::kafka(s.clone(), from_seq),
        }
    }

    /// The first seq recorded at or after `micros` (the head's next seq if none is): where a
    /// replay "as of" a time starts, found without scanning the partition.
    pub fn seq_at_time(&self, micros: i64) -> Result<u64, LogError> {
        match &self.source {
            Source::Embedded(s) => s.seq_at_time(micros),
            Source::Kafka(s) => s.seq_at_time(micros),
        }
    }
}
