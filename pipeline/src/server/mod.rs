//! The HTTP API (warp, under `/v1`): health, the latest oscillator state of each node, the
//! WebSocket, node registration and HTTP ingestion, with roles enforced per endpoint and the API
//! specification's error body on every failure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use crate::auth::{Jwt, Principal, Registry, Role};
use crate::dataflow::inbound::Ingest;
use crate::dataflow::live::LiveShared;
use crate::ratelimit::{Class, RateLimiter, Verdict};

mod access;
mod analytics;
mod control;
mod dashboard;
mod diagnostics;
mod docs;
mod downloads;
mod error;
mod fleet;
mod ingest;
mod lake;
pub mod listener;
mod mock;
mod node_config;
mod nodes;
mod openapi;
mod pagination;
mod rhythms;
mod settings;
mod shift;
mod status;
mod upgrade;

pub use access::Access;
use access::{authorise, rate_headers, rate_limit, refuse, Limited};
use control::Command;
pub use control::{ControlLog, SettingsBook};
pub use error::ApiError;
pub(crate) use ingest::not_stored;
pub use shift::PrcCache;
use status::node_state;

use lake::lake_get;
use settings::Group;

/// A request id, unique within the process and across restarts (start time and a counter):
/// `req_` and 16 hex digits.
pub fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| (Utc::now().timestamp_micros() as u64) << 20);
    format!(
        "req_{:016x}",
        base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
    )
}

/// A request body that must be a JSON object (serde would also take a struct's fields from an
/// array, in order: `[null, null]`), read into `T`.
fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value(v).map_err(|e| e.to_string())
        }
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The 400 for a node id the API would not accept (`None` if it is fine).
fn invalid_node_id(node: &str) -> Option<warp::reply::Response> {
    (!crate::auth::valid_node_id(node)).then(|| {
        ApiError::InvalidParameter(format!(
            "node_id {node:?}: 1-64 characters of A-Z a-z 0-9 _ -"
        ))
        .response()
    })
}

/// The filter an endpoint's handler starts from: the endpoint's exact path, its method and its
/// access check, yielding the caller.
type Matched = BoxedFilter<(Principal,)>;

/// One endpoint of the API: its method, exact path, who may call it, and how it is served.
pub struct Endpoint {
    /// `GET`, `POST` or `PUT`.
    pub method: &'static str,
    /// The exact path.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Its rate-limit class.
    pub class: Class,
    /// Builds its route from the API and the endpoint's [`Matched`] filter.
    serve: fn(&Arc<Api>, Matched) -> Route,
}

/// An endpoint in its usual rate-limit class: a node's own endpoints ingest, a `GET` queries,
/// anything else changes something ([`Endpoint::reads`] and [`Endpoint::ingests`] say
/// otherwise where that is wrong).
const fn ep(
    method: &'static str,
    path: &'static str,
    access: Access,
    serve: fn(&Arc<Api>, Matched) -> Route,
) -> Endpoint {
    let class = if matches!(access, Access::Node) {
        Class::Ingest
    } else if method.as_bytes()[0] == b'G' {
        Class::Query
    } else {
        Class::Change
    };
    Endpoint {
        method,
        path,
        access,
        class,
        serve,
    }
}

impl Endpoint {
    /// A `POST` that only reads (its body is a query): a state query.
    const fn reads(self) -> Self {
        Self {
            class: Class::Query,
            ..self
        }
    }

    /// Takes readings: ingestion.
    const fn ingests(self) -> Self {
        Self {
            class: Class::Ingest,
            ..self
        }
    }
}

/// The endpoint a request is for, if any.
pub(super) fn endpoint(method: &str, path: &str) -> Option<&'static Endpoint> {
    ENDPOINTS
        .iter()
        .find(|e| e.method == method && path_matches(e.path, path))
}

/// Whether `path` is one of `pattern`'s: the pattern itself, or, for a pattern ending in a
/// `{parameter}` segment, its prefix and one more non-empty segment.
pub(super) fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.rfind("/{") {
        Some(i) if pattern.ends_with('}') => path
            .strip_prefix(&pattern[..=i])
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
        _ => pattern == path,
    }
}

const OBSERVER: Access = Access::AtLeast(Role::Observer);
const RESEARCHER: Access = Access::AtLeast(Role::Researcher);
const ADMIN: Access = Access::AtLeast(Role::Admin);

