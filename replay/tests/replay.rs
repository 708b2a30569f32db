//! Replay on a real log written through the command path.

use std::sync::Arc;

use annals_domain::tenancy::{TenantCommand, TenantLimits};
use annals_events::{Log, LogConfig};
use annals_processors::{Command, CommandMeta, Engine};
use annals_replay::{Replay, Until, replay};
use annals_schemas::Registry;

fn provision(tenant: &str) -> Command {
    Command::Tenancy {
        tenant: tenant.into(),
        command: TenantCommand::ProvisionTenant {
            tenant: tenant.into(),
            name: "T".into(),
            plan: "growth".into(),
            region: "eu-west".into(),
            limits: TenantLimits {
                max_signals_per_day: 10,
                max_sources: 2,
                rate_per_second: 5,
            },
        },
    }
}

fn suspend(tenant: &str) -> Command {
    Command::Tenancy {
        tenant: tenant.into(),
        command: TenantCommand::SuspendTenant {
            reason: "unpaid".into(),
        },
    }
}

fn meta(id: &str) -> CommandMeta {
    CommandMeta {
        command_id: Some(id.into()),
        actor: "test".into(),
        ..CommandMeta::default()
    }
}

fn what(until: Until) -> Replay {
    Replay {
        topic: "events".into(),
        until,
        tenant: None,
        stream: None,
    }
}

#[test]
fn replays_are_deterministic_and_respect_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::builtin().unwrap());
    let (between, suspended_at) = {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let engine =
            Engine::start(log.create_topic("events", 2).unwrap(), registry.clone()).unwrap();
        for t in ["a", "b", "c"] {
            engine
                .execute_blocking(provision(t), meta(&format!("p-{t}")))
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let between = annals_events::time::now_micros();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let out = engine.execute_blocking(suspend("a"), meta("s-a")).unwrap();
        (between, out.events[0].clone())
    };
    let log = Log::open_read_only(dir.path()).unwrap();
    let head = replay(&log, &registry, &what(Until::Head)).unwrap();
    let again = replay(&log, &registry, &what(Until::Head)).unwrap();
    assert_eq!(
        head.digest, again.digest,
        "two replays to the same bound agree"
    );
    assert_eq!(head.events_applied, 4);
    assert_eq!(
        head.aggregates["tenancy.Tenant/a"]["state"]["status"],
        "Suspended"
    );

    // As of a time before the suspension, tenant a is active and the digest differs.
    let before = replay(&log, &registry, &what(Until::Time(between))).unwrap();
    assert_eq!(before.events_applied, 3);
    assert_eq!(
        before.aggregates["tenancy.Tenant/a"]["state"]["status"],
        "Active"
    );
    assert_ne!(before.digest, head.digest);

    // A seq bound in the suspension's partition: just before it, and at it.
    let p = suspended_at.partition;
    let at = replay(
        &log,
        &registry,
        &what(Until::Seq {
            partition: p,
            seq: suspended_at.seq,
        }),
    )
    .unwrap();
    assert_eq!(
        at.aggregates["tenancy.Tenant/a"]["state"]["status"],
        "Suspended"
    );
    let just_before = replay(
        &log,
        &registry,
        &what(Until::Seq {
            partition: p,
            seq: suspended_at.seq - 1,
        }),
    )
    .unwrap();
    assert_eq!(
        just_before.aggregates["tenancy.Tenant/a"]["state"]["status"],
        "Active"
    );

    // One tenant, one stream.
    let only_b = replay(
        &log,
        &registry,
        &Replay {
            tenant: Some("b".into()),
            ..what(Until::Head)
        },
    )
    .unwrap();
    assert_eq!(
        only_b.aggregates.keys().collect::<Vec<_>>(),
        ["tenancy.Tenant/b"]
    );
    let one = replay(
        &log,
        &registry,
        &Replay {
            stream: Some("tenancy.Tenant/a".into()),
            tenant: Some("a".into()),
            ..what(Until::Head)
        },
    )
    .unwrap();
    assert_eq!(one.aggregates.len(), 1);
    assert_eq!(
        one.aggregates["tenancy.Tenant/a"], head.aggregates["tenancy.Tenant/a"],
        "the same state, alone or with the others"
    );
}
