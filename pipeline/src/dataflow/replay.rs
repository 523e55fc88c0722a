//! Batch replay of sensor logs through the dataflow into the lake.
//!
//! Worker 0 reads the files in the order given and sends every record at a timely time (whole
//! minutes of event time): its own event time's minute, or, when it is older than the
//! watermark `max event time read so far − allowed lateness`, the watermark. The per-node
//! operator applies each minute's readings in event-time order once the frontier passes it, so
//! readings out of order by less than the lateness are applied in order and later ones are
//! kept as late. That assignment depends only on the order of the input, so the lake's rows are
//! the same for any number of workers and any split of the input into files.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use kaiabc_connectors::file::{read_log, Format};
use kaiabc_connectors::lake::{existing_keys, LakeConfig, LakeWriter};
use kaiabc_operators::dataflow::{NodeClocks, NodeStats, Ordering, Routed};
use kaiabc_operators::node::NodeConfig;
use kaiabc_schemas::{DeadLetter, LakeRow, Reason};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::{ActivateCapability, Concat, Probe};
use timely::dataflow::ProbeHandle;

use super::lake_sink::{LakeSink, SinkReport};
use super::tick_of;

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as possible.
    Max,
    /// Event time advances this many times faster than the wall clock (1 = real time).
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "max" => Ok(Speed::Max),
            "realtime" => Ok(Speed::Factor(1.0)),
            _ => s
                .strip_prefix('x')
                .and_then(|f| f.parse::<f64>().ok())
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(Speed::Factor)
                .ok_or_else(|| format!("speed {s:?}: expected max, realtime or xN (e.g. x60)")),
        }
    }
}

/// What to replay and where.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Files with their formats, read in this order.
    pub files: Vec<(PathBuf, Format)>,
    /// Timely worker threads.
    pub workers: usize,
    /// The lake.
    pub lake: LakeConfig,
    /// Pace.
    pub speed: Speed,
    /// Allowed lateness of event time.
    pub lateness: Duration,
    /// The time of receipt for the future-timestamp check.
    pub now: DateTime<Utc>,
    /// Draw a progress bar on stderr (for a terminal).
    pub progress: bool,
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    /// Records read (lines, excluding CSV headers and blank lines).
    pub events_in: u64,
    /// Readings applied to a clock.
    pub applied: u64,
    /// Readings kept as late.
    pub late: u64,
    /// Rejected records by reason (duplicates included, though they are not dead-lettered).
    pub rejected: BTreeMap<Reason, u64>,
    /// States written.
    pub states: u64,
    /// Rhythm-window rows written.
    pub rhythm_rows: u64,
    /// Nodes seen.
    pub nodes: u64,
    /// Lake files and rows committed.
    pub files_committed: usize,
    /// Rows committed.
    pub rows_committed: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Bytes of per-node state at the end, per node.
    pub state_bytes_per_node: f64,
    /// Time in each stage, summed over workers: reading, parsing and validating; per-node
    /// processing (filter, clock, windows); the lake (encoding and writing Parquet).
    pub stage_busy: [Duration; 3],
}

impl ReplaySummary {
    /// Records per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.events_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Records accepted into `readings` (applied or late).
    pub fn accepted(&self) -> u64 {
        self.applied + self.late
    }

    /// The summary as a JSON object (for `--json` and tests).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "events_in": self.events_in,
            "accepted": self.accepted(),
            "applied": self.applied,
            "late": self.late,
            "rejected": self.rejected.iter().map(|(r, n)| (r.code().to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "states": self.states,
            "rhythm_rows": self.rhythm_rows,
            "nodes": self.nodes,
            "files_committed": self.files_committed,
            "rows_committed": self.rows_committed,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "events_per_second": self.events_per_second(),
            "state_bytes_per_node": self.state_bytes_per_node,
            "stage_seconds": {
                "read_parse_validate": self.stage_busy[0].as_secs_f64(),
                "nodes": self.stage_busy[1].as_secs_f64(),
                "lake": self.stage_busy[2].as_secs_f64(),
            },
        })
    }
}

/// Per-worker results, summed after the run.
#[derive(Default)]
struct WorkerResult {
    events_in: u64,
    source_busy: Duration,
    rejected: BTreeMap<Reason, u64>,
    nodes: NodeStats,
    sink: SinkReport,
}

