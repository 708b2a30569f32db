//! The golden dataset: a deterministic stream of domain events for demos and tests.
//!
//! Same spec, same events — ids, times, payloads — on every machine and every run: it uses its
//! own PRNG (SplitMix64) rather than a library whose sequence could change between versions.

use annals_events::NewEvent;
use annals_schemas::{Registry, SchemaError};
use serde_json::{Value, json};
use uuid::Uuid;

/// 2026-01-01T00:00:00Z, the first day of the dataset.
pub const START_MICROS: i64 = 1_767_225_600_000_000;
const DAY_MICROS: i64 = 86_400_000_000;

const PLANS: [&str; 3] = ["starter", "growth", "enterprise"];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const SOURCES: [&str; 4] = ["web", "mobile", "pos", "iot"];
const METRICS: [(&str, &str); 4] = [
    ("latency", "ms"),
    ("temperature", "celsius"),
    ("basket", "items"),
    ("errors", "count"),
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub tenants: u32,
    /// Signals per tenant per day.
    pub signals_per_day: u32,
    pub days: u32,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            tenants: 10,
            signals_per_day: 10_000,
            days: 1,
            seed: 42,
        }
    }
}

impl Spec {
    pub fn total_events(&self) -> u64 {
        u64::from(self.tenants) * (1 + u64::from(self.signals_per_day) * u64::from(self.days))
    }

    pub fn tenant_id(&self, t: u32) -> String {
        format!("tenant-{t:03}")
    }
}

/// One generated event, before it is encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenEvent {
    pub event_id: Uuid,
    pub tenant: String,
    pub stream: String,
    pub stream_version: u64,
    pub event_type: &'static str,
    pub occurred_at: i64,
    pub payload: Value,
}

impl GoldenEvent {
    /// Encodes the payload with the latest schema of its type.
    pub fn encode(&self, registry: &Registry) -> Result<NewEvent, SchemaError> {
        let (schema_id, payload) = registry.encode_json(self.event_type, &self.payload)?;
        Ok(NewEvent {
            event_id: self.event_id,
            tenant: self.tenant.clone(),
            stream: self.stream.clone(),
            stream_version: self.stream_version,
            event_type: self.event_type.to_owned(),
            schema_id,
            occurred_at: self.occurred_at,
            actor: "demo".to_owned(),
            causation_id: None,
            correlation_id: Some(format!("demo-{}", self.tenant)),
            payload,
        })
    }
}

/// SplitMix64: tiny, fast, and fixed forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn uuid_v7(&mut self, micros: i64) -> Uuid {
        let mut rand = [0u8; 10];
        rand[..8].copy_from_slice(&self.next().to_le_bytes());
        rand[8..].copy_from_slice(&self.next().to_le_bytes()[..2]);
        uuid::Builder::from_unix_timestamp_millis((micros / 1000) as u64, &rand).into_uuid()
    }
}

/// Every event of tenant number `t`, in the order they happened: its provisioning, then its
/// signals of every day.
pub fn tenant_events(spec: &Spec, t: u32) -> impl Iterator<Item = GoldenEvent> + '_ {
    let mut rng = Rng(spec.seed ^ (u64::from(t) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let tenant = spec.tenant_id(t);
    let provisioned = GoldenEvent {
        event_id: rng.uuid_v7(START_MICROS),
        tenant: tenant.clone(),
        stream: format!("tenancy.Tenant/{tenant}"),
        stream_version: 1,
        event_type: "tenancy.TenantProvisioned",
        occurred_at: START_MICROS,
        payload: json!({
            "tenant": tenant,
            "name": format!("Tenant {t}"),
            "plan": PLANS[t as usize % PLANS.len()],
            "region": REGIONS[t as usize % REGIONS.len()],
            "limits": {
                "max_signals_per_day": i64::from(spec.signals_per_day) * 2,
                "max_sources": SOURCES.len() as i32 * 2,
                "rate_per_second": 1000
            }
        }),
    };
    let per_day = u64::from(spec.signals_per_day.max(1));
    let step = DAY_MICROS / per_day as i64;
    let mut versions = [0u64; SOURCES.len()];
    let signals = (0..u64::from(spec.days) * u64::from(spec.signals_per_day)).map(move |i| {
        let day = (i / per_day) as i64;
        let ts = START_MICROS
            + day * DAY_MICROS
            + (i % per_day) as i64 * step
            + rng.below(step.max(1) as u64) as i64;
        let s = rng.below(SOURCES.len() as u64) as usize;
        versions[s] += 1;
        let (metric, unit) = METRICS[rng.below(METRICS.len() as u64) as usize];
        let value = (rng.below(100_000) as f64) / 100.0;
        GoldenEvent {
            event_id: rng.uuid_v7(ts),
            tenant: tenant.clone(),
            stream: format!("ingest.Source/{tenant}/{}", SOURCES[s]),
            stream_version: versions[s],
            event_type: "ingest.SignalIngested",
            occurred_at: ts,
            payload: json!({
                "tenant": tenant,
                "source": SOURCES[s],
                "signal_id": format!("{}-{i:08}", SOURCES[s]),
                "ts": ts,
                "attributes": { "metric": metric },
                "value": value,
                "unit": unit
            }),
        }
    });
    std::iter::once(provisioned).chain(signals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_spec_same_events() {
        let spec = Spec {
            tenants: 2,
            signals_per_day: 50,
            days: 2,
            seed: 7,
        };
        let a: Vec<_> = tenant_events(&spec, 1).collect();
        let b: Vec<_> = tenant_events(&spec, 1).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 101);
        let other: Vec<_> = tenant_events(&Spec { seed: 8, ..spec }, 1).collect();
        assert_ne!(a, other);
    }

    #[test]
    fn events_are_in_time_order_and_streams_are_versioned_from_one() {
        let spec = Spec {
            tenants: 1,
            signals_per_day: 500,
            days: 2,
            seed: 1,
        };
        let evs: Vec<_> = tenant_events(&spec, 0).collect();
        assert!(evs.windows(2).all(|w| w[0].occurred_at <= w[1].occurred_at));
        let mut last = std::collections::HashMap::new();
        for e in &evs {
            let v = last.entry(e.stream.clone()).or_insert(0);
            assert_eq!(e.stream_version, *v + 1, "{}", e.stream);
            *v = e.stream_version;
        }
    }

    #[test]
    fn every_event_encodes_with_its_published_schema() {
        let registry = Registry::builtin().unwrap();
        let spec = Spec {
            tenants: 1,
            signals_per_day: 100,
            days: 1,
            seed: 3,
        };
        for e in tenant_events(&spec, 0) {
            let ev = e.encode(&registry).unwrap();
            let back = registry.decode_json(ev.schema_id, &ev.payload).unwrap();
            assert_eq!(back["tenant"], e.payload["tenant"]);
        }
    }
}
