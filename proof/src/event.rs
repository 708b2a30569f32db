//! An annals event as a proof carries it: its canonical envelope bytes, decoded just enough to
//! read the fields an auditor is shown, and its chain hash recomputed from them.
//!
//! The canonical bytes are the Avro binary encoding of the envelope v1
//! (`schemas/envelope/Envelope.v1.avsc` in the annals repository), in this field order:
//!
//! | field | Avro type |
//! | --- | --- |
//! | `event_id` | fixed 16 (a UUID) |
//! | `tenant`, `stream` | string |
//! | `stream_version` | long |
//! | `event_type` | string |
//! | `schema_id` | int |
//! | `occurred_at`, `recorded_at` | long (timestamp-micros) |
//! | `actor` | string |
//! | `causation_id`, `correlation_id` | union { null, string } |
//! | `payload` | bytes |
//! | `partition` | int |
//! | `seq` | long |
//! | `prev_hash`, `hash` | fixed 32 |
//!
//! The chain hash is
//! `SHA-256("annals.event.v1\0" ‖ partition u32 BE ‖ seq u64 BE ‖ prev_hash ‖ envelope bytes without the last 32)`:
//! the envelope without its own hash, which is its last field.

use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Domain-separation tag of the event hash (the same as annals' `events/src/chain.rs`).
pub const EVENT_HASH_TAG: &[u8] = b"annals.event.v1\0";

/// The chain hash of an event from its position, predecessor and bytes without the hash.
pub fn event_hash(partition: u32, seq: u64, prev_hash: &Hash, body_without_hash: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(EVENT_HASH_TAG);
    h.update(partition.to_be_bytes());
    h.update(seq.to_be_bytes());
    h.update(prev_hash);
    h.update(body_without_hash);
    h.finalize().into()
}

/// The envelope fields, read from canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFields {
    /// The UUID, lowercase and hyphenated.
    pub event_id: String,
    pub tenant: String,
    pub stream: String,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_id: i32,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub actor: String,
    pub causation_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Avro bytes of the payload, written with `schema_id` (possibly encrypted fields).
    pub payload: Vec<u8>,
    pub partition: u32,
    pub seq: u64,
    pub prev_hash: Hash,
    /// The hash stored in the envelope (its last 32 bytes).
    pub hash: Hash,
}

impl EventFields {
    /// Decodes canonical envelope bytes; every byte must belong to the envelope.
    pub fn decode(buf: &[u8]) -> Result<EventFields, String> {
        let mut c = Cursor { buf, pos: 0 };
        let id = c.fixed::<16>("event_id")?;
        let tenant = c.string("tenant")?;
        let stream = c.string("stream")?;
        let stream_version = c.nonneg("stream_version")?;
        let event_type = c.string("event_type")?;
        let schema_id = i32::try_from(c.long("schema_id")?)
            .map_err(|_| "schema_id: out of range for an int".to_string())?;
        let occurred_at = c.long("occurred_at")?;
        let recorded_at = c.long("recorded_at")?;
        let actor = c.string("actor")?;
        let causation_id = c.opt_string("causation_id")?;
        let correlation_id = c.opt_string("correlation_id")?;
        let payload = c.bytes("payload")?.to_vec();
        let partition = u32::try_from(c.long("partition")?)
            .map_err(|_| "partition: out of range".to_string())?;
        let seq = c.nonneg("seq")?;
        let prev_hash = c.fixed::<32>("prev_hash")?;
        let hash = c.fixed::<32>("hash")?;
        if c.pos != buf.len() {
            return Err(format!(
                "{} trailing bytes after the envelope",
                buf.len() - c.pos
            ));
        }
        Ok(EventFields {
            event_id: uuid_string(&id),
            tenant,
            stream,
            stream_version,
            event_type,
            schema_id,
            occurred_at,
            recorded_at,
            actor,
            causation_id,
            correlation_id,
            payload,
            partition,
            seq,
            prev_hash,
            hash,
        })
    }
}

/// Decodes `envelope` and recomputes its chain hash; the fields and the recomputed hash.
pub fn recompute(envelope: &[u8]) -> Result<(EventFields, Hash), String> {
    let fields = EventFields::decode(envelope)?;
    let body = &envelope[..envelope.len() - 32];
    let hash = event_hash(fields.partition, fields.seq, &fields.prev_hash, body);
    Ok((fields, hash))
}

/// A UUID as text: 8-4-4-4-12 lowercase hex digits.
pub fn uuid_string(id: &[u8; 16]) -> String {
    let h = hex::encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, field: &str, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("{field}: truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self, field: &str) -> Result<[u8; N], String> {
        Ok(self.take(field, N)?.try_into().expect("N bytes"))
    }

    /// An Avro long: zig-zag varint.
    fn long(&mut self, field: &str) -> Result<i64, String> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("{field}: truncated varint"))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(format!("{field}: varint overflows 64 bits"));
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(format!("{field}: varint too long"));
            }
        }
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn nonneg(&mut self, field: &str) -> Result<u64, String> {
        u64::try_from(self.long(field)?).map_err(|_| format!("{field}: negative"))
    }

    fn bytes(&mut self, field: &str) -> Result<&'a [u8], String> {
        let n = self.nonneg(field)?;
        let n = usize::try_from(n).map_err(|_| format!("{field}: length out of range"))?;
        self.take(field, n)
    }

    fn string(&mut self, field: &str) -> Result<String, String> {
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{field}: not UTF-8"))
    }

    fn opt_string(&mut self, field: &str) -> Result<Option<String>, String> {
        match self.long(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.string(field)?)),
            i => Err(format!(
                "{field}: union index {i} is neither null nor string"
            )),
        }
    }
}
