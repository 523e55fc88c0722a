//! Behaviour of the per-node Kalman filter: convergence to the closed-form steady state,
//! elapsed-time process noise, χ² grading and re-initialisation, partial readings, errors,
//! serialisation, and covariance invariants under arbitrary reading sequences.

use approx::assert_relative_eq;
use kaiabc_operators::kalman::{
    FilterStateView, KalmanError, KalmanFilter, KalmanParams, Measurement, Quality, Variable,
};
use nalgebra::{Matrix3, SymmetricEigen};
use proptest::prelude::*;

/// χ² quantiles from standard tables (rows: 1, 2, 3 degrees of freedom; columns: p = 0.95,
/// 0.99, 0.9999), independent of the statrs computation inside the filter.
const CHI2: [[f64; 3]; 3] = [
    [3.841459, 6.634897, 15.13671],
    [5.991465, 9.210340, 18.42068],
    [7.814728, 11.34487, 21.10751],
];

/// Small deterministic RNG: xorshift64* with Box–Muller normals.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Steady-state posterior variance of the scalar random-walk ("local level") Kalman filter with
/// process variance `q` per step and measurement variance `r`: the positive root of the Riccati
/// equation P⁻ = P⁻r/(P⁻+r) + q, i.e. P⁻ = (q + √(q² + 4qr))/2, and P = P⁻r/(P⁻+r)
/// (Harvey 1989 §3.3; Durbin & Koopman 2012 §2.11).
fn steady_state_posterior(q: f64, r: f64) -> f64 {
    let prior = (q + (q * q + 4.0 * q * r).sqrt()) / 2.0;
    prior * r / (prior + r)
}

/// Grade from the tabulated χ² quantiles for `m` gated variables.
fn table_grade(nis: f64, m: usize) -> Quality {
    let [good, fair, poor] = CHI2[m - 1];
    if nis <= good {
        Quality::Good
    } else if nis <= fair {
        Quality::Fair
    } else if nis <= poor {
        Quality::Poor
    } else {
        Quality::Invalid
    }
}

fn default_filter() -> KalmanFilter {
    KalmanFilter::new(KalmanParams::default()).unwrap()
}

fn humidity_only(percent: f64) -> Measurement {
    Measurement {
        humidity_percent: Some(percent),
        ..Measurement::default()
    }
}

/// A filter fed 200 noise-free 300 K readings at one-minute cadence (t = 0 .. 199 min), so its
/// temperature variance sits at the steady state.
fn converged_temperature_filter() -> KalmanFilter {
    let mut f = default_filter();
    for k in 0..200 {
        f.update(60.0 * f64::from(k), &Measurement::temperature_only(300.0))
            .unwrap();
    }
    f
}

#[test]
fn converges_to_truth_and_to_closed_form_steady_state_variance() {
    let params = KalmanParams::default();
    let [q_t, q_h, q_p] = params.process_noise; // per minute = per step at 1-min cadence
    let [r_t, r_h, r_p] = params.measurement_noise;
    let (true_t, true_h, true_p_hpa) = (300.0, 55.0, 1013.25);

    for seed in [1, 2, 3, 42, 2024] {
        let mut rng = Rng::new(seed);
        let mut f = KalmanFilter::new(params).unwrap();
        for k in 0..200 {
            let reading = Measurement::full(
                true_t + r_t.sqrt() * rng.normal(),
                true_h + r_h.sqrt() * rng.normal(),
                (true_p_hpa + r_p.sqrt() * rng.normal()) * 100.0,
            );
            f.update(60.0 * f64::from(k), &reading).unwrap();
        }
        let view = f.view();
        assert_eq!(view.measurement_count, 200);

        let (t, var_t) = f.estimate_temperature().unwrap();
        assert!(
            (t - true_t).abs() <= 3.0 * var_t.sqrt(),
            "seed {seed}: {t} K, sd {}",
            var_t.sqrt()
        );
        let h = view.estimate.humidity_percent.unwrap();
        assert!(
            (h - true_h).abs() <= 3.0 * view.covariance[1][1].sqrt(),
            "seed {seed}: {h} %"
        );
        let p_hpa = view.estimate.pressure_pa.unwrap() / 100.0;
        assert!(
            (p_hpa - true_p_hpa).abs() <= 3.0 * view.covariance[2][2].sqrt(),
            "seed {seed}: {p_hpa} hPa"
        );

        // The variance recursion does not depend on the data (unless a reading is rejected,
        // after which it converges again within a few dozen steps).
        assert!((var_t - steady_state_posterior(q_t, r_t)).abs() < 1e-9);
        assert!((view.covariance[1][1] - steady_state_posterior(q_h, r_h)).abs() < 1e-9);
        assert!((view.covariance[2][2] - steady_state_posterior(q_p, r_p)).abs() < 1e-9);
        // Independent random walks stay uncorrelated.
        assert_eq!(view.covariance[0][1], 0.0);
        assert_eq!(view.covariance[0][2], 0.0);
        assert_eq!(view.covariance[1][2], 0.0);
    }
}

