//! Given / when / then for every rule and refusal of the `ModelVersion` and `Deployment`
//! aggregates.

use std::collections::BTreeMap;

use cqrs_es::test::TestFramework;

use super::*;
use crate::error::Kind;
use crate::tenancy::TenantStatus;

type GivenVersion = TestFramework<ModelVersion>;
type GivenDeployment = TestFramework<Deployment>;

const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn version_services() -> ModelVersionServices {
    ModelVersionServices {
        tenant: TenantStatus::Active,
    }
}

fn usable() -> DeploymentServices {
    DeploymentServices {
        tenant: TenantStatus::Active,
        version_registered: true,
        version_retired: false,
    }
}

fn metrics() -> BTreeMap<String, String> {
    [("auc", "0.91"), ("f1", "0.84")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn register() -> ModelVersionCommand {
    ModelVersionCommand::RegisterModelVersion {
        tenant: "acme".into(),
        model: "churn".into(),
        version: "v1".into(),
        artifact_digest: DIGEST.into(),
        metrics: metrics(),
    }
}

fn registered() -> ModelVersionEvent {
    ModelVersionEvent::ModelVersionRegistered(ModelVersionRegistered {
        tenant: "acme".into(),
        model: "churn".into(),
        version: "v1".into(),
        artifact_digest: DIGEST.into(),
        metrics: metrics(),
    })
}

fn retired() -> ModelVersionEvent {
    ModelVersionEvent::ModelVersionRetired(ModelVersionRetired {
        tenant: "acme".into(),
        model: "churn".into(),
        version: "v1".into(),
    })
}

#[test]
fn stream_names() {
    assert_eq!(
        model_version_stream("acme", "churn", "v1"),
        "models.ModelVersion/acme/churn/v1"
    );
    assert_eq!(
        deployment_stream("acme", "churn", "production"),
        "models.Deployment/acme/churn/production"
    );
}

// --- ModelVersion -----------------------------------------------------------------------------

#[test]
fn registering_a_version() {
    GivenVersion::with(version_services())
        .given_no_previous_events()
        .when(register())
        .then_expect_events(vec![registered()]);
}

#[test]
fn registering_again_is_a_no_op_and_with_other_content_a_conflict() {
    GivenVersion::with(version_services())
        .given(vec![registered()])
        .when(register())
        .then_expect_events(vec![]);
    GivenVersion::with(version_services())
        .given(vec![registered(), retired()])
        .when(register())
        .then_expect_events(vec![]);
    let mut other = metrics();
    other.insert("auc".into(), "0.95".into());
    let err = GivenVersion::with(version_services())
        .given(vec![registered()])
        .when(ModelVersionCommand::RegisterModelVersion {
            tenant: "acme".into(),
            model: "churn".into(),
            version: "v1".into(),
            artifact_digest: DIGEST.into(),
            metrics: other,
        })
        .inspect_result()
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (Kind::Conflict, "model_version_exists")
    );
}

#[test]
fn registering_refuses_bad_fields_naming_them() {
    let cmd = |model: &str, version: &str, digest: &str, metrics: BTreeMap<String, String>| {
        ModelVersionCommand::RegisterModelVersion {
            tenant: "acme".into(),
            model: model.into(),
            version: version.into(),
            artifact_digest: digest.into(),
            metrics,
        }
    };
    let upper = DIGEST.to_uppercase().replace("SHA256", "sha256");
    let short = &DIGEST[..DIGEST.len() - 1];
    let too_many = (0..=MAX_METRICS)
        .map(|i| (format!("m{i}"), "1".to_owned()))
        .collect();
    let blank_value = [("auc".to_owned(), " ".to_owned())].into();
    let bad_name = [("a b".to_owned(), "1".to_owned())].into();
    for (c, field) in [
        (cmd("", "v1", DIGEST, metrics()), "model"),
        (cmd("churn", "v 1", DIGEST, metrics()), "version"),
        (cmd("churn", "v1", "md5:abc", metrics()), "artifact_digest"),
        (cmd("churn", "v1", &upper, metrics()), "artifact_digest"),
        (cmd("churn", "v1", short, metrics()), "artifact_digest"),
        (cmd("churn", "v1", DIGEST, too_many), "metrics"),
        (cmd("churn", "v1", DIGEST, blank_value), "metrics[\"auc\"]"),
        (cmd("churn", "v1", DIGEST, bad_name), "metrics[\"a b\"]"),
    ] {
        let err = GivenVersion::with(version_services())
            .given_no_previous_events()
            .when(c)
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
}

#[test]
fn retiring_a_version() {
    GivenVersion::with(version_services())
        .given(vec![registered()])
        .when(ModelVersionCommand::RetireModelVersion)
        .then_expect_events(vec![retired()]);
    GivenVersion::with(version_services())
        .given(vec![registered(), retired()])
        .when(ModelVersionCommand::RetireModelVersion)
        .then_expect_events(vec![]);
    let err = GivenVersion::with(version_services())
        .given_no_previous_events()
        .when(ModelVersionCommand::RetireModelVersion)
        .inspect_result()
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (Kind::NotFound, "unknown_model_version")
    );
}

#[test]
fn version_commands_of_an_inactive_tenant_are_refused() {
    for (status, code) in [
        (TenantStatus::Unknown, "unknown_tenant"),
        (TenantStatus::Suspended, "tenant_suspended"),
        (TenantStatus::Archived, "tenant_archived"),
    ] {
        let s = ModelVersionServices { tenant: status };
        for (given, cmd) in [
            (vec![], register()),
            (vec![registered()], ModelVersionCommand::RetireModelVersion),
        ] {
            let err = GivenVersion::with(s)
                .given(given)
                .when(cmd)
                .inspect_result()
                .unwrap_err();
            assert_eq!(err.code, code);
        }
    }
}

// --- Deployment -------------------------------------------------------------------------------

fn deploy(version: &str, traffic_pct: i32) -> DeploymentCommand {
    DeploymentCommand::Deploy {
        tenant: "acme".into(),
        model: "churn".into(),
        version: version.into(),
        environment: "production".into(),
        traffic_pct,
    }
}

fn traffic(shares: &[(&str, i32)]) -> Vec<TrafficShare> {
    shares
        .iter()
        .map(|(v, p)| TrafficShare {
            version: (*v).into(),
            traffic_pct: *p,
        })
        .collect()
}

fn deployed(version: &str, traffic_pct: i32, after: &[(&str, i32)]) -> DeploymentEvent {
    DeploymentEvent::ModelDeployed(ModelDeployed {
        tenant: "acme".into(),
        model: "churn".into(),
        environment: "production".into(),
        version: version.into(),
        traffic_pct,
        traffic: traffic(after),
    })
}

fn shifted(version: &str, traffic_pct: i32, after: &[(&str, i32)]) -> DeploymentEvent {
    DeploymentEvent::TrafficShifted(TrafficShifted {
        tenant: "acme".into(),
        model: "churn".into(),
        environment: "production".into(),
        version: version.into(),
        traffic_pct,
        traffic: traffic(after),
    })
}

fn promoted(version: &str, before: &[(&str, i32)]) -> DeploymentEvent {
    DeploymentEvent::ModelPromoted(ModelPromoted {
        tenant: "acme".into(),
        model: "churn".into(),
        environment: "production".into(),
        version: version.into(),
        previous_traffic: traffic(before),
    })
}

fn rolled_back(to_version: &str, before: &[(&str, i32)]) -> DeploymentEvent {
    DeploymentEvent::DeploymentRolledBack(DeploymentRolledBack {
        tenant: "acme".into(),
        model: "churn".into(),
        environment: "production".into(),
        to_version: to_version.into(),
        previous_traffic: traffic(before),
    })
}

fn retired_deployment(before: &[(&str, i32)]) -> DeploymentEvent {
    DeploymentEvent::DeploymentRetired(DeploymentRetired {
        tenant: "acme".into(),
        model: "churn".into(),
        environment: "production".into(),
        previous_traffic: traffic(before),
    })
}

/// v1 stable at 100 %.
fn stable() -> Vec<DeploymentEvent> {
    vec![deployed("v1", 100, &[("v1", 100)])]
}

/// v1 stable at 90 %, v2 canary at 10 %.
fn canary() -> Vec<DeploymentEvent> {
    vec![
        deployed("v1", 100, &[("v1", 100)]),
        deployed("v2", 10, &[("v1", 90), ("v2", 10)]),
    ]
}

fn deployment_err(given: Vec<DeploymentEvent>, cmd: DeploymentCommand) -> crate::DomainError {
    GivenDeployment::with(usable())
        .given(given)
        .when(cmd)
        .inspect_result()
        .unwrap_err()
}

#[test]
fn the_first_deployment_takes_all_traffic() {
    GivenDeployment::with(usable())
        .given_no_previous_events()
        .when(deploy("v1", 100))
        .then_expect_events(stable());
    let err = deployment_err(vec![], deploy("v1", 10));
    assert_eq!(err.field.as_deref(), Some("traffic_pct"));
}

#[test]
fn a_canary_takes_its_share_from_the_stable_version() {
    GivenDeployment::with(usable())
        .given(stable())
        .when(deploy("v2", 10))
        .then_expect_events(vec![deployed("v2", 10, &[("v1", 90), ("v2", 10)])]);
}

#[test]
fn a_full_deployment_replaces_what_serves() {
    GivenDeployment::with(usable())
        .given(canary())
        .when(deploy("v3", 100))
        .then_expect_events(vec![deployed("v3", 100, &[("v3", 100)])]);
}

#[test]
fn a_second_canary_is_refused_while_one_runs() {
    let err = deployment_err(canary(), deploy("v3", 5));
    assert_eq!((err.kind, err.code), (Kind::Conflict, "canary_in_progress"));
}

#[test]
fn deploying_a_serving_version_again() {
    GivenDeployment::with(usable())
        .given(canary())
        .when(deploy("v2", 10))
        .then_expect_events(vec![]);
    let err = deployment_err(canary(), deploy("v2", 50));
    assert_eq!((err.kind, err.code), (Kind::Conflict, "already_serving"));
}

#[test]
fn unregistered_or_retired_versions_are_not_deployed() {
    let err = GivenDeployment::with(DeploymentServices {
        version_registered: false,
        ..usable()
    })
    .given(stable())
    .when(deploy("v2", 10))
    .inspect_result()
    .unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (Kind::NotFound, "unknown_model_version")
    );
    let err = GivenDeployment::with(DeploymentServices {
        version_retired: true,
        ..usable()
    })
    .given(stable())
    .when(deploy("v2", 10))
    .inspect_result()
    .unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (Kind::Conflict, "model_version_retired")
    );
}

