//! The HTTP API's errors: one enum whose variants are the error codes a client can meet, each
//! with its status, so a handler returns `ApiError::…` and the body, the status, `details`
//! and the headers (`Retry-After`, `Allow`) follow from the variant alone. The body is the
//! contract's `{"error": {"code", "message", "details"?, "timestamp", "request_id"}}`.

use chrono::Utc;
use serde::Serialize;
use warp::http::{HeaderValue, StatusCode};
use warp::Reply;

/// One field's problem in a request (`details.field_errors[]`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldError {
    /// The field's path (`parameters.rate_scale`, `readings[3].timestamp`).
    pub field: String,
    /// What is wrong: `OUT_OF_RANGE`, `INVALID_FORMAT`, or a reading's reason code.
    pub code: String,
    /// In words.
    pub message: String,
    /// The value sent, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provided: Option<serde_json::Value>,
    /// The values allowed, `[low, high]`, when they are a range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_range: Option<[f64; 2]>,
}

impl FieldError {
    /// A field error without a provided value or range.
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
            provided: None,
            valid_range: None,
        }
    }

    /// The field error of a reading rejected with `rej` (`item` is the reading as sent,
    /// `prefix` its place in the request, e.g. `readings[3].`), if the reason is about one field.
    pub fn of_reading(
        rej: &kaiabc_schemas::Rejection,
        item: &serde_json::Value,
        prefix: &str,
    ) -> Option<Self> {
        use kaiabc_schemas::Reason;
        let rule = match rej.reason.field() {
            Some(f) => f,
            None if rej.reason == Reason::MissingField => {
                let name = rej.message.split_whitespace().next().unwrap_or("?");
                return Some(Self::new(
                    format!("{prefix}{name}"),
                    "MISSING_FIELD",
                    rej.message.clone(),
                ));
            }
            None => return None,
        };
        Some(Self {
            field: format!("{prefix}{}", rule.field),
            code: rule.code.into(),
            message: rej.message.clone(),
            provided: item.get(rule.field).cloned(),
            valid_range: rule.range.map(|(a, b)| [a, b]),
        })
    }
}

