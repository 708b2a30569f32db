//! The log on a real Kafka-protocol broker (`ANNALS_TEST_KAFKA`, started by `scripts/test`):
//! round trips, readers from any seq, the time index, and the chain rule under two writers of
//! one partition — a zombie's acknowledged writes survive, the other side is refused and
//! skipped by every reader, and `verify` reports the fork.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use annals_events::log::Mode;
use annals_events::log::kafka::verify::verify;
use annals_events::{Appended, KafkaConfig, Log, LogConfig, LogError, NewEvent};

mod common;
use common::{brokers, config, event};

fn open(dir: &Path, cfg: &KafkaConfig, mode: Mode) -> Log {
    Log::open_kafka(dir, cfg.clone(), LogConfig::default(), mode).unwrap()
}

/// Every event of partition `p` a fresh reader sees: (seq, event id, hash).
fn chain_of(log: &Log, p: u32) -> Vec<(u64, uuid::Uuid, [u8; 32])> {
    let topic = log.topic("events").unwrap();
    let mut r = topic.partition(p).unwrap().reader(0);
    let mut out = Vec::new();
    while let Some(e) = r.next().unwrap() {
        out.push((e.seq, e.event_id, e.hash));
    }
    out
}

#[test]
fn events_round_trip_and_readers_start_anywhere() {
    let Some(b) = brokers() else { return };
    let cfg = config(&b, "roundtrip");
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &cfg, Mode::ReadWrite);
    let topic = log.create_topic("events", 3).unwrap();
    // The same topic again is fine; another partition count is refused.
    assert!(log.create_topic("events", 3).is_ok());
    assert!(matches!(
        log.create_topic("events", 4),
        Err(LogError::PartitionCount { .. })
    ));
    let part = topic.partition(1).unwrap();
    let mut acks: Vec<Appended> = Vec::new();
    for batch in 0..20u64 {
        let events = (0..1 + batch % 4)
            .map(|i| event("t1", batch * 10 + i))
            .collect();
        acks.extend(part.append_blocking(events).unwrap());
    }
    let n = acks.len() as u64;
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    assert_eq!(part.head().next_seq, n);

    // Another process's view: a read-only open finds the same head and chain.
    let ro = open(dir.path(), &cfg, Mode::ReadOnly);
    let rpart_topic = ro.topic("events").unwrap();
    let rpart = rpart_topic.partition(1).unwrap();
    assert_eq!(rpart.head(), part.head());
    let chain = chain_of(&ro, 1);
    assert_eq!(chain.len() as u64, n);
    for (a, (seq, id, hash)) in acks.iter().zip(&chain) {
        assert_eq!((a.seq, a.event_id, a.hash), (*seq, *id, *hash));
    }
    // Readers from any seq read exactly the rest.
    for from in [0, 1, n / 2, n - 1, n] {
        let mut r = rpart.reader(from);
        let mut seqs = Vec::new();
        while let Some(e) = r.next().unwrap() {
            seqs.push(e.seq);
        }
        assert_eq!(seqs, (from..n).collect::<Vec<_>>(), "from {from}");
    }
    // The time index: the first event recorded at or after a time.
    let mid = &acks[n as usize / 2];
    let first_at = acks
        .iter()
        .find(|a| a.recorded_at >= mid.recorded_at)
        .unwrap()
        .seq;
    assert_eq!(rpart.seq_at_time(mid.recorded_at).unwrap(), first_at);
    assert_eq!(rpart.seq_at_time(i64::MAX).unwrap(), n);
    assert_eq!(rpart.seq_at_time(0).unwrap(), 0);
    // A reader follows appends made after it caught up.
    let mut follower = rpart.reader(n);
    assert!(follower.next().unwrap().is_none());
    part.append_blocking(vec![event("t1", 999)]).unwrap();
    let e = follower
        .next_blocking(std::time::Duration::from_secs(10))
        .unwrap()
        .expect("the new event arrives");
    assert_eq!(e.seq, n);
    // Empty partitions read as empty; verify passes.
    assert!(chain_of(&ro, 0).is_empty());
    let report = verify(&open(dir.path(), &cfg, Mode::ReadOnly)).unwrap();
    assert!(report.ok, "{:?}", report.faults);
    assert_eq!(report.events, n + 1);
}

