//! `annals checkpoint [--topic events] [--partition N]`: sign the Merkle root of every partition
//! and append the checkpoint to it.

use std::path::PathBuf;
use std::process::ExitCode;

use annals_audit::{AuditError, CheckpointKey, Checkpointer, default_key_path};
use annals_events::{LogConfig, LogError};
use annals_schemas::Registry;

use crate::{Context, Failure};

/// An audit error as the user sees it (exit 2 for their input, 1 otherwise).
pub fn audit_failure(e: AuditError) -> Failure {
    if e.is_usage() {
        Failure::usage(e.to_string())
    } else {
        Failure::failed(e.to_string())
    }
}

/// Where the checkpoint-signing key is: `given`, else `[audit] key`, else the data dir's
/// `keys/checkpoint.ed25519`.
pub fn key_path(ctx: &Context, given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| ctx.config.audit.key.clone())
        .unwrap_or_else(|| default_key_path(&ctx.data_dir))
}

/// The checkpoint-signing key at [`key_path`] (created if missing). Also says where it is and
/// whether it was just created.
pub fn signing_key(
    ctx: &Context,
    given: Option<PathBuf>,
) -> Result<(CheckpointKey, PathBuf, bool), Failure> {
    let path = key_path(ctx, given);
    let (key, created) = CheckpointKey::load_or_create(&path).map_err(audit_failure)?;
    if created {
        eprintln!(
            "created the checkpoint-signing key {} (public key {})",
            path.display(),
            key.public_key().to_hex()
        );
    }
    Ok((key, path, created))
}

/// When a process that writes partitions signs their checkpoints: once `[audit]
/// checkpoint_every_events` events were appended since the last time, or
/// `checkpoint_every_seconds` passed with at least one.
pub struct Cadence {
    every_events: u64,
    every: std::time::Duration,
    last_count: u64,
    last_time: std::time::Instant,
}

impl Cadence {
    /// Starting from `count` events appended so far.
    pub fn new(audit: &crate::config::Audit, count: u64) -> Cadence {
        Cadence {
            every_events: audit.checkpoint_every_events,
            every: std::time::Duration::from_secs(audit.checkpoint_every_seconds),
            last_count: count,
            last_time: std::time::Instant::now(),
        }
    }

    pub fn due(&self, count: u64) -> bool {
        count.saturating_sub(self.last_count) >= self.every_events
            || (count > self.last_count && self.last_time.elapsed() >= self.every)
    }

    /// Checkpoints were signed when `count` events were appended.
    pub fn signed(&mut self, count: u64) {
        self.last_count = count;
        self.last_time = std::time::Instant::now();
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The topic to checkpoint.
    #[arg(long, default_value = "events")]
    topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long)]
    partition: Option<u32>,
    /// The signing key file (default: `[audit] key`, else <data dir>/keys/checkpoint.ed25519,
    /// created if missing).
    #[arg(long)]
    key: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    if !ctx.data_dir.join("log").is_dir() {
        return Err(LogError::NoLog {
            path: ctx.data_dir.clone(),
        }
        .into());
    }
    let (key, _, _) = signing_key(ctx, args.key)?;
    let registry = Registry::builtin()?;
    // Opened for writing: checkpoints are appended. Fails clearly if another process writes.
    let log = ctx.open_log(LogConfig::default())?;
    let topic = log.topic(&args.topic)?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![topic.partition(p)?.id()],
        None => (0..topic.partitions().len() as u32).collect(),
    };
    let mut checkpointer = Checkpointer::new(&key, &registry);
    let mut rows = Vec::new();
    for p in partitions {
        let made = checkpointer
            .checkpoint(&log, &args.topic, p)
            .map_err(audit_failure)?;
        rows.push((p, made));
    }
    if ctx.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(p, m)| match m {
                Some(m) => serde_json::json!({
                    "topic": args.topic, "partition": p, "made": true,
                    "tree_size": m.checkpoint.tree_size,
                    "root_hash": hex::encode(m.checkpoint.root_hash),
                    "timestamp": m.checkpoint.timestamp,
                    "seq": m.seq, "event_id": m.event_id.to_string(),
                    "reference": format!("{}/{p}/{}", args.topic, m.checkpoint.tree_size),
                }),
                None => serde_json::json!({"topic": args.topic, "partition": p, "made": false}),
            })
            .collect();
        super::print_json(&serde_json::json!({
            "log_id": key.log_id(),
            "public_key": key.public_key().to_hex(),
            "checkpoints": list,
        }));
    } else {
        for (p, m) in &rows {
            match m {
                Some(m) => println!(
                    "checkpoint {}/{p}/{}: root {} signed, appended at seq {} (event {})",
                    args.topic,
                    m.checkpoint.tree_size,
                    hex::encode(m.checkpoint.root_hash),
                    m.seq,
                    m.event_id
                ),
                None => println!(
                    "{}/{p}: nothing new since the last checkpoint (or empty)",
                    args.topic
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
