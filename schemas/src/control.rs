//! Control commands: actions on a node's clock (reset, pause, resume, a manual output
//! override, parameter changes, a planned phase shift) that travel in the node's input stream
//! with its readings, so that a replay of the same stream reproduces them.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reading::rfc3339;

/// One command for one node. On the wire it is a JSON object with a `control` field naming the
/// action, e.g. `{"control":"manual_override","pwm":128,"node_id":"pico_001",
/// "timestamp":"2026-01-05T10:00:00Z"}`: a record with a `control` field in any JSONL input
/// (MQTT, Kafka, a replayed file) is a command, not a reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ControlCommand {
    /// The node, `^[A-Za-z0-9_-]{1,64}$`.
    pub node_id: String,
    /// Its place in the node's event time: replays order it among the readings by this time.
    /// The API stamps a command just after the latest reading of the node it has seen (the
    /// Unix epoch if none), so a replay puts it where it arrived live, backfilled readings too.
    #[serde(with = "rfc3339")]
    #[schemars(with = "String")]
    pub timestamp: DateTime<Utc>,
    /// Who issued it (the API token's subject), for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
    /// When it was issued (wall-clock time), for the log.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    #[schemars(with = "Option<String>")]
    pub issued_at: Option<DateTime<Utc>>,
    /// Why, as the issuer said (the API's `reason`), for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do.
    #[serde(flatten)]
    pub action: ControlAction,
}

/// serde for optional RFC 3339 timestamps.
mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => crate::parse_timestamp(&s)
                .map(Some)
                .map_err(|r| serde::de::Error::custom(r.message)),
        }
    }
}

/// What a [`ControlCommand`] does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum ControlAction {
    /// The clock and the Kalman filter start again from the initial condition with the next
    /// reading (duplicate keys and rhythm bins are kept).
    Reset,
    /// Readings are recorded but no longer move the clock, which holds its state.
    Pause,
    /// The clock continues from the state it held, as if the paused time had not passed.
    Resume,
    /// The node's PWM output is held at `pwm` (0–255) until cleared with `pwm: null`, or for
    /// `duration_minutes` of the node's event time.
    ManualOverride {
        /// The duty to hold, or `None` to follow the clock again.
        pwm: Option<u8>,
        /// How long the override holds, in the node's event time from the command's timestamp
        /// (so a replay of the control log ends it where it ended live); until cleared if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_minutes: Option<f64>,
    },
    /// The clock restarts from this state (µM; the Kalman filter restarts too), as
    /// [`ControlAction::Reset`] does from its initial condition.
    ResetTo {
        /// The six state variables, consistent with the model's conserved totals.
        initial_conditions: crate::StateVariables,
    },
    /// Changes some of the node's entrainment (temperature-dependence) parameters; the clock
    /// keeps its state and runs on under the new rates.
    Entrainment(EntrainmentPatch),
    /// Changes some of the node's KOA → PWM mapping.
    OutputMapping(MappingPatch),
    /// Changes some of the node's Kalman filter tuning (the estimate is kept).
    Filter(FilterPatch),
    /// The Kalman filter starts again from the next reading (the clock is untouched).
    FilterReset,
    /// Changes some of the node's simulation settings.
    Simulation(SimulationPatch),
    /// A temperature step added to the node's clock drive for a while, planned from the phase
    /// response curve; when the clock has settled the node reports the shift achieved.
    PhaseShift(PhaseShiftPlan),
    /// The node's sensor calibration (from its registration): offsets added to its readings
    /// before the Kalman filter, replacing any earlier calibration.
    Calibration(Calibration),
}

/// Offsets added to a node's readings before its Kalman filter (the API specification's node
/// `calibration`). The lake's `readings` keep the values as sent; the filtered columns and the
/// clock see the calibrated ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Added to the temperature, K (a difference, so the same in °C), within ±20.
    #[serde(default)]
    #[schemars(range(min = -20.0, max = 20.0))]
    pub temperature_offset: f64,
    /// Added to the relative humidity, percentage points, within ±50.
    #[serde(default)]
    #[schemars(range(min = -50.0, max = 50.0))]
    pub humidity_offset: f64,
    /// Added to the pressure, Pa, within ±5000.
    #[serde(default)]
    #[schemars(range(min = -5000.0, max = 5000.0))]
    pub pressure_offset: f64,
}

impl Calibration {
    /// Whether every offset is zero (nothing to apply).
    pub fn is_zero(&self) -> bool {
        self.temperature_offset == 0.0 && self.humidity_offset == 0.0 && self.pressure_offset == 0.0
    }

    /// Checks the offsets are finite and plausible for a sensor's calibration: at most 20 K,
    /// 50 percentage points and 5 000 Pa either way.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |v: f64, max: f64| v.is_finite() && v.abs() <= max;
        if !ok(self.temperature_offset, 20.0) {
            return Err(format!(
                "temperature_offset must be within ±20 K, got {}",
                self.temperature_offset
            ));
        }
        if !ok(self.humidity_offset, 50.0) {
            return Err(format!(
                "humidity_offset must be within ±50 %, got {}",
                self.humidity_offset
            ));
        }
        if !ok(self.pressure_offset, 5_000.0) {
            return Err(format!(
                "pressure_offset must be within ±5000 Pa, got {}",
                self.pressure_offset
            ));
        }
        Ok(())
    }
}

