//! One partition: recovery on open, the single writer thread with group commit, and the shared
//! view (segments and durable head) that readers follow.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{mpsc, watch};

use super::segment::{self, Frame, HEADER, HEADER_LEN, IndexEntry, Scanner};
use crate::chain::{self, Hash};
use crate::envelope::EnvelopeRef;
use crate::log::append::{Request, gather, spawn_writer};
use crate::log::partition::{Appended, Head, Partition, SegmentInfo, Source};
use crate::log::{LogConfig, LogError, Mode};

pub(crate) struct SegView {
    pub base: u64,
    pub path: PathBuf,
    /// Durable end: readers never read past it.
    pub end: u64,
    pub index: Vec<IndexEntry>,
}

pub(crate) struct View {
    pub segments: Vec<SegView>,
    pub head: Head,
}

pub(crate) struct Shared {
    pub topic: String,
    pub id: u32,
    pub view: Mutex<View>,
    pub cond: Condvar,
    pub watch: watch::Sender<u64>,
}

impl Shared {
    pub fn corrupt(&self, seq: u64, detail: impl Into<String>) -> LogError {
        LogError::corrupt(&self.topic, self.id, seq, detail)
    }
}

/// Opens partition `id` of `topic` from its folder: recovers it and, for writing, starts its
/// writer thread.
pub(crate) fn open(
    topic: &str,
    id: u32,
    dir: &Path,
    cfg: &LogConfig,
    mode: Mode,
) -> Result<Partition, LogError> {
    let corrupt = |seq, detail: String| LogError::Corrupt {
        topic: topic.to_owned(),
        partition: id,
        seq,
        detail,
    };
    let lock = match mode {
        Mode::ReadWrite => Some(lock_dir(dir)?),
        Mode::ReadOnly => None,
    };
    let mut bases = segment::list_segments(dir)
        .map_err(LogError::io(format!("cannot list {}", dir.display())))?;
    if bases.is_empty() && mode == Mode::ReadWrite {
        create_segment(dir, 0)?;
        bases.push(0);
    }
    let mut segments = Vec::with_capacity(bases.len());
    let mut head = Head {
        next_seq: 0,
        last_hash: chain::GENESIS,
        last_recorded_at: 0,
        bytes: 0,
    };
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::segment_path(dir, base);
        let len = std::fs::metadata(&path)
            .map_err(LogError::io(format!("cannot stat {}", path.display())))?
            .len();
        let is_last = i + 1 == bases.len();
        if is_last && len < HEADER_LEN && mode == Mode::ReadWrite {
            // A crash right after the segment was created: it holds no record yet.
            let mut f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(LogError::io(format!("cannot open {}", path.display())))?;
            f.write_all(HEADER)
                .and_then(|_| f.sync_all())
                .map_err(LogError::io(format!("cannot write {}", path.display())))?;
        } else if let Err(problem) = segment::check_header(&path)
            .map_err(LogError::io(format!("cannot read {}", path.display())))?
        {
            return Err(corrupt(base, format!("{}: {problem}", path.display())));
        }
        let len = len.max(HEADER_LEN);
        if !is_last {
            let idx_path = segment::index_path(&path);
            let index = match segment::read_index(&idx_path, base)
                .filter(|ix| ix.last().is_none_or(|e| e.pos < len))
            {
                Some(ix) => ix,
                None => {
                    let scan =
                        scan_segment(&path, id, base, HEADER_LEN, cfg.index_interval_bytes, len)?;
                    if let Some((seq, detail)) = scan
                        .corrupt
                        .or(scan.invalid.map(|(_, p)| (scan.next_seq, p.to_string())))
                    {
                        return Err(corrupt(seq, format!("{}: {detail}", path.display())));
                    }
                    if mode == Mode::ReadWrite {
                        write_index(&idx_path, &scan.entries)?;
                    }
                    scan.entries
                }
            };
            head.bytes += len;
            segments.push(SegView {
                base,
                path,
                end: len,
                index,
            });
            continue;
        }
        // The active segment: scan it whole, to find the durable end and rebuild its index.
        let scan = scan_segment(&path, id, base, HEADER_LEN, cfg.index_interval_bytes, len)?;
        if let Some((seq, detail)) = scan.corrupt {
            return Err(corrupt(seq, format!("{}: {detail}", path.display())));
        }
        let mut end = len;
        if let Some((pos, problem)) = scan.invalid {
            let tail = len - pos;
            if mode == Mode::ReadWrite {
                let torn_limit =
                    (cfg.max_batch_bytes + segment::MAX_BODY + segment::FRAME_OVERHEAD) as u64;
                if tail > torn_limit {
                    return Err(corrupt(
                        scan.next_seq,
                        format!(
                            "{}: {problem} at byte {pos}, {tail} bytes before the end: more than one unacknowledged group commit can leave, so this is damage, not a torn write",
                            path.display()
                        ),
                    ));
                }
                quarantine_tail(&path, pos, len)?;
                tracing::warn!(topic, partition = id, seq = scan.next_seq, bytes = tail, %problem, "recovered a torn tail: cut it off and kept it in a .torn file");
            }
            end = pos;
        }
        if mode == Mode::ReadWrite {
            write_index(&segment::index_path(&path), &scan.entries)?;
        }
        head.bytes += end;
        head.next_seq = scan.next_seq;
        match scan.last {
            Some((hash, at)) => {
                head.last_hash = hash;
                head.last_recorded_at = at;
            }
            None if i > 0 => {
                // The active segment is empty: the head is the last record of the one before.
                let prev: &SegView = &segments[i - 1];
                let from = prev
                    .index
                    .last()
                    .map_or((HEADER_LEN, prev.base), |e| (e.pos, e.seq));
                let s = scan_segment(&prev.path, id, from.1, from.0, u64::MAX, prev.end)?;
                if s.next_seq != base {
                    return Err(corrupt(
                        s.next_seq,
                        format!(
                            "segment {} ends at seq {} but the next one starts at {base}",
                            prev.path.display(),
                            s.next_seq
                        ),
                    ));
                }
                if let Some((hash, at)) = s.last {
                    head.last_hash = hash;
                    head.last_recorded_at = at;
                }
            }
            None => {}
        }
        segments.push(SegView {
            base,
            path,
            end,
            index: scan.entries,
        });
    }

    let (watch, _) = watch::channel(head.next_seq);
    let shared = Arc::new(Shared {
        topic: topic.to_owned(),
        id,
        view: Mutex::new(View { segments, head }),
        cond: Condvar::new(),
        watch,
    });
    let writer = match lock {
        None => None,
        Some(lock) => {
            let writer = Writer::new(shared.clone(), cfg.clone(), lock, dir.to_path_buf())?;
            Some(spawn_writer(topic, id, cfg.queue_depth, move |rx| {
                writer.run(rx)
            })?)
        }
    };
    Ok(Partition::new(topic, id, Source::Embedded(shared), writer))
}

