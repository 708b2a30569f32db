//! `annals bench proofs`: what an auditor's checks cost — inclusion proofs generated and
//! verified per second, checkpoint signatures verified per second, the whole-log verify in
//! MB/s, and replay in events/s — on a demo log written to a scratch folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use annals_events::Log;
use annals_proof::merkle;

use crate::{Context, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Tenants of the demo dataset.
    #[arg(long, default_value_t = 10)]
    tenants: u32,
    /// Signals per tenant of the demo dataset.
    #[arg(long, default_value_t = 50_000)]
    signals_per_day: u32,
    /// Folder for the scratch data; removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Figures {
    events: u64,
    tree_build_leaves_per_s: f64,
    proofs_generated_per_s: f64,
    proofs_verified_per_s: f64,
    signatures_verified_per_s: f64,
    verify_mb_per_s: f64,
    verify_threads: usize,
    verify_checkpoints: u64,
    sha256_1_core_mb_per_s: f64,
    verify_per_core_vs_sha256: f64,
    /// Bytes of SHA-256 blocks full verify hashes per byte of log it reads.
    sha256_bytes_per_log_byte: f64,
    /// Full verify's hashing rate per core (SHA-256 block bytes/s) over `sha256_1_core_mb_per_s`.
    verify_hashing_per_core_vs_sha256: f64,
    replay_events_per_s: f64,
    replay_with_digest_events_per_s: f64,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode, Failure> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = parent.join(format!("annals-bench-proofs-{}", std::process::id()));
    let result = measure(&args, &scratch);
    std::fs::remove_dir_all(&scratch).ok();
    let f = result?;
    if ctx.json {
        super::print_json(&f);
        return Ok(ExitCode::SUCCESS);
    }
    println!("annals bench proofs: a demo log of {} events", f.events);
    println!(
        "  tree build       : {:>12.0} leaves/s",
        f.tree_build_leaves_per_s
    );
    println!(
        "  inclusion proofs : {:>12.0} generated/s",
        f.proofs_generated_per_s
    );
    println!(
        "  inclusion proofs : {:>12.0} verified/s (offline, annals-proof)",
        f.proofs_verified_per_s
    );
    println!(
        "  checkpoint sigs  : {:>12.0} verified/s (ed25519)",
        f.signatures_verified_per_s
    );
    println!(
        "  full verify      : {:>12.1} MB/s with {} thread(s) (CRC, chain, hashes, {} checkpoints' roots and signatures; median of {} runs)",
        f.verify_mb_per_s,
        f.verify_threads,
        f.verify_checkpoints,
        super::bench::VERIFY_RUNS
    );
    println!(
        "  sha-256, 1 core  : {:>12.1} MB/s (8 KiB blocks); full verify per core = {:.0}% of it",
        f.sha256_1_core_mb_per_s,
        f.verify_per_core_vs_sha256 * 100.0
    );
    println!(
        "  sha-256 work     : {:>12.2} bytes of SHA-256 blocks per byte of log (each event's chain hash, Merkle leaf and node): full verify can reach at most {:.0}% of 1 core's SHA-256 per core; it hashes at {:.0}% of it",
        f.sha256_bytes_per_log_byte,
        100.0 / f.sha256_bytes_per_log_byte,
        f.verify_hashing_per_core_vs_sha256 * 100.0
    );
    println!(
        "  replay           : {:>12.0} events/s into the in-memory aggregates ({:.0} events/s with their snapshot and digest)",
        f.replay_events_per_s, f.replay_with_digest_events_per_s
    );
    Ok(ExitCode::SUCCESS)
}

