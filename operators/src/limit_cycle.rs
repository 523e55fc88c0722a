//! The free-running limit cycle at a constant temperature: period, a phase-indexed orbit, and the
//! maps between state and circadian time that resets, initial phases and the PRC need.

use serde::{Deserialize, Serialize};

use crate::error::{ClockError, ModelError};
use crate::etf::Etf;
use crate::integrator::{Dopri5, IntegratorConfig};
use crate::model::{KaiParams, KaiState};
use crate::outputs::CycleTracker;
use crate::system::KaiSystem;
use crate::temperature::Constant;

/// A point inside the oscillatory domain of the default parameters (µM, [T, D, S]); used only
/// to start the search for the limit cycle. Scaled with C_tot for other totals.
pub const SEED_STATE: [f64; 3] = [0.68, 1.36, 0.34];

/// Samples per cycle kept for the phase maps (one every ~5 min of a 20.7 h cycle).
pub const SAMPLES: usize = 256;

/// One orbit of the limit cycle starting at the peak of total phosphorylation (CT 12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitCycle {
    /// Free-running period (h) at `temperature_k`.
    pub period_hours: f64,
    /// The constant temperature it was computed at (K).
    pub temperature_k: f64,
    /// `SAMPLES` states equally spaced in time; sample `i` is at CT `12 + 24 i / SAMPLES`.
    pub samples: Vec<[f64; 3]>,
    /// Minimum and maximum of the S431 fraction (S + D)/C_tot over the cycle.
    pub s431_range: (f64, f64),
    /// Minimum and maximum of the total phosphorylated fraction over the cycle.
    pub total_range: (f64, f64),
    c_total: f64,
}

