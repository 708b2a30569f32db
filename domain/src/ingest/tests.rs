//! Given / when / then for the `Source` aggregate: acceptance, dedupe, refusals.

use cqrs_es::test::TestFramework;

use super::*;
use crate::tenancy::TenantStatus;

fn active() -> IngestServices {
    IngestServices {
        tenant: TenantStatus::Active,
        source_limit_reached: false,
    }
}

fn input(id: &str, ts: i64) -> SignalInput {
    SignalInput {
        signal_id: id.into(),
        ts,
        attributes: [("metric".to_owned(), "latency".to_owned())].into(),
        value: Some(1.5),
        unit: Some("ms".into()),
    }
}

fn ingested(id: &str, ts: i64) -> IngestEvent {
    let s = input(id, ts);
    IngestEvent::SignalIngested(SignalIngested {
        tenant: "acme".into(),
        source: "web".into(),
        signal_id: s.signal_id,
        ts,
        attributes: s.attributes,
        value: s.value,
        unit: s.unit,
    })
}

fn ingest(signals: Vec<SignalInput>) -> IngestCommand {
    IngestCommand::IngestSignals {
        tenant: "acme".into(),
        source: "web".into(),
        signals,
    }
}

#[test]
fn new_signals_are_ingested() {
    TestFramework::<Source>::with(active())
        .given_no_previous_events()
        .when(ingest(vec![input("a", 1), input("b", 2)]))
        .then_expect_events(vec![ingested("a", 1), ingested("b", 2)]);
}

#[test]
fn a_retried_signal_is_a_duplicate_and_writes_nothing() {
    TestFramework::<Source>::with(active())
        .given(vec![ingested("a", 1)])
        .when(ingest(vec![input("a", 1), input("c", 3)]))
        .then_expect_events(vec![ingested("c", 3)]);
}

#[test]
fn repeats_within_one_batch_are_written_once() {
    TestFramework::<Source>::with(active())
        .given_no_previous_events()
        .when(ingest(vec![input("a", 1), input("a", 1), input("a", 2)]))
        .then_expect_events(vec![ingested("a", 1), ingested("a", 2)]);
}

#[test]
fn the_same_id_at_another_time_is_another_signal() {
    TestFramework::<Source>::with(active())
        .given(vec![ingested("a", 1)])
        .when(ingest(vec![input("a", 5)]))
        .then_expect_events(vec![ingested("a", 5)]);
}

#[test]
fn unknown_and_suspended_tenants_are_refused() {
    for (status, code) in [
        (TenantStatus::Unknown, "unknown_tenant"),
        (TenantStatus::Suspended, "tenant_suspended"),
        (TenantStatus::Archived, "tenant_archived"),
    ] {
        let err = TestFramework::<Source>::with(IngestServices {
            tenant: status,
            source_limit_reached: false,
        })
        .given_no_previous_events()
        .when(ingest(vec![input("a", 1)]))
        .inspect_result()
        .unwrap_err();
        assert_eq!(err.code, code);
    }
}

#[test]
fn one_bad_signal_refuses_the_whole_batch_naming_it() {
    let mut bad = input("b", 2);
    bad.ts = 0;
    let err = TestFramework::<Source>::with(active())
        .given_no_previous_events()
        .when(ingest(vec![input("a", 1), bad]))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("signals[1].ts"));
    let mut nan = input("c", 3);
    nan.value = Some(f64::NAN);
    let err = TestFramework::<Source>::with(active())
        .given_no_previous_events()
        .when(ingest(vec![nan]))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("signals[0].value"));
    let empty_id = input("", 3);
    let err = TestFramework::<Source>::with(active())
        .given_no_previous_events()
        .when(ingest(vec![empty_id]))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("signals[0].signal_id"));
}

#[test]
fn oversize_batches_and_bad_sources_are_refused() {
    let many = (0..MAX_BATCH + 1)
        .map(|i| input("x", i as i64 + 1))
        .collect();
    let err = TestFramework::<Source>::with(active())
        .given_no_previous_events()
        .when(ingest(many))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code, "batch_too_large");
    let err = TestFramework::<Source>::with(active())
        .given_no_previous_events()
        .when(IngestCommand::IngestSignals {
            tenant: "acme".into(),
            source: "no spaces".into(),
            signals: vec![input("a", 1)],
        })
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("source"));
}

#[test]
fn a_new_source_beyond_the_tenants_limit_is_refused_but_known_ones_go_on() {
    let full = IngestServices {
        tenant: TenantStatus::Active,
        source_limit_reached: true,
    };
    let err = TestFramework::<Source>::with(full)
        .given_no_previous_events()
        .when(ingest(vec![input("a", 1)]))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code, "source_limit");
    TestFramework::<Source>::with(full)
        .given(vec![ingested("a", 1)])
        .when(ingest(vec![input("b", 2)]))
        .then_expect_events(vec![ingested("b", 2)]);
}

