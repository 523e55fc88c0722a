//! JSON Schema documents of the event types, generated from the Rust types with `schemars`
//! and checked in under `schemas/json/` for consumers of the topics and the API.

use schemars::{schema_for, Schema};

use crate::{
    AlertRow, ControlCommand, DeadLetter, FleetSnapshot, OscillatorState, PhaseShiftReport,
    RhythmWindow, SensorReading,
};

/// `(file name, schema)` for every event type.
pub fn documents() -> Vec<(&'static str, Schema)> {
    vec![
        ("sensor_reading.schema.json", schema_for!(SensorReading)),
        ("oscillator_state.schema.json", schema_for!(OscillatorState)),
        ("rhythm_window.schema.json", schema_for!(RhythmWindow)),
        ("dead_letter.schema.json", schema_for!(DeadLetter)),
        ("control_command.schema.json", schema_for!(ControlCommand)),
        (
            "phase_shift_report.schema.json",
            schema_for!(PhaseShiftReport),
        ),
        ("fleet_snapshot.schema.json", schema_for!(FleetSnapshot)),
        ("alert_row.schema.json", schema_for!(AlertRow)),
    ]
}

/// A schema as the checked-in text: pretty JSON with a final newline.
pub fn render(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("a schema serialises");
    s.push('\n');
    s
}
