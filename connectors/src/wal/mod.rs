//! The write-ahead log of inbound messages: what the embedded pipeline has acknowledged, on
//! disk before the acknowledgement, read back by the dataflow by offset like a Kafka partition.
//!
//! Every producer (the MQTT gate, the HTTP API, the client of an external broker) appends the
//! raw message with [`WalWriter::append`] and acknowledges its sender only from the callback,
//! which runs once the record is fsync'd. One writer thread does all the writing: whatever
//! producers appended while it was syncing goes out in the next single `write` + `fdatasync`
//! (group commit), so durability costs one sync per group, not per message.
//!
//! The dataflow's source ([`WalReader`]) reads records from the segment files by offset, up to
//! what the writer has made durable. When a checkpoint has covered every record before an
//! offset, [`WalReader::commit`] stores that offset and deletes the segments wholly before it.
//! On restart, [`open`] finds the committed offset and the reader starts there: what was
//! acknowledged but not yet checkpointed is read again.
//!
//! On disk, under the log's directory:
//! - `{first offset, 20 digits}.wal`: segments, each a run of records
//!   `[payload length u32][crc32 u32][offset u64][payload]` (little-endian). The checksum covers
//!   the length, the offset and the payload, so a torn write after power loss (a record cut
//!   short, or garbage after the last whole record) is detected; [`open`] truncates the last
//!   segment there. Such a tail was never acknowledged: acknowledgements follow the sync.
//! - `committed`: the offset the reader resumes from, written atomically (temp file, fsync,
//!   rename, fsync of the directory).
//!
//! Disk use is bounded: segments are deleted once committed past, and appends are refused with
//! [`WalError::Full`] while more than [`WalConfig::max_bytes`] of segments are on disk (the
//! dataflow is not keeping up, or checkpoints fail).
//!
//! Why our own log and not a crate: okaywal (the group-commit WAL on crates.io) says it is not
//! for production and that its format is unstable, and it drives checkpoints itself (a
//! callback that must persist a segment's effects before it is recycled), where ours are driven
//! by the dataflow's barriers; fjall is an LSM key-value store (compaction, write
//! amplification) around a journal we would use only as a queue; commitlog has no group commit
//! and has not been released since 2019. What we need is the few hundred lines here.

mod frame;
mod reader;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

pub use reader::{WalReader, WalRecord};
pub use writer::{Done, WalWriter};

/// Where the log lives and how big it may grow.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// The log's directory.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Appends are refused while the segments on disk hold more than this (the dataflow is
    /// behind, or its checkpoints fail): a bound on the log's disk use.
    pub max_bytes: u64,
    /// Sync every group before its callbacks run (`false` only to measure what syncing costs:
    /// acknowledged records can then be lost in a crash).
    pub sync: bool,
}

impl WalConfig {
    /// The defaults for a log in `dir`: 16 MiB segments, at most 1 GiB on disk.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 16 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            sync: true,
        }
    }
}

/// Errors of the log.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WalError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error (shared: one failed sync fails every record of its group).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The segments on disk hold more than the configured maximum.
    #[error("the write-ahead log holds {bytes} bytes, over its limit of {limit}: the pipeline is not keeping up")]
    Full {
        /// Bytes on disk.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The log was closed (the server is stopping).
    #[error("the write-ahead log is closed")]
    Closed,
    /// A write failed and the segment could not be cut back to its last whole record, so
    /// nothing more can be appended safely.
    #[error("the write-ahead log is unusable after a failed write: {0}")]
    Broken(String),
    /// A segment holds a record that is not whole or fails its checksum before its end.
    #[error("segment {path} is corrupt at byte {at}: {why}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the bad record starts.
        at: u64,
        /// What is wrong.
        why: String,
    },
}

impl WalError {
    /// A stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "WAL_IO",
            Self::Full { .. } => "WAL_FULL",
            Self::Closed => "WAL_CLOSED",
            Self::Broken(_) => "WAL_BROKEN",
            Self::Corrupt { .. } => "WAL_CORRUPT",
        }
    }

    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }
}

/// How far the log is on disk: the reader reads no further, so it never reads the bytes of a
/// group whose write failed and was cut off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tip {
    /// Records `< next` are on disk (fsync'd).
    pub next: u64,
    /// The first offset of the segment being written.
    pub segment: u64,
    /// Its synced length in bytes.
    pub bytes: u64,
}

/// What the writer and the reader share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Records `< durable` are on disk (fsync'd); a quick check before taking `tip`.
    pub durable: AtomicU64,
    /// How far the log is on disk.
    pub tip: std::sync::Mutex<Tip>,
    /// Bytes of segments on disk (the writer adds, the reader's deletions subtract).
    pub bytes: AtomicU64,
    /// Segments on disk.
    pub segments: AtomicUsize,
    /// Groups written and synced (each one `fdatasync`).
    pub syncs: AtomicU64,
}

/// What [`open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The committed offset: the reader starts here.
    pub committed: u64,
    /// The next offset to be written: records `committed..end` are read again.
    pub end: u64,
    /// Bytes cut from the end of the last segment (a torn write; never acknowledged).
    pub truncated_bytes: u64,
    /// Segments deleted because a commit had covered them.
    pub deleted_segments: usize,
}

/// Opens (or creates) the log in `cfg.dir`: recovers its end (truncating a torn tail), starts
/// the writer thread, and returns the writer, the reader (positioned at the committed offset)
/// and what was recovered.
pub fn open(cfg: WalConfig) -> Result<(WalWriter, WalReader, Recovered), WalError> {
    std::fs::create_dir_all(&cfg.dir).map_err(WalError::io("create", &cfg.dir))?;
    let committed = reader::read_committed(&cfg.dir)?;
    let mut recovered = frame::recover(&cfg.dir, committed)?;
    recovered.committed = committed.min(recovered.end);
    let shared = Arc::new(Shared::default());
    let segments = frame::segments(&cfg.dir)?;
    let bytes: u64 = segments.iter().map(|s| s.len).sum();
    shared
        .durable
        .store(recovered.end, std::sync::atomic::Ordering::Release);
    shared
        .bytes
        .store(bytes, std::sync::atomic::Ordering::Release);
    shared
        .segments
        .store(segments.len(), std::sync::atomic::Ordering::Release);
    let writer = WalWriter::start(
        cfg.clone(),
        Arc::clone(&shared),
        recovered.end,
        segments.last(),
    )?;
    let reader = WalReader::new(cfg, shared, recovered.committed);
    Ok((writer, reader, recovered))
}

#[cfg(test)]
mod tests;
