//! Generalised (floating-mean) Lomb–Scargle periodogram of unevenly sampled series, its peak
//! and the peak's false-alarm probability, matching `astropy.timeseries.LombScargle`.
//!
//! The numbers are those of `LombScargle(t, y).power(f)` with astropy's defaults
//! (`fit_mean=True`, `center_data=True`, `normalization='standard'`, `nterms=1`, no `dy`), i.e.
//! the exact (non-FFT) generalised periodogram of Zechmeister & Kürster (2009, A&A 496, 577):
//! at each frequency, the fraction of the variance of `y` explained by a least-squares fit of
//! `a + b cos ωt + c sin ωt`. The grid and the false-alarm probability follow astropy's
//! `autofrequency` and Baluev (2008, MNRAS 385, 1279) as implemented in astropy's
//! `_statistics.py` (`fap_baluev`).
//!
//! Evaluating a grid is the hot path, so it does not call `sin`/`cos` per point and frequency:
//! it rotates each point's `(cos ωtᵢ, sin ωtᵢ)` by the fixed step `Δω·tᵢ` (one complex
//! multiplication), re-seeding with a full-precision `sin_cos` every [`RESEED_EVERY`]
//! frequencies so the drift stays at the level of rounding. Points are held as structure-of-
//! arrays and processed four at a time with one accumulator lane each (explicit AVX where the
//! CPU has it, portable code otherwise). The `sin_cos` used for seeds and direct evaluations is
//! a branch-free fdlibm port that vectorises, within 1 ulp of libm. The reduction order is
//! fixed (lanes summed in lane order, no FMA), so results are bit-identical whatever the CPU.
//!
//! Times are in hours for our use, but nothing depends on the unit: frequencies are in cycles
//! per unit of `t`.

use std::f64::consts::{PI, TAU};

use serde::Serialize;
use statrs::function::gamma::ln_gamma;

use super::{usable_rows, RhythmError};

/// Grid points per periodogram peak width (`1 / baseline`), astropy's default.
pub const DEFAULT_SAMPLES_PER_PEAK: f64 = 5.0;

/// Longest frequency grid [`LombScargle::grid_for`] accepts (memory and time guard).
pub const MAX_GRID_LEN: usize = 10_000_000;

/// Grid frequencies between exact re-seeds of the trigonometric recurrence. Each rotation adds
/// O(ε) relative error, so 64 steps keep the drift near 1e-14, far below astropy agreement
/// tolerances, while the `sin_cos` cost is amortised to ~1/64 per point and frequency.
pub const RESEED_EVERY: usize = 64;

/// Independent accumulators per sum: one 256-bit vector each, so the seven grid sums fit in
/// registers alongside the five input streams (8 lanes spilled). Fixing it fixes the summation
/// order, whichever instruction set runs.
const LANES: usize = 4;

/// Calls `self.$avx(args)` (the AVX build of `$imp`) where the CPU has AVX — twice the vector
/// width of the x86-64 baseline — else `self.$imp(args)`. The `*_impl` bodies are
/// `#[inline(always)]`, so each build gets its own copy. Both do the same IEEE operations in the
/// same order (Rust never contracts `a * b + c` into an FMA, and reductions keep their lane
/// order), so the results are bit-identical whichever runs.
macro_rules! dispatch {
    ($self:ident . $imp:ident / $avx:ident ( $($arg:expr),* )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx") {
                // SAFETY: the CPU supports AVX, checked just above.
                return unsafe { $self.$avx($($arg),*) };
            }
        }
        $self.$imp($($arg),*)
    }};
}

/// Relative tolerance on the refined peak frequency.
const REFINE_RTOL: f64 = 1e-13;

/// The period range to search and the grid density, as for astropy's `autofrequency`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PeakSearch {
    /// Shortest period searched (hours, or the unit of `t`); sets the highest frequency.
    pub min_period_hours: f64,
    /// Longest period searched; sets the lowest frequency.
    pub max_period_hours: f64,
    /// Grid points per peak width `1 / baseline`; astropy's default is 5.
    pub samples_per_peak: f64,
}

impl PeakSearch {
    /// A search over `[min_period_hours, max_period_hours]` at the default grid density.
    pub fn new(min_period_hours: f64, max_period_hours: f64) -> Self {
        PeakSearch {
            min_period_hours,
            max_period_hours,
            samples_per_peak: DEFAULT_SAMPLES_PER_PEAK,
        }
    }

    /// The same search with another grid density.
    pub fn with_samples_per_peak(self, samples_per_peak: f64) -> Self {
        PeakSearch {
            samples_per_peak,
            ..self
        }
    }

    fn validate(&self) -> Result<(), RhythmError> {
        let (min, max) = (self.min_period_hours, self.max_period_hours);
        if !(min.is_finite() && max.is_finite() && min > 0.0 && min < max) {
            return Err(RhythmError::InvalidPeriodRange { min, max });
        }
        if !(self.samples_per_peak.is_finite() && self.samples_per_peak > 0.0) {
            return Err(RhythmError::InvalidParameter {
                name: "samples_per_peak",
                value: self.samples_per_peak,
            });
        }
        Ok(())
    }
}

/// A regular frequency grid `start + step·k`, `k = 0..len` (cycles per unit of `t`).
///
/// Frequencies are computed as `start + step * k` rather than accumulated, exactly as numpy's
/// `start + step * np.arange(len)`, so a grid built from astropy's parameters is bit-identical.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FrequencyGrid {
    /// First frequency.
    pub start: f64,
    /// Spacing.
    pub step: f64,
    /// Number of frequencies.
    pub len: usize,
}

