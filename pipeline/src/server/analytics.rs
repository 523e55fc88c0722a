//! Analytics over the lake's rhythm windows (period stability, entrainment efficiency) and the
//! bulk endpoints: readings of many nodes in, states of many nodes out (cursor-paged).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::{Filter, Reply};

use super::lake::{bad, encode, run, span, time_filter, ts, Range};
use super::{body, Api, ApiError, Route};
use crate::auth::Principal;
use crate::dataflow::inbound::Inbound;

type Response = warp::reply::Response;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeQuery {
    #[schemars(required)]
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
    /// Days before `end` (instead of `start`).
    #[schemars(range(min = 1, max = 3650))]
    days: Option<u32>,
}

impl RangeQuery {
    /// The range: `start` as given, else `days` (else the default) before `end`.
    fn range(&self) -> Result<Range, ApiError> {
        if self.start.is_some() && self.days.is_some() {
            return Err(bad("start and days both set the range's start: send one"));
        }
        let hours = self
            .days
            .map_or(ANALYTICS_DEFAULT_HOURS, |d| i64::from(d) * 24);
        Range::parse_for(self.node_id.clone(), &self.start, &self.end, hours)
    }
}

/// `?node_id=&start=&end=&metric=`: the periodogram of one node's series.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PeriodogramQuery {
    #[schemars(required)]
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
    /// The series: the clock's KOA output (default) or the filtered temperature.
    #[schemars(extend("enum" = ["koa", "temperature"]))]
    metric: Option<String>,
}

/// The periodogram looks back three days unless told otherwise: enough cycles for a peak.
const PERIODOGRAM_DEFAULT_HOURS: i64 = 72;

/// Analytics look back a week unless told otherwise.
const ANALYTICS_DEFAULT_HOURS: i64 = 7 * 24;

/// A KOA period counts only where its false-alarm probability is at most this (the state's
/// own threshold).
const MAX_FAP: f64 = 0.01;

/// A cosinor fit counts only where its zero-amplitude test rejects at this level.
const MAX_P: f64 = 0.05;

