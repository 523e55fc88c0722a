//! The fleet's lake rows: every worker's changes gathered on worker 0, applied in tick order to
//! one [`FleetState`], and written as each group's view at the top of every hour of event time
//! (`fleet`) and as each alert raised and cleared (`alerts`). Gathering makes the rows the same
//! for any number of workers: a group's aggregate and its order statistics may live on
//! different workers, and a snapshot needs both as of the same tick.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use kaiabc_schemas::{AlertRow, FleetSnapshot, LakeRow};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::alert::Alert;
use super::group::{GroupKey, Measure};
use super::output::{AlertChange, FleetChanges, FleetState};

/// Ticks (minutes) per snapshot.
const HOUR: u64 = 60;

/// The start of a tick (a minute of event time).
pub fn tick_start(tick: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(tick as i64 * 60, 0).unwrap_or_default()
}

impl FleetState {
    /// Group `g`'s view as a `fleet` row at `tick` (`None` if the group is empty).
    pub fn snapshot(&self, g: &GroupKey, tick: u64) -> Option<FleetSnapshot> {
        let agg = self.groups.get(g)?;
        let spread = |m: Measure| self.spreads.get(&(g.clone(), m));
        let (period, koa, temp) = (
            spread(Measure::PeriodHours),
            spread(Measure::Koa),
            spread(Measure::TemperatureKelvin),
        );
        Some(FleetSnapshot {
            snapshot_at: tick_start(tick),
            group_by: g.by.as_str().into(),
            group: g.value.to_string(),
            nodes: agg.nodes,
            online: agg.online,
            stale: agg.stale,
            offline: agg.offline,
            failing: agg.failing,
            raspberry_pi_pico: agg.pico,
            elm11: agg.elm11,
            unknown_hardware: agg.unknown_hardware,
            clocks: agg.phase.n,
            order_parameter: agg.phase.order_parameter(),
            mean_phase: agg.phase.mean_phase(),
            spread_ct_hours: agg.phase.spread_ct_hours(),
            period_mean_hours: agg.period.mean(),
            period_min_hours: period.map(|s| s.min.get()),
            period_median_hours: period.map(|s| s.median.get()),
            period_max_hours: period.map(|s| s.max.get()),
            koa_mean: agg.koa.mean(),
            koa_min: koa.map(|s| s.min.get()),
            koa_max: koa.map(|s| s.max.get()),
            temperature_mean_kelvin: agg.temperature.mean(),
            temperature_min_kelvin: temp.map(|s| s.min.get()),
            temperature_max_kelvin: temp.map(|s| s.max.get()),
            outliers: self.outliers.keys().filter(|(og, _)| og == g).count() as i64,
        })
    }
}

/// An alert raised or cleared at `tick` as an `alerts` row.
pub fn alert_row(a: &Alert, tick: u64, raised_at: u64, raised: bool) -> AlertRow {
    AlertRow {
        at: tick_start(tick),
        state: if raised { "raised" } else { "cleared" }.into(),
        code: a.code.as_str().into(),
        severity: a.code.severity().as_str().into(),
        node_id: a.node.as_ref().map(|n| n.to_string()),
        group_by: a.group.as_ref().map(|g| g.by.as_str().to_string()),
        group: a.group.as_ref().map(|g| g.value.to_string()),
        raised_at: tick_start(raised_at),
        last_seen: a.last_seen.and_then(DateTime::from_timestamp_micros),
        message: a.message(),
    }
}

/// Extension trait: the fleet's changes as lake rows.
pub trait FleetRows<'scope> {
    /// Gathers the changes on worker 0 and emits `fleet` rows at each hour that event time
    /// crosses after the views changed (each group's view with every change before the hour
    /// applied; an hour in which nothing changed is not written again, nor the empty years
    /// before a first reading), and `alerts` rows as alerts are raised and cleared. When the
    /// input ends, no further hour is written.
    fn fleet_rows(self) -> Stream<'scope, u64, Vec<LakeRow>>;
}

