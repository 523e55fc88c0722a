//! Per-node Kalman filter over temperature, humidity and pressure, smoothing irregular BME280
//! readings into an estimate (with variance) the clock can trust and grading each reading.
//!
//! The state is a random walk `x = [temperature K, relative humidity %, pressure hPa]`. Between
//! readings each variance grows by `q_i · Δt` with `Δt` in minutes of event time, so a node that
//! went quiet for an hour is trusted less than one that reported a minute ago. A reading may carry
//! any subset of the three variables; only the rows present are used.
//!
//! Units: the public measurement and estimate API uses **pascals** for pressure (`pressure_pa`),
//! like the rest of the pipeline. Inside the filter pressure is kept in **hectopascals**, so that
//! the default noise figures (0.05 hPa²/min, 0.2 hPa²) are of the same order as the other
//! variables. Everything that exposes second moments — [`Variances`],
//! [`FilterStateView::covariance`], [`KalmanParams`] — is in filter units (K², %², hPa²).
//!
//! Each reading is graded by its normalised innovation squared against χ² quantiles; grossly
//! inconsistent readings are rejected, unless enough of them arrive in a row that the world has
//! evidently changed, in which case the filter re-initialises on the latest one.

use std::fmt;

use nalgebra::{Matrix3, SMatrix, SVector, Vector3};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Pascals per hectopascal: the factor between the public pressure unit and the filter's.
pub const PA_PER_HPA: f64 = 100.0;

/// Seconds per minute: process noise is specified per minute of elapsed event time.
const SECONDS_PER_MINUTE: f64 = 60.0;

/// One of the three filtered variables, in state order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variable {
    /// Air temperature (K).
    Temperature,
    /// Relative humidity (%).
    Humidity,
    /// Barometric pressure (Pa publicly, hPa inside the filter).
    Pressure,
}

impl Variable {
    /// All variables in state-vector order (index 0, 1, 2).
    pub const ALL: [Variable; 3] = [
        Variable::Temperature,
        Variable::Humidity,
        Variable::Pressure,
    ];

    /// Index of this variable in the state vector and in every `[_; 3]` array of this module.
    pub const fn index(self) -> usize {
        match self {
            Variable::Temperature => 0,
            Variable::Humidity => 1,
            Variable::Pressure => 2,
        }
    }

    /// Lowercase name, as used in serialised forms and error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Variable::Temperature => "temperature",
            Variable::Humidity => "humidity",
            Variable::Pressure => "pressure",
        }
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an operation on the filter failed. A failed call leaves the filter unchanged.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KalmanError {
    /// The reading carries none of the three variables, so there is nothing to update with.
    #[error("measurement carries no variables")]
    NoVariables,
    /// A measured value is NaN or infinite.
    #[error("non-finite {variable} value")]
    NonFinite {
        /// The offending variable.
        variable: Variable,
    },
    /// The event time is NaN or infinite, or so far from the last one that the gap overflows.
    #[error("non-finite event time {t_seconds} s (or gap since the last reading overflows)")]
    NonFiniteTime {
        /// The event time given.
        t_seconds: f64,
    },
    /// The reading is older than the last applied one; the caller must order readings.
    #[error("out-of-order reading: t = {got} s is before the last reading at {last} s")]
    OutOfOrder {
        /// Event time of the last reading (s).
        last: f64,
        /// Event time of the rejected reading (s).
        got: f64,
    },
    /// The parameters fail [`KalmanParams::validate`].
    #[error("invalid Kalman parameters: {0}")]
    InvalidParams(String),
}

