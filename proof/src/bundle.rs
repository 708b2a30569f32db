//! Evidence bundles: one tenant's events of a period, each with its inclusion proof, the signed
//! checkpoints the proofs lead to and the public key, in one ustar archive an auditor checks
//! offline (`annals verify-proof --bundle bundle.tar --key KEY`).
//!
//! Members (regular files, paths relative, no directories needed):
//!
//! | path | what |
//! | --- | --- |
//! | `manifest.json` | tenant, period, topic, partition, log id, counts, the seqs, and the SHA-256 of every other member but `manifest.sig` |
//! | `manifest.sig` | the log key's ed25519 signature of `manifest.json` (see [`manifest_message`]), 128 hex digits |
//! | `README.md` | for the auditor: what is inside, how to check it |
//! | `public.key` | the log's ed25519 public key, 64 hex digits |
//! | `checkpoints/<partition>-<tree_size>.json` | each signed checkpoint a proof leads to |
//! | `events/<seq>.json` | an event: its readable fields, its canonical envelope bytes (hex), its payload decoded |
//! | `proofs/<seq>.json` | its inclusion proof, the document `annals verify-proof FILE` reads |
//!
//! [`verify_bundle`] checks, in this order, and stops at the first failure, naming the member:
//! the archive; the manifest; that the members are exactly those the manifest lists (and its
//! signature), with its SHA-256s; the public key; the manifest's signature; every checkpoint's
//! name, partition and signature; every event file against its envelope bytes (hash, tenant,
//! period, partition, seq, every readable field); every proof against its checkpoint and the
//! key, and that it is about that event.
//!
//! The manifest is signed with the log's checkpoint key, over `annals-evidence-manifest-v1\n`
//! followed by the exact bytes of `manifest.json`. The checkpoints prove each listed event is
//! in the log; the signature makes the list itself — the tenant, the period and which events
//! are in it — the key holder's statement, so a bundle with an event left out, added or
//! swapped no longer verifies, and nobody without the key can make one that does. What it
//! cannot show is that the key holder listed every event; checking that needs the partition.
//!
//! Bundles of format `annals-evidence-v1`, written before manifests were signed, carry no
//! `manifest.sig`. [`verify_bundle`] refuses them; [`verify_bundle_with`] and
//! [`Unsigned::Accept`] check everything else in them and report `manifest_signed: false`, for
//! the tool to warn that completeness is not shown. A `v2` manifest without its signature is
//! always refused: the signature was removed.
//!
//! The decoded `payload` of an event file is for reading; the payload the proof covers is
//! inside `envelope_hex`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use ed25519_dalek::Signature;

use crate::VerifyError;
use crate::checkpoint::{Checkpoint, PublicKey};
use crate::event::{EventFields, recompute};
use crate::json::{Fields, hex_lower, parse_hex};
use crate::merkle::Hash;
use crate::proof::InclusionProof;

/// `format` of the manifest: signed, with `manifest.sig`.
pub const BUNDLE_FORMAT: &str = "annals-evidence-v2";
/// `format` of bundles written before manifests were signed (no `manifest.sig`).
pub const UNSIGNED_BUNDLE_FORMAT: &str = "annals-evidence-v1";
/// What the period bounds: the log's own clock when it stored each event.
pub const PERIOD_FIELD: &str = "recorded_at";
pub const MANIFEST: &str = "manifest.json";
/// The manifest's signature: 128 lowercase hex digits and a newline.
pub const MANIFEST_SIGNATURE: &str = "manifest.sig";
/// What the manifest's signature covers comes after this line, so it can never be taken for
/// a checkpoint's (`annals-checkpoint-v1\n…`) or any other message signed with the log's key.
pub const MANIFEST_SIGNATURE_CONTEXT: &[u8] = b"annals-evidence-manifest-v1\n";
pub const README: &str = "README.md";
pub const PUBLIC_KEY: &str = "public.key";
/// How the archive itself is named in errors about its structure.
pub const ARCHIVE: &str = "(archive)";

/// The exact bytes the manifest's signature covers: [`MANIFEST_SIGNATURE_CONTEXT`] followed by
/// the bytes of `manifest.json` as they are in the archive.
pub fn manifest_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MANIFEST_SIGNATURE_CONTEXT.len() + manifest.len());
    m.extend_from_slice(MANIFEST_SIGNATURE_CONTEXT);
    m.extend_from_slice(manifest);
    m
}

