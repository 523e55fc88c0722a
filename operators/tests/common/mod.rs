//! Builders shared by the operators' integration tests.

use chrono::{DateTime, Utc};
use kaiabc_schemas::{Quality, SensorReading};

/// A good BME280 temperature reading of `node`, without humidity or pressure.
pub fn reading(node: &str, seq: i64, timestamp: DateTime<Utc>, kelvin: f64) -> SensorReading {
    SensorReading {
        node_id: node.into(),
        seq: Some(seq),
        timestamp,
        temperature_kelvin: kelvin,
        humidity_percent: None,
        pressure_pa: None,
        light_lux: None,
        sensor_type: "BME280".into(),
        quality: Quality::Good,
        raw_values: None,
        firmware_version: None,
    }
}
