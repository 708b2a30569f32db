//! The routes, one module per area. Handlers parse and authorize, call the engine, translate.

pub mod history;
pub mod ops;
pub mod signals;
pub mod tenants;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};

use crate::AppState;
use crate::error::ApiError;

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
            "/v1/tenants/{tenant}/streams/{*stream}",
            get(history::stream),
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
