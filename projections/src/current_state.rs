//! The current-state read model (`current_state`): what applications read — tenants, invoices
//! and their lines and credits, budgets, model versions, deployments and their traffic shares,
//! policies and their versions, contacts (personal data, nulled when the subject is erased).
//! Every table carries `tenant` first; on PostgreSQL every table
//! has row-level security. Money is in minor units beside its ISO-4217 currency; times are
//! microseconds since the Unix epoch (UTC); `stream_version` is the version of the aggregate
//! the row was last changed by.

use std::collections::BTreeMap;

use annals_domain::billing::{BudgetEvent, InvoiceEvent};
use annals_domain::models::{DeploymentEvent, ModelVersionEvent, TrafficShare};
use annals_domain::policy::PolicyEvent;
use annals_domain::tenancy::{ContactEvent, TenantEvent};
use annals_events::Envelope;

use crate::params;
use crate::runtime::{DomainEvent, Projection, ProjectionError, TableSpec, postgres_rls_sql};
use crate::store::{BackendKind, Tx};

const B: &str = "BIGINT";
const T: &str = "TEXT";

/// The tables, in the order they are documented.
/// How many of [`TABLES`] migration 1 created.
const V1_TABLES: usize = 10;

pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "tenants",
        columns: &[
            ("tenant", T),
            ("name", T),
            ("plan", T),
            ("region", T),
            // active | suspended | archived
            ("status", T),
            ("suspended_reason", T),
            ("max_signals_per_day", B),
            ("max_sources", B),
            ("rate_per_second", B),
            ("stream_version", B),
        ],
        key: &["tenant"],
    },
    TableSpec {
        name: "invoices",
        columns: &[
            ("tenant", T),
            ("invoice_id", T),
            ("currency", T),
            ("purchase_order", T),
            // draft | issued | paid | voided
            ("status", T),
            ("opened_at", B),
            ("line_count", B),
            ("subtotal_minor", B),
            ("credits_minor", B),
            // Set when issued:
            ("tax_jurisdiction", T),
            ("tax_rate_bp", B),
            ("tax_minor", B),
            ("total_minor", B),
            ("issued_at", B),
            // Set when paid / voided:
            ("paid_minor", B),
            ("paid_at", B),
            ("void_reason", T),
            ("stream_version", B),
        ],
        key: &["tenant", "invoice_id"],
    },
    TableSpec {
        name: "invoice_lines",
        columns: &[
            ("tenant", T),
            ("invoice_id", T),
            ("line_id", T),
            ("description", T),
            ("meter", T),
            ("quantity", B),
            ("unit_price_minor", B),
            // JSON array of {up_to, unit_price_minor}; empty: flat unit price.
            ("tiers", T),
            ("amount_minor", B),
            ("currency", T),
        ],
        key: &["tenant", "invoice_id", "line_id"],
    },
    TableSpec {
        name: "invoice_credits",
        columns: &[
            ("tenant", T),
            ("invoice_id", T),
            ("credit_id", T),
            ("reason", T),
            ("amount_minor", B),
            ("currency", T),
        ],
        key: &["tenant", "invoice_id", "credit_id"],
    },
    TableSpec {
        name: "budgets",
        columns: &[
            ("tenant", T),
            // YYYY-MM
            ("month", T),
            ("currency", T),
            ("limit_minor", B),
            ("spent_minor", B),
            ("usage_count", B),
            // Highest threshold announced (80, 95) or null.
            ("threshold_reached_pct", B),
            ("stream_version", B),
        ],
        key: &["tenant", "month"],
    },
    TableSpec {
        name: "model_versions",
        columns: &[
            ("tenant", T),
            ("model", T),
            ("version", T),
            ("artifact_digest", T),
            // JSON object name → value.
            ("metrics", T),
            // registered | retired
            ("status", T),
            ("stream_version", B),
        ],
        key: &["tenant", "model", "version"],
    },
    TableSpec {
        name: "deployments",
        columns: &[
            ("tenant", T),
            ("model", T),
            ("environment", T),
            // serving | retired
            ("status", T),
            // The version with the largest share (the lower version on a tie), null if none.
            ("primary_version", T),
            // deployed | traffic_shifted | promoted | rolled_back | retired
            ("last_change", T),
            ("stream_version", B),
        ],
        key: &["tenant", "model", "environment"],
    },
    TableSpec {
        name: "deployment_traffic",
        columns: &[
            ("tenant", T),
            ("model", T),
            ("environment", T),
            ("version", T),
            // 1 to 100; the shares of a deployment sum to 100.
            ("traffic_pct", B),
        ],
        key: &["tenant", "model", "environment", "version"],
    },
    TableSpec {
        name: "policies",
        columns: &[
            ("tenant", T),
            ("policy_id", T),
            ("active_version", B),
            ("latest_version", B),
            ("decisions_recorded", B),
            ("stream_version", B),
        ],
        key: &["tenant", "policy_id"],
    },
    TableSpec {
        name: "policy_versions",
        columns: &[
            ("tenant", T),
            ("policy_id", T),
            ("version", B),
            ("rule_count", B),
            // JSON array of the version's rules.
            ("rules", T),
        ],
        key: &["tenant", "policy_id", "version"],
    },
    // Added by migration 2.
    TableSpec {
        name: "contacts",
        columns: &[
            ("tenant", T),
            ("contact_id", T),
            // Personal data: null once the contact is erased.
            ("name", T),
            ("email", T),
            // billing | security | technical
            ("role", T),
            // 1 once the subject's personal data was erased, else 0.
            ("erased", B),
            ("stream_version", B),
        ],
        key: &["tenant", "contact_id"],
    },
];

