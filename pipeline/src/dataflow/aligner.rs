//! Aligned checkpoints, as Flink and Arroyo do them. Every commit interval the leader (the
//! source on worker 0) calls a round; each source (one a process) then stops reading, notes
//! its position and sends the round's marker to every worker after all it has sent. A worker
//! sends its barrier once it has every source's marker (see
//! [`kaiabc_operators::dataflow::Checkpointing`]), and the sources read on once every worker
//! of the cluster has sent it (nothing read later can land before one). Once every sink has
//! committed its rows and saved its nodes, each source commits the position it had reached.
//! The position therefore never runs ahead of saved state, and a restart resumes exactly
//! there. The pause lasts until the barriers are out, not the commit. Calls, barriers and
//! saves are seen through [`Rounds`], on timely's progress tracking, so the same aligner
//! serves one process or a cluster, and every [`OffsetSource`]: the write-ahead log and Kafka.

use std::time::{Duration, Instant};

use super::inbound::Inbound;
use super::rounds::{Called, Rounds};
use super::source::{OffsetSource, Position};
use crate::metrics::Metrics;

/// How long a checkpoint round may take (every worker sending its barrier, then every worker
/// saving its checkpoint) before it is abandoned; the position is then not committed, which
/// is always safe.
pub const ALIGN_TIMEOUT: Duration = Duration::from_secs(30);

/// On stop, the leader reads its source until it has delivered nothing for this long…
pub const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// …or for at most this long (nodes that never stop sending would keep it going); what is
/// left stays in the log or in Kafka, durable, for the next start.
pub const DRAIN_MAX: Duration = Duration::from_secs(5);

/// The most messages read per step.
pub const BATCH: usize = 4096;

/// What the source loop does after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Hand on what was read into the batch (perhaps nothing).
    Read,
    /// Send the markers of this round after everything sent so far.
    Markers(u64),
    /// The final round is over.
    Done,
}

/// A round whose barriers are out and whose checkpoints are being saved; the position is
/// committed once every sink has saved them.
#[derive(Debug)]
struct Saving {
    since: Instant,
    epoch: u64,
    position: Position,
}

/// Where a round is.
#[derive(Debug)]
enum Phase {
    /// Reading, while the previous round (if any) is saved. → `Barriers` once no round is
    /// being saved and the next round is called (the leader calls it when the interval is up,
    /// or, stopping, calls the final round once its source has been quiet for [`DRAIN_QUIET`]
    /// or [`DRAIN_MAX`] has passed).
    Reading {
        /// When this interval began.
        since: Instant,
        /// When the source last delivered, while stopping.
        quiet_since: Option<Instant>,
        /// The round being saved.
        saving: Option<Saving>,
    },
    /// Not reading; the markers are sent, waiting until every worker has sent its barrier, so
    /// that nothing read from now on can land before one. → `Reading` with the round being
    /// saved, or `Saving` in the final round; `Reading` without it after [`ALIGN_TIMEOUT`].
    Barriers(Saving),
    /// The final round: waiting until every sink has saved it. → done.
    Saving(Saving),
}

/// Drives one source and its checkpoint rounds from the source worker's loop.
pub struct Aligner {
    every: Duration,
    /// The next round.
    epoch: u64,
    /// The round under way is the final one (the run is stopping).
    last: bool,
    stop_seen: Option<Instant>,
    phase: Phase,
}

impl Aligner {
    /// An aligner whose leader calls a round every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            epoch: 1,
            last: false,
            stop_seen: None,
            phase: Phase::Reading {
                since: Instant::now(),
                quiet_since: None,
                saving: None,
            },
        }
    }

    /// Reads into `batch`, or advances a checkpoint round (the leader, on worker 0, calls
    /// them through `rounds`).
    pub fn step(
        &mut self,
        source: &mut dyn OffsetSource,
        rounds: &mut Rounds,
        leader: bool,
        stopping: bool,
        metrics: &Metrics,
        batch: &mut Vec<Inbound>,
    ) -> Step {
        let now = Instant::now();
        if stopping && self.stop_seen.is_none() {
            self.stop_seen = Some(now);
        }
        let placeholder = Phase::Reading {
            since: now,
            quiet_since: None,
            saving: None,
        };
        match std::mem::replace(&mut self.phase, placeholder) {
            Phase::Reading {
                since,
                quiet_since,
                saving,
            } => {
                let saving = saving.and_then(|s| try_commit(s, rounds, source, metrics));
                if saving.is_none() && leader {
                    // Decided before reading, so that the markers follow everything read.
                    let drained = self.stop_seen.is_some_and(|t| {
                        t.elapsed() >= DRAIN_MAX
                            || quiet_since.is_some_and(|q| q.elapsed() >= DRAIN_QUIET)
                    });
                    if drained {
                        rounds.call_final();
                    } else if !stopping && since.elapsed() >= self.every {
                        rounds.call(self.epoch);
                    }
                }
                let called = match saving {
                    Some(_) => Called::No,
                    None => rounds.called(self.epoch),
                };
                if called != Called::No {
                    self.last = called == Called::Final;
                    let epoch = self.epoch;
                    self.epoch += 1;
                    self.phase = Phase::Barriers(Saving {
                        since: now,
                        epoch,
                        position: source.position(),
                    });
                    return Step::Markers(epoch);
                }
                let n = match source.poll(BATCH, batch) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, code = e.code(), "reading the source");
                        0
                    }
                };
                let quiet_since = match (n, stopping) {
                    (0, true) => Some(quiet_since.unwrap_or(now)),
                    _ => None,
                };
                self.phase = Phase::Reading {
                    since,
                    quiet_since,
                    saving,
                };
                Step::Read
            }
            Phase::Barriers(s) => {
                if rounds.all_sent(s.epoch) {
                    self.phase = if self.last {
                        Phase::Saving(s)
                    } else {
                        Phase::Reading {
                            since: now,
                            quiet_since: None,
                            saving: Some(s),
                        }
                    };
                } else if s.since.elapsed() > ALIGN_TIMEOUT {
                    tracing::warn!(
                        epoch = s.epoch,
                        "a barrier was not sent in time; position not committed"
                    );
                    if self.last {
                        return Step::Done;
                    }
                } else {
                    self.phase = Phase::Barriers(s);
                }
                Step::Read
            }
            Phase::Saving(s) => match try_commit(s, rounds, source, metrics) {
                None => Step::Done,
                Some(s) => {
                    self.phase = Phase::Saving(s);
                    Step::Read
                }
            },
        }
    }
}

/// Commits the round's position if every sink of the cluster has saved it (or gives up after
/// [`ALIGN_TIMEOUT`]); the round back if it is still being saved.
fn try_commit(
    s: Saving,
    rounds: &Rounds,
    source: &mut dyn OffsetSource,
    metrics: &Metrics,
) -> Option<Saving> {
    if rounds.all_saved(s.epoch) {
        match source.commit(&s.position) {
            Ok(()) => metrics.source_committed(&s.position),
            Err(e) => {
                tracing::warn!(error = %e, code = e.code(), "committing the source's position")
            }
        }
        return None;
    }
    if s.since.elapsed() > ALIGN_TIMEOUT {
        tracing::warn!(
            epoch = s.epoch,
            "a checkpoint was not saved in time; position not committed"
        );
        return None;
    }
    Some(s)
}
