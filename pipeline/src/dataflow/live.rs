//! The live dataflow: messages from the write-ahead log (embedded mode) or Kafka through the
//! same operators as a replay, each node's state emitted as soon as its reading is applied,
//! the lake committed and the source's position committed at aligned checkpoints.
//!
//! `run_live` wires the parts: the source ([`OffsetSource`]) and its checkpoint rounds
//! ([`Aligner`], [`Rounds`]) and the event-time [`Stamper`] on each process's first worker, the
//! shared graph ([`lake_rows`]) and the lake sink on every worker, the node rows shared with the
//! other processes of a cluster, and the workers' figures for `/metrics`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use kaiabc_connectors::file::LineParser;
use kaiabc_connectors::kafka::{
    KafkaProducer, ALERTS_TOPIC, DEAD_LETTERS_TOPIC, FLEET_TOPIC, STATES_TOPIC,
};
use kaiabc_connectors::lake::{existing_keys, CheckpointWriter, LakeConfig, LakeWriter, Restored};
use kaiabc_connectors::mqtt::MqttOutput;
use kaiabc_operators::dataflow::{Checkpointing, NodeStats, Ordering};
use kaiabc_operators::node::NodeConfig;
use kaiabc_schemas::{LakeRow, OscillatorState, Reason};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::{UnorderedHandle, UnorderedInput};
use timely::dataflow::operators::{ActivateCapability, Probe};
use timely::dataflow::ProbeHandle;

use crate::metrics::{Metrics, WorkerFigures};
use crate::ws::Hub;

use super::aligner::{Aligner, Step};
pub use super::in_order::InOrder;
use super::inbound::Inbound;
use super::lake_sink::{LakeSink, SinkOptions, SinkReport};
use super::parse::{Incoming, LogFile, ParseStats};
use super::past::{lake_keys, LakeSummaries};
use super::rounds::Rounds;
use super::source::OffsetSource;
use super::stamper::Stamper;
use super::{lake_rows, with_fleet};
use differential_dataflow::input::{Input as _, InputSession};
use kaiabc_operators::dedup::FilesProgress;
use kaiabc_operators::fleet::{Name, NodeEvent, NodeMeta};

/// How long the source's worker parks when neither the source nor the dataflow has work: the
/// most a newly arrived message waits before it enters the dataflow.
pub const IDLE_PARK: Duration = Duration::from_millis(1);

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
    /// The cluster this process is part of (one process by default).
    pub cluster: crate::cluster::ClusterArgs,
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
    /// Outputs made during a worker's step, handed to [`Self::output`] after it.
    pub outputs: Mutex<PendingOutputs>,
    /// Where states and dead letters are published in Kafka mode.
    pub kafka: std::sync::OnceLock<KafkaProducer>,
    /// Whether the lake is being written (the sinks report failures and recoveries here).
    pub durability: Arc<crate::durability::Durability>,
    /// The fleet's views and alerts, and the registry changes and status messages on their way
    /// into the dataflow.
    pub fleet: Arc<crate::fleet::FleetBook>,
}

impl LiveShared {
    /// Publishes a batch of rows, in order, to the WebSocket hub, the metrics and Kafka, and
    /// keeps each state's MQTT output for [`Self::flush_outputs`].
    fn publish_all(&self, rows: &[LakeRow]) {
        let with_output = self.output.get().is_some();
        for row in rows {
            self.publish(row);
            if let (true, LakeRow::State(s)) = (with_output, row) {
                if let Ok(mut pending) = self.outputs.lock() {
                    pending.put(s);
                }
            }
        }
    }

    /// Hands every node's newest output kept since the last call to the broker (called by each
    /// worker after each step), which is woken once for them all.
    fn flush_outputs(&self) {
        let Some(out) = self.output.get() else {
            return;
        };
        let states = match self.outputs.lock() {
            Ok(mut pending) if !pending.by_node.is_empty() => pending.take(),
            _ => return,
        };
        let outputs: Vec<(String, Vec<u8>)> = states
            .iter()
            .filter_map(|s| match serde_json::to_vec(&crate::ws::PwmOutput::of(s)) {
                Ok(payload) => Some((format!("kaiabc/nodes/{}/output", s.node_id), payload)),
                Err(e) => {
                    tracing::error!(error = %e, "encoding an output");
                    None
                }
            })
            .collect();
        if let Err(e) = out.publish_retained_all(outputs) {
            tracing::warn!(error = %e, "MQTT output");
        }
    }

