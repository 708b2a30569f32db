//! `annals verify`: checks every partition of an embedded log from its files alone (for a
//! log on Kafka see [`crate::log::kafka::verify`]).
//!
//! For each record: frame length and CRC32C, envelope decoding, partition, seq contiguity, the
//! `prev_hash` link and the recomputed chain hash; for each segment: header, base seq and index
//! entries. Partitions are checked in parallel, each stopping at its first fault. Reads files
//! only: it needs no lock and changes nothing, so an auditor can run it on a copy.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::chain::{self, Hash};
use crate::envelope::ChainFields;
use crate::log::LogError;
use crate::log::segment::{self, Frame, HEADER_LEN, INDEX_ENTRY_LEN, Scanner};

/// The first fault found in a partition.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Fault {
    pub topic: String,
    pub partition: u32,
    /// The seq of the event that is wrong (or that would come next, for a damaged tail).
    pub seq: u64,
    pub segment: PathBuf,
    /// Byte position in the segment.
    pub position: u64,
    /// Stable code: `header`, `frame`, `commit`, `decode`, `partition`, `seq`, `prev_hash`,
    /// `hash`, `index`.
    pub kind: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {} partition {} seq {}: {} ({}, byte {})",
            self.topic,
            self.partition,
            self.seq,
            self.detail,
            self.segment.display(),
            self.position
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: u32,
    pub events: u64,
    pub bytes: u64,
    pub segments: usize,
    /// Hash of the last verified event (hex), the genesis value if none.
    pub head_hash: String,
    /// A writer was appending while verify ran; its unfinished last write was not checked.
    pub writer_active: bool,
    pub fault: Option<Fault>,
    /// Kafka: records the chain does not include (the first 100), and how many there are.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub off_chain: Vec<crate::log::kafka::verify::OffChain>,
    #[serde(skip_serializing_if = "is_zero")]
    pub off_chain_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub topics: usize,
    pub partitions: Vec<PartitionReport>,
    pub events: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub threads: usize,
    pub faults: Vec<Fault>,
}

/// Sees every verified event of one partition, in seq order, as verify reads it: a way to
/// check more of each event (the checkpoints, in annals-audit) in the same single pass.
pub trait Observer: Send {
    /// An event whose frame, place in the chain and hash hold: its seq, its hash and its
    /// canonical bytes without the hash. After a fault no more events come.
    fn event(&mut self, seq: u64, hash: &Hash, without_hash: &[u8]);

    /// The partition is done (no more events): a chance to free what only `event` needed.
    fn end(&mut self) {}
}

/// No observer.
impl Observer for () {
    fn event(&mut self, _: u64, _: &Hash, _: &[u8]) {}
}

/// Verifies every topic under `<data_dir>/log` with up to `threads` threads (0: one per core).
pub fn verify(data_dir: &Path, threads: usize) -> Result<VerifyReport, LogError> {
    verify_observed(data_dir, threads, |_, _| ()).map(|(report, _)| report)
}

/// [`verify`], showing each partition's verified events to an observer made for it by
/// `observer_for(topic, partition)`. The observers come back in the order of the report's
/// partitions.
pub fn verify_observed<O: Observer>(
    data_dir: &Path,
    threads: usize,
    observer_for: impl Fn(&str, u32) -> O + Sync,
) -> Result<(VerifyReport, Vec<O>), LogError> {
    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        return Err(LogError::NoLog {
            path: data_dir.to_path_buf(),
        });
    }
    let started = Instant::now();
    let mut work = Vec::new();
    let mut topics = 0;
    let mut names: Vec<_> = std::fs::read_dir(&log_dir)
        .map_err(LogError::io(format!("cannot list {}", log_dir.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("topic.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        topics += 1;
        let meta = std::fs::read(log_dir.join(&name).join("topic.json"))
            .map_err(LogError::io("cannot read topic.json"))?;
        let partitions = serde_json::from_slice::<serde_json::Value>(&meta)
            .ok()
            .and_then(|v| v.get("partitions")?.as_u64())
            .ok_or_else(|| LogError::Corrupt {
                topic: name.clone(),
                partition: 0,
                seq: 0,
                detail: "topic.json is not valid".into(),
            })?;
        for p in 0..partitions as u32 {
            work.push((name.clone(), p, log_dir.join(&name).join(p.to_string())));
        }
    }
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let threads = threads.min(work.len()).max(1);
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(work.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut scratch = Scratch::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((topic, p, dir)) = work.get(i) else {
                        break;
                    };
                    let mut observer = observer_for(topic, *p);
                    let report = verify_partition(topic, *p, dir, &mut observer, &mut scratch);
                    observer.end();
                    let done = report.map(|r| (r, observer));
                    results.lock().expect("results lock").push(done);
                }
            });
        }
    });
    let mut done: Vec<(PartitionReport, O)> = results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .collect::<Result<_, _>>()?;
    done.sort_by(|(a, _), (b, _)| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let (partitions, observers): (Vec<PartitionReport>, Vec<O>) = done.into_iter().unzip();
    let seconds = started.elapsed().as_secs_f64();
    let events = partitions.iter().map(|p| p.events).sum();
    let bytes = partitions.iter().map(|p| p.bytes).sum::<u64>();
    let faults: Vec<Fault> = partitions.iter().filter_map(|p| p.fault.clone()).collect();
    let report = VerifyReport {
        ok: faults.is_empty(),
        topics,
        events,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        threads,
        partitions,
        faults,
    };
    Ok((report, observers))
}

