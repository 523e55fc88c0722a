//! Population-mean cosinor: the rhythm of a group (nodes of a site, a fleet) from one cosinor
//! per member, after Cornelissen (2014, Theor Biol Med Model 11:16, "population-mean cosinor")
//! and Bingham et al. (1982, Chronobiologia 9:397).
//!
//! Each of the `k` members is fitted alone (one or more components). The population's MESOR
//! and each component's `(β, γ)` are the means over members; amplitude and acrophase follow
//! from the mean `(β̄, γ̄)`. Inference uses the spread between members, not the residuals within
//! them: the MESOR's interval is `M̄ ± t_{k−1}·s_M/√k`, the amplitude's `A ± t_{k−1}√c22` and
//! the acrophase's from `c22`, `c23`, `c33` (the members' (co)variances of `(β, γ)` projected
//! on the mean's direction), as Bingham et al. give them in Cornelissen's notation and
//! CosinorPy and the R package cosinor2 compute them; a component's zero-amplitude test is
//! Hotelling's `T²` of
//! `(β̄, γ̄) = 0`, an `F(2, k−2)`.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::multi_cosinor::{polar, solve, CONFIDENCE_LEVEL};
use super::RhythmError;

/// Members needed: `k − 2 ≥ 1` degrees of freedom for the F-test.
pub const MIN_MEMBERS: usize = 3;

/// One member's fit, as the population mean uses it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberFit {
    /// The member's name (node id or file).
    pub name: String,
    /// Its MESOR.
    pub mesor: f64,
    /// `(β, γ)` per component.
    pub coefficients: Vec<[f64; 2]>,
    /// Its usable rows.
    pub n_points: usize,
}

/// One component of the population-mean fit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PopulationComponent {
    /// Its period (hours).
    pub period_hours: f64,
    /// Mean `β` over members.
    pub beta: f64,
    /// Mean `γ` over members.
    pub gamma: f64,
    /// `√(β̄² + γ̄²)`.
    pub amplitude: f64,
    /// `atan2(−γ̄, β̄)`.
    pub acrophase_rad: f64,
    /// Peak time of the mean component within its period.
    pub peak_time_hours: f64,
    /// 95 % interval for the amplitude, `A ± t_{k−1}√c22` (may reach below zero).
    pub amplitude_ci: [f64; 2],
    /// 95 % interval for the acrophase, unwrapped around it; `None` when the amplitude's
    /// interval reaches zero (no direction is then excluded).
    pub acrophase_ci: Option<[f64; 2]>,
    /// Hotelling's test of zero amplitude, `F(2, k − 2)`.
    pub p_value: f64,
    /// Its F statistic.
    pub f_statistic: f64,
}

/// The population-mean cosinor of `k` members.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PopulationFit {
    /// Members.
    pub members: usize,
    /// Mean MESOR.
    pub mesor: f64,
    /// Its 95 % interval, `t_{k−1}`.
    pub mesor_ci: [f64; 2],
    /// Per component.
    pub components: Vec<PopulationComponent>,
    /// The members' own fits.
    pub member_fits: Vec<MemberFit>,
}

