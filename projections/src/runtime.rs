//! The projection runtime: a projection's tables and migrations, decoding stored events the way
//! the command path does, applying them in batches with the position in the same transaction,
//! catching up with the log, status and a digest of the rows. Rebuilds are in
//! [`shadow`](crate::shadow).

use std::collections::BTreeMap;
use std::future::Future;

use annals_domain::Payload;
use annals_domain::billing::{BudgetEvent, InvoiceEvent, UsageRecorded};
use annals_domain::ingest::IngestEvent;
use annals_domain::models::{DeploymentEvent, ModelVersionEvent};
use annals_domain::policy::PolicyEvent;
use annals_domain::tenancy::{ContactEvent, RetentionEvent, TenantEvent};
use annals_events::{Envelope, EnvelopeRef, Topic};
use annals_schemas::Registry;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::params;
use crate::store::{BackendKind, Store, StoreError, Tx};

/// Events per transaction at most when catching up.
pub const DEFAULT_BATCH: usize = 1000;

/// Failures of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] annals_events::LogError),
    #[error("partition {partition} seq {seq} ({event_type}): {detail}")]
    Decode {
        partition: u32,
        seq: u64,
        event_type: String,
        detail: String,
    },
    #[error(
        "projection {projection} partition {partition}: a batch starting at seq {first} does not follow the stored position {position} (events would be skipped)"
    )]
    Gap {
        projection: String,
        partition: u32,
        position: u64,
        first: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A table of a read model: its columns (`BIGINT` or `TEXT`, the types both backends share)
/// and its primary key, which also orders rows in dumps and digests.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub name: &'static str,
    /// `(column, type)`; every table's first column is `tenant`.
    pub columns: &'static [(&'static str, &'static str)],
    pub key: &'static [&'static str],
}

impl TableSpec {
    pub fn create_sql(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(c, t)| {
                let not_null = if self.key.contains(c) {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("  {c} {t}{not_null}")
            })
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{},\n  PRIMARY KEY ({})\n);\n",
            self.name,
            cols.join(",\n"),
            self.key.join(", ")
        )
    }
}

/// A decoded payload: the domain's own event types, decoded and upcast by the registry exactly
/// as the command path and replay decode them.
#[derive(Debug, Clone)]
pub enum DomainEvent {
    Tenant(TenantEvent),
    Contact(ContactEvent),
    Retention(RetentionEvent),
    Signal(Box<IngestEvent>),
    Invoice(InvoiceEvent),
    Budget(BudgetEvent),
    ModelVersion(ModelVersionEvent),
    Deployment(DeploymentEvent),
    Policy(PolicyEvent),
    /// An event of no context the domain decides (e.g. `audit.CheckpointSigned`).
    Other,
}

impl DomainEvent {
    /// Decodes a stored event's payload with its writer schema, resolved to the latest version.
    pub fn decode(
        env: &EnvelopeRef<'_>,
        registry: &Registry,
    ) -> Result<DomainEvent, ProjectionError> {
        let t = env.event_type;
        let fail = |detail: String| ProjectionError::Decode {
            partition: env.partition,
            seq: env.seq,
            event_type: t.to_owned(),
            detail,
        };
        let json = || {
            registry
                .decode_json(env.schema_id, env.payload)
                .map_err(|e| fail(e.to_string()))
        };
        let some = |r: Option<Result<DomainEvent, String>>| match r {
            Some(r) => r.map_err(fail),
            None => Ok(DomainEvent::Other),
        };
        match t.split('.').next() {
            Some("tenancy") => {
                let v = json()?;
                if let Some(r) = TenantEvent::from_json(t, v.clone()) {
                    return r.map(DomainEvent::Tenant).map_err(fail);
                }
                if let Some(r) = ContactEvent::from_json(t, v.clone()) {
                    return r.map(DomainEvent::Contact).map_err(fail);
                }
                some(RetentionEvent::from_json(t, v).map(|r| r.map(DomainEvent::Retention)))
            }
            Some("ingest") if t == "ingest.SignalIngested" => {
                IngestEvent::decode(registry, env.schema_id, env.payload)
                    .map(|e| DomainEvent::Signal(Box::new(e)))
                    .map_err(fail)
            }
            Some("billing") if t == "billing.UsageRecorded" => {
                UsageRecorded::decode(registry, env.schema_id, env.payload)
                    .map(|u| DomainEvent::Budget(BudgetEvent::UsageRecorded(u)))
                    .map_err(fail)
            }
            Some("billing") => {
                let v = json()?;
                if let Some(r) = InvoiceEvent::from_json(t, v.clone()) {
                    return r.map(DomainEvent::Invoice).map_err(fail);
                }
                some(BudgetEvent::from_json(t, v).map(|r| r.map(DomainEvent::Budget)))
            }
            Some("models") => {
                let v = json()?;
                if let Some(r) = ModelVersionEvent::from_json(t, v.clone()) {
                    return r.map(DomainEvent::ModelVersion).map_err(fail);
                }
                some(DeploymentEvent::from_json(t, v).map(|r| r.map(DomainEvent::Deployment)))
            }
            Some("policy") => {
                some(PolicyEvent::from_json(t, json()?).map(|r| r.map(DomainEvent::Policy)))
            }
            _ => Ok(DomainEvent::Other),
        }
    }
}

