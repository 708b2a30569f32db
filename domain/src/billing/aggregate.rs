//! The `Invoice` and `Budget` aggregates: business rules in `decide` (called by `handle` before
//! any event is written), state changes only in `apply`.

use std::collections::BTreeMap;

use annals_schemas::{Registry, SchemaError, SchemaId};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{
    BUDGET_THRESHOLDS_PCT, MAX_TAX_RATE_BP, VolumeTier, check_currency, check_month, overflow,
    price_minor, tax_minor, validate_tiers,
};
use crate::error::{DomainError, check_id};
use crate::payload::{Payload, json_of, parse};
use crate::tenancy::TenantStatus;

fn require_text(field: &str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("`{field}` must be 1 to {max} characters, not blank"),
        ));
    }
    Ok(())
}

fn require_time(field: &str, micros: i64) -> Result<(), DomainError> {
    if micros <= 0 {
        return Err(DomainError::invalid(
            field,
            format!("`{field}` must be microseconds since the Unix epoch, above 0"),
        ));
    }
    Ok(())
}

fn require_tenant_currency(
    field: &str,
    currency: &str,
    tenant_currency: Option<&str>,
) -> Result<(), DomainError> {
    match tenant_currency {
        Some(c) if c != currency => Err(DomainError::invalid(
            field,
            format!("`{field}` is {currency:?} but the tenant is billed in {c:?}"),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Invoice
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceCommand {
    /// Opens a draft invoice. Idempotent: the same again is a no-op.
    OpenInvoice {
        tenant: String,
        invoice_id: String,
        currency: String,
        purchase_order: Option<String>,
        /// Microseconds since the Unix epoch.
        opened_at: i64,
    },
    /// Adds a line to a draft. Idempotent by `line_id`.
    AddLine {
        line_id: String,
        description: String,
        meter: String,
        quantity: i64,
        /// Price of one unit without tiers; must be 0 when `tiers` are given.
        unit_price_minor: i64,
        tiers: Vec<VolumeTier>,
    },
    /// Credits an amount (e.g. an SLA service credit) against a draft. Idempotent by `credit_id`.
    ApplyCredit {
        credit_id: String,
        reason: String,
        amount_minor: i64,
    },
    /// Computes tax and totals and issues the draft. Idempotent: the same again is a no-op.
    IssueInvoice {
        tax_jurisdiction: String,
        tax_rate_bp: i32,
        issued_at: i64,
    },
    /// Records payment of exactly the total of an issued invoice.
    PayInvoice { amount_minor: i64, paid_at: i64 },
    /// Voids a draft or issued invoice; a paid one cannot be voided.
    VoidInvoice { reason: String },
}

/// What the command path knows beyond this aggregate, passed in when a command is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceServices {
    pub tenant: TenantStatus,
    /// The currency the tenant is billed in, if it has one: invoices must use it.
    pub tenant_currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceOpened {
    pub tenant: String,
    pub invoice_id: String,
    pub currency: String,
    pub purchase_order: Option<String>,
    pub opened_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLineAdded {
    pub tenant: String,
    pub invoice_id: String,
    pub line_id: String,
    pub description: String,
    pub meter: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub tiers: Vec<VolumeTier>,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditApplied {
    pub tenant: String,
    pub invoice_id: String,
    pub credit_id: String,
    pub reason: String,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceIssued {
    pub tenant: String,
    pub invoice_id: String,
    pub currency: String,
    pub subtotal_minor: i64,
    pub credits_minor: i64,
    pub tax_jurisdiction: String,
    pub tax_rate_bp: i32,
    pub tax_minor: i64,
    pub total_minor: i64,
    pub issued_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePaid {
    pub tenant: String,
    pub invoice_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub paid_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceVoided {
    pub tenant: String,
    pub invoice_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceEvent {
    InvoiceOpened(InvoiceOpened),
    InvoiceLineAdded(InvoiceLineAdded),
    CreditApplied(CreditApplied),
    InvoiceIssued(InvoiceIssued),
    InvoicePaid(InvoicePaid),
    InvoiceVoided(InvoiceVoided),
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for InvoiceEvent {
    fn event_type(&self) -> &'static str {
        match self {
            InvoiceEvent::InvoiceOpened(_) => "billing.InvoiceOpened",
            InvoiceEvent::InvoiceLineAdded(_) => "billing.InvoiceLineAdded",
            InvoiceEvent::CreditApplied(_) => "billing.CreditApplied",
            InvoiceEvent::InvoiceIssued(_) => "billing.InvoiceIssued",
            InvoiceEvent::InvoicePaid(_) => "billing.InvoicePaid",
            InvoiceEvent::InvoiceVoided(_) => "billing.InvoiceVoided",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            InvoiceEvent::InvoiceOpened(e) => json_of(e),
            InvoiceEvent::InvoiceLineAdded(e) => json_of(e),
            InvoiceEvent::CreditApplied(e) => json_of(e),
            InvoiceEvent::InvoiceIssued(e) => json_of(e),
            InvoiceEvent::InvoicePaid(e) => json_of(e),
            InvoiceEvent::InvoiceVoided(e) => json_of(e),
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "billing.InvoiceOpened" => parse(t, v).map(InvoiceEvent::InvoiceOpened),
            "billing.InvoiceLineAdded" => parse(t, v).map(InvoiceEvent::InvoiceLineAdded),
            "billing.CreditApplied" => parse(t, v).map(InvoiceEvent::CreditApplied),
            "billing.InvoiceIssued" => parse(t, v).map(InvoiceEvent::InvoiceIssued),
            "billing.InvoicePaid" => parse(t, v).map(InvoiceEvent::InvoicePaid),
            "billing.InvoiceVoided" => parse(t, v).map(InvoiceEvent::InvoiceVoided),
            _ => return None,
        })
    }
}

/// Where an invoice is in its lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceStatus {
    /// Not opened yet.
    #[default]
    Unknown,
    /// Open: lines and credits may be added.
    Draft,
    Issued,
    Paid,
    Voided,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub status: InvoiceStatus,
    pub opened: Option<InvoiceOpened>,
    /// Lines by `line_id`.
    pub lines: BTreeMap<String, InvoiceLineAdded>,
    /// Credits by `credit_id`.
    pub credits: BTreeMap<String, CreditApplied>,
    pub subtotal_minor: i64,
    pub credits_minor: i64,
    pub issued: Option<InvoiceIssued>,
    pub paid: Option<InvoicePaid>,
}

impl Invoice {
    fn tenant(&self) -> &str {
        self.opened.as_ref().map_or("", |o| o.tenant.as_str())
    }

    fn opened(&self) -> Result<&InvoiceOpened, DomainError> {
        self.opened.as_ref().ok_or_else(|| {
            DomainError::not_found(
                "unknown_invoice",
                "the invoice does not exist; open it first",
            )
        })
    }

    fn require_draft(&self) -> Result<&InvoiceOpened, DomainError> {
        let opened = self.opened()?;
        if self.status != InvoiceStatus::Draft {
            return Err(DomainError::conflict(
                "invoice_not_draft",
                format!(
                    "invoice `{}` is {:?}: lines and credits can only change a draft",
                    opened.invoice_id, self.status
                ),
            ));
        }
        Ok(opened)
    }

    fn decide(
        &self,
        command: InvoiceCommand,
        services: &InvoiceServices,
    ) -> Result<Option<InvoiceEvent>, DomainError> {
        let tenant = match &command {
            InvoiceCommand::OpenInvoice { tenant, .. } => tenant.as_str(),
            _ => self.tenant(),
        };
        services.tenant.require_active(tenant)?;
        match command {
            InvoiceCommand::OpenInvoice {
                tenant,
                invoice_id,
                currency,
                purchase_order,
                opened_at,
            } => {
                check_id("tenant", &tenant, 64)?;
                check_id("invoice_id", &invoice_id, 128)?;
                check_currency("currency", &currency)?;
                require_tenant_currency(
                    "currency",
                    &currency,
                    services.tenant_currency.as_deref(),
                )?;
                if let Some(po) = &purchase_order {
                    require_text("purchase_order", po, 128)?;
                }
                require_time("opened_at", opened_at)?;
                let wanted = InvoiceOpened {
                    tenant,
                    invoice_id,
                    currency,
                    purchase_order,
                    opened_at,
                };
                match &self.opened {
                    Some(existing) if *existing == wanted => Ok(None),
                    Some(existing) => Err(DomainError::conflict(
                        "invoice_exists",
                        format!(
                            "invoice `{}` is already open with other attributes; use another invoice id",
                            existing.invoice_id
                        ),
                    )),
                    None => Ok(Some(InvoiceEvent::InvoiceOpened(wanted))),
                }
            }
            InvoiceCommand::AddLine {
                line_id,
                description,
                meter,
                quantity,
                unit_price_minor,
                tiers,
            } => {
                let opened = self.opened()?;
                check_id("line_id", &line_id, 128)?;
                require_text("description", &description, 500)?;
                check_id("meter", &meter, 128)?;
                if quantity <= 0 {
                    return Err(DomainError::invalid(
                        "quantity",
                        "`quantity` must be above 0",
                    ));
                }
                if unit_price_minor < 0 {
                    return Err(DomainError::invalid(
                        "unit_price_minor",
                        "`unit_price_minor` must not be negative; give discounts as credits",
                    ));
                }
                validate_tiers(&tiers)?;
                if !tiers.is_empty() && unit_price_minor != 0 {
                    return Err(DomainError::invalid(
                        "unit_price_minor",
                        "a line with `tiers` is priced by them: `unit_price_minor` must be 0",
                    ));
                }
                let amount_minor = price_minor(quantity, unit_price_minor, &tiers)
                    .ok_or_else(|| overflow("quantity"))?;
                let wanted = InvoiceLineAdded {
                    tenant: opened.tenant.clone(),
                    invoice_id: opened.invoice_id.clone(),
                    line_id,
                    description,
                    meter,
                    quantity,
                    unit_price_minor,
                    tiers,
                    amount_minor,
                    currency: opened.currency.clone(),
                };
                if let Some(existing) = self.lines.get(&wanted.line_id) {
                    return if *existing == wanted {
                        Ok(None)
                    } else {
                        Err(DomainError::conflict(
                            "line_exists",
                            format!(
                                "line `{}` is already on the invoice with other attributes; use another line id",
                                wanted.line_id
                            ),
                        ))
                    };
                }
                self.require_draft()?;
                self.subtotal_minor
                    .checked_add(amount_minor)
                    .ok_or_else(|| overflow("quantity"))?;
                Ok(Some(InvoiceEvent::InvoiceLineAdded(wanted)))
            }
            InvoiceCommand::ApplyCredit {
                credit_id,
                reason,
                amount_minor,
            } => {
                let opened = self.opened()?;
                check_id("credit_id", &credit_id, 128)?;
                require_text("reason", &reason, 500)?;
                if amount_minor <= 0 {
                    return Err(DomainError::invalid(
                        "amount_minor",
                        "a credit's `amount_minor` must be above 0",
                    ));
                }
                let wanted = CreditApplied {
                    tenant: opened.tenant.clone(),
                    invoice_id: opened.invoice_id.clone(),
                    credit_id,
                    reason,
                    amount_minor,
                    currency: opened.currency.clone(),
                };
                if let Some(existing) = self.credits.get(&wanted.credit_id) {
                    return if *existing == wanted {
                        Ok(None)
                    } else {
                        Err(DomainError::conflict(
                            "credit_exists",
                            format!(
                                "credit `{}` is already on the invoice with other attributes; use another credit id",
                                wanted.credit_id
                            ),
                        ))
                    };
                }
                self.require_draft()?;
                let open_minor = self.subtotal_minor - self.credits_minor;
                if amount_minor > open_minor {
                    return Err(DomainError::invalid(
                        "amount_minor",
                        format!(
                            "a credit of {amount_minor} exceeds what is left to credit ({open_minor} {}: subtotal minus credits)",
                            opened.currency
                        ),
                    ));
                }
                Ok(Some(InvoiceEvent::CreditApplied(wanted)))
            }
            InvoiceCommand::IssueInvoice {
                tax_jurisdiction,
                tax_rate_bp,
                issued_at,
            } => {
                let opened = self.opened()?;
                check_id("tax_jurisdiction", &tax_jurisdiction, 32)?;
                if !(0..=MAX_TAX_RATE_BP).contains(&tax_rate_bp) {
                    return Err(DomainError::invalid(
                        "tax_rate_bp",
                        format!(
                            "`tax_rate_bp` must be 0 to {MAX_TAX_RATE_BP} basis points, got {tax_rate_bp}"
                        ),
                    ));
                }
                require_time("issued_at", issued_at)?;
                if let Some(issued) = &self.issued {
                    let same = issued.tax_jurisdiction == tax_jurisdiction
                        && issued.tax_rate_bp == tax_rate_bp
                        && issued.issued_at == issued_at;
                    if same {
                        return Ok(None);
                    }
                }
                self.require_issuable(opened)?;
                if issued_at < opened.opened_at {
                    return Err(DomainError::invalid(
                        "issued_at",
                        "`issued_at` must not be before the invoice was opened",
                    ));
                }
                let net_minor = self.subtotal_minor - self.credits_minor;
                let tax =
                    tax_minor(net_minor, tax_rate_bp).ok_or_else(|| overflow("tax_rate_bp"))?;
                let total_minor = net_minor
                    .checked_add(tax)
                    .ok_or_else(|| overflow("tax_rate_bp"))?;
                Ok(Some(InvoiceEvent::InvoiceIssued(InvoiceIssued {
                    tenant: opened.tenant.clone(),
                    invoice_id: opened.invoice_id.clone(),
                    currency: opened.currency.clone(),
                    subtotal_minor: self.subtotal_minor,
                    credits_minor: self.credits_minor,
                    tax_jurisdiction,
                    tax_rate_bp,
                    tax_minor: tax,
                    total_minor,
                    issued_at,
                })))
            }
            InvoiceCommand::PayInvoice {
                amount_minor,
                paid_at,
            } => {
                let opened = self.opened()?;
                require_time("paid_at", paid_at)?;
                if let Some(paid) = &self.paid {
                    if paid.amount_minor == amount_minor && paid.paid_at == paid_at {
                        return Ok(None);
                    }
                    return Err(DomainError::conflict(
                        "invoice_paid",
                        format!("invoice `{}` is already paid", opened.invoice_id),
                    ));
                }
                let issued = match (self.status, &self.issued) {
                    (InvoiceStatus::Issued, Some(issued)) => issued,
                    (InvoiceStatus::Voided, _) => {
                        return Err(DomainError::conflict(
                            "invoice_voided",
                            format!("invoice `{}` is void and cannot be paid", opened.invoice_id),
                        ));
                    }
                    _ => {
                        return Err(DomainError::conflict(
                            "invoice_not_issued",
                            format!(
                                "invoice `{}` is a draft; issue it before recording payment",
                                opened.invoice_id
                            ),
                        ));
                    }
                };
                if amount_minor != issued.total_minor {
                    return Err(DomainError::invalid(
                        "amount_minor",
                        format!(
                            "a payment must be exactly the total, {} {}, got {amount_minor}",
                            issued.total_minor, issued.currency
                        ),
                    ));
                }
                if paid_at < issued.issued_at {
                    return Err(DomainError::invalid(
                        "paid_at",
                        "`paid_at` must not be before the invoice was issued",
                    ));
                }
                Ok(Some(InvoiceEvent::InvoicePaid(InvoicePaid {
                    tenant: opened.tenant.clone(),
                    invoice_id: opened.invoice_id.clone(),
                    amount_minor,
                    currency: opened.currency.clone(),
                    paid_at,
                })))
            }
            InvoiceCommand::VoidInvoice { reason } => {
                let opened = self.opened()?;
                require_text("reason", &reason, 500)?;
                match self.status {
                    InvoiceStatus::Voided => Ok(None),
                    InvoiceStatus::Paid => Err(DomainError::conflict(
                        "invoice_paid",
                        format!(
                            "invoice `{}` is paid and cannot be voided; issue a credit note instead",
                            opened.invoice_id
                        ),
                    )),
                    _ => Ok(Some(InvoiceEvent::InvoiceVoided(InvoiceVoided {
                        tenant: opened.tenant.clone(),
                        invoice_id: opened.invoice_id.clone(),
                        reason,
                    }))),
                }
            }
        }
    }

    fn require_issuable(&self, opened: &InvoiceOpened) -> Result<(), DomainError> {
        match self.status {
            InvoiceStatus::Draft if self.lines.is_empty() => Err(DomainError::conflict(
                "invoice_empty",
                format!(
                    "invoice `{}` has no lines; add at least one before issuing it",
                    opened.invoice_id
                ),
            )),
            InvoiceStatus::Draft => Ok(()),
            InvoiceStatus::Issued | InvoiceStatus::Paid => Err(DomainError::conflict(
                "invoice_already_issued",
                format!(
                    "invoice `{}` is already issued with other tax or time",
                    opened.invoice_id
                ),
            )),
            _ => Err(DomainError::conflict(
                "invoice_not_draft",
                format!("invoice `{}` is {:?}", opened.invoice_id, self.status),
            )),
        }
    }
}

impl Aggregate for Invoice {
    const TYPE: &'static str = super::INVOICE_STREAM_TYPE;
    type Command = InvoiceCommand;
    type Event = InvoiceEvent;
    type Error = DomainError;
    type Services = InvoiceServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // Every check is in `decide`, before the event: a refused command writes nothing.
        if let Some(event) = self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InvoiceEvent::InvoiceOpened(e) => {
                self.status = InvoiceStatus::Draft;
                self.opened = Some(e);
            }
            InvoiceEvent::InvoiceLineAdded(e) => {
                self.subtotal_minor = self.subtotal_minor.saturating_add(e.amount_minor);
                self.lines.insert(e.line_id.clone(), e);
            }
            InvoiceEvent::CreditApplied(e) => {
                self.credits_minor = self.credits_minor.saturating_add(e.amount_minor);
                self.credits.insert(e.credit_id.clone(), e);
            }
            InvoiceEvent::InvoiceIssued(e) => {
                self.status = InvoiceStatus::Issued;
                self.issued = Some(e);
            }
            InvoiceEvent::InvoicePaid(e) => {
                self.status = InvoiceStatus::Paid;
                self.paid = Some(e);
            }
            InvoiceEvent::InvoiceVoided(_) => self.status = InvoiceStatus::Voided,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Budget
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetCommand {
    /// Sets the month's spending limit, or changes it (the currency stays). The same again is a
    /// no-op.
    SetBudget {
        tenant: String,
        month: String,
        currency: String,
        limit_minor: i64,
    },
    /// Records the cost of some usage against the month's budget. Idempotent by `usage_id`.
    RecordUsage {
        usage_id: String,
        meter: String,
        quantity: i64,
        cost_minor: i64,
    },
}

/// What the command path knows beyond this aggregate, passed in when a command is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetServices {
    pub tenant: TenantStatus,
    /// The currency the tenant is billed in, if it has one: budgets must use it.
    pub tenant_currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSet {
    pub tenant: String,
    pub month: String,
    pub currency: String,
    pub limit_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecorded {
    pub tenant: String,
    pub month: String,
    pub usage_id: String,
    pub meter: String,
    pub quantity: i64,
    pub cost_minor: i64,
    pub currency: String,
    /// Spent in the month including this usage.
    pub spent_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetThresholdReached {
    pub tenant: String,
    pub month: String,
    pub threshold_pct: i32,
    pub spent_minor: i64,
    pub limit_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetEvent {
    BudgetSet(BudgetSet),
    UsageRecorded(UsageRecorded),
    BudgetThresholdReached(BudgetThresholdReached),
}

impl DomainEvent for BudgetEvent {
    fn event_type(&self) -> String {
        Payload::event_type(self).to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Payload for BudgetEvent {
    fn event_type(&self) -> &'static str {
        match self {
            BudgetEvent::BudgetSet(_) => "billing.BudgetSet",
            BudgetEvent::UsageRecorded(_) => "billing.UsageRecorded",
            BudgetEvent::BudgetThresholdReached(_) => "billing.BudgetThresholdReached",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            BudgetEvent::BudgetSet(e) => json_of(e),
            BudgetEvent::UsageRecorded(e) => json_of(e),
            BudgetEvent::BudgetThresholdReached(e) => json_of(e),
        }
    }

    fn from_json(t: &str, v: serde_json::Value) -> Option<Result<Self, String>> {
        Some(match t {
            "billing.BudgetSet" => parse(t, v).map(BudgetEvent::BudgetSet),
            "billing.UsageRecorded" => parse(t, v).map(BudgetEvent::UsageRecorded),
            "billing.BudgetThresholdReached" => {
                parse(t, v).map(BudgetEvent::BudgetThresholdReached)
            }
            _ => return None,
        })
    }

    /// Usage records are billing's bulk: while the latest published schema is v1, they are
    /// written straight to Avro binary (a test holds the bytes equal to the generic encoder's).
    fn encode(&self, registry: &Registry) -> Result<(SchemaId, Vec<u8>), SchemaError> {
        match (self, registry.latest(USAGE_RECORDED)) {
            (BudgetEvent::UsageRecorded(u), Some(info)) if info.version == 1 => {
                Ok((info.id, u.encode_v1()))
            }
            _ => registry.encode_json(Payload::event_type(self), &self.to_json()),
        }
    }
}

const USAGE_RECORDED: &str = "billing.UsageRecorded";

impl UsageRecorded {
    /// Reads a stored payload: straight from Avro binary when it was written with the v1 schema
    /// and v1 is still the latest (the hot path of projections and replays), through the
    /// registry's resolution otherwise.
    pub fn decode(
        registry: &Registry,
        schema_id: SchemaId,
        payload: &[u8],
    ) -> Result<UsageRecorded, String> {
        match registry.latest(USAGE_RECORDED) {
            Some(info) if info.version == 1 && info.id == schema_id => {
                Self::decode_v1(payload).map_err(|e| format!("{USAGE_RECORDED} payload: {e}"))
            }
            _ => {
                let json = registry
                    .decode_json(schema_id, payload)
                    .map_err(|e| e.to_string())?;
                parse(USAGE_RECORDED, json)
            }
        }
    }

    /// Avro binary of the v1 schema, fields in schema order.
    fn encode_v1(&self) -> Vec<u8> {
        use annals_events::avro::{put_bytes, put_long};
        let mut out = Vec::with_capacity(
            40 + self.tenant.len() + self.month.len() + self.usage_id.len() + self.meter.len(),
        );
        put_bytes(&mut out, self.tenant.as_bytes());
        put_bytes(&mut out, self.month.as_bytes());
        put_bytes(&mut out, self.usage_id.as_bytes());
        put_bytes(&mut out, self.meter.as_bytes());
        put_long(&mut out, self.quantity);
        put_long(&mut out, self.cost_minor);
        put_bytes(&mut out, self.currency.as_bytes());
        put_long(&mut out, self.spent_minor);
        out
    }

    /// The inverse of [`UsageRecorded::encode_v1`]; damaged or trailing bytes are an error.
    fn decode_v1(bytes: &[u8]) -> Result<UsageRecorded, annals_events::avro::DecodeError> {
        let mut c = annals_events::avro::Cursor::new(bytes);
        let u = UsageRecorded {
            tenant: c.str("tenant")?.to_owned(),
            month: c.str("month")?.to_owned(),
            usage_id: c.str("usage_id")?.to_owned(),
            meter: c.str("meter")?.to_owned(),
            quantity: c.long("quantity")?,
            cost_minor: c.long("cost_minor")?,
            currency: c.str("currency")?.to_owned(),
            spent_minor: c.long("spent_minor")?,
        };
        if !c.is_empty() {
            return Err(annals_events::avro::DecodeError {
                field: "spent_minor",
                problem: "trailing bytes",
            });
        }
        Ok(u)
    }
}

/// What was recorded for a `usage_id`, to tell a retry from a different usage under the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedUsage {
    pub meter: String,
    pub quantity: i64,
    pub cost_minor: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub set: Option<BudgetSet>,
    pub spent_minor: i64,
    pub usages: BTreeMap<String, RecordedUsage>,
    /// Thresholds (percent) already announced.
    pub reached: Vec<i32>,
}

impl Budget {
    fn tenant(&self) -> &str {
        self.set.as_ref().map_or("", |s| s.tenant.as_str())
    }

    fn decide(
        &self,
        command: BudgetCommand,
        services: &BudgetServices,
    ) -> Result<Vec<BudgetEvent>, DomainError> {
        let tenant = match &command {
            BudgetCommand::SetBudget { tenant, .. } => tenant.as_str(),
            BudgetCommand::RecordUsage { .. } => self.tenant(),
        };
        services.tenant.require_active(tenant)?;
        match command {
            BudgetCommand::SetBudget {
                tenant,
                month,
                currency,
                limit_minor,
            } => {
                check_id("tenant", &tenant, 64)?;
                check_month("month", &month)?;
                check_currency("currency", &currency)?;
                require_tenant_currency(
                    "currency",
                    &currency,
                    services.tenant_currency.as_deref(),
                )?;
                if limit_minor <= 0 {
                    return Err(DomainError::invalid(
                        "limit_minor",
                        "`limit_minor` must be above 0",
                    ));
                }
                let wanted = BudgetSet {
                    tenant,
                    month,
                    currency,
                    limit_minor,
                };
                match &self.set {
                    Some(existing) if *existing == wanted => Ok(vec![]),
                    Some(existing)
                        if existing.tenant != wanted.tenant || existing.month != wanted.month =>
                    {
                        Err(DomainError::conflict(
                            "budget_mismatch",
                            format!(
                                "this is the budget of `{}` for {}, not of `{}` for {}",
                                existing.tenant, existing.month, wanted.tenant, wanted.month
                            ),
                        ))
                    }
                    Some(existing) if existing.currency != wanted.currency => {
                        Err(DomainError::conflict(
                            "budget_currency_fixed",
                            format!(
                                "the budget for {} is in {}; its currency cannot change",
                                existing.month, existing.currency
                            ),
                        ))
                    }
                    _ => Ok(vec![BudgetEvent::BudgetSet(wanted)]),
                }
            }
            BudgetCommand::RecordUsage {
                usage_id,
                meter,
                quantity,
                cost_minor,
            } => {
                let set = self.set.as_ref().ok_or_else(|| {
                    DomainError::not_found(
                        "unknown_budget",
                        "no budget is set for this month; set one first",
                    )
                })?;
                check_id("usage_id", &usage_id, 128)?;
                check_id("meter", &meter, 128)?;
                if quantity <= 0 {
                    return Err(DomainError::invalid(
                        "quantity",
                        "`quantity` must be above 0",
                    ));
                }
                if cost_minor < 0 {
                    return Err(DomainError::invalid(
                        "cost_minor",
                        "`cost_minor` must not be negative",
                    ));
                }
                let wanted = RecordedUsage {
                    meter,
                    quantity,
                    cost_minor,
                };
                if let Some(existing) = self.usages.get(&usage_id) {
                    return if *existing == wanted {
                        Ok(vec![])
                    } else {
                        Err(DomainError::conflict(
                            "usage_exists",
                            format!(
                                "usage `{usage_id}` is already recorded with other attributes; use another usage id"
                            ),
                        ))
                    };
                }
                let spent_minor = self
                    .spent_minor
                    .checked_add(cost_minor)
                    .ok_or_else(|| overflow("cost_minor"))?;
                let mut events = vec![BudgetEvent::UsageRecorded(UsageRecorded {
                    tenant: set.tenant.clone(),
                    month: set.month.clone(),
                    usage_id,
                    meter: wanted.meter,
                    quantity,
                    cost_minor,
                    currency: set.currency.clone(),
                    spent_minor,
                })];
                for pct in BUDGET_THRESHOLDS_PCT {
                    let crossed = i128::from(spent_minor) * 100
                        >= i128::from(set.limit_minor) * i128::from(pct);
                    if crossed && !self.reached.contains(&pct) {
                        events.push(BudgetEvent::BudgetThresholdReached(
                            BudgetThresholdReached {
                                tenant: set.tenant.clone(),
                                month: set.month.clone(),
                                threshold_pct: pct,
                                spent_minor,
                                limit_minor: set.limit_minor,
                                currency: set.currency.clone(),
                            },
                        ));
                    }
                }
                Ok(events)
            }
        }
    }
}

impl Aggregate for Budget {
    const TYPE: &'static str = super::BUDGET_STREAM_TYPE;
    type Command = BudgetCommand;
    type Event = BudgetEvent;
    type Error = DomainError;
    type Services = BudgetServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // Every check is in `decide`, before the first event: a refused command writes nothing.
        for event in self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BudgetEvent::BudgetSet(e) => self.set = Some(e),
            BudgetEvent::UsageRecorded(e) => {
                self.spent_minor = e.spent_minor;
                self.usages.insert(
                    e.usage_id,
                    RecordedUsage {
                        meter: e.meter,
                        quantity: e.quantity,
                        cost_minor: e.cost_minor,
                    },
                );
            }
            BudgetEvent::BudgetThresholdReached(e) => {
                if !self.reached.contains(&e.threshold_pct) {
                    self.reached.push(e.threshold_pct);
                }
            }
        }
    }
}
