//! The Morlet wavelet transform against pycwt 0.5.0b0, the Python implementation of Torrence &
//! Compo (1998): committed values from `scripts/reference/wavelet_reference.py` in
//! `tests/data/wavelet_reference.json` (a noisy 24 h sine, a chirp whose period drifts from 24 h
//! to 20 h, two weeks of real hourly temperatures from Greensboro, and a short series whose
//! length is not a power of two). The test does not need Python.

use std::sync::OnceLock;

use kaiabc_operators::rhythm::wavelet::{
    ar1, cwt, global_significance, local_significance, wavelet_spectrum, Morlet, Scales,
    WaveletOptions,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    pycwt_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Case {
    name: String,
    dt: f64,
    dj: f64,
    s0: f64,
    J: usize,
    t: Vec<f64>,
    y: Vec<f64>,
    mean: f64,
    std: f64,
    alpha: f64,
    scales: Vec<f64>,
    periods: Vec<f64>,
    coi: Vec<f64>,
    global_power: Vec<f64>,
    signif: Vec<f64>,
    global_signif_dof: Vec<f64>,
    global_signif: Vec<f64>,
    power_rows: Vec<usize>,
    power_cols: Vec<usize>,
    power: Vec<Vec<f64>>,
    wave_re: Option<Vec<Vec<f64>>>,
    wave_im: Option<Vec<Vec<f64>>>,
}

fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let r: Reference =
            serde_json::from_str(include_str!("data/wavelet_reference.json")).unwrap();
        assert!(r.pycwt_version.starts_with("0.5"));
        assert_eq!(r.cases.len(), 4);
        r
    })
}

/// Relative agreement, with an absolute floor for values near zero.
fn close(what: &str, got: f64, want: f64, rel: f64) {
    let tol = rel * want.abs().max(1e-12);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:e}, pycwt {want:e} (diff {:e})",
        (got - want).abs()
    );
}

impl Case {
    fn normalised(&self) -> Vec<f64> {
        let n = self.y.len() as f64;
        let mean = self.y.iter().sum::<f64>() / n;
        let std = (self.y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        close(&format!("{} mean", self.name), mean, self.mean, 1e-9);
        close(&format!("{} std", self.name), std, self.std, 1e-12);
        self.y.iter().map(|v| (v - mean) / std).collect()
    }

    fn scales(&self) -> Scales {
        Scales {
            dt: self.dt,
            dj: self.dj,
            s0: self.s0,
            j: self.J,
        }
    }
}

#[test]
fn lag1_autocorrelation_matches_pycwt_ar1() {
    for c in &reference().cases {
        let got = ar1(&c.normalised()).expect("pycwt found a root");
        close(&format!("{} alpha", c.name), got, c.alpha, 1e-10);
    }
}

#[test]
fn scales_periods_and_cone_of_influence_match_pycwt() {
    for c in &reference().cases {
        let tr = cwt(&c.normalised(), &c.scales(), &Morlet::default());
        assert_eq!(tr.scales.len(), c.scales.len(), "{}", c.name);
        for j in 0..c.scales.len() {
            close(
                &format!("{} scale {j}", c.name),
                tr.scales[j],
                c.scales[j],
                1e-12,
            );
            close(
                &format!("{} period {j}", c.name),
                tr.periods[j],
                c.periods[j],
                1e-12,
            );
        }
        assert_eq!(tr.coi.len(), c.coi.len());
        for (i, (a, b)) in tr.coi.iter().zip(&c.coi).enumerate() {
            close(&format!("{} coi {i}", c.name), *a, *b, 1e-12);
        }
    }
}

#[test]
fn wavelet_power_and_the_global_spectrum_match_pycwt() {
    for c in &reference().cases {
        let tr = cwt(&c.normalised(), &c.scales(), &Morlet::default());
        for (r, &j) in c.power_rows.iter().enumerate() {
            let row = tr.row(j);
            // Tolerance relative to the row's largest power: near-zero cells carry FFT rounding.
            let scale = row.iter().map(|w| w.norm_sqr()).fold(0.0, f64::max);
            for (k, &i) in c.power_cols.iter().enumerate() {
                let got = row[i].norm_sqr();
                let want = c.power[r][k];
                assert!(
                    (got - want).abs() <= 1e-9 * scale,
                    "{} power[{j}][{i}]: got {got:e}, pycwt {want:e}",
                    c.name
                );
                if let (Some(re), Some(im)) = (&c.wave_re, &c.wave_im) {
                    let amp = scale.sqrt();
                    assert!((row[i].re - re[r][k]).abs() <= 1e-9 * amp, "{} re", c.name);
                    assert!((row[i].im - im[r][k]).abs() <= 1e-9 * amp, "{} im", c.name);
                }
            }
            let mean = row.iter().map(|w| w.norm_sqr()).sum::<f64>() / row.len() as f64;
            close(
                &format!("{} global[{j}]", c.name),
                mean,
                c.global_power[j],
                1e-9,
            );
        }
    }
}

#[test]
fn red_noise_significance_matches_pycwt() {
    for c in &reference().cases {
        let tr = cwt(&c.normalised(), &c.scales(), &Morlet::default());
        let local = local_significance(c.alpha, c.dt, &tr.periods, 0.95);
        assert_eq!(local.len(), c.signif.len());
        for (j, (got, want)) in local.iter().zip(&c.signif).enumerate() {
            close(&format!("{} signif[{j}]", c.name), *got, *want, 1e-9);
        }
        let global = global_significance(c.alpha, &c.scales(), &tr, &c.global_signif_dof, 0.95);
        assert_eq!(global.len(), c.global_signif.len());
        for (j, (got, want)) in global.iter().zip(&c.global_signif).enumerate() {
            close(&format!("{} global signif[{j}]", c.name), *got, *want, 1e-9);
        }
    }
}

/// The chirp's instantaneous period runs linearly from 24 h to 20 h over 20 days (the
/// generator's construction): the ridge of the spectrum follows it inside the cone of
/// influence.
#[test]
fn the_ridge_follows_a_period_that_drifts_from_24_to_20_hours() {
    let c = reference()
        .cases
        .iter()
        .find(|c| c.name == "drift_24_to_20h")
        .unwrap();
    let w = wavelet_spectrum(
        &c.t,
        &c.y,
        &WaveletOptions {
            min_period_hours: 8.0,
            max_period_hours: 40.0,
            ..Default::default()
        },
    )
    .unwrap();
    let span = c.t[c.t.len() - 1] - c.t[0];
    let truth = |t: f64| 24.0 - 4.0 * (t - c.t[0]) / span;
    let mut checked = 0;
    for (i, &t) in w.times_hours.iter().enumerate() {
        let p = w.ridge_period_hours[i];
        // Inside the cone only: near the ends the record's edges bias it.
        if p < w.coi_hours[i] {
            assert!(
                (p - truth(t)).abs() < 1.6,
                "t {t}: ridge {p}, truth {}",
                truth(t)
            );
            checked += 1;
        }
    }
    assert!(checked > c.t.len() / 2, "{checked}");
    // The global spectrum of the normalised series is pycwt's too (no gaps, same grid).
    assert_eq!(w.n_gaps, 0);
    assert_eq!(w.dt_hours, c.dt);
}