impl Shared {
    /// The durable head (what readers can see).
    pub fn head(&self) -> Head {
        self.view.lock().expect("view lock").head
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        let view = self.view.lock().expect("view lock");
        view.segments
            .iter()
            .map(|s| SegmentInfo {
                base_seq: s.base,
                path: s.path.clone(),
                bytes: s.end,
                index_entries: s.index.len(),
            })
            .collect()
    }

    /// The first seq recorded at or after `micros` (the head's next seq if none is): where a
    /// replay "as of" a time starts, found through the index without scanning the partition.
    pub fn seq_at_time(&self, micros: i64) -> Result<u64, LogError> {
        let (path, pos, seq, end, after) = {
            let view = self.view.lock().expect("view lock");
            let segs = &view.segments;
            // The last segment whose first event is earlier than `micros`.
            let i =
                segs.partition_point(|s| s.index.first().is_some_and(|e| e.recorded_at < micros));
            if i == 0 {
                return Ok(segs.first().map_or(0, |s| s.base));
            }
            let s = &segs[i - 1];
            let j = s.index.partition_point(|e| e.recorded_at < micros) - 1;
            let after = segs.get(i).map_or(view.head.next_seq, |n| n.base);
            (s.path.clone(), s.index[j].pos, s.index[j].seq, s.end, after)
        };
        let mut scanner = Scanner::open(&path, pos, end).map_err(LogError::reading(&path))?;
        let mut expect = seq;
        loop {
            match scanner.next_frame().map_err(LogError::reading(&path))? {
                Frame::Record { .. } => {
                    let env = EnvelopeRef::decode(scanner.body())
                        .map_err(|e| self.corrupt(expect, e.to_string()))?;
                    if env.recorded_at >= micros {
                        return Ok(env.seq);
                    }
                    expect = env.seq + 1;
                }
                Frame::End => return Ok(after),
                Frame::Invalid { problem, .. } => return Err(self.corrupt(expect, problem)),
            }
        }
    }
}

