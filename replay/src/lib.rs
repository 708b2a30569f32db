//! annals-replay: state as of any point, rebuilt from the log alone.
//!
//! Owns: replaying the events of the `events` topic, in each partition's seq order, up to a
//! bound — a seq (of one partition), a time (`recorded_at`, found through each partition's time
//! index without a scan), or the head — into the same aggregates the command path decides with
//! (so schema upcasting is exactly that of live reads), optionally only one tenant's or one
//! stream's; and the digest of the result: SHA-256 of its canonical JSON. Two replays of the
//! same log to the same bound give the same digest.
//!
//! Must not: write anything. It reads the log (opened read-only by the caller) and returns state.

use std::collections::BTreeMap;
use std::time::Instant;

use annals_events::{Log, LogError, Partition};
use annals_processors::PartitionState;
use annals_schemas::Registry;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where a replay stops (exclusive of what comes after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Everything in the log.
    Head,
    /// Events of `partition` up to and including `seq` (other partitions are not read).
    Seq { partition: u32, seq: u64 },
    /// Events recorded before this time (microseconds since the epoch), in every partition.
    Time(i64),
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub topic: String,
    pub until: Until,
    /// Only this tenant's streams (and only its partition is read).
    pub tenant: Option<String>,
    /// Only this stream.
    pub stream: Option<String>,
}

impl Replay {
    /// Every stream of `topic`, to the head.
    pub fn everything(topic: &str) -> Replay {
        Replay {
            topic: topic.to_owned(),
            until: Until::Head,
            tenant: None,
            stream: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Apply(String),
    #[error("{0}")]
    Usage(String),
}

/// The state a replay arrived at.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// SHA-256 (hex) of the canonical JSON of `aggregates`.
    pub digest: String,
    /// Per partition read: the last seq applied + 1 (the bound actually reached).
    pub positions: BTreeMap<u32, u64>,
    pub events_applied: u64,
    /// Wall time of the whole replay: reading, applying, snapshotting and the digest.
    pub seconds: f64,
    /// Wall time until every partition's events were applied to the in-memory aggregates
    /// (before their snapshot and digest).
    pub apply_seconds: f64,
    /// stream → `{"version", "state"}`.
    pub aggregates: BTreeMap<String, serde_json::Value>,
}

/// Replays `what` from `log` (read-only is enough).
pub fn replay(log: &Log, registry: &Registry, what: &Replay) -> Result<Replayed, ReplayError> {
    let started = Instant::now();
    let topic = log.topic(&what.topic)?;
    let tenant_partition = what.tenant.as_deref().map(|t| topic.partition_for(t).id());
    // Partitions are independent: each is replayed on its own thread, up to one per core.
    let selected: Vec<_> = topic
        .partitions()
        .iter()
        .filter(|p| tenant_partition.is_none_or(|tp| tp == p.id()))
        .filter(|p| !matches!(what.until, Until::Seq { partition, .. } if partition != p.id()))
        .collect();
    // Partitions are independent: first each is applied to its own in-memory state, then each
    // state is snapshotted, up to one partition per core at a time.
    let applied = in_parallel(selected, |p| apply_partition(p, registry, what));
    let apply_seconds = started.elapsed().as_secs_f64();
    let applied = applied.into_iter().collect::<Result<Vec<_>, _>>()?;
    let keep = |stream: &str| {
        what.stream.as_deref().is_none_or(|s| s == stream)
            && what
                .tenant
                .as_deref()
                .is_none_or(|t| stream_tenant(stream) == Some(t))
    };
    let snapshots = in_parallel(applied.iter().collect(), |a| a.state.snapshot(keep));
    let mut positions = BTreeMap::new();
    let mut events = 0u64;
    let mut aggregates = BTreeMap::new();
    for (a, state) in applied.iter().zip(snapshots) {
        positions.insert(a.partition, a.position);
        events += a.events;
        aggregates.extend(state);
    }
    if let (Until::Seq { partition, .. }, true) = (what.until, positions.is_empty()) {
        return Err(ReplayError::Usage(format!(
            "partition {partition} is not read: the tenant given lives in another partition, or the topic has no such partition"
        )));
    }
    Ok(Replayed {
        digest: digest(&aggregates),
        positions,
        events_applied: events,
        seconds: started.elapsed().as_secs_f64(),
        apply_seconds,
        aggregates,
    })
}

/// One partition replayed into memory.
struct Applied {
    partition: u32,
    /// The last seq applied + 1.
    position: u64,
    events: u64,
    state: PartitionState,
}

fn apply_partition(
    p: &Partition,
    registry: &Registry,
    what: &Replay,
) -> Result<Applied, ReplayError> {
    let end = match what.until {
        Until::Head | Until::Seq { .. } => p.head().next_seq,
        Until::Time(t) => p.seq_at_time(t)?,
    };
    let end = match what.until {
        Until::Seq { seq, .. } => (seq + 1).min(end),
        _ => end,
    };
    let mut state = PartitionState::default();
    let mut reader = p.reader(0);
    let mut events = 0;
    while reader.position() < end {
        let Some(env) = reader.next_ref()? else { break };
        if what.tenant.as_deref().is_some_and(|t| t != env.tenant)
            || what.stream.as_deref().is_some_and(|s| s != env.stream)
        {
            continue;
        }
        state
            .apply_stored(&env, registry)
            .map_err(|e| ReplayError::Apply(e.to_string()))?;
        events += 1;
    }
    Ok(Applied {
        partition: p.id(),
        position: reader.position(),
        events,
        state,
    })
}

/// `f` of every item, in order, on up to one thread per core; the largest work is not known
/// up front, so threads take the next item as they finish one.
fn in_parallel<T: Sync, R: Send>(items: Vec<T>, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results.lock().expect("results lock").push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// SHA-256 of the canonical JSON of a state (keys sorted, no whitespace).
pub fn digest(aggregates: &BTreeMap<String, serde_json::Value>) -> String {
    let bytes = serde_json::to_vec(aggregates).expect("JSON values serialise");
    hex::encode(Sha256::digest(bytes))
}

/// The tenant of a stream id `<type>/<tenant>[/…]`.
pub fn stream_tenant(stream: &str) -> Option<&str> {
    stream.split('/').nth(1)
}
