//! The `Source` aggregate: one signal source of one tenant, and the signals it has seen.

use std::collections::{BTreeMap, HashMap};

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, Kind, check_id};
use crate::payload::{Payload, json_of, parse};
use crate::tenancy::TenantStatus;
use annals_schemas::{Registry, SchemaError, SchemaId};

/// One signal as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalInput {
    pub signal_id: String,
    /// Microseconds since the Unix epoch.
    pub ts: i64,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IngestCommand {
    /// Signals of one source of one tenant.
    IngestSignals {
        tenant: String,
        source: String,
        signals: Vec<SignalInput>,
    },
}

/// What the command path knows beyond this aggregate, passed in when a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestServices {
    pub tenant: TenantStatus,
    /// The tenant already has its maximum number of sources and this one is new.
    pub source_limit_reached: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalIngested {
    pub tenant: String,
    pub source: String,
    pub signal_id: String,
    pub ts: i64,
    pub attributes: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IngestEvent {
    SignalIngested(SignalIngested),
}

impl DomainEvent for IngestEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "2".into()
    }
}

impl Payload for IngestEvent {
    fn event_type(&self) -> &'static str {
        "ingest.SignalIngested"
    }

    fn to_json(&self) -> serde_json::Value {
        let IngestEvent::SignalIngested(e) = self;
        json_of(e)
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        (t == "ingest.SignalIngested").then(|| parse(t, v).map(IngestEvent::SignalIngested))
    }

    /// Signals are the hot path: while the latest published schema is v2, the payload is
    /// written straight to Avro binary (a test holds it byte-equal to the generic encoder's and
    /// decodable by the registry). Attributes are written in key order, so the bytes are
    /// repeatable.
    fn encode(&self, registry: &Registry) -> Result<(SchemaId, Vec<u8>), SchemaError> {
        let IngestEvent::SignalIngested(e) = self;
        match registry.latest("ingest.SignalIngested") {
            Some(info) if info.version == 2 => Ok((info.id, encode_v2(e))),
            _ => registry.encode_json(Payload::event_type(self), &self.to_json()),
        }
    }
}

/// Whether `schema_id` is the v2 schema of `SignalIngested`, which is read straight from its
/// Avro binary.
fn is_v2(registry: &Registry, schema_id: SchemaId) -> bool {
    registry
        .latest("ingest.SignalIngested")
        .is_some_and(|info| info.version == 2 && info.id == schema_id)
}

impl IngestEvent {
    /// Reads a stored payload: straight from Avro binary when it was written with the v2 schema
    /// (the hot path of replays and restarts), through the registry's resolution otherwise.
    pub fn decode(
        registry: &Registry,
        schema_id: SchemaId,
        payload: &[u8],
    ) -> Result<IngestEvent, String> {
        if is_v2(registry, schema_id) {
            return decode_v2(payload)
                .map(IngestEvent::SignalIngested)
                .map_err(|e| format!("ingest.SignalIngested payload: {e}"));
        }
        let json = registry
            .decode_json(schema_id, payload)
            .map_err(|e| e.to_string())?;
        parse("ingest.SignalIngested", json).map(IngestEvent::SignalIngested)
    }
}

impl Source {
    /// Applies a stored `SignalIngested` — exactly what [`Aggregate::apply`] does with the
    /// decoded event — reading a v2 payload in place, so only a new signal id is allocated (the
    /// hot path of replays and restarts). Other versions are decoded and upcast as usual.
    pub fn apply_stored(
        &mut self,
        registry: &Registry,
        schema_id: SchemaId,
        payload: &[u8],
    ) -> Result<(), String> {
        if !is_v2(registry, schema_id) {
            let event = IngestEvent::decode(registry, schema_id, payload)?;
            self.apply(event);
            return Ok(());
        }
        let s = read_v2(payload, |_, _| {})
            .map_err(|e| format!("ingest.SignalIngested payload: {e}"))?;
        if self.source.is_empty() {
            self.tenant = s.tenant.to_owned();
            self.source = s.source.to_owned();
        }
        self.see(s.signal_id, s.ts);
        Ok(())
    }

