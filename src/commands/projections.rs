//! `annals projections status|run|rebuild NAME`: the read models built from the log.
//!
//! Two projections: `current_state` (SQLite under `<data-dir>/read-models/current.sqlite`, or
//! PostgreSQL when `[read_models] postgres` is set) and `analytics` (Parquet files under
//! `<data-dir>/read-models/analytics/`, or ClickHouse when `[read_models] clickhouse` is set).
//! The log is opened read-only: projections never write it, so these commands run beside
//! `annals serve`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use annals_events::Topic;
use annals_projections::analytics::{self, Analytics, AnalyticsError, AnalyticsStatus};
use annals_projections::follow::Follower;
use annals_projections::{
    Backend, CatchUp, CurrentState, DEFAULT_BATCH, Projection, ProjectionError, Status, Store,
};
use annals_schemas::Registry;

use crate::{Context, Failure};

#[derive(clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's backend, position and lag per partition (events and seconds), and rows
    /// per table.
    Status(Common),
    /// Catch every projection up with the log's head now, then stop.
    Run(Run),
    /// Refill a projection from seq 0 while the live tables keep answering, then swap it in.
    Rebuild(Rebuild),
    /// The digest of the current-state read model's rows (what `annals replay --projection
    /// current_state` gives when replayed to the same positions).
    Digest(DigestArgs),
}

#[derive(clap::Args)]
pub struct DigestArgs {
    /// Only this tenant's rows.
    #[arg(long)]
    tenant: Option<String>,
}

#[derive(clap::Args)]
pub struct Common {
    #[arg(long, default_value = "events")]
    topic: String,
}

#[derive(clap::Args)]
pub struct Run {
    #[command(flatten)]
    common: Common,
    /// Events per batch at most (default: 1000 for current_state, 20000 for analytics).
    #[arg(long)]
    batch: Option<usize>,
    /// Keep following the log until Ctrl-C: apply new events as they are written, pause and
    /// retry with backoff while a database is unreachable.
    #[arg(long)]
    follow: bool,
}

#[derive(clap::Args)]
pub struct Rebuild {
    /// The projection (`current_state` or `analytics`).
    name: String,
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    batch: Option<usize>,
}

/// The current-state store the config names.
pub fn current_state_backend(ctx: &Context) -> Backend {
    match &ctx.config.read_models.postgres {
        Some(url) => Backend::Postgres {
            url: url.clone(),
            schema: ctx.config.read_models.postgres_schema.clone(),
        },
        None => Backend::embedded(&ctx.data_dir),
    }
}

/// The analytics store the config names.
pub fn analytics_store(ctx: &Context) -> Result<Analytics, Failure> {
    let rm = &ctx.config.read_models;
    Ok(match &rm.clickhouse {
        Some(url) => Analytics::ClickHouse(Box::new(
            analytics::clickhouse::ClickHouseStore::new(
                url,
                rm.clickhouse_database.as_deref().unwrap_or("annals"),
            )
            .map_err(|e| Failure::usage(format!("[read_models] {e}")))?,
        )),
        None => Analytics::Parquet(
            analytics::parquet::ParquetStore::open(&ctx.data_dir).map_err(analytics_failure)?,
        ),
    })
}

fn failure(e: ProjectionError) -> Failure {
    match e {
        ProjectionError::Log(e) => Failure::from(e),
        ProjectionError::Invalid(m) => Failure::usage(m),
        other => Failure::failed(other.to_string()),
    }
}

pub fn analytics_failure(e: AnalyticsError) -> Failure {
    match e {
        AnalyticsError::Projection(e) => failure(e),
        AnalyticsError::Query(m) => Failure::usage(m),
        other => Failure::failed(other.to_string()),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))
}

