//! One module per top-level command.

pub mod bench;
pub mod bench_projections;
pub mod bench_serve;
pub mod checkpoint;
pub mod demo;
pub mod evidence;
pub mod history;
pub mod keys;
pub mod log;
pub mod projections;
pub mod prove;
pub mod replay;
pub mod schema;
pub mod serve;
pub mod sql;
pub mod verify;

/// Prints a value as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}
