//! A planned phase shift on a node: the step chosen from the phase response curve moves the
//! node's clock by what the curve predicted, measured against the clock's unperturbed twin, and
//! the run survives a checkpoint.

use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::node::{NodeCheckpoint, NodeConfig, NodeState};
use kaiabc_operators::phase_shift::choose;
use kaiabc_operators::prc::{phase_response_curve, PrcConfig};
use kaiabc_schemas::{
    parse_timestamp, ControlAction, ControlCommand, LakeRow, PhaseShiftOutcome, PhaseShiftPlan,
    PhaseShiftReport, SensorReading,
};

mod common;

const T0: &str = "2025-03-01T00:00:00Z";

fn at(minutes: i64) -> chrono::DateTime<chrono::Utc> {
    parse_timestamp(T0).unwrap() + chrono::Duration::minutes(minutes)
}

/// A reading at the model's reference temperature, where the curve was computed.
fn reading(seq: i64, minutes: i64, kelvin: f64) -> SensorReading {
    common::reading("n", seq, at(minutes), kelvin)
}

/// Feeds readings every 20 min from `from` to `to` (minutes), returning every report.
fn feed(cfg: &NodeConfig, n: &mut NodeState, from: i64, to: i64) -> Vec<PhaseShiftReport> {
    let mut out = Vec::new();
    let kelvin = cfg.clock.reference_temperature_k;
    for m in (from..to).step_by(20) {
        n.apply(cfg, reading(m / 20, m, kelvin), &mut out).unwrap();
    }
    out.into_iter()
        .filter_map(|r| match r {
            LakeRow::PhaseShift(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn the_planned_step_achieves_the_curve_s_prediction_through_a_checkpoint() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut node = NodeState::new(&cfg).unwrap();
    // A day on the reference temperature: the clock is on its limit cycle.
    assert!(feed(&cfg, &mut node, 0, 24 * 60).is_empty());
    let snap = node.clock().unwrap().snapshot();
    // Warm and cold steps of 5 K for 2 h; ask for a 1 h advance.
    let prc = |delta_k: f64| {
        let p = PrcConfig {
            delta_k,
            duration_minutes: 120.0,
            resolution: 24,
            settle_cycles: 4,
            kaia_factor: 1.0,
        };
        phase_response_curve(&cfg.clock, &p).unwrap()
    };
    let (warm, cold) = (prc(5.0), prc(-5.0));
    let target = 1.0;
    let choice = choose(
        &[&warm, &cold],
        snap.circadian_time,
        snap.period_hours,
        target,
    )
    .unwrap();
    // The curve must offer something useful for the test to mean anything.
    assert!(choice.predicted_shift_hours.abs() > 0.2, "{choice:?}");
    let now = 24 * 60 - 20;
    let start = at(now) + chrono::Duration::seconds((choice.wait_hours * 3600.0) as i64);
    let plan = PhaseShiftPlan {
        shift_id: "s1".into(),
        target_shift_hours: target,
        predicted_shift_hours: choice.predicted_shift_hours,
        start,
        duration_minutes: 120.0,
        delta_k: choice.delta_k,
        kaia_factor: choice.kaia_factor,
        settle_cycles: 3,
    };
    let cmd = ControlCommand {
        node_id: "n".into(),
        timestamp: at(now + 1),
        issued_by: None,
        issued_at: None,
        action: ControlAction::PhaseShift(plan),
        reason: None,
    };
    let mut out = Vec::new();
    node.control(&cfg, &cmd, &mut out).unwrap();
    assert!(out.is_empty());
    // Half a day in, the run is checkpointed and resumed; the resumed node must finish the
    // same way as the one that went on.
    let mid = now + 20 + 12 * 60;
    assert!(feed(&cfg, &mut node, now + 20, mid).is_empty());
    let mut resumed = NodeState::resume(
        &cfg,
        NodeCheckpoint::from_bytes(&node.checkpoint().to_bytes()).unwrap(),
    )
    .unwrap();
    let end = mid + 6 * 24 * 60;
    let done = feed(&cfg, &mut node, mid, end);
    let again = feed(&cfg, &mut resumed, mid, end);
    assert_eq!(done, again);
    assert_eq!(done.len(), 1, "{done:?}");
    let r = &done[0];
    assert_eq!(r.outcome, PhaseShiftOutcome::Completed);
    assert_eq!(r.shift_id, "s1");
    let achieved = r.achieved_shift_hours.unwrap();
    // The node's clock integrates at live tolerances and settles 3 cycles (the curve: tight
    // tolerances, 4 cycles): agreement within 36 s (seen: 0.1 s).
    assert!(
        (achieved - choice.predicted_shift_hours).abs() < 0.01,
        "achieved {achieved} h, predicted {} h",
        choice.predicted_shift_hours
    );
    assert!(node.shift().is_none());
}

#[test]
fn a_reset_cancels_a_shift_and_a_node_without_a_clock_says_so() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let plan = |id: &str| PhaseShiftPlan {
        shift_id: id.into(),
        target_shift_hours: 1.0,
        predicted_shift_hours: 1.0,
        start: at(600),
        duration_minutes: 60.0,
        delta_k: 5.0,
        kaia_factor: 1.0,
        settle_cycles: 2,
    };
    let cmd = |m: i64, action| ControlCommand {
        node_id: "n".into(),
        timestamp: at(m),
        issued_by: None,
        issued_at: None,
        action,
        reason: None,
    };
    let mut node = NodeState::new(&cfg).unwrap();
    let mut out = Vec::new();
    node.control(
        &cfg,
        &cmd(0, ControlAction::PhaseShift(plan("early"))),
        &mut out,
    )
    .unwrap();
    let outcomes = |out: &mut Vec<LakeRow>| -> Vec<(String, PhaseShiftOutcome)> {
        out.drain(..)
            .filter_map(|r| match r {
                LakeRow::PhaseShift(p) => Some((p.shift_id, p.outcome)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        outcomes(&mut out),
        [("early".to_string(), PhaseShiftOutcome::NoClock)]
    );
    feed(&cfg, &mut node, 0, 120);
    node.control(
        &cfg,
        &cmd(121, ControlAction::PhaseShift(plan("a"))),
        &mut out,
    )
    .unwrap();
    node.control(
        &cfg,
        &cmd(122, ControlAction::PhaseShift(plan("b"))),
        &mut out,
    )
    .unwrap();
    node.control(&cfg, &cmd(123, ControlAction::Reset), &mut out)
        .unwrap();
    assert_eq!(
        outcomes(&mut out),
        [
            ("a".to_string(), PhaseShiftOutcome::Superseded),
            ("b".to_string(), PhaseShiftOutcome::Cancelled)
        ]
    );
    assert!(node.shift().is_none());
}

/// A `parameter_modulation` shift: a step of the KaiA total chosen from its curve moves the
/// node's clock as predicted, the node's KaiA is back to the configured total after the step,
/// and a checkpoint taken inside the step resumes with the step's KaiA (a checkpoint keeps the
/// clock's state, not its parameters).
#[test]
fn a_kaia_step_achieves_its_curve_s_prediction_through_a_checkpoint_inside_the_step() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut node = NodeState::new(&cfg).unwrap();
    assert!(feed(&cfg, &mut node, 0, 24 * 60).is_empty());
    let snap = node.clock().unwrap().snapshot();
    let configured = node.clock().unwrap().kaia_total();
    let prc = |kaia_factor: f64| {
        let p = PrcConfig {
            delta_k: 0.0,
            duration_minutes: 120.0,
            resolution: 24,
            settle_cycles: 4,
            kaia_factor,
        };
        phase_response_curve(&cfg.clock, &p).unwrap()
    };
    let (more, less) = (prc(2.0), prc(0.5));
    let target = -2.0;
    let choice = choose(
        &[&more, &less],
        snap.circadian_time,
        snap.period_hours,
        target,
    )
    .unwrap();
    assert!(choice.predicted_shift_hours < -1.0, "{choice:?}");
    assert!(
        choice.kaia_factor != 1.0 && choice.delta_k == 0.0,
        "{choice:?}"
    );
    let now = 24 * 60 - 20;
    let wait_minutes = (choice.wait_hours * 60.0).round() as i64;
    let plan = PhaseShiftPlan {
        shift_id: "k1".into(),
        target_shift_hours: target,
        predicted_shift_hours: choice.predicted_shift_hours,
        start: at(now + wait_minutes),
        duration_minutes: 120.0,
        delta_k: 0.0,
        kaia_factor: choice.kaia_factor,
        settle_cycles: 3,
    };
    assert_eq!(plan.method(), "parameter_modulation");
    let cmd = ControlCommand {
        node_id: "n".into(),
        timestamp: at(now + 1),
        issued_by: None,
        issued_at: None,
        action: ControlAction::PhaseShift(plan),
        reason: None,
    };
    let mut out = Vec::new();
    node.control(&cfg, &cmd, &mut out).unwrap();
    // An hour into the step (on a reading's minute): checkpoint and resume.
    let inside = (now + wait_minutes + 60) / 20 * 20 + 20;
    assert!(feed(&cfg, &mut node, now + 20, inside).is_empty());
    let stepped = node.clock().unwrap().kaia_total();
    assert!(
        (stepped - configured * choice.kaia_factor).abs() < 1e-12,
        "{stepped} inside the step"
    );
    let mut resumed = NodeState::resume(
        &cfg,
        NodeCheckpoint::from_bytes(&node.checkpoint().to_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(resumed.clock().unwrap().kaia_total(), stepped);
    let end = inside + 6 * 24 * 60;
    let done = feed(&cfg, &mut node, inside, end);
    let again = feed(&cfg, &mut resumed, inside, end);
    assert_eq!(done, again);
    assert_eq!(done.len(), 1, "{done:?}");
    let r = &done[0];
    assert_eq!(
        (r.outcome, r.kaia_factor),
        (PhaseShiftOutcome::Completed, choice.kaia_factor)
    );
    assert_eq!(node.clock().unwrap().kaia_total(), configured);
    let achieved = r.achieved_shift_hours.unwrap();
    // Live tolerances against the curve's tight ones, 3 settling cycles against 4.
    assert!(
        (achieved - choice.predicted_shift_hours).abs() < 0.05,
        "achieved {achieved} h, predicted {} h",
        choice.predicted_shift_hours
    );
    assert!(r.settling_time_hours.is_some_and(|h| h > 0.0), "{r:?}");
}
