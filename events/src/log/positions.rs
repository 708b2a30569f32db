//! Durable named consumer positions: `positions/<name>.json`, replaced atomically.

use std::collections::BTreeMap;
use std::path::Path;

use super::embedded::partition::{sync_dir, write_atomically};
use super::{LogError, check_name};

pub fn load(topic_dir: &Path, name: &str) -> Result<BTreeMap<u32, u64>, LogError> {
    check_name(name)?;
    let path = topic_dir.join("positions").join(format!("{name}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LogError::Io {
            context: format!("consumer position file {} is not valid", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(LogError::Io {
            context: format!("cannot read {}", path.display()),
            source: e,
        }),
    }
}

pub fn store(topic_dir: &Path, name: &str, position: &BTreeMap<u32, u64>) -> Result<(), LogError> {
    check_name(name)?;
    let dir = topic_dir.join("positions");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir)
            .map_err(LogError::io(format!("cannot create {}", dir.display())))?;
        sync_dir(topic_dir)?;
    }
    let bytes = serde_json::to_vec(position).expect("serialisable");
    write_atomically(&dir.join(format!("{name}.json")), &bytes)
}
