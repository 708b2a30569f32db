//! The OpenAPI document, generated from the handlers' annotations and the DTOs.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{billing, history, models, ops, policy, privacy, signals, tenants};

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
        billing::open_invoice,
        billing::add_line,
        billing::apply_credit,
        billing::issue_invoice,
        billing::pay_invoice,
        billing::void_invoice,
        billing::set_budget,
        billing::record_usage,
        models::register_version,
        models::retire_version,
        models::deploy,
        models::shift_traffic,
        models::promote,
        models::rollback,
        models::retire_deployment,
        policy::create,
        policy::change,
        policy::activate,
        policy::rollback,
        policy::record_decision,
        policy::dry_run,
        privacy::register_contact,
        privacy::erase,
        privacy::export,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "tenancy", description = "Tenants and their lifecycle (operator token)"),
        (name = "ingest", description = "Signals (scope `signals:write`)"),
        (name = "audit", description = "History (scope `audit:read`)"),
        (name = "billing", description = "Invoices and monthly budgets (scope `billing:write`)"),
        (name = "models", description = "Model versions and deployments (scope `models:write`)"),
        (name = "policy", description = "Access policies, recorded decisions and dry runs (scope `policy:admin`)"),
        (name = "privacy", description = "Contacts (data subjects), erasure and export of their personal data (scope `privacy:admin`)"),
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
