//! annals-proof: the offline verifier an auditor reads and builds alone.
//!
//! Owns: RFC 9162 (Certificate Transparency v2) Merkle tree hashing over a partition's event
//! hashes, generation and verification of inclusion and consistency proofs ([`merkle`]);
//! recomputing an annals event's chain hash from its canonical envelope bytes ([`event`]);
//! signed checkpoints and their ed25519 public key ([`checkpoint`]); the JSON proof documents
//! and their verification ([`proof`]); evidence bundles — a tenant's events of a period with
//! their proofs in one ustar archive, read by a small reader of its own — ([`bundle`]).
//!
//! Must not: depend on any other annals crate, do I/O, or need an async runtime. Its only
//! dependencies are `sha2`, `ed25519-dalek` (verification only), `serde_json` and `hex`, so
//! what it accepts can be audited in an afternoon.
//!
//! What a verified inclusion proof establishes, link by link:
//! 1. the envelope bytes decode, and hash (with the chain formula) to the hash they carry;
//! 2. the event's id, partition and seq are the envelope's;
//! 3. the leaf is `SHA-256(0x00 ‖ event hash)` at index `seq`;
//! 4. the audit path leads from that leaf to the checkpoint's root for its tree size;
//! 5. the checkpoint (log, topic, partition, tree size, root, time) is signed by the key.
//!
//! ```no_run
//! let key = annals_proof::PublicKey::parse(&std::fs::read_to_string("checkpoint.pub")?)?;
//! let verified = annals_proof::verify_document(&std::fs::read_to_string("proof.json")?, &key)?;
//! println!("OK {verified}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
pub mod checkpoint;
pub mod event;
mod json;
pub mod merkle;
pub mod proof;

pub use bundle::{
    BundleError, BundleSummary, Manifest, Unsigned, verify_bundle, verify_bundle_with,
};
pub use checkpoint::{Checkpoint, PublicKey, checkpoint_message};
pub use merkle::{EMPTY_ROOT, Frontier, Hash, leaf_hash, node_hash};
pub use proof::{ConsistencyProof, InclusionProof, Proof, ProvenEvent, Verified, verify_document};

/// Why a proof was rejected: `what` names the link that failed (stable, for scripts), `detail`
/// says how.
///
/// `what` is one of: `json` (malformed or unknown field), `key`, `envelope`, `event hash`,
/// `event`, `leaf hash`, `leaf index`, `tree size`, `audit path`, `checkpoint`,
/// `checkpoint signature`, `consistency path`; for bundles also `archive`, `manifest`,
/// `manifest signature`, `sha256`, `tenant`, `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub what: &'static str,
    pub detail: String,
}

impl VerifyError {
    pub fn new(what: &'static str, detail: impl Into<String>) -> VerifyError {
        VerifyError {
            what,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

impl std::error::Error for VerifyError {}
