//! The analytics model: the tables analysts query, every column with its type and meaning, and
//! the pure mapping of one stored event to rows of those tables.
//!
//! Both analytics stores take their schemas from here — Parquet files read by DataFusion
//! (embedded) and ClickHouse tables (distributed) — so table names, columns and values are the
//! same whichever one answers `annals sql`. `docs/analytics.md` is generated from these specs
//! (a test keeps it in step).
//!
//! Every table ends with `log_partition` and `seq`, the event's place in the log: together they
//! identify the event (join with `events`), and they make a re-applied event's row identical to
//! the first one, which is what ClickHouse's deduplication relies on.

use std::collections::HashMap;

use annals_domain::billing::{BudgetEvent, InvoiceEvent, minor_to_thousandths};
use annals_domain::models::{DeploymentEvent, TrafficShare};
use annals_domain::policy::{Effect, PolicyEvent};
use annals_domain::tenancy::RetentionEvent;
use annals_events::EnvelopeRef;

use super::retention::Deletion;
use crate::runtime::DomainEvent;

/// A column's type, named by what an analyst sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A string of a small vocabulary (tenant, event type, currency): ClickHouse
    /// `LowCardinality(String)`, Arrow dictionary-encoded `Utf8`.
    Category,
    /// Any string: `String`, `Utf8`.
    Text,
    /// A string or null: `Nullable(String)`.
    NullableText,
    /// A list of strings: `Array(String)`, Arrow `List<Utf8>`.
    TextList,
    /// A signed integer: `Int64`.
    Int64,
    /// A signed integer or null: `Nullable(Int64)`.
    NullableInt64,
    /// An unsigned 32-bit integer (partitions, schema ids, sizes): `UInt32`.
    UInt32,
    /// An unsigned 64-bit integer (seq, versions): `UInt64`.
    UInt64,
    /// A measurement or null: `Nullable(Float64)`.
    NullableFloat64,
    /// A UTC instant with microseconds: `DateTime64(6, 'UTC')`, Arrow `Timestamp(µs, "UTC")`.
    Time,
    /// Money in major units, exact: `Decimal(18, 3)`, Arrow `Decimal128(18, 3)` (e.g. 12.340 EUR).
    Money,
    /// Free-form labels: `Map(String, String)`, Arrow `Map<Utf8, Utf8>`.
    Labels,
    /// Traffic shares by version in percent: `Map(String, Int64)`.
    Shares,
}

impl ColumnType {
    /// The ClickHouse type.
    pub fn clickhouse(self) -> &'static str {
        match self {
            ColumnType::Category => "LowCardinality(String)",
            ColumnType::Text => "String",
            ColumnType::NullableText => "Nullable(String)",
            ColumnType::TextList => "Array(String)",
            ColumnType::Int64 => "Int64",
            ColumnType::NullableInt64 => "Nullable(Int64)",
            ColumnType::UInt32 => "UInt32",
            ColumnType::UInt64 => "UInt64",
            ColumnType::NullableFloat64 => "Nullable(Float64)",
            ColumnType::Time => "DateTime64(6, 'UTC')",
            ColumnType::Money => "Decimal(18, 3)",
            ColumnType::Labels => "Map(String, String)",
            ColumnType::Shares => "Map(String, Int64)",
        }
    }
}

/// One column of an analytics table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub doc: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column { name, ty, doc }
}

/// An analytics table.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub doc: &'static str,
    pub columns: &'static [Column],
    /// Sort order (ClickHouse `ORDER BY`, also the row order within a Parquet file). It ends
    /// with `log_partition, seq`, so it is unique per row.
    pub order_by: &'static [&'static str],
    /// The time column the table is partitioned by month on.
    pub month_of: &'static str,
}

use ColumnType as C;

const LOG_PARTITION: Column = col(
    "log_partition",
    C::UInt32,
    "Partition of the log the event is in.",
);
const SEQ: Column = col(
    "seq",
    C::UInt64,
    "The event's position in its partition (with `log_partition`, identifies the event).",
);

