//! Validation rules for incoming readings, and the reason codes every rejection carries.

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reading::{Quality, SensorReading};

/// Valid temperatures, K (the API specification's range).
pub const TEMPERATURE_RANGE_K: (f64, f64) = (273.15, 323.15);
/// Valid relative humidity, %.
pub const HUMIDITY_RANGE_PERCENT: (f64, f64) = (0.0, 100.0);
/// Valid station pressure, Pa.
pub const PRESSURE_RANGE_PA: (f64, f64) = (30_000.0, 110_000.0);
/// How far in the future a timestamp may be (node clocks drift).
pub const MAX_FUTURE: Duration = Duration::minutes(5);
/// Longest node id.
pub const NODE_ID_MAX_LEN: usize = 64;
/// [`valid_node_id`] as a JSON Schema pattern, for the API's documented types.
pub const NODE_ID_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// Why an event was not accepted. The `code()` strings are stable: dashboards, SQL over
/// `dead_letters.reason` and the HTTP API's error bodies use them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// Not valid JSON/CSV, or a field of the wrong type.
    ParseError,
    /// node_id, timestamp or temperature_kelvin absent.
    MissingField,
    /// node_id does not match `^[A-Za-z0-9_-]{1,64}$`.
    InvalidNodeId,
    /// Not RFC 3339 with a zone.
    InvalidTimestamp,
    /// More than five minutes after the time of receipt.
    FutureTimestamp,
    /// Older than the horizon (default 7 days) before its node's newest reading, or, live,
    /// before the time of receipt.
    StaleTimestamp,
    /// Outside 273.15–323.15 K, or not finite.
    TemperatureOutOfRange,
    /// Outside 0–100 %, or not finite.
    HumidityOutOfRange,
    /// Outside 30 000–110 000 Pa, or not finite.
    PressureOutOfRange,
    /// Negative or not finite.
    LightOutOfRange,
    /// The node marked the reading `invalid`.
    SensorInvalid,
    /// A reading with the same (node_id, timestamp, seq) was already seen: dropped and
    /// dead-lettered with this reason, so the lake's readings hold it once.
    Duplicate,
    /// The clock's integration failed on this reading (the API's error code).
    OdeInstability,
    /// The Kalman filter could not take this reading (the API's error code).
    FilterDivergence,
    /// A control command the node could not carry out (e.g. parameters that are invalid
    /// together with the node's others).
    InvalidCommand,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 15] = [
        Reason::ParseError,
        Reason::MissingField,
        Reason::InvalidNodeId,
        Reason::InvalidTimestamp,
        Reason::FutureTimestamp,
        Reason::StaleTimestamp,
        Reason::TemperatureOutOfRange,
        Reason::HumidityOutOfRange,
        Reason::PressureOutOfRange,
        Reason::LightOutOfRange,
        Reason::SensorInvalid,
        Reason::Duplicate,
        Reason::OdeInstability,
        Reason::FilterDivergence,
        Reason::InvalidCommand,
    ];

    /// The stable code, e.g. `TEMPERATURE_OUT_OF_RANGE`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::ParseError => "PARSE_ERROR",
            Reason::MissingField => "MISSING_FIELD",
            Reason::InvalidNodeId => "INVALID_NODE_ID",
            Reason::InvalidTimestamp => "INVALID_TIMESTAMP",
            Reason::FutureTimestamp => "FUTURE_TIMESTAMP",
            Reason::StaleTimestamp => "STALE_TIMESTAMP",
            Reason::TemperatureOutOfRange => "TEMPERATURE_OUT_OF_RANGE",
            Reason::HumidityOutOfRange => "HUMIDITY_OUT_OF_RANGE",
            Reason::PressureOutOfRange => "PRESSURE_OUT_OF_RANGE",
            Reason::LightOutOfRange => "LIGHT_OUT_OF_RANGE",
            Reason::SensorInvalid => "SENSOR_INVALID",
            Reason::Duplicate => "DUPLICATE",
            Reason::OdeInstability => "ODE_INSTABILITY",
            Reason::FilterDivergence => "FILTER_DIVERGENCE",
            Reason::InvalidCommand => "INVALID_COMMAND",
        }
    }

    /// The field a reading rejected for this reason got wrong, with the API's field-error code
    /// and the valid range; `None` for reasons that are not about one field.
    /// `MISSING_FIELD` names no field here: the rejection's message does.
    pub fn field(self) -> Option<FieldRule> {
        let rule = |field, code, range| FieldRule { field, code, range };
        Some(match self {
            Reason::InvalidNodeId => rule("node_id", "INVALID_FORMAT", None),
            Reason::InvalidTimestamp => rule("timestamp", "INVALID_FORMAT", None),
            Reason::FutureTimestamp | Reason::StaleTimestamp => {
                rule("timestamp", "OUT_OF_RANGE", None)
            }
            Reason::TemperatureOutOfRange => rule(
                "temperature_kelvin",
                "OUT_OF_RANGE",
                Some(TEMPERATURE_RANGE_K),
            ),
            Reason::HumidityOutOfRange => rule(
                "humidity_percent",
                "OUT_OF_RANGE",
                Some(HUMIDITY_RANGE_PERCENT),
            ),
            Reason::PressureOutOfRange => {
                rule("pressure_pa", "OUT_OF_RANGE", Some(PRESSURE_RANGE_PA))
            }
            Reason::LightOutOfRange => rule("light_lux", "OUT_OF_RANGE", None),
            Reason::SensorInvalid => rule("quality", "SENSOR_INVALID", None),
            _ => return None,
        })
    }

    /// Parses a code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The field a rejection is about (see [`Reason::field`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldRule {
    /// The reading's field.
    pub field: &'static str,
    /// The API's field-error code: `OUT_OF_RANGE`, `INVALID_FORMAT`, `SENSOR_INVALID`.
    pub code: &'static str,
    /// The values allowed, when they are a closed range.
    pub range: Option<(f64, f64)>,
}

