//! Commands through Kafka: a commands topic, processor instances that own its partitions
//! through one consumer group, and an outcomes topic callers await.
//!
//! - A caller ([`CommandBus`]) gives each command an id (unless it has one), writes it as JSON
//!   to partition `partition_for(tenant)` of `<prefix>_commands` — the same partition number
//!   as the tenant's events — and waits for the record with that id on the same partition of
//!   `<prefix>_outcomes`.
//! - A processor instance ([`Processor`]) is a member of the consumer group. For the
//!   partitions assigned to it, an [`Engine`] owns them: each worker restores the partition's
//!   aggregates from the events partition, and the writer's chain tip from the broker. It
//!   decides each command, appends the events (seq and `prev_hash` assigned by the partition's
//!   writer), publishes the outcome, and only then commits the command's offset.
//!
//! Exactly once in effect, without Kafka transactions:
//! - a command redelivered after a crash (its offset not committed) carries its id: the
//!   aggregates recognise an id that already wrote (`repeated`), and signals are deduplicated by
//!   their key, so nothing is applied twice;
//! - an instance that lost its partitions but still runs (a zombie) can only append what the
//!   chain rule accepts (see `annals_events::log::kafka`): a new owner's append that lost is
//!   refused as superseded, its worker rebuilds its state from the log, and the command is
//!   decided again; readers never see both sides;
//! - a command's outcome is published before its offset is committed, so an acknowledged
//!   command is never lost; a caller that saw no outcome may resend with the same id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals_events::{KafkaConfig, Log, Topic};
use annals_schemas::Registry;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::command::{Command, CommandError, CommandMeta};
use crate::engine::{Engine, Restore};
use crate::snapshot::SnapshotStore;

/// The side topic commands travel on.
pub const COMMANDS_TOPIC: &str = "_commands";
/// The side topic outcomes travel on.
pub const OUTCOMES_TOPIC: &str = "_outcomes";
/// The side topic partition owners keep snapshots in (partition p's on partition p).
pub const SNAPSHOTS_TOPIC: &str = "_snapshots";
/// Commands a processor takes from one poll before deciding them.
const MAX_POLL_BATCH: usize = 500;
/// How long the commands and outcomes topics keep records: they pass through (a command is
/// done once its outcome is committed, and callers await outcomes for seconds). A command
/// older than this that no processor took was never acknowledged.
pub const PASSING_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// How long the snapshots topic keeps records: a snapshot only saves replaying, so an expired
/// one costs a longer restore, nothing else.
pub const SNAPSHOT_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// Times a processor decides a command again after its append lost to another writer.
const MAX_ATTEMPTS: u32 = 5;

#[derive(Serialize, Deserialize)]
struct CommandRecord {
    command: Command,
    meta: CommandMeta,
}

/// A command's outcome as its caller receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutcomeRecord {
    pub command_id: String,
    /// The accepted outcome (as [`crate::Outcome`] serialises), or `None` when refused.
    pub outcome: Option<serde_json::Value>,
    /// Why it was refused: a stable code, the HTTP status it maps to, the message, and the
    /// command's field at fault.
    pub error: Option<(String, u16, String, Option<String>)>,
}

fn kafka_err(context: &str) -> impl Fn(rdkafka::error::KafkaError) -> CommandError + '_ {
    move |e| CommandError::Unavailable(format!("{context}: {e}"))
}

fn both_side_topics(
    log: &Log,
    partitions: u32,
) -> Result<(String, String, KafkaConfig), CommandError> {
    let (commands, cfg) = log
        .kafka_side_topic(COMMANDS_TOPIC, partitions, Some(PASSING_RETENTION))
        .map_err(CommandError::unavailable)?;
    let (outcomes, _) = log
        .kafka_side_topic(OUTCOMES_TOPIC, partitions, Some(PASSING_RETENTION))
        .map_err(CommandError::unavailable)?;
    Ok((commands, outcomes, cfg))
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<OutcomeRecord>>>>;

/// The caller's side: sends commands to the commands topic and awaits their outcomes.
pub struct CommandBus {
    producer: FutureProducer,
    commands: String,
    partitions: u32,
    waiters: Waiters,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CommandBus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.listener.take() {
            t.join().ok();
        }
    }
}

