//! The routes, one module per area. Handlers parse and authorize, call the engine, translate.

pub mod billing;
pub mod history;
pub mod models;
pub mod ops;
pub mod policy;
pub mod privacy;
pub mod signals;
pub mod tenants;

use annals_processors::{Command, CommandMeta, Outcome};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};

use crate::dto::CommandResponse;
use crate::error::ApiError;
use crate::{AppState, body};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/tenants", post(tenants::provision))
        .route("/v1/tenants/{tenant}/limits", put(tenants::change_limits))
        .route("/v1/tenants/{tenant}/suspend", post(tenants::suspend))
        .route("/v1/tenants/{tenant}/reactivate", post(tenants::reactivate))
        .route("/v1/tenants/{tenant}/archive", post(tenants::archive))
        .route("/v1/tenants/{tenant}/signals", post(signals::ingest))
        .route(
            "/v1/tenants/{tenant}/contacts",
            post(privacy::register_contact),
        )
        .route(
            "/v1/tenants/{tenant}/subjects/{subject}/erase",
            post(privacy::erase),
        )
        .route(
            "/v1/tenants/{tenant}/subjects/{subject}/export",
            get(privacy::export),
        )
        .route(
            "/v1/tenants/{tenant}/streams/{*stream}",
            get(history::stream),
        )
        .route("/v1/tenants/{tenant}/invoices", post(billing::open_invoice))
        .route(
            "/v1/tenants/{tenant}/invoices/{invoice_id}/lines",
            post(billing::add_line),
        )
        .route(
            "/v1/tenants/{tenant}/invoices/{invoice_id}/credits",
            post(billing::apply_credit),
        )
        .route(
            "/v1/tenants/{tenant}/invoices/{invoice_id}/issue",
            post(billing::issue_invoice),
        )
        .route(
            "/v1/tenants/{tenant}/invoices/{invoice_id}/pay",
            post(billing::pay_invoice),
        )
        .route(
            "/v1/tenants/{tenant}/invoices/{invoice_id}/void",
            post(billing::void_invoice),
        )
        .route(
            "/v1/tenants/{tenant}/budgets/{month}",
            put(billing::set_budget),
        )
        .route(
            "/v1/tenants/{tenant}/budgets/{month}/usage",
            post(billing::record_usage),
        )
        .route(
            "/v1/tenants/{tenant}/models/{model}/versions",
            post(models::register_version),
        )
        .route(
            "/v1/tenants/{tenant}/models/{model}/versions/{version}/retire",
            post(models::retire_version),
        )
        .route(
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/deploy",
            post(models::deploy),
        )
        .route(
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/shift",
            post(models::shift_traffic),
        )
        .route(
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/promote",
            post(models::promote),
        )
        .route(
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/rollback",
            post(models::rollback),
        )
        .route(
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/retire",
            post(models::retire_deployment),
        )
        .route("/v1/tenants/{tenant}/policies", post(policy::create))
        .route(
            "/v1/tenants/{tenant}/policies/{policy_id}",
            put(policy::change),
        )
        .route(
            "/v1/tenants/{tenant}/policies/{policy_id}/activate",
            post(policy::activate),
        )
        .route(
            "/v1/tenants/{tenant}/policies/{policy_id}/rollback",
            post(policy::rollback),
        )
        .route(
            "/v1/tenants/{tenant}/policies/{policy_id}/decisions",
            post(policy::record_decision),
        )
        .route(
            "/v1/tenants/{tenant}/policies/{policy_id}/dry-run",
            post(policy::dry_run),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint; see GET /openapi.json for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see GET /openapi.json",
    )
}

/// A path parameter that could not be read.
pub fn bad_path(e: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::bad_request("bad_path", format!("the URL path could not be read: {e}"))
}

/// A request body as buffered by axum.
pub type Body = Result<Bytes, BytesRejection>;

/// Parses the JSON body of a command (one JSON document; NDJSON is refused).
pub fn parse<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    raw: Body,
) -> Result<T, ApiError> {
    body::format(headers, false)?;
    let bytes = body::bytes(raw, state.inner.max_body_bytes)?;
    body::json(&bytes, "")
}

/// Runs a command and answers 201 if it wrote events, 200 if it was an idempotent repeat.
pub async fn execute(
    state: &AppState,
    meta: CommandMeta,
    command: Command,
) -> Result<(StatusCode, Json<CommandResponse>), ApiError> {
    let outcome = state.inner.engine.execute(command, meta).await?;
    Ok(respond(outcome))
}

/// 201 with the outcome if events were written, else 200.
pub fn respond(outcome: Outcome) -> (StatusCode, Json<CommandResponse>) {
    let status = written_status(&outcome);
    (status, Json(outcome.into()))
}

/// 201 if the command wrote events, 200 if it changed nothing.
pub fn written_status(outcome: &Outcome) -> StatusCode {
    if outcome.events.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}
