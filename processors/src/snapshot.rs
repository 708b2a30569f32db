//! Snapshots of a partition's aggregates, so that a new owner of a partition restores them
//! from the latest snapshot and the events after it instead of the whole partition.
//!
//! A snapshot is the JSON of the aggregates as of a seq, with the hash of the event before that
//! seq. It is used only if that hash is the chain's (the partition's event `seq - 1`): a
//! snapshot from another log, or of events the chain does not hold, is ignored, and the owner
//! replays from seq 0. Snapshots are an optimisation: losing them loses nothing.
//!
//! A store whose records are bounded (a Kafka record is at most 4 MiB) keeps a snapshot as
//! [`chunks`]: consecutive records sharing a random id, each with its index and the count; the
//! last record of the store names how many to read back, and [`assemble`] refuses a set that is
//! not exactly one snapshot's chunks in order (two writers interleaved: the snapshot is not used).

use annals_events::Partition;
use serde::{Deserialize, Serialize};

use crate::state::PartitionState;

/// Where a partition owner keeps its snapshots (Kafka: the side topic `_snapshots`).
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of `partition`, as [`encode`] made it.
    fn load(&self, partition: u32) -> Result<Option<Vec<u8>>, String>;
    fn save(&self, partition: u32, snapshot: &[u8]) -> Result<(), String>;
}

#[derive(Serialize)]
struct Doc<'a> {
    seq: u64,
    hash: String,
    state: &'a PartitionState,
}

#[derive(Deserialize)]
struct OwnedDoc {
    seq: u64,
    hash: String,
    state: PartitionState,
}

/// The snapshot of `state`, the aggregates as of event `seq - 1` whose hash is `hash`.
pub fn encode(state: &PartitionState, seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    serde_json::to_vec(&Doc {
        seq,
        hash: hex_encode(hash),
        state,
    })
    .expect("the aggregates serialise")
}

/// The aggregates and the seq to continue from, if `bytes` is a snapshot of this partition's
/// chain; `None` (and why) otherwise.
pub fn restore(bytes: &[u8], partition: &Partition) -> Result<(PartitionState, u64), String> {
    let doc: OwnedDoc =
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable snapshot: {e}"))?;
    if doc.seq == 0 || doc.seq > partition.head().next_seq {
        return Err(format!(
            "the snapshot is at seq {}, the partition holds {}",
            doc.seq,
            partition.head().next_seq
        ));
    }
    let before = partition
        .reader(doc.seq - 1)
        .next()
        .map_err(|e| e.to_string())?
        .ok_or("the event before the snapshot is missing")?;
    if hex_encode(&before.hash) != doc.hash {
        return Err(format!(
            "the snapshot's hash at seq {} is not the chain's",
            doc.seq - 1
        ));
    }
    Ok((doc.state, doc.seq))
}

/// Bytes of one chunk record at most (well under a Kafka record's 4 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;

const CHUNK_MAGIC: &[u8; 4] = b"ASC1";
const CHUNK_HEADER: usize = 4 + 16 + 4 + 4;

/// A snapshot cut into records of at most [`CHUNK_BYTES`] of data: `ASC1`, the snapshot's `id`,
/// the chunk's index and the chunk count (both big-endian u32), then the data.
pub fn chunks(snapshot: &[u8], id: [u8; 16]) -> Vec<Vec<u8>> {
    let parts: Vec<&[u8]> = if snapshot.is_empty() {
        vec![&[][..]]
    } else {
        snapshot.chunks(CHUNK_BYTES).collect()
    };
    let count = parts.len() as u32;
    parts
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut r = Vec::with_capacity(CHUNK_HEADER + data.len());
            r.extend_from_slice(CHUNK_MAGIC);
            r.extend_from_slice(&id);
            r.extend_from_slice(&(i as u32).to_be_bytes());
            r.extend_from_slice(&count.to_be_bytes());
            r.extend_from_slice(data);
            r
        })
        .collect()
}

/// `(id, index, count)` of a chunk record.
fn chunk_header(record: &[u8]) -> Option<([u8; 16], u32, u32)> {
    if record.len() < CHUNK_HEADER || &record[..4] != CHUNK_MAGIC {
        return None;
    }
    let id = record[4..20].try_into().ok()?;
    let index = u32::from_be_bytes(record[20..24].try_into().ok()?);
    let count = u32::from_be_bytes(record[24..28].try_into().ok()?);
    Some((id, index, count))
}

/// How many records, ending with `last`, hold the latest snapshot; `None` if `last` is not
/// the final chunk of one.
pub fn chunk_count(last: &[u8]) -> Option<u32> {
    chunk_header(last).and_then(|(_, index, count)| (index + 1 == count).then_some(count))
}

/// The snapshot `records` (in store order) hold, if they are exactly the chunks of one.
pub fn assemble(records: &[&[u8]]) -> Result<Vec<u8>, String> {
    let Some((id, _, count)) = records.first().and_then(|r| chunk_header(r)) else {
        return Err("not a snapshot chunk".into());
    };
    if records.len() != count as usize {
        return Err(format!(
            "{} snapshot chunks where {count} were written",
            records.len()
        ));
    }
    let mut out = Vec::with_capacity(records.iter().map(|r| r.len()).sum());
    for (i, r) in records.iter().enumerate() {
        match chunk_header(r) {
            Some((rid, index, n)) if rid == id && index as usize == i && n == count => {
                out.extend_from_slice(&r[CHUNK_HEADER..]);
            }
            _ => return Err("the snapshot's chunks are interleaved with another's".into()),
        }
    }
    Ok(out)
}

fn hex_encode(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_through_chunks_and_a_mixed_set_is_refused() {
        let big: Vec<u8> = (0..(CHUNK_BYTES * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        for snapshot in [big.clone(), b"small".to_vec(), Vec::new()] {
            let records = chunks(&snapshot, [7; 16]);
            assert!(
                records
                    .iter()
                    .all(|r| r.len() <= CHUNK_HEADER + CHUNK_BYTES)
            );
            assert_eq!(
                chunk_count(records.last().unwrap()),
                Some(records.len() as u32)
            );
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            assert_eq!(assemble(&refs).unwrap(), snapshot);
        }
        let a = chunks(&big, [1; 16]);
        let b = chunks(&big, [2; 16]);
        assert_eq!(a.len(), 3);
        // Another writer's chunk in between, a chunk missing, a first chunk that is not one.
        let mixed: Vec<&[u8]> = vec![&a[0], &b[1], &a[2]];
        assert!(assemble(&mixed).is_err());
        let short: Vec<&[u8]> = vec![&a[1], &a[2]];
        assert!(assemble(&short).is_err());
        assert_eq!(chunk_count(&a[0]), None);
        assert!(assemble(&[b"{\"seq\": 1}".as_slice()]).is_err());
    }
}
