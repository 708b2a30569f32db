//! `annals verify`: the whole log, checked from its files.

use std::process::ExitCode;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Threads to verify partitions with (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let report = annals_events::verify::verify(&ctx.data_dir, args.threads)?;
    if ctx.json {
        super::print_json(&report);
    } else {
        for f in &report.faults {
            println!("FAULT {f}");
        }
        println!(
            "{} {} topic(s), {} partition(s), {} events, {:.1} MB in {:.3} s ({:.0} MB/s, {} thread(s))",
            if report.ok { "OK" } else { "FAILED" },
            report.topics,
            report.partitions.len(),
            report.events,
            report.bytes as f64 / 1e6,
            report.seconds,
            report.mb_per_s,
            report.threads
        );
    }
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        let first = &report.faults[0];
        Err(Failure::failed(format!("verification failed: {first}")))
    }
}
