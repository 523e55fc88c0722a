//! The lake as a timely sink: rows are buffered per worker, complete days roll as the frontier
//! passes them, everything is committed when the input ends, and (live) at every checkpoint
//! barrier, whose node checkpoints are saved right after the rows before it are committed.
//! Live, the writing runs on a thread of its own, so encoding and syncing files never holds up
//! the readings behind them.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::durability::Durability;
use kaiabc_connectors::lake::{CheckpointWriter, LakeError, LakeWriter};
use kaiabc_connectors::sink::{CommitSummary, Sink};
use kaiabc_operators::dedup::FilesProgress;
use kaiabc_schemas::LakeRow;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

use super::MICROS_PER_TICK;

/// What a worker's lake sink did, and its first error.
#[derive(Debug, Default)]
pub struct SinkReport {
    /// Committed files and rows.
    pub committed: CommitSummary,
    /// Rows per table received: readings, states, rhythms, dead letters, phase shifts.
    pub rows: [u64; 7],
    /// The first error (the sink stops writing after it).
    pub error: Option<LakeError>,
    /// Time spent in the writer (buffering, encoding, writing, committing).
    pub busy: std::time::Duration,
    /// Checkpoint barriers handled, and node checkpoints saved at them.
    pub checkpoints: (u64, u64),
    /// Commits made.
    pub commits: u64,
}

/// Hears the `epoch` of each checkpoint barrier once its rows are committed and its
/// checkpoints saved (on the writing thread, when there is one).
pub type CheckpointHook = Box<dyn Fn(u64) + Send>;

/// When the sink commits, besides at the end of the input.
#[derive(Default)]
pub struct SinkOptions {
    /// Also commit at this interval of wall time (even while no rows arrive).
    pub commit_every: Option<Duration>,
    /// Save the node checkpoints of each barrier here (a barrier always commits).
    pub checkpoints: Option<CheckpointWriter>,
    /// Told of every barrier saved (see [`CheckpointHook`]).
    pub on_checkpoint: Option<CheckpointHook>,
    /// Write on a thread of its own (live: the worker goes on applying readings while files are
    /// encoded and synced). Rows, commits and checkpoints keep their order.
    pub background: bool,
    /// Told how far the reading rows received are written out to files, so the node operator
    /// on this worker can forget their keys (see `kaiabc_operators::dedup::InFiles`).
    pub files: Option<Arc<FilesProgress>>,
    /// Live, with a writing thread: a failed write (a full disk, no file descriptors) is
    /// reported here and retried with backoff until it succeeds, instead of stopping the sink
    /// for good; the barrier waits for it, so nothing is acknowledged upstream meanwhile.
    pub retry: Option<Arc<Durability>>,
}

impl std::fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkOptions")
            .field("commit_every", &self.commit_every)
            .field("checkpoints", &self.checkpoints)
            .field("on_checkpoint", &self.on_checkpoint.is_some())
            .field("background", &self.background)
            .field("files", &self.files)
            .field("retry", &self.retry.is_some())
            .finish()
    }
}

/// Commits everything buffered, then saves `nodes`, so saved checkpoints never run ahead of
/// committed rows; the commit's figures, and how many checkpoints were saved. A crash between
/// the two (a few milliseconds) leaves the previous checkpoints: those nodes resume from there,
/// and the readings committed in between, which the lake's keys now mark as duplicates, are not
/// applied to their clocks again. Calling it again after an error carries on (the writer keeps
/// what it could not stage or rename).
fn commit(
    writer: &mut LakeWriter,
    ckpt: Option<&mut CheckpointWriter>,
    nodes: &[kaiabc_schemas::NodeCheckpointEntry],
) -> Result<(CommitSummary, u64), LakeError> {
    writer.checkpoint()?;
    let c = writer.commit()?;
    let saved = match ckpt {
        Some(w) => {
            w.write(nodes)?;
            nodes.len() as u64
        }
        None => 0,
    };
    Ok((c, saved))
}

/// How long a failed commit waits before it is tried again: doubling from the first, up to
/// the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Tries left once the server is stopping: then the sink gives up (the acknowledged data is
/// still in the write-ahead log or Kafka, and the next start commits it).
const TRIES_WHEN_STOPPING: u32 = 3;

/// The start (µs) of the UTC day of `micros`: the lake writes out the days before a watermark's.
fn day_start(micros: i64) -> i64 {
    const DAY: i64 = 86_400_000_000;
    micros.div_euclid(DAY) * DAY
}

/// What the writer does, in order.
enum Job {
    Rows(Vec<LakeRow>),
    Watermark(i64),
    /// Commit; with checkpoints (a barrier) save them after, then tell the hook its epoch.
    Commit(Option<(Vec<kaiabc_schemas::NodeCheckpointEntry>, u64)>),
}

