//! `annals bench projections`: how fast the read models are built, and how far they lag
//! behind a steady write load.
//!
//! Build speed: a demo dataset (plus usage records, which the current-state model writes rows
//! for) is written to a scratch log, then each projection is built from seq 0 into each store
//! given — SQLite and Parquet always, PostgreSQL and ClickHouse when their URLs are given (or
//! configured): current state by catching up an empty store (1,000 events per transaction),
//! analytics by a rebuild (shadow tables, swapped in) — and events/s printed. Lag: an engine writes signals at a fixed rate while a follower keeps both
//! read models caught up; the lag in seconds is sampled every 100 ms.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_events::{Log, LogConfig, Topic};
use annals_projections::analytics::{self, Analytics};
use annals_projections::follow::Follower;
use annals_projections::{Backend, CatchUp, CurrentState, Store};
use annals_schemas::Registry;

use crate::commands::projections::{analytics_failure, runtime};
use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Tenants of the demo dataset.
    #[arg(long, default_value_t = 10)]
    tenants: u32,
    /// Signals per tenant of the demo dataset (the bulk of the events).
    #[arg(long, default_value_t = 50_000)]
    signals_per_day: u32,
    /// Also rebuild into this PostgreSQL (schema `annals_bench`, replaced).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Also rebuild into this ClickHouse (database `annals_bench`, replaced).
    #[arg(long, value_name = "URL")]
    clickhouse: Option<String>,
    /// Usage records (budget updates, which the current-state model applies) written after the
    /// demo dataset, so the current-state figure measures rows written, not events passed over.
    #[arg(long, default_value_t = 200_000)]
    usage_records: u64,
    /// Signals per second written during the lag measurement (0: skip it).
    #[arg(long, default_value_t = 20_000)]
    load: u64,
    /// Seconds of load for the lag measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Folder for the scratch data (on the disk to measure); removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Rebuilt {
    projection: &'static str,
    store: String,
    events: u64,
    /// Events the projection applied (the rest are of types it passes over).
    applied: u64,
    seconds: f64,
    events_per_s: f64,
}

