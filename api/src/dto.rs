//! Request and response bodies, as clients see them, and their conversion to domain commands.
//!
//! Request bodies refuse unknown fields, so a misspelt field is a 422 naming it rather than a
//! silently ignored value.

use std::collections::BTreeMap;

use annals_domain::billing::{BudgetCommand, InvoiceCommand, VolumeTier};
use annals_domain::ingest::SignalInput;
use annals_domain::policy::{
    Effect, Request, Resource, ResourceCondition, Rule, Subject, SubjectCondition,
};
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

/// `POST /v1/tenants/{tenant}/contacts`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterContactRequest {
    /// Id of the contact, unique per tenant (an opaque id: it is not sealed).
    pub contact_id: String,
    /// Personal data, sealed under the contact's key.
    pub name: String,
    /// Personal data, sealed under the contact's key.
    pub email: String,
    /// `billing`, `security` or `technical`.
    pub role: String,
}

/// `POST /v1/tenants/{tenant}/subjects/{subject}/erase`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseSubjectRequest {
    /// The request's reference (e.g. a ticket number); recorded in the event.
    pub reason: String,
}

/// What the log holds about a data subject.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubjectExport {
    pub tenant: String,
    pub subject: String,
    /// The subject's key is gone: personal fields read as `[erased]`.
    pub erased: bool,
    /// The subject's events, oldest first, with personal fields opened.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
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
            event_type: w.event_type.to_string(),
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

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

/// A point in time in a request body: microseconds since the Unix epoch (a JSON integer) or
/// RFC 3339 text in UTC (`2026-01-01T00:00:00Z`, `2026-01-01T00:00:00.123456Z`, or a bare date
/// `2026-01-01`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn micros(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "microseconds since the Unix epoch (an integer) or RFC 3339 text in UTC, e.g. \"2026-01-01T00:00:00Z\"",
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom(format!("{v} microseconds is too far in the future")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                annals_events::time::parse_rfc3339(v.trim())
                    .map(Timestamp)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "{v:?} is not RFC 3339 text in UTC: use e.g. \"2026-01-01T00:00:00Z\" or microseconds since the Unix epoch"
                        ))
                    })
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        OneOfBuilder::new()
            .description(Some(
                "Microseconds since the Unix epoch, or RFC 3339 text in UTC (`Z`)",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .examples([serde_json::json!(1_767_225_600_000_000_i64)]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .examples([serde_json::json!("2026-01-01T00:00:00Z")]),
            )
            .into()
    }
}

impl ToSchema for Timestamp {}

// ---------------------------------------------------------------------------------------------
// Billing
// ---------------------------------------------------------------------------------------------

/// `POST /v1/tenants/{tenant}/invoices`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenInvoiceRequest {
    /// 1-128 of `a-z A-Z 0-9 . _ -`.
    #[schema(example = "inv-2026-01")]
    pub invoice_id: String,
    /// ISO-4217 code, three uppercase letters.
    #[schema(example = "EUR")]
    pub currency: String,
    #[serde(default)]
    pub purchase_order: Option<String>,
    /// Default: when the server receives the request. A retry is recognised by its
    /// `Idempotency-Key`; without one, give `opened_at` explicitly to make a retry an idempotent
    /// repeat (another `opened_at` is a 409 `invoice_exists`).
    #[serde(default)]
    pub opened_at: Option<Timestamp>,
}

impl OpenInvoiceRequest {
    pub fn into_command(self, tenant: String, now: i64) -> InvoiceCommand {
        InvoiceCommand::OpenInvoice {
            tenant,
            invoice_id: self.invoice_id,
            currency: self.currency,
            purchase_order: self.purchase_order,
            opened_at: self.opened_at.map_or(now, Timestamp::micros),
        }
    }
}

/// A volume tier of a line: the units up to `up_to` (inclusive, counted from the start of the
/// line's quantity) beyond the previous tier cost `unit_price_minor` each. The last tier has no
/// `up_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeTierDto {
    #[serde(default)]
    pub up_to: Option<i64>,
    pub unit_price_minor: i64,
}