/// The current-state projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct CurrentState;

impl CurrentState {
    pub const NAME: &'static str = "current_state";
}

impl Projection for CurrentState {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type.split('.').next(),
            Some("tenancy" | "billing" | "models" | "policy")
        )
    }

    fn tables(&self) -> &'static [TableSpec] {
        TABLES
    }

    fn migrations(&self, backend: BackendKind) -> Vec<String> {
        let (first, added) = TABLES.split_at(V1_TABLES);
        let create = |tables: &[TableSpec]| {
            let mut sql: String = tables.iter().map(TableSpec::create_sql).collect();
            if backend == BackendKind::Postgres {
                for t in tables {
                    sql.push_str(&postgres_rls_sql(t.name, true));
                }
            }
            sql
        };
        // Published migrations never change: 1 made the first tables, 2 added `contacts`.
        vec![create(first), create(&added[..1])]
    }

    /// Usage records are merged per budget within a batch (one UPDATE adding their count),
    /// the budget's other events flushing what was merged before them: a busy budget is one
    /// row write per batch, not one per usage record.
    async fn apply_all(
        &self,
        tx: &mut Tx,
        events: &[(&Envelope, DomainEvent)],
    ) -> Result<(), ProjectionError> {
        // (tenant, month) -> (usage records, spent after the last, its stream version)
        let mut usage: BTreeMap<(&str, &str), (i64, i64, u64)> = BTreeMap::new();
        for (env, event) in events {
            match event {
                DomainEvent::Budget(BudgetEvent::UsageRecorded(u)) => {
                    let e = usage
                        .entry((u.tenant.as_str(), u.month.as_str()))
                        .or_insert((0, 0, 0));
                    *e = (e.0 + 1, u.spent_minor, env.stream_version);
                }
                DomainEvent::Budget(b) => {
                    let (tenant, month) = budget_key(b);
                    if let Some(merged) = usage.remove(&(tenant, month)) {
                        flush_usage(tx, (tenant, month), merged).await?;
                    }
                    self.apply(tx, env, event).await?;
                }
                _ => self.apply(tx, env, event).await?,
            }
        }
        for (key, merged) in usage {
            flush_usage(tx, key, merged).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        env: &Envelope,
        event: &DomainEvent,
    ) -> Result<(), ProjectionError> {
        let v = env.stream_version;
        match event {
            DomainEvent::Tenant(e) => tenant(tx, e, v).await,
            DomainEvent::Contact(e) => contact(tx, e, v).await,
            DomainEvent::Invoice(e) => invoice(tx, e, v).await,
            DomainEvent::Budget(e) => budget(tx, e, v).await,
            DomainEvent::ModelVersion(e) => model_version(tx, e, v).await,
            DomainEvent::Deployment(e) => deployment(tx, e, v).await,
            DomainEvent::Policy(e) => policy(tx, e, v).await,
            // Retention ages out analytics rows; current state has nothing that ages.
            DomainEvent::Signal(_) | DomainEvent::Retention(_) | DomainEvent::Other => Ok(()),
        }
    }
}

