//! `annals retention run|apply`: the `[retention]` policies of the analytics read model.
//!
//! A policy gives an analytics dataset (table) a time to live. `run --dry-run` lists, per
//! tenant, exactly the rows the policies would remove now and records that list (as a count and
//! a digest) as `tenancy.RetentionReviewed`; `apply RUN_ID` removes exactly those rows — it
//! refuses if the rows found now are not the listed ones — by recording
//! `tenancy.RetentionApplied`, which the analytics projection carries out. `run` without
//! `--dry-run` does both at once. The log itself keeps every event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use annals_domain::Payload;
use annals_domain::tenancy::{
    RetentionCommand as DomainCommand, RetentionCut, RetentionEvent, RetentionRun, retention_stream,
};
use annals_events::time::format_micros;
use annals_events::{LogConfig, Topic};
use annals_processors::{Command, CommandError, CommandMeta, Engine};
use annals_projections::analytics::{self, Analytics, TABLES, retention};
use annals_schemas::Registry;

use crate::commands::projections::{analytics_failure, analytics_store, run_all, runtime};
use crate::{Context, Failure};

#[derive(clap::Subcommand)]
pub enum RetentionCommand {
    /// Apply the retention policies (`[retention]` in annals.toml, or `--ttl`): list each
    /// tenant's rows they remove and record the list; without `--dry-run`, remove them too.
    Run(RunArgs),
    /// Carry out a recorded dry run: remove exactly the rows it listed.
    Apply(ApplyArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// List and record what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only these tenants (repeatable; default: every tenant with analytics rows).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Count each time to live back from this instant (RFC 3339 in UTC, or microseconds since
    /// the epoch; default: now).
    #[arg(long)]
    as_of: Option<String>,
    /// A policy for this run, `DATASET=DURATION` (e.g. `signals=90d`; units s, m, h, d, w),
    /// over the config's (repeatable).
    #[arg(long = "ttl")]
    ttls: Vec<String>,
    /// Also write the exact list of rows, as JSON, to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The run id a dry run printed.
    run_id: String,
    /// Only these tenants' parts of the run (repeatable; default: every tenant it reviewed).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
}

/// Parses `90d`, `12h`, `30m`, `3600s`, `2w` into seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => 0,
    };
    n.parse::<i64>()
        .ok()
        .filter(|&n| n > 0 && scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .filter(|&s| s < 100 * 366 * 86_400)
        .ok_or_else(|| {
            format!(
                "`{text}` is not a time to live: use a positive whole number with a unit s, m, h, d or w (e.g. 90d)"
            )
        })
}

/// A time to live as the largest whole unit: `90d`, `12h`, `3600s` → `1h`.
fn human_ttl(seconds: i64) -> String {
    for (unit, scale) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds % scale == 0 {
            return format!("{}{unit}", seconds / scale);
        }
    }
    format!("{seconds}s")
}

/// Checks a policy table: analytics datasets to durations. Returns (dataset, seconds), sorted.
pub fn policies(table: &BTreeMap<String, String>) -> Result<Vec<(String, i64)>, String> {
    table
        .iter()
        .map(|(dataset, ttl)| {
            if !TABLES.iter().any(|t| t.name == dataset) {
                let known: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
                return Err(format!(
                    "[retention] {dataset}: not an analytics dataset; use one of {}",
                    known.join(", ")
                ));
            }
            let seconds = parse_duration(ttl).map_err(|e| format!("[retention] {dataset}: {e}"))?;
            Ok((dataset.clone(), seconds))
        })
        .collect()
}

pub fn run(ctx: &Context, cmd: RetentionCommand) -> Result<ExitCode, Failure> {
    match cmd {
        RetentionCommand::Run(a) => run_policies(ctx, a),
        RetentionCommand::Apply(a) => apply(ctx, a),
    }
}

/// The log opened for writing, with an engine deciding the `events` topic's commands.
struct Writer {
    topic: Arc<Topic>,
    engine: Engine,
    registry: Arc<Registry>,
}

fn open_writer(ctx: &Context) -> Result<(annals_events::Log, Writer), Failure> {
    let registry = Arc::new(super::registry(ctx)?);
    let log = ctx.open_log(LogConfig::default()).map_err(|e| match e {
        annals_events::LogError::Locked { .. } => Failure::usage(format!(
            "{e}; retention runs record their events through the command path: stop annals serve first"
        )),
        other => Failure::from(other),
    })?;
    let topic = log.topic("events")?;
    let engine = Engine::start(topic.clone(), registry.clone())
        .map_err(|e| Failure::failed(e.to_string()))?;
    Ok((
        log,
        Writer {
            topic,
            engine,
            registry,
        },
    ))
}

