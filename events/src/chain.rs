//! The per-partition hash chain (pure; no I/O).
//!
//! `hash = SHA-256(TAG ‖ partition (u32 BE) ‖ seq (u64 BE) ‖ prev_hash ‖ envelope bytes without hash)`.
//! The first event of every partition links to [`GENESIS`] (32 zero bytes).

use sha2::{Digest, Sha256};

mod lanes;
pub use lanes::Batch;

pub type Hash = [u8; 32];

/// Domain-separation tag: an event hash can never be confused with another SHA-256 use.
pub const TAG: &[u8] = b"annals.event.v1\0";

/// What the first event of a partition links to.
pub const GENESIS: Hash = [0u8; 32];

/// The chain hash of one event, given its canonical bytes without the hash.
pub fn event_hash(partition: u32, seq: u64, prev_hash: &Hash, body_without_hash: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(TAG);
    h.update(partition.to_be_bytes());
    h.update(seq.to_be_bytes());
    h.update(prev_hash);
    h.update(body_without_hash);
    h.finalize().into()
}
