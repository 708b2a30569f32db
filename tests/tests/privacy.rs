//! Crypto-shredding as a data-protection officer meets it: a contact's personal data is in the
//! exports and the read models, never in clear in the log; after `annals subject erase` it is
//! unrecoverable from every file of the data dir, exports show it erased, and `verify`, proofs
//! and checkpoints made before the erasure still verify.

use std::path::Path;

use annals_tests::{annals, stderr, stdout};

fn ok(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["--data-dir", "data"];
    all.extend_from_slice(args);
    let o = annals(dir, &all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
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
    ok(
        dir.path(),
        &["demo", "--tenants", "2", "--signals-per-day", "40"],
    );
    let data = dir.path().join("data");
    let (name, email) = ("Billing Contact 001", "billing.001@tenant-001.example");
    let who = ["--tenant", "tenant-001", "--subject", "billing-contact"];

    // Before: the export and the current-state read model have it; the log never in clear.
    let mut args = vec!["--json", "subject", "export"];
    args.extend_from_slice(&who);
    let before: serde_json::Value = serde_json::from_str(&ok(dir.path(), &args)).unwrap();
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
    ok(dir.path(), &["prove", &event_id, "--out", "proof.json"]);
    ok(dir.path(), &["keys", "public", "--out", "key.pub"]);

    let mut args = vec!["subject", "erase", "--reason", "DSR-2026-0042"];
    args.extend_from_slice(&who);
    let said = ok(dir.path(), &args);
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
    let after: serde_json::Value = serde_json::from_str(&ok(dir.path(), &args)).unwrap();
    assert_eq!(after["erased"], true);
    assert_eq!(after["events"][0]["payload"]["name"], "[erased]");
    assert_eq!(after["events"][1]["event_type"], "tenancy.SubjectErased");
    let row = &after["read_models"]["current_state"]["contacts"][0];
    assert_eq!(row["name"], serde_json::Value::Null);
    assert_eq!(row["erased"], true);
    // A rebuild from the log cannot bring it back either.
    ok(dir.path(), &["projections", "rebuild", "current_state"]);
    assert_eq!(files_containing(&data, email), Vec::<String>::new());
    let tail = ok(dir.path(), &["log", "tail", "-n", "1000", "--json"]);
    assert!(!tail.contains(email) && tail.contains("[erased]"));

    // The other tenant's contact is untouched.
    let other: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &[
            "--json",
            "subject",
            "export",
            "--tenant",
            "tenant-000",
            "--subject",
            "billing-contact",
        ],
    ))
    .unwrap();
    assert_eq!(other["events"][0]["payload"]["name"], "Billing Contact 000");

    // The log, its checkpoints and the earlier proof all still verify.
    let v: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "verify"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let o = annals(
        dir.path(),
        &["verify-proof", "proof.json", "--key", "key.pub"],
    );
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));

    // Erasing again is harmless; erasing nobody is a clear error.
    let mut args = vec!["subject", "erase", "--reason", "again"];
    args.extend_from_slice(&who);
    assert!(ok(dir.path(), &args).contains("already erased"));
    let o = annals(
        dir.path(),
        &[
            "--data-dir",
            "data",
            "subject",
            "erase",
            "--tenant",
            "tenant-001",
            "--subject",
            "nobody",
            "--reason",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to erase"));
}
