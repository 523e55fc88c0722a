//! `kaiabc simulate`: one clock through a constant or recorded temperature, as CSV or JSON rows.

use std::io::{BufWriter, Write};

use anyhow::{bail, Context, Result};
use kaiabc_operators::clock::{Clock, ClockConfig, InitialCondition};
use kaiabc_operators::temperature::{
    check_history_point, PiecewiseLinear, TemperatureSource, VALID_KELVIN,
};
use kaiabc_operators::{IntegratorConfig, KaiState, ModelError};
use serde::Serialize;

use super::{Format, SimulateArgs};
use crate::table::read_columns;

/// Column order of the CSV output; JSON rows use the same keys.
pub const HEADER: [&str; 11] = [
    "t_hours",
    "C_U",
    "C_S",
    "C_T",
    "C_ST",
    "A_free",
    "CABC_complex",
    "koa",
    "circadian_time",
    "phase",
    "temperature_kelvin",
];

/// Most rows one run may produce (guards against `--step-minutes 0.0001 --hours 1e6`).
const MAX_ROWS: f64 = 20_000_000.0;

#[derive(Serialize)]
struct Row {
    t_hours: f64,
    #[serde(rename = "C_U")]
    c_u: f64,
    #[serde(rename = "C_S")]
    c_s: f64,
    #[serde(rename = "C_T")]
    c_t: f64,
    #[serde(rename = "C_ST")]
    c_st: f64,
    #[serde(rename = "A_free")]
    a_free: f64,
    #[serde(rename = "CABC_complex")]
    cabc_complex: f64,
    koa: f64,
    circadian_time: f64,
    phase: f64,
    temperature_kelvin: f64,
}

enum Out<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Json(W),
}

enum Input {
    Constant(f64),
    Profile(PiecewiseLinear),
}

impl Input {
    fn kelvin_at(&mut self, t: f64) -> f64 {
        match self {
            Input::Constant(k) => *k,
            Input::Profile(p) => p.kelvin_at(t),
        }
    }
}

