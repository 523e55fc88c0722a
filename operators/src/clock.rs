//! One node's clock: the model integrated through its temperature history, with its outputs.
//!
//! The clock is advanced reading by reading: between the last applied temperature and the new
//! one the input is linear, and the integrator stops exactly at each reading time.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{ClockError, ModelError};
use crate::etf::{Etf, T_REF_K};
use crate::integrator::{advance_lanes, Dopri5, IntegratorConfig, Step, StepStats, LANES};
use crate::limit_cycle::LimitCycle;
use crate::model::{Concentrations, KaiParams, KaiState};
use crate::outputs::CycleTracker;
use crate::system::KaiLanes;
use crate::temperature::{check_kelvin, Segment, TemperatureSource};

/// Everything that defines a clock's dynamics.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockConfig {
    /// Model parameters.
    pub params: KaiParams,
    /// Temperature dependence.
    pub etf: Etf,
    /// Solver settings.
    pub integrator: IntegratorConfig,
    /// Temperature (K) of the reference limit cycle used for initial phases and resets.
    pub reference_temperature_k: f64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            params: KaiParams::default(),
            etf: Etf::default(),
            integrator: IntegratorConfig::default(),
            reference_temperature_k: T_REF_K,
        }
    }
}

impl ClockConfig {
    /// Validates every part.
    pub fn validate(&self) -> Result<(), ClockError> {
        self.params.validate()?;
        self.etf.validate()?;
        self.integrator.validate()?;
        check_kelvin("reference_temperature_k", self.reference_temperature_k)?;
        Ok(())
    }

    /// The reference limit cycle of this configuration (share it between nodes with an `Arc`).
    pub fn limit_cycle(&self) -> Result<LimitCycle, ClockError> {
        LimitCycle::compute(
            &self.params,
            &self.etf,
            self.reference_temperature_k,
            &self.integrator,
        )
    }
}

/// Where a clock starts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialCondition {
    /// On the reference limit cycle at this circadian time.
    CircadianTime(f64),
    /// An explicit state (its CT is taken from the nearest point of the reference cycle).
    State(KaiState),
}

/// What a clock reports at a moment: the API's `OscillatorState` minus node and PWM.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockSnapshot {
    /// Model time (h).
    pub t_hours: f64,
    /// Circadian time in [0, 24).
    pub circadian_time: f64,
    /// CT/24 in [0, 1).
    pub phase: f64,
    /// Period estimate (h) from peak-to-peak intervals.
    pub period_hours: f64,
    /// The six state variables in µM.
    pub state_variables: Concentrations,
    /// The six state variables as fractions of their totals.
    pub state_fractions: Concentrations,
    /// Raw S431-phosphorylated fraction (S + D)/C_tot.
    pub koa_raw: f64,
    /// KOA normalised to 0–1 over the last full cycle.
    pub koa_metric: f64,
    /// Total phosphorylated fraction (T + D + S)/C_tot.
    pub total_phosphorylation: f64,
    /// Temperature (K) the clock is running at now.
    pub temperature_kelvin: f64,
}

/// A node's clock.
#[derive(Clone, Debug)]
pub struct Clock {
    cfg: ClockConfig,
    reference: Option<Arc<LimitCycle>>,
    ig: Dopri5<3>,
    temperature_k: f64,
    tracker: CycleTracker,
}

/// What a [`Clock`] needs to resume where it stopped: the integrator and the cycle tracker.
/// The configuration and reference limit cycle are not in it; they come from the running
/// configuration, so a checkpoint stays small.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockCheckpoint {
    ig: Dopri5<3>,
    temperature_k: f64,
    tracker: CycleTracker,
}

impl Clock {
    /// Creates a clock at time `t0_hours` and temperature `temperature_k`, computing the
    /// reference limit cycle. Parameters that do not oscillate are allowed: CT then advances at
    /// a nominal 24 h until the clock itself shows peaks.
    pub fn new(
        cfg: ClockConfig,
        t0_hours: f64,
        temperature_k: f64,
        initial: InitialCondition,
    ) -> Result<Self, ClockError> {
        cfg.validate()?;
        let reference = match cfg.limit_cycle() {
            Ok(lc) => Some(Arc::new(lc)),
            Err(ClockError::Model(ModelError::NoOscillation { .. })) => None,
            Err(e) => return Err(e),
        };
        Self::with_reference(cfg, reference, t0_hours, temperature_k, initial)
    }

