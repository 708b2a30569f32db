//! The pure decision logic, exhaustively over small attribute spaces, and given / when / then
//! for every rule and refusal of the `Policy` aggregate.

use cqrs_es::test::TestFramework;

use super::*;
use crate::error::Kind;
use crate::tenancy::TenantStatus;

type Given = TestFramework<Policy>;

fn active() -> PolicyServices {
    PolicyServices {
        tenant: TenantStatus::Active,
    }
}

fn rule(rule_id: &str, effect: Effect, priority: i32) -> Rule {
    Rule {
        rule_id: rule_id.into(),
        effect,
        priority,
        subject: SubjectCondition::default(),
        resource: ResourceCondition::default(),
        action: None,
    }
}

fn request(role: Option<&str>, scopes: &[&str], classification: &str, action: &str) -> Request {
    Request {
        subject: Subject {
            role: role.map(Into::into),
            scopes: scopes.iter().map(|s| (*s).into()).collect(),
        },
        resource: Resource {
            tenant: "acme".into(),
            classification: classification.into(),
        },
        action: action.into(),
    }
}

/// Analysts may read internal data; nobody exports restricted data; admins may do anything.
fn rules_v1() -> Vec<Rule> {
    vec![
        Rule {
            subject: SubjectCondition {
                role: Some("analyst".into()),
                scopes_any: vec![],
            },
            resource: ResourceCondition {
                tenant: Some("acme".into()),
                classification_in: vec!["public".into(), "internal".into()],
            },
            action: Some("read".into()),
            ..rule("analysts-read", Effect::Allow, 10)
        },
        Rule {
            resource: ResourceCondition {
                tenant: None,
                classification_in: vec!["restricted".into()],
            },
            action: Some("export".into()),
            ..rule("no-restricted-export", Effect::Deny, 100)
        },
        Rule {
            subject: SubjectCondition {
                role: Some("admin".into()),
                scopes_any: vec![],
            },
            ..rule("admins", Effect::Allow, 50)
        },
    ]
}

fn decision(effect: Effect, rule: Option<&str>) -> Decision {
    Decision {
        decision: effect,
        matched_rule: rule.map(Into::into),
    }
}

// --- evaluate ---------------------------------------------------------------------------------

#[test]
fn no_matching_rule_denies_by_default() {
    assert_eq!(
        evaluate(&[], &request(None, &[], "public", "read")),
        decision(Effect::Deny, None)
    );
    assert_eq!(
        evaluate(&rules_v1(), &request(Some("guest"), &[], "public", "read")),
        decision(Effect::Deny, None)
    );
}

#[test]
fn the_highest_priority_matching_rule_wins() {
    let r = rules_v1();
    assert_eq!(
        evaluate(&r, &request(Some("analyst"), &[], "internal", "read")),
        decision(Effect::Allow, Some("analysts-read"))
    );
    assert_eq!(
        evaluate(&r, &request(Some("admin"), &[], "restricted", "read")),
        decision(Effect::Allow, Some("admins"))
    );
    // The admin rule matches too, but the deny has a higher priority.
    assert_eq!(
        evaluate(&r, &request(Some("admin"), &[], "restricted", "export")),
        decision(Effect::Deny, Some("no-restricted-export"))
    );
    // A lower-priority deny loses to a higher allow.
    let r = vec![
        rule("deny-all", Effect::Deny, 1),
        rule("allow-all", Effect::Allow, 2),
    ];
    assert_eq!(
        evaluate(&r, &request(None, &[], "public", "read")),
        decision(Effect::Allow, Some("allow-all"))
    );
}

#[test]
fn on_equal_priority_deny_wins_whatever_the_order() {
    let req = request(None, &[], "public", "read");
    for r in [
        vec![rule("a", Effect::Allow, 5), rule("d", Effect::Deny, 5)],
        vec![rule("d", Effect::Deny, 5), rule("a", Effect::Allow, 5)],
    ] {
        assert_eq!(evaluate(&r, &req), decision(Effect::Deny, Some("d")));
    }
    // Two equal allows: the first in rule order names the decision.
    let r = vec![rule("a1", Effect::Allow, 5), rule("a2", Effect::Allow, 5)];
    assert_eq!(evaluate(&r, &req), decision(Effect::Allow, Some("a1")));
}

