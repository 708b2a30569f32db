//! The embedded log's guarantees, exercised through its public API on real files.

use std::collections::BTreeMap;
use std::time::Duration;

use annals_events::log::segment;
use annals_events::verify::verify;
use annals_events::{Log, LogConfig, NewEvent, chain};
use proptest::prelude::*;

fn event(tenant: &str, n: u64, payload_len: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        tenant: tenant.into(),
        stream: format!("ingest.Source/{tenant}").into(),
        stream_version: n + 1,
        event_type: "ingest.SignalIngested".into(),
        schema_id: 6,
        occurred_at: 1_700_000_000_000_000 + n as i64,
        actor: "test".into(),
        causation_id: n.is_multiple_of(2).then(|| format!("cmd-{n}").into()),
        correlation_id: None,
        payload: (0..payload_len).map(|i| (i as u64 ^ n) as u8).collect(),
    }
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random batches appended, the log reopened, everything read back identical; readers
    /// starting at any seq and the time index agree.
    #[test]
    fn appended_batches_read_back_identical_after_reopen(
        batches in prop::collection::vec(prop::collection::vec(0usize..700, 1..20), 1..12),
        start in 0usize..200,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        let mut acks = Vec::new();
        {
            let log = Log::open(dir.path(), small_segments()).unwrap();
            let topic = log.create_topic("events", 2).unwrap();
            for (b, sizes) in batches.iter().enumerate() {
                let p = topic.partition((b % 2) as u32).unwrap();
                let evs: Vec<NewEvent> = sizes.iter().enumerate().map(|(i, &s)| event("t", (b * 100 + i) as u64, s)).collect();
                let got = p.append_blocking(evs.clone()).unwrap();
                prop_assert_eq!(got.len(), evs.len());
                written.extend(evs);
                acks.extend(got);
            }
        }
        let log = Log::open(dir.path(), small_segments()).unwrap();
        let topic = log.topic("events").unwrap();
        for p in topic.partitions() {
            let mine: Vec<_> = acks.iter().zip(&written).filter(|(a, _)| a.partition == p.id()).collect();
            let mut r = p.reader(0);
            let mut prev = chain::GENESIS;
            for (ack, ev) in &mine {
                let got = r.next().unwrap().expect("every acknowledged event");
                prop_assert_eq!(got.seq, ack.seq);
                prop_assert_eq!(got.hash, ack.hash);
                prop_assert_eq!(got.prev_hash, prev);
                prop_assert_eq!(&got.payload, &ev.payload);
                prop_assert_eq!(got.event_id, ev.event_id);
                prop_assert_eq!(got.causation_id.as_deref(), ev.causation_id.as_deref());
                prev = got.hash;
            }
            prop_assert!(r.next().unwrap().is_none());
            prop_assert_eq!(p.head().next_seq, mine.len() as u64);
            // A reader from any seq starts exactly there.
            if !mine.is_empty() {
                let s = (start % mine.len()) as u64;
                prop_assert_eq!(p.reader(s).next().unwrap().unwrap().seq, s);
                // The time index finds the first event recorded at or after a time.
                let at = mine[s as usize].0.recorded_at;
                let first = mine.iter().find(|(a, _)| a.recorded_at >= at).unwrap().0.seq;
                prop_assert_eq!(p.seq_at_time(at).unwrap(), first);
            }
            prop_assert_eq!(p.seq_at_time(i64::MAX).unwrap(), mine.len() as u64);
        }
        let report = verify(dir.path(), 2).unwrap();
        prop_assert!(report.ok, "{:?}", report.faults);
        prop_assert_eq!(report.events, written.len() as u64);
    }
}

#[test]
fn segments_roll_and_every_one_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let p = log.create_topic("events", 1).unwrap().partitions()[0].id();
    let topic = log.topic("events").unwrap();
    let part = topic.partition(p).unwrap();
    for n in 0..50 {
        part.append_blocking(vec![event("a", 2 * n, 200), event("a", 2 * n + 1, 200)])
            .unwrap();
    }
    // One big append is one commit, so it gets a segment of its own rather than being split.
    part.append_blocking((0..40).map(|n| event("a", n, 200)).collect())
        .unwrap();
    let segs = part.segments();
    assert!(segs.len() > 3, "4 KiB segments must roll: {}", segs.len());
    let (big, small) = segs.split_last().unwrap();
    assert!(big.bytes > 4096 && big.base_seq == 100, "{big:?}");
    assert!(small.iter().all(|s| s.bytes <= 4096 && s.index_entries > 0));
}

