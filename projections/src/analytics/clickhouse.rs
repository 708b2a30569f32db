//! The distributed analytics store: ClickHouse, through the `clickhouse` crate over HTTP.
//!
//! Every table is a `ReplacingMergeTree(seq)` partitioned by month and sorted by its
//! `order_by`, which ends with (log_partition, seq): a row written twice (a batch re-applied
//! after a crash) is the same row with the same key, and merges keep one. Each insert also
//! carries an `insert_deduplication_token` naming the batch and table, so a retried insert is
//! dropped at once (the tables keep a deduplication window). Positions live in
//! `annals_positions`, inserted after the batch's rows; queries read with `final = 1`.
//!
//! Rows are sent as `RowBinary` encoded here from the model's cells, so the table definitions
//! in [`model`](super::model) are the only place a column is declared.

use std::collections::BTreeMap;

use clickhouse::{Client, Compression};

use super::model::{Cell, ColumnType, TABLES, Table};
use super::retention::Deletion;
use super::{AnalyticsError, Batch, Format, Position};

const POSITIONS: &str = "annals_positions";
/// Suffix of the shadow tables a rebuild fills.
const SHADOW: &str = "__rebuild";

/// The ClickHouse analytics store.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    url: String,
    database: String,
    suffix: &'static str,
    /// Held while a retention run's rows are deleted from a shadow table: the deletion is a
    /// mutation, which runs only while the table's merges do (see [`Self::set_merges`]).
    deleting: std::sync::Arc<tokio::sync::Mutex<()>>,
}

