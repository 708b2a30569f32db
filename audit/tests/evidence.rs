//! Evidence bundles end to end: exported from a real embedded log, checked by `annals-proof`'s
//! verifier with the public key alone; a flipped byte in any member is caught and the member
//! named; a rewritten manifest (an event left out) fails on its signature, a removed or foreign
//! signature likewise, and an unsigned bundle of the older format is refused unless accepted
//! knowingly; an altered event fails on the event itself even with the manifest rewritten and
//! re-signed; a period without events gives a valid, empty bundle.

use annals_audit::{
    AuditError, CheckpointKey, Evidence, EvidenceRequest, collect_evidence, make_checkpoint,
};
use annals_events::{Log, LogConfig, NewEvent};
use annals_proof::bundle::{
    MANIFEST, MANIFEST_SIGNATURE, manifest_message, read_ustar, signature_file,
};
use annals_proof::{BundleError, PublicKey, Unsigned, verify_bundle, verify_bundle_with};
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
    collect_evidence(&f.log, &f.registry, &f.key, &req, 0)
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

/// Writes `e`'s manifest again after it was changed, signed by `signer` (the log's key, as if
/// its holder forged it; another key; or none: the signature is left as it was).
fn rewrite_manifest(e: &mut Evidence, signer: Option<&CheckpointKey>) {
    let m = serde_json::to_vec_pretty(&e.manifest.to_json()).unwrap();
    if let Some(key) = signer {
        let sig = signature_file(&key.sign(&manifest_message(&m)));
        let i = e
            .files
            .iter()
            .position(|(n, _)| n == MANIFEST_SIGNATURE)
            .unwrap();
        e.files[i].1 = sig;
    }
    e.files[0] = (MANIFEST.into(), m);
}

/// Replaces a member's content and rewrites the manifest's hash of it, re-signed by `signer`.
fn forge(
    e: &Evidence,
    name: &str,
    signer: Option<&CheckpointKey>,
    edit: impl Fn(&mut Vec<u8>),
) -> Vec<u8> {
    let mut e = e.clone();
    let i = e.files.iter().position(|(n, _)| n == name).unwrap();
    edit(&mut e.files[i].1);
    e.manifest
        .files
        .insert(name.into(), Sha256::digest(&e.files[i].1).into());
    rewrite_manifest(&mut e, signer);
    e.to_tar(0)
}

/// The bundle as `annals evidence` wrote it before manifests were signed: format v1, no
/// `manifest.sig`.
fn unsigned(e: &Evidence) -> Evidence {
    let mut e = e.clone();
    e.manifest.signed = false;
    e.files.retain(|(n, _)| n != MANIFEST_SIGNATURE);
    rewrite_manifest(&mut e, None);
    e
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
        "manifest.sig",
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
    assert_eq!(names.len(), 5 + 2 * 6);
    assert!(s.manifest_signed);
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
            "manifest.sig",
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
            if name.starts_with("manifest.") {
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
            "manifest",
            "proofs",
            "public"
        ],
        "{flipped:?}"
    );
}