/// What a scan of one segment found.
struct Scan {
    entries: Vec<IndexEntry>,
    next_seq: u64,
    last: Option<(Hash, i64)>,
    /// Where the last complete commit ends and a torn tail begins (with what is wrong there).
    invalid: Option<(u64, &'static str)>,
    /// An intact frame whose content is wrong: damage, never a torn write.
    corrupt: Option<(u64, String)>,
}

fn scan_segment(
    path: &Path,
    partition: u32,
    first_seq: u64,
    from: u64,
    interval: u64,
    limit: u64,
) -> Result<Scan, LogError> {
    let mut sc = Scanner::open(path, from, limit).map_err(LogError::reading(path))?;
    let mut out = Scan {
        entries: Vec::new(),
        next_seq: first_seq,
        last: None,
        invalid: None,
        corrupt: None,
    };
    let mut last_index_pos: Option<u64> = None;
    // The last commit boundary seen: (end position, next seq, last event, index entries).
    let mut committed = (from, first_seq, None, 0);
    loop {
        match sc.next_frame().map_err(LogError::reading(path))? {
            Frame::End => break,
            Frame::Invalid { pos, problem } => {
                out.invalid = Some((pos, problem));
                break;
            }
            Frame::Record { pos, commit_end } => {
                let env = match EnvelopeRef::decode(sc.body()) {
                    Ok(env) => env,
                    Err(e) => {
                        out.corrupt = Some((
                            out.next_seq,
                            format!("record at byte {pos} does not decode: {e}"),
                        ));
                        break;
                    }
                };
                if env.seq != out.next_seq || env.partition != partition {
                    out.corrupt = Some((
                        out.next_seq,
                        format!(
                            "record at byte {pos} says partition {} seq {}",
                            env.partition, env.seq
                        ),
                    ));
                    break;
                }
                if let Some((prev, _)) = out.last
                    && prev != *env.prev_hash
                {
                    out.corrupt = Some((
                        env.seq,
                        "prev_hash does not link to the previous event".into(),
                    ));
                    break;
                }
                if last_index_pos.is_none_or(|l| pos - l >= interval) {
                    out.entries.push(IndexEntry {
                        seq: env.seq,
                        pos,
                        recorded_at: env.recorded_at,
                    });
                    last_index_pos = Some(pos);
                }
                out.last = Some((*env.hash, env.recorded_at));
                out.next_seq += 1;
                if commit_end {
                    committed = (sc.position(), out.next_seq, out.last, out.entries.len());
                }
            }
        }
    }
    // Records after the last commit boundary belong to a commit that never completed: they
    // are part of the torn tail, whether or not their frames are intact.
    if out.corrupt.is_none() && (out.invalid.is_some() || out.next_seq > committed.1) {
        let problem = out.invalid.map_or(
            "the last commit is incomplete (no commit-end mark)",
            |(_, p)| p,
        );
        out.invalid = Some((committed.0, problem));
        out.next_seq = committed.1;
        out.last = committed.2;
        out.entries.truncate(committed.3);
    }
    Ok(out)
}

/// Cuts a torn tail off a segment, keeping its bytes in `<segment>-<pos>.torn` for inspection.
fn quarantine_tail(path: &Path, pos: u64, len: u64) -> Result<(), LogError> {
    let io = || {
        LogError::io(format!(
            "cannot recover the torn tail of {}",
            path.display()
        ))
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io())?;
    let mut tail = Vec::with_capacity((len - pos) as usize);
    f.seek(SeekFrom::Start(pos)).map_err(io())?;
    f.read_to_end(&mut tail).map_err(io())?;
    let keep = path.with_extension(format!("{pos}.torn"));
    let mut k = File::create(&keep).map_err(io())?;
    k.write_all(&tail)
        .and_then(|_| k.sync_all())
        .map_err(io())?;
    f.set_len(pos).and_then(|_| f.sync_all()).map_err(io())?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn write_index(path: &Path, entries: &[IndexEntry]) -> Result<(), LogError> {
    let mut bytes = Vec::with_capacity(entries.len() * segment::INDEX_ENTRY_LEN);
    for e in entries {
        e.put(&mut bytes);
    }
    std::fs::write(path, bytes).map_err(LogError::io(format!("cannot write {}", path.display())))
}

fn create_segment(dir: &Path, base: u64) -> Result<File, LogError> {
    let path = segment::segment_path(dir, base);
    let io = || LogError::io(format!("cannot create {}", path.display()));
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io())?;
    f.write_all(HEADER)
        .and_then(|_| f.sync_all())
        .map_err(io())?;
    File::create(segment::index_path(&path)).map_err(io())?;
    sync_dir(dir)?;
    Ok(f)
}

/// Takes the partition's exclusive lock, held for as long as the returned file is open.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(LogError::io(format!("cannot open {}", path.display())))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(LogError::Locked {
            path: dir.to_path_buf(),
        });
    }
    Ok(f)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(format!(
            "cannot sync folder {}",
            dir.display()
        )))
}

