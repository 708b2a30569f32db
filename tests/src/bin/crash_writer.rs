//! Appends to an embedded log in a loop until killed, printing each acknowledgement as
//! `ack <partition> <first_seq> <last_seq> <hash of last, hex>` once the append is durable.
//! The crash test kills it with SIGKILL and checks every printed acknowledgement survived.

use std::io::Write;

use annals_events::{Log, LogConfig, NewEvent};
use annals_tests::Rng;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: crash_writer DATA_DIR SEED");
    let seed: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: crash_writer DATA_DIR SEED");
    let mut rng = Rng(seed);
    // Small segments so crashes also land around segment rolls.
    let log = Log::open(
        std::path::Path::new(&dir),
        LogConfig {
            segment_bytes: 256 * 1024,
            ..LogConfig::default()
        },
    )
    .expect("open log");
    let topic = log.create_topic("events", 2).expect("topic");
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let p = &topic.partitions()[(i % 2) as usize];
        let n = 1 + rng.below(200);
        let batch: Vec<NewEvent> = (0..n)
            .map(|k| NewEvent {
                event_id: uuid::Uuid::now_v7(),
                tenant: "crash".into(),
                stream: format!("crash.Stream/{i}").into(),
                stream_version: k + 1,
                event_type: "crash.Appended".into(),
                schema_id: 0,
                occurred_at: 0,
                actor: "crash-writer".into(),
                causation_id: None,
                correlation_id: None,
                payload: vec![(i % 251) as u8; rng.below(600) as usize],
            })
            .collect();
        let acks = p.append_blocking(batch).expect("append");
        let last = acks.last().expect("non-empty");
        writeln!(
            out,
            "ack {} {} {} {}",
            last.partition,
            acks[0].seq,
            last.seq,
            hex::encode(last.hash)
        )
        .expect("stdout");
        out.flush().expect("stdout");
    }
}
