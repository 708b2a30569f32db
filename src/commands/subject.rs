//! `annals subject erase|export`: data-subject requests on the embedded deployment.
//!
//! `erase` records `SubjectErased` through the command path, then deletes the subject's key
//! (crypto-shredding) and brings the read models up to date, purging old copies of the rows:
//! from then on the subject's personal fields read as `[erased]` everywhere, while the log's
//! hashes, checkpoints and proofs still verify. `export` writes everything the platform holds
//! about a subject (GDPR art. 15): its events, personal fields opened, and its read-model rows.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use annals_domain::tenancy::{ContactCommand, contact_stream};
use annals_events::LogConfig;
use annals_processors::{Command, CommandMeta, Engine};
use annals_projections::{CurrentState, Store};

use crate::commands::projections::{current_state_backend, run_all, runtime};
use crate::{Context, Failure};

#[derive(clap::Subcommand)]
pub enum SubjectCommand {
    /// Erase a data subject's personal data (GDPR art. 17): record the request, delete the
    /// subject's key, update the read models.
    Erase(EraseArgs),
    /// Everything annals holds about a data subject (GDPR art. 15), as JSON.
    Export(ExportArgs),
}

#[derive(clap::Args)]
pub struct Who {
    /// The tenant the subject belongs to.
    #[arg(long)]
    tenant: String,
    /// The subject's id (e.g. a contact id).
    #[arg(long)]
    subject: String,
}

#[derive(clap::Args)]
pub struct EraseArgs {
    #[command(flatten)]
    who: Who,
    /// The request's reference (e.g. a ticket number), recorded with the erasure.
    #[arg(long)]
    reason: String,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    who: Who,
    /// Write the export here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(ctx: &Context, cmd: SubjectCommand) -> Result<ExitCode, Failure> {
    match cmd {
        SubjectCommand::Erase(a) => erase(ctx, a),
        SubjectCommand::Export(a) => export(ctx, a),
    }
}

fn erase(ctx: &Context, args: EraseArgs) -> Result<ExitCode, Failure> {
    let Who { tenant, subject } = args.who;
    let keys = super::subject_keys(ctx)?;
    let registry = Arc::new(super::registry_with(&keys)?);
    let log = ctx.open_log(LogConfig::default()).map_err(|e| match e {
        annals_events::LogError::Locked { .. } => Failure::usage(format!(
            "{e}; while annals serve runs, erase through it: POST /v1/tenants/{tenant}/subjects/{subject}/erase"
        )),
        other => Failure::from(other),
    })?;
    let topic = log.topic("events")?;
    let engine = Engine::start(topic.clone(), registry.clone())
        .map_err(|e| Failure::failed(e.to_string()))?;
    let command = Command::Contact {
        tenant: tenant.clone(),
        contact_id: subject.clone(),
        command: ContactCommand::EraseSubject {
            reason: args.reason,
            erased_at: annals_events::time::now_micros(),
        },
    };
    let meta = CommandMeta {
        command_id: Some(format!("erase-subject/{tenant}/{subject}")),
        actor: "annals-cli".into(),
        occurred_at: annals_events::time::now_micros(),
        ..CommandMeta::default()
    };
    let outcome = engine.execute_blocking(command, meta).map_err(|e| {
        if e.status() < 500 {
            Failure::usage(e.to_string())
        } else {
            Failure::failed(e.to_string())
        }
    })?;
    drop(engine);
    drop(topic);
    drop(log);
    // The erasure is durable in the log: now the key goes, then the read models follow.
    let had_key = keys.erase(&tenant, &subject).map_err(|e| {
        Failure::failed(format!(
            "{e} (the erasure of subject {subject} of {tenant} is recorded; `annals subject erase` again finishes it)"
        ))
    })?;
    let log = ctx.open_log_read_only()?;
    let topic = log.topic("events")?;
    let rt = runtime()?;
    rt.block_on(async {
        run_all(ctx, &topic, &registry, None).await?;
        let store = Store::open(&current_state_backend(ctx))
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        let purged = store.purge("contacts").await;
        store.close().await;
        purged.map_err(|e| Failure::failed(e.to_string()))
    })?;
    let recorded = outcome.events.first().map(|e| (e.partition, e.seq));
    if ctx.json {
        super::print_json(&serde_json::json!({
            "tenant": tenant,
            "subject": subject,
            "recorded": recorded.map(|(p, s)| serde_json::json!({"partition": p, "seq": s})),
            "key_deleted": had_key,
        }));
    } else {
        match recorded {
            Some((p, s)) => {
                println!("subject {subject} of {tenant}: erasure recorded at partition {p} seq {s}")
            }
            None => println!("subject {subject} of {tenant}: already erased"),
        }
        println!(
            "  key {}; personal fields now read as [erased]; read models updated",
            if had_key {
                "deleted"
            } else {
                "was already gone"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn export(ctx: &Context, args: ExportArgs) -> Result<ExitCode, Failure> {
    let Who { tenant, subject } = args.who;
    let keys = super::subject_keys(ctx)?;
    let registry = super::registry_with(&keys)?;
    let log = ctx.open_log_read_only()?;
    let topic = log.topic("events")?;
    let stream = contact_stream(&tenant, &subject);
    let events =
        annals_audit::subjects::subject_events(&topic, &registry, &tenant, &subject, &stream)
            .map_err(|e| Failure::failed(e.to_string()))?;
    if events.is_empty() {
        return Err(Failure::usage(format!(
            "annals holds nothing about subject `{subject}` of tenant `{tenant}` (no event names it)"
        )));
    }
    let rows = runtime()?.block_on(async {
        let store = Store::open(&current_state_backend(ctx))
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        annals_projections::migrate(&store, &CurrentState)
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        let mut tx = store
            .begin()
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        let rows = tx
            .fetch_texts(
                "SELECT tenant, contact_id, name, email, role, CAST(erased AS TEXT) FROM contacts \
                 WHERE tenant = $1 AND contact_id = $2",
                annals_projections::params![&tenant, &subject],
            )
            .await
            .map_err(|e| Failure::failed(e.to_string()));
        tx.rollback().await.ok();
        store.close().await;
        rows
    })?;
    let contacts: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "tenant": r[0], "contact_id": r[1], "name": r[2], "email": r[3],
                "role": r[4], "erased": r[5].as_deref() == Some("1"),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "tenant": tenant,
        "subject": subject,
        "exported_at": annals_events::time::format_micros(annals_events::time::now_micros()),
        "erased": !keys.exists(&tenant, &subject).map_err(Failure::failed)?,
        "events": events,
        "read_models": { "current_state": { "contacts": contacts } },
    });
    let text = serde_json::to_string_pretty(&doc).expect("serialisable");
    match &args.out {
        Some(path) => {
            std::fs::write(path, text + "\n")
                .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
            if !ctx.json {
                println!("wrote {} ({} events)", path.display(), events.len());
            }
        }
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
