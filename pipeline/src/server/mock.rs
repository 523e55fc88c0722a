//! Mock data for client developers (the API specification's `/mock/*`): synthetic readings
//! from a diurnal temperature cycle, a run of the real KaiABC model under a chosen temperature
//! profile, and named test scenarios built from both. Nothing here touches the pipeline.

use std::sync::Arc;

use chrono::{Duration, Utc};
use kaiabc_operators::clock::{Clock, InitialCondition};
use serde::Deserialize;
use serde_json::{json, Value};
use warp::{Filter, Reply};

use super::{body, Api, ApiError, Route};
use crate::auth::Principal;

/// `GET /v1/mock/sensor-data`: a diurnal temperature cycle (a cosine peaking at 14:00 local
/// solar time of the series) with humidity following it inversely, plus seeded noise.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SensorDataQuery {
    /// The node the readings are for (default `mock_001`).
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    /// How many hours, ending now (default 24).
    #[schemars(range(min = 1, max = 168))]
    hours: Option<u32>,
    /// Minutes between readings (default 10).
    #[schemars(range(min = 1, max = 60))]
    interval_minutes: Option<u32>,
    /// Mean temperature, K (default 298.15).
    #[schemars(range(min = 280.0, max = 315.0))]
    mean_kelvin: Option<f64>,
    /// Half the day's swing, K (default 4).
    #[schemars(range(min = 0.0, max = 8.0))]
    amplitude_kelvin: Option<f64>,
    /// Standard deviation of the sensor noise, K (default 0.05).
    #[schemars(range(min = 0.0, max = 1.0))]
    noise_kelvin: Option<f64>,
    /// Seed of the noise (the same seed gives the same series).
    #[schemars(range(min = 0))]
    seed: Option<u64>,
}

/// A small deterministic generator (SplitMix64) for reproducible noise.
struct Noise(u64);

impl Noise {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.next_f64().max(f64::MIN_POSITIVE);
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn sensor_data(q: SensorDataQuery) -> Result<Value, ApiError> {
    let node = q.node_id.unwrap_or_else(|| "mock_001".into());
    if !crate::auth::valid_node_id(&node) {
        return Err(ApiError::InvalidParameter(format!(
            "node_id {node:?} is not a node id"
        )));
    }
    let hours = q.hours.unwrap_or(24);
    let step = q.interval_minutes.unwrap_or(10);
    let mean = q.mean_kelvin.unwrap_or(298.15);
    let amp = q.amplitude_kelvin.unwrap_or(4.0);
    let noise = q.noise_kelvin.unwrap_or(0.05);
    let fine = (1..=168).contains(&hours)
        && (1..=60).contains(&step)
        && (280.0..=315.0).contains(&mean)
        && (0.0..=8.0).contains(&amp)
        && (0.0..=1.0).contains(&noise);
    if !fine {
        return Err(ApiError::InvalidParameter(
            "hours 1-168, interval_minutes 1-60, mean_kelvin 280-315, amplitude_kelvin 0-8, \
             noise_kelvin 0-1"
                .into(),
        ));
    }
    let mut rng = Noise(q.seed.unwrap_or(1));
    let end = Utc::now();
    let n = hours * 60 / step;
    let start = end - Duration::minutes(i64::from(n * step));
    let readings: Vec<Value> = (0..n)
        .map(|i| {
            let t = start + Duration::minutes(i64::from(i * step));
            let hour = (i * step) as f64 / 60.0;
            let cycle = (std::f64::consts::TAU * (hour - 14.0) / 24.0).cos();
            let kelvin = mean + amp * cycle + noise * rng.normal();
            json!({
                "node_id": node,
                "seq": i + 1,
                "timestamp": kaiabc_schemas::format_timestamp(&t),
                "temperature_kelvin": (kelvin * 100.0).round() / 100.0,
                "humidity_percent": ((55.0 - 10.0 * cycle + rng.normal()) * 10.0).round() / 10.0,
                "pressure_pa": (101_325.0 + 30.0 * rng.normal()).round(),
                "sensor_type": "BME280",
                "quality": "good",
            })
        })
        .collect();
    Ok(json!({
        "node_id": node,
        "model": format!("{mean} K ± {amp} K diurnal cosine (peak 14:00 of the series), \
            {noise} K Gaussian noise, seed {}", q.seed.unwrap_or(1)),
        "count": readings.len(),
        "readings": readings,
    }))
}

/// `POST /v1/mock/simulate-oscillator`: the KaiABC model run on its own.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SimulateRequest {
    /// Hours to simulate (default 48).
    #[serde(default)]
    #[schemars(range(min = 1.0, max = 240.0))]
    hours: Option<f64>,
    /// Mean temperature, K (default 303.15, the model's reference).
    #[serde(default)]
    #[schemars(range(min = 283.15, max = 318.15))]
    temperature_kelvin: Option<f64>,
    /// Half the swing of a 24 h temperature cycle, K (default 0: constant).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 10.0))]
    amplitude_kelvin: Option<f64>,
    /// Circadian time the clock starts at (default 0).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 23.999))]
    initial_ct: Option<f64>,
    /// Minutes between the points returned (default 30).
    #[serde(default)]
    #[schemars(range(min = 1.0, max = 240.0))]
    interval_minutes: Option<f64>,
}