#[test]
fn torn_tail_is_cut_off_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("events", 1).unwrap();
        let first = t.partitions()[0]
            .append_blocking((0..5).map(|n| event("a", n, 100)).collect())
            .unwrap();
        t.partitions()[0]
            .append_blocking((5..10).map(|n| event("a", n, 100)).collect())
            .unwrap();
        first
    };
    let seg = segment::segment_path(&dir.path().join("log/events/0"), 0);
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the file in the middle of the last record, as a crash during a write would.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 37).unwrap();
    drop(f);
    let report = verify(dir.path(), 1).unwrap();
    assert!(!report.ok);
    assert_eq!(
        report.faults[0].seq, 9,
        "the damaged tail is named by the seq it would hold"
    );

    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let p = log.topic("events").unwrap().partitions()[0].head();
    assert_eq!(
        p.next_seq, 5,
        "recovered to the last whole commit: the torn append is cut whole"
    );
    assert_eq!(p.last_hash, first[4].hash);
    let kept: Vec<_> = std::fs::read_dir(seg.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".torn"))
        .collect();
    assert_eq!(kept.len(), 1, "the cut bytes are kept");
    // Appends continue the chain from the last whole commit.
    let next = log.topic("events").unwrap().partitions()[0]
        .append_blocking(vec![event("a", 99, 10)])
        .unwrap();
    assert_eq!(next[0].seq, 5);
    drop(log);
    assert!(verify(dir.path(), 1).unwrap().ok);
}

#[test]
fn an_append_whose_frames_are_intact_but_unfinished_is_cut_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("events", 1).unwrap();
        t.partitions()[0]
            .append_blocking((0..3).map(|n| event("a", n, 50)).collect())
            .unwrap();
        t.partitions()[0]
            .append_blocking((3..8).map(|n| event("a", n, 50)).collect())
            .unwrap();
    }
    let seg = segment::segment_path(&dir.path().join("log/events/0"), 0);
    let bytes = std::fs::read(&seg).unwrap();
    // Keep the second append's first two records whole, drop the rest: a crash between frames.
    let offsets = {
        let mut out = Vec::new();
        let mut pos = segment::HEADER_LEN as usize;
        while pos < bytes.len() {
            out.push(pos);
            pos += 8
                + (u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap())
                    & !segment::COMMIT_END) as usize;
        }
        out
    };
    std::fs::write(&seg, &bytes[..offsets[5]]).unwrap();
    let report = verify(dir.path(), 1).unwrap();
    assert_eq!(
        (report.faults[0].kind, report.faults[0].seq),
        ("commit", 3),
        "{}",
        report.faults[0]
    );
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        log.topic("events").unwrap().partitions()[0].head().next_seq,
        3
    );
    drop(log);
    assert!(verify(dir.path(), 1).unwrap().ok);
}

#[test]
fn damage_before_the_tail_refuses_to_open_instead_of_truncating() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("events", 1).unwrap();
        // More data after the damage than any torn group commit could leave.
        for n in 0..120 {
            t.partitions()[0]
                .append_blocking(vec![event("a", n, 64 * 1024)])
                .unwrap();
        }
    }
    let seg = segment::segment_path(&dir.path().join("log/events/0"), 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[segment::HEADER_LEN as usize + 20] ^= 0x40; // inside the first record
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(dir.path(), LogConfig::default())
        .err()
        .expect("must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("seq 0") && msg.contains("annals verify"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was truncated");
}

