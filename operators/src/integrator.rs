//! Adaptive Dormand–Prince 5(4) integration with exact stops, step statistics and typed failure.
//!
//! Hand-written rather than taken from a crate because the clock needs three things together:
//! stops exactly at reading times (temperature has a kink there), per-step callbacks with the
//! endpoint derivatives (for peak detection by Hermite interpolation) and a step-size memory that
//! survives from one reading to the next. The benchmark `integrators` compares it with the
//! `ode_solvers` crate's `Dopri5` on the same problem.
//!
//! Coefficients and the PI step-size controller follow Hairer, Nørsett & Wanner, *Solving
//! Ordinary Differential Equations I* (2nd ed.), §II.4–5 and their DOPRI5 code.

use serde::{Deserialize, Serialize};

use crate::error::OdeError;

/// A system `dy/dt = f(t, y)` of `N` equations.
pub trait OdeSystem<const N: usize> {
    /// The right-hand side.
    fn rhs(&mut self, t: f64, y: &[f64; N]) -> [f64; N];

    /// Checks an accepted state; the default accepts anything finite.
    fn check(&self, _t: f64, _y: &[f64; N]) -> Result<(), OdeError> {
        Ok(())
    }

    /// An affine switching function `g(y) = w·y + c` across whose zero the right-hand side has a
    /// kink (e.g. free KaiA reaching zero). A step rejected while `g` changes sign is retried
    /// ending at the crossing instead of being shrunk blindly, which removes most rejections
    /// there. `None` (the default) means the right-hand side is smooth.
    fn switching(&self) -> Option<([f64; N], f64)> {
        None
    }
}

/// Tolerances and step bounds (time in hours).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntegratorConfig {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance (µM for the clock).
    pub atol: f64,
    /// Smallest step allowed before giving up with `ODE_INSTABILITY` (h).
    pub min_step: f64,
    /// Largest step (h); bounds how far apart the peak detector's samples can be.
    pub max_step: f64,
}

impl Default for IntegratorConfig {
    fn default() -> Self {
        Self {
            rtol: 1e-6,
            atol: 1e-9,
            min_step: 1e-10,
            max_step: 0.5,
        }
    }
}

impl IntegratorConfig {
    /// Checks that tolerances are positive and the step bounds ordered.
    pub fn validate(&self) -> Result<(), OdeError> {
        let ok = self.rtol.is_finite()
            && self.rtol > 0.0
            && self.rtol < 1.0
            && self.atol.is_finite()
            && self.atol > 0.0
            && self.min_step.is_finite()
            && self.min_step > 0.0
            && self.max_step > self.min_step;
        if ok {
            Ok(())
        } else {
            Err(OdeError::InvalidConfig(format!(
                "need 0 < rtol < 1, atol > 0, 0 < min_step < max_step; got {self:?}"
            )))
        }
    }
}

/// Counters for the `/simulation/config` performance metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStats {
    /// Accepted steps.
    pub accepted: u64,
    /// Rejected steps (error too large).
    pub rejected: u64,
    /// Right-hand-side evaluations.
    pub rhs_evals: u64,
}

impl std::ops::AddAssign for StepStats {
    fn add_assign(&mut self, o: Self) {
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.rhs_evals += o.rhs_evals;
    }
}

/// One accepted step, with the derivative at both ends so observers can interpolate.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a, const N: usize> {
    /// Start time.
    pub t0: f64,
    /// End time.
    pub t1: f64,
    /// State at `t0`.
    pub y0: &'a [f64; N],
    /// State at `t1`.
    pub y1: &'a [f64; N],
    /// Derivative at `t0`.
    pub f0: &'a [f64; N],
    /// Derivative at `t1`.
    pub f1: &'a [f64; N],
}

