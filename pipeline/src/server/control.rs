//! Control endpoints: reset, pause, resume, manual override, filter reset and every parameter
//! change become commands in the node's input stream, written first to the lake's control log
//! (`_control/commands.jsonl`, synced) so that they are durable and a replay of that log with
//! the sensor logs reproduces them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kaiabc_operators::node::NodeConfig;
use kaiabc_operators::settings::NodeSettings;

use chrono::{DateTime, Utc};
use kaiabc_schemas::{ControlAction, ControlCommand, StateVariables};
use serde::Deserialize;
use warp::Reply;

use super::{Api, ApiError};
use crate::auth::Principal;
use crate::dataflow::inbound::Inbound;
use crate::dataflow::parse::CONTROL_SOURCE;

/// The append-only log of every command the API accepted.
#[derive(Debug)]
pub struct ControlLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl ControlLog {
    /// The log under `lake` (opened on first use).
    pub fn at(lake: &Path) -> Self {
        Self {
            path: lake.join("_control").join("commands.jsonl"),
            file: Mutex::new(None),
        }
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one command as a JSON line and syncs it to disk.
    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("the control log's lock is poisoned"))?;
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            *guard = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let f = guard.as_mut().expect("opened above");
        let mut buf = line.to_vec();
        buf.push(b'\n');
        f.write_all(&buf)?;
        f.sync_data()
    }
}

/// `{node_id, reason?}`: pause, resume and filter reset.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeBody {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: String,
    /// Why (kept with the command in the control log).
    #[serde(default)]
    #[schemars(length(max = 500))]
    reason: Option<String>,
}

/// `POST /v1/oscillator/reset`: to the node's initial condition, or to `initial_conditions`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetBody {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: String,
    /// The state to restart from: µM, or fractions of the totals (the four KaiC forms summing
    /// to 1, free and complexed KaiA summing to 1). It must respect the model's conserved
    /// totals (422 otherwise).
    #[serde(default)]
    initial_conditions: Option<StateVariables>,
    /// Why (kept with the command in the control log).
    #[serde(default)]
    #[schemars(length(max = 500))]
    reason: Option<String>,
}

/// `POST /v1/output/manual-override`: the specification's `override_enabled` with
/// `pwm_value`, or our `pwm` (null releases the output).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideBody {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: String,
    /// `false` releases the output to the clock; `true` holds `pwm_value`.
    #[serde(default)]
    override_enabled: Option<bool>,
    /// The duty to hold (0–255). Read as a number, so `171.0` is taken like `171`.
    #[serde(default)]
    #[schemars(with = "Option<u8>")]
    pwm_value: Option<f64>,
    /// The same as `pwm_value` (our name); null (or absent, without `pwm_value`) releases.
    #[serde(default)]
    #[schemars(with = "Option<u8>")]
    pwm: Option<f64>,
    /// How long the override holds, in the node's event time (minutes, at most a week).
    #[serde(default)]
    #[schemars(range(min = 1.0, max = 10080.0))]
    duration_minutes: Option<f64>,
    /// Why (kept with the command in the control log).
    #[serde(default)]
    #[schemars(length(max = 500))]
    reason: Option<String>,
}

/// Which endpoint: the action it issues, from the request body.
#[derive(Clone, Copy, Debug)]
pub(super) enum Command {
    Reset,
    Pause,
    Resume,
    ManualOverride,
    FilterReset,
}

/// Each node's own settings as the API has issued them: the control log folded through
/// [`NodeSettings::patched`], the very function the nodes apply, so what a GET answers is what
/// the node runs with.
#[derive(Debug, Default)]
pub struct SettingsBook {
    nodes: Mutex<HashMap<String, NodeSettings>>,
    serial: Mutex<()>,
}

impl SettingsBook {
    /// The book of the commands in the control log at `log` (none if it does not exist yet).
    pub fn load(log: &Path, cfg: &NodeConfig) -> anyhow::Result<Self> {
        let book = Self::default();
        if log.exists() {
            let commands = crate::dataflow::replay::read_control_logs(&[log.to_path_buf()])?;
            for c in commands {
                // The node refused a command that does not patch cleanly: so does the book.
                let _ = book.apply(cfg, &c.node_id, &c.action);
            }
        }
        Ok(book)
    }

