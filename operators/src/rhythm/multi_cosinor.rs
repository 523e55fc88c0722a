//! Multi-component cosinor: `Y = M + Σ_k A_k·cos(2πt/τ_k + φ_k)` at known periods (e.g. 24 h
//! and 12 h), by least squares, with inference per component and for the composite curve
//! (Cornelissen 2014, Theor Biol Med Model 11:16, "multiple-component models").
//!
//! Written `M + Σ_k (β_k cos ω_k t + γ_k sin ω_k t)`, the model is linear, solved by Householder
//! QR of the design `[1, cos ω₁t, sin ω₁t, …]`; `σ̂² = SSE/(N − 1 − 2K)` and
//! `V = σ̂²(XᵀX)⁻¹`. Then, per component, `A_k`, `φ_k` and their delta-method intervals exactly as
//! for one component (see [`cosinor`](super::cosinor())), and a zero-amplitude Wald test of
//! `(β_k, γ_k)` on `(2, N − 1 − 2K)` df; for the whole model the F-test of all `2K` rhythm
//! terms. The composite curve's own descriptors are those CosinorPy reports for
//! multi-component fits: its amplitude (half the peak-to-trough excursion), the time of its peak
//! (orthophase) and of its trough (bathyphase), over one cycle of the longest period (exact when
//! the others divide it, as harmonics do).

use std::f64::consts::{PI, TAU};

use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::function::beta::beta_reg;

use super::{usable_rows, RhythmError};

/// Coverage of the reported confidence intervals.
pub const CONFIDENCE_LEVEL: f64 = 0.95;

/// One component of a multi-component fit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Component {
    /// Its period τ_k (hours).
    pub period_hours: f64,
    /// Coefficient of `cos ω_k t`.
    pub beta: f64,
    /// Coefficient of `sin ω_k t`.
    pub gamma: f64,
    /// `A_k = √(β_k² + γ_k²)`.
    pub amplitude: f64,
    /// `φ_k = atan2(−γ_k, β_k)` in `(−π, π]`.
    pub acrophase_rad: f64,
    /// Peak time of this component alone, `−φ_kτ_k/2π mod τ_k`.
    pub peak_time_hours: f64,
    /// 95 % delta-method interval for `A_k`.
    pub amplitude_ci: [f64; 2],
    /// 95 % delta-method interval for `φ_k`, unwrapped around it.
    pub acrophase_ci: [f64; 2],
    /// Zero-amplitude Wald test of this component.
    pub p_value: f64,
}

/// A multi-component cosinor fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MultiCosinorFit {
    /// Rhythm-adjusted mean `M`.
    pub mesor: f64,
    /// 95 % interval for `M`.
    pub mesor_ci: [f64; 2],
    /// The components, in the order of the periods given.
    pub components: Vec<Component>,
    /// Half the peak-to-trough excursion of the fitted composite curve.
    pub overall_amplitude: f64,
    /// Time of the composite curve's peak within one cycle of the longest period.
    pub orthophase_hours: f64,
    /// Time of its trough.
    pub bathyphase_hours: f64,
    /// F-test of all rhythm terms together.
    pub p_value: f64,
    /// `(SSM/2K)/(SSE/(N−1−2K))`.
    pub f_statistic: f64,
    /// `1 − SSE/SST`.
    pub r_squared: f64,
    /// `√(SSE/(N−1−2K))`.
    pub residual_se: f64,
    /// Residual degrees of freedom, `N − 1 − 2K`.
    pub df_resid: usize,
    /// Usable rows.
    pub n_points: usize,
    /// Rows skipped because `t` or `y` was not finite.
    pub n_skipped: usize,
}

/// The least-squares coefficients `[M, β₁, γ₁, …]`, their covariance and the fit's sums.
pub(crate) struct Solved {
    pub coef: Vec<f64>,
    pub cov: DMatrix<f64>,
    pub sse: f64,
    pub ssm: f64,
    pub sst: f64,
    pub n: usize,
    pub n_skipped: usize,
}