/// Tuning of one node's filter. Noise figures are in filter units (K, %, hPa), in the order
/// temperature, humidity, pressure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KalmanParams {
    /// Random-walk variance accrued per minute of elapsed event time: K²/min, %²/min, hPa²/min.
    pub process_noise: [f64; 3],
    /// Sensor noise variance of one reading: K², %², hPa².
    pub measurement_noise: [f64; 3],
    /// Probability of the χ² quantile up to which a reading is graded [`Quality::Good`].
    pub gate_good: f64,
    /// Probability of the χ² quantile up to which a reading is graded [`Quality::Fair`].
    pub gate_fair: f64,
    /// Probability of the χ² quantile up to which a reading is graded [`Quality::Poor`] (and
    /// still applied); above it the reading is [`Quality::Invalid`] and rejected.
    pub gate_poor: f64,
    /// After this many consecutive invalid readings the filter assumes the world really stepped
    /// and re-initialises on the latest one. Must be at least 1.
    pub reinit_after: u32,
}

impl Default for KalmanParams {
    /// The defaults of the API spec, sized for a BME280 sampled every few minutes.
    fn default() -> Self {
        Self {
            process_noise: [0.01, 0.02, 0.05],
            measurement_noise: [0.05, 0.1, 0.2],
            gate_good: 0.95,
            gate_fair: 0.99,
            gate_poor: 0.9999,
            reinit_after: 3,
        }
    }
}

