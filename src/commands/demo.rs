//! `annals demo`: the main job on the embedded default. Sends the golden dataset through the
//! command path — every command checked by its aggregate, every accepted one durable events —
//! then verifies the whole log. Run again on the same data dir, it adds nothing: every command
//! is idempotent by its key.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use annals_domain::golden::{self, Spec};
use annals_domain::ingest::{IngestCommand, SignalInput};
use annals_events::LogConfig;
use annals_processors::{Command, CommandMeta, Engine, Outcome, Written};
use annals_schemas::Registry;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Tenants to provision.
    #[arg(long, default_value_t = 10)]
    tenants: u32,
    /// Distinct signals per tenant per day (about 2% more are sent as client retries).
    #[arg(long, default_value_t = 10_000)]
    signals_per_day: u32,
    /// Days of signals.
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Seed of the generator: the same seed gives the same commands.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Signals per ingest command (one source of one tenant).
const SIGNALS_PER_COMMAND: usize = 500;
/// Commands one sender keeps in flight.
const IN_FLIGHT: usize = 32;

#[derive(Default, serde::Serialize)]
struct Summary {
    /// Events of every `billing.InvoiceIssued`, to read their totals back from the log.
    #[serde(skip)]
    issued: Vec<Written>,
    data_dir: String,
    tenants: u32,
    commands: u64,
    refused: u64,
    events_written: u64,
    events_by_type: BTreeMap<std::borrow::Cow<'static, str>, u64>,
    duplicates_refused: u64,
    /// Issued invoices: currency → (count, total in minor units), read back from the log.
    invoices_issued: BTreeMap<String, (u64, i64)>,
    seconds: f64,
    events_per_s: f64,
    log_events: u64,
    checkpoints_signed: u64,
    verified: bool,
    verify_mb_per_s: f64,
    /// Read models caught up with the log: projection → (events applied, seconds, where).
    projections: BTreeMap<String, (u64, f64, String)>,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        self.commands += 1;
        self.events_written += outcome.events.len() as u64;
        self.duplicates_refused += outcome.duplicates;
        for e in &outcome.events {
            *self.events_by_type.entry(e.event_type.clone()).or_default() += 1;
            if e.event_type == "billing.InvoiceIssued" {
                self.issued.push(e.clone());
            }
        }
    }
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
    let registry = Arc::new(super::registry(ctx)?);
    let log = ctx.open_log(LogConfig {
        segment_bytes: ctx.config.log.segment_bytes,
        ..LogConfig::default()
    })?;
    let topic = log.create_topic("events", ctx.config.log.partitions)?;
    let before: u64 = topic.partitions().iter().map(|p| p.head().next_seq).sum();
    let engine = Engine::start(topic.clone(), registry.clone())
        .map_err(|e| Failure::failed(e.to_string()))?;
    if !ctx.json {
        println!(
            "annals demo: {} tenants, {} signals/day for {} day(s), seed {} -> {} ({} partitions, {} events already there)",
            spec.tenants,
            spec.signals_per_day,
            spec.days,
            spec.seed,
            ctx.data_dir.display(),
            topic.partitions().len(),
            before
        );
    }
    let started = Instant::now();
    let summary = Mutex::new(Summary::default());
    // Command ids carry the dataset's options: run again with the same options, every command is
    // recognised; with others, they are new commands, checked against what is there.
    let run_id = format!(
        "demo-s{}-t{}-n{}-d{}",
        spec.seed, spec.tenants, spec.signals_per_day, spec.days
    );
    let meta = |id: String, tenant: &str| CommandMeta {
        command_id: Some(format!("{run_id}/{id}")),
        actor: "demo".into(),
        correlation_id: Some(format!("demo-{}-{tenant}", spec.seed)),
        expected_version: None,
        occurred_at: golden::START_MICROS,
    };

    // 1. Tenants.
    for t in 0..spec.tenants {
        let tenant = spec.tenant_id(t);
        let cmd = Command::Tenancy {
            tenant: tenant.clone(),
            command: golden::provision(&spec, t),
        };
        record(
            &summary,
            engine.execute_blocking(cmd, meta(format!("provision-{tenant}"), &tenant)),
        )?;
    }

    // 2. Signals, from a few sender threads, each keeping commands in flight.
    let sent = AtomicU64::new(0);
    let total = spec.signals() + spec.retries();
    let progress = std::io::stderr().is_terminal() && !ctx.json;
    let senders = 2.min(spec.tenants);
    std::thread::scope(|s| -> Result<(), Failure> {
        let handles: Vec<_> = (0..senders)
            .map(|k| {
                let (engine, summary, sent, meta, spec) = (&engine, &summary, &sent, &meta, &spec);
                s.spawn(move || -> Result<(), Failure> {
                    let mut pending = std::collections::VecDeque::new();
                    for t in (k..spec.tenants).step_by(senders as usize) {
                        let tenant = spec.tenant_id(t);
                        let mut batches: BTreeMap<&str, Vec<SignalInput>> = BTreeMap::new();
                        let mut n = 0u64;
                        let mut flush = |source: &str,
                                         signals: Vec<SignalInput>,
                                         n: &mut u64|
                         -> Result<(), Failure> {
                            let count = signals.len() as u64;
                            let cmd = Command::Ingest(IngestCommand::IngestSignals {
                                tenant: tenant.clone(),
                                source: source.to_owned(),
                                signals,
                            });
                            *n += 1;
                            let id = format!("ingest-{tenant}-{source}-{n}");
                            pending.push_back(
                                engine
                                    .submit_blocking(cmd, meta(id, &tenant))
                                    .map_err(|e| Failure::failed(e.to_string()))?,
                            );
                            if pending.len() >= IN_FLIGHT {
                                record(summary, pending.pop_front().expect("non-empty").wait())?;
                            }
                            let done = sent.fetch_add(count, Ordering::Relaxed) + count;
                            if progress && done % 20_000 < count {
                                eprint!(
                                    "\r  signals sent {done:>10} / {total} ({:.0}%)",
                                    done as f64 * 100.0 / total as f64
                                );
                            }
                            Ok(())
                        };
                        for (source, signal) in golden::signals(spec, t) {
                            let batch = batches.entry(source).or_default();
                            batch.push(signal);
                            if batch.len() == SIGNALS_PER_COMMAND {
                                let full = std::mem::take(batch);
                                flush(source, full, &mut n)?;
                            }
                        }
                        for (source, rest) in std::mem::take(&mut batches) {
                            if !rest.is_empty() {
                                flush(source, rest, &mut n)?;
                            }
                        }
                    }
                    for p in pending {
                        record(summary, p.wait())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| Err(Failure::failed("a demo sender thread panicked")))?;
        }
        Ok(())
    })?;
    if progress {
        eprintln!();
    }

    // 3. The tenants' business: budgets and usage, models rolled out, access policies and their
    // decisions, the month's invoices. A tenant's commands go to its one partition worker in
    // order, so they can all be in flight at once.
    let mut pending = Vec::new();
    for t in 0..spec.tenants {
        let tenant = spec.tenant_id(t);
        for (i, b) in golden::business(&spec, t).into_iter().enumerate() {
            let cmd = business_command(&tenant, b);
            pending.push(
                engine
                    .submit_blocking(cmd, meta(format!("business-{tenant}-{i}"), &tenant))
                    .map_err(|e| Failure::failed(e.to_string()))?,
            );
        }
    }
    for p in pending {
        record(&summary, p.wait())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let invoices_issued = invoice_totals(
        &summary.lock().expect("summary lock").issued,
        &topic,
        &registry,
    )?;
    // 4. Sign a checkpoint of every partition (its Merkle root), appended to the log itself, so
    // an auditor can get a proof for any event right away.
    let (key, _) =
        annals_audit::CheckpointKey::load_or_create(&annals_audit::default_key_path(&ctx.data_dir))
            .map_err(|e| Failure::failed(e.to_string()))?;
    let checkpoints = annals_audit::Checkpointer::new(&key, &registry)
        .checkpoint_topic(&log, "events")
        .map_err(|e| Failure::failed(e.to_string()))?
        .len() as u64;
    let log_events: u64 = topic.partitions().iter().map(|p| p.head().next_seq).sum();
    drop(engine);
    drop(topic);
    drop(log);

    let report = super::verify::chain_report(ctx, 0)?;
    let mut summary = summary.into_inner().expect("summary lock");
    // 5. Build the read models (current state and analytics) from the log, so applications and
    // analysts can query them right away.
    let log = ctx.open_log_read_only()?;
    let topic = log.topic("events")?;
    let rt = super::projections::runtime()?;
    let done = rt.block_on(super::projections::run_all(ctx, &topic, &registry, None))?;
    let (current, analytics) = rt.block_on(super::projections::status_all(ctx, &topic))?;
    for (name, d) in done {
        let location = if name == analytics.projection {
            format!("{} {}", analytics.backend, analytics.location)
        } else {
            format!("{} {}", current.backend.as_str(), current.location)
        };
        summary
            .projections
            .insert(name, (d.events, d.seconds, location));
    }
    summary.data_dir = ctx.data_dir.display().to_string();
    summary.tenants = spec.tenants;
    summary.seconds = seconds;
    summary.events_per_s = summary.events_written as f64 / seconds.max(1e-9);
    summary.log_events = log_events;
    summary.invoices_issued = invoices_issued;
    summary.checkpoints_signed = checkpoints;
    summary.verified = report.ok;
    summary.verify_mb_per_s = report.mb_per_s;
    if ctx.json {
        super::print_json(&summary);
    } else {
        print_summary(&summary, &report, ctx);
    }
    if !report.ok {
        return Err(Failure::failed(format!(
            "verification of the demo log failed: {}",
            report.faults[0]
        )));
    }
    if summary.refused > 0 {
        return Err(Failure::usage(format!(
            "{} demo commands were refused: {} holds a dataset made with other options; use a fresh --data-dir",
            summary.refused,
            ctx.data_dir.display()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn record(
    summary: &Mutex<Summary>,
    outcome: Result<Outcome, annals_processors::CommandError>,
) -> Result<(), Failure> {
    match outcome {
        Ok(o) => {
            summary.lock().expect("summary lock").add(&o);
            Ok(())
        }
        Err(e) if e.status() < 500 => {
            summary.lock().expect("summary lock").refused += 1;
            tracing::warn!(code = e.code(), error = %e, "a demo command was refused");
            Ok(())
        }
        Err(e) => Err(Failure::failed(format!("the command path failed: {e}"))),
    }
}

fn print_summary(s: &Summary, report: &annals_events::verify::VerifyReport, ctx: &Context) {
    println!(
        "{} commands in {:.2} s: {} new events ({:.0} events/s), each acknowledged only once durable",
        s.commands, s.seconds, s.events_written, s.events_per_s
    );
    for (t, n) in &s.events_by_type {
        println!("  {n:>10}  {t}");
    }
    if s.events_written == 0 {
        println!(
            "  nothing new: this data dir already held the dataset, and every command is recognised by its id or key"
        );
    }
    for (currency, (n, total)) in &s.invoices_issued {
        println!(
            "  invoices issued in {currency}: {n}, totalling {} {currency} (tax included)",
            major(*total)
        );
    }
    println!(
        "  {:>10}  duplicate signals refused (client retries; the dedupe key is tenant, source, signal_id, ts)",
        s.duplicates_refused
    );
    if s.refused > 0 {
        println!(
            "  {:>10}  commands refused (see the warnings above)",
            s.refused
        );
    }
    println!(
        "log: {} events; verify {}: CRC, seq, chain links and hashes of {:.1} MB checked at {:.0} MB/s",
        s.log_events,
        if report.ok { "OK" } else { "FAILED" },
        report.bytes as f64 / 1e6,
        report.mb_per_s
    );
    if s.checkpoints_signed > 0 {
        println!(
            "audit: {} signed checkpoint(s) of the partitions' Merkle roots appended to the log",
            s.checkpoints_signed
        );
    }
    for (name, (events, seconds, location)) in &s.projections {
        println!("read model {name}: {events} events applied in {seconds:.2} s → {location}");
    }
    let d = ctx.data_dir.display();
    println!("next:");
    println!(
        "  annals --data-dir {d} log stat                      topics, partitions, head hashes"
    );
    println!("  annals --data-dir {d} log tail -n 5                 the latest events, decoded");
    println!("  annals --data-dir {d} history billing.Invoice/tenant-000/INV-2026-01-000");
    println!(
        "  annals --data-dir {d} replay --tenant tenant-000           state rebuilt from the log, with its digest"
    );
    println!(
        "  annals --data-dir {d} verify                        the whole chain and every checkpoint"
    );
    println!(
        "  annals --data-dir {d} sql \"SELECT tenant, count(*) AS signals, round(avg(value), 2) AS avg_value FROM signals GROUP BY tenant ORDER BY tenant\""
    );
    println!(
        "  annals --data-dir {d} sql \"SELECT currency, sum(amount) FROM invoice_lines GROUP BY currency\""
    );
    println!(
        "  annals --data-dir {d} projections status           read models: position, lag, rows"
    );
    println!(
        "  annals --data-dir {d} prove EVENT_ID > proof.json && annals --data-dir {d} keys public --out key.pub"
    );
    println!(
        "  annals verify-proof proof.json --key key.pub        offline, with the public key alone"
    );
}

/// A golden business command, addressed to its tenant.
fn business_command(tenant: &str, b: golden::Business) -> Command {
    let tenant = tenant.to_owned();
    match b {
        golden::Business::Budget { month, command } => Command::Budget {
            tenant,
            month,
            command,
        },
        golden::Business::Invoice {
            invoice_id,
            command,
        } => Command::Invoice {
            tenant,
            invoice_id,
            command,
        },
        golden::Business::ModelVersion {
            model,
            version,
            command,
        } => Command::ModelVersion {
            tenant,
            model,
            version,
            command,
        },
        golden::Business::Deployment {
            model,
            environment,
            command,
        } => Command::Deployment {
            tenant,
            model,
            environment,
            command,
        },
        golden::Business::Policy { policy_id, command } => Command::Policy {
            tenant,
            policy_id,
            command,
        },
        golden::Business::Contact {
            contact_id,
            command,
        } => Command::Contact {
            tenant,
            contact_id,
            command,
        },
    }
}

/// Reads each issued invoice back from the log: currency → (count, total in minor units).
fn invoice_totals(
    issued: &[Written],
    topic: &annals_events::Topic,
    registry: &Registry,
) -> Result<BTreeMap<String, (u64, i64)>, Failure> {
    let mut totals: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for w in issued {
        let env = topic
            .partition(w.partition)?
            .reader(w.seq)
            .next()?
            .ok_or_else(|| {
                Failure::failed(format!(
                    "issued invoice at partition {} seq {} is not in the log",
                    w.partition, w.seq
                ))
            })?;
        let payload = registry.decode_json(env.schema_id, &env.payload)?;
        let currency = payload["currency"].as_str().unwrap_or("?").to_owned();
        let total = payload["total_minor"].as_i64().unwrap_or(0);
        let entry = totals.entry(currency).or_default();
        entry.0 += 1;
        entry.1 += total;
    }
    Ok(totals)
}

/// Minor units as major units with two decimals (every currency of the dataset has two).
fn major(minor: i64) -> String {
    format!(
        "{}{}.{:02}",
        if minor < 0 { "-" } else { "" },
        (minor / 100).abs(),
        (minor % 100).abs()
    )
}
