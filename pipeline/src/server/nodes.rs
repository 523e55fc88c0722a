//! The node registry over HTTP: `GET /v1/sensors/nodes` lists the nodes with their status
//! (paged), `POST /v1/sensors/nodes` registers one, hands out its API key once and sends its
//! calibration to its clock.

use std::sync::Arc;

use kaiabc_schemas::ControlAction;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::Reply;

use super::pagination::{page, PageQuery};
use super::{Api, ApiError};
use crate::auth::{AuthError, NodeRecord, Principal, Registration};

/// The MQTT topic a node publishes its readings on.
fn mqtt_topic(node: &str) -> String {
    format!("kaiabc/sensors/{node}")
}

/// A node as the list shows it: the registry's record, with what its readings tell (status,
/// last seen, the firmware it reports).
fn listed(api: &Api, r: &NodeRecord) -> Value {
    let hub = &api.shared.hub;
    let firmware = hub
        .reported_firmware(&r.node_id)
        .or_else(|| r.firmware_version.clone());
    let online = api.shared.metrics.node_online(&r.node_id) == Some(true);
    json!({
        "node_id": r.node_id,
        "name": r.name,
        "hardware_type": r.hardware_type,
        "runtime": r.runtime,
        "status": if online { "online" } else { "offline" },
        "last_seen": hub
            .last_event_time(&r.node_id)
            .map(|t| kaiabc_schemas::format_timestamp(&t)),
        "sensor_types": r.sensor_types,
        "firmware_version": firmware,
        "location": r.location,
        "calibration": r.calibration,
        "sensor_type": r.sensor_type,
        "registered_at": r.registered_at,
        "mqtt_topic": mqtt_topic(&r.node_id),
    })
}

/// The sort fields of the node list.
const SORTS: &[&str] = &[
    "node_id",
    "name",
    "location",
    "status",
    "last_seen",
    "registered_at",
];

fn list_nodes(api: &Api, q: &PageQuery) -> warp::reply::Response {
    let all: Vec<Value> = api.registry.list().iter().map(|r| listed(api, r)).collect();
    match page(all, q, SORTS, "node_id", |v, f| v[f].clone()) {
        Ok((nodes, pagination)) => warp::reply::json(&json!({
            "count": nodes.len(),
            "nodes": nodes,
            "pagination": pagination,
        }))
        .into_response(),
        Err(e) => e.response(),
    }
}

async fn register(api: Arc<Api>, who: Principal, body: bytes::Bytes) -> warp::reply::Response {
    let req: Registration = match super::json_object(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::InvalidParameter(e.to_string()).response(),
    };
    let reg = Arc::clone(&api.registry);
    let done = tokio::task::spawn_blocking(move || reg.register(req)).await;
    let (rec, key) = match done {
        Ok(Ok(done)) => done,
        Ok(Err(AuthError::Exists(n))) => {
            return ApiError::NodeExists(format!("node {n:?} is already registered")).response()
        }
        Ok(Err(AuthError::Invalid(m))) => return ApiError::InvalidParameter(m).response(),
        Ok(Err(e)) => return ApiError::Internal(e.to_string()).response(),
        Err(e) => return ApiError::Internal(e.to_string()).response(),
    };
    // The fleet's views group it from now on.
    api.shared.fleet.registry_change(&rec, 1);
    // The calibration reaches the node's clock as a command in its stream, logged like every
    // other, so a replay applies it where it was applied live.
    if let Some(c) = rec.calibration {
        let node = rec.node_id.clone();
        let a = Arc::clone(&api);
        let sent = tokio::task::spawn_blocking(move || {
            super::control::send(&a, who, node, ControlAction::Calibration(c)).map(|_| ())
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(resp)) => return *resp,
            Err(e) => return ApiError::Internal(e.to_string()).response(),
        }
    }
    let topic = mqtt_topic(&rec.node_id);
    warp::reply::with_status(
        warp::reply::json(&json!({
            "success": true,
            "node_id": rec.node_id,
            "name": rec.name,
            "hardware_type": rec.hardware_type,
            "runtime": rec.runtime,
            "sensor_types": rec.sensor_types,
            "firmware_version": rec.firmware_version,
            "location": rec.location,
            "calibration": rec.calibration,
            "sensor_type": rec.sensor_type,
            "registered_at": rec.registered_at,
            "api_key": key,
            "mqtt_topic": topic,
            "mqtt": {
                "topic": topic,
                "output_topic": format!("kaiabc/nodes/{}/output", rec.node_id),
                "username": rec.node_id,
                "password": "the api_key",
            },
        })),
        StatusCode::CREATED,
    )
    .into_response()
}

/// `GET /v1/sensors/nodes`.
pub(super) fn list_route(api: &Arc<Api>, at: super::Matched) -> super::Route {
    use warp::Filter;
    let a = Arc::clone(api);
    at.and(warp::query::<PageQuery>())
        .map(move |_: Principal, q: PageQuery| list_nodes(&a, &q))
        .boxed()
}

/// `POST /v1/sensors/nodes` (16 KiB at most).
pub(super) fn register_route(api: &Arc<Api>, at: super::Matched) -> super::Route {
    use warp::Filter;
    let a = Arc::clone(api);
    at.and(super::body(16 * 1024))
        .then(move |who: Principal, body: bytes::Bytes| register(Arc::clone(&a), who, body))
        .boxed()
}
