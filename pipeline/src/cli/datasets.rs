//! `kaiabc datasets generate`: synthetic sensor logs at any scale, deterministic per seed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use kaiabc_schemas::format_timestamp;

/// `kaiabc datasets …`.
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Write a synthetic log: every node reports temperature (a daily cycle with its own mean,
    /// amplitude and phase, plus sensor noise), humidity and pressure at a fixed interval with
    /// clock jitter, in arrival order.
    Generate(GenerateArgs),
}

/// Arguments of `kaiabc datasets generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of nodes (`node_00000`, `node_00001`, …).
    #[arg(long)]
    nodes: usize,
    /// Days of readings.
    #[arg(long)]
    days: f64,
    /// Seconds between a node's readings.
    #[arg(long, default_value_t = 60.0)]
    interval_seconds: f64,
    /// Random seed: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First reading time (RFC 3339).
    #[arg(long, default_value = "2025-01-01T00:00:00Z")]
    start: String,
    /// Output file; `.csv` or `.jsonl` decides the format. `-` writes CSV to stdout.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
}

/// SplitMix64: small, fast and good enough for synthetic noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

struct Node {
    id: String,
    mean_k: f64,
    amplitude_k: f64,
    phase_h: f64,
    humidity: f64,
    pressure: f64,
    jitter_ms: i64,
}

pub fn generate(a: &GenerateArgs) -> Result<()> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if a.nodes == 0 || !positive(a.days) || !positive(a.interval_seconds) {
        bail!("--nodes, --days and --interval-seconds must be positive");
    }
    let start: DateTime<Utc> = kaiabc_schemas::parse_timestamp(&a.start)
        .map_err(|e| anyhow::anyhow!("--start: {}", e.message))?;
    let jsonl = a.output.extension().is_some_and(|e| e == "jsonl");
    let out: Box<dyn Write> = if a.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&a.output).with_context(|| format!("creating {}", a.output.display()))?,
        )
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut rng = Rng(a.seed);
    let nodes: Vec<Node> = (0..a.nodes)
        .map(|i| Node {
            id: format!("node_{i:05}"),
            mean_k: 288.15 + 15.0 * rng.uniform(),
            amplitude_k: 2.0 + 5.0 * rng.uniform(),
            phase_h: 24.0 * rng.uniform(),
            humidity: 40.0 + 40.0 * rng.uniform(),
            pressure: 99_000.0 + 3_000.0 * rng.uniform(),
            jitter_ms: (rng.uniform() * 2_000.0) as i64,
        })
        .collect();
    if !jsonl {
        writeln!(
            out,
            "node_id,seq,timestamp,temperature_kelvin,humidity_percent,pressure_pa,light_lux,sensor_type,quality"
        )?;
    }
    let steps = (a.days * 86_400.0 / a.interval_seconds).floor() as i64;
    let interval_us = (a.interval_seconds * 1e6) as i64;
    let t0 = start.timestamp_micros();
    for k in 0..steps {
        for n in &nodes {
            let t_us = t0 + k * interval_us + n.jitter_ms * 1000;
            let hours = (t_us - t0) as f64 / 3.6e9;
            let kelvin = (n.mean_k
                + n.amplitude_k * (std::f64::consts::TAU * (hours - n.phase_h) / 24.0).sin()
                + 0.05 * rng.normal())
            .clamp(273.15, 323.15);
            let humidity = (n.humidity + 0.5 * rng.normal()).clamp(0.0, 100.0);
            let pressure = n.pressure + 10.0 * rng.normal();
            let ts =
                format_timestamp(&DateTime::<Utc>::from_timestamp_micros(t_us).unwrap_or_default());
            let seq = k + 1;
            if jsonl {
                writeln!(
                    out,
                    r#"{{"node_id":"{}","seq":{seq},"timestamp":"{ts}","temperature_kelvin":{kelvin:.3},"humidity_percent":{humidity:.2},"pressure_pa":{pressure:.1},"sensor_type":"BME280","quality":"good"}}"#,
                    n.id
                )?;
            } else {
                writeln!(
                    out,
                    "{},{seq},{ts},{kelvin:.3},{humidity:.2},{pressure:.1},,BME280,good",
                    n.id
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
