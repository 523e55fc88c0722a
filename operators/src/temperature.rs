//! Temperature inputs of the model: constant, one linear segment, or piecewise-linear readings.
//!
//! Between two readings the temperature is interpolated linearly, which is the least-assuming
//! continuous input and keeps the right-hand side continuous inside every integration step when
//! steps stop exactly at readings.

use std::ops::RangeInclusive;

use crate::error::ModelError;

/// Temperatures the model accepts (K). Anything outside is a unit mistake (°C given as K) or a
/// broken sensor, not weather.
pub const VALID_KELVIN: RangeInclusive<f64> = 150.0..=400.0;

/// Checks a temperature (K) against [`VALID_KELVIN`]; `name` is the field the error names.
pub fn check_kelvin(name: &str, k: f64) -> Result<(), ModelError> {
    if k.is_finite() && VALID_KELVIN.contains(&k) {
        Ok(())
    } else {
        Err(ModelError::InvalidParameter {
            name: name.into(),
            reason: format!("{k} K is outside 150–400 K (°C given as kelvin?)"),
        })
    }
}

/// Checks one point `(t, k)` of a temperature history that follows a reading at `prev_t`:
/// a finite time after the previous one, a temperature in [`VALID_KELVIN`]. The error names
/// the offending field (`t_hours` or `temperature_kelvin`).
pub fn check_history_point(prev_t: Option<f64>, t: f64, k: f64) -> Result<(), ModelError> {
    let time = |reason: String| ModelError::InvalidParameter {
        name: "t_hours".into(),
        reason,
    };
    if !t.is_finite() {
        return Err(time("not a finite time".into()));
    }
    if let Some(prev) = prev_t.filter(|&prev| t <= prev) {
        return Err(time(format!(
            "{t} is not after the previous reading's {prev}"
        )));
    }
    check_kelvin("temperature_kelvin", k)
}

/// A temperature (K) as a function of model time (h).
pub trait TemperatureSource {
    /// The temperature at `t_hours`.
    fn kelvin_at(&mut self, t_hours: f64) -> f64;

    /// `Some(k)` if the temperature is `k` at all times, so the rate factors can be computed
    /// once instead of per evaluation.
    fn constant(&self) -> Option<f64> {
        None
    }
}

impl<F: FnMut(f64) -> f64> TemperatureSource for F {
    #[inline]
    fn kelvin_at(&mut self, t_hours: f64) -> f64 {
        self(t_hours)
    }
}

/// A constant temperature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constant(pub f64);

impl TemperatureSource for Constant {
    #[inline]
    fn kelvin_at(&mut self, _t: f64) -> f64 {
        self.0
    }

    fn constant(&self) -> Option<f64> {
        Some(self.0)
    }
}

/// A straight line through `(t0, k0)` and `(t1, k1)`, constant outside: the temperature between
/// the last applied reading and the next one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    t0: f64,
    k0: f64,
    slope: f64,
    t1: f64,
    k1: f64,
}

impl Segment {
    /// Requires `t1 >= t0`; with `t1 == t0` the segment is the constant `k1`.
    pub fn new(t0: f64, k0: f64, t1: f64, k1: f64) -> Self {
        let slope = if t1 > t0 { (k1 - k0) / (t1 - t0) } else { 0.0 };
        Self {
            t0,
            k0,
            slope,
            t1,
            k1,
        }
    }
}

impl TemperatureSource for Segment {
    fn constant(&self) -> Option<f64> {
        (self.k0 == self.k1).then_some(self.k0)
    }

    #[inline]
    fn kelvin_at(&mut self, t: f64) -> f64 {
        if t <= self.t0 {
            self.k0
        } else if t >= self.t1 {
            self.k1
        } else {
            self.k0 + self.slope * (t - self.t0)
        }
    }
}

/// Piecewise-linear temperature through readings `(t_hours, kelvin)`, constant beyond the ends.
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseLinear {
    t: Vec<f64>,
    k: Vec<f64>,
    /// Index of the segment used last: queries move forward in time, so the search is O(1)
    /// amortised.
    cursor: usize,
}

impl PiecewiseLinear {
    /// Builds the profile. Times must be finite and strictly increasing, temperatures finite and
    /// within 150–400 K (anything outside is a unit mistake, e.g. °C given as K).
    pub fn new(points: impl IntoIterator<Item = (f64, f64)>) -> Result<Self, ModelError> {
        let (t, k): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
        if t.is_empty() {
            return Err(ModelError::InvalidParameter {
                name: "temperature".into(),
                reason: "no temperature points".into(),
            });
        }
        for i in 0..t.len() {
            let prev = i.checked_sub(1).map(|j| t[j]);
            check_history_point(prev, t[i], k[i]).map_err(|e| match e {
                ModelError::InvalidParameter { name, reason } => ModelError::InvalidParameter {
                    name,
                    reason: format!("point {}: {reason}", i + 1),
                },
                other => other,
            })?;
        }
        Ok(Self { t, k, cursor: 0 })
    }

    /// The reading times (h), which integrations should use as stops.
    pub fn times(&self) -> &[f64] {
        &self.t
    }
}

impl TemperatureSource for PiecewiseLinear {
    fn kelvin_at(&mut self, t: f64) -> f64 {
        let n = self.t.len();
        if t <= self.t[0] {
            return self.k[0];
        }
        if t >= self.t[n - 1] {
            return self.k[n - 1];
        }
        let mut i = self.cursor.min(n - 2);
        while i > 0 && t < self.t[i] {
            i -= 1;
        }
        while t > self.t[i + 1] {
            i += 1;
        }
        self.cursor = i;
        let w = (t - self.t[i]) / (self.t[i + 1] - self.t[i]);
        self.k[i] + w * (self.k[i + 1] - self.k[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_and_clamps_in_any_query_order() {
        let mut p = PiecewiseLinear::new([(0.0, 300.0), (1.0, 302.0), (3.0, 298.0)]).unwrap();
        for (t, want) in [
            (2.0, 300.0),
            (0.5, 301.0),
            (-1.0, 300.0),
            (10.0, 298.0),
            (1.0, 302.0),
            (2.5, 299.0),
        ] {
            assert!((p.kelvin_at(t) - want).abs() < 1e-12, "t={t}");
        }
    }

    #[test]
    fn rejects_unsorted_and_unphysical_points() {
        assert!(PiecewiseLinear::new([(0.0, 300.0), (0.0, 301.0)]).is_err());
        assert!(PiecewiseLinear::new([(0.0, 30.0)]).is_err());
        assert!(PiecewiseLinear::new(std::iter::empty()).is_err());
    }

    #[test]
    fn segment_is_linear_between_its_ends() {
        let mut s = Segment::new(1.0, 300.0, 2.0, 310.0);
        assert_eq!(s.kelvin_at(1.5), 305.0);
        assert_eq!(s.kelvin_at(0.0), 300.0);
        assert_eq!(s.kelvin_at(3.0), 310.0);
    }
}
