//! The sensor reading a node sends (the API's `SensorReading`), and its lenient wire form.

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{check_reading, Reason, Rejection};

/// A node's own verdict on a reading (the API's `quality`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Normal reading.
    #[default]
    Good,
    /// Usable, e.g. the sensor is still settling.
    Fair,
    /// Usable with care.
    Poor,
    /// The node itself says the value is wrong: never applied to a clock.
    Invalid,
}

impl Quality {
    /// The lowercase name used in JSON, CSV and the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Fair => "fair",
            Quality::Poor => "poor",
            Quality::Invalid => "invalid",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "good" => Some(Quality::Good),
            "fair" => Some(Quality::Fair),
            "poor" => Some(Quality::Poor),
            "invalid" => Some(Quality::Invalid),
            _ => None,
        }
    }
}

/// The sensor's values before conversion, in the sensor's own units (BME280: °C, %RH, hPa).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RawValues {
    /// Temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Relative humidity, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub humidity: Option<f64>,
    /// Pressure, hPa.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<f64>,
}

/// A validated sensor reading. Build one from the wire with [`RawReading::validate`].
///
/// `temperature_kelvin` is required here (the API marks it optional): a reading without a
/// temperature cannot drive a clock, so it is rejected with `MISSING_FIELD`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SensorReading {
    /// The node, `^[A-Za-z0-9_-]{1,64}$`.
    pub node_id: String,
    /// The node's sequence number for this reading (increments per reading sent); with the
    /// timestamp, the key that makes a retransmitted reading a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// When the node took the reading (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub timestamp: DateTime<Utc>,
    /// Air temperature, K (273.15–323.15).
    pub temperature_kelvin: f64,
    /// Relative humidity, % (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub humidity_percent: Option<f64>,
    /// Station pressure, Pa (30 000–110 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure_pa: Option<f64>,
    /// Illuminance, lx (≥ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light_lux: Option<f64>,
    /// The sensor, e.g. `BME280`.
    pub sensor_type: String,
    /// The node's verdict on the reading.
    pub quality: Quality,
    /// The sensor's values before conversion, when the node sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_values: Option<RawValues>,
    /// The firmware the node runs, when it reports it (the node list shows the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
}

/// A reading as it arrives (JSON or CSV): every field optional and the timestamp still text, so
/// that each problem can be named by [`RawReading::validate`] instead of failing the parse.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RawReading {
    /// See [`SensorReading::node_id`].
    #[serde(default)]
    pub node_id: Option<String>,
    /// See [`SensorReading::seq`].
    #[serde(default)]
    pub seq: Option<i64>,
    /// RFC 3339 text.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// See [`SensorReading::temperature_kelvin`].
    #[serde(default)]
    pub temperature_kelvin: Option<f64>,
    /// See [`SensorReading::humidity_percent`].
    #[serde(default)]
    pub humidity_percent: Option<f64>,
    /// See [`SensorReading::pressure_pa`].
    #[serde(default)]
    pub pressure_pa: Option<f64>,
    /// See [`SensorReading::light_lux`].
    #[serde(default)]
    pub light_lux: Option<f64>,
    /// Defaults to `unknown` when absent.
    #[serde(default)]
    pub sensor_type: Option<String>,
    /// Defaults to `good` when absent.
    #[serde(default)]
    pub quality: Option<String>,
    /// See [`SensorReading::raw_values`].
    #[serde(default)]
    pub raw_values: Option<RawValues>,
    /// The API specification's single raw value: the temperature before conversion (°C), kept
    /// as `raw_values.temperature` when `raw_values` does not give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<f64>,
    /// See [`SensorReading::firmware_version`] (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
}

