//! Event envelope v1 and its canonical byte encoding.
//!
//! The canonical bytes are the Avro binary encoding of `schemas/envelope/Envelope.v1.avsc`.
//! Its last field is `hash`, a fixed 32 bytes, so "the envelope without its hash" — what the
//! hash chain covers — is simply the encoding minus its last 32 bytes.

use crate::avro::{Cursor, DecodeError, put_bytes, put_long, put_opt_str};
use crate::chain::{self, Hash};
use std::sync::Arc;

use uuid::Uuid;

/// Largest payload a single event may carry.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
const MAX_NAME_BYTES: usize = 512;

/// An event as a command produced it, before the log gives it a position.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// The text fields are shared (`Arc<str>`): the events of one command, or of one batch, carry the
/// same tenant, stream, type and actor, and cloning them must not allocate.
pub struct NewEvent {
    pub event_id: Uuid,
    pub tenant: Arc<str>,
    /// Aggregate type and id, `<type>/<id>`.
    pub stream: Arc<str>,
    /// 1-based version of the stream this event brings it to.
    pub stream_version: u64,
    pub event_type: Arc<str>,
    pub schema_id: i32,
    /// Microseconds since the Unix epoch, from the command.
    pub occurred_at: i64,
    pub actor: Arc<str>,
    pub causation_id: Option<Arc<str>>,
    pub correlation_id: Option<Arc<str>>,
    /// Avro binary written with `schema_id`.
    pub payload: Vec<u8>,
}

/// What is wrong with an event handed to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: field `{field}` {problem}")]
pub struct InvalidEvent {
    pub field: &'static str,
    pub problem: String,
}

impl NewEvent {
    /// Checks the limits the log enforces, so a bad event is refused before anything is written.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let name = |field: &'static str, v: &str, required: bool| {
            if required && v.is_empty() {
                return Err(InvalidEvent {
                    field,
                    problem: "must not be empty".into(),
                });
            }
            if v.len() > MAX_NAME_BYTES {
                return Err(InvalidEvent {
                    field,
                    problem: format!("is {} bytes, the limit is {MAX_NAME_BYTES}", v.len()),
                });
            }
            Ok(())
        };
        name("tenant", &self.tenant, true)?;
        name("stream", &self.stream, true)?;
        name("event_type", &self.event_type, true)?;
        name("actor", &self.actor, false)?;
        name(
            "causation_id",
            self.causation_id.as_deref().unwrap_or(""),
            false,
        )?;
        name(
            "correlation_id",
            self.correlation_id.as_deref().unwrap_or(""),
            false,
        )?;
        if self.stream_version == 0 || self.stream_version > i64::MAX as u64 {
            return Err(InvalidEvent {
                field: "stream_version",
                problem: "must be 1 or more (versions are 1-based)".into(),
            });
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(InvalidEvent {
                field: "payload",
                problem: format!(
                    "is {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
                    self.payload.len()
                ),
            });
        }
        Ok(())
    }

    /// A borrowed envelope view of this event at the position the writer assigned.
    pub fn at<'a>(
        &'a self,
        recorded_at: i64,
        partition: u32,
        seq: u64,
        prev_hash: &'a Hash,
    ) -> EnvelopeRef<'a> {
        EnvelopeRef {
            event_id: *self.event_id.as_bytes(),
            tenant: &self.tenant,
            stream: &self.stream,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_id: self.schema_id,
            occurred_at: self.occurred_at,
            recorded_at,
            actor: &self.actor,
            causation_id: self.causation_id.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            payload: &self.payload,
            partition,
            seq,
            prev_hash,
            hash: &chain::GENESIS,
        }
    }
}

/// A stored event, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event_id: Uuid,
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
    pub payload: Vec<u8>,
    pub partition: u32,
    pub seq: u64,
    pub prev_hash: Hash,
    pub hash: Hash,
}

/// A stored event borrowed from a read buffer (no copies on the verify and read paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeRef<'a> {
    pub event_id: [u8; 16],
    pub tenant: &'a str,
    pub stream: &'a str,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub schema_id: i32,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub actor: &'a str,
    pub causation_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub payload: &'a [u8],
    pub partition: u32,
    pub seq: u64,
    pub prev_hash: &'a Hash,
    pub hash: &'a Hash,
}

