//! A node's own settings: the parameters its control commands changed, over the configuration
//! every node shares.

use kaiabc_schemas::{
    AtpaseConstraint, Calibration, ControlAction, EntrainmentPatch, FilterPatch, MappingPatch,
    SimulationPatch, StructuralCoupling,
};
use serde::{Deserialize, Serialize};

use crate::etf::Etf;
use crate::kalman::KalmanParams;
use crate::node::NodeConfig;
use crate::outputs::OutputMapping;

/// Parameters a node holds apart from the shared [`NodeConfig`]; `None` follows the shared value.
/// Small and `Copy`: it travels in checkpoints and the API folds the control log into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// Temperature dependence of the clock.
    pub etf: Option<Etf>,
    /// KOA → PWM.
    pub mapping: Option<OutputMapping>,
    /// Kalman tuning.
    pub kalman: Option<KalmanParams>,
    /// Free-run threshold (h).
    pub max_gap_hours: Option<f64>,
    /// CT a reset starts at.
    pub initial_ct: Option<f64>,
    /// Offsets added to the node's readings before the filter (none: the readings as sent).
    /// (Serialised in checkpoints after the fields above, see `node::CheckpointV5`.)
    #[serde(skip)]
    pub calibration: Option<Calibration>,
    /// Solver tolerances and step bounds (as for `calibration`, checkpointed apart).
    #[serde(skip)]
    pub integrator: Option<crate::integrator::IntegratorConfig>,
    /// The API specification's structural-coupling fields: kept for the API to echo, no
    /// effect on the clock (not checkpointed: the API folds them from the control log).
    #[serde(skip)]
    pub structural_coupling: StructuralCoupling,
    /// As `structural_coupling`, the specification's ATPase-constraint fields.
    #[serde(skip)]
    pub atpase_constraint: AtpaseConstraint,
}

/// A parameter change that would leave a node with unusable settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct SettingsError {
    /// Which group of settings.
    pub what: &'static str,
    /// Why.
    pub reason: String,
}

/// The settings in effect, every one resolved.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Effective {
    /// Temperature dependence.
    pub etf: Etf,
    /// KOA → PWM.
    pub mapping: OutputMapping,
    /// Kalman tuning.
    pub kalman: KalmanParams,
    /// Free-run threshold (h).
    pub max_gap_hours: f64,
    /// CT a reset starts at.
    pub initial_ct: f64,
    /// Solver tolerances and step bounds.
    pub integrator: crate::integrator::IntegratorConfig,
}

impl NodeSettings {
    /// Every setting resolved against the shared configuration.
    pub fn effective(&self, cfg: &NodeConfig) -> Effective {
        Effective {
            etf: self.etf.unwrap_or(cfg.clock.etf),
            mapping: self.mapping.unwrap_or(cfg.mapping),
            kalman: self.kalman.unwrap_or(cfg.kalman),
            max_gap_hours: self.max_gap_hours.unwrap_or(cfg.max_gap_hours),
            initial_ct: self.initial_ct.unwrap_or(cfg.initial_ct),
            integrator: self.integrator.unwrap_or(cfg.clock.integrator),
        }
    }

    /// The clock configuration of this node (the shared one under its ETF).
    pub fn clock_config(&self, cfg: &NodeConfig) -> crate::clock::ClockConfig {
        crate::clock::ClockConfig {
            etf: self.etf.unwrap_or(cfg.clock.etf),
            integrator: self.integrator.unwrap_or(cfg.clock.integrator),
            ..cfg.clock
        }
    }

