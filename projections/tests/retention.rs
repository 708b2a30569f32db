//! Retention in the analytics read model, on Parquet + DataFusion and on ClickHouse: a dry
//! run's list is exactly what the live run removes — nothing of another tenant, nothing that
//! arrived after the dry run however old, nothing after the cutoff — and a rebuild from the log
//! removes the same rows again.
//!
//! ClickHouse tests read `ANNALS_TEST_CLICKHOUSE` like the other analytics tests.

use std::collections::BTreeSet;
use std::sync::Arc;

use annals_domain::golden::{self, Spec};
use annals_domain::ingest::{IngestCommand, SignalInput};
use annals_domain::tenancy::{RetentionCommand, RetentionCut, RetentionRun};
use annals_processors::{Command, Engine};
use annals_projections::analytics::clickhouse::ClickHouseStore;
use annals_projections::analytics::parquet::ParquetStore;
use annals_projections::analytics::retention::{self, Deletion};
use annals_projections::analytics::{Analytics, Format, catch_up, rebuild};
use serde_json::Value;

mod common;
use common::{golden_log, meta, registry, rt};

/// Every row of `signals` and `events` as (dataset, tenant, log_partition, seq).
async fn rows(store: &Analytics) -> BTreeSet<(String, String, u64, u64)> {
    let mut out = BTreeSet::new();
    for table in ["signals", "events"] {
        let text = store
            .query(
                &format!("SELECT tenant, log_partition, seq FROM {table}"),
                Format::Json,
            )
            .await
            .unwrap();
        let v: Vec<Value> = serde_json::from_str(&text).unwrap();
        for r in v {
            let n = |k: &str| match &r[k] {
                Value::Number(n) => n.as_u64().unwrap(),
                Value::String(s) => s.parse().unwrap(),
                other => panic!("{k}: {other}"),
            };
            out.insert((
                table.to_owned(),
                r["tenant"].as_str().unwrap().to_owned(),
                n("log_partition"),
                n("seq"),
            ));
        }
    }
    out
}

fn signals(tenant: &str, prefix: &str, offsets: std::ops::Range<i64>) -> Command {
    Command::Ingest(IngestCommand::IngestSignals {
        tenant: tenant.to_owned(),
        source: "web".into(),
        signals: offsets
            .map(|i| SignalInput {
                signal_id: format!("{prefix}{i}"),
                ts: golden::START_MICROS + i,
                attributes: Default::default(),
                value: Some(1.0),
                unit: None,
            })
            .collect(),
    })
}