impl FrequencyGrid {
    /// A grid of `len` frequencies from `start` in steps of `step`; all must be positive and
    /// finite (`step` may be anything finite when `len == 1`).
    pub fn new(start: f64, step: f64, len: usize) -> Result<Self, RhythmError> {
        if !(start.is_finite() && start > 0.0) {
            return Err(RhythmError::InvalidParameter {
                name: "start",
                value: start,
            });
        }
        if !(step.is_finite() && (step > 0.0 || len == 1)) {
            return Err(RhythmError::InvalidParameter {
                name: "step",
                value: step,
            });
        }
        if len == 0 || len > MAX_GRID_LEN {
            return Err(RhythmError::GridTooLarge {
                len,
                max: MAX_GRID_LEN,
            });
        }
        Ok(FrequencyGrid { start, step, len })
    }

    /// The `k`-th frequency.
    pub fn frequency(&self, k: usize) -> f64 {
        self.start + self.step * k as f64
    }

    /// The last frequency; astropy's `fmax` for the false-alarm probability.
    pub fn last(&self) -> f64 {
        self.frequency(self.len - 1)
    }

    /// All frequencies, in order.
    pub fn frequencies(&self) -> Vec<f64> {
        (0..self.len).map(|k| self.frequency(k)).collect()
    }
}

/// The periodogram over a [`PeakSearch`] grid, for plotting or custom peak picking.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Periodogram {
    /// Grid frequencies (cycles per hour).
    pub frequencies: Vec<f64>,
    /// Power at each frequency, in `[0, 1]` (NaN where the fit is undefined).
    pub powers: Vec<f64>,
    /// The grid the frequencies come from.
    pub grid: FrequencyGrid,
    /// The searched range, as requested.
    pub min_period_hours: f64,
    /// The searched range, as requested.
    pub max_period_hours: f64,
}

/// The highest peak of the periodogram in the searched range, refined off the grid.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Peak {
    /// Refined peak frequency (cycles per hour).
    pub frequency: f64,
    /// `1 / frequency`.
    pub period_hours: f64,
    /// Power at the refined frequency, in `[0, 1]`.
    pub power: f64,
    /// Baluev (2008) probability that noise alone gives a peak this high anywhere up to the grid's
    /// highest frequency.
    pub false_alarm_probability: f64,
    /// Usable rows.
    pub n_points: usize,
    /// Rows skipped because `t` or `y` was not finite.
    pub n_skipped: usize,
    /// The searched range, as requested.
    pub min_period_hours: f64,
    /// The searched range, as requested.
    pub max_period_hours: f64,
}

/// `L` values operated on element-wise, as whole-array operations the compiler can vectorise.
/// This is the portable form of every per-point kernel; lane `l` accumulates points
/// `l, l + L, l + 2L, …`, which fixes the summation order.
#[derive(Clone, Copy)]
struct Lanes<const L: usize>([f64; L]);

impl<const L: usize> Lanes<L> {
    const ZERO: Self = Lanes([0.0; L]);

    /// The first `L` values of `v` (callers pass `chunks_exact(L)` chunks).
    #[inline(always)]
    fn load(v: &[f64]) -> Self {
        let head: &[f64; L] = v[..L].try_into().expect("chunk of L values");
        Lanes(*head)
    }

    #[inline(always)]
    fn store(self, v: &mut [f64]) {
        let head: &mut [f64; L] = (&mut v[..L]).try_into().expect("chunk of L values");
        *head = self.0;
    }

    /// Sum of the lanes in lane order (fixed, so results do not depend on the vector width).
    #[inline(always)]
    fn total(self) -> f64 {
        self.0.iter().sum()
    }
}

impl<const L: usize> std::ops::Add for Lanes<L> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Lanes(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }
}

impl<const L: usize> std::ops::Sub for Lanes<L> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Lanes(std::array::from_fn(|i| self.0[i] - o.0[i]))
    }
}

impl<const L: usize> std::ops::Mul for Lanes<L> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Lanes(std::array::from_fn(|i| self.0[i] * o.0[i]))
    }
}

/// Raw sums over points of the products the power needs.
#[derive(Clone, Copy, Default)]
struct Sums {
    c: f64,
    s: f64,
    cc: f64,
    ss: f64,
    cs: f64,
    yc: f64,
    ys: f64,
}

/// Prepared data for periodogram evaluation: usable rows, times shifted, values centred.
///
/// ```
/// use kaiabc_operators::rhythm::{LombScargle, PeakSearch};
///
/// // Three days of a 24 h rhythm, sampled every 50 minutes with one missing reading.
/// let t: Vec<f64> = (0..87).map(|i| i as f64 * 50.0 / 60.0).collect();
/// let mut y: Vec<f64> = t.iter().map(|&h| 20.0 + 2.0 * (std::f64::consts::TAU * h / 24.0).cos()).collect();
/// y[10] = f64::NAN;
///
/// let ls = LombScargle::new(&t, &y).unwrap();
/// let peak = ls.peak(&PeakSearch::new(16.0, 32.0)).unwrap();
/// assert!((peak.period_hours - 24.0).abs() < 0.01);
/// assert!(peak.power > 0.99 && peak.false_alarm_probability < 1e-20);
/// assert_eq!((peak.n_points, peak.n_skipped), (86, 1));
/// ```
#[derive(Clone, Debug)]
pub struct LombScargle {
    /// Usable times minus `t_ref`, zero-padded to a multiple of [`LANES`].
    t: Vec<f64>,
    /// Usable values minus their mean, zero-padded like `t`.
    y: Vec<f64>,
    n: usize,
    n_skipped: usize,
    t_min: f64,
    t_max: f64,
    /// Population variance of the usable times (Baluev's effective baseline).
    t_var: f64,
    /// Mean of the centred values (zero up to rounding; kept as astropy does).
    y_mean: f64,
    /// Population variance of the values.
    yy: f64,
    /// `max |tᵢ − t_ref|`, to decide whether [`sin_cos`] covers `ωt`.
    t_abs_max: f64,
}

