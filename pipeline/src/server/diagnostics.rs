//! Operators' endpoints: recent logs, a deep health check that exercises each component, and
//! the config file's template and validation.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::{Filter, Reply};

use super::{body, Api, ApiError, Route};
use crate::auth::Principal;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    /// The least severe level wanted: error, warning (or warn), info (default), debug, trace.
    #[schemars(extend("enum" = ["error", "warning", "warn", "info", "debug", "trace"]))]
    level: Option<String>,
    /// Only events about this node (their `node_id` or `node` field).
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    /// Only events at or after this time.
    #[schemars(extend("format" = "date-time"))]
    start_time: Option<String>,
    /// Only events before this time.
    #[schemars(extend("format" = "date-time"))]
    end_time: Option<String>,
    /// Events per page, newest first (default 100).
    #[schemars(range(min = 1, max = 2000))]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[schemars(pattern(r"^[0-9]{1,9}$"))]
    cursor: Option<String>,
}

/// A log event in the specification's shape: the level in lower case (`warning` for WARN), the
/// node it is about, and its other fields as `details`.
fn log_entry(l: &crate::logs::LogLine) -> Value {
    let mut details = serde_json::Map::new();
    let mut node = None;
    for f in &l.fields {
        let (k, v) = f.split_once('=').unwrap_or((f.as_str(), ""));
        let v = v.trim_matches('"');
        if matches!(k, "node_id" | "node") {
            node = Some(v.to_string());
        }
        details.insert(k.to_string(), json!(v));
    }
    json!({
        "timestamp": kaiabc_schemas::format_timestamp(&l.timestamp),
        "level": match l.level.as_str() {
            "WARN" => "warning".to_string(),
            other => other.to_ascii_lowercase(),
        },
        "node_id": node,
        "message": l.message,
        "details": details,
        "target": l.target,
    })
}

fn logs(api: &Api, q: LogQuery) -> warp::reply::Response {
    let level = q.level.as_deref().unwrap_or("info");
    let Ok(min) = (if level == "warning" { "warn" } else { level }).parse::<tracing::Level>()
    else {
        return ApiError::InvalidParameter(format!(
            "level {level:?}: error, warning, info, debug or trace"
        ))
        .response();
    };
    let time = |name: &str, v: &Option<String>| match v {
        None => Ok(None),
        Some(t) => kaiabc_schemas::parse_timestamp(t)
            .map(Some)
            .map_err(|e| ApiError::InvalidParameter(format!("{name}: {}", e.message))),
    };
    let (from, to) = match (
        time("start_time", &q.start_time),
        time("end_time", &q.end_time),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e.response(),
    };
    if let Some(resp) = q.node_id.as_deref().and_then(super::invalid_node_id) {
        return resp;
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=crate::logs::CAPACITY).contains(&limit) {
        return ApiError::InvalidParameter(format!("limit must be 1-{}", crate::logs::CAPACITY))
            .response();
    }
    let offset: usize = match q.cursor.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            return ApiError::InvalidParameter("cursor is not one this API issued".into())
                .response()
        }
    };
    // Newest first, filtered, then the page.
    let all: Vec<Value> = api
        .logs
        .recent(min, crate::logs::CAPACITY)
        .iter()
        .rev()
        .filter(|l| from.is_none_or(|f| l.timestamp >= f) && to.is_none_or(|t| l.timestamp < t))
        .map(log_entry)
        .filter(|e| q.node_id.as_deref().is_none_or(|n| e["node_id"] == n))
        .collect();
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let end = offset + page.len();
    warp::reply::json(&json!({
        "level": level,
        "count": page.len(),
        "logs": page,
        "pagination": {
            "has_next": end < total,
            "has_prev": offset > 0,
            "next_cursor": (end < total).then(|| end.to_string()),
            "total_count": total,
            "limit": limit,
        },
    }))
    .into_response()
}

/// One check: its name, whether it passed, what it found, how long it took.
fn check(name: &str, started: Instant, result: Result<Value, String>) -> Value {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(detail) => json!({"name": name, "status": "pass", "detail": detail, "ms": ms}),
        Err(e) => json!({"name": name, "status": "fail", "error": e, "ms": ms}),
    }
}

