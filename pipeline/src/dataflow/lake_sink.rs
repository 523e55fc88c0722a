//! The lake as a timely sink: rows are buffered per worker, complete days roll as the frontier
//! passes them, everything is committed when the input ends, and (live) also every few seconds.

use std::cell::RefCell;
use std::rc::Rc;

use kaiabc_connectors::lake::{LakeError, LakeWriter};
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
    /// Rows per table received: readings, states, rhythms, dead letters.
    pub rows: [u64; 4],
    /// The first error (the sink stops writing after it).
    pub error: Option<LakeError>,
    /// Time spent in the writer (buffering, encoding, writing, committing).
    pub busy: std::time::Duration,
}

/// Extension trait: write a stream of lake rows into the lake.
pub trait LakeSink {
    /// Sinks the rows into `writer` (this worker's), reporting into `report`. With
    /// `commit_every`, buffered rows are also staged and committed at that interval of wall
    /// time (live mode: SQL sees fresh data), even while no rows arrive.
    fn lake_sink(
        self,
        writer: LakeWriter,
        report: Rc<RefCell<SinkReport>>,
        commit_every: Option<Duration>,
    );
}

impl LakeSink for Stream<'_, u64, Vec<LakeRow>> {
    fn lake_sink(
        self,
        mut writer: LakeWriter,
        report: Rc<RefCell<SinkReport>>,
        commit_every: Option<Duration>,
    ) {
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
                        for r in data.iter() {
                            let i = match r {
                                LakeRow::Reading(_) => 0,
                                LakeRow::State(_) => 1,
                                LakeRow::Rhythm(_) => 2,
                                LakeRow::DeadLetter(_) => 3,
                            };
                            rep.rows[i] += 1;
                        }
                        if rep.error.is_none() {
                            if let Err(e) = writer.process(data) {
                                rep.error = Some(e);
                            }
                        }
                        data.clear();
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
                            let done = writer.checkpoint().and_then(|()| writer.commit());
                            match done {
                                Ok(c) => rep.committed += c,
                                Err(e) => rep.error = Some(e),
                            }
                        }
                    }
                    if let (Some(every), false) = (commit_every, finished) {
                        if last_commit.elapsed() >= every {
                            last_commit = Instant::now();
                            let done = writer.checkpoint().and_then(|()| writer.commit());
                            match done {
                                Ok(c) => rep.committed += c,
                                Err(e) => rep.error = Some(e),
                            }
                        }
                        activator.activate_after(every.saturating_sub(last_commit.elapsed()));
                    }
                    rep.busy += started.elapsed();
                }
            },
        );
    }
}