/// A command on its way; [`PendingOutcome::wait`] gives its outcome.
pub struct PendingOutcome {
    pub command_id: String,
    /// The command's own delivery to the commands topic.
    delivery: Option<rdkafka::producer::DeliveryFuture>,
    rx: oneshot::Receiver<OutcomeRecord>,
    waiters: Waiters,
}

impl PendingOutcome {
    /// Waits up to `timeout` for the outcome. `Err` on timeout: the command may or may not have
    /// taken effect; sending it again with the same id is safe.
    pub fn wait(mut self, timeout: Duration) -> Result<OutcomeRecord, CommandError> {
        let deadline = Instant::now() + timeout;
        if let Some(d) = self.delivery.take() {
            let sent = futures::executor::block_on(d);
            if !matches!(sent, Ok(Ok(_))) {
                self.waiters
                    .lock()
                    .expect("waiters")
                    .remove(&self.command_id);
                let why = match sent {
                    Ok(Err((e, _))) => e.to_string(),
                    _ => "the producer stopped".into(),
                };
                return Err(CommandError::Unavailable(format!(
                    "command {} was not sent: {why}; sending it again with the same id is safe",
                    self.command_id
                )));
            }
        }
        loop {
            match self.rx.try_recv() {
                Ok(o) => return Ok(o),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(CommandError::unavailable("the command bus stopped"));
                }
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                    self.waiters
                        .lock()
                        .expect("waiters")
                        .remove(&self.command_id);
                    return Err(CommandError::Unavailable(format!(
                        "no outcome for command {} within {timeout:?}; sending it again with the same id is safe",
                        self.command_id
                    )));
                }
                Err(oneshot::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}

impl CommandBus {
    /// Connects to the commands and outcomes topics of `log` (on Kafka), creating them with the
    /// partitions of `topic` if missing, and starts listening for outcomes from now on.
    pub fn connect(log: &Log, topic: &Topic) -> Result<CommandBus, CommandError> {
        let partitions = topic.partitions().len() as u32;
        let (commands, outcomes, cfg) = both_side_topics(log, partitions)?;
        // A caller resends a command that got no outcome, so a send need not wait long.
        let producer: FutureProducer = cfg
            .producer_config()
            .set("message.timeout.ms", "15000")
            .create()
            .map_err(kafka_err("cannot create a producer"))?;
        // Listen from each partition's current end: every outcome of a command sent after
        // this point arrives.
        let consumer: BaseConsumer = cfg
            .reader_config()
            .create()
            .map_err(kafka_err("cannot create a consumer"))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(&outcomes, p as i32, cfg.timeout)
                .map_err(kafka_err("cannot read the outcomes' offsets"))?;
            tpl.add_partition_offset(&outcomes, p as i32, Offset::Offset(high))
                .map_err(kafka_err("bad offset"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(kafka_err("cannot read the outcomes"))?;
        let waiters: Waiters = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let listener = {
            let (waiters, stop) = (waiters.clone(), stop.clone());
            std::thread::Builder::new()
                .name("annals-outcomes".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                            continue;
                        };
                        let Some(Ok(o)) = m.payload().map(serde_json::from_slice::<OutcomeRecord>)
                        else {
                            continue;
                        };
                        if let Some(tx) = waiters.lock().expect("waiters").remove(&o.command_id) {
                            tx.send(o).ok();
                        }
                    }
                })
                .map_err(CommandError::unavailable)?
        };
        Ok(CommandBus {
            producer,
            commands,
            partitions,
            waiters,
            stop,
            listener: Some(listener),
        })
    }

    /// Hands a command (with a new id unless `meta.command_id` has one) to the producer and
    /// returns at once, so a caller can keep many in flight; [`PendingOutcome::wait`] waits for
    /// it to be in the commands topic and for its outcome.
    pub fn send(
        &self,
        command: Command,
        mut meta: CommandMeta,
    ) -> Result<PendingOutcome, CommandError> {
        let id = meta
            .command_id
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
            .clone();
        let partition =
            annals_events::partitioner::partition_for(command.tenant(), self.partitions);
        let tenant = command.tenant().to_owned();
        let value = serde_json::to_vec(&CommandRecord { command, meta })
            .map_err(CommandError::unavailable)?;
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters").insert(id.clone(), tx);
        let mut record = FutureRecord::to(&self.commands)
            .partition(partition as i32)
            .key(tenant.as_bytes())
            .payload(&value);
        let deadline = Instant::now() + Duration::from_secs(30);
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(d) => break d,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) if Instant::now() < deadline => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    self.waiters.lock().expect("waiters").remove(&id);
                    return Err(CommandError::Unavailable(format!(
                        "cannot send the command: {e}"
                    )));
                }
            }
        };
        Ok(PendingOutcome {
            command_id: id,
            delivery: Some(delivery),
            rx,
            waiters: self.waiters.clone(),
        })
    }
}