/// The text of `manifest.sig` for a signature.
pub fn signature_file(signature: &[u8; 64]) -> Vec<u8> {
    format!("{}\n", hex_lower(signature)).into_bytes()
}

/// Checks `manifest.sig` (the member's bytes) over `manifest` (the bytes of `manifest.json`).
pub fn verify_manifest_signature(
    manifest: &[u8],
    signature: &[u8],
    key: &PublicKey,
) -> Result<(), VerifyError> {
    let what = "manifest signature";
    let sig: [u8; 64] = std::str::from_utf8(signature)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .filter(|h| h.len() == 128)
        .and_then(parse_hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            VerifyError::new(
                what,
                "expected an ed25519 signature as 128 lowercase hex digits and a newline",
            )
        })?;
    key.0
        .verify_strict(&manifest_message(manifest), &Signature::from_bytes(&sig))
        .map_err(|_| {
            VerifyError::new(
                what,
                "it is not the log key's signature of manifest.json: the manifest or its signature was altered, or another key signed it",
            )
        })
}

/// What [`verify_bundle_with`] does with a bundle of the unsigned format
/// ([`UNSIGNED_BUNDLE_FORMAT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsigned {
    /// Refuse it (what [`verify_bundle`] does).
    Reject,
    /// Check everything else and report `manifest_signed: false`.
    Accept,
}

pub fn event_path(seq: u64) -> String {
    format!("events/{seq}.json")
}

pub fn proof_path(seq: u64) -> String {
    format!("proofs/{seq}.json")
}

pub fn checkpoint_path(partition: u32, tree_size: u64) -> String {
    format!("checkpoints/{partition}-{tree_size}.json")
}

/// `2026-11-22T07:28:12.123456Z` from microseconds since the Unix epoch (UTC, proleptic
/// Gregorian; Howard Hinnant's civil-from-days).
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The bundle's table of contents (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Whether the manifest is of the signed format ([`BUNDLE_FORMAT`], with `manifest.sig`);
    /// `false` only for bundles of [`UNSIGNED_BUNDLE_FORMAT`].
    pub signed: bool,
    pub tenant: String,
    pub topic: String,
    pub partition: u32,
    /// The period, `from <= recorded_at < to`, microseconds since the Unix epoch.
    pub from: i64,
    pub to: i64,
    /// The log's identity: hex SHA-256 of the public key.
    pub log_id: String,
    /// The events' seqs, ascending.
    pub events: Vec<u64>,
    /// The checkpoint members, e.g. `checkpoints/3-120.json`.
    pub checkpoints: Vec<String>,
    /// SHA-256 of every member but the manifest and its signature.
    pub files: BTreeMap<String, Hash>,
}

impl Manifest {
    pub fn to_json(&self) -> Value {
        let files: Map<String, Value> = self
            .files
            .iter()
            .map(|(k, h)| (k.clone(), Value::String(hex::encode(h))))
            .collect();
        json!({
            "format": if self.signed { BUNDLE_FORMAT } else { UNSIGNED_BUNDLE_FORMAT },
            "tenant": self.tenant,
            "topic": self.topic,
            "partition": self.partition,
            "period": {
                "field": PERIOD_FIELD,
                "from": format_micros(self.from),
                "to": format_micros(self.to),
                "from_micros": self.from,
                "to_micros": self.to,
            },
            "log_id": self.log_id,
            "counts": {
                "events": self.events.len(),
                "proofs": self.events.len(),
                "checkpoints": self.checkpoints.len(),
                "files": self.files.len() + if self.signed { 2 } else { 1 },
            },
            "events": self.events,
            "checkpoints": self.checkpoints,
            "files": files,
        })
    }

