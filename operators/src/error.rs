//! Typed errors of the science core, each with a stable machine-readable code.

use thiserror::Error;

/// Invalid model or ETF parameters, or a state outside the physical domain.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelError {
    /// A parameter is out of its allowed range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Parameter name as the API spells it.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The parameters do not produce a sustained oscillation.
    #[error("no oscillation: {reason}")]
    NoOscillation {
        /// What was observed.
        reason: String,
    },
    /// A state is outside the physical domain.
    #[error("invalid state: {reason}")]
    InvalidState {
        /// What is wrong with it.
        reason: String,
    },
}

impl ModelError {
    /// Stable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::InvalidParameter { .. } => "INVALID_PARAMETER",
            ModelError::InvalidState { .. } => "INVALID_STATE",
            ModelError::NoOscillation { .. } => "NO_OSCILLATION",
        }
    }
}

/// Failures of the ODE integration. All map to the API's `ODE_INSTABILITY` code.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OdeError {
    /// The state became NaN or infinite.
    #[error("ODE_INSTABILITY: non-finite state at t = {t} h")]
    NonFinite {
        /// Model time (h) of the failed step.
        t: f64,
    },
    /// A concentration went negative by more than the tolerance.
    #[error("ODE_INSTABILITY: {what} = {value} went below zero beyond tolerance at t = {t} h")]
    Negative {
        /// Model time (h).
        t: f64,
        /// Which variable.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// The step size fell below the configured minimum.
    #[error("ODE_INSTABILITY: step size {h} h below the minimum {min} h at t = {t} h")]
    StepTooSmall {
        /// Model time (h).
        t: f64,
        /// The step size that would be needed.
        h: f64,
        /// The configured minimum.
        min: f64,
    },
    /// The integrator was asked to go backwards in time.
    #[error("cannot integrate backwards from t = {from} h to t = {to} h")]
    Backwards {
        /// Current time (h).
        from: f64,
        /// Requested time (h).
        to: f64,
    },
    /// Configuration out of range.
    #[error("invalid integrator configuration: {0}")]
    InvalidConfig(String),
}

impl OdeError {
    /// Stable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            OdeError::NonFinite { .. }
            | OdeError::Negative { .. }
            | OdeError::StepTooSmall { .. } => "ODE_INSTABILITY",
            OdeError::Backwards { .. } => "OUT_OF_ORDER",
            OdeError::InvalidConfig(_) => "INVALID_PARAMETER",
        }
    }
}

/// Any failure of the clock (model, integration).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ClockError {
    /// Invalid parameters or state.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Integration failure.
    #[error(transparent)]
    Ode(#[from] OdeError),
}

impl ClockError {
    /// Stable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ClockError::Model(e) => e.code(),
            ClockError::Ode(e) => e.code(),
        }
    }
}
