//! Per-node processing as a timely operator: readings exchanged by node, put in event-time
//! order, and applied to each node's filter and clock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use foldhash::HashMap;
use kaiabc_schemas::{
    Checkpoint, ControlCommand, DeadLetter, LakeRow, NodeCheckpointEntry, OscillatorState, Reason,
    Rejection, SensorReading,
};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::node_hash;
use crate::dedup::{Emitted, InFiles, LakeKeys, PastReadings, Seen};
use crate::node::{Disposition, NodeCheckpoint, NodeConfig, NodeError, NodeState};

/// An input with its position in the input (ties between equal keys break by it).
pub type Routed = (u64, NodeInput);

/// What reaches a node: a reading, or a control command, in the node's input order; or a
/// source's checkpoint marker, in the worker's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum NodeInput {
    /// A validated reading.
    Reading(SensorReading),
    /// A command for the node's clock.
    Control(ControlCommand),
    /// A source's marker for checkpoint round `epoch`, sent to every worker (see
    /// [`Checkpointing::sources`]): everything that source sent before it is ahead of it on
    /// the channel, and the source sends nothing after it until the round's barriers are out.
    Marker {
        /// The round.
        epoch: u64,
        /// The worker it goes to.
        worker: u64,
    },
}

impl NodeInput {
    /// The node it is for (a marker's is empty).
    pub fn node_id(&self) -> &str {
        match self {
            Self::Reading(r) => &r.node_id,
            Self::Control(c) => &c.node_id,
            Self::Marker { .. } => "",
        }
    }

    /// Its event time (a marker's is the Unix epoch).
    pub fn timestamp(&self) -> DateTime<Utc> {
        match self {
            Self::Reading(r) => r.timestamp,
            Self::Control(c) => c.timestamp,
            Self::Marker { .. } => DateTime::UNIX_EPOCH,
        }
    }

    /// A reading's sequence number (commands have none, so they sort first among inputs
    /// with the same time).
    pub fn seq(&self) -> Option<i64> {
        match self {
            Self::Reading(r) => r.seq,
            Self::Control(_) | Self::Marker { .. } => None,
        }
    }

    /// Where the exchange sends it: its node's worker, or a marker's own.
    pub fn route(&self) -> u64 {
        match self {
            Self::Marker { worker, .. } => *worker,
            other => node_hash(other.node_id()),
        }
    }
}

impl From<SensorReading> for NodeInput {
    fn from(r: SensorReading) -> Self {
        Self::Reading(r)
    }
}

/// When a reading is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// Hold readings until the input frontier passes their timestamp, then apply them in
    /// event-time order per node (replay: readings out of order within the allowed lateness
    /// are put back in order).
    Frontier,
    /// Apply each reading as soon as it arrives (live: a state is never held back). A reading
    /// older than the node's last applied one is kept, marked late.
    Immediate,
}

/// What one worker's operator did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeStats {
    /// Readings applied to a clock.
    pub applied: u64,
    /// Readings kept but marked late.
    pub late: u64,
    /// Readings dropped as duplicates (within the run, or already in the lake).
    pub duplicates: u64,
    /// Readings whose clock failed to step (dead-lettered as `ODE_INSTABILITY`).
    pub clock_failures: u64,
    /// Control commands refused (dead-lettered as `INVALID_COMMAND`).
    pub control_failures: u64,
    /// Readings the filter could not take (dead-lettered as `FILTER_DIVERGENCE`).
    pub filter_failures: u64,
    /// Rhythm-window rows emitted.
    pub rhythm_rows: u64,
    /// Nodes this worker owns.
    pub nodes: u64,
    /// Bytes of per-node state at the end of the input (state, heap and map entry).
    pub state_bytes: u64,
    /// Time spent applying readings.
    pub busy: std::time::Duration,
    /// Nodes resumed from a checkpoint.
    pub restored: u64,
    /// Nodes whose checkpoint could not be resumed (they started afresh).
    pub restore_failures: u64,
    /// Time to apply each reading (filter and clock), for the metrics.
    pub apply_seconds: Histogram,
    /// Readings kept while their node was paused.
    pub paused: u64,
    /// Readings refused as older than the horizon before their node's newest.
    pub stale: u64,
    /// Readings the lake held that a resumed node had not seen, applied without rows (see
    /// `catch_up`).
    pub caught_up: u64,
    /// Control commands applied.
    pub controls: u64,
    /// Readings taken from the input, whatever became of them: a source that knows how many
    /// it sent can tell when all of them have been handled.
    pub received: u64,
}

