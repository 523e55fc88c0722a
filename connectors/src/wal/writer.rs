//! The log's writer: producers queue records and a callback each; one thread writes every
//! queued record with one `write` and one `fdatasync` (group commit), then runs the callbacks
//! in offset order.
//!
//! Its states, per group: *queued* (producers append under the lock) → *writing* (the thread
//! has taken the queue; producers queue the next group meanwhile) → *durable* (synced: the
//! reader may read it, callbacks hear `Ok(offset)`) or *failed* (the write or sync failed: the
//! segment is cut back to its last good byte, callbacks hear the error, the offsets are used
//! again by the next group). A failure that cannot be cut back leaves the log *broken*: every
//! later append fails, because a reader could otherwise meet a half-written record again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use super::frame::{self, Segment};
use super::{Shared, WalConfig, WalError};

/// Hears a record's fate once: `Ok(offset)` when it is on disk, or why it never will be.
/// Runs on the writer's thread, in offset order: keep it short (send an acknowledgement).
pub type Done = Box<dyn FnOnce(Result<u64, WalError>) + Send>;

struct Entry {
    payload: Vec<u8>,
    crc: crc32fast::Hasher,
    done: Option<Done>,
    /// No record, only a callback (see [`WalWriter::after_queued`]).
    marker: bool,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    closed: bool,
    broken: Option<String>,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
    shared: Arc<Shared>,
    cfg: WalConfig,
}

/// Appends records to the log; cheap to clone, one writer thread behind all clones.
#[derive(Clone)]
pub struct WalWriter {
    inner: Arc<Inner>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field("dir", &self.inner.cfg.dir)
            .finish()
    }
}

/// The segment being appended to.
struct Active {
    file: File,
    path: PathBuf,
    first: u64,
    len: u64,
}

