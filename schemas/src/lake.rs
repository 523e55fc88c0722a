//! The Arrow schemas of the Parquet lake's tables: the column names and types users' SQL
//! depends on. Tables are Hive-partitioned by `date=YYYY-MM-DD` (the `date` column comes from
//! the directory name, not from the files).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::reading::SensorReading;
use crate::{AlertRow, DeadLetter, FleetSnapshot, OscillatorState, PhaseShiftReport, RhythmWindow};

/// Any lake row, for streams that carry several tables.
#[derive(Clone, Debug, PartialEq)]
pub enum LakeRow {
    /// A `readings` row.
    Reading(ReadingRow),
    /// A `states` row.
    State(OscillatorState),
    /// A `rhythms` row.
    Rhythm(RhythmWindow),
    /// A `dead_letters` row.
    DeadLetter(DeadLetter),
    /// A `phase_shifts` row.
    PhaseShift(PhaseShiftReport),
    /// A `fleet` row: a group's view at the top of an hour.
    Fleet(Box<FleetSnapshot>),
    /// An `alerts` row: an alert raised or cleared.
    Alert(Box<AlertRow>),
    /// Not a table row: a barrier in one worker's row stream carrying the checkpoints of the
    /// nodes that changed since the previous one. The lake sink commits every row before it,
    /// then saves the checkpoints, so saved node state always matches committed rows.
    Checkpoint(Checkpoint),
}

/// The per-node checkpoints of a [`LakeRow::Checkpoint`] barrier.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// The nodes that changed since the previous barrier.
    pub nodes: Vec<NodeCheckpointEntry>,
    /// The checkpoint request this barrier answers (0 for barriers on the operator's own
    /// timer): a source that asked for checkpoint `n` knows, once every worker's sink has
    /// saved a barrier with `epoch >= n`, that everything it sent before asking is durable.
    pub epoch: u64,
}

/// One node's checkpoint: its processing state (opaque bytes owned by the operators crate) and
/// its latest oscillator state (served by the API right after a restart).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCheckpointEntry {
    /// The node.
    pub node_id: String,
    /// The encoded per-node state.
    pub state: Vec<u8>,
    /// The state after the node's last applied reading.
    pub latest: Option<OscillatorState>,
}

/// A row of `readings`: an accepted reading and what the node's Kalman filter made of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadingRow {
    /// The reading.
    #[serde(flatten)]
    pub reading: SensorReading,
    /// The filtered temperature after this reading, K; `None` for a late reading, which is
    /// kept but applied neither to the filter nor to the clock.
    pub filtered_temperature_kelvin: Option<f64>,
    /// Its variance, K².
    pub kalman_variance: Option<f64>,
    /// The filtered relative humidity after this reading, % (`None` while the filter has no
    /// humidity, and for a late reading).
    #[serde(default)]
    pub filtered_humidity_percent: Option<f64>,
    /// The filtered pressure after this reading, Pa (as for humidity).
    #[serde(default)]
    pub filtered_pressure_pa: Option<f64>,
    /// Whether it arrived after a newer reading of its node had been applied.
    pub late: bool,
    /// The node's whole Kalman filter after this reading, for the live API (`/filter/state`);
    /// filled only when the node is configured to (`NodeConfig::filter_snapshots`), never in
    /// the lake.
    #[serde(skip)]
    pub filter: Option<Box<FilterSnapshot>>,
}

/// A node's three-variable Kalman filter after a reading: estimate (K, %, Pa), covariance
/// (row-major, filter units K, %, hPa), the reading's innovation, and the readings taken.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterSnapshot {
    /// Temperature (K), humidity (%), pressure (Pa); `None` until the variable is seen.
    pub estimate: [Option<f64>; 3],
    /// The posterior covariance, K, %, hPa.
    pub covariance: [[f64; 3]; 3],
    /// Measured minus predicted of the last reading, per variable (K, %, Pa).
    pub innovation: [Option<f64>; 3],
    /// Readings the filter took.
    pub measurement_count: u64,
}