/// Every endpoint, with its access rule and its handler: the routes are a fold over this table
/// (and the tests walk it exhaustively, endpoint × caller), so a rule is written once.
pub const ENDPOINTS: &[Endpoint] = &[
    ep("GET", "/v1/health", Access::Public, status::health_route),
    ep("GET", "/metrics", Access::Public, status::metrics_route),
    ep(
        "GET",
        "/v1/oscillator/state",
        Access::OwnNodeOr(Role::Observer),
        status::state_route,
    ),
    ep("GET", "/v1/oscillator/history", OBSERVER, |api, at| {
        lake_get(api, at, lake::history)
    }),
    ep("GET", "/v1/ws", OBSERVER, ws_route),
    ep("GET", "/v1/analytics/export", RESEARCHER, |api, at| {
        lake_get(api, at, lake::export)
    }),
    ep("GET", "/v1/downloads/{file}", RESEARCHER, downloads::route),
    ep(
        "GET",
        "/v1/diagnostics/performance",
        RESEARCHER,
        status::performance_route,
    ),
    ep("GET", "/v1/sensors/nodes", OBSERVER, nodes::list_route),
    ep("GET", "/v1/fleet/summary", OBSERVER, fleet::summary_route),
    ep("GET", "/v1/fleet/groups", OBSERVER, fleet::groups_route),
    ep(
        "GET",
        "/v1/fleet/synchrony",
        OBSERVER,
        fleet::synchrony_route,
    ),
    ep("GET", "/v1/fleet/outliers", OBSERVER, fleet::outliers_route),
    ep("GET", "/v1/fleet/nodes", OBSERVER, fleet::nodes_route),
    ep("GET", "/v1/alerts", OBSERVER, fleet::alerts_route),
    ep("POST", "/v1/sensors/nodes", ADMIN, nodes::register_route),
    ep("POST", "/v1/oscillator/reset", RESEARCHER, |api, at| {
        control::route(api, at, Command::Reset)
    }),
    ep("POST", "/v1/simulation/pause", RESEARCHER, |api, at| {
        control::route(api, at, Command::Pause)
    }),
    ep("POST", "/v1/simulation/resume", RESEARCHER, |api, at| {
        control::route(api, at, Command::Resume)
    }),
    ep(
        "POST",
        "/v1/output/manual-override",
        RESEARCHER,
        |api, at| control::route(api, at, Command::ManualOverride),
    ),
    ep(
        "POST",
        "/v1/sensors/temperature",
        Access::Node,
        |api, at| ingest::route(api, at, "temperature"),
    ),
    ep("POST", "/v1/sensors/batch", Access::Node, |api, at| {
        ingest::route(api, at, "batch")
    }),
    ep("GET", "/v1/entrainment/parameters", OBSERVER, |api, at| {
        settings::get_route(api, at, Group::Entrainment)
    }),
    ep(
        "PUT",
        "/v1/entrainment/parameters",
        RESEARCHER,
        |api, at| settings::put_route(api, at, Group::Entrainment),
    ),
    ep("GET", "/v1/entrainment/prc", OBSERVER, shift::prc_route),
    ep(
        "POST",
        "/v1/entrainment/phase-shift",
        RESEARCHER,
        shift::phase_shift_route,
    ),
    ep("GET", "/v1/simulation/config", OBSERVER, |api, at| {
        settings::get_route(api, at, Group::Simulation)
    }),
    ep("PUT", "/v1/simulation/config", RESEARCHER, |api, at| {
        settings::put_route(api, at, Group::Simulation)
    }),
    ep("GET", "/v1/output/koa", OBSERVER, settings::koa_route),
    ep("GET", "/v1/output/mapping", OBSERVER, |api, at| {
        settings::get_route(api, at, Group::Mapping)
    }),
    ep("PUT", "/v1/output/mapping", RESEARCHER, |api, at| {
        settings::put_route(api, at, Group::Mapping)
    }),
    ep(
        "GET",
        "/v1/filter/state",
        OBSERVER,
        settings::filter_state_route,
    ),
    ep("GET", "/v1/filter/parameters", OBSERVER, |api, at| {
        settings::get_route(api, at, Group::Filter)
    }),
    ep("PUT", "/v1/filter/parameters", RESEARCHER, |api, at| {
        settings::put_route(api, at, Group::Filter)
    }),
    ep("POST", "/v1/filter/reset", RESEARCHER, |api, at| {
        control::route(api, at, Command::FilterReset)
    }),
    ep(
        "GET",
        "/v1/analytics/period-stability",
        OBSERVER,
        |api, at| lake_get(api, at, analytics::period_stability),
    ),
    ep(
        "GET",
        "/v1/analytics/entrainment-efficiency",
        OBSERVER,
        |api, at| lake_get(api, at, analytics::entrainment_efficiency),
    ),
    ep("GET", "/v1/analytics/periodogram", OBSERVER, |api, at| {
        lake_get(api, at, analytics::periodogram)
    }),
    ep("GET", "/v1/analytics/wavelet", OBSERVER, |api, at| {
        lake_get(api, at, rhythms::wavelet)
    }),
    ep("GET", "/v1/analytics/cosinor", OBSERVER, |api, at| {
        lake_get(api, at, rhythms::cosinor)
    }),
    ep(
        "POST",
        "/v1/bulk/sensor-readings",
        ADMIN,
        analytics::bulk_readings_route,
    )
    .ingests(),
    ep(
        "GET",
        "/v1/bulk/oscillator-states",
        RESEARCHER,
        |api, at| lake_get(api, at, analytics::bulk_states),
    ),
    ep(
        "POST",
        "/v1/bulk/oscillator-states",
        RESEARCHER,
        analytics::bulk_latest_route,
    )
    .reads(),
    ep(
        "GET",
        "/v1/diagnostics/logs",
        ADMIN,
        diagnostics::logs_route,
    ),
    ep(
        "GET",
        "/v1/diagnostics/health-check",
        RESEARCHER,
        diagnostics::health_check_route,
    ),
    ep(
        "POST",
        "/v1/diagnostics/health-check",
        RESEARCHER,
        diagnostics::health_check_post_route,
    )
    .reads(),
    ep(
        "GET",
        "/v1/config/templates",
        OBSERVER,
        diagnostics::templates_route,
    ),
    ep(
        "POST",
        "/v1/config/validate",
        RESEARCHER,
        diagnostics::validate_node_route,
    )
    .reads(),
    ep(
        "POST",
        "/v1/config/server/validate",
        RESEARCHER,
        diagnostics::validate_route,
    )
    .reads(),
    ep(
        "GET",
        "/v1/mock/sensor-data",
        OBSERVER,
        mock::sensor_data_route,
    ),
    ep(
        "POST",
        "/v1/mock/simulate-oscillator",
        OBSERVER,
        mock::simulate_route,
    )
    .reads(),
    ep(
        "GET",
        "/v1/mock/test-scenarios",
        OBSERVER,
        mock::scenarios_route,
    ),
    ep("GET", "/v1/openapi.json", Access::Public, openapi_route),
];

