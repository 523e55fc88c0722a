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

// Index loops over components and lanes mirror the tableau and keep lane loops vectorisable.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use crate::error::OdeError;

mod control;
use control::{control_lanes, shrink_factor};

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

/// `L` independent systems of `N` equations evaluated together, component-major (`y[i][l]` is
/// component `i` of problem `l`), so the arithmetic of the lanes can share vector instructions
/// and overlap in the pipeline.
pub trait LaneSystem<const N: usize, const L: usize> {
    /// The right-hand sides of all lanes.
    fn rhs_lanes(&mut self, t: &[f64; L], y: &[[f64; L]; N]) -> [[f64; L]; N];

    /// Checks an accepted state of one lane; the default accepts anything finite.
    fn check_lane(&self, _lane: usize, _t: f64, _y: &[f64; N]) -> Result<(), OdeError> {
        Ok(())
    }

    /// The affine switching function of one lane (see [`OdeSystem::switching`]).
    fn switching_lane(&self, _lane: usize) -> Option<([f64; N], f64)> {
        None
    }

    /// All lanes' switching functions, component-major: weights `w[i][l]` and offsets `c[l]`.
    /// The default gathers [`LaneSystem::switching_lane`]; `None` if any lane has none.
    fn switching_lanes(&self) -> Option<([[f64; L]; N], [f64; L])> {
        let mut w = [[0.0; L]; N];
        let mut c = [0.0; L];
        for l in 0..L {
            let (wl, cl) = self.switching_lane(l)?;
            for i in 0..N {
                w[i][l] = wl[i];
            }
            c[l] = cl;
        }
        Some((w, c))
    }

    /// The switching functions' values `w·y + c` of all lanes, if the system can compute them
    /// more cheaply than the generic weighted sum (it must give the same values for finite
    /// states). Used only to decide which lanes need the exact crossing search.
    fn switching_values(&self, _y: &[[f64; L]; N]) -> Option<[f64; L]> {
        None
    }

    /// A quick check of all lanes' accepted states: `true` where the state certainly passes
    /// [`LaneSystem::check_lane`]. `false` only sends that lane through `check_lane` for the
    /// verdict, so an implementation may be conservative. The default asks `check_lane`.
    fn check_lanes(&self, y: &[[f64; L]; N]) -> [bool; L] {
        std::array::from_fn(|l| self.check_lane(l, 0.0, &lane(y, l)).is_ok())
    }
}

/// Any scalar system is a one-lane system.
pub struct OneLane<S>(pub S);

impl<S: OdeSystem<N>, const N: usize> LaneSystem<N, 1> for OneLane<S> {
    #[inline(always)]
    fn rhs_lanes(&mut self, t: &[f64; 1], y: &[[f64; 1]; N]) -> [[f64; 1]; N] {
        let mut v = [0.0; N];
        for i in 0..N {
            v[i] = y[i][0];
        }
        let d = self.0.rhs(t[0], &v);
        let mut out = [[0.0; 1]; N];
        for i in 0..N {
            out[i][0] = d[i];
        }
        out
    }

    fn check_lane(&self, _lane: usize, t: f64, y: &[f64; N]) -> Result<(), OdeError> {
        self.0.check(t, y)
    }

