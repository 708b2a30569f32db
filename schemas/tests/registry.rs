//! The published schemas, the lock that pins them, and the registry's encode/decode/resolve paths.

use std::collections::HashMap;
use std::path::Path;

use annals_schemas::personal::{ERASED, PersonalFields, SEALED, SEALED_PREFIX, Sealer};
use annals_schemas::{ENVELOPE_V1_AVSC, Registry, SchemaError, sample_datum};
use apache_avro::{Schema, types::Value};
use serde_json::json;

fn registry() -> Registry {
    Registry::builtin()
        .expect("the builtin registry loads (every file published, hashes match)")
        .with_sealer(std::sync::Arc::new(TestSealer::default()))
}

/// A reversible stand-in for the subject key store: "seals" by hex-encoding the plaintext
/// XORed with a per-subject byte; erased subjects open to `None`.
#[derive(Debug, Default)]
struct TestSealer {
    erased: std::sync::Mutex<Vec<String>>,
}

impl TestSealer {
    fn key(tenant: &str, subject: &str) -> u8 {
        (tenant.len() * 31 + subject.len() * 7) as u8 | 1
    }
}

impl Sealer for TestSealer {
    fn seal(&self, tenant: &str, subject: &str, _: &str, plain: &str) -> Result<String, String> {
        let k = Self::key(tenant, subject);
        let bytes: Vec<u8> = plain.bytes().map(|b| b ^ k).collect();
        Ok(format!("{SEALED_PREFIX}{}", hex::encode(bytes)))
    }
    fn open(
        &self,
        tenant: &str,
        subject: &str,
        _: &str,
        sealed: &str,
    ) -> Result<Option<String>, String> {
        if self.erased.lock().unwrap().iter().any(|s| s == subject) {
            return Ok(None);
        }
        let k = Self::key(tenant, subject);
        let bytes = hex::decode(&sealed[SEALED_PREFIX.len()..]).map_err(|e| e.to_string())?;
        Ok(Some(bytes.iter().map(|b| (b ^ k) as char).collect()))
    }
}

/// Every schema file on disk, as `Registry::from_sources` takes them.
fn files_on_disk() -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "avsc") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(root, &root.join("avro"), &mut out);
    out.sort();
    out
}

fn lock_on_disk() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("published.lock")).unwrap()
}

#[test]
fn builtin_registry_matches_the_lock_and_the_files_on_disk() {
    let reg = registry();
    // The embedded files are exactly the files on disk (build.rs picked up every one).
    let on_disk = files_on_disk();
    assert_eq!(
        reg.all().len(),
        on_disk.len(),
        "every file on disk is published"
    );
    let from_disk = Registry::from_sources(&on_disk, &lock_on_disk()).unwrap();
    for (a, b) in reg.all().iter().zip(from_disk.all()) {
        assert_eq!((a.id, &a.path, &a.sha256), (b.id, &b.path, &b.sha256));
    }
    let ids: Vec<i32> = reg.all().iter().map(|s| s.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "all() is sorted by id");
}

/// Ids are forever: records in the log carry them. Never change these expectations; only append.
#[test]
fn schema_ids_are_stable() {
    let expected = [
        (
            1,
            "tenancy.TenantProvisioned",
            1,
            "avro/tenancy/TenantProvisioned.v1.avsc",
        ),
        (
            2,
            "tenancy.TenantLimitsChanged",
            1,
            "avro/tenancy/TenantLimitsChanged.v1.avsc",
        ),
        (
            3,
            "tenancy.TenantSuspended",
            1,
            "avro/tenancy/TenantSuspended.v1.avsc",
        ),
        (
            4,
            "tenancy.TenantReactivated",
            1,
            "avro/tenancy/TenantReactivated.v1.avsc",
        ),
        (
            5,
            "tenancy.TenantArchived",
            1,
            "avro/tenancy/TenantArchived.v1.avsc",
        ),
        (
            6,
            "ingest.SignalIngested",
            1,
            "avro/ingest/SignalIngested.v1.avsc",
        ),
        (
            7,
            "ingest.SignalIngested",
            2,
            "avro/ingest/SignalIngested.v2.avsc",
        ),
    ];
    let reg = registry();
    for (id, event_type, version, path) in expected {
        let info = reg
            .get(id)
            .unwrap_or_else(|| panic!("schema id {id} is published"));
        assert_eq!(
            (info.event_type.as_str(), info.version, info.path.as_str()),
            (event_type, version, path),
            "schema id {id}"
        );
    }
    assert_eq!(reg.latest("ingest.SignalIngested").unwrap().id, 7);
    assert_eq!(reg.latest("tenancy.TenantProvisioned").unwrap().id, 1);
    assert!(reg.latest("tenancy.Nope").is_none());
}