/// The version of the API contract served under `/v1` (`X-API-Version` on every answer).
pub const API_VERSION: &str = "1.0.0";

/// What the API serves from and writes to.
#[derive(Debug)]
pub struct Api {
    /// The live dataflow's shared state.
    pub shared: Arc<LiveShared>,
    /// Token keys.
    pub jwt: Jwt,
    /// Registered nodes.
    pub registry: Arc<Registry>,
    /// Into the dataflow (HTTP readings join MQTT's): answered once durable.
    pub ingest: Ingest,
    /// When the server started.
    pub started: Instant,
    /// The lake (history and exports read it).
    pub lake: std::path::PathBuf,
    /// Requests per credential.
    pub limiter: RateLimiter,
    /// Failed key checks per client address (shared with the MQTT gate's logins).
    pub failed_auth: Arc<kaiabc_connectors::address_limits::FailedAuth>,
    /// Key checks under way per client address.
    pub checks: kaiabc_connectors::address_limits::Checks,
    /// Where control commands are logged before they enter the dataflow.
    pub control_log: ControlLog,
    /// The configuration every node shares (each node's own settings go over it).
    pub node_cfg: Arc<kaiabc_operators::node::NodeConfig>,
    /// Each node's own settings, as its control commands left them.
    pub book: SettingsBook,
    /// Phase response curves computed for the API (they take seconds), by their inputs.
    pub prcs: PrcCache,
    /// Recent log lines for `/v1/diagnostics/logs`.
    pub logs: Arc<crate::logs::LogRing>,
}

/// One endpoint's filter chain, boxed so the routes can be listed and folded.
type Route = BoxedFilter<(warp::reply::Response,)>;