/// A read model built from the log.
///
/// `apply` must be pure with respect to the outside: it may read and write its own tables
/// through `tx` and nothing else — no clock, no randomness, no other I/O. Anything with side
/// effects is a processor. The runtime calls it once per wanted event, in seq order per
/// partition, inside the transaction that also stores the position, so a batch and its
/// position commit together or not at all.
pub trait Projection: Send + Sync {
    /// Stable name: positions, status and `annals projections rebuild NAME` use it.
    fn name(&self) -> &'static str;

    /// Whether the projection wants events of this type (others only advance the position).
    fn wants(&self, event_type: &str) -> bool;

    /// The projection's tables.
    fn tables(&self) -> &'static [TableSpec];

    /// Schema migrations, oldest first, for `backend`: the runtime applies those not applied
    /// yet, each in its own transaction. Version N is element N-1; never change a published one.
    fn migrations(&self, backend: BackendKind) -> Vec<String>;

    /// Applies one event.
    fn apply(
        &self,
        tx: &mut Tx,
        env: &Envelope,
        event: &DomainEvent,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Applies a batch's wanted events in order. The default applies them one by one; a
    /// projection may merge writes to one row within the batch (the result must be the same).
    fn apply_all(
        &self,
        tx: &mut Tx,
        events: &[(&Envelope, DomainEvent)],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send {
        async move {
            for (env, event) in events {
                self.apply(tx, env, event).await?;
            }
            Ok(())
        }
    }
}

const RUNTIME_SQL: &str = "
CREATE TABLE IF NOT EXISTS read_model_migrations (
  projection TEXT NOT NULL,
  version BIGINT NOT NULL,
  PRIMARY KEY (projection, version)
);
CREATE TABLE IF NOT EXISTS projection_positions (
  projection TEXT NOT NULL,
  log_partition BIGINT NOT NULL,
  next_seq BIGINT NOT NULL,
  last_recorded_at BIGINT,
  PRIMARY KEY (projection, log_partition)
);
";

/// Row-level security for a PostgreSQL table: every session sees only the rows of its
/// `annals.tenant`, except the owner (the projector), which reads and writes everything.
pub fn postgres_rls_sql(table: &str, tenant_column: bool) -> String {
    let mut s = format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n\
         DROP POLICY IF EXISTS projector_all ON {table};\n\
         CREATE POLICY projector_all ON {table} TO CURRENT_USER USING (true) WITH CHECK (true);\n"
    );
    if tenant_column {
        s.push_str(&format!(
            "DROP POLICY IF EXISTS tenant_isolation ON {table};\n\
             CREATE POLICY tenant_isolation ON {table} FOR SELECT \
             USING (tenant = current_setting('annals.tenant', true));\n\
             GRANT SELECT ON {table} TO {reader};\n",
            reader = crate::store::READER_ROLE
        ));
    }
    s
}

/// The reader role, created once per cluster, and its access to the current schema.
fn postgres_reader_sql() -> String {
    let reader = crate::store::READER_ROLE;
    format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{reader}') THEN
             CREATE ROLE {reader} NOLOGIN;
           END IF;
           IF NOT pg_has_role(current_user, '{reader}', 'MEMBER') THEN
             EXECUTE format('GRANT {reader} TO %I', current_user);
           END IF;
           EXECUTE format('GRANT USAGE ON SCHEMA %I TO {reader}', current_schema());
         END $$;\n"
    )
}

