//! The verifiable log end to end: events and checkpoints in a real embedded log, proofs from
//! it checked by the offline verifier with only the public key, tampering caught and named,
//! and `annals verify`'s checkpoint checks.

use annals_audit::check::{CheckpointReport, verify_checkpoints, verify_embedded};
use annals_audit::prove::{CheckpointRef, prove_consistency, prove_inclusion};
use annals_audit::{AuditError, CheckpointKey, Checkpointer, checkpoint_stream, make_checkpoint};
use annals_events::{Log, LogConfig, NewEvent};
use annals_proof::merkle::{self, leaf_hash};
use annals_proof::{Proof, PublicKey, checkpoint_message, verify_document};
use annals_schemas::Registry;
use serde_json::json;
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

/// Appends `n` events to partition `p` of topic `events`; their ids.
fn append(log: &Log, p: u32, n: u64) -> Vec<Uuid> {
    let t = log.topic("events").unwrap();
    let events: Vec<NewEvent> = (0..n).map(|i| event("acme", i)).collect();
    let ids = events.iter().map(|e| e.event_id).collect();
    t.partition(p).unwrap().append_blocking(events).unwrap();
    ids
}

struct Fixture {
    dir: tempfile::TempDir,
    key: CheckpointKey,
    registry: Registry,
}

fn fixture() -> Fixture {
    Fixture {
        dir: tempfile::tempdir().unwrap(),
        key: CheckpointKey::from_seed(&[11u8; 32]),
        registry: Registry::builtin().unwrap(),
    }
}

fn open(f: &Fixture) -> Log {
    let log = Log::open(f.dir.path(), LogConfig::default()).unwrap();
    log.create_topic("events", 2).unwrap();
    log
}

