//! How each kind of row is buffered column by column as Arrow arrays of its table, and how it is
//! ordered.

use std::sync::Arc;

use arrow::array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, Utc};
pub use kaiabc_schemas::LakeRow;
use kaiabc_schemas::{
    AlertRow, DeadLetter, FleetSnapshot, OscillatorState, PhaseShiftReport, ReadingRow,
    RhythmWindow, Table,
};

/// A row of one of the lake's tables.
pub trait LakeRecord: Sized {
    /// Its table.
    const TABLE: Table;
    /// The table's columns being built; rows are appended as they come and sorted when the
    /// file is written, so a buffered row costs its values, not a struct with heap strings.
    type Columns: Columns<Self>;
    /// Its sort key inside a file: (node_id, time, tie-break). Dead letters sort by
    /// (received_at, source) and use an empty first part.
    fn sort_key(&self) -> (&str, i64, &str);
    /// The time that decides its `date=` partition, µs since the Unix epoch.
    fn time_micros(&self) -> i64;
}

/// A table's columns under construction.
pub trait Columns<R>: Default {
    /// Empty columns with room for `rows` rows, so a large file's buffers are not regrown
    /// (and copied) a dozen times.
    fn with_capacity(rows: usize) -> Self;
    /// Appends one row.
    fn push(&mut self, row: &R);
    /// The batch of every row appended so far, in append order; the builders start empty again.
    fn finish(&mut self) -> Result<RecordBatch, ArrowError>;
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

fn utc_micros(rows: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")
}

fn strings(rows: usize) -> StringBuilder {
    // Node ids and enum names are short; longer text (dead letters) grows as needed.
    StringBuilder::with_capacity(rows, rows * 8)
}

fn floats(rows: usize) -> Float64Builder {
    Float64Builder::with_capacity(rows)
}

fn ints64(rows: usize) -> Int64Builder {
    Int64Builder::with_capacity(rows)
}

fn ints32(rows: usize) -> Int32Builder {
    Int32Builder::with_capacity(rows)
}

fn bools(rows: usize) -> BooleanBuilder {
    BooleanBuilder::with_capacity(rows)
}

/// Declares a table's column builders, in the table schema's order: each column names its
/// builder, the function that makes it with a capacity, and how a row's value is appended.
macro_rules! columns {
    ($name:ident for $row:ty, $table:expr, {
        $($col:ident: $builder:ty = $init:ident => |$r:ident| $append:ident($value:expr),)+
    }) => {
        #[doc = concat!("Column builders of `", stringify!($row), "` rows.")]
        pub struct $name {
            $($col: $builder,)+
        }

        impl Default for $name {
            fn default() -> Self {
                Self::with_capacity(0)
            }
        }

        impl Columns<$row> for $name {
            fn with_capacity(rows: usize) -> Self {
                Self { $($col: $init(rows),)+ }
            }

            fn push(&mut self, row: &$row) {
                $(
                    let $r = row;
                    self.$col.$append($value);
                )+
            }

            fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
                RecordBatch::try_new(
                    $table.schema(),
                    vec![$(Arc::new(self.$col.finish()) as ArrayRef,)+],
                )
            }
        }
    };
}

columns!(ReadingColumns for ReadingRow, Table::Readings, {
    node_id: StringBuilder = strings => |x| append_value(&x.reading.node_id),
    seq: Int64Builder = ints64 => |x| append_option(x.reading.seq),
    timestamp: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.reading.timestamp)),
    temperature_kelvin: Float64Builder = floats
        => |x| append_value(x.reading.temperature_kelvin),
    humidity_percent: Float64Builder = floats
        => |x| append_option(x.reading.humidity_percent),
    pressure_pa: Float64Builder = floats
        => |x| append_option(x.reading.pressure_pa),
    light_lux: Float64Builder = floats => |x| append_option(x.reading.light_lux),
    sensor_type: StringBuilder = strings
        => |x| append_value(&x.reading.sensor_type),
    quality: StringBuilder = strings => |x| append_value(x.reading.quality.as_str()),
    filtered_temperature_kelvin: Float64Builder = floats
        => |x| append_option(x.filtered_temperature_kelvin),
    kalman_variance: Float64Builder = floats
        => |x| append_option(x.kalman_variance),
    late: BooleanBuilder = bools => |x| append_value(x.late),
    raw_temperature: Float64Builder = floats
        => |x| append_option(x.reading.raw_values.as_ref().and_then(|v| v.temperature)),
    raw_humidity: Float64Builder = floats
        => |x| append_option(x.reading.raw_values.as_ref().and_then(|v| v.humidity)),
    raw_pressure: Float64Builder = floats
        => |x| append_option(x.reading.raw_values.as_ref().and_then(|v| v.pressure)),
    filtered_humidity_percent: Float64Builder = floats
        => |x| append_option(x.filtered_humidity_percent),
    filtered_pressure_pa: Float64Builder = floats
        => |x| append_option(x.filtered_pressure_pa),
});