impl<'a> EnvelopeRef<'a> {
    /// Appends the canonical encoding of every field but `hash` (what the chain hash covers).
    pub fn encode_without_hash(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.event_id);
        put_bytes(out, self.tenant.as_bytes());
        put_bytes(out, self.stream.as_bytes());
        put_long(out, self.stream_version as i64);
        put_bytes(out, self.event_type.as_bytes());
        put_long(out, i64::from(self.schema_id));
        put_long(out, self.occurred_at);
        put_long(out, self.recorded_at);
        put_bytes(out, self.actor.as_bytes());
        put_opt_str(out, self.causation_id);
        put_opt_str(out, self.correlation_id);
        put_bytes(out, self.payload);
        put_long(out, i64::from(self.partition));
        put_long(out, self.seq as i64);
        out.extend_from_slice(self.prev_hash);
    }

    /// Appends the full canonical encoding, `hash` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_without_hash(out);
        out.extend_from_slice(self.hash);
    }

    /// Decodes canonical bytes. Every byte must belong to the envelope.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf);
        let event_id: [u8; 16] = c.fixed("event_id", 16)?.try_into().expect("16 bytes");
        let tenant = c.str("tenant")?;
        let stream = c.str("stream")?;
        let stream_version = nonneg(c.long("stream_version")?, "stream_version")?;
        let event_type = c.str("event_type")?;
        let schema_id = c.int("schema_id")?;
        let occurred_at = c.long("occurred_at")?;
        let recorded_at = c.long("recorded_at")?;
        let actor = c.str("actor")?;
        let causation_id = c.opt_str("causation_id")?;
        let correlation_id = c.opt_str("correlation_id")?;
        let payload = c.bytes("payload")?;
        let partition = u32::try_from(c.int("partition")?).map_err(|_| DecodeError {
            field: "partition",
            problem: "negative",
        })?;
        let seq = nonneg(c.long("seq")?, "seq")?;
        let prev_hash = c.fixed("prev_hash", 32)?.try_into().expect("32 bytes");
        let hash = c.fixed("hash", 32)?.try_into().expect("32 bytes");
        if !c.is_empty() {
            return Err(DecodeError {
                field: "hash",
                problem: "trailing bytes after the envelope",
            });
        }
        Ok(EnvelopeRef {
            event_id,
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

    pub fn to_owned(&self) -> Envelope {
        Envelope {
            event_id: Uuid::from_bytes(self.event_id),
            tenant: self.tenant.to_owned(),
            stream: self.stream.to_owned(),
            stream_version: self.stream_version,
            event_type: self.event_type.to_owned(),
            schema_id: self.schema_id,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            actor: self.actor.to_owned(),
            causation_id: self.causation_id.map(str::to_owned),
            correlation_id: self.correlation_id.map(str::to_owned),
            payload: self.payload.to_vec(),
            partition: self.partition,
            seq: self.seq,
            prev_hash: *self.prev_hash,
            hash: *self.hash,
        }
    }
}

/// The event type of an envelope's canonical bytes (with or without the hash), read without
/// decoding the rest; `None` if the bytes do not get that far.
pub fn event_type_of(buf: &[u8]) -> Option<&[u8]> {
    let mut c = Cursor::new(buf);
    c.fixed("event_id", 16).ok()?;
    c.skip_bytes("tenant").ok()?;
    c.skip_bytes("stream").ok()?;
    c.long("stream_version").ok()?;
    c.bytes("event_type").ok()
}

/// The fields the chain and the index need, read without validating or copying the rest:
/// what `verify` reads per record (the hash covers every other byte anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainFields<'a> {
    pub recorded_at: i64,
    pub partition: u32,
    pub seq: u64,
    pub prev_hash: &'a Hash,
    pub hash: &'a Hash,
}

impl<'a> ChainFields<'a> {
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf);
        c.fixed("event_id", 16)?;
        c.skip_bytes("tenant")?;
        c.skip_bytes("stream")?;
        c.long("stream_version")?;
        c.skip_bytes("event_type")?;
        c.long("schema_id")?;
        c.long("occurred_at")?;
        let recorded_at = c.long("recorded_at")?;
        c.skip_bytes("actor")?;
        for field in ["causation_id", "correlation_id"] {
            match c.long(field)? {
                0 => {}
                1 => c.skip_bytes(field)?,
                _ => {
                    return Err(DecodeError {
                        field,
                        problem: "bad union branch",
                    });
                }
            }
        }
        c.skip_bytes("payload")?;
        let partition = u32::try_from(c.int("partition")?).map_err(|_| DecodeError {
            field: "partition",
            problem: "negative",
        })?;
        let seq = nonneg(c.long("seq")?, "seq")?;
        let prev_hash = c.fixed("prev_hash", 32)?.try_into().expect("32 bytes");
        let hash = c.fixed("hash", 32)?.try_into().expect("32 bytes");
        if !c.is_empty() {
            return Err(DecodeError {
                field: "hash",
                problem: "trailing bytes after the envelope",
            });
        }
        Ok(ChainFields {
            recorded_at,
            partition,
            seq,
            prev_hash,
            hash,
        })
    }
}

impl Envelope {
    pub fn as_ref(&self) -> EnvelopeRef<'_> {
        EnvelopeRef {
            event_id: *self.event_id.as_bytes(),
            tenant: &self.tenant,
            stream: &self.stream,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_id: self.schema_id,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            actor: &self.actor,
            causation_id: self.causation_id.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            payload: &self.payload,
            partition: self.partition,
            seq: self.seq,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
    }

    /// The envelope fields as JSON (payload as given, since decoding it needs the schema registry).
    pub fn to_json(&self, payload: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "event_id": self.event_id.to_string(),
            "tenant": self.tenant,
            "stream": self.stream,
            "stream_version": self.stream_version,
            "event_type": self.event_type,
            "schema_id": self.schema_id,
            "occurred_at": crate::time::format_micros(self.occurred_at),
            "recorded_at": crate::time::format_micros(self.recorded_at),
            "actor": self.actor,
            "causation_id": self.causation_id,
            "correlation_id": self.correlation_id,
            "partition": self.partition,
            "seq": self.seq,
            "prev_hash": hex::encode(self.prev_hash),
            "hash": hex::encode(self.hash),
            "payload": payload,
        })
    }
}

fn nonneg(v: i64, field: &'static str) -> Result<u64, DecodeError> {
    u64::try_from(v).map_err(|_| DecodeError {
        field,
        problem: "negative",
    })
}
