//! The append path both backends share: a caller's batch becomes a [`Request`] on the
//! partition's queue; the partition's one writer thread gathers what is queued into a group,
//! writes it, and answers each request with its acknowledgements once they are durable.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::LogError;
use super::partition::Appended;
use crate::envelope::NewEvent;

/// One caller's batch on a partition's queue.
pub(crate) struct Request {
    pub events: Vec<NewEvent>,
    /// Approximate encoded size, for sizing groups.
    pub bytes: usize,
    pub reply: oneshot::Sender<Result<Vec<Appended>, LogError>>,
}

/// Where an append's acknowledgements (or its error) arrive.
pub(crate) type AckReceiver = oneshot::Receiver<Result<Vec<Appended>, LogError>>;

impl Request {
    /// Checks every event (a batch is refused whole if one is invalid) and sizes the batch.
    pub fn new(events: Vec<NewEvent>) -> Result<(Request, AckReceiver), LogError> {
        for e in &events {
            e.validate()?;
        }
        let bytes = events
            .iter()
            .map(|e| {
                let ids = e.causation_id.as_ref().map_or(0, |s| s.len())
                    + e.correlation_id.as_ref().map_or(0, |s| s.len());
                e.payload.len()
                    + e.stream.len()
                    + e.tenant.len()
                    + e.event_type.len()
                    + e.actor.len()
                    + ids
                    + 128
            })
            .sum();
        let (reply, rx) = oneshot::channel();
        Ok((
            Request {
                events,
                bytes,
                reply,
            },
            rx,
        ))
    }
}

/// An append handed to the writer, not yet known to be durable.
pub struct PendingAppend(pub(crate) Option<AckReceiver>);

impl PendingAppend {
    /// Waits until the batch is durable and returns its acknowledgements.
    pub fn wait(self) -> Result<Vec<Appended>, LogError> {
        match self.0 {
            None => Ok(Vec::new()),
            Some(rx) => rx.blocking_recv().map_err(|_| LogError::Closed)?,
        }
    }
}

/// Group commit: waits for the next request, then takes every request already queued up to
/// `max_bytes`. `None` once the queue is closed and empty.
pub(crate) fn gather(rx: &mut mpsc::Receiver<Request>, max_bytes: usize) -> Option<Vec<Request>> {
    let first = rx.blocking_recv()?;
    let mut bytes = first.bytes;
    let mut reqs = vec![first];
    while bytes < max_bytes {
        match rx.try_recv() {
            Ok(r) => {
                bytes += r.bytes;
                reqs.push(r);
            }
            Err(_) => break,
        }
    }
    Some(reqs)
}

/// A partition's queue and the thread that drains it.
pub(crate) struct WriterHandle {
    pub tx: mpsc::Sender<Request>,
    pub thread: JoinHandle<()>,
}

/// Starts the writer thread of a partition with a queue of `depth` requests.
pub(crate) fn spawn_writer(
    topic: &str,
    id: u32,
    depth: usize,
    run: impl FnOnce(mpsc::Receiver<Request>) + Send + 'static,
) -> Result<WriterHandle, LogError> {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let thread = std::thread::Builder::new()
        .name(format!("annals-writer-{topic}-{id}"))
        .spawn(move || run(rx))
        .map_err(LogError::io("cannot start a partition writer thread"))?;
    Ok(WriterHandle { tx, thread })
}
