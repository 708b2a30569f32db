//! Evidence bundles: a tenant's events of a period, each with its inclusion proof in the
//! partition's latest signed checkpoint, written as a ustar archive in `annals-proof`'s bundle
//! format (see `annals_proof::bundle`, which also verifies them). The manifest is signed with
//! the checkpoint key (`manifest.sig`), so the list of events is the log's own statement.
//!
//! The tenant's partition is read once: its leaf hashes, the tenant's events whose
//! `recorded_at` is in `[from, to)`, and its latest checkpoint. The tree under that checkpoint
//! is built once and every audit path is read from it, so a bundle of `m` events from a
//! partition of `n` costs `O(n + m log n)` hashes.

use std::collections::BTreeMap;
use std::io::Write;

use annals_events::{EnvelopeRef, Log};
use annals_proof::bundle::{
    MANIFEST, MANIFEST_SIGNATURE, Manifest, PUBLIC_KEY, README, checkpoint_path, event_document,
    event_path, format_micros, manifest_message, proof_path, signature_file,
};
use annals_proof::merkle::Hash;
use annals_proof::{Checkpoint, InclusionProof, ProvenEvent, leaf_hash, node_hash};
use annals_schemas::Registry;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::checkpoint::decode_checkpoint;
use crate::key::CheckpointKey;
use crate::{AuditError, CHECKPOINT_EVENT_TYPE, checkpoint_stream};

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRequest {
    pub tenant: String,
    pub topic: String,
    /// The period, `from <= recorded_at < to`, microseconds since the Unix epoch.
    pub from: i64,
    pub to: i64,
}

/// A bundle ready to write: its members in archive order (`manifest.json` first, then
/// `manifest.sig`).
#[derive(Debug, Clone)]
pub struct Evidence {
    pub manifest: Manifest,
    pub files: Vec<(String, Vec<u8>)>,
    /// The checkpoint the proofs lead to (`None` when the period holds no event).
    pub checkpoint: Option<Checkpoint>,
}

impl Evidence {
    /// Writes the bundle as a ustar archive; members get mode 0644 and mtime `mtime` (seconds).
    pub fn write_tar<W: Write>(&self, out: W, mtime: u64) -> std::io::Result<W> {
        let mut b = tar::Builder::new(out);
        for (name, bytes) in &self.files {
            let mut h = tar::Header::new_ustar();
            h.set_path(name)?;
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, bytes.as_slice())?;
        }
        b.into_inner()
    }

    pub fn to_tar(&self, mtime: u64) -> Vec<u8> {
        self.write_tar(Vec::new(), mtime)
            .expect("writing to memory does not fail")
    }
}

/// One tenant event found in the partition.
struct Found {
    seq: u64,
    envelope: Vec<u8>,
}

/// A partition's Merkle tree, every level kept: level 0 the leaves, each next level the
/// pairs of the one below, an odd last node carried up unchanged. This is the RFC 9162 tree
/// (its split at the largest power of two below `n` yields the same nodes), so audit paths are
/// read off it in `O(log n)`.
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().expect("a level").len() > 1 {
            let below = levels.last().expect("a level");
            let up = below
                .chunks(2)
                .map(|c| {
                    if c.len() == 2 {
                        node_hash(&c[0], &c[1])
                    } else {
                        c[0]
                    }
                })
                .collect();
            levels.push(up);
        }
        Tree { levels }
    }

    pub fn root(&self) -> Hash {
        match self.levels.last().and_then(|l| l.first()) {
            Some(h) => *h,
            None => annals_proof::EMPTY_ROOT,
        }
    }

    /// The audit path of leaf `index`, from the leaf up (RFC 9162 §2.1.3.1's order).
    pub fn path(&self, index: u64) -> Vec<Hash> {
        let mut i = index as usize;
        let mut path = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(i ^ 1) {
                path.push(*sibling);
            }
            i >>= 1;
        }
        path
    }
}

