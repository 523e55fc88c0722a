//! The REST API around the clocks, end to end against `kaiabc run`: per-node settings (GET
//! answers what a PUT set, bad changes are refused), a PRC-planned phase shift reported on the
//! WebSocket and in the lake, the analytics over the rhythm windows, the bulk endpoints with
//! cursor paging, and the operators' diagnostics and config endpoints.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::live::*;

/// A reading of `node` `minutes` after `t0`, the temperature on a 24 h cycle (±3 K about
/// 300 K) so the clock entrains and the rhythm windows see both rhythms.
fn cycle_reading(node: &str, t0: DateTime<Utc>, minutes: i64) -> (String, String) {
    let t = t0 + Duration::minutes(minutes);
    let hours = minutes as f64 / 60.0;
    let kelvin = 300.0 + 3.0 * (std::f64::consts::TAU * hours / 24.0).sin();
    (
        format!("kaiabc/sensors/{node}"),
        serde_json::json!({
            "node_id": node,
            "seq": minutes / 20,
            "timestamp": kaiabc_schemas::format_timestamp(&t),
            "temperature_kelvin": kelvin,
            "sensor_type": "BME280",
        })
        .to_string(),
    )
}

fn days(node: &str, t0: DateTime<Utc>, from_h: i64, to_h: i64) -> Vec<(String, String)> {
    (from_h * 3..to_h * 3)
        .map(|k| cycle_reading(node, t0, k * 20))
        .collect()
}