    /// A node's settings (the shared ones if it never changed any).
    pub fn get(&self, node: &str) -> NodeSettings {
        self.nodes
            .lock()
            .map(|m| m.get(node).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The settings after `action`, or why the node would refuse it; nothing is stored.
    pub fn check(
        &self,
        cfg: &NodeConfig,
        node: &str,
        action: &ControlAction,
    ) -> Result<NodeSettings, String> {
        self.get(node)
            .patched(cfg, action)
            .map_err(|e| e.to_string())
    }

    fn apply(&self, cfg: &NodeConfig, node: &str, action: &ControlAction) -> Result<(), String> {
        let next = self.check(cfg, node, action)?;
        if let Ok(mut m) = self.nodes.lock() {
            m.insert(node.to_string(), next);
        }
        Ok(())
    }
}

/// The 400 of a body that is not the endpoint's shape.
fn bad(m: String) -> warp::reply::Response {
    ApiError::InvalidParameter(m).response()
}

/// The duty of an override body, `None` to release, or why it is not one.
fn override_pwm(b: &OverrideBody) -> Result<Option<u8>, String> {
    if let Some(m) = b.duration_minutes {
        if !(1.0..=10080.0).contains(&m) {
            return Err(format!(
                "duration_minutes must be 1-10080 (a week), got {m}"
            ));
        }
    }
    if b.override_enabled == Some(false) {
        return Ok(None);
    }
    let duty = match (b.pwm_value, b.pwm) {
        (Some(x), Some(y)) if x != y => {
            return Err(format!("pwm_value {x} and pwm {y} disagree: send one"))
        }
        (v, w) => v.or(w),
    };
    match duty {
        None if b.override_enabled == Some(true) => {
            Err("pwm_value (0-255) is required to enable an override".into())
        }
        None => Ok(None),
        Some(d) if d.fract() == 0.0 && (0.0..=255.0).contains(&d) => Ok(Some(d as u8)),
        Some(d) => Err(format!("pwm_value must be a whole number 0-255, got {d}")),
    }
}

/// The state a reset asks for, in µM (exactly the model's, implied variables recomputed), with
/// warnings; a 422 that says why if it breaks the model's conserved totals.
fn initial_conditions(
    api: &Api,
    given: &StateVariables,
) -> Result<(StateVariables, Vec<String>), ApiError> {
    let p = &api.node_cfg.clock.params;
    let kaic = given.C_U + given.C_S + given.C_T + given.C_ST;
    let kaia = given.A_free + given.CABC_complex;
    let near = |x: f64, want: f64| (x - want).abs() <= 5e-3 * want;
    let (scale_c, scale_a, units) = if near(kaic, p.c_total) {
        (1.0, 1.0, "µM")
    } else if near(kaic, 1.0) && near(kaia, 1.0) {
        (p.c_total, p.a_total, "fractions of the totals")
    } else {
        return Err(invalid_state(format!(
            "C_U + C_S + C_T + C_ST = {kaic}: the model conserves KaiC at {} µM (send µM, or \
             fractions of the totals that sum to 1)",
            p.c_total
        )));
    };
    let st = kaiabc_operators::model::KaiState {
        t: given.C_T * scale_c,
        d: given.C_ST * scale_c,
        s: given.C_S * scale_c,
    };
    st.validate(p, 0.0)
        .map_err(|e| invalid_state(e.to_string()))?;
    let implied = st.concentrations(p);
    for (name, sent, want) in [
        ("A_free", given.A_free * scale_a, implied.a_free),
        (
            "CABC_complex",
            given.CABC_complex * scale_a,
            implied.cabc_complex,
        ),
    ] {
        if (sent - want).abs() > 5e-3 * p.a_total {
            return Err(invalid_state(format!(
                "{name} = {sent} µM is not what C_S implies under the model's KaiA total \
                 ({want:.4} µM): KaiA binds in proportion to S-phosphorylated KaiC"
            )));
        }
    }
    let exact = StateVariables {
        C_U: implied.c_u,
        C_S: implied.c_s,
        C_T: implied.c_t,
        C_ST: implied.c_st,
        A_free: implied.a_free,
        CABC_complex: implied.cabc_complex,
    };
    let mut warnings = vec![format!("initial_conditions read as {units}")];
    if let Some(lc) = &api.node_cfg.reference {
        // Far from the limit cycle the clock needs a transient before its rhythm is regular.
        let on = lc.state_at_ct(lc.ct_of_state(&st));
        let off = [st.t - on.t, st.d - on.d, st.s - on.s]
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs()))
            / p.c_total;
        if off > 0.05 {
            warnings.push(format!(
                "the state is {:.0} % of the KaiC total away from the limit cycle: the clock \
                 follows a transient for some cycles before its phase and period are regular",
                off * 100.0
            ));
        }
    }
    Ok((exact, warnings))
}

