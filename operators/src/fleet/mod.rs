//! Fleet-level views and alerts, maintained incrementally with differential dataflow: each
//! node's standing ([`node`]), joined with the registry and grouped ([`group`]), with phase
//! synchrony ([`synchrony`]), order statistics, outliers and alert rules ([`alert`]), wired in
//! [`views`] and handed out per completed tick by [`output`].
//!
//! An update costs work in proportion to what changed: a node's new state retracts its old
//! view, and each of its groups' aggregates moves by the difference (a difference type, not a
//! rescan); order statistics move in O(log n) per change ([`spread`]).

pub mod alert;
pub mod group;
pub mod lake;
pub mod node;
pub mod output;
pub mod spread;
pub mod synchrony;
pub mod views;

use serde::{Deserialize, Serialize};

pub use alert::{Alert, AlertCode, Severity};
pub use group::{GroupAgg, GroupBy, GroupKey, Measure, NodeMeta, Spread, Sum};
pub use lake::{alert_row, tick_start, FleetRows};
pub use node::{ClockView, NodeEvent, NodeFact, NodeTracker, NodeView, Status};
pub use output::{AlertChange, FleetChanges, FleetOutput, FleetState};
pub use spread::GroupSpreads;
pub use synchrony::{Moments, PHASE_SCALE};
pub use views::{fleet_views, FleetFact};

/// A node id or a group's value in the fleet's records: shared, so the many records a change
/// makes copy a pointer, not the text (a `String` per record was a third of the views' time).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(std::sync::Arc<str>);

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// An `f64` as a `u64` whose integer order is the float's total order (collection data must
/// be `Ord`): the sign bit flipped for positives, every bit for negatives.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct OrdF64(pub u64);

impl OrdF64 {
    /// The float.
    pub fn get(self) -> f64 {
        let b = self.0;
        f64::from_bits(if b >> 63 == 1 { b ^ (1 << 63) } else { !b })
    }
}

impl From<f64> for OrdF64 {
    fn from(v: f64) -> Self {
        let b = v.to_bits();
        Self(if b >> 63 == 0 { b | (1 << 63) } else { !b })
    }
}

/// The fleet's thresholds and windows.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// A node's clock (phase, period, KOA, temperature) is refreshed in the views once per
    /// this many minutes of its event time, by its first state at or after each boundary;
    /// statuses, failures and dead letters change the views at once. 1 follows every state.
    pub clock_resolution_minutes: u64,
    /// A node with no reading for this long (event time) is stale.
    pub stale_after_minutes: u64,
    /// A node with no reading for this long (event time) is offline.
    pub offline_after_minutes: u64,
    /// Rhythm windows whose median period judges a node against its group.
    pub outlier_windows: usize,
    /// How far (h) a node's period may be from its group's median before it is an outlier.
    pub outlier_distance_hours: f64,
    /// Hours of dead-letter counts kept per node.
    pub dead_letter_retention_hours: u64,
    /// More dead letters than this in a node's last hour raise `DEAD_LETTER_RATE`.
    pub dead_letters_per_hour_alert: u64,
    /// A group's R below this raises `DESYNCHRONIZED`...
    pub desync_below: f64,
    /// ...when it has at least this many live clocks.
    pub desync_min_nodes: i64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            clock_resolution_minutes: 10,
            stale_after_minutes: 2,
            offline_after_minutes: 5,
            outlier_windows: 3,
            outlier_distance_hours: 1.0,
            dead_letter_retention_hours: 24,
            dead_letters_per_hour_alert: 10,
            desync_below: 0.5,
            desync_min_nodes: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ord_f64_keeps_the_order_of_floats() {
        let v = [-1e9, -2.5, -0.0, 0.0, 1e-300, 3.0, 24.5, f64::INFINITY];
        for w in v.windows(2) {
            assert!(OrdF64::from(w[0]) <= OrdF64::from(w[1]), "{w:?}");
        }
        for x in v {
            assert_eq!(OrdF64::from(x).get().to_bits(), x.to_bits());
        }
    }
}
