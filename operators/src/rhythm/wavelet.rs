//! Continuous wavelet transform with the Morlet wavelet, after Torrence & Compo (1998, Bull.
//! Amer. Meteor. Soc. 79:61): scales, wavelet power, the cone of influence, significance against
//! a red-noise (AR(1)) background and the global wavelet spectrum, for rhythms whose period or
//! amplitude changes over the record (a periodogram averages such changes away).
//!
//! The arithmetic follows pycwt (the Python implementation of that paper), so the two agree to
//! rounding (`operators/tests/wavelet_reference.rs` checks it):
//! - the series is zero-padded to the next power of two and transformed once; each scale `s`
//!   multiplies the transform by `√(2πs/δt)·ψ̂*(sω_k)` with the Morlet
//!   `ψ̂(ω) = π^(−1/4)·exp(−(ω − ω₀)²/2)` (pycwt, like T&C's code, evaluates it at negative
//!   frequencies too, where it is below `e^−18`), and the inverse FFT gives `W_n(s)`;
//! - scales are `s_j = s₀·2^(j·δj)`, `j = 0…J`; the Fourier period of scale `s` is
//!   `λs`, `λ = 4π/(ω₀ + √(2 + ω₀²))` (T&C Table 1);
//! - the cone of influence at sample `n` of `N` is the period whose e-folding time `√2·s`
//!   reaches the nearer end: `λ/√2 · δt · (N/2 − |n − (N − 1)/2|)`;
//! - the red-noise background at scale `s` is T&C eq. 16,
//!   `P = (1 − α²)/(1 + α² − 2α cos(2πδt/(λs)))`, in units of the series' variance; the 95 %
//!   level of local power is `P·χ²₂(0.95)/2` (eq. 18), and of the global spectrum
//!   `P·χ²_ν(0.95)/ν` with `ν = 2√(1 + (n_a δt/(γ s))²)`, `γ = 2.32` (eq. 23);
//! - `α` is the lag-1 autocorrelation of Allen & Smith (1996, J. Climate 9:3373), bias-corrected
//!   as in Grinsted's toolbox ([`ar1`]).
//!
//! Sensor data are not evenly sampled. [`RegularGrid`] states what is done: readings are
//! averaged into bins of width `δt` centred on `t₀ + kδt`; an empty bin is a gap, filled by
//! linear interpolation between its neighbours so the FFT sees a regular series, and flagged, so
//! that its power is reported as missing and left out of the global spectrum.

use std::f64::consts::{PI, SQRT_2, TAU};

use rustfft::num_complex::Complex64;
use rustfft::FftPlanner;
use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::{RhythmError, MIN_POINTS};

/// The Morlet wavelet `ψ(η) = π^(−1/4)·e^(iω₀η)·e^(−η²/2)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Morlet {
    /// Non-dimensional frequency ω₀; 6 satisfies admissibility (T&C section 3b).
    pub omega0: f64,
}

impl Default for Morlet {
    fn default() -> Self {
        Self { omega0: 6.0 }
    }
}

impl Morlet {
    /// Degrees of freedom of one wavelet power value (real and imaginary part: χ²₂).
    pub const DOF_MIN: f64 = 2.0;
    /// Decorrelation factor for time averaging, γ (T&C Table 2, ω₀ = 6).
    pub const GAMMA: f64 = 2.32;

    /// Fourier period of scale 1, `λ = 4π/(ω₀ + √(2 + ω₀²))` (≈ 1.033 for ω₀ = 6).
    pub fn fourier_factor(&self) -> f64 {
        4.0 * PI / (self.omega0 + (2.0 + self.omega0 * self.omega0).sqrt())
    }

    /// `ψ̂(ω)`, the Fourier transform of the wavelet at angular frequency `ω` (real-valued).
    fn psi_ft(&self, omega: f64) -> f64 {
        PI.powf(-0.25) * (-0.5 * (omega - self.omega0).powi(2)).exp()
    }
}

/// The scales of a transform: `s_j = s₀·2^(j·δj)` for `j = 0…J`, sampling interval δt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scales {
    /// Sampling interval δt (hours).
    pub dt: f64,
    /// Spacing of the scales in octaves, δj (1/12: twelve scales per doubling).
    pub dj: f64,
    /// Smallest scale s₀ (hours).
    pub s0: f64,
    /// Index of the largest scale, J (J + 1 scales in all).
    pub j: usize,
}