    /// Creates a clock sharing an already computed reference cycle (one per configuration,
    /// not one per node).
    pub fn with_reference(
        cfg: ClockConfig,
        reference: Option<Arc<LimitCycle>>,
        t0_hours: f64,
        temperature_k: f64,
        initial: InitialCondition,
    ) -> Result<Self, ClockError> {
        cfg.validate()?;
        check_temperature(temperature_k)?;
        let (state, ct0) = resolve_initial(&cfg, reference.as_deref(), initial)?;
        let y0 = state.to_array();
        let ig = Dopri5::new(t0_hours, y0, cfg.integrator)?;
        let tracker = new_tracker(&cfg, reference.as_deref(), t0_hours, ct0, &y0);
        Ok(Self {
            cfg,
            reference,
            ig,
            temperature_k,
            tracker,
        })
    }

    /// The state needed to resume this clock later ([`Clock::resume`]).
    pub fn checkpoint(&self) -> ClockCheckpoint {
        ClockCheckpoint {
            ig: self.ig,
            temperature_k: self.temperature_k,
            tracker: self.tracker,
        }
    }

    /// A clock continuing from `cp` under `cfg` (a restart resumes the clock instead of
    /// starting it again at its initial condition).
    pub fn resume(
        cfg: ClockConfig,
        reference: Option<Arc<LimitCycle>>,
        cp: ClockCheckpoint,
    ) -> Result<Self, ClockError> {
        cfg.validate()?;
        check_temperature(cp.temperature_k)?;
        Ok(Self {
            cfg,
            reference,
            ig: cp.ig,
            temperature_k: cp.temperature_k,
            tracker: cp.tracker,
        })
    }

    /// Advances to `t_hours`, the temperature moving linearly from the current one to
    /// `temperature_k`. Returns the times of cycle peaks (CT 12) passed on the way.
    pub fn advance_to(&mut self, t_hours: f64, temperature_k: f64) -> Result<Vec<f64>, ClockError> {
        check_temperature(temperature_k)?;
        let seg = Segment::new(self.ig.t(), self.temperature_k, t_hours, temperature_k);
        let peaks = self.advance_with(t_hours, seg)?;
        self.temperature_k = temperature_k;
        Ok(peaks)
    }

