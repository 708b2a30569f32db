//! What the projection tests share: a runtime, the registry, and the golden input — a small
//! log written through the real command path.

use std::path::Path;
use std::sync::Arc;

use annals_domain::golden::{self, Business, Spec};
use annals_domain::ingest::{IngestCommand, SignalInput};
use annals_domain::tenancy::{TenantCommand, TenantLimits};
use annals_events::{Log, LogConfig, Topic};
use annals_processors::{Command, CommandMeta, Engine};
use annals_schemas::Registry;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The registry with a subject key store (in a folder of this test process), as the command
/// path has one: the golden input registers contacts, whose personal data is sealed.
pub fn registry() -> Registry {
    let keys = std::env::temp_dir().join(format!("annals-test-keys-{}", std::process::id()));
    Registry::builtin()
        .unwrap()
        .with_sealer(std::sync::Arc::new(annals_audit::SubjectKeys::open(&keys)))
}

pub fn meta(id: String) -> CommandMeta {
    CommandMeta {
        command_id: Some(id),
        actor: "golden".into(),
        correlation_id: None,
        expected_version: None,
        occurred_at: golden::START_MICROS,
    }
}

fn business(tenant: &str, b: Business) -> Command {
    let tenant = tenant.to_owned();
    match b {
        Business::Budget { month, command } => Command::Budget {
            tenant,
            month,
            command,
        },
        Business::Invoice {
            invoice_id,
            command,
        } => Command::Invoice {
            tenant,
            invoice_id,
            command,
        },
        Business::ModelVersion {
            model,
            version,
            command,
        } => Command::ModelVersion {
            tenant,
            model,
            version,
            command,
        },
        Business::Deployment {
            model,
            environment,
            command,
        } => Command::Deployment {
            tenant,
            model,
            environment,
            command,
        },
        Business::Policy { policy_id, command } => Command::Policy {
            tenant,
            policy_id,
            command,
        },
        Business::Contact {
            contact_id,
            command,
        } => Command::Contact {
            tenant,
            contact_id,
            command,
        },
    }
}

/// The golden input: 4 tenants of the demo's dataset (budgets with usage, two model versions
/// with a canary promoted and one rolled back, a policy with decisions and a second version,
/// an invoice issued — with a credit for one, paid for most), a few signals, a limits change and
/// a suspension, written through the command path on a 4-partition log.
pub fn golden_log(dir: &Path) -> (Arc<Log>, Arc<Topic>) {
    let log = Arc::new(Log::open(dir, LogConfig::default()).unwrap());
    let topic = log.create_topic("events", 4).unwrap();
    let engine = Engine::start(topic.clone(), Arc::new(registry())).unwrap();
    let spec = Spec {
        tenants: 4,
        signals_per_day: 20,
        days: 1,
        seed: 42,
    };
    let mut n = 0;
    let mut run = |c: Command| {
        n += 1;
        engine
            .execute_blocking(c, meta(format!("cmd-{n}")))
            .unwrap();
    };
    for t in 0..spec.tenants {
        let tenant = spec.tenant_id(t);
        run(Command::Tenancy {
            tenant: tenant.clone(),
            command: golden::provision(&spec, t),
        });
        run(Command::Ingest(IngestCommand::IngestSignals {
            tenant: tenant.clone(),
            source: "web".into(),
            signals: (0..5)
                .map(|i| SignalInput {
                    signal_id: format!("s{i}"),
                    ts: golden::START_MICROS + i,
                    attributes: [("metric".to_owned(), format!("m{}", i % 2))].into(),
                    value: Some(1.5),
                    unit: None,
                })
                .collect(),
        }));
        for b in golden::business(&spec, t) {
            run(business(&tenant, b));
        }
    }
    run(Command::Tenancy {
        tenant: spec.tenant_id(0),
        command: TenantCommand::ChangeLimits {
            limits: TenantLimits {
                max_signals_per_day: 5_000_000,
                max_sources: 8,
                rate_per_second: 2_000,
            },
        },
    });
    run(Command::Tenancy {
        tenant: spec.tenant_id(1),
        command: TenantCommand::SuspendTenant {
            reason: "payment overdue".into(),
        },
    });
    drop(engine);
    (log, topic)
}
