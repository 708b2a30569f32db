//! What the Kafka tests of the log share: the test broker, a topic prefix of their own, and
//! events to append.

use annals_events::{KafkaConfig, NewEvent};

/// `ANNALS_TEST_KAFKA` (set by `scripts/test`), or `None` when the run skips servers.
pub fn brokers() -> Option<String> {
    match std::env::var("ANNALS_TEST_KAFKA") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var("ANNALS_SKIP_SERVERS").as_deref() == Ok("1") => {
            eprintln!("note: skipped: ANNALS_SKIP_SERVERS=1 and no ANNALS_TEST_KAFKA");
            None
        }
        _ => panic!(
            "ANNALS_TEST_KAFKA is not set (scripts/test sets it), or set ANNALS_SKIP_SERVERS=1"
        ),
    }
}

/// A Kafka config with a topic prefix of its own, so tests never share topics.
pub fn config(brokers: &str, test: &str) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(brokers);
    cfg.topic_prefix = format!(
        "{test}-{}-{}.",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    cfg
}

/// The `n`th signal event of `tenant`.
pub fn event(tenant: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        tenant: tenant.into(),
        stream: format!("ingest.Source/{tenant}").into(),
        stream_version: n + 1,
        event_type: "ingest.SignalIngested".into(),
        schema_id: 6,
        occurred_at: 1_700_000_000_000_000 + n as i64,
        actor: "test".into(),
        causation_id: Some(format!("cmd-{n}").into()),
        correlation_id: None,
        payload: (0..200).map(|i| (i as u64 ^ n) as u8).collect(),
    }
}