/// A personal field as the log gives it: erased or unreadable values are stored as null.
fn personal(value: &str) -> Option<&str> {
    use annals_schemas::personal::{ERASED, SEALED};
    (value != ERASED && value != SEALED).then_some(value)
}

/// The budget (tenant, month) an event is about.
fn budget_key(e: &BudgetEvent) -> (&str, &str) {
    match e {
        BudgetEvent::BudgetSet(x) => (&x.tenant, &x.month),
        BudgetEvent::UsageRecorded(x) => (&x.tenant, &x.month),
        BudgetEvent::BudgetThresholdReached(x) => (&x.tenant, &x.month),
    }
}

/// `count` usage records of one budget at once: the spend after the last, the count added.
async fn flush_usage(
    tx: &mut Tx,
    (tenant, month): (&str, &str),
    (count, spent, version): (i64, i64, u64),
) -> Result<(), ProjectionError> {
    tx.execute(
        "UPDATE budgets SET spent_minor = $3, usage_count = usage_count + $4, \
         stream_version = $5 WHERE tenant = $1 AND month = $2",
        params![tenant, month, spent, count, version],
    )
    .await?;
    Ok(())
}

async fn contact(tx: &mut Tx, e: &ContactEvent, v: u64) -> Result<(), ProjectionError> {
    match e {
        ContactEvent::ContactRegistered(c) => {
            tx.execute(
                "INSERT INTO contacts (tenant, contact_id, name, email, role, erased, \
                 stream_version) VALUES ($1, $2, $3, $4, $5, 0, $6) \
                 ON CONFLICT (tenant, contact_id) DO UPDATE SET name = excluded.name, \
                 email = excluded.email, role = excluded.role, stream_version = excluded.stream_version",
                params![
                    &c.tenant,
                    &c.contact_id,
                    personal(&c.name),
                    personal(&c.email),
                    &c.role,
                    v
                ],
            )
            .await?;
        }
        ContactEvent::SubjectErased(x) => {
            tx.execute(
                "UPDATE contacts SET name = NULL, email = NULL, erased = 1, stream_version = $3 \
                 WHERE tenant = $1 AND contact_id = $2",
                params![&x.tenant, &x.subject, v],
            )
            .await?;
        }
    }
    Ok(())
}

async fn tenant(tx: &mut Tx, e: &TenantEvent, v: u64) -> Result<(), ProjectionError> {
    match e {
        TenantEvent::TenantProvisioned(p) => {
            tx.execute(
                "INSERT INTO tenants (tenant, name, plan, region, status, suspended_reason, \
                 max_signals_per_day, max_sources, rate_per_second, stream_version) \
                 VALUES ($1, $2, $3, $4, 'active', NULL, $5, $6, $7, $8) \
                 ON CONFLICT (tenant) DO UPDATE SET name = excluded.name, plan = excluded.plan, \
                 region = excluded.region, status = excluded.status, \
                 suspended_reason = excluded.suspended_reason, \
                 max_signals_per_day = excluded.max_signals_per_day, \
                 max_sources = excluded.max_sources, rate_per_second = excluded.rate_per_second, \
                 stream_version = excluded.stream_version",
                params![
                    &p.tenant,
                    &p.name,
                    &p.plan,
                    &p.region,
                    p.limits.max_signals_per_day,
                    p.limits.max_sources,
                    p.limits.rate_per_second,
                    v
                ],
            )
            .await?;
        }
        TenantEvent::TenantLimitsChanged(c) => {
            tx.execute(
                "UPDATE tenants SET max_signals_per_day = $2, max_sources = $3, \
                 rate_per_second = $4, stream_version = $5 WHERE tenant = $1",
                params![
                    &c.tenant,
                    c.limits.max_signals_per_day,
                    c.limits.max_sources,
                    c.limits.rate_per_second,
                    v
                ],
            )
            .await?;
        }
        TenantEvent::TenantSuspended(s) => {
            tx.execute(
                "UPDATE tenants SET status = 'suspended', suspended_reason = $2, \
                 stream_version = $3 WHERE tenant = $1",
                params![&s.tenant, &s.reason, v],
            )
            .await?;
        }
        TenantEvent::TenantReactivated(t) => {
            tx.execute(
                "UPDATE tenants SET status = 'active', suspended_reason = NULL, \
                 stream_version = $2 WHERE tenant = $1",
                params![&t.tenant, v],
            )
            .await?;
        }
        TenantEvent::TenantArchived(t) => {
            tx.execute(
                "UPDATE tenants SET status = 'archived', stream_version = $2 WHERE tenant = $1",
                params![&t.tenant, v],
            )
            .await?;
        }
    }
    Ok(())
}