    fn see(&mut self, signal_id: &str, ts: i64) {
        match self.seen.get_mut(signal_id) {
            Some(stamps) => stamps.add(ts),
            None => {
                self.seen.insert(signal_id.to_owned(), Stamps::One(ts));
            }
        }
    }
}

/// A `SignalIngested` v2 payload read in place: strings borrowed from the bytes.
struct SignalRef<'a> {
    tenant: &'a str,
    source: &'a str,
    signal_id: &'a str,
    ts: i64,
    value: Option<f64>,
    unit: Option<&'a str>,
}

/// Reads (and checks) Avro binary of the v2 schema, the inverse of [`encode_v2`], handing each
/// attribute to `attribute` in stored order; nothing is allocated.
fn read_v2<'a>(
    bytes: &'a [u8],
    mut attribute: impl FnMut(&'a str, &'a str),
) -> Result<SignalRef<'a>, annals_events::avro::DecodeError> {
    use annals_events::avro::{Cursor, DecodeError};
    let mut c = Cursor::new(bytes);
    let tenant = c.str("tenant")?;
    let source = c.str("source")?;
    let signal_id = c.str("signal_id")?;
    let ts = c.long("ts")?;
    loop {
        let mut n = c.long("attributes")?;
        if n == 0 {
            break;
        }
        if n < 0 {
            // A block with its byte size: the count is negated and the size follows.
            n = -n;
            c.long("attributes")?;
        }
        for _ in 0..n {
            let k = c.str("attributes")?;
            let v = c.str("attributes")?;
            attribute(k, v);
        }
    }
    let value = match c.long("value")? {
        0 => None,
        1 => Some(f64::from_le_bytes(
            c.fixed("value", 8)?.try_into().expect("8 bytes"),
        )),
        _ => {
            return Err(DecodeError {
                field: "value",
                problem: "bad union branch",
            });
        }
    };
    let unit = c.opt_str("unit")?;
    if !c.is_empty() {
        return Err(DecodeError {
            field: "unit",
            problem: "trailing bytes",
        });
    }
    Ok(SignalRef {
        tenant,
        source,
        signal_id,
        ts,
        value,
        unit,
    })
}

/// `SignalIngested` from Avro binary of its v2 schema.
fn decode_v2(bytes: &[u8]) -> Result<SignalIngested, annals_events::avro::DecodeError> {
    let mut attributes = BTreeMap::new();
    let s = read_v2(bytes, |k, v| {
        attributes.insert(k.to_owned(), v.to_owned());
    })?;
    Ok(SignalIngested {
        tenant: s.tenant.to_owned(),
        source: s.source.to_owned(),
        signal_id: s.signal_id.to_owned(),
        ts: s.ts,
        attributes,
        value: s.value,
        unit: s.unit.map(str::to_owned),
    })
}