#[test]
fn steady_state_scales_with_cadence() {
    // Guards the test above: at a 2-min cadence the steady state is that of q = 2·q_per_min.
    let mut f = default_filter();
    for k in 0..200 {
        f.update(120.0 * f64::from(k), &Measurement::temperature_only(300.0))
            .unwrap();
    }
    let (_, var) = f.estimate_temperature().unwrap();
    assert!((var - steady_state_posterior(0.02, 0.05)).abs() < 1e-9);
    assert!((var - steady_state_posterior(0.01, 0.05)).abs() > 1e-3);
}

#[test]
fn innovations_are_consistent_when_the_truth_is_a_random_walk() {
    // Truth follows the filter's own model with irregular gaps; the NIS of a consistent filter
    // is χ²(3): mean 3, and about 95 % of readings inside the 0.95 quantile.
    let params = KalmanParams::default();
    let mut rng = Rng::new(7);
    let mut f = KalmanFilter::new(params).unwrap();
    let mut truth = [295.0, 60.0, 1000.0];
    let mut t = 0.0;
    let (mut sum, mut n, mut good) = (0.0, 0, 0);
    for k in 0..5000 {
        if k > 0 {
            let dt = 10.0 + 590.0 * rng.uniform();
            t += dt;
            for (x, q) in truth.iter_mut().zip(params.process_noise) {
                *x += (q * dt / 60.0).sqrt() * rng.normal();
            }
        }
        let z: [f64; 3] =
            std::array::from_fn(|i| truth[i] + params.measurement_noise[i].sqrt() * rng.normal());
        let out = f
            .update(t, &Measurement::full(z[0], z[1], z[2] * 100.0))
            .unwrap();
        if let Some(nis) = out.nis {
            sum += nis;
            n += 1;
            good += usize::from(out.quality == Quality::Good);
        }
    }
    let mean = sum / f64::from(n);
    let good_fraction = good as f64 / f64::from(n);
    assert!((2.85..3.15).contains(&mean), "mean NIS {mean}");
    assert!(
        (0.935..0.965).contains(&good_fraction),
        "good fraction {good_fraction}"
    );
}