fn retention_on(store: &Analytics, dir: &std::path::Path) {
    let (_log, topic) = golden_log(&dir.join("log"));
    let reg = Arc::new(registry());
    let spec = Spec {
        tenants: 4,
        signals_per_day: 20,
        days: 1,
        seed: 42,
    };
    let tenant = spec.tenant_id(0);
    let partition = topic.partition_for(&tenant).id();
    let engine = Engine::start(topic.clone(), reg.clone()).unwrap();
    let rt = rt();
    rt.block_on(async {
        catch_up(store, &topic, &reg, 7).await.unwrap();
        let before = rows(store).await;
        let bound = store.positions().await.unwrap()[&partition].next_seq;
        // Signals at START+0..START+2 age out; the rest of the tenant's signals stay. Every
        // `events` row of the tenant before the bound goes: as_of is a day after now (the
        // rows' recorded_at), with a time to live of one second.
        let now = annals_events::time::now_micros();
        let k = (now + 86_400 * 1_000_000 - golden::START_MICROS) / 1_000_000;
        let as_of = golden::START_MICROS + 3 + k * 1_000_000;
        let mut run = RetentionRun {
            tenant: tenant.clone(),
            run_id: "r-test".into(),
            as_of,
            bound,
            datasets: vec![
                RetentionCut {
                    dataset: "events".into(),
                    ttl_seconds: 1,
                    cutoff: as_of - 1_000_000,
                    rows: 0,
                },
                RetentionCut {
                    dataset: "signals".into(),
                    ttl_seconds: k,
                    cutoff: golden::START_MICROS + 3,
                    rows: 0,
                },
            ],
            rows: 0,
            digest: String::new(),
        };
        let deletions = Deletion::of_run(&run, partition, u64::MAX);
        let listed = retention::list(store, &deletions).await.unwrap();
        assert!(
            listed.iter().any(|l| l.dataset == "signals")
                && listed.iter().any(|l| l.dataset == "events"),
            "{listed:?}"
        );
        for cut in &mut run.datasets {
            cut.rows = listed.iter().filter(|l| l.dataset == cut.dataset).count() as u64;
        }
        run.rows = listed.len() as u64;
        run.digest = retention::digest(&listed);

        // After the dry run: more old signals of the tenant (late data), then the live run.
        let late = send(&engine, signals(&tenant, "late", 0..2), "late").await;
        assert!(late.first().is_some_and(|&s| s >= bound));
        send(
            &engine,
            Command::Retention {
                tenant: tenant.clone(),
                command: RetentionCommand::ReviewRetention(run.clone()),
            },
            "review",
        )
        .await;
        send(
            &engine,
            Command::Retention {
                tenant: tenant.clone(),
                command: RetentionCommand::ApplyRetention {
                    run_id: run.run_id.clone(),
                    digest: run.digest.clone(),
                },
            },
            "apply",
        )
        .await;
        catch_up(store, &topic, &reg, 7).await.unwrap();
        let after = rows(store).await;

        let removed: BTreeSet<_> = before.difference(&after).cloned().collect();
        let want: BTreeSet<_> = listed
            .iter()
            .map(|l| {
                (
                    l.dataset.clone(),
                    tenant.clone(),
                    u64::from(l.log_partition),
                    l.seq,
                )
            })
            .collect();
        assert_eq!(removed, want, "the live run removed other rows than listed");
        // The late signals (and their events rows), the run's own events, and every other
        // tenant's rows are there.
        for seq in late {
            assert!(after.contains(&("signals".into(), tenant.clone(), u64::from(partition), seq)));
            assert!(after.contains(&("events".into(), tenant.clone(), u64::from(partition), seq)));
        }
        assert!(
            after
                .iter()
                .filter(|r| r.1 == tenant && r.0 == "signals")
                .count()
                > 2
        );
        let others = |s: &BTreeSet<(String, String, u64, u64)>| {
            s.iter()
                .filter(|r| r.1 != tenant)
                .cloned()
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(others(&before), others(&after));
        assert!(
            retention::list(store, &deletions).await.unwrap().is_empty(),
            "a second listing after the live run finds nothing"
        );

        // Rebuilt from the log, the read model removes the same rows again.
        rebuild(store, &topic, &reg, 5).await.unwrap();
        assert_eq!(rows(store).await, after);
    });
    drop(engine);
}

/// Runs a command through the engine; returns the seqs it wrote.
async fn send(engine: &Engine, command: Command, id: &str) -> Vec<u64> {
    engine
        .execute(command, meta(format!("retention-test-{id}")))
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn retention_removes_exactly_the_dry_run_rows_on_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let store = Analytics::Parquet(ParquetStore::open(dir.path()).unwrap());
    retention_on(&store, dir.path());
}

#[test]
fn retention_removes_exactly_the_dry_run_rows_on_clickhouse() {
    let url = match std::env::var("ANNALS_TEST_CLICKHOUSE") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var("ANNALS_SKIP_SERVERS").as_deref() == Ok("1") => {
            eprintln!("note: skipped: ANNALS_SKIP_SERVERS=1 and no ANNALS_TEST_CLICKHOUSE");
            return;
        }
        _ => panic!(
            "ANNALS_TEST_CLICKHOUSE is not set: run scripts/test, or set ANNALS_SKIP_SERVERS=1 to skip"
        ),
    };
    let ch = ClickHouseStore::new(&url, "test_retention").unwrap();
    rt().block_on(ch.drop_database()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    retention_on(&Analytics::ClickHouse(Box::new(ch)), dir.path());
}
