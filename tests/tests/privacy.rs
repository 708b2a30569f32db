//! Crypto-shredding as a data-protection officer meets it: a contact's personal data is in the
//! exports and the read models, never in clear in the log; after `annals subject erase` it is
//! unrecoverable from every file of the data dir, exports show it erased, and `verify`, proofs
//! and checkpoints made before the erasure still verify. The same with the subject keys in the
//! data dir and in a PostgreSQL table (`[privacy] key_store = "postgres"`, on the real test
//! server `ANNALS_TEST_POSTGRES`).

use std::path::{Path, PathBuf};
use std::process::Command;

use annals_tests::{annals, stderr, stdout, test_server, unique_name};

/// Runs `annals` in a test dir with data dir `data` and, when given, a config file.
struct Runner<'a> {
    dir: &'a Path,
    config: Option<PathBuf>,
}

impl Runner<'_> {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let config = self.config.as_ref().map(|c| c.display().to_string());
        let mut all = vec!["--data-dir", "data"];
        if let Some(c) = &config {
            all.extend_from_slice(&["--config", c]);
        }
        all.extend_from_slice(args);
        annals(self.dir, &all)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    }
}
/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(p.display().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn an_erased_subject_is_unrecoverable_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let r = Runner {
        dir: dir.path(),
        config: None,
    };
    erasure_scenario(&r);
    // The keys were files of the data dir: the erased subject's is gone, its tombstone kept.
    let keys = dir.path().join("data/keys/subjects");
    let names: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.iter().filter(|n| n.ends_with(".erased")).count(), 1);
}

/// The same with the subject keys in a PostgreSQL table: none in the data dir, the erased
/// subject's row keeps no key.
#[test]
fn an_erased_subject_is_unrecoverable_with_the_keys_in_postgres() {
    let Some(url) = test_server("ANNALS_TEST_POSTGRES") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = unique_name("privacy_keys");
    let config = dir.path().join("annals.toml");
    std::fs::write(
        &config,
        format!(
            "[privacy]\nkey_store = \"postgres\"\npostgres = \"{url}\"\npostgres_schema = \"{schema}\"\n"
        ),
    )
    .unwrap();
    let _drop = DropSchema(url.clone(), schema.clone());
    let r = Runner {
        dir: dir.path(),
        config: Some(config),
    };
    erasure_scenario(&r);
    assert!(
        !dir.path().join("data/keys/subjects").exists(),
        "no subject key in the data dir"
    );
    let rows = psql(
        &url,
        &format!(
            "SELECT count(*) FILTER (WHERE erased_at IS NOT NULL), count(*) FILTER (WHERE key IS NULL), count(*) FROM \"{schema}\".annals_subject_keys"
        ),
    );
    let counts: Vec<u64> = rows.trim().split('|').map(|n| n.parse().unwrap()).collect();
    assert_eq!(counts[0], 1, "the subject is erased: {rows}");
    assert_eq!(counts[1], 1, "its row keeps no key: {rows}");
    assert!(counts[2] > 1, "the other contacts keep theirs: {rows}");

    // A wrong URL is said before anything runs, without the password.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[privacy]\nkey_store = \"postgres\"\npostgres = \"postgres://annals:s3cret@127.0.0.1:1/annals\"\n",
    )
    .unwrap();
    let o = Runner {
        dir: dir.path(),
        config: Some(bad),
    }
    .run(&["log", "tail", "-n", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("subject key store") && !stderr(&o).contains("s3cret"),
        "{}",
        stderr(&o)
    );
}

fn psql(url: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args([url, "-tAc", sql])
        .output()
        .expect("run psql");
    assert!(o.status.success(), "{sql}: {}", stderr(&o));
    stdout(&o)
}

struct DropSchema(String, String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        Command::new("psql")
            .args([
                &self.0,
                "-qc",
                &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.1),
            ])
            .output()
            .ok();
    }
}

