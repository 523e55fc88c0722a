//! Clock outputs: extremum detection, circadian time and phase, period, KOA and the PWM mapping.
//!
//! Conventions: CT 12 is the peak of total KaiC phosphorylation (T + D + S)/C_tot; CT advances
//! at 24/period per hour; phase = CT/24. KOA is the S431-phosphorylated fraction (S + D)/C_tot
//! normalised to 0–1 over the minimum and maximum of the last full cycle (peak to peak).

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::integrator::{hermite_extrema, hermite_slope, hermite_value, Step};
use crate::model::KaiParams;

/// A local extremum of a scalar signal found inside one integration step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extremum {
    /// Time (h).
    pub t: f64,
    /// Signal value there.
    pub value: f64,
    /// Maximum (true) or minimum (false).
    pub is_max: bool,
}

/// Extrema of `w·y` inside `step` (excluding its start, including its end), in time order.
pub fn extrema_in_step(step: &Step<'_, 3>, w: &[f64; 3]) -> impl Iterator<Item = Extremum> {
    let (p0, p1, d0, d1) = step.projected(w);
    let (t0, h) = (step.t0, step.t1 - step.t0);
    hermite_extrema(p0, p1, d0, d1).map(move |th| {
        // Second derivative of the cubic decides the kind.
        let (a, b, _) = hermite_slope(p0, p1, d0, d1);
        Extremum {
            t: t0 + th * h,
            value: hermite_value(p0, p1, d0, d1, th),
            is_max: 2.0 * a * th + b < 0.0,
        }
    })
}

/// Tracks cycles of a clock from its integration steps: peaks of total phosphorylation (CT 12,
/// period), and the S431 fraction's range per cycle (KOA normalisation).
///
/// Small and fixed-size so it can live in per-node state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CycleTracker {
    /// Weights giving total phosphorylation from `[T, D, S]`.
    w_total: [f64; 3],
    /// Weights giving the S431 fraction from `[T, D, S]`.
    w_s431: [f64; 3],
    /// Minimum rise from the last trough for a maximum to count as a cycle peak: the clock's
    /// own extrema are tens of percent apart, anything smaller is numerical ripple or a
    /// damped-out clock.
    min_prominence: f64,
    last_trough: Option<f64>,
    last_peak_t: Option<f64>,
    peaks_seen: u64,
    intervals: [f64; 3],
    n_intervals: usize,
    /// Period used before two peaks have been seen.
    fallback_period: f64,
    /// CT anchor: CT(t) = anchor_ct + 24 (t − anchor_t)/period.
    anchor_t: f64,
    anchor_ct: f64,
    /// Running S431 range of the cycle in progress.
    cur_min: f64,
    cur_max: f64,
    /// S431 range of the last full cycle (or the reference cycle's until one is complete).
    range: (f64, f64),
}

impl CycleTracker {
    /// Starts tracking at time `t0` (h) with circadian time `ct0`, a period to assume until
    /// peaks are seen, and the S431 range to normalise KOA with until a full cycle is seen.
    pub fn new(
        params: &KaiParams,
        t0: f64,
        ct0: f64,
        fallback_period: f64,
        s431_range: (f64, f64),
        y0: &[f64; 3],
    ) -> Self {
        let c = 1.0 / params.c_total;
        let s431_now = c * (y0[1] + y0[2]);
        Self {
            w_total: [c, c, c],
            w_s431: [0.0, c, c],
            min_prominence: 0.005,
            // The starting value acts as a trough, so a first peak that rises enough counts.
            last_trough: Some(c * (y0[0] + y0[1] + y0[2])),
            last_peak_t: None,
            peaks_seen: 0,
            intervals: [0.0; 3],
            n_intervals: 0,
            fallback_period,
            anchor_t: t0,
            anchor_ct: ct0.rem_euclid(24.0),
            cur_min: s431_now,
            cur_max: s431_now,
            range: s431_range,
        }
    }

