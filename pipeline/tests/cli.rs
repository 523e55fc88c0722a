//! End-to-end tests of the `kaiabc` command: real process, real files, real exit codes.

use std::path::Path;

mod common;
use common::{kaiabc, ok};

fn fails(args: &[&str]) -> String {
    let out = kaiabc(args);
    assert!(!out.status.success(), "kaiabc {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// `kaiabc analyze periodogram` of a `simulate` CSV's `koa` column, as JSON.
fn koa_periodogram(csv: &str) -> serde_json::Value {
    let out = ok(&[
        "analyze",
        "periodogram",
        "--input",
        csv,
        "--value-column",
        "koa",
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn simulate_csv_has_the_documented_header_and_rows() {
    let out = ok(&[
        "simulate",
        "--hours",
        "24",
        "--temperature-c",
        "30",
        "--step-minutes",
        "30",
    ]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "t_hours,C_U,C_S,C_T,C_ST,A_free,CABC_complex,koa,circadian_time,phase,temperature_kelvin"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 49);
    for r in &rows {
        // KaiC conserved: C_U + C_S + C_T + C_ST = 3.4 µM; KaiA: A_free + CABC = 1.3 µM.
        assert!((r[1] + r[2] + r[3] + r[4] - 3.4).abs() < 1e-9);
        assert!((r[5] + r[6] - 1.3).abs() < 1e-9);
        assert!((0.0..=1.0).contains(&r[7]) && (0.0..24.0).contains(&r[8]));
        assert!((r[9] - r[8] / 24.0).abs() < 1e-12);
        assert!((r[10] - 303.15).abs() < 1e-9);
    }
    assert_eq!(rows[48][0], 24.0);
}

#[test]
fn simulate_json_rows_match_the_csv_rows() {
    let csv = ok(&[
        "simulate",
        "--hours",
        "3",
        "--temperature-c",
        "25",
        "--step-minutes",
        "60",
    ]);
    let json = ok(&[
        "simulate",
        "--hours",
        "3",
        "--temperature-c",
        "25",
        "--step-minutes",
        "60",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let last_csv: Vec<f64> = csv
        .lines()
        .last()
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(rows[3]["C_ST"].as_f64().unwrap(), last_csv[4]);
    assert_eq!(rows[3]["koa"].as_f64().unwrap(), last_csv[7]);
}

#[test]
fn simulate_follows_a_temperature_csv() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "temp.csv",
        "t_hours,temperature_kelvin\n0,300\n2,304\n4,300\n",
    );
    let out = ok(&[
        "simulate",
        "--hours",
        "5",
        "--temperature-csv",
        &f,
        "--step-minutes",
        "60",
    ]);
    let temps: Vec<f64> = out
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(temps, vec![300.0, 302.0, 304.0, 302.0, 300.0, 300.0]);
}

#[test]
fn bad_temperature_files_name_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.csv",
        "t_hours,temperature_kelvin\n0,300\n1,abc\n",
    );
    let e = fails(&["simulate", "--hours", "5", "--temperature-csv", &f]);
    assert!(
        e.contains("bad.csv") && e.contains("row 3") && e.contains("temperature_kelvin"),
        "{e}"
    );
    let f = write(dir.path(), "cols.csv", "time,temp\n0,300\n");
    let e = fails(&["simulate", "--hours", "5", "--temperature-csv", &f]);
    assert!(
        e.contains("cols.csv") && e.contains("no column `t_hours`") && e.contains("time, temp"),
        "{e}"
    );
    let f = write(dir.path(), "empty.csv", "");
    let e = fails(&["simulate", "--hours", "5", "--temperature-csv", &f]);
    assert!(e.contains("empty.csv") && e.contains("empty"), "{e}");
    let f = write(
        dir.path(),
        "celsius.csv",
        "t_hours,temperature_kelvin\n0,30\n",
    );
    let e = fails(&["simulate", "--hours", "5", "--temperature-csv", &f]);
    assert!(e.contains("row 2") && e.contains("outside"), "{e}");
    let f = write(
        dir.path(),
        "order.csv",
        "t_hours,temperature_kelvin\n0,300\n2,301\n1,302\n",
    );
    let e = fails(&["simulate", "--hours", "5", "--temperature-csv", &f]);
    assert!(e.contains("row 4") && e.contains("t_hours"), "{e}");
    let e = fails(&[
        "simulate",
        "--hours",
        "5",
        "--temperature-csv",
        "/nonexistent/x.csv",
    ]);
    assert!(e.contains("/nonexistent/x.csv"), "{e}");
    let e = fails(&["simulate", "--hours", "-1", "--temperature-c", "30"]);
    assert!(e.contains("--hours"), "{e}");
    fails(&["simulate", "--hours", "5"]);
}

#[test]
fn periodogram_of_a_simulated_clock_finds_the_published_period() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ok(&[
        "simulate",
        "--hours",
        "240",
        "--temperature-c",
        "30",
        "--step-minutes",
        "30",
    ]);
    let f = write(dir.path(), "sim.csv", &sim);
    let v = koa_periodogram(&f);
    let p = v["period_hours"].as_f64().unwrap();
    // Rust et al. 2007 model at 30 °C: 20.71 h.
    assert!((p - 20.71).abs() < 0.1, "period {p}");
    assert!(v["false_alarm_probability"].as_f64().unwrap() < 1e-10);
    assert_eq!(v["n_points"].as_u64().unwrap(), 481);
    assert!(v["power"].as_f64().unwrap() > 0.5);
    let text = ok(&[
        "analyze",
        "periodogram",
        "--input",
        &f,
        "--value-column",
        "koa",
    ]);
    assert!(text.contains("period_hours"));
}

#[test]
fn cosinor_reports_the_documented_fields_and_skips_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("t_hours,value\n");
    for i in 0..96 {
        let t = i as f64 * 0.5;
        if i == 10 {
            csv.push_str(&format!("{t},\n"));
            continue;
        }
        // MESOR 5, amplitude 2, peak at 6 h → acrophase −2π·6/24 = −π/2.
        csv.push_str(&format!(
            "{t},{}\n",
            5.0 + 2.0 * (std::f64::consts::TAU * (t - 6.0) / 24.0).cos()
        ));
    }
    let f = write(dir.path(), "s.csv", &csv);
    let out = ok(&[
        "analyze",
        "cosinor",
        "--input",
        &f,
        "--period-hours",
        "24",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!((v["mesor"].as_f64().unwrap() - 5.0).abs() < 1e-9);
    assert!((v["amplitude"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    assert!((v["acrophase_rad"].as_f64().unwrap() + std::f64::consts::FRAC_PI_2).abs() < 1e-9);
    assert!((v["peak_time_hours"].as_f64().unwrap() - 6.0).abs() < 1e-9);
    assert_eq!(v["n_points"].as_u64().unwrap(), 95);
    assert_eq!(v["n_skipped"].as_u64().unwrap(), 1);
    for k in ["p_value", "mesor_ci", "amplitude_ci", "acrophase_ci"] {
        assert!(!v[k].is_null(), "missing {k}");
    }
    let f = write(dir.path(), "few.csv", "t_hours,value\n0,1\n1,2\n");
    let e = fails(&["analyze", "cosinor", "--input", &f]);
    assert!(
        e.contains("few.csv") && e.to_lowercase().contains("points"),
        "{e}"
    );
    let f = write(dir.path(), "bad.csv", "t_hours,value\n0,1\n1,x\n");
    let e = fails(&["analyze", "periodogram", "--input", &f]);
    assert!(e.contains("row 3") && e.contains("`value`"), "{e}");
}

#[test]
fn wavelet_of_a_simulated_clock_peaks_at_the_published_period() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ok(&[
        "simulate",
        "--hours",
        "240",
        "--temperature-c",
        "30",
        "--step-minutes",
        "30",
    ]);
    let f = write(dir.path(), "sim.csv", &sim);
    let out = ok(&[
        "analyze",
        "wavelet",
        "--input",
        &f,
        "--value-column",
        "koa",
        "--min-period-hours",
        "8",
        "--max-period-hours",
        "40",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nums = |k: &str| -> Vec<f64> { serde_json::from_value(v[k].clone()).unwrap() };
    let (periods, global, signif) = (
        nums("periods_hours"),
        nums("global_power"),
        nums("global_significance"),
    );
    let best = (0..global.len())
        .max_by(|&a, &b| global[a].total_cmp(&global[b]))
        .unwrap();
    // Rust et al. 2007 model at 30 °C: 20.71 h; the scales are 2^(1/12) apart (6 %).
    assert!(
        (periods[best] - 20.71).abs() < 20.71 * 0.06,
        "{}",
        periods[best]
    );
    assert!(global[best] > signif[best]);
    assert_eq!(v["times_hours"].as_array().unwrap().len(), 481);
    assert_eq!(nums("coi_hours").len(), 481);
    assert_eq!(v["power"].as_array().unwrap().len(), periods.len());
    assert!((periods[0] - 8.0).abs() < 1e-9 && *periods.last().unwrap() <= 40.0);
    assert_eq!(v["dt_hours"].as_f64(), Some(0.5));
    // The ridge follows the clock's period away from the record's ends.
    let ridge = nums("ridge_period_hours");
    assert!((ridge[240] - 20.71).abs() < 2.0, "{}", ridge[240]);
    let text = ok(&["analyze", "wavelet", "--input", &f, "--value-column", "koa"]);
    assert!(text.contains("period_hours,global_power,global_significance,significant"));
    // A period shorter than two samples cannot be resolved: said, with the flag's name.
    let e = fails(&[
        "analyze",
        "wavelet",
        "--input",
        &f,
        "--value-column",
        "koa",
        "--min-period-hours",
        "0.5",
    ]);
    assert!(e.contains("min_period_hours"), "{e}");
}

#[test]
fn cosinor_fits_components_and_a_population_mean() {
    use std::f64::consts::TAU;
    let dir = tempfile::tempdir().unwrap();
    let curve = |t: f64, m: f64, a: f64, phi: f64| {
        m + a * (TAU * t / 24.0 + phi).cos() + 0.8 * (TAU * t / 12.0 - 0.4).cos()
    };
    let mut csv = String::from("t_hours,value\n");
    for i in 0..144 {
        let t = f64::from(i) * 0.5;
        csv.push_str(&format!("{t},{}\n", curve(t, 10.0, 3.0, -1.0)));
    }
    let f = write(dir.path(), "two.csv", &csv);
    let out = ok(&[
        "analyze",
        "cosinor",
        "--input",
        &f,
        "--components",
        "24,12",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["components"];
    assert!((v["mesor"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{v}");
    assert!(
        (c[0]["amplitude"].as_f64().unwrap() - 3.0).abs() < 1e-9,
        "{v}"
    );
    assert!(
        (c[0]["acrophase_rad"].as_f64().unwrap() + 1.0).abs() < 1e-9,
        "{v}"
    );
    assert!(
        (c[1]["amplitude"].as_f64().unwrap() - 0.8).abs() < 1e-9,
        "{v}"
    );
    assert!(
        (c[1]["acrophase_rad"].as_f64().unwrap() + 0.4).abs() < 1e-9,
        "{v}"
    );
    // The composite curve's peak: found here by brute force on a fine grid.
    let (mut best_t, mut best) = (0.0, f64::MIN);
    for k in 0..240_000 {
        let t = f64::from(k) * 1e-4;
        let y = curve(t, 0.0, 3.0, -1.0);
        if y > best {
            (best_t, best) = (t, y);
        }
    }
    assert!(
        (v["orthophase_hours"].as_f64().unwrap() - best_t).abs() < 1e-3,
        "{v}"
    );

    // Population: three members in one file, told apart by a node_id column.
    let mut csv = String::from("node_id,t_hours,value\n");
    for (node, m, a, phi) in [
        ("a", 20.0, 4.0, -1.0),
        ("b", 21.0, 4.5, -1.2),
        ("c", 19.0, 3.5, -0.8),
    ] {
        for i in 0..72 {
            let t = f64::from(i);
            csv.push_str(&format!(
                "{node},{t},{}\n",
                m + a * (TAU * t / 24.0 + phi).cos()
            ));
        }
    }
    let f = write(dir.path(), "fleet.csv", &csv);
    let out = ok(&[
        "analyze",
        "cosinor",
        "--population",
        "--input",
        &f,
        "--group-column",
        "node_id",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["members"], 3, "{v}");
    assert!((v["mesor"].as_f64().unwrap() - 20.0).abs() < 1e-9, "{v}");
    let beta = (4.0 * (-1.0f64).cos() + 4.5 * (-1.2f64).cos() + 3.5 * (-0.8f64).cos()) / 3.0;
    assert!(
        (v["components"][0]["beta"].as_f64().unwrap() - beta).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["member_fits"][1]["name"], "b");
    let text = ok(&[
        "analyze",
        "cosinor",
        "--population",
        "--input",
        &f,
        "--group-column",
        "node_id",
    ]);
    assert!(text.contains("members            3"), "{text}");
    // One member is no population; two files without --population are refused.
    let e = fails(&["analyze", "cosinor", "--population", "--input", &f]);
    assert!(e.contains("members"), "{e}");
    let e = fails(&["analyze", "cosinor", "--input", &f, "--input", &f]);
    assert!(e.contains("--population"), "{e}");
}

#[test]
fn trend_finds_a_drift_and_none_in_a_steady_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut drift = String::from("t_days,period_hours\n");
    let mut steady = String::from("t_days,period_hours\n");
    for i in 0..60 {
        let t = f64::from(i);
        // A deterministic wobble on top: ±0.02 h.
        let wobble = 0.02 * ((i * 7) % 5) as f64 / 4.0 - 0.01;
        drift.push_str(&format!("{t},{}\n", 24.0 - 0.01 * t + wobble));
        steady.push_str(&format!("{t},{}\n", 24.0 + wobble));
    }
    let f = write(dir.path(), "drift.csv", &drift);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["analyze", "trend", "--input", &f, "--json"])).unwrap();
    assert!(
        (v["hac"]["slope"].as_f64().unwrap() + 0.01).abs() < 1e-3,
        "{v}"
    );
    assert!(v["hac"]["p_value"].as_f64().unwrap() < 1e-6, "{v}");
    assert!(v["mann_kendall"]["p_value"].as_f64().unwrap() < 1e-6, "{v}");
    assert_eq!(v["hac"]["max_lags"], 3);
    let f = write(dir.path(), "steady.csv", &steady);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["analyze", "trend", "--input", &f, "--json"])).unwrap();
    assert!(v["hac"]["p_value"].as_f64().unwrap() > 0.05, "{v}");
    let f = write(
        dir.path(),
        "short.csv",
        "t_days,period_hours\n0,24\n1,24.1\n",
    );
    let e = fails(&["analyze", "trend", "--input", &f]);
    assert!(e.contains("at least 4"), "{e}");
}

#[test]
fn prc_json_is_flat_for_the_uncompensated_clock() {
    let out = ok(&[
        "analyze",
        "prc",
        "--etf",
        "uncompensated",
        "--resolution",
        "6",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flat = v["time_rescaling_shift_hours"].as_f64().unwrap();
    let pts = v["points"].as_array().unwrap();
    assert_eq!(pts.len(), 6);
    for p in pts {
        assert!((p["phase_shift_hours"].as_f64().unwrap() - flat).abs() < 2e-3);
    }
    let e = fails(&["analyze", "prc", "--duration-minutes", "0"]);
    assert!(e.contains("duration_minutes"), "{e}");
}

#[test]
fn model_constants_are_flags_and_a_damped_clock_needs_an_explicit_start() {
    // Rust et al. 2007: excess KaiA (2 µM) stops the oscillation; there is no cycle to place a
    // circadian time on, so the command says how to start instead.
    let e = fails(&[
        "simulate",
        "--hours",
        "48",
        "--temperature-c",
        "30",
        "--a-total",
        "2",
    ]);
    assert!(
        e.contains("no oscillation") && e.contains("explicit state"),
        "{e}"
    );
    let out = ok(&[
        "simulate",
        "--hours",
        "96",
        "--temperature-c",
        "30",
        "--a-total",
        "2",
        "--initial-state",
        "0.68,1.36,0.34",
        "--step-minutes",
        "1440",
    ]);
    let last: Vec<f64> = out
        .lines()
        .last()
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    // Settles on the fixed point SciPy LSODA finds (operators/tests/data/model_reference.json):
    // T, ST, S = 1.00010, 1.41839, 0.30795 µM.
    assert!(
        (last[3] - 1.00010).abs() < 1e-3
            && (last[4] - 1.41839).abs() < 1e-3
            && (last[2] - 0.30795).abs() < 1e-3
    );
    assert!(
        (last[5] + last[6] - 2.0).abs() < 1e-9,
        "A_free + CABC = A_tot = 2"
    );
    let e = fails(&[
        "simulate",
        "--hours",
        "4",
        "--temperature-c",
        "30",
        "--initial-state",
        "1,2",
    ]);
    assert!(e.contains("--initial-state"), "{e}");
    // A faster clock: rate_scale 1.1 shortens the free-running period to 20.71/1.1 h.
    let prc = ok(&[
        "analyze",
        "prc",
        "--rate-scale",
        "1.1",
        "--resolution",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&prc).unwrap();
    assert!((v["period_hours"].as_f64().unwrap() - 20.7133 / 1.1).abs() < 0.01);
}

#[test]
fn a_real_july_temperature_record_entrains_the_clock_to_24_hours() {
    // The README's example: outdoor July temperatures (TMY3 Greensboro NC, 19–33 °C daily cycle)
    // are a temperature cycle of several kelvin, which entrains the compensated clock to the day
    // (Yoshida et al. 2009 PNAS: temperature cycles entrain KaiABC in vitro).
    let dir = tempfile::tempdir().unwrap();
    let data = format!(
        "{}/../datasets/greensboro-july-temperature.csv",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
    );
    let data = data.as_str();
    let sim = ok(&[
        "simulate",
        "--hours",
        "744",
        "--temperature-csv",
        data,
        "--step-minutes",
        "30",
    ]);
    let f = write(dir.path(), "july.csv", &sim);
    let v = koa_periodogram(&f);
    let p = v["period_hours"].as_f64().unwrap();
    assert!(
        (p - 24.0).abs() < 0.15,
        "entrained period {p} h, free-running would be ~21 h"
    );
}
