//! The current-state read model on SQLite and PostgreSQL, from one golden input written through
//! the real command path: golden rows, redelivery, rollback before commit, gaps, rebuilds into
//! shadow tables (step by step, under readers, interrupted) and tenant isolation by row-level
//! security, before and after a rebuild.
//!
//! PostgreSQL tests read `ANNALS_TEST_POSTGRES` (set by `scripts/test`, from `scripts/services
//! up`). Unset with `ANNALS_SKIP_SERVERS=1`, they are skipped with a note; unset otherwise, they
//! fail. Each uses a schema of its own, so they run in parallel.

use std::collections::BTreeMap;
use std::path::Path;

use annals_events::Topic;
use annals_projections::{
    Backend, BackendKind, CurrentState, DEFAULT_BATCH, Projection, ProjectionError, Store, Value,
    apply_batch, apply_in, catch_up, catch_up_to, create_shadow, digest, dump, dump_in,
    dump_shadow, fill_shadow, fill_shadow_to, migrate, positions, read_batch, rebuild, shadow_name,
    status, swap_shadow,
};

mod common;
use common::{golden_log, registry, rt};

type Rows = BTreeMap<String, Vec<Vec<Option<String>>>>;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/current_state.json"
);

fn sqlite(dir: &Path, name: &str) -> Backend {
    Backend::Sqlite {
        path: dir.join(format!("{name}.sqlite")),
    }
}

/// A fresh PostgreSQL schema for one test, or `None` (skipped, with a note) when servers are
/// explicitly skipped.
fn postgres(rt: &tokio::runtime::Runtime, test: &str) -> Option<Backend> {
    let url = match std::env::var("ANNALS_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var("ANNALS_SKIP_SERVERS").as_deref() == Ok("1") => {
            eprintln!("note: {test} skipped: ANNALS_SKIP_SERVERS=1 and no ANNALS_TEST_POSTGRES");
            return None;
        }
        _ => panic!(
            "ANNALS_TEST_POSTGRES is not set: run `scripts/services up` and export the URL it prints (or run scripts/test), or set ANNALS_SKIP_SERVERS=1 to skip"
        ),
    };
    let backend = Backend::Postgres {
        url,
        schema: Some(format!("test_{test}")),
    };
    rt.block_on(Store::drop_schema(&backend)).unwrap();
    Some(backend)
}

fn golden_rows() -> Rows {
    serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap()
}

fn check_golden(rows: &Rows) {
    if std::env::var("ANNALS_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(Path::new(GOLDEN).parent().unwrap()).unwrap();
        std::fs::write(GOLDEN, serde_json::to_string_pretty(rows).unwrap() + "\n").unwrap();
    }
    let want = golden_rows();
    for table in want.keys().chain(rows.keys()) {
        assert_eq!(
            rows.get(table),
            want.get(table),
            "table {table} differs from {GOLDEN} (ANNALS_BLESS=1 rewrites it after a deliberate change)"
        );
    }
}

/// Golden rows, status and rebuild digest on one backend.
fn golden_on(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(dir.path());
    let reg = registry();
    let rt = rt();
    rt.block_on(async {
        let store = Store::open(&backend).await.unwrap();
        let p = CurrentState;
        let first = catch_up(&store, &p, &topic, &reg, DEFAULT_BATCH)
            .await
            .unwrap();
        let total: u64 = topic.partitions().iter().map(|p| p.head().next_seq).sum();
        assert_eq!(first.events, total);
        // Caught up: a second run applies nothing.
        let again = catch_up(&store, &p, &topic, &reg, DEFAULT_BATCH)
            .await
            .unwrap();
        assert_eq!(again.events, 0);

        let rows = dump(&store, &p).await.unwrap();
        check_golden(&rows);

        let st = status(&store, &p, &topic).await.unwrap();
        assert_eq!(st.lag_events, 0);
        assert_eq!(st.rows["tenants"], 4);
        assert_eq!(st.rows["invoices"], 4);
        assert!(st.partitions.iter().all(|x| x.position == x.head));

        // Rebuild from seq 0 gives the same rows.
        let before = digest(&store, &p).await.unwrap();
        let rebuilt = rebuild(&store, &p, &topic, &reg, 7).await.unwrap();
        assert_eq!(rebuilt.total.events, total);
        assert_eq!(digest(&store, &p).await.unwrap(), before);
        assert_eq!(status(&store, &p, &topic).await.unwrap().lag_events, 0);
        store.close().await;
    });
}

