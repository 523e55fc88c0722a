//! Query results as one HDF5 file in memory (an export's download): a group named for the
//! data with one dataset per column, written by the pure-Rust `hdf5-pure` (no C library).
//!
//! Types map so that h5py, MATLAB and `h5dump` read them without help: floats as float64 with
//! nulls as NaN; integers and times as int64 (times in their unit since the Unix epoch, named
//! by a `units` attribute) or, when they hold nulls, as float64 with NaN (exact to 2^53, which
//! µs since 1970 stay below for another 200 years); booleans as uint8 0/1; everything else
//! as fixed-width UTF-8 strings, nulls empty.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use hdf5_pure::{AttrValue, DatasetBuilder, FileBuilder, GroupBuilder};

use super::LakeError;

/// Rows per compressed chunk.
const CHUNK_ROWS: usize = 65_536;

fn text(v: &str) -> AttrValue {
    // Variable-length UTF-8, as h5py writes its own: read back as `str`.
    AttrValue::VarLenString(v.to_string())
}

fn hdf5_err(e: impl std::fmt::Display) -> LakeError {
    LakeError::Hdf5(e.to_string())
}

/// `batches` as an HDF5 file: the columns under `/<group>/`, and `attrs` on the root.
pub fn hdf5_bytes(
    batches: &[RecordBatch],
    group: &str,
    attrs: &[(&str, &str)],
) -> Result<Vec<u8>, LakeError> {
    let mut file = FileBuilder::new();
    for (k, v) in attrs {
        file.set_attr(k, text(v));
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    file.set_attr("record_count", AttrValue::I64(rows as i64));
    let mut g = file.create_group(&safe_name(group));
    if let Some(first) = batches.first() {
        let all = concat_batches(&first.schema(), batches)?;
        for (field, column) in all.schema().fields().iter().zip(all.columns()) {
            write_column(&mut g, &safe_name(field.name()), column)?;
        }
    }
    file.add_group(g.finish());
    file.finish().map_err(hdf5_err)
}

/// HDF5 link names may not hold `/` (nor be `.`).
fn safe_name(name: &str) -> String {
    match name.replace('/', "_") {
        n if n.is_empty() || n == "." => "_".to_string(),
        n => n,
    }
}

/// Compression for a column of `n` rows (an empty dataset cannot be chunked).
fn compress(ds: &mut DatasetBuilder, n: usize) {
    if n > 0 {
        ds.with_chunks(&[n.min(CHUNK_ROWS) as u64]).with_deflate(4);
    }
}

fn time_units(unit: &TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "seconds since 1970-01-01T00:00:00Z",
        TimeUnit::Millisecond => "milliseconds since 1970-01-01T00:00:00Z",
        TimeUnit::Microsecond => "microseconds since 1970-01-01T00:00:00Z",
        TimeUnit::Nanosecond => "nanoseconds since 1970-01-01T00:00:00Z",
    }
}

fn write_column(g: &mut GroupBuilder, name: &str, column: &ArrayRef) -> Result<(), LakeError> {
    let n = column.len();
    let units = match column.data_type() {
        DataType::Timestamp(unit, _) => Some(time_units(unit)),
        _ => None,
    };
    let numeric = column.data_type().is_integer() || units.is_some();
    let ds = g.create_dataset(name);
    ds.set_attr("arrow_type", text(&column.data_type().to_string()));
    if let Some(u) = units {
        ds.set_attr("units", text(u));
    }
    match column.data_type() {
        t if t.is_floating() || (numeric && column.null_count() > 0) => {
            let f = cast(column, &DataType::Float64)?;
            let f = f.as_primitive::<Float64Type>();
            let values: Vec<f64> = (0..n)
                .map(|i| if f.is_null(i) { f64::NAN } else { f.value(i) })
                .collect();
            ds.with_f64_data(&values)
                .set_attr("_FillValue", AttrValue::F64(f64::NAN));
        }
        DataType::UInt64 => {
            ds.with_u64_data(
                column
                    .as_primitive::<arrow::datatypes::UInt64Type>()
                    .values(),
            );
        }
        _ if numeric => {
            let i = cast(column, &DataType::Int64)?;
            ds.with_i64_data(i.as_primitive::<Int64Type>().values());
        }
        DataType::Boolean if column.null_count() == 0 => {
            let b = column.as_boolean();
            let values: Vec<u8> = (0..n).map(|i| u8::from(b.value(i))).collect();
            ds.with_u8_data(&values);
        }
        _ => {
            let fmt = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
            let values: Vec<String> = (0..n)
                .map(|i| {
                    if column.is_null(i) {
                        String::new()
                    } else {
                        fmt.value(i).to_string()
                    }
                })
                .collect();
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            ds.with_strings(&refs).map_err(hdf5_err)?;
        }
    }
    compress(ds, n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use std::sync::Arc;

    /// What was written reads back, by the crate's own reader (h5py reads it in the
    /// pipeline's export test).
    #[test]
    fn columns_read_back_with_their_types_units_and_nulls() {
        let batch = RecordBatch::try_from_iter([
            (
                "timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        1_767_225_600_000_000,
                        1_767_225_660_000_000,
                    ])
                    .with_timezone("UTC"),
                ) as ArrayRef,
            ),
            (
                "koa",
                Arc::new(Float64Array::from(vec![Some(0.5), None])) as ArrayRef,
            ),
            (
                "seq",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "node_id",
                Arc::new(StringArray::from(vec![Some("p1"), None])) as ArrayRef,
            ),
            (
                "on",
                Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef,
            ),
        ])
        .unwrap();
        let bytes = hdf5_bytes(&[batch.clone(), batch], "states", &[("node_id", "p1")]).unwrap();
        let f = hdf5_pure::File::from_bytes(bytes).unwrap();
        let ts = f.dataset("states/timestamp").unwrap();
        assert_eq!(
            ts.read_i64().unwrap(),
            [1_767_225_600_000_000, 1_767_225_660_000_000].repeat(2)
        );
        let koa = f.dataset("states/koa").unwrap().read_f64().unwrap();
        assert_eq!(koa[0], 0.5);
        assert!(koa[1].is_nan());
        // An integer column with nulls becomes float64 with NaN.
        let seq = f.dataset("states/seq").unwrap().read_f64().unwrap();
        assert_eq!(seq[2], 1.0);
        assert!(seq[3].is_nan());
        let on = f.dataset("states/on").unwrap().read_u8().unwrap();
        assert_eq!(on, [1, 0, 1, 0]);
        let ids = f.dataset("states/node_id").unwrap().read_string().unwrap();
        assert_eq!(ids, ["p1", "", "p1", ""]);
    }
}