#[derive(Debug, serde::Serialize)]
struct Lag {
    signals_per_s_offered: u64,
    signals_written: u64,
    seconds: f64,
    samples: usize,
    lag_seconds_p50: f64,
    lag_seconds_p99: f64,
    lag_seconds_max: f64,
    catch_up_after_load_s: f64,
    stores: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    if args.tenants == 0 || args.signals_per_day == 0 {
        return Err(Failure::usage(
            "--tenants and --signals-per-day must be at least 1",
        ));
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = parent.join(format!("annals-bench-projections-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| Failure::failed(format!("cannot create {}: {e}", scratch.display())))?;
    let result = measure(ctx, &args, &scratch);
    std::fs::remove_dir_all(&scratch).ok();
    let (rebuilt, lag) = result?;
    if ctx.json {
        super::print_json(&serde_json::json!({ "rebuild": rebuilt, "lag": lag }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "annals bench projections: built from seq 0 of a demo log ({} tenants x {} signals) plus {} usage records",
        args.tenants, args.signals_per_day, args.usage_records
    );
    for r in &rebuilt {
        println!(
            "  {:<14} -> {:<10} {:>9} events ({:>9} applied) in {:>6.2} s = {:>10.0} events/s, {:>10.0} applied/s",
            r.projection,
            r.store,
            r.events,
            r.applied,
            r.seconds,
            r.events_per_s,
            r.applied as f64 / r.seconds.max(1e-9)
        );
    }
    if let Some(l) = lag {
        println!(
            "  lag under load ({} signals/s offered, {} written in {:.1} s, into {}): p50 {:.3} s, p99 {:.3} s, max {:.3} s over {} samples; caught up {:.3} s after the load stopped",
            l.signals_per_s_offered,
            l.signals_written,
            l.seconds,
            l.stores,
            l.lag_seconds_p50,
            l.lag_seconds_p99,
            l.lag_seconds_max,
            l.samples,
            l.catch_up_after_load_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn measure(
    ctx: &Context,
    args: &Args,
    scratch: &Path,
) -> Result<(Vec<Rebuilt>, Option<Lag>), Failure> {
    let data = scratch.join("data");
    super::bench::write_demo(&data, args.tenants, args.signals_per_day)?;
    if args.usage_records > 0 {
        write_usage(&data, args.tenants, args.usage_records)?;
    }
    let log = Log::open_read_only(&data)?;
    let topic = log.topic("events")?;
    let registry =
        Registry::builtin()?.with_sealer(Arc::new(annals_audit::SubjectKeys::open(&data)));
    let rt = runtime()?;
    let mut out = Vec::new();
    let postgres = args
        .postgres
        .clone()
        .or_else(|| ctx.config.read_models.postgres.clone());
    let clickhouse = args
        .clickhouse
        .clone()
        .or_else(|| ctx.config.read_models.clickhouse.clone());
    rt.block_on(async {
        let mut current = vec![(
            "sqlite".to_owned(),
            Backend::Sqlite {
                path: scratch.join("bench.sqlite"),
            },
        )];
        if let Some(url) = &postgres {
            current.push((
                "postgres".to_owned(),
                Backend::Postgres {
                    url: url.clone(),
                    schema: Some("annals_bench".into()),
                },
            ));
        }
        for (name, backend) in current {
            let failed = |e: annals_projections::StoreError| Failure::failed(e.to_string());
            // Built from seq 0 into an empty store, in batches of 1,000 events per transaction.
            Store::drop_schema(&backend).await.map_err(failed)?;
            let store = Store::open(&backend).await.map_err(failed)?;
            let done = annals_projections::catch_up(
                &store,
                &CurrentState,
                &topic,
                &registry,
                annals_projections::DEFAULT_BATCH,
            )
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
            store.close().await;
            out.push(figure("current_state", name, &done));
        }
        let mut stores = vec![(
            "parquet".to_owned(),
            Analytics::Parquet(
                analytics::parquet::ParquetStore::open(scratch).map_err(analytics_failure)?,
            ),
        )];
        if let Some(url) = &clickhouse {
            stores.push((
                "clickhouse".to_owned(),
                Analytics::ClickHouse(Box::new(
                    analytics::clickhouse::ClickHouseStore::new(url, "annals_bench")
                        .map_err(analytics_failure)?,
                )),
            ));
        }
        for (name, store) in stores {
            let done = analytics::rebuild(&store, &topic, &registry, analytics::DEFAULT_BATCH)
                .await
                .map_err(analytics_failure)?;
            out.push(figure("analytics", name, &done));
        }
        Ok::<(), Failure>(())
    })?;
    drop(rt);
    let lag = if args.load > 0 {
        Some(measure_lag(
            args,
            scratch,
            postgres.as_deref(),
            clickhouse.as_deref(),
        )?)
    } else {
        None
    };
    Ok((out, lag))
}

/// Appends `n` usage records, spread over the demo's tenants' budgets, through the command path.
fn write_usage(data: &Path, tenants: u32, n: u64) -> Result<(), Failure> {
    use annals_domain::billing::BudgetCommand;
    use annals_processors::{Command, CommandMeta, Engine};
    let registry =
        Arc::new(Registry::builtin()?.with_sealer(Arc::new(annals_audit::SubjectKeys::open(data))));
    let log = Log::open(data, LogConfig::default())?;
    let topic = log.topic("events")?;
    let engine = Engine::start(topic, registry).map_err(|e| Failure::failed(e.to_string()))?;
    let spec = annals_domain::golden::Spec {
        tenants,
        ..annals_domain::golden::Spec::default()
    };
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let t = (i % u64::from(tenants)) as u32;
        let cmd = Command::Budget {
            tenant: spec.tenant_id(t),
            month: annals_domain::golden::MONTH.into(),
            command: BudgetCommand::RecordUsage {
                usage_id: format!("bench-{i}"),
                meter: "api_calls".into(),
                quantity: 1,
                cost_minor: 1,
            },
        };
        let meta = CommandMeta {
            actor: "bench".into(),
            occurred_at: annals_events::time::now_micros(),
            ..CommandMeta::default()
        };
        pending.push_back(
            engine
                .submit_blocking(cmd, meta)
                .map_err(|e| Failure::failed(e.to_string()))?,
        );
        if pending.len() > 256 {
            let p = pending.pop_front().expect("non-empty");
            p.wait().map_err(|e| Failure::failed(e.to_string()))?;
        }
    }
    for p in pending {
        p.wait().map_err(|e| Failure::failed(e.to_string()))?;
    }
    Ok(())
}

fn figure(projection: &'static str, store: String, done: &CatchUp) -> Rebuilt {
    Rebuilt {
        projection,
        store,
        events: done.events,
        applied: done.applied,
        seconds: done.seconds,
        events_per_s: done.events as f64 / done.seconds.max(1e-9),
    }
}

/// Writes signals at `args.load` per second for `args.seconds` while a follower keeps the
/// read models caught up, sampling its lag.
fn measure_lag(
    args: &Args,
    scratch: &Path,
    postgres: Option<&str>,
    clickhouse: Option<&str>,
) -> Result<Lag, Failure> {
    use annals_domain::tenancy::{TenantCommand, TenantLimits};
    use annals_processors::{Command, CommandMeta, Engine};

    let dir = scratch.join("lag");
    let log = Log::open(&dir, LogConfig::default())?;
    let topic: Arc<Topic> = log.create_topic("events", 4)?;
    let registry = Arc::new(Registry::builtin()?);
    let engine = Engine::start(topic.clone(), registry.clone())
        .map_err(|e| Failure::failed(e.to_string()))?;
    let meta = || CommandMeta {
        actor: "bench".into(),
        occurred_at: annals_events::time::now_micros(),
        ..CommandMeta::default()
    };
    let tenants = 4u32;
    let tenant = |t: u32| format!("lag-{t:02}");
    for t in 0..tenants {
        engine
            .execute_blocking(
                Command::Tenancy {
                    tenant: tenant(t),
                    command: TenantCommand::ProvisionTenant {
                        tenant: tenant(t),
                        name: "Lag".into(),
                        plan: "enterprise".into(),
                        region: "eu-west".into(),
                        limits: TenantLimits {
                            max_signals_per_day: i64::MAX / 2,
                            max_sources: 16,
                            rate_per_second: 10_000_000,
                        },
                    },
                },
                meta(),
            )
            .map_err(|e| Failure::failed(e.to_string()))?;
    }
    let current = match postgres {
        Some(url) => Backend::Postgres {
            url: url.to_owned(),
            schema: Some("annals_bench_lag".into()),
        },
        None => Backend::Sqlite {
            path: dir.join("current.sqlite"),
        },
    };
    let store = match clickhouse {
        Some(url) => Analytics::ClickHouse(Box::new(
            analytics::clickhouse::ClickHouseStore::new(url, "annals_bench_lag")
                .map_err(analytics_failure)?,
        )),
        None => Analytics::Parquet(
            analytics::parquet::ParquetStore::open(&dir).map_err(analytics_failure)?,
        ),
    };
    let stores = format!(
        "{} + {}",
        if postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        store.kind()
    );
    let rt = runtime()?;
    // Fresh stores: positions left by an earlier run would not match this new log.
    rt.block_on(async {
        Store::drop_schema(&current)
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        if let Analytics::ClickHouse(ch) = &store {
            ch.drop_database().await.map_err(analytics_failure)?;
        }
        Ok::<(), Failure>(())
    })?;
    let follower = Follower::new(current, store, registry, Duration::from_millis(100));
    let states = follower.states();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let followed = topic.clone();
    let task = rt.spawn(follower.run(move || Ok(followed.clone()), stopped));
    // Writer: batches of 100 signals, paced to the offered load.
    let per_command = 100u64;
    let interval = Duration::from_secs_f64(per_command as f64 / args.load as f64);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut samples = Vec::new();
    let mut next_sample = started;
    let mut written = 0u64;
    let mut next_write = started;
    let mut pending = std::collections::VecDeque::new();
    while Instant::now() < until {
        let now = Instant::now();
        if now >= next_sample {
            let worst = states
                .lock()
                .expect("follow states")
                .values()
                .map(|s| s.lag_seconds)
                .fold(0.0, f64::max);
            samples.push(worst);
            next_sample += Duration::from_millis(100);
        }
        if now < next_write {
            std::thread::sleep((next_write - now).min(next_sample.saturating_duration_since(now)));
            continue;
        }
        let t = (written / per_command) as u32 % tenants;
        let cmd = super::bench::ingest_signals(
            tenant(t),
            "web",
            "s",
            written..written + per_command,
            |_| annals_events::time::now_micros(),
        );
        pending.push_back(
            engine
                .submit_blocking(cmd, meta())
                .map_err(|e| Failure::failed(e.to_string()))?,
        );
        if pending.len() > 64 {
            let p = pending.pop_front().expect("non-empty");
            p.wait().map_err(|e| Failure::failed(e.to_string()))?;
        }
        written += per_command;
        next_write += interval;
    }
    for p in pending {
        p.wait().map_err(|e| Failure::failed(e.to_string()))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let load_end = Instant::now();
    loop {
        let caught = states
            .lock()
            .expect("follow states")
            .values()
            .all(|s| s.lag_events == 0 && s.applied > 0);
        if caught || load_end.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let catch_up = load_end.elapsed().as_secs_f64();
    stop.send(true).ok();
    rt.block_on(task).ok();
    drop(engine);
    samples.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Lag {
        signals_per_s_offered: args.load,
        signals_written: written,
        seconds,
        samples: samples.len(),
        lag_seconds_p50: pct(0.5),
        lag_seconds_p99: pct(0.99),
        lag_seconds_max: samples.last().copied().unwrap_or(0.0),
        catch_up_after_load_s: catch_up,
        stores,
    })
}