#[test]
fn prior_variance_grows_by_process_noise_times_elapsed_minutes() {
    let params = KalmanParams::default();
    let mut f = default_filter();
    f.update(1000.0, &Measurement::full(290.0, 40.0, 100_000.0))
        .unwrap();
    let p0 = f.view().covariance;

    let (_, short) = f.predict(1060.0).unwrap();
    let (estimate, long) = f.predict(1000.0 + 3600.0).unwrap();
    let (_, none) = f.predict(1000.0).unwrap();

    assert_relative_eq!(
        short.temperature_k2.unwrap(),
        p0[0][0] + params.process_noise[0] * 1.0,
        max_relative = 1e-14
    );
    assert_relative_eq!(
        long.temperature_k2.unwrap(),
        p0[0][0] + params.process_noise[0] * 60.0,
        max_relative = 1e-14
    );
    assert_relative_eq!(
        long.humidity_percent2.unwrap(),
        p0[1][1] + params.process_noise[1] * 60.0,
        max_relative = 1e-14
    );
    assert_relative_eq!(
        long.pressure_hpa2.unwrap(),
        p0[2][2] + params.process_noise[2] * 60.0,
        max_relative = 1e-14
    );
    assert!(long.temperature_k2.unwrap() > short.temperature_k2.unwrap());
    // dt = 0 adds nothing; predicting leaves the estimate alone.
    assert_eq!(none.temperature_k2.unwrap(), p0[0][0]);
    assert_eq!(estimate, f.view().estimate);

    // The update after the gap starts from exactly that prior.
    let prior = long.temperature_k2.unwrap();
    let r = params.measurement_noise[0];
    let out = f
        .update(1000.0 + 3600.0, &Measurement::temperature_only(290.2))
        .unwrap();
    assert_relative_eq!(
        out.variance.temperature_k2.unwrap(),
        prior * r / (prior + r),
        max_relative = 1e-12
    );
    assert_relative_eq!(
        out.nis.unwrap(),
        0.2f64.powi(2) / (prior + r),
        max_relative = 1e-9
    );

    // A second reading at the same instant adds no process noise.
    let p1 = out.variance.temperature_k2.unwrap();
    let out = f
        .update(1000.0 + 3600.0, &Measurement::temperature_only(290.2))
        .unwrap();
    assert_relative_eq!(
        out.variance.temperature_k2.unwrap(),
        p1 * r / (p1 + r),
        max_relative = 1e-12
    );
}

#[test]
fn grades_follow_tabulated_chi_squared_bounds() {
    let f = converged_temperature_filter();
    let t = 200.0 * 60.0;
    let (x, _) = f.estimate_temperature().unwrap();
    let (_, prior) = f.predict(t).unwrap();
    let s = prior.temperature_k2.unwrap() + KalmanParams::default().measurement_noise[0];
    let sigma = s.sqrt();

    let grade = |deviation: f64| {
        let out = f
            .clone()
            .update(t, &Measurement::temperature_only(x + deviation))
            .unwrap();
        let expected_nis = deviation * deviation / s;
        assert_relative_eq!(out.nis.unwrap(), expected_nis, max_relative = 1e-9);
        assert_eq!(
            out.quality,
            table_grade(expected_nis, 1),
            "deviation {deviation}, nis {expected_nis}"
        );
        out
    };

    assert_eq!(grade(0.3).quality, Quality::Good);
    assert_eq!(grade(-0.3).quality, Quality::Good);
    assert_eq!(grade(2.2 * sigma).quality, Quality::Fair); // d² = 4.84
    assert_eq!(grade(3.0 * sigma).quality, Quality::Poor); // d² = 9
                                                           // Either side of each tabulated quantile.
    for (m, &bound) in CHI2[0].iter().enumerate() {
        let below = grade((bound * (1.0 - 2e-5) * s).sqrt());
        let above = grade(-(bound * (1.0 + 2e-5) * s).sqrt());
        assert_eq!(
            below.quality,
            [Quality::Good, Quality::Fair, Quality::Poor][m]
        );
        assert_eq!(
            above.quality,
            [Quality::Fair, Quality::Poor, Quality::Invalid][m]
        );
    }
    // Poor readings are still applied.
    let poor = grade(3.0 * sigma);
    assert!(poor.applied && !poor.reinitialised);
    assert!(poor.estimate.temperature_kelvin.unwrap() > x);
}

