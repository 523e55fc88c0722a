//! The fleet's views handed out per completed tick: each tick's changes, consolidated and in a
//! fixed order, once the frontier has passed it (so they are final, and the same for any
//! number of workers).

use std::collections::{BTreeMap, BTreeSet};

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::alert::Alert;
use super::group::{GroupAgg, GroupKey, Measure, Spread};
use super::views::FleetFact;
use super::{Name, OrdF64};
use kaiabc_schemas::Reason;

/// Each tick's pending updates, with the capability to send them at.
type Pending = BTreeMap<u64, (Capability<u64>, Vec<(FleetFact, isize)>)>;

/// One worker's changes to the fleet's views at one tick: retractions first, then insertions,
/// each in the facts' order.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetChanges {
    /// The tick (minute of event time).
    pub time: u64,
    /// `(fact, −1)` for what no longer holds, `(fact, +n)` for what now does.
    pub changes: Vec<(FleetFact, isize)>,
}

/// Extension trait: the fleet's views as changes per completed tick.
pub trait FleetOutput<'scope> {
    /// Buffers each tick's updates until the frontier passes it, then sends them consolidated.
    fn fleet_changes(self) -> Stream<'scope, u64, Vec<FleetChanges>>;
}

impl<'scope> FleetOutput<'scope> for VecCollection<'scope, u64, FleetFact> {
    fn fleet_changes(self) -> Stream<'scope, u64, Vec<FleetChanges>> {
        self.inner
            .unary_frontier(Pipeline, "FleetChanges", |_cap, _info| {
                let mut pending = Pending::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for (fact, t, d) in data.drain(..) {
                            let entry = pending
                                .entry(t)
                                .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                            entry.1.push((fact, d));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (cap, mut changes)) = entry.remove_entry();
                        consolidate(&mut changes);
                        changes.sort_by(|a, b| (a.1 > 0, &a.0).cmp(&(b.1 > 0, &b.0)));
                        if !changes.is_empty() {
                            output.session(&cap).give(FleetChanges { time, changes });
                        }
                    }
                }
            })
    }
}

/// The fleet's views as they stand, kept by applying [`FleetChanges`] in time order (those of
/// every worker: each fact comes from one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetState {
    /// The latest tick applied.
    pub time: u64,
    /// Each group's aggregate.
    pub groups: BTreeMap<GroupKey, GroupAgg>,
    /// Each group's order statistics, by measure.
    pub spreads: BTreeMap<(GroupKey, Measure), Spread>,
    /// Outliers by group and node: the node's window period and the group's median.
    pub outliers: BTreeMap<(GroupKey, Name), (OrdF64, OrdF64)>,
    /// Dead letters by node, hour (tick) and reason.
    pub dead_letters: BTreeMap<(Option<Name>, u64, Reason), isize>,
    /// The active alerts.
    pub alerts: BTreeSet<Alert>,
}

/// What applying a tick's changes did to an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertChange {
    /// It became active at the tick.
    Raised(Alert, u64),
    /// It stopped being active at the tick.
    Cleared(Alert, u64),
}

impl FleetState {
    /// Applies one worker's changes of a tick; returns the alerts raised and cleared.
    pub fn apply(&mut self, c: &FleetChanges) -> Vec<AlertChange> {
        self.time = self.time.max(c.time);
        let mut alerts = Vec::new();
        // Retractions come first (see `FleetChanges`), so a replaced value is removed before
        // its successor is inserted.
        for (fact, d) in &c.changes {
            let add = *d > 0;
            match fact {
                FleetFact::Group(g, agg) => {
                    if add {
                        self.groups.insert(g.clone(), *agg);
                    } else if self.groups.get(g) == Some(agg) {
                        self.groups.remove(g);
                    }
                }
                FleetFact::Spread(g, m, s) => {
                    let key = (g.clone(), *m);
                    if add {
                        self.spreads.insert(key, *s);
                    } else if self.spreads.get(&key) == Some(s) {
                        self.spreads.remove(&key);
                    }
                }
                FleetFact::Outlier(g, node, p, median) => {
                    let key = (g.clone(), node.clone());
                    if add {
                        self.outliers.insert(key, (*p, *median));
                    } else if self.outliers.get(&key) == Some(&(*p, *median)) {
                        self.outliers.remove(&key);
                    }
                }
                FleetFact::DeadLetters(node, hour, reason) => {
                    let key = (node.clone(), *hour, *reason);
                    let n = self.dead_letters.entry(key.clone()).or_default();
                    *n += d;
                    if *n == 0 {
                        self.dead_letters.remove(&key);
                    }
                }
                FleetFact::Alert(a) => {
                    if add {
                        if self.alerts.insert(a.clone()) {
                            alerts.push(AlertChange::Raised(a.clone(), c.time));
                        }
                    } else if self.alerts.remove(a) {
                        alerts.push(AlertChange::Cleared(a.clone(), c.time));
                    }
                }
            }
        }
        alerts
    }
}
