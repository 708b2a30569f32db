//! The current-state read model on SQLite and PostgreSQL, from one golden input written through
//! the real command path: golden rows, redelivery, rollback before commit, gaps, rebuild
//! digests and tenant isolation by row-level security.
//!
//! PostgreSQL tests read `ANNALS_TEST_POSTGRES` (set by `scripts/test`, from `scripts/services
//! up`). Unset with `ANNALS_SKIP_SERVERS=1`, they are skipped with a note; unset otherwise, they
//! fail. Each uses a schema of its own, so they run in parallel.

use std::collections::BTreeMap;
use std::path::Path;

use annals_projections::{
    Backend, BackendKind, CurrentState, DEFAULT_BATCH, Projection, ProjectionError, Store, Value,
    apply_batch, apply_in, catch_up, digest, dump, dump_in, migrate, positions, read_batch,
    rebuild, status,
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
        assert_eq!(rebuilt.events, total);
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

        for tenant in ["tenant-000", "tenant-001"] {
            let mut tx = store.tenant_session(tenant).await.unwrap();
            let seen = dump_in(&mut tx, p.tables()).await.unwrap();
            tx.rollback().await.unwrap();
            let mut any = 0;
            for (table, rows) in &all {
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
        assert_eq!(dump(&store, &p).await.unwrap(), all);
        store.close().await;
    });
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