/// Replays the files through the dataflow into the lake.
pub fn replay(opts: ReplayOptions, node_cfg: NodeConfig) -> Result<ReplaySummary> {
    anyhow::ensure!(opts.workers >= 1, "--workers must be at least 1");
    let started = Instant::now();
    let keys = Arc::new(
        existing_keys(&opts.lake.root)
            .with_context(|| format!("reading what {} already holds", opts.lake.root.display()))?,
    );
    let node_cfg = Arc::new(node_cfg);
    let opts = Arc::new(opts);
    let config = timely::Config::process(opts.workers);
    let guards = timely::execute(config, {
        let opts = Arc::clone(&opts);
        move |worker| -> Result<WorkerResult, String> {
            run_worker(worker, &opts, &node_cfg, &keys)
        }
    })
    .map_err(|e| anyhow!("starting the workers: {e}"))?;
    let mut summary = ReplaySummary::default();
    let mut state_bytes = 0u64;
    for r in guards.join() {
        let r = r
            .map_err(|e| anyhow!("a worker failed: {e}"))?
            .map_err(|e| anyhow!(e))?;
        if let Some(e) = r.sink.error {
            return Err(anyhow!(e).context("writing the lake"));
        }
        summary.events_in += r.events_in;
        for (k, v) in r.rejected {
            *summary.rejected.entry(k).or_default() += v;
        }
        summary.applied += r.nodes.applied;
        summary.late += r.nodes.late;
        summary.nodes += r.nodes.nodes;
        summary.rhythm_rows += r.nodes.rhythm_rows;
        if r.nodes.duplicates > 0 {
            *summary.rejected.entry(Reason::Duplicate).or_default() += r.nodes.duplicates;
        }
        summary.states += r.sink.rows[1];
        let dead_from_nodes = r.nodes.failed;
        if dead_from_nodes > 0 {
            tracing::warn!(
                count = dead_from_nodes,
                "readings failed in the clock or filter"
            );
        }
        state_bytes += r.nodes.state_bytes;
        summary.stage_busy[0] += r.source_busy;
        summary.stage_busy[1] += r.nodes.busy;
        summary.stage_busy[2] += r.sink.busy;
        summary.files_committed += r.sink.committed.files;
        summary.rows_committed += r.sink.committed.rows;
    }
    summary.elapsed = started.elapsed();
    summary.state_bytes_per_node = state_bytes as f64 / summary.nodes.max(1) as f64;
    Ok(summary)
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    opts: &ReplayOptions,
    node_cfg: &Arc<NodeConfig>,
    keys: &Arc<kaiabc_connectors::lake::ExistingKeys>,
) -> Result<WorkerResult, String> {
    let index = worker.index();
    let stats = Rc::new(RefCell::new(NodeStats::default()));
    let report = Rc::new(RefCell::new(SinkReport::default()));
    let writer = LakeWriter::new(opts.lake.clone(), index).map_err(|e| e.to_string())?;
    let probe = ProbeHandle::new();
    let (inputs, caps) = worker.dataflow::<u64, _, _>(|scope| {
        let seen = {
            let keys = Arc::clone(keys);
            Rc::new(move |r: &kaiabc_schemas::SensorReading| {
                keys.has_reading(&r.node_id, r.seq, r.timestamp.timestamp_micros())
            })
        };
        let ((readings_in, readings_cap), readings) =
            scope.new_unordered_input::<CapacityContainerBuilder<Vec<Routed>>>();
        let ((dead_in, dead_cap), dead) =
            scope.new_unordered_input::<CapacityContainerBuilder<Vec<LakeRow>>>();
        readings
            .node_clocks(
                Arc::clone(node_cfg),
                Ordering::Frontier,
                seen,
                Rc::clone(&stats),
            )
            .concat(dead)
            .probe_with(&probe)
            .lake_sink(writer, Rc::clone(&report));
        ((readings_in, dead_in), (readings_cap, dead_cap))
    });

    let mut result = WorkerResult::default();
    if index == 0 {
        let mut source = Source {
            readings_in: inputs.0,
            dead_in: inputs.1,
            readings_cap: caps.0,
            dead_cap: caps.1,
            readings: BTreeMap::new(),
            dead: BTreeMap::new(),
            watermark: 0,
        };
        let started = Instant::now();
        let stepping = read_all(worker, opts, keys, &mut source, &probe, &mut result)?;
        source.flush();
        result.source_busy = started.elapsed().saturating_sub(stepping);
        // Dropping the source's handles and capabilities closes the inputs.
    } else {
        drop(caps);
        drop(inputs);
    }
    while worker.step() {}
    result.nodes = *stats.borrow();
    result.sink = std::mem::take(&mut *report.borrow_mut());
    Ok(result)
}

type ReadingsIn = UnorderedHandle<u64, CapacityContainerBuilder<Vec<Routed>>>;
type DeadIn = UnorderedHandle<u64, CapacityContainerBuilder<Vec<LakeRow>>>;

/// Worker 0's two inputs, with records buffered by the timely time they are sent at.
struct Source {
    readings_in: ReadingsIn,
    dead_in: DeadIn,
    readings_cap: ActivateCapability<u64>,
    dead_cap: ActivateCapability<u64>,
    readings: BTreeMap<u64, Vec<Routed>>,
    dead: BTreeMap<u64, Vec<LakeRow>>,
    /// `max event time read so far − lateness`, in ticks: a record is sent at its own event
    /// time's tick, or at the watermark if it is older (then it may be late).
    watermark: u64,
}

