//! Billing, models and policy over real HTTP: commands in, events checked through the history.

mod common;

use common::*;

/// The events of a stream, read with the tenant's audit token.
async fn history(s: &Server, tenant: &str, stream: &str) -> Vec<Value> {
    let (status, body) = s
        .get(&format!("/v1/tenants/{tenant}/streams/{stream}"), OPERATOR)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_is_opened_priced_credited_issued_and_paid() {
    let s = start().await;
    s.provision("acme").await;
    let inv = "/v1/tenants/acme/invoices";
    let open = json!({"invoice_id": "inv-1", "currency": "EUR", "purchase_order": "PO-7", "opened_at": "2026-01-01T00:00:00Z"});
    let out = s.created(inv, ACME_ADMIN, open.clone()).await;
    assert_eq!(out["stream"], "billing.Invoice/acme/inv-1");
    assert_eq!(out["stream_version"], 1);
    assert_eq!(out["events"][0]["event_type"], "billing.InvoiceOpened");
    assert!(out["events"][0]["event_id"].is_string());
    assert!(out["events"][0]["seq"].is_u64());
    s.repeated(inv, ACME_ADMIN, open).await;

    let lines = "/v1/tenants/acme/invoices/inv-1/lines";
    // Flat: 10 × 250.
    let flat = json!({"line_id": "l1", "description": "Seats", "meter": "seats", "quantity": 10, "unit_price_minor": 250});
    s.created(lines, ACME_ADMIN, flat).await;
    // Volume tiers: 1000 × 2 + 500 × 1.
    let tiered = json!({
        "line_id": "l2", "description": "API calls", "meter": "api_calls", "quantity": 1500,
        "unit_price_minor": 0,
        "tiers": [{"up_to": 1000, "unit_price_minor": 2}, {"unit_price_minor": 1}]
    });
    s.created(lines, ACME_ADMIN, tiered.clone()).await;
    s.repeated(lines, ACME_ADMIN, tiered).await;
    // Refusals name the field, from the body parser and from the domain.
    let body = s
        .refused(
            s.http.post(s.url(lines)).bearer_auth(ACME_ADMIN).json(&json!({
                "line_id": "l3", "description": "x", "meter": "m", "quantity": "ten", "unit_price_minor": 1
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "quantity");
    let body = s
        .refused(
            s.http.post(s.url(lines)).bearer_auth(ACME_ADMIN).json(&json!({
                "line_id": "l3", "description": "x", "meter": "m", "quantity": 5, "unit_price_minor": 0,
                "tiers": [{"up_to": 10, "unit_price_minor": 2}, {"up_to": 20, "unit_price_minor": 1}]
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "tiers[1].up_to");
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/invoices/nope/lines"))
            .bearer_auth(ACME_ADMIN)
            .json(&json!({"line_id": "l1", "description": "x", "meter": "m", "quantity": 1, "unit_price_minor": 1})),
        StatusCode::NOT_FOUND,
        "unknown_invoice",
    )
    .await;

    let credit = json!({"credit_id": "sla-1", "reason": "SLA breach", "amount_minor": 500});
    s.created(
        "/v1/tenants/acme/invoices/inv-1/credits",
        ACME_ADMIN,
        credit,
    )
    .await;

    // Net 5000 - 500 = 4500; 19 % tax = 855; total 5355.
    let issue = json!({"tax_jurisdiction": "DE", "tax_rate_bp": 1900, "issued_at": 1_767_312_000_000_000_i64});
    let out = s
        .created(
            "/v1/tenants/acme/invoices/inv-1/issue",
            ACME_ADMIN,
            issue.clone(),
        )
        .await;
    assert_eq!(out["events"][0]["event_type"], "billing.InvoiceIssued");
    s.repeated("/v1/tenants/acme/invoices/inv-1/issue", ACME_ADMIN, issue)
        .await;
    // Issued: no more lines.
    s.refused(
        s.http.post(s.url(lines)).bearer_auth(ACME_ADMIN).json(&json!({
            "line_id": "l9", "description": "late", "meter": "m", "quantity": 1, "unit_price_minor": 1
        })),
        StatusCode::CONFLICT,
        "invoice_not_draft",
    )
    .await;

    let events = history(&s, "acme", "billing.Invoice/acme/inv-1").await;
    let added = of_type(&events, "billing.InvoiceLineAdded");
    assert_eq!(added.len(), 2);
    assert_eq!(added[0]["payload"]["amount_minor"], 2500);
    assert_eq!(added[1]["payload"]["amount_minor"], 2500);
    assert_eq!(added[1]["payload"]["tiers"][1]["up_to"], Value::Null);
    let issued = of_type(&events, "billing.InvoiceIssued");
    assert_eq!(issued.len(), 1);
    let p = &issued[0]["payload"];
    assert_eq!(p["subtotal_minor"], 5000, "{p}");
    assert_eq!(p["credits_minor"], 500, "{p}");
    assert_eq!(p["tax_rate_bp"], 1900, "{p}");
    assert_eq!(p["tax_minor"], 855, "{p}");
    assert_eq!(p["total_minor"], 5355, "{p}");
    assert_eq!(p["currency"], "EUR");
    assert_eq!(p["issued_at"], 1_767_312_000_000_000_i64);
    assert_eq!(events[0]["actor"], "acme-admin");

    // Paying anything but the total is refused and writes nothing.
    let pay = "/v1/tenants/acme/invoices/inv-1/pay";
    let body = s
        .refused(
            s.http
                .post(s.url(pay))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"amount_minor": 5000})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "amount_minor");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("5355"),
        "{body}"
    );
    let paid = json!({"amount_minor": 5355, "paid_at": "2026-01-03T12:00:00Z"});
    let out = s.created(pay, ACME_ADMIN, paid.clone()).await;
    assert_eq!(out["events"][0]["event_type"], "billing.InvoicePaid");
    assert_eq!(out["stream_version"], 6);
    s.repeated(pay, ACME_ADMIN, paid).await;
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/invoices/inv-1/void"))
            .bearer_auth(ACME_ADMIN)
            .json(&json!({"reason": "oops"})),
        StatusCode::CONFLICT,
        "invoice_paid",
    )
    .await;
    let events = history(&s, "acme", "billing.Invoice/acme/inv-1").await;
    let paid = of_type(&events, "billing.InvoicePaid");
    assert_eq!(paid[0]["payload"]["paid_at"], 1_767_441_600_000_000_i64);

    // A draft can be voided; opened_at defaults to now.
    let out = s
        .created(
            inv,
            ACME_ADMIN,
            json!({"invoice_id": "inv-2", "currency": "EUR"}),
        )
        .await;
    assert_eq!(out["stream"], "billing.Invoice/acme/inv-2");
    // Without `opened_at`, a retry is recognised by its Idempotency-Key.
    let keyed_open = || {
        s.http
            .post(s.url(inv))
            .bearer_auth(ACME_ADMIN)
            .header("Idempotency-Key", "open-4")
            .json(&json!({"invoice_id": "inv-4", "currency": "EUR"}))
    };
    let (status, out) = s.send(keyed_open()).await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    let before = s.head();
    let (status, out) = s.send(keyed_open()).await;
    assert_eq!((status, &out["events"]), (StatusCode::OK, &json!([])));
    assert_eq!(s.head(), before);
    let void = json!({"reason": "duplicate"});
    s.created(
        "/v1/tenants/acme/invoices/inv-2/void",
        ACME_ADMIN,
        void.clone(),
    )
    .await;
    s.repeated("/v1/tenants/acme/invoices/inv-2/void", ACME_ADMIN, void)
        .await;
    let body = s
        .refused(
            s.http
                .post(s.url(inv))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"invoice_id": "inv-3", "currency": "EUR", "opened_at": "yesterday"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "opened_at");
    let body = s
        .refused(
            s.http
                .post(s.url(inv))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"invoice_id": "inv-3", "currency": "euro"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "currency");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_record_usage_and_announce_thresholds() {
    let s = start().await;
    s.provision("acme").await;
    let budget = "/v1/tenants/acme/budgets/2026-01";
    let set = json!({"currency": "EUR", "limit_minor": 1000});
    let (status, out) = s.put(budget, ACME_BILLING, set.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(out["stream"], "billing.Budget/acme/2026-01");
    assert_eq!(out["events"][0]["event_type"], "billing.BudgetSet");
    let (status, out) = s.put(budget, ACME_BILLING, set).await;
    assert_eq!((status, &out["events"]), (StatusCode::OK, &json!([])));
    let usage = "/v1/tenants/acme/budgets/2026-01/usage";
    let u1 = json!({"usage_id": "u1", "meter": "api_calls", "quantity": 100, "cost_minor": 850});
    let out = s.created(usage, ACME_BILLING, u1.clone()).await;
    let types: Vec<_> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["billing.UsageRecorded", "billing.BudgetThresholdReached"]
    );
    s.repeated(usage, ACME_BILLING, u1).await;
    s.refused(
        s.http
            .post(s.url(usage))
            .bearer_auth(ACME_BILLING)
            .json(&json!({"usage_id": "u1", "meter": "api_calls", "quantity": 1, "cost_minor": 1})),
        StatusCode::CONFLICT,
        "usage_exists",
    )
    .await;
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/budgets/2026-02/usage"))
            .bearer_auth(ACME_BILLING)
            .json(&json!({"usage_id": "u1", "meter": "m", "quantity": 1, "cost_minor": 1})),
        StatusCode::NOT_FOUND,
        "unknown_budget",
    )
    .await;
    let body = s
        .refused(
            s.http
                .put(s.url("/v1/tenants/acme/budgets/2026-13"))
                .bearer_auth(ACME_BILLING)
                .json(&json!({"currency": "EUR", "limit_minor": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "month");
    // If-Match works as on every command.
    s.refused(
        s.http
            .put(s.url(budget))
            .bearer_auth(ACME_BILLING)
            .header("If-Match", "1")
            .json(&json!({"currency": "EUR", "limit_minor": 2000})),
        StatusCode::CONFLICT,
        "version_conflict",
    )
    .await;
    s.stop().await;
}

const DIGEST_1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const DIGEST_2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_registered_deployed_shifted_promoted_and_rolled_back() {
    let s = start().await;
    s.provision("acme").await;
    let env = "/v1/tenants/acme/models/churn/environments/prod";
    // Deploying a version that was never registered: refused, nothing written.
    let body = s
        .refused(
            s.http
                .post(s.url(&format!("{env}/deploy")))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"version": "v1", "traffic_pct": 100})),
            StatusCode::NOT_FOUND,
            "unknown_model_version",
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("register"),
        "{body}"
    );

    let versions = "/v1/tenants/acme/models/churn/versions";
    let v1 = json!({"version": "v1", "artifact_digest": DIGEST_1, "metrics": {"auc": "0.91"}});
    let out = s.created(versions, ACME_ADMIN, v1.clone()).await;
    assert_eq!(out["stream"], "models.ModelVersion/acme/churn/v1");
    assert_eq!(
        out["events"][0]["event_type"],
        "models.ModelVersionRegistered"
    );
    s.repeated(versions, ACME_ADMIN, v1).await;
    s.created(
        versions,
        ACME_ADMIN,
        json!({"version": "v2", "artifact_digest": DIGEST_2}),
    )
    .await;
    let body = s
        .refused(
            s.http
                .post(s.url(versions))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"version": "v3", "artifact_digest": "md5:abc"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "artifact_digest");

    let step = |action: &str| format!("{env}/{action}");
    let out = s
        .created(
            &step("deploy"),
            ACME_ADMIN,
            json!({"version": "v1", "traffic_pct": 100}),
        )
        .await;
    assert_eq!(out["stream"], "models.Deployment/acme/churn/prod");
    assert_eq!(out["events"][0]["event_type"], "models.ModelDeployed");
    s.created(
        &step("deploy"),
        ACME_ADMIN,
        json!({"version": "v2", "traffic_pct": 10}),
    )
    .await;
    s.repeated(
        &step("deploy"),
        ACME_ADMIN,
        json!({"version": "v2", "traffic_pct": 10}),
    )
    .await;
    let out = s
        .created(
            &step("shift"),
            ACME_ADMIN,
            json!({"version": "v2", "traffic_pct": 50}),
        )
        .await;
    assert_eq!(out["events"][0]["event_type"], "models.TrafficShifted");
    let out = s
        .created(&step("promote"), ACME_ADMIN, json!({"version": "v2"}))
        .await;
    assert_eq!(out["events"][0]["event_type"], "models.ModelPromoted");
    let out = s
        .created(&step("rollback"), ACME_ADMIN, json!({"to_version": "v1"}))
        .await;
    assert_eq!(
        out["events"][0]["event_type"],
        "models.DeploymentRolledBack"
    );
    assert_eq!(out["stream_version"], 5);
    s.repeated(&step("rollback"), ACME_ADMIN, json!({"to_version": "v1"}))
        .await;
    s.refused(
        s.http
            .post(s.url(&step("rollback")))
            .bearer_auth(ACME_ADMIN)
            .json(&json!({"to_version": "v7"})),
        StatusCode::CONFLICT,
        "never_deployed",
    )
    .await;

    let events = history(&s, "acme", "models.Deployment/acme/churn/prod").await;
    let types: Vec<_> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "models.ModelDeployed",
            "models.ModelDeployed",
            "models.TrafficShifted",
            "models.ModelPromoted",
            "models.DeploymentRolledBack"
        ]
    );
    assert_eq!(
        events[1]["payload"]["traffic"],
        json!([{"version": "v1", "traffic_pct": 90}, {"version": "v2", "traffic_pct": 10}])
    );
    assert_eq!(
        events[2]["payload"]["traffic"],
        json!([{"version": "v1", "traffic_pct": 50}, {"version": "v2", "traffic_pct": 50}])
    );
    assert_eq!(
        events[4]["payload"]["previous_traffic"],
        json!([{"version": "v2", "traffic_pct": 100}])
    );

    // A retired version cannot serve again; the deployment itself can be retired.
    let out = s
        .created(
            "/v1/tenants/acme/models/churn/versions/v2/retire",
            ACME_ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(out["events"][0]["event_type"], "models.ModelVersionRetired");
    s.refused(
        s.http
            .post(s.url(&step("deploy")))
            .bearer_auth(ACME_ADMIN)
            .json(&json!({"version": "v2", "traffic_pct": 100})),
        StatusCode::CONFLICT,
        "model_version_retired",
    )
    .await;
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/models/churn/versions/v9/retire"))
            .bearer_auth(ACME_ADMIN),
        StatusCode::NOT_FOUND,
        "unknown_model_version",
    )
    .await;
    let (status, out) = s
        .send(s.http.post(s.url(&step("retire"))).bearer_auth(ACME_ADMIN))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(out["events"][0]["event_type"], "models.DeploymentRetired");
    let (status, out) = s
        .send(s.http.post(s.url(&step("retire"))).bearer_auth(ACME_ADMIN))
        .await;
    assert_eq!((status, &out["events"]), (StatusCode::OK, &json!([])));
    s.stop().await;
}