impl From<VolumeTierDto> for VolumeTier {
    fn from(t: VolumeTierDto) -> VolumeTier {
        VolumeTier {
            up_to: t.up_to,
            unit_price_minor: t.unit_price_minor,
        }
    }
}

/// `POST /v1/tenants/{tenant}/invoices/{invoice_id}/lines`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLineRequest {
    /// Idempotency key of the line: the same line again is a no-op.
    pub line_id: String,
    pub description: String,
    #[schema(example = "api_calls")]
    pub meter: String,
    /// Units, above 0.
    pub quantity: i64,
    /// Price of one unit in minor units; must be 0 when `tiers` are given.
    pub unit_price_minor: i64,
    /// Graduated volume pricing; empty or absent: priced flat.
    #[serde(default)]
    pub tiers: Vec<VolumeTierDto>,
}

impl From<AddLineRequest> for InvoiceCommand {
    fn from(r: AddLineRequest) -> InvoiceCommand {
        InvoiceCommand::AddLine {
            line_id: r.line_id,
            description: r.description,
            meter: r.meter,
            quantity: r.quantity,
            unit_price_minor: r.unit_price_minor,
            tiers: r.tiers.into_iter().map(Into::into).collect(),
        }
    }
}

/// `POST /v1/tenants/{tenant}/invoices/{invoice_id}/credits`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyCreditRequest {
    /// Idempotency key of the credit.
    pub credit_id: String,
    pub reason: String,
    /// Above 0, at most the subtotal minus earlier credits.
    pub amount_minor: i64,
}

impl From<ApplyCreditRequest> for InvoiceCommand {
    fn from(r: ApplyCreditRequest) -> InvoiceCommand {
        InvoiceCommand::ApplyCredit {
            credit_id: r.credit_id,
            reason: r.reason,
            amount_minor: r.amount_minor,
        }
    }
}

/// `POST /v1/tenants/{tenant}/invoices/{invoice_id}/issue`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueInvoiceRequest {
    #[schema(example = "DE")]
    pub tax_jurisdiction: String,
    /// Tax rate in basis points, 0 to 10000 (1900 = 19 %).
    #[schema(example = 1900)]
    pub tax_rate_bp: i32,
    /// Default: when the server receives the request. Without an `Idempotency-Key`, give it
    /// explicitly to make retries idempotent.
    #[serde(default)]
    pub issued_at: Option<Timestamp>,
}

impl IssueInvoiceRequest {
    pub fn into_command(self, now: i64) -> InvoiceCommand {
        InvoiceCommand::IssueInvoice {
            tax_jurisdiction: self.tax_jurisdiction,
            tax_rate_bp: self.tax_rate_bp,
            issued_at: self.issued_at.map_or(now, Timestamp::micros),
        }
    }
}

/// `POST /v1/tenants/{tenant}/invoices/{invoice_id}/pay`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayInvoiceRequest {
    /// Exactly the issued total.
    pub amount_minor: i64,
    /// Default: when the server receives the request. Without an `Idempotency-Key`, give it
    /// explicitly to make retries idempotent.
    #[serde(default)]
    pub paid_at: Option<Timestamp>,
}

impl PayInvoiceRequest {
    pub fn into_command(self, now: i64) -> InvoiceCommand {
        InvoiceCommand::PayInvoice {
            amount_minor: self.amount_minor,
            paid_at: self.paid_at.map_or(now, Timestamp::micros),
        }
    }
}

/// `POST /v1/tenants/{tenant}/invoices/{invoice_id}/void`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidInvoiceRequest {
    pub reason: String,
}

/// `PUT /v1/tenants/{tenant}/budgets/{month}`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetRequest {
    /// ISO-4217 code; fixed once the month's budget is set.
    #[schema(example = "EUR")]
    pub currency: String,
    /// The month's spending limit in minor units, above 0.
    pub limit_minor: i64,
}

/// `POST /v1/tenants/{tenant}/budgets/{month}/usage`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordUsageRequest {
    /// Idempotency key of the usage.
    pub usage_id: String,
    pub meter: String,
    /// Above 0.
    pub quantity: i64,
    /// Not negative.
    pub cost_minor: i64,
}

