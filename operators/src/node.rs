//! One node's processing, reading by reading: duplicate and lateness checks, the Kalman filter,
//! the clock stepped to the reading with the filtered temperature, its outputs, and the hourly
//! rhythm windows. Pure and deterministic; the timely operator around it only routes and
//! orders readings.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kaiabc_schemas::{
    ControlAction, ControlCommand, LakeRow, Metric, OscillatorState, PhaseShiftOutcome, ReadingRow,
    RhythmWindow, SensorReading, StateVariables,
};

use crate::clock::{Clock, ClockCheckpoint, ClockConfig, InitialCondition};
use crate::dedup::{Dedup, Emitted, InFiles, KeyRuns, Seen};
use crate::error::ClockError;
use crate::kalman::{KalmanFilter, KalmanParams, Measurement};
use crate::limit_cycle::LimitCycle;
use crate::outputs::OutputMapping;
use crate::phase_shift::{ShiftCheckpoint, ShiftRun};
use crate::rhythm::cosinor::cosinor;
use crate::rhythm::lomb_scargle::{LombScargle, PeakSearch};
use crate::settings::{NodeSettings, SettingsError};
use crate::temperature::VALID_KELVIN;
use serde::{Deserialize, Serialize};

/// How rhythm windows are computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowConfig {
    /// Window length, h (default 72: three days).
    pub length_hours: f64,
    /// Samples are averaged into bins of this many minutes (default 10), which bounds a node's
    /// memory to `length / bin` bins whatever its reading rate.
    pub bin_minutes: u32,
    /// A window closes every this many hours of event time (default 1).
    pub every_hours: u32,
    /// Lomb–Scargle search range, h.
    pub min_period_hours: f64,
    /// Lomb–Scargle search range, h.
    pub max_period_hours: f64,
    /// Fewest binned samples for statistics (below it the window's statistics are absent).
    pub min_samples: usize,
    /// The KOA period feeds `period_hours` in the state only if its false-alarm probability is
    /// at most this.
    pub max_fap_for_period: f64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            length_hours: 72.0,
            bin_minutes: 10,
            every_hours: 1,
            min_period_hours: 16.0,
            max_period_hours: 32.0,
            min_samples: 36,
            max_fap_for_period: 0.01,
        }
    }
}

/// Everything that defines how a node's readings are processed.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The clock's dynamics.
    pub clock: ClockConfig,
    /// The reference limit cycle of `clock` (shared by all nodes).
    pub reference: Option<Arc<LimitCycle>>,
    /// The Kalman filter.
    pub kalman: KalmanParams,
    /// KOA → PWM.
    pub mapping: OutputMapping,
    /// A new node's clock starts at this circadian time at its first reading.
    pub initial_ct: f64,
    /// Across a gap longer than this (h) the clock runs free at the last temperature and the
    /// next state says `entrainment_active = false`.
    pub max_gap_hours: f64,
    /// Rhythm windows.
    pub window: WindowConfig,
    /// A reading older than this (h) before its node's newest is refused (`STALE_TIMESTAMP`):
    /// a late reading that far back no longer means anything to the clock, and a node whose
    /// clock jumped must not drag the others through its gap.
    pub max_age_hours: f64,
    /// Attach the whole filter to each reading's row (the live API serves it; replay does not
    /// need the allocation).
    pub filter_snapshots: bool,
}

impl NodeConfig {
    /// The defaults around a clock configuration (computes its reference limit cycle).
    pub fn new(clock: ClockConfig) -> Result<Self, ClockError> {
        let reference = Some(Arc::new(clock.limit_cycle()?));
        Ok(Self {
            clock,
            reference,
            kalman: KalmanParams::default(),
            mapping: OutputMapping::default(),
            initial_ct: 0.0,
            max_gap_hours: 1.0,
            window: WindowConfig::default(),
            max_age_hours: 7.0 * 24.0,
            filter_snapshots: false,
        })
    }
}

/// What processing a reading produces: its `readings` row, the `states` row after it, and the
/// `rhythms` rows of windows that closed before it.
pub type NodeOutput = LakeRow;

/// How a reading was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Applied to the filter and the clock.
    Applied,
    /// Older than the node's last applied reading: kept in `readings`, marked late.
    Late,
    /// A reading with the same key (node, timestamp, seq) was seen before: dropped.
    Duplicate,
    /// The node is paused: kept in `readings`, the clock not moved.
    Paused,
}

