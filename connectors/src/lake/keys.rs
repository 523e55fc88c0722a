//! What the lake already holds, so that replaying a log again adds nothing: the keys of the
//! committed readings and dead letters.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use kaiabc_schemas::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{table_files, LakeError};

/// Payloads of every committed dead letter, per source, so that replaying a log again adds no
/// dead letter twice.
#[derive(Clone, Debug, Default)]
pub struct ExistingKeys {
    /// Payloads of every committed dead letter, per source.
    pub dead_letters: HashMap<String, HashSet<String>>,
}

impl ExistingKeys {
    /// Whether this dead letter is already in the lake.
    pub fn has_dead_letter(&self, source: &str, payload: &str) -> bool {
        self.dead_letters
            .get(source)
            .is_some_and(|p| p.contains(payload))
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

/// The set under `key`, created on first use (the key is only copied then).
fn entry<'a, V: Default>(map: &'a mut HashMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// Calls `f(node_id, timestamp µs, seq)` for every committed reading under `root` (a pass over
/// three columns of the `readings` files).
pub fn for_each_reading_key(
    root: &Path,
    mut f: impl FnMut(&str, i64, Option<i64>),
) -> Result<(), LakeError> {
    for path in table_files(root, Table::Readings)? {
        for batch in projected(&path, &["node_id", "seq", "timestamp"])? {
            let batch = batch.map_err(LakeError::Arrow)?;
            let node = col::<StringArray>(&batch, "node_id")?;
            let seq = col::<Int64Array>(&batch, "seq")?;
            let ts = col::<TimestampMicrosecondArray>(&batch, "timestamp")?;
            for i in 0..batch.num_rows() {
                let s = (!seq.is_null(i)).then(|| seq.value(i));
                f(node.value(i), ts.value(i), s);
            }
        }
    }
    Ok(())
}

/// Reads the payloads of every committed dead letter under `root`.
pub fn existing_keys(root: &Path) -> Result<ExistingKeys, LakeError> {
    let mut keys = ExistingKeys::default();
    for path in table_files(root, Table::DeadLetters)? {
        for batch in projected(&path, &["source", "payload"])? {
            let batch = batch.map_err(LakeError::Arrow)?;
            let source = col::<StringArray>(&batch, "source")?;
            let payload = col::<StringArray>(&batch, "payload")?;
            for i in 0..batch.num_rows() {
                entry(&mut keys.dead_letters, source.value(i)).insert(payload.value(i).to_string());
            }
        }
    }
    Ok(keys)
}