impl Scales {
    /// The scales whose Fourier periods run from `min_period` up to at most `max_period`.
    pub fn for_periods(
        mother: &Morlet,
        dt: f64,
        dj: f64,
        min_period: f64,
        max_period: f64,
    ) -> Result<Self, RhythmError> {
        if !(min_period.is_finite()
            && max_period.is_finite()
            && min_period > 0.0
            && min_period < max_period)
        {
            return Err(RhythmError::InvalidPeriodRange {
                min: min_period,
                max: max_period,
            });
        }
        for (name, value) in [("dt_hours", dt), ("dj", dj)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(RhythmError::InvalidParameter { name, value });
            }
        }
        // A period shorter than two samples cannot be resolved (Nyquist).
        if min_period < 2.0 * dt * (1.0 - 1e-9) {
            return Err(RhythmError::InvalidParameter {
                name: "min_period_hours",
                value: min_period,
            });
        }
        // The small slack keeps a range that is an exact number of steps from losing its top.
        let j = ((max_period / min_period).log2() / dj + 1e-9).floor() as usize;
        if j > MAX_SCALES {
            return Err(RhythmError::GridTooLarge {
                len: j + 1,
                max: MAX_SCALES + 1,
            });
        }
        Ok(Self {
            dt,
            dj,
            s0: min_period / mother.fourier_factor(),
            j,
        })
    }

    /// The scales `s₀·2^(j·δj)`.
    pub fn values(&self) -> Vec<f64> {
        (0..=self.j)
            .map(|j| self.s0 * 2f64.powf(j as f64 * self.dj))
            .collect()
    }
}

/// Largest scale index accepted (a 4 h … 48 h search at δj = 1/12 needs 43).
pub const MAX_SCALES: usize = 1024;

/// Longest regular series transformed: about two years of 1-minute bins.
pub const MAX_SAMPLES: usize = 1 << 20;

/// Most transform cells (scales × samples) computed at once: the complex transform and the
/// power take 24 bytes a cell, so this bounds one analysis at about 800 MB.
pub const MAX_CELLS: usize = 1 << 25;

/// A wavelet transform `W_n(s)`, one row per scale.
#[derive(Clone, Debug)]
pub struct Transform {
    /// The scales `s_j`.
    pub scales: Vec<f64>,
    /// Their Fourier periods `λ·s_j`.
    pub periods: Vec<f64>,
    /// Cone of influence per sample: the longest period unaffected by the ends.
    pub coi: Vec<f64>,
    /// Samples per row.
    pub n: usize,
    /// `W` row by row: `wave[j * n + t]`.
    pub wave: Vec<Complex64>,
}

impl Transform {
    /// Row `j` of the transform.
    pub fn row(&self, j: usize) -> &[Complex64] {
        &self.wave[j * self.n..(j + 1) * self.n]
    }
}

/// The continuous wavelet transform of the regularly sampled `y` at `scales`.
///
/// `y` is used as given (callers normalise it); the transform is linear in it.
pub fn cwt(y: &[f64], scales: &Scales, mother: &Morlet) -> Transform {
    let n0 = y.len();
    let n = n0.max(1).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let mut spectrum: Vec<Complex64> = y
        .iter()
        .map(|&v| Complex64::new(v, 0.0))
        .chain(std::iter::repeat(Complex64::new(0.0, 0.0)))
        .take(n)
        .collect();
    forward.process(&mut spectrum);
    // Angular frequencies of the FFT bins, numpy's fftfreq order: 0, positive, then negative.
    let omega: Vec<f64> = (0..n)
        .map(|k| {
            let k = if k < n.div_ceil(2) {
                k as f64
            } else {
                k as f64 - n as f64
            };
            TAU * k / (n as f64 * scales.dt)
        })
        .collect();
    let sj = scales.values();
    let lambda = mother.fourier_factor();
    let mut wave = Vec::with_capacity(sj.len() * n0);
    let mut row = vec![Complex64::new(0.0, 0.0); n];
    for &s in &sj {
        // √(s·ω₁·N) = √(2πs/δt): the factor that gives every scale unit energy.
        let norm = (s * TAU / scales.dt).sqrt();
        for ((out, &x), &w) in row.iter_mut().zip(&spectrum).zip(&omega) {
            *out = x * (norm * mother.psi_ft(s * w));
        }
        inverse.process(&mut row);
        let scale = 1.0 / n as f64;
        wave.extend(row[..n0].iter().map(|c| c * scale));
    }
    let coi = (0..n0)
        .map(|i| {
            let half = n0 as f64 / 2.0 - (i as f64 - (n0 as f64 - 1.0) / 2.0).abs();
            lambda / SQRT_2 * scales.dt * half
        })
        .collect();
    Transform {
        periods: sj.iter().map(|s| lambda * s).collect(),
        scales: sj,
        coi,
        n: n0,
        wave,
    }
}

