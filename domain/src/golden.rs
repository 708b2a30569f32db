//! The golden dataset: a deterministic set of commands for demos and tests — tenants to
//! provision and the signals their sources send, retries included.
//!
//! Same spec, same commands — ids, times, values — on every machine and every run: it uses its
//! own PRNG (SplitMix64) rather than a library whose sequence could change between versions.

use crate::ingest::SignalInput;
use crate::tenancy::{PLANS, TenantCommand, TenantLimits};

/// 2026-01-01T00:00:00Z, the first day of the dataset.
pub const START_MICROS: i64 = 1_767_225_600_000_000;
const DAY_MICROS: i64 = 86_400_000_000;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
pub const SOURCES: [&str; 4] = ["web", "mobile", "pos", "iot"];
const METRICS: [(&str, &str); 4] = [
    ("latency", "ms"),
    ("temperature", "celsius"),
    ("basket", "items"),
    ("errors", "count"),
];
/// One signal in this many is sent twice, as a client that retries after a timeout would.
const RETRY_EVERY: u64 = 50;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub tenants: u32,
    /// Distinct signals per tenant per day (retries come on top).
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
    pub fn tenant_id(&self, t: u32) -> String {
        format!("tenant-{t:03}")
    }

    /// Distinct signals in all.
    pub fn signals(&self) -> u64 {
        u64::from(self.tenants) * u64::from(self.signals_per_day) * u64::from(self.days)
    }

    /// Retried sends in all (each a duplicate the command path must refuse to write).
    pub fn retries(&self) -> u64 {
        u64::from(self.tenants)
            * (u64::from(self.signals_per_day) * u64::from(self.days)).div_ceil(RETRY_EVERY)
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
        self.next() % n.max(1)
    }
}

/// The command that provisions tenant number `t`.
pub fn provision(spec: &Spec, t: u32) -> TenantCommand {
    TenantCommand::ProvisionTenant {
        tenant: spec.tenant_id(t),
        name: format!("Tenant {t}"),
        plan: PLANS[t as usize % PLANS.len()].to_owned(),
        region: REGIONS[t as usize % REGIONS.len()].to_owned(),
        limits: TenantLimits {
            max_signals_per_day: i64::from(spec.signals_per_day) * 2,
            max_sources: SOURCES.len() as i32 * 2,
            rate_per_second: 1000,
        },
    }
}

/// The signals tenant number `t` sends, in the order it sends them: `(source, signal)`. Every
/// [`RETRY_EVERY`]th signal is sent again a little later.
pub fn signals(spec: &Spec, t: u32) -> impl Iterator<Item = (&'static str, SignalInput)> + '_ {
    let mut rng = Rng(spec.seed ^ (u64::from(t) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let per_day = u64::from(spec.signals_per_day.max(1));
    let step = DAY_MICROS / per_day as i64;
    let mut retry: Option<(&'static str, SignalInput)> = None;
    (0..u64::from(spec.days) * u64::from(spec.signals_per_day)).flat_map(move |i| {
        let day = (i / per_day) as i64;
        let ts = START_MICROS
            + day * DAY_MICROS
            + (i % per_day) as i64 * step
            + rng.below(step.max(1) as u64) as i64;
        let source = SOURCES[rng.below(SOURCES.len() as u64) as usize];
        let (metric, unit) = METRICS[rng.below(METRICS.len() as u64) as usize];
        let signal = SignalInput {
            signal_id: format!("{source}-{i:08}"),
            ts,
            attributes: [("metric".to_owned(), metric.to_owned())].into(),
            value: Some(rng.below(100_000) as f64 / 100.0),
            unit: Some(unit.to_owned()),
        };
        // A retry goes out with the next signal after the original.
        let resend = retry.take();
        if i % RETRY_EVERY == 0 {
            retry = Some((source, signal.clone()));
        }
        let last_one = i + 1 == u64::from(spec.days) * u64::from(spec.signals_per_day);
        let tail = if last_one { retry.take() } else { None };
        std::iter::once((source, signal)).chain(resend).chain(tail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_spec_same_commands() {
        let spec = Spec {
            tenants: 2,
            signals_per_day: 50,
            days: 2,
            seed: 7,
        };
        let a: Vec<_> = signals(&spec, 1).collect();
        assert_eq!(a, signals(&spec, 1).collect::<Vec<_>>());
        assert_ne!(a, signals(&Spec { seed: 8, ..spec }, 1).collect::<Vec<_>>());
        assert_eq!(provision(&spec, 1), provision(&spec, 1));
    }

    #[test]
    fn retries_repeat_an_earlier_signal_exactly() {
        let spec = Spec {
            tenants: 1,
            signals_per_day: 120,
            days: 1,
            seed: 1,
        };
        let all: Vec<_> = signals(&spec, 0).collect();
        let distinct: std::collections::HashSet<_> = all
            .iter()
            .map(|(s, x)| (*s, x.signal_id.clone(), x.ts))
            .collect();
        assert_eq!(distinct.len() as u64, spec.signals());
        assert_eq!((all.len() - distinct.len()) as u64, spec.retries());
    }

    #[test]
    fn signals_are_within_their_day() {
        let spec = Spec {
            tenants: 1,
            signals_per_day: 500,
            days: 2,
            seed: 1,
        };
        assert!(
            signals(&spec, 0)
                .all(|(_, s)| s.ts >= START_MICROS && s.ts < START_MICROS + 2 * DAY_MICROS)
        );
    }
}
