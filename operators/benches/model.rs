//! Model throughput: node-days per second at the default tolerance, the live pattern (a reading
//! a minute), the PRC, and our DP5(4) against the `ode_solvers` crate's `Dopri5` on the same
//! problem (the comparison that decided to keep a hand-written integrator).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kaiabc_operators::clock::{Clock, ClockConfig, InitialCondition};
use kaiabc_operators::integrator::{advance_lanes, Dopri5, IntegratorConfig, Step, LANES};
use kaiabc_operators::model::KaiParams;
use kaiabc_operators::prc::{phase_response_curve, PrcConfig};
use kaiabc_operators::system::{KaiLanes, KaiSystem};
use kaiabc_operators::temperature::Constant;
use ode_solvers::dopri5::Dopri5 as OsDopri5;
use ode_solvers::{OutputType, SVector, System};

struct OsKai {
    p: KaiParams,
}

impl System<f64, SVector<f64, 3>> for OsKai {
    fn system(&self, _t: f64, y: &SVector<f64, 3>, dy: &mut SVector<f64, 3>) {
        let d = self.p.derivatives(&[y[0], y[1], y[2]], 1.0, 1.0);
        dy[0] = d[0];
        dy[1] = d[1];
        dy[2] = d[2];
    }
}

/// The two tolerance settings every node-day figure is quoted at.
fn tolerances() -> [(&'static str, IntegratorConfig); 2] {
    [
        ("default_rtol1e-6_max0.5h", IntegratorConfig::default()),
        (
            "scipy_tol_rtol1e-5_atol1e-6",
            IntegratorConfig {
                rtol: 1e-5,
                atol: 1e-6,
                max_step: 1e9,
                ..Default::default()
            },
        ),
    ]
}

/// One node-day with our integrator from `y0` at 30 °C.
fn ours_node_day(clock: &ClockConfig, y0: [f64; 3], cfg: IntegratorConfig) -> Dopri5<3> {
    let mut ig = Dopri5::new(0.0, y0, cfg).unwrap();
    let mut sys = KaiSystem::new(&clock.params, &clock.etf, Constant(303.15));
    ig.advance_to(&mut sys, 24.0, |_| {}).unwrap();
    ig
}

/// One node-day with `ode_solvers`' Dopri5 (Hairer's defaults) at the same tolerances: the end
/// state and the number of right-hand-side evaluations.
fn ode_solvers_node_day(p: KaiParams, y0: [f64; 3], cfg: IntegratorConfig) -> ([f64; 3], u32) {
    let mut s = OsDopri5::from_param(
        OsKai { p },
        0.0,
        24.0,
        24.0,
        SVector::<f64, 3>::from(y0),
        cfg.rtol,
        cfg.atol,
        0.9,
        0.04,
        0.2,
        10.0,
        cfg.max_step.min(24.0),
        0.0,
        100_000,
        1000,
        OutputType::Sparse,
    );
    let st = s.integrate().unwrap();
    let y = *s.y_out().last().unwrap();
    ([y[0], y[1], y[2]], st.num_eval)
}

fn node_day(c: &mut Criterion) {
    let clock = ClockConfig::default();
    let reference = std::sync::Arc::new(clock.limit_cycle().unwrap());
    let y0 = reference.state_at_ct(0.0).to_array();
    let mut g = c.benchmark_group("node_day");
    g.throughput(Throughput::Elements(1));
    for (name, cfg) in tolerances() {
        g.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| *ours_node_day(&clock, y0, cfg).y())
        });
        g.bench_function(format!("ode_solvers/{name}"), |b| {
            b.iter(|| ode_solvers_node_day(clock.params, y0, cfg))
        });
    }
    // Many nodes: 64 clocks from evenly spread phases, LANES side by side (per node-day).
    let starts: Vec<[f64; 3]> = (0..64)
        .map(|i| reference.state_at_ct(24.0 * i as f64 / 64.0).to_array())
        .collect();
    g.throughput(Throughput::Elements(64));
    for (name, cfg) in tolerances() {
        g.bench_function(format!("ours_64_nodes_batched/{name}"), |b| {
            b.iter(|| {
                let mut igs: Vec<Dopri5<3>> = starts
                    .iter()
                    .map(|y| Dopri5::new(0.0, *y, cfg).unwrap())
                    .collect();
                for chunk in igs.chunks_mut(LANES) {
                    let lanes: &mut [Dopri5<3>; LANES] = chunk.try_into().unwrap();
                    let mut sys = KaiLanes::new(
                        [&clock.params; LANES],
                        [&clock.etf; LANES],
                        [Constant(303.15); LANES],
                    );
                    let mut obs = [|_: &Step<'_, 3>| {}; LANES];
                    for r in
                        advance_lanes(lanes.each_mut(), &mut sys, [24.0; LANES], obs.each_mut())
                    {
                        r.unwrap();
                    }
                }
                igs
            })
        });
    }
    g.throughput(Throughput::Elements(1));
    // The live pattern: the clock advanced reading by reading, one reading a minute, with
    // outputs (peak tracking, CT, KOA) maintained.
    g.bench_function("clock/1_reading_per_minute", |b| {
        b.iter_batched(
            || {
                let ct0 = InitialCondition::CircadianTime(0.0);
                Clock::with_reference(clock, Some(reference.clone()), 0.0, 303.15, ct0).unwrap()
            },
            |mut c| {
                for i in 1..=1440 {
                    c.advance_to(i as f64 / 60.0, 303.15 + 0.5 * ((i % 7) as f64))
                        .unwrap();
                }
                c.snapshot()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    // The live pattern for many nodes: 64 clocks, one reading a minute each, advanced together.
    let mut g = c.benchmark_group("node_day_live");
    g.throughput(Throughput::Elements(64));
    g.sample_size(10);
    g.bench_function("clock_batch_64_nodes_1_reading_per_minute", |b| {
        b.iter_batched(
            || {
                (0..64)
                    .map(|i| {
                        let ct = InitialCondition::CircadianTime(i as f64 * 0.375);
                        Clock::with_reference(clock, Some(reference.clone()), 0.0, 303.15, ct)
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            },
            |mut clocks| {
                for i in 1..=1440 {
                    let reads: Vec<(f64, f64)> = (0..64)
                        .map(|n| (i as f64 / 60.0, 303.15 + 0.5 * (((i + n) % 7) as f64)))
                        .collect();
                    for r in Clock::advance_batch(&mut clocks, &reads) {
                        r.unwrap();
                    }
                }
                clocks
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn accuracy_report() {
    // Same-problem accuracy, printed once so the speed comparison is read next to it.
    let clock = ClockConfig::default();
    let y0 = clock.limit_cycle().unwrap().state_at_ct(0.0).to_array();
    let tight = IntegratorConfig {
        rtol: 1e-12,
        atol: 1e-14,
        ..Default::default()
    };
    let r = ours_node_day(&clock, y0, tight);
    let ours = ours_node_day(&clock, y0, IntegratorConfig::default());
    let (yo, os_evals) = ode_solvers_node_day(clock.params, y0, IntegratorConfig::default());
    let err = |y: &[f64; 3]| (0..3).map(|i| (y[i] - r.y()[i]).abs()).fold(0.0, f64::max);
    eprintln!(
        "accuracy after one node-day at rtol 1e-6: ours max err {:.2e} µM ({} RHS evals), \
         ode_solvers {:.2e} µM ({} RHS evals)",
        err(ours.y()),
        ours.stats().rhs_evals,
        err(&yo),
        os_evals
    );
}

fn prc(c: &mut Criterion) {
    accuracy_report();
    let mut g = c.benchmark_group("prc");
    g.sample_size(10);
    g.bench_function("compensated_24_bins", |b| {
        b.iter(|| phase_response_curve(&ClockConfig::default(), &PrcConfig::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, node_day, prc);
criterion_main!(benches);
