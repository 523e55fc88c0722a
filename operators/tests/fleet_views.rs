//! The fleet's views and alert rules end to end through differential dataflow: synchrony of a
//! fleet in phase and of one spread evenly (R against its definition, |mean of e^{2πi·phase}|),
//! status timers in event time, each alert raised once and cleared once, registry changes
//! moving a node between groups, and the same changes for 1 and 4 workers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::input::Input;
use kaiabc_operators::fleet::{
    fleet_views, AlertChange, AlertCode, ClockView, FleetChanges, FleetConfig, FleetFact,
    FleetOutput, FleetRows, FleetState, GroupBy, GroupKey, Measure, Name, NodeEvent, NodeMeta,
    OrdF64, Status,
};
use kaiabc_schemas::{LakeRow, Reason};
use timely::dataflow::operators::vec::Input as _;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

/// One input at a tick: a node's event, or a registry change (`None` removes the record).
#[derive(Clone)]
enum In {
    Event(NodeEvent),
    Registry(Name, NodeMeta, isize),
}

/// Runs the views over `inputs` (ticks non-decreasing), with the input advanced to `end`
/// before it closes (timers before `end` fire; later ones are dropped with the input), and
/// returns each tick's changes from every worker, consolidated and sorted.
fn run(workers: usize, inputs: Vec<(u64, In)>, end: u64, cfg: FleetConfig) -> Vec<FleetChanges> {
    run_all(workers, inputs, end, cfg).0
}

/// As [`run`], with the lake rows the changes make (sorted as `kaiabc query` would).
fn run_all(
    workers: usize,
    inputs: Vec<(u64, In)>,
    end: u64,
    cfg: FleetConfig,
) -> (Vec<FleetChanges>, Vec<String>) {
    let out: Arc<Mutex<Vec<FleetChanges>>> = Arc::default();
    let sink = Arc::clone(&out);
    let rows: Arc<Mutex<Vec<String>>> = Arc::default();
    let row_sink = Arc::clone(&rows);
    let inputs = Arc::new(inputs);
    timely::execute(timely::Config::process(workers), move |worker| {
        let sink = Arc::clone(&sink);
        let row_sink = Arc::clone(&row_sink);
        let cfg = cfg.clone();
        let probe = ProbeHandle::new();
        let p = probe.clone();
        let (mut events, mut registry) = worker.dataflow::<u64, _, _>(move |scope| {
            let (events_in, events) = scope.new_input::<NodeEvent>();
            let (registry_in, registry) = scope.new_collection::<(Name, NodeMeta), isize>();
            fleet_views(events, registry, cfg)
                .fleet_changes()
                .inspect(move |c: &FleetChanges| sink.lock().unwrap().push(c.clone()))
                .fleet_rows()
                .inspect(move |r: &LakeRow| {
                    let text = match r {
                        LakeRow::Fleet(f) => serde_json::to_string(f).unwrap(),
                        LakeRow::Alert(a) => serde_json::to_string(a).unwrap(),
                        _ => String::new(),
                    };
                    row_sink.lock().unwrap().push(text);
                })
                .probe_with(&p);
            (events_in, registry_in)
        });
        if worker.index() == 0 {
            for (t, input) in inputs.iter() {
                events.advance_to(*t);
                registry.advance_to(*t);
                match input {
                    In::Event(e) => events.send(e.clone()),
                    In::Registry(node, meta, d) => {
                        registry.update((node.clone(), meta.clone()), *d)
                    }
                }
            }
        }
        // Every worker's input handle holds the frontier back until it advances.
        events.advance_to(end);
        registry.advance_to(end);
        registry.flush();
        // Event time reaches `end` before the input closes.
        worker.step_while(|| probe.less_than(&end));
        drop(events);
        drop(registry);
        while worker.step() {}
    })
    .unwrap();
    let mut lake = std::mem::take(&mut *rows.lock().unwrap());
    lake.sort();
    let all = std::mem::take(&mut *out.lock().unwrap());
    let mut by_time: BTreeMap<u64, Vec<(FleetFact, isize)>> = BTreeMap::new();
    for c in all {
        by_time.entry(c.time).or_default().extend(c.changes);
    }
    let changes = by_time
        .into_iter()
        .map(|(time, mut changes)| {
            consolidate(&mut changes);
            changes.sort_by(|a, b| (a.1 > 0, &a.0).cmp(&(b.1 > 0, &b.0)));
            FleetChanges { time, changes }
        })
        .filter(|c| !c.changes.is_empty())
        .collect();
    (changes, lake)
}

