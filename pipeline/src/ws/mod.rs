//! WebSocket `/v1/ws`: clients subscribe to streams (with `*` wildcards), get an ack with a
//! snapshot of the current values, then events with per-stream sequence numbers. A client that
//! falls behind never slows the pipeline: it gets a resync notice and a fresh snapshot.
//!
//! Client → server ([`ClientMessage`]): `{"action":"subscribe","streams":[…]}`,
//! `{"action":"unsubscribe","streams":[…]}`, `{"action":"ping"}` (`type` for `action` too).
//! Server → client ([`ServerMessage`], tagged by `type`): `ack` (with `snapshot`), `event`,
//! `resync`, `pong`, `error`. Streams: `oscillator.state.{node}`, `sensors.reading.{node}`, `output.pwm.{node}`,
//! `alert`, `phase_shift.complete`, `fleet.summary`, `fleet.group.{by}.{value}`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kaiabc_schemas::{LakeRow, OscillatorState, ReadingRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Message;

mod writer;

/// Events waiting for a client before it counts as lagging (in its queue at its writer, and in
/// the broadcast channel the writers take events from).
pub const CLIENT_BUFFER: usize = 4096;

/// Events a writer takes from the broadcast channel for one pass over its subscribers.
const BURST: usize = 256;

/// The most patterns one client may hold: every event is matched against each of them on the
/// server's thread, so one client must not make that work unbounded (15 messages of 10 000
/// patterns each pushed `/v1/health` to a 1.1 s median).
pub const MAX_PATTERNS: usize = 256;

/// The largest message a client may send (a subscribe of [`MAX_PATTERNS`] long patterns fits).
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// The stream families a client may subscribe to (a node id follows the first three; a
/// grouping and a group the last).
const FAMILIES: [&str; 7] = [
    "oscillator.state.",
    "sensors.reading.",
    "output.pwm.",
    "alert",
    PHASE_SHIFT_STREAM,
    crate::fleet::SUMMARY_STREAM,
    crate::fleet::GROUP_STREAMS,
];

/// Indexes of [`FAMILIES`].
const STATE: usize = 0;
const READING: usize = 1;
const PWM: usize = 2;
const ALERT: usize = 3;
const SHIFT: usize = 4;
const FLEET_SUMMARY: usize = 5;
const FLEET_GROUP: usize = 6;

/// The current value of the fleet's streams a predicate picks: `(stream, seq, data)`.
pub type FleetSnapshot =
    Box<dyn Fn(&dyn Fn(&str) -> bool) -> Vec<(String, u64, Value)> + Send + Sync>;

/// Where snapshots of the fleet's streams come from (the fleet's book).
pub struct FleetSource(pub FleetSnapshot);

impl std::fmt::Debug for FleetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetSource")
    }
}

/// The families a valid pattern can match.
fn families_of(p: &str) -> impl Iterator<Item = usize> + '_ {
    let head = p.find('*').map(|star| &p[..star]);
    FAMILIES.iter().enumerate().filter_map(move |(i, f)| {
        let hit = match head {
            Some(h) => f.starts_with(h) || h.starts_with(f),
            None if f.ends_with('.') => p.starts_with(f),
            None => p == *f,
        };
        hit.then_some(i)
    })
}

/// The stream of finished phase shifts (every node's; the event names its node).
pub const PHASE_SHIFT_STREAM: &str = "phase_shift.complete";

/// One published event, serialised once for every subscriber.
#[derive(Debug)]
pub struct Published {
    /// Its stream.
    pub stream: String,
    /// Its sequence number in the stream.
    pub seq: u64,
    /// The whole `event` message, JSON text framed once: every subscriber's copy shares its
    /// bytes (a clone is a reference count, not a copy of the text).
    pub message: Message,
}

impl Published {
    /// The `event` message of `stream`'s value `data` at `seq`, serialised and framed once.
    fn event(stream: impl Into<String>, seq: u64, data: &Value) -> Self {
        let stream = stream.into();
        Self {
            message: Message::text(event_text(&stream, seq, data)),
            stream,
            seq,
        }
    }
}

/// The latest values of one node, with the sequence numbers of their streams.
#[derive(Debug, Default, Clone)]
pub struct NodeLatest {
    /// The state after the node's last applied reading, and its sequence number (also that of
    /// its `output.pwm` event).
    pub state: Option<(u64, OscillatorState)>,
    /// The node's last reading, and its sequence number.
    pub reading: Option<(u64, ReadingRow)>,
    /// The KOA of the state before the latest (for its direction).
    pub prev_koa: Option<f64>,
}

/// Where the KOA output stands in its cycle: `peak` and `trough` within 5 % of the ends of its
/// 0–1 range, else `ascending` or `descending` by the change since the previous state.
pub fn koa_phase(koa: f64, prev: Option<f64>) -> Option<&'static str> {
    if koa >= 0.95 {
        Some("peak")
    } else if koa <= 0.05 {
        Some("trough")
    } else {
        prev.map(|p| if koa >= p { "ascending" } else { "descending" })
    }
}

/// What the dataflow made of one reading, for the request that sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// Filtered temperature (K); `None` for a late reading, which is stored but not applied.
    pub temperature_kelvin: Option<f64>,
    /// Its variance (K²).
    pub kalman_variance: Option<f64>,
    /// Filtered relative humidity (%), once the filter has humidity.
    pub humidity_percent: Option<f64>,
    /// Filtered pressure (Pa), once the filter has pressure.
    pub pressure_pa: Option<f64>,
}

/// What the dataflow made of a reading a request waits for.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The node took it (or stored it as late).
    Applied(Applied),
    /// The node's clock or filter failed on it: kept as a dead letter of this reason.
    Failed {
        /// `ODE_INSTABILITY` or `FILTER_DIVERGENCE`.
        reason: kaiabc_schemas::Reason,
        /// What failed.
        message: String,
    },
}

/// A request waiting for its reading (node, event time, seq) to be applied.
#[derive(Debug)]
struct Waiter {
    micros: i64,
    seq: Option<i64>,
    tx: tokio::sync::oneshot::Sender<Outcome>,
}

