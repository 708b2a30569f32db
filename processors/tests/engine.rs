//! The command path on a real embedded log: outcomes, refusals that write nothing, optimistic
//! concurrency, idempotency across restarts, and many concurrent callers.

use std::sync::Arc;

use annals_domain::ingest::{IngestCommand, SignalInput};
use annals_domain::tenancy::{TenantCommand, TenantLimits};
use annals_events::{Log, LogConfig};
use annals_processors::{Command, CommandError, CommandMeta, Engine};
use annals_schemas::Registry;

fn start(dir: &std::path::Path) -> (Arc<Log>, Engine) {
    let log = Arc::new(Log::open(dir, LogConfig::default()).unwrap());
    let topic = log.create_topic("events", 4).unwrap();
    let engine = Engine::start(topic, Arc::new(Registry::builtin().unwrap())).unwrap();
    (log, engine)
}

fn meta(id: &str) -> CommandMeta {
    CommandMeta {
        command_id: Some(id.into()),
        actor: "test".into(),
        correlation_id: None,
        expected_version: None,
        occurred_at: 1_767_225_600_000_000,
    }
}

fn provision(tenant: &str) -> Command {
    Command::Tenancy {
        tenant: tenant.into(),
        command: TenantCommand::ProvisionTenant {
            tenant: tenant.into(),
            name: "Acme".into(),
            plan: "growth".into(),
            region: "eu-west".into(),
            limits: TenantLimits {
                max_signals_per_day: 1_000_000,
                max_sources: 2,
                rate_per_second: 1000,
            },
        },
    }
}

fn signals(tenant: &str, source: &str, ids: std::ops::Range<u32>) -> Command {
    Command::Ingest(IngestCommand::IngestSignals {
        tenant: tenant.into(),
        source: source.into(),
        signals: ids
            .map(|i| SignalInput {
                signal_id: format!("s{i}"),
                ts: 1_000 + i64::from(i),
                attributes: Default::default(),
                value: None,
                unit: None,
            })
            .collect(),
    })
}

fn total_events(log: &Log) -> u64 {
    log.topic("events")
        .unwrap()
        .partitions()
        .iter()
        .map(|p| p.head().next_seq)
        .sum()
}

#[test]
fn commands_become_durable_events_and_repeats_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, engine) = start(dir.path());
    let out = engine
        .execute_blocking(provision("acme"), meta("c1"))
        .unwrap();
    assert_eq!(
        (out.stream.as_str(), out.stream_version, out.events.len()),
        ("tenancy.Tenant/acme", 1, 1)
    );
    assert_eq!(out.events[0].event_type, "tenancy.TenantProvisioned");

    let out = engine
        .execute_blocking(signals("acme", "web", 0..10), meta("c2"))
        .unwrap();
    assert_eq!(
        (out.events.len(), out.duplicates, out.stream_version),
        (10, 0, 10)
    );
    let out = engine
        .execute_blocking(signals("acme", "web", 5..15), meta("c3"))
        .unwrap();
    assert_eq!(
        (out.events.len(), out.duplicates, out.stream_version),
        (5, 5, 15),
        "a retried signal is a duplicate"
    );
    // The same provisioning again is idempotent.
    assert!(
        engine
            .execute_blocking(provision("acme"), meta("c4"))
            .unwrap()
            .events
            .is_empty()
    );
    assert_eq!(total_events(&log), 16);

    // The events carry who and why, in stream order.
    let topic = log.topic("events").unwrap();
    let p = &topic.partitions()[out.events[0].partition as usize];
    let e = p.reader(out.events[0].seq).next().unwrap().unwrap();
    assert_eq!(
        (
            e.causation_id.as_deref(),
            e.actor.as_str(),
            e.stream_version,
            e.tenant.as_str()
        ),
        (Some("c3"), "test", 11, "acme")
    );
    let stats = engine.stats();
    assert_eq!((stats.signals_accepted, stats.signals_duplicate), (15, 5));
}