    fn switching_lane(&self, _lane: usize) -> Option<([f64; N], f64)> {
        self.0.switching()
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

/// Coefficients `(a, b, c)` of the cubic Hermite interpolant's derivative in `θ`,
/// `P'(θ) = a θ² + b θ + c`, from endpoint values and scaled derivatives (`h·f`).
#[inline]
pub fn hermite_slope(p0: f64, p1: f64, d0: f64, d1: f64) -> (f64, f64, f64) {
    (
        6.0 * p0 + 3.0 * d0 - 6.0 * p1 + 3.0 * d1,
        -6.0 * p0 - 4.0 * d0 + 6.0 * p1 - 2.0 * d1,
        d0,
    )
}

/// Roots in (0, 1] of the derivative of the cubic Hermite interpolant: where the interpolated
/// signal has a local extremum inside the step.
pub fn hermite_extrema(p0: f64, p1: f64, d0: f64, d1: f64) -> impl Iterator<Item = f64> {
    let (a, b, c) = hermite_slope(p0, p1, d0, d1);
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
#[inline]
fn crossing<const N: usize>(
    w: &[f64; N],
    c: f64,
    y0: &[f64; N],
    y1: &[f64; N],
    f0: &[f64; N],
    f1: &[f64; N],
    h: f64,
) -> Option<f64> {
    let dot = |a: &[f64; N]| {
        let mut acc = 0.0;
        for i in 0..N {
            acc += a[i] * w[i];
        }
        acc
    };
    let (g0, g1) = (dot(y0) + c, dot(y1) + c);
    if !(g0.is_finite() && g1.is_finite()) || g0 == 0.0 || g0.signum() == g1.signum() {
        return None;
    }
    crossing_root(g0, g1, h * dot(f0), h * dot(f1))
}

/// The sign change of the Hermite cubic through `(g0, d0)`, `(g1, d1)`: rare (twice a cycle),
/// so kept out of line.
#[cold]
#[inline(never)]
fn crossing_root(g0: f64, g1: f64, d0: f64, d1: f64) -> Option<f64> {
    // Newton on the cubic from the linear guess, kept inside a bracket that shrinks with every
    // evaluation (bisection when Newton leaves it). Newton converges quadratically, so once an
    // update is below 1e-4 the new iterate is within ~1e-8 of the root, far finer than the
    // 1e-3 margin the caller adds: usually two iterations, each on the critical path of the
    // whole batch.
    let (qa, qb, qc) = hermite_slope(g0, g1, d0, d1);
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    let mut th = (g0 / (g0 - g1)).clamp(0.0, 1.0);
    for _ in 0..30 {
        let g = hermite_value(g0, g1, d0, d1, th);
        if g == 0.0 {
            break;
        }
        if g.signum() == g0.signum() {
            lo = th;
        } else {
            hi = th;
        }
        let dg = (qa * th + qb) * th + qc;
        let newton = th - g / dg;
        let next = if newton.is_finite() && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        let done = (next - th).abs() < 1e-4 || hi - lo < 1e-9;
        th = next;
        if done {
            break;
        }
    }
    Some(th)
}

/// The step that carries a state just short of the kink just past it: a Newton step on the
/// switching function `g = w·y + c` with `dg/dt = w·f`, plus a 0.1 % margin.
#[cold]
fn newton_to_kink<const N: usize>(
    switching: Option<([f64; N], f64)>,
    y: &[f64; N],
    f: &[f64; N],
) -> Option<f64> {
    let (w, c) = switching?;
    let (mut g, mut dg) = (0.0, 0.0);
    for i in 0..N {
        g += y[i] * w[i];
        dg += f[i] * w[i];
    }
    let dt = -(g + c) / dg;
    (dt.is_finite() && dt > 0.0).then_some(dt * (1.0 + 1e-3))
}

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
        let [r] = advance_lanes([self], &mut OneLane(sys), [t_end], [&mut observer]);
        r
    }

    /// Validates a request; `Ok(false)` when already at `t_end`.
    fn check_request(&self, t_end: f64) -> Result<bool, OdeError> {
        if !t_end.is_finite() {
            return Err(OdeError::NonFinite { t: t_end });
        }
        if t_end < self.t {
            return Err(OdeError::Backwards {
                from: self.t,
                to: t_end,
            });
        }
        Ok(t_end > self.t)
    }

    /// Hairer's starting step heuristic (HNW I, §II.4), first half: a trial `h0` from the
    /// state and its derivative. Returns `(h0, d1)`.
    fn initial_h0(&self, f0: &[f64; N]) -> (f64, f64) {
        let mut d0 = 0.0;
        let mut d1 = 0.0;
        for i in 0..N {
            let sc = self.cfg.atol + self.cfg.rtol * self.y[i].abs();
            d0 += (self.y[i] / sc) * (self.y[i] / sc);
            d1 += (f0[i] / sc) * (f0[i] / sc);
        }
        let (d0, d1) = ((d0 / N as f64).sqrt(), (d1 / N as f64).sqrt());
        let h0 = if d0 < 1e-10 || d1 < 1e-10 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        (h0.min(self.cfg.max_step), d1)
    }

    /// Second half: the step from the derivative `f1` after an Euler step of `h0`.
    fn initial_h(&mut self, h0: f64, d1: f64, f0: &[f64; N], f1: &[f64; N]) -> f64 {
        self.stats.rhs_evals += 1;
        let mut d2 = 0.0;
        for i in 0..N {
            let sc = self.cfg.atol + self.cfg.rtol * self.y[i].abs();
            d2 += ((f1[i] - f0[i]) / sc) * ((f1[i] - f0[i]) / sc);
        }
        let d2 = (d2 / N as f64).sqrt() / h0;
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

/// `y + h·Σ a_j·k_j` for one Runge–Kutta stage, with fused multiply-adds (see `trial_steps`).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn stage_state<const N: usize, const L: usize, const K: usize>(
    y: &[[f64; L]; N],
    h: &[f64; L],
    ks: [&[[f64; L]; N]; K],
    a: [f64; K],
) -> [[f64; L]; N] {
    let mut s = [[0.0; L]; N];
    for i in 0..N {
        for l in 0..L {
            let mut sum = a[0] * ks[0][i][l];
            for j in 1..K {
                sum = a[j].mul_add(ks[j][i][l], sum);
            }
            s[i][l] = h[l].mul_add(sum, y[i][l]);
        }
    }
    s
}

/// Dormand–Prince trials for `L` independent problems at once, component-major: the 5th-order
/// solutions, their derivatives (FSAL) and the scaled error norms.
///
/// One problem's stages form a dependency chain whose latency, not arithmetic, bounds a
/// 3-equation system; laying `L` problems side by side lets their arithmetic share vector
/// instructions and overlap. Each lane's arithmetic is exactly the one-problem sequence, so a
/// problem gives bit-identical results alone or in a batch.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn trial_steps<const N: usize, const L: usize, S: LaneSystem<N, L>>(
    sys: &mut S,
    t: &[f64; L],
    y: &[[f64; L]; N],
    k1: &[[f64; L]; N],
    h: &[f64; L],
    atol: &[f64; L],
    rtol: &[f64; L],
) -> ([[f64; L]; N], [[f64; L]; N], [f64; L]) {
    let at = |c: f64| -> [f64; L] {
        let mut v = [0.0; L];
        for l in 0..L {
            v[l] = t[l] + c * h[l];
        }
        v
    };
    // Every `a·b + c` is a fused multiply-add: one rounding instead of two, and half the
    // instructions and latency on the stage chain. `f64::mul_add` is exactly rounded on every
    // platform, so the AVX2+FMA and portable builds still agree bit for bit.
    let k2 = sys.rhs_lanes(&at(C2), &stage_state(y, h, [k1], [A21]));
    let k3 = sys.rhs_lanes(&at(C3), &stage_state(y, h, [k1, &k2], [A31, A32]));
    let k4 = sys.rhs_lanes(&at(C4), &stage_state(y, h, [k1, &k2, &k3], [A41, A42, A43]));
    let k5 = sys.rhs_lanes(
        &at(C5),
        &stage_state(y, h, [k1, &k2, &k3, &k4], [A51, A52, A53, A54]),
    );
    let k6 = sys.rhs_lanes(
        &at(1.0),
        &stage_state(y, h, [k1, &k2, &k3, &k4, &k5], [A61, A62, A63, A64, A65]),
    );
    let y1 = stage_state(y, h, [k1, &k3, &k4, &k5, &k6], [A71, A73, A74, A75, A76]);
    let k7 = sys.rhs_lanes(&at(1.0), &y1);
    let mut acc = [0.0; L];
    for i in 0..N {
        for l in 0..L {
            let mut sum = E1 * k1[i][l];
            sum = E3.mul_add(k3[i][l], sum);
            sum = E4.mul_add(k4[i][l], sum);
            sum = E5.mul_add(k5[i][l], sum);
            sum = E6.mul_add(k6[i][l], sum);
            sum = E7.mul_add(k7[i][l], sum);
            let e = h[l] * sum;
            let sc = rtol[l].mul_add(y[i][l].abs().max(y1[i][l].abs()), atol[l]);
            let r = e / sc;
            acc[l] = r.mul_add(r, acc[l]);
        }
    }
    // The mean square, not its root: the controller needs `ln err = ½ ln msq` and the accept
    // test `msq ≤ 1`, and a square root would sit on every step's critical path.
    let mut msq = [0.0; L];
    for l in 0..L {
        msq[l] = acc[l] * (1.0 / N as f64);
    }
    (y1, k7, msq)
}

/// The controller's memory of the previous error norm is floored at ln 1e-4 (Hairer).
const LN_ERR_FLOOR: f64 = -9.210_340_371_976_184;

/// How many problems a batch interleaves: two AVX registers of four doubles. One problem's
/// step is a long dependency chain; two independent vectors in flight keep the core busy
/// while either waits (8 lanes measured fastest against 4 and 16, see DEVELOPERS.md).
pub const LANES: usize = 8;

#[inline(always)]
fn lane<const N: usize, const L: usize>(v: &[[f64; L]; N], l: usize) -> [f64; N] {
    let mut out = [0.0; N];
    for i in 0..N {
        out[i] = v[i][l];
    }
    out
}

/// Advances `L` independent integrations, each to its own `t_end`, side by side (see
/// `trial_steps`). Every lane gets exactly the result [`Dopri5::advance_to`] would give it
/// alone; one lane's failure does not stop the others. Lanes that finish early ride along with
/// zero-length trials whose results are discarded.
///
/// On x86-64 CPUs with AVX2 and FMA the same code is compiled a second time with those enabled
/// and picked at run time. Every multiply-add is an explicit, exactly rounded `mul_add`, so the
/// choice never changes a result.
pub fn advance_lanes<const N: usize, const L: usize, S, O>(
    igs: [&mut Dopri5<N>; L],
    sys: &mut S,
    t_end: [f64; L],
    observers: [&mut O; L],
) -> [Result<(), OdeError>; L]
where
    S: LaneSystem<N, L>,
    O: FnMut(&Step<'_, N>) + ?Sized,
{
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: `advance_lanes_avx2` only requires the CPU to support AVX2 and FMA,
            // checked just above.
            return unsafe { advance_lanes_avx2(igs, sys, t_end, observers) };
        }
    }
    advance_lanes_portable::<N, L, S, O, false>(igs, sys, t_end, observers)
}