async fn invoice(tx: &mut Tx, e: &InvoiceEvent, v: u64) -> Result<(), ProjectionError> {
    match e {
        InvoiceEvent::InvoiceOpened(o) => {
            tx.execute(
                "INSERT INTO invoices (tenant, invoice_id, currency, purchase_order, status, \
                 opened_at, line_count, subtotal_minor, credits_minor, stream_version) \
                 VALUES ($1, $2, $3, $4, 'draft', $5, 0, 0, 0, $6) \
                 ON CONFLICT (tenant, invoice_id) DO UPDATE SET currency = excluded.currency, \
                 purchase_order = excluded.purchase_order, status = excluded.status, \
                 opened_at = excluded.opened_at, stream_version = excluded.stream_version",
                params![
                    &o.tenant,
                    &o.invoice_id,
                    &o.currency,
                    o.purchase_order.clone(),
                    o.opened_at,
                    v
                ],
            )
            .await?;
        }
        InvoiceEvent::InvoiceLineAdded(l) => {
            let tiers = serde_json::to_string(&l.tiers).expect("serialisable");
            tx.execute(
                "INSERT INTO invoice_lines (tenant, invoice_id, line_id, description, meter, \
                 quantity, unit_price_minor, tiers, amount_minor, currency) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                params![
                    &l.tenant,
                    &l.invoice_id,
                    &l.line_id,
                    &l.description,
                    &l.meter,
                    l.quantity,
                    l.unit_price_minor,
                    tiers,
                    l.amount_minor,
                    &l.currency
                ],
            )
            .await?;
            tx.execute(
                "UPDATE invoices SET line_count = line_count + 1, \
                 subtotal_minor = subtotal_minor + $3, stream_version = $4 \
                 WHERE tenant = $1 AND invoice_id = $2",
                params![&l.tenant, &l.invoice_id, l.amount_minor, v],
            )
            .await?;
        }
        InvoiceEvent::CreditApplied(c) => {
            tx.execute(
                "INSERT INTO invoice_credits (tenant, invoice_id, credit_id, reason, \
                 amount_minor, currency) VALUES ($1, $2, $3, $4, $5, $6)",
                params![
                    &c.tenant,
                    &c.invoice_id,
                    &c.credit_id,
                    &c.reason,
                    c.amount_minor,
                    &c.currency
                ],
            )
            .await?;
            tx.execute(
                "UPDATE invoices SET credits_minor = credits_minor + $3, stream_version = $4 \
                 WHERE tenant = $1 AND invoice_id = $2",
                params![&c.tenant, &c.invoice_id, c.amount_minor, v],
            )
            .await?;
        }
        InvoiceEvent::InvoiceIssued(i) => {
            // The issued totals are the aggregate's own figures, not recomputed here.
            tx.execute(
                "UPDATE invoices SET status = 'issued', subtotal_minor = $3, \
                 credits_minor = $4, tax_jurisdiction = $5, tax_rate_bp = $6, tax_minor = $7, \
                 total_minor = $8, issued_at = $9, stream_version = $10 \
                 WHERE tenant = $1 AND invoice_id = $2",
                params![
                    &i.tenant,
                    &i.invoice_id,
                    i.subtotal_minor,
                    i.credits_minor,
                    &i.tax_jurisdiction,
                    i.tax_rate_bp,
                    i.tax_minor,
                    i.total_minor,
                    i.issued_at,
                    v
                ],
            )
            .await?;
        }
        InvoiceEvent::InvoicePaid(p) => {
            tx.execute(
                "UPDATE invoices SET status = 'paid', paid_minor = $3, paid_at = $4, \
                 stream_version = $5 WHERE tenant = $1 AND invoice_id = $2",
                params![&p.tenant, &p.invoice_id, p.amount_minor, p.paid_at, v],
            )
            .await?;
        }
        InvoiceEvent::InvoiceVoided(x) => {
            tx.execute(
                "UPDATE invoices SET status = 'voided', void_reason = $3, stream_version = $4 \
                 WHERE tenant = $1 AND invoice_id = $2",
                params![&x.tenant, &x.invoice_id, &x.reason, v],
            )
            .await?;
        }
    }
    Ok(())
}

