//! The golden dataset: a deterministic set of commands for demos and tests — tenants to
//! provision and the signals their sources send, retries included.
//!
//! Same spec, same commands — ids, times, values — on every machine and every run: it uses its
//! own PRNG (SplitMix64) rather than a library whose sequence could change between versions.

use crate::ingest::SignalInput;
use crate::tenancy::{PLANS, TenantCommand, TenantLimits};

/// 2026-01-01T00:00:00Z, the first day of the dataset.
pub const START_MICROS: i64 = 1_767_225_600_000_000;
const DAY_MICROS: i64 = 86_400_000_000;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
pub const SOURCES: [&str; 4] = ["web", "mobile", "pos", "iot"];
const METRICS: [(&str, &str); 4] = [
    ("latency", "ms"),
    ("temperature", "celsius"),
    ("basket", "items"),
    ("errors", "count"),
];
/// One signal in this many is sent twice, as a client that retries after a timeout would.
const RETRY_EVERY: u64 = 50;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub tenants: u32,
    /// Distinct signals per tenant per day (retries come on top).
    pub signals_per_day: u32,
    pub days: u32,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            tenants: 10,
            signals_per_day: 10_000,
            days: 1,
            seed: 42,
        }
    }
}

impl Spec {
    pub fn tenant_id(&self, t: u32) -> String {
        format!("tenant-{t:03}")
    }

    /// Distinct signals in all.
    pub fn signals(&self) -> u64 {
        u64::from(self.tenants) * u64::from(self.signals_per_day) * u64::from(self.days)
    }

    /// Retried sends in all (each a duplicate the command path must refuse to write).
    pub fn retries(&self) -> u64 {
        u64::from(self.tenants)
            * (u64::from(self.signals_per_day) * u64::from(self.days)).div_ceil(RETRY_EVERY)
    }
}

/// SplitMix64: tiny, fast, and fixed forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The command that provisions tenant number `t`.
pub fn provision(spec: &Spec, t: u32) -> TenantCommand {
    TenantCommand::ProvisionTenant {
        tenant: spec.tenant_id(t),
        name: format!("Tenant {t}"),
        plan: PLANS[t as usize % PLANS.len()].to_owned(),
        region: REGIONS[t as usize % REGIONS.len()].to_owned(),
        limits: TenantLimits {
            max_signals_per_day: i64::from(spec.signals_per_day) * 2,
            max_sources: SOURCES.len() as i32 * 2,
            rate_per_second: 1000,
        },
    }
}