impl LimitCycle {
    /// Finds the limit cycle by integrating from [`SEED_STATE`] until the peak-to-peak interval
    /// settles (at most 120 cycles), then records one orbit.
    ///
    /// Fails with `NO_OSCILLATION` when the parameters damp out (e.g. A_tot = 2 µM).
    pub fn compute(
        params: &KaiParams,
        etf: &Etf,
        temperature_k: f64,
        cfg: &IntegratorConfig,
    ) -> Result<Self, ClockError> {
        params.validate()?;
        etf.validate()?;
        let scale = params.c_total / 3.4;
        let y0 = SEED_STATE.map(|v| v * scale);
        // Peak times come from cubic Hermite interpolation inside steps, whose error grows as
        // h⁴: cap the step so the period is right to ~1e-6 h even at loose tolerances.
        let cfg = &IntegratorConfig {
            max_step: if cfg.min_step < 0.05 {
                cfg.max_step.min(0.1)
            } else {
                cfg.max_step
            },
            ..*cfg
        };
        let mut ig = Dopri5::new(0.0, y0, *cfg)?;
        let mut sys = KaiSystem::new(params, etf, Constant(temperature_k));
        let mut tracker = CycleTracker::new(params, 0.0, 0.0, f64::NAN, (0.0, 1.0), &y0);
        let mut peaks: Vec<f64> = Vec::new();
        let chunk = 6.0;
        let mut t = 0.0;
        let settled = |p: &[f64]| {
            let n = p.len();
            // Convergence onto the cycle can be slow (a Floquet multiplier near 1 away from
            // 30 °C), so ask for three consecutive intervals agreeing to 1e-9 relative.
            n >= 12 && {
                let a = p[n - 1] - p[n - 2];
                let b = p[n - 2] - p[n - 3];
                let c = p[n - 3] - p[n - 4];
                (a - b).abs() < 1e-9 * a && (b - c).abs() < 1e-9 * a
            }
        };
        // Rates set the time scale: allow ~150 cycles of the slowest rate factor before giving up.
        let (g0, ga) = etf.factors(temperature_k);
        let horizon = 150.0 * 24.0 / g0.min(ga).min(1.0);
        while !settled(&peaks) && peaks.len() < 120 && t < horizon {
            t += chunk;
            ig.advance_to(&mut sys, t, |s| {
                if let Some(p) = tracker.observe(s) {
                    peaks.push(p);
                }
            })?;
        }
        let n = peaks.len();
        let amplitude_ok = n >= 12;
        if !amplitude_ok {
            return Err(ModelError::NoOscillation {
                reason: format!(
                    "the free-running clock found {n} peaks of total phosphorylation and did not settle \
                     on a limit cycle at {temperature_k} K; parameters outside the oscillatory domain"
                ),
            }
            .into());
        }
        let k = (n - 2).min(10);
        let period = (peaks[n - 1] - peaks[n - 1 - k]) / k as f64;
        // Land exactly on the next peak, then sample one orbit with exact stops.
        let mut next_peak = peaks[n - 1] + period;
        while next_peak <= ig.t() {
            next_peak += period;
        }
        ig.advance_to(&mut sys, next_peak, |_| {})?;
        let t0 = ig.t();
        let mut samples = Vec::with_capacity(SAMPLES);
        let (mut s_lo, mut s_hi, mut p_lo, mut p_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        let c = params.c_total;
        for i in 0..SAMPLES {
            if i > 0 {
                ig.advance_to(&mut sys, t0 + period * i as f64 / SAMPLES as f64, |_| {})?;
            }
            let y = *ig.y();
            let (s431, total) = ((y[1] + y[2]) / c, (y[0] + y[1] + y[2]) / c);
            s_lo = s_lo.min(s431);
            s_hi = s_hi.max(s431);
            p_lo = p_lo.min(total);
            p_hi = p_hi.max(total);
            samples.push(y);
        }
        Ok(Self {
            period_hours: period,
            temperature_k,
            samples,
            s431_range: (s_lo, s_hi),
            total_range: (p_lo, p_hi),
            c_total: c,
        })
    }

    /// The state at circadian time `ct` (linear interpolation between samples; the orbit is
    /// sampled every ~5 min so the error is far below any biological meaning).
    pub fn state_at_ct(&self, ct: f64) -> KaiState {
        let x = ((ct - 12.0).rem_euclid(24.0) / 24.0) * SAMPLES as f64;
        let i = (x.floor() as usize) % SAMPLES;
        let j = (i + 1) % SAMPLES;
        let w = x - x.floor();
        let (a, b) = (self.samples[i], self.samples[j]);
        KaiState::from_array(std::array::from_fn(|k| a[k] + w * (b[k] - a[k])))
    }

    /// The circadian time of the orbit point nearest to `state` (its phase if it lies on or near
    /// the cycle; an approximation of the asymptotic phase otherwise).
    pub fn ct_of_state(&self, state: &KaiState) -> f64 {
        let y = state.to_array();
        let d2 = |s: &[f64; 3]| (0..3).map(|k| (s[k] - y[k]).powi(2)).sum::<f64>();
        let (best, _) = self
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| (i, d2(s)))
            .fold((0, f64::MAX), |acc, x| if x.1 < acc.1 { x } else { acc });
        // Refine on the neighbouring segments by projecting onto them.
        let mut best_x = best as f64;
        let mut best_d = f64::MAX;
        for (i, j) in [
            ((best + SAMPLES - 1) % SAMPLES, best),
            (best, (best + 1) % SAMPLES),
        ] {
            let (a, b) = (self.samples[i], self.samples[j]);
            let ab: [f64; 3] = std::array::from_fn(|k| b[k] - a[k]);
            let ay: [f64; 3] = std::array::from_fn(|k| y[k] - a[k]);
            let len2: f64 = ab.iter().map(|v| v * v).sum();
            let w = if len2 > 0.0 {
                (ab.iter().zip(&ay).map(|(p, q)| p * q).sum::<f64>() / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let p: [f64; 3] = std::array::from_fn(|k| a[k] + w * ab[k]);
            let d = d2(&p);
            if d < best_d {
                best_d = d;
                best_x = i as f64 + w;
            }
        }
        (12.0 + 24.0 * best_x / SAMPLES as f64).rem_euclid(24.0) % 24.0
    }

    /// KaiC total the cycle was computed for (µM).
    pub fn c_total(&self) -> f64 {
        self.c_total
    }
}
