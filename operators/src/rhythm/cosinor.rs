//! Single-component cosinor: least-squares fit of `Y = M + A·cos(2πt/τ + φ)` at a known period
//! τ, with the zero-amplitude F-test and 95 % confidence intervals (Cornelissen 2014, Theor Biol
//! Med Model 11:16; Bingham et al. 1982, Chronobiologia 9:397).
//!
//! The model is linear in `M, β, γ` once written `M + β cos ωt + γ sin ωt` (`ω = 2π/τ`), so it
//! is solved by Householder QR of the design `[1, cos ωt, sin ωt]` (no normal equations, which
//! would square the condition number). Then `A = √(β² + γ²)`, `φ = atan2(−γ, β)` in `(−π, π]`
//! (negative = the peak lags the time origin), and the peak time is `−φτ/2π mod τ`.
//!
//! Inference (residual variance `σ̂² = SSE/(N−3)`, covariance `V = σ̂²(XᵀX)⁻¹` from `R⁻¹R⁻ᵀ`):
//! - rhythm test: `F = (SSM/2)/(SSE/(N−3))` on `(2, N−3)` df, `p = P(F₂,N−3 > F)`;
//! - MESOR: `M ± t·√V₀₀`, `t` the 97.5 % Student-t quantile on `N−3` df;
//! - amplitude and acrophase: the delta method, `A ± t·SE(A)`, `φ ± t·SE(φ)` with
//!   `SE(A)² = g_AᵀVg_A`, `g_A = (cos φ, −sin φ)` and `SE(φ)² = g_φᵀVg_φ`,
//!   `g_φ = −(sin φ, cos φ)/A`, over the `(β, γ)` block of `V`. In Cornelissen's notation
//!   (`X, Z, T` the centred second moments of `cos ωt`, `sin ωt` over N) this is
//!   `SE(A)² = σ̂²(Z cos²φ + 2T cos φ sin φ + X sin²φ) / (N(XZ − T²))` and
//!   `SE(φ)² = σ̂²(Z sin²φ − 2T sin φ cos φ + X cos²φ) / (A²N(XZ − T²))`.
//!
//! These amplitude/acrophase intervals are the usual large-sample approximation; the
//! conservative alternative (tangents to the joint confidence ellipse of `(β, γ)`) is not used.
//! They are reported raw: the amplitude interval may dip below zero and the acrophase interval
//! is not wrapped, so `lo ≤ φ ≤ hi` always holds; both are meaningless when the rhythm test is
//! not significant.

use std::f64::consts::{PI, TAU};

use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::function::beta::beta_reg;

use super::{usable_rows, RhythmError};

/// Coverage of the reported confidence intervals.
pub const CONFIDENCE_LEVEL: f64 = 0.95;

/// Smallest eigenvalue of the covariance of `(cos ωt, sin ωt)` over the sampled phases below
/// which the design counts as singular. Both variables lie in `[−1, 1]`, so this is an absolute
/// scale: at 1e-10 the phases span ~1e-5 rad in their thinnest direction, and the standard
/// errors would be inflated ~1e5-fold.
const MIN_PHASE_SPREAD: f64 = 1e-10;

