//! The log: topics, partitions, one writer thread per partition with group commit, readers that
//! follow appends, durable named consumer positions. Two backends behind one API: the
//! embedded segmented log ([`embedded`], the default) and Kafka ([`kafka`]); everything above
//! this module works on either.
//!
//! Embedded layout under the data dir: `log/<topic>/topic.json`, `log/<topic>/<partition>/` with segment
//! files and indexes (see [`segment`]) and a `LOCK` file held by the one process that writes,
//! and `log/<topic>/positions/<name>.json` for consumer positions.
//!
//! Guarantees: an append is acknowledged only after its bytes are fsynced; `seq` is contiguous
//! from 0 per partition; readers see only acknowledged events; on open a torn tail (the bytes of
//! a group commit that was never acknowledged) is cut off and kept aside in a `.torn` file, while
//! damage anywhere else refuses to open and points at `annals verify`.

mod append;
pub mod embedded;
pub mod kafka;
mod partition;
mod positions;
mod reader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use append::PendingAppend;
pub use embedded::segment;
pub use kafka::KafkaConfig;
pub use partition::{Appended, Head, Partition, SegmentInfo};
pub use reader::Reader;

use crate::envelope::InvalidEvent;

/// Tunables of the embedded log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls over when the next record would take it past this size.
    pub segment_bytes: u64,
    /// An index entry is written every this many bytes of segment data.
    pub index_interval_bytes: u64,
    /// A group commit gathers pending appends up to this many bytes before one fsync.
    pub max_batch_bytes: usize,
    /// Pending append requests per partition before callers wait (backpressure).
    pub queue_depth: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            index_interval_bytes: 4096,
            max_batch_bytes: 4 << 20,
            queue_depth: 256,
        }
    }
}

/// Errors of the log, with what to do about them.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(
        "topic {topic} partition {partition} is damaged at seq {seq}: {detail}; run `annals verify` for a full report"
    )]
    Corrupt {
        topic: String,
        partition: u32,
        seq: u64,
        detail: String,
    },
    #[error(transparent)]
    InvalidEvent(#[from] InvalidEvent),
    #[error("{path} is locked by another annals process; stop it or use another --data-dir")]
    Locked { path: PathBuf },
    #[error("no annals log at {path}: run `annals demo` to create one, or pass --data-dir")]
    NoLog { path: PathBuf },
    #[error("no topic `{0}` in this log")]
    NoTopic(String),
    #[error("no partition {partition} in topic {topic} (it has {partitions})")]
    NoPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("topic `{topic}` exists with {have} partitions, not {want}; partitions cannot change")]
    PartitionCount { topic: String, have: u32, want: u32 },
    #[error("bad topic or consumer name `{0}`: use 1-100 characters among a-z A-Z 0-9 . _ -")]
    BadName(String),
    #[error(
        "topic {topic} partition {partition} stopped writing after an I/O error ({detail}); restart the process, recovery on open keeps every acknowledged event"
    )]
    Poisoned {
        topic: String,
        partition: u32,
        detail: String,
    },
    #[error("the log was opened read-only")]
    ReadOnly,
    #[error("the partition writer has shut down")]
    Closed,
    #[error(
        "{context} (Kafka at {brokers}): {detail}; check that the broker runs (`scripts/services up kafka`) and keeps up, and [log.kafka] brokers"
    )]
    Kafka {
        brokers: String,
        context: String,
        detail: String,
    },
    #[error(
        "topic {topic} partition {partition}: another writer appended seq {seq} first (two writers for one partition); this batch was not acknowledged, decide it again against the new state"
    )]
    Superseded {
        topic: String,
        partition: u32,
        seq: u64,
    },
}

impl LogError {
    /// Damage found at `seq` of a partition.
    pub(crate) fn corrupt(
        topic: &str,
        partition: u32,
        seq: u64,
        detail: impl Into<String>,
    ) -> LogError {
        LogError::Corrupt {
            topic: topic.to_owned(),
            partition,
            seq,
            detail: detail.into(),
        }
    }

    pub(crate) fn kafka(
        brokers: &str,
        context: impl Into<String>,
        e: rdkafka::error::KafkaError,
    ) -> LogError {
        Self::kafka_detail(brokers, context, e.to_string())
    }

    pub(crate) fn kafka_detail(
        brokers: &str,
        context: impl Into<String>,
        detail: impl Into<String>,
    ) -> LogError {
        LogError::Kafka {
            brokers: brokers.to_owned(),
            context: context.into(),
            detail: detail.into(),
        }
    }