impl<const N: usize> Step<'_, N> {
    /// Cubic Hermite interpolation of a linear functional `w·y` at `θ ∈ [0, 1]`; fourth-order
    /// accurate, enough to place extrema to well under a minute.
    pub fn hermite(&self, w: &[f64; N], theta: f64) -> f64 {
        let (p0, p1, d0, d1) = self.projected(w);
        hermite_value(p0, p1, d0, d1, theta)
    }

    /// `(w·y0, w·y1, h·w·f0, h·w·f1)`.
    pub fn projected(&self, w: &[f64; N]) -> (f64, f64, f64, f64) {
        let h = self.t1 - self.t0;
        let dot = |a: &[f64; N]| a.iter().zip(w).map(|(x, c)| x * c).sum::<f64>();
        (
            dot(self.y0),
            dot(self.y1),
            h * dot(self.f0),
            h * dot(self.f1),
        )
    }
}

/// Cubic Hermite value at `θ` from endpoint values and scaled derivatives (`h·f`).
#[inline]
pub fn hermite_value(p0: f64, p1: f64, d0: f64, d1: f64, th: f64) -> f64 {
    let th2 = th * th;
    let th3 = th2 * th;
    (2.0 * th3 - 3.0 * th2 + 1.0) * p0
        + (th3 - 2.0 * th2 + th) * d0
        + (-2.0 * th3 + 3.0 * th2) * p1
        + (th3 - th2) * d1
}

/// Roots in (0, 1] of the derivative of the cubic Hermite interpolant: where the interpolated
/// signal has a local extremum inside the step.
pub fn hermite_extrema(p0: f64, p1: f64, d0: f64, d1: f64) -> impl Iterator<Item = f64> {
    // P'(θ) = a θ² + b θ + c with
    let a = 6.0 * p0 + 3.0 * d0 - 6.0 * p1 + 3.0 * d1;
    let b = -6.0 * p0 - 4.0 * d0 + 6.0 * p1 - 2.0 * d1;
    let c = d0;
    let mut roots = [f64::NAN; 2];
    if a.abs() < 1e-300 || (a.abs() * 1e12 < b.abs()) {
        if b != 0.0 {
            roots[0] = -c / b;
        }
    } else {
        let disc = b * b - 4.0 * a * c;
        if disc >= 0.0 {
            let q = -0.5 * (b + b.signum() * disc.sqrt());
            roots[0] = q / a;
            if q != 0.0 {
                roots[1] = c / q;
            }
        }
    }
    if roots[1] < roots[0] {
        roots.swap(0, 1);
    }
    roots.into_iter().filter(|r| *r > 0.0 && *r <= 1.0)
}

// Dormand–Prince 5(4) tableau.
const C2: f64 = 1.0 / 5.0;
const C3: f64 = 3.0 / 10.0;
const C4: f64 = 4.0 / 5.0;
const C5: f64 = 8.0 / 9.0;
const A21: f64 = 1.0 / 5.0;
const A31: f64 = 3.0 / 40.0;
const A32: f64 = 9.0 / 40.0;
const A41: f64 = 44.0 / 45.0;
const A42: f64 = -56.0 / 15.0;
const A43: f64 = 32.0 / 9.0;
const A51: f64 = 19372.0 / 6561.0;
const A52: f64 = -25360.0 / 2187.0;
const A53: f64 = 64448.0 / 6561.0;
const A54: f64 = -212.0 / 729.0;
const A61: f64 = 9017.0 / 3168.0;
const A62: f64 = -355.0 / 33.0;
const A63: f64 = 46732.0 / 5247.0;
const A64: f64 = 49.0 / 176.0;
const A65: f64 = -5103.0 / 18656.0;
const A71: f64 = 35.0 / 384.0;
const A73: f64 = 500.0 / 1113.0;
const A74: f64 = 125.0 / 192.0;
const A75: f64 = -2187.0 / 6784.0;
const A76: f64 = 11.0 / 84.0;
const E1: f64 = 71.0 / 57600.0;
const E3: f64 = -71.0 / 16695.0;
const E4: f64 = 71.0 / 1920.0;
const E5: f64 = -17253.0 / 339200.0;
const E6: f64 = 22.0 / 525.0;
const E7: f64 = -1.0 / 40.0;

