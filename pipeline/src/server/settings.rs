//! Per-node settings over HTTP: entrainment parameters, output mapping, filter parameters and
//! simulation settings (GET answers what the node runs with, PUT sends a control command),
//! and the node's current output and filter state.

use std::sync::Arc;

use kaiabc_operators::settings::NodeSettings;
use kaiabc_schemas::{ControlAction, EntrainmentPatch, FilterPatch, MappingPatch, SimulationPatch};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::{Filter, Reply};

use super::{body, control, Api, ApiError, Route};
use crate::auth::Principal;

/// `?node_id=`: a node's settings, or the shared ones without it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeQuery {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    pub(super) node_id: Option<String>,
}

/// Which group of settings an endpoint reads and writes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Group {
    Entrainment,
    Mapping,
    Filter,
    Simulation,
}

impl Group {
    /// The group's current values for `node` (shared when `None`) as JSON.
    fn values(self, api: &Api, node: Option<&str>) -> Value {
        let s = node.map(|n| api.book.get(n)).unwrap_or_default();
        let cfg = &api.node_cfg;
        let eff = s.effective(cfg);
        match self {
            Group::Entrainment => {
                let e = eff.etf;
                // Q10 of each rate family around the reference temperature: how strongly the
                // rates follow temperature (Q10 = k(T+10)/k(T)).
                let t = e.reference_temperature_k;
                let (b0, a0) = e.factors(t);
                let (b1, a1) = e.factors(t + 10.0);
                let mut v = contract_etf(&s, &eff);
                v["etf"] = serde_json::to_value(e).unwrap_or_default();
                v["customised"] = json!(s.etf.is_some());
                v["q10"] = json!({ "kaia_stimulated": a1 / a0, "basal": b1 / b0 });
                v
            }
            Group::Mapping => json!({ "mapping": eff.mapping, "customised": s.mapping.is_some() }),
            Group::Filter => json!({ "parameters": eff.kalman, "customised": s.kalman.is_some() }),
            Group::Simulation => json!({
                "solver_type": "DOPRI5",
                "integration_method": "adaptive",
                "tolerance": {
                    "absolute": eff.integrator.atol,
                    "relative": eff.integrator.rtol,
                },
                "max_step_size": eff.integrator.max_step,
                "min_step_size": eff.integrator.min_step,
                "step_size_unit": "hours",
                "performance_metrics": api.shared.metrics.solver_figures(),
                "node": {
                    "max_gap_hours": eff.max_gap_hours,
                    "initial_ct": eff.initial_ct,
                    "customised": s.max_gap_hours.is_some() || s.initial_ct.is_some()
                        || s.integrator.is_some(),
                },
                // Fixed when the pipeline starts (the same for every node).
                "shared": {
                    "integrator": { "method": "dopri5", "rtol": cfg.clock.integrator.rtol,
                        "atol": cfg.clock.integrator.atol, "min_step_hours": cfg.clock.integrator.min_step,
                        "max_step_hours": cfg.clock.integrator.max_step },
                    "reference_temperature_k": cfg.clock.reference_temperature_k,
                    "rhythm_windows": {
                        "length_hours": cfg.window.length_hours,
                        "bin_minutes": cfg.window.bin_minutes,
                        "every_hours": cfg.window.every_hours,
                        "min_period_hours": cfg.window.min_period_hours,
                        "max_period_hours": cfg.window.max_period_hours,
                        "min_samples": cfg.window.min_samples,
                    },
                    "duplicate_runs_max": kaiabc_operators::dedup::MAX_RUNS,
                },
            }),
        }
    }

    /// The action of a PUT body (the node's id removed).
    fn action(self, rest: Value) -> Result<ControlAction, String> {
        fn patch<T: DeserializeOwned>(v: Value) -> Result<T, String> {
            serde_json::from_value(v).map_err(|e| e.to_string())
        }
        Ok(match self {
            Group::Entrainment => ControlAction::Entrainment(patch::<EntrainmentPatch>(rest)?),
            Group::Mapping => ControlAction::OutputMapping(patch::<MappingPatch>(rest)?),
            Group::Filter => ControlAction::Filter(patch::<FilterPatch>(rest)?),
            Group::Simulation => ControlAction::Simulation(patch::<SimulationPatch>(rest)?),
        })
    }
}