/// The buffers a verify thread reuses from segment to segment and partition to partition:
/// fresh memory costs page faults, a noticeable share of a verify that runs at memory speed.
#[derive(Default)]
struct Scratch {
    /// A read buffer for the segments not read in place.
    buf: Vec<u8>,
    /// The segment's index file.
    index: Vec<u8>,
    rehash: Rehash,
}

/// Verifies one partition folder, stopping at its first fault.
fn verify_partition(
    topic: &str,
    partition: u32,
    dir: &Path,
    observer: &mut impl Observer,
    scratch: &mut Scratch,
) -> Result<PartitionReport, LogError> {
    let writer_active = writer_holds_lock(dir);
    let mut report = PartitionReport {
        topic: topic.to_owned(),
        partition,
        events: 0,
        bytes: 0,
        segments: 0,
        head_hash: hex::encode(chain::GENESIS),
        writer_active,
        fault: None,
        off_chain: Vec::new(),
        off_chain_count: 0,
    };
    let bases = match segment::list_segments(dir) {
        Ok(b) => b,
        Err(e) => {
            report.fault = Some(Fault {
                topic: topic.into(),
                partition,
                seq: 0,
                segment: dir.into(),
                position: 0,
                kind: "header",
                detail: format!("partition folder cannot be listed: {e}"),
            });
            return Ok(report);
        }
    };
    let mut seq = 0u64;
    let mut prev: Hash = chain::GENESIS;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::segment_path(dir, base);
        let is_last = i + 1 == bases.len();
        report.segments += 1;
        let fault = |seq, position, kind, detail: String| Fault {
            topic: topic.into(),
            partition,
            seq,
            segment: path.clone(),
            position,
            kind,
            detail,
        };
        if base != seq {
            report.fault = Some(fault(
                seq,
                0,
                "seq",
                format!("segment starts at seq {base} but the previous one ended before seq {seq}"),
            ));
            break;
        }
        if let Err(problem) = segment::check_header(&path).map_err(LogError::reading(&path))? {
            report.fault = Some(fault(seq, 0, "header", problem.into()));
            break;
        }
        let len = std::fs::metadata(&path)
            .map_err(LogError::reading(&path))?
            .len();
        let index = &mut scratch.index;
        index.clear();
        if File::open(segment::index_path(&path))
            .and_then(|mut f| f.read_to_end(index))
            .is_err()
        {
            index.clear();
        }
        let index = &scratch.index;
        if !index.len().is_multiple_of(INDEX_ENTRY_LEN) {
            report.fault = Some(fault(
                seq,
                0,
                "index",
                format!(
                    "index file is {} bytes, not a whole number of entries; delete it and reopen the log to rebuild it",
                    index.len()
                ),
            ));
            break;
        }
        let mut index = index.chunks_exact(INDEX_ENTRY_LEN).map(|c| {
            (
                u64::from_le_bytes(c[0..8].try_into().expect("8")),
                u64::from_le_bytes(c[8..16].try_into().expect("8")),
                i64::from_le_bytes(c[16..24].try_into().expect("8")),
            )
        });
        let mut next_entry = index.next();
        // Sealed segments are read in place; the last one, which a writer may still extend
        // (or recovery shorten), through a buffer.
        let mut sc = if is_last {
            Scanner::open_in(&path, HEADER_LEN, len, std::mem::take(&mut scratch.buf))
        } else {
            Scanner::open_sealed(&path, HEADER_LEN)
        }
        .map_err(LogError::reading(&path))?;
        sc.defer_crc();
        let mut body_end = HEADER_LEN;
        let mut tail = Vec::with_capacity(64);
        let rehash = &mut scratch.rehash;
        rehash.clear();
        let mut failed = None;
        // Where the last commit of this segment ended: (byte position, next seq).
        let mut committed = (HEADER_LEN, seq);
        loop {
            match sc.next_frame().map_err(LogError::reading(&path))? {
                Frame::End => {
                    if committed.1 != seq && !(is_last && writer_active) {
                        report.fault = Some(fault(
                            committed.1,
                            committed.0,
                            "commit",
                            format!(
                                "the last commit is incomplete: events from seq {} on lack its commit-end mark (a torn write; opening the log for writing cuts it off)",
                                committed.1
                            ),
                        ));
                    }
                    break;
                }
                Frame::Invalid { pos, problem } => {
                    if !(is_last && writer_active) {
                        report.fault = Some(fault(
                            seq,
                            pos,
                            "frame",
                            format!(
                                "{problem}: {} bytes after the last whole record are damaged or a torn write (opening the log for writing cuts a torn tail off and keeps it in a .torn file)",
                                len - pos
                            ),
                        ));
                    }
                    break;
                }
                Frame::Record { pos, commit_end } => {
                    body_end = sc.position();
                    let indexed = next_entry.is_some_and(|(_, ipos, _)| ipos <= pos);
                    let (hash, recorded_at) =
                        match check_links(sc.body(), partition, seq, &prev, indexed, &mut tail) {
                            Ok(v) => v,
                            // A damaged frame can fail any check: its CRC names it best.
                            Err(_) if !frame_crc_holds(sc.head(), sc.body()) => {
                                report.fault = Some(fault(seq, pos, "frame", CRC.into()));
                                break;
                            }
                            Err((kind, detail)) => {
                                report.fault = Some(fault(seq, pos, kind, detail));
                                break;
                            }
                        };
                    rehash.push(partition, seq, &prev, sc.head(), sc.body(), pos);
                    // The index must point at this record if it names its position.
                    while let Some((iseq, ipos, iat)) = next_entry {
                        if ipos > pos {
                            break;
                        }
                        if ipos < pos || iseq != seq || Some(iat) != recorded_at {
                            report.fault = Some(fault(
                                iseq.min(seq),
                                ipos,
                                "index",
                                format!(
                                    "index entry (seq {iseq}, byte {ipos}) does not match the record there; delete the .idx file and reopen the log to rebuild it"
                                ),
                            ));
                            break;
                        }
                        next_entry = index.next();
                    }
                    if report.fault.is_some() {
                        break;
                    }
                    prev = hash;
                    seq += 1;
                    if commit_end {
                        committed = (sc.position(), seq);
                    }
                    if rehash.is_full() {
                        failed = rehash.check(observer);
                        if failed.is_some() {
                            break;
                        }
                    }
                }
            }
        }
        // The records still waiting for their CRC and hash come before any fault found after
        // them: the first of them that fails is the fault, and the partition ends before it.
        if let Some((bad, kind)) = failed.or_else(|| rehash.check(observer)) {
            (seq, prev) = (bad.seq, bad.prev);
            body_end = bad.pos;
            let torn_tail = kind == "frame" && is_last && writer_active;
            report.fault = (!torn_tail).then(|| {
                let detail = if kind == "frame" { CRC } else { ALTERED };
                fault(seq, bad.pos, kind, detail.into())
            });
        }
        if report.fault.is_none()
            && let Some((iseq, ipos, _)) = next_entry.filter(|_| !(is_last && writer_active))
        {
            report.fault = Some(fault(
                iseq,
                ipos,
                "index",
                format!(
                    "index entry (seq {iseq}, byte {ipos}) points past the last record; delete the .idx file and reopen the log to rebuild it"
                ),
            ));
        }
        report.bytes += body_end;
        if let Some(buf) = sc.into_buffer() {
            scratch.buf = buf;
        }
        if report.fault.is_some() {
            break;
        }
    }
    report.events = seq;
    report.head_hash = hex::encode(prev);
    Ok(report)
}

