//! Evidence bundles end to end: exported from a real embedded log, checked by `annals-proof`'s
//! verifier with the public key alone; a flipped byte in any member is caught and the member
//! named; an altered event with a rewritten manifest still fails on the event itself; a period
//! without events gives a valid, empty bundle.

use annals_audit::{
    AuditError, CheckpointKey, Evidence, EvidenceRequest, collect_evidence, make_checkpoint,
};
use annals_events::{Log, LogConfig, NewEvent};
use annals_proof::bundle::{MANIFEST, read_ustar};
use annals_proof::{BundleError, PublicKey, verify_bundle};
use annals_schemas::Registry;
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn event(tenant: &str, i: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        tenant: tenant.into(),
        stream: format!("tenant/{tenant}").into(),
        stream_version: i + 1,
        event_type: "tenancy.TenantArchived".into(),
        schema_id: 5,
        occurred_at: 1_700_000_000_000_000 + i as i64,
        actor: "tester".into(),
        causation_id: Some(format!("cmd-{i}").into()),
        correlation_id: None,
        payload: vec![8, b'a', b'c', b'm', b'e'],
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    log: Log,
    key: CheckpointKey,
    registry: Registry,
    partition: u32,
    /// `recorded_at` of every `acme` event appended, in order.
    acme_times: Vec<i64>,
}

/// A log whose `acme` partition holds `acme` events interleaved with another tenant's, then a
/// checkpoint of it.
fn fixture(acme_events: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("events", 4).unwrap();
    let key = CheckpointKey::from_seed(&[7u8; 32]);
    let registry = Registry::builtin().unwrap();
    let topic = log.topic("events").unwrap();
    let part = topic.partition_for("acme");
    let mut acme_times = Vec::new();
    for i in 0..acme_events {
        part.append_blocking(vec![event("beta", i)]).unwrap();
        let a = part.append_blocking(vec![event("acme", i)]).unwrap();
        acme_times.push(a[0].recorded_at);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let partition = part.id();
    make_checkpoint(&log, "events", partition, &key, &registry)
        .unwrap()
        .unwrap();
    Fixture {
        _dir: dir,
        log,
        key,
        registry,
        partition,
        acme_times,
    }
}

fn export(f: &Fixture, tenant: &str, from: i64, to: i64) -> Result<Evidence, AuditError> {
    let req = EvidenceRequest {
        tenant: tenant.into(),
        topic: "events".into(),
        from,
        to,
    };
    collect_evidence(&f.log, &f.registry, &f.key.public_key(), &req, 0)
}

const ALL: (i64, i64) = (0, i64::MAX);

/// Where each member's content is in the archive: (name, start, len).
fn members(tar: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while tar[pos..pos + 512].iter().any(|&b| b != 0) {
        let h = &tar[pos..pos + 512];
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..end].to_vec()).unwrap();
        let size_text = std::str::from_utf8(&h[124..135]).unwrap();
        let size = usize::from_str_radix(size_text.trim_matches(['\0', ' ']), 8).unwrap();
        out.push((name, pos + 512, size));
        pos += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Replaces a member's content and rewrites the manifest's hash of it, as a forger would.
fn forge(e: &Evidence, name: &str, edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut e = e.clone();
    let i = e.files.iter().position(|(n, _)| n == name).unwrap();
    edit(&mut e.files[i].1);
    e.manifest
        .files
        .insert(name.into(), Sha256::digest(&e.files[i].1).into());
    let m = serde_json::to_vec_pretty(&e.manifest.to_json()).unwrap();
    e.files[0] = (MANIFEST.into(), m);
    e.to_tar(0)
}

#[test]
fn a_bundle_from_a_real_log_verifies_with_the_public_key_alone() {
    let f = fixture(6);
    let e = export(&f, "acme", ALL.0, ALL.1).unwrap();
    let tar = e.to_tar(1_700_000_000);
    let public = PublicKey::parse(&f.key.public_key().to_hex()).unwrap();
    let s = verify_bundle(&tar, &public).unwrap();
    assert_eq!((s.events, s.tenant.as_str()), (6, "acme"));
    assert_eq!(s.partition, f.partition);
    assert_eq!(
        s.checkpoints,
        vec![12],
        "one checkpoint of all 12 events, for every proof"
    );
    assert!(s.to_string().starts_with("6 events of tenant acme"), "{s}");
    // Only acme's events, at the odd seqs (beta's are between them), with their proofs.
    assert_eq!(e.manifest.events, vec![1, 3, 5, 7, 9, 11]);
    let names: Vec<String> = read_ustar(&tar)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for want in [
        "manifest.json",
        "README.md",
        "public.key",
        "checkpoints/",
        "events/1.json",
        "proofs/11.json",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} in {names:?}"
        );
    }
    assert_eq!(names.len(), 4 + 2 * 6);
    // Each proof is also a document `annals verify-proof FILE` accepts on its own.
    let (_, proof) = read_ustar(&tar)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "proofs/5.json")
        .unwrap();
    annals_proof::verify_document(std::str::from_utf8(&proof).unwrap(), &public).unwrap();

    // The period bounds recorded_at: from inclusive, to exclusive.
    let t = &f.acme_times;
    let e = export(&f, "acme", t[2], t[4]).unwrap();
    assert_eq!(e.manifest.events, vec![5, 7]);
    verify_bundle(&e.to_tar(0), &public).unwrap();

    // Checked with another key: the bundle's key is named.
    let other = CheckpointKey::from_seed(&[8u8; 32]).public_key();
    let err = verify_bundle(&tar, &other).unwrap_err();
    assert_eq!(err.file, "public.key", "{err}");
}

