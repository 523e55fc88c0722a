//! The phase response curve of a node's clock and the phase-shift planner: the temperature
//! step whose predicted shift is closest to the one asked for, sent as a control command; the
//! node reports the shift achieved on `phase_shift.complete` and in the `phase_shifts` table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use kaiabc_operators::phase_shift::choose;
use kaiabc_operators::prc::{phase_response_curve, Prc, PrcConfig};
use kaiabc_schemas::{ControlAction, PhaseShiftPlan};
use serde::Deserialize;
use serde_json::json;
use warp::{Filter, Reply};

use super::{body, control, Api, ApiError, Route};
use crate::auth::Principal;

/// Curves already computed, by their inputs (a curve takes up to seconds; a dashboard asks
/// again and again).
#[derive(Debug, Default)]
pub struct PrcCache {
    curves: Mutex<HashMap<String, Arc<Prc>>>,
}

/// Curves kept at most; the cache is cleared when full (inputs rarely vary).
const CACHE_CURVES: usize = 256;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PrcQuery {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: Option<String>,
    /// The step (K), within ±30 K, so the pulse stays within 150–400 K.
    #[schemars(range(min = -30.0, max = 30.0))]
    delta_k: Option<f64>,
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 720))]
    duration_minutes: Option<f64>,
    #[schemars(range(min = 1, max = 288))]
    resolution: Option<usize>,
    #[schemars(range(min = 2, max = 40))]
    settle_cycles: Option<usize>,
    /// `standard` (the default step) or `custom` (the step `delta_k` and `duration_minutes`
    /// name); the answer's `data` gives, per CT, the shift of a warm step
    /// (`phase_shift_advance`) and of the same step cold (`phase_shift_delay`).
    #[schemars(extend("enum" = ["standard", "custom"]))]
    model: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ShiftRequest {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: String,
    /// The shift wanted (h, advance positive); or `shift_type` with `magnitude_hours`.
    #[serde(default)]
    #[schemars(range(min = -12.0, max = 12.0))]
    target_shift_hours: Option<f64>,
    /// `advance` or `delay` (with `magnitude_hours`).
    #[serde(default)]
    shift_type: Option<ShiftType>,
    /// The size of the shift wanted (h).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 12.0))]
    magnitude_hours: Option<f64>,
    /// How to shift: `temperature_step` (the default) or `parameter_modulation` (a step of
    /// the KaiA total).
    #[serde(default)]
    method: Option<ShiftMethod>,
    /// For `parameter_modulation`: the KaiA total during the step as a factor of the
    /// configured one (0.1–4; default: ×2 and ×0.5 both considered).
    #[serde(default)]
    #[schemars(range(min = 0.1, max = 4.0))]
    kaia_factor: Option<f64>,
    /// The step (K): positive warm, negative cold (the specification's name of `delta_k` with
    /// the direction in its sign).
    #[serde(default)]
    #[schemars(range(min = -30.0, max = 30.0))]
    temperature_delta_kelvin: Option<f64>,
    /// Why (kept with the command in the control log).
    #[serde(default)]
    #[schemars(length(max = 500))]
    reason: Option<String>,
    /// Size of the step (K); warm and cold steps are both considered unless `direction` says.
    #[serde(default = "default_delta")]
    delta_k: f64,
    #[serde(default)]
    direction: Direction,
    #[serde(default = "default_duration")]
    duration_minutes: f64,
    #[serde(default = "default_settle")]
    settle_cycles: u32,
    /// Plan only: answer the plan without sending it.
    #[serde(default)]
    dry_run: bool,
}

fn default_delta() -> f64 {
    5.0
}
fn default_duration() -> f64 {
    120.0
}
fn default_settle() -> u32 {
    3
}

/// The specification's shift types.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ShiftType {
    Advance,
    Delay,
}

/// The specification's shift methods.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ShiftMethod {
    /// A step of the node's temperature drive (`delta_k`, warm or cold).
    #[default]
    TemperatureStep,
    /// A step of the model's KaiA total (`kaia_factor`; KaiA added to or taken from the
    /// reaction), at the node's temperature.
    ParameterModulation,
}

/// The KaiA steps a `parameter_modulation` shift considers unless `kaia_factor` names one:
/// twice the KaiA and half of it (the clock answers both strongly, at different phases).
const KAIA_STEPS: [f64; 2] = [2.0, 0.5];

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Warm,
    Cold,
    #[default]
    Either,
}