/// The views refreshed by every state (the default refreshes a node's clock every 10 minutes).
fn every_state() -> FleetConfig {
    FleetConfig {
        clock_resolution_minutes: 1,
        ..FleetConfig::default()
    }
}

fn clock(phase: f64) -> ClockView {
    ClockView {
        phase: OrdF64::from(phase),
        circadian_time: OrdF64::from(24.0 * phase),
        period_hours: OrdF64::from(24.0),
        koa: OrdF64::from(0.5),
        temperature_kelvin: OrdF64::from(303.15),
    }
}

fn state(node: &str, tick: u64, phase: f64) -> (u64, In) {
    (
        tick,
        In::Event(NodeEvent::State {
            node: node.into(),
            at: tick as i64 * 60_000_000,
            clock: clock(phase),
        }),
    )
}

fn meta(location: &str, hw: &str) -> NodeMeta {
    NodeMeta {
        location: location.into(),
        hardware_type: hw.into(),
        runtime: "micropython".into(),
    }
}

/// The views after every tick, and the alert changes in order.
fn replay(changes: &[FleetChanges]) -> (BTreeMap<u64, FleetState>, Vec<AlertChange>) {
    let mut state = FleetState::default();
    let mut states = BTreeMap::new();
    let mut alerts = Vec::new();
    for c in changes {
        alerts.extend(state.apply(c));
        states.insert(c.time, state.clone());
    }
    (states, alerts)
}

fn fleet() -> GroupKey {
    GroupKey {
        by: GroupBy::Fleet,
        value: "all".into(),
    }
}

/// The view in force at `tick` (the last change at or before it).
fn at(states: &BTreeMap<u64, FleetState>, tick: u64) -> &FleetState {
    states.range(..=tick).next_back().unwrap().1
}

#[test]
fn r_is_one_in_phase_and_near_zero_for_phases_spread_evenly() {
    // 24 nodes at the same phase at tick 1, then spread k/24 round the cycle at tick 2.
    let mut inputs: Vec<_> = (0..24).map(|k| state(&format!("n{k}"), 1, 0.3)).collect();
    inputs.extend((0..24).map(|k| state(&format!("n{k}"), 2, k as f64 / 24.0)));
    let (states, _) = replay(&run(1, inputs, 3, every_state()));
    let r = |t| {
        at(&states, t).groups[&fleet()]
            .phase
            .order_parameter()
            .unwrap()
    };
    assert!((r(1) - 1.0).abs() < 1e-9, "in phase: R = {}", r(1));
    // Σ e^{2πik/24} = 0 exactly; the fixed point leaves ~1e-9.
    assert!(r(2) < 1e-8, "spread evenly: R = {}", r(2));
    let g = &at(&states, 2).groups[&fleet()];
    assert_eq!((g.nodes, g.online), (24, 24));
}