fn measure(args: &Args, scratch: &std::path::Path) -> Result<Figures, Failure> {
    let data = scratch.join("data");
    super::bench::write_demo(&data, args.tenants, args.signals_per_day)?;
    let log = Log::open_read_only(&data)?;
    let topic = log.topic("events")?;
    let events: u64 = topic.partitions().iter().map(|p| p.head().next_seq).sum();
    // The largest partition's leaves.
    let part = topic
        .partitions()
        .iter()
        .max_by_key(|p| p.head().next_seq)
        .ok_or_else(|| Failure::failed("the demo log has no partition"))?;
    let registry = super::registry_for(&data)?;
    let sha256_blocks = super::bench::sha256_blocks(&log, true)?;
    let mut leaves = Vec::with_capacity(part.head().next_seq as usize);
    let mut checkpoint = None;
    let mut reader = part.reader(0);
    while let Some(e) = reader.next_ref()? {
        leaves.push(annals_proof::leaf_hash(e.hash));
        if let Some(c) =
            annals_audit::checkpoint::decode_checkpoint(&e, &registry).map_err(Failure::failed)?
        {
            checkpoint = Some(c);
        }
    }
    let checkpoint = checkpoint.ok_or_else(|| Failure::failed("the demo signed no checkpoint"))?;
    let n = leaves.len() as u64;
    let started = Instant::now();
    let tree = annals_audit::Tree::new(leaves.clone());
    let tree_build = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let root = tree.root();
    let started = Instant::now();
    let paths: Vec<Vec<merkle::Hash>> = (0..n).map(|i| tree.path(i)).collect();
    let generated = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let started = Instant::now();
    for (i, path) in paths.iter().enumerate() {
        merkle::verify_inclusion(i as u64, n, &leaves[i], path, &root)
            .map_err(|e| Failure::failed(format!("a generated proof does not verify: {e:?}")))?;
    }
    let verified = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    // Signatures: the checkpoint the demo signed, verified over and over.
    let key = annals_audit::data_dir_public_key(&data)
        .map_err(|e| Failure::failed(e.to_string()))?
        .ok_or_else(|| Failure::failed("the demo wrote no checkpoint key"))?;
    let rounds = 2_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        checkpoint
            .verify_signature(&key)
            .map_err(|e| Failure::failed(e.to_string()))?;
    }
    let signatures = f64::from(rounds) / started.elapsed().as_secs_f64().max(1e-9);
    drop(topic);
    drop(log);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The whole of `annals verify`: chains and checkpoints, in one timed pass.
    let verify = || {
        let started = Instant::now();
        let (report, checkpoints) =
            annals_audit::check::verify_embedded(&data, threads, Some(&key), &registry)
                .map_err(|e| Failure::failed(e.to_string()))?;
        let seconds = started.elapsed().as_secs_f64();
        if !report.ok || !checkpoints.faults.is_empty() || checkpoints.checkpoints == 0 {
            return Err(Failure::failed(
                "verify found a fault (or no checkpoint) in the bench log",
            ));
        }
        Ok((
            report.bytes as f64 / 1e6 / seconds.max(1e-9),
            checkpoints.checkpoints,
            report.bytes,
        ))
    };
    let (verify_mb_per_s, verify_checkpoints, log_bytes) =
        super::bench::median_run(super::bench::VERIFY_RUNS, verify, |r| r.0)?;
    let sha = super::bench::sha256_speed();
    let (sha256_bytes_per_log_byte, verify_hashing_per_core_vs_sha256) =
        super::bench::sha256_work(sha256_blocks, log_bytes, verify_mb_per_s, threads, sha);
    let log = Log::open_read_only(&data)?;
    let replayed = annals_replay::replay(
        &log,
        &registry,
        &annals_replay::Replay::everything("events"),
    )
    .map_err(|e| Failure::failed(e.to_string()))?;
    Ok(Figures {
        events,
        tree_build_leaves_per_s: tree_build,
        proofs_generated_per_s: generated,
        proofs_verified_per_s: verified,
        signatures_verified_per_s: signatures,
        verify_mb_per_s,
        verify_checkpoints,
        verify_threads: threads,
        sha256_1_core_mb_per_s: sha,
        verify_per_core_vs_sha256: verify_mb_per_s / threads as f64 / sha,
        sha256_bytes_per_log_byte,
        verify_hashing_per_core_vs_sha256,
        replay_events_per_s: replayed.events_applied as f64 / replayed.apply_seconds.max(1e-9),
        replay_with_digest_events_per_s: replayed.events_applied as f64
            / replayed.seconds.max(1e-9),
    })
}