impl KalmanParams {
    /// Checks that every noise is finite and positive (a zero measurement noise would make the
    /// innovation covariance singular at initialisation), that the gate probabilities increase
    /// strictly inside (0, 1), and that `reinit_after` is at least 1.
    pub fn validate(&self) -> Result<(), KalmanError> {
        let noises = [
            ("process_noise", &self.process_noise),
            ("measurement_noise", &self.measurement_noise),
        ];
        for (name, values) in noises {
            for (v, value) in Variable::ALL.iter().zip(values) {
                if !(value.is_finite() && *value > 0.0) {
                    return Err(KalmanError::InvalidParams(format!(
                        "{name} for {v} must be finite and > 0, got {value}"
                    )));
                }
            }
        }
        let (g, f, p) = (self.gate_good, self.gate_fair, self.gate_poor);
        if !(0.0 < g && g < f && f < p && p < 1.0) {
            return Err(KalmanError::InvalidParams(format!(
                "gate probabilities must satisfy 0 < good < fair < poor < 1, got {g}, {f}, {p}"
            )));
        }
        if self.reinit_after == 0 {
            return Err(KalmanError::InvalidParams(
                "reinit_after must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// χ² quantiles `[good, fair, poor]` for `m = 1..=3` degrees of freedom (row `m - 1`).
    ///
    /// Every node of a configuration has the same gate probabilities, and the nine inverse
    /// CDFs cost about 140 000 instructions (3 % of a replay's first day of 2 000 nodes): the
    /// last probabilities and their quantiles are kept per thread.
    fn gates(&self) -> Result<[[f64; 3]; 3], KalmanError> {
        self.validate()?;
        type Gates = ([u64; 3], [[f64; 3]; 3]);
        thread_local! {
            static LAST: std::cell::Cell<Option<Gates>> = const { std::cell::Cell::new(None) };
        }
        let key = [self.gate_good, self.gate_fair, self.gate_poor].map(f64::to_bits);
        if let Some((k, gates)) = LAST.get() {
            if k == key {
                return Ok(gates);
            }
        }
        let gates = self.compute_gates()?;
        LAST.set(Some((key, gates)));
        Ok(gates)
    }

    fn compute_gates(&self) -> Result<[[f64; 3]; 3], KalmanError> {
        let mut gates = [[0.0; 3]; 3];
        for (m, row) in gates.iter_mut().enumerate() {
            let chi2 = ChiSquared::new((m + 1) as f64)
                .map_err(|e| KalmanError::InvalidParams(format!("chi-squared({}): {e}", m + 1)))?;
            *row = [self.gate_good, self.gate_fair, self.gate_poor].map(|p| chi2.inverse_cdf(p));
            if !(row[0].is_finite()
                && row[0] > 0.0
                && row[0] < row[1]
                && row[1] < row[2]
                && row[2].is_finite())
            {
                return Err(KalmanError::InvalidParams(format!(
                    "gate probabilities give unusable chi-squared({}) quantiles {row:?}",
                    m + 1
                )));
            }
        }
        Ok(gates)
    }
}

/// One sensor reading in public units; any subset of the variables may be present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Air temperature (K).
    pub temperature_kelvin: Option<f64>,
    /// Relative humidity (%).
    pub humidity_percent: Option<f64>,
    /// Barometric pressure (Pa).
    pub pressure_pa: Option<f64>,
}

impl Measurement {
    /// A full BME280 reading.
    pub const fn full(temperature_kelvin: f64, humidity_percent: f64, pressure_pa: f64) -> Self {
        Self {
            temperature_kelvin: Some(temperature_kelvin),
            humidity_percent: Some(humidity_percent),
            pressure_pa: Some(pressure_pa),
        }
    }

    /// A temperature-only reading (e.g. from a bare thermistor node).
    pub const fn temperature_only(temperature_kelvin: f64) -> Self {
        Self {
            temperature_kelvin: Some(temperature_kelvin),
            humidity_percent: None,
            pressure_pa: None,
        }
    }

    /// Values in filter units (pressure converted Pa → hPa), in state order.
    fn filter_units(&self) -> [Option<f64>; 3] {
        [
            self.temperature_kelvin,
            self.humidity_percent,
            self.pressure_pa.map(|pa| pa / PA_PER_HPA),
        ]
    }
}

/// Per-variable values in public units (K, %, Pa): an estimate, or an innovation (measurement
/// minus prior estimate). `None` where the variable is absent or not yet initialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Values {
    /// Temperature (K).
    pub temperature_kelvin: Option<f64>,
    /// Relative humidity (%).
    pub humidity_percent: Option<f64>,
    /// Pressure (Pa).
    pub pressure_pa: Option<f64>,
}

impl Values {
    /// From filter-unit values (pressure in hPa).
    fn from_filter_units(v: [Option<f64>; 3]) -> Self {
        Self {
            temperature_kelvin: v[0],
            humidity_percent: v[1],
            pressure_pa: v[2].map(|hpa| hpa * PA_PER_HPA),
        }
    }
}

/// Per-variable variances in filter units (K², %², hPa²); `None` for variables not yet
/// initialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Variances {
    /// Temperature variance (K²).
    pub temperature_k2: Option<f64>,
    /// Relative humidity variance (%²).
    pub humidity_percent2: Option<f64>,
    /// Pressure variance (hPa²).
    pub pressure_hpa2: Option<f64>,
}

impl Variances {
    fn from_array(v: [Option<f64>; 3]) -> Self {
        Self {
            temperature_k2: v[0],
            humidity_percent2: v[1],
            pressure_hpa2: v[2],
        }
    }
}

/// How consistent a reading was with the prediction, from its normalised innovation squared.
/// Ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Within the `gate_good` χ² quantile.
    Good,
    /// Within the `gate_fair` quantile.
    Fair,
    /// Within the `gate_poor` quantile; still applied. Also reported for a re-initialising reading.
    Poor,
    /// Beyond the `gate_poor` quantile; not applied to the estimate.
    Invalid,
}

/// What one call to [`KalmanFilter::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateOutcome {
    /// Grade of the reading. A reading that only initialises variables (nothing to compare
    /// against) is `Good`; a re-initialising one is `Poor`.
    pub quality: Quality,
    /// Normalised innovation squared `νᵀ S⁻¹ ν` over the present, already-initialised variables;
    /// `None` if there were none (the reading only initialised variables).
    pub nis: Option<f64>,
    /// Innovation `z − x⁻` per gated variable, public units (K, %, Pa).
    pub innovation: Values,
    /// Whether the reading changed the estimate (false only for `Invalid`).
    pub applied: bool,
    /// Whether the reading re-initialised the filter after `reinit_after` invalid readings.
    pub reinitialised: bool,
    /// Posterior estimate, public units.
    pub estimate: Values,
    /// Posterior variances, filter units (K², %², hPa²).
    pub variance: Variances,
}

