//! The analytics read model on Parquet + DataFusion and on ClickHouse, from the golden input
//! written through the real command path: golden query answers, the same answers from both
//! stores, re-applied batches never doubled, a crash mid-batch leaving nothing behind, rebuilds
//! into shadow tables, and the schema reference in docs/analytics.md kept in step.
//!
//! ClickHouse tests read `ANNALS_TEST_CLICKHOUSE` (set by `scripts/test` from `scripts/services
//! up`). Unset with `ANNALS_SKIP_SERVERS=1` they are skipped with a note; unset otherwise they
//! fail. Each uses a database of its own.

use std::collections::BTreeMap;
use std::path::Path;

use annals_events::Topic;
use annals_projections::analytics::clickhouse::ClickHouseStore;
use annals_projections::analytics::parquet::ParquetStore;
use annals_projections::analytics::{
    self, Analytics, Batch, Format, TABLES, catch_up, rebuild, rows_of_batch, status,
};
use annals_projections::read_batch;
use serde_json::Value;

mod common;
use common::{golden_log, registry, rt};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/analytics.json");

/// Queries whose answers do not depend on the clock or on random ids, with aliases so both
/// engines name the columns alike, each ordered completely.
const QUERIES: &[(&str, &str)] = &[
    (
        "rows",
        "SELECT t, n FROM (SELECT 'events' AS t, count(*) AS n FROM events \
         UNION ALL SELECT 'signals' AS t, count(*) AS n FROM signals \
         UNION ALL SELECT 'usage' AS t, count(*) AS n FROM usage \
         UNION ALL SELECT 'invoice_lines' AS t, count(*) AS n FROM invoice_lines \
         UNION ALL SELECT 'policy_decisions' AS t, count(*) AS n FROM policy_decisions \
         UNION ALL SELECT 'deployments' AS t, count(*) AS n FROM deployments) AS c ORDER BY t",
    ),
    (
        "events_by_type",
        "SELECT event_type, count(*) AS n, sum(payload_bytes) AS bytes FROM events GROUP BY event_type ORDER BY event_type",
    ),
    (
        "signals_by_tenant",
        "SELECT tenant, source, count(*) AS n, sum(value) AS total, min(signal_id) AS first_id FROM signals \
         GROUP BY tenant, source ORDER BY tenant, source",
    ),
    (
        "signals_by_label",
        "SELECT attributes['metric'] AS metric, count(*) AS n FROM signals GROUP BY metric ORDER BY metric",
    ),
    (
        "invoice_amounts",
        "SELECT currency, count(*) AS lines, CAST(sum(amount) AS DOUBLE) AS amount, sum(quantity) AS quantity \
         FROM invoice_lines GROUP BY currency ORDER BY currency",
    ),
    (
        "usage",
        "SELECT tenant, month, meter, CAST(sum(cost) AS DOUBLE) AS cost, CAST(max(spent) AS DOUBLE) AS spent \
         FROM usage GROUP BY tenant, month, meter ORDER BY tenant, month, meter",
    ),
    (
        "decisions",
        "SELECT tenant, policy_version, decision, count(*) AS n FROM policy_decisions \
         GROUP BY tenant, policy_version, decision ORDER BY tenant, policy_version, decision",
    ),
    (
        "deployments",
        "SELECT tenant, model, environment, action, version, coalesce(traffic['v1'], 0) AS v1_pct, coalesce(traffic['v2'], 0) AS v2_pct \
         FROM deployments ORDER BY tenant, model, environment, log_partition, seq",
    ),
];

/// Every query's rows as JSON, numbers as f64 (the engines differ in integer widths).
async fn answers(store: &Analytics) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, sql) in QUERIES {
        let text = store
            .query(sql, Format::Json)
            .await
            .unwrap_or_else(|e| panic!("{} query {name}: {e}", store.kind()));
        let v: Value = serde_json::from_str(&text).unwrap();
        out.insert((*name).to_owned(), normalise(v));
    }
    out
}

fn normalise(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::String(s) => match s.parse::<f64>() {
            Ok(f) => serde_json::json!(f),
            Err(_) => Value::String(s),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalise(v))).collect()),
        other => other,
    }
}

fn check_golden(got: &BTreeMap<String, Value>) {
    if std::env::var("ANNALS_BLESS").as_deref() == Ok("1") {
        std::fs::write(GOLDEN, serde_json::to_string_pretty(got).unwrap() + "\n").unwrap();
    }
    let want: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    for q in want.keys().chain(got.keys()) {
        assert_eq!(
            got.get(q),
            want.get(q),
            "query {q} differs from {GOLDEN} (ANNALS_BLESS=1 rewrites it after a deliberate change)"
        );
    }
}

fn total_events(topic: &Topic) -> u64 {
    topic.partitions().iter().map(|p| p.head().next_seq).sum()
}

