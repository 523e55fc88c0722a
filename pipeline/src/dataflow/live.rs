//! The live dataflow: readings from MQTT through the same operators as a replay, each node's
//! state emitted as soon as its reading is applied, the lake committed every few seconds.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use kaiabc_connectors::file::LineParser;
use kaiabc_connectors::kafka::{
    KafkaProducer, KafkaSource, Offsets, DEAD_LETTERS_TOPIC, STATES_TOPIC,
};
use kaiabc_connectors::lake::{existing_keys, CheckpointWriter, LakeConfig, LakeWriter, Restored};
use kaiabc_connectors::mqtt::{MqttMessage, MqttOutput};
use kaiabc_operators::dataflow::{node_hash, Checkpointing, NodeStats, Ordering};
use kaiabc_operators::node::NodeConfig;
use kaiabc_schemas::{parse_timestamp, LakeRow, Reason, Rejection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::Inspect;

use crate::metrics::{Metrics, WorkerFigures};
use crate::ws::Hub;

use super::lake_sink::{LakeSink, SinkOptions, SinkReport};
use super::parse::{Incoming, LogFile, ParseStats};
use super::{lake_rows, tick_of};

/// An event for the live dataflow, from MQTT or HTTP.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// Where it came from (`mqtt:TOPIC`, `http:PATH`), for dead letters.
    pub source: String,
    /// The node the transport vouches for (the topic's node, the API key's node); `Err` with
    /// the reason when the transport names none.
    pub node: Result<String, String>,
    /// The payload: one reading, or a JSON array of them.
    pub payload: Vec<u8>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

impl From<MqttMessage> for Inbound {
    fn from(m: MqttMessage) -> Self {
        let node = match &m.refused {
            Some(why) => Err(why.clone()),
            None => m
                .topic_node()
                .map(str::to_string)
                .ok_or_else(|| format!("topic {:?} is not kaiabc/sensors/{{node_id}}", m.topic)),
        };
        Self {
            source: format!("mqtt:{}", m.topic),
            node,
            payload: m.payload,
            received_at: m.received_at,
        }
    }
}

/// How long the source's worker parks when neither the source nor the dataflow has work: the
/// most a newly arrived message waits before it enters the dataflow.
pub const IDLE_PARK: Duration = Duration::from_millis(1);

/// On stop, the source is drained until it has delivered nothing for this long.
pub const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// How long a Kafka checkpoint round may take (the dataflow draining what was sent, then every
/// worker saving its checkpoint) before it is abandoned; offsets are then not committed, which
/// is always safe.
pub const ALIGN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the live dataflow's events come from.
pub enum LiveSource {
    /// Straight from the embedded broker, the MQTT client and HTTP ingest.
    Channel(Receiver<Inbound>),
    /// From `kaiabc.readings`, offsets committed at aligned checkpoints.
    Kafka(Box<KafkaSource>),
}

/// How the live dataflow runs.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// The lake.
    pub lake: LakeConfig,
    /// Allowed lateness of event time (for day rolls of the lake).
    pub lateness: Duration,
    /// Wall time between lake commits (each one also saves the changed nodes' checkpoints).
    pub commit_every: Duration,
    /// Write the lake on a thread per worker (see [`SinkOptions::background`]).
    pub background_writer: bool,
}

impl LiveShared {
    /// Serves the restored nodes' latest states until their next readings arrive.
    pub fn seed(&self, restored: &Restored) {
        for s in restored.latest() {
            self.hub.seed(s);
        }
    }
}

/// What the live dataflow shares with the HTTP server.
#[derive(Debug, Default)]
pub struct LiveShared {
    /// Each node's latest values, and the WebSocket fan-out.
    pub hub: Arc<Hub>,
    /// Set to stop: sources stop, in-flight events are processed, the lake is committed.
    pub stop: AtomicBool,
    /// The metrics served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Where each node's output is published (retained), once the broker runs.
    pub output: std::sync::OnceLock<Arc<MqttOutput>>,
    /// Where states and dead letters are published in Kafka mode.
    pub kafka: std::sync::OnceLock<KafkaProducer>,
}