/// Demo, export, prove, erase, export again, rebuild, verify: the subject's personal data is
/// nowhere after the erasure, everything else still verifies.
fn erasure_scenario(r: &Runner) {
    let dir = r.dir;
    r.ok(&["demo", "--tenants", "2", "--signals-per-day", "40"]);
    let data = dir.join("data");
    let (name, email) = ("Billing Contact 001", "billing.001@tenant-001.example");
    let who = ["--tenant", "tenant-001", "--subject", "billing-contact"];

    // Before: the export and the current-state read model have it; the log never in clear.
    let mut args = vec!["--json", "subject", "export"];
    args.extend_from_slice(&who);
    let before: serde_json::Value = serde_json::from_str(&r.ok(&args)).unwrap();
    assert_eq!(before["erased"], false);
    assert_eq!(before["events"][0]["payload"]["name"], name);
    assert_eq!(
        before["read_models"]["current_state"]["contacts"][0]["email"],
        email
    );
    let in_clear = files_containing(&data, email);
    assert!(
        in_clear.iter().all(|f| f.contains("read-models")),
        "personal data in clear outside the read models: {in_clear:?}"
    );
    assert!(!in_clear.is_empty(), "the read model holds the email");

    // A proof of the contact's event, made before the erasure.
    let event_id = before["events"][0]["event_id"].as_str().unwrap().to_owned();
    r.ok(&["prove", &event_id, "--out", "proof.json"]);
    r.ok(&["keys", "public", "--out", "key.pub"]);

    let mut args = vec!["subject", "erase", "--reason", "DSR-2026-0042"];
    args.extend_from_slice(&who);
    let said = r.ok(&args);
    assert!(said.contains("erasure recorded"), "{said}");

    // After: in no file of the data dir, in no export, in no read model.
    for needle in [name, email, "billing.001@"] {
        assert_eq!(
            files_containing(&data, needle),
            Vec::<String>::new(),
            "{needle}"
        );
    }
    let mut args = vec!["--json", "subject", "export"];
    args.extend_from_slice(&who);
    let after: serde_json::Value = serde_json::from_str(&r.ok(&args)).unwrap();
    assert_eq!(after["erased"], true);
    assert_eq!(after["events"][0]["payload"]["name"], "[erased]");
    assert_eq!(after["events"][1]["event_type"], "tenancy.SubjectErased");
    let row = &after["read_models"]["current_state"]["contacts"][0];
    assert_eq!(row["name"], serde_json::Value::Null);
    assert_eq!(row["erased"], true);
    // A rebuild from the log cannot bring it back either.
    r.ok(&["projections", "rebuild", "current_state"]);
    assert_eq!(files_containing(&data, email), Vec::<String>::new());
    let tail = r.ok(&["log", "tail", "-n", "1000", "--json"]);
    assert!(!tail.contains(email) && tail.contains("[erased]"));

    // The other tenant's contact is untouched.
    let other: serde_json::Value = serde_json::from_str(&r.ok(&[
        "--json",
        "subject",
        "export",
        "--tenant",
        "tenant-000",
        "--subject",
        "billing-contact",
    ]))
    .unwrap();
    assert_eq!(other["events"][0]["payload"]["name"], "Billing Contact 000");

    // The log, its checkpoints and the earlier proof all still verify.
    let v: serde_json::Value = serde_json::from_str(&r.ok(&["--json", "verify"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let o = annals(dir, &["verify-proof", "proof.json", "--key", "key.pub"]);
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));

    // Erasing again is harmless; erasing nobody is a clear error.
    let mut args = vec!["subject", "erase", "--reason", "again"];
    args.extend_from_slice(&who);
    assert!(r.ok(&args).contains("already erased"));
    let o = r.run(&[
        "subject",
        "erase",
        "--tenant",
        "tenant-001",
        "--subject",
        "nobody",
        "--reason",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to erase"));
}
