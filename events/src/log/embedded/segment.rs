//! Segment files and their indexes: the on-disk format of one partition.
//!
//! A partition folder holds segments `<base seq, 20 digits>.seg`, each a 16-byte header followed
//! by frames `[len u32 LE][crc32c(len ‖ body) u32 LE][body]`, where the body is an envelope's
//! canonical bytes. The top bit of `len` marks the last record of a commit — one append request,
//! which the log writes whole or not at all: recovery cuts a torn log back to a commit boundary,
//! and segments roll only between commits. Beside each segment, `<base>.idx` holds sparse index entries
//! `(seq u64, pos u64, recorded_at i64)` little-endian: one for the first record and then one
//! every `index_interval_bytes`. The index is derived data: it can always be rebuilt by a scan.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Magic and format version at the start of every segment.
pub const HEADER: &[u8; 16] = b"ANNALSEG\x01\0\0\0\0\0\0\0";
pub const HEADER_LEN: u64 = HEADER.len() as u64;
/// Bytes of a frame before its body.
pub const FRAME_OVERHEAD: usize = 8;
/// Largest frame body the log writes or accepts when reading.
pub const MAX_BODY: usize = (2 << 20) - FRAME_OVERHEAD;
pub const INDEX_ENTRY_LEN: usize = 24;

pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

pub fn index_path(seg: &Path) -> PathBuf {
    seg.with_extension("idx")
}

/// The bit of the length field that marks the last record of a commit (an append request).
pub const COMMIT_END: u32 = 1 << 31;

/// Appends one frame around `body` to `out`.
pub fn put_frame(out: &mut Vec<u8>, body: &[u8], commit_end: bool) {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_OVERHEAD]);
    out.extend_from_slice(body);
    seal_frame(&mut out[at..], commit_end);
}

/// Fills in the header of a frame whose body is already in place: `frame` is the header's
/// `FRAME_OVERHEAD` bytes followed by the body.
pub fn seal_frame(frame: &mut [u8], commit_end: bool) {
    let (head, body) = frame.split_at_mut(FRAME_OVERHEAD);
    let len = (body.len() as u32 | if commit_end { COMMIT_END } else { 0 }).to_le_bytes();
    let crc = frame_crc(&len, body);
    head[..4].copy_from_slice(&len);
    head[4..].copy_from_slice(&crc.to_le_bytes());
}

/// A frame's CRC: CRC32C of its length field and body.
pub fn frame_crc(len: &[u8; 4], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len), body)
}

/// Base seqs of the segments in a partition folder, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".seg")
            && stem.len() == 20
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    pub pos: u64,
    pub recorded_at: i64,
}

impl IndexEntry {
    pub fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.pos.to_le_bytes());
        out.extend_from_slice(&self.recorded_at.to_le_bytes());
    }
}

/// Reads an index file; `None` if it is missing or not well formed (then it is rebuilt).
pub fn read_index(path: &Path, base: u64) -> Option<Vec<IndexEntry>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() % INDEX_ENTRY_LEN != 0 {
        return None;
    }
    let entries: Vec<IndexEntry> = bytes
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|c| IndexEntry {
            seq: u64::from_le_bytes(c[0..8].try_into().expect("8")),
            pos: u64::from_le_bytes(c[8..16].try_into().expect("8")),
            recorded_at: i64::from_le_bytes(c[16..24].try_into().expect("8")),
        })
        .collect();
    let first_ok = entries
        .first()
        .is_none_or(|e| e.seq == base && e.pos == HEADER_LEN);
    let sorted = entries.windows(2).all(|w| {
        w[0].seq < w[1].seq && w[0].pos < w[1].pos && w[0].recorded_at <= w[1].recorded_at
    });
    (first_ok && sorted).then_some(entries)
}

/// What a scanner found at the current position.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole, intact frame at `pos`; its body is [`Scanner::body`]. `commit_end` marks the
    /// last record of a commit.
    Record { pos: u64, commit_end: bool },
    /// Clean end: the limit was reached exactly at a frame boundary.
    End,
    /// The bytes from `pos` to the limit are not a whole, intact frame.
    Invalid { pos: u64, problem: &'static str },
}

/// Reads frames sequentially from a segment file, up to a byte limit, with a reusable buffer
/// (or, for a sealed segment, straight from a memory map of it: [`Scanner::open_sealed`]).
pub struct Scanner {
    file: File,
    buf: Buffer,
    start: usize,
    end: usize,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// File position up to which reading is allowed (the durable end, or the file length).
    limit: u64,
    read_to: u64,
    /// `buf` range of the body of the last record returned.
    body: std::ops::Range<usize>,
    /// The length field and CRC of the last record returned.
    head: ([u8; 4], u32),
    /// Whether `next_frame` checks CRCs (see [`Scanner::defer_crc`]).
    check_crc: bool,
}

impl Scanner {
    /// Opens `path` positioned at `pos` (a frame boundary, or `HEADER_LEN`), reading up to `limit`.
    pub fn open(path: &Path, pos: u64, limit: u64) -> io::Result<Scanner> {
        Scanner::open_in(path, pos, limit, Vec::new())
    }