/// Errors of a node's processing (the reading is then dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The clock failed (e.g. `ODE_INSTABILITY`).
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The filter failed.
    #[error(transparent)]
    Kalman(#[from] crate::kalman::KalmanError),
    /// A control command would leave the node with unusable settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The reading is older than [`NodeConfig::max_age_hours`] before the node's newest.
    #[error(
        "timestamp {timestamp} is more than {hours} h before the node's newest reading ({newest})"
    )]
    Stale {
        /// The reading's time.
        timestamp: String,
        /// The node's newest reading's time.
        newest: String,
        /// The horizon.
        hours: f64,
    },
}

/// A reading whose processing failed, handed back with the error (for its dead letter).
#[derive(Debug)]
pub struct NodeFailure {
    /// What failed.
    pub error: NodeError,
    /// The reading.
    pub reading: SensorReading,
}

/// Time bins of a node's KOA and temperature, for rhythm windows; bounded by the window length.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bins {
    bins: VecDeque<Bin>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Bin {
    index: i64,
    koa: f64,
    kelvin: f64,
    n: u32,
}

impl Bins {
    fn add(&mut self, index: i64, koa: f64, kelvin: f64, keep: i64) {
        match self.bins.back_mut() {
            Some(b) if b.index == index => {
                b.koa += koa;
                b.kelvin += kelvin;
                b.n += 1;
            }
            _ => self.bins.push_back(Bin {
                index,
                koa,
                kelvin,
                n: 1,
            }),
        }
        while self.bins.front().is_some_and(|b| b.index < index - keep) {
            self.bins.pop_front();
        }
    }
}

/// One node's state. About 1.3 kB plus its bins (at most `length / bin` of 32 B each).
#[derive(Clone, Debug)]
pub struct NodeState {
    clock: Option<Clock>,
    filter: KalmanFilter,
    last_micros: Option<i64>,
    last_kelvin: f64,
    dedup: Dedup,
    bins: Bins,
    next_window_end: Option<i64>,
    window_period: Option<f64>,
    control: NodeControl,
    settings: NodeSettings,
    shift: Option<ShiftRun>,
}

const MICROS_PER_HOUR: f64 = 3.6e9;

/// A node's state as a restart needs it: the clock, the filter, the duplicate keys, the rhythm
/// bins and the control state. Encoded with [`NodeCheckpoint::to_bytes`] (postcard, versioned).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeCheckpoint {
    /// Version 1's fields; postcard lays nested fields out in sequence, so each version's bytes
    /// are the previous version's followed by what it added, and older versions still decode.
    core: CheckpointCore,
    /// Added in version 2.
    control: NodeControl,
    /// Added in version 3.
    extra: CheckpointExtra,
    /// Added in version 4: the summary of every key seen (before, `core.recent` held the last
    /// keys themselves).
    seen: KeyRuns,
    /// Added in version 5.
    more: CheckpointV5,
}

/// Version 4's layout.
#[derive(Deserialize)]
struct CheckpointV4 {
    core: CheckpointCore,
    control: NodeControl,
    extra: CheckpointExtra,
    seen: KeyRuns,
}

/// What version 5 added: the node's calibration and solver settings, and when a manual
/// override ends (fields of [`NodeSettings`] and [`NodeControl`] that their earlier
/// layouts, kept for older checkpoints, do not hold).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct CheckpointV5 {
    calibration: Option<kaiabc_schemas::Calibration>,
    integrator: Option<crate::integrator::IntegratorConfig>,
    override_until: Option<i64>,
}

/// Version 3's layout.
#[derive(Deserialize)]
struct CheckpointV3 {
    core: CheckpointCore,
    control: NodeControl,
    extra: CheckpointExtra,
}

/// Version 2's layout.
#[derive(Deserialize)]
struct CheckpointV2 {
    core: CheckpointCore,
    control: NodeControl,
}

/// What version 3 added: the node's own settings and a phase shift under way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct CheckpointExtra {
    settings: NodeSettings,
    shift: Option<ShiftCheckpoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CheckpointCore {
    clock: Option<ClockCheckpoint>,
    filter: KalmanFilter,
    last_micros: Option<i64>,
    last_kelvin: f64,
    /// The last keys seen, up to version 3; empty since (see [`NodeCheckpoint::seen`]).
    recent: VecDeque<(i64, Option<i64>)>,
    bins: Bins,
    next_window_end: Option<i64>,
    window_period: Option<f64>,
}

