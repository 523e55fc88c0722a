//! Readings over HTTP (`POST /v1/sensors/temperature`, `/v1/sensors/batch`): checked for the
//! answer, made durable, then answered; and the answer when a message cannot be made durable.

use chrono::Utc;
use warp::http::StatusCode;
use warp::Reply;

use super::error::FieldError;
use super::{Api, ApiError};
use crate::auth::Principal;
use crate::dataflow::inbound::Inbound;
use crate::ws::Outcome;

/// The answer when a message could not be made durable: nothing was accepted, send it again.
pub(crate) fn not_stored(e: &crate::dataflow::inbound::IngestError) -> warp::reply::Response {
    use crate::dataflow::inbound::IngestError;
    use kaiabc_connectors::wal::WalError;
    tracing::warn!(error = %e, code = e.code(), "a request was not stored");
    let then = format!("nothing was accepted, retry later ({e})");
    match e {
        IngestError::Stopping | IngestError::Log(WalError::Closed) => {
            ApiError::ShuttingDown(format!("the pipeline is stopping; {then}"))
        }
        IngestError::Log(WalError::Full { .. }) => {
            ApiError::Overloaded(format!("the pipeline is not keeping up; {then}"))
        }
        _ => ApiError::StorageUnavailable(format!("the message could not be stored; {then}")),
    }
    .response()
}

/// How long an ingestion request waits for the dataflow to apply its reading before it answers
/// 202 (stored, not yet applied) instead of 200 with the filtered value. The dataflow applies a
/// reading within milliseconds; this only runs out when it is behind.
pub(crate) const APPLIED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The readings of a request body: one object, an array, or `{node_id?, readings: [...]}` whose
/// readings inherit the top-level `node_id` (the API specification's batch).
fn items_of(kind: &str, body: &[u8]) -> Result<Vec<serde_json::Value>, ApiError> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::ParseError(e.to_string()))?;
    match v {
        Value::Array(v) if kind == "batch" => Ok(v),
        Value::Object(mut o) if kind == "batch" && o.contains_key("readings") => {
            let node = o.get("node_id").cloned();
            match o.remove("readings") {
                Some(Value::Array(mut v)) => {
                    if let Some(node) = node {
                        for r in v.iter_mut().filter_map(Value::as_object_mut) {
                            r.entry("node_id").or_insert_with(|| node.clone());
                        }
                    }
                    Ok(v)
                }
                // A batch whose `readings` is not a list is a mistake, not a reading.
                _ => Err(ApiError::InvalidPayload(
                    "readings must be an array of readings".into(),
                )),
            }
        }
        v @ Value::Object(_) => Ok(vec![v]),
        _ => Err(ApiError::InvalidPayload(
            "expected a reading object (or, for /batch, an array of them)".into(),
        )),
    }
}

/// The filtered values of an applied reading, as the contract names them.
fn filtered_json(a: &crate::ws::Applied) -> serde_json::Value {
    serde_json::json!({
        "temperature_kelvin": a.temperature_kelvin,
        "humidity_percent": a.humidity_percent,
        "pressure_pa": a.pressure_pa,
        "kalman_variance": a.kalman_variance,
    })
}

