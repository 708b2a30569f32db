//! The Kafka backend: each annals topic is a Kafka topic (`<prefix><name>`) with the same
//! partitions, each record one event envelope (the canonical Avro bytes the hash covers),
//! keyed by tenant, with readable headers (`annals.event_type`, `annals.tenant`,
//! `annals.stream`, `annals.seq`; can be turned off) and the Kafka timestamp set to
//! `recorded_at`.
//!
//! # Exactly one chain per partition, without Kafka transactions
//!
//! Kafka offsets are not `seq`: a producer retry or a second writer (a zombie that still
//! thinks it owns the partition) can put records in a partition that do not belong to its
//! chain. One deterministic rule decides which records do, and every reader applies it:
//!
//! > The event with seq `n` is the record at the **lowest offset** that has seq `n`, a
//! > `prev_hash` equal to the hash of event `n - 1` (the genesis value for `n = 0`), and a hash
//! > that recomputes.
//!
//! Every other record is *off the chain*: a redelivered copy (same seq, same hash) or a fork
//! (another writer's record). Readers skip them, so no reader applies both sides of a fork,
//! and `annals verify` reports them.
//!
//! A writer ([`writer`]) acknowledges a batch only when the broker placed it at the offsets
//! right after the last record the writer knows to be on the chain. Then nothing can precede
//! it at a lower offset, so by the rule it *is* the chain: an acknowledged event can never
//! be superseded. If another record got in between, the writer re-reads the partition from
//! its last known record, keeps what the rule says, and answers
//! [`LogError::Superseded`](super::LogError::Superseded) for batches that lost: the caller
//! re-decides against the new state. The idempotent producer (`enable.idempotence`,
//! `acks=all`) keeps a single writer's own retries from leaving copies; without it a copy is
//! skipped by the rule (same seq, same hash) and the writer recognises its own event on the
//! chain by its hash.
//!
//! Reading from seq `s` needs the hash of event `s - 1`. When the record at offset `s - 1`
//! has seq `s - 1`, no record before it is off the chain (each event takes an offset, and
//! the events before `s - 1` need all `s - 1` offsets before it), so the reader starts there.
//! Otherwise it reads from offset 0.

pub(crate) mod partition;
pub(crate) mod reader;
pub mod verify;
mod writer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use super::LogError;
use crate::chain::{self, Hash};
use crate::envelope::ChainFields;

/// Largest record value the topics accept: an envelope with the largest payload, and room.
const MAX_RECORD_BYTES: usize = 4 << 20;

/// How annals reaches a Kafka-protocol broker (`[log.kafka]`).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Prefix of the Kafka topic names (default `annals.`: the `events` topic is `annals.events`).
    pub topic_prefix: String,
    /// Replication factor of the topics annals creates.
    pub replication_factor: i32,
    /// How long metadata, admin and point reads may take before they fail.
    pub timeout: Duration,
    /// Whether writers use the idempotent producer (default). Without it a retried send can
    /// leave a copy, which the chain rule skips; sends are then one at a time per connection,
    /// to keep their order. (tansu 0.6.0 stops serving produce requests when an idempotent
    /// producer resumes after a broker restart: turn it off there.)
    pub idempotence: bool,
    /// Whether records carry the readable headers (default). tansu 0.6.0 reads records with
    /// headers about 20 times slower than without (measured here).
    pub headers: bool,
    /// More librdkafka properties for every client (security settings, tuning).
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic_prefix: "annals.".into(),
            replication_factor: 1,
            timeout: Duration::from_secs(10),
            idempotence: true,
            headers: true,
            properties: BTreeMap::new(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "annals")
            .set("log_level", "3");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer that reads assigned partitions and never commits offsets.
    pub fn reader_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", "annals-readers")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            // Brokers wait this long for more data even when some is ready.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", MAX_RECORD_BYTES.to_string())
            .set("check.crcs", "true");
        c
    }

    /// The writers' producer: acknowledged by all in-sync replicas, idempotent unless turned off.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        if self.idempotence {
            c.set("enable.idempotence", "true");
        } else {
            c.set("enable.idempotence", "false")
                .set("max.in.flight.requests.per.connection", "1");
        }
        c.set("acks", "all")
            .set("linger.ms", "2")
            .set("message.max.bytes", MAX_RECORD_BYTES.to_string())
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "60000");
        c
    }
}

/// A connection to the cluster: metadata, topic admin, point reads and (for writing) the
/// producer every partition writer shares.
pub(crate) struct Client {
    pub cfg: KafkaConfig,
    /// For metadata, watermarks and point reads (one at a time).
    meta: Mutex<BaseConsumer>,
    producer: Option<FutureProducer>,
}