#[test]
fn a_silent_node_turns_stale_then_offline_on_event_time_and_its_alert_clears_once() {
    let cfg = FleetConfig::default();
    // Node a reports at 0 and 1, then nothing until 20; node b keeps event time moving.
    let mut inputs = vec![state("a", 0, 0.1), state("a", 1, 0.1)];
    inputs.extend((0..30).map(|t| state("b", t, 0.1)));
    inputs.sort_by_key(|(t, _)| *t);
    inputs.insert(
        inputs.iter().position(|(t, _)| *t == 21).unwrap(),
        state("a", 20, 0.1),
    );
    let (states, alerts) = replay(&run(1, inputs, 40, cfg.clone()));
    let status = |t| {
        let g = &at(&states, t).groups[&fleet()];
        (g.online, g.stale, g.offline)
    };
    // Stale after 2 minutes without a reading (tick 3), offline after 5 (tick 6).
    assert_eq!(status(2), (2, 0, 0));
    assert_eq!(status(3), (1, 1, 0));
    assert_eq!(status(5), (1, 1, 0));
    assert_eq!(status(6), (1, 0, 1));
    assert_eq!(status(20), (2, 0, 0));
    // Offline nodes leave the synchrony: one live clock while a is away.
    assert_eq!(at(&states, 6).groups[&fleet()].phase.n, 1);
    let offline: Vec<_> = alerts
        .iter()
        .filter(|c| match c {
            AlertChange::Raised(a, _) | AlertChange::Cleared(a, _) => {
                a.code == AlertCode::NodeOffline && a.node.as_deref() == Some("a")
            }
        })
        .map(|c| match c {
            AlertChange::Raised(a, t) => ("raised", *t, a.last_seen),
            AlertChange::Cleared(a, t) => ("cleared", *t, a.last_seen),
        })
        .collect();
    assert_eq!(
        offline,
        [
            ("raised", 6, Some(60_000_000)),
            ("cleared", 20, Some(60_000_000)),
            // Silent again after its reading at 20.
            ("raised", 25, Some(1_200_000_000)),
        ]
    );
    // b's stream ends at 29: the input runs to 40, so b goes offline at 34, and stays.
    assert_eq!(status(39), (0, 0, 2));
}

#[test]
fn a_failing_node_and_a_dead_letter_burst_raise_and_clear_their_alerts() {
    let cfg = FleetConfig {
        dead_letters_per_hour_alert: 3,
        // Nobody goes offline in this test.
        offline_after_minutes: 1000,
        stale_after_minutes: 1000,
        ..FleetConfig::default()
    };
    let dead = |t: u64, reason: Reason| {
        (
            t,
            In::Event(NodeEvent::DeadLetter {
                node: Some("a".into()),
                reason,
                at: t as i64 * 60_000_000,
            }),
        )
    };
    let inputs = vec![
        state("a", 0, 0.2),
        dead(1, Reason::OdeInstability),
        state("a", 2, 0.2),
        dead(3, Reason::TemperatureOutOfRange),
        // The third in an hour (with the one at 1): not above 3.
        dead(4, Reason::TemperatureOutOfRange),
        // The fourth: above 3.
        dead(5, Reason::TemperatureOutOfRange),
        dead(10, Reason::TemperatureOutOfRange),
        state("a", 70, 0.2),
    ];
    let (states, alerts) = replay(&run(1, inputs, 200, cfg));
    let changes: Vec<_> = alerts
        .iter()
        .map(|c| match c {
            AlertChange::Raised(a, t) => ("raised", a.code, *t),
            AlertChange::Cleared(a, t) => ("cleared", a.code, *t),
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("raised", AlertCode::OdeInstability, 1),
            ("cleared", AlertCode::OdeInstability, 2),
            ("raised", AlertCode::DeadLetterRate, 5),
            // At 61 the one of tick 1 leaves the last hour (4 left), at 63 the one of 3.
            ("cleared", AlertCode::DeadLetterRate, 63),
        ]
    );
    // Dead letters by node, hour and reason; the hour is retracted after the retention.
    let dl = &at(&states, 70).dead_letters;
    assert_eq!(dl[&(Some("a".into()), 0, Reason::TemperatureOutOfRange)], 4);
    // 24 hours after its hour ended, the hour is gone.
    let (late, _) = replay(&run(
        1,
        vec![dead(1, Reason::Duplicate), state("a", 1600, 0.2)],
        1600,
        FleetConfig::default(),
    ));
    assert_eq!(at(&late, 1499).dead_letters.len(), 1);
    assert!(at(&late, 1500).dead_letters.is_empty());
    assert_eq!(dl[&(Some("a".into()), 0, Reason::OdeInstability)], 1);
    assert_eq!(at(&states, 70).groups[&fleet()].failing, 0);
}

