//! The read models survive a crash at the worst moment: the `annals` process is killed
//! (aborted) between a batch's rows and its position, then run again; every table ends with
//! each event exactly once. On the embedded stores (SQLite, Parquet) and on ClickHouse. A
//! current-state rebuild killed before or during its swap leaves the live model as it was.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use annals_tests::{annals, stat_events, stderr, stdout, test_server, unique_name};

fn annals_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(annals_tests::annals_bin());
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn log_events(dir: &Path) -> u64 {
    stat_events(&annals(dir, &["--data-dir", "data", "log", "stat", "--json"]).stdout)
}

/// The demo (3 tenants × 300 signals) into `data`, with `extra` options (a config).
fn demo(dir: &Path, extra: &[&str]) {
    let mut args = extra.to_vec();
    args.extend_from_slice(&[
        "--data-dir",
        "data",
        "demo",
        "--tenants",
        "3",
        "--signals-per-day",
        "300",
    ]);
    let o = annals(dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A demo log without read models (they are removed after the demo built them).
fn demo_without_read_models(dir: &Path) {
    demo(dir, &[]);
    std::fs::remove_dir_all(dir.join("data/read-models")).unwrap();
}

fn status(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--data-dir", "data", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["projections", "status"]);
    let o = annals(dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn killed_at(dir: &Path, failpoint: &str, extra: &[&str]) {
    let mut args = vec!["--data-dir", "data"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["projections", "run", "--batch", "100"]);
    let o = annals_env(dir, &[("ANNALS_FAILPOINT", failpoint)], &args);
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGABRT),
        "the run should die at {failpoint}: {} {}",
        stdout(&o),
        stderr(&o)
    );
}

fn run_again_and_check(dir: &Path, extra: &[&str]) {
    let mut args = vec!["--data-dir", "data"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["projections", "run", "--batch", "100"]);
    let o = annals(dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = status(dir, extra);
    let events = log_events(dir);
    for p in st["projections"].as_array().unwrap() {
        assert_eq!(p["lag_events"], 0, "{p}");
    }
    let analytics = &st["projections"][1];
    assert_eq!(
        analytics["rows"]["events"], events,
        "each event once: {analytics}"
    );
    assert_eq!(analytics["rows"]["signals"], 3 * 300, "{analytics}");
    let current = &st["projections"][0];
    assert_eq!(current["rows"]["tenants"], 3, "{current}");
}

#[test]
fn killed_between_rows_and_position_on_the_embedded_stores() {
    let dir = tempfile::tempdir().unwrap();
    demo_without_read_models(dir.path());
    killed_at(dir.path(), "current_state.before_commit", &[]);
    killed_at(dir.path(), "analytics.parquet.before_commit", &[]);
    run_again_and_check(dir.path(), &[]);
    // The current state equals a rebuild from seq 0.
    let before = status(dir.path(), &[]);
    let o = annals(
        dir.path(),
        &[
            "--data-dir",
            "data",
            "projections",
            "rebuild",
            "current_state",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        status(dir.path(), &[])["projections"][0]["rows"],
        before["projections"][0]["rows"]
    );
}

/// The current-state digest and positions, as `projections digest --json` gives them.
fn current_digest(dir: &Path) -> serde_json::Value {
    let o = annals(
        dir,
        &["--data-dir", "data", "--json", "projections", "digest"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn current_state_rebuild_killed_before_or_during_its_swap() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    demo(dir, &[]);
    let before = current_digest(dir);
    let rebuild = [
        "--data-dir",
        "data",
        "projections",
        "rebuild",
        "current_state",
    ];
    for failpoint in [
        "current_state.rebuild.before_swap",
        "current_state.swap.before_commit",
    ] {
        let o = annals_env(dir, &[("ANNALS_FAILPOINT", failpoint)], &rebuild);
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGABRT),
            "the rebuild should die at {failpoint}: {} {}",
            stdout(&o),
            stderr(&o)
        );
        // The live rows and positions are those of before.
        assert_eq!(current_digest(dir), before, "after dying at {failpoint}");
    }
    // Run again, it starts over and swaps in the same rows.
    let o = annals(dir, &rebuild);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("current_state: swapped in"),
        "{}",
        stdout(&o)
    );
    assert_eq!(current_digest(dir), before);
    let o = annals(
        dir,
        &[
            "--data-dir",
            "data",
            "--json",
            "projections",
            "rebuild",
            "current_state",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["events"], log_events(dir), "{done}");
    assert_eq!(
        done["swap"]["events"], 0,
        "nothing arrived meanwhile: {done}"
    );
    assert_eq!(current_digest(dir), before);
}

#[test]
fn killed_between_rows_and_position_on_clickhouse() {
    let Some(url) = test_server("ANNALS_TEST_CLICKHOUSE") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_without_read_models(dir.path());
    // A database of its own, emptied first.
    std::fs::write(
        dir.path().join("annals.toml"),
        format!("[read_models]\nclickhouse = \"{url}\"\nclickhouse_database = \"test_cli_kill\"\n"),
    )
    .unwrap();
    let drop_db = std::process::Command::new("curl")
        .args([
            "-s",
            "--data-binary",
            "DROP DATABASE IF EXISTS test_cli_kill SYNC",
            &url,
        ])
        .output()
        .unwrap();
    assert!(drop_db.status.success());
    let cfg = ["--config", "annals.toml"];
    killed_at(dir.path(), "analytics.clickhouse.before_position", &cfg);
    run_again_and_check(dir.path(), &cfg);
    // What an analyst sees through annals sql is the same.
    let mut args = vec!["--data-dir", "data"];
    args.extend_from_slice(&cfg);
    args.extend_from_slice(&["sql", "SELECT count() AS n FROM signals", "--format", "csv"]);
    let o = annals(dir.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "n\n900\n");
}

/// The same kill tests with the log on Kafka and the read models in PostgreSQL and
/// ClickHouse: redelivered events after the crash never double-count.
#[test]
fn killed_between_rows_and_position_reading_from_kafka_into_postgres_and_clickhouse() {
    let (Some(kafka), Some(pg), Some(ch)) = (
        test_server("ANNALS_TEST_KAFKA"),
        test_server("ANNALS_TEST_POSTGRES"),
        test_server("ANNALS_TEST_CLICKHOUSE"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unique = unique_name("kill");
    let log_cfg = format!(
        "[log]\nbackend = \"kafka\"\npartitions = 4\n[log.kafka]\nbrokers = \"{kafka}\"\ntopic_prefix = \"{unique}.\"\n"
    );
    std::fs::write(dir.path().join("log.toml"), &log_cfg).unwrap();
    demo(dir.path(), &["--config", "log.toml"]);
    std::fs::write(
        dir.path().join("all.toml"),
        format!(
            "{log_cfg}[read_models]\npostgres = \"{pg}\"\npostgres_schema = \"{unique}\"\nclickhouse = \"{ch}\"\nclickhouse_database = \"{unique}\"\n"
        ),
    )
    .unwrap();
    let cfg = ["--config", "all.toml"];
    killed_at(dir.path(), "current_state.before_commit", &cfg);
    killed_at(dir.path(), "analytics.clickhouse.before_position", &cfg);
    let o = annals(
        dir.path(),
        &[
            "--config",
            "all.toml",
            "--data-dir",
            "data",
            "projections",
            "run",
            "--batch",
            "100",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let st = status(dir.path(), &cfg);
    let stat = annals(
        dir.path(),
        &[
            "--config",
            "all.toml",
            "--data-dir",
            "data",
            "log",
            "stat",
            "--json",
        ],
    );
    let events = stat_events(&stat.stdout);
    for p in st["projections"].as_array().unwrap() {
        assert_eq!(p["lag_events"], 0, "{p}");
    }
    assert_eq!(st["projections"][1]["rows"]["events"], events, "{st}");
    assert_eq!(st["projections"][1]["rows"]["signals"], 3 * 300, "{st}");
    assert_eq!(st["projections"][0]["rows"]["tenants"], 3, "{st}");
    std::process::Command::new("psql")
        .args([
            &pg,
            "-qc",
            &format!("DROP SCHEMA IF EXISTS \"{unique}\" CASCADE"),
        ])
        .output()
        .ok();
    std::process::Command::new("curl")
        .args([
            "-s",
            &ch,
            "--data-binary",
            &format!("DROP DATABASE IF EXISTS {unique} SYNC"),
        ])
        .output()
        .ok();
}

/// `(log_partition, seq)` of every signals row, through `annals sql`.
fn signal_rows(dir: &Path) -> std::collections::BTreeSet<(u64, u64)> {
    let o = annals(
        dir,
        &[
            "--data-dir",
            "data",
            "sql",
            "--format",
            "json",
            "SELECT log_partition, seq FROM signals",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    rows.iter()
        .map(|r| {
            (
                r["log_partition"].as_u64().unwrap(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Retention from the command line: bad policies are refused with what to do; a dry run lists
/// rows (in `--out`) and removes none; applying it removes exactly the listed rows, and
/// applying it again removes nothing more.
#[test]
fn retention_dry_run_lists_exactly_what_the_live_run_removes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    demo(dir, &[]);
    for (args, says) in [
        (&["--ttl", "signals=soon"][..], "not a time to live"),
        (&["--ttl", "nosuch=1d"][..], "not an analytics dataset"),
        (&["--ttl", "signals"][..], "DATASET=DURATION"),
        (&[][..], "no retention policy"),
        (
            &["--ttl", "signals=1d", "--as-of", "yesterday"][..],
            "not a time",
        ),
    ] {
        let mut a = vec!["--data-dir", "data", "retention", "run", "--dry-run"];
        a.extend_from_slice(args);
        let o = annals(dir, &a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    let before = signal_rows(dir);
    assert_eq!(before.len(), 900);
    // The demo's signals fall on its first day: a cutoff at its noon takes some, not all.
    let o = annals(
        dir,
        &[
            "--data-dir",
            "data",
            "--json",
            "retention",
            "run",
            "--dry-run",
            "--ttl",
            "signals=12h",
            "--as-of",
            "2026-01-02T00:00:00Z",
            "--out",
            "listed.json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(signal_rows(dir), before, "a dry run removes nothing");
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("listed.json")).unwrap()).unwrap();
    let listed: std::collections::BTreeSet<(u64, u64)> = listed
        .iter()
        .flat_map(|t| t["rows"].as_array().unwrap().clone())
        .map(|r| {
            assert_eq!(r["dataset"], "signals");
            (
                r["log_partition"].as_u64().unwrap(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        !listed.is_empty() && listed.len() < before.len(),
        "{} of {} listed",
        listed.len(),
        before.len()
    );
    assert_eq!(report["rows"], listed.len());

    let o = annals(dir, &["--data-dir", "data", "retention", "apply", &run_id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = signal_rows(dir);
    let removed: std::collections::BTreeSet<_> = before.difference(&after).cloned().collect();
    assert_eq!(
        removed, listed,
        "the live run removed exactly the listed rows"
    );

    let o = annals(dir, &["--data-dir", "data", "retention", "apply", &run_id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("already applied"), "{}", stdout(&o));
    assert_eq!(signal_rows(dir), after);
    let o = annals(dir, &["--data-dir", "data", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