impl LombScargle {
    /// Prepares `(t, y)` for evaluation, skipping rows where either is not finite.
    ///
    /// Times are shifted to the middle of their span before any trigonometry: the periodogram
    /// does not depend on the time origin, and small `|t|` keeps `ωt` accurate even for epoch
    /// times.
    pub fn new(t: &[f64], y: &[f64]) -> Result<Self, RhythmError> {
        let usable = usable_rows(t, y)?;
        let n = usable.t.len();
        let nf = n as f64;
        let (t_min, t_max) = usable
            .t
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if usable.y.iter().all(|&v| v == usable.y[0]) {
            return Err(RhythmError::ZeroVariance);
        }
        if t_max == t_min {
            return Err(RhythmError::ZeroBaseline);
        }
        let y_mean0 = usable.y.iter().sum::<f64>() / nf;
        let padded = n.div_ceil(LANES) * LANES;
        let mut yc = Vec::with_capacity(padded);
        yc.extend(usable.y.iter().map(|&v| v - y_mean0));
        let y_mean = yc.iter().sum::<f64>() / nf;
        let yy = yc.iter().map(|v| v * v).sum::<f64>() / nf - y_mean * y_mean;
        if yy.is_nan() || yy <= 0.0 {
            return Err(RhythmError::ZeroVariance);
        }
        let t_ref = 0.5 * (t_min + t_max);
        let mut ts = Vec::with_capacity(padded);
        ts.extend(usable.t.iter().map(|&v| v - t_ref));
        let t_mean = ts.iter().sum::<f64>() / nf;
        let t_var = ts.iter().map(|v| (v - t_mean) * (v - t_mean)).sum::<f64>() / nf;
        let t_abs_max = ts.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        yc.resize(padded, 0.0);
        ts.resize(padded, 0.0);
        Ok(LombScargle {
            t: ts,
            y: yc,
            n,
            n_skipped: usable.n_skipped,
            t_min,
            t_max,
            t_var,
            y_mean,
            yy,
            t_abs_max,
        })
    }

    /// Usable rows.
    pub fn n_points(&self) -> usize {
        self.n
    }

    /// Rows skipped because `t` or `y` was not finite.
    pub fn n_skipped(&self) -> usize {
        self.n_skipped
    }

    /// `max(t) − min(t)` over usable rows; sets the natural frequency resolution.
    pub fn baseline(&self) -> f64 {
        self.t_max - self.t_min
    }

    /// Power at one frequency (cycles per unit of `t`), evaluated directly (no recurrence).
    pub fn power(&self, frequency: f64) -> f64 {
        dispatch!(self.power_impl / power_avx(frequency))
    }

    /// Power at arbitrary frequencies, each evaluated directly.
    pub fn power_at(&self, frequencies: &[f64]) -> Vec<f64> {
        frequencies.iter().map(|&f| self.power(f)).collect()
    }

    /// Power over a regular grid by trigonometric recurrence: the fast path.
    pub fn power_grid(&self, grid: &FrequencyGrid) -> Vec<f64> {
        dispatch!(self.power_grid_impl / power_grid_avx(grid))
    }

    /// astropy's `autofrequency(samples_per_peak, minimum_frequency=1/max_period,
    /// maximum_frequency=1/min_period)`: `df = 1 / baseline / samples_per_peak`,
    /// `len = 1 + round_half_even((fmax − fmin) / df)`. The last frequency can overshoot
    /// `1/min_period` by up to `df/2`, as in astropy.
    pub fn grid_for(&self, search: &PeakSearch) -> Result<FrequencyGrid, RhythmError> {
        search.validate()?;
        let df = 1.0 / self.baseline() / search.samples_per_peak;
        let fmin = 1.0 / search.max_period_hours;
        let fmax = 1.0 / search.min_period_hours;
        let steps = ((fmax - fmin) / df).round_ties_even();
        if steps.is_nan() || steps >= MAX_GRID_LEN as f64 {
            return Err(RhythmError::GridTooLarge {
                len: if steps.is_finite() {
                    steps as usize
                } else {
                    usize::MAX
                },
                max: MAX_GRID_LEN,
            });
        }
        FrequencyGrid::new(fmin, df, 1 + steps as usize)
    }

    /// The periodogram over the search grid.
    pub fn periodogram(&self, search: &PeakSearch) -> Result<Periodogram, RhythmError> {
        let grid = self.grid_for(search)?;
        Ok(Periodogram {
            frequencies: grid.frequencies(),
            powers: self.power_grid(&grid),
            grid,
            min_period_hours: search.min_period_hours,
            max_period_hours: search.max_period_hours,
        })
    }

    /// The refined highest peak in the search range, with its false-alarm probability.
    pub fn peak(&self, search: &PeakSearch) -> Result<Peak, RhythmError> {
        self.refine_peak(&self.periodogram(search)?)
    }

