//! annals-projections: read models built from the log.
//!
//! Owns: the projection runtime ([`runtime`]: the [`Projection`] trait, batches applied with
//! their position in the same transaction, catch-up, status, digests), rebuilds into shadow
//! tables swapped in once caught up ([`shadow`]), the stores ([`store`]: SQLite embedded under
//! `<data-dir>/read-models/`, PostgreSQL through `sqlx`, tenant-scoped sessions under row-level
//! security) and the read models themselves ([`current_state`]), and the analytics tables on
//! Parquet+DataFusion or ClickHouse ([`analytics`]).
//!
//! Must not: decide commands or have side effects beyond its own tables: projections are pure
//! functions of (read-model state, event).

pub mod analytics;
pub mod current_state;
pub mod follow;
pub mod runtime;
pub mod shadow;
pub mod store;

pub use current_state::CurrentState;
pub use runtime::{
    BatchOutcome, CatchUp, DEFAULT_BATCH, DomainEvent, PartitionStatus, Positions, Projection,
    ProjectionError, Rows, Status, TableSpec, apply_batch, apply_in, catch_up, catch_up_to, digest,
    digest_rows, dump, dump_in, migrate, positions, read_batch, status, tenant_rows,
};
pub use shadow::{
    Rebuilt, create_shadow, dump_shadow, fill_shadow, fill_shadow_to, rebuild, shadow_name,
    swap_shadow,
};
pub use store::{Backend, BackendKind, READER_ROLE, Store, StoreError, Tx, Value};

/// Names of the projections this build has.
pub const PROJECTIONS: &[&str] = &[CurrentState::NAME, analytics::NAME];

/// Crash testing: when the environment variable `ANNALS_FAILPOINT` names this point, the
/// process aborts here, as a crash or `kill -9` would stop it. Points: between a batch's rows
/// and its position (`analytics.clickhouse.before_position`, `analytics.parquet.before_commit`,
/// `current_state.before_commit`), and in a current-state rebuild between the fill and the swap
/// (`current_state.rebuild.before_swap`) and before the swap's commit
/// (`current_state.swap.before_commit`). Unset in normal operation, where this is one lookup per batch.
pub fn failpoint(name: &str) {
    if std::env::var("ANNALS_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
