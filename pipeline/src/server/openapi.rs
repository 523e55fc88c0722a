//! The OpenAPI 3.1 document of the API, served at `/v1/openapi.json`: built from the route
//! table ([`ENDPOINTS`]) and the handlers' own request types, so it cannot drift from them.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::{Access, ENDPOINTS};
use crate::auth::Role;

/// Builds a schema (a reference into `components/schemas` where the type has a name).
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What a request carries in its body.
enum Body {
    /// JSON of this schema.
    Json(SchemaFn),
    /// JSON of this schema, or no body at all (the defaults).
    OptionalJson(SchemaFn),
    /// A settings change: this patch's fields, the `node_id` (required unless `false`), a
    /// `reason`, and the API specification's shapes of the group (`contract`).
    Settings(SchemaFn, fn(&mut SchemaGenerator) -> Value, bool),
    /// An array of readings or `{"readings": [...]}`; with `true`, one reading too.
    Readings(bool),
    /// A config file (TOML text).
    Toml,
}

/// What a successful answer carries.
enum Reply {
    /// JSON of this schema.
    Typed(SchemaFn),
    /// A JSON object whose fields the description names.
    Object,
    /// A JSON object with at least these fields (the API contract's, for the endpoints it
    /// lists), others welcome.
    Has(&'static [&'static str]),
    /// Prometheus text.
    Metrics,
    /// CSV, JSON or Parquet, by `format`; for HDF5 a link to the file.
    Export,
    /// A file for download (an export's).
    Download,
    /// A WebSocket upgrade.
    Upgrade,
    /// The config check: 200 when valid, 422 with the errors when not.
    Validation,
}

/// One operation's documentation.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: Option<SchemaFn>,
    body: Option<Body>,
    status: u16,
    /// A second success status with the same answer (ingestion: 200 once applied, 202 while
    /// the pipeline is behind).
    also: Option<u16>,
    reply: Reply,
}

const fn op(method: &'static str, path: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        summary,
        query: None,
        body: None,
        status: 200,
        also: None,
        reply: Reply::Object,
    }
}

impl Op {
    const fn query(mut self, q: SchemaFn) -> Self {
        self.query = Some(q);
        self
    }
    const fn body(mut self, b: Body) -> Self {
        self.body = Some(b);
        self
    }
    const fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    const fn also(mut self, s: u16) -> Self {
        self.also = Some(s);
        self
    }
    const fn reply(mut self, r: Reply) -> Self {
        self.reply = r;
        self
    }
}

use super::analytics::BulkLatestRequest;
use super::analytics::{BulkStatesQuery, EfficiencyQuery, PeriodogramQuery, RangeQuery};
use super::control::{NodeBody, OverrideBody, ResetBody};
use super::diagnostics::{HealthCheckRequest, LogQuery, TemplateQuery};
use super::lake::{ExportQuery, HistoryQuery};
use super::mock::{SensorDataQuery, SimulateRequest};
use super::node_config::NodeConfigBody;
use super::pagination::PageQuery;
use super::rhythms::{CosinorQuery, WaveletQuery};
use super::settings::NodeQuery;
use super::shift::{PrcQuery, ShiftRequest};
use super::status::StateQuery;
use kaiabc_schemas::{
    EntrainmentPatch, FilterPatch, MappingPatch, OscillatorState, SensorReading, SimulationPatch,
};

/// The specification's shape of an entrainment change: `parameters` with its three groups.
fn etf_contract(g: &mut SchemaGenerator) -> Value {
    let number = json!({ "type": "number" });
    json!({ "parameters": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "arrhenius_scaling": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "activation_energy_kJ_mol": number,
                    "basal_activation_energy_kJ_mol": number,
                    "pre_exponential_factor": { "type": "number", "exclusiveMinimum": 0 },
                },
            },
            "structural_coupling": of::<kaiabc_schemas::StructuralCoupling>(g).to_value(),
            "atpase_constraint": of::<kaiabc_schemas::AtpaseConstraint>(g).to_value(),
        },
    } })
}