#[test]
fn a_flipped_byte_in_any_member_is_caught_and_the_member_named() {
    let f = fixture(3);
    let e = export(&f, "acme", ALL.0, ALL.1).unwrap();
    let tar = e.to_tar(0);
    let public = f.key.public_key();
    verify_bundle(&tar, &public).unwrap();
    let mut flipped = Vec::new();
    for (name, start, len) in members(&tar) {
        let wanted = [
            "events/3.json",
            "proofs/3.json",
            "checkpoints/0-6.json",
            "checkpoints/1-6.json",
            "checkpoints/2-6.json",
            "checkpoints/3-6.json",
            "manifest.json",
            "public.key",
            "README.md",
        ];
        if !wanted.contains(&name.as_str()) {
            continue;
        }
        flipped.push(name.clone());
        for i in start..start + len {
            let mut bad = tar.clone();
            bad[i] ^= 0x01;
            let err: BundleError = verify_bundle(&bad, &public)
                .err()
                .unwrap_or_else(|| panic!("byte {} of {name} flipped went unnoticed", i - start));
            if name == "manifest.json" {
                assert!(
                    err.file == name || err.to_string().contains("manifest"),
                    "{name} byte {}: {err}",
                    i - start
                );
            } else {
                assert_eq!(err.file, name, "byte {}: {err}", i - start);
            }
        }
    }
    flipped.sort();
    let kinds: Vec<&str> = flipped
        .iter()
        .map(|n| n.split(['/', '.']).next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "README",
            "checkpoints",
            "events",
            "manifest",
            "proofs",
            "public"
        ],
        "{flipped:?}"
    );
}

#[test]
fn an_altered_event_is_caught_even_with_the_manifest_rewritten() {
    let f = fixture(3);
    let e = export(&f, "acme", ALL.0, ALL.1).unwrap();
    let public = f.key.public_key();
    let check = |tar: Vec<u8>| verify_bundle(&tar, &public).unwrap_err();

    // A readable field that disagrees with the envelope bytes.
    let err = check(forge(&e, "events/3.json", |b| {
        let t = String::from_utf8(b.clone()).unwrap();
        *b = t
            .replace("\"actor\": \"tester\"", "\"actor\": \"someone\"")
            .into_bytes();
    }));
    assert_eq!(
        (err.file.as_str(), err.error.what),
        ("events/3.json", "event"),
        "{err}"
    );
    assert!(err.error.detail.contains("actor"), "{err}");

    // The envelope bytes themselves (a byte of the payload inside them).
    let err = check(forge(&e, "events/3.json", |b| {
        let t = String::from_utf8(b.clone()).unwrap();
        let hex = t.split("\"envelope_hex\": \"").nth(1).unwrap();
        let at = t.len() - hex.len() + 90;
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    }));
    assert_eq!(err.file, "events/3.json", "{err}");
    assert!(
        ["event hash", "envelope"].contains(&err.error.what),
        "{err}"
    );

    // A proof's audit path.
    let err = check(forge(&e, "proofs/3.json", |b| {
        let t = String::from_utf8(b.clone()).unwrap();
        let path = t.split("\"audit_path\": [").nth(1).unwrap();
        let at = t.len() - path.len() + path.find('"').unwrap() + 1;
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    }));
    assert_eq!(
        (err.file.as_str(), err.error.what),
        ("proofs/3.json", "audit path"),
        "{err}"
    );

    // The checkpoint's root (its signature no longer holds).
    let cp = e.manifest.checkpoints[0].clone();
    let err = check(forge(&e, &cp, |b| {
        let t = String::from_utf8(b.clone()).unwrap();
        let root = t.split("\"root_hash\": \"").nth(1).unwrap();
        let at = t.len() - root.len();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    }));
    assert_eq!(
        (err.file.as_str(), err.error.what),
        (cp.as_str(), "checkpoint signature"),
        "{err}"
    );
}

#[test]
fn a_period_without_events_gives_a_valid_empty_bundle() {
    let f = fixture(2);
    let e = export(&f, "acme", 1_000_000, 2_000_000).unwrap();
    assert!(e.manifest.events.is_empty() && e.checkpoint.is_none());
    let s = verify_bundle(&e.to_tar(0), &f.key.public_key()).unwrap();
    assert_eq!(s.events, 0);
    assert!(s.to_string().starts_with("0 events of tenant acme"), "{s}");
    // A tenant with no events at all, likewise.
    let s = verify_bundle(
        &export(&f, "nobody", ALL.0, ALL.1).unwrap().to_tar(0),
        &f.key.public_key(),
    )
    .unwrap();
    assert_eq!(s.events, 0);
    assert!(matches!(
        export(&f, "acme", 5, 5).unwrap_err(),
        AuditError::BadReference(_)
    ));
}

#[test]
fn events_after_the_latest_checkpoint_are_refused_with_what_to_do() {
    let f = fixture(2);
    let part = f.log.topic("events").unwrap();
    let part = part.partition(f.partition).unwrap();
    part.append_blocking(vec![event("acme", 9)]).unwrap();
    let err = export(&f, "acme", ALL.0, ALL.1).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::NotCovered {
                count: 1,
                first_seq: 5,
                covered: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_usage());
    assert!(err.to_string().contains("annals checkpoint"), "{err}");
    make_checkpoint(&f.log, "events", f.partition, &f.key, &f.registry)
        .unwrap()
        .unwrap();
    let e = export(&f, "acme", ALL.0, ALL.1).unwrap();
    let s = verify_bundle(&e.to_tar(0), &f.key.public_key()).unwrap();
    assert_eq!(
        (s.events, s.checkpoints.clone()),
        (3, vec![6]),
        "the latest checkpoint"
    );
}