    /// Feeds one accepted step; returns the cycle peaks (CT 12 events) found in it.
    pub fn observe(&mut self, step: &Step<'_, 3>) -> Option<f64> {
        let mut peak = None;
        for e in extrema_in_step(step, &self.w_s431) {
            self.cur_min = self.cur_min.min(e.value);
            self.cur_max = self.cur_max.max(e.value);
        }
        let s1 = dot(&self.w_s431, step.y1);
        self.cur_min = self.cur_min.min(s1);
        self.cur_max = self.cur_max.max(s1);
        for e in extrema_in_step(step, &self.w_total) {
            if !e.is_max {
                self.last_trough = Some(self.last_trough.map_or(e.value, |v| v.min(e.value)));
                continue;
            }
            let prominent = self
                .last_trough
                .is_some_and(|tr| e.value - tr >= self.min_prominence);
            if !prominent {
                continue;
            }
            self.last_trough = None;
            if let Some(prev) = self.last_peak_t {
                let iv = e.t - prev;
                self.intervals.rotate_right(1);
                self.intervals[0] = iv;
                self.n_intervals = (self.n_intervals + 1).min(3);
                // A full cycle (peak to peak) has been seen: its range normalises KOA next.
                if self.cur_max > self.cur_min {
                    self.range = (self.cur_min, self.cur_max);
                }
            }
            let s_at_peak = self.s431_at(step, e.t);
            self.cur_min = s_at_peak;
            self.cur_max = s_at_peak;
            self.last_peak_t = Some(e.t);
            self.peaks_seen += 1;
            self.anchor_t = e.t;
            self.anchor_ct = 12.0;
            peak = Some(e.t);
        }
        peak
    }

    fn s431_at(&self, step: &Step<'_, 3>, t: f64) -> f64 {
        let th = (t - step.t0) / (step.t1 - step.t0);
        step.hermite(&self.w_s431, th)
    }

    /// Period estimate (h): mean of the last (up to three) peak-to-peak intervals.
    pub fn period_hours(&self) -> f64 {
        if self.n_intervals == 0 {
            self.fallback_period
        } else {
            self.intervals[..self.n_intervals].iter().sum::<f64>() / self.n_intervals as f64
        }
    }

    /// Circadian time in [0, 24) at `t`.
    pub fn circadian_time(&self, t: f64) -> f64 {
        let ct =
            (self.anchor_ct + 24.0 * (t - self.anchor_t) / self.period_hours()).rem_euclid(24.0);
        // rem_euclid can return 24.0 for tiny negative inputs.
        if ct >= 24.0 {
            0.0
        } else {
            ct
        }
    }

    /// KOA in [0, 1] for the raw S431 fraction.
    pub fn koa(&self, s431: f64) -> f64 {
        let (lo, hi) = self.range;
        if hi - lo <= 1e-12 {
            return 0.5;
        }
        ((s431 - lo) / (hi - lo)).clamp(0.0, 1.0)
    }

    /// The S431 range KOA is normalised over.
    pub fn koa_range(&self) -> (f64, f64) {
        self.range
    }

    /// Time of the last cycle peak, if any.
    pub fn last_peak(&self) -> Option<f64> {
        self.last_peak_t
    }

    /// Number of cycle peaks seen.
    pub fn peaks_seen(&self) -> u64 {
        self.peaks_seen
    }

    /// Re-anchors CT after a reset or phase jump.
    pub fn reanchor(&mut self, t: f64, ct: f64, y: &[f64; 3]) {
        let s431_now = dot(&self.w_s431, y);
        self.anchor_t = t;
        self.anchor_ct = ct.rem_euclid(24.0);
        self.last_peak_t = None;
        self.last_trough = Some(dot(&self.w_total, y));
        self.n_intervals = 0;
        self.cur_min = s431_now;
        self.cur_max = s431_now;
    }
}

#[inline]
fn dot(w: &[f64; 3], y: &[f64; 3]) -> f64 {
    w[0] * y[0] + w[1] * y[1] + w[2] * y[2]
}

/// Shape of the KOA → PWM curve (defined with the control commands that set it).
pub use kaiabc_schemas::MappingFunction;

/// The API's output mapping: KOA (0–1) to an 8-bit PWM duty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputMapping {
    /// Curve shape.
    pub mapping_function: MappingFunction,
    /// Duty at or below the low threshold.
    pub pwm_min: u8,
    /// Duty at or above the high threshold.
    pub pwm_max: u8,
    /// KOA at and below which the output is `pwm_min`.
    pub koa_threshold_low: f64,
    /// KOA at and above which the output is `pwm_max`.
    pub koa_threshold_high: f64,
    /// Swap the ends (high KOA → low duty), e.g. for a light that should be off at subjective day.
    pub invert: bool,
    /// Steepness of the sigmoid (logistic gain over the unit interval).
    pub sigmoid_gain: f64,
}