/// What control commands set on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeControl {
    /// Paused since this event time (µs): readings are recorded but do not move the clock.
    pub paused_since: Option<i64>,
    /// The PWM duty held by a manual override.
    pub override_pwm: Option<u8>,
    /// When (event time, µs) the manual override ends by itself; `None` holds it until
    /// cleared. (Checkpointed apart, see `CheckpointV5`.)
    #[serde(skip)]
    pub override_until: Option<i64>,
}

/// The model state of the API's six variables (µM), checked against the model's conserved
/// totals (`KaiState::from_concentrations`).
pub fn initial_state(
    c: &kaiabc_schemas::StateVariables,
    cfg: &NodeConfig,
) -> Result<crate::model::KaiState, ClockError> {
    crate::model::KaiState::from_concentrations(
        &crate::model::Concentrations {
            c_u: c.C_U,
            c_s: c.C_S,
            c_t: c.C_T,
            c_st: c.C_ST,
            a_free: c.A_free,
            cabc_complex: c.CABC_complex,
        },
        &cfg.clock.params,
    )
    .map_err(ClockError::from)
}

/// What applying one reading to the filter and the clock gave.
struct Stepped {
    /// The filtered temperature (K).
    kelvin: f64,
    /// Its variance (K²).
    variance: f64,
    /// The temperature that drove the clock (the filtered one, held to the valid range).
    drive: f64,
    /// Whether the clock was entrained up to the reading (no free run across a gap).
    entrained: bool,
}

/// Why a checkpoint could not be read or resumed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Written by a version of the format this build does not read.
    #[error("checkpoint format version {0} (this build reads version {CHECKPOINT_VERSION})")]
    Version(u8),
    /// Not a checkpoint, or a truncated one.
    #[error("undecodable checkpoint: {0}")]
    Decode(#[from] postcard::Error),
    /// Empty input.
    #[error("empty checkpoint")]
    Empty,
    /// The clock rejected the state under the running configuration.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The filter's parameters are invalid.
    #[error(transparent)]
    Kalman(#[from] crate::kalman::KalmanError),
}

/// The checkpoint encoding's version, its first byte; bumped when [`NodeCheckpoint`] changes.
pub const CHECKPOINT_VERSION: u8 = 5;

impl NodeCheckpoint {
    /// The checkpoint as bytes: the version, then the postcard encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let out = vec![CHECKPOINT_VERSION];
        // postcard cannot fail on this type (no maps with non-string keys, no unsized data).
        postcard::to_extend(self, out).expect("a node checkpoint always encodes")
    }

    /// Reads bytes written by [`NodeCheckpoint::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        match bytes.split_first() {
            None => Err(CheckpointError::Empty),
            Some((&CHECKPOINT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            // Before calibration, solver settings and timed overrides.
            Some((4, rest)) => {
                let v4: CheckpointV4 = postcard::from_bytes(rest)?;
                Ok(Self {
                    core: v4.core,
                    control: v4.control,
                    extra: v4.extra,
                    seen: v4.seen,
                    more: CheckpointV5::default(),
                })
            }
            // Before duplicate summaries: the last keys themselves, in `core.recent`.
            Some((3, rest)) => {
                let v3: CheckpointV3 = postcard::from_bytes(rest)?;
                Ok(Self {
                    core: v3.core,
                    control: v3.control,
                    extra: v3.extra,
                    seen: KeyRuns::default(),
                    more: CheckpointV5::default(),
                })
            }
            // Before parameter changes and phase shifts: the shared settings, no shift.
            Some((2, rest)) => {
                let v2: CheckpointV2 = postcard::from_bytes(rest)?;
                Ok(Self {
                    core: v2.core,
                    control: v2.control,
                    extra: CheckpointExtra::default(),
                    seen: KeyRuns::default(),
                    more: CheckpointV5::default(),
                })
            }
            // Before control commands: no pause, no override.
            Some((1, rest)) => Ok(Self {
                core: postcard::from_bytes(rest)?,
                control: NodeControl::default(),
                extra: CheckpointExtra::default(),
                seen: KeyRuns::default(),
                more: CheckpointV5::default(),
            }),
            Some((&v, _)) => Err(CheckpointError::Version(v)),
        }
    }

    /// Event time (µs) of the last reading applied.
    pub fn last_micros(&self) -> Option<i64> {
        self.core.last_micros
    }

    /// The control state (pause, override).
    pub fn control(&self) -> NodeControl {
        NodeControl {
            override_until: self.more.override_until,
            ..self.control
        }
    }

    /// The node's own settings.
    pub fn settings(&self) -> NodeSettings {
        NodeSettings {
            calibration: self.more.calibration,
            integrator: self.more.integrator,
            ..self.extra.settings
        }
    }
}

