//! The HTTP API (warp, under `/v1`): health, the latest oscillator state of each node and the
//! WebSocket, with the API specification's error body on every failure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::dataflow::live::LiveShared;

/// The specification's error body: `{"error": {"code", "message", "timestamp"}}`.
pub fn error_body(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> warp::reply::Response {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message.into(),
            "timestamp": kaiabc_schemas::format_timestamp(&Utc::now()),
        }
    });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

#[derive(Debug, Deserialize)]
struct StateQuery {
    node_id: Option<String>,
}

/// All `/v1` routes.
pub fn routes(
    shared: Arc<LiveShared>,
    started: Instant,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let health = {
        let shared = Arc::clone(&shared);
        warp::path!("v1" / "health").and(warp::get()).map(move || {
            let nodes = shared.hub.nodes().len();
            let connected = shared.metrics.connected_nodes();
            warp::reply::json(&serde_json::json!({
                "status": "healthy",
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": started.elapsed().as_secs(),
                "timestamp": kaiabc_schemas::format_timestamp(&Utc::now()),
                "components": {
                    "ode_solver": "operational",
                    "database": "operational",
                    "sensor_nodes": { "connected": connected, "total": nodes },
                },
            }))
            .into_response()
        })
    };
    let state = {
        let shared = Arc::clone(&shared);
        warp::path!("v1" / "oscillator" / "state")
            .and(warp::get())
            .and(warp::query::<StateQuery>())
            .map(move |q: StateQuery| latest_state(&shared, q.node_id.as_deref()))
    };
    let metrics = {
        let shared = Arc::clone(&shared);
        warp::path!("metrics").and(warp::get()).map(move || {
            let hub = &shared.hub;
            let text = shared.metrics.render(
                hub.clients.load(std::sync::atomic::Ordering::Relaxed),
                hub.resyncs.load(std::sync::atomic::Ordering::Relaxed),
            );
            warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4")
                .into_response()
        })
    };
    let ws = warp::path!("v1" / "ws")
        .and(warp::ws())
        .map(move |ws: warp::ws::Ws| {
            let hub = Arc::clone(&shared.hub);
            ws.on_upgrade(move |socket| crate::ws::serve_client(socket, hub))
                .into_response()
        });
    health
        .or(state)
        .unify()
        .or(ws)
        .unify()
        .or(metrics)
        .unify()
        .recover(|r: Rejection| async move { Ok::<_, Infallible>(rejection(r)) })
        .unify()
}

fn latest_state(shared: &LiveShared, node: Option<&str>) -> warp::reply::Response {
    let nodes = shared.hub.nodes();
    let found = match node {
        Some(n) => shared.hub.state(n),
        None if nodes.len() == 1 => shared.hub.state(&nodes[0]),
        None if nodes.is_empty() => None,
        None => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "INVALID_PARAMETER",
                "node_id is required when more than one node reports",
            )
        }
    };
    match found {
        Some(s) => warp::reply::json(&s).into_response(),
        None => error_body(
            StatusCode::NOT_FOUND,
            "NODE_NOT_FOUND",
            match node {
                Some(n) => format!("no state for node {n:?} yet"),
                None => "no node has reported yet".to_string(),
            },
        ),
    }
}

fn rejection(r: Rejection) -> warp::reply::Response {
    if r.is_not_found() {
        error_body(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        error_body(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", e.to_string())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method not allowed",
        )
    } else {
        error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("{r:?}"),
        )
    }
}

/// Serves the API on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<LiveShared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "HTTP API listening");
    warp::serve(routes(shared, Instant::now()))
        .incoming(listener)
        .graceful(stop)
        .run()
        .await;
}
