//! The `annals` command as a user meets it: the demo, verify catching a tampered byte, and
//! clear one-line errors with the documented exit codes for bad input.

use annals_tests::{annals, record_offsets, stat_events, stderr, stdout};

fn demo(dir: &std::path::Path) {
    let o = annals(
        dir,
        &[
            "--data-dir",
            "data",
            "demo",
            "--tenants",
            "2",
            "--signals-per-day",
            "30",
        ],
    );
    assert!(o.status.success(), "demo failed: {}", stderr(&o));
    assert!(stdout(&o).contains("verify OK"), "{}", stdout(&o));
}

fn assert_one_line_error(o: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "a panic reached the user: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

#[test]
fn demo_then_stat_tail_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let stat = annals(dir.path(), &["--data-dir", "data", "log", "stat", "--json"]);
    let events = stat_events(&stat.stdout);
    let v = annals(dir.path(), &["--data-dir", "data", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["events"], events, "stat and verify agree");
    assert!(
        events > 2 * 31,
        "2 tenants and 60 signals, plus their billing, models and policies"
    );
    let tail = annals(
        dir.path(),
        &["--data-dir", "data", "log", "tail", "-n", "5", "--json"],
    );
    let lines: Vec<serde_json::Value> = stdout(&tail)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        for field in [
            "event_id",
            "tenant",
            "stream",
            "event_type",
            "partition",
            "seq",
            "hash",
        ] {
            assert!(!l[field].is_null(), "{field} missing in {l}");
        }
        assert!(l["payload"].get("undecodable").is_none(), "{l}");
        if l["event_type"] == "audit.CheckpointSigned" {
            assert!(l["payload"]["root_hash"].is_string(), "{l}");
        } else {
            assert_eq!(
                l["payload"]["tenant"], l["tenant"],
                "payload decoded through its schema"
            );
        }
    }
    let v = annals(dir.path(), &["--data-dir", "data", "verify", "--json"]);
    assert!(v.status.success());
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["ok"], true);
}

