//! Fleet-level views: what a group of nodes shows together (phase synchrony first), in forms
//! that differential dataflow can maintain incrementally.

pub mod synchrony;

pub use synchrony::{Moments, PHASE_SCALE};