impl Source {
    /// Sends what is buffered and moves the inputs' capabilities up to the watermark.
    fn flush(&mut self) {
        for (t, mut batch) in std::mem::take(&mut self.readings) {
            let cap = self.readings_cap.delayed(&t);
            self.readings_in
                .activate()
                .session(&cap)
                .give_container(&mut batch);
        }
        for (t, mut batch) in std::mem::take(&mut self.dead) {
            let cap = self.dead_cap.delayed(&t);
            self.dead_in
                .activate()
                .session(&cap)
                .give_container(&mut batch);
        }
        if self.watermark > *self.readings_cap.time() {
            self.readings_cap = self.readings_cap.delayed(&self.watermark);
            self.dead_cap = self.dead_cap.delayed(&self.watermark);
        }
    }
}

/// A bar over the logs' bytes, drawn only when `opts.progress` (stderr is a terminal).
fn progress_bar(opts: &ReplayOptions) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    let total: u64 = opts
        .files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Worker 0's source: reads every file, validates, and feeds the two inputs.
fn read_all(
    worker: &mut timely::worker::Worker,
    opts: &ReplayOptions,
    keys: &kaiabc_connectors::lake::ExistingKeys,
    src: &mut Source,
    probe: &ProbeHandle<u64>,
    result: &mut WorkerResult,
) -> Result<Duration, String> {
    // Time spent running the dataflow from inside the source loop, so the caller can tell
    // reading from processing.
    let mut stepping = Duration::ZERO;
    let lateness = opts.lateness.as_micros() as i64;
    let mut max_seen: Option<i64> = None;
    let mut ordinal = 0u64;
    let mut pace: Option<(Instant, i64)> = None;
    let mut pending = 0usize;
    let bar = progress_bar(opts);
    let mut bytes_before = 0u64;
    for (path, format) in &opts.files {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut bytes = 0u64;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        // A dead letter is stamped with the newest event time read so far from its file (the
        // file's mtime before the first valid reading): deterministic, and in the file's era.
        let mut file_max: Option<i64> = None;
        let mtime: DateTime<Utc> = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_default();
        bar.set_message(name.clone());
        let read = read_log(path, *format, |rec| {
            result.events_in += 1;
            ordinal += 1;
            // Text logs advance by their bytes; a Parquet log jumps when it is done.
            if *format != Format::Parquet {
                bytes += rec.payload.len() as u64 + 1;
            }
            match rec.parsed.and_then(|raw| raw.validate(opts.now)) {
                Ok(reading) => {
                    let t = reading.timestamp.timestamp_micros();
                    if let Speed::Factor(f) = opts.speed {
                        let (wall0, ev0) = *pace.get_or_insert((Instant::now(), t));
                        let due =
                            wall0 + Duration::from_secs_f64(((t - ev0).max(0) as f64 / 1e6) / f);
                        if due > Instant::now() {
                            src.flush();
                            while Instant::now() < due {
                                worker.step();
                                std::thread::sleep(
                                    (due - Instant::now()).min(Duration::from_millis(5)),
                                );
                            }
                        }
                    }
                    let tick = tick_of(t).max(src.watermark);
                    src.readings
                        .entry(tick)
                        .or_default()
                        .push((ordinal, reading));
                    max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
                    file_max = Some(file_max.map_or(t, |m| m.max(t)));
                }
                Err(rejection) => {
                    *result.rejected.entry(rejection.reason).or_default() += 1;
                    let source = format!("file:{name}:{}", rec.line);
                    let payload = String::from_utf8_lossy(rec.payload);
                    if keys.has_dead_letter(&source, &payload) {
                        return;
                    }
                    let at = file_max
                        .and_then(DateTime::<Utc>::from_timestamp_micros)
                        .unwrap_or(mtime);
                    src.dead
                        .entry(src.watermark)
                        .or_default()
                        .push(LakeRow::DeadLetter(DeadLetter::new(
                            at,
                            source,
                            rec.payload,
                            rejection,
                        )));
                }
            }
            if let Some(m) = max_seen {
                src.watermark = src.watermark.max(tick_of(m - lateness));
            }
            // Let the dataflow work every few thousand records, and keep it from falling far
            // behind the source (bounded memory).
            pending += 1;
            if pending >= 4096 {
                pending = 0;
                src.flush();
                let t = Instant::now();
                worker.step();
                let behind = src.readings_cap.time().saturating_sub(60 * 24);
                while probe.less_than(&behind) {
                    worker.step();
                }
                stepping += t.elapsed();
                bar.set_position(bytes_before + bytes.min(size));
            }
        });
        read.map_err(|e| e.to_string())?;
        bytes_before += size;
        bar.set_position(bytes_before);
    }
    bar.finish_and_clear();
    Ok(stepping)
}