    /// Publishes a row to the WebSocket hub, the metrics and Kafka (its MQTT output is
    /// [`Self::publish_all`]'s).
    fn publish(&self, row: &LakeRow) {
        self.hub.publish(row);
        self.metrics.observe(row);
        match row {
            LakeRow::State(s) => self.to_kafka(STATES_TOPIC, Some(&s.node_id), s),
            LakeRow::Fleet(f) => {
                let key = format!("{}/{}", f.group_by, f.group);
                self.to_kafka(FLEET_TOPIC, Some(&key), f);
            }
            LakeRow::Alert(a) => {
                let key = a.node_id.clone().or_else(|| {
                    a.group
                        .as_ref()
                        .map(|g| format!("{}/{g}", a.group_by.as_deref().unwrap_or("")))
                });
                self.to_kafka(ALERTS_TOPIC, key.as_deref(), a);
            }
            LakeRow::DeadLetter(d) => self.to_kafka(DEAD_LETTERS_TOPIC, d.node_id.as_deref(), d),
            _ => {}
        }
    }
}

impl LiveShared {
    /// Applies a tick's changes of the fleet's views to the book, and tells subscribers.
    fn apply_fleet(&self, c: &kaiabc_operators::fleet::FleetChanges) {
        let applied = self.fleet.apply(c);
        for event in &applied.alerts {
            self.hub.alert(event);
        }
        // Rendered only for subscribers; the sequence numbers move regardless.
        if self.hub.fleet_interest() {
            for (stream, seq) in applied.streams {
                if let Some(v) = self.fleet.render(&stream) {
                    self.hub.publish_fleet(&stream, seq, &v);
                }
            }
        }
    }

