//! Following the log: both projections kept caught up as events are appended, for `annals
//! serve` and `annals projections run --follow`.
//!
//! Each round catches every projection up with the log's head, then waits `interval` if there
//! was nothing new. A projection whose store fails (the database stopped, the network went)
//! pauses: the failure is reported in its state and in the log, and it is retried after a
//! backoff that doubles up to 30 s, while the other projection keeps going. Because positions
//! are stored with the rows (or batches are idempotent), resuming after a failure at any point
//! neither loses nor doubles anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals_events::Topic;
use annals_schemas::Registry;
use serde::Serialize;

use crate::analytics::{self, Analytics};
use crate::current_state::CurrentState;
use crate::runtime;
use crate::store::{Backend, Store};

/// Longest wait between retries of a failing store.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where one followed projection stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowState {
    pub projection: String,
    pub backend: String,
    /// Events the log holds that the projection has not applied.
    pub lag_events: u64,
    /// `recorded_at` of the log's newest event minus that of the newest applied one.
    pub lag_seconds: f64,
    /// Events applied since the follower started.
    pub applied: u64,
    /// Why the projection is paused, if it is.
    pub paused: Option<String>,
}

/// The states of the followed projections, shared with whoever reports them (`/metrics`).
pub type FollowStates = Arc<Mutex<BTreeMap<String, FollowState>>>;

/// Keeps `current_state` and `analytics` caught up with a topic.
pub struct Follower {
    current: Backend,
    analytics: Analytics,
    registry: Arc<Registry>,
    interval: Duration,
    states: FollowStates,
    purge: PurgeRequest,
}

/// Set when a subject was erased: once the current-state model has caught up (so the erasure
/// is applied), the follower purges old copies of the contacts' rows from the database files.
pub type PurgeRequest = Arc<std::sync::atomic::AtomicBool>;

struct Backoff {
    wait: Duration,
    until: Option<Instant>,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            wait: Duration::from_millis(500),
            until: None,
        }
    }
    fn ready(&self) -> bool {
        self.until.is_none_or(|t| Instant::now() >= t)
    }
    fn fail(&mut self) -> Duration {
        let wait = self.wait;
        self.until = Some(Instant::now() + wait);
        self.wait = (self.wait * 2).min(MAX_BACKOFF);
        wait
    }
    fn ok(&mut self) {
        *self = Backoff::new();
    }
}

impl Follower {
    pub fn new(
        current: Backend,
        analytics: Analytics,
        registry: Arc<Registry>,
        interval: Duration,
    ) -> Follower {
        let states: BTreeMap<String, FollowState> = [
            (CurrentState::NAME, current_kind(&current)),
            (analytics::NAME, analytics.kind()),
        ]
        .into_iter()
        .map(|(name, backend)| {
            (
                name.to_owned(),
                FollowState {
                    projection: name.to_owned(),
                    backend: backend.to_owned(),
                    ..FollowState::default()
                },
            )
        })
        .collect();
        Follower {
            current,
            analytics,
            registry,
            interval,
            states: Arc::new(Mutex::new(states)),
            purge: PurgeRequest::default(),
        }
    }

    /// The flag that asks for a purge after the next catch-up (see [`PurgeRequest`]).
    pub fn purge_request(&self) -> PurgeRequest {
        self.purge.clone()
    }