/// Query rows as JSON objects.
pub(super) async fn rows(api: &Api, sql: &str) -> Result<Vec<Value>, ApiError> {
    let batches = run(api, sql).await?;
    let json = encode(&batches, kaiabc_connectors::lake::OutputFormat::Json)?;
    Ok(serde_json::from_slice(&json).unwrap_or_default())
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// Mean, sample standard deviation, and least-squares slope of `y` against `x`.
fn stats(x: &[f64], y: &[f64]) -> (f64, f64, Option<f64>) {
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let sd = if y.len() > 1 {
        (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let mx = x.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let slope = (sxx > 0.0).then(|| {
        x.iter()
            .zip(y)
            .map(|(a, b)| (a - mx) * (b - mean))
            .sum::<f64>()
            / sxx
    });
    (mean, sd, slope)
}

/// `GET /v1/analytics/period-stability`: how steady the clock's period was over the range,
/// from the hourly KOA rhythm windows whose Lomb–Scargle peak is significant.
/// The Lomb–Scargle periodogram (power against period) of a node's states over a range,
/// searched over the rhythm windows' period range, with its peak and false-alarm probability.
pub(super) async fn periodogram(api: Arc<Api>, q: PeriodogramQuery) -> Result<Response, ApiError> {
    use kaiabc_operators::rhythm::lomb_scargle::{LombScargle, PeakSearch};
    let r = Range::parse_for(q.node_id, &q.start, &q.end, PERIODOGRAM_DEFAULT_HOURS)?;
    let metric = q.metric.unwrap_or_else(|| "koa".into());
    let column = match metric.as_str() {
        "koa" => "koa_metric",
        "temperature" => "temperature_kelvin",
        other => return Err(bad(format!("metric {other:?}: koa or temperature"))),
    };
    let sql = format!(
        "SELECT timestamp, {column} AS y FROM states WHERE {} ORDER BY timestamp",
        r.filter("timestamp")
    );
    let all = rows(&api, &sql).await?;
    let (t, y) = super::rhythms::series(&all);
    let w = &api.node_cfg.window;
    let search = PeakSearch::new(w.min_period_hours, w.max_period_hours);
    let mut body = json!({
        "node_id": r.node,
        "start": ts(r.start),
        "end": ts(r.end),
        "metric": metric,
        "n_points": t.len(),
        "min_period_hours": w.min_period_hours,
        "max_period_hours": w.max_period_hours,
        "periods_hours": [],
        "power": [],
        "peak": null,
    });
    // Too few points, or a flat series: no periodogram, and the reason says why.
    match LombScargle::new(&t, &y).and_then(|ls| Ok((ls.periodogram(&search)?, ls))) {
        Ok((pg, ls)) => {
            body["periods_hours"] =
                json!(pg.frequencies.iter().map(|f| 1.0 / f).collect::<Vec<_>>());
            body["power"] = json!(pg
                .powers
                .iter()
                .map(|p| p.is_finite().then_some(*p))
                .collect::<Vec<_>>());
            if let Ok(peak) = ls.refine_peak(&pg) {
                body["peak"] = json!({
                    "period_hours": peak.period_hours,
                    "power": peak.power,
                    "false_alarm_probability": peak.false_alarm_probability,
                });
            }
        }
        Err(e) => body["reason"] = json!(e.to_string()),
    }
    Ok(warp::reply::json(&body).into_response())
}

pub(super) async fn period_stability(api: Arc<Api>, q: RangeQuery) -> Result<Response, ApiError> {
    let r = q.range()?;
    let sql = format!(
        "SELECT window_end, metric, period_hours, false_alarm_probability, power, mesor FROM \
         rhythms WHERE {} ORDER BY window_end, metric",
        r.filter("window_end")
    );
    let all = rows(&api, &sql).await?;
    let mut koa = Vec::new();
    let mut zeitgeber = Vec::new();
    for w in &all {
        let (Some(p), Some(fap)) = (num(w, "period_hours"), num(w, "false_alarm_probability"))
        else {
            continue;
        };
        if fap > MAX_FAP {
            continue;
        }
        let t = w["window_end"]
            .as_str()
            .and_then(|t| kaiabc_schemas::parse_timestamp(t).ok())
            .map(|t| t.timestamp() as f64 / 86_400.0);
        match (w["metric"].as_str(), t) {
            (Some("koa"), Some(t)) => koa.push((t, p, w["window_end"].clone(), fap)),
            (Some("temperature_kelvin"), Some(_)) => zeitgeber.push(p),
            _ => {}
        }
    }
    let windows = all.iter().filter(|w| w["metric"] == "koa").count();
    let summary = if koa.is_empty() {
        Value::Null
    } else {
        let x: Vec<f64> = koa.iter().map(|k| k.0).collect();
        let y: Vec<f64> = koa.iter().map(|k| k.1).collect();
        let (mean, sd, slope) = stats(&x, &y);
        json!({
            "mean_period_hours": mean,
            "std_dev_hours": sd,
            "coefficient_of_variation": if mean > 0.0 { sd / mean } else { f64::NAN },
            "min_period_hours": y.iter().cloned().fold(f64::INFINITY, f64::min),
            "max_period_hours": y.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            "drift_hours_per_day": slope,
        })
    };
    let zg =
        (!zeitgeber.is_empty()).then(|| zeitgeber.iter().sum::<f64>() / zeitgeber.len() as f64);
    // Period against the window's mean temperature (its cosinor MESOR), window by window.
    let mean_kelvin: BTreeMap<&str, f64> = all
        .iter()
        .filter(|w| w["metric"] == "temperature_kelvin")
        .filter_map(|w| Some((w["window_end"].as_str()?, num(w, "mesor")?)))
        .collect();
    let pairs: Vec<(f64, f64)> = koa
        .iter()
        .filter_map(|k| Some((*mean_kelvin.get(k.2.as_str()?)?, k.1)))
        .collect();
    let pt = kaiabc_operators::rhythm::stability::period_temperature(&pairs);
    let y: Vec<f64> = koa.iter().map(|k| k.1).collect();
    let (mean, sd) = if y.is_empty() {
        (None, None)
    } else {
        let m = y.iter().sum::<f64>() / y.len() as f64;
        let v = y.iter().map(|p| (p - m).powi(2)).sum::<f64>() / (y.len().max(2) - 1) as f64;
        (Some(m), Some(v.sqrt()))
    };
    let cv = mean.zip(sd).map(|(m, s)| s / m);
    // Does the period drift? Slope per day over the windows, with errors robust to the
    // autocorrelation of overlapping windows (HAC), and the rank test beside it.
    let days: Vec<f64> = koa.iter().map(|k| k.0).collect();
    let trend = kaiabc_operators::rhythm::trend::trend(&days, &y, None).map(|t| {
        json!({
            "windows": t.n,
            "slope_hours_per_day": t.hac.slope,
            "slope_ci": t.hac.slope_ci,
            "p_value": t.hac.p_value,
            "standard_error": t.hac.slope_se,
            "max_lags": t.hac.max_lags,
            "method": "ols_hac_bartlett",
            "drifting": t.hac.p_value < MAX_P,
            "mann_kendall": t.mann_kendall,
        })
    });
    // Thresholds on the coefficient of variation of the KOA period across windows: a
    // well-compensated, entrained clock varies by well under 1 %.
    let quality = match (y.len(), cv) {
        (n, _) if n < 3 => "insufficient_data",
        (_, Some(c)) if c < 0.01 => "excellent",
        (_, Some(c)) if c < 0.02 => "good",
        (_, Some(c)) if c < 0.05 => "fair",
        _ => "poor",
    };
    Ok(warp::reply::json(&json!({
        "analysis_period": { "start": ts(r.start), "end": ts(r.end) },
        "statistics": {
            "mean_period_hours": mean,
            "std_deviation_hours": sd,
            "min_period_hours": y.iter().cloned().reduce(f64::min),
            "max_period_hours": y.iter().cloned().reduce(f64::max),
            "q10_value": pt.map(|p| p.q10),
            "coefficient_variation": cv,
            "windows": y.len(),
        },
        "temperature_correlation": {
            "pearson_r": pt.map(|p| p.pearson_r),
            "p_value": pt.map(|p| p.p_value),
            "windows": pt.map_or(0, |p| p.n),
        },
        "quality_assessment": quality,
        "period_trend": trend,
        "node_id": r.node,
        "start": ts(r.start),
        "end": ts(r.end),
        "windows": windows,
        "significant_windows": koa.len(),
        "max_false_alarm_probability": MAX_FAP,
        "period": summary,
        "temperature_period_hours": zg,
        "series": koa.iter().map(|k| json!({"window_end": k.2, "period_hours": k.1,
            "false_alarm_probability": k.3})).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /v1/analytics/entrainment-efficiency`: how firmly the clock follows its temperature
/// cycle: the phase angle of entrainment (KOA acrophase minus temperature acrophase, from the
/// 24 h cosinor of each window) and its phase-locking value — the mean resultant length of
/// those angles, 1 for a fixed phase relation, near 0 for none (Lachaux et al. 1999, Hum.
/// Brain Mapp. 8:194) — with the share of windows whose KOA period matches the temperature's.
/// `?node_id=&shift_id=&start=&end=&days=`: a node's phase shifts and phase locking.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EfficiencyQuery {
    #[schemars(required)]
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    /// One phase shift (the id its request returned), whenever it was.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,128}$"))]
    shift_id: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
    /// Days before `end` (instead of `start`).
    #[schemars(range(min = 1, max = 3650))]
    days: Option<u32>,
}

/// The most shifts `recent_shifts` lists, newest first.
const RECENT_SHIFTS: usize = 50;

/// A shift's efficiency (achieved over target) in this band reaches its target.
const ON_TARGET: std::ops::RangeInclusive<f64> = 0.8..=1.2;

/// One row of `phase_shifts`, as the efficiency report reads it.
struct ShiftRow {
    shift_id: String,
    completed_at: Value,
    delta_k: f64,
    kaia_factor: f64,
    target: f64,
    predicted: f64,
    achieved: Option<f64>,
    settling: Option<f64>,
    outcome: String,
}

impl ShiftRow {
    fn of(v: &Value) -> Self {
        Self {
            shift_id: v["shift_id"].as_str().unwrap_or_default().to_string(),
            completed_at: v["completed_at"].clone(),
            delta_k: num(v, "delta_k").unwrap_or(f64::NAN),
            // Files written before the column: temperature steps.
            kaia_factor: num(v, "kaia_factor").unwrap_or(1.0),
            target: num(v, "target_shift_hours").unwrap_or(f64::NAN),
            predicted: num(v, "predicted_shift_hours").unwrap_or(f64::NAN),
            achieved: num(v, "achieved_shift_hours"),
            settling: num(v, "settling_time_hours"),
            outcome: v["outcome"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// Achieved over asked: 1 is on target, 0.5 half way, negative the wrong way.
    fn efficiency(&self) -> Option<f64> {
        self.achieved
            .filter(|_| self.target.abs() > 1e-9)
            .map(|a| a / self.target)
    }

    fn json(&self) -> Value {
        json!({
            "shift_id": self.shift_id,
            "timestamp": self.completed_at,
            "type": if self.target >= 0.0 { "advance" } else { "delay" },
            "target_shift_hours": self.target,
            "predicted_shift_hours": self.predicted,
            "actual_shift_hours": self.achieved,
            "efficiency": self.efficiency(),
            "settling_time_hours": self.settling,
            "temperature_delta_applied": self.delta_k,
            "method": if self.kaia_factor == 1.0 { "temperature_step" } else { "parameter_modulation" },
            "kaia_factor": self.kaia_factor,
            "outcome": self.outcome,
        })
    }
}

/// What the shifts say to do next, from their figures: each line names the figure it rests
/// on.
fn recommendations(shifts: &[ShiftRow]) -> Vec<String> {
    let done: Vec<&ShiftRow> = shifts.iter().filter(|s| s.efficiency().is_some()).collect();
    let mut out = Vec::new();
    if done.is_empty() {
        out.push(
            "No phase shift of this node has completed in the range: ask for one \
             (POST /v1/entrainment/phase-shift) to measure how the clock responds."
                .to_string(),
        );
    } else {
        let n = done.len() as f64;
        let mean = |f: &dyn Fn(&ShiftRow) -> f64| done.iter().map(|s| f(s)).sum::<f64>() / n;
        let efficiency = mean(&|s| s.efficiency().unwrap_or(0.0));
        // How much of the target the curve itself promised: below the band, the step was too
        // small for the target whatever the clock did.
        let promised = mean(&|s| s.predicted / s.target);
        // The steps, as the shifts made them: temperature, KaiA, or both kinds.
        let (temperature, kaia): (Vec<&&ShiftRow>, Vec<&&ShiftRow>) =
            done.iter().partition(|s| s.kaia_factor == 1.0);
        let mut kinds = Vec::new();
        if !temperature.is_empty() {
            let k =
                temperature.iter().map(|s| s.delta_k.abs()).sum::<f64>() / temperature.len() as f64;
            kinds.push(format!("temperature steps of ±{k:.1} K"));
        }
        if !kaia.is_empty() {
            let f = kaia.iter().map(|s| s.kaia_factor).sum::<f64>() / kaia.len() as f64;
            kinds.push(format!("KaiA steps of ×{f:.2}"));
        }
        let steps = kinds.join(" and ");
        let pct = efficiency * 100.0;
        out.push(if ON_TARGET.contains(&efficiency) {
            format!(
                "Shifts reach {pct:.0} % of their targets on average: keep the current {steps}."
            )
        } else if efficiency < *ON_TARGET.start() && promised < *ON_TARGET.start() {
            format!(
                "Shifts reach {pct:.0} % of their targets, and the phase response curve \
                 promised only {:.0} % with {steps}: ask for smaller shifts, or allow a larger \
                 or longer step.",
                promised * 100.0
            )
        } else if efficiency < *ON_TARGET.start() {
            format!(
                "Shifts reach {pct:.0} % of their targets although the phase response curve \
                 promised {:.0} % with {steps}: the node's temperature moved during the steps, or the curve \
                 no longer fits its clock (GET /v1/entrainment/prc recomputes it).",
                promised * 100.0
            )
        } else {
            format!(
                "Shifts overshoot, reaching {pct:.0} % of their targets: use smaller or shorter \
                 steps than the {steps}."
            )
        });
    }
    let longest = shifts
        .iter()
        .filter_map(|s| s.settling)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let interrupted = shifts
        .iter()
        .filter(|s| s.outcome == "superseded" || s.outcome == "cancelled")
        .count();
    if interrupted > 0 {
        out.push(format!(
            "{interrupted} shift(s) were superseded or cancelled before they settled: leave \
             {} between requests.",
            longest.map_or("a few cycles".to_string(), |h| format!("at least {h:.1} h"))
        ));
    } else if let Some(h) = longest.filter(|h| *h > 24.0) {
        out.push(format!(
            "The clock took up to {h:.1} h to settle after a step: wait that long before \
             judging or repeating a shift."
        ));
    }
    out
}

/// `GET /v1/analytics/entrainment-efficiency`: the node's recent phase shifts (what was asked,
/// what the curve predicted, what the clock did and how long it took to settle), their mean
/// efficiency and what to do next; and how closely the clock follows its temperature cycle
/// (phase locking of KOA to temperature, matching periods).
pub(super) async fn entrainment_efficiency(
    api: Arc<Api>,
    q: EfficiencyQuery,
) -> Result<Response, ApiError> {
    let r = RangeQuery {
        node_id: q.node_id,
        start: q.start,
        end: q.end,
        days: q.days,
    }
    .range()?;
    let shift_filter = match &q.shift_id {
        // One shift, whenever it was: the id is checked (its pattern) before it is quoted.
        Some(id)
            if id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            format!("node_id = '{}' AND shift_id = '{id}'", r.node)
        }
        Some(id) => return Err(bad(format!("shift_id: {id:?} is not a shift id"))),
        None => r.filter("completed_at"),
    };
    let shifts: Vec<ShiftRow> = rows(
        &api,
        &format!(
            "SELECT shift_id, completed_at, delta_k, kaia_factor, target_shift_hours, predicted_shift_hours, \
             achieved_shift_hours, settling_time_hours, outcome FROM phase_shifts WHERE \
             {shift_filter} ORDER BY completed_at DESC LIMIT {RECENT_SHIFTS}"
        ),
    )
    .await?
    .iter()
    .map(ShiftRow::of)
    .collect();
    if q.shift_id.is_some() && shifts.is_empty() {
        return Err(ApiError::ShiftNotFound(format!(
            "node {} has no finished phase shift {}",
            r.node,
            q.shift_id.unwrap_or_default()
        )));
    }
    let efficiencies: Vec<f64> = shifts.iter().filter_map(ShiftRow::efficiency).collect();
    let average_efficiency = (!efficiencies.is_empty())
        .then(|| efficiencies.iter().sum::<f64>() / efficiencies.len() as f64);
    let shifts_json: Vec<Value> = shifts.iter().map(ShiftRow::json).collect();
    let advice = recommendations(&shifts);
    let sql = format!(
        "SELECT window_end, metric, period_hours, false_alarm_probability, acrophase_rad, \
         p_value FROM rhythms WHERE {} ORDER BY window_end, metric",
        r.filter("window_end")
    );
    let all = rows(&api, &sql).await?;
    let mut by_window: BTreeMap<String, (Option<Value>, Option<Value>)> = BTreeMap::new();
    for w in all {
        let end = w["window_end"].as_str().unwrap_or_default().to_string();
        let e = by_window.entry(end).or_default();
        match w["metric"].as_str() {
            Some("koa") => e.0 = Some(w),
            Some("temperature_kelvin") => e.1 = Some(w),
            _ => {}
        }
    }
    let mut angles = Vec::new();
    let (mut period_windows, mut matched) = (0usize, 0usize);
    for (k, t) in by_window
        .values()
        .filter_map(|(k, t)| Some((k.as_ref()?, t.as_ref()?)))
    {
        let sig = |w: &Value| num(w, "p_value").is_some_and(|p| p <= MAX_P);
        if sig(k) && sig(t) {
            if let (Some(a), Some(b)) = (num(k, "acrophase_rad"), num(t, "acrophase_rad")) {
                angles.push(a - b);
            }
        }
        let period = |w: &Value| {
            num(w, "period_hours")
                .filter(|_| num(w, "false_alarm_probability").is_some_and(|f| f <= MAX_FAP))
        };
        if let (Some(pk), Some(pt)) = (period(k), period(t)) {
            period_windows += 1;
            if (pk - pt).abs() <= 0.5 {
                matched += 1;
            }
        }
    }
    let (plv, angle_hours) = if angles.is_empty() {
        (None, None)
    } else {
        let n = angles.len() as f64;
        let (s, c) = angles
            .iter()
            .fold((0.0, 0.0), |(s, c), a| (s + a.sin(), c + a.cos()));
        let mean = (s / n).atan2(c / n);
        // Radians of a 24 h cosinor to hours, wrapped into (−12, 12].
        let mut h = mean * 24.0 / std::f64::consts::TAU;
        if h <= -12.0 {
            h += 24.0;
        }
        (Some(((s / n).powi(2) + (c / n).powi(2)).sqrt()), Some(h))
    };
    let state_sql = format!(
        "SELECT count(*) AS n, sum(CASE WHEN entrainment_active THEN 1 ELSE 0 END) AS active \
         FROM states WHERE {}",
        r.filter("timestamp")
    );
    let st = rows(&api, &state_sql).await?;
    let (n, active) = st
        .first()
        .map(|v| (num(v, "n").unwrap_or(0.0), num(v, "active").unwrap_or(0.0)))
        .unwrap_or((0.0, 0.0));
    Ok(warp::reply::json(&json!({
        "node_id": r.node,
        "recent_shifts": shifts_json,
        "average_efficiency": average_efficiency,
        "recommendations": advice,
        "start": ts(r.start),
        "end": ts(r.end),
        "windows": by_window.len(),
        "entrainment_efficiency": plv,
        "phase_locking": { "value": plv, "windows": angles.len(), "max_p_value": MAX_P },
        "phase_angle_hours": angle_hours,
        "period_match": {
            "fraction": (period_windows > 0).then(|| matched as f64 / period_windows as f64),
            "windows": period_windows,
            "tolerance_hours": 0.5,
        },
        "entrained_state_fraction": (n > 0.0).then(|| active / n),
    }))
    .into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkStatesQuery {
    /// Comma-separated node ids (every node without it).
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}(,[A-Za-z0-9_-]{1,64})*$"))]
    node_ids: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
    #[schemars(range(min = 1, max = 10_000))]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[schemars(pattern(r"^[0-9]{1,19}$"))]
    cursor: Option<String>,
    /// `true`: each node's latest state, from memory, instead of the lake.
    latest: Option<bool>,
}

/// The largest page of bulk states.
const MAX_BULK_LIMIT: usize = 10_000;

/// The most readings one bulk upload may carry.
pub const MAX_BULK_READINGS: usize = 10_000;

/// `GET /v1/bulk/oscillator-states`: states of many nodes, in (timestamp, node_id) order, a
/// page at a time; the cursor is the last row's key.
pub(super) async fn bulk_states(api: Arc<Api>, q: BulkStatesQuery) -> Result<Response, ApiError> {
    let nodes: Vec<String> = match &q.node_ids {
        None => Vec::new(),
        Some(s) => s.split(',').map(|n| n.trim().to_string()).collect(),
    };
    if let Some(n) = nodes.iter().find(|n| !crate::auth::valid_node_id(n)) {
        return Err(bad(format!("node_ids: {n:?} is not a node id")));
    }
    if q.latest == Some(true) {
        let ids = if nodes.is_empty() {
            api.shared.hub.nodes()
        } else {
            nodes
        };
        let states: Vec<_> = ids.iter().filter_map(|n| api.shared.hub.state(n)).collect();
        return Ok(
            warp::reply::json(&json!({"count": states.len(), "states": states})).into_response(),
        );
    }
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_BULK_LIMIT {
        return Err(bad(format!("limit must be 1-{MAX_BULK_LIMIT}")));
    }
    let (start, end) = span(&q.start, &q.end, 24)?;
    let mut filter = time_filter("timestamp", start, end);
    if !nodes.is_empty() {
        let list: Vec<String> = nodes.iter().map(|n| format!("'{n}'")).collect();
        filter.push_str(&format!(" AND node_id IN ({})", list.join(", ")));
    }
    if let Some(c) = &q.cursor {
        let Some((us, node)) = c
            .split_once('_')
            .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b)))
            .filter(|(_, b)| crate::auth::valid_node_id(b))
        else {
            return Err(bad("cursor is not one this API issued"));
        };
        filter.push_str(&format!(
            " AND (timestamp > to_timestamp_micros({us}) OR (timestamp = \
             to_timestamp_micros({us}) AND node_id > '{node}'))"
        ));
    }
    let sql = format!(
        "SELECT * EXCLUDE (date) FROM states WHERE {filter} ORDER BY timestamp, node_id LIMIT {}",
        limit + 1
    );
    let mut states = rows(&api, &sql).await?;
    let next = if states.len() > limit {
        states.truncate(limit);
        states.last().and_then(|s| {
            let t = kaiabc_schemas::parse_timestamp(s["timestamp"].as_str()?).ok()?;
            Some(format!(
                "{}_{}",
                t.timestamp_micros(),
                s["node_id"].as_str()?
            ))
        })
    } else {
        None
    };
    Ok(warp::reply::json(&json!({
        "start": ts(start),
        "end": ts(end),
        "count": states.len(),
        "states": states,
        "next_cursor": next,
    }))
    .into_response())
}

/// `POST /v1/bulk/sensor-readings` (admin): readings of any nodes, e.g. a backlog imported
/// from a node's SD card; each node's readings enter the dataflow as one batch, and invalid
/// ones become dead letters there, exactly as on the node's own path. Once durable, the answer
/// waits (as ingestion does) for the dataflow to apply them: per reading its `status`
/// (`processed`, `rejected`, or `pending` if the pipeline is behind) and filtered temperature;
/// 200 when every valid reading was applied, else 202.
async fn bulk_readings(api: Arc<Api>, body: bytes::Bytes) -> Response {
    let started = std::time::Instant::now();
    let bad = |m: String| ApiError::InvalidPayload(m).response();
    let items: Vec<Value> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(v)) => v,
        Ok(Value::Object(mut o)) => match o.remove("readings") {
            Some(Value::Array(v)) => v,
            _ => return bad("expected an array of readings or {\"readings\": [...]}".into()),
        },
        Ok(_) => return bad("expected an array of readings or {\"readings\": [...]}".into()),
        Err(e) => return ApiError::ParseError(e.to_string()).response(),
    };
    if items.len() > MAX_BULK_READINGS {
        return ApiError::TooManyReadings(format!(
            "at most {MAX_BULK_READINGS} readings per request"
        ))
        .response();
    }
    let now = Utc::now();
    let mut by_node: BTreeMap<Option<String>, Vec<Value>> = BTreeMap::new();
    let mut rejected = Vec::new();
    // Per reading: its node and, if valid, the receiver of what the dataflow made of it.
    let mut results: Vec<(
        Option<String>,
        Option<tokio::sync::oneshot::Receiver<crate::ws::Outcome>>,
    )> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let bytes = item.to_string().into_bytes();
        let node = match kaiabc_schemas::RawReading::from_json(&bytes).and_then(|r| r.validate(now))
        {
            Ok(r) => {
                let rx =
                    api.shared
                        .hub
                        .await_applied(&r.node_id, r.timestamp.timestamp_micros(), r.seq);
                results.push((Some(r.node_id.clone()), Some(rx)));
                Some(r.node_id)
            }
            Err(rej) => {
                rejected.push(json!({"index": i, "code": rej.reason.code(),
                    "message": rej.message}));
                let node = rej.node_id.filter(|n| crate::auth::valid_node_id(n));
                results.push((node.clone(), None));
                node
            }
        };
        by_node.entry(node).or_default().push(item);
    }
    let messages: Vec<Inbound> = by_node
        .into_iter()
        .map(|(node, items)| Inbound {
            source: "http:/v1/bulk/sensor-readings".into(),
            node: node.ok_or_else(|| "no valid node_id in the reading".to_string()),
            payload: serde_json::to_vec(&items).unwrap_or_default(),
            received_at: now,
        })
        .collect();
    let a = Arc::clone(&api);
    match tokio::task::spawn_blocking(move || a.ingest.durable_all_blocking(&messages)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return super::not_stored(&e),
        Err(e) => return ApiError::Internal(e.to_string()).response(),
    }
    let deadline = tokio::time::Instant::now() + super::ingest::APPLIED_WAIT;
    let mut out = Vec::with_capacity(results.len());
    let mut pending = 0;
    for (node, rx) in results {
        let (status, filtered) = match rx {
            None => ("rejected", None),
            Some(rx) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(crate::ws::Outcome::Applied(a))) => ("processed", a.temperature_kelvin),
                // The node's clock or filter failed on it (a dead letter).
                Ok(Ok(crate::ws::Outcome::Failed { .. })) => ("rejected", None),
                _ => {
                    pending += 1;
                    ("pending", None)
                }
            },
        };
        out.push(json!({"node_id": node, "status": status, "filtered_temperature": filtered}));
    }
    let total = rejected.len();
    let status = if pending == 0 {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    warp::reply::with_status(
        warp::reply::json(&json!({
            "accepted": out.len() - total,
            "rejected": total,
            "processing_time_ms": started.elapsed().as_secs_f64() * 1e3,
            "results": out,
            "rejections": rejected,
            "rejected_count": total,
        })),
        status,
    )
    .into_response()
}

/// The body of `POST /v1/bulk/oscillator-states`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkLatestRequest {
    /// The nodes (at most 1000).
    #[schemars(length(max = 1000))]
    node_ids: Vec<kaiabc_schemas::registry::NodeId>,
    /// `minimal`, `standard` (default) or `full` (every field of the state).
    #[serde(default)]
    #[schemars(extend("enum" = ["minimal", "standard", "full"]))]
    detail_level: Option<String>,
}

/// `POST /v1/bulk/oscillator-states`: each named node's latest state (`circadian_time`,
/// `phase`, `koa_metric`, `status`; everything at `detail_level=full`), or for a node without
/// one `{"error": "node_offline" | "node_not_found", "last_seen"}`.
fn bulk_latest(api: &Api, body: &[u8]) -> Response {
    let req: BulkLatestRequest = match super::json_object(body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::InvalidParameter(format!(
                "expected {{\"node_ids\": [...], \"detail_level\"?}}: {e}"
            ))
            .response()
        }
    };
    let full = match req.detail_level.as_deref() {
        None | Some("minimal") | Some("standard") => false,
        Some("full") => true,
        Some(d) => {
            return ApiError::InvalidParameter(format!(
                "detail_level {d:?}: minimal, standard or full"
            ))
            .response()
        }
    };
    if req.node_ids.len() > 1000 {
        return ApiError::InvalidParameter("at most 1000 node_ids".into()).response();
    }
    let mut states = serde_json::Map::new();
    for n in &req.node_ids {
        if !crate::auth::valid_node_id(n) {
            return ApiError::InvalidParameter(format!("node_ids: {n:?} is not a node id"))
                .response();
        }
        let online = api.shared.metrics.node_online(n) == Some(true);
        let entry = match api.shared.hub.state(n) {
            Some(s) if full => {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["status"] = json!(if online { "online" } else { "offline" });
                v
            }
            Some(s) => json!({
                "circadian_time": s.circadian_time,
                "phase": s.phase,
                "koa_metric": s.koa_metric,
                "status": if online { "online" } else { "offline" },
                "timestamp": kaiabc_schemas::format_timestamp(&s.timestamp),
            }),
            None => {
                let known = api.registry.get(n).is_some();
                json!({
                    "error": if known { "node_offline" } else { "node_not_found" },
                    "last_seen": api.shared.hub.last_event_time(n)
                        .map(|t| kaiabc_schemas::format_timestamp(&t)),
                })
            }
        };
        states.insert(n.0.clone(), entry);
    }
    warp::reply::json(&json!({
        "states": states,
        "timestamp": kaiabc_schemas::format_timestamp(&Utc::now()),
    }))
    .into_response()
}

/// `POST /v1/bulk/oscillator-states` (64 KiB at most).
pub(super) fn bulk_latest_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(body(64 * 1024))
        .map(move |_: Principal, b: bytes::Bytes| bulk_latest(&a, &b))
        .boxed()
}

/// `POST /v1/bulk/sensor-readings` (16 MiB at most).
pub(super) fn bulk_readings_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(body(16 * 1024 * 1024))
        .then(move |_: Principal, b: bytes::Bytes| bulk_readings(Arc::clone(&a), b))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shift(target: f64, predicted: f64, achieved: Option<f64>, kaia: f64) -> ShiftRow {
        ShiftRow {
            shift_id: "s".into(),
            completed_at: Value::Null,
            delta_k: if kaia == 1.0 { 5.0 } else { 0.0 },
            kaia_factor: kaia,
            target,
            predicted,
            achieved,
            settling: achieved.map(|_| 30.0),
            outcome: if achieved.is_some() {
                "completed"
            } else {
                "superseded"
            }
            .into(),
        }
    }

    /// Each branch of the advice follows from the figures it names.
    #[test]
    fn the_advice_follows_the_shifts_figures() {
        let advice = |rows: &[ShiftRow]| recommendations(rows).join(" | ");
        assert!(advice(&[]).contains("No phase shift"));
        // Half the target, and the curve promised little more: the step was too small.
        let a = advice(&[shift(2.0, 1.1, Some(1.0), 1.0)]);
        assert!(
            a.contains("50 %") && a.contains("promised only 55 %"),
            "{a}"
        );
        assert!(a.contains("temperature steps of ±5.0 K"), "{a}");
        // Short of a promise the curve made: the clock did not follow it.
        let a = advice(&[shift(2.0, 2.0, Some(1.0), 2.0)]);
        assert!(
            a.contains("although") && a.contains("KaiA steps of ×2.00"),
            "{a}"
        );
        assert!(advice(&[shift(1.0, 1.0, Some(1.5), 1.0)]).contains("overshoot"));
        // On target; a superseded shift asks for spacing by the longest settling time.
        let a = advice(&[shift(1.0, 1.0, Some(0.95), 1.0), shift(1.0, 1.0, None, 1.0)]);
        assert!(
            a.contains("keep the current") && a.contains("1 shift(s) were superseded"),
            "{a}"
        );
        assert!(a.contains("at least 30.0 h"), "{a}");
    }
}