fn with_node(node: Option<&str>, mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("node_id".into(), json!(node));
    }
    v
}

/// The specification's entrainment parameters of a node's settings: the Arrhenius scaling is
/// the KaiA-stimulated activation energy and the factor `A = rate_scale · exp(E_A / (R·T_ref))`
/// that multiplies `exp(−E_A / (R·T))` in units of the reference rates; the structural
/// coupling and ATPase constraint have no counterpart in the model and are echoed as stored.
fn contract_etf(s: &NodeSettings, eff: &kaiabc_operators::settings::Effective) -> Value {
    let e = eff.etf;
    let r = kaiabc_operators::etf::GAS_CONSTANT;
    let a = e.rate_scale
        * (e.activation_energy_kaia_kj_mol * 1e3 / (r * e.reference_temperature_k)).exp();
    json!({
        "etf_active": true,
        "reference_temperature_kelvin": e.reference_temperature_k,
        "parameters": {
            "arrhenius_scaling": {
                "activation_energy_kJ_mol": e.activation_energy_kaia_kj_mol,
                "pre_exponential_factor": a,
                "basal_activation_energy_kJ_mol": e.activation_energy_basal_kj_mol,
            },
            "structural_coupling": {
                "baseline_d_i": s.structural_coupling.baseline_d_i,
                "modulation_function": s.structural_coupling.modulation_function,
                "sensitivity": s.structural_coupling.sensitivity,
            },
            "atpase_constraint": {
                "baseline_f_hyd": s.atpase_constraint.baseline_f_hyd,
                "temperature_dependence": s.atpase_constraint.temperature_dependence,
                "coupling_strength": s.atpase_constraint.coupling_strength,
            },
        },
        "inert_parameters": INERT_ETF,
        "prc_model": "standard",
        "phase_lock_target": null,
    })
}

/// The specification's ETF groups this model has no counterpart for.
const INERT_ETF: &[&str] = &["structural_coupling", "atpase_constraint"];