#[test]
fn record_names_follow_the_event_type() {
    for info in registry().all() {
        let Schema::Record(record) = &info.schema else {
            panic!("{} is a record", info.path)
        };
        assert_eq!(
            record.name.fullname(None),
            format!("annals.{}", info.event_type)
        );
        assert!(record.doc.is_some(), "{} has a doc", info.path);
        for field in &record.fields {
            assert!(
                field.doc.is_some(),
                "{}: field {} has a doc",
                info.path,
                field.name
            );
        }
    }
}

#[test]
fn editing_a_published_schema_is_refused() {
    let files = files_on_disk();
    let lock = lock_on_disk();
    let mut edited = files.clone();
    let target = edited
        .iter_mut()
        .find(|(p, _)| p == "avro/tenancy/TenantSuspended.v1.avsc")
        .unwrap();
    target.1 = target.1.replacen("Tenant id.", "Tenant id!", 1);
    let err = Registry::from_sources(&edited, &lock).unwrap_err();
    match &err {
        SchemaError::Changed {
            path,
            expected,
            found,
        } => {
            assert_eq!(path, "avro/tenancy/TenantSuspended.v1.avsc");
            assert_ne!(expected, found);
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("never edited") && message.contains("new version"),
        "{message}"
    );
}

#[test]
fn an_unpublished_file_is_refused_with_the_line_to_add() {
    let mut files = files_on_disk();
    let text = files
        .iter()
        .find(|(p, _)| p == "avro/tenancy/TenantArchived.v1.avsc")
        .unwrap()
        .1
        .replace("\"doc\": \"Tenant id.\"", "\"doc\": \"Tenant id (v2).\"");
    files.push((
        "avro/tenancy/TenantArchived.v2.avsc".to_string(),
        text.clone(),
    ));
    let lock = lock_on_disk();
    // The next id is one more than the highest published.
    let next_id = registry().all().iter().map(|s| s.id).max().unwrap() + 1;
    let err = Registry::from_sources(&files, &lock).unwrap_err();
    let SchemaError::Unpublished { path, line_to_add } = &err else {
        panic!("expected Unpublished, got {err:?}");
    };
    assert_eq!(path, "avro/tenancy/TenantArchived.v2.avsc");
    assert!(
        line_to_add.starts_with(&format!("{next_id} tenancy.TenantArchived v2 sha256:")),
        "{line_to_add}"
    );
    assert!(err.to_string().contains(line_to_add.as_str()));

    // Appending the line publishes it: the new version gets the next id and becomes the latest.
    let reg = Registry::from_sources(&files, &format!("{lock}{line_to_add}\n")).unwrap();
    assert_eq!(reg.latest("tenancy.TenantArchived").unwrap().id, next_id);
    assert!(reg.check().iter().all(|c| c.ok));
}

#[test]
fn a_published_file_that_is_missing_is_refused() {
    let files: Vec<_> = files_on_disk()
        .into_iter()
        .filter(|(p, _)| p != "avro/ingest/SignalIngested.v1.avsc")
        .collect();
    match Registry::from_sources(&files, &lock_on_disk()) {
        Err(SchemaError::MissingFile { path }) => {
            assert_eq!(path, "avro/ingest/SignalIngested.v1.avsc")
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

#[test]
fn malformed_locks_and_misnamed_files_are_refused() {
    let files = files_on_disk();
    let lock = lock_on_disk();
    let dup = format!("{lock}1 tenancy.Other v1 sha256:{}\n", "0".repeat(64));
    assert!(matches!(
        Registry::from_sources(&files, &dup),
        Err(SchemaError::Parse { .. })
    ));
    assert!(matches!(
        Registry::from_sources(&files, &format!("{lock}garbage\n")),
        Err(SchemaError::Parse { .. })
    ));
    let mut misnamed = files.clone();
    misnamed.push(("avro/ingest/signal.avsc".to_string(), "{}".to_string()));
    assert!(matches!(
        Registry::from_sources(&misnamed, &lock),
        Err(SchemaError::Parse { .. })
    ));
}

#[test]
fn every_old_version_resolves_to_the_latest() {
    let results = registry().check();
    assert!(
        results
            .iter()
            .any(|r| r.event_type == "ingest.SignalIngested"
                && r.writer_version == 1
                && r.reader_version == 2),
        "{results:?}"
    );
    for r in &results {
        assert!(
            r.ok,
            "{} v{} -> v{}: {}",
            r.event_type, r.writer_version, r.reader_version, r.detail
        );
    }
}

#[test]
fn check_reports_an_incompatible_new_version() {
    let mut files = files_on_disk();
    // v2 adds a required field without a default: v1 records cannot be read by it.
    let text = r#"{"type":"record","name":"TenantArchived","namespace":"annals.tenancy","doc":"x","fields":[
        {"name":"tenant","type":"string","doc":"x"},{"name":"by","type":"string","doc":"x"}]}"#;
    files.push((
        "avro/tenancy/TenantArchived.v2.avsc".to_string(),
        text.to_string(),
    ));
    let SchemaError::Unpublished { line_to_add, .. } =
        Registry::from_sources(&files, &lock_on_disk()).unwrap_err()
    else {
        panic!("expected Unpublished")
    };
    let reg =
        Registry::from_sources(&files, &format!("{}{line_to_add}\n", lock_on_disk())).unwrap();
    let bad: Vec<_> = reg.check().into_iter().filter(|c| !c.ok).collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].event_type, "tenancy.TenantArchived");
    assert!(bad[0].detail.contains("by"), "{}", bad[0].detail);
}

