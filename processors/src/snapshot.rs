//! Snapshots of a partition's aggregates, so that a new owner of a partition restores them
//! from the latest snapshot and the events after it instead of the whole partition.
//!
//! A snapshot is the JSON of the aggregates as of a seq, with the hash of the event before that
//! seq. It is used only if that hash is the chain's (the partition's event `seq - 1`): a
//! snapshot from another log, or of events the chain does not hold, is ignored, and the owner
//! replays from seq 0. Snapshots are an optimisation: losing them loses nothing.

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

fn hex_encode(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