    /// Refines the highest grid point of `periodogram` (which must come from this data) to the
    /// maximum of the continuous periodogram between its grid neighbours.
    ///
    /// The grid maximum brackets a local maximum within one step on the side where the slope
    /// points. The slope `dP/dω` is evaluated analytically and its zero found by Brent's
    /// method, which locates the maximum to ~1e-13 relative; a search on the power alone
    /// could not do better than ~√ε of the peak width, because the top of a peak is flat. The
    /// result is never below the grid maximum, and never leaves the grid's range.
    pub fn refine_peak(&self, periodogram: &Periodogram) -> Result<Peak, RhythmError> {
        let grid = &periodogram.grid;
        let best = periodogram
            .powers
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_nan())
            .fold(None, |acc: Option<(usize, f64)>, (k, &p)| match acc {
                Some((_, bp)) if bp >= p => acc,
                _ => Some((k, p)),
            })
            .ok_or(RhythmError::DegeneratePeriodogram)?
            .0;
        let (frequency, power) = self.refine(grid, best);
        Ok(Peak {
            frequency,
            period_hours: 1.0 / frequency,
            power,
            false_alarm_probability: self.false_alarm_probability(power, grid.last()),
            n_points: self.n,
            n_skipped: self.n_skipped,
            min_period_hours: periodogram.min_period_hours,
            max_period_hours: periodogram.max_period_hours,
        })
    }

    /// Baluev (2008) false-alarm probability of a peak of height `power` in a search up to
    /// `max_frequency`, for this data's `N` and time variance; astropy's
    /// `false_alarm_probability(power, method='baluev', …)` with that `fmax`.
    pub fn false_alarm_probability(&self, power: f64, max_frequency: f64) -> f64 {
        baluev_false_alarm_probability(power, self.n, max_frequency, self.t_var)
    }

    fn refine(&self, grid: &FrequencyGrid, k: usize) -> (f64, f64) {
        let f0 = grid.frequency(k);
        let (p0, g0) = self.power_and_slope(f0);
        let (a, b) = if g0 > 0.0 && k + 1 < grid.len {
            (f0, grid.frequency(k + 1))
        } else if g0 < 0.0 && k > 0 {
            (grid.frequency(k - 1), f0)
        } else {
            return (f0, p0);
        };
        let slope = |f: f64| self.power_and_slope(f).1;
        let (ga, gb) = if a == f0 {
            (g0, slope(b))
        } else {
            (slope(a), g0)
        };
        let tol = REFINE_RTOL * f0;
        let f = if ga > 0.0 && gb < 0.0 {
            brent_root(slope, a, b, ga, gb, tol)
        } else {
            // No sign change: more than one extremum within a step. Fall back to the power.
            golden_max(|f| self.power(f), a, b, tol)
        };
        let p = self.power(f);
        if p >= p0 {
            (f, p)
        } else {
            (f0, p0)
        }
    }

    /// Power from raw sums: `R²` of `a + b cos + c sin` against `y`, Zechmeister & Kürster's
    /// closed form (equivalent to astropy's `τ`-shifted form).
    fn power_from(&self, s: &Sums) -> f64 {
        let inv = 1.0 / self.n as f64;
        let c = s.c * inv;
        let sn = s.s * inv;
        let cc = s.cc * inv - c * c;
        let ss = s.ss * inv - sn * sn;
        let cs = s.cs * inv - c * sn;
        let yc = s.yc * inv - self.y_mean * c;
        let ys = s.ys * inv - self.y_mean * sn;
        let d = cc * ss - cs * cs;
        let p = (ss * yc * yc + cc * ys * ys - 2.0 * cs * yc * ys) / (self.yy * d);
        // Clamp only rounding excursions; an undefined fit stays NaN.
        if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            f64::NAN
        }
    }

    /// Power and `dP/dω` at one frequency, evaluated directly.
    fn power_and_slope(&self, frequency: f64) -> (f64, f64) {
        dispatch!(self.power_and_slope_impl / power_and_slope_avx(frequency))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    fn power_avx(&self, frequency: f64) -> f64 {
        self.power_impl(frequency)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    fn power_grid_avx(&self, grid: &FrequencyGrid) -> Vec<f64> {
        self.power_grid_impl(grid)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    fn power_and_slope_avx(&self, frequency: f64) -> (f64, f64) {
        self.power_and_slope_impl(frequency)
    }

    /// `(cos ωtᵢ, sin ωtᵢ)` for every usable point; padding rows stay zero.
    #[inline(always)]
    fn fill_trig(&self, w: f64, c: &mut [f64], s: &mut [f64]) {
        let rows = self.t[..self.n]
            .iter()
            .zip(&mut c[..self.n])
            .zip(&mut s[..self.n]);
        if w.abs() * self.t_abs_max <= FAST_TRIG_LIMIT {
            for ((&t, c), s) in rows {
                (*s, *c) = sin_cos(w * t);
            }
        } else {
            for ((&t, c), s) in rows {
                (*s, *c) = (w * t).sin_cos();
            }
        }
    }

    #[inline(always)]
    fn power_impl(&self, frequency: f64) -> f64 {
        let np = self.t.len();
        let (mut c, mut s) = (vec![0.0; np], vec![0.0; np]);
        self.fill_trig(TAU * frequency, &mut c, &mut s);
        let mut a = [Lanes::<LANES>::ZERO; 7];
        for ((yv, cv), sv) in self
            .y
            .chunks_exact(LANES)
            .zip(c.chunks_exact(LANES))
            .zip(s.chunks_exact(LANES))
        {
            let (c, s, y) = (Lanes::load(cv), Lanes::load(sv), Lanes::load(yv));
            accumulate(&mut a, c, s, y);
        }
        self.power_from(&Sums::from_lanes(&a))
    }

    #[inline(always)]
    fn power_grid_impl(&self, grid: &FrequencyGrid) -> Vec<f64> {
        let np = self.t.len();
        let (mut c, mut s) = (vec![0.0; np], vec![0.0; np]);
        let (mut dc, mut ds) = (vec![0.0; np], vec![0.0; np]);
        self.fill_trig(TAU * grid.step, &mut dc, &mut ds);
        let mut out = Vec::with_capacity(grid.len);
        let mut k = 0;
        while k < grid.len {
            let block = RESEED_EVERY.min(grid.len - k);
            // Padding rows keep c = s = 0, which the rotation preserves, so they add nothing.
            self.fill_trig(TAU * grid.frequency(k), &mut c, &mut s);
            for _ in 0..block {
                let sums = grid_step(&self.y, &mut c, &mut s, &dc, &ds);
                out.push(self.power_from(&sums));
            }
            k += block;
        }
        out
    }

    #[inline(always)]
    fn power_and_slope_impl(&self, frequency: f64) -> (f64, f64) {
        const L: usize = LANES;
        let np = self.t.len();
        let (mut cb, mut sb) = (vec![0.0; np], vec![0.0; np]);
        self.fill_trig(TAU * frequency, &mut cb, &mut sb);
        let mut a = [Lanes::<L>::ZERO; 13];
        for (((tv, yv), cv), sv) in self
            .t
            .chunks_exact(L)
            .zip(self.y.chunks_exact(L))
            .zip(cb.chunks_exact(L))
            .zip(sb.chunks_exact(L))
        {
            let (t, y) = (Lanes::load(tv), Lanes::load(yv));
            let (c, s) = (Lanes::load(cv), Lanes::load(sv));
            let (cc, ss, cs) = (c * c, s * s, c * s);
            let (tc, ts) = (t * c, t * s);
            let terms = [
                c,
                s,
                cc,
                ss,
                cs,
                y * c,
                y * s,
                tc,
                ts,
                tc * s,
                t * (cc - ss),
                y * tc,
                y * ts,
            ];
            for (acc, term) in a.iter_mut().zip(terms) {
                *acc = *acc + term;
            }
        }
        let inv = 1.0 / self.n as f64;
        let m = a.map(|lanes| lanes.total() * inv);
        let [mc, ms, mcc, mss, mcs, myc, mys, mtc, mts, mtcs, mtc2, mytc, myts] = m;
        let ym = self.y_mean;
        // Centred moments and their ω-derivatives (d cos ωt/dω = −t sin ωt, d sin = t cos).
        let (c, dc) = (mc, -mts);
        let (s, ds) = (ms, mtc);
        let (cc, dcc) = (mcc - c * c, -2.0 * mtcs - 2.0 * c * dc);
        let (ss, dss) = (mss - s * s, 2.0 * mtcs - 2.0 * s * ds);
        let (cs, dcs) = (mcs - c * s, mtc2 - dc * s - c * ds);
        let (yc, dyc) = (myc - ym * c, -myts - ym * dc);
        let (ys, dys) = (mys - ym * s, mytc - ym * ds);
        let num = ss * yc * yc + cc * ys * ys - 2.0 * cs * yc * ys;
        let dnum = dss * yc * yc + 2.0 * ss * yc * dyc + dcc * ys * ys + 2.0 * cc * ys * dys
            - 2.0 * (dcs * yc * ys + cs * dyc * ys + cs * yc * dys);
        let d = cc * ss - cs * cs;
        let dd = dcc * ss + cc * dss - 2.0 * cs * dcs;
        let p = num / (self.yy * d);
        let dp = (dnum * d - num * dd) / (self.yy * d * d);
        let p = if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            f64::NAN
        };
        (p, dp)
    }
}

impl Sums {
    fn from_lanes<const L: usize>(a: &[Lanes<L>; 7]) -> Sums {
        Sums {
            c: a[0].total(),
            s: a[1].total(),
            cc: a[2].total(),
            ss: a[3].total(),
            cs: a[4].total(),
            yc: a[5].total(),
            ys: a[6].total(),
        }
    }
}

/// Adds one chunk's terms to the seven power sums.
#[inline(always)]
fn accumulate<const L: usize>(a: &mut [Lanes<L>; 7], c: Lanes<L>, s: Lanes<L>, y: Lanes<L>) {
    a[0] = a[0] + c;
    a[1] = a[1] + s;
    a[2] = a[2] + c * c;
    a[3] = a[3] + s * s;
    a[4] = a[4] + c * s;
    a[5] = a[5] + y * c;
    a[6] = a[6] + y * s;
}

/// [`accumulate_and_rotate`], with explicit AVX where the CPU has it: the compiler's own
/// vectorisation of the portable lanes came out shuffle-bound (~1.8 ns per point and frequency,
/// against ~0.65 ns for the intrinsics, measured at N = 10 000).
#[inline(always)]
fn grid_step(y: &[f64], c: &mut [f64], s: &mut [f64], dc: &[f64], ds: &[f64]) -> Sums {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX, checked just above.
            return unsafe { accumulate_and_rotate_avx(y, c, s, dc, ds) };
        }
    }
    accumulate_and_rotate(y, c, s, dc, ds)
}