/// The filter's noises also as the specification's per-variable objects.
fn filter_contract(g: &mut SchemaGenerator) -> Value {
    let patch = of::<FilterPatch>(g);
    let array = resolve(g, patch.as_value())["properties"]["process_noise"].clone();
    let per_variable = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "temperature": { "type": "number" },
            "humidity": { "type": "number" },
            "pressure": { "type": "number" },
        },
    });
    let either = json!({ "anyOf": [array, per_variable] });
    json!({ "process_noise": either, "measurement_noise": either })
}

/// The specification's solver settings: `tolerance {absolute, relative}` and step sizes (h).
fn simulation_contract(_: &mut SchemaGenerator) -> Value {
    json!({
        "tolerance": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "absolute": { "type": "number" },
                "relative": { "type": "number" },
            },
        },
        "max_step_size": { "type": "number" },
        "min_step_size": { "type": "number" },
    })
}

fn no_contract(_: &mut SchemaGenerator) -> Value {
    json!({})
}

/// Every operation, in the order of [`ENDPOINTS`].
fn ops() -> Vec<Op> {
    use Body::*;
    use Reply::*;
    vec![
        op("GET", "/v1/health", "Liveness and the pipeline's figures"),
        op("GET", "/metrics", "Prometheus metrics").reply(Metrics),
        op("GET", "/v1/oscillator/state", "A node's latest clock state")
            .query(of::<StateQuery>)
            .reply(Typed(of::<OscillatorState>)),
        op(
            "GET",
            "/v1/oscillator/history",
            "A node's states from the lake, downsampled by `resolution`, paged by `cursor`, as \
             rows and as the specification's `series`",
        )
        .query(of::<HistoryQuery>)
        .reply(Has(&[
            "node_id",
            "hardware_type",
            "start_time",
            "end_time",
            "resolution",
            "data_points",
            "series",
        ])),
        op(
            "GET",
            "/v1/ws",
            "WebSocket: subscribe to state, reading, output, alert and phase-shift streams",
        )
        .status(101)
        .reply(Upgrade),
        op(
            "GET",
            "/v1/analytics/export",
            "Readings, states or rhythms of a range as JSON, CSV or Parquet, or HDF5 for download",
        )
        .query(of::<ExportQuery>)
        .reply(Export),
        op(
            "GET",
            "/v1/downloads/{file}",
            "A file an export wrote (HDF5), for a day after the export",
        )
        .reply(Download),
        op(
            "GET",
            "/v1/diagnostics/performance",
            "Throughput, latency and resource figures",
        ),
        op(
            "GET",
            "/v1/sensors/nodes",
            "The registered nodes with status and last seen, a page at a time",
        )
        .query(of::<PageQuery>)
        .reply(Has(&["nodes", "pagination"])),
        op(
            "GET",
            "/v1/fleet/summary",
            "The fleet at the watermark: nodes by status and board, synchrony, period, KOA and \
             temperature statistics, outliers, active alerts by code, dead letters by node, hour \
             and reason",
        )
        .reply(Has(&[
            "as_of",
            "fleet",
            "groups",
            "alerts_active",
            "dead_letters",
        ])),
        op(
            "GET",
            "/v1/fleet/groups",
            "Each group's view (by location, hardware type, or the fleet), maintained \
             incrementally",
        )
        .query(of::<super::fleet::ByQuery>)
        .reply(Has(&["as_of", "by", "count", "groups"])),
        op(
            "GET",
            "/v1/fleet/synchrony",
            "Each group's phase synchrony: the Kuramoto order parameter R, the mean phase and \
             the circular spread of circadian time",
        )
        .query(of::<super::fleet::ByQuery>)
        .reply(Has(&["as_of", "by", "groups"])),
        op(
            "GET",
            "/v1/fleet/outliers",
            "Nodes whose median period over their last rhythm windows is further than the \
             configured distance from their group's median",
        )
        .query(of::<super::fleet::ByQuery>)
        .reply(Has(&["as_of", "by", "distance_hours", "outliers"])),
        op(
            "GET",
            "/v1/fleet/nodes",
            "Every node with its group, status and circadian time (the fleet page's dial)",
        )
        .query(of::<super::fleet::ByQuery>)
        .reply(Has(&["by", "count", "nodes"])),
        op(
            "GET",
            "/v1/alerts",
            "Active alerts (offline nodes, failing clocks and filters, dead-letter rates, \
             period drift, desynchronised groups) and those recently cleared",
        )
        .reply(Has(&["as_of", "count", "active", "recent"])),
        op(
            "POST",
            "/v1/sensors/nodes",
            "Register a node: its API key and MQTT login",
        )
        .body(Json(of::<crate::auth::Registration>))
        .status(201)
        .reply(Has(&[
            "success",
            "node_id",
            "hardware_type",
            "api_key",
            "mqtt_topic",
        ])),
        op(
            "POST",
            "/v1/oscillator/reset",
            "Reset a node's clock to its initial condition, or to the given state",
        )
        .body(Json(of::<ResetBody>))
        .reply(Has(&["success", "message", "node_id", "timestamp"])),
        op("POST", "/v1/simulation/pause", "Pause a node's clock")
            .body(Json(of::<NodeBody>))
            .reply(Has(&["success", "state_saved", "paused_at_ct"])),
        op("POST", "/v1/simulation/resume", "Resume a node's clock")
            .body(Json(of::<NodeBody>))
            .reply(Has(&["success", "resumed_from_ct", "timestamp"])),
        op(
            "POST",
            "/v1/output/manual-override",
            "Hold a node's PWM duty (for a while, in its event time), or release it",
        )
        .body(Json(of::<OverrideBody>))
        .reply(Has(&["success", "override_id", "expires_at"])),
        op(
            "POST",
            "/v1/sensors/temperature",
            "Submit one reading with the node's API key: 200 with its filtered value once \
             applied, 202 if the pipeline is behind",
        )
        .body(Json(of::<SensorReading>))
        .also(202)
        .reply(Has(&[
            "accepted",
            "filtered_value",
            "kalman_variance",
            "message",
        ])),
        op(
            "POST",
            "/v1/sensors/batch",
            "Submit readings with the node's API key; per-reading rejections; the newest \
             reading's filtered values once applied (200), or 202 if the pipeline is behind",
        )
        .body(Readings(true))
        .also(202)
        .reply(Has(&["accepted", "rejected", "latest_filtered"])),
        op(
            "GET",
            "/v1/entrainment/parameters",
            "A node's (or the shared) temperature-dependence parameters",
        )
        .query(of::<NodeQuery>),
        op(
            "PUT",
            "/v1/entrainment/parameters",
            "Change a node's temperature-dependence parameters",
        )
        .body(Settings(of::<EntrainmentPatch>, etf_contract, true))
        .reply(Has(&[
            "success",
            "message",
            "effective_timestamp",
            "previous_parameters",
            "new_parameters",
        ])),
        op(
            "GET",
            "/v1/entrainment/prc",
            "The model's phase response curves for a warm and a cold temperature step",
        )
        .query(of::<PrcQuery>)
        .reply(Has(&["model", "reference", "resolution", "data"])),
        op(
            "POST",
            "/v1/entrainment/phase-shift",
            "Plan (and send) a temperature step for a wanted phase shift",
        )
        .body(Json(of::<ShiftRequest>))
        .reply(Has(&[
            "success",
            "shift_id",
            "expected_phase_change",
            "current_circadian_time",
            "optimal_ct_window",
            "estimated_completion",
        ])),
        op(
            "GET",
            "/v1/simulation/config",
            "A node's simulation settings and the shared integrator settings",
        )
        .query(of::<NodeQuery>),
        op(
            "PUT",
            "/v1/simulation/config",
            "Change a node's simulation settings",
        )
        .body(Settings(of::<SimulationPatch>, simulation_contract, false))
        .reply(Has(&["success", "message", "restart_required"])),
        op("GET", "/v1/output/koa", "A node's KOA output and PWM duty").query(of::<NodeQuery>),
        op(
            "GET",
            "/v1/output/mapping",
            "A node's (or the shared) KOA to PWM mapping",
        )
        .query(of::<NodeQuery>),
        op(
            "PUT",
            "/v1/output/mapping",
            "Change a node's KOA to PWM mapping",
        )
        .body(Settings(of::<MappingPatch>, no_contract, true))
        .reply(Has(&["success", "message", "test_values"])),
        op("GET", "/v1/filter/state", "A node's Kalman filter state").query(of::<NodeQuery>),
        op(
            "GET",
            "/v1/filter/parameters",
            "A node's (or the shared) Kalman filter parameters",
        )
        .query(of::<NodeQuery>),
        op(
            "PUT",
            "/v1/filter/parameters",
            "Change a node's Kalman filter parameters",
        )
        .body(Settings(of::<FilterPatch>, filter_contract, true))
        .reply(Has(&["success", "message", "filter_reset"])),
        op("POST", "/v1/filter/reset", "Reset a node's Kalman filter")
            .body(Json(of::<NodeBody>))
            .reply(Has(&["success", "message", "timestamp"])),
        op(
            "GET",
            "/v1/analytics/period-stability",
            "Period estimates of a range, their spread, Q10 and correlation with temperature",
        )
        .query(of::<RangeQuery>)
        .reply(Has(&[
            "node_id",
            "analysis_period",
            "statistics",
            "temperature_correlation",
            "quality_assessment",
        ])),
        op(
            "GET",
            "/v1/analytics/entrainment-efficiency",
            "A node's phase shifts (target, achieved, efficiency, settling time), advice, \
             and how closely its clock follows its environment",
        )
        .query(of::<EfficiencyQuery>)
        .reply(Has(&[
            "node_id",
            "recent_shifts",
            "average_efficiency",
            "recommendations",
        ])),
        op(
            "GET",
            "/v1/analytics/periodogram",
            "Lomb–Scargle power against period of a node's KOA or temperature, with its peak",
        )
        .query(of::<PeriodogramQuery>),
        op(
            "GET",
            "/v1/analytics/wavelet",
            "Morlet wavelet power of a node's KOA or temperature over time and period, with the \
             cone of influence, the global spectrum and their 95 % red-noise levels",
        )
        .query(of::<WaveletQuery>)
        .reply(Has(&["node_id", "variable", "n_points"])),
        op(
            "GET",
            "/v1/analytics/cosinor",
            "Cosinor of one node (one or more components), or the population-mean cosinor of \
             a group of nodes, with 95 % intervals for MESOR, amplitude and acrophase",
        )
        .query(of::<CosinorQuery>)
        .reply(Has(&["node_ids", "components", "variable"])),
        op(
            "POST",
            "/v1/bulk/sensor-readings",
            "Admin upload of readings of any nodes: per reading its status and filtered \
             temperature once applied (200), or 202 if the pipeline is behind",
        )
        .body(Readings(false))
        .also(202)
        .reply(Has(&[
            "accepted",
            "rejected",
            "processing_time_ms",
            "results",
        ])),
        op(
            "GET",
            "/v1/bulk/oscillator-states",
            "States of many nodes, paged, or each node's latest",
        )
        .query(of::<BulkStatesQuery>),
        op(
            "POST",
            "/v1/bulk/oscillator-states",
            "The latest state of each named node (or why it has none)",
        )
        .body(Json(of::<BulkLatestRequest>))
        .reply(Has(&["states", "timestamp"])),
        op(
            "GET",
            "/v1/diagnostics/logs",
            "Recent log events, newest first, paged",
        )
        .query(of::<LogQuery>)
        .reply(Has(&["logs", "pagination"])),
        op(
            "GET",
            "/v1/diagnostics/health-check",
            "Checks of the lake, the dataflow and the broker",
        ),
        op(
            "POST",
            "/v1/diagnostics/health-check",
            "Checks of the named components (database, oscillator, network, control)",
        )
        .body(OptionalJson(of::<HealthCheckRequest>))
        .reply(Has(&["overall_status", "checks", "timestamp"])),
        op(
            "GET",
            "/v1/config/templates",
            "A node's configuration for its board (the firmware's config.json in the \
             specification's shape), and the server's config file template",
        )
        .query(of::<TemplateQuery>)
        .reply(Has(&["templates", "firmware_config"])),
        op(
            "POST",
            "/v1/config/validate",
            "Check a node's configuration against what its firmware reads",
        )
        .body(Json(of::<NodeConfigBody>))
        .reply(Has(&["valid", "warnings", "optimizations"])),
        op(
            "POST",
            "/v1/config/server/validate",
            "Check the server's config file",
        )
        .body(Toml)
        .reply(Validation),
        op(
            "GET",
            "/v1/mock/sensor-data",
            "Synthetic readings of a diurnal temperature cycle with seeded noise",
        )
        .query(of::<SensorDataQuery>)
        .reply(Has(&["readings"])),
        op(
            "POST",
            "/v1/mock/simulate-oscillator",
            "A run of the KaiABC model under a constant or 24 h cycling temperature",
        )
        .body(OptionalJson(of::<SimulateRequest>))
        .reply(Has(&["points"])),
        op(
            "GET",
            "/v1/mock/test-scenarios",
            "Named test scenarios with the requests that build them",
        )
        .reply(Has(&["scenarios"])),
        op("GET", "/v1/openapi.json", "This document"),
    ]
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Researcher => "researcher",
        Role::Observer => "observer",
    }
}

