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
    /// it), or a time (`2026-11-22T12:00:00Z`: the events the log had recorded before then —
    /// `recorded_at`, the log's own clock, not when the events say they happened).
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
    /// Write the whole state (JSON) here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "events")]
    topic: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let log = Log::open_read_only(&ctx.data_dir)?;
    let registry = Registry::builtin()?;
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
        "{} events applied in {:.3} s ({:.0} events/s) into {} aggregate(s); stopped at {}",
        r.events_applied,
        r.seconds,
        r.events_applied as f64 / r.seconds.max(1e-9),
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
                "--until {text:?} is not `head`, a seq or a time like 2026-01-01T12:00:00Z"
            ))
        })
}
