//! The checkpoint checks of `annals verify`: every checkpoint event's signature, and its root
//! against the root recomputed from the partition's events.
//!
//! A [`PartitionCheck`] sees a partition's events in seq order. It rides along verify's own
//! single read of the log: over the files on the embedded log ([`verify_embedded`],
//! partitions in parallel), over the broker's records on Kafka ([`verify_kafka`]);
//! [`verify_checkpoints`] checks an open log on its own, reading it. It keeps the hashes of the
//! latest events and folds them into the Merkle frontier a few thousand at a time (or when a
//! checkpoint needs them), many leaves side by side ([`annals_events::chain::Batch`]), in
//! aligned runs of 64 leaves pushed as whole subtrees. The hashes kept back let a checkpoint
//! that covers a little less than the events before it be checked without a second read.

use std::path::Path;

use annals_events::chain::{Batch, Hash};
use annals_events::envelope::{EnvelopeRef, event_type_of};
use annals_events::verify::{Observer, VerifyReport, verify_observed};
use std::sync::Arc;

use annals_events::{Log, Topic};
use annals_proof::merkle::{LEAF_TAG, NODE_TAG};
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

/// Checks every checkpoint of every topic of `log` (best opened read-only), reading it.
/// `key`: the public key to check signatures with; `None` checks roots only.
pub fn verify_checkpoints(
    log: &Log,
    key: Option<&PublicKey>,
    registry: &Registry,
) -> Result<CheckpointReport, AuditError> {
    let mut checks = Vec::new();
    for topic in log.topics() {
        for (i, part) in topic.partitions().iter().enumerate() {
            let source = Reread::Ready(topic.clone(), i);
            let mut check = PartitionCheck::new(part.topic(), part.id(), source, key, registry);
            let mut reader = part.reader(0);
            let read = (|| {
                while let Some(env) = reader.next_ref()? {
                    let checkpoint = (env.event_type == CHECKPOINT_EVENT_TYPE).then_some(&env);
                    check.see(env.seq, env.hash, checkpoint);
                }
                Ok::<_, AuditError>(())
            })();
            if let Err(e) = read {
                check.unreadable = Some(e.to_string());
            }
            checks.push(check);
        }
    }
    Ok(CheckpointReport::of(checks, key))
}

/// `annals verify` on the embedded log: every partition's chain (annals-events) and its
/// checkpoints, in one pass over the files, partitions in parallel on up to `threads`
/// threads (0: one per core). The log is opened (read-only) only for a checkpoint that
/// covers fewer events than an earlier one, to read its partition again.
pub fn verify_embedded(
    data_dir: &Path,
    threads: usize,
    key: Option<&PublicKey>,
    registry: &Registry,
) -> Result<(VerifyReport, CheckpointReport), AuditError> {
    let (chain, checks) = verify_observed(data_dir, threads, |topic, p| {
        PartitionCheck::new(topic, p, Reread::Open(data_dir), key, registry)
    })?;
    Ok((chain, CheckpointReport::of(checks, key)))
}

/// `annals verify` on Kafka: every partition's chain and its checkpoints in one read of the
/// broker (annals-events' Kafka verify, with a [`PartitionCheck`] riding along).
pub fn verify_kafka(
    log: &Log,
    key: Option<&PublicKey>,
    registry: &Registry,
) -> Result<(VerifyReport, CheckpointReport), AuditError> {
    let topics = log.topics();
    let (chain, checks) = annals_events::log::kafka::verify::verify_observed(log, |name, p| {
        let source = topics.iter().find(|t| t.name() == name).and_then(|t| {
            let index = t.partitions().iter().position(|x| x.id() == p)?;
            Some(Reread::Ready(t.clone(), index))
        });
        PartitionCheck::new(name, p, source.unwrap_or(Reread::None), key, registry)
    })?;
    Ok((chain, CheckpointReport::of(checks, key)))
}

/// The checkpoint checks of one partition, fed its events in seq order.
pub struct PartitionCheck<'a> {
    topic: String,
    partition: u32,
    /// How to read the partition again, for a checkpoint behind the frontier.
    reread: Reread<'a>,
    key: Option<&'a PublicKey>,
    registry: &'a Registry,
    frontier: Frontier,
    /// Hashes of the events after the frontier's leaves, oldest first.
    pending: Vec<Hash>,
    checkpoints: u64,
    faults: Vec<CheckpointFault>,
    unreadable: Option<String>,
    /// Scratch space of `fold`, kept between calls.
    batch: Batch,
    leaves: Vec<Hash>,
    level: Vec<Hash>,
}