fn parquet(dir: &Path) -> Analytics {
    Analytics::Parquet(ParquetStore::open(dir).unwrap())
}

/// A fresh ClickHouse database for one test, or `None` (skipped, with a note).
fn clickhouse(rt: &tokio::runtime::Runtime, test: &str) -> Option<Analytics> {
    let url = match std::env::var("ANNALS_TEST_CLICKHOUSE") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var("ANNALS_SKIP_SERVERS").as_deref() == Ok("1") => {
            eprintln!("note: {test} skipped: ANNALS_SKIP_SERVERS=1 and no ANNALS_TEST_CLICKHOUSE");
            return None;
        }
        _ => panic!(
            "ANNALS_TEST_CLICKHOUSE is not set: run `scripts/services up` and export `scripts/services url clickhouse` (or run scripts/test), or set ANNALS_SKIP_SERVERS=1 to skip"
        ),
    };
    let db = format!("test_{test}");
    rt.block_on(async {
        let admin = clickhouse::Client::default().with_url(&url);
        admin
            .query(&format!("DROP DATABASE IF EXISTS `{db}` SYNC"))
            .execute()
            .await
            .unwrap();
    });
    Some(Analytics::ClickHouse(Box::new(
        ClickHouseStore::new(&url, &db).unwrap(),
    )))
}

/// Catches `store` up in small batches (many batches, crossing every table), checks the status,
/// that a second run applies nothing, and returns the answers.
fn golden_answers(store: &Analytics, topic: &Topic) -> BTreeMap<String, Value> {
    let reg = registry();
    rt().block_on(async {
        let done = catch_up(store, topic, &reg, 7).await.unwrap();
        assert_eq!(done.events, total_events(topic));
        assert_eq!(catch_up(store, topic, &reg, 7).await.unwrap().events, 0);
        let st = status(store, topic).await.unwrap();
        assert_eq!(st.lag_events, 0);
        assert_eq!(st.rows["events"], total_events(topic));
        assert!(st.partitions.iter().all(|p| p.position == p.head));
        answers(store).await
    })
}

#[test]
fn golden_answers_on_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    let got = golden_answers(&parquet(dir.path()), &topic);
    check_golden(&got);
}

#[test]
fn clickhouse_answers_like_datafusion() {
    let rt = rt();
    let Some(ch) = clickhouse(&rt, "answers") else {
        return;
    };
    drop(rt);
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    let got = golden_answers(&ch, &topic);
    check_golden(&got);
}

/// A batch stored twice (a retry, or a crash after the rows before the position) changes
/// nothing; on ClickHouse not even before merges, thanks to the deduplication tokens.
fn redelivery_on(store: &Analytics, topic: &Topic) {
    let reg = registry();
    rt().block_on(async {
        store.prepare().await.unwrap();
        let p = &topic.partitions()[0];
        let events = read_batch(p, 0, 10).unwrap();
        assert!(events.len() >= 2);
        let batch = |events: &[annals_events::Envelope]| Batch {
            partition: p.id(),
            first: events[0].seq,
            next: events.last().unwrap().seq + 1,
            last_recorded_at: events.last().unwrap().recorded_at,
            rows: rows_of_batch(events, &reg, true).unwrap(),
        };
        store.write(batch(&events)).await.unwrap();
        let once = store.row_counts().await.unwrap();
        store.write(batch(&events)).await.unwrap();
        assert_eq!(store.row_counts().await.unwrap(), once);
        assert_eq!(once["events"], events.len() as u64);
        assert_eq!(
            store.positions().await.unwrap()[&p.id()].next_seq,
            events.last().unwrap().seq + 1
        );
        // Catching up from the stored position completes the tables without doubles.
        catch_up(store, topic, &reg, 5).await.unwrap();
        let st = status(store, topic).await.unwrap();
        assert_eq!(st.rows["events"], total_events(topic));
        assert_eq!(st.lag_events, 0);
    });
}

#[test]
fn redelivery_on_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    redelivery_on(&parquet(dir.path()), &topic);
}

#[test]
fn redelivery_on_clickhouse() {
    let rt = rt();
    let Some(ch) = clickhouse(&rt, "redelivery") else {
        return;
    };
    drop(rt);
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    redelivery_on(&ch, &topic);
}

/// A crash while a batch was being written leaves a hidden folder: it is not read, not counted
/// in the position, and removed when the store is next prepared.
#[test]
fn a_half_written_parquet_batch_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    let store = parquet(dir.path());
    let reg = registry();
    rt().block_on(async {
        catch_up(&store, &topic, &reg, 1000).await.unwrap();
        let before = answers(&store).await;
        let pdir = dir.path().join("read-models/analytics/gen-000001/p0000");
        let half = pdir.join(format!(".tmp-{:012}-{:012}", 999_000, 999_010));
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(half.join("signals.2026-01.parquet"), b"PAR1 torn").unwrap();
        assert_eq!(answers(&store).await, before);
        assert_eq!(status(&store, &topic).await.unwrap().lag_events, 0);
        assert!(!half.exists(), "prepare removes what a crash left");
    });
}

