//! The embedded reader: iterates a partition's segment files from any seq, and follows new
//! appends without polling (woken by the writer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::partition::Shared;
use super::segment::{Frame, HEADER_LEN, Scanner};
use crate::envelope::{Envelope, EnvelopeRef};
use crate::log::LogError;

struct Current {
    base: u64,
    path: std::path::PathBuf,
    scanner: Scanner,
}

/// Reads one partition in seq order. Sees only durable (acknowledged) events.
pub struct SegmentReader {
    shared: Arc<Shared>,
    next_seq: u64,
    cur: Option<Current>,
}

impl SegmentReader {
    pub(crate) fn new(shared: Arc<Shared>, from_seq: u64) -> SegmentReader {
        SegmentReader {
            shared,
            next_seq: from_seq,
            cur: None,
        }
    }

    /// The seq the next event read will have.
    pub fn position(&self) -> u64 {
        self.next_seq
    }

    /// The next event without copying it, or `None` when the reader has caught up.
    pub fn next_ref(&mut self) -> Result<Option<EnvelopeRef<'_>>, LogError> {
        if !self.advance()? {
            return Ok(None);
        }
        let cur = self.cur.as_ref().expect("advance positioned the reader");
        let env = EnvelopeRef::decode(cur.scanner.body())
            .map_err(|e| self.shared.corrupt(self.next_seq - 1, e.to_string()))?;
        Ok(Some(env))
    }

    /// The next event, or `None` when the reader has caught up. (Not `Iterator::next`: a
    /// reader that has caught up is not finished, and reading can fail.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Envelope>, LogError> {
        Ok(self.next_ref()?.map(|e| e.to_owned()))
    }

    /// The next event, waiting up to `timeout` for one to be appended.
    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Option<Envelope>, LogError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.next()? {
                return Ok(Some(e));
            }
            let view = self.shared.view.lock().expect("view lock");
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if view.head.next_seq <= self.next_seq {
                let (_guard, _) = self
                    .shared
                    .cond
                    .wait_timeout(view, deadline - now)
                    .expect("view lock");
            }
        }
    }

    /// The next event, waiting as long as it takes for one to be appended.
    pub async fn next_async(&mut self) -> Result<Envelope, LogError> {
        let mut rx = self.shared.watch.subscribe();
        loop {
            if let Some(e) = self.next()? {
                return Ok(e);
            }
            let want = self.next_seq;
            rx.wait_for(|&head| head > want)
                .await
                .map_err(|_| LogError::Closed)?;
        }
    }

    /// Moves to the next record at or after `next_seq`; `false` if there is none yet.
    fn advance(&mut self) -> Result<bool, LogError> {
        loop {
            if self.cur.is_none() && !self.open_current()? {
                return Ok(false);
            }
            let cur = self.cur.as_mut().expect("opened");
            let frame = cur
                .scanner
                .next_frame()
                .map_err(LogError::reading(&cur.path))?;
            match frame {
                Frame::Record { pos, .. } => {
                    let env = EnvelopeRef::decode(cur.scanner.body()).map_err(|e| {
                        self.shared
                            .corrupt(self.next_seq, format!("record at byte {pos}: {e}"))
                    })?;
                    if env.seq < self.next_seq {
                        continue; // skipping from the index entry to the requested seq
                    }
                    if env.seq != self.next_seq {
                        return Err(self.shared.corrupt(
                            self.next_seq,
                            format!("found seq {} where {} was expected", env.seq, self.next_seq),
                        ));
                    }
                    self.next_seq += 1;
                    return Ok(true);
                }
                Frame::Invalid { pos, problem } => {
                    return Err(self
                        .shared
                        .corrupt(self.next_seq, format!("{problem} at byte {pos}")));
                }
                Frame::End => {
                    let view = self.shared.view.lock().expect("view lock");
                    let i = view.segments.partition_point(|s| s.base <= cur.base) - 1;
                    let end = view.segments[i].end;
                    if end > cur.scanner.limit() {
                        cur.scanner.set_limit(end);
                    } else if i + 1 < view.segments.len() {
                        drop(view);
                        self.cur = None;
                    } else {
                        return Ok(false);
                    }
                }
            }
        }
    }

    fn open_current(&mut self) -> Result<bool, LogError> {
        let (path, pos, end, base) = {
            let view = self.shared.view.lock().expect("view lock");
            if self.next_seq >= view.head.next_seq {
                return Ok(false);
            }
            let i = view.segments.partition_point(|s| s.base <= self.next_seq);
            if i == 0 {
                return Err(self
                    .shared
                    .corrupt(self.next_seq, "no segment holds this seq"));
            }
            let s = &view.segments[i - 1];
            let j = s.index.partition_point(|e| e.seq <= self.next_seq);
            let pos = if j == 0 {
                HEADER_LEN
            } else {
                s.index[j - 1].pos
            };
            (s.path.clone(), pos, s.end, s.base)
        };
        let scanner = Scanner::open(&path, pos, end).map_err(LogError::reading(&path))?;
        self.cur = Some(Current {
            base,
            path,
            scanner,
        });
        Ok(true)
    }
}