/// Index of each table in [`TABLES`] and in a [`RowSet`].
pub const EVENTS: usize = 0;
pub const SIGNALS: usize = 1;
pub const USAGE: usize = 2;
pub const INVOICE_LINES: usize = 3;
pub const POLICY_DECISIONS: usize = 4;
pub const DEPLOYMENTS: usize = 5;

/// The tables, in documentation order.
pub const TABLES: &[Table] = &[
    Table {
        name: "events",
        doc: "Every event of the log, one row each: its envelope without the payload. For audit \
              queries (who did what, when, in which stream) and for joining any other table's \
              (log_partition, seq).",
        columns: &[
            col("tenant", C::Category, "Tenant the event belongs to."),
            col(
                "event_type",
                C::Category,
                "Context and type, e.g. `billing.InvoiceIssued`.",
            ),
            col(
                "schema_id",
                C::UInt32,
                "Id of the Avro schema (type and version) of the payload; see `annals schema list`.",
            ),
            col("event_id", C::Text, "UUIDv7 of the event."),
            col(
                "stream",
                C::Text,
                "The aggregate (stream) the event belongs to, e.g. `billing.Invoice/acme/INV-1`.",
            ),
            col(
                "stream_version",
                C::UInt64,
                "Version of the stream this event made (1 for its first event).",
            ),
            col(
                "actor",
                C::Category,
                "Who issued the command (token name, user, service).",
            ),
            col(
                "causation_id",
                C::NullableText,
                "The command (or event) that caused this event.",
            ),
            col(
                "correlation_id",
                C::NullableText,
                "The request or process several events share.",
            ),
            col(
                "occurred_at",
                C::Time,
                "When the command was issued (business time, UTC).",
            ),
            col(
                "recorded_at",
                C::Time,
                "When the log recorded the event (UTC).",
            ),
            col(
                "payload_bytes",
                C::UInt32,
                "Size of the Avro payload in bytes.",
            ),
            col(
                "hash",
                C::Text,
                "SHA-256 of the event in the partition's hash chain (hex).",
            ),
            col(
                "prev_hash",
                C::Text,
                "Hash of the partition's previous event (hex).",
            ),
            LOG_PARTITION,
            SEQ,
        ],
        order_by: &[
            "tenant",
            "event_type",
            "recorded_at",
            "log_partition",
            "seq",
        ],
        month_of: "recorded_at",
    },
    Table {
        name: "signals",
        doc: "Every accepted signal (`ingest.SignalIngested`), once: retried duplicates were \
              refused by ingest and are not here. Partitioned by month of `ts`, ordered by \
              tenant, source and time.",
        columns: &[
            col("tenant", C::Category, "Tenant the signal belongs to."),
            col(
                "source",
                C::Category,
                "Source (device, service, integration) that emitted it.",
            ),
            col("ts", C::Time, "When the source observed the signal (UTC)."),
            col(
                "signal_id",
                C::Text,
                "Id of the signal, unique per tenant, source and ts.",
            ),
            col(
                "value",
                C::NullableFloat64,
                "Measured value, if the signal carries one (never money).",
            ),
            col(
                "unit",
                C::NullableText,
                "Unit of `value` (e.g. `ms`, `celsius`), if any.",
            ),
            col(
                "attributes",
                C::Labels,
                "Free-form labels, e.g. `attributes['region']`.",
            ),
            col("recorded_at", C::Time, "When the log recorded it (UTC)."),
            LOG_PARTITION,
            SEQ,
        ],
        order_by: &[
            "tenant",
            "source",
            "ts",
            "signal_id",
            "log_partition",
            "seq",
        ],
        month_of: "ts",
    },
    Table {
        name: "usage",
        doc: "Metered usage counted against a tenant's monthly budget (`billing.UsageRecorded`), \
              one row per usage record, with the month's running total.",
        columns: &[
            col("tenant", C::Category, "Tenant billed."),
            col("month", C::Category, "Budget month, `YYYY-MM`."),
            col("meter", C::Category, "What was metered, e.g. `signals`."),
            col(
                "usage_id",
                C::Text,
                "Id of the usage record, unique per tenant and month.",
            ),
            col("quantity", C::Int64, "Units used."),
            col("cost", C::Money, "Cost in major units of `currency`."),
            col(
                "spent",
                C::Money,
                "The month's spend including this usage, in major units.",
            ),
            col(
                "currency",
                C::Category,
                "ISO 4217 code of `cost` and `spent`.",
            ),
            col("recorded_at", C::Time, "When the log recorded it (UTC)."),
            LOG_PARTITION,
            SEQ,
        ],
        order_by: &["tenant", "month", "meter", "log_partition", "seq"],
        month_of: "recorded_at",
    },
    Table {
        name: "invoice_lines",
        doc: "Every line added to an invoice (`billing.InvoiceLineAdded`). Lines of voided \
              invoices stay: join `events` on the invoice's stream to see its outcome.",
        columns: &[
            col("tenant", C::Category, "Tenant invoiced."),
            col("invoice_id", C::Text, "Invoice the line belongs to."),
            col("line_id", C::Text, "Id of the line within its invoice."),
            col(
                "description",
                C::Text,
                "Text of the line as printed on the invoice.",
            ),
            col(
                "meter",
                C::Category,
                "Meter priced (empty for a line not tied to one).",
            ),
            col("quantity", C::Int64, "Units priced."),
            col(
                "unit_price",
                C::Money,
                "Flat unit price in major units (the first tier's when tiered).",
            ),
            col("tiered", C::UInt32, "1 if priced by volume tiers, else 0."),
            col(
                "amount",
                C::Money,
                "The line's amount in major units of `currency`.",
            ),
            col("currency", C::Category, "ISO 4217 code."),
            col("added_at", C::Time, "When the line was added (UTC)."),
            LOG_PARTITION,
            SEQ,
        ],
        order_by: &["tenant", "invoice_id", "line_id", "log_partition", "seq"],
        month_of: "added_at",
    },
    Table {
        name: "policy_decisions",
        doc: "Every recorded access decision (`policy.PolicyDecisionRecorded`): the request's \
              attributes, the policy version that decided, and the outcome.",
        columns: &[
            col("tenant", C::Category, "Tenant whose policy decided."),
            col("policy_id", C::Category, "The policy."),
            col(
                "policy_version",
                C::Int64,
                "The version that was active and decided.",
            ),
            col(
                "subject_role",
                C::NullableText,
                "Role of the subject asking, if any.",
            ),
            col(
                "subject_scopes",
                C::TextList,
                "Scopes of the subject asking.",
            ),
            col(
                "resource_tenant",
                C::Category,
                "Tenant of the resource asked for.",
            ),
            col(
                "classification",
                C::Category,
                "Data classification of the resource.",
            ),
            col("action", C::Category, "What the subject asked to do."),
            col("decision", C::Category, "`allow` or `deny`."),
            col(
                "matched_rule",
                C::NullableText,
                "The rule that decided; null: no rule matched (default deny).",
            ),
            col("decided_at", C::Time, "When the decision was made (UTC)."),
            LOG_PARTITION,
            SEQ,
        ],
        order_by: &["tenant", "policy_id", "decided_at", "log_partition", "seq"],
        month_of: "decided_at",
    },
    Table {
        name: "deployments",
        doc: "The deployment timeline: every change of which model version serves how much of \
              an environment's traffic (deploy, canary shift, promote, roll back, retire).",
        columns: &[
            col("tenant", C::Category, "Tenant owning the model."),
            col("model", C::Category, "Model name."),
            col(
                "environment",
                C::Category,
                "Environment, e.g. `production`.",
            ),
            col(
                "action",
                C::Category,
                "`deployed`, `traffic_shifted`, `promoted`, `rolled_back` or `retired`.",
            ),
            col(
                "version",
                C::NullableText,
                "The version acted on (deployed, shifted, promoted or rolled back to); null when retired.",
            ),
            col(
                "traffic",
                C::Shares,
                "Every serving version's share of traffic after the change, in percent (sums to 100, empty when retired).",
            ),
            col("actor", C::Category, "Who made the change."),
            col("changed_at", C::Time, "When the change was made (UTC)."),
            LOG_PARTITION,
            SEQ,
        ],
        order_by: &[
            "tenant",
            "model",
            "environment",
            "changed_at",
            "log_partition",
            "seq",
        ],
        month_of: "changed_at",
    },
];

