//! The step-size controller's arithmetic: fast `ln`/`exp`, Hairer's PI controller, and an AVX2
//! version for four lanes at once that gives the same bits as the scalar one.

/// Natural log for the step-size controller, where 1e-6 relative accuracy is plenty: a few
/// multiply-adds instead of a libm call, which otherwise costs as much as a right-hand side per
/// step. Branch-free, so a loop over lanes compiles to vector instructions; pure arithmetic, so
/// results do not depend on the platform's libm.
///
/// The argument is first clamped to [1e-300, 1e300] (a NaN becomes 1e-300): the controller bounds
/// every step ratio long before those extremes matter, so zero, subnormal, infinite and NaN error
/// norms need no slow path.
#[inline(always)]
pub(super) fn ctrl_ln(x: f64) -> f64 {
    // Not `clamp`: that would let a NaN through.
    #[allow(clippy::manual_clamp)]
    let x = x.max(1e-300).min(1e300);
    let bits = x.to_bits();
    // The biased exponent as a float without an int→float conversion (none exists for 64-bit
    // lanes in AVX2): splice it into the mantissa of 2^52 and subtract 2^52.
    let biased = f64::from_bits(0x4330_0000_0000_0000 | (bits >> 52)) - 4_503_599_627_370_496.0;
    // ln(x) = exponent·ln 2 + ln(mantissa), mantissa in [1, 2): atanh series in z = (m−1)/(m+1).
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let z4 = z2 * z2;
    // Estrin's scheme: this sits on the critical path of every step, so depth beats operations.
    let series =
        (1.0 + z2 * (1.0 / 3.0)) + z4 * ((1.0 / 5.0 + z2 * (1.0 / 7.0)) + z4 * (1.0 / 9.0));
    let ln_m = (2.0 * z) * series;
    ln_m + (biased - 1023.0) * std::f64::consts::LN_2
}

/// `e^x` for the step-size controller (1e-7 relative is plenty): range reduction by ln 2 and a
/// degree-7 Taylor polynomial; the argument is clamped to ±700 (meaningless for a step ratio, and
/// a NaN becomes −700). Branch-free like [`ctrl_ln`].
#[inline(always)]
pub(super) fn ctrl_exp(x: f64) -> f64 {
    /// 1.5·2^52: adding it rounds a float of magnitude < 2^51 to an integer (ties to even) and
    /// leaves that integer in the low bits of the sum.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    #[allow(clippy::manual_clamp)] // not `clamp`: that would let a NaN through
    let x = x.max(-700.0).min(700.0);
    let shifted = x * std::f64::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * std::f64::consts::LN_2;
    let r2 = r * r;
    let r4 = r2 * r2;
    // Degree-7 Taylor polynomial, evaluated by Estrin's scheme (see `ctrl_ln`).
    let p = ((1.0 + r) + r2 * (0.5 + r * (1.0 / 6.0)))
        + r4 * ((1.0 / 24.0 + r * (1.0 / 120.0)) + r2 * (1.0 / 720.0 + r * (1.0 / 5040.0)));
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f64::from_bits(k_int.wrapping_add(1023) << 52)
}

/// Divisor of the step size after an accepted step with error norm `e^ln_err`: Hairer's PI
/// controller, `err^EXPO1 / err_old^BETA / SAFETY` (one `exp`), bounded to [0.1, 5].
#[inline(always)]
pub(super) fn growth_divisor(ln_err: f64, ln_err_old: f64) -> f64 {
    (ctrl_exp(EXPO1 * ln_err - BETA * ln_err_old) * (1.0 / SAFETY)).clamp(FAC_MIN_DIV, FAC_MAX_DIV)
}

/// `ln err` from the squared error norm `msq = err²`.
#[inline(always)]
pub(super) fn ln_err_of(msq: f64) -> f64 {
    0.5 * ctrl_ln(msq)
}

/// Divisor of the step size after a rejected step, from the squared error norm.
#[inline]
pub(super) fn shrink_factor(msq: f64) -> f64 {
    if msq.is_finite() {
        (ctrl_exp(EXPO1 * ln_err_of(msq)) * (1.0 / SAFETY)).min(FAC_MAX_DIV)
    } else {
        FAC_MAX_DIV
    }
}

/// PI controller constants (Hairer's DOPRI5 defaults).
const SAFETY: f64 = 0.9;
const BETA: f64 = 0.04;
const EXPO1: f64 = 0.2 - BETA * 0.75;
const FAC_MIN_DIV: f64 = 0.1; // h grows at most 10× per step
const FAC_MAX_DIV: f64 = 5.0; // and shrinks at most 5×