/// The [`Matched`] filter of `e`: its exact path, its method and its access rule.
fn at(api: &Arc<Api>, e: &Endpoint) -> Matched {
    let (method, path) = (e.method, e.path);
    let verb = match method {
        "GET" => warp::get().boxed(),
        "POST" => warp::post().boxed(),
        "PUT" => warp::put().boxed(),
        other => panic!("{other} {path}: no filter for this method"),
    };
    warp::path::full()
        .and_then(move |p: warp::path::FullPath| async move {
            if path_matches(path, p.as_str()) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(verb)
        .and(authorise(Arc::clone(api), e.access))
        .boxed()
}

/// `GET /v1/ws`: the WebSocket upgrade (client messages of 64 KiB at most); see [`upgrade`].
fn ws_route(api: &Arc<Api>, at: Matched) -> Route {
    let api = Arc::clone(api);
    at.and(warp::header::headers_cloned())
        .and(warp::ext::optional::<upgrade::Pending>())
        .map(
            move |who: Principal,
                  headers: warp::http::HeaderMap,
                  pending: Option<upgrade::Pending>| {
                let reply = match upgrade::handshake(&headers) {
                    Ok(reply) => reply,
                    Err(e) => return e.response(),
                };
                let Some(pending) = pending else {
                    return ApiError::InvalidRequest(
                        "this connection cannot be upgraded to a WebSocket (HTTP/1.1 only)".into(),
                    )
                    .response();
                };
                // The contract's cap is per client: a node, or the person a token names.
                let client = match &who {
                    Principal::Node(id) => format!("node:{id}"),
                    Principal::User(claims) => format!("user:{}", claims.sub),
                };
                let Some(slot) = api.limiter.open_socket(&client) else {
                    let most = api.limiter.limits().ws_per_client;
                    return ApiError::RateLimitExceeded {
                        message: format!(
                            "{most} WebSocket connections are open for this client already; \
                             close one first"
                        ),
                        retry_after_seconds: 1,
                    }
                    .response();
                };
                let hub = Arc::clone(&api.shared.hub);
                // The socket opens once hyper has sent the 101 answer returned below.
                tokio::spawn(async move {
                    if let Some(socket) = pending.open(crate::ws::MAX_CLIENT_MESSAGE).await {
                        crate::ws::serve_client(socket, hub).await;
                    }
                    drop(slot);
                });
                reply
            },
        )
        .boxed()
}

/// `GET /v1/openapi.json`: built once, as it depends only on the code.
fn openapi_route(_: &Arc<Api>, at: Matched) -> Route {
    let doc = Arc::new(openapi::document());
    at.map(move |_: Principal| warp::reply::json(&*doc).into_response())
        .boxed()
}

/// A request body of at most `limit` bytes, with a `Content-Length` or sent chunked (warp's
/// own limit refuses a body without a length, which surfaced as a misleading 405).
fn body(limit: u64) -> BoxedFilter<(bytes::Bytes,)> {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared: Option<u64>, stream| read_body(declared, stream, limit))
        .boxed()
}

async fn read_body<B: bytes::Buf>(
    declared: Option<u64>,
    stream: impl futures_util::Stream<Item = Result<B, warp::Error>>,
    limit: u64,
) -> Result<bytes::Bytes, Rejection> {
    use bytes::BufMut;
    use futures_util::StreamExt;
    let too_large = || {
        refuse(ApiError::PayloadTooLarge(format!(
            "the body is larger than this endpoint takes ({limit} bytes)"
        )))
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| refuse(ApiError::InvalidRequest(format!("reading the body: {e}"))))?;
        if (out.len() + chunk.remaining()) as u64 > limit {
            return Err(too_large());
        }
        out.put(chunk);
    }
    Ok(out.freeze())
}

/// All routes.
pub fn routes(
    api: Arc<Api>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let mut all: Vec<Route> = ENDPOINTS
        .iter()
        .map(|e| (e.serve)(&api, at(&api, e)))
        .collect();
    all.push(
        warp::get()
            .and(warp::path::end())
            .map(dashboard::page)
            .boxed(),
    );
    all.push(warp::get().and(warp::path!("docs")).map(docs::page).boxed());
    all.push(
        warp::get()
            .and(warp::path!("docs" / "rapidoc-min.js"))
            .map(docs::script)
            .boxed(),
    );
    all.push(wrong_method());
    let all = all
        .into_iter()
        .reduce(|a, b| a.or(b).unify().boxed())
        .expect("there are routes");
    let metrics = Arc::clone(&api.shared.metrics);
    let answered = rate_limit(Arc::clone(&api))
        .and(all)
        .map(|v: Option<Verdict>, mut resp: warp::reply::Response| {
            if let Some(v) = v {
                rate_headers(resp.headers_mut(), &v);
            }
            resp
        })
        .recover(|r: Rejection| async move { Ok::<_, Infallible>(rejection(r)) })
        .unify()
        .map(|mut resp: warp::reply::Response| {
            // Every answer names the API's version (the contract's `X-API-Version`).
            resp.headers_mut().insert(
                "x-api-version",
                warp::http::HeaderValue::from_static(API_VERSION),
            );
            // Every answer names its request; an error body already did.
            if !resp.headers().contains_key("x-request-id") {
                if let Ok(v) = warp::http::HeaderValue::from_str(&request_id()) {
                    resp.headers_mut().insert("x-request-id", v);
                }
            }
            resp
        });
    // Every answer counted with its time (the API's `network` figures).
    warp::any().map(Instant::now).and(answered).map(
        move |started: Instant, resp: warp::reply::Response| {
            metrics.http_answered(resp.status().as_u16(), started.elapsed());
            resp
        },
    )
}