impl From<RecordUsageRequest> for BudgetCommand {
    fn from(r: RecordUsageRequest) -> BudgetCommand {
        BudgetCommand::RecordUsage {
            usage_id: r.usage_id,
            meter: r.meter,
            quantity: r.quantity,
            cost_minor: r.cost_minor,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// `POST /v1/tenants/{tenant}/models/{model}/versions`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModelVersionRequest {
    /// 1-64 of `a-z A-Z 0-9 . _ -`.
    #[schema(example = "v3")]
    pub version: String,
    /// `sha256:` and 64 lowercase hex digits.
    pub artifact_digest: String,
    /// Evaluation metrics as exact strings, e.g. `{"auc": "0.91"}`; at most 64.
    #[serde(default)]
    pub metrics: BTreeMap<String, String>,
}

/// `POST .../environments/{environment}/deploy`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub version: String,
    /// 100 replaces whatever serves; 1-99 deploys a canary beside the stable version. The first
    /// deployment of an environment takes 100.
    pub traffic_pct: i32,
}

/// `POST .../environments/{environment}/shift`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShiftTrafficRequest {
    /// A serving version.
    pub version: String,
    /// 0 to 100; the other serving version gets the rest.
    pub traffic_pct: i32,
}

/// `POST .../environments/{environment}/promote`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// A serving version, to get all the traffic.
    pub version: String,
}

/// `POST .../environments/{environment}/rollback`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackDeploymentRequest {
    /// A version that served in this environment before.
    pub to_version: String,
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// What a rule, or a decision, says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EffectDto {
    Allow,
    Deny,
}

impl From<EffectDto> for Effect {
    fn from(e: EffectDto) -> Effect {
        match e {
            EffectDto::Allow => Effect::Allow,
            EffectDto::Deny => Effect::Deny,
        }
    }
}

impl From<Effect> for EffectDto {
    fn from(e: Effect) -> EffectDto {
        match e {
            Effect::Allow => EffectDto::Allow,
            Effect::Deny => EffectDto::Deny,
        }
    }
}

/// Conditions on the subject; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectConditionDto {
    /// The subject has exactly this role.
    #[serde(default)]
    pub role: Option<String>,
    /// The subject has at least one of these scopes (no condition if empty).
    #[serde(default)]
    pub scopes_any: Vec<String>,
}

/// Conditions on the resource; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceConditionDto {
    /// The resource belongs to this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The resource's classification is one of these (no condition if empty).
    #[serde(default)]
    pub classification_in: Vec<String>,
}

/// One rule: if the subject, resource and action conditions all hold, `effect`. Of the
/// matching rules the highest `priority` wins, a deny wins a tie, and no match denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDto {
    /// Unique within the policy version; 1-64 of `a-z A-Z 0-9 . _ -`.
    #[schema(example = "analysts-read")]
    pub rule_id: String,
    pub effect: EffectDto,
    /// Default 0.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub subject: SubjectConditionDto,
    #[serde(default)]
    pub resource: ResourceConditionDto,
    /// The action is exactly this (any action if absent).
    #[serde(default)]
    pub action: Option<String>,
}

impl From<RuleDto> for Rule {
    fn from(r: RuleDto) -> Rule {
        Rule {
            rule_id: r.rule_id,
            effect: r.effect.into(),
            priority: r.priority,
            subject: SubjectCondition {
                role: r.subject.role,
                scopes_any: r.subject.scopes_any,
            },
            resource: ResourceCondition {
                tenant: r.resource.tenant,
                classification_in: r.resource.classification_in,
            },
            action: r.action,
        }
    }
}

/// The rules as the domain takes them.
pub fn rules(dtos: Vec<RuleDto>) -> Vec<Rule> {
    dtos.into_iter().map(Into::into).collect()
}

/// The subject asking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectDto {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The resource asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceDto {
    pub tenant: String,
    #[schema(example = "confidential")]
    pub classification: String,
}

/// An access request: may `subject` do `action` on `resource`?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestDto {
    #[serde(default)]
    pub subject: SubjectDto,
    pub resource: ResourceDto,
    #[schema(example = "read")]
    pub action: String,
}