    /// Advances to `t_hours` with an arbitrary temperature input (the caller's profile).
    pub fn advance_with<S: TemperatureSource>(
        &mut self,
        t_hours: f64,
        mut temperature: S,
    ) -> Result<Vec<f64>, ClockError> {
        let end_temp = temperature.kelvin_at(t_hours);
        let mut sys = KaiLanes::new([&self.cfg.params], [&self.cfg.etf], [temperature]);
        let tracker = &mut self.tracker;
        let mut peaks = Vec::new();
        let mut observe = |step: &Step<'_, 3>| {
            if let Some(p) = tracker.observe(step) {
                peaks.push(p);
            }
        };
        let [r] = advance_lanes([&mut self.ig], &mut sys, [t_hours], [&mut observe]);
        r?;
        self.temperature_k = end_temp;
        Ok(peaks)
    }

    /// Advances many clocks, each to its own reading `(t_hours, temperature_k)` (temperature
    /// linear from the clock's current one, as [`Clock::advance_to`]), [`LANES`] clocks side by
    /// side. Each clock ends exactly where `advance_to` alone would leave it, bit for bit; the
    /// result for each is its cycle peaks or its error.
    pub fn advance_batch(
        clocks: &mut [Clock],
        readings: &[(f64, f64)],
    ) -> Vec<Result<Vec<f64>, ClockError>> {
        assert_eq!(clocks.len(), readings.len(), "one reading per clock");
        let mut out = Vec::with_capacity(clocks.len());
        for (chunk, reads) in clocks.chunks_mut(LANES).zip(readings.chunks(LANES)) {
            let lanes: Result<&mut [Clock; LANES], _> = chunk.try_into();
            let bad = reads.iter().any(|&(_, k)| check_temperature(k).is_err());
            match lanes {
                Ok(lanes) if !bad => out.extend(Self::advance_group(lanes, reads)),
                _ => {
                    for (c, &(t, k)) in chunk.iter_mut().zip(reads) {
                        out.push(c.advance_to(t, k));
                    }
                }
            }
        }
        out
    }

    fn advance_group(
        clocks: &mut [Clock; LANES],
        reads: &[(f64, f64)],
    ) -> Vec<Result<Vec<f64>, ClockError>> {
        let segs: [Segment; LANES] = std::array::from_fn(|l| {
            let c = &clocks[l];
            Segment::new(c.ig.t(), c.temperature_k, reads[l].0, reads[l].1)
        });
        let params: [KaiParams; LANES] = std::array::from_fn(|l| clocks[l].cfg.params);
        let etfs: [Etf; LANES] = std::array::from_fn(|l| clocks[l].cfg.etf);
        let mut sys = KaiLanes::new(params.each_ref(), etfs.each_ref(), segs);
        let mut peaks: [Vec<f64>; LANES] = Default::default();
        let results = {
            // Split each clock into its integrator and its cycle tracker (as an observer).
            let mut igs = Vec::with_capacity(LANES);
            let mut observers = Vec::with_capacity(LANES);
            for (c, p) in clocks.iter_mut().zip(peaks.iter_mut()) {
                igs.push(&mut c.ig);
                let tracker = &mut c.tracker;
                observers.push(move |s: &Step<'_, 3>| p.extend(tracker.observe(s)));
            }
            let igs: [&mut Dopri5<3>; LANES] = igs.try_into().unwrap_or_else(|_| unreachable!());
            let Ok(mut observers): Result<[_; LANES], _> = observers.try_into() else {
                unreachable!()
            };
            advance_lanes(
                igs,
                &mut sys,
                std::array::from_fn(|l| reads[l].0),
                observers.each_mut(),
            )
        };
        let mut out = Vec::with_capacity(LANES);
        for (l, ((clock, r), p)) in clocks.iter_mut().zip(results).zip(peaks).enumerate() {
            out.push(
                r.map(|()| {
                    clock.temperature_k = reads[l].1;
                    p
                })
                .map_err(ClockError::from),
            );
        }
        out
    }

    /// The clock's outputs now.
    pub fn snapshot(&self) -> ClockSnapshot {
        let p = &self.cfg.params;
        let st = KaiState::from_array(*self.ig.y());
        let t = self.ig.t();
        let ct = self.tracker.circadian_time(t);
        let koa_raw = st.s431_fraction(p);
        ClockSnapshot {
            t_hours: t,
            circadian_time: ct,
            phase: ct / 24.0,
            period_hours: self.tracker.period_hours(),
            state_variables: st.concentrations(p),
            state_fractions: st.fractions(p),
            koa_raw,
            koa_metric: self.tracker.koa(koa_raw),
            total_phosphorylation: st.total_phosphorylation(p),
            temperature_kelvin: self.temperature_k,
        }
    }

    /// Resets the state (the API's `/oscillator/reset`) without moving time.
    pub fn reset(&mut self, initial: InitialCondition) -> Result<(), ClockError> {
        let (state, ct) = resolve_initial(&self.cfg, self.reference.as_deref(), initial)?;
        let y = state.to_array();
        self.ig.set_state(y);
        self.tracker.reanchor(self.ig.t(), ct, &y);
        Ok(())
    }

    /// Moves time forward without integrating: the clock was paused and resumes where it was.
    pub fn resume_at(&mut self, t_hours: f64) -> Result<(), ClockError> {
        if t_hours < self.ig.t() {
            return Err(crate::error::OdeError::Backwards {
                from: self.ig.t(),
                to: t_hours,
            }
            .into());
        }
        let ct = self.tracker.circadian_time(self.ig.t());
        self.ig.set_time(t_hours);
        let y = *self.ig.y();
        self.tracker.reanchor(t_hours, ct, &y);
        Ok(())
    }

    /// Runs on under other temperature-dependence parameters (a node's entrainment settings
    /// changed); the state is kept.
    pub fn set_etf(&mut self, etf: crate::etf::Etf) -> Result<(), ClockError> {
        etf.validate()?;
        self.cfg.etf = etf;
        Ok(())
    }

    /// Runs on under other solver tolerances and step bounds (a node's simulation settings
    /// changed); the state is kept.
    pub fn set_integrator(
        &mut self,
        ig: crate::integrator::IntegratorConfig,
    ) -> Result<(), ClockError> {
        self.ig.set_config(ig)?;
        self.cfg.integrator = ig;
        Ok(())
    }

    /// The KaiA total the clock runs with (µM).
    pub fn kaia_total(&self) -> f64 {
        self.cfg.params.a_total
    }

    /// Runs on with another KaiA total (µM), the state kept: a planned KaiA step begins or ends
    /// (KaiA added to or taken from the reaction; free KaiA follows at once).
    pub fn set_kaia_total(&mut self, a_total: f64) -> Result<(), ClockError> {
        let params = crate::model::KaiParams {
            a_total,
            ..self.cfg.params
        };
        params.validate()?;
        self.cfg.params = params;
        Ok(())
    }

    /// Steps the temperature now (the next advance ramps from here): a planned temperature
    /// step begins or ends between readings.
    pub fn set_temperature(&mut self, temperature_k: f64) -> Result<(), ClockError> {
        check_temperature(temperature_k)?;
        self.temperature_k = temperature_k;
        Ok(())
    }

    /// The temperature the clock stands at (K).
    pub fn temperature_k(&self) -> f64 {
        self.temperature_k
    }

    /// Current model time (h).
    pub fn t_hours(&self) -> f64 {
        self.ig.t()
    }

    /// Current dynamic state.
    pub fn state(&self) -> KaiState {
        KaiState::from_array(*self.ig.y())
    }

    /// Solver counters since creation.
    pub fn stats(&self) -> StepStats {
        self.ig.stats()
    }

    /// Configuration.
    pub fn config(&self) -> &ClockConfig {
        &self.cfg
    }

    /// The reference limit cycle, if the parameters oscillate.
    pub fn reference(&self) -> Option<&Arc<LimitCycle>> {
        self.reference.as_ref()
    }

    /// Cycle peaks seen so far.
    pub fn peaks_seen(&self) -> u64 {
        self.tracker.peaks_seen()
    }
}