/// Creates the runtime's tables and applies the projection's pending migrations.
pub async fn migrate<P: Projection>(store: &Store, projection: &P) -> Result<(), ProjectionError> {
    let kind = store.kind();
    let mut tx = store.begin().await?;
    // Serialises migrations (and role creation) across processes and parallel tests.
    lock_migrations(&mut tx).await?;
    tx.execute_script(RUNTIME_SQL).await?;
    if kind == BackendKind::Postgres {
        let mut s = postgres_rls_sql("projection_positions", false);
        s.push_str(&postgres_rls_sql("read_model_migrations", false));
        tx.execute_script(&s).await?;
    }
    tx.commit().await?;
    let migrations = projection.migrations(kind);
    for (i, sql) in migrations.iter().enumerate() {
        let version = i as i64 + 1;
        let mut tx = store.begin().await?;
        lock_migrations(&mut tx).await?;
        let done = tx
            .fetch_ints(
                "SELECT version FROM read_model_migrations WHERE projection = $1 AND version = $2",
                params![projection.name(), version],
            )
            .await?;
        if !done.is_empty() {
            continue;
        }
        if kind == BackendKind::Postgres {
            tx.execute_script(&postgres_reader_sql()).await?;
        }
        tx.execute_script(sql).await?;
        tx.execute(
            "INSERT INTO read_model_migrations (projection, version) VALUES ($1, $2)",
            params![projection.name(), version],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// On PostgreSQL, takes the lock that migrations (and rebuilds' schema changes) hold until
/// their transaction ends, so they run one at a time across processes; nothing on SQLite,
/// where every writing transaction runs alone.
pub(crate) async fn lock_migrations(tx: &mut Tx) -> Result<(), ProjectionError> {
    if tx.kind() == BackendKind::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(7419001)", &[])
            .await?;
    }
    Ok(())
}

/// A projection's position, as stored: partition → (next seq, `recorded_at` of the last
/// applied event).
pub type Positions = BTreeMap<u32, (u64, Option<i64>)>;

/// The stored position of a projection (or of a rebuild's shadow, by its name).
pub async fn positions(store: &Store, projection: &str) -> Result<Positions, ProjectionError> {
    let mut tx = store.begin().await?;
    let out = positions_in(&mut tx, projection).await?;
    tx.rollback().await?;
    Ok(out)
}

/// [`positions`] inside a given transaction.
pub(crate) async fn positions_in(
    tx: &mut Tx,
    projection: &str,
) -> Result<Positions, ProjectionError> {
    let rows = tx
        .fetch_ints(
            "SELECT log_partition, next_seq, last_recorded_at FROM projection_positions WHERE projection = $1",
            params![projection],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r[0].unwrap_or(0) as u32, (r[1].unwrap_or(0) as u64, r[2])))
        .collect())
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// Events at or past the stored position (applied or, if unwanted, just passed).
    pub advanced: u64,
    /// Events before the stored position: already applied, skipped (redelivery).
    pub skipped: u64,
    /// Of the advanced events, those the projection wanted and applied.
    pub applied: u64,
}

/// Applies a batch of one partition's events (in seq order) inside `tx` and moves the stored
/// position past them, without committing. Events before the stored position were applied
/// already and are skipped; a batch that would leave a gap is refused.
pub async fn apply_in<P: Projection>(
    tx: &mut Tx,
    projection: &P,
    registry: &Registry,
    partition: u32,
    events: &[Envelope],
) -> Result<BatchOutcome, ProjectionError> {
    apply_at(
        tx,
        projection,
        projection.name(),
        registry,
        partition,
        events,
    )
    .await
}

