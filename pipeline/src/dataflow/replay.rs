//! Batch replay of sensor logs through the dataflow into the lake.
//!
//! A reader thread reads the files in the order given and finds each line's node id and
//! timestamp without parsing the rest; worker 0 sends each line to the worker that owns its
//! node, which parses and validates it. A record travels at a timely time (whole minutes of
//! event time): its own event time's minute, or, when it is older than the watermark `max
//! event time read so far − allowed lateness`, the watermark. (Every record with a readable
//! timestamp that is not in the future moves the watermark, valid or not: the source cannot
//! tell, and need not.) The per-node operator applies each minute's readings in event-time
//! order once the frontier passes it, so readings out of order by less than the lateness are
//! applied in order and later ones are kept as late. That assignment depends only on the order
//! of the input, so the lake's rows are the same for any number of workers and any split of
//! the input into files.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use kaiabc_connectors::file::{Format, LineParser};
use kaiabc_connectors::lake::{existing_keys, LakeConfig, LakeWriter};
use kaiabc_operators::dataflow::{node_hash, NodeStats, Ordering};
use kaiabc_operators::node::NodeConfig;
use kaiabc_schemas::validate::MAX_FUTURE;
use kaiabc_schemas::Reason;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::{ActivateCapability, Probe};
use timely::dataflow::ProbeHandle;

use super::lake_sink::{LakeSink, SinkOptions, SinkReport};
use super::parse::{Incoming, LogFile, ParseStats};
use super::past::{lake_keys, LakeSummaries};
use super::reader::Read;
use super::{lake_rows, tick_of, with_fleet};
use crate::fleet::FleetBook;
use differential_dataflow::input::Input as _;
use kaiabc_operators::dedup::FilesProgress;
use kaiabc_operators::fleet::{Name, NodeMeta};
use std::sync::Mutex;

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
    /// Timely worker threads (in this process).
    pub workers: usize,
    /// The cluster this process is part of (one process by default).
    pub cluster: crate::cluster::ClusterArgs,
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
    /// Control commands, sorted by time, merged into the readings as event time passes them.
    pub control: Vec<kaiabc_schemas::ControlCommand>,
    /// The fleet's views' thresholds (`None`: no fleet views, `fleet` or `alerts` rows).
    pub fleet: Option<kaiabc_operators::fleet::FleetConfig>,
    /// The registry's records the fleet's views group nodes by (as of the replay's start).
    pub registry: Vec<(
        kaiabc_operators::fleet::Name,
        kaiabc_operators::fleet::NodeMeta,
    )>,
}

/// Reads control logs (JSON lines of commands), sorted by time. A bad line is an error: the
/// log is the operator's own record, and a replay that skipped a command would differ.
pub fn read_control_logs(paths: &[PathBuf]) -> anyhow::Result<Vec<kaiabc_schemas::ControlCommand>> {
    use anyhow::Context;
    let mut all = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the control log {}", path.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let cmd: kaiabc_schemas::ControlCommand = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a control command", path.display(), i + 1))?;
            all.push(cmd);
        }
    }
    // Stable: commands with the same time keep the log's order.
    all.sort_by_key(|c| c.timestamp);
    Ok(all)
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
    /// Rejected records by reason: invalid input, duplicates (dropped, not dead-lettered) and
    /// readings whose filter or clock failed (dead-lettered).
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
    /// The fleet's views where the input ended (`GET /v1/fleet/summary`'s shape), and every
    /// alert raised and cleared, in order.
    pub fleet: serde_json::Value,
    /// See `fleet`.
    pub alerts: Vec<serde_json::Value>,
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
            "fleet": self.fleet,
            "alerts": self.alerts,
        })
    }
}