impl Client {
    pub fn connect(cfg: KafkaConfig, writable: bool) -> Result<Arc<Client>, LogError> {
        let unreachable = |e: KafkaError| LogError::kafka(&cfg.brokers, "cannot connect", e);
        let meta: BaseConsumer = cfg.reader_config().create().map_err(unreachable)?;
        // Fails fast (and clearly) when nothing answers at the address.
        meta.fetch_metadata(None, cfg.timeout)
            .map_err(|e| LogError::kafka(&cfg.brokers, "cannot read the cluster's metadata", e))?;
        let producer = if writable {
            Some(cfg.producer_config().create().map_err(unreachable)?)
        } else {
            None
        };
        Ok(Arc::new(Client {
            cfg,
            meta: Mutex::new(meta),
            producer,
        }))
    }

    pub fn producer(&self) -> Option<&FutureProducer> {
        self.producer.as_ref()
    }

    pub fn kafka_topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.cfg.topic_prefix)
    }

    pub fn error(&self, context: impl Into<String>, e: KafkaError) -> LogError {
        LogError::kafka(&self.cfg.brokers, context, e)
    }

    /// The annals topics in the cluster (those with the prefix) and their partition counts.
    pub fn topics(&self) -> Result<BTreeMap<String, u32>, LogError> {
        let meta = self.meta.lock().expect("kafka metadata lock");
        let md = meta
            .fetch_metadata(None, self.cfg.timeout)
            .map_err(|e| self.error("cannot list topics", e))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .filter_map(|t| {
                let name = t.name().strip_prefix(&self.cfg.topic_prefix)?;
                // `_…` names are side topics (commands, outcomes), not chains.
                (super::check_name(name).is_ok()
                    && !name.starts_with('_')
                    && !t.partitions().is_empty())
                .then(|| (name.to_owned(), t.partitions().len() as u32))
            })
            .collect())
    }

    /// The partitions of side topic `name` (`None`: it does not exist).
    pub fn side_topic_partitions(&self, name: &str) -> Result<Option<u32>, LogError> {
        let full = self.kafka_topic(name);
        let meta = self.meta.lock().expect("kafka metadata lock");
        let md = meta
            .fetch_metadata(Some(&full), self.cfg.timeout)
            .map_err(|e| self.error(format!("cannot read the metadata of {full}"), e))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == full && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as u32))
    }

    /// Creates the topic with `partitions` partitions and configs that keep every event
    /// (no time limit, no size limit, no compaction), then waits until the cluster shows it.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        self.create_topic_keeping(topic, partitions, None)
    }

    /// [`create_topic`](Self::create_topic), keeping records for `retention` only if given.
    pub fn create_topic_keeping(
        &self,
        topic: &str,
        partitions: u32,
        retention: Option<std::time::Duration>,
    ) -> Result<(), LogError> {
        let name = self.kafka_topic(topic);
        let admin: AdminClient<DefaultClientContext> = self
            .cfg
            .client_config()
            .create()
            .map_err(|e| self.error("cannot create an admin client", e))?;
        let max = MAX_RECORD_BYTES.to_string();
        let forever = retention
            .map_or(i64::MAX, |r| {
                i64::try_from(r.as_millis()).unwrap_or(i64::MAX)
            })
            .to_string();
        let new = NewTopic::new(
            &name,
            partitions as i32,
            TopicReplication::Fixed(self.cfg.replication_factor),
        )
        .set("cleanup.policy", "delete")
        // "Forever" as the largest time rather than Kafka's -1: some Kafka-protocol brokers
        // (tansu 0.6.0) read -1 literally and delete every record.
        .set("retention.ms", &forever)
        .set("max.message.bytes", &max)
        .set("message.timestamp.type", "CreateTime");
        let opts = AdminOptions::new().operation_timeout(Some(self.cfg.timeout));
        let results = futures::executor::block_on(admin.create_topics([&new], &opts))
            .map_err(|e| self.error(format!("cannot create topic {name}"), e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(self.error(
                        format!("cannot create topic {t}"),
                        KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        let deadline = std::time::Instant::now() + self.cfg.timeout;
        loop {
            if self.side_topic_partitions(topic)? == Some(partitions) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(LogError::kafka_detail(
                    &self.cfg.brokers,
                    format!("topic {name} was created but does not show {partitions} partitions"),
                    "the cluster's metadata did not catch up in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (low, high) offsets of a partition.
    pub fn watermarks(&self, kafka_topic: &str, partition: u32) -> Result<(i64, i64), LogError> {
        let meta = self.meta.lock().expect("kafka metadata lock");
        meta.fetch_watermarks(kafka_topic, partition as i32, self.cfg.timeout)
            .map_err(|e| {
                self.error(
                    format!("cannot read the offsets of {kafka_topic}/{partition}"),
                    e,
                )
            })
    }

    /// The first offset whose timestamp is at or after `millis` (`None`: no such record).
    pub fn offset_for_time(
        &self,
        kafka_topic: &str,
        partition: u32,
        millis: i64,
    ) -> Result<Option<i64>, LogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(kafka_topic, partition as i32, Offset::Offset(millis))
            .map_err(|e| self.error("bad offset request", e))?;
        let meta = self.meta.lock().expect("kafka metadata lock");
        let found = meta.offsets_for_times(tpl, self.cfg.timeout).map_err(|e| {
            self.error(
                format!("cannot look up a time in {kafka_topic}/{partition}"),
                e,
            )
        })?;
        Ok(found.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        }))
    }

    /// Reads records `[from, to)` of a partition, handing each (offset, value) to `each`.
    pub fn read_range(
        &self,
        kafka_topic: &str,
        partition: u32,
        from: i64,
        to: i64,
        mut each: impl FnMut(i64, &[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        if from >= to {
            return Ok(());
        }
        let consumer: BaseConsumer = self
            .cfg
            .reader_config()
            .create()
            .map_err(|e| self.error("cannot create a consumer", e))?;
        assign(&consumer, kafka_topic, partition, from)
            .map_err(|e| self.error("cannot read", e))?;
        let mut next = from;
        while next < to {
            match poll_record(&consumer, self.cfg.timeout).map_err(|e| {
                self.error(
                    format!("cannot read {kafka_topic}/{partition} at offset {next}"),
                    e,
                )
            })? {
                Polled::Record(m) => {
                    next = m.offset() + 1;
                    each(m.offset(), m.payload().unwrap_or_default())?;
                }
                Polled::End => {
                    return Err(LogError::kafka_detail(
                        &self.cfg.brokers,
                        format!("cannot read {kafka_topic}/{partition}"),
                        format!("the partition ended at offset {next}, before offset {to}"),
                    ));
                }
                Polled::Nothing => {
                    return Err(LogError::kafka_detail(
                        &self.cfg.brokers,
                        format!("cannot read {kafka_topic}/{partition}"),
                        format!(
                            "no record arrived for offset {next} within {:?}",
                            self.cfg.timeout
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Assigns `consumer` the one partition, starting at `offset`.
pub(crate) fn assign(
    consumer: &BaseConsumer,
    kafka_topic: &str,
    partition: u32,
    offset: i64,
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(kafka_topic, partition as i32, Offset::Offset(offset))?;
    consumer.assign(&tpl)
}

/// What one poll brought.
pub(crate) enum Polled<'a> {
    Record(BorrowedMessage<'a>),
    /// The consumer reached the end of the partition.
    End,
    /// Nothing within the wait.
    Nothing,
}

pub(crate) fn poll_record(
    consumer: &BaseConsumer,
    wait: Duration,
) -> Result<Polled<'_>, KafkaError> {
    match consumer.poll(wait) {
        None => Ok(Polled::Nothing),
        Some(Ok(m)) => Ok(Polled::Record(m)),
        Some(Err(KafkaError::PartitionEOF(_))) => Ok(Polled::End),
        Some(Err(e)) => Err(e),
    }
}

/// A partition's chain as the rule in the module docs defines it: the seq and hash the next
/// event must link to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain {
    pub next_seq: u64,
    pub last_hash: Hash,
}

/// What the rule says about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next event of the chain.
    Next,
    /// Not on the chain: an earlier seq (a copy or a fork), or the right seq linked to
    /// something else (a fork).
    Off,
}

impl Chain {
    pub fn genesis() -> Chain {
        Chain {
            next_seq: 0,
            last_hash: chain::GENESIS,
        }
    }

    /// Applies the rule to a record's value, advancing the chain when it is the next event.
    /// Errors (damage, not forks): the value is not an envelope, names another partition, or
    /// has a hash that does not recompute.
    pub fn judge<'v>(
        &mut self,
        partition: u32,
        value: &'v [u8],
    ) -> Result<(Verdict, ChainFields<'v>), (&'static str, String)> {
        let f = ChainFields::decode(value).map_err(|e| {
            (
                "decode",
                format!("the record is not an annals envelope: {e}"),
            )
        })?;
        if f.partition != partition {
            return Err((
                "partition",
                format!("the event says partition {}", f.partition),
            ));
        }
        let n = value.len();
        if chain::event_hash(f.partition, f.seq, f.prev_hash, &value[..n - 32]) != *f.hash {
            return Err((
                "hash",
                "the stored hash is not the hash of the event's bytes: the event was altered"
                    .into(),
            ));
        }
        if f.seq == self.next_seq && *f.prev_hash == self.last_hash {
            self.next_seq += 1;
            self.last_hash = *f.hash;
            Ok((Verdict::Next, f))
        } else {
            Ok((Verdict::Off, f))
        }
    }
}
