//! The Avro schemas of annals' events and the registry that serves them.
//!
//! This crate owns:
//! - the schema files, one per event type and version, under `avro/<context>/<EventType>.v<N>.avsc`
//!   (event type `<context>.<EventType>`, Avro record `annals.<context>.<EventType>`), and the fixed
//!   log envelope `envelope/Envelope.v1.avsc` ([`ENVELOPE_V1_AVSC`]);
//! - the schema ids: `published.lock` assigns each published file a stable id and pins its sha256,
//!   so a published schema can never be edited unnoticed ([`Registry::builtin`] refuses);
//! - encoding payloads (Avro values or plain JSON) with the latest version of their type, and
//!   decoding them with the writer's schema resolved to the latest version (upcasting);
//! - compatibility checks: every older version must be readable by the latest ([`Registry::check`]).
//!
//! It must not do I/O besides reading its own embedded files (they are compiled in by `build.rs`),
//! and it knows nothing of the log: envelopes, streams, partitions and hashing belong elsewhere.

mod json;
pub mod personal;
mod sample;

use std::collections::{BTreeMap, HashMap};

use apache_avro::{
    Schema, reader::datum::GenericDatumReader, schema_compatibility::SchemaCompatibility,
    types::Value, writer::datum::GenericDatumWriter,
};
use sha2::{Digest, Sha256};

pub use apache_avro;
pub use sample::sample_datum;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// The fixed envelope of every record of the annals log (hand-encoded by the log crate).
pub const ENVELOPE_V1_AVSC: &str = include_str!("../envelope/Envelope.v1.avsc");

/// Name of the lock file, relative to the crate, as used in error messages.
const LOCK_PATH: &str = "schemas/published.lock";

/// Stable id of a published schema (the `schema_id` of the envelope).
pub type SchemaId = i32;

/// One published schema: a version of an event type.
#[derive(Debug, Clone)]
pub struct SchemaInfo {
    pub id: SchemaId,
    /// Full event type name, `<context>.<EventType>`.
    pub event_type: String,
    pub version: u32,
    /// Path relative to the crate, e.g. `avro/ingest/SignalIngested.v1.avsc`.
    pub path: String,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    pub schema: Schema,
    /// Fields holding personal data, sealed under their subject's key.
    pub personal: personal::PersonalFields,
}

/// Result of checking that an older version of a type can be read by its latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub event_type: String,
    pub writer_version: u32,
    pub reader_version: u32,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "unknown event type `{0}`: no published schema defines it; add avro/<context>/<EventType>.v1.avsc and publish it in {LOCK_PATH}"
    )]
    UnknownEventType(String),
    #[error(
        "unknown schema id {0}: it is not in {LOCK_PATH}; the payload was written by a newer annals (upgrade) or its schema_id is corrupt"
    )]
    UnknownSchemaId(i32),
    #[error(
        "invalid `{event_type}` payload: {detail}; make the payload match the latest schema of `{event_type}`"
    )]
    Invalid { event_type: String, detail: String },
    #[error(
        "cannot decode a payload written with schema id {schema_id}: {detail}; the bytes do not match that schema (corrupt record or wrong schema_id)"
    )]
    Decode { schema_id: i32, detail: String },
    #[error(
        "schema file {path} is not published: append this line to {LOCK_PATH}: `{line_to_add}`"
    )]
    Unpublished { path: String, line_to_add: String },
    #[error(
        "schema file {path} changed after it was published (sha256 {expected} in {LOCK_PATH}, the file has {found}): published schemas are never edited; revert the file and add a new version file instead"
    )]
    Changed {
        path: String,
        expected: String,
        found: String,
    },
    #[error(
        "{LOCK_PATH} publishes {path} but the file is missing: published schemas are never deleted or renamed; restore the file"
    )]
    MissingFile { path: String },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: String, detail: String },
}

/// The published schemas, by id and by event type.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Sorted by id.
    schemas: Vec<SchemaInfo>,
    by_id: HashMap<SchemaId, usize>,
    /// Event type -> index of its latest version.
    latest: BTreeMap<String, usize>,
    /// Seals and opens personal fields; without one, personal data cannot be written and reads
    /// show it as sealed.
    sealer: Option<std::sync::Arc<dyn personal::Sealer>>,
}

/// One line of `published.lock`.
struct LockEntry {
    id: SchemaId,
    event_type: String,
    version: u32,
    sha256: String,
}

fn lock_error(line_no: usize, detail: impl std::fmt::Display) -> SchemaError {
    SchemaError::Parse {
        path: LOCK_PATH.to_string(),
        detail: format!(
            "line {line_no}: {detail} (expected `<schema_id> <context>.<EventType> v<version> sha256:<hex>`)"
        ),
    }
}

