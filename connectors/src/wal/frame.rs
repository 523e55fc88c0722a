//! The log's records and segment files: framing with checksums, listing segments, and finding
//! the end of the log after a crash (a torn tail is cut off).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Recovered, WalError};

/// Bytes before a record's payload: length (u32), crc32 (u32), offset (u64).
pub(crate) const HEADER: usize = 16;

/// A payload longer than this is taken for a corrupt length field.
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// The file name of the segment whose first record has offset `first`.
pub(crate) fn segment_name(first: u64) -> String {
    format!("{first:020}.wal")
}

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The offset of its first record.
    pub first: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
}

/// The segments in `dir`, oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(WalError::io("list", dir))? {
        let e = e.map_err(WalError::io("list", dir))?;
        let name = e.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = e.path();
        let len = e.metadata().map_err(WalError::io("stat", &path))?.len();
        out.push(Segment { first, path, len });
    }
    out.sort_by_key(|s| s.first);
    Ok(out)
}

/// The checksum of a record: its length and offset, then its payload (whose own crc the
/// producer computed, off the writer's thread).
pub(crate) fn checksum(len: u32, offset: u64, payload: &crc32fast::Hasher) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&offset.to_le_bytes());
    h.combine(payload);
    h.finalize()
}

/// Appends one record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, payload: &[u8], crc: &crc32fast::Hasher) {
    let len = payload.len() as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(len, offset, crc).to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The outcome of reading one record from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A whole record with a good checksum; `size` bytes long with its header.
    Record {
        offset: u64,
        payload: &'a [u8],
        size: usize,
    },
    /// The buffer ends inside a record.
    Incomplete,
    /// Not a record: a bad checksum or an impossible length.
    Bad(String),
}

/// Reads the record at the front of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < HEADER {
        return Parsed::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let offset = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Parsed::Bad(format!("a record length of {len} bytes"));
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Parsed::Incomplete;
    };
    let mut h = crc32fast::Hasher::new();
    h.update(payload);
    if checksum(len as u32, offset, &h) != crc {
        return Parsed::Bad("checksum mismatch".into());
    }
    Parsed::Record {
        offset,
        payload,
        size: HEADER + len,
    }
}

/// How far the whole, consecutive records of a segment go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The offset after the last good record.
    pub end: u64,
    /// The byte after the last good record.
    pub good_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

/// Reads a segment's records from the start, checking checksums and that offsets run on from
/// `first` one by one.
pub(crate) fn scan(path: &Path, first: u64) -> Result<Scan, WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(WalError::io("read", path))?;
    let mut at = 0usize;
    let mut next = first;
    let stopped = loop {
        match parse(&bytes[at..]) {
            Parsed::Record { offset, size, .. } if offset == next => {
                at += size;
                next += 1;
            }
            Parsed::Record { offset, .. } => {
                break Some(format!("offset {offset} where {next} was due"));
            }
            Parsed::Incomplete if at == bytes.len() => break None,
            Parsed::Incomplete => {
                break Some(format!("a record cut short ({} bytes)", bytes.len() - at))
            }
            Parsed::Bad(why) => break Some(why),
        }
    };
    Ok(Scan {
        end: next,
        good_bytes: at as u64,
        stopped,
    })
}

/// Finds the end of the log: deletes segments a commit covered, scans the rest, and cuts the
/// last segment back to its last whole record.
pub(crate) fn recover(dir: &Path, committed: u64) -> Result<Recovered, WalError> {
    let mut rec = Recovered {
        committed,
        end: committed,
        ..Recovered::default()
    };
    let mut segs = segments(dir)?;
    // A segment is wholly before `committed` when the next one starts at or before it.
    while segs.len() > 1 && segs[1].first <= committed {
        let s = segs.remove(0);
        std::fs::remove_file(&s.path).map_err(WalError::io("delete", &s.path))?;
        rec.deleted_segments += 1;
    }
    let last = segs.len().saturating_sub(1);
    for (i, s) in segs.iter().enumerate() {
        let scan = scan(&s.path, s.first)?;
        if let Some(why) = &scan.stopped {
            if i == last {
                tracing::warn!(
                    segment = %s.path.display(), at = scan.good_bytes, why = %why,
                    "the write-ahead log ends in a torn record (never acknowledged): cut off"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .map_err(WalError::io("open", &s.path))?;
                f.set_len(scan.good_bytes)
                    .map_err(WalError::io("truncate", &s.path))?;
                f.sync_all().map_err(WalError::io("fsync", &s.path))?;
                rec.truncated_bytes = s.len - scan.good_bytes;
            } else {
                // Not a torn write (later segments were written after this one was synced):
                // damage on disk. The reader skips the rest of this segment.
                tracing::error!(
                    segment = %s.path.display(), at = scan.good_bytes, why = %why,
                    "a write-ahead log segment is damaged; its records from here on are lost"
                );
            }
        }
        if i == last {
            rec.end = scan.end.max(committed);
        }
    }
    Ok(rec)
}
