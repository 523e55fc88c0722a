//! The lake writer on its own: how long one worker takes to buffer a file's worth of readings
//! and their states, sort them and write them as committed Parquet files, per reading. A
//! replay's lake stage is this plus its share of the rhythms and the dataflow around it.
//!
//! Two figures: `buffer` (the rows into the writer's columns, nothing written) and `commit`
//! (the same, then sorted, encoded, compressed, written, synced and renamed). Their
//! difference is what Parquet and the disk cost.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kaiabc_connectors::lake::{LakeConfig, LakeRow, LakeWriter};
use kaiabc_connectors::sink::Sink;
use kaiabc_schemas::{OscillatorState, Quality, ReadingRow, SensorReading, StateVariables};

/// Nodes, each reporting once a minute for [`MINUTES`]: one file's worth (128 Ki rows) of
/// each table, as a 2 000-node replay's worker fills it.
const NODES: usize = 1_000;
const MINUTES: usize = 130;

/// Deterministic noise in [-0.5, 0.5) (xorshift64*).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// Rows in arrival order (minute by minute, every node in each): a reading as a BME280 gives
/// it (two decimals), and a state whose values move smoothly with time, as a clock's do.
fn rows() -> Vec<LakeRow> {
    let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("a fixed time")
        .with_timezone(&Utc);
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut rows = Vec::with_capacity(2 * NODES * MINUTES);
    for minute in 0..MINUTES {
        for node in 0..NODES {
            let t = start
                + chrono::Duration::milliseconds(
                    minute as i64 * 60_000 + (node as i64 * 37) % 60_000,
                );
            let hours = minute as f64 / 60.0 + node as f64 * 0.01;
            let kelvin = ((295.0
                + 5.0 * (hours / 24.0 * std::f64::consts::TAU).sin()
                + 0.05 * noise.next())
                * 100.0)
                .round()
                / 100.0;
            let node_id = format!("node_{node:05}");
            let reading = SensorReading {
                node_id: node_id.clone(),
                seq: Some(minute as i64 + 1),
                timestamp: t,
                temperature_kelvin: kelvin,
                humidity_percent: Some(((55.0 + 10.0 * noise.next()) * 100.0).round() / 100.0),
                pressure_pa: Some(((100_300.0 + 50.0 * noise.next()) * 10.0).round() / 10.0),
                light_lux: None,
                sensor_type: "BME280".into(),
                quality: Quality::Good,
                raw_values: None,
                firmware_version: None,
            };
            let phase = (hours / 22.0).fract();
            let wave = |shift: f64| 0.5 + 0.4 * ((phase + shift) * std::f64::consts::TAU).sin();
            let state = OscillatorState {
                node_id,
                timestamp: t,
                seq: reading.seq,
                circadian_time: phase * 24.0,
                phase: phase * std::f64::consts::TAU,
                period_hours: 22.0 + 0.01 * noise.next(),
                state_variables: StateVariables {
                    C_U: wave(0.0),
                    C_S: wave(0.25),
                    C_T: wave(0.5),
                    C_ST: wave(0.75),
                    A_free: 0.3 * wave(0.1),
                    CABC_complex: 0.2 * wave(0.6),
                },
                koa_metric: wave(0.3),
                output_pwm: (255.0 * wave(0.3)) as i32,
                manual_override: false,
                entrainment_active: true,
                temperature_kelvin: kelvin + 0.01 * noise.next(),
                raw_temperature_kelvin: kelvin,
                kalman_variance: 0.01 + 0.001 * noise.next(),
            };
            rows.push(LakeRow::Reading(ReadingRow {
                reading,
                filtered_temperature_kelvin: Some(state.temperature_kelvin),
                kalman_variance: Some(state.kalman_variance),
                filtered_humidity_percent: None,
                filtered_pressure_pa: None,
                late: false,
                filter: None,
            }));
            rows.push(LakeRow::State(state));
        }
    }
    rows
}

fn bench_lake_write(c: &mut Criterion) {
    let rows = rows();
    let readings = (NODES * MINUTES) as u64;
    let mut group = c.benchmark_group("lake_write");
    group.throughput(Throughput::Elements(readings));
    group.sample_size(10);
    group.bench_function("buffer", |b| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        b.iter_batched(
            || rows.clone(),
            |mut batch| {
                let mut w = LakeWriter::new(LakeConfig::at(dir.path()), 0).expect("a writer");
                w.process(&mut batch).expect("buffered");
                black_box(w)
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("commit", |b| {
        b.iter_batched(
            || {
                (
                    rows.clone(),
                    tempfile::tempdir().expect("a temporary directory"),
                )
            },
            |(mut batch, dir)| {
                let mut w = LakeWriter::new(LakeConfig::at(dir.path()), 0).expect("a writer");
                w.process(&mut batch).expect("buffered");
                w.checkpoint().expect("staged");
                black_box(w.commit().expect("committed"));
                dir
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_lake_write);
criterion_main!(benches);
