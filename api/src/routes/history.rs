//! History: the events of one stream of a tenant, read from the log.

use annals_events::LogError;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::bad_path;
use crate::auth::Caller;
use crate::dto::{HistoryQuery, HistoryResponse};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, EVENTS_TOPIC};

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

/// The events of a stream of the tenant (e.g. `ingest.Source/acme/web`, `tenancy.Tenant/acme`),
/// in order, with their payloads decoded.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/streams/{stream}", tag = "audit",
    params(
        ("tenant" = String, Path, description = "Tenant id"),
        ("stream" = String, Path, description = "`<aggregate type>/<tenant>[/<id>]`, e.g. `ingest.Source/acme/web`"),
        HistoryQuery,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stream's events", body = HistoryResponse),
        (status = 400, description = "Bad query or a stream of another tenant", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token or no `audit:read` scope", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let Path((tenant, stream)) = path.map_err(bad_path)?;
    caller.require(&tenant, "audit:read")?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(
            "bad_query",
            format!("{}; use ?from_version=N&limit=M", e.body_text()),
        )
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("`limit` must be 1 to {MAX_LIMIT}"),
        ));
    }
    if stream.split('/').nth(1) != Some(tenant.as_str()) {
        return Err(ApiError::bad_request(
            "foreign_stream",
            format!(
                "stream `{stream}` is not a stream of tenant `{tenant}`; its streams are named `<type>/{tenant}[/<id>]`"
            ),
        )
        .with_field("stream"));
    }
    let from = q.from_version.unwrap_or(0);
    let scan_state = state.clone();
    let scan_stream = stream.clone();
    let (events, more) =
        tokio::task::spawn_blocking(move || scan(&scan_state, &tenant, &scan_stream, from, limit))
            .await
            .map_err(|e| ApiError::internal(format!("the history scan failed: {e}")))??;
    if events.is_empty() && from <= 1 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_stream",
            format!("stream `{stream}` has no events"),
        )
        .with_field("stream"));
    }
    let next_from_version = more.then(|| {
        events
            .last()
            .and_then(|e| e["stream_version"].as_u64())
            .map_or(from, |v| v + 1)
    });
    Ok(Json(HistoryResponse {
        stream,
        events,
        next_from_version,
    }))
}

/// Reads the tenant's partition from its start, keeping the stream's events from `from`.
/// Returns the events and whether there were more than `limit`.
fn scan(
    state: &AppState,
    tenant: &str,
    stream: &str,
    from: u64,
    limit: usize,
) -> Result<(Vec<serde_json::Value>, bool), ApiError> {
    let topic = match state.inner.log.topic(EVENTS_TOPIC) {
        Ok(t) => t,
        Err(LogError::NoTopic(_)) => return Ok((Vec::new(), false)),
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    let partition = topic.partition_for(tenant);
    let mut reader = partition.reader(0);
    let mut out = Vec::new();
    while let Some(env) = reader
        .next_ref()
        .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))?
    {
        if env.stream != stream || env.tenant != tenant || env.stream_version < from {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        let env = env.to_owned();
        let payload = state
            .inner
            .registry
            .decode_json(env.schema_id, &env.payload)
            .map_err(|e| {
                ApiError::internal(format!(
                    "event {} (partition {}, seq {}): {e}",
                    env.event_id, env.partition, env.seq
                ))
            })?;
        out.push(env.to_json(payload));
    }
    Ok((out, false))
}
