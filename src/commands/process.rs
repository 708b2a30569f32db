//! `annals process`: one command-processor instance of the Kafka deployment. It joins the
//! processors' consumer group on the commands topic, owns the partitions the group assigns
//! it, decides their commands and writes their events (see `annals_processors::bus`). Run
//! several on as many machines; when one stops or dies, the others take its partitions over.
//!
//! As the single writer of the partitions it owns, an instance also signs their checkpoints on
//! the `[audit]` cadence, and once more when it stops. Every instance must sign with the same
//! key (`[audit] key`, a file each machine has a copy of): the log has one identity.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annals_events::LogConfig;
use annals_processors::bus::Processor;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// The consumer group the instances share (default: `<topic_prefix>processors`).
    #[arg(long)]
    group: Option<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Release);
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    if ctx.config.log.kafka_config().is_none() {
        return Err(Failure::usage(
            "annals process runs command processors of the Kafka deployment ([log] backend = \"kafka\"); on the embedded log, `annals serve` decides commands itself",
        ));
    }
    let log = Arc::new(ctx.open_log(LogConfig::default())?);
    let topic = log.create_topic("events", ctx.config.log.partitions)?;
    let registry = Arc::new(super::registry(ctx)?);
    let group = args.group.unwrap_or_else(|| {
        let prefix = ctx
            .config
            .log
            .kafka_config()
            .map(|k| k.topic_prefix)
            .unwrap_or_default();
        format!("{prefix}processors")
    });
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    println!(
        "annals process: joining group {} on {} ({} partitions); Ctrl-C to stop",
        group,
        log.location(),
        topic.partitions().len()
    );
    let (key, key_path, _) = super::checkpoint::signing_key(ctx, None)?;
    println!(
        "signing checkpoints of the partitions it owns with {} (log id {})",
        key_path.display(),
        key.log_id()
    );
    let mut checkpointer = annals_audit::Checkpointer::new(&key, &registry);
    let appended = |owned: &[u32]| -> u64 {
        owned
            .iter()
            .filter_map(|p| topic.partition(*p).ok())
            .map(|p| p.head().next_seq)
            .sum()
    };
    let mut cadence = super::checkpoint::Cadence::new(&ctx.config.audit, 0);
    let mut signed_for: Vec<u32> = Vec::new();
    let mut each_round = |owned: &[u32], stopping: bool| {
        if owned != signed_for.as_slice() {
            // A new assignment: count from the partitions' heads as they are now.
            signed_for = owned.to_vec();
            cadence.signed(appended(owned));
        }
        if !(stopping || cadence.due(appended(owned))) {
            return;
        }
        for &p in owned {
            match checkpointer.checkpoint(&log, "events", p) {
                Ok(Some(made)) => tracing::info!(
                    partition = p,
                    tree_size = made.checkpoint.tree_size,
                    "signed a checkpoint"
                ),
                Ok(None) => {}
                // Another owner may have written meanwhile (a rebalance): it signs next time.
                Err(e) => tracing::warn!(partition = p, error = %e, "cannot sign a checkpoint"),
            }
        }
        cadence.signed(appended(owned));
    };
    let processor = Processor::new(log.clone(), topic.clone(), registry.clone(), &group);
    processor
        .run_with(
            &STOP,
            &|owned, restores| {
                println!("owns partitions {owned:?}");
                for r in restores {
                    match r.snapshot_seq {
                        Some(seq) => println!(
                            "partition {}: restored from a snapshot at seq {seq}, then {} events",
                            r.partition, r.replayed
                        ),
                        None => {
                            println!("partition {}: replayed {} events", r.partition, r.replayed)
                        }
                    }
                }
            },
            &mut each_round,
        )
        .map_err(|e| Failure::failed(format!("processor stopped: {e}")))?;
    println!("annals process: stopped");
    Ok(ExitCode::SUCCESS)
}