/// Where a worker sends the fleet's changes: the run's book, and the alerts in order.
struct FleetSink {
    book: Arc<FleetBook>,
    alerts: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// Per-worker results, summed after the run.
#[derive(Default)]
struct WorkerResult {
    events_in: u64,
    source_busy: Duration,
    parse: ParseStats,
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
    let summaries = LakeSummaries::read(&opts.lake.root)
        .with_context(|| format!("reading what {} already holds", opts.lake.root.display()))?;
    let files = Arc::new(log_files(&opts.files)?);
    let node_cfg = Arc::new(node_cfg);
    let opts = Arc::new(opts);
    if opts.cluster.is_cluster() {
        crate::cluster::exit_when_a_peer_is_lost();
    }
    let book = Arc::new(FleetBook::new(opts.fleet.clone().unwrap_or_default()));
    let alerts: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let guards = opts
        .cluster
        .execute(opts.workers, {
            let opts = Arc::clone(&opts);
            let (book, alerts) = (Arc::clone(&book), Arc::clone(&alerts));
            move |worker| -> Result<WorkerResult, String> {
                let fleet = FleetSink {
                    book: Arc::clone(&book),
                    alerts: Arc::clone(&alerts),
                };
                run_worker(worker, &opts, &files, &node_cfg, &keys, &summaries, fleet)
            }
        })
        .map_err(|e| anyhow!("starting the workers: {e} [{}]", e.code()))?;
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
        for (k, v) in r.parse.rejected {
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
        if r.nodes.stale > 0 {
            *summary.rejected.entry(Reason::StaleTimestamp).or_default() += r.nodes.stale;
        }
        for (reason, n) in [
            (Reason::OdeInstability, r.nodes.clock_failures),
            (Reason::FilterDivergence, r.nodes.filter_failures),
        ] {
            if n > 0 {
                tracing::warn!(
                    count = n,
                    reason = reason.code(),
                    "readings failed in processing"
                );
                *summary.rejected.entry(reason).or_default() += n;
            }
        }
        state_bytes += r.nodes.state_bytes;
        summary.stage_busy[0] += r.source_busy + r.parse.busy;
        summary.stage_busy[1] += r.nodes.busy;
        summary.stage_busy[2] += r.sink.busy;
        summary.files_committed += r.sink.committed.files;
        summary.rows_committed += r.sink.committed.rows;
    }
    if opts.fleet.is_some() {
        summary.fleet = book.summary();
    }
    summary.alerts = std::mem::take(&mut *alerts.lock().map_err(|_| anyhow!("alerts lock"))?);
    summary.elapsed = started.elapsed();
    summary.state_bytes_per_node = state_bytes as f64 / summary.nodes.max(1) as f64;
    Ok(summary)
}

/// Each file's name and line parser (reading CSV headers now, so every worker has them and a
/// bad header fails before anything is written).
fn log_files(files: &[(PathBuf, Format)]) -> Result<Vec<LogFile>> {
    files
        .iter()
        .map(|(path, format)| {
            Ok(LogFile {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string()),
                parser: LineParser::open(path, *format)?,
            })
        })
        .collect()
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    opts: &ReplayOptions,
    files: &Arc<Vec<LogFile>>,
    node_cfg: &Arc<NodeConfig>,
    keys: &Arc<kaiabc_connectors::lake::ExistingKeys>,
    summaries: &Arc<LakeSummaries>,
    fleet: FleetSink,
) -> Result<WorkerResult, String> {
    let index = worker.index();
    // The fleet's changes reach every worker; one a process applies them to its book.
    let applies = crate::cluster::first_of_process(index, opts.workers);
    let stats = Rc::new(RefCell::new(NodeStats::default()));
    let parse_stats = Rc::new(RefCell::new(ParseStats::default()));
    let report = Rc::new(RefCell::new(SinkReport::default()));
    let writer = LakeWriter::new(opts.lake.clone(), index).map_err(|e| e.to_string())?;
    let in_files = Arc::new(FilesProgress::default());
    let lake = lake_keys(summaries, &writer, &in_files);
    let probe = ProbeHandle::new();
    let (input, cap, mut registry) = worker.dataflow::<u64, _, _>(|scope| {
        let ((records_in, records_cap), records) =
            scope.new_unordered_input::<CapacityContainerBuilder<Vec<Incoming>>>();
        let (registry_in, registry) = scope.new_collection::<(Name, NodeMeta), isize>();
        let rows = lake_rows(
            records,
            files,
            Some(opts.now),
            keys,
            lake,
            node_cfg,
            Ordering::Frontier,
            &parse_stats,
            &stats,
            None,
        );
        let rows = match opts.fleet.clone() {
            Some(cfg) => with_fleet(rows, None, registry, cfg, applies, move |c| {
                let applied = fleet.book.apply(c);
                if let Ok(mut a) = fleet.alerts.lock() {
                    a.extend(applied.alerts);
                }
            }),
            None => rows,
        };
        rows.probe_with(&probe).lake_sink(
            writer,
            Rc::clone(&report),
            SinkOptions {
                files: Some(in_files),
                ..SinkOptions::default()
            },
        );
        (records_in, records_cap, registry_in)
    });
    // The registry as it stands, at the start of event time; then its input closes.
    if index == 0 {
        for (node, meta) in &opts.registry {
            registry.insert((node.clone(), meta.clone()));
        }
    }
    registry.close();

    let mut result = WorkerResult::default();
    if index == 0 {
        let mut source = Source {
            input,
            cap,
            records: BTreeMap::new(),
            watermark: 0,
        };
        let started = Instant::now();
        let stepping = read_all(worker, opts, files, &mut source, &probe, &mut result)?;
        source.flush();
        result.source_busy = started.elapsed().saturating_sub(stepping);
        // Dropping the source's handle and capability closes the input.
    } else {
        drop(cap);
        drop(input);
    }
    // Parked while idle, woken by what the others send: the other workers wait for worker 0
    // (which also orders and routes every line) much of the time, and spinning polled the
    // channels it writes to (a quarter of worker 1's samples in `perf`).
    while worker.step_or_park(None) {}
    result.nodes = *stats.borrow();
    result.parse = std::mem::take(&mut *parse_stats.borrow_mut());
    result.sink = std::mem::take(&mut *report.borrow_mut());
    Ok(result)
}

