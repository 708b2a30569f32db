//! Making signed checkpoints and appending them to the partition they cover.

use std::collections::HashMap;

use annals_events::{EnvelopeRef, Log, NewEvent};
use annals_proof::{Checkpoint, Frontier, checkpoint_message, leaf_hash};
use annals_schemas::Registry;
use serde_json::json;
use uuid::Uuid;

use crate::key::CheckpointKey;
use crate::{AUDIT_ACTOR, AUDIT_TENANT, AuditError, CHECKPOINT_EVENT_TYPE, checkpoint_stream};

/// A checkpoint that was signed and appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCheckpoint {
    pub checkpoint: Checkpoint,
    pub event_id: Uuid,
    /// The seq the checkpoint event got (it is leaf `seq` of later trees).
    pub seq: u64,
}

/// Reads the checkpoint a `audit.CheckpointSigned` event carries (`None` for other events).
pub fn decode_checkpoint(
    env: &EnvelopeRef<'_>,
    registry: &Registry,
) -> Result<Option<Checkpoint>, String> {
    if env.event_type != CHECKPOINT_EVENT_TYPE {
        return Ok(None);
    }
    let v = registry
        .decode_json(env.schema_id, env.payload)
        .map_err(|e| e.to_string())?;
    let s = |name: &str| {
        v[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("payload field {name} is missing"))
    };
    let hexes = |name: &str, len: usize| -> Result<Vec<u8>, String> {
        hex::decode(s(name)?)
            .ok()
            .filter(|b| b.len() == len)
            .ok_or_else(|| format!("payload field {name} is not {len} bytes of hex"))
    };
    let int = |name: &str| {
        v[name]
            .as_i64()
            .ok_or_else(|| format!("payload field {name} is missing"))
    };
    Ok(Some(Checkpoint {
        log_id: s("log_id")?,
        topic: s("topic")?,
        partition: u32::try_from(int("partition")?).map_err(|_| "negative partition")?,
        tree_size: u64::try_from(int("tree_size")?).map_err(|_| "negative tree_size")?,
        root_hash: hexes("root_hash", 32)?.try_into().expect("32 bytes"),
        timestamp: int("timestamp")?,
        signature: hexes("signature", 64)?.try_into().expect("64 bytes"),
    }))
}

/// What a checkpointer remembers of one partition between checkpoints.
#[derive(Default)]
struct Progress {
    frontier: Frontier,
    /// Checkpoint events seen in the partition's checkpoint stream (its version).
    checkpoints: u64,
    /// The last event read was a checkpoint covering every event before it.
    up_to_date: bool,
}

/// Makes checkpoints, remembering each partition's tree between calls so that a checkpoint
/// every N events or T seconds reads only the events since the last one.
pub struct Checkpointer<'a> {
    key: &'a CheckpointKey,
    registry: &'a Registry,
    log_id: String,
    progress: HashMap<(String, u32), Progress>,
}

impl<'a> Checkpointer<'a> {
    pub fn new(key: &'a CheckpointKey, registry: &'a Registry) -> Checkpointer<'a> {
        Checkpointer {
            key,
            registry,
            log_id: key.log_id(),
            progress: HashMap::new(),
        }
    }

    /// Signs the root over every event of the partition so far and appends the checkpoint to
    /// it. `None` if there is nothing new to attest: the partition is empty, or its last event
    /// is a checkpoint of everything before it. The log must be open for writing (by this
    /// process: the engine's log when one runs).
    pub fn checkpoint(
        &mut self,
        log: &Log,
        topic: &str,
        partition: u32,
    ) -> Result<Option<MadeCheckpoint>, AuditError> {
        let t = log.topic(topic)?;
        let part = t.partition(partition)?;
        let stream = checkpoint_stream(topic, partition);
        let progress = self
            .progress
            .entry((topic.to_owned(), partition))
            .or_default();
        let mut reader = part.reader(progress.frontier.size());
        while let Some(env) = reader.next_ref()? {
            progress.frontier.push(leaf_hash(env.hash));
            progress.up_to_date = false;
            if env.event_type == CHECKPOINT_EVENT_TYPE && env.stream == stream {
                progress.checkpoints = progress.checkpoints.max(env.stream_version);
                if let Ok(Some(c)) = decode_checkpoint(&env, self.registry) {
                    progress.up_to_date = c.tree_size == env.seq;
                }
            }
        }
        let tree_size = progress.frontier.size();
        if tree_size == 0 || progress.up_to_date {
            return Ok(None);
        }
        let root_hash = progress.frontier.root();
        let timestamp = annals_events::time::now_micros();
        let message = checkpoint_message(
            &self.log_id,
            topic,
            partition,
            tree_size,
            &root_hash,
            timestamp,
        );
        let checkpoint = Checkpoint {
            log_id: self.log_id.clone(),
            topic: topic.to_owned(),
            partition,
            tree_size,
            root_hash,
            timestamp,
            signature: self.key.sign(&message),
        };
        let payload = json!({
            "log_id": checkpoint.log_id,
            "topic": topic,
            "partition": partition,
            "tree_size": tree_size,
            "root_hash": hex::encode(root_hash),
            "timestamp": timestamp,
            "signature": hex::encode(checkpoint.signature),
            "public_key": self.key.public_key().to_hex(),
        });
        let (schema_id, payload) = self.registry.encode_json(CHECKPOINT_EVENT_TYPE, &payload)?;
        let event_id = Uuid::now_v7();
        let appended = part.append_blocking(vec![NewEvent {
            event_id,
            tenant: AUDIT_TENANT.into(),
            stream: stream.into(),
            stream_version: progress.checkpoints + 1,
            event_type: CHECKPOINT_EVENT_TYPE.into(),
            schema_id,
            occurred_at: timestamp,
            actor: AUDIT_ACTOR.into(),
            causation_id: None,
            correlation_id: None,
            payload,
        }])?;
        let seq = appended.first().map_or(tree_size, |a| a.seq);
        Ok(Some(MadeCheckpoint {
            checkpoint,
            event_id,
            seq,
        }))
    }

    /// Checkpoints every partition of `topic` (see [`Self::checkpoint`]).
    pub fn checkpoint_topic(
        &mut self,
        log: &Log,
        topic: &str,
    ) -> Result<Vec<MadeCheckpoint>, AuditError> {
        let n = log.topic(topic)?.partitions().len() as u32;
        let mut made = Vec::new();
        for p in 0..n {
            made.extend(self.checkpoint(log, topic, p)?);
        }
        Ok(made)
    }
}

/// Makes one checkpoint of a partition (a one-off [`Checkpointer`]).
pub fn make_checkpoint(
    log: &Log,
    topic: &str,
    partition: u32,
    key: &CheckpointKey,
    registry: &Registry,
) -> Result<Option<MadeCheckpoint>, AuditError> {
    Checkpointer::new(key, registry).checkpoint(log, topic, partition)
}