/// Collects the evidence of `req` from `log`. `signer` is the log's checkpoint key: the
/// checkpoint is checked against its public key (and against the log's leaves) before anything
/// is written, and it signs the manifest; `created_at` (µs) is told in the README. Fails with
/// [`AuditError::NotCovered`] if an event of the period is newer than the latest checkpoint.
pub fn collect_evidence(
    log: &Log,
    registry: &Registry,
    signer: &CheckpointKey,
    req: &EvidenceRequest,
    created_at: i64,
) -> Result<Evidence, AuditError> {
    let key = &signer.public_key();
    if req.from >= req.to {
        return Err(AuditError::BadReference(format!(
            "the period is empty: --from {} is not before --to {}",
            format_micros(req.from),
            format_micros(req.to)
        )));
    }
    let topic = log.topic(&req.topic)?;
    let part = topic.partition_for(&req.tenant);
    let partition = part.id();
    let stream = checkpoint_stream(&req.topic, partition);

    // One pass: leaves, the tenant's events of the period, the latest checkpoint.
    let mut leaves: Vec<Hash> = Vec::with_capacity(part.head().next_seq as usize);
    let mut events: Vec<Found> = Vec::new();
    let mut latest: Option<(u64, Checkpoint)> = None;
    let mut reader = part.reader(0);
    while let Some(env) = reader.next_ref()? {
        leaves.push(leaf_hash(env.hash));
        if env.tenant == req.tenant && env.recorded_at >= req.from && env.recorded_at < req.to {
            let mut envelope = Vec::new();
            env.encode(&mut envelope);
            events.push(Found {
                seq: env.seq,
                envelope,
            });
        }
        if env.event_type == CHECKPOINT_EVENT_TYPE
            && env.stream == stream
            && let Ok(Some(c)) = decode_checkpoint(&env, registry)
        {
            latest = Some((env.seq, c));
        }
    }

    let mismatch = |seq: u64, detail: String| AuditError::Mismatch {
        topic: req.topic.clone(),
        partition,
        seq,
        detail,
    };
    let mut checkpoint = None;
    let mut tree = None;
    if let Some(last) = events.last() {
        let covered = latest.as_ref().map_or(0, |(_, c)| c.tree_size);
        if last.seq >= covered {
            let first = events.iter().find(|e| e.seq >= covered).expect("one is");
            return Err(AuditError::NotCovered {
                tenant: req.tenant.clone(),
                topic: req.topic.clone(),
                partition,
                count: events.iter().filter(|e| e.seq >= covered).count(),
                first_seq: first.seq,
                covered,
            });
        }
        let (cseq, c) = latest.expect("covered > 0");
        if c.topic != req.topic || c.partition != partition {
            return Err(mismatch(
                cseq,
                format!("it names {}/{}", c.topic, c.partition),
            ));
        }
        if c.tree_size > cseq {
            return Err(mismatch(
                cseq,
                format!(
                    "tree size {} covers events after the checkpoint itself",
                    c.tree_size
                ),
            ));
        }
        c.verify_signature(key)
            .map_err(|e| mismatch(cseq, format!("{e} (the key signing this bundle)")))?;
        leaves.truncate(c.tree_size as usize);
        let t = Tree::new(leaves);
        if t.root() != c.root_hash {
            return Err(mismatch(
                cseq,
                format!(
                    "its root is not the root of the first {} events",
                    c.tree_size
                ),
            ));
        }
        tree = Some(t);
        checkpoint = Some(c);
    }

    let pretty = |v: &serde_json::Value| {
        let mut s = serde_json::to_vec_pretty(v).expect("serialisable");
        s.push(b'\n');
        s
    };
    let mut body: Vec<(String, Vec<u8>)> = Vec::new();
    body.push((
        PUBLIC_KEY.into(),
        format!("{}\n", key.to_hex()).into_bytes(),
    ));
    let mut checkpoints = Vec::new();
    if let Some(c) = &checkpoint {
        let name = checkpoint_path(c.partition, c.tree_size);
        body.push((name.clone(), pretty(&c.to_json())));
        checkpoints.push(name);
    }
    let mut proofs = Vec::with_capacity(events.len());
    for e in &events {
        let env = EnvelopeRef::decode(&e.envelope).expect("encoded above");
        let payload = registry
            .decode_json(env.schema_id, env.payload)
            .unwrap_or_else(|err| json!({ "undecodable": err.to_string() }));
        let doc = event_document(&req.topic, &e.envelope, payload)
            .expect("the log's own envelope decodes");
        body.push((event_path(e.seq), pretty(&doc)));
        let (tree, c) = (
            tree.as_ref().expect("events need a tree"),
            checkpoint.as_ref().expect("and a checkpoint"),
        );
        let proof = InclusionProof {
            event: ProvenEvent {
                event_id: annals_proof::event::uuid_string(&env.event_id),
                topic: req.topic.clone(),
                partition,
                seq: e.seq,
                hash: *env.hash,
                envelope: e.envelope.clone(),
            },
            leaf_hash: tree.levels[0][e.seq as usize],
            leaf_index: e.seq,
            tree_size: c.tree_size,
            audit_path: tree.path(e.seq),
            checkpoint: c.clone(),
        };
        proofs.push((proof_path(e.seq), pretty(&proof.to_json())));
    }
    body.extend(proofs);

    let mut manifest = Manifest {
        signed: true,
        tenant: req.tenant.clone(),
        topic: req.topic.clone(),
        partition,
        from: req.from,
        to: req.to,
        log_id: hex::encode(Sha256::digest(key.to_bytes())),
        events: events.iter().map(|e| e.seq).collect(),
        checkpoints,
        files: BTreeMap::new(),
    };
    let readme = readme(&manifest, checkpoint.as_ref(), created_at).into_bytes();
    body.insert(0, (README.into(), readme));
    manifest.files = body
        .iter()
        .map(|(n, b)| (n.clone(), Sha256::digest(b).into()))
        .collect();
    let manifest_bytes = pretty(&manifest.to_json());
    let signature = signature_file(&signer.sign(&manifest_message(&manifest_bytes)));
    let mut files = vec![
        (MANIFEST.to_owned(), manifest_bytes),
        (MANIFEST_SIGNATURE.to_owned(), signature),
    ];
    files.extend(body);
    Ok(Evidence {
        manifest,
        files,
        checkpoint,
    })
}

