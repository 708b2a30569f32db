//! `annals demo`: the main job on the embedded default. Generates the golden dataset into a
//! fresh data dir through the log's partition writers, then verifies the whole log.

use std::process::ExitCode;
use std::time::Instant;

use annals_domain::golden::{self, Spec};
use annals_events::{Log, LogConfig, NewEvent, partitioner};
use annals_schemas::Registry;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Tenants to provision.
    #[arg(long, default_value_t = 10)]
    tenants: u32,
    /// Signals per tenant per day.
    #[arg(long, default_value_t = 10_000)]
    signals_per_day: u32,
    /// Days of signals.
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Seed of the generator: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const BATCH: usize = 1000;

#[derive(serde::Serialize)]
struct Summary {
    data_dir: String,
    tenants: u32,
    events: u64,
    partitions: u32,
    seconds: f64,
    events_per_s: f64,
    verified: bool,
    verify_mb_per_s: f64,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    if args.tenants == 0 || args.tenants > 100_000 {
        return Err(Failure::usage(format!(
            "--tenants {} is out of range: use 1 to 100000",
            args.tenants
        )));
    }
    if args.days == 0 || args.days > 366 {
        return Err(Failure::usage(format!(
            "--days {} is out of range: use 1 to 366",
            args.days
        )));
    }
    let spec = Spec {
        tenants: args.tenants,
        signals_per_day: args.signals_per_day,
        days: args.days,
        seed: args.seed,
    };
    if ctx.data_dir.join("log").join("events").exists() {
        return Err(Failure::usage(format!(
            "{} already holds a log; the demo writes into a fresh data dir: pass --data-dir NEW_DIR or delete {}",
            ctx.data_dir.display(),
            ctx.data_dir.display()
        )));
    }
    let registry = Registry::builtin()?;
    let partitions = ctx.config.log.partitions;
    let log = Log::open(
        &ctx.data_dir,
        LogConfig {
            segment_bytes: ctx.config.log.segment_bytes,
            ..LogConfig::default()
        },
    )?;
    let topic = log.create_topic("events", partitions)?;
    if !ctx.json {
        println!(
            "annals demo: {} tenants x {} signals/day x {} day(s), seed {} -> {} events into {} partitions of {}",
            spec.tenants,
            spec.signals_per_day,
            spec.days,
            spec.seed,
            spec.total_events(),
            partitions,
            ctx.data_dir.display()
        );
    }

    // Tenants grouped by the partition that owns them; each partition is fed by its own thread.
    let mut owned: Vec<Vec<u32>> = vec![Vec::new(); partitions as usize];
    for t in 0..spec.tenants {
        owned[partitioner::partition_for(&spec.tenant_id(t), partitions) as usize].push(t);
    }
    let started = Instant::now();
    let results: Vec<Result<u64, Failure>> = std::thread::scope(|s| {
        let handles: Vec<_> = owned
            .iter()
            .enumerate()
            .map(|(p, tenants)| {
                let (registry, topic, spec) = (&registry, &topic, &spec);
                s.spawn(move || -> Result<u64, Failure> {
                    let part = topic.partition(p as u32)?;
                    let mut written = 0u64;
                    let mut batch: Vec<NewEvent> = Vec::with_capacity(BATCH);
                    for &t in tenants {
                        for e in golden::tenant_events(spec, t) {
                            batch.push(e.encode(registry)?);
                            if batch.len() == BATCH {
                                written +=
                                    part.append_blocking(std::mem::take(&mut batch))?.len() as u64;
                            }
                        }
                    }
                    written += part.append_blocking(batch)?.len() as u64;
                    Ok(written)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::failed("a demo writer thread panicked")))
            })
            .collect()
    });
    let mut events = 0;
    for r in results {
        events += r?;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(topic);
    drop(log);

    let report = annals_events::verify::verify(&ctx.data_dir, 0)?;
    let summary = Summary {
        data_dir: ctx.data_dir.display().to_string(),
        tenants: spec.tenants,
        events,
        partitions,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        verified: report.ok,
        verify_mb_per_s: report.mb_per_s,
    };
    if ctx.json {
        super::print_json(&summary);
    } else {
        println!(
            "wrote {events} events in {seconds:.2} s ({:.0} events/s, each batch fsynced before it was acknowledged)",
            summary.events_per_s
        );
        println!(
            "verify: {} - {} events, {:.1} MB, chain and hashes checked at {:.0} MB/s",
            if report.ok { "OK" } else { "FAILED" },
            report.events,
            report.bytes as f64 / 1e6,
            report.mb_per_s
        );
        println!(
            "next: annals --data-dir {0} log stat | annals --data-dir {0} log tail | annals --data-dir {0} verify",
            ctx.data_dir.display()
        );
    }
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::failed(format!(
            "verification of the demo log failed: {}",
            report.faults[0]
        )))
    }
}