    /// [`Scanner::open`] reading into `buf` (1 MiB if empty), a buffer an earlier scanner gave
    /// back ([`Scanner::into_buffer`]): fresh memory costs page faults. It grows if a frame
    /// is larger.
    pub fn open_in(path: &Path, pos: u64, limit: u64, mut buf: Vec<u8>) -> io::Result<Scanner> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(pos))?;
        if buf.is_empty() {
            buf.resize(1 << 20, 0);
        }
        Ok(Scanner {
            file,
            buf: Buffer::Owned(buf),
            start: 0,
            end: 0,
            buf_pos: pos,
            limit,
            read_to: pos,
            body: 0..0,
            head: ([0; 4], 0),
            check_crc: true,
        })
    }

    /// Opens a sealed segment (one the log no longer appends to, so never shortens) at `pos`,
    /// reading it in place from a memory map up to its length: no copy into a buffer. Only
    /// for segments that are not the last of their partition: a file shortened while mapped
    /// would fault the process.
    pub fn open_sealed(path: &Path, pos: u64) -> io::Result<Scanner> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let map = Map::new(&file, len)?;
        Ok(Scanner {
            file,
            buf: Buffer::Mapped(map),
            start: pos.min(len) as usize,
            end: len as usize,
            buf_pos: 0,
            limit: len,
            read_to: len,
            body: 0..0,
            head: ([0; 4], 0),
            check_crc: true,
        })
    }

    pub fn position(&self) -> u64 {
        self.buf_pos + self.start as u64
    }

    /// The scanner's own buffer, for the next one to read into (none for a mapped segment).
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        match self.buf {
            Buffer::Owned(v) => Some(v),
            Buffer::Mapped(_) => None,
        }
    }

    /// Leaves each record's CRC to the caller, who checks it with [`Scanner::head`] and
    /// [`frame_crcs`] (several frames at once), before trusting anything read after it.
    pub fn defer_crc(&mut self) {
        self.check_crc = false;
    }

    /// The length field (with the commit-end bit) and the stored CRC of the record the last
    /// `next_frame` returned.
    pub fn head(&self) -> ([u8; 4], u32) {
        self.head
    }

    /// Raises the limit (the writer made more bytes durable).
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit.max(self.limit);
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Makes at least `n` bytes available from `start`, unless the limit comes first.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        let Buffer::Owned(buf) = &mut self.buf else {
            return Ok(false); // a map holds the whole file already
        };
        if self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.buf_pos += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if buf.len() < n {
            buf.resize(n.next_power_of_two(), 0);
        }
        while self.end < n && self.read_to < self.limit {
            let want = ((self.limit - self.read_to) as usize).min(buf.len() - self.end);
            let got = self.file.read(&mut buf[self.end..self.end + want])?;
            if got == 0 {
                break;
            }
            self.end += got;
            self.read_to += got as u64;
        }
        Ok(self.end >= n)
    }

    /// The next frame. After `Invalid` the scanner stays where it is.
    pub fn next_frame(&mut self) -> io::Result<Frame> {
        let pos = self.position();
        if !self.fill(FRAME_OVERHEAD)? {
            return Ok(if self.end == self.start {
                Frame::End
            } else {
                Frame::Invalid {
                    pos,
                    problem: "incomplete frame header",
                }
            });
        }
        let head = &self.buf[self.start..self.start + FRAME_OVERHEAD];
        let len_bytes: [u8; 4] = head[0..4].try_into().expect("4");
        let raw = u32::from_le_bytes(len_bytes);
        let commit_end = raw & COMMIT_END != 0;
        let len = (raw & !COMMIT_END) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4"));
        if len == 0 || len > MAX_BODY {
            return Ok(Frame::Invalid {
                pos,
                problem: "frame length out of range",
            });
        }
        if !self.fill(FRAME_OVERHEAD + len)? {
            return Ok(Frame::Invalid {
                pos,
                problem: "frame runs past the end of the data",
            });
        }
        let body_start = self.start + FRAME_OVERHEAD;
        let body = &self.buf[body_start..body_start + len];
        if self.check_crc && frame_crc(&len_bytes, body) != crc {
            return Ok(Frame::Invalid {
                pos,
                problem: "CRC32C mismatch",
            });
        }
        self.start = body_start + len;
        self.body = body_start..body_start + len;
        self.head = (len_bytes, crc);
        Ok(Frame::Record { pos, commit_end })
    }

    /// The body of the record the last `next_frame` returned.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }
}

/// Where a scanner's bytes are: its own buffer, or a map of the whole file.
enum Buffer {
    Owned(Vec<u8>),
    Mapped(Map),
}

impl std::ops::Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Owned(v) => v,
            Buffer::Mapped(m) => m.bytes(),
        }
    }
}

/// A read-only, private memory map of a file's first `len` bytes.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; it can move between threads.
unsafe impl Send for Map {}
// SAFETY: nothing writes through the mapping, so shared references to it are fine.
unsafe impl Sync for Map {}