/// One byte changed anywhere in a stored event makes verify fail naming that seq. The
/// events are in a sealed segment (a later commit rolled over), which verify reads in place.
#[test]
fn any_changed_byte_of_an_event_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let config = LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config).unwrap();
        let t = log.create_topic("events", 1).unwrap();
        t.partitions()[0]
            .append_blocking((0..5).map(|n| event("acme", n, 40)).collect())
            .unwrap();
        t.partitions()[0]
            .append_blocking((5..10).map(|n| event("acme", n, 40)).collect())
            .unwrap();
    }
    let segments = segment::list_segments(&dir.path().join("log/events/0")).unwrap();
    assert_eq!(
        segments,
        vec![0, 5],
        "the first commit is in a sealed segment"
    );
    let seg = segment::segment_path(&dir.path().join("log/events/0"), 0);
    let original = std::fs::read(&seg).unwrap();
    // Find where each record starts.
    let mut starts = Vec::new();
    let mut pos = segment::HEADER_LEN as usize;
    while pos < original.len() {
        starts.push(pos);
        pos += 8
            + (u32::from_le_bytes(original[pos..pos + 4].try_into().unwrap())
                & !segment::COMMIT_END) as usize;
    }
    assert_eq!(starts.len(), 5);
    for (seq, &start) in starts.iter().enumerate() {
        let end = starts.get(seq + 1).copied().unwrap_or(original.len());
        for at in start..end {
            for flip in [0x01u8, 0x80] {
                let mut bytes = original.clone();
                bytes[at] ^= flip;
                std::fs::write(&seg, &bytes).unwrap();
                let report = verify(dir.path(), 1).unwrap();
                assert!(
                    !report.ok,
                    "byte {at} of seq {seq} changed but verify passed"
                );
                assert_eq!(
                    report.faults[0].seq, seq as u64,
                    "byte {at}: {}",
                    report.faults[0]
                );
            }
        }
    }
    std::fs::write(&seg, &original).unwrap();
    assert!(verify(dir.path(), 1).unwrap().ok);
}

#[test]
fn a_rewritten_event_with_a_fresh_crc_is_caught_by_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("events", 1).unwrap();
        t.partitions()[0]
            .append_blocking((0..3).map(|n| event("acme", n, 40)).collect())
            .unwrap();
    }
    let seg = segment::segment_path(&dir.path().join("log/events/0"), 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let start = segment::HEADER_LEN as usize;
    let len = (u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap())
        & !segment::COMMIT_END) as usize;
    let body_end = start + 8 + len;
    bytes[body_end - 40] ^= 1; // the payload's last byte, just before prev_hash… inside the body
    let body = bytes[start + 8..body_end].to_vec();
    let mut frame = Vec::new();
    segment::put_frame(&mut frame, &body, true);
    bytes[start..body_end].copy_from_slice(&frame);
    std::fs::write(&seg, &bytes).unwrap();
    let report = verify(dir.path(), 1).unwrap();
    assert_eq!(report.faults[0].seq, 0);
    assert!(
        matches!(report.faults[0].kind, "hash" | "prev_hash"),
        "{}",
        report.faults[0]
    );
}

/// Verify re-hashes records in batches; a rewritten event early in a batch is still the
/// fault reported when a later record of the same batch is damaged too, and the report counts
/// only the events before it.
#[test]
fn the_first_altered_event_is_named_even_when_a_later_one_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let hashes: Vec<_> = {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("events", 1).unwrap();
        t.partitions()[0]
            .append_blocking((0..100).map(|n| event("acme", n, 40)).collect())
            .unwrap()
            .iter()
            .map(|a| a.hash)
            .collect()
    };
    let seg = segment::segment_path(&dir.path().join("log/events/0"), 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    // Frame starts: 4-byte length (with the commit-end flag), 4-byte CRC, body.
    let mut frames = Vec::new();
    let mut at = segment::HEADER_LEN as usize;
    while at < bytes.len() {
        let len = (u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) & !segment::COMMIT_END)
            as usize;
        frames.push((at, at + 8 + len));
        at += 8 + len;
    }
    assert_eq!(frames.len(), 100);
    // Seq 5: a byte of its event id changed and the CRC recomputed, so only the hash can tell.
    let (start, end) = frames[5];
    let mut body = bytes[start + 8..end].to_vec();
    body[10] ^= 1;
    let mut frame = Vec::new();
    segment::put_frame(&mut frame, &body, false);
    bytes[start..end].copy_from_slice(&frame);
    // Seq 40: a damaged byte, which the CRC catches.
    bytes[frames[40].0 + 20] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let report = verify(dir.path(), 1).unwrap();
    let fault = &report.faults[0];
    assert_eq!((fault.seq, fault.kind), (5, "hash"), "{fault}");
    assert_eq!(fault.position, start as u64);
    assert_eq!(report.partitions[0].events, 5);
    assert_eq!(report.partitions[0].head_hash, hex::encode(hashes[4]));
}