/// [`apply_in`] with the position stored under `name` (a rebuild's shadow position; the caller
/// redirects `tx` to the shadow tables).
pub(crate) async fn apply_at<P: Projection>(
    tx: &mut Tx,
    projection: &P,
    name: &str,
    registry: &Registry,
    partition: u32,
    events: &[Envelope],
) -> Result<BatchOutcome, ProjectionError> {
    // Take the position row (and on PostgreSQL its lock) before reading it: two projectors
    // racing on a partition serialise here, and the second sees the first's position.
    tx.execute(
        "INSERT INTO projection_positions (projection, log_partition, next_seq, last_recorded_at) \
         VALUES ($1, $2, 0, NULL) ON CONFLICT (projection, log_partition) DO NOTHING",
        params![name, partition],
    )
    .await?;
    let lock = match tx.kind() {
        BackendKind::Postgres => " FOR UPDATE",
        BackendKind::Sqlite => "",
    };
    let rows = tx
        .fetch_ints(
            &format!(
                "SELECT next_seq FROM projection_positions WHERE projection = $1 AND log_partition = $2{lock}"
            ),
            params![name, partition],
        )
        .await?;
    let position = rows.first().and_then(|r| r[0]).unwrap_or(0).max(0) as u64;
    // The batch's writes go to the database in one round trip at commit.
    tx.pipeline();
    let mut out = BatchOutcome::default();
    let mut next = position;
    let mut last_recorded_at = None;
    let mut wanted = Vec::new();
    for env in events {
        if env.partition != partition {
            return Err(ProjectionError::Invalid(format!(
                "event of partition {} in a batch of partition {partition}",
                env.partition
            )));
        }
        if env.seq < next {
            out.skipped += 1;
            continue;
        }
        if env.seq > next {
            return Err(ProjectionError::Gap {
                projection: name.to_owned(),
                partition,
                position: next,
                first: env.seq,
            });
        }
        if projection.wants(&env.event_type) {
            wanted.push((env, DomainEvent::decode(&env.as_ref(), registry)?));
        }
        next = env.seq + 1;
        last_recorded_at = Some(env.recorded_at);
        out.advanced += 1;
    }
    projection.apply_all(tx, &wanted).await?;
    out.applied = wanted.len() as u64;
    if out.advanced > 0 {
        tx.execute(
            "UPDATE projection_positions SET next_seq = $3, last_recorded_at = $4 \
             WHERE projection = $1 AND log_partition = $2",
            params![name, partition, next, last_recorded_at],
        )
        .await?;
    }
    Ok(out)
}

/// Applies a batch and its position in one transaction, and commits.
pub async fn apply_batch<P: Projection>(
    store: &Store,
    projection: &P,
    registry: &Registry,
    partition: u32,
    events: &[Envelope],
) -> Result<BatchOutcome, ProjectionError> {
    let target = Target::live(projection);
    apply_batch_to(store, projection, &target, registry, partition, events).await
}

/// Where batches go: the live tables and position, or a rebuild's shadow tables and position.
pub(crate) struct Target<'a> {
    /// The name the position is stored under in `projection_positions`.
    pub position: &'a str,
    /// Live table → the table written instead; `None`: the live tables.
    pub tables: Option<&'a BTreeMap<String, String>>,
}

impl Target<'static> {
    pub fn live<P: Projection>(projection: &P) -> Target<'static> {
        Target {
            position: projection.name(),
            tables: None,
        }
    }
}

/// [`apply_batch`] into `target`.
async fn apply_batch_to<P: Projection>(
    store: &Store,
    projection: &P,
    target: &Target<'_>,
    registry: &Registry,
    partition: u32,
    events: &[Envelope],
) -> Result<BatchOutcome, ProjectionError> {
    let mut tx = store.begin().await?;
    tx.redirect_tables(target.tables.cloned());
    let out = apply_at(
        &mut tx,
        projection,
        target.position,
        registry,
        partition,
        events,
    )
    .await?;
    crate::failpoint("current_state.before_commit");
    tx.commit().await?;
    Ok(out)
}

/// Reads up to `max` events of a partition from `from`.
pub fn read_batch(
    partition: &annals_events::Partition,
    from: u64,
    max: usize,
) -> Result<Vec<Envelope>, ProjectionError> {
    next_batch(&mut partition.reader(from), max)
}