#[test]
fn registry_records_place_nodes_in_groups_and_move_them() {
    let window = |node: &str, t: u64, p: f64| {
        (
            t,
            In::Event(NodeEvent::Window {
                node: node.into(),
                period_hours: Some(p),
            }),
        )
    };
    let mut inputs = vec![
        (0, In::Registry("a".into(), meta("chamber-1", "elm11"), 1)),
        (
            0,
            In::Registry("b".into(), meta("chamber-1", "raspberry_pi_pico"), 1),
        ),
        (
            0,
            In::Registry("c".into(), meta("chamber-1", "raspberry_pi_pico"), 1),
        ),
        (0, In::Registry("d".into(), meta("field", "elm11"), 1)),
    ];
    for t in 1..10 {
        for n in ["a", "b", "c"] {
            inputs.push(state(n, t, 0.5));
        }
    }
    // Window periods: c runs 3 h long against a group median of 24.
    inputs.push(window("a", 5, 24.0));
    inputs.push(window("b", 5, 24.2));
    inputs.push(window("c", 5, 27.0));
    // c moves to the field at tick 8.
    inputs.push((
        8,
        In::Registry("c".into(), meta("chamber-1", "raspberry_pi_pico"), -1),
    ));
    inputs.push((
        8,
        In::Registry("c".into(), meta("field", "raspberry_pi_pico"), 1),
    ));
    inputs.sort_by_key(|(t, _)| *t);
    let (states, alerts) = replay(&run(1, inputs, 10, FleetConfig::default()));
    let loc = |v: &str| GroupKey {
        by: GroupBy::Location,
        value: v.into(),
    };
    let s5 = at(&states, 5);
    assert_eq!(s5.groups[&loc("chamber-1")].nodes, 3);
    // d is registered and silent: offline, without an alert.
    assert_eq!(s5.groups[&loc("field")].offline, 1);
    assert_eq!(s5.groups[&fleet()].pico, 2);
    assert_eq!(
        s5.spreads[&(loc("chamber-1"), Measure::WindowPeriodHours)]
            .median
            .get(),
        24.2
    );
    assert!(s5
        .outliers
        .contains_key(&(loc("chamber-1"), Name::from("c"))));
    let s8 = at(&states, 8);
    assert_eq!(s8.groups[&loc("chamber-1")].nodes, 2);
    assert_eq!(s8.groups[&loc("field")].nodes, 2);
    assert!(!s8
        .outliers
        .contains_key(&(loc("chamber-1"), Name::from("c"))));
    let drift: Vec<_> = alerts
        .iter()
        .filter_map(|c| match c {
            AlertChange::Raised(a, t) if a.code == AlertCode::PeriodDrift => Some(("raised", *t)),
            AlertChange::Cleared(a, t) if a.code == AlertCode::PeriodDrift => Some(("cleared", *t)),
            _ => None,
        })
        .collect();
    // Raised at 5; cleared at 8 when c left (with one other live node in the field, c is
    // its own median's neighbour: no drift there).
    assert_eq!(drift, [("raised", 5), ("cleared", 8)]);
    assert!(alerts.iter().all(|c| match c {
        AlertChange::Raised(a, _) => a.code != AlertCode::NodeOffline,
        _ => true,
    }));
}

#[test]
fn a_group_whose_clocks_drift_apart_is_desynchronized_until_they_align() {
    let mut inputs = Vec::new();
    for k in 0..4 {
        inputs.push(state(&format!("n{k}"), 1, 0.1));
        // Spread evenly at tick 2: R = 0.
        inputs.push(state(&format!("n{k}"), 2, k as f64 / 4.0));
        inputs.push(state(&format!("n{k}"), 3, 0.1 + 0.01 * k as f64));
    }
    inputs.sort_by_key(|(t, _)| *t);
    let (_, alerts) = replay(&run(1, inputs, 4, every_state()));
    let desync: Vec<_> = alerts
        .iter()
        .filter_map(|c| match c {
            AlertChange::Raised(a, t) if a.code == AlertCode::Desynchronized => {
                Some(("raised", a.group.clone().unwrap().by, *t))
            }
            AlertChange::Cleared(a, t) if a.code == AlertCode::Desynchronized => {
                Some(("cleared", a.group.clone().unwrap().by, *t))
            }
            _ => None,
        })
        .collect();
    // The fleet, the one location (unassigned) and the one board group (unknown).
    let mut raised: Vec<_> = desync.iter().filter(|d| d.0 == "raised").collect();
    raised.sort();
    assert_eq!(raised.len(), 3);
    assert!(desync.iter().all(|d| (d.0 == "raised") == (d.2 == 2)));
    assert_eq!(desync.len(), 6);
}