fn simulate(api: &Api, r: SimulateRequest) -> Result<Value, ApiError> {
    let hours = r.hours.unwrap_or(48.0);
    let mean = r.temperature_kelvin.unwrap_or(303.15);
    let amp = r.amplitude_kelvin.unwrap_or(0.0);
    let ct0 = r.initial_ct.unwrap_or(0.0);
    let step = r.interval_minutes.unwrap_or(30.0) / 60.0;
    let bad = |m: String| ApiError::InvalidParameter(m);
    let fine = (1.0..=240.0).contains(&hours)
        && (283.15..=318.15).contains(&mean)
        && (0.0..=10.0).contains(&amp)
        && (0.0..24.0).contains(&ct0)
        && (1.0 / 60.0 - 1e-12..=4.0).contains(&step);
    if !fine {
        return Err(bad(
            "hours 1-240, temperature_kelvin 283.15-318.15, amplitude_kelvin 0-10, \
             initial_ct 0-24, interval_minutes 1-240"
                .into(),
        ));
    }
    let drive = |t: f64| mean + amp * (std::f64::consts::TAU * (t - 14.0) / 24.0).cos();
    let cfg = api.node_cfg.clock;
    let mut clock = Clock::with_reference(
        cfg,
        api.node_cfg.reference.clone(),
        0.0,
        drive(0.0),
        InitialCondition::CircadianTime(ct0),
    )
    .map_err(|e| bad(e.to_string()))?;
    let mut points = Vec::new();
    let mut t = 0.0;
    while t <= hours + 1e-9 {
        if t > 0.0 {
            clock
                .advance_to(t, drive(t))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        let s = clock.snapshot();
        let c = s.state_variables;
        points.push(json!({
            "t_hours": t,
            "temperature_kelvin": drive(t),
            "circadian_time": s.circadian_time,
            "phase": s.phase,
            "period_hours": s.period_hours,
            "koa_metric": s.koa_metric,
            "state_variables": {"C_U": c.c_u, "C_S": c.c_s, "C_T": c.c_t, "C_ST": c.c_st,
                "A_free": c.a_free, "CABC_complex": c.cabc_complex},
        }));
        t += step;
    }
    Ok(json!({
        "model": "Rust et al. 2007 (Science 318:809) with the server's temperature dependence",
        "temperature_profile": if amp > 0.0 {
            format!("{mean} K ± {amp} K, 24 h cosine peaking at t = 14 h")
        } else {
            format!("constant {mean} K")
        },
        "count": points.len(),
        "points": points,
    }))
}

/// `GET /v1/mock/test-scenarios`: named scenarios a client can run against a server, each
/// with the mock request that builds it and what the server should do with it.
fn scenarios() -> Value {
    json!({ "scenarios": [
        {
            "name": "steady_reference",
            "description": "A day at the model's reference temperature: the clock free-runs \
                at its reference period (about 20.7 h at 30 °C in Rust et al. 2007).",
            "request": {"method": "GET", "path": "/v1/mock/sensor-data",
                "query": {"hours": 24, "mean_kelvin": 303.15, "amplitude_kelvin": 0}},
            "expect": "every reading 200 with its filtered value; period_hours near 20.7",
        },
        {
            "name": "diurnal_entrainment",
            "description": "Three days of a ±5 K 24 h cycle: the clock entrains to 24 h.",
            "request": {"method": "GET", "path": "/v1/mock/sensor-data",
                "query": {"hours": 72, "mean_kelvin": 298.15, "amplitude_kelvin": 5}},
            "expect": "entrainment_active true; the rhythm windows' KOA period near 24 h",
        },
        {
            "name": "out_of_range",
            "description": "A reading at 400 K.",
            "request": {"method": "POST", "path": "/v1/sensors/temperature",
                "body": {"temperature_kelvin": 400.0}},
            "expect": "422 VALIDATION_ERROR with details.field_errors[0].field temperature_kelvin \
                and code OUT_OF_RANGE; the reading is kept in the dead letters",
        },
        {
            "name": "sensor_dropout",
            "description": "Six hours without readings inside a day.",
            "request": {"method": "GET", "path": "/v1/mock/sensor-data",
                "query": {"hours": 24}, "then": "drop the readings of hours 8-14"},
            "expect": "the clock runs free across the gap (entrainment_active false on the \
                first reading after it)",
        },
        {
            "name": "model_run",
            "description": "The model alone under a ±5 K cycle, for comparison with a node.",
            "request": {"method": "POST", "path": "/v1/mock/simulate-oscillator",
                "body": {"hours": 72, "temperature_kelvin": 298.15, "amplitude_kelvin": 5}},
            "expect": "points every 30 min with circadian_time, phase, koa_metric",
        },
    ] })
}

/// `GET /v1/mock/sensor-data`.
pub(super) fn sensor_data_route(_: &Arc<Api>, at: super::Matched) -> Route {
    at.and(warp::query::<SensorDataQuery>())
        .map(|_: Principal, q: SensorDataQuery| match sensor_data(q) {
            Ok(v) => warp::reply::json(&v).into_response(),
            Err(e) => e.response(),
        })
        .boxed()
}

/// `POST /v1/mock/simulate-oscillator` (4 KiB at most; an empty body takes the defaults).
pub(super) fn simulate_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(body(4 * 1024))
        .then(move |_: Principal, b: bytes::Bytes| {
            let api = Arc::clone(&a);
            async move {
                let req: SimulateRequest = if b.is_empty() {
                    SimulateRequest::default()
                } else {
                    match super::json_object(&b) {
                        Ok(r) => r,
                        Err(e) => return ApiError::InvalidParameter(e.to_string()).response(),
                    }
                };
                match tokio::task::spawn_blocking(move || simulate(&api, req)).await {
                    Ok(Ok(v)) => warp::reply::json(&v).into_response(),
                    Ok(Err(e)) => e.response(),
                    Err(e) => ApiError::Internal(e.to_string()).response(),
                }
            }
        })
        .boxed()
}

/// `GET /v1/mock/test-scenarios`.
pub(super) fn scenarios_route(_: &Arc<Api>, at: super::Matched) -> Route {
    at.map(|_: Principal| warp::reply::json(&scenarios()).into_response())
        .boxed()
}
