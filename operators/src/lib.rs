//! The KaiABC science core: the clock model, its temperature transfer, the integrator, the per-node
//! Kalman filter, the clock outputs, the phase response curve and rhythm analysis.
//!
//! Everything here is pure and deterministic: no I/O, no async, no global state, so the same
//! inputs give bit-identical outputs in batch replay and in live mode.

pub mod clock;
pub mod error;
pub mod etf;
pub mod integrator;
pub mod kalman;
pub mod limit_cycle;
pub mod model;
pub mod outputs;
pub mod prc;
pub mod rhythm;
pub mod system;
pub mod temperature;

pub use clock::{Clock, ClockConfig, ClockSnapshot, InitialCondition};
pub use error::{ClockError, ModelError, OdeError};
pub use etf::{Etf, EtfPreset};
pub use integrator::{Dopri5, IntegratorConfig, StepStats};
pub use limit_cycle::LimitCycle;
pub use model::{Concentrations, KaiParams, KaiState};
pub use outputs::OutputMapping;