/// When the next `fleet` rows are due: at the first hour after a change. An hour in which
/// nothing changed is not written again, and nothing is written before any node has been heard
/// from (the registry alone, applied at the start of event time, would otherwise date rows in
/// 1970). Only ticks with changes and the hours themselves decide, so the rows do not depend
/// on how far the frontier jumps at a time.
#[derive(Debug, Default)]
struct Hours {
    /// The hour the next rows are due at.
    due: Option<u64>,
    /// Whether any node has been online yet.
    heard: bool,
}

impl Hours {
    /// Writes the due rows if `upto` (a tick being applied, or the frontier) has reached their
    /// hour: every tick before it has been applied, none after.
    fn reach(&mut self, state: &FleetState, upto: u64, rows: &mut Vec<LakeRow>) {
        let Some(hour) = self.due.filter(|h| *h <= upto) else {
            return;
        };
        self.due = None;
        if self.heard {
            rows.extend(
                state
                    .groups
                    .keys()
                    .filter_map(|g| state.snapshot(g, hour))
                    .map(|s| LakeRow::Fleet(Box::new(s))),
            );
        }
    }

    /// Notes a tick's changes.
    fn changed(&mut self, state: &FleetState, tick: u64) {
        if self.due.is_none() {
            self.due = Some(tick - tick % HOUR + HOUR);
        }
        self.heard = self.heard || state.groups.values().any(|g| g.online + g.stale > 0);
    }
}

/// Changes held until their tick is complete, with a capability at it.
type Pending = BTreeMap<u64, (Capability<u64>, Vec<FleetChanges>)>;

impl<'scope> FleetRows<'scope> for Stream<'scope, u64, Vec<FleetChanges>> {
    fn fleet_rows(self) -> Stream<'scope, u64, Vec<LakeRow>> {
        self.unary_frontier(Exchange::new(|_| 0), "FleetRows", |_cap, _info| {
            let mut pending = Pending::new();
            let mut state = FleetState::default();
            let mut raised: HashMap<Alert, u64> = HashMap::new();
            // The last tick applied, with a capability no later than any row still to send.
            let mut last: Option<(u64, Capability<u64>)> = None;
            let mut hours = Hours::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for c in data.drain(..) {
                        let t = c.time;
                        pending
                            .entry(t)
                            .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()))
                            .1
                            .push(c);
                    }
                });
                let mut rows: Vec<LakeRow> = Vec::new();
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, (cap, changes)) = entry.remove_entry();
                    // The hour before this tick sees the views without it.
                    hours.reach(&state, t, &mut rows);
                    for c in &changes {
                        for change in state.apply(c) {
                            rows.push(LakeRow::Alert(Box::new(match change {
                                AlertChange::Raised(a, at) => {
                                    raised.insert(a.clone(), at);
                                    alert_row(&a, at, at, true)
                                }
                                AlertChange::Cleared(a, at) => {
                                    let from = raised.remove(&a).unwrap_or(at);
                                    alert_row(&a, at, from, false)
                                }
                            })));
                        }
                    }
                    if changes.iter().any(|c| !c.changes.is_empty()) {
                        hours.changed(&state, t);
                    }
                    if !rows.is_empty() {
                        output.session(&cap).give_container(&mut rows);
                    }
                    last = Some((t, cap));
                }
                let Some(f) = frontier.frontier().iter().min().copied() else {
                    // Event time stopped: no later hour is written.
                    last = None;
                    return;
                };
                // An hour the frontier has passed with no tick since.
                if let Some((_, held)) = last.as_mut() {
                    hours.reach(&state, f, &mut rows);
                    if !rows.is_empty() {
                        output.session(&*held).give_container(&mut rows);
                    }
                    // Hold no later than the frontier: rows of later hours go out at or after it.
                    if *held.time() < f {
                        held.downgrade(&f);
                    }
                }
            }
        })
    }
}