/// Read-only snapshot of a filter, as served by the `/filter/state` endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterStateView {
    /// Posterior estimate at `last_update_seconds`, public units (K, %, Pa). Serialised as the
    /// API's `state_estimate`.
    #[serde(rename = "state_estimate")]
    pub estimate: Values,
    /// Posterior covariance, row-major, **filter units** (K, %, hPa; state order temperature,
    /// humidity, pressure). Rows and columns of variables not yet initialised are zero.
    /// Serialised as the API's `covariance_matrix`.
    #[serde(rename = "covariance_matrix")]
    pub covariance: [[f64; 3]; 3],
    /// Innovation of the last reading, public units. Serialised as the API's `innovation`.
    #[serde(rename = "innovation")]
    pub last_innovation: Values,
    /// Normalised innovation squared of the last reading, if it had anything to gate.
    pub last_nis: Option<f64>,
    /// Grade of the last reading.
    pub last_quality: Option<Quality>,
    /// Readings accepted by `update` (including rejected-as-invalid ones, excluding errors).
    pub measurement_count: u64,
    /// Readings graded `Invalid` and not applied.
    pub rejected_count: u64,
    /// Event time of the last reading (s).
    pub last_update_seconds: Option<f64>,
}

/// Kalman filter of one sensor node: a random walk in temperature, humidity and pressure with
/// elapsed-time process noise, per-variable partial updates, χ² innovation gating and automatic
/// re-initialisation after a run of rejected readings.
///
/// The state is a few hundred bytes of fixed-size data (no heap), `Clone`, and serialisable for
/// checkpoints; deserialising re-validates the parameters and recomputes the gates.
///
/// ```
/// use kaiabc_operators::kalman::{KalmanFilter, KalmanParams, Measurement, Quality};
///
/// let mut filter = KalmanFilter::new(KalmanParams::default())?;
/// // The first reading initialises every variable it carries.
/// filter.update(0.0, &Measurement::full(293.15, 45.0, 101_325.0))?;
/// // One minute later, a temperature-only reading consistent with the estimate.
/// let outcome = filter.update(60.0, &Measurement::temperature_only(293.3))?;
/// assert_eq!(outcome.quality, Quality::Good);
/// assert!(outcome.applied);
/// // A 20 K spike is rejected and leaves the estimate where it was.
/// let spike = filter.update(120.0, &Measurement::temperature_only(313.0))?;
/// assert_eq!(spike.quality, Quality::Invalid);
/// let (kelvin, variance) = filter.estimate_temperature().unwrap();
/// assert!((kelvin - 293.2).abs() < 0.2 && variance < 0.05);
/// # Ok::<(), kaiabc_operators::kalman::KalmanError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "KalmanCheckpoint", try_from = "KalmanCheckpoint")]
pub struct KalmanFilter {
    params: KalmanParams,
    /// χ² quantiles `[good, fair, poor]` for `m - 1` gated variables, derived from `params`.
    gates: [[f64; 3]; 3],
    /// Estimate in filter units; entries of uninitialised variables are 0 and meaningless.
    x: Vector3<f64>,
    /// Covariance in filter units; rows/columns of uninitialised variables are 0.
    p: Matrix3<f64>,
    initialised: [bool; 3],
    last_t: Option<f64>,
    consecutive_invalid: u32,
    measurement_count: u64,
    rejected_count: u64,
    /// Last innovation, filter units.
    last_innovation: [Option<f64>; 3],
    last_nis: Option<f64>,
    last_quality: Option<Quality>,
}