    /// Reads a manifest strictly: unknown fields, wrong counts, unsorted seqs or text that
    /// disagrees with the numbers it spells are refused (`what` is `manifest` or `json`).
    pub fn parse(text: &str) -> Result<Manifest, VerifyError> {
        let bad = |d: String| VerifyError::new("manifest", d);
        let v: Value = serde_json::from_str(text)
            .map_err(|e| VerifyError::new("json", format!("not a JSON document: {e}")))?;
        let mut f = Fields::new(&v, "")?;
        let format = f.string("format")?;
        let signed = match format.as_str() {
            BUNDLE_FORMAT => true,
            UNSIGNED_BUNDLE_FORMAT => false,
            _ => {
                return Err(bad(format!(
                    "format `{format}` is not `{BUNDLE_FORMAT}` (nor the older `{UNSIGNED_BUNDLE_FORMAT}`)"
                )));
            }
        };
        let tenant = f.string("tenant")?;
        let topic = f.string("topic")?;
        let partition = f.u32("partition")?;
        let mut p = Fields::new(f.value("period")?, "period")?;
        let field = p.string("field")?;
        let (from_text, to_text) = (p.string("from")?, p.string("to")?);
        let (from, to) = (p.i64("from_micros")?, p.i64("to_micros")?);
        p.finish()?;
        if field != PERIOD_FIELD {
            return Err(bad(format!(
                "period.field `{field}` is not `{PERIOD_FIELD}`"
            )));
        }
        if from_text != format_micros(from) || to_text != format_micros(to) {
            return Err(bad(
                "period.from/to do not spell period.from_micros/to_micros".into(),
            ));
        }
        if from >= to {
            return Err(bad(format!(
                "the period is empty (from {from_text} is not before to {to_text})"
            )));
        }
        let log_id = f.string("log_id")?;
        let mut c = Fields::new(f.value("counts")?, "counts")?;
        let counts = [
            c.u64("events")?,
            c.u64("proofs")?,
            c.u64("checkpoints")?,
            c.u64("files")?,
        ];
        c.finish()?;
        let events: Vec<u64> = f
            .value("events")?
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| VerifyError::new("json", "`events`: expected an array of seqs"))?;
        if events.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("`events` is not in strictly ascending seq order".into()));
        }
        let checkpoints: Vec<String> = f
            .value("checkpoints")?
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| {
                VerifyError::new("json", "`checkpoints`: expected an array of member names")
            })?;
        let mut files = BTreeMap::new();
        let listed = f
            .value("files")?
            .as_object()
            .ok_or_else(|| VerifyError::new("json", "`files`: expected an object"))?;
        for (name, h) in listed {
            let h = h
                .as_str()
                .and_then(parse_hex)
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or_else(|| {
                    VerifyError::new(
                        "json",
                        format!("`files.{name}`: expected 64 lowercase hex digits"),
                    )
                })?;
            files.insert(name.clone(), h);
        }
        f.finish()?;
        let n = events.len() as u64;
        let members = files.len() as u64 + if signed { 2 } else { 1 };
        let expected = [n, n, checkpoints.len() as u64, members];
        if counts != expected {
            return Err(bad(format!(
                "counts (events, proofs, checkpoints, files) are {counts:?}, the lists hold {expected:?}"
            )));
        }
        Ok(Manifest {
            signed,
            tenant,
            topic,
            partition,
            from,
            to,
            log_id,
            events,
            checkpoints,
            files,
        })
    }
}

/// The readable event document (`events/<seq>.json`) for canonical envelope bytes; `payload`
/// is the payload decoded for reading (annals decodes it with the writer schema `schema_id`).
pub fn event_document(topic: &str, envelope: &[u8], payload: Value) -> Result<Value, VerifyError> {
    let (e, _) = recompute(envelope)
        .map_err(|d| VerifyError::new("envelope", format!("not a canonical envelope: {d}")))?;
    let mut v = readable(topic, &e);
    v["envelope_hex"] = Value::String(hex::encode(envelope));
    v["payload"] = payload;
    Ok(v)
}

/// Every field of an event file but `envelope_hex` and `payload`, from the envelope.
fn readable(topic: &str, e: &EventFields) -> Value {
    json!({
        "event_id": e.event_id,
        "topic": topic,
        "partition": e.partition,
        "seq": e.seq,
        "hash": hex::encode(e.hash),
        "prev_hash": hex::encode(e.prev_hash),
        "tenant": e.tenant,
        "stream": e.stream,
        "stream_version": e.stream_version,
        "event_type": e.event_type,
        "schema_id": e.schema_id,
        "occurred_at": format_micros(e.occurred_at),
        "recorded_at": format_micros(e.recorded_at),
        "actor": e.actor,
        "causation_id": e.causation_id,
        "correlation_id": e.correlation_id,
    })
}

