//! Rhythm analyses of the lake's states over HTTP: the wavelet spectrum of one node
//! (`GET /v1/analytics/wavelet`) and the cosinor of one node or the population-mean cosinor of a
//! group (`GET /v1/analytics/cosinor`).

use std::sync::Arc;

use kaiabc_operators::rhythm::multi_cosinor::multi_cosinor;
use kaiabc_operators::rhythm::population::population_cosinor;
use kaiabc_operators::rhythm::wavelet::{wavelet_spectrum, WaveletOptions};
use kaiabc_operators::rhythm::RhythmError;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::Reply;

use super::analytics::rows;
use super::lake::{bad, either, span, time_filter, ts, Range};
use super::{Api, ApiError};

type Response = warp::reply::Response;

/// The series an analysis reads from `states`.
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Variable {
    /// The clock's KOA output.
    KoaMetric,
    /// The filtered temperature.
    TemperatureKelvin,
}

impl Variable {
    fn column(self) -> &'static str {
        match self {
            Variable::KoaMetric => "koa_metric",
            Variable::TemperatureKelvin => "temperature_kelvin",
        }
    }
}

/// `?node_id=&start_time=&end_time=&variable=`: a node's wavelet spectrum.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WaveletQuery {
    #[schemars(required)]
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    /// Start of the range (default: three days before the end).
    #[schemars(extend("format" = "date-time"))]
    start_time: Option<String>,
    /// The same as `start_time`.
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    /// End of the range (default: now).
    #[schemars(extend("format" = "date-time"))]
    end_time: Option<String>,
    /// The same as `end_time`.
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
    /// The series (default `koa_metric`).
    variable: Option<Variable>,
    /// Shortest period analysed (h, default 4).
    #[schemars(range(min = 0.01, max = 8760.0))]
    min_period_hours: Option<f64>,
    /// Longest period analysed (h, default 48).
    #[schemars(range(min = 0.02, max = 87600.0))]
    max_period_hours: Option<f64>,
    /// Grid step (h). Default: the readings' median spacing, or longer so that the grid has
    /// at most 1024 samples.
    #[schemars(range(min = 0.0001, max = 1000.0))]
    dt_hours: Option<f64>,
}

/// The wavelet looks back three days unless told otherwise, like the periodogram.
const WAVELET_DEFAULT_HOURS: i64 = 72;

/// Most grid samples the endpoint returns per period row (bounds the reply's size).
const MAX_WAVELET_SAMPLES: usize = 1024;

/// Rhythm errors that are the caller's parameters (400) rather than the data (200 with a
/// reason, as the periodogram answers).
fn is_parameter_error(e: &RhythmError) -> bool {
    matches!(
        e,
        RhythmError::InvalidPeriodRange { .. }
            | RhythmError::InvalidParameter { .. }
            | RhythmError::GridTooLarge { .. }
    )
}

/// Hours since the epoch of each row's `timestamp`, with its value `y` (rows without either
/// are skipped).
pub(super) fn series(all: &[Value]) -> (Vec<f64>, Vec<f64>) {
    let mut t = Vec::with_capacity(all.len());
    let mut y = Vec::with_capacity(all.len());
    for row in all {
        let time = row["timestamp"]
            .as_str()
            .and_then(|s| kaiabc_schemas::parse_timestamp(s).ok());
        if let (Some(time), Some(v)) = (time, row["y"].as_f64()) {
            t.push(time.timestamp_millis() as f64 / 3_600_000.0);
            y.push(v);
        }
    }
    (t, y)
}