    /// Sends a record as JSON to a topic, in Kafka mode. The JSON is written into a buffer
    /// kept by the thread (librdkafka copies what it is given): a state is about 600 bytes,
    /// and a fresh `Vec` for each grew three times on the way, each time copied.
    fn to_kafka(&self, topic: &str, key: Option<&str>, value: &impl serde::Serialize) {
        thread_local! {
            static JSON: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
        }
        let Some(k) = self.kafka.get() else {
            return;
        };
        JSON.with_borrow_mut(|json| {
            json.clear();
            match serde_json::to_writer(&mut *json, value) {
                Ok(()) => {
                    if let Err(e) = k.send(topic, key, json, &[], None) {
                        tracing::warn!(error = %e, topic, "Kafka");
                    }
                }
                Err(e) => tracing::error!(error = %e, topic, "encoding a record"),
            }
        });
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

/// What one worker counted, handed back when it ends.
#[derive(Default)]
struct WorkerResult {
    nodes: NodeStats,
    parse: ParseStats,
    sink: SinkReport,
}

/// One worker's counters, shared between its operators and its loop.
#[derive(Clone, Default)]
struct WorkerStats {
    nodes: Rc<RefCell<NodeStats>>,
    parse: Rc<RefCell<ParseStats>>,
    sink: Rc<RefCell<SinkReport>>,
}

impl WorkerStats {
    /// Copies the figures out for `/metrics`.
    fn publish(&self, index: usize, metrics: &Metrics) {
        let figures = WorkerFigures::of(&self.nodes.borrow(), &self.sink.borrow());
        metrics.set_worker(index, figures);
    }

    fn take(&self) -> WorkerResult {
        WorkerResult {
            nodes: *self.nodes.borrow(),
            parse: std::mem::take(&mut *self.parse.borrow_mut()),
            sink: std::mem::take(&mut *self.sink.borrow_mut()),
        }
    }
}

/// Each node's newest MQTT output not yet handed to the broker, in the order of the states
/// they come from. A node applies the duty it was sent last, and its output topic is retained:
/// an output superseded before it was handed over would only be overwritten. Outputs are
/// collected while a worker steps and handed over after the step ([`LiveShared::flush_outputs`]),
/// so a node with several states in one step (catching up on a backlog in Kafka: a step reads
/// 4 096 readings, a few for each of 1 000 nodes) sends its newest alone. Live, a node rarely
/// has two states in a step, and every state is sent.
#[derive(Debug, Default)]
pub struct PendingOutputs {
    /// States put so far; orders them.
    put: u64,
    /// Per node: when its newest state was put, and the state (its output is encoded when it
    /// is handed over, so a superseded one costs a copy, not an encoding).
    by_node: std::collections::HashMap<String, (u64, OscillatorState)>,
}

impl PendingOutputs {
    /// Keeps `s` as its node's newest state, in place of any it had.
    fn put(&mut self, s: &OscillatorState) {
        self.put += 1;
        match self.by_node.get_mut(&s.node_id) {
            Some(kept) => *kept = (self.put, s.clone()),
            None => {
                self.by_node
                    .insert(s.node_id.clone(), (self.put, s.clone()));
            }
        }
    }

    /// The states kept, in the order they were put; empties the set.
    fn take(&mut self) -> Vec<OscillatorState> {
        let mut kept: Vec<(u64, OscillatorState)> =
            self.by_node.drain().map(|(_, kept)| kept).collect();
        kept.sort_unstable_by_key(|(at, _)| *at);
        kept.into_iter().map(|(_, s)| s).collect()
    }
}

/// Runs the live dataflow on the messages of `source` until `shared.stop` is set (here, or in
/// any process of the cluster), then drains it and commits the lake. Nodes resume from
/// `restored` (opened from the lake's checkpoints); every aligned checkpoint commits the lake,
/// saves the checkpoints of the nodes that changed, and then commits the source's position.
/// In a cluster each process runs its own source (its share of Kafka's partitions) on its
/// first worker.
pub fn run_live(
    opts: LiveOptions,
    node_cfg: NodeConfig,
    source: Box<dyn OffsetSource>,
    shared: Arc<LiveShared>,
    restored: &Restored,
) -> Result<LiveSummary> {
    anyhow::ensure!(opts.workers >= 1, "--workers must be at least 1");
    if opts.cluster.is_cluster() {
        crate::cluster::exit_when_a_peer_is_lost();
    }
    let ctx = Arc::new(WorkerContext {
        run: restored.run,
        restore: Arc::new(restored.states()),
        keys: Arc::new(existing_keys(&opts.lake.root)?),
        summaries: LakeSummaries::read(&opts.lake.root)?,
        files: Arc::new(vec![LogFile {
            name: "mqtt".into(),
            parser: Some(LineParser::Jsonl),
        }]),
        node_cfg: Arc::new(node_cfg),
        source: Mutex::new(Some(source)),
        shared: Arc::clone(&shared),
        opts,
    });
    let guards = ctx
        .opts
        .cluster
        .execute(ctx.opts.workers, {
            let ctx = Arc::clone(&ctx);
            move |worker| run_worker(worker, &ctx)
        })
        .map_err(|e| anyhow!("starting the workers: {e} [{}]", e.code()))?;
    let mut summary = LiveSummary::default();
    for r in guards.join() {
        let r = r
            .map_err(|e| anyhow!("a worker failed: {e}"))?
            .map_err(|e| anyhow!(e))?;
        if let Some(e) = r.sink.error {
            return Err(anyhow!(e).context("writing the lake"));
        }
        summary.add(r);
    }
    // Read once every worker has finished (the source counts as it reads).
    summary.events_in = shared.metrics.events_in.load(AtomicOrdering::Relaxed);
    Ok(summary)
}

/// What every worker of a live run starts from.
struct WorkerContext {
    opts: LiveOptions,
    run: u64,
    restore: Arc<std::collections::HashMap<String, Vec<u8>>>,
    keys: Arc<kaiabc_connectors::lake::ExistingKeys>,
    summaries: Arc<LakeSummaries>,
    files: Arc<Vec<LogFile>>,
    node_cfg: Arc<NodeConfig>,
    /// This process's source, taken by its first worker.
    source: Mutex<Option<Box<dyn OffsetSource>>>,
    shared: Arc<LiveShared>,
}

/// The inputs a worker feeds (only a process's first worker keeps them open).
struct Inputs {
    records: UnorderedHandle<u64, CapacityContainerBuilder<Vec<Incoming>>>,
    cap: ActivateCapability<u64>,
    fleet: FleetInputs,
}

/// One worker: builds the dataflow and the rounds, runs the process's source on its first
/// worker, and steps until the dataflow is done.
fn run_worker(
    worker: &mut timely::worker::Worker,
    ctx: &WorkerContext,
) -> Result<WorkerResult, String> {
    let index = worker.index();
    let stats = WorkerStats::default();
    let shared = &ctx.shared;
    let (inputs, done, mut rounds) = build(worker, ctx, &stats)?;
    if crate::cluster::first_of_process(index, ctx.opts.workers) {
        let source = ctx
            .source
            .lock()
            .map_err(|_| "the source's lock is poisoned".to_string())?
            .take()
            .ok_or("the process's source started twice")?;
        let processes = ctx.opts.cluster.processes;
        SourceLoop {
            source,
            aligner: Aligner::new(ctx.opts.commit_every),
            stamper: Stamper::new(ctx.opts.lateness).one_of_several(processes > 1),
        }
        .run(worker, inputs, &mut rounds, shared, &stats);
    } else {
        // Dropping the inputs and their capabilities closes them.
        drop(inputs);
    }
    // The rounds stay open while this worker's operators may still send barriers and save.
    while !done.done() {
        worker.step_or_park(Some(Duration::from_millis(20)));
        shared.flush_outputs();
        rounds.advance();
        stats.publish(index, &shared.metrics);
    }
    rounds.close();
    while worker.step_or_park(Some(Duration::from_millis(20))) {
        shared.flush_outputs();
        stats.publish(index, &shared.metrics);
    }
    shared.flush_outputs();
    Ok(stats.take())
}

/// Builds a worker's live dataflow, then its rounds: the inputs, a probe that is done once
/// every row has gone to the sink, and the rounds.
fn build(
    worker: &mut timely::worker::Worker,
    ctx: &WorkerContext,
    stats: &WorkerStats,
) -> Result<(Inputs, ProbeHandle<u64>, Rounds), String> {
    let index = worker.index();
    let opts = &ctx.opts;
    let shared = &ctx.shared;
    let writer = LakeWriter::new(opts.lake.clone(), index).map_err(|e| e.to_string())?;
    let in_files = Arc::new(FilesProgress::default());
    let lake = lake_keys(&ctx.summaries, &writer, &in_files);
    // Set by this worker's node operator and sink, read by its rounds (same thread, and the
    // sink's own thread).
    let barrier_sent = Rc::new(std::cell::Cell::new(0u64));
    let round_saved = Arc::new(AtomicU64::new(0));
    let (inputs, done) = worker.dataflow::<u64, _, _>(|scope| {
        let ((records_in, records_cap), records) =
            scope.new_unordered_input::<CapacityContainerBuilder<Vec<Incoming>>>();
        let ((liveness_in, liveness_cap), liveness) =
            scope.new_unordered_input::<CapacityContainerBuilder<Vec<NodeEvent>>>();
        let (registry_in, registry) = scope.new_collection::<(Name, NodeMeta), isize>();
        let rows = lake_rows(
            records,
            &ctx.files,
            None,
            &ctx.keys,
            lake,
            &ctx.node_cfg,
            Ordering::Immediate,
            &stats.parse,
            &stats.nodes,
            Some(Checkpointing {
                restore: Arc::clone(&ctx.restore),
                // One source a process, each sending its markers to every worker.
                sources: opts.cluster.processes,
                sent: Some(Rc::clone(&barrier_sent)),
            }),
        );
        let fleet = Arc::clone(shared);
        let latest = Arc::clone(shared);
        let rows = with_fleet(
            rows,
            Some(liveness),
            registry,
            shared.fleet.cfg.clone(),
            crate::cluster::first_of_process(index, opts.workers),
            move |c| fleet.apply_fleet(c),
        )
        .inspect_batches_in_order(move |rows: &[LakeRow]| latest.publish_all(rows));
        if opts.cluster.is_cluster() {
            let hub = Arc::clone(&shared.hub);
            share_rows(rows.clone(), opts.cluster.processes, opts.workers, hub);
        }
        let (done, rows) = rows.probe();
        rows.lake_sink(
            writer,
            Rc::clone(&stats.sink),
            SinkOptions {
                // The checkpoint barriers pace the commits.
                commit_every: None,
                checkpoints: Some(CheckpointWriter::new(&opts.lake.root, ctx.run, index)),
                on_checkpoint: Some({
                    let saved = Arc::clone(&round_saved);
                    Box::new(move |epoch: u64| {
                        saved.fetch_max(epoch, AtomicOrdering::AcqRel);
                    }) as Box<dyn Fn(u64) + Send>
                }),
                background: opts.background_writer,
                files: Some(in_files),
                retry: Some(Arc::clone(&shared.durability)),
            },
        );
        let inputs = Inputs {
            records: records_in,
            cap: records_cap,
            fleet: FleetInputs {
                registry: registry_in,
                liveness: liveness_in,
                liveness_cap,
            },
        };
        (inputs, done)
    });
    let stop = Arc::clone(shared);
    let rounds = Rounds::new(worker, barrier_sent, round_saved, move || {
        stop.stop.store(true, AtomicOrdering::SeqCst)
    });
    Ok((inputs, done, rounds))
}

/// A node's row as the other processes of a cluster serve it. Readings and dead letters
/// travel as JSON: their `serde` forms (flattened and free-form fields) are not ones bincode,
/// timely's encoding, can size.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum Shared {
    /// Its latest state (REST, WebSocket).
    State(OscillatorState),
    /// A reading applied, as JSON (answers an HTTP ingest waiting for it, the WebSocket).
    Reading(Vec<u8>),
    /// A reading its clock or filter refused, as JSON (answers an HTTP ingest waiting for it).
    Dead(Vec<u8>),
}

impl Shared {
    fn of(row: &LakeRow) -> Option<Self> {
        match row {
            LakeRow::State(s) => Some(Self::State(s.clone())),
            LakeRow::Reading(r) => json(r).map(Self::Reading),
            LakeRow::DeadLetter(d) if d.node_id.is_some() => json(d).map(Self::Dead),
            _ => None,
        }
    }

