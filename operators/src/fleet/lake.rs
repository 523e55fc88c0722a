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

fn at(tick: u64) -> DateTime<Utc> {
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
            snapshot_at: at(tick),
            group_by: g.by.as_str().into(),
            group: g.value.clone(),
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
        at: at(tick),
        state: if raised { "raised" } else { "cleared" }.into(),
        code: a.code.as_str().into(),
        severity: a.code.severity().as_str().into(),
        node_id: a.node.clone(),
        group_by: a.group.as_ref().map(|g| g.by.as_str().to_string()),
        group: a.group.as_ref().map(|g| g.value.clone()),
        raised_at: at(raised_at),
        last_seen: a.last_seen.and_then(DateTime::from_timestamp_micros),
        message: a.message(),
    }
}

/// Extension trait: the fleet's changes as lake rows.
pub trait FleetRows<'scope> {
    /// Gathers the changes on worker 0 and emits `fleet` rows at every hour the frontier passes
    /// (each group's view with every change before the hour applied) and `alerts` rows as
    /// alerts are raised and cleared. When the input ends, no further hour is written.
    fn fleet_rows(self) -> Stream<'scope, u64, Vec<LakeRow>>;
}

/// Changes held until their tick is complete, with a capability at it.
type Pending = BTreeMap<u64, (Capability<u64>, Vec<FleetChanges>)>;

impl<'scope> FleetRows<'scope> for Stream<'scope, u64, Vec<FleetChanges>> {
    fn fleet_rows(self) -> Stream<'scope, u64, Vec<LakeRow>> {
        self.unary_frontier(Exchange::new(|_| 0), "FleetRows", |_cap, _info| {
            let mut pending = Pending::new();
            let mut state = FleetState::default();
            let mut raised: HashMap<Alert, u64> = HashMap::new();
            // The next hour to write, and a capability no later than it.
            let mut next: Option<(u64, Capability<u64>)> = None;
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
                let snapshots = |state: &FleetState, hour: u64, rows: &mut Vec<LakeRow>| {
                    rows.extend(
                        state
                            .groups
                            .keys()
                            .filter_map(|g| state.snapshot(g, hour))
                            .map(|s| LakeRow::Fleet(Box::new(s))),
                    );
                };
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, (cap, changes)) = entry.remove_entry();
                    // Hours before this tick see the state without it.
                    match next.as_mut() {
                        None => next = Some((t - t % HOUR + HOUR, cap.delayed(&t))),
                        Some((hour, _)) => {
                            while *hour <= t {
                                snapshots(&state, *hour, &mut rows);
                                *hour += HOUR;
                            }
                        }
                    }
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
                    if !rows.is_empty() {
                        output.session(&cap).give_container(&mut rows);
                    }
                }
                if frontier.is_empty() {
                    // Event time stopped: no later hour is written.
                    next = None;
                    return;
                }
                // Hours the frontier has passed with no change since (every tick before them is
                // complete, so applied above).
                if let Some((hour, held)) = next.as_mut() {
                    while !frontier.less_than(hour) {
                        snapshots(&state, *hour, &mut rows);
                        if !rows.is_empty() {
                            output.session(&*held).give_container(&mut rows);
                        }
                        *hour += HOUR;
                    }
                    // Hold no later than needed: the next hour, or the input's frontier if that
                    // is earlier (so downstream progress is not held back).
                    let f = frontier.frontier().iter().min().copied().unwrap_or(*hour);
                    let keep = f.min(*hour);
                    if *held.time() < keep {
                        held.downgrade(&keep);
                    }
                }
            }
        })
    }
}