/// Lag-1 autocorrelation of `y` for an AR(1) red-noise model, bias-corrected for the finite
/// series (Allen & Smith 1996, with Grinsted's closed form of their correction, as in pycwt's
/// `ar1`). `None` where the correction has no solution (a short series or a strong trend).
pub fn ar1(y: &[f64]) -> Option<f64> {
    let n = y.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mean = y.iter().sum::<f64>() / nf;
    let c0 = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / nf;
    let c1 = y
        .windows(2)
        .map(|w| (w[0] - mean) * (w[1] - mean))
        .sum::<f64>()
        / (nf - 1.0);
    let b = -c1 * nf - c0 * nf * nf - 2.0 * c0 + 2.0 * c1 - c1 * nf * nf + c0 * nf;
    let a = c0 * nf * nf;
    let c = nf * (c0 + c1 * nf - c1);
    let d = b * b - 4.0 * a * c;
    (d > 0.0 && a > 0.0).then(|| (-b - d.sqrt()) / (2.0 * a))
}

/// The AR(1) background spectrum at `period` (T&C eq. 16), for unit variance.
pub fn red_noise(alpha: f64, dt: f64, period: f64) -> f64 {
    (1.0 - alpha * alpha) / (1.0 + alpha * alpha - 2.0 * alpha * (TAU * dt / period).cos())
}

/// The `level` quantile of local wavelet power under red noise of unit variance, per period
/// (T&C eq. 18).
pub fn local_significance(alpha: f64, dt: f64, periods: &[f64], level: f64) -> Vec<f64> {
    let dof = Morlet::DOF_MIN;
    let chi = chi2_quantile(dof, level) / dof;
    periods
        .iter()
        .map(|&p| red_noise(alpha, dt, p) * chi)
        .collect()
}

/// The `level` quantile of the global (time-averaged over `averaged` samples) wavelet power
/// under red noise of unit variance, per scale (T&C eq. 23 for the degrees of freedom).
/// `averaged[j]` is the number of samples averaged at scale `j` (below 1 counts as 1).
pub fn global_significance(
    alpha: f64,
    scales: &Scales,
    transform: &Transform,
    averaged: &[f64],
    level: f64,
) -> Vec<f64> {
    transform
        .scales
        .iter()
        .zip(&transform.periods)
        .zip(averaged)
        .map(|((&s, &p), &na)| {
            let na = na.max(1.0);
            let dof = (Morlet::DOF_MIN
                * (1.0 + (na * scales.dt / Morlet::GAMMA / s).powi(2)).sqrt())
            .max(Morlet::DOF_MIN);
            red_noise(alpha, scales.dt, p) * chi2_quantile(dof, level) / dof
        })
        .collect()
}

fn chi2_quantile(dof: f64, level: f64) -> f64 {
    ChiSquared::new(dof)
        .expect("degrees of freedom are at least 2")
        .inverse_cdf(level)
}

/// A series binned onto a regular time grid.
#[derive(Clone, Debug, PartialEq)]
pub struct RegularGrid {
    /// Centre of the first bin.
    pub t0: f64,
    /// Bin width.
    pub dt: f64,
    /// Bin values: the mean of the readings in the bin, or interpolated where `gap` is set.
    pub values: Vec<f64>,
    /// Bins that held no reading.
    pub gap: Vec<bool>,
    /// Readings used (finite `t` and `y`).
    pub n_points: usize,
    /// Rows skipped because `t` or `y` was not finite.
    pub n_skipped: usize,
}