/// The fitted cosinor. Angles in radians, times in hours (the unit of `t` and the period).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CosinorFit {
    /// Rhythm-adjusted mean `M`.
    pub mesor: f64,
    /// Half the peak-to-trough excursion of the fitted curve, `A ≥ 0`.
    pub amplitude: f64,
    /// `φ` in `(−π, π]`; the fitted curve peaks where `2πt/τ + φ ≡ 0`.
    pub acrophase_rad: f64,
    /// Time of the fitted peak within a cycle, `−φτ/2π mod τ`, in `[0, τ)`.
    pub peak_time_hours: f64,
    /// The period τ the fit was made at.
    pub period_hours: f64,
    /// Zero-amplitude test: probability of an F this large with no rhythm.
    pub p_value: f64,
    /// `(SSM/2)/(SSE/(N−3))`; infinite for a perfect fit (serialised as `null`).
    pub f_statistic: f64,
    /// 95 % interval for the MESOR.
    pub mesor_ci: [f64; 2],
    /// 95 % delta-method interval for the amplitude (may go below zero).
    pub amplitude_ci: [f64; 2],
    /// 95 % delta-method interval for the acrophase, unwrapped around `acrophase_rad`.
    pub acrophase_ci: [f64; 2],
    /// Fraction of the variance of `y` explained, `1 − SSE/SST`.
    pub r_squared: f64,
    /// Residual standard error `√(SSE/(N−3))`.
    pub residual_se: f64,
    /// Usable rows.
    pub n_points: usize,
    /// Rows skipped because `t` or `y` was not finite.
    pub n_skipped: usize,
}