/// [`advance_lanes`] compiled with AVX2 and FMA: four lanes of `f64` per instruction, and
/// `mul_add` as one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn advance_lanes_avx2<const N: usize, const L: usize, S, O>(
    igs: [&mut Dopri5<N>; L],
    sys: &mut S,
    t_end: [f64; L],
    observers: [&mut O; L],
) -> [Result<(), OdeError>; L]
where
    S: LaneSystem<N, L>,
    O: FnMut(&Step<'_, N>) + ?Sized,
{
    advance_lanes_portable::<N, L, S, O, true>(igs, sys, t_end, observers)
}

/// The engine behind [`advance_lanes`], for any instruction set; `AVX2` (set only by the AVX2
/// build) lets the step control use vector intrinsics.
#[inline(always)]
fn advance_lanes_portable<const N: usize, const L: usize, S, O, const AVX2: bool>(
    igs: [&mut Dopri5<N>; L],
    sys: &mut S,
    t_end: [f64; L],
    observers: [&mut O; L],
) -> [Result<(), OdeError>; L]
where
    S: LaneSystem<N, L>,
    O: FnMut(&Step<'_, N>) + ?Sized,
{
    let mut results: [Result<(), OdeError>; L] = std::array::from_fn(|_| Ok(()));
    let mut active = [false; L];
    for l in 0..L {
        match igs[l].check_request(t_end[l]) {
            Ok(work) => active[l] = work,
            Err(e) => results[l] = Err(e),
        }
    }
    if !active.iter().any(|a| *a) {
        return results;
    }
    // The whole call works on component-major copies of the lanes' state, so that the step
    // control, like the stages, is computed for all lanes at once; it is written back at the end.
    let mut t = [0.0; L];
    let mut y = [[0.0; L]; N];
    let mut atol = [0.0; L];
    let mut rtol = [0.0; L];
    let mut min_step = [0.0; L];
    let mut max_step = [0.0; L];
    let mut ln_err_old = [0.0; L];
    for l in 0..L {
        t[l] = igs[l].t;
        atol[l] = igs[l].cfg.atol;
        rtol[l] = igs[l].cfg.rtol;
        min_step[l] = igs[l].cfg.min_step;
        max_step[l] = igs[l].cfg.max_step;
        ln_err_old[l] = igs[l].ln_err_old;
        for i in 0..N {
            y[i][l] = igs[l].y[i];
        }
    }
    let mut accepted = [0u64; L];
    let mut rejected = [0u64; L];
    let mut evals = [0u64; L];
    // Derivatives at the start, and Hairer's initial step where a lane has no step memory.
    let mut f0 = sys.rhs_lanes(&t, &y);
    let mut h = [0.0; L];
    let mut h0 = [0.0; L];
    let mut d1 = [0.0; L];
    let mut fresh = [false; L];
    for l in 0..L {
        if !active[l] {
            continue;
        }
        evals[l] += 1;
        match igs[l].h_next {
            Some(hn) => h[l] = hn,
            None => {
                fresh[l] = true;
                (h0[l], d1[l]) = igs[l].initial_h0(&lane(&f0, l));
            }
        }
    }
    if fresh.iter().any(|f| *f) {
        let mut te = t;
        let mut ye = y;
        for l in 0..L {
            if fresh[l] {
                te[l] = t[l] + h0[l];
                for i in 0..N {
                    ye[i][l] = y[i][l] + h0[l] * f0[i][l];
                }
            }
        }
        let f1 = sys.rhs_lanes(&te, &ye);
        for l in 0..L {
            if fresh[l] {
                h[l] = igs[l].initial_h(h0[l], d1[l], &lane(&f0, l), &lane(&f1, l));
            }
        }
    }
    let switching = sys.switching_lanes();
    let mut rejected_last = [false; L];
    let mut forced = [false; L];
    let mut h_kink = [0.0; L];
    let mut h_next: [Option<f64>; L] = [None; L];
    while active.iter().any(|a| *a) {
        // Plan every lane's trial (finished lanes ride along with a zero-length one).
        let mut h_try = [0.0; L];
        let mut last = [false; L];
        let was_forced = forced;
        for l in 0..L {
            if !active[l] {
                continue;
            }
            if forced[l] {
                h_try[l] = h_kink[l];
            } else {
                let hc = h[l].min(max_step[l]);
                let remaining = t_end[l] - t[l];
                // Stretch the last step slightly rather than leave a sliver of a step behind.
                last[l] = hc >= remaining * (1.0 - 1e-9);
                h_try[l] = if last[l] { remaining } else { hc };
            }
        }
        // `msq` is the squared error norm of each lane's trial (≤ 1 passes).
        let (y1, f1, msq) = trial_steps(sys, &t, &y, &f0, &h_try, &atol, &rtol);
        // Step control for all lanes at once; the rare lanes that need more (a kink, a failed
        // state check) take the scalar paths below.
        let mut finite = [true; L];
        let mut kink = [false; L];
        // A forced step that stopped just short of the kink (its estimate came from a trial
        // that failed its error test) is followed by one more forced step, aimed by a Newton
        // step from the accurate end state, instead of an ordinary trial that would straddle
        // the kink and have to be cut again.
        let mut short_of_kink = [false; L];
        let (ln_err, grow) = control_lanes::<L, AVX2>(&msq, &ln_err_old);
        for l in 0..L {
            h[l] = h[l].min(max_step[l]);
            for i in 0..N {
                finite[l] &= y1[i][l].is_finite();
            }
        }
        if let Some((w, c)) = &switching {
            let values = |v: &[[f64; L]; N]| {
                sys.switching_values(v).unwrap_or_else(|| {
                    // Summed in the same order as `crossing`, which has the last word.
                    let mut g = [0.0; L];
                    for l in 0..L {
                        for i in 0..N {
                            g[l] += v[i][l] * w[i][l];
                        }
                        g[l] += c[l];
                    }
                    g
                })
            };
            let (g0, g1) = (values(&y), values(&y1));
            for l in 0..L {
                let crosses = g0[l].is_finite()
                    && g1[l].is_finite()
                    && g0[l] != 0.0
                    && g0[l].signum() != g1[l].signum();
                kink[l] = crosses && !was_forced[l] && (!rejected_last[l] || msq[l] > 1.0);
                short_of_kink[l] = was_forced[l]
                    && g0[l].is_finite()
                    && g1[l].is_finite()
                    && g1[l] != 0.0
                    && g0[l].signum() == g1[l].signum();
            }
        }
        let state_ok = sys.check_lanes(&y1);
        for l in 0..L {
            if !active[l] {
                continue;
            }
            evals[l] += 6;
            forced[l] = false;
            let (ht, e) = (h_try[l], msq[l]);
            if kink[l] {
                // A step across the kink has an unreliable error estimate either way: end it
                // at the crossing instead (accepted or not), so no step straddles the kink.
                let (w, c) = sys
                    .switching_lane(l)
                    .expect("kink lanes have a switching function");
                let (yl, y1l, f0l, f1l) = (lane(&y, l), lane(&y1, l), lane(&f0, l), lane(&f1, l));
                if let Some(th) = crossing(&w, c, &yl, &y1l, &f0l, &f1l, ht) {
                    // End just past the kink: what is left of it inside the step is tiny.
                    let hk = (th + 1e-3).min(1.0) * ht;
                    if hk > 10.0 * min_step[l] && hk < ht {
                        // What the controller would have chosen without the kink: the step
                        // after the kink starts from it rather than from the short kink step.
                        h[l] = if e > 1.0 {
                            rejected[l] += 1;
                            ht / shrink_factor(e)
                        } else {
                            ht / grow[l]
                        };
                        forced[l] = true;
                        h_kink[l] = hk;
                        continue;
                    }
                }
            }
            if e <= 1.0 && finite[l] {
                let t1 = if last[l] { t_end[l] } else { t[l] + ht };
                let y1l = lane(&y1, l);
                if !state_ok[l] {
                    if let Err(err) = sys.check_lane(l, t1, &y1l) {
                        results[l] = Err(err);
                        active[l] = false;
                        continue;
                    }
                }
                accepted[l] += 1;
                (observers[l])(&Step {
                    t0: t[l],
                    t1,
                    y0: &lane(&y, l),
                    y1: &y1l,
                    f0: &lane(&f0, l),
                    f1: &lane(&f1, l),
                });
                let mut h_new = ht / grow[l];
                if rejected_last[l] {
                    // Hairer's rule: no growth right after a rejection.
                    h_new = h_new.min(ht);
                }
                if was_forced[l] {
                    // A step cut short at a kink says nothing about the step size the
                    // dynamics allow beyond it.
                    h_new = h_new.max(h[l]);
                }
                rejected_last[l] = false;
                ln_err_old[l] = ln_err[l].max(LN_ERR_FLOOR);
                t[l] = t1;
                for i in 0..N {
                    y[i][l] = y1[i][l];
                    f0[i][l] = f1[i][l];
                }
                if last[l] {
                    // A step cut short to land on t_end says nothing about the step size the
                    // dynamics allow: remember the larger of the two.
                    h_next[l] = Some(h_new.max(h[l]).min(max_step[l]));
                    active[l] = false;
                } else {
                    h[l] = h_new;
                    if short_of_kink[l] {
                        if let Some(hk) = newton_to_kink(sys.switching_lane(l), &y1l, &lane(&f1, l))
                        {
                            if hk > 10.0 * min_step[l] && hk < h_new && hk < t_end[l] - t1 {
                                forced[l] = true;
                                h_kink[l] = hk;
                            }
                        }
                    }
                }
            } else {
                rejected[l] += 1;
                rejected_last[l] = true;
                h[l] = ht / shrink_factor(e);
                if h[l] < min_step[l] {
                    results[l] = Err(if finite[l] {
                        OdeError::StepTooSmall {
                            t: t[l],
                            h: h[l],
                            min: min_step[l],
                        }
                    } else {
                        OdeError::NonFinite { t: t[l] }
                    });
                    active[l] = false;
                }
            }
        }
    }
    for (l, ig) in igs.into_iter().enumerate() {
        ig.t = t[l];
        ig.y = lane(&y, l);
        ig.ln_err_old = ln_err_old[l];
        if let Some(hn) = h_next[l] {
            ig.h_next = Some(hn);
        }
        ig.stats.accepted += accepted[l];
        ig.stats.rejected += rejected[l];
        ig.stats.rhs_evals += evals[l];
    }
    results
}

impl<T: OdeSystem<N> + ?Sized, const N: usize> OdeSystem<N> for &mut T {
    #[inline(always)]
    fn rhs(&mut self, t: f64, y: &[f64; N]) -> [f64; N] {
        (**self).rhs(t, y)
    }
    fn check(&self, t: f64, y: &[f64; N]) -> Result<(), OdeError> {
        (**self).check(t, y)
    }
    fn switching(&self) -> Option<([f64; N], f64)> {
        (**self).switching()
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
    fn vector_and_portable_builds_give_identical_bits() {
        use crate::system::KaiLanes;
        use crate::temperature::Segment;
        use crate::{Etf, KaiParams};
        let (p, e) = (KaiParams::default(), Etf::default());
        let run = |vector: bool| {
            let mut igs = [
                [0.7, 1.3, 0.3],
                [0.2, 0.1, 0.6],
                [1.0, 0.5, 0.4],
                [0.9, 0.4, 0.5],
            ]
            .map(|y| Dopri5::new(0.0, y, IntegratorConfig::default()).unwrap());
            let segs = [290.0, 300.0, 310.0, 320.0].map(|k| Segment::new(0.0, 303.0, 30.0, k));
            let mut sys = KaiLanes::new([&p; 4], [&e; 4], segs);
            let mut obs = [|_: &Step<'_, 3>| {}; 4];
            let ends = [30.0, 12.5, 29.0, 3.0];
            let r = if vector {
                advance_lanes(igs.each_mut(), &mut sys, ends, obs.each_mut())
            } else {
                advance_lanes_portable::<3, 4, _, _, false>(
                    igs.each_mut(),
                    &mut sys,
                    ends,
                    obs.each_mut(),
                )
            };
            r.iter().for_each(|x| assert!(x.is_ok()));
            igs.map(|ig| (ig.y().map(f64::to_bits), ig.stats()))
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn hermite_extremum_of_a_parabola_is_exact() {
        // p(θ) = −(θ − 0.3)²: p0 = −0.09, p1 = −0.49, p'(0) = 0.6, p'(1) = −1.4.
        let roots: Vec<f64> = hermite_extrema(-0.09, -0.49, 0.6, -1.4).collect();
        assert_eq!(roots.len(), 1);
        assert!((roots[0] - 0.3).abs() < 1e-14);
    }
}