/// Where a [`PartitionCheck`] reads its partition again from.
pub enum Reread<'a> {
    /// A topic of an open log, and the partition's index in it.
    Ready(Arc<Topic>, usize),
    /// The data dir of an embedded log, opened read-only when needed.
    Open(&'a Path),
    /// Nowhere: such a checkpoint is reported unreadable.
    None,
}

/// Event hashes kept back from the frontier: a checkpoint covering up to this many fewer
/// events than were seen before it is checked from memory; one further behind needs the
/// partition read again. Once twice as many are pending, the oldest half is folded, so the
/// scratch space stays small, warm in cache and reused.
const KEEP: usize = 1024;
/// Leaves of the subtrees pushed whole.
const RUN: usize = 64;

impl<'a> PartitionCheck<'a> {
    pub fn new(
        topic: &str,
        partition: u32,
        reread: Reread<'a>,
        key: Option<&'a PublicKey>,
        registry: &'a Registry,
    ) -> Self {
        PartitionCheck {
            topic: topic.to_owned(),
            partition,
            reread,
            key,
            registry,
            frontier: Frontier::new(),
            pending: Vec::with_capacity(2 * KEEP),
            checkpoints: 0,
            faults: Vec::new(),
            unreadable: None,
            batch: Batch::new(),
            leaves: Vec::new(),
            level: Vec::new(),
        }
    }

    /// The next event: its seq, its hash and, for a checkpoint event, its envelope.
    pub fn see(&mut self, seq: u64, hash: &Hash, checkpoint: Option<&EnvelopeRef<'_>>) {
        if self.unreadable.is_some() {
            return;
        }
        if let Some(env) = checkpoint {
            self.checkpoints += 1;
            if let Some(fault) = self.check(seq, env) {
                self.faults.push(fault);
            }
        }
        self.pending.push(*hash);
        if self.pending.len() >= 2 * KEEP {
            self.fold(KEEP);
        }
    }

    fn check(&mut self, seq: u64, env: &EnvelopeRef<'_>) -> Option<CheckpointFault> {
        let (topic, partition) = (self.topic.clone(), self.partition);
        let fault = |kind, detail: String| CheckpointFault {
            topic: topic.clone(),
            partition,
            seq,
            kind,
            detail,
        };
        let c = match decode_checkpoint(env, self.registry) {
            Err(e) => {
                return Some(fault(
                    "checkpoint_payload",
                    format!("unreadable checkpoint: {e}"),
                ));
            }
            Ok(None) => return None,
            Ok(Some(c)) => c,
        };
        if c.topic != self.topic || c.partition != self.partition {
            return Some(fault(
                "checkpoint_payload",
                format!("the checkpoint names {}/{}", c.topic, c.partition),
            ));
        }
        if c.tree_size > seq {
            return Some(fault(
                "checkpoint_size",
                format!(
                    "tree size {} covers events after the checkpoint itself",
                    c.tree_size
                ),
            ));
        }
        let root = match self.root_at(c.tree_size) {
            Ok(root) => root,
            Err(e) => {
                self.unreadable = Some(e);
                return None;
            }
        };
        if root != c.root_hash {
            return Some(fault(
                "checkpoint_root",
                format!(
                    "the root is not the Merkle root of the first {} events",
                    c.tree_size
                ),
            ));
        }
        match self.key.map(|k| c.verify_signature(k)) {
            Some(Err(e)) => Some(fault("checkpoint_signature", e.detail)),
            _ => None,
        }
    }

