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
pub mod schema;
pub mod serve;
pub mod sql;
pub mod subject;
pub mod verify;

/// The schema registry with the data dir's subject key store: personal fields are sealed when
/// written and opened (or shown as erased) when read.
pub fn registry(ctx: &crate::Context) -> Result<annals_schemas::Registry, crate::Failure> {
    registry_for(&ctx.data_dir)
}

/// [`registry`] for another data dir (benchmarks' scratch dirs).
pub fn registry_for(
    data_dir: &std::path::Path,
) -> Result<annals_schemas::Registry, crate::Failure> {
    let keys = annals_audit::SubjectKeys::open(data_dir);
    Ok(annals_schemas::Registry::builtin()?.with_sealer(std::sync::Arc::new(keys)))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}