/// `ln err` (from the squared norm `msq`) and the growth divisor for every lane: the part of step control that runs after
/// every trial of every lane. With `AVX2` (only ever set by the AVX2 build of the integrator)
/// four lanes go through one vector instruction sequence; the scalar and vector paths perform
/// the same IEEE operations in the same order, so they give identical bits.
#[inline(always)]
pub(super) fn control_lanes<const L: usize, const AVX2: bool>(
    msq: &[f64; L],
    ln_err_old: &[f64; L],
) -> ([f64; L], [f64; L]) {
    let mut ln_err = [0.0; L];
    let mut grow = [0.0; L];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        while done + 4 <= L {
            // SAFETY: `AVX2` is true only in the build of the integrator that `advance_lanes`
            // calls after checking that the CPU supports AVX2; the slices hold four elements
            // from `done`.
            unsafe {
                avx2::control4(
                    &msq[done..done + 4],
                    &ln_err_old[done..done + 4],
                    &mut ln_err[done..done + 4],
                    &mut grow[done..done + 4],
                );
            }
            done += 4;
        }
    }
    for l in done..L {
        ln_err[l] = ln_err_of(msq[l]);
        grow[l] = growth_divisor(ln_err[l], ln_err_old[l]);
    }
    (ln_err, grow)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! [`super::ln_err_of`], [`super::ctrl_exp`] and [`super::growth_divisor`] on four lanes.
    use super::{BETA, EXPO1, FAC_MAX_DIV, FAC_MIN_DIV, SAFETY};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn splat(x: f64) -> __m256d {
        _mm256_set1_pd(x)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn ln4(x: __m256d) -> __m256d {
        // x.max(1e-300).min(1e300): `maxpd` returns its second operand when either is NaN, as
        // `f64::max` returns the non-NaN one.
        let x = _mm256_min_pd(_mm256_max_pd(x, splat(1e-300)), splat(1e300));
        let bits = _mm256_castpd_si256(x);
        let biased = _mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(
                _mm256_set1_epi64x(0x4330_0000_0000_0000),
                _mm256_srli_epi64::<52>(bits),
            )),
            splat(4_503_599_627_370_496.0),
        );
        let m = _mm256_castsi256_pd(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi64x(0x000f_ffff_ffff_ffff)),
            _mm256_set1_epi64x(0x3ff0_0000_0000_0000),
        ));
        let one = splat(1.0);
        let z = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
        let z2 = _mm256_mul_pd(z, z);
        let z4 = _mm256_mul_pd(z2, z2);
        let lo = _mm256_add_pd(one, _mm256_mul_pd(z2, splat(1.0 / 3.0)));
        let mid = _mm256_add_pd(splat(1.0 / 5.0), _mm256_mul_pd(z2, splat(1.0 / 7.0)));
        let hi = _mm256_add_pd(mid, _mm256_mul_pd(z4, splat(1.0 / 9.0)));
        let series = _mm256_add_pd(lo, _mm256_mul_pd(z4, hi));
        let ln_m = _mm256_mul_pd(_mm256_mul_pd(splat(2.0), z), series);
        _mm256_add_pd(
            ln_m,
            _mm256_mul_pd(
                _mm256_sub_pd(biased, splat(1023.0)),
                splat(std::f64::consts::LN_2),
            ),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn exp4(x: __m256d) -> __m256d {
        const ROUND: f64 = 6_755_399_441_055_744.0;
        let x = _mm256_min_pd(_mm256_max_pd(x, splat(-700.0)), splat(700.0));
        let shifted = _mm256_add_pd(
            _mm256_mul_pd(x, splat(std::f64::consts::LOG2_E)),
            splat(ROUND),
        );
        let k = _mm256_sub_pd(shifted, splat(ROUND));
        let r = _mm256_sub_pd(x, _mm256_mul_pd(k, splat(std::f64::consts::LN_2)));
        let r2 = _mm256_mul_pd(r, r);
        let r4 = _mm256_mul_pd(r2, r2);
        let p01 = _mm256_add_pd(splat(1.0), r);
        let p23 = _mm256_add_pd(splat(0.5), _mm256_mul_pd(r, splat(1.0 / 6.0)));
        let p45 = _mm256_add_pd(splat(1.0 / 24.0), _mm256_mul_pd(r, splat(1.0 / 120.0)));
        let p67 = _mm256_add_pd(splat(1.0 / 720.0), _mm256_mul_pd(r, splat(1.0 / 5040.0)));
        let p03 = _mm256_add_pd(p01, _mm256_mul_pd(r2, p23));
        let p47 = _mm256_add_pd(p45, _mm256_mul_pd(r2, p67));
        let acc = _mm256_add_pd(p03, _mm256_mul_pd(r4, p47));
        let k_int = _mm256_sub_epi64(
            _mm256_castpd_si256(shifted),
            _mm256_set1_epi64x(ROUND.to_bits() as i64),
        );
        let scale = _mm256_slli_epi64::<52>(_mm256_add_epi64(k_int, _mm256_set1_epi64x(1023)));
        _mm256_mul_pd(acc, _mm256_castsi256_pd(scale))
    }

    /// Four lanes of `ln_err = ln_err_of(msq)`, `grow = growth_divisor(ln_err, ln_err_old)`.
    ///
    /// # Safety
    /// The CPU must support AVX2; every slice must hold at least four elements.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn control4(
        msq: &[f64],
        ln_err_old: &[f64],
        ln_err: &mut [f64],
        grow: &mut [f64],
    ) {
        debug_assert!(msq.len() >= 4 && ln_err_old.len() >= 4 && ln_err.len() >= 4);
        debug_assert!(grow.len() >= 4);
        // SAFETY: the caller guarantees four elements in each slice.
        let (e, old) = unsafe {
            (
                _mm256_loadu_pd(msq.as_ptr()),
                _mm256_loadu_pd(ln_err_old.as_ptr()),
            )
        };
        let ln = _mm256_mul_pd(splat(0.5), ln4(e));
        let arg = _mm256_sub_pd(
            _mm256_mul_pd(splat(EXPO1), ln),
            _mm256_mul_pd(splat(BETA), old),
        );
        let g = _mm256_mul_pd(exp4(arg), splat(1.0 / SAFETY));
        // f64::clamp: `maxpd(lo, g)` is `lo` only when lo > g, and g itself when g is NaN.
        let g = _mm256_min_pd(splat(FAC_MAX_DIV), _mm256_max_pd(splat(FAC_MIN_DIV), g));
        // SAFETY: as above.
        unsafe {
            _mm256_storeu_pd(ln_err.as_mut_ptr(), ln);
            _mm256_storeu_pd(grow.as_mut_ptr(), g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_log_is_accurate_enough() {
        for &x in &[1e-12, 3e-5, 0.01, 0.37, 1.0, 1.9, 42.0, 1e8, 1e300] {
            let (a, b) = (ctrl_ln(x), x.ln());
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "ln {x}: {a} vs {b}"
            );
        }
        // Out-of-range error norms are clamped: the controller bounds the step ratio anyway.
        assert_eq!(ctrl_ln(0.0), ctrl_ln(1e-300));
        assert_eq!(ctrl_ln(f64::NAN), ctrl_ln(1e-300));
        assert_eq!(ctrl_ln(4e-320), ctrl_ln(1e-300));
        assert_eq!(ctrl_ln(f64::INFINITY), ctrl_ln(1e300));
        assert!(ctrl_ln(1e-300) < -690.0 && ctrl_ln(1e300) > 690.0);
        for &x in &[-700.0, -30.0, -2.3, -0.1, 0.0, 0.04, 1.7, 25.0, 700.0] {
            let (a, b) = (ctrl_exp(x), x.exp());
            assert!((a / b - 1.0).abs() < 1e-7, "exp {x}: {a} vs {b}");
        }
        assert_eq!(ctrl_exp(f64::NEG_INFINITY), ctrl_exp(-700.0));
        assert_eq!(ctrl_exp(f64::NAN), ctrl_exp(-700.0));
        assert_eq!(ctrl_exp(f64::INFINITY), ctrl_exp(700.0));
    }

    #[test]
    fn vector_controller_gives_the_scalar_bits() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut errs = vec![
                0.0,
                -1.0,
                f64::NAN,
                f64::INFINITY,
                4e-320,
                1e-300,
                1e300,
                0.5,
                1.0,
                2.0,
                1e-12,
                0.999_999,
            ];
            let mut x = 0.37_f64;
            for _ in 0..4000 {
                x = (x * 3.9 * (1.0 - x)).clamp(1e-9, 1.0 - 1e-9); // logistic map, spread values
                errs.push(x * 10f64.powi((x * 40.0) as i32 - 20));
            }
            while errs.len() % 4 != 0 {
                errs.push(0.25);
            }
            for (i, chunk) in errs.chunks(4).enumerate() {
                let err: [f64; 4] = chunk.try_into().unwrap();
                let old = [-9.21, -3.0 + i as f64 * 1e-3, 0.5, -700.0];
                let scalar = control_lanes::<4, false>(&err, &old);
                let vector = control_lanes::<4, true>(&err, &old);
                assert_eq!(
                    scalar.0.map(f64::to_bits),
                    vector.0.map(f64::to_bits),
                    "ln {err:?}"
                );
                assert_eq!(
                    scalar.1.map(f64::to_bits),
                    vector.1.map(f64::to_bits),
                    "grow {err:?}"
                );
            }
        }
    }
}
