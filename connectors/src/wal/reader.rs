//! The log's reader: the dataflow's source in embedded mode. It reads records by offset from the
//! segment files, never past what the writer has synced, and commits an offset once a
//! checkpoint covers everything before it (deleting the segments that are then wholly behind).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::frame::{self, Parsed};
use super::{Shared, Tip, WalConfig, WalError};

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// Its offset.
    pub offset: u64,
    /// What was appended.
    pub payload: Vec<u8>,
}

/// The segment being read.
struct Open {
    file: File,
    path: PathBuf,
    first: u64,
    /// Bytes of the file read into the buffer so far.
    read: u64,
}

/// Reads the log from the committed offset on.
pub struct WalReader {
    cfg: WalConfig,
    shared: Arc<Shared>,
    next: u64,
    committed: u64,
    open: Option<Open>,
    buf: Vec<u8>,
    start: usize,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("next", &self.next)
            .field("committed", &self.committed)
            .finish()
    }
}

/// How much of a segment is read at a time.
const CHUNK: usize = 1 << 20;

const COMMITTED: &str = "committed";

/// The committed offset stored in `dir` (0 when none was ever committed).
pub(crate) fn read_committed(dir: &Path) -> Result<u64, WalError> {
    let path = dir.join(COMMITTED);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<u64>().map_err(|e| WalError::Corrupt {
            path,
            at: 0,
            why: format!("not an offset: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(WalError::io("read", &path)(e)),
    }
}

impl WalReader {
    pub(crate) fn new(cfg: WalConfig, shared: Arc<Shared>, committed: u64) -> Self {
        Self {
            cfg,
            shared,
            next: committed,
            committed,
            open: None,
            buf: Vec::with_capacity(CHUNK),
            start: 0,
        }
    }

    /// The offset of the next record to be read: a checkpoint taken now covers every record
    /// before it.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The offset the log resumes from after a restart.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Records on disk not yet read.
    pub fn lag(&self) -> u64 {
        self.shared
            .durable
            .load(Ordering::Acquire)
            .saturating_sub(self.next)
    }

    /// Reads up to `max` synced records into `out`; how many it read (0: nothing new).
    pub fn poll(&mut self, max: usize, out: &mut Vec<WalRecord>) -> Result<usize, WalError> {
        self.poll_with(max, |offset, payload| {
            out.push(WalRecord {
                offset,
                payload: payload.to_vec(),
            })
        })
    }

    /// Hands up to `max` synced records to `take` as they lie in the read buffer (no copy);
    /// how many it handed.
    pub fn poll_with(
        &mut self,
        max: usize,
        mut take: impl FnMut(u64, &[u8]),
    ) -> Result<usize, WalError> {
        if self.next >= self.shared.durable.load(Ordering::Acquire) {
            return Ok(0);
        }
        let tip = self
            .shared
            .tip
            .lock()
            .map(|t| *t)
            .map_err(|_| WalError::Broken("the tip's lock is poisoned".into()))?;
        let mut n = 0;
        while n < max && self.next < tip.next {
            match frame::parse(&self.buf[self.start..]) {
                Parsed::Record {
                    offset,
                    payload,
                    size,
                } => {
                    if offset == self.next {
                        take(offset, payload);
                        self.next += 1;
                        n += 1;
                        self.start += size;
                    } else if offset < self.next {
                        // Before the resume point, in the segment that holds it.
                        self.start += size;
                    } else {
                        let why = format!("offset {offset} where {} was due", self.next);
                        self.skip_segment(&why)?;
                    }
                }
                Parsed::Incomplete => {
                    if !self.fill(&tip)? {
                        break;
                    }
                }
                Parsed::Bad(why) => self.skip_segment(&why)?,
            }
        }
        Ok(n)
    }

    /// Reads more of the current segment (or opens the next one); false when nothing more is
    /// on disk yet.
    fn fill(&mut self, tip: &Tip) -> Result<bool, WalError> {
        if self.open.is_none() {
            self.open_at(self.next)?;
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(false);
        };
        // In the segment being written, only what is synced: bytes past it may belong to a
        // group whose write fails and is cut off.
        let limit = if open.first == tip.segment {
            tip.bytes
        } else {
            u64::MAX
        };
        let want = (limit.saturating_sub(open.read)).min(CHUNK as u64) as usize;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut got = 0;
        if want > 0 {
            let have = self.buf.len();
            self.buf.resize(have + want, 0);
            got = open
                .file
                .read(&mut self.buf[have..])
                .map_err(WalError::io("read", &open.path))?;
            self.buf.truncate(have + got);
            open.read += got as u64;
        }
        if got > 0 {
            return Ok(true);
        }
        if open.first == tip.segment {
            return Ok(false); // at the synced end of the segment being written
        }
        // The end of a closed segment: the next one starts at `next`.
        let path = self.cfg.dir.join(frame::segment_name(self.next));
        if path.exists() {
            if !self.buf.is_empty() {
                let why = format!("{} bytes at its end are not a record", self.buf.len());
                tracing::error!(segment = %open.path.display(), %why, "write-ahead log");
            }
            self.open_at(self.next)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Opens the segment holding offset `at`.
    fn open_at(&mut self, at: u64) -> Result<(), WalError> {
        self.buf.clear();
        self.start = 0;
        self.open = None;
        let segs = frame::segments(&self.cfg.dir)?;
        let Some(seg) = segs.iter().rev().find(|s| s.first <= at).or(segs.first()) else {
            return Ok(());
        };
        let mut file = File::open(&seg.path).map_err(WalError::io("open", &seg.path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(WalError::io("seek", &seg.path))?;
        if seg.first > at {
            // The records in between were lost with a damaged segment.
            tracing::error!(from = at, to = seg.first, "write-ahead log records missing");
            self.next = seg.first;
        }
        self.open = Some(Open {
            file,
            path: seg.path.clone(),
            first: seg.first,
            read: 0,
        });
        Ok(())
    }

    /// Leaves a damaged segment for the next one (its remaining records are lost).
    fn skip_segment(&mut self, why: &str) -> Result<(), WalError> {
        let current = self.open.as_ref().map(|o| (o.first, o.path.clone()));
        let segs = frame::segments(&self.cfg.dir)?;
        let next = segs
            .iter()
            .find(|s| current.as_ref().is_none_or(|(first, _)| s.first > *first));
        tracing::error!(
            segment = ?current.as_ref().map(|c| c.1.display().to_string()),
            offset = self.next, why,
            "a damaged write-ahead log record; the rest of its segment is skipped"
        );
        match next {
            Some(s) => {
                let first = s.first;
                self.next = self.next.max(first);
                self.open_at(first)
            }
            None => Err(WalError::Corrupt {
                path: current.map(|c| c.1).unwrap_or_default(),
                at: self.start as u64,
                why: why.to_string(),
            }),
        }
    }

    /// Records that everything before `offset` is covered by a checkpoint: a restart resumes
    /// there, and segments wholly before it are deleted. Returns how many were deleted.
    pub fn commit(&mut self, offset: u64) -> Result<usize, WalError> {
        if offset <= self.committed {
            return Ok(0);
        }
        let dir = &self.cfg.dir;
        let tmp = dir.join(format!("{COMMITTED}.tmp"));
        let path = dir.join(COMMITTED);
        let mut f = File::create(&tmp).map_err(WalError::io("create", &tmp))?;
        f.write_all(format!("{offset}\n").as_bytes())
            .map_err(WalError::io("write", &tmp))?;
        f.sync_all().map_err(WalError::io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(WalError::io("rename", &path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(WalError::io("fsync", dir))?;
        self.committed = offset;
        let segs = frame::segments(dir)?;
        let mut deleted = 0;
        for pair in segs.windows(2) {
            let (old, newer) = (&pair[0], &pair[1]);
            let reading = self.open.as_ref().is_some_and(|o| o.first == old.first);
            if newer.first <= offset && !reading {
                std::fs::remove_file(&old.path).map_err(WalError::io("delete", &old.path))?;
                self.shared.bytes.fetch_sub(old.len, Ordering::AcqRel);
                self.shared.segments.fetch_sub(1, Ordering::AcqRel);
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
