//! `annals schema list|check`: the published event schemas and their compatibility.

use std::process::ExitCode;

use annals_schemas::Registry;

use crate::{Context, Failure};

#[derive(clap::Subcommand)]
pub enum SchemaCommand {
    /// Every published schema: id, event type, version, file.
    List,
    /// Check that every published file is unchanged and every old version resolves to the latest.
    Check,
}

pub fn run(ctx: &Context, cmd: SchemaCommand) -> Result<ExitCode, Failure> {
    // `builtin` fails on a changed, missing or unpublished file, naming it and what to do.
    let registry = Registry::builtin()?;
    match cmd {
        SchemaCommand::List => {
            if ctx.json {
                let rows: Vec<_> = registry
                    .all()
                    .iter()
                    .map(|s| serde_json::json!({"schema_id": s.id, "event_type": s.event_type, "version": s.version, "path": s.path, "sha256": s.sha256}))
                    .collect();
                super::print_json(&rows);
            } else {
                println!("{:>4}  {:<32} {:>3}  file", "id", "event type", "ver");
                for s in registry.all() {
                    println!(
                        "{:>4}  {:<32} {:>3}  schemas/{}",
                        s.id,
                        s.event_type,
                        format!("v{}", s.version),
                        s.path
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Check => {
            let results = registry.check();
            let failed = results.iter().filter(|r| !r.ok).count();
            if ctx.json {
                let rows: Vec<_> = results
                    .iter()
                    .map(|r| serde_json::json!({"event_type": r.event_type, "writer_version": r.writer_version, "reader_version": r.reader_version, "ok": r.ok, "detail": r.detail}))
                    .collect();
                super::print_json(
                    &serde_json::json!({"ok": failed == 0, "schemas": registry.all().len(), "resolutions": rows}),
                );
            } else {
                for r in &results {
                    println!(
                        "{} {} v{} -> v{}: {}",
                        if r.ok { "ok  " } else { "FAIL" },
                        r.event_type,
                        r.writer_version,
                        r.reader_version,
                        r.detail
                    );
                }
                println!(
                    "{} published schema(s) unchanged; {} old version(s) checked, {failed} incompatible",
                    registry.all().len(),
                    results.len()
                );
            }
            if failed == 0 {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Failure::failed(format!(
                    "{failed} schema version(s) no longer resolve to the latest version"
                )))
            }
        }
    }
}