#[test]
fn the_demo_run_twice_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let again = annals(
        dir.path(),
        &[
            "--data-dir",
            "data",
            "--json",
            "demo",
            "--tenants",
            "2",
            "--signals-per-day",
            "30",
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let s: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(s["events_written"], 0);
    assert!(s["log_events"].as_u64().unwrap() > 62);
    assert_eq!(
        s["duplicates_refused"], 62,
        "every signal, retries included, is recognised"
    );
    assert_eq!(s["verified"], true);
}

#[test]
fn verify_names_the_seq_of_a_tampered_byte_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    // The partition with the most events, and a byte in the middle of its 6th record.
    let log = dir.path().join("data/log/events");
    let seg = (0..8)
        .map(|p| log.join(p.to_string()).join("00000000000000000000.seg"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let offsets = record_offsets(&bytes);
    let at = (offsets[5] + offsets[6]) / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let o = annals(dir.path(), &["--data-dir", "data", "verify"]);
    assert_one_line_error(&o, 1, "seq 5");
    assert!(stdout(&o).contains("FAULT"), "{}", stdout(&o));
    let j = annals(dir.path(), &["--data-dir", "data", "verify", "--json"]);
    assert_eq!(j.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["faults"][0]["seq"], 5);
}

#[test]
fn bad_input_gets_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_one_line_error(
        &annals(d, &["--data-dir", "missing", "verify"]),
        2,
        "annals demo",
    );
    assert_one_line_error(
        &annals(d, &["--data-dir", "missing", "log", "stat"]),
        2,
        "--data-dir",
    );
    std::fs::write(d.join("typo.toml"), "[log]\npartitionz = 3\n").unwrap();
    assert_one_line_error(
        &annals(d, &["--config", "typo.toml", "schema", "list"]),
        2,
        "partitionz",
    );
    std::fs::write(d.join("kafka.toml"), "[log]\nbackend = \"kafka\"\n").unwrap();
    assert_one_line_error(
        &annals(d, &["--config", "kafka.toml", "schema", "list"]),
        2,
        "[log.kafka] brokers",
    );
    std::fs::write(
        d.join("kafka.toml"),
        "[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"localhost\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &annals(d, &["--config", "kafka.toml", "schema", "list"]),
        2,
        "host:port",
    );
    // Nothing listens on port 1: the error says where it looked and what to start.
    std::fs::write(
        d.join("kafka.toml"),
        "[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"127.0.0.1:1\"\ntimeout_seconds = 2\n",
    )
    .unwrap();
    assert_one_line_error(
        &annals(
            d,
            &["--config", "kafka.toml", "--data-dir", "k", "log", "stat"],
        ),
        1,
        "scripts/services up kafka",
    );
    assert_one_line_error(
        &annals(d, &["--config", "absent.toml", "schema", "list"]),
        2,
        "absent.toml",
    );
    let o = annals(d, &["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
    demo(d);
    // The same data dir with another dataset: the tenants conflict, and the user is told.
    let other = annals(
        d,
        &["--data-dir", "data", "demo", "--signals-per-day", "40"],
    );
    assert_eq!(other.status.code(), Some(2), "{}", stderr(&other));
    assert!(
        stderr(&other)
            .lines()
            .last()
            .unwrap()
            .contains("fresh --data-dir"),
        "{}",
        stderr(&other)
    );
    assert_one_line_error(
        &annals(d, &["--data-dir", "data", "log", "tail", "--topic", "nope"]),
        2,
        "nope",
    );
    assert_one_line_error(
        &annals(
            d,
            &["--data-dir", "data", "log", "tail", "--partition", "99"],
        ),
        2,
        "partition 99",
    );
}

#[test]
fn a_damaged_data_dir_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    std::fs::write(dir.path().join("data/log/events/topic.json"), b"{not json").unwrap();
    for args in [
        &["--data-dir", "data", "verify"][..],
        &["--data-dir", "data", "log", "stat"][..],
    ] {
        let o = annals(dir.path(), args);
        assert_one_line_error(&o, 1, "topic.json");
    }
}

#[test]
fn schema_commands_list_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let list = annals(dir.path(), &["schema", "list", "--json"]);
    assert!(list.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["event_type"] == "ingest.SignalIngested" && r["version"] == 2)
    );
    let check = annals(dir.path(), &["schema", "check"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).contains("ingest.SignalIngested v1 -> v2"));
}

