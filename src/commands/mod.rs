//! One module per top-level command.

pub mod bench;
pub mod bench_kafka;
pub mod bench_projections;
pub mod bench_proofs;
pub mod bench_serve;
pub mod checkpoint;
pub mod demo;
pub mod evidence;
pub mod history;
pub mod keys;
pub mod log;
pub mod process;
pub mod projections;
pub mod prove;
pub mod replay;
pub mod retention;
pub mod schema;
pub mod serve;
pub mod sql;
pub mod subject;
pub mod verify;

/// The schema registry with the configured subject key store: personal fields are sealed when
/// written and opened (or shown as erased) when read.
pub fn registry(ctx: &crate::Context) -> Result<annals_schemas::Registry, crate::Failure> {
    registry_with(&subject_keys(ctx)?)
}

/// The subject key store `[privacy] key_store` names: the data dir's files, or the PostgreSQL
/// table (connected now, so a wrong URL or a stopped server is reported before anything runs).
pub fn subject_keys(ctx: &crate::Context) -> Result<annals_audit::SubjectKeys, crate::Failure> {
    match ctx.config.key_store_postgres() {
        None => Ok(annals_audit::SubjectKeys::open(&ctx.data_dir)),
        Some((url, schema)) => {
            let keys =
                annals_audit::SubjectKeys::postgres(url, schema).map_err(crate::Failure::failed)?;
            let files = ctx.data_dir.join("keys").join("subjects");
            if std::fs::read_dir(&files).is_ok_and(|mut d| d.next().is_some()) {
                tracing::warn!(
                    data_dir_keys = %files.display(),
                    key_store = %keys.describe(),
                    "the data dir holds subject keys, but [privacy] key_store = \"postgres\" does not use them: personal data sealed under them reads as erased"
                );
            }
            Ok(keys)
        }
    }
}

/// The schema registry sealing and opening with `keys`.
pub fn registry_with(
    keys: &annals_audit::SubjectKeys,
) -> Result<annals_schemas::Registry, crate::Failure> {
    Ok(annals_schemas::Registry::builtin()?.with_sealer(std::sync::Arc::new(keys.clone())))
}

/// [`registry`] for another data dir (benchmarks' scratch dirs), with its own key files.
pub fn registry_for(
    data_dir: &std::path::Path,
) -> Result<annals_schemas::Registry, crate::Failure> {
    registry_with(&annals_audit::SubjectKeys::open(data_dir))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}
