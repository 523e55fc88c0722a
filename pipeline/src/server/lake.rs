//! Reads of the lake over HTTP: a node's history (paged, optionally downsampled) and exports of
//! a node's states, readings or rhythm windows as CSV, JSON or Parquet. Both run SQL through
//! DataFusion over committed files only.

use std::sync::Arc;

use chrono::Utc;
use kaiabc_connectors::lake::RecordBatch;
use serde::Deserialize;
use warp::Reply;

use super::{Api, ApiError};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct HistoryQuery {
    #[schemars(required)]
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    /// The range's start (default: a day before its end).
    #[schemars(extend("format" = "date-time"))]
    start_time: Option<String>,
    /// The range's end, exclusive (default: now).
    #[schemars(extend("format" = "date-time"))]
    end_time: Option<String>,
    /// The same as `start_time`.
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    /// The same as `end_time`.
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
    #[schemars(extend("enum" = ["raw", "1s", "10s", "1m", "5m", "10m", "15m", "1h", "6h", "1d"]))]
    resolution: Option<String>,
    /// Comma-separated state variables for `series` (default: all).
    #[schemars(pattern(r"^[A-Za-z_]+(,[A-Za-z_]+)*$"))]
    variables: Option<String>,
    #[schemars(range(min = 1, max = 10_000))]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[schemars(pattern(r"^[0-9]{1,19}$"))]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct ExportQuery {
    #[schemars(required)]
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    /// The range's start (default: a day before its end).
    #[schemars(extend("format" = "date-time"))]
    start_time: Option<String>,
    /// The range's end, exclusive (default: now).
    #[schemars(extend("format" = "date-time"))]
    end_time: Option<String>,
    /// The same as `start_time`.
    #[schemars(extend("format" = "date-time"))]
    start: Option<String>,
    /// The same as `end_time`.
    #[schemars(extend("format" = "date-time"))]
    end: Option<String>,
    /// Comma-separated columns to keep (default: all; `timestamp` always).
    #[schemars(pattern(r"^[A-Za-z_]+(,[A-Za-z_]+)*$"))]
    variables: Option<String>,
    /// Time buckets (states only; readings and rhythms are exported raw).
    #[schemars(extend("enum" = ["raw", "1m", "5m", "15m", "1h", "6h", "1d"]))]
    resolution: Option<String>,
    /// `json` (the default) and `csv` answer with the data, `parquet` too; `hdf5` answers
    /// with a link under `/v1/downloads/`, kept for a day.
    #[schemars(extend("enum" = ["json", "csv", "hdf5", "parquet"]))]
    format: Option<String>,
    #[schemars(extend("enum" = ["states", "readings", "rhythms"]))]
    data: Option<String>,
}

/// The time buckets `resolution` may name, as SQL intervals.
const RESOLUTIONS: &[(&str, &str)] = &[
    ("1s", "1 second"),
    ("10s", "10 seconds"),
    ("1m", "1 minute"),
    ("5m", "5 minutes"),
    ("10m", "10 minutes"),
    ("15m", "15 minutes"),
    ("1h", "1 hour"),
    ("6h", "6 hours"),
    ("1d", "1 day"),
];

/// The largest page of history.
pub const MAX_HISTORY_LIMIT: usize = 10_000;

/// The most rows one export returns (narrower ranges or coarser resolutions for more).
pub const MAX_EXPORT_ROWS: usize = 1_000_000;

type Response = warp::reply::Response;

/// A bad parameter of a lake read (400 `INVALID_PARAMETER`).
pub(super) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter(msg.into())
}

/// A failed query over the lake (500 `QUERY_FAILED`).
pub(super) fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::QueryFailed(e.to_string())
}

/// A node and a time range `[start, end)` in microseconds, checked.
pub(super) struct Range {
    pub(super) node: String,
    pub(super) start: i64,
    pub(super) end: i64,
}

impl Range {
    /// From the query: `end` defaults to now and `start` to a day before `end`.
    pub(super) fn parse(
        node: Option<String>,
        start: &Option<String>,
        end: &Option<String>,
    ) -> Result<Self, ApiError> {
        Self::parse_for(node, start, end, 24)
    }

    /// As [`Range::parse`], `start` defaulting to `default_hours` before `end`.
    pub(super) fn parse_for(
        node: Option<String>,
        start: &Option<String>,
        end: &Option<String>,
        default_hours: i64,
    ) -> Result<Self, ApiError> {
        let Some(node) = node.filter(|n| crate::auth::valid_node_id(n)) else {
            return Err(bad(
                "node_id is required (1-64 characters of A-Z a-z 0-9 _ -)",
            ));
        };
        let (start, end) = span(start, end, default_hours)?;
        Ok(Self { node, start, end })
    }

