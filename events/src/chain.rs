//! The per-partition hash chain (pure; no I/O).
//!
//! `hash = SHA-256(TAG ‖ partition (u32 BE) ‖ seq (u64 BE) ‖ prev_hash ‖ envelope bytes without hash)`.
//! The first event of every partition links to [`GENESIS`] (32 zero bytes).

use sha2::{Digest, Sha256};

mod lanes;
pub use lanes::{Batch, padded_blocks};

pub type Hash = [u8; 32];

/// Domain-separation tag: an event hash can never be confused with another SHA-256 use.
pub const TAG: &[u8] = b"annals.event.v1\0";

/// What the first event of a partition links to.
pub const GENESIS: Hash = [0u8; 32];

/// Bytes an event hash covers before the envelope: tag, partition, seq, prev_hash.
pub const PREFIX_LEN: usize = TAG.len() + 4 + 8 + 32;

fn prefix(partition: u32, seq: u64, prev_hash: &Hash) -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    let (tag, rest) = p.split_at_mut(TAG.len());
    tag.copy_from_slice(TAG);
    rest[..4].copy_from_slice(&partition.to_be_bytes());
    rest[4..12].copy_from_slice(&seq.to_be_bytes());
    rest[12..].copy_from_slice(prev_hash);
    p
}

/// The chain hash of one event, given its canonical bytes without the hash.
pub fn event_hash(partition: u32, seq: u64, prev_hash: &Hash, body_without_hash: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prefix(partition, seq, prev_hash));
    h.update(body_without_hash);
    h.finalize().into()
}

/// Adds what [`event_hash`] covers to `batch`, to be hashed with other events side by side;
/// the message's bytes from [`PREFIX_LEN`] on are `body_without_hash`.
pub fn push_event(
    batch: &mut Batch,
    partition: u32,
    seq: u64,
    prev_hash: &Hash,
    body_without_hash: &[u8],
) {
    batch.push(&[&prefix(partition, seq, prev_hash), body_without_hash]);
}
