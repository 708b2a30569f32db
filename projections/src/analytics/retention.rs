//! Retention in the analytics read model: which rows a retention run removes, listed exactly.
//!
//! A run (`tenancy.RetentionReviewed` / `tenancy.RetentionApplied`) names, per dataset (an
//! analytics table), a cutoff. Its rows are the tenant's rows of that table that come from
//! events of the tenant's log partition before the run's `bound` and whose time — the table's
//! month column — is before the cutoff. [`Deletion`] is that predicate; the dry run lists the
//! rows it matches ([`list`]) with a digest, and the projection, reaching `RetentionApplied`,
//! removes exactly the rows it matches from the stored tables and from the rest of its batch.
//! Because the removal is an event in the log, a rebuilt read model removes the same rows again.

use annals_domain::tenancy::RetentionRun;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::model::{Cell, TABLES, Table, column_index};
use super::{Analytics, AnalyticsError};

/// The rows one dataset of a retention run removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Index of the table in [`TABLES`].
    pub table: usize,
    pub tenant: String,
    pub partition: u32,
    /// Rows of events with a lower seq only.
    pub before_seq: u64,
    /// Rows whose time (the table's `month_of` column) is earlier only, µs since the epoch.
    pub cutoff: i64,
}

/// Where the predicate's columns are in a table's rows.
#[derive(Debug, Clone, Copy)]
pub struct PredicateColumns {
    pub tenant: usize,
    pub time: usize,
    pub partition: usize,
    pub seq: usize,
}

impl PredicateColumns {
    pub fn of(table: &Table) -> PredicateColumns {
        let at = |name: &str| column_index(table, name).expect("every analytics table has it");
        PredicateColumns {
            tenant: at("tenant"),
            time: at(table.month_of),
            partition: at("log_partition"),
            seq: at("seq"),
        }
    }
}

impl Deletion {
    /// The table's name.
    pub fn table_name(&self) -> &'static str {
        TABLES[self.table].name
    }

    /// The table's time column the cutoff applies to.
    pub fn time_column(&self) -> &'static str {
        TABLES[self.table].month_of
    }

    /// Whether the predicate holds for these values of a row.
    pub fn holds(&self, tenant: &str, partition: u32, seq: u64, time: i64) -> bool {
        partition == self.partition
            && seq < self.before_seq
            && time < self.cutoff
            && tenant == self.tenant
    }

    /// Whether a row of the table (as the model makes it) is one this deletion removes.
    pub fn matches(&self, row: &[Cell]) -> bool {
        let c = PredicateColumns::of(&TABLES[self.table]);
        let (Cell::Text(tenant), Cell::UInt(partition), Cell::UInt(seq), Cell::Time(time)) =
            (&row[c.tenant], &row[c.partition], &row[c.seq], &row[c.time])
        else {
            return false;
        };
        u32::try_from(*partition).is_ok_and(|p| self.holds(tenant, p, *seq, *time))
    }

    /// The deletions a run makes, one per dataset the model knows. `seq` is the run's own
    /// event: nothing at or after it is touched, whatever the run's bound says.
    pub fn of_run(run: &RetentionRun, partition: u32, seq: u64) -> Vec<Deletion> {
        run.datasets
            .iter()
            .filter_map(|cut| {
                let table = TABLES.iter().position(|t| t.name == cut.dataset)?;
                Some(Deletion {
                    table,
                    tenant: run.tenant.clone(),
                    partition,
                    before_seq: run.bound.min(seq),
                    cutoff: cut.cutoff,
                })
            })
            .collect()
    }
}

/// One row a deletion matches, as a dry run lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Listed {
    pub dataset: String,
    pub log_partition: u32,
    pub seq: u64,
    /// The row's time (µs since the epoch).
    pub time: i64,
}

/// Lists, in digest order, the rows that `deletions` match in the store.
pub async fn list(
    store: &Analytics,
    deletions: &[Deletion],
) -> Result<Vec<Listed>, AnalyticsError> {
    let mut out = Vec::new();
    for d in deletions {
        let found = match store {
            Analytics::Parquet(s) => {
                let (s, d) = (s.clone(), d.clone());
                tokio::task::spawn_blocking(move || s.matching(&d))
                    .await
                    .map_err(|e| AnalyticsError::Store(format!("a listing task failed: {e}")))??
            }
            Analytics::ClickHouse(s) => s.matching(d).await?,
        };
        out.extend(found.into_iter().map(|(seq, time)| Listed {
            dataset: d.table_name().to_owned(),
            log_partition: d.partition,
            seq,
            time,
        }));
    }
    out.sort();
    Ok(out)
}

/// SHA-256 (hex) of a listing: one line `dataset partition seq time` per row, in order.
pub fn digest(listed: &[Listed]) -> String {
    let mut h = Sha256::new();
    for l in listed {
        h.update(format!("{} {} {} {}\n", l.dataset, l.log_partition, l.seq, l.time).as_bytes());
    }
    hex::encode(h.finalize())
}
