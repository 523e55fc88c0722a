//! Aligned checkpoints, as Flink and Arroyo do them: every commit interval the source stops
//! reading, waits until the dataflow has handled all it sent, asks every worker for a
//! checkpoint barrier, and reads on once every worker has sent its barrier (nothing read later
//! can land before one). Once every sink has committed its rows and saved its nodes, it commits
//! the position it had reached. The position therefore never runs ahead of saved state, and a
//! restart resumes exactly there. The pause lasts the drain and a few milliseconds, not the
//! commit. One aligner serves every [`OffsetSource`]: the write-ahead log and Kafka.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbound::Inbound;
use super::source::{OffsetSource, Position};
use crate::metrics::Metrics;

/// How long a checkpoint round may take (the dataflow draining what was sent, then every
/// worker saving its checkpoint) before it is abandoned; the position is then not committed,
/// which is always safe.
pub const ALIGN_TIMEOUT: Duration = Duration::from_secs(30);

/// On stop, the source is read until it has delivered nothing for this long…
pub const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// …or for at most this long (nodes that never stop sending would keep it going); what is
/// left stays in the log or in Kafka, durable, for the next start.
pub const DRAIN_MAX: Duration = Duration::from_secs(5);

/// The most messages read per step.
pub const BATCH: usize = 4096;

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
    /// Reading, while the previous round (if any) is saved. → `Draining` when the interval is
    /// up and no round is being saved, or when stopping and the source has been quiet for
    /// [`DRAIN_QUIET`] (or [`DRAIN_MAX`] has passed).
    Reading {
        /// When this interval began.
        since: Instant,
        /// When the source last delivered, while stopping.
        quiet_since: Option<Instant>,
        /// The round being saved.
        saving: Option<Saving>,
    },
    /// Not reading; waiting until the workers have handled the `sent` records read before
    /// `position`. → `Barriers` once they have (a barrier is requested), or `Reading` after
    /// [`ALIGN_TIMEOUT`].
    Draining {
        since: Instant,
        sent: u64,
        position: Position,
    },
    /// Not reading; waiting until every worker has sent its barrier, so that nothing read from
    /// now on can land before one. → `Reading` with the round being saved, or `Saving` in the
    /// last round; `Reading` without it after [`ALIGN_TIMEOUT`].
    Barriers(Saving),
    /// The last round: waiting until every sink has saved it. → done.
    Saving(Saving),
}

/// Drives the source and its checkpoint rounds from the source worker's loop.
pub struct Aligner {
    /// Epochs requested of the workers' `NodeClocks`.
    request: Arc<AtomicU64>,
    /// The epoch of the barrier each worker's `NodeClocks` has sent.
    sent: Arc<Vec<Arc<AtomicU64>>>,
    /// The epoch each worker's sink has saved.
    acks: Arc<Vec<AtomicU64>>,
    every: Duration,
    epoch: u64,
    /// The round under way is the last one (the run is stopping).
    last: bool,
    stop_seen: Option<Instant>,
    phase: Phase,
}

impl Aligner {
    /// An aligner that checkpoints every `every`, through `request`, `sent` and `acks`.
    pub fn new(
        request: Arc<AtomicU64>,
        sent: Arc<Vec<Arc<AtomicU64>>>,
        acks: Arc<Vec<AtomicU64>>,
        every: Duration,
    ) -> Self {
        Self {
            request,
            sent,
            acks,
            every,
            epoch: 0,
            last: false,
            stop_seen: None,
            phase: Phase::Reading {
                since: Instant::now(),
                quiet_since: None,
                saving: None,
            },
        }
    }

    /// Reads into `batch`, or advances a checkpoint round; `sent` is how many records the
    /// source loop has given the dataflow. True once the final round (after `stopping`) is
    /// over.
    pub fn step(
        &mut self,
        source: &mut dyn OffsetSource,
        stopping: bool,
        sent: u64,
        metrics: &Metrics,
        batch: &mut Vec<Inbound>,
    ) -> bool {
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
                let saving = saving.and_then(|s| self.try_commit(s, source, metrics));
                // Decided before reading, so that `sent` counts everything read.
                let drained = self.stop_seen.is_some_and(|t| {
                    t.elapsed() >= DRAIN_MAX
                        || quiet_since.is_some_and(|q| q.elapsed() >= DRAIN_QUIET)
                });
                let due = !stopping && since.elapsed() >= self.every;
                if saving.is_none() && (drained || due) {
                    self.last = drained;
                    self.phase = Phase::Draining {
                        since: now,
                        sent,
                        position: source.position(),
                    };
                    return false;
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
                false
            }
            Phase::Draining {
                since,
                sent,
                position,
            } => {
                if metrics.handled(sent) {
                    self.epoch += 1;
                    self.request.store(self.epoch, Ordering::Release);
                    self.phase = Phase::Barriers(Saving {
                        since: now,
                        epoch: self.epoch,
                        position,
                    });
                } else if since.elapsed() > ALIGN_TIMEOUT {
                    tracing::warn!("the dataflow did not drain in time; position not committed");
                    return self.last;
                } else {
                    self.phase = Phase::Draining {
                        since,
                        sent,
                        position,
                    };
                }
                false
            }
            Phase::Barriers(s) => {
                let out = self
                    .sent
                    .iter()
                    .all(|w| w.load(Ordering::Acquire) >= s.epoch);
                if out {
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
                    tracing::warn!("a barrier was not sent in time; position not committed");
                    return self.last;
                } else {
                    self.phase = Phase::Barriers(s);
                }
                false
            }
            Phase::Saving(s) => match self.try_commit(s, source, metrics) {
                None => true,
                Some(s) => {
                    self.phase = Phase::Saving(s);
                    false
                }
            },
        }
    }

    /// Commits the round's position if every sink has saved it (or gives up after
    /// [`ALIGN_TIMEOUT`]); the round back if it is still being saved.
    fn try_commit(
        &self,
        s: Saving,
        source: &mut dyn OffsetSource,
        metrics: &Metrics,
    ) -> Option<Saving> {
        let saved = self
            .acks
            .iter()
            .all(|a| a.load(Ordering::Acquire) >= s.epoch);
        if saved {
            match source.commit(&s.position) {
                Ok(()) => metrics.source_committed(&s.position),
                Err(e) => {
                    tracing::warn!(error = %e, code = e.code(), "committing the source's position")
                }
            }
            return None;
        }
        if s.since.elapsed() > ALIGN_TIMEOUT {
            tracing::warn!("a checkpoint was not saved in time; position not committed");
            return None;
        }
        Some(s)
    }
}