/// Fits each member `(name, t, y)` with components at `periods` and combines them.
pub fn population_cosinor(
    members: &[(String, Vec<f64>, Vec<f64>)],
    periods: &[f64],
) -> Result<PopulationFit, RhythmError> {
    let k = members.len();
    if k < MIN_MEMBERS {
        return Err(RhythmError::TooFewMembers {
            needed: MIN_MEMBERS,
            got: k,
        });
    }
    let mut member_fits = Vec::with_capacity(k);
    for (name, t, y) in members {
        let s = solve(t, y, periods)?;
        member_fits.push(MemberFit {
            name: name.clone(),
            mesor: s.coef[0],
            coefficients: (0..periods.len())
                .map(|i| [s.coef[1 + 2 * i], s.coef[2 + 2 * i]])
                .collect(),
            n_points: s.n,
        });
    }
    let kf = k as f64;
    let mesors: Vec<f64> = member_fits.iter().map(|m| m.mesor).collect();
    let (mesor, sd_mesor) = mean_sd(&mesors);
    let t_crit = StudentsT::new(0.0, 1.0, kf - 1.0)
        .expect("k >= 3")
        .inverse_cdf(0.5 + CONFIDENCE_LEVEL / 2.0);
    let half = t_crit * sd_mesor / kf.sqrt();
    let components = periods
        .iter()
        .enumerate()
        .map(|(i, &period)| {
            let b: Vec<f64> = member_fits.iter().map(|m| m.coefficients[i][0]).collect();
            let g: Vec<f64> = member_fits.iter().map(|m| m.coefficients[i][1]).collect();
            component(period, &b, &g, t_crit)
        })
        .collect();
    Ok(PopulationFit {
        members: k,
        mesor,
        mesor_ci: [mesor - half, mesor + half],
        components,
        member_fits,
    })
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

/// The mean component of the members' `(β_i, γ_i)` with the population-mean inference of
/// Bingham et al. (1982) in Cornelissen's (2014) notation: with `s_β`, `s_γ`, `s_βγ` the
/// members' sample (co)variances,
/// `c22 = (s_β²β̄² + 2s_βγβ̄γ̄ + s_γ²γ̄²)/(kA²)`, `c23 = (−(s_β² − s_γ²)β̄γ̄ + s_βγ(β̄² − γ̄²))/(kA²)`,
/// `c33 = (s_β²γ̄² − 2s_βγβ̄γ̄ + s_γ²β̄²)/(kA²)`; the amplitude's interval is `A ± t√c22` and the
/// acrophase's `φ + atan((c23t² ± t√c33·√(A² − (c22c33 − c23²)t²/c33))/(A² − c22t²))`,
/// undetermined when the amplitude's interval reaches zero (`t = t_{k−1}(0.975)`).
fn component(period: f64, b: &[f64], g: &[f64], t_crit: f64) -> PopulationComponent {
    let k = b.len() as f64;
    let (mb, sb) = mean_sd(b);
    let (mg, sg) = mean_sd(g);
    let sbg = b
        .iter()
        .zip(g)
        .map(|(x, y)| (x - mb) * (y - mg))
        .sum::<f64>()
        / (k - 1.0);
    let (vb, vg) = (sb * sb, sg * sg);
    let (amplitude, acrophase, peak) = polar(mb, mg, period);
    let a2 = amplitude * amplitude;
    let c22 = (vb * mb * mb + 2.0 * sbg * mb * mg + vg * mg * mg) / (k * a2);
    let c23 = (-(vb - vg) * mb * mg + sbg * (mb * mb - mg * mg)) / (k * a2);
    let c33 = (vb * mg * mg - 2.0 * sbg * mb * mg + vg * mb * mb) / (k * a2);
    let t2 = t_crit * t_crit;
    let half = t_crit * c22.sqrt();
    let amplitude_ci = [amplitude - half, amplitude + half];
    let acrophase_ci = (amplitude_ci[0] > 0.0).then(|| {
        let r = (a2 - (c22 * c33 - c23 * c23) * t2 / c33).max(0.0).sqrt();
        let den = a2 - c22 * t2;
        let lo = acrophase + ((c23 * t2 - t_crit * c33.sqrt() * r) / den).atan();
        let hi = acrophase + ((c23 * t2 + t_crit * c33.sqrt() * r) / den).atan();
        [lo.min(hi), lo.max(hi)]
    });
    // Hotelling's T² of (β̄, γ̄) = 0 against the members' covariance, an F(2, k − 2).
    let df2 = k - 2.0;
    let det = vb * vg - sbg * sbg;
    let quad = (mb * mb * vg - 2.0 * mb * mg * sbg + mg * mg * vb) / det;
    let f_statistic = k * df2 / (2.0 * (k - 1.0)) * quad;
    // F(2, m) has the closed-form survival (1 + 2F/m)^(−m/2).
    let p_value = (1.0 + 2.0 * f_statistic / df2).powf(-df2 / 2.0);
    PopulationComponent {
        period_hours: period,
        beta: mb,
        gamma: mg,
        amplitude,
        acrophase_rad: acrophase,
        peak_time_hours: peak,
        amplitude_ci,
        acrophase_ci,
        p_value,
        f_statistic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    fn member(name: &str, m: f64, a: f64, phi: f64) -> (String, Vec<f64>, Vec<f64>) {
        let t: Vec<f64> = (0..72).map(f64::from).collect();
        let y = t
            .iter()
            .map(|h| m + a * (TAU * h / 24.0 + phi).cos())
            .collect();
        (name.into(), t, y)
    }

    #[test]
    fn the_mean_of_noiseless_members_is_their_mean_rhythm() {
        let members = vec![
            member("a", 20.0, 4.0, -1.0),
            member("b", 21.0, 4.5, -1.2),
            member("c", 19.5, 3.5, -1.1),
            member("d", 20.5, 4.2, -0.9),
        ];
        let fit = population_cosinor(&members, &[24.0]).unwrap();
        assert!((fit.mesor - 20.25).abs() < 1e-9);
        let c = fit.components[0];
        let mb = (4.0 * (-1.0f64).cos()
            + 4.5 * (-1.2f64).cos()
            + 3.5 * (-1.1f64).cos()
            + 4.2 * (-0.9f64).cos())
            / 4.0;
        assert!((c.beta - mb).abs() < 1e-9);
        assert!(c.p_value < 0.01);
        let [lo, hi] = c.amplitude_ci;
        assert!(lo < c.amplitude && c.amplitude < hi);
        let [a, b] = c.acrophase_ci.unwrap();
        assert!(a < c.acrophase_rad && c.acrophase_rad < b);
    }

    #[test]
    fn two_members_are_too_few() {
        let members = vec![member("a", 1.0, 1.0, 0.0), member("b", 1.0, 1.0, 0.1)];
        assert!(matches!(
            population_cosinor(&members, &[24.0]),
            Err(RhythmError::TooFewMembers { needed: 3, got: 2 })
        ));
    }
}
