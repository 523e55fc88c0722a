//! The fleet's views as one differential dataflow: node standings joined with the registry,
//! then per group (fleet, location, hardware type) the additive aggregate, the order
//! statistics of each measure, the outliers against the group's median window period, dead
//! letters by node and hour, and the alert rules, all as one collection of [`FleetFact`]s.

use differential_dataflow::difference::{IsZero, Multiply, Semigroup};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::{HashMap, HashMapExt};
use kaiabc_schemas::Reason;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::alert::Alert;
use super::group::{GroupAgg, GroupKey, Measure, NodeMeta, Spread};
use super::node::{NodeEvent, NodeFact, NodeTracker};
use super::spread::{GroupSpreads, NodeValues};
use super::{FleetConfig, Name, OrdF64};

/// A record of the fleet's views. Each is produced on one worker (by its key's hash), and
/// while a group's values stay the same its record does: a change is the old record retracted
/// and the new one inserted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FleetFact {
    /// A group's aggregate.
    Group(GroupKey, GroupAgg),
    /// A group's order statistics of a measure.
    Spread(GroupKey, Measure, Spread),
    /// A node whose window period is further than the configured distance from its group's
    /// median: the node, its window period and the group's median.
    Outlier(GroupKey, Name, OrdF64, OrdF64),
    /// Dead letters of a node (or of none) in the hour starting at the tick, for a reason; the
    /// count is the record's multiplicity.
    DeadLetters(Option<Name>, u64, Reason),
    /// An active alert.
    Alert(Alert),
}

/// Builds the fleet's views from the events of each node's rows and the registry (as a
/// collection of `(node, meta)`, one record per node). Nodes the registry does not know are
/// grouped as `unassigned`/`unknown`; registered nodes never heard from count as offline.
///
/// # Examples
/// ```
/// use differential_dataflow::input::Input;
/// use kaiabc_operators::fleet::{fleet_views, ClockView, FleetConfig, FleetFact, GroupBy, Name, NodeEvent, OrdF64};
/// use timely::dataflow::operators::{Capture, ToStream};
/// use timely::dataflow::operators::capture::Extract;
///
/// let at = |phase: f64| ClockView {
///     phase: OrdF64::from(phase), circadian_time: OrdF64::from(24.0 * phase),
///     period_hours: OrdF64::from(24.0), koa: OrdF64::from(0.5),
///     temperature_kelvin: OrdF64::from(303.15),
/// };
/// // Three nodes in phase: the fleet's R is 1.
/// let events: Vec<NodeEvent> = ["a", "b", "c"].iter()
///     .map(|n| NodeEvent::State { node: (*n).into(), at: 0, clock: at(0.25) })
///     .collect();
/// let out = timely::example(move |scope| {
///     let (_registry_in, registry) = scope.new_collection::<(Name, _), isize>();
///     fleet_views(events.to_stream(scope), registry, FleetConfig::default())
///         .inner
///         .capture()
/// });
/// let r: Vec<f64> = out.extract().into_iter().flat_map(|(_, v)| v)
///     .filter_map(|(f, _, d)| match f {
///         FleetFact::Group(g, agg) if g.by == GroupBy::Fleet && d > 0 => agg.phase.order_parameter(),
///         _ => None,
///     })
///     .collect();
/// assert!((r[0] - 1.0).abs() < 1e-9);
/// ```
pub fn fleet_views<'scope>(
    events: Stream<'scope, u64, Vec<NodeEvent>>,
    registry: VecCollection<'scope, u64, (Name, NodeMeta)>,
    cfg: FleetConfig,
) -> VecCollection<'scope, u64, FleetFact> {
    // Every node with its registry record: joined in the tracker, which owns both (unregistered
    // nodes by the default record, registered nodes never heard from as offline).
    let facts = events.node_tracker(registry, cfg.clone()).as_collection();
    let members = facts.clone().flat_map(|f| match f {
        NodeFact::Member(node, view, meta) => Some((node, (view, meta))),
        NodeFact::DeadLetters(..) => None,
    });
    let dead = facts.flat_map(|f| match f {
        NodeFact::DeadLetters(node, hour, reason) => {
            Some(FleetFact::DeadLetters(node, hour, reason))
        }
        NodeFact::Member(..) => None,
    });

    // Each group's aggregate moves by its members' differences, summed per group and tick
    // within each batch first (a tick of 100 000 changes then hands `count_total` a few
    // hundred updates, not six per change).
    let aggregates = members
        .clone()
        .inner
        .unary(Pipeline, "GroupDeltas", |_cap, _info| {
            let mut sums: HashMap<(u64, GroupKey), GroupAgg> = HashMap::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    for ((_, (view, meta)), t, d) in data.drain(..) {
                        let agg = GroupAgg::of(&view, &meta).multiply(&d);
                        for g in meta.groups() {
                            sums.entry((t, g)).or_default().plus_equals(&agg);
                        }
                    }
                    let mut session = output.session(&cap);
                    for ((t, g), agg) in sums.drain() {
                        if !agg.is_zero() {
                            session.give((g, t, agg));
                        }
                    }
                });
            }
        })
        .as_collection()
        .count_total();

    // Order statistics per group and measure, and the outliers against each group's median
    // window period: ordered halves per key, so a change costs O(log n), not a pass over the
    // group (see `spread`).
    let spreads = members
        .clone()
        .flat_map(|(node, (view, meta))| {
            let mut values: NodeValues = [None; 4];
            for (m, v) in Measure::of(&view) {
                values[m as usize] = Some(v);
            }
            let any = values.iter().any(Option::is_some);
            meta.groups()
                .into_iter()
                .filter(move |_| any)
                .map(move |g| (g, (node.clone(), values)))
        })
        .group_spreads(cfg.outlier_distance_hours);

    // Alerts, from the same collections.
    let node_cfg = cfg.clone();
    let node_alerts =
        members.flat_map(move |(node, (view, _))| Alert::of_node(&node, &view, &node_cfg));
    let drift = spreads.clone().flat_map(|f| match f {
        FleetFact::Outlier(g, node, _, _) => Alert::drift(&node, &g),
        _ => None,
    });
    let desync = aggregates
        .clone()
        .flat_map(move |(g, agg)| Alert::desynchronized(&g, &agg, &cfg));
    let alerts = node_alerts
        .concat(drift)
        .concat(desync)
        .map(FleetFact::Alert);

    aggregates
        .map(|(g, agg)| FleetFact::Group(g, agg))
        .concat(spreads)
        .concat(dead)
        .concat(alerts)
}