/// Replaces `path` with `bytes` atomically and durably (temp file, fsync, rename, fsync folder).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let io = || LogError::io(format!("cannot write {}", path.display()));
    let mut f = File::create(&tmp).map_err(io())?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io())?;
    std::fs::rename(&tmp, path).map_err(io())?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The partition's single writer, on its own thread.
struct Writer {
    shared: Arc<Shared>,
    cfg: LogConfig,
    _lock: File,
    dir: PathBuf,
    file: File,
    idx: File,
    seg_len: u64,
    last_index_pos: Option<u64>,
    next_seq: u64,
    last_hash: Hash,
    last_recorded_at: i64,
    buf: Vec<u8>,
    new_index: Vec<IndexEntry>,
    poisoned: Option<String>,
}

impl Writer {
    fn new(
        shared: Arc<Shared>,
        cfg: LogConfig,
        lock: File,
        dir: PathBuf,
    ) -> Result<Writer, LogError> {
        let (path, seg_len, last_index_pos, head) = {
            let view = shared.view.lock().expect("view lock");
            let s = view
                .segments
                .last()
                .expect("a writable partition has a segment");
            (
                s.path.clone(),
                s.end,
                s.index.last().map(|e| e.pos),
                view.head,
            )
        };
        let io = || LogError::io(format!("cannot open {}", path.display()));
        let file = OpenOptions::new().append(true).open(&path).map_err(io())?;
        let idx = OpenOptions::new()
            .append(true)
            .create(true)
            .open(segment::index_path(&path))
            .map_err(io())?;
        Ok(Writer {
            shared,
            cfg,
            _lock: lock,
            dir,
            file,
            idx,
            seg_len,
            last_index_pos,
            next_seq: head.next_seq,
            last_hash: head.last_hash,
            last_recorded_at: head.last_recorded_at,
            buf: Vec::with_capacity(1 << 20),
            new_index: Vec::new(),
            poisoned: None,
        })
    }

