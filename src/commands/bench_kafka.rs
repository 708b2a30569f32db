//! `annals bench kafka`: the log on a Kafka-protocol broker, measured against the broker itself.
//! In one run, on fresh topics of one broker: signals through the command path onto Kafka
//! (events/s, command latency), then raw rdkafka produce of as many records of the same size
//! with the same producer settings; reading the chain back (and a full replay) beside a raw
//! rdkafka consume of those records. The ratios are what count: the broker bounds both.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use annals_events::log::Mode;
use annals_events::{KafkaConfig, Log, LogConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::bench::{CommandArgs, drive_commands, ingest_signals, quantile};
use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Broker (`host:port`); default: `[log.kafka] brokers`, else 127.0.0.1:9092.
    #[arg(long)]
    brokers: Option<String>,
    /// Signals to send through the command path (one event each).
    #[arg(long, default_value_t = 100_000)]
    signals: u64,
    /// Commands a caller keeps in flight through the commands topic (each awaits its outcome).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Signals per ingest command.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Partitions of the scratch topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Turn the idempotent producer off (as `[log.kafka] idempotence = false`).
    #[arg(long)]
    no_idempotence: bool,
    /// Write records without headers (as `[log.kafka] headers = false`); the raw records
    /// then carry none either.
    #[arg(long)]
    no_headers: bool,
}

#[derive(serde::Serialize)]
struct Figures {
    brokers: String,
    events: u64,
    record_bytes: f64,
    partitions: u32,
    idempotence: bool,
    headers: bool,
    command_events_per_s: f64,
    command_latency_p50_ms: f64,
    command_latency_p99_ms: f64,
    processor_events_per_s: f64,
    processor_latency_p50_ms: f64,
    processor_latency_p99_ms: f64,
    raw_produce_msgs_per_s: f64,
    produce_ratio: f64,
    chain_read_events_per_s: f64,
    replay_events_per_s: f64,
    raw_consume_msgs_per_s: f64,
    read_ratio: f64,
    replay_ratio: f64,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    if args.signals == 0 || args.batch == 0 || args.partitions == 0 {
        return Err(Failure::usage(
            "--signals, --batch and --partitions must be at least 1",
        ));
    }
    let mut cfg = ctx
        .config
        .log
        .kafka
        .as_ref()
        .map(|k| KafkaConfig::new(k.brokers.clone()))
        .unwrap_or_else(|| KafkaConfig::new("127.0.0.1:9092"));
    if let Some(b) = &args.brokers {
        cfg.brokers = b.clone();
    }
    cfg.idempotence = !args.no_idempotence;
    cfg.headers = !args.no_headers;
    let stamp = annals_events::time::now_micros();
    cfg.topic_prefix = format!("bench-{stamp}.");
    let scratch = super::bench::tempdir_in(&std::env::temp_dir())?;
    let result = measure(&scratch, &cfg, &args);
    std::fs::remove_dir_all(&scratch).ok();
    let f = result.map_err(|mut e| {
        // A broker that runs but falls behind (tansu reading records with headers, say) lets
        // requests time out: say which of the bench's options lighten its load.
        if e.message.contains("Timed out") {
            e.message.push_str(
                "; if the bench outran it, try fewer --signals, or --no-headers (the tansu test broker reads records with headers about 20 times slower)",
            );
        }
        e
    })?;
    if ctx.json {
        super::print_json(&f);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "annals bench kafka: {} events of {:.0} B on {} ({} partitions, idempotence {}, headers {})",
        f.events,
        f.record_bytes,
        f.brokers,
        f.partitions,
        if f.idempotence { "on" } else { "off" },
        if f.headers { "on" } else { "off" }
    );
    println!(
        "  command path onto Kafka : {:>9.0} events/s   latency p50 {:.1} ms, p99 {:.1} ms",
        f.command_events_per_s, f.command_latency_p50_ms, f.command_latency_p99_ms
    );
    println!(
        "  via commands topic      : {:>9.0} events/s   latency p50 {:.1} ms, p99 {:.1} ms (a processor instance, callers await outcomes)",
        f.processor_events_per_s, f.processor_latency_p50_ms, f.processor_latency_p99_ms
    );
    println!(
        "  raw rdkafka produce     : {:>9.0} msgs/s     annals = {:.0}% of it",
        f.raw_produce_msgs_per_s,
        f.produce_ratio * 100.0
    );
    println!(
        "  chain read (replay I/O) : {:>9.0} events/s   full replay {:.0} events/s",
        f.chain_read_events_per_s, f.replay_events_per_s
    );
    println!(
        "  raw rdkafka consume     : {:>9.0} msgs/s     chain read = {:.0}%, replay = {:.0}% of it",
        f.raw_consume_msgs_per_s,
        f.read_ratio * 100.0,
        f.replay_ratio * 100.0
    );
    Ok(ExitCode::SUCCESS)
}

