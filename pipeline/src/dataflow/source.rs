//! Sources with offsets: where the live dataflow reads its messages (the embedded write-ahead
//! log, or Kafka's `kaiabc.readings`), by position, committing a position only once a
//! checkpoint covers everything before it. Modelled on Arroyo's sources: read, checkpoint,
//! commit.

use std::time::Duration;

use kaiabc_connectors::kafka::{KafkaSource, Offsets};
use kaiabc_connectors::wal::WalReader;

use super::inbound::Inbound;

/// Where a source has read to: restarting there reads everything after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// The next offset of the write-ahead log.
    Log(u64),
    /// The next offset per partition of `kaiabc.readings`.
    Kafka(Offsets),
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading or committing the write-ahead log.
    #[error(transparent)]
    Log(#[from] kaiabc_connectors::wal::WalError),
    /// Reading or committing Kafka.
    #[error(transparent)]
    Kafka(#[from] kaiabc_connectors::kafka::KafkaError),
    /// A position of another source was given to commit.
    #[error("a {0} position given to another source")]
    WrongPosition(&'static str),
}

impl SourceError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Log(e) => e.code(),
            Self::Kafka(_) => "KAFKA_SOURCE",
            Self::WrongPosition(_) => "WRONG_POSITION",
        }
    }
}

/// A source of inbound messages with offsets.
pub trait OffsetSource: Send {
    /// Reads up to `max` messages into `out` without waiting; how many it read.
    fn poll(&mut self, max: usize, out: &mut Vec<Inbound>) -> Result<usize, SourceError>;

    /// Where it has read to: a checkpoint taken after everything read so far is handled
    /// covers everything before this.
    fn position(&self) -> Position;

    /// Makes `at` the place to restart from (its records are in a saved checkpoint).
    fn commit(&mut self, at: &Position) -> Result<(), SourceError>;
}

/// The write-ahead log as a source.
pub struct LogSource {
    reader: WalReader,
}

impl LogSource {
    /// Reads `reader` from its committed offset on.
    pub fn new(reader: WalReader) -> Self {
        Self { reader }
    }
}

impl OffsetSource for LogSource {
    fn poll(&mut self, max: usize, out: &mut Vec<Inbound>) -> Result<usize, SourceError> {
        let mut n = 0;
        // Decoded straight from the read buffer: the payload is copied once, into its message.
        self.reader
            .poll_with(max, |offset, payload| match Inbound::decode(payload) {
                Ok(m) => {
                    out.push(m);
                    n += 1;
                }
                // Checksummed, so not damage on disk: a record of another version.
                Err(e) => tracing::error!(offset, error = %e, code = e.code(), "skipped"),
            })?;
        Ok(n)
    }

    fn position(&self) -> Position {
        Position::Log(self.reader.position())
    }

    fn commit(&mut self, at: &Position) -> Result<(), SourceError> {
        let Position::Log(offset) = at else {
            return Err(SourceError::WrongPosition("Kafka"));
        };
        let deleted = self.reader.commit(*offset)?;
        if deleted > 0 {
            tracing::debug!(offset, deleted, "write-ahead log segments deleted");
        }
        Ok(())
    }
}

impl OffsetSource for KafkaSource {
    fn poll(&mut self, max: usize, out: &mut Vec<Inbound>) -> Result<usize, SourceError> {
        let mut n = 0;
        while n < max {
            match KafkaSource::poll(self, Duration::ZERO) {
                None => break,
                Some(Ok(r)) => {
                    out.push(crate::bridge::inbound_of(r));
                    n += 1;
                }
                Some(Err(e)) => {
                    // librdkafka retries by itself; the next poll goes on.
                    tracing::warn!(error = %e, "reading Kafka");
                    break;
                }
            }
        }
        Ok(n)
    }

    fn position(&self) -> Position {
        Position::Kafka(self.positions().clone())
    }

    fn commit(&mut self, at: &Position) -> Result<(), SourceError> {
        let Position::Kafka(offsets) = at else {
            return Err(SourceError::WrongPosition("log"));
        };
        KafkaSource::commit(self, offsets)?;
        Ok(())
    }
}