/// Every component tried for real: one entry per check (`name`, `status`, what it found, `ms`).
async fn run_checks(api: &Api) -> Vec<Value> {
    let mut checks = Vec::new();
    let t = Instant::now();
    let stopping = api.shared.stop.load(std::sync::atomic::Ordering::Relaxed);
    checks.push(check(
        "dataflow",
        t,
        if stopping {
            Err("the pipeline is stopping".into())
        } else {
            let totals = api.shared.metrics.totals();
            Ok(
                json!({"readings_applied": totals.nodes.applied, "nodes": totals.nodes.nodes,
                "lake_commits": totals.commits}),
            )
        },
    ));
    // The lake's disk takes a write.
    let t = Instant::now();
    let probe = api
        .lake
        .join("_health")
        .join(format!("probe-{}", std::process::id()));
    let wrote = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(probe.parent().expect("a parent"))?;
        std::fs::write(&probe, b"ok")?;
        std::fs::remove_file(&probe)
    })();
    checks.push(check(
        "lake_storage",
        t,
        wrote
            .map(|()| json!({"path": api.lake.display().to_string()}))
            .map_err(|e| format!("{}: {e}", api.lake.display())),
    ));
    // The lake's commits succeed (the sinks report each failure and recovery).
    let t = Instant::now();
    checks.push(check(
        "lake_commits",
        t,
        match api.shared.durability.failing() {
            None => Ok(json!({"failures_since_start": api.shared.durability.failures()})),
            Some(f) => Err(format!(
                "failing for {:.0} s: {}",
                f.since.elapsed().as_secs_f64(),
                f.reason
            )),
        },
    ));
    // The query engine answers over the lake.
    let t = Instant::now();
    let q =
        kaiabc_connectors::lake::query(&api.lake, "SELECT count(*) AS n FROM states WHERE false")
            .await;
    checks.push(check(
        "query_engine",
        t,
        q.map(|_| json!("DataFusion answered"))
            .map_err(|e| e.to_string()),
    ));
    let t = Instant::now();
    checks.push(check(
        "control_log",
        t,
        match api.control_log.path().parent() {
            Some(dir) if dir.exists() || std::fs::create_dir_all(dir).is_ok() => {
                Ok(json!({"path": api.control_log.path().display().to_string()}))
            }
            _ => Err("the control log's directory cannot be created".into()),
        },
    ));
    let t = Instant::now();
    checks.push(check(
        "mqtt_output",
        t,
        if api.shared.output.get().is_some() {
            Ok(json!("connected to the broker"))
        } else {
            Err("no MQTT output (the broker has not started)".into())
        },
    ));
    if let Some(k) = api.shared.kafka.get() {
        let t = Instant::now();
        let _ = k;
        checks.push(check("kafka_producer", t, Ok(json!("configured"))));
    }
    checks
}

/// `GET /v1/diagnostics/health-check`: every component tried for real; 503 if any fails.
async fn health_check(api: Arc<Api>) -> warp::reply::Response {
    let checks = run_checks(&api).await;
    let failed = checks.iter().filter(|c| c["status"] == "fail").count();
    let status = if failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(
        warp::reply::json(&json!({
            "status": if failed == 0 { "healthy" } else { "unhealthy" },
            "timestamp": kaiabc_schemas::format_timestamp(&chrono::Utc::now()),
            "failed": failed,
            "checks": checks,
        })),
        status,
    )
    .into_response()
}

/// The specification's components and the checks each stands for.
const COMPONENTS: &[(&str, &[&str])] = &[
    (
        "database",
        &["lake_storage", "lake_commits", "query_engine"],
    ),
    ("oscillator", &["dataflow"]),
    ("network", &["mqtt_output", "kafka_producer"]),
    ("control", &["control_log"]),
];

/// The body of `POST /v1/diagnostics/health-check`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheckRequest {
    /// Which components (default: all).
    #[serde(default)]
    #[schemars(extend("items" = {"enum": ["database", "oscillator", "network", "control"]}))]
    components: Option<Vec<String>>,
    /// With each component's individual checks.
    #[serde(default)]
    detailed: bool,
}