/// The fan-out point between the dataflow and WebSocket clients.
#[derive(Debug)]
pub struct Hub {
    latest: Mutex<foldhash::HashMap<String, NodeLatest>>,
    /// Ingestion requests waiting for their readings, by node (see [`Hub::await_applied`]).
    waiting: Mutex<foldhash::HashMap<String, Vec<Waiter>>>,
    /// Waiters registered (so publishing skips the lock when nobody waits).
    waiters: AtomicU64,
    alerts: AtomicU64,
    /// Sequence of `phase_shift.complete`.
    shifts: AtomicU64,
    /// Subscribed patterns per stream family ([`FAMILIES`]), over all clients: events of a
    /// family nobody subscribes to are not serialised.
    interest: [AtomicU64; FAMILIES.len()],
    tx: broadcast::Sender<Arc<Published>>,
    shutdown: watch::Sender<bool>,
    /// Connected clients.
    pub clients: AtomicU64,
    /// Resyncs sent to lagging clients.
    pub resyncs: AtomicU64,
    /// Where snapshots of the fleet's streams come from (the fleet's book), once it runs.
    pub fleet: std::sync::OnceLock<FleetSource>,
    /// The writers that send events to subscribers ([`writer`]), started with the first.
    writers: std::sync::OnceLock<Vec<tokio::sync::mpsc::Sender<writer::Attach>>>,
    /// Subscribers so far (each one's id, which also picks its writer).
    subscribers: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            latest: Mutex::default(),
            waiting: Mutex::default(),
            waiters: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            shifts: AtomicU64::new(0),
            interest: Default::default(),
            tx: broadcast::channel(CLIENT_BUFFER).0,
            shutdown: watch::channel(false).0,
            clients: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            fleet: std::sync::OnceLock::new(),
            writers: std::sync::OnceLock::new(),
            subscribers: AtomicU64::new(0),
        }
    }
}

/// An `event` message in the API specification's envelope: `event` (the stream's family),
/// `node_id`, `timestamp` and `data`; an alert also carries `severity`, `code`, `message` and
/// `details` at the top, and a finished phase shift its `shift_id`. Our `stream` and `seq`
/// (per stream, so a gap is visible) stand beside them.
fn event_text(stream: &str, seq: u64, data: &Value) -> String {
    let (event, node) = FAMILIES
        .iter()
        .find_map(|f| {
            let family = f.strip_suffix('.')?;
            stream.strip_prefix(f).map(|node| (family, Some(node)))
        })
        .unwrap_or((stream, None));
    // The fleet's streams name a group, not a node.
    let node = node.filter(|_| !event.starts_with("fleet."));
    let field = |k: &str| data.get(k).cloned().unwrap_or(Value::Null);
    let alert = (stream == "alert").then(|| AlertFields {
        severity: field("severity"),
        code: field("code"),
        message: field("message"),
        // The fleet's alerts carry their own details; a dead letter's are where it came from.
        details: data
            .get("details")
            .cloned()
            .unwrap_or_else(|| json!({ "source": data.get("source") })),
    });
    ServerMessage::Event(Event {
        event,
        node_id: data.get("node_id").and_then(Value::as_str).or(node),
        timestamp: data
            .get("timestamp")
            .filter(|t| t.is_string())
            .cloned()
            .unwrap_or_else(|| json!(kaiabc_schemas::format_timestamp(&chrono::Utc::now()))),
        stream,
        seq,
        data,
        alert,
        shift_id: (stream == PHASE_SHIFT_STREAM).then(|| field("shift_id")),
    })
    .text()
}

/// What the server sends a client, tagged by `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage<'a> {
    /// Answers a subscribe (with the new patterns' snapshot) or an unsubscribe (with the
    /// patterns left).
    Ack {
        action: Ask,
        /// The streams as the client named them.
        streams: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshot: Option<Vec<SnapshotItem>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subscriptions: Option<&'a [String]>,
    },
    /// Answers a ping.
    Pong,
    /// The client fell `missed` events behind: the latest item of each subscribed stream.
    Resync {
        missed: u64,
        snapshot: Vec<SnapshotItem>,
    },
    /// A refused message.
    Error { error: ErrorBody },
    /// One published item.
    Event(Event<'a>),
}

impl ServerMessage<'_> {
    fn text(&self) -> String {
        // Serialising these types cannot fail (string keys, finite JSON values).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The latest item of one stream, in an `ack` or a `resync`.
#[derive(Serialize)]
struct SnapshotItem {
    stream: String,
    seq: u64,
    data: Value,
}

/// The `error` of a refusal.
#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
    timestamp: String,
}

/// An `event` in the API specification's envelope, with our `stream` and `seq`.
#[derive(Serialize)]
struct Event<'a> {
    event: &'a str,
    node_id: Option<&'a str>,
    timestamp: Value,
    stream: &'a str,
    seq: u64,
    data: &'a Value,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    alert: Option<AlertFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shift_id: Option<Value>,
}

/// An alert's own fields, at the top of its event.
#[derive(Serialize)]
struct AlertFields {
    severity: Value,
    code: Value,
    message: Value,
    details: Value,
}

/// A `sensors.reading` event's data: the contract's `temperature_kelvin` (filtered; null for a
/// late reading, which is stored but not applied), `temperature_raw` (as sent),
/// `kalman_variance` and `quality`, with the rest of the lake's row.
fn reading_data(r: &ReadingRow) -> Value {
    let mut data = serde_json::to_value(r).unwrap_or(Value::Null);
    data["temperature_raw"] = json!(r.reading.temperature_kelvin);
    data["temperature_kelvin"] = json!(r.filtered_temperature_kelvin);
    data
}

