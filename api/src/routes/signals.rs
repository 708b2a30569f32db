//! Signal ingest: a JSON array or NDJSON, validated whole, then one command per source.

use std::collections::HashMap;

use annals_domain::error::check_id;
use annals_domain::ingest::{IngestCommand, MAX_BATCH, SignalInput, validate_signal};
use annals_processors::{Command, CommandMeta};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::bad_path;
use crate::auth::Caller;
use crate::body::{self, Format};
use crate::dto::{CommandHeaders, IngestResponse, SignalDto, SourceResult};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, command_meta};

/// Ingests signals of one tenant. The whole body is parsed and validated before anything is
/// written; then the signals are grouped by source (order kept) and each source's go through
/// its `Source` aggregate, at most 10,000 per command. A signal seen before (same `source`,
/// `signal_id` and `ts`) is counted as a duplicate and not written again, so retrying a whole
/// request is always safe.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/signals", tag = "ingest",
    request_body(description = "A JSON array of signals, or NDJSON: one signal per line", content(
        (Vec<SignalDto> = "application/json"),
        (SignalDto = "application/x-ndjson"),
    )),
    params(("tenant" = String, Path, description = "Tenant id"), CommandHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Written (or recognised as duplicates)", body = IngestResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Other tenant's token, no `signals:write` scope, or tenant suspended", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
        (status = 409, description = "Version conflict (If-Match)", body = ErrorBody),
        (status = 413, description = "Body over [server] max_body_bytes", body = ErrorBody),
        (status = 415, description = "Neither JSON nor NDJSON", body = ErrorBody),
        (status = 422, description = "A signal is invalid; `field` names it", body = ErrorBody),
        (status = 429, description = "Over the tenant's rate; see Retry-After", body = ErrorBody),
    ))]
pub async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestResponse>, ApiError> {
    let Path(tenant) = path.map_err(bad_path)?;
    caller.require(&tenant, "signals:write")?;
    let format = body::format(&headers, true)?;
    let meta = command_meta(&headers, &caller)?;
    let bytes = body::bytes(raw, state.inner.max_body_bytes)?;
    let by_source = parse(&bytes, format)?;
    if meta.expected_version.is_some() && by_source.len() > 1 {
        return Err(ApiError::bad_request(
            "if_match_needs_one_source",
            format!(
                "If-Match is a version of one stream, but the body has signals of {} sources; send one source per request to use it",
                by_source.len()
            ),
        )
        .with_field("If-Match"));
    }
    let count: usize = by_source.iter().map(|(_, s)| s.len()).sum();
    let tenant_rate = state.inner.engine.tenant_rate(&tenant);
    if let Err(secs) = state.inner.rate.take(&tenant, tenant_rate, count as u64) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "tenant `{tenant}` is over its rate of signals per second (its limits.rate_per_second, or [server] rate_per_second); retry after {secs} s"
            ),
        );
        e.retry_after = Some(secs);
        return Err(e);
    }
    let sources = by_source.len();
    let mut tasks = Vec::with_capacity(sources);
    for (source, signals) in by_source {
        let engine = state.inner.engine.clone();
        let tenant = tenant.clone();
        let meta = meta.clone();
        tasks.push(tokio::spawn(async move {
            run_source(&engine, tenant, source, signals, meta).await
        }));
    }
    let mut results = Vec::with_capacity(sources);
    for t in tasks {
        results.push(
            t.await
                .map_err(|e| ApiError::internal(format!("an ingest task failed: {e}")))?,
        );
    }
    let mut out = IngestResponse {
        accepted: 0,
        duplicates: 0,
        sources: Vec::with_capacity(sources),
    };
    let mut first_error = None;
    for r in results {
        match r {
            Ok(s) => {
                out.accepted += s.accepted;
                out.duplicates += s.duplicates;
                out.sources.push(s);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(mut e) = first_error {
        if out.accepted > 0 {
            e.message.push_str(
                "; signals of other sources in this request were written: retrying the whole request is safe (they count as duplicates)",
            );
        }
        return Err(e);
    }
    Ok(Json(out))
}

/// Parses and validates the whole body; groups the signals by source, in order of appearance.
fn parse(bytes: &[u8], format: Format) -> Result<Vec<(String, Vec<SignalInput>)>, ApiError> {
    let signals: Vec<(String, SignalDto)> = match format {
        Format::Json => body::json::<Vec<SignalDto>>(bytes, "signals")?
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("signals[{i}]"), s))
            .collect(),
        Format::Ndjson => body::ndjson::<SignalDto>(bytes)?
            .into_iter()
            .map(|(line, s)| (format!("line {line}"), s))
            .collect(),
    };
    if signals.is_empty() {
        return Err(ApiError::invalid(
            "signals",
            "the body holds no signals: send at least one",
        ));
    }
    let mut groups: Vec<(String, Vec<SignalInput>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, (place, dto)) in signals.into_iter().enumerate() {
        let (source, input) = dto.into_input();
        let invalid = |field: String, message: &str| {
            ApiError::invalid(field.clone(), format!("`{field}`: {message}"))
        };
        check_id("source", &source, 64)
            .map_err(|e| invalid(format!("{place}.source"), &e.message))?;
        validate_signal(&input, i).map_err(|e| {
            // The domain names the field by the signal's index; say it as the body does.
            let within = format!("signals[{i}]");
            let field = e
                .field
                .as_deref()
                .and_then(|f| f.strip_prefix(&within))
                .map_or_else(|| place.clone(), |rest| format!("{place}{rest}"));
            invalid(field, &e.message)
        })?;
        let g = *index.entry(source.clone()).or_insert_with(|| {
            groups.push((source, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(input);
    }
    Ok(groups)
}

/// One source's signals, in commands of at most [`MAX_BATCH`], one after the other.
async fn run_source(
    engine: &annals_processors::CommandPath,
    tenant: String,
    source: String,
    mut signals: Vec<SignalInput>,
    mut meta: CommandMeta,
) -> Result<SourceResult, ApiError> {
    let mut result = SourceResult {
        source: source.clone(),
        accepted: 0,
        duplicates: 0,
        stream_version: 0,
    };
    while !signals.is_empty() {
        let rest = signals.split_off(signals.len().min(MAX_BATCH));
        let command = Command::Ingest(IngestCommand::IngestSignals {
            tenant: tenant.clone(),
            source: source.clone(),
            signals,
        });
        let outcome = engine.execute(command, meta.clone()).await?;
        result.accepted += outcome.events.len() as u64;
        result.duplicates += outcome.duplicates;
        result.stream_version = outcome.stream_version;
        // If-Match holds for the first command; the next ones follow it.
        meta.expected_version = None;
        signals = rest;
    }
    Ok(result)
}