impl LakeRecord for ReadingRow {
    const TABLE: Table = Table::Readings;
    type Columns = ReadingColumns;

    fn sort_key(&self) -> (&str, i64, &str) {
        (&self.reading.node_id, micros(&self.reading.timestamp), "")
    }

    fn time_micros(&self) -> i64 {
        micros(&self.reading.timestamp)
    }
}

columns!(StateColumns for OscillatorState, Table::States, {
    node_id: StringBuilder = strings => |x| append_value(&x.node_id),
    timestamp: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.timestamp)),
    seq: Int64Builder = ints64 => |x| append_option(x.seq),
    circadian_time: Float64Builder = floats => |x| append_value(x.circadian_time),
    phase: Float64Builder = floats => |x| append_value(x.phase),
    period_hours: Float64Builder = floats => |x| append_value(x.period_hours),
    c_u: Float64Builder = floats => |x| append_value(x.state_variables.C_U),
    c_s: Float64Builder = floats => |x| append_value(x.state_variables.C_S),
    c_t: Float64Builder = floats => |x| append_value(x.state_variables.C_T),
    c_st: Float64Builder = floats => |x| append_value(x.state_variables.C_ST),
    a_free: Float64Builder = floats => |x| append_value(x.state_variables.A_free),
    cabc_complex: Float64Builder = floats
        => |x| append_value(x.state_variables.CABC_complex),
    koa_metric: Float64Builder = floats => |x| append_value(x.koa_metric),
    output_pwm: Int32Builder = ints32 => |x| append_value(x.output_pwm),
    entrainment_active: BooleanBuilder = bools
        => |x| append_value(x.entrainment_active),
    temperature_kelvin: Float64Builder = floats
        => |x| append_value(x.temperature_kelvin),
    raw_temperature_kelvin: Float64Builder = floats
        => |x| append_value(x.raw_temperature_kelvin),
    kalman_variance: Float64Builder = floats => |x| append_value(x.kalman_variance),
});

impl LakeRecord for OscillatorState {
    const TABLE: Table = Table::States;
    type Columns = StateColumns;

    fn sort_key(&self) -> (&str, i64, &str) {
        (&self.node_id, micros(&self.timestamp), "")
    }

    fn time_micros(&self) -> i64 {
        micros(&self.timestamp)
    }
}

columns!(RhythmColumns for RhythmWindow, Table::Rhythms, {
    node_id: StringBuilder = strings => |x| append_value(&x.node_id),
    window_start: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.window_start)),
    window_end: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.window_end)),
    metric: StringBuilder = strings => |x| append_value(x.metric.as_str()),
    n_samples: Int32Builder = ints32 => |x| append_value(x.n_samples),
    period_hours: Float64Builder = floats => |x| append_option(x.period_hours),
    power: Float64Builder = floats => |x| append_option(x.power),
    false_alarm_probability: Float64Builder = floats
        => |x| append_option(x.false_alarm_probability),
    mesor: Float64Builder = floats => |x| append_option(x.mesor),
    amplitude: Float64Builder = floats => |x| append_option(x.amplitude),
    acrophase_rad: Float64Builder = floats => |x| append_option(x.acrophase_rad),
    p_value: Float64Builder = floats => |x| append_option(x.p_value),
});

impl LakeRecord for RhythmWindow {
    const TABLE: Table = Table::Rhythms;
    type Columns = RhythmColumns;

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
}

columns!(DeadLetterColumns for DeadLetter, Table::DeadLetters, {
    received_at: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.received_at)),
    source: StringBuilder = strings => |x| append_value(&x.source),
    reason: StringBuilder = strings => |x| append_value(x.reason.code()),
    message: StringBuilder = strings => |x| append_value(&x.message),
    payload: StringBuilder = strings => |x| append_value(&x.payload),
    node_id: StringBuilder = strings => |x| append_option(x.node_id.as_deref()),
});

impl LakeRecord for DeadLetter {
    const TABLE: Table = Table::DeadLetters;
    type Columns = DeadLetterColumns;

    fn sort_key(&self) -> (&str, i64, &str) {
        ("", micros(&self.received_at), &self.source)
    }

    fn time_micros(&self) -> i64 {
        micros(&self.received_at)
    }
}