/// Model time of a timestamp: hours since the Unix epoch.
pub fn hours_since_epoch(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_HOUR
}

impl NodeState {
    /// A node that has seen nothing yet.
    pub fn new(cfg: &NodeConfig) -> Result<Self, NodeError> {
        Ok(Self {
            clock: None,
            filter: KalmanFilter::new(cfg.kalman)?,
            last_micros: None,
            last_kelvin: f64::NAN,
            dedup: Dedup::default(),
            bins: Bins::default(),
            next_window_end: None,
            window_period: None,
            control: NodeControl::default(),
            settings: NodeSettings::default(),
            shift: None,
        })
    }

    /// What a restart needs to resume this node ([`NodeState::resume`]).
    pub fn checkpoint(&self) -> NodeCheckpoint {
        NodeCheckpoint {
            core: CheckpointCore {
                clock: self.clock.as_ref().map(Clock::checkpoint),
                filter: self.filter.clone(),
                last_micros: self.last_micros,
                last_kelvin: self.last_kelvin,
                recent: VecDeque::new(),
                bins: self.bins.clone(),
                next_window_end: self.next_window_end,
                window_period: self.window_period,
            },
            control: self.control,
            extra: CheckpointExtra {
                settings: self.settings,
                shift: self.shift.as_ref().map(ShiftRun::checkpoint),
            },
            seen: self.dedup.seen.clone(),
            more: CheckpointV5 {
                calibration: self.settings.calibration,
                integrator: self.settings.integrator,
                override_until: self.control.override_until,
            },
        }
    }

    /// A node continuing from a checkpoint under the running configuration: its clock goes on
    /// from where it stopped instead of restarting at the initial condition.
    pub fn resume(cfg: &NodeConfig, cp: NodeCheckpoint) -> Result<Self, CheckpointError> {
        let NodeCheckpoint {
            core: cp,
            mut control,
            mut extra,
            mut seen,
            more,
        } = cp;
        extra.settings.calibration = more.calibration;
        extra.settings.integrator = more.integrator;
        control.override_until = more.override_until;
        // Every key of a checkpoint is in the lake's files (it was saved after their commit).
        for &(micros, seq) in &cp.recent {
            seen.insert(micros, seq);
        }
        let clock_cfg = extra.settings.clock_config(cfg);
        let clock = match cp.clock {
            Some(c) => Some(Clock::resume(clock_cfg, cfg.reference.clone(), c)?),
            None => None,
        };
        let mut clock = clock;
        let shift = match extra.shift {
            Some(s) => Some(ShiftRun::resume(s, clock_cfg, cfg.reference.clone())?),
            None => None,
        };
        if let (Some(run), Some(c)) = (&shift, &mut clock) {
            run.reapply(c)?;
        }
        Ok(Self {
            clock,
            filter: cp.filter,
            last_micros: cp.last_micros,
            last_kelvin: cp.last_kelvin,
            dedup: Dedup {
                seen,
                pending: Default::default(),
            },
            bins: cp.bins,
            next_window_end: cp.next_window_end,
            window_period: cp.window_period,
            control,
            settings: extra.settings,
            shift,
        })
    }