/// [`accumulate_and_rotate`] in AVX intrinsics, one 4-lane vector per sum. Lane `l` sees the
/// same operations in the same order as in the portable version, and the lanes are summed in
/// the same order, so the two give identical bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn accumulate_and_rotate_avx(
    y: &[f64],
    c: &mut [f64],
    s: &mut [f64],
    dc: &[f64],
    ds: &[f64],
) -> Sums {
    use std::arch::x86_64::{
        __m256d, _mm256_add_pd, _mm256_loadu_pd, _mm256_mul_pd, _mm256_setzero_pd,
        _mm256_storeu_pd, _mm256_sub_pd,
    };
    const _: () = assert!(LANES == 4, "one __m256d per sum");
    let n = y.len();
    assert!(
        n.is_multiple_of(LANES) && c.len() == n && s.len() == n && dc.len() == n && ds.len() == n
    );
    let mut a: [__m256d; 7] = [_mm256_setzero_pd(); 7];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 4 <= n and every slice has length n (asserted above).
        let (cv, sv, yv, dcv, dsv) = unsafe {
            (
                _mm256_loadu_pd(c.as_ptr().add(i)),
                _mm256_loadu_pd(s.as_ptr().add(i)),
                _mm256_loadu_pd(y.as_ptr().add(i)),
                _mm256_loadu_pd(dc.as_ptr().add(i)),
                _mm256_loadu_pd(ds.as_ptr().add(i)),
            )
        };
        a[0] = _mm256_add_pd(a[0], cv);
        a[1] = _mm256_add_pd(a[1], sv);
        a[2] = _mm256_add_pd(a[2], _mm256_mul_pd(cv, cv));
        a[3] = _mm256_add_pd(a[3], _mm256_mul_pd(sv, sv));
        a[4] = _mm256_add_pd(a[4], _mm256_mul_pd(cv, sv));
        a[5] = _mm256_add_pd(a[5], _mm256_mul_pd(yv, cv));
        a[6] = _mm256_add_pd(a[6], _mm256_mul_pd(yv, sv));
        let c_next = _mm256_sub_pd(_mm256_mul_pd(cv, dcv), _mm256_mul_pd(sv, dsv));
        let s_next = _mm256_add_pd(_mm256_mul_pd(sv, dcv), _mm256_mul_pd(cv, dsv));
        // SAFETY: as for the loads.
        unsafe {
            _mm256_storeu_pd(c.as_mut_ptr().add(i), c_next);
            _mm256_storeu_pd(s.as_mut_ptr().add(i), s_next);
        }
        i += LANES;
    }
    let lanes = a.map(|v| {
        let mut out = [0.0; LANES];
        // SAFETY: `out` holds exactly four f64.
        unsafe { _mm256_storeu_pd(out.as_mut_ptr(), v) };
        Lanes(out)
    });
    Sums::from_lanes(&lanes)
}

