//! The lake as a timely sink: rows are buffered per worker, complete days roll as the frontier
//! passes them, everything is committed when the input ends, and (live) at every checkpoint
//! barrier, whose node checkpoints are saved right after the rows before it are committed.

use std::cell::RefCell;
use std::rc::Rc;

use kaiabc_connectors::lake::{CheckpointWriter, LakeError, LakeWriter};
use kaiabc_connectors::sink::{CommitSummary, Sink};
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
    pub rows: [u64; 5],
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
/// checkpoints saved.
pub type CheckpointHook = Box<dyn Fn(u64)>;

/// When the sink commits, besides at the end of the input.
#[derive(Default)]
pub struct SinkOptions {
    /// Also commit at this interval of wall time (even while no rows arrive).
    pub commit_every: Option<Duration>,
    /// Save the node checkpoints of each barrier here (a barrier always commits).
    pub checkpoints: Option<CheckpointWriter>,
    /// Told of every barrier saved (see [`CheckpointHook`]).
    pub on_checkpoint: Option<CheckpointHook>,
}

impl std::fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkOptions")
            .field("commit_every", &self.commit_every)
            .field("checkpoints", &self.checkpoints)
            .field("on_checkpoint", &self.on_checkpoint.is_some())
            .finish()
    }
}

/// Commits everything buffered, then saves `nodes`, so saved checkpoints never run ahead of
/// committed rows. A crash between the two (a few milliseconds) leaves the previous
/// checkpoints: those nodes resume from there, and the readings committed in between, which
/// the lake's keys now mark as duplicates, are not applied to their clocks again.
fn commit(
    writer: &mut LakeWriter,
    ckpt: Option<&mut CheckpointWriter>,
    nodes: &[kaiabc_schemas::NodeCheckpointEntry],
    rep: &mut SinkReport,
) {
    let done = writer.checkpoint().and_then(|()| writer.commit());
    match done {
        Ok(c) => {
            rep.committed += c;
            rep.commits += 1;
        }
        Err(e) => {
            rep.error = Some(e);
            return;
        }
    }
    if let Some(w) = ckpt {
        match w.write(nodes) {
            Ok(()) => rep.checkpoints.1 += nodes.len() as u64,
            Err(e) => rep.error = Some(e),
        }
    }
}

/// Extension trait: write a stream of lake rows into the lake.
pub trait LakeSink {
    /// Sinks the rows into `writer` (this worker's), reporting into `report`, committing as
    /// `opts` says (live mode: SQL sees fresh data) and when the input ends.
    fn lake_sink(self, writer: LakeWriter, report: Rc<RefCell<SinkReport>>, opts: SinkOptions);
}

impl LakeSink for Stream<'_, u64, Vec<LakeRow>> {
    fn lake_sink(self, mut writer: LakeWriter, report: Rc<RefCell<SinkReport>>, opts: SinkOptions) {
        let SinkOptions {
            commit_every,
            checkpoints: mut ckpt,
            on_checkpoint,
        } = opts;
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
                    let started = Instant::now();
                    let mut rep = report.borrow_mut();
                    input.for_each(|_, data| {
                        let mut barriers = false;
                        for r in data.iter() {
                            let i = match r {
                                LakeRow::Reading(_) => 0,
                                LakeRow::State(_) => 1,
                                LakeRow::Rhythm(_) => 2,
                                LakeRow::DeadLetter(_) => 3,
                                LakeRow::PhaseShift(_) => 4,
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
                            if let Err(e) = writer.process(data) {
                                rep.error = Some(e);
                            }
                            data.clear();
                            return;
                        }
                        // Rows before a barrier are committed at it; rows after it wait.
                        for row in data.drain(..) {
                            match row {
                                LakeRow::Checkpoint(c) => {
                                    if let Err(e) = writer.process(&mut chunk) {
                                        rep.error = Some(e);
                                    }
                                    if rep.error.is_none() {
                                        rep.checkpoints.0 += 1;
                                        commit(&mut writer, ckpt.as_mut(), &c.nodes, &mut rep);
                                    }
                                    if let (None, Some(hook)) = (&rep.error, &on_checkpoint) {
                                        hook(c.epoch);
                                    }
                                }
                                other => chunk.push(other),
                            }
                        }
                        if let Err(e) = writer.process(&mut chunk) {
                            rep.error = Some(e);
                        }
                        chunk.clear();
                    });
                    if rep.error.is_some() || finished {
                        return;
                    }
                    match frontier.frontier().first() {
                        Some(&tick) if tick > last_tick => {
                            last_tick = tick;
                            if let Err(e) = writer.watermark(tick as i64 * MICROS_PER_TICK) {
                                rep.error = Some(e);
                            }
                        }
                        Some(_) => {}
                        None => {
                            finished = true;
                            commit(&mut writer, None, &[], &mut rep);
                        }
                    }
                    if let (Some(every), false) = (commit_every, finished) {
                        if last_commit.elapsed() >= every {
                            last_commit = Instant::now();
                            commit(&mut writer, None, &[], &mut rep);
                        }
                        activator.activate_after(every.saturating_sub(last_commit.elapsed()));
                    }
                    rep.busy += started.elapsed();
                }
            },
        );
    }
}
