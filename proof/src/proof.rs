//! The proof documents (JSON) and their verification.
//!
//! Inclusion proof — "this event is leaf `leaf_index` of the signed tree":
//!
//! ```json
//! { "event": { "event_id": "…", "topic": "events", "partition": 3, "seq": 41,
//!              "hash": "<64 hex>", "envelope_hex": "<canonical envelope bytes>" },
//!   "leaf_hash": "<64 hex>", "leaf_index": 41, "tree_size": 120,
//!   "audit_path": ["<64 hex>", …],
//!   "checkpoint": { "log_id": "…", "topic": "events", "partition": 3, "tree_size": 120,
//!                   "root_hash": "<64 hex>", "timestamp": 1700000000000000,
//!                   "signature": "<128 hex>" } }
//! ```
//!
//! Consistency proof — "the newer signed tree extends the older one":
//!
//! ```json
//! { "consistency": { "old": { checkpoint }, "new": { checkpoint }, "path": ["<64 hex>", …] } }
//! ```
//!
//! Every value in a document is checked against something a hash or the signature covers, so
//! a document that verifies cannot differ from the one the log produced in any byte that
//! matters, and every other change is refused as malformed.

use serde_json::{Value, json};

use crate::VerifyError;
use crate::checkpoint::{Checkpoint, PublicKey};
use crate::event::{EventFields, recompute};
use crate::json::Fields;
use crate::merkle::{self, Hash, ProofError};

/// The event an inclusion proof is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEvent {
    pub event_id: String,
    pub topic: String,
    pub partition: u32,
    pub seq: u64,
    pub hash: Hash,
    /// The canonical envelope bytes, hash included.
    pub envelope: Vec<u8>,
}

/// An event's inclusion in a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub event: ProvenEvent,
    pub leaf_hash: Hash,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub audit_path: Vec<Hash>,
    pub checkpoint: Checkpoint,
}

/// Two checkpoints of one partition and the proof that the newer extends the older.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old: Checkpoint,
    pub new: Checkpoint,
    pub path: Vec<Hash>,
}

/// Either kind of proof document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    Inclusion(InclusionProof),
    Consistency(ConsistencyProof),
}

/// What a verified proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Inclusion {
        event: Box<EventFields>,
        topic: String,
        checkpoint: Checkpoint,
    },
    Consistency {
        old: Checkpoint,
        new: Checkpoint,
    },
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verified::Inclusion {
                event,
                topic,
                checkpoint,
            } => write!(
                f,
                "event {} ({} of {} in {}) is seq {} of {topic}/{}, included in the checkpoint of tree size {} signed at {} µs by log {}",
                event.event_id,
                event.event_type,
                event.tenant,
                event.stream,
                event.seq,
                event.partition,
                checkpoint.tree_size,
                checkpoint.timestamp,
                checkpoint.log_id
            ),
            Verified::Consistency { old, new } => write!(
                f,
                "the checkpoint of {}/{} at tree size {} extends the one at tree size {} (log {})",
                new.topic, new.partition, new.tree_size, old.tree_size, new.log_id
            ),
        }
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn hexes(list: &[Hash]) -> Vec<String> {
    list.iter().map(|h| hex(h)).collect()
}

impl InclusionProof {
    pub fn to_json(&self) -> Value {
        json!({
            "event": {
                "event_id": self.event.event_id,
                "topic": self.event.topic,
                "partition": self.event.partition,
                "seq": self.event.seq,
                "hash": hex(&self.event.hash),
                "envelope_hex": hex(&self.event.envelope),
            },
            "leaf_hash": hex(&self.leaf_hash),
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "audit_path": hexes(&self.audit_path),
            "checkpoint": self.checkpoint.to_json(),
        })
    }

    pub fn from_json(v: &Value) -> Result<InclusionProof, VerifyError> {
        let mut f = Fields::new(v, "")?;
        let mut e = Fields::new(f.value("event")?, "event")?;
        let event = ProvenEvent {
            event_id: e.string("event_id")?,
            topic: e.string("topic")?,
            partition: e.u32("partition")?,
            seq: e.u64("seq")?,
            hash: e.hash("hash")?,
            envelope: e.bytes("envelope_hex")?,
        };
        e.finish()?;
        let p = InclusionProof {
            event,
            leaf_hash: f.hash("leaf_hash")?,
            leaf_index: f.u64("leaf_index")?,
            tree_size: f.u64("tree_size")?,
            audit_path: f.hashes("audit_path")?,
            checkpoint: Checkpoint::from_json(f.value("checkpoint")?, "checkpoint")?,
        };
        f.finish()?;
        Ok(p)
    }

