//! Property tests of the integrator and clock: physical domain, exact stops, determinism and
//! independence from how the input is chunked.

use kaiabc_operators::clock::{Clock, ClockConfig, InitialCondition};
use kaiabc_operators::integrator::{Dopri5, IntegratorConfig, OdeSystem};
use kaiabc_operators::model::{KaiParams, KaiState};
use kaiabc_operators::system::KaiSystem;
use kaiabc_operators::temperature::PiecewiseLinear;
use kaiabc_operators::Etf;
use proptest::prelude::*;

/// A state anywhere in the physical simplex T, D, S ≥ 0, T + D + S ≤ C_tot.
fn simplex_state() -> impl Strategy<Value = KaiState> {
    (0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, b, c, d)| {
        let sum = a + b + c + d + 1e-9;
        let k = 3.4 / sum;
        KaiState {
            t: a * k,
            d: b * k,
            s: c * k,
        }
    })
}

/// Irregular readings: gaps of 1 min to 2 h, temperatures in the validated 273–323 K range.
fn readings() -> impl Strategy<Value = Vec<(f64, f64)>> {
    prop::collection::vec((1.0 / 60.0..2.0f64, 273.15..323.15f64), 1..60).prop_map(|v| {
        let mut t = 0.0;
        v.into_iter()
            .map(|(dt, k)| {
                t += dt;
                (t, k)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn clock_stays_in_the_physical_domain_and_lands_on_every_reading(
        start in simplex_state(), rs in readings(), k0 in 273.15..323.15f64,
    ) {
        let p = KaiParams::default();
        let mut c = Clock::new(ClockConfig::default(), 0.0, k0, InitialCondition::State(start)).unwrap();
        for &(t, k) in &rs {
            c.advance_to(t, k).unwrap();
            prop_assert_eq!(c.t_hours(), t);
            let st = c.state();
            st.validate(&p, 1e-6).unwrap();
            let s = c.snapshot();
            prop_assert!((0.0..24.0).contains(&s.circadian_time));
            prop_assert!((0.0..=1.0).contains(&s.koa_metric));
            prop_assert!(s.period_hours.is_finite() && s.period_hours > 0.0);
            let v = s.state_variables;
            prop_assert!((v.c_u + v.c_s + v.c_t + v.c_st - p.c_total).abs() < 1e-12);
            prop_assert!((v.a_free + v.cabc_complex - p.a_total).abs() < 1e-12);
        }
    }

    #[test]
    fn same_inputs_give_bit_identical_clocks(start in simplex_state(), rs in readings()) {
        let run = || {
            let mut c = Clock::new(ClockConfig::default(), 0.0, 300.0, InitialCondition::State(start)).unwrap();
            for &(t, k) in &rs {
                c.advance_to(t, k).unwrap();
            }
            (c.state(), c.snapshot().circadian_time, c.stats())
        };
        let (a, b) = (run(), run());
        prop_assert_eq!(a.0.to_array().map(f64::to_bits), b.0.to_array().map(f64::to_bits));
        prop_assert_eq!(a.1.to_bits(), b.1.to_bits());
        prop_assert_eq!(a.2, b.2);
    }

    #[test]
    fn chunking_changes_the_answer_only_within_tolerance(start in simplex_state(), rs in readings()) {
        // Reading by reading (live mode) vs one call over the whole profile (batch): both solve
        // the same ODE, so they agree to the integration tolerance.
        let p = KaiParams::default();
        let etf = Etf::default();
        let mut points = vec![(0.0, 300.0)];
        points.extend(rs.iter().copied());
        let profile = PiecewiseLinear::new(points.clone()).unwrap();
        let end = points.last().unwrap().0;
        let cfg = IntegratorConfig { rtol: 1e-9, atol: 1e-12, ..Default::default() };
        let mut whole = Dopri5::new(0.0, start.to_array(), cfg).unwrap();
        let mut sys = KaiSystem::new(&p, &etf, profile);
        // Stop at every reading so the kinks of the input fall on step boundaries.
        for &(t, _) in &points[1..] {
            whole.advance_to(&mut sys, t, |_| {}).unwrap();
        }
        let mut c = Clock::new(ClockConfig { integrator: cfg, ..Default::default() }, 0.0, 300.0, InitialCondition::State(start)).unwrap();
        for &(t, k) in &rs {
            // Split each interval in two as well: the chunking differs from the batch run.
            let (t_prev, k_prev) = (c.t_hours(), c.snapshot().temperature_kelvin);
            let mid = 0.5 * (t_prev + t);
            c.advance_to(mid, 0.5 * (k_prev + k)).unwrap();
            c.advance_to(t, k).unwrap();
        }
        prop_assert_eq!(c.t_hours(), end);
        let (a, b) = (whole.y(), c.state().to_array());
        // Error-per-step control: the global error grows with the number of steps (each may
        // add ~rtol·|y|), so the two solutions may differ by about that much — and no more.
        let steps = (whole.stats().accepted + c.stats().accepted) as f64;
        let bound = 4.0 * cfg.rtol * steps * p.c_total;
        for i in 0..3 {
            prop_assert!((a[i] - b[i]).abs() < bound, "{:?} vs {:?} (bound {})", a, b, bound);
        }
    }

    #[test]
    fn decay_error_is_bounded_by_the_tolerance(rate in 0.01..5.0f64, rtol_exp in 3.0..10.0f64, end in 0.1..20.0f64) {
        struct Decay(f64);
        impl OdeSystem<1> for Decay {
            fn rhs(&mut self, _t: f64, y: &[f64; 1]) -> [f64; 1] {
                [-self.0 * y[0]]
            }
        }
        let rtol = 10f64.powf(-rtol_exp);
        let cfg = IntegratorConfig { rtol, atol: rtol * 1e-3, max_step: 100.0, ..Default::default() };
        let mut ig = Dopri5::new(0.0, [1.0], cfg).unwrap();
        ig.advance_to(&mut Decay(rate), end, |_| {}).unwrap();
        let exact = (-rate * end).exp();
        // Global error of an error-per-step controller: a small multiple of the tolerance
        // times the number of decay times covered.
        let bound = 50.0 * (rtol * exact + cfg.atol) * (1.0 + rate * end);
        prop_assert!((ig.y()[0] - exact).abs() < bound, "err {} bound {}", (ig.y()[0] - exact).abs(), bound);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn clocks_advanced_in_a_batch_match_clocks_advanced_alone_bit_for_bit(
        starts in prop::collection::vec(simplex_state(), 1..11),
        steps in prop::collection::vec(prop::collection::vec((0.0..1.5f64, 273.15..323.15f64), 11), 1..25),
    ) {
        // Different clocks, different gaps, some zero (a repeated time): each lane of the batch
        // must end exactly where the clock alone ends, including its cycle peaks and counters.
        let n = starts.len();
        let mk = || -> Vec<Clock> {
            starts.iter().map(|s| Clock::new(ClockConfig::default(), 0.0, 300.0, InitialCondition::State(*s)).unwrap()).collect()
        };
        let (mut alone, mut batch) = (mk(), mk());
        for round in &steps {
            let reads: Vec<(f64, f64)> = alone.iter().zip(round).map(|(c, &(dt, k))| (c.t_hours() + dt, k)).collect();
            let a: Vec<_> = alone.iter_mut().zip(&reads).map(|(c, &(t, k))| c.advance_to(t, k)).collect();
            let b = Clock::advance_batch(&mut batch, &reads);
            prop_assert_eq!(a.len(), n);
            for i in 0..n {
                prop_assert_eq!(&a[i], &b[i]);
                prop_assert_eq!(alone[i].state().to_array().map(f64::to_bits), batch[i].state().to_array().map(f64::to_bits));
                prop_assert_eq!(alone[i].stats(), batch[i].stats());
                prop_assert_eq!(alone[i].snapshot(), batch[i].snapshot());
            }
        }
    }
}