#[test]
fn settings_phase_shifts_analytics_bulk_and_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // The readings start ten days back: beyond the default horizon of seven.
    let (server, http, mqtt) = start_with(
        &lake,
        &["--mqtt-anonymous", "--max-reading-age-hours", "720"],
    );
    let researcher = token("researcher");
    let admin = token("admin");
    let call = |method: &str, path: &str, body: &str, t: &str| {
        request(
            http,
            method,
            path,
            &[("Authorization", &format!("Bearer {t}"))],
            body,
        )
    };
    // Ten days ago, so that six days of readings stay in the past.
    let t0 = (Utc::now() - Duration::days(10))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();

    // Settings: the shared ones first, then a node's own.
    let (s, shared) = get(http, "/v1/entrainment/parameters").unwrap();
    assert_eq!(s, 200);
    assert_eq!(shared["customised"], false);
    let q10 = shared["q10"]["kaia_stimulated"].as_f64().unwrap();
    assert!(q10 > 1.0, "{shared}");
    let (s, b) = call(
        "PUT",
        "/v1/entrainment/parameters",
        r#"{"node_id":"ps1","rate_scale":1.02}"#,
        &researcher,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["values"]["etf"]["rate_scale"], 1.02);
    let (_, b) = get(http, "/v1/entrainment/parameters?node_id=ps1").unwrap();
    assert_eq!(
        (b["customised"].as_bool(), b["etf"]["rate_scale"].as_f64()),
        (Some(true), Some(1.02))
    );
    // Invalid together, unknown fields, nothing to change: 400, and nothing changed.
    for (path, body) in [
        (
            "/v1/output/mapping",
            r#"{"node_id":"ps1","koa_threshold_low":0.9,"koa_threshold_high":0.1}"#,
        ),
        (
            "/v1/filter/parameters",
            r#"{"node_id":"ps1","gate_good":0.9999}"#,
        ),
        (
            "/v1/entrainment/parameters",
            r#"{"node_id":"ps1","rate_scal":2}"#,
        ),
        ("/v1/simulation/config", r#"{"node_id":"ps1"}"#),
        (
            "/v1/simulation/config",
            r#"{"node_id":"ps1","initial_ct":30}"#,
        ),
    ] {
        let (s, b) = call("PUT", path, body, &researcher);
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("INVALID_PARAMETER")),
            "{path} {body}: {b}"
        );
    }
    let (_, m) = get(http, "/v1/output/mapping?node_id=ps1").unwrap();
    assert_eq!(m["customised"], false, "{m}");
    let (s, b) = call(
        "PUT",
        "/v1/output/mapping",
        r#"{"node_id":"ps1","invert":true}"#,
        &researcher,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["test_values"]["koa_0.0"]["pwm"], 255, "inverted: {b}");
    assert_eq!(
        call(
            "PUT",
            "/v1/output/mapping",
            r#"{"node_id":"ps1","invert":false}"#,
            &token("observer")
        )
        .0,
        403
    );

    // A day of readings, then a phase shift planned from the node's phase.
    publish(mqtt, &days("ps1", t0, 0, 24));
    wait_until("a day applied", || {
        get(http, "/v1/oscillator/state?node_id=ps1").filter(|(s, b)| *s == 200 && b["seq"] == 71)
    });
    let (s, koa) = get(http, "/v1/output/koa?node_id=ps1").unwrap();
    assert_eq!(s, 200);
    // The inverted mapping drives the output: high KOA, low duty.
    assert_eq!(koa["mapping"]["invert"], true);
    let k = koa["koa_metric"].as_f64().unwrap();
    let expected = (255.0 * (1.0 - k.clamp(0.0, 1.0))).round() as i64;
    assert!(
        (koa["output_pwm"].as_i64().unwrap() - expected).abs() <= 1,
        "{koa}"
    );
    let (s, f) = get(http, "/v1/filter/state?node_id=ps1").unwrap();
    assert_eq!(s, 200);
    assert!(f["variance"].as_f64().unwrap() > 0.0, "{f}");

    let (s, prc) = get(http, "/v1/entrainment/prc?node_id=ps1&resolution=12").unwrap();
    assert_eq!(s, 200, "{prc}");
    assert_eq!(prc["prc"]["points"].as_array().unwrap().len(), 12);
    let (s, dry) = call(
        "POST",
        "/v1/entrainment/phase-shift",
        r#"{"node_id":"ps1","target_shift_hours":1.0,"dry_run":true}"#,
        &researcher,
    );
    assert_eq!(s, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    // The specification's other method: a step of the KaiA total, the temperature left alone.
    let (s, kaia) = call(
        "POST",
        "/v1/entrainment/phase-shift",
        r#"{"node_id":"ps1","shift_type":"delay","magnitude_hours":2.0,
            "method":"parameter_modulation","dry_run":true}"#,
        &researcher,
    );
    assert_eq!(s, 200, "{kaia}");
    assert_eq!(kaia["method"], "parameter_modulation", "{kaia}");
    assert_eq!(kaia["plan"]["delta_k"], 0.0, "{kaia}");
    let factor = kaia["plan"]["kaia_factor"].as_f64().unwrap();
    assert!(factor == 2.0 || factor == 0.5, "{kaia}");
    assert!(
        kaia["expected_phase_change"].as_f64().unwrap() < 0.0,
        "{kaia}"
    );
    let (s, refused) = call(
        "POST",
        "/v1/entrainment/phase-shift",
        r#"{"node_id":"ps1","target_shift_hours":1.0,"method":"parameter_modulation",
            "temperature_delta_kelvin":3.0}"#,
        &researcher,
    );
    assert_eq!(s, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kaia_factor"),
        "{refused}"
    );
    let (s, plan) = call(
        "POST",
        "/v1/entrainment/phase-shift",
        r#"{"node_id":"ps1","target_shift_hours":1.0,"settle_cycles":2}"#,
        &researcher,
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["success"], true);
    assert_eq!(
        plan["expected_phase_change"],
        plan["plan"]["predicted_shift_hours"]
    );
    // Planning is deterministic: the same curve and phase give the same step.
    assert_eq!(plan["plan"]["start"], dry["plan"]["start"]);
    assert_eq!(plan["plan"]["delta_k"], dry["plan"]["delta_k"]);
    let shift_id = plan["shift_id"].as_str().unwrap().to_string();
    let predicted = plan["plan"]["predicted_shift_hours"].as_f64().unwrap();
    assert_eq!(
        call(
            "POST",
            "/v1/entrainment/phase-shift",
            r#"{"node_id":"nobody","target_shift_hours":1.0}"#,
            &researcher
        )
        .0,
        404
    );

    // The report arrives on the WebSocket when the clock has settled.
    let rt = ws_runtime();
    let report = rt.block_on(async {
        let mut ws = ws_observer(http).await;
        send(
            &mut ws,
            serde_json::json!({"action": "subscribe", "streams": ["phase_shift.complete"]}),
        )
        .await;
        assert_eq!(next_json(&mut ws).await.unwrap()["type"], "ack");
        let publisher = std::thread::spawn(move || publish(mqtt, &days("ps1", t0, 24, 24 * 6)));
        let report = loop {
            let Ok(m) =
                tokio::time::timeout(std::time::Duration::from_secs(120), next_json(&mut ws)).await
            else {
                break serde_json::Value::Null;
            };
            let m = m.expect("the socket is open");
            if m["stream"] == "phase_shift.complete" {
                break m["data"].clone();
            }
        };
        publisher.join().unwrap();
        report
    });
    if report.is_null() {
        let st = get(http, "/v1/oscillator/state?node_id=ps1");
        let out = stop(server);
        panic!(
            "no phase_shift.complete: state {st:?}\n{}\n{}\n{}",
            csv(&lake, "SELECT * FROM phase_shifts"),
            csv(&lake, "SELECT reason, message FROM dead_letters"),
            out
        );
    }
    assert_eq!(report["shift_id"], shift_id.as_str(), "{report}");
    assert_eq!(report["outcome"], "completed", "{report}");
    let achieved = report["achieved_shift_hours"].as_f64().unwrap();
    // Under a temperature cycle the zeitgeber pulls back too: the achieved shift has the
    // predicted sign and does not exceed the PRC's prediction by much.
    assert!(
        achieved.signum() == predicted.signum() && achieved.abs() < predicted.abs() + 0.5,
        "achieved {achieved}, predicted {predicted}"
    );
    // The transient ends at one of the two settling peaks after the step: within two periods
    // (the node's clock runs near 22 h under the cycle's mean).
    let settling = report["settling_time_hours"].as_f64().unwrap();
    assert!((0.0..=2.0 * 24.0).contains(&settling), "{report}");
    // The efficiency report reads the same shift from the lake, once committed.
    let (_, eff) = wait_until("the shift in the efficiency report", || {
        get(
            http,
            &format!("/v1/analytics/entrainment-efficiency?node_id=ps1&shift_id={shift_id}"),
        )
        .filter(|(s, _)| *s == 200)
    });
    let row = &eff["recent_shifts"][0];
    assert_eq!(row["shift_id"], shift_id.as_str(), "{eff}");
    assert_eq!(row["type"], "advance", "{eff}");
    assert_eq!(row["actual_shift_hours"].as_f64(), Some(achieved), "{eff}");
    // Target 1 h: the efficiency is the achieved shift in hours.
    assert!(
        (row["efficiency"].as_f64().unwrap() - achieved).abs() < 1e-12,
        "{eff}"
    );
    assert_eq!(row["settling_time_hours"].as_f64(), Some(settling), "{eff}");
    assert_eq!(
        row["temperature_delta_applied"], plan["plan"]["delta_k"],
        "{eff}"
    );
    assert_eq!(eff["average_efficiency"], row["efficiency"], "{eff}");
    assert!(
        !eff["recommendations"].as_array().unwrap().is_empty(),
        "{eff}"
    );
    let (s, none) = get(
        http,
        "/v1/analytics/entrainment-efficiency?node_id=ps1&shift_id=ps_nothing",
    )
    .unwrap();
    assert_eq!(
        (s, &none["error"]["code"]),
        (404, &"SHIFT_NOT_FOUND".into()),
        "{none}"
    );
    wait_until("the last reading applied", || {
        get(http, "/v1/oscillator/state?node_id=ps1")
            .filter(|(s, b)| *s == 200 && b["seq"] == 6 * 72 - 1)
    });

    // Bulk: readings of two other nodes at once, then every node's states, a page at a time.
    let bulk: Vec<serde_json::Value> = ["b1", "b2"]
        .iter()
        .flat_map(|n| {
            (0..3).map(move |k| serde_json::from_str(&cycle_reading(n, t0, k * 20).1).unwrap())
        })
        .chain([serde_json::json!({"node_id": "b1", "timestamp": "yesterday"})])
        .collect();
    let (s, b) = call(
        "POST",
        "/v1/bulk/sensor-readings",
        &serde_json::Value::Array(bulk).to_string(),
        &admin,
    );
    // Applied by the time of the answer: each reading's status and filtered temperature.
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["accepted"].as_u64(), b["rejected"].as_u64()),
        (Some(6), Some(1)),
        "{b}"
    );
    assert_eq!(b["results"][0]["status"], "processed", "{b}");
    assert!(b["results"][0]["filtered_temperature"].is_number(), "{b}");
    assert_eq!(b["results"][6]["status"], "rejected", "{b}");
    assert_eq!(b["rejections"][0]["code"], "INVALID_TIMESTAMP", "{b}");
    assert_eq!(
        call("POST", "/v1/bulk/sensor-readings", "[]", &researcher).0,
        403
    );
    wait_until("the bulk nodes' states", || {
        let (_, b) = call(
            "GET",
            "/v1/bulk/oscillator-states?latest=true&node_ids=b1,b2",
            "",
            &researcher,
        );
        (b["count"] == 2).then_some(())
    });
    // Let a commit pass, then page through b1 and b2's states (3 each) two at a time.
    wait_until("the bulk rows in the lake", || {
        let n = csv(
            &lake,
            "SELECT count(*) AS n FROM states WHERE node_id IN ('b1','b2')",
        );
        (n == "n\n6\n").then_some(())
    });
    let range = format!(
        "start={}&end={}",
        kaiabc_schemas::format_timestamp(&t0),
        kaiabc_schemas::format_timestamp(&(t0 + Duration::hours(1)))
    );
    let mut cursor = String::new();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (s, page) = call(
            "GET",
            &format!("/v1/bulk/oscillator-states?node_ids=b1,b2&limit=2&{range}{cursor}"),
            "",
            &researcher,
        );
        assert_eq!(s, 200, "{page}");
        for st in page["states"].as_array().unwrap() {
            seen.push((
                st["timestamp"].as_str().unwrap().to_string(),
                st["node_id"].as_str().unwrap().to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen, sorted, "pages in order, none repeated");

    // Analytics over the six days of ps1.
    let range = format!(
        "node_id=ps1&start={}&end={}",
        kaiabc_schemas::format_timestamp(&t0),
        kaiabc_schemas::format_timestamp(&(t0 + Duration::days(7)))
    );
    let (s, ps) = get(http, &format!("/v1/analytics/period-stability?{range}")).unwrap();
    assert_eq!(s, 200, "{ps}");
    assert!(ps["significant_windows"].as_u64().unwrap() > 24, "{ps}");
    // The zeitgeber's own period is the 24 h the readings were made with.
    let zg = ps["temperature_period_hours"].as_f64().unwrap();
    assert!((zg - 24.0).abs() < 0.1, "{zg}");
    // The summary is the series' summary.
    let series: Vec<f64> = ps["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["period_hours"].as_f64().unwrap())
        .collect();
    let mean = ps["period"]["mean_period_hours"].as_f64().unwrap();
    assert!((mean - series.iter().sum::<f64>() / series.len() as f64).abs() < 1e-9);
    assert!((16.0..32.0).contains(&mean), "{mean}");
    // The periodogram of the filtered temperature peaks at the 24 h the readings were made
    // with; the KOA's peak is the clock's period, inside the searched range.
    let (s, pg) = get(
        http,
        &format!("/v1/analytics/periodogram?{range}&metric=temperature"),
    )
    .unwrap();
    assert_eq!(s, 200, "{pg}");
    let peak = pg["peak"]["period_hours"].as_f64().unwrap();
    assert!((peak - 24.0).abs() < 0.2, "{peak}: {}", pg["peak"]);
    assert!(pg["peak"]["false_alarm_probability"].as_f64().unwrap() < 1e-6);
    let periods = pg["periods_hours"].as_array().unwrap();
    assert_eq!(periods.len(), pg["power"].as_array().unwrap().len());
    assert!(
        periods.len() > 10 && pg["n_points"].as_u64().unwrap() > 100,
        "{pg}"
    );
    // The period's trend over the windows: HAC slope with its interval, and Mann–Kendall.
    let trend = &ps["period_trend"];
    assert_eq!(trend["windows"], ps["significant_windows"], "{trend}");
    let slope = trend["slope_hours_per_day"].as_f64().unwrap();
    let ci = trend["slope_ci"].as_array().unwrap();
    assert!(
        ci[0].as_f64().unwrap() <= slope && slope <= ci[1].as_f64().unwrap(),
        "{trend}"
    );
    assert!(trend["mann_kendall"]["p_value"].is_number(), "{trend}");

    // The wavelet spectrum of the filtered temperature: its strongest period is the 24 h
    // cycle, above the red-noise level; every row spans the grid; the cone of influence is
    // shortest at the ends.
    let (s, w) = get(
        http,
        &format!("/v1/analytics/wavelet?{range}&variable=temperature_kelvin"),
    )
    .unwrap();
    assert_eq!(s, 200, "{w}");
    let periods: Vec<f64> = serde_json::from_value(w["periods_hours"].clone()).unwrap();
    let global: Vec<f64> = serde_json::from_value(w["global_power"].clone()).unwrap();
    let signif: Vec<f64> = serde_json::from_value(w["global_significance"].clone()).unwrap();
    let best = (0..global.len())
        .max_by(|&a, &b| global[a].total_cmp(&global[b]))
        .unwrap();
    assert!((periods[best] - 24.0).abs() < 2.5, "{}", periods[best]);
    assert!(
        global[best] > signif[best],
        "{} vs {}",
        global[best],
        signif[best]
    );
    let n_times = w["times_hours"].as_array().unwrap().len();
    assert!(n_times > 100 && n_times <= 1024, "{n_times}");
    assert!(w["power"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.as_array().unwrap().len() == n_times));
    let coi: Vec<f64> = serde_json::from_value(w["coi_hours"].clone()).unwrap();
    assert!(coi[0] < coi[n_times / 2] && coi[n_times - 1] < coi[n_times / 2]);
    let (s, e) = get(
        http,
        &format!("/v1/analytics/wavelet?{range}&min_period_hours=48&max_period_hours=4"),
    )
    .unwrap();
    assert_eq!(
        (s, &e["error"]["code"]),
        (400, &"INVALID_PARAMETER".into()),
        "{e}"
    );
    // A grid too fine to answer is refused before any work.
    let (s, e) = get(
        http,
        &format!("/v1/analytics/wavelet?{range}&dt_hours=0.001"),
    )
    .unwrap();
    assert_eq!(s, 400, "{e}");

    // The cosinor of the filtered temperature at 24 h: 3 K about 300 K, peaking at 6 h UTC
    // (the readings' sine), a little later through the filter; a 12 h harmonic is near zero.
    let cos_range = range.replace("node_id=ps1", "node_ids=ps1");
    let (s, c) = get(
        http,
        &format!("/v1/analytics/cosinor?{cos_range}&variable=temperature_kelvin&components=24,12"),
    )
    .unwrap();
    assert_eq!(s, 200, "{c}");
    let fit = &c["fit"];
    assert!(
        (fit["mesor"].as_f64().unwrap() - 300.0).abs() < 0.1,
        "{fit}"
    );
    let day = &fit["components"][0];
    assert!(
        (day["amplitude"].as_f64().unwrap() - 3.0).abs() < 0.3,
        "{day}"
    );
    let peak = day["peak_time_hours"].as_f64().unwrap();
    assert!((6.0..8.0).contains(&peak), "{day}");
    assert!(
        fit["components"][1]["amplitude"].as_f64().unwrap() < 0.3,
        "{fit}"
    );
    // A group of three where two have three readings each: they are named, and two members
    // are too few for a population mean.
    let (s, p) = get(
        http,
        &format!(
            "/v1/analytics/cosinor?{}&variable=temperature_kelvin",
            cos_range.replace("node_ids=ps1", "node_ids=ps1,b1,b2")
        ),
    )
    .unwrap();
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["code"], "TOO_FEW_MEMBERS", "{p}");
    let (s, e) = get(
        http,
        &format!("/v1/analytics/cosinor?{cos_range}&components=0"),
    )
    .unwrap();
    assert_eq!(s, 400, "{e}");

    let (s, pg) = get(http, &format!("/v1/analytics/periodogram?{range}")).unwrap();
    assert_eq!((s, pg["metric"].as_str()), (200, Some("koa")), "{pg}");
    let koa_peak = pg["peak"]["period_hours"].as_f64().unwrap();
    assert!((16.0..=32.0).contains(&koa_peak), "{koa_peak}");
    let (s, ee) = get(
        http,
        &format!("/v1/analytics/entrainment-efficiency?{range}"),
    )
    .unwrap();
    assert_eq!(s, 200, "{ee}");
    // The phase-locking value from the rhythms table, computed here independently.
    let text = csv(
        &lake,
        "SELECT k.acrophase_rad - t.acrophase_rad AS d FROM rhythms k JOIN rhythms t \
         ON k.node_id = t.node_id AND k.window_end = t.window_end \
         WHERE k.node_id = 'ps1' AND k.metric = 'koa' AND t.metric = 'temperature_kelvin' \
         AND k.p_value <= 0.05 AND t.p_value <= 0.05",
    );
    let d: Vec<f64> = text.lines().skip(1).map(|l| l.parse().unwrap()).collect();
    let n = d.len() as f64;
    let (sn, cs) = d
        .iter()
        .fold((0.0, 0.0), |(a, b), x| (a + x.sin(), b + x.cos()));
    let plv = ((sn / n).powi(2) + (cs / n).powi(2)).sqrt();
    assert!(!d.is_empty());
    assert_eq!(ee["phase_locking"]["windows"], d.len(), "{ee}");
    let got = ee["entrainment_efficiency"].as_f64().unwrap();
    assert!(
        (got - plv).abs() < 1e-9 && (0.0..=1.0).contains(&got),
        "{got} vs {plv}: {ee}"
    );
    assert_eq!(
        get(
            http,
            "/v1/analytics/period-stability?node_id=ps1&start=nope"
        )
        .unwrap()
        .0,
        400
    );

    // The phase shift is a lake row too.
    let rows = csv(
        &lake,
        "SELECT shift_id, outcome, achieved_shift_hours IS NOT NULL AS measured FROM phase_shifts",
    );
    assert_eq!(
        rows,
        format!("shift_id,outcome,measured\n{shift_id},completed,true\n")
    );

    // Diagnostics and config.
    let (s, logs) = call("GET", "/v1/diagnostics/logs?level=info", "", &admin);
    assert_eq!(s, 200, "{logs}");
    assert!(logs["count"].as_u64().unwrap() > 0, "{logs}");
    assert_eq!(
        call("GET", "/v1/diagnostics/logs?level=loud", "", &admin).0,
        400
    );
    let (s, h) = call("GET", "/v1/diagnostics/health-check", "", &researcher);
    assert_eq!((s, h["status"].as_str()), (200, Some("healthy")), "{h}");
    let (s, t) = call("GET", "/v1/config/templates", "", &researcher);
    assert_eq!(s, 200);
    let template = t["server"]["config_file"]["template"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(template.contains("[server]"), "{template}");
    // The node's template (its firmware's defaults, with a Wi-Fi passphrase, which a template
    // does not hold) checks out as a node configuration.
    let mut node = t["templates"].clone();
    node["network_config"]["wifi"]["password"] = serde_json::json!("a long passphrase");
    let body = serde_json::json!({"node_id": "ps1", "config": {
        "sensor": {"bme280": node["sensor_config"]["bme280"]},
        "network": node["network_config"],
        "oscillator": node["oscillator_config"]}});
    let (s, v) = call(
        "POST",
        "/v1/config/validate",
        &body.to_string(),
        &researcher,
    );
    assert_eq!((s, v["valid"].as_bool()), (200, Some(true)), "{v}");
    let (s, v) = call("POST", "/v1/config/server/validate", &template, &researcher);
    assert_eq!((s, v["valid"].as_bool()), (200, Some(true)), "{v}");
    // An unknown key, a value its flag's parser refuses, not TOML.
    for bad in [
        "[server]\nhtp = \"x\"\n",
        "[server]\nhttp = \"not an address\"\n",
        "not toml [",
    ] {
        let (s, v) = call("POST", "/v1/config/server/validate", bad, &researcher);
        assert_eq!((s, v["valid"].as_bool()), (422, Some(false)), "{bad}: {v}");
    }
    stop(server);

    // A replay of ps1's readings with the control log reproduces the live run: the settings
    // changed before its first reading, and the phase shift issued after its first day.
    let log = dir.path().join("ps1.jsonl");
    let lines: Vec<String> = days("ps1", t0, 0, 24 * 6)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let replayed = dir.path().join("replayed");
    common::ok(&[
        "replay",
        log.to_str().unwrap(),
        "--control",
        lake.join("_control/commands.jsonl").to_str().unwrap(),
        "--lake",
        replayed.to_str().unwrap(),
    ]);
    for sql in [
        "SELECT shift_id, outcome, step_start, achieved_shift_hours FROM phase_shifts \
         WHERE node_id = 'ps1'",
        "SELECT seq, circadian_time, koa_metric, output_pwm FROM states WHERE node_id = 'ps1' \
         ORDER BY seq",
    ] {
        assert_eq!(csv(&replayed, sql), csv(&lake, sql), "{sql}");
    }
}