/// Upper bounds (s) of the [`Histogram`] buckets: 10 µs to 1 s, about three per decade.
pub const APPLY_SECONDS_BOUNDS: [f64; 16] = [
    1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0,
];

/// A fixed-bucket histogram of durations (Copy, so stats stay plain values).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Counts per bucket of [`APPLY_SECONDS_BOUNDS`], the last one above them all.
    pub counts: [u64; APPLY_SECONDS_BOUNDS.len() + 1],
    /// The sum of the observed values, s.
    pub sum_seconds: f64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&mut self, seconds: f64) {
        let i = APPLY_SECONDS_BOUNDS.partition_point(|&b| b < seconds);
        self.counts[i] += 1;
        self.sum_seconds += seconds;
    }

    /// Adds another histogram's observations.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_seconds += o.sum_seconds;
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Checkpointing of per-node state, for a pipeline that restarts (live mode).
///
/// Barriers are aligned as Flink aligns them: each of the `sources` sends a
/// [`NodeInput::Marker`] of round `e` to every worker when it pauses for the round. Channels
/// are FIFO between two workers, so once a worker has the markers of all sources, it has
/// everything they sent before pausing; it then sends a [`LakeRow::Checkpoint`] barrier of
/// epoch `e` after the rows of all of it. This holds across processes: it needs no shared
/// memory, only the channels.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// Encoded states ([`NodeCheckpoint::to_bytes`]) to resume nodes from when this worker
    /// first sees them.
    pub restore: Arc<std::collections::HashMap<String, Vec<u8>>>,
    /// How many sources send markers (a round's barrier waits for a marker from each).
    pub sources: usize,
    /// Set to each barrier's epoch once the barrier is sent: everything the operator takes
    /// after that comes after the barrier, so a source that waits for it may read on while
    /// the sink commits.
    pub sent: Option<Rc<std::cell::Cell<u64>>>,
}

impl NodeStats {
    fn count_failure(&mut self, e: &NodeError) {
        match e {
            NodeError::Clock(_) => self.clock_failures += 1,
            NodeError::Kalman(_) => self.filter_failures += 1,
            NodeError::Settings(_) => self.control_failures += 1,
            NodeError::Stale { .. } => self.stale += 1,
        }
    }
}

/// Extension trait: per-node clocks over a stream of readings.
pub trait NodeClocks<'scope> {
    /// Exchanges readings by node, orders them (see [`Ordering`]) and applies each to its
    /// node's state, producing `readings`, `states`, `rhythms` and (for readings whose
    /// processing failed) `dead_letters` rows. `keys` tells exact copies of earlier readings
    /// (see [`crate::dedup`]): what the lake held before the run, and how far the lake's sink
    /// on this worker has written out the rows emitted here.
    ///
    /// # Examples
    /// ```
    /// use std::{cell::RefCell, rc::Rc, sync::Arc};
    /// use kaiabc_operators::clock::ClockConfig;
    /// use kaiabc_operators::dataflow::{NodeClocks, Ordering};
    /// use kaiabc_operators::dedup::LakeKeys;
    /// use kaiabc_operators::node::NodeConfig;
    /// use kaiabc_schemas::{parse_timestamp, LakeRow, Quality, SensorReading};
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    ///
    /// let cfg = Arc::new(NodeConfig::new(ClockConfig::default()).unwrap());
    /// let readings: Vec<_> = (0..3u64)
    ///     .map(|i| {
    ///         let ts = format!("2025-07-01T00:0{i}:00Z");
    ///         (i, SensorReading {
    ///             node_id: "pico_001".into(), seq: Some(i as i64),
    ///             timestamp: parse_timestamp(&ts).unwrap(), temperature_kelvin: 303.15,
    ///             humidity_percent: None, pressure_pa: None, light_lux: None,
    ///             sensor_type: "BME280".into(), quality: Quality::Good, raw_values: None,
    ///             firmware_version: None,
    ///         }.into())
    ///     })
    ///     .collect();
    /// let rows = timely::example(move |scope| {
    ///     let stats = Rc::new(RefCell::new(Default::default()));
    ///     readings
    ///         .to_stream(scope)
    ///         .node_clocks(cfg, Ordering::Frontier, LakeKeys::none(), stats)
    ///         .capture()
    /// });
    /// let rows: Vec<LakeRow> = rows
    ///     .iter()
    ///     .flat_map(|e| match e {
    ///         Event::Messages(_, r) => r,
    ///         Event::Progress(_) => Vec::new(),
    ///     })
    ///     .collect();
    /// let states = rows.iter().filter(|r| matches!(r, LakeRow::State(_))).count();
    /// assert_eq!(states, 3);
    /// ```
    fn node_clocks(
        self,
        cfg: Arc<NodeConfig>,
        ordering: Ordering,
        keys: LakeKeys,
        stats: Rc<RefCell<NodeStats>>,
    ) -> Stream<'scope, u64, Vec<LakeRow>>;

    /// [`NodeClocks::node_clocks`] with checkpoints: nodes resume from `ckpt.restore` when
    /// first seen, and at each round whose markers have come from every source (see
    /// [`Checkpointing`]), and when the input ends, a [`LakeRow::Checkpoint`] barrier carries
    /// the checkpoints of the nodes that changed since the previous one, after every row those
    /// changes produced. Markers are for [`Ordering::Immediate`]; with
    /// [`Ordering::Frontier`] they are dropped.
    fn node_clocks_checkpointed(
        self,
        cfg: Arc<NodeConfig>,
        ordering: Ordering,
        keys: LakeKeys,
        stats: Rc<RefCell<NodeStats>>,
        ckpt: Checkpointing,
    ) -> Stream<'scope, u64, Vec<LakeRow>>;
}

