//! Rhythm analysis of unevenly sampled series: Lomb–Scargle periodogram, cosinor fits and the
//! continuous wavelet transform.
//!
//! [`lomb_scargle`] finds *which* period a series has (and how likely the peak is to be
//! noise); [`cosinor()`] then describes the rhythm at a known period (MESOR, amplitude,
//! acrophase, with confidence intervals). Both take plain `t`/`y` slices, time in hours for our
//! use though the arithmetic is unit-agnostic, and skip rows where either value is NaN or
//! infinite, reporting how many they skipped: gaps in sensor data are normal, not errors.

pub mod cosinor;
pub mod lomb_scargle;
pub mod multi_cosinor;
pub mod population;
pub mod stability;
pub mod trend;
pub mod wavelet;

pub use cosinor::{cosinor, CosinorFit};
pub use lomb_scargle::{FrequencyGrid, LombScargle, Peak, PeakSearch, Periodogram};

/// Why a rhythm analysis could not be done. Each variant has a stable [`code`](Self::code) for
/// machine-readable output (CLI JSON, logs), independent of the wording of the message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RhythmError {
    /// `t` and `y` have different lengths, so rows cannot be paired.
    #[error("t has {t_len} values but y has {y_len}")]
    LengthMismatch {
        /// Length of the time slice.
        t_len: usize,
        /// Length of the value slice.
        y_len: usize,
    },
    /// Fewer usable (finite) rows than the method needs.
    #[error("need at least {needed} usable points, got {got}")]
    TooFewPoints {
        /// Minimum number of usable rows.
        needed: usize,
        /// Usable rows found after skipping non-finite ones.
        got: usize,
    },
    /// A population-mean fit has fewer members than it needs.
    #[error("need at least {needed} members for a population-mean cosinor, got {got}")]
    TooFewMembers {
        /// Minimum number of members.
        needed: usize,
        /// Members given.
        got: usize,
    },
    /// All usable `y` values are equal: there is no variation to explain.
    #[error("y has zero variance")]
    ZeroVariance,
    /// All usable `t` values are equal: no frequency can be resolved.
    #[error("all time stamps are equal (zero baseline)")]
    ZeroBaseline,
    /// The sampled phases at the requested period do not span enough of the cycle to separate
    /// the cosine and sine terms from the MESOR (e.g. every `t` equal modulo the period).
    #[error("singular cosinor design at period {period}: sampled phases do not span the cycle")]
    SingularDesign {
        /// The requested period.
        period: f64,
    },
    /// The period range is not `0 < min < max < ∞`.
    #[error("invalid period range [{min}, {max}]")]
    InvalidPeriodRange {
        /// Requested shortest period.
        min: f64,
        /// Requested longest period.
        max: f64,
    },
    /// A scalar parameter is out of its domain (non-finite, zero or negative).
    #[error("invalid {name}: {value}")]
    InvalidParameter {
        /// Parameter name as in the API.
        name: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// The frequency grid implied by the period range and baseline is too long to evaluate.
    #[error("frequency grid of {len} points exceeds the limit of {max}")]
    GridTooLarge {
        /// Number of grid frequencies requested.
        len: usize,
        /// Largest grid accepted.
        max: usize,
    },
    /// Every grid power is NaN (degenerate sampling, e.g. all phases aliased at every
    /// frequency), so there is no peak to report.
    #[error("periodogram is undefined at every grid frequency")]
    DegeneratePeriodogram,
}

impl RhythmError {
    /// Stable, SCREAMING_SNAKE_CASE identifier of the variant, for machine-readable output.
    pub const fn code(&self) -> &'static str {
        match self {
            RhythmError::LengthMismatch { .. } => "LENGTH_MISMATCH",
            RhythmError::TooFewPoints { .. } => "TOO_FEW_POINTS",
            RhythmError::TooFewMembers { .. } => "TOO_FEW_MEMBERS",
            RhythmError::ZeroVariance => "ZERO_VARIANCE",
            RhythmError::ZeroBaseline => "ZERO_BASELINE",
            RhythmError::SingularDesign { .. } => "SINGULAR_DESIGN",
            RhythmError::InvalidPeriodRange { .. } => "INVALID_PERIOD_RANGE",
            RhythmError::InvalidParameter { .. } => "INVALID_PARAMETER",
            RhythmError::GridTooLarge { .. } => "GRID_TOO_LARGE",
            RhythmError::DegeneratePeriodogram => "DEGENERATE_PERIODOGRAM",
        }
    }
}

/// Minimum usable rows for both methods: the cosinor has 3 parameters and needs at least one
/// residual degree of freedom; the periodogram's FAP uses `N − 3` degrees of freedom likewise.
pub const MIN_POINTS: usize = 4;

/// The usable rows of a `(t, y)` series: both values finite.
pub(crate) struct Usable {
    pub t: Vec<f64>,
    pub y: Vec<f64>,
    pub n_skipped: usize,
}

/// Pairs `t` with `y`, dropping rows where either is non-finite, and enforces [`MIN_POINTS`].
pub(crate) fn usable_rows(t: &[f64], y: &[f64]) -> Result<Usable, RhythmError> {
    if t.len() != y.len() {
        return Err(RhythmError::LengthMismatch {
            t_len: t.len(),
            y_len: y.len(),
        });
    }
    let total = t.len();
    let (t, y): (Vec<f64>, Vec<f64>) = t
        .iter()
        .zip(y)
        .filter(|(ti, yi)| ti.is_finite() && yi.is_finite())
        .map(|(&ti, &yi)| (ti, yi))
        .unzip();
    let n_skipped = total - t.len();
    if t.len() < MIN_POINTS {
        return Err(RhythmError::TooFewPoints {
            needed: MIN_POINTS,
            got: t.len(),
        });
    }
    Ok(Usable { t, y, n_skipped })
}
