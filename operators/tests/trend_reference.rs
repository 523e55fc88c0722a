//! Period trends against statsmodels 0.15 (OLS with HAC covariance, Bartlett kernel, normal
//! inference) and pymannkendall 1.4.3 (`original_test`, Sen's slope): committed values from
//! `scripts/reference/trend_reference.py` in `tests/data/trend_reference.json` (a node's period
//! over 60 or 12 daily windows with AR(1) noise, with and without drift). No Python needed.

use kaiabc_operators::rhythm::trend::{default_max_lags, trend};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    statsmodels_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    hac_maxlags: usize,
    hac: Fit,
    ols: Fit,
    mann_kendall: Mk,
}

#[derive(Deserialize)]
struct Fit {
    intercept: f64,
    slope: f64,
    slope_bse: f64,
    #[serde(default)]
    slope_pvalue: f64,
    slope_conf_int: [f64; 2],
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Mk {
    p: f64,
    z: f64,
    Tau: f64,
    s: f64,
    var_s: f64,
    slope: f64,
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs().max(1e-300),
        "{what}: got {got:e}, reference {want:e}"
    );
}

#[test]
fn hac_trend_and_mann_kendall_match_statsmodels_and_pymannkendall() {
    let r: Reference = serde_json::from_str(include_str!("data/trend_reference.json")).unwrap();
    assert!(r.statsmodels_version.starts_with("0.15"));
    assert_eq!(r.cases.len(), 4);
    for c in &r.cases {
        let n = &c.name;
        assert_eq!(default_max_lags(c.x.len()), c.hac_maxlags, "{n}");
        let t = trend(&c.x, &c.y, None).unwrap();
        let h = t.hac;
        assert_eq!(h.max_lags, c.hac_maxlags, "{n}");
        close(&format!("{n} slope"), h.slope, c.hac.slope, 1e-9);
        close(
            &format!("{n} intercept"),
            h.intercept,
            c.hac.intercept,
            1e-12,
        );
        close(&format!("{n} HAC se"), h.slope_se, c.hac.slope_bse, 1e-9);
        close(&format!("{n} HAC p"), h.p_value, c.hac.slope_pvalue, 1e-9);
        close(
            &format!("{n} HAC ci lo"),
            h.slope_ci[0],
            c.hac.slope_conf_int[0],
            1e-9,
        );
        close(
            &format!("{n} HAC ci hi"),
            h.slope_ci[1],
            c.hac.slope_conf_int[1],
            1e-9,
        );
        close(
            &format!("{n} OLS se"),
            h.ols_slope_se,
            c.ols.slope_bse,
            1e-9,
        );
        assert!((c.ols.slope - h.slope).abs() < 1e-12);
        let m = t.mann_kendall;
        let w = &c.mann_kendall;
        assert_eq!(m.s, w.s, "{n}");
        close(&format!("{n} var_s"), m.var_s, w.var_s, 1e-12);
        close(&format!("{n} z"), m.z, w.z, 1e-12);
        // pymannkendall's p is 2(1 − Φ(|z|)), which is exactly 0 below ~1e-16; ours is the
        // survival function, exact there too.
        assert!(
            (m.p_value - w.p).abs() <= 1e-9 * w.p + 1e-15,
            "{n} MK p: {} vs {}",
            m.p_value,
            w.p
        );
        close(&format!("{n} tau"), m.tau, w.Tau, 1e-12);
        close(&format!("{n} Sen"), m.sen_slope, w.slope, 1e-12);
    }
}