/// Entrainment parameters to change; absent fields keep their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntrainmentPatch {
    /// Temperature at which the rate table holds (K, 200–400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_temperature_k: Option<f64>,
    /// Activation energy of the KaiA-stimulated terms (kJ/mol, 0–200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_energy_kaia_kj_mol: Option<f64>,
    /// Activation energy of the basal terms (kJ/mol, 0–200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_energy_basal_kj_mol: Option<f64>,
    /// Multiplies every rate (the free-running period scales as 1 / rate_scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_scale: Option<f64>,
    /// The API specification's structural-coupling fields: stored and echoed, no effect here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structural_coupling: Option<StructuralCoupling>,
    /// The API specification's ATPase-constraint fields: stored and echoed, no effect here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atpase_constraint: Option<AtpaseConstraint>,
}

/// The API specification's `structural_coupling` (a KaiC structural-transition model). The
/// Rust et al. (2007) model the clocks run has no counterpart for these: they are accepted,
/// stored with the node's settings and echoed, and every answer that takes them says they have
/// no effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StructuralCoupling {
    /// Baseline of the structural state (0–10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub baseline_d_i: Option<f64>,
    /// How temperature would modulate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modulation_function: Option<ModulationFunction>,
    /// Its sensitivity (0–10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub sensitivity: Option<f64>,
}

/// The specification's modulation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModulationFunction {
    /// Linear.
    Linear,
    /// A sigmoid.
    NonlinearSigmoid,
    /// Exponential.
    Exponential,
}

/// The API specification's `atpase_constraint` (KaiC's ATPase as the period's pacemaker); as
/// for [`StructuralCoupling`], stored and echoed with no effect on this model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AtpaseConstraint {
    /// Baseline hydrolysis fraction (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub baseline_f_hyd: Option<f64>,
    /// Wild type (compensated) or the specification's case II mutant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_dependence: Option<TemperatureDependence>,
    /// Coupling strength (0–10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub coupling_strength: Option<f64>,
}

/// The specification's ATPase temperature dependences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureDependence {
    /// Temperature-compensated (wild type).
    Compensated,
    /// The specification's case II mutant.
    CaseIiMutant,
}

impl StructuralCoupling {
    /// `self` with the fields `p` sets.
    pub fn merged(self, p: &Self) -> Self {
        Self {
            baseline_d_i: p.baseline_d_i.or(self.baseline_d_i),
            modulation_function: p.modulation_function.or(self.modulation_function),
            sensitivity: p.sensitivity.or(self.sensitivity),
        }
    }
}

impl AtpaseConstraint {
    /// `self` with the fields `p` sets.
    pub fn merged(self, p: &Self) -> Self {
        Self {
            baseline_f_hyd: p.baseline_f_hyd.or(self.baseline_f_hyd),
            temperature_dependence: p.temperature_dependence.or(self.temperature_dependence),
            coupling_strength: p.coupling_strength.or(self.coupling_strength),
        }
    }
}

/// Shape of the KOA → PWM curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MappingFunction {
    /// Straight line between the thresholds.
    Linear,
    /// Logistic curve between the thresholds, steeper in the middle.
    Sigmoid,
}

/// Output-mapping fields to change; absent fields keep their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingPatch {
    /// Curve shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_function: Option<MappingFunction>,
    /// Duty at or below the low threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwm_min: Option<u8>,
    /// Duty at or above the high threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwm_max: Option<u8>,
    /// KOA at and below which the output is `pwm_min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub koa_threshold_low: Option<f64>,
    /// KOA at and above which the output is `pwm_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub koa_threshold_high: Option<f64>,
    /// High KOA → low duty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    /// Steepness of the sigmoid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigmoid_gain: Option<f64>,
}

/// Kalman tuning to change; absent fields keep their values. Noises are in the order
/// temperature, humidity, pressure (K², %², hPa²; per minute for the process noise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterPatch {
    /// Random-walk variance per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_noise: Option<[f64; 3]>,
    /// Sensor noise variance of one reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_noise: Option<[f64; 3]>,
    /// χ² probability up to which a reading is graded good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_good: Option<f64>,
    /// χ² probability up to which a reading is graded fair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_fair: Option<f64>,
    /// χ² probability up to which a reading is graded poor (and still applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_poor: Option<f64>,
    /// Consecutive invalid readings after which the filter re-initialises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinit_after: Option<u32>,
}

/// Simulation settings to change; absent fields keep their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulationPatch {
    /// Across a gap between readings longer than this (h) the clock runs free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gap_hours: Option<f64>,
    /// The circadian time a reset clock starts at (0–24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_ct: Option<f64>,
    /// The integrator's absolute tolerance (µM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_tolerance: Option<f64>,
    /// The integrator's relative tolerance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_tolerance: Option<f64>,
    /// The integrator's largest step (h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step_hours: Option<f64>,
    /// The integrator's smallest step (h) before it reports `ODE_INSTABILITY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_step_hours: Option<f64>,
}