#[test]
fn golden_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    golden_on(sqlite(dir.path(), "golden"));
}

#[test]
fn golden_rows_on_postgres() {
    let rt = rt();
    if let Some(b) = postgres(&rt, "golden") {
        drop(rt);
        golden_on(b);
    }
}

/// Redelivery, small batches, rollback before commit and gaps, on one backend.
fn delivery_on(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(dir.path());
    let reg = registry();
    let rt = rt();
    rt.block_on(async {
        let store = Store::open(&backend).await.unwrap();
        let p = CurrentState;
        migrate(&store, &p).await.unwrap();
        let part = topic
            .partitions()
            .iter()
            .max_by_key(|p| p.head().next_seq)
            .unwrap();
        let id = part.id();
        let batch = read_batch(part, 0, 25).unwrap();
        assert_eq!(batch.len(), 25);

        // The same batch twice: the second changes nothing.
        let o1 = apply_batch(&store, &p, &reg, id, &batch).await.unwrap();
        assert_eq!((o1.advanced, o1.skipped), (25, 0));
        let after_first = dump(&store, &p).await.unwrap();
        let pos_first = positions(&store, p.name()).await.unwrap();
        let o2 = apply_batch(&store, &p, &reg, id, &batch).await.unwrap();
        assert_eq!((o2.advanced, o2.skipped), (0, 25));
        assert_eq!(dump(&store, &p).await.unwrap(), after_first);
        assert_eq!(positions(&store, p.name()).await.unwrap(), pos_first);
        assert_eq!(pos_first[&id].0, 25);

        // Overlapping redelivery: the already applied part is skipped, the rest applied once.
        let overlap = read_batch(part, 20, 10).unwrap();
        let o3 = apply_batch(&store, &p, &reg, id, &overlap).await.unwrap();
        assert_eq!((o3.advanced, o3.skipped), (5, 5));

        // A batch written but rolled back before commit (a crash between the writes and the
        // position update is the same thing): neither rows nor position moved.
        let before = dump(&store, &p).await.unwrap();
        let pos_before = positions(&store, p.name()).await.unwrap();
        let next = read_batch(part, 30, 20).unwrap();
        let mut tx = store.begin().await.unwrap();
        let o = apply_in(&mut tx, &p, &reg, id, &next).await.unwrap();
        assert_eq!(o.advanced, next.len() as u64);
        tx.rollback().await.unwrap();
        assert_eq!(dump(&store, &p).await.unwrap(), before);
        assert_eq!(positions(&store, p.name()).await.unwrap(), pos_before);
        // …and a transaction dropped without commit (the process died) is the same.
        {
            let mut tx = store.begin().await.unwrap();
            apply_in(&mut tx, &p, &reg, id, &next).await.unwrap();
        }
        assert_eq!(dump(&store, &p).await.unwrap(), before);

        // A batch that would skip events is refused, and changes nothing.
        let ahead = read_batch(part, 40, 5).unwrap();
        let err = apply_batch(&store, &p, &reg, id, &ahead).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProjectionError::Gap {
                    position: 30,
                    first: 40,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(dump(&store, &p).await.unwrap(), before);

        // Catching up from there, in tiny batches, gives the golden rows.
        catch_up(&store, &p, &topic, &reg, 3).await.unwrap();
        check_golden(&dump(&store, &p).await.unwrap());
        store.close().await;
    });
}

#[test]
fn redelivery_rollback_and_gaps_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    delivery_on(sqlite(dir.path(), "delivery"));
}

