//! Control commands on a node: reset returns the clock to its initial condition, a pause holds
//! the clock while readings are still recorded, a manual override holds the output, and all of
//! it survives a checkpoint.

use kaiabc_operators::clock::ClockConfig;
use kaiabc_operators::node::{Disposition, NodeCheckpoint, NodeConfig, NodeState};
use kaiabc_schemas::{
    parse_timestamp, ControlAction, ControlCommand, LakeRow, OscillatorState, SensorReading,
};

mod common;

const T0: &str = "2025-03-01T00:00:00Z";

/// A reading of `node` at `minutes` after T0, at a constant 300 K (so the filtered drive is
/// exactly the same whatever the filter has seen).
fn reading(node: &str, seq: i64, minutes: i64) -> SensorReading {
    let at = parse_timestamp(T0).unwrap() + chrono::Duration::minutes(minutes);
    common::reading(node, seq, at, 300.0)
}

fn command(node: &str, minutes: i64, action: ControlAction) -> ControlCommand {
    ControlCommand {
        node_id: node.into(),
        timestamp: parse_timestamp(T0).unwrap() + chrono::Duration::minutes(minutes),
        issued_by: None,
        issued_at: None,
        action,
        reason: None,
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

/// Applies a command, returning what it reported.
fn ctl(cfg: &NodeConfig, n: &mut NodeState, c: ControlCommand) -> Vec<LakeRow> {
    let mut out = Vec::new();
    n.control(cfg, &c, &mut out).unwrap();
    out
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
    ctl(
        &cfg,
        &mut a,
        command("a", 20 * 107 + 5, ControlAction::Reset),
    );
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
    ctl(
        &cfg,
        &mut a,
        command("a", 20 * 29 + 1, ControlAction::Pause),
    );
    // Five hours paused: readings are kept, but give no state.
    for k in 30..45 {
        let (d, s) = state(&cfg, &mut a, reading("a", k, 20 * k));
        assert_eq!(d, Disposition::Paused);
        assert!(s.is_none());
    }
    let resumed_at = 20 * 44 + 10;
    ctl(
        &cfg,
        &mut a,
        command("a", resumed_at, ControlAction::Resume),
    );
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
    ctl(
        &cfg,
        &mut a,
        command(
            "a",
            1,
            ControlAction::ManualOverride {
                pwm: Some(hold),
                duration_minutes: None,
            },
        ),
    );
    ctl(&cfg, &mut a, command("a", 2, ControlAction::Pause));
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
    ctl(&cfg, &mut b, command("a", 21, ControlAction::Resume));
    let (_, s) = state(&cfg, &mut b, reading("a", 2, 40));
    assert_eq!(s.unwrap().output_pwm, i32::from(hold));
    ctl(
        &cfg,
        &mut b,
        command(
            "a",
            41,
            ControlAction::ManualOverride {
                pwm: None,
                duration_minutes: None,
            },
        ),
    );
    let (_, s) = state(&cfg, &mut b, reading("a", 3, 60));
    let s = s.unwrap();
    assert_eq!(s.output_pwm, i32::from(cfg.mapping.pwm(s.koa_metric)));
}

#[test]
fn version_1_to_4_checkpoints_still_resume() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut a = NodeState::new(&cfg).unwrap();
    state(&cfg, &mut a, reading("a", 0, 0));
    let v5 = a.checkpoint().to_bytes();
    // Version 5 is version 4's fields, then no calibration, solver settings or override end
    // (three `None`s); version 4 is version 3's, then the summary of keys seen; version 3 is
    // version 2's, then the settings (five `None`s) and no phase shift (one `None`); version 2
    // is version 1's, then the control state (two `None`s). A `None` is one byte.
    assert_eq!(&v5[v5.len() - 3..], &[0; 3]);
    let mut v4 = v5[..v5.len() - 3].to_vec();
    v4[0] = 4;
    let seen = postcard::to_allocvec(&a.dedup().seen).unwrap();
    let mut v3 = v4[..v4.len() - seen.len()].to_vec();
    v3[0] = 3;
    assert_eq!(&v3[v3.len() - 8..], &[0; 8]);
    let mut v2 = v3[..v3.len() - 6].to_vec();
    v2[0] = 2;
    let mut v1 = v3[..v3.len() - 8].to_vec();
    v1[0] = 1;
    for old in [v1, v2, v3, v4] {
        let cp = NodeCheckpoint::from_bytes(&old).unwrap();
        assert_eq!(cp.control(), Default::default());
        assert_eq!(cp.settings(), Default::default());
        assert_eq!(cp.last_micros(), a.checkpoint().last_micros());
        NodeState::resume(&cfg, cp).unwrap();
    }
}

#[test]
fn a_calibration_offsets_the_readings_before_the_filter_and_survives_a_checkpoint() {
    use kaiabc_schemas::Calibration;
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let cal = Calibration {
        temperature_offset: 0.5,
        humidity_offset: -2.0,
        pressure_offset: 0.0,
    };
    let mut a = NodeState::new(&cfg).unwrap();
    ctl(
        &cfg,
        &mut a,
        command("a", 0, ControlAction::Calibration(cal)),
    );
    let cp = NodeCheckpoint::from_bytes(&a.checkpoint().to_bytes()).unwrap();
    assert_eq!(cp.settings().calibration, Some(cal));
    let mut b = NodeState::resume(&cfg, cp).unwrap();
    // The first reading initialises the filter at the measurement: the calibrated one.
    let mut out = Vec::new();
    let mut r = reading("a", 0, 1);
    r.humidity_percent = Some(40.0);
    b.apply(&cfg, r.clone(), &mut out).unwrap();
    let row = out
        .iter()
        .find_map(|o| match o {
            LakeRow::Reading(row) => Some(row.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        row.reading.temperature_kelvin, r.temperature_kelvin,
        "stored as sent"
    );
    assert!((row.filtered_temperature_kelvin.unwrap() - (r.temperature_kelvin + 0.5)).abs() < 1e-9);
    assert!((row.filtered_humidity_percent.unwrap() - 38.0).abs() < 1e-9);
    // An implausible calibration changes nothing.
    let bad = Calibration {
        temperature_offset: 80.0,
        ..cal
    };
    let mut out = Vec::new();
    assert!(b
        .control(
            &cfg,
            &command("a", 2, ControlAction::Calibration(bad)),
            &mut out
        )
        .is_err());
    assert_eq!(b.settings().calibration, Some(cal));
}

#[test]
fn parameter_changes_act_like_a_node_configured_so_and_survive_a_checkpoint() {
    use kaiabc_operators::settings::NodeSettings;
    use kaiabc_schemas::{EntrainmentPatch, MappingFunction, MappingPatch};
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    // The node's own ETF from its first reading equals a shared configuration with that ETF
    // (and the same reference cycle, which only places the initial phase).
    let mut changed = NodeState::new(&cfg).unwrap();
    ctl(
        &cfg,
        &mut changed,
        command(
            "a",
            0,
            ControlAction::Entrainment(EntrainmentPatch {
                rate_scale: Some(1.1),
                activation_energy_kaia_kj_mol: Some(50.0),
                ..Default::default()
            }),
        ),
    );
    let mut other = cfg.clone();
    other.clock.etf.rate_scale = 1.1;
    other.clock.etf.activation_energy_kaia_kj_mol = 50.0;
    let mut configured = NodeState::new(&other).unwrap();
    let mut baseline = NodeState::new(&cfg).unwrap();
    let (mut got, mut want, mut base) = (None, None, None);
    for k in 0..72 {
        got = state(&cfg, &mut changed, reading("a", k, 20 * k)).1;
        want = state(&other, &mut configured, reading("a", k, 20 * k)).1;
        base = state(&cfg, &mut baseline, reading("a", k, 20 * k)).1;
    }
    let (got, want, base) = (got.unwrap(), want.unwrap(), base.unwrap());
    assert_eq!(got.state_variables, want.state_variables);
    // ...and differs from the shared ETF (the change did something).
    assert_ne!(got.state_variables, base.state_variables);

    // An inverted sigmoid mapping drives the output from then on.
    ctl(
        &cfg,
        &mut changed,
        command(
            "a",
            20 * 72,
            ControlAction::OutputMapping(MappingPatch {
                mapping_function: Some(MappingFunction::Sigmoid),
                invert: Some(true),
                ..Default::default()
            }),
        ),
    );
    let mapping = changed.settings().effective(&cfg).mapping;
    assert!(mapping.invert);
    let s = state(&cfg, &mut changed, reading("a", 73, 20 * 73))
        .1
        .unwrap();
    assert_eq!(s.output_pwm, i32::from(mapping.pwm(s.koa_metric)));

    // A change that is invalid with the node's other settings is refused and changes nothing.
    let before = changed.settings();
    let bad = command(
        "a",
        20 * 73 + 1,
        ControlAction::OutputMapping(MappingPatch {
            koa_threshold_low: Some(0.95),
            koa_threshold_high: Some(0.9),
            ..Default::default()
        }),
    );
    assert!(changed.control(&cfg, &bad, &mut Vec::new()).is_err());
    assert_eq!(changed.settings(), before);

    // Through a checkpoint the settings hold, and the clock runs on exactly as before.
    let cp = NodeCheckpoint::from_bytes(&changed.checkpoint().to_bytes()).unwrap();
    assert_ne!(cp.settings(), NodeSettings::default());
    let mut resumed = NodeState::resume(&cfg, cp).unwrap();
    let a = state(&cfg, &mut changed, reading("a", 74, 20 * 74))
        .1
        .unwrap();
    let b = state(&cfg, &mut resumed, reading("a", 74, 20 * 74))
        .1
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_timed_override_ends_by_itself_in_event_time_and_survives_a_checkpoint() {
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut a = NodeState::new(&cfg).unwrap();
    let (_, s) = state(&cfg, &mut a, reading("a", 0, 0));
    let hold = if s.unwrap().output_pwm == 77 { 78 } else { 77 };
    ctl(
        &cfg,
        &mut a,
        command(
            "a",
            1,
            ControlAction::ManualOverride {
                pwm: Some(hold),
                duration_minutes: Some(30.0),
            },
        ),
    );
    let cp = NodeCheckpoint::from_bytes(&a.checkpoint().to_bytes()).unwrap();
    assert!(cp.control().override_until.is_some());
    let mut b = NodeState::resume(&cfg, cp).unwrap();
    // Minute 20 is inside the half hour from minute 1; minute 40 is past it.
    let (_, s) = state(&cfg, &mut b, reading("a", 1, 20));
    assert_eq!(s.unwrap().output_pwm, i32::from(hold));
    let (_, s) = state(&cfg, &mut b, reading("a", 2, 40));
    let s = s.unwrap();
    assert_eq!(s.output_pwm, i32::from(cfg.mapping.pwm(s.koa_metric)));
    assert_eq!(b.checkpoint().control().override_pwm, None);
}

#[test]
fn a_reset_to_given_initial_conditions_restarts_the_clock_there() {
    use kaiabc_schemas::StateVariables;
    let cfg = NodeConfig::new(ClockConfig::default()).unwrap();
    let mut a = NodeState::new(&cfg).unwrap();
    state(&cfg, &mut a, reading("a", 0, 0));
    // A state on the model's simplex: C_T, C_ST and C_S free, the rest implied by the totals
    // (Rust et al. 2007: KaiC 3.4 µM, KaiA 1.3 µM).
    let p = &cfg.clock.params;
    let st = kaiabc_operators::model::KaiState {
        t: 0.2 * p.c_total,
        d: 0.1 * p.c_total,
        s: 0.3 * p.c_total,
    };
    let c = st.concentrations(p);
    let given = StateVariables {
        C_U: c.c_u,
        C_S: c.c_s,
        C_T: c.c_t,
        C_ST: c.c_st,
        A_free: c.a_free,
        CABC_complex: c.cabc_complex,
    };
    ctl(
        &cfg,
        &mut a,
        command(
            "a",
            1,
            ControlAction::ResetTo {
                initial_conditions: given,
            },
        ),
    );
    // One second of model time later the state has barely moved from the given one.
    let at = parse_timestamp(T0).unwrap() + chrono::Duration::seconds(61);
    let mut out = Vec::new();
    a.apply(&cfg, common::reading("a", 1, at, 300.0), &mut out)
        .unwrap();
    let s = out
        .into_iter()
        .find_map(|r| match r {
            LakeRow::State(s) => Some(s),
            _ => None,
        })
        .unwrap();
    for (got, want) in [
        (s.state_variables.C_T, given.C_T),
        (s.state_variables.C_ST, given.C_ST),
        (s.state_variables.C_S, given.C_S),
    ] {
        assert!((got - want).abs() < 0.01 * p.c_total, "{got} vs {want}");
    }
    // A state that breaks the conserved totals is refused and changes nothing.
    let bad = StateVariables {
        A_free: given.A_free + 0.5,
        ..given
    };
    let mut out = Vec::new();
    assert!(a
        .control(
            &cfg,
            &command(
                "a",
                2,
                ControlAction::ResetTo {
                    initial_conditions: bad
                }
            ),
            &mut out
        )
        .is_err());
}