impl RawReading {
    /// Parses one JSON object; a syntax or type error is a `PARSE_ERROR` rejection.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Rejection> {
        serde_json::from_slice(bytes).map_err(|e| Rejection::new(Reason::ParseError, e.to_string()))
    }

    /// Checks every field against the rules of [`crate::validate`] (timestamps more than five
    /// minutes after `now` are rejected) and returns the typed reading.
    pub fn validate(self, now: DateTime<Utc>) -> Result<SensorReading, Rejection> {
        let node_id = self.node_id.filter(|s| !s.is_empty());
        let Some(node_id) = node_id else {
            return Err(Rejection::new(Reason::MissingField, "node_id is missing"));
        };
        let with_node = |r: Rejection| r.for_node(&node_id);
        let Some(ts) = self.timestamp.as_deref().filter(|s| !s.trim().is_empty()) else {
            return Err(with_node(Rejection::new(
                Reason::MissingField,
                "timestamp is missing",
            )));
        };
        let timestamp = parse_timestamp(ts).map_err(with_node)?;
        let Some(temperature_kelvin) = self.temperature_kelvin else {
            return Err(with_node(Rejection::new(
                Reason::MissingField,
                "temperature_kelvin is missing",
            )));
        };
        let quality = match self.quality.as_deref().map(str::trim) {
            None | Some("") => Quality::Good,
            Some(q) => Quality::parse(q).ok_or_else(|| {
                with_node(Rejection::new(
                    Reason::ParseError,
                    format!("quality {q:?} is not one of good, fair, poor, invalid"),
                ))
            })?,
        };
        let firmware_version = match self.firmware_version {
            Some(v) if v.chars().count() > 64 => {
                return Err(with_node(Rejection::new(
                    Reason::ParseError,
                    "firmware_version is longer than 64 characters",
                )))
            }
            v => v.filter(|v| !v.is_empty()),
        };
        let reading = SensorReading {
            node_id,
            seq: self.seq,
            timestamp,
            temperature_kelvin,
            humidity_percent: self.humidity_percent,
            pressure_pa: self.pressure_pa,
            light_lux: self.light_lux,
            sensor_type: self
                .sensor_type
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".to_string()),
            quality,
            raw_values: match (self.raw_values, self.raw_value) {
                (Some(v), Some(t)) if v.temperature.is_none() => Some(RawValues {
                    temperature: Some(t),
                    ..v
                }),
                (None, Some(t)) => Some(RawValues {
                    temperature: Some(t),
                    ..RawValues::default()
                }),
                (v, _) => v,
            },
            firmware_version,
        };
        check_reading(&reading, now).map_err(|r| r.for_node(&reading.node_id))?;
        Ok(reading)
    }
}

/// Parses an RFC 3339 timestamp with an explicit zone (`Z` or an offset) into UTC. Text without
/// a zone is ambiguous and rejected with `INVALID_TIMESTAMP`.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, Rejection> {
    if let Some(t) = parse_utc_fast(s.trim_ascii().as_bytes()) {
        return Ok(t);
    }
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Rejection::new(
                Reason::InvalidTimestamp,
                format!("timestamp {s:?} is not RFC 3339 with a zone: {e}"),
            )
        })
}

/// The common form `YYYY-MM-DDTHH:MM:SS[.f…]Z` (up to 9 fraction digits) without chrono's
/// general parser, which was a tenth of a replay's parsing. `None` for anything else, which
/// then takes the general path; a test checks both agree.
fn parse_utc_fast(s: &[u8]) -> Option<DateTime<Utc>> {
    const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
        || s[s.len() - 1] != b'Z'
    {
        return None;
    }
    let mut d = [0i64; 14];
    for (k, &p) in DIGITS.iter().enumerate() {
        let v = s[p].wrapping_sub(b'0');
        if v > 9 {
            return None;
        }
        d[k] = i64::from(v);
    }
    let year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3];
    let (month, day) = (d[4] * 10 + d[5], d[6] * 10 + d[7]);
    let (hour, minute, second) = (d[8] * 10 + d[9], d[10] * 10 + d[11], d[12] * 10 + d[13]);
    let mut nanos = 0u32;
    let end = s.len() - 1;
    if end != 19 {
        let frac = &s[20..end];
        if s[19] != b'.' || frac.is_empty() || frac.len() > 9 {
            return None;
        }
        for &c in frac {
            let v = c.wrapping_sub(b'0');
            if v > 9 {
                return None;
            }
            nanos = nanos * 10 + u32::from(v);
        }
        nanos *= 10u32.pow(9 - frac.len() as u32);
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    DateTime::from_timestamp(days * 86_400 + hour * 3600 + minute * 60 + second, nanos)
}