#[test]
fn the_views_are_the_same_for_one_and_four_workers() {
    // 300 nodes in 7 locations over 3 hours; some go silent, some send dead letters, windows
    // close hourly; a pseudo-random but fixed sequence.
    let mut inputs = Vec::new();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for n in 0..300 {
        let hw = if n % 3 == 0 {
            "elm11"
        } else {
            "raspberry_pi_pico"
        };
        inputs.push((
            0,
            In::Registry(
                format!("n{n}").into(),
                meta(&format!("loc{}", n % 7), hw),
                1,
            ),
        ));
    }
    for t in 0..180u64 {
        for n in 0..300 {
            let r = next();
            if n % 50 == 7 && t > 60 && t < 90 {
                continue; // silent for half an hour
            }
            if r % 10 == 0 {
                inputs.push((
                    t,
                    In::Event(NodeEvent::DeadLetter {
                        node: Some(format!("n{n}").into()),
                        reason: Reason::TemperatureOutOfRange,
                        at: t as i64 * 60_000_000,
                    }),
                ));
            }
            if r % 3 != 0 {
                let phase =
                    ((t as f64 / 1440.0) + (n % 7) as f64 * 0.05 + (r % 100) as f64 * 1e-4).fract();
                inputs.push(state(&format!("n{n}"), t, phase));
            }
            if t % 60 == 59 {
                inputs.push((
                    t,
                    In::Event(NodeEvent::Window {
                        node: format!("n{n}").into(),
                        period_hours: Some(24.0 + (r % 40) as f64 * 0.1),
                    }),
                ));
            }
        }
    }
    let (one, one_rows) = run_all(1, inputs.clone(), 200, FleetConfig::default());
    let (four, four_rows) = run_all(4, inputs, 200, FleetConfig::default());
    assert!(one.len() > 100, "{} ticks changed", one.len());
    assert_eq!(one, four);
    // Hourly views of the fleet, 7 locations and 2 boards at 60 and 120, and the alerts.
    assert!(one_rows.len() > 2 * 10, "{}", one_rows.len());
    assert_eq!(one_rows, four_rows);
    let (states, alerts) = replay(&one);
    assert!(alerts
        .iter()
        .any(|c| matches!(c, AlertChange::Raised(a, _) if a.code == AlertCode::NodeOffline)));
    assert_eq!(at(&states, 30).groups[&fleet()].nodes, 300);
    assert!(at(&states, 75).groups[&fleet()].offline >= 6);
    let _ = Status::Online;
}

#[test]
fn hourly_rows_skip_the_empty_years_before_the_first_reading_and_stop_with_the_input() {
    // Registered at tick 0; readings from tick 1 200 000 (an hour) for 150 minutes.
    let base = 1_200_000u64;
    let mut inputs = vec![(0, In::Registry("a".into(), meta("lab", "elm11"), 1))];
    inputs.extend((0..150).map(|m| state("a", base + m, 0.1 + m as f64 * 1e-3)));
    let (_, rows) = run_all(2, inputs, base + 150, FleetConfig::default());
    let fleet: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap())
        .filter(|r| r["group_by"] == "fleet")
        .collect();
    let hours: Vec<&str> = fleet
        .iter()
        .map(|r| r["snapshot_at"].as_str().unwrap())
        .collect();
    // Nothing for the registry alone (not one row per hour since 1970), then each hour the
    // views changed in, as they stood at its end; none after the input ended.
    assert_eq!(
        hours,
        ["1972-04-13T09:00:00.000000Z", "1972-04-13T10:00:00.000000Z"]
    );
    assert_eq!(
        (fleet[0]["offline"].as_i64(), fleet[0]["online"].as_i64()),
        (Some(0), Some(1))
    );
    // The clock at 10:00 is as refreshed at 09:50 (every 10 minutes): 0.1 + 110·0.001.
    let p = fleet[1]["mean_phase"].as_f64().unwrap();
    assert!((p - 0.21).abs() < 1e-9, "{p}");
}
