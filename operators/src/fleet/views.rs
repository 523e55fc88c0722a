//! The fleet's views as one differential dataflow: node standings joined with the registry,
//! then per group (fleet, location, hardware type) the additive aggregate, the order
//! statistics of each measure, the outliers against the group's median window period, dead
//! letters by node and hour, and the alert rules, all as one collection of [`FleetFact`]s.

use differential_dataflow::operators::CountTotal;
use differential_dataflow::{AsCollection, VecCollection};
use kaiabc_schemas::Reason;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::alert::Alert;
use super::group::{GroupAgg, GroupKey, Measure, NodeMeta, Spread};
use super::node::{NodeEvent, NodeFact, NodeTracker, NodeView};
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
    let facts = events.node_tracker(cfg.clone()).as_collection();
    let views = facts.clone().flat_map(|f| match f {
        NodeFact::View(node, view) => Some((node, view)),
        NodeFact::DeadLetters(..) => None,
    });
    let dead = facts.flat_map(|f| match f {
        NodeFact::DeadLetters(node, hour, reason) => {
            Some(FleetFact::DeadLetters(node, hour, reason))
        }
        NodeFact::View(..) => None,
    });

    // Every node with its registry record: joined, unregistered (default record), and
    // registered but never heard from.
    let seen = views.clone().map(|(node, _)| node);
    let registered = registry.clone().map(|(node, _)| node);
    let members: VecCollection<'scope, u64, (Name, (NodeView, NodeMeta))> = views
        .clone()
        .join(registry.clone())
        .concat(
            views
                .antijoin(registered)
                .map(|(node, view)| (node, (view, NodeMeta::default()))),
        )
        .concat(
            registry
                .antijoin(seen)
                .map(|(node, meta)| (node, (NodeView::never_seen(), meta))),
        );

    // Each group's aggregate moves by its members' differences.
    let aggregates = members
        .clone()
        .explode(|(_, (view, meta))| {
            let agg = GroupAgg::of(&view, &meta);
            meta.groups().into_iter().map(move |g| (g, agg))
        })
        .count_total()
        .map(|(group, agg)| (group, agg));

    // Order statistics per group and measure, recomputed for the groups that changed.
    let spreads = members
        .clone()
        .flat_map(|(_, (view, meta))| {
            let measures: Vec<(Measure, OrdF64)> = Measure::of(&view).collect();
            meta.groups().into_iter().flat_map(move |g| {
                measures
                    .clone()
                    .into_iter()
                    .map(move |(m, v)| ((g.clone(), m), v))
            })
        })
        .reduce(|_key, values, out: &mut Vec<(Spread, isize)>| {
            if let Some(s) = Spread::of_sorted(values) {
                out.push((s, 1));
            }
        });

    // Outliers: a node's window period against its group's median of them.
    let medians = spreads
        .clone()
        .flat_map(|((g, m), s)| (m == Measure::WindowPeriodHours).then_some((g, s.median)));
    let distance = cfg.outlier_distance_hours;
    let outliers = members
        .clone()
        .flat_map(|(node, (view, meta))| {
            let p = Measure::of(&view)
                .find(|(m, _)| *m == Measure::WindowPeriodHours)
                .map(|(_, v)| v);
            let groups = if p.is_some() {
                meta.groups().to_vec()
            } else {
                Vec::new()
            };
            groups
                .into_iter()
                .zip(std::iter::repeat((node, p)))
                .filter_map(|(g, (node, p))| p.map(|p| (g, (node, p))))
        })
        .join(medians)
        .filter(move |(_, ((_, p), median))| (p.get() - median.get()).abs() > distance);

    // Alerts, from the same collections.
    let node_cfg = cfg.clone();
    let node_alerts =
        members.flat_map(move |(node, (view, _))| Alert::of_node(&node, &view, &node_cfg));
    let drift = outliers
        .clone()
        .flat_map(|(g, ((node, _), _))| Alert::drift(&node, &g));
    let desync = aggregates
        .clone()
        .flat_map(move |(g, agg)| Alert::desynchronized(&g, &agg, &cfg));
    let alerts = node_alerts
        .concat(drift)
        .concat(desync)
        .map(FleetFact::Alert);

    aggregates
        .map(|(g, agg)| FleetFact::Group(g, agg))
        .concat(spreads.map(|((g, m), s)| FleetFact::Spread(g, m, s)))
        .concat(outliers.map(|(g, ((node, p), median))| FleetFact::Outlier(g, node, p, median)))
        .concat(dead)
        .concat(alerts)
}
