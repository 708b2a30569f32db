//! Operations: health, readiness, Prometheus metrics, the OpenAPI document.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::AppState;
use crate::dto::Status;
use crate::error::{ApiError, ErrorBody};

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Always, while the process serves", body = Status)))]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// The command path runs and the server is not shutting down.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready to take commands", body = Status),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if state.inner.ready.load(Ordering::Relaxed) {
        Ok(Json(Status {
            status: "ready".into(),
        }))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the server is shutting down; send requests to another instance",
        ))
    }
}

/// Prometheus text format: command path counters and log heads.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&state),
    )
}

fn render_metrics(state: &AppState) -> String {
    let s = state.inner.engine.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        // Writing to a String cannot fail.
        writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        )
        .ok();
    };
    metric(
        "annals_commands_accepted_total",
        "counter",
        "Commands accepted by their aggregates and made durable.",
        s.accepted.to_string(),
    );
    metric(
        "annals_commands_refused_total",
        "counter",
        "Commands refused by their aggregates (nothing written).",
        s.refused.to_string(),
    );
    metric(
        "annals_events_written_total",
        "counter",
        "Events written by the command path.",
        s.events.to_string(),
    );
    metric(
        "ingest_signals_accepted_total",
        "counter",
        "Signals written as events.",
        s.signals_accepted.to_string(),
    );
    metric(
        "ingest_signals_duplicate_total",
        "counter",
        "Signals recognised as repeats and not written.",
        s.signals_duplicate.to_string(),
    );
    let seen = s.signals_accepted + s.signals_duplicate;
    let rate = if seen == 0 {
        0.0
    } else {
        s.signals_duplicate as f64 / seen as f64
    };
    metric(
        "ingest_dedupe_rate",
        "gauge",
        "Duplicates / (accepted + duplicates) since start; 0 when none.",
        rate.to_string(),
    );
    metric(
        "ingest_backlog",
        "gauge",
        "Commands queued for a command worker.",
        s.queued.to_string(),
    );
    writeln!(
        out,
        "# HELP annals_log_events Events durably in the log, per topic and partition.\n# TYPE annals_log_events gauge"
    )
    .ok();
    for topic in state.inner.log.topics() {
        for p in topic.partitions() {
            writeln!(
                out,
                "annals_log_events{{topic=\"{}\",partition=\"{}\"}} {}",
                topic.name(),
                p.id(),
                p.head().next_seq
            )
            .ok();
        }
    }
    if let Some(extra) = state.inner.extra_metrics.get() {
        out.push_str(&extra());
    }
    out
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}