type RecordsIn = UnorderedHandle<u64, CapacityContainerBuilder<Vec<Incoming>>>;

/// Worker 0's input, with records buffered by the timely time they are sent at.
struct Source {
    input: RecordsIn,
    cap: ActivateCapability<u64>,
    records: BTreeMap<u64, Vec<Incoming>>,
    /// `max event time read so far − lateness`, in ticks: a record is sent at its own event
    /// time's tick, or at the watermark if it is older (then it may be late).
    watermark: u64,
}

impl Source {
    /// Sends what is buffered and moves the input's capability up to the watermark.
    fn flush(&mut self) {
        for (t, mut batch) in std::mem::take(&mut self.records) {
            let cap = self.cap.delayed(&t);
            self.input
                .activate()
                .session(&cap)
                .give_container(&mut batch);
        }
        if self.watermark > *self.cap.time() {
            self.cap = self.cap.delayed(&self.watermark);
        }
    }
}

/// How far (ticks of event time) the source may read ahead of what the dataflow has
/// processed, past the lateness the watermark already allows. What it reads ahead waits in
/// timely's channels as whole lines: with a day's lead a 2 000-node day's replay peaked at
/// 515 MB to 1.1 GB from run to run (as far as the other worker fell behind); with ten
/// minutes at 444–479 MB, and ran as fast. Every operator (the fleet's views at any
/// resolution too) releases its capabilities as its input's frontier passes them, so the
/// dataflow always catches up to the lead.
const SOURCE_LEAD_TICKS: u64 = 10;

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

