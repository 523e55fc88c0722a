//! Kalman filter throughput: updates per second for a full BME280 reading and for a
//! temperature-only one.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kaiabc_operators::kalman::{KalmanFilter, KalmanParams, Measurement};

/// Readings per benchmark iteration.
const BATCH: usize = 1_000;

/// Deterministic small perturbations (xorshift64*), so every reading is accepted and the filter
/// does the full gated update rather than the cheaper rejection path.
fn jitter(n: usize) -> Vec<[f64; 3]> {
    let mut s = 0x9E37_79B9_7F4A_7C15_u64;
    (0..n)
        .map(|_| {
            std::array::from_fn(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
                u - 0.5
            })
        })
        .collect()
}

fn bench_updates(c: &mut Criterion) {
    let noise = jitter(BATCH);
    let full: Vec<Measurement> = noise
        .iter()
        .map(|[t, h, p]| Measurement::full(300.0 + 0.3 * t, 50.0 + 0.4 * h, 101_325.0 + 50.0 * p))
        .collect();
    let temperature: Vec<Measurement> = noise
        .iter()
        .map(|[t, _, _]| Measurement::temperature_only(300.0 + 0.3 * t))
        .collect();

    let mut group = c.benchmark_group("kalman_update");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, readings) in [("full_reading", &full), ("temperature_only", &temperature)] {
        // Start from a warmed-up filter so every iteration does the same steady-state work.
        let mut warm = KalmanFilter::new(KalmanParams::default()).unwrap();
        warm.update(0.0, &Measurement::full(300.0, 50.0, 101_325.0))
            .unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut filter = warm.clone();
                let mut t = 0.0;
                for m in readings {
                    t += 60.0;
                    black_box(filter.update(black_box(t), black_box(m)).unwrap());
                }
                filter
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_updates);
criterion_main!(benches);
