//! Tenancy: provisioning, limits and lifecycle. Operator token only.

use annals_domain::tenancy::TenantCommand;
use annals_processors::Command;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::bad_path;
use crate::auth::Caller;
use crate::dto::{
    CommandHeaders, CommandResponse, LimitsDto, ProvisionTenantRequest, SuspendRequest,
};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, body, command_meta};

type Body = Result<Bytes, BytesRejection>;

/// Runs a tenancy command for the operator.
async fn run(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    tenant: String,
    command: TenantCommand,
) -> Result<CommandResponse, ApiError> {
    let meta = command_meta(headers, caller)?;
    let outcome = state
        .inner
        .engine
        .execute(Command::Tenancy { tenant, command }, meta)
        .await?;
    Ok(outcome.into())
}

/// Parses a JSON body of a tenancy command.
fn parse<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    raw: Body,
) -> Result<T, ApiError> {
    body::format(headers, false)?;
    let bytes = body::bytes(raw, state.inner.max_body_bytes)?;
    body::json(&bytes, "")
}

/// Provisions a tenant. Idempotent: the same provisioning again answers 200 with no events.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenancy",
    request_body = ProvisionTenantRequest,
    params(CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Provisioned", body = CommandResponse),
        (status = 200, description = "Already provisioned exactly so; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 409, description = "Exists with other attributes, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ))]
pub async fn provision(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    raw: Body,
) -> Result<(StatusCode, Json<CommandResponse>), ApiError> {
    caller.require_operator()?;
    let req: ProvisionTenantRequest = parse(&state, &headers, raw)?;
    let tenant = req.tenant.clone();
    let out = run(&state, &caller, &headers, tenant, req.into()).await?;
    let status = if out.events.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(out)))
}

/// Replaces a tenant's limits.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/limits", tag = "tenancy",
    request_body = LimitsDto,
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed (no events if they were the same)", body = CommandResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Archived, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ))]
pub async fn change_limits(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<CommandResponse>, ApiError> {
    caller.require_operator()?;
    let Path(tenant) = path.map_err(bad_path)?;
    let limits: LimitsDto = parse(&state, &headers, raw)?;
    let command = TenantCommand::ChangeLimits {
        limits: limits.into(),
    };
    Ok(Json(run(&state, &caller, &headers, tenant, command).await?))
}

/// Suspends a tenant: its other commands are refused until it is reactivated.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/suspend", tag = "tenancy",
    request_body = SuspendRequest,
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Suspended (no events if it already was)", body = CommandResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Archived, or version conflict", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ))]
pub async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<CommandResponse>, ApiError> {
    caller.require_operator()?;
    let Path(tenant) = path.map_err(bad_path)?;
    let req: SuspendRequest = parse(&state, &headers, raw)?;
    let command = TenantCommand::SuspendTenant { reason: req.reason };
    Ok(Json(run(&state, &caller, &headers, tenant, command).await?))
}

/// Reactivates a suspended tenant. No body.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/reactivate", tag = "tenancy",
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Active (no events if it already was)", body = CommandResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Archived, or version conflict", body = ErrorBody),
    ))]
pub async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<CommandResponse>, ApiError> {
    caller.require_operator()?;
    let Path(tenant) = path.map_err(bad_path)?;
    let command = TenantCommand::ReactivateTenant;
    Ok(Json(run(&state, &caller, &headers, tenant, command).await?))
}

/// Archives a tenant; final. No body.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/archive", tag = "tenancy",
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Archived (no events if it already was)", body = CommandResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Version conflict", body = ErrorBody),
    ))]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<CommandResponse>, ApiError> {
    caller.require_operator()?;
    let Path(tenant) = path.map_err(bad_path)?;
    let command = TenantCommand::ArchiveTenant;
    Ok(Json(run(&state, &caller, &headers, tenant, command).await?))
}