/// A value of one cell; which variant a column holds follows from its [`ColumnType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Microseconds since the Unix epoch, UTC.
    Time(i64),
    /// Thousandths of the major unit.
    Money(i64),
    List(Vec<String>),
    Labels(Vec<(String, String)>),
    Shares(Vec<(String, i64)>),
}

/// Rows of every table, from a batch of events, and the stored rows its retention runs remove.
#[derive(Debug, Clone, Default)]
pub struct RowSet {
    pub tables: [Vec<Vec<Cell>>; 6],
    /// Retention runs applied in the batch: the stores remove what these match among the rows
    /// stored before the batch (the batch's own rows are already filtered).
    pub deletions: Vec<Deletion>,
}

impl RowSet {
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(Vec::is_empty)
    }

    pub fn rows(&self) -> usize {
        self.tables.iter().map(Vec::len).sum()
    }

    /// Sorts every table's rows by its `order_by`, as they are stored.
    ///
    /// Each order-by column is first turned into one number per row that orders as its cells
    /// do ([`column_keys`]), laid out row by row, so the sort compares short runs of numbers,
    /// not strings. Rows are made in log order, so when a table's order ends with
    /// (`log_partition`, `seq`) and its rows are already in that order, the row's own index
    /// stands in for those two keys.
    pub fn sort(&mut self) {
        for (t, rows) in TABLES.iter().zip(self.tables.iter_mut()) {
            if rows.len() < 2 {
                continue;
            }
            let mut by: Vec<usize> = t
                .order_by
                .iter()
                .map(|c| column_index(t, c).expect("order_by names a column"))
                .collect();
            let log_order = [column_index(t, "log_partition"), column_index(t, "seq")];
            if let [Some(p), Some(s)] = log_order
                && by.ends_with(&[p, s])
                && rows.is_sorted_by_key(|r| (value_key(&r[p]), value_key(&r[s])))
            {
                by.truncate(by.len() - 2);
            }
            let width = by.len() + 1;
            let mut keys = vec![0u128; rows.len() * width];
            for (k, &i) in by.iter().enumerate() {
                for (row, key) in column_keys(rows, i).into_iter().enumerate() {
                    keys[row * width + k] = key;
                }
            }
            for row in 0..rows.len() {
                keys[row * width + by.len()] = row as u128;
            }
            let mut order: Vec<u32> = (0..rows.len() as u32).collect();
            let key = |row: u32| &keys[row as usize * width..(row as usize + 1) * width];
            order.sort_unstable_by(|&a, &b| key(a).cmp(key(b)));
            let mut unsorted = std::mem::take(rows);
            *rows = order
                .into_iter()
                .map(|i| std::mem::take(&mut unsorted[i as usize]))
                .collect();
        }
    }
}