/// 405 with `Allow` (RFC 9110 §15.5.6) for a known path asked with a method it does not serve.
/// Other requests it leaves to the routes' own rejections, which outrank its not-found.
fn wrong_method() -> Route {
    warp::method()
        .and(warp::path::full())
        .and_then(
            |m: warp::http::Method, p: warp::path::FullPath| async move {
                let allowed: Vec<&str> = ENDPOINTS
                    .iter()
                    .filter(|e| path_matches(e.path, p.as_str()))
                    .map(|e| e.method)
                    .collect();
                if allowed.is_empty() || allowed.contains(&m.as_str()) {
                    return Err(warp::reject::not_found());
                }
                Ok(ApiError::MethodNotAllowed {
                    message: format!("{} serves {}", p.as_str(), allowed.join(", ")),
                    allow: allowed,
                }
                .response())
            },
        )
        .boxed()
}

fn rejection(r: Rejection) -> warp::reply::Response {
    if let Some(Limited(v)) = r.find::<Limited>() {
        let mut resp = ApiError::RateLimitExceeded {
            message: format!(
                "rate limit of {} {} a minute exceeded; retry in {} s",
                v.limit,
                v.class.name(),
                v.retry_after
            ),
            retry_after_seconds: v.retry_after,
        }
        .response();
        rate_headers(resp.headers_mut(), v);
        resp
    } else if let Some(e) = r.find::<ApiError>() {
        e.response()
    } else if r.is_not_found() {
        ApiError::NotFound("no such endpoint".into()).response()
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        ApiError::InvalidParameter(e.to_string()).response()
    } else if let Some(e) = r.find::<warp::reject::MissingHeader>() {
        ApiError::InvalidRequest(e.to_string()).response()
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        ApiError::InvalidRequest(e.to_string()).response()
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge("the body is larger than this endpoint takes".into()).response()
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed {
            message: "method not allowed".into(),
            allow: Vec::new(),
        }
        .response()
    } else {
        ApiError::Internal(format!("{r:?}")).response()
    }
}

/// Serves the API on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    guard: listener::Guard,
    api: Arc<Api>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, ?guard, "HTTP API listening");
    listener::serve(listener, guard, routes(api), stop).await;
}

#[cfg(test)]
mod tests {
    use super::access::rank;
    use super::*;

    fn test_cfg() -> kaiabc_operators::node::NodeConfig {
        kaiabc_operators::node::NodeConfig::new(kaiabc_operators::ClockConfig::default()).unwrap()
    }

    fn test_api(dir: &std::path::Path) -> (Arc<Api>, kaiabc_connectors::wal::WalReader) {
        test_api_with(dir, crate::ratelimit::Limits::all(1_000_000))
    }

    fn test_api_with(
        dir: &std::path::Path,
        limits: crate::ratelimit::Limits,
    ) -> (Arc<Api>, kaiabc_connectors::wal::WalReader) {
        let (log, reader, _) =
            kaiabc_connectors::wal::open(kaiabc_connectors::wal::WalConfig::at(dir.join("wal")))
                .unwrap();
        let api = Arc::new(Api {
            shared: Arc::default(),
            jwt: Jwt::new(&[1u8; 32]).unwrap(),
            registry: Arc::new(Registry::open(dir.join("nodes.json")).unwrap()),
            ingest: Ingest::Log(log),
            started: Instant::now(),
            lake: dir.join("lake"),
            limiter: RateLimiter::new(limits),
            failed_auth: Arc::default(),
            checks: Default::default(),
            control_log: ControlLog::at(&dir.join("lake")),
            node_cfg: Arc::new(test_cfg()),
            book: SettingsBook::default(),
            prcs: Default::default(),
            logs: Arc::default(),
        });
        (api, reader)
    }

