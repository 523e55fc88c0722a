//! The KaiABC model driven by a temperature input, as an ODE system for the integrator.

use crate::error::OdeError;
use crate::etf::{Etf, FactorCache};
use crate::integrator::OdeSystem;
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
    #[inline]
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
        let u = self.params.c_total - y[0] - y[1] - y[2];
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
}
