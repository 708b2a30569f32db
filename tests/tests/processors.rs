//! The Kafka command path against the real broker: `annals process` instances own the
//! partitions of the commands topic through one consumer group. One instance is killed
//! (SIGKILL) mid-stream and another takes its partitions over; later one is frozen (SIGSTOP)
//! past its session, the others take over, and it resumes still believing it owns them (a
//! zombie). Every command is acknowledged, takes effect exactly once, and the chain verifies.
//! A last instance restores the partitions from the snapshots the stopped ones left.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals_domain::ingest::{IngestCommand, SignalInput};
use annals_domain::tenancy::{TenantCommand, TenantLimits};
use annals_events::log::Mode;
use annals_events::{KafkaConfig, Log, LogConfig};
use annals_processors::bus::{CommandBus, OutcomeRecord, PendingOutcome};
use annals_processors::{Command as Cmd, CommandMeta};
use annals_tests::{annals_bin, stderr, stdout, test_server, unique_name};

struct Instance {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// A failing test leaves no instance running.
impl Drop for Instance {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

fn start(dir: &std::path::Path, name: &'static str) -> Instance {
    start_with(dir, name, &[])
}

fn start_with(dir: &std::path::Path, name: &'static str, extra: &[&str]) -> Instance {
    let mut child = Command::new(annals_bin())
        .args(["--config", "annals.toml", "--data-dir", name, "process"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("[{name}] {line}");
            l.lock().unwrap().push(line);
        }
    });
    Instance { name, child, lines }
}

fn signal(i: &Instance, sig: i32) {
    // SAFETY: a signal to a child this test started.
    unsafe { libc::kill(i.child.id() as i32, sig) };
}

fn meta(id: String) -> CommandMeta {
    CommandMeta {
        command_id: Some(id),
        actor: "test".into(),
        occurred_at: 1_767_225_600_000_000,
        ..CommandMeta::default()
    }
}

/// Sends a command until it has an outcome (resending with the same id after a timeout, as a
/// client does).
fn settle(bus: &CommandBus, cmd: &Cmd, id: &str, first: Option<PendingOutcome>) -> OutcomeRecord {
    let mut pending = first;
    for _ in 0..8 {
        let p = match pending.take() {
            Some(p) => p,
            None => match bus.send(cmd.clone(), meta(id.to_owned())) {
                Ok(p) => p,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            },
        };
        match p.wait(Duration::from_secs(20)) {
            Ok(o) => return o,
            Err(e) => eprintln!("{id}: {e}; sending it again"),
        }
    }
    panic!("command {id} never got an outcome");
}

#[test]
fn processors_hand_partitions_over_without_losing_or_doubling_a_command() {
    let Some(brokers) = test_server("ANNALS_TEST_KAFKA") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("{}.", unique_name("proc"));
    std::fs::write(
        dir.path().join("annals.toml"),
        // One signing key for every instance (the log has one identity); checkpoints every
        // second with new events.
        format!("[log]\nbackend = \"kafka\"\npartitions = 4\n[log.kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{prefix}\"\nidempotence = false\n[audit]\nkey = \"checkpoint.ed25519\"\ncheckpoint_every_seconds = 1\n"),
    )
    .unwrap();
    let a = start(dir.path(), "a");
    let b = start(dir.path(), "b");
    // The instances create the topics; the client connects once they exist.
    let mut cfg = KafkaConfig::new(brokers);
    cfg.topic_prefix = prefix;
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        if let Ok(log) = Log::open_kafka(
            dir.path(),
            cfg.clone(),
            LogConfig::default(),
            Mode::ReadOnly,
        ) && log.topic("events").is_ok()
        {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the processors did not create the topics"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let topic = log.topic("events").unwrap();
    let bus = CommandBus::connect(&log, &topic).unwrap();

    let tenants: Vec<String> = (0..8).map(|t| format!("tenant-{t}")).collect();
    for t in &tenants {
        let cmd = Cmd::Tenancy {
            tenant: t.clone(),
            command: TenantCommand::ProvisionTenant {
                tenant: t.clone(),
                name: "T".into(),
                plan: "growth".into(),
                region: "eu".into(),
                limits: TenantLimits {
                    max_signals_per_day: 1_000_000,
                    max_sources: 8,
                    rate_per_second: 100_000,
                },
            },
        };
        let o = settle(&bus, &cmd, &format!("provision-{t}"), None);
        assert!(o.error.is_none(), "{o:?}");
    }

    const COMMANDS: usize = 240;
    const SIGNALS: usize = 3;
    let commands: Vec<(String, Cmd)> = (0..COMMANDS)
        .map(|i| {
            let tenant = tenants[i % tenants.len()].clone();
            let signals = (0..SIGNALS)
                .map(|j| SignalInput {
                    signal_id: format!("sig-{i}-{j}"),
                    ts: 1_767_225_600_000_000 + (i * SIGNALS + j) as i64,
                    attributes: Default::default(),
                    value: Some(j as f64),
                    unit: None,
                })
                .collect();
            (
                format!("ingest-{i}"),
                Cmd::Ingest(IngestCommand::IngestSignals {
                    tenant,
                    source: "web".into(),
                    signals,
                }),
            )
        })
        .collect();
    let mut c: Option<Instance> = None;
    let mut acked = 0;
    for chunk in commands.chunks(16) {
        let sent: Vec<Option<PendingOutcome>> = chunk
            .iter()
            .map(|(id, cmd)| bus.send(cmd.clone(), meta(id.clone())).ok())
            .collect();
        for ((id, cmd), p) in chunk.iter().zip(sent) {
            let o = settle(&bus, cmd, id, p);
            assert!(o.error.is_none(), "{id}: {o:?}");
            acked += 1;
        }
        eprintln!("{acked} commands acknowledged");
        if acked == 80 {
            // An instance dies mid-stream. Its partitions wait for its session to expire (6 s)
            // and go to B, the survivor; then a new instance joins. (tansu notices an expired
            // member only when the group next hears from another one, so C joins after that.)
            signal(&a, libc::SIGKILL);
            std::thread::sleep(Duration::from_secs(9));
            c = Some(start(dir.path(), "c"));
        }
        if acked == 160 {
            // B freezes past its session: C takes everything; B then resumes as a zombie.
            signal(&b, libc::SIGSTOP);
            std::thread::sleep(Duration::from_secs(10));
            signal(&b, libc::SIGCONT);
        }
    }
    let c = c.unwrap();
    assert!(
        c.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("owns partitions [")),
        "the new instance took partitions over"
    );
    for i in [&b, &c] {
        signal(i, libc::SIGINT);
    }
    for i in [b, c] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = i;
        while i.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                signal(&i, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} exited", i.name);
    }

