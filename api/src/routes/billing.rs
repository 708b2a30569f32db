//! Billing: a tenant's invoices and monthly budgets. Scope `billing:write`.

use annals_domain::billing::{BudgetCommand, InvoiceCommand};
use annals_processors::Command;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{Body, bad_path, execute, parse};
use crate::auth::Caller;
use crate::dto::{
    AddLineRequest, ApplyCreditRequest, CommandHeaders, CommandResponse, IssueInvoiceRequest,
    OpenInvoiceRequest, PayInvoiceRequest, RecordUsageRequest, SetBudgetRequest,
    VoidInvoiceRequest,
};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, command_meta};

/// The scope every billing route needs.
pub const SCOPE: &str = "billing:write";

type Answer = Result<(StatusCode, Json<CommandResponse>), ApiError>;

/// Runs `command` on invoice `invoice_id` of `tenant`.
async fn invoice(
    state: &AppState,
    meta: annals_processors::CommandMeta,
    tenant: String,
    invoice_id: String,
    command: InvoiceCommand,
) -> Answer {
    let command = Command::Invoice {
        tenant,
        invoice_id,
        command,
    };
    execute(state, meta, command).await
}

/// Opens a draft invoice. Idempotent: the same again answers 200 with no events.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/invoices", tag = "billing",
    request_body = OpenInvoiceRequest,
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Opened", body = CommandResponse),
        (status = 200, description = "Already open exactly so; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Open with other attributes (`invoice_exists`), or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn open_invoice(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(tenant) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: OpenInvoiceRequest = parse(&state, &headers, raw)?;
    let invoice_id = req.invoice_id.clone();
    let command = req.into_command(tenant.clone(), meta.occurred_at);
    invoice(&state, meta, tenant, invoice_id, command).await
}

/// Adds a line to a draft invoice, priced flat or by volume tiers. Idempotent by `line_id`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/invoices/{invoice_id}/lines", tag = "billing",
    request_body = AddLineRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("invoice_id" = String, Path, description = "Invoice id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Added", body = CommandResponse),
        (status = 200, description = "The same line is already on the invoice; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or invoice", body = ErrorBody),
        (status = 409, description = "Not a draft, a line with that id differs, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid (e.g. `tiers[1].up_to`); `field` names it", body = ErrorBody),
    ))]
pub async fn add_line(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, invoice_id)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: AddLineRequest = parse(&state, &headers, raw)?;
    invoice(&state, meta, tenant, invoice_id, req.into()).await
}

/// Credits an amount (e.g. an SLA service credit) against a draft. Idempotent by `credit_id`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/invoices/{invoice_id}/credits", tag = "billing",
    request_body = ApplyCreditRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("invoice_id" = String, Path, description = "Invoice id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Applied", body = CommandResponse),
        (status = 200, description = "The same credit is already applied; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or invoice", body = ErrorBody),
        (status = 409, description = "Not a draft, a credit with that id differs, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid, or the credit exceeds what is left to credit", body = ErrorBody),
    ))]
pub async fn apply_credit(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, invoice_id)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: ApplyCreditRequest = parse(&state, &headers, raw)?;
    invoice(&state, meta, tenant, invoice_id, req.into()).await
}

/// Computes tax and totals and issues the draft.
///
/// The `billing.InvoiceIssued` event carries `subtotal_minor`, `credits_minor`, `tax_minor`
/// (rounded half up) and `total_minor`. The same again (same tax and `issued_at`) answers 200
/// with no events.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/invoices/{invoice_id}/issue", tag = "billing",
    request_body = IssueInvoiceRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("invoice_id" = String, Path, description = "Invoice id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Issued", body = CommandResponse),
        (status = 200, description = "Already issued exactly so; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or invoice", body = ErrorBody),
        (status = 409, description = "No lines (`invoice_empty`), issued otherwise, void, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn issue_invoice(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, invoice_id)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: IssueInvoiceRequest = parse(&state, &headers, raw)?;
    let command = req.into_command(meta.occurred_at);
    invoice(&state, meta, tenant, invoice_id, command).await
}

/// Records payment of exactly the issued total.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/invoices/{invoice_id}/pay", tag = "billing",
    request_body = PayInvoiceRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("invoice_id" = String, Path, description = "Invoice id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Paid", body = CommandResponse),
        (status = 200, description = "Already paid exactly so; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or invoice", body = ErrorBody),
        (status = 409, description = "Not issued, void, paid otherwise, or version conflict", body = ErrorBody),
        (status = 422, description = "Not exactly the total (`amount_minor`), or another field is invalid", body = ErrorBody),
    ))]
pub async fn pay_invoice(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, invoice_id)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: PayInvoiceRequest = parse(&state, &headers, raw)?;
    let command = req.into_command(meta.occurred_at);
    invoice(&state, meta, tenant, invoice_id, command).await
}

/// Voids a draft or issued invoice; a paid one cannot be voided.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/invoices/{invoice_id}/void", tag = "billing",
    request_body = VoidInvoiceRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("invoice_id" = String, Path, description = "Invoice id"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Voided", body = CommandResponse),
        (status = 200, description = "Already void; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant or invoice", body = ErrorBody),
        (status = 409, description = "Paid (`invoice_paid`), or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn void_invoice(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, invoice_id)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: VoidInvoiceRequest = parse(&state, &headers, raw)?;
    let command = InvoiceCommand::VoidInvoice { reason: req.reason };
    invoice(&state, meta, tenant, invoice_id, command).await
}

/// Sets the month's spending limit, or changes it (the currency stays). The same again answers
/// 200 with no events.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/budgets/{month}", tag = "billing",
    request_body = SetBudgetRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("month" = String, Path, description = "`YYYY-MM`", example = "2026-01"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Set", body = CommandResponse),
        (status = 200, description = "Set exactly so already; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Another currency (`budget_currency_fixed`), or version conflict", body = ErrorBody),
        (status = 422, description = "A field (or the month) is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn set_budget(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, month)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: SetBudgetRequest = parse(&state, &headers, raw)?;
    let command = Command::Budget {
        tenant: tenant.clone(),
        month: month.clone(),
        command: BudgetCommand::SetBudget {
            tenant,
            month,
            currency: req.currency,
            limit_minor: req.limit_minor,
        },
    };
    execute(&state, meta, command).await
}

/// Records the cost of some usage against the month's budget. Idempotent by `usage_id`.
///
/// Crossing 80 % and 95 % of the limit also writes `billing.BudgetThresholdReached`, once each.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/budgets/{month}/usage", tag = "billing",
    request_body = RecordUsageRequest,
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("month" = String, Path, description = "`YYYY-MM`", example = "2026-01"),
        CommandHeaders,
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Recorded (with any thresholds reached)", body = CommandResponse),
        (status = 200, description = "The same usage is already recorded; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `billing:write` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant, or no budget set for the month", body = ErrorBody),
        (status = 409, description = "A usage with that id differs, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn record_usage(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, month)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: RecordUsageRequest = parse(&state, &headers, raw)?;
    let command = Command::Budget {
        tenant,
        month,
        command: req.into(),
    };
    execute(&state, meta, command).await
}