fn parse_lock(lock: &str) -> Result<Vec<LockEntry>, SchemaError> {
    let mut entries: Vec<LockEntry> = Vec::new();
    for (i, line) in lock.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [id, event_type, version, sha] = parts[..] else {
            return Err(lock_error(line_no, "expected 4 fields"));
        };
        let id: SchemaId = id
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| lock_error(line_no, format!("bad schema id `{id}`")))?;
        if split_event_type(event_type).is_none() {
            return Err(lock_error(
                line_no,
                format!("bad event type `{event_type}`"),
            ));
        }
        let version: u32 = version
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| lock_error(line_no, format!("bad version `{version}`")))?;
        let sha256 = sha
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| lock_error(line_no, format!("bad hash `{sha}`")))?
            .to_ascii_lowercase();
        if entries.iter().any(|e| e.id == id) {
            return Err(lock_error(line_no, format!("schema id {id} is used twice")));
        }
        if entries
            .iter()
            .any(|e| e.event_type == event_type && e.version == version)
        {
            return Err(lock_error(
                line_no,
                format!("{event_type} v{version} is published twice"),
            ));
        }
        entries.push(LockEntry {
            id,
            event_type: event_type.to_string(),
            version,
            sha256,
        });
    }
    Ok(entries)
}

/// `tenancy.TenantProvisioned` -> (`tenancy`, `TenantProvisioned`).
fn split_event_type(event_type: &str) -> Option<(&str, &str)> {
    let (context, name) = event_type.split_once('.')?;
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (ident(context) && ident(name)).then_some((context, name))
}

/// The file of an event type's version, relative to the crate.
fn schema_path(event_type: &str, version: u32) -> String {
    let (context, name) = split_event_type(event_type).unwrap_or(("?", event_type));
    format!("avro/{context}/{name}.v{version}.avsc")
}

/// `avro/<context>/<EventType>.v<N>.avsc` -> (`<context>.<EventType>`, N).
fn parse_schema_path(path: &str) -> Option<(String, u32)> {
    let rest = path.strip_prefix("avro/")?.strip_suffix(".avsc")?;
    let (context, file) = rest.split_once('/')?;
    let (name, version) = file.rsplit_once(".v")?;
    let version: u32 = version.parse().ok().filter(|v| *v > 0)?;
    let event_type = format!("{context}.{name}");
    split_event_type(&event_type)?;
    // Reject non-canonical spellings such as `v01`.
    (schema_path(&event_type, version) == path).then_some((event_type, version))
}

/// Avro binary encoding of `value`, validated against `schema`.
fn to_avro_datum(schema: &Schema, value: Value) -> Result<Vec<u8>, apache_avro::Error> {
    GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)
}

