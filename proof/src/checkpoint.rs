//! Signed checkpoints and the public key that checks them.
//!
//! A checkpoint states "the tree of the first `tree_size` events of partition `partition` of
//! topic `topic` in log `log_id` has root `root_hash`, as of `timestamp`". The log signs, with
//! ed25519, exactly these bytes (UTF-8 text, every line ending in `\n`):
//!
//! ```text
//! annals-checkpoint-v1
//! <log_id>
//! <topic>
//! <partition, decimal>
//! <tree_size, decimal>
//! <root_hash, 64 lowercase hex digits>
//! <timestamp, decimal microseconds since the Unix epoch>
//! ```
//!
//! `log_id` and `topic` may not contain a line break, so the message reads back one way only.

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};

use crate::VerifyError;
use crate::json::{Fields, hex_lower};
use crate::merkle::Hash;

/// First line of the signed message: the format and its version.
pub const CHECKPOINT_HEADER: &str = "annals-checkpoint-v1";

/// A signed tree head of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (annals uses the hex SHA-256 of the signing public key).
    pub log_id: String,
    pub topic: String,
    pub partition: u32,
    /// Number of leaves (events, seq `0..tree_size`) the root covers.
    pub tree_size: u64,
    pub root_hash: Hash,
    /// When the checkpoint was made, microseconds since the Unix epoch.
    pub timestamp: i64,
    /// ed25519 signature of [`Checkpoint::message`].
    pub signature: [u8; 64],
}

/// The exact bytes a checkpoint's signature covers (see the module doc).
pub fn checkpoint_message(
    log_id: &str,
    topic: &str,
    partition: u32,
    tree_size: u64,
    root_hash: &Hash,
    timestamp: i64,
) -> Vec<u8> {
    format!(
        "{CHECKPOINT_HEADER}\n{log_id}\n{topic}\n{partition}\n{tree_size}\n{}\n{timestamp}\n",
        hex::encode(root_hash)
    )
    .into_bytes()
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(
            &self.log_id,
            &self.topic,
            self.partition,
            self.tree_size,
            &self.root_hash,
            self.timestamp,
        )
    }

    /// Checks the signature with the log's public key.
    pub fn verify_signature(&self, key: &PublicKey) -> Result<(), VerifyError> {
        for (name, v) in [("log_id", &self.log_id), ("topic", &self.topic)] {
            if v.contains(['\n', '\r']) {
                return Err(VerifyError::new(
                    "checkpoint",
                    format!("{name} contains a line break"),
                ));
            }
        }
        let sig = Signature::from_bytes(&self.signature);
        key.0.verify_strict(&self.message(), &sig).map_err(|_| {
            VerifyError::new(
                "checkpoint signature",
                format!(
                    "the checkpoint of {}/{} at tree size {} is not signed by this key",
                    self.topic, self.partition, self.tree_size
                ),
            )
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "log_id": self.log_id,
            "topic": self.topic,
            "partition": self.partition,
            "tree_size": self.tree_size,
            "root_hash": hex::encode(self.root_hash),
            "timestamp": self.timestamp,
            "signature": hex::encode(self.signature),
        })
    }

    /// Reads a checkpoint object; `at` names where it is in the document (for errors).
    pub fn from_json(v: &Value, at: &str) -> Result<Checkpoint, VerifyError> {
        let mut f = Fields::new(v, at)?;
        let c = Checkpoint {
            log_id: f.string("log_id")?,
            topic: f.string("topic")?,
            partition: f.u32("partition")?,
            tree_size: f.u64("tree_size")?,
            root_hash: f.hash("root_hash")?,
            timestamp: f.i64("timestamp")?,
            signature: f.array::<64>("signature")?,
        };
        f.finish()?;
        Ok(c)
    }
}

/// An ed25519 public key that checkpoints must be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub VerifyingKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, VerifyError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| VerifyError::new("key", "not a valid ed25519 public key"))
    }

    /// Reads a key file's text: the 32 key bytes as 64 hex digits or as base64 (44 characters),
    /// surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<PublicKey, VerifyError> {
        let t = text.trim();
        let bytes: Vec<u8> = if t.len() == 64 {
            hex::decode(t)
                .map_err(|_| VerifyError::new("key", "64 characters but not hex digits"))?
        } else {
            base64_decode(t).ok_or_else(|| {
                VerifyError::new(
                    "key",
                    "expected the 32-byte ed25519 public key as 64 hex digits or base64",
                )
            })?
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            VerifyError::new(
                "key",
                format!("{} bytes, an ed25519 public key has 32", b.len()),
            )
        })?;
        PublicKey::from_bytes(&bytes)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn to_hex(&self) -> String {
        hex_lower(&self.0.to_bytes())
    }
}

/// Standard base64 with padding (RFC 4648 §4); `None` if `s` is not exactly that.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.as_bytes();
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, chunk) in s.chunks(4).enumerate() {
        let last = i == s.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_reads_what_rfc_4648_writes() {
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9vYmE=").unwrap(), b"fooba");
        assert!(base64_decode("Zm9vY").is_none());
        assert!(base64_decode("Zm=vYmFy").is_none());
        assert!(base64_decode("").is_none());
    }

    #[test]
    fn the_signed_message_is_the_documented_text() {
        let m = checkpoint_message("log", "events", 3, 42, &[0xab; 32], 1_700_000_000_000_000);
        assert_eq!(
            String::from_utf8(m).unwrap(),
            format!(
                "annals-checkpoint-v1\nlog\nevents\n3\n42\n{}\n1700000000000000\n",
                "ab".repeat(32)
            )
        );
    }
}