    pub fn states(&self) -> FollowStates {
        self.states.clone()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut FollowState)) {
        if let Some(s) = self.states.lock().expect("follow states").get_mut(name) {
            f(s);
        }
    }

    fn pause(&self, name: &str, backoff: &mut Backoff, error: String) {
        let wait = backoff.fail();
        tracing::warn!(projection = name, retry_in_s = wait.as_secs_f64(), %error, "projection paused");
        self.update(name, |s| {
            s.paused = Some(format!("{error} (retrying in {:.1} s)", wait.as_secs_f64()))
        });
    }

    fn resume(&self, name: &str, backoff: &mut Backoff) {
        if backoff.until.is_some() {
            tracing::info!(projection = name, "projection resumed");
        }
        backoff.ok();
        self.update(name, |s| s.paused = None);
    }

    /// Follows the topic `topic()` returns (called each round, so a reader of another
    /// process's log can reopen it) until `stop` turns true, then catches up once more.
    pub async fn run<F>(self, topic: F, mut stop: tokio::sync::watch::Receiver<bool>)
    where
        F: Fn() -> Result<Arc<Topic>, String>,
    {
        let mut store: Option<Store> = None;
        let mut current_backoff = Backoff::new();
        let mut analytics_backoff = Backoff::new();
        let mut prepared = false;
        // ClickHouse wants few, large inserts: after a small round (the follower is caught up)
        // the next one waits CLICKHOUSE_SPACING, so a steady trickle of events becomes about
        // one insert per table and partition per second instead of one per event burst.
        let spaced = matches!(self.analytics, Analytics::ClickHouse(_));
        let mut analytics_last: Option<(Instant, bool)> = None;
        loop {
            // After a stop, one last round catches up with what was written before it.
            let stopping = *stop.borrow();
            let mut progressed = false;
            match topic() {
                Err(e) => tracing::warn!(error = %e, "cannot open the log to follow it"),
                Ok(topic) => {
                    if current_backoff.ready() {
                        match within(self.current_round(&mut store, &topic)).await {
                            Ok(n) => {
                                progressed |= n > 0;
                                self.resume(CurrentState::NAME, &mut current_backoff);
                            }
                            Err(e) => {
                                if let Some(s) = store.take() {
                                    s.close().await;
                                }
                                self.pause(CurrentState::NAME, &mut current_backoff, e);
                            }
                        }
                    }
                    let due = !spaced
                        || stopping
                        || analytics_last
                            .is_none_or(|(at, small)| !small || at.elapsed() >= CLICKHOUSE_SPACING);
                    if analytics_backoff.ready() && due {
                        match within(self.analytics_round(&mut prepared, &topic)).await {
                            Ok(n) => {
                                analytics_last = Some((Instant::now(), n < CLICKHOUSE_SMALL));
                                progressed |= n > 0;
                                self.resume(analytics::NAME, &mut analytics_backoff);
                            }
                            Err(e) => {
                                prepared = false;
                                self.pause(analytics::NAME, &mut analytics_backoff, e);
                            }
                        }
                    }
                }
            }
            if stopping {
                break;
            }
            if !progressed {
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        if let Some(s) = store {
            s.close().await;
        }
    }

    async fn current_round(&self, store: &mut Option<Store>, topic: &Topic) -> Result<u64, String> {
        if store.is_none() {
            *store = Some(
                Store::open(&self.current)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let s = store.as_ref().expect("opened above");
        let done = runtime::catch_up(
            s,
            &CurrentState,
            topic,
            &self.registry,
            runtime::DEFAULT_BATCH,
        )
        .await
        .map_err(|e| e.to_string())?;
        let positions = runtime::positions(s, CurrentState::NAME)
            .await
            .map_err(|e| e.to_string())?;
        let (lag_events, lag_seconds) = lag(
            topic,
            positions.into_iter().map(|(p, (next, at))| (p, next, at)),
        );
        self.update(CurrentState::NAME, |st| {
            st.applied += done.events;
            st.lag_events = lag_events;
            st.lag_seconds = lag_seconds;
        });
        // Caught up, so an erasure requested before this round is applied: purge its copies.
        if self.purge.swap(false, std::sync::atomic::Ordering::AcqRel)
            && let Err(e) = s.purge("contacts").await
        {
            self.purge.store(true, std::sync::atomic::Ordering::Release);
            return Err(e.to_string());
        }
        Ok(done.events)
    }

    async fn analytics_round(&self, prepared: &mut bool, topic: &Topic) -> Result<u64, String> {
        if !*prepared {
            self.analytics.prepare().await.map_err(|e| e.to_string())?;
            *prepared = true;
        }
        let done = analytics::advance(
            &self.analytics,
            topic,
            &self.registry,
            analytics::DEFAULT_BATCH,
        )
        .await
        .map_err(|e| e.to_string())?;
        let positions = self
            .analytics
            .positions()
            .await
            .map_err(|e| e.to_string())?;
        let (lag_events, lag_seconds) = lag(
            topic,
            positions
                .into_iter()
                .map(|(p, pos)| (p, pos.next_seq, pos.last_recorded_at)),
        );
        self.update(analytics::NAME, |st| {
            st.applied += done.events;
            st.lag_events = lag_events;
            st.lag_seconds = lag_seconds;
        });
        Ok(done.events)
    }
}

/// Wait between small analytics rounds into ClickHouse (see [`Follower::run`]).
pub const CLICKHOUSE_SPACING: Duration = Duration::from_secs(1);
/// A round into ClickHouse that applied fewer events is small.
const CLICKHOUSE_SMALL: u64 = 10_000;

/// Longest a round may take before the store counts as failing (a database that hangs rather
/// than refusing must not stall the other projection or a shutdown for ever).
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

async fn within(
    round: impl std::future::Future<Output = Result<u64, String>>,
) -> Result<u64, String> {
    match tokio::time::timeout(ROUND_TIMEOUT, round).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} s; the database may hang",
            ROUND_TIMEOUT.as_secs()
        )),
    }
}

fn current_kind(b: &Backend) -> &'static str {
    match b {
        Backend::Sqlite { .. } => "sqlite",
        Backend::Postgres { .. } => "postgres",
    }
}

/// Lag in events (summed) and seconds (the worst partition's) of stored positions (partition,
/// next seq, last recorded_at) against the topic's heads.
fn lag(topic: &Topic, positions: impl Iterator<Item = (u32, u64, Option<i64>)>) -> (u64, f64) {
    let positions: BTreeMap<u32, (u64, Option<i64>)> =
        positions.map(|(p, n, at)| (p, (n, at))).collect();
    topic
        .partitions()
        .iter()
        .fold((0, 0.0), |(events, seconds), p| {
            let (next, at) = positions.get(&p.id()).copied().unwrap_or((0, None));
            let (e, s) = runtime::partition_lag(p, &p.head(), next, at);
            (events + e, f64::max(seconds, s))
        })
}

/// The followed projections' states as Prometheus text (for `/metrics`).
pub fn prometheus(states: &FollowStates) -> String {
    use std::fmt::Write;
    let states = states.lock().expect("follow states").clone();
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&FollowState) -> String| {
            writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}").ok();
            for s in states.values() {
                writeln!(
                    out,
                    "{name}{{projection=\"{}\",backend=\"{}\"}} {}",
                    s.projection,
                    s.backend,
                    value(s)
                )
                .ok();
            }
        };
    family(
        "annals_projection_lag_events",
        "gauge",
        "Events in the log the projection has not applied yet.",
        &|s| s.lag_events.to_string(),
    );
    family(
        "annals_projection_lag_seconds",
        "gauge",
        "recorded_at of the newest event in the log minus that of the newest applied one.",
        &|s| s.lag_seconds.to_string(),
    );
    family(
        "annals_projection_paused",
        "gauge",
        "1 while the projection's store fails and it waits to retry, else 0.",
        &|s| u8::from(s.paused.is_some()).to_string(),
    );
    family(
        "annals_projection_applied_events_total",
        "counter",
        "Events the projection applied since the server started.",
        &|s| s.applied.to_string(),
    );
    out
}