impl Map {
    fn new(file: &File, len: u64) -> io::Result<Map> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len == 0 {
            return Ok(Map {
                ptr: std::ptr::null_mut(),
                len,
            });
        }
        // SAFETY: a fresh read-only private mapping of an open file; the kernel picks the
        // address, and the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping `new` made; nothing borrows it any more.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

/// A frame's parts, for [`frame_crcs`]: its length field and its body, the body given in
/// pieces (their concatenation).
pub type FrameParts<'a> = ([u8; 4], [&'a [u8]; 2]);

/// The CRC32C (`crc32c(len ‖ body)`, as in the frame header) of each frame, into `out`.
/// With SSE4.2, four frames are computed side by side: one frame's CRC is a chain of
/// dependent instructions, and interleaving independent frames keeps the CRC unit busy.
pub fn frame_crcs(frames: &[FrameParts<'_>], out: &mut Vec<u32>) {
    out.clear();
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("sse4.2") {
        for group in frames.chunks(4) {
            // SAFETY: SSE4.2 is available (checked above).
            unsafe { crc_lanes::four(group, out) };
        }
        return;
    }
    out.extend(
        frames
            .iter()
            .map(|(len, [a, b])| crc32c::crc32c_append(frame_crc(len, a), b)),
    );
}

#[cfg(target_arch = "x86_64")]
mod crc_lanes {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u32, _mm_crc32_u64};

    use super::FrameParts;

    /// Up to four frames' CRCs: four at once with their longest common stretch interleaved
    /// (fixed lanes, so the loop is four independent CRC chains and nothing else), fewer one
    /// after another.
    ///
    /// # Safety
    /// The CPU must have SSE4.2.
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn four(group: &[FrameParts<'_>], out: &mut Vec<u32>) {
        let Ok(&[f0, f1, f2, f3]) = <&[FrameParts<'_>; 4]>::try_from(group) else {
            for (len, pieces) in group {
                let c = pieces
                    .iter()
                    .fold(_mm_crc32_u32(!0, u32::from_le_bytes(*len)), |c, p| {
                        rest(c, p)
                    });
                out.push(!c);
            }
            return;
        };
        let frames = [f0, f1, f2, f3];
        let mut crc = frames.map(|(len, _)| _mm_crc32_u32(!0, u32::from_le_bytes(len)));
        for piece in 0..2 {
            let common = frames.iter().map(|f| f.1[piece].len()).min().unwrap_or(0) / 8 * 8;
            let [a, b, c, d] = frames.map(|f| f.1[piece][..common].chunks_exact(8));
            for (((wa, wb), wc), wd) in a.zip(b).zip(c).zip(d) {
                crc[0] = _mm_crc32_u64(u64::from(crc[0]), word(wa)) as u32;
                crc[1] = _mm_crc32_u64(u64::from(crc[1]), word(wb)) as u32;
                crc[2] = _mm_crc32_u64(u64::from(crc[2]), word(wc)) as u32;
                crc[3] = _mm_crc32_u64(u64::from(crc[3]), word(wd)) as u32;
            }
            for (c, f) in crc.iter_mut().zip(&frames) {
                *c = rest(*c, &f.1[piece][common..]);
            }
        }
        out.extend(crc.map(|c| !c));
    }

    fn word(bytes: &[u8]) -> u64 {
        u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }

    /// Continues `crc` over `bytes`, a word at a time.
    #[target_feature(enable = "sse4.2")]
    fn rest(mut crc: u32, bytes: &[u8]) -> u32 {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            crc = _mm_crc32_u64(u64::from(crc), word(w)) as u32;
        }
        for &b in words.remainder() {
            crc = _mm_crc32_u8(crc, b);
        }
        crc
    }
}

/// Checks the segment header; `Ok(false)` if the file is shorter than a header.
pub fn check_header(path: &Path) -> io::Result<Result<(), &'static str>> {
    let mut f = File::open(path)?;
    let mut h = [0u8; HEADER.len()];
    let mut got = 0;
    while got < h.len() {
        let n = f.read(&mut h[got..])?;
        if n == 0 {
            return Ok(Err("segment is shorter than its header"));
        }
        got += n;
    }
    Ok(if &h == HEADER {
        Ok(())
    } else {
        Err("segment header is not an annals segment v1 header")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups of one to five frames, of lengths that leave every remainder of 8 bytes.
    #[test]
    fn frame_crcs_equal_the_crc_of_each_frame() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 13 + 5) as u8).collect();
        for count in 1..=5 {
            let frames: Vec<FrameParts<'_>> = (0..count)
                .map(|i| {
                    let len = 40 + 17 * i + count;
                    let split = len / 2 + i;
                    (
                        (len as u32).to_le_bytes(),
                        [&data[i..i + split], &data[i + split..i + len]],
                    )
                })
                .collect();
            let mut got = Vec::new();
            frame_crcs(&frames, &mut got);
            let want: Vec<u32> = frames
                .iter()
                .map(|(len, [a, b])| frame_crc(len, &[&a[..], &b[..]].concat()))
                .collect();
            assert_eq!(got, want, "{count} frames");
        }
    }
}