impl RegularGrid {
    /// Bins the finite rows of `(t, y)` at width `dt`, or at the median spacing of the sorted
    /// times when `dt` is `None`.
    pub fn new(t: &[f64], y: &[f64], dt: Option<f64>) -> Result<Self, RhythmError> {
        let usable = super::usable_rows(t, y)?;
        let mut rows: Vec<(f64, f64)> = usable.t.iter().copied().zip(usable.y).collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (first, last) = (rows[0].0, rows[rows.len() - 1].0);
        if last <= first {
            return Err(RhythmError::ZeroBaseline);
        }
        let dt = match dt {
            Some(dt) if dt.is_finite() && dt > 0.0 => dt,
            Some(dt) => {
                return Err(RhythmError::InvalidParameter {
                    name: "dt_hours",
                    value: dt,
                })
            }
            None => median_spacing(&rows).ok_or(RhythmError::ZeroBaseline)?,
        };
        let bins = ((last - first) / dt).round() as usize + 1;
        if bins > MAX_SAMPLES {
            return Err(RhythmError::GridTooLarge {
                len: bins,
                max: MAX_SAMPLES,
            });
        }
        let mut sum = vec![0.0; bins];
        let mut count = vec![0u32; bins];
        for &(ti, yi) in &rows {
            let k = (((ti - first) / dt).round() as usize).min(bins - 1);
            sum[k] += yi;
            count[k] += 1;
        }
        let gap: Vec<bool> = count.iter().map(|&c| c == 0).collect();
        let mut values: Vec<f64> = sum
            .iter()
            .zip(&count)
            .map(|(&s, &c)| if c > 0 { s / f64::from(c) } else { f64::NAN })
            .collect();
        let filled = bins - gap.iter().filter(|&&g| g).count();
        if filled < MIN_POINTS {
            return Err(RhythmError::TooFewPoints {
                needed: MIN_POINTS,
                got: filled,
            });
        }
        interpolate_gaps(&mut values);
        Ok(Self {
            t0: first,
            dt,
            values,
            gap,
            n_points: rows.len(),
            n_skipped: usable.n_skipped,
        })
    }
}

/// The median of the positive spacings between consecutive (sorted) times.
fn median_spacing(rows: &[(f64, f64)]) -> Option<f64> {
    let mut d: Vec<f64> = rows
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|&d| d > 0.0)
        .collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(d[d.len() / 2])
}

/// Replaces each NaN run by the straight line between its finite neighbours (or the nearest
/// finite value at either end). The first and last bins always hold a reading.
fn interpolate_gaps(values: &mut [f64]) {
    let mut i = 0;
    while i < values.len() {
        if values[i].is_finite() {
            i += 1;
            continue;
        }
        let start = i;
        while i < values.len() && !values[i].is_finite() {
            i += 1;
        }
        let before = start.checked_sub(1).map(|k| values[k]);
        let after = values.get(i).copied();
        for (k, v) in values[start..i].iter_mut().enumerate() {
            *v = match (before, after) {
                (Some(a), Some(b)) => {
                    let f = (k + 1) as f64 / (i - start + 1) as f64;
                    a + (b - a) * f
                }
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => 0.0,
            };
        }
    }
}

/// What to compute: the period range, scale spacing, grid and significance level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WaveletOptions {
    /// Shortest period (hours).
    pub min_period_hours: f64,
    /// Longest period (hours).
    pub max_period_hours: f64,
    /// Scale spacing in octaves.
    pub dj: f64,
    /// Grid step (hours); the median spacing of the readings when `None`.
    pub dt_hours: Option<f64>,
    /// Level of the significance curves (0.95 for the 95 % level).
    pub significance_level: f64,
}

impl Default for WaveletOptions {
    fn default() -> Self {
        Self {
            min_period_hours: 4.0,
            max_period_hours: 48.0,
            dj: 1.0 / 12.0,
            dt_hours: None,
            significance_level: 0.95,
        }
    }
}

/// The wavelet analysis of a series. Power is normalised by the series' variance (T&C Fig. 1),
/// so 1 is the power of white noise and the significance curves share its unit. Non-finite
/// values (gap bins) serialise as `null`.
#[derive(Clone, Debug, Serialize)]
pub struct WaveletSpectrum {
    /// Time of each grid sample (the unit and origin of the input `t`).
    pub times_hours: Vec<f64>,
    /// Grid step δt.
    pub dt_hours: f64,
    /// Fourier period of each scale, shortest first.
    pub periods_hours: Vec<f64>,
    /// The scales (hours).
    pub scales: Vec<f64>,
    /// Cone of influence per grid sample: periods above it are affected by the record's ends.
    pub coi_hours: Vec<f64>,
    /// `|W|²/σ²`, `power[period][time]`; `null` in gap bins.
    pub power: Vec<Vec<f64>>,
    /// Time-averaged power per period (gap bins left out).
    pub global_power: Vec<f64>,
    /// Level that local power exceeds with probability `1 − significance_level` under red
    /// noise, per period.
    pub significance: Vec<f64>,
    /// The same for the global power.
    pub global_significance: Vec<f64>,
    /// Per grid sample, the period of greatest power (`null` in gap bins): the rhythm's
    /// instantaneous period where one dominates.
    pub ridge_period_hours: Vec<f64>,
    /// The lag-1 autocorrelation of the red-noise background.
    pub lag1_autocorrelation: f64,
    /// How `lag1_autocorrelation` was estimated: `allen_smith`, or `lag1` (the plain sample
    /// autocorrelation, clamped at 0) when the bias correction has no solution.
    pub red_noise_estimator: &'static str,
    /// The significance level of the curves.
    pub significance_level: f64,
    /// Mean of the binned series.
    pub mean: f64,
    /// Standard deviation of the binned series (population).
    pub std_dev: f64,
    /// Readings used.
    pub n_points: usize,
    /// Readings skipped (non-finite).
    pub n_skipped: usize,
    /// Grid samples that held no reading (interpolated, power `null`).
    pub n_gaps: usize,
    /// The mother wavelet's ω₀.
    pub omega0: f64,
}