/// The security requirement and the sentence on who may call.
fn security(a: Access) -> (Value, String) {
    match a {
        Access::Public => (json!([]), "Anyone.".into()),
        Access::AtLeast(r) => (
            json!([{ "bearerAuth": [] }]),
            format!("A bearer token of role {} or above.", role_name(r)),
        ),
        Access::Node => (
            json!([{ "nodeKey": [] }]),
            "A node's API key (`X-API-Key`), for its own node only.".into(),
        ),
        Access::OwnNodeOr(r) => (
            json!([{ "bearerAuth": [] }, { "nodeKey": [] }]),
            format!(
                "A bearer token of role {} or above, or a node's API key for its own node.",
                role_name(r)
            ),
        ),
    }
}

/// Query parameters from a query type's properties.
fn parameters(g: &mut SchemaGenerator, q: SchemaFn) -> Value {
    let schema = q(g);
    let resolved = resolve(g, schema.as_value());
    let required: Vec<&str> = resolved["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(props) = resolved["properties"].as_object() {
        for (name, s) in props {
            let mut s = s.clone();
            let description = s
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            let mut p = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": s,
            });
            if !description.is_null() {
                p["description"] = description;
            }
            out.push(p);
        }
    }
    Value::Array(out)
}

/// A schema with a top-level `$ref` replaced by its definition.
fn resolve(g: &SchemaGenerator, s: &Value) -> Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            g.definitions().get(name).cloned().unwrap_or(Value::Null)
        }
        None => s.clone(),
    }
}