/// `GET /v1/analytics/wavelet`: the Morlet wavelet spectrum of a node's KOA or temperature
/// (times in the reply are hours since the start of the range).
pub(super) async fn wavelet(api: Arc<Api>, q: WaveletQuery) -> Result<Response, ApiError> {
    let start = either("start", q.start_time, q.start)?;
    let end = either("end", q.end_time, q.end)?;
    let r = Range::parse_for(q.node_id, &start, &end, WAVELET_DEFAULT_HOURS)?;
    let variable = q.variable.unwrap_or(Variable::KoaMetric);
    let sql = format!(
        "SELECT timestamp, {} AS y FROM states WHERE {} ORDER BY timestamp",
        variable.column(),
        r.filter("timestamp")
    );
    let (t, y) = series(&rows(&api, &sql).await?);
    let origin = r.start as f64 / 3_600_000_000.0;
    let t: Vec<f64> = t.iter().map(|h| h - origin).collect();
    let mut options = WaveletOptions {
        dt_hours: q.dt_hours,
        ..Default::default()
    };
    if let Some(p) = q.min_period_hours {
        options.min_period_hours = p;
    }
    if let Some(p) = q.max_period_hours {
        options.max_period_hours = p;
    }
    if options.dt_hours.is_none() && t.len() >= 2 {
        // The median spacing unless the grid would be longer than the reply allows.
        let span = t[t.len() - 1] - t[0];
        let floor = span / (MAX_WAVELET_SAMPLES - 1) as f64;
        let median = median_step(&t);
        options.dt_hours = Some(median.max(floor));
    }
    // The grid's length before any work: a tiny dt_hours must not make the server transform
    // (and hold) a million samples per period only to refuse the answer.
    if let (Some(dt), [first, .., last]) = (options.dt_hours, t.as_slice()) {
        let samples = ((last - first) / dt).round() + 1.0;
        if samples > MAX_WAVELET_SAMPLES as f64 {
            return Err(bad(format!(
                "dt_hours {dt} gives {samples} grid samples; at most {MAX_WAVELET_SAMPLES} are \
                 returned: widen dt_hours or shorten the range"
            )));
        }
    }
    let mut body = json!({
        "node_id": r.node,
        "variable": variable.column(),
        "start_time": ts(r.start),
        "end_time": ts(r.end),
        "n_points": t.len(),
        "min_period_hours": options.min_period_hours,
        "max_period_hours": options.max_period_hours,
    });
    match wavelet_spectrum(&t, &y, &options) {
        Ok(w) => {
            let mut w = serde_json::to_value(&w).map_err(|e| ApiError::Internal(e.to_string()))?;
            if let (Some(b), Some(w)) = (body.as_object_mut(), w.as_object_mut()) {
                b.append(w);
            }
        }
        Err(e) if is_parameter_error(&e) => return Err(bad(e.to_string())),
        Err(e) => {
            body["reason"] = json!(e.to_string());
            body["code"] = json!(e.code());
        }
    }
    Ok(warp::reply::json(&body).into_response())
}

fn median_step(t: &[f64]) -> f64 {
    let mut d: Vec<f64> = t
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    if d.is_empty() {
        return 1.0;
    }
    d.sort_by(f64::total_cmp);
    d[d.len() / 2]
}

/// `?node_ids=&components=&variable=&start_time=&end_time=`: the cosinor of one node, or the
/// population-mean cosinor of several.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CosinorQuery {
    /// One node, or a comma-separated group of nodes (at least three for a population mean).
    #[schemars(required)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}(,[A-Za-z0-9_-]{1,64}){0,99}$"))]
    node_ids: Option<String>,
    /// Comma-separated periods of the components (h, default `24`), e.g. `24,12`.
    #[schemars(pattern(r"^[0-9.]+(,[0-9.]+){0,5}$"))]
    components: Option<String>,
    /// The series (default `koa_metric`).
    variable: Option<Variable>,
    /// Start of the range (default: a week before the end).
    #[schemars(extend("format" = "date-time"))]
    start_time: Option<String>,
    /// The same as `start_time`.
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    /// End of the range (default: now).
    #[schemars(extend("format" = "date-time"))]
    end_time: Option<String>,
    /// The same as `end_time`.
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
}

/// The cosinor looks back a week unless told otherwise.
const COSINOR_DEFAULT_HOURS: i64 = 7 * 24;

const DAY_US: i64 = 86_400_000_000;

/// Most nodes in one population request.
const MAX_GROUP: usize = 100;

/// Most components in one fit.
const MAX_COMPONENTS: usize = 6;