/// Checks an event file against its own envelope bytes and the manifest; the envelope bytes.
fn check_event(text: &str, m: &Manifest, seq: u64) -> Result<Vec<u8>, VerifyError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| VerifyError::new("json", format!("not a JSON document: {e}")))?;
    let mut f = Fields::new(&v, "")?;
    let envelope = f.bytes("envelope_hex")?;
    f.value("payload")?;
    let (e, recomputed) = recompute(&envelope)
        .map_err(|d| VerifyError::new("envelope", format!("not a canonical envelope: {d}")))?;
    if recomputed != e.hash {
        return Err(VerifyError::new(
            "event hash",
            "the envelope's bytes do not hash to the hash it carries (the event was altered)",
        ));
    }
    let expected = readable(&m.topic, &e);
    for name in FIELD_NAMES {
        let want = &expected[name];
        let got = f.value(name)?;
        if got != want {
            return Err(VerifyError::new(
                "event",
                format!("`{name}` is {got}, the envelope says {want}"),
            ));
        }
    }
    f.finish()?;
    if e.seq != seq {
        return Err(VerifyError::new(
            "event",
            format!("the envelope is seq {}, not {seq}", e.seq),
        ));
    }
    if e.tenant != m.tenant {
        return Err(VerifyError::new(
            "tenant",
            format!(
                "the event is of tenant `{}`, the manifest's tenant is `{}`",
                e.tenant, m.tenant
            ),
        ));
    }
    if e.partition != m.partition {
        return Err(VerifyError::new(
            "event",
            format!(
                "the event is in partition {}, the manifest's is {}",
                e.partition, m.partition
            ),
        ));
    }
    if e.recorded_at < m.from || e.recorded_at >= m.to {
        return Err(VerifyError::new(
            "period",
            format!(
                "recorded_at {} is outside the manifest's period [{}, {})",
                format_micros(e.recorded_at),
                format_micros(m.from),
                format_micros(m.to)
            ),
        ));
    }
    Ok(envelope)
}

const FIELD_NAMES: [&str; 16] = [
    "event_id",
    "topic",
    "partition",
    "seq",
    "hash",
    "prev_hash",
    "tenant",
    "stream",
    "stream_version",
    "event_type",
    "schema_id",
    "occurred_at",
    "recorded_at",
    "actor",
    "causation_id",
    "correlation_id",
];

/// Why a bundle was rejected: the member (`file`) and the link that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError {
    /// The archive member, or [`ARCHIVE`] for the archive's structure.
    pub file: String,
    pub error: VerifyError,
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.error)
    }
}

impl std::error::Error for BundleError {}

fn at(file: &str) -> impl Fn(VerifyError) -> BundleError + '_ {
    move |error| BundleError {
        file: file.to_owned(),
        error,
    }
}

fn fail(file: &str, what: &'static str, detail: impl Into<String>) -> BundleError {
    at(file)(VerifyError::new(what, detail))
}

/// What a verified bundle established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSummary {
    pub tenant: String,
    pub topic: String,
    pub partition: u32,
    pub from: i64,
    pub to: i64,
    pub events: usize,
    pub log_id: String,
    /// Tree sizes of the checkpoints the proofs lead to.
    pub checkpoints: Vec<u64>,
    /// Whether the manifest was signed; `false` only for an unsigned bundle of the older format
    /// accepted with [`Unsigned::Accept`]: then nothing shows that no event was left out.
    pub manifest_signed: bool,
}

impl std::fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events of tenant {} recorded in [{}, {}) ({}/{})",
            self.events,
            self.tenant,
            format_micros(self.from),
            format_micros(self.to),
            self.topic,
            self.partition
        )?;
        if !self.checkpoints.is_empty() {
            let sizes: Vec<String> = self.checkpoints.iter().map(u64::to_string).collect();
            write!(
                f,
                ", each proven in the signed checkpoint of tree size {}",
                sizes.join(", ")
            )?;
        }
        write!(f, " (log {})", self.log_id)?;
        if !self.manifest_signed {
            write!(
                f,
                "; the manifest is NOT signed (format {UNSIGNED_BUNDLE_FORMAT}), so nothing shows that no event of the period was left out"
            )?;
        }
        Ok(())
    }
}