/// Fits `M + Σ_k (β_k cos ω_k t + γ_k sin ω_k t)` to the finite rows of `(t, y)`.
pub(crate) fn solve(t: &[f64], y: &[f64], periods: &[f64]) -> Result<Solved, RhythmError> {
    if periods.is_empty() {
        return Err(RhythmError::InvalidParameter {
            name: "components",
            value: 0.0,
        });
    }
    for &p in periods {
        if !(p.is_finite() && p > 0.0) {
            return Err(RhythmError::InvalidParameter {
                name: "period_hours",
                value: p,
            });
        }
    }
    let usable = usable_rows(t, y)?;
    let (t, y) = (&usable.t, &usable.y);
    let n = t.len();
    let k = 1 + 2 * periods.len();
    if n <= k {
        return Err(RhythmError::TooFewPoints {
            needed: k + 1,
            got: n,
        });
    }
    if y.iter().all(|&v| v == y[0]) {
        return Err(RhythmError::ZeroVariance);
    }
    let design = DMatrix::from_fn(n, k, |i, j| {
        if j == 0 {
            return 1.0;
        }
        let p = periods[(j - 1) / 2];
        // Exact remainder: epoch-sized times keep their phase.
        let (s, c) = (TAU * (t[i] % p) / p).sin_cos();
        if j % 2 == 1 {
            c
        } else {
            s
        }
    });
    let singular = || RhythmError::SingularDesign { period: periods[0] };
    let qr = design.clone().qr();
    let r = qr.r();
    // A column (nearly) dependent on the others: a repeated period or phases that do not
    // span a component's cycle.
    let scale = (0..k).map(|i| r[(i, i)].abs()).fold(0.0, f64::max);
    if (0..k).any(|i| r[(i, i)].abs() <= scale * 1e-10) {
        return Err(singular());
    }
    let mut qty = DVector::from_column_slice(y);
    qr.q_tr_mul(&mut qty);
    let coef = r
        .solve_upper_triangular(&qty.rows(0, k).into_owned())
        .ok_or_else(singular)?;
    let r_inv = r
        .solve_upper_triangular(&DMatrix::identity(k, k))
        .ok_or_else(singular)?;
    let fitted = &design * &coef;
    let mean = y.iter().sum::<f64>() / n as f64;
    let (mut sse, mut ssm, mut sst) = (0.0, 0.0, 0.0);
    for i in 0..n {
        sse += (y[i] - fitted[i]).powi(2);
        ssm += (fitted[i] - mean).powi(2);
        sst += (y[i] - mean).powi(2);
    }
    let sigma2 = sse / (n - k) as f64;
    Ok(Solved {
        coef: coef.iter().copied().collect(),
        cov: &r_inv * r_inv.transpose() * sigma2,
        sse,
        ssm,
        sst,
        n,
        n_skipped: usable.n_skipped,
    })
}

/// Amplitude and acrophase of `β cos ωt + γ sin ωt` and the peak time within `period`.
pub(crate) fn polar(beta: f64, gamma: f64, period: f64) -> (f64, f64, f64) {
    let amplitude = beta.hypot(gamma);
    let mut acrophase = (-gamma).atan2(beta);
    if acrophase <= -PI {
        acrophase += TAU;
    }
    let mut peak = (-acrophase / TAU * period).rem_euclid(period);
    if peak >= period {
        peak = 0.0;
    }
    (amplitude, acrophase, peak)
}

/// Fits the cosinor with one component per period in `periods`.
///
/// ```
/// use kaiabc_operators::rhythm::multi_cosinor::multi_cosinor;
/// use std::f64::consts::TAU;
///
/// let t: Vec<f64> = (0..96).map(|i| i as f64 * 0.75).collect();
/// let y: Vec<f64> = t
///     .iter()
///     .map(|&h| 5.0 + 2.0 * (TAU * h / 24.0 - 1.0).cos() + 0.5 * (TAU * h / 12.0 + 0.3).cos())
///     .collect();
/// let fit = multi_cosinor(&t, &y, &[24.0, 12.0]).unwrap();
/// assert!((fit.mesor - 5.0).abs() < 1e-12);
/// assert!((fit.components[0].amplitude - 2.0).abs() < 1e-12);
/// assert!((fit.components[1].acrophase_rad - 0.3).abs() < 1e-12);
/// ```
pub fn multi_cosinor(
    t: &[f64],
    y: &[f64],
    periods: &[f64],
) -> Result<MultiCosinorFit, RhythmError> {
    let s = solve(t, y, periods)?;
    let k = s.coef.len();
    let df = s.n - k;
    let dff = df as f64;
    let t_crit = StudentsT::new(0.0, 1.0, dff)
        .expect("df >= 1 is a valid Student-t")
        .inverse_cdf(0.5 + CONFIDENCE_LEVEL / 2.0);
    let ci = |c: f64, se: f64| [c - t_crit * se, c + t_crit * se];
    let sigma2 = s.sse / dff;
    let components = periods
        .iter()
        .enumerate()
        .map(|(i, &period)| {
            let (b, g) = (1 + 2 * i, 2 + 2 * i);
            let (beta, gamma) = (s.coef[b], s.coef[g]);
            let (amplitude, acrophase, peak) = polar(beta, gamma, period);
            let (vbb, vbg, vgg) = (s.cov[(b, b)], s.cov[(b, g)], s.cov[(g, g)]);
            let quad =
                |u: [f64; 2]| u[0] * u[0] * vbb + 2.0 * u[0] * u[1] * vbg + u[1] * u[1] * vgg;
            let (sin_phi, cos_phi) = acrophase.sin_cos();
            let se_a = quad([cos_phi, -sin_phi]).sqrt();
            let se_phi = quad([-sin_phi / amplitude, -cos_phi / amplitude]).sqrt();
            // Wald: (β, γ) V⁻¹ (β, γ)ᵀ / 2 on (2, df).
            let det = vbb * vgg - vbg * vbg;
            let wald = (beta * beta * vgg - 2.0 * beta * gamma * vbg + gamma * gamma * vbb) / det;
            let f = wald / 2.0;
            Component {
                period_hours: period,
                beta,
                gamma,
                amplitude,
                acrophase_rad: acrophase,
                peak_time_hours: peak,
                amplitude_ci: ci(amplitude, se_a),
                acrophase_ci: ci(acrophase, se_phi),
                p_value: beta_reg(dff / 2.0, 1.0, dff / (dff + 2.0 * f)),
            }
        })
        .collect::<Vec<_>>();
    let q = (k - 1) as f64;
    let f_statistic = (s.ssm / q) / sigma2;
    let p_value = beta_reg(dff / 2.0, q / 2.0, dff / (dff + q * f_statistic));
    let (overall_amplitude, orthophase, bathyphase) =
        composite_extremes(&components, periods.iter().cloned().fold(0.0, f64::max));
    Ok(MultiCosinorFit {
        mesor: s.coef[0],
        mesor_ci: ci(s.coef[0], s.cov[(0, 0)].sqrt()),
        components,
        overall_amplitude,
        orthophase_hours: orthophase,
        bathyphase_hours: bathyphase,
        p_value,
        f_statistic,
        r_squared: 1.0 - s.sse / s.sst,
        residual_se: sigma2.sqrt(),
        df_resid: df,
        n_points: s.n,
        n_skipped: s.n_skipped,
    })
}