    fn into_row(self) -> Option<LakeRow> {
        match self {
            Self::State(s) => Some(LakeRow::State(s)),
            Self::Reading(r) => serde_json::from_slice(&r).ok().map(LakeRow::Reading),
            Self::Dead(d) => serde_json::from_slice(&d).ok().map(LakeRow::DeadLetter),
        }
    }
}

/// A row as JSON, for the other processes.
fn json<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(v)
        .map_err(|e| tracing::error!(error = %e, "encoding a row for the cluster"))
        .ok()
}

/// Sends the states, readings and node dead letters the worker's nodes produce to the first
/// worker of every other process, which serves them (REST, WebSocket, an HTTP ingest waiting
/// for its reading) as its own: any process answers for any node.
fn share_rows<'scope>(
    rows: timely::dataflow::Stream<'scope, u64, Vec<LakeRow>>,
    processes: usize,
    workers: usize,
    hub: Arc<Hub>,
) {
    use timely::dataflow::channels::pact::{Exchange, Pipeline};
    use timely::dataflow::operators::generic::operator::Operator;
    let me = rows.scope().index() / workers;
    let copies = rows.unary::<CapacityContainerBuilder<Vec<(u64, Box<Shared>)>>, _, _, _>(
        Pipeline,
        "ShareRows",
        move |_, _| {
            move |input, output| {
                input.for_each(|time, data| {
                    let mut session = output.session(&time);
                    for shared in data.iter().filter_map(Shared::of) {
                        for p in (0..processes).filter(|p| *p != me) {
                            session.give(((p * workers) as u64, Box::new(shared.clone())));
                        }
                    }
                });
            }
        },
    );
    copies.sink(
        Exchange::new(|(to, _): &(u64, Box<Shared>)| *to),
        "ServeRows",
        move |(input, _)| {
            input.for_each(|_, data| {
                for row in data.drain(..).filter_map(|(_, s)| s.into_row()) {
                    hub.publish(&row);
                }
            });
        },
    );
}