/// What an auditor does: a proof for one event checked offline with the public key alone,
/// a tampered proof rejected, replays that agree, and an aggregate's history.
#[test]
fn an_auditor_proves_replays_and_reads_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    demo(d);
    let tail = annals(
        d,
        &["--data-dir", "data", "log", "tail", "-n", "40", "--json"],
    );
    let issued: serde_json::Value = stdout(&tail)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event_type"] == "billing.InvoiceIssued")
        .expect("an issued invoice among the latest events");
    let id = issued["event_id"].as_str().unwrap();
    let proof = annals(
        d,
        &["--data-dir", "data", "prove", id, "--out", "proof.json"],
    );
    assert!(proof.status.success(), "{}", stderr(&proof));
    let key = annals(
        d,
        &["--data-dir", "data", "keys", "public", "--out", "key.pub"],
    );
    assert!(key.status.success(), "{}", stderr(&key));
    // Offline: no data dir needed.
    let ok = annals(
        d,
        &[
            "--data-dir",
            "nowhere",
            "verify-proof",
            "proof.json",
            "--key",
            "key.pub",
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let text = std::fs::read_to_string(d.join("proof.json")).unwrap();
    let tampered = text.replacen(&issued["hash"].as_str().unwrap()[..8], "00000000", 1);
    assert_ne!(tampered, text);
    std::fs::write(d.join("bad.json"), tampered).unwrap();
    assert_one_line_error(
        &annals(d, &["verify-proof", "bad.json", "--key", "key.pub"]),
        1,
        "proof",
    );

    let stream = issued["stream"].as_str().unwrap();
    let history = annals(d, &["--data-dir", "data", "history", stream, "--json"]);
    let types: Vec<String> = stdout(&history)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types.first().map(String::as_str),
        Some("billing.InvoiceOpened")
    );
    assert!(types.iter().any(|t| t == "billing.InvoiceIssued"));

    let digest = |args: &[&str]| {
        let o = annals(d, args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().next().unwrap().to_owned()
    };
    let a = digest(&["--data-dir", "data", "replay"]);
    assert!(a.starts_with("digest "), "{a}");
    assert_eq!(
        a,
        digest(&["--data-dir", "data", "replay"]),
        "two replays of the same log agree"
    );
    let tenant = issued["tenant"].as_str().unwrap();
    assert_ne!(
        a,
        digest(&["--data-dir", "data", "replay", "--tenant", tenant])
    );
}

/// An auditor's evidence bundle: a tenant's events of a period exported after the demo, checked
/// offline with the public key alone; a flipped byte in it is caught and the file named; a
/// period without events gives a valid bundle of 0 events.
#[test]
fn an_auditor_checks_an_evidence_bundle_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    demo(d);
    let tail = annals(
        d,
        &["--data-dir", "data", "log", "tail", "-n", "40", "--json"],
    );
    let tenant = stdout(&tail)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| e["tenant"].as_str().unwrap().to_owned())
        .find(|t| !t.starts_with('_'))
        .expect("a tenant's event among the latest");
    let key = annals(
        d,
        &["--data-dir", "data", "keys", "public", "--out", "key.pub"],
    );
    assert!(key.status.success(), "{}", stderr(&key));
    let export = |from: &str, to: &str, out: &str| {
        let o = annals(
            d,
            &[
                "--data-dir",
                "data",
                "evidence",
                "--tenant",
                &tenant,
                "--from",
                from,
                "--to",
                to,
                "--out",
                out,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    export("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z", "bundle.tar");
    let check = |bundle: &str| {
        annals(
            d,
            &[
                "--data-dir",
                "nowhere",
                "verify-proof",
                "--bundle",
                bundle,
                "--key",
                "key.pub",
            ],
        )
    };
    let ok = check("bundle.tar");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let line = stdout(&ok);
    assert!(line.starts_with("OK "), "{line}");
    assert!(line.contains(&format!("of tenant {tenant}")), "{line}");
    assert!(!line.contains(" 0 events"), "the demo wrote events: {line}");

    // One flipped byte of an event's envelope, in the middle of the archive, is named.
    let mut bytes = std::fs::read(d.join("bundle.tar")).unwrap();
    let needle = b"\"envelope_hex\": \"";
    let flip = (bytes.len() / 2..bytes.len())
        .find(|&i| bytes[i..].starts_with(needle))
        .unwrap()
        + needle.len()
        + 40;
    bytes[flip] = if bytes[flip] == b'0' { b'1' } else { b'0' };
    std::fs::write(d.join("bad.tar"), &bytes).unwrap();
    assert_one_line_error(&check("bad.tar"), 1, ".json");

    // The manifest is signed: the bundle says so, and holds its signature.
    let bytes = std::fs::read(d.join("bundle.tar")).unwrap();
    assert!(bytes.windows(12).any(|w| w == b"manifest.sig"));
    assert!(bytes.windows(18).any(|w| w == b"annals-evidence-v2"));

    // Signing needs the checkpoint-signing key itself, not its public half: said, with what to do.
    let o = annals(
        d,
        &[
            "--data-dir",
            "data",
            "evidence",
            "--tenant",
            &tenant,
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--out",
            "nokey.tar",
            "--key",
            "no-such.ed25519",
        ],
    );
    assert_one_line_error(&o, 2, "annals checkpoint");

    // A period before the demo: valid, 0 events.
    export("1000000", "2000000", "empty.tar");
    let empty = check("empty.tar");
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert!(
        stdout(&empty).contains(": 0 events of tenant"),
        "{}",
        stdout(&empty)
    );
}

#[test]
fn an_analyst_queries_the_demo_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let sql = |args: &[&str]| {
        let mut all = vec!["--data-dir", "data", "sql"];
        all.extend_from_slice(args);
        annals(dir.path(), &all)
    };
    // Before any projection ran, the analyst is told what to do.
    let o = sql(&["SELECT 1"]);
    assert_one_line_error(&o, 2, "projections run");
    demo(dir.path());
    // The demo built the analytics tables: every event and every accepted signal, once.
    let o = sql(&[
        "SELECT tenant, count(*) AS n FROM signals GROUP BY tenant ORDER BY tenant",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "tenant,n\ntenant-000,30\ntenant-001,30\n");
    let o = sql(&["SELECT count(*) AS n FROM events", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stat = annals(dir.path(), &["--data-dir", "data", "log", "stat", "--json"]);
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    let events: u64 = stat
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["events"].as_u64().unwrap())
        .sum();
    assert_eq!(rows[0]["n"], events);
    let o = sql(&[
        "SELECT currency, sum(amount) AS amount FROM invoice_lines GROUP BY currency ORDER BY currency",
    ]);
    assert!(stdout(&o).contains("| currency |"), "{}", stdout(&o));
    // Read-only, and clear about mistakes.
    assert_one_line_error(&sql(&["DROP TABLE signals"]), 2, "query refused");
    assert_one_line_error(&sql(&["SELECT * FROM nope"]), 2, "annals sql --tables");
    assert_one_line_error(&sql(&[""]), 2, "give a query");
    let o = sql(&["--tables"]);
    assert!(stdout(&o).contains("## `signals`"), "{}", stdout(&o));
    // Status shows both projections caught up.
    let st = annals(
        dir.path(),
        &["--data-dir", "data", "--json", "projections", "status"],
    );
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    for p in st["projections"].as_array().unwrap() {
        assert_eq!(p["lag_events"], 0, "{p}");
    }
    assert_eq!(st["projections"][1]["rows"]["events"], events);
}

#[test]
fn replay_into_the_read_model_matches_the_live_one_and_stops_at_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--data-dir", "data", "--json"];
        all.extend_from_slice(args);
        let o = annals(dir.path(), &all);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // Replay to the head gives the digest of the live read model, whole and per tenant.
    let live = json(&["projections", "digest"]);
    let replayed = json(&["replay", "--projection", "current_state"]);
    assert_eq!(live["digest"], replayed["digest"]);
    let live_t = json(&["projections", "digest", "--tenant", "tenant-001"]);
    let replayed_t = json(&[
        "replay",
        "--projection",
        "current_state",
        "--tenant",
        "tenant-001",
    ]);
    assert_eq!(live_t["digest"], replayed_t["digest"]);
    assert_ne!(live_t["digest"], live["digest"]);
    // The demo signed a checkpoint of every partition with events: replay to one of them.
    let stat = json(&["log", "stat"]);
    let (partition, events) = stat
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_u64().unwrap(),
                r["events"].as_u64().unwrap(),
            )
        })
        .find(|(_, n)| *n > 0)
        .unwrap();
    // The checkpoint is the partition's last event and covers every event before it.
    let bound = format!("checkpoint:events/{partition}/{}", events - 1);
    let r = json(&["replay", "--until", &bound]);
    assert_eq!(r["positions"][partition.to_string()], events - 1, "{r}");
    let twice = json(&["replay", "--until", &bound]);
    assert_eq!(r["digest"], twice["digest"], "replays are deterministic");
    let o = annals(
        dir.path(),
        &[
            "--data-dir",
            "data",
            "replay",
            "--until",
            "checkpoint:events/0/99999",
        ],
    );
    assert_one_line_error(&o, 2, "no checkpoint");
}
