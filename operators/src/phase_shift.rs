//! Planned phase shifts: picking a temperature step from the phase response curve, and measuring
//! the shift it achieved against an unperturbed twin of the node's clock, the way the curve
//! itself is measured ([`crate::prc`]: the peaks after the clock has settled, compared).

use chrono::{DateTime, Utc};
use kaiabc_schemas::{PhaseShiftOutcome, PhaseShiftPlan, PhaseShiftReport};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, ClockCheckpoint, ClockConfig};
use crate::error::ClockError;
use crate::limit_cycle::LimitCycle;
use crate::prc::Prc;

/// Where on the curve to put the step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Choice {
    /// The CT at which the step starts.
    pub circadian_time: f64,
    /// Hours from now until the clock reaches it.
    pub wait_hours: f64,
    /// The step (K).
    pub delta_k: f64,
    /// The KaiA factor of the step (1: none).
    pub kaia_factor: f64,
    /// The shift the curve predicts (h, advance positive).
    pub predicted_shift_hours: f64,
}

/// The point of any of `curves` whose shift is closest to `target` (the soonest among equals),
/// for a clock now at `ct` running with `period_hours`. `None` if the curves are empty.
pub fn choose(curves: &[&Prc], ct: f64, period_hours: f64, target: f64) -> Option<Choice> {
    let mut best: Option<(f64, Choice)> = None;
    for prc in curves {
        for p in &prc.points {
            let wait = (p.circadian_time - ct).rem_euclid(24.0) * period_hours / 24.0;
            let miss = (p.phase_shift_hours - target).abs();
            let c = Choice {
                circadian_time: p.circadian_time,
                wait_hours: wait,
                delta_k: prc.config.delta_k,
                kaia_factor: prc.config.kaia_factor,
                predicted_shift_hours: p.phase_shift_hours,
            };
            // Misses within a minute are the same; then sooner is better.
            let better = match &best {
                None => true,
                Some((m, b)) => {
                    miss < m - 1.0 / 60.0 || (miss <= m + 1.0 / 60.0 && wait < b.wait_hours)
                }
            };
            if better {
                best = Some((miss, c));
            }
        }
    }
    best.map(|(_, c)| c)
}

/// A step under way on a node: the plan, its window in model hours, the twin that never saw it,
/// and the peaks of both since the step ended.
#[derive(Clone, Debug)]
pub struct ShiftRun {
    plan: PhaseShiftPlan,
    start_h: f64,
    end_h: f64,
    twin: Option<Clock>,
    real_peaks: Vec<f64>,
    twin_peaks: Vec<f64>,
}

/// [`ShiftRun`] as a checkpoint holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftCheckpoint {
    plan: PhaseShiftPlan,
    start_h: f64,
    end_h: f64,
    twin: Option<ClockCheckpoint>,
    real_peaks: Vec<f64>,
    twin_peaks: Vec<f64>,
}

/// A cycle whose shift is within this of the achieved one has settled (h): a quarter hour,
/// about 1 % of a cycle and well above the solver's error in a peak (< 0.01 h).
pub const SETTLED_WITHIN_HOURS: f64 = 0.25;

/// `x` wrapped into (−P/2, P/2].
fn wrap(x: f64, period: f64) -> f64 {
    let w = x.rem_euclid(period);
    if w > period / 2.0 {
        w - period
    } else {
        w
    }
}

fn hours(t: &DateTime<Utc>) -> f64 {
    crate::node::hours_since_epoch(t.timestamp_micros())
}

impl ShiftRun {
    /// Starts tracking `plan` on `clock`: a start already passed becomes now, and the step
    /// then begins at once.
    pub fn new(plan: PhaseShiftPlan, clock: &mut Clock) -> Result<Self, ClockError> {
        let now_h = clock.t_hours();
        let mut run = Self::unstarted(plan);
        if run.start_h < now_h {
            run.start_h = now_h;
            run.end_h = now_h + run.plan.duration_minutes / 60.0;
        }
        if run.start_h <= now_h {
            run.twin = Some(clock.clone());
            clock.set_temperature(clock.temperature_k() + run.plan.delta_k)?;
            run.modulate(clock)?;
        }
        Ok(run)
    }

    /// A run that never started (the node could not take it): only for its report.
    pub fn unstarted(plan: PhaseShiftPlan) -> Self {
        let start_h = hours(&plan.start);
        let end_h = start_h + plan.duration_minutes / 60.0;
        Self {
            plan,
            start_h,
            end_h,
            twin: None,
            real_peaks: Vec::new(),
            twin_peaks: Vec::new(),
        }
    }

    /// The plan being carried out.
    pub fn plan(&self) -> &PhaseShiftPlan {
        &self.plan
    }