/// Serialised form of [`KalmanFilter`]: plain arrays (nalgebra's serde feature is off), without
/// the derived gates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KalmanCheckpoint {
    params: KalmanParams,
    estimate: [f64; 3],
    /// Row-major.
    covariance: [[f64; 3]; 3],
    initialised: [bool; 3],
    last_t: Option<f64>,
    consecutive_invalid: u32,
    measurement_count: u64,
    rejected_count: u64,
    last_innovation: [Option<f64>; 3],
    last_nis: Option<f64>,
    last_quality: Option<Quality>,
}

impl From<KalmanFilter> for KalmanCheckpoint {
    fn from(f: KalmanFilter) -> Self {
        Self {
            params: f.params,
            estimate: f.x.into(),
            covariance: to_rows(&f.p),
            initialised: f.initialised,
            last_t: f.last_t,
            consecutive_invalid: f.consecutive_invalid,
            measurement_count: f.measurement_count,
            rejected_count: f.rejected_count,
            last_innovation: f.last_innovation,
            last_nis: f.last_nis,
            last_quality: f.last_quality,
        }
    }
}

impl TryFrom<KalmanCheckpoint> for KalmanFilter {
    type Error = KalmanError;

    fn try_from(c: KalmanCheckpoint) -> Result<Self, KalmanError> {
        Ok(Self {
            gates: c.params.gates()?,
            params: c.params,
            x: Vector3::from(c.estimate),
            p: Matrix3::from_fn(|i, j| c.covariance[i][j]),
            initialised: c.initialised,
            last_t: c.last_t,
            consecutive_invalid: c.consecutive_invalid,
            measurement_count: c.measurement_count,
            rejected_count: c.rejected_count,
            last_innovation: c.last_innovation,
            last_nis: c.last_nis,
            last_quality: c.last_quality,
        })
    }
}

fn to_rows(m: &Matrix3<f64>) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| m[(i, j)]))
}

/// Result of a joint update over `m` gated rows, computed before deciding whether to apply it.
struct JointUpdate {
    nis: f64,
    x: Vector3<f64>,
    p: Matrix3<f64>,
}

/// Kalman update on the `M` state rows in `rows` (all initialised), measurement `z` and noise `r`
/// in filter units. Uses the Joseph form so the covariance stays symmetric positive
/// semi-definite under rounding. Returns `None` if the innovation covariance is not positive
/// definite (only possible with non-finite inputs).
fn joint_update<const M: usize>(
    x: &Vector3<f64>,
    p: &Matrix3<f64>,
    rows: [usize; M],
    z: &Vector3<f64>,
    r: &Vector3<f64>,
) -> Option<JointUpdate> {
    let h = SMatrix::<f64, M, 3>::from_fn(|k, j| if rows[k] == j { 1.0 } else { 0.0 });
    let nu = SVector::<f64, M>::from_fn(|k, _| z[rows[k]] - x[rows[k]]);
    let r_m = SMatrix::<f64, M, M>::from_diagonal(&SVector::<f64, M>::from_fn(|k, _| r[rows[k]]));
    let s = h * p * h.transpose() + r_m;
    let chol = s.cholesky()?;
    let nis = nu.dot(&chol.solve(&nu));
    // K = P Hᵀ S⁻¹ = (S⁻¹ H P)ᵀ, P and S being symmetric.
    let k: SMatrix<f64, 3, M> = chol.solve(&(h * p)).transpose();
    let ikh = Matrix3::identity() - k * h;
    let p_new = ikh * p * ikh.transpose() + k * r_m * k.transpose();
    Some(JointUpdate {
        nis,
        x: x + k * nu,
        p: (p_new + p_new.transpose()) * 0.5,
    })
}

/// Dispatches [`joint_update`] on the number of gated rows, keeping every matrix fixed-size.
fn joint_update_dyn(
    x: &Vector3<f64>,
    p: &Matrix3<f64>,
    rows: &[usize],
    z: &Vector3<f64>,
    r: &Vector3<f64>,
) -> Option<JointUpdate> {
    match *rows {
        [a] => joint_update::<1>(x, p, [a], z, r),
        [a, b] => joint_update::<2>(x, p, [a, b], z, r),
        [a, b, c] => joint_update::<3>(x, p, [a, b, c], z, r),
        _ => None,
    }
}

