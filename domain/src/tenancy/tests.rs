//! Given / when / then for every rule and refusal of the `Tenant` aggregate.

use cqrs_es::test::TestFramework;

use super::aggregate::{LimitsChanged, Provisioned, Suspended, TenantOnly};
use super::*;

type Given = TestFramework<Tenant>;

fn limits() -> TenantLimits {
    TenantLimits {
        max_signals_per_day: 1000,
        max_sources: 4,
        rate_per_second: 100,
    }
}

fn provision() -> TenantCommand {
    TenantCommand::ProvisionTenant {
        tenant: "acme".into(),
        name: "Acme".into(),
        plan: "growth".into(),
        region: "eu-west".into(),
        limits: limits(),
    }
}

fn provisioned() -> TenantEvent {
    TenantEvent::TenantProvisioned(Provisioned {
        tenant: "acme".into(),
        name: "Acme".into(),
        plan: "growth".into(),
        region: "eu-west".into(),
        limits: limits(),
    })
}

fn only() -> TenantOnly {
    TenantOnly {
        tenant: "acme".into(),
    }
}

#[test]
fn provisioning_a_new_tenant() {
    Given::with(())
        .given_no_previous_events()
        .when(provision())
        .then_expect_events(vec![provisioned()]);
}

#[test]
fn provisioning_again_with_the_same_attributes_is_a_no_op() {
    Given::with(())
        .given(vec![provisioned()])
        .when(provision())
        .then_expect_events(vec![]);
}

#[test]
fn provisioning_again_with_other_attributes_is_a_conflict() {
    let TenantCommand::ProvisionTenant {
        tenant,
        region,
        limits,
        ..
    } = provision()
    else {
        unreachable!()
    };
    let other = TenantCommand::ProvisionTenant {
        tenant,
        name: "Other".into(),
        plan: "starter".into(),
        region,
        limits,
    };
    Given::with(()).given(vec![provisioned()]).when(other).then_expect_error_message("tenant `acme` is already provisioned with other attributes; use ChangeLimits or another tenant id");
}

#[test]
fn provisioning_rejects_bad_fields_naming_them() {
    let cases = [
        (
            TenantCommand::ProvisionTenant {
                tenant: "".into(),
                name: "A".into(),
                plan: "growth".into(),
                region: "eu".into(),
                limits: limits(),
            },
            "tenant",
        ),
        (
            TenantCommand::ProvisionTenant {
                tenant: "a b".into(),
                name: "A".into(),
                plan: "growth".into(),
                region: "eu".into(),
                limits: limits(),
            },
            "tenant",
        ),
        (
            TenantCommand::ProvisionTenant {
                tenant: "a".into(),
                name: " ".into(),
                plan: "growth".into(),
                region: "eu".into(),
                limits: limits(),
            },
            "name",
        ),
        (
            TenantCommand::ProvisionTenant {
                tenant: "a".into(),
                name: "A".into(),
                plan: "gold".into(),
                region: "eu".into(),
                limits: limits(),
            },
            "plan",
        ),
        (
            TenantCommand::ProvisionTenant {
                tenant: "a".into(),
                name: "A".into(),
                plan: "growth".into(),
                region: "".into(),
                limits: limits(),
            },
            "region",
        ),
        (
            TenantCommand::ProvisionTenant {
                tenant: "a".into(),
                name: "A".into(),
                plan: "growth".into(),
                region: "eu".into(),
                limits: TenantLimits {
                    max_signals_per_day: 0,
                    ..limits()
                },
            },
            "limits.max_signals_per_day",
        ),
    ];
    for (cmd, field) in cases {
        let err = Given::with(())
            .given_no_previous_events()
            .when(cmd)
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
}

#[test]
fn changing_limits() {
    let new = TenantLimits {
        max_sources: 8,
        ..limits()
    };
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::ChangeLimits {
            limits: new.clone(),
        })
        .then_expect_events(vec![TenantEvent::TenantLimitsChanged(LimitsChanged {
            tenant: "acme".into(),
            limits: new,
        })]);
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::ChangeLimits { limits: limits() })
        .then_expect_events(vec![]);
}

#[test]
fn commands_for_an_unknown_tenant_are_refused() {
    for cmd in [
        TenantCommand::ChangeLimits { limits: limits() },
        TenantCommand::SuspendTenant { reason: "x".into() },
        TenantCommand::ReactivateTenant,
        TenantCommand::ArchiveTenant,
    ] {
        let err = Given::with(())
            .given_no_previous_events()
            .when(cmd)
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, "unknown_tenant");
    }
}

#[test]
fn suspend_and_reactivate() {
    let suspended = TenantEvent::TenantSuspended(Suspended {
        tenant: "acme".into(),
        reason: "unpaid".into(),
    });
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::SuspendTenant {
            reason: "unpaid".into(),
        })
        .then_expect_events(vec![suspended.clone()]);
    Given::with(())
        .given(vec![provisioned(), suspended.clone()])
        .when(TenantCommand::ReactivateTenant)
        .then_expect_events(vec![TenantEvent::TenantReactivated(only())]);
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::ReactivateTenant)
        .then_expect_events(vec![]);
    let err = Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::SuspendTenant { reason: " ".into() })
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("reason"));
}

#[test]
fn archived_is_final() {
    let archived = TenantEvent::TenantArchived(only());
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::ArchiveTenant)
        .then_expect_events(vec![archived.clone()]);
    Given::with(())
        .given(vec![provisioned(), archived.clone()])
        .when(TenantCommand::ArchiveTenant)
        .then_expect_events(vec![]);
    for cmd in [
        TenantCommand::ChangeLimits { limits: limits() },
        TenantCommand::SuspendTenant { reason: "x".into() },
        TenantCommand::ReactivateTenant,
    ] {
        let err = Given::with(())
            .given(vec![provisioned(), archived.clone()])
            .when(cmd)
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, "tenant_archived");
    }
}

#[test]
fn the_status_gate_of_other_contexts() {
    assert!(TenantStatus::Active.require_active("a").is_ok());
    assert_eq!(
        TenantStatus::Unknown.require_active("a").unwrap_err().code,
        "unknown_tenant"
    );
    assert_eq!(
        TenantStatus::Suspended
            .require_active("a")
            .unwrap_err()
            .code,
        "tenant_suspended"
    );
    assert_eq!(
        TenantStatus::Archived.require_active("a").unwrap_err().code,
        "tenant_archived"
    );
}

#[test]
fn every_event_round_trips_through_its_published_schema() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let events = vec![
        provisioned(),
        TenantEvent::TenantLimitsChanged(LimitsChanged {
            tenant: "acme".into(),
            limits: limits(),
        }),
        TenantEvent::TenantSuspended(Suspended {
            tenant: "acme".into(),
            reason: "r".into(),
        }),
        TenantEvent::TenantReactivated(only()),
        TenantEvent::TenantArchived(only()),
    ];
    for e in events {
        let (id, bytes) = e.encode(&registry).unwrap();
        let back =
            TenantEvent::from_json(e.event_type(), registry.decode_json(id, &bytes).unwrap())
                .unwrap()
                .unwrap();
        assert_eq!(back, e);
    }
}
