//! The KaiABC science core: the clock model, its temperature transfer, the integrator, the per-node
//! Kalman filter, the clock outputs, the phase response curve and rhythm analysis.
//!
//! Everything here is pure and deterministic: no I/O, no async, no global state, so the same
//! inputs give bit-identical outputs in batch replay and in live mode, alone or in a batch.
//!
//! ```
//! use kaiabc_operators::{Clock, ClockConfig, InitialCondition, OutputMapping};
//!
//! // A node's clock, started at CT 0 on the 30 °C limit cycle.
//! let mut clock = Clock::new(ClockConfig::default(), 0.0, 303.15, InitialCondition::CircadianTime(0.0))?;
//! // Readings arrive: the temperature is linear between them and the clock stops on each.
//! for hour in 1..=48 {
//!     let kelvin = 303.15 + 5.0 * (std::f64::consts::TAU * hour as f64 / 24.0).sin();
//!     clock.advance_to(hour as f64, kelvin)?;
//! }
//! let s = clock.snapshot();
//! assert!((0.0..24.0).contains(&s.circadian_time));
//! let duty = OutputMapping::default().pwm(s.koa_metric);
//! println!("CT {:.2}, KOA {:.2}, PWM {duty}", s.circadian_time, s.koa_metric);
//! # Ok::<(), kaiabc_operators::ClockError>(())
//! ```

pub mod clock;
pub mod dataflow;
pub mod dedup;
pub mod error;
pub mod etf;
pub mod fleet;
pub mod integrator;
pub mod kalman;
pub mod limit_cycle;
pub mod model;
pub mod node;
pub mod outputs;
pub mod phase_shift;
pub mod prc;
pub mod rhythm;
pub mod settings;
pub mod system;
pub mod temperature;

pub use clock::{Clock, ClockConfig, ClockSnapshot, InitialCondition};
pub use error::{ClockError, ModelError, OdeError};
pub use etf::{Etf, EtfPreset};
pub use integrator::{Dopri5, IntegratorConfig, StepStats};
pub use limit_cycle::LimitCycle;
pub use model::{Concentrations, KaiParams, KaiState};
pub use outputs::OutputMapping;