pub fn run(ctx: &Context, cmd: ProjectionsCommand) -> Result<ExitCode, Failure> {
    if let ProjectionsCommand::Digest(d) = &cmd {
        return digest(ctx, d.tenant.as_deref());
    }
    let topic_name = match &cmd {
        ProjectionsCommand::Digest(_) => unreachable!("answered above"),
        ProjectionsCommand::Status(c) => &c.topic,
        ProjectionsCommand::Run(r) => &r.common.topic,
        ProjectionsCommand::Rebuild(r) => &r.common.topic,
    };
    if let ProjectionsCommand::Rebuild(r) = &cmd
        && !annals_projections::PROJECTIONS.contains(&r.name.as_str())
    {
        return Err(Failure::usage(format!(
            "no projection `{}`: there is {}",
            r.name,
            annals_projections::PROJECTIONS.join(", ")
        )));
    }
    let log = ctx.open_log_read_only()?;
    let topic = log.topic(topic_name)?;
    let registry = super::registry(ctx)?;
    if let ProjectionsCommand::Run(r) = &cmd
        && r.follow
    {
        return follow(ctx, topic_name, registry);
    }
    runtime()?.block_on(async {
        match cmd {
            ProjectionsCommand::Status(_) => {
                let (current, analytics) = status_all(ctx, &topic).await?;
                if ctx.json {
                    super::print_json(&serde_json::json!({ "projections": [current, analytics] }));
                } else {
                    print_status(&current);
                    print_analytics_status(&analytics);
                }
            }
            ProjectionsCommand::Run(r) => {
                for done in run_all(ctx, &topic, &registry, r.batch).await? {
                    report(ctx, "caught up", &done);
                }
            }
            ProjectionsCommand::Digest(_) => {}
            ProjectionsCommand::Rebuild(r) => {
                let batch = r.batch;
                if r.name == analytics::NAME {
                    let store = analytics_store(ctx)?;
                    let batch = batch.unwrap_or(analytics::DEFAULT_BATCH).max(1);
                    let done = analytics::rebuild(&store, &topic, &registry, batch)
                        .await
                        .map_err(analytics_failure)?;
                    report(ctx, "rebuilt", &(r.name.clone(), done));
                } else {
                    let store = open_current(ctx).await?;
                    let batch = batch.unwrap_or(DEFAULT_BATCH).max(1);
                    let done = annals_projections::rebuild(
                        &store,
                        &CurrentState,
                        &topic,
                        &registry,
                        batch,
                    )
                    .await
                    .map_err(failure);
                    store.close().await;
                    report_rebuilt(ctx, &r.name, &done?);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `projections run --follow`: reopens the log each round (another process writes it) and
/// prints each projection's state when it changes, until Ctrl-C.
fn follow(ctx: &Context, topic_name: &str, registry: Registry) -> Result<ExitCode, Failure> {
    let follower = Follower::new(
        current_state_backend(ctx),
        analytics_store(ctx)?,
        std::sync::Arc::new(registry),
        std::time::Duration::from_millis(500),
    );
    let states = follower.states();
    let data_dir = ctx.data_dir.clone();
    let log_config = ctx.config.log.clone();
    let topic_name = topic_name.to_owned();
    let topic = move || {
        log_config
            .open_read_only(&data_dir)
            .and_then(|log| log.topic(&topic_name))
            .map_err(|e| e.to_string())
    };
    println!("following {}; Ctrl-C to stop", ctx.data_dir.display());
    runtime()?.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(follower.run(topic, stopped));
        let mut shown: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {}
            }
            let now = states.lock().expect("follow states").clone();
            for (name, st) in now {
                // Print when a projection pauses, resumes, or catches up.
                let key = (st.paused.is_some(), st.lag_events == 0);
                if shown.get(&name) == Some(&key) {
                    continue;
                }
                shown.insert(name.clone(), key);
                match &st.paused {
                    Some(why) => println!("{name}: paused: {why}"),
                    None => println!(
                        "{name}: {} events applied, lag {} events ({:.3} s)",
                        st.applied, st.lag_events, st.lag_seconds
                    ),
                }
            }
        }
        stop.send(true).ok();
        task.await.ok();
        println!("stopped");
    });
    Ok(ExitCode::SUCCESS)
}

fn digest(ctx: &Context, tenant: Option<&str>) -> Result<ExitCode, Failure> {
    let (rows, positions) = runtime()?.block_on(async {
        let store = open_current(ctx).await?;
        let rows = annals_projections::dump(&store, &CurrentState)
            .await
            .map_err(failure);
        let positions = annals_projections::positions(&store, CurrentState::NAME)
            .await
            .map_err(failure);
        store.close().await;
        Ok::<_, Failure>((rows?, positions?))
    })?;
    let rows = match tenant {
        Some(t) => annals_projections::tenant_rows(rows, t),
        None => rows,
    };
    let digest = annals_projections::digest_rows(&rows);
    let positions: BTreeMap<u32, u64> = positions.into_iter().map(|(p, (n, _))| (p, n)).collect();
    if ctx.json {
        super::print_json(&serde_json::json!({
            "projection": CurrentState::NAME,
            "digest": digest,
            "positions": positions,
        }));
    } else {
        println!("digest {digest}");
        println!(
            "{} at {}",
            CurrentState::NAME,
            positions
                .iter()
                .map(|(p, s)| format!("{p}:{s}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn open_current(ctx: &Context) -> Result<Store, Failure> {
    Store::open(&current_state_backend(ctx))
        .await
        .map_err(|e| Failure::failed(e.to_string()))
}

/// Catches every projection up with the topic's head (what `projections run` and the demo do).
pub async fn run_all(
    ctx: &Context,
    topic: &Topic,
    registry: &Registry,
    batch: Option<usize>,
) -> Result<Vec<(String, CatchUp)>, Failure> {
    let store = open_current(ctx).await?;
    let current = annals_projections::catch_up(
        &store,
        &CurrentState,
        topic,
        registry,
        batch.unwrap_or(DEFAULT_BATCH).max(1),
    )
    .await
    .map_err(failure);
    store.close().await;
    let analytics_store = analytics_store(ctx)?;
    let analytics = analytics::catch_up(
        &analytics_store,
        topic,
        registry,
        batch.unwrap_or(analytics::DEFAULT_BATCH).max(1),
    )
    .await
    .map_err(analytics_failure)?;
    Ok(vec![
        (CurrentState.name().to_owned(), current?),
        (analytics::NAME.to_owned(), analytics),
    ])
}

/// Status of both projections.
pub async fn status_all(
    ctx: &Context,
    topic: &Topic,
) -> Result<(Status, AnalyticsStatus), Failure> {
    let store = open_current(ctx).await?;
    let current = annals_projections::status(&store, &CurrentState, topic)
        .await
        .map_err(failure);
    store.close().await;
    let analytics = analytics::status(&analytics_store(ctx)?, topic)
        .await
        .map_err(analytics_failure)?;
    Ok((current?, analytics))
}

fn report(ctx: &Context, what: &str, (name, done): &(String, CatchUp)) {
    if ctx.json {
        super::print_json(&serde_json::json!({
            "projection": name,
            "events": done.events,
            "batches": done.batches,
            "seconds": done.seconds,
        }));
    } else {
        let rate = if done.seconds > 0.0 {
            done.events as f64 / done.seconds
        } else {
            0.0
        };
        println!(
            "{name}: {what}: {} events in {} batches, {:.2} s ({:.0} events/s)",
            done.events, done.batches, done.seconds, rate
        );
    }
}

/// A current-state rebuild: [`report`]'s line, and what the swap did.
fn report_rebuilt(ctx: &Context, name: &str, done: &annals_projections::Rebuilt) {
    if ctx.json {
        super::print_json(&serde_json::json!({
            "projection": name,
            "events": done.total.events,
            "batches": done.total.batches,
            "seconds": done.total.seconds,
            "swap": { "events": done.swap.events, "seconds": done.swap.seconds },
        }));
    } else {
        report(ctx, "rebuilt", &(name.to_owned(), done.total.clone()));
        println!(
            "{name}: swapped in: the rebuilt tables replaced the live ones in one transaction, with the last {} events ({:.3} s)",
            done.swap.events, done.swap.seconds
        );
    }
}

fn print_partitions(
    backend: &str,
    projection: &str,
    location: &str,
    lag_events: u64,
    lag_seconds: f64,
    partitions: &[annals_projections::PartitionStatus],
    rows: &std::collections::BTreeMap<String, u64>,
) {
    println!("{projection}  {backend}  {location}");
    println!("  lag: {lag_events} events, {lag_seconds:.3} s");
    println!("  partition  position  head  lag_events  lag_seconds");
    for p in partitions {
        println!(
            "  {:>9}  {:>8}  {:>4}  {:>10}  {:>11.3}",
            p.partition, p.position, p.head, p.lag_events, p.lag_seconds
        );
    }
    let rows: Vec<String> = rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("  rows: {}", rows.join(", "));
}

fn print_status(st: &Status) {
    print_partitions(
        st.backend.as_str(),
        &st.projection,
        &st.location,
        st.lag_events,
        st.lag_seconds,
        &st.partitions,
        &st.rows,
    );
}

fn print_analytics_status(st: &AnalyticsStatus) {
    print_partitions(
        &st.backend,
        &st.projection,
        &st.location,
        st.lag_events,
        st.lag_seconds,
        &st.partitions,
        &st.rows,
    );
}