/// One processor instance: a member of the processors' consumer group.
pub struct Processor {
    log: Arc<Log>,
    topic: Arc<Topic>,
    registry: Arc<Registry>,
    group: String,
}

impl Processor {
    pub fn new(
        log: Arc<Log>,
        topic: Arc<Topic>,
        registry: Arc<Registry>,
        group: &str,
    ) -> Processor {
        Processor {
            log,
            topic,
            registry,
            group: group.to_owned(),
        }
    }

    /// Runs until `stop` is set: follows the group's assignment, decides the owned partitions'
    /// commands, publishes their outcomes, commits their offsets. `on_assign` hears each new
    /// assignment and how each partition was restored.
    pub fn run(
        &self,
        stop: &AtomicBool,
        on_assign: &dyn Fn(&[u32], &[Restore]),
    ) -> Result<(), CommandError> {
        self.run_with(stop, on_assign, &mut |_, _| {})
    }

    /// [`run`](Self::run), calling `each_round` after every round (at least every 200 ms) with
    /// the partitions owned, and once more when stopping, while they are still owned, with
    /// `true`: the instance is their single writer then (signing checkpoints, say).
    pub fn run_with(
        &self,
        stop: &AtomicBool,
        on_assign: &dyn Fn(&[u32], &[Restore]),
        each_round: &mut dyn FnMut(&[u32], bool),
    ) -> Result<(), CommandError> {
        let partitions = self.topic.partitions().len() as u32;
        let (commands, outcomes, cfg) = both_side_topics(&self.log, partitions)?;
        let snapshots: Arc<dyn SnapshotStore> =
            Arc::new(KafkaSnapshots::open(&self.log, partitions)?);
        let mut cc = cfg.reader_config();
        cc.set("group.id", &self.group)
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "roundrobin");
        let consumer: BaseConsumer = cc.create().map_err(kafka_err("cannot create a consumer"))?;
        consumer
            .subscribe(&[&commands])
            .map_err(kafka_err("cannot subscribe to the commands"))?;
        let producer: FutureProducer = cfg
            .producer_config()
            .create()
            .map_err(kafka_err("cannot create a producer"))?;
        let mut engine: Option<Engine> = None;
        let mut owned: Vec<u32> = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let first = consumer.poll(Duration::from_millis(200));
            let now_owned = assigned(&consumer);
            if now_owned != owned {
                // A new assignment: the old workers finish what they hold, new ones restore
                // the owned partitions from the log.
                engine = None;
                owned = now_owned;
                let mut restores = Vec::new();
                if !owned.is_empty() {
                    let e = Engine::start_with_snapshots(
                        self.topic.clone(),
                        self.registry.clone(),
                        &owned,
                        Some(snapshots.clone()),
                    )?;
                    restores = e.restores();
                    engine = Some(e);
                }
                on_assign(&owned, &restores);
            }
            let Some(first) = first else {
                each_round(&owned, false);
                continue;
            };
            let first = first.map_err(kafka_err("cannot read the commands"))?;
            let mut batch = vec![first.detach()];
            while batch.len() < MAX_POLL_BATCH {
                match consumer.poll(Duration::ZERO) {
                    Some(Ok(m)) => batch.push(m.detach()),
                    Some(Err(e)) => return Err(kafka_err("cannot read the commands")(e)),
                    None => break,
                }
            }
            let Some(engine) = engine.as_ref() else {
                continue;
            };
            let outs = decide(engine, &batch, stop)?;
            publish_and_commit(&consumer, &producer, &commands, &outcomes, &outs)?;
            each_round(&owned, false);
        }
        each_round(&owned, true);
        Ok(())
    }
}