#[test]
fn invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log.create_topic("events", 1).unwrap();
    let p = &topic.partitions()[0];
    let mut bad = event("", 1, 10);
    bad.tenant = "".into();
    let err = p.append_blocking(vec![event("a", 0, 10), bad]).unwrap_err();
    assert!(err.to_string().contains("tenant"), "{err}");
    assert_eq!(p.head().next_seq, 0);
    let huge = event("a", 0, annals_events::envelope::MAX_PAYLOAD_BYTES + 1);
    assert!(
        p.append_blocking(vec![huge])
            .unwrap_err()
            .to_string()
            .contains("payload")
    );
}

#[test]
fn a_second_writer_is_refused_while_readers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("events", 1).unwrap().partitions()[0]
        .append_blocking(vec![event("a", 0, 10)])
        .unwrap();
    let err = Log::open(dir.path(), LogConfig::default())
        .err()
        .expect("second writer refused");
    assert!(err.to_string().contains("locked"), "{err}");
    let ro = Log::open_read_only(dir.path()).unwrap();
    assert_eq!(
        ro.topic("events").unwrap().partitions()[0].head().next_seq,
        1
    );
}

#[test]
fn readers_follow_appends_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log.create_topic("events", 1).unwrap();
    let mut r = topic.partitions()[0].reader(0);
    assert!(
        r.next_blocking(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            topic.partitions()[0]
                .append_blocking(vec![event("a", 0, 10)])
                .unwrap();
        });
        let got = r
            .next_blocking(Duration::from_secs(30))
            .unwrap()
            .expect("woken by the append");
        assert_eq!(got.seq, 0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = &topic.partitions()[0];
        let waiter = async { r.next_async().await.unwrap() };
        let writer = async { p.append(vec![event("a", 1, 10)]).await.unwrap() };
        let (got, acks) = tokio::join!(waiter, writer);
        assert_eq!(got.seq, acks[0].seq);
    });
}

#[test]
fn consumer_positions_are_durable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("events", 3).unwrap();
        assert!(t.position("projector").unwrap().is_empty());
        t.commit_position("projector", &BTreeMap::from([(0, 5), (2, 7)]))
            .unwrap();
        assert!(t.commit_position("../evil", &BTreeMap::new()).is_err());
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        log.topic("events").unwrap().position("projector").unwrap(),
        BTreeMap::from([(0, 5), (2, 7)])
    );
    assert!(
        log.create_topic("events", 4).is_err(),
        "partition counts cannot change"
    );
}

/// The hand-written envelope encoding is real Avro: apache-avro decodes it with the published schema.
#[test]
#[allow(deprecated)] // from_avro_datum: the plainest way to decode one datum in 0.22
fn envelope_bytes_are_avro_of_the_published_schema() {
    use apache_avro::types::Value;
    let schema = apache_avro::Schema::parse_str(annals_schemas::ENVELOPE_V1_AVSC).unwrap();
    let ev = event("acme", 2, 17);
    let prev = [7u8; 32];
    let mut bytes = Vec::new();
    let mut env = ev.at(1_700_000_000_123_456, 3, 42, &prev);
    let hash = [9u8; 32];
    env.hash = &hash;
    env.encode(&mut bytes);
    let v = apache_avro::from_avro_datum(&schema, &mut bytes.as_slice(), None).unwrap();
    let Value::Record(fields) = v else {
        panic!("a record")
    };
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(get("tenant"), Value::String("acme".into()));
    assert_eq!(get("seq"), Value::Long(42));
    assert_eq!(get("partition"), Value::Int(3));
    assert_eq!(
        get("recorded_at"),
        Value::TimestampMicros(1_700_000_000_123_456)
    );
    assert_eq!(
        get("causation_id"),
        Value::Union(1, Box::new(Value::String("cmd-2".into())))
    );
    assert_eq!(get("payload"), Value::Bytes(ev.payload.clone()));
    assert_eq!(get("hash"), Value::Fixed(32, hash.to_vec()));
    // And the decoder reads back exactly what was encoded.
    let back = annals_events::EnvelopeRef::decode(&bytes).unwrap();
    assert_eq!(back, env);
}