#[test]
fn deploy_refuses_bad_fields_naming_them() {
    let cmd =
        |model: &str, version: &str, environment: &str, traffic_pct| DeploymentCommand::Deploy {
            tenant: "acme".into(),
            model: model.into(),
            version: version.into(),
            environment: environment.into(),
            traffic_pct,
        };
    for (c, field) in [
        (cmd("", "v1", "production", 100), "model"),
        (cmd("churn", "", "production", 100), "version"),
        (cmd("churn", "v1", "prod env", 100), "environment"),
        (cmd("churn", "v1", "production", 0), "traffic_pct"),
        (cmd("churn", "v1", "production", 101), "traffic_pct"),
    ] {
        let err = deployment_err(vec![], c);
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
    let err = deployment_err(stable(), cmd("fraud", "v2", "production", 10));
    assert_eq!(err.code, "deployment_mismatch");
}

#[test]
fn shifting_canary_traffic_keeps_the_sum_at_100() {
    GivenDeployment::with(usable())
        .given(canary())
        .when(DeploymentCommand::ShiftTraffic {
            version: "v2".into(),
            traffic_pct: 50,
        })
        .then_expect_events(vec![shifted("v2", 50, &[("v1", 50), ("v2", 50)])]);
    GivenDeployment::with(usable())
        .given(canary())
        .when(DeploymentCommand::ShiftTraffic {
            version: "v1".into(),
            traffic_pct: 70,
        })
        .then_expect_events(vec![shifted("v1", 70, &[("v1", 70), ("v2", 30)])]);
    // To 0: the canary stops serving.
    GivenDeployment::with(usable())
        .given(canary())
        .when(DeploymentCommand::ShiftTraffic {
            version: "v2".into(),
            traffic_pct: 0,
        })
        .then_expect_events(vec![shifted("v2", 0, &[("v1", 100)])]);
    // The same share again changes nothing.
    GivenDeployment::with(usable())
        .given(canary())
        .when(DeploymentCommand::ShiftTraffic {
            version: "v2".into(),
            traffic_pct: 10,
        })
        .then_expect_events(vec![]);
}

#[test]
fn shifting_refusals() {
    let shift = |version: &str, traffic_pct| DeploymentCommand::ShiftTraffic {
        version: version.into(),
        traffic_pct,
    };
    let err = deployment_err(stable(), shift("v1", 50));
    assert_eq!((err.kind, err.code), (Kind::Conflict, "no_canary"));
    let err = deployment_err(canary(), shift("v9", 50));
    assert_eq!(err.code, "version_not_serving");
    for pct in [-1, 101] {
        let err = deployment_err(canary(), shift("v2", pct));
        assert_eq!(err.field.as_deref(), Some("traffic_pct"));
    }
    let err = deployment_err(vec![], shift("v1", 50));
    assert_eq!((err.kind, err.code), (Kind::NotFound, "unknown_deployment"));
    // A retired canary may be drained but not grown.
    let retired_version = DeploymentServices {
        version_retired: true,
        ..usable()
    };
    let err = GivenDeployment::with(retired_version)
        .given(canary())
        .when(shift("v2", 50))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code, "model_version_retired");
    GivenDeployment::with(retired_version)
        .given(canary())
        .when(shift("v2", 0))
        .then_expect_events(vec![shifted("v2", 0, &[("v1", 100)])]);
}