#[test]
fn joint_grade_uses_the_number_of_present_variables() {
    let mut f = default_filter();
    for k in 0..50 {
        f.update(
            60.0 * f64::from(k),
            &Measurement::full(300.0, 50.0, 100_000.0),
        )
        .unwrap();
    }
    let t = 50.0 * 60.0;
    let (estimate, prior) = f.predict(t).unwrap();
    let r = KalmanParams::default().measurement_noise;
    let s = [
        prior.temperature_k2.unwrap() + r[0],
        prior.humidity_percent2.unwrap() + r[1],
        prior.pressure_hpa2.unwrap() + r[2],
    ];
    // Each variable contributes 7/3 to d² = 7: Good for 3 dof (7.81) though a single variable
    // with d² = 7 would be Poor.
    let d: [f64; 3] = std::array::from_fn(|i| (7.0 / 3.0 * s[i]).sqrt());
    let reading = Measurement::full(
        estimate.temperature_kelvin.unwrap() + d[0],
        estimate.humidity_percent.unwrap() - d[1],
        estimate.pressure_pa.unwrap() + d[2] * 100.0,
    );
    let out = f.clone().update(t, &reading).unwrap();
    assert_relative_eq!(out.nis.unwrap(), 7.0, max_relative = 1e-9);
    assert_eq!(out.quality, Quality::Good);
    assert_relative_eq!(
        out.innovation.pressure_pa.unwrap(),
        d[2] * 100.0,
        max_relative = 1e-6
    );

    let single =
        Measurement::temperature_only(estimate.temperature_kelvin.unwrap() + (7.0 * s[0]).sqrt());
    let out = f.clone().update(t, &single).unwrap();
    assert_relative_eq!(out.nis.unwrap(), 7.0, max_relative = 1e-9);
    assert_eq!(out.quality, Quality::Poor);
}

#[test]
fn spike_is_rejected_and_a_real_step_reinitialises() {
    let params = KalmanParams::default();
    let mut f = converged_temperature_filter();
    let before = f.view();
    let (x, p) = f.estimate_temperature().unwrap();

    let t = 200.0 * 60.0;
    let spike = f.update(t, &Measurement::temperature_only(320.0)).unwrap();
    assert_eq!(spike.quality, Quality::Invalid);
    assert!(!spike.applied && !spike.reinitialised);
    assert!(spike.nis.unwrap() > CHI2[0][2]);
    assert_relative_eq!(spike.innovation.temperature_kelvin.unwrap(), 320.0 - x);
    assert_eq!(spike.estimate.temperature_kelvin, Some(x));
    // Not applied, but time has passed: the variance is the prior.
    assert_relative_eq!(
        spike.variance.temperature_k2.unwrap(),
        p + params.process_noise[0],
        max_relative = 1e-14
    );
    let after = f.view();
    assert_eq!(after.rejected_count, before.rejected_count + 1);
    assert_eq!(after.measurement_count, before.measurement_count + 1);
    assert_eq!(after.last_quality, Some(Quality::Invalid));

    // Back to normal: a good reading resets the run of invalid ones.
    assert_eq!(
        f.update(t + 60.0, &Measurement::temperature_only(300.0))
            .unwrap()
            .quality,
        Quality::Good
    );

    // A genuine step to 305 K: rejected twice, then accepted as a re-initialisation.
    let first = f
        .update(t + 120.0, &Measurement::temperature_only(305.0))
        .unwrap();
    let second = f
        .update(t + 180.0, &Measurement::temperature_only(305.1))
        .unwrap();
    assert_eq!(
        (first.quality, second.quality),
        (Quality::Invalid, Quality::Invalid)
    );
    assert!(!first.applied && !second.applied);
    let third = f
        .update(t + 240.0, &Measurement::temperature_only(304.9))
        .unwrap();
    assert_eq!(third.quality, Quality::Poor);
    assert!(third.applied && third.reinitialised);
    assert_eq!(
        f.estimate_temperature(),
        Some((304.9, params.measurement_noise[0]))
    );
    assert_eq!(f.view().rejected_count, before.rejected_count + 3);

    let next = f
        .update(t + 300.0, &Measurement::temperature_only(305.0))
        .unwrap();
    assert_eq!(next.quality, Quality::Good);
    assert!(!next.reinitialised);
}

