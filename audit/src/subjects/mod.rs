//! The subject key store: one random 256-bit key per (tenant, data subject) that seals the
//! subject's personal fields (ChaCha20-Poly1305, the field's tenant, subject and name as
//! associated data). Erasing a subject deletes its key: from then on nothing can open what was
//! sealed under it, while the sealed bytes — and so every hash, Merkle tree and proof over
//! them — stay as they were. An erasure leaves a tombstone, so the subject never gets a key
//! again.
//!
//! [`SubjectKeys`] is the one type callers use, over either place keys are kept:
//! - files in the data dir, `keys/subjects/` (the embedded deployment; `files.rs`);
//! - a PostgreSQL table, `annals_subject_keys` (the distributed deployment, where processes on
//!   several machines seal and open; `postgres.rs`).
//!
//! Either way keys are read on every use, never cached, so an erasure done by one process is
//! seen at once by every other.

mod files;
mod postgres;

use std::path::Path;
use std::sync::Arc;

use annals_schemas::personal::{SEALED_PREFIX, Sealer};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key as AeadKey, Nonce};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

pub use postgres::{SNAPSHOT_WAIT, TABLE as POSTGRES_TABLE, valid_schema};

/// A subject's key.
type Key = [u8; 32];

/// The subject key store: in the data dir or in PostgreSQL. Cheap to clone (clones share the
/// store and, for PostgreSQL, its connections).
#[derive(Debug, Clone)]
pub struct SubjectKeys {
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Files(files::FileKeys),
    Postgres(Arc<postgres::PgKeys>),
}

fn aad(tenant: &str, subject: &str, field: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(tenant.len() + subject.len() + field.len() + 16);
    v.extend_from_slice(b"annals-sealed-v1\0");
    for part in [tenant, subject, field] {
        v.extend_from_slice(part.as_bytes());
        v.push(0);
    }
    v
}

/// The name a subject's key is stored under: a hash of tenant and subject, so the store
/// reveals no subject id.
fn key_name(tenant: &str, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"annals-subject-key\0");
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    hex::encode(h.finalize())
}

fn erased_error(tenant: &str, subject: &str) -> String {
    format!(
        "subject `{subject}` of tenant `{tenant}` was erased: no personal data of it can be stored again"
    )
}

impl SubjectKeys {
    /// The store under `<data_dir>/keys/subjects/` (created when the first key is).
    pub fn open(data_dir: &Path) -> SubjectKeys {
        SubjectKeys {
            store: Store::Files(files::FileKeys::new(data_dir)),
        }
    }

    /// The store in table [`POSTGRES_TABLE`] of the database at `url`, in `schema` (created if
    /// missing; default: the role's `search_path`). Connects and creates the table now, so a
    /// wrong URL or a stopped server is reported here, not at the first personal field.
    pub fn postgres(url: &str, schema: Option<&str>) -> Result<SubjectKeys, String> {
        Ok(SubjectKeys {
            store: Store::Postgres(Arc::new(postgres::PgKeys::connect(url, schema)?)),
        })
    }

    /// [`SubjectKeys::postgres`] with erasures waiting only `wait` for older transactions.
    #[cfg(test)]
    fn postgres_waiting(url: &str, schema: &str, wait: std::time::Duration) -> SubjectKeys {
        let mut keys = postgres::PgKeys::connect(url, Some(schema)).expect("connect");
        keys.snapshot_wait = wait;
        SubjectKeys {
            store: Store::Postgres(Arc::new(keys)),
        }
    }

    /// Where the keys are, without a password.
    pub fn describe(&self) -> String {
        match &self.store {
            Store::Files(f) => f.describe(),
            Store::Postgres(p) => p.describe(),
        }
    }

    /// Whether the subject was erased (its key may never come back).
    pub fn erased(&self, tenant: &str, subject: &str) -> Result<bool, String> {
        match &self.store {
            Store::Files(f) => Ok(f.erased(tenant, subject)),
            Store::Postgres(p) => p.erased(tenant, subject),
        }
    }

    /// Whether the subject has a key (personal data of it can be read).
    pub fn exists(&self, tenant: &str, subject: &str) -> Result<bool, String> {
        match &self.store {
            Store::Files(f) => Ok(f.exists(tenant, subject)),
            Store::Postgres(p) => p.exists(tenant, subject),
        }
    }