    /// The SQL condition on the node and `time_column`.
    pub(super) fn filter(&self, time_column: &str) -> String {
        format!(
            "node_id = '{}' AND {}",
            self.node,
            time_filter(time_column, self.start, self.end)
        )
    }
}

/// A time range `[start, end)` in µs from the query: `end` defaults to now and `start` to
/// `default_hours` before `end`.
pub(super) fn span(
    start: &Option<String>,
    end: &Option<String>,
    default_hours: i64,
) -> Result<(i64, i64), ApiError> {
    let parse = |name: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        match v {
            None => Ok(None),
            Some(t) => kaiabc_schemas::parse_timestamp(t)
                .map(|t| Some(t.timestamp_micros()))
                .map_err(|e| bad(format!("{name}: {e}"))),
        }
    };
    let end = parse("end", end)?.unwrap_or_else(|| Utc::now().timestamp_micros());
    let start = parse("start", start)?.unwrap_or(end - default_hours * 3_600_000_000);
    if start >= end {
        return Err(bad("start must be before end"));
    }
    Ok((start, end))
}

/// The SQL condition on `time_column` in `[start, end)` µs, with the `date` partitions pruned.
/// Everything interpolated is an integer or a checked node id.
pub(super) fn time_filter(time_column: &str, start: i64, end: i64) -> String {
    let day = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "1970-01-01".into())
    };
    format!(
        "{time_column} >= to_timestamp_micros({start}) \
         AND {time_column} < to_timestamp_micros({end}) \
         AND date BETWEEN DATE '{}' AND DATE '{}'",
        day(start),
        day(end)
    )
}

pub(super) fn ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| kaiabc_schemas::format_timestamp(&t))
        .unwrap_or_default()
}