#[test]
fn a_signal_ingested_v1_payload_decodes_as_v2() {
    let reg = registry();
    let v1 = reg.get(6).unwrap();
    assert_eq!(
        (v1.event_type.as_str(), v1.version),
        ("ingest.SignalIngested", 1)
    );
    let payload = Value::Record(vec![
        ("tenant".into(), Value::String("acme".into())),
        ("source".into(), Value::String("sensor-7".into())),
        ("signal_id".into(), Value::String("sig-0001".into())),
        ("ts".into(), Value::TimestampMicros(1_735_689_600_000_000)),
        (
            "attributes".into(),
            Value::Map(HashMap::from([(
                "room".to_string(),
                Value::String("b12".into()),
            )])),
        ),
    ]);
    // Bytes as an old writer produced them.
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&v1.schema)
        .build()
        .unwrap()
        .write_value_to_vec(payload)
        .unwrap();

    let decoded = reg.decode(6, &bytes).unwrap();
    let Value::Record(fields) = &decoded else {
        panic!("{decoded:?}")
    };
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "tenant",
            "source",
            "signal_id",
            "ts",
            "attributes",
            "value",
            "unit"
        ]
    );
    assert_eq!(fields[5].1, Value::Union(0, Box::new(Value::Null)));
    assert_eq!(fields[6].1, Value::Union(0, Box::new(Value::Null)));

    assert_eq!(
        reg.decode_json(6, &bytes).unwrap(),
        json!({"tenant": "acme", "source": "sensor-7", "signal_id": "sig-0001",
               "ts": 1_735_689_600_000_000_i64, "attributes": {"room": "b12"},
               "value": null, "unit": null})
    );
    // Truncated bytes are a decode error naming the schema id.
    assert!(matches!(
        reg.decode(6, &bytes[..bytes.len() - 2]),
        Err(SchemaError::Decode { schema_id: 6, .. })
    ));
    assert!(matches!(
        reg.decode(99, &bytes),
        Err(SchemaError::UnknownSchemaId(99))
    ));
}