#[test]
fn promoting_a_serving_version() {
    GivenDeployment::with(usable())
        .given(canary())
        .when(DeploymentCommand::Promote {
            version: "v2".into(),
        })
        .then_expect_events(vec![promoted("v2", &[("v1", 90), ("v2", 10)])]);
    GivenDeployment::with(usable())
        .given(stable())
        .when(DeploymentCommand::Promote {
            version: "v1".into(),
        })
        .then_expect_events(vec![]);
    let err = deployment_err(
        canary(),
        DeploymentCommand::Promote {
            version: "v3".into(),
        },
    );
    assert_eq!(err.code, "version_not_serving");
    let err = GivenDeployment::with(DeploymentServices {
        version_retired: true,
        ..usable()
    })
    .given(canary())
    .when(DeploymentCommand::Promote {
        version: "v2".into(),
    })
    .inspect_result()
    .unwrap_err();
    assert_eq!(err.code, "model_version_retired");
}

#[test]
fn after_promotion_the_version_serves_everything() {
    let mut given = canary();
    given.push(promoted("v2", &[("v1", 90), ("v2", 10)]));
    GivenDeployment::with(usable())
        .given(given)
        .when(deploy("v3", 20))
        .then_expect_events(vec![deployed("v3", 20, &[("v2", 80), ("v3", 20)])]);
}

