//! A node's configuration in the API specification's shape (`/v1/config/templates`,
//! `/v1/config/validate`), mapped onto the `config.json` our firmwares read (Pico:
//! `firmware/pico/config.py`, ELM11: `firmware/elm11/config.lua`): the same keys, defaults and
//! limits, so a configuration that passes here boots on the node.

use serde_json::{json, Map, Value};

use kaiabc_schemas::HardwareType;

/// BME280 oversampling settings the drivers take (datasheet table 23; 0 would skip a reading,
/// which the firmware does not do).
const OVERSAMPLING: [u64; 5] = [1, 2, 4, 8, 16];
/// IIR filter coefficients (datasheet table 28).
const FILTER: [u64; 5] = [0, 2, 4, 8, 16];
/// Normal-mode standby times, ms (datasheet table 27).
const STANDBY_MS: [f64; 8] = [0.5, 62.5, 125.0, 250.0, 500.0, 1000.0, 10.0, 20.0];

/// The firmware's own keys and defaults for a board.
fn firmware_defaults(hw: HardwareType) -> Value {
    let mut c = json!({
        "node_id": "pico_001",
        "transport": "mqtt",
        "mqtt_host": "192.168.1.10",
        "mqtt_port": 1883,
        "server_url": "http://192.168.1.10:8000",
        "sample_interval_s": 60,
        "buffer_capacity": 1440,
        "output_stale_s": 180,
        "bme280": {"address": 0x76, "mode": "forced", "osrs_t": 1, "osrs_p": 1, "osrs_h": 1,
            "filter": 0, "standby_ms": 1000},
        "pwm": {"pin": 15, "freq": 1000},
    });
    match hw {
        HardwareType::RaspberryPiPico => {
            c["wifi"] = json!({"ssid": "lab-wifi", "password": "change-me"});
            c["i2c"] = json!({"id": 0, "sda": 4, "scl": 5, "freq": 400000});
            c["watchdog_ms"] = json!(8000);
        }
        HardwareType::Elm11 => {
            c["node_id"] = json!("elm11_001");
            c["pwm"] = json!({"pin": 5, "freq": 1000});
            c["buffer_path"] = json!("/flash/kaiabc_buffer.jsonl");
        }
    }
    c
}

/// `GET /v1/config/templates`: the specification's template for a board, each value the
/// firmware's default, with the firmware's own `config.json` beside it.
pub(super) fn template(hw: HardwareType, kalman: &kaiabc_operators::kalman::KalmanParams) -> Value {
    let f = firmware_defaults(hw);
    let b = &f["bme280"];
    let per_var = |v: [f64; 3]| json!({"temperature": v[0], "humidity": v[1], "pressure": v[2]});
    json!({
        "hardware_type": hw,
        "runtime": hw.runtime(),
        "templates": {
            "sensor_config": {
                "bme280": {
                    "i2c_address": format!("0x{:02x}", b["address"].as_u64().unwrap_or(0x76)),
                    "mode": b["mode"],
                    "oversampling": {"temperature": b["osrs_t"], "humidity": b["osrs_h"],
                        "pressure": b["osrs_p"]},
                    "filter_coefficient": b["filter"],
                    "standby_time": b["standby_ms"],
                },
                // The filter runs on the server, per node (`PUT /v1/filter/parameters`).
                "kalman_filter": {
                    "process_noise": per_var(kalman.process_noise),
                    "measurement_noise": per_var(kalman.measurement_noise),
                    "runs_on": "server",
                },
            },
            "network_config": {
                "wifi": match hw {
                    HardwareType::RaspberryPiPico => json!({"ssid": f["wifi"]["ssid"],
                        "security": "wpa2", "reconnect_attempts": 0,
                        "reconnect_delay_ms": 2000}),
                    HardwareType::Elm11 => Value::Null,
                },
                "mqtt": {"broker": f["mqtt_host"], "port": f["mqtt_port"], "tls": false,
                    "keepalive_seconds": 120, "qos": 1},
            },
            "oscillator_config": {
                "update_interval_ms": f["sample_interval_s"].as_u64().unwrap_or(60) * 1000,
                "pwm_frequency_hz": f["pwm"]["freq"],
                "buffer_size": f["buffer_capacity"],
                // Offline, the node keeps its output going from the last period and phase.
                "fallback_mode": "local_pwm",
            },
        },
        "firmware_config": f,
        "notes": {
            "reconnect_attempts": "0: the firmware retries for ever, its delay doubling from \
                reconnect_delay_ms up to 300 s (firmware/pico/transport.py)",
            "tls": "the firmwares connect without TLS",
        },
    })
}

