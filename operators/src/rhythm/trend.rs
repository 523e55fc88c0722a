//! Whether a node's period drifts: a trend test over its rhythm windows' periods, robust to the
//! autocorrelation that overlapping windows bring.
//!
//! Two tests, each from its standard source:
//! - least squares with heteroskedasticity- and autocorrelation-consistent (HAC) errors
//!   (Newey & West 1987, Econometrica 55:703), computed as statsmodels'
//!   `OLS(y, add_constant(x)).fit(cov_type="HAC", cov_kwds={"maxlags": L})` does: Bartlett
//!   weights `1 − l/(L + 1)`, no small-sample correction, normal (z) inference, and by default
//!   `L = ⌊4(n/100)^(2/9)⌋` (Newey & West 1994, Rev. Econ. Stud. 61:631);
//! - the Mann–Kendall rank test (Mann 1945, Kendall 1975) with the tie-corrected variance and
//!   continuity correction, and Sen's (1968) slope, as pymannkendall's `original_test` does;
//!   it assumes no autocorrelation, so it is the check, HAC the primary answer.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// Confidence level of the slope's interval.
pub const CONFIDENCE_LEVEL: f64 = 0.95;

/// The HAC least-squares trend.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HacTrend {
    /// Slope of `y` on `x` (units of y per unit of x).
    pub slope: f64,
    /// Intercept at `x = 0`.
    pub intercept: f64,
    /// HAC standard error of the slope.
    pub slope_se: f64,
    /// 95 % interval for the slope (normal quantile).
    pub slope_ci: [f64; 2],
    /// Two-sided p-value of slope = 0 (normal).
    pub p_value: f64,
    /// Lags in the Bartlett kernel.
    pub max_lags: usize,
    /// The ordinary (iid) standard error of the slope, for comparison.
    pub ols_slope_se: f64,
}

/// The Mann–Kendall test and Sen's slope.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MannKendall {
    /// `S = Σ_{i<j} sign(y_j − y_i)`.
    pub s: f64,
    /// Variance of `S` under no trend, corrected for ties.
    pub var_s: f64,
    /// Standardised statistic with continuity correction.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Kendall's tau, `S / (n(n−1)/2)`.
    pub tau: f64,
    /// Sen's slope: the median of the pairwise slopes `(y_j − y_i)/(x_j − x_i)`.
    pub sen_slope: f64,
}

/// Both tests over the same points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Trend {
    /// Points used.
    pub n: usize,
    /// Least squares with HAC errors.
    pub hac: HacTrend,
    /// The rank test.
    pub mann_kendall: MannKendall,
}

/// Lags Newey & West's (1994) rule of thumb gives for `n` points.
pub fn default_max_lags(n: usize) -> usize {
    (4.0 * (n as f64 / 100.0).powf(2.0 / 9.0)).floor() as usize
}

/// Both trend tests of `y` against `x`; `None` with fewer than four finite points or no
/// spread in `x`.
pub fn trend(x: &[f64], y: &[f64], max_lags: Option<usize>) -> Option<Trend> {
    let (x, y): (Vec<f64>, Vec<f64>) = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(&a, &b)| (a, b))
        .unzip();
    let n = x.len();
    if n < 4 {
        return None;
    }
    let lags = max_lags.unwrap_or_else(|| default_max_lags(n)).min(n - 1);
    Some(Trend {
        n,
        hac: hac(&x, &y, lags)?,
        mann_kendall: mann_kendall(&x, &y)?,
    })
}