/// Fits a single-component cosinor of period `period_hours` to the finite rows of `(t, y)`.
///
/// Phases are taken as `2π·(t mod τ)/τ` with an exact floating-point remainder, so large
/// (epoch) times lose no accuracy and adding a whole period to `t` does not change the fit.
///
/// ```
/// use kaiabc_operators::rhythm::cosinor;
///
/// let t: Vec<f64> = (0..48).map(|i| i as f64 * 1.5).collect();
/// let y: Vec<f64> = t
///     .iter()
///     .map(|&h| 10.0 + 3.0 * (std::f64::consts::TAU * h / 24.0 - 1.0).cos())
///     .collect();
/// let fit = cosinor(&t, &y, 24.0).unwrap();
/// assert!((fit.mesor - 10.0).abs() < 1e-12);
/// assert!((fit.amplitude - 3.0).abs() < 1e-12);
/// assert!((fit.acrophase_rad + 1.0).abs() < 1e-12);
/// // Peak at 2πt/24 − 1 = 0, i.e. t = 24/2π h after the origin.
/// assert!((fit.peak_time_hours - 24.0 / std::f64::consts::TAU).abs() < 1e-10);
/// assert!(fit.p_value < 1e-12);
/// ```
pub fn cosinor(t: &[f64], y: &[f64], period_hours: f64) -> Result<CosinorFit, RhythmError> {
    if !(period_hours.is_finite() && period_hours > 0.0) {
        return Err(RhythmError::InvalidParameter {
            name: "period_hours",
            value: period_hours,
        });
    }
    let usable = usable_rows(t, y)?;
    let (t, y) = (&usable.t, &usable.y);
    let n = t.len();
    let nf = n as f64;
    if y.iter().all(|&v| v == y[0]) {
        return Err(RhythmError::ZeroVariance);
    }

    let (x, z): (Vec<f64>, Vec<f64>) = t
        .iter()
        .map(|&ti| {
            let (s, c) = (TAU * (ti % period_hours) / period_hours).sin_cos();
            (c, s)
        })
        .unzip();
    if phase_spread(&x, &z) <= MIN_PHASE_SPREAD {
        return Err(RhythmError::SingularDesign {
            period: period_hours,
        });
    }

    let design = DMatrix::from_fn(n, 3, |i, j| match j {
        0 => 1.0,
        1 => x[i],
        _ => z[i],
    });
    let qr = design.qr();
    let r = qr.r();
    let mut qty = DVector::from_column_slice(y);
    qr.q_tr_mul(&mut qty);
    let singular = || RhythmError::SingularDesign {
        period: period_hours,
    };
    let coef = r
        .solve_upper_triangular(&qty.rows(0, 3).into_owned())
        .ok_or_else(singular)?;
    let r_inv = r
        .solve_upper_triangular(&DMatrix::identity(3, 3))
        .ok_or_else(singular)?;
    let xtx_inv = &r_inv * r_inv.transpose();
    let (mesor, beta, gamma) = (coef[0], coef[1], coef[2]);

    let y_mean = y.iter().sum::<f64>() / nf;
    let (mut sse, mut ssm, mut sst) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let fitted = mesor + beta * x[i] + gamma * z[i];
        sse += (y[i] - fitted) * (y[i] - fitted);
        ssm += (fitted - y_mean) * (fitted - y_mean);
        sst += (y[i] - y_mean) * (y[i] - y_mean);
    }
    let df = nf - 3.0;
    let sigma2 = sse / df;
    let f_statistic = (ssm / 2.0) / sigma2;
    // Survival of F(2, df) as the regularised incomplete beta I_{df/(df+2F)}(df/2, 1): the same
    // function statrs' FisherSnedecor::sf evaluates, with the argument formed directly so that
    // tiny p-values keep their relative precision.
    let p_value = beta_reg(df / 2.0, 1.0, df / (df + 2.0 * f_statistic));

    let amplitude = beta.hypot(gamma);
    let mut acrophase = (-gamma).atan2(beta);
    if acrophase <= -PI {
        acrophase += TAU;
    }
    let mut peak_time = (-acrophase / TAU * period_hours).rem_euclid(period_hours);
    if peak_time >= period_hours {
        peak_time = 0.0;
    }

    let t_crit = StudentsT::new(0.0, 1.0, df)
        .expect("df >= 1 is a valid Student-t")
        .inverse_cdf(0.5 + CONFIDENCE_LEVEL / 2.0);
    let v = |i: usize, j: usize| sigma2 * xtx_inv[(i, j)];
    let quad =
        |g: [f64; 2]| g[0] * g[0] * v(1, 1) + 2.0 * g[0] * g[1] * v(1, 2) + g[1] * g[1] * v(2, 2);
    let (sin_phi, cos_phi) = acrophase.sin_cos();
    let se_mesor = v(0, 0).sqrt();
    let se_amplitude = quad([cos_phi, -sin_phi]).sqrt();
    let se_acrophase = quad([-sin_phi / amplitude, -cos_phi / amplitude]).sqrt();
    let ci = |centre: f64, se: f64| [centre - t_crit * se, centre + t_crit * se];

    Ok(CosinorFit {
        mesor,
        amplitude,
        acrophase_rad: acrophase,
        peak_time_hours: peak_time,
        period_hours,
        p_value,
        f_statistic,
        mesor_ci: ci(mesor, se_mesor),
        amplitude_ci: ci(amplitude, se_amplitude),
        acrophase_ci: ci(acrophase, se_acrophase),
        r_squared: 1.0 - sse / sst,
        residual_se: sigma2.sqrt(),
        n_points: n,
        n_skipped: usable.n_skipped,
    })
}

/// Smallest eigenvalue of the 2×2 covariance of the sampled `(cos ωt, sin ωt)`: zero when the
/// phases are all equal or lie on one line through the circle's centre.
fn phase_spread(x: &[f64], z: &[f64]) -> f64 {
    let nf = x.len() as f64;
    let xm = x.iter().sum::<f64>() / nf;
    let zm = z.iter().sum::<f64>() / nf;
    let (mut sxx, mut szz, mut sxz) = (0.0, 0.0, 0.0);
    for (&xi, &zi) in x.iter().zip(z) {
        sxx += (xi - xm) * (xi - xm);
        szz += (zi - zm) * (zi - zm);
        sxz += (xi - xm) * (zi - zm);
    }
    let (sxx, szz, sxz) = (sxx / nf, szz / nf, sxz / nf);
    let largest = 0.5 * (sxx + szz) + (0.25 * (sxx - szz) * (sxx - szz) + sxz * sxz).sqrt();
    if largest > 0.0 {
        // det / λ_max avoids the cancellation of (tr − √disc)/2.
        ((sxx * szz - sxz * sxz) / largest).max(0.0)
    } else {
        0.0
    }
}