/// The lake's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Every accepted reading, with its filtered temperature.
    Readings,
    /// The clock state after every applied reading.
    States,
    /// Hourly rhythm windows per node and metric.
    Rhythms,
    /// Rejected events with their reasons.
    DeadLetters,
    /// Planned phase shifts and the shift each achieved.
    PhaseShifts,
    /// Each group's view (fleet, location, hardware type) at the top of every hour.
    Fleet,
    /// Every alert raised and cleared.
    Alerts,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] = [
        Table::Readings,
        Table::States,
        Table::Rhythms,
        Table::DeadLetters,
        Table::PhaseShifts,
        Table::Fleet,
        Table::Alerts,
    ];

    /// The table's name: its directory under the lake root and its SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Readings => "readings",
            Table::States => "states",
            Table::Rhythms => "rhythms",
            Table::DeadLetters => "dead_letters",
            Table::PhaseShifts => "phase_shifts",
            Table::Fleet => "fleet",
            Table::Alerts => "alerts",
        }
    }

    /// The column that decides the `date=` partition and, after `node_id`, the sort order
    /// inside a file (`dead_letters` are sorted by `received_at`, then `source`).
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Readings | Table::States => "timestamp",
            Table::Rhythms => "window_end",
            Table::DeadLetters => "received_at",
            Table::PhaseShifts => "completed_at",
            Table::Fleet => "snapshot_at",
            Table::Alerts => "at",
        }
    }

    /// The table's Arrow schema (without the `date` partition column).
    pub fn schema(self) -> SchemaRef {
        Arc::new(match self {
            Table::Readings => readings(),
            Table::States => states(),
            Table::Rhythms => rhythms(),
            Table::DeadLetters => dead_letters(),
            Table::PhaseShifts => phase_shifts(),
            Table::Fleet => fleet(),
            Table::Alerts => alerts(),
        })
    }

    /// The table whose name is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// `Timestamp(Microsecond, "UTC")`: read back as TIMESTAMP WITH TIME ZONE by DuckDB and as a
/// UTC instant by every other engine.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn f64_col(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}

fn readings() -> Schema {
    Schema::new(vec![
        Field::new("node_id", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, true),
        Field::new("timestamp", timestamp_type(), false),
        f64_col("temperature_kelvin", false),
        f64_col("humidity_percent", true),
        f64_col("pressure_pa", true),
        f64_col("light_lux", true),
        Field::new("sensor_type", DataType::Utf8, false),
        Field::new("quality", DataType::Utf8, false),
        // Null for a late reading, which is kept but not applied to the filter or the clock.
        f64_col("filtered_temperature_kelvin", true),
        f64_col("kalman_variance", true),
        Field::new("late", DataType::Boolean, false),
        f64_col("raw_temperature", true),
        f64_col("raw_humidity", true),
        f64_col("raw_pressure", true),
        // Added later: files written before lack them, and readers given the table's schema
        // (DataFusion here, DuckDB with union_by_name, pyarrow datasets) see nulls.
        f64_col("filtered_humidity_percent", true),
        f64_col("filtered_pressure_pa", true),
    ])
}