/// Where in a step (θ ∈ (0, 1)) the affine function `w·y + c` crosses zero, on the cubic Hermite
/// interpolant of the step; `None` if it does not change sign.
fn crossing<const N: usize>(
    w: &[f64; N],
    c: f64,
    y0: &[f64; N],
    y1: &[f64; N],
    f0: &[f64; N],
    f1: &[f64; N],
    h: f64,
) -> Option<f64> {
    let dot = |a: &[f64; N]| a.iter().zip(w).map(|(x, k)| x * k).sum::<f64>();
    let (g0, g1) = (dot(y0) + c, dot(y1) + c);
    if !(g0.is_finite() && g1.is_finite()) || g0 == 0.0 || g0.signum() == g1.signum() {
        return None;
    }
    let (d0, d1) = (h * dot(f0), h * dot(f1));
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        let g = hermite_value(g0, g1, d0, d1, mid);
        if g.signum() == g0.signum() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Natural log for the step-size controller, where 1e-6 relative accuracy is plenty: a few
/// multiply-adds instead of a libm call, which otherwise costs as much as a right-hand side per
/// step. Pure arithmetic, so results do not depend on the platform's libm.
#[inline]
fn ctrl_ln(x: f64) -> f64 {
    if x <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    if exp == -1023 || !x.is_finite() {
        return x.ln(); // subnormal or infinite: not worth a fast path
    }
    // ln(x) = exponent·ln 2 + ln(mantissa), mantissa in [1, 2): atanh series in z = (m−1)/(m+1).
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let ln_m = 2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 / 9.0))));
    ln_m + exp as f64 * std::f64::consts::LN_2
}

/// PI controller constants (Hairer's DOPRI5 defaults).
const SAFETY: f64 = 0.9;
const BETA: f64 = 0.04;
const EXPO1: f64 = 0.2 - BETA * 0.75;
const FAC_MIN_DIV: f64 = 0.1; // h grows at most 10× per step
const FAC_MAX_DIV: f64 = 5.0; // and shrinks at most 5×

/// The integrator's state: current time and state, the step size it would try next, counters.
///
/// It is a plain value (no heap) so a node's clock can be copied, checkpointed and restored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dopri5<const N: usize> {
    t: f64,
    #[serde(with = "serde_array")]
    y: [f64; N],
    h_next: Option<f64>,
    /// ln of the previous accepted step's error norm (PI controller memory).
    ln_err_old: f64,
    cfg: IntegratorConfig,
    stats: StepStats,
}

/// serde for `[f64; N]` with const `N` (serde's derive only covers arrays up to 32 by size).
mod serde_array {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer, const N: usize>(a: &[f64; N], s: S) -> Result<S::Ok, S::Error> {
        a.as_slice().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[f64; N], D::Error> {
        let v = Vec::<f64>::deserialize(d)?;
        v.try_into()
            .map_err(|v: Vec<f64>| serde::de::Error::invalid_length(v.len(), &"N numbers"))
    }
}

impl<const N: usize> Dopri5<N> {
    /// Starts at `(t, y)`.
    pub fn new(t: f64, y: [f64; N], cfg: IntegratorConfig) -> Result<Self, OdeError> {
        cfg.validate()?;
        if !t.is_finite() || y.iter().any(|v| !v.is_finite()) {
            return Err(OdeError::NonFinite { t });
        }
        Ok(Self {
            t,
            y,
            h_next: None,
            ln_err_old: (1e-4f64).ln(),
            cfg,
            stats: StepStats::default(),
        })
    }

    /// Current time.
    pub fn t(&self) -> f64 {
        self.t
    }

    /// Current state.
    pub fn y(&self) -> &[f64; N] {
        &self.y
    }

    /// Replaces the state (a reset), keeping time and counters; forgets the step-size memory.
    pub fn set_state(&mut self, y: [f64; N]) {
        self.y = y;
        self.h_next = None;
    }

    /// Moves the clock's time without integrating (e.g. after a pause).
    pub fn set_time(&mut self, t: f64) {
        self.t = t;
    }

    /// Configuration.
    pub fn config(&self) -> &IntegratorConfig {
        &self.cfg
    }

    /// Changes tolerances or bounds; takes effect at the next step.
    pub fn set_config(&mut self, cfg: IntegratorConfig) -> Result<(), OdeError> {
        cfg.validate()?;
        self.cfg = cfg;
        self.h_next = self.h_next.map(|h| h.min(cfg.max_step));
        Ok(())
    }