#[test]
fn non_consecutive_invalid_readings_do_not_reinitialise() {
    let mut f = converged_temperature_filter();
    let mut t = 200.0 * 60.0;
    for value in [320.0, 320.0, 300.0, 320.0, 320.0, 300.0] {
        let out = f.update(t, &Measurement::temperature_only(value)).unwrap();
        assert!(!out.reinitialised);
        t += 60.0;
    }
    assert_relative_eq!(f.estimate_temperature().unwrap().0, 300.0, epsilon = 1e-9);
    assert_eq!(f.view().rejected_count, 4);
}

#[test]
fn reinit_after_is_configurable() {
    let params = KalmanParams {
        reinit_after: 1,
        ..KalmanParams::default()
    };
    let mut f = KalmanFilter::new(params).unwrap();
    f.update(0.0, &Measurement::temperature_only(300.0))
        .unwrap();
    let out = f
        .update(60.0, &Measurement::temperature_only(320.0))
        .unwrap();
    assert_eq!(out.quality, Quality::Poor);
    assert!(out.reinitialised);
    assert_eq!(f.estimate_temperature().unwrap().0, 320.0);
    assert_eq!(f.view().rejected_count, 0);
}

#[test]
fn partial_reading_leaves_other_variables_alone() {
    let params = KalmanParams::default();
    let mut f = default_filter();
    for k in 0..10 {
        f.update(
            60.0 * f64::from(k),
            &Measurement::full(300.0 + 0.1 * f64::from(k % 3), 50.0, 100_000.0),
        )
        .unwrap();
    }
    let before = f.view();
    let dt_min = 5.0;
    let out = f
        .update(9.0 * 60.0 + dt_min * 60.0, &humidity_only(51.0))
        .unwrap();
    let after = f.view();

    assert!(out.applied);
    assert_eq!(
        after.estimate.temperature_kelvin,
        before.estimate.temperature_kelvin
    );
    assert_eq!(after.estimate.pressure_pa, before.estimate.pressure_pa);
    assert_ne!(
        after.estimate.humidity_percent,
        before.estimate.humidity_percent
    );
    assert_relative_eq!(
        after.covariance[0][0],
        before.covariance[0][0] + params.process_noise[0] * dt_min,
        max_relative = 1e-14
    );
    assert_relative_eq!(
        after.covariance[2][2],
        before.covariance[2][2] + params.process_noise[2] * dt_min,
        max_relative = 1e-14
    );
    assert!(after.covariance[1][1] < before.covariance[1][1] + params.process_noise[1] * dt_min);
    assert_eq!(out.innovation.temperature_kelvin, None);
    assert_eq!(out.innovation.pressure_pa, None);
    assert_relative_eq!(
        out.innovation.humidity_percent.unwrap(),
        1.0,
        max_relative = 1e-9
    );
}