impl Writer {
    fn send(
        &self,
        tenant: &str,
        command: DomainCommand,
        command_id: String,
    ) -> Result<Option<(u32, u64)>, CommandError> {
        let meta = CommandMeta {
            command_id: Some(command_id),
            actor: "annals-cli".into(),
            occurred_at: annals_events::time::now_micros(),
            ..CommandMeta::default()
        };
        let outcome = self.engine.execute_blocking(
            Command::Retention {
                tenant: tenant.to_owned(),
                command,
            },
            meta,
        )?;
        Ok(outcome.events.first().map(|e| (e.partition, e.seq)))
    }
}

fn refused(tenant: &str, e: CommandError) -> Failure {
    if e.status() < 500 {
        Failure::usage(format!("tenant {tenant}: {e}"))
    } else {
        Failure::failed(format!("tenant {tenant}: {e}"))
    }
}

/// One tenant's part of a run, as listed now.
struct Part {
    run: RetentionRun,
    partition: u32,
    listed: Vec<retention::Listed>,
}

fn run_policies(ctx: &Context, args: RunArgs) -> Result<ExitCode, Failure> {
    let mut table = ctx.config.retention.clone();
    for t in &args.ttls {
        let (dataset, ttl) = t.split_once('=').ok_or_else(|| {
            Failure::usage(format!(
                "--ttl {t:?}: use DATASET=DURATION, e.g. --ttl signals=90d"
            ))
        })?;
        table.insert(dataset.trim().to_owned(), ttl.trim().to_owned());
    }
    let policies = policies(&table).map_err(|e| Failure::usage(e.replace("[retention] ", "")))?;
    if policies.is_empty() {
        return Err(Failure::usage(
            "no retention policy: set one in annals.toml (`[retention]` then `signals = \"90d\"`) or pass --ttl signals=90d",
        ));
    }
    let as_of = match &args.as_of {
        Some(t) => super::evidence::parse_time("as-of", t)?,
        None => annals_events::time::now_micros(),
    };
    let run_id = format!("ret-{}", uuid::Uuid::now_v7());
    let (log, w) = open_writer(ctx)?;
    let rt = runtime()?;
    let store = analytics_store(ctx)?;
    let parts = rt.block_on(async {
        // Everything in the log so far is in the read model before anything is listed.
        analytics::catch_up(&store, &w.topic, &w.registry, analytics::DEFAULT_BATCH)
            .await
            .map_err(analytics_failure)?;
        let positions = store.positions().await.map_err(analytics_failure)?;
        let tenants = if args.tenants.is_empty() {
            tenants_with_rows(&store).await?
        } else {
            args.tenants.clone()
        };
        let mut parts = Vec::new();
        for tenant in tenants {
            let partition = w.topic.partition_for(&tenant).id();
            let bound = positions.get(&partition).map_or(0, |p| p.next_seq);
            let datasets: Vec<RetentionCut> = policies
                .iter()
                .map(|(dataset, ttl)| RetentionCut {
                    dataset: dataset.clone(),
                    ttl_seconds: *ttl,
                    cutoff: as_of - ttl * 1_000_000,
                    rows: 0,
                })
                .collect();
            let mut run = RetentionRun {
                tenant: tenant.clone(),
                run_id: run_id.clone(),
                as_of,
                bound,
                datasets,
                rows: 0,
                digest: String::new(),
            };
            let listed = list(&store, &run, partition).await?;
            for cut in &mut run.datasets {
                cut.rows = listed.iter().filter(|l| l.dataset == cut.dataset).count() as u64;
            }
            run.rows = listed.len() as u64;
            run.digest = retention::digest(&listed);
            parts.push(Part {
                run,
                partition,
                listed,
            });
        }
        Ok::<_, Failure>(parts)
    })?;
    if parts.is_empty() {
        return Err(Failure::usage(
            "no tenant has analytics rows yet; nothing to review",
        ));
    }
    for p in &parts {
        let tenant = &p.run.tenant;
        w.send(
            tenant,
            DomainCommand::ReviewRetention(p.run.clone()),
            format!("retention-review/{run_id}"),
        )
        .map_err(|e| refused(tenant, e))?;
    }
    if let Some(path) = &args.out {
        write_listing(path, &parts)?;
    }
    if !args.dry_run {
        apply_parts(&w, &run_id, &parts)?;
    }
    finish(ctx, log, w, &rt, &store, &parts, !args.dry_run)?;
    report(ctx, &run_id, &parts, args.dry_run);
    Ok(ExitCode::SUCCESS)
}