#[test]
fn refused_commands_write_nothing_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let (log, engine) = start(dir.path());
    let err = engine
        .execute_blocking(signals("ghost", "web", 0..3), meta("c1"))
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (404, "unknown_tenant"));
    engine
        .execute_blocking(provision("acme"), meta("c2"))
        .unwrap();
    engine
        .execute_blocking(
            Command::Tenancy {
                tenant: "acme".into(),
                command: TenantCommand::SuspendTenant {
                    reason: "unpaid".into(),
                },
            },
            meta("c3"),
        )
        .unwrap();
    let before = total_events(&log);
    let err = engine
        .execute_blocking(signals("acme", "web", 0..3), meta("c4"))
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (403, "tenant_suspended"));
    let CommandError::Refused(e) = engine
        .execute_blocking(
            Command::Tenancy {
                tenant: "acme".into(),
                command: TenantCommand::ChangeLimits {
                    limits: TenantLimits {
                        max_signals_per_day: 0,
                        max_sources: 1,
                        rate_per_second: 1,
                    },
                },
            },
            meta("c5"),
        )
        .unwrap_err()
    else {
        panic!("a refusal")
    };
    assert_eq!(e.field.as_deref(), Some("limits.max_signals_per_day"));
    assert_eq!(total_events(&log), before, "refusals wrote nothing");
}

#[test]
fn optimistic_concurrency_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, engine) = start(dir.path());
    let mut m = meta("c1");
    m.expected_version = Some(0);
    engine
        .execute_blocking(provision("acme"), m.clone())
        .unwrap();
    let suspend = Command::Tenancy {
        tenant: "acme".into(),
        command: TenantCommand::SuspendTenant { reason: "r".into() },
    };
    m.command_id = Some("c2".into());
    let err = engine
        .execute_blocking(suspend.clone(), m.clone())
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (409, "version_conflict"));
    m.expected_version = Some(1);
    assert_eq!(
        engine.execute_blocking(suspend, m).unwrap().stream_version,
        2
    );
}

#[test]
fn state_is_rebuilt_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, engine) = start(dir.path());
        engine
            .execute_blocking(provision("acme"), meta("c1"))
            .unwrap();
        engine
            .execute_blocking(signals("acme", "web", 0..10), meta("c2"))
            .unwrap();
        engine
            .execute_blocking(signals("acme", "pos", 0..1), meta("c3"))
            .unwrap();
    }
    let (log, engine) = start(dir.path());
    let out = engine
        .execute_blocking(signals("acme", "web", 0..12), meta("c4"))
        .unwrap();
    assert_eq!(
        (out.events.len(), out.duplicates, out.stream_version),
        (2, 10, 12)
    );
    // The tenant has its 2 sources: a third is refused, which needs the rebuilt source count.
    let err = engine
        .execute_blocking(signals("acme", "iot", 0..1), meta("c5"))
        .unwrap_err();
    assert_eq!(err.code(), "source_limit");
    assert!(
        engine
            .execute_blocking(provision("acme"), meta("c6"))
            .unwrap()
            .events
            .is_empty()
    );
    drop(engine);
    assert!(annals_events::verify::verify(dir.path(), 1).unwrap().ok);
    drop(log);
}

#[test]
fn many_concurrent_callers_each_get_their_own_durable_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (log, engine) = start(dir.path());
    for t in 0..8 {
        engine
            .execute_blocking(provision(&format!("t{t}")), meta("p"))
            .unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..8 {
            let engine = &engine;
            s.spawn(move || {
                let pending: Vec<_> = (0..50)
                    .map(|b| {
                        engine
                            .submit_blocking(
                                signals(&format!("t{t}"), "web", b * 10..b * 10 + 10),
                                meta("x"),
                            )
                            .unwrap()
                    })
                    .collect();
                for (b, p) in pending.into_iter().enumerate() {
                    let out = p.wait().unwrap();
                    assert_eq!(
                        (out.events.len(), out.stream_version),
                        (10, (b as u64 + 1) * 10)
                    );
                }
            });
        }
    });
    assert_eq!(total_events(&log), 8 + 8 * 500);
}

