//! Phase response curve by simulation: a temperature step of ΔT (or a step of the KaiA total,
//! the `parameter_modulation` shift) for D minutes at each circadian time, and the asymptotic
//! phase shift it leaves behind.
//!
//! Computed, never tabulated, so it always matches the configured model and ETF. Under a single
//! Arrhenius factor (`uncompensated`) the step only speeds the clock up by the factor `f` for D,
//! so the curve is flat at `(f − 1)·D`; with differential activation energies it depends on
//! phase.

use serde::{Deserialize, Serialize};

use crate::clock::ClockConfig;
use crate::error::{ClockError, ModelError};
use crate::integrator::Dopri5;
use crate::limit_cycle::LimitCycle;
use crate::outputs::CycleTracker;
use crate::system::KaiSystem;
use crate::temperature::{Constant, VALID_KELVIN};

/// What to perturb and how finely.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrcConfig {
    /// Temperature step (K), positive = warmer.
    pub delta_k: f64,
    /// Length of the step (min).
    pub duration_minutes: f64,
    /// Number of circadian times, evenly spaced from CT 0.
    pub resolution: usize,
    /// Cycles allowed for the perturbed clock to return to the limit cycle before the shift is
    /// read off (the asymptotic phase shift).
    pub settle_cycles: usize,
    /// The KaiA total during the step, as a factor of the configured one: 1 leaves it alone;
    /// 2 adds as much KaiA again, 0.5 takes half away (KaiA added to or depleted from the
    /// reaction, the perturbation of a `parameter_modulation` shift).
    #[serde(default = "unchanged")]
    pub kaia_factor: f64,
}

fn unchanged() -> f64 {
    1.0
}

/// The range of [`PrcConfig::kaia_factor`]: up to four times the KaiA, or down to a tenth.
pub const KAIA_FACTORS: std::ops::RangeInclusive<f64> = 0.1..=4.0;

impl Default for PrcConfig {
    fn default() -> Self {
        Self {
            delta_k: 5.0,
            duration_minutes: 120.0,
            resolution: 24,
            settle_cycles: 8,
            kaia_factor: 1.0,
        }
    }
}

/// The shift caused by a step starting at one circadian time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrcPoint {
    /// CT at which the step starts.
    pub circadian_time: f64,
    /// Asymptotic phase shift in hours, advance positive.
    pub phase_shift_hours: f64,
    /// The same in circadian hours (scaled by 24/period).
    pub phase_shift_ct_hours: f64,
}

/// A computed PRC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prc {
    /// Inputs.
    pub config: PrcConfig,
    /// Base temperature (K): the configuration's reference temperature.
    pub base_temperature_k: f64,
    /// Free-running period at the base temperature (h).
    pub period_hours: f64,
    /// The shift a pure time-rescaling clock would show: `(gA(T+ΔT)/gA(T) − 1)·D` (h), using the
    /// KaiA-stimulated factor. Equal to the whole curve under `uncompensated`.
    pub time_rescaling_shift_hours: f64,
    /// One point per circadian time.
    pub points: Vec<PrcPoint>,
}