fn states() -> Schema {
    Schema::new(vec![
        Field::new("node_id", DataType::Utf8, false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("seq", DataType::Int64, true),
        f64_col("circadian_time", false),
        f64_col("phase", false),
        f64_col("period_hours", false),
        f64_col("C_U", false),
        f64_col("C_S", false),
        f64_col("C_T", false),
        f64_col("C_ST", false),
        f64_col("A_free", false),
        f64_col("CABC_complex", false),
        f64_col("koa_metric", false),
        Field::new("output_pwm", DataType::Int32, false),
        Field::new("entrainment_active", DataType::Boolean, false),
        f64_col("temperature_kelvin", false),
        f64_col("raw_temperature_kelvin", false),
        f64_col("kalman_variance", false),
    ])
}

fn rhythms() -> Schema {
    Schema::new(vec![
        Field::new("node_id", DataType::Utf8, false),
        Field::new("window_start", timestamp_type(), false),
        Field::new("window_end", timestamp_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("n_samples", DataType::Int32, false),
        f64_col("period_hours", true),
        f64_col("power", true),
        f64_col("false_alarm_probability", true),
        f64_col("mesor", true),
        f64_col("amplitude", true),
        f64_col("acrophase_rad", true),
        f64_col("p_value", true),
    ])
}

fn dead_letters() -> Schema {
    Schema::new(vec![
        Field::new("received_at", timestamp_type(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
        Field::new("node_id", DataType::Utf8, true),
    ])
}

fn fleet() -> Schema {
    let mut fields = vec![
        Field::new("snapshot_at", timestamp_type(), false),
        Field::new("group_by", DataType::Utf8, false),
        Field::new("group", DataType::Utf8, false),
    ];
    for c in [
        "nodes",
        "online",
        "stale",
        "offline",
        "failing",
        "raspberry_pi_pico",
        "elm11",
        "unknown_hardware",
        "clocks",
    ] {
        fields.push(Field::new(c, DataType::Int64, false));
    }
    for c in [
        "order_parameter",
        "mean_phase",
        "spread_ct_hours",
        "period_mean_hours",
        "period_min_hours",
        "period_median_hours",
        "period_max_hours",
        "koa_mean",
        "koa_min",
        "koa_max",
        "temperature_mean_kelvin",
        "temperature_min_kelvin",
        "temperature_max_kelvin",
    ] {
        fields.push(f64_col(c, true));
    }
    fields.push(Field::new("outliers", DataType::Int64, false));
    Schema::new(fields)
}

fn alerts() -> Schema {
    Schema::new(vec![
        Field::new("at", timestamp_type(), false),
        Field::new("state", DataType::Utf8, false),
        Field::new("code", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("node_id", DataType::Utf8, true),
        Field::new("group_by", DataType::Utf8, true),
        Field::new("group", DataType::Utf8, true),
        Field::new("raised_at", timestamp_type(), false),
        Field::new("last_seen", timestamp_type(), true),
        Field::new("message", DataType::Utf8, false),
    ])
}

fn phase_shifts() -> Schema {
    Schema::new(vec![
        Field::new("node_id", DataType::Utf8, false),
        Field::new("shift_id", DataType::Utf8, false),
        Field::new("completed_at", timestamp_type(), false),
        Field::new("step_start", timestamp_type(), false),
        Field::new("step_end", timestamp_type(), false),
        f64_col("delta_k", false),
        f64_col("target_shift_hours", false),
        f64_col("predicted_shift_hours", false),
        f64_col("achieved_shift_hours", true),
        Field::new("outcome", DataType::Utf8, false),
        f64_col("settling_time_hours", true),
        f64_col("kaia_factor", true),
    ])
}

/// A plain-text rendering of every table's columns (`name type [nullable]`), checked in as
/// `schemas/lake-tables.txt` so a change to the SQL interface shows up in review.
pub fn describe() -> String {
    let mut out = String::from(
        "# The Parquet lake's tables (generated by `cargo test -p kaiabc-schemas`; do not edit).\n\
         # Every table is Hive-partitioned by date=YYYY-MM-DD; timestamps are UTC microseconds.\n",
    );
    for t in Table::ALL {
        out.push_str(&format!("\n[{}]\n", t.name()));
        for f in t.schema().fields() {
            let ty = match f.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => {
                    format!("Timestamp(Microsecond, {tz:?})")
                }
                other => format!("{other}"),
            };
            let null = if f.is_nullable() { " nullable" } else { "" };
            out.push_str(&format!("{} {}{}\n", f.name(), ty, null));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_unsigned_columns_and_utc_microsecond_timestamps() {
        for t in Table::ALL {
            for f in t.schema().fields() {
                assert!(
                    !f.data_type().is_unsigned_integer(),
                    "{}.{}",
                    t.name(),
                    f.name()
                );
                if let DataType::Timestamp(unit, tz) = f.data_type() {
                    assert_eq!(*unit, TimeUnit::Microsecond);
                    assert_eq!(tz.as_deref(), Some("UTC"));
                }
            }
            assert!(t.schema().field_with_name(t.time_column()).is_ok());
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn the_issue_s_columns_are_present() {
        // The column lists promised to SQL users (issue 3).
        let want = [
            (Table::Readings, "node_id seq timestamp temperature_kelvin humidity_percent pressure_pa light_lux sensor_type quality filtered_temperature_kelvin kalman_variance"),
            (Table::States, "node_id timestamp circadian_time phase period_hours C_U C_S C_T C_ST A_free CABC_complex koa_metric output_pwm temperature_kelvin"),
            (Table::Rhythms, "node_id window_end metric period_hours power false_alarm_probability mesor amplitude acrophase_rad p_value"),
            (Table::DeadLetters, "received_at source reason message payload"),
        ];
        for (t, cols) in want {
            for c in cols.split_whitespace() {
                assert!(t.schema().field_with_name(c).is_ok(), "{}.{c}", t.name());
            }
        }
    }
}