/// A node's output: the `output.pwm` event (the contract's `duty_cycle` 0–255,
/// `duty_cycle_percent`, `koa_source`, `manual_override`), and the retained MQTT message the node
/// applies (with the period and phase it needs to keep the output going while offline).
///
/// A struct, not a `json!` map, because every state of every node makes one for the MQTT
/// output: serialised straight to bytes, with no map of a dozen allocated keys and values in
/// between. Its fields are in alphabetical order, the order the map wrote them in, so the bytes
/// nodes and subscribers get are the same.
#[derive(Debug, Serialize)]
pub struct PwmOutput<'a> {
    circadian_time: f64,
    duty_cycle: i32,
    duty_cycle_percent: f64,
    koa_metric: f64,
    koa_source: f64,
    manual_override: bool,
    node_id: &'a str,
    period_hours: f64,
    phase: f64,
    pwm_duty: i32,
    seq: Option<i64>,
    #[serde(with = "kaiabc_schemas::reading::rfc3339")]
    timestamp: chrono::DateTime<chrono::Utc>,
}

impl<'a> PwmOutput<'a> {
    /// The output of state `s`.
    pub fn of(s: &'a OscillatorState) -> Self {
        let duty = s.output_pwm.clamp(0, 255);
        Self {
            circadian_time: s.circadian_time,
            duty_cycle: duty,
            duty_cycle_percent: f64::from(duty) / 255.0 * 100.0,
            koa_metric: s.koa_metric,
            koa_source: s.koa_metric,
            manual_override: s.manual_override,
            node_id: &s.node_id,
            period_hours: s.period_hours,
            phase: s.phase,
            pwm_duty: s.output_pwm,
            seq: s.seq,
            timestamp: s.timestamp,
        }
    }
}

/// [`PwmOutput`] of `s` as a JSON value (for events and snapshots).
pub fn pwm_of(s: &OscillatorState) -> Value {
    serde_json::to_value(PwmOutput::of(s)).unwrap_or(Value::Null)
}

impl Hub {
    /// Each node's latest state.
    pub fn state(&self, node: &str) -> Option<OscillatorState> {
        let m = self.latest.lock().ok()?;
        m.get(node)?.state.as_ref().map(|(_, s)| s.clone())
    }

