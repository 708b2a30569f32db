//! `annals history STREAM`: one aggregate's events with who, when and why.

use std::process::ExitCode;

use annals_events::time::format_micros;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// The stream, `<aggregate type>/<tenant>/<id…>` (e.g. `billing.Invoice/acme/INV-7`).
    stream: String,
    #[arg(long, default_value = "events")]
    topic: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let tenant = annals_replay::stream_tenant(&args.stream)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{:?} is not a stream id: expected `<aggregate type>/<tenant>[/<id>]`",
                args.stream
            ))
        })?;
    let log = ctx.open_log_read_only()?;
    let registry = super::registry(ctx)?;
    let topic = log.topic(&args.topic)?;
    let partition = topic.partition_for(tenant);
    let mut reader = partition.reader(0);
    let mut found = 0;
    while let Some(e) = reader.next()? {
        if e.stream != args.stream {
            continue;
        }
        found += 1;
        let payload = registry
            .decode_json(e.schema_id, &e.payload)
            .unwrap_or_else(|err| serde_json::json!({ "undecodable": err.to_string() }));
        if ctx.json {
            println!("{}", e.to_json(payload));
            continue;
        }
        println!(
            "v{:<4} {}  {}",
            e.stream_version,
            format_micros(e.occurred_at),
            e.event_type
        );
        println!(
            "       by {}  recorded {}  at {}/{}  because {}  flow {}",
            e.actor,
            format_micros(e.recorded_at),
            e.partition,
            e.seq,
            e.causation_id.as_deref().unwrap_or("-"),
            e.correlation_id.as_deref().unwrap_or("-")
        );
        println!("       {payload}");
    }
    if found == 0 {
        return Err(Failure::usage(format!(
            "no events for stream {} (tenant {tenant}, partition {})",
            args.stream,
            partition.id()
        )));
    }
    Ok(ExitCode::SUCCESS)
}
