//! The node registry over HTTP: `GET /v1/sensors/nodes` lists the nodes with their status,
//! `POST /v1/sensors/nodes` registers one and hands out its API key once.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::Reply;

use super::{Api, ApiError};
use crate::auth::{AuthError, Registration};

fn list_nodes(api: &Api) -> warp::reply::Response {
    let nodes: Vec<serde_json::Value> = api
        .registry
        .list()
        .into_iter()
        .map(|r| {
            let last = api.shared.hub.state(&r.node_id);
            serde_json::json!({
                "node_id": r.node_id,
                "name": r.name,
                "location": r.location,
                "sensor_type": r.sensor_type,
                "registered_at": r.registered_at,
                "mqtt_topic": format!("kaiabc/sensors/{}", r.node_id),
                "last_seen": last.as_ref().map(|s| kaiabc_schemas::format_timestamp(&s.timestamp)),
                "status": match api.shared.metrics.node_online(&r.node_id) {
                    Some(true) => "online",
                    Some(false) => "offline",
                    None => "unknown",
                },
            })
        })
        .collect();
    warp::reply::json(&serde_json::json!({ "nodes": nodes, "count": nodes.len() })).into_response()
}

async fn register(api: Arc<Api>, body: bytes::Bytes) -> warp::reply::Response {
    let req: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::InvalidParameter(e.to_string()).response(),
    };
    let reg = Arc::clone(&api.registry);
    let done = tokio::task::spawn_blocking(move || reg.register(req)).await;
    match done {
        Ok(Ok((rec, key))) => warp::reply::with_status(
            warp::reply::json(&serde_json::json!({
                "node_id": rec.node_id,
                "name": rec.name,
                "location": rec.location,
                "sensor_type": rec.sensor_type,
                "registered_at": rec.registered_at,
                "api_key": key,
                "mqtt": {
                    "topic": format!("kaiabc/sensors/{}", rec.node_id),
                    "output_topic": format!("kaiabc/nodes/{}/output", rec.node_id),
                    "username": rec.node_id,
                    "password": "the api_key",
                },
            })),
            StatusCode::CREATED,
        )
        .into_response(),
        Ok(Err(AuthError::Exists(n))) => {
            ApiError::NodeExists(format!("node {n:?} is already registered")).response()
        }
        Ok(Err(AuthError::Invalid(m))) => ApiError::InvalidParameter(m).response(),
        Ok(Err(e)) => ApiError::Internal(e.to_string()).response(),
        Err(e) => ApiError::Internal(e.to_string()).response(),
    }
}

/// `GET /v1/sensors/nodes`.
pub(super) fn list_route(api: &Arc<Api>, at: super::Matched) -> super::Route {
    use warp::Filter;
    let a = Arc::clone(api);
    at.map(move |_: crate::auth::Principal| list_nodes(&a))
        .boxed()
}

/// `POST /v1/sensors/nodes` (16 KiB at most).
pub(super) fn register_route(api: &Arc<Api>, at: super::Matched) -> super::Route {
    use warp::Filter;
    let a = Arc::clone(api);
    at.and(super::body(16 * 1024))
        .then(move |_: crate::auth::Principal, body: bytes::Bytes| register(Arc::clone(&a), body))
        .boxed()
}