/// A PUT body in the specification's shape rewritten into our patch's fields, with the
/// warnings it earns; `current` is the node's settings now (partial objects keep the rest).
fn contract_patch(
    group: Group,
    current: &kaiabc_operators::settings::Effective,
    mut v: serde_json::Map<String, Value>,
) -> Result<(serde_json::Map<String, Value>, Vec<String>), String> {
    let mut warnings = Vec::new();
    match group {
        Group::Entrainment => {
            if let Some(p) = v.remove("parameters") {
                let Value::Object(mut p) = p else {
                    return Err("parameters must be an object".into());
                };
                if let Some(a) = p.remove("arrhenius_scaling") {
                    let Value::Object(mut a) = a else {
                        return Err("parameters.arrhenius_scaling must be an object".into());
                    };
                    let ea = a.remove("activation_energy_kJ_mol");
                    if let Some(x) = &ea {
                        v.insert("activation_energy_kaia_kj_mol".into(), x.clone());
                    }
                    if let Some(f) = a.remove("pre_exponential_factor") {
                        let f = f.as_f64().filter(|f| f.is_finite() && *f > 0.0).ok_or(
                            "arrhenius_scaling.pre_exponential_factor must be a positive number",
                        )?;
                        let ea = ea
                            .and_then(|x| x.as_f64())
                            .unwrap_or(current.etf.activation_energy_kaia_kj_mol);
                        let t = v
                            .get("reference_temperature_k")
                            .and_then(Value::as_f64)
                            .unwrap_or(current.etf.reference_temperature_k);
                        let r = kaiabc_operators::etf::GAS_CONSTANT;
                        v.insert("rate_scale".into(), json!(f * (-ea * 1e3 / (r * t)).exp()));
                    }
                    if let Some(x) = a.remove("basal_activation_energy_kJ_mol") {
                        v.insert("activation_energy_basal_kj_mol".into(), x);
                    }
                    if let Some(k) = a.keys().next() {
                        return Err(format!("unknown field `arrhenius_scaling.{k}`"));
                    }
                }
                for group in INERT_ETF {
                    if let Some(x) = p.remove(*group) {
                        warnings.push(format!(
                            "{group} is stored and echoed but has no effect: the Rust et al. \
                             (2007) model these clocks run has no counterpart for it"
                        ));
                        v.insert((*group).into(), x);
                    }
                }
                if let Some(k) = p.keys().next() {
                    return Err(format!("unknown field `parameters.{k}`"));
                }
            }
        }
        Group::Filter => {
            // Per-variable objects of the specification, or our arrays of three.
            for key in ["process_noise", "measurement_noise"] {
                if let Some(Value::Object(o)) = v.get(key).cloned() {
                    let now = if key == "process_noise" {
                        current.kalman.process_noise
                    } else {
                        current.kalman.measurement_noise
                    };
                    let mut out = now;
                    for (name, x) in o {
                        let i = ["temperature", "humidity", "pressure"]
                            .iter()
                            .position(|n| *n == name)
                            .ok_or_else(|| format!("unknown field `{key}.{name}`: temperature, humidity or pressure"))?;
                        out[i] = x
                            .as_f64()
                            .ok_or_else(|| format!("{key}.{name} must be a number"))?;
                    }
                    v.insert(key.into(), json!(out));
                }
            }
        }
        Group::Simulation => {
            if let Some(t) = v.remove("tolerance") {
                let Value::Object(mut t) = t else {
                    return Err("tolerance must be an object {absolute, relative}".into());
                };
                for (from, to) in [
                    ("absolute", "absolute_tolerance"),
                    ("relative", "relative_tolerance"),
                ] {
                    if let Some(x) = t.remove(from) {
                        v.insert(to.into(), x);
                    }
                }
                if let Some(k) = t.keys().next() {
                    return Err(format!("unknown field `tolerance.{k}`"));
                }
            }
            for (from, to) in [
                ("max_step_size", "max_step_hours"),
                ("min_step_size", "min_step_hours"),
            ] {
                if let Some(x) = v.remove(from) {
                    v.insert(to.into(), x);
                }
            }
        }
        Group::Mapping => {}
    }
    Ok((v, warnings))
}

/// The group's answer fields beyond `success` and `message`.
fn contract_answer(group: Group, api: &Api, node: &str, before: &NodeSettings) -> Value {
    let cfg = &api.node_cfg;
    let after = api.book.get(node);
    match group {
        Group::Entrainment => json!({
            "previous_parameters": contract_etf(before, &before.effective(cfg))["parameters"],
            "new_parameters": contract_etf(&after, &after.effective(cfg))["parameters"],
        }),
        Group::Mapping => {
            let m = after.effective(cfg).mapping;
            json!({ "test_values": {
                "koa_0.0": { "pwm": m.pwm(0.0) },
                "koa_0.5": { "pwm": m.pwm(0.5) },
                "koa_1.0": { "pwm": m.pwm(1.0) },
            } })
        }
        // The estimate is kept: only the tuning changes.
        Group::Filter => json!({ "filter_reset": false }),
        // The running clocks take the new tolerances at their next step.
        Group::Simulation => json!({ "restart_required": false }),
    }
}

