//! Phase synchrony of a group of clocks: the Kuramoto order parameter R = |mean of
//! e^{2πi·phase}|, the mean phase, and the circular spread of circadian time.
//!
//! A group's [`Moments`] (count and sums of cos and sin of each node's phase) add and subtract,
//! so they are a difference type for differential dataflow: a node's new phase retracts its old
//! moments and adds its new ones, and each group's view changes by exactly that, without a
//! rescan of the fleet. The sums are fixed-point integers, so a retraction cancels exactly and a
//! group that empties accumulates to exactly zero (floating-point sums would drift with every
//! update and never return to zero).

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};

/// The fixed-point scale of [`Moments`]' sums: 2³², so a sum of a million unit vectors stays far
/// inside an `i64`, and a single phase is resolved to 2⁻³² of a cycle.
pub const PHASE_SCALE: f64 = 4_294_967_296.0;

const TAU: f64 = std::f64::consts::TAU;

/// The additive moments of a group's phases: how many, and Σcos, Σsin of 2π·phase in fixed
/// point.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Moments {
    /// Nodes counted.
    pub n: i64,
    /// Σ cos(2π·phase) · [`PHASE_SCALE`].
    pub cos: i64,
    /// Σ sin(2π·phase) · [`PHASE_SCALE`].
    pub sin: i64,
}

impl Moments {
    /// One node at `phase` (fraction of a cycle, any real: it wraps).
    pub fn of_phase(phase: f64) -> Self {
        let th = TAU * phase;
        Self {
            n: 1,
            cos: (th.cos() * PHASE_SCALE).round() as i64,
            sin: (th.sin() * PHASE_SCALE).round() as i64,
        }
    }

    /// The moments of several phases.
    pub fn of_phases(phases: impl IntoIterator<Item = f64>) -> Self {
        phases.into_iter().fold(Self::default(), |mut m, p| {
            m.plus_equals(&Self::of_phase(p));
            m
        })
    }

    fn resultant(&self) -> (f64, f64) {
        (self.cos as f64 / PHASE_SCALE, self.sin as f64 / PHASE_SCALE)
    }

    /// The Kuramoto order parameter R in [0, 1]: 1 for a group in phase, near 0 for phases
    /// spread evenly round the cycle. `None` for an empty group.
    pub fn order_parameter(&self) -> Option<f64> {
        (self.n > 0).then(|| {
            let (c, s) = self.resultant();
            (c.hypot(s) / self.n as f64).min(1.0)
        })
    }

    /// The circular mean phase in [0, 1); `None` when it is undefined (an empty group, or
    /// phases that cancel exactly).
    pub fn mean_phase(&self) -> Option<f64> {
        if self.n <= 0 || (self.cos == 0 && self.sin == 0) {
            return None;
        }
        let (c, s) = self.resultant();
        Some((s.atan2(c) / TAU).rem_euclid(1.0))
    }

    /// The circular standard deviation of the group's circadian times, √(−2 ln R) in
    /// circadian hours (24 per cycle; Mardia & Jupp 2000, §2.3.4): 0 in phase, growing without
    /// bound as R falls to 0. `None` for an empty group.
    pub fn spread_ct_hours(&self) -> Option<f64> {
        self.order_parameter()
            .map(|r| (-2.0 * r.ln()).max(0.0).sqrt() * 24.0 / TAU)
    }
}

impl IsZero for Moments {
    fn is_zero(&self) -> bool {
        self.n == 0 && self.cos == 0 && self.sin == 0
    }
}

impl Semigroup for Moments {
    fn plus_equals(&mut self, rhs: &Self) {
        self.n += rhs.n;
        self.cos += rhs.cos;
        self.sin += rhs.sin;
    }
}

impl Monoid for Moments {
    fn zero() -> Self {
        Self::default()
    }
}

impl Abelian for Moments {
    fn negate(&mut self) {
        self.n = -self.n;
        self.cos = -self.cos;
        self.sin = -self.sin;
    }
}

/// `explode` scales the moments it makes by the record's count (−1 for a retraction).
impl Multiply<isize> for Moments {
    type Output = Self;
    fn multiply(self, rhs: &isize) -> Self {
        let k = *rhs as i64;
        Self {
            n: self.n * k,
            cos: self.cos * k,
            sin: self.sin * k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's moments and their negation cancel exactly, however many times they are added.
    #[test]
    fn a_retraction_cancels_exactly() {
        let mut m = Moments::of_phases([0.1, 0.37, 0.92]);
        for p in [0.37, 0.1, 0.92] {
            m.plus_equals(&Moments::of_phase(p).multiply(&-1));
        }
        assert!(m.is_zero(), "{m:?}");
    }
}