    fn offset_at(&self, t: f64) -> f64 {
        if self.start_h <= t && t < self.end_h {
            self.plan.delta_k
        } else {
            0.0
        }
    }

    /// Advances `clock` to `t` with its drive ramping to `base` (K), adding the step inside its
    /// window; the twin follows with the drive alone.
    pub fn advance(&mut self, clock: &mut Clock, t: f64, base: f64) -> Result<(), ClockError> {
        let t0 = clock.t_hours();
        if t <= t0 {
            return clock.advance_to(t, base + self.offset_at(t)).map(|_| ());
        }
        let base0 = clock.temperature_k() - self.offset_at(t0);
        let at = |x: f64| base0 + (base - base0) * (x - t0) / (t - t0);
        for edge in [self.start_h, self.end_h] {
            if !(edge > t0 && edge <= t) || edge <= clock.t_hours() {
                continue;
            }
            let b = at(edge);
            // Up to the edge under the offset that held before it.
            let before = if edge == self.end_h {
                self.plan.delta_k
            } else {
                0.0
            };
            self.step(clock, edge, b, b + before)?;
            if edge == self.start_h {
                // The twin is the clock as it stands when the step begins.
                self.twin = Some(clock.clone());
                clock.set_temperature(b + self.plan.delta_k)?;
                self.modulate(clock)?;
            } else {
                clock.set_temperature(b)?;
                self.release(clock);
            }
        }
        if t > clock.t_hours() {
            let off = self.offset_at(t);
            self.step(clock, t, base, base + off)?;
        }
        Ok(())
    }

    /// Sets the step's KaiA total on `clock` (the twin keeps the configured one).
    fn modulate(&self, clock: &mut Clock) -> Result<(), ClockError> {
        match &self.twin {
            Some(twin) if self.plan.kaia_factor != 1.0 => {
                clock.set_kaia_total(twin.kaia_total() * self.plan.kaia_factor)
            }
            _ => Ok(()),
        }
    }

    /// Gives `clock` back its configured KaiA total: the step ended, or the run was cancelled
    /// inside it.
    pub fn release(&self, clock: &mut Clock) {
        if let Some(twin) = &self.twin {
            // The twin's total is the configured one, valid by construction.
            let _ = clock.set_kaia_total(twin.kaia_total());
        }
    }

    /// After a resume inside the step, sets its KaiA total on `clock` again (a checkpoint
    /// keeps the clock's state, not its parameters).
    pub fn reapply(&self, clock: &mut Clock) -> Result<(), ClockError> {
        let t = clock.t_hours();
        if self.start_h <= t && t < self.end_h {
            self.modulate(clock)?;
        }
        Ok(())
    }

    fn step(&mut self, clock: &mut Clock, t: f64, base: f64, drive: f64) -> Result<(), ClockError> {
        let after = |p: &f64| *p >= self.end_h;
        let peaks = clock.advance_to(t, drive)?;
        self.real_peaks.extend(peaks.iter().filter(|p| after(p)));
        if let Some(twin) = &mut self.twin {
            let peaks = twin.advance_to(t, base)?;
            self.twin_peaks.extend(peaks.iter().filter(|p| after(p)));
        }
        Ok(())
    }

    /// The shift of each cycle measured so far after the step, with the clock's peak it was
    /// measured at: the twin's `i`-th peak after the step minus the clock's, wrapped into
    /// (−P/2, P/2] with the twin's period.
    fn cycle_shifts(&self) -> Option<Vec<(f64, f64)>> {
        let period = self
            .twin
            .as_ref()
            .map(|c| c.snapshot().period_hours)
            .filter(|p| p.is_finite() && *p > 0.0)?;
        Some(
            self.real_peaks
                .iter()
                .zip(&self.twin_peaks)
                .map(|(real, twin)| (*real, wrap(twin - real, period)))
                .collect(),
        )
    }

    /// The achieved shift once both clocks have passed the plan's settling peaks: the shift of
    /// the `settle_cycles`-th cycle after the step.
    pub fn achieved(&self) -> Option<f64> {
        let k = self.plan.settle_cycles.max(1) as usize;
        self.cycle_shifts()?.get(k - 1).map(|(_, s)| *s)
    }

    /// Hours from the step's end to the first peak from which every cycle's shift, up to the
    /// settling peak, is within [`SETTLED_WITHIN_HOURS`] of the achieved shift: how long the
    /// clock's transient lasted, as far as peaks can tell (the first peak after the step is
    /// the soonest it can be measured).
    pub fn settling_time(&self) -> Option<f64> {
        let k = self.plan.settle_cycles.max(1) as usize;
        let shifts = self.cycle_shifts()?;
        let shifts = shifts.get(..k)?;
        let (_, last) = shifts[k - 1];
        let settled_from = shifts
            .iter()
            .rposition(|(_, s)| (s - last).abs() > SETTLED_WITHIN_HOURS)
            .map_or(0, |i| i + 1);
        Some(shifts[settled_from].0 - self.end_h)
    }

