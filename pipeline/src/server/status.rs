//! Read-only views of the live pipeline: health, Prometheus metrics, a node's latest
//! oscillator state and the performance figures of `/v1/diagnostics/performance`.

use chrono::Utc;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::Reply;

use super::ApiError;
use crate::auth::Principal;
use crate::dataflow::live::LiveShared;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct StateQuery {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    pub(super) node_id: Option<String>,
}

/// CPU seconds this process has used (`/proc/self/stat`: user + system).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), counted from `state` as 3.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on Linux's supported architectures.
    Some(ticks / 100.0)
}

/// Resident memory of this process, MB (`/proc/self/status`).
fn process_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Bytes in the files under `dir`, recursively.
fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /v1/diagnostics/performance`: the specification's `server`, `oscillator`, `database`
/// and `network` figures, each measured (CPU as the average since start, a query of the lake
/// timed now, the lake's size on disk), beside what the pipeline has done and how long a
/// reading takes, from the same counters as `/metrics`.
pub(super) async fn performance_answer(api: std::sync::Arc<super::Api>) -> warp::reply::Response {
    let t = std::time::Instant::now();
    let queried =
        kaiabc_connectors::lake::query(&api.lake, "SELECT count(*) AS n FROM states WHERE false")
            .await;
    let query_ms = queried.is_ok().then(|| t.elapsed().as_secs_f64() * 1e3);
    let lake = api.lake.clone();
    let storage_gb = tokio::task::spawn_blocking(move || LAKE_SIZE.bytes(&lake) as f64 / 1e9)
        .await
        .ok();
    performance(&api.shared, query_ms, storage_gb)
}

/// How old a measurement of the lake's size may be: walking a lake of years of files on every
/// call would make the figure the endpoint's cost.
const LAKE_SIZE_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// The lake's size on disk, measured at most once per [`LAKE_SIZE_FRESH_FOR`].
static LAKE_SIZE: LakeSize = LakeSize(std::sync::Mutex::new(None));

struct LakeSize(std::sync::Mutex<Option<(std::time::Instant, std::path::PathBuf, u64)>>);

impl LakeSize {
    /// The bytes under `lake`: the last measurement if it is fresh and of the same lake, else
    /// a new walk (blocking; call off the runtime). Concurrent callers walk once: the lock is
    /// held across the walk.
    fn bytes(&self, lake: &std::path::Path) -> u64 {
        let Ok(mut last) = self.0.lock() else {
            return bytes_under(lake);
        };
        match &*last {
            Some((at, path, n)) if path == lake && at.elapsed() < LAKE_SIZE_FRESH_FOR => *n,
            _ => {
                let n = bytes_under(lake);
                *last = Some((std::time::Instant::now(), lake.to_path_buf(), n));
                n
            }
        }
    }
}

/// The answer of [`performance_answer`] from its measured parts.
pub(super) fn performance(
    shared: &LiveShared,
    query_ms: Option<f64>,
    storage_gb: Option<f64>,
) -> warp::reply::Response {
    use kaiabc_operators::dataflow::APPLY_SECONDS_BOUNDS;
    let m = &shared.metrics;
    let t = m.totals();
    let h = &t.nodes.apply_seconds;
    let n = h.count();
    // A quantile from the histogram: the upper bound of the bucket that holds it.
    let quantile = |q: f64| -> Option<f64> {
        if n == 0 {
            return None;
        }
        let want = (q * n as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in h.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return APPLY_SECONDS_BOUNDS.get(i).map(|b| b * 1e3);
            }
        }
        None
    };
    let uptime = m.uptime().as_secs_f64();
    let (requests, errors, micros) = m.http_figures();
    let solver = m.solver_figures();
    warp::reply::json(&serde_json::json!({
        "server": {
            "cpu_usage_percent": process_cpu_seconds().map(|s| s / uptime.max(1e-9) * 100.0),
            "memory_usage_mb": process_rss_mb(),
            "active_connections": super::listener::OPEN.load(std::sync::atomic::Ordering::Relaxed),
            "uptime_seconds": uptime,
        },
        "oscillator": {
            "average_integration_time_ms": solver["average_iteration_time_ms"],
            "stability_index": solver["stability_index"],
            "active_nodes": t.nodes.nodes,
            "total_simulations": t.nodes.applied,
        },
        "database": {
            "connections_active": super::lake::QUERIES.load(std::sync::atomic::Ordering::Relaxed),
            "query_latency_ms": query_ms,
            "storage_used_gb": storage_gb,
        },
        "network": {
            "requests_per_second": if uptime > 0.0 { requests as f64 / uptime } else { 0.0 },
            "error_rate_percent": if requests > 0 { errors as f64 / requests as f64 * 100.0 } else { 0.0 },
            "average_response_time_ms": if requests > 0 { micros as f64 / requests as f64 / 1e3 } else { 0.0 },
        },
        "timestamp": kaiabc_schemas::format_timestamp(&Utc::now()),
        "uptime_seconds": uptime,
        "events_received": m.events_in.load(std::sync::atomic::Ordering::Relaxed),
        "readings_applied": t.nodes.applied,
        "readings_late": t.nodes.late,
        "duplicates": t.nodes.duplicates,
        "readings_per_second": if uptime > 0.0 { t.nodes.applied as f64 / uptime } else { 0.0 },
        "apply_ms": {
            "mean": (n > 0).then(|| h.sum_seconds / n as f64 * 1e3),
            "p50_at_most": quantile(0.5),
            "p99_at_most": quantile(0.99),
        },
        "nodes": { "active": t.nodes.nodes, "restored": t.nodes.restored,
            "connected": m.connected_nodes() },
        "lake": { "commits": t.commits, "files": t.files, "rows": t.rows,
            "node_checkpoints": t.checkpoints },
        "websocket": {
            "clients": shared.hub.clients.load(std::sync::atomic::Ordering::Relaxed),
            "resyncs": shared.hub.resyncs.load(std::sync::atomic::Ordering::Relaxed),
        },
    }))
    .into_response()
}

pub(super) fn latest_state(shared: &LiveShared, node: Option<&str>) -> warp::reply::Response {
    match node_state(shared, node) {
        Ok(s) => warp::reply::json(&s).into_response(),
        Err(resp) => *resp,
    }
}

/// The latest state of `node`, or of the only node when none is named; else the error body.
pub(super) fn node_state(
    shared: &LiveShared,
    node: Option<&str>,
) -> Result<kaiabc_schemas::OscillatorState, Box<warp::reply::Response>> {
    let nodes = shared.hub.nodes();
    let found = match node {
        Some(n) => shared.hub.state(n),
        None if nodes.len() == 1 => shared.hub.state(&nodes[0]),
        None if nodes.is_empty() => None,
        None => {
            return Err(Box::new(
                ApiError::InvalidParameter(
                    "node_id is required when more than one node reports".into(),
                )
                .response(),
            ))
        }
    };
    found.ok_or_else(|| {
        Box::new(
            ApiError::NodeNotFound(match node {
                Some(n) => format!("no state for node {n:?} yet"),
                None => "no node has reported yet".to_string(),
            })
            .response(),
        )
    })
}

/// `GET /v1/health`: the server's state in the contract's shape. The lake is the database:
/// while it cannot be written the answer is 503 `degraded`, with the reason, so health checks
/// and load balancers see it.
pub(super) fn health(shared: &LiveShared, started: std::time::Instant) -> warp::reply::Response {
    let nodes = shared.hub.nodes().len();
    let connected = shared.metrics.connected_nodes();
    // The lake is the database: while it cannot be written the server says so
    // (503, so health checks and load balancers see it), with the reason.
    let failing = shared.durability.failing();
    let mut body = serde_json::json!({
        "status": if failing.is_some() { "degraded" } else { "healthy" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": started.elapsed().as_secs(),
        "timestamp": kaiabc_schemas::format_timestamp(&Utc::now()),
        "components": {
            "ode_solver": "operational",
            "database": if failing.is_some() { "failing" } else { "operational" },
            "sensor_nodes": { "connected": connected, "total": nodes },
        },
    });
    let status = match &failing {
        Some(f) => {
            body["problems"] = serde_json::json!([{
                "component": "database",
                "reason": f.reason,
                "failing_for_seconds": f.since.elapsed().as_secs_f64(),
            }]);
            StatusCode::SERVICE_UNAVAILABLE
        }
        None => StatusCode::OK,
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// `GET /metrics`: Prometheus's text format, the pipeline's counters and one gauge set per node.
pub(super) fn metrics(shared: &LiveShared) -> warp::reply::Response {
    let hub = &shared.hub;
    let mut text = shared.metrics.render(
        hub.clients.load(std::sync::atomic::Ordering::Relaxed),
        hub.resyncs.load(std::sync::atomic::Ordering::Relaxed),
    );
    let states: Vec<_> = hub
        .nodes()
        .into_iter()
        .filter_map(|n| {
            let online = shared.metrics.node_online(&n);
            hub.state(&n).map(|s| (s, online))
        })
        .collect();
    let gauges: Vec<_> = states
        .iter()
        .map(|(state, online)| crate::metrics::NodeGauge {
            state,
            online: *online,
        })
        .collect();
    crate::metrics::render_node_gauges(&mut text, &gauges);
    shared.fleet.render_metrics(&mut text);
    shared.durability.render(&mut text);
    warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
}

/// `GET /v1/health`.
pub(super) fn health_route(api: &std::sync::Arc<super::Api>, at: super::Matched) -> super::Route {
    use warp::Filter;
    let (shared, started) = (std::sync::Arc::clone(&api.shared), api.started);
    at.map(move |_: Principal| health(&shared, started)).boxed()
}

/// `GET /metrics`.
pub(super) fn metrics_route(api: &std::sync::Arc<super::Api>, at: super::Matched) -> super::Route {
    use warp::Filter;
    let shared = std::sync::Arc::clone(&api.shared);
    at.map(move |_: Principal| metrics(&shared)).boxed()
}

/// `GET /v1/diagnostics/performance`.
pub(super) fn performance_route(
    api: &std::sync::Arc<super::Api>,
    at: super::Matched,
) -> super::Route {
    use warp::Filter;
    let a = std::sync::Arc::clone(api);
    at.then(move |_: Principal| performance_answer(std::sync::Arc::clone(&a)))
        .boxed()
}

/// `GET /v1/oscillator/state`: a node's key reads its own clock only (without `node_id`, its
/// own); a person reads any.
pub(super) fn state_route(api: &std::sync::Arc<super::Api>, at: super::Matched) -> super::Route {
    use warp::Filter;
    let shared = std::sync::Arc::clone(&api.shared);
    at.and(warp::query::<StateQuery>())
        .map(
            move |who: Principal, q: StateQuery| match (&who, q.node_id.as_deref()) {
                (Principal::Node(own), Some(n)) if n != own => ApiError::PermissionDenied(format!(
                    "the API key of node {own:?} may not read node {n:?}"
                ))
                .response(),
                (Principal::Node(own), _) => latest_state(&shared, Some(own)),
                (Principal::User(_), n) => latest_state(&shared, n),
            },
        )
        .boxed()
}

#[cfg(test)]
mod lake_size_tests {
    use super::*;

    /// Within a minute the measured size is reused (a new file shows in the next minute's
    /// walk); another lake is walked at once.
    #[test]
    fn the_lake_is_walked_at_most_once_a_minute() {
        let size = LakeSize(std::sync::Mutex::new(None));
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(a.path().join("x"), [0u8; 10]).unwrap();
        assert_eq!(size.bytes(a.path()), 10);
        std::fs::write(a.path().join("y"), [0u8; 5]).unwrap();
        assert_eq!(size.bytes(a.path()), 10, "fresh for a minute");
        std::fs::write(b.path().join("z"), [0u8; 3]).unwrap();
        assert_eq!(size.bytes(b.path()), 3);
        // Aged past the minute: walked again.
        if let Ok(mut last) = size.0.lock() {
            *last = Some((
                std::time::Instant::now() - LAKE_SIZE_FRESH_FOR * 2,
                a.path().to_path_buf(),
                10,
            ));
        }
        assert_eq!(size.bytes(a.path()), 15);
    }
}
