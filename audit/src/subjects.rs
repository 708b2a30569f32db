//! The subject key store: one random 256-bit key per (tenant, data subject), under
//! `<data-dir>/keys/subjects/`, that seals the subject's personal fields (ChaCha20-Poly1305,
//! the field's tenant, subject and name as associated data). Erasing a subject deletes its key
//! file: from then on nothing can open what was sealed under it, while the sealed bytes — and
//! so every hash, Merkle tree and proof over them — stay as they were.
//!
//! Keys are read from disk on every use, never cached, so an erasure done by one process is
//! seen at once by every other reading the same data dir.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use annals_schemas::personal::{SEALED_PREFIX, Sealer};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// The key store of a data dir.
#[derive(Debug, Clone)]
pub struct SubjectKeys {
    dir: PathBuf,
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

impl SubjectKeys {
    /// The store under `<data_dir>/keys/subjects/` (created when the first key is).
    pub fn open(data_dir: &Path) -> SubjectKeys {
        SubjectKeys {
            dir: data_dir.join("keys").join("subjects"),
        }
    }

    /// The key file of a subject: named by a hash, so file names reveal no subject id.
    fn path(&self, tenant: &str, subject: &str) -> PathBuf {
        self.dir
            .join(format!("{}.key", Self::name(tenant, subject)))
    }

    /// The tombstone an erasure leaves: the subject can never get a key again.
    fn tombstone(&self, tenant: &str, subject: &str) -> PathBuf {
        self.dir
            .join(format!("{}.erased", Self::name(tenant, subject)))
    }

    fn name(tenant: &str, subject: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"annals-subject-key\0");
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(subject.as_bytes());
        hex::encode(h.finalize())
    }

    /// Whether the subject was erased (its key may never come back).
    pub fn erased(&self, tenant: &str, subject: &str) -> bool {
        self.tombstone(tenant, subject).exists()
    }

    fn read(&self, tenant: &str, subject: &str) -> Result<Option<[u8; 32]>, String> {
        if self.erased(tenant, subject) {
            return Ok(None);
        }
        let path = self.path(tenant, subject);
        match fs::read(&path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                .map(Some)
                .map_err(|_| format!("subject key {} is damaged (not 32 bytes)", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read subject key {}: {e}", path.display())),
        }
    }

    /// The subject's key, created (durably) if it has none. An erased subject gets none.
    fn get_or_create(&self, tenant: &str, subject: &str) -> Result<[u8; 32], String> {
        if self.erased(tenant, subject) {
            return Err(format!(
                "subject `{subject}` of tenant `{tenant}` was erased: no personal data of it can be stored again"
            ));
        }
        if let Some(k) = self.read(tenant, subject)? {
            return Ok(k);
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let path = self.path(tenant, subject);
        // Written whole under a temporary name, then linked into place: readers never see a
        // partial key, and a concurrent creator's key wins if it was first.
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            Self::name(tenant, subject),
            std::process::id()
        ));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&tmp)
            .and_then(|mut f| {
                f.write_all(&key)?;
                f.sync_all()
            })
            .map_err(|e| format!("cannot write subject key {}: {e}", tmp.display()))?;
        let linked = fs::hard_link(&tmp, &path);
        fs::remove_file(&tmp).ok();
        match linked {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .read(tenant, subject)?
                .ok_or_else(|| format!("subject key {} vanished", path.display())),
            Err(e) => Err(format!("cannot create subject key {}: {e}", path.display())),
        }
    }

    /// Whether the subject has a key (personal data of it can be read).
    pub fn exists(&self, tenant: &str, subject: &str) -> bool {
        self.path(tenant, subject).exists()
    }

    /// Deletes the subject's key for good and leaves a tombstone so it never gets one again;
    /// `false` if it had no key. Durable when it returns.
    pub fn erase(&self, tenant: &str, subject: &str) -> Result<bool, String> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let tomb = self.tombstone(tenant, subject);
        fs::File::create(&tomb)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tomb.display()))?;
        let path = self.path(tenant, subject);
        let had = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(format!("cannot delete subject key {}: {e}", path.display())),
        };
        sync_dir(&self.dir)?;
        Ok(had)
    }
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
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
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
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
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
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
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_until_the_key_is_erased() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SubjectKeys::open(dir.path());
        let sealed = keys
            .seal("acme", "c-1", "email", "ada@example.com")
            .unwrap();
        // (Hex digits include a–f, so only look for the characters hex cannot hold.)
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("@example"));
        let again = keys
            .seal("acme", "c-1", "email", "ada@example.com")
            .unwrap();
        assert_ne!(sealed, again, "a fresh nonce each time");
        assert_eq!(
            keys.open("acme", "c-1", "email", &sealed)
                .unwrap()
                .as_deref(),
            Some("ada@example.com")
        );
        // Bound to its tenant, subject and field.
        assert!(keys.open("acme", "c-1", "name", &sealed).is_err());
        assert!(
            keys.open("other", "c-1", "email", &sealed)
                .unwrap()
                .is_none()
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert!(
            keys.open(
                "acme",
                "c-1",
                "email",
                &String::from_utf8(tampered).unwrap()
            )
            .is_err()
        );
        // Another subject's key is another key.
        keys.seal("acme", "c-2", "email", "bob@example.com")
            .unwrap();
        assert!(keys.erase("acme", "c-1").unwrap());
        assert!(!keys.erase("acme", "c-1").unwrap());
        assert_eq!(keys.open("acme", "c-1", "email", &sealed).unwrap(), None);
        assert!(keys.exists("acme", "c-2"));
        // An erased subject never gets a key again.
        assert!(keys.erased("acme", "c-1"));
        let again = keys.seal("acme", "c-1", "email", "ada@example.com");
        assert!(again.unwrap_err().contains("erased"));
        // No file of the store names the subject.
        for e in fs::read_dir(dir.path().join("keys/subjects")).unwrap() {
            // (keys and tombstones alike)
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains("c-2") && !name.contains("acme"), "{name}");
        }
    }
}

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