/// Computes the PRC of `cfg` at its reference temperature.
pub fn phase_response_curve(cfg: &ClockConfig, prc: &PrcConfig) -> Result<Prc, ClockError> {
    cfg.validate()?;
    let invalid = |name: &str, reason: String| -> ClockError {
        ModelError::InvalidParameter {
            name: name.into(),
            reason,
        }
        .into()
    };
    if !(prc.delta_k.is_finite() && prc.delta_k.abs() <= 30.0) {
        return Err(invalid(
            "delta_k",
            format!("must be within ±30 K, got {}", prc.delta_k),
        ));
    }
    if !(prc.duration_minutes.is_finite()
        && prc.duration_minutes > 0.0
        && prc.duration_minutes <= 720.0)
    {
        return Err(invalid(
            "duration_minutes",
            format!("must be in (0, 720], got {}", prc.duration_minutes),
        ));
    }
    if !(1..=288).contains(&prc.resolution) {
        return Err(invalid(
            "resolution",
            format!("must be 1–288, got {}", prc.resolution),
        ));
    }
    if !(2..=40).contains(&prc.settle_cycles) {
        return Err(invalid(
            "settle_cycles",
            format!("must be 2–40, got {}", prc.settle_cycles),
        ));
    }
    if !(prc.kaia_factor.is_finite() && KAIA_FACTORS.contains(&prc.kaia_factor)) {
        return Err(invalid(
            "kaia_factor",
            format!("must be within 0.1–4, got {}", prc.kaia_factor),
        ));
    }
    let base = cfg.reference_temperature_k;
    let pulse = base + prc.delta_k;
    if !VALID_KELVIN.contains(&pulse) {
        return Err(invalid(
            "delta_k",
            format!("pulse temperature {pulse} K is outside 150–400 K"),
        ));
    }
    // Phase shifts of minutes are the signal: integrate more tightly than a live clock needs.
    let tight = ClockConfig {
        integrator: crate::integrator::IntegratorConfig {
            rtol: cfg.integrator.rtol.min(1e-9),
            atol: cfg.integrator.atol.min(1e-12),
            // Peak times are read off cubic Hermite interpolants (error ∝ h⁴): short steps.
            max_step: if cfg.integrator.min_step < 0.05 {
                cfg.integrator.max_step.min(0.1)
            } else {
                cfg.integrator.max_step
            },
            ..cfg.integrator
        },
        ..*cfg
    };
    let cfg = &tight;
    let lc = cfg.limit_cycle()?;
    let period = lc.period_hours;
    let d = prc.duration_minutes / 60.0;
    let ga = |k: f64| cfg.etf.factors(k).1;
    let mut points = Vec::with_capacity(prc.resolution);
    for i in 0..prc.resolution {
        let ct = 24.0 * i as f64 / prc.resolution as f64;
        let step = Step {
            kelvin: pulse,
            a_total: cfg.params.a_total * prc.kaia_factor,
            hours: d,
        };
        let shift = shift_at(cfg, &lc, ct, step, prc.settle_cycles)?;
        points.push(PrcPoint {
            circadian_time: ct,
            phase_shift_hours: shift,
            phase_shift_ct_hours: shift * 24.0 / period,
        });
    }
    Ok(Prc {
        config: *prc,
        base_temperature_k: base,
        period_hours: period,
        time_rescaling_shift_hours: (ga(pulse) / ga(base) - 1.0) * d,
        points,
    })
}

/// What the perturbed clock runs under for how long.
#[derive(Clone, Copy, Debug)]
struct Step {
    /// Temperature (K).
    kelvin: f64,
    /// KaiA total (µM).
    a_total: f64,
    /// Length (h).
    hours: f64,
}

/// Runs the unperturbed and perturbed clocks from CT `ct` and compares their last peaks.
fn shift_at(
    cfg: &ClockConfig,
    lc: &LimitCycle,
    ct: f64,
    step: Step,
    settle: usize,
) -> Result<f64, ClockError> {
    let p = &cfg.params;
    let d = step.hours;
    let pulsed = crate::model::KaiParams {
        a_total: step.a_total,
        ..*p
    };
    let base = cfg.reference_temperature_k;
    let period = lc.period_hours;
    // Start exactly on the orbit: integrate from the recorded peak (CT 12) for the time to `ct`.
    let tau = ((ct - 12.0).rem_euclid(24.0) / 24.0) * period;
    let mut ig = Dopri5::new(0.0, lc.samples[0], cfg.integrator)?;
    let base_sys = || KaiSystem::new(p, &cfg.etf, Constant(base));
    if tau > 0.0 {
        ig.advance_to(&mut base_sys(), tau, |_| {})?;
    }
    let start = ig;
    let end = tau + d + (settle as f64 + 0.5) * period;
    let last_peak = |mut ig: Dopri5<3>, pulse: bool| -> Result<f64, ClockError> {
        let mut tracker = CycleTracker::new(p, ig.t(), 0.0, period, lc.s431_range, ig.y());
        let mut last = None;
        let mut observe = |s: &crate::integrator::Step<'_, 3>| {
            if let Some(t) = tracker.observe(s) {
                last = Some(t);
            }
        };
        if pulse {
            ig.advance_to(
                &mut KaiSystem::new(&pulsed, &cfg.etf, Constant(step.kelvin)),
                tau + d,
                &mut observe,
            )?;
        }
        ig.advance_to(&mut base_sys(), end, &mut observe)?;
        last.ok_or_else(|| {
            ModelError::NoOscillation {
                reason: "no peak after the perturbation".into(),
            }
            .into()
        })
    };
    let t_ref = last_peak(start, false)?;
    let t_pert = last_peak(start, true)?;
    // Advance positive: the perturbed clock peaks earlier. Wrap into (−P/2, P/2].
    let mut shift = (t_ref - t_pert).rem_euclid(period);
    if shift > period / 2.0 {
        shift -= period;
    }
    Ok(shift)
}