#[test]
fn rolling_back_to_a_version_served_before() {
    let mut given = canary();
    given.push(promoted("v2", &[("v1", 90), ("v2", 10)]));
    GivenDeployment::with(usable())
        .given(given.clone())
        .when(DeploymentCommand::Rollback {
            to_version: "v1".into(),
        })
        .then_expect_events(vec![rolled_back("v1", &[("v2", 100)])]);
    // Already serving everything: nothing to do.
    GivenDeployment::with(usable())
        .given(given.clone())
        .when(DeploymentCommand::Rollback {
            to_version: "v2".into(),
        })
        .then_expect_events(vec![]);
    // Mid-canary, back to the stable version.
    GivenDeployment::with(usable())
        .given(canary())
        .when(DeploymentCommand::Rollback {
            to_version: "v1".into(),
        })
        .then_expect_events(vec![rolled_back("v1", &[("v1", 90), ("v2", 10)])]);
    let err = deployment_err(
        given.clone(),
        DeploymentCommand::Rollback {
            to_version: "v0".into(),
        },
    );
    assert_eq!((err.kind, err.code), (Kind::Conflict, "never_deployed"));
    let err = GivenDeployment::with(DeploymentServices {
        version_retired: true,
        ..usable()
    })
    .given(given)
    .when(DeploymentCommand::Rollback {
        to_version: "v1".into(),
    })
    .inspect_result()
    .unwrap_err();
    assert_eq!(err.code, "model_version_retired");
}

