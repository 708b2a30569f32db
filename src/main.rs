//! The `annals` command: parses arguments and config, wires the crates, prints.
//! Exit codes: 0 success, 1 a check failed, 2 bad usage or input. Errors are one line on stderr.

mod commands;
mod config;

/// mimalloc: many small allocations on the read-model, replay and command paths.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's option setter (`mi_option_set` in mimalloc.h), part of the linked allocator.
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3).
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

/// How long freed memory stays with the allocator before it goes back to the OS. Pages given
/// back and faulted in again are zeroed by the kernel each time, which dominated batch work
/// (replays, rebuilds) on virtual machines: batch commands keep their memory until they exit,
/// servers give it back after a second. `MIMALLOC_PURGE_DELAY` still decides if set.
fn keep_freed_memory(server: bool) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a plain integer option of the allocator this binary links; safe at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, if server { 1_000 } else { -1 }) };
}

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "annals",
    version,
    about = "Event-sourced platform: an immutable, hash-chained, schema-versioned event log and what is built from it"
)]
struct Cli {
    /// Embedded data (log/, read-models/, keys/).
    #[arg(
        long,
        global = true,
        default_value = "./annals-data",
        env = "ANNALS_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Config file (default: ./annals.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print reports as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: send a deterministic golden dataset through the command path, then verify the log.
    Demo(commands::demo::Args),
    /// Serve the HTTP API (commands, history, health, metrics) until Ctrl-C or SIGTERM.
    Serve(commands::serve::Args),
    /// Check every partition: CRC, chain links, hashes, seq contiguity, indexes, and every
    /// checkpoint's root and signature.
    Verify(commands::verify::Args),
    /// Sign the Merkle root of each partition and append the checkpoint to it.
    Checkpoint(commands::checkpoint::Args),
    /// Print a JSON proof: an event's inclusion in a signed checkpoint, or (--consistency)
    /// that a later checkpoint extends an earlier one.
    Prove(commands::prove::ProveArgs),
    /// Check a proof, or (--bundle) an evidence bundle, offline with the log's public key alone.
    VerifyProof(commands::prove::VerifyProofArgs),
    /// Write an evidence bundle: a tenant's events of a period (by `recorded_at`, the log's
    /// clock), their inclusion proofs, the checkpoint, the public key and a README, as a tar.
    Evidence(commands::evidence::Args),
    /// The checkpoint-signing key.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Rebuild aggregate state as of a bound (head, a seq, a time) and print its digest.
    Replay(commands::replay::Args),
    /// One aggregate's events with who, when and why.
    History(commands::history::Args),
    /// The read models built from the log: status, catch up now, rebuild.
    #[command(subcommand)]
    Projections(commands::projections::ProjectionsCommand),
    /// Data-subject requests: erase a subject's personal data, export what annals holds about it.
    #[command(subcommand)]
    Subject(commands::subject::SubjectCommand),
    /// Retention policies of the analytics read model: review (dry run) and remove rows past
    /// their time to live, both recorded as events.
    #[command(subcommand)]
    Retention(commands::retention::RetentionCommand),
    /// Query the analytics tables with SQL (ClickHouse when configured, otherwise DataFusion
    /// over the embedded Parquet files).
    Sql(commands::sql::Args),
    /// Inspect the log.
    #[command(subcommand)]
    Log(commands::log::LogCommand),
    /// Run a command-processor instance of the Kafka deployment (owns partitions through a
    /// consumer group).
    Process(commands::process::Args),
    /// The event schemas.
    #[command(subcommand)]
    Schema(commands::schema::SchemaCommand),
    /// Measure throughput (use a release build: `cargo run --release -- bench log`).
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

/// A failure the user sees as one line, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Bad usage or input: exit 2.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    /// A check failed or the system could not do it: exit 1.
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<annals_events::LogError> for Failure {
    fn from(e: annals_events::LogError) -> Failure {
        use annals_events::LogError as E;
        match e {
            E::NoLog { .. }
            | E::NoTopic(_)
            | E::NoPartition { .. }
            | E::BadName(_)
            | E::PartitionCount { .. }
            | E::InvalidEvent(_)
            | E::Locked { .. }
            | E::ReadOnly => Failure::usage(e.to_string()),
            _ => Failure::failed(e.to_string()),
        }
    }
}

impl From<annals_schemas::SchemaError> for Failure {
    fn from(e: annals_schemas::SchemaError) -> Failure {
        Failure::failed(e.to_string())
    }
}

/// What every command gets.
pub struct Context {
    pub data_dir: PathBuf,
    pub config: config::Config,
    pub json: bool,
}

impl Context {
    /// Opens the log for writing on the configured backend (`[log] backend`).
    pub fn open_log(
        &self,
        cfg: annals_events::LogConfig,
    ) -> Result<annals_events::Log, annals_events::LogError> {
        let cfg = annals_events::LogConfig {
            segment_bytes: self.config.log.segment_bytes,
            ..cfg
        };
        match self.config.log.kafka_config() {
            Some(k) => annals_events::Log::open_kafka(
                &self.data_dir,
                k,
                cfg,
                annals_events::log::Mode::ReadWrite,
            ),
            None => annals_events::Log::open(&self.data_dir, cfg),
        }
    }

    /// Opens the log for reading only on the configured backend: takes no lock, changes nothing.
    pub fn open_log_read_only(&self) -> Result<annals_events::Log, annals_events::LogError> {
        self.config.log.open_read_only(&self.data_dir)
    }
}

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader of our output goes away
    // (`annals log tail | head`), instead of failing on the broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            e.print().ok();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANNALS_LOG")
                // librdkafka reports every failed connection attempt while it retries; the
                // command reports the outcome (ANNALS_LOG=rdkafka=debug shows them).
                .unwrap_or_else(|_| "warn,librdkafka=off,rdkafka=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match config::Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(msg) => return fail(Failure::usage(msg)),
    };
    keep_freed_memory(matches!(
        cli.command,
        Command::Serve(_) | Command::Process(_)
    ));
    let ctx = Context {
        data_dir: cli.data_dir,
        config,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Demo(a) => commands::demo::run(&ctx, a),
        Command::Serve(a) => commands::serve::run(&ctx, a),
        Command::Verify(a) => commands::verify::run(&ctx, a),
        Command::Checkpoint(a) => commands::checkpoint::run(&ctx, a),
        Command::Prove(a) => commands::prove::prove(&ctx, a),
        Command::VerifyProof(a) => commands::prove::verify_proof(&ctx, a),
        Command::Evidence(a) => commands::evidence::run(&ctx, a),
        Command::Keys(c) => commands::keys::run(&ctx, c),
        Command::Replay(a) => commands::replay::run(&ctx, a),
        Command::History(a) => commands::history::run(&ctx, a),
        Command::Projections(c) => commands::projections::run(&ctx, c),
        Command::Sql(a) => commands::sql::run(&ctx, a),
        Command::Subject(c) => commands::subject::run(&ctx, c),
        Command::Retention(c) => commands::retention::run(&ctx, c),
        Command::Log(c) => commands::log::run(&ctx, c),
        Command::Process(a) => commands::process::run(&ctx, a),
        Command::Schema(c) => commands::schema::run(&ctx, c),
        Command::Bench(c) => commands::bench::run(&ctx, c),
    };
    match result {
        Ok(code) => code,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    eprintln!("error: {}", f.message);
    ExitCode::from(f.code)
}
