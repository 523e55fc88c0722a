//! Control endpoints: reset, pause, resume and manual override become commands in the node's
//! input stream, written first to the lake's control log (`_control/commands.jsonl`, synced)
//! so that they are durable and a replay of that log with the sensor logs reproduces them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::Utc;
use kaiabc_schemas::{ControlAction, ControlCommand};
use serde::Deserialize;
use warp::http::StatusCode;
use warp::Reply;

use super::{error_body, Api};
use crate::auth::Principal;
use crate::dataflow::live::Inbound;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeBody {
    node_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideBody {
    node_id: String,
    /// The duty to hold (0–255), or null to follow the clock again.
    pwm: Option<u8>,
}

/// Which endpoint: the action it issues, from the request body.
#[derive(Clone, Copy, Debug)]
pub(super) enum Endpoint {
    Reset,
    Pause,
    Resume,
    ManualOverride,
}

/// Logs the command, then hands it to the dataflow, ordered with the node's readings; 202.
pub(super) fn issue(
    api: &Api,
    endpoint: Endpoint,
    who: Principal,
    body: &[u8],
) -> warp::reply::Response {
    let bad = |m: String| error_body(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", m);
    let (node_id, action) = match endpoint {
        Endpoint::ManualOverride => match serde_json::from_slice::<OverrideBody>(body) {
            Ok(b) => (b.node_id, ControlAction::ManualOverride { pwm: b.pwm }),
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
                    Endpoint::Reset => ControlAction::Reset,
                    Endpoint::Pause => ControlAction::Pause,
                    _ => ControlAction::Resume,
                },
            ),
            Err(e) => return bad(format!("expected {{\"node_id\"}}: {e}")),
        },
    };
    if !crate::auth::valid_node_id(&node_id) {
        return bad(format!(
            "node_id {node_id:?}: 1-64 characters of A-Z a-z 0-9 _ -"
        ));
    }
    let issued_by = match who {
        Principal::User(c) => Some(c.sub),
        Principal::Node(n) => Some(format!("node:{n}")),
    };
    let cmd = ControlCommand {
        node_id: node_id.clone(),
        timestamp: Utc::now(),
        issued_by,
        action,
    };
    let line = serde_json::to_vec(&cmd).expect("a command always encodes");
    if let Err(e) = api.control_log.append(&line) {
        return error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("writing the control log: {e}"),
        );
    }
    let inbound = Inbound {
        source: format!("{CONTROL_SOURCE}api"),
        node: Ok(node_id),
        payload: line,
        received_at: cmd.timestamp,
    };
    if api.ingest.send(inbound).is_err() {
        return error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "the pipeline is stopping",
        );
    }
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"accepted": true, "command": cmd})),
        StatusCode::ACCEPTED,
    )
    .into_response()
}
