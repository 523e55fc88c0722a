//! The KaiABC science core: the clock model, its temperature transfer, the integrator, the per-node
//! Kalman filter, the clock outputs, the phase response curve and rhythm analysis.
//!
//! Everything here is pure and deterministic: no I/O, no async, no global state, so the same
//! inputs give bit-identical outputs in batch replay and in live mode.

pub mod kalman;
pub mod rhythm;