async fn budget(tx: &mut Tx, e: &BudgetEvent, v: u64) -> Result<(), ProjectionError> {
    match e {
        BudgetEvent::BudgetSet(s) => {
            tx.execute(
                "INSERT INTO budgets (tenant, month, currency, limit_minor, spent_minor, \
                 usage_count, threshold_reached_pct, stream_version) \
                 VALUES ($1, $2, $3, $4, 0, 0, NULL, $5) \
                 ON CONFLICT (tenant, month) DO UPDATE SET currency = excluded.currency, \
                 limit_minor = excluded.limit_minor, stream_version = excluded.stream_version",
                params![&s.tenant, &s.month, &s.currency, s.limit_minor, v],
            )
            .await?;
        }
        BudgetEvent::UsageRecorded(u) => {
            tx.execute(
                "UPDATE budgets SET spent_minor = $3, usage_count = usage_count + 1, \
                 stream_version = $4 WHERE tenant = $1 AND month = $2",
                params![&u.tenant, &u.month, u.spent_minor, v],
            )
            .await?;
        }
        BudgetEvent::BudgetThresholdReached(r) => {
            tx.execute(
                "UPDATE budgets SET threshold_reached_pct = CASE \
                 WHEN threshold_reached_pct IS NULL OR threshold_reached_pct < $3 THEN $3 \
                 ELSE threshold_reached_pct END, stream_version = $4 \
                 WHERE tenant = $1 AND month = $2",
                params![&r.tenant, &r.month, r.threshold_pct, v],
            )
            .await?;
        }
    }
    Ok(())
}

async fn model_version(tx: &mut Tx, e: &ModelVersionEvent, v: u64) -> Result<(), ProjectionError> {
    match e {
        ModelVersionEvent::ModelVersionRegistered(r) => {
            let metrics = serde_json::to_string(&r.metrics).expect("serialisable");
            tx.execute(
                "INSERT INTO model_versions (tenant, model, version, artifact_digest, metrics, \
                 status, stream_version) VALUES ($1, $2, $3, $4, $5, 'registered', $6) \
                 ON CONFLICT (tenant, model, version) DO UPDATE SET \
                 artifact_digest = excluded.artifact_digest, metrics = excluded.metrics, \
                 status = excluded.status, stream_version = excluded.stream_version",
                params![
                    &r.tenant,
                    &r.model,
                    &r.version,
                    &r.artifact_digest,
                    metrics,
                    v
                ],
            )
            .await?;
        }
        ModelVersionEvent::ModelVersionRetired(r) => {
            tx.execute(
                "UPDATE model_versions SET status = 'retired', stream_version = $4 \
                 WHERE tenant = $1 AND model = $2 AND version = $3",
                params![&r.tenant, &r.model, &r.version, v],
            )
            .await?;
        }
    }
    Ok(())
}

