//! `annals projections status|run|rebuild NAME`: the read models built from the log.
//!
//! The backend is `[read_models] postgres = "postgres://…"` when set, otherwise SQLite under
//! `<data-dir>/read-models/current.sqlite`. The log is opened read-only: projections never
//! write it, so these commands run beside `annals serve`.

use std::process::ExitCode;

use annals_events::Log;
use annals_projections::{
    Backend, CurrentState, DEFAULT_BATCH, Projection, ProjectionError, Status, Store,
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
    /// Refill a projection from seq 0. It is done in one transaction: readers keep seeing the
    /// old rows until the new ones are committed.
    Rebuild(Rebuild),
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
    /// Events per transaction at most.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
}

#[derive(clap::Args)]
pub struct Rebuild {
    /// The projection (`current_state`).
    name: String,
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
}

fn backend(ctx: &Context) -> Backend {
    match &ctx.config.read_models.postgres {
        Some(url) => Backend::Postgres {
            url: url.clone(),
            schema: None,
        },
        None => Backend::embedded(&ctx.data_dir),
    }
}

fn failure(e: ProjectionError) -> Failure {
    match e {
        ProjectionError::Log(e) => Failure::from(e),
        ProjectionError::Invalid(m) => Failure::usage(m),
        other => Failure::failed(other.to_string()),
    }
}

pub fn run(ctx: &Context, cmd: ProjectionsCommand) -> Result<ExitCode, Failure> {
    let topic_name = match &cmd {
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
    let log = Log::open_read_only(&ctx.data_dir)?;
    let topic = log.topic(topic_name)?;
    let registry = Registry::builtin()?;
    let backend = backend(ctx);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let store = Store::open(&backend)
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        let p = CurrentState;
        let result = match cmd {
            ProjectionsCommand::Status(_) => {
                let st = annals_projections::status(&store, &p, &topic)
                    .await
                    .map_err(failure)?;
                if ctx.json {
                    super::print_json(&serde_json::json!({ "projections": [st] }));
                } else {
                    print_status(&st);
                }
                Ok(ExitCode::SUCCESS)
            }
            ProjectionsCommand::Run(r) => {
                let done =
                    annals_projections::catch_up(&store, &p, &topic, &registry, r.batch.max(1))
                        .await
                        .map_err(failure)?;
                report(ctx, "caught up", p.name(), &done);
                Ok(ExitCode::SUCCESS)
            }
            ProjectionsCommand::Rebuild(r) => {
                let done =
                    annals_projections::rebuild(&store, &p, &topic, &registry, r.batch.max(1))
                        .await
                        .map_err(failure)?;
                report(ctx, "rebuilt", p.name(), &done);
                Ok(ExitCode::SUCCESS)
            }
        };
        store.close().await;
        result
    })
}

fn report(ctx: &Context, what: &str, name: &str, done: &annals_projections::CatchUp) {
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

fn print_status(st: &Status) {
    println!(
        "{}  {}  {}",
        st.projection,
        st.backend.as_str(),
        st.location
    );
    println!("  lag: {} events, {:.3} s", st.lag_events, st.lag_seconds);
    println!("  partition  position  head  lag_events  lag_seconds");
    for p in &st.partitions {
        println!(
            "  {:>9}  {:>8}  {:>4}  {:>10}  {:>11.3}",
            p.partition, p.position, p.head, p.lag_events, p.lag_seconds
        );
    }
    let rows: Vec<String> = st.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("  rows: {}", rows.join(", "));
}