impl<'scope> NodeClocks<'scope> for Stream<'scope, u64, Vec<Routed>> {
    fn node_clocks(
        self,
        cfg: Arc<NodeConfig>,
        ordering: Ordering,
        keys: LakeKeys,
        stats: Rc<RefCell<NodeStats>>,
    ) -> Stream<'scope, u64, Vec<LakeRow>> {
        build(self, cfg, ordering, keys, stats, None)
    }

    fn node_clocks_checkpointed(
        self,
        cfg: Arc<NodeConfig>,
        ordering: Ordering,
        keys: LakeKeys,
        stats: Rc<RefCell<NodeStats>>,
        ckpt: Checkpointing,
    ) -> Stream<'scope, u64, Vec<LakeRow>> {
        build(self, cfg, ordering, keys, stats, Some(ckpt))
    }
}

fn build<'scope>(
    stream: Stream<'scope, u64, Vec<Routed>>,
    cfg: Arc<NodeConfig>,
    ordering: Ordering,
    keys: LakeKeys,
    stats: Rc<RefCell<NodeStats>>,
    ckpt: Option<Checkpointing>,
) -> Stream<'scope, u64, Vec<LakeRow>> {
    let pact = Exchange::new(|(_, r): &Routed| r.route());
    stream.unary_frontier(pact, "NodeClocks", move |cap, _info| {
        let mut stash: BTreeMap<u64, (Capability<u64>, Vec<Routed>)> = BTreeMap::new();
        let mut out: Vec<LakeRow> = Vec::new();
        let mut reported = false;
        // Checkpointing holds a capability at the input frontier, for the barrier at the end
        // of the input.
        let mut retained = ckpt.as_ref().map(|_| cap);
        let mut worker = Worker {
            nodes: HashMap::default(),
            cfg: Arc::clone(&cfg),
            keys: keys.clone(),
            emitted: 0,
            restore: ckpt.as_ref().map(|c| Arc::clone(&c.restore)),
            dirty: ckpt.as_ref().map(|_| HashMap::default()),
            touched: Vec::new(),
        };
        // Markers received per round, until every source's is in.
        let mut markers: BTreeMap<u64, usize> = BTreeMap::new();
        let mut answered = 0u64;
        move |(input, frontier), output| {
            // In arrival order (`for_each_stamp` would sort by time): live, a command and the
            // readings around it must reach the node in the order they came in.
            input.for_each(|cap, data| {
                // Messages sent under no capability make no progress claims; an input
                // handle never sends them.
                let Some(owned) = cap.retain_least(0) else {
                    return;
                };
                let time = *owned.time();
                match ordering {
                    Ordering::Immediate => {
                        // Up to each marker, then the marker: a round's barrier follows the
                        // rows of everything before the last source's marker.
                        let mut chunk: Vec<Routed> = Vec::with_capacity(data.len());
                        for item in data.drain(..) {
                            let NodeInput::Marker { epoch, .. } = item.1 else {
                                chunk.push(item);
                                continue;
                            };
                            worker.apply(&mut stats.borrow_mut(), &mut chunk, &mut out);
                            output.session(&owned).give_iterator(out.drain(..));
                            let Some(c) = &ckpt else { continue };
                            let seen = markers.entry(epoch).or_default();
                            *seen += 1;
                            if *seen >= c.sources {
                                markers.remove(&epoch);
                                answered = answered.max(epoch);
                                output.session(&owned).give(worker.barrier(answered));
                                if let Some(sent) = &c.sent {
                                    sent.set(answered);
                                }
                            }
                        }
                        worker.apply(&mut stats.borrow_mut(), &mut chunk, &mut out);
                        output.session(&owned).give_iterator(out.drain(..));
                    }
                    Ordering::Frontier => {
                        data.retain(|(_, i)| !matches!(i, NodeInput::Marker { .. }));
                        let entry = stash.entry(time).or_insert_with(|| (owned, Vec::new()));
                        entry.1.append(data);
                    }
                }
            });
            // Times the frontier has passed are complete: apply them in order.
            while let Some((&time, _)) = stash.first_key_value() {
                if frontier.less_equal(&time) {
                    break;
                }
                let (cap, mut batch) = stash.remove(&time).expect("present");
                batch.sort_by(|(oa, a), (ob, b)| {
                    (a.node_id(), a.timestamp(), a.seq(), oa).cmp(&(
                        b.node_id(),
                        b.timestamp(),
                        b.seq(),
                        ob,
                    ))
                });
                worker.apply(&mut stats.borrow_mut(), &mut batch, &mut out);
                output.session(&cap).give_iterator(out.drain(..));
            }
            if let Some(held) = retained.as_mut() {
                match frontier.frontier().first() {
                    // The input is over: a last barrier with what changed since the previous.
                    None => {
                        output.session(&*held).give(worker.barrier(answered));
                        retained = None;
                    }
                    Some(&t) => {
                        if *held.time() < t {
                            held.downgrade(&t);
                        }
                    }
                }
            }
            if frontier.is_empty() && !reported {
                reported = true;
                let entry = std::mem::size_of::<(String, NodeState)>();
                stats.borrow_mut().state_bytes = worker
                    .nodes
                    .iter()
                    .map(|(k, n)| (entry + k.capacity() + n.approx_bytes()) as u64)
                    .sum();
            }
        }
    })
}

