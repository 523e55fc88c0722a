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
    /// The least severe level wanted: error, warn, info (default), debug, trace.
    #[schemars(extend("enum" = ["error", "warn", "info", "debug", "trace"]))]
    level: Option<String>,
    #[schemars(range(min = 0))]
    limit: Option<usize>,
}

fn logs(api: &Api, q: LogQuery) -> warp::reply::Response {
    let level = q.level.as_deref().unwrap_or("info");
    let Ok(min) = level.parse::<tracing::Level>() else {
        return ApiError::InvalidParameter(format!(
            "level {level:?}: error, warn, info, debug or trace"
        ))
        .response();
    };
    let limit = q.limit.unwrap_or(200).min(crate::logs::CAPACITY);
    let lines = api.logs.recent(min, limit);
    warp::reply::json(&json!({"level": level, "count": lines.len(), "logs": lines})).into_response()
}

/// One check: its name, whether it passed, what it found, how long it took.
fn check(name: &str, started: Instant, result: Result<Value, String>) -> Value {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(detail) => json!({"name": name, "status": "pass", "detail": detail, "ms": ms}),
        Err(e) => json!({"name": name, "status": "fail", "error": e, "ms": ms}),
    }
}

/// `GET /v1/diagnostics/health-check`: every component tried for real; 503 if any fails.
async fn health_check(api: Arc<Api>) -> warp::reply::Response {
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

/// `GET /v1/config/templates`: the commented config file, and the named presets of the
/// per-node settings.
fn templates() -> warp::reply::Response {
    use kaiabc_operators::etf::{Etf, EtfPreset};
    warp::reply::json(&json!({
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
    }))
    .into_response()
}

/// `POST /v1/config/validate`: a config file (TOML) checked as `kaiabc run` would read it.
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
pub(super) fn templates_route(_: &Arc<Api>, at: super::Matched) -> Route {
    at.map(|_: Principal| templates()).boxed()
}

/// `POST /v1/config/validate` (256 KiB at most).
pub(super) fn validate_route(_: &Arc<Api>, at: super::Matched) -> Route {
    at.and(body(256 * 1024))
        .map(|_: Principal, b: bytes::Bytes| validate(&b))
        .boxed()
}