/// Checks one record's place in the chain: its partition, seq and `prev_hash`. Returns its
/// stored hash (re-hashed later, by [`Rehash`]), and its `recorded_at` when `want_time` (for
/// the index check).
///
/// The fast path compares the record's last fields with their expected encoding instead of
/// decoding it (partition, seq and prev_hash sit just before the hash, and Avro's varints are
/// canonical); any mismatch, or an index check, takes the full decoding to say what is wrong.
fn check_links(
    body: &[u8],
    partition: u32,
    seq: u64,
    prev: &Hash,
    want_time: bool,
    tail: &mut Vec<u8>,
) -> Result<(Hash, Option<i64>), (&'static str, String)> {
    tail.clear();
    crate::avro::put_long(tail, i64::from(partition));
    crate::avro::put_long(tail, seq as i64);
    tail.extend_from_slice(prev);
    let n = body.len();
    let fast = n >= tail.len() + 32 + 16 && body[n - 32 - tail.len()..n - 32] == tail[..];
    let mut recorded_at = None;
    if !fast || want_time {
        let env = ChainFields::decode(body)
            .map_err(|e| ("decode", format!("the envelope does not decode: {e}")))?;
        if env.partition != partition {
            return Err((
                "partition",
                format!("the event says partition {}", env.partition),
            ));
        }
        if env.seq != seq {
            return Err((
                "seq",
                format!("the event says seq {}, expected {seq}", env.seq),
            ));
        }
        if env.prev_hash != prev {
            return Err((
                "prev_hash",
                "prev_hash does not link to the previous event's hash".into(),
            ));
        }
        recorded_at = Some(env.recorded_at);
    }
    Ok((body[n - 32..].try_into().expect("32 bytes"), recorded_at))
}