/// `POST /v1/diagnostics/health-check` with `{components?: [...], detailed?}`: the checks of
/// the components asked for (all by default), each `healthy` or `unhealthy` with its measured
/// figures; `overall_status` and 503 if any is unhealthy.
async fn health_check_post(api: Arc<Api>, body: bytes::Bytes) -> warp::reply::Response {
    let req: HealthCheckRequest = if body.is_empty() {
        HealthCheckRequest {
            components: None,
            detailed: false,
        }
    } else {
        match super::json_object(&body) {
            Ok(r) => r,
            Err(e) => {
                return ApiError::InvalidParameter(format!(
                    "expected {{\"components\"?: [...], \"detailed\"?: bool}}: {e}"
                ))
                .response()
            }
        }
    };
    let names: Vec<String> = match req.components {
        Some(c) if !c.is_empty() => c,
        _ => COMPONENTS.iter().map(|(n, _)| n.to_string()).collect(),
    };
    if let Some(bad) = names
        .iter()
        .find(|n| !COMPONENTS.iter().any(|(c, _)| c == n))
    {
        return ApiError::InvalidParameter(format!(
            "component {bad:?}: {}",
            COMPONENTS
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .response();
    }
    let all = run_checks(&api).await;
    let mut checks = serde_json::Map::new();
    let mut unhealthy = 0;
    for name in &names {
        let parts = COMPONENTS
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, p)| *p)
            .unwrap_or(&[]);
        let mine: Vec<&Value> = all
            .iter()
            .filter(|c| parts.contains(&c["name"].as_str().unwrap_or_default()))
            .collect();
        let ok = mine.iter().all(|c| c["status"] == "pass");
        unhealthy += usize::from(!ok);
        let mut entry = json!({
            "status": if ok { "healthy" } else { "unhealthy" },
            "latency_ms": mine.iter().filter_map(|c| c["ms"].as_f64()).sum::<f64>(),
        });
        match name.as_str() {
            "oscillator" => {
                let f = api.shared.metrics.solver_figures();
                entry["stability_check"] = json!(if f["stability_index"].as_f64() == Some(1.0) {
                    "passed"
                } else {
                    "degraded"
                });
                entry["stability_index"] = f["stability_index"].clone();
                entry["active_nodes"] = json!(api.shared.metrics.totals().nodes.nodes);
            }
            "network" => {
                entry["connected_nodes"] = json!(api.shared.metrics.connected_nodes());
                entry["websocket_clients"] = json!(api
                    .shared
                    .hub
                    .clients
                    .load(std::sync::atomic::Ordering::Relaxed));
            }
            _ => {}
        }
        if req.detailed {
            entry["checks"] = json!(mine);
        }
        checks.insert(name.clone(), entry);
    }
    let status = if unhealthy == 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(
        warp::reply::json(&json!({
            "overall_status": if unhealthy == 0 { "healthy" } else { "unhealthy" },
            "checks": checks,
            "timestamp": kaiabc_schemas::format_timestamp(&chrono::Utc::now()),
        })),
        status,
    )
    .into_response()
}

/// `POST /v1/diagnostics/health-check` (16 KiB at most).
pub(super) fn health_check_post_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(body(16 * 1024))
        .then(move |_: Principal, b: bytes::Bytes| health_check_post(Arc::clone(&a), b))
        .boxed()
}

/// `?hardware_type&runtime` of `/v1/config/templates`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TemplateQuery {
    /// The board (default `raspberry_pi_pico`).
    hardware_type: Option<kaiabc_schemas::HardwareType>,
    /// Its runtime; it must be the board's (`micropython` on the Pico, `lua` on the ELM11).
    runtime: Option<kaiabc_schemas::Runtime>,
}

