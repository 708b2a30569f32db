//! Rebuilding a projection from seq 0 into shadow tables while the live tables keep serving,
//! then swapping the shadow tables in.
//!
//! Three steps, each a function of its own so that a caller (or a test) can stop between them;
//! [`rebuild`] runs them in turn:
//!
//! 1. [`create_shadow`] drops whatever an earlier, interrupted rebuild left behind, then creates
//!    for each live table `T` an empty `T__rebuild` with the same columns, keys and indexes. On
//!    PostgreSQL: `CREATE TABLE … (LIKE T INCLUDING ALL)`, then `T`'s row-level security
//!    switches, policies and grants, read from the catalog. On SQLite: `T`'s own `CREATE TABLE`
//!    and `CREATE INDEX` statements from `sqlite_schema`, with the names replaced (an index `X`
//!    becomes `X__rebuild`). The migrations the live tables have are recorded for the shadow
//!    under the name `<projection>__rebuild` in `read_model_migrations`.
//! 2. [`fill_shadow`] applies the log from the shadow position to the head in ordinary batches.
//!    Each batch commits its rows together with the shadow position (`<projection>__rebuild` in
//!    `projection_positions`). The projection's own statements run with their tables redirected
//!    to the shadow ones ([`Tx::redirect_tables`]). The live tables are not touched, so they
//!    keep answering readers and keep taking the live projection's batches. Passes repeat until
//!    one finds less than a batch to apply. Called again after an interruption, it resumes from
//!    the shadow position.
//! 3. [`swap_shadow`] is one short transaction. It holds off writers: on PostgreSQL it locks
//!    `projection_positions` against the live projection's batches, then the live tables; on
//!    SQLite it takes the write lock. Then it applies to the shadow the events that arrived
//!    since the fill, puts the shadow tables in the live tables' place, and moves the shadow
//!    position to the projection's name. Readers see all the old rows until the commit and all
//!    the new ones after it, and the rows and the position change together. On PostgreSQL the
//!    live tables are dropped, the shadow tables renamed into their place, and their indexes
//!    renamed to the names the live indexes had (policies belong to their table and move with
//!    it), so the next rebuild can use the shadow names again. SQLite cannot rename an index:
//!    there the live tables are renamed to `T__old` and the shadow tables into their place. Any
//!    secondary index (current state has none) is dropped and created again under its live
//!    name within the swap. The old tables are dropped after the commit, each in a transaction
//!    of its own: with `secure_delete`, a drop writes over every page of the table, which must
//!    not lengthen the swap.
//!
//! [`rebuild`] always starts the shadow over. A rebuild usually follows a change of the
//! projection's code, and an earlier shadow may have been filled by other code. A rebuild
//! killed at any point leaves the live tables as they were, plus a shadow that the next
//! rebuild drops. To resume a shadow instead, call [`fill_shadow`] and [`swap_shadow`]. If a
//! migration runs while a shadow is being filled, the swap refuses, because the shadow was
//! made before that migration: run the rebuild again. Two rebuilds of one projection at once
//! are not supported: the second drops the first's shadow, and the first then fails (rows
//! never mix, because each batch and its position commit together).
//!
//! PostgreSQL's `ALTER TABLE` is not MVCC-safe. A reader in the default READ COMMITTED
//! isolation sees the old table or the new one, each whole. A REPEATABLE READ transaction that
//! began before the swap and reads a table for the first time after it reads the new table as
//! of its older snapshot, so it can miss what the swap itself applied.

use std::collections::BTreeMap;
use std::time::Instant;

use annals_events::Topic;
use annals_schemas::Registry;
use serde::Serialize;

use crate::params;
use crate::runtime::{
    CatchUp, Projection, ProjectionError, Rows, Target, apply_at, catch_up_into, dump_in,
    lock_migrations, migrate, next_batch, positions_in,
};
use crate::store::{BackendKind, Store, Tx, check_ident, rename_identifiers};

