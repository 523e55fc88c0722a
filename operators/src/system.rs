//! The KaiABC model driven by a temperature input, as an ODE system for the integrator.

use crate::error::OdeError;
use crate::etf::{Etf, FactorCache};
use crate::integrator::{LaneSystem, OdeSystem};
use crate::model::KaiParams;
use crate::temperature::TemperatureSource;

/// How far below zero (µM) a concentration may dip from truncation error before the state is
/// declared unstable. Far above what a converged step produces, far below any real signal.
pub const NEGATIVE_TOLERANCE_UM: f64 = 1e-6;

/// `d[T, D, S]/dt` at the temperature `temperature(t)`.
pub struct KaiSystem<'a, S> {
    params: &'a KaiParams,
    etf: &'a Etf,
    temperature: S,
    cache: FactorCache,
}

impl<'a, S: TemperatureSource> KaiSystem<'a, S> {
    /// Couples parameters, ETF and a temperature input.
    pub fn new(params: &'a KaiParams, etf: &'a Etf, temperature: S) -> Self {
        Self {
            params,
            etf,
            temperature,
            cache: FactorCache::new(),
        }
    }

    /// The temperature input, e.g. to read where a profile's cursor is.
    pub fn temperature(&mut self) -> &mut S {
        &mut self.temperature
    }
}

impl<S: TemperatureSource> OdeSystem<3> for KaiSystem<'_, S> {
    #[inline(always)]
    fn rhs(&mut self, t: f64, y: &[f64; 3]) -> [f64; 3] {
        let temp = self.temperature.kelvin_at(t);
        let (g0, ga) = self.cache.get(self.etf, temp);
        self.params.derivatives(y, g0, ga)
    }

    /// Free KaiA `A_tot − 2S` reaches zero twice a cycle; the rates have a kink there.
    fn switching(&self) -> Option<([f64; 3], f64)> {
        Some(([0.0, 0.0, -2.0], self.params.a_total))
    }

    fn check(&self, t: f64, y: &[f64; 3]) -> Result<(), OdeError> {
        check_state(self.params.c_total, t, y)
    }
}

/// The KaiABC model for `L` clocks side by side (one lane per node), component-major, with
/// each lane's parameters, ETF and temperature input. The arithmetic of a lane is exactly that
/// of [`KaiParams::derivatives`], so a clock advanced in a batch matches one advanced alone bit
/// for bit.
pub struct KaiLanes<T, const L: usize> {
    k0: [[f64; L]; 8],
    ka: [[f64; L]; 8],
    c_total: [f64; L],
    a_total: [f64; L],
    k_half: [f64; L],
    etf: [Etf; L],
    temperature: [T; L],
    cache: [FactorCache; L],
    /// Rate factors of every lane, when all lanes run at constant temperatures.
    fixed: Option<([f64; L], [f64; L])>,
}

impl<T: TemperatureSource, const L: usize> KaiLanes<T, L> {
    /// Lays out the lanes' constants component-major.
    pub fn new(params: [&KaiParams; L], etf: [&Etf; L], temperature: [T; L]) -> Self {
        let mut k0 = [[0.0; L]; 8];
        let mut ka = [[0.0; L]; 8];
        for l in 0..L {
            for i in 0..8 {
                k0[i][l] = params[l].rates.k0[i];
                ka[i][l] = params[l].rates.ka[i];
            }
        }
        let mut fixed = Some(([0.0; L], [0.0; L]));
        for l in 0..L {
            match (temperature[l].constant(), fixed.as_mut()) {
                (Some(k), Some((g0, ga))) => (g0[l], ga[l]) = etf[l].factors(k),
                _ => fixed = None,
            }
        }
        Self {
            k0,
            ka,
            c_total: params.map(|p| p.c_total),
            a_total: params.map(|p| p.a_total),
            k_half: params.map(|p| p.k_half),
            etf: etf.map(|e| *e),
            temperature,
            cache: [FactorCache::new(); L],
            fixed,
        }
    }
}