/// Snapshots in the side topic `_snapshots`: partition p's latest ends with the last record
/// of its partition p.
pub struct KafkaSnapshots {
    topic: String,
    cfg: KafkaConfig,
    producer: FutureProducer,
}

impl KafkaSnapshots {
    /// The snapshots of a log with `partitions` partitions (the side topic is created if
    /// missing).
    pub fn open(log: &Log, partitions: u32) -> Result<KafkaSnapshots, CommandError> {
        let (topic, cfg) = log
            .kafka_side_topic(SNAPSHOTS_TOPIC, partitions, Some(SNAPSHOT_RETENTION))
            .map_err(CommandError::unavailable)?;
        let producer = cfg
            .producer_config()
            .create()
            .map_err(kafka_err("cannot create a producer"))?;
        Ok(KafkaSnapshots {
            topic,
            cfg,
            producer,
        })
    }
}

impl KafkaSnapshots {
    /// Records `[from, to)` of `partition`'s snapshot partition, in order.
    fn read(&self, partition: u32, from: i64, to: i64) -> Result<Vec<Vec<u8>>, String> {
        let consumer: BaseConsumer = self
            .cfg
            .reader_config()
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition as i32, Offset::Offset(from))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity((to - from).max(0) as usize);
        let deadline = Instant::now() + self.cfg.timeout;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.offset() >= from && m.offset() < to => {
                    out.push(m.payload().unwrap_or_default().to_vec());
                    if m.offset() == to - 1 {
                        return Ok(out);
                    }
                }
                Some(Ok(_)) | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(e.to_string()),
            }
        }
        Err(format!(
            "snapshot records {from}..{to} did not arrive within {:?}",
            self.cfg.timeout
        ))
    }
}

/// A snapshot is saved as chunk records (see [`crate::snapshot::chunks`]); the partition's
/// last record ends the latest snapshot.
impl SnapshotStore for KafkaSnapshots {
    fn load(&self, partition: u32) -> Result<Option<Vec<u8>>, String> {
        let consumer: BaseConsumer = self
            .cfg
            .reader_config()
            .create()
            .map_err(|e| e.to_string())?;
        let (_, high) = consumer
            .fetch_watermarks(&self.topic, partition as i32, self.cfg.timeout)
            .map_err(|e| e.to_string())?;
        if high == 0 {
            return Ok(None);
        }
        let last = self
            .read(partition, high - 1, high)?
            .pop()
            .unwrap_or_default();
        let Some(count) = crate::snapshot::chunk_count(&last) else {
            // A snapshot of one record, as older versions saved them.
            return Ok(Some(last));
        };
        let from = high - i64::from(count);
        if from < 0 {
            return Err(format!(
                "the latest snapshot names {count} chunks, the partition holds {high} records"
            ));
        }
        let records = self.read(partition, from, high)?;
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        crate::snapshot::assemble(&refs).map(Some)
    }

    fn save(&self, partition: u32, snapshot: &[u8]) -> Result<(), String> {
        let key = partition.to_string();
        let id = *uuid::Uuid::now_v7().as_bytes();
        // One chunk after the other: the chunks stay in order even if a send is retried.
        for chunk in crate::snapshot::chunks(snapshot, id) {
            let record = FutureRecord::to(&self.topic)
                .partition(partition as i32)
                .key(&key)
                .payload(&chunk);
            futures::executor::block_on(
                self.producer
                    .send(record, rdkafka::util::Timeout::After(self.cfg.timeout)),
            )
            .map_err(|(e, _)| e.to_string())?;
        }
        Ok(())
    }
}