#[test]
fn redelivery_rollback_and_gaps_on_postgres() {
    let rt = rt();
    if let Some(b) = postgres(&rt, "delivery") {
        drop(rt);
        delivery_on(b);
    }
}

#[test]
fn postgres_row_level_security_isolates_tenants() {
    let rt = rt();
    let Some(backend) = postgres(&rt, "rls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(dir.path());
    let reg = registry();
    rt.block_on(async {
        let store = Store::open(&backend).await.unwrap();
        assert_eq!(store.kind(), BackendKind::Postgres);
        let p = CurrentState;
        catch_up(&store, &p, &topic, &reg, DEFAULT_BATCH)
            .await
            .unwrap();
        let all = dump(&store, &p).await.unwrap();
        check_isolation(&store, &all).await;

        // The tables a rebuild swapped in isolate tenants the same way, twice in a row.
        for _ in 0..2 {
            rebuild(&store, &p, &topic, &reg, 7).await.unwrap();
            assert_eq!(dump(&store, &p).await.unwrap(), all);
            check_isolation(&store, &all).await;
        }
        store.close().await;
    });
}

/// Tenant sessions see exactly their tenant's rows of `all`, cannot write, and cannot read the
/// projector's positions.
async fn check_isolation(store: &Store, all: &Rows) {
    let p = CurrentState;
    for tenant in ["tenant-000", "tenant-001"] {
        let mut tx = store.tenant_session(tenant).await.unwrap();
        let seen = dump_in(&mut tx, p.tables()).await.unwrap();
        tx.rollback().await.unwrap();
        let mut any = 0;
        for (table, rows) in all {
            let mine: Vec<_> = rows
                .iter()
                .filter(|r| r[0].as_deref() == Some(tenant))
                .cloned()
                .collect();
            assert!(!mine.is_empty() || table == "invoice_credits", "{table}");
            any += seen[table].len();
            assert_eq!(seen[table], mine, "{tenant} in {table}");
        }
        assert!(any > 0);
    }

    // Without a tenant, a reader session sees nothing.
    let mut tx = store.tenant_session("").await.unwrap();
    let seen = dump_in(&mut tx, p.tables()).await.unwrap();
    assert!(seen.values().all(Vec::is_empty));
    tx.rollback().await.unwrap();

    // A tenant session cannot write, nor read the projector's positions.
    let mut tx = store.tenant_session("tenant-000").await.unwrap();
    let err = tx
        .execute("DELETE FROM tenants WHERE tenant = 'tenant-001'", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only") || err.to_string().contains("permission"));
    tx.rollback().await.unwrap();
    let mut tx = store.tenant_session("tenant-000").await.unwrap();
    assert!(
        tx.fetch_ints("SELECT next_seq FROM projection_positions", &[])
            .await
            .is_err()
    );
    tx.rollback().await.unwrap();

    // Nothing above changed the model.
    assert_eq!(&dump(store, &p).await.unwrap(), all);
}

#[test]
fn sqlite_has_no_tenant_sessions() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&sqlite(dir.path(), "x")).await.unwrap();
        let err = store.tenant_session("acme").await.err().unwrap();
        assert!(err.to_string().contains("PostgreSQL"));
    });
}

/// Pipelined writes inline their parameters as literals: every character must survive, and no
/// value may be read as SQL.
#[test]
fn pipelined_writes_keep_every_character_on_postgres() {
    let rt = rt();
    let Some(backend) = postgres(&rt, "pipeline") else {
        return;
    };
    pipelined_on(&rt, backend);
}

#[test]
fn pipelined_writes_keep_every_character_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    pipelined_on(&rt(), sqlite(dir.path(), "pipeline"));
}

