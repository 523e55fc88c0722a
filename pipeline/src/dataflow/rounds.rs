//! Checkpoint rounds across every worker of every process, carried on timely's own progress
//! tracking: a small dataflow of epochs beside the main one, whose inputs' frontiers say which
//! round is called, which barriers are out and which checkpoints are saved, cluster-wide.
//!
//! Each of its inputs is held by workers at "the next epoch they have not done": a worker that
//! has sent the barrier of round `e` moves its `sent` input to `e + 1`. The probe of an input
//! then passes `e` once every worker of the cluster has moved past it: no message says so,
//! and nothing is shared in memory, so it works the same in one process and across several.
//! - `called`: held by the leader (worker 0) only; moved to `e + 1` to call round `e`, and
//!   closed to call the final round (the run is stopping).
//! - `sent`: every worker; moved past `e` once its node operator has sent round `e`'s barrier.
//! - `saved`: every worker; moved past `e` once its lake sink has committed the rows before that
//!   barrier and saved its checkpoints.
//!
//! Beside them, `stops` carries a message: a process asked to stop tells the others.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

type Signal = InputHandle<u64, CapacityContainerBuilder<Vec<()>>>;

/// One worker's end of the rounds.
pub struct Rounds {
    called: Option<Signal>,
    called_probe: ProbeHandle<u64>,
    sent: Option<Signal>,
    sent_probe: ProbeHandle<u64>,
    saved: Option<Signal>,
    saved_probe: ProbeHandle<u64>,
    stops: Option<Signal>,
    stop_sent: bool,
    /// The last barrier this worker's node operator has sent (set by the operator).
    barrier_sent: Rc<Cell<u64>>,
    /// The last round this worker's sink has saved (set by the sink's hook, on its thread).
    round_saved: Arc<AtomicU64>,
}

impl Rounds {
    /// Builds the rounds' dataflow on `worker` (every worker must, in the same order as its
    /// other dataflows). `barrier_sent` and `round_saved` are where this worker's node operator
    /// and sink note what they have done; `stopped` is called on every worker when any process
    /// stops.
    pub fn new(
        worker: &mut Worker,
        barrier_sent: Rc<Cell<u64>>,
        round_saved: Arc<AtomicU64>,
        stopped: impl Fn() + 'static,
    ) -> Self {
        let leader = worker.index() == 0;
        let (mut called, mut sent, mut saved, mut stops) =
            (Signal::new(), Signal::new(), Signal::new(), Signal::new());
        let (called_probe, sent_probe, saved_probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (called_probe, _) = called.to_stream(scope).probe();
            let (sent_probe, _) = sent.to_stream(scope).probe();
            let (saved_probe, _) = saved.to_stream(scope).probe();
            stops
                .to_stream(scope)
                .broadcast()
                .inspect(move |_: &()| stopped());
            (called_probe, sent_probe, saved_probe)
        });
        // Epochs start at 1: nothing is called, sent or saved yet.
        called.advance_to(1);
        sent.advance_to(1);
        saved.advance_to(1);
        stops.advance_to(1);
        Self {
            called: leader.then_some(called),
            called_probe,
            sent: Some(sent),
            sent_probe,
            saved: Some(saved),
            saved_probe,
            stops: Some(stops),
            stop_sent: false,
            barrier_sent,
            round_saved,
        }
    }

    /// Moves this worker's `sent` and `saved` inputs up to what its operators have done; call
    /// it from the worker's loop.
    pub fn advance(&mut self) {
        let sent = self.barrier_sent.get() + 1;
        if let Some(s) = self.sent.as_mut().filter(|s| *s.time() < sent) {
            s.advance_to(sent);
        }
        let saved = self.round_saved.load(Ordering::Acquire) + 1;
        if let Some(s) = self.saved.as_mut().filter(|s| *s.time() < saved) {
            s.advance_to(saved);
        }
    }

    /// The leader calls round `epoch` (rounds are called in order).
    pub fn call(&mut self, epoch: u64) {
        if let Some(c) = self.called.as_mut().filter(|c| *c.time() <= epoch) {
            c.advance_to(epoch + 1);
        }
    }

    /// The leader calls the final round: the run is stopping.
    pub fn call_final(&mut self) {
        self.called = None;
    }

    /// Whether round `epoch` has been called, and whether it is the final one.
    pub fn called(&self, epoch: u64) -> Called {
        let mut done = true;
        let mut passed = true;
        self.called_probe.with_frontier(|f| {
            done = f.is_empty();
            passed = !f.less_equal(&epoch);
        });
        match (done, passed) {
            (true, _) => Called::Final,
            (false, true) => Called::Yes,
            (false, false) => Called::No,
        }
    }

    /// Whether every worker of the cluster has sent round `epoch`'s barrier.
    pub fn all_sent(&self, epoch: u64) -> bool {
        !self.sent_probe.less_equal(&epoch)
    }

    /// Whether every worker of the cluster has saved round `epoch`.
    pub fn all_saved(&self, epoch: u64) -> bool {
        !self.saved_probe.less_equal(&epoch)
    }

    /// Tells every process to stop (once).
    pub fn stop_all(&mut self) {
        if let (Some(s), false) = (self.stops.as_mut(), self.stop_sent) {
            s.send(());
            s.flush();
            self.stop_sent = true;
        }
    }

    /// Closes this worker's inputs: its operators have finished.
    pub fn close(&mut self) {
        self.called = None;
        self.sent = None;
        self.saved = None;
        self.stops = None;
    }
}

/// Whether a round has been called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Called {
    /// Not yet.
    No,
    /// Yes: pause, send the markers, read on once the barriers are out.
    Yes,
    /// This and every later round: the run is stopping; pause for good.
    Final,
}
