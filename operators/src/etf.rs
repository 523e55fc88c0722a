//! The entrainment transfer function (ETF): how measured temperature sets the model's rates.
//!
//! Every rate follows an Arrhenius factor referenced to `T_ref` (303.15 K, the temperature of the
//! Rust et al. 2007 rate table): `g(T) = rate_scale · exp(−E/R · (1/T − 1/T_ref))`. The
//! KaiA-stimulated terms (`kA`) use activation energy `E_A`, the basal terms (`k0`) use `E_0`.
//!
//! Why two energies: with one factor for all rates the vector field is only multiplied by a
//! constant, so temperature merely rescales time — the period changes as `1/g` and a temperature
//! pulse shifts every phase by the same amount. That is the behaviour of a temperature
//! compensation mutant. With `E_A > E_0` warming speeds the KaiA-driven phosphorylation more than
//! the basal dephosphorylation; the balance between the two keeps the period close to constant
//! (temperature compensation, Nakajima et al. 2005 Science 308:414; the mechanism of Hatakeyama &
//! Kaneko 2012 PNAS 109:8109) while making the clock's response to temperature phase-dependent,
//! which is what lets a daily temperature cycle entrain it (Yoshida et al. 2009 PNAS 106:1648).
//!
//! # The API's `ETFParameters`, mapped honestly
//!
//! | API field | here | meaning |
//! |---|---|---|
//! | `reference_temperature_kelvin` | [`Etf::reference_temperature_k`] | temperature at which the rate table holds (default 303.15 K) |
//! | `arrhenius_scaling.activation_energy_kJ_mol` | [`Etf::activation_energy_kaia_kj_mol`] | `E_A`, for the KaiA-stimulated (`kA`) terms |
//! | `arrhenius_scaling.pre_exponential_factor` | [`Etf::rate_scale`] | a dimensionless multiplier of all rates (1 = the published rates at `T_ref`); an absolute Arrhenius prefactor has no meaning once rates are fitted at `T_ref`, so the API takes the ratio |
//! | `atpase_constraint.temperature_dependence` | [`EtfPreset`] | `compensated` → [`EtfPreset::Compensated`], `case_ii_mutant` → [`EtfPreset::Uncompensated`] |
//! | `atpase_constraint` energy of the basal (ATPase-coupled) steps | [`Etf::activation_energy_basal_kj_mol`] | `E_0`, for the basal (`k0`) terms |
//! | `structural_coupling.*`, `atpase_constraint.baseline_f_hyd`, `coupling_strength` | — | no counterpart in the Rust 2007 model; the server reports them as unsupported rather than pretending they act |

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Molar gas constant, J/(mol·K) (CODATA 2018, exact).
pub const GAS_CONSTANT: f64 = 8.314_462_618;

/// The temperature (K) at which the published rate table holds: 30 °C.
pub const T_REF_K: f64 = 303.15;

/// Named ETF parameter sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtfPreset {
    /// `E_A` = 45 kJ/mol, `E_0` = 25 kJ/mol: temperature-compensated period, phase-dependent PRC.
    Compensated,
    /// `E_A` = `E_0` = 40 kJ/mol: a single Arrhenius factor, as in a compensation mutant.
    Uncompensated,
}

impl std::str::FromStr for EtfPreset {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "compensated" => Ok(Self::Compensated),
            "uncompensated" | "case_ii_mutant" => Ok(Self::Uncompensated),
            other => Err(ModelError::InvalidParameter {
                name: "etf".into(),
                reason: format!("unknown preset `{other}` (expected compensated or uncompensated)"),
            }),
        }
    }
}

/// Temperature dependence of the model's rates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Etf {
    /// Temperature at which the rate table holds (K).
    pub reference_temperature_k: f64,
    /// `E_A`: activation energy of the KaiA-stimulated terms (kJ/mol).
    pub activation_energy_kaia_kj_mol: f64,
    /// `E_0`: activation energy of the basal terms (kJ/mol).
    pub activation_energy_basal_kj_mol: f64,
    /// Multiplies every rate; calibrates the free-running period (period scales as 1/rate_scale).
    pub rate_scale: f64,
}

impl Default for Etf {
    fn default() -> Self {
        Self::preset(EtfPreset::Compensated)
    }
}

