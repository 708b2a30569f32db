//! `annals bench log`: durable append, read and verify throughput of the embedded log, printed
//! beside this machine's single-core SHA-256 speed (what verify is bounded by).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use annals_events::{Log, LogConfig, NewEvent};
use sha2::{Digest, Sha256};

use crate::{Context, Failure};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Appends (fsynced in group commits), reads and verifies a fresh log.
    Log(LogArgs),
    /// Signals through the in-process command path (aggregates, dedupe, schemas, durable log).
    Commands(CommandArgs),
    /// Signals through the HTTP API on loopback (the `annals serve` stack in this process).
    Serve(super::bench_serve::ServeArgs),
    /// Read models: rebuild speed into each store, and lag behind a steady write load.
    Projections(super::bench_projections::Args),
    /// Audit: inclusion proofs generated and verified, signatures, full verify, replay.
    Proofs(super::bench_proofs::Args),
    /// The log on Kafka: the command path and replay beside raw rdkafka produce and consume
    /// of the same records to the same broker.
    Kafka(super::bench_kafka::Args),
}

#[derive(clap::Args)]
pub struct CommandArgs {
    /// Signals to ingest in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) signals: u64,
    /// Tenants (spread over the partitions).
    #[arg(long, default_value_t = 8)]
    pub(super) tenants: u32,
    /// Signals per ingest command.
    #[arg(long, default_value_t = 1000)]
    pub(super) batch: usize,
    /// Partitions of the scratch log.
    #[arg(long, default_value_t = 4)]
    pub(super) partitions: u32,
    /// Folder for the scratch log (on the disk to measure); removed afterwards.
    #[arg(long)]
    pub(super) dir: Option<PathBuf>,
}

#[derive(serde::Serialize)]
pub(super) struct CommandFigures {
    pub(super) signals: u64,
    pub(super) commands: u64,
    pub(super) tenants: u32,
    pub(super) partitions: u32,
    pub(super) batch: usize,
    pub(super) seconds: f64,
    pub(super) signals_per_s: f64,
    pub(super) commands_per_s: f64,
    pub(super) latency_p50_ms: f64,
    pub(super) latency_p99_ms: f64,
}

