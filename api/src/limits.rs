//! Per-tenant token buckets for signal ingest: `rate` signals per second, a burst of one second.
//!
//! A request costs its number of signals. A request larger than the whole bucket is let through
//! when the bucket is full and leaves it in debt, so an allowed-size body is never refused
//! forever; the debt is paid back before the tenant's next request goes through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before idle (full) ones are dropped.
const MAX_IDLE_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets, one per tenant.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate`: signals per tenant per second (at least 1).
    pub fn new(rate: u64) -> RateLimiter {
        RateLimiter {
            rate: rate.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `tenant`'s bucket, or says after how many seconds to retry.
    /// `rate` is the tenant's own limit when known (else the configured default).
    pub fn take(&self, tenant: &str, rate: Option<u64>, cost: u64) -> Result<(), u64> {
        self.take_at_rate(
            tenant,
            rate.map_or(self.rate, |r| r.max(1) as f64),
            cost,
            Instant::now(),
        )
    }

    #[cfg(test)]
    fn take_at(&self, tenant: &str, cost: u64, now: Instant) -> Result<(), u64> {
        self.take_at_rate(tenant, self.rate, cost, now)
    }

    fn take_at_rate(&self, tenant: &str, rate: f64, cost: u64, now: Instant) -> Result<(), u64> {
        let capacity = rate;
        let cost = cost as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_IDLE_BUCKETS && !buckets.contains_key(tenant) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < capacity
            });
        }
        let b = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(capacity);
        b.last = now;
        if b.tokens >= cost || (cost > capacity && b.tokens >= capacity) {
            b.tokens -= cost;
            return Ok(());
        }
        let missing = cost.min(capacity) - b.tokens;
        Err(((missing / rate).ceil() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let l = RateLimiter::new(100);
        let t0 = Instant::now();
        assert!(l.take_at("a", 100, t0).is_ok());
        assert_eq!(l.take_at("a", 1, t0), Err(1));
        // Another tenant has its own bucket.
        assert!(l.take_at("b", 100, t0).is_ok());
        // Half a second refills half the bucket.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.take_at("a", 50, t1).is_ok());
        assert!(l.take_at("a", 1, t1).is_err());
    }

    #[test]
    fn an_oversize_request_goes_through_on_a_full_bucket_and_leaves_debt() {
        let l = RateLimiter::new(10);
        let t0 = Instant::now();
        assert!(l.take_at("a", 30, t0).is_ok());
        // 20 in debt: a full bucket again takes 3 seconds.
        assert_eq!(l.take_at("a", 10, t0), Err(3));
        assert!(l.take_at("a", 10, t0 + Duration::from_secs(3)).is_ok());
    }
}