fn apply(ctx: &Context, args: ApplyArgs) -> Result<ExitCode, Failure> {
    let (log, w) = open_writer(ctx)?;
    let reviews = reviews_of(&w.topic, &w.registry, &args.run_id, &args.tenants)?;
    if reviews.is_empty() {
        return Err(Failure::usage(format!(
            "no dry run `{}` in the log{}; `annals retention run --dry-run` prints the run id",
            args.run_id,
            if args.tenants.is_empty() {
                String::new()
            } else {
                format!(" for tenant(s) {}", args.tenants.join(", "))
            }
        )));
    }
    let rt = runtime()?;
    let store = analytics_store(ctx)?;
    let parts = rt.block_on(async {
        analytics::catch_up(&store, &w.topic, &w.registry, analytics::DEFAULT_BATCH)
            .await
            .map_err(analytics_failure)?;
        let mut parts = Vec::new();
        for (run, partition) in reviews {
            let listed = list(&store, &run, partition).await?;
            parts.push(Part {
                run,
                partition,
                listed,
            });
        }
        Ok::<_, Failure>(parts)
    })?;
    let recorded = apply_parts(&w, &args.run_id, &parts)?;
    finish(ctx, log, w, &rt, &store, &parts, recorded > 0)?;
    if recorded == 0 {
        if ctx.json {
            super::print_json(&serde_json::json!({
                "run_id": args.run_id, "already_applied": true, "rows": 0,
            }));
        } else {
            println!(
                "retention run {} was already applied; nothing more to remove",
                args.run_id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    report(ctx, &args.run_id, &parts, false);
    Ok(ExitCode::SUCCESS)
}

/// Sends `ApplyRetention` for each tenant's part with the digest of the rows listed now (the
/// aggregate refuses it unless that is the reviewed digest); how many were recorded (the others
/// had been applied before).
fn apply_parts(w: &Writer, run_id: &str, parts: &[Part]) -> Result<usize, Failure> {
    let mut recorded = 0;
    for p in parts {
        let tenant = &p.run.tenant;
        let written = w
            .send(
                tenant,
                DomainCommand::ApplyRetention {
                    run_id: run_id.to_owned(),
                    digest: retention::digest(&p.listed),
                },
                format!("retention-apply/{run_id}"),
            )
            .map_err(|e| refused(tenant, e))?;
        recorded += usize::from(written.is_some());
    }
    Ok(recorded)
}

/// The rows a run's datasets match in the store.
async fn list(
    store: &Analytics,
    run: &RetentionRun,
    partition: u32,
) -> Result<Vec<retention::Listed>, Failure> {
    // The run's event will come after `bound`, so its own seq never narrows the list.
    let deletions = retention::Deletion::of_run(run, partition, u64::MAX);
    retention::list(store, &deletions)
        .await
        .map_err(analytics_failure)
}

/// Tenants with rows in the analytics `events` table (not annals' own, like `_audit`).
async fn tenants_with_rows(store: &Analytics) -> Result<Vec<String>, Failure> {
    let text = store
        .query(
            "SELECT DISTINCT tenant FROM events ORDER BY tenant",
            analytics::Format::Json,
        )
        .await
        .map_err(analytics_failure)?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| Failure::failed(format!("unreadable tenant list: {e}")))?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("tenant")?.as_str().map(str::to_owned))
        .filter(|t| !t.starts_with('_'))
        .collect())
}