/// A PUT: `{"node_id": …, <fields to change>, "reason"?}` (our fields or the specification's)
/// → a control command; 200 with `success`, the values the node will hold and the group's
/// contract fields. The simulation settings without a `node_id` go to every known node.
fn put(api: &Api, group: Group, who: Principal, body: &[u8]) -> warp::reply::Response {
    let bad = |m: String| ApiError::InvalidParameter(m).response();
    let mut v: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("expected a JSON object: {e}")),
    };
    let reason = match v.remove("reason") {
        None => None,
        Some(Value::String(r)) if r.chars().count() <= 500 => Some(r),
        Some(_) => return bad("reason must be a string of at most 500 characters".into()),
    };
    let nodes: Vec<String> = match v.remove("node_id") {
        Some(Value::String(node)) => vec![node],
        None if matches!(group, Group::Simulation) => {
            let mut all: Vec<String> = api.registry.list().into_iter().map(|r| r.node_id).collect();
            all.extend(api.shared.hub.nodes());
            all.sort();
            all.dedup();
            all
        }
        _ => return bad("node_id (a string) is required".into()),
    };
    if v.is_empty() {
        return bad("nothing to change: name at least one field".into());
    }
    let mut answer = json!({});
    let mut commands = Vec::new();
    let mut warnings = Vec::new();
    for node in &nodes {
        let before = api.book.get(node);
        let (patch, w) = match contract_patch(group, &before.effective(&api.node_cfg), v.clone()) {
            Ok(p) => p,
            Err(e) => return bad(e),
        };
        warnings = w;
        let action = match group.action(Value::Object(patch)) {
            Ok(a) => a,
            Err(e) => return bad(e),
        };
        match control::send_with_reason(api, who.clone(), node.clone(), action, reason.clone()) {
            Ok(cmd) => {
                answer = contract_answer(group, api, node, &before);
                answer["effective_timestamp"] =
                    json!(kaiabc_schemas::format_timestamp(&cmd.timestamp));
                commands.push(cmd);
            }
            Err(resp) => return *resp,
        }
    }
    let single = nodes.len() == 1;
    let node = single.then(|| nodes[0].clone());
    answer["success"] = json!(true);
    answer["accepted"] = json!(true);
    answer["message"] = json!(match (group, single) {
        (Group::Entrainment, _) => "ETF parameters updated",
        (Group::Mapping, _) => "output mapping updated",
        (Group::Filter, _) => "Kalman filter parameters updated",
        (Group::Simulation, true) => "solver configuration updated",
        (Group::Simulation, false) => "solver configuration updated on every known node",
    });
    answer["warnings"] = json!(warnings);
    answer["node_id"] = json!(node);
    answer["nodes_updated"] = json!(nodes);
    answer["values"] = group.values(api, node.as_deref());
    if single {
        answer["command"] = json!(commands.pop());
    } else {
        answer["commands"] = json!(commands);
    }
    warp::reply::json(&answer).into_response()
}

/// The latest state's output, with the mapping that made it: the specification's
/// `koa_value`, `koa_normalized` (the model's KOA is already on 0–1), `koa_phase`,
/// `contributing_states` and `pwm_mapping` (duty 0–255 and in percent, at the firmware's PWM
/// frequency), beside ours.
fn koa(api: &Api, node: Option<&str>) -> warp::reply::Response {
    match super::node_state(&api.shared, node) {
        Ok(s) => {
            let prev = api
                .shared
                .hub
                .state_with_prev(&s.node_id)
                .and_then(|(_, p)| p);
            let settings: NodeSettings = api.book.get(&s.node_id);
            let mapping = settings.effective(&api.node_cfg).mapping;
            let by_mapping = i32::from(mapping.pwm(s.koa_metric));
            let duty = s.output_pwm.clamp(0, 255);
            warp::reply::json(&json!({
                "node_id": s.node_id,
                "timestamp": kaiabc_schemas::format_timestamp(&s.timestamp),
                "koa_value": s.koa_metric,
                "koa_normalized": s.koa_metric,
                "koa_phase": crate::ws::koa_phase(s.koa_metric, prev),
                "contributing_states": {
                    "C_ST": s.state_variables.C_ST,
                    "C_S": s.state_variables.C_S,
                },
                "pwm_mapping": {
                    "duty_cycle": duty,
                    "duty_cycle_percent": f64::from(duty) / 255.0 * 100.0,
                    "frequency_hz": PWM_FREQUENCY_HZ,
                },
                "koa_metric": s.koa_metric,
                "output_pwm": s.output_pwm,
                "circadian_time": s.circadian_time,
                "mapping": mapping,
                "manual_override": s.output_pwm != by_mapping,
            }))
            .into_response()
        }
        Err(resp) => *resp,
    }
}