/// A failed request, as the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a query parameter or body field has a bad value.
    #[error("{0}")]
    InvalidParameter(String),
    /// 400: the body is not the shape the endpoint takes.
    #[error("{0}")]
    InvalidPayload(String),
    /// 400: the body is not JSON.
    #[error("{0}")]
    ParseError(String),
    /// 400: the request itself is malformed (headers, upgrade, body stream).
    #[error("{0}")]
    InvalidRequest(String),
    /// 422: well-formed, but the values break the rules, field by field.
    #[error("{message}")]
    Validation {
        /// The summary.
        message: String,
        /// Each field's problem.
        field_errors: Vec<FieldError>,
    },
    /// 401: no credential, or one that does not check out.
    #[error("{0}")]
    AuthenticationFailed(String),
    /// 403: a valid credential that may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// 404: the node has no state (or is not registered).
    #[error("{0}")]
    NodeNotFound(String),
    /// 404: no such endpoint or resource.
    #[error("{0}")]
    NotFound(String),
    /// 404: the node has no finished phase shift of that id.
    #[error("{0}")]
    ShiftNotFound(String),
    /// 404: no export of that name was written here.
    #[error("{0}")]
    ExportNotFound(String),
    /// 410: the export was written, but its download has expired (and is deleted).
    #[error("{0}")]
    ExportExpired(String),
    /// 405, with the methods the path serves (for `Allow`; empty when unknown).
    #[error("{message}")]
    MethodNotAllowed {
        /// In words.
        message: String,
        /// The path's methods.
        allow: Vec<&'static str>,
    },
    /// 409: the node is not reporting, and the request needs its current state.
    #[error("{message}")]
    NodeOffline {
        /// Why the node is needed, in words.
        message: String,
        /// When the node last reported.
        last_seen: Option<String>,
    },
    /// 422: the node's clock failed on the reading (kept as a dead letter).
    #[error("{0}")]
    OdeInstability(String),
    /// 422: the node's Kalman filter failed on the reading (kept as a dead letter).
    #[error("{0}")]
    FilterDivergence(String),
    /// 409: the node is already registered.
    #[error("{0}")]
    NodeExists(String),
    /// 413: the body is larger than the endpoint takes.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 413: a bulk request holds more readings than it may.
    #[error("{0}")]
    TooManyReadings(String),
    /// 429: over a rate limit; a retry after so many seconds is let through.
    #[error("{message}")]
    RateLimitExceeded {
        /// Why, in words.
        message: String,
        /// Seconds until a retry is let through.
        retry_after_seconds: u64,
    },
    /// 503: the message could not be made durable; nothing was accepted.
    #[error("{0}")]
    StorageUnavailable(String),
    /// 503: the server is at a limit (connections, the log's size).
    #[error("{0}")]
    Overloaded(String),
    /// 503: the pipeline is stopping.
    #[error("{0}")]
    ShuttingDown(String),
    /// 500: a query over the lake failed.
    #[error("{0}")]
    QueryFailed(String),
    /// 500: a bug or an unexpected failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidParameter(_)
            | Self::InvalidPayload(_)
            | Self::ParseError(_)
            | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AuthenticationFailed(_) => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Self::NodeNotFound(_)
            | Self::NotFound(_)
            | Self::ShiftNotFound(_)
            | Self::ExportNotFound(_) => StatusCode::NOT_FOUND,
            Self::ExportExpired(_) => StatusCode::GONE,
            Self::NodeOffline { .. } => StatusCode::CONFLICT,
            Self::OdeInstability(_) | Self::FilterDivergence(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NodeExists(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) | Self::TooManyReadings(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::StorageUnavailable(_) | Self::Overloaded(_) | Self::ShuttingDown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::QueryFailed(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidParameter(_) => "INVALID_PARAMETER",
            Self::InvalidPayload(_) => "INVALID_PAYLOAD",
            Self::ParseError(_) => "PARSE_ERROR",
            Self::InvalidRequest(_) => "INVALID_REQUEST",
            Self::Validation { .. } => "VALIDATION_ERROR",
            Self::AuthenticationFailed(_) => "AUTHENTICATION_FAILED",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::NodeNotFound(_) => "NODE_NOT_FOUND",
            Self::NotFound(_) => "NOT_FOUND",
            Self::ShiftNotFound(_) => "SHIFT_NOT_FOUND",
            Self::ExportNotFound(_) => "EXPORT_NOT_FOUND",
            Self::ExportExpired(_) => "EXPORT_EXPIRED",
            Self::NodeOffline { .. } => "NODE_OFFLINE",
            Self::OdeInstability(_) => "ODE_INSTABILITY",
            Self::FilterDivergence(_) => "FILTER_DIVERGENCE",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::NodeExists(_) => "NODE_EXISTS",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::TooManyReadings(_) => "TOO_MANY_READINGS",
            Self::RateLimitExceeded { .. } => "RATE_LIMIT_EXCEEDED",
            Self::StorageUnavailable(_) => "STORAGE_UNAVAILABLE",
            Self::Overloaded(_) => "OVERLOADED",
            Self::ShuttingDown(_) => "SHUTTING_DOWN",
            Self::QueryFailed(_) => "QUERY_FAILED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The body's `error` object, under `request_id`.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
            "timestamp": kaiabc_schemas::format_timestamp(&Utc::now()),
            "request_id": request_id,
        });
        match self {
            Self::Validation { field_errors, .. } if !field_errors.is_empty() => {
                error["details"] = serde_json::json!({ "field_errors": field_errors });
            }
            Self::MethodNotAllowed { allow, .. } if !allow.is_empty() => {
                error["details"] = serde_json::json!({ "allow": allow });
            }
            Self::NodeOffline { last_seen, .. } => {
                error["details"] = serde_json::json!({ "last_seen": last_seen });
                error["recovery_suggestions"] = OFFLINE_SUGGESTIONS
                    .iter()
                    .map(|(action, description, priority)| {
                        serde_json::json!({"action": action, "description": description,
                            "priority": priority})
                    })
                    .collect();
            }
            Self::RateLimitExceeded {
                retry_after_seconds,
                ..
            } => {
                // Where the contract's example puts it, and in `details` as the others do.
                error["retry_after_seconds"] = (*retry_after_seconds).into();
                error["details"] =
                    serde_json::json!({ "retry_after_seconds": retry_after_seconds });
            }
            _ => {}
        }
        serde_json::json!({ "error": error })
    }

    /// The answer: the body with this error's status, `X-Request-Id`, and the headers the
    /// variant calls for (`Retry-After`, `Allow`). Server errors are logged with their id.
    pub fn response(&self) -> warp::reply::Response {
        let id = super::request_id();
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(request_id = %id, code = self.code(), error = %self, "request failed");
        }
        let mut resp =
            warp::reply::with_status(warp::reply::json(&self.body(&id)), status).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert("x-request-id", v);
        }
        match self {
            Self::RateLimitExceeded {
                retry_after_seconds,
                ..
            } => {
                h.insert("retry-after", HeaderValue::from(*retry_after_seconds));
            }
            Self::StorageUnavailable(_) | Self::Overloaded(_) | Self::ShuttingDown(_) => {
                h.insert("retry-after", HeaderValue::from_static("1"));
            }
            Self::MethodNotAllowed { allow, .. } if !allow.is_empty() => {
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    h.insert("allow", v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// What to try when a node is offline, most likely first: `(action, description, priority)`.
const OFFLINE_SUGGESTIONS: [(&str, &str, &str); 4] = [
    (
        "check_power",
        "Verify the node has an adequate power supply",
        "high",
    ),
    (
        "check_network",
        "Ensure Wi-Fi connectivity and signal strength, and that the broker is reachable",
        "high",
    ),
    ("restart_node", "Power-cycle the device", "medium"),
    (
        "update_firmware",
        "Check the node's firmware_version against the current release",
        "low",
    ),
];

impl warp::reject::Reject for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        self.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's NODE_OFFLINE carries recovery suggestions; a node's failures on a
    /// reading are 422s of their own codes.
    #[test]
    fn node_failures_and_an_offline_node_have_the_contract_s_codes() {
        let off = ApiError::NodeOffline {
            message: "node p1 is not reporting".into(),
            last_seen: Some("2026-01-05T10:00:00Z".into()),
        };
        assert_eq!(off.status(), StatusCode::CONFLICT);
        let body = off.body("req_1");
        assert_eq!(body["error"]["code"], "NODE_OFFLINE");
        assert_eq!(
            body["error"]["details"]["last_seen"],
            "2026-01-05T10:00:00Z"
        );
        let s = body["error"]["recovery_suggestions"].as_array().unwrap();
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|x| x["action"].is_string()
            && x["description"].is_string()
            && ["high", "medium", "low"].contains(&x["priority"].as_str().unwrap())));
        for (e, code) in [
            (ApiError::OdeInstability("x".into()), "ODE_INSTABILITY"),
            (ApiError::FilterDivergence("x".into()), "FILTER_DIVERGENCE"),
        ] {
            assert_eq!(
                (e.status(), e.code()),
                (StatusCode::UNPROCESSABLE_ENTITY, code)
            );
        }
    }

    #[test]
    fn each_error_has_its_status_code_and_headers() {
        let limited = ApiError::RateLimitExceeded {
            message: "slow down".into(),
            retry_after_seconds: 45,
        };
        let r = limited.response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "45");
        assert!(r.headers().contains_key("x-request-id"));
        let b = limited.body("req_1");
        assert_eq!(b["error"]["code"], "RATE_LIMIT_EXCEEDED");
        assert_eq!(b["error"]["message"], "slow down");
        assert_eq!(b["error"]["retry_after_seconds"], 45);
        assert_eq!(b["error"]["request_id"], "req_1");

        let wrong = ApiError::MethodNotAllowed {
            message: "/v1/health serves GET".into(),
            allow: vec!["GET"],
        };
        let r = wrong.response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()["allow"], "GET");
        assert_eq!(wrong.body("r")["error"]["details"]["allow"][0], "GET");

        let invalid = ApiError::Validation {
            message: "2 fields".into(),
            field_errors: vec![FieldError::new(
                "temperature_kelvin",
                "OUT_OF_RANGE",
                "above 373.15",
            )],
        };
        let b = invalid.body("req_2");
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            b["error"]["details"]["field_errors"][0]["code"],
            "OUT_OF_RANGE"
        );
        assert!(ApiError::Internal("x".into()).body("r")["error"]
            .get("details")
            .is_none());
    }
}