/// Bins `(t, y)` on a regular grid and computes its wavelet spectrum over the options' period
/// range.
///
/// ```
/// use kaiabc_operators::rhythm::wavelet::{wavelet_spectrum, WaveletOptions};
///
/// // Ten days of hourly values with a 24 h rhythm.
/// let t: Vec<f64> = (0..240).map(f64::from).collect();
/// let y: Vec<f64> = t.iter().map(|h| (std::f64::consts::TAU * h / 24.0).sin()).collect();
/// let w = wavelet_spectrum(&t, &y, &WaveletOptions::default()).unwrap();
/// let (best, _) = w
///     .global_power
///     .iter()
///     .enumerate()
///     .max_by(|a, b| a.1.total_cmp(b.1))
///     .unwrap();
/// assert!((w.periods_hours[best] - 24.0).abs() < 1.5);
/// assert!(w.global_power[best] > w.global_significance[best]);
/// ```
pub fn wavelet_spectrum(
    t: &[f64],
    y: &[f64],
    options: &WaveletOptions,
) -> Result<WaveletSpectrum, RhythmError> {
    let level = options.significance_level;
    if !(level > 0.0 && level < 1.0) {
        return Err(RhythmError::InvalidParameter {
            name: "significance_level",
            value: level,
        });
    }
    let grid = RegularGrid::new(t, y, options.dt_hours)?;
    let mother = Morlet::default();
    let scales = Scales::for_periods(
        &mother,
        grid.dt,
        options.dj,
        options.min_period_hours,
        options.max_period_hours,
    )?;
    let cells = (scales.j + 1).saturating_mul(grid.values.len());
    if cells > MAX_CELLS {
        return Err(RhythmError::GridTooLarge {
            len: cells,
            max: MAX_CELLS,
        });
    }
    let observed: Vec<f64> = grid
        .values
        .iter()
        .zip(&grid.gap)
        .filter(|(_, &g)| !g)
        .map(|(&v, _)| v)
        .collect();
    let nf = observed.len() as f64;
    let mean = observed.iter().sum::<f64>() / nf;
    let std_dev = (observed.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nf).sqrt();
    if std_dev.is_nan() || std_dev <= 0.0 {
        return Err(RhythmError::ZeroVariance);
    }
    let normalised: Vec<f64> = grid.values.iter().map(|v| (v - mean) / std_dev).collect();
    let (alpha, estimator) = match ar1(&normalised) {
        Some(a) => (a, "allen_smith"),
        None => (plain_lag1(&normalised).max(0.0), "lag1"),
    };
    let transform = cwt(&normalised, &scales, &mother);
    let n = transform.n;
    let mut power = Vec::with_capacity(transform.scales.len());
    let mut global_power = Vec::with_capacity(transform.scales.len());
    for j in 0..transform.scales.len() {
        let row: Vec<f64> = transform
            .row(j)
            .iter()
            .zip(&grid.gap)
            .map(|(w, &g)| if g { f64::NAN } else { w.norm_sqr() })
            .collect();
        global_power.push(row.iter().filter(|p| p.is_finite()).sum::<f64>() / nf);
        power.push(row);
    }
    let ridge_period_hours = (0..n)
        .map(|i| {
            if grid.gap[i] {
                return f64::NAN;
            }
            let best = (0..power.len())
                .max_by(|&a, &b| power[a][i].total_cmp(&power[b][i]))
                .unwrap_or(0);
            transform.periods[best]
        })
        .collect();
    let averaged = vec![nf; transform.scales.len()];
    Ok(WaveletSpectrum {
        times_hours: (0..n).map(|i| grid.t0 + i as f64 * grid.dt).collect(),
        dt_hours: grid.dt,
        significance: local_significance(alpha, grid.dt, &transform.periods, level),
        global_significance: global_significance(alpha, &scales, &transform, &averaged, level),
        periods_hours: transform.periods,
        scales: transform.scales,
        coi_hours: transform.coi,
        power,
        global_power,
        ridge_period_hours,
        lag1_autocorrelation: alpha,
        red_noise_estimator: estimator,
        significance_level: level,
        mean,
        std_dev,
        n_points: grid.n_points,
        n_skipped: grid.n_skipped,
        n_gaps: grid.gap.iter().filter(|&&g| g).count(),
        omega0: mother.omega0,
    })
}

