//! Control commands on a node: reset returns the clock to its initial condition, a pause holds
//! the clock while readings are still recorded, a manual override holds the output, and all of
//! it survives a checkpoint.

use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::node::{Disposition, NodeCheckpoint, NodeConfig, NodeState};
use kaiabc_schemas::{
    parse_timestamp, ControlAction, ControlCommand, LakeRow, OscillatorState, Quality,
    SensorReading,
};

const T0: &str = "2025-03-01T00:00:00Z";

/// A reading of `node` at `minutes` after T0, at a constant 300 K (so the filtered drive is
/// exactly the same whatever the filter has seen).
fn reading(node: &str, seq: i64, minutes: i64) -> SensorReading {
    SensorReading {
        node_id: node.into(),
        seq: Some(seq),
        timestamp: parse_timestamp(T0).unwrap() + chrono::Duration::minutes(minutes),
        temperature_kelvin: 300.0,
        humidity_percent: None,
        pressure_pa: None,
        light_lux: None,
        sensor_type: "BME280".into(),
        quality: Quality::Good,
        raw_values: None,
    }
}

fn command(node: &str, minutes: i64, action: ControlAction) -> ControlCommand {
    ControlCommand {
        node_id: node.into(),
        timestamp: parse_timestamp(T0).unwrap() + chrono::Duration::minutes(minutes),
        issued_by: None,
        action,
    }
}

/// Applies a reading and returns its state row, if any.
fn state(
    cfg: &NodeConfig,
    n: &mut NodeState,
    r: SensorReading,
) -> (Disposition, Option<OscillatorState>) {
    let mut out = Vec::new();
    let d = n.apply(cfg, r, &mut out).unwrap();
    let s = out.into_iter().find_map(|row| match row {
        LakeRow::State(s) => Some(s),
        _ => None,
    });
    (d, s)
}

/// Circadian-time distance on the 24 h circle.
fn ct_gap(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(24.0);
    d.min(24.0 - d)
}

#[test]
fn a_reset_returns_the_clock_to_its_initial_condition() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut a = NodeState::new(&cfg).unwrap();
    // A day and a half of readings every 20 minutes: the clock is far from its start.
    let mut last = None;
    for k in 0..108 {
        last = state(&cfg, &mut a, reading("a", k, 20 * k)).1;
    }
    let before = last.unwrap();
    assert!(
        ct_gap(before.circadian_time, cfg.initial_ct) > 1.0,
        "{before:?}"
    );
    a.control(&cfg, &command("a", 20 * 107 + 5, ControlAction::Reset))
        .unwrap();
    let (_, after) = state(&cfg, &mut a, reading("a", 108, 20 * 108));
    // A fresh node whose clock starts with the last reading before the reset, 20 minutes
    // earlier, is where the reset node must be.
    let mut fresh = NodeState::new(&cfg).unwrap();
    state(&cfg, &mut fresh, reading("f", 107, 20 * 107));
    let (_, expected) = state(&cfg, &mut fresh, reading("f", 108, 20 * 108));
    let (after, expected) = (after.unwrap(), expected.unwrap());
    assert!(
        ct_gap(after.circadian_time, expected.circadian_time) < 1e-6,
        "{} vs {}",
        after.circadian_time,
        expected.circadian_time
    );
    assert!((after.state_variables.C_S - expected.state_variables.C_S).abs() < 1e-9);
}

#[test]
fn a_paused_clock_holds_its_state_and_resumes_as_if_no_time_had_passed() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut a = NodeState::new(&cfg).unwrap();
    // The reference never pauses: its readings after the pause are shifted back by its length.
    let mut reference = NodeState::new(&cfg).unwrap();
    for k in 0..30 {
        state(&cfg, &mut a, reading("a", k, 20 * k));
        state(&cfg, &mut reference, reading("r", k, 20 * k));
    }
    a.control(&cfg, &command("a", 20 * 29 + 1, ControlAction::Pause))
        .unwrap();
    // Five hours paused: readings are kept, but give no state.
    for k in 30..45 {
        let (d, s) = state(&cfg, &mut a, reading("a", k, 20 * k));
        assert_eq!(d, Disposition::Paused);
        assert!(s.is_none());
    }
    let resumed_at = 20 * 44 + 10;
    a.control(&cfg, &command("a", resumed_at, ControlAction::Resume))
        .unwrap();
    let pause = resumed_at - (20 * 29 + 1);
    for k in 45..60 {
        let (_, got) = state(&cfg, &mut a, reading("a", k, 20 * k));
        let (_, want) = state(&cfg, &mut reference, reading("r", k, 20 * k - pause));
        let (got, want) = (got.unwrap(), want.unwrap());
        assert!(
            ct_gap(got.circadian_time, want.circadian_time) < 1e-3,
            "reading {k}: {} vs {}",
            got.circadian_time,
            want.circadian_time
        );
    }
}

#[test]
fn an_override_holds_the_output_until_cleared_and_survives_a_checkpoint() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut a = NodeState::new(&cfg).unwrap();
    let (_, s) = state(&cfg, &mut a, reading("a", 0, 0));
    let free = s.unwrap().output_pwm;
    let hold = if free == 77 { 78 } else { 77 };
    a.control(
        &cfg,
        &command("a", 1, ControlAction::ManualOverride { pwm: Some(hold) }),
    )
    .unwrap();
    a.control(&cfg, &command("a", 2, ControlAction::Pause))
        .unwrap();
    // Through a checkpoint, both the override and the pause are kept.
    let bytes = a.checkpoint().to_bytes();
    let cp = NodeCheckpoint::from_bytes(&bytes).unwrap();
    assert_eq!(cp.control().override_pwm, Some(hold));
    assert!(cp.control().paused_since.is_some());
    let mut b = NodeState::resume(&cfg, cp).unwrap();
    assert_eq!(
        state(&cfg, &mut b, reading("a", 1, 20)).0,
        Disposition::Paused
    );
    b.control(&cfg, &command("a", 21, ControlAction::Resume))
        .unwrap();
    let (_, s) = state(&cfg, &mut b, reading("a", 2, 40));
    assert_eq!(s.unwrap().output_pwm, i32::from(hold));
    b.control(
        &cfg,
        &command("a", 41, ControlAction::ManualOverride { pwm: None }),
    )
    .unwrap();
    let (_, s) = state(&cfg, &mut b, reading("a", 3, 60));
    let s = s.unwrap();
    assert_eq!(s.output_pwm, i32::from(cfg.mapping.pwm(s.koa_metric)));
}

#[test]
fn version_1_checkpoints_still_resume_without_controls() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut a = NodeState::new(&cfg).unwrap();
    state(&cfg, &mut a, reading("a", 0, 0));
    let v2 = a.checkpoint().to_bytes();
    // Version 2 is version 1's fields, then the control state (two `None`s: one byte each).
    assert_eq!(&v2[v2.len() - 2..], &[0, 0]);
    let mut v1 = v2[..v2.len() - 2].to_vec();
    v1[0] = 1;
    let cp = NodeCheckpoint::from_bytes(&v1).unwrap();
    assert_eq!(cp.control(), Default::default());
    assert_eq!(cp.last_micros(), a.checkpoint().last_micros());
}
