//! The analytics read model (`analytics`): append-only tables for analysts — every event's
//! envelope, signals, usage, invoice lines, policy decisions and the deployment timeline —
//! stored as Parquet files queried with DataFusion (embedded) or in ClickHouse (distributed).
//!
//! Owns: the tables and the pure event → rows mapping ([`model`]), the two stores
//! ([`parquet`], [`clickhouse`]), catching a store up with the log, its status, and rebuilds
//! into shadow tables swapped in when caught up, `annals sql` ([`Analytics::query`]), and
//! which rows a retention run removes ([`retention`]).
//!
//! Exactly once, without transactions: every batch of one partition's events `[first, next)` is
//! written with its position in a way a retry cannot double —
//! - Parquet: the batch's files are written in a hidden folder renamed to `<first>-<next>` in
//!   one step; the position is the highest `next` of the committed folders.
//! - ClickHouse: `ReplacingMergeTree` tables whose sort key ends with (log_partition, seq), so a
//!   re-inserted row replaces its twin, plus an `insert_deduplication_token` per batch and table;
//!   the position row is inserted after the batch's rows. A crash between the two re-applies the
//!   batch, which changes nothing.

pub mod clickhouse;
pub mod model;
pub mod parquet;
pub mod retention;

use std::collections::BTreeMap;

use annals_events::{Envelope, EnvelopeRef, Topic};
use annals_schemas::Registry;
use futures::StreamExt;
use serde::Serialize;

use crate::runtime::{CatchUp, DomainEvent, ProjectionError};
pub use model::{Cell, Column, ColumnType, RowSet, TABLES, Table};

/// The projection's name (positions, status, `annals projections rebuild analytics`).
pub const NAME: &str = "analytics";

/// Events per analytics batch when catching up: Parquet and ClickHouse both prefer few large
/// writes to many small ones.
pub const DEFAULT_BATCH: usize = 20_000;

/// Failures of the analytics stores.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("{0}")]
    Store(String),
    /// The store could not be reached (the caller may retry later).
    #[error("{0}")]
    Unavailable(String),
    /// The query was refused or failed: the user's SQL.
    #[error("{0}")]
    Query(String),
}

impl From<annals_events::LogError> for AnalyticsError {
    fn from(e: annals_events::LogError) -> Self {
        AnalyticsError::Projection(ProjectionError::Log(e))
    }
}

/// A batch ready to store: one partition's events `[first, next)` as rows.
#[derive(Debug)]
pub struct Batch {
    pub partition: u32,
    pub first: u64,
    pub next: u64,
    pub last_recorded_at: i64,
    pub rows: RowSet,
}

/// Where a partition stands in a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Position {
    pub next_seq: u64,
    pub last_recorded_at: Option<i64>,
}

/// How `annals sql` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// An analytics store.
pub enum Analytics {
    Parquet(parquet::ParquetStore),
    ClickHouse(Box<clickhouse::ClickHouseStore>),
}

impl Analytics {
    pub fn kind(&self) -> &'static str {
        match self {
            Analytics::Parquet(_) => "parquet",
            Analytics::ClickHouse(_) => "clickhouse",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Analytics::Parquet(s) => s.describe(),
            Analytics::ClickHouse(s) => s.describe(),
        }
    }

    /// Creates the tables if missing.
    pub async fn prepare(&self) -> Result<(), AnalyticsError> {
        match self {
            Analytics::Parquet(s) => s.prepare(),
            Analytics::ClickHouse(s) => s.prepare().await,
        }
    }

    pub async fn positions(&self) -> Result<BTreeMap<u32, Position>, AnalyticsError> {
        match self {
            Analytics::Parquet(s) => s.positions(),
            Analytics::ClickHouse(s) => s.positions().await,
        }
    }

    /// Stores a batch and its position so that storing it again changes nothing.
    pub async fn write(&self, batch: Batch) -> Result<(), AnalyticsError> {
        match self {
            Analytics::Parquet(s) => s.write(batch),
            Analytics::ClickHouse(s) => s.write(batch).await,
        }
    }

    /// Rows per table (deduplicated).
    pub async fn row_counts(&self) -> Result<BTreeMap<String, u64>, AnalyticsError> {
        match self {
            Analytics::Parquet(s) => s.row_counts(),
            Analytics::ClickHouse(s) => s.row_counts().await,
        }
    }

    /// Runs an analyst's query and renders its result.
    pub async fn query(&self, sql: &str, format: Format) -> Result<String, AnalyticsError> {
        match self {
            Analytics::Parquet(s) => s.query(sql, format).await,
            Analytics::ClickHouse(s) => s.query(sql, format).await,
        }
    }

    /// The same store, writing into empty shadow tables (for a rebuild).
    async fn shadow(&self) -> Result<Analytics, AnalyticsError> {
        Ok(match self {
            Analytics::Parquet(s) => Analytics::Parquet(s.shadow()?),
            Analytics::ClickHouse(s) => {
                let shadow = s.shadow();
                shadow.clear().await?;
                Analytics::ClickHouse(Box::new(shadow))
            }
        })
    }

    /// Makes the shadow tables the live ones.
    async fn swap_in(&self, shadow: Analytics) -> Result<(), AnalyticsError> {
        match (self, shadow) {
            (Analytics::Parquet(s), Analytics::Parquet(new)) => s.swap_in(new),
            (Analytics::ClickHouse(s), Analytics::ClickHouse(new)) => s.swap_in(*new).await,
            _ => Err(AnalyticsError::Store("shadow of another kind".into())),
        }
    }
}