fn pipelined_on(rt: &tokio::runtime::Runtime, backend: Backend) {
    rt.block_on(async {
        let store = Store::open(&backend).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.execute_script("CREATE TABLE t (k BIGINT PRIMARY KEY, v TEXT, n BIGINT)")
            .await
            .unwrap();
        tx.pipeline();
        let nasty = [
            "plain",
            "it's",
            "''; DROP TABLE t; --",
            "back\\slash \\' and $1 and $$ dollar",
            "line\nbreak\ttab ünïcødé 🦀",
            "",
            "nul\0inside",
        ];
        for (i, v) in nasty.iter().enumerate() {
            let n = -(i as i64) - 1;
            tx.execute(
                "INSERT INTO t (k, v, n) VALUES ($1, $2, 0 - $3)",
                &[Value::from(i as i64), Value::from(*v), Value::from(n)],
            )
            .await
            .unwrap();
        }
        tx.execute(
            "INSERT INTO t (k, v, n) VALUES ($1, $2, $3)",
            &[99_i64.into(), Value::Text(None), Value::Int(None)],
        )
        .await
        .unwrap();
        let rows = tx
            .fetch_texts(
                "SELECT CAST(k AS TEXT), v, CAST(n AS TEXT) FROM t ORDER BY k",
                &[],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for (i, v) in nasty.iter().enumerate() {
            // NUL cannot be stored as text: it reads back as U+FFFD, the rest unchanged.
            let stored = v.replace('\0', "\u{FFFD}");
            assert_eq!(rows[i][1].as_deref(), Some(stored.as_str()));
            assert_eq!(rows[i][2], Some((i as i64 + 1).to_string()));
        }
        assert_eq!(rows[nasty.len()], vec![Some("99".into()), None, None]);
        store.close().await;
    });
}

// Rebuilds into shadow tables.

/// Each partition's head: the end of a catch-up to the head.
fn heads(topic: &Topic) -> BTreeMap<u32, u64> {
    topic
        .partitions()
        .iter()
        .map(|p| (p.id(), p.head().next_seq))
        .collect()
}

/// `fraction` (num, den) of each partition's head.
fn part_of(topic: &Topic, num: u64, den: u64) -> BTreeMap<u32, u64> {
    heads(topic)
        .into_iter()
        .map(|(p, n)| (p, n * num / den))
        .collect()
}

/// The positions stored after applying up to `ends`: a partition without events has none.
fn stored(ends: &BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
    ends.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (*p, *n))
        .collect()
}

/// The rows a fresh catch-up to `ends` gives (in a scratch SQLite store).
async fn fresh_rows(topic: &Topic, ends: &BTreeMap<u32, u64>) -> Rows {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sqlite(dir.path(), "fresh")).await.unwrap();
    catch_up_to(&store, &CurrentState, topic, &registry(), 5, ends)
        .await
        .unwrap();
    let rows = dump(&store, &CurrentState).await.unwrap();
    store.close().await;
    rows
}

/// Makes the live rows differ from anything the log gives, so only a real refill brings the
/// golden rows back.
async fn damage(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    tx.execute("UPDATE tenants SET name = 'stale'", &[])
        .await
        .unwrap();
    tx.execute("DELETE FROM invoice_lines", &[]).await.unwrap();
    tx.commit().await.unwrap();
}

/// What the schema holds besides rows: tables and their columns, indexes, and on PostgreSQL
/// row-level security switches, policies and grants — with their names.
async fn schema_objects(store: &Store) -> Vec<Vec<Option<String>>> {
    let sql = match store.kind() {
        BackendKind::Sqlite => {
            "SELECT m.type, m.name, m.tbl_name, p.name || ' ' || p.type || ' ' || p.\"notnull\" || ' ' || p.pk
             FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'
             UNION ALL
             SELECT type, name, tbl_name, NULL FROM sqlite_master WHERE type <> 'table'
             ORDER BY 1, 2, 3, 4"
        }
        BackendKind::Postgres => {
            "SELECT 'column', table_name::text, column_name::text || ' ' || data_type || ' ' || is_nullable
               FROM information_schema.columns WHERE table_schema = current_schema()
             UNION ALL
             SELECT 'index', tablename::text, indexname || ' ' || regexp_replace(indexdef, '^.* USING ', '')
               FROM pg_indexes WHERE schemaname = current_schema()
             UNION ALL
             SELECT 'rls', relname::text, relrowsecurity::text || ' ' || relforcerowsecurity::text
               FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'
             UNION ALL
             SELECT 'policy', tablename::text, policyname || ' ' || permissive || ' ' || cmd || ' '
                    || roles::text || ' ' || coalesce(qual, '-') || ' ' || coalesce(with_check, '-')
               FROM pg_policies WHERE schemaname = current_schema()
             UNION ALL
             SELECT 'grant', table_name::text, grantee || ' ' || privilege_type
               FROM information_schema.role_table_grants WHERE table_schema = current_schema()
             ORDER BY 1, 2, 3"
        }
    };
    let mut tx = store.begin().await.unwrap();
    let rows = tx.fetch_texts(sql, &[]).await.unwrap();
    tx.rollback().await.unwrap();
    rows
}