impl WalWriter {
    pub(crate) fn start(
        cfg: WalConfig,
        shared: Arc<Shared>,
        end: u64,
        last: Option<&Segment>,
    ) -> Result<Self, WalError> {
        // Each run starts a segment at the log's end (the last one may end in a cut-off tail
        // or be an earlier run's; appending to it would gain nothing). An empty last segment
        // of that name is simply reused.
        let reuse = last.is_some_and(|s| s.first == end);
        let active = open_segment(&cfg, end)?;
        if !reuse {
            shared.segments.fetch_add(1, Ordering::AcqRel);
        }
        if let Ok(mut tip) = shared.tip.lock() {
            *tip = super::Tip {
                next: end,
                segment: end,
                bytes: active.len,
            };
        }
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            shared,
            cfg,
        });
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn({
                let inner = Arc::clone(&inner);
                move || write_loop(&inner, active, end)
            })
            .map_err(|e| WalError::io("spawn", &inner.cfg.dir)(e))?;
        Ok(Self {
            inner,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues `payload`; `done` hears its offset once it is on disk, or why it never will be:
    /// at once when the log is closed, broken or full. `done` is called exactly once.
    pub fn append(&self, payload: Vec<u8>, done: Done) {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&payload);
        self.push(Entry {
            payload,
            crc,
            done: Some(done),
            marker: false,
        });
    }

    /// Runs `done` once everything appended before it is on disk (it hears the offset the next
    /// record will have). For acknowledging a resent message whose first copy is still queued.
    pub fn after_queued(&self, done: Done) {
        self.push(Entry {
            payload: Vec::new(),
            crc: crc32fast::Hasher::new(),
            done: Some(done),
            marker: true,
        });
    }

    fn push(&self, mut e: Entry) {
        let refuse = |e: &mut Entry, why: WalError| {
            if let Some(done) = e.done.take() {
                done(Err(why));
            }
        };
        let Ok(mut q) = self.inner.queue.lock() else {
            return refuse(
                &mut e,
                WalError::Broken("the queue's lock is poisoned".into()),
            );
        };
        if let Some(why) = &q.broken {
            let why = why.clone();
            drop(q);
            return refuse(&mut e, WalError::Broken(why));
        }
        if q.closed {
            drop(q);
            return refuse(&mut e, WalError::Closed);
        }
        let bytes = self.inner.shared.bytes.load(Ordering::Acquire);
        let limit = self.inner.cfg.max_bytes;
        if bytes > limit && !e.marker {
            drop(q);
            return refuse(&mut e, WalError::Full { bytes, limit });
        }
        q.entries.push(e);
        drop(q);
        self.inner.wake.notify_one();
    }

    /// Offsets below this are on disk.
    pub fn durable(&self) -> u64 {
        self.inner.shared.durable.load(Ordering::Acquire)
    }

    /// Bytes of segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.shared.bytes.load(Ordering::Acquire)
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.inner.shared.segments.load(Ordering::Acquire)
    }

    /// Groups written so far, one `fdatasync` each.
    pub fn syncs(&self) -> u64 {
        self.inner.shared.syncs.load(Ordering::Relaxed)
    }

    /// Stops taking records, writes what is queued, and waits for the writer thread.
    pub fn close(&self) {
        if let Ok(mut q) = self.inner.queue.lock() {
            q.closed = true;
        }
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

fn open_segment(cfg: &WalConfig, first: u64) -> Result<Active, WalError> {
    let path = cfg.dir.join(frame::segment_name(first));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(WalError::io("create", &path))?;
    let len = file.metadata().map_err(WalError::io("stat", &path))?.len();
    // The new name must survive a crash before the first record is acknowledged.
    File::open(&cfg.dir)
        .and_then(|d| d.sync_all())
        .map_err(WalError::io("fsync", &cfg.dir))?;
    Ok(Active {
        file,
        path,
        first,
        len,
    })
}

fn write_loop(inner: &Inner, mut active: Active, mut next: u64) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        let entries = {
            let Ok(mut q) = inner.queue.lock() else {
                return;
            };
            while q.entries.is_empty() && !q.closed {
                q = match inner.wake.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.entries.is_empty() {
                return; // closed and drained
            }
            std::mem::take(&mut q.entries)
        };
        match write_group(inner, &mut active, next, &entries, &mut buf) {
            Ok(written) => {
                let first = next;
                next += written;
                if let Ok(mut tip) = inner.shared.tip.lock() {
                    *tip = super::Tip {
                        next,
                        segment: active.first,
                        bytes: active.len,
                    };
                }
                inner.shared.durable.store(next, Ordering::Release);
                let mut offset = first;
                for e in entries {
                    let at = offset;
                    if !e.marker {
                        offset += 1;
                    }
                    if let Some(done) = e.done {
                        done(Ok(at));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, code = e.code(), "writing the write-ahead log");
                if let WalError::Broken(why) = &e {
                    if let Ok(mut q) = inner.queue.lock() {
                        q.broken = Some(why.clone());
                        for later in q.entries.drain(..) {
                            if let Some(done) = later.done {
                                done(Err(e.clone()));
                            }
                        }
                    }
                }
                for entry in entries {
                    if let Some(done) = entry.done {
                        done(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// Writes one group and syncs it; returns how many records it held. On failure the segment is
/// cut back to where the group began.
fn write_group(
    inner: &Inner,
    active: &mut Active,
    first: u64,
    entries: &[Entry],
    buf: &mut Vec<u8>,
) -> Result<u64, WalError> {
    buf.clear();
    let mut offset = first;
    for e in entries {
        if e.marker {
            continue;
        }
        frame::encode(buf, offset, &e.payload, &e.crc);
        offset += 1;
    }
    let records = offset - first;
    if records == 0 {
        return Ok(0);
    }
    if active.len > 0 && active.len + buf.len() as u64 > inner.cfg.segment_bytes {
        // Roll: the old segment is synced already (every group is).
        let fresh = open_segment(&inner.cfg, first)?;
        *active = fresh;
        inner.shared.segments.fetch_add(1, Ordering::AcqRel);
    }
    let before = active.len;
    let written = active
        .file
        .write_all(buf)
        .map_err(WalError::io("write", &active.path))
        .and_then(|()| {
            if !inner.cfg.sync {
                return Ok(());
            }
            active
                .file
                .sync_data()
                .map_err(WalError::io("fdatasync", &active.path))
        });
    match written {
        Ok(()) => {
            active.len += buf.len() as u64;
            inner.shared.syncs.fetch_add(1, Ordering::Relaxed);
            inner
                .shared
                .bytes
                .fetch_add(buf.len() as u64, Ordering::AcqRel);
            Ok(records)
        }
        Err(e) => {
            // Cut the partial group off so that the next group's records follow whole ones.
            let cut = active
                .file
                .set_len(before)
                .and_then(|()| active.file.sync_all());
            match cut {
                Ok(()) => Err(e),
                Err(c) => Err(WalError::Broken(format!(
                    "{e}; cutting {} back to {before} bytes failed too: {c}",
                    active.path.display()
                ))),
            }
        }
    }
}