impl Etf {
    /// The named parameter set, referenced to 303.15 K with `rate_scale` 1.
    pub fn preset(p: EtfPreset) -> Self {
        let (ea, e0) = match p {
            EtfPreset::Compensated => (45.0, 25.0),
            EtfPreset::Uncompensated => (40.0, 40.0),
        };
        Self {
            reference_temperature_k: T_REF_K,
            activation_energy_kaia_kj_mol: ea,
            activation_energy_basal_kj_mol: e0,
            rate_scale: 1.0,
        }
    }

    /// Checks ranges: `T_ref` in 200–400 K, energies in 0–200 kJ/mol, `rate_scale` in (0, 100].
    pub fn validate(&self) -> Result<(), ModelError> {
        let checks = [
            (
                "reference_temperature_kelvin",
                self.reference_temperature_k,
                200.0,
                400.0,
            ),
            (
                "activation_energy_kaia_kj_mol",
                self.activation_energy_kaia_kj_mol,
                0.0,
                200.0,
            ),
            (
                "activation_energy_basal_kj_mol",
                self.activation_energy_basal_kj_mol,
                0.0,
                200.0,
            ),
            ("rate_scale", self.rate_scale, f64::MIN_POSITIVE, 100.0),
        ];
        for (name, v, lo, hi) in checks {
            if !(v.is_finite() && v >= lo && v <= hi) {
                return Err(ModelError::InvalidParameter {
                    name: name.into(),
                    reason: format!("must be in [{lo}, {hi}], got {v}"),
                });
            }
        }
        Ok(())
    }

    /// The factors `(g0, gA)` multiplying the basal and KaiA-stimulated rates at `temperature_k`.
    #[inline]
    pub fn factors(&self, temperature_k: f64) -> (f64, f64) {
        let x = (1.0 / temperature_k - 1.0 / self.reference_temperature_k) / GAS_CONSTANT * 1e3;
        (
            self.rate_scale * (-self.activation_energy_basal_kj_mol * x).exp(),
            self.rate_scale * (-self.activation_energy_kaia_kj_mol * x).exp(),
        )
    }

    /// True when both energies are equal, i.e. temperature only rescales time.
    pub fn is_time_rescaling(&self) -> bool {
        self.activation_energy_kaia_kj_mol == self.activation_energy_basal_kj_mol
    }
}

/// Remembers the last temperature's factors: readings are sparse relative to RHS evaluations,
/// and at constant temperature this removes both `exp` calls from the inner loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FactorCache {
    temperature_k: f64,
    g0: f64,
    ga: f64,
}

impl FactorCache {
    pub(crate) fn new() -> Self {
        Self {
            temperature_k: f64::NAN,
            g0: f64::NAN,
            ga: f64::NAN,
        }
    }

    #[inline]
    pub(crate) fn get(&mut self, etf: &Etf, temperature_k: f64) -> (f64, f64) {
        if temperature_k != self.temperature_k {
            let (g0, ga) = etf.factors(temperature_k);
            *self = Self {
                temperature_k,
                g0,
                ga,
            };
        }
        (self.g0, self.ga)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_are_one_at_reference_and_follow_arrhenius() {
        let etf = Etf::default();
        let (g0, ga) = etf.factors(T_REF_K);
        assert!((g0 - 1.0).abs() < 1e-15 && (ga - 1.0).abs() < 1e-15);
        // 45 kJ/mol between 303.15 K and 308.15 K: exp(45000/8.314462618·(1/303.15 − 1/308.15)).
        let (_, ga) = etf.factors(308.15);
        let want = (45_000.0_f64 / 8.314_462_618 * (1.0 / 303.15 - 1.0 / 308.15)).exp();
        assert!((ga - want).abs() < 1e-12, "{ga} vs {want}");
        assert!(ga > 1.33 && ga < 1.35);
    }

    #[test]
    fn presets_parse_and_validate() {
        assert_eq!(
            "case_ii_mutant".parse::<EtfPreset>().unwrap(),
            EtfPreset::Uncompensated
        );
        assert!("warm".parse::<EtfPreset>().is_err());
        assert!(Etf::preset(EtfPreset::Uncompensated).is_time_rescaling());
        let bad = Etf {
            rate_scale: 0.0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().code(), "INVALID_PARAMETER");
    }
}