    /// The same error again, for each caller of a failed group (I/O errors keep their kind
    /// and text).
    pub(crate) fn duplicate(&self) -> LogError {
        match self {
            LogError::Io { context, source } => LogError::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            LogError::Kafka {
                brokers,
                context,
                detail,
            } => LogError::Kafka {
                brokers: brokers.clone(),
                context: context.clone(),
                detail: detail.clone(),
            },
            LogError::Corrupt {
                topic,
                partition,
                seq,
                detail,
            } => LogError::Corrupt {
                topic: topic.clone(),
                partition: *partition,
                seq: *seq,
                detail: detail.clone(),
            },
            other => LogError::Io {
                context: other.to_string(),
                source: std::io::Error::other("the append was not acknowledged"),
            },
        }
    }
}

impl LogError {
    /// The error of a failed read of `path`; the message is only formatted if it happens
    /// (this sits on per-record paths).
    pub(crate) fn reading(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            context: format!("cannot read {}", path.display()),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
        let context = context.into();
        move |source| LogError::Io { context, source }
    }
}

/// Whether this handle may write (and so recovers torn tails and holds the partition locks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
}

/// A topic: a fixed number of partitions.
pub struct Topic {
    name: String,
    dir: PathBuf,
    partitions: Vec<Partition>,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    pub fn partition(&self, id: u32) -> Result<&Partition, LogError> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| LogError::NoPartition {
                topic: self.name.clone(),
                partition: id,
                partitions: self.partitions.len() as u32,
            })
    }

    /// The partition a key (by default the tenant) belongs to.
    pub fn partition_for(&self, key: &str) -> &Partition {
        &self.partitions
            [crate::partitioner::partition_for(key, self.partitions.len() as u32) as usize]
    }

    /// The stored position of consumer `name`: partition → next seq to read (absent: 0).
    pub fn position(&self, name: &str) -> Result<BTreeMap<u32, u64>, LogError> {
        positions::load(&self.dir, name)
    }

    /// Durably stores the position of consumer `name` (atomic: the old or the new, never a mix).
    pub fn commit_position(
        &self,
        name: &str,
        position: &BTreeMap<u32, u64>,
    ) -> Result<(), LogError> {
        positions::store(&self.dir, name, position)
    }
}

/// The log: the embedded one under a data dir, or one on a Kafka cluster.
pub struct Log {
    /// Embedded: `<data>/log`, holding the topics. Kafka: `<data>/kafka`, holding only the
    /// named consumer positions.
    dir: PathBuf,
    cfg: LogConfig,
    mode: Mode,
    backend: Backend,
    topics: Mutex<BTreeMap<String, Arc<Topic>>>,
}

enum Backend {
    Embedded,
    Kafka(Arc<kafka::Client>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TopicMeta {
    partitions: u32,
}

impl Log {
    /// Opens (creating if needed) the log under `data_dir` for writing, recovering every partition.
    pub fn open(data_dir: &Path, cfg: LogConfig) -> Result<Log, LogError> {
        let dir = data_dir.join("log");
        std::fs::create_dir_all(&dir)
            .map_err(LogError::io(format!("cannot create {}", dir.display())))?;
        Self::open_existing(dir, cfg, Mode::ReadWrite)
    }

    /// Opens an existing log for reading only: takes no locks and changes no file.
    pub fn open_read_only(data_dir: &Path) -> Result<Log, LogError> {
        let dir = data_dir.join("log");
        if !dir.is_dir() {
            return Err(LogError::NoLog {
                path: data_dir.to_path_buf(),
            });
        }
        Self::open_existing(dir, LogConfig::default(), Mode::ReadOnly)
    }

    /// Opens the log kept on a Kafka cluster: every annals topic there (those with the
    /// prefix), each partition's chain found (see [`kafka`]). `data_dir` keeps the named
    /// consumer positions. Fails with what to check when the cluster does not answer.
    pub fn open_kafka(
        data_dir: &Path,
        kafka: KafkaConfig,
        cfg: LogConfig,
        mode: Mode,
    ) -> Result<Log, LogError> {
        let client = kafka::Client::connect(kafka, mode == Mode::ReadWrite)?;
        let log = Log {
            dir: data_dir.join("kafka"),
            cfg,
            mode,
            backend: Backend::Kafka(client.clone()),
            topics: Mutex::new(BTreeMap::new()),
        };
        for (name, partitions) in client.topics()? {
            log.open_topic(&name, partitions)?;
        }
        Ok(log)
    }

    /// Kafka only: creates (if missing) a plain Kafka topic beside the log's topics, for what
    /// travels through Kafka without being a chain (the commands topic, command outcomes). Its
    /// name starts with `_`, so it is never listed as a topic of the log. A topic created here
    /// keeps its records for `retention` (when given; otherwise for ever). Returns its Kafka
    /// name and the connection settings.
    pub fn kafka_side_topic(
        &self,
        name: &str,
        partitions: u32,
        retention: Option<std::time::Duration>,
    ) -> Result<(String, KafkaConfig), LogError> {
        let Backend::Kafka(client) = &self.backend else {
            return Err(LogError::kafka_detail(
                "",
                format!("cannot create side topic {name}"),
                "the log is not on Kafka ([log] backend = \"kafka\")",
            ));
        };
        check_name(name)?;
        if !name.starts_with('_') {
            return Err(LogError::BadName(name.to_owned()));
        }
        if client.side_topic_partitions(name)? != Some(partitions) {
            client.create_topic_keeping(name, partitions, retention)?;
        }
        Ok((client.kafka_topic(name), client.cfg.clone()))
    }

    /// `embedded` or `kafka`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Embedded => "embedded",
            Backend::Kafka(_) => "kafka",
        }
    }

