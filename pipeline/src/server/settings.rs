//! Per-node settings over HTTP: entrainment parameters, output mapping, filter parameters and
//! simulation settings (GET answers what the node runs with, PUT sends a control command),
//! and the node's current output and filter state.

use std::sync::Arc;

use kaiabc_operators::settings::NodeSettings;
use kaiabc_schemas::{ControlAction, EntrainmentPatch, FilterPatch, MappingPatch, SimulationPatch};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
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
                json!({
                    "parameters": e,
                    "customised": s.etf.is_some(),
                    "q10": { "kaia_stimulated": a1 / a0, "basal": b1 / b0 },
                })
            }
            Group::Mapping => json!({ "mapping": eff.mapping, "customised": s.mapping.is_some() }),
            Group::Filter => json!({ "parameters": eff.kalman, "customised": s.kalman.is_some() }),
            Group::Simulation => json!({
                "node": {
                    "max_gap_hours": eff.max_gap_hours,
                    "initial_ct": eff.initial_ct,
                    "customised": s.max_gap_hours.is_some() || s.initial_ct.is_some(),
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

/// A PUT: `{"node_id": …, <fields to change>}` → a control command; 202 with the values the
/// node will hold.
fn put(api: &Api, group: Group, who: Principal, body: &[u8]) -> warp::reply::Response {
    let bad = |m: String| ApiError::InvalidParameter(m).response();
    let mut v: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("expected a JSON object: {e}")),
    };
    let Some(Value::String(node)) = v.remove("node_id") else {
        return bad("node_id (a string) is required".into());
    };
    if v.is_empty() {
        return bad("nothing to change: name at least one field".into());
    }
    let action = match group.action(Value::Object(v)) {
        Ok(a) => a,
        Err(e) => return bad(e),
    };
    match control::send(api, who, node.clone(), action) {
        Ok(cmd) => warp::reply::with_status(
            warp::reply::json(&json!({
                "accepted": true,
                "command": cmd,
                "node_id": node,
                "values": group.values(api, Some(&node)),
            })),
            StatusCode::ACCEPTED,
        )
        .into_response(),
        Err(resp) => *resp,
    }
}

/// The latest state's output, with the mapping that made it.
fn koa(api: &Api, node: Option<&str>) -> warp::reply::Response {
    match super::node_state(&api.shared, node) {
        Ok(s) => {
            let settings: NodeSettings = api.book.get(&s.node_id);
            let mapping = settings.effective(&api.node_cfg).mapping;
            let by_mapping = i32::from(mapping.pwm(s.koa_metric));
            warp::reply::json(&json!({
                "node_id": s.node_id,
                "timestamp": kaiabc_schemas::format_timestamp(&s.timestamp),
                "koa_metric": s.koa_metric,
                "output_pwm": s.output_pwm,
                "duty_cycle": f64::from(s.output_pwm) / 255.0,
                "circadian_time": s.circadian_time,
                "mapping": mapping,
                "manual_override": s.output_pwm != by_mapping,
            }))
            .into_response()
        }
        Err(resp) => *resp,
    }
}

/// The filter's view after the latest reading.
fn filter_state(api: &Api, node: Option<&str>) -> warp::reply::Response {
    match super::node_state(&api.shared, node) {
        Ok(s) => {
            let params = api.book.get(&s.node_id).effective(&api.node_cfg).kalman;
            warp::reply::json(&json!({
                "node_id": s.node_id,
                "timestamp": kaiabc_schemas::format_timestamp(&s.timestamp),
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
