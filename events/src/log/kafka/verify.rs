//! `annals verify` on Kafka: reads every record of every partition from offset 0 and applies
//! the chain rule with every hash recomputed. Records off the chain are reported: copies
//! (a redelivered event) and forks (another writer's records). A record that links to an
//! event the partition does not hold means records were lost: that, like an altered record,
//! is a fault.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::{Chain, Verdict};
use crate::chain::Hash;
use crate::envelope::ChainFields;
use crate::log::{Log, LogError};
use crate::verify::{Fault, Observer, PartitionReport, VerifyReport};

/// A record the chain does not include.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OffChain {
    pub offset: i64,
    pub seq: u64,
    /// `copy` (the same event again) or `fork` (another writer's event).
    pub kind: &'static str,
}

/// How many off-chain records a partition report lists (all are counted).
const LISTED: usize = 100;
/// How many recent chain hashes are kept to tell copies and fork roots from lost records.
const WINDOW: u64 = 1 << 16;

/// Verifies every partition of every topic of a Kafka-backed log.
pub fn verify(log: &Log) -> Result<VerifyReport, LogError> {
    verify_observed(log, |_, _| ()).map(|(report, _)| report)
}

/// [`verify`], showing each partition's chain events to an observer made for it by
/// `observer_for(topic, partition)`, so more can be checked in the same read of the broker.
/// The observers come back in the order of the report's partitions.
pub fn verify_observed<O: Observer>(
    log: &Log,
    observer_for: impl Fn(&str, u32) -> O,
) -> Result<(VerifyReport, Vec<O>), LogError> {
    let started = Instant::now();
    let mut partitions = Vec::new();
    let mut observers = Vec::new();
    let topics = log.topics();
    for topic in &topics {
        for part in topic.partitions() {
            let crate::log::partition::Source::Kafka(shared) = part.source() else {
                continue;
            };
            let mut observer = observer_for(part.topic(), part.id());
            partitions.push(verify_partition(shared, &mut observer)?);
            observer.end();
            observers.push(observer);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let events = partitions.iter().map(|p| p.events).sum();
    let bytes: u64 = partitions.iter().map(|p| p.bytes).sum();
    let faults: Vec<Fault> = partitions.iter().filter_map(|p| p.fault.clone()).collect();
    let report = VerifyReport {
        ok: faults.is_empty(),
        topics: topics.len(),
        partitions,
        events,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        threads: 1,
        faults,
    };
    Ok((report, observers))
}

fn verify_partition(
    p: &super::partition::Shared,
    observer: &mut impl Observer,
) -> Result<PartitionReport, LogError> {
    let (low, high) = p.client.watermarks(&p.kafka_topic, p.id)?;
    let place = PathBuf::from(format!("kafka:{}/{}", p.kafka_topic, p.id));
    let mut report = PartitionReport {
        topic: p.topic.clone(),
        partition: p.id,
        events: 0,
        bytes: 0,
        segments: 0,
        head_hash: hex::encode(crate::chain::GENESIS),
        writer_active: false,
        fault: None,
        off_chain: Vec::new(),
        off_chain_count: 0,
    };
    let fault = |seq: u64, offset: i64, kind: &'static str, detail: String| Fault {
        topic: p.topic.clone(),
        partition: p.id,
        seq,
        segment: place.clone(),
        position: offset.max(0) as u64,
        kind,
        detail,
    };
    if low > 0 {
        report.fault = Some(fault(
            0,
            low,
            "retention",
            format!(
                "Kafka no longer holds offsets below {low}: the topic must keep every record (retention.ms=-1)"
            ),
        ));
        return Ok(report);
    }
    let mut chain = Chain::genesis();
    // seq % WINDOW → (seq, hash) of recent chain events; hashes of off-chain records.
    let mut recent: Vec<(u64, Hash)> = vec![(u64::MAX, [0; 32]); WINDOW as usize];
    let mut off_hashes: HashSet<Hash> = HashSet::new();
    let result = p.client.read_range(&p.kafka_topic, p.id, 0, high, |offset, v| {
        if report.fault.is_some() {
            return Ok(());
        }
        let expected = chain.next_seq;
        match chain.judge(p.id, v) {
            Err((kind, detail)) => {
                report.fault = Some(fault(expected, offset, kind, format!("offset {offset}: {detail}")));
            }
            Ok((Verdict::Next, f)) => {
                observer.event(f.seq, f.hash, &v[..v.len() - 32]);
                recent[(f.seq % WINDOW) as usize] = (f.seq, *f.hash);
                report.events += 1;
                report.bytes += v.len() as u64;
            }
            Ok((Verdict::Off, f)) => {
                let ChainFields { seq, prev_hash, hash, .. } = f;
                let on_chain = |s: u64| {
                    let (rs, rh) = recent[(s % WINDOW) as usize];
                    (rs == s).then_some(rh)
                };
                let kind = if seq < expected && on_chain(seq) == Some(*hash) {
                    "copy"
                } else if (seq == 0 && *prev_hash == crate::chain::GENESIS)
                    || (seq > 0 && on_chain(seq - 1) == Some(*prev_hash))
                    || off_hashes.contains(prev_hash)
                {
                    "fork"
                } else {
                    report.fault = Some(fault(
                        expected,
                        offset,
                        "seq",
                        format!(
                            "offset {offset}: seq {seq} links to an event this partition does not hold (the chain reaches seq {}): records were lost",
                            expected.saturating_sub(1)
                        ),
                    ));
                    return Ok(());
                };
                off_hashes.insert(*hash);
                report.off_chain_count += 1;
                if report.off_chain.len() < LISTED {
                    report.off_chain.push(OffChain { offset, seq, kind });
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        report.fault = Some(fault(chain.next_seq, -1, "read", e.to_string()));
    }
    report.head_hash = hex::encode(chain.last_hash);
    Ok(report)
}
