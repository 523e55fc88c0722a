//! The fleet's views over HTTP: `GET /v1/fleet/summary`, `/v1/fleet/groups?by=`,
//! `/v1/fleet/synchrony?by=`, `/v1/fleet/outliers?by=`, `/v1/fleet/nodes?by=` and
//! `/v1/alerts`, answered from the
//! book the dataflow keeps current (see `crate::fleet`).

use std::sync::Arc;

use kaiabc_operators::fleet::GroupBy;
use serde::Deserialize;
use serde_json::Value;
use warp::Filter;

use super::{Api, Matched, Route};
use crate::auth::Principal;
use crate::fleet::FleetBook;

/// How to group nodes.
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum By {
    /// The whole fleet as one group, `all`.
    Fleet,
    /// By the registry's `location`.
    Location,
    /// By the registry's `hardware_type`.
    HardwareType,
}

impl From<By> for GroupBy {
    fn from(b: By) -> Self {
        match b {
            By::Fleet => GroupBy::Fleet,
            By::Location => GroupBy::Location,
            By::HardwareType => GroupBy::HardwareType,
        }
    }
}

/// `?by=` of the grouped views (default `location`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct ByQuery {
    /// `location` (default), `hardware_type` or `fleet`.
    by: Option<By>,
}

impl ByQuery {
    fn by(&self) -> GroupBy {
        self.by.map_or(GroupBy::Location, GroupBy::from)
    }
}

/// A view that takes no parameters.
fn plain(api: &Arc<Api>, at: Matched, view: fn(&FleetBook) -> Value) -> Route {
    let shared = Arc::clone(&api.shared);
    at.map(move |_: Principal| warp::reply::json(&view(&shared.fleet)).into_response())
        .boxed()
}

/// A view grouped by `?by=`.
fn grouped(api: &Arc<Api>, at: Matched, view: fn(&FleetBook, GroupBy) -> Value) -> Route {
    let shared = Arc::clone(&api.shared);
    at.and(warp::query::<ByQuery>())
        .map(move |_: Principal, q: ByQuery| {
            warp::reply::json(&view(&shared.fleet, q.by())).into_response()
        })
        .boxed()
}

use warp::Reply as _;

/// `GET /v1/fleet/summary`.
pub(super) fn summary_route(api: &Arc<Api>, at: Matched) -> Route {
    plain(api, at, FleetBook::summary)
}

/// `GET /v1/fleet/groups`.
pub(super) fn groups_route(api: &Arc<Api>, at: Matched) -> Route {
    grouped(api, at, FleetBook::groups)
}

/// `GET /v1/fleet/synchrony`.
pub(super) fn synchrony_route(api: &Arc<Api>, at: Matched) -> Route {
    grouped(api, at, FleetBook::synchrony)
}

/// `GET /v1/fleet/outliers`.
pub(super) fn outliers_route(api: &Arc<Api>, at: Matched) -> Route {
    grouped(api, at, FleetBook::outliers)
}

/// `GET /v1/alerts`.
pub(super) fn alerts_route(api: &Arc<Api>, at: Matched) -> Route {
    plain(api, at, FleetBook::alerts)
}

/// One node on the fleet page's dial: its group, status and circadian time.
fn node_entry(
    api: &Api,
    node: &str,
    by: GroupBy,
    meta: Option<&kaiabc_operators::fleet::NodeMeta>,
) -> Value {
    let group = match (by, meta) {
        (GroupBy::Fleet, _) => kaiabc_operators::fleet::group::FLEET.to_string(),
        (GroupBy::Location, Some(m)) => m.location.to_string(),
        (GroupBy::HardwareType, Some(m)) => m.hardware_type.to_string(),
        (GroupBy::Location, None) => kaiabc_operators::fleet::group::UNASSIGNED.to_string(),
        (GroupBy::HardwareType, None) => kaiabc_operators::fleet::group::UNKNOWN.to_string(),
    };
    let state = api.shared.hub.state(node);
    let online = api.shared.metrics.node_online(node) == Some(true);
    serde_json::json!({
        "node_id": node,
        "group": group,
        "status": if online { "online" } else { "offline" },
        "circadian_time": state.as_ref().map(|s| s.circadian_time),
        "period_hours": state.as_ref().map(|s| s.period_hours),
    })
}

/// `GET /v1/fleet/nodes?by=`: every node with its group, status and circadian time (the fleet
/// page's dial).
pub(super) fn nodes_route(api: &Arc<Api>, at: Matched) -> Route {
    let a = Arc::clone(api);
    at.and(warp::query::<ByQuery>())
        .map(move |_: Principal, q: ByQuery| {
            let by = q.by();
            let metas: std::collections::BTreeMap<String, kaiabc_operators::fleet::NodeMeta> = a
                .registry
                .list()
                .iter()
                .map(|r| (r.node_id.clone(), crate::fleet::meta_of(r)))
                .collect();
            let mut ids: std::collections::BTreeSet<String> = metas.keys().cloned().collect();
            ids.extend(a.shared.hub.nodes());
            let nodes: Vec<Value> = ids
                .iter()
                .map(|n| node_entry(&a, n, by, metas.get(n)))
                .collect();
            warp::reply::json(&serde_json::json!({
                "by": by.as_str(),
                "count": nodes.len(),
                "nodes": nodes,
            }))
            .into_response()
        })
        .boxed()
}