/// Formats a timestamp as RFC 3339 UTC with microseconds, e.g. `2025-07-01T05:00:00.000000Z`.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    let mut buf = [0u8; TIMESTAMP_LEN];
    match write_timestamp(t, &mut buf) {
        Some(text) => text.to_owned(),
        None => t.to_rfc3339_opts(SecondsFormat::Micros, true),
    }
}

/// The length of [`format_timestamp`]'s text for years 0–9999.
const TIMESTAMP_LEN: usize = 27;

/// [`format_timestamp`] into `buf`, without allocating: every state and reading sent out
/// (Kafka, MQTT, WebSocket) carries one, and chrono's formatter builds a `String` through
/// `fmt` machinery. `None` for what chrono writes differently: years outside 0–9999 and leap
/// seconds.
fn write_timestamp<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; TIMESTAMP_LEN]) -> Option<&'b str> {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    fn digits(out: &mut [u8], mut v: u32) {
        for b in out.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    *buf = *b"0000-00-00T00:00:00.000000Z";
    digits(&mut buf[0..4], year as u32);
    digits(&mut buf[5..7], t.month());
    digits(&mut buf[8..10], t.day());
    digits(&mut buf[11..13], t.hour());
    digits(&mut buf[14..16], t.minute());
    digits(&mut buf[17..19], t.second());
    digits(&mut buf[20..26], nanos / 1_000);
    std::str::from_utf8(buf).ok()
}