/// Maps a batch of one partition's events (seq order, no gaps) to rows, sorted by each table's
/// `order_by` if `sort` (Parquet files are written in that order; ClickHouse sorts itself).
pub fn rows_of_batch(
    events: &[Envelope],
    registry: &Registry,
    sort: bool,
) -> Result<RowSet, AnalyticsError> {
    let mut rows = RowSet::default();
    for env in events {
        add_rows(&env.as_ref(), registry, &mut rows)?;
    }
    if sort {
        rows.sort();
    }
    Ok(rows)
}

/// Adds the rows of one stored event.
fn add_rows(
    env: &EnvelopeRef<'_>,
    registry: &Registry,
    rows: &mut RowSet,
) -> Result<(), AnalyticsError> {
    let event = DomainEvent::decode(env, registry)?;
    model::rows_of(env, &event, rows).map_err(AnalyticsError::Store)
}

/// Reads the next batch of at most `batch` events below `head` and maps them to rows as they
/// are read, each event borrowed from the reader (no copy of it is kept).
fn map_next_batch(
    reader: &mut annals_events::Reader,
    head: u64,
    batch: usize,
    registry: &Registry,
    sort: bool,
) -> Result<Option<Batch>, AnalyticsError> {
    let first = reader.position();
    let mut rows = RowSet::default();
    let mut last = None;
    let mut read = 0;
    while read < batch && reader.position() < head {
        let Some(env) = reader.next_ref()? else { break };
        add_rows(&env, registry, &mut rows)?;
        last = Some((env.partition, env.seq + 1, env.recorded_at));
        read += 1;
    }
    let Some((partition, next, last_recorded_at)) = last else {
        return Ok(None);
    };
    if sort {
        rows.sort();
    }
    Ok(Some(Batch {
        partition,
        first,
        next,
        last_recorded_at,
        rows,
    }))
}