/// Worker 0's source: every file's records, read and peeked on the reader's thread
/// ([`super::reader`]), each sent unparsed to its node's worker at its time.
fn read_all(
    worker: &mut timely::worker::Worker,
    opts: &ReplayOptions,
    files: &Arc<Vec<LogFile>>,
    src: &mut Source,
    probe: &ProbeHandle<u64>,
    result: &mut WorkerResult,
) -> Result<Duration, String> {
    // Time spent running the dataflow from inside the source loop, so the caller can tell
    // reading from processing.
    let mut stepping = Duration::ZERO;
    let lateness = opts.lateness.as_micros() as i64;
    // A timestamp after this is rejected by validation: it must not move the watermark.
    let latest = (opts.now + MAX_FUTURE).timestamp_micros();
    let mut max_seen: Option<i64> = None;
    let mut ordinal = 0u64;
    let mut pace: Option<(Instant, i64)> = None;
    let mut pending = 0usize;
    let mut commands = opts.control.iter().peekable();
    let bar = progress_bar(opts);
    let mut bytes_before = 0u64;
    let reader = super::reader::start(opts.files.clone(), Arc::clone(files));
    let mut index = 0usize;
    let mut file = FileRead::open(opts, files, index, &bar);
    for read in reader {
        let lines = match read {
            Read::Lines(lines) => lines,
            Read::FileDone(done) => {
                bytes_before += file.size;
                bar.set_position(bytes_before);
                index = done + 1;
                if index < files.len() {
                    file = FileRead::open(opts, files, index, &bar);
                }
                continue;
            }
            Read::Failed(e) => return Err(e),
        };
        for rec in lines {
            result.events_in += 1;
            ordinal += 1;
            // Text logs advance by their bytes; a Parquet log jumps when it is done.
            if file.text {
                file.bytes += rec.payload.len() as u64 + 1;
            }
            let t = rec.micros.filter(|&t| t <= latest);
            let received_at = file
                .newest
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .unwrap_or(file.mtime);
            let tick = match t {
                Some(t) => {
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
                    max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
                    file.newest = Some(file.newest.map_or(t, |m| m.max(t)));
                    tick_of(t).max(src.watermark)
                }
                None => src.watermark,
            };
            // Commands due by this record's time go in first.
            if let Some(t) = t {
                while let Some(cmd) = commands.next_if(|c| c.timestamp.timestamp_micros() <= t) {
                    ordinal += 1;
                    push_command(src, cmd, ordinal, index);
                }
            }
            // No node: any worker will do; spread by position.
            let route = rec
                .node
                .unwrap_or_else(|| ordinal.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            src.records.entry(tick).or_default().push(Incoming {
                route,
                ordinal,
                file: index as u32,
                line: rec.line,
                received_at,
                source: None,
                payload: rec.payload,
                parsed: rec.parsed,
                marker: None,
            });
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
                let behind = src.cap.time().saturating_sub(SOURCE_LEAD_TICKS);
                while probe.less_than(&behind) {
                    // Parked, not spinning, while the other workers catch up: a spinning
                    // worker takes CPU they need when there are no more cores than workers.
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
                stepping += t.elapsed();
                bar.set_position(bytes_before + file.bytes.min(file.size));
            }
        }
    }
    if index < files.len() {
        return Err("the replay's reader stopped before the end of the files".into());
    }
    // Commands after the last reading still apply (they set up the state a restart resumes).
    for cmd in commands {
        ordinal += 1;
        push_command(src, cmd, ordinal, 0);
    }
    bar.finish_and_clear();
    Ok(stepping)
}

/// What the source keeps of the file being read.
struct FileRead {
    /// Its size, for the progress bar.
    size: u64,
    /// Bytes of it read so far (text logs).
    bytes: u64,
    /// Whether it is a text log (a Parquet one advances the bar when it is done).
    text: bool,
    /// The newest event time read from it so far: a dead letter is stamped with it (the
    /// file's mtime before the first readable one), deterministic and in the file's era.
    newest: Option<i64>,
    mtime: DateTime<Utc>,
}

impl FileRead {
    fn open(
        opts: &ReplayOptions,
        files: &[LogFile],
        index: usize,
        bar: &indicatif::ProgressBar,
    ) -> Self {
        let Some((path, format)) = opts.files.get(index) else {
            return Self {
                size: 0,
                bytes: 0,
                text: false,
                newest: None,
                mtime: DateTime::<Utc>::default(),
            };
        };
        let meta = std::fs::metadata(path).ok();
        if let Some(f) = files.get(index) {
            bar.set_message(f.name.clone());
        }
        Self {
            size: meta.as_ref().map_or(0, |m| m.len()),
            bytes: 0,
            text: *format != Format::Parquet,
            newest: None,
            mtime: meta
                .and_then(|m| m.modified().ok())
                .map(DateTime::<Utc>::from)
                .unwrap_or_default(),
        }
    }
}

/// Sends a command to its node's worker at its time (or the watermark, if that is later).
fn push_command(src: &mut Source, cmd: &kaiabc_schemas::ControlCommand, ordinal: u64, file: usize) {
    let t = cmd.timestamp.timestamp_micros();
    src.records
        .entry(tick_of(t).max(src.watermark))
        .or_default()
        .push(Incoming {
            route: node_hash(&cmd.node_id),
            ordinal,
            file: file as u32,
            line: 0,
            received_at: cmd.timestamp,
            source: None,
            payload: serde_json::to_vec(cmd).expect("a command always encodes"),
            parsed: None,
            marker: None,
        });
}