/// The node's curve for a step of `delta_k`, at the node's current temperature under its own
/// ETF (the shared reference temperature for a node that has not reported).
async fn curve(
    api: &Api,
    node: Option<&str>,
    prc: PrcConfig,
) -> Result<(Arc<Prc>, Option<kaiabc_schemas::OscillatorState>), Box<warp::reply::Response>> {
    let state = node.and_then(|n| api.shared.hub.state(n));
    let settings = node.map(|n| api.book.get(n)).unwrap_or_default();
    let mut clock = settings.clock_config(&api.node_cfg);
    if let Some(s) = &state {
        // Curves at 0.1 K steps: close enough, and the cache hits.
        clock.reference_temperature_k = (s.temperature_kelvin * 10.0).round() / 10.0;
    }
    let key = format!("{clock:?}|{prc:?}");
    if let Some(c) = api
        .prcs
        .curves
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned())
    {
        return Ok((c, state));
    }
    let computed = tokio::task::spawn_blocking(move || phase_response_curve(&clock, &prc))
        .await
        .map_err(|e| Box::new(ApiError::Internal(e.to_string()).response()))?
        .map_err(|e| Box::new(ApiError::InvalidParameter(e.to_string()).response()))?;
    let c = Arc::new(computed);
    if let Ok(mut m) = api.prcs.curves.lock() {
        if m.len() >= CACHE_CURVES {
            m.clear();
        }
        m.insert(key, Arc::clone(&c));
    }
    Ok((c, state))
}

