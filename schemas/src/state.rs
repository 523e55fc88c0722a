//! A node's clock state after a reading: the API's `OscillatorState`, plus the node, the
//! reading's sequence number and the Kalman filter's view of the temperature.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The six state variables of the API, in µM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[allow(non_snake_case)]
pub struct StateVariables {
    /// Unphosphorylated KaiC.
    pub C_U: f64,
    /// S431-phosphorylated KaiC.
    pub C_S: f64,
    /// T432-phosphorylated KaiC.
    pub C_T: f64,
    /// Doubly phosphorylated KaiC.
    pub C_ST: f64,
    /// Free KaiA.
    pub A_free: f64,
    /// KaiA held in KaiABC complexes.
    pub CABC_complex: f64,
}

/// The state of one node's clock at the time of one of its readings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OscillatorState {
    /// The node.
    pub node_id: String,
    /// The reading's time (RFC 3339, UTC).
    #[serde(with = "crate::reading::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub timestamp: DateTime<Utc>,
    /// The reading's sequence number, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Circadian time, 0–24 h (CT 12 at the phosphorylation peak).
    pub circadian_time: f64,
    /// Fraction of the cycle, 0–1 (`circadian_time / 24`).
    pub phase: f64,
    /// Current period estimate, h: the Lomb–Scargle period of the node's KOA over the last
    /// rhythm window once one has closed, before that the clock's peak-to-peak period.
    pub period_hours: f64,
    /// The six state variables, µM.
    pub state_variables: StateVariables,
    /// KaiC output activity, 0–1.
    pub koa_metric: f64,
    /// PWM duty for the node's output, 0–255.
    pub output_pwm: i32,
    /// Whether a manual override holds the output (`output_pwm` is then the override's duty).
    #[serde(default)]
    pub manual_override: bool,
    /// Whether the clock was driven by fresh readings up to this one (false after a gap longer
    /// than the configured maximum, across which it ran free at the last temperature).
    pub entrainment_active: bool,
    /// The (Kalman-filtered) temperature the clock ran at, K.
    pub temperature_kelvin: f64,
    /// The reading's measured temperature, K.
    pub raw_temperature_kelvin: f64,
    /// Variance of the filtered temperature, K².
    pub kalman_variance: f64,
}