/// A planned step: `delta_k` added to the clock's drive, and the KaiA total multiplied by
/// `kaia_factor`, from `start` for `duration_minutes` (a `temperature_step` shift moves the
/// temperature alone, a `parameter_modulation` shift the KaiA alone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseShiftPlan {
    /// Names the shift in its `phase_shift.complete` report.
    pub shift_id: String,
    /// The shift asked for (h, advance positive).
    pub target_shift_hours: f64,
    /// The shift the phase response curve predicts for this step (h).
    pub predicted_shift_hours: f64,
    /// When the step begins (event time).
    #[serde(with = "rfc3339")]
    #[schemars(with = "String")]
    pub start: DateTime<Utc>,
    /// The step's length (min).
    pub duration_minutes: f64,
    /// The step (K, positive = warmer).
    pub delta_k: f64,
    /// The KaiA total during the step, as a factor of the configured one (1: unchanged).
    #[serde(default = "unchanged")]
    pub kaia_factor: f64,
    /// Cycles after the step before the achieved shift is read off.
    pub settle_cycles: u32,
}

fn unchanged() -> f64 {
    1.0
}

impl PhaseShiftPlan {
    /// The specification's name of how the shift is made.
    pub fn method(&self) -> &'static str {
        if self.kaia_factor == 1.0 {
            "temperature_step"
        } else {
            "parameter_modulation"
        }
    }
}

impl ControlCommand {
    /// Whether a JSON record is a control command (it has a top-level `control` field), without
    /// parsing it in full.
    pub fn is_control(record: &[u8]) -> bool {
        // One searcher for every record (building one was 1.4 % of a replay), and only for
        // records that can be JSON objects (a CSV line cannot).
        static CONTROL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"control\""));
        record.trim_ascii_start().first() == Some(&b'{')
            && CONTROL.find(record).is_some()
            && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(record)
                .is_ok_and(|m| m.contains_key("control"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_and_write_their_wire_form() {
        let json = r#"{"control":"manual_override","pwm":128,"node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#;
        let c: ControlCommand = serde_json::from_str(json).unwrap();
        assert_eq!(
            c.action,
            ControlAction::ManualOverride {
                pwm: Some(128),
                duration_minutes: None
            }
        );
        assert_eq!(c.node_id, "p1");
        let back: ControlCommand =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let reset: ControlCommand = serde_json::from_str(
            r#"{"control":"reset","node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(reset.action, ControlAction::Reset);
        assert!(ControlCommand::is_control(json.as_bytes()));
        assert!(!ControlCommand::is_control(
            br#"{"node_id":"p1","note":"\"control\""}"#
        ));
        assert!(serde_json::from_str::<ControlCommand>(
            r#"{"control":"explode","node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ControlCommand>(
            r#"{"control":"manual_override","pwm":300,"node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#
        )
        .is_err());
    }

    #[test]
    fn parameter_patches_read_flat_and_refuse_unknown_fields() {
        let json = r#"{"control":"entrainment","rate_scale":1.1,"node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#;
        let c: ControlCommand = serde_json::from_str(json).unwrap();
        assert_eq!(
            c.action,
            ControlAction::Entrainment(EntrainmentPatch {
                rate_scale: Some(1.1),
                ..Default::default()
            })
        );
        let back: ControlCommand =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        // A misspelt field is an error, not a silent no-op.
        assert!(serde_json::from_str::<ControlCommand>(
            r#"{"control":"entrainment","rate_scal":1.1,"node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#
        )
        .is_err());
        let m: ControlCommand = serde_json::from_str(
            r#"{"control":"output_mapping","mapping_function":"sigmoid","pwm_max":200,"node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            m.action,
            ControlAction::OutputMapping(MappingPatch {
                mapping_function: Some(MappingFunction::Sigmoid),
                pwm_max: Some(200),
                ..Default::default()
            })
        );
        let reset: ControlCommand = serde_json::from_str(
            r#"{"control":"filter_reset","node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(reset.action, ControlAction::FilterReset);
        let plan = ControlCommand {
            node_id: "p1".into(),
            timestamp: "2026-01-05T10:00:00Z".parse().unwrap(),
            issued_by: None,
            issued_at: None,
            action: ControlAction::PhaseShift(PhaseShiftPlan {
                shift_id: "s1".into(),
                target_shift_hours: 2.0,
                predicted_shift_hours: 1.9,
                start: "2026-01-05T12:00:00Z".parse().unwrap(),
                duration_minutes: 120.0,
                delta_k: 5.0,
                kaia_factor: 1.0,
                settle_cycles: 3,
            }),
            reason: None,
        };
        let text = serde_json::to_string(&plan).unwrap();
        assert!(text.contains(r#""control":"phase_shift""#), "{text}");
        assert_eq!(serde_json::from_str::<ControlCommand>(&text).unwrap(), plan);
        // A plan logged before the KaiA step existed is a temperature step.
        let old = text.replace(r#""kaia_factor":1.0,"#, "");
        assert_ne!(old, text);
        assert_eq!(serde_json::from_str::<ControlCommand>(&old).unwrap(), plan);
    }
}