fn invalid_state(message: String) -> ApiError {
    ApiError::Validation {
        field_errors: vec![super::error::FieldError::new(
            "initial_conditions",
            "INCONSISTENT_STATE",
            message.clone(),
        )],
        message,
    }
}

/// Logs the command, then hands it to the dataflow, ordered with the node's readings; 200 with
/// the contract's fields for the endpoint.
pub(super) fn issue(
    api: &Api,
    endpoint: Command,
    who: Principal,
    body: &[u8],
) -> warp::reply::Response {
    let mut warnings = Vec::new();
    let (node_id, action, reason) = match endpoint {
        Command::ManualOverride => match super::json_object::<OverrideBody>(body) {
            Ok(b) => match override_pwm(&b) {
                Ok(pwm) => (
                    b.node_id,
                    ControlAction::ManualOverride {
                        pwm,
                        duration_minutes: pwm.and(b.duration_minutes),
                    },
                    b.reason,
                ),
                Err(m) => return bad(m),
            },
            Err(e) => {
                return bad(format!(
                    "expected {{\"node_id\", \"override_enabled\", \"pwm_value\": 0-255, \
                     \"duration_minutes\"?}}: {e}"
                ))
            }
        },
        Command::Reset => match super::json_object::<ResetBody>(body) {
            Ok(b) => {
                let action = match &b.initial_conditions {
                    None => ControlAction::Reset,
                    Some(given) => match initial_conditions(api, given) {
                        Ok((exact, w)) => {
                            warnings = w;
                            ControlAction::ResetTo {
                                initial_conditions: exact,
                            }
                        }
                        Err(e) => return e.response(),
                    },
                };
                (b.node_id, action, b.reason)
            }
            Err(e) => {
                return bad(format!(
                    "expected {{\"node_id\", \"initial_conditions\"?, \"reason\"?}}: {e}"
                ))
            }
        },
        _ => match super::json_object::<NodeBody>(body) {
            Ok(b) => (
                b.node_id,
                match endpoint {
                    Command::Pause => ControlAction::Pause,
                    Command::FilterReset => ControlAction::FilterReset,
                    _ => ControlAction::Resume,
                },
                b.reason,
            ),
            Err(e) => return bad(format!("expected {{\"node_id\", \"reason\"?}}: {e}")),
        },
    };
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return bad("reason is longer than 500 characters".into());
    }
    // What the node's clock stands at (a pause holds it there; a resume goes on from it).
    let ct = api.shared.hub.state(&node_id).map(|s| s.circadian_time);
    let cmd = match send_with_reason(api, who, node_id, action, reason) {
        Ok(cmd) => cmd,
        Err(resp) => return *resp,
    };
    let now = kaiabc_schemas::format_timestamp(&cmd.issued_at.unwrap_or_else(Utc::now));
    let mut answer = serde_json::json!({
        "success": true,
        "accepted": true,
        "node_id": cmd.node_id,
        "timestamp": now,
        "command": cmd,
    });
    let extra = match (&endpoint, &cmd.action) {
        (Command::Reset, ControlAction::ResetTo { .. }) => serde_json::json!({
            "message": "oscillator reset to the given initial conditions",
            "warnings": warnings,
        }),
        (Command::Reset, _) => serde_json::json!({
            "message": "oscillator reset to its initial condition",
        }),
        (Command::Pause, _) => serde_json::json!({
            "message": "simulation paused: readings are recorded, the clock holds its state",
            // The pause is in the control log (synced) and the state it holds goes into the
            // node's next checkpoint: both survive a restart.
            "state_saved": true,
            "paused_at_ct": ct,
        }),
        (Command::Resume, _) => serde_json::json!({
            "message": "simulation resumed",
            "resumed_from_ct": ct,
        }),
        (Command::FilterReset, _) => serde_json::json!({
            "message": "Kalman filter reset: it starts again from the next reading",
        }),
        (
            Command::ManualOverride,
            ControlAction::ManualOverride {
                pwm,
                duration_minutes,
            },
        ) => {
            let expires = duration_minutes.map(|m| {
                kaiabc_schemas::format_timestamp(
                    &(cmd.timestamp + chrono::Duration::microseconds((m * 60e6) as i64)),
                )
            });
            serde_json::json!({
                "message": match pwm {
                    Some(_) => "output held at the given duty",
                    None => "output released to the clock",
                },
                "override_id": format!(
                    "override_{}_{}", cmd.node_id, cmd.timestamp.timestamp_micros()
                ),
                "override_enabled": pwm.is_some(),
                "pwm_value": pwm,
                "expires_at": expires,
            })
        }
        _ => serde_json::json!({}),
    };
    if let (Some(a), serde_json::Value::Object(e)) = (answer.as_object_mut(), extra) {
        a.extend(e);
    }
    warp::reply::json(&answer).into_response()
}