/// The writer, its checkpoint writer and hook, with a report of what they did.
struct Writer {
    lake: LakeWriter,
    ckpt: Option<CheckpointWriter>,
    hook: Option<CheckpointHook>,
    files: Option<Arc<FilesProgress>>,
    /// Retry failed writes, reporting here (see [`SinkOptions::retry`]).
    retry: Option<Arc<Durability>>,
    /// Reading rows received, in order (numbered as the node operator emitted them).
    readings: u64,
}

impl Writer {
    fn run(&mut self, job: Job, rep: &mut SinkReport) {
        if rep.error.is_some() {
            return;
        }
        let started = Instant::now();
        match job {
            Job::Rows(mut rows) => {
                self.readings += rows
                    .iter()
                    .filter(|r| matches!(r, LakeRow::Reading(_)))
                    .count() as u64;
                if let Err(e) = self.lake.process(&mut rows) {
                    self.fail("lake staging", e, rep);
                }
            }
            Job::Watermark(us) => match self.lake.watermark(us) {
                Ok(()) => {
                    if let Some(f) = &self.files {
                        f.rolled(self.readings, day_start(us));
                    }
                }
                Err(e) => self.fail("lake staging", e, rep),
            },
            Job::Commit(barrier) => self.commit(barrier, rep),
        }
        rep.busy += started.elapsed();
    }

    /// A staging failure: reported (the writer keeps the rows, and the next commit stages
    /// them again), or, without retries, the sink's error.
    fn fail(&self, what: &str, e: LakeError, rep: &mut SinkReport) {
        match &self.retry {
            Some(d) => d.failed(what, &e),
            None => rep.error = Some(e),
        }
    }