    /// Applies a control command (see [`ControlAction`]); a phase shift it ends reports into
    /// `out`. A parameter change that fails [`NodeSettings::patched`] changes nothing.
    pub fn control(
        &mut self,
        cfg: &NodeConfig,
        cmd: &ControlCommand,
        out: &mut Vec<NodeOutput>,
    ) -> Result<(), NodeError> {
        let micros = cmd.timestamp.timestamp_micros();
        let settings = self.settings.patched(cfg, &cmd.action)?;
        let eff = settings.effective(cfg);
        match &cmd.action {
            ControlAction::Reset => {
                self.end_shift(cmd, PhaseShiftOutcome::Cancelled, out);
                if let Some(clock) = &mut self.clock {
                    clock.reset(InitialCondition::CircadianTime(eff.initial_ct))?;
                }
                self.filter = KalmanFilter::new(eff.kalman)?;
            }
            ControlAction::ResetTo { initial_conditions } => {
                let state = initial_state(initial_conditions, cfg)?;
                self.end_shift(cmd, PhaseShiftOutcome::Cancelled, out);
                if let Some(clock) = &mut self.clock {
                    clock.reset(InitialCondition::State(state))?;
                }
                self.filter = KalmanFilter::new(eff.kalman)?;
            }
            ControlAction::Pause => {
                // The twin cannot pause with the clock: a shift under way is abandoned.
                self.end_shift(cmd, PhaseShiftOutcome::Cancelled, out);
                self.control.paused_since.get_or_insert(micros);
            }
            ControlAction::Resume => {
                if let Some(since) = self.control.paused_since.take() {
                    if let Some(clock) = &mut self.clock {
                        // The clock skips the paused time: it goes on from where it stood,
                        // shifted by the pause's length.
                        let paused = hours_since_epoch(micros) - hours_since_epoch(since);
                        clock.resume_at(clock.t_hours() + paused.max(0.0))?;
                    }
                }
            }
            ControlAction::ManualOverride {
                pwm,
                duration_minutes,
            } => {
                self.control.override_pwm = *pwm;
                self.control.override_until = match (pwm, duration_minutes) {
                    (Some(_), Some(m)) => Some(micros + (m * 60e6) as i64),
                    _ => None,
                };
            }
            ControlAction::Entrainment(_) => {
                if let Some(clock) = &mut self.clock {
                    clock.set_etf(eff.etf)?;
                }
                if let Some(run) = &mut self.shift {
                    run.set_etf(eff.etf)?;
                }
            }
            ControlAction::Filter(_) => self.filter.set_params(eff.kalman)?,
            ControlAction::Simulation(_) => {
                if let Some(clock) = &mut self.clock {
                    clock.set_integrator(eff.integrator)?;
                }
            }
            ControlAction::FilterReset => self.filter.reset(),
            ControlAction::OutputMapping(_) | ControlAction::Calibration(_) => {}
            ControlAction::PhaseShift(plan) => {
                self.end_shift(cmd, PhaseShiftOutcome::Superseded, out);
                match &mut self.clock {
                    Some(clock) if self.control.paused_since.is_none() => {
                        self.shift = Some(ShiftRun::new(plan.clone(), clock)?);
                    }
                    _ => {
                        // Nothing to shift (no reading applied yet, or paused): say so at once.
                        let outcome = if self.clock.is_none() {
                            PhaseShiftOutcome::NoClock
                        } else {
                            PhaseShiftOutcome::Cancelled
                        };
                        out.push(NodeOutput::PhaseShift(
                            ShiftRun::unstarted(plan.clone()).report(
                                &cmd.node_id,
                                cmd.timestamp,
                                outcome,
                            ),
                        ));
                    }
                }
            }
        }
        self.settings = settings;
        Ok(())
    }

    /// Reports a shift under way as ended by `cmd`.
    fn end_shift(
        &mut self,
        cmd: &ControlCommand,
        outcome: PhaseShiftOutcome,
        out: &mut Vec<NodeOutput>,
    ) {
        if let Some(run) = self.shift.take() {
            if let Some(clock) = &mut self.clock {
                run.release(clock);
            }
            out.push(NodeOutput::PhaseShift(run.report(
                &cmd.node_id,
                cmd.timestamp,
                outcome,
            )));
        }
    }

    /// The node's own settings (parameters changed by control commands).
    pub fn settings(&self) -> NodeSettings {
        self.settings
    }

    /// The phase shift under way, if any.
    pub fn shift(&self) -> Option<&ShiftRun> {
        self.shift.as_ref()
    }

    /// The Kalman filter.
    pub fn filter(&self) -> &KalmanFilter {
        &self.filter
    }

    /// Whether the node saw this exact key (timestamp and seq) before, as far as it knows by
    /// itself ([`Seen::AskLake`]: only the lake can say). A reading with the same seq at
    /// another time is not a copy (a node that rebooted counts from 1 again), nor one with the
    /// same time and another seq.
    pub fn seen(&self, micros: i64, seq: Option<i64>) -> Seen {
        self.dedup.check(micros, seq)
    }