/// The dry runs recorded with `run_id` (of `tenants` only, if any are named), with their
/// partition.
fn reviews_of(
    topic: &Topic,
    registry: &Registry,
    run_id: &str,
    tenants: &[String],
) -> Result<Vec<(RetentionRun, u32)>, Failure> {
    let partitions: Vec<u32> = if tenants.is_empty() {
        (0..topic.partitions().len() as u32).collect()
    } else {
        let mut p: Vec<u32> = tenants
            .iter()
            .map(|t| topic.partition_for(t).id())
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let mut out = Vec::new();
    for id in partitions {
        let partition = topic
            .partitions()
            .get(id as usize)
            .ok_or_else(|| Failure::failed(format!("no partition {id}")))?;
        let mut reader = partition.reader(0);
        while let Some(e) = reader.next()? {
            if e.event_type != "tenancy.RetentionReviewed"
                || !e.stream.starts_with(&retention_stream(""))
                || (!tenants.is_empty() && !tenants.contains(&e.tenant))
            {
                continue;
            }
            let payload = registry.decode_json(e.schema_id, &e.payload)?;
            let Some(Ok(RetentionEvent::RetentionReviewed(run))) =
                RetentionEvent::from_json(&e.event_type, payload)
            else {
                return Err(Failure::failed(format!(
                    "partition {} seq {}: a RetentionReviewed event that does not decode",
                    e.partition, e.seq
                )));
            };
            if run.run_id == run_id {
                out.push((run, e.partition));
            }
        }
    }
    Ok(out)
}

/// Brings the read models up to date (an applied run removes its rows there) and, after a live
/// run, checks that the runs match nothing any more.
fn finish(
    ctx: &Context,
    log: annals_events::Log,
    w: Writer,
    rt: &tokio::runtime::Runtime,
    store: &Analytics,
    parts: &[Part],
    live: bool,
) -> Result<(), Failure> {
    let Writer {
        topic,
        engine,
        registry,
    } = w;
    drop(engine);
    let remaining = rt.block_on(async {
        run_all(ctx, &topic, &registry, None).await?;
        let mut remaining = 0;
        if live {
            for p in parts {
                remaining += list(store, &p.run, p.partition).await?.len();
            }
        }
        Ok::<_, Failure>(remaining)
    });
    drop(topic);
    drop(log);
    match remaining? {
        0 => Ok(()),
        n => Err(Failure::failed(format!(
            "{n} rows still match the applied run after the read model caught up; see `annals projections status`"
        ))),
    }
}

fn write_listing(path: &std::path::Path, parts: &[Part]) -> Result<(), Failure> {
    let doc: Vec<serde_json::Value> = parts
        .iter()
        .map(|p| {
            serde_json::json!({
                "tenant": p.run.tenant,
                "run_id": p.run.run_id,
                "as_of": format_micros(p.run.as_of),
                "log_partition": p.partition,
                "bound": p.run.bound,
                "datasets": p.run.datasets.iter().map(|c| serde_json::json!({
                    "dataset": c.dataset,
                    "ttl_seconds": c.ttl_seconds,
                    "cutoff": format_micros(c.cutoff),
                    "rows": c.rows,
                })).collect::<Vec<_>>(),
                "digest": p.run.digest,
                "rows": p.listed.iter().map(|l| serde_json::json!({
                    "dataset": l.dataset,
                    "log_partition": l.log_partition,
                    "seq": l.seq,
                    "time": format_micros(l.time),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&doc).expect("serialisable");
    std::fs::write(path, text + "\n")
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))
}

fn report(ctx: &Context, run_id: &str, parts: &[Part], dry_run: bool) {
    let total: usize = parts.iter().map(|p| p.listed.len()).sum();
    if ctx.json {
        super::print_json(&serde_json::json!({
            "run_id": run_id,
            "dry_run": dry_run,
            "rows": total,
            "tenants": parts.iter().map(|p| serde_json::json!({
                "tenant": p.run.tenant,
                "bound": p.run.bound,
                "digest": retention::digest(&p.listed),
                "datasets": p.run.datasets.iter().map(|c| serde_json::json!({
                    "dataset": c.dataset,
                    "ttl_seconds": c.ttl_seconds,
                    "cutoff": format_micros(c.cutoff),
                    "rows": p.listed.iter().filter(|l| l.dataset == c.dataset).count(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    println!(
        "retention run {run_id}: {}",
        if dry_run {
            "dry run, nothing removed"
        } else {
            "applied"
        }
    );
    println!(
        "  {:<20} {:<18} {:>10} {:<27} {:>10}",
        "tenant", "dataset", "ttl", "cutoff", "rows"
    );
    for p in parts {
        for c in &p.run.datasets {
            let rows = p.listed.iter().filter(|l| l.dataset == c.dataset).count();
            println!(
                "  {:<20} {:<18} {:>10} {:<27} {:>10}",
                p.run.tenant,
                c.dataset,
                human_ttl(c.ttl_seconds),
                format_micros(c.cutoff),
                rows
            );
        }
    }
    if dry_run {
        println!(
            "  {total} rows would be removed (recorded as tenancy.RetentionReviewed); remove exactly these with: annals retention apply {run_id}"
        );
    } else {
        println!(
            "  {total} rows removed from the analytics read model (recorded as tenancy.RetentionApplied); the log keeps every event"
        );
    }
}
