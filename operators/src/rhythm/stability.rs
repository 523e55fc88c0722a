//! How a node's free-running or entrained period depends on temperature, from its rhythm
//! windows: the Q10 of the clock's rate (by regression of log period on the window's mean
//! temperature) and Pearson's r between period and temperature with its two-sided p-value.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// What the windows say about period against temperature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeriodTemperature {
    /// Windows used.
    pub n: usize,
    /// Q10 of the clock's rate (1/period): `exp(−10·b)` for the least-squares slope `b` of
    /// ln(period) on temperature (K); 1 is perfect temperature compensation.
    pub q10: f64,
    /// Pearson's r between period and temperature.
    pub pearson_r: f64,
    /// Its two-sided p-value (Student's t with n − 2 degrees of freedom).
    pub p_value: f64,
}

/// Q10 and correlation from `(temperature K, period h)` pairs; `None` with fewer than three
/// pairs, a non-positive period, or no spread in temperature or period.
pub fn period_temperature(points: &[(f64, f64)]) -> Option<PeriodTemperature> {
    let n = points.len();
    if n < 3
        || points
            .iter()
            .any(|&(t, p)| !(t.is_finite() && p.is_finite() && p > 0.0))
    {
        return None;
    }
    let nf = n as f64;
    let mean = |f: &dyn Fn(&(f64, f64)) -> f64| points.iter().map(f).sum::<f64>() / nf;
    let (mt, mp, ml) = (mean(&|x| x.0), mean(&|x| x.1), mean(&|x| x.1.ln()));
    let (mut stt, mut spp, mut stp, mut stl) = (0.0, 0.0, 0.0, 0.0);
    for &(t, p) in points {
        let (dt, dp) = (t - mt, p - mp);
        stt += dt * dt;
        spp += dp * dp;
        stp += dt * dp;
        stl += dt * (p.ln() - ml);
    }
    if stt <= 0.0 || spp <= 0.0 {
        return None;
    }
    let r = (stp / (stt * spp).sqrt()).clamp(-1.0, 1.0);
    // t is infinite at |r| = 1.
    let p_value = if r.abs() >= 1.0 {
        0.0
    } else {
        t_two_sided(r, n)?
    };
    Some(PeriodTemperature {
        n,
        q10: (-10.0 * stl / stt).exp(),
        pearson_r: r,
        p_value,
    })
}

fn t_two_sided(r: f64, n: usize) -> Option<f64> {
    let df = (n - 2) as f64;
    let t = r * (df / (1.0 - r * r)).sqrt();
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some((2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against SciPy 1.17.1 (an independent implementation): `scipy.stats.pearsonr(T, P)` and
    /// `exp(-10 * scipy.stats.linregress(T, log(P)).slope)` on the same eight pairs.
    #[test]
    fn matches_scipy_pearsonr_and_linregress() {
        let t = [293.15, 295.4, 297.9, 299.2, 301.7, 303.1, 305.6, 298.3];
        let p = [22.41, 22.30, 22.05, 22.10, 21.93, 21.80, 21.71, 22.02];
        let pts: Vec<(f64, f64)> = t.iter().copied().zip(p).collect();
        let got = period_temperature(&pts).unwrap();
        assert_eq!(got.n, 8);
        assert!(
            (got.pearson_r - -0.976_971_101_320_186_8).abs() < 1e-12,
            "{got:?}"
        );
        assert!(
            (got.p_value - 3.000_738_453_699_21e-5).abs() < 1e-9,
            "{got:?}"
        );
        assert!((got.q10 - 1.025_939_249_829_224).abs() < 1e-12, "{got:?}");
    }

    #[test]
    fn too_few_or_flat_windows_give_nothing() {
        assert!(period_temperature(&[(300.0, 24.0), (301.0, 24.1)]).is_none());
        assert!(period_temperature(&[(300.0, 24.0), (300.0, 24.1), (300.0, 23.9)]).is_none());
        assert!(period_temperature(&[(300.0, 24.0), (301.0, 0.0), (302.0, 23.9)]).is_none());
    }
}
