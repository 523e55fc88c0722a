//! Groups of nodes and what the fleet's views hold for each: the node's registry facts that
//! place it in groups, the additive aggregate of a group (counts, phase moments, sums), and
//! the order statistics (min, median, max) of a group's values.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};

use super::node::{NodeView, Status};
use super::{Moments, Name, OrdF64};

/// How nodes are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Every node in one group, `all`.
    Fleet,
    /// By the registry's `location` (`unassigned` when it has none).
    Location,
    /// By the registry's `hardware_type` (`unknown` when it has none).
    HardwareType,
}

impl GroupBy {
    /// Every grouping, in the order views list them.
    pub const ALL: [GroupBy; 3] = [GroupBy::Fleet, GroupBy::Location, GroupBy::HardwareType];

    /// The name used in the API (`?by=`), in stream names and in the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fleet => "fleet",
            Self::Location => "location",
            Self::HardwareType => "hardware_type",
        }
    }

    /// The grouping a name means.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// One group: a grouping and its value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    /// The grouping.
    pub by: GroupBy,
    /// The group's value (`all` for the fleet).
    pub value: Name,
}

/// The value of the fleet's one group.
pub const FLEET: &str = "all";
/// The location group of a node whose registry record has none (or that is not registered).
pub const UNASSIGNED: &str = "unassigned";
/// The hardware group of a node whose board is not known.
pub const UNKNOWN: &str = "unknown";

/// What the registry says about a node, for grouping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Where it is.
    pub location: Name,
    /// Its board (`raspberry_pi_pico`, `elm11`, or `unknown`).
    pub hardware_type: Name,
    /// Its firmware's interpreter, or `unknown`.
    pub runtime: Name,
}

impl Default for NodeMeta {
    fn default() -> Self {
        Self {
            location: UNASSIGNED.into(),
            hardware_type: UNKNOWN.into(),
            runtime: UNKNOWN.into(),
        }
    }
}

impl NodeMeta {
    /// The groups a node with this record is in, one per grouping.
    pub fn groups(&self) -> [GroupKey; 3] {
        [
            GroupKey {
                by: GroupBy::Fleet,
                value: FLEET.into(),
            },
            GroupKey {
                by: GroupBy::Location,
                value: self.location.clone(),
            },
            GroupKey {
                by: GroupBy::HardwareType,
                value: self.hardware_type.clone(),
            },
        ]
    }
}

/// The fixed-point scale of [`Sum`]: 2²⁴, so a sum over a million nodes of values up to
/// 500 (kelvin) stays inside an `i64`, each value resolved to 6·10⁻⁸.
pub const SUM_SCALE: f64 = 16_777_216.0;

/// A count and a fixed-point sum, for means that retract exactly.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Sum {
    /// Values counted.
    pub n: i64,
    /// Their sum · [`SUM_SCALE`].
    pub total: i64,
}

impl Sum {
    fn of(v: f64) -> Self {
        Self {
            n: 1,
            total: (v * SUM_SCALE).round() as i64,
        }
    }

    fn add(&mut self, o: &Self, k: i64) {
        self.n += o.n * k;
        self.total += o.total * k;
    }

    /// The mean (`None` when empty).
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.total as f64 / SUM_SCALE / self.n as f64)
    }
}

/// A group's additive aggregate: node counts by status and hardware, the phase moments of its
/// live clocks, and sums for the means of period, KOA and filtered temperature. It is a
/// difference type, so a node's change moves its groups' aggregates by exactly that change.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct GroupAgg {
    /// Nodes in the group.
    pub nodes: i64,
    /// Nodes by status: online, stale, offline.
    pub online: i64,
    /// See `online`.
    pub stale: i64,
    /// See `online`.
    pub offline: i64,
    /// Nodes whose latest reading failed to process.
    pub failing: i64,
    /// Nodes by board: Raspberry Pi Pico, ELM11, unknown.
    pub pico: i64,
    /// See `pico`.
    pub elm11: i64,
    /// See `pico`.
    pub unknown_hardware: i64,
    /// Phase moments of the live clocks (see [`NodeView::live_clock`]).
    pub phase: Moments,
    /// Period, h, of the live clocks.
    pub period: Sum,
    /// KOA of the live clocks.
    pub koa: Sum,
    /// Filtered temperature, K, of the live clocks.
    pub temperature: Sum,
}

impl GroupAgg {
    /// One node's contribution.
    pub fn of(view: &NodeView, meta: &NodeMeta) -> Self {
        let mut a = Self {
            nodes: 1,
            failing: i64::from(view.failing.is_some()),
            ..Self::default()
        };
        match view.status {
            Status::Online => a.online = 1,
            Status::Stale => a.stale = 1,
            Status::Offline => a.offline = 1,
        }
        match &*meta.hardware_type {
            "raspberry_pi_pico" => a.pico = 1,
            "elm11" => a.elm11 = 1,
            _ => a.unknown_hardware = 1,
        }
        if let Some(c) = view.live_clock() {
            a.phase = Moments::of_phase(c.phase.get());
            a.period = Sum::of(c.period_hours.get());
            a.koa = Sum::of(c.koa.get());
            a.temperature = Sum::of(c.temperature_kelvin.get());
        }
        a
    }