/// The auditor's README.
fn readme(m: &Manifest, c: Option<&Checkpoint>, created_at: i64) -> String {
    let n = m.events.len();
    let covered = match c {
        Some(c) => format!(
            "All {n} proofs lead to one signed checkpoint, `{}`: the Merkle root of the first {} events of\n{}/{}, signed at {}.",
            checkpoint_path(c.partition, c.tree_size),
            c.tree_size,
            m.topic,
            m.partition,
            format_micros(c.timestamp)
        ),
        None => "The period holds no event of the tenant, so the bundle holds no proof and no checkpoint.".into(),
    };
    format!(
        r#"# Evidence bundle: tenant `{tenant}`, {from} to {to}

The events of tenant `{tenant}` that the annals log `{log_id}` recorded from {from}
(inclusive) to {to} (exclusive) — {n} events, all in partition {partition} of topic
`{topic}` — each with a proof that it is in the log's signed Merkle tree. The period bounds
each event's `recorded_at`, the log's own clock when it stored the event (not `occurred_at`,
when the event says it happened). Exported by `annals evidence` at {created}.

{covered}

## What is inside

| file | what |
| --- | --- |
| `manifest.json` | tenant, period, topic, partition, log id, counts, the events' seqs, the SHA-256 of every other file but `manifest.sig` |
| `manifest.sig` | the log key's ed25519 signature of `manifest.json` (128 hex digits) |
| `README.md` | this file |
| `public.key` | the log's ed25519 public key (64 hex digits); the log id is its SHA-256 |
| `checkpoints/<partition>-<tree_size>.json` | the signed checkpoint the proofs lead to |
| `events/<seq>.json` | one event: its fields, `envelope_hex` (its canonical bytes, which the proofs cover) and `payload` decoded for reading |
| `proofs/<seq>.json` | the event's inclusion proof, a document `annals verify-proof FILE --key KEY` checks on its own |

## Check it with annals

Get the log's public key from its operator through a channel other than this bundle (it must
equal `public.key`), then, with no data dir needed:

    annals verify-proof --bundle bundle.tar --key public.key

It checks the manifest's hashes and its signature, every checkpoint's signature, every event
file against its own bytes (hash, tenant, period, partition, seq and every field shown), every
proof against its checkpoint and the key, and that the events listed are exactly the files
present. It prints one `OK` line, or exits 1 naming the first file that failed and why. The
checker is the crate `annals-proof` (hashing, ed25519 verification, JSON and a ustar reader;
no other annals code).

## Check it by hand

`||` is concatenation, `BE32`/`BE64` big-endian integers, `H` is SHA-256.

1. Files: `sha256sum` of each file but `manifest.json` and `manifest.sig` equals its entry in
   `manifest.json` `files`.
2. Manifest: `manifest.sig` holds an ed25519 signature (RFC 8032; 128 hex digits, then a
   newline) of exactly these bytes, which must verify with `public.key`:

       "annals-evidence-manifest-v1\n" || the bytes of manifest.json

3. Event hash: with `e` the bytes of `envelope_hex`, `prev_hash` = `e[-64:-32]`, the stored hash
   = `e[-32:]`:

       event_hash = H("annals.event.v1\0" || BE32(partition) || BE64(seq) || prev_hash || e[:-32])

   must equal the stored hash and the file's `hash`. (`e` is the Avro binary encoding of the
   envelope v1: event_id, tenant, stream, stream_version, event_type, schema_id, occurred_at,
   recorded_at, actor, causation_id, correlation_id, payload, partition, seq, prev_hash, hash.)