/// Records which nodes the rows changed, with the latest state of each (a late reading changes
/// only the node's duplicate keys: `None` keeps the previous checkpoint's latest state).
fn mark_dirty(dirty: &mut HashMap<String, Option<OscillatorState>>, rows: &[LakeRow]) {
    for row in rows {
        match row {
            LakeRow::State(s) => {
                dirty.insert(s.node_id.clone(), Some(s.clone()));
            }
            LakeRow::Reading(r) if !dirty.contains_key(&r.reading.node_id) => {
                dirty.insert(r.reading.node_id.clone(), None);
            }
            _ => {}
        }
    }
}

/// A node's state when this worker first sees it: resumed from its checkpoint if there is one.
fn first_sight(
    cfg: &NodeConfig,
    node_id: &str,
    restore: Option<&std::collections::HashMap<String, Vec<u8>>>,
    st: &mut NodeStats,
) -> Result<NodeState, NodeError> {
    if let Some(bytes) = restore.and_then(|r| r.get(node_id)) {
        match NodeCheckpoint::from_bytes(bytes).and_then(|cp| NodeState::resume(cfg, cp)) {
            Ok(n) => {
                st.restored += 1;
                return Ok(n);
            }
            Err(_) => st.restore_failures += 1,
        }
    }
    NodeState::new(cfg)
}

/// One worker's nodes, and what applying inputs to them needs.
struct Worker {
    nodes: HashMap<String, NodeState>,
    cfg: Arc<NodeConfig>,
    keys: LakeKeys,
    /// Reading rows emitted so far (the sink numbers them the same way).
    emitted: u64,
    restore: Option<Arc<std::collections::HashMap<String, Vec<u8>>>>,
    /// With checkpoints: the nodes changed since the last barrier, with their latest states.
    dirty: Option<HashMap<String, Option<OscillatorState>>>,
    /// Nodes a control command changed (they have no row to show it).
    touched: Vec<String>,
}

impl Worker {
    /// A barrier of `epoch` with the checkpoints of the nodes changed since the last one.
    fn barrier(&mut self, epoch: u64) -> LakeRow {
        let dirty = self.dirty.as_mut().expect("checkpointing keeps it");
        let mut entries: Vec<NodeCheckpointEntry> = dirty
            .drain()
            .filter_map(|(node_id, latest)| {
                let state = self.nodes.get(&node_id)?.checkpoint().to_bytes();
                Some(NodeCheckpointEntry {
                    node_id,
                    state,
                    latest,
                })
            })
            .collect();
        entries.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        LakeRow::Checkpoint(Checkpoint {
            nodes: entries,
            epoch,
        })
    }