/// A rejected event: the reason code, a message for people, and the node when it is known.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// The reason code.
    pub reason: Reason,
    /// What exactly was wrong.
    pub message: String,
    /// The node the event claimed to come from, if it could be read.
    pub node_id: Option<String>,
}

impl Rejection {
    /// A rejection without a node.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            node_id: None,
        }
    }

    /// The same rejection, attributed to a node.
    pub fn for_node(mut self, node_id: &str) -> Self {
        self.node_id = Some(node_id.to_string());
        self
    }
}

/// Whether a node id is acceptable: 1–64 characters from `[A-Za-z0-9_-]`.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= NODE_ID_MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn in_range(v: f64, (lo, hi): (f64, f64)) -> bool {
    v.is_finite() && v >= lo && v <= hi
}

/// Live, a reading more than `max_age` before its receipt is `STALE_TIMESTAMP` (a node whose
/// clock is wrong; a replay of old logs does not apply this).
pub fn check_age(
    r: &SensorReading,
    received: DateTime<Utc>,
    max_age: chrono::Duration,
) -> Result<(), Rejection> {
    if r.timestamp >= received - max_age {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::StaleTimestamp,
        format!(
            "timestamp {} is more than {} h before the time of receipt",
            crate::reading::format_timestamp(&r.timestamp),
            max_age.num_hours()
        ),
    )
    .for_node(&r.node_id))
}

/// Applies every rule to a typed reading; `now` is the time of receipt.
pub fn check_reading(r: &SensorReading, now: DateTime<Utc>) -> Result<(), Rejection> {
    if !valid_node_id(&r.node_id) {
        return Err(Rejection::new(
            Reason::InvalidNodeId,
            format!(
                "node_id {:?} must match ^[A-Za-z0-9_-]{{1,64}}$",
                truncate(&r.node_id, 80)
            ),
        ));
    }
    if r.timestamp > now + MAX_FUTURE {
        // The message leaves out the time of receipt, so that replays give identical rows.
        return Err(Rejection::new(
            Reason::FutureTimestamp,
            format!(
                "timestamp {} is more than 5 minutes after the time of receipt",
                crate::reading::format_timestamp(&r.timestamp),
            ),
        ));
    }
    if let Some(seq) = r.seq {
        if seq < 0 {
            return Err(Rejection::new(
                Reason::ParseError,
                format!("seq {seq} is negative"),
            ));
        }
    }
    if !in_range(r.temperature_kelvin, TEMPERATURE_RANGE_K) {
        return Err(Rejection::new(
            Reason::TemperatureOutOfRange,
            format!(
                "temperature_kelvin {} is outside 273.15–323.15 K",
                r.temperature_kelvin
            ),
        ));
    }
    if let Some(h) = r.humidity_percent {
        if !in_range(h, HUMIDITY_RANGE_PERCENT) {
            return Err(Rejection::new(
                Reason::HumidityOutOfRange,
                format!("humidity_percent {h} is outside 0–100 %"),
            ));
        }
    }
    if let Some(p) = r.pressure_pa {
        if !in_range(p, PRESSURE_RANGE_PA) {
            return Err(Rejection::new(
                Reason::PressureOutOfRange,
                format!("pressure_pa {p} is outside 30000–110000 Pa"),
            ));
        }
    }
    if let Some(l) = r.light_lux {
        if !(l.is_finite() && l >= 0.0) {
            return Err(Rejection::new(
                Reason::LightOutOfRange,
                format!("light_lux {l} is negative or not finite"),
            ));
        }
    }
    if r.quality == Quality::Invalid {
        return Err(Rejection::new(
            Reason::SensorInvalid,
            "the node marked this reading invalid",
        ));
    }
    Ok(())
}