    /// The root of the first `size` leaves (`size` at most the events seen): from the
    /// frontier when it has not gone past `size` (the usual case), else by reading the
    /// partition again.
    fn root_at(&mut self, size: u64) -> Result<[u8; 32], String> {
        if size >= self.frontier.size() {
            self.fold((size - self.frontier.size()) as usize);
            return Ok(self.frontier.root());
        }
        let read = || -> Result<[u8; 32], AuditError> {
            let opened;
            let (topic, index) = match &self.reread {
                Reread::Ready(topic, index) => (topic.clone(), *index),
                Reread::None => {
                    return Err(AuditError::NoEvent(format!(
                        "partition {} of topic {}",
                        self.partition, self.topic
                    )));
                }
                Reread::Open(data_dir) => {
                    opened = Log::open_read_only(data_dir)?;
                    let topic = opened.topic(&self.topic)?;
                    let index = topic
                        .partitions()
                        .iter()
                        .position(|p| p.id() == self.partition);
                    (topic, index.unwrap_or(usize::MAX))
                }
            };
            let Some(part) = topic.partitions().get(index) else {
                return Err(AuditError::NoEvent(format!(
                    "partition {} of topic {}",
                    self.partition, self.topic
                )));
            };
            let mut f = Frontier::new();
            let mut reader = part.reader(0);
            while f.size() < size {
                match reader.next_ref()? {
                    Some(env) => f.push(leaf_hash(env.hash)),
                    None => break,
                }
            }
            Ok(f.root())
        };
        read().map_err(|e| format!("{}/{}: {e}", self.topic, self.partition))
    }

    /// Moves the first `n` pending hashes into the frontier as leaves.
    fn fold(&mut self, n: usize) {
        let (batch, leaves, level) = (&mut self.batch, &mut self.leaves, &mut self.level);
        batch.clear();
        let mut leaf = [LEAF_TAG; 33];
        for h in &self.pending[..n] {
            leaf[1..].copy_from_slice(h);
            batch.push_array(&leaf);
        }
        batch.digests(leaves);
        self.pending.drain(..n);
        let mut at = 0;
        // One by one up to a multiple of RUN, then whole subtrees of RUN leaves.
        while at < leaves.len() && !self.frontier.size().is_multiple_of(RUN as u64) {
            self.frontier.push(leaves[at]);
            at += 1;
        }
        let runs = (leaves.len() - at) / RUN;
        level.clear();
        level.extend_from_slice(&leaves[at..at + runs * RUN]);
        while level.len() > runs {
            batch.clear();
            let mut node = [NODE_TAG; 65];
            for pair in level.chunks_exact(2) {
                node[1..33].copy_from_slice(&pair[0]);
                node[33..].copy_from_slice(&pair[1]);
                batch.push_array(&node);
            }
            batch.digests(level);
        }
        for root in level.iter() {
            let pushed = self.frontier.push_subtree(*root, RUN.trailing_zeros());
            debug_assert!(pushed, "subtrees are pushed at multiples of their width");
        }
        for leaf in &leaves[at + runs * RUN..] {
            self.frontier.push(*leaf);
        }
    }
}

impl CheckpointReport {
    /// The report of every partition's checks, in their order; `key` is what signatures were
    /// checked with.
    fn of(checks: Vec<PartitionCheck<'_>>, key: Option<&PublicKey>) -> CheckpointReport {
        let mut report = CheckpointReport {
            signatures_checked: key.is_some(),
            public_key: key.map(PublicKey::to_hex),
            ..CheckpointReport::default()
        };
        for check in checks {
            report.checkpoints += check.checkpoints;
            report.faults.extend(check.faults);
            if let Some(why) = check.unreadable {
                report
                    .unreadable
                    .push(format!("{}/{}: {why}", check.topic, check.partition));
            }
        }
        report
    }
}

/// On the embedded log, the check sees each event as verify reads it; only checkpoint
/// events are decoded.
impl Observer for PartitionCheck<'_> {
    fn end(&mut self) {
        self.pending = Vec::new();
        self.batch = Batch::new();
        self.leaves = Vec::new();
        self.level = Vec::new();
    }

    fn event(&mut self, seq: u64, hash: &Hash, without_hash: &[u8]) {
        if event_type_of(without_hash) != Some(CHECKPOINT_EVENT_TYPE.as_bytes()) {
            return self.see(seq, hash, None);
        }
        let body = [without_hash, hash].concat();
        match EnvelopeRef::decode(&body) {
            Ok(env) => self.see(seq, hash, Some(&env)),
            Err(e) => {
                self.checkpoints += 1;
                self.faults.push(CheckpointFault {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    seq,
                    kind: "checkpoint_payload",
                    detail: format!("unreadable checkpoint envelope: {e}"),
                });
                self.see(seq, hash, None);
            }
        }
    }
}