fn utf8<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, BundleError> {
    std::str::from_utf8(bytes).map_err(|_| fail(name, "json", "not UTF-8 text"))
}

/// Checks a whole bundle (the bytes of the archive) with the log's public key; its manifest
/// must be signed.
pub fn verify_bundle(archive: &[u8], key: &PublicKey) -> Result<BundleSummary, BundleError> {
    verify_bundle_with(archive, key, Unsigned::Reject)
}

/// [`verify_bundle`], saying what to do with a bundle of the older, unsigned format.
pub fn verify_bundle_with(
    archive: &[u8],
    key: &PublicKey,
    unsigned: Unsigned,
) -> Result<BundleSummary, BundleError> {
    let members = read_ustar(archive).map_err(|d| fail(ARCHIVE, "archive", d))?;
    let by_name: BTreeMap<&str, &[u8]> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let text = by_name
        .get(MANIFEST)
        .ok_or_else(|| fail(MANIFEST, "manifest", "the bundle holds no manifest.json"))?;
    let m = Manifest::parse(utf8(MANIFEST, text)?).map_err(at(MANIFEST))?;
    let signature = match (m.signed, by_name.get(MANIFEST_SIGNATURE)) {
        (true, Some(sig)) => Some(*sig),
        (true, None) => {
            return Err(fail(
                MANIFEST_SIGNATURE,
                "manifest signature",
                format!(
                    "the bundle holds no manifest.sig, which its format {BUNDLE_FORMAT} requires: the signature was removed"
                ),
            ));
        }
        (false, _) if unsigned == Unsigned::Reject => {
            return Err(fail(
                MANIFEST,
                "manifest signature",
                format!(
                    "the manifest is not signed (format {UNSIGNED_BUNDLE_FORMAT}, written before annals signed manifests), so nothing shows that no event of the period was left out; ask the log's operator for a new bundle, or accept it knowingly (annals verify-proof --allow-unsigned)"
                ),
            ));
        }
        (false, _) => None,
    };

    // Members: exactly the manifest's list (and its signature), each with its SHA-256.
    for (name, bytes) in &members {
        if name == MANIFEST || (name == MANIFEST_SIGNATURE && signature.is_some()) {
            continue;
        }
        let Some(want) = m.files.get(name) else {
            return Err(fail(name, "manifest", "not listed in manifest.json"));
        };
        if <Hash>::from(Sha256::digest(bytes)) != *want {
            return Err(fail(
                name,
                "sha256",
                "its SHA-256 is not the one manifest.json lists (the file or the manifest was altered)",
            ));
        }
    }
    let mut expected: BTreeSet<String> = [README, PUBLIC_KEY].map(str::to_owned).into();
    expected.extend(m.checkpoints.iter().cloned());
    for &s in &m.events {
        expected.insert(event_path(s));
        expected.insert(proof_path(s));
    }
    for name in m.files.keys() {
        if !by_name.contains_key(name.as_str()) {
            return Err(fail(
                MANIFEST,
                "manifest",
                format!("lists {name}, which the bundle does not hold"),
            ));
        }
        if !expected.contains(name) {
            return Err(fail(
                MANIFEST,
                "manifest",
                format!("lists {name}, which is no event, proof or checkpoint of its lists"),
            ));
        }
    }
    if let Some(name) = expected.iter().find(|n| !m.files.contains_key(*n)) {
        return Err(fail(
            MANIFEST,
            "manifest",
            format!("does not list {name}, which its events or checkpoints need"),
        ));
    }

    // The key: the one the auditor was given, and the log's identity.
    let bundled =
        PublicKey::parse(utf8(PUBLIC_KEY, by_name[PUBLIC_KEY])?).map_err(at(PUBLIC_KEY))?;
    if bundled != *key {
        return Err(fail(
            PUBLIC_KEY,
            "key",
            "the bundle's public key is not the key given to check it with",
        ));
    }
    let log_id = hex::encode(Sha256::digest(key.to_bytes()));
    if m.log_id != log_id {
        return Err(fail(
            MANIFEST,
            "manifest",
            format!(
                "log_id {} is not the SHA-256 of the public key ({log_id})",
                m.log_id
            ),
        ));
    }

    // The manifest: the key holder's statement of what the bundle holds.
    if let Some(sig) = signature {
        verify_manifest_signature(text, sig, key).map_err(at(MANIFEST_SIGNATURE))?;
    }

    // Checkpoints: named by what they say, of the manifest's partition, signed by the key.
    let mut checkpoints: Vec<(&str, Checkpoint, bool)> = Vec::new();
    for name in &m.checkpoints {
        let v: Value = serde_json::from_str(utf8(name, by_name[name.as_str()])?)
            .map_err(|e| fail(name, "json", format!("not a JSON document: {e}")))?;
        let c = Checkpoint::from_json(&v, "").map_err(at(name))?;
        if *name != checkpoint_path(c.partition, c.tree_size) {
            return Err(fail(
                name,
                "checkpoint",
                format!(
                    "it is the checkpoint of partition {} at tree size {}, not what its name says",
                    c.partition, c.tree_size
                ),
            ));
        }
        if c.topic != m.topic || c.partition != m.partition || c.log_id != m.log_id {
            return Err(fail(
                name,
                "checkpoint",
                format!(
                    "it is of {} {}/{}, the manifest's log and partition are {} {}/{}",
                    c.log_id, c.topic, c.partition, m.log_id, m.topic, m.partition
                ),
            ));
        }
        c.verify_signature(key).map_err(at(name))?;
        checkpoints.push((name, c, false));
    }

    // Events and their proofs.
    for &seq in &m.events {
        let ev = event_path(seq);
        let envelope = check_event(utf8(&ev, by_name[ev.as_str()])?, &m, seq).map_err(at(&ev))?;
        let pf = proof_path(seq);
        let v: Value = serde_json::from_str(utf8(&pf, by_name[pf.as_str()])?)
            .map_err(|e| fail(&pf, "json", format!("not a JSON document: {e}")))?;
        let proof = InclusionProof::from_json(&v).map_err(at(&pf))?;
        if proof.event.envelope != envelope {
            return Err(fail(
                &pf,
                "event",
                format!("it proves another event than {ev} (the envelope bytes differ)"),
            ));
        }
        let Some(used) = checkpoints
            .iter_mut()
            .find(|(_, c, _)| *c == proof.checkpoint)
        else {
            return Err(fail(
                &pf,
                "checkpoint",
                format!(
                    "its checkpoint (tree size {}) is none of the bundle's checkpoint files",
                    proof.checkpoint.tree_size
                ),
            ));
        };
        used.2 = true;
        proof.verify(key).map_err(at(&pf))?;
    }
    if let Some((name, _, _)) = checkpoints.iter().find(|(_, _, used)| !used) {
        return Err(fail(
            name,
            "checkpoint",
            "no proof of the bundle leads to it",
        ));
    }
    Ok(BundleSummary {
        tenant: m.tenant,
        topic: m.topic,
        partition: m.partition,
        from: m.from,
        to: m.to,
        events: m.events.len(),
        log_id: m.log_id,
        checkpoints: checkpoints.iter().map(|(_, c, _)| c.tree_size).collect(),
        manifest_signed: signature.is_some(),
    })
}