    /// Verifies the whole chain of evidence: envelope → event hash → leaf → audit path →
    /// checkpoint root → signature. The error names the first link that does not hold.
    pub fn verify(&self, key: &PublicKey) -> Result<Verified, VerifyError> {
        let e = &self.event;
        let c = &self.checkpoint;
        let (fields, recomputed) = recompute(&e.envelope)
            .map_err(|d| VerifyError::new("envelope", format!("not a canonical envelope: {d}")))?;
        if recomputed != fields.hash {
            return Err(VerifyError::new(
                "event hash",
                "the envelope's bytes do not hash to the hash it carries (the event was altered)",
            ));
        }
        if e.hash != recomputed {
            return Err(VerifyError::new(
                "event hash",
                "`event.hash` is not the hash of the envelope",
            ));
        }
        if e.event_id != fields.event_id {
            return Err(VerifyError::new(
                "event",
                format!(
                    "`event.event_id` {} is not the envelope's {}",
                    e.event_id, fields.event_id
                ),
            ));
        }
        if e.partition != fields.partition || e.seq != fields.seq {
            return Err(VerifyError::new(
                "event",
                format!(
                    "`event` says partition {} seq {}, the envelope partition {} seq {}",
                    e.partition, e.seq, fields.partition, fields.seq
                ),
            ));
        }
        if e.topic != c.topic || e.partition != c.partition {
            return Err(VerifyError::new(
                "checkpoint",
                format!(
                    "the event is in {}/{}, the checkpoint is of {}/{}",
                    e.topic, e.partition, c.topic, c.partition
                ),
            ));
        }
        if self.leaf_hash != merkle::leaf_hash(&e.hash) {
            return Err(VerifyError::new(
                "leaf hash",
                "`leaf_hash` is not SHA-256(0x00 ‖ event hash)",
            ));
        }
        if self.leaf_index != e.seq {
            return Err(VerifyError::new(
                "leaf index",
                format!(
                    "`leaf_index` {} is not the event's seq {}",
                    self.leaf_index, e.seq
                ),
            ));
        }
        if self.tree_size != c.tree_size {
            return Err(VerifyError::new(
                "tree size",
                format!(
                    "`tree_size` {} is not the checkpoint's {}",
                    self.tree_size, c.tree_size
                ),
            ));
        }
        merkle::verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &self.leaf_hash,
            &self.audit_path,
            &c.root_hash,
        )
        .map_err(|err| match err {
            ProofError::BadArguments(d) => VerifyError::new("leaf index", d),
            other => VerifyError::new(
                "audit path",
                format!("{other}: the event is not proven to be in the checkpoint's tree"),
            ),
        })?;
        c.verify_signature(key)?;
        Ok(Verified::Inclusion {
            event: Box::new(fields),
            topic: e.topic.clone(),
            checkpoint: c.clone(),
        })
    }
}

impl ConsistencyProof {
    pub fn to_json(&self) -> Value {
        json!({
            "consistency": {
                "old": self.old.to_json(),
                "new": self.new.to_json(),
                "path": hexes(&self.path),
            }
        })
    }

    pub fn from_json(v: &Value) -> Result<ConsistencyProof, VerifyError> {
        let mut top = Fields::new(v, "")?;
        let mut f = Fields::new(top.value("consistency")?, "consistency")?;
        let p = ConsistencyProof {
            old: Checkpoint::from_json(f.value("old")?, "consistency.old")?,
            new: Checkpoint::from_json(f.value("new")?, "consistency.new")?,
            path: f.hashes("path")?,
        };
        f.finish()?;
        top.finish()?;
        Ok(p)
    }

    /// Verifies both signatures, that both checkpoints are of the same partition of the same
    /// log, and the consistency path between their roots.
    pub fn verify(&self, key: &PublicKey) -> Result<Verified, VerifyError> {
        let (o, n) = (&self.old, &self.new);
        if o.log_id != n.log_id || o.topic != n.topic || o.partition != n.partition {
            return Err(VerifyError::new(
                "checkpoint",
                format!(
                    "the checkpoints are of different partitions or logs ({} {}/{} and {} {}/{})",
                    o.log_id, o.topic, o.partition, n.log_id, n.topic, n.partition
                ),
            ));
        }
        if o.tree_size > n.tree_size {
            return Err(VerifyError::new(
                "tree size",
                format!(
                    "the old checkpoint ({}) is larger than the new one ({})",
                    o.tree_size, n.tree_size
                ),
            ));
        }
        o.verify_signature(key)
            .map_err(|e| VerifyError::new(e.what, format!("old: {}", e.detail)))?;
        n.verify_signature(key)
            .map_err(|e| VerifyError::new(e.what, format!("new: {}", e.detail)))?;
        merkle::verify_consistency(
            o.tree_size,
            n.tree_size,
            &o.root_hash,
            &n.root_hash,
            &self.path,
        )
        .map_err(|err| {
            VerifyError::new(
                "consistency path",
                format!(
                    "{err}: the tree of size {} is not proven to extend the tree of size {}",
                    n.tree_size, o.tree_size
                ),
            )
        })?;
        Ok(Verified::Consistency {
            old: o.clone(),
            new: n.clone(),
        })
    }
}

impl Proof {
    /// Reads a proof document (either kind).
    pub fn parse(text: &str) -> Result<Proof, VerifyError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| VerifyError::new("json", format!("not a JSON document: {e}")))?;
        if v.get("consistency").is_some() {
            ConsistencyProof::from_json(&v).map(Proof::Consistency)
        } else {
            InclusionProof::from_json(&v).map(Proof::Inclusion)
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Proof::Inclusion(p) => p.to_json(),
            Proof::Consistency(p) => p.to_json(),
        }
    }

    pub fn verify(&self, key: &PublicKey) -> Result<Verified, VerifyError> {
        match self {
            Proof::Inclusion(p) => p.verify(key),
            Proof::Consistency(p) => p.verify(key),
        }
    }
}

/// Reads and verifies a proof document: what `annals verify-proof FILE --key KEY` does.
pub fn verify_document(text: &str, key: &PublicKey) -> Result<Verified, VerifyError> {
    Proof::parse(text)?.verify(key)
}
