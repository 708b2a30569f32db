//! The engine: one worker thread per partition, each the only decider for its partition.
//!
//! A worker takes every queued command (up to a bound), decides them in order against its
//! in-memory aggregates, hands all their events to the partition's log writer as one append,
//! and — while that append is being made durable — decides the next batch. Callers are answered
//! only when their events are durable. If an append fails, every command decided on top of it
//! fails too and the worker rebuilds its state from the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use annals_events::log::PendingAppend;
use annals_events::{NewEvent, Topic};
use annals_schemas::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::command::{Command, CommandError, CommandMeta, Outcome, Written};
use crate::snapshot::{self, SnapshotStore};
use crate::state::{Decided, PartitionState};

/// Commands a worker decides before handing their events to the log.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Commands queued per partition before callers wait (backpressure).
const QUEUE_DEPTH: usize = 4096;
/// Events a partition advances between snapshots (when snapshots are kept).
pub const SNAPSHOT_EVERY: u64 = 10_000;

/// Events a partition that is never idle advances between snapshots: its worker then waits for
/// its appends in flight to take one.
pub const SNAPSHOT_UNDER_LOAD: u64 = 5 * SNAPSHOT_EVERY;

type Reply = oneshot::Sender<Result<Outcome, CommandError>>;

struct Job {
    command: Command,
    meta: CommandMeta,
    reply: Reply,
}

/// Counters of the command path, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Each tenant's `limits.rate_per_second`, as the workers' aggregates have it.
    pub tenant_rates: std::sync::RwLock<std::collections::HashMap<String, u64>>,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub events: AtomicU64,
    pub signals_accepted: AtomicU64,
    pub signals_duplicate: AtomicU64,
    pub queued: AtomicU64,
    /// How each worker restored its partition when it started.
    pub restores: std::sync::Mutex<Vec<Restore>>,
}

/// How a worker restored its partition's aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Restore {
    pub partition: u32,
    /// The seq of the snapshot it started from, if one was used.
    pub snapshot_seq: Option<u64>,
    /// Events it replayed from the log.
    pub replayed: u64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub accepted: u64,
    pub refused: u64,
    pub events: u64,
    pub signals_accepted: u64,
    pub signals_duplicate: u64,
    /// Commands waiting for a worker (`ingest_backlog`).
    pub queued: u64,
}

/// The command path over a topic of the log: a worker for each partition it owns.
pub struct Engine {
    topic: Arc<Topic>,
    /// By partition: the worker's queue, or `None` for a partition another processor owns.
    senders: Vec<Option<mpsc::Sender<Job>>>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a command worker panicked");
            }
        }
    }
}

impl Engine {
    /// Starts one worker per partition of `topic`, each rebuilding its aggregates from the log.
    pub fn start(topic: Arc<Topic>, registry: Arc<Registry>) -> Result<Engine, CommandError> {
        let all: Vec<u32> = (0..topic.partitions().len() as u32).collect();
        Self::start_owning(topic, registry, &all)
    }

    /// Starts workers for the `owned` partitions only (a processor instance that owns them
    /// through its consumer group); commands of other partitions are refused as unavailable.
    pub fn start_owning(
        topic: Arc<Topic>,
        registry: Arc<Registry>,
        owned: &[u32],
    ) -> Result<Engine, CommandError> {
        Self::start_with_snapshots(topic, registry, owned, None)
    }