#[test]
fn every_condition_must_hold() {
    let scoped = Rule {
        subject: SubjectCondition {
            role: None,
            scopes_any: vec!["signals:read".into(), "signals:admin".into()],
        },
        resource: ResourceCondition {
            tenant: Some("acme".into()),
            classification_in: vec![],
        },
        ..rule("scoped", Effect::Allow, 1)
    };
    let yes = request(None, &["other", "signals:admin"], "x", "y");
    assert!(scoped.matches(&yes));
    assert!(!scoped.matches(&request(None, &["other"], "x", "y")));
    assert!(!scoped.matches(&request(None, &[], "x", "y")));
    let mut other_tenant = yes.clone();
    other_tenant.resource.tenant = "globex".into();
    assert!(!scoped.matches(&other_tenant));
    // A role condition needs the role; a request without one does not match it.
    let r = &rules_v1()[2];
    assert!(r.matches(&request(Some("admin"), &[], "x", "y")));
    assert!(!r.matches(&request(None, &[], "x", "y")));
    let r = &rules_v1()[0];
    assert!(!r.matches(&request(Some("analyst"), &[], "internal", "write")));
    assert!(!r.matches(&request(Some("analyst"), &[], "restricted", "read")));
}

/// Over every request in a small attribute space, `evaluate` agrees with its definition written
/// out the slow way: the matching rules' top priority, deny if any deny there, default deny.
#[test]
fn evaluate_agrees_with_its_definition_over_a_whole_space() {
    let mut rules = rules_v1();
    rules.push(Rule {
        subject: SubjectCondition {
            role: None,
            scopes_any: vec!["break-glass".into()],
        },
        ..rule("break-glass", Effect::Allow, 100)
    });
    rules.push(rule("baseline-deny", Effect::Deny, 0));
    rules.push(Rule {
        action: Some("read".into()),
        resource: ResourceCondition {
            tenant: None,
            classification_in: vec!["public".into()],
        },
        ..rule("public-read", Effect::Allow, 0)
    });
    let mut checked = 0;
    for role in [None, Some("analyst"), Some("admin"), Some("guest")] {
        for scopes in [&[][..], &["break-glass"][..], &["x"][..]] {
            for classification in ["public", "internal", "restricted"] {
                for action in ["read", "export", "delete"] {
                    let req = request(role, scopes, classification, action);
                    let got = evaluate(&rules, &req);
                    let matching: Vec<&Rule> = rules.iter().filter(|r| r.matches(&req)).collect();
                    match matching.iter().map(|r| r.priority).max() {
                        None => assert_eq!(got, decision(Effect::Deny, None)),
                        Some(top) => {
                            let at_top: Vec<&&Rule> =
                                matching.iter().filter(|r| r.priority == top).collect();
                            let want = if at_top.iter().any(|r| r.effect == Effect::Deny) {
                                Effect::Deny
                            } else {
                                Effect::Allow
                            };
                            assert_eq!(got.decision, want, "{req:?}");
                            let named = got.matched_rule.as_deref().unwrap();
                            assert!(
                                at_top
                                    .iter()
                                    .any(|r| r.rule_id == named && r.effect == want),
                                "{req:?}"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * 3 * 3 * 3);
}

// --- dry_run ----------------------------------------------------------------------------------

#[test]
fn a_dry_run_lists_exactly_the_decisions_that_would_flip() {
    let recorded: Vec<(Request, Effect)> = [
        request(Some("analyst"), &[], "internal", "read"),
        request(Some("admin"), &[], "restricted", "export"),
        request(Some("admin"), &[], "internal", "delete"),
        request(Some("guest"), &[], "public", "read"),
    ]
    .into_iter()
    .map(|r| {
        let d = evaluate(&rules_v1(), &r).decision;
        (r, d)
    })
    .collect();
    // The same rules flip nothing.
    assert!(dry_run(&rules_v1(), &recorded).is_empty());
    // Dropping the admin rule flips the admin's delete (allow → deny by default).
    let candidate: Vec<Rule> = rules_v1()
        .into_iter()
        .filter(|r| r.rule_id != "admins")
        .collect();
    let flips = dry_run(&candidate, &recorded);
    assert_eq!(
        flips,
        vec![Flip {
            index: 2,
            request: recorded[2].0.clone(),
            recorded: Effect::Allow,
            candidate: decision(Effect::Deny, None),
        }]
    );
    // Allowing everyone to read public data flips the guest's read.
    let mut candidate = rules_v1();
    candidate.push(Rule {
        action: Some("read".into()),
        ..rule("all-read", Effect::Allow, 1)
    });
    let flips = dry_run(&candidate, &recorded);
    assert_eq!(flips.len(), 1);
    assert_eq!(flips[0].index, 3);
    assert_eq!(
        flips[0].candidate,
        decision(Effect::Allow, Some("all-read"))
    );
    // An empty rule set denies everything: every recorded allow flips.
    let flips = dry_run(&[], &recorded);
    let allowed: Vec<usize> = recorded
        .iter()
        .enumerate()
        .filter(|(_, (_, d))| *d == Effect::Allow)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(flips.iter().map(|f| f.index).collect::<Vec<_>>(), allowed);
}

// --- validation -------------------------------------------------------------------------------

#[test]
fn bad_rules_are_refused_naming_the_field() {
    let with = |f: &dyn Fn(&mut Rule)| {
        let mut rules = rules_v1();
        f(&mut rules[1]);
        rules
    };
    for (rules, field) in [
        (with(&|r| r.rule_id = "".into()), "rules[1].rule_id"),
        (
            with(&|r| r.rule_id = "analysts-read".into()),
            "rules[1].rule_id",
        ),
        (
            with(&|r| r.subject.role = Some(" ".into())),
            "rules[1].subject.role",
        ),
        (
            with(&|r| r.subject.scopes_any = vec!["ok".into(), "".into()]),
            "rules[1].subject.scopes_any[1]",
        ),
        (
            with(&|r| r.resource.tenant = Some("".into())),
            "rules[1].resource.tenant",
        ),
        (
            with(&|r| r.resource.classification_in = vec!["x".into(); MAX_LIST + 1]),
            "rules[1].resource.classification_in",
        ),
        (with(&|r| r.action = Some("".into())), "rules[1].action"),
        (
            (0..=MAX_RULES)
                .map(|i| rule(&format!("r{i}"), Effect::Allow, 0))
                .collect(),
            "rules",
        ),
    ] {
        let err = validate_rules(&rules).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
    assert!(validate_rules(&rules_v1()).is_ok());
    assert!(validate_rules(&[]).is_ok());
}

// --- the aggregate ----------------------------------------------------------------------------

fn create() -> PolicyCommand {
    PolicyCommand::CreatePolicy {
        tenant: "acme".into(),
        policy_id: "data-access".into(),
        rules: rules_v1(),
    }
}

fn created(version: i32, rules: Vec<Rule>) -> PolicyEvent {
    PolicyEvent::PolicyVersionCreated(PolicyVersionCreated {
        tenant: "acme".into(),
        policy_id: "data-access".into(),
        version,
        rules,
    })
}

fn activated(version: i32) -> PolicyEvent {
    PolicyEvent::PolicyVersionActivated(PolicyVersionActivated {
        tenant: "acme".into(),
        policy_id: "data-access".into(),
        version,
    })
}

fn rolled_back(from_version: i32, to_version: i32) -> PolicyEvent {
    PolicyEvent::PolicyRolledBack(PolicyRolledBack {
        tenant: "acme".into(),
        policy_id: "data-access".into(),
        from_version,
        to_version,
    })
}

/// Version 2 drops the admin rule.
fn rules_v2() -> Vec<Rule> {
    rules_v1()
        .into_iter()
        .filter(|r| r.rule_id != "admins")
        .collect()
}

fn two_versions_second_active() -> Vec<PolicyEvent> {
    vec![
        created(1, rules_v1()),
        activated(1),
        created(2, rules_v2()),
        activated(2),
    ]
}

fn err(given: Vec<PolicyEvent>, cmd: PolicyCommand) -> crate::DomainError {
    Given::with(active())
        .given(given)
        .when(cmd)
        .inspect_result()
        .unwrap_err()
}

#[test]
fn stream_name() {
    assert_eq!(
        stream("acme", "data-access"),
        "policy.Policy/acme/data-access"
    );
}

#[test]
fn creating_a_policy_makes_version_1_inactive() {
    Given::with(active())
        .given_no_previous_events()
        .when(create())
        .then_expect_events(vec![created(1, rules_v1())]);
    Given::with(active())
        .given(vec![created(1, rules_v1())])
        .when(create())
        .then_expect_events(vec![]);
    let e = err(
        vec![created(1, rules_v1())],
        PolicyCommand::CreatePolicy {
            tenant: "acme".into(),
            policy_id: "data-access".into(),
            rules: rules_v2(),
        },
    );
    assert_eq!((e.kind, e.code), (Kind::Conflict, "policy_exists"));
    let e = err(
        vec![],
        PolicyCommand::CreatePolicy {
            tenant: "acme".into(),
            policy_id: "no spaces".into(),
            rules: vec![],
        },
    );
    assert_eq!(e.field.as_deref(), Some("policy_id"));
    let mut bad = rules_v1();
    bad[0].rule_id = "".into();
    let e = err(
        vec![],
        PolicyCommand::CreatePolicy {
            tenant: "acme".into(),
            policy_id: "p".into(),
            rules: bad,
        },
    );
    assert_eq!(e.field.as_deref(), Some("rules[0].rule_id"));
}

#[test]
fn changing_a_policy_adds_the_next_version() {
    Given::with(active())
        .given(vec![created(1, rules_v1()), activated(1)])
        .when(PolicyCommand::ChangePolicy { rules: rules_v2() })
        .then_expect_events(vec![created(2, rules_v2())]);
    Given::with(active())
        .given(vec![created(1, rules_v1()), created(2, rules_v2())])
        .when(PolicyCommand::ChangePolicy { rules: rules_v2() })
        .then_expect_events(vec![]);
    // Back to version 1's rules is a new version 3.
    Given::with(active())
        .given(vec![created(1, rules_v1()), created(2, rules_v2())])
        .when(PolicyCommand::ChangePolicy { rules: rules_v1() })
        .then_expect_events(vec![created(3, rules_v1())]);
    let e = err(vec![], PolicyCommand::ChangePolicy { rules: vec![] });
    assert_eq!((e.kind, e.code), (Kind::NotFound, "unknown_policy"));
}

#[test]
fn activating_versions_forward() {
    Given::with(active())
        .given(vec![created(1, rules_v1())])
        .when(PolicyCommand::ActivateVersion { version: 1 })
        .then_expect_events(vec![activated(1)]);
    Given::with(active())
        .given(vec![
            created(1, rules_v1()),
            activated(1),
            created(2, rules_v2()),
        ])
        .when(PolicyCommand::ActivateVersion { version: 2 })
        .then_expect_events(vec![activated(2)]);
    Given::with(active())
        .given(two_versions_second_active())
        .when(PolicyCommand::ActivateVersion { version: 2 })
        .then_expect_events(vec![]);
    let e = err(
        two_versions_second_active(),
        PolicyCommand::ActivateVersion { version: 1 },
    );
    assert_eq!((e.kind, e.code), (Kind::Conflict, "version_not_newer"));
    for v in [0, 3, -1] {
        let e = err(
            two_versions_second_active(),
            PolicyCommand::ActivateVersion { version: v },
        );
        assert_eq!((e.kind, e.code), (Kind::NotFound, "unknown_policy_version"));
        assert_eq!(e.field.as_deref(), Some("version"));
    }
}

#[test]
fn rolling_back_to_an_earlier_version() {
    Given::with(active())
        .given(two_versions_second_active())
        .when(PolicyCommand::RollBack { to_version: 1 })
        .then_expect_events(vec![rolled_back(2, 1)]);
    Given::with(active())
        .given(two_versions_second_active())
        .when(PolicyCommand::RollBack { to_version: 2 })
        .then_expect_events(vec![]);
    let e = err(
        vec![created(1, rules_v1()), activated(1), created(2, rules_v2())],
        PolicyCommand::RollBack { to_version: 2 },
    );
    assert_eq!(e.code, "version_not_earlier");
    let e = err(
        vec![created(1, rules_v1())],
        PolicyCommand::RollBack { to_version: 1 },
    );
    assert_eq!(e.code, "policy_not_active");
    let e = err(
        two_versions_second_active(),
        PolicyCommand::RollBack { to_version: 7 },
    );
    assert_eq!(e.field.as_deref(), Some("to_version"));
    // After a rollback the newer version can be activated again.
    let mut given = two_versions_second_active();
    given.push(rolled_back(2, 1));
    Given::with(active())
        .given(given)
        .when(PolicyCommand::ActivateVersion { version: 2 })
        .then_expect_events(vec![activated(2)]);
}

fn decided(
    req: Request,
    version: i32,
    effect: Effect,
    rule: Option<&str>,
    decided_at: i64,
) -> PolicyEvent {
    PolicyEvent::PolicyDecisionRecorded(PolicyDecisionRecorded {
        tenant: "acme".into(),
        policy_id: "data-access".into(),
        request: req,
        version,
        decision: effect,
        matched_rule: rule.map(Into::into),
        decided_at,
    })
}

#[test]
fn decisions_are_made_by_the_active_version() {
    let admin_delete = request(Some("admin"), &[], "internal", "delete");
    Given::with(active())
        .given(vec![
            created(1, rules_v1()),
            activated(1),
            created(2, rules_v2()),
        ])
        .when(PolicyCommand::RecordDecision {
            request: admin_delete.clone(),
            decided_at: 7,
        })
        .then_expect_events(vec![decided(
            admin_delete.clone(),
            1,
            Effect::Allow,
            Some("admins"),
            7,
        )]);
    Given::with(active())
        .given(two_versions_second_active())
        .when(PolicyCommand::RecordDecision {
            request: admin_delete.clone(),
            decided_at: 8,
        })
        .then_expect_events(vec![decided(
            admin_delete.clone(),
            2,
            Effect::Deny,
            None,
            8,
        )]);
    let mut rolled = two_versions_second_active();
    rolled.push(rolled_back(2, 1));
    Given::with(active())
        .given(rolled)
        .when(PolicyCommand::RecordDecision {
            request: admin_delete.clone(),
            decided_at: 9,
        })
        .then_expect_events(vec![decided(
            admin_delete,
            1,
            Effect::Allow,
            Some("admins"),
            9,
        )]);
}

#[test]
fn decision_refusals() {
    let req = request(Some("admin"), &[], "internal", "delete");
    let e = err(
        vec![created(1, rules_v1())],
        PolicyCommand::RecordDecision {
            request: req.clone(),
            decided_at: 1,
        },
    );
    assert_eq!((e.kind, e.code), (Kind::Conflict, "policy_not_active"));
    let e = err(
        vec![],
        PolicyCommand::RecordDecision {
            request: req.clone(),
            decided_at: 1,
        },
    );
    assert_eq!(e.code, "unknown_policy");
    let e = err(
        two_versions_second_active(),
        PolicyCommand::RecordDecision {
            request: req.clone(),
            decided_at: 0,
        },
    );
    assert_eq!(e.field.as_deref(), Some("decided_at"));
    let mut bad = req;
    bad.action = "".into();
    let e = err(
        two_versions_second_active(),
        PolicyCommand::RecordDecision {
            request: bad,
            decided_at: 1,
        },
    );
    assert_eq!(e.field.as_deref(), Some("request.action"));
}

#[test]
fn commands_of_an_inactive_tenant_are_refused() {
    for (status, code) in [
        (TenantStatus::Unknown, "unknown_tenant"),
        (TenantStatus::Suspended, "tenant_suspended"),
        (TenantStatus::Archived, "tenant_archived"),
    ] {
        for (given, cmd) in [
            (vec![], create()),
            (
                two_versions_second_active(),
                PolicyCommand::RollBack { to_version: 1 },
            ),
            (
                two_versions_second_active(),
                PolicyCommand::RecordDecision {
                    request: request(None, &[], "public", "read"),
                    decided_at: 1,
                },
            ),
        ] {
            let e = Given::with(PolicyServices { tenant: status })
                .given(given)
                .when(cmd)
                .inspect_result()
                .unwrap_err();
            assert_eq!(e.code, code);
        }
    }
}

#[test]
fn every_event_round_trips_through_its_published_schema() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let mut rules = rules_v1();
    rules[0].subject.scopes_any = vec!["signals:read".into()];
    for e in [
        created(1, rules),
        created(2, vec![]),
        activated(1),
        rolled_back(2, 1),
        decided(
            request(Some("admin"), &["a", "b"], "internal", "delete"),
            1,
            Effect::Allow,
            Some("admins"),
            1_735_689_600_000_000,
        ),
        decided(
            request(None, &[], "public", "read"),
            2,
            Effect::Deny,
            None,
            1,
        ),
    ] {
        let (id, bytes) = e.encode(&registry).unwrap();
        assert_eq!(registry.get(id).unwrap().event_type, e.event_type());
        let back =
            PolicyEvent::from_json(e.event_type(), registry.decode_json(id, &bytes).unwrap())
                .unwrap()
                .unwrap();
        assert_eq!(back, e);
    }
}