    /// The API served on a loopback port by the real accept loop, with `node` registered:
    /// (the API, the node's key, the address).
    async fn serving_one_node(dir: &std::path::Path, node: &str) -> (Arc<Api>, String, SocketAddr) {
        let (api, _reader) = test_api(dir);
        let (_, key) = api
            .registry
            .register(crate::auth::Registration {
                node_id: node.into(),
                name: None,
                location: None,
                sensor_type: None,
                ..Default::default()
            })
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            listener::Guard::default(),
            Arc::clone(&api),
            std::future::pending(),
        ));
        (api, key, addr)
    }

    /// Every endpoint of [`ENDPOINTS`] × every kind of caller, in process: nobody gets 401 (or
    /// the endpoint is public), a role below the rule 403, a role at or above it anything but
    /// 401/403/405 or the no-route 404 (the route exists and let it through); a token never passes for a node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_role_table_is_enforced_on_every_route() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _rx) = test_api(dir.path());
        let filter = routes(Arc::clone(&api));
        let token = |role: Role| {
            api.jwt
                .mint("matrix", role, std::time::Duration::from_secs(600))
                .unwrap()
        };
        let roles = [Role::Observer, Role::Researcher, Role::Admin];
        for &Endpoint {
            method,
            path,
            access: rule,
            ..
        } in ENDPOINTS
        {
            let call = |auth: Option<String>| {
                let mut r = warp::test::request()
                    .method(method)
                    .path(&path.replace("{file}", "export_x.hdf5"))
                    .body(r#"{"node_id":"zz"}"#);
                if let Some(t) = auth {
                    r = r.header("authorization", format!("Bearer {t}"));
                }
                let f = filter.clone();
                async move {
                    let resp = r.reply(&f).await;
                    let body: serde_json::Value =
                        serde_json::from_slice(resp.body()).unwrap_or_default();
                    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
                    // Every answer names its request; an error body names the same id.
                    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
                    assert!(id.starts_with("req_"), "{id}");
                    if body.get("error").is_some() {
                        assert_eq!(body["error"]["request_id"], id.as_str(), "{body}");
                    }
                    (resp.status().as_u16(), code)
                }
            };
            let (anon, _) = call(None).await;
            match rule {
                Access::Public => {
                    assert_eq!(anon, 200, "{method} {path} anonymous");
                    continue;
                }
                _ => assert_eq!(anon, 401, "{method} {path} anonymous"),
            }
            for role in roles {
                let (got, code) = call(Some(token(role))).await;
                match rule {
                    // A 404 of the route's own (no such node yet) is fine; `NOT_FOUND` means no
                    // route matched.
                    Access::AtLeast(need) | Access::OwnNodeOr(need) if rank(role) >= rank(need) => {
                        assert!(
                            ![401, 403, 405].contains(&got) && code != "NOT_FOUND",
                            "{method} {path} as {role:?}: {got} {code}"
                        )
                    }
                    Access::AtLeast(_) | Access::OwnNodeOr(_) => {
                        assert_eq!(got, 403, "{method} {path} as {role:?}")
                    }
                    Access::Node => assert_eq!(got, 401, "{method} {path} as {role:?}"),
                    Access::Public => unreachable!(),
                }
            }
        }
    }

    /// The edges Schemathesis found, answered with the error body and the right status: a
    /// GET of the WebSocket without an upgrade (was a 500), a method a path does not serve
    /// (405 with `Allow`), an empty config file, a batch whose `readings` is not a list; and a
    /// duty written as `171.0` is taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protocol_edges_get_clear_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _rx) = test_api(dir.path());
        let filter = routes(Arc::clone(&api));
        let admin = api
            .jwt
            .mint("edges", Role::Admin, std::time::Duration::from_secs(600))
            .unwrap();
        let bearer = format!("Bearer {admin}");
        let call = |method: &str, path: &str, body: &str, auth: &str| {
            let r = warp::test::request()
                .method(method)
                .path(path)
                .header("authorization", auth)
                .body(body);
            let f = filter.clone();
            async move { r.reply(&f).await }
        };
        let code = |resp: &warp::http::Response<bytes::Bytes>| -> String {
            let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap_or_default();
            v["error"]["code"].as_str().unwrap_or("").to_string()
        };
        let ws = call("GET", "/v1/ws", "", &bearer).await;
        assert_eq!(
            (ws.status().as_u16(), code(&ws).as_str()),
            (400, "INVALID_REQUEST")
        );
        let wrong = call("DELETE", "/v1/oscillator/state", "", &bearer).await;
        assert_eq!(wrong.status().as_u16(), 405);
        assert_eq!(wrong.headers()["allow"], "GET");
        let put = call("PATCH", "/v1/output/mapping", "", &bearer).await;
        assert_eq!(put.headers()["allow"], "GET, PUT");
        let empty = call("POST", "/v1/config/validate", " \n", &bearer).await;
        assert_eq!(
            (empty.status().as_u16(), code(&empty).as_str()),
            (400, "INVALID_PAYLOAD")
        );
        let (_, key) = api
            .registry
            .register(crate::auth::Registration {
                node_id: "e1".into(),
                name: None,
                location: None,
                sensor_type: None,
                ..Default::default()
            })
            .unwrap();
        let batch = warp::test::request()
            .method("POST")
            .path("/v1/sensors/batch")
            .header("x-api-key", key)
            .body(r#"{"readings": {}}"#)
            .reply(&filter)
            .await;
        assert_eq!(
            (batch.status().as_u16(), code(&batch).as_str()),
            (400, "INVALID_PAYLOAD")
        );
        let held = call(
            "POST",
            "/v1/output/manual-override",
            r#"{"node_id": "e1", "pwm": 171.0}"#,
            &bearer,
        )
        .await;
        assert_eq!(held.status().as_u16(), 200, "{:?}", held.body());
        let half = call(
            "POST",
            "/v1/output/manual-override",
            r#"{"node_id": "e1", "pwm": 17.5}"#,
            &bearer,
        )
        .await;
        assert_eq!(half.status().as_u16(), 400);
    }

    /// What a careless client meets: a reading sent with chunked encoding is taken (it was a
    /// misleading 405), a chunked body over the limit gets 413, and the dashboard comes with a
    /// Content-Security-Policy that allows its own script only, and may not be framed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunked_bodies_are_read_and_the_dashboard_is_locked_down() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (api, key, addr) = serving_one_node(dir.path(), "c1").await;
        let chunked = |chunks: Vec<String>| {
            let key = key.clone();
            async move {
                let mut body = String::new();
                for c in &chunks {
                    body += &format!("{:x}\r\n{c}\r\n", c.len());
                }
                let req = format!(
                    "POST /v1/sensors/batch HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\
                     Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                     Connection: close\r\n\r\n{body}0\r\n\r\n"
                );
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let reading = r#"{"node_id":"c1","seq":1,"timestamp":"2026-01-05T10:00:00Z","temperature_kelvin":300.0,"sensor_type":"BME280"}"#;
        let ok = chunked(vec![
            r#"{"readings": ["#.to_string(),
            reading.to_string(),
            "]}".to_string(),
        ])
        .await;
        // Stale (2026-01-05), so stored as a dead letter: 200 with it counted as rejected.
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(r#""rejected":1"#), "{ok}");
        let big = chunked(vec!["x".repeat(600 * 1024), "y".repeat(600 * 1024)]).await;
        assert!(
            big.starts_with("HTTP/1.1 413"),
            "{}",
            &big[..big.len().min(300)]
        );
        assert!(
            big.contains("PAYLOAD_TOO_LARGE"),
            "{}",
            &big[..big.len().min(300)]
        );

        let page = warp::test::request()
            .path("/")
            .reply(&routes(Arc::clone(&api)))
            .await;
        assert_eq!(page.status().as_u16(), 200);
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(!csp.contains("script-src 'unsafe-inline'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        // The hash is the page's own script's: a browser would run it (the dashboard's
        // browser test runs the page under this policy).
        use base64::Engine;
        use sha2::Digest;
        let html = std::str::from_utf8(page.body()).unwrap();
        let script = html
            .split("<script>")
            .nth(1)
            .unwrap()
            .split("</script>")
            .next()
            .unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        assert!(csp.contains(&hash), "{csp}");
    }

    /// An address that failed its share of key checks this minute is answered 429 with
    /// `Retry-After`, without a check, even with the right key; another address is not.
    /// (127.0.0.2 is loopback too: the client binds it as its own address.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_address_with_too_many_failed_keys_is_refused_without_a_check() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (api, key, addr) = serving_one_node(dir.path(), "a1").await;
        let post = |from: &'static str, key: String| async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
            let mut s = sock.connect(addr).await.unwrap();
            let body = format!(
                r#"{{"node_id":"a1","timestamp":"{}","temperature_kelvin":300.0}}"#,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let req = format!(
                "POST /v1/sensors/temperature HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        // 60 wrong keys at once: they take turns, and once 20 have failed the rest are refused
        // without a check (those already in their turn finish theirs).
        use kaiabc_connectors::address_limits::{CHECKS_PER_ADDRESS, FAILED_PER_MINUTE};
        let wrong: Vec<String> =
            futures_util::future::join_all((0..60).map(|i| post("127.0.0.2", format!("{key}{i}"))))
                .await;
        let count = |status: &str| wrong.iter().filter(|a| a.starts_with(status)).count();
        assert_eq!(count("HTTP/1.1 401") + count("HTTP/1.1 429"), 60);
        let limit = FAILED_PER_MINUTE as usize;
        assert!(
            (limit..=limit + CHECKS_PER_ADDRESS).contains(&count("HTTP/1.1 401")),
            "{} checked",
            count("HTTP/1.1 401")
        );
        let hashed = api.registry.hashed();
        assert!(
            hashed <= (limit + CHECKS_PER_ADDRESS) as u64,
            "{hashed} argon2 checks"
        );
        let blocked = post("127.0.0.2", key.clone()).await;
        assert!(blocked.starts_with("HTTP/1.1 429"), "{blocked}");
        assert!(blocked.contains("failed key checks"), "{blocked}");
        let retry: u64 = blocked
            .lines()
            .find_map(|l| l.strip_prefix("retry-after: "))
            .expect("a Retry-After header")
            .trim()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let other = post("127.0.0.1", key.clone()).await;
        assert!(other.starts_with("HTTP/1.1 202"), "{other}");
    }

    /// A reading dated more than the horizon (7 days) before its receipt is refused with its
    /// reason (a node whose clock says 1970 or 1700); one within it is taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reading_older_than_the_horizon_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _reader) = test_api(dir.path());
        let (_, key) = api
            .registry
            .register(crate::auth::Registration {
                node_id: "old1".into(),
                name: None,
                location: None,
                sensor_type: None,
                ..Default::default()
            })
            .unwrap();
        let post = |ts: String| {
            let r = warp::test::request()
                .method("POST")
                .path("/v1/sensors/temperature")
                .header("x-api-key", &key)
                .body(format!(
                    r#"{{"node_id":"old1","timestamp":"{ts}","temperature_kelvin":300.0}}"#
                ));
            let f = routes(Arc::clone(&api));
            async move { r.reply(&f).await }
        };
        let ago = |days: i64| {
            kaiabc_schemas::format_timestamp(&(Utc::now() - chrono::Duration::days(days)))
        };
        for ts in [
            ago(8),
            "1970-01-01T00:00:00Z".to_string(),
            "1700-01-01T00:00:00Z".to_string(),
        ] {
            let resp = post(ts.clone()).await;
            let body = String::from_utf8_lossy(resp.body()).to_string();
            assert_eq!(resp.status().as_u16(), 422, "{ts}: {body}");
            assert!(body.contains("STALE_TIMESTAMP"), "{ts}: {body}");
        }
        assert_eq!(post(ago(6)).await.status().as_u16(), 202);
    }

    /// A user's requests count against the token that authorises them, wherever it is sent:
    /// a junk `Authorization` header beside a `?token=` used to open a new bucket each time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_rate_limit_follows_the_credential_used() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _reader) = test_api_with(
            dir.path(),
            crate::ratelimit::Limits {
                query_per_minute: 3,
                ..crate::ratelimit::Limits::all(1_000_000)
            },
        );
        let filter = routes(Arc::clone(&api));
        let t = api
            .jwt
            .mint("ada", Role::Observer, std::time::Duration::from_secs(600))
            .unwrap();
        let mut codes = Vec::new();
        for i in 0..5 {
            let resp = warp::test::request()
                .path(&format!("/v1/sensors/nodes?token={t}"))
                .header("authorization", format!("Junk {i}"))
                .reply(&filter)
                .await;
            codes.push(resp.status().as_u16());
        }
        assert_eq!(codes, [200, 200, 200, 429, 429]);
    }

    /// The table names each method and path once (a second entry would never be reached),
    /// all under `/v1` but the Prometheus scrape.
    #[test]
    fn a_parameter_matches_one_segment() {
        let p = "/v1/downloads/{file}";
        assert!(path_matches(p, "/v1/downloads/a.hdf5"));
        assert!(!path_matches(p, "/v1/downloads/"));
        assert!(!path_matches(p, "/v1/downloads/a/b"));
        assert!(!path_matches(p, "/v1/downloadsx/a"));
        assert!(path_matches("/v1/health", "/v1/health"));
        assert!(!path_matches("/v1/health", "/v1/health/x"));
    }

    #[test]
    fn every_endpoint_is_unique_and_under_v1() {
        let mut seen = std::collections::HashSet::new();
        for e in ENDPOINTS {
            assert!(
                seen.insert((e.method, e.path)),
                "{} {} twice",
                e.method,
                e.path
            );
            assert!(
                e.path.starts_with("/v1/") || e.path == "/metrics",
                "{} {}",
                e.method,
                e.path
            );
        }
    }
}