    /// [`Self::start_owning`], with each worker restoring its partition from the latest
    /// snapshot in `snapshots` (then the events after it), and saving a new one whenever it is
    /// idle with at least [`SNAPSHOT_EVERY`] events since the last, and when it stops.
    pub fn start_with_snapshots(
        topic: Arc<Topic>,
        registry: Arc<Registry>,
        owned: &[u32],
        snapshots: Option<Arc<dyn SnapshotStore>>,
    ) -> Result<Engine, CommandError> {
        let stats = Arc::new(Stats::default());
        let mut senders: Vec<Option<mpsc::Sender<Job>>> =
            (0..topic.partitions().len()).map(|_| None).collect();
        let mut threads = Vec::new();
        let mut ready = Vec::new();
        for &p in owned {
            if p as usize >= senders.len() {
                return Err(CommandError::unavailable(format!(
                    "partition {p} is not a partition of topic {}",
                    topic.name()
                )));
            }
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            let (ready_tx, ready_rx) = oneshot::channel();
            let worker = Worker {
                topic: topic.clone(),
                partition: p,
                registry: registry.clone(),
                stats: stats.clone(),
                snapshots: snapshots.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("annals-command-{p}"))
                .spawn(move || worker.run(rx, ready_tx))
                .map_err(CommandError::unavailable)?;
            senders[p as usize] = Some(tx);
            threads.push(thread);
            ready.push(ready_rx);
        }
        let engine = Engine {
            topic,
            senders,
            threads,
            stats,
        };
        for r in ready {
            r.blocking_recv().map_err(|_| {
                CommandError::unavailable("a command worker stopped while starting")
            })??;
        }
        Ok(engine)
    }

    #[allow(clippy::type_complexity)]
    fn job(
        &self,
        command: Command,
        meta: CommandMeta,
    ) -> Result<
        (
            &mpsc::Sender<Job>,
            Job,
            oneshot::Receiver<Result<Outcome, CommandError>>,
        ),
        CommandError,
    > {
        let p =
            annals_events::partitioner::partition_for(command.tenant(), self.senders.len() as u32);
        let tx = self.senders[p as usize].as_ref().ok_or_else(|| {
            CommandError::unavailable(format!(
                "partition {p} is owned by another processor instance"
            ))
        })?;
        let (reply, rx) = oneshot::channel();
        Ok((
            tx,
            Job {
                command,
                meta,
                reply,
            },
            rx,
        ))
    }

    /// The partitions this engine decides for.
    pub fn owned(&self) -> Vec<u32> {
        (0..self.senders.len() as u32)
            .filter(|&p| self.senders[p as usize].is_some())
            .collect()
    }

    /// Runs a command and resolves once its events are durable (or it was refused).
    pub async fn execute(
        &self,
        command: Command,
        meta: CommandMeta,
    ) -> Result<Outcome, CommandError> {
        let (tx, job, rx) = self.job(command, meta)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        tx.send(job)
            .await
            .map_err(|_| CommandError::unavailable("the command path is shut down"))?;
        rx.await
            .map_err(|_| CommandError::unavailable("the command worker stopped"))?
    }

    /// Queues a command; wait for its outcome with [`PendingCommand::wait`]. Lets a caller keep
    /// many commands in flight from one thread. Do not call from an async task.
    pub fn submit_blocking(
        &self,
        command: Command,
        meta: CommandMeta,
    ) -> Result<PendingCommand, CommandError> {
        let (tx, job, rx) = self.job(command, meta)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        tx.blocking_send(job)
            .map_err(|_| CommandError::unavailable("the command path is shut down"))?;
        Ok(PendingCommand(rx))
    }

    /// Runs a command and waits for its outcome. Do not call from an async task.
    pub fn execute_blocking(
        &self,
        command: Command,
        meta: CommandMeta,
    ) -> Result<Outcome, CommandError> {
        self.submit_blocking(command, meta)?.wait()
    }

    pub fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }

    /// A tenant's own limit of signals per second (`limits.rate_per_second`), if it exists.
    pub fn tenant_rate(&self, tenant: &str) -> Option<u64> {
        self.stats
            .tenant_rates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .copied()
    }

    /// How each worker restored its partition when the engine started.
    pub fn restores(&self) -> Vec<Restore> {
        self.stats
            .restores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> EngineStats {
        let s = &self.stats;
        EngineStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            signals_accepted: s.signals_accepted.load(Ordering::Relaxed),
            signals_duplicate: s.signals_duplicate.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
        }
    }
}

/// A command handed to its worker.
pub struct PendingCommand(oneshot::Receiver<Result<Outcome, CommandError>>);

impl PendingCommand {
    pub fn wait(self) -> Result<Outcome, CommandError> {
        self.0
            .blocking_recv()
            .map_err(|_| CommandError::unavailable("the command worker stopped"))?
    }
}

/// A batch whose events are being made durable.
struct InFlight {
    append: Option<PendingAppend>,
    decided: Vec<(Reply, Decided)>,
}

