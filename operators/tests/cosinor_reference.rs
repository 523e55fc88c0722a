//! Multi-component and population-mean cosinor against CosinorPy 3.1 and statsmodels 0.15:
//! committed values from `scripts/reference/cosinor_reference.py` in
//! `tests/data/cosinor_reference.json` (24 h + 12 h fits on even and uneven times; six nodes'
//! population-mean rhythm with Cornelissen's 2014 / Bingham's 1982 intervals). No Python needed.

use kaiabc_operators::rhythm::multi_cosinor::multi_cosinor;
use kaiabc_operators::rhythm::population::population_cosinor;
use serde_json::Value;

fn close(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs().max(1e-12),
        "{what}: got {got:e}, reference {want:e}"
    );
}

fn reference() -> Value {
    serde_json::from_str(include_str!("data/cosinor_reference.json")).unwrap()
}

fn nums(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The reference's nodes as `(name, t, y)` members.
fn members(nodes: &Value) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["test"].as_str().unwrap().to_string(),
                nums(&n["t"]),
                nums(&n["y"]),
            )
        })
        .collect()
}

#[test]
fn a_24_and_12_hour_fit_matches_statsmodels_ols_and_cosinorpy_s_composite() {
    let r = reference();
    for case in r["multi_component"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (t, y) = (nums(&case["t"]), nums(&case["y"]));
        let fit = multi_cosinor(&t, &y, &[24.0, 12.0]).unwrap();
        let ols = &case["ols"];
        // statsmodels' columns: const, cos24, sin24, cos12, sin12.
        let params = nums(&ols["params"]);
        let bse = nums(&ols["bse"]);
        let ours = [
            fit.mesor,
            fit.components[0].beta,
            fit.components[0].gamma,
            fit.components[1].beta,
            fit.components[1].gamma,
        ];
        for k in 0..5 {
            close(&format!("{name} param {k}"), ours[k], params[k], 1e-9);
        }
        let ci = &ols["conf_int"][0];
        close(
            &format!("{name} mesor ci"),
            fit.mesor_ci[0],
            ci[0].as_f64().unwrap(),
            1e-9,
        );
        close(
            &format!("{name} mesor se"),
            (fit.mesor_ci[1] - fit.mesor) / (ci[1].as_f64().unwrap() - params[0]) * bse[0],
            bse[0],
            1e-9,
        );
        close(
            &format!("{name} F"),
            fit.f_statistic,
            ols["fvalue"].as_f64().unwrap(),
            1e-9,
        );
        close(
            &format!("{name} F p"),
            fit.p_value,
            ols["f_pvalue"].as_f64().unwrap(),
            1e-6,
        );
        close(
            &format!("{name} R²"),
            fit.r_squared,
            ols["rsquared"].as_f64().unwrap(),
            1e-12,
        );
        assert_eq!(fit.df_resid as f64, ols["df_resid"].as_f64().unwrap());
        // Each component's polar form, as the generator derives it from the OLS coefficients.
        let cc = &case["composite_continuous"];
        for (k, c) in fit.components.iter().enumerate() {
            let want = &cc["components"][k];
            close(
                &format!("{name} A{k}"),
                c.amplitude,
                want["amplitude"].as_f64().unwrap(),
                1e-9,
            );
            close(
                &format!("{name} φ{k}"),
                c.acrophase_rad,
                want["acrophase"].as_f64().unwrap(),
                1e-9,
            );
        }
        // The composite curve: its exact extremes…
        close(
            &format!("{name} overall A"),
            fit.overall_amplitude,
            cc["amplitude"].as_f64().unwrap(),
            1e-9,
        );
        assert!(
            (fit.orthophase_hours - cc["peak_time"].as_f64().unwrap()).abs() < 1e-6,
            "{name}"
        );
        assert!(
            (fit.bathyphase_hours - cc["trough_time"].as_f64().unwrap()).abs() < 1e-6,
            "{name}"
        );
        // …and CosinorPy's, read off its 1000-point grid over 48 h (step 0.048 h): within a step.
        let rhythm = &case["cosinorpy"]["rhythm"];
        let step = 48.0 / 999.0;
        assert!(
            (fit.orthophase_hours - rhythm["peaks"][0].as_f64().unwrap()).abs() <= step,
            "{name}"
        );
        assert!(
            (fit.bathyphase_hours - rhythm["troughs"][0].as_f64().unwrap()).abs() <= step,
            "{name}"
        );
        assert!(
            (fit.overall_amplitude - rhythm["amplitude"].as_f64().unwrap()).abs() < 1e-3,
            "{name}"
        );
    }
}

