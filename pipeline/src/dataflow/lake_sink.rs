//! The lake as a timely sink: rows are buffered per worker, complete days roll as the frontier
//! passes them, and everything is checkpointed and committed when the input ends.

use std::cell::RefCell;
use std::rc::Rc;

use kaiabc_connectors::lake::{LakeError, LakeWriter};
use kaiabc_connectors::sink::{CommitSummary, Sink};
use kaiabc_schemas::LakeRow;
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
    /// Sinks the rows into `writer` (this worker's), reporting into `report`.
    fn lake_sink(self, writer: LakeWriter, report: Rc<RefCell<SinkReport>>);
}

impl LakeSink for Stream<'_, u64, Vec<LakeRow>> {
    fn lake_sink(self, mut writer: LakeWriter, report: Rc<RefCell<SinkReport>>) {
        let mut finished = false;
        let mut last_tick = 0u64;
        self.sink(Pipeline, "LakeSink", move |(input, frontier)| {
            let started = std::time::Instant::now();
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
            rep.busy += started.elapsed();
        });
    }
}