/// The sample lag-1 autocorrelation `c₁/c₀` of a zero-mean series.
fn plain_lag1(y: &[f64]) -> f64 {
    let c0: f64 = y.iter().map(|v| v * v).sum();
    let c1: f64 = y.windows(2).map(|w| w[0] * w[1]).sum();
    if c0 > 0.0 {
        c1 / c0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_interpolated_flagged_and_left_out() {
        // Hourly for three days, with hours 30..=35 missing.
        let t: Vec<f64> = (0..72)
            .filter(|h| !(30..=35).contains(h))
            .map(f64::from)
            .collect();
        let y: Vec<f64> = t.iter().map(|h| (TAU * h / 24.0).sin()).collect();
        let g = RegularGrid::new(&t, &y, None).unwrap();
        assert_eq!(g.values.len(), 72);
        assert_eq!(g.gap.iter().filter(|&&x| x).count(), 6);
        // Straight line between hours 29 and 36.
        let (a, b) = ((TAU * 29.0 / 24.0).sin(), (TAU * 36.0 / 24.0).sin());
        assert!((g.values[30] - (a + (b - a) / 7.0)).abs() < 1e-12);
        let w = wavelet_spectrum(
            &t,
            &y,
            &WaveletOptions {
                max_period_hours: 30.0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(w.n_gaps, 6);
        assert!(w
            .power
            .iter()
            .all(|row| row[32].is_nan() && row[20].is_finite()));
        assert!(w.ridge_period_hours[32].is_nan());
    }

    #[test]
    fn a_transform_too_large_to_hold_is_refused_before_it_is_computed() {
        // Four readings over 9000 h on a 36 s grid: 900 001 samples × 135 scales.
        let t = [0.0, 3000.0, 6000.0, 9000.0];
        let y = [1.0, 2.0, 1.5, 3.0];
        let opts = WaveletOptions {
            min_period_hours: 0.02,
            dt_hours: Some(0.01),
            ..Default::default()
        };
        assert!(matches!(
            wavelet_spectrum(&t, &y, &opts),
            Err(RhythmError::GridTooLarge { max: MAX_CELLS, .. })
        ));
    }

    #[test]
    fn readings_in_one_bin_are_averaged() {
        let t = [0.0, 0.9, 1.1, 2.0, 3.0, 4.0];
        let y = [1.0, 2.0, 4.0, 5.0, 6.0, 7.0];
        let g = RegularGrid::new(&t, &y, Some(1.0)).unwrap();
        assert_eq!(g.values, vec![1.0, 3.0, 5.0, 6.0, 7.0]);
        assert!(g.gap.iter().all(|&x| !x));
    }

    #[test]
    fn a_period_below_two_samples_or_a_reversed_range_is_refused() {
        let m = Morlet::default();
        assert!(matches!(
            Scales::for_periods(&m, 1.0, 1.0 / 12.0, 1.5, 48.0),
            Err(RhythmError::InvalidParameter {
                name: "min_period_hours",
                ..
            })
        ));
        assert!(matches!(
            Scales::for_periods(&m, 1.0, 1.0 / 12.0, 48.0, 4.0),
            Err(RhythmError::InvalidPeriodRange { .. })
        ));
    }

    #[test]
    fn the_scales_span_the_period_range() {
        let m = Morlet::default();
        let s = Scales::for_periods(&m, 1.0, 1.0 / 12.0, 4.0, 48.0).unwrap();
        let periods: Vec<f64> = s.values().iter().map(|s| s * m.fourier_factor()).collect();
        assert!((periods[0] - 4.0).abs() < 1e-12);
        assert!(*periods.last().unwrap() <= 48.0);
        assert!(*periods.last().unwrap() * 2f64.powf(1.0 / 12.0) > 48.0);
    }
}