    /// Counters since creation.
    pub fn stats(&self) -> StepStats {
        self.stats
    }

    /// Integrates to exactly `t_end`, calling `observer` after each accepted step.
    ///
    /// The derivative at the start is recomputed on every call because the caller may have
    /// changed the input (a new temperature segment, a step in temperature) since the last one.
    /// On error the state stays at the last accepted step.
    pub fn advance_to<S, O>(
        &mut self,
        sys: &mut S,
        t_end: f64,
        mut observer: O,
    ) -> Result<(), OdeError>
    where
        S: OdeSystem<N>,
        O: FnMut(&Step<'_, N>),
    {
        if !t_end.is_finite() {
            return Err(OdeError::NonFinite { t: t_end });
        }
        if t_end < self.t {
            return Err(OdeError::Backwards {
                from: self.t,
                to: t_end,
            });
        }
        if t_end == self.t {
            return Ok(());
        }
        let mut f0 = sys.rhs(self.t, &self.y);
        self.stats.rhs_evals += 1;
        let mut h = match self.h_next {
            Some(h) => h,
            None => self.initial_step(sys, &f0),
        };
        let switching = sys.switching();
        let mut rejected_last = false;
        loop {
            h = h.min(self.cfg.max_step);
            let remaining = t_end - self.t;
            // Stretch the last step slightly rather than leave a sliver of a step behind.
            let mut last = h >= remaining * (1.0 - 1e-9);
            let mut h_try = if last { remaining } else { h };
            let (mut y1, mut f1, mut err) = self.try_step(sys, &f0, h_try);
            // A step across the kink has an unreliable error estimate either way: end it at
            // the crossing instead (accepted or not), so no step straddles the kink.
            if !rejected_last || err > 1.0 {
                if let Some((w, c)) = switching {
                    if let Some(th) = crossing(&w, c, &self.y, &y1, &f0, &f1, h_try) {
                        // End just past the kink: what is left of it inside the step is tiny.
                        let h_kink = (th + 1e-3).min(1.0) * h_try;
                        if h_kink > 10.0 * self.cfg.min_step && h_kink < h_try {
                            if err > 1.0 {
                                self.stats.rejected += 1;
                            }
                            h_try = h_kink;
                            last = false;
                            (y1, f1, err) = self.try_step(sys, &f0, h_try);
                        }
                    }
                }
            }
            if err <= 1.0 && y1.iter().all(|v| v.is_finite()) {
                let t1 = if last { t_end } else { self.t + h_try };
                sys.check(t1, &y1)?;
                self.stats.accepted += 1;
                observer(&Step {
                    t0: self.t,
                    t1,
                    y0: &self.y,
                    y1: &y1,
                    f0: &f0,
                    f1: &f1,
                });
                // err^EXPO1 / err_old^BETA / SAFETY with a single exp.
                let ln_err = ctrl_ln(err);
                let fac = ((EXPO1 * ln_err - BETA * self.ln_err_old).exp() / SAFETY)
                    .clamp(FAC_MIN_DIV, FAC_MAX_DIV);
                let mut h_new = h_try / fac;
                if rejected_last {
                    // Hairer's rule: no growth right after a rejection.
                    h_new = h_new.min(h_try);
                }
                rejected_last = false;
                self.ln_err_old = ln_err.max(-9.210_340_371_976_184); // ln 1e-4
                self.t = t1;
                self.y = y1;
                f0 = f1;
                if last {
                    // A step cut short to land on t_end says nothing about the step size the
                    // dynamics allow: remember the larger of the two.
                    self.h_next = Some(h_new.max(h).min(self.cfg.max_step));
                    return Ok(());
                }
                h = h_new;
            } else {
                self.stats.rejected += 1;
                rejected_last = true;
                let shrink = if err.is_finite() {
                    ((EXPO1 * ctrl_ln(err)).exp() / SAFETY).min(FAC_MAX_DIV)
                } else {
                    FAC_MAX_DIV
                };
                h = h_try / shrink;
                if h < self.cfg.min_step {
                    return Err(if y1.iter().all(|v| v.is_finite()) {
                        OdeError::StepTooSmall {
                            t: self.t,
                            h,
                            min: self.cfg.min_step,
                        }
                    } else {
                        OdeError::NonFinite { t: self.t }
                    });
                }
            }
        }
    }

    /// One Dormand–Prince step of size `h` from the current state: the 5th-order solution, its
    /// derivative (FSAL) and the scaled error norm.
    #[inline]
    fn try_step<S: OdeSystem<N>>(
        &mut self,
        sys: &mut S,
        k1: &[f64; N],
        h: f64,
    ) -> ([f64; N], [f64; N], f64) {
        let t = self.t;
        let y = self.y;
        let mut s = [0.0; N];
        for i in 0..N {
            s[i] = y[i] + h * (A21 * k1[i]);
        }
        let k2 = sys.rhs(t + C2 * h, &s);
        for i in 0..N {
            s[i] = y[i] + h * (A31 * k1[i] + A32 * k2[i]);
        }
        let k3 = sys.rhs(t + C3 * h, &s);
        for i in 0..N {
            s[i] = y[i] + h * (A41 * k1[i] + A42 * k2[i] + A43 * k3[i]);
        }
        let k4 = sys.rhs(t + C4 * h, &s);
        for i in 0..N {
            s[i] = y[i] + h * (A51 * k1[i] + A52 * k2[i] + A53 * k3[i] + A54 * k4[i]);
        }
        let k5 = sys.rhs(t + C5 * h, &s);
        for i in 0..N {
            s[i] = y[i] + h * (A61 * k1[i] + A62 * k2[i] + A63 * k3[i] + A64 * k4[i] + A65 * k5[i]);
        }
        let k6 = sys.rhs(t + h, &s);
        let mut y1 = [0.0; N];
        for i in 0..N {
            y1[i] =
                y[i] + h * (A71 * k1[i] + A73 * k3[i] + A74 * k4[i] + A75 * k5[i] + A76 * k6[i]);
        }
        let k7 = sys.rhs(t + h, &y1);
        self.stats.rhs_evals += 6;
        let mut acc = 0.0;
        for i in 0..N {
            let e =
                h * (E1 * k1[i] + E3 * k3[i] + E4 * k4[i] + E5 * k5[i] + E6 * k6[i] + E7 * k7[i]);
            let sc = self.cfg.atol + self.cfg.rtol * y[i].abs().max(y1[i].abs());
            acc += (e / sc) * (e / sc);
        }
        (y1, k7, (acc / N as f64).sqrt())
    }

    /// Hairer's starting step heuristic (HNW I, §II.4).
    fn initial_step<S: OdeSystem<N>>(&mut self, sys: &mut S, f0: &[f64; N]) -> f64 {
        let sc: [f64; N] = std::array::from_fn(|i| self.cfg.atol + self.cfg.rtol * self.y[i].abs());
        let norm = |v: &dyn Fn(usize) -> f64| {
            (0..N).map(|i| (v(i) / sc[i]).powi(2)).sum::<f64>().sqrt() / (N as f64).sqrt()
        };
        let d0 = norm(&|i| self.y[i]);
        let d1 = norm(&|i| f0[i]);
        let mut h0 = if d0 < 1e-10 || d1 < 1e-10 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        h0 = h0.min(self.cfg.max_step);
        let y1: [f64; N] = std::array::from_fn(|i| self.y[i] + h0 * f0[i]);
        let f1 = sys.rhs(self.t + h0, &y1);
        self.stats.rhs_evals += 1;
        let d2 = norm(&|i| f1[i] - f0[i]) / h0;
        let dm = d1.max(d2);
        let h1 = if dm <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / dm).powf(0.2)
        };
        (100.0 * h0)
            .min(h1)
            .min(self.cfg.max_step)
            .max(self.cfg.min_step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Decay(f64);
    impl OdeSystem<1> for Decay {
        fn rhs(&mut self, _t: f64, y: &[f64; 1]) -> [f64; 1] {
            [-self.0 * y[0]]
        }
    }

    struct Oscillator;
    impl OdeSystem<2> for Oscillator {
        fn rhs(&mut self, _t: f64, y: &[f64; 2]) -> [f64; 2] {
            [y[1], -y[0]]
        }
    }

    #[test]
    fn exponential_decay_matches_closed_form_at_requested_stops() {
        let cfg = IntegratorConfig {
            rtol: 1e-10,
            atol: 1e-12,
            ..Default::default()
        };
        let mut ig = Dopri5::new(0.0, [1.0], cfg).unwrap();
        for stop in [0.3, 1.0, 1.7, 5.0] {
            ig.advance_to(&mut Decay(0.8), stop, |_| {}).unwrap();
            assert_eq!(ig.t(), stop, "lands exactly on the stop");
            assert!((ig.y()[0] - (-0.8 * stop).exp()).abs() < 1e-9);
        }
        let s = ig.stats();
        assert!(s.accepted > 0 && s.rhs_evals >= 6 * s.accepted);
    }

    #[test]
    fn error_scales_with_tolerance_like_a_fifth_order_method() {
        // Harmonic oscillator over 10 periods: global error should drop when rtol drops.
        let end = 20.0 * std::f64::consts::PI;
        let err = |rtol: f64| {
            let cfg = IntegratorConfig {
                rtol,
                atol: rtol * 1e-3,
                max_step: 10.0,
                ..Default::default()
            };
            let mut ig = Dopri5::new(0.0, [1.0, 0.0], cfg).unwrap();
            ig.advance_to(&mut Oscillator, end, |_| {}).unwrap();
            ((ig.y()[0] - 1.0).powi(2) + ig.y()[1].powi(2)).sqrt()
        };
        let (e6, e9) = (err(1e-6), err(1e-9));
        assert!(e6 < 1e-4 && e9 < 1e-7 && e9 < e6 / 100.0, "{e6} {e9}");
    }

    #[test]
    fn backwards_and_non_finite_requests_are_typed_errors() {
        let mut ig = Dopri5::new(1.0, [1.0], IntegratorConfig::default()).unwrap();
        assert!(matches!(
            ig.advance_to(&mut Decay(1.0), 0.5, |_| {}),
            Err(OdeError::Backwards { .. })
        ));
        assert!(matches!(
            ig.advance_to(&mut Decay(1.0), f64::NAN, |_| {}),
            Err(OdeError::NonFinite { .. })
        ));
        assert!(Dopri5::new(0.0, [f64::NAN], IntegratorConfig::default()).is_err());
    }

    #[test]
    fn blow_up_is_ode_instability_not_a_panic() {
        struct Blow;
        impl OdeSystem<1> for Blow {
            fn rhs(&mut self, _t: f64, y: &[f64; 1]) -> [f64; 1] {
                [y[0] * y[0]]
            }
        }
        // y' = y², y(0) = 1 explodes at t = 1.
        let mut ig = Dopri5::new(0.0, [1.0], IntegratorConfig::default()).unwrap();
        let e = ig.advance_to(&mut Blow, 2.0, |_| {}).unwrap_err();
        assert_eq!(e.code(), "ODE_INSTABILITY");
        // Stops at the singularity (within the numerical solution's lag), state finite.
        assert!(
            ig.t() < 1.001 && ig.y()[0].is_finite(),
            "{e:?} at t={} y={:?}",
            ig.t(),
            ig.y()
        );
    }

    #[test]
    fn controller_log_is_accurate_enough() {
        for &x in &[1e-12, 3e-5, 0.01, 0.37, 1.0, 1.9, 42.0, 1e8, 1e300] {
            let (a, b) = (ctrl_ln(x), x.ln());
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "ln {x}: {a} vs {b}"
            );
        }
        assert_eq!(ctrl_ln(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn hermite_extremum_of_a_parabola_is_exact() {
        // p(θ) = −(θ − 0.3)²: p0 = −0.09, p1 = −0.49, p'(0) = 0.6, p'(1) = −1.4.
        let roots: Vec<f64> = hermite_extrema(-0.09, -0.49, 0.6, -1.4).collect();
        assert_eq!(roots.len(), 1);
        assert!((roots[0] - 0.3).abs() < 1e-14);
    }
}