#[test]
fn retiring_a_deployment_and_coming_back() {
    GivenDeployment::with(usable())
        .given(canary())
        .when(DeploymentCommand::Retire)
        .then_expect_events(vec![retired_deployment(&[("v1", 90), ("v2", 10)])]);
    let mut gone = canary();
    gone.push(retired_deployment(&[("v1", 90), ("v2", 10)]));
    GivenDeployment::with(usable())
        .given(gone.clone())
        .when(DeploymentCommand::Retire)
        .then_expect_events(vec![]);
    // Nothing serves: a canary has no stable version beside it.
    let err = deployment_err(gone.clone(), deploy("v3", 10));
    assert_eq!(err.field.as_deref(), Some("traffic_pct"));
    GivenDeployment::with(usable())
        .given(gone.clone())
        .when(DeploymentCommand::Rollback {
            to_version: "v2".into(),
        })
        .then_expect_events(vec![rolled_back("v2", &[])]);
    let err = deployment_err(
        gone,
        DeploymentCommand::Promote {
            version: "v1".into(),
        },
    );
    assert_eq!(err.code, "version_not_serving");
    let err = deployment_err(vec![], DeploymentCommand::Retire);
    assert_eq!(err.code, "unknown_deployment");
}

#[test]
fn deployment_commands_of_an_inactive_tenant_are_refused() {
    for (status, code) in [
        (TenantStatus::Unknown, "unknown_tenant"),
        (TenantStatus::Suspended, "tenant_suspended"),
        (TenantStatus::Archived, "tenant_archived"),
    ] {
        let s = DeploymentServices {
            tenant: status,
            ..usable()
        };
        for (given, cmd) in [
            (vec![], deploy("v1", 100)),
            (canary(), DeploymentCommand::Retire),
            (
                canary(),
                DeploymentCommand::Promote {
                    version: "v2".into(),
                },
            ),
        ] {
            let err = GivenDeployment::with(s)
                .given(given)
                .when(cmd)
                .inspect_result()
                .unwrap_err();
            assert_eq!(err.code, code);
        }
    }
}

/// Whatever sequence of accepted commands, the serving shares sum to 100 (or nothing serves).
#[test]
fn shares_always_sum_to_100() {
    let commands = [
        deploy("v1", 100),
        deploy("v2", 25),
        DeploymentCommand::ShiftTraffic {
            version: "v2".into(),
            traffic_pct: 60,
        },
        DeploymentCommand::ShiftTraffic {
            version: "v1".into(),
            traffic_pct: 0,
        },
        deploy("v3", 5),
        DeploymentCommand::Promote {
            version: "v3".into(),
        },
        DeploymentCommand::Rollback {
            to_version: "v1".into(),
        },
        deploy("v4", 100),
        DeploymentCommand::Retire,
        DeploymentCommand::Rollback {
            to_version: "v4".into(),
        },
    ];
    let mut history: Vec<DeploymentEvent> = Vec::new();
    for cmd in commands {
        let new = GivenDeployment::with(usable())
            .given(history.clone())
            .when(cmd.clone())
            .inspect_result()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        history.extend(new);
        let mut state = Deployment::default();
        for e in history.clone() {
            cqrs_es::Aggregate::apply(&mut state, e);
        }
        let sum: i32 = state.traffic.values().sum();
        assert!(sum == 100 || state.traffic.is_empty(), "{cmd:?}: {sum}");
        assert!(state.traffic.values().all(|p| *p > 0));
        assert!(state.traffic.len() <= 2);
    }
    assert_eq!(history.len(), 10);
}

// --- schemas ----------------------------------------------------------------------------------

#[test]
fn every_event_round_trips_through_its_published_schema() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let mut no_metrics = registered();
    if let ModelVersionEvent::ModelVersionRegistered(r) = &mut no_metrics {
        r.metrics.clear();
    }
    for e in [registered(), no_metrics, retired()] {
        let (id, bytes) = e.encode(&registry).unwrap();
        assert_eq!(registry.get(id).unwrap().event_type, e.event_type());
        let back =
            ModelVersionEvent::from_json(e.event_type(), registry.decode_json(id, &bytes).unwrap())
                .unwrap()
                .unwrap();
        assert_eq!(back, e);
    }
    for e in [
        deployed("v2", 10, &[("v1", 90), ("v2", 10)]),
        shifted("v2", 0, &[("v1", 100)]),
        promoted("v2", &[("v1", 90), ("v2", 10)]),
        rolled_back("v1", &[]),
        retired_deployment(&[("v1", 100)]),
    ] {
        let (id, bytes) = e.encode(&registry).unwrap();
        assert_eq!(registry.get(id).unwrap().event_type, e.event_type());
        let back =
            DeploymentEvent::from_json(e.event_type(), registry.decode_json(id, &bytes).unwrap())
                .unwrap()
                .unwrap();
        assert_eq!(back, e);
    }
}