/// Headers like annals' (event type, tenant, stream, seq) for raw record `i`.
fn raw_headers(i: u64) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    let seq = i.to_string();
    OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "annals.event_type",
            value: Some("ingest.SignalIngested"),
        })
        .insert(Header {
            key: "annals.tenant",
            value: Some("bench-0000"),
        })
        .insert(Header {
            key: "annals.stream",
            value: Some("ingest.Source/bench-0000/web"),
        })
        .insert(Header {
            key: "annals.seq",
            value: Some(seq.as_str()),
        })
}

/// Signals through the commands topic to a processor instance in this process, with
/// `--in-flight` commands in flight: (events/s, p50 ms, p99 ms) from send to awaited outcome.
fn through_processor(
    dir: &std::path::Path,
    cfg: &KafkaConfig,
    args: &Args,
) -> Result<(f64, f64, f64), Failure> {
    use annals_processors::CommandMeta;
    use annals_processors::bus::{CommandBus, Processor};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let fail = |e: annals_processors::CommandError| Failure::failed(e.to_string());
    let log = Arc::new(Log::open_kafka(
        dir,
        cfg.clone(),
        LogConfig::default(),
        Mode::ReadWrite,
    )?);
    let topic = log.topic("events")?;
    let registry = Arc::new(annals_schemas::Registry::builtin()?);
    let processor = Processor::new(
        log.clone(),
        topic.clone(),
        registry,
        &format!("{}bench", cfg.topic_prefix),
    );
    let stop = AtomicBool::new(false);
    let client = Log::open_kafka(dir, cfg.clone(), LogConfig::default(), Mode::ReadOnly)?;
    let bus = CommandBus::connect(&client, &*client.topic("events")?).map_err(fail)?;
    let commands = args.signals.div_ceil(args.batch as u64);
    let tenants = u64::from(args.partitions * 2);
    let owns_all = AtomicBool::new(false);
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            processor.run(&stop, &|owned, _| {
                owns_all.store(owned.len() == topic.partitions().len(), Ordering::Release)
            })
        });
        let result = (|| {
            // The clock starts once the instance owns every partition (the group formed).
            let deadline = Instant::now() + Duration::from_secs(60);
            while !owns_all.load(Ordering::Acquire) {
                if Instant::now() > deadline {
                    return Err(Failure::failed(
                        "the processor got no partitions within 60 s",
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut pending = std::collections::VecDeque::new();
            let mut latencies = Vec::with_capacity(commands as usize);
            let started = Instant::now();
            for c in 0..commands {
                let first = c * args.batch as u64;
                let n = (args.batch as u64).min(args.signals - first);
                let cmd = ingest_signals(
                    format!("bench-{:04}", c % tenants),
                    "bus",
                    "bus-",
                    first..first + n,
                    |i| 1_767_225_600_000_000 + i as i64,
                );
                let meta = CommandMeta {
                    actor: "bench".into(),
                    occurred_at: annals_events::time::now_micros(),
                    ..CommandMeta::default()
                };
                pending.push_back((Instant::now(), bus.send(cmd, meta).map_err(fail)?));
                while pending.len() >= args.in_flight.max(1)
                    || (c + 1 == commands && !pending.is_empty())
                {
                    let (at, p) = pending.pop_front().expect("not empty");
                    let o = p.wait(Duration::from_secs(120)).map_err(fail)?;
                    if let Some(e) = o.error {
                        return Err(Failure::failed(format!(
                            "a bench command was refused: {e:?}"
                        )));
                    }
                    latencies.push(at.elapsed().as_secs_f64() * 1e3);
                }
            }
            let rate = args.signals as f64 / started.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            Ok((rate, quantile(&latencies, 0.5), quantile(&latencies, 0.99)))
        })();
        stop.store(true, Ordering::Release);
        run.join()
            .unwrap_or_else(|_| {
                Err(annals_processors::CommandError::Unavailable(
                    "the processor panicked".into(),
                ))
            })
            .map_err(fail)?;
        result
    })
}

fn measure(dir: &std::path::Path, cfg: &KafkaConfig, args: &Args) -> Result<Figures, Failure> {
    let kafka_err = |e: rdkafka::error::KafkaError| Failure::failed(format!("Kafka: {e}"));
    // 1. The command path onto Kafka.
    let log = Log::open_kafka(dir, cfg.clone(), LogConfig::default(), Mode::ReadWrite)?;
    let commands = drive_commands(
        &log,
        &CommandArgs {
            signals: args.signals,
            tenants: args.partitions * 2,
            batch: args.batch,
            partitions: args.partitions,
            dir: None,
        },
    )?;
    drop(log);
    // 1b. The same through the commands topic and a processor instance (`annals process`).
    let bus = through_processor(dir, cfg, args)?;

    // 2. Reading the chain back: one reader per partition, in parallel (as a consumer of all
    // partitions fetches them), then a full replay into the aggregates.
    let ro = Log::open_kafka(dir, cfg.clone(), LogConfig::default(), Mode::ReadOnly)?;
    let topic = ro.topic("events")?;
    let started = Instant::now();
    let events = std::thread::scope(|s| {
        let handles: Vec<_> = topic
            .partitions()
            .iter()
            .map(|p| {
                s.spawn(move || -> Result<u64, Failure> {
                    let mut r = p.reader(0);
                    let mut n = 0u64;
                    while r.next_ref()?.is_some() {
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h
                .join()
                .unwrap_or_else(|_| Err(Failure::failed("a reader thread panicked")))?;
        }
        Ok::<_, Failure>(total)
    })?;
    let chain_read = events as f64 / started.elapsed().as_secs_f64();
    let registry = annals_schemas::Registry::builtin()?;
    let replayed =
        annals_replay::replay(&ro, &registry, &annals_replay::Replay::everything("events"))
            .map_err(|e| Failure::failed(e.to_string()))?;
    let replay_rate = replayed.events_applied as f64 / replayed.seconds.max(1e-9);
    // The size of a record: the envelope around the payload (measured from the verify report).
    let report = annals_events::log::kafka::verify::verify(&ro)?;
    let record_bytes = report.bytes as f64 / report.events.max(1) as f64;
    drop(ro);

    // 3. Raw produce of as many records of that size, same producer settings, fresh topic.
    let admin = Log::open_kafka(dir, cfg.clone(), LogConfig::default(), Mode::ReadWrite)?;
    admin.create_topic("raw", args.partitions)?;
    let raw_topic = format!("{}raw", cfg.topic_prefix);
    let producer: FutureProducer = cfg.producer_config().create().map_err(kafka_err)?;
    let value = vec![0x5a_u8; record_bytes.round() as usize];
    let keys: Vec<String> = (0..args.partitions * 2)
        .map(|t| format!("bench-{t:04}"))
        .collect();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(events as usize);
    for i in 0..events {
        let mut record = FutureRecord::to(&raw_topic)
            .partition((i % u64::from(args.partitions)) as i32)
            .key(&keys[(i % keys.len() as u64) as usize])
            .payload(&value[..]);
        if cfg.headers {
            record = record.headers(raw_headers(i));
        }
        loop {
            match producer.send_result(record) {
                Ok(d) => break pending.push(d),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(kafka_err(e)),
            }
        }
    }
    for d in pending {
        match futures::executor::block_on(d) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(kafka_err(e)),
            Err(_) => return Err(Failure::failed("a delivery report was lost")),
        }
    }
    let raw_produce = events as f64 / started.elapsed().as_secs_f64();

    // 4. Raw consume of them: one consumer, every partition, from the start.
    let consumer: BaseConsumer = cfg.reader_config().create().map_err(kafka_err)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(&raw_topic, p as i32, Offset::Beginning)
            .map_err(kafka_err)?;
    }
    consumer.assign(&tpl).map_err(kafka_err)?;
    let started = Instant::now();
    let mut got = 0u64;
    while got < events {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Ok(_)) => got += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(kafka_err(e)),
            None => {
                return Err(Failure::failed(format!(
                    "raw consume stalled after {got} of {events} records"
                )));
            }
        }
    }
    let raw_consume = got as f64 / started.elapsed().as_secs_f64();
    Ok(Figures {
        brokers: cfg.brokers.clone(),
        events,
        record_bytes,
        partitions: args.partitions,
        idempotence: cfg.idempotence,
        headers: cfg.headers,
        command_events_per_s: commands.signals_per_s,
        command_latency_p50_ms: commands.latency_p50_ms,
        command_latency_p99_ms: commands.latency_p99_ms,
        processor_events_per_s: bus.0,
        processor_latency_p50_ms: bus.1,
        processor_latency_p99_ms: bus.2,
        raw_produce_msgs_per_s: raw_produce,
        produce_ratio: commands.signals_per_s / raw_produce,
        chain_read_events_per_s: chain_read,
        replay_events_per_s: replay_rate,
        raw_consume_msgs_per_s: raw_consume,
        read_ratio: chain_read / raw_consume,
        replay_ratio: replay_rate / raw_consume,
    })
}