#[test]
fn unseen_variables_stay_uninitialised_until_seen() {
    let params = KalmanParams::default();
    let mut f = default_filter();
    assert_eq!(f.estimate_temperature(), None);
    assert_eq!(f.view().estimate, Default::default());

    let first = f
        .update(0.0, &Measurement::temperature_only(290.0))
        .unwrap();
    assert_eq!(first.quality, Quality::Good);
    assert_eq!(first.nis, None);
    assert!(first.applied);
    assert_eq!(
        f.estimate_temperature(),
        Some((290.0, params.measurement_noise[0]))
    );
    let view = f.view();
    assert_eq!(view.estimate.humidity_percent, None);
    assert_eq!(view.estimate.pressure_pa, None);
    assert_eq!(view.covariance[1], [0.0; 3]);
    assert_eq!(view.covariance[2], [0.0; 3]);

    // Time passing does not grow the variance of a variable never seen.
    let out = f
        .update(3600.0, &Measurement::temperature_only(290.1))
        .unwrap();
    assert_eq!(out.variance.humidity_percent2, None);
    assert_eq!(f.view().covariance[1][1], 0.0);

    // Pressure appears: initialised at the measurement; temperature is gated alone (m = 1).
    let out = f
        .update(
            3660.0,
            &Measurement {
                pressure_pa: Some(101_325.0),
                ..Measurement::temperature_only(290.1)
            },
        )
        .unwrap();
    assert_eq!(out.innovation.pressure_pa, None);
    assert!(out.innovation.temperature_kelvin.is_some());
    assert_relative_eq!(
        out.estimate.pressure_pa.unwrap(),
        101_325.0,
        max_relative = 1e-15
    );
    assert_eq!(
        out.variance.pressure_hpa2,
        Some(params.measurement_noise[2])
    );
    assert_eq!(out.estimate.humidity_percent, None);
}

#[test]
fn errors_are_typed_and_leave_the_filter_unchanged() {
    let mut f = default_filter();
    f.update(100.0, &Measurement::full(290.0, 40.0, 100_000.0))
        .unwrap();
    let before = f.clone();

    assert_eq!(
        f.update(200.0, &Measurement::default()),
        Err(KalmanError::NoVariables)
    );
    assert_eq!(
        f.update(200.0, &Measurement::temperature_only(f64::NAN)),
        Err(KalmanError::NonFinite {
            variable: Variable::Temperature
        })
    );
    assert_eq!(
        f.update(200.0, &humidity_only(f64::INFINITY)),
        Err(KalmanError::NonFinite {
            variable: Variable::Humidity
        })
    );
    assert_eq!(
        f.update(200.0, &Measurement::full(290.0, 40.0, f64::NEG_INFINITY)),
        Err(KalmanError::NonFinite {
            variable: Variable::Pressure
        })
    );
    assert_eq!(
        f.update(99.5, &Measurement::temperature_only(290.0)),
        Err(KalmanError::OutOfOrder {
            last: 100.0,
            got: 99.5
        })
    );
    assert!(matches!(
        f.update(f64::NAN, &Measurement::temperature_only(290.0)),
        Err(KalmanError::NonFiniteTime { .. })
    ));
    assert!(matches!(
        f.predict(50.0),
        Err(KalmanError::OutOfOrder { .. })
    ));
    assert_eq!(f, before);
    assert_eq!(f.view().measurement_count, 1);

    let bad = [
        KalmanParams {
            process_noise: [0.01, -0.02, 0.05],
            ..Default::default()
        },
        KalmanParams {
            process_noise: [0.0, 0.02, 0.05],
            ..Default::default()
        },
        KalmanParams {
            measurement_noise: [0.05, 0.1, f64::NAN],
            ..Default::default()
        },
        KalmanParams {
            measurement_noise: [f64::INFINITY, 0.1, 0.2],
            ..Default::default()
        },
        KalmanParams {
            gate_good: 0.99,
            gate_fair: 0.95,
            ..Default::default()
        },
        KalmanParams {
            gate_fair: 0.9999,
            ..Default::default()
        },
        KalmanParams {
            gate_poor: 1.0,
            ..Default::default()
        },
        KalmanParams {
            gate_good: 0.0,
            ..Default::default()
        },
        KalmanParams {
            gate_good: f64::NAN,
            ..Default::default()
        },
        KalmanParams {
            reinit_after: 0,
            ..Default::default()
        },
    ];
    for params in bad {
        assert!(
            matches!(params.validate(), Err(KalmanError::InvalidParams(_))),
            "{params:?}"
        );
        assert!(
            matches!(
                KalmanFilter::new(params),
                Err(KalmanError::InvalidParams(_))
            ),
            "{params:?}"
        );
        assert!(
            matches!(f.set_params(params), Err(KalmanError::InvalidParams(_))),
            "{params:?}"
        );
        assert_eq!(f.params(), &KalmanParams::default());
    }
    assert_eq!(KalmanParams::default().validate(), Ok(()));
}

