//! One suite, two deployments: the same scenarios run on the embedded default (log on disk,
//! SQLite, Parquet) and on the distributed one (Kafka through rdkafka, PostgreSQL,
//! ClickHouse; the subject keys in PostgreSQL too), and give the same answers.
//!
//! The servers are the real test servers `scripts/test` starts (`ANNALS_TEST_KAFKA`,
//! `ANNALS_TEST_POSTGRES`, `ANNALS_TEST_CLICKHOUSE`). Each run uses its own Kafka topic
//! prefix, PostgreSQL schema and ClickHouse database, and drops the last two afterwards.

use std::path::PathBuf;
use std::process::{Command, Output};

use annals_tests::{annals_bin, stat_events, stderr, stdout, test_server, unique_name};

/// The distributed servers, or `None` when the run skips servers.
struct Servers {
    kafka: String,
    postgres: String,
    clickhouse: String,
}

fn servers() -> Option<Servers> {
    Some(Servers {
        kafka: test_server("ANNALS_TEST_KAFKA")?,
        postgres: test_server("ANNALS_TEST_POSTGRES")?,
        clickhouse: test_server("ANNALS_TEST_CLICKHOUSE")?,
    })
}

/// A deployment under test: a data dir and the config that selects its backends.
struct Deployment {
    name: &'static str,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// (PostgreSQL URL, schema) and (ClickHouse URL, database) to drop afterwards.
    cleanup: Option<(String, String, String, String)>,
}

impl Deployment {
    fn embedded() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("annals.toml");
        std::fs::write(&config, "[log]\npartitions = 4\n").unwrap();
        Deployment {
            name: "embedded",
            dir,
            config,
            cleanup: None,
        }
    }

    fn distributed(s: &Servers, tag: &str) -> Deployment {
        Self::distributed_with(s, tag, "")
    }

    /// [`Self::distributed`] with more `[log.kafka]` settings.
    fn distributed_with(s: &Servers, tag: &str, kafka_extra: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("annals.toml");
        let unique = unique_name(tag);
        std::fs::write(
            &config,
            format!(
                "[log]\nbackend = \"kafka\"\npartitions = 4\n\n[log.kafka]\nbrokers = \"{}\"\ntopic_prefix = \"{unique}.\"\n{kafka_extra}\n[read_models]\npostgres = \"{}\"\npostgres_schema = \"{unique}\"\nclickhouse = \"{}\"\nclickhouse_database = \"{unique}\"\n\n[privacy]\nkey_store = \"postgres\"\npostgres_schema = \"{unique}\"\n",
                s.kafka, s.postgres, s.clickhouse
            ),
        )
        .unwrap();
        Deployment {
            name: "kafka",
            dir,
            config,
            cleanup: Some((
                s.postgres.clone(),
                unique.clone(),
                s.clickhouse.clone(),
                unique,
            )),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(annals_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .args(["--data-dir", "data"])
            .args(args)
            .current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("ANNALS__") {
                cmd.env_remove(k);
            }
        }
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{} {args:?}: {}{}",
            self.name,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some((pg, schema, ch, db)) = self.cleanup.take() {
            Command::new("psql")
                .args([
                    &pg,
                    "-qc",
                    &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
                ])
                .output()
                .ok();
            Command::new("curl")
                .args([
                    "-s",
                    &ch,
                    "--data-binary",
                    &format!("DROP DATABASE IF EXISTS {db} SYNC"),
                ])
                .output()
                .ok();
        }
    }
}

/// What a deployment answers after the demo.
#[derive(Debug, PartialEq)]
struct Answers {
    events: u64,
    current_state_digest: serde_json::Value,
    replay_digest: serde_json::Value,
    signals_by_tenant: String,
}

/// The demo end to end, then every check that must hold on any deployment.
fn demo_scenario(d: &Deployment) -> Answers {
    let out = d.ok(&["demo", "--tenants", "2", "--signals-per-day", "40"]);
    assert!(out.contains("verify OK"), "{}: {out}", d.name);

    // verify passes, over every event the log holds.
    let v = d.json(&["verify"]);
    assert_eq!(v["ok"], true, "{}: {v}", d.name);
    // In the same read: the checkpoints the demo signed, roots and signatures.
    let checked = &v["checkpoints"];
    assert!(checked["checkpoints"].as_u64() > Some(0), "{}: {v}", d.name);
    assert_eq!(checked["signatures_checked"], true, "{}: {v}", d.name);
    assert_eq!(checked["faults"], serde_json::json!([]), "{}: {v}", d.name);
    let events = stat_events(d.ok(&["--json", "log", "stat"]).as_bytes());
    assert_eq!(v["events"].as_u64(), Some(events), "{}", d.name);
    assert!(events > 100, "{}: {events}", d.name);

    // The current-state read model holds what a replay to the head rebuilds.
    let live = d.json(&["projections", "digest"]);
    let replayed = d.json(&["replay", "--projection", "current_state"]);
    assert_eq!(live["digest"], replayed["digest"], "{}", d.name);

    // Every read model has caught up with every event.
    let status = d.json(&["projections", "status"]);
    for p in status["projections"].as_array().unwrap() {
        assert_eq!(p["lag_events"], 0, "{}: {p}", d.name);
    }
    let counted = d.ok(&["sql", "SELECT count(*) AS n FROM events", "--format", "csv"]);
    assert_eq!(
        counted.lines().nth(1).map(str::trim),
        Some(events.to_string().as_str()),
        "{}: the analytics events table has every event once",
        d.name
    );
    let signals_by_tenant = d.ok(&[
        "sql",
        "SELECT tenant, count(*) AS n FROM signals GROUP BY tenant ORDER BY tenant",
        "--format",
        "csv",
    ]);
    let replay = d.json(&["replay"]);
    Answers {
        events,
        current_state_digest: live["digest"].clone(),
        replay_digest: replay["digest"].clone(),
        signals_by_tenant,
    }
}