fn rule(id: &str, effect: &str, priority: i32, extra: Value) -> Value {
    let mut r = json!({"rule_id": id, "effect": effect, "priority": priority});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

fn request(role: Option<&str>, classification: &str, action: &str) -> Value {
    json!({
        "subject": {"role": role, "scopes": []},
        "resource": {"tenant": "acme", "classification": classification},
        "action": action
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_versions_decisions_and_a_dry_run_of_the_flips() {
    let s = start().await;
    s.provision("acme").await;
    s.provision("globex").await;
    let v1 = json!([
        rule(
            "analysts-read",
            "allow",
            10,
            json!({"subject": {"role": "analyst"}, "action": "read"})
        ),
        rule(
            "no-confidential",
            "deny",
            20,
            json!({"resource": {"classification_in": ["confidential"]}})
        ),
    ]);
    let create = json!({"policy_id": "data", "rules": v1});
    let out = s
        .created("/v1/tenants/acme/policies", ACME_ADMIN, create.clone())
        .await;
    assert_eq!(out["stream"], "policy.Policy/acme/data");
    assert_eq!(
        out["events"][0]["event_type"],
        "policy.PolicyVersionCreated"
    );
    s.repeated("/v1/tenants/acme/policies", ACME_ADMIN, create)
        .await;
    let p = "/v1/tenants/acme/policies/data";
    let decisions = format!("{p}/decisions");
    // No active version yet.
    s.refused(
        s.http
            .post(s.url(&decisions))
            .bearer_auth(ACME_ADMIN)
            .json(&json!({"request": request(Some("analyst"), "public", "read")})),
        StatusCode::CONFLICT,
        "policy_not_active",
    )
    .await;
    s.created(&format!("{p}/activate"), ACME_ADMIN, json!({"version": 1}))
        .await;
    s.repeated(&format!("{p}/activate"), ACME_ADMIN, json!({"version": 1}))
        .await;

    let decide = |role: Option<&'static str>, class: &'static str, action: &'static str| {
        let s = &s;
        let decisions = decisions.clone();
        async move {
            let out = s
                .created(
                    &decisions,
                    ACME_ADMIN,
                    json!({"request": request(role, class, action), "decided_at": 1_767_225_600_000_000_i64}),
                )
                .await;
            assert_eq!(
                out["events"][0]["event_type"],
                "policy.PolicyDecisionRecorded"
            );
            assert_eq!(out["decided_at"], 1_767_225_600_000_000_i64);
            (
                out["decision"].as_str().unwrap().to_owned(),
                out["matched_rule"].as_str().map(str::to_owned),
                out["policy_version"].as_i64().unwrap(),
            )
        }
    };
    let d = |e: &str, r: Option<&str>, v: i64| (e.to_owned(), r.map(str::to_owned), v);
    // Version 1.
    assert_eq!(
        decide(Some("analyst"), "public", "read").await,
        d("allow", Some("analysts-read"), 1)
    );
    assert_eq!(
        decide(Some("analyst"), "confidential", "read").await,
        d("deny", Some("no-confidential"), 1)
    );
    assert_eq!(
        decide(Some("guest"), "public", "read").await,
        d("deny", None, 1)
    );
    assert_eq!(
        decide(Some("analyst"), "public", "write").await,
        d("deny", None, 1)
    );
    // Version 2 lets analysts do any action.
    let v2 = json!({"rules": [
        rule("analysts-any", "allow", 10, json!({"subject": {"role": "analyst"}})),
        rule("no-confidential", "deny", 20, json!({"resource": {"classification_in": ["confidential"]}})),
    ]});
    let (status, out) = s.put(p, ACME_ADMIN, v2.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(out["stream_version"], 7);
    let (status, out) = s.put(p, ACME_ADMIN, v2).await;
    assert_eq!((status, &out["events"]), (StatusCode::OK, &json!([])));
    s.created(&format!("{p}/activate"), ACME_ADMIN, json!({"version": 2}))
        .await;
    assert_eq!(
        decide(Some("analyst"), "public", "write").await,
        d("allow", Some("analysts-any"), 2)
    );
    s.refused(
        s.http
            .post(s.url(&format!("{p}/activate")))
            .bearer_auth(ACME_ADMIN)
            .json(&json!({"version": 1})),
        StatusCode::CONFLICT,
        "version_not_newer",
    )
    .await;
    s.created(
        &format!("{p}/rollback"),
        ACME_ADMIN,
        json!({"to_version": 1}),
    )
    .await;
    assert_eq!(
        decide(Some("analyst"), "public", "write").await,
        d("deny", None, 1)
    );
    // Another tenant's policy of the same id: not part of acme's dry run.
    s.created(
        "/v1/tenants/globex/policies",
        GLOBEX,
        json!({"policy_id": "data", "rules": []}),
    )
    .await;
    s.created(
        "/v1/tenants/globex/policies/data/activate",
        GLOBEX,
        json!({"version": 1}),
    )
    .await;
    let out = s
        .created(
            "/v1/tenants/globex/policies/data/decisions",
            GLOBEX,
            json!({"request": request(Some("analyst"), "public", "write")}),
        )
        .await;
    assert_eq!(out["decision"], "deny");
    assert_eq!(out["matched_rule"], Value::Null);

    // The recorded decisions: allow, deny, deny, deny, allow, deny. A candidate that lets
    // analysts do anything at priority 30 (above the confidential deny at 20) flips #1, #3 and
    // #5; the guest (#2) stays denied.
    let candidate = json!([
        rule(
            "analysts-all",
            "allow",
            30,
            json!({"subject": {"role": "analyst"}})
        ),
        rule(
            "no-confidential",
            "deny",
            20,
            json!({"resource": {"classification_in": ["confidential"]}})
        ),
    ]);
    let dry = format!("{p}/dry-run");
    let before = s.head();
    let (status, out) = s.post(&dry, ACME_ADMIN, json!({"rules": candidate})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(s.head(), before, "a dry run wrote events");
    assert_eq!(out["policy_id"], "data");
    assert_eq!(out["evaluated"], 6, "{out}");
    let flips = out["flips"].as_array().unwrap();
    let indexes: Vec<_> = flips.iter().map(|f| f["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [1, 3, 5], "{out}");
    for f in flips {
        assert_eq!(f["recorded"], "deny");
        assert_eq!(f["candidate"], "allow");
        assert_eq!(f["candidate_rule"], "analysts-all");
        assert_eq!(f["policy_version"], 1);
    }
    assert_eq!(flips[0]["recorded_rule"], "no-confidential");
    assert_eq!(
        flips[0]["request"]["resource"]["classification"],
        "confidential"
    );
    assert_eq!(flips[1]["recorded_rule"], Value::Null);
    assert_eq!(flips[1]["request"]["action"], "write");

    // The flips point at the events in the stream's history.
    let events = history(&s, "acme", "policy.Policy/acme/data").await;
    let recorded = of_type(&events, "policy.PolicyDecisionRecorded");
    assert_eq!(recorded.len(), 6);
    for (f, i) in flips.iter().zip([1, 3, 5]) {
        assert_eq!(f["event_id"], recorded[i]["event_id"]);
        assert_eq!(f["seq"], recorded[i]["seq"]);
        assert_eq!(f["recorded_at"], recorded[i]["recorded_at"]);
    }

    // A window: [recorded_at of #3, recorded_at of #5) holds #3 and #4; of those only #3 flips.
    let (status, out) = s
        .post(
            &dry,
            ACME_ADMIN,
            json!({"rules": candidate, "from": recorded[3]["recorded_at"], "to": recorded[5]["recorded_at"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["evaluated"], 2, "{out}");
    assert_eq!(out["flips"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["flips"][0]["index"], 0);
    assert_eq!(out["flips"][0]["event_id"], recorded[3]["event_id"]);
    // Microseconds work as well as RFC 3339; the same rules as recorded flip nothing.
    let (status, out) = s
        .post(
            &dry,
            OPERATOR,
            json!({"rules": [
                rule("analysts-read", "allow", 10, json!({"subject": {"role": "analyst"}, "action": "read"})),
                rule("no-confidential", "deny", 20, json!({"resource": {"classification_in": ["confidential"]}})),
            ], "from": 0, "to": 9_000_000_000_000_000_i64}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["evaluated"], 6);
    // The 5th decision was made by version 2, which allowed it; version 1 would not.
    assert_eq!(out["flips"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["flips"][0]["index"], 4);
    assert_eq!(out["flips"][0]["policy_version"], 2);

    // Invalid candidates and windows are refused naming the field.
    let body = s
        .refused(
            s.http
                .post(s.url(&dry))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"rules": [
                    rule("a", "allow", 1, json!({})),
                    rule("a", "deny", 1, json!({})),
                ]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "rules[1].rule_id");
    let body = s
        .refused(
            s.http
                .post(s.url(&dry))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"rules": [], "from": "2026-02-01", "to": "2026-01-01"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "to");
    let body = s
        .refused(
            s.http
                .post(s.url(&dry))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"rules": [], "from": "last week"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "from");
    let body = s
        .refused(
            s.http
                .post(s.url(&dry))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"rules": [{"rule_id": "x", "effect": "maybe"}]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "rules[0].effect");
    let body = s
        .refused(
            s.http
                .post(s.url(&decisions))
                .bearer_auth(ACME_ADMIN)
                .json(&json!({"request": request(Some("analyst"), "public", " ")})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "request.action");

    // A decision retried with its Idempotency-Key is recognised: 200, nothing written, and the
    // decision recorded the first time.
    let keyed = |key: &str, body: Value| {
        s.http
            .post(s.url(&decisions))
            .bearer_auth(ACME_ADMIN)
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let first = json!({"request": request(Some("analyst"), "confidential", "read")});
    let (status, out) = s.send(keyed("dec-1", first.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(
        (&out["decision"], &out["matched_rule"]),
        (&json!("deny"), &json!("no-confidential"))
    );
    let before = s.head();
    let (status, again) = s.send(keyed("dec-1", first)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(s.head(), before);
    assert_eq!(again["events"], json!([]));
    for field in [
        "decision",
        "matched_rule",
        "policy_version",
        "decided_at",
        "stream_version",
    ] {
        assert_eq!(again[field], out[field], "{field}: {again}");
    }
    // A key used for another command on the policy is not a decision.
    let (status, out) = s
        .send(
            s.http
                .put(s.url(p))
                .bearer_auth(ACME_ADMIN)
                .header("Idempotency-Key", "change-3")
                .json(&json!({"rules": []})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    let body = s
        .refused(
            keyed(
                "change-3",
                json!({"request": request(None, "public", "read")}),
            ),
            StatusCode::CONFLICT,
            "command_id_reused",
        )
        .await;
    assert_eq!(body["error"]["field"], "Idempotency-Key");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_tenants_are_enforced_on_every_context() {
    let s = start().await;
    s.provision("acme").await;
    s.provision("globex").await;
    let cases = [
        (
            "/v1/tenants/acme/invoices",
            json!({"invoice_id": "i", "currency": "EUR"}),
        ),
        (
            "/v1/tenants/acme/models/m/environments/prod/deploy",
            json!({"version": "v1", "traffic_pct": 100}),
        ),
        (
            "/v1/tenants/acme/policies",
            json!({"policy_id": "p", "rules": []}),
        ),
        ("/v1/tenants/acme/policies/p/dry-run", json!({"rules": []})),
    ];
    for (path, body) in &cases {
        // The signals token has none of these scopes.
        s.refused(
            s.http.post(s.url(path)).bearer_auth(ACME).json(body),
            StatusCode::FORBIDDEN,
            "missing_scope",
        )
        .await;
        // Another tenant's token, whatever its scopes.
        s.refused(
            s.http.post(s.url(path)).bearer_auth(GLOBEX).json(body),
            StatusCode::FORBIDDEN,
            "forbidden_tenant",
        )
        .await;
        s.refused(
            s.http.post(s.url(path)).json(body),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    // billing:write alone does not reach models or policy.
    for (path, body) in &cases[1..] {
        s.refused(
            s.http
                .post(s.url(path))
                .bearer_auth(ACME_BILLING)
                .json(body),
            StatusCode::FORBIDDEN,
            "missing_scope",
        )
        .await;
    }
    s.refused(
        s.http
            .put(s.url("/v1/tenants/acme/budgets/2026-01"))
            .bearer_auth(GLOBEX)
            .json(&json!({"currency": "EUR", "limit_minor": 1})),
        StatusCode::FORBIDDEN,
        "forbidden_tenant",
    )
    .await;
    // The operator may do everything; an unknown tenant is the domain's 404.
    let (status, body) = s
        .post(
            "/v1/tenants/acme/invoices",
            OPERATOR,
            json!({"invoice_id": "i", "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.refused(
        s.http
            .post(s.url("/v1/tenants/nobody/policies"))
            .bearer_auth(OPERATOR)
            .json(&json!({"policy_id": "p", "rules": []})),
        StatusCode::NOT_FOUND,
        "unknown_tenant",
    )
    .await;
    // Unknown fields are named.
    let body = s
        .refused(
            s.http
                .post(s.url("/v1/tenants/acme/invoices"))
                .bearer_auth(OPERATOR)
                .json(&json!({"invoice_id": "j", "currency": "EUR", "curency": "USD"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "curency");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_the_billing_models_and_policy_paths() {
    let s = start().await;
    let (status, doc) = s.send(s.http.get(s.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (p, method) in [
        ("/v1/tenants/{tenant}/invoices", "post"),
        ("/v1/tenants/{tenant}/invoices/{invoice_id}/lines", "post"),
        ("/v1/tenants/{tenant}/invoices/{invoice_id}/credits", "post"),
        ("/v1/tenants/{tenant}/invoices/{invoice_id}/issue", "post"),
        ("/v1/tenants/{tenant}/invoices/{invoice_id}/pay", "post"),
        ("/v1/tenants/{tenant}/invoices/{invoice_id}/void", "post"),
        ("/v1/tenants/{tenant}/budgets/{month}", "put"),
        ("/v1/tenants/{tenant}/budgets/{month}/usage", "post"),
        ("/v1/tenants/{tenant}/models/{model}/versions", "post"),
        (
            "/v1/tenants/{tenant}/models/{model}/versions/{version}/retire",
            "post",
        ),
        (
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/deploy",
            "post",
        ),
        (
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/shift",
            "post",
        ),
        (
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/promote",
            "post",
        ),
        (
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/rollback",
            "post",
        ),
        (
            "/v1/tenants/{tenant}/models/{model}/environments/{environment}/retire",
            "post",
        ),
        ("/v1/tenants/{tenant}/policies", "post"),
        ("/v1/tenants/{tenant}/policies/{policy_id}", "put"),
        ("/v1/tenants/{tenant}/policies/{policy_id}/activate", "post"),
        ("/v1/tenants/{tenant}/policies/{policy_id}/rollback", "post"),
        (
            "/v1/tenants/{tenant}/policies/{policy_id}/decisions",
            "post",
        ),
        ("/v1/tenants/{tenant}/policies/{policy_id}/dry-run", "post"),
    ] {
        assert!(
            paths.get(p).and_then(|m| m.get(method)).is_some(),
            "{method} {p} missing from the OpenAPI paths"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "OpenInvoiceRequest",
        "AddLineRequest",
        "VolumeTierDto",
        "RuleDto",
        "AccessRequestDto",
        "DecisionResponse",
        "DryRunRequest",
        "DryRunResponse",
        "FlipDto",
        "Timestamp",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert!(
        doc["paths"]["/v1/tenants/{tenant}/policies/{policy_id}/dry-run"]["post"]["description"]
            .as_str()
            .unwrap()
            .contains("recorded_at")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_is_registered_sealed_exported_and_erased() {
    let s = start().await;
    s.provision("acme").await;
    let contact = json!({"contact_id": "c-7", "name": "Grace Hopper",
        "email": "grace@acme.example", "role": "security"});
    let out = s
        .created("/v1/tenants/acme/contacts", ACME_ADMIN, contact.clone())
        .await;
    assert_eq!(out["stream"], "tenancy.Contact/acme/c-7");
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/contacts"))
            .bearer_auth(ACME_ADMIN)
            .json(&contact),
        StatusCode::CONFLICT,
        "contact_exists",
    )
    .await;
    // A NUL character in any text is refused before it becomes an event.
    let (status, out) = s
        .post(
            "/v1/tenants/acme/contacts",
            ACME_ADMIN,
            json!({"contact_id": "c-8", "name": "Nul\u{0}Name", "email": "n@acme.example", "role": "billing"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("NUL"),
        "{out}"
    );
    // Sealed in the log: no payload holds the email in clear.
    let topic = s.log.topic("events").unwrap();
    for p in topic.partitions() {
        let mut r = p.reader(0);
        while let Some(e) = r.next().unwrap() {
            let text = String::from_utf8_lossy(&e.payload);
            assert!(!text.contains("grace@"), "{text}");
        }
    }
    // Opened for whoever may read it: history and export.
    let events = history(&s, "acme", "tenancy.Contact/acme/c-7").await;
    assert_eq!(events[0]["payload"]["email"], "grace@acme.example");
    let export = "/v1/tenants/acme/subjects/c-7/export";
    let (status, out) = s.get(export, ACME_ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["erased"], false);
    assert_eq!(out["events"][0]["payload"]["name"], "Grace Hopper");
    // Only with the privacy scope, only for the own tenant.
    s.refused(
        s.http.get(s.url(export)).bearer_auth(ACME),
        StatusCode::FORBIDDEN,
        "missing_scope",
    )
    .await;
    s.refused(
        s.http.get(s.url(export)).bearer_auth(GLOBEX),
        StatusCode::FORBIDDEN,
        "forbidden_tenant",
    )
    .await;
    // Erasure: recorded, then the key goes; the fields read as erased from then on.
    let erase = "/v1/tenants/acme/subjects/c-7/erase";
    let out = s
        .created(erase, ACME_ADMIN, json!({"reason": "DSR-7"}))
        .await;
    assert_eq!(out["events"][0]["event_type"], "tenancy.SubjectErased");
    let (status, out) = s.post(erase, ACME_ADMIN, json!({"reason": "DSR-7"})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (_, out) = s.get(export, ACME_ADMIN).await;
    assert_eq!(out["erased"], true);
    assert_eq!(out["events"][0]["payload"]["email"], "[erased]");
    let events = history(&s, "acme", "tenancy.Contact/acme/c-7").await;
    assert_eq!(events[0]["payload"]["name"], "[erased]");
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/subjects/nobody/erase"))
            .bearer_auth(ACME_ADMIN)
            .json(&json!({"reason": "x"})),
        StatusCode::NOT_FOUND,
        "unknown_subject",
    )
    .await;
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/contacts"))
            .bearer_auth(ACME_ADMIN)
            .json(&contact),
        StatusCode::CONFLICT,
        "subject_erased",
    )
    .await;
    s.stop().await;
}