/// Up to `max` events from where `reader` stands (fewer when it catches up). One reader kept
/// across batches reads a partition in one pass (a new Kafka reader has to find its start).
pub fn next_batch(
    reader: &mut annals_events::Reader,
    max: usize,
) -> Result<Vec<Envelope>, ProjectionError> {
    let mut out = Vec::with_capacity(max.min(4096));
    while out.len() < max {
        match reader.next()? {
            Some(e) => out.push(e),
            None => break,
        }
    }
    Ok(out)
}

/// What a catch-up did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatchUp {
    /// Events the projection's position moved past.
    pub events: u64,
    /// Of those, the events it wanted and applied (the others are of types it ignores).
    pub applied: u64,
    pub batches: u64,
    pub seconds: f64,
}

impl CatchUp {
    /// Counts `other`'s events and batches in (not its seconds).
    pub(crate) fn add(&mut self, other: &CatchUp) {
        self.events += other.events;
        self.applied += other.applied;
        self.batches += other.batches;
    }
}

/// Applies every partition's events from the stored position to the log's head as it was when
/// each partition was reached, in batches of at most `batch` events, then returns.
pub async fn catch_up<P: Projection>(
    store: &Store,
    projection: &P,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, ProjectionError> {
    catch_up_to(store, projection, topic, registry, batch, &head_seqs(topic)).await
}

/// Each partition's head (its next seq): where a catch-up to the head ends.
pub(crate) fn head_seqs(topic: &Topic) -> BTreeMap<u32, u64> {
    topic
        .partitions()
        .iter()
        .map(|p| (p.id(), p.head().next_seq))
        .collect()
}

/// Applies the events of the partitions in `ends` from the stored position up to (excluding)
/// their end seq: a replay of the projection to a bound.
pub async fn catch_up_to<P: Projection>(
    store: &Store,
    projection: &P,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
    ends: &BTreeMap<u32, u64>,
) -> Result<CatchUp, ProjectionError> {
    migrate(store, projection).await?;
    let target = Target::live(projection);
    catch_up_into(store, projection, &target, topic, registry, batch, ends).await
}

/// [`catch_up_to`] into `target`, each batch committed with `target`'s position.
pub(crate) async fn catch_up_into<P: Projection>(
    store: &Store,
    projection: &P,
    target: &Target<'_>,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
    ends: &BTreeMap<u32, u64>,
) -> Result<CatchUp, ProjectionError> {
    let started = std::time::Instant::now();
    let stored = positions(store, target.position).await?;
    let mut out = CatchUp::default();
    for partition in topic.partitions() {
        let p = partition.id();
        let Some(&end) = ends.get(&p) else { continue };
        let mut from = stored.get(&p).map_or(0, |(s, _)| *s);
        let mut reader = partition.reader(from);
        while from < end {
            let mut events = next_batch(&mut reader, batch.max(1))?;
            events.retain(|e| e.seq < end);
            if events.is_empty() {
                break;
            }
            let o = apply_batch_to(store, projection, target, registry, p, &events).await?;
            from = events.last().map_or(from, |e| e.seq + 1);
            out.events += o.advanced;
            out.applied += o.applied;
            out.batches += 1;
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// One partition's progress.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Next seq the projection will apply.
    pub position: u64,
    /// Next seq the log will write.
    pub head: u64,
    pub lag_events: u64,
    /// `recorded_at` of the log's last event minus that of the last applied one.
    pub lag_seconds: f64,
}

/// A projection's status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub projection: String,
    pub backend: BackendKind,
    pub location: String,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub partitions: Vec<PartitionStatus>,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
}

/// Position, lag and rows of a projection against the log's heads.
pub async fn status<P: Projection>(
    store: &Store,
    projection: &P,
    topic: &Topic,
) -> Result<Status, ProjectionError> {
    migrate(store, projection).await?;
    let stored = positions(store, projection.name()).await?;
    let mut partitions = Vec::new();
    for partition in topic.partitions() {
        let head = partition.head();
        let (position, applied_at) = stored.get(&partition.id()).copied().unwrap_or((0, None));
        let (lag_events, lag_seconds) = partition_lag(partition, &head, position, applied_at);
        partitions.push(PartitionStatus {
            partition: partition.id(),
            position,
            head: head.next_seq,
            lag_events,
            lag_seconds,
        });
    }
    let mut rows = BTreeMap::new();
    let mut tx = store.begin().await?;
    for t in projection.tables() {
        let n = tx
            .fetch_ints(&format!("SELECT COUNT(*) FROM {}", t.name), &[])
            .await?;
        rows.insert(
            t.name.to_owned(),
            n.first().and_then(|r| r[0]).unwrap_or(0) as u64,
        );
    }
    tx.rollback().await?;
    Ok(Status {
        projection: projection.name().to_owned(),
        backend: store.kind(),
        location: store.backend().describe(),
        lag_events: partitions.iter().map(|p| p.lag_events).sum(),
        lag_seconds: partitions.iter().map(|p| p.lag_seconds).fold(0.0, f64::max),
        partitions,
        rows,
    })
}

/// How far a projection at `position` (next seq; `applied_at`: `recorded_at` of the last event
/// it applied) is behind a partition whose head is `head` (the caller's: on Kafka a head is a
/// request to the broker): events, and seconds of the log's own clock — counted from the
/// partition's first event when nothing was applied yet.
pub fn partition_lag(
    partition: &annals_events::Partition,
    head: &annals_events::log::Head,
    position: u64,
    applied_at: Option<i64>,
) -> (u64, f64) {
    let behind = head.next_seq.saturating_sub(position);
    if behind == 0 {
        return (0, 0.0);
    }
    let first = || {
        partition
            .reader(0)
            .next_ref()
            .ok()
            .flatten()
            .map(|e| e.recorded_at)
    };
    let from = applied_at.or_else(first).unwrap_or(head.last_recorded_at);
    (behind, (head.last_recorded_at - from).max(0) as f64 / 1e6)
}

/// Every row of every table of the projection, as text, in primary-key order: table → rows.
pub async fn dump<P: Projection>(
    store: &Store,
    projection: &P,
) -> Result<BTreeMap<String, Vec<Vec<Option<String>>>>, ProjectionError> {
    let mut tx = store.begin().await?;
    let out = dump_in(&mut tx, projection.tables()).await?;
    tx.rollback().await?;
    Ok(out)
}

/// [`dump`] inside a given transaction (e.g. a tenant-scoped session).
pub async fn dump_in(
    tx: &mut Tx,
    tables: &[TableSpec],
) -> Result<BTreeMap<String, Vec<Vec<Option<String>>>>, ProjectionError> {
    let mut out = BTreeMap::new();
    for t in tables {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|(c, _)| format!("CAST({c} AS TEXT)"))
            .collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), t.name);
        let mut rows = tx.fetch_texts(&sql, &[]).await?;
        // Sorted here, not with ORDER BY: database collations differ, digests must not.
        let key: Vec<(usize, bool)> = t
            .key
            .iter()
            .filter_map(|k| {
                let i = t.columns.iter().position(|(c, _)| c == k)?;
                Some((i, t.columns[i].1 == "BIGINT"))
            })
            .collect();
        rows.sort_by(|a, b| {
            for &(i, numeric) in &key {
                let o = if numeric {
                    let n = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
                    n(&a[i]).cmp(&n(&b[i]))
                } else {
                    a[i].cmp(&b[i])
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        out.insert(t.name.to_owned(), rows);
    }
    Ok(out)
}

/// SHA-256 of the canonical JSON of [`dump`]: equal rows give equal digests on any backend.
pub async fn digest<P: Projection>(
    store: &Store,
    projection: &P,
) -> Result<String, ProjectionError> {
    Ok(digest_rows(&dump(store, projection).await?))
}

/// Rows as [`dump`] gives them.
pub type Rows = BTreeMap<String, Vec<Vec<Option<String>>>>;

/// SHA-256 of the canonical JSON of rows in [`dump`]'s shape.
pub fn digest_rows(rows: &Rows) -> String {
    let json = serde_json::to_vec(rows).expect("serialisable");
    hex::encode(Sha256::digest(&json))
}

/// Only `tenant`'s rows (every table's first column is `tenant`).
pub fn tenant_rows(rows: Rows, tenant: &str) -> Rows {
    rows.into_iter()
        .map(|(t, r)| {
            let mine = r
                .into_iter()
                .filter(|row| row.first().and_then(|v| v.as_deref()) == Some(tenant))
                .collect();
            (t, mine)
        })
        .collect()
}