impl KalmanFilter {
    /// A filter with no variable initialised yet.
    pub fn new(params: KalmanParams) -> Result<Self, KalmanError> {
        Ok(Self::with_gates(params, params.gates()?))
    }

    /// The current parameters.
    pub fn params(&self) -> &KalmanParams {
        &self.params
    }

    /// Replaces the parameters, keeping the state (estimate and covariance are not rescaled; new
    /// noise figures apply from the next reading).
    pub fn set_params(&mut self, params: KalmanParams) -> Result<(), KalmanError> {
        self.gates = params.gates()?;
        self.params = params;
        Ok(())
    }

    /// Forgets everything learned, keeping the parameters.
    pub fn reset(&mut self) {
        *self = Self::with_gates(self.params, self.gates);
    }

    /// A fresh filter with gates already derived from `params`.
    fn with_gates(params: KalmanParams, gates: [[f64; 3]; 3]) -> Self {
        Self {
            params,
            gates,
            x: Vector3::zeros(),
            p: Matrix3::zeros(),
            initialised: [false; 3],
            last_t: None,
            consecutive_invalid: 0,
            measurement_count: 0,
            rejected_count: 0,
            last_innovation: [None; 3],
            last_nis: None,
            last_quality: None,
        }
    }

    /// Time since the last reading (s), checking order and finiteness.
    fn elapsed(&self, t_seconds: f64) -> Result<f64, KalmanError> {
        if !t_seconds.is_finite() {
            return Err(KalmanError::NonFiniteTime { t_seconds });
        }
        let Some(last) = self.last_t else {
            return Ok(0.0);
        };
        if t_seconds < last {
            return Err(KalmanError::OutOfOrder {
                last,
                got: t_seconds,
            });
        }
        let dt = t_seconds - last;
        if !dt.is_finite() {
            return Err(KalmanError::NonFiniteTime { t_seconds });
        }
        Ok(dt)
    }

    /// Covariance propagated by `dt_seconds` of random walk (initialised variables only).
    fn predicted_covariance(&self, dt_seconds: f64) -> Matrix3<f64> {
        let dt_minutes = dt_seconds / SECONDS_PER_MINUTE;
        let mut p = self.p;
        for i in 0..3 {
            if self.initialised[i] {
                p[(i, i)] += self.params.process_noise[i] * dt_minutes;
            }
        }
        p
    }

