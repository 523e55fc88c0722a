//! Rows of the lake's fleet tables: `fleet`, each group's view at the top of every hour of
//! event time, and `alerts`, every alert raised and cleared. Also the records of the
//! `kaiabc.fleet` and `kaiabc.alerts` Kafka topics.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One group's view at an hour (a `fleet` row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetSnapshot {
    /// The hour of event time the view stands at (every change before it applied).
    #[serde(with = "crate::reading::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub snapshot_at: DateTime<Utc>,
    /// `fleet`, `location` or `hardware_type`.
    pub group_by: String,
    /// The group (`all` for the fleet).
    pub group: String,
    /// Nodes in the group.
    pub nodes: i64,
    /// Nodes with a reading within the stale threshold.
    pub online: i64,
    /// Nodes late but not yet offline.
    pub stale: i64,
    /// Nodes offline (or registered and never heard from).
    pub offline: i64,
    /// Nodes whose latest reading failed to process.
    pub failing: i64,
    /// Raspberry Pi Pico nodes.
    pub raspberry_pi_pico: i64,
    /// ELM11 nodes.
    pub elm11: i64,
    /// Nodes of an unknown board.
    pub unknown_hardware: i64,
    /// Live clocks (with a state, not offline): what synchrony and the statistics are over.
    pub clocks: i64,
    /// Kuramoto order parameter R of the live clocks, 0–1.
    pub order_parameter: Option<f64>,
    /// Their circular mean phase, 0–1.
    pub mean_phase: Option<f64>,
    /// Their circular spread of circadian time, h.
    pub spread_ct_hours: Option<f64>,
    /// Mean of their period estimates, h.
    pub period_mean_hours: Option<f64>,
    /// Smallest, h.
    pub period_min_hours: Option<f64>,
    /// Median, h.
    pub period_median_hours: Option<f64>,
    /// Largest, h.
    pub period_max_hours: Option<f64>,
    /// Mean KOA.
    pub koa_mean: Option<f64>,
    /// Smallest KOA.
    pub koa_min: Option<f64>,
    /// Largest KOA.
    pub koa_max: Option<f64>,
    /// Mean filtered temperature, K.
    pub temperature_mean_kelvin: Option<f64>,
    /// Lowest, K.
    pub temperature_min_kelvin: Option<f64>,
    /// Highest, K.
    pub temperature_max_kelvin: Option<f64>,
    /// Nodes whose window period is outside the group's band.
    pub outliers: i64,
}

/// An alert raised or cleared (an `alerts` row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlertRow {
    /// When it was raised or cleared (event time).
    #[serde(with = "crate::reading::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub at: DateTime<Utc>,
    /// `raised` or `cleared`.
    pub state: String,
    /// `NODE_OFFLINE`, `ODE_INSTABILITY`, `FILTER_DIVERGENCE`, `DEAD_LETTER_RATE`,
    /// `PERIOD_DRIFT` or `DESYNCHRONIZED`.
    pub code: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    /// The node it is about.
    pub node_id: Option<String>,
    /// The grouping of the group it is about.
    pub group_by: Option<String>,
    /// The group it is about.
    pub group: Option<String>,
    /// When it was raised (for a clear, how long it lasted).
    #[serde(with = "crate::reading::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub raised_at: DateTime<Utc>,
    /// For `NODE_OFFLINE`: the node's last reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// What happened, in words.
    pub message: String,
}
