//! How each column of the lake is stored: its Parquet encoding, and for computed doubles the
//! precision kept (the low mantissa bits that carry no information are set to zero, so zstd
//! stores them for nearly nothing).

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::kernels::arity::unary_mut;
use arrow::datatypes::{DataType, Field, Float64Type};
use kaiabc_schemas::Table;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

/// Significand bits kept of a computed double (of 52): float32's precision, a relative rounding
/// error of at most 2⁻²⁴ ≈ 6·10⁻⁸.
///
/// Below what the values can mean: the clock is integrated with a relative tolerance of 10⁻⁶
/// (16× coarser), and a filtered reading's rounding (at most 1.8·10⁻⁵ K on 300 K, 0.006 Pa on
/// 10⁵ Pa) is far below the BME280's resolution (0.01 K, 0.18 Pa) and the filter's own
/// standard deviation. The columns stay `Float64`, so no reader sees a type change.
pub const COMPUTED_KEEP_BITS: u32 = 23;

/// What a column holds, which decides its encoding and its precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// Ids and enums: their values repeat, so dictionary-encoded.
    Label,
    /// Timestamps and integers: rows come a node at a time in time order, so the deltas are
    /// nearly constant (`DELTA_BINARY_PACKED`: a timestamp 4.65 → 0.05 bytes a row).
    Counter,
    /// Doubles as sensors (or people) give them: a few significant digits, which zstd finds as
    /// repeated byte patterns in the plain encoding (byte-stream split makes them larger), and
    /// kept exactly.
    Exact,
    /// Doubles computed from readings (clock state, filtered values, KOA, phase, rhythm fits):
    /// smooth full-precision values, `BYTE_STREAM_SPLIT` and rounded to
    /// [`COMPUTED_KEEP_BITS`].
    Computed,
    /// Anything else (booleans, free text): Parquet's default.
    Other,
}

/// Columns whose values repeat (ids, enums).
const LABEL_COLUMNS: [&str; 7] = [
    "node_id",
    "sensor_type",
    "quality",
    "metric",
    "reason",
    "source",
    "outcome",
];

/// The tables whose computed doubles are rounded: the ones with a row per reading (and the
/// rhythm fits over them). The small tables (fleet snapshots, phase shifts, alerts) keep every
/// bit, as a requested shift's target must read back as it was asked.
fn rounds_computed(table: Table) -> bool {
    matches!(table, Table::States | Table::Readings | Table::Rhythms)
}

/// What `field` of `table` holds.
pub fn column_kind(table: Table, field: &Field) -> ColumnKind {
    let name = field.name().as_str();
    if LABEL_COLUMNS.contains(&name) {
        return ColumnKind::Label;
    }
    match field.data_type() {
        DataType::Timestamp(..) | DataType::Int64 | DataType::Int32 => ColumnKind::Counter,
        DataType::Float64 if is_measured(table, name) => ColumnKind::Exact,
        // Byte-stream split everywhere; rounded only where `rounds_computed`.
        DataType::Float64 => ColumnKind::Computed,
        _ => ColumnKind::Other,
    }
}

/// Measured values as sensors report them.
fn is_measured(table: Table, column: &str) -> bool {
    column.starts_with("raw_")
        || (table == Table::Readings
            && matches!(
                column,
                "temperature_kelvin" | "humidity_percent" | "pressure_pa" | "light_lux"
            ))
}

/// How `table`'s files are written: zstd at `level`, format 2.0, row groups of `row_group_rows`,
/// and per column the encoding its [`ColumnKind`] compresses best with (measured on a day of
/// 200 and of 2 000 nodes, DEVELOPERS.md "The lake's encodings"). Dictionaries only for labels:
/// elsewhere they cost a hash lookup per value and fall back to plain anyway.
pub fn table_properties(
    table: Table,
    level: ZstdLevel,
    row_group_rows: usize,
    created_by: &str,
) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_dictionary_enabled(false)
        .set_created_by(created_by.to_string());
    for field in table.schema().fields() {
        let path = ColumnPath::from(field.name().as_str());
        props = match column_kind(table, field) {
            ColumnKind::Label => props.set_column_dictionary_enabled(path, true),
            ColumnKind::Counter => props.set_column_encoding(path, Encoding::DELTA_BINARY_PACKED),
            ColumnKind::Computed => props.set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT),
            ColumnKind::Exact | ColumnKind::Other => props,
        };
    }
    props.build()
}

/// `x` rounded to the nearest double with `keep` significand bits (ties to even), as BitRound
/// does (Klöwer et al. 2021, "Compressing atmospheric data into its real information content",
/// Nature Computational Science 1, 713–724; numcodecs' `BitRound` and netCDF-C's
/// `NC_QUANTIZE_BITROUND` implement the same). Zeros, subnormals (an underflowed p-value of
/// 10⁻³¹⁷ has fewer significant bits than `keep`, and would round to zero), infinities and NaN
/// pass unchanged; a value that would round past the largest finite double is left as it is.
pub fn round_significand(x: f64, keep: u32) -> f64 {
    if keep >= 52 || !x.is_normal() {
        return x;
    }
    let drop = 52 - keep;
    let bits = x.to_bits();
    // Half a unit of the last kept bit, less one, plus the kept bit's parity: ties go to even.
    let half = (1u64 << (drop - 1)) - 1 + ((bits >> drop) & 1);
    let rounded = f64::from_bits((bits + half) & !((1u64 << drop) - 1));
    if rounded.is_finite() {
        rounded
    } else {
        x
    }
}