/// serde for timestamps as RFC 3339 UTC text.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes [`super::format_timestamp`].
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; super::TIMESTAMP_LEN];
        match super::write_timestamp(t, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&super::format_timestamp(t)),
        }
    }

    /// Reads RFC 3339 with a zone.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_timestamp(&s).map_err(|r| serde::de::Error::custom(r.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// chrono's own formatter is the reference; the cases cover every field's width, the
    /// ends of the range written here, times before 1970, sub-microsecond nanoseconds (cut,
    /// not rounded, as chrono does), a leap second and years chrono writes with a sign.
    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        let mut cases: Vec<DateTime<Utc>> = vec![
            Utc.with_ymd_and_hms(2025, 7, 1, 5, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 999_999_999).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 1_000).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 999).unwrap(),
            // A leap second, as chrono represents it.
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        // And a spread of instants over four centuries.
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = x.rem_euclid(400 * 365 * 86_400) - 200 * 365 * 86_400;
            let nanos = (x >> 20).rem_euclid(1_000_000_000) as u32;
            cases.push(DateTime::from_timestamp(secs, nanos).unwrap());
        }
        for t in cases {
            let expected = t.to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(format_timestamp(&t), expected);
            let json = serde_json::to_string(&Wrapped(t)).unwrap();
            assert_eq!(json, format!("\"{expected}\""));
        }
    }

    #[derive(serde::Serialize)]
    struct Wrapped(#[serde(with = "rfc3339")] DateTime<Utc>);

    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono() {
        let cases = [
            "2025-07-01T05:00:00Z",
            "2025-07-01T05:00:00.1Z",
            "2025-07-01T05:00:00.123456Z",
            "2025-07-01T05:00:00.123456789Z",
            "2024-02-29T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.5Z",
            // Not taken by the fast path, or invalid: both must agree anyway.
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-07-01T24:00:00Z",
            "2025-07-01T05:60:00Z",
            "2025-07-01T05:00:60Z",
            "2025-07-01T05:00:00.Z",
            "2025-07-01T05:00:00.1234567890Z",
            "2025-07-01T05:00:00+02:00",
            "2025-07-01t05:00:00z",
            "2025-07-01 05:00:00Z",
            "2025-07-01T05:00:00",
            "2025-7-01T05:00:00Z",
            "2025-07-01T05:0a:00Z",
            "+2025-07-01T05:00:00Z",
        ];
        for c in cases {
            let chrono = DateTime::parse_from_rfc3339(c)
                .ok()
                .map(|t| t.with_timezone(&Utc));
            assert_eq!(parse_timestamp(c).ok(), chrono, "{c}");
            if let Some(fast) = parse_utc_fast(c.as_bytes()) {
                assert_eq!(Some(fast), chrono, "fast path on {c}");
            }
        }
        assert!(parse_utc_fast(b"2025-07-01T05:00:00.5Z").is_some());
        // Every day of four centuries (leap years, century rules) through the fast path.
        use chrono::Datelike;
        let mut day = chrono::NaiveDate::from_ymd_opt(1899, 12, 25).unwrap();
        while day.year() < 2301 {
            let text = format!("{}T13:14:15.25Z", day.format("%Y-%m-%d"));
            let fast = parse_utc_fast(text.as_bytes()).expect("fast path");
            assert_eq!(fast, DateTime::parse_from_rfc3339(&text).unwrap(), "{text}");
            day = day.succ_opt().unwrap();
        }
    }

    fn now() -> DateTime<Utc> {
        parse_timestamp("2025-07-02T00:00:00Z").unwrap()
    }

    #[test]
    fn the_api_example_parses_and_round_trips() {
        // The body of POST /v1/sensors/temperature in the API specification, plus seq.
        let json = br#"{"node_id":"pico_001","seq":7,"timestamp":"2025-07-01T12:00:00.123Z",
            "temperature_kelvin":298.65,"sensor_type":"BME280","quality":"good",
            "raw_values":{"temperature":25.5}}"#;
        let r = RawReading::from_json(json)
            .unwrap()
            .validate(now())
            .unwrap();
        assert_eq!(r.node_id, "pico_001");
        assert_eq!(r.seq, Some(7));
        assert_eq!(r.timestamp.timestamp_millis() % 1000, 123);
        assert_eq!(r.raw_values.as_ref().unwrap().temperature, Some(25.5));
        let back: SensorReading =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn offsets_are_converted_to_utc_and_naive_times_rejected() {
        let t = parse_timestamp("2025-07-01T07:00:00+02:00").unwrap();
        assert_eq!(format_timestamp(&t), "2025-07-01T05:00:00.000000Z");
        let e = parse_timestamp("2025-07-10 12:00").unwrap_err();
        assert_eq!(e.reason, Reason::InvalidTimestamp);
    }

    #[test]
    fn each_missing_field_is_named() {
        for (json, what) in [
            (
                &br#"{"timestamp":"2025-07-01T00:00:00Z","temperature_kelvin":300}"#[..],
                "node_id",
            ),
            (br#"{"node_id":"a","temperature_kelvin":300}"#, "timestamp"),
            (
                br#"{"node_id":"a","timestamp":"2025-07-01T00:00:00Z"}"#,
                "temperature_kelvin",
            ),
        ] {
            let e = RawReading::from_json(json)
                .unwrap()
                .validate(now())
                .unwrap_err();
            assert_eq!(e.reason, Reason::MissingField);
            assert!(e.message.contains(what), "{}", e.message);
        }
    }

    #[test]
    fn wrong_types_are_parse_errors() {
        let e =
            RawReading::from_json(br#"{"node_id":"a","temperature_kelvin":"warm"}"#).unwrap_err();
        assert_eq!(e.reason, Reason::ParseError);
        assert!(RawReading::from_json(b"{\"node_id\":").is_err());
    }
}