/// Decodes one datum written with `writer` from the front of `input`, resolved to `reader` if given.
fn from_avro_datum(
    writer: &Schema,
    input: &mut &[u8],
    reader: Option<&Schema>,
) -> Result<Value, apache_avro::Error> {
    GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()?
        .read_value(input)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Registry {
    /// The registry of the schema files embedded in this crate, checked against `published.lock`.
    pub fn builtin() -> Result<Registry, SchemaError> {
        let files: Vec<(String, String)> = EMBEDDED_SCHEMAS
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect();
        Self::from_sources(&files, EMBEDDED_LOCK)
    }

    /// A registry of `files` (path relative to the crate, e.g. `avro/ingest/SignalIngested.v1.avsc`,
    /// and contents) checked against the text of a `published.lock`.
    ///
    /// Fails if the lock names a missing file, a file's hash differs from the lock, or a file is not
    /// in the lock (the error carries the line to append).
    pub fn from_sources(files: &[(String, String)], lock: &str) -> Result<Registry, SchemaError> {
        let entries = parse_lock(lock)?;
        let mut files: Vec<&(String, String)> = files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));

        // Every published schema must still be there.
        for entry in &entries {
            let path = schema_path(&entry.event_type, entry.version);
            if !files.iter().any(|(p, _)| *p == path) {
                return Err(SchemaError::MissingFile { path });
            }
        }

        let next_id = entries.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let mut unpublished = None;
        let mut schemas = Vec::with_capacity(entries.len());
        for (path, text) in files {
            let (event_type, version) =
                parse_schema_path(path).ok_or_else(|| SchemaError::Parse {
                    path: path.clone(),
                    detail: "a schema file must be named avro/<context>/<EventType>.v<N>.avsc (N from 1)"
                        .to_string(),
                })?;
            let found = sha256_hex(text.as_bytes());
            let Some(entry) = entries
                .iter()
                .find(|e| e.event_type == event_type && e.version == version)
            else {
                // Report the first unpublished file once every published one is known to be intact,
                // and only offer to publish a file that parses.
                parse_event_schema(path, text, &event_type)?;
                if unpublished.is_none() {
                    unpublished = Some(SchemaError::Unpublished {
                        path: path.clone(),
                        line_to_add: format!("{next_id} {event_type} v{version} sha256:{found}"),
                    });
                }
                continue;
            };
            if entry.sha256 != found {
                return Err(SchemaError::Changed {
                    path: path.clone(),
                    expected: entry.sha256.clone(),
                    found,
                });
            }
            let schema = parse_event_schema(path, text, &event_type)?;
            let personal = personal::PersonalFields::from_schema_text(text).map_err(|detail| {
                SchemaError::Parse {
                    path: path.clone(),
                    detail,
                }
            })?;
            schemas.push(SchemaInfo {
                id: entry.id,
                event_type,
                version,
                path: path.clone(),
                sha256: found,
                schema,
                personal,
            });
        }
        if let Some(err) = unpublished {
            return Err(err);
        }

        schemas.sort_by_key(|s| s.id);
        let by_id = schemas.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let mut latest: BTreeMap<String, usize> = BTreeMap::new();
        for (i, s) in schemas.iter().enumerate() {
            let slot = latest.entry(s.event_type.clone()).or_insert(i);
            if schemas[*slot].version < s.version {
                *slot = i;
            }
        }
        Ok(Registry {
            schemas,
            by_id,
            latest,
            sealer: None,
        })
    }

    /// The same registry, sealing and opening personal fields with `sealer`.
    pub fn with_sealer(mut self, sealer: std::sync::Arc<dyn personal::Sealer>) -> Registry {
        self.sealer = Some(sealer);
        self
    }

    /// Every published schema, sorted by id.
    pub fn all(&self) -> &[SchemaInfo] {
        &self.schemas
    }

    pub fn get(&self, id: SchemaId) -> Option<&SchemaInfo> {
        self.by_id.get(&id).map(|&i| &self.schemas[i])
    }

    /// The highest version of `event_type`.
    pub fn latest(&self, event_type: &str) -> Option<&SchemaInfo> {
        self.latest.get(event_type).map(|&i| &self.schemas[i])
    }

    fn latest_or_err(&self, event_type: &str) -> Result<&SchemaInfo, SchemaError> {
        self.latest(event_type)
            .ok_or_else(|| SchemaError::UnknownEventType(event_type.to_string()))
    }

    /// Encodes a plain-JSON payload with the latest version of `event_type`.
    ///
    /// Unions are plain JSON (`null` or the value, not Avro's `{"type": value}`); fields with a
    /// default may be omitted; unknown fields are refused. Errors name the offending field.
    pub fn encode_json(
        &self,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<(SchemaId, Vec<u8>), SchemaError> {
        let info = self.latest_or_err(event_type)?;
        let invalid = |detail: String| SchemaError::Invalid {
            event_type: event_type.to_string(),
            detail,
        };
        let sealed;
        let payload = if info.personal.is_empty() {
            payload
        } else {
            let mut p = payload.clone();
            info.personal
                .seal(&mut p, self.sealer.as_deref())
                .map_err(invalid)?;
            sealed = p;
            &sealed
        };
        let value = json::json_to_avro(&info.schema, payload).map_err(invalid)?;
        let bytes = to_avro_datum(&info.schema, value).map_err(|e| invalid(e.to_string()))?;
        Ok((info.id, bytes))
    }

    /// Encodes an Avro value with the latest version of `event_type` (resolving it first, so e.g.
    /// missing fields with defaults are filled in).
    pub fn encode(
        &self,
        event_type: &str,
        value: Value,
    ) -> Result<(SchemaId, Vec<u8>), SchemaError> {
        let info = self.latest_or_err(event_type)?;
        let invalid = |detail: String| SchemaError::Invalid {
            event_type: event_type.to_string(),
            detail,
        };
        // The JSON path gives errors that name the field; use it to explain a failure.
        let explain = |value: &Value, err: String| {
            serde_json::Value::try_from(value.clone())
                .ok()
                .and_then(|json| json::json_to_avro(&info.schema, &json).err())
                .unwrap_or(err)
        };
        let resolved = value
            .clone()
            .resolve(&info.schema)
            .map_err(|e| invalid(explain(&value, e.to_string())))?;
        let bytes = to_avro_datum(&info.schema, resolved)
            .map_err(|e| invalid(explain(&value, e.to_string())))?;
        Ok((info.id, bytes))
    }

    /// Decodes a payload written with schema `id`, resolved to the latest version of its type.
    pub fn decode(&self, id: SchemaId, bytes: &[u8]) -> Result<Value, SchemaError> {
        let writer = self.get(id).ok_or(SchemaError::UnknownSchemaId(id))?;
        let reader = self.latest_or_err(&writer.event_type)?;
        let reader_schema = (reader.id != writer.id).then_some(&reader.schema);
        let mut input = bytes;
        let value = from_avro_datum(&writer.schema, &mut input, reader_schema).map_err(|e| {
            SchemaError::Decode {
                schema_id: id,
                detail: e.to_string(),
            }
        })?;
        if !input.is_empty() {
            return Err(SchemaError::Decode {
                schema_id: id,
                detail: format!("{} trailing bytes after the datum", input.len()),
            });
        }
        Ok(value)
    }

    /// [`Registry::decode`] into plain JSON (unions unwrapped, timestamps as integers).
    pub fn decode_json(
        &self,
        id: SchemaId,
        bytes: &[u8],
    ) -> Result<serde_json::Value, SchemaError> {
        let value = self.decode(id, bytes)?;
        let mut json = serde_json::Value::try_from(value).map_err(|e| SchemaError::Decode {
            schema_id: id,
            detail: format!("cannot express the decoded value as JSON: {e}"),
        })?;
        // Personal fields as the latest version of the type marks them (payloads are resolved
        // to it).
        let writer = self.get(id).ok_or(SchemaError::UnknownSchemaId(id))?;
        let latest = self.latest_or_err(&writer.event_type)?;
        latest
            .personal
            .open(&mut json, self.sealer.as_deref())
            .map_err(|detail| SchemaError::Decode {
                schema_id: id,
                detail: format!("cannot open a personal field: {detail}"),
            })?;
        Ok(json)
    }

    /// For every event type, checks every older version against the latest: the schemas must be
    /// compatible (the latest can read the older) and a sample datum of the older version must
    /// round-trip (encoded with it, decoded resolved to the latest).
    pub fn check(&self) -> Vec<CheckResult> {
        let mut results = Vec::new();
        for &latest_idx in self.latest.values() {
            let latest = &self.schemas[latest_idx];
            let mut older: Vec<&SchemaInfo> = self
                .schemas
                .iter()
                .filter(|s| s.event_type == latest.event_type && s.version < latest.version)
                .collect();
            older.sort_by_key(|s| s.version);
            for writer in older {
                let outcome = check_pair(writer, latest);
                results.push(CheckResult {
                    event_type: latest.event_type.clone(),
                    writer_version: writer.version,
                    reader_version: latest.version,
                    ok: outcome.is_ok(),
                    detail: outcome.unwrap_or_else(|e| e),
                });
            }
        }
        results
    }
}