/// Applies every partition's events from the store's position to the log's head, in batches
/// of at most `batch` events. Partitions are caught up side by side: each batch is read, mapped
/// to rows and (for Parquet) encoded on a blocking thread, so the machine's cores share the work.
pub async fn catch_up(
    store: &Analytics,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, AnalyticsError> {
    store.prepare().await?;
    advance(store, topic, registry, batch).await
}

/// [`catch_up`] on a store already prepared (a follower prepares once, not every round).
pub async fn advance(
    store: &Analytics,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, AnalyticsError> {
    let started = std::time::Instant::now();
    let stored = store.positions().await?;
    let registry = std::sync::Arc::new(registry.clone());
    // Readers own their partition's state: the futures borrow nothing from the topic.
    let work: Vec<_> = topic
        .partitions()
        .iter()
        .map(|partition| {
            let from = stored.get(&partition.id()).map_or(0, |s| s.next_seq);
            (partition.reader(from), partition.head().next_seq)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(reader, head)| {
            catch_up_partition(store, reader, head, registry.clone(), batch.max(1))
        })
        .collect();
    // Parquet: as many partitions at once as there are cores (more only adds memory: measured
    // slower). ClickHouse: twice that, as the server does much of the work, and a partition
    // waiting for its inserts leaves a core to the others.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let at_once = match store {
        Analytics::Parquet(_) => cores,
        Analytics::ClickHouse(_) => 2 * cores,
    };
    let mut done = futures::stream::iter(work).buffer_unordered(at_once);
    let mut out = CatchUp::default();
    while let Some(d) = done.next().await {
        let d = d?;
        out.events += d.events;
        out.applied += d.applied;
        out.batches += d.batches;
    }
    // Small batches (a follower's) are merged once there are enough of them.
    if let Analytics::Parquet(s) = store {
        let s = s.clone();
        tokio::task::spawn_blocking(move || s.compact(DEFAULT_BATCH as u64 * 5))
            .await
            .map_err(|e| AnalyticsError::Store(format!("a compaction task failed: {e}")))??;
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

async fn catch_up_partition(
    store: &Analytics,
    mut reader: annals_events::Reader,
    head: u64,
    registry: std::sync::Arc<Registry>,
    batch: usize,
) -> Result<CatchUp, AnalyticsError> {
    let mut out = CatchUp::default();
    let mut from = reader.position();
    let sort = matches!(store, Analytics::Parquet(_));
    while from < head {
        let reg = registry.clone();
        let (back, mapped) = tokio::task::spawn_blocking(move || {
            let mapped = map_next_batch(&mut reader, head, batch, &reg, sort);
            (reader, mapped)
        })
        .await
        .map_err(|e| AnalyticsError::Store(format!("a mapping task failed: {e}")))?;
        reader = back;
        let Some(b) = mapped? else { break };
        let next = b.next;
        match store {
            Analytics::Parquet(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || s.write(b))
                    .await
                    .map_err(|e| AnalyticsError::Store(format!("a write task failed: {e}")))??;
            }
            Analytics::ClickHouse(_) => store.write(b).await?,
        }
        out.events += next - from;
        out.applied += next - from;
        out.batches += 1;
        from = next;
    }
    Ok(out)
}

/// Refills the tables from seq 0 into shadow tables while the live ones keep answering
/// queries, then swaps them in.
pub async fn rebuild(
    store: &Analytics,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, AnalyticsError> {
    let shadow = store.shadow().await?;
    let mut done = catch_up(&shadow, topic, registry, batch).await?;
    store.swap_in(shadow).await?;
    // What was appended while the shadow filled (a writer racing the swap may also have been
    // refused its position): catch the swapped-in tables up.
    let more = catch_up(store, topic, registry, batch).await?;
    done.events += more.events;
    done.applied += more.applied;
    done.batches += more.batches;
    done.seconds += more.seconds;
    Ok(done)
}

/// The analytics store's position, lag and rows, in the shape of the runtime's [`Status`].
///
/// [`Status`]: crate::runtime::Status
pub async fn status(store: &Analytics, topic: &Topic) -> Result<AnalyticsStatus, AnalyticsError> {
    store.prepare().await?;
    let stored = store.positions().await?;
    let mut partitions = Vec::new();
    for partition in topic.partitions() {
        let head = partition.head();
        let pos = stored.get(&partition.id()).copied().unwrap_or_default();
        let (lag_events, lag_seconds) =
            crate::runtime::partition_lag(partition, &head, pos.next_seq, pos.last_recorded_at);
        partitions.push(crate::runtime::PartitionStatus {
            partition: partition.id(),
            position: pos.next_seq,
            head: head.next_seq,
            lag_events,
            lag_seconds,
        });
    }
    Ok(AnalyticsStatus {
        projection: NAME.to_owned(),
        backend: store.kind().to_owned(),
        location: store.describe(),
        lag_events: partitions.iter().map(|p| p.lag_events).sum(),
        lag_seconds: partitions.iter().map(|p| p.lag_seconds).fold(0.0, f64::max),
        partitions,
        rows: store.row_counts().await?,
    })
}

/// Status of the analytics projection.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyticsStatus {
    pub projection: String,
    pub backend: String,
    pub location: String,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub partitions: Vec<crate::runtime::PartitionStatus>,
    pub rows: BTreeMap<String, u64>,
}
