//! `annals log stat|tail`: what the log holds, read-only.

use std::process::ExitCode;

use annals_events::Log;
use annals_events::time::format_micros;

use crate::{Context, Failure};

#[derive(clap::Subcommand)]
pub enum LogCommand {
    /// Topics, partitions, events, bytes and head hashes.
    Stat,
    /// The most recent events, decoded to JSON.
    Tail(TailArgs),
}

#[derive(clap::Args)]
pub struct TailArgs {
    /// How many events (per partition with --partition, else in all).
    #[arg(short = 'n', long, default_value_t = 10)]
    count: usize,
    #[arg(long, default_value = "events")]
    topic: String,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
}

#[derive(serde::Serialize)]
struct PartitionStat {
    topic: String,
    partition: u32,
    events: u64,
    bytes: u64,
    segments: usize,
    head_hash: String,
    last_recorded_at: Option<String>,
}

pub fn run(ctx: &Context, cmd: LogCommand) -> Result<ExitCode, Failure> {
    let log = ctx.open_log_read_only()?;
    match cmd {
        LogCommand::Stat => stat(ctx, &log),
        LogCommand::Tail(args) => tail(ctx, &log, args),
    }
}

fn stat(ctx: &Context, log: &Log) -> Result<ExitCode, Failure> {
    let mut rows = Vec::new();
    for topic in log.topics() {
        for p in topic.partitions() {
            let h = p.head();
            rows.push(PartitionStat {
                topic: topic.name().to_owned(),
                partition: p.id(),
                events: h.next_seq,
                bytes: h.bytes,
                segments: p.segments().len(),
                head_hash: hex::encode(h.last_hash),
                last_recorded_at: (h.next_seq > 0).then(|| format_micros(h.last_recorded_at)),
            });
        }
    }
    if ctx.json {
        super::print_json(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:>4} {:>12} {:>14} {:>5}  {:<64}  last recorded",
        "topic", "part", "events", "bytes", "segs", "head hash"
    );
    for r in &rows {
        println!(
            "{:<12} {:>4} {:>12} {:>14} {:>5}  {:<64}  {}",
            r.topic,
            r.partition,
            r.events,
            r.bytes,
            r.segments,
            r.head_hash,
            r.last_recorded_at.as_deref().unwrap_or("-")
        );
    }
    let events: u64 = rows.iter().map(|r| r.events).sum();
    let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    println!(
        "{} topic(s), {} partition(s), {events} events, {:.1} MB",
        log.topics().len(),
        rows.len(),
        bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

fn tail(ctx: &Context, log: &Log, args: TailArgs) -> Result<ExitCode, Failure> {
    let registry = super::registry(ctx)?;
    let topic = log.topic(&args.topic)?;
    let parts: Vec<_> = match args.partition {
        Some(p) => vec![topic.partition(p)?],
        None => topic.partitions().iter().collect(),
    };
    let mut events = Vec::new();
    for p in parts {
        let head = p.head().next_seq;
        let mut r = p.reader(head.saturating_sub(args.count as u64));
        while let Some(e) = r.next()? {
            events.push(e);
        }
    }
    // The most recent across partitions: by time of recording, then position.
    events.sort_by_key(|e| (e.recorded_at, e.partition, e.seq));
    let skip = events.len().saturating_sub(args.count);
    for e in &events[skip..] {
        let payload = registry
            .decode_json(e.schema_id, &e.payload)
            .unwrap_or_else(|err| serde_json::json!({ "undecodable": err.to_string() }));
        let line = e.to_json(payload);
        if ctx.json {
            println!("{line}");
        } else {
            println!(
                "{}/{} #{} {} {} {} {}",
                e.partition,
                e.seq,
                e.stream_version,
                format_micros(e.occurred_at),
                e.event_type,
                e.stream,
                line["payload"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