/// The key of a cell that orders by its own value: null first, then whole numbers, times and
/// money by value. Texts are ranked per batch ([`column_keys`]); other cells (floats, lists)
/// are not ordered by.
fn value_key(cell: &Cell) -> u128 {
    match cell {
        Cell::Null => 0,
        Cell::Int(x) | Cell::Time(x) | Cell::Money(x) => u128::from((*x as u64) ^ (1 << 63)) + 1,
        Cell::UInt(x) => u128::from(*x) + 1,
        Cell::Text(_) | Cell::Float(_) | Cell::List(_) | Cell::Labels(_) | Cell::Shares(_) => 1,
    }
}

/// For column `i` of `rows`, one key per row that orders as the cells do: text by its rank
/// among the column's distinct values, everything else by [`value_key`].
fn column_keys(rows: &[Vec<Cell>], i: usize) -> Vec<u128> {
    // The column's distinct texts, numbered as first seen (one lookup per row), then ranked.
    let mut seen: HashMap<&str, u32, foldhash::fast::FixedState> = HashMap::default();
    let ids: Vec<u32> = rows
        .iter()
        .map(|r| match &r[i] {
            Cell::Text(s) => {
                let next = seen.len() as u32;
                *seen.entry(s.as_str()).or_insert(next)
            }
            _ => u32::MAX,
        })
        .collect();
    let mut distinct: Vec<(&str, u32)> = seen.into_iter().collect();
    distinct.sort_unstable();
    let mut rank = vec![0u128; distinct.len()];
    for (at, (_, n)) in distinct.iter().enumerate() {
        rank[*n as usize] = at as u128 + 1;
    }
    rows.iter()
        .zip(ids)
        .map(|(r, id)| match &r[i] {
            Cell::Text(_) => rank[id as usize],
            other => value_key(other),
        })
        .collect()
}