fn request_body(g: &mut SchemaGenerator, b: &Body) -> Value {
    let (mime, schema) = match b {
        Body::Json(f) | Body::OptionalJson(f) => ("application/json", f(g).to_value()),
        Body::Settings(f, contract, node_required) => {
            // The patch's own fields plus node_id, in one object: an `allOf` of two closed
            // objects would admit no body at all.
            let patch = f(g);
            let mut merged = resolve(g, patch.as_value());
            merged["properties"]["node_id"] = json!({ "type": "string", "minLength": 1 });
            merged["properties"]["reason"] = json!({ "type": "string", "maxLength": 500 });
            if let Value::Object(extra) = contract(g) {
                for (k, v) in extra {
                    merged["properties"][k] = v;
                }
            }
            let mut required = merged["required"].as_array().cloned().unwrap_or_default();
            if *node_required {
                required.push(json!("node_id"));
            }
            merged["required"] = Value::Array(required);
            // At least one field to change besides the node.
            merged["minProperties"] = json!(if *node_required { 2 } else { 1 });
            ("application/json", merged)
        }
        Body::Readings(single) => {
            // Each item is checked on its own: a bad one is answered in `rejected` (and kept
            // in the dead letters) while the others are taken, so items may be any JSON.
            let one = of::<SensorReading>(g).to_value();
            let item = json!({
                "description": "A reading; one that is not valid is rejected alone",
                "anyOf": [one.clone(), {}],
            });
            let mut shapes = vec![
                json!({ "type": "array", "items": item }),
                json!({
                    "type": "object",
                    "properties": { "readings": { "type": "array", "items": item } },
                    "required": ["readings"],
                }),
            ];
            if *single {
                // One reading on its own, checked as the items are.
                shapes.push(json!({
                    "type": "object",
                    "not": { "required": ["readings"] },
                    "description": "One reading; one that is not valid is rejected alone",
                }));
            }
            ("application/json", json!({ "anyOf": shapes }))
        }
        Body::Toml => (
            "text/plain",
            json!({ "type": "string", "minLength": 1, "description": "A config file (TOML)" }),
        ),
    };
    let required = !matches!(b, Body::OptionalJson(_));
    json!({ "required": required, "content": { mime: { "schema": schema } } })
}

