//! Privacy: a tenant's contacts (people, so data subjects) and data-subject requests — erase
//! a subject's personal data, export what annals holds about it. Scope `privacy:admin`.

use annals_domain::tenancy::{ContactCommand, contact_stream};
use annals_processors::Command;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{Body, bad_path, execute, parse, respond};
use crate::auth::Caller;
use crate::dto::{
    CommandHeaders, CommandResponse, EraseSubjectRequest, RegisterContactRequest, SubjectExport,
};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, command_meta};

/// The scope every privacy route needs.
pub const SCOPE: &str = "privacy:admin";

type Answer = Result<(StatusCode, Json<CommandResponse>), ApiError>;

/// The subject key store could not answer (e.g. its database is down): a retry can help.
fn key_store_error(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "key_store_unavailable",
        format!("{detail}; the request can be repeated"),
    )
}

/// Registers a contact. Name and email are personal data: sealed in the log under the
/// contact's own key.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/contacts", tag = "privacy",
    request_body = RegisterContactRequest,
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = CommandResponse),
        (status = 200, description = "The same command again; nothing written", body = CommandResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `privacy:admin` scope, or tenant not active", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "The contact exists (`contact_exists`) or was erased (`subject_erased`)", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
pub async fn register_contact(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path(tenant) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let meta = command_meta(&headers, &caller)?;
    let req: RegisterContactRequest = parse(&state, &headers, raw)?;
    let command = Command::Contact {
        tenant: tenant.clone(),
        contact_id: req.contact_id.clone(),
        command: ContactCommand::RegisterContact {
            tenant,
            contact_id: req.contact_id,
            name: req.name,
            email: req.email,
            role: req.role,
        },
    };
    execute(&state, meta, command).await
}

/// Erases a subject's personal data (GDPR art. 17): records `SubjectErased`, then deletes the
/// subject's key. Every personal field sealed under it reads as `[erased]` from then on; the
/// log's hashes and proofs are unchanged. Repeating it is harmless (200).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/subjects/{subject}/erase", tag = "privacy",
    request_body = EraseSubjectRequest,
    params(("tenant" = String, Path, description = "Tenant id"),
        ("subject" = String, Path, description = "The subject's id (a contact id)"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Erasure recorded and key deleted", body = CommandResponse),
        (status = 200, description = "Already erased; the key is gone", body = CommandResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token or no `privacy:admin` scope", body = ErrorBody),
        (status = 404, description = "No such subject (`unknown_subject`)", body = ErrorBody),
        (status = 422, description = "`reason` missing or too long", body = ErrorBody),
        (status = 503, description = "The key store is not available to this server, or could not finish the deletion (`key_store_unavailable`: the erasure is recorded; repeat the request)", body = ErrorBody),
    ))]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let Path((tenant, subject)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let keys = state.subject_keys()?;
    let meta = command_meta(&headers, &caller)?;
    let req: EraseSubjectRequest = parse(&state, &headers, raw)?;
    let command = Command::Contact {
        tenant: tenant.clone(),
        contact_id: subject.clone(),
        command: ContactCommand::EraseSubject {
            reason: req.reason,
            erased_at: annals_events::time::now_micros(),
        },
    };
    let outcome = state.inner.engine.execute(command, meta).await?;
    // The erasure is durable: now the key goes (a retry of this request finishes the job).
    let (t, s) = (tenant.clone(), subject.clone());
    tokio::task::spawn_blocking(move || keys.erase(&t, &s))
        .await
        .map_err(|e| ApiError::internal(format!("the key deletion did not finish: {e}")))?
        .map_err(key_store_error)?;
    state.erased();
    Ok(respond(outcome))
}

/// Everything the log holds about a subject (GDPR art. 15): its events, with personal fields
/// opened — or `[erased]` once it was erased.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/subjects/{subject}/export", tag = "privacy",
    params(("tenant" = String, Path, description = "Tenant id"),
        ("subject" = String, Path, description = "The subject's id (a contact id)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The subject's events", body = SubjectExport),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token or no `privacy:admin` scope", body = ErrorBody),
        (status = 404, description = "Nothing about this subject", body = ErrorBody),
        (status = 503, description = "The key store is not available to this server (`no_key_store`, `key_store_unavailable`)", body = ErrorBody),
    ))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<SubjectExport>, ApiError> {
    let Path((tenant, subject)) = path.map_err(bad_path)?;
    caller.require(&tenant, SCOPE)?;
    let keys = state.subject_keys()?;
    let topic = state
        .inner
        .log
        .topic(crate::EVENTS_TOPIC)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let registry = state.inner.registry.clone();
    let (t, s) = (tenant.clone(), subject.clone());
    // Both read the key store, which may be a database: off the async threads.
    let (events, has_key) = tokio::task::spawn_blocking(move || {
        let events = annals_audit::subjects::subject_events(
            &topic,
            &registry,
            &t,
            &s,
            &contact_stream(&t, &s),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let has_key = keys.exists(&t, &s).map_err(key_store_error)?;
        Ok::<_, ApiError>((events, has_key))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the export did not finish: {e}")))??;
    if events.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_subject",
            format!("annals holds nothing about subject `{subject}` of tenant `{tenant}`"),
        ));
    }
    Ok(Json(SubjectExport {
        erased: !has_key,
        tenant,
        subject,
        events: events
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect(),
    }))
}