/// `batch` (rows of `table`) with its [`ColumnKind::Computed`] columns rounded to
/// [`COMPUTED_KEEP_BITS`] where the table rounds them, in place when the column's buffer is not
/// shared. Rounding is idempotent, so a batch staged again after a failure is unchanged.
pub fn round_computed(table: Table, batch: RecordBatch) -> RecordBatch {
    if !rounds_computed(table) {
        return batch;
    }
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    drop(batch);
    for (field, column) in schema.fields().iter().zip(columns.iter_mut()) {
        if column_kind(table, field) != ColumnKind::Computed {
            continue;
        }
        let values = column.as_primitive::<Float64Type>().clone();
        // The batch's own reference is gone: the clone is the buffer's only owner unless the
        // caller kept one, and then `unary_mut` hands it back to be copied instead.
        *column = empty_f64();
        let rounded = match unary_mut(values, |x| round_significand(x, COMPUTED_KEEP_BITS)) {
            Ok(a) => a,
            Err(shared) => shared.unary(|x| round_significand(x, COMPUTED_KEEP_BITS)),
        };
        *column = std::sync::Arc::new(rounded);
    }
    RecordBatch::try_new(schema, columns).expect("same schema, same lengths")
}

fn empty_f64() -> ArrayRef {
    std::sync::Arc::new(arrow::array::Float64Array::from(Vec::<f64>::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-derived cases of round-to-nearest, ties-to-even at 23 kept bits: one unit of the
    /// last kept bit of 1.0 is 2⁻²³, half of it 2⁻²⁴.
    #[test]
    fn rounds_to_the_nearest_kept_bit_with_ties_to_even() {
        let u = 2f64.powi(-23);
        let k = COMPUTED_KEEP_BITS;
        assert_eq!(round_significand(1.0, k), 1.0);
        // Below half a unit: down; above: up.
        assert_eq!(round_significand(1.0 + 0.49 * u, k), 1.0);
        assert_eq!(round_significand(1.0 + 0.51 * u, k), 1.0 + u);
        // Exactly half: to the even neighbour (1.0 has an even last bit; 1 + u an odd one).
        assert_eq!(round_significand(1.0 + 0.5 * u, k), 1.0);
        assert_eq!(round_significand(1.0 + 1.5 * u, k), 1.0 + 2.0 * u);
        // A carry into the exponent: just below 2 rounds to 2.
        assert_eq!(round_significand(2.0 - 0.25 * u, k), 2.0);
        // The sign is kept.
        assert_eq!(round_significand(-(1.0 + 0.51 * u), k), -(1.0 + u));
        // As float32 rounds (its significand has 23 bits too).
        for x in [0.1, 297.603_123_456_789, 1e-30, 6.02e23, -0.333] {
            assert_eq!(round_significand(x, k), x as f32 as f64, "{x}");
        }
    }

    #[test]
    fn keeps_zero_subnormals_infinities_nan_and_the_largest_values() {
        let k = COMPUTED_KEEP_BITS;
        assert_eq!(round_significand(0.0, k).to_bits(), 0.0f64.to_bits());
        assert_eq!(round_significand(-0.0, k).to_bits(), (-0.0f64).to_bits());
        assert_eq!(round_significand(f64::INFINITY, k), f64::INFINITY);
        assert!(round_significand(f64::NAN, k).is_nan());
        assert_eq!(round_significand(f64::MAX, k), f64::MAX, "would overflow");
        // Subnormals keep every bit: rounded, 2.47e-317 would become 0.
        let tiny: f64 = 2.469_473_5e-317;
        assert!(tiny > 0.0 && !tiny.is_normal());
        assert_eq!(round_significand(tiny, k), tiny);
        assert_eq!(round_significand(f64::MIN_POSITIVE, k), f64::MIN_POSITIVE);
        assert_eq!(round_significand(1.234, 52), 1.234);
    }

    #[test]
    fn the_error_is_within_half_a_unit_the_low_bits_are_zero_and_rounding_twice_changes_nothing() {
        let k = COMPUTED_KEEP_BITS;
        let mut x = 0.731_f64;
        for _ in 0..10_000 {
            x = (x * 3.987 * (1.0 - x)).abs() + 1e-9; // a chaotic sequence over (0, 1]
            let v = x * 1e3 - 400.0;
            let r = round_significand(v, k);
            assert!((r - v).abs() <= v.abs() * 2f64.powi(-24), "{v} → {r}");
            assert_eq!(r.to_bits() & ((1 << (52 - k)) - 1), 0);
            assert_eq!(round_significand(r, k), r);
        }
    }

    #[test]
    fn measured_values_are_exact_computed_ones_rounded_except_in_small_tables() {
        let kind = |t: Table, name: &str| {
            let s = t.schema();
            column_kind(t, s.field_with_name(name).unwrap())
        };
        assert_eq!(
            kind(Table::Readings, "temperature_kelvin"),
            ColumnKind::Exact
        );
        assert_eq!(kind(Table::Readings, "raw_pressure"), ColumnKind::Exact);
        assert_eq!(
            kind(Table::Readings, "filtered_temperature_kelvin"),
            ColumnKind::Computed
        );
        assert_eq!(
            kind(Table::States, "raw_temperature_kelvin"),
            ColumnKind::Exact
        );
        assert_eq!(kind(Table::States, "C_ST"), ColumnKind::Computed);
        assert_eq!(kind(Table::States, "node_id"), ColumnKind::Label);
        assert_eq!(kind(Table::States, "timestamp"), ColumnKind::Counter);
        // The small tables keep every bit.
        assert_eq!(
            kind(Table::PhaseShifts, "target_shift_hours"),
            ColumnKind::Computed
        );
        assert!(!rounds_computed(Table::PhaseShifts));
    }
}