impl From<AccessRequestDto> for Request {
    fn from(r: AccessRequestDto) -> Request {
        Request {
            subject: Subject {
                role: r.subject.role,
                scopes: r.subject.scopes,
            },
            resource: Resource {
                tenant: r.resource.tenant,
                classification: r.resource.classification,
            },
            action: r.action,
        }
    }
}

impl From<Request> for AccessRequestDto {
    fn from(r: Request) -> AccessRequestDto {
        AccessRequestDto {
            subject: SubjectDto {
                role: r.subject.role,
                scopes: r.subject.scopes,
            },
            resource: ResourceDto {
                tenant: r.resource.tenant,
                classification: r.resource.classification,
            },
            action: r.action,
        }
    }
}

/// `POST /v1/tenants/{tenant}/policies`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicyRequest {
    /// 1-64 of `a-z A-Z 0-9 . _ -`.
    #[schema(example = "data-access")]
    pub policy_id: String,
    /// The rules of version 1 (not active until activated).
    pub rules: Vec<RuleDto>,
}

/// `PUT /v1/tenants/{tenant}/policies/{policy_id}`, and the candidate of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePolicyRequest {
    /// The rules of the new version (not active until activated).
    pub rules: Vec<RuleDto>,
}

/// `POST /v1/tenants/{tenant}/policies/{policy_id}/activate`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivatePolicyRequest {
    /// A version newer than the active one (or the first).
    pub version: i32,
}

/// `POST /v1/tenants/{tenant}/policies/{policy_id}/rollback`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollBackPolicyRequest {
    /// A version older than the active one.
    pub to_version: i32,
}

/// `POST /v1/tenants/{tenant}/policies/{policy_id}/decisions`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordDecisionRequest {
    pub request: AccessRequestDto,
    /// Default: when the server receives the request.
    #[serde(default)]
    pub decided_at: Option<Timestamp>,
}

/// A recorded decision: the command's outcome and what the active version decided, as written
/// in the `policy.PolicyDecisionRecorded` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecisionResponse {
    #[schema(example = "policy.Policy/acme/data-access")]
    pub stream: String,
    pub stream_version: u64,
    pub events: Vec<WrittenEvent>,
    pub decision: EffectDto,
    /// The rule that decided; `null`: no rule matched (default deny).
    pub matched_rule: Option<String>,
    /// The policy version that decided (the active one).
    pub policy_version: i32,
    /// Microseconds since the Unix epoch.
    pub decided_at: i64,
}

/// `POST /v1/tenants/{tenant}/policies/{policy_id}/dry-run`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// The candidate rules.
    pub rules: Vec<RuleDto>,
    /// Decisions recorded at or after this time (the envelope's `recorded_at`); default: from
    /// the start of the log.
    #[serde(default)]
    pub from: Option<Timestamp>,
    /// Decisions recorded before this time (exclusive); default: when the server receives the
    /// request.
    #[serde(default)]
    pub to: Option<Timestamp>,
}

/// A recorded decision the candidate rules would decide the other way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FlipDto {
    /// Position among the evaluated decisions (0-based, log order).
    pub index: usize,
    /// The `policy.PolicyDecisionRecorded` event.
    pub event_id: String,
    pub partition: u32,
    pub seq: u64,
    /// When the event was written (RFC 3339).
    pub recorded_at: String,
    /// The decision's own time, microseconds since the Unix epoch.
    pub decided_at: i64,
    /// The policy version that made the recorded decision.
    pub policy_version: i32,
    pub request: AccessRequestDto,
    pub recorded: EffectDto,
    pub recorded_rule: Option<String>,
    pub candidate: EffectDto,
    /// The candidate rule that decides; `null`: none matches (default deny).
    pub candidate_rule: Option<String>,
}

/// What a candidate rule set would change: nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DryRunResponse {
    pub policy_id: String,
    /// The window evaluated, `[from, to)` by `recorded_at`, microseconds since the epoch.
    pub from: i64,
    pub to: i64,
    /// Recorded decisions of the policy in the window.
    pub evaluated: u64,
    /// Every one of them the candidate decides the other way, in log order.
    pub flips: Vec<FlipDto>,
}