#[test]
fn every_context_goes_through_the_command_path_and_survives_a_restart() {
    use annals_domain::billing::InvoiceCommand;
    use annals_domain::models::{DeploymentCommand, ModelVersionCommand};
    let dir = tempfile::tempdir().unwrap();
    let invoice = |command| Command::Invoice {
        tenant: "acme".into(),
        invoice_id: "inv-1".into(),
        command,
    };
    let deploy = || Command::Deployment {
        tenant: "acme".into(),
        model: "churn".into(),
        environment: "prod".into(),
        command: DeploymentCommand::Deploy {
            tenant: "acme".into(),
            model: "churn".into(),
            version: "v1".into(),
            environment: "prod".into(),
            traffic_pct: 100,
        },
    };
    {
        let (_log, engine) = start(dir.path());
        engine
            .execute_blocking(provision("acme"), meta("p"))
            .unwrap();
        let open = InvoiceCommand::OpenInvoice {
            tenant: "acme".into(),
            invoice_id: "inv-1".into(),
            currency: "EUR".into(),
            purchase_order: Some("PO-7".into()),
            opened_at: 1,
        };
        engine.execute_blocking(invoice(open), meta("i1")).unwrap();
        let line = InvoiceCommand::AddLine {
            line_id: "l1".into(),
            description: "signals".into(),
            meter: "signals".into(),
            quantity: 3,
            unit_price_minor: 250,
            tiers: vec![],
        };
        engine.execute_blocking(invoice(line), meta("i2")).unwrap();
        // An address that disagrees with the command is refused before the aggregate sees it.
        let wrong = Command::Invoice {
            tenant: "acme".into(),
            invoice_id: "inv-2".into(),
            command: InvoiceCommand::OpenInvoice {
                tenant: "acme".into(),
                invoice_id: "inv-3".into(),
                currency: "EUR".into(),
                purchase_order: None,
                opened_at: 1,
            },
        };
        let CommandError::Refused(e) = engine.execute_blocking(wrong, meta("i3")).unwrap_err()
        else {
            panic!("refused")
        };
        assert_eq!(e.field.as_deref(), Some("invoice_id"));
        // A deployment of an unregistered version is refused; once registered it goes through.
        assert_eq!(
            engine
                .execute_blocking(deploy(), meta("d1"))
                .unwrap_err()
                .status(),
            404
        );
        let register = ModelVersionCommand::RegisterModelVersion {
            tenant: "acme".into(),
            model: "churn".into(),
            version: "v1".into(),
            artifact_digest: format!("sha256:{}", "ab".repeat(32)),
            metrics: [("auc".to_owned(), "0.91".to_owned())].into(),
        };
        engine
            .execute_blocking(
                Command::ModelVersion {
                    tenant: "acme".into(),
                    model: "churn".into(),
                    version: "v1".into(),
                    command: register,
                },
                meta("m1"),
            )
            .unwrap();
        assert_eq!(
            engine
                .execute_blocking(deploy(), meta("d2"))
                .unwrap()
                .events
                .len(),
            1
        );
    }
    // After a restart the invoice and the deployment are rebuilt from the log.
    let (_log, engine) = start(dir.path());
    let issued = engine
        .execute_blocking(
            invoice(InvoiceCommand::IssueInvoice {
                tax_jurisdiction: "DE".into(),
                tax_rate_bp: 1900,
                issued_at: 2,
            }),
            meta("i4"),
        )
        .unwrap();
    assert_eq!(
        (issued.stream_version, &*issued.events[0].event_type),
        (3, "billing.InvoiceIssued")
    );
    assert!(
        engine
            .execute_blocking(deploy(), meta("d3"))
            .unwrap()
            .events
            .is_empty(),
        "the same deployment again is a no-op"
    );
}