#[test]
fn set_params_and_reset() {
    let mut f = default_filter();
    f.update(0.0, &Measurement::temperature_only(300.0))
        .unwrap();
    let loose = KalmanParams {
        gate_good: 0.5,
        gate_fair: 0.6,
        gate_poor: 0.7,
        ..Default::default()
    };
    f.set_params(loose).unwrap();
    assert_eq!(f.params(), &loose);
    assert_eq!(f.estimate_temperature(), Some((300.0, 0.05)));
    // χ²(0.7, 1) ≈ 1.074: a 1.2σ innovation is now rejected.
    let (_, prior) = f.predict(60.0).unwrap();
    let s = prior.temperature_k2.unwrap() + 0.05;
    let out = f
        .update(60.0, &Measurement::temperature_only(300.0 + 1.2 * s.sqrt()))
        .unwrap();
    assert_eq!(out.quality, Quality::Invalid);

    f.reset();
    assert_eq!(f.params(), &loose);
    assert_eq!(f.estimate_temperature(), None);
    let view = f.view();
    assert_eq!(
        (
            view.measurement_count,
            view.rejected_count,
            view.last_update_seconds
        ),
        (0, 0, None)
    );
    // Time restarts too: an earlier reading is fine after a reset.
    f.update(0.0, &Measurement::temperature_only(280.0))
        .unwrap();
}