    /// A receiver that gets what the dataflow made of the reading of `node` at `micros` (with
    /// `seq`) once it is applied. Register before sending the reading in; a reading the
    /// dataflow drops (a duplicate, a dead letter) never resolves it, so wait with a timeout.
    /// Dropping the receiver is enough to give up: closed waiters are pruned as others come.
    pub fn await_applied(
        &self,
        node: &str,
        micros: i64,
        seq: Option<i64>,
    ) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            let list = w.entry(node.to_string()).or_default();
            let before = list.len();
            list.retain(|x| !x.tx.is_closed());
            self.waiters
                .fetch_sub((before - list.len()) as u64, Ordering::AcqRel);
            list.push(Waiter { micros, seq, tx });
            self.waiters.fetch_add(1, Ordering::AcqRel);
        }
        rx
    }

    /// Resolves the waiters of a reading just applied.
    fn resolve(&self, r: &kaiabc_schemas::ReadingRow) {
        let micros = r.reading.timestamp.timestamp_micros();
        self.settle(
            &r.reading.node_id,
            micros,
            |_| Some(r.reading.seq),
            || {
                Outcome::Applied(Applied {
                    temperature_kelvin: r.filtered_temperature_kelvin,
                    kalman_variance: r.kalman_variance,
                    humidity_percent: r.filtered_humidity_percent,
                    pressure_pa: r.filtered_pressure_pa,
                })
            },
        );
    }

    /// Resolves the waiters of a reading the node's clock or filter failed on. The dead
    /// letter's `received_at` is the reading's event time; its seq is read from the payload,
    /// only when a waiter is there to need it (a rare path).
    fn fail(&self, d: &kaiabc_schemas::DeadLetter) {
        use kaiabc_schemas::Reason;
        let (Reason::OdeInstability | Reason::FilterDivergence, Some(node)) =
            (d.reason, &d.node_id)
        else {
            return;
        };
        let seq = |_: ()| {
            serde_json::from_str::<Value>(&d.payload)
                .ok()
                .map(|v| v.get("seq").and_then(Value::as_i64))
        };
        self.settle(node, d.received_at.timestamp_micros(), seq, || {
            Outcome::Failed {
                reason: d.reason,
                message: d.message.clone(),
            }
        });
    }

    /// Sends `outcome` to the waiters of `node`'s reading at `micros` whose seq is `seq` (read
    /// only if a waiter for that time exists; `None` matches nothing), and prunes closed ones.
    fn settle(
        &self,
        node: &str,
        micros: i64,
        seq: impl FnOnce(()) -> Option<Option<i64>>,
        outcome: impl Fn() -> Outcome,
    ) {
        if self.waiters.load(Ordering::Acquire) == 0 {
            return;
        }
        let Ok(mut w) = self.waiting.lock() else {
            return;
        };
        let Some(list) = w.get_mut(node) else {
            return;
        };
        let seq = if list.iter().any(|x| x.micros == micros) {
            seq(())
        } else {
            None
        };
        let before = list.len();
        let mut i = 0;
        while i < list.len() {
            if list[i].micros == micros && Some(list[i].seq) == seq {
                let x = list.swap_remove(i);
                let _ = x.tx.send(outcome());
            } else if list[i].tx.is_closed() {
                list.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.waiters
            .fetch_sub((before - list.len()) as u64, Ordering::AcqRel);
        if list.is_empty() {
            w.remove(node);
        }
    }

    /// A node's latest state with the KOA of the state before it.
    pub fn state_with_prev(&self, node: &str) -> Option<(OscillatorState, Option<f64>)> {
        let m = self.latest.lock().ok()?;
        let l = m.get(node)?;
        l.state.as_ref().map(|(_, s)| (s.clone(), l.prev_koa))
    }

    /// A node's filter after its latest applied reading, with that reading's time.
    pub fn filter(
        &self,
        node: &str,
    ) -> Option<(
        chrono::DateTime<chrono::Utc>,
        kaiabc_schemas::FilterSnapshot,
    )> {
        let m = self.latest.lock().ok()?;
        let (_, r) = m.get(node)?.reading.as_ref()?;
        r.filter
            .as_ref()
            .map(|f| (r.reading.timestamp, (**f).clone()))
    }

    /// The firmware version a node's latest reading reported.
    pub fn reported_firmware(&self, node: &str) -> Option<String> {
        let m = self.latest.lock().ok()?;
        let (_, r) = m.get(node)?.reading.as_ref()?;
        r.reading.firmware_version.clone()
    }

    /// Counts `patterns` in (or out of) the interest of their families.
    fn interest_in(&self, patterns: &[String], add: bool) {
        for p in patterns {
            for f in families_of(p) {
                if add {
                    self.interest[f].fetch_add(1, Ordering::AcqRel);
                } else {
                    self.interest[f].fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// The newest event time the hub has seen of a node: its latest reading or state.
    pub fn last_event_time(&self, node: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let m = self.latest.lock().ok()?;
        let l = m.get(node)?;
        let r = l.reading.as_ref().map(|(_, r)| r.reading.timestamp);
        let s = l.state.as_ref().map(|(_, s)| s.timestamp);
        r.max(s)
    }

    /// The ids of the nodes with a state.
    pub fn nodes(&self) -> Vec<String> {
        let Ok(m) = self.latest.lock() else {
            return Vec::new();
        };
        let mut v: Vec<String> = m
            .iter()
            .filter(|(_, l)| l.state.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Sets a node's state without publishing it (restored from a checkpoint).
    pub fn seed(&self, s: &OscillatorState) {
        if let Ok(mut m) = self.latest.lock() {
            m.entry(s.node_id.clone()).or_default().state = Some((0, s.clone()));
        }
    }

    /// Whether anyone subscribes to the fleet's streams (their values are rendered only then).
    pub fn fleet_interest(&self) -> bool {
        self.interest[FLEET_SUMMARY].load(Ordering::Acquire) > 0
            || self.interest[FLEET_GROUP].load(Ordering::Acquire) > 0
    }

    /// Sends a fleet stream's new value (its book assigned `seq`) to its subscribers.
    pub fn publish_fleet(&self, stream: &str, seq: u64, data: &Value) {
        // No subscriber is not an error.
        let _ = self.tx.send(Arc::new(Published::event(stream, seq, data)));
    }

    /// Sends an `alert` event (the fleet's alerts, raised or cleared) to its subscribers.
    pub fn alert(&self, data: &Value) {
        let seq = self.alerts.fetch_add(1, Ordering::Relaxed) + 1;
        if self.interest[ALERT].load(Ordering::Acquire) == 0 {
            return;
        }
        // No subscriber is not an error.
        let _ = self.tx.send(Arc::new(Published::event("alert", seq, data)));
    }

    /// Publishes what a lake row means to subscribers: a state (and its PWM output), a
    /// reading, or an alert for a dead letter. Never blocks.
    pub fn publish(&self, row: &LakeRow) {
        let mut out: Vec<Published> = Vec::new();
        {
            let Ok(mut m) = self.latest.lock() else {
                return;
            };
            // Events are serialised only for someone: without a subscriber to a family the
            // latest values and sequence numbers are kept (for snapshots) and nothing else is
            // done. Checked under the lock a subscriber takes its snapshot under, after it has
            // registered its interest, so it gets either the event or a snapshot covering it.
            let wants = |family: usize| self.interest[family].load(Ordering::Acquire) > 0;
            match row {
                LakeRow::State(s) => {
                    let l = latest_of(&mut m, &s.node_id);
                    let seq = l.state.as_ref().map_or(0, |(q, _)| *q) + 1;
                    l.prev_koa = l.state.as_ref().map(|(_, p)| p.koa_metric);
                    l.state = Some((seq, s.clone()));
                    let mut events = Vec::new();
                    if wants(STATE) {
                        let data = serde_json::to_value(s).unwrap_or(Value::Null);
                        events.push((format!("oscillator.state.{}", s.node_id), data));
                    }
                    if wants(PWM) {
                        events.push((format!("output.pwm.{}", s.node_id), pwm_of(s)));
                    }
                    for (stream, data) in events {
                        out.push(Published::event(stream, seq, &data));
                    }
                }
                LakeRow::Reading(r) => {
                    self.resolve(r);
                    let node = &r.reading.node_id;
                    let l = latest_of(&mut m, node);
                    let seq = l.reading.as_ref().map_or(0, |(q, _)| *q) + 1;
                    let mut row = r.clone();
                    if row.filter.is_none() {
                        // A late or paused reading leaves the filter as it was.
                        row.filter = l.reading.as_mut().and_then(|(_, p)| p.filter.take());
                    }
                    l.reading = Some((seq, row));
                    if !wants(READING) {
                        return;
                    }
                    let stream = format!("sensors.reading.{node}");
                    let data = reading_data(r);
                    out.push(Published::event(stream, seq, &data));
                }
                LakeRow::DeadLetter(d) => {
                    self.fail(d);
                    let seq = self.alerts.fetch_add(1, Ordering::Relaxed) + 1;
                    if !wants(ALERT) {
                        return;
                    }
                    let data = json!({
                        "severity": "warning",
                        "code": d.reason,
                        "node_id": d.node_id,
                        "source": d.source,
                        "message": d.message,
                        "timestamp": kaiabc_schemas::format_timestamp(&d.received_at),
                    });
                    out.push(Published::event("alert", seq, &data));
                }
                LakeRow::PhaseShift(p) => {
                    let seq = self.shifts.fetch_add(1, Ordering::Relaxed) + 1;
                    if !wants(SHIFT) {
                        return;
                    }
                    let data = serde_json::to_value(p).unwrap_or(Value::Null);
                    out.push(Published::event(PHASE_SHIFT_STREAM, seq, &data));
                }
                // The fleet's alerts reach subscribers from the fleet's book (`Hub::alert`).
                LakeRow::Rhythm(_)
                | LakeRow::Checkpoint(_)
                | LakeRow::Fleet(_)
                | LakeRow::Alert(_) => {}
            }
        }
        for p in out {
            // No subscriber is not an error.
            let _ = self.tx.send(Arc::new(p));
        }
    }

    /// The current value of every stream matching `patterns`: `(stream, seq, data)`.
    fn snapshot(&self, patterns: &[String]) -> Vec<(String, u64, Value)> {
        let mut out = self.node_snapshot(patterns);
        if let Some(fleet) = self.fleet.get() {
            out.extend((fleet.0)(&|stream: &str| matches_any(patterns, stream)));
        }
        out
    }

    /// [`Hub::snapshot`] of the nodes' streams.
    fn node_snapshot(&self, patterns: &[String]) -> Vec<(String, u64, Value)> {
        let Ok(m) = self.latest.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut nodes: Vec<&String> = m.keys().collect();
        nodes.sort();
        for node in nodes {
            let l = &m[node];
            if let Some((seq, s)) = &l.state {
                let st = format!("oscillator.state.{node}");
                if matches_any(patterns, &st) {
                    out.push((st, *seq, serde_json::to_value(s).unwrap_or(Value::Null)));
                }
                let pw = format!("output.pwm.{node}");
                if matches_any(patterns, &pw) {
                    out.push((pw, *seq, pwm_of(s)));
                }
            }
            if let Some((seq, r)) = &l.reading {
                let st = format!("sensors.reading.{node}");
                if matches_any(patterns, &st) {
                    out.push((st, *seq, reading_data(r)));
                }
            }
        }
        out
    }

    /// A new subscriber's id and its writer (the writers start with the first subscriber).
    fn writer(self: &Arc<Self>) -> (u64, tokio::sync::mpsc::Sender<writer::Attach>) {
        let writers = self.writers.get_or_init(|| {
            (0..writer::writers())
                .map(|_| writer::spawn(self))
                .collect()
        });
        let id = self.subscribers.fetch_add(1, Ordering::Relaxed);
        (id, writers[id as usize % writers.len()].clone())
    }

    /// Tells every client to close (the server is stopping).
    pub fn close_all(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// `node`'s latest values, added if it has none: its id is copied only the first time (an
/// `entry` copied it for every state and reading).
fn latest_of<'m>(
    m: &'m mut foldhash::HashMap<String, NodeLatest>,
    node: &str,
) -> &'m mut NodeLatest {
    if !m.contains_key(node) {
        m.insert(node.to_owned(), NodeLatest::default());
    }
    m.get_mut(node).expect("inserted above")
}

/// Glob matching where `*` matches any run of characters (`oscillator.state.*`, `*`).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn matches_any(patterns: &[String], stream: &str) -> bool {
    patterns.iter().any(|p| glob(p, stream))
}

/// Whether a pattern can match any stream of a known family.
fn valid_pattern(p: &str) -> bool {
    if p.is_empty() || p.len() > 256 {
        return false;
    }
    if let Some(star) = p.find('*') {
        // A wildcard pattern is valid if what precedes its first `*` could begin a stream.
        let head = &p[..star];
        return FAMILIES
            .iter()
            .any(|f| f.starts_with(head) || head.starts_with(f));
    }
    FAMILIES.iter().any(|f| {
        if f.ends_with('.') {
            p.strip_prefix(f).is_some_and(|node| !node.is_empty())
        } else {
            p == *f
        }
    })
}

/// The specification's stream names for our families: a client may subscribe by either, and
/// gets our events (`sensors.reading` carries the filtered temperature; `output.pwm` the duty
/// that KOA maps to).
const ALIASES: [(&str, &str); 2] = [
    ("sensors.temperature.", "sensors.reading."),
    ("output.koa.", "output.pwm."),
];

/// `p` in our stream names: a specification alias rewritten, anything else as it is.
fn canonical(p: &str) -> String {
    ALIASES
        .iter()
        .find_map(|(alias, ours)| p.strip_prefix(alias).map(|rest| format!("{ours}{rest}")))
        .unwrap_or_else(|| p.to_string())
}

/// What a client's message asks for.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Ask {
    /// Add stream patterns; answered with an `ack` holding their snapshot.
    Subscribe,
    /// Drop stream patterns; answered with an `ack` listing what is left.
    Unsubscribe,
    /// Answered with a `pong`.
    Ping,
}

/// A client's message: `{"type" | "action": "subscribe" | "unsubscribe" | "ping", "streams"}`
/// (the specification's clients send `action`).
#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type", alias = "action")]
    ask: Ask,
    #[serde(default)]
    streams: Vec<String>,
}

/// Why a client's message is refused: the `error` reply's code and message.
#[derive(Debug, thiserror::Error)]
enum WsError {
    /// Not JSON, or not a message this server knows.
    #[error("{0}")]
    InvalidMessage(String),
    /// A stream pattern that names no stream.
    #[error("unknown stream {0:?}; streams are oscillator.state.{{node}}, sensors.reading.{{node}} (or sensors.temperature.{{node}}), output.pwm.{{node}} (or output.koa.{{node}}), alert, phase_shift.complete, fleet.summary, fleet.group.{{by}}.{{value}}, with * wildcards")]
    InvalidStream(String),
    /// More patterns than a client may hold.
    #[error("a client may hold at most {MAX_PATTERNS} stream patterns (it has {held}, and asked for {asked} more); use wildcards")]
    TooManyStreams {
        /// Patterns it holds.
        held: usize,
        /// New patterns it asked for.
        asked: usize,
    },
}

impl WsError {
    /// The stable code of the `error` reply.
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidMessage(_) => "INVALID_MESSAGE",
            Self::InvalidStream(_) => "INVALID_STREAM",
            Self::TooManyStreams { .. } => "TOO_MANY_STREAMS",
        }
    }

    /// The `error` reply.
    fn text(&self) -> String {
        ServerMessage::Error {
            error: ErrorBody {
                code: self.code(),
                message: self.to_string(),
                timestamp: kaiabc_schemas::format_timestamp(&chrono::Utc::now()),
            },
        }
        .text()
    }
}

/// One client's subscriptions and the last sequence number it was sent per stream.
#[derive(Default)]
struct Client {
    patterns: Vec<String>,
    last: HashMap<String, u64>,
}

impl Client {
    /// The latest item of each stream the client's patterns match, noting each one's sequence
    /// number as sent.
    fn snapshot(&mut self, hub: &Hub) -> Vec<SnapshotItem> {
        hub.snapshot(&self.patterns)
            .into_iter()
            .map(|(stream, seq, data)| {
                self.last.insert(stream.clone(), seq);
                SnapshotItem { stream, seq, data }
            })
            .collect()
    }

    /// The `resync` of a client that fell `missed` events behind.
    fn resync(&mut self, hub: &Hub, missed: u64) -> String {
        ServerMessage::Resync {
            missed,
            snapshot: self.snapshot(hub),
        }
        .text()
    }

    /// Handles a text message from the client; returns the reply.
    fn handle(&mut self, hub: &Hub, text: &str) -> String {
        self.answer(hub, text).unwrap_or_else(|e| e.text())
    }

    fn answer(&mut self, hub: &Hub, text: &str) -> Result<String, WsError> {
        let msg: ClientMessage = serde_json::from_str(text).map_err(|e| {
            WsError::InvalidMessage(format!("{e} (messages: subscribe, unsubscribe, ping)"))
        })?;
        if msg.ask != Ask::Ping && msg.streams.is_empty() {
            return Err(WsError::InvalidMessage(
                "streams must list at least one stream".into(),
            ));
        }
        let streams: Vec<String> = msg.streams.iter().map(|p| canonical(p)).collect();
        Ok(match msg.ask {
            Ask::Ping => ServerMessage::Pong.text(),
            Ask::Subscribe => {
                if let Some(bad) = streams.iter().find(|s| !valid_pattern(s)) {
                    return Err(WsError::InvalidStream(bad.clone()));
                }
                let mut new: Vec<String> = streams
                    .iter()
                    .filter(|s| !self.patterns.contains(s))
                    .cloned()
                    .collect();
                new.sort();
                new.dedup();
                if self.patterns.len() + new.len() > MAX_PATTERNS {
                    return Err(WsError::TooManyStreams {
                        held: self.patterns.len(),
                        asked: new.len(),
                    });
                }
                hub.interest_in(&new, true);
                self.patterns.extend(new.iter().cloned());
                // The snapshot covers the new patterns only; it also sets the sequence numbers
                // below which buffered events are skipped.
                let mut only_new = Client {
                    patterns: new,
                    last: HashMap::new(),
                };
                let reply = ServerMessage::Ack {
                    action: Ask::Subscribe,
                    streams: &msg.streams,
                    snapshot: Some(only_new.snapshot(hub)),
                    subscriptions: None,
                }
                .text();
                for (k, v) in only_new.last {
                    let e = self.last.entry(k).or_insert(v);
                    *e = (*e).max(v);
                }
                reply
            }
            Ask::Unsubscribe => {
                let gone: HashSet<&String> = streams.iter().collect();
                let removed: Vec<String> = self
                    .patterns
                    .iter()
                    .filter(|p| gone.contains(p))
                    .cloned()
                    .collect();
                hub.interest_in(&removed, false);
                self.patterns.retain(|p| !gone.contains(p));
                ServerMessage::Ack {
                    action: Ask::Unsubscribe,
                    streams: &msg.streams,
                    snapshot: None,
                    subscriptions: Some(&self.patterns),
                }
                .text()
            }
        })
    }

    /// Whether to send `p`: subscribed, and newer than what the client has.
    fn wants(&mut self, p: &Published) -> bool {
        if !matches_any(&self.patterns, &p.stream) {
            return false;
        }
        // Looked up before it is inserted: a key is cloned once per stream, not per event (with
        // 10 000 subscribers, that was 10 000 allocations an event).
        match self.last.get_mut(&p.stream) {
            Some(last) if p.seq <= *last => false,
            Some(last) => {
                *last = p.seq;
                true
            }
            None => {
                self.last.insert(p.stream.clone(), p.seq);
                true
            }
        }
    }
}

/// Serves one WebSocket client until it leaves or the server stops: its socket goes to one of
/// the hub's writers ([`writer`]), and this task waits, without waking, until the writer lets
/// it go.
pub async fn serve_client<S>(socket: tokio_tungstenite::WebSocketStream<S>, hub: Arc<Hub>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (id, writer) = hub.writer();
    let (released, done) = tokio::sync::oneshot::channel();
    let attach = writer::Attach {
        id,
        socket: Box::pin(socket),
        released,
    };
    if writer.send(attach).await.is_ok() {
        let _ = done.await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "oscillator.state.n1"));
        assert!(glob("oscillator.state.*", "oscillator.state.n1"));
        assert!(!glob("oscillator.state.*", "output.pwm.n1"));
        assert!(glob("*.n1", "output.pwm.n1"));
        assert!(!glob("*.n1", "output.pwm.n10"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("alert", "alert"));
    }

    /// Events carry the specification's envelope beside our stream and sequence number.
    #[test]
    fn events_carry_the_specifications_envelope() {
        let state: Value = serde_json::from_str(&event_text(
            "oscillator.state.n1",
            7,
            &json!({"node_id": "n1", "timestamp": "2026-01-05T10:00:00.000000Z", "phase": 0.25}),
        ))
        .unwrap();
        assert_eq!(state["event"], "oscillator.state");
        assert_eq!(state["node_id"], "n1");
        assert_eq!(state["timestamp"], "2026-01-05T10:00:00.000000Z");
        assert_eq!(state["data"]["phase"], 0.25);
        assert_eq!(
            (state["stream"].as_str(), state["seq"].as_u64()),
            (Some("oscillator.state.n1"), Some(7))
        );
        // A node id comes from the stream when the data has none.
        let pwm: Value =
            serde_json::from_str(&event_text("output.pwm.n-2", 1, &json!({}))).unwrap();
        assert_eq!(
            (pwm["event"].as_str(), pwm["node_id"].as_str()),
            (Some("output.pwm"), Some("n-2"))
        );
        assert!(pwm["timestamp"].is_string());
        let alert: Value = serde_json::from_str(&event_text(
            "alert",
            3,
            &json!({"severity": "warning", "code": "OUT_OF_RANGE", "message": "too hot",
                    "node_id": "n1", "source": "mqtt:kaiabc/sensors/n1",
                    "timestamp": "2026-01-05T10:00:00.000000Z"}),
        ))
        .unwrap();
        assert_eq!(alert["event"], "alert");
        assert_eq!(
            (alert["severity"].as_str(), alert["code"].as_str()),
            (Some("warning"), Some("OUT_OF_RANGE"))
        );
        assert_eq!(alert["message"], "too hot");
        assert_eq!(alert["details"]["source"], "mqtt:kaiabc/sensors/n1");
        let shift: Value = serde_json::from_str(&event_text(
            PHASE_SHIFT_STREAM,
            1,
            &json!({"shift_id": "shift_1", "node_id": "n1"}),
        ))
        .unwrap();
        assert_eq!(
            (shift["event"].as_str(), shift["shift_id"].as_str()),
            (Some("phase_shift.complete"), Some("shift_1"))
        );
    }

    /// The specification's client protocol: `action` instead of `type`, and its stream names
    /// `sensors.temperature.{node}` and `output.koa.{node}` for our reading and PWM streams.
    #[test]
    fn the_specifications_action_and_stream_names_are_understood() {
        let hub = Hub::default();
        let mut c = Client::default();
        let ack: Value = serde_json::from_str(&c.handle(
            &hub,
            r#"{"action": "subscribe", "streams": ["sensors.temperature.n1", "output.koa.*", "oscillator.state.n1"]}"#,
        ))
        .unwrap();
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(
            ack["streams"][0], "sensors.temperature.n1",
            "the ack names what was asked"
        );
        assert_eq!(
            c.patterns,
            ["oscillator.state.n1", "output.pwm.*", "sensors.reading.n1"]
        );
        assert!(matches_any(&c.patterns, "sensors.reading.n1"));
        assert!(matches_any(&c.patterns, "output.pwm.n7"));
        let ack: Value = serde_json::from_str(&c.handle(
            &hub,
            r#"{"action": "unsubscribe", "streams": ["output.koa.*"]}"#,
        ))
        .unwrap();
        assert_eq!(
            ack["subscriptions"],
            json!(["oscillator.state.n1", "sensors.reading.n1"])
        );
        let bad = c.handle(
            &hub,
            r#"{"action": "subscribe", "streams": ["sensors.humidity.n1"]}"#,
        );
        assert!(bad.contains("INVALID_STREAM"), "{bad}");
    }

    #[test]
    fn a_client_holds_a_bounded_number_of_patterns() {
        let hub = Hub::default();
        let mut c = Client {
            patterns: Vec::new(),
            last: HashMap::new(),
        };
        let many: Vec<String> = (0..MAX_PATTERNS + 1)
            .map(|i| format!("oscillator.state.n{i}"))
            .collect();
        let ask = |streams: &[String]| json!({"type": "subscribe", "streams": streams}).to_string();
        let refused = c.handle(&hub, &ask(&many));
        assert!(refused.contains("TOO_MANY_STREAMS"), "{refused}");
        assert!(c.patterns.is_empty());
        let ok = c.handle(&hub, &ask(&many[..MAX_PATTERNS]));
        assert!(ok.contains("\"ack\""), "{ok}");
        let more = c.handle(&hub, &ask(&many[MAX_PATTERNS..]));
        assert!(more.contains("TOO_MANY_STREAMS"), "{more}");
        assert_eq!(c.patterns.len(), MAX_PATTERNS);
    }

    #[test]
    fn patterns_must_name_a_stream_family() {
        for ok in [
            "oscillator.state.pico_001",
            "oscillator.state.*",
            "*",
            "alert",
            "phase_shift.complete",
            "*.pico_001",
            "output.pwm.*",
        ] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in ["", "oscillator.state.", "temperature", "temp*", "alerts"] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }

    /// A request waiting for a reading the node's clock fails on is told so, by the dead
    /// letter's node, event time and seq; a waiter for another seq of the same time is not.
    #[test]
    fn a_reading_the_clock_failed_on_resolves_its_waiter_with_the_failure() {
        use kaiabc_schemas::{DeadLetter, Reason, Rejection};
        let hub = Hub::default();
        let at: chrono::DateTime<chrono::Utc> = "2026-01-05T10:00:00Z".parse().unwrap();
        let mut mine = hub.await_applied("n1", at.timestamp_micros(), Some(7));
        let mut other = hub.await_applied("n1", at.timestamp_micros(), Some(8));
        let letter = |reason| {
            LakeRow::DeadLetter(DeadLetter::new(
                at,
                "node:n1",
                br#"{"node_id":"n1","timestamp":"2026-01-05T10:00:00Z","seq":7}"#,
                Rejection::new(reason, "non-finite state".to_string()).for_node("n1"),
            ))
        };
        // A duplicate is not a failure of the node: nothing is resolved.
        hub.publish(&letter(Reason::Duplicate));
        assert!(mine.try_recv().is_err());
        hub.publish(&letter(Reason::OdeInstability));
        assert_eq!(
            mine.try_recv().unwrap(),
            Outcome::Failed {
                reason: Reason::OdeInstability,
                message: "non-finite state".into()
            }
        );
        assert!(other.try_recv().is_err(), "seq 8 is another reading");
    }

    /// A state of `node` with `seq` (for tests here and in the dataflow).
    pub(crate) fn state(node: &str, seq: i64) -> LakeRow {
        let mut s: OscillatorState = serde_json::from_value(json!({
            "node_id": node, "timestamp": "2026-01-05T10:00:00Z", "seq": seq,
            "circadian_time": 1.0, "phase": 0.04, "period_hours": 24.0,
            "state_variables": {"C_U": 1.0, "C_S": 0.0, "C_T": 0.0, "C_ST": 0.0,
                "A_free": 0.5, "CABC_complex": 0.0},
            "koa_metric": 0.5, "output_pwm": 128, "entrainment_active": true,
            "temperature_kelvin": 300.0, "raw_temperature_kelvin": 300.0,
            "kalman_variance": 0.01
        }))
        .unwrap();
        s.seq = Some(seq);
        LakeRow::State(s)
    }

    #[test]
    fn a_nodes_output_is_the_map_it_was_built_as() {
        // The output as it was built before it was a struct (a `json!` map, whose keys
        // serde_json writes in alphabetical order): nodes' firmware and subscribers read it.
        let as_map = |s: &OscillatorState| {
            let duty = s.output_pwm.clamp(0, 255);
            json!({
                "duty_cycle": duty,
                "duty_cycle_percent": f64::from(duty) / 255.0 * 100.0,
                "koa_source": s.koa_metric,
                "manual_override": s.manual_override,
                "node_id": s.node_id,
                "timestamp": kaiabc_schemas::format_timestamp(&s.timestamp),
                "seq": s.seq,
                "pwm_duty": s.output_pwm,
                "koa_metric": s.koa_metric,
                "circadian_time": s.circadian_time,
                "phase": s.phase,
                "period_hours": s.period_hours,
            })
            .to_string()
        };
        let LakeRow::State(mut s) = state("a", 7) else {
            unreachable!()
        };
        for (pwm, seq, manual) in [
            (128, Some(7), false),
            (300, None, true),
            (-4, Some(1), false),
        ] {
            s.output_pwm = pwm;
            s.seq = seq;
            s.manual_override = manual;
            let bytes = serde_json::to_vec(&PwmOutput::of(&s)).unwrap();
            assert_eq!(String::from_utf8(bytes).unwrap(), as_map(&s));
        }
    }

    #[test]
    fn a_lagging_client_is_resynced_with_a_snapshot_and_skips_what_it_covers() {
        let hub = Hub::default();
        let mut rx = hub.tx.subscribe();
        let mut c = Client::default();
        let ack: Value = serde_json::from_str(&c.handle(
            &hub,
            r#"{"type":"subscribe","streams":["oscillator.state.*"]}"#,
        ))
        .unwrap();
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["snapshot"], json!([]));
        // One event per state (only the state family is subscribed, so no PWM events are
        // made): twice the buffer overflows it by one buffer.
        let n = 2 * CLIENT_BUFFER as i64;
        for k in 1..=n {
            hub.publish(&state("a", k));
        }
        let missed = match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(m)) => m,
            other => panic!("expected a lag, got {other:?}"),
        };
        assert_eq!(missed, CLIENT_BUFFER as u64);
        let resync: Value = serde_json::from_str(&c.resync(&hub, missed)).unwrap();
        assert_eq!(resync["type"], "resync");
        assert_eq!(resync["snapshot"][0]["stream"], "oscillator.state.a");
        assert_eq!(resync["snapshot"][0]["seq"], n);
        assert_eq!(resync["snapshot"][0]["data"]["seq"], n);
        // What is still buffered is older than the snapshot and skipped; newer events go out.
        let mut sent = Vec::new();
        hub.publish(&state("a", n + 1));
        loop {
            match rx.try_recv() {
                Ok(p) if c.wants(&p) => sent.push((p.stream.clone(), p.seq)),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        assert_eq!(sent, vec![("oscillator.state.a".to_string(), n as u64 + 1)]);
    }

    #[test]
    fn events_are_made_only_for_families_someone_subscribes_to() {
        let hub = Hub::default();
        let mut rx = hub.tx.subscribe();
        hub.publish(&state("a", 1));
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        let mut c = Client::default();
        c.handle(&hub, r#"{"type":"subscribe","streams":["output.pwm.a"]}"#);
        hub.publish(&state("a", 2));
        let p = rx.try_recv().unwrap();
        // Only the PWM event was made, with the state's sequence number.
        assert_eq!((p.stream.as_str(), p.seq), ("output.pwm.a", 2));
        assert!(rx.try_recv().is_err());
        c.handle(&hub, r#"{"type":"unsubscribe","streams":["output.pwm.a"]}"#);
        hub.publish(&state("a", 3));
        assert!(rx.try_recv().is_err());
        // A wildcard across families counts for each of them.
        c.handle(&hub, r#"{"type":"subscribe","streams":["*"]}"#);
        hub.publish(&state("a", 4));
        let streams: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|p| p.stream.clone())
            .collect();
        assert_eq!(streams, ["oscillator.state.a", "output.pwm.a"]);
    }

    #[test]
    fn bad_messages_get_error_replies() {
        let hub = Hub::default();
        let mut c = Client::default();
        for (msg, code) in [
            ("not json", "INVALID_MESSAGE"),
            (r#"{"type":"subscribe","streams":[]}"#, "INVALID_MESSAGE"),
            (
                r#"{"type":"subscribe","streams":["temperature.x"]}"#,
                "INVALID_STREAM",
            ),
            (r#"{"type":"dance"}"#, "INVALID_MESSAGE"),
        ] {
            let v: Value = serde_json::from_str(&c.handle(&hub, msg)).unwrap();
            assert_eq!(v["type"], "error", "{msg}");
            assert_eq!(v["error"]["code"], code, "{msg}");
        }
        let v: Value = serde_json::from_str(&c.handle(&hub, r#"{"type":"ping"}"#)).unwrap();
        assert_eq!(v["type"], "pong");
        assert!(c.patterns.is_empty());
    }

    #[test]
    fn a_client_gets_newer_events_once_and_only_for_its_streams() {
        let mut c = Client {
            patterns: vec!["oscillator.state.*".into()],
            last: HashMap::from([("oscillator.state.a".to_string(), 4)]),
        };
        let p = |stream: &str, seq| Published {
            stream: stream.into(),
            seq,
            message: Message::text(String::new()),
        };
        assert!(!c.wants(&p("oscillator.state.a", 4)), "covered by snapshot");
        assert!(c.wants(&p("oscillator.state.a", 5)));
        assert!(!c.wants(&p("oscillator.state.a", 5)), "twice");
        assert!(c.wants(&p("oscillator.state.b", 1)));
        assert!(!c.wants(&p("output.pwm.a", 9)), "not subscribed");
    }
}