    /// Applies one reading taken at event time `t_seconds` (s).
    ///
    /// Present variables seen before are gated jointly and, unless the reading is `Invalid`,
    /// updated; present variables never seen before are initialised to the measured value with
    /// the measurement-noise variance. An `Invalid` reading changes nothing but the clock (the
    /// covariance still grows by the elapsed-time process noise) and the counters, until
    /// `reinit_after` of them arrive in a row: then the present variables are re-initialised on
    /// the latest reading, which is reported `Poor` with `reinitialised = true`.
    ///
    /// Errors (the filter is then unchanged): no variable present, a non-finite value or time,
    /// or a time before the last reading's. Equal times are fine (no process noise is added).
    pub fn update(
        &mut self,
        t_seconds: f64,
        measurement: &Measurement,
    ) -> Result<UpdateOutcome, KalmanError> {
        let z = measurement.filter_units();
        if z.iter().all(Option::is_none) {
            return Err(KalmanError::NoVariables);
        }
        for (v, value) in Variable::ALL.iter().zip(&z) {
            if value.is_some_and(|x| !x.is_finite()) {
                return Err(KalmanError::NonFinite { variable: *v });
            }
        }
        let dt = self.elapsed(t_seconds)?;

        let p_prior = self.predicted_covariance(dt);
        let z_vec = Vector3::from(z.map(|v| v.unwrap_or(0.0)));
        let r = Vector3::from(self.params.measurement_noise);
        let mut gated = [0usize; 3];
        let mut m = 0;
        for (i, value) in z.iter().enumerate() {
            if value.is_some() && self.initialised[i] {
                gated[m] = i;
                m += 1;
            }
        }
        let gated = &gated[..m];

        let mut innovation = [None; 3];
        for &i in gated {
            innovation[i] = Some(z_vec[i] - self.x[i]);
        }

        let (quality, nis, joint) = if m == 0 {
            (Quality::Good, None, None)
        } else {
            let joint = joint_update_dyn(&self.x, &p_prior, gated, &z_vec, &r);
            let nis = joint.as_ref().map_or(f64::INFINITY, |j| j.nis);
            (self.grade(nis, m), Some(nis), joint)
        };

        let mut reinitialised = false;
        let applied;
        self.p = p_prior;
        if quality == Quality::Invalid {
            self.consecutive_invalid += 1;
            if self.consecutive_invalid >= self.params.reinit_after {
                reinitialised = true;
                applied = true;
                self.consecutive_invalid = 0;
            } else {
                applied = false;
                self.rejected_count += 1;
            }
        } else {
            applied = true;
            self.consecutive_invalid = 0;
            if let Some(j) = joint {
                self.x = j.x;
                self.p = j.p;
            }
        }
        if applied {
            // Initialise never-seen variables, or on re-initialisation every present variable.
            for (i, value) in z.iter().enumerate() {
                if let Some(value) = *value {
                    if reinitialised || !self.initialised[i] {
                        self.initialise(i, value);
                    }
                }
            }
        }

        let quality = if reinitialised {
            Quality::Poor
        } else {
            quality
        };
        self.last_t = Some(t_seconds);
        self.measurement_count += 1;
        self.last_innovation = innovation;
        self.last_nis = nis;
        self.last_quality = Some(quality);

        Ok(UpdateOutcome {
            quality,
            nis,
            innovation: Values::from_filter_units(innovation),
            applied,
            reinitialised,
            estimate: self.estimate(),
            variance: self.variances(&self.p),
        })
    }

    /// Sets variable `i` to `value` with the measurement-noise variance and no correlation.
    fn initialise(&mut self, i: usize, value: f64) {
        self.x[i] = value;
        for j in 0..3 {
            self.p[(i, j)] = 0.0;
            self.p[(j, i)] = 0.0;
        }
        self.p[(i, i)] = self.params.measurement_noise[i];
        self.initialised[i] = true;
    }

    /// Grade of a normalised innovation squared over `m` variables; NaN grades `Invalid`.
    fn grade(&self, nis: f64, m: usize) -> Quality {
        let [good, fair, poor] = self.gates[m - 1];
        if nis <= good {
            Quality::Good
        } else if nis <= fair {
            Quality::Fair
        } else if nis <= poor {
            Quality::Poor
        } else {
            Quality::Invalid
        }
    }

    /// The χ² quantiles `[good, fair, poor]` used to grade a reading with `m` (1–3) gated
    /// variables, or `None` for other `m`.
    pub fn gates(&self, m: usize) -> Option<[f64; 3]> {
        (1..=3).contains(&m).then(|| self.gates[m - 1])
    }

    /// The estimate of every variable seen so far, public units (K, %, Pa).
    pub fn estimate(&self) -> Values {
        Values::from_filter_units(std::array::from_fn(|i| {
            self.initialised[i].then(|| self.x[i])
        }))
    }

    fn variances(&self, p: &Matrix3<f64>) -> Variances {
        Variances::from_array(std::array::from_fn(|i| {
            self.initialised[i].then(|| p[(i, i)])
        }))
    }

    /// The prior at event time `t_seconds` without applying a reading: the estimate (unchanged,
    /// a random walk has no drift) and the variances grown by `q · Δt`. Errors as for
    /// [`update`](Self::update) on the time.
    pub fn predict(&self, t_seconds: f64) -> Result<(Values, Variances), KalmanError> {
        let dt = self.elapsed(t_seconds)?;
        Ok((
            self.estimate(),
            self.variances(&self.predicted_covariance(dt)),
        ))
    }

