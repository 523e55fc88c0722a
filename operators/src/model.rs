//! The ordered-phosphorylation model of the KaiABC clock (Rust, Markson, Lane, Fisher & O'Shea,
//! Science 318:809, 2007): parameters, state and right-hand side.
//!
//! KaiC hexamers move between four phosphoforms: U (unphosphorylated), T (T432 phosphorylated),
//! D (= ST, both sites) and S (S431 phosphorylated). KaiA stimulates the phosphorylation steps;
//! S-form KaiC sequesters KaiA (two KaiA per S, via KaiB) and that negative feedback closes the
//! loop. Only T, D and S are dynamic: U follows from the KaiC total and free KaiA from
//! `A = max(0, A_tot − 2S)`.
//!
//! Every transition rate is `k_XY = k0_XY·g0 + kA_XY·gA·A/(K½ + A)` where `g0`, `gA` are the
//! temperature factors of [`crate::etf`]. Two of the published KaiA-stimulated terms are negative
//! (`k_SU` and `k_DS`: KaiA slows dephosphorylation); a rate that would go negative (for example
//! `k_SU` at saturating KaiA, 0.11 − 0.133 < 0) is clamped at 0, because a negative first-order
//! rate has no chemical meaning and would let concentrations cross zero.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Index of each transition in [`RateConstants`] arrays, in the order of the paper's table.
pub mod transition {
    /// U → T
    pub const UT: usize = 0;
    /// T → D (ST)
    pub const TD: usize = 1;
    /// S → D (ST)
    pub const SD: usize = 2;
    /// U → S
    pub const US: usize = 3;
    /// T → U
    pub const TU: usize = 4;
    /// D (ST) → T
    pub const DT: usize = 5;
    /// D (ST) → S
    pub const DS: usize = 6;
    /// S → U
    pub const SU: usize = 7;
    /// Names in index order, for messages and tables.
    pub const NAMES: [&str; 8] = ["UT", "TD", "SD", "US", "TU", "DT", "DS", "SU"];
}

/// Basal (`k0`) and KaiA-stimulated (`kA`) rate constants in h⁻¹ at the ETF reference temperature.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateConstants {
    /// Basal rates, indexed by [`transition`].
    pub k0: [f64; 8],
    /// KaiA-stimulated rates at saturating KaiA, indexed by [`transition`]. May be negative.
    pub ka: [f64; 8],
}

impl Default for RateConstants {
    /// Rust et al. (2007), Table S1 (h⁻¹ at 30 °C).
    fn default() -> Self {
        Self {
            k0: [0.0, 0.0, 0.0, 0.0, 0.21, 0.0, 0.31, 0.11],
            ka: [
                0.479077, 0.212923, 0.505692, 0.0532308, 0.0798462, 0.1730, -0.319385, -0.133077,
            ],
        }
    }
}

/// Model parameters: totals, KaiA half-saturation and rate constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KaiParams {
    /// Total KaiC (µM, as monomer-equivalent phosphoform concentration). Default 3.4.
    pub c_total: f64,
    /// Total KaiA (µM). Default 1.3; at 2.0 the oscillation damps out.
    pub a_total: f64,
    /// Half-saturation constant of KaiA stimulation, K½ (µM). Default 0.43.
    pub k_half: f64,
    /// Rate constants at the reference temperature.
    pub rates: RateConstants,
}

impl Default for KaiParams {
    fn default() -> Self {
        Self {
            c_total: 3.4,
            a_total: 1.3,
            k_half: 0.43,
            rates: RateConstants::default(),
        }
    }
}