/// `GET /v1/config/templates`: a node's configuration for its board in the specification's
/// shape (with the firmware's own `config.json`), and, as before, the server's commented
/// config file and the named presets of the per-node settings.
fn templates(api: &Api, q: TemplateQuery) -> warp::reply::Response {
    use kaiabc_operators::etf::{Etf, EtfPreset};
    let hw = q
        .hardware_type
        .unwrap_or(kaiabc_schemas::HardwareType::RaspberryPiPico);
    let mut answer = super::node_config::template(hw, &api.node_cfg.kalman);
    answer["warnings"] = json!(q
        .runtime
        .filter(|r| *r != hw.runtime())
        .map(|r| vec![format!(
            "our firmware for {} runs on {:?}, not {r:?}: the template is for that runtime",
            hw.as_str(),
            hw.runtime()
        )])
        .unwrap_or_default());
    answer["server"] = json!({
        "config_file": { "format": "toml", "template": crate::cli::config_template() },
        "entrainment_presets": {
            "compensated": Etf::preset(EtfPreset::Compensated),
            "uncompensated": Etf::preset(EtfPreset::Uncompensated),
        },
        "output_mapping_presets": {
            "linear": kaiabc_operators::outputs::OutputMapping::default(),
            "sigmoid": kaiabc_operators::outputs::OutputMapping {
                mapping_function: kaiabc_schemas::MappingFunction::Sigmoid,
                ..Default::default()
            },
            "inverted": kaiabc_operators::outputs::OutputMapping {
                invert: true,
                ..Default::default()
            },
        },
        "filter_presets": { "bme280": kaiabc_operators::kalman::KalmanParams::default() },
    });
    warp::reply::json(&answer).into_response()
}

/// `POST /v1/config/validate`: a node's configuration (the specification's shape), checked
/// against what the firmware reads.
fn validate_node(body: &[u8]) -> warp::reply::Response {
    match super::json_object::<super::node_config::NodeConfigBody>(body) {
        Ok(b) => {
            if let Some(resp) = b.node_id.as_deref().and_then(super::invalid_node_id) {
                return resp;
            }
            let v = json!({ "node_id": b.node_id, "config": b.config.unwrap_or_default() });
            warp::reply::json(&super::node_config::validate(&v)).into_response()
        }
        Err(e) => ApiError::InvalidPayload(format!(
            "expected {{\"node_id\", \"config\": {{sensor, network, oscillator}}}}: {e}"
        ))
        .response(),
    }
}

/// `POST /v1/config/server/validate`: the server's config file (TOML) checked as `kaiabc run`
/// would read it.
fn validate(body: &[u8]) -> warp::reply::Response {
    if body.iter().all(u8::is_ascii_whitespace) {
        return ApiError::InvalidPayload("send the config file (TOML) as the body".into())
            .response();
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return ApiError::InvalidPayload("the file is not UTF-8".into()).response();
    };
    match crate::cli::check_config_text(text) {
        Ok(keys) => {
            warp::reply::json(&json!({"valid": true, "keys": keys, "errors": []})).into_response()
        }
        Err(e) => warp::reply::with_status(
            warp::reply::json(&json!({"valid": false, "errors": [e]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .into_response(),
    }
}

/// `GET /v1/diagnostics/logs`.
pub(super) fn logs_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(warp::query::<LogQuery>())
        .map(move |_: Principal, q: LogQuery| logs(&a, q))
        .boxed()
}

/// `GET /v1/diagnostics/health-check`.
pub(super) fn health_check_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.then(move |_: Principal| health_check(Arc::clone(&a)))
        .boxed()
}

/// `GET /v1/config/templates`.
pub(super) fn templates_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(warp::query::<TemplateQuery>())
        .map(move |_: Principal, q: TemplateQuery| templates(&a, q))
        .boxed()
}

/// `POST /v1/config/validate` (64 KiB at most).
pub(super) fn validate_node_route(_: &Arc<Api>, at: super::Matched) -> Route {
    at.and(body(64 * 1024))
        .map(|_: Principal, b: bytes::Bytes| validate_node(&b))
        .boxed()
}

/// `POST /v1/config/server/validate` (256 KiB at most).
pub(super) fn validate_route(_: &Arc<Api>, at: super::Matched) -> Route {
    at.and(body(256 * 1024))
        .map(|_: Principal, b: bytes::Bytes| validate(&b))
        .boxed()
}
