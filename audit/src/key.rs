//! The checkpoint-signing key: an ed25519 key kept in the data dir (or at a given path).
//!
//! Files: `keys/checkpoint.ed25519` holds the 32-byte secret seed as 64 hex digits (mode 0600,
//! created on first use with the OS random generator); `keys/checkpoint.ed25519.pub` holds the
//! public key as 64 hex digits, the form `annals verify-proof --key` reads.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use annals_proof::PublicKey;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::AuditError;

/// Where the signing key of a data dir lives.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("checkpoint.ed25519")
}

/// The public key file beside a secret key file.
pub fn public_key_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// The log's checkpoint-signing key.
pub struct CheckpointKey {
    signing: SigningKey,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointKey(public {})", self.public_key().to_hex())
    }
}

fn key_error(path: &Path, detail: impl std::fmt::Display) -> AuditError {
    AuditError::Key {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

impl CheckpointKey {
    /// A key from its 32-byte secret seed (tests, or keys kept elsewhere).
    pub fn from_seed(seed: &[u8; 32]) -> CheckpointKey {
        CheckpointKey {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// A new random key.
    pub fn generate() -> CheckpointKey {
        CheckpointKey {
            signing: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<CheckpointKey, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|e| key_error(path, e))?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                key_error(
                    path,
                    "expected the 32-byte ed25519 secret seed as 64 hex digits",
                )
            })?;
        Ok(CheckpointKey::from_seed(&seed))
    }

    /// Reads the key at `path`, creating it (and its `.pub`) if there is none; `true` if created.
    pub fn load_or_create(path: &Path) -> Result<(CheckpointKey, bool), AuditError> {
        if path.exists() {
            return Ok((CheckpointKey::load(path)?, false));
        }
        let key = CheckpointKey::generate();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| key_error(dir, e))?;
        }
        // Written to a private temporary file, then linked into place: never a partial key, and
        // if another process created one meanwhile, theirs is kept and used.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{}", hex::encode(key.signing.to_bytes()))?;
            f.sync_all()
        };
        let written = write();
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        std::fs::remove_file(&tmp).ok();
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Ok((CheckpointKey::load(path)?, false));
            }
            Err(e) => return Err(key_error(path, e)),
        }
        key.write_public(&public_key_path(path))?;
        Ok((key, true))
    }

    /// Writes the public key as 64 hex digits and a newline (mode 0644).
    pub fn write_public(&self, path: &Path) -> Result<(), AuditError> {
        std::fs::write(path, format!("{}\n", self.public_key().to_hex()))
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)))
            .map_err(|e| key_error(path, e))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// The log identity checkpoints carry: the hex SHA-256 of the public key (as RFC 6962's
    /// LogID).
    pub fn log_id(&self) -> String {
        hex::encode(Sha256::digest(self.signing.verifying_key().as_bytes()))
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// The public key that checks a data dir's checkpoints: `keys/checkpoint.ed25519.pub`, else the
/// one derived from `keys/checkpoint.ed25519`; `None` if the data dir holds neither.
pub fn data_dir_public_key(data_dir: &Path) -> Result<Option<PublicKey>, AuditError> {
    public_key_of(&default_key_path(data_dir))
}

/// The public key of the signing key file `secret`: from its `.pub` beside it, else from the
/// secret key itself; `None` if neither exists.
pub fn public_key_of(secret: &Path) -> Result<Option<PublicKey>, AuditError> {
    let public = public_key_path(secret);
    if public.exists() {
        let text = std::fs::read_to_string(&public).map_err(|e| key_error(&public, e))?;
        return PublicKey::parse(&text)
            .map(Some)
            .map_err(|e| key_error(&public, e));
    }
    if secret.exists() {
        return Ok(Some(CheckpointKey::load(secret)?.public_key()));
    }
    Ok(None)
}
