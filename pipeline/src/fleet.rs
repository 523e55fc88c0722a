//! The fleet's views as the server holds them: the changes the dataflow's workers send, applied
//! to one book that answers `/v1/fleet/*` and `/v1/alerts`, renders the fleet's gauges for
//! `/metrics`, and sends each alert raised or cleared to WebSocket subscribers; and the
//! registry's records on their way into the dataflow.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use kaiabc_operators::fleet::{
    Alert, AlertChange, AlertCode, FleetChanges, FleetConfig, FleetFact, FleetState, GroupAgg,
    GroupBy, GroupKey, Measure, Name, NodeEvent, NodeMeta, Sum,
};
use serde_json::{json, Value};

use crate::auth::NodeRecord;
use crate::metrics::{header, label};

/// The WebSocket stream of the fleet's summary (`GET /v1/fleet/summary`'s answer).
pub const SUMMARY_STREAM: &str = "fleet.summary";

/// The WebSocket streams of the groups, `fleet.group.{by}.{value}` (each group's view as
/// `GET /v1/fleet/groups` shows it).
pub const GROUP_STREAMS: &str = "fleet.group.";

/// A group's WebSocket stream.
pub fn group_stream(g: &GroupKey) -> String {
    format!("{GROUP_STREAMS}{}.{}", g.by.as_str(), g.value)
}

/// What applying a tick's changes did: the `alert` events to send, and the fleet's streams
/// that changed with their new sequence numbers.
#[derive(Debug, Default)]
pub struct Applied {
    /// The `alert` events of the alerts raised and cleared.
    pub alerts: Vec<Value>,
    /// `(stream, seq)` of each fleet stream whose value changed.
    pub streams: Vec<(String, u64)>,
}

/// Alerts cleared that `/v1/alerts` still lists.
const RECENT_ALERTS: usize = 200;

/// A tick (minute of event time) as RFC 3339.
fn tick_time(tick: u64) -> String {
    kaiabc_schemas::format_timestamp(&kaiabc_operators::fleet::tick_start(tick))
}

/// The tick the views stand at, as RFC 3339 (`null` before any change).
fn as_of(s: &FleetState) -> Option<String> {
    (s.time > 0).then(|| tick_time(s.time))
}

/// An alert with when it was raised (and cleared).
#[derive(Clone, Debug)]
struct AlertRecord {
    alert: Alert,
    raised_at: u64,
    cleared_at: Option<u64>,
}

/// The book's state behind its lock.
#[derive(Debug, Default)]
struct Book {
    state: FleetState,
    raised: HashMap<Alert, u64>,
    recent: VecDeque<AlertRecord>,
    /// Each fleet stream's sequence number (bumped on every change, whether or not anyone
    /// listens, so a snapshot and the events after it agree).
    seqs: HashMap<String, u64>,
}

/// The fleet's views and alerts for the API, kept current by the dataflow.
#[derive(Debug, Default)]
pub struct FleetBook {
    book: Mutex<Book>,
    registry: Mutex<Vec<(Name, NodeMeta, isize)>>,
    liveness: Mutex<Vec<NodeEvent>>,
    /// The thresholds the views run with (for the answers' context).
    pub cfg: FleetConfig,
}

/// A registry record's grouping facts.
pub fn meta_of(r: &NodeRecord) -> NodeMeta {
    let name = |v: Option<Value>| {
        v.and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into())
    };
    NodeMeta {
        location: r
            .location
            .clone()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| kaiabc_operators::fleet::group::UNASSIGNED.into())
            .into(),
        hardware_type: name(r.hardware_type.and_then(|h| serde_json::to_value(h).ok())).into(),
        runtime: name(r.runtime.and_then(|h| serde_json::to_value(h).ok())).into(),
    }
}