/// The rhythmic part of the composite curve at time `t`.
fn composite(components: &[Component], t: f64) -> f64 {
    components
        .iter()
        .map(|c| {
            let w = TAU * (t % c.period_hours) / c.period_hours;
            c.beta * w.cos() + c.gamma * w.sin()
        })
        .sum()
}

/// `(half peak-to-trough, peak time, trough time)` of the composite over `[0, cycle)`: a dense
/// grid, then golden-section refinement of the best grid point's bracket.
pub(crate) fn composite_extremes(components: &[Component], cycle: f64) -> (f64, f64, f64) {
    const GRID: usize = 4096;
    let f = |t: f64| composite(components, t);
    let step = cycle / GRID as f64;
    let (mut hi, mut lo) = (0usize, 0usize);
    let values: Vec<f64> = (0..GRID).map(|i| f(i as f64 * step)).collect();
    for i in 1..GRID {
        if values[i] > values[hi] {
            hi = i;
        }
        if values[i] < values[lo] {
            lo = i;
        }
    }
    let peak = golden(|t| -f(t), hi as f64 * step - step, hi as f64 * step + step);
    let trough = golden(f, lo as f64 * step - step, lo as f64 * step + step);
    (
        0.5 * (f(peak) - f(trough)),
        peak.rem_euclid(cycle),
        trough.rem_euclid(cycle),
    )
}

/// The minimum of a unimodal `f` on `[a, b]` by golden-section search.
fn golden(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> f64 {
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - r * (b - a);
    let mut d = a + r * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..200 {
        if (b - a).abs() <= 1e-13 * (1.0 + a.abs()) {
            break;
        }
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - r * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + r * (b - a);
            fd = f(d);
        }
    }
    0.5 * (a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_component_agrees_with_the_single_cosinor() {
        let t: Vec<f64> = (0..50).map(|i| f64::from(i) * 1.3).collect();
        let y: Vec<f64> = t
            .iter()
            .enumerate()
            .map(|(i, &h)| 3.0 + (TAU * h / 24.0 + 0.7).cos() + 0.1 * ((i * 7919) % 13) as f64)
            .collect();
        let one = super::super::cosinor(&t, &y, 24.0).unwrap();
        let multi = multi_cosinor(&t, &y, &[24.0]).unwrap();
        let c = multi.components[0];
        for (a, b) in [
            (one.mesor, multi.mesor),
            (one.amplitude, c.amplitude),
            (one.acrophase_rad, c.acrophase_rad),
            (one.p_value, multi.p_value),
            (one.p_value, c.p_value),
            (one.amplitude_ci[0], c.amplitude_ci[0]),
            (one.acrophase_ci[1], c.acrophase_ci[1]),
            (one.mesor_ci[0], multi.mesor_ci[0]),
        ] {
            assert!((a - b).abs() < 1e-9 * (1.0 + a.abs()), "{a} vs {b}");
        }
        // One component: the composite is the component.
        assert!((multi.overall_amplitude - c.amplitude).abs() < 1e-9);
        assert!((multi.orthophase_hours - c.peak_time_hours).abs() < 1e-6);
    }

    #[test]
    fn a_repeated_period_or_too_few_points_is_refused() {
        let t: Vec<f64> = (0..30).map(f64::from).collect();
        let y: Vec<f64> = t.iter().map(|h| (TAU * h / 24.0).cos()).collect();
        assert!(matches!(
            multi_cosinor(&t, &y, &[24.0, 24.0]),
            Err(RhythmError::SingularDesign { .. })
        ));
        assert!(matches!(
            multi_cosinor(&t[..5], &y[..5], &[24.0, 12.0]),
            Err(RhythmError::TooFewPoints { .. })
        ));
    }
}
