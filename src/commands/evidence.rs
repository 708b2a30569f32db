//! `annals evidence --tenant T --from TIME --to TIME --out bundle.tar`: a tenant's events of a
//! period with their proofs, the checkpoint, the public key and a README, in one archive an
//! auditor checks offline with `annals verify-proof --bundle`. The manifest is signed with the
//! checkpoint-signing key, so this needs that key (not only its `.pub`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use annals_audit::{CheckpointKey, EvidenceRequest, collect_evidence, make_checkpoint};
use annals_events::{LogConfig, LogError};
use annals_proof::bundle::format_micros;
use annals_schemas::Registry;

use super::checkpoint::audit_failure;
use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// The tenant whose events to export.
    #[arg(long)]
    tenant: String,
    /// Start of the period, inclusive: RFC 3339 in UTC (`2026-11-01T00:00:00Z`, or a date) or
    /// microseconds since the Unix epoch. The period bounds each event's `recorded_at`, the
    /// log's own clock when it stored the event — not `occurred_at`.
    #[arg(long, value_name = "TIME")]
    from: String,
    /// End of the period, exclusive (the same forms as --from; also on `recorded_at`).
    #[arg(long, value_name = "TIME")]
    to: String,
    /// The archive to write (ustar).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "events")]
    topic: String,
    /// If events of the period are newer than the latest checkpoint, sign one first (opens the
    /// log for writing: not while `annals serve` runs on this data dir).
    #[arg(long)]
    checkpoint: bool,
    /// The checkpoint-signing key file, which also signs the bundle's manifest (default:
    /// `[audit] key`, else <data dir>/keys/checkpoint.ed25519).
    #[arg(long)]
    key: Option<PathBuf>,
}

pub(crate) fn parse_time(flag: &str, text: &str) -> Result<i64, Failure> {
    if let Ok(micros) = text.parse::<i64>() {
        return Ok(micros);
    }
    annals_events::time::parse_rfc3339(text).ok_or_else(|| {
        Failure::usage(format!(
            "--{flag} `{text}` is not a time: use RFC 3339 in UTC (2026-11-01T00:00:00Z, or 2026-11-01) or microseconds since the Unix epoch"
        ))
    })
}

/// The checkpoint-signing key, which must exist already: it signs the manifest.
fn existing_key(path: &Path) -> Result<CheckpointKey, Failure> {
    if !path.exists() {
        return Err(Failure::usage(format!(
            "{} does not exist: the bundle's manifest is signed with the checkpoint-signing key, and there is none yet; run `annals checkpoint` first, or give --key (the public key alone cannot sign)",
            path.display()
        )));
    }
    CheckpointKey::load(path).map_err(audit_failure)
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let req = EvidenceRequest {
        tenant: args.tenant.clone(),
        topic: args.topic.clone(),
        from: parse_time("from", &args.from)?,
        to: parse_time("to", &args.to)?,
    };
    if req.from >= req.to {
        return Err(Failure::usage(format!(
            "--from {} is not before --to {}: the period is empty",
            format_micros(req.from),
            format_micros(req.to)
        )));
    }
    if !ctx.data_dir.join("log").is_dir() {
        return Err(LogError::NoLog {
            path: ctx.data_dir.clone(),
        }
        .into());
    }
    let registry = Registry::builtin()?;
    let now = annals_events::time::now_micros();
    let evidence = if args.checkpoint {
        let (key, _, _) = super::checkpoint::signing_key(ctx, args.key.clone())?;
        let log = ctx.open_log(LogConfig::default())?;
        let partition = log.topic(&args.topic)?.partition_for(&args.tenant).id();
        if let Some(m) =
            make_checkpoint(&log, &args.topic, partition, &key, &registry).map_err(audit_failure)?
        {
            eprintln!(
                "checkpoint {}/{partition}/{} signed, appended at seq {}",
                args.topic, m.checkpoint.tree_size, m.seq
            );
        }
        collect_evidence(&log, &registry, &key, &req, now)
    } else {
        let key = existing_key(&super::checkpoint::key_path(ctx, args.key.clone()))?;
        let log = ctx.open_log_read_only()?;
        collect_evidence(&log, &registry, &key, &req, now)
    }
    .map_err(audit_failure)?;

    let tar = evidence.to_tar(now.max(0) as u64 / 1_000_000);
    let mut partial = args.out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, &tar)
        .and_then(|()| std::fs::rename(&partial, &args.out))
        .map_err(|e| {
            std::fs::remove_file(&partial).ok();
            Failure::failed(format!("cannot write {}: {e}", args.out.display()))
        })?;
    let m = &evidence.manifest;
    if ctx.json {
        super::print_json(&serde_json::json!({
            "out": args.out.display().to_string(),
            "bytes": tar.len(),
            "tenant": m.tenant,
            "topic": m.topic,
            "partition": m.partition,
            "from": format_micros(m.from),
            "to": format_micros(m.to),
            "events": m.events.len(),
            "checkpoint": evidence.checkpoint.as_ref().map(|c| format!("{}/{}/{}", c.topic, c.partition, c.tree_size)),
            "log_id": m.log_id,
        }));
    } else {
        let proven = match &evidence.checkpoint {
            Some(c) => format!(
                ", proven in checkpoint {}/{}/{}",
                c.topic, c.partition, c.tree_size
            ),
            None => String::new(),
        };
        println!(
            "wrote {} ({} bytes): {} events of tenant {} recorded in [{}, {}) ({}/{}){proven}",
            args.out.display(),
            tar.len(),
            m.events.len(),
            m.tenant,
            format_micros(m.from),
            format_micros(m.to),
            m.topic,
            m.partition
        );
        println!(
            "check it offline: annals verify-proof --bundle {} --key <the log's public key>",
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