4. Leaf hash (RFC 9162 §2.1.1): `leaf = H(0x00 || event_hash)`; it is leaf number `seq` of the
   partition's tree.
5. Node hash: `node = H(0x01 || left || right)`. Walk `audit_path` from the leaf to the root as
   in RFC 9162 §2.1.3.2 (with `leaf_index` and `tree_size`); the result must be the
   checkpoint's `root_hash`.
6. Checkpoint: the signature (ed25519, RFC 8032) covers exactly these UTF-8 lines, each ending
   in `\n`:

       annals-checkpoint-v1
       <log_id>
       <topic>
       <partition, decimal>
       <tree_size, decimal>
       <root_hash, 64 lowercase hex digits>
       <timestamp, decimal microseconds since the Unix epoch>

   and must verify with `public.key`; `log_id` = hex `H(public key bytes)`.

## What this shows, and what it does not

- Each listed event is proven to be in the signed log (steps 3 to 6). The list itself — the
  tenant, the period, which events are in it — is signed with the log's key (step 2), so a copy
  of this bundle with an event removed, added or swapped does not verify, and nobody without
  the key can make one that does.
- That the list is complete is the log operator's signed statement, not a proof: the holder of
  the key could sign a list that leaves an event out. Checking that needs the whole partition
  (every event of it up to the checkpoint's tree size), which the operator can provide.
- The decoded `payload` is for reading (decoded with the writer schema `schema_id`); what the
  proofs cover is the payload bytes inside `envelope_hex`.
"#,
        tenant = m.tenant,
        from = format_micros(m.from),
        to = format_micros(m.to),
        log_id = m.log_id,
        partition = m.partition,
        topic = m.topic,
        created = format_micros(created_at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals_proof::merkle;

    #[test]
    fn audit_paths_from_the_kept_levels_are_rfc_9162s() {
        let leaves: Vec<Hash> = (0u64..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for size in 1..=leaves.len() {
            let t = Tree::new(leaves[..size].to_vec());
            assert_eq!(t.root(), merkle::root(&leaves[..size]), "size {size}");
            for i in 0..size as u64 {
                assert_eq!(
                    t.path(i),
                    merkle::inclusion_proof(&leaves, i, size as u64).unwrap(),
                    "leaf {i} of {size}"
                );
            }
        }
    }
}