/// One grid step over all points: accumulate the sums at the current frequency, then rotate each
/// point's `(cos, sin)` by its step angle. Per-lane accumulators give the vectoriser independent
/// chains and fix the summation order.
#[inline(always)]
fn accumulate_and_rotate(y: &[f64], c: &mut [f64], s: &mut [f64], dc: &[f64], ds: &[f64]) -> Sums {
    let mut a = [Lanes::<LANES>::ZERO; 7];
    let chunks = y
        .chunks_exact(LANES)
        .zip(c.chunks_exact_mut(LANES))
        .zip(s.chunks_exact_mut(LANES))
        .zip(dc.chunks_exact(LANES))
        .zip(ds.chunks_exact(LANES));
    for ((((yv, cv), sv), dcv), dsv) in chunks {
        let (c, s, y) = (Lanes::load(cv), Lanes::load(sv), Lanes::load(yv));
        let (dc, ds) = (Lanes::load(dcv), Lanes::load(dsv));
        accumulate(&mut a, c, s, y);
        (c * dc - s * ds).store(cv);
        (s * dc + c * ds).store(sv);
    }
    Sums::from_lanes(&a)
}

/// Largest `|ωt|` for [`sin_cos`]: keeps the reduction multiple `k < 2²⁰`, where the products
/// `k·π/2` of its 33-bit pieces are exact. Beyond it the standard library is used.
const FAST_TRIG_LIMIT: f64 = 1.0e6;

/// `2^52 + 2^51`: adding and subtracting it rounds to the nearest integer (ties to even) for
/// `|v| < 2^51`, in plain arithmetic that vectorises on every x86-64 (no `roundpd` needed).
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

#[inline(always)]
fn round_int(v: f64) -> f64 {
    (v + ROUND_MAGIC) - ROUND_MAGIC
}