#[test]
fn the_demo_gives_the_same_answers_on_the_embedded_log_and_on_kafka() {
    let embedded = Deployment::embedded();
    let here = demo_scenario(&embedded);
    let Some(servers) = servers() else { return };
    let kafka = Deployment::distributed(&servers, "demo");
    let there = demo_scenario(&kafka);
    assert_eq!(here, there);

    // Personal data reads the same, sealed under keys in the data dir here and in a
    // PostgreSQL table there (none in that data dir).
    let export = |d: &Deployment| {
        d.json(&[
            "subject",
            "export",
            "--tenant",
            "tenant-001",
            "--subject",
            "billing-contact",
        ])
    };
    let (mine, theirs) = (export(&embedded), export(&kafka));
    assert_eq!(
        theirs["events"][0]["payload"]["name"],
        "Billing Contact 001"
    );
    assert_eq!(mine["events"][0]["payload"], theirs["events"][0]["payload"]);
    assert!(embedded.dir.path().join("data/keys/subjects").is_dir());
    assert!(!kafka.dir.path().join("data/keys/subjects").exists());

    // The topic is a real Kafka topic with the configured partitions and readable records.
    let stat = kafka.json(&["log", "stat"]);
    assert_eq!(stat.as_array().unwrap().len(), 4, "{stat}");
    let tail = kafka.ok(&["log", "tail", "-n", "3"]);
    assert!(tail.contains("tenant-"), "{tail}");
}

/// `annals serve` on each deployment: commands over HTTP are decided, written to the log, and
/// followed into the read models.
fn serve_scenario(d: &Deployment) -> (String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = "operator-token-0123456789";
    let mut cmd = Command::new(annals_bin());
    cmd.arg("--config")
        .arg(&d.config)
        .args(["--data-dir", "data", "serve"])
        .env("ANNALS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ANNALS__SERVER__OPERATOR_TOKEN", token)
        .current_dir(d.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let post = |path: &str, body: &str| -> String {
        let o = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "30",
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-H",
                "content-type: application/json",
                &format!("{base}{path}"),
                "-d",
                body,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}: serve did not listen",
            d.name
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let provisioned = post(
        "/v1/tenants",
        r#"{"tenant":"acme","name":"Acme","plan":"growth","region":"eu","limits":{"max_signals_per_day":100000,"max_sources":4,"rate_per_second":1000}}"#,
    );
    assert!(
        provisioned.contains("tenancy.TenantProvisioned"),
        "{}: {provisioned}",
        d.name
    );
    let signals = r#"[{"source":"web","signal_id":"s1","ts":1767225600000000,"value":1.5},{"source":"web","signal_id":"s2","ts":1767225600000001,"value":2}]"#;
    let ingested = post("/v1/tenants/acme/signals", signals);
    assert!(
        ingested.contains(r#""accepted":2"#),
        "{}: {ingested}",
        d.name
    );
    // A retry of the same signals is recognised.
    let again = post("/v1/tenants/acme/signals", signals);
    assert!(again.contains(r#""duplicates":2"#), "{}: {again}", d.name);
    // The follower applies them: lag 0 on /metrics.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = Command::new("curl")
            .args(["-s", &format!("{base}/metrics")])
            .output()
            .unwrap();
        let m = String::from_utf8_lossy(&m.stdout).into_owned();
        let caught_up = m
            .lines()
            .filter(|l| l.starts_with("annals_projection_applied_events_total{"))
            .all(|l| l.ends_with(" 3"));
        if caught_up && m.contains("annals_projection_applied_events_total{") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}: {m}", d.name);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // SAFETY: a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{}: serve exited with {status}", d.name);
    let signals = d.ok(&[
        "sql",
        "SELECT source, count(*) AS n FROM signals GROUP BY source",
        "--format",
        "csv",
    ]);
    let tenants = d.ok(&[
        "sql",
        "SELECT tenant FROM events ORDER BY tenant LIMIT 1",
        "--format",
        "csv",
    ]);
    (signals, tenants)
}

#[test]
fn serve_takes_commands_over_http_on_both_deployments() {
    let embedded = Deployment::embedded();
    let here = serve_scenario(&embedded);
    assert_eq!(here.0, "source,n\nweb,2\n");
    let Some(servers) = servers() else { return };
    let kafka = Deployment::distributed(&servers, "serve");
    assert_eq!(serve_scenario(&kafka), here);

    // The same with the commands decided by an `annals process` instance: serve sends them
    // through the commands topic and answers with the processor's outcome.
    let bus = Deployment::distributed_with(&servers, "bus", "commands = \"processors\"\n");
    let processor = KillOnDrop(
        Command::new(annals_bin())
            .arg("--config")
            .arg(&bus.config)
            .args(["--data-dir", "processor", "process"])
            .current_dir(bus.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let answers = serve_scenario(&bus);
    drop(processor);
    assert_eq!(answers, here);
}

/// A child process that ends with the test, even one that fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}