    /// Commits (and saves the barrier's checkpoints, then tells the hook its epoch); with
    /// retries, a failure is reported and tried again with backoff until it succeeds, so the
    /// barrier is acknowledged only once its rows are durable.
    fn commit(
        &mut self,
        barrier: Option<(Vec<kaiabc_schemas::NodeCheckpointEntry>, u64)>,
        rep: &mut SinkReport,
    ) {
        let (nodes, epoch) = match barrier {
            Some((nodes, epoch)) => {
                rep.checkpoints.0 += 1;
                (nodes, Some(epoch))
            }
            None => (Vec::new(), None),
        };
        // A plain commit (no barrier) saves no checkpoints.
        let mut ckpt = if epoch.is_some() {
            self.ckpt.as_mut()
        } else {
            None
        };
        let (mut wait, mut tries_left) = (RETRY_FIRST, TRIES_WHEN_STOPPING);
        let (c, saved) = loop {
            match commit(&mut self.lake, ckpt.as_deref_mut(), &nodes) {
                Ok(done) => break done,
                Err(e) => {
                    let Some(d) = &self.retry else {
                        rep.error = Some(e);
                        return;
                    };
                    d.failed("lake commit", &e);
                    if d.stopping() {
                        tries_left = tries_left.saturating_sub(1);
                        if tries_left == 0 {
                            rep.error = Some(e);
                            return;
                        }
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        };
        if let Some(d) = &self.retry {
            d.succeeded();
        }
        rep.committed += c;
        rep.commits += 1;
        rep.checkpoints.1 += saved;
        if let Some(f) = &self.files {
            f.all_in_files(self.readings);
        }
        if let (Some(epoch), Some(hook)) = (epoch, &self.hook) {
            hook(epoch);
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10): encoding and syncing a commit's
/// files is the biggest burst of CPU in the live pipeline, and on a small machine it should
/// take what the dataflow, the broker and the HTTP server leave. The latency bench's slowest
/// 1 % of readings fell in the seconds of the commits before this.
fn background_priority() {
    // SAFETY: plain syscalls on the calling thread's own id; failure leaves the priority as
    // it was, which is only slower.
    #[cfg(target_os = "linux")]
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::debug!("could not lower the lake writer's priority");
        }
    }
}

/// Jobs in flight to a writing thread. When they are all taken, the worker keeps later jobs
/// itself ([`Writing::Background`]'s `pending`), merging consecutive rows into one job.
const BACKGROUND_JOBS: usize = 256;

/// Rows the worker keeps for a writing thread that is behind before it waits for it
/// (backpressure: the lake is the durable sink, so it sets the pace when it cannot keep up).
/// About 10 s at 10 000 readings/s, some tens of MB. A bound on jobs alone made the worker
/// wait out every commit at high rates: a job is a handful of rows, so 256 of them were a
/// quarter of a second, less than a commit takes at nice 10 on a busy machine.
const PENDING_ROWS: usize = 200_000;

/// Consecutive rows waiting in `pending` are merged into one job up to about this many. One
/// job of every waiting row (up to [`PENDING_ROWS`]) was regrown by doubling, each time a
/// copy into fresh pages the kernel had to zero: 9 % of the live server's CPU while it caught
/// up on a backlog in Kafka.
const MERGED_ROWS: usize = 4_096;

/// How soon the sink looks again at jobs waiting for room in the channel.
const PUMP_AGAIN: Duration = Duration::from_millis(5);

/// Where the sink's jobs go: done at once on the worker, or queued to a writing thread.
enum Writing {
    Inline(Box<Writer>),
    Background {
        tx: Option<std::sync::mpsc::SyncSender<Job>>,
        thread: Option<std::thread::JoinHandle<()>>,
        report: Arc<Mutex<SinkReport>>,
        /// Jobs not yet taken by the channel, in order; consecutive rows merged.
        pending: std::collections::VecDeque<Job>,
        /// Rows in `pending`.
        pending_rows: usize,
    },
}

impl Writing {
    fn new(w: Writer, background: bool) -> Self {
        if !background {
            return Self::Inline(Box::new(w));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(BACKGROUND_JOBS);
        let report = Arc::new(Mutex::new(SinkReport::default()));
        let shared = Arc::clone(&report);
        let thread = std::thread::Builder::new()
            .name(format!("lake-writer-{}", w.lake.worker()))
            .spawn(move || {
                background_priority();
                let mut w = w;
                // The job runs on a report of its own; the shared one is locked only to copy
                // the figures over, so the worker never waits out a commit on the lock.
                let mut local = SinkReport::default();
                for job in rx {
                    w.run(job, &mut local);
                    let Ok(mut r) = shared.lock() else { return };
                    r.committed = local.committed.clone();
                    r.checkpoints = local.checkpoints;
                    r.commits = local.commits;
                    r.busy = local.busy;
                    if let Some(e) = local.error.take() {
                        r.error.get_or_insert(e);
                        // Nothing more is written after an error (as inline).
                        local.error = Some(LakeError::Config("an earlier write failed".into()));
                    }
                }
            })
            .expect("spawn the lake writer");
        Self::Background {
            tx: Some(tx),
            thread: Some(thread),
            report,
            pending: Default::default(),
            pending_rows: 0,
        }
    }

    fn send(&mut self, job: Job, rep: &mut SinkReport) {
        if matches!(&job, Job::Rows(r) if r.is_empty()) {
            return;
        }
        match self {
            Self::Inline(w) => w.run(job, rep),
            Self::Background {
                pending,
                pending_rows,
                ..
            } => {
                match (pending.back_mut(), job) {
                    (Some(Job::Rows(last)), Job::Rows(mut rows)) if last.len() < MERGED_ROWS => {
                        *pending_rows += rows.len();
                        last.append(&mut rows);
                    }
                    (_, job) => {
                        if let Job::Rows(r) = &job {
                            *pending_rows += r.len();
                        }
                        pending.push_back(job);
                    }
                }
                self.pump(false);
            }
        }
    }

    /// Hands pending jobs to the writing thread: as many as the channel takes, and with
    /// `wait` (or beyond [`PENDING_ROWS`]) all of them, waiting for room.
    fn pump(&mut self, wait: bool) {
        let Self::Background {
            tx: Some(tx),
            pending,
            pending_rows,
            ..
        } = self
        else {
            return;
        };
        while let Some(job) = pending.pop_front() {
            let rows = match &job {
                Job::Rows(r) => r.len(),
                _ => 0,
            };
            let sent = if wait || *pending_rows > PENDING_ROWS {
                // The thread ends only on an error it has reported (or a panic): then the
                // job is dropped, as nothing more is written after an error.
                let _ = tx.send(job);
                true
            } else {
                match tx.try_send(job) {
                    Ok(()) | Err(std::sync::mpsc::TrySendError::Disconnected(_)) => true,
                    Err(std::sync::mpsc::TrySendError::Full(job)) => {
                        pending.push_front(job);
                        false
                    }
                }
            };
            if !sent {
                return;
            }
            *pending_rows -= rows;
        }
    }

    /// Whether jobs wait in the worker for room in the channel.
    fn has_pending(&self) -> bool {
        matches!(self, Self::Background { pending, .. } if !pending.is_empty())
    }

    /// Hands on what the channel now takes, and copies the writing thread's figures into
    /// `rep` (its error, once, moves over).
    fn sync(&mut self, rep: &mut SinkReport) {
        self.pump(false);
        if let Self::Background { report, .. } = self {
            if let Ok(mut r) = report.try_lock() {
                rep.committed = r.committed.clone();
                rep.checkpoints = r.checkpoints;
                rep.commits = r.commits;
                rep.busy = r.busy;
                if let Some(e) = r.error.take() {
                    rep.error.get_or_insert(e);
                }
            }
        }
    }

    /// Waits for every job sent to be done.
    fn finish(&mut self, rep: &mut SinkReport) {
        self.pump(true);
        if let Self::Background { tx, thread, .. } = self {
            tx.take();
            if let Some(t) = thread.take() {
                if t.join().is_err() {
                    rep.error
                        .get_or_insert(LakeError::Config("the lake writer thread panicked".into()));
                }
            }
        }
        self.sync(rep);
    }
}

/// Extension trait: write a stream of lake rows into the lake.
pub trait LakeSink {
    /// Sinks the rows into `writer` (this worker's), reporting into `report`, committing as
    /// `opts` says (live mode: SQL sees fresh data) and when the input ends.
    fn lake_sink(self, writer: LakeWriter, report: Rc<RefCell<SinkReport>>, opts: SinkOptions);
}

impl LakeSink for Stream<'_, u64, Vec<LakeRow>> {
    fn lake_sink(self, writer: LakeWriter, report: Rc<RefCell<SinkReport>>, opts: SinkOptions) {
        let SinkOptions {
            commit_every,
            checkpoints: ckpt,
            on_checkpoint,
            background,
            files,
            retry,
        } = opts;
        let mut writing = Writing::new(
            Writer {
                lake: writer,
                ckpt,
                hook: on_checkpoint,
                files,
                retry: retry.filter(|_| background),
                readings: 0,
            },
            background,
        );
        let mut chunk: Vec<LakeRow> = Vec::new();
        let mut finished = false;
        let mut last_tick = 0u64;
        let mut last_commit = Instant::now();
        let scope = self.scope();
        // An operator with an (unused) output, for its address: it re-activates itself so the
        // interval commit happens without new input.
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "LakeSink",
            move |_cap, info| {
                let activator = scope.activator_for(info.address);
                if let Some(every) = commit_every {
                    activator.activate_after(every);
                }
                move |(input, frontier), _output| {
                    let mut rep = report.borrow_mut();
                    writing.sync(&mut rep);
                    input.for_each(|_, data| {
                        let mut barriers = false;
                        for r in data.iter() {
                            let i = match r {
                                LakeRow::Reading(_) => 0,
                                LakeRow::State(_) => 1,
                                LakeRow::Rhythm(_) => 2,
                                LakeRow::DeadLetter(_) => 3,
                                LakeRow::PhaseShift(_) => 4,
                                LakeRow::Fleet(_) => 5,
                                LakeRow::Alert(_) => 6,
                                LakeRow::Checkpoint(_) => {
                                    barriers = true;
                                    continue;
                                }
                            };
                            rep.rows[i] += 1;
                        }
                        if rep.error.is_some() {
                            data.clear();
                            return;
                        }
                        if !barriers {
                            writing.send(Job::Rows(std::mem::take(data)), &mut rep);
                            return;
                        }
                        // Rows before a barrier are committed at it; rows after it wait.
                        for row in data.drain(..) {
                            match row {
                                LakeRow::Checkpoint(c) => {
                                    writing.send(Job::Rows(std::mem::take(&mut chunk)), &mut rep);
                                    writing.send(Job::Commit(Some((c.nodes, c.epoch))), &mut rep);
                                }
                                other => chunk.push(other),
                            }
                        }
                        writing.send(Job::Rows(std::mem::take(&mut chunk)), &mut rep);
                    });
                    if rep.error.is_some() || finished {
                        return;
                    }
                    match frontier.frontier().first() {
                        Some(&tick) if tick > last_tick => {
                            last_tick = tick;
                            writing.send(Job::Watermark(tick as i64 * MICROS_PER_TICK), &mut rep);
                        }
                        Some(_) => {}
                        None => {
                            finished = true;
                            writing.send(Job::Commit(None), &mut rep);
                            writing.finish(&mut rep);
                        }
                    }
                    if let (Some(every), false) = (commit_every, finished) {
                        if last_commit.elapsed() >= every {
                            last_commit = Instant::now();
                            writing.send(Job::Commit(None), &mut rep);
                        }
                        activator.activate_after(every.saturating_sub(last_commit.elapsed()));
                    }
                    if writing.has_pending() {
                        // Come back to hand them on even if no input arrives.
                        activator.activate_after(PUMP_AGAIN);
                    }
                }
            },
        );
    }
}