    // A new instance restores the partitions from the snapshots the stopped ones left. In a
    // group of its own it reads every command again from the start: each is recognised by its
    // id, so nothing is applied twice (checked below).
    let d = start_with(dir.path(), "d", &["--group", "redelivery"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !d
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("restored from a snapshot"))
    {
        assert!(
            Instant::now() < deadline,
            "no snapshot used: {:?}",
            d.lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (id, cmd) = &commands[0];
    let again = settle(&bus, cmd, id, None);
    assert!(again.error.is_none(), "{again:?}");
    signal(&d, libc::SIGINT);
    drop(d);
    drop(bus);

    // Exactly once: every command's signals are in the log once.
    let check = Log::open_kafka(dir.path(), cfg, LogConfig::default(), Mode::ReadOnly).unwrap();
    let topic = check.topic("events").unwrap();
    let mut per_command: std::collections::HashMap<String, usize> = Default::default();
    for p in topic.partitions() {
        let mut r = p.reader(0);
        while let Some(e) = r.next().unwrap() {
            if e.event_type == "ingest.SignalIngested" {
                *per_command
                    .entry(e.causation_id.unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }
    for (id, _) in &commands {
        assert_eq!(per_command.get(id), Some(&SIGNALS), "command {id}");
    }
    assert_eq!(per_command.values().sum::<usize>(), COMMANDS * SIGNALS);
    // The chain verifies; a zombie's refused appends, if any, are reported off the chain.
    let o = Command::new(annals_bin())
        .args(["--config", "annals.toml", "--data-dir", "a", "verify"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    eprintln!("{}", stdout(&o));
    // The instances signed checkpoints of the partitions they owned, with the shared key:
    // every one verifies, and an acknowledged event is proved included in one.
    let report: serde_json::Value = serde_json::from_slice(
        &Command::new(annals_bin())
            .args([
                "--config",
                "annals.toml",
                "--data-dir",
                "a",
                "--json",
                "verify",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let checkpoints = &report["checkpoints"];
    assert!(
        checkpoints["checkpoints"].as_u64().unwrap_or(0) > 0
            && checkpoints["signatures_checked"] == true,
        "{report}"
    );
    let first = topic.partitions().iter().find_map(|p| {
        let mut r = p.reader(0);
        std::iter::from_fn(|| r.next().unwrap()).find(|e| e.event_type == "ingest.SignalIngested")
    });
    let event = first.expect("an ingested signal").event_id.to_string();
    let o = Command::new(annals_bin())
        .args([
            "--config",
            "annals.toml",
            "--data-dir",
            "a",
            "prove",
            &event,
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// A snapshot larger than a Kafka record (4 MiB) is saved as chunks and read back whole; a
/// later small one replaces it.
#[test]
fn snapshots_larger_than_a_kafka_record_are_saved_in_chunks() {
    use annals_processors::bus::KafkaSnapshots;
    use annals_processors::snapshot::SnapshotStore;
    let Some(brokers) = test_server("ANNALS_TEST_KAFKA") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = KafkaConfig::new(brokers);
    cfg.topic_prefix = format!("{}.", unique_name("snap"));
    let log = Log::open_kafka(dir.path(), cfg, LogConfig::default(), Mode::ReadWrite).unwrap();
    let store = KafkaSnapshots::open(&log, 2).unwrap();
    assert_eq!(store.load(0).unwrap(), None);
    let big: Vec<u8> = (0..(9usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
    store.save(0, &big).unwrap();
    assert!(
        store.load(0).unwrap().as_deref() == Some(&big[..]),
        "the big snapshot comes back whole"
    );
    store.save(0, b"small").unwrap();
    assert_eq!(store.load(0).unwrap().as_deref(), Some(&b"small"[..]));
    assert_eq!(store.load(1).unwrap(), None);
}
