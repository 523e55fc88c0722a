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
use kaiabc_schemas::{ControlAction, ControlCommand};
use serde::Deserialize;
use warp::http::StatusCode;
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeBody {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideBody {
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    node_id: String,
    /// The duty to hold (0–255), or null to follow the clock again. Read as a number, so
    /// `171.0` is taken like `171` (JSON does not tell them apart).
    #[schemars(with = "Option<u8>")]
    pwm: Option<f64>,
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

/// Logs the command, then hands it to the dataflow, ordered with the node's readings; 202.
pub(super) fn issue(
    api: &Api,
    endpoint: Command,
    who: Principal,
    body: &[u8],
) -> warp::reply::Response {
    let bad = |m: String| ApiError::InvalidParameter(m).response();
    let (node_id, action) = match endpoint {
        Command::ManualOverride => match serde_json::from_slice::<OverrideBody>(body) {
            Ok(b) => {
                let pwm = match b.pwm {
                    None => None,
                    Some(d) if d.fract() == 0.0 && (0.0..=255.0).contains(&d) => Some(d as u8),
                    Some(d) => return bad(format!("pwm must be a whole number 0-255, got {d}")),
                };
                (b.node_id, ControlAction::ManualOverride { pwm })
            }
            Err(e) => {
                return bad(format!(
                    "expected {{\"node_id\", \"pwm\": 0-255 or null}}: {e}"
                ))
            }
        },
        _ => match serde_json::from_slice::<NodeBody>(body) {
            Ok(b) => (
                b.node_id,
                match endpoint {
                    Command::Reset => ControlAction::Reset,
                    Command::Pause => ControlAction::Pause,
                    Command::FilterReset => ControlAction::FilterReset,
                    _ => ControlAction::Resume,
                },
            ),
            Err(e) => return bad(format!("expected {{\"node_id\"}}: {e}")),
        },
    };
    submit(api, who, node_id, action)
}

/// Checks a command against the node's settings, logs it, hands it to the dataflow and answers
/// 202 with the command (or the error body).
pub(super) fn submit(
    api: &Api,
    who: Principal,
    node_id: String,
    action: ControlAction,
) -> warp::reply::Response {
    match send(api, who, node_id, action) {
        Ok(cmd) => warp::reply::with_status(
            warp::reply::json(&serde_json::json!({"accepted": true, "command": cmd})),
            StatusCode::ACCEPTED,
        )
        .into_response(),
        Err(resp) => *resp,
    }
}

/// [`submit`] without the answer: the command as sent.
pub(super) fn send(
    api: &Api,
    who: Principal,
    node_id: String,
    action: ControlAction,
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