impl LiveShared {
    /// Publishes a row to the WebSocket hub, the metrics, the MQTT output and Kafka.
    fn publish(&self, row: &LakeRow) {
        self.hub.publish(row);
        self.metrics.observe(row);
        match row {
            LakeRow::State(s) => {
                if let Some(out) = self.output.get() {
                    let topic = format!("kaiabc/nodes/{}/output", s.node_id);
                    let payload = crate::ws::pwm_of(s).to_string().into_bytes();
                    if let Err(e) = out.publish_retained(&topic, payload) {
                        tracing::warn!(error = %e, node = %s.node_id, "MQTT output");
                    }
                }
                if let Some(k) = self.kafka.get() {
                    match serde_json::to_vec(s) {
                        Ok(json) => {
                            if let Err(e) = k.send(STATES_TOPIC, Some(&s.node_id), &json, &[], None)
                            {
                                tracing::warn!(error = %e, node = %s.node_id, "Kafka states");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "encoding a state"),
                    }
                }
            }
            LakeRow::DeadLetter(d) => {
                if let (Some(k), Ok(json)) = (self.kafka.get(), serde_json::to_vec(d)) {
                    if let Err(e) =
                        k.send(DEAD_LETTERS_TOPIC, d.node_id.as_deref(), &json, &[], None)
                    {
                        tracing::warn!(error = %e, "Kafka dead letters");
                    }
                }
            }
            _ => {}
        }
    }
}

/// What a live run did, when it stopped.
#[derive(Debug, Default)]
pub struct LiveSummary {
    /// Events received.
    pub events_in: u64,
    /// Readings applied to a clock.
    pub applied: u64,
    /// Rejections by reason.
    pub rejected: BTreeMap<Reason, u64>,
    /// Lake files and rows committed.
    pub files_committed: usize,
    /// Rows committed.
    pub rows_committed: usize,
    /// Nodes resumed from their checkpoints.
    pub nodes_restored: u64,
    /// Node checkpoints saved.
    pub checkpoints_saved: u64,
}

#[derive(Default)]
struct WorkerResult {
    nodes: NodeStats,
    parse: ParseStats,
    sink: SinkReport,
}

/// Runs the live dataflow on messages from `rx` until `shared.stop` is set (or every sender is
/// gone), then drains it and commits the lake. Nodes resume from `restored` (opened from the
/// lake's checkpoints), and every commit saves the checkpoints of the nodes that changed.
pub fn run_live(
    opts: LiveOptions,
    node_cfg: NodeConfig,
    source: LiveSource,
    shared: Arc<LiveShared>,
    restored: &Restored,
) -> Result<LiveSummary> {
    let aligned = matches!(source, LiveSource::Kafka(_));
    // Kafka mode: the source asks for each checkpoint, and every worker's sink reports it.
    let request = Arc::new(AtomicU64::new(0));
    let acks: Arc<Vec<AtomicU64>> =
        Arc::new((0..opts.workers).map(|_| AtomicU64::new(0)).collect());
    let run = restored.run;
    let restore = Arc::new(restored.states());
    anyhow::ensure!(opts.workers >= 1, "--workers must be at least 1");
    let keys = Arc::new(existing_keys(&opts.lake.root)?);
    let files = Arc::new(vec![LogFile {
        name: "mqtt".into(),
        parser: Some(LineParser::Jsonl),
    }]);
    let node_cfg = Arc::new(node_cfg);
    let source = Arc::new(Mutex::new(Some(source)));
    let guards = timely::execute(timely::Config::process(opts.workers), {
        let shared = Arc::clone(&shared);
        move |worker| -> Result<WorkerResult, String> {
            let index = worker.index();
            let stats = Rc::new(RefCell::new(NodeStats::default()));
            let parse_stats = Rc::new(RefCell::new(ParseStats::default()));
            let report = Rc::new(RefCell::new(SinkReport::default()));
            let writer = LakeWriter::new(opts.lake.clone(), index).map_err(|e| e.to_string())?;
            let (mut input, mut cap) = worker.dataflow::<u64, _, _>(|scope| {
                let ((records_in, records_cap), records) =
                    scope.new_unordered_input::<CapacityContainerBuilder<Vec<Incoming>>>();
                let latest = Arc::clone(&shared);
                lake_rows(
                    records,
                    &files,
                    None,
                    &keys,
                    &node_cfg,
                    Ordering::Immediate,
                    &parse_stats,
                    &stats,
                    Some(Checkpointing {
                        // With Kafka, the source's aligned rounds pace the barriers.
                        every: if aligned {
                            Duration::from_secs(3600)
                        } else {
                            opts.commit_every
                        },
                        restore: Arc::clone(&restore),
                        request: aligned.then(|| Arc::clone(&request)),
                    }),
                )
                .inspect(move |row| latest.publish(row))
                .lake_sink(
                    writer,
                    Rc::clone(&report),
                    SinkOptions {
                        // The checkpoint barriers pace the commits.
                        commit_every: None,
                        checkpoints: Some(CheckpointWriter::new(&opts.lake.root, run, index)),
                        on_checkpoint: aligned.then(|| {
                            let acks = Arc::clone(&acks);
                            Box::new(move |epoch: u64| {
                                acks[index].fetch_max(epoch, AtomicOrdering::AcqRel);
                            }) as Box<dyn Fn(u64) + Send>
                        }),
                        background: opts.background_writer,
                    },
                );
                (records_in, records_cap)
            });
            if index == 0 {
                let mut source = source
                    .lock()
                    .map_err(|_| "the source's lock is poisoned".to_string())?
                    .take()
                    .ok_or("worker 0 started twice")?;
                let mut aligner = match &mut source {
                    LiveSource::Kafka(_) => Some(Aligner::new(
                        Arc::clone(&request),
                        Arc::clone(&acks),
                        opts.commit_every,
                    )),
                    LiveSource::Channel(_) => None,
                };
                let lateness = opts.lateness.as_micros() as i64;
                let mut max_seen: Option<i64> = None;
                let mut watermark = 0u64;
                let mut ordinal = 0u64;
                // In arrival order, in runs of one tick: a command and the readings around it
                // must reach their node in the order they came in.
                let mut pending: Vec<(u64, Vec<Incoming>)> = Vec::new();
                // After the stop signal, messages the broker already acknowledged are still on
                // their way through it: keep reading until the source has been quiet a while.
                let mut quiet_since: Option<Instant> = None;
                let mut disconnected = false;
                loop {
                    let stopping = shared.stop.load(AtomicOrdering::SeqCst);
                    let mut batch: Vec<Inbound> = Vec::new();
                    match (&mut source, &mut aligner) {
                        (LiveSource::Channel(rx), _) => {
                            while batch.len() < 4096 {
                                match rx.try_recv() {
                                    Ok(m) => batch.push(m),
                                    Err(TryRecvError::Empty) => break,
                                    Err(TryRecvError::Disconnected) => {
                                        disconnected = true;
                                        break;
                                    }
                                }
                            }
                        }
                        (LiveSource::Kafka(k), Some(a)) => {
                            if a.step(k, stopping, ordinal, &shared.metrics, &mut batch) {
                                break;
                            }
                        }
                        (LiveSource::Kafka(_), None) => unreachable!("Kafka without an aligner"),
                    }
                    let idle = batch.is_empty();
                    if disconnected && idle {
                        break;
                    }
                    if stopping && aligner.is_none() {
                        if !idle {
                            quiet_since = None;
                        } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
                            >= DRAIN_QUIET
                        {
                            break;
                        }
                    }
                    for msg in batch {
                        shared
                            .metrics
                            .events_in
                            .fetch_add(1, AtomicOrdering::Relaxed);
                        for record in records_of(&msg) {
                            ordinal += 1;
                            let (route, t, parsed) = route_and_time(&msg, &record);
                            let tick = match t {
                                Some(t) => {
                                    max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
                                    tick_of(t).max(watermark)
                                }
                                None => watermark,
                            };
                            if pending.last().is_none_or(|(t, _)| *t != tick) {
                                pending.push((tick, Vec::new()));
                            }
                            let run = &mut pending.last_mut().expect("pushed above").1;
                            run.push(Incoming {
                                route: route.unwrap_or(ordinal),
                                ordinal,
                                file: 0,
                                line: 0,
                                received_at: msg.received_at,
                                source: Some(msg.source.clone()),
                                payload: record,
                                parsed: parsed.map(|r| Box::new(Err(r))),
                            });
                        }
                    }
                    if let Some(m) = max_seen {
                        watermark = watermark.max(tick_of(m - lateness));
                    }
                    for (t, mut batch) in pending.drain(..) {
                        let at = cap.delayed(&t);
                        input.activate().session(&at).give_container(&mut batch);
                    }
                    if watermark > *cap.time() {
                        cap = cap.delayed(&watermark);
                    }
                    // Run the dataflow while it has work; when it has none and nothing came
                    // in, park briefly: a new message waits at most IDLE_PARK.
                    worker.step_or_park(Some(if idle { IDLE_PARK } else { Duration::ZERO }));
                    let figures =
                        WorkerFigures::of(&stats.borrow(), &parse_stats.borrow(), &report.borrow());
                    shared.metrics.set_worker(index, figures);
                }
            }
            // Dropping the input and its capability closes the input.
            drop(cap);
            drop(input);
            while worker.step_or_park(Some(Duration::from_millis(20))) {
                let figures =
                    WorkerFigures::of(&stats.borrow(), &parse_stats.borrow(), &report.borrow());
                shared.metrics.set_worker(index, figures);
            }
            let result = WorkerResult {
                nodes: *stats.borrow(),
                parse: std::mem::take(&mut *parse_stats.borrow_mut()),
                sink: std::mem::take(&mut *report.borrow_mut()),
            };
            Ok(result)
        }
    })
    .map_err(|e| anyhow!("starting the workers: {e}"))?;
    let mut summary = LiveSummary::default();
    for r in guards.join() {
        let r = r
            .map_err(|e| anyhow!("a worker failed: {e}"))?
            .map_err(|e| anyhow!(e))?;
        if let Some(e) = r.sink.error {
            return Err(anyhow!(e).context("writing the lake"));
        }
        summary.applied += r.nodes.applied;
        summary.nodes_restored += r.nodes.restored;
        summary.checkpoints_saved += r.sink.checkpoints.1;
        for (k, v) in r.parse.rejected {
            *summary.rejected.entry(k).or_default() += v;
        }
        if r.nodes.duplicates > 0 {
            *summary.rejected.entry(Reason::Duplicate).or_default() += r.nodes.duplicates;
        }
        summary.files_committed += r.sink.committed.files;
        summary.rows_committed += r.sink.committed.rows;
    }
    // Read once every worker has finished (the source counts as it reads).
    summary.events_in = shared.metrics.events_in.load(AtomicOrdering::Relaxed);
    Ok(summary)
}

/// Aligned checkpoints for the Kafka source, as Flink and Arroyo do them: every `every`, the
/// source stops reading, waits until the dataflow has handled all it sent, asks every worker
/// for a checkpoint barrier, and once every sink has committed its rows and saved its nodes,
/// commits the offsets it had reached. Offsets therefore never run ahead of saved state, and
/// a restart resumes exactly there. The pause lasts a few milliseconds.
struct Aligner {
    request: Arc<AtomicU64>,
    acks: Arc<Vec<AtomicU64>>,
    every: Duration,
    epoch: u64,
    last: bool,
    phase: Phase,
}

enum Phase {
    Reading {
        since: Instant,
    },
    Draining {
        since: Instant,
        sent: u64,
        offsets: Offsets,
    },
    Saving {
        since: Instant,
        offsets: Offsets,
    },
}

impl Aligner {
    fn new(request: Arc<AtomicU64>, acks: Arc<Vec<AtomicU64>>, every: Duration) -> Self {
        Self {
            request,
            acks,
            every,
            epoch: 0,
            last: false,
            phase: Phase::Reading {
                since: Instant::now(),
            },
        }
    }