pub fn run(a: &SimulateArgs) -> Result<()> {
    if !(a.hours.is_finite() && a.hours > 0.0) {
        bail!("--hours must be a positive number, got {}", a.hours);
    }
    if !(a.step_minutes.is_finite() && a.step_minutes > 0.0) {
        bail!(
            "--step-minutes must be a positive number, got {}",
            a.step_minutes
        );
    }
    let dt = a.step_minutes / 60.0;
    if a.hours / dt > MAX_ROWS {
        bail!("--hours / --step-minutes would produce more than {MAX_ROWS} rows");
    }
    let mut input = match (&a.temperature_c, &a.temperature_csv) {
        (Some(c), None) => {
            let k = c + 273.15;
            if !(c.is_finite() && VALID_KELVIN.contains(&k)) {
                bail!("--temperature-c {c} is outside the model's range (−123 to 126 °C)");
            }
            Input::Constant(k)
        }
        (None, Some(path)) => Input::Profile(read_profile(path)?),
        _ => unreachable!("clap enforces exactly one temperature source"),
    };
    let cfg = ClockConfig {
        integrator: IntegratorConfig {
            rtol: a.rtol,
            atol: a.atol,
            ..Default::default()
        },
        ..a.model.config(a.etf)
    };
    let initial = match &a.initial_state {
        Some(text) => InitialCondition::State(parse_state(text)?),
        None => InitialCondition::CircadianTime(a.initial_ct),
    };
    let t0_temp = input.kelvin_at(0.0);
    let mut clock = Clock::new(cfg, 0.0, t0_temp, initial).context("cannot start the clock")?;

    // Stops: every output time, plus every reading time (the temperature has a kink there).
    let n_out = (a.hours / dt + 1e-9).floor() as u64;
    let mut outputs: Vec<f64> = (0..=n_out).map(|k| k as f64 * dt).collect();
    if a.hours - outputs[outputs.len() - 1] > 1e-9 {
        outputs.push(a.hours);
    }
    let readings: Vec<f64> = match &input {
        Input::Profile(p) => p
            .times()
            .iter()
            .copied()
            .filter(|t| *t > 0.0 && *t < a.hours)
            .collect(),
        Input::Constant(_) => Vec::new(),
    };

    let stdout = std::io::stdout();
    let sink: Box<dyn Write> = match &a.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("{}: cannot create", path.display()))?,
        ),
        None => Box::new(stdout.lock()),
    };
    let w = BufWriter::new(sink);
    let mut out = match a.format {
        Format::Csv => {
            let mut c = csv::WriterBuilder::new().has_headers(false).from_writer(w);
            c.write_record(HEADER)?;
            Out::Csv(Box::new(c))
        }
        Format::Json => {
            let mut w = w;
            w.write_all(b"[")?;
            Out::Json(w)
        }
    };
    let mut r = 0;
    for (i, &t_out) in outputs.iter().enumerate() {
        while r < readings.len() && readings[r] < t_out {
            clock.advance_with(readings[r], |t| input.kelvin_at(t))?;
            r += 1;
        }
        if t_out > clock.t_hours() {
            clock.advance_with(t_out, |t| input.kelvin_at(t))?;
        }
        let s = clock.snapshot();
        let v = s.state_variables;
        let row = Row {
            t_hours: t_out,
            c_u: v.c_u,
            c_s: v.c_s,
            c_t: v.c_t,
            c_st: v.c_st,
            a_free: v.a_free,
            cabc_complex: v.cabc_complex,
            koa: s.koa_metric,
            circadian_time: s.circadian_time,
            phase: s.phase,
            temperature_kelvin: s.temperature_kelvin,
        };
        match &mut out {
            Out::Csv(c) => c.serialize(&row)?,
            Out::Json(w) => {
                if i > 0 {
                    w.write_all(b",")?;
                }
                w.write_all(b"\n")?;
                serde_json::to_writer(&mut *w, &row)?;
            }
        }
    }
    match out {
        Out::Csv(mut c) => c.flush()?,
        Out::Json(mut w) => {
            w.write_all(b"\n]\n")?;
            w.flush()?;
        }
    }
    let st = clock.stats();
    tracing::info!(
        accepted = st.accepted,
        rejected = st.rejected,
        rhs_evals = st.rhs_evals,
        "simulation finished"
    );
    Ok(())
}

/// Reads `t_hours,temperature_kelvin`, naming the row of any problem.
fn read_profile(path: &std::path::Path) -> Result<PiecewiseLinear> {
    let cols = read_columns(path, &["t_hours", "temperature_kelvin"])?;
    let (t, k) = (&cols.values[0], &cols.values[1]);
    let shown = path.display();
    let mut points = Vec::with_capacity(t.len());
    let mut skipped = 0usize;
    for i in 0..t.len() {
        let row = i + 2;
        if t[i].is_nan() || k[i].is_nan() {
            skipped += 1;
            continue;
        }
        let prev = points.last().map(|&(t, _)| t);
        match check_history_point(prev, t[i], k[i]) {
            Ok(()) => {}
            Err(ModelError::InvalidParameter { name, reason }) => {
                bail!("{shown}: row {row}, column `{name}`: {reason}")
            }
            Err(other) => bail!("{shown}: row {row}: {other}"),
        }
        points.push((t[i], k[i]));
    }
    if points.is_empty() {
        bail!("{shown}: no usable rows (every row has an empty time or temperature)");
    }
    if skipped > 0 {
        tracing::warn!(file = %shown, skipped, "rows with an empty time or temperature were skipped");
    }
    Ok(PiecewiseLinear::new(points)?)
}

/// Parses `T,ST,S` (µM).
fn parse_state(text: &str) -> Result<KaiState> {
    let v: Vec<f64> = text
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            anyhow::anyhow!("--initial-state `{text}`: expected three numbers T,ST,S in µM")
        })?;
    match v[..] {
        [t, d, s] => Ok(KaiState { t, d, s }),
        _ => bail!(
            "--initial-state `{text}`: expected three numbers T,ST,S in µM, got {}",
            v.len()
        ),
    }
}