#[test]
fn the_population_mean_cosinor_matches_cosinorpy() {
    let r = reference();
    let p = &r["population_single"];
    let members = members(&p["nodes"]);
    let fit = population_cosinor(&members, &[24.0]).unwrap();
    assert_eq!(fit.members, 6);
    for (m, want) in fit
        .member_fits
        .iter()
        .zip(p["per_node"].as_array().unwrap())
    {
        close(
            "member mesor",
            m.mesor,
            want["mesor"].as_f64().unwrap(),
            1e-9,
        );
        close(
            "member beta",
            m.coefficients[0][0],
            want["beta"].as_f64().unwrap(),
            1e-9,
        );
        close(
            "member gamma",
            m.coefficients[0][1],
            want["gamma"].as_f64().unwrap(),
            1e-9,
        );
    }
    let py = &p["cosinorpy"];
    let c = fit.components[0];
    let means = nums(&py["means"]);
    close("mesor", fit.mesor, means[0], 1e-12);
    close("beta", c.beta, means[1], 1e-12);
    close("gamma", c.gamma, means[2], 1e-12);
    close("amplitude", c.amplitude, means[3], 1e-12);
    let mesor_ci = nums(&py["mesor_ci"]);
    close("mesor ci lo", fit.mesor_ci[0], mesor_ci[0], 1e-12);
    close("mesor ci hi", fit.mesor_ci[1], mesor_ci[1], 1e-12);
    let amp_ci = nums(&py["amplitude_ci"]);
    close("amplitude ci lo", c.amplitude_ci[0], amp_ci[0], 1e-12);
    close("amplitude ci hi", c.amplitude_ci[1], amp_ci[1], 1e-12);
    // CosinorPy gives the population acrophase in (−2π, 0]; ours is in (−π, π]: the same angle.
    let shift = py["acrophase_wrapped"].as_f64().unwrap() - py["acrophase"].as_f64().unwrap();
    close(
        "acrophase",
        c.acrophase_rad,
        py["acrophase_wrapped"].as_f64().unwrap(),
        1e-12,
    );
    let acr_ci = nums(&py["acrophase_ci"]);
    let ours = c
        .acrophase_ci
        .expect("the amplitude interval excludes zero");
    close("acrophase ci lo", ours[0], acr_ci[0] + shift, 1e-12);
    close("acrophase ci hi", ours[1], acr_ci[1] + shift, 1e-12);
    close("p", c.p_value, py["p_value"].as_f64().unwrap(), 1e-9);
    close(
        "F",
        c.f_statistic,
        p["intermediates"]["f_value"].as_f64().unwrap(),
        1e-9,
    );
}

/// Two components per node: the population's mean coefficients are CosinorPy's
/// `population_fit` means (its columns: const, sin24, cos24, sin12, cos12).
#[test]
fn a_two_component_population_mean_matches_cosinorpy() {
    let r = reference();
    let p = &r["population_multi"];
    let members = members(&p["nodes"]);
    let fit = population_cosinor(&members, &[24.0, 12.0]).unwrap();
    let m = nums(&p["cosinorpy"]["mean_params"]);
    close("mesor", fit.mesor, m[0], 1e-9);
    close("cos24", fit.components[0].beta, m[2], 1e-9);
    close("sin24", fit.components[0].gamma, m[1], 1e-9);
    close("cos12", fit.components[1].beta, m[4], 1e-9);
    close("sin12", fit.components[1].gamma, m[3], 1e-9);
}