struct Worker {
    topic: Arc<Topic>,
    partition: u32,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
}

impl Worker {
    fn run(self, mut rx: mpsc::Receiver<Job>, ready: oneshot::Sender<Result<(), CommandError>>) {
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => {
                ready.send(Err(CommandError::unavailable(e))).ok();
                return;
            }
        };
        let partition = &self.topic.partitions()[self.partition as usize];
        let mut state = match self.restore(partition) {
            Ok(s) => s,
            Err(e) => {
                ready.send(Err(e)).ok();
                return;
            }
        };
        self.publish_rates(&state);
        ready.send(Ok(())).ok();
        let mut snapshot_at = partition.head().next_seq;
        let mut in_flight: Option<InFlight> = None;
        loop {
            // Block for work only when nothing is in flight; otherwise take what is queued.
            let mut jobs = Vec::new();
            if in_flight.is_none() {
                // Idle: everything decided is durable, a good moment for a snapshot.
                self.snapshot(partition, &state, &mut snapshot_at, SNAPSHOT_EVERY);
                match rx.blocking_recv() {
                    Some(j) => jobs.push(j),
                    None => break,
                }
            } else if self.snapshots.is_some()
                && partition.head().next_seq >= snapshot_at.saturating_add(SNAPSHOT_UNDER_LOAD)
            {
                // Never idle: once in a while, let what is in flight become durable so the
                // state is all durable, and snapshot it.
                if let Some(f) = in_flight.take()
                    && self.finish(f).is_err()
                {
                    state = self.recover(partition);
                }
                self.snapshot(partition, &state, &mut snapshot_at, SNAPSHOT_UNDER_LOAD);
            }
            while jobs.len() < MAX_BATCH_COMMANDS {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if jobs.is_empty() {
                if let Some(f) = in_flight.take()
                    && self.finish(f).is_err()
                {
                    state = self.recover(partition);
                }
                continue;
            }
            self.stats
                .queued
                .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
            if state.dirty {
                if let Some(f) = in_flight.take() {
                    self.finish(f).ok();
                }
                state = self.recover(partition);
                if state.dirty {
                    for job in jobs {
                        job.reply.send(Err(CommandError::unavailable("this partition's state could not be rebuilt from the log; see the server log, then restart"))).ok();
                    }
                    continue;
                }
            }
            let mut events: Vec<NewEvent> = Vec::new();
            let mut decided = Vec::with_capacity(jobs.len());
            for job in jobs {
                match state.decide(&rt, job.command, &job.meta, &self.registry, &mut events) {
                    Ok(d) => decided.push((job.reply, d)),
                    Err(e) => {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        job.reply.send(Err(e)).ok();
                    }
                }
            }
            if decided.iter().any(|(_, d)| {
                d.stream.starts_with(annals_domain::tenancy::STREAM_TYPE)
                    && !d.event_types.is_empty()
            }) {
                self.publish_rates(&state);
            }
            let append = if events.is_empty() {
                Ok(None)
            } else {
                partition.submit_blocking(events).map(Some)
            };
            let previous_failed = in_flight.take().is_some_and(|f| self.finish(f).is_err());
            match append {
                Ok(append) if !previous_failed => in_flight = Some(InFlight { append, decided }),
                result => {
                    // This batch was decided on top of events that did not become durable.
                    let why = match result {
                        Err(e) => e.to_string(),
                        Ok(_) => "an earlier append of this partition failed".into(),
                    };
                    fail_all(decided, &why);
                    state = self.recover(partition);
                    continue;
                }
            }
            if state.dirty {
                if let Some(f) = in_flight.take() {
                    self.finish(f).ok();
                }
                state = self.recover(partition);
            }
        }
        if let Some(f) = in_flight.take()
            && self.finish(f).is_err()
        {
            return;
        }
        // Stopping (a rebalance takes the partition away): leave the next owner a snapshot.
        self.snapshot(partition, &state, &mut snapshot_at, 1);
    }