#[test]
fn a_command_sent_again_with_its_id_is_recognised_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let suspend = || Command::Tenancy {
        tenant: "acme".into(),
        command: TenantCommand::SuspendTenant {
            reason: "unpaid".into(),
        },
    };
    let reactivate = || Command::Tenancy {
        tenant: "acme".into(),
        command: TenantCommand::ReactivateTenant,
    };
    {
        let (_log, engine) = start(dir.path());
        engine
            .execute_blocking(provision("acme"), meta("p1"))
            .unwrap();
        engine.execute_blocking(suspend(), meta("s1")).unwrap();
        engine.execute_blocking(reactivate(), meta("r1")).unwrap();
        // A retry of the suspension (say, after a timeout) must not suspend the tenant again.
        let again = engine.execute_blocking(suspend(), meta("s1")).unwrap();
        assert!(again.repeated && again.events.is_empty());
    }
    let (log, engine) = start(dir.path());
    let again = engine.execute_blocking(suspend(), meta("s1")).unwrap();
    assert!(
        again.repeated && again.events.is_empty(),
        "recognised from the log's causation ids"
    );
    assert_eq!(again.stream_version, 3);
    // A new id is a new command.
    assert_eq!(
        engine
            .execute_blocking(suspend(), meta("s2"))
            .unwrap()
            .events
            .len(),
        1
    );
    assert_eq!(total_events(&log), 4);
}

/// Snapshots kept in memory for the test.
#[derive(Default)]
struct MemorySnapshots(std::sync::Mutex<std::collections::HashMap<u32, Vec<u8>>>);

impl annals_processors::snapshot::SnapshotStore for MemorySnapshots {
    fn load(&self, partition: u32) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().unwrap().get(&partition).cloned())
    }
    fn save(&self, partition: u32, snapshot: &[u8]) -> Result<(), String> {
        self.0.lock().unwrap().insert(partition, snapshot.to_vec());
        Ok(())
    }
}

#[test]
fn a_new_owner_restores_from_a_snapshot_that_matches_the_chain_and_ignores_others() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let topic = log.create_topic("events", 4).unwrap();
    let registry = Arc::new(Registry::builtin().unwrap());
    let store = Arc::new(MemorySnapshots::default());
    let all = [0, 1, 2, 3];
    let p = annals_events::partitioner::partition_for("acme", 4);
    {
        let engine = Engine::start_with_snapshots(
            topic.clone(),
            registry.clone(),
            &all,
            Some(store.clone()),
        )
        .unwrap();
        engine
            .execute_blocking(provision("acme"), meta("p"))
            .unwrap();
        engine
            .execute_blocking(signals("acme", "web", 0..5), meta("s1"))
            .unwrap();
        // Stopping leaves a snapshot of each partition that moved.
    }
    assert!(store.0.lock().unwrap().contains_key(&p));
    let engine =
        Engine::start_with_snapshots(topic.clone(), registry.clone(), &all, Some(store.clone()))
            .unwrap();
    let restored = engine
        .restores()
        .into_iter()
        .find(|r| r.partition == p)
        .unwrap();
    assert_eq!(restored.snapshot_seq, Some(6));
    assert_eq!(restored.replayed, 0);
    // The restored state still knows the signals (their dedupe keys).
    let again = engine
        .execute_blocking(signals("acme", "web", 0..5), meta("s1"))
        .unwrap();
    assert!(
        again.events.is_empty() && again.duplicates == 5,
        "{again:?}"
    );
    let more = engine
        .execute_blocking(signals("acme", "web", 3..8), meta("s2"))
        .unwrap();
    assert_eq!((more.events.len(), more.duplicates), (3, 2));
    drop(engine);

    // A snapshot whose hash is not the chain's is ignored: the owner replays the partition.
    let mut bytes = store.0.lock().unwrap()[&p].clone();
    let at = bytes.windows(8).position(|w| w == b"\"hash\":\"").unwrap() + 8;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    store.0.lock().unwrap().insert(p, bytes);
    let engine = Engine::start_with_snapshots(topic, registry, &all, Some(store.clone())).unwrap();
    let r = engine
        .restores()
        .into_iter()
        .find(|r| r.partition == p)
        .unwrap();
    assert_eq!((r.snapshot_seq, r.replayed), (None, 9));
    assert!(
        engine
            .execute_blocking(signals("acme", "web", 0..8), meta("s3"))
            .unwrap()
            .events
            .is_empty(),
        "every signal is known after the replay"
    );
}