/// The fleet's own inputs (on worker 0): registry records and status messages, sent at the
/// source's capability and advanced with it.
struct FleetInputs {
    registry: InputSession<u64, (Name, NodeMeta), isize>,
    liveness: UnorderedHandle<u64, CapacityContainerBuilder<Vec<NodeEvent>>>,
    liveness_cap: ActivateCapability<u64>,
}

impl FleetInputs {
    /// Sends what the server queued, at `at`, and moves both inputs up to it.
    fn feed(&mut self, book: &crate::fleet::FleetBook, at: u64) {
        if at > *self.liveness_cap.time() {
            self.liveness_cap = self.liveness_cap.delayed(&at);
        }
        let mut events = book.take_liveness();
        if !events.is_empty() {
            self.liveness
                .activate()
                .session(&self.liveness_cap)
                .give_container(&mut events);
        }
        if at > *self.registry.time() {
            self.registry.advance_to(at);
        }
        for (node, meta, diff) in book.take_registry_changes() {
            self.registry.update((node, meta), diff);
        }
        self.registry.flush();
    }
}

/// A process's source loop (on its first worker): reads the source (through the aligner's
/// checkpoint rounds), stamps event time, feeds the dataflow's inputs and steps the worker,
/// until the final round is over.
struct SourceLoop {
    source: Box<dyn OffsetSource>,
    aligner: Aligner,
    stamper: Stamper,
}

