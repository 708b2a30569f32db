//! The API over real HTTP: a server on 127.0.0.1:0 over an embedded log in a temp dir.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_ingest_repeat_and_read_history() {
    let s = start().await;
    let (status, body) = s
        .post("/v1/tenants", OPERATOR, provision_body("acme"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["stream"], "tenancy.Tenant/acme");
    assert_eq!(body["events"][0]["event_type"], "tenancy.TenantProvisioned");
    // The same provisioning again changes nothing.
    let (status, body) = s
        .post("/v1/tenants", OPERATOR, provision_body("acme"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"], json!([]));

    // A JSON array over two sources.
    let batch = json!([
        signal("web", "a", 1_000),
        signal("app", "x", 1_000),
        signal("web", "b", 2_000)
    ]);
    let (status, body) = s
        .send(
            s.http
                .post(s.url("/v1/tenants/acme/signals"))
                .bearer_auth(ACME)
                .header("Idempotency-Key", "req-1")
                .header("X-Correlation-Id", "corr-1")
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(
        body["sources"],
        json!([
            {"source": "web", "accepted": 2, "duplicates": 0, "stream_version": 2},
            {"source": "app", "accepted": 1, "duplicates": 0, "stream_version": 1},
        ])
    );

    // NDJSON: one repeat, one new signal, blank lines allowed.
    let ndjson = format!(
        "{}\n\n{}\n",
        signal("web", "b", 2_000),
        signal("web", "c", 3_000)
    );
    let (status, body) = s
        .send(
            s.http
                .post(s.url("/v1/tenants/acme/signals"))
                .bearer_auth(ACME)
                .header("Content-Type", "application/x-ndjson")
                .body(ndjson),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(body["sources"][0]["stream_version"], 3);

    // The whole first request again: all duplicates, nothing written.
    let before = s.head();
    let (status, body) = s.post("/v1/tenants/acme/signals", ACME, batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(s.head(), before);

    // History of the web source.
    let (status, body) = s
        .get("/v1/tenants/acme/streams/ingest.Source/acme/web", ACME)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{body}");
    let ids: Vec<_> = events
        .iter()
        .map(|e| e["payload"]["signal_id"].clone())
        .collect();
    assert_eq!(ids, [json!("a"), json!("b"), json!("c")]);
    let versions: Vec<_> = events
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(events[0]["event_type"], "ingest.SignalIngested");
    assert_eq!(events[0]["actor"], "acme-ingest");
    assert_eq!(events[0]["causation_id"], "req-1");
    assert_eq!(events[0]["correlation_id"], "corr-1");
    assert_eq!(events[0]["payload"]["attributes"], json!({"k": "v"}));
    assert_eq!(body["next_from_version"], Value::Null);

    // Paging.
    let (status, body) = s
        .get(
            "/v1/tenants/acme/streams/ingest.Source/acme/web?from_version=2&limit=1",
            ACME,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["events"][0]["stream_version"], 2);
    assert_eq!(body["next_from_version"], 3);

    // The tenant's own stream, read by the operator.
    let (status, body) = s
        .get("/v1/tenants/acme/streams/tenancy.Tenant/acme", OPERATOR)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["payload"]["plan"], "growth");
    assert_eq!(body["events"][0]["actor"], "operator");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_tenants_and_scopes_are_enforced() {
    let s = start().await;
    s.provision("acme").await;
    s.provision("globex").await;
    let url = s.url("/v1/tenants/acme/signals");
    let batch = json!([signal("web", "a", 1)]);
    let body = s
        .refused(
            s.http.post(&url).json(&batch),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    s.refused(
        s.http
            .post(&url)
            .bearer_auth("not-a-known-token-at-all")
            .json(&batch),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // Another tenant's token.
    s.refused(
        s.http.post(&url).bearer_auth(GLOBEX).json(&batch),
        StatusCode::FORBIDDEN,
        "forbidden_tenant",
    )
    .await;
    // A token without the scope.
    s.refused(
        s.http
            .get(s.url("/v1/tenants/acme/streams/tenancy.Tenant/acme"))
            .bearer_auth(ACME_WRITE_ONLY),
        StatusCode::FORBIDDEN,
        "missing_scope",
    )
    .await;
    // Tenancy is the operator's.
    s.refused(
        s.http
            .post(s.url("/v1/tenants"))
            .bearer_auth(GLOBEX)
            .json(&provision_body("initech")),
        StatusCode::FORBIDDEN,
        "operator_only",
    )
    .await;
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/suspend"))
            .bearer_auth(ACME)
            .json(&json!({"reason": "x"})),
        StatusCode::FORBIDDEN,
        "operator_only",
    )
    .await;
    // A stream of another tenant through one's own path.
    s.refused(
        s.http
            .get(s.url("/v1/tenants/acme/streams/tenancy.Tenant/globex"))
            .bearer_auth(ACME),
        StatusCode::BAD_REQUEST,
        "foreign_stream",
    )
    .await;
    // The write-only token can write.
    let (status, body) = s
        .post("/v1/tenants/acme/signals", ACME_WRITE_ONLY, batch)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_write_nothing_and_say_why() {
    let s = start().await;
    // Unknown tenant.
    s.refused(
        s.http
            .post(s.url("/v1/tenants/nobody/signals"))
            .bearer_auth(OPERATOR)
            .json(&json!([signal("web", "a", 1)])),
        StatusCode::NOT_FOUND,
        "unknown_tenant",
    )
    .await;
    s.refused(
        s.http
            .put(s.url("/v1/tenants/nobody/limits"))
            .bearer_auth(OPERATOR)
            .json(&json!({"max_signals_per_day": 1, "max_sources": 1, "rate_per_second": 1})),
        StatusCode::NOT_FOUND,
        "unknown_tenant",
    )
    .await;
    s.provision("acme").await;
    let limits = json!({"max_signals_per_day": 5, "max_sources": 2, "rate_per_second": 9});
    // Version conflict: the tenant stream is at version 1.
    let body = s
        .refused(
            s.http
                .put(s.url("/v1/tenants/acme/limits"))
                .bearer_auth(OPERATOR)
                .header("If-Match", "7")
                .json(&limits),
            StatusCode::CONFLICT,
            "version_conflict",
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 1")
    );
    s.refused(
        s.http
            .put(s.url("/v1/tenants/acme/limits"))
            .bearer_auth(OPERATOR)
            .header("If-Match", "one")
            .json(&limits),
        StatusCode::BAD_REQUEST,
        "bad_header",
    )
    .await;
    let (status, body) = s
        .send(
            s.http
                .put(s.url("/v1/tenants/acme/limits"))
                .bearer_auth(OPERATOR)
                .header("If-Match", "1")
                .json(&limits),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_version"], 2);

    let signals = s.url("/v1/tenants/acme/signals");
    // Malformed JSON: 400 with serde's position.
    let body = s
        .refused(
            s.http
                .post(&signals)
                .bearer_auth(ACME)
                .header("Content-Type", "application/json")
                .body("[{\"source\": \"web\","),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("column"),
        "{body}"
    );
    // A wrong type, and a rule of the domain, each naming the element; nothing of the batch
    // is written, not even the valid signals before it.
    let body = s
        .refused(
            s.http.post(&signals).bearer_auth(ACME).json(&json!([
                signal("web", "a", 1),
                {"source": "web", "signal_id": "b", "ts": "yesterday"}
            ])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "signals[1].ts");
    let body = s
        .refused(
            s.http.post(&signals).bearer_auth(ACME).json(&json!([
                signal("web", "a", 1),
                signal("web", "b", 2),
                signal("web", "c", 3),
                signal("app", "d", -4)
            ])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "signals[3].ts");
    let body = s
        .refused(
            s.http
                .post(&signals)
                .bearer_auth(ACME)
                .json(&json!([signal("bad source", "a", 1)])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "signals[0].source");
    let body = s
        .refused(
            s.http
                .post(&signals)
                .bearer_auth(ACME)
                .header("Content-Type", "application/x-ndjson")
                .body(format!(
                    "{}\n{{\"source\":\"web\",\"signal_id\":\"\",\"ts\":5}}\n",
                    signal("web", "a", 1)
                )),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "line 2.signal_id");
    let body = s
        .refused(
            s.http
                .post(&signals)
                .bearer_auth(ACME)
                .json(&json!({"source": "web"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
    assert_eq!(body["error"]["field"], "signals");
    // Not JSON, whatever the Content-Type says: 400 naming the problem.
    s.refused(
        s.http
            .post(&signals)
            .bearer_auth(ACME)
            .header("Content-Type", "text/csv")
            .body("a,b"),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    // NDJSON is for signals only.
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/suspend"))
            .bearer_auth(OPERATOR)
            .header("Content-Type", "application/x-ndjson")
            .body("{\"reason\": \"x\"}"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // Over max_body_bytes.
    let many: Vec<Value> = (0..2_000)
        .map(|i| signal("web", &format!("s{i}"), i + 1))
        .collect();
    let big = serde_json::to_vec(&many).unwrap();
    assert!(big.len() > MAX_BODY);
    s.refused(
        s.http
            .post(&signals)
            .bearer_auth(ACME)
            .header("Content-Type", "application/json")
            .body(big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    // If-Match names one stream: not a request over two sources.
    let body = s
        .refused(
            s.http
                .post(&signals)
                .bearer_auth(ACME)
                .header("If-Match", "0")
                .json(&json!([signal("web", "a", 1), signal("app", "a", 1)])),
            StatusCode::BAD_REQUEST,
            "if_match_needs_one_source",
        )
        .await;
    assert_eq!(body["error"]["field"], "If-Match");
    // A suspended tenant's signals are refused until it is reactivated.
    let (status, _) = s
        .post(
            "/v1/tenants/acme/suspend",
            OPERATOR,
            json!({"reason": "unpaid"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.refused(
        s.http
            .post(&signals)
            .bearer_auth(ACME)
            .json(&json!([signal("web", "a", 1)])),
        StatusCode::FORBIDDEN,
        "tenant_suspended",
    )
    .await;
    let (status, _) = s
        .send(
            s.http
                .post(s.url("/v1/tenants/acme/reactivate"))
                .bearer_auth(OPERATOR),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .post(
            "/v1/tenants/acme/signals",
            ACME,
            json!([signal("web", "a", 1)]),
        )
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    // Unknown routes and methods answer in the same shape.
    s.refused(
        s.http.get(s.url("/v2/nothing")),
        StatusCode::NOT_FOUND,
        "no_route",
    )
    .await;
    s.refused(
        s.http.delete(s.url("/v1/tenants")).bearer_auth(OPERATOR),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_over_the_tenant_rate_get_429_with_retry_after() {
    // The tenant's own limit (3 signals/s) applies, not the server's default.
    let s = start_with(1_000_000, MAX_BODY).await;
    let mut body = provision_body("acme");
    body["limits"]["rate_per_second"] = json!(3);
    let (status, answer) = s.post("/v1/tenants", OPERATOR, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let batch = |from: i64| {
        json!([
            signal("web", "a", from),
            signal("web", "b", from),
            signal("web", "c", from)
        ])
    };
    let (status, body) = s.post("/v1/tenants/acme/signals", ACME, batch(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = s.head();
    let res = s
        .http
        .post(s.url("/v1/tenants/acme/signals"))
        .bearer_auth(ACME)
        .json(&batch(2))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(s.head(), before);
    // Another tenant has its own bucket.
    s.provision("globex").await;
    let (status, body) = s.post("/v1/tenants/globex/signals", GLOBEX, batch(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi() {
    let s = start().await;
    let (status, body) = s.send(s.http.get(s.url("/health"))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _) = s.send(s.http.get(s.url("/ready"))).await;
    assert_eq!(status, StatusCode::OK);

    s.provision("acme").await;
    let batch = json!([
        signal("web", "a", 1),
        signal("web", "b", 2),
        signal("web", "a", 1)
    ]);
    let (status, body) = s.post("/v1/tenants/acme/signals", ACME, batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    let (status, _) = s
        .post(
            "/v1/tenants/nobody/signals",
            OPERATOR,
            json!([signal("web", "a", 1)]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let res = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("annals_commands_accepted_total"), 2.0);
    assert_eq!(value("annals_commands_refused_total"), 1.0);
    assert_eq!(value("annals_events_written_total"), 3.0);
    assert_eq!(value("ingest_signals_accepted_total"), 2.0);
    assert_eq!(value("ingest_signals_duplicate_total"), 1.0);
    assert!((value("ingest_dedupe_rate") - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(value("ingest_backlog"), 0.0);
    let log_events: f64 = (0..2)
        .map(|p| {
            value(&format!(
                "annals_log_events{{topic=\"events\",partition=\"{p}\"}}"
            ))
        })
        .sum();
    assert_eq!(log_events, s.head() as f64);
    assert_eq!(log_events, 3.0);
    assert!(text.contains("# TYPE annals_commands_accepted_total counter"));

    let (status, doc) = s.send(s.http.get(s.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/health",
        "/ready",
        "/metrics",
        "/v1/tenants",
        "/v1/tenants/{tenant}/limits",
        "/v1/tenants/{tenant}/suspend",
        "/v1/tenants/{tenant}/reactivate",
        "/v1/tenants/{tenant}/archive",
        "/v1/tenants/{tenant}/signals",
        "/v1/tenants/{tenant}/streams/{stream}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI paths");
    }
    assert!(doc["components"]["schemas"]["SignalDto"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    // Archive is final.
    let (status, _) = s
        .send(
            s.http
                .post(s.url("/v1/tenants/acme/archive"))
                .bearer_auth(OPERATOR),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.refused(
        s.http
            .post(s.url("/v1/tenants/acme/reactivate"))
            .bearer_auth(OPERATOR),
        StatusCode::CONFLICT,
        "tenant_archived",
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_ten_thousand_signals_goes_in_several_commands_in_order() {
    let s = start_with(1_000_000, 4 << 20).await;
    s.provision("acme").await;
    let n = 10_001;
    let mut ndjson = String::new();
    for i in 0..n {
        ndjson.push_str(
            &json!({"source": "web", "signal_id": format!("s{i}"), "ts": i + 1}).to_string(),
        );
        ndjson.push('\n');
    }
    let (status, body) = s
        .send(
            s.http
                .post(s.url("/v1/tenants/acme/signals"))
                .bearer_auth(ACME)
                .header("Content-Type", "application/x-ndjson")
                .body(ndjson),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], n);
    assert_eq!(body["sources"][0]["stream_version"], n);
    // The last signal of the body is the stream's last event.
    let (status, body) = s
        .get(
            &format!("/v1/tenants/acme/streams/ingest.Source/acme/web?from_version={n}"),
            ACME,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["events"][0]["payload"]["signal_id"],
        format!("s{}", n - 1)
    );
    // Provisioning plus two ingest commands.
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "annals_commands_accepted_total 3"),
        "{metrics}"
    );
    s.stop().await;
}