impl FleetBook {
    /// A book for views run with `cfg`.
    pub fn new(cfg: FleetConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Queues a registry record for the dataflow (`diff` −1 retracts it).
    pub fn registry_change(&self, r: &NodeRecord, diff: isize) {
        if let Ok(mut q) = self.registry.lock() {
            q.push((r.node_id.as_str().into(), meta_of(r), diff));
        }
    }

    /// Queues a node's status message for the dataflow (its Last Will when `online` is false).
    pub fn liveness(&self, node: &str, online: bool) {
        if let Ok(mut q) = self.liveness.lock() {
            q.push(NodeEvent::Liveness {
                node: node.into(),
                online,
            });
        }
    }

    /// The status messages queued since the last call.
    pub fn take_liveness(&self) -> Vec<NodeEvent> {
        self.liveness
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// The registry changes queued since the last call.
    pub fn take_registry_changes(&self) -> Vec<(Name, NodeMeta, isize)> {
        self.registry
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// Applies a worker's changes of one tick: the alerts it raised and cleared, and the fleet
    /// streams that changed.
    pub fn apply(&self, c: &FleetChanges) -> Applied {
        let Ok(mut b) = self.book.lock() else {
            return Applied::default();
        };
        let changes = b.state.apply(c);
        let mut groups: Vec<String> = c
            .changes
            .iter()
            .filter_map(|(f, _)| match f {
                FleetFact::Group(g, _)
                | FleetFact::Spread(g, _, _)
                | FleetFact::Outlier(g, _, _, _) => Some(group_stream(g)),
                _ => None,
            })
            .collect();
        groups.sort();
        groups.dedup();
        if !c.changes.is_empty() {
            groups.push(SUMMARY_STREAM.into());
        }
        let streams = groups
            .into_iter()
            .map(|s| {
                let seq = b.seqs.entry(s.clone()).or_default();
                *seq += 1;
                (s, *seq)
            })
            .collect();
        let mut events = Vec::with_capacity(changes.len());
        for ch in changes {
            match ch {
                AlertChange::Raised(a, t) => {
                    events.push(alert_json(&a, t, None));
                    b.raised.insert(a, t);
                }
                AlertChange::Cleared(a, t) => {
                    let raised_at = b.raised.remove(&a).unwrap_or(t);
                    events.push(alert_json(&a, raised_at, Some(t)));
                    b.recent.push_front(AlertRecord {
                        alert: a,
                        raised_at,
                        cleared_at: Some(t),
                    });
                    b.recent.truncate(RECENT_ALERTS);
                }
            }
        }
        Applied {
            alerts: events,
            streams,
        }
    }

    /// The current value of a fleet stream, if it exists.
    pub fn render(&self, stream: &str) -> Option<Value> {
        let b = self.book.lock().ok()?;
        self.render_locked(&b, stream)
    }

    fn render_locked(&self, b: &Book, stream: &str) -> Option<Value> {
        if stream == SUMMARY_STREAM {
            return Some(self.summary_of(&b.state));
        }
        let rest = stream.strip_prefix(GROUP_STREAMS)?;
        let (by, value) = rest.split_once('.')?;
        let g = GroupKey {
            by: GroupBy::parse(by)?,
            value: value.into(),
        };
        b.state
            .groups
            .get(&g)
            .map(|agg| group_json(&b.state, &g, agg))
    }

    /// The fleet's streams that `wants` picks, with their values and sequence numbers (a
    /// WebSocket subscriber's snapshot).
    pub fn snapshot(&self, wants: &dyn Fn(&str) -> bool) -> Vec<(String, u64, Value)> {
        let Ok(b) = self.book.lock() else {
            return Vec::new();
        };
        let mut streams: Vec<String> = b.state.groups.keys().map(group_stream).collect();
        streams.push(SUMMARY_STREAM.into());
        streams
            .into_iter()
            .filter(|s| wants(s))
            .filter_map(|s| {
                let seq = b.seqs.get(&s).copied().unwrap_or(0);
                self.render_locked(&b, &s).map(|v| (s, seq, v))
            })
            .collect()
    }

    /// `GET /v1/fleet/summary`.
    pub fn summary(&self) -> Value {
        let Ok(b) = self.book.lock() else {
            return Value::Null;
        };
        self.summary_of(&b.state)
    }

    fn summary_of(&self, s: &FleetState) -> Value {
        let fleet = GroupKey {
            by: GroupBy::Fleet,
            value: kaiabc_operators::fleet::group::FLEET.into(),
        };
        let count = |by: GroupBy| s.groups.keys().filter(|g| g.by == by).count();
        let mut by_reason: BTreeMap<String, isize> = BTreeMap::new();
        let mut by_node_hour = Vec::new();
        for ((node, hour, reason), n) in &s.dead_letters {
            *by_reason.entry(reason.code().to_string()).or_default() += n;
            by_node_hour.push(json!({
                "node_id": node,
                "hour": tick_time(*hour),
                "reason": reason.code(),
                "count": n,
            }));
        }
        let mut alerts: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &s.alerts {
            *alerts.entry(a.code.as_str()).or_default() += 1;
        }
        json!({
            "as_of": as_of(s),
            "fleet": s.groups.get(&fleet).map(|agg| group_json(s, &fleet, agg)),
            "groups": {
                "location": count(GroupBy::Location),
                "hardware_type": count(GroupBy::HardwareType),
            },
            "outliers": s.outliers.keys().filter(|(g, _)| g.by == GroupBy::Location).count(),
            "alerts_active": alerts,
            "dead_letters": {
                "retention_hours": self.cfg.dead_letter_retention_hours,
                "by_reason": by_reason,
                "by_node_hour": by_node_hour,
            },
            "thresholds": self.thresholds(),
        })
    }

    fn thresholds(&self) -> Value {
        let c = &self.cfg;
        json!({
            "clock_resolution_minutes": c.clock_resolution_minutes,
            "stale_after_minutes": c.stale_after_minutes,
            "offline_after_minutes": c.offline_after_minutes,
            "outlier_windows": c.outlier_windows,
            "outlier_distance_hours": c.outlier_distance_hours,
            "dead_letters_per_hour_alert": c.dead_letters_per_hour_alert,
            "desynchronized_below": c.desync_below,
            "desynchronized_min_nodes": c.desync_min_nodes,
        })
    }

    /// Each group of grouping `by` as `view` renders it, and when the views stand.
    fn per_group(
        &self,
        by: GroupBy,
        view: impl Fn(&FleetState, &GroupKey, &GroupAgg) -> Value,
    ) -> (Option<String>, Vec<Value>) {
        let Ok(b) = self.book.lock() else {
            return (None, Vec::new());
        };
        let s = &b.state;
        let groups = s
            .groups
            .iter()
            .filter(|(g, _)| g.by == by)
            .map(|(g, agg)| view(s, g, agg))
            .collect();
        (as_of(s), groups)
    }

    /// `GET /v1/fleet/groups?by=`.
    pub fn groups(&self, by: GroupBy) -> Value {
        let (as_of, groups) = self.per_group(by, group_json);
        json!({
            "as_of": as_of,
            "by": by.as_str(),
            "count": groups.len(),
            "groups": groups,
        })
    }

    /// `GET /v1/fleet/synchrony?by=`.
    pub fn synchrony(&self, by: GroupBy) -> Value {
        let (as_of, groups) = self.per_group(by, |_, g, agg| {
            let mut v = synchrony_json(agg);
            v["group"] = json!(g.value);
            v
        });
        json!({
            "as_of": as_of,
            "by": by.as_str(),
            "groups": groups,
        })
    }

    /// `GET /v1/fleet/outliers`.
    pub fn outliers(&self, by: GroupBy) -> Value {
        let Ok(b) = self.book.lock() else {
            return Value::Null;
        };
        let s = &b.state;
        let outliers: Vec<Value> = s
            .outliers
            .iter()
            .filter(|((g, _), _)| g.by == by)
            .map(|((g, node), (p, median))| {
                json!({
                    "node_id": node,
                    "group_by": g.by.as_str(),
                    "group": g.value,
                    "window_period_hours": p.get(),
                    "group_median_hours": median.get(),
                    "deviation_hours": p.get() - median.get(),
                })
            })
            .collect();
        json!({
            "as_of": as_of(s),
            "by": by.as_str(),
            "distance_hours": self.cfg.outlier_distance_hours,
            "windows": self.cfg.outlier_windows,
            "count": outliers.len(),
            "outliers": outliers,
        })
    }

    /// `GET /v1/alerts`: the active alerts (oldest first) and the recently cleared ones
    /// (newest first).
    pub fn alerts(&self) -> Value {
        let Ok(b) = self.book.lock() else {
            return Value::Null;
        };
        let mut active: Vec<AlertRecord> = b
            .state
            .alerts
            .iter()
            .map(|a| AlertRecord {
                alert: a.clone(),
                raised_at: b.raised.get(a).copied().unwrap_or(b.state.time),
                cleared_at: None,
            })
            .collect();
        active.sort_by(|x, y| (x.raised_at, &x.alert).cmp(&(y.raised_at, &y.alert)));
        let show = |r: &AlertRecord| alert_json(&r.alert, r.raised_at, r.cleared_at);
        json!({
            "as_of": as_of(&b.state),
            "count": active.len(),
            "active": active.iter().map(show).collect::<Vec<_>>(),
            "recent": b.recent.iter().map(show).collect::<Vec<_>>(),
        })
    }

    /// The fleet's gauges for `/metrics`: nodes by status, R, and the active alerts by code.
    pub fn render_metrics(&self, out: &mut String) {
        let Ok(b) = self.book.lock() else {
            return;
        };
        let s = &b.state;
        header(
            out,
            "kaiabc_fleet_nodes",
            "gauge",
            "Nodes per group and status (the fleet's views, at the watermark).",
        );
        for (g, agg) in &s.groups {
            for (status, n) in [
                ("online", agg.online),
                ("stale", agg.stale),
                ("offline", agg.offline),
            ] {
                let _ = writeln!(
                    out,
                    "kaiabc_fleet_nodes{{by=\"{}\",group=\"{}\",status=\"{status}\"}} {n}",
                    g.by.as_str(),
                    label(&g.value)
                );
            }
        }
        header(
            out,
            "kaiabc_fleet_order_parameter",
            "gauge",
            "The Kuramoto order parameter R of each group's live clocks (1: in phase).",
        );
        for (g, agg) in &s.groups {
            if let Some(r) = agg.phase.order_parameter() {
                let _ = writeln!(
                    out,
                    "kaiabc_fleet_order_parameter{{by=\"{}\",group=\"{}\"}} {r}",
                    g.by.as_str(),
                    label(&g.value)
                );
            }
        }
        header(
            out,
            "kaiabc_alerts_active",
            "gauge",
            "Active alerts by code and severity.",
        );
        let mut counts: BTreeMap<AlertCode, usize> =
            AlertCode::ALL.iter().map(|c| (*c, 0)).collect();
        for a in &s.alerts {
            *counts.entry(a.code).or_default() += 1;
        }
        for (code, n) in counts {
            let _ = writeln!(
                out,
                "kaiabc_alerts_active{{code=\"{}\",severity=\"{}\"}} {n}",
                code.as_str(),
                code.severity().as_str()
            );
        }
    }
}

fn stats_json(sum: &Sum, spread: Option<&kaiabc_operators::fleet::Spread>) -> Value {
    json!({
        "mean": sum.mean(),
        "min": spread.map(|s| s.min.get()),
        "median": spread.map(|s| s.median.get()),
        "max": spread.map(|s| s.max.get()),
    })
}

fn synchrony_json(agg: &GroupAgg) -> Value {
    let m = &agg.phase;
    json!({
        "clocks": m.n,
        "order_parameter": m.order_parameter(),
        "mean_phase": m.mean_phase(),
        "mean_circadian_time": m.mean_phase().map(|p| p * 24.0),
        "spread_ct_hours": m.spread_ct_hours(),
    })
}

/// One group's view.
fn group_json(s: &FleetState, g: &GroupKey, agg: &GroupAgg) -> Value {
    let spread = |m: Measure| s.spreads.get(&(g.clone(), m));
    let window = spread(Measure::WindowPeriodHours);
    json!({
        "by": g.by.as_str(),
        "group": g.value,
        "nodes": agg.nodes,
        "status": { "online": agg.online, "stale": agg.stale, "offline": agg.offline },
        "hardware": {
            "raspberry_pi_pico": agg.pico,
            "elm11": agg.elm11,
            "unknown": agg.unknown_hardware,
        },
        "failing": agg.failing,
        "synchrony": synchrony_json(agg),
        "period_hours": stats_json(&agg.period, spread(Measure::PeriodHours)),
        "koa": stats_json(&agg.koa, spread(Measure::Koa)),
        "temperature_kelvin": stats_json(&agg.temperature, spread(Measure::TemperatureKelvin)),
        "window_period_hours": {
            "min": window.map(|s| s.min.get()),
            "median": window.map(|s| s.median.get()),
            "max": window.map(|s| s.max.get()),
        },
        "outliers": s.outliers.keys().filter(|(og, _)| og == g).count(),
    })
}

/// An alert as `/v1/alerts` lists it and as the WebSocket's `alert` event carries it.
pub fn alert_json(a: &Alert, raised_at: u64, cleared_at: Option<u64>) -> Value {
    let state = if cleared_at.is_some() {
        "cleared"
    } else {
        "active"
    };
    json!({
        "code": a.code.as_str(),
        "severity": a.code.severity().as_str(),
        "node_id": a.node,
        "message": a.message(),
        "timestamp": tick_time(cleared_at.unwrap_or(raised_at)),
        "state": state,
        "raised_at": tick_time(raised_at),
        "cleared_at": cleared_at.map(tick_time),
        "details": {
            "group_by": a.group.as_ref().map(|g| g.by.as_str()),
            "group": a.group.as_ref().map(|g| g.value.clone()),
            "last_seen": a.last_seen.and_then(chrono::DateTime::from_timestamp_micros)
                .map(|t| kaiabc_schemas::format_timestamp(&t)),
            "last_will": a.last_will,
        },
    })
}

/// The fleet's thresholds on the command line (`kaiabc run` and `kaiabc replay`).
#[derive(Clone, Debug, clap::Args)]
pub struct FleetArgs {
    /// A node with no reading for this many minutes of event time is offline (`NODE_OFFLINE`).
    #[arg(long, default_value_t = 5, env = "KAIABC_OFFLINE_AFTER")]
    pub offline_after: u64,
    /// A node with no reading for this many minutes of event time is stale.
    #[arg(long, default_value_t = 2, env = "KAIABC_STALE_AFTER")]
    pub stale_after: u64,
    /// Minutes of a node's event time between refreshes of its clock in the fleet's views
    /// (phase, period, KOA, temperature; statuses and alerts are not delayed). 1 follows every
    /// reading, at ten times the cost for nodes reporting every minute.
    #[arg(long, default_value_t = 10, env = "KAIABC_FLEET_RESOLUTION_MINUTES")]
    pub fleet_resolution_minutes: u64,
    /// A node whose median period over its last `--outlier-windows` rhythm windows is further
    /// than this (hours) from its group's median is an outlier (`PERIOD_DRIFT` in its location).
    #[arg(long, default_value_t = 1.0, env = "KAIABC_OUTLIER_DISTANCE_HOURS")]
    pub outlier_distance_hours: f64,
    /// Rhythm windows an outlier is judged over.
    #[arg(long, default_value_t = 3, env = "KAIABC_OUTLIER_WINDOWS")]
    pub outlier_windows: usize,
    /// More dead letters than this in a node's last hour raise `DEAD_LETTER_RATE`.
    #[arg(long, default_value_t = 10, env = "KAIABC_DEAD_LETTER_ALERT_PER_HOUR")]
    pub dead_letter_alert_per_hour: u64,
    /// A group (of at least 3 live clocks) whose order parameter R falls below this raises
    /// `DESYNCHRONIZED`.
    #[arg(long, default_value_t = 0.5, env = "KAIABC_DESYNC_BELOW")]
    pub desync_below: f64,
}

impl FleetArgs {
    /// The views' configuration, checked.
    pub fn config(&self) -> anyhow::Result<FleetConfig> {
        anyhow::ensure!(
            self.offline_after >= 1,
            "--offline-after must be at least 1 minute"
        );
        anyhow::ensure!(
            self.stale_after >= 1,
            "--stale-after must be at least 1 minute"
        );
        anyhow::ensure!(
            self.outlier_distance_hours.is_finite() && self.outlier_distance_hours > 0.0,
            "--outlier-distance-hours must be a positive number"
        );
        anyhow::ensure!(
            self.outlier_windows >= 1,
            "--outlier-windows must be at least 1"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.desync_below),
            "--desync-below must be between 0 and 1"
        );
        Ok(FleetConfig {
            clock_resolution_minutes: self.fleet_resolution_minutes,
            stale_after_minutes: self.stale_after,
            offline_after_minutes: self.offline_after,
            outlier_windows: self.outlier_windows,
            outlier_distance_hours: self.outlier_distance_hours,
            dead_letters_per_hour_alert: self.dead_letter_alert_per_hour,
            desync_below: self.desync_below,
            ..FleetConfig::default()
        })
    }
}

/// The registry file's records as the fleet groups them (a missing file is an empty registry).
pub fn registry_file(path: &std::path::Path) -> anyhow::Result<Vec<(Name, NodeMeta)>> {
    use anyhow::Context;
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let records: Vec<NodeRecord> = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a node registry", path.display()))?;
    Ok(records
        .iter()
        .map(|r| (Name::from(r.node_id.as_str()), meta_of(r)))
        .collect())
}