    /// The report of this run ending with `outcome` at event time `at`.
    pub fn report(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
        outcome: PhaseShiftOutcome,
    ) -> PhaseShiftReport {
        let time = |h: f64| {
            DateTime::<Utc>::from_timestamp_micros((h * 3.6e9).round() as i64).unwrap_or(at)
        };
        PhaseShiftReport {
            node_id: node_id.to_string(),
            shift_id: self.plan.shift_id.clone(),
            completed_at: at,
            step_start: time(self.start_h),
            step_end: time(self.end_h),
            delta_k: self.plan.delta_k,
            kaia_factor: self.plan.kaia_factor,
            target_shift_hours: self.plan.target_shift_hours,
            predicted_shift_hours: self.plan.predicted_shift_hours,
            achieved_shift_hours: match outcome {
                PhaseShiftOutcome::Completed => self.achieved(),
                _ => None,
            },
            settling_time_hours: match outcome {
                PhaseShiftOutcome::Completed => self.settling_time(),
                _ => None,
            },
            outcome,
        }
    }

    /// For a checkpoint.
    pub fn checkpoint(&self) -> ShiftCheckpoint {
        ShiftCheckpoint {
            plan: self.plan.clone(),
            start_h: self.start_h,
            end_h: self.end_h,
            twin: self.twin.as_ref().map(Clock::checkpoint),
            real_peaks: self.real_peaks.clone(),
            twin_peaks: self.twin_peaks.clone(),
        }
    }

    /// Back from a checkpoint, the twin under the node's clock configuration.
    pub fn resume(
        cp: ShiftCheckpoint,
        cfg: ClockConfig,
        reference: Option<std::sync::Arc<LimitCycle>>,
    ) -> Result<Self, ClockError> {
        Ok(Self {
            plan: cp.plan,
            start_h: cp.start_h,
            end_h: cp.end_h,
            twin: match cp.twin {
                Some(c) => Some(Clock::resume(cfg, reference, c)?),
                None => None,
            },
            real_peaks: cp.real_peaks,
            twin_peaks: cp.twin_peaks,
        })
    }

    /// Runs the twin under new temperature dependence too (the node's ETF changed mid-run).
    pub fn set_etf(&mut self, etf: crate::etf::Etf) -> Result<(), ClockError> {
        match &mut self.twin {
            Some(t) => t.set_etf(etf),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(peaks: &[(f64, f64)], settle_cycles: u32) -> ShiftRun {
        let plan = PhaseShiftPlan {
            shift_id: "s".into(),
            target_shift_hours: 2.0,
            predicted_shift_hours: 2.0,
            start: DateTime::<Utc>::from_timestamp(0, 0).unwrap(),
            duration_minutes: 60.0,
            delta_k: 5.0,
            kaia_factor: 1.0,
            settle_cycles,
        };
        let mut run = ShiftRun::unstarted(plan);
        run.end_h = 10.0;
        // The twin gives the period the shifts wrap with (20.7 h at 30 °C).
        let twin = Clock::new(
            ClockConfig::default(),
            0.0,
            303.15,
            crate::clock::InitialCondition::CircadianTime(0.0),
        );
        run.twin = Some(twin.unwrap());
        run.real_peaks = peaks.iter().map(|p| p.0).collect();
        run.twin_peaks = peaks.iter().map(|p| p.1).collect();
        run
    }

    /// Peaks 1.0, 1.9 and 2.0 h early: the second is within a quarter hour of the third, so
    /// the clock settled at its second peak, 30 h after the step.
    #[test]
    fn the_transient_ends_at_the_first_peak_that_stays_near_the_final_shift() {
        let run = run_with(&[(20.0, 21.0), (40.0, 41.9), (60.0, 62.0)], 3);
        assert!((run.achieved().unwrap() - 2.0).abs() < 1e-12);
        assert!((run.settling_time().unwrap() - 30.0).abs() < 1e-12);
        // A shift at the first peak already: settled as soon as it can be measured.
        let run = run_with(&[(20.0, 22.0), (40.0, 42.1), (60.0, 62.0)], 3);
        assert!((run.settling_time().unwrap() - 10.0).abs() < 1e-12);
        // Wandering off and back counts as unsettled until it is back.
        let run = run_with(&[(20.0, 22.0), (40.0, 41.0), (60.0, 62.0)], 3);
        assert!((run.settling_time().unwrap() - 50.0).abs() < 1e-12);
        // Not enough peaks yet: nothing to say.
        assert!(run_with(&[(20.0, 22.0)], 3).settling_time().is_none());
    }
}