columns!(PhaseShiftColumns for PhaseShiftReport, Table::PhaseShifts, {
    node_id: StringBuilder = strings => |x| append_value(&x.node_id),
    shift_id: StringBuilder = strings => |x| append_value(&x.shift_id),
    completed_at: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.completed_at)),
    step_start: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.step_start)),
    step_end: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.step_end)),
    delta_k: Float64Builder = floats => |x| append_value(x.delta_k),
    target_shift_hours: Float64Builder = floats => |x| append_value(x.target_shift_hours),
    predicted_shift_hours: Float64Builder = floats
        => |x| append_value(x.predicted_shift_hours),
    achieved_shift_hours: Float64Builder = floats
        => |x| append_option(x.achieved_shift_hours),
    outcome: StringBuilder = strings => |x| append_value(x.outcome.as_str()),
    settling_time_hours: Float64Builder = floats
        => |x| append_option(x.settling_time_hours),
    kaia_factor: Float64Builder = floats => |x| append_value(x.kaia_factor),
});

impl LakeRecord for PhaseShiftReport {
    const TABLE: Table = Table::PhaseShifts;
    type Columns = PhaseShiftColumns;

    fn sort_key(&self) -> (&str, i64, &str) {
        (&self.node_id, micros(&self.completed_at), &self.shift_id)
    }

    fn time_micros(&self) -> i64 {
        micros(&self.completed_at)
    }
}

columns!(FleetColumns for FleetSnapshot, Table::Fleet, {
    snapshot_at: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.snapshot_at)),
    group_by: StringBuilder = strings => |x| append_value(&x.group_by),
    group: StringBuilder = strings => |x| append_value(&x.group),
    nodes: Int64Builder = ints64 => |x| append_value(x.nodes),
    online: Int64Builder = ints64 => |x| append_value(x.online),
    stale: Int64Builder = ints64 => |x| append_value(x.stale),
    offline: Int64Builder = ints64 => |x| append_value(x.offline),
    failing: Int64Builder = ints64 => |x| append_value(x.failing),
    raspberry_pi_pico: Int64Builder = ints64 => |x| append_value(x.raspberry_pi_pico),
    elm11: Int64Builder = ints64 => |x| append_value(x.elm11),
    unknown_hardware: Int64Builder = ints64 => |x| append_value(x.unknown_hardware),
    clocks: Int64Builder = ints64 => |x| append_value(x.clocks),
    order_parameter: Float64Builder = floats => |x| append_option(x.order_parameter),
    mean_phase: Float64Builder = floats => |x| append_option(x.mean_phase),
    spread_ct_hours: Float64Builder = floats => |x| append_option(x.spread_ct_hours),
    period_mean_hours: Float64Builder = floats => |x| append_option(x.period_mean_hours),
    period_min_hours: Float64Builder = floats => |x| append_option(x.period_min_hours),
    period_median_hours: Float64Builder = floats => |x| append_option(x.period_median_hours),
    period_max_hours: Float64Builder = floats => |x| append_option(x.period_max_hours),
    koa_mean: Float64Builder = floats => |x| append_option(x.koa_mean),
    koa_min: Float64Builder = floats => |x| append_option(x.koa_min),
    koa_max: Float64Builder = floats => |x| append_option(x.koa_max),
    temperature_mean_kelvin: Float64Builder = floats
        => |x| append_option(x.temperature_mean_kelvin),
    temperature_min_kelvin: Float64Builder = floats
        => |x| append_option(x.temperature_min_kelvin),
    temperature_max_kelvin: Float64Builder = floats
        => |x| append_option(x.temperature_max_kelvin),
    outliers: Int64Builder = ints64 => |x| append_value(x.outliers),
});

impl LakeRecord for FleetSnapshot {
    const TABLE: Table = Table::Fleet;
    type Columns = FleetColumns;

    fn sort_key(&self) -> (&str, i64, &str) {
        (&self.group_by, micros(&self.snapshot_at), &self.group)
    }

    fn time_micros(&self) -> i64 {
        micros(&self.snapshot_at)
    }
}

columns!(AlertColumns for AlertRow, Table::Alerts, {
    at: TimestampMicrosecondBuilder = utc_micros => |x| append_value(micros(&x.at)),
    state: StringBuilder = strings => |x| append_value(&x.state),
    code: StringBuilder = strings => |x| append_value(&x.code),
    severity: StringBuilder = strings => |x| append_value(&x.severity),
    node_id: StringBuilder = strings => |x| append_option(x.node_id.as_deref()),
    group_by: StringBuilder = strings => |x| append_option(x.group_by.as_deref()),
    group: StringBuilder = strings => |x| append_option(x.group.as_deref()),
    raised_at: TimestampMicrosecondBuilder = utc_micros
        => |x| append_value(micros(&x.raised_at)),
    last_seen: TimestampMicrosecondBuilder = utc_micros
        => |x| append_option(x.last_seen.as_ref().map(micros)),
    message: StringBuilder = strings => |x| append_value(&x.message),
});

impl LakeRecord for AlertRow {
    const TABLE: Table = Table::Alerts;
    type Columns = AlertColumns;

    fn sort_key(&self) -> (&str, i64, &str) {
        ("", micros(&self.at), &self.code)
    }

    fn time_micros(&self) -> i64 {
        micros(&self.at)
    }
}