/// The body of `POST /v1/config/validate` (documentation; the handler reads it as JSON and
/// reports every problem rather than stopping at the first).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(super) struct NodeConfigBody {
    /// The node the configuration is for.
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    pub node_id: Option<String>,
    /// `{sensor: {bme280, kalman_filter}, network: {wifi, mqtt}, oscillator: {...}}`.
    pub config: Option<serde_json::Map<String, Value>>,
}

/// One finding of a check.
struct Findings {
    errors: Vec<Value>,
    warnings: Vec<Value>,
    optimizations: Vec<Value>,
    firmware: Map<String, Value>,
}

impl Findings {
    fn error(&mut self, field: &str, message: String) {
        self.errors
            .push(json!({"field": field, "message": message}));
    }
    fn warn(&mut self, field: &str, message: &str, suggestion: &str) {
        self.warnings
            .push(json!({"field": field, "message": message, "suggestion": suggestion}));
    }
    fn optimize(&mut self, field: &str, message: &str) {
        self.optimizations
            .push(json!({"field": field, "message": message}));
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// `POST /v1/config/validate`: a node's configuration in the specification's shape
/// (`{node_id, config: {sensor, network, oscillator}}`) checked against what the firmware
/// reads; the `config.json` keys it becomes are in `firmware_config`.
pub(super) fn validate(body: &Value) -> Value {
    let mut f = Findings {
        errors: Vec::new(),
        warnings: Vec::new(),
        optimizations: Vec::new(),
        firmware: Map::new(),
    };
    if let Some(node) = body.get("node_id").filter(|n| !n.is_null()) {
        match node.as_str() {
            Some(n) if crate::auth::valid_node_id(n) => {
                f.firmware.insert("node_id".into(), json!(n));
            }
            _ => f.error("node_id", "1-64 characters of A-Z a-z 0-9 _ -".into()),
        }
    }
    let empty = json!({});
    let cfg = body.get("config").unwrap_or(&empty);
    let known = ["sensor", "network", "oscillator"];
    if let Some(o) = cfg.as_object() {
        for k in o.keys().filter(|k| !known.contains(&k.as_str())) {
            f.warn(
                &format!("config.{k}"),
                "not read by the firmware",
                "remove it",
            );
        }
    } else {
        f.error(
            "config",
            "must be an object {sensor, network, oscillator}".into(),
        );
    }
    sensor(&mut f, &cfg["sensor"]);
    network(&mut f, &cfg["network"]);
    oscillator(&mut f, &cfg["oscillator"]);
    json!({
        "valid": f.errors.is_empty(),
        "errors": f.errors,
        "warnings": f.warnings,
        "optimizations": f.optimizations,
        "firmware_config": f.firmware,
    })
}

fn sensor(f: &mut Findings, s: &Value) {
    let b = &s["bme280"];
    if b.is_null() {
        return;
    }
    let mut out = Map::new();
    if let Some(a) = b.get("i2c_address") {
        let addr = match a {
            Value::String(t) => u64::from_str_radix(t.trim_start_matches("0x"), 16).ok(),
            v => v.as_u64(),
        };
        match addr {
            Some(x @ (0x76 | 0x77)) => {
                out.insert("address".into(), json!(x));
            }
            _ => f.error(
                "sensor.bme280.i2c_address",
                format!("a BME280 answers at 0x76 or 0x77, got {a}"),
            ),
        }
    }
    if let Some(m) = b.get("mode") {
        match m.as_str() {
            Some(mode @ ("forced" | "normal")) => {
                out.insert("mode".into(), json!(mode));
                if mode == "normal" {
                    f.warn(
                        "sensor.bme280.mode",
                        "normal mode measures continuously between readings",
                        "forced mode draws less power at one reading a minute",
                    );
                }
            }
            _ => f.error(
                "sensor.bme280.mode",
                format!("the firmware runs the sensor forced or normal, got {m}"),
            ),
        }
    }
    for (name, key) in [
        ("temperature", "osrs_t"),
        ("humidity", "osrs_h"),
        ("pressure", "osrs_p"),
    ] {
        let field = format!("sensor.bme280.oversampling.{name}");
        let Some(v) = b.get("oversampling").and_then(|o| o.get(name)) else {
            continue;
        };
        match v.as_u64().filter(|x| OVERSAMPLING.contains(x)) {
            Some(x) => {
                out.insert(key.into(), json!(x));
                if x > 2 {
                    f.warn(
                        &field,
                        "high oversampling lengthens each measurement and raises power use",
                        "consider 1 or 2 for battery-powered nodes: the server's Kalman filter \
                         smooths the noise",
                    );
                }
            }
            None => f.error(&field, format!("one of 1, 2, 4, 8, 16, got {v}")),
        }
    }
    if let Some(v) = b.get("filter_coefficient") {
        match v.as_u64().filter(|x| FILTER.contains(x)) {
            Some(x) => {
                out.insert("filter".into(), json!(x));
            }
            None => f.error(
                "sensor.bme280.filter_coefficient",
                format!("one of 0, 2, 4, 8, 16, got {v}"),
            ),
        }
    }
    if let Some(v) = b.get("standby_time") {
        match num(v).filter(|x| STANDBY_MS.contains(x)) {
            Some(x) => {
                out.insert("standby_ms".into(), json!(x));
            }
            None => f.error(
                "sensor.bme280.standby_time",
                format!("one of 0.5, 10, 20, 62.5, 125, 250, 500, 1000 ms, got {v}"),
            ),
        }
    }
    if !out.is_empty() {
        f.firmware.insert("bme280".into(), Value::Object(out));
    }
    if s.get("kalman_filter").is_some() {
        f.warn(
            "sensor.kalman_filter",
            "the Kalman filter runs on the server, not on the node",
            "set it with PUT /v1/filter/parameters",
        );
    }
}

fn network(f: &mut Findings, n: &Value) {
    if let Some(w) = n.get("wifi").filter(|w| !w.is_null()) {
        let ssid = w.get("ssid").and_then(Value::as_str).unwrap_or_default();
        if ssid.is_empty() || ssid.len() > 32 {
            f.error("network.wifi.ssid", "1-32 bytes".into());
        }
        let password = w.get("password").and_then(Value::as_str);
        match (w.get("security").and_then(Value::as_str), password) {
            (Some("open"), _) => f.warn(
                "network.wifi.security",
                "an open network sends the node's readings unencrypted",
                "use WPA2",
            ),
            (_, Some(p)) if !(8..=63).contains(&p.len()) => f.error(
                "network.wifi.password",
                "a WPA2 passphrase is 8-63 characters".into(),
            ),
            (_, None) => f.error("network.wifi.password", "missing".into()),
            _ => f.optimize("network.wifi", "Wi-Fi credentials validated"),
        }
        f.firmware.insert(
            "wifi".into(),
            json!({"ssid": ssid, "password": password.unwrap_or_default()}),
        );
    }
    if let Some(m) = n.get("mqtt").filter(|m| !m.is_null()) {
        if let Some(b) = m.get("broker").and_then(Value::as_str) {
            f.firmware.insert("mqtt_host".into(), json!(b));
        }
        if let Some(p) = m.get("port") {
            match p.as_u64().filter(|p| (1..=65535).contains(p)) {
                Some(p) => {
                    f.firmware.insert("mqtt_port".into(), json!(p));
                }
                None => f.error("network.mqtt.port", format!("1-65535, got {p}")),
            }
        }
        match m.get("qos").and_then(Value::as_u64) {
            None | Some(1) => {}
            Some(0) => f.warn(
                "network.mqtt.qos",
                "the firmware publishes at QoS 1 (at least once, kept until acknowledged)",
                "leave qos at 1",
            ),
            Some(q) => f.error(
                "network.mqtt.qos",
                format!("the firmware publishes at QoS 1, got {q}"),
            ),
        }
        if m.get("tls").and_then(Value::as_bool) == Some(true) {
            f.warn(
                "network.mqtt.tls",
                "the firmwares connect without TLS",
                "keep the broker on a trusted network, or bridge it",
            );
        }
        f.firmware.insert("transport".into(), json!("mqtt"));
    }
}

fn oscillator(f: &mut Findings, o: &Value) {
    if o.is_null() {
        return;
    }
    if let Some(v) = o.get("update_interval_ms") {
        match num(v).filter(|x| (1000.0..=86_400_000.0).contains(x)) {
            Some(ms) => {
                f.firmware.insert(
                    "sample_interval_s".into(),
                    json!((ms / 1000.0).round() as u64),
                );
                if ms < 60_000.0 {
                    f.warn(
                        "oscillator.update_interval_ms",
                        "readings more often than once a minute add little to a circadian clock",
                        "60000 (one a minute) keeps the rhythm windows well sampled",
                    );
                }
            }
            None => f.error(
                "oscillator.update_interval_ms",
                format!("1000-86400000 (the firmware samples 1 s to 1 day apart), got {v}"),
            ),
        }
    }
    if let Some(v) = o.get("pwm_frequency_hz") {
        match v.as_u64().filter(|x| (1..=1_000_000).contains(x)) {
            Some(hz) => {
                f.firmware.insert("pwm".into(), json!({"freq": hz}));
            }
            None => f.error("oscillator.pwm_frequency_hz", format!("1-1000000, got {v}")),
        }
    }
    if let Some(v) = o.get("buffer_size") {
        match v.as_u64().filter(|x| (1..=100_000).contains(x)) {
            Some(n) => {
                f.firmware.insert("buffer_capacity".into(), json!(n));
            }
            None => f.error("oscillator.buffer_size", format!("1-100000, got {v}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example: valid, with the oversampling warning it shows.
    #[test]
    fn the_specification_s_example_is_valid_with_its_warning() {
        let v = validate(&json!({"node_id": "pico_001", "config": {
            "sensor": {"bme280": {"i2c_address": "0x76",
                "oversampling": {"temperature": 4, "humidity": 4, "pressure": 4}}},
            "network": {"wifi": {"ssid": "MyNetwork", "password": "secret123"}}}}));
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(
            v["warnings"][0]["field"],
            "sensor.bme280.oversampling.temperature"
        );
        assert_eq!(v["optimizations"][0]["field"], "network.wifi");
        assert_eq!(v["firmware_config"]["bme280"]["address"], 0x76);
        assert_eq!(v["firmware_config"]["bme280"]["osrs_t"], 4);
    }

    /// What the firmware would refuse is an error here too (its limits in
    /// `firmware/pico/config.py` and the BME280 datasheet's tables).
    #[test]
    fn what_the_firmware_refuses_is_an_error() {
        let v = validate(&json!({"config": {
            "sensor": {"bme280": {"i2c_address": "0x40", "oversampling": {"pressure": 3},
                "standby_time": 7}},
            "network": {"mqtt": {"port": 70000, "qos": 2}, "wifi": {"ssid": "x",
                "password": "short"}},
            "oscillator": {"update_interval_ms": 10}}}));
        assert_eq!(v["valid"], false);
        let fields: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        for want in [
            "sensor.bme280.i2c_address",
            "sensor.bme280.oversampling.pressure",
            "sensor.bme280.standby_time",
            "network.wifi.password",
            "network.mqtt.port",
            "network.mqtt.qos",
            "oscillator.update_interval_ms",
        ] {
            assert!(fields.contains(&want), "{want} not in {fields:?}");
        }
    }

    /// The template's values are the firmware's defaults.
    #[test]
    fn the_template_holds_the_firmware_s_defaults() {
        let t = template(
            HardwareType::RaspberryPiPico,
            &kaiabc_operators::kalman::KalmanParams::default(),
        );
        let s = &t["templates"]["sensor_config"]["bme280"];
        assert_eq!(s["i2c_address"], "0x76");
        assert_eq!(s["oversampling"]["temperature"], 1);
        assert_eq!(
            t["templates"]["oscillator_config"]["update_interval_ms"],
            60_000
        );
        assert_eq!(t["firmware_config"]["pwm"]["freq"], 1000);
        // Its translation back validates.
        let back = validate(&json!({"config": {"sensor": {"bme280": s},
            "oscillator": t["templates"]["oscillator_config"]}}));
        assert_eq!(back["valid"], true, "{back}");
    }
}
