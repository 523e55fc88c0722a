//! An event that was not accepted, kept with its raw payload so nothing is lost.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Reason, Rejection};

/// A rejected event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// When it was received. In a replay this is the newest event time read from the same file
    /// before the line (the file's modification time before any), not the wall clock, so
    /// replays give identical rows.
    #[serde(with = "crate::reading::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub received_at: DateTime<Utc>,
    /// Where it came from, e.g. `file:datasets/x.csv:17`, `mqtt:kaiabc/sensors/pico_001`,
    /// `http:/v1/sensors/batch`.
    pub source: String,
    /// The reason code.
    pub reason: Reason,
    /// What exactly was wrong.
    pub message: String,
    /// The event as received (invalid UTF-8 replaced by U+FFFD).
    pub payload: String,
    /// The node the event claimed to come from, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl DeadLetter {
    /// A dead letter for a rejection of `payload` from `source`.
    pub fn new(
        received_at: DateTime<Utc>,
        source: impl Into<String>,
        payload: &[u8],
        rejection: Rejection,
    ) -> Self {
        Self {
            received_at,
            source: source.into(),
            reason: rejection.reason,
            message: rejection.message,
            payload: String::from_utf8_lossy(payload).into_owned(),
            node_id: rejection.node_id,
        }
    }
}