    /// Temperature estimate (K) and its variance (K²) as of the last reading, if temperature has
    /// been seen. This is what the clock's temperature transfer consumes.
    pub fn estimate_temperature(&self) -> Option<(f64, f64)> {
        let i = Variable::Temperature.index();
        self.initialised[i].then(|| (self.x[i], self.p[(i, i)]))
    }

    /// Snapshot for the `/filter/state` endpoint.
    pub fn view(&self) -> FilterStateView {
        FilterStateView {
            estimate: self.estimate(),
            covariance: to_rows(&self.p),
            last_innovation: Values::from_filter_units(self.last_innovation),
            last_nis: self.last_nis,
            last_quality: self.last_quality,
            measurement_count: self.measurement_count,
            rejected_count: self.rejected_count,
            last_update_seconds: self.last_t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_match_chi_squared_tables() {
        // Standard table values (e.g. NIST/SEMATECH e-Handbook §1.3.6.7.4).
        let table = [
            [3.841459, 6.634897, 15.13671],
            [5.991465, 9.210340, 18.42068],
            [7.814728, 11.34487, 21.10751],
        ];
        let f = KalmanFilter::new(KalmanParams::default()).unwrap();
        for (m, row) in table.iter().enumerate() {
            let gates = f.gates(m + 1).unwrap();
            for (got, want) in gates.iter().zip(row) {
                assert!(
                    (got - want).abs() < 1e-5 * want,
                    "m = {}: {got} vs {want}",
                    m + 1
                );
            }
        }
        assert_eq!(f.gates(0), None);
        assert_eq!(f.gates(4), None);
        // Other probabilities on the same thread get their own quantiles (the per-thread memo
        // is keyed by them), and the defaults theirs again: χ²₁(0.90) = 2.705543 (same table).
        let other = KalmanParams {
            gate_good: 0.90,
            ..KalmanParams::default()
        };
        let g = KalmanFilter::new(other).unwrap().gates(1).unwrap();
        assert!((g[0] - 2.705543).abs() < 1e-5, "{g:?}");
        let again = KalmanFilter::new(KalmanParams::default()).unwrap();
        assert!((again.gates(1).unwrap()[0] - table[0][0]).abs() < 1e-5);
    }

    #[test]
    fn joint_update_matches_scalar_formula() {
        let x = Vector3::new(300.0, 50.0, 1000.0);
        let p = Matrix3::from_diagonal(&Vector3::new(0.03, 0.04, 0.1));
        let z = Vector3::new(300.2, 0.0, 1000.5);
        let r = Vector3::new(0.05, 0.1, 0.2);
        let j = joint_update::<2>(&x, &p, [0, 2], &z, &r).unwrap();
        let nis = 0.2f64.powi(2) / 0.08 + 0.5f64.powi(2) / 0.3;
        assert!((j.nis - nis).abs() < 1e-12);
        assert!((j.x[0] - (300.0 + 0.03 / 0.08 * 0.2)).abs() < 1e-12);
        assert_eq!(j.x[1], 50.0);
        assert!((j.p[(0, 0)] - 0.03 * 0.05 / 0.08).abs() < 1e-15);
        assert_eq!(j.p[(1, 1)], 0.04);
        assert!((j.p[(2, 2)] - 0.1 * 0.2 / 0.3).abs() < 1e-15);
    }

    #[test]
    fn reset_keeps_params() {
        let params = KalmanParams {
            reinit_after: 5,
            ..KalmanParams::default()
        };
        let mut f = KalmanFilter::new(params).unwrap();
        f.update(0.0, &Measurement::temperature_only(290.0))
            .unwrap();
        f.reset();
        assert_eq!(f, KalmanFilter::new(params).unwrap());
    }
}
