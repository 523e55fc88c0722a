//! Event, state and storage types shared by every crate of KaiABC Stream: serde JSON in the API
//! specification's field names, validation with reason codes, the lake's Arrow schemas and the
//! JSON Schemas of the event types.

pub mod control;
pub mod dead_letter;
pub mod fleet;
pub mod json_schema;
pub mod lake;
pub mod phase_shift;
pub mod reading;
pub mod registry;
pub mod rhythm;
pub mod state;
pub mod validate;

pub use control::{
    AtpaseConstraint, Calibration, ControlAction, ControlCommand, EntrainmentPatch, FilterPatch,
    MappingFunction, MappingPatch, ModulationFunction, PhaseShiftPlan, SimulationPatch,
    StructuralCoupling, TemperatureDependence,
};
pub use dead_letter::DeadLetter;
pub use fleet::{AlertRow, FleetSnapshot};
pub use lake::{Checkpoint, FilterSnapshot, LakeRow, NodeCheckpointEntry, ReadingRow, Table};
pub use phase_shift::{PhaseShiftOutcome, PhaseShiftReport};
pub use reading::{
    format_timestamp, parse_timestamp, Quality, RawReading, RawValues, SensorReading,
};
pub use registry::{HardwareType, Runtime, SensorKind};
pub use rhythm::{Metric, RhythmWindow};
pub use state::{OscillatorState, StateVariables};
pub use validate::{Reason, Rejection};