/// The signals tenant number `t` sends, in the order it sends them: `(source, signal)`. Every
/// [`RETRY_EVERY`]th signal is sent again a little later.
pub fn signals(spec: &Spec, t: u32) -> impl Iterator<Item = (&'static str, SignalInput)> + '_ {
    let mut rng = Rng(spec.seed ^ (u64::from(t) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let per_day = u64::from(spec.signals_per_day.max(1));
    let step = DAY_MICROS / per_day as i64;
    let mut retry: Option<(&'static str, SignalInput)> = None;
    (0..u64::from(spec.days) * u64::from(spec.signals_per_day)).flat_map(move |i| {
        let day = (i / per_day) as i64;
        let ts = START_MICROS
            + day * DAY_MICROS
            + (i % per_day) as i64 * step
            + rng.below(step.max(1) as u64) as i64;
        let source = SOURCES[rng.below(SOURCES.len() as u64) as usize];
        let (metric, unit) = METRICS[rng.below(METRICS.len() as u64) as usize];
        let signal = SignalInput {
            signal_id: format!("{source}-{i:08}"),
            ts,
            attributes: [("metric".to_owned(), metric.to_owned())].into(),
            value: Some(rng.below(100_000) as f64 / 100.0),
            unit: Some(unit.to_owned()),
        };
        // A retry goes out with the next signal after the original.
        let resend = retry.take();
        if i % RETRY_EVERY == 0 {
            retry = Some((source, signal.clone()));
        }
        let last_one = i + 1 == u64::from(spec.days) * u64::from(spec.signals_per_day);
        let tail = if last_one { retry.take() } else { None };
        std::iter::once((source, signal)).chain(resend).chain(tail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_spec_same_commands() {
        let spec = Spec {
            tenants: 2,
            signals_per_day: 50,
            days: 2,
            seed: 7,
        };
        let a: Vec<_> = signals(&spec, 1).collect();
        assert_eq!(a, signals(&spec, 1).collect::<Vec<_>>());
        assert_ne!(a, signals(&Spec { seed: 8, ..spec }, 1).collect::<Vec<_>>());
        assert_eq!(provision(&spec, 1), provision(&spec, 1));
    }

    #[test]
    fn retries_repeat_an_earlier_signal_exactly() {
        let spec = Spec {
            tenants: 1,
            signals_per_day: 120,
            days: 1,
            seed: 1,
        };
        let all: Vec<_> = signals(&spec, 0).collect();
        let distinct: std::collections::HashSet<_> = all
            .iter()
            .map(|(s, x)| (*s, x.signal_id.clone(), x.ts))
            .collect();
        assert_eq!(distinct.len() as u64, spec.signals());
        assert_eq!((all.len() - distinct.len()) as u64, spec.retries());
    }

    #[test]
    fn signals_are_within_their_day() {
        let spec = Spec {
            tenants: 1,
            signals_per_day: 500,
            days: 2,
            seed: 1,
        };
        assert!(
            signals(&spec, 0)
                .all(|(_, s)| s.ts >= START_MICROS && s.ts < START_MICROS + 2 * DAY_MICROS)
        );
    }
}

/// A business command of the golden dataset, addressed within its tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum Business {
    Budget {
        month: String,
        command: crate::billing::BudgetCommand,
    },
    Invoice {
        invoice_id: String,
        command: crate::billing::InvoiceCommand,
    },
    ModelVersion {
        model: String,
        version: String,
        command: crate::models::ModelVersionCommand,
    },
    Deployment {
        model: String,
        environment: String,
        command: crate::models::DeploymentCommand,
    },
    Policy {
        policy_id: String,
        command: crate::policy::PolicyCommand,
    },
    /// A person the tenant registers as a contact: a data subject with personal data.
    Contact {
        contact_id: String,
        command: crate::tenancy::ContactCommand,
    },
}

/// Currency, tax jurisdiction and VAT/GST rate (basis points) of a region.
fn region_billing(region: &str) -> (&'static str, &'static str, i32) {
    match region {
        "eu-west" => ("EUR", "DE", 1900),
        "us-east" => ("USD", "US-NY", 888),
        _ => ("INR", "IN", 1800),
    }
}

/// The month the dataset bills (its first day's month).
pub const MONTH: &str = "2026-01";

/// Price of signals: graduated volume tiers, in minor units per signal.
pub fn signal_tiers() -> Vec<crate::billing::VolumeTier> {
    use crate::billing::VolumeTier;
    vec![
        VolumeTier {
            up_to: Some(5_000),
            unit_price_minor: 3,
        },
        VolumeTier {
            up_to: Some(50_000),
            unit_price_minor: 2,
        },
        VolumeTier {
            up_to: None,
            unit_price_minor: 1,
        },
    ]
}

/// Tenant number `t`'s business in the order it happens: a budget and its daily usage, models
/// registered and rolled out (a canary, promoted; every fourth tenant rolls back), an access
/// policy with recorded decisions and a second version, and the month's invoice — lines with
/// volume tiers, an SLA credit for every third tenant, tax of the tenant's jurisdiction — issued
/// and, except for every fifth tenant, paid.
pub fn business(spec: &Spec, t: u32) -> Vec<Business> {
    use crate::billing::{BudgetCommand, InvoiceCommand, price_minor, tax_minor};
    use crate::models::{DeploymentCommand, ModelVersionCommand};
    use crate::policy::{
        Effect, PolicyCommand, Request, Resource, ResourceCondition, Rule, Subject,
        SubjectCondition,
    };

    let tenant = spec.tenant_id(t);
    let region = REGIONS[t as usize % REGIONS.len()];
    let (currency, jurisdiction, rate_bp) = region_billing(region);
    let signals = i64::from(spec.signals_per_day) * i64::from(spec.days);
    let mut out = Vec::new();

    // The tenant's billing contact: a person, whose name and email are personal data.
    out.push(Business::Contact {
        contact_id: "billing-contact".into(),
        command: crate::tenancy::ContactCommand::RegisterContact {
            tenant: tenant.clone(),
            contact_id: "billing-contact".into(),
            name: format!("Billing Contact {t:03}"),
            email: format!("billing.{t:03}@{tenant}.example"),
            role: "billing".into(),
        },
    });

    // Budget: the month's limit, and each day's signal usage against it.
    let daily_cost =
        price_minor(i64::from(spec.signals_per_day), 0, &signal_tiers()).unwrap_or(i64::MAX / 4);
    let limit = (daily_cost * i64::from(spec.days) * 100 / (85 + i64::from(t % 3) * 5)).max(1);
    out.push(Business::Budget {
        month: MONTH.into(),
        command: BudgetCommand::SetBudget {
            tenant: tenant.clone(),
            month: MONTH.into(),
            currency: currency.into(),
            limit_minor: limit,
        },
    });
    for day in 0..spec.days {
        let command = BudgetCommand::RecordUsage {
            usage_id: format!("signals-day-{day}"),
            meter: "signals".into(),
            quantity: i64::from(spec.signals_per_day),
            cost_minor: daily_cost,
        };
        out.push(Business::Budget {
            month: MONTH.into(),
            command,
        });
    }

    // Models: two versions of a churn model, v1 live, v2 as a 10 % canary, shifted, promoted.
    for (v, auc) in [("v1", "0.87"), ("v2", "0.91")] {
        let digest = format!(
            "sha256:{:064x}",
            u128::from(t) << 64 | u128::from(v == "v2")
        );
        let command = ModelVersionCommand::RegisterModelVersion {
            tenant: tenant.clone(),
            model: "churn".into(),
            version: v.into(),
            artifact_digest: digest,
            metrics: [("auc".to_owned(), auc.to_owned())].into(),
        };
        out.push(Business::ModelVersion {
            model: "churn".into(),
            version: v.into(),
            command,
        });
    }
    let deploy = |command| Business::Deployment {
        model: "churn".into(),
        environment: "prod".into(),
        command,
    };
    let d = |version: &str, traffic_pct| DeploymentCommand::Deploy {
        tenant: tenant.clone(),
        model: "churn".into(),
        version: version.into(),
        environment: "prod".into(),
        traffic_pct,
    };
    out.push(deploy(d("v1", 100)));
    out.push(deploy(d("v2", 10)));
    out.push(deploy(DeploymentCommand::ShiftTraffic {
        version: "v2".into(),
        traffic_pct: 50,
    }));
    out.push(deploy(DeploymentCommand::Promote {
        version: "v2".into(),
    }));
    if t % 4 == 3 {
        out.push(deploy(DeploymentCommand::Rollback {
            to_version: "v1".into(),
        }));
    }

    // Policy: analysts may read internal data, nobody reads restricted data but auditors.
    let rule = |id: &str, effect, priority, role: Option<&str>, classes: &[&str]| Rule {
        rule_id: id.into(),
        effect,
        priority,
        subject: SubjectCondition {
            role: role.map(str::to_owned),
            scopes_any: vec![],
        },
        resource: ResourceCondition {
            tenant: Some(tenant.clone()),
            classification_in: classes.iter().map(|c| (*c).to_owned()).collect(),
        },
        action: Some("read".into()),
    };
    let v1 = vec![
        rule(
            "analysts-internal",
            Effect::Allow,
            10,
            Some("analyst"),
            &["public", "internal"],
        ),
        rule("auditors-all", Effect::Allow, 20, Some("auditor"), &[]),
    ];
    let mut v2 = v1.clone();
    v2.push(rule(
        "no-restricted",
        Effect::Deny,
        30,
        None,
        &["restricted"],
    ));
    let policy = |command| Business::Policy {
        policy_id: "data-access".into(),
        command,
    };
    out.push(policy(PolicyCommand::CreatePolicy {
        tenant: tenant.clone(),
        policy_id: "data-access".into(),
        rules: v1,
    }));
    out.push(policy(PolicyCommand::ActivateVersion { version: 1 }));
    let mut rng = Rng(spec.seed ^ 0x5eed ^ u64::from(t));
    let roles = ["analyst", "auditor", "engineer"];
    let classes = ["public", "internal", "restricted"];
    for i in 0..12 {
        let request = Request {
            subject: Subject {
                role: Some(roles[rng.below(3) as usize].into()),
                scopes: vec![],
            },
            resource: Resource {
                tenant: tenant.clone(),
                classification: classes[rng.below(3) as usize].into(),
            },
            action: "read".into(),
        };
        out.push(policy(PolicyCommand::RecordDecision {
            request,
            decided_at: START_MICROS + i * 3_600_000_000,
        }));
    }
    out.push(policy(PolicyCommand::ChangePolicy { rules: v2 }));
    out.push(policy(PolicyCommand::ActivateVersion { version: 2 }));

    // The month's invoice.
    let invoice_id = format!("INV-{MONTH}-{t:03}");
    let inv = |command| Business::Invoice {
        invoice_id: invoice_id.clone(),
        command,
    };
    out.push(inv(InvoiceCommand::OpenInvoice {
        tenant: tenant.clone(),
        invoice_id: invoice_id.clone(),
        currency: currency.into(),
        purchase_order: t.is_multiple_of(2).then(|| format!("PO-{}", 4100 + t)),
        opened_at: START_MICROS,
    }));
    let storage_gb = 10 * (i64::from(t) + 1);
    out.push(inv(InvoiceCommand::AddLine {
        line_id: "signals".into(),
        description: "Signals ingested".into(),
        meter: "signals".into(),
        quantity: signals.max(1),
        unit_price_minor: 0,
        tiers: signal_tiers(),
    }));
    out.push(inv(InvoiceCommand::AddLine {
        line_id: "storage".into(),
        description: "Storage (GB-month)".into(),
        meter: "storage_gb".into(),
        quantity: storage_gb,
        unit_price_minor: 150,
        tiers: vec![],
    }));
    let subtotal = price_minor(signals.max(1), 0, &signal_tiers()).unwrap_or(0) + storage_gb * 150;
    let credit = if t % 3 == 2 {
        (subtotal / 10).max(1)
    } else {
        0
    };
    if credit > 0 {
        out.push(inv(InvoiceCommand::ApplyCredit {
            credit_id: "sla-2026-01".into(),
            reason: "SLA service credit: 99.9% availability missed".into(),
            amount_minor: credit,
        }));
    }
    let issued_at = START_MICROS + i64::from(spec.days) * DAY_MICROS;
    out.push(inv(InvoiceCommand::IssueInvoice {
        tax_jurisdiction: jurisdiction.into(),
        tax_rate_bp: rate_bp,
        issued_at,
    }));
    if t % 5 != 4 {
        let net = subtotal - credit;
        let total = net + tax_minor(net, rate_bp).unwrap_or(0);
        out.push(inv(InvoiceCommand::PayInvoice {
            amount_minor: total,
            paid_at: issued_at + DAY_MICROS,
        }));
    }
    out
}

#[cfg(test)]
mod business_tests {
    use super::*;

    #[test]
    fn the_business_of_a_tenant_is_deterministic_and_in_causal_order() {
        let spec = Spec::default();
        for t in 0..6 {
            let b = business(&spec, t);
            assert_eq!(b, business(&spec, t));
            let first_invoice = b
                .iter()
                .position(|x| matches!(x, Business::Invoice { .. }))
                .unwrap();
            assert!(matches!(
                &b[first_invoice],
                Business::Invoice {
                    command: crate::billing::InvoiceCommand::OpenInvoice { .. },
                    ..
                }
            ));
        }
    }
}
