//! The checkpoint checks of `annals verify`: every checkpoint event's signature, and its root
//! against the root recomputed from the partition's events.

use annals_events::{Log, Partition};
use annals_proof::{Frontier, PublicKey, leaf_hash};
use annals_schemas::Registry;
use serde::Serialize;

use crate::checkpoint::decode_checkpoint;
use crate::{AuditError, CHECKPOINT_EVENT_TYPE};

/// A checkpoint event that does not hold.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckpointFault {
    pub topic: String,
    pub partition: u32,
    /// Seq of the checkpoint event.
    pub seq: u64,
    /// Stable code: `checkpoint_payload` (unreadable, or names another partition),
    /// `checkpoint_size` (covers events after itself), `checkpoint_root` (not the root of the
    /// events), `checkpoint_signature` (not signed by the key).
    pub kind: &'static str,
    pub detail: String,
}

impl std::fmt::Display for CheckpointFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {} partition {} seq {}: {} ({})",
            self.topic, self.partition, self.seq, self.detail, self.kind
        )
    }
}

/// What the checkpoint checks found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CheckpointReport {
    /// Checkpoint events checked.
    pub checkpoints: u64,
    /// Whether signatures were checked (no key in the data dir and none given: roots only).
    pub signatures_checked: bool,
    /// Hex public key the signatures were checked with.
    pub public_key: Option<String>,
    pub faults: Vec<CheckpointFault>,
    /// Partitions whose events could not all be read (the chain check reports why); their
    /// checkpoints after that point were not checked.
    pub unreadable: Vec<String>,
}

/// Checks every checkpoint of every topic of `log` (best opened read-only).
/// `key`: the public key to check signatures with; `None` checks roots only.
pub fn verify_checkpoints(
    log: &Log,
    key: Option<&PublicKey>,
    registry: &Registry,
) -> Result<CheckpointReport, AuditError> {
    let mut report = CheckpointReport {
        signatures_checked: key.is_some(),
        public_key: key.map(PublicKey::to_hex),
        ..CheckpointReport::default()
    };
    for topic in log.topics() {
        for part in topic.partitions() {
            if let Err(e) = check_partition(part, key, registry, &mut report) {
                report
                    .unreadable
                    .push(format!("{}/{}: {e}", part.topic(), part.id()));
            }
        }
    }
    Ok(report)
}

fn check_partition(
    part: &Partition,
    key: Option<&PublicKey>,
    registry: &Registry,
    report: &mut CheckpointReport,
) -> Result<(), AuditError> {
    let mut frontier = Frontier::new();
    let mut reader = part.reader(0);
    while let Some(env) = reader.next_ref()? {
        if env.event_type == CHECKPOINT_EVENT_TYPE {
            report.checkpoints += 1;
            let fault = |kind, detail: String| CheckpointFault {
                topic: part.topic().to_owned(),
                partition: part.id(),
                seq: env.seq,
                kind,
                detail,
            };
            let found = match decode_checkpoint(&env, registry) {
                Err(e) => Some(fault(
                    "checkpoint_payload",
                    format!("unreadable checkpoint: {e}"),
                )),
                Ok(None) => None,
                Ok(Some(c)) => {
                    if c.topic != part.topic() || c.partition != part.id() {
                        Some(fault(
                            "checkpoint_payload",
                            format!("the checkpoint names {}/{}", c.topic, c.partition),
                        ))
                    } else if c.tree_size > env.seq {
                        Some(fault(
                            "checkpoint_size",
                            format!(
                                "tree size {} covers events after the checkpoint itself",
                                c.tree_size
                            ),
                        ))
                    } else if root_at(part, &frontier, c.tree_size)? != c.root_hash {
                        Some(fault(
                            "checkpoint_root",
                            format!(
                                "the root is not the Merkle root of the first {} events",
                                c.tree_size
                            ),
                        ))
                    } else if let Some(Err(e)) = key.map(|k| c.verify_signature(k)) {
                        Some(fault("checkpoint_signature", e.detail))
                    } else {
                        None
                    }
                }
            };
            report.faults.extend(found);
        }
        frontier.push(leaf_hash(env.hash));
    }
    Ok(())
}

/// The root of the first `size` leaves (`size <=` the frontier's): at once when a checkpoint
/// covers everything before it (the usual case), else by reading the partition again.
fn root_at(part: &Partition, frontier: &Frontier, size: u64) -> Result<[u8; 32], AuditError> {
    if size == frontier.size() {
        return Ok(frontier.root());
    }
    let mut f = Frontier::new();
    let mut reader = part.reader(0);
    while f.size() < size {
        match reader.next_ref()? {
            Some(env) => f.push(leaf_hash(env.hash)),
            None => break,
        }
    }
    Ok(f.root())
}
