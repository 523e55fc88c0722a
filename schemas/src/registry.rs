//! What the node registry knows of a node beside its key: the API specification's hardware,
//! runtime and sensor vocabulary.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The board a node runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HardwareType {
    /// Raspberry Pi Pico (W), MicroPython.
    RaspberryPiPico,
    /// ELM11, Lua.
    Elm11,
}

impl HardwareType {
    /// The runtime our firmware for this board uses.
    pub fn runtime(self) -> Runtime {
        match self {
            Self::RaspberryPiPico => Runtime::Micropython,
            Self::Elm11 => Runtime::Lua,
        }
    }

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RaspberryPiPico => "raspberry_pi_pico",
            Self::Elm11 => "elm11",
        }
    }
}

/// The interpreter a node's firmware runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// MicroPython (the Pico firmware).
    Micropython,
    /// Lua 5.1–5.3 (the ELM11 firmware).
    Lua,
}

/// A quantity a node measures.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Air temperature (BME280).
    Temperature,
    /// Relative humidity (BME280).
    Humidity,
    /// Barometric pressure (BME280).
    Pressure,
    /// Illuminance.
    Light,
}

impl SensorKind {
    /// What a BME280 measures: the default of a node registered without `sensor_types`.
    pub const BME280: [SensorKind; 3] = [Self::Temperature, Self::Humidity, Self::Pressure];
}

/// A node id on the wire, `^[A-Za-z0-9_-]{1,64}$` (checked where it is used; the type carries
/// the pattern into JSON schemas).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct NodeId(#[schemars(pattern(crate::validate::NODE_ID_PATTERN))] pub String);

impl std::ops::Deref for NodeId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}