#[test]
fn proofs_of_events_verify_with_the_public_key_alone() {
    let f = fixture();
    let log = open(&f);
    let mut cp = Checkpointer::new(&f.key, &f.registry);
    let first = append(&log, 0, 5);
    let made = cp.checkpoint(&log, "events", 0).unwrap().unwrap();
    assert_eq!((made.checkpoint.tree_size, made.seq), (5, 5));
    // Nothing new: no second checkpoint of the same events.
    assert!(cp.checkpoint(&log, "events", 0).unwrap().is_none());
    let second = append(&log, 0, 7);
    let made2 = cp.checkpoint(&log, "events", 0).unwrap().unwrap();
    assert_eq!((made2.checkpoint.tree_size, made2.seq), (13, 13));
    // An empty partition gets no checkpoint.
    assert!(cp.checkpoint(&log, "events", 1).unwrap().is_none());
    let late = append(&log, 0, 1);

    let public = PublicKey::parse(&f.key.public_key().to_hex()).unwrap();
    for (id, size) in first
        .iter()
        .map(|id| (id, 5))
        .chain(second.iter().map(|id| (id, 13)))
        .chain([(&made.event_id, 13)])
    {
        let proof = prove_inclusion(&log, &f.registry, *id).unwrap();
        assert_eq!(proof.tree_size, size, "the first checkpoint covering {id}");
        let text = serde_json::to_string_pretty(&proof.to_json()).unwrap();
        let verified = verify_document(&text, &public).unwrap();
        assert!(verified.to_string().contains(&id.to_string()), "{verified}");
    }
    // Not yet covered by a checkpoint: said so, with what to do.
    let err = prove_inclusion(&log, &f.registry, late[0]).unwrap_err();
    assert!(
        matches!(err, AuditError::NotCheckpointed { seq: 14, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("annals checkpoint"), "{err}");
    assert!(matches!(
        prove_inclusion(&log, &f.registry, Uuid::now_v7()).unwrap_err(),
        AuditError::NoEvent(_)
    ));
}

#[test]
fn a_tampered_proof_is_rejected_naming_what() {
    let f = fixture();
    let log = open(&f);
    let ids = append(&log, 1, 9);
    make_checkpoint(&log, "events", 1, &f.key, &f.registry)
        .unwrap()
        .unwrap();
    let public = f.key.public_key();
    let good = prove_inclusion(&log, &f.registry, ids[3]).unwrap();
    good.verify(&public).unwrap();
    let what = |p: &annals_proof::InclusionProof| p.verify(&public).unwrap_err().what;

    let mut p = good.clone();
    p.checkpoint.signature[0] ^= 1;
    assert_eq!(what(&p), "checkpoint signature");
    let mut p = good.clone();
    p.checkpoint.tree_size += 1;
    p.tree_size += 1;
    assert!(
        matches!(what(&p), "audit path" | "checkpoint signature"),
        "{}",
        what(&p)
    );
    let mut p = good.clone();
    p.checkpoint.root_hash[5] ^= 1;
    assert_eq!(what(&p), "audit path");
    let mut p = good.clone();
    p.audit_path[0][0] ^= 1;
    assert_eq!(what(&p), "audit path");
    let mut p = good.clone();
    let n = p.event.envelope.len();
    p.event.envelope[n / 2] ^= 1;
    assert!(
        matches!(what(&p), "event hash" | "envelope"),
        "{}",
        what(&p)
    );
    // Signed by another key.
    let other = CheckpointKey::from_seed(&[12u8; 32]).public_key();
    assert_eq!(
        good.verify(&other).unwrap_err().what,
        "checkpoint signature"
    );
}

#[test]
fn consistency_between_two_checkpoints_verifies() {
    let f = fixture();
    let log = open(&f);
    let mut cp = Checkpointer::new(&f.key, &f.registry);
    append(&log, 0, 3);
    let a = cp.checkpoint(&log, "events", 0).unwrap().unwrap();
    append(&log, 0, 10);
    let b = cp.checkpoint(&log, "events", 0).unwrap().unwrap();
    let public = f.key.public_key();

    let old: CheckpointRef = "events/0/3".parse().unwrap();
    let new: CheckpointRef = b.event_id.to_string().parse().unwrap();
    let proof = prove_consistency(&log, &f.registry, &old, &new).unwrap();
    assert_eq!((proof.old.tree_size, proof.new.tree_size), (3, 14));
    let text = serde_json::to_string(&proof.to_json()).unwrap();
    assert!(matches!(
        Proof::parse(&text).unwrap(),
        Proof::Consistency(_)
    ));
    verify_document(&text, &public).unwrap();

    let mut bad = proof.clone();
    bad.path[0][0] ^= 1;
    assert_eq!(bad.verify(&public).unwrap_err().what, "consistency path");
    let mut bad = proof.clone();
    bad.old.signature[1] ^= 1;
    assert_eq!(
        bad.verify(&public).unwrap_err().what,
        "checkpoint signature"
    );

    // Older first; both of one partition; a size that was never checkpointed.
    let err = prove_consistency(&log, &f.registry, &new, &old).unwrap_err();
    assert!(err.to_string().contains("older checkpoint first"), "{err}");
    assert!(matches!(
        prove_consistency(&log, &f.registry, &"events/0/4".parse().unwrap(), &new),
        Err(AuditError::NoCheckpoint(_))
    ));
    assert!("events/x/3".parse::<CheckpointRef>().is_err());
    let _ = a;
}

/// Appends a checkpoint event as the checkpointer would, but with the given root and key.
fn forge(log: &Log, f: &Fixture, p: u32, root: [u8; 32], key: &CheckpointKey, version: u64) {
    let size = log
        .topic("events")
        .unwrap()
        .partition(p)
        .unwrap()
        .head()
        .next_seq;
    forge_sized(log, f, p, size, root, key, version);
}

/// A checkpoint event over the first `size` events with `root`, signed by `key`.
fn forge_sized(
    log: &Log,
    f: &Fixture,
    p: u32,
    size: u64,
    root: [u8; 32],
    key: &CheckpointKey,
    version: u64,
) {
    let t = log.topic("events").unwrap();
    let part = t.partition(p).unwrap();
    let msg = checkpoint_message(&f.key.log_id(), "events", p, size, &root, 1);
    let payload = json!({
        "log_id": f.key.log_id(), "topic": "events", "partition": p, "tree_size": size,
        "root_hash": hex::encode(root), "timestamp": 1, "signature": hex::encode(key.sign(&msg)),
        "public_key": key.public_key().to_hex(),
    });
    let (schema_id, payload) = f
        .registry
        .encode_json("audit.CheckpointSigned", &payload)
        .unwrap();
    part.append_blocking(vec![NewEvent {
        event_id: Uuid::now_v7(),
        tenant: "_audit".into(),
        stream: checkpoint_stream("events", p).into(),
        stream_version: version,
        event_type: "audit.CheckpointSigned".into(),
        schema_id,
        occurred_at: 1,
        actor: "forger".into(),
        causation_id: None,
        correlation_id: None,
        payload,
    }])
    .unwrap();
}

/// A report's faults as (partition, seq, kind).
fn faults(report: &CheckpointReport) -> Vec<(u32, u64, &'static str)> {
    report
        .faults
        .iter()
        .map(|x| (x.partition, x.seq, x.kind))
        .collect()
}

/// The checkpoint checks both ways: reading the log, and riding along verify's pass over the
/// files. They must agree.
fn checked(f: &Fixture, key: Option<&PublicKey>) -> CheckpointReport {
    let read = verify_checkpoints(
        &Log::open_read_only(f.dir.path()).unwrap(),
        key,
        &f.registry,
    )
    .unwrap();
    let (chain, along) = verify_embedded(f.dir.path(), 2, key, &f.registry).unwrap();
    assert!(chain.ok, "{:?}", chain.faults);
    let seen = |r: &CheckpointReport| (r.checkpoints, faults(r), r.unreadable.clone());
    assert_eq!(
        seen(&read),
        seen(&along),
        "reading the log and riding along verify differ"
    );
    along
}

/// Many events between checkpoints (folded into the tree in runs, some before any checkpoint
/// asks), checkpoints at sizes that are not multiples of the runs, a checkpoint covering a few
/// hundred fewer events than came before it, and checkpoints that cover fewer events than an
/// earlier one.
#[test]
fn checkpoints_over_many_events_are_checked_alike_both_ways() {
    let f = fixture();
    let public = f.key.public_key();
    let leaves = |log: &Log| -> Vec<[u8; 32]> {
        let t = log.topic("events").unwrap();
        let mut r = t.partition(0).unwrap().reader(0);
        let mut v = Vec::new();
        while let Some(e) = r.next_ref().unwrap() {
            v.push(leaf_hash(e.hash));
        }
        v
    };
    {
        let log = open(&f);
        for n in [200, 77, 1000, 3, 5000] {
            append(&log, 0, n);
            make_checkpoint(&log, "events", 0, &f.key, &f.registry)
                .unwrap()
                .unwrap();
        }
        append(&log, 1, 130);
        make_checkpoint(&log, "events", 1, &f.key, &f.registry)
            .unwrap()
            .unwrap();
        let first = leaves(&log);
        let lagging = first.len() - 500;
        forge_sized(
            &log,
            &f,
            0,
            lagging as u64,
            merkle::root(&first[..lagging]),
            &f.key,
            6,
        );
        // Behind the frontier: the right root of the first 150 events, then a wrong one.
        forge_sized(&log, &f, 0, 150, merkle::root(&first[..150]), &f.key, 7);
        forge_sized(&log, &f, 0, 151, merkle::root(&first[..150]), &f.key, 8);
        append(&log, 0, 70);
    }
    let report = checked(&f, Some(&public));
    assert_eq!(report.checkpoints, 9);
    assert_eq!(
        faults(&report),
        vec![(0, 6287, "checkpoint_root")],
        "{:?}",
        report.faults
    );
}

#[test]
fn verify_catches_a_checkpoint_with_a_wrong_root_or_signature() {
    let f = fixture();
    {
        let log = open(&f);
        append(&log, 0, 4);
        make_checkpoint(&log, "events", 0, &f.key, &f.registry)
            .unwrap()
            .unwrap();
        append(&log, 1, 6);
        make_checkpoint(&log, "events", 1, &f.key, &f.registry)
            .unwrap()
            .unwrap();
    }
    let public = f.key.public_key();
    let report = checked(&f, Some(&public));
    assert_eq!(report.checkpoints, 2);
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    assert!(report.signatures_checked);

    {
        let log = open(&f);
        append(&log, 0, 2);
        // Seq 7: a root that is not the events', properly signed.
        forge(&log, &f, 0, [9u8; 32], &f.key, 2);
        append(&log, 1, 1);
        // Seq 8: the right root, signed by another key.
        let leaves: Vec<[u8; 32]> = {
            let t = log.topic("events").unwrap();
            let mut r = t.partition(1).unwrap().reader(0);
            let mut v = Vec::new();
            while let Some(e) = r.next_ref().unwrap() {
                v.push(leaf_hash(e.hash));
            }
            v
        };
        forge(
            &log,
            &f,
            1,
            merkle::root(&leaves),
            &CheckpointKey::from_seed(&[13u8; 32]),
            2,
        );
    }
    let report = checked(&f, Some(&public));
    assert_eq!(report.checkpoints, 4);
    assert_eq!(
        faults(&report),
        vec![(0, 7, "checkpoint_root"), (1, 8, "checkpoint_signature")],
        "{:?}",
        report.faults
    );
    assert!(
        report.faults[0]
            .to_string()
            .contains("topic events partition 0 seq 7")
    );
    // Without a key, roots are still checked.
    let report = checked(&f, None);
    assert_eq!(report.faults.len(), 1);
    assert!(!report.signatures_checked);
}

#[test]
fn the_key_is_created_once_private_and_its_public_half_written() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = annals_audit::default_key_path(dir.path());
    let (k1, created) = CheckpointKey::load_or_create(&path).unwrap();
    assert!(created);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (k2, created) = CheckpointKey::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(k1.public_key(), k2.public_key());
    let public = annals_audit::data_dir_public_key(dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(public, k1.public_key());
}