async fn get_prc(api: Arc<Api>, q: PrcQuery) -> warp::reply::Response {
    let d = PrcConfig::default();
    let model = q.model.clone().unwrap_or_else(|| "standard".into());
    let standard = match model.as_str() {
        "standard" => true,
        "custom" => false,
        m => {
            return ApiError::InvalidParameter(format!("model {m:?}: standard or custom"))
                .response()
        }
    };
    if standard && (q.delta_k.is_some() || q.duration_minutes.is_some()) {
        return ApiError::InvalidParameter(
            "delta_k and duration_minutes describe a custom step: add model=custom".into(),
        )
        .response();
    }
    let cfg = PrcConfig {
        delta_k: q.delta_k.unwrap_or(d.delta_k),
        duration_minutes: q.duration_minutes.unwrap_or(d.duration_minutes),
        resolution: q.resolution.unwrap_or(24),
        settle_cycles: q.settle_cycles.unwrap_or(d.settle_cycles),
        ..d
    };
    if let Some(resp) = q.node_id.as_deref().and_then(super::invalid_node_id) {
        return resp;
    }
    // The step as asked, and the same step of the other sign: the curve of a warm and of a
    // cold step at each circadian time.
    let other = PrcConfig {
        delta_k: -cfg.delta_k,
        ..cfg
    };
    // Both at once: each takes a core for up to seconds.
    let (first, second) = tokio::join!(
        curve(&api, q.node_id.as_deref(), cfg),
        curve(&api, q.node_id.as_deref(), other)
    );
    let (c, state) = match first {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let (o, _) = match second {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let (warm, cold) = if cfg.delta_k >= 0.0 {
        (&c, &o)
    } else {
        (&o, &c)
    };
    let data: Vec<serde_json::Value> = warm
        .points
        .iter()
        .zip(&cold.points)
        .map(|(w, k)| {
            json!({
                "circadian_time": w.circadian_time,
                "phase_shift_advance": w.phase_shift_hours,
                "phase_shift_delay": k.phase_shift_hours,
            })
        })
        .collect();
    warp::reply::json(&json!({
        "model": model,
        "reference": format!(
            "Rust et al. 2007 (Science 318:809) KaiABC model, curve by direct simulation of a \
             ±{} K step for {} min at each circadian time (asymptotic shift after {} cycles)",
            cfg.delta_k.abs(), cfg.duration_minutes, cfg.settle_cycles
        ),
        "resolution": data.len(),
        "data": data,
        "node_id": q.node_id,
        "prc": &*c,
        "node_circadian_time": state.as_ref().map(|s| s.circadian_time),
    }))
    .into_response()
}

/// The circadian-time window where a step of `curve` gives at least 80 % of its largest shift
/// of the sign of `target`, as the specification writes it (`"16-22"`, wrapping past 24).
fn optimal_window(curve: &Prc, target: f64) -> Option<String> {
    let signed: Vec<(f64, f64)> = curve
        .points
        .iter()
        .map(|p| (p.circadian_time, p.phase_shift_hours * target.signum()))
        .collect();
    let best = signed.iter().map(|x| x.1).fold(0.0f64, f64::max);
    if best <= 0.0 {
        return None;
    }
    let good: Vec<bool> = signed.iter().map(|x| x.1 >= 0.8 * best).collect();
    let n = good.len();
    // The longest run of good points, going round the circle.
    let (mut best_run, mut best_start) = (0, 0);
    for start in 0..n {
        if good[start] && !good[(start + n - 1) % n] || (start == 0 && good.iter().all(|g| *g)) {
            let len = (0..n).take_while(|k| good[(start + k) % n]).count();
            if len > best_run {
                (best_run, best_start) = (len, start);
            }
        }
    }
    let step = 24.0 / n as f64;
    let from = signed[best_start].0;
    let to = (from + step * best_run as f64).rem_euclid(24.0);
    Some(format!(
        "{:.0}-{:.0}",
        from,
        if to == 0.0 { 24.0 } else { to }
    ))
}

async fn phase_shift(api: Arc<Api>, who: Principal, body: bytes::Bytes) -> warp::reply::Response {
    let bad = |m: String| ApiError::InvalidParameter(m).response();
    let req: ShiftRequest = match super::json_object(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad(format!(
                "expected {{\"node_id\", \"target_shift_hours\", …}}: {e}"
            ))
        }
    };
    let mut req = req;
    let target = match (req.target_shift_hours, req.shift_type, req.magnitude_hours) {
        (Some(t), None, None) => t,
        (None, Some(kind), Some(m)) if m.is_finite() && m >= 0.0 => match kind {
            ShiftType::Advance => m,
            ShiftType::Delay => -m,
        },
        (None, _, _) => {
            return bad(
                "name the shift: target_shift_hours, or shift_type with magnitude_hours".into(),
            )
        }
        _ => return bad("target_shift_hours or shift_type with magnitude_hours, not both".into()),
    };
    if !(target.is_finite() && target.abs() <= 12.0) {
        return bad("the shift must be within ±12 h".into());
    }
    if let Some(t) = req.temperature_delta_kelvin {
        if !(t.is_finite() && t != 0.0) {
            return bad("temperature_delta_kelvin must be a non-zero number of kelvin".into());
        }
        req.delta_k = t.abs();
        req.direction = if t > 0.0 {
            Direction::Warm
        } else {
            Direction::Cold
        };
    }
    let method = req.method.unwrap_or_default();
    let kaia_steps: Vec<f64> = match (method, req.kaia_factor) {
        (ShiftMethod::TemperatureStep, None) => vec![1.0],
        (ShiftMethod::TemperatureStep, Some(_)) => {
            return bad("kaia_factor is the step of a parameter_modulation shift".into())
        }
        (ShiftMethod::ParameterModulation, _)
            if req.temperature_delta_kelvin.is_some() || req.direction != Direction::Either =>
        {
            return bad(
                "a parameter_modulation shift steps the KaiA total, not the temperature: \
                 kaia_factor instead of temperature_delta_kelvin or direction"
                    .into(),
            )
        }
        (ShiftMethod::ParameterModulation, Some(f))
            if f.is_finite() && kaiabc_operators::prc::KAIA_FACTORS.contains(&f) && f != 1.0 =>
        {
            vec![f]
        }
        (ShiftMethod::ParameterModulation, Some(f)) => {
            return bad(format!(
                "kaia_factor must be within 0.1–4 and not 1, got {f}"
            ))
        }
        (ShiftMethod::ParameterModulation, None) => KAIA_STEPS.to_vec(),
    };
    if req.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return bad("reason is longer than 500 characters".into());
    }
    if !(req.delta_k.is_finite() && req.delta_k > 0.0) {
        return bad("delta_k is the step's size: a positive number of kelvin".into());
    }
    if !(1..=20).contains(&req.settle_cycles) {
        return bad("settle_cycles must be 1–20".into());
    }
    if let Some(resp) = super::invalid_node_id(&req.node_id) {
        return resp;
    }
    let Some(now) = api.shared.hub.state(&req.node_id) else {
        return ApiError::NodeNotFound(format!(
            "node {:?} has no clock yet: a shift is planned from its current phase",
            req.node_id
        ))
        .response();
    };
    if api.shared.metrics.node_online(&req.node_id) == Some(false) {
        // Its clock's phase is as old as its last reading: a plan from it would miss.
        return ApiError::NodeOffline {
            message: format!(
                "node {:?} is not reporting: a shift is planned from the clock's current phase, \
                 and its last reading is from {}",
                req.node_id,
                kaiabc_schemas::format_timestamp(&now.timestamp)
            ),
            last_seen: Some(kaiabc_schemas::format_timestamp(&now.timestamp)),
        }
        .response();
    }
    let signs: &[f64] = match (method, req.direction) {
        // The KaiA step alone: the temperature stays.
        (ShiftMethod::ParameterModulation, _) => &[0.0],
        (_, Direction::Warm) => &[1.0],
        (_, Direction::Cold) => &[-1.0],
        (_, Direction::Either) => &[1.0, -1.0],
    };
    let mut curves = Vec::new();
    for sign in signs {
        for &kaia_factor in &kaia_steps {
            let cfg = PrcConfig {
                delta_k: sign * req.delta_k,
                duration_minutes: req.duration_minutes,
                resolution: 48,
                settle_cycles: 4,
                kaia_factor,
            };
            match curve(&api, Some(&req.node_id), cfg).await {
                Ok((c, _)) => curves.push(c),
                Err(r) => return *r,
            }
        }
    }
    let refs: Vec<&Prc> = curves.iter().map(|c| &**c).collect();
    let Some(choice) = choose(&refs, now.circadian_time, now.period_hours, target) else {
        return bad("the curve has no points".into());
    };
    let start = now.timestamp + chrono::Duration::milliseconds((choice.wait_hours * 3.6e6) as i64);
    let plan = PhaseShiftPlan {
        shift_id: format!("ps_{}_{}", req.node_id, Utc::now().timestamp_micros()),
        target_shift_hours: target,
        predicted_shift_hours: choice.predicted_shift_hours,
        start,
        duration_minutes: req.duration_minutes,
        delta_k: choice.delta_k,
        kaia_factor: choice.kaia_factor,
        settle_cycles: req.settle_cycles,
    };
    let miss = (choice.predicted_shift_hours - target).abs();
    let chosen = curves
        .iter()
        .find(|c| c.config.delta_k == choice.delta_k && c.config.kaia_factor == choice.kaia_factor)
        .unwrap_or(&curves[0]);
    let completion = start + chrono::Duration::milliseconds((req.duration_minutes * 60e3) as i64);
    let settled = completion
        + chrono::Duration::milliseconds(
            (f64::from(req.settle_cycles) * now.period_hours * 3.6e6) as i64,
        );
    let mut answer = json!({
        "success": true,
        "expected_phase_change": choice.predicted_shift_hours,
        "current_circadian_time": now.circadian_time,
        "optimal_ct_window": optimal_window(chosen, target),
        "estimated_completion": kaiabc_schemas::format_timestamp(&completion),
        "settled_by": kaiabc_schemas::format_timestamp(&settled),
        "node_id": req.node_id,
        "shift_id": plan.shift_id,
        "method": plan.method(),
        "plan": plan,
        "at_circadian_time": choice.circadian_time,
        "wait_hours": choice.wait_hours,
        "miss_hours": miss,
        "clock": { "circadian_time": now.circadian_time, "period_hours": now.period_hours,
            "temperature_kelvin": now.temperature_kelvin,
            "timestamp": kaiabc_schemas::format_timestamp(&now.timestamp) },
        "prc_base_temperature_k": curves[0].base_temperature_k,
        "dry_run": req.dry_run,
        "report": "phase_shift.complete",
    });
    if req.dry_run {
        return warp::reply::json(&answer).into_response();
    }
    let reason = req.reason.clone();
    match control::send_with_reason(
        &api,
        who,
        req.node_id,
        ControlAction::PhaseShift(plan),
        reason,
    ) {
        Ok(cmd) => {
            answer["command"] = serde_json::to_value(&cmd).unwrap_or_default();
            warp::reply::json(&answer).into_response()
        }
        Err(r) => *r,
    }
}

/// `GET /v1/entrainment/prc`.
pub(super) fn prc_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(warp::query::<PrcQuery>())
        .then(move |_: Principal, q: PrcQuery| get_prc(Arc::clone(&a), q))
        .boxed()
}

/// `POST /v1/entrainment/phase-shift`.
pub(super) fn phase_shift_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(body(16 * 1024))
        .then(move |who: Principal, b: bytes::Bytes| phase_shift(Arc::clone(&a), who, b))
        .boxed()
}