async fn deployment(tx: &mut Tx, e: &DeploymentEvent, v: u64) -> Result<(), ProjectionError> {
    let sole = |version: &str| {
        vec![TrafficShare {
            version: version.to_owned(),
            traffic_pct: 100,
        }]
    };
    let (tenant, model, env, traffic, change) = match e {
        DeploymentEvent::ModelDeployed(d) => (
            &d.tenant,
            &d.model,
            &d.environment,
            d.traffic.clone(),
            "deployed",
        ),
        DeploymentEvent::TrafficShifted(d) => (
            &d.tenant,
            &d.model,
            &d.environment,
            d.traffic.clone(),
            "traffic_shifted",
        ),
        DeploymentEvent::ModelPromoted(d) => (
            &d.tenant,
            &d.model,
            &d.environment,
            sole(&d.version),
            "promoted",
        ),
        DeploymentEvent::DeploymentRolledBack(d) => (
            &d.tenant,
            &d.model,
            &d.environment,
            sole(&d.to_version),
            "rolled_back",
        ),
        DeploymentEvent::DeploymentRetired(d) => {
            (&d.tenant, &d.model, &d.environment, vec![], "retired")
        }
    };
    let serving: Vec<&TrafficShare> = traffic.iter().filter(|s| s.traffic_pct > 0).collect();
    let primary = serving
        .iter()
        .max_by(|a, b| {
            a.traffic_pct
                .cmp(&b.traffic_pct)
                .then_with(|| b.version.cmp(&a.version))
        })
        .map(|s| s.version.clone());
    let status = if change == "retired" {
        "retired"
    } else {
        "serving"
    };
    tx.execute(
        "INSERT INTO deployments (tenant, model, environment, status, primary_version, \
         last_change, stream_version) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant, model, environment) DO UPDATE SET status = excluded.status, \
         primary_version = excluded.primary_version, last_change = excluded.last_change, \
         stream_version = excluded.stream_version",
        params![tenant, model, env, status, primary, change, v],
    )
    .await?;
    tx.execute(
        "DELETE FROM deployment_traffic WHERE tenant = $1 AND model = $2 AND environment = $3",
        params![tenant, model, env],
    )
    .await?;
    for s in serving {
        tx.execute(
            "INSERT INTO deployment_traffic (tenant, model, environment, version, traffic_pct) \
             VALUES ($1, $2, $3, $4, $5)",
            params![tenant, model, env, &s.version, s.traffic_pct],
        )
        .await?;
    }
    Ok(())
}

async fn policy(tx: &mut Tx, e: &PolicyEvent, v: u64) -> Result<(), ProjectionError> {
    match e {
        PolicyEvent::PolicyVersionCreated(c) => {
            let rules = serde_json::to_string(&c.rules).expect("serialisable");
            tx.execute(
                "INSERT INTO policy_versions (tenant, policy_id, version, rule_count, rules) \
                 VALUES ($1, $2, $3, $4, $5)",
                params![
                    &c.tenant,
                    &c.policy_id,
                    c.version,
                    c.rules.len() as u64,
                    rules
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO policies (tenant, policy_id, active_version, latest_version, \
                 decisions_recorded, stream_version) VALUES ($1, $2, NULL, $3, 0, $4) \
                 ON CONFLICT (tenant, policy_id) DO UPDATE SET \
                 latest_version = excluded.latest_version, stream_version = excluded.stream_version",
                params![&c.tenant, &c.policy_id, c.version, v],
            )
            .await?;
        }
        PolicyEvent::PolicyVersionActivated(a) => {
            tx.execute(
                "UPDATE policies SET active_version = $3, stream_version = $4 \
                 WHERE tenant = $1 AND policy_id = $2",
                params![&a.tenant, &a.policy_id, a.version, v],
            )
            .await?;
        }
        PolicyEvent::PolicyRolledBack(r) => {
            tx.execute(
                "UPDATE policies SET active_version = $3, stream_version = $4 \
                 WHERE tenant = $1 AND policy_id = $2",
                params![&r.tenant, &r.policy_id, r.to_version, v],
            )
            .await?;
        }
        PolicyEvent::PolicyDecisionRecorded(d) => {
            tx.execute(
                "UPDATE policies SET decisions_recorded = decisions_recorded + 1, \
                 stream_version = $3 WHERE tenant = $1 AND policy_id = $2",
                params![&d.tenant, &d.policy_id, v],
            )
            .await?;
        }
    }
    Ok(())
}
