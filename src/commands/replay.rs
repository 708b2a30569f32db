//! `annals replay`: aggregate state as of a bound, with its digest.

use std::path::PathBuf;
use std::process::ExitCode;

use annals_events::Log;
use annals_replay::{Replay, ReplayError, Until};
use annals_schemas::Registry;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// `head`, a seq of one partition (with --partition or --tenant: events up to and including
    /// it), a time (`2026-11-22T12:00:00Z`: the events the log had recorded before then —
    /// `recorded_at`, the log's own clock, not when the events say they happened), or a signed
    /// checkpoint (`checkpoint:events/3/1200` or `checkpoint:EVENT_ID`: the events of its
    /// partition it covers).
    #[arg(long, default_value = "head")]
    until: String,
    /// The partition a seq bound refers to.
    #[arg(long)]
    partition: Option<u32>,
    /// Only this tenant's aggregates.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this aggregate (its stream, e.g. `billing.Invoice/acme/INV-7`).
    #[arg(long)]
    aggregate: Option<String>,
    /// Replay into this read model (`current_state`) instead of the aggregates: its rows as of
    /// the bound and their digest, which at `head` equals `annals projections digest`'s.
    #[arg(long)]
    projection: Option<String>,
    /// Write the whole state (JSON) here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "events")]
    topic: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let log = ctx.open_log_read_only()?;
    let registry = super::registry(ctx)?;
    let tenant = args.tenant.clone().or_else(|| {
        args.aggregate
            .as_deref()
            .and_then(annals_replay::stream_tenant)
            .map(str::to_owned)
    });
    let until = parse_until(
        &args.until,
        args.partition,
        tenant.as_deref(),
        &log,
        &args.topic,
    )?;
    if let Some(name) = &args.projection {
        return replay_projection(ctx, &args, name, &log, &registry, until, tenant.as_deref());
    }
    let what = Replay {
        topic: args.topic.clone(),
        until,
        tenant,
        stream: args.aggregate.clone(),
    };
    let r = annals_replay::replay(&log, &registry, &what).map_err(|e| match e {
        ReplayError::Usage(m) => Failure::usage(m),
        other => Failure::failed(other.to_string()),
    })?;
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&r).expect("serialisable");
        std::fs::write(path, text)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if ctx.json {
        super::print_json(&r);
        return Ok(ExitCode::SUCCESS);
    }
    println!("digest {}", r.digest);
    println!(
        "{} events applied in {:.3} s ({:.0} events/s; {:.3} s with the snapshot and digest) into {} aggregate(s); stopped at {}",
        r.events_applied,
        r.apply_seconds,
        r.events_applied as f64 / r.apply_seconds.max(1e-9),
        r.seconds,
        r.aggregates.len(),
        r.positions
            .iter()
            .map(|(p, s)| format!("{p}:{s}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (stream, v) in r.aggregates.iter().take(20) {
        println!("  {stream}  v{}", v["version"]);
    }
    if r.aggregates.len() > 20 {
        println!(
            "  … {} more (use --out FILE or --json for all)",
            r.aggregates.len() - 20
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Replays the log into a scratch copy of a read model up to the bound and prints the digest
/// of its rows (only the tenant's, with `--tenant`).
fn replay_projection(
    ctx: &Context,
    args: &Args,
    name: &str,
    log: &Log,
    registry: &Registry,
    until: Until,
    tenant: Option<&str>,
) -> Result<ExitCode, Failure> {
    use annals_projections::{Backend, CurrentState, Store};
    if name != CurrentState::NAME {
        return Err(Failure::usage(format!(
            "replay --projection supports `{}` (the analytics tables are append-only copies of the events; rebuild them with `annals projections rebuild analytics`)",
            CurrentState::NAME
        )));
    }
    if args.aggregate.is_some() {
        return Err(Failure::usage(
            "--aggregate and --projection do not go together: a read model's rows span aggregates",
        ));
    }
    let topic = log.topic(&args.topic)?;
    let mut ends = std::collections::BTreeMap::new();
    for p in topic.partitions() {
        let end = match until {
            Until::Head => p.head().next_seq,
            Until::Seq { partition, seq } if partition == p.id() => {
                (seq + 1).min(p.head().next_seq)
            }
            Until::Seq { .. } => continue,
            Until::Time(t) => p.seq_at_time(t)?,
        };
        ends.insert(p.id(), end);
    }
    let scratch = std::env::temp_dir().join(format!("annals-replay-{}.sqlite", std::process::id()));
    std::fs::remove_file(&scratch).ok();
    let rt = super::projections::runtime()?;
    let result = rt.block_on(async {
        let store = Store::open(&Backend::Sqlite {
            path: scratch.clone(),
        })
        .await
        .map_err(|e| Failure::failed(e.to_string()))?;
        let done = annals_projections::catch_up_to(
            &store,
            &CurrentState,
            &topic,
            registry,
            annals_projections::DEFAULT_BATCH,
            &ends,
        )
        .await
        .map_err(|e| Failure::failed(e.to_string()));
        let rows = annals_projections::dump(&store, &CurrentState)
            .await
            .map_err(|e| Failure::failed(e.to_string()));
        store.close().await;
        Ok::<_, Failure>((done?, rows?))
    });
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(format!("{}{suffix}", scratch.display())).ok();
    }
    let (done, rows) = result?;
    let rows = match tenant {
        Some(t) => annals_projections::tenant_rows(rows, t),
        None => rows,
    };
    let digest = annals_projections::digest_rows(&rows);
    let doc = serde_json::json!({
        "projection": name,
        "digest": digest,
        "positions": ends,
        "events": done.events,
        "applied": done.applied,
        "seconds": done.seconds,
        "rows": rows,
    });
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&doc).expect("serialisable");
        std::fs::write(path, text)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if ctx.json {
        super::print_json(&doc);
    } else {
        println!("digest {digest}");
        println!(
            "{name}: {} events read ({} applied) in {:.3} s; stopped at {}",
            done.events,
            done.applied,
            done.seconds,
            ends.iter()
                .map(|(p, s)| format!("{p}:{s}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (table, r) in &rows {
            println!("  {table}: {} rows", r.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_until(
    text: &str,
    partition: Option<u32>,
    tenant: Option<&str>,
    log: &Log,
    topic: &str,
) -> Result<Until, Failure> {
    if text == "head" {
        return Ok(Until::Head);
    }
    if let Some(reference) = text.strip_prefix("checkpoint:") {
        let r: annals_audit::prove::CheckpointRef = reference
            .parse()
            .map_err(|e: annals_audit::AuditError| Failure::usage(e.to_string()))?;
        let registry = Registry::builtin()?;
        let b = annals_audit::prove::checkpoint_bound(log, &registry, &r)
            .map_err(|e| Failure::usage(e.to_string()))?;
        if b.topic != topic {
            return Err(Failure::usage(format!(
                "checkpoint {reference} is of topic {}, not {topic} (--topic)",
                b.topic
            )));
        }
        if b.tree_size == 0 {
            return Err(Failure::usage(format!(
                "checkpoint {reference} covers no event"
            )));
        }
        return Ok(Until::Seq {
            partition: b.partition,
            seq: b.tree_size - 1,
        });
    }
    if let Ok(seq) = text.parse::<u64>() {
        let partition = match (partition, tenant) {
            (Some(p), _) => p,
            (None, Some(t)) => log.topic(topic)?.partition_for(t).id(),
            (None, None) => {
                return Err(Failure::usage(
                    "a seq bound needs --partition P (or --tenant T, whose partition it is)",
                ));
            }
        };
        return Ok(Until::Seq { partition, seq });
    }
    annals_events::time::parse_rfc3339(text)
        .map(Until::Time)
        .ok_or_else(|| {
            Failure::usage(format!(
                "--until {text:?} is not `head`, a seq, a time like 2026-01-01T12:00:00Z or checkpoint:TOPIC/PARTITION/TREE_SIZE"
            ))
        })
}