/// Reads a ustar (POSIX.1-1988, as GNU and BSD tar write it) archive into its regular files,
/// in archive order. Directory entries are skipped; links, devices and extension headers
/// (pax, GNU long names) are refused, as are duplicate names, bad header checksums and
/// truncation. Nothing is written anywhere, so names are only compared, never opened.
pub fn read_ustar(archive: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    const BLOCK: usize = 512;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut pos = 0;
    loop {
        let Some(h) = archive.get(pos..pos + BLOCK) else {
            return Err(if pos == archive.len() {
                "the archive ends without its end-of-archive blocks".into()
            } else {
                format!("truncated header at byte {pos}")
            });
        };
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |from: usize, len: usize| &h[from..from + len];
        let text = |from: usize, len: usize| -> Result<String, String> {
            let f = field(from, len);
            let end = f.iter().position(|&b| b == 0).unwrap_or(len);
            String::from_utf8(f[..end].to_vec())
                .map_err(|_| format!("header at byte {pos}: a name that is not UTF-8"))
        };
        let octal = |from: usize, len: usize, what: &str| -> Result<u64, String> {
            let s: Vec<u8> = field(from, len)
                .iter()
                .copied()
                .filter(|&b| b != 0 && b != b' ')
                .collect();
            if s.is_empty() || !s.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return Err(format!("header at byte {pos}: {what} is not octal"));
            }
            u64::from_str_radix(std::str::from_utf8(&s).expect("ascii"), 8)
                .map_err(|_| format!("header at byte {pos}: {what} out of range"))
        };
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if octal(148, 8, "the checksum")? != sum {
            return Err(format!("header at byte {pos}: bad checksum"));
        }
        if field(257, 5) != b"ustar" {
            return Err(format!("header at byte {pos}: not a ustar header"));
        }
        let mut name = text(0, 100)?;
        let prefix = text(345, 155)?;
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = octal(124, 12, "the size")?;
        let size = usize::try_from(size).map_err(|_| format!("{name}: size out of range"))?;
        let start = pos + BLOCK;
        let data = archive
            .get(start..start.checked_add(size).ok_or("size out of range")?)
            .ok_or_else(|| format!("{name}: truncated content"))?;
        pos = start + size.div_ceil(BLOCK) * BLOCK;
        match h[156] {
            b'0' | 0 => {}
            b'5' => continue,
            t => {
                return Err(format!(
                    "{name}: member type `{}` is not a regular file",
                    t.escape_ascii()
                ));
            }
        }
        let name = name.strip_prefix("./").unwrap_or(&name).to_owned();
        if !seen.insert(name.clone()) {
            return Err(format!("{name} is in the archive twice"));
        }
        out.push((name, data.to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_signature_covers_the_context_line_and_the_exact_bytes() {
        use ed25519_dalek::{Signer, SigningKey};
        let signer = SigningKey::from_bytes(&[3u8; 32]);
        let key = PublicKey(signer.verifying_key());
        let manifest = b"{\n  \"format\": \"annals-evidence-v2\"\n}\n";
        let sig = signature_file(&signer.sign(&manifest_message(manifest)).to_bytes());
        assert_eq!(sig.len(), 129);
        verify_manifest_signature(manifest, &sig, &key).unwrap();
        // Any other byte of the manifest.
        let mut other = manifest.to_vec();
        other[2] = b'\t';
        let err = verify_manifest_signature(&other, &sig, &key).unwrap_err();
        assert_eq!(err.what, "manifest signature");
        // A signature of the bare bytes, without the context line.
        let bare = signature_file(&signer.sign(manifest).to_bytes());
        assert!(verify_manifest_signature(manifest, &bare, &key).is_err());
        // Another key.
        let stranger = PublicKey(SigningKey::from_bytes(&[4u8; 32]).verifying_key());
        assert!(verify_manifest_signature(manifest, &sig, &stranger).is_err());
        // Not the form expected: uppercase hex, no newline, too short.
        let upper = String::from_utf8(sig.clone()).unwrap().to_uppercase();
        for bad in [upper.as_bytes(), &sig[..128], &sig[2..]] {
            let err = verify_manifest_signature(manifest, bad, &key).unwrap_err();
            assert!(err.detail.contains("128"), "{err:?}");
        }
    }

    #[test]
    fn times_are_spelled_in_utc_with_microseconds() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_micros(1_763_796_492_123_456),
            "2025-11-22T07:28:12.123456Z"
        );
        assert_eq!(
            format_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn a_truncated_or_corrupt_archive_is_refused() {
        assert!(read_ustar(&[]).is_err());
        assert!(read_ustar(&[0u8; 100]).is_err());
        assert_eq!(read_ustar(&[0u8; 1024]).unwrap(), vec![]);
        let mut h = [0u8; 512];
        h[..5].copy_from_slice(b"a.txt");
        h[257..263].copy_from_slice(b"ustar\0");
        h[124..135].copy_from_slice(b"00000000003");
        h[156] = b'0';
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut a = h.to_vec();
        a.extend_from_slice(b"abc");
        a.resize(1024, 0);
        a.extend_from_slice(&[0u8; 1024]);
        assert_eq!(
            read_ustar(&a).unwrap(),
            vec![("a.txt".into(), b"abc".to_vec())]
        );
        let mut bad = a.clone();
        bad[0] = b'b';
        assert!(read_ustar(&bad).unwrap_err().contains("checksum"));
        assert!(read_ustar(&a[..600]).unwrap_err().contains("truncated"));
    }
}
