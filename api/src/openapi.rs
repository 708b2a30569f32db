//! The OpenAPI document, generated from the handlers' annotations and the DTOs.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{history, ops, signals, tenants};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "annals",
        description = "Commands in (checked by their aggregates, written as events to the hash-chained log); history, health and metrics out. Every error is `{\"error\": {\"code\", \"message\", \"field\"}}`."
    ),
    paths(
        ops::health,
        ops::ready,
        ops::metrics,
        ops::openapi,
        tenants::provision,
        tenants::change_limits,
        tenants::suspend,
        tenants::reactivate,
        tenants::archive,
        signals::ingest,
        history::stream,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "tenancy", description = "Tenants and their lifecycle (operator token)"),
        (name = "ingest", description = "Signals (scope `signals:write`)"),
        (name = "audit", description = "History (scope `audit:read`)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