    /// Applies a batch (already in order) and notes which nodes changed.
    fn apply(&mut self, st: &mut NodeStats, batch: &mut Vec<Routed>, out: &mut Vec<LakeRow>) {
        let mut ctx = Ctx {
            cfg: &self.cfg,
            past: &*self.keys.past,
            files: self.keys.files.get(),
            emitted: &mut self.emitted,
            restore: self.restore.as_deref(),
            catch_up: self.dirty.is_some(),
        };
        apply(&mut self.nodes, &mut ctx, st, batch, out, &mut self.touched);
        if let Some(dirty) = &mut self.dirty {
            mark_dirty(dirty, out);
            for node in self.touched.drain(..) {
                dirty.entry(node).or_insert(None);
            }
        }
        self.touched.clear();
    }
}

/// What applying a batch needs besides the nodes.
struct Ctx<'a> {
    cfg: &'a NodeConfig,
    past: &'a dyn PastReadings,
    /// The sink's progress as the batch starts.
    files: InFiles,
    emitted: &'a mut u64,
    restore: Option<&'a std::collections::HashMap<String, Vec<u8>>>,
    /// Live (with checkpoints): a reading the lake holds that the node's state has not seen
    /// yet is applied to the state without rows (see [`catch_up`]).
    catch_up: bool,
}

/// Applies a batch of inputs (already in order) to their nodes; `touched` gets the nodes that
/// control commands changed.
fn apply(
    nodes: &mut HashMap<String, NodeState>,
    ctx: &mut Ctx<'_>,
    st: &mut NodeStats,
    batch: &mut Vec<Routed>,
    out: &mut Vec<LakeRow>,
    touched: &mut Vec<String>,
) {
    let started = std::time::Instant::now();
    st.received += batch.len() as u64;
    let mut inputs = batch.drain(..).peekable();
    while let Some((_, input)) = inputs.next() {
        if let Some((_, NodeInput::Reading(next))) = inputs.peek() {
            if let Some(n) = nodes.get(next.node_id.as_str()) {
                prefetch(n);
            }
        }
        let reading = match input {
            NodeInput::Reading(r) => r,
            NodeInput::Marker { .. } => continue,
            NodeInput::Control(cmd) => {
                let node = match node_for(nodes, ctx, &cmd.node_id, st) {
                    Ok(n) => n,
                    Err(e) => {
                        st.count_failure(&e);
                        continue;
                    }
                };
                match node.control(ctx.cfg, &cmd, out) {
                    Ok(()) => {
                        st.controls += 1;
                        touched.push(cmd.node_id);
                    }
                    Err(e) => {
                        // A refused command is kept, with why, like a refused reading.
                        st.control_failures += 1;
                        let payload = serde_json::to_vec(&cmd).unwrap_or_default();
                        out.push(LakeRow::DeadLetter(DeadLetter::new(
                            cmd.timestamp,
                            format!("node:{}", cmd.node_id),
                            &payload,
                            Rejection::new(Reason::InvalidCommand, e.to_string())
                                .for_node(&cmd.node_id),
                        )));
                    }
                }
                continue;
            }
        };
        let node = match node_for(nodes, ctx, &reading.node_id, st) {
            Ok(n) => n,
            Err(e) => {
                st.count_failure(&e);
                out.push(failure(&reading, &e));
                continue;
            }
        };
        node.prune_pending(&ctx.files);
        let (micros, seq) = (reading.timestamp.timestamp_micros(), reading.seq);
        let copy = match node.seen(micros, seq) {
            Seen::New => None,
            Seen::Copy => Some("was received before"),
            Seen::AskLake if !ctx.past.holds(&reading.node_id, micros, seq) => None,
            Seen::AskLake if ctx.catch_up && node.last_micros().is_none_or(|l| micros > l) => {
                // Its checkpoint must now include it.
                touched.push(reading.node_id.clone());
                catch_up(node, ctx, reading, st);
                continue;
            }
            Seen::AskLake => Some("is already in the lake"),
        };
        if let Some(what) = copy {
            st.duplicates += 1;
            out.push(duplicate(&reading, what));
            continue;
        }
        let before = out.len();
        let t = std::time::Instant::now();
        let at = Emitted {
            ordinal: *ctx.emitted + 1,
            version: ctx.files.version,
        };
        let result = node.apply_at(ctx.cfg, reading, out, at);
        st.apply_seconds.observe(t.elapsed().as_secs_f64());
        match result {
            Ok(Disposition::Applied) => st.applied += 1,
            Ok(Disposition::Late) => st.late += 1,
            Ok(Disposition::Duplicate) => st.duplicates += 1,
            Ok(Disposition::Paused) => st.paused += 1,
            Err(f) => {
                st.count_failure(&f.error);
                out.push(failure(&f.reading, &f.error));
            }
        }
        // One pass over what the reading produced: its reading row, numbered as the sink will
        // count them (see `InFiles`), and its rhythm rows.
        for row in &out[before..] {
            match row {
                LakeRow::Reading(_) => *ctx.emitted += 1,
                LakeRow::Rhythm(_) => st.rhythm_rows += 1,
                _ => {}
            }
        }
    }
    st.busy += started.elapsed();
}

