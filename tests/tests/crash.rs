//! Crash safety: a child process appending in a loop is killed with SIGKILL at random moments;
//! on reopen every acknowledged event is there, nothing partial is, and verify passes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use annals_events::{Log, LogConfig, verify::verify};
use annals_tests::Rng;

#[test]
fn sigkill_never_loses_an_acknowledged_event() {
    let seed = annals_events::time::now_micros() as u64;
    eprintln!("schedule seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // partition → (last acknowledged seq, its hash)
    let mut acked: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    let mut total_acks = 0;
    for round in 0..8 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(dir.path())
            .arg(rng.next().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(150 + rng.below(500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 5, "ack line {line:?}");
            let (p, last): (u32, u64) = (f[1].parse().unwrap(), f[3].parse().unwrap());
            acked.insert(p, (last, f[4].to_owned()));
        }
        total_acks += lines.len();

        // Reopen as the next writer would: recovery runs, then every acknowledgement must hold.
        {
            let log = Log::open(
                dir.path(),
                LogConfig {
                    segment_bytes: 256 * 1024,
                    ..LogConfig::default()
                },
            )
            .unwrap();
            let topic = log.topic("events");
            if let Ok(topic) = topic {
                for (&p, (seq, hash)) in &acked {
                    let part = topic.partition(p).unwrap();
                    assert!(
                        part.head().next_seq > *seq,
                        "round {round}: partition {p} lost acknowledged seq {seq}"
                    );
                    let e = part.reader(*seq).next().unwrap().unwrap();
                    assert_eq!(
                        &hex::encode(e.hash),
                        hash,
                        "round {round}: partition {p} seq {seq} changed"
                    );
                }
            } else {
                assert!(acked.is_empty(), "acknowledged events but no topic");
            }
        }
        let report = verify(dir.path(), 1).unwrap();
        assert!(report.ok, "round {round}: {:?}", report.faults);
    }
    assert!(
        total_acks > 0,
        "the child never got to acknowledge anything"
    );
}