/// A rebuild fills a new generation while the old one answers, then swaps it in.
#[test]
fn rebuild_swaps_in_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    let store = parquet(dir.path());
    let reg = registry();
    let root = dir.path().join("read-models/analytics");
    rt().block_on(async {
        catch_up(&store, &topic, &reg, 1000).await.unwrap();
        let before = answers(&store).await;
        let done = rebuild(&store, &topic, &reg, 3).await.unwrap();
        assert_eq!(done.events, total_events(&topic));
        assert_eq!(
            std::fs::read_to_string(root.join("CURRENT"))
                .unwrap()
                .trim(),
            "gen-000002"
        );
        assert!(!root.join("gen-000001").exists());
        let reopened = parquet(dir.path());
        assert_eq!(answers(&reopened).await, before);
        assert_eq!(status(&reopened, &topic).await.unwrap().lag_events, 0);
    });
}

#[test]
fn rebuild_on_clickhouse_keeps_the_answers() {
    let rt = rt();
    let Some(ch) = clickhouse(&rt, "rebuild") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    let reg = registry();
    rt.block_on(async {
        catch_up(&ch, &topic, &reg, 1000).await.unwrap();
        let before = answers(&ch).await;
        let done = rebuild(&ch, &topic, &reg, 3).await.unwrap();
        assert_eq!(done.events, total_events(&topic));
        assert_eq!(answers(&ch).await, before);
        assert_eq!(status(&ch, &topic).await.unwrap().lag_events, 0);
        // The shadow tables were filled with merges stopped; swapped in, they merge again (a
        // table whose merges are stopped refuses OPTIMIZE).
        let url = std::env::var("ANNALS_TEST_CLICKHOUSE").unwrap();
        let admin = clickhouse::Client::default().with_url(&url);
        for t in TABLES {
            admin
                .query(&format!("OPTIMIZE TABLE test_rebuild.`{}` FINAL", t.name))
                .execute()
                .await
                .unwrap_or_else(|e| panic!("{} does not merge after the rebuild: {e}", t.name));
        }
    });
}

#[test]
fn queries_that_write_or_name_no_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    let store = parquet(dir.path());
    rt().block_on(async {
        catch_up(&store, &topic, &registry(), 1000).await.unwrap();
        for sql in [
            "DROP TABLE signals",
            "SELECT * FROM nope",
            "SELEC 1",
            "INSERT INTO usage VALUES (1)",
        ] {
            match store.query(sql, Format::Table).await {
                Err(analytics::AnalyticsError::Query(_)) => {}
                other => panic!("{sql}: {other:?}"),
            }
        }
        let csv = store.query("SELECT * FROM signals", Format::Csv).await;
        assert!(
            matches!(&csv, Err(analytics::AnalyticsError::Query(m)) if m.contains("attributes")),
            "{csv:?}"
        );
    });
}

#[test]
fn the_schema_reference_is_in_step() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/analytics.md");
    let want = analytics::model::reference_markdown();
    if std::env::var("ANNALS_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &want).unwrap();
    }
    let got = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        got == want,
        "docs/analytics.md is not what the model says: ANNALS_BLESS=1 cargo test -p annals-projections --test analytics rewrites it"
    );
}

/// Many small batches (a follower's) are merged into few folders without changing a single
/// answer, and a reader that sees a merged folder beside the ones it replaced counts once.
#[test]
fn compaction_merges_small_batches_and_changes_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, topic) = golden_log(&dir.path().join("log"));
    let store = ParquetStore::open(dir.path()).unwrap();
    let analytics = Analytics::Parquet(store.clone());
    let root = dir.path().join("read-models/analytics/gen-000001");
    let folders = || {
        walk(&root)
            .into_iter()
            .filter(|p| p.ends_with("batch.json"))
            .count()
    };
    rt().block_on(async {
        catch_up(&analytics, &topic, &registry(), 2).await.unwrap();
        let before = answers(&analytics).await;
        let many = folders();
        let backup = dir.path().join("backup");
        copy_dir(&root, &backup);

        let merged = store.compact(40).unwrap();
        assert!(merged >= 8, "merged {merged} folders");
        assert!(folders() < many, "{} folders, were {many}", folders());
        assert_eq!(answers(&analytics).await, before);
        let st = status(&analytics, &topic).await.unwrap();
        assert_eq!(st.lag_events, 0);
        assert_eq!(st.rows["events"], total_events(&topic));

        // The moment between renaming a merged folder in and removing its sources: put the
        // sources back beside it; every row still counts once.
        copy_dir(&backup, &root);
        assert_eq!(answers(&analytics).await, before);
        let st = status(&analytics, &topic).await.unwrap();
        assert_eq!(st.rows["events"], total_events(&topic));
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