#[derive(clap::Args)]
pub struct LogArgs {
    /// Events to append in all.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Partitions, each with its own writer (and one appending thread).
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Events per append call.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Folder for the scratch log (on the disk to measure); removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Figures {
    events: u64,
    partitions: u32,
    batch: usize,
    payload_bytes: usize,
    log_bytes: u64,
    append_events_per_s: f64,
    append_mb_per_s: f64,
    /// Append calls (each acknowledged after an fsync; group commit may share one fsync).
    append_calls: u64,
    read_events_per_s: f64,
    verify_mb_per_s: f64,
    verify_threads: usize,
    verify_1_thread_mb_per_s: f64,
    sha256_1_core_mb_per_s: f64,
    verify_per_core_vs_sha256: f64,
    /// Bytes of SHA-256 blocks verify hashes per byte of log it reads.
    sha256_bytes_per_log_byte: f64,
    /// Verify's hashing rate per core (SHA-256 block bytes/s) over `sha256_1_core_mb_per_s`.
    verify_hashing_per_core_vs_sha256: f64,
}

pub fn run(ctx: &Context, cmd: BenchCommand) -> Result<ExitCode, Failure> {
    let args = match cmd {
        BenchCommand::Log(args) => args,
        BenchCommand::Commands(args) => return run_commands(ctx, args),
        BenchCommand::Serve(args) => return super::bench_serve::run(ctx, args),
        BenchCommand::Projections(args) => return super::bench_projections::run(ctx, args),
        BenchCommand::Proofs(args) => return super::bench_proofs::run(ctx, args),
        BenchCommand::Kafka(args) => return super::bench_kafka::run(ctx, args),
    };
    if args.partitions == 0 || args.batch == 0 || args.events == 0 {
        return Err(Failure::usage(
            "--events, --partitions and --batch must be at least 1",
        ));
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempdir_in(&parent)?;
    let result = measure(&scratch, &args);
    std::fs::remove_dir_all(&scratch).ok();
    let f = result?;
    if ctx.json {
        super::print_json(&f);
    } else {
        println!(
            "annals bench log: {} events x {} B payload, {} partition(s), batches of {}",
            f.events, f.payload_bytes, f.partitions, f.batch
        );
        println!(
            "  durable append : {:>12.0} events/s  {:>8.1} MB/s  ({} append calls)",
            f.append_events_per_s, f.append_mb_per_s, f.append_calls
        );
        println!("  read           : {:>12.0} events/s", f.read_events_per_s);
        println!(
            "  verify         : {:>12.1} MB/s with {} thread(s); {:.1} MB/s with 1 (median of 5 runs each)",
            f.verify_mb_per_s, f.verify_threads, f.verify_1_thread_mb_per_s
        );
        println!(
            "  sha-256, 1 core: {:>12.1} MB/s (8 KiB blocks); verify per core = {:.0}% of it",
            f.sha256_1_core_mb_per_s,
            f.verify_per_core_vs_sha256 * 100.0
        );
        println!(
            "  sha-256 work   : {:>12.2} bytes of SHA-256 blocks per byte of log (each event's chain hash): verify can reach at most {:.0}% of 1 core's SHA-256 per core; it hashes at {:.0}% of it",
            f.sha256_bytes_per_log_byte,
            100.0 / f.sha256_bytes_per_log_byte,
            f.verify_hashing_per_core_vs_sha256 * 100.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn measure(dir: &std::path::Path, args: &LogArgs) -> Result<Figures, Failure> {
    let log = Log::open(dir, LogConfig::default())?;
    let topic = log.create_topic("bench", args.partitions)?;
    let per_partition = args.events / u64::from(args.partitions);
    let events = per_partition * u64::from(args.partitions);
    let payload: Vec<u8> = (0..args.payload_bytes)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let template = NewEvent {
        event_id: uuid::Uuid::nil(),
        tenant: "bench-tenant".into(),
        stream: "bench.Stream/1".into(),
        stream_version: 1,
        event_type: "ingest.SignalIngested".into(),
        schema_id: 7,
        occurred_at: annals_events::time::now_micros(),
        actor: "bench".into(),
        causation_id: None,
        correlation_id: None,
        payload,
    };

    let started = Instant::now();
    let append_calls: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = topic
            .partitions()
            .iter()
            .map(|p| {
                let template = &template;
                s.spawn(move || -> Result<u64, Failure> {
                    let mut left = per_partition;
                    let mut calls = 0;
                    let mut version = 1;
                    // Two batches in flight: the next is built while the last is written.
                    let mut in_flight: Option<annals_events::log::PendingAppend> = None;
                    while left > 0 {
                        let n = (args.batch as u64).min(left);
                        let batch: Vec<NewEvent> = (0..n)
                            .map(|_| {
                                let mut e = template.clone();
                                e.event_id = uuid::Uuid::now_v7();
                                e.stream_version = version;
                                version += 1;
                                e
                            })
                            .collect();
                        let pending = p.submit_blocking(batch)?;
                        if let Some(prev) = in_flight.replace(pending) {
                            prev.wait()?;
                        }
                        left -= n;
                        calls += 1;
                    }
                    if let Some(last) = in_flight {
                        last.wait()?;
                    }
                    Ok(calls)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::failed("a bench thread panicked")))
            })
            .sum::<Result<u64, Failure>>()
    })?;
    let append_s = started.elapsed().as_secs_f64();
    let log_bytes: u64 = topic.partitions().iter().map(|p| p.head().bytes).sum();

    let started = Instant::now();
    let read: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = topic
            .partitions()
            .iter()
            .map(|p| {
                s.spawn(move || -> Result<u64, Failure> {
                    let mut r = p.reader(0);
                    let mut n = 0;
                    while r.next_ref()?.is_some() {
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::failed("a bench thread panicked")))
            })
            .sum::<Result<u64, Failure>>()
    })?;
    let read_s = started.elapsed().as_secs_f64();
    if read != events {
        return Err(Failure::failed(format!(
            "read back {read} events of {events} appended"
        )));
    }
    drop(topic);
    drop(log);

    let verify = |threads| {
        let report = annals_events::verify::verify(dir, threads)?;
        if !report.ok {
            return Err(Failure::failed("verify found a fault in the bench log"));
        }
        Ok(report)
    };
    let all = median_run(VERIFY_RUNS, || verify(0), |r| r.mb_per_s)?;
    let one = median_run(VERIFY_RUNS, || verify(1), |r| r.mb_per_s)?;
    let sha = sha256_speed();
    let blocks = sha256_blocks(&Log::open_read_only(dir)?, false)?;
    let (sha256_bytes_per_log_byte, verify_hashing_per_core_vs_sha256) =
        sha256_work(blocks, all.bytes, all.mb_per_s, all.threads, sha);
    Ok(Figures {
        events,
        partitions: args.partitions,
        batch: args.batch,
        payload_bytes: args.payload_bytes,
        log_bytes,
        append_events_per_s: events as f64 / append_s,
        append_mb_per_s: log_bytes as f64 / 1e6 / append_s,
        append_calls,
        read_events_per_s: read as f64 / read_s,
        verify_mb_per_s: all.mb_per_s,
        verify_threads: all.threads,
        verify_1_thread_mb_per_s: one.mb_per_s,
        sha256_1_core_mb_per_s: sha,
        verify_per_core_vs_sha256: (all.mb_per_s / all.threads as f64) / sha,
        sha256_bytes_per_log_byte,
        verify_hashing_per_core_vs_sha256,
    })
}

/// The SHA-256 blocks verify hashes for the events of `log`: per event its chain hash (the
/// prefix and the envelope without its hash), and with `merkle` (checkpoint roots) its Merkle
/// leaf (`0x00 ‖ hash`) and one interior node (`0x01 ‖ left ‖ right`) for every leaf of a
/// partition but its first.
pub(super) fn sha256_blocks(log: &Log, merkle: bool) -> Result<u64, Failure> {
    use annals_events::chain::{PREFIX_LEN, padded_blocks};
    let mut blocks = 0;
    let mut body = Vec::new();
    for topic in log.topics() {
        for part in topic.partitions() {
            let mut reader = part.reader(0);
            let mut events = 0u64;
            while let Some(e) = reader.next_ref()? {
                body.clear();
                e.encode_without_hash(&mut body);
                blocks += padded_blocks(PREFIX_LEN + body.len()) as u64;
                events += 1;
            }
            if merkle {
                blocks += events * padded_blocks(1 + 32) as u64
                    + events.saturating_sub(1) * padded_blocks(1 + 64) as u64;
            }
        }
    }
    Ok(blocks)
}

/// Verify's SHA-256 work, from the blocks it hashes ([`sha256_blocks`]) over the log bytes it
/// read at `mb_per_s` with `threads`: bytes of blocks per byte of log (its reciprocal is the
/// most verify can reach of `sha` per core), and the rate its hashing runs at per core as a
/// share of `sha`.
pub(super) fn sha256_work(
    blocks: u64,
    log_bytes: u64,
    mb_per_s: f64,
    threads: usize,
    sha: f64,
) -> (f64, f64) {
    let per_log_byte = (blocks * 64) as f64 / log_bytes.max(1) as f64;
    (per_log_byte, mb_per_s * per_log_byte / threads as f64 / sha)
}

/// Verify runs per figure: verify takes a fraction of a second, and one run on this shared
/// machine can be a third off; the median run is reported.
pub(super) const VERIFY_RUNS: usize = 5;

/// Runs `f` `n` times and returns the run of median `speed`.
pub(super) fn median_run<T>(
    n: usize,
    mut f: impl FnMut() -> Result<T, Failure>,
    speed: impl Fn(&T) -> f64,
) -> Result<T, Failure> {
    let mut runs = (0..n.max(1)).map(|_| f()).collect::<Result<Vec<T>, _>>()?;
    runs.sort_by(|a, b| speed(a).total_cmp(&speed(b)));
    Ok(runs.swap_remove(runs.len() / 2))
}

/// Single-core SHA-256 throughput over 8 KiB blocks, as `openssl speed sha256` measures it.
pub(super) fn sha256_speed() -> f64 {
    let block = [0x5au8; 8192];
    let started = Instant::now();
    let mut n = 0u64;
    let mut sink = [0u8; 32];
    while started.elapsed().as_secs_f64() < 1.0 {
        for _ in 0..256 {
            let d: [u8; 32] = Sha256::digest(block).into();
            sink[0] ^= d[0];
            n += 1;
        }
    }
    std::hint::black_box(sink);
    (n * 8192) as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// A fresh scratch folder under `parent` for a benchmark's log.
pub(super) fn tempdir_in(parent: &std::path::Path) -> Result<PathBuf, Failure> {
    let dir = parent.join(format!(
        "annals-bench-{}-{}",
        std::process::id(),
        annals_events::time::now_micros()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| {
        Failure::usage(format!(
            "cannot create a scratch folder in {}: {e}; pass --dir",
            parent.display()
        ))
    })?;
    Ok(dir)
}

fn run_commands(ctx: &Context, args: CommandArgs) -> Result<ExitCode, Failure> {
    if args.partitions == 0 || args.tenants == 0 || args.batch == 0 || args.signals == 0 {
        return Err(Failure::usage(
            "--signals, --tenants, --batch and --partitions must be at least 1",
        ));
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempdir_in(&parent)?;
    let result = measure_commands(&scratch, &args);
    std::fs::remove_dir_all(&scratch).ok();
    let f = result?;
    if ctx.json {
        super::print_json(&f);
    } else {
        println!(
            "annals bench commands: {} signals as {} ingest commands of {} ({} tenants, {} partitions)",
            f.signals, f.commands, f.batch, f.tenants, f.partitions
        );
        println!(
            "  command path   : {:>12.0} signals/s  {:>9.0} commands/s",
            f.signals_per_s, f.commands_per_s
        );
        println!(
            "  command latency: p50 {:.2} ms, p99 {:.2} ms (submit to durable outcome, 32 in flight per sender)",
            f.latency_p50_ms, f.latency_p99_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn measure_commands(dir: &std::path::Path, args: &CommandArgs) -> Result<CommandFigures, Failure> {
    let log = Log::open(dir, LogConfig::default())?;
    drive_commands(&log, args)
}

/// Sends `args.signals` signals as ingest commands through the command path on `log` (two
/// senders, 32 commands in flight each) and measures throughput and latency.
pub(super) fn drive_commands(log: &Log, args: &CommandArgs) -> Result<CommandFigures, Failure> {
    use annals_domain::tenancy::{TenantCommand, TenantLimits};
    use annals_processors::{Command, CommandMeta, Engine};

    let topic = log.create_topic("events", args.partitions)?;
    let registry = std::sync::Arc::new(annals_schemas::Registry::builtin()?);
    let engine = Engine::start(topic, registry).map_err(|e| Failure::failed(e.to_string()))?;
    let meta = || CommandMeta {
        actor: "bench".into(),
        occurred_at: annals_events::time::now_micros(),
        ..CommandMeta::default()
    };
    let tenant = |t: u32| format!("bench-{t:04}");
    for t in 0..args.tenants {
        let limits = TenantLimits {
            max_signals_per_day: i64::MAX / 2,
            max_sources: 16,
            rate_per_second: 1_000_000,
        };
        let cmd = TenantCommand::ProvisionTenant {
            tenant: tenant(t),
            name: "Bench".into(),
            plan: "enterprise".into(),
            region: "eu-west".into(),
            limits,
        };
        engine
            .execute_blocking(
                Command::Tenancy {
                    tenant: tenant(t),
                    command: cmd,
                },
                meta(),
            )
            .map_err(|e| Failure::failed(e.to_string()))?;
    }
    let commands = args.signals.div_ceil(args.batch as u64);
    let senders = 2u64;
    // The commands are built before the clock starts: the figure is the command path's, not the
    // cost of making test data.
    let mut batches: Vec<Vec<Command>> = (0..senders).map(|_| Vec::new()).collect();
    for c in 0..commands {
        let t = (c % u64::from(args.tenants)) as u32;
        let first = c * args.batch as u64;
        let n = (args.batch as u64).min(args.signals - first);
        let cmd = ingest_signals(tenant(t), "web", "sig-", first..first + n, |i| {
            1_767_225_600_000_000 + i as i64
        });
        batches[(c % senders) as usize].push(cmd);
    }
    let started = Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..senders)
            .zip(std::mem::take(&mut batches))
            .map(|(_, mine)| {
                let (engine, meta) = (&engine, &meta);
                s.spawn(move || -> Result<Vec<f64>, Failure> {
                    let mut lat = Vec::new();
                    let mut pending = std::collections::VecDeque::new();
                    for cmd in mine {
                        pending.push_back((
                            Instant::now(),
                            engine
                                .submit_blocking(cmd, meta())
                                .map_err(|e| Failure::failed(e.to_string()))?,
                        ));
                        if pending.len() >= 32 {
                            let (at, p) = pending.pop_front().expect("non-empty");
                            p.wait().map_err(|e| Failure::failed(e.to_string()))?;
                            lat.push(at.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    for (at, p) in pending {
                        p.wait().map_err(|e| Failure::failed(e.to_string()))?;
                        lat.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .unwrap_or_else(|_| Err(Failure::failed("a bench thread panicked")))?,
            );
        }
        Ok::<_, Failure>(all)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let accepted = engine.stats().signals_accepted;
    if accepted != args.signals {
        return Err(Failure::failed(format!(
            "{accepted} signals accepted of {} sent",
            args.signals
        )));
    }
    let mut lat = latencies;
    lat.sort_by(f64::total_cmp);
    Ok(CommandFigures {
        signals: args.signals,
        commands,
        tenants: args.tenants,
        partitions: args.partitions,
        batch: args.batch,
        seconds,
        signals_per_s: args.signals as f64 / seconds,
        commands_per_s: commands as f64 / seconds,
        latency_p50_ms: quantile(&lat, 0.5),
        latency_p99_ms: quantile(&lat, 0.99),
    })
}

/// An ingest command for `tenant`'s `source` carrying the signals numbered `ids`: signal ids
/// `<prefix><i>`, timestamps `ts(i)`, one `metric` attribute and a value each.
pub(super) fn ingest_signals(
    tenant: String,
    source: &str,
    prefix: &str,
    ids: std::ops::Range<u64>,
    ts: impl Fn(u64) -> i64,
) -> annals_processors::Command {
    use annals_domain::ingest::{IngestCommand, SignalInput};
    let signals = ids
        .map(|i| SignalInput {
            signal_id: format!("{prefix}{i}"),
            ts: ts(i),
            attributes: [("metric".to_owned(), "latency".to_owned())].into(),
            value: Some(i as f64),
            unit: Some("ms".into()),
        })
        .collect();
    annals_processors::Command::Ingest(IngestCommand::IngestSignals {
        tenant,
        source: source.into(),
        signals,
    })
}

/// The value at quantile `q` (0 to 1) of sorted `samples` (0 when there are none).
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// Writes the demo dataset into `data` by running `annals demo` in a child process (the
/// benchmarks of read models and proofs start from it).
pub fn write_demo(
    data: &std::path::Path,
    tenants: u32,
    signals_per_day: u32,
) -> Result<(), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find the annals binary: {e}")))?;
    let demo = std::process::Command::new(exe)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--json",
            "demo",
            "--tenants",
            &tenants.to_string(),
            "--signals-per-day",
            &signals_per_day.to_string(),
        ])
        .output()
        .map_err(|e| Failure::failed(format!("cannot run the demo: {e}")))?;
    if !demo.status.success() {
        return Err(Failure::failed(format!(
            "the demo failed: {}",
            String::from_utf8_lossy(&demo.stderr)
        )));
    }
    Ok(())
}