/// Names of tables a rebuild leaves behind if it does not finish (`__rebuild`, `__old`).
async fn leftovers(store: &Store) -> Vec<String> {
    schema_objects(store)
        .await
        .into_iter()
        .flat_map(|r| r.into_iter().take(3).flatten())
        .filter(|name| name.contains("__rebuild") || name.contains("__old"))
        .collect()
}

/// A rebuild step by step. While the shadow fills, a second connection sees exactly the old
/// rows, and the live projection keeps applying batches; the swap leaves the rows of a fresh
/// catch-up, the position at the head, the same schema objects under the same names, and no
/// shadow. A second rebuild uses the names again.
fn shadow_steps_on(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(dir.path());
    let reg = registry();
    let rt = rt();
    rt.block_on(async {
        let store = Store::open(&backend).await.unwrap();
        let reader = Store::open(&backend).await.unwrap();
        let p = CurrentState;
        let name = p.name();
        let half = part_of(&topic, 1, 2);
        catch_up_to(&store, &p, &topic, &reg, 5, &half)
            .await
            .unwrap();
        damage(&store).await;
        let schema = schema_objects(&store).await;
        let live_before = dump(&reader, &p).await.unwrap();
        let positions_before = positions(&reader, name).await.unwrap();

        create_shadow(&store, &p).await.unwrap();
        assert!(
            dump_shadow(&store, &p)
                .await
                .unwrap()
                .values()
                .all(Vec::is_empty)
        );
        let three_quarters = part_of(&topic, 3, 4);
        let filled = fill_shadow_to(&store, &p, &topic, &reg, 7, &three_quarters)
            .await
            .unwrap();
        assert_eq!(filled.events, three_quarters.values().sum::<u64>());

        // Mid-way: the shadow holds what a catch-up to that point gives, under its own
        // position; the live tables and position are untouched.
        assert_eq!(
            dump_shadow(&store, &p).await.unwrap(),
            fresh_rows(&topic, &three_quarters).await
        );
        let shadow_at: BTreeMap<u32, u64> = positions(&store, &shadow_name(name))
            .await
            .unwrap()
            .into_iter()
            .map(|(p, (n, _))| (p, n))
            .collect();
        assert_eq!(shadow_at, stored(&three_quarters));
        assert_eq!(dump(&reader, &p).await.unwrap(), live_before);
        assert_eq!(positions(&reader, name).await.unwrap(), positions_before);

        // The live projection keeps writing meanwhile.
        let live = catch_up(&store, &p, &topic, &reg, 5).await.unwrap();
        assert!(live.events > 0);
        assert_ne!(dump(&reader, &p).await.unwrap(), live_before);

        // The swap applies the last quarter and puts the shadow in place.
        let swap = swap_shadow(&store, &p, &topic, &reg, 7).await.unwrap();
        let rest: u64 = heads(&topic).values().sum::<u64>() - filled.events;
        assert_eq!(swap.events, rest);
        let rows = dump(&reader, &p).await.unwrap();
        check_golden(&rows);
        let at: BTreeMap<u32, u64> = positions(&reader, name)
            .await
            .unwrap()
            .into_iter()
            .map(|(p, (n, _))| (p, n))
            .collect();
        assert_eq!(at, stored(&heads(&topic)));
        assert!(
            positions(&reader, &shadow_name(name))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(status(&store, &p, &topic).await.unwrap().lag_events, 0);
        assert_eq!(schema_objects(&store).await, schema);
        assert!(leftovers(&store).await.is_empty());

        // A later batch of the live projection is a redelivery: it changes nothing.
        let part = &topic.partitions()[0];
        let last = read_batch(part, 0, 1000).unwrap();
        let o = apply_batch(&store, &p, &reg, part.id(), &last)
            .await
            .unwrap();
        assert_eq!(o.advanced, 0);
        assert_eq!(dump(&reader, &p).await.unwrap(), rows);

        // Again, in one go: the names are free again.
        damage(&store).await;
        let again = rebuild(&store, &p, &topic, &reg, 7).await.unwrap();
        assert_eq!(again.total.events, heads(&topic).values().sum::<u64>());
        assert_eq!(dump(&reader, &p).await.unwrap(), rows);
        assert_eq!(schema_objects(&store).await, schema);
        assert!(leftovers(&store).await.is_empty());
        reader.close().await;
        store.close().await;
    });
}

#[test]
fn shadow_rebuild_step_by_step_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    shadow_steps_on(sqlite(dir.path(), "steps"));
}