fn check_pair(writer: &SchemaInfo, reader: &SchemaInfo) -> Result<String, String> {
    let compat = SchemaCompatibility::can_read(&writer.schema, &reader.schema)
        .map_err(|e| format!("v{} cannot read v{}: {e}", reader.version, writer.version))?;
    let sample = sample_datum(&writer.schema);
    let bytes = to_avro_datum(&writer.schema, sample)
        .map_err(|e| format!("sample of v{} does not encode: {e}", writer.version))?;
    let mut input = &bytes[..];
    let value = from_avro_datum(&writer.schema, &mut input, Some(&reader.schema)).map_err(|e| {
        format!(
            "sample of v{} does not resolve to v{}: {e}",
            writer.version, reader.version
        )
    })?;
    if !input.is_empty() || !value.validate(&reader.schema) {
        return Err(format!(
            "sample of v{} resolved to a value that is not valid v{}",
            writer.version, reader.version
        ));
    }
    Ok(format!(
        "v{} reads v{} ({compat:?} compatibility); sample round trip ok",
        reader.version, writer.version
    ))
}

fn parse_event_schema(path: &str, text: &str, event_type: &str) -> Result<Schema, SchemaError> {
    let parse_err = |detail: String| SchemaError::Parse {
        path: path.to_string(),
        detail,
    };
    let schema = Schema::parse_str(text).map_err(|e| parse_err(e.to_string()))?;
    let expected = format!("annals.{event_type}");
    match &schema {
        Schema::Record(record) if record.name.fullname(None) == expected => Ok(schema),
        Schema::Record(record) => Err(parse_err(format!(
            "the record is named `{}` but its path says `{expected}`",
            record.name.fullname(None)
        ))),
        _ => Err(parse_err(format!(
            "an event schema must be a record named `{expected}`"
        ))),
    }
}
