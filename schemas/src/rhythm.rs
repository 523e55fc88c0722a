//! A rhythm window: the periodogram and 24 h cosinor of one node's series over the last days.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which series a window analyses.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The clock's KOA output.
    Koa,
    /// The filtered temperature the clock ran at.
    TemperatureKelvin,
}

impl Metric {
    /// The name used in JSON and in `rhythms.metric`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Koa => "koa",
            Metric::TemperatureKelvin => "temperature_kelvin",
        }
    }
}

/// One window of one metric of one node. Statistics are absent when the window held too few
/// samples (or no variance) to compute them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RhythmWindow {
    /// The node.
    pub node_id: String,
    /// Start of the window (inclusive), RFC 3339 UTC.
    #[serde(with = "crate::reading::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive): the hour of event time at which it closed.
    #[serde(with = "crate::reading::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub window_end: DateTime<Utc>,
    /// The series.
    pub metric: Metric,
    /// Samples (time bins with data) in the window.
    pub n_samples: i32,
    /// Lomb–Scargle peak period, h.
    pub period_hours: Option<f64>,
    /// Normalised Lomb–Scargle power at the peak, 0–1.
    pub power: Option<f64>,
    /// Baluev's false-alarm probability of the peak.
    pub false_alarm_probability: Option<f64>,
    /// Cosinor (24 h) MESOR, in the metric's units.
    pub mesor: Option<f64>,
    /// Cosinor amplitude, in the metric's units.
    pub amplitude: Option<f64>,
    /// Cosinor acrophase, rad (time of the fitted maximum is `−acrophase/2π · 24 h` after
    /// midnight UTC, following Cornelissen 2014's sign convention).
    pub acrophase_rad: Option<f64>,
    /// Zero-amplitude F-test p-value of the cosinor fit.
    pub p_value: Option<f64>,
}
