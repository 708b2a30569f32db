//! Inclusion and consistency proofs generated from the log, in `annals-proof`'s format.

use std::str::FromStr;

use annals_events::{Log, Partition};
use annals_proof::merkle::{self, Hash};
use annals_proof::{Checkpoint, ConsistencyProof, InclusionProof, ProvenEvent, leaf_hash};
use annals_schemas::Registry;
use uuid::Uuid;

use crate::checkpoint::decode_checkpoint;
use crate::{AuditError, checkpoint_stream};

/// Names a checkpoint: `topic/partition/tree_size`, or the id of its checkpoint event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointRef {
    Size {
        topic: String,
        partition: u32,
        tree_size: u64,
    },
    EventId(Uuid),
}

impl FromStr for CheckpointRef {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<CheckpointRef, AuditError> {
        if let Ok(id) = Uuid::parse_str(s) {
            return Ok(CheckpointRef::EventId(id));
        }
        let bad = || {
            AuditError::BadReference(format!(
                "`{s}` is not a checkpoint: use topic/partition/tree_size (e.g. events/3/1200) or the checkpoint event's id"
            ))
        };
        let parts: Vec<&str> = s.split('/').collect();
        let [topic, partition, size] = parts[..] else {
            return Err(bad());
        };
        Ok(CheckpointRef::Size {
            topic: topic.to_owned(),
            partition: partition.parse().map_err(|_| bad())?,
            tree_size: size.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointRef::Size {
                topic,
                partition,
                tree_size,
            } => write!(f, "{topic}/{partition}/{tree_size}"),
            CheckpointRef::EventId(id) => write!(f, "{id}"),
        }
    }
}

/// A checkpoint event found in a partition.
struct Found {
    seq: u64,
    event_id: Uuid,
    checkpoint: Checkpoint,
}

/// A partition read whole: its leaf hashes and its checkpoints.
struct Scan {
    topic: String,
    partition: u32,
    leaves: Vec<Hash>,
    checkpoints: Vec<Found>,
}

fn scan(part: &Partition, registry: &Registry) -> Result<Scan, AuditError> {
    let stream = checkpoint_stream(part.topic(), part.id());
    let mut s = Scan {
        topic: part.topic().to_owned(),
        partition: part.id(),
        leaves: Vec::with_capacity(part.head().next_seq as usize),
        checkpoints: Vec::new(),
    };
    let mut reader = part.reader(0);
    while let Some(env) = reader.next_ref()? {
        s.leaves.push(leaf_hash(env.hash));
        if env.stream == stream
            && let Ok(Some(checkpoint)) = decode_checkpoint(&env, registry)
        {
            s.checkpoints.push(Found {
                seq: env.seq,
                event_id: Uuid::from_bytes(env.event_id),
                checkpoint,
            });
        }
    }
    Ok(s)
}

impl Scan {
    /// Refuses a checkpoint the log does not back: wrong partition, covering events after
    /// itself, or a root other than the leaves'.
    fn check(&self, f: &Found) -> Result<(), AuditError> {
        let c = &f.checkpoint;
        let mismatch = |detail: String| AuditError::Mismatch {
            topic: self.topic.clone(),
            partition: self.partition,
            seq: f.seq,
            detail,
        };
        if c.topic != self.topic || c.partition != self.partition {
            return Err(mismatch(format!("it names {}/{}", c.topic, c.partition)));
        }
        if c.tree_size > f.seq {
            return Err(mismatch(format!(
                "tree size {} covers events after the checkpoint itself",
                c.tree_size
            )));
        }
        if merkle::root(&self.leaves[..c.tree_size as usize]) != c.root_hash {
            return Err(mismatch(format!(
                "its root is not the root of the first {} events",
                c.tree_size
            )));
        }
        Ok(())
    }
}

/// The inclusion proof of event `event_id` in the first checkpoint after it that covers it.
pub fn prove_inclusion(
    log: &Log,
    registry: &Registry,
    event_id: Uuid,
) -> Result<InclusionProof, AuditError> {
    let wanted = *event_id.as_bytes();
    for topic in log.topics() {
        for part in topic.partitions() {
            let mut reader = part.reader(0);
            let mut found = None;
            while let Some(env) = reader.next_ref()? {
                if env.event_id == wanted {
                    let mut bytes = Vec::new();
                    env.encode(&mut bytes);
                    found = Some((env.seq, *env.hash, bytes));
                    break;
                }
            }
            let Some((seq, hash, envelope)) = found else {
                continue;
            };
            let s = scan(part, registry)?;
            let Some(f) = s
                .checkpoints
                .iter()
                .find(|f| f.seq > seq && f.checkpoint.tree_size > seq)
            else {
                return Err(AuditError::NotCheckpointed {
                    event_id: event_id.to_string(),
                    topic: s.topic,
                    partition: s.partition,
                    seq,
                });
            };
            s.check(f)?;
            let c = &f.checkpoint;
            let audit_path = merkle::inclusion_proof(&s.leaves, seq, c.tree_size)
                .expect("the checked checkpoint covers the event");
            return Ok(InclusionProof {
                event: ProvenEvent {
                    event_id: event_id.to_string(),
                    topic: s.topic.clone(),
                    partition: s.partition,
                    seq,
                    hash,
                    envelope,
                },
                leaf_hash: s.leaves[seq as usize],
                leaf_index: seq,
                tree_size: c.tree_size,
                audit_path,
                checkpoint: c.clone(),
            });
        }
    }
    Err(AuditError::NoEvent(event_id.to_string()))
}

/// Resolves `r` in `s` (`None` if it is not there).
fn find<'s>(s: &'s Scan, r: &CheckpointRef) -> Option<&'s Found> {
    match r {
        CheckpointRef::Size {
            topic,
            partition,
            tree_size,
        } => {
            if *topic != s.topic || *partition != s.partition {
                return None;
            }
            s.checkpoints
                .iter()
                .find(|f| f.checkpoint.tree_size == *tree_size)
        }
        CheckpointRef::EventId(id) => s.checkpoints.iter().find(|f| f.event_id == *id),
    }
}