#[test]
fn signals_round_trip_through_the_published_schema_and_v1_upcasts() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let e = ingested("a", 1);
    let (id, bytes) = e.encode(&registry).unwrap();
    assert_eq!(
        IngestEvent::from_json(
            "ingest.SignalIngested",
            registry.decode_json(id, &bytes).unwrap()
        )
        .unwrap()
        .unwrap(),
        e
    );
    // A payload written with v1 (no value, no unit) reads as the current event.
    let v1 = registry
        .all()
        .iter()
        .find(|s| s.event_type == "ingest.SignalIngested" && s.version == 1)
        .unwrap();
    let old = apache_avro_v1_bytes(&v1.schema);
    let back = IngestEvent::from_json(
        "ingest.SignalIngested",
        registry.decode_json(v1.id, &old).unwrap(),
    )
    .unwrap()
    .unwrap();
    let IngestEvent::SignalIngested(s) = back;
    assert_eq!((s.signal_id.as_str(), s.value, s.unit), ("old", None, None));
}

fn apache_avro_v1_bytes(schema: &annals_schemas::apache_avro::Schema) -> Vec<u8> {
    use annals_schemas::apache_avro::types::Value;
    let v = Value::Record(vec![
        ("tenant".into(), Value::String("acme".into())),
        ("source".into(), Value::String("web".into())),
        ("signal_id".into(), Value::String("old".into())),
        ("ts".into(), Value::TimestampMicros(7)),
        ("attributes".into(), Value::Map(Default::default())),
    ]);
    #[allow(deprecated)]
    annals_schemas::apache_avro::to_avro_datum(schema, v).unwrap()
}

#[test]
fn the_fast_signal_encoder_writes_what_the_generic_one_does() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let mut cases = vec![ingested("a", 1)];
    let IngestEvent::SignalIngested(mut bare) = ingested("b", -5);
    bare.attributes.clear();
    bare.value = None;
    bare.unit = None;
    cases.push(IngestEvent::SignalIngested(bare));
    for e in cases {
        let (id, fast) = e.encode(&registry).unwrap();
        let (generic_id, generic) = registry
            .encode_json("ingest.SignalIngested", &e.to_json())
            .unwrap();
        assert_eq!((id, &fast), (generic_id, &generic));
        let back = IngestEvent::from_json(
            "ingest.SignalIngested",
            registry.decode_json(id, &fast).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(back, e);
    }
    // Several attributes: written in key order, and decoded back to the same map.
    let IngestEvent::SignalIngested(mut many) = ingested("c", 9);
    many.attributes = [("z", "1"), ("a", "2"), ("m", "3")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let e = IngestEvent::SignalIngested(many);
    let (id, bytes) = e.encode(&registry).unwrap();
    assert_eq!(e.encode(&registry).unwrap().1, bytes, "repeatable bytes");
    assert_eq!(
        IngestEvent::from_json(
            "ingest.SignalIngested",
            registry.decode_json(id, &bytes).unwrap()
        )
        .unwrap()
        .unwrap(),
        e
    );
}

#[test]
fn the_fast_signal_decoder_reads_what_the_registry_reads() {
    use crate::payload::Payload;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let IngestEvent::SignalIngested(mut s) = ingested("d", 42);
    s.attributes = [("z", "1"), ("a", "2")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let e = IngestEvent::SignalIngested(s);
    let (id, bytes) = e.encode(&registry).unwrap();
    assert_eq!(IngestEvent::decode(&registry, id, &bytes).unwrap(), e);
    // Payloads written with v1 still go through schema resolution.
    let v1 = registry
        .all()
        .iter()
        .find(|s| s.event_type == "ingest.SignalIngested" && s.version == 1)
        .unwrap();
    let IngestEvent::SignalIngested(old) =
        IngestEvent::decode(&registry, v1.id, &apache_avro_v1_bytes(&v1.schema)).unwrap();
    assert_eq!((old.signal_id.as_str(), old.value), ("old", None));
    // Damage is an error, never a panic.
    for cut in 0..bytes.len() {
        assert!(IngestEvent::decode(&registry, id, &bytes[..cut]).is_err());
    }
}

/// Replays apply stored signals in place: the same state as decoding and applying them, for v2
/// and upcast v1 payloads, and an error (not a panic) for damaged bytes.
#[test]
fn applying_stored_signals_in_place_gives_the_decoded_state() {
    use crate::payload::Payload;
    use cqrs_es::Aggregate;
    let registry = annals_schemas::Registry::builtin().unwrap();
    let v1 = registry
        .all()
        .iter()
        .find(|s| s.event_type == "ingest.SignalIngested" && s.version == 1)
        .unwrap();
    let mut stored: Vec<(annals_schemas::SchemaId, Vec<u8>)> = [("a", 1), ("b", 2), ("a", 3)]
        .iter()
        .map(|(id, ts)| ingested(id, *ts).encode(&registry).unwrap())
        .collect();
    stored.push((v1.id, apache_avro_v1_bytes(&v1.schema)));
    let mut in_place = Source::default();
    let mut decoded = Source::default();
    for (id, bytes) in &stored {
        in_place.apply_stored(&registry, *id, bytes).unwrap();
        decoded.apply(IngestEvent::decode(&registry, *id, bytes).unwrap());
    }
    assert_eq!(in_place, decoded);
    assert_eq!(in_place.seen.len(), 3);
    let (id, bytes) = &stored[0];
    for cut in 0..bytes.len() {
        assert!(
            Source::default()
                .apply_stored(&registry, *id, &bytes[..cut])
                .is_err()
        );
    }
}