fn realistic_payloads() -> Vec<(&'static str, serde_json::Value)> {
    let limits = json!({"max_signals_per_day": 50_000_000_000_i64, "max_sources": 250, "rate_per_second": 5000});
    vec![
        (
            "tenancy.TenantProvisioned",
            json!({"tenant": "acme", "name": "ACME Corp", "plan": "team", "region": "eu-west", "limits": limits}),
        ),
        (
            "tenancy.TenantLimitsChanged",
            json!({"tenant": "acme", "limits": {"max_signals_per_day": 1_000_000, "max_sources": 10, "rate_per_second": 100}}),
        ),
        (
            "tenancy.TenantSuspended",
            json!({"tenant": "acme", "reason": "invoice 2025-03 unpaid"}),
        ),
        ("tenancy.TenantReactivated", json!({"tenant": "acme"})),
        (
            "tenancy.ContactRegistered",
            json!({"tenant": "acme", "contact_id": "c-17", "name": "Ada Lovelace", "email": "ada@example.com", "role": "billing"}),
        ),
        (
            "tenancy.SubjectErased",
            json!({"tenant": "acme", "subject": "c-17", "reason": "DSR-2025-0009", "erased_at": 1_744_070_400_000_000_i64}),
        ),
        ("tenancy.TenantArchived", json!({"tenant": "acme"})),
        (
            "tenancy.RetentionReviewed",
            json!({"tenant": "acme", "run_id": "ret-2025-04", "as_of": 1_744_070_400_000_000_i64, "bound": 81_920,
            "datasets": [{"dataset": "signals", "ttl_seconds": 7_776_000, "cutoff": 1_736_294_400_000_000_i64, "rows": 1_204}],
            "rows": 1_204, "digest": "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592"}),
        ),
        (
            "tenancy.RetentionApplied",
            json!({"tenant": "acme", "run_id": "ret-2025-04", "as_of": 1_744_070_400_000_000_i64, "bound": 81_920,
            "datasets": [{"dataset": "signals", "ttl_seconds": 7_776_000, "cutoff": 1_736_294_400_000_000_i64, "rows": 1_204}],
            "rows": 1_204, "digest": "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592"}),
        ),
        (
            "ingest.SignalIngested",
            json!({"tenant": "acme", "source": "sensor-7", "signal_id": "sig-0002",
            "ts": 1_735_689_600_123_456_i64, "attributes": {"room": "b12", "floor": "3"}, "value": 21.5, "unit": "celsius"}),
        ),
        (
            "billing.InvoiceOpened",
            json!({"tenant": "acme", "invoice_id": "INV-2025-0042", "currency": "EUR", "purchase_order": "PO-7781", "opened_at": 1_740_787_200_000_000_i64}),
        ),
        (
            "billing.InvoiceLineAdded",
            json!({"tenant": "acme", "invoice_id": "INV-2025-0042", "line_id": "signals", "description": "Signals ingested, March 2025",
            "meter": "signals", "quantity": 2_500_000, "unit_price_minor": 0,
            "tiers": [{"up_to": 1_000_000, "unit_price_minor": 2}, {"up_to": null, "unit_price_minor": 1}],
            "amount_minor": 3_500_000, "currency": "EUR"}),
        ),
        (
            "billing.CreditApplied",
            json!({"tenant": "acme", "invoice_id": "INV-2025-0042", "credit_id": "sla-2025-03", "reason": "SLA service credit: 99.5% availability in March", "amount_minor": 350_000, "currency": "EUR"}),
        ),
        (
            "billing.InvoiceIssued",
            json!({"tenant": "acme", "invoice_id": "INV-2025-0042", "currency": "EUR", "subtotal_minor": 3_500_000, "credits_minor": 350_000,
            "tax_jurisdiction": "DE", "tax_rate_bp": 1900, "tax_minor": 598_500, "total_minor": 3_748_500, "issued_at": 1_743_465_600_000_000_i64}),
        ),
        (
            "billing.InvoicePaid",
            json!({"tenant": "acme", "invoice_id": "INV-2025-0042", "amount_minor": 3_748_500, "currency": "EUR", "paid_at": 1_744_070_400_000_000_i64}),
        ),
        (
            "billing.InvoiceVoided",
            json!({"tenant": "acme", "invoice_id": "INV-2025-0041", "reason": "issued twice by mistake; replaced by INV-2025-0042"}),
        ),
        (
            "billing.BudgetSet",
            json!({"tenant": "acme", "month": "2025-03", "currency": "EUR", "limit_minor": 5_000_000}),
        ),
        (
            "billing.UsageRecorded",
            json!({"tenant": "acme", "month": "2025-03", "usage_id": "2025-03-14-signals", "meter": "signals", "quantity": 120_000, "cost_minor": 240_000, "currency": "EUR", "spent_minor": 4_100_000}),
        ),
        (
            "billing.BudgetThresholdReached",
            json!({"tenant": "acme", "month": "2025-03", "threshold_pct": 80, "spent_minor": 4_100_000, "limit_minor": 5_000_000, "currency": "EUR"}),
        ),
        (
            "models.ModelVersionRegistered",
            json!({"tenant": "acme", "model": "churn", "version": "2025.03.1",
            "artifact_digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "metrics": {"auc": "0.91", "f1": "0.84"}}),
        ),
        (
            "models.ModelVersionRetired",
            json!({"tenant": "acme", "model": "churn", "version": "2024.11.2"}),
        ),
        (
            "models.ModelDeployed",
            json!({"tenant": "acme", "model": "churn", "environment": "production", "version": "2025.03.1", "traffic_pct": 10,
            "traffic": [{"version": "2025.02.1", "traffic_pct": 90}, {"version": "2025.03.1", "traffic_pct": 10}]}),
        ),
        (
            "models.TrafficShifted",
            json!({"tenant": "acme", "model": "churn", "environment": "production", "version": "2025.03.1", "traffic_pct": 50,
            "traffic": [{"version": "2025.02.1", "traffic_pct": 50}, {"version": "2025.03.1", "traffic_pct": 50}]}),
        ),
        (
            "models.ModelPromoted",
            json!({"tenant": "acme", "model": "churn", "environment": "production", "version": "2025.03.1",
            "previous_traffic": [{"version": "2025.02.1", "traffic_pct": 50}, {"version": "2025.03.1", "traffic_pct": 50}]}),
        ),
        (
            "models.DeploymentRolledBack",
            json!({"tenant": "acme", "model": "churn", "environment": "production", "to_version": "2025.02.1",
            "previous_traffic": [{"version": "2025.03.1", "traffic_pct": 100}]}),
        ),
        (
            "models.DeploymentRetired",
            json!({"tenant": "acme", "model": "churn", "environment": "staging",
            "previous_traffic": [{"version": "2025.03.1", "traffic_pct": 100}]}),
        ),
        (
            "policy.PolicyVersionCreated",
            json!({"tenant": "acme", "policy_id": "data-access", "version": 2, "rules": [
                {"rule_id": "analysts-read", "effect": "allow", "priority": 10,
                 "subject": {"role": "analyst", "scopes_any": ["signals:read"]},
                 "resource": {"tenant": "acme", "classification_in": ["public", "internal"]}, "action": "read"},
                {"rule_id": "no-restricted-export", "effect": "deny", "priority": 100,
                 "subject": {"role": null, "scopes_any": []},
                 "resource": {"tenant": null, "classification_in": ["restricted"]}, "action": "export"}
            ]}),
        ),
        (
            "policy.PolicyVersionActivated",
            json!({"tenant": "acme", "policy_id": "data-access", "version": 2}),
        ),
        (
            "policy.PolicyRolledBack",
            json!({"tenant": "acme", "policy_id": "data-access", "from_version": 2, "to_version": 1}),
        ),
        (
            "policy.PolicyDecisionRecorded",
            json!({"tenant": "acme", "policy_id": "data-access",
            "request": {"subject": {"role": "analyst", "scopes": ["signals:read"]}, "resource": {"tenant": "acme", "classification": "internal"}, "action": "read"},
            "version": 2, "decision": "allow", "matched_rule": "analysts-read", "decided_at": 1_741_957_200_000_000_i64}),
        ),
        (
            "audit.CheckpointSigned",
            json!({"log_id": "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4", "topic": "events", "partition": 3,
            "tree_size": 1_250_000, "root_hash": "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
            "timestamp": 1_743_465_600_000_000_i64, "signature": "9c".repeat(64),
            "public_key": "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"}),
        ),
    ]
}

#[test]
fn json_round_trips_for_every_event_type() {
    let reg = registry();
    let payloads = realistic_payloads();
    let mut types: Vec<&str> = reg.all().iter().map(|s| s.event_type.as_str()).collect();
    types.dedup();
    for t in &types {
        assert!(
            payloads.iter().any(|(p, _)| p == t),
            "a realistic payload for {t}"
        );
    }
    for (event_type, payload) in payloads {
        let (id, bytes) = reg.encode_json(event_type, &payload).unwrap();
        assert_eq!(id, reg.latest(event_type).unwrap().id);
        assert_eq!(
            reg.decode_json(id, &bytes).unwrap(),
            payload,
            "{event_type}"
        );
        // The Avro value path agrees with the JSON path (compared decoded: Avro map entries are
        // written in hash order, so bytes of payloads with maps are not canonical).
        let value = reg.decode(id, &bytes).unwrap();
        let (id2, bytes2) = reg.encode(event_type, value).unwrap();
        assert_eq!(id2, id);
        assert_eq!(
            reg.decode_json(id2, &bytes2).unwrap(),
            payload,
            "{event_type}"
        );
    }
}

#[test]
fn optional_fields_default_to_null() {
    let reg = registry();
    let payload =
        json!({"tenant": "acme", "source": "s", "signal_id": "x", "ts": 1, "attributes": {}});
    let (id, bytes) = reg.encode_json("ingest.SignalIngested", &payload).unwrap();
    let back = reg.decode_json(id, &bytes).unwrap();
    assert_eq!(back["value"], json!(null));
    assert_eq!(back["unit"], json!(null));
}

fn invalid_detail(result: Result<(i32, Vec<u8>), SchemaError>) -> String {
    match result {
        Err(SchemaError::Invalid { detail, .. }) => detail,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn wrong_payloads_are_rejected_naming_the_field() {
    let reg = registry();
    let good = realistic_payloads();
    let provisioned = good[0].1.clone();

    let mut missing = provisioned.clone();
    missing["limits"]
        .as_object_mut()
        .unwrap()
        .remove("max_sources");
    let detail = invalid_detail(reg.encode_json("tenancy.TenantProvisioned", &missing));
    assert!(
        detail.contains("limits.max_sources") && detail.contains("missing"),
        "{detail}"
    );

    let mut wrong_type = provisioned.clone();
    wrong_type["limits"]["rate_per_second"] = json!("fast");
    let detail = invalid_detail(reg.encode_json("tenancy.TenantProvisioned", &wrong_type));
    assert!(detail.contains("limits.rate_per_second"), "{detail}");

    let mut too_big = provisioned.clone();
    too_big["limits"]["max_sources"] = json!(5_000_000_000_i64);
    let detail = invalid_detail(reg.encode_json("tenancy.TenantProvisioned", &too_big));
    assert!(detail.contains("limits.max_sources"), "{detail}");

    let mut unknown = provisioned.clone();
    unknown["plann"] = json!("team");
    let detail = invalid_detail(reg.encode_json("tenancy.TenantProvisioned", &unknown));
    assert!(detail.contains("plann"), "{detail}");

    let mut signal = good
        .iter()
        .find(|(t, _)| *t == "ingest.SignalIngested")
        .unwrap()
        .1
        .clone();
    signal["value"] = json!("21.5");
    let detail = invalid_detail(reg.encode_json("ingest.SignalIngested", &signal));
    assert!(
        detail.contains("field `value` must be null or a number"),
        "{detail}"
    );

    let mut signal = good
        .iter()
        .find(|(t, _)| *t == "ingest.SignalIngested")
        .unwrap()
        .1
        .clone();
    signal["attributes"]["room"] = json!(12);
    let detail = invalid_detail(reg.encode_json("ingest.SignalIngested", &signal));
    assert!(detail.contains("attributes[\"room\"]"), "{detail}");

    let detail =
        invalid_detail(reg.encode_json("tenancy.TenantSuspended", &json!({"tenant": "acme"})));
    assert!(detail.contains("`reason`"), "{detail}");

    let err = reg
        .encode_json("tenancy.TenantSuspended", &json!({"tenant": "acme"}))
        .unwrap_err();
    assert!(err.to_string().contains("tenancy.TenantSuspended"), "{err}");

    assert!(matches!(
        reg.encode_json("tenancy.Nope", &json!({})),
        Err(SchemaError::UnknownEventType(t)) if t == "tenancy.Nope"
    ));

    // The Avro value path names the field too.
    let value = Value::Record(vec![("tenant".into(), Value::String("acme".into()))]);
    let detail = invalid_detail(reg.encode("tenancy.TenantSuspended", value));
    assert!(detail.contains("reason"), "{detail}");
}

#[test]
fn sample_datum_covers_every_kind_of_schema() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"All","namespace":"t","fields":[
        {"name":"n","type":"null"},{"name":"b","type":"boolean"},{"name":"i","type":"int"},
        {"name":"l","type":"long"},{"name":"f","type":"float"},{"name":"d","type":"double"},
        {"name":"by","type":"bytes"},{"name":"s","type":"string"},
        {"name":"a","type":{"type":"array","items":"string"}},
        {"name":"m","type":{"type":"map","values":"long"}},
        {"name":"u","type":["null","int","string"]},
        {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
        {"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
        {"name":"fx2","type":"Four"},
        {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"decf","type":{"type":"fixed","name":"Money","size":8,"logicalType":"decimal","precision":18,"scale":2}},
        {"name":"uuid","type":{"type":"string","logicalType":"uuid"}},
        {"name":"date","type":{"type":"int","logicalType":"date"}},
        {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
        {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
        {"name":"tsm","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
        {"name":"ltu","type":{"type":"long","logicalType":"local-timestamp-micros"}},
        {"name":"dur","type":{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}},
        {"name":"next","type":["null","All"],"default":null}
    ]}"#,
    )
    .unwrap();
    let a = sample_datum(&schema);
    assert_eq!(a, sample_datum(&schema), "deterministic");
    assert!(a.validate(&schema), "{a:?}");
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(a.clone())
        .unwrap();
    let back = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    assert_eq!(back, a);
}

#[test]
fn the_envelope_schema_parses() {
    let schema = Schema::parse_str(ENVELOPE_V1_AVSC).unwrap();
    let Schema::Record(record) = &schema else {
        panic!()
    };
    assert_eq!(record.name.fullname(None), "annals.v1.Envelope");
    assert_eq!(record.fields.len(), 16);
    assert!(sample_datum(&schema).validate(&schema));
}

#[test]
fn error_messages_say_what_to_do() {
    let unpublished = SchemaError::Unpublished {
        path: "avro/a/B.v2.avsc".into(),
        line_to_add: "9 a.B v2 sha256:ab".into(),
    };
    assert!(unpublished.to_string().contains("append this line"));
    let missing = SchemaError::MissingFile {
        path: "avro/a/B.v1.avsc".into(),
    };
    assert!(missing.to_string().contains("restore"));
}

#[test]
fn personal_fields_are_sealed_opened_and_erased() {
    let sealer = std::sync::Arc::new(TestSealer::default());
    let reg = Registry::builtin().unwrap().with_sealer(sealer.clone());
    let payload = json!({"tenant": "acme", "contact_id": "c-17", "name": "Ada Lovelace",
        "email": "ada@example.com", "role": "billing"});
    let (id, bytes) = reg
        .encode_json("tenancy.ContactRegistered", &payload)
        .unwrap();
    // The stored bytes hold neither plaintext; the subject id and the role stay readable.
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("Ada") && !text.contains("ada@"), "{text}");
    assert!(text.contains("c-17") && text.contains("billing"));
    assert_eq!(reg.decode_json(id, &bytes).unwrap(), payload);
    // Without a key store: never written in clear, read as sealed.
    let bare = Registry::builtin().unwrap();
    let err = bare
        .encode_json("tenancy.ContactRegistered", &payload)
        .unwrap_err();
    assert!(err.to_string().contains("personal data"), "{err}");
    let shown = bare.decode_json(id, &bytes).unwrap();
    assert_eq!(shown["name"], SEALED);
    assert_eq!(shown["role"], "billing");
    // Erased: the fields read as erased, the rest as before.
    sealer.erased.lock().unwrap().push("c-17".into());
    let shown = reg.decode_json(id, &bytes).unwrap();
    assert_eq!(shown["name"], ERASED);
    assert_eq!(shown["email"], ERASED);
    assert_eq!(shown["contact_id"], "c-17");
}

#[test]
fn personal_markers_must_be_usable() {
    let schema = |fields: &str, subject: &str| {
        format!(r#"{{"type": "record", "name": "X", {subject} "fields": [{fields}]}}"#)
    };
    let ok = schema(
        r#"{"name": "tenant", "type": "string"}, {"name": "who", "type": "string"}, {"name": "mail", "type": "string", "annals.personal": true}"#,
        r#""annals.subject": "who","#,
    );
    let p = PersonalFields::from_schema_text(&ok).unwrap();
    assert_eq!(p.fields, vec!["mail"]);
    for (bad, why) in [
        (
            schema(
                r#"{"name": "mail", "type": "string", "annals.personal": true}"#,
                "",
            ),
            "annals.subject",
        ),
        (
            schema(
                r#"{"name": "who", "type": "string"}, {"name": "n", "type": "long", "annals.personal": true}"#,
                r#""annals.subject": "who","#,
            ),
            "must be a string",
        ),
        (
            schema(
                r#"{"name": "who", "type": "string", "annals.personal": true}"#,
                r#""annals.subject": "who","#,
            ),
            "cannot itself be personal",
        ),
    ] {
        let err = PersonalFields::from_schema_text(&bad).unwrap_err();
        assert!(err.contains(why), "{err}");
    }
}