const ALTERED: &str = "the stored hash is not the hash of the event's bytes: the event was altered";
const CRC: &str = "CRC32C mismatch: the record is damaged (if this is the end of the segment, a torn write: opening the log for writing cuts a torn tail off and keeps it in a .torn file)";

fn frame_crc_holds((len, crc): ([u8; 4], u32), body: &[u8]) -> bool {
    segment::frame_crc(&len, body) == crc
}

/// Records whose links were checked, waiting to have their CRCs and hashes recomputed: each
/// record names its own `prev_hash`, so the hashes are independent and are computed
/// side by side ([`chain::Batch`]), and so are the CRCs
/// ([`segment::frame_crcs`]).
#[derive(Default)]
struct Rehash {
    batch: chain::Batch,
    pending: Vec<Pending>,
    digests: Vec<Hash>,
    crcs: Vec<u32>,
}

/// A record waiting in [`Rehash`].
struct Pending {
    seq: u64,
    /// Its stored hash, and the one before it.
    stored: Hash,
    prev: Hash,
    /// Its frame's length field and CRC.
    head: ([u8; 4], u32),
    /// Where the record starts in its segment.
    pos: u64,
}

impl Rehash {
    /// Records re-hashed in one go.
    const BATCH: usize = 64;

    fn push(
        &mut self,
        partition: u32,
        seq: u64,
        prev: &Hash,
        head: ([u8; 4], u32),
        body: &[u8],
        pos: u64,
    ) {
        let (without_hash, stored) = body.split_at(body.len() - 32);
        chain::push_event(&mut self.batch, partition, seq, prev, without_hash);
        self.pending.push(Pending {
            seq,
            stored: stored.try_into().expect("32 bytes"),
            prev: *prev,
            head,
            pos,
        });
    }

    fn is_full(&self) -> bool {
        self.pending.len() >= Self::BATCH
    }

    /// Forgets the waiting records (a segment that ended on a fault leaves some).
    fn clear(&mut self) {
        self.batch.clear();
        self.pending.clear();
    }

    /// Checks the waiting records' CRCs and hashes, and shows those before the first that
    /// fails to `observer`; that one, if any, with its fault kind (`frame` or `hash`).
    /// Nothing is waiting afterwards.
    fn check(&mut self, observer: &mut impl Observer) -> Option<(Pending, &'static str)> {
        let frames: Vec<segment::FrameParts<'_>> = self
            .pending
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.head.0,
                    [&self.batch.message(i)[chain::PREFIX_LEN..], &p.stored[..]],
                )
            })
            .collect();
        segment::frame_crcs(&frames, &mut self.crcs);
        self.batch.digests(&mut self.digests);
        let bad = self
            .pending
            .iter()
            .zip(self.crcs.iter().zip(&self.digests))
            .position(|(p, (crc, digest))| *crc != p.head.1 || *digest != p.stored);
        for (i, p) in self.pending[..bad.unwrap_or(self.pending.len())]
            .iter()
            .enumerate()
        {
            observer.event(
                p.seq,
                &p.stored,
                &self.batch.message(i)[chain::PREFIX_LEN..],
            );
        }
        self.batch.clear();
        let bad = bad.map(|i| {
            let kind = if self.crcs[i] != self.pending[i].head.1 {
                "frame"
            } else {
                "hash"
            };
            (self.pending.swap_remove(i), kind)
        });
        self.pending.clear();
        bad
    }
}

/// Whether a writer process holds the partition's lock right now.
fn writer_holds_lock(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join("LOCK")) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; released when `f` closes.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0
}