#[test]
fn a_second_writer_of_a_partition_never_supersedes_an_acknowledged_event() {
    let Some(b) = brokers() else { return };
    let cfg = config(&b, "zombie");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), &cfg, Mode::ReadWrite);
    a.create_topic("events", 1).unwrap();
    // B opens the partition now: it believes the chain is empty.
    let b_log = open(db.path(), &cfg, Mode::ReadWrite);
    let ta = a.topic("events").unwrap();
    let tb = b_log.topic("events").unwrap();
    let (pa, pb) = (ta.partition(0).unwrap(), tb.partition(0).unwrap());

    // A appends seq 0 and 1; B, unaware, writes its own seq 0 after them: a fork. B must not
    // acknowledge it, and learns the chain from the broker.
    let first = pa
        .append_blocking(vec![event("t", 0), event("t", 1)])
        .unwrap();
    let refused = pb.append_blocking(vec![event("t", 100)]);
    assert!(
        matches!(refused, Err(LogError::Superseded { seq: 0, .. })),
        "{refused:?}"
    );
    // B decides again against the new state: its next append continues A's chain.
    let b_ok = pb.append_blocking(vec![event("t", 101)]).unwrap();
    assert_eq!(b_ok[0].seq, 2);

    // Now both write concurrently (A is stale again after B's append): every acknowledged
    // event ends up on the chain exactly once, at its seq; refused ones are nowhere on it.
    let mut acked: Vec<Appended> = first.into_iter().chain(b_ok).collect();
    let mut refused_ids = vec![];
    let run = |p: Arc<annals_events::Topic>, base: u64| {
        std::thread::spawn(move || {
            let part = p.partition(0).unwrap();
            let (mut ok, mut lost) = (Vec::new(), Vec::new());
            for i in 0..60u64 {
                let events: Vec<NewEvent> = (0..1 + i % 3)
                    .map(|j| event("t", base + i * 10 + j))
                    .collect();
                let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
                match part.append_blocking(events) {
                    Ok(a) => ok.extend(a),
                    Err(LogError::Superseded { .. }) => lost.extend(ids),
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
            (ok, lost)
        })
    };
    let ha = run(ta.clone(), 10_000);
    let hb = run(tb.clone(), 20_000);
    for h in [ha, hb] {
        let (ok, lost) = h.join().unwrap();
        acked.extend(ok);
        refused_ids.extend(lost);
    }
    assert!(
        !refused_ids.is_empty(),
        "the concurrent writers never collided"
    );

    let ro = open(da.path(), &cfg, Mode::ReadOnly);
    let chain = chain_of(&ro, 0);
    let seqs: Vec<u64> = chain.iter().map(|c| c.0).collect();
    assert_eq!(
        seqs,
        (0..chain.len() as u64).collect::<Vec<_>>(),
        "seq contiguous"
    );
    let on_chain: HashMap<uuid::Uuid, (u64, [u8; 32])> =
        chain.iter().map(|(s, id, h)| (*id, (*s, *h))).collect();
    assert_eq!(on_chain.len(), chain.len(), "no event twice");
    for a in &acked {
        assert_eq!(
            on_chain.get(&a.event_id),
            Some(&(a.seq, a.hash)),
            "acknowledged event {} (seq {}) is on the chain",
            a.event_id,
            a.seq
        );
    }
    // A refused batch may have had a prefix land on the chain (its events are there, the
    // caller was told to decide again); what no reader sees is the fork's other side.
    let report = verify(&ro).unwrap();
    assert!(report.ok, "{:?}", report.faults);
    let p = &report.partitions[0];
    assert!(p.off_chain_count > 0, "the fork is reported");
    assert!(
        p.off_chain
            .iter()
            .all(|r| r.kind == "fork" || r.kind == "copy")
    );
    assert_eq!(p.events, chain.len() as u64);
    // Readers that start in the middle, past off-chain records, read the same chain.
    let rtopic = ro.topic("events").unwrap();
    let mid = chain.len() as u64 / 2;
    let mut r = rtopic.partition(0).unwrap().reader(mid);
    let mut rest = BTreeMap::new();
    while let Some(e) = r.next().unwrap() {
        rest.insert(e.seq, e.event_id);
    }
    let expected: BTreeMap<u64, uuid::Uuid> = chain
        .iter()
        .filter(|c| c.0 >= mid)
        .map(|c| (c.0, c.1))
        .collect();
    assert_eq!(rest, expected);
}