/// The SQL interval of a `resolution` (`None` for raw).
fn interval_of(resolution: &str) -> Result<Option<&'static str>, ApiError> {
    if resolution == "raw" {
        return Ok(None);
    }
    match RESOLUTIONS.iter().find(|(k, _)| *k == resolution) {
        Some((_, i)) => Ok(Some(i)),
        None => Err(bad(format!(
            "resolution {resolution:?}: raw, {}",
            RESOLUTIONS
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A node's states in the range, raw or averaged into `interval` buckets (circadian time and
/// phase take the bucket's last value), after `after` (µs), oldest first, at most `limit`.
fn states_sql(r: &Range, interval: Option<&str>, after: Option<i64>, limit: usize) -> String {
    let filter = r.filter("timestamp");
    let cursor = after
        .map(|c| format!(" AND timestamp > to_timestamp_micros({c})"))
        .unwrap_or_default();
    match interval {
        None => format!(
            "SELECT timestamp, seq, circadian_time, phase, period_hours, \"C_U\", \"C_S\", \
             \"C_T\", \"C_ST\", \"A_free\", \"CABC_complex\", koa_metric, output_pwm, \
             entrainment_active, temperature_kelvin, raw_temperature_kelvin \
             FROM states WHERE {filter}{cursor} ORDER BY timestamp, seq LIMIT {limit}"
        ),
        Some(i) => format!(
            "SELECT * FROM (SELECT date_bin(INTERVAL '{i}', timestamp, \
             TIMESTAMP '1970-01-01T00:00:00Z') AS timestamp, count(*) AS samples, \
             last_value(circadian_time ORDER BY timestamp) AS circadian_time, \
             last_value(phase ORDER BY timestamp) AS phase, avg(period_hours) AS period_hours, \
             avg(\"C_U\") AS \"C_U\", avg(\"C_S\") AS \"C_S\", avg(\"C_T\") AS \"C_T\", \
             avg(\"C_ST\") AS \"C_ST\", avg(\"A_free\") AS \"A_free\", \
             avg(\"CABC_complex\") AS \"CABC_complex\", avg(koa_metric) AS koa_metric, \
             avg(output_pwm) AS output_pwm, avg(temperature_kelvin) AS temperature_kelvin, \
             avg(raw_temperature_kelvin) AS raw_temperature_kelvin \
             FROM states WHERE {filter} GROUP BY 1) WHERE true{cursor} ORDER BY timestamp \
             LIMIT {limit}"
        ),
    }
}

/// Queries of the lake running now (the API's `database.connections_active`).
pub(super) static QUERIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(super) async fn run(api: &Api, sql: &str) -> Result<Vec<RecordBatch>, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    QUERIES.fetch_add(1, Relaxed);
    let out = kaiabc_connectors::lake::query(&api.lake, sql)
        .await
        .map_err(failed);
    QUERIES.fetch_sub(1, Relaxed);
    out
}

pub(super) fn encode(
    batches: &[RecordBatch],
    format: kaiabc_connectors::lake::OutputFormat,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    kaiabc_connectors::lake::write_batches(batches, format, &mut out).map_err(failed)?;
    Ok(out)
}

/// A GET route whose handler reads the lake: the query string parsed into `Q`, a refusal
/// answered with its error body.
pub(super) fn lake_get<Q, F, Fut>(api: &Arc<Api>, at: super::Matched, handler: F) -> super::Route
where
    Q: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Arc<Api>, Q) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    let a = Arc::clone(api);
    use warp::Filter;
    at.and(warp::query::<Q>())
        .then(move |_: crate::auth::Principal, q: Q| {
            let answer = handler(Arc::clone(&a), q);
            async move { answer.await.unwrap_or_else(ApiError::into_response) }
        })
        .boxed()
}

/// One of two names of a time parameter (the specification's first), not both.
pub(super) fn either(
    name: &str,
    spec: Option<String>,
    ours: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (spec, ours) {
        (Some(_), Some(_)) => Err(bad(format!(
            "{name}_time and {name} name the same thing: send one"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// The names in a comma-separated `variables`, each one of `allowed`.
fn variables(v: Option<&str>, allowed: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !allowed.contains(&name) {
            return Err(bad(format!(
                "variables: {name:?} is not one of {}",
                allowed.join(", ")
            )));
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    Ok(Some(out))
}

/// The state variables `history` and a states export can give.
const STATE_VARIABLES: &[&str] = &[
    "seq",
    "samples",
    "circadian_time",
    "phase",
    "period_hours",
    "C_U",
    "C_S",
    "C_T",
    "C_ST",
    "A_free",
    "CABC_complex",
    "koa_metric",
    "output_pwm",
    "entrainment_active",
    "temperature_kelvin",
    "raw_temperature_kelvin",
];

/// `GET /v1/oscillator/history`: a node's committed states from the lake, raw or averaged
/// into time buckets, oldest first, a page at a time (`next_cursor`): as `points` (rows) and
/// as the specification's `series` (one array per variable, `variables` picking them).
pub(super) async fn history(api: Arc<Api>, q: HistoryQuery) -> Result<Response, ApiError> {
    let start = either("start", q.start_time, q.start)?;
    let end = either("end", q.end_time, q.end)?;
    let wanted = variables(q.variables.as_deref(), STATE_VARIABLES)?;
    let r = Range::parse(q.node_id, &start, &end)?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_HISTORY_LIMIT {
        return Err(bad(format!("limit must be 1-{MAX_HISTORY_LIMIT}")));
    }
    let after: Option<i64> = match q.cursor.as_deref().map(str::parse) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return Err(bad("cursor is not one this API issued")),
    };
    let resolution = q.resolution.unwrap_or_else(|| "raw".into());
    let interval = interval_of(&resolution)?;
    let batches = run(&api, &states_sql(&r, interval, after, limit + 1)).await?;
    let json = encode(&batches, kaiabc_connectors::lake::OutputFormat::Json)?;
    let mut points: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap_or_default();
    let next_cursor = if points.len() > limit {
        points.truncate(limit);
        points
            .last()
            .and_then(|p| p["timestamp"].as_str())
            .and_then(|t| kaiabc_schemas::parse_timestamp(t).ok())
            .map(|t| t.timestamp_micros().to_string())
    } else {
        None
    };
    let names: Vec<String> = match wanted {
        Some(w) => w,
        None => points
            .first()
            .and_then(|p| p.as_object())
            .map(|o| o.keys().filter(|k| *k != "timestamp").cloned().collect())
            .unwrap_or_default(),
    };
    let mut series = serde_json::Map::new();
    series.insert(
        "timestamp".into(),
        points.iter().map(|p| p["timestamp"].clone()).collect(),
    );
    for name in &names {
        series.insert(
            name.clone(),
            points.iter().map(|p| p[name.as_str()].clone()).collect(),
        );
    }
    let hardware = api.registry.get(&r.node).and_then(|n| n.hardware_type);
    Ok(warp::reply::json(&serde_json::json!({
        "node_id": r.node,
        "hardware_type": hardware,
        "resolution": resolution,
        "start_time": ts(r.start),
        "end_time": ts(r.end),
        "data_points": points.len(),
        "series": series,
        "start": ts(r.start),
        "end": ts(r.end),
        "count": points.len(),
        "points": points,
        "next_cursor": next_cursor,
    }))
    .into_response())
}

/// `batches` with only the columns `keep` names (comma-separated) and the time columns.
fn project(batches: Vec<RecordBatch>, keep: &str) -> Result<Vec<RecordBatch>, ApiError> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let schema = first.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let wanted = variables(Some(keep), &names)?.unwrap_or_default();
    let indices: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            matches!(**n, "timestamp" | "window_end" | "node_id") || wanted.iter().any(|w| w == *n)
        })
        .map(|(i, _)| i)
        .collect();
    batches
        .iter()
        .map(|b| b.project(&indices).map_err(failed))
        .collect()
}

/// An HDF5 export: the file is written for download and the answer links to it (the API
/// contract's shape for a binary export).
async fn hdf5_download(
    api: &Api,
    batches: Vec<RecordBatch>,
    r: &Range,
    data: &str,
    rows: usize,
) -> Result<Response, ApiError> {
    let lake = api.lake.clone();
    let (node, start, end, group) = (r.node.clone(), ts(r.start), ts(r.end), data.to_string());
    let stored = tokio::task::spawn_blocking(move || {
        let attrs = [
            ("node_id", node.as_str()),
            ("start_time", start.as_str()),
            ("end_time", end.as_str()),
            ("data", group.as_str()),
            ("source", "KaiABC Stream export"),
        ];
        let bytes =
            kaiabc_connectors::lake::hdf5_bytes(&batches, &group, &attrs).map_err(failed)?;
        super::downloads::store(&lake, "hdf5", &bytes)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("writing the export: {e}")))??;
    Ok(warp::reply::json(&serde_json::json!({
        "export_id": stored.export_id,
        "status": "completed",
        "format": "hdf5",
        "download_url": format!("/v1/downloads/{}", stored.file),
        "expires_at": stored.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "size_bytes": stored.size_bytes,
        "record_count": rows,
    }))
    .into_response())
}

/// `GET /v1/analytics/export`: a node's `data` (states, readings or rhythms) in the range as
/// CSV, JSON or Parquet, as a download. States may be downsampled with `resolution`.
pub(super) async fn export(api: Arc<Api>, q: ExportQuery) -> Result<Response, ApiError> {
    use kaiabc_connectors::lake::OutputFormat;
    let start = either("start", q.start_time, q.start)?;
    let end = either("end", q.end_time, q.end)?;
    let r = Range::parse(q.node_id, &start, &end)?;
    let format = q.format.unwrap_or_else(|| "json".into());
    let (content_type, ext) = match format.as_str() {
        "csv" => ("text/csv", "csv"),
        "json" => ("application/json", "json"),
        "parquet" => ("application/vnd.apache.parquet", "parquet"),
        "hdf5" => ("application/x-hdf5", "hdf5"),
        f => return Err(bad(format!("format {f:?}: json, csv, hdf5 or parquet"))),
    };
    let data = q.data.unwrap_or_else(|| "states".into());
    let resolution = q.resolution.unwrap_or_else(|| "raw".into());
    let interval = interval_of(&resolution)?;
    let limit = MAX_EXPORT_ROWS + 1;
    let sql = match (data.as_str(), interval) {
        ("states", i) => states_sql(&r, i, None, limit),
        ("readings", None) => format!(
            "SELECT * EXCLUDE (date) FROM readings WHERE {} ORDER BY timestamp, seq LIMIT {limit}",
            r.filter("timestamp")
        ),
        ("rhythms", None) => format!(
            "SELECT * EXCLUDE (date) FROM rhythms WHERE {} ORDER BY window_end, metric LIMIT {limit}",
            r.filter("window_end")
        ),
        ("readings" | "rhythms", Some(_)) => {
            return Err(bad("resolution applies to data=states only"))
        }
        (d, _) => return Err(bad(format!("data {d:?}: states, readings or rhythms"))),
    };
    let mut batches = run(&api, &sql).await?;
    if let Some(keep) = &q.variables {
        batches = project(batches, keep)?;
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > MAX_EXPORT_ROWS {
        return Err(bad(format!(
            "more than {MAX_EXPORT_ROWS} rows: narrow the range or use a coarser resolution"
        )));
    }
    if format == "hdf5" {
        return hdf5_download(&api, batches, &r, &data, rows).await;
    }
    let body = match format.as_str() {
        "parquet" => kaiabc_connectors::lake::parquet_bytes(&batches).map_err(failed)?,
        "json" => encode(&batches, OutputFormat::Json)?,
        _ => encode(&batches, OutputFormat::Csv)?,
    };
    let name = format!(
        "{}-{data}-{}.{ext}",
        r.node,
        chrono::DateTime::from_timestamp_micros(r.start)
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_default()
    );
    let mut resp = warp::reply::Response::new(body.into());
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        content_type.parse().expect("a valid header"),
    );
    if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
        h.insert("content-disposition", v);
    }
    if let Ok(v) = rows.to_string().parse() {
        h.insert("x-row-count", v);
    }
    Ok(resp)
}