    /// Where the log lives: its folder, or the Kafka brokers.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Embedded => self.dir.display().to_string(),
            Backend::Kafka(c) => format!("kafka://{}", c.cfg.brokers),
        }
    }

    fn open_existing(dir: PathBuf, cfg: LogConfig, mode: Mode) -> Result<Log, LogError> {
        let log = Log {
            dir,
            cfg,
            mode,
            backend: Backend::Embedded,
            topics: Mutex::new(BTreeMap::new()),
        };
        for entry in std::fs::read_dir(&log.dir)
            .map_err(LogError::io(format!("cannot list {}", log.dir.display())))?
        {
            let entry = entry.map_err(LogError::io("cannot list the log folder"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("topic.json").is_file() {
                log.open_embedded_topic(&name)?;
            }
        }
        Ok(log)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The topics, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .lock()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.topics
            .lock()
            .expect("topics lock")
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::NoTopic(name.to_owned()))
    }

    /// Creates a topic with `partitions` partitions, or returns it if it exists with that many.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<Arc<Topic>, LogError> {
        check_name(name)?;
        if let Ok(t) = self.topic(name) {
            let have = t.partitions.len() as u32;
            return if have == partitions {
                Ok(t)
            } else {
                Err(LogError::PartitionCount {
                    topic: name.to_owned(),
                    have,
                    want: partitions,
                })
            };
        }
        if self.mode == Mode::ReadOnly {
            return Err(LogError::ReadOnly);
        }
        if partitions == 0 || partitions > 4096 {
            return Err(LogError::PartitionCount {
                topic: name.to_owned(),
                have: 0,
                want: partitions,
            });
        }
        if let Backend::Kafka(client) = &self.backend {
            client.create_topic(name, partitions)?;
            let have = client.topics()?.get(name).copied().unwrap_or(partitions);
            if have != partitions {
                return Err(LogError::PartitionCount {
                    topic: name.to_owned(),
                    have,
                    want: partitions,
                });
            }
            return self.open_topic(name, partitions);
        }
        let tdir = self.dir.join(name);
        std::fs::create_dir_all(&tdir)
            .map_err(LogError::io(format!("cannot create {}", tdir.display())))?;
        for p in 0..partitions {
            let pdir = tdir.join(p.to_string());
            std::fs::create_dir_all(&pdir)
                .map_err(LogError::io(format!("cannot create {}", pdir.display())))?;
        }
        let meta = serde_json::to_vec_pretty(&TopicMeta { partitions }).expect("serialisable");
        embedded::partition::write_atomically(&tdir.join("topic.json"), &meta)?;
        embedded::partition::sync_dir(&self.dir)?;
        self.open_embedded_topic(name)
    }

    /// Opens a topic of the Kafka backend.
    fn open_topic(&self, name: &str, count: u32) -> Result<Arc<Topic>, LogError> {
        let Backend::Kafka(client) = &self.backend else {
            return self.open_embedded_topic(name);
        };
        let mut partitions = Vec::with_capacity(count as usize);
        for p in 0..count {
            partitions.push(kafka::partition::open(
                client, name, p, &self.cfg, self.mode,
            )?);
        }
        Ok(self.add_topic(name, partitions))
    }

    fn add_topic(&self, name: &str, partitions: Vec<Partition>) -> Arc<Topic> {
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            dir: self.dir.join(name),
            partitions,
        });
        self.topics
            .lock()
            .expect("topics lock")
            .insert(name.to_owned(), topic.clone());
        topic
    }

    fn open_embedded_topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        let tdir = self.dir.join(name);
        let meta_path = tdir.join("topic.json");
        let bytes = std::fs::read(&meta_path)
            .map_err(LogError::io(format!("cannot read {}", meta_path.display())))?;
        let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
            topic: name.to_owned(),
            partition: 0,
            seq: 0,
            detail: format!("{} is not valid ({e})", meta_path.display()),
        })?;
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            partitions.push(embedded::partition::open(
                name,
                p,
                &tdir.join(p.to_string()),
                &self.cfg,
                self.mode,
            )?);
        }
        Ok(self.add_topic(name, partitions))
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LogError::BadName(name.to_owned()))
    }
}