fn success(g: &mut SchemaGenerator, o: &Op) -> Value {
    let content = match &o.reply {
        Reply::Typed(f) => json!({ "application/json": { "schema": f(g).to_value() } }),
        Reply::Object => json!({ "application/json": { "schema": { "type": "object" } } }),
        Reply::Has(fields) => json!({ "application/json": { "schema": {
            "type": "object", "required": fields,
        } } }),
        Reply::Metrics => json!({ "text/plain": { "schema": { "type": "string" } } }),
        Reply::Export => json!({
            "text/csv": { "schema": { "type": "string" } },
            "application/json": { "schema": { "oneOf": [
                { "type": "array", "items": { "type": "object" } },
                {
                    "type": "object",
                    "description": "format=hdf5: the file is kept for download",
                    "required": ["export_id", "status", "download_url", "expires_at",
                                 "size_bytes", "record_count"],
                    "properties": {
                        "export_id": { "type": "string" },
                        "status": { "type": "string", "enum": ["completed"] },
                        "download_url": { "type": "string" },
                        "expires_at": { "type": "string", "format": "date-time" },
                        "size_bytes": { "type": "integer", "minimum": 0 },
                        "record_count": { "type": "integer", "minimum": 0 },
                    },
                },
            ] } },
            "application/vnd.apache.parquet": {
                "schema": { "type": "string", "format": "binary" }
            },
        }),
        Reply::Download => json!({
            "application/x-hdf5": { "schema": { "type": "string", "format": "binary" } },
        }),
        Reply::Upgrade => {
            return json!({ "description": "Switching Protocols: the WebSocket is open" })
        }
        Reply::Validation => json!({ "application/json": { "schema": validation() } }),
    };
    json!({ "description": o.summary, "content": content })
}

