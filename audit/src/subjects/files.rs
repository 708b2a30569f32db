//! Subject keys as files of the data dir: `keys/subjects/<name>.key` (32 bytes, mode 0600,
//! written whole then linked into place) and, once erased, `<name>.erased`, where `<name>` is
//! [`key_name`] — a hash, so no file name reveals a tenant or subject id.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use super::{Key, erased_error, key_name};

/// The key files of one data dir.
#[derive(Debug, Clone)]
pub(super) struct FileKeys {
    dir: PathBuf,
}

impl FileKeys {
    pub(super) fn new(data_dir: &Path) -> FileKeys {
        FileKeys {
            dir: data_dir.join("keys").join("subjects"),
        }
    }

    pub(super) fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn path(&self, tenant: &str, subject: &str) -> PathBuf {
        self.dir.join(format!("{}.key", key_name(tenant, subject)))
    }

    /// The tombstone an erasure leaves: the subject can never get a key again.
    fn tombstone(&self, tenant: &str, subject: &str) -> PathBuf {
        self.dir
            .join(format!("{}.erased", key_name(tenant, subject)))
    }

    pub(super) fn erased(&self, tenant: &str, subject: &str) -> bool {
        self.tombstone(tenant, subject).exists()
    }

    pub(super) fn exists(&self, tenant: &str, subject: &str) -> bool {
        self.path(tenant, subject).exists()
    }

    pub(super) fn read(&self, tenant: &str, subject: &str) -> Result<Option<Key>, String> {
        if self.erased(tenant, subject) {
            return Ok(None);
        }
        let path = self.path(tenant, subject);
        match fs::read(&path) {
            Ok(bytes) => <Key>::try_from(bytes.as_slice())
                .map(Some)
                .map_err(|_| format!("subject key {} is damaged (not 32 bytes)", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read subject key {}: {e}", path.display())),
        }
    }

    pub(super) fn get_or_create(&self, tenant: &str, subject: &str) -> Result<Key, String> {
        if self.erased(tenant, subject) {
            return Err(erased_error(tenant, subject));
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
            key_name(tenant, subject),
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

    pub(super) fn erase(&self, tenant: &str, subject: &str) -> Result<bool, String> {
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
