//! The `Source` aggregate: one signal source of one tenant, and the signals it has seen.

use std::collections::{BTreeMap, HashSet};

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, Kind, check_id};
use crate::payload::{Payload, json_of, parse};
use crate::tenancy::TenantStatus;

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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub tenant: String,
    pub source: String,
    /// Dedupe keys seen: (signal_id, ts).
    pub seen: HashSet<(String, i64)>,
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
        for s in signals {
            // `apply` records the key, so a repeat later in the same batch is a duplicate too.
            if self.seen.contains(&(s.signal_id.clone(), s.ts)) {
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
        self.seen.insert((e.signal_id, e.ts));
    }
}