/// `(sin x, cos x)` for `|x| ≤ FAST_TRIG_LIMIT`, within 1 ulp of the standard library.
///
/// libm's `sin`/`cos` are opaque calls (~20 ns per point here) and would dominate the grid
/// re-seeds and every direct evaluation. This is fdlibm's algorithm — Cody–Waite reduction by
/// π/2 in three 33-bit pieces, then the `__kernel_sin`/`__kernel_cos` minimax polynomials on
/// `[−π/4, π/4]` — written branch-free (the quadrant is selected arithmetically) so loops over
/// points vectorise. Being plain IEEE arithmetic it also gives the same bits on every platform,
/// which libm does not promise.
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn sin_cos(x: f64) -> (f64, f64) {
    const PIO2_1: f64 = 1.570_796_326_734_125_614_17e0;
    const PIO2_2: f64 = 6.077_100_506_303_965_976_60e-11;
    const PIO2_3: f64 = 2.022_266_248_711_166_455_80e-21;
    const S1: f64 = -1.666_666_666_666_663_243_48e-1;
    const S2: f64 = 8.333_333_333_322_489_461_24e-3;
    const S3: f64 = -1.984_126_982_985_794_931_34e-4;
    const S4: f64 = 2.755_731_370_707_006_767_89e-6;
    const S5: f64 = -2.505_076_025_340_686_341_95e-8;
    const S6: f64 = 1.589_690_995_211_550_102_21e-10;
    const C1: f64 = 4.166_666_666_666_660_190_37e-2;
    const C2: f64 = -1.388_888_888_887_410_957_49e-3;
    const C3: f64 = 2.480_158_728_947_672_941_78e-5;
    const C4: f64 = -2.755_731_435_139_066_330_35e-7;
    const C5: f64 = 2.087_572_321_298_174_827_90e-9;
    const C6: f64 = -1.135_964_755_778_819_482_65e-11;
    let k = round_int(x * std::f64::consts::FRAC_2_PI);
    let r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
    let z = r * r;
    let w = z * z;
    let sin_r = r + z * r * (S1 + z * (S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6)));
    let rc = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    let hz = 0.5 * z;
    let one_hz = 1.0 - hz;
    let cos_r = one_hz + (((1.0 - one_hz) - hz) + z * rc);
    // Quadrant q = k mod 4 as exact small floats: `hi` = q ≥ 2, `odd` = q is odd.
    let q = k - 4.0 * round_int(k * 0.25 - 0.375);
    let hi = round_int(q * 0.5 - 0.25);
    let odd = q - 2.0 * hi;
    let s = odd * cos_r + (1.0 - odd) * sin_r;
    let c = odd * sin_r + (1.0 - odd) * cos_r;
    (
        s * (1.0 - 2.0 * hi),
        c * (1.0 - 2.0 * (odd + hi - 2.0 * odd * hi)),
    )
}

/// Baluev (2008) alias-free false-alarm probability for the standard normalisation, exactly as
/// astropy's `fap_baluev` (with `tau_davies`, `fap_single` and `_gamma`):
///
/// `fap = 1 − (1 − fap_single)·e^(−τ)`, `fap_single = (1 − Z)^((N−3)/2)`,
/// `τ = γ(N−1)·W·(1 − Z)^((N−4)/2)·√((N−1)Z/2)`, `W = f_max·√(4π·Var t)`,
/// `γ(n) = √(2/n)·Γ(n/2)/Γ((n−1)/2)`; `time_variance` is the population variance of `t`.
pub fn baluev_false_alarm_probability(
    power: f64,
    n_points: usize,
    max_frequency: f64,
    time_variance: f64,
) -> f64 {
    let n = n_points as f64;
    let nh = n - 1.0;
    let nk = n - 3.0;
    let gamma_nh = (2.0 / nh).sqrt() * (ln_gamma(nh / 2.0) - ln_gamma((nh - 1.0) / 2.0)).exp();
    let w = max_frequency * (4.0 * PI * time_variance).sqrt();
    let fap_single = (1.0 - power).powf(0.5 * nk);
    let tau = gamma_nh * w * (1.0 - power).powf(0.5 * (nk - 1.0)) * (0.5 * nh * power).sqrt();
    // 1 − (1 − fap_single)·e^(−τ), written to keep precision for small results.
    -(-tau).exp_m1() + fap_single * (-tau).exp()
}