/// The partition `r` is in, read whole.
fn locate(log: &Log, registry: &Registry, r: &CheckpointRef) -> Result<Scan, AuditError> {
    match r {
        CheckpointRef::Size {
            topic, partition, ..
        } => {
            let t = log.topic(topic)?;
            let s = scan(t.partition(*partition)?, registry)?;
            match find(&s, r) {
                Some(_) => Ok(s),
                None => Err(AuditError::NoCheckpoint(r.to_string())),
            }
        }
        CheckpointRef::EventId(_) => {
            for t in log.topics() {
                for p in t.partitions() {
                    let s = scan(p, registry)?;
                    if find(&s, r).is_some() {
                        return Ok(s);
                    }
                }
            }
            Err(AuditError::NoCheckpoint(r.to_string()))
        }
    }
}

/// A signed checkpoint found in the log: its partition and tree size (it covers the events of
/// that partition with seq < tree size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBound {
    pub topic: String,
    pub partition: u32,
    pub tree_size: u64,
    /// Seq of the checkpoint event itself.
    pub seq: u64,
}

/// Finds checkpoint `r` in the log (for a replay bounded by it).
pub fn checkpoint_bound(
    log: &Log,
    registry: &Registry,
    r: &CheckpointRef,
) -> Result<CheckpointBound, AuditError> {
    let s = locate(log, registry, r)?;
    let f = find(&s, r).expect("located");
    Ok(CheckpointBound {
        topic: s.topic.clone(),
        partition: s.partition,
        tree_size: f.checkpoint.tree_size,
        seq: f.seq,
    })
}

/// The proof that checkpoint `new` extends checkpoint `old` (both of one partition).
pub fn prove_consistency(
    log: &Log,
    registry: &Registry,
    old: &CheckpointRef,
    new: &CheckpointRef,
) -> Result<ConsistencyProof, AuditError> {
    let s = locate(log, registry, old)?;
    let o = find(&s, old).expect("located");
    let n = find(&s, new).ok_or_else(|| match new {
        CheckpointRef::Size {
            topic, partition, ..
        } if *topic == s.topic && *partition == s.partition => {
            AuditError::NoCheckpoint(new.to_string())
        }
        _ => AuditError::BadReference(format!(
            "no checkpoint {new} in {}/{}, the partition of {old}: a consistency proof relates two checkpoints of one partition",
            s.topic, s.partition
        ))
    })?;
    if o.checkpoint.tree_size > n.checkpoint.tree_size {
        return Err(AuditError::BadReference(format!(
            "{old} (tree size {}) is newer than {new} (tree size {}): give the older checkpoint first",
            o.checkpoint.tree_size, n.checkpoint.tree_size
        )));
    }
    s.check(o)?;
    s.check(n)?;
    let path = merkle::consistency_proof(&s.leaves, o.checkpoint.tree_size, n.checkpoint.tree_size)
        .expect("checked checkpoints are within the partition");
    Ok(ConsistencyProof {
        old: o.checkpoint.clone(),
        new: n.checkpoint.clone(),
        path,
    })
}

/// The checkpoints of a partition, oldest first, with their seq and event id.
pub fn list_checkpoints(
    log: &Log,
    registry: &Registry,
    topic: &str,
    partition: u32,
) -> Result<Vec<(u64, Uuid, Checkpoint)>, AuditError> {
    let t = log.topic(topic)?;
    let s = scan(t.partition(partition)?, registry)?;
    Ok(s.checkpoints
        .into_iter()
        .map(|f| (f.seq, f.event_id, f.checkpoint))
        .collect())
}