    /// The settings after `action` if it changes parameters (others leave them as they are),
    /// checked as a whole: the API refuses a change this rejects, and the node applies exactly
    /// what this returns.
    pub fn patched(&self, cfg: &NodeConfig, action: &ControlAction) -> Result<Self, SettingsError> {
        let now = self.effective(cfg);
        let mut next = *self;
        match action {
            ControlAction::Entrainment(p) => {
                if let Some(c) = &p.structural_coupling {
                    next.structural_coupling = next.structural_coupling.merged(c);
                }
                if let Some(c) = &p.atpase_constraint {
                    next.atpase_constraint = next.atpase_constraint.merged(c);
                }
                let etf = patch_etf(now.etf, p);
                etf.validate().map_err(|e| SettingsError {
                    what: "entrainment parameters",
                    reason: e.to_string(),
                })?;
                next.etf = Some(etf);
            }
            ControlAction::OutputMapping(p) => {
                let m = patch_mapping(now.mapping, p);
                m.validate().map_err(|e| SettingsError {
                    what: "output mapping",
                    reason: e.to_string(),
                })?;
                next.mapping = Some(m);
            }
            ControlAction::Filter(p) => {
                let k = patch_kalman(now.kalman, p);
                k.validate().map_err(|e| SettingsError {
                    what: "filter parameters",
                    reason: e.to_string(),
                })?;
                next.kalman = Some(k);
            }
            ControlAction::Simulation(SimulationPatch {
                max_gap_hours,
                initial_ct,
                absolute_tolerance,
                relative_tolerance,
                max_step_hours,
                min_step_hours,
            }) => {
                let mut ig = now.integrator;
                for (field, v) in [
                    (&mut ig.atol, absolute_tolerance),
                    (&mut ig.rtol, relative_tolerance),
                    (&mut ig.max_step, max_step_hours),
                    (&mut ig.min_step, min_step_hours),
                ] {
                    if let Some(v) = v {
                        *field = *v;
                    }
                }
                if ig != now.integrator {
                    ig.validate().map_err(|e| SettingsError {
                        what: "simulation settings",
                        reason: e.to_string(),
                    })?;
                    next.integrator = Some(ig);
                }
                if let Some(g) = max_gap_hours {
                    if !(g.is_finite() && *g > 0.0 && *g <= 24.0 * 30.0) {
                        return Err(SettingsError {
                            what: "simulation settings",
                            reason: format!("max_gap_hours must be in (0, 720], got {g}"),
                        });
                    }
                    next.max_gap_hours = Some(*g);
                }
                if let Some(ct) = initial_ct {
                    if !(ct.is_finite() && (0.0..24.0).contains(ct)) {
                        return Err(SettingsError {
                            what: "simulation settings",
                            reason: format!("initial_ct must be in [0, 24), got {ct}"),
                        });
                    }
                    next.initial_ct = Some(*ct);
                }
            }
            ControlAction::Calibration(c) => {
                c.validate().map_err(|reason| SettingsError {
                    what: "calibration",
                    reason,
                })?;
                next.calibration = (!c.is_zero()).then_some(*c);
            }
            _ => {}
        }
        Ok(next)
    }
}

/// Copies onto `$target` each of `$field` that the patch `$patch` sets.
macro_rules! patch_fields {
    ($target:ident, $patch:ident: $($field:ident),+ $(,)?) => {
        $(
            if let Some(v) = $patch.$field {
                $target.$field = v;
            }
        )+
    };
}

fn patch_etf(mut e: Etf, p: &EntrainmentPatch) -> Etf {
    patch_fields!(e, p: reference_temperature_k, activation_energy_kaia_kj_mol,
        activation_energy_basal_kj_mol, rate_scale);
    e
}

fn patch_mapping(mut m: OutputMapping, p: &MappingPatch) -> OutputMapping {
    patch_fields!(m, p: mapping_function, pwm_min, pwm_max, koa_threshold_low,
        koa_threshold_high, invert, sigmoid_gain);
    m
}

fn patch_kalman(mut k: KalmanParams, p: &FilterPatch) -> KalmanParams {
    patch_fields!(k, p: process_noise, measurement_noise, gate_good, gate_fair, gate_poor,
        reinit_after);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockConfig;

    fn cfg() -> NodeConfig {
        NodeConfig {
            reference: None,
            ..NodeConfig::new(ClockConfig::default()).unwrap()
        }
    }

    #[test]
    fn patches_change_only_what_they_name_and_refuse_bad_values() {
        let cfg = cfg();
        let s = NodeSettings::default();
        assert_eq!(s.effective(&cfg).etf, cfg.clock.etf);
        let s = s
            .patched(
                &cfg,
                &ControlAction::Entrainment(EntrainmentPatch {
                    rate_scale: Some(1.2),
                    ..Default::default()
                }),
            )
            .unwrap();
        let e = s.effective(&cfg);
        assert_eq!(e.etf.rate_scale, 1.2);
        assert_eq!(
            e.etf.activation_energy_kaia_kj_mol,
            cfg.clock.etf.activation_energy_kaia_kj_mol
        );
        // Thresholds in the wrong order: the mapping as a whole is invalid.
        let err = s
            .patched(
                &cfg,
                &ControlAction::OutputMapping(MappingPatch {
                    koa_threshold_low: Some(0.9),
                    koa_threshold_high: Some(0.2),
                    ..Default::default()
                }),
            )
            .unwrap_err();
        assert_eq!(err.what, "output mapping");
        let err = s
            .patched(
                &cfg,
                &ControlAction::Filter(FilterPatch {
                    gate_good: Some(0.999),
                    ..Default::default()
                }),
            )
            .unwrap_err();
        assert!(err.reason.contains("gate"), "{err}");
        assert!(s
            .patched(
                &cfg,
                &ControlAction::Simulation(SimulationPatch {
                    initial_ct: Some(24.0),
                    ..Default::default()
                })
            )
            .is_err());
        // Other actions leave the settings alone.
        assert_eq!(s.patched(&cfg, &ControlAction::Reset).unwrap(), s);
    }
}