/// Brent's root finder on `[a, b]` with `f(a) > 0 > f(b)` (or any sign change).
fn brent_root(f: impl Fn(f64) -> f64, a: f64, b: f64, fa: f64, fb: f64, tol: f64) -> f64 {
    let (mut a, mut b, mut fa, mut fb) = (a, b, fa, fb);
    let (mut c, mut fc) = (a, fa);
    let mut d = b - a;
    let mut e = d;
    for _ in 0..200 {
        if (fb > 0.0) == (fc > 0.0) {
            c = a;
            fc = fa;
            d = b - a;
            e = d;
        }
        if fc.abs() < fb.abs() {
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol1 = 2.0 * f64::EPSILON * b.abs() + 0.5 * tol;
        let xm = 0.5 * (c - b);
        if xm.abs() <= tol1 || fb == 0.0 {
            return b;
        }
        if e.abs() >= tol1 && fa.abs() > fb.abs() {
            let s = fb / fa;
            let (mut p, mut q) = if a == c {
                (2.0 * xm * s, 1.0 - s)
            } else {
                let q = fa / fc;
                let r = fb / fc;
                (
                    s * (2.0 * xm * q * (q - r) - (b - a) * (r - 1.0)),
                    (q - 1.0) * (r - 1.0) * (s - 1.0),
                )
            };
            if p > 0.0 {
                q = -q;
            } else {
                p = -p;
            }
            if 2.0 * p < (3.0 * xm * q - (tol1 * q).abs()).min((e * q).abs()) {
                e = d;
                d = p / q;
            } else {
                d = xm;
                e = d;
            }
        } else {
            d = xm;
            e = d;
        }
        a = b;
        fa = fb;
        b += if d.abs() > tol1 { d } else { tol1.copysign(xm) };
        fb = f(b);
    }
    b
}

/// Golden-section search for a maximum of `f` on `[a, b]`.
fn golden_max(f: impl Fn(f64) -> f64, a: f64, b: f64, tol: f64) -> f64 {
    let r = 0.5 * (5.0f64.sqrt() - 1.0);
    let (mut a, mut b) = (a, b);
    let mut x1 = b - r * (b - a);
    let mut x2 = a + r * (b - a);
    let (mut f1, mut f2) = (f(x1), f(x2));
    while b - a > tol {
        if f1 >= f2 {
            b = x2;
            x2 = x1;
            f2 = f1;
            x1 = b - r * (b - a);
            f1 = f(x1);
        } else {
            a = x1;
            x1 = x2;
            f1 = f2;
            x2 = a + r * (b - a);
            f2 = f(x2);
        }
    }
    if f1 >= f2 {
        x1
    } else {
        x2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let t: Vec<f64> = (0..n).map(|i| i as f64 * 1.7 + next()).collect();
        let y: Vec<f64> = t
            .iter()
            .map(|&h| (TAU * h / 23.3).cos() + 0.7 * (next() - 0.5))
            .collect();
        (t, y)
    }

    #[test]
    fn recurrence_matches_direct_evaluation_over_long_grid() {
        let (t, y) = sample(301);
        let ls = LombScargle::new(&t, &y).unwrap();
        let grid = FrequencyGrid::new(0.001, 0.000_37, 1000).unwrap();
        let fast = ls.power_grid(&grid);
        let direct = ls.power_at(&grid.frequencies());
        let worst = fast
            .iter()
            .zip(&direct)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-12, "recurrence drift {worst}");
    }

    #[test]
    fn sin_cos_is_within_one_ulp_of_std() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let x = u * [3.2, 20.0, 2e3, 2e6][i % 4];
            let (s, c) = sin_cos(x);
            let (s0, c0) = x.sin_cos();
            assert!(
                (s - s0).abs() <= 1.2e-16 && (c - c0).abs() <= 1.2e-16,
                "x={x}"
            );
            worst = worst.max((s - s0).abs()).max((c - c0).abs());
        }
        // Exact quadrant boundaries and signs.
        for k in -8..=8 {
            let x = f64::from(k) * std::f64::consts::FRAC_PI_2;
            let (s, c) = sin_cos(x);
            let (s0, c0) = x.sin_cos();
            assert!((s - s0).abs() <= 1e-15 && (c - c0).abs() <= 1e-15, "k={k}");
        }
        assert!(worst > 0.0);
    }

    #[test]
    fn dispatched_and_baseline_kernels_are_bit_identical() {
        let (t, y) = sample(203);
        let ls = LombScargle::new(&t, &y).unwrap();
        let grid = FrequencyGrid::new(0.002, 0.000_91, 150).unwrap();
        let dispatched = ls.power_grid(&grid);
        let baseline = ls.power_grid_impl(&grid);
        assert!(dispatched
            .iter()
            .zip(&baseline)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // The grid kernel: explicit AVX against the portable lanes, over many rotations.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            let np = ls.t.len();
            let (mut c1, mut s1) = (vec![0.0; np], vec![0.0; np]);
            let (mut dc, mut ds) = (vec![0.0; np], vec![0.0; np]);
            ls.fill_trig(0.05, &mut c1, &mut s1);
            ls.fill_trig(0.003, &mut dc, &mut ds);
            let (mut c2, mut s2) = (c1.clone(), s1.clone());
            for _ in 0..100 {
                let a = accumulate_and_rotate(&ls.y, &mut c1, &mut s1, &dc, &ds);
                // SAFETY: AVX support checked above.
                let b = unsafe { accumulate_and_rotate_avx(&ls.y, &mut c2, &mut s2, &dc, &ds) };
                let bits = |x: Sums| [x.c, x.s, x.cc, x.ss, x.cs, x.yc, x.ys].map(f64::to_bits);
                assert_eq!(bits(a), bits(b));
            }
            assert_eq!(c1, c2);
            assert_eq!(s1, s2);
        }
        for f in [0.01, 0.0433, 0.2] {
            assert_eq!(ls.power(f).to_bits(), ls.power_impl(f).to_bits());
            let (p, g) = ls.power_and_slope(f);
            let (p0, g0) = ls.power_and_slope_impl(f);
            assert_eq!((p.to_bits(), g.to_bits()), (p0.to_bits(), g0.to_bits()));
        }
    }

    #[test]
    fn epoch_times_fall_back_to_std_trig_beyond_fast_range() {
        let (t, y) = sample(64);
        let far: Vec<f64> = t.iter().map(|v| v * 1e4).collect();
        let ls = LombScargle::new(&far, &y).unwrap();
        // |ωt| ≈ 2π·5·5e5 > FAST_TRIG_LIMIT: must still match a plain evaluation.
        let f = 5.000_01;
        let w = TAU * f;
        assert!(w * ls.t_abs_max > FAST_TRIG_LIMIT);
        let mut sums = Sums::default();
        for (&ti, &yi) in ls.t[..ls.n].iter().zip(&ls.y[..ls.n]) {
            let (s, c) = (w * ti).sin_cos();
            sums.c += c;
            sums.s += s;
            sums.cc += c * c;
            sums.ss += s * s;
            sums.cs += c * s;
            sums.yc += yi * c;
            sums.ys += yi * s;
        }
        assert!((ls.power(f) - ls.power_from(&sums)).abs() < 1e-12);
    }

    #[test]
    fn analytic_slope_matches_finite_difference() {
        let (t, y) = sample(120);
        let ls = LombScargle::new(&t, &y).unwrap();
        for &f in &[0.02, 0.043, 0.0429, 0.1] {
            let h = 1e-7;
            let numeric = (ls.power(f + h) - ls.power(f - h)) / (2.0 * h) / TAU;
            let (_, analytic) = ls.power_and_slope(f);
            assert!(
                (numeric - analytic).abs() <= 1e-5 * analytic.abs().max(1.0),
                "f={f}: {numeric} vs {analytic}"
            );
        }
    }
}