/// Ends the names of the shadow tables, their indexes (on SQLite), and the shadow position.
pub const SHADOW_SUFFIX: &str = "__rebuild";

/// Ends the names of live tables replaced by a swap until they are dropped (SQLite).
const OLD_SUFFIX: &str = "__old";

/// [`fill_shadow`] ends after a pass that found less than a batch to apply, or after this many
/// passes (events arrive faster than it applies them): the swap applies the rest.
const MAX_FILL_PASSES: usize = 10;

/// How long a swap waits on PostgreSQL for the live projection's batch and the readers in
/// flight before it gives up (and is tried again).
const SWAP_LOCK_TIMEOUT: &str = "30s";

/// Attempts of a swap that lost a deadlock or timed out waiting for its locks (PostgreSQL).
const SWAP_ATTEMPTS: u64 = 3;

/// The name a projection's shadow position and migrations are stored under.
pub fn shadow_name(projection: &str) -> String {
    format!("{projection}{SHADOW_SUFFIX}")
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rebuilt {
    /// Every event applied to the shadow tables: by the fill and in the swap.
    pub total: CatchUp,
    /// What the swap's own transaction applied (the events written during the fill), and how
    /// long that transaction took.
    pub swap: CatchUp,
}

/// Rebuilds `projection` from seq 0 beside its live tables, then swaps the new tables in: a
/// fresh shadow ([`create_shadow`]), filled to the head ([`fill_shadow`]), swapped in
/// ([`swap_shadow`]).
pub async fn rebuild<P: Projection>(
    store: &Store,
    projection: &P,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<Rebuilt, ProjectionError> {
    let started = Instant::now();
    create_shadow(store, projection).await?;
    let mut total = fill_shadow(store, projection, topic, registry, batch).await?;
    crate::failpoint("current_state.rebuild.before_swap");
    let swap = swap_shadow(store, projection, topic, registry, batch).await?;
    total.add(&swap);
    total.seconds = started.elapsed().as_secs_f64();
    Ok(Rebuilt { total, swap })
}

/// The names a rebuild of `projection` uses.
struct Names {
    /// The projection's name.
    live: &'static str,
    /// The shadow position's (and migrations') name.
    position: String,
    /// (live table, shadow table), in the projection's order: the order a swap locks them in.
    tables: Vec<(String, String)>,
    /// Live table → shadow table: the redirection of the projection's statements.
    redirect: BTreeMap<String, String>,
}

impl Names {
    fn of<P: Projection>(projection: &P) -> Result<Names, ProjectionError> {
        let mut tables = Vec::new();
        for t in projection.tables() {
            let shadow = shadow_name(t.name);
            for name in [t.name, &shadow, &format!("{}{OLD_SUFFIX}", t.name)] {
                check_ident(name)?;
            }
            tables.push((t.name.to_owned(), shadow));
        }
        let redirect: BTreeMap<String, String> = tables.iter().cloned().collect();
        // The projection's statements are redirected by replacing identifiers: a column named
        // like a table would be replaced too.
        for t in projection.tables() {
            if let Some((c, _)) = t.columns.iter().find(|(c, _)| redirect.contains_key(*c)) {
                return Err(ProjectionError::Invalid(format!(
                    "table {} has a column named like a table ({c}): a shadow rebuild cannot redirect its statements",
                    t.name
                )));
            }
        }
        Ok(Names {
            live: projection.name(),
            position: shadow_name(projection.name()),
            tables,
            redirect,
        })
    }

    fn target(&self) -> Target<'_> {
        Target {
            position: &self.position,
            tables: Some(&self.redirect),
        }
    }
}

/// Drops what an earlier rebuild of `projection` left (shadow tables, old tables, the shadow
/// position), then creates empty shadow tables like the live ones and records the live
/// tables' migrations for them.
pub async fn create_shadow<P: Projection>(
    store: &Store,
    projection: &P,
) -> Result<(), ProjectionError> {
    migrate(store, projection).await?;
    let names = Names::of(projection)?;
    drop_leftovers(store, &names).await?;
    let mut tx = store.begin_write().await?;
    // No migration changes the live tables while they are copied.
    lock_migrations(&mut tx).await?;
    for (live, shadow) in &names.tables {
        let ddl = match tx.kind() {
            BackendKind::Postgres => postgres_shadow_ddl(&mut tx, live, shadow).await?,
            BackendKind::Sqlite => sqlite_shadow_ddl(&mut tx, live, &names.redirect).await?,
        };
        for statement in ddl {
            tx.execute_script(&statement).await?;
        }
    }
    tx.execute(
        "INSERT INTO read_model_migrations (projection, version) \
         SELECT $2, version FROM read_model_migrations WHERE projection = $1",
        params![names.live, &names.position],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(projection = names.live, "shadow tables created");
    Ok(())
}

/// Drops the shadow and old tables of `names` and forgets the shadow position, each table in
/// a transaction of its own (dropping a large SQLite table writes all its pages).
async fn drop_leftovers(store: &Store, names: &Names) -> Result<(), ProjectionError> {
    for (live, shadow) in &names.tables {
        for table in [shadow.clone(), format!("{live}{OLD_SUFFIX}")] {
            let mut tx = store.begin_write().await?;
            tx.execute_script(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
            tx.commit().await?;
        }
    }
    let mut tx = store.begin_write().await?;
    for table in ["projection_positions", "read_model_migrations"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE projection = $1"),
            params![&names.position],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL: the statements that make `shadow` like `live` — columns, defaults, constraints,
/// indexes (named by PostgreSQL after the shadow table), row-level security switches, policies
/// (their names are per table) and grants.
async fn postgres_shadow_ddl(
    tx: &mut Tx,
    live: &str,
    shadow: &str,
) -> Result<Vec<String>, ProjectionError> {
    let mut ddl = vec![format!("CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL)")];
    let rows = tx
        .fetch_texts(
            "SELECT stmt FROM (
               SELECT 1 AS step, format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', $2::text) AS stmt
                 FROM pg_class WHERE oid = to_regclass($1) AND relrowsecurity
               UNION ALL
               SELECT 2, format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', $2::text)
                 FROM pg_class WHERE oid = to_regclass($1) AND relforcerowsecurity
               UNION ALL
               SELECT 3, format('CREATE POLICY %I ON %I AS %s FOR %s TO %s', policyname, $2::text,
                        permissive, cmd,
                        (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                           FROM unnest(roles) AS r))
                      || coalesce(' USING (' || qual || ')', '')
                      || coalesce(' WITH CHECK (' || with_check || ')', '')
                 FROM pg_policies WHERE schemaname = current_schema() AND tablename = $1
               UNION ALL
               SELECT 4, format('GRANT %s ON %I TO %s%s', a.privilege_type, $2::text,
                        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,
                        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
                 FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
                 LEFT JOIN pg_roles r ON r.oid = a.grantee
                WHERE c.oid = to_regclass($1) AND a.grantee <> c.relowner
             ) AS s ORDER BY step, stmt",
            params![live, shadow],
        )
        .await?;
    ddl.extend(
        rows.into_iter()
            .filter_map(|r| r.into_iter().next().flatten()),
    );
    Ok(ddl)
}

/// SQLite: `live`'s own `CREATE TABLE` and `CREATE INDEX` statements, with every table of the
/// projection named by its shadow and each index `X` named `X__rebuild`.
async fn sqlite_shadow_ddl(
    tx: &mut Tx,
    live: &str,
    tables: &BTreeMap<String, String>,
) -> Result<Vec<String>, ProjectionError> {
    let objects = tx
        .fetch_texts(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = $1 AND sql IS NOT NULL \
             ORDER BY type <> 'table', name",
            params![live],
        )
        .await?;
    let mut renames = tables.clone();
    let mut statements = Vec::new();
    for object in &objects {
        let [Some(kind), Some(name), Some(sql)] = &object[..] else {
            continue;
        };
        match kind.as_str() {
            "table" => {}
            "index" => {
                check_ident(name)?;
                renames.insert(name.clone(), shadow_name(name));
            }
            _ => {
                return Err(ProjectionError::Invalid(format!(
                    "table {live} has a {kind} ({name}): a shadow rebuild copies tables and indexes only"
                )));
            }
        }
        statements.push(sql);
    }
    if statements.is_empty() {
        return Err(ProjectionError::Invalid(format!(
            "table {live} does not exist"
        )));
    }
    Ok(statements
        .iter()
        .map(|sql| rename_identifiers(sql, &renames))
        .collect())
}

/// Whether a shadow of `names` exists (was created and not swapped in yet).
async fn shadow_exists(tx: &mut Tx, names: &Names) -> Result<bool, ProjectionError> {
    let rows = tx
        .fetch_ints(
            "SELECT COUNT(*) FROM read_model_migrations WHERE projection = $1",
            params![&names.position],
        )
        .await?;
    Ok(rows.first().and_then(|r| r[0]).unwrap_or(0) > 0)
}

fn no_shadow(names: &Names) -> ProjectionError {
    ProjectionError::Invalid(format!(
        "projection {} has no shadow tables: create them first (a rebuild does)",
        names.live
    ))
}

/// Fills the shadow tables from the shadow position to the log's head, in batches of at most
/// `batch` events each committed with the shadow position, pass after pass until a pass finds
/// less than a batch to apply (events keep arriving while it runs).
pub async fn fill_shadow<P: Projection>(
    store: &Store,
    projection: &P,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, ProjectionError> {
    let started = Instant::now();
    let mut total = CatchUp::default();
    for _ in 0..MAX_FILL_PASSES {
        let ends = crate::runtime::head_seqs(topic);
        let pass = fill_shadow_to(store, projection, topic, registry, batch, &ends).await?;
        total.add(&pass);
        if pass.events < batch as u64 {
            break;
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// [`fill_shadow`] up to (excluding) the end seqs in `ends`, in one pass.
pub async fn fill_shadow_to<P: Projection>(
    store: &Store,
    projection: &P,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
    ends: &BTreeMap<u32, u64>,
) -> Result<CatchUp, ProjectionError> {
    let names = Names::of(projection)?;
    let mut tx = store.begin().await?;
    let exists = shadow_exists(&mut tx, &names).await?;
    tx.rollback().await?;
    if !exists {
        return Err(no_shadow(&names));
    }
    catch_up_into(
        store,
        projection,
        &names.target(),
        topic,
        registry,
        batch,
        ends,
    )
    .await
}

/// Every row of the shadow tables, under the live tables' names, as [`dump`] gives them.
///
/// [`dump`]: crate::runtime::dump
pub async fn dump_shadow<P: Projection>(
    store: &Store,
    projection: &P,
) -> Result<Rows, ProjectionError> {
    let names = Names::of(projection)?;
    let mut tx = store.begin().await?;
    if !shadow_exists(&mut tx, &names).await? {
        return Err(no_shadow(&names));
    }
    tx.redirect_tables(Some(names.redirect.clone()));
    let rows = dump_in(&mut tx, projection.tables()).await?;
    tx.rollback().await?;
    Ok(rows)
}

/// Swaps the filled shadow tables in, in one transaction: applies to them what the log holds
/// beyond the shadow position (in batches of at most `batch` events), puts them in the live
/// tables' place and moves the shadow position to the projection's name. Returns what it
/// applied and how long the transaction took.
///
/// On PostgreSQL a reader that holds some live tables and waits for another can deadlock with
/// the swap's locks, and PostgreSQL then aborts one of the two. A swap aborted that way, or that
/// waited longer than 30 s for its locks, is tried again, three times at most.
pub async fn swap_shadow<P: Projection>(
    store: &Store,
    projection: &P,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, ProjectionError> {
    let names = Names::of(projection)?;
    let mut attempt = 1;
    let out = loop {
        match swap_once(store, projection, &names, topic, registry, batch).await {
            Err(ProjectionError::Store(e)) if e.is_lock_conflict() && attempt < SWAP_ATTEMPTS => {
                tracing::warn!(projection = names.live, attempt, error = %e, "swap gave way to readers; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                attempt += 1;
            }
            done => break done?,
        }
    };
    if store.kind() == BackendKind::Sqlite {
        for (live, _) in &names.tables {
            let mut tx = store.begin_write().await?;
            tx.execute_script(&format!("DROP TABLE IF EXISTS {live}{OLD_SUFFIX}"))
                .await?;
            tx.commit().await?;
        }
    }
    Ok(out)
}

/// One attempt of [`swap_shadow`]'s transaction.
async fn swap_once<P: Projection>(
    store: &Store,
    projection: &P,
    names: &Names,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, ProjectionError> {
    let started = Instant::now();
    let mut tx = store.begin_write().await?;
    hold_off_writers(&mut tx, names).await?;
    if !shadow_exists(&mut tx, names).await? {
        return Err(no_shadow(names));
    }
    let live_versions = migration_versions(&mut tx, names.live).await?;
    if migration_versions(&mut tx, &names.position).await? != live_versions {
        return Err(ProjectionError::Invalid(format!(
            "the live tables of {} were migrated after its shadow tables were made: run the rebuild again",
            names.live
        )));
    }

    let mut out = catch_up_shadow_in(&mut tx, projection, names, topic, registry, batch).await?;

    match tx.kind() {
        BackendKind::Postgres => postgres_swap_tables(&mut tx, names).await?,
        BackendKind::Sqlite => sqlite_swap_tables(&mut tx, names).await?,
    }
    tx.execute(
        "DELETE FROM projection_positions WHERE projection = $1",
        params![names.live],
    )
    .await?;
    tx.execute(
        "UPDATE projection_positions SET projection = $1 WHERE projection = $2",
        params![names.live, &names.position],
    )
    .await?;
    tx.execute(
        "DELETE FROM read_model_migrations WHERE projection = $1",
        params![&names.position],
    )
    .await?;
    crate::failpoint("current_state.swap.before_commit");
    tx.commit().await?;
    out.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        projection = names.live,
        events = out.events,
        seconds = out.seconds,
        "shadow tables swapped in"
    );
    Ok(out)
}

/// Makes the swap's transaction the only writer of the projection's tables and positions
/// until it ends, waiting for a batch in flight. SQLite: the transaction holds the write lock
/// already ([`Store::begin_write`]). PostgreSQL: no migration, no position write (a batch takes
/// its position row before its tables, so it waits here without holding a table), and then
/// no reader of the live tables — readers in flight finish first, new ones wait for the commit.
async fn hold_off_writers(tx: &mut Tx, names: &Names) -> Result<(), ProjectionError> {
    if tx.kind() != BackendKind::Postgres {
        return Ok(());
    }
    tx.execute(
        &format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"),
        &[],
    )
    .await?;
    lock_migrations(tx).await?;
    tx.execute(
        "LOCK TABLE projection_positions IN SHARE ROW EXCLUSIVE MODE",
        &[],
    )
    .await?;
    let live: Vec<&str> = names.tables.iter().map(|(t, _)| t.as_str()).collect();
    tx.execute(
        &format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", live.join(", ")),
        &[],
    )
    .await?;
    Ok(())
}

/// The migration versions recorded under `name`, in order.
async fn migration_versions(tx: &mut Tx, name: &str) -> Result<Vec<i64>, ProjectionError> {
    let rows = tx
        .fetch_ints(
            "SELECT version FROM read_model_migrations WHERE projection = $1 ORDER BY version",
            params![name],
        )
        .await?;
    Ok(rows.into_iter().filter_map(|r| r[0]).collect())
}

/// Applies, inside `tx`, every partition's events from the shadow position to the head into
/// the shadow tables.
async fn catch_up_shadow_in<P: Projection>(
    tx: &mut Tx,
    projection: &P,
    names: &Names,
    topic: &Topic,
    registry: &Registry,
    batch: usize,
) -> Result<CatchUp, ProjectionError> {
    let stored = positions_in(tx, &names.position).await?;
    let mut out = CatchUp::default();
    tx.redirect_tables(Some(names.redirect.clone()));
    for partition in topic.partitions() {
        let p = partition.id();
        let head = partition.head().next_seq;
        let mut from = stored.get(&p).map_or(0, |(s, _)| *s);
        let mut reader = partition.reader(from);
        while from < head {
            let mut events = next_batch(&mut reader, batch.max(1))?;
            events.retain(|e| e.seq < head);
            let Some(last) = events.last() else { break };
            from = last.seq + 1;
            let o = apply_at(tx, projection, &names.position, registry, p, &events).await?;
            out.events += o.advanced;
            out.applied += o.applied;
            out.batches += 1;
        }
    }
    tx.redirect_tables(None);
    Ok(out)
}

/// PostgreSQL: drops each live table, renames its shadow into its place, and gives the shadow's
/// indexes the names the live table's indexes had (matched by definition).
async fn postgres_swap_tables(tx: &mut Tx, names: &Names) -> Result<(), ProjectionError> {
    for (live, shadow) in &names.tables {
        let live_indexes = postgres_indexes(tx, live).await?;
        let mut shadow_indexes = postgres_indexes(tx, shadow).await?;
        let mut ddl = format!("DROP TABLE {live};\nALTER TABLE {shadow} RENAME TO {live};\n");
        for (name, definition) in live_indexes {
            let Some(i) = shadow_indexes.iter().position(|(_, d)| *d == definition) else {
                return Err(ProjectionError::Invalid(format!(
                    "shadow table {shadow} has no index like {name} ({definition}): run the rebuild again"
                )));
            };
            let (copy, _) = shadow_indexes.swap_remove(i);
            if copy != name {
                ddl.push_str(&format!("ALTER INDEX \"{copy}\" RENAME TO \"{name}\";\n"));
            }
        }
        tx.execute_script(&ddl).await?;
    }
    Ok(())
}

/// A PostgreSQL table's indexes: (name, definition without the names: primary key or not,
/// unique or not, and from `USING` on).
async fn postgres_indexes(
    tx: &mut Tx,
    table: &str,
) -> Result<Vec<(String, String)>, ProjectionError> {
    let rows = tx
        .fetch_texts(
            "SELECT c.relname::text, \
                    concat_ws(' ', CASE WHEN i.indisprimary THEN 'PRIMARY' END, \
                              CASE WHEN i.indisunique THEN 'UNIQUE' END, \
                              substring(pg_get_indexdef(i.indexrelid) from ' USING .*$')) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) ORDER BY c.relname",
            params![table],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match &r[..] {
            [Some(name), Some(definition)] => Some((name.clone(), definition.clone())),
            _ => None,
        })
        .collect())
}

/// SQLite: renames each live table to `T__old` and its shadow into its place; creates the live
/// table's secondary indexes again under their names (SQLite cannot rename an index).
async fn sqlite_swap_tables(tx: &mut Tx, names: &Names) -> Result<(), ProjectionError> {
    for (live, shadow) in &names.tables {
        // Read before the rename, which rewrites them to name the old table.
        let indexes = tx
            .fetch_texts(
                "SELECT name, sql FROM sqlite_master \
                 WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name",
                params![live],
            )
            .await?;
        let mut ddl = format!(
            "ALTER TABLE {live} RENAME TO {live}{OLD_SUFFIX};\nALTER TABLE {shadow} RENAME TO {live};\n"
        );
        for index in indexes {
            if let [Some(name), Some(sql)] = &index[..] {
                ddl.push_str(&format!(
                    "DROP INDEX \"{name}\";\nDROP INDEX IF EXISTS \"{name}{SHADOW_SUFFIX}\";\n{sql};\n"
                ));
            }
        }
        tx.execute_script(&ddl).await?;
    }
    Ok(())
}