fn failed(context: &str) -> impl FnOnce(clickhouse::error::Error) -> AnalyticsError {
    move |e| {
        if matches!(
            e,
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
        ) {
            AnalyticsError::Unavailable(format!(
                "{context}: ClickHouse is unreachable ({e}); is it running? (`scripts/services up`)"
            ))
        } else {
            AnalyticsError::Store(format!("{context}: {e}"))
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The rows a retention run's deletion matches, as a `WHERE` condition: the same rows the
/// dry run lists and the live run removes.
fn predicate(d: &Deletion) -> String {
    format!(
        "tenant = {} AND log_partition = {} AND seq < {} AND `{}` < fromUnixTimestamp64Micro(toInt64({}), 'UTC')",
        quote(&d.tenant),
        d.partition,
        d.before_seq,
        d.time_column(),
        d.cutoff
    )
}

impl ClickHouseStore {
    /// A store in `database` of the server at `url` (e.g. `http://127.0.0.1:8123`).
    pub fn new(url: &str, database: &str) -> Result<ClickHouseStore, AnalyticsError> {
        if !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || database.is_empty()
        {
            return Err(AnalyticsError::Store(format!(
                "ClickHouse database `{database}`: use letters, digits and `_` only"
            )));
        }
        let client = Client::default()
            .with_url(url)
            .with_database(database)
            .with_compression(Compression::None)
            // Inserts are acknowledged when they are in the table, not in a buffer.
            .with_setting("async_insert", "0");
        Ok(ClickHouseStore {
            client,
            url: url.to_owned(),
            database: database.to_owned(),
            suffix: "",
            deleting: Default::default(),
        })
    }

    pub fn describe(&self) -> String {
        format!("{} (database {})", self.url, self.database)
    }

    fn table_name(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    fn create_sql(&self, t: &Table) -> String {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                format!(
                    "  `{}` {} COMMENT {}",
                    c.name,
                    c.ty.clickhouse(),
                    quote(c.doc)
                )
            })
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS `{}` (\n{}\n) ENGINE = ReplacingMergeTree(seq)\n\
             PARTITION BY toYYYYMM(`{}`)\nORDER BY ({})\n\
             SETTINGS non_replicated_deduplication_window = 1000\nCOMMENT {}",
            self.table_name(t.name),
            cols.join(",\n"),
            t.month_of,
            t.order_by.join(", "),
            quote(t.doc)
        )
    }

    /// Creates the database (if the server lets us) and the tables.
    pub async fn prepare(&self) -> Result<(), AnalyticsError> {
        self.ensure_database().await?;
        for t in TABLES {
            self.client
                .query_raw(&self.create_sql(t))
                .execute()
                .await
                .map_err(failed(&format!("cannot create table {}", t.name)))?;
        }
        self.client
            .query_raw(&format!(
                "CREATE TABLE IF NOT EXISTS `{}` (\n  log_partition UInt32,\n  next_seq UInt64,\n  \
                 last_recorded_at DateTime64(6, 'UTC')\n) ENGINE = ReplacingMergeTree(next_seq) \
                 ORDER BY log_partition\nCOMMENT 'Where the analytics projection stands in each log partition.'",
                self.table_name(POSITIONS)
            ))
            .execute()
            .await
            .map_err(failed("cannot create the positions table"))?;
        self.set_merges().await;
        Ok(())
    }

    /// Shadow tables being filled by a rebuild are not merged: every batch is a part, and
    /// merging parts that more parts will join only takes cores from the inserts. Live tables
    /// (among them a shadow just swapped in, or one a crashed rebuild left) merge as usual.
    async fn set_merges(&self) {
        let verb = if self.suffix == SHADOW {
            "STOP"
        } else {
            "START"
        };
        for name in TABLES.iter().map(|t| t.name) {
            self.merges(verb, &self.table_name(name)).await;
        }
    }

    /// `SYSTEM START|STOP MERGES` for one table. The server may refuse a user without the
    /// `SYSTEM MERGES` grant; that costs only speed, so it is logged, not returned.
    async fn merges(&self, verb: &str, table: &str) {
        let sql = format!("SYSTEM {verb} MERGES `{}`.`{table}`", self.database);
        if let Err(e) = self.client.query_raw(&sql).execute().await {
            tracing::warn!(%table, error = %e, "cannot {} merges", verb.to_lowercase());
        }
    }

    async fn ensure_database(&self) -> Result<(), AnalyticsError> {
        let root = self.client.clone().with_database("system");
        // A user without the CREATE DATABASE grant can use a database made for it.
        let exists = root
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(&self.database)
            .fetch_one::<u64>()
            .await
            .map_err(failed("cannot list the databases"))?;
        if exists > 0 {
            return Ok(());
        }
        root.query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}` ENGINE = Atomic",
            self.database
        ))
        .execute()
        .await
        .map_err(failed("cannot create the analytics database"))
    }

    async fn fetch_tsv(&self, sql: &str) -> Result<Vec<Vec<String>>, AnalyticsError> {
        let bytes = self
            .client
            .query_raw(sql)
            .fetch_bytes("TabSeparated")
            .map_err(failed("query failed"))?
            .collect()
            .await
            .map_err(failed("query failed"))?;
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect())
    }

    pub async fn positions(&self) -> Result<BTreeMap<u32, Position>, AnalyticsError> {
        let rows = self
            .fetch_tsv(&format!(
                "SELECT log_partition, max(next_seq), toUnixTimestamp64Micro(argMax(last_recorded_at, next_seq)) \
                 FROM `{}` GROUP BY log_partition",
                self.table_name(POSITIONS)
            ))
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let bad = || AnalyticsError::Store(format!("unexpected position row {r:?}"));
            let p: u32 = r.first().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let next_seq: u64 = r.get(1).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let last_recorded_at = r.get(2).and_then(|v| v.parse().ok());
            out.insert(
                p,
                Position {
                    next_seq,
                    last_recorded_at,
                },
            );
        }
        Ok(out)
    }

    async fn insert(
        &self,
        table: &str,
        columns: &[&str],
        data: Vec<u8>,
        token: &str,
    ) -> Result<(), AnalyticsError> {
        let cols: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
        let mut insert = self
            .client
            .insert_formatted_with(format!(
                "INSERT INTO `{table}` ({}) FORMAT RowBinary",
                cols.join(", ")
            ))
            .with_setting("insert_deduplication_token", token)
            // Signals of one batch may span many months (their own timestamps).
            .with_setting("max_partitions_per_insert_block", "0")
            // A batch holds each (log_partition, seq) once: nothing to collapse on insert.
            .with_setting("optimize_on_insert", "0");
        let context = format!("cannot insert into {table}");
        insert.send(data.into()).await.map_err(failed(&context))?;
        insert.end().await.map_err(failed(&context))
    }

    /// The stored position of one partition.
    async fn partition_position(&self, partition: u32) -> Result<u64, AnalyticsError> {
        let rows = self
            .fetch_tsv(&format!(
                "SELECT max(next_seq) FROM `{}` WHERE log_partition = {partition}",
                self.table_name(POSITIONS)
            ))
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Inserts the batch's rows table by table, then its position — the position only if the
    /// stored one is still the batch's start, so a writer whose tables were swapped by a
    /// rebuild meanwhile cannot move the new tables' position past rows they lack.
    pub async fn write(&self, batch: Batch) -> Result<(), AnalyticsError> {
        let stored = self.partition_position(batch.partition).await?;
        if batch.next <= stored {
            return Ok(());
        }
        if batch.first != stored {
            return Err(AnalyticsError::Store(format!(
                "analytics partition {}: a batch starting at seq {} does not follow the stored position {stored}",
                batch.partition, batch.first
            )));
        }
        for (t, rows) in TABLES.iter().zip(batch.rows.tables.iter()) {
            if rows.is_empty() {
                continue;
            }
            let mut data = Vec::with_capacity(rows.len() * 128);
            for row in rows {
                for (cell, c) in row.iter().zip(t.columns) {
                    encode(&mut data, c.ty, cell).map_err(|e| {
                        AnalyticsError::Store(format!("{}.{}: {e}", t.name, c.name))
                    })?;
                }
            }
            let columns: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
            let token = format!(
                "{}:p{}:{}-{}:{}",
                super::NAME,
                batch.partition,
                batch.first,
                batch.next,
                t.name
            );
            self.insert(&self.table_name(t.name), &columns, data, &token)
                .await?;
        }
        // Retention runs in the batch: their rows go before the position moves past them.
        for d in &batch.rows.deletions {
            let table = self.table_name(d.table_name());
            // On a shadow table, merges (and with them mutations) run for the deletion's time:
            // one deletion at a time, so none stops the merges another is waiting on.
            let shadow = self.suffix == SHADOW;
            let _one_at_a_time = if shadow {
                let held = self.deleting.lock().await;
                self.merges("START", &table).await;
                Some(held)
            } else {
                None
            };
            let deleted = self
                .client
                .query_raw(&format!(
                    "ALTER TABLE `{table}` DELETE WHERE {}",
                    predicate(d)
                ))
                // Wait until the rows are gone from the table's parts, not only marked.
                .with_setting("mutations_sync", "2")
                .execute()
                .await;
            if shadow {
                self.merges("STOP", &table).await;
            }
            deleted.map_err(failed(&format!(
                "cannot remove the rows of a retention run from {}",
                d.table_name()
            )))?;
        }
        crate::failpoint("analytics.clickhouse.before_position");
        let positions = self.table_name(POSITIONS);
        let (p, first, next, at) = (
            batch.partition,
            batch.first,
            batch.next,
            batch.last_recorded_at,
        );
        self.client
            .query_raw(&format!(
                "INSERT INTO `{positions}` (log_partition, next_seq, last_recorded_at) \
                 SELECT {p}, {next}, fromUnixTimestamp64Micro(toInt64({at}), 'UTC') \
                 WHERE (SELECT max(next_seq) FROM `{positions}` WHERE log_partition = {p}) = {first}"
            ))
            .with_setting(
                "insert_deduplication_token",
                format!("{}:p{p}:{first}-{next}:position", super::NAME),
            )
            .execute()
            .await
            .map_err(failed(&format!("cannot store the position of partition {p}")))?;
        let now = self.partition_position(p).await?;
        if now < next {
            return Err(AnalyticsError::Store(format!(
                "analytics partition {p}: the position moved to {now} while seq {first}..{next} was written (a rebuild swapped the tables); the batch is applied again"
            )));
        }
        Ok(())
    }

    /// `(seq, time)` of every stored row `d` matches.
    pub async fn matching(&self, d: &Deletion) -> Result<Vec<(u64, i64)>, AnalyticsError> {
        let rows = self
            .fetch_tsv(&format!(
                "SELECT seq, toUnixTimestamp64Micro(`{}`) FROM `{}` FINAL WHERE {} ORDER BY seq",
                d.time_column(),
                self.table_name(d.table_name()),
                predicate(d)
            ))
            .await?;
        rows.into_iter()
            .map(|r| {
                let bad = || AnalyticsError::Store(format!("unexpected row {r:?}"));
                let seq = r.first().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                let time = r.get(1).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                Ok((seq, time))
            })
            .collect()
    }

    pub async fn row_counts(&self) -> Result<BTreeMap<String, u64>, AnalyticsError> {
        let mut out = BTreeMap::new();
        for t in TABLES {
            let rows = self
                .fetch_tsv(&format!(
                    "SELECT count() FROM `{}` FINAL",
                    self.table_name(t.name)
                ))
                .await?;
            let n = rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.insert(t.name.to_owned(), n);
        }
        Ok(out)
    }

    /// The same database with the shadow tables (dropped first if a rebuild left them).
    pub fn shadow(&self) -> ClickHouseStore {
        ClickHouseStore {
            suffix: SHADOW,
            ..self.clone()
        }
    }

    async fn drop_tables(&self) -> Result<(), AnalyticsError> {
        for name in TABLES.iter().map(|t| t.name).chain([POSITIONS]) {
            self.client
                .query_raw(&format!(
                    "DROP TABLE IF EXISTS `{}` SYNC",
                    self.table_name(name)
                ))
                .execute()
                .await
                .map_err(failed("cannot drop a table"))?;
        }
        Ok(())
    }

    /// Exchanges each live table with its shadow (atomic per table), then drops the old ones.
    pub async fn swap_in(&self, new: ClickHouseStore) -> Result<(), AnalyticsError> {
        // The live tables may not exist yet (a first build done as a rebuild).
        self.prepare().await?;
        for name in TABLES.iter().map(|t| t.name).chain([POSITIONS]) {
            self.client
                .query_raw(&format!(
                    "EXCHANGE TABLES `{}` AND `{}`",
                    self.table_name(name),
                    new.table_name(name)
                ))
                .execute()
                .await
                .map_err(failed(&format!("cannot swap in the rebuilt {name}")))?;
        }
        new.drop_tables().await
    }

    /// Drops the whole database (scratch databases of benchmarks and tests).
    pub async fn drop_database(&self) -> Result<(), AnalyticsError> {
        self.client
            .clone()
            .with_database("system")
            .query(&format!("DROP DATABASE IF EXISTS `{}` SYNC", self.database))
            .execute()
            .await
            .map_err(failed("cannot drop the database"))
    }

    /// Prepares a rebuild: removes shadow tables an earlier rebuild left.
    pub async fn clear(&self) -> Result<(), AnalyticsError> {
        self.ensure_database().await?;
        self.drop_tables().await
    }

    /// Runs an analyst's query with `final = 1` (deduplicated rows) and renders it.
    pub async fn query(&self, sql: &str, format: Format) -> Result<String, AnalyticsError> {
        let fmt = match format {
            Format::Table => "PrettyCompactMonoBlock",
            // Rendered here, as DataFusion's CSV is: quoted only where needed, NULL empty.
            Format::Csv => "JSONCompact",
            Format::Json => "JSON",
        };
        let bytes = self
            .client
            .query_raw(sql)
            // CSV: decimals as their exact text ("19.280"), not a float.
            .with_setting(
                "output_format_json_quote_decimals",
                if format == Format::Csv { "1" } else { "0" },
            )
            .with_setting("final", "1")
            .with_setting("readonly", "2")
            .with_setting("output_format_pretty_color", "0")
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .fetch_bytes(fmt)
            .map_err(failed("query failed"))?
            .collect()
            .await
            .map_err(|e| match e {
                clickhouse::error::Error::BadResponse(m) => AnalyticsError::Query(m),
                other => failed("query failed")(other),
            })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if format == Format::Json {
            // ClickHouse's JSON wraps rows with metadata; keep the rows, as DataFusion prints.
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                AnalyticsError::Store(format!("unreadable JSON from ClickHouse: {e}"))
            })?;
            return Ok(v.get("data").cloned().unwrap_or_default().to_string());
        }
        if format == Format::Csv {
            return compact_to_csv(&text);
        }
        Ok(text)
    }
}

/// ClickHouse's `JSONCompact` output as CSV the way the embedded engine writes it: a header
/// row, fields quoted only when they hold a comma, quote or line break, NULL as empty.
fn compact_to_csv(text: &str) -> Result<String, AnalyticsError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| AnalyticsError::Store(format!("unreadable JSON from ClickHouse: {e}")))?;
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let cell = |c: &serde_json::Value| match c {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => field(s),
        other => field(&other.to_string()),
    };
    let mut out = String::new();
    let names: Vec<String> = v["meta"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|c| field(c["name"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&names.join(","));
    out.push('\n');
    for row in v["data"].as_array().into_iter().flatten() {
        let cells: Vec<String> = row.as_array().into_iter().flatten().map(cell).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes one cell in ClickHouse's RowBinary for the column's type.
fn encode(out: &mut Vec<u8>, ty: ColumnType, cell: &Cell) -> Result<(), String> {
    use ColumnType as T;
    match (ty, cell) {
        (T::Category | T::Text, Cell::Text(s)) => put_str(out, s),
        (T::NullableText, Cell::Text(s)) => {
            out.push(0);
            put_str(out, s);
        }
        (T::NullableText | T::NullableInt64 | T::NullableFloat64, Cell::Null) => out.push(1),
        (T::TextList, Cell::List(items)) => {
            put_varint(out, items.len() as u64);
            for i in items {
                put_str(out, i);
            }
        }
        (T::Int64, Cell::Int(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::NullableInt64, Cell::Int(v)) => {
            out.push(0);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (T::UInt32, Cell::UInt(v)) => {
            let v = u32::try_from(*v).map_err(|_| format!("{v} exceeds UInt32"))?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        (T::UInt64, Cell::UInt(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::NullableFloat64, Cell::Float(v)) => {
            out.push(0);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (T::Time, Cell::Time(v)) | (T::Money, Cell::Money(v)) => {
            out.extend_from_slice(&v.to_le_bytes())
        }
        (T::Labels, Cell::Labels(kv)) => {
            put_varint(out, kv.len() as u64);
            for (k, v) in kv {
                put_str(out, k);
                put_str(out, v);
            }
        }
        (T::Shares, Cell::Shares(kv)) => {
            put_varint(out, kv.len() as u64);
            for (k, v) in kv {
                put_str(out, k);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        (ty, cell) => {
            return Err(format!(
                "a {cell:?} does not fit a {} column",
                ty.clickhouse()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod csv_tests {
    use super::compact_to_csv;

    #[test]
    fn csv_quotes_only_where_needed_and_leaves_null_empty() {
        let text = r#"{"meta":[{"name":"tenant","type":"String"},{"name":"amount","type":"Decimal(18, 3)"},{"name":"n","type":"UInt64"},{"name":"note","type":"Nullable(String)"}],
            "data":[["t-1","19.280",3,null],["a,b","0.500",18446744073709551615,"say \"hi\"\nbye"]],"rows":2}"#;
        assert_eq!(
            compact_to_csv(text).unwrap(),
            "tenant,amount,n,note\nt-1,19.280,3,\n\"a,b\",0.500,18446744073709551615,\"say \"\"hi\"\"\nbye\"\n"
        );
    }
}