fn parse_components(c: Option<&str>) -> Result<Vec<f64>, ApiError> {
    let Some(c) = c else { return Ok(vec![24.0]) };
    let mut out = Vec::new();
    for p in c.split(',').map(str::trim) {
        match p.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => out.push(v),
            _ => {
                return Err(bad(format!(
                    "components: {p:?} is not a positive period in hours"
                )))
            }
        }
    }
    if out.is_empty() || out.len() > MAX_COMPONENTS {
        return Err(bad(format!(
            "components: give 1 to {MAX_COMPONENTS} periods, e.g. 24,12"
        )));
    }
    Ok(out)
}

/// `GET /v1/analytics/cosinor`.
pub(super) async fn cosinor(api: Arc<Api>, q: CosinorQuery) -> Result<Response, ApiError> {
    let mut nodes: Vec<String> = Vec::new();
    for n in q
        .node_ids
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if !crate::auth::valid_node_id(n) {
            return Err(bad(format!(
                "node_ids: {n:?} is not a node id (1-64 characters of A-Z a-z 0-9 _ -)"
            )));
        }
        if !nodes.iter().any(|m| m == n) {
            nodes.push(n.to_string());
        }
    }
    if nodes.is_empty() || nodes.len() > MAX_GROUP {
        return Err(bad(format!(
            "node_ids is required: one node, or up to {MAX_GROUP} comma-separated"
        )));
    }
    let periods = parse_components(q.components.as_deref())?;
    let start = either("start", q.start_time, q.start)?;
    let end = either("end", q.end_time, q.end)?;
    let (from, to) = span(&start, &end, COSINOR_DEFAULT_HOURS)?;
    let variable = q.variable.unwrap_or(Variable::KoaMetric);
    let list = nodes
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT node_id, timestamp, {} AS y FROM states WHERE node_id IN ({list}) AND {} \
         ORDER BY node_id, timestamp",
        variable.column(),
        time_filter("timestamp", from, to)
    );
    let all = rows(&api, &sql).await?;
    // Times count from UTC midnight of the range's first day, so a 24 h component's peak time
    // is its hour of the day (UTC).
    let midnight = from.div_euclid(DAY_US) * DAY_US;
    let origin = midnight as f64 / 3_600_000_000.0;
    // One pass over the rows (ordered by node), not one per node.
    let mut by_node: std::collections::HashMap<&str, Vec<Value>> = std::collections::HashMap::new();
    for row in all {
        if let Some(node) = row["node_id"]
            .as_str()
            .and_then(|n| nodes.iter().find(|m| *m == n))
        {
            by_node.entry(node.as_str()).or_default().push(row);
        }
    }
    let members: Vec<(String, Vec<f64>, Vec<f64>)> = nodes
        .iter()
        .map(|node| {
            let (t, y) = series(by_node.get(node.as_str()).map_or(&[][..], Vec::as_slice));
            (node.clone(), t.iter().map(|h| h - origin).collect(), y)
        })
        .collect();
    let mut body = json!({
        "node_ids": nodes,
        "variable": variable.column(),
        "components": periods,
        "start_time": ts(from),
        "end_time": ts(to),
        "time_origin": ts(midnight),
    });
    if members.len() == 1 {
        let (_, t, y) = &members[0];
        body["n_points"] = json!(t.len());
        match multi_cosinor(t, y, &periods) {
            Ok(fit) => body["fit"] = json!(fit),
            Err(e) if is_parameter_error(&e) => return Err(bad(e.to_string())),
            Err(e) => {
                body["fit"] = Value::Null;
                body["reason"] = json!(e.to_string());
                body["code"] = json!(e.code());
            }
        }
    } else {
        // A node without enough data is named, not silently dropped.
        let (usable, empty): (Vec<_>, Vec<_>) = members
            .into_iter()
            .partition(|(_, t, _)| t.len() > 1 + 2 * periods.len());
        body["nodes_without_data"] = json!(empty.iter().map(|m| &m.0).collect::<Vec<_>>());
        match population_cosinor(&usable, &periods) {
            Ok(fit) => body["population"] = json!(fit),
            Err(e) if is_parameter_error(&e) => return Err(bad(e.to_string())),
            Err(e) => {
                body["population"] = Value::Null;
                body["reason"] = json!(e.to_string());
                body["code"] = json!(e.code());
            }
        }
    }
    Ok(warp::reply::json(&body).into_response())
}