/// Checks a command against the node's settings, logs it (synced) and hands it to the
/// dataflow; the command as sent, or the error answer.
pub(super) fn send(
    api: &Api,
    who: Principal,
    node_id: String,
    action: ControlAction,
) -> Result<ControlCommand, Box<warp::reply::Response>> {
    send_with_reason(api, who, node_id, action, None)
}

/// [`send`] with the issuer's reason, kept in the control log.
pub(super) fn send_with_reason(
    api: &Api,
    who: Principal,
    node_id: String,
    action: ControlAction,
    reason: Option<String>,
) -> Result<ControlCommand, Box<warp::reply::Response>> {
    let bad = |m: String| ApiError::InvalidParameter(m).response();
    if let Some(resp) = super::invalid_node_id(&node_id) {
        return Err(Box::new(resp));
    }
    // One command at a time, so two changes to one node cannot both pass the check against
    // the same old settings.
    let _serial = api.book.serial.lock();
    if let Err(m) = api.book.check(&api.node_cfg, &node_id, &action) {
        return Err(Box::new(bad(m)));
    }
    let now = Utc::now();
    let issued_by = match who {
        Principal::User(c) => Some(c.sub),
        Principal::Node(n) => Some(format!("node:{n}")),
    };
    let cmd = ControlCommand {
        node_id: node_id.clone(),
        timestamp: api
            .shared
            .hub
            .last_event_time(&node_id)
            .map(|t| t + chrono::Duration::microseconds(1))
            .unwrap_or(DateTime::UNIX_EPOCH),
        issued_by,
        issued_at: Some(now),
        reason,
        action,
    };
    let line = serde_json::to_vec(&cmd).expect("a command always encodes");
    if let Err(e) = api.control_log.append(&line) {
        return Err(Box::new(
            ApiError::Internal(format!("writing the control log: {e}")).response(),
        ));
    }
    let _ = api.book.apply(&api.node_cfg, &cmd.node_id, &cmd.action);
    let inbound = Inbound {
        source: format!("{CONTROL_SOURCE}api"),
        node: Ok(node_id),
        payload: line,
        received_at: now,
    };
    // Durable before the answer, like a reading (the wait is one sync of the log).
    if let Err(e) = api.ingest.durable_blocking(&inbound) {
        return Err(Box::new(super::not_stored(&e)));
    }
    Ok(cmd)
}

/// A command endpoint's route: the body (16 KiB at most) is checked, logged and sent in.
pub(super) fn route(
    api: &std::sync::Arc<Api>,
    at: super::Matched,
    command: Command,
) -> super::Route {
    use warp::Filter;
    let api = std::sync::Arc::clone(api);
    at.and(super::body(16 * 1024))
        .map(move |who: crate::auth::Principal, body: bytes::Bytes| {
            issue(&api, command, who, &body)
        })
        .boxed()
}
