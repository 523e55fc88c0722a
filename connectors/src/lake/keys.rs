//! What the lake already holds, so that replaying a log again adds nothing: the keys of the
//! committed readings and dead letters.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use kaiabc_schemas::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{table_files, LakeError};

/// Keys of committed rows.
#[derive(Clone, Debug, Default)]
pub struct ExistingKeys {
    /// (node_id, seq) of every committed reading with a seq.
    pub reading_seqs: HashSet<(String, i64)>,
    /// (node_id, timestamp µs) of every committed reading.
    pub reading_times: HashSet<(String, i64)>,
    /// (source, payload) of every committed dead letter.
    pub dead_letters: HashSet<(String, String)>,
}

impl ExistingKeys {
    /// Whether a reading with this key is already in the lake.
    pub fn has_reading(&self, node_id: &str, seq: Option<i64>, micros: i64) -> bool {
        // Allocation-free lookups are not possible with tuple keys of String; the sets are
        // only consulted when the lake held data before the run.
        if self.reading_times.is_empty() {
            return false;
        }
        let node = node_id.to_string();
        seq.is_some_and(|s| self.reading_seqs.contains(&(node.clone(), s)))
            || self.reading_times.contains(&(node, micros))
    }

    /// Whether this dead letter is already in the lake.
    pub fn has_dead_letter(&self, source: &str, payload: &str) -> bool {
        !self.dead_letters.is_empty()
            && self
                .dead_letters
                .contains(&(source.to_string(), payload.to_string()))
    }
}

fn projected(
    path: &Path,
    columns: &[&str],
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, LakeError> {
    let file = File::open(path).map_err(LakeError::io("open", path))?;
    let pq = |source| LakeError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let mask = ProjectionMask::columns(b.parquet_schema(), columns.iter().copied());
    b.with_projection(mask).build().map_err(pq)
}

fn col<'a, T: 'static>(
    batch: &'a arrow::array::RecordBatch,
    name: &str,
) -> Result<&'a T, LakeError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            LakeError::Config(format!(
                "lake file lacks column {name} of the expected type"
            ))
        })
}

/// Reads the keys of everything committed under `root`.
pub fn existing_keys(root: &Path) -> Result<ExistingKeys, LakeError> {
    let mut keys = ExistingKeys::default();
    for path in table_files(root, Table::Readings)? {
        for batch in projected(&path, &["node_id", "seq", "timestamp"])? {
            let batch = batch.map_err(LakeError::Arrow)?;
            let node = col::<StringArray>(&batch, "node_id")?;
            let seq = col::<Int64Array>(&batch, "seq")?;
            let ts = col::<TimestampMicrosecondArray>(&batch, "timestamp")?;
            for i in 0..batch.num_rows() {
                let n = node.value(i).to_string();
                if !seq.is_null(i) {
                    keys.reading_seqs.insert((n.clone(), seq.value(i)));
                }
                keys.reading_times.insert((n, ts.value(i)));
            }
        }
    }
    for path in table_files(root, Table::DeadLetters)? {
        for batch in projected(&path, &["source", "payload"])? {
            let batch = batch.map_err(LakeError::Arrow)?;
            let source = col::<StringArray>(&batch, "source")?;
            let payload = col::<StringArray>(&batch, "payload")?;
            for i in 0..batch.num_rows() {
                keys.dead_letters
                    .insert((source.value(i).to_string(), payload.value(i).to_string()));
            }
        }
    }
    Ok(keys)
}