impl SourceLoop {
    fn run(
        mut self,
        worker: &mut timely::worker::Worker,
        mut inputs: Inputs,
        rounds: &mut Rounds,
        shared: &LiveShared,
        stats: &WorkerStats,
    ) {
        let index = worker.index();
        let (leader, peers) = (index == 0, worker.peers());
        let mut batch: Vec<Inbound> = Vec::new();
        loop {
            let stopping = shared.stop.load(AtomicOrdering::SeqCst);
            if stopping {
                rounds.stop_all();
            }
            rounds.advance();
            batch.clear();
            let source = self.source.as_mut();
            let step = self.aligner.step(
                source,
                rounds,
                leader,
                stopping,
                &shared.metrics,
                &mut batch,
            );
            match step {
                Step::Done => return,
                Step::Markers(epoch) => self.stamper.markers(epoch, peers),
                Step::Read => {}
            }
            let idle = batch.is_empty();
            for msg in &batch {
                shared
                    .metrics
                    .events_in
                    .fetch_add(1, AtomicOrdering::Relaxed);
                self.stamper.stamp(msg);
            }
            if idle {
                // A silent live fleet still ages: see `Stamper::follow_wall_clock`.
                self.stamper
                    .follow_wall_clock(chrono::Utc::now().timestamp_micros());
            }
            let Inputs {
                records,
                cap,
                fleet,
            } = &mut inputs;
            for (t, mut run) in self.stamper.drain() {
                let at = cap.delayed(&t);
                records.activate().session(&at).give_container(&mut run);
            }
            if self.stamper.watermark() > *cap.time() {
                *cap = cap.delayed(&self.stamper.watermark());
            }
            fleet.feed(&shared.fleet, *cap.time());
            // Run the dataflow while it has work; when it has none and nothing came in, park
            // briefly: a new message waits at most IDLE_PARK.
            worker.step_or_park(Some(if idle { IDLE_PARK } else { Duration::ZERO }));
            shared.flush_outputs();
            stats.publish(index, &shared.metrics);
        }
    }
}

impl LiveSummary {
    fn add(&mut self, r: WorkerResult) {
        self.applied += r.nodes.applied;
        self.nodes_restored += r.nodes.restored;
        self.checkpoints_saved += r.sink.checkpoints.1;
        for (k, v) in r.parse.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        if r.nodes.duplicates > 0 {
            *self.rejected.entry(Reason::Duplicate).or_default() += r.nodes.duplicates;
        }
        if r.nodes.stale > 0 {
            *self.rejected.entry(Reason::StaleTimestamp).or_default() += r.nodes.stale;
        }
        self.files_committed += r.sink.committed.files;
        self.rows_committed += r.sink.committed.rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Of each node's states put before a flush only the newest is handed over, in the order
    /// the newest ones were put; a flush empties the set.
    #[test]
    fn each_nodes_newest_output_is_handed_over() {
        let state = |node: &str, seq: i64| match crate::ws::tests::state(node, seq) {
            LakeRow::State(s) => s,
            _ => unreachable!("a state"),
        };
        let mut pending = PendingOutputs::default();
        for (node, seq) in [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)] {
            pending.put(&state(node, seq));
        }
        let taken: Vec<(String, Option<i64>)> = pending
            .take()
            .into_iter()
            .map(|s| (s.node_id, s.seq))
            .collect();
        assert_eq!(
            taken,
            [("b".to_string(), Some(2)), ("a".to_string(), Some(3))]
        );
        assert!(pending.take().is_empty(), "taken once");
        pending.put(&state("c", 1));
        assert_eq!(pending.take().len(), 1, "later states are kept again");
    }
}
