//! Request and response bodies, as clients see them, and their conversion to domain commands.
//!
//! Request bodies refuse unknown fields, so a misspelt field is a 422 naming it rather than a
//! silently ignored value.

use std::collections::BTreeMap;

use annals_domain::ingest::SignalInput;
use annals_domain::tenancy::{TenantCommand, TenantLimits};
use annals_processors::{Outcome, Written};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A tenant's quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsDto {
    /// Signals the tenant may send per day (at least 1).
    pub max_signals_per_day: i64,
    /// Distinct sources the tenant may have (at least 1).
    pub max_sources: i32,
    /// Signals per second the tenant is planned for (at least 1).
    pub rate_per_second: i32,
}

impl From<LimitsDto> for TenantLimits {
    fn from(l: LimitsDto) -> TenantLimits {
        TenantLimits {
            max_signals_per_day: l.max_signals_per_day,
            max_sources: l.max_sources,
            rate_per_second: l.rate_per_second,
        }
    }
}

/// `POST /v1/tenants`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionTenantRequest {
    /// Tenant id: 1-64 of `a-z A-Z 0-9 . _ -`.
    #[schema(example = "acme")]
    pub tenant: String,
    /// Display name, 1-200 characters.
    pub name: String,
    /// One of `starter`, `growth`, `enterprise`.
    #[schema(example = "growth")]
    pub plan: String,
    #[schema(example = "eu-west-1")]
    pub region: String,
    pub limits: LimitsDto,
}

impl From<ProvisionTenantRequest> for TenantCommand {
    fn from(r: ProvisionTenantRequest) -> TenantCommand {
        TenantCommand::ProvisionTenant {
            tenant: r.tenant,
            name: r.name,
            plan: r.plan,
            region: r.region,
            limits: r.limits.into(),
        }
    }
}

/// `POST /v1/tenants/{tenant}/suspend`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// Why; recorded in the event.
    pub reason: String,
}

/// One event a command wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WrittenEvent {
    pub event_id: String,
    pub event_type: String,
    pub stream_version: u64,
    pub partition: u32,
    pub seq: u64,
}

impl From<Written> for WrittenEvent {
    fn from(w: Written) -> WrittenEvent {
        WrittenEvent {
            event_id: w.event_id,
            event_type: w.event_type.to_owned(),
            stream_version: w.stream_version,
            partition: w.partition,
            seq: w.seq,
        }
    }
}

/// What an accepted command did. `events` is empty when it changed nothing (an idempotent repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandResponse {
    #[schema(example = "tenancy.Tenant/acme")]
    pub stream: String,
    /// The stream's version after the command; send it as `If-Match` to the next command.
    pub stream_version: u64,
    pub events: Vec<WrittenEvent>,
}

impl From<Outcome> for CommandResponse {
    fn from(o: Outcome) -> CommandResponse {
        CommandResponse {
            stream: o.stream,
            stream_version: o.stream_version,
            events: o.events.into_iter().map(Into::into).collect(),
        }
    }
}

/// One signal: a JSON array element or one NDJSON line.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalDto {
    /// The tenant's source it came from: 1-64 of `a-z A-Z 0-9 . _ -`.
    #[schema(example = "web")]
    pub source: String,
    /// The client's id; with `ts` it is the dedupe key, so a retry is a duplicate.
    pub signal_id: String,
    /// Microseconds since the Unix epoch.
    #[schema(example = 1_767_225_600_000_000_i64)]
    pub ts: i64,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
}

impl SignalDto {
    /// The signal as the domain takes it, and its source.
    pub fn into_input(self) -> (String, SignalInput) {
        (
            self.source,
            SignalInput {
                signal_id: self.signal_id,
                ts: self.ts,
                attributes: self.attributes,
                value: self.value,
                unit: self.unit,
            },
        )
    }
}

/// Per source: what its command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SourceResult {
    pub source: String,
    /// Signals written as events.
    pub accepted: u64,
    /// Signals recognised as repeats (same `signal_id` and `ts`) and not written again.
    pub duplicates: u64,
    /// The source stream's version after the request.
    pub stream_version: u64,
}

/// `POST /v1/tenants/{tenant}/signals`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IngestResponse {
    pub accepted: u64,
    pub duplicates: u64,
    pub sources: Vec<SourceResult>,
}

/// `GET /v1/tenants/{tenant}/streams/{stream}` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The first stream version to return (inclusive; default: from the start).
    pub from_version: Option<u64>,
    /// At most this many events (1-10000, default 1000).
    pub limit: Option<usize>,
}

/// A stream's events in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryResponse {
    pub stream: String,
    /// Envelopes as JSON, with the payload decoded by its schema.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Set when `limit` cut the answer short: ask again with this `from_version`.
    pub next_from_version: Option<u64>,
}

/// `GET /health`, `GET /ready`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: String,
}

/// Headers every command takes (documentation only; read by [`crate::command_meta`]).
#[derive(Debug, Clone, Default, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CommandHeaders {
    /// The caller's id for this command, recorded as the events' `causation_id`.
    #[param(rename = "Idempotency-Key")]
    pub idempotency_key: Option<String>,
    /// Alternative to `Idempotency-Key`.
    #[param(rename = "X-Command-Id")]
    pub command_id: Option<String>,
    /// Recorded as the events' `correlation_id`.
    #[param(rename = "X-Correlation-Id")]
    pub correlation_id: Option<String>,
    /// Optimistic concurrency: the stream version last seen (0: a new stream). A different
    /// current version is 409 `version_conflict`.
    #[param(rename = "If-Match")]
    pub if_match: Option<u64>,
}
