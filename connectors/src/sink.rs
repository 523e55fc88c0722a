//! The lifecycle every sink honours: process rows, hear the watermark, checkpoint, commit.
//!
//! Modelled on Arroyo's operator hooks. The split between `checkpoint` (everything processed is
//! durable, not yet visible) and `commit` (it becomes visible, atomically) is what lets a
//! source acknowledge its input (Kafka offsets, MQTT acks) only after the data is safe.

/// What a commit made visible.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitSummary {
    /// Files that became visible.
    pub files: usize,
    /// Rows in them.
    pub rows: usize,
}

impl std::ops::AddAssign for CommitSummary {
    fn add_assign(&mut self, o: Self) {
        self.files += o.files;
        self.rows += o.rows;
    }
}

/// A sink of rows of type `Row`.
pub trait Sink<Row> {
    /// The sink's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Takes the rows out of `rows` (buffering them; a sink may stage data early when its
    /// buffers fill).
    fn process(&mut self, rows: &mut Vec<Row>) -> Result<(), Self::Error>;

    /// Event time (µs since the Unix epoch) has passed `watermark_micros`: rows before it are
    /// complete, so a sink may roll what it holds for earlier periods.
    fn watermark(&mut self, watermark_micros: i64) -> Result<(), Self::Error>;

    /// Makes every row processed so far durable, but not yet visible to readers.
    fn checkpoint(&mut self) -> Result<(), Self::Error>;

    /// Makes everything checkpointed visible to readers, atomically per file.
    fn commit(&mut self) -> Result<CommitSummary, Self::Error>;
}
