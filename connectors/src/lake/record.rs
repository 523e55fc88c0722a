//! How each kind of row becomes an Arrow record batch of its table, and how it is ordered.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, Utc};
pub use kaiabc_schemas::LakeRow;
use kaiabc_schemas::{DeadLetter, OscillatorState, ReadingRow, RhythmWindow, Table};

/// A row of one of the lake's tables.
pub trait LakeRecord: Sized {
    /// Its table.
    const TABLE: Table;
    /// Its sort key inside a file: (node_id, time, tie-break). Dead letters sort by
    /// (received_at, source) and use an empty first part.
    fn sort_key(&self) -> (&str, i64, &str);
    /// The time that decides its `date=` partition, µs since the Unix epoch.
    fn time_micros(&self) -> i64;
    /// Builds the table's record batch (rows in the given order).
    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError>;
}

/// µs since the Unix epoch.
pub fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The UTC date of a time in µs.
pub fn date_of(micros: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

fn ts(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn f64s(values: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

fn opt_f64s(values: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(values))
}

fn strs<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

impl LakeRecord for ReadingRow {
    const TABLE: Table = Table::Readings;

    fn sort_key(&self) -> (&str, i64, &str) {
        (&self.reading.node_id, micros(&self.reading.timestamp), "")
    }

    fn time_micros(&self) -> i64 {
        micros(&self.reading.timestamp)
    }

    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        let r = |f: fn(&ReadingRow) -> Option<f64>| opt_f64s(rows.iter().copied().map(f));
        let raw = |f: fn(&kaiabc_schemas::RawValues) -> Option<f64>| {
            opt_f64s(
                rows.iter()
                    .map(|x| x.reading.raw_values.as_ref().and_then(f)),
            )
        };
        RecordBatch::try_new(
            Table::Readings.schema(),
            vec![
                strs(rows.iter().copied().map(|x| x.reading.node_id.as_str())),
                Arc::new(Int64Array::from_iter(
                    rows.iter().copied().map(|x| x.reading.seq),
                )),
                ts(rows
                    .iter()
                    .copied()
                    .map(|x| micros(&x.reading.timestamp))
                    .collect()),
                f64s(rows.iter().copied().map(|x| x.reading.temperature_kelvin)),
                r(|x| x.reading.humidity_percent),
                r(|x| x.reading.pressure_pa),
                r(|x| x.reading.light_lux),
                strs(rows.iter().copied().map(|x| x.reading.sensor_type.as_str())),
                strs(rows.iter().copied().map(|x| x.reading.quality.as_str())),
                r(|x| x.filtered_temperature_kelvin),
                r(|x| x.kalman_variance),
                Arc::new(BooleanArray::from_iter(
                    rows.iter().copied().map(|x| Some(x.late)),
                )),
                raw(|v| v.temperature),
                raw(|v| v.humidity),
                raw(|v| v.pressure),
            ],
        )
    }
}

impl LakeRecord for OscillatorState {
    const TABLE: Table = Table::States;

    fn sort_key(&self) -> (&str, i64, &str) {
        (&self.node_id, micros(&self.timestamp), "")
    }

    fn time_micros(&self) -> i64 {
        micros(&self.timestamp)
    }

    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        let f = |g: fn(&OscillatorState) -> f64| f64s(rows.iter().copied().map(g));
        RecordBatch::try_new(
            Table::States.schema(),
            vec![
                strs(rows.iter().copied().map(|x| x.node_id.as_str())),
                ts(rows.iter().copied().map(|x| micros(&x.timestamp)).collect()),
                Arc::new(Int64Array::from_iter(rows.iter().copied().map(|x| x.seq))),
                f(|x| x.circadian_time),
                f(|x| x.phase),
                f(|x| x.period_hours),
                f(|x| x.state_variables.C_U),
                f(|x| x.state_variables.C_S),
                f(|x| x.state_variables.C_T),
                f(|x| x.state_variables.C_ST),
                f(|x| x.state_variables.A_free),
                f(|x| x.state_variables.CABC_complex),
                f(|x| x.koa_metric),
                Arc::new(Int32Array::from_iter_values(
                    rows.iter().copied().map(|x| x.output_pwm),
                )),
                Arc::new(BooleanArray::from_iter(
                    rows.iter().copied().map(|x| Some(x.entrainment_active)),
                )),
                f(|x| x.temperature_kelvin),
                f(|x| x.raw_temperature_kelvin),
                f(|x| x.kalman_variance),
            ],
        )
    }
}

impl LakeRecord for RhythmWindow {
    const TABLE: Table = Table::Rhythms;

    fn sort_key(&self) -> (&str, i64, &str) {
        (
            &self.node_id,
            micros(&self.window_end),
            self.metric.as_str(),
        )
    }

    fn time_micros(&self) -> i64 {
        micros(&self.window_end)
    }

    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        let o = |g: fn(&RhythmWindow) -> Option<f64>| opt_f64s(rows.iter().copied().map(g));
        RecordBatch::try_new(
            Table::Rhythms.schema(),
            vec![
                strs(rows.iter().copied().map(|x| x.node_id.as_str())),
                ts(rows
                    .iter()
                    .copied()
                    .map(|x| micros(&x.window_start))
                    .collect()),
                ts(rows
                    .iter()
                    .copied()
                    .map(|x| micros(&x.window_end))
                    .collect()),
                strs(rows.iter().copied().map(|x| x.metric.as_str())),
                Arc::new(Int32Array::from_iter_values(
                    rows.iter().copied().map(|x| x.n_samples),
                )),
                o(|x| x.period_hours),
                o(|x| x.power),
                o(|x| x.false_alarm_probability),
                o(|x| x.mesor),
                o(|x| x.amplitude),
                o(|x| x.acrophase_rad),
                o(|x| x.p_value),
            ],
        )
    }
}

impl LakeRecord for DeadLetter {
    const TABLE: Table = Table::DeadLetters;

    fn sort_key(&self) -> (&str, i64, &str) {
        ("", micros(&self.received_at), &self.source)
    }

    fn time_micros(&self) -> i64 {
        micros(&self.received_at)
    }

    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Table::DeadLetters.schema(),
            vec![
                ts(rows
                    .iter()
                    .copied()
                    .map(|x| micros(&x.received_at))
                    .collect()),
                strs(rows.iter().copied().map(|x| x.source.as_str())),
                strs(rows.iter().copied().map(|x| x.reason.code())),
                strs(rows.iter().copied().map(|x| x.message.as_str())),
                strs(rows.iter().copied().map(|x| x.payload.as_str())),
                Arc::new(StringArray::from_iter(
                    rows.iter().copied().map(|x| x.node_id.as_deref()),
                )),
            ],
        )
    }
}