    /// Reads into `batch`, or advances a checkpoint round; `sent` is how many records the
    /// source has given the dataflow. True once the final round (after `stopping`) is over.
    fn step(
        &mut self,
        source: &mut KafkaSource,
        stopping: bool,
        sent: u64,
        metrics: &Metrics,
        batch: &mut Vec<Inbound>,
    ) -> bool {
        let now = Instant::now();
        match std::mem::replace(&mut self.phase, Phase::Reading { since: now }) {
            Phase::Reading { since } => {
                if stopping || since.elapsed() >= self.every {
                    self.last = stopping;
                    self.phase = Phase::Draining {
                        since: now,
                        sent,
                        offsets: source.positions().clone(),
                    };
                    return false;
                }
                self.phase = Phase::Reading { since };
                while batch.len() < 4096 {
                    match source.poll(Duration::ZERO) {
                        None => break,
                        Some(Ok(r)) => batch.push(crate::bridge::inbound_of(r)),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "reading Kafka");
                            break;
                        }
                    }
                }
                false
            }
            Phase::Draining {
                since,
                sent,
                offsets,
            } => {
                if metrics.handled(sent) {
                    self.epoch += 1;
                    self.request.store(self.epoch, AtomicOrdering::Release);
                    self.phase = Phase::Saving {
                        since: now,
                        offsets,
                    };
                } else if since.elapsed() > ALIGN_TIMEOUT {
                    tracing::warn!("the dataflow did not drain in time; offsets not committed");
                    return self.last;
                } else {
                    self.phase = Phase::Draining {
                        since,
                        sent,
                        offsets,
                    };
                }
                false
            }
            Phase::Saving { since, offsets } => {
                let saved = self
                    .acks
                    .iter()
                    .all(|a| a.load(AtomicOrdering::Acquire) >= self.epoch);
                if saved {
                    match source.commit(&offsets) {
                        Ok(()) => metrics.kafka_committed(&offsets),
                        Err(e) => tracing::warn!(error = %e, "committing Kafka offsets"),
                    }
                    return self.last;
                }
                if since.elapsed() > ALIGN_TIMEOUT {
                    tracing::warn!("a checkpoint was not saved in time; offsets not committed");
                    return self.last;
                }
                self.phase = Phase::Saving { since, offsets };
                false
            }
        }
    }
}