/// Least squares of `y` on `[1, x]` with the Bartlett-kernel HAC covariance
/// `(XᵀX)⁻¹ S (XᵀX)⁻¹`, `S = Σ_l w_l Σ_t (x_t u_t)(x_{t−l} u_{t−l})ᵀ + transpose`.
fn hac(x: &[f64], y: &[f64], lags: usize) -> Option<HacTrend> {
    let n = x.len();
    let nf = n as f64;
    let mx = x.iter().sum::<f64>() / nf;
    let my = y.iter().sum::<f64>() / nf;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    if sxx.is_nan() || sxx <= 0.0 {
        return None;
    }
    let slope = x
        .iter()
        .zip(y)
        .map(|(a, b)| (a - mx) * (b - my))
        .sum::<f64>()
        / sxx;
    let intercept = my - slope * mx;
    let u: Vec<f64> = x
        .iter()
        .zip(y)
        .map(|(a, b)| b - intercept - slope * a)
        .collect();
    // Scores x_t·u_t for the design rows [1, x_t].
    let scores: Vec<[f64; 2]> = x.iter().zip(&u).map(|(&a, &e)| [e, a * e]).collect();
    let mut s = [[0.0; 2]; 2];
    for lag in 0..=lags {
        let w = 1.0 - lag as f64 / (lags as f64 + 1.0);
        let mut m = [[0.0; 2]; 2];
        for t in lag..n {
            let (a, b) = (scores[t], scores[t - lag]);
            for i in 0..2 {
                for j in 0..2 {
                    m[i][j] += a[i] * b[j];
                }
            }
        }
        for i in 0..2 {
            for j in 0..2 {
                s[i][j] += if lag == 0 {
                    w * m[i][j]
                } else {
                    w * (m[i][j] + m[j][i])
                };
            }
        }
    }
    // (XᵀX)⁻¹ for [1, x].
    let sx: f64 = x.iter().sum();
    let sxx_raw: f64 = x.iter().map(|v| v * v).sum();
    let det = nf * sxx_raw - sx * sx;
    if det.is_nan() || det <= 0.0 {
        return None;
    }
    let h = [[sxx_raw / det, -sx / det], [-sx / det, nf / det]];
    // Row 1 of H·S·H, element (1, 1).
    let hs = [
        h[1][0] * s[0][0] + h[1][1] * s[1][0],
        h[1][0] * s[0][1] + h[1][1] * s[1][1],
    ];
    let var = hs[0] * h[0][1] + hs[1] * h[1][1];
    let slope_se = var.max(0.0).sqrt();
    let normal = Normal::standard();
    let z_crit = normal.inverse_cdf(0.5 + CONFIDENCE_LEVEL / 2.0);
    let p_value = if slope_se > 0.0 {
        2.0 * normal.sf((slope / slope_se).abs())
    } else if slope == 0.0 {
        1.0
    } else {
        0.0
    };
    let sse: f64 = u.iter().map(|e| e * e).sum();
    let ols_slope_se = (sse / (nf - 2.0) / sxx).sqrt();
    Some(HacTrend {
        slope,
        intercept,
        slope_se,
        slope_ci: [slope - z_crit * slope_se, slope + z_crit * slope_se],
        p_value,
        max_lags: lags,
        ols_slope_se,
    })
}

/// Mann–Kendall on `y` in the order given, with Sen's slope against `x`.
fn mann_kendall(x: &[f64], y: &[f64]) -> Option<MannKendall> {
    let n = y.len();
    let nf = n as f64;
    let mut s = 0.0;
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let d = y[j] - y[i];
            s += if d > 0.0 {
                1.0
            } else if d < 0.0 {
                -1.0
            } else {
                0.0
            };
            let dx = x[j] - x[i];
            if dx != 0.0 {
                slopes.push(d / dx);
            }
        }
    }
    // Ties: groups of equal y.
    let mut sorted = y.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut k = i + 1;
        while k < n && sorted[k] == sorted[i] {
            k += 1;
        }
        let t = (k - i) as f64;
        ties += t * (t - 1.0) * (2.0 * t + 5.0);
        i = k;
    }
    let var_s = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0;
    let z = if var_s <= 0.0 {
        0.0
    } else if s > 0.0 {
        (s - 1.0) / var_s.sqrt()
    } else if s < 0.0 {
        (s + 1.0) / var_s.sqrt()
    } else {
        0.0
    };
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let m = slopes.len();
    let sen_slope = if m % 2 == 1 {
        slopes[m / 2]
    } else {
        0.5 * (slopes[m / 2 - 1] + slopes[m / 2])
    };
    Some(MannKendall {
        s,
        var_s,
        z,
        p_value: 2.0 * Normal::standard().sf(z.abs()),
        tau: s / (0.5 * nf * (nf - 1.0)),
        sen_slope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_straight_line_has_its_slope_and_a_flat_one_none() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 24.0 - 0.01 * v).collect();
        let t = trend(&x, &y, None).unwrap();
        assert!((t.hac.slope + 0.01).abs() < 1e-12);
        assert!((t.mann_kendall.sen_slope + 0.01).abs() < 1e-12);
        assert_eq!(t.mann_kendall.s, -190.0);
        let flat = vec![24.0; 20];
        let t = trend(&x, &flat, None).unwrap();
        assert_eq!(t.hac.slope, 0.0);
        assert_eq!(t.mann_kendall.z, 0.0);
        assert!(trend(&x[..3], &y[..3], None).is_none());
    }

    #[test]
    fn the_rule_of_thumb_lags() {
        // ⌊4·(n/100)^(2/9)⌋: 3 for 60 windows, 4 for 100, 2 for 12.
        assert_eq!(default_max_lags(60), 3);
        assert_eq!(default_max_lags(100), 4);
        assert_eq!(default_max_lags(12), 2);
    }
}
