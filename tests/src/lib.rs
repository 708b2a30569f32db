//! annals-tests: workspace-level integration tests — the `annals` command as a user runs it,
//! crash recovery under SIGKILL, and tamper detection — plus the helpers they share.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `annals` binary of this workspace, built once per test process (same profile and
/// target dir as the tests). `ANNALS_BIN` overrides it.
pub fn annals_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("ANNALS_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "annals", "--bin", "annals"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the annals binary");
        assert!(status.success(), "building the annals binary failed");
        // This test binary lives in <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(|d| d.parent())
            .expect("target profile dir")
            .join("annals")
    })
    .clone()
}

/// Runs `annals` with `args`, from `cwd`, with no config file and no environment overrides.
pub fn annals(cwd: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(annals_bin());
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("ANNALS__") || k == "ANNALS_DATA_DIR" {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run annals")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small deterministic PRNG for test schedules (SplitMix64), seeded and printed by each test.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Byte offsets of the records of a segment file (after its 16-byte header).
pub fn record_offsets(segment: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = annals_events::log::segment::HEADER_LEN as usize;
    while pos + 8 <= segment.len() {
        out.push(pos);
        let len = u32::from_le_bytes(segment[pos..pos + 4].try_into().expect("4"));
        pos += 8 + (len & !annals_events::log::segment::COMMIT_END) as usize;
    }
    out
}

/// A test server's address from `var` (set by `scripts/test`), or `None` when the run skips
/// servers (`ANNALS_SKIP_SERVERS=1`, said in a note). Panics when neither is set: a server
/// test must not pass by doing nothing.
pub fn test_server(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("ANNALS_SKIP_SERVERS").as_deref() == Ok("1") => {
            eprintln!("note: skipped: ANNALS_SKIP_SERVERS=1 and no {var}");
            None
        }
        _ => panic!("{var} is not set (scripts/test sets it), or set ANNALS_SKIP_SERVERS=1"),
    }
}

/// A name no other test run uses (Kafka topic prefixes, schemas, databases): `tag`, this
/// process and the time.
pub fn unique_name(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros()
    )
}

/// Events in the whole log, from the output of `annals log stat --json`.
pub fn stat_events(stat_json: &[u8]) -> u64 {
    let rows: serde_json::Value = serde_json::from_slice(stat_json).expect("log stat --json");
    rows.as_array()
        .expect("one row per partition")
        .iter()
        .map(|r| r["events"].as_u64().expect("events"))
        .sum()
}