#[test]
fn an_altered_event_is_caught_even_with_the_manifest_rewritten_and_re_signed() {
    let f = fixture(3);
    let e = export(&f, "acme", ALL.0, ALL.1).unwrap();
    let public = f.key.public_key();
    let check = |tar: Vec<u8>| verify_bundle(&tar, &public).unwrap_err();
    // Forged by the key's holder: the manifest checks out, each event must still hold up.
    let holder = Some(&f.key);

    // A readable field that disagrees with the envelope bytes.
    let err = check(forge(&e, "events/3.json", holder, |b| {
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
    let err = check(forge(&e, "events/3.json", holder, |b| {
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
    let err = check(forge(&e, "proofs/3.json", holder, |b| {
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
    let err = check(forge(&e, &cp, holder, |b| {
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
fn the_manifest_is_signed_and_a_bundle_without_its_signature_is_refused() {
    let f = fixture(3);
    let e = export(&f, "acme", ALL.0, ALL.1).unwrap();
    let public = f.key.public_key();
    verify_bundle(&e.to_tar(0), &public).unwrap();
    let refused = |tar: &[u8]| verify_bundle(tar, &public).unwrap_err();

    // An event left out, the manifest rewritten to match: the signature no longer holds.
    let mut short = e.clone();
    let dropped = short.manifest.events.remove(1);
    for name in [
        format!("events/{dropped}.json"),
        format!("proofs/{dropped}.json"),
    ] {
        short.manifest.files.remove(&name);
        short.files.retain(|(n, _)| *n != name);
    }
    rewrite_manifest(&mut short, None);
    let err = refused(&short.to_tar(0));
    assert_eq!(
        (err.file.as_str(), err.error.what),
        (MANIFEST_SIGNATURE, "manifest signature"),
        "{err}"
    );
    assert!(err.error.detail.contains("altered"), "{err}");
    // The same signed by another key than the log's.
    let other = CheckpointKey::from_seed(&[9u8; 32]);
    rewrite_manifest(&mut short, Some(&other));
    let err = refused(&short.to_tar(0));
    assert_eq!(err.file, MANIFEST_SIGNATURE, "{err}");
    assert!(err.error.detail.contains("another key"), "{err}");
    // Only the log's key makes it verify again (the holder's statement, now with 2 events).
    rewrite_manifest(&mut short, Some(&f.key));
    assert_eq!(verify_bundle(&short.to_tar(0), &public).unwrap().events, 2);

    // One altered byte of the manifest that changes no value (a space of the indentation made
    // a tab): the signature covers the exact bytes, so it is caught too.
    let mut altered = e.clone();
    let (_, m) = &mut altered.files[0];
    let at = m.iter().position(|&b| b == b' ').unwrap();
    m[at] = b'\t';
    let err = refused(&altered.to_tar(0));
    assert_eq!(
        (err.file.as_str(), err.error.what),
        (MANIFEST_SIGNATURE, "manifest signature"),
        "{err}"
    );

    // The signature removed: refused, whatever else holds.
    let mut bare = e.clone();
    bare.files.retain(|(n, _)| n != MANIFEST_SIGNATURE);
    let err = refused(&bare.to_tar(0));
    assert_eq!(
        (err.file.as_str(), err.error.what),
        (MANIFEST_SIGNATURE, "manifest signature"),
        "{err}"
    );
    assert!(err.error.detail.contains("removed"), "{err}");
    // A signature not over the manifest's own bytes (nor the context line) is refused.
    let mut bare_sig = e.clone();
    let sig = signature_file(&f.key.sign(&bare_sig.files[0].1));
    bare_sig.files[1].1 = sig;
    assert_eq!(refused(&bare_sig.to_tar(0)).file, MANIFEST_SIGNATURE);
    // Not hex: refused, naming the form expected.
    let mut garbled = e.clone();
    garbled.files[1].1 = b"not a signature\n".to_vec();
    let err = refused(&garbled.to_tar(0));
    assert!(err.error.detail.contains("128"), "{err}");

    // A bundle of the older, unsigned format: refused by default, saying why and what to do...
    let old = unsigned(&e).to_tar(0);
    let err = refused(&old);
    assert_eq!(
        (err.file.as_str(), err.error.what),
        (MANIFEST, "manifest signature"),
        "{err}"
    );
    assert!(err.error.detail.contains("--allow-unsigned"), "{err}");
    // ... checked in full when accepted knowingly, and reported as unsigned.
    let s = verify_bundle_with(&old, &public, Unsigned::Accept).unwrap();
    assert_eq!(s.events, 3);
    assert!(!s.manifest_signed);
    assert!(s.to_string().contains("NOT signed"), "{s}");
    // Accepting unsigned bundles does not accept a signed one stripped of its signature.
    assert_eq!(
        verify_bundle_with(&bare.to_tar(0), &public, Unsigned::Accept)
            .unwrap_err()
            .file,
        MANIFEST_SIGNATURE
    );
    // Nor a signature smuggled into an unsigned bundle: it is no member of its list.
    let mut smuggled = unsigned(&e);
    smuggled
        .files
        .push((MANIFEST_SIGNATURE.into(), e.files[1].1.clone()));
    let err = verify_bundle_with(&smuggled.to_tar(0), &public, Unsigned::Accept).unwrap_err();
    assert_eq!(err.file, MANIFEST_SIGNATURE, "{err}");
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
