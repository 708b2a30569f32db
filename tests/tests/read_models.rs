//! The read models survive a crash at the worst moment: the `annals` process is killed
//! (aborted) between a batch's rows and its position, then run again; every table ends with
//! each event exactly once. On the embedded stores (SQLite, Parquet) and on ClickHouse.

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