/// Asks the CPU to bring `value` into its cache ahead of use. A worker's nodes take turns
/// (each reports once a minute), so by the time a node's next reading comes its state has left
/// the cache: loads of its fields were the largest part of `apply_at`'s own time.
#[inline]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (value as *const T).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults; every address is inside `value`.
            unsafe { _mm_prefetch(p.add(offset), _MM_HINT_T0) };
        }
    }
}

/// Applies a reading the lake already holds to a node whose state has not seen it, and drops
/// what it produced (its rows are in the lake). That happens after a crash between a commit
/// and the checkpoints saved right after it: the node resumes from its previous checkpoint,
/// and the readings committed in between come again from the log or Kafka. Dropping them as
/// duplicates would leave them out of the clock, and its states would differ from an
/// uninterrupted run's.
fn catch_up(node: &mut NodeState, ctx: &mut Ctx<'_>, reading: SensorReading, st: &mut NodeStats) {
    let mut scratch = Vec::new();
    let at = Emitted {
        ordinal: *ctx.emitted + 1,
        version: ctx.files.version,
    };
    match node.apply_at(ctx.cfg, reading, &mut scratch, at) {
        Ok(_) => st.caught_up += 1,
        Err(f) => st.count_failure(&f.error),
    }
}

/// The node's state, created (or resumed from its checkpoint) when first seen in this run.
fn node_for<'a>(
    nodes: &'a mut HashMap<String, NodeState>,
    ctx: &Ctx<'_>,
    node_id: &str,
    st: &mut NodeStats,
) -> Result<&'a mut NodeState, NodeError> {
    if !nodes.contains_key(node_id) {
        let mut n = first_sight(ctx.cfg, node_id, ctx.restore, st)?;
        // What the lake held of it before this run counts as seen.
        if let Some(past) = ctx.past.summary(node_id) {
            n.absorb_past(&past);
        }
        st.nodes += 1;
        nodes.insert(node_id.to_string(), n);
    }
    Ok(nodes.get_mut(node_id).expect("inserted above"))
}

/// The dead letter of an exact copy of a reading (same node, timestamp and seq): dropped, and
/// kept here so that duplicates can be counted in SQL.
fn duplicate(reading: &SensorReading, what: &str) -> LakeRow {
    let payload = serde_json::to_vec(reading).unwrap_or_default();
    let seq = reading
        .seq
        .map_or_else(|| "no seq".to_string(), |s| format!("seq {s}"));
    LakeRow::DeadLetter(DeadLetter::new(
        reading.timestamp,
        format!("node:{}", reading.node_id),
        &payload,
        Rejection::new(
            Reason::Duplicate,
            format!(
                "a reading of {} at {} with {seq} {what}",
                reading.node_id,
                reading
                    .timestamp
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        )
        .for_node(&reading.node_id),
    ))
}

/// A dead letter for a reading whose processing failed.
fn failure(reading: &SensorReading, e: &NodeError) -> LakeRow {
    let reason = match e {
        NodeError::Clock(_) => Reason::OdeInstability,
        NodeError::Kalman(_) => Reason::FilterDivergence,
        NodeError::Settings(_) => Reason::InvalidCommand,
        NodeError::Stale { .. } => Reason::StaleTimestamp,
    };
    let payload = serde_json::to_vec(reading).unwrap_or_default();
    LakeRow::DeadLetter(DeadLetter::new(
        reading.timestamp,
        format!("node:{}", reading.node_id),
        &payload,
        Rejection::new(reason, e.to_string()).for_node(&reading.node_id),
    ))
}