/// Decides a polled batch: every command is handed to its worker first (they decide
/// pipelined), then each outcome is awaited, and a command whose append lost to another
/// writer is decided again. `Err` when one stays undecidable: nothing of the batch is
/// committed, and the next owner (or this one after a restart) decides it again.
fn decide(
    engine: &Engine,
    batch: &[OwnedMessage],
    stop: &AtomicBool,
) -> Result<Vec<(i32, i64, OutcomeRecord)>, CommandError> {
    let mut outs = Vec::with_capacity(batch.len());
    let mut submitted = Vec::with_capacity(batch.len());
    for m in batch {
        let record = m
            .payload()
            .ok_or_else(|| "an empty record".to_owned())
            .and_then(|v| serde_json::from_slice::<CommandRecord>(v).map_err(|e| e.to_string()));
        match record {
            Ok(r) => {
                let p = engine.submit_blocking(r.command.clone(), r.meta.clone());
                submitted.push((m, r, p));
            }
            Err(e) => outs.push((
                m.partition(),
                m.offset(),
                OutcomeRecord {
                    command_id: String::new(),
                    outcome: None,
                    error: Some(("bad_command".into(), 400, e, None)),
                },
            )),
        }
    }
    for (m, r, p) in submitted {
        let mut result = p.and_then(|p| p.wait());
        let mut attempts = 1;
        while matches!(result, Err(CommandError::Unavailable(_)))
            && attempts < MAX_ATTEMPTS
            && !stop.load(Ordering::Acquire)
        {
            attempts += 1;
            std::thread::sleep(Duration::from_millis(50 * u64::from(attempts)));
            result = engine.execute_blocking(r.command.clone(), r.meta.clone());
        }
        let command_id = r.meta.command_id.unwrap_or_default();
        let out = match result {
            Ok(o) => OutcomeRecord {
                command_id,
                outcome: Some(serde_json::to_value(&o).expect("serialisable")),
                error: None,
            },
            Err(CommandError::Unavailable(e)) => {
                tracing::warn!(command = %command_id, error = %e, "command not decided; it stays uncommitted");
                return Err(CommandError::Unavailable(e));
            }
            Err(e) => {
                let field = match &e {
                    CommandError::Refused(d) => d.field.clone(),
                    CommandError::Unavailable(_) => None,
                };
                OutcomeRecord {
                    command_id,
                    outcome: None,
                    error: Some((e.code().into(), e.status(), e.to_string(), field)),
                }
            }
        };
        outs.push((m.partition(), m.offset(), out));
    }
    Ok(outs)
}

/// Publishes every outcome of a batch on the command's partition of the outcomes topic, waits
/// until all are delivered, and only then commits, per partition, the offset after the
/// batch's last command.
fn publish_and_commit(
    consumer: &BaseConsumer,
    producer: &FutureProducer,
    commands: &str,
    outcomes: &str,
    outs: &[(i32, i64, OutcomeRecord)],
) -> Result<(), CommandError> {
    let mut deliveries = Vec::with_capacity(outs.len());
    let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    for (partition, offset, out) in outs {
        let value = serde_json::to_vec(out).expect("serialisable");
        let record = FutureRecord::to(outcomes)
            .partition(*partition)
            .key(out.command_id.as_bytes())
            .payload(&value);
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| kafka_err("cannot publish an outcome")(e))?,
        );
        let n = next.entry(*partition).or_default();
        *n = (*n).max(offset + 1);
    }
    for d in deliveries {
        match futures::executor::block_on(d) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(kafka_err("cannot publish an outcome")(e)),
            Err(_) => return Err(CommandError::unavailable("an outcome was not delivered")),
        }
    }
    if next.is_empty() {
        return Ok(());
    }
    let mut commit = TopicPartitionList::new();
    for (partition, offset) in next {
        commit
            .add_partition_offset(commands, partition, Offset::Offset(offset))
            .map_err(kafka_err("bad offset"))?;
    }
    consumer
        .commit(&commit, CommitMode::Sync)
        .map_err(kafka_err("cannot commit the commands' offsets"))
}

/// The partitions of the commands topic assigned to this member, sorted.
fn assigned(consumer: &BaseConsumer) -> Vec<u32> {
    let mut v: Vec<u32> = consumer
        .assignment()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| e.partition() as u32)
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v.dedup();
    v
}
