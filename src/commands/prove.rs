//! `annals prove EVENT_ID`, `annals prove --consistency OLD NEW` and
//! `annals verify-proof FILE --key KEY` and `annals verify-proof --bundle BUNDLE --key KEY` (the
//! offline verifier: `annals-proof` only).

use std::path::PathBuf;
use std::process::ExitCode;

use annals_audit::prove::{CheckpointRef, prove_consistency, prove_inclusion};

use annals_schemas::Registry;

use super::checkpoint::audit_failure;
use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct ProveArgs {
    /// The event to prove (its event id).
    #[arg(
        required_unless_present = "consistency",
        conflicts_with = "consistency"
    )]
    event_id: Option<String>,
    /// Prove that checkpoint NEW extends checkpoint OLD; each is topic/partition/tree_size
    /// (as `annals checkpoint` prints) or the checkpoint event's id.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    consistency: Option<Vec<String>>,
    /// Write the proof to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn prove(ctx: &Context, args: ProveArgs) -> Result<ExitCode, Failure> {
    let registry = Registry::builtin()?;
    let log = ctx.open_log_read_only()?;
    let doc = match (&args.event_id, &args.consistency) {
        (Some(id), _) => {
            let id = uuid::Uuid::parse_str(id)
                .map_err(|_| Failure::usage(format!("`{id}` is not an event id (a UUID)")))?;
            prove_inclusion(&log, &registry, id)
                .map_err(audit_failure)?
                .to_json()
        }
        (None, Some(refs)) => {
            let old: CheckpointRef = refs[0].parse().map_err(audit_failure)?;
            let new: CheckpointRef = refs[1].parse().map_err(audit_failure)?;
            prove_consistency(&log, &registry, &old, &new)
                .map_err(audit_failure)?
                .to_json()
        }
        (None, None) => return Err(Failure::usage("give an EVENT_ID or --consistency OLD NEW")),
    };
    let text = serde_json::to_string_pretty(&doc).expect("serialisable");
    match &args.out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))?,
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct VerifyProofArgs {
    /// The proof (JSON, as `annals prove` writes it).
    #[arg(required_unless_present = "bundle", conflicts_with = "bundle")]
    file: Option<PathBuf>,
    /// Check an evidence bundle (as `annals evidence` writes it) instead: its manifest, every
    /// event, proof and checkpoint in it.
    #[arg(long, value_name = "BUNDLE_TAR")]
    bundle: Option<PathBuf>,
    /// The log's public key file (64 hex digits or base64), from `annals keys public --out`.
    #[arg(long)]
    key: PathBuf,
    /// With --bundle: also accept a bundle of the older format whose manifest is not signed
    /// (`annals-evidence-v1`), with a warning that nothing then shows no event was left out.
    #[arg(long, requires = "bundle")]
    allow_unsigned: bool,
}

/// Checks a proof offline with the public key alone: exit 0, or 1 naming what failed.
pub fn verify_proof(ctx: &Context, args: VerifyProofArgs) -> Result<ExitCode, Failure> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", p.display())))
    };
    let key = annals_proof::PublicKey::parse(&read(&args.key)?)
        .map_err(|e| Failure::usage(format!("{}: {e}", args.key.display())))?;
    let file = match (&args.file, &args.bundle) {
        (_, Some(bundle)) => return verify_bundle(ctx, bundle, &key, args.allow_unsigned),
        (Some(file), None) => file,
        (None, None) => return Err(Failure::usage("give a proof FILE or --bundle BUNDLE_TAR")),
    };
    match annals_proof::verify_document(&read(file)?, &key) {
        Ok(verified) => {
            if ctx.json {
                super::print_json(
                    &serde_json::json!({"ok": true, "verified": verified.to_string()}),
                );
            } else {
                println!("OK {verified}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if ctx.json {
                super::print_json(
                    &serde_json::json!({"ok": false, "failed": e.what, "detail": e.detail}),
                );
            }
            Err(Failure::failed(format!(
                "proof rejected: {e} ({})",
                file.display()
            )))
        }
    }
}

/// `verify-proof --bundle`: the whole bundle offline; one `OK` line, or exit 1 naming the first
/// file that failed and why.
fn verify_bundle(
    ctx: &Context,
    path: &std::path::Path,
    key: &annals_proof::PublicKey,
    allow_unsigned: bool,
) -> Result<ExitCode, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    let unsigned = if allow_unsigned {
        annals_proof::Unsigned::Accept
    } else {
        annals_proof::Unsigned::Reject
    };
    match annals_proof::verify_bundle_with(&bytes, key, unsigned) {
        Ok(s) => {
            let warning = (!s.manifest_signed).then(|| {
                format!(
                    "the manifest of {} is not signed (an older bundle): each event in it is proven to be in the log, but nothing shows that no event of the period was left out",
                    path.display()
                )
            });
            if let Some(w) = &warning {
                eprintln!("warning: {w}");
            }
            if ctx.json {
                super::print_json(&serde_json::json!({
                    "ok": true,
                    "events": s.events,
                    "tenant": s.tenant,
                    "topic": s.topic,
                    "partition": s.partition,
                    "from": annals_proof::bundle::format_micros(s.from),
                    "to": annals_proof::bundle::format_micros(s.to),
                    "checkpoints": s.checkpoints,
                    "log_id": s.log_id,
                    "manifest_signed": s.manifest_signed,
                    "warning": warning,
                    "verified": s.to_string(),
                }));
            } else {
                println!("OK bundle {}: {s}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if ctx.json {
                super::print_json(&serde_json::json!({
                    "ok": false, "file": e.file, "failed": e.error.what, "detail": e.error.detail,
                }));
            }
            Err(Failure::failed(format!(
                "bundle rejected: {e} ({})",
                path.display()
            )))
        }
    }
}