    /// Adds what the lake held of this node before the run to what it has seen.
    pub fn absorb_past(&mut self, past: &KeyRuns) {
        self.dedup.seen.absorb(past);
    }

    /// Forgets the pending keys the lake's sink has written out.
    pub fn prune_pending(&mut self, files: &InFiles) {
        self.dedup.pending.prune(files);
    }

    /// Event time (µs) of the newest reading the node applied or recorded.
    pub fn last_micros(&self) -> Option<i64> {
        self.last_micros
    }

    /// The node's duplicate detection.
    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Processes one validated reading of this node, appending what it produced to `out`.
    ///
    /// A node on its own (no lake) keeps every key it saw since it was created or resumed
    /// exactly, and recognises copies of those; the node operator uses
    /// [`NodeState::apply_at`], whose keys go once the lake has them.
    pub fn apply(
        &mut self,
        cfg: &NodeConfig,
        reading: SensorReading,
        out: &mut Vec<NodeOutput>,
    ) -> Result<Disposition, Box<NodeFailure>> {
        if self.seen(reading.timestamp.timestamp_micros(), reading.seq) == Seen::Copy {
            return Ok(Disposition::Duplicate);
        }
        self.apply_at(cfg, reading, out, Emitted::UNTRACKED)
    }

    /// Processes one reading that is not a copy (the caller checked with [`NodeState::seen`]
    /// and, if need be, the lake); its `readings` row is emitted at `at`.
    pub fn apply_at(
        &mut self,
        cfg: &NodeConfig,
        reading: SensorReading,
        out: &mut Vec<NodeOutput>,
        at: Emitted,
    ) -> Result<Disposition, Box<NodeFailure>> {
        let micros = reading.timestamp.timestamp_micros();
        if let Some(last) = self.last_micros {
            if (last - micros) as f64 > cfg.max_age_hours * MICROS_PER_HOUR {
                let at = |us: i64| {
                    DateTime::<Utc>::from_timestamp_micros(us)
                        .map(|t| kaiabc_schemas::format_timestamp(&t))
                        .unwrap_or_default()
                };
                let error = NodeError::Stale {
                    timestamp: at(micros),
                    newest: at(last),
                    hours: cfg.max_age_hours,
                };
                return Err(Box::new(NodeFailure { error, reading }));
            }
        }
        if self.last_micros.is_some_and(|last| micros < last) {
            self.dedup.record(micros, reading.seq, at);
            out.push(NodeOutput::Reading(ReadingRow {
                reading,
                filtered_temperature_kelvin: None,
                kalman_variance: None,
                filtered_humidity_percent: None,
                filtered_pressure_pa: None,
                late: true,
                filter: None,
            }));
            return Ok(Disposition::Late);
        }
        if self.control.paused_since.is_some() {
            self.last_micros = Some(micros);
            self.dedup.record(micros, reading.seq, at);
            out.push(NodeOutput::Reading(ReadingRow {
                reading,
                filtered_temperature_kelvin: None,
                kalman_variance: None,
                filtered_humidity_percent: None,
                filtered_pressure_pa: None,
                late: false,
                filter: None,
            }));
            return Ok(Disposition::Paused);
        }
        // A timed override ends at its end in event time, like everything else a replay redoes.
        if self
            .control
            .override_until
            .is_some_and(|until| micros >= until)
        {
            self.control.override_pwm = None;
            self.control.override_until = None;
        }
        self.close_windows(cfg, micros, &reading.node_id, out);
        let Stepped {
            kelvin,
            variance,
            drive,
            entrained,
        } = match self.step(cfg, &reading, micros) {
            Ok(v) => v,
            Err(error) => return Err(Box::new(NodeFailure { error, reading })),
        };
        let estimate = self.filter.estimate();
        let clock = self.clock.as_ref().expect("set above");
        let snap = clock.snapshot();
        let period = self.window_period.unwrap_or(snap.period_hours);
        let c = snap.state_variables;
        let state = OscillatorState {
            node_id: reading.node_id.clone(),
            timestamp: reading.timestamp,
            seq: reading.seq,
            circadian_time: snap.circadian_time,
            phase: snap.phase,
            period_hours: period,
            state_variables: StateVariables {
                C_U: c.c_u,
                C_S: c.c_s,
                C_T: c.c_t,
                C_ST: c.c_st,
                A_free: c.a_free,
                CABC_complex: c.cabc_complex,
            },
            koa_metric: snap.koa_metric,
            output_pwm: i32::from(
                self.control
                    .override_pwm
                    .unwrap_or_else(|| self.settings.effective(cfg).mapping.pwm(snap.koa_metric)),
            ),
            manual_override: self.control.override_pwm.is_some(),
            entrainment_active: entrained,
            temperature_kelvin: drive,
            raw_temperature_kelvin: reading.temperature_kelvin,
            kalman_variance: variance,
        };
        let bin_us = i64::from(cfg.window.bin_minutes.max(1)) * 60_000_000;
        let keep = (cfg.window.length_hours * MICROS_PER_HOUR / bin_us as f64).ceil() as i64;
        self.bins
            .add(micros.div_euclid(bin_us), snap.koa_metric, drive, keep);
        self.last_micros = Some(micros);
        self.last_kelvin = drive;
        self.dedup.record(micros, reading.seq, at);
        out.push(NodeOutput::Reading(ReadingRow {
            reading,
            filtered_temperature_kelvin: Some(kelvin),
            kalman_variance: Some(variance),
            filtered_humidity_percent: estimate.humidity_percent,
            filtered_pressure_pa: estimate.pressure_pa,
            late: false,
            filter: cfg.filter_snapshots.then(|| {
                let v = self.filter.view();
                Box::new(kaiabc_schemas::FilterSnapshot {
                    estimate: [
                        v.estimate.temperature_kelvin,
                        v.estimate.humidity_percent,
                        v.estimate.pressure_pa,
                    ],
                    covariance: v.covariance,
                    innovation: [
                        v.last_innovation.temperature_kelvin,
                        v.last_innovation.humidity_percent,
                        v.last_innovation.pressure_pa,
                    ],
                    measurement_count: v.measurement_count,
                })
            }),
        }));
        let done = match &self.shift {
            Some(run) if run.achieved().is_some() => Some(run.report(
                &state.node_id,
                state.timestamp,
                PhaseShiftOutcome::Completed,
            )),
            _ => None,
        };
        out.push(NodeOutput::State(state));
        if let Some(report) = done {
            self.shift = None;
            out.push(NodeOutput::PhaseShift(report));
        }
        Ok(Disposition::Applied)
    }

