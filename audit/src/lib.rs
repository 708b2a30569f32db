//! annals-audit: the verifiable log.
//!
//! Owns: the RFC 9162 Merkle tree over each partition's event hashes as the log holds them,
//! signed checkpoints appended to the partition they cover ([`checkpoint`]), inclusion and
//! consistency proofs generated from the log ([`prove`]), evidence bundles of a tenant's events
//! with their proofs ([`evidence`]), the checkpoint checks of `annals verify` ([`check`]) and the
//! checkpoint-signing key in the data dir ([`key`]), and the subject key store that seals
//! personal data so that erasing a subject deletes only its key ([`subjects`]).
//!
//! Must not: define the hashing, the signed text or the proof format — those belong to
//! `annals-proof`, the small crate an auditor verifies with, so that what this crate produces
//! is checked by code it does not share state with.
//!
//! The tree of a partition has one leaf per event, in seq order, checkpoint events included:
//! leaf `i` is `SHA-256(0x00 ‖ hash of the event with seq i)`. A checkpoint event
//! (`audit.CheckpointSigned`, tenant `_audit`, stream `audit.Checkpoint/<topic>/<partition>`)
//! says that the first `tree_size` leaves have root `root_hash`; it is itself a leaf of every
//! later tree.

pub mod check;
pub mod checkpoint;
pub mod evidence;
pub mod key;
pub mod prove;
pub mod subjects;

use std::path::PathBuf;

pub use check::{CheckpointFault, CheckpointReport, verify_checkpoints};
pub use checkpoint::{Checkpointer, MadeCheckpoint, make_checkpoint};
pub use evidence::{Evidence, EvidenceRequest, Tree, collect_evidence};
pub use key::{
    CheckpointKey, data_dir_public_key, default_key_path, public_key_of, public_key_path,
};
pub use prove::{CheckpointRef, prove_consistency, prove_inclusion};
pub use subjects::SubjectKeys;

/// Event type of a checkpoint.
pub const CHECKPOINT_EVENT_TYPE: &str = "audit.CheckpointSigned";
/// Tenant of checkpoint events (reserved: a leading underscore is not a valid tenant slug).
pub const AUDIT_TENANT: &str = "_audit";
/// Actor recorded on checkpoint events.
pub const AUDIT_ACTOR: &str = "annals-audit";

/// The stream a partition's checkpoints are written to.
pub fn checkpoint_stream(topic: &str, partition: u32) -> String {
    format!("audit.Checkpoint/{topic}/{partition}")
}

/// Errors of the audit machinery.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Log(#[from] annals_events::LogError),
    #[error(transparent)]
    Schema(#[from] annals_schemas::SchemaError),
    #[error("checkpoint key {}: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("no event {0} in this log")]
    NoEvent(String),
    #[error(
        "event {event_id} (topic {topic} partition {partition} seq {seq}) is not covered by a checkpoint yet; run `annals checkpoint` first"
    )]
    NotCheckpointed {
        event_id: String,
        topic: String,
        partition: u32,
        seq: u64,
    },
    #[error(
        "{count} event(s) of tenant {tenant} in the period (from seq {first_seq} of {topic}/{partition}) are not covered by a checkpoint yet (the latest covers seq 0..{covered}); run `annals checkpoint` first, or `annals evidence --checkpoint`"
    )]
    NotCovered {
        tenant: String,
        topic: String,
        partition: u32,
        count: usize,
        first_seq: u64,
        covered: u64,
    },
    #[error("no checkpoint {0} in this log")]
    NoCheckpoint(String),
    #[error("{0}")]
    BadReference(String),
    #[error(
        "the checkpoint at topic {topic} partition {partition} seq {seq} does not match the log ({detail}); run `annals verify`"
    )]
    Mismatch {
        topic: String,
        partition: u32,
        seq: u64,
        detail: String,
    },
}

impl AuditError {
    /// Whether the user's input is at fault (exit code 2) rather than the log or the system.
    pub fn is_usage(&self) -> bool {
        use annals_events::LogError as L;
        match self {
            AuditError::Log(e) => matches!(
                e,
                L::NoLog { .. }
                    | L::NoTopic(_)
                    | L::NoPartition { .. }
                    | L::BadName(_)
                    | L::Locked { .. }
                    | L::ReadOnly
            ),
            AuditError::NoEvent(_)
            | AuditError::NotCheckpointed { .. }
            | AuditError::NotCovered { .. }
            | AuditError::NoCheckpoint(_)
            | AuditError::BadReference(_)
            | AuditError::Key { .. } => true,
            AuditError::Schema(_) | AuditError::Mismatch { .. } => false,
        }
    }
}