/// The PWM frequency both firmwares drive their output at.
pub(crate) const PWM_FREQUENCY_HZ: u32 = 1000;

/// The filter's view after the latest reading: the specification's three-variable state
/// (`state_estimate`, 3×3 `covariance_matrix` in K, %, hPa, `innovation`,
/// `measurement_count`), beside our temperature figures.
fn filter_state(api: &Api, node: Option<&str>) -> warp::reply::Response {
    match super::node_state(&api.shared, node) {
        Ok(s) => {
            let params = api.book.get(&s.node_id).effective(&api.node_cfg).kalman;
            let snap = api.shared.hub.filter(&s.node_id);
            let f = snap.as_ref().map(|(_, f)| f);
            warp::reply::json(&json!({
                "node_id": s.node_id,
                "filter_type": "kalman_random_walk",
                "timestamp": kaiabc_schemas::format_timestamp(&s.timestamp),
                "state_estimate": {
                    "temperature_kelvin": f.map_or(Some(s.temperature_kelvin), |f| f.estimate[0]),
                    "humidity_percent": f.and_then(|f| f.estimate[1]),
                    "pressure_pa": f.and_then(|f| f.estimate[2]),
                },
                "covariance_matrix": f.map(|f| f.covariance),
                "covariance_units": ["K", "%", "hPa"],
                "innovation": {
                    "temperature": f.and_then(|f| f.innovation[0]),
                    "humidity": f.and_then(|f| f.innovation[1]),
                    "pressure": f.and_then(|f| f.innovation[2]),
                },
                "measurement_count": f.map(|f| f.measurement_count),
                "filtered_temperature_kelvin": s.temperature_kelvin,
                "raw_temperature_kelvin": s.raw_temperature_kelvin,
                "innovation_kelvin": s.raw_temperature_kelvin - s.temperature_kelvin,
                "variance": s.kalman_variance,
                "std_dev_kelvin": s.kalman_variance.sqrt(),
                "parameters": params,
            }))
            .into_response()
        }
        Err(resp) => *resp,
    }
}

/// `GET` of a settings group: the values in force for `node_id` (or the shared ones).
pub(super) fn get_route(api: &Arc<Api>, at: super::Matched, group: Group) -> Route {
    let a = Arc::clone(api);
    at.and(warp::query::<NodeQuery>())
        .map(move |_: Principal, q: NodeQuery| {
            let node = q.node_id.as_deref();
            if let Some(resp) = node.and_then(super::invalid_node_id) {
                return resp;
            }
            warp::reply::json(&with_node(node, group.values(&a, node))).into_response()
        })
        .boxed()
}

/// `PUT` of a settings group: a control command that changes them.
pub(super) fn put_route(api: &Arc<Api>, at: super::Matched, group: Group) -> Route {
    let a = Arc::clone(api);
    at.and(body(16 * 1024))
        .map(move |who: Principal, b: bytes::Bytes| put(&a, group, who, &b))
        .boxed()
}

/// `GET /v1/output/koa`.
pub(super) fn koa_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(warp::query::<NodeQuery>())
        .map(move |_: Principal, q: NodeQuery| koa(&a, q.node_id.as_deref()))
        .boxed()
}

/// `GET /v1/filter/state`.
pub(super) fn filter_state_route(api: &Arc<Api>, at: super::Matched) -> Route {
    let a = Arc::clone(api);
    at.and(warp::query::<NodeQuery>())
        .map(move |_: Principal, q: NodeQuery| filter_state(&a, q.node_id.as_deref()))
        .boxed()
}
