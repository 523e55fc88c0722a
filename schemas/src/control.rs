//! Control commands: actions on a node's clock (reset, pause, resume, a manual output
//! override) that travel in the node's input stream with its readings, so that a replay of the
//! same stream reproduces them.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reading::rfc3339;

/// One command for one node. On the wire it is a JSON object with a `control` field naming the
/// action, e.g. `{"control":"manual_override","pwm":128,"node_id":"pico_001",
/// "timestamp":"2026-01-05T10:00:00Z"}`: a record with a `control` field in any JSONL input
/// (MQTT, Kafka, a replayed file) is a command, not a reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ControlCommand {
    /// The node, `^[A-Za-z0-9_-]{1,64}$`.
    pub node_id: String,
    /// When it was issued; in replays, readings are ordered around it by this time.
    #[serde(with = "rfc3339")]
    #[schemars(with = "String")]
    pub timestamp: DateTime<Utc>,
    /// Who issued it (the API token's subject), for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
    /// What to do.
    #[serde(flatten)]
    pub action: ControlAction,
}

/// What a [`ControlCommand`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum ControlAction {
    /// The clock and the Kalman filter start again from the initial condition with the next
    /// reading (duplicate keys and rhythm bins are kept).
    Reset,
    /// Readings are recorded but no longer move the clock, which holds its state.
    Pause,
    /// The clock continues from the state it held, as if the paused time had not passed.
    Resume,
    /// The node's PWM output is held at `pwm` (0–255) until cleared with `pwm: null`.
    ManualOverride {
        /// The duty to hold, or `None` to follow the clock again.
        pwm: Option<u8>,
    },
}

impl ControlCommand {
    /// Whether a JSON record is a control command (it has a top-level `control` field), without
    /// parsing it in full.
    pub fn is_control(record: &[u8]) -> bool {
        memchr::memmem::find(record, b"\"control\"").is_some()
            && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(record)
                .is_ok_and(|m| m.contains_key("control"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_and_write_their_wire_form() {
        let json = r#"{"control":"manual_override","pwm":128,"node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#;
        let c: ControlCommand = serde_json::from_str(json).unwrap();
        assert_eq!(c.action, ControlAction::ManualOverride { pwm: Some(128) });
        assert_eq!(c.node_id, "p1");
        let back: ControlCommand =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let reset: ControlCommand = serde_json::from_str(
            r#"{"control":"reset","node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(reset.action, ControlAction::Reset);
        assert!(ControlCommand::is_control(json.as_bytes()));
        assert!(!ControlCommand::is_control(
            br#"{"node_id":"p1","note":"\"control\""}"#
        ));
        assert!(serde_json::from_str::<ControlCommand>(
            r#"{"control":"explode","node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ControlCommand>(
            r#"{"control":"manual_override","pwm":300,"node_id":"p1","timestamp":"2026-01-05T10:00:00Z"}"#
        )
        .is_err());
    }
}
