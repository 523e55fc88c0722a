//! The report of a planned phase shift (a `phase_shifts` lake row and the WebSocket's
//! `phase_shift.complete` event): what was asked, what the phase response curve predicted, and
//! what the node's clock actually did.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reading::rfc3339;

/// How a phase shift ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseShiftOutcome {
    /// The clock settled and the shift was measured.
    Completed,
    /// A reset or a pause interrupted it.
    Cancelled,
    /// A newer phase shift for the node replaced it.
    Superseded,
    /// The node had no clock yet (no reading applied), so there was nothing to shift.
    NoClock,
}

impl PhaseShiftOutcome {
    /// The snake_case name (the lake's `outcome` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
            Self::NoClock => "no_clock",
        }
    }
}

/// One finished (or abandoned) phase shift of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhaseShiftReport {
    /// The node.
    pub node_id: String,
    /// The id the phase-shift request returned.
    pub shift_id: String,
    /// Event time of the reading (or command) that ended it.
    #[serde(with = "rfc3339")]
    #[schemars(with = "String")]
    pub completed_at: DateTime<Utc>,
    /// When the temperature step began (event time).
    #[serde(with = "rfc3339")]
    #[schemars(with = "String")]
    pub step_start: DateTime<Utc>,
    /// When it ended.
    #[serde(with = "rfc3339")]
    #[schemars(with = "String")]
    pub step_end: DateTime<Utc>,
    /// The step (K).
    pub delta_k: f64,
    /// The KaiA total during the step, as a factor of the configured one (1: unchanged; else
    /// a `parameter_modulation` shift).
    #[serde(default = "unchanged")]
    pub kaia_factor: f64,
    /// The shift asked for (h, advance positive).
    pub target_shift_hours: f64,
    /// The shift the phase response curve predicted (h).
    pub predicted_shift_hours: f64,
    /// The shift measured against an unperturbed twin of the clock (h); absent unless completed.
    pub achieved_shift_hours: Option<f64>,
    /// Hours from the step's end to the peak from which the clock's shift stayed within a
    /// quarter hour of the achieved one (its transient); absent unless completed.
    #[serde(default)]
    pub settling_time_hours: Option<f64>,
    /// How it ended.
    pub outcome: PhaseShiftOutcome,
}

fn unchanged() -> f64 {
    1.0
}
