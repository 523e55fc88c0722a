//! Readings over HTTP (`POST /v1/sensors/temperature`, `/v1/sensors/batch`): checked for the
//! answer, made durable, then answered; and the answer when a message cannot be made durable.

use chrono::Utc;
use warp::http::StatusCode;
use warp::Reply;

use super::{Api, ApiError};
use crate::auth::Principal;
use crate::dataflow::inbound::Inbound;

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

/// Readings over HTTP: checked here for the answer, and sent into the dataflow either way, where
/// the bad ones become dead letters exactly as over MQTT. The answer comes once the message is
/// durable (the write-ahead log, or Kafka); if it cannot be made durable, 503 and nothing was
/// accepted.
async fn ingest(api: &Api, kind: &str, who: Principal, body: &[u8]) -> warp::reply::Response {
    let Principal::Node(node) = who else {
        return ApiError::PermissionDenied("a node API key is required".into()).response();
    };
    let now = Utc::now();
    let items: Vec<serde_json::Value> = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(v)) if kind == "batch" => v,
        Ok(serde_json::Value::Object(o)) if kind == "batch" => match o.get("readings") {
            Some(serde_json::Value::Array(v)) => v.clone(),
            // A batch whose `readings` is not a list is a mistake, not a reading.
            Some(_) => {
                return ApiError::InvalidPayload("readings must be an array of readings".into())
                    .response()
            }
            None => vec![serde_json::Value::Object(o)],
        },
        Ok(v @ serde_json::Value::Object(_)) => vec![v],
        Ok(_) => {
            return ApiError::InvalidPayload(
                "expected a reading object (or, for /batch, an array of them)".into(),
            )
            .response()
        }
        Err(e) => {
            // Kept for the dead letters; the answer does not wait for it.
            let unparsed = Inbound {
                source: format!("http:/v1/sensors/{kind}"),
                node: Ok(node),
                payload: body.to_vec(),
                received_at: now,
            };
            api.ingest.submit(&unparsed, Box::new(|_| {}));
            return ApiError::ParseError(e.to_string()).response();
        }
    };
    let max_age = chrono::Duration::microseconds((api.node_cfg.max_age_hours * 3.6e9) as i64);
    let mut rejected = Vec::new();
    let mut foreign = 0;
    for (i, item) in items.iter().enumerate() {
        let bytes = item.to_string().into_bytes();
        let verdict = kaiabc_schemas::RawReading::from_json(&bytes)
            .and_then(|r| r.validate(now))
            .and_then(|r| kaiabc_schemas::validate::check_age(&r, now, max_age).map(|()| r));
        match verdict {
            Ok(r) if r.node_id != node => {
                foreign += 1;
                rejected.push(serde_json::json!({"index": i,
                    "code": kaiabc_schemas::validate::Reason::InvalidNodeId.code(),
                    "message": format!("this key is for node {node:?}, not {:?}", r.node_id)}));
            }
            Ok(_) => {}
            Err(rej) => rejected.push(serde_json::json!({"index": i,
                "code": rej.reason.code(), "message": rej.message})),
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
    if let Err(e) = api.ingest.durable(&msg).await {
        return not_stored(&e);
    }
    if foreign > 0 {
        return ApiError::PermissionDenied(format!(
            "this API key is for node {node:?} only; nothing was accepted"
        ))
        .response();
    }
    if kind == "temperature" && !rejected.is_empty() {
        let r = &rejected[0];
        let (code, message) = (
            r["code"].as_str().unwrap_or_default(),
            r["message"].as_str().unwrap_or_default(),
        );
        return ApiError::Validation {
            message: format!("{code}: {message}"),
            field_errors: Vec::new(),
        }
        .response();
    }
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({
            "accepted": items.len() - rejected.len(),
            "rejected": rejected,
            "node_id": node,
        })),
        StatusCode::ACCEPTED,
    )
    .into_response()
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