/// Cells every row ends with: `log_partition, seq`.
const TAIL: usize = 2;

/// A row's own cells, with room for its [`TAIL`] so that adding it does not move the row.
fn row<const N: usize>(cells: [Cell; N]) -> Vec<Cell> {
    let mut row = Vec::with_capacity(N + TAIL);
    row.extend(cells);
    row
}

/// Position of a column in its table.
pub fn column_index(t: &Table, name: &str) -> Option<usize> {
    t.columns.iter().position(|c| c.name == name)
}

fn hex32(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(64);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

fn opt_text(s: Option<&str>) -> Cell {
    s.map_or(Cell::Null, text)
}

/// Money: thousandths of the major unit; an amount too large for the column is an error.
fn money(minor: i64, currency: &str, env: &EnvelopeRef<'_>) -> Result<Cell, String> {
    minor_to_thousandths(minor, currency)
        .map(Cell::Money)
        .ok_or_else(|| {
            format!(
                "partition {} seq {}: amount {minor} {currency} does not fit Decimal(18, 3)",
                env.partition, env.seq
            )
        })
}

fn shares(traffic: &[TrafficShare]) -> Cell {
    Cell::Shares(
        traffic
            .iter()
            .map(|s| (s.version.clone(), i64::from(s.traffic_pct)))
            .collect(),
    )
}

/// Appends the rows `env` makes to `out`: one `events` row for every event, and one row of the
/// table its type feeds, if any. An applied retention run removes the rows it matches from
/// `out` and is kept in `out.deletions` for the rows already stored. Pure: the same event
/// always gives the same rows.
pub fn rows_of(env: &EnvelopeRef<'_>, event: &DomainEvent, out: &mut RowSet) -> Result<(), String> {
    if let DomainEvent::Retention(RetentionEvent::RetentionApplied(run)) = event {
        for d in Deletion::of_run(run, env.partition, env.seq) {
            out.tables[d.table].retain(|row| !d.matches(row));
            out.deletions.push(d);
        }
    }
    let tail: [Cell; TAIL] = [Cell::UInt(u64::from(env.partition)), Cell::UInt(env.seq)];
    let mut push = |table: usize, mut row: Vec<Cell>| {
        row.extend(tail.iter().cloned());
        debug_assert_eq!(
            row.len(),
            TABLES[table].columns.len(),
            "{}",
            TABLES[table].name
        );
        out.tables[table].push(row);
    };
    push(
        EVENTS,
        row([
            text(env.tenant),
            text(env.event_type),
            Cell::UInt(u64::try_from(env.schema_id).unwrap_or(0)),
            text(
                uuid::Uuid::from_bytes(env.event_id)
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            ),
            text(env.stream),
            Cell::UInt(env.stream_version),
            text(env.actor),
            opt_text(env.causation_id),
            opt_text(env.correlation_id),
            Cell::Time(env.occurred_at),
            Cell::Time(env.recorded_at),
            Cell::UInt(env.payload.len() as u64),
            Cell::Text(hex32(env.hash)),
            Cell::Text(hex32(env.prev_hash)),
        ]),
    );
    match event {
        DomainEvent::Signal(e) => {
            let annals_domain::ingest::IngestEvent::SignalIngested(s) = e.as_ref();
            push(
                SIGNALS,
                row([
                    text(&s.tenant),
                    text(&s.source),
                    Cell::Time(s.ts),
                    text(&s.signal_id),
                    s.value.map_or(Cell::Null, Cell::Float),
                    opt_text(s.unit.as_deref()),
                    Cell::Labels(
                        s.attributes
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    Cell::Time(env.recorded_at),
                ]),
            );
        }
        DomainEvent::Budget(BudgetEvent::UsageRecorded(u)) => push(
            USAGE,
            row([
                text(&u.tenant),
                text(&u.month),
                text(&u.meter),
                text(&u.usage_id),
                Cell::Int(u.quantity),
                money(u.cost_minor, &u.currency, env)?,
                money(u.spent_minor, &u.currency, env)?,
                text(&u.currency),
                Cell::Time(env.recorded_at),
            ]),
        ),
        DomainEvent::Invoice(InvoiceEvent::InvoiceLineAdded(l)) => {
            let unit = l
                .tiers
                .first()
                .map_or(l.unit_price_minor, |t| t.unit_price_minor);
            push(
                INVOICE_LINES,
                row([
                    text(&l.tenant),
                    text(&l.invoice_id),
                    text(&l.line_id),
                    text(&l.description),
                    text(&l.meter),
                    Cell::Int(l.quantity),
                    money(unit, &l.currency, env)?,
                    Cell::UInt(u64::from(!l.tiers.is_empty())),
                    money(l.amount_minor, &l.currency, env)?,
                    text(&l.currency),
                    Cell::Time(env.occurred_at),
                ]),
            );
        }
        DomainEvent::Policy(PolicyEvent::PolicyDecisionRecorded(d)) => push(
            POLICY_DECISIONS,
            row([
                text(&d.tenant),
                text(&d.policy_id),
                Cell::Int(i64::from(d.version)),
                opt_text(d.request.subject.role.as_deref()),
                Cell::List(d.request.subject.scopes.clone()),
                text(&d.request.resource.tenant),
                text(&d.request.resource.classification),
                text(&d.request.action),
                text(match d.decision {
                    Effect::Allow => "allow",
                    Effect::Deny => "deny",
                }),
                opt_text(d.matched_rule.as_deref()),
                Cell::Time(d.decided_at),
            ]),
        ),
        DomainEvent::Deployment(d) => {
            let full = |v: &str| Cell::Shares(vec![(v.to_owned(), 100)]);
            let (tenant, model, environment, action, version, traffic) = match d {
                DeploymentEvent::ModelDeployed(e) => (
                    &e.tenant,
                    &e.model,
                    &e.environment,
                    "deployed",
                    Some(e.version.as_str()),
                    shares(&e.traffic),
                ),
                DeploymentEvent::TrafficShifted(e) => (
                    &e.tenant,
                    &e.model,
                    &e.environment,
                    "traffic_shifted",
                    Some(e.version.as_str()),
                    shares(&e.traffic),
                ),
                DeploymentEvent::ModelPromoted(e) => (
                    &e.tenant,
                    &e.model,
                    &e.environment,
                    "promoted",
                    Some(e.version.as_str()),
                    full(&e.version),
                ),
                DeploymentEvent::DeploymentRolledBack(e) => (
                    &e.tenant,
                    &e.model,
                    &e.environment,
                    "rolled_back",
                    Some(e.to_version.as_str()),
                    full(&e.to_version),
                ),
                DeploymentEvent::DeploymentRetired(e) => (
                    &e.tenant,
                    &e.model,
                    &e.environment,
                    "retired",
                    None,
                    Cell::Shares(Vec::new()),
                ),
            };
            push(
                DEPLOYMENTS,
                row([
                    text(tenant),
                    text(model),
                    text(environment),
                    text(action),
                    opt_text(version),
                    traffic,
                    text(env.actor),
                    Cell::Time(env.occurred_at),
                ]),
            );
        }
        _ => {}
    }
    Ok(())
}

/// The schema reference for analysts, in Markdown (`docs/analytics.md`).
pub fn reference_markdown() -> String {
    let mut s = String::from(
        "# Analytics tables\n\n\
         <!-- Generated from projections/src/analytics/model.rs by \
         `annals sql --tables`; a test keeps it in step. -->\n\n\
         `annals sql \"<query>\"` answers from these tables: on ClickHouse when \
         `[read_models] clickhouse` is configured in `annals.toml`, otherwise on the embedded Parquet files with \
         DataFusion. Names, columns and values are the same on both. Times are UTC with \
         microseconds; money is exact, in major units of its currency (`Decimal(18, 3)`).\n\n\
         On ClickHouse the tables are `ReplacingMergeTree`s: a re-applied batch may leave \
         duplicate rows until a merge, so query with `FINAL` (or the setting `final = 1`, \
         which `annals sql` sets for you).\n\n\
         One difference between the engines: a map lookup of a missing key (`attributes['x']`, \
         `traffic['v9']`) is null on DataFusion and the type's default (`''`, `0`) on \
         ClickHouse; write `coalesce(traffic['v9'], 0)` to get the same answer from both.\n\n\
         Retention: `[retention]` in annals.toml gives a table a time to live (e.g. \
         `signals = \"90d\"`), counted on the column each table is partitioned by. \
         `annals retention run --dry-run` lists the rows past it per tenant and records the \
         list; `annals retention apply RUN_ID` removes exactly those rows (both are events in \
         the log: `tenancy.RetentionReviewed`, `tenancy.RetentionApplied`). The log itself \
         keeps every event, and a rebuilt table removes the same rows again.\n",
    );
    for t in TABLES {
        s.push_str(&format!("\n## `{}`\n\n{}\n\n", t.name, t.doc));
        s.push_str(&format!(
            "Sorted by `{}`; partitioned by month of `{}`.\n\n",
            t.order_by.join(", "),
            t.month_of
        ));
        s.push_str("| column | type (ClickHouse) | meaning |\n| --- | --- | --- |\n");
        for c in t.columns {
            s.push_str(&format!(
                "| `{}` | `{}` | {} |\n",
                c.name,
                c.ty.clickhouse(),
                c.doc
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    /// The order rows are stored in, stated directly: cell by cell along `order_by`, null
    /// first, text and numbers by value.
    fn reference(t: &Table, a: &[Cell], b: &[Cell]) -> Ordering {
        for c in t.order_by {
            let i = column_index(t, c).unwrap();
            let o = match (&a[i], &b[i]) {
                (Cell::Null, Cell::Null) => Ordering::Equal,
                (Cell::Null, _) => Ordering::Less,
                (_, Cell::Null) => Ordering::Greater,
                (Cell::Text(x), Cell::Text(y)) => x.cmp(y),
                (Cell::Int(x), Cell::Int(y)) | (Cell::Time(x), Cell::Time(y)) => x.cmp(y),
                (Cell::UInt(x), Cell::UInt(y)) => x.cmp(y),
                _ => Ordering::Equal,
            };
            if o.is_ne() {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Rows out of log order (every key compared), and rows made in log order, two per event
    /// (the row's index stands in for `log_partition` and `seq`).
    #[test]
    fn rows_are_sorted_as_their_cells_order() {
        let t = &TABLES[0];
        let texts = ["acme", "", "b", "Acme", "acme-2", "ä"];
        let log_keys = [column_index(t, "log_partition"), column_index(t, "seq")];
        for in_log_order in [false, true] {
            let mut set = RowSet::default();
            for n in 0..500u64 {
                let mut row = vec![Cell::Null; t.columns.len()];
                for (k, c) in t.order_by.iter().enumerate() {
                    let i = column_index(t, c).unwrap();
                    let pick = (n * 7 + k as u64 * 13) % 11;
                    row[i] = match t.columns[i].ty {
                        _ if in_log_order && Some(i) == log_keys[0] => Cell::UInt(3),
                        _ if in_log_order && Some(i) == log_keys[1] => Cell::UInt(n / 2),
                        _ if pick == 0 => Cell::Null,
                        ColumnType::Category | ColumnType::Text | ColumnType::NullableText => {
                            Cell::Text(texts[(pick as usize) % texts.len()].to_owned())
                        }
                        ColumnType::Time => Cell::Time((pick as i64 - 5) * 1_000_000),
                        _ => Cell::UInt(500 - n),
                    };
                }
                set.tables[0].push(row);
            }
            let mut want = set.tables[0].clone();
            want.sort_by(|a, b| reference(t, a, b));
            set.sort();
            assert_eq!(set.tables[0], want, "in log order: {in_log_order}");
        }
    }
}