impl Default for OutputMapping {
    /// Linear over the full range: KOA 0 → 0, 0.5 → 128, 1.0 → 255.
    fn default() -> Self {
        Self {
            mapping_function: MappingFunction::Linear,
            pwm_min: 0,
            pwm_max: 255,
            koa_threshold_low: 0.0,
            koa_threshold_high: 1.0,
            invert: false,
            sigmoid_gain: 10.0,
        }
    }
}

impl OutputMapping {
    /// Checks thresholds are ordered in [0, 1], `pwm_min <= pwm_max`, gain positive.
    pub fn validate(&self) -> Result<(), ModelError> {
        let ok = self.koa_threshold_low.is_finite()
            && self.koa_threshold_high.is_finite()
            && 0.0 <= self.koa_threshold_low
            && self.koa_threshold_low < self.koa_threshold_high
            && self.koa_threshold_high <= 1.0
            && self.pwm_min <= self.pwm_max
            && self.sigmoid_gain.is_finite()
            && self.sigmoid_gain > 0.0;
        if ok {
            Ok(())
        } else {
            Err(ModelError::InvalidParameter {
                name: "output_mapping".into(),
                reason:
                    "need 0 <= koa_threshold_low < koa_threshold_high <= 1, pwm_min <= pwm_max, \
                         sigmoid_gain > 0"
                        .into(),
            })
        }
    }

    /// The duty (0–255) for a KOA value; NaN KOA maps to `pwm_min` so a node never gets garbage.
    pub fn pwm(&self, koa: f64) -> u8 {
        if koa.is_nan() {
            return self.pwm_min;
        }
        let span = self.koa_threshold_high - self.koa_threshold_low;
        let mut x = ((koa - self.koa_threshold_low) / span).clamp(0.0, 1.0);
        if self.mapping_function == MappingFunction::Sigmoid {
            // Logistic rescaled so that 0 → 0, ½ → ½, 1 → 1 (written around ½ so the midpoint
            // is exact: s(1) − s(0) = 1 − 2 s(0) by symmetry).
            let g = self.sigmoid_gain;
            let s = |v: f64| 1.0 / (1.0 + (-g * (v - 0.5)).exp());
            x = (0.5 + (s(x) - 0.5) / (1.0 - 2.0 * s(0.0))).clamp(0.0, 1.0);
        }
        if self.invert {
            x = 1.0 - x;
        }
        let lo = f64::from(self.pwm_min);
        let hi = f64::from(self.pwm_max);
        (lo + (hi - lo) * x).round().clamp(lo, hi) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mapping_matches_the_api_examples() {
        // API spec, PUT /output/mapping test_values: koa 0.0 → 0, 0.5 → 128, 1.0 → 255.
        let m = OutputMapping::default();
        assert_eq!(m.pwm(0.0), 0);
        assert_eq!(m.pwm(0.5), 128);
        assert_eq!(m.pwm(1.0), 255);
        assert_eq!(m.pwm(f64::NAN), 0);
        assert_eq!(m.pwm(7.0), 255);
    }

    #[test]
    fn thresholds_invert_and_sigmoid_behave() {
        let m = OutputMapping {
            koa_threshold_low: 0.1,
            koa_threshold_high: 0.9,
            pwm_min: 20,
            pwm_max: 220,
            ..Default::default()
        };
        assert_eq!(m.pwm(0.05), 20);
        assert_eq!(m.pwm(0.95), 220);
        assert_eq!(m.pwm(0.5), 120);
        let inv = OutputMapping { invert: true, ..m };
        assert_eq!(inv.pwm(0.05), 220);
        let sig = OutputMapping {
            mapping_function: MappingFunction::Sigmoid,
            ..Default::default()
        };
        assert_eq!(sig.pwm(0.0), 0);
        assert_eq!(sig.pwm(0.5), 128);
        assert_eq!(sig.pwm(1.0), 255);
        // Steeper than linear in the middle, flatter at the ends.
        assert!(sig.pwm(0.6) > OutputMapping::default().pwm(0.6));
        assert!(sig.pwm(0.1) < OutputMapping::default().pwm(0.1));
        assert!(OutputMapping {
            koa_threshold_low: 0.9,
            koa_threshold_high: 0.1,
            ..m
        }
        .validate()
        .is_err());
    }
}