impl<T: TemperatureSource, const L: usize> LaneSystem<3, L> for KaiLanes<T, L> {
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn rhs_lanes(&mut self, t: &[f64; L], y: &[[f64; L]; 3]) -> [[f64; L]; 3] {
        use crate::model::transition::*;
        let (g0, ga) = match self.fixed {
            Some(f) => f,
            None => {
                let mut g0 = [0.0; L];
                let mut ga = [0.0; L];
                for l in 0..L {
                    let k = self.temperature[l].kelvin_at(t[l]);
                    (g0[l], ga[l]) = self.cache[l].get(&self.etf[l], k);
                }
                (g0, ga)
            }
        };
        let (k0, ka) = (&self.k0, &self.ka);
        let mut out = [[0.0; L]; 3];
        for l in 0..L {
            let (ct, cd, cs) = (y[0][l], y[1][l], y[2][l]);
            let u = self.c_total[l] - ct - cd - cs;
            let a = (self.a_total[l] - 2.0 * cs).max(0.0);
            let stim = ga[l] * a / (self.k_half[l] + a);
            let k = |i: usize| ka[i][l].mul_add(stim, k0[i][l] * g0[l]).max(0.0);
            out[0][l] = (-(k(TU) + k(TD))).mul_add(ct, k(DT).mul_add(cd, k(UT) * u));
            out[1][l] = (-(k(DT) + k(DS))).mul_add(cd, k(SD).mul_add(cs, k(TD) * ct));
            out[2][l] = (-(k(SU) + k(SD))).mul_add(cs, k(DS).mul_add(cd, k(US) * u));
        }
        out
    }

    fn check_lane(&self, lane: usize, t: f64, y: &[f64; 3]) -> Result<(), OdeError> {
        check_state(self.c_total[lane], t, y)
    }

    fn switching_lane(&self, lane: usize) -> Option<([f64; 3], f64)> {
        Some(([0.0, 0.0, -2.0], self.a_total[lane]))
    }

    #[inline(always)]
    fn switching_values(&self, y: &[[f64; L]; 3]) -> Option<[f64; L]> {
        // Free KaiA before clamping, A_tot − 2S: equal to the weighted sum for finite states.
        let mut g = [0.0; L];
        for l in 0..L {
            g[l] = self.a_total[l] - 2.0 * y[2][l];
        }
        Some(g)
    }

    fn switching_lanes(&self) -> Option<([[f64; L]; 3], [f64; L])> {
        Some(([[0.0; L], [0.0; L], [-2.0; L]], self.a_total))
    }

    #[inline(always)]
    fn check_lanes(&self, y: &[[f64; L]; 3]) -> [bool; L] {
        // The fast path of `check_state`, for all lanes at once.
        let mut ok = [false; L];
        for l in 0..L {
            ok[l] = clearly_physical(self.c_total[l], &[y[0][l], y[1][l], y[2][l]]);
        }
        ok
    }
}

#[inline]
fn check_state(c_total: f64, t: f64, y: &[f64; 3]) -> Result<(), OdeError> {
    if clearly_physical(c_total, y) {
        return Ok(());
    }
    check_state_slow(c_total, t, y)
}

/// The fast path of the state check: every concentration (U included) finite and above the
/// negative tolerance. `false` sends the state to the slow path for the verdict.
#[inline(always)]
fn clearly_physical(c_total: f64, y: &[f64; 3]) -> bool {
    let u = c_total - y[0] - y[1] - y[2];
    // `min` ignores a NaN, so finiteness is checked on the sum.
    let lowest = y[0].min(y[1]).min(y[2]).min(u);
    lowest >= -NEGATIVE_TOLERANCE_UM && (y[0] + y[1] + y[2] + u).is_finite()
}

#[cold]
fn check_state_slow(c_total: f64, t: f64, y: &[f64; 3]) -> Result<(), OdeError> {
    let u = c_total - y[0] - y[1] - y[2];
    for (what, value) in [("C_T", y[0]), ("C_ST", y[1]), ("C_S", y[2]), ("C_U", u)] {
        if !value.is_finite() {
            return Err(OdeError::NonFinite { t });
        }
        if value < -NEGATIVE_TOLERANCE_UM {
            return Err(OdeError::Negative { t, what, value });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temperature::Constant;

    #[test]
    fn lanes_compute_exactly_the_scalar_model() {
        // Bit-identity is what makes batch and single-node clocks agree exactly.
        let p = KaiParams::default();
        let p2 = KaiParams { a_total: 1.1, ..p };
        let etf = Etf::default();
        let temps = [290.0, 303.15, 310.0, 301.3];
        let mut lanes = KaiLanes::new([&p, &p2, &p, &p2], [&etf; 4], temps.map(Constant));
        let ys = [
            [0.3, 0.5, 0.9],
            [1.0, 0.2, 0.7],
            [0.0, 0.0, 0.0],
            [0.9, 1.1, 0.2],
        ];
        let mut soa = [[0.0; 4]; 3];
        for l in 0..4 {
            for i in 0..3 {
                soa[i][l] = ys[l][i];
            }
        }
        let out = lanes.rhs_lanes(&[0.0; 4], &soa);
        for l in 0..4 {
            let params = if l % 2 == 0 { &p } else { &p2 };
            let (g0, ga) = etf.factors(temps[l]);
            let want = params.derivatives(&ys[l], g0, ga);
            for i in 0..3 {
                assert_eq!(
                    out[i][l].to_bits(),
                    want[i].to_bits(),
                    "lane {l} component {i}"
                );
            }
        }
    }
}