    /// The partition's aggregates from the latest snapshot and the events after it, or from
    /// all its events.
    fn restore(
        &self,
        partition: &annals_events::Partition,
    ) -> Result<PartitionState, CommandError> {
        let loaded = self.snapshots.as_ref().map(|s| s.load(self.partition));
        let from_snapshot = match loaded {
            Some(Ok(Some(bytes))) => match snapshot::restore(&bytes, partition) {
                Ok(found) => Some(found),
                Err(why) => {
                    tracing::warn!(partition = self.partition, %why, "snapshot not used");
                    None
                }
            },
            Some(Err(why)) => {
                tracing::warn!(partition = self.partition, %why, "cannot load a snapshot");
                None
            }
            _ => None,
        };
        let (state, from) = from_snapshot.unwrap_or_default();
        let head = partition.head().next_seq;
        let state = PartitionState::rebuild_from(partition, &self.registry, state, from)?;
        self.stats
            .restores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Restore {
                partition: self.partition,
                snapshot_seq: (from > 0).then_some(from),
                replayed: head.saturating_sub(from),
            });
        Ok(state)
    }

    /// Saves a snapshot if the partition moved at least `every` events since the last one.
    fn snapshot(
        &self,
        partition: &annals_events::Partition,
        state: &PartitionState,
        at: &mut u64,
        every: u64,
    ) {
        let Some(store) = &self.snapshots else { return };
        let head = partition.head();
        if state.dirty || head.next_seq < at.saturating_add(every) || head.next_seq == 0 {
            return;
        }
        let bytes = snapshot::encode(state, head.next_seq, &head.last_hash);
        if let Err(why) = store.save(self.partition, &bytes) {
            tracing::warn!(partition = self.partition, %why, "cannot save a snapshot");
        }
        // Failed or not, the next try is a whole interval away (the owner replays meanwhile).
        *at = head.next_seq;
    }

    /// Waits for a batch's append and answers its callers.
    fn finish(&self, f: InFlight) -> Result<(), ()> {
        let acks = match f.append.map(PendingAppend::wait).transpose() {
            Ok(acks) => acks.unwrap_or_default(),
            Err(e) => {
                fail_all(f.decided, &e.to_string());
                return Err(());
            }
        };
        for (reply, d) in f.decided {
            let written: Vec<Written> = d
                .event_types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let a = &acks[d.first + i];
                    Written {
                        event_id: a.event_id.to_string(),
                        event_type: std::borrow::Cow::Borrowed(*t),
                        stream_version: d.from_version + i as u64 + 1,
                        partition: a.partition,
                        seq: a.seq,
                    }
                })
                .collect();
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            self.stats
                .events
                .fetch_add(written.len() as u64, Ordering::Relaxed);
            if d.stream.starts_with(annals_domain::ingest::STREAM_TYPE) {
                self.stats
                    .signals_accepted
                    .fetch_add(written.len() as u64, Ordering::Relaxed);
                self.stats
                    .signals_duplicate
                    .fetch_add(d.duplicates, Ordering::Relaxed);
            }
            let outcome = Outcome {
                stream: d.stream,
                stream_version: d.from_version + written.len() as u64,
                events: written,
                duplicates: d.duplicates,
                repeated: d.repeated,
            };
            reply.send(Ok(outcome)).ok();
        }
        Ok(())
    }

    /// Shares this partition's tenants' rate limits with the engine's callers.
    fn publish_rates(&self, state: &PartitionState) {
        let mut rates = self
            .stats
            .tenant_rates
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for (tenant, rate) in state.tenant_rates() {
            rates.insert(tenant.to_owned(), rate);
        }
    }

    /// Rebuilds the partition's aggregates from what the log durably holds.
    fn recover(&self, partition: &annals_events::Partition) -> PartitionState {
        match PartitionState::rebuild(partition, &self.registry) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(partition = self.partition, error = %e, "cannot rebuild the partition's aggregates; its commands will fail until restart");
                let mut s = PartitionState::default();
                s.dirty = true;
                s
            }
        }
    }
}

fn fail_all(decided: Vec<(Reply, Decided)>, why: &str) {
    for (reply, _) in decided {
        reply
            .send(Err(CommandError::Unavailable(format!(
                "not written: {why}; retrying the command is safe"
            ))))
            .ok();
    }
}