    /// The fallible part of applying a reading: the node's calibration, the filter, then the
    /// clock.
    fn step(
        &mut self,
        cfg: &NodeConfig,
        reading: &SensorReading,
        micros: i64,
    ) -> Result<Stepped, NodeError> {
        let t_seconds = micros as f64 / 1e6;
        let cal = self.settings.calibration.unwrap_or_default();
        let kelvin_in = reading.temperature_kelvin + cal.temperature_offset;
        self.filter.update(
            t_seconds,
            &Measurement {
                temperature_kelvin: Some(kelvin_in),
                humidity_percent: reading
                    .humidity_percent
                    .map(|h| (h + cal.humidity_offset).clamp(0.0, 100.0)),
                pressure_pa: reading.pressure_pa.map(|p| p + cal.pressure_offset),
            },
        )?;
        let (kelvin, variance) = self
            .filter
            .estimate_temperature()
            .unwrap_or((kelvin_in, f64::NAN));
        // The clock's temperature domain is the validation range; a filtered value a hair
        // outside it (noise at the edge) is held at the edge.
        let drive = kelvin.clamp(*VALID_KELVIN.start(), *VALID_KELVIN.end());
        let t = hours_since_epoch(micros);
        let mut entrained = true;
        let eff = self.settings.effective(cfg);
        match &mut self.clock {
            None => {
                self.clock = Some(Clock::with_reference(
                    self.settings.clock_config(cfg),
                    cfg.reference.clone(),
                    t,
                    drive,
                    InitialCondition::CircadianTime(eff.initial_ct),
                )?);
            }
            Some(clock) => {
                let gap = t - clock.t_hours();
                let mut advance = |t: f64, k: f64| -> Result<(), ClockError> {
                    match &mut self.shift {
                        Some(run) => run.advance(clock, t, k),
                        None => clock.advance_to(t, k).map(|_| ()),
                    }
                };
                if gap > eff.max_gap_hours {
                    // No information across the gap: run free at the last temperature.
                    advance(t, self.last_kelvin)?;
                    entrained = false;
                }
                advance(t, drive)?;
            }
        }
        Ok(Stepped {
            kelvin,
            variance,
            drive,
            entrained,
        })
    }