#[test]
fn serialises_params_quality_view_and_checkpoints() {
    assert_eq!(
        serde_json::to_string(&Quality::Invalid).unwrap(),
        "\"invalid\""
    );
    assert_eq!(
        serde_json::from_str::<Quality>("\"fair\"").unwrap(),
        Quality::Fair
    );

    let params: KalmanParams = serde_json::from_str(r#"{"reinit_after": 5}"#).unwrap();
    assert_eq!(
        params,
        KalmanParams {
            reinit_after: 5,
            ..Default::default()
        }
    );
    assert!(serde_json::from_str::<KalmanParams>(r#"{"reinit_afetr": 5}"#).is_err());

    let measurement: Measurement = serde_json::from_str(r#"{"pressure_pa": 101325.0}"#).unwrap();
    assert_eq!(
        measurement,
        Measurement {
            pressure_pa: Some(101_325.0),
            ..Default::default()
        }
    );

    let mut rng = Rng::new(11);
    let reading = |rng: &mut Rng| {
        Measurement::full(
            300.0 + 0.2 * rng.normal(),
            50.0 + 0.3 * rng.normal(),
            100_000.0 + 40.0 * rng.normal(),
        )
    };
    let mut f = default_filter();
    for k in 0..20 {
        f.update(60.0 * f64::from(k), &reading(&mut rng)).unwrap();
    }
    let view: serde_json::Value = serde_json::to_value(f.view()).unwrap();
    // The API spec's field names for GET /filter/state.
    assert!(view["state_estimate"]["pressure_pa"].as_f64().unwrap() > 99_000.0);
    assert_eq!(view["covariance_matrix"].as_array().unwrap().len(), 3);
    assert!(view["innovation"]["temperature_kelvin"].as_f64().is_some());
    assert_eq!(view["measurement_count"], 20);
    let _: FilterStateView = serde_json::from_value(view).unwrap();

    // A restored checkpoint continues like the original.
    let json = serde_json::to_string(&f).unwrap();
    let mut restored: KalmanFilter = serde_json::from_str(&json).unwrap();
    for k in 20..40 {
        let m = reading(&mut rng);
        let (a, b) = (
            f.update(60.0 * f64::from(k), &m).unwrap(),
            restored.update(60.0 * f64::from(k), &m).unwrap(),
        );
        assert_eq!(a.quality, b.quality);
        assert_relative_eq!(
            a.estimate.temperature_kelvin.unwrap(),
            b.estimate.temperature_kelvin.unwrap(),
            max_relative = 1e-14
        );
        assert_relative_eq!(
            a.variance.pressure_hpa2.unwrap(),
            b.variance.pressure_hpa2.unwrap(),
            max_relative = 1e-12
        );
    }

    // Checkpoints with invalid parameters are refused.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["params"]["gate_poor"] = serde_json::json!(0.5);
    assert!(serde_json::from_value::<KalmanFilter>(value).is_err());
}

#[derive(Debug, Clone)]
struct Reading {
    dt: f64,
    temperature: Option<f64>,
    humidity: Option<f64>,
    pressure_pa: Option<f64>,
}

fn reading_strategy() -> impl Strategy<Value = Reading> {
    // Mostly near a fixed climate (so updates are applied), sometimes anywhere in range (so
    // rejections and re-initialisations happen too).
    let temperature = prop_oneof![3 => 299.0..301.0, 1 => 230.0..330.0];
    let humidity = prop_oneof![3 => 49.0..51.0, 1 => 0.0..100.0];
    let pressure = prop_oneof![3 => 100_900.0..101_100.0, 1 => 85_000.0..108_000.0];
    (
        prop_oneof![1 => Just(0.0), 4 => 0.0..=3600.0],
        proptest::option::of(temperature),
        proptest::option::of(humidity),
        proptest::option::of(pressure),
    )
        .prop_map(|(dt, temperature, humidity, pressure_pa)| Reading {
            dt,
            temperature,
            humidity,
            pressure_pa,
        })
}

fn params_strategy() -> impl Strategy<Value = KalmanParams> {
    (
        proptest::array::uniform3(1e-4..1.0),
        proptest::array::uniform3(1e-3..2.0),
        1u32..5,
    )
        .prop_map(
            |(process_noise, measurement_noise, reinit_after)| KalmanParams {
                process_noise,
                measurement_noise,
                reinit_after,
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn covariance_stays_symmetric_psd_and_estimate_finite(
        params in params_strategy(),
        readings in proptest::collection::vec(reading_strategy(), 1..80),
    ) {
        let mut f = KalmanFilter::new(params).unwrap();
        let mut t = 0.0;
        for r in &readings {
            t += r.dt;
            let m = Measurement { temperature_kelvin: r.temperature, humidity_percent: r.humidity, pressure_pa: r.pressure_pa };
            let result = f.update(t, &m);
            if r.temperature.is_none() && r.humidity.is_none() && r.pressure_pa.is_none() {
                prop_assert_eq!(result, Err(KalmanError::NoVariables));
                continue;
            }
            let out = result.unwrap();
            prop_assert!(out.nis.is_none_or(|d| d.is_finite() && d >= 0.0));
            for v in [out.variance.temperature_k2, out.variance.humidity_percent2, out.variance.pressure_hpa2].into_iter().flatten() {
                prop_assert!(v.is_finite() && v >= 0.0, "variance {}", v);
            }

            let view = f.view();
            for e in [view.estimate.temperature_kelvin, view.estimate.humidity_percent, view.estimate.pressure_pa].into_iter().flatten() {
                prop_assert!(e.is_finite());
            }
            let c = view.covariance;
            for i in 0..3 {
                prop_assert!(c[i][i] >= 0.0);
                for j in 0..3 {
                    prop_assert!(c[i][j].is_finite());
                    let scale = c[i][j].abs().max(c[j][i].abs());
                    prop_assert!((c[i][j] - c[j][i]).abs() <= 1e-9 * scale, "asymmetric {:?}", c);
                }
            }
            let eigen = SymmetricEigen::new(Matrix3::from_fn(|i, j| c[i][j]));
            prop_assert!(eigen.eigenvalues.iter().all(|&l| l >= -1e-12), "eigenvalues {}", eigen.eigenvalues);
        }
    }
}