    fn add(&mut self, o: &Self, k: i64) {
        self.nodes += o.nodes * k;
        self.online += o.online * k;
        self.stale += o.stale * k;
        self.offline += o.offline * k;
        self.failing += o.failing * k;
        self.pico += o.pico * k;
        self.elm11 += o.elm11 * k;
        self.unknown_hardware += o.unknown_hardware * k;
        self.phase.plus_equals(&o.phase.multiply(&(k as isize)));
        self.period.add(&o.period, k);
        self.koa.add(&o.koa, k);
        self.temperature.add(&o.temperature, k);
    }
}

impl IsZero for GroupAgg {
    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl Semigroup for GroupAgg {
    fn plus_equals(&mut self, rhs: &Self) {
        self.add(rhs, 1);
    }
}

impl Monoid for GroupAgg {
    fn zero() -> Self {
        Self::default()
    }
}

impl Abelian for GroupAgg {
    fn negate(&mut self) {
        let me = *self;
        *self = Self::default();
        self.add(&me, -1);
    }
}

/// `explode` scales a node's contribution by the record's count (−1 for a retraction).
impl Multiply<isize> for GroupAgg {
    type Output = Self;
    fn multiply(self, rhs: &isize) -> Self {
        let mut out = Self::default();
        out.add(&self, *rhs as i64);
        out
    }
}

/// A value whose order statistics a group keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// The state's period estimate, h.
    PeriodHours,
    /// KOA.
    Koa,
    /// Filtered temperature, K.
    TemperatureKelvin,
    /// The median period of the node's last rhythm windows, h (what outliers are judged by).
    WindowPeriodHours,
}

impl Measure {
    /// Every measure, in order (a measure's index is its position here).
    pub const ALL: [Measure; 4] = [
        Measure::PeriodHours,
        Measure::Koa,
        Measure::TemperatureKelvin,
        Measure::WindowPeriodHours,
    ];

    /// The name used in the API and the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PeriodHours => "period_hours",
            Self::Koa => "koa",
            Self::TemperatureKelvin => "temperature_kelvin",
            Self::WindowPeriodHours => "window_period_hours",
        }
    }

    /// A node's values of each measure (its live clock's, and its window period).
    pub fn of(view: &NodeView) -> impl Iterator<Item = (Measure, OrdF64)> {
        let clock = view.live_clock().copied();
        let window = view
            .window_period
            .filter(|_| view.status != Status::Offline);
        clock
            .into_iter()
            .flat_map(|c| {
                [
                    (Measure::PeriodHours, c.period_hours),
                    (Measure::Koa, c.koa),
                    (Measure::TemperatureKelvin, c.temperature_kelvin),
                ]
            })
            .chain(window.map(|w| (Measure::WindowPeriodHours, w)))
    }
}

/// A group's order statistics of one measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Spread {
    /// The smallest.
    pub min: OrdF64,
    /// The median (the mean of the middle two for an even count).
    pub median: OrdF64,
    /// The largest.
    pub max: OrdF64,
}

impl Spread {
    /// The spread of sorted, distinct values with their counts, computed from all of them (what
    /// the incremental halves of [`crate::fleet::spread`] are checked against).
    pub fn of_sorted(values: &[(&OrdF64, isize)]) -> Option<Self> {
        let n: isize = values.iter().map(|(_, c)| *c).sum();
        if n <= 0 {
            return None;
        }
        // The values at ranks (n-1)/2 and n/2 (0-based): equal for odd n.
        let at = |rank: isize| {
            let mut seen = 0;
            for (v, c) in values {
                seen += c;
                if seen > rank {
                    return **v;
                }
            }
            *values[values.len() - 1].0
        };
        let (lo, hi) = (at((n - 1) / 2), at(n / 2));
        Some(Self {
            min: *values[0].0,
            median: OrdF64::from((lo.get() + hi.get()) / 2.0),
            max: *values[values.len() - 1].0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_median_counts_repeated_values() {
        let v = [OrdF64::from(1.0), OrdF64::from(2.0), OrdF64::from(10.0)];
        let s = Spread::of_sorted(&[(&v[0], 2), (&v[1], 1), (&v[2], 1)]).unwrap();
        // 1, 1, 2, 10: the middle two are 1 and 2.
        assert_eq!(s.median.get(), 1.5);
        assert_eq!((s.min.get(), s.max.get()), (1.0, 10.0));
        let s = Spread::of_sorted(&[(&v[0], 1), (&v[1], 3), (&v[2], 1)]).unwrap();
        assert_eq!(s.median.get(), 2.0);
    }

    #[test]
    fn an_aggregate_and_its_negation_cancel() {
        let meta = NodeMeta::default();
        let mut view = NodeView::never_seen();
        view.status = Status::Online;
        view.clock = Some(crate::fleet::ClockView {
            phase: OrdF64::from(0.3),
            circadian_time: OrdF64::from(7.2),
            period_hours: OrdF64::from(24.1),
            koa: OrdF64::from(0.5),
            temperature_kelvin: OrdF64::from(303.15),
        });
        let a = GroupAgg::of(&view, &meta);
        let mut sum = a;
        sum.plus_equals(&a.multiply(&-1));
        assert!(sum.is_zero());
        let mut neg = a;
        neg.negate();
        assert_eq!(neg, a.multiply(&-1));
    }
}
