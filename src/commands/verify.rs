//! `annals verify`: the whole log, checked from its files, and every checkpoint in it.

use std::path::PathBuf;
use std::process::ExitCode;

use annals_audit::check::{verify_embedded, verify_kafka};
use annals_audit::{CheckpointReport, public_key_of};
use annals_schemas::Registry;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Threads to verify partitions with (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Public key to check checkpoint signatures with (default: the one of the signing key,
    /// `[audit] key`, else keys/checkpoint.ed25519(.pub); without any, roots only are checked).
    #[arg(long)]
    checkpoint_key: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let key = checkpoint_key(ctx, &args)?;
    let (report, checkpoints) = verify_all(ctx, args.threads, key.as_ref())?;
    let ok = report.ok && checkpoints.faults.is_empty();
    if ctx.json {
        let mut v = serde_json::to_value(&report).expect("serialisable");
        v["ok"] = ok.into();
        v["checkpoints"] = serde_json::to_value(&checkpoints).expect("serialisable");
        super::print_json(&v);
    } else {
        for f in &report.faults {
            println!("FAULT {f}");
        }
        for f in &checkpoints.faults {
            println!("FAULT {f}");
        }
        for p in report.partitions.iter().filter(|p| p.off_chain_count > 0) {
            let forks = p.off_chain.iter().filter(|r| r.kind == "fork").count();
            println!(
                "NOTE {}/{}: {} record(s) off the chain, skipped by every reader ({} fork record(s) from a second writer among the first {}; `--json` lists offsets)",
                p.topic,
                p.partition,
                p.off_chain_count,
                forks,
                p.off_chain.len()
            );
        }
        println!(
            "{} {} topic(s), {} partition(s), {} events, {:.1} MB in {:.3} s ({:.0} MB/s, {} thread(s)); {} checkpoint(s){}",
            if ok { "OK" } else { "FAILED" },
            report.topics,
            report.partitions.len(),
            report.events,
            report.bytes as f64 / 1e6,
            report.seconds,
            report.mb_per_s,
            report.threads,
            checkpoints.checkpoints,
            if checkpoints.signatures_checked || checkpoints.checkpoints == 0 {
                ""
            } else {
                " (roots only: no checkpoint key in the data dir, pass --checkpoint-key)"
            }
        );
    }
    if let Some(first) = report.faults.first() {
        Err(Failure::failed(format!("verification failed: {first}")))
    } else if let Some(first) = checkpoints.faults.first() {
        Err(Failure::failed(format!(
            "verification failed: checkpoint at {first}"
        )))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Every partition's chain, checked on the configured backend: the embedded log from its files
/// (with up to `threads` threads, 0: one per core), a Kafka log from the broker's records.
pub fn chain_report(
    ctx: &Context,
    threads: usize,
) -> Result<annals_events::verify::VerifyReport, Failure> {
    Ok(if ctx.config.log.kafka_config().is_some() {
        annals_events::log::kafka::verify::verify(&ctx.open_log_read_only()?)?
    } else {
        annals_events::verify::verify(&ctx.data_dir, threads)?
    })
}

/// The whole check: every partition's chain and every checkpoint's signature and root, in
/// one read of the log (annals-audit rides along annals-events' verify: over the files, or
/// the broker's records). The report's time and MB/s cover all of it. When the chain check
/// already found a fault, a partition whose checkpoints cannot be read is left to that report.
pub fn verify_all(
    ctx: &Context,
    threads: usize,
    key: Option<&annals_proof::PublicKey>,
) -> Result<(annals_events::verify::VerifyReport, CheckpointReport), Failure> {
    let started = std::time::Instant::now();
    let registry = Registry::builtin()?;
    let (mut report, checkpoints) = if ctx.config.log.kafka_config().is_some() {
        verify_kafka(&ctx.open_log_read_only()?, key, &registry)
    } else {
        verify_embedded(&ctx.data_dir, threads, key, &registry)
    }
    .map_err(super::checkpoint::audit_failure)?;
    report.seconds = started.elapsed().as_secs_f64();
    report.mb_per_s = report.bytes as f64 / 1e6 / report.seconds.max(1e-9);
    if report.ok && !checkpoints.unreadable.is_empty() {
        return Err(Failure::failed(format!(
            "cannot check the checkpoints of {}",
            checkpoints.unreadable.join("; ")
        )));
    }
    Ok((report, checkpoints))
}

/// The public key to check checkpoint signatures with: `--checkpoint-key`, else the one of
/// the signing key; `None` when there is neither (roots only).
fn checkpoint_key(ctx: &Context, args: &Args) -> Result<Option<annals_proof::PublicKey>, Failure> {
    match &args.checkpoint_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
            annals_proof::PublicKey::parse(&text)
                .map(Some)
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
        }
        None => public_key_of(&super::checkpoint::key_path(ctx, None))
            .map_err(super::checkpoint::audit_failure),
    }
}