/// Readings over HTTP: checked here for the answer, and sent into the dataflow either way, where
/// the bad ones become dead letters exactly as over MQTT. Once the message is durable (the
/// write-ahead log, or Kafka) the answer waits up to [`APPLIED_WAIT`] for the dataflow to apply
/// the (newest) reading: 200 with its filtered values, else 202 (stored, applied later). If it
/// cannot be made durable, 503 and nothing was accepted.
async fn ingest(api: &Api, kind: &str, who: Principal, body: &[u8]) -> warp::reply::Response {
    let Principal::Node(node) = who else {
        return ApiError::PermissionDenied("a node API key is required".into()).response();
    };
    let now = Utc::now();
    let items = match items_of(kind, body) {
        Ok(items) => items,
        Err(e) => {
            if matches!(e, ApiError::ParseError(_)) {
                // Kept for the dead letters; the answer does not wait for it.
                let unparsed = Inbound {
                    source: format!("http:/v1/sensors/{kind}"),
                    node: Ok(node),
                    payload: body.to_vec(),
                    received_at: now,
                };
                api.ingest.submit(&unparsed, Box::new(|_| {}));
            }
            return e.response();
        }
    };
    let max_age = chrono::Duration::microseconds((api.node_cfg.max_age_hours * 3.6e9) as i64);
    let mut rejections = Vec::new();
    let mut field_errors = Vec::new();
    let mut foreign = 0;
    // The newest valid reading: the one whose filtered values the answer gives.
    let mut newest: Option<(i64, Option<i64>)> = None;
    for (i, item) in items.iter().enumerate() {
        let bytes = item.to_string().into_bytes();
        let verdict = kaiabc_schemas::RawReading::from_json(&bytes)
            .and_then(|r| r.validate(now))
            .and_then(|r| kaiabc_schemas::validate::check_age(&r, now, max_age).map(|()| r));
        match verdict {
            Ok(r) if r.node_id != node => {
                foreign += 1;
                rejections.push(serde_json::json!({"index": i,
                    "code": kaiabc_schemas::validate::Reason::InvalidNodeId.code(),
                    "message": format!("this key is for node {node:?}, not {:?}", r.node_id)}));
            }
            Ok(r) => {
                let key = (r.timestamp.timestamp_micros(), r.seq);
                if newest.is_none_or(|n| key.0 >= n.0) {
                    newest = Some(key);
                }
            }
            Err(rej) => {
                let prefix = if kind == "batch" {
                    format!("readings[{i}].")
                } else {
                    String::new()
                };
                field_errors.extend(FieldError::of_reading(&rej, item, &prefix));
                rejections.push(serde_json::json!({"index": i,
                    "code": rej.reason.code(), "message": rej.message}));
            }
        }
    }
    // Readings of another node make the whole request a forbidden one: all of it goes to the
    // dead letters, none of it to a clock.
    let vouched = if foreign > 0 {
        Err(format!(
            "the API key of node {node:?} cannot submit readings of other nodes"
        ))
    } else {
        Ok(node.clone())
    };
    let msg = Inbound {
        source: format!("http:/v1/sensors/{kind}"),
        node: vouched,
        payload: if items.len() == 1 && kind == "temperature" {
            body.to_vec()
        } else {
            serde_json::to_vec(&items).unwrap_or_default()
        },
        received_at: now,
    };
    // Registered before the reading goes in, so the answer cannot miss it.
    let applied = newest
        .filter(|_| foreign == 0)
        .map(|(micros, seq)| api.shared.hub.await_applied(&node, micros, seq));
    if let Err(e) = api.ingest.durable(&msg).await {
        return not_stored(&e);
    }
    if foreign > 0 {
        return ApiError::PermissionDenied(format!(
            "this API key is for node {node:?} only; nothing was accepted"
        ))
        .response();
    }
    if kind == "temperature" && !rejections.is_empty() {
        let r = &rejections[0];
        let (code, message) = (
            r["code"].as_str().unwrap_or_default(),
            r["message"].as_str().unwrap_or_default(),
        );
        return ApiError::Validation {
            message: format!("{code}: {message}"),
            field_errors,
        }
        .response();
    }
    let outcome = match applied {
        Some(rx) => tokio::time::timeout(APPLIED_WAIT, rx)
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    let (applied, failed) = match outcome {
        Some(Outcome::Applied(a)) => (Some(a), None),
        Some(Outcome::Failed { reason, message }) => (None, Some((reason, message))),
        None => (None, None),
    };
    if let (Some((reason, message)), "temperature") = (&failed, kind) {
        let message = format!("{message}; the reading is kept as a dead letter");
        return match reason {
            kaiabc_schemas::Reason::FilterDivergence => ApiError::FilterDivergence(message),
            _ => ApiError::OdeInstability(message),
        }
        .response();
    }
    let status = if applied.is_some() || failed.is_some() || newest.is_none() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let message = match &applied {
        Some(a) if a.temperature_kelvin.is_none() => {
            "stored; not applied to the clock (the node is paused, or the reading is late)"
        }
        Some(_) => "sensor data processed",
        None if failed.is_some() => {
            "stored; the node failed on the newest reading (see failed; kept as a dead letter)"
        }
        None if newest.is_none() => "nothing to apply: every reading was rejected",
        None => "stored; the pipeline will apply it shortly",
    };
    let body = if kind == "temperature" {
        serde_json::json!({
            "accepted": true,
            "filtered_value": applied.as_ref().and_then(|a| a.temperature_kelvin),
            "kalman_variance": applied.as_ref().and_then(|a| a.kalman_variance),
            "filtered": applied.as_ref().map(filtered_json),
            "message": message,
            "node_id": node,
        })
    } else {
        serde_json::json!({
            "accepted": items.len() - rejections.len(),
            "rejected": rejections.len(),
            "rejections": rejections,
            "field_errors": field_errors,
            "latest_filtered": applied.as_ref().map(filtered_json),
            "failed": failed.as_ref().map(|(reason, message)| {
                serde_json::json!({"code": reason.code(), "message": message})
            }),
            "message": message,
            "node_id": node,
        })
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// An ingestion endpoint's route (`kind`: `temperature` or `batch`; 1 MiB at most).
pub(super) fn route(
    api: &std::sync::Arc<Api>,
    at: super::Matched,
    kind: &'static str,
) -> super::Route {
    use warp::Filter;
    let a = std::sync::Arc::clone(api);
    at.and(super::body(1024 * 1024))
        .then(move |who: Principal, body: bytes::Bytes| {
            let api = std::sync::Arc::clone(&a);
            async move { ingest(&api, kind, who, &body).await }
        })
        .boxed()
}