/// The answer of `/v1/config/validate`, valid or not.
fn validation() -> Value {
    json!({
        "type": "object",
        "required": ["valid", "errors"],
        "properties": {
            "valid": { "type": "boolean" },
            "keys": { "type": "array", "items": { "type": "string" } },
            "errors": { "type": "array", "items": { "type": "string" } },
        },
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut g = settings.into_generator();
    let ops = ops();
    let mut paths = Map::new();
    for o in &ops {
        let e = ENDPOINTS
            .iter()
            .find(|e| e.method == o.method && e.path == o.path)
            .unwrap_or_else(|| panic!("{} {} is documented but not routed", o.method, o.path));
        let (security, who) = security(e.access);
        let mut operation = json!({
            "summary": o.summary,
            "description": match e.access {
                // Without a credential there is no bucket to take from.
                Access::Public => who,
                _ => format!("{who} Rate limit: {}.", e.class.name()),
            },
            "x-rate-limit-class": e.class.name(),
            "operationId": format!("{} {}", o.method, o.path),
            "security": security,
            "responses": {
                o.status.to_string(): success(&mut g, o),
                "default": {
                    "description": "An error: the specification's error body",
                    "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/ErrorBody" }
                    } },
                },
            },
        });
        if let Some(also) = o.also {
            operation["responses"][also.to_string()] = success(&mut g, o);
        }
        if matches!(o.reply, Reply::Validation) {
            operation["responses"]["422"] = json!({
                "description": "The file is not a valid config: the errors",
                "content": { "application/json": { "schema": validation() } },
            });
        }
        if let Some(q) = o.query {
            operation["parameters"] = parameters(&mut g, q);
        }
        if let Some(i) = o.path.rfind("/{") {
            // The path's parameter (only a last segment is one: `path_matches`).
            let name = o.path[i + 2..].trim_end_matches('}');
            operation["parameters"] = json!([{
                "name": name,
                "in": "path",
                "required": true,
                "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$" },
            }]);
        }
        if let Some(b) = &o.body {
            operation["requestBody"] = request_body(&mut g, b);
        }
        let item = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        item[o.method.to_ascii_lowercase()] = operation;
    }
    let mut schemas = g.take_definitions(true);
    schemas.insert(
        "ErrorBody".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": { "error": {
                "type": "object",
                "required": ["code", "message", "timestamp", "request_id"],
                "properties": {
                    "code": { "type": "string" },
                    "message": { "type": "string" },
                    "timestamp": { "type": "string", "format": "date-time" },
                    "request_id": { "type": "string" },
                },
            } },
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "KaiABC Stream API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-node KaiABC circadian clocks driven by live sensor data.",
        },
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "nodeKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route is documented once, with its method, and nothing else is.
    #[test]
    fn every_route_is_in_the_document_and_only_those() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = 0;
        for (path, item) in paths {
            for (method, _) in item.as_object().unwrap() {
                let m = method.to_ascii_uppercase();
                assert!(
                    ENDPOINTS.iter().any(|e| e.method == m && e.path == path),
                    "{m} {path} is documented but not routed"
                );
                documented += 1;
            }
        }
        for e in ENDPOINTS {
            let (m, p) = (e.method, e.path);
            let op = &doc["paths"][p][m.to_ascii_lowercase()];
            assert!(op.is_object(), "{m} {p} is routed but not documented");
            assert_eq!(op["security"], security(e.access).0, "{m} {p}");
        }
        assert_eq!(documented, ENDPOINTS.len());
    }

    /// Every `$ref` points at a schema the document holds.
    #[test]
    fn references_resolve() {
        fn walk(v: &Value, doc: &Value, seen: &mut usize) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("$ref") {
                        let target = doc.pointer(r.trim_start_matches('#'));
                        assert!(target.is_some_and(Value::is_object), "{r} does not resolve");
                        *seen += 1;
                    }
                    o.values().for_each(|x| walk(x, doc, seen));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, seen)),
                _ => {}
            }
        }
        let doc = document();
        let mut seen = 0;
        walk(&doc, &doc, &mut seen);
        assert!(seen > 10, "{seen} references");
    }

    /// Query parameters come from the handlers' own query types: a field added there shows
    /// up here.
    #[test]
    fn parameters_are_the_query_types_fields() {
        let doc = document();
        let names = |path: &str| -> Vec<String> {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        let mut h = names("/v1/oscillator/history");
        h.sort();
        assert_eq!(
            h,
            [
                "cursor",
                "end",
                "end_time",
                "limit",
                "node_id",
                "resolution",
                "start",
                "start_time",
                "variables"
            ]
        );
        assert_eq!(names("/v1/oscillator/state"), ["node_id"]);
        let shift = &doc["paths"]["/v1/entrainment/phase-shift"]["post"]["requestBody"];
        let r = shift["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap();
        let req = doc.pointer(r.trim_start_matches('#')).unwrap();
        assert_eq!(req["required"], json!(["node_id"]));
    }
}