impl KaiParams {
    /// Checks that totals and constants are finite and physically meaningful.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("c_total", self.c_total),
            ("a_total", self.a_total),
            ("k_half", self.k_half),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(ModelError::InvalidParameter {
                    name: name.into(),
                    reason: format!("must be finite and > 0, got {v}"),
                });
            }
        }
        for i in 0..8 {
            let (k0, ka) = (self.rates.k0[i], self.rates.ka[i]);
            if !(k0.is_finite() && k0 >= 0.0 && ka.is_finite()) {
                return Err(ModelError::InvalidParameter {
                    name: format!("rates.{}", transition::NAMES[i]),
                    reason: format!(
                        "k0 must be finite and >= 0 and kA finite, got k0={k0} kA={ka}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Free KaiA (µM) for a given S-form concentration.
    #[inline]
    pub fn free_kaia(&self, s: f64) -> f64 {
        (self.a_total - 2.0 * s).max(0.0)
    }

    /// The rates `k_XY` (h⁻¹) for the given S concentration and temperature factors.
    #[inline]
    pub fn rates_at(&self, s: f64, g0: f64, ga: f64) -> [f64; 8] {
        let a = self.free_kaia(s);
        let stim = ga * a / (self.k_half + a);
        let mut k = [0.0; 8];
        for (i, ki) in k.iter_mut().enumerate() {
            *ki = self.rates.ka[i]
                .mul_add(stim, self.rates.k0[i] * g0)
                .max(0.0);
        }
        k
    }

    /// Time derivatives of `[T, D, S]` (µM/h).
    #[inline]
    pub fn derivatives(&self, y: &[f64; 3], g0: f64, ga: f64) -> [f64; 3] {
        use transition::*;
        let [t, d, s] = *y;
        let u = self.c_total - t - d - s;
        let k = self.rates_at(s, g0, ga);
        // Gain minus loss per species, with fused multiply-adds (one rounding each; the
        // batched model in `system` performs exactly these operations).
        [
            (-(k[TU] + k[TD])).mul_add(t, k[DT].mul_add(d, k[UT] * u)),
            (-(k[DT] + k[DS])).mul_add(d, k[SD].mul_add(s, k[TD] * t)),
            (-(k[SU] + k[SD])).mul_add(s, k[DS].mul_add(d, k[US] * u)),
        ]
    }
}

/// The dynamic state `[T, D, S]` in µM.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KaiState {
    /// T432-phosphorylated KaiC (the API's `C_T`).
    pub t: f64,
    /// Doubly phosphorylated KaiC (the API's `C_ST`).
    pub d: f64,
    /// S431-phosphorylated KaiC (the API's `C_S`).
    pub s: f64,
}

impl KaiState {
    /// As the integrator's vector.
    pub fn to_array(self) -> [f64; 3] {
        [self.t, self.d, self.s]
    }

    /// From the integrator's vector.
    pub fn from_array(y: [f64; 3]) -> Self {
        Self {
            t: y[0],
            d: y[1],
            s: y[2],
        }
    }

    /// Checks that the state lies in the physical simplex (T, D, S, U ≥ 0) within `tol` µM.
    pub fn validate(&self, p: &KaiParams, tol: f64) -> Result<(), ModelError> {
        let u = p.c_total - self.t - self.d - self.s;
        for (name, v) in [
            ("C_T", self.t),
            ("C_ST", self.d),
            ("C_S", self.s),
            ("C_U", u),
        ] {
            if !v.is_finite() || v < -tol {
                return Err(ModelError::InvalidState {
                    reason: format!("{name} = {v} µM is outside [0, C_tot = {}]", p.c_total),
                });
            }
        }
        Ok(())
    }

    /// Builds a state from the API's six variables (µM). Only C_T, C_ST and C_S are free; C_U,
    /// A_free and CABC_complex are implied by the totals and are checked against them.
    pub fn from_concentrations(c: &Concentrations, p: &KaiParams) -> Result<Self, ModelError> {
        let st = Self {
            t: c.c_t,
            d: c.c_st,
            s: c.c_s,
        };
        st.validate(p, 0.0)?;
        let implied = st.concentrations(p);
        let tol = 1e-6 * p.c_total.max(p.a_total);
        for (name, given, want) in [
            ("C_U", c.c_u, implied.c_u),
            ("A_free", c.a_free, implied.a_free),
            ("CABC_complex", c.cabc_complex, implied.cabc_complex),
        ] {
            if (given - want).abs() > tol {
                return Err(ModelError::InvalidState {
                    reason: format!(
                        "{name} = {given} µM is inconsistent with C_T, C_ST, C_S and the totals \
                         (implied {want:.6} µM)"
                    ),
                });
            }
        }
        Ok(st)
    }

    /// The API's six state variables in µM.
    pub fn concentrations(&self, p: &KaiParams) -> Concentrations {
        let a_free = p.free_kaia(self.s);
        Concentrations {
            c_u: p.c_total - self.t - self.d - self.s,
            c_s: self.s,
            c_t: self.t,
            c_st: self.d,
            a_free,
            cabc_complex: p.a_total - a_free,
        }
    }

    /// The six state variables as fractions of their totals (KaiC forms of C_tot, KaiA of A_tot).
    pub fn fractions(&self, p: &KaiParams) -> Concentrations {
        let c = self.concentrations(p);
        Concentrations {
            c_u: c.c_u / p.c_total,
            c_s: c.c_s / p.c_total,
            c_t: c.c_t / p.c_total,
            c_st: c.c_st / p.c_total,
            a_free: c.a_free / p.a_total,
            cabc_complex: c.cabc_complex / p.a_total,
        }
    }

    /// Total phosphorylated fraction (T + D + S)/C_tot: the quantity whose peak defines CT 12.
    #[inline]
    pub fn total_phosphorylation(&self, p: &KaiParams) -> f64 {
        (self.t + self.d + self.s) / p.c_total
    }

    /// Fraction phosphorylated at S431, (S + D)/C_tot: the raw KOA signal.
    #[inline]
    pub fn s431_fraction(&self, p: &KaiParams) -> f64 {
        (self.s + self.d) / p.c_total
    }
}

/// The API's six state variables (µM or fractions, as the producer says).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Concentrations {
    /// Unphosphorylated KaiC.
    #[serde(rename = "C_U")]
    pub c_u: f64,
    /// S431-phosphorylated KaiC.
    #[serde(rename = "C_S")]
    pub c_s: f64,
    /// T432-phosphorylated KaiC.
    #[serde(rename = "C_T")]
    pub c_t: f64,
    /// Doubly phosphorylated KaiC.
    #[serde(rename = "C_ST")]
    pub c_st: f64,
    /// Free KaiA.
    #[serde(rename = "A_free")]
    pub a_free: f64,
    /// KaiA held in KaiABC complexes, min(A_tot, 2S).
    #[serde(rename = "CABC_complex")]
    pub cabc_complex: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaic_is_conserved_by_the_right_hand_side() {
        // dU/dt = −(dT + dD + dS); conservation holds if the fluxes balance, which they must for
        // any state and temperature factors.
        let p = KaiParams::default();
        for y in [[0.1, 0.2, 0.3], [1.0, 0.5, 0.9], [0.0, 0.0, 0.0]] {
            let d = p.derivatives(&y, 1.3, 0.7);
            let u = p.c_total - y.iter().sum::<f64>();
            let k = p.rates_at(y[2], 1.3, 0.7);
            use transition::*;
            let du = k[TU] * y[0] + k[SU] * y[2] - (k[UT] + k[US]) * u;
            assert!((d.iter().sum::<f64>() + du).abs() < 1e-12);
        }
    }

    #[test]
    fn negative_stimulated_rates_are_clamped() {
        let p = KaiParams::default();
        // S = 0 → A = A_tot: k_SU = 0.11 − 0.133077·1.3/1.73 < 0 before clamping.
        // At 30 °C and S = 0 the published values stay positive (0.11 − 0.133·0.75 > 0) ...
        let k = p.rates_at(0.0, 1.0, 1.0);
        assert!(k[transition::SU] > 0.0 && k[transition::DS] > 0.0);
        // ... but a hot node (KaiA-stimulated terms ×10) would drive them negative: clamped.
        let k_sat = p.rates_at(0.0, 1.0, 10.0);
        assert_eq!(k_sat[transition::SU], 0.0);
        assert_eq!(k_sat[transition::DS], 0.0);
    }

    #[test]
    fn free_kaia_and_complex_partition_kaia() {
        let p = KaiParams::default();
        for s in [0.0, 0.3, 0.65, 1.0] {
            let c = KaiState { t: 0.1, d: 0.1, s }.concentrations(&p);
            assert!((c.a_free + c.cabc_complex - p.a_total).abs() < 1e-15);
            assert!((c.cabc_complex - (2.0 * s).min(p.a_total)).abs() < 1e-15);
        }
    }

    #[test]
    fn concentrations_round_trip_and_inconsistent_ones_are_rejected() {
        let p = KaiParams::default();
        let st = KaiState {
            t: 0.5,
            d: 0.8,
            s: 0.4,
        };
        let c = st.concentrations(&p);
        assert_eq!(KaiState::from_concentrations(&c, &p).unwrap(), st);
        let mut bad = c;
        bad.a_free = 1.0;
        assert!(KaiState::from_concentrations(&bad, &p).is_err());
    }
}