    /// Closes every window whose end is at or before `micros` (the node's event time passing
    /// the hour: identical in replay and live for in-order input).
    fn close_windows(
        &mut self,
        cfg: &NodeConfig,
        micros: i64,
        node: &str,
        out: &mut Vec<NodeOutput>,
    ) {
        let every = i64::from(cfg.window.every_hours.max(1)) * 3_600_000_000;
        let Some(mut end) = self.next_window_end else {
            // The first window closes at the first full hour after the first reading.
            self.next_window_end = Some((micros.div_euclid(every) + 1) * every);
            return;
        };
        let length = (cfg.window.length_hours * MICROS_PER_HOUR) as i64;
        let newest_bin = self.bins.bins.back().map(|b| {
            let bin_us = i64::from(cfg.window.bin_minutes.max(1)) * 60_000_000;
            b.index * bin_us + bin_us / 2
        });
        while end <= micros {
            // A window that holds no data says nothing: across a gap, windows stop once the
            // data has left them and start again at the reading after it, so work and rows
            // grow with the data, not with the length of the gap.
            if newest_bin.is_none_or(|c| c < end - length) {
                end = (micros.div_euclid(every) + 1) * every;
                break;
            }
            self.emit_window(cfg, end, node, out);
            end += every;
        }
        self.next_window_end = Some(end);
    }

    fn emit_window(&mut self, cfg: &NodeConfig, end: i64, node: &str, out: &mut Vec<NodeOutput>) {
        let w = &cfg.window;
        let length_us = (w.length_hours * MICROS_PER_HOUR) as i64;
        let start = end - length_us;
        let bin_us = i64::from(w.bin_minutes.max(1)) * 60_000_000;
        // Times in hours since midnight UTC of the window's start: the cosinor's acrophase is
        // then referenced to midnight UTC.
        let day0 = start.div_euclid(86_400_000_000) * 86_400_000_000;
        let mut t = Vec::with_capacity(self.bins.bins.len());
        let mut koa = Vec::with_capacity(t.capacity());
        let mut kelvin = Vec::with_capacity(t.capacity());
        for b in &self.bins.bins {
            let centre = b.index * bin_us + bin_us / 2;
            if centre < start || centre >= end {
                continue;
            }
            t.push((centre - day0) as f64 / MICROS_PER_HOUR);
            koa.push(b.koa / f64::from(b.n));
            kelvin.push(b.kelvin / f64::from(b.n));
        }
        let to_time = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
        for (metric, y) in [(Metric::Koa, &koa), (Metric::TemperatureKelvin, &kelvin)] {
            let mut row = RhythmWindow {
                node_id: node.to_string(),
                window_start: to_time(start),
                window_end: to_time(end),
                metric,
                n_samples: t.len() as i32,
                period_hours: None,
                power: None,
                false_alarm_probability: None,
                mesor: None,
                amplitude: None,
                acrophase_rad: None,
                p_value: None,
            };
            if t.len() >= w.min_samples {
                let search = PeakSearch::new(w.min_period_hours, w.max_period_hours);
                if let Ok(peak) = LombScargle::new(&t, y).and_then(|ls| ls.peak(&search)) {
                    row.period_hours = Some(peak.period_hours);
                    row.power = Some(peak.power);
                    row.false_alarm_probability = Some(peak.false_alarm_probability);
                    if metric == Metric::Koa {
                        self.window_period = (peak.false_alarm_probability <= w.max_fap_for_period)
                            .then_some(peak.period_hours)
                            .or(self.window_period);
                    }
                }
                if let Ok(fit) = cosinor(&t, y, 24.0) {
                    row.mesor = Some(fit.mesor);
                    row.amplitude = Some(fit.amplitude);
                    row.acrophase_rad = Some(fit.acrophase_rad);
                    row.p_value = Some(fit.p_value);
                }
            }
            out.push(NodeOutput::Rhythm(row));
        }
    }

    /// The node's clock, once it has seen a reading.
    pub fn clock(&self) -> Option<&Clock> {
        self.clock.as_ref()
    }

    /// Bytes this node's state occupies, heap included (for the bytes-per-node figure).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.dedup.heap_bytes()
            + self.bins.bins.capacity() * std::mem::size_of::<Bin>()
    }
}