#[test]
fn shadow_rebuild_step_by_step_on_postgres() {
    let rt = rt();
    if let Some(b) = postgres(&rt, "shadow_steps") {
        drop(rt);
        shadow_steps_on(b);
    }
}

/// A reader that keeps reading while a rebuild runs sees, table by table, either all the old
/// rows or all the new ones — never an empty or half-filled table. On SQLite a read
/// transaction is one snapshot, so there the whole read is the old state or the new one.
fn readers_during_rebuild_on(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(dir.path());
    let reg = registry();
    let rt = rt();
    rt.block_on(async {
        let store = Store::open(&backend).await.unwrap();
        let p = CurrentState;
        catch_up(&store, &p, &topic, &reg, DEFAULT_BATCH)
            .await
            .unwrap();
        let new = dump(&store, &p).await.unwrap();
        damage(&store).await;
        let old = dump(&store, &p).await.unwrap();
        assert_ne!(old, new);
        let whole_snapshot = store.kind() == BackendKind::Sqlite;

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn({
            let (old, new) = (old.clone(), new.clone());
            let store = Store::open(&backend).await.unwrap();
            async move {
                let (mut reads, mut saw_old, mut saw_new) = (0, 0, 0);
                loop {
                    let done = *stopped.borrow();
                    let seen = dump(&store, &CurrentState).await.unwrap();
                    reads += 1;
                    if whole_snapshot {
                        assert!(
                            seen == old || seen == new,
                            "read {reads}: neither old nor new"
                        );
                    }
                    for (table, rows) in &seen {
                        assert!(
                            rows == &old[table] || rows == &new[table],
                            "read {reads}: {table} is neither the old rows nor the new ones"
                        );
                    }
                    saw_old += usize::from(seen == old);
                    saw_new += usize::from(seen == new);
                    if done {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                store.close().await;
                (reads, saw_old, saw_new)
            }
        });
        // One event per batch: a long fill, many reads.
        rebuild(&store, &p, &topic, &reg, 1).await.unwrap();
        stop.send(true).unwrap();
        let (reads, saw_old, saw_new) = reader.await.unwrap();
        assert!(saw_old > 0, "no read saw the old rows ({reads} reads)");
        assert!(saw_new > 0, "no read saw the new rows ({reads} reads)");
        assert_eq!(dump(&store, &p).await.unwrap(), new);
        store.close().await;
    });
}

#[test]
fn readers_see_whole_tables_during_a_rebuild_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    readers_during_rebuild_on(sqlite(dir.path(), "readers"));
}

#[test]
fn readers_see_whole_tables_during_a_rebuild_on_postgres() {
    let rt = rt();
    if let Some(b) = postgres(&rt, "shadow_readers") {
        drop(rt);
        readers_during_rebuild_on(b);
    }
}

/// A rebuild that stopped half-way (its process died) left a shadow and the live tables as they
/// were. The shadow can be resumed and swapped in; a new rebuild starts it over, also when a
/// swap died before dropping the old tables. A swap without a shadow, or with a shadow made
/// before a migration, is refused and changes nothing.
fn interrupted_rebuild_on(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(dir.path());
    let reg = registry();
    let rt = rt();
    rt.block_on(async {
        let store = Store::open(&backend).await.unwrap();
        let p = CurrentState;
        let schema_before = {
            migrate(&store, &p).await.unwrap();
            schema_objects(&store).await
        };
        catch_up(&store, &p, &topic, &reg, DEFAULT_BATCH)
            .await
            .unwrap();
        let rows = dump(&store, &p).await.unwrap();
        check_golden(&rows);

        // No shadow: nothing to fill or swap.
        let err = swap_shadow(&store, &p, &topic, &reg, 7).await.unwrap_err();
        assert!(err.to_string().contains("no shadow tables"), "{err}");
        let err = fill_shadow(&store, &p, &topic, &reg, 7).await.unwrap_err();
        assert!(err.to_string().contains("no shadow tables"), "{err}");

        // Interrupted half-way, then resumed.
        damage(&store).await;
        let damaged = dump(&store, &p).await.unwrap();
        create_shadow(&store, &p).await.unwrap();
        fill_shadow_to(&store, &p, &topic, &reg, 7, &part_of(&topic, 1, 2))
            .await
            .unwrap();
        assert_eq!(dump(&store, &p).await.unwrap(), damaged);
        let rest = fill_shadow(&store, &p, &topic, &reg, 7).await.unwrap();
        assert_eq!(
            rest.events,
            heads(&topic).values().sum::<u64>() - part_of(&topic, 1, 2).values().sum::<u64>()
        );
        swap_shadow(&store, &p, &topic, &reg, 7).await.unwrap();
        assert_eq!(dump(&store, &p).await.unwrap(), rows);

        // A migration after the shadow was made: the swap refuses, the live rows stay.
        damage(&store).await;
        create_shadow(&store, &p).await.unwrap();
        fill_shadow(&store, &p, &topic, &reg, 7).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.execute(
            "INSERT INTO read_model_migrations (projection, version) VALUES ($1, 99)",
            &[Value::from(p.name())],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let err = swap_shadow(&store, &p, &topic, &reg, 7).await.unwrap_err();
        assert!(err.to_string().contains("migrated"), "{err}");
        assert_eq!(dump(&store, &p).await.unwrap(), damaged);
        let mut tx = store.begin().await.unwrap();
        tx.execute(
            "DELETE FROM read_model_migrations WHERE projection = $1 AND version = 99",
            &[Value::from(p.name())],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        // Left: a half-filled shadow, and an old table as a swap that died before dropping it
        // would leave. A rebuild starts over and cleans up.
        create_shadow(&store, &p).await.unwrap();
        fill_shadow_to(&store, &p, &topic, &reg, 7, &part_of(&topic, 1, 3))
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.execute_script("CREATE TABLE tenants__old (tenant TEXT)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(!leftovers(&store).await.is_empty());
        assert_eq!(dump(&store, &p).await.unwrap(), damaged);
        let done = rebuild(&store, &p, &topic, &reg, 7).await.unwrap();
        assert_eq!(done.total.events, heads(&topic).values().sum::<u64>());
        assert_eq!(dump(&store, &p).await.unwrap(), rows);
        assert!(leftovers(&store).await.is_empty());
        assert!(
            positions(&store, &shadow_name(p.name()))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(schema_objects(&store).await, schema_before);
        store.close().await;
    });
}

#[test]
fn interrupted_rebuild_resumes_or_starts_over_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_rebuild_on(sqlite(dir.path(), "interrupted"));
}

#[test]
fn interrupted_rebuild_resumes_or_starts_over_on_postgres() {
    let rt = rt();
    if let Some(b) = postgres(&rt, "shadow_interrupted") {
        drop(rt);
        interrupted_rebuild_on(b);
    }
}