/// Avro binary of `SignalIngested` v2.
fn encode_v2(e: &SignalIngested) -> Vec<u8> {
    use annals_events::avro::{put_bytes, put_long, put_opt_str};
    let mut out = Vec::with_capacity(
        64 + e.signal_id.len()
            + e.attributes
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>(),
    );
    put_bytes(&mut out, e.tenant.as_bytes());
    put_bytes(&mut out, e.source.as_bytes());
    put_bytes(&mut out, e.signal_id.as_bytes());
    put_long(&mut out, e.ts);
    if !e.attributes.is_empty() {
        put_long(&mut out, e.attributes.len() as i64);
        for (k, v) in &e.attributes {
            put_bytes(&mut out, k.as_bytes());
            put_bytes(&mut out, v.as_bytes());
        }
    }
    put_long(&mut out, 0);
    match e.value {
        None => put_long(&mut out, 0),
        Some(v) => {
            put_long(&mut out, 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    put_opt_str(&mut out, e.unit.as_deref());
    out
}

/// The timestamps one signal id was seen with: almost always one, so no allocation for it.
/// Serialised as a number (one) or an array (several): snapshots and replay digests hold one
/// per signal id, so the lighter form matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stamps {
    One(i64),
    Many(Vec<i64>),
}

impl Stamps {
    fn contains(&self, ts: i64) -> bool {
        match self {
            Stamps::One(t) => *t == ts,
            Stamps::Many(ts_list) => ts_list.contains(&ts),
        }
    }

    fn add(&mut self, ts: i64) {
        match self {
            Stamps::One(t) => *self = Stamps::Many(vec![*t, ts]),
            Stamps::Many(list) => list.push(ts),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub tenant: String,
    pub source: String,
    /// Dedupe keys seen: signal_id → the timestamps it was seen with.
    pub seen: HashMap<String, Stamps>,
}

/// Checks one signal of a batch (`i` is its index, for the field path in the error).
pub fn validate_signal(s: &SignalInput, i: usize) -> Result<(), DomainError> {
    let at = |f: &str| format!("signals[{i}].{f}");
    if s.signal_id.is_empty() || s.signal_id.len() > 128 {
        return Err(DomainError::invalid(
            &at("signal_id"),
            "`signal_id` must be 1 to 128 characters",
        ));
    }
    if s.ts <= 0 {
        return Err(DomainError::invalid(
            &at("ts"),
            "`ts` must be microseconds since the Unix epoch, above 0",
        ));
    }
    if s.attributes.len() > 64 {
        return Err(DomainError::invalid(
            &at("attributes"),
            "at most 64 attributes",
        ));
    }
    if let Some((k, _)) = s
        .attributes
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 1024)
    {
        return Err(DomainError::invalid(
            &at("attributes"),
            format!("attribute {k:?}: keys are 1-64 bytes, values at most 1024"),
        ));
    }
    if s.value.is_some_and(|v| !v.is_finite()) {
        return Err(DomainError::invalid(
            &at("value"),
            "`value` must be a finite number",
        ));
    }
    Ok(())
}

impl Aggregate for Source {
    const TYPE: &'static str = super::STREAM_TYPE;
    type Command = IngestCommand;
    type Event = IngestEvent;
    type Error = DomainError;
    type Services = IngestServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let IngestCommand::IngestSignals {
            tenant,
            source,
            signals,
        } = command;
        // Every check comes before the first event: a refused batch writes nothing.
        services.tenant.require_active(&tenant)?;
        check_id("source", &source, 64)?;
        if signals.len() > super::MAX_BATCH {
            return Err(DomainError::new(
                Kind::TooLarge,
                "batch_too_large",
                format!(
                    "{} signals in one batch; send at most {}",
                    signals.len(),
                    super::MAX_BATCH
                ),
            ));
        }
        for (i, s) in signals.iter().enumerate() {
            validate_signal(s, i)?;
        }
        if self.source.is_empty() && services.source_limit_reached {
            return Err(DomainError::new(
                Kind::RateLimited,
                "source_limit",
                format!(
                    "tenant `{tenant}` already has its maximum number of sources; raise limits.max_sources"
                ),
            ));
        }
        // Room for the new keys up front (capacity only, not state).
        self.seen.reserve(signals.len());
        for s in signals {
            // `apply` records the key, so a repeat later in the same batch is a duplicate too.
            if self
                .seen
                .get(s.signal_id.as_str())
                .is_some_and(|t| t.contains(s.ts))
            {
                continue;
            }
            let event = SignalIngested {
                tenant: tenant.clone(),
                source: source.clone(),
                signal_id: s.signal_id,
                ts: s.ts,
                attributes: s.attributes,
                value: s.value,
                unit: s.unit,
            };
            sink.write(IngestEvent::SignalIngested(event), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let IngestEvent::SignalIngested(e) = event;
        if self.source.is_empty() {
            self.tenant = e.tenant;
            self.source = e.source;
        }
        match self.seen.get_mut(e.signal_id.as_str()) {
            Some(stamps) => stamps.add(e.ts),
            None => {
                // The event's own String: no copy on the command path.
                self.seen.insert(e.signal_id, Stamps::One(e.ts));
            }
        }
    }
}