/// At most `n` characters of `s`, for messages about hostile input.
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::parse_timestamp;

    fn reading() -> SensorReading {
        SensorReading {
            node_id: "pico_001".into(),
            seq: Some(1),
            timestamp: parse_timestamp("2025-07-01T12:00:00Z").unwrap(),
            temperature_kelvin: 298.65,
            humidity_percent: Some(45.2),
            pressure_pa: Some(101_325.0),
            light_lux: None,
            sensor_type: "BME280".into(),
            quality: Quality::Good,
            raw_values: None,
            firmware_version: None,
        }
    }

    fn now() -> DateTime<Utc> {
        parse_timestamp("2025-07-01T12:00:00Z").unwrap()
    }

    fn reason(f: impl FnOnce(&mut SensorReading)) -> Option<Reason> {
        let mut r = reading();
        f(&mut r);
        check_reading(&r, now()).err().map(|e| e.reason)
    }

    #[test]
    fn node_ids_follow_the_pattern() {
        assert!(valid_node_id("pico_001") && valid_node_id("A-b_9") && valid_node_id("x"));
        assert!(valid_node_id(&"a".repeat(64)));
        for bad in ["", "pico@001", "päco", "a b", "a/b"] {
            assert!(!valid_node_id(bad), "{bad}");
        }
        assert!(!valid_node_id(&"a".repeat(65)));
        assert_eq!(
            reason(|r| r.node_id = "pico@001".into()),
            Some(Reason::InvalidNodeId)
        );
    }

    #[test]
    fn ranges_are_inclusive_and_reject_non_finite() {
        assert_eq!(reason(|_| {}), None);
        assert_eq!(reason(|r| r.temperature_kelvin = 273.15), None);
        assert_eq!(reason(|r| r.temperature_kelvin = 323.15), None);
        for t in [273.14, 323.16, 400.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                reason(|r| r.temperature_kelvin = t),
                Some(Reason::TemperatureOutOfRange)
            );
        }
        assert_eq!(reason(|r| r.humidity_percent = Some(100.0)), None);
        assert_eq!(
            reason(|r| r.humidity_percent = Some(104.5)),
            Some(Reason::HumidityOutOfRange)
        );
        assert_eq!(reason(|r| r.pressure_pa = Some(30_000.0)), None);
        assert_eq!(
            reason(|r| r.pressure_pa = Some(12_000.0)),
            Some(Reason::PressureOutOfRange)
        );
        assert_eq!(
            reason(|r| r.light_lux = Some(-1.0)),
            Some(Reason::LightOutOfRange)
        );
    }

    #[test]
    fn future_timestamps_get_five_minutes_of_grace() {
        assert_eq!(reason(|r| r.timestamp = now() + Duration::minutes(5)), None);
        assert_eq!(
            reason(|r| r.timestamp = now() + Duration::seconds(301)),
            Some(Reason::FutureTimestamp)
        );
    }

    #[test]
    fn invalid_quality_is_rejected() {
        assert_eq!(
            reason(|r| r.quality = Quality::Invalid),
            Some(Reason::SensorInvalid)
        );
    }

    #[test]
    fn codes_round_trip_and_match_serde() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.code())
            );
        }
    }
}