    /// Deletes the subject's key for good and leaves a tombstone so it never gets one again;
    /// `false` if it had no key. Durable when it returns; in PostgreSQL the table is rewritten
    /// too, so that no old copy of the key is left in its files.
    pub fn erase(&self, tenant: &str, subject: &str) -> Result<bool, String> {
        match &self.store {
            Store::Files(f) => f.erase(tenant, subject),
            Store::Postgres(p) => p.erase(tenant, subject),
        }
    }

    fn read(&self, tenant: &str, subject: &str) -> Result<Option<Key>, String> {
        match &self.store {
            Store::Files(f) => f.read(tenant, subject),
            Store::Postgres(p) => p.read(tenant, subject),
        }
    }

    /// The subject's key, created (durably) if it has none. An erased subject gets none.
    fn get_or_create(&self, tenant: &str, subject: &str) -> Result<Key, String> {
        match &self.store {
            Store::Files(f) => f.get_or_create(tenant, subject),
            Store::Postgres(p) => p.get_or_create(tenant, subject),
        }
    }
}

impl Sealer for SubjectKeys {
    fn seal(
        &self,
        tenant: &str,
        subject: &str,
        field: &str,
        plaintext: &str,
    ) -> Result<String, String> {
        let key = self.get_or_create(tenant, subject)?;
        let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key));
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad(tenant, subject, field),
                },
            )
            .map_err(|_| "sealing failed".to_owned())?;
        Ok(format!(
            "{SEALED_PREFIX}{}{}",
            hex::encode(nonce),
            hex::encode(sealed)
        ))
    }

    fn open(
        &self,
        tenant: &str,
        subject: &str,
        field: &str,
        sealed: &str,
    ) -> Result<Option<String>, String> {
        let Some(key) = self.read(tenant, subject)? else {
            return Ok(None);
        };
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() >= 12 + 16)
            .ok_or_else(|| format!("field `{field}` is not a sealed value"))?;
        let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&bytes[..12]),
                Payload {
                    msg: &bytes[12..],
                    aad: &aad(tenant, subject, field),
                },
            )
            .map_err(|_| {
                format!(
                    "field `{field}` of subject `{subject}` does not open with its key (altered)"
                )
            })?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| format!("field `{field}` opened to bytes that are not text"))
    }
}

#[cfg(test)]
mod tests;

/// One event of a subject, as a data-subject access request shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubjectEvent {
    pub event_id: String,
    pub event_type: String,
    pub stream: String,
    pub partition: u32,
    pub seq: u64,
    pub occurred_at: String,
    pub recorded_at: String,
    pub actor: String,
    /// The payload with personal fields opened (or `[erased]`).
    pub payload: serde_json::Value,
}

/// Every event of the log about `subject` of `tenant`: the events of its own stream
/// (`stream`, e.g. the contact's), and every event whose schema names a subject field holding
/// it. Only the tenant's partition is read.
pub fn subject_events(
    topic: &annals_events::Topic,
    registry: &annals_schemas::Registry,
    tenant: &str,
    subject: &str,
    stream: &str,
) -> Result<Vec<SubjectEvent>, crate::AuditError> {
    let partition = topic.partition_for(tenant);
    let mut reader = partition.reader(0);
    let mut out = Vec::new();
    while let Some(env) = reader.next_ref()? {
        if env.tenant != tenant {
            continue;
        }
        let subject_field = registry
            .get(env.schema_id)
            .and_then(|s| s.personal.subject.clone());
        if env.stream != stream && subject_field.is_none() {
            continue;
        }
        let payload = registry.decode_json(env.schema_id, env.payload)?;
        let mine =
            env.stream == stream || subject_field.is_some_and(|f| payload[f.as_str()] == subject);
        if !mine {
            continue;
        }
        out.push(SubjectEvent {
            event_id: uuid::Uuid::from_bytes(env.event_id).to_string(),
            event_type: env.event_type.to_owned(),
            stream: env.stream.to_owned(),
            partition: env.partition,
            seq: env.seq,
            occurred_at: annals_events::time::format_micros(env.occurred_at),
            recorded_at: annals_events::time::format_micros(env.recorded_at),
            actor: env.actor.to_owned(),
            payload,
        });
    }
    Ok(out)
}