fn check_temperature(k: f64) -> Result<(), ClockError> {
    Ok(check_kelvin("temperature_kelvin", k)?)
}

fn resolve_initial(
    cfg: &ClockConfig,
    reference: Option<&LimitCycle>,
    initial: InitialCondition,
) -> Result<(KaiState, f64), ClockError> {
    match (initial, reference) {
        (InitialCondition::CircadianTime(ct), Some(lc)) => {
            if !ct.is_finite() {
                return Err(ModelError::InvalidParameter {
                    name: "circadian_time".into(),
                    reason: "must be finite".into(),
                }
                .into());
            }
            Ok((lc.state_at_ct(ct), ct.rem_euclid(24.0)))
        }
        (InitialCondition::CircadianTime(_), None) => Err(ModelError::NoOscillation {
            reason: "no limit cycle to place a circadian time on; give an explicit state".into(),
        }
        .into()),
        (InitialCondition::State(st), lc) => {
            st.validate(&cfg.params, 0.0)?;
            let ct = lc.map_or(0.0, |lc| lc.ct_of_state(&st));
            Ok((st, ct))
        }
    }
}

fn new_tracker(
    cfg: &ClockConfig,
    reference: Option<&LimitCycle>,
    t0: f64,
    ct0: f64,
    y0: &[f64; 3],
) -> CycleTracker {
    let (period, range) = match reference {
        Some(lc) => (lc.period_hours, lc.s431_range),
        None => (24.0, (0.0, 1.0)),
    };
    CycleTracker::new(&cfg.params, t0, ct0, period, range, y0)
}