/// The readings of a message: one JSON object, or an array of them.
fn records_of(msg: &Inbound) -> Vec<Vec<u8>> {
    let trimmed = msg.payload.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        if let Ok(items) = serde_json::from_slice::<Vec<serde_json::Value>>(trimmed) {
            return items
                .iter()
                .map(|v| serde_json::to_vec(v).unwrap_or_default())
                .collect();
        }
    }
    vec![msg.payload.clone()]
}

/// The record's route (its node's hash), its event time if readable and not in the future,
/// and a rejection when the payload's node is not the topic's.
fn route_and_time(msg: &Inbound, record: &[u8]) -> (Option<u64>, Option<i64>, Option<Rejection>) {
    let peek = LineParser::Jsonl.peek(record);
    let latest: DateTime<Utc> = msg.received_at + kaiabc_schemas::validate::MAX_FUTURE;
    // A command's time is when it was issued, not sensor time: it does not move the watermark.
    let t = peek
        .timestamp
        .as_deref()
        .filter(|_| !kaiabc_schemas::ControlCommand::is_control(record))
        .and_then(|s| parse_timestamp(s).ok())
        .filter(|t| *t <= latest)
        .map(|t| t.timestamp_micros());
    let node = peek.node_id.as_deref();
    let mismatch = match (&msg.node, node) {
        (Ok(vouched), Some(node)) if vouched != node => Some(Rejection::new(
            Reason::InvalidNodeId,
            format!("payload node_id {node:?} is not the sender's node {vouched:?}"),
        )),
        (Err(why), _) => Some(Rejection::new(Reason::InvalidNodeId, why.clone())),
        _ => None,
    };
    (node.map(node_hash), t, mismatch)
}
