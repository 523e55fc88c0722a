//! The replay's file reader, on a thread of its own: reads the files in order and finds each
//! line's node and event time (a peek, not a parse), so that worker 0, which orders the lines
//! and sends them to their nodes' workers, does not also read and peek every line. Worker 0
//! has nodes of its own to apply; reading on it left the other workers waiting for it.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use kaiabc_connectors::file::{read_records, Format, Peek};
use kaiabc_operators::dataflow::node_hash;
use kaiabc_schemas::{parse_timestamp, RawReading, Rejection};

use super::parse::LogFile;

/// One record read, with what the peek found.
pub struct Line {
    /// Line (or row) number in its file.
    pub line: u64,
    /// The record's bytes (a Parquet row rendered as JSON).
    pub payload: Vec<u8>,
    /// A Parquet row comes parsed.
    pub parsed: Option<Box<Result<RawReading, Rejection>>>,
    /// The hash of its node id, if it names one.
    pub node: Option<u64>,
    /// Its event time, µs since the Unix epoch, if its timestamp reads.
    pub micros: Option<i64>,
}

/// What the reader sends, in the order of the files and their lines.
pub enum Read {
    /// The next lines of the file being read.
    Lines(Vec<Line>),
    /// The file of this index is read to its end.
    FileDone(usize),
    /// Reading failed: no more follows.
    Failed(String),
}

/// Lines a batch holds: worker 0 takes them a batch at a time.
const BATCH: usize = 1024;

/// Batches in flight: the reader stays at most this far ahead of worker 0.
const IN_FLIGHT: usize = 8;

/// Starts reading `files` (with their parsers, in the same order) on a thread of its own.
/// The thread ends when every file is read, at the first error, or when the receiver is
/// dropped.
pub fn start(files: Vec<(PathBuf, Format)>, logs: Arc<Vec<LogFile>>) -> Receiver<Read> {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || {
            for (index, ((path, format), log)) in files.iter().zip(logs.iter()).enumerate() {
                let mut batch = Vec::with_capacity(BATCH);
                let mut gone = false;
                let read = read_records(path, *format, |rec| {
                    if gone {
                        return;
                    }
                    let peek = match (&rec.parsed, &log.parser) {
                        (Some(Ok(raw)), _) => Peek {
                            node_id: raw.node_id.as_deref().map(Into::into),
                            timestamp: raw.timestamp.as_deref().map(Into::into),
                        },
                        (None, Some(parser)) => parser.peek(rec.payload),
                        _ => Peek::default(),
                    };
                    batch.push(Line {
                        line: rec.line,
                        node: peek.node_id.as_deref().map(node_hash),
                        micros: peek
                            .timestamp
                            .and_then(|s| parse_timestamp(&s).ok())
                            .map(|t| t.timestamp_micros()),
                        payload: rec.payload.to_vec(),
                        parsed: rec.parsed.map(Box::new),
                    });
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        gone = tx.send(Read::Lines(full)).is_err();
                    }
                });
                let sent = match read {
                    Ok(_) => {
                        (batch.is_empty() || tx.send(Read::Lines(batch)).is_ok())
                            && tx.send(Read::FileDone(index)).is_ok()
                    }
                    Err(e) => {
                        let _ = tx.send(Read::Failed(e.to_string()));
                        false
                    }
                };
                if gone || !sent {
                    return;
                }
            }
        })
        .expect("spawn the replay reader");
    rx
}