    /// Group commit: take every queued request up to `max_batch_bytes`, write them, fsync once,
    /// then acknowledge each.
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(reqs) = gather(&mut rx, self.cfg.max_batch_bytes) {
            match self.commit(&reqs) {
                Ok(mut acks) => {
                    for req in reqs.into_iter().rev() {
                        let ack = acks.pop().expect("one ack list per request");
                        // A caller that stopped waiting still has its events durably written.
                        req.reply.send(Ok(ack)).ok();
                    }
                }
                Err(e) => {
                    let detail = e.to_string();
                    tracing::error!(topic = %self.shared.topic, partition = self.shared.id, error = %detail, "append failed; partition stops writing");
                    self.poisoned.get_or_insert(detail);
                    for req in reqs {
                        req.reply.send(Err(self.poisoned_error())).ok();
                    }
                }
            }
        }
    }

    fn poisoned_error(&self) -> LogError {
        LogError::Poisoned {
            topic: self.shared.topic.clone(),
            partition: self.shared.id,
            detail: self.poisoned.clone().unwrap_or_default(),
        }
    }

    fn commit(&mut self, reqs: &[Request]) -> Result<Vec<Vec<Appended>>, LogError> {
        if self.poisoned.is_some() {
            return Err(self.poisoned_error());
        }
        // One timestamp per group commit, never earlier than the last: `recorded_at` is
        // non-decreasing along a partition, which is what makes the time index searchable.
        let now = crate::time::now_micros().max(self.last_recorded_at);
        let id = self.shared.id;
        let mut all = Vec::with_capacity(reqs.len());
        for req in reqs {
            // Segments roll only between commits, so a commit never spans two segments (a
            // request bigger than a segment gets one of its own).
            let end = self.seg_len + self.buf.len() as u64;
            if end > HEADER_LEN && end + req.bytes as u64 > self.cfg.segment_bytes {
                self.flush(now)?;
                self.roll()?;
            }
            let mut acks = Vec::with_capacity(req.events.len());
            for (i, ev) in req.events.iter().enumerate() {
                let seq = self.next_seq;
                let pos = self.seg_len + self.buf.len() as u64;
                if self
                    .last_index_pos
                    .is_none_or(|l| pos - l >= self.cfg.index_interval_bytes)
                {
                    self.new_index.push(IndexEntry {
                        seq,
                        pos,
                        recorded_at: now,
                    });
                    self.last_index_pos = Some(pos);
                }
                // The frame is built in place: header space, body, hash, then the header.
                let frame = self.buf.len();
                self.buf.extend_from_slice(&[0; segment::FRAME_OVERHEAD]);
                ev.at(now, id, seq, &self.last_hash)
                    .encode_without_hash(&mut self.buf);
                let body = frame + segment::FRAME_OVERHEAD;
                let hash = chain::event_hash(id, seq, &self.last_hash, &self.buf[body..]);
                self.buf.extend_from_slice(&hash);
                segment::seal_frame(&mut self.buf[frame..], i + 1 == req.events.len());
                acks.push(Appended {
                    event_id: ev.event_id,
                    partition: id,
                    seq,
                    hash,
                    recorded_at: now,
                });
                self.last_hash = hash;
                self.next_seq += 1;
            }
            all.push(acks);
        }
        self.flush(now)?;
        Ok(all)
    }

    /// Writes the buffer, fsyncs, and only then makes it visible to readers.
    fn flush(&mut self, now: i64) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let io = LogError::io(format!(
            "cannot write topic {} partition {}",
            self.shared.topic, self.shared.id
        ));
        self.file
            .write_all(&self.buf)
            .and_then(|_| self.file.sync_data())
            .map_err(io)?;
        let mut ix = Vec::with_capacity(self.new_index.len() * segment::INDEX_ENTRY_LEN);
        for e in &self.new_index {
            e.put(&mut ix);
        }
        // The index is derived data (rebuilt on open), so it is written but not fsynced here.
        self.idx
            .write_all(&ix)
            .map_err(LogError::io("cannot write a segment index"))?;
        self.seg_len += self.buf.len() as u64;
        self.last_recorded_at = now;
        {
            let mut view = self.shared.view.lock().expect("view lock");
            view.head.bytes += self.buf.len() as u64;
            let seg = view.segments.last_mut().expect("active segment");
            seg.end = self.seg_len;
            seg.index.append(&mut self.new_index);
            view.head.next_seq = self.next_seq;
            view.head.last_hash = self.last_hash;
            view.head.last_recorded_at = now;
        }
        self.shared.cond.notify_all();
        self.shared.watch.send_replace(self.next_seq);
        self.buf.clear();
        Ok(())
    }

    /// Seals the active segment (its index made durable) and starts a new one at `next_seq`.
    fn roll(&mut self) -> Result<(), LogError> {
        self.idx
            .sync_all()
            .map_err(LogError::io("cannot sync a segment index"))?;
        let base = self.next_seq;
        self.file = create_segment(&self.dir, base)?;
        let path = segment::segment_path(&self.dir, base);
        self.idx = OpenOptions::new()
            .append(true)
            .open(segment::index_path(&path))
            .map_err(LogError::io("cannot open a segment index"))?;
        self.seg_len = HEADER_LEN;
        self.last_index_pos = None;
        let mut view = self.shared.view.lock().expect("view lock");
        view.head.bytes += HEADER_LEN;
        view.segments.push(SegView {
            base,
            path,
            end: HEADER_LEN,
            index: Vec::new(),
        });
        Ok(())
    }
}
